"""`gpt2train pipeline` as a user runs it: every run submitted to the instance's run queue and
launched in its own run-worker process (pipelines/executors.py: LaunchedRuns), no daemon running.

The library-level pipeline tests call `run_pipeline` in-process (the same stages and staleness
rules, a process fewer per run); tests/test_cli.py runs the whole chain through the console script,
launched. These run it against a SQLite DAGSTER_HOME whose dagster.yaml limits the queue, for the
faults only a launched run has: its worker SIGKILLed, the CLI itself SIGKILLed with runs in flight.
The data runs hold at the start of their tokenization (a failpoint: gpt2train/failpoints.py) until
the test has done so, however fast this machine tokenizes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest

from tests.faults import held
from tests.fixtures.chain import CHAIN_SETS, most_at_once, worker_pid

pytestmark = pytest.mark.e2e


def make_home(root: Path, max_concurrent_runs: int) -> Path:
    home = root / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text(f"telemetry:\n  enabled: false\nconcurrency:\n  runs:\n"
                                       f"    max_concurrent_runs: {max_concurrent_runs}\n")
    # Its storage created here, before the CLI and this test's polling open it at once: two processes that
    # create a fresh SQLite storage together can both stamp its schema version, and every later open then
    # fails ("Version table 'alembic_version' has more than one head present"; seen once under load).
    with dg.DagsterInstance.from_config(str(home)):
        pass
    return home


def pipeline_command(root: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "pipelines.cli", "pipeline", "--config", "tiny", "--set", f"data_dir={root / 'data'}",
            *[a for s in CHAIN_SETS for a in ("--set", s)], *extra]


def run_env(home: Path, **extra: str) -> dict:
    return {**os.environ, "DAGSTER_HOME": str(home), **extra}


def pipeline(root: Path, home: Path, *extra: str, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run(pipeline_command(root, *extra), env=run_env(home), capture_output=True, text=True,
                          timeout=timeout, cwd=Path(__file__).resolve().parent.parent)


def wait_for(predicate, timeout: float, what: str):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def started_data_run(home: Path):
    with dg.DagsterInstance.from_config(str(home)) as instance:
        for run in instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED], job_name="data")):
            pid = worker_pid(instance, run.run_id)
            if pid:
                return run.run_id, pid
    return None


def test_a_killed_run_worker_fails_its_run_and_stale_only_redoes_it(tmp_path):
    home, release = make_home(tmp_path, 2), tmp_path / "release"
    # Both data runs hold where they tokenize (or are on their way there) when one's worker is killed; the
    # release then lets the other finish.
    cli = subprocess.Popen(pipeline_command(tmp_path, "--through", "data"),
                           env=run_env(home, **held("token_shards.started", release)), text=True,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=Path(__file__).resolve().parent.parent)
    try:
        run_id, pid = wait_for(lambda: started_data_run(home), 300, "a data run's worker")
        os.kill(pid, signal.SIGKILL)
        release.touch()
        out, err = cli.communicate(timeout=300)
    finally:
        cli.kill()
    assert cli.returncode == 2, err[-2000:]
    # The code server that started the worker saw it die; the CLI says so, naming the run.
    assert f"run {run_id} (data, partition" in err and "terminated by signal 9 (SIGKILL)" in err, err[-2000:]
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.FAILURE  # not left STARTED
    redo = pipeline(tmp_path, home, "--through", "data", "--stale-only")
    assert redo.returncode == 0, redo.stderr[-3000:]
    assert "ran      token_shards" in redo.stdout


def test_runs_outlive_a_killed_cli_and_the_next_one_waits_for_them(tmp_path):
    """SIGKILL of `gpt2train pipeline` alone, with the queue limited to one run: the run it had started
    is the instance's and finishes in its worker; the one still queued is dequeued by the next
    pipeline, which waits for both instead of launching the same partitions again."""
    home, release = make_home(tmp_path, 1), tmp_path / "release"
    # The first data run holds (until the CLI is dead) where it tokenizes: still running when the CLI dies.
    cli = subprocess.Popen(pipeline_command(tmp_path, "--through", "data"), env=run_env(home, **held(
        "token_shards.started", release)), text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        cwd=Path(__file__).resolve().parent.parent)
    try:
        wait_for(lambda: started_data_run(home), 300, "a data run's worker")
        cli.send_signal(signal.SIGKILL)
        cli.wait(timeout=30)
    finally:
        cli.kill()
    release.touch()
    following = pipeline(tmp_path, home, "--through", "data", "--stale-only")
    assert following.returncode == 0, following.stderr[-3000:]
    assert "waiting for" in following.stderr
    with dg.DagsterInstance.from_config(str(home)) as instance:
        runs = instance.get_runs(filters=dg.RunsFilter(job_name="data"))
        assert all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)
        keys = [r.tags["dagster/partition"] for r in runs]
        assert sorted(keys) == sorted(set(keys)) and len(keys) == 2  # each corpus file once
        assert most_at_once(instance, [r.run_id for r in runs]) == 1  # the queue's limit held
        corpus = instance.fetch_materializations(dg.AssetKey("corpus"), limit=10).records
        assert len(corpus) == 2
