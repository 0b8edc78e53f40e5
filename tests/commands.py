"""The project's commands as a user runs them, each in a process of its own: the `gpt2train` console script,
`python -m gpt2train.train` and `torchrun` of it. They inherit the tests' environment
(tests/fixtures/environment.py); `env_extra` adds to it for one command."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.paths import REPO


def gpt2train(*args, env_extra: dict[str, str] | None = None, cwd: Path | None = None,
              timeout: float = 300) -> subprocess.CompletedProcess:
    """`gpt2train -q ARGS...` through the installed console script."""
    exe = shutil.which("gpt2train") or pytest.fail("the gpt2train console script is not installed (pip install -e .)")
    return subprocess.run([exe, "-q", *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=timeout,
                          env={**os.environ, **(env_extra or {})})


def train_command(shard_dir: Path, out: Path, *sets: str, env_extra: dict[str, str] | None = None
                  ) -> subprocess.CompletedProcess:
    """`python -m gpt2train.train --config tiny` on the shards of `shard_dir` into `out`, as its own process."""
    return subprocess.run([sys.executable, "-m", "gpt2train.train", "--config", "tiny", f"--set=data_dir={shard_dir}",
                           f"--set=train.out_dir={out}", *(f"--set={s}" for s in sets)],
                          capture_output=True, text=True, cwd=REPO, timeout=300,
                          env={**os.environ, **(env_extra or {})})


# What the 2-rank torchrun tests share: 3 steps of 512 tokens, no validation, no checkpoint but the last.
DDP_COMMON = ("train.max_steps=3", "train.val_every=0", "train.checkpoint_every=0", "train.total_batch_tokens=512",
              "train.warmup_steps=2")


def torchrun(shard_dir: Path, out: Path, *sets: str) -> None:
    """`torchrun --standalone --nproc_per_node=2 -m gpt2train.train --config tiny` (B=2 a rank, DDP_COMMON, then
    `sets`: a later --set wins), one thread a rank; it must succeed."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = [f"--set=data_dir={shard_dir}", f"--set=train.out_dir={out}", "--set=train.batch_size=2",
            *(f"--set={c}" for c in (*DDP_COMMON, *sets))]
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                        "-m", "gpt2train.train", "--config", "tiny", *args],
                       capture_output=True, text=True, env=env, cwd=REPO, timeout=280)
    assert r.returncode == 0, r.stderr[-3000:]


def metrics(out: Path) -> list[dict]:
    """Every record of a run's metrics.jsonl, in order."""
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
