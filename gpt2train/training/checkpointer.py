"""The trainer's checkpoints: `save(step)` and `load()` of its TrainState (after torchtitan's CheckpointManager).

    checkpointer = CheckpointManager(root, state, cfg, d, kernels, lineage, on_checkpoint)
    resumed_from = checkpointer.load()   # the newest complete checkpoint (train.resume), or None
    checkpointer.save(step)              # collective: every rank writes its files; pruned, then reported
    checkpointer.keep_before_instability(step, reason)  # rank 0: an update was skipped; keep the one before it

What is saved is what is loaded: the weights, this rank's optimizer state (its ZeRO-1 shard), loader
position and torch RNG state, the update guard, the step and its losses, beside the run's config and
lineage. The files and their atomic write are training/checkpoint.py's; this module decides what goes
into them and what a resume does with them, and which checkpoint an instability keeps.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from gpt2train.config import Config, config_to_dict
from gpt2train.errors import ConfigError, Gpt2TrainError
from gpt2train.layout import step_dir
from gpt2train.lineage.records import data_dir_field
from gpt2train.training.checkpoint import (
    CheckpointState, kept_before_instability, latest_checkpoint, load_checkpoint, mark_before_instability,
    prune_checkpoints, restore_rng, save_checkpoint,
)
from gpt2train.training.distributed import Dist

if TYPE_CHECKING:
    from gpt2train.training.loop import TrainState

log = logging.getLogger(__name__)


@dataclass
class CheckpointManager:
    """Saves the trainer's `state` into `root` (<run>/checkpoints) and loads it back."""

    root: Path
    state: TrainState
    cfg: Config
    d: Dist
    kernels: str       # the hot-path ops this process runs (train.kernels resolved): triton or torch
    lineage: dict      # what the run was made from, the same in every checkpoint (loop.py: run_lineage)
    on_checkpoint: Callable[[Path], None] | None = None  # called on rank 0 with each complete checkpoint
    # The checkpoints an instability met in this process (None: none before it), each logged once.
    noted: set[Path | None] = field(default_factory=set, repr=False)

    def save(self, step: int) -> Path:
        """The checkpoint of `step` (every rank writes its optimizer shard), pruned to train.keep_last
        and train.major_every, then handed to `on_checkpoint`."""
        s, main = self.state, self.d.is_main
        path = save_checkpoint(self.root, step, model_state=s.model.state_dict() if main else None,
                               optimizer_state=s.optimizer_state(), loader_state=s.loader.state_dict(),
                               state=self.record(step) if main else None, rank=self.d.rank, barrier=self.d.barrier)
        if main:
            prune_checkpoints(self.root, self.cfg.train.keep_last, self.cfg.train.major_every)
            log.info("checkpoint %s", path)
            if self.on_checkpoint is not None:
                self.on_checkpoint(path)
        return path

    def keep_before_instability(self, step: int, reason: str) -> Path | None:
        """Update `step` was skipped (`reason`: a non-finite value, or an outlier under train.skip_loss_z /
        skip_grad_z): mark the newest complete checkpoint before it so that train.keep_last never prunes
        it, say so in one line and report it again to `on_checkpoint` (its record changed). Rank 0 only.
        A failure to mark is a warning: the run goes on, as it would have without the mark."""
        try:
            path, new = mark_before_instability(self.root, step, reason)
        except (OSError, Gpt2TrainError) as e:
            log.warning("instability at step %d (%s): could not mark the checkpoint before it as kept: %s",
                        step, reason, e)
            return None
        if new:
            log.warning("instability at step %d (%s): keeping %s, the last checkpoint before it; "
                        "train.keep_last never deletes it", step, reason, path)
            if self.on_checkpoint is not None:
                self.on_checkpoint(path)
        elif path not in self.noted:
            if path is None:
                log.warning("instability at step %d (%s): no checkpoint was saved before it, so there is none "
                            "to keep", step, reason)
            else:
                mark = kept_before_instability(path)
                log.info("instability at step %d (%s): %s is kept already, as the %s", step, reason, path,
                         mark.describe() if mark else "last checkpoint before an earlier instability")
        self.noted.add(path)
        return path

    def record(self, step: int) -> dict:
        """The run state rank 0 writes into state.json (CheckpointState reads it back)."""
        s = self.state
        # val_loss: of these very weights (the evals run at every checkpoint step), or None when
        # validation is off. The guard's fields sit at the top level of the record.
        return {"world": self.d.world, "kernels": self.kernels, "loss": s.loss, "val_loss": s.val_loss,
                "data_dir": data_dir_field(step_dir(self.root, step), self.cfg.data_dir),
                "config": config_to_dict(self.cfg), **s.guard.state_dict(), "lineage": self.lineage}

    def load(self) -> Path | None:
        """Weights, optimizer, loader position, RNG, update guard and step from the newest complete
        checkpoint in `root` (train.resume), if there is one; returns its path."""
        t, d, s = self.cfg.train, self.d, self.state
        path = latest_checkpoint(self.root) if t.resume else None
        if path is None:
            return None
        saved = CheckpointState.from_dir(path)
        saved_world = saved.world or 1  # a record without it was saved by one process
        if saved_world != d.world and t.zero_stage == 1:
            raise ConfigError(f"{path} holds ZeRO-1 optimizer shards for {saved_world} ranks; resume with "
                              f"--nproc_per_node={saved_world} (re-sharding ZeRO-1 state is not supported)")
        # Another world size: without ZeRO every rank's optimizer state is the same full copy and
        # the loader position counts global batches, so every rank starts from rank 0's files.
        files = load_checkpoint(path, d.rank if saved_world == d.world else 0)
        s.model.load_state_dict(files["model"])
        s.load_optimizer_state(files["optimizer"])
        s.loader.load_state_dict(files["loader"])
        restore_rng(files["rng"])
        s.step, s.val_loss = saved.step, saved.val_loss
        s.guard.load_state_dict(saved.record)
        if saved.kernels not in (None, self.kernels) and d.is_main:  # train.kernels=auto on another machine
            log.warning("%s was trained with the %s kernels; this process runs the %s ones (train.kernels=%s): the "
                        "same model and math, a different rounding from here on", path, saved.kernels, self.kernels,
                        t.kernels)
        if saved.loss is not None:  # the summary's, if nothing is left to train
            s.loss = saved.loss
        return path
