"""The data stage: FineWeb-Edu (or local) source files -> GPT-2 tokens in llm.c `.bin` shards, and the loader
training reads them with.

    corpus.py        list the source files of a local mirror or a Hub config; fetch one (hub.py downloads)
    identity.py      what a corpus is named: the Hub dataset (or a mirror of it) only where it is one
    hub.py           the Hugging Face Hub: list a dataset config's files, download one resumably
    tokenizer.py     GPT-2's BPE (tiktoken), documents encoded in parallel with their <|endoftext|> prefix
    shards.py        llm.c's shard format: header, reading, validation, the hash check before training
    shard_writer.py  documents -> shards with lineage sidecars, in llm.c's stream layout or per source file
    stage.py         the entry points the CLI and the Dagster assets call (corpus record, shards, prepare)
    loader.py        shards -> (B, T) batches for training, DDP-aware and exactly resumable
"""
