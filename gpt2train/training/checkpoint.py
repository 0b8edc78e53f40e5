"""Checkpoints: one directory per step, complete or ignored, never unpickled unsafely.

    <run>/checkpoints/step_00001000/
        model.safetensors          weights (fp32 master copy; the tied lm_head stored once)
        optimizer_rank{r}.pt       optimizer state of rank r (ZeRO-1: its shard), tensors only
        rng_rank{r}.pt             torch CPU (and CUDA) RNG state of rank r
        loader_rank{r}.json        data loader position of rank r (gpt2train/data/loader.py)
        state.json                 step, world size, config, metrics, lineage, model_sha256
        DONE                       written last: only directories with it are loaded

A checkpoint's identity outside the run is its key, `<run directory name>@step_XXXXXXXX`
(`checkpoint_key` in gpt2train/layout.py), and its content hash, the sha256 of `model.safetensors`
(`model_sha256` in state.json): the Dagster `checkpoints` partition key and data version.

Every rank writes its own files into `.step_<n>.tmp/`; after a barrier rank 0 writes
`state.json` and `DONE`, then renames the directory into place. A crash at any point
leaves either the previous complete checkpoints or a temp directory that resume skips
(and the next save removes, along with any other `.step_*.tmp`). A full disk removes the
temp directory and says so (`CheckpointDiskFull`). Pruning renames a checkpoint out of the
`step_*` namespace before deleting it, so a crash mid-delete never leaves a partial
directory that looks complete. Loading uses safetensors and `torch.load(weights_only=True)`.
The `failpoint`s mark where the fault tests kill a save (tests/test_fault_kill_resume.py).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from pickle import UnpicklingError
from typing import TYPE_CHECKING, Any, Callable

from gpt2train.errors import DataError, Gpt2TrainError
from gpt2train.failpoints import failpoint
from gpt2train.fileio import is_disk_full, read_json, replace_dir, sha256_file, write_json_atomic
from gpt2train.layout import STEP_DIR, step_dir

if TYPE_CHECKING:
    import torch

# torch and safetensors are imported where tensors are read or written: the Dagster code location
# (and every run worker it starts) imports this module for its paths and state.json alone, and
# torch's import costs a data or summary run ~3.5 s of its start.

DONE = "DONE"


def complete_checkpoints(root: str | Path) -> list[Path]:
    """Complete checkpoint directories under `root`, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if STEP_DIR.match(p.name) and (p / DONE).is_file()]
    return sorted(found, key=lambda p: int(STEP_DIR.match(p.name)[1]))


def latest_checkpoint(root: str | Path) -> Path | None:
    done = complete_checkpoints(root)
    return done[-1] if done else None


def save_checkpoint(root: str | Path, step: int, *, model_state: dict[str, torch.Tensor] | None,
                    optimizer_state: dict, loader_state: dict, state: dict[str, Any] | None,
                    rank: int = 0, barrier: Callable[[], None] = lambda: None) -> Path:
    """Collective: every rank calls it. Rank 0 passes `model_state` and `state` (others None)."""
    from safetensors.torch import save_file

    root = Path(root)
    final = step_dir(root, step)
    tmp = root / f".{final.name}.tmp"
    if rank == 0:
        root.mkdir(parents=True, exist_ok=True)
        for stale in [*root.glob(".step_*.tmp"), *root.glob(".step_*.deleting")]:  # left by crashed saves/prunes
            shutil.rmtree(stale, ignore_errors=True)
        tmp.mkdir()
        failpoint("checkpoint.tmp_created")
    barrier()
    try:
        _write_rank_files(tmp, rank, optimizer_state, loader_state)
        failpoint("checkpoint.rank_files_written")
        if rank == 0:
            # safetensors refuses tensors that share memory: the tied lm_head is rebuilt on load.
            save_file({k: v.detach().contiguous().cpu() for k, v in model_state.items() if k != "lm_head.weight"},
                      tmp / "model.safetensors")
            failpoint("checkpoint.model_written")
        barrier()
        if rank == 0:
            write_json_atomic(tmp / "state.json", {"artifact": "checkpoint", "step": step, **(state or {}),
                                                   "model_sha256": sha256_file(tmp / "model.safetensors")})
            failpoint("checkpoint.state_written")
            for f in tmp.iterdir():  # data on disk before the directory claims to be complete
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
            (tmp / DONE).write_text("complete\n")
            failpoint("checkpoint.done_written")
            replace_dir(tmp, final)  # the same step saved again replaces the old one whole
    except BaseException as e:
        if not is_disk_full(e):
            raise
        shutil.rmtree(tmp, ignore_errors=True)
        raise CheckpointDiskFull(root, step) from e
    barrier()
    return final


def _write_rank_files(tmp: Path, rank: int, optimizer_state: dict, loader_state: dict) -> None:
    # Through Python file objects: on a full disk torch.save's own writer reports only "unexpected
    # pos", while this way the OSError(ENOSPC) is kept as the error's context.
    import torch

    rng = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state()
    for name, obj in ((f"optimizer_rank{rank}.pt", optimizer_state), (f"rng_rank{rank}.pt", rng)):
        with open(tmp / name, "wb") as f:
            torch.save(obj, f)
    with open(tmp / f"loader_rank{rank}.json", "w") as f:
        f.write(json.dumps(loader_state))


class CheckpointDiskFull(DataError):
    def __init__(self, root: Path, step: int):
        free = shutil.disk_usage(root).free if root.exists() else 0
        latest = latest_checkpoint(root)
        super().__init__(
            f"disk full while writing the step-{step} checkpoint into {root} ({free / 2**20:.1f} MiB free on its "
            f"filesystem); its partial files were removed and the earlier checkpoints are intact (latest complete: "
            f"{latest or 'none'}). Free space there, or keep fewer checkpoints (train.keep_last), then run again: "
            f"training resumes from the latest complete checkpoint.")


def checkpoint_state(path: str | Path, verify_hash: bool = False) -> dict[str, Any]:
    """state.json of a complete checkpoint, with `model_sha256` (hashed now if the checkpoint predates
    it; with `verify_hash`, re-hashed and checked against the recorded one). Every way a directory
    can fail to be a complete checkpoint is an error saying which."""
    path = Path(path)
    if not path.exists():
        raise Gpt2TrainError(f"checkpoint {path} does not exist: it was deleted (pruned by train.keep_last, "
                             f"or the run was removed) or the path is wrong; use a complete checkpoint from "
                             f"<run>/checkpoints/step_XXXXXXXX, or rerun training")
    if not path.is_dir():
        raise Gpt2TrainError(f"checkpoint {path} is not a directory; pass a <run>/checkpoints/step_XXXXXXXX folder")
    has = {name: (path / name).is_file() for name in (DONE, "state.json", "model.safetensors")}
    if not any(has.values()):
        raise Gpt2TrainError(f"{path} is not a checkpoint (no {DONE}, state.json or model.safetensors); "
                             f"pass a <run>/checkpoints/step_XXXXXXXX folder")
    if not has[DONE]:
        raise Gpt2TrainError(f"checkpoint {path} has no {DONE} marker: it is incomplete (a crash during the "
                             f"save, or still being written); use a complete checkpoint of the run instead")
    for name in ("state.json", "model.safetensors"):
        if not has[name]:
            raise Gpt2TrainError(f"checkpoint {path} has {DONE} but no {name}: it was damaged after the save; "
                                 f"use another checkpoint of the run")
    state = read_json(path / "state.json", "checkpoint state")
    recorded = state.get("model_sha256")
    if recorded is None or verify_hash:
        actual = sha256_file(path / "model.safetensors")
        if recorded is not None and recorded != actual:
            raise Gpt2TrainError(f"checkpoint {path}: model.safetensors has sha256 {actual} but state.json "
                                 f"records {recorded}: the weights changed after the save; use another checkpoint")
        state["model_sha256"] = actual
    return state


def load_checkpoint(path: str | Path, rank: int = 0, weights_only: bool = False) -> dict[str, Any]:
    """Weights, this rank's optimizer/RNG/loader state and the run state of a complete checkpoint
    (`weights_only`: just the weights and the run state)."""
    from safetensors.torch import load_file

    path = Path(path)
    if not (path / DONE).is_file():
        raise Gpt2TrainError(f"checkpoint {path} has no {DONE} marker: it is incomplete (a crash during the "
                             f"save) or not a checkpoint; use a complete one (`latest_checkpoint` skips these)")
    if weights_only:
        model = load_file(path / "model.safetensors")
        model["lm_head.weight"] = model["transformer.wte.weight"]
        return {"model": model, "state": json.loads((path / "state.json").read_text())}
    optimizer_file = path / f"optimizer_rank{rank}.pt"
    if not optimizer_file.exists():
        raise Gpt2TrainError(f"checkpoint {path} has no state for rank {rank}: it was saved with fewer ranks "
                             f"({len(list(path.glob('optimizer_rank*.pt')))}); resume with that world size")
    model = load_file(path / "model.safetensors")
    if "transformer.wte.weight" in model:
        model["lm_head.weight"] = model["transformer.wte.weight"]
    return {
        "model": model,
        "optimizer": _load_tensors(optimizer_file),
        "rng": _load_tensors(path / f"rng_rank{rank}.pt"),
        "loader": json.loads((path / f"loader_rank{rank}.json").read_text()),
        "state": json.loads((path / "state.json").read_text()),
    }


def _load_tensors(file: Path) -> Any:
    import torch

    try:
        return torch.load(file, weights_only=True, map_location="cpu")
    except UnpicklingError as e:  # weights_only refused an object: it was never unpickled
        # torch's message is a page of advice on loading it anyway; keep only what it refused.
        why = next((line.split("WeightsUnpickler error:", 1)[1].strip() for line in str(e).splitlines()
                    if "WeightsUnpickler error:" in line), "an object that is not a tensor").split(". ")[0]
        raise Gpt2TrainError(f"checkpoint file {file} holds objects other than tensors (refused, not unpickled: "
                             f"{why}); gpt2train never writes such files: delete this checkpoint and use "
                             f"another") from None


def restore_rng(rng: dict[str, torch.Tensor]) -> None:
    import torch

    torch.set_rng_state(rng["cpu"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state(rng["cuda"])


def prune_checkpoints(root: str | Path, keep_last: int, major_every: int = 0) -> list[Path]:
    """Delete complete checkpoints beyond the newest `keep_last`, sparing steps that are multiples of
    `major_every` (llm.c's -nk / -nm). Returns the deleted directories. keep_last <= 0 keeps all."""
    if keep_last <= 0:
        return []
    done = complete_checkpoints(root)
    deleted = []
    for p in done[:-keep_last]:
        step = int(STEP_DIR.match(p.name)[1])
        if major_every and step % major_every == 0:
            continue
        # Out of the step_* namespace first (one atomic rename), then deleted: a crash mid-delete
        # leaves a `.step_*.deleting` folder that the next save removes, never a partial step_*.
        doomed = p.with_name(f".{p.name}.deleting")
        os.replace(p, doomed)
        failpoint("checkpoint.prune_renamed")
        shutil.rmtree(doomed)
        deleted.append(p)
    return deleted
