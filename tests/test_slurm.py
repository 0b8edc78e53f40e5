"""The `training_run` asset on a real Slurm (`launch.backend: slurm`): munged, slurmctld and slurmd on
127.0.0.1 (tests/slurm_cluster.py), the asset's sbatch job, `srun torchrun` agents, Pipes over files.

Two tasks stand in for two nodes: `launch.slurm.nodes=2` makes the job's two torchrun agents
(`--nnodes=2`, c10d, one process each, gloo), and `sbatch_args=[--nodes=1, --ntasks-per-node=2]` on
sbatch's command line puts both tasks on the one node this machine has.

- The materialization: Dagster records it with the trainer's metadata, the checkpoints are
  registered as partitions, the trainer's log lines and the job's states are in the Dagster run,
  and the weights are bitwise those of one local torchrun agent with two processes (the session's
  2-rank reference run, tests/fixtures/training.py).
- scancel mid-run: the run fails naming the job, CANCELLED and the checkpoint it resumes from; no
  trainer process is left; the next materialization resumes and ends bitwise equal again.
- A time limit: TIMEOUT, the same kind of message.
- A Dagster run worker interrupted while its job waits in the queue: the job is cancelled.
- A Dagster run worker SIGKILLed while its job trains: the job's watchdog cancels it once the worker's
  heartbeat is older than launch.slurm.heartbeat_timeout_s; no trainer process is left, and the next
  materialization resumes.
- A dead node (marked DOWN under the running job): NODE_FAIL, the same kind of message.
- Bad input, each one line before any work: a job pending past pending_timeout_s (cancelled), an
  unknown partition, sbatch not on PATH; the launch section's config errors; the job script's lines.

    pytest tests/test_slurm.py -m "e2e or not e2e"     # the cluster tests are marked e2e

A job the test must act on while it trains (scancel it, let its time limit or its watchdog's
timeout pass, fail its node) is held after a step by a failpoint (gpt2train/failpoints.py:
tests/faults.py `held`), whatever this machine's speed, and sits idle instead of burning the CPU.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import dagster as dg
import psutil
import pytest

from gpt2train.config import load_config
from gpt2train.errors import ConfigError, Gpt2TrainError
from gpt2train.training.runs import read_metrics
from gpt2train.training.slurm_job import (HEARTBEAT, JOB_OUTPUT, JOB_SCRIPT, SlurmError, check_slurm, job_script,
                                          job_state, watchdog_check_s)
from pipelines.definitions import TRAINING_JOB, build_definitions
from tests.faults import TWO_RANK_SETS, held, loss_log, weights
from tests.fixtures.chain import run_messages, step_failure_errors
from tests.fixtures.training import REFERENCE_STEPS
from tests.paths import REPO
from tests.slurm_cluster import SlurmCluster
from tests.webserver import free_port

# The session's 2-rank reference run (`two_rank_reference`): checkpoints at 2, 4, 6, 8 (the last 2 kept).
SETS, STEPS = TWO_RANK_SETS, REFERENCE_STEPS
TWO_TASKS_ON_ONE_NODE = "launch.slurm.sbatch_args=[--nodes=1, --ntasks-per-node=2]"
HEARTBEAT_TIMEOUT_S = 10  # the smallest launch.slurm.heartbeat_timeout_s allows
AFTER_CHECKPOINT_2 = "train.step_done@3"  # where a job is held: step 3 done, the step-2 checkpoint complete


def slurm_cfg(root: Path, shards: Path, *overrides: str):
    """The tiny run on the shards of `shards`, its run directory under `root`, on the test cluster."""
    return load_config("tiny", [f"data_dir={root / 'data'}", f"train.train_glob={shards}/shards/*_train_*.bin",
                                f"train.val_glob={shards}/shards/*_val_*.bin", *SETS, f"train.max_steps={STEPS}",
                                "launch.backend=slurm", "launch.slurm.nodes=2", TWO_TASKS_ON_ONE_NODE,
                                "launch.slurm.partition=debug", f"launch.slurm.rdzv_port={free_port()}",
                                "launch.slurm.pending_timeout_s=120", *overrides])


def materialize(cfg, instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    return build_definitions(cfg).resolve_job_def(TRAINING_JOB).execute_in_process(instance=instance,
                                                                               raise_on_error=False)


def squeue(slurm: SlurmCluster) -> list[str]:
    """Job ids Slurm still holds (queued, running or completing)."""
    out = subprocess.run(["squeue", "-h", "-o", "%i %T"], capture_output=True, text=True, env=slurm.env(), check=True)
    return out.stdout.split("\n")[:-1]


def trainer_processes(run: Path) -> list[psutil.Process]:
    """Running torchrun agents and ranks of the run (their command lines name its config)."""
    found = []
    for p in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error):
            if str(run / "config.yaml") in " ".join(p.info["cmdline"] or []) and p.status() != psutil.STATUS_ZOMBIE:
                found.append(p)
    return found


def start_worker(slurm: SlurmCluster, root: Path, shards: Path, log: Path, *overrides: str,
                 env: dict[str, str] | None = None) -> subprocess.Popen:
    """The training job's Dagster run in a worker process of its own (with `env` added to the cluster's),
    as a run launcher starts it; its output to `log` (a file: a pipe nobody reads would fill and block the
    worker)."""
    with open(log, "w") as out:
        return subprocess.Popen(
            [sys.executable, "-c", "import sys, dagster as dg; from pipelines.definitions import TRAINING_JOB, "
             "build_definitions; from tests.test_slurm import slurm_cfg; from pathlib import Path; "
             "cfg = slurm_cfg(Path(sys.argv[1]), Path(sys.argv[2]), *sys.argv[3:]); "
             "build_definitions(cfg).resolve_job_def(TRAINING_JOB)"
             ".execute_in_process(instance=dg.DagsterInstance.ephemeral())",
             str(root), str(shards), *overrides],
            cwd=REPO, env={**slurm.env(), **(env or {})}, stdout=out, stderr=subprocess.STDOUT)


@contextlib.contextmanager
def materializing(cfg, instance: dg.DagsterInstance):
    """`materialize` in a thread, as a run worker waits on its job: yields the run directory once it
    exists and the list that holds the result once the materialization ends (joined on exit)."""
    results: list = []
    worker = threading.Thread(target=lambda: results.append(materialize(cfg, instance)))
    worker.start()
    try:
        yield wait_until(lambda: (Path(cfg.data_dir) / "runs").is_dir() and the_run(cfg), 60, "the run dir"), results
    finally:
        worker.join(timeout=300)


def wait_until(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (value := check()):
            return value
        time.sleep(0.1)
    raise TimeoutError(f"{what}: not within {timeout} s")


def the_run(cfg) -> Path:
    (run,) = [p for p in (Path(cfg.data_dir) / "runs").iterdir() if p.is_dir()]
    return run


def assert_bitwise(run: Path, reference: Path) -> None:
    assert loss_log(run) == loss_log(reference)
    mine, theirs = weights(run, STEPS), weights(reference, STEPS)
    assert mine.keys() == theirs.keys() and all(mine[k].equal(theirs[k]) for k in mine)


@pytest.mark.e2e
def test_slurm_trains_two_nodes_bitwise_as_one_local_agent(slurm, tiny_shards, tmp_path, two_rank_reference):
    cfg = slurm_cfg(tmp_path, tiny_shards)
    with dg.DagsterInstance.ephemeral() as instance:
        started = time.monotonic()
        result = materialize(cfg, instance)
        took = time.monotonic() - started
        assert result.success, step_failure_errors(instance, result.run_id)
        run = the_run(cfg)
        (mat,) = result.asset_materializations_for_node("training_run")
        assert mat.metadata["steps"].value == STEPS and mat.metadata["run_tag"].value == run.name
        assert mat.metadata["final_val_loss"].value > 0
        # Every checkpoint still on disk (keep_last=2) was registered as a partition as it landed.
        on_disk = sorted(f"{run.name}@{p.name}" for p in (run / "checkpoints").iterdir() if (p / "DONE").exists())
        assert len(on_disk) == 2 and set(on_disk) <= set(instance.get_dynamic_partitions("checkpoints"))
        # Rank 0's log came through Pipes (the messages file) into the Dagster run, with the job's states.
        messages = run_messages(instance, result.run_id)
        assert any(m.startswith("model tiny: ") and "world=2" in m for m in messages), messages[-20:]
        assert any(m.startswith("Slurm job ") and m.endswith(": RUNNING") for m in messages), messages
    script = (run / JOB_SCRIPT).read_text()
    assert "srun --ntasks=2" in script and "--nnodes=2" in script and "--rdzv-backend=c10d" in script
    assert not list(run.glob(".launch-*"))  # the attempt's Pipes files and notes were removed
    assert squeue(slurm) == []
    assert_bitwise(run, two_rank_reference)
    print(f"\nSlurm, 2 tasks x 1 process: {STEPS} steps materialized in {took:.1f} s, bitwise equal to a local "
          f"agent with 2 processes")


@pytest.mark.e2e
def test_scancel_mid_run_fails_clearly_and_the_next_materialization_resumes(slurm, tiny_shards, tmp_path,
                                                                           two_rank_reference, monkeypatch):
    cfg = slurm_cfg(tmp_path, tiny_shards)
    with dg.DagsterInstance.ephemeral() as instance:
        with monkeypatch.context() as mp:  # the job (sbatch passes this environment on) holds after step 3
            for k, v in held(AFTER_CHECKPOINT_2, tmp_path / "release").items():
                mp.setenv(k, v)
            with materializing(cfg, instance) as (run, results):
                wait_until(lambda: (run / "checkpoints" / "step_00000002" / "DONE").exists(), 180, "checkpoint 2")
                (job_line,) = squeue(slurm)
                job = job_line.split()[0]
                subprocess.run(["scancel", job], env=slurm.env(), check=True)
        (result,) = results
        assert not result.success
        message = " ".join(step_failure_errors(instance, result.run_id))
        assert f"Slurm job {job} ended CANCELLED: it was cancelled" in message, message
        assert "launching this run again resumes from it" in message, message
        assert not (run / "checkpoints" / f"step_{STEPS:08d}").exists()  # it did stop mid-run
        assert squeue(slurm) == [] and trainer_processes(run) == []  # nothing trains on unwatched
        again = materialize(cfg, instance)
        assert again.success, step_failure_errors(instance, again.run_id)
    starts = [line for line in (run / "main.log").read_text().splitlines() if " model tiny: " in line]
    assert len(starts) == 2 and "(resumed from " in starts[1], starts
    assert_bitwise(run, two_rank_reference)


@pytest.mark.e2e
def test_a_time_limit_fails_clearly(slurm, tiny_shards, tmp_path, monkeypatch):
    # One minute: slurmctld checks limits every 30 s, so the job ends 60-90 s in; it is held after step 3
    # meanwhile (its step-2 checkpoint complete: the message says it resumes from there).
    cfg = slurm_cfg(tmp_path, tiny_shards, "launch.slurm.time_limit=1")
    for k, v in held(AFTER_CHECKPOINT_2, tmp_path / "release").items():
        monkeypatch.setenv(k, v)
    with dg.DagsterInstance.ephemeral() as instance:
        result = materialize(cfg, instance)
        assert not result.success
        message = " ".join(step_failure_errors(instance, result.run_id))
    assert "ended TIMEOUT: it reached its time limit (launch.slurm.time_limit" in message, message
    assert "resumes from it" in message, message
    assert squeue(slurm) == [] and trainer_processes(the_run(cfg)) == []


@pytest.mark.e2e
def test_a_job_pending_past_its_timeout_is_cancelled(slurm, tiny_shards, tmp_path):
    # --begin an hour from now: a valid job that Slurm holds in the queue (reason BeginTime).
    cfg = slurm_cfg(tmp_path, tiny_shards, "launch.slurm.pending_timeout_s=3",
                    "launch.slurm.sbatch_args=[--begin=now+1hour]")
    with dg.DagsterInstance.ephemeral() as instance:
        result = materialize(cfg, instance)
        message = " ".join(step_failure_errors(instance, result.run_id))
    assert not result.success
    assert "was still pending after 3 s (reason: BeginTime) and was cancelled" in message, message
    assert "launch.slurm.pending_timeout_s" in message
    assert squeue(slurm) == []


@pytest.mark.e2e
def test_an_interrupted_run_worker_cancels_its_job(slurm, tiny_shards, tmp_path):
    """The Dagster run in a worker process of its own, as a run launcher starts it; SIGTERM to it (what
    Dagster's run termination sends) while the job waits in the queue."""
    log = tmp_path / "worker.log"
    worker = start_worker(slurm, tmp_path, tiny_shards, log, "launch.slurm.sbatch_args=[--begin=now+1hour]")
    try:
        wait_until(lambda: squeue(slurm), 120, "the job in the queue")
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=60)
    finally:
        worker.kill()
    out = log.read_text()
    assert worker.returncode != 0
    assert "cancelled: the Dagster run stopped waiting for it" in out, out[-3000:]
    wait_until(lambda: squeue(slurm) == [], 30, "the job cancelled")


def test_an_interrupt_while_sbatch_runs_is_handled_once_the_job_id_is_known():
    """The test above sends SIGTERM once squeue shows the job, which can be before sbatch has returned its id:
    SlurmPipesClient.train holds interrupts over the submission (HeldInterrupts) and handles them in the `try` that
    cancels the job."""
    from pipelines.slurm_pipes import HeldInterrupts

    seen = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: seen.append("handled"))
    try:
        held = HeldInterrupts()
        signal.raise_signal(signal.SIGTERM)  # as if it came during sbatch
        seen.append("job id read")
        held.release()
        seen.append("after release")
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert seen == ["job id read", "handled", "after release"]
    assert signal.getsignal(signal.SIGTERM) is previous


@pytest.mark.e2e
def test_a_killed_run_worker_leaves_no_job_training(slurm, tiny_shards, tmp_path):
    """SIGKILL of the run worker while its job trains (the OOM killer, kill -9): the worker cannot scancel,
    so the job's watchdog does once the heartbeat is HEARTBEAT_TIMEOUT_S old; then a new run resumes."""
    overrides = (f"launch.slurm.heartbeat_timeout_s={HEARTBEAT_TIMEOUT_S}",)
    cfg = slurm_cfg(tmp_path, tiny_shards, *overrides)
    # The job holds after step 3 until it is cancelled: it outlives every timeout below on any machine.
    worker = start_worker(slurm, tmp_path, tiny_shards, tmp_path / "worker.log", *overrides,
                          env=held(AFTER_CHECKPOINT_2, tmp_path / "release"))
    try:
        wait_until(lambda: [line for line in squeue(slurm) if line.endswith(" RUNNING")], 180, "the job running")
        running = time.monotonic()
        run = the_run(cfg)
        wait_until(lambda: (run / "checkpoints" / "step_00000002" / "DONE").exists(), 300, "checkpoint 2")
        # Watched, the job outlives several timeouts: the watchdog leaves a job with a live worker alone.
        time.sleep(max(0.0, running + 2 * HEARTBEAT_TIMEOUT_S - time.monotonic()))
        (job_line,) = squeue(slurm)
        job, state = job_line.split()
        assert state == "RUNNING" and worker.poll() is None, (job_line, (tmp_path / "worker.log").read_text())
    finally:
        worker.kill()  # SIGKILL
        killed = time.monotonic()
        worker.wait(timeout=30)
    (heartbeat,) = run.glob(f".launch-*/{HEARTBEAT}")  # the dead worker's attempt: nobody removed it
    last_beat = heartbeat.stat().st_mtime
    ended = wait_until(lambda: (s := job_state(job)) and s.ended and s, 90, "the job cancelled")
    took, since_beat = time.monotonic() - killed, time.time() - last_beat
    assert ended.state == "CANCELLED", ended
    # The watchdog waited for the timeout after the last heartbeat (less the 1 s of `date +%s`), and not
    # much longer: one look at the heartbeat, then Slurm's KillWait (5 s, tests/slurm_cluster.py) until
    # scontrol reports the job ended rather than COMPLETING, and slack for a loaded machine.
    assert HEARTBEAT_TIMEOUT_S - 1 <= since_beat <= HEARTBEAT_TIMEOUT_S + watchdog_check_s(HEARTBEAT_TIMEOUT_S) + 20, \
        since_beat
    output = (run / JOB_OUTPUT.replace("%j", job)).read_text()
    assert (f"gpt2train watchdog: no heartbeat from the launcher in {run}/.launch-" in output
            and f"for {HEARTBEAT_TIMEOUT_S} s (launch.slurm.heartbeat_timeout_s): the launcher is gone; cancelling "
                f"Slurm job {job}" in output), output[-3000:]
    wait_until(lambda: trainer_processes(run) == [] and squeue(slurm) == [], 30, "the job's processes gone")
    gone = time.monotonic() - killed
    assert not (run / "checkpoints" / f"step_{STEPS:08d}").exists()  # it did stop mid-run
    with dg.DagsterInstance.ephemeral() as instance:
        again = materialize(cfg, instance)
        assert again.success, step_failure_errors(instance, again.run_id)
    starts = [line for line in (run / "main.log").read_text().splitlines() if " model tiny: " in line]
    assert len(starts) == 2 and "(resumed from " in starts[1], starts
    print(f"\nrun worker SIGKILLed: its Slurm job CANCELLED by the watchdog {took:.1f} s later, {since_beat:.1f} s "
          f"after the last heartbeat (heartbeat_timeout_s={HEARTBEAT_TIMEOUT_S}); no trainer process left "
          f"{gone:.1f} s after the kill")


@pytest.mark.e2e
def test_bad_input_unknown_partition(slurm, tiny_shards, tmp_path):
    cfg = slurm_cfg(tmp_path, tiny_shards, "launch.slurm.partition=gpu-h100")
    with pytest.raises(SlurmError, match=r"launch\.slurm\.partition='gpu-h100': Partition gpu-h100 not found; "
                                         r"use one of the cluster's partitions \(debug\)"):
        check_slurm(cfg)
    with dg.DagsterInstance.ephemeral() as instance:  # through the asset: before anything is written
        result = materialize(cfg, instance)
        assert not result.success and "Partition gpu-h100 not found" in " ".join(step_failure_errors(instance,
                                                                                                       result.run_id))
    assert not (Path(cfg.data_dir) / "runs").exists() and squeue(slurm) == []


@pytest.mark.e2e
def test_a_dead_node_fails_clearly(slurm, tiny_shards, tmp_path, monkeypatch):
    """The node marked DOWN under a running job (what slurmctld does when a node stops answering)."""
    cfg = slurm_cfg(tmp_path, tiny_shards)
    for k, v in held("train.step_done@1", tmp_path / "release").items():  # the job holds after its first step
        monkeypatch.setenv(k, v)
    with dg.DagsterInstance.ephemeral() as instance:
        with materializing(cfg, instance) as (run, results):
            wait_until(lambda: any("loss" in m for m in read_metrics(run)), 180, "the first step")
            subprocess.run(["scontrol", "update", "NodeName=localhost", "State=DOWN", "Reason=dead-node-test"],
                           env=slurm.env(), check=True)
        (result,) = results
        message = " ".join(step_failure_errors(instance, result.run_id))
    # ReturnToService=2: the node is back (idle) once its slurmd registers again.
    wait_until(lambda: slurm._node_idle(), 60, "the node back")
    assert not result.success
    assert "ended NODE_FAIL: one of its nodes failed after step" in message, message
    assert "launching this run again" in message, message
    assert squeue(slurm) == []
    wait_until(lambda: trainer_processes(run) == [], 30, "the dead node's trainer processes gone")


def test_sbatch_missing_is_one_line_before_any_work(tmp_path, monkeypatch):
    cfg = load_config("tiny", [f"data_dir={tmp_path}", "launch.backend=slurm"])
    monkeypatch.setenv("PATH", str(Path(sys.executable).parent))  # python, no Slurm
    with pytest.raises(Gpt2TrainError, match=r"^launch\.backend=slurm: `sbatch` is not on PATH; install Slurm's "
                                             r"client commands \(Debian: apt-get install slurm-client\) or set "
                                             r"launch\.backend=local$"):
        check_slurm(cfg)


@pytest.mark.parametrize("overrides, error", [
    (["launch.backend=k8s"], r"launch\.backend='k8s'; use local or slurm"),
    (["launch.slurm.nodes=0"], r"launch\.slurm\.nodes=0 is out of range; use a value in \[1, "),
    (["launch.slurm.time_limit=2h"], r"launch\.slurm\.time_limit='2h' is not a Slurm time"),
    (["launch.slurm.pending_timeout_s=0"], r"launch\.slurm\.pending_timeout_s=0.0 is out of range; use a value in \(0, "),
    (["launch.slurm.heartbeat_timeout_s=5"], r"launch\.slurm\.heartbeat_timeout_s=5.0 is out of range; use a value "
                                            r"in \[10, "),
    (["launch.backend=slurm", "launch.torchrun_args=[--nnodes=2, --max-restarts=1]"],
     r"launch\.torchrun_args \['--nnodes=2'\] clash with launch\.backend=slurm"),
    # The world the batch must divide counts Slurm's nodes: 512 tokens over 4 x 64 x 3 processes.
    (["launch.backend=slurm", "launch.slurm.nodes=3"], r"batch_size\*seq_len\*world=4\*64\*3"),
])
def test_slurm_config_errors(overrides, error):
    with pytest.raises(ConfigError, match=error):
        load_config("tiny", overrides)


def test_the_job_script_runs_one_c10d_agent_per_node(tmp_path):
    cfg = load_config("tiny", ["train.total_batch_tokens=8192", "launch.backend=slurm", "launch.slurm.nodes=4",
                               "launch.nproc_per_node=8",
                               "launch.slurm.gpus_per_node=8", "launch.slurm.partition=gpu",
                               "launch.slurm.time_limit=2-00:00:00", "launch.torchrun_args=[--max-restarts=3]"])
    script = job_script(cfg, tmp_path / "run", tmp_path / "run" / "config.yaml", tmp_path / "notes",
                        {"DAGSTER_PIPES_CONTEXT": "abc", "DAGSTER_PIPES_MESSAGES": "def"})
    for line in ("#SBATCH --nodes=4", "#SBATCH --ntasks-per-node=1", "#SBATCH --gpus-per-node=8",
                 "#SBATCH --partition=gpu", "#SBATCH --time=2-00:00:00", "#SBATCH --no-requeue",
                 "export DAGSTER_PIPES_CONTEXT=abc", "srun --ntasks=4 --kill-on-bad-exit=1 bash -c",
                 # The watchdog (default heartbeat_timeout_s: 300 s, looked at every 30 s), before srun.
                 f"heartbeat={tmp_path}/notes/heartbeat", '  while sleep 30 & nap=$!; wait "$nap"; do',
                 "    if [ $(( $(date +%s) - last_beat )) -ge 300 ]; then", '      scancel "$SLURM_JOB_ID" && break'):
        assert line in script, script
    assert script.index("scancel") < script.index("\nsrun ")
    for arg in ("--nnodes=4", "--nproc_per_node=8", "--rdzv-backend=c10d", '--rdzv-endpoint="$RDZV_HOST:29500"',
                "--max-restarts=3 -m pipelines.train_pipes"):
        assert arg in script, script
