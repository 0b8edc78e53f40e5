"""SIGTERM (and SIGINT) stop training with one line that says where the run resumes from.

- `python -m gpt2train.train` (one process) sent SIGTERM mid-run exits 2 with `stopped by SIGTERM after
  step N; the last complete checkpoint is ... (step K)`, or `starts from scratch` before the first
  checkpoint; every checkpoint it left is complete and the same command resumes from step K
  (gpt2train/training/failure.py stop_on_signals).
- `gpt2train pipeline` sent SIGTERM while training_run runs: the Dagster run of training_run fails
  saying the same (assets/training.py), not only `DagsterExecutionInterruptedError`.

    pytest tests/test_fault_sigterm.py -m "e2e or not e2e"
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import dagster as dg
import pytest

from gpt2train.training.checkpoint import latest_checkpoint
from gpt2train.training.failure import describe_interrupted_training
from tests.faults import assert_visible_checkpoints_complete, held, start_training, wait_for_text
from tests.paths import EDU_MINI, REPO

SETS = ("train.max_steps=400", "train.val_every=0", "train.hellaswag_every=0", "train.sample_every=0",
        "train.warmup_steps=2")


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, f"the trainer ended (rc {proc.returncode}) before {path} appeared"
        assert time.monotonic() < deadline, f"{path} did not appear within {timeout} s"
        time.sleep(0.02)


def _error_line(log: Path) -> str:
    lines = [line for line in log.read_text().splitlines() if line.startswith("gpt2train train: error:")]
    assert len(lines) == 1, log.read_text()[-3000:]
    return lines[0]


@pytest.mark.e2e
def test_sigterm_names_the_checkpoint_the_run_resumes_from(tiny_shards, tmp_path):
    out, log = tmp_path / "run", tmp_path / "launch.log"
    # Held after step 5 (the step-4 checkpoint complete) until the signal, on any machine.
    proc = start_training(tiny_shards, out, (*SETS, "train.checkpoint_every=2"), log, "train.step_done@5=hold")
    try:
        _wait_for(out / "checkpoints" / "step_00000004" / "DONE", proc)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 2, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    last = latest_checkpoint(out / "checkpoints")
    step = int(last.name.split("_")[1])
    assert step >= 4
    message = _error_line(log)
    assert re.fullmatch(rf"gpt2train train: error: training in {re.escape(str(out))} stopped by SIGTERM after step "
                        rf"\d+; the last complete checkpoint is {re.escape(str(last))} \(step {step}\): running it "
                        rf"again resumes from it", message), message
    assert "Traceback" not in log.read_text()
    assert_visible_checkpoints_complete(out)
    # The same command resumes from there (then it is stopped again).
    proc = start_training(tiny_shards, out, (*SETS, "train.checkpoint_every=2"), tmp_path / "again.log")
    try:
        assert wait_for_text(tmp_path / "again.log", f"(resumed from {last})", proc, timeout=180)
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.e2e
def test_sigterm_before_the_first_checkpoint_says_from_scratch(tiny_shards, tmp_path):
    out, log = tmp_path / "run", tmp_path / "launch.log"
    # A checkpoint only at the end; held after step 2 until the signal.
    proc = start_training(tiny_shards, out, (*SETS, "train.checkpoint_every=0"), log, "train.step_done@2=hold")
    try:
        assert wait_for_text(log, "step    2/400", proc, timeout=180)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 2, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    message = _error_line(log)
    assert re.search(r"stopped by SIGTERM after step \d+; no checkpoint was complete yet, so running it again "
                     r"starts from scratch \(step 0\)", message), message


def test_describe_interrupted_training(tmp_path):
    """What the training_run asset says when its Dagster run is interrupted (the e2e test below does it
    for real), with a complete checkpoint and without one."""
    run = tmp_path / "runs" / "tiny-abc"
    (run / "checkpoints" / "step_00000004").mkdir(parents=True)  # incomplete: no DONE
    (run / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "loss": 10.0}) + "\n" for s in (1, 2, 3)))
    assert describe_interrupted_training(run) == (
        f"training run tiny-abc was stopped: it was interrupted (SIGTERM or SIGINT to the process that launched "
        f"it) after step 3. Log: {run / 'main.log'}. No checkpoint was complete, so launching this run again "
        f"starts from scratch (step 0).")
    (run / "checkpoints" / "step_00000002").mkdir()
    (run / "checkpoints" / "step_00000002" / "DONE").write_text("complete\n")
    assert describe_interrupted_training(run).endswith(
        f"after step 3. Log: {run / 'main.log'}. The last complete checkpoint is "
        f"{run / 'checkpoints' / 'step_00000002'} "
        f"(step 2); launching this run again resumes from it.")


@pytest.mark.e2e
def test_sigterm_to_the_pipeline_says_where_training_resumes(tmp_path):
    """`gpt2train pipeline` SIGTERMed once training has a complete checkpoint: the training_run run's
    failure, as Dagster recorded it, names the checkpoint and step it resumes from."""
    home, data = tmp_path / "home", tmp_path / "data"
    home.mkdir()
    exe = shutil.which("gpt2train") or pytest.fail("the gpt2train console script is not installed")
    # The trainer holds after step 3 (the step-2 checkpoint complete) until the signal.
    env = {**os.environ, "DAGSTER_HOME": str(home), "OMP_NUM_THREADS": "2",
           **held("train.step_done@3", tmp_path / "release")}
    args = [exe, "pipeline", "--config", "tiny", "--through", "training", f"--set=data_dir={data}",
            f"--set=corpus.source={EDU_MINI}", "--set=train.checkpoint_every=2", *(f"--set={s}" for s in SETS)]
    with open(tmp_path / "pipeline.log", "w") as f:
        proc = subprocess.Popen(args, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    try:
        deadline = time.monotonic() + 400
        while not list(data.glob("runs/*/checkpoints/step_00000002/DONE")):
            assert proc.poll() is None, (tmp_path / "pipeline.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "no checkpoint within 400 s"
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0
    (run,) = [p for p in (data / "runs").iterdir() if p.is_dir()]
    last = latest_checkpoint(run / "checkpoints")
    step = int(last.name.split("_")[1])
    with dg.DagsterInstance.from_config(str(home)) as instance:
        (training,) = [r for r in instance.get_runs() if r.job_name == "training"]
        failures = [e.dagster_event.step_failure_data.error.message for e in instance.all_logs(training.run_id)
                    if e.dagster_event is not None and e.dagster_event.is_step_failure]
    assert len(failures) == 1, failures
    assert training.status == dg.DagsterRunStatus.CANCELED  # still an interrupt to Dagster, not a crash
    assert f"training run {run.name} was stopped: it was interrupted" in failures[0], failures[0]
    assert f"The last complete checkpoint is {last} (step {step}); launching this run again" in failures[0]
    assert not [p for p in run.glob(".launch-*")]  # the attempt's notes are removed
