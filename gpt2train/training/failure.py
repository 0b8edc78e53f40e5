"""Why a launched trainer failed, in one message: what `training_run` raises and a launcher prints.

A launch leaves notes in a folder of its own (the `training_run` asset's `<run>/.launch-<Dagster run
id>/`): the trainer's own error (TRAINER_ERROR, written by rank 0: pipelines/train_pipes.py) or how the
first failed rank ended (LAUNCH_FAILURE, written by pipelines/torchrun_launcher.py). A rank killed by
a signal reports nothing itself, so the message also says how far the run got and which checkpoint a
rerun resumes from.
"""

from __future__ import annotations

import json
import re
import signal
from pathlib import Path

from gpt2train.layout import MAIN_LOG, checkpoints_dir
from gpt2train.training.checkpoint import latest_checkpoint
from gpt2train.training.runs import read_metrics

TRAINER_ERROR = "trainer_error.txt"  # the trainer's own Gpt2TrainError
LAUNCH_FAILURE = "launch_failure.json"  # how the first failed rank ended


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def describe_training_failure(run: Path, notes: Path, launcher_error: str) -> str:
    """Why the trainer in `run` failed, from the attempt's `notes`, for the run's failure message.
    The trainer's own error says what to fix; a rank killed by a signal or crashed reports nothing
    itself, so the message says how it ended, how far it got and which checkpoint a rerun resumes from."""
    trainer_error = notes / TRAINER_ERROR
    if trainer_error.exists():
        return f"training run {run.name} failed: {trainer_error.read_text().strip()}"
    note = json.loads((notes / LAUNCH_FAILURE).read_text()) if (notes / LAUNCH_FAILURE).exists() else None
    if note and note.get("signal"):
        how = (f"trainer rank {note['rank']} (pid {note['pid']}) was killed by {note['signal']} "
               f"(signal {-note['exitcode']}: e.g. the OOM killer, `kill -9`, a preempted node)")
    elif note:
        how = (f"trainer rank {note['rank']} (pid {note['pid']}) exited with code {note['exitcode']} without a "
               f"gpt2train error (a crash: its traceback is in the run's output above)")
    else:  # the launcher itself failed, e.g. killed: only the Pipes client's exit code is left
        code = re.search(r"code (-?\d+)", launcher_error)
        how = (f"torchrun was killed by {_signal_name(-int(code[1]))}" if code and int(code[1]) < 0
               else f"torchrun failed ({launcher_error})")
    steps = [m["step"] for m in read_metrics(run) if "loss" in m]
    progress = f" after step {max(steps)}" if steps else " before its first step"
    last = latest_checkpoint(checkpoints_dir(run))
    if last is not None:
        resume = (f"The last complete checkpoint is {last}; materializing training_run again (e.g. "
                  f"`gpt2train pipeline --stale-only`) resumes from it")
    else:
        resume = "No checkpoint was complete, so materializing training_run again starts from step 0"
    return f"training run {run.name} failed: {how}{progress}. Log: {run / MAIN_LOG}. {resume}."
