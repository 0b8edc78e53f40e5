"""What one optimizer step decides and reports (the step itself: loop.py's `Trainer.train_step`).

    norm, clip_coef = clip_gradients(model.parameters(), t.grad_clip)  # 0 = measure, never clip
    skip, nonfinite = guard.skips(step, loss, norm, clip_coef, lr)   # UpdateGuard
    StepResult(loss, norm, lr, skipped, nonfinite, ms)                # what the loop logs of a step

`clip_gradients` clips (train.grad_clip; 0 = off) and measures the gradient norm. `UpdateGuard` decides
which updates are skipped: a NaN/Inf loss, gradient norm, clip coefficient or
learning rate never reaches the weights, and llm.c's -sl / -sg skip outliers against the last 128
steps. `memory_mb` and `peak_memory_mb` read the memory a step's metrics line and the run's summary report.
"""

from __future__ import annotations

import logging
import math
import os
import resource
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch

from gpt2train.training.outliers import OutlierDetector

log = logging.getLogger(__name__)


def clip_gradients(parameters: Iterable[torch.nn.Parameter], grad_clip: float) -> tuple[float, float]:
    """(the gradients' total norm before clipping, what clipping multiplied them by). `grad_clip` 0 is no
    clipping: the norm is still measured (the metrics log it, -sg's outlier rule reads it) and the
    gradients are left as they are (clip_grad_norm_ with 0 would multiply them by 0: no learning)."""
    parameters = list(parameters)
    if grad_clip == 0:
        grads = [p.grad for p in parameters if p.grad is not None]
        if hasattr(torch.nn.utils, "get_total_norm"):  # torch >= 2.6: the norm clip_grad_norm_ computes
            return torch.nn.utils.get_total_norm(grads).item(), 1.0
        return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])).item(), 1.0
    norm = torch.nn.utils.clip_grad_norm_(parameters, grad_clip).item()
    # What clip_grad_norm_ scaled the gradients by: its own formula, clamped to 1 as its torch.clamp does.
    # A NaN stays NaN (Python's min(1.0, nan) would say 1.0): it has just made every gradient NaN.
    clip_coef = grad_clip / (norm + 1e-6)
    return norm, 1.0 if clip_coef >= 1.0 else clip_coef


@dataclass
class UpdateGuard:
    """Which updates are skipped: non-finite ones always, outliers when llm.c's z-score limits
    (`skip_loss_z`, `skip_grad_z`; 0 = off) are set. Its state is checkpointed, so a resumed run
    decides as the uninterrupted one would."""

    skip_loss_z: float = 0.0
    skip_grad_z: float = 0.0
    loss_outliers: OutlierDetector = field(default_factory=OutlierDetector)
    norm_outliers: OutlierDetector = field(default_factory=OutlierDetector)
    skipped: int = 0             # updates skipped so far, for any reason
    nonfinite_in_a_row: int = 0  # steps in a row with a NaN/Inf loss, grad norm, clip coefficient or lr

    def skips(self, step: int, loss: float, norm: float, clip_coef: float, lr: float) -> tuple[bool, bool]:
        """(skip this update, because it is not finite) for update number `step`. `clip_coef` is what
        clipping multiplied the gradients by, `lr` the rate AdamW would apply: with either one NaN or
        Inf (a NaN train.grad_clip, a schedule gone wrong) a finite loss and norm still make every
        weight NaN, so they are checked as the loss and the norm are."""
        # A non-finite value never enters the outlier statistics. Every rank decides the same: the
        # loss is all-reduced, the norm is of all-reduced grads, the coefficient and lr follow from
        # the norm and the config.
        values = {"loss": loss, "grad norm": norm, "clip coefficient": clip_coef, "lr": lr}
        nonfinite = not all(math.isfinite(v) for v in values.values())
        if nonfinite:
            skip, self.nonfinite_in_a_row = True, self.nonfinite_in_a_row + 1
            log.warning("step %d: %s: not finite, update skipped (%d in a row)", step,
                        ", ".join(f"{name} {value}" for name, value in values.items()), self.nonfinite_in_a_row)
        else:
            self.nonfinite_in_a_row = 0
            loss_z, norm_z = self.loss_outliers.update(loss), self.norm_outliers.update(norm)
            skip = (self.skip_loss_z > 0 and loss_z > self.skip_loss_z) or (
                self.skip_grad_z > 0 and norm_z > self.skip_grad_z)
            if skip:
                log.warning("step %d: update skipped (loss z %.2f, grad-norm z %.2f)", step, loss_z, norm_z)
        self.skipped += skip
        return skip, nonfinite

    def state_dict(self) -> dict:
        return {"skipped_updates": self.skipped, "nonfinite_in_a_row": self.nonfinite_in_a_row,
                "loss_outliers": self.loss_outliers.state_dict(), "norm_outliers": self.norm_outliers.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.skipped = state.get("skipped_updates", 0)
        self.nonfinite_in_a_row = state.get("nonfinite_in_a_row", 0)
        self.loss_outliers.load_state_dict(state["loss_outliers"])
        self.norm_outliers.load_state_dict(state["norm_outliers"])


@dataclass
class StepResult:
    loss: float       # mean over the micro-batches and ranks
    norm: float       # the gradient norm before clipping
    lr: float         # the schedule's learning rate for this update (applied unless skipped)
    skipped: bool
    nonfinite: bool
    ms: float         # wall time of the whole step, the optimizer's included


def memory_mb(device_type: str) -> float | None:
    """Memory in use now: CUDA allocator bytes on GPU, the process's resident set on CPU (Linux)."""
    if device_type == "cuda":
        return torch.cuda.memory_allocated() / 2**20
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError):
        return None


def peak_memory_mb(device_type: str) -> float:
    """The most this process held: CUDA allocator bytes on GPU, the peak resident set on CPU."""
    if device_type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
