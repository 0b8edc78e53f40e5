"""Every Dagster object of gpt2train, in one hop: `defs` is the code location.

    dagster dev -w workspace.yaml          # UI on http://127.0.0.1:3000
    GPT2TRAIN_CONFIG=gpt2_124m dagster dev -w workspace.yaml

Assets (group `data`): `corpus` -> `token_shards` (+ 4 shard checks), partitioned by
source file (`corpus_files`). Job `data` materializes both for one partition; job
`shard_checks` re-runs the shard checks alone; `corpus_files_sensor` adds new files.
"""

from __future__ import annotations

import dagster as dg

from assets.corpus import build_corpus_asset
from assets.token_shards import build_token_shards_asset
from gpt2train.config import Config
from pipelines.sensors import build_corpus_files_sensor
from pipelines.settings import config_from_env

DATA_JOB = "data"
SHARD_CHECKS_JOB = "shard_checks"


def build_definitions(cfg: Config) -> dg.Definitions:
    corpus = build_corpus_asset(cfg)
    token_shards, *shard_checks = build_token_shards_asset(cfg)
    data_job = dg.define_asset_job(DATA_JOB, selection=dg.AssetSelection.assets(corpus, token_shards),
                                   description="Fetch and tokenize one corpus file (a corpus_files partition).")
    # Re-validate a partition's shards without rewriting them (e.g. after a disk or copy problem).
    checks_job = dg.define_asset_job(SHARD_CHECKS_JOB, selection=dg.AssetSelection.checks_for_assets(token_shards),
                                     description="Run the four shard checks for one partition.")
    return dg.Definitions(
        assets=[corpus, token_shards],
        asset_checks=shard_checks,
        jobs=[data_job, checks_job],
        sensors=[build_corpus_files_sensor(cfg, data_job)],
    )


@dg.definitions
def defs() -> dg.Definitions:
    """The code location `dagster dev -w workspace.yaml` loads. Built when Dagster loads it, not
    at import, so importing `build_definitions` (the CLI, tests) never reads GPT2TRAIN_* vars."""
    return build_definitions(config_from_env())
