"""`gpt2train pipeline`: materialize the chain in the Dagster instance at DAGSTER_HOME.

Runs go through the real instance (SQLite storage under DAGSTER_HOME), so they show in the
UI exactly like runs launched there. Stages, in dependency order, each its own runs:

    data        one `data` run per corpus partition (corpus + token_shards)
    training    the `training` job (torchrun through Pipes); checkpoints become partitions
    evals       one `checkpoint_evals` run per checkpoint partition (hf_export + eval_report),
                then `eval_summary`

With `stale_only`, an (asset, partition) runs only if it is stale or missing as the UI's markers
say (pipelines/staleness.py). Dagster marks an asset stale only once an upstream's data version
has changed, so the statuses are asked again before each stage: after a shard-config change the
shards rerun, which makes training stale, whose new run adds checkpoints to export and evaluate.
Everything else is reported as skipped. Without `stale_only`, every stage runs (training resumes,
so a complete run costs nothing) for the current run's checkpoints.

A failing checkpoint partition (e.g. its checkpoint was deleted) does not stop the others: the
failures are collected and raised together at the end, after the summary of what did run. A
failed data or training stage stops the pipeline; what it materialized before stays, and a
rerun with `stale_only` redoes only the failed stage and what comes after it (training resumes
from its last complete checkpoint).

Runs execute in this process (`execute_in_process`). A killed `gpt2train pipeline` takes its
trainer down with it (pipelines/torchrun_launcher.py and every rank die with their parent), and
the next one marks the runs it left STARTED as failed (pipelines/dead_runs.py).

One pipeline per data dir at a time: `run_pipeline` holds the data dir's writer lock
(`<data_dir>/.pipeline.lock`, gpt2train/locks.py) for the whole run, so a second `gpt2train
pipeline` on the same data dir is refused at once, naming the first, whatever its DAGSTER_HOME.
Runs launched from the UI do not come through here; each asset takes its own artifact's lock
(assets/*).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg

from assets.checkpoints import register_checkpoints
from assets.manifests import REPORT_MANIFEST, SHARD_MANIFEST, record_manifests
from assets.partitions import corpus_files, unregistered_source_files
from gpt2train.config import Config
from gpt2train.data.stage import source_changed
from gpt2train.errors import Gpt2TrainError
from gpt2train.locks import writer_lock
from gpt2train.layout import LINEAGE_FILE, pipeline_lock_path, report_dir, runs_root
from gpt2train.training.run_identity import run_dir
from gpt2train.training.runs import find_checkpoints
from pipelines.dead_runs import RUN_PROCESS_TAG, fail_runs_of_dead_processes, process_tag
from pipelines.definitions import (
    CHECKPOINT_EVALS_JOB, DATA_JOB, EVAL_SUMMARY_JOB, SHARD_CHECKS_JOB, TRAINING_JOB, build_definitions,
)
from pipelines.staleness import StaleStatus, stale_statuses

log = logging.getLogger(__name__)

DATA_ASSETS = ("corpus", "token_shards")  # in dependency order
EVAL_ASSETS = ("hf_export", "eval_report")
STAGES = ("data", "training", "evals")
# Dagster's console logger at INFO: its DEBUG lines (every step event) drown the library's own log.
QUIET_RUN_CONFIG = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}


@dataclass
class PipelineSummary:
    ran: list[tuple[str, str | None]] = field(default_factory=list)  # (asset, partition)
    skipped: list[tuple[str, str | None]] = field(default_factory=list)
    failed: list[tuple[str, str | None, str]] = field(default_factory=list)  # (asset, partition, cause)
    run_ids: list[str] = field(default_factory=list)
    reports: list[str] = field(default_factory=list)  # report dirs written or fresh, for the user


def register_corpus_partitions(cfg: Config, instance: dg.DagsterInstance) -> list[str]:
    """Add a `corpus_files` partition for each configured source file; returns all keys, in order."""
    keys, new = unregistered_source_files(cfg, instance)
    if new:
        instance.add_dynamic_partitions(corpus_files.name, new)
        log.info("registered %d new corpus partition(s): %s", len(new), ", ".join(new))
    return keys


def failure_cause(result) -> str:
    """The library's own message of a failed run (Dagster wraps it in its own errors)."""
    failure = next((e for e in result.all_events if e.is_failure and e.step_failure_data), None)
    if failure is None or not failure.step_failure_data.error:
        return "see the run in the UI"
    # The first gpt2train error in the chain: it names the file or field and what to do (what
    # it wraps, e.g. the Pipes client's "exit code 1", says less).
    chain, err = [], failure.step_failure_data.error
    while err is not None:
        chain.append(err)
        err = err.cause
    ours_names = gpt2train_error_names()
    ours = next((e for e in chain if e.cls_name in ours_names), chain[-1])
    # Dagster's message starts "gpt2train.errors.Gpt2TrainError: "; the user needs only the text.
    return re.sub(rf"^[\w.]*\b{re.escape(ours.cls_name)}: ", "", ours.message.strip())


def gpt2train_error_names() -> set[str]:
    """Class names of Gpt2TrainError and its subclasses (ArtifactBusy, InjectedFault, ...): a failed
    run's error chain holds only names, and every module that defines one is imported by now."""
    names, todo = set(), [Gpt2TrainError]
    while todo:
        cls = todo.pop()
        names.add(cls.__name__)
        todo += cls.__subclasses__()
    return names


def _execute(defs: dg.Definitions, job_name: str, instance: dg.DagsterInstance, summary: PipelineSummary,
             assets: list[str], partition: str | None = None) -> tuple[bool, str]:
    job = defs.resolve_job_def(job_name)
    log.info("materializing %s%s", " + ".join(assets), f" for {partition}" if partition else "")
    result = job.execute_in_process(partition_key=partition, instance=instance, raise_on_error=False,
                                    asset_selection=[dg.AssetKey(a) for a in assets], run_config=QUIET_RUN_CONFIG,
                                    tags={RUN_PROCESS_TAG: process_tag()})
    summary.run_ids.append(result.run_id)
    if result.success:
        summary.ran.extend((a, partition) for a in assets)
        return True, ""
    cause = f"run {result.run_id} ({job_name}{', partition ' + partition if partition else ''}) failed: " \
            f"{failure_cause(result)}"
    return False, cause


def run_pipeline(cfg: Config, instance: dg.DagsterInstance, stale_only: bool = False,
                 through: str = "evals") -> PipelineSummary:
    """Materialize the stages up to `through` (data | training | evals); see the module docstring."""
    if through not in STAGES:
        raise ValueError(f"through={through!r}: one of {STAGES}")
    # Refuses (ArtifactBusy, naming the holder) rather than waits: a second pipeline would only
    # redo, or fight over, what the first is writing. No asset's lock is this file (theirs are
    # named after their artifacts), so the runs below never meet it: no self-deadlock.
    with writer_lock(Path(cfg.data_dir), "pipeline data dir", lock=pipeline_lock_path(cfg.data_dir)):
        fail_runs_of_dead_processes(instance)  # a killed pipeline's runs, left STARTED
        return _run_stages(cfg, instance, stale_only, through)


def _run_stages(cfg: Config, instance: dg.DagsterInstance, stale_only: bool, through: str) -> PipelineSummary:
    defs = build_definitions(cfg)
    summary = PipelineSummary()
    _run_data_stage(cfg, defs, instance, summary, stale_only)
    if through == "data":
        return summary
    _run_training_stage(cfg, defs, instance, summary, stale_only)
    if through == "training":
        return summary
    _run_eval_stage(cfg, defs, instance, summary, stale_only)
    if summary.failed:
        lines = "\n".join(f"  {asset} [{key}]: {cause}" for asset, key, cause in summary.failed)
        raise PipelineFailed(summary, f"{len(summary.failed)} partition(s) failed; the others ran:\n{lines}")
    return summary


class PipelineFailed(Gpt2TrainError):
    """Some partitions failed; `summary` says what ran, was skipped and failed."""

    def __init__(self, summary: PipelineSummary, message: str):
        super().__init__(message)
        self.summary = summary


def _run_data_stage(cfg, defs, instance, summary, stale_only) -> None:
    keys = register_corpus_partitions(cfg, instance)
    statuses = stale_statuses(defs, instance, assets=list(DATA_ASSETS)) if stale_only else {}
    for key in keys:
        # Upstream first: a stale corpus file makes its shards stale too, once it reruns.
        selected = [a for a in DATA_ASSETS if not stale_only or statuses[(a, key)] != StaleStatus.FRESH]
        if stale_only and not selected and source_changed(cfg, key):
            selected = list(DATA_ASSETS)  # the file changed under a FRESH record
        if selected and selected[0] == "corpus":
            selected = list(DATA_ASSETS)
        summary.skipped.extend((a, key) for a in DATA_ASSETS if a not in selected)
        if selected:
            ok, cause = _execute(defs, DATA_JOB, instance, summary, selected, key)
            if not ok:  # training needs every shard: stop here
                raise Gpt2TrainError(cause)


def _run_training_stage(cfg, defs, instance, summary, stale_only) -> None:
    record_manifests(cfg, instance, (SHARD_MANIFEST,))  # the shards training would read, as they are on disk
    status = stale_statuses(defs, instance, assets=["training_run"])[("training_run", None)]
    if stale_only and status == StaleStatus.FRESH:
        summary.skipped.append(("training_run", None))
    else:
        ok, cause = _execute(defs, TRAINING_JOB, instance, summary, ["training_run"])
        if not ok:
            raise Gpt2TrainError(cause)
    # The asset registered its checkpoints while it trained; this also catches runs made outside
    # Dagster (`gpt2train train`) and checkpoints Dagster has not recorded yet.
    register_checkpoints(instance, find_checkpoints(runs_root(cfg.data_dir)))


def _run_eval_stage(cfg, defs, instance, summary, stale_only) -> None:

    if stale_only:
        keys = list(instance.get_dynamic_partitions("checkpoints"))
    else:  # the current run's checkpoints
        current = run_dir(cfg).name
        keys = [c.key for c in find_checkpoints(runs_root(cfg.data_dir)) if c.key.startswith(f"{current}@")]
    # One resolver pass for every partition; only a partition whose export reruns is asked again.
    statuses = stale_statuses(defs, instance, assets=list(EVAL_ASSETS)) if stale_only else {}
    for key in keys:
        if stale_only:
            _run_stale_evals(defs, instance, summary, key, statuses)
        else:
            ok, cause = _execute(defs, CHECKPOINT_EVALS_JOB, instance, summary, list(EVAL_ASSETS), key)
            if not ok:
                summary.failed.append(("hf_export + eval_report", key, cause))
        if (report_dir(cfg.data_dir, key) / LINEAGE_FILE).exists():
            summary.reports.append(str(report_dir(cfg.data_dir, key)))
    record_manifests(cfg, instance, (REPORT_MANIFEST,))  # the reports eval_summary would gather, on disk now
    if stale_only and \
            stale_statuses(defs, instance, assets=["eval_summary"])[("eval_summary", None)] == StaleStatus.FRESH:
        summary.skipped.append(("eval_summary", None))
    elif keys:
        ok, cause = _execute(defs, EVAL_SUMMARY_JOB, instance, summary, ["eval_summary"])
        if not ok:
            summary.failed.append(("eval_summary", None, cause))


def _run_stale_evals(defs, instance, summary, key: str, statuses: dict) -> None:
    """hf_export, then eval_report, each only if stale or missing. eval_report's status is asked again
    after a re-export: an export with the same bytes (the same data version) keeps the report fresh."""
    if statuses[("hf_export", key)] == StaleStatus.FRESH:
        summary.skipped.append(("hf_export", key))
    else:
        ok, cause = _execute(defs, CHECKPOINT_EVALS_JOB, instance, summary, ["hf_export"], key)
        if not ok:
            summary.failed.extend((a, key, cause) for a in EVAL_ASSETS)
            return
        statuses = stale_statuses(defs, instance, assets=["eval_report"], partition_keys=[key])
    if statuses[("eval_report", key)] == StaleStatus.FRESH:
        summary.skipped.append(("eval_report", key))
        return
    ok, cause = _execute(defs, CHECKPOINT_EVALS_JOB, instance, summary, ["eval_report"], key)
    if not ok:
        summary.failed.append(("eval_report", key, cause))


def run_shard_checks(cfg: Config, instance: dg.DagsterInstance, key: str) -> dict[str, dg.AssetCheckEvaluation]:
    """Run the four shard checks for partition `key` without rematerializing it."""
    job = build_definitions(cfg).resolve_job_def(SHARD_CHECKS_JOB)
    # A checks-only job has no assets to infer its partitions from, so dagster 1.13 rejects
    # `partition_key=`; the partition tag is what the checks' context reads, and it works.
    result = job.execute_in_process(tags={"dagster/partition": key}, instance=instance, raise_on_error=False,
                                    run_config=QUIET_RUN_CONFIG)
    return {e.check_name: e for e in result.get_asset_check_evaluations()}
