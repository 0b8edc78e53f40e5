"""Sensors: new corpus files and new checkpoints are picked up without anyone clicking.

- `corpus_files_sensor`: adds a `corpus_files` partition for each new source file (adding a
  parquet file to a local corpus, or raising `corpus.files` for the Hub) and requests
  `corpus` + `token_shards` for that key only; records `shard_manifest` when the shards on disk
  differ from it (assets/manifests.py).
- `checkpoints_sensor`: registers each complete checkpoint under `<data_dir>/runs/` as a
  `checkpoints` partition (recording its content hash; the `training_run` asset records each
  checkpoint its trainer reports, so this catches those written outside a Dagster run), requests `hf_export` +
  `eval_report` for every partition that has no eval report yet — also while training runs —
  and `eval_summary` whenever a new report has landed since the last summary; records
  `report_manifest` when the reports on disk differ from it.
- `stale_partitions_sensor`: records each partitioned asset's `stale_partitions` check result
  (pipelines/stale_checks.py) when it changed: the stale partitions, and why, on the asset graph.
"""

from typing import Callable

import dagster as dg

from assets.checkpoints import pending_registrations
from assets.manifests import REPORT_MANIFEST, SHARD_MANIFEST, record_manifests
from assets.partitions import checkpoints, corpus_files, unregistered_source_files
from gpt2train.config import Config
from gpt2train.layout import runs_root
from gpt2train.training.runs import find_checkpoints
from pipelines.stale_checks import changed_evaluations


def build_corpus_files_sensor(cfg: Config, job) -> dg.SensorDefinition:
    @dg.sensor(
        name="corpus_files_sensor",
        job=job,
        # Listing the Hub is one API call; once a minute is polite and quick enough.
        minimum_interval_seconds=60,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Adds a corpus_files partition for each new source file and materializes it.",
    )
    def corpus_files_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        _, new = unregistered_source_files(cfg, context.instance)
        record_manifests(cfg, context.instance, (SHARD_MANIFEST,))  # under the manifests lock, now
        return dg.SensorResult(
            dynamic_partitions_requests=[corpus_files.build_add_request(new)] if new else [],
            run_requests=[dg.RunRequest(run_key=f"corpus-file:{k}", partition_key=k) for k in new],
        )

    return corpus_files_sensor


def latest_storage_id(instance: dg.DagsterInstance, asset: str) -> int | None:
    records = instance.fetch_materializations(dg.AssetKey(asset), limit=1).records
    return records[0].storage_id if records else None


def build_checkpoints_sensor(cfg: Config, evals_job, summary_job) -> dg.SensorDefinition:
    @dg.sensor(
        name="checkpoints_sensor",
        jobs=[evals_job, summary_job],
        # A checkpoint takes minutes to hours to train; 30 s is prompt and cheap (a directory listing).
        minimum_interval_seconds=30,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Registers each complete checkpoint as a `checkpoints` partition and exports and evaluates it; "
                    "refreshes eval_summary after new reports.",
    )
    def checkpoints_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        record_manifests(cfg, context.instance, (REPORT_MANIFEST,))  # under the manifests lock, now
        infos = find_checkpoints(runs_root(cfg.data_dir))
        new_keys, recorded = pending_registrations(context.instance, infos)
        known = set(context.instance.get_dynamic_partitions(checkpoints.name)) | set(new_keys)
        evaluated = context.instance.get_materialized_partitions(dg.AssetKey("eval_report"))
        # One request per checkpoint content: run_key dedupes across ticks, and a checkpoint rewritten in
        # place (new hash) before its report lands is requested again. One rewritten after its report is
        # not: its eval_report goes stale, which the UI shows and `gpt2train pipeline --stale-only` redoes.
        requests = [dg.RunRequest(run_key=f"evals:{i.key}:{i.model_sha256[:16]}", job_name=evals_job.name,
                                  partition_key=i.key)
                    for i in infos if i.key in known and i.key not in evaluated]
        last_report, last_summary = latest_storage_id(context.instance, "eval_report"), \
            latest_storage_id(context.instance, "eval_summary")
        if last_report is not None and (last_summary is None or last_report > last_summary):
            requests.append(dg.RunRequest(run_key=f"summary:{last_report}", job_name=summary_job.name))
        return dg.SensorResult(
            dynamic_partitions_requests=[checkpoints.build_add_request(new_keys)] if new_keys else [],
            asset_events=recorded,
            run_requests=requests,
        )

    return checkpoints_sensor


def build_stale_partitions_sensor(definitions: Callable[[], dg.Definitions]) -> dg.SensorDefinition:
    """`definitions()`: the code location's definitions, as for build_stale_partitions_check."""
    @dg.sensor(
        name="stale_partitions_sensor",
        # One bulk staleness pass (~1 s at 1,000 partitions, README's benchmarks); a code change shows
        # within this long of the code location's reload.
        minimum_interval_seconds=30,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Records each partitioned asset's stale_partitions check (which partitions are stale, and "
                    "why) whenever it changes: the asset graph shows a partitioned asset's staleness through it.",
    )
    def stale_partitions_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        # The definitions this code location serves, as the UI compares them with the records.
        return dg.SensorResult(asset_events=changed_evaluations(definitions(), context.instance))

    return stale_partitions_sensor
