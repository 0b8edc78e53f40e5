"""The local backend (`launch.backend: local`): torchrun as a child of the Dagster run worker.

    TorchrunPipesClient().run(context=context, cfg=cfg, on_checkpoint=record)

runs

    python -m pipelines.torchrun_launcher --failure-note <notes>/launch_failure.json \\
        --standalone --nproc_per_node=N -m pipelines.train_pipes --config <run>/config.yaml \\
        --error-file <notes>/trainer_error.txt

(torchrun, i.e. `python -m torch.distributed.run`, plus a note of how a rank died: see
pipelines/torchrun_launcher.py; `launch.torchrun_args` replace `--standalone`). Its output goes to the
run worker's own stdout and stderr (the step's compute log). Interrupted (Terminate in the UI, SIGTERM or
SIGINT to the worker), it sends torchrun SIGINT, which stops every rank, and waits for it to exit.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable

import dagster as dg

from gpt2train.errors import Gpt2TrainError
from gpt2train.training.failure import describe_training_failure
from pipelines.training_client import TrainingLaunch, TrainingPipesClient


class TorchrunPipesClient(TrainingPipesClient):
    """Trains on this machine (and on the nodes `launch.torchrun_args` rendezvous with) under torchrun."""

    def __init__(self, termination_timeout_s: float = 20.0):
        self.termination_timeout_s = termination_timeout_s  # after SIGINT, before giving up on torchrun

    def train(self, context: dg.AssetExecutionContext, launch: TrainingLaunch, pipes_env: dict[str, str],
              poll: Callable[[], None]) -> None:
        command = launch.torchrun_command()
        context.log.info(f"training run {launch.run.name}: {' '.join(command)}")
        process = subprocess.Popen(command, env={**os.environ, **pipes_env})
        try:
            while True:
                try:
                    returncode = process.wait(timeout=self.poll_interval_s)
                    break
                except subprocess.TimeoutExpired:
                    poll()
        except BaseException:
            # torchrun stops its ranks on SIGINT; each rank also dies with its parent (die_with_parent).
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=self.termination_timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
            raise
        if returncode != 0:
            raise Gpt2TrainError(describe_training_failure(launch.run, launch.notes,
                                                           f"torchrun exited with code {returncode}"))
