"""The `training_run` asset: the trainer launched through the `training_client` resource, a Dagster Pipes client.

    training_client.run(context=context, cfg=cfg, on_checkpoint=...).get_materialize_result()

The client is the launch backend, picked in pipelines/definitions.py from `launch.backend`: torchrun on
this machine (pipelines/torchrun_client.py) or an sbatch job (pipelines/slurm_pipes.py); a new backend is
one more client (docs/deploy.md). Whichever runs it, the trainer (pipelines/train_pipes.py) trains
`gpt2train.training.loop.train` in `<data_dir>/runs/<run_tag>`; rank 0 streams the log into the run,
reports each complete checkpoint, which is recorded here as a `checkpoints` partition the moment the
report arrives (so exports and evals start while training goes on), and ends with the run's metadata.

Same config and shards -> same run tag -> the trainer resumes (and does nothing if the run is
complete); a changed config or corpus -> a new run directory, a new run. A failed run says why
(the trainer's own error, or the signal that killed a rank) and which complete checkpoint the
next materialization resumes from.
"""

from pathlib import Path

import dagster as dg

from assets.checkpoints import register_checkpoints
from gpt2train.config import Config
from gpt2train.training.failure import describe_interrupted_training
from gpt2train.training.run_identity import run_dir, train_code_version
from gpt2train.training.runs import checkpoint_info


class TrainingInterrupted(dg.DagsterExecutionInterruptedError):
    """The training_run asset's Dagster run was interrupted; the message says where training resumes.
    A DagsterExecutionInterruptedError (a BaseException, as KeyboardInterrupt), not a Gpt2TrainError, so
    Dagster still handles it as the interrupt it is."""


def build_training_asset(cfg: Config) -> dg.AssetsDefinition:
    @dg.asset(
        name="training_run",
        deps=["shard_manifest"],  # every shard, in one edge at any number of files (assets/manifests.py)
        code_version=train_code_version(cfg),
        group_name="training",
        kinds={"pytorch"},
        description="GPT-2 trained on every token shard (llm.c's recipe; torchrun, DDP/ZeRO-1) in "
                    "<data_dir>/runs/<run_tag>; launched through Dagster Pipes by the `training_client` resource "
                    "(launch.backend). Its checkpoints are the "
                    "`checkpoint` asset's partitions.",
    )
    def training_run(context: dg.AssetExecutionContext,
                     training_client: dg.ResourceParam[dg.PipesClient]) -> dg.MaterializeResult:
        # No writer lock here: the trainer locks its run directory itself (gpt2train/training/loop.py),
        # which also covers `gpt2train train` next to a Dagster run.
        def record_checkpoint(path: Path) -> None:
            if not path.is_dir():  # train.keep_last pruned it before the report was read: nothing to record
                context.log.info(f"checkpoint {path} was pruned before it was recorded")
                return
            for key in register_checkpoints(context.instance, [checkpoint_info(path)]):
                context.log.info(f"checkpoint {key} registered as a `checkpoints` partition")

        try:
            invocation = training_client.run(context=context, cfg=cfg, on_checkpoint=record_checkpoint)
        except dg.DagsterExecutionInterruptedError:  # SIGTERM / SIGINT to this process, Terminate in the UI
            # The client has stopped the trainer. Still an interrupt, so Dagster and `gpt2train pipeline`
            # stop as before, now saying where the run resumes from.
            raise TrainingInterrupted(describe_interrupted_training(run_dir(cfg))) from None
        return invocation.get_materialize_result()

    return training_run
