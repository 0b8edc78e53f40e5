"""Fault injection helpers shared by the fault tests (docs/reliability.md): trainer processes and torchrun
jobs started, held, killed and cleaned up; what a killed run left on disk."""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
from safetensors.torch import load_file

from gpt2train.failpoints import ENV as FAILPOINTS_ENV
from gpt2train.failpoints import RELEASE_ENV
from gpt2train.fileio import sha256_file
from gpt2train.layout import STEP_DIR
from gpt2train.training.checkpoint import checkpoint_state
from gpt2train.training.runs import read_metrics_file
from tests.paths import REPO

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


def train_env(failpoints: str = "", release: Path | None = None) -> dict[str, str]:
    """The trainer's environment: one thread count for every launch (CPU kernels are bitwise reproducible
    for a fixed count) and the failpoints (gpt2train/failpoints.py) this launch fires, if any; a `hold`
    failpoint waits until `release` exists."""
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    env.pop(FAILPOINTS_ENV, None)
    env.pop(RELEASE_ENV, None)
    if failpoints:
        env[FAILPOINTS_ENV] = failpoints
    if release is not None:
        env[RELEASE_ENV] = str(release)
    return env


def held(failpoint: str, release: Path) -> dict[str, str]:
    """The environment that holds a trainer (every rank of it) at `failpoint` until `release` exists:
    what a test needs to act on a run in a known state, whatever the machine's speed."""
    return {FAILPOINTS_ENV: f"{failpoint}=hold", RELEASE_ENV: str(release)}


def start_training(data: Path, out: Path, sets: tuple[str, ...], log: Path, failpoints: str = "",
                   release: Path | None = None) -> subprocess.Popen:
    """`python -m gpt2train.train --config tiny` as its own process (stdout and stderr into `log`)."""
    args = [sys.executable, "-m", "gpt2train.train", "--config", "tiny", f"--set=data_dir={data}",
            f"--set=train.out_dir={out}", *(f"--set={s}" for s in sets)]
    with open(log, "w") as f:
        return subprocess.Popen(args, stdout=f, stderr=subprocess.STDOUT, env=train_env(failpoints, release),
                                cwd=REPO)


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


# --------------------------------------------------------------------------------------------- torchrun jobs

# The settings of every 2-rank job here: 256 tokens a step, a checkpoint every 2 steps (2 kept).
TWO_RANK_SETS = ("train.batch_size=2", "train.total_batch_tokens=256", "train.checkpoint_every=2",
                 "train.keep_last=2", "train.val_every=4", "train.val_batches=1", "train.warmup_steps=2",
                 "train.hellaswag_every=0", "train.sample_tokens=4")
# torchrun polls its workers every --monitor-interval (0.1 s by default); on a failure it sends the
# others SIGTERM and SIGKILL after --shutdown-timeout (30 s by default), then exits. 30 s of slack
# for this loaded 2-core machine; measured: ~2 s.
STOP_BOUND_S = 60
# torch 2.13's torchrun keeps one TCPStore across restarts (its agent hosts it for the workers), so
# the restarted workers' init_process_group can read attempt 0's gloo addresses: "Gloo
# connectFullMesh failed ... Connection refused", or a hang in init_process_group (pytorch/pytorch
# #135712, back in this version). Here with a plain gloo script: 2 of 8 restarts came up, 5 failed,
# 1 hung; with the store not shared, 8 of 8 came up. A restartable launch needs this setting.
RESTARTABLE = {"TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1"}


class TorchrunJob:
    """`torchrun --standalone --nproc_per_node=2 -m gpt2train.train` with stdout and stderr in `log`.
    Remembers every worker it has seen, so `cleanup` can kill them all: torchrun starts each worker
    in its own session, so killing torchrun's process group does not reach them."""

    def __init__(self, data: Path, out: Path, log: Path, sets: tuple[str, ...], *torchrun_args: str,
                 env: dict[str, str] | None = None):
        self.out, self.log = out, log
        env = {**train_env(), **(env or {})}
        env["OMP_NUM_THREADS"] = "1"  # 2 ranks on 2 cores; the same for every launch (bitwise equality)
        args = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *torchrun_args,
                "-m", "gpt2train.train", "--config", "tiny", f"--set=data_dir={data}", f"--set=train.out_dir={out}",
                *(f"--set={s}" for s in sets)]
        with open(log, "w") as f:
            self.proc = subprocess.Popen(args, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=REPO,
                                         start_new_session=True)
        self.seen: dict[int, psutil.Process] = {}

    def workers(self, restart: int | None = None) -> dict[int, psutil.Process]:
        """The running trainer processes by RANK (of torchrun attempt `restart` if given)."""
        found = {}
        with contextlib.suppress(psutil.NoSuchProcess):
            for child in psutil.Process(self.proc.pid).children(recursive=True):
                self.seen[child.pid] = child
                try:
                    env = child.environ()
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
                # Between fork and exec a child still shows torchrun's environment: no RANK yet.
                if "RANK" in env and (restart is None or env.get("TORCHELASTIC_RESTART_COUNT") == str(restart)):
                    found[int(env["RANK"])] = child
        return found

    def wait_for_workers(self, restart: int, timeout: float = 120) -> dict[int, psutil.Process]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.workers(restart)
            if len(found) == 2:
                return found
            assert self.proc.poll() is None, f"torchrun exited ({self.proc.returncode}):\n{self.output()[-3000:]}"
            time.sleep(0.05)
        raise TimeoutError(f"attempt {restart}'s workers did not start within {timeout} s:\n{self.output()[-3000:]}")

    def wait_for_step(self, step: int, timeout: float = 180) -> None:
        """Until rank 0 logged train step `step` (every step before it is done)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.workers()  # remember the workers while they run
            if any("loss" in r and r["step"] >= step for r in read_metrics_file(self.out / "metrics.jsonl")):
                return
            assert self.proc.poll() is None, f"torchrun exited ({self.proc.returncode}):\n{self.output()[-3000:]}"
            time.sleep(0.05)
        raise TimeoutError(f"step {step} was not logged within {timeout} s:\n{self.output()[-3000:]}")

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def alive(self) -> list[psutil.Process]:
        """Workers ever seen that still run (a zombie has ended; psutil guards against pid reuse)."""
        return [p for p in self.seen.values() if not is_gone(p)]

    def cleanup(self) -> None:
        """Kill whatever is left of the job: torchrun and every worker it started. torchrun is
        stopped first (SIGSTOP) so it starts no worker between the listing and its kill."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGSTOP)
            self.workers()
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            self.proc.wait(timeout=30)
        left = self.alive()
        for p in left:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()
        assert gone_within(left, 10), f"workers still running after SIGKILL: {[p.pid for p in left]}"


def gone_within(procs: list[psutil.Process], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(is_gone(p) for p in procs):
            return True
        time.sleep(0.01)
    return False


def is_gone(p: psutil.Process) -> bool:
    try:
        return not p.is_running() or p.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True
