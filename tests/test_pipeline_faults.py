"""Faults in the real pipeline: a trainer killed mid-run, an eval that fails, two pipelines at once.

Real components as in tests/test_pipeline_chain.py (a SQLite instance in a temp DAGSTER_HOME,
torchrun through Pipes, the transformers export, the Eleuther harness offline). What survived a
fault is judged from Dagster's own records (materialization storage ids, run ids, data
versions, the runs' event logs) and from the files' bytes and mtimes, not from our summaries.
A pipeline the test must act on while it trains is held after a step by a failpoint
(gpt2train/failpoints.py, tests/faults.py `held`), not hoped to be slow enough.

    pytest tests/test_pipeline_faults.py -m e2e -k killed       # the mid-chain fault and its reruns
    pytest tests/test_pipeline_faults.py -m e2e -k two_pipelines
    pytest tests/test_pipeline_faults.py -k describe              # the failure messages (fast)
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import dagster as dg
import pytest

from gpt2train.data.shards import validate_shard
from gpt2train.errors import Gpt2TrainError
from gpt2train.failpoints import ENV as FAILPOINTS_ENV
from gpt2train.failpoints import InjectedFault
from gpt2train.fileio import read_json, sha256_file
from gpt2train.layout import shard_partition_manifest as manifest_path
from gpt2train.lineage.walk import walk_lineage
from gpt2train.training.runs import read_metrics
from pipelines.runner import DATA_ASSETS, EVAL_ASSETS, PipelineFailed, run_pipeline
from tests.faults import held
from tests.fixtures.chain import CHAIN_SETS, chain_cfg, run_messages, step_failure_errors


@pytest.mark.parametrize("notes, expected", [
    ({"trainer_error.txt": "HellaSwag file /x.jsonl not found; ...\n"},
     "training run tiny-abc failed: HellaSwag file /x.jsonl not found; ..."),
    ({"launch_failure.json": {"rank": 1, "pid": 77, "exitcode": -9, "signal": "SIGKILL"}},
     "training run tiny-abc failed: trainer rank 1 (pid 77) was killed by SIGKILL (signal 9: e.g. the OOM killer, "
     "`kill -9`, a preempted node) after step 3. Log: {run}/main.log. The last complete checkpoint is "
     "{run}/checkpoints/step_00000002; launching this run again resumes from it."),
    ({"launch_failure.json": {"rank": 0, "pid": 78, "exitcode": 1, "signal": None}},
     "training run tiny-abc failed: trainer rank 0 (pid 78) exited with code 1 without a gpt2train error (a crash: "
     "its traceback is in the run's output above) after step 3."),
    ({}, "training run tiny-abc failed: torchrun was killed by SIGTERM after step 3."),
], ids=["trainer error", "rank killed", "rank crashed", "torchrun killed"])
def test_describe_training_failure(tmp_path, notes, expected):
    """What the training_run asset says for each way the trainer can end (the e2e test below runs
    the SIGKILL case for real)."""
    from gpt2train.training.failure import describe_training_failure

    run, attempt = tmp_path / "runs" / "tiny-abc", tmp_path / "runs" / "tiny-abc" / ".launch-1"
    attempt.mkdir(parents=True)
    (run / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in [
        {"step": 0, "val_loss": 11.0}, {"step": 1, "loss": 10.9}, {"step": 2, "loss": 10.8}, {"step": 3, "loss": 10.7}]))
    for step in ("step_00000002", "step_00000004"):  # 4 is incomplete: no DONE
        (run / "checkpoints" / step).mkdir(parents=True)
    (run / "checkpoints" / "step_00000002" / "DONE").write_text("complete\n")
    for name, content in notes.items():
        (attempt / name).write_text(content if isinstance(content, str) else json.dumps(content))
    message = describe_training_failure(run, attempt, "External execution process failed with code -15")
    assert message.startswith(expected.format(run=run)), message


def materializations(instance: dg.DagsterInstance, asset: str) -> dict[str | None, list[tuple[int, str, str]]]:
    """{partition: [(storage id, Dagster run id, data version), ...] newest first}, from the event log."""
    found: dict[str | None, list] = {}
    for r in instance.fetch_materializations(dg.AssetKey(asset), limit=1000).records:
        found.setdefault(r.partition_key, []).append(
            (r.storage_id, r.run_id, r.asset_materialization.tags.get("dagster/data_version")))
    return found


def file_states(*roots: Path) -> dict[str, tuple[str, int]]:
    """{path: (sha256, mtime_ns)} of every file under `roots`: a rewrite with equal bytes shows too."""
    return {str(p): (sha256_file(p), p.stat().st_mtime_ns)
            for root in roots for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.e2e
def test_a_trainer_killed_mid_run_reruns_only_from_the_failure(tmp_path, monkeypatch):
    """Run 1: the whole chain, with the trainer SIGKILLed after its 3rd step (checkpoint 2 done,
    checkpoint 4 not). Run 2 (stale only): training resumes from checkpoint 2; both checkpoints are
    exported; one eval fails. Run 3 (stale only): only that eval and the summary. Nothing upstream
    of a failure is materialized again or rewritten."""
    (tmp_path / "home").mkdir()
    # torchrun and the trainer inherit it; the trainer parses it when it imports gpt2train.failpoints.
    monkeypatch.setenv(FAILPOINTS_ENV, "train.step_done@3=kill")
    cfg = chain_cfg(tmp_path)
    data = tmp_path / "data"
    with dg.DagsterInstance.local_temp(str(tmp_path / "home")) as instance:
        # ---- run 1: killed mid-training -------------------------------------------------------
        with pytest.raises(Gpt2TrainError) as err:
            run_pipeline(cfg, instance)
        (run,) = [p for p in (data / "runs").iterdir() if p.is_dir()]  # beside it: its .lock file
        ckpt2, ckpt4 = run / "checkpoints" / "step_00000002", run / "checkpoints" / "step_00000004"
        # The message says what happened, how far it got, and where a rerun resumes.
        message = str(err.value)
        assert "killed by SIGKILL" in message and "after step 3" in message, message
        assert f"The last complete checkpoint is {ckpt2}" in message and "resumes from it" in message, message
        assert str(run / "main.log") in message
        assert (ckpt2 / "DONE").exists() and not ckpt4.exists()
        assert not list(run.glob(".launch-*"))  # the attempt's failure notes were read and removed
        # Dagster recorded the failure: the training run failed, after both data partitions succeeded.
        failed = instance.get_run_records(dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE]))
        assert [r.dagster_run.job_name for r in failed] == ["training"]
        assert any("killed by SIGKILL" in m for m in step_failure_errors(instance, failed[0].dagster_run.run_id))
        assert materializations(instance, "training_run") == {}
        data_before = {a: materializations(instance, a) for a in DATA_ASSETS}
        assert all(len(data_before[a]) == 2 and all(len(v) == 1 for v in data_before[a].values())
                   for a in DATA_ASSETS)
        # The trainer reported checkpoint 2 over Pipes and the asset registered it; Dagster recorded it once.
        key2, key4 = f"{run.name}@step_00000002", f"{run.name}@step_00000004"
        assert instance.get_dynamic_partitions("checkpoints") == [key2]
        recorded = instance.fetch_materializations(dg.AssetKey("checkpoint"), limit=100).records
        assert [r.partition_key for r in recorded] == [key2]
        files_before = file_states(data / "corpus", data / "shards", ckpt2)
        metrics_before = read_metrics(run)
        assert max(m["step"] for m in metrics_before if "loss" in m) == 3  # step 3 ran, was never saved

        # ---- run 2: stale only; training resumes; the eval of checkpoint 4 fails ---------------
        monkeypatch.delenv(FAILPOINTS_ENV)
        from assets import evals as eval_assets  # the eval_report asset calls it by this module's name

        real_evaluate = eval_assets.evaluate_export

        def evaluate_failing_on_4(export, out, evals_cfg, model_label, **kwargs):
            if model_label == key4:
                raise InjectedFault(f"injected eval failure for {key4}")
            return real_evaluate(export, out, evals_cfg, model_label=model_label, **kwargs)

        monkeypatch.setattr(eval_assets, "evaluate_export", evaluate_failing_on_4)
        with pytest.raises(PipelineFailed, match=f"injected eval failure for {key4}") as err:
            run_pipeline(cfg, instance, stale_only=True)
        summary = err.value.summary
        assert sorted(summary.skipped) == sorted((a, k) for a in DATA_ASSETS for k in data_before[a])
        assert sorted(summary.ran) == sorted([("training_run", None), ("hf_export", key2), ("hf_export", key4),
                                              ("eval_report", key2), ("eval_summary", None)])
        assert [(a, k) for a, k, _ in summary.failed] == [("eval_report", key4)]
        # Upstream of the kill: not one new materialization, data version or byte.
        assert {a: materializations(instance, a) for a in DATA_ASSETS} == data_before
        assert file_states(data / "corpus", data / "shards", ckpt2) == files_before
        assert [o.partition_key for o in instance.fetch_observations(dg.AssetKey("checkpoint"), limit=100).records] \
            == [key4, key2]  # checkpoint 2 not observed again: its content hash did not change
        # The training run resumed from checkpoint 2 (its Dagster event log says so) and did 3..4 only.
        (train_mat,) = materializations(instance, "training_run")[None]
        assert train_mat[1] in summary.run_ids
        log = run_messages(instance, train_mat[1])
        assert any(f"steps 2..4 (resumed from {ckpt2})" in m for m in log), log
        assert not any(m.lstrip().startswith(("step    1/4", "step    2/4")) for m in log)
        assert any(m.lstrip().startswith("step    4/4") for m in log)
        mat = instance.fetch_materializations(dg.AssetKey("training_run"), limit=1).records[0].asset_materialization
        assert mat.metadata["steps"].value == 4
        # The metrics of steps 1-2 are the first run's; step 3 was redone once, not appended twice.
        metrics_after = read_metrics(run)
        train_steps = [m["step"] for m in metrics_after if "loss" in m]
        assert train_steps == [1, 2, 3, 4]
        assert [m for m in metrics_after if m["step"] <= 2 and "loss" in m] == \
            [m for m in metrics_before if m["step"] <= 2 and "loss" in m]
        assert (ckpt4 / "DONE").exists()
        evals_before = {a: materializations(instance, a) for a in EVAL_ASSETS}
        files_before = file_states(data / "corpus", data / "shards", run / "checkpoints", data / "exports",
                                   data / "reports" / key2)
        assert not (data / "reports" / key4 / "lineage.json").exists()  # the failed eval wrote no report

        # ---- run 3: stale only, no faults: only the failed eval and the summary ---------------
        monkeypatch.setattr(eval_assets, "evaluate_export", real_evaluate)
        summary = run_pipeline(cfg, instance, stale_only=True)
        assert sorted(summary.ran) == [("eval_report", key4), ("eval_summary", None)]
        assert ("training_run", None) in summary.skipped and ("hf_export", key4) in summary.skipped
        assert materializations(instance, "hf_export") == evals_before["hf_export"]
        reports = materializations(instance, "eval_report")
        assert reports[key2] == evals_before["eval_report"][key2]
        assert len(reports[key4]) == 1 and reports[key4][0][1] in summary.run_ids
        assert materializations(instance, "training_run")[None] == [train_mat]
        assert file_states(data / "corpus", data / "shards", run / "checkpoints", data / "exports",
                           data / "reports" / key2) == files_before
        assert (data / "reports" / key4 / "report.md").exists()
        assert summary.reports == [str(data / "reports" / key2), str(data / "reports" / key4)]


# ---------------------------------------------------------------------------------------------
# Two `gpt2train pipeline` commands on one data dir.


def gpt2train_pipeline(data: Path, home: Path, log: Path, sets: tuple[str, ...] = (),
                       flags: tuple[str, ...] = (), env: dict[str, str] | None = None) -> subprocess.Popen:
    """`gpt2train pipeline`, the whole chain on the chain test's small config (plus `sets`), as a
    user runs it (with `env` added to the environment: the failpoints its trainer fires)."""
    exe = shutil.which("gpt2train") or pytest.fail("the gpt2train console script is not installed (pip install -e .)")
    sets = [f"data_dir={data}", *CHAIN_SETS, *sets]
    with open(log, "w") as out:
        return subprocess.Popen([exe, "-q", "pipeline", "--config", "tiny",
                                 *[a for s in sets for a in ("--set", s)], *flags],
                                stdout=out, stderr=subprocess.STDOUT, text=True,
                                env={**os.environ, "DAGSTER_HOME": str(home), **(env or {})})


@pytest.mark.e2e
def test_two_pipelines_on_one_data_dir_one_is_refused(tmp_path):
    """The first `gpt2train pipeline` takes the data dir; a second one on the same data dir is
    refused at once, whether it shares the first one's DAGSTER_HOME (the same checkout, the default
    ./dagster_home) or has its own (the lock is on the data dir, not in Dagster). The first one's
    artifacts are complete and valid. The first one's trainer holds after its first step until
    both are refused, so it surely still holds the lock when they get there, on any machine."""
    data, home, release = tmp_path / "data", tmp_path / "home", tmp_path / "release"
    first = gpt2train_pipeline(data, home, tmp_path / "first.log", env=held("train.step_done@1", release))
    try:
        # The second ones start only once the first holds the lock (its pid is in the lock file).
        lock = data / ".pipeline.lock"  # pipelines.runner.pipeline_lock_path
        deadline = time.monotonic() + 120
        while not (lock.exists() and f'"pid": {first.pid}' in lock.read_text()):
            assert first.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the first pipeline never took the data dir's lock"
            time.sleep(0.2)
        started = time.monotonic()
        seconds = [gpt2train_pipeline(data, home, tmp_path / "shared_home.log"),
                   gpt2train_pipeline(data, tmp_path / "other_home", tmp_path / "other_home.log")]
        codes = [p.wait(timeout=120) for p in seconds]
        refused_after = time.monotonic() - started
        assert first.poll() is None, "the first pipeline ended before the second ones were refused"
        for code, name in zip(codes, ("shared_home", "other_home")):
            out = (tmp_path / f"{name}.log").read_text()
            assert code == 2, out[-3000:]
            assert f"gpt2train pipeline: error: pipeline data dir {data} is being written by another process " \
                   f"(pid {first.pid} on" in out, out[-3000:]
            assert "Traceback" not in out
        release.touch()
        assert first.wait(timeout=600) == 0, (tmp_path / "first.log").read_text()[-3000:]
        held_for = time.monotonic() - started
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    print(f"second pipelines refused {refused_after:.1f} s after they started (startup included); "
          f"the first held the data dir {held_for:.1f} s more from then")
    # Only the first one's runs are in the shared instance, all successful.
    with dg.DagsterInstance.local_temp(str(home)) as instance:
        runs = instance.get_run_records()
        assert sorted(r.dagster_run.job_name for r in runs) == sorted(
            ["data", "data", "training", "checkpoint_evals", "checkpoint_evals", "refresh_eval_summary"])
        assert all(r.dagster_run.status == dg.DagsterRunStatus.SUCCESS for r in runs)
    # Every shard valid against its manifest; the training run complete.
    manifests = sorted((data / "shards" / "partitions").glob("*.json"))
    assert len(manifests) == 2
    for path in manifests:
        manifest = read_json(path, "partition manifest")
        assert manifest_path(data / "shards", manifest["key"]) == path
        for shard in manifest["shards"]:
            checks = validate_shard(data / "shards" / shard["file"], expected_sha256=shard["sha256"])
            assert all(c.passed for c in checks), checks
    (run,) = [p for p in (data / "runs").iterdir() if p.is_dir()]
    assert all((run / "checkpoints" / s / "DONE").exists() for s in ("step_00000002", "step_00000004"))
    assert [m["step"] for m in read_metrics(run) if "loss" in m] == [1, 2, 3, 4]
    # Each report walks back to the corpus files with every hash matching.
    for step in ("step_00000002", "step_00000004"):
        nodes = walk_lineage(data / "reports" / f"{run.name}@{step}")
        assert {"eval_report", "hf_export", "checkpoint", "token_shard", "corpus_file"} <= {n.kind for n in nodes}
        assert all(n.ok for n in nodes), [n for n in nodes if not n.ok]


# ---------------------------------------------------------------------------------------------
# A killed `gpt2train pipeline`: nothing left running, nothing left STARTED.


def test_runs_of_a_dead_pipeline_process_are_marked_failed(tmp_path):
    """Unfinished runs whose process is gone, also when a new process has taken its pid (its start
    time differs); not this live process's, not another host's, not a finished one."""
    from pipelines.dead_runs import RUN_PROCESS_TAG, fail_runs_of_dead_processes, process_tag

    dead = subprocess.Popen(["sleep", "0"])
    dead_tag = process_tag(dead.pid)
    dead.wait()
    host, pid, start = dead_tag.rsplit(":", 2)
    cases = {"dead": (dead_tag, dg.DagsterRunStatus.STARTED),
             "dead, not started": (dead_tag, dg.DagsterRunStatus.STARTING),
             "alive": (process_tag(), dg.DagsterRunStatus.STARTED),
             "pid reused": (f"{host}:{os.getpid()}:{start}", dg.DagsterRunStatus.STARTED),
             "other host": (f"elsewhere:{pid}:{start}", dg.DagsterRunStatus.STARTED),
             "finished": (dead_tag, dg.DagsterRunStatus.SUCCESS),
             "untagged": (None, dg.DagsterRunStatus.STARTED)}
    with dg.DagsterInstance.ephemeral() as instance:
        ids = {}
        for name, (tag, status) in cases.items():
            run = instance.add_run(dg.DagsterRun(job_name="data", status=status,
                                                 tags={RUN_PROCESS_TAG: tag} if tag else {}))
            ids[name] = run.run_id
        gone = ["dead", "dead, not started", "pid reused"]
        assert sorted(fail_runs_of_dead_processes(instance)) == sorted(ids[n] for n in gone)
        statuses = {name: instance.get_run_by_id(i).status for name, i in ids.items()}
        assert statuses == {n: dg.DagsterRunStatus.FAILURE if n in gone else s for n, (_, s) in cases.items()}
        messages = run_messages(instance, ids["dead"])
        assert any(f"(pid {pid} on {host}) ended without finishing it" in m for m in messages), messages
        assert fail_runs_of_dead_processes(instance) == []  # once


def test_launched_runs_whose_worker_is_gone_are_marked_failed(tmp_path):
    """A launched run (tagged with the `gpt2train pipeline` that submitted it) whose run worker is
    gone, and no code server left to notice: marked failed by the next pipeline on this host; a
    live worker's run, another host's and one not yet started are left alone."""
    from pipelines.dead_runs import SUBMITTED_BY_TAG, fail_runs_of_dead_processes, process_tag

    dead = subprocess.Popen(["sleep", "0"])
    dead.wait()
    cases = {"worker gone": (process_tag(), dead.pid, dg.DagsterRunStatus.STARTED),
             "worker alive": (process_tag(), os.getpid(), dg.DagsterRunStatus.STARTED),
             "other host": ("elsewhere:1:1", dead.pid, dg.DagsterRunStatus.STARTED),
             "still starting": (process_tag(), None, dg.DagsterRunStatus.STARTING)}
    with dg.DagsterInstance.local_temp(str(tmp_path)) as instance:
        ids = {}
        for name, (tag, worker, status) in cases.items():
            run = instance.add_run(dg.DagsterRun(job_name="data", status=status, tags={SUBMITTED_BY_TAG: tag}))
            if worker is not None:  # what DefaultRunLauncher's code server logs when it starts the worker
                instance.report_engine_event(f"Started process for run (pid: {worker}).", run)
            ids[name] = run.run_id
        assert fail_runs_of_dead_processes(instance) == [ids["worker gone"]]
        messages = run_messages(instance, ids["worker gone"])
        assert any(f"the run worker (pid {dead.pid} on" in m for m in messages), messages
        assert instance.get_run_by_id(ids["worker alive"]).status == dg.DagsterRunStatus.STARTED


@pytest.mark.e2e
def test_a_killed_pipeline_leaves_nothing_running_and_its_run_is_redone(tmp_path):
    """SIGKILL of `gpt2train pipeline --in-process` while it trains (held after step 3, the step-2
    checkpoint complete): torchrun and its ranks stop within a bounded time (they die with their
    parents), nothing holds the run directory, and the next `--stale-only` marks the killed run failed
    and resumes training from its last complete checkpoint. (Launched runs outlive the CLI by design:
    tests/test_pipeline_launched.py.)"""
    import psutil

    data, home = tmp_path / "data", tmp_path / "home"
    sets = ("train.max_steps=6", "train.checkpoint_every=2")
    first = gpt2train_pipeline(data, home, tmp_path / "first.log", sets, ("--in-process",),
                               env=held("train.step_done@3", tmp_path / "release"))
    try:
        deadline = time.monotonic() + 240
        while not any(r.get("step", 0) >= 3 and "loss" in r for run in (data / "runs").glob("*/")
                      for r in read_metrics(run)):
            assert first.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "training never reached step 3"
            time.sleep(0.1)
        trainers = psutil.Process(first.pid).children(recursive=True)
        assert any("pipelines.torchrun_launcher" in " ".join(p.cmdline()) for p in trainers)
        killed_at = time.monotonic()
        first.kill()
        first.wait()
        gone, alive = psutil.wait_procs(trainers, timeout=60)
        stop_s = time.monotonic() - killed_at
        assert not alive, [(p.pid, p.cmdline()) for p in alive]
    finally:
        if first.poll() is None:
            first.kill()
    (run,) = [p for p in (data / "runs").iterdir() if p.is_dir()]
    with dg.DagsterInstance.local_temp(str(home)) as instance:
        (training,) = instance.get_runs(dg.RunsFilter(job_name="training"))
        assert training.status == dg.DagsterRunStatus.STARTED  # nothing else could have noticed
    # What the killed attempt left, Pipes' files included (not in a /tmp folder nobody would remove).
    left = run / f".launch-{training.run_id}"
    assert (left / "pipes_messages.jsonl").is_file(), sorted(p.name for p in left.iterdir())

    second = gpt2train_pipeline(data, home, tmp_path / "second.log", sets,
                                ("--in-process", "--stale-only", "--through", "training"))
    try:
        assert second.wait(timeout=300) == 0, (tmp_path / "second.log").read_text()[-3000:]
    finally:
        if second.poll() is None:  # timed out: its trainer dies with it (pdeathsig)
            second.kill()
            second.wait()
    with dg.DagsterInstance.local_temp(str(home)) as instance:
        killed = instance.get_run_by_id(training.run_id)
        assert killed.status == dg.DagsterRunStatus.FAILURE
        assert any("ended without finishing it" in m for m in run_messages(instance, killed.run_id))
        assert [r.status for r in instance.get_runs(dg.RunsFilter(job_name="training"))][0] == \
            dg.DagsterRunStatus.SUCCESS  # the newest: the redo
    assert not list(run.glob(".launch-*")), "the killed attempt's notes were not removed by the next one"
    log = (run / "main.log").read_text()
    assert "(resumed from " in log and max(r["step"] for r in read_metrics(run) if "loss" in r) == 6
    print(f"\nSIGKILL of `gpt2train pipeline` at training step >= 3: its trainer processes gone after {stop_s:.2f} s")
