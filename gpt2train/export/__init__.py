"""A checkpoint as a Hugging Face GPT-2 directory, verified against our model.

    hf_export.py     export_checkpoint: weights, configs, tokenizer, model card, lineage; verified
    verify.py        the export loaded back by transformers, its logits and tokenizer compared with ours
    model_card.py    the export's README.md (huggingface_hub ModelCard), and an eval report's copy of it
                     with the scores as model-index (evals/runner.py writes it)
    state_dict.py    our parameter names and layout <-> Hugging Face's GPT2LMHeadModel
    tokenizer.py     the GPT-2 tokenizer files built offline from the BPE files tiktoken uses
"""
