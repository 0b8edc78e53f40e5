"""What the loop measures besides the training loss: validation loss, in-loop HellaSwag, samples.

As llm.c, "step s" is the model after s updates: validation loss at step 0, every `val_every`
steps and at the last one; HellaSwag at the same steps but 0. Every checkpoint's step is evaluated
too, before it is saved, so the val loss it records (and its report shows) is its own.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from gpt2train.config import TrainConfig
from gpt2train.data.loader import ShardLoader
from gpt2train.model import GPT
from gpt2train.sample import sample
from gpt2train.training.distributed import Dist
from gpt2train.training.hellaswag import (MAX_BATCH_TOKENS, HellaSwagItem, load_hellaswag, local_hellaswag_file,
                                          score_hellaswag)
from gpt2train.training.plots import plot_training
from gpt2train.training.runs import MetricsLog

log = logging.getLogger(__name__)


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader: ShardLoader, batches: int, device: str, d: Dist) -> float:
    """The mean loss over `batches` batches of `loader` from its start, averaged over the ranks."""
    model.eval()
    loader.reset()
    total = torch.zeros((), device=device)
    for _ in range(batches):
        x, y = loader.next_batch()
        total += model(x.to(device), y.to(device))[1]
    d.all_reduce(total)
    model.train()
    return (total / (batches * d.world)).item()


def sample_text(model: GPT, tokens: int, seed: int, device: str) -> str:
    """A sample from <|endoftext|> (top-k 40), on its own generator: training RNG is untouched.
    `gpt2train sample CHECKPOINT --seed <train.seed>` draws the same text."""
    return sample(model, tokens=tokens, top_k=40, seed=seed, device=device)[0]


def hellaswag_every(t: TrainConfig) -> int:
    """train.hellaswag_every, where -1 is llm.c's `-h 1`: with every validation."""
    return t.val_every if t.hellaswag_every == -1 else t.hellaswag_every


def load_in_loop_hellaswag(t: TrainConfig, data_dir: str, d: Dist) -> list[HellaSwagItem] | None:
    """The items in-loop HellaSwag scores, or None when it is off."""
    if hellaswag_every(t) <= 0:
        return None
    if d.local_rank == 0:  # a URL is downloaded once per node, the other ranks read that copy
        local_hellaswag_file(t.hellaswag_file, data_dir)
    d.barrier()
    return load_hellaswag(local_hellaswag_file(t.hellaswag_file, data_dir), t.hellaswag_items)


@dataclass
class InLoopEvals:
    """The evals of the weights after a step, when due: written to metrics.jsonl, logged, plotted."""

    t: TrainConfig
    model: GPT                   # HellaSwag scores the model itself (any rank's copy is whole)
    ddp_model: torch.nn.Module   # validation runs through the wrapped one, as training does
    val_loader: ShardLoader | None
    hellaswag: list[HellaSwagItem] | None
    autocast: Callable[[], contextlib.AbstractContextManager]
    checkpoint_due: Callable[[int], bool]
    metrics: MetricsLog
    plot: Path
    plot_title: str
    max_steps: int
    device: str
    d: Dist

    def due(self, step: int, every: int) -> bool:
        return step % every == 0 or self.checkpoint_due(step)

    def __call__(self, step: int) -> float | None:
        """Val loss and HellaSwag of the weights after `step` updates, when due; returns the val loss."""
        t, d = self.t, self.d
        val_loss = None
        if self.val_loader is not None and self.due(step, t.val_every):
            with self.autocast():
                val_loss = evaluate(self.ddp_model, self.val_loader, t.val_batches, self.device, d)
            self.metrics.write({"step": step, "val_loss": val_loss})
            if d.is_main:
                log.info("step %d/%d | val loss %.6f", step, self.max_steps, val_loss)
        hs_due = self.hellaswag is not None and step > 0 and self.due(step, hellaswag_every(t))  # llm.c: not at 0
        if hs_due:
            with self.autocast():
                hs = score_hellaswag(self.model, self.hellaswag, self.device, d.rank, d.world,
                                     batch_tokens=min(t.batch_size * t.seq_len, MAX_BATCH_TOKENS))
            self.metrics.write({"step": step, "hellaswag_acc_norm": hs["acc_norm"], "hellaswag_acc": hs["acc"],
                                "hellaswag_n": hs["n"]})
            if d.is_main:
                log.info("step %d/%d | HellaSwag acc_norm %.4f (%d items, llm.c scorer)", step, self.max_steps,
                         hs["acc_norm"], hs["n"])
        if (val_loss is not None or hs_due) and d.is_main:
            plot_training(self.metrics.path, self.plot, title=self.plot_title,
                          shape=(self.model.config.n_layer, self.model.config.n_embd))
        return val_loss
