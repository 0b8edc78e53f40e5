"""The Slurm backend (`launch.backend: slurm`): the trainer as an sbatch job that talks Dagster Pipes through
files on the shared filesystem.

    SlurmPipesClient().run(context=context, cfg=cfg, on_checkpoint=record)

The Pipes context and messages files lie in the attempt's notes folder `<run>/.launch-<Dagster run id>/`
(pipelines/training_client.py): the job script (gpt2train/training/slurm_job.py) exports the two Pipes
variables that point there, rank 0 of the trainer (pipelines/train_pipes.py, on whichever node it runs)
writes its log lines, checkpoints and final metadata to the messages file, and the session's reader
thread tails it into the Dagster run, as for the local backend. The job's own output (every task's
stdout and stderr: torchrun, the other ranks) lands in `<run>/slurm-<job id>.out` and is copied to this
step's stderr as it grows.

While the job is queued or runs, its state is read every few seconds. A job that ends other than
COMPLETED fails the asset with one line naming the job, its state and the checkpoint the next
materialization resumes from; a job still pending after `launch.slurm.pending_timeout_s` is
cancelled. If the Dagster run stops waiting (cancelled from the UI, the run worker interrupted by
SIGTERM / SIGINT), the job is cancelled with it: nothing trains on unwatched. A worker that cannot
cancel it (SIGKILL, the OOM killer) stops touching `<notes>/heartbeat`, which it touches at every
poll, and the job's own watchdog cancels it after `launch.slurm.heartbeat_timeout_s`; the next
materialization resumes from the last complete checkpoint.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import dagster as dg

from gpt2train.config import Config
from gpt2train.errors import Gpt2TrainError
from gpt2train.training.failure import describe_training_failure
from gpt2train.training.slurm_job import (
    JOB_OUTPUT,
    JobState,
    SlurmError,
    cancel,
    check_slurm,
    describe_job_end,
    submit,
    touch_heartbeat,
    wait_for_job,
    write_job_script,
)
from pipelines.training_client import TrainingLaunch, TrainingPipesClient

INTERRUPTS = (signal.SIGTERM, signal.SIGINT)  # what Dagster's run termination and Ctrl-C send a run worker


class HeldInterrupts:
    """From construction to `release()`, SIGTERM and SIGINT are recorded instead of handled; `release()` puts
    the handlers back and raises each recorded signal again, so its handler runs there. Python runs signal
    handlers in the main thread only (whichever thread the OS delivered to), so this is a Python-level hold,
    not a signal mask; outside the main thread, where no handler can be replaced, it holds nothing."""

    def __init__(self):
        self.caught: list[int] = []
        self.previous: dict[int, object] = {}
        if threading.current_thread() is threading.main_thread():
            self.previous = {sig: signal.signal(sig, lambda signum, _frame: self.caught.append(signum))
                             for sig in INTERRUPTS}

    def release(self) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)  # None: not set from Python
        self.previous = {}
        caught, self.caught = self.caught, []
        for sig in caught:
            signal.raise_signal(sig)


class OutputTail:
    """Copies what a file gains (the job's output) to this process's stderr, the step's compute log."""

    def __init__(self, path: Path):
        self.path, self.offset = path, 0

    def copy_new(self) -> None:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:  # the job has not started yet
            return
        self.offset += len(data)
        if data:
            sys.stderr.write(data.decode(errors="replace"))
            sys.stderr.flush()


class SlurmPipesClient(TrainingPipesClient):
    """Trains as one sbatch job: `launch.slurm.nodes` nodes, one torchrun agent each."""

    def check(self, cfg: Config) -> None:
        check_slurm(cfg)  # sbatch missing, an unknown partition: one line, before anything is written

    def train(self, context: dg.AssetExecutionContext, launch: TrainingLaunch, pipes_env: dict[str, str],
              poll: Callable[[], None]) -> None:
        """Submit the training job, stream it into the run until it ends; a one-line Gpt2TrainError for any
        end but COMPLETED."""
        cfg, run, notes = launch.cfg, launch.run, launch.notes
        script = write_job_script(cfg, run, launch.config_path, notes, pipes_env)
        touch_heartbeat(notes)  # before sbatch: the job's watchdog finds a heartbeat from its first look
        # Interrupts wait while sbatch runs: slurmctld queues the job before this process has read its id,
        # and an interrupt in between would leave a job nobody cancels. A held one arrives in the `try` below.
        held = HeldInterrupts()
        try:
            job = submit(cfg, script)
        except BaseException:
            held.release()
            raise
        output = OutputTail(run / JOB_OUTPUT.replace("%j", job))
        last_seen: list[JobState] = []

        def on_poll(state: JobState) -> None:
            touch_heartbeat(notes)  # still watching: the job's watchdog leaves it running
            output.copy_new()
            poll()
            if not last_seen or state.state != last_seen[-1].state:
                context.log.info(f"Slurm job {job}: {state.state}" + (f" ({state.reason})" if state.reason
                                                                      not in ("", "None") else ""))
            last_seen[:] = [state]

        try:
            held.release()
            context.log.info(f"Slurm job {job} submitted ({script}); its output: {output.path}")
            ended = wait_for_job(job, cfg.launch.slurm.pending_timeout_s, on_poll=on_poll)
        except SlurmError:
            raise  # pending too long (wait_for_job cancelled it), or slurmctld not answering
        except BaseException:  # the run cancelled, its worker interrupted: the job must not outlive the step
            cancel(job)
            context.log.warning(f"Slurm job {job} cancelled: the Dagster run stopped waiting for it")
            raise
        finally:
            output.copy_new()
        if ended.state == "FAILED":  # the trainer or torchrun exited non-zero: its notes say why
            message = describe_training_failure(run, notes,
                                                f"Slurm job {job} FAILED with exit code {ended.exit_code}")
            raise Gpt2TrainError(f"{message} (Slurm job {job}; its output: {output.path})")
        if ended.state != "COMPLETED":
            raise SlurmError(describe_job_end(run, job, ended))
