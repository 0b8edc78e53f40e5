"""The process group torchrun sets up: this process's rank, the world size, its GPU."""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def all_reduce(self, tensor: torch.Tensor) -> torch.Tensor:
        """The sum over ranks, in place (nothing to do in a single process)."""
        if self.world > 1:
            dist.all_reduce(tensor)
        return tensor


def init_distributed(device_type: str) -> Dist:
    """torchrun sets RANK/WORLD_SIZE/LOCAL_RANK; without them this is a single process."""
    if "RANK" not in os.environ:
        return Dist()
    die_with_parent()  # the torchrun agent
    dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    d = Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    if device_type == "cuda":
        torch.cuda.set_device(d.local_rank)
    return d


def die_with_parent() -> None:
    """Have the kernel SIGTERM this process when the one that started it dies. Each rank calls it
    (torchrun starts ranks in sessions of their own, so a SIGKILLed agent would leave them training
    unsupervised; this way they stop, their peers' next collective fails, and the whole job ends),
    and so does pipelines/torchrun_launcher.py (a killed Dagster run process would leave torchrun
    running). Linux only (prctl); elsewhere nothing changes."""
    if not sys.platform.startswith("linux"):
        return
    agent, pr_set_pdeathsig = os.getppid(), 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != agent:  # it died in between: no signal would come any more
        os.kill(os.getpid(), signal.SIGTERM)


def destroy_distributed(d: Dist) -> None:
    if d.world > 1:
        dist.destroy_process_group()
