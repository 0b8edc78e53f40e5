"""`gpt2train pipeline`: materialize the chain in the Dagster instance at DAGSTER_HOME.

Runs go through the real instance (SQLite storage under DAGSTER_HOME), so they show in the
UI exactly like runs launched there. One run per corpus partition (the `data` job).
With `stale_only`, a partition runs only if one of its assets is stale or missing, as the
UI's markers say (pipelines/staleness.py); everything else is reported as skipped.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import dagster as dg

from assets.partitions import corpus_files, unregistered_source_files
from gpt2train.config import Config
from gpt2train.data_stage import source_changed
from gpt2train.errors import Gpt2TrainError
from pipelines.definitions import DATA_JOB, SHARD_CHECKS_JOB, build_definitions
from pipelines.staleness import StaleStatus, stale_statuses

log = logging.getLogger(__name__)

DATA_ASSETS = ("corpus", "token_shards")  # in dependency order
# Dagster's console logger at INFO: its DEBUG lines (every step event) drown the library's own log.
QUIET_RUN_CONFIG = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}


@dataclass
class PipelineSummary:
    ran: list[tuple[str, str]] = field(default_factory=list)  # (asset, partition)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    run_ids: list[str] = field(default_factory=list)


def register_corpus_partitions(cfg: Config, instance: dg.DagsterInstance) -> list[str]:
    """Add a `corpus_files` partition for each configured source file; returns all keys, in order."""
    keys, new = unregistered_source_files(cfg, instance)
    if new:
        instance.add_dynamic_partitions(corpus_files.name, new)
        log.info("registered %d new corpus partition(s): %s", len(new), ", ".join(new))
    return keys


def run_pipeline(cfg: Config, instance: dg.DagsterInstance, stale_only: bool = False) -> PipelineSummary:
    defs = build_definitions(cfg)
    job = defs.resolve_job_def(DATA_JOB)
    keys = register_corpus_partitions(cfg, instance)
    summary = PipelineSummary()
    statuses = stale_statuses(defs, instance, keys) if stale_only else {}
    for key in keys:
        # Upstream first: a stale corpus file makes its shards stale too, once it reruns.
        selected = [a for a in DATA_ASSETS if not stale_only or statuses[(a, key)] != StaleStatus.FRESH]
        if stale_only and not selected and source_changed(cfg, key):
            selected = list(DATA_ASSETS)  # the file changed under a FRESH record
        if selected and selected[0] == "corpus":
            selected = list(DATA_ASSETS)
        for a in DATA_ASSETS:
            if a not in selected:
                summary.skipped.append((a, key))
        if not selected:
            continue
        log.info("materializing %s for %s", " + ".join(selected), key)
        result = job.execute_in_process(partition_key=key, instance=instance, raise_on_error=False,
                                        asset_selection=[dg.AssetKey(a) for a in selected],
                                        run_config=QUIET_RUN_CONFIG)
        summary.run_ids.append(result.run_id)
        if not result.success:
            failure = next((e for e in result.all_events if e.is_failure and e.step_failure_data), None)
            cause = "see the run in the UI"
            if failure and failure.step_failure_data.error:
                err = failure.step_failure_data.error
                while err.cause:  # Dagster wraps the library's error; show the library's message
                    err = err.cause
                cause = err.message.strip()
            raise Gpt2TrainError(f"run {result.run_id} ({DATA_JOB}, partition {key}) failed: {cause}")
        summary.ran.extend((a, key) for a in selected)
    return summary


def run_shard_checks(cfg: Config, instance: dg.DagsterInstance, key: str) -> dict[str, dg.AssetCheckEvaluation]:
    """Run the four shard checks for partition `key` without rematerializing it."""
    job = build_definitions(cfg).resolve_job_def(SHARD_CHECKS_JOB)
    # A checks-only job has no assets to infer its partitions from, so dagster 1.13 rejects
    # `partition_key=`; the partition tag is what the checks' context reads, and it works.
    result = job.execute_in_process(tags={"dagster/partition": key}, instance=instance, raise_on_error=False,
                                    run_config=QUIET_RUN_CONFIG)
    return {e.check_name: e for e in result.get_asset_check_evaluations()}
