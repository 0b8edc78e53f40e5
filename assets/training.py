"""The `training_run` asset: the trainer under torchrun, launched through Dagster Pipes.

Wraps `gpt2train.train.train` (via `pipelines/train_pipes.py`): the asset writes the resolved
config into the run directory `<data_dir>/runs/<run_tag>` and runs

    python -m torch.distributed.run --standalone --nproc_per_node=N -m pipelines.train_pipes --config <run>/config.yaml

with the Pipes client from the `pipes_subprocess_client` resource — swap in `dagster-k8s`'s
`PipesK8sClient` (docs/deploy.md) and the same asset trains on Kubernetes. Rank 0 streams the log
into the run and reports the metadata; a watcher thread registers each checkpoint as a
`checkpoints` partition the moment it is complete, so exports and evals start while training goes on.

Same config and shards -> same run tag -> the trainer resumes (and does nothing if the run is
complete); a changed config or corpus -> a new run directory, a new run.
"""

import sys
from pathlib import Path

import dagster as dg
# Not exported at the top level in dagster 1.13; what PipesSubprocessClient raises on a non-zero exit.
from dagster._core.errors import DagsterPipesExecutionError

from assets.checkpoints import CheckpointWatcher
from gpt2train.config import Config
from gpt2train.errors import Gpt2TrainError
from gpt2train.runs import run_dir, write_run_config
from gpt2train.train import train_code_version

TRAINER_MODULE = "pipelines.train_pipes"


def torchrun_command(cfg: Config, config_path: Path) -> list[str]:
    """torchrun (as `python -m torch.distributed.run`, so it is this environment's) for the config."""
    rendezvous = list(cfg.launch.torchrun_args) or ["--standalone"]
    return [sys.executable, "-m", "torch.distributed.run", *rendezvous,
            f"--nproc_per_node={cfg.launch.nproc_per_node}", "-m", TRAINER_MODULE, "--config", str(config_path)]


def build_training_asset(cfg: Config) -> dg.AssetsDefinition:
    @dg.asset(
        name="training_run",
        deps=[dg.AssetDep("token_shards")],
        code_version=train_code_version(cfg),
        group_name="training",
        kinds={"pytorch"},
        description="GPT-2 trained on every token shard (llm.c's recipe; torchrun, DDP/ZeRO-1) in "
                    "<data_dir>/runs/<run_tag>; launched through Dagster Pipes. Its checkpoints are the "
                    "`checkpoint` asset's partitions.",
    )
    def training_run(context: dg.AssetExecutionContext,
                     pipes_subprocess_client: dg.PipesSubprocessClient) -> dg.MaterializeResult:
        run = run_dir(cfg)
        run.mkdir(parents=True, exist_ok=True)
        error_file = run / "last_error.txt"
        error_file.unlink(missing_ok=True)
        command = torchrun_command(cfg, write_run_config(cfg, run))
        context.log.info(f"training run {run.name}: {' '.join(command)}")
        try:
            with CheckpointWatcher(context.instance, run / "checkpoints", log=context.log):
                invocation = pipes_subprocess_client.run(context=context, command=command)
        except DagsterPipesExecutionError as e:  # the trainer exited non-zero
            reason = error_file.read_text().strip() if error_file.exists() else f"see {run / 'main.log'}"
            raise Gpt2TrainError(f"training run {run.name} failed: {reason}") from e
        return invocation.get_materialize_result()

    return training_run
