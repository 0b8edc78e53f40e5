"""The tiny chain on a rehearsed deployment: PostgreSQL, a gRPC code server, the webserver and the
daemon, each a real server on 127.0.0.1 (tests/deployment.py), runs going through the queued run
coordinator and Dagster's default run launcher (a run worker process per run).

    pytest -m e2e tests/test_deployment.py -q -s     # -s prints the measured wall times

Nothing here calls the assets itself: the daemon's corpus_files_sensor starts the data runs,
`training` is launched through the webserver's GraphQL API, checkpoints_sensor exports and
evaluates each checkpoint and redraws eval_summary. Then, on the same deployment: staleness read
from Postgres, a Postgres restart while a run is in flight, and a SIGKILLed run worker.
"""

from __future__ import annotations

import os
import re
import signal
import time

import dagster as dg
import psutil
import pytest

from gpt2train.config import load_config
from pipelines.dead_runs import SUBMITTED_BY_TAG
from pipelines.definitions import build_definitions
from pipelines.sensors import latest_storage_id
from pipelines.staleness import StaleStatus, stale_statuses
from tests.deployment import DAEMON_HEALTH, NEEDED_DAEMONS, daemons_healthy, dagster_deployment, wait_for
from tests.fixtures.chain import CHAIN_ASSETS, CHAIN_SETS

pytestmark = pytest.mark.e2e

TIMINGS: dict[str, float] = {}


def timed(name: str, start: float) -> None:
    TIMINGS[name] = time.monotonic() - start
    print(f"\n{name}: {TIMINGS[name]:.1f} s", flush=True)


@pytest.fixture(scope="module")
def dep(tmp_path_factory, postgres):
    start = time.monotonic()
    with dagster_deployment(tmp_path_factory.mktemp("deployment"), postgres, list(CHAIN_SETS)) as deployment:
        timed("deployment ready", start)
        yield deployment
    print("\nwall times (s):", {k: round(v, 1) for k, v in TIMINGS.items()})


@pytest.fixture(scope="module")
def dep_instance(dep):
    """The deployment's Postgres-backed instance, opened in this process."""
    with dep.instance() as inst:
        yield inst


def wait_run(dep, instance, run_id: str, timeout: float) -> dg.DagsterRun:
    return wait_for(f"run {run_id} to finish", lambda: (r := instance.get_run_by_id(run_id)) and r.is_finished and r,
                    timeout, detail=lambda: f"status {instance.get_run_by_id(run_id).status}; daemon log:\n"
                                            f"{dep.log_tail('daemon', 1500)}")


def runs_of(instance, job: str) -> list[dg.DagsterRun]:
    return list(instance.get_runs(filters=dg.RunsFilter(job_name=job)))


FAILURE_EVENTS = ("ENGINE_EVENT", "PIPELINE_FAILURE", "RUN_FAILURE", "STEP_FAILURE")


def failure_text(instance, run_id: str) -> str:
    """The engine, step- and run-failure messages of a run, oldest first (what the UI shows for it)."""
    out = []
    for r in instance.get_records_for_run(run_id).records:
        event = r.event_log_entry.dagster_event
        if event and event.event_type_value in FAILURE_EVENTS:
            error = getattr(event.event_specific_data, "error", None)
            out.append(f"{event.event_type_value}: {r.event_log_entry.message}" + (f" {error.message}" if error else ""))
    return "\n".join(out)


def materialization_counts(dep) -> dict[str, int]:
    """Materialization events per asset, straight from Postgres's event_logs table."""
    out = dep.postgres.sql("SELECT asset_key, count(*) FROM event_logs WHERE dagster_event_type = "
                           "'ASSET_MATERIALIZATION' GROUP BY asset_key", db=dep.database)
    return {re.sub(r'[\[\]"]', "", key): int(n) for key, n in (line.split("|") for line in out.split())}


IN_PROGRESS = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
               dg.DagsterRunStatus.STARTED]


def chain_done(instance) -> bool:
    """Every checkpoint has a report, the summary is newer than the last report, and no run is in progress."""
    keys = set(instance.get_dynamic_partitions("checkpoints"))
    if len(keys) < 2 or keys - instance.get_materialized_partitions(dg.AssetKey("eval_report")):
        return False
    report, summary = latest_storage_id(instance, "eval_report"), latest_storage_id(instance, "eval_summary")
    return summary is not None and summary > report and \
        not instance.get_runs(filters=dg.RunsFilter(statuses=IN_PROGRESS))


def chain_cfg(dep, *overrides: str):
    return load_config("tiny", [*dep.overrides, *overrides])


def max_overlap(records, where=lambda r: True) -> int:
    """The most runs (of those `where` picks) that were in progress at one moment."""
    edges = sorted(e for r in records if where(r) and r.start_time and r.end_time
                   for e in ((r.start_time, 1), (r.end_time, -1)))
    depth = best = 0
    for _, step in edges:
        depth += step
        best = max(best, depth)
    return best


# Six or seven run workers and several sensor intervals: 6.5 to 9 min measured on a shared 2-core machine,
# too close to pytest's default 600 s.
@pytest.mark.timeout(1800)
def test_the_chain_runs_through_the_deployment(dep, dep_instance):
    instance = dep_instance
    start = time.monotonic()
    # corpus_files_sensor's first tick (at daemon start) adds both files and queues a data run for each.
    data_runs = wait_for("two data runs from corpus_files_sensor", lambda: len(runs_of(instance, "data")) >= 2 and
                         runs_of(instance, "data"), 120, detail=lambda: dep.log_tail("daemon"))
    for run in data_runs:
        assert run.tags.get("dagster/sensor_name") == "corpus_files_sensor"
        assert wait_run(dep, instance, run.run_id, 300).status == dg.DagsterRunStatus.SUCCESS, \
            failure_text(instance, run.run_id)
    timed("data runs (2, sensor-launched)", start)

    t = time.monotonic()
    train_id = dep.launch("training", tags={"gpt2train/stage": "training"})
    train = wait_run(dep, instance, train_id, 600)
    assert train.status == dg.DagsterRunStatus.SUCCESS, failure_text(instance, train_id)
    timed("training run (4 steps)", t)

    t = time.monotonic()
    # checkpoints_sensor: registers both checkpoints (partitions), exports and evaluates them, then the summary.
    wait_for("both checkpoints evaluated and eval_summary redrawn after the last report", lambda: chain_done(instance),
             900, interval=2, detail=lambda: f"runs: {[(r.job_name, r.status.value) for r in instance.get_runs()]}")
    timed("exports + evals + summary after training", t)
    timed("whole chain", start)

    keys = sorted(instance.get_dynamic_partitions("checkpoints"))
    assert len(keys) == 2
    eval_runs = runs_of(instance, "checkpoint_evals")
    assert {r.tags.get("dagster/partition") for r in eval_runs} == set(keys)
    for r in eval_runs:
        assert r.tags.get("dagster/sensor_name") == "checkpoints_sensor"
        assert r.status == dg.DagsterRunStatus.SUCCESS, failure_text(instance, r.run_id)
    # The records are in Postgres, written by the run workers: every asset of the chain materialized.
    counts = materialization_counts(dep)
    assert all(counts.get(a, 0) >= 1 for a in CHAIN_ASSETS), counts
    assert counts["corpus"] == 2 and counts["hf_export"] == 2 and counts["eval_report"] == 2, counts
    for key in keys:
        report = dep.data_dir / "reports" / key
        assert "hellaswag" in (report / "report.md").read_text().lower()
        assert (report / "results.json").exists()
    # The queue held the limits of dagster.yaml: 3 runs at most, 2 sensor-launched evals at most.
    records = instance.get_run_records()
    assert max_overlap(records) <= 3
    assert max_overlap(records, lambda r: r.dagster_run.tags.get("dagster/sensor_name") == "checkpoints_sensor") <= 2
    # The webserver reads the same storage.
    runs = dep.graphql("{ runsOrError { ... on Runs { results { runId status } } } }")["runsOrError"]["results"]
    assert {r["runId"] for r in runs} >= {train_id, *(r.run_id for r in eval_runs)}


def test_staleness_reads_the_postgres_instance(dep, dep_instance):
    """tests/test_pipeline_chain.py's cases, decided from the deployment's records."""
    instance = dep_instance
    cfg = chain_cfg(dep)
    defs = build_definitions(cfg)
    statuses = stale_statuses(defs, instance)
    assert statuses == stale_statuses(defs, instance, bulk=False)
    assert set(statuses.values()) == {StaleStatus.FRESH}, {k: s for k, s in statuses.items() if s != StaleStatus.FRESH}
    changed = stale_statuses(build_definitions(chain_cfg(dep, "evals.tasks=[hellaswag:0]")), instance)
    keys = instance.get_dynamic_partitions("checkpoints")
    assert {k for k, s in changed.items() if s != StaleStatus.FRESH} == {("eval_report", k) for k in keys}
    resharded = stale_statuses(build_definitions(chain_cfg(dep, "shards.shard_size=30000")), instance)
    assert {k for k, s in resharded.items() if s != StaleStatus.FRESH} == {
        ("token_shards", k) for k in instance.get_dynamic_partitions("corpus_files")}


def test_gpt2train_pipeline_submits_to_the_deployments_queue(dep, dep_instance):
    """`gpt2train pipeline --stale-only` with the deployment's DAGSTER_HOME and config: a report deleted
    from disk (fresh in Postgres's records) is rebuilt by a run that goes through the deployment's
    queue, dequeued by its daemon (not by the command) and launched by its code server."""
    instance = dep_instance
    import subprocess
    import sys

    from tests.paths import REPO

    key = sorted(instance.get_dynamic_partitions("checkpoints"))[0]
    report = dep.data_dir / "reports" / key
    (report / "report.md").unlink()
    before = {r.run_id for r in instance.get_runs()}
    sets = [a for s in dep.overrides for a in ("--set", s)]
    r = subprocess.run([sys.executable, "-m", "pipelines.cli", "pipeline", "--config", "tiny", *sets, "--stale-only"],
                       env=dep.env, capture_output=True, text=True, timeout=900, cwd=REPO)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("ran ") == 1 and f"ran      eval_report [{key}]" in r.stdout, r.stdout
    assert "dequeuing them here" not in r.stderr  # the deployment's daemon did
    # (The sensor may add a summary run of its own after the new report: only the command's is counted.)
    (new,) = [run for run in instance.get_runs() if run.run_id not in before and SUBMITTED_BY_TAG in run.tags]
    assert new.status == dg.DagsterRunStatus.SUCCESS and new.tags["gpt2train/stage"] == "evals"
    assert (report / "report.md").is_file()


def started(instance, run_id: str) -> bool:
    return instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.STARTED


def test_a_postgres_restart_mid_run_loses_nothing(dep, dep_instance):
    instance = dep_instance
    before = materialization_counts(dep)
    materialized = {a: instance.get_materialized_partitions(dg.AssetKey(a)) for a in ("corpus", "eval_report")}
    key = sorted(instance.get_dynamic_partitions("checkpoints"))[0]
    run_id = dep.launch("checkpoint_evals", partition=key)
    wait_for("the checkpoint_evals run to start", lambda: started(instance, run_id), 120, interval=0.5)
    t = time.monotonic()
    dep.postgres.stop("fast")
    time.sleep(5)  # the run worker writes events meanwhile (and fails to)
    dep.postgres.start()
    timed("postgres down", t)
    # The run ends one way or the other, never left STARTED: Dagster's Postgres storage retries a lost
    # connection a few times; past that the run fails.
    run = wait_run(dep, instance, run_id, 300)
    timed("run after restart ended", t)
    print(f"\nrun in flight across the restart: {run.status.value}\n{failure_text(instance, run_id)[-1500:]}")
    if run.status != dg.DagsterRunStatus.SUCCESS:
        assert run.status == dg.DagsterRunStatus.FAILURE
        assert "psycopg2.OperationalError" in failure_text(instance, run_id), "a failed run must say why"
    # Nothing materialized before is lost.
    after = materialization_counts(dep)
    assert all(after.get(a, 0) >= n for a, n in before.items()), (before, after)
    for a, parts in materialized.items():
        assert parts <= instance.get_materialized_partitions(dg.AssetKey(a))
    # The servers came through. The webserver's pooled connections died with the server: its first queries
    # after the restart can fail (a PythonError, an HTTP 500) until each storage's pool has reconnected.
    for server in dep.servers.values():
        server.check_alive()
    t = time.monotonic()
    failed = storage_queries_until_answered(dep)
    timed("webserver answering again after the restart", t)
    print(f"\nwebserver queries that failed after the restart: {failed}")
    assert failed <= 6
    wait_for("the daemons healthy again", lambda: NEEDED_DAEMONS <= daemons_healthy(dep), 120)
    again = dep.launch("checkpoint_evals", partition=key)
    assert wait_run(dep, instance, again, 300).status == dg.DagsterRunStatus.SUCCESS, failure_text(instance, again)
    assert set(stale_statuses(build_definitions(chain_cfg(dep)), instance).values()) == {StaleStatus.FRESH}


# One read of each storage the webserver uses: runs, events (materializations), schedules (ticks), daemon heartbeats.
STORAGE_QUERIES = ("{ runsOrError(limit: 1) { __typename } }",
                   '{ assetOrError(assetKey: {path: ["eval_report"]}) { __typename '
                   "... on Asset { assetMaterializations(limit: 1) { timestamp } } } }",
                   '{ sensorOrError(sensorSelector: {repositoryLocationName: "gpt2train", '
                   'repositoryName: "__repository__", sensorName: "checkpoints_sensor"}) { __typename '
                   "... on Sensor { sensorState { ticks(limit: 1) { id } } } } }",
                   DAEMON_HEALTH)


def storage_queries_until_answered(dep, timeout: float = 60) -> int:
    """Repeat STORAGE_QUERIES until all answer without an error; how many answers were errors."""
    failed = 0

    def answered() -> bool:
        nonlocal failed
        for query in STORAGE_QUERIES:
            try:
                data = dep.graphql(query, timeout=20)
            except Exception:  # GraphQL errors or a dropped connection: not answered yet
                failed += 1
                return False
            if "PythonError" in str(data):
                failed += 1
                return False
        return True

    wait_for("webserver answering storage queries", answered, timeout, interval=0.5)
    return failed


def run_worker_pid(instance, run_id: str) -> int | None:
    """The run worker's pid, from its "Started process for run (pid: N)." engine event."""
    for record in instance.get_records_for_run(run_id).records:
        found = re.search(r"Started process for run \(pid: (\d+)\)", record.event_log_entry.message or "")
        if found:
            return int(found.group(1))
    return None


def test_a_killed_run_worker_is_marked_failed(dep, dep_instance):
    instance = dep_instance
    key = sorted(instance.get_dynamic_partitions("checkpoints"))[-1]
    run_id = dep.launch("checkpoint_evals", partition=key)
    # The worker logs its pid just before it reports the run STARTED.
    pid = wait_for("the run worker STARTED, and its pid", lambda: started(instance, run_id) and
                   run_worker_pid(instance, run_id), 120, interval=0.5)
    worker = psutil.Process(pid)
    assert worker.is_running()
    children = worker.children(recursive=True)  # the step processes of the multiprocess executor
    t = time.monotonic()
    os.kill(pid, signal.SIGKILL)
    run = wait_run(dep, instance, run_id, 60)
    timed("SIGKILLed worker -> FAILURE", t)
    assert run.status == dg.DagsterRunStatus.FAILURE
    # Failed by the code server that started the worker (it polls its run processes), saying how it died.
    assert "was terminated by signal 9 (SIGKILL)" in failure_text(instance, run_id), failure_text(instance, run_id)
    # The worker's step processes outlive it (nothing kills them with it): reported, then ended by the test.
    _, alive = psutil.wait_procs(children, timeout=10)
    print(f"\nstep processes of the killed worker still alive 10 s later: {len(alive)} of {len(children)}")
    for proc in alive:
        proc.kill()
    # The partition is redone by the next run.
    again = dep.launch("checkpoint_evals", partition=key)
    assert wait_run(dep, instance, again, 300).status == dg.DagsterRunStatus.SUCCESS, failure_text(instance, again)
