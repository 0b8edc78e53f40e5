"""What every training backend shares: a Dagster `PipesClient` that trains one config and says so.

    client = TorchrunPipesClient()       # or SlurmPipesClient(); pipelines/definitions.py picks one
    client.run(context=context, cfg=cfg, on_checkpoint=record).get_materialize_result()

`TrainingPipesClient.run` is the whole launch around a backend: it checks the backend (`check`, before
anything is written), writes the run's resolved config into `<data_dir>/runs/<run_tag>`, opens a Pipes
session whose context and messages files lie in the attempt's notes folder `<run>/.launch-<Dagster run
id>/`, and hands the backend the trainer's command (`train`). While the trainer runs, every checkpoint
that rank 0 reports over Pipes (pipelines/train_pipes.py) is passed to `on_checkpoint` within a poll of
its landing, so exports and evals start while training goes on; whatever the trainer reported is passed
on after it ended too, whether it succeeded or not. The notes folder is removed at the end, and the
folders of earlier attempts whose Dagster runs have ended (a SIGKILLed worker never reached its own
cleanup) before the start.

A backend subclasses it and writes `train`: start the command where it runs (torchrun here, an sbatch
job, a pod), call `poll()` every few seconds until it ends, return if it succeeded, raise a one-line
`Gpt2TrainError` saying why if not (`describe_training_failure` reads the attempt's notes), and stop the
trainer if anything interrupts the wait. docs/deploy.md shows one for Kubernetes.
"""

from __future__ import annotations

import shutil
import sys
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import dagster as dg

from gpt2train.config import Config
from gpt2train.training.failure import LAUNCH_FAILURE, TRAINER_ERROR
from gpt2train.training.run_identity import run_dir
from gpt2train.training.runs import write_run_config
from pipelines.train_pipes import CHECKPOINT_MESSAGE

# Dagster's Pipes session uses Dagster's own preview API (PipesMessageReader.expected_writer_count) and
# warns about it on every run; nothing here calls it, so the warning tells a user nothing to act on.
warnings.filterwarnings("ignore", category=dg.PreviewWarning, module=r"dagster\._core\.pipes")

PIPES_CONTEXT = "pipes_context.json"  # in the attempt's notes folder
PIPES_MESSAGES = "pipes_messages.jsonl"
TRAINER_MODULE = "pipelines.train_pipes"
LAUNCHER_MODULE = "pipelines.torchrun_launcher"


@dataclass(frozen=True)
class TrainingLaunch:
    """One attempt at training `cfg`: its run directory, the config file every rank reads, and the
    attempt's notes folder (Pipes files, the trainer's error, the launcher's note of a dead rank)."""

    cfg: Config
    run: Path
    config_path: Path
    notes: Path

    def torchrun_command(self) -> list[str]:
        """torchrun (`python -m torch.distributed.run` inside the launcher, so it is this environment's)
        for one node; a failed attempt leaves its notes in the notes folder."""
        rendezvous = list(self.cfg.launch.torchrun_args) or ["--standalone"]
        return [sys.executable, "-m", LAUNCHER_MODULE, "--failure-note", str(self.notes / LAUNCH_FAILURE),
                *rendezvous, f"--nproc_per_node={self.cfg.launch.nproc_per_node}", "-m", TRAINER_MODULE, "--config",
                str(self.config_path), "--error-file", str(self.notes / TRAINER_ERROR)]


class CheckpointMessages:
    """Passes each checkpoint the trainer reported over Pipes to `on_checkpoint(path)`, once."""

    def __init__(self, session: dg.PipesSession, on_checkpoint: Callable[[Path], None]):
        self.session, self.on_checkpoint, self.passed = session, on_checkpoint, 0

    def forward_new(self) -> None:
        """Pass on what arrived since the last call; if `on_checkpoint` raises, that checkpoint is
        passed again at the next call."""
        for message in self.session.get_custom_messages()[self.passed:]:  # every custom message, in order
            if isinstance(message, dict) and CHECKPOINT_MESSAGE in message:
                self.on_checkpoint(Path(message["path"]))
            self.passed += 1

    def forward_while_training(self, log: dg.DagsterLogManager) -> Callable[[], None]:
        """`forward_new` for a backend's poll: a failure (a busy database) is a warning, tried again at the
        next poll, and never stops the training."""
        def poll() -> None:
            try:
                self.forward_new()
            except Exception as e:
                log.warning(f"recording a checkpoint (tried again at the next poll): {e}")
        return poll


def remove_notes_of_ended_runs(instance: dg.DagsterInstance, run: Path) -> list[Path]:
    """Delete the `.launch-<run id>/` folders of `run` whose Dagster run has ended: one whose worker was
    SIGKILLed never reached its own cleanup. A folder of a run this instance does not know (another
    instance on the same data dir) or has not seen end is left alone: it may still be in use."""
    removed = []
    for notes in run.glob(".launch-*"):
        other = instance.get_run_by_id(notes.name.removeprefix(".launch-"))
        if other is not None and other.is_finished:
            shutil.rmtree(notes, ignore_errors=True)
            removed.append(notes)
    return removed


class TrainingPipesClient(dg.PipesClient, ABC):
    """A Pipes client that trains a config on one backend; see the module docstring."""

    poll_interval_s = 2.0  # how often `train` calls `poll`: a checkpoint is reported within about this

    def run(self, *, context: dg.AssetExecutionContext, extras: dict | None = None, cfg: Config,
            on_checkpoint: Callable[[Path], None]) -> dg.PipesClientCompletedInvocation:
        self.check(cfg)
        run = run_dir(cfg)
        for left in remove_notes_of_ended_runs(context.instance, run):
            context.log.info(f"removed {left}, left by an earlier attempt whose run worker died")
        notes = run / f".launch-{context.run.run_id}"
        notes.mkdir(parents=True, exist_ok=True)
        launch = TrainingLaunch(cfg, run, write_run_config(cfg, run), notes)
        checkpoints = None
        try:
            try:
                with dg.open_pipes_session(context=context, extras=extras,
                                           context_injector=dg.PipesFileContextInjector(str(notes / PIPES_CONTEXT)),
                                           message_reader=dg.PipesFileMessageReader(str(notes / PIPES_MESSAGES))
                                           ) as session:
                    checkpoints = CheckpointMessages(session, on_checkpoint)
                    self.train(context, launch, session.get_bootstrap_env_vars(),
                               poll=checkpoints.forward_while_training(context.log))
            except BaseException:
                if checkpoints is not None:  # a failed or stopped run's checkpoints are still good to resume from
                    try:
                        checkpoints.forward_new()
                    except Exception as e:  # keep why training failed as the error
                        context.log.warning(f"recording the trainer's last checkpoints: {e}")
                raise
            # The session has read the messages file to its end: the last checkpoints are passed on now.
            checkpoints.forward_new()
        finally:
            shutil.rmtree(notes, ignore_errors=True)  # read by `train`, or nothing to read
        return dg.PipesClientCompletedInvocation(session)

    def check(self, cfg: Config) -> None:
        """Before anything is written: what the backend needs is there (a one-line Gpt2TrainError if not)."""

    @abstractmethod
    def train(self, context: dg.AssetExecutionContext, launch: TrainingLaunch, pipes_env: dict[str, str],
              poll: Callable[[], None]) -> None:
        """Run the trainer of `launch` with `pipes_env` in global rank 0's environment; call `poll()` every
        `poll_interval_s` until it ends; raise a one-line Gpt2TrainError unless it succeeded; stop it on any
        exception (Dagster's interrupt included) before re-raising."""
