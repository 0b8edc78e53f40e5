"""The `training_run` asset: the trainer under torchrun, launched through Dagster Pipes.

Wraps `gpt2train.training.loop.train` (via `pipelines/train_pipes.py`): the asset writes the resolved
config into the run directory `<data_dir>/runs/<run_tag>` and runs

    python -m pipelines.torchrun_launcher --failure-note <notes>/launch_failure.json \\
        --standalone --nproc_per_node=N -m pipelines.train_pipes --config <run>/config.yaml \\
        --error-file <notes>/trainer_error.txt

(torchrun, i.e. `python -m torch.distributed.run`, plus a note of how a rank died: see
pipelines/torchrun_launcher.py) with the Pipes client from the `pipes_subprocess_client`
resource — swap in `dagster-k8s`'s `PipesK8sClient` (docs/deploy.md) and the same asset trains on
Kubernetes. With `launch.backend: slurm` it submits an sbatch job instead, `srun torchrun` on each
node, with Pipes through files in the run directory (pipelines/slurm_pipes.py). Rank 0 streams the
log into the run and reports the metadata; a watcher thread registers each checkpoint as a
`checkpoints` partition the moment it is complete, so exports and evals start while training goes on.

Same config and shards -> same run tag -> the trainer resumes (and does nothing if the run is
complete); a changed config or corpus -> a new run directory, a new run. A failed run says why
(the trainer's own error, or the signal that killed a rank) and which complete checkpoint the
next materialization resumes from.
"""

import shutil
import sys
import warnings
from pathlib import Path

import dagster as dg
# Not exported at the top level in dagster 1.13; what PipesSubprocessClient raises on a non-zero exit.
from dagster._core.errors import DagsterPipesExecutionError

from assets.checkpoints import CheckpointWatcher
from gpt2train.config import Config
from gpt2train.errors import Gpt2TrainError
from gpt2train.layout import checkpoints_dir
from gpt2train.training.failure import (
    LAUNCH_FAILURE, TRAINER_ERROR, describe_interrupted_training, describe_training_failure,
)
from gpt2train.training.run_identity import run_dir, train_code_version
from gpt2train.training.runs import write_run_config
from gpt2train.training.slurm_job import check_slurm
from pipelines.slurm_pipes import PIPES_CONTEXT, PIPES_MESSAGES, train_on_slurm

# Dagster's Pipes client uses Dagster's own preview API (PipesMessageReader.expected_writer_count) and
# warns about it on every run; nothing here calls it, so the warning tells a user nothing to act on.
warnings.filterwarnings("ignore", category=dg.PreviewWarning, module=r"dagster\._core\.pipes")

TRAINER_MODULE = "pipelines.train_pipes"
LAUNCHER_MODULE = "pipelines.torchrun_launcher"
# One attempt's failure notes (gpt2train/training/failure.py), in `<run>/.launch-<Dagster run id>/`: on
# the run's volume, which a training pod writes too (docs/deploy.md), and one folder per attempt, so a
# second attempt that the trainer's run-directory lock refuses never leaves its note where this attempt
# reads its own.


class TrainingInterrupted(dg.DagsterExecutionInterruptedError):
    """The training_run asset's Dagster run was interrupted; the message says where training resumes.
    A DagsterExecutionInterruptedError (a BaseException, as KeyboardInterrupt), not a Gpt2TrainError, so
    Dagster still handles it as the interrupt it is."""


def torchrun_command(cfg: Config, config_path: Path, notes: Path) -> list[str]:
    """torchrun (`python -m torch.distributed.run` inside the launcher, so it is this environment's)
    for the config; a failed attempt leaves its notes in the folder `notes`."""
    rendezvous = list(cfg.launch.torchrun_args) or ["--standalone"]
    return [sys.executable, "-m", LAUNCHER_MODULE, "--failure-note", str(notes / LAUNCH_FAILURE), *rendezvous,
            f"--nproc_per_node={cfg.launch.nproc_per_node}", "-m", TRAINER_MODULE, "--config", str(config_path),
            "--error-file", str(notes / TRAINER_ERROR)]


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


def pipes_client_in_notes(client: dg.PipesSubprocessClient, notes: Path) -> dg.PipesSubprocessClient:
    """`client`, with the Pipes context and messages files in the attempt's notes folder rather than in
    a fresh /tmp folder (Dagster's default): what a SIGKILLed run worker leaves is then where the next
    materialization removes it. A client configured with its own injector or reader is used as it is."""
    from dagster._core.pipes.utils import PipesTempFileContextInjector, PipesTempFileMessageReader

    if not (isinstance(client.context_injector, PipesTempFileContextInjector)
            and isinstance(client.message_reader, PipesTempFileMessageReader)):
        return client
    return dg.PipesSubprocessClient(
        env=client.env, cwd=client.cwd, forward_termination=client.forward_termination,
        forward_stdio=client.forward_stdio, termination_timeout_seconds=client.termination_timeout_seconds,
        context_injector=dg.PipesFileContextInjector(str(notes / PIPES_CONTEXT)),
        message_reader=dg.PipesFileMessageReader(str(notes / PIPES_MESSAGES)))


def build_training_asset(cfg: Config) -> dg.AssetsDefinition:
    @dg.asset(
        name="training_run",
        deps=["shard_manifest"],  # every shard, in one edge at any number of files (assets/manifests.py)
        code_version=train_code_version(cfg),
        group_name="training",
        kinds={"pytorch"},
        description="GPT-2 trained on every token shard (llm.c's recipe; torchrun, DDP/ZeRO-1) in "
                    "<data_dir>/runs/<run_tag>; launched through Dagster Pipes. Its checkpoints are the "
                    "`checkpoint` asset's partitions.",
    )
    def training_run(context: dg.AssetExecutionContext,
                     pipes_subprocess_client: dg.PipesSubprocessClient) -> dg.MaterializeResult:
        # No writer lock here: the trainer locks its run directory itself (gpt2train/training/loop.py),
        # which also covers `gpt2train train` next to a Dagster run.
        if cfg.launch.backend == "slurm":
            check_slurm(cfg)  # sbatch missing, an unknown partition: one line, before anything is written
        run = run_dir(cfg)
        for left in remove_notes_of_ended_runs(context.instance, run):
            context.log.info(f"removed {left}, left by an earlier attempt whose run worker died")
        notes = run / f".launch-{context.run.run_id}"
        notes.mkdir(parents=True, exist_ok=True)
        config_path = write_run_config(cfg, run)
        try:
            with CheckpointWatcher(context.instance, checkpoints_dir(run), log=context.log):
                if cfg.launch.backend == "slurm":
                    return train_on_slurm(context, cfg, run, config_path, notes)
                command = torchrun_command(cfg, config_path, notes)
                context.log.info(f"training run {run.name}: {' '.join(command)}")
                invocation = pipes_client_in_notes(pipes_subprocess_client, notes).run(context=context,
                                                                                       command=command)
        except DagsterPipesExecutionError as e:  # the trainer exited non-zero
            raise Gpt2TrainError(describe_training_failure(run, notes, str(e))) from e
        except dg.DagsterExecutionInterruptedError:  # SIGTERM / SIGINT to this process, Terminate in the UI
            # Locally the Pipes client has sent the trainer SIGINT and waited for it. Still an interrupt, so
            # Dagster and `gpt2train pipeline` stop as before, now saying where the run resumes from.
            raise TrainingInterrupted(describe_interrupted_training(run)) from None
        finally:
            shutil.rmtree(notes, ignore_errors=True)  # read above, or nothing to read
        return invocation.get_materialize_result()

    return training_run
