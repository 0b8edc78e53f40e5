"""Why a trainer failed or was stopped, in one message that says where the run resumes from: what
a launcher raises or prints (the Dagster training asset, pipelines/slurm_pipes.py, the CLI).

A launch leaves notes in a folder of its own (the launcher's, e.g. `<run>/.launch-<Dagster run
id>/`): the trainer's own error (TRAINER_ERROR, written by rank 0: pipelines/train_pipes.py) or how the
first failed rank ended (LAUNCH_FAILURE, written by pipelines/torchrun_launcher.py). A rank killed by
a signal reports nothing itself, so the message also says how far the run got and which checkpoint a
rerun resumes from.

A single-process trainer stopped by SIGTERM (`kill`, a scheduler's preemption) or SIGINT (Ctrl-C, the
Pipes client's way to stop it) raises TrainingStopped (`stop_on_signals`), naming the checkpoint it
resumes from; a launcher that was interrupted says the same (`describe_interrupted_training`).
"""

from __future__ import annotations

import contextlib
import json
import re
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from gpt2train.errors import Gpt2TrainError
from gpt2train.layout import MAIN_LOG, STEP_DIR, checkpoints_dir
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
    return f"training run {run.name} failed: {how}{run_progress(run)}. Log: {run / MAIN_LOG}. {resume_note(run)}."


def describe_interrupted_training(run: Path) -> str:
    """A launcher's message when it was interrupted while the trainer ran (SIGTERM or SIGINT to its
    process; the Dagster training asset gets DagsterExecutionInterruptedError, from the UI's Terminate
    too, and the local Pipes client stops the trainer with SIGINT): what stopped it, how far it got,
    and where it resumes from."""
    return (f"training run {run.name} was stopped: it was interrupted (SIGTERM or SIGINT to the process that "
            f"launched it){run_progress(run)}. Log: {run / MAIN_LOG}. {resume_note(run, show_step=True)}.")


def run_progress(run: Path) -> str:
    """How far the run in `run` got, as words to append: ` after step 7` or ` before its first step`."""
    steps = [m["step"] for m in read_metrics(run) if "loss" in m]
    return f" after step {max(steps)}" if steps else " before its first step"


def resume_note(run: Path, show_step: bool = False) -> str:
    """Where launching the run in `run` again resumes from, in words true for every launcher (the CLI,
    Dagster, Slurm): its last complete checkpoint, else step 0."""
    last = latest_checkpoint(checkpoints_dir(run))
    if last is not None:
        step = f" (step {_step_of(last)})" if show_step else ""
        return f"The last complete checkpoint is {last}{step}; launching this run again resumes from it"
    return "No checkpoint was complete, so launching this run again starts from scratch (step 0)"


def _step_of(checkpoint: Path) -> int:
    return int(STEP_DIR.match(checkpoint.name)[1])


class TrainingStopped(Gpt2TrainError):
    """The trainer was stopped by SIGTERM or SIGINT; the message says where a rerun resumes from."""


def stopped_message(signal_name: str, out_dir: Path) -> str:
    """`training stopped by SIGTERM after step 7; ... resumes from <checkpoint> (step 6)`, for the run in `out_dir`."""
    last = latest_checkpoint(checkpoints_dir(out_dir))
    resume = (f"the last complete checkpoint is {last} (step {_step_of(last)}): running it again resumes from it"
              if last is not None else
              "no checkpoint was complete yet, so running it again starts from scratch (step 0)")
    return f"training in {out_dir} stopped by {signal_name}{run_progress(out_dir)}; {resume}"


@contextlib.contextmanager
def stop_on_signals(message: Callable[[str], str]) -> Iterator[None]:
    """While the block runs, SIGTERM and SIGINT raise TrainingStopped(message(signal name)) instead of
    ending the process without a word (SIGTERM) or with a KeyboardInterrupt traceback (SIGINT), so
    the CLI and every launcher say where the run resumes from. Everything the loop writes is
    crash-safe (temp name + rename, checkpoints complete only with DONE), so raising at any point
    between two bytecodes leaves nothing half-written under a final name.

    For one process only (the loop calls it when the world is 1): a Python handler runs only between
    bytecodes, so a rank blocked in a collective whose peer died would not stop on SIGTERM, which
    torchrun and the parent-death signal (gpt2train/training/distributed.py) rely on. A second signal
    while the first is handled ends the process as before."""
    if threading.current_thread() is not threading.main_thread():  # handlers can be set only there
        yield
        return

    def handler(signum: int, frame: object) -> None:
        for s, h in previous.items():
            signal.signal(s, h)
        raise TrainingStopped(message(signal.Signals(signum).name))

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
