"""`gpt2train pipeline`: materialize the chain in the Dagster instance at DAGSTER_HOME.

Runs are recorded in the real instance (SQLite under DAGSTER_HOME by default, Postgres on a
deployment), so they show in the UI exactly like runs launched there. Stages, in dependency order, each its own runs:

    data        one `data` run per corpus partition (corpus + token_shards)
    training    the `training` job (torchrun through Pipes); checkpoints become partitions
    evals       one `checkpoint_evals` run per checkpoint partition (hf_export + eval_report),
                then `eval_summary`

With `stale_only`, an (asset, partition) runs only if it is stale or missing by the rules of
Dagster's stale resolver (pipelines/staleness.py): what a partition's page in the UI marks
"Unsynced", and the `stale_partitions` checks show on the asset graph (pipelines/stale_checks.py;
the graph's own marker shows a partitioned asset fresh whatever its partitions say). Dagster marks
an asset stale only once an upstream's data version has changed, so the statuses are asked again
before each stage: after a shard-config change the shards rerun, which makes training stale, whose
new run adds checkpoints to export and evaluate. `plan_stale_only` (`--stale-only --dry-run`) says
what the first pass would run and why, reading only: what depends on a rerun's new data versions it
names as decided after that rerun.
What the records call fresh is skipped only if it is still on disk as recorded (its files there,
at their recorded sizes; with `verify`, at their recorded sha256s: gpt2train/lineage/on_disk.py);
a deleted or truncated artifact is rebuilt, and its downstream with it if the bytes come out
different. Everything else is reported as skipped. Without `stale_only`, every stage runs (training resumes,
so a complete run costs nothing) for the current run's checkpoints.

A failing checkpoint partition (e.g. its checkpoint was deleted) does not stop the others: the
failures are collected and raised together at the end, after the summary of what did run. A
failed data or training stage stops the pipeline; what it materialized before stays, and a
rerun with `stale_only` redoes only the failed stage and what comes after it (training resumes
from its last complete checkpoint).

Each stage submits its independent runs together (every corpus partition; every checkpoint's
export and report) and waits for them, so they run concurrently within the instance's queue
limits. Runs go through the instance's run coordinator and run launcher, as the UI's do
(`LaunchedRuns`, the CLI's default), or execute one by one in this process (`InProcessRuns`,
`--in-process`, and the default of `run_pipeline`); pipelines/executors.py says how. Launched
runs outlive a killed `gpt2train pipeline` (they are the instance's, and their workers keep
running); the next one waits for them before asking what is stale. A killed in-process pipeline
takes its trainer down with it (pipelines/torchrun_launcher.py and every rank die with their
parent), and the next one marks the runs it left STARTED as failed (pipelines/dead_runs.py).

One pipeline per data dir at a time: `run_pipeline` holds the data dir's writer lock
(`<data_dir>/.pipeline.lock`, gpt2train/locks.py) for the whole run, so a second `gpt2train
pipeline` on the same data dir is refused at once, naming the first, whatever its DAGSTER_HOME.
Runs launched from the UI do not come through here; each asset takes its own artifact's lock
(assets/*). After its stages (also failed ones) the pipeline records the `stale_partitions` checks
that changed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg

from assets.checkpoints import pending_registrations, register_checkpoints
from assets.manifests import REPORT_MANIFEST, SHARD_MANIFEST, pending_manifests, record_manifests
from assets.partitions import corpus_files, unregistered_source_files
from gpt2train.config import Config
from gpt2train.data.stage import source_changed
from gpt2train.errors import Gpt2TrainError
from gpt2train.locks import writer_lock
from gpt2train.layout import LINEAGE_FILE, pipeline_lock_path, report_dir, runs_root
from gpt2train.training.run_identity import run_dir
from gpt2train.training.runs import find_checkpoints
from pipelines.artifacts import artifact_problem
from pipelines.dead_runs import fail_runs_of_dead_processes
from pipelines.definitions import (
    CHECKPOINT_EVALS_JOB, DATA_JOB, EVAL_SUMMARY_JOB, SHARD_CHECKS_JOB, TRAINING_JOB, build_definitions,
)
from pipelines.executors import DATA_DIR_TAG, IN_FLIGHT, QUIET_RUN_CONFIG, InProcessRuns, LaunchedRuns, failure_cause
from pipelines.stale_checks import record_stale_checks
from pipelines.staleness import StaleStatus, Staleness, stale_report, stale_statuses

log = logging.getLogger(__name__)

DATA_ASSETS = ("corpus", "token_shards")  # in dependency order
EVAL_ASSETS = ("hf_export", "eval_report")
STAGES = ("data", "training", "evals")
__all__ = ["PipelineFailed", "PipelinePlan", "PipelineSummary", "failure_cause", "plan_stale_only", "run_pipeline",
           "run_shard_checks"]


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


def run_pipeline(cfg: Config, instance: dg.DagsterInstance, stale_only: bool = False, through: str = "evals",
                 runs: LaunchedRuns | None = None, verify: bool = False) -> PipelineSummary:
    """Materialize the stages up to `through` (data | training | evals); see the module docstring.
    `runs`: submit each run to the instance (pipelines/executors.py); default: execute in this process.
    `verify`: with `stale_only`, re-hash every artifact about to be skipped, not only check that it is there."""
    if through not in STAGES:
        raise ValueError(f"through={through!r}: one of {STAGES}")
    # Refuses (ArtifactBusy, naming the holder) rather than waits: a second pipeline would only
    # redo, or fight over, what the first is writing. No asset's lock is this file (theirs are
    # named after their artifacts), so the runs below never meet it: no self-deadlock.
    with writer_lock(Path(cfg.data_dir), "pipeline data dir", lock=pipeline_lock_path(cfg.data_dir)):
        fail_runs_of_dead_processes(instance)  # runs left STARTED by a killed pipeline or run worker
        defs = build_definitions(cfg)
        try:
            if runs is None:
                return _run_stages(cfg, defs, instance, InProcessRuns(defs, instance), stale_only, through, verify)
            runs.expect(defs)
            _wait_for_earlier_runs(cfg, instance, runs)
            try:
                return _run_stages(cfg, defs, instance, runs, stale_only, through, verify)
            except BaseException:  # Ctrl-C, SIGTERM, a failed stage: stop what this pipeline still has in flight
                canceled = runs.cancel_unfinished()
                if canceled:
                    log.warning("canceled %d run(s) still in flight: %s", len(canceled), ", ".join(canceled))
                raise
        finally:
            _record_stale_checks(defs, instance)


def _record_stale_checks(defs, instance) -> None:
    """The asset graph's `stale_partitions` checks, as this pipeline leaves the partitions; a fault
    here (a storage error after Ctrl-C) never hides the pipeline's own outcome."""
    try:
        for e in record_stale_checks(defs, instance):  # a warning in the UI: said here too
            (log.debug if e.passed else log.info)("stale_partitions of %s: %s", e.asset_key.to_user_string(),
                                                  e.description)
    except Exception as e:  # noqa: BLE001 - the sensor records them at its next tick anyway
        log.warning("could not record the stale_partitions checks (%s): stale_partitions_sensor will", e)


def _wait_for_earlier_runs(cfg: Config, instance: dg.DagsterInstance, runs: LaunchedRuns) -> None:
    """Runs an earlier, killed `gpt2train pipeline` submitted for this data dir outlive it (their workers
    belong to the instance): let them finish before deciding what is stale, so nothing runs twice."""
    data_dir = str(Path(cfg.data_dir).resolve())
    unfinished = instance.get_runs(filters=dg.RunsFilter(statuses=IN_FLIGHT, tags={DATA_DIR_TAG: data_dir}))
    if unfinished:
        log.warning("waiting for %d run(s) an earlier `gpt2train pipeline` submitted for %s: %s", len(unfinished),
                    data_dir, ", ".join(r.run_id for r in unfinished))
        runs.wait([r.run_id for r in unfinished])


def _run_stages(cfg, defs, instance, runs, stale_only: bool, through: str, verify: bool) -> PipelineSummary:
    summary = PipelineSummary()
    fresh = OnDisk(cfg, verify) if stale_only else None
    _run_data_stage(cfg, defs, instance, runs, summary, fresh)
    if through == "data":
        return summary
    _run_training_stage(cfg, defs, instance, runs, summary, fresh)
    if through == "training":
        return summary
    _run_eval_stage(cfg, defs, instance, runs, summary, fresh)
    if summary.failed:
        lines = "\n".join(f"  {asset} [{key}]: {cause}" for asset, key, cause in summary.failed)
        raise PipelineFailed(summary, f"{len(summary.failed)} partition(s) failed; the others ran:\n{lines}")
    return summary


class OnDisk:
    """With `--stale-only`: is a pair Dagster's records call FRESH still on disk as recorded
    (gpt2train/lineage/on_disk.py)? A missing or changed artifact is rebuilt, like a stale one;
    its downstream follows if the rebuilt bytes differ (their data version changes)."""

    def __init__(self, cfg: Config, rehash: bool):
        self.cfg, self.rehash = cfg, rehash

    def fresh(self, statuses: dict, asset: str, key: str | None = None) -> bool:
        if statuses[(asset, key)] != StaleStatus.FRESH:
            return False
        problem = artifact_problem(self.cfg, asset, key, rehash=self.rehash)
        if problem:
            log.warning("%s%s is fresh in Dagster's records but %s: rebuilding it", asset,
                        f" [{key}]" if key else "", problem)
        return problem is None


class PipelineFailed(Gpt2TrainError):
    """Some partitions failed; `summary` says what ran, was skipped and failed."""

    def __init__(self, summary: PipelineSummary, message: str):
        super().__init__(message)
        self.summary = summary


def _run_batch(runs, summary: PipelineSummary, job_name: str,
               requests: list[tuple[list[str], str | None]]) -> list[tuple[list[str], str | None, str]]:
    """Submit one run per (assets, partition) at once, wait for all; returns the failures with their cause."""
    submitted = [(runs.submit(job_name, assets, partition), assets, partition) for assets, partition in requests]
    outcomes = runs.wait([run_id for run_id, _, _ in submitted])
    failures = []
    for run_id, assets, partition in submitted:
        summary.run_ids.append(run_id)
        outcome = outcomes[run_id]
        if outcome.ok:
            summary.ran.extend((a, partition) for a in assets)
        else:
            where = f"{job_name}{', partition ' + partition if partition else ''}"
            failures.append((assets, partition, f"run {run_id} ({where}) failed: {outcome.cause}"))
    return failures


def _run_data_stage(cfg, defs, instance, runs, summary, fresh: OnDisk | None) -> None:
    keys = register_corpus_partitions(cfg, instance)
    if not fresh:
        _raise_data_failures(_run_batch(runs, summary, DATA_JOB, [(list(DATA_ASSETS), k) for k in keys]))
        return
    statuses = stale_statuses(defs, instance, assets=list(DATA_ASSETS))
    # A file never recorded needs its shards too: one run. A recorded one whose corpus record is
    # stale (a new corpus stage version, a changed file) reruns alone first: only if its data
    # version comes out different are its shards stale, and the statuses are asked again to see.
    both = [k for k in keys if statuses[("corpus", k)] == StaleStatus.MISSING]
    corpus_only = [k for k in keys if k not in both and (not fresh.fresh(statuses, "corpus", k)
                                                         or source_changed(cfg, k))]
    summary.skipped.extend(("corpus", k) for k in keys if k not in both and k not in corpus_only)
    _raise_data_failures(_run_batch(runs, summary, DATA_JOB, [(list(DATA_ASSETS), k) for k in both]
                                    + [(["corpus"], k) for k in corpus_only]))
    if corpus_only:
        statuses.update(stale_statuses(defs, instance, assets=["token_shards"], partition_keys=corpus_only))
    shards = [k for k in keys if k not in both and not fresh.fresh(statuses, "token_shards", k)]
    summary.skipped.extend(("token_shards", k) for k in keys if k not in both and k not in shards)
    _raise_data_failures(_run_batch(runs, summary, DATA_JOB, [(["token_shards"], k) for k in shards]))


def _raise_data_failures(failures: list) -> None:
    if failures:  # training needs every shard: stop here
        raise Gpt2TrainError("\n".join(cause for _, _, cause in failures))


def _run_training_stage(cfg, defs, instance, runs, summary, fresh: OnDisk | None) -> None:
    record_manifests(cfg, instance, (SHARD_MANIFEST,))  # the shards training would read, as they are on disk
    if fresh and fresh.fresh(stale_statuses(defs, instance, assets=["training_run"]), "training_run"):
        summary.skipped.append(("training_run", None))
    else:
        failures = _run_batch(runs, summary, TRAINING_JOB, [(["training_run"], None)])
        if failures:
            raise Gpt2TrainError(failures[0][2])
    # The asset registered its checkpoints while it trained; this also catches runs made outside
    # Dagster (`gpt2train train`) and checkpoints Dagster has not recorded yet.
    register_checkpoints(instance, find_checkpoints(runs_root(cfg.data_dir)))


def _run_eval_stage(cfg, defs, instance, runs, summary, fresh: OnDisk | None) -> None:
    if fresh:
        keys = list(instance.get_dynamic_partitions("checkpoints"))
        _run_stale_evals(defs, instance, runs, summary, keys, fresh)
    else:  # the current run's checkpoints, every one exported and scored (concurrently, within the queue's limits)
        current = run_dir(cfg).name
        keys = [c.key for c in find_checkpoints(runs_root(cfg.data_dir)) if c.key.startswith(f"{current}@")]
        for _, key, cause in _run_batch(runs, summary, CHECKPOINT_EVALS_JOB, [(list(EVAL_ASSETS), k) for k in keys]):
            summary.failed.append(("hf_export + eval_report", key, cause))
    summary.reports.extend(str(report_dir(cfg.data_dir, k)) for k in keys
                           if (report_dir(cfg.data_dir, k) / LINEAGE_FILE).exists())
    record_manifests(cfg, instance, (REPORT_MANIFEST,))  # the reports eval_summary would gather, on disk now
    if fresh and fresh.fresh(stale_statuses(defs, instance, assets=["eval_summary"]), "eval_summary"):
        summary.skipped.append(("eval_summary", None))
    elif keys:
        for _, _, cause in _run_batch(runs, summary, EVAL_SUMMARY_JOB, [(["eval_summary"], None)]):
            summary.failed.append(("eval_summary", None, cause))


def _run_stale_evals(defs, instance, runs, summary, keys: list[str], fresh: OnDisk) -> None:
    """hf_export, then eval_report, each only if stale or missing: first every stale export, then every
    stale report. eval_report's status is asked again after a re-export: an export with the same bytes
    (the same data version) keeps its report fresh."""
    statuses = stale_statuses(defs, instance, assets=list(EVAL_ASSETS))
    exports = [k for k in keys if not fresh.fresh(statuses, "hf_export", k)]
    summary.skipped.extend(("hf_export", k) for k in keys if k not in exports)
    failed = set()
    for _, key, cause in _run_batch(runs, summary, CHECKPOINT_EVALS_JOB, [(["hf_export"], k) for k in exports]):
        summary.failed.extend((a, key, cause) for a in EVAL_ASSETS)
        failed.add(key)
    reexported = [k for k in exports if k not in failed]
    if reexported:
        statuses.update(stale_statuses(defs, instance, assets=["eval_report"], partition_keys=reexported))
    reports = [k for k in keys if k not in failed and not fresh.fresh(statuses, "eval_report", k)]
    summary.skipped.extend(("eval_report", k) for k in keys if k not in failed and k not in reports)
    for _, key, cause in _run_batch(runs, summary, CHECKPOINT_EVALS_JOB, [(["eval_report"], k) for k in reports]):
        summary.failed.append(("eval_report", key, cause))


def run_shard_checks(cfg: Config, instance: dg.DagsterInstance, key: str) -> dict[str, dg.AssetCheckEvaluation]:
    """Run the four shard checks for partition `key` without rematerializing it."""
    job = build_definitions(cfg).resolve_job_def(SHARD_CHECKS_JOB)
    # A checks-only job has no assets to infer its partitions from, so dagster 1.13 rejects
    # `partition_key=`; the partition tag is what the checks' context reads, and it works.
    result = job.execute_in_process(tags={"dagster/partition": key}, instance=instance, raise_on_error=False,
                                    run_config=QUIET_RUN_CONFIG)
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


# --------------------------------------------------------------------------------------------- dry run


@dataclass
class PipelinePlan:
    """What `run_pipeline(stale_only=True)` would do now, and why, in stage order."""
    would_run: list[tuple[str, str | None, str]] = field(default_factory=list)  # (asset, partition, why)
    fresh: list[tuple[str, str | None]] = field(default_factory=list)  # would be skipped
    # (asset, partition, what decides): asked only once what it depends on has rerun, as the pipeline does
    after: list[tuple[str, str | None, str]] = field(default_factory=list)


def plan_stale_only(cfg: Config, instance: dg.DagsterInstance, through: str = "evals",
                    verify: bool = False) -> PipelinePlan:
    """`gpt2train pipeline --stale-only --dry-run`: the decisions of `run_pipeline(stale_only=True)`'s
    first pass over each stage, with their reasons, from the instance's records and the disk. Reads
    only: no run, no partition registered, no manifest or check recorded, no lock taken. Where the
    pipeline would ask again after a rerun (a corpus rerun's shards, training after new shards, a
    re-export's report, the summary after new reports), the plan says what that depends on."""
    if through not in STAGES:
        raise ValueError(f"through={through!r}: one of {STAGES}")
    defs = build_definitions(cfg)
    plan = PipelinePlan()
    data_runs = _plan_data_stage(cfg, defs, instance, plan, verify)
    if through == "data":
        return plan
    training_runs = _plan_training_stage(cfg, defs, instance, plan, verify, after_data=data_runs)
    if through == "training":
        plan.after = [a for a in plan.after if not a[0].startswith("hf_export")]  # no eval stage
        return plan
    _plan_eval_stage(cfg, defs, instance, plan, verify, after_training=training_runs)
    return plan


def _why_not_fresh(cfg, staleness: Staleness, asset: str, key: str | None, verify: bool) -> str | None:
    """Why the pipeline would rerun (asset, key) now, or None: it is fresh and on disk as recorded."""
    if staleness.status == StaleStatus.MISSING:
        return "never materialized"
    if staleness.status == StaleStatus.STALE:
        return f"stale: {'; '.join(staleness.causes)}"
    problem = artifact_problem(cfg, asset, key, rehash=verify)
    return f"fresh in Dagster's records, but {problem}" if problem else None


def _plan_data_stage(cfg, defs, instance, plan: PipelinePlan, verify: bool) -> bool:
    keys, new = unregistered_source_files(cfg, instance)
    registered = [k for k in keys if k not in new]
    report = stale_report(defs, instance, assets=list(DATA_ASSETS), partition_keys=registered) if registered else {}
    for k in keys:
        if k in new:
            plan.would_run += [(a, k, "a new source file (not yet a corpus_files partition)") for a in DATA_ASSETS]
            continue
        why = _why_not_fresh(cfg, report[("corpus", k)], "corpus", k, verify)
        if why is None and source_changed(cfg, k):
            why = "its source file's bytes differ from its corpus record"
        if why is None:
            plan.fresh.append(("corpus", k))
        elif report[("corpus", k)].status == StaleStatus.MISSING:
            plan.would_run += [(a, k, why) for a in DATA_ASSETS]
            continue
        else:
            plan.would_run.append(("corpus", k, why))
            plan.after.append(("token_shards", k, "stale once its corpus reruns, if the corpus's data version changes"))
            continue
        why = _why_not_fresh(cfg, report[("token_shards", k)], "token_shards", k, verify)
        if why is None:
            plan.fresh.append(("token_shards", k))
        else:
            plan.would_run.append(("token_shards", k, why))
    return any(a in DATA_ASSETS for a, _, _ in plan.would_run)


def _plan_training_stage(cfg, defs, instance, plan: PipelinePlan, verify: bool, after_data: bool) -> bool:
    if after_data:
        plan.after.append(("training_run", None, "stale once the data stage has rerun, if the shards change"))
        plan.after.append(("hf_export + eval_report", None, "of every checkpoint a new training run writes"))
        return True
    why = None
    if pending_manifests(cfg, instance, (SHARD_MANIFEST,)):
        why = "the shards on disk differ from the recorded shard_manifest (recorded first)"
    if why is None:
        why = _why_not_fresh(cfg, stale_report(defs, instance, assets=["training_run"])[("training_run", None)],
                             "training_run", None, verify)
    if why is None:
        plan.fresh.append(("training_run", None))
        return False
    plan.would_run.append(("training_run", None, why))
    plan.after.append(("hf_export + eval_report", None, "of every checkpoint the training run writes"))
    return True


def _plan_eval_stage(cfg, defs, instance, plan: PipelinePlan, verify: bool, after_training: bool) -> None:
    new_keys, events = ([], []) if after_training else \
        pending_registrations(instance, find_checkpoints(runs_root(cfg.data_dir)))
    rewritten = {e.partition for e in events} - set(new_keys)
    keys = list(instance.get_dynamic_partitions("checkpoints"))
    report = stale_report(defs, instance, assets=list(EVAL_ASSETS), partition_keys=keys) if keys else {}
    for k in new_keys:
        plan.would_run += [(a, k, "a new checkpoint (not yet a checkpoints partition)") for a in EVAL_ASSETS]
    for k in keys:
        if k in rewritten:
            why = "stale once recorded: its checkpoint's content hash differs from the recorded one"
        else:
            why = _why_not_fresh(cfg, report[("hf_export", k)], "hf_export", k, verify)
        if why is None:
            plan.fresh.append(("hf_export", k))
        else:
            plan.would_run.append(("hf_export", k, why))
        reason = _why_not_fresh(cfg, report[("eval_report", k)], "eval_report", k, verify)
        if reason is not None:
            plan.would_run.append(("eval_report", k, reason))
        elif why is not None:
            plan.after.append(("eval_report", k, "stale once its export reruns, if the export's bytes change"))
        else:
            plan.fresh.append(("eval_report", k))
    pending_reports = after_training or any(a in EVAL_ASSETS for a, _, _ in plan.would_run + plan.after)
    if pending_reports:
        plan.after.append(("eval_summary", None, "stale once the reports rerun, if their figures change"))
    elif pending_manifests(cfg, instance, (REPORT_MANIFEST,)):
        plan.would_run.append(("eval_summary", None, "the finished reports differ from the recorded report_manifest "
                                                      "(recorded first)"))
    elif keys:
        why = _why_not_fresh(cfg, stale_report(defs, instance, assets=["eval_summary"])[("eval_summary", None)],
                             "eval_summary", None, verify)
        if why is None:
            plan.fresh.append(("eval_summary", None))
        else:
            plan.would_run.append(("eval_summary", None, why))
