"""Every Dagster object of gpt2train, in one hop: `defs` is the code location.

    dagster dev -w workspace.yaml          # UI on http://127.0.0.1:3000
    GPT2TRAIN_CONFIG=gpt2_124m dagster dev -w workspace.yaml

Assets, by group:
- `data`: `corpus` -> `token_shards` (+ 4 shard checks), partitioned by source file (`corpus_files`)
  -> `shard_manifest` (external: every shard's hash, assets/manifests.py);
- `training`: `training_run` (torchrun through Pipes, all shards) -> `checkpoint` (external,
  recorded as each lands; one `checkpoints` partition per complete checkpoint);
- `evaluation`: `hf_export` -> `eval_report` per checkpoint partition -> `report_manifest`
  (external) -> `eval_summary`.

Checks: the four shard checks (assets/token_shards.py) and a `stale_partitions` check on each
partitioned asset (pipelines/stale_checks.py: its stale partitions and why, on the asset graph).
Jobs: `data` (one corpus partition), `shard_checks`, `training`, `checkpoint_evals` (export +
report of one checkpoint partition), `refresh_eval_summary`; none runs a `stale_partitions` check.
Sensors (on by default): `corpus_files_sensor` (new source files), `checkpoints_sensor` (new
checkpoints are exported and evaluated, also while training runs) and `stale_partitions_sensor`
(keeps the `stale_partitions` checks current). Resource: `training_client`, the Pipes client of
`launch.backend` (TRAINING_CLIENTS);
a new backend is one more client there (docs/deploy.md).
"""

from __future__ import annotations

from functools import partial

import dagster as dg

from assets.checkpoints import checkpoint_spec
from assets.corpus import build_corpus_asset
from assets.evals import build_eval_assets
from assets.hf_export import build_hf_export_asset
from assets.manifests import report_manifest_spec, shard_manifest_spec
from assets.token_shards import build_token_shards_asset
from assets.training import build_training_asset
from gpt2train.config import Config
from pipelines.sensors import build_checkpoints_sensor, build_corpus_files_sensor, build_stale_partitions_sensor
from pipelines.settings import config_from_env
from pipelines.slurm_pipes import SlurmPipesClient
from pipelines.stale_checks import build_stale_partitions_check, stale_check_keys
from pipelines.torchrun_client import TorchrunPipesClient
from pipelines.training_client import TrainingPipesClient

DATA_JOB = "data"
SHARD_CHECKS_JOB = "shard_checks"
TRAINING_JOB = "training"
CHECKPOINT_EVALS_JOB = "checkpoint_evals"
EVAL_SUMMARY_JOB = "refresh_eval_summary"


# launch.backend -> the Pipes client that trains on it (the `training_run` asset's `training_client`).
TRAINING_CLIENTS: dict[str, type[TrainingPipesClient]] = {"local": TorchrunPipesClient, "slurm": SlurmPipesClient}

STAGE_TAG = "gpt2train/stage"  # on every run of a job: a deployment's queue can limit each stage (docs/deploy.md)


def build_definitions(cfg: Config) -> dg.Definitions:
    corpus = build_corpus_asset(cfg)
    token_shards, *shard_checks = build_token_shards_asset(cfg)
    training_run = build_training_asset(cfg)
    hf_export = build_hf_export_asset(cfg)
    eval_report, eval_summary = build_eval_assets(cfg)
    stale_checks = build_stale_partitions_check(partial(build_definitions, cfg))
    # Evaluated by their sensor and the pipeline, never inside a materialization run (pipelines/stale_checks.py).
    stale = dg.AssetSelection.checks(*stale_check_keys())
    data_job = dg.define_asset_job(DATA_JOB, selection=dg.AssetSelection.assets(corpus, token_shards) - stale,
                                   description="Fetch and tokenize one corpus file (a corpus_files partition).",
                                   tags={STAGE_TAG: "data"})
    # Re-validate a partition's shards without rewriting them (e.g. after a disk or copy problem).
    checks_job = dg.define_asset_job(SHARD_CHECKS_JOB,
                                     selection=dg.AssetSelection.checks_for_assets(token_shards) - stale,
                                     description="Run the four shard checks for one partition.")
    training_job = dg.define_asset_job(TRAINING_JOB, selection=dg.AssetSelection.assets(training_run),
                                       description="Train (or resume) the configured run on every token shard.",
                                       tags={STAGE_TAG: "training"})
    evals_job = dg.define_asset_job(CHECKPOINT_EVALS_JOB,
                                    selection=dg.AssetSelection.assets(hf_export, eval_report) - stale,
                                    description="Export one checkpoint (a checkpoints partition) and score it.",
                                    tags={STAGE_TAG: "evals"})
    summary_job = dg.define_asset_job(EVAL_SUMMARY_JOB, selection=dg.AssetSelection.assets(eval_summary),
                                      description="Redraw the eval trend across all checkpoints.",
                                      tags={STAGE_TAG: "evals"})
    return dg.Definitions(
        assets=[corpus, token_shards, shard_manifest_spec, training_run, checkpoint_spec, hf_export, eval_report,
                report_manifest_spec, eval_summary],
        asset_checks=[*shard_checks, stale_checks],
        jobs=[data_job, checks_job, training_job, evals_job, summary_job],
        sensors=[build_corpus_files_sensor(cfg, data_job), build_checkpoints_sensor(cfg, evals_job, summary_job),
                 build_stale_partitions_sensor(partial(build_definitions, cfg))],
        resources={"training_client": TRAINING_CLIENTS[cfg.launch.backend]()},
        # Each launched run already has its own worker process, and a run's steps depend on each other;
        # Dagster's default (a process per step) would add a Python + torch start to every step.
        executor=dg.in_process_executor,
    )


@dg.definitions
def defs() -> dg.Definitions:
    """The code location `dagster dev -w workspace.yaml` loads. Built when Dagster loads it, not
    at import, so importing `build_definitions` (the CLI, tests) never reads GPT2TRAIN_* vars."""
    return build_definitions(config_from_env())
