"""gpt2train: llm.c's GPT-2 recipe in Python, from a raw corpus to token shards, training and evals.

The library has no Dagster imports: every stage is a plain function usable from the
`gpt2train` CLI (`gpt2train/cli.py`); `assets/` wraps the same functions as Dagster assets.

    data/       the corpus, the GPT-2 tokenizer, llm.c's shards and the training loader
    training/   the training loop, its step, evals, runs and checkpoints
    export/     a checkpoint as a verified Hugging Face directory
    lineage/    what every artifact records, and the walk back to the corpus
    kernels/    the Triton kernels of the hot path
    layout.py   every path under the data dir
"""

__version__ = "0.1.0"
