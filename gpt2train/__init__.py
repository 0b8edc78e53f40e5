"""gpt2train: llm.c's GPT-2 recipe in Python, from a raw corpus to token shards, training and evals.

The library has no Dagster imports: every stage is a plain function usable from the
`gpt2train` CLI (`gpt2train/cli.py`); `assets/` wraps the same functions as Dagster assets.
"""

__version__ = "0.1.0"
