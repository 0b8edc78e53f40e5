"""Which config the Dagster code location loads (pipelines/definitions.py's `defs`), from the environment.

    GPT2TRAIN_CONFIG=gpt2_124m            # a preset name or a YAML path (default: tiny)
    GPT2TRAIN_SET="shards.shard_size=5000000;corpus.files=2"   # overrides, ';'-separated
    GPT2TRAIN_BASE_DIR=/path/to/project   # what a preset's and --set's relative paths mean (default: the cwd)

`dagster dev -w workspace.yaml`, a code server and the daemon load it this way. `gpt2train pipeline
--config X --set Y` does not come through here: it builds its definitions from `load_config(X, [Y])`
itself. Both resolve configs with the same `load_config`, so with GPT2TRAIN_CONFIG=X and
GPT2TRAIN_SET=Y the UI shows the assets, code versions and staleness the CLI acts on. The command also
passes its working directory as GPT2TRAIN_BASE_DIR: a code server and its run workers may run elsewhere.
"""

from __future__ import annotations

import os

from gpt2train.config import Config, load_config


def config_from_env() -> Config:
    overrides = [s.strip() for s in os.environ.get("GPT2TRAIN_SET", "").split(";") if s.strip()]
    return load_config(os.environ.get("GPT2TRAIN_CONFIG") or "tiny", overrides,
                       base_dir=os.environ.get("GPT2TRAIN_BASE_DIR") or None)
