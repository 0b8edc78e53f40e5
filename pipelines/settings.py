"""The one place that picks the environment: which config the code location loads.

    GPT2TRAIN_CONFIG=gpt2_124m            # a preset name or a YAML path (default: tiny)
    GPT2TRAIN_SET="shards.shard_size=5000000;corpus.files=2"   # overrides, ';'-separated

`dagster dev -w workspace.yaml` and `gpt2train pipeline --config ... --set ...` both end up
here, so the UI and the CLI see the same assets with the same code versions.
"""

from __future__ import annotations

import os

from gpt2train.config import Config, load_config


def config_from_env() -> Config:
    overrides = [s.strip() for s in os.environ.get("GPT2TRAIN_SET", "").split(";") if s.strip()]
    return load_config(os.environ.get("GPT2TRAIN_CONFIG") or "tiny", overrides)
