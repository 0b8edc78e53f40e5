"""Where an eval report runs: `evals.device`, and what `auto` picks while a training run is on the GPUs.

    choice = eval_device(cfg)        # the real inputs: torch's GPU count, CUDA_VISIBLE_DEVICES, the runs
    choice.device                    # "cuda:2", "cpu", ... (what torch and lm-eval are given)
    choice.reason                    # one line saying why; the report, its lineage and the Dagster run show it

`auto` (the default) never shares a GPU with a training run on this host. A local launch runs
torchrun with launch.nproc_per_node processes and rank r trains on `cuda:LOCAL_RANK`, so a run
occupies the first nproc_per_node GPUs this host's processes see (CUDA_VISIBLE_DEVICES order: the
run workers of one deployment inherit the same one). `auto` takes, in order:

1. the CPU when no GPU is visible;
2. `cuda:0` when no training run of this data dir is active on this host. Active: the writer lock
   its rank 0 holds for the whole run (`<data_dir>/runs/.<tag>.lock`, gpt2train/locks.py) is held
   (the kernel's /proc/locks lists it: looked at, never taken, so a trainer starting meanwhile is
   never refused) and the file names this host as the holder's. A holder on another host (a Slurm
   job's node, a Kubernetes training pod) is not on this host's GPUs; one that has exited left the
   file, not the lock. Without /proc/locks (not Linux) the holder's pid being alive stands in;
3. `cuda:N`, the first GPU the launch does not use (N = launch.nproc_per_node), when there is one;
4. else the CPU.

The CPU, not waiting for training to end: the evals exist to watch a run while it trains, and a
waiting eval would hold a Dagster run (and its queue slot) for days, one per checkpoint, to deliver
every report at the end. On the CPU the report comes while the run goes on, at a cost that
`evals.limit` bounds, and the trainer's GPU memory is never touched (at 1558M the trainer fills
~57-80 GB of an 80 GB GPU; the eval's model and activations on the same GPU could push rank 0
out of memory). Where that is too slow, give the evals a GPU of their own (launch.nproc_per_node
below the GPU count, or a separate eval pod / node) or name one: `cpu`, `cuda`, `cuda:N` are used as
given, without these checks.

Runs outside this data dir are not seen; a run launched with another launch.nproc_per_node than this
config's is counted with this config's; a run training on the CPU (gloo) counts as on the GPUs (the
safe side).
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from gpt2train.config import Config
from gpt2train.layout import runs_root
from gpt2train.locks import lock_path_for


@dataclass(frozen=True)
class EvalDevice:
    device: str
    """What torch and lm-eval are given: `cpu`, `cuda:1`, ..."""
    requested: str
    """evals.device as configured (`auto`, `cpu`, `cuda:1`, ...)."""
    reason: str
    """Why this device, in one line."""

    def to_dict(self) -> dict[str, str]:
        return {"device": self.device, "requested": self.requested, "reason": self.reason}


def choose_eval_device(requested: str, *, gpu_count: int, visible: list[str] | None, training_runs: list[str],
                       nproc_per_node: int) -> EvalDevice:
    """The policy, on its inputs alone. gpu_count: GPUs this process sees; visible: CUDA_VISIBLE_DEVICES
    as a list (None when unset: the GPUs are numbered as the driver numbers them); training_runs: the tags
    of the training runs active on this host; nproc_per_node: the GPUs such a run trains on, the first
    ones this host's processes see."""
    if requested != "auto":
        return EvalDevice(requested, requested, f"evals.device={requested}, as configured")
    if gpu_count == 0:
        why = "CUDA_VISIBLE_DEVICES is empty" if visible == [] else "no GPU visible"
        return EvalDevice("cpu", requested, f"{why}: the CPU")
    if not training_runs:
        return EvalDevice("cuda:0", requested, f"no training run active on this host: {_gpu_name(0, visible)}")
    runs = ", ".join(training_runs)
    used = min(nproc_per_node, gpu_count)
    taken = f"training run {runs} is on {_gpu_range(used, visible)} (launch.nproc_per_node={nproc_per_node})"
    if used < gpu_count:
        return EvalDevice(f"cuda:{used}", requested, f"{taken}: {_gpu_name(used, visible)}, which the launch "
                                                     f"does not use")
    return EvalDevice("cpu", requested, f"{taken}, every GPU visible here: the CPU, never a training GPU "
                                        f"(set evals.device to override)")


def eval_device(cfg: Config) -> EvalDevice:
    """`choose_eval_device` on this process's GPUs, CUDA_VISIBLE_DEVICES and the data dir's active runs."""
    if cfg.evals.device != "auto":
        return choose_eval_device(cfg.evals.device, gpu_count=0, visible=None, training_runs=[],
                                  nproc_per_node=cfg.launch.nproc_per_node)
    import torch

    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    visible = None if env is None else [d.strip() for d in env.split(",") if d.strip()]
    return choose_eval_device("auto", gpu_count=torch.cuda.device_count(), visible=visible,
                              training_runs=active_training_runs(cfg), nproc_per_node=cfg.launch.nproc_per_node)


def active_training_runs(cfg: Config) -> list[str]:
    """The run tags (folder names) of the data dir's training runs whose rank 0 is alive on this host."""
    locks = sorted(runs_root(cfg.data_dir).glob(".*.lock")) if runs_root(cfg.data_dir).is_dir() else []
    if cfg.train.out_dir:  # a run trained outside <data_dir>/runs: its lock lies beside its folder
        locks.append(lock_path_for(Path(cfg.train.out_dir)))
    host = socket.gethostname()
    runs = []
    for lock in locks:
        try:
            holder = json.loads(lock.read_text())
            pid, on = int(holder["pid"]), holder["host"]
        except (OSError, ValueError, KeyError, TypeError):  # none, or being rewritten by a new holder
            continue
        held = _flock_held(lock)
        if on == host and (held if held is not None else _alive(pid)):
            runs.append(lock.name.removeprefix(".").removesuffix(".lock"))
    return sorted(set(runs))


def _flock_held(path: Path, proc_locks: str = "/proc/locks") -> bool | None:
    """Whether some process holds a flock on `path`, from the kernel's table of locks (Linux), without
    taking it; None where that table cannot be read."""
    try:
        table = Path(proc_locks).read_text()
        st = path.stat()
    except OSError:
        return None
    # A line: "1: FLOCK  ADVISORY  WRITE 4242 fd:01:1234567 0 EOF" (major:minor in hex, the inode in decimal).
    wanted = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    return any(len(f := line.split()) > 5 and f[1] == "FLOCK" and f[5] == wanted for line in table.splitlines())


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def _gpu_name(i: int, visible: list[str] | None) -> str:
    return f"cuda:{i}" + (f" (CUDA_VISIBLE_DEVICES {visible[i]})" if visible and i < len(visible) else "")


def _gpu_range(n: int, visible: list[str] | None) -> str:
    gpus = "cuda:0" if n == 1 else f"cuda:0-{n - 1}"
    return gpus + (f" (CUDA_VISIBLE_DEVICES {','.join(visible[:n])})" if visible else "")
