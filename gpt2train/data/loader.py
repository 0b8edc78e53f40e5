"""The training data loader: llm.c `.bin` shards -> (B, T) batches, DDP-aware and exactly resumable.

After llm.c's scheme (`llmc/dataloader.h`): a shard is cut into *global batches* of one
optimizer step's tokens, `world * B * T * accum` (+1 for the last target), read as `accum`
micro-batches; in micro-batch m, rank r reads the (m * world + r)-th `B * T + 1` window of the
global batch, so the ranks and micro-batches together read one contiguous global batch. With
shuffling, each epoch permutes the shard order and, within each shard, the order of its
global batches. Positions count global batches, i.e. optimizer steps: a run resumes at another
world size whenever the total batch per step is the same.

Unlike llm.c (a Mersenne Twister advanced in place), every permutation here is a pure
function of (seed, epoch, shard): the loader's whole state is three integers, so a
checkpoint stores `state_dict()` and resuming reproduces the exact same batches.

    loader = ShardLoader("data/shards/edu_fineweb_train_*.bin", B=4, T=64, rank=0, world=1, accum=2)
    x, y = loader.next_batch()   # (B, T) int64 inputs and next-token targets; accum of them make a step
"""

from __future__ import annotations

import glob as globlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from gpt2train.errors import DataError
from gpt2train.data.shards import read_header, read_tokens


@dataclass
class LoaderPosition:
    epoch: int = 0
    shard_pos: int = 0  # index into this epoch's shard order
    batch_pos: int = 0  # index into this shard's global-batch order


class ShardLoader:
    def __init__(self, pattern: str, B: int, T: int, rank: int = 0, world: int = 1, shuffle: bool = True,
                 seed: int = 1337, accum: int = 1):
        self.files = sorted(Path(p) for p in globlib.glob(pattern))
        if not self.files:
            raise DataError(f"no token shards match {pattern!r}; run `gpt2train prepare` (or `gpt2train pipeline "
                            f"--through data`) and check the pattern")
        self.B, self.T, self.rank, self.world, self.shuffle, self.seed = B, T, rank, world, shuffle, seed
        self.accum = accum
        self.global_tokens = world * B * T * accum
        self._micro = 0  # the next micro-batch of the current global batch
        # Global batches per shard: each needs global_tokens + 1 tokens (the last target).
        self.batches_per_shard = [max(0, (int(read_header(f)[2]) - 1) // self.global_tokens) for f in self.files]
        if sum(self.batches_per_shard) == 0:
            biggest = max(int(read_header(f)[2]) for f in self.files)
            raise DataError(f"shards matching {pattern!r} hold at most {biggest:,} tokens, fewer than one global "
                            f"batch of world*B*T*accum+1 = {self.global_tokens + 1:,}; lower the total batch, B or "
                            f"T, or use bigger shards")
        self.pos = LoaderPosition()
        self._tokens: np.ndarray | None = None
        self._tokens_shard = -1

    @property
    def batches_per_epoch(self) -> int:
        return sum(self.batches_per_shard)

    def shard_order(self, epoch: int) -> np.ndarray:
        n = len(self.files)
        return np.random.default_rng([self.seed, epoch]).permutation(n) if self.shuffle else np.arange(n)

    def batch_order(self, epoch: int, shard: int) -> np.ndarray:
        n = self.batches_per_shard[shard]
        return np.random.default_rng([self.seed, epoch, shard]).permutation(n) if self.shuffle else np.arange(n)

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's next micro-batch (x, y), each (B, T) int64; wraps into the next epoch."""
        pos = self.pos
        order = self.shard_order(pos.epoch)
        while pos.batch_pos >= self.batches_per_shard[order[pos.shard_pos]]:  # skip exhausted/empty shards
            pos.shard_pos, pos.batch_pos = pos.shard_pos + 1, 0
            if pos.shard_pos == len(self.files):
                pos.epoch, pos.shard_pos = pos.epoch + 1, 0
                order = self.shard_order(pos.epoch)
        shard = int(order[pos.shard_pos])
        batch = int(self.batch_order(pos.epoch, shard)[pos.batch_pos])
        start = batch * self.global_tokens + (self._micro * self.world + self.rank) * self.B * self.T
        window = torch.from_numpy(self._shard_tokens(shard)[start : start + self.B * self.T + 1].astype(np.int64))
        self._micro += 1
        if self._micro == self.accum:
            self._micro, pos.batch_pos = 0, pos.batch_pos + 1
        return window[:-1].view(self.B, self.T), window[1:].view(self.B, self.T)

    def reset(self) -> None:
        self.pos, self._micro = LoaderPosition(), 0

    def _shard_tokens(self, shard: int) -> np.ndarray:
        if shard != self._tokens_shard:
            self._tokens, self._tokens_shard = read_tokens(self.files[shard]), shard
        return self._tokens

    def state_dict(self) -> dict:
        """The position at a global-batch boundary (where checkpoints are taken)."""
        if self._micro:
            raise RuntimeError(f"loader state asked mid-step ({self._micro} of {self.accum} micro-batches read)")
        return {"epoch": self.pos.epoch, "shard_pos": self.pos.shard_pos, "batch_pos": self.pos.batch_pos,
                "seed": self.seed, "shuffle": self.shuffle, "global_tokens": self.global_tokens,
                "files": [f.name for f in self.files]}

    def load_state_dict(self, state: dict) -> None:
        """Resume at a saved position. The files and the global batch (world*B*T*accum, the tokens of a
        step) must be the same: positions count global batches, so another world size or micro-batch
        with the same total is fine."""
        if state["files"] != [f.name for f in self.files]:
            raise DataError("the shards matching the pattern differ from the ones this run started with "
                            f"({len(state['files'])} then, {len(self.files)} now); resume with the same data")
        if state["global_tokens"] != self.global_tokens:
            raise DataError(f"tokens per step changed from {state['global_tokens']:,} to {self.global_tokens:,} "
                            f"(world*B*T*accumulation): keep train.total_batch_tokens to resume, or start a new run "
                            f"(a checkpoint from before loader positions counted steps holds world*B*T here)")
        self.seed, self.shuffle = state["seed"], state["shuffle"]
        self.pos, self._micro = LoaderPosition(state["epoch"], state["shard_pos"], state["batch_pos"]), 0
