"""Fault injection helpers shared by the fault tests (docs/reliability.md)."""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import sys
import time
from pathlib import Path

from safetensors.torch import load_file

from gpt2train.layout import STEP_DIR
from gpt2train.training.checkpoint import checkpoint_state
from gpt2train.fileio import sha256_file
from gpt2train.training.runs import read_metrics_file
from tests.conftest import REPO, TIKTOKEN_DIR

TIMING_KEYS = ("ms", "tok_s", "mem_mb", "mfu")


class FullDiskFile:
    """Wraps a real file; writes fail with ENOSPC once `budget` bytes were written (a full disk)."""

    def __init__(self, f, budget: int):
        self._f, self.budget = f, budget

    def write(self, data):
        if len(data) > self.budget:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.budget -= len(data)
        return self._f.write(data)

    def __getattr__(self, name):
        return getattr(self._f, name)


def train_env(failpoints: str = "") -> dict[str, str]:
    # One thread count for every launch: CPU kernels are bitwise reproducible for a fixed count.
    env = {**os.environ, "TIKTOKEN_CACHE_DIR": str(TIKTOKEN_DIR), "OMP_NUM_THREADS": "2"}
    env.pop("GPT2TRAIN_FAILPOINTS", None)
    if failpoints:
        env["GPT2TRAIN_FAILPOINTS"] = failpoints
    return env


def start_training(data: Path, out: Path, sets: tuple[str, ...], log: Path, failpoints: str = "") -> subprocess.Popen:
    """`python -m gpt2train.train --config tiny` as its own process (stdout and stderr into `log`)."""
    args = [sys.executable, "-m", "gpt2train.train", "--config", "tiny", f"--set=data_dir={data}",
            f"--set=train.out_dir={out}", *(f"--set={s}" for s in sets)]
    with open(log, "w") as f:
        return subprocess.Popen(args, stdout=f, stderr=subprocess.STDOUT, env=train_env(failpoints), cwd=REPO)


def wait_for_text(path: Path, text: str, proc: subprocess.Popen, timeout: float = 120) -> bool:
    """Wait until `text` shows in `path` (True) or the process ends first (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(FileNotFoundError):
            if text in path.read_text():
                return True
        if proc.poll() is not None:
            return False
        time.sleep(0.01)
    raise TimeoutError(f"{text!r} did not appear in {path} within {timeout} s")


def without_timings(records: list[dict]) -> list[dict]:
    """Metrics records without the wall-clock fields: what must be bitwise reproducible."""
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in records]


def loss_log(out: Path) -> list[dict]:
    return without_timings(read_metrics_file(out / "metrics.jsonl"))


def weights(out: Path, step: int) -> dict:
    """The model weights of the run `out`'s checkpoint at `step`."""
    return load_file(out / "checkpoints" / f"step_{step:08d}" / "model.safetensors")


def file_hashes(root: Path) -> dict[str, str]:
    """{path relative to root: sha256} of every file under root."""
    return {str(p.relative_to(root)): sha256_file(p) for p in sorted(root.rglob("*")) if p.is_file()}


def step_dirs(out: Path) -> list[Path]:
    root = out / "checkpoints"
    return sorted(p for p in root.iterdir() if STEP_DIR.match(p.name)) if root.is_dir() else []


def assert_visible_checkpoints_complete(out: Path) -> list[Path]:
    """Every `step_*` directory is a complete checkpoint whose weights hash to what state.json records
    (checkpoint_state raises otherwise). Returns them, oldest first."""
    dirs = step_dirs(out)
    for d in dirs:
        checkpoint_state(d, verify_hash=True)
    return dirs


def leftovers(out: Path) -> dict[str, list[str]]:
    """What a killed save or prune left behind: temp and half-deleted checkpoint folders."""
    root = out / "checkpoints"
    if not root.is_dir():
        return {"tmp": [], "deleting": []}
    return {"tmp": sorted(p.name for p in root.glob(".step_*.tmp")),
            "deleting": sorted(p.name for p in root.glob(".step_*.deleting"))}
