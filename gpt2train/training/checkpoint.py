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
`CheckpointState.from_dir(path)` reads a complete checkpoint's state.json into typed fields; the file
names are gpt2train/layout.py's.

Every rank writes its own files into `.step_<n>.tmp/`; after a barrier rank 0 writes
`state.json` and `DONE`, then renames the directory into place. A crash at any point
leaves either the previous complete checkpoints or a temp directory that resume skips
(and the next save removes, along with any other `.step_*.tmp`). A full disk removes the
temp directory and says so (`CheckpointDiskFull`). Pruning renames a checkpoint out of the
`step_*` namespace before deleting it, so a crash mid-delete never leaves a partial
directory that looks complete. Loading uses safetensors and `torch.load(weights_only=True)`.
The `failpoint`s mark where the fault tests kill a save (tests/test_fault_kill_resume.py).

A checkpoint kept for an instability: when an update is skipped (a non-finite step, or an outlier
under llm.c's -sl / -sg), the newest complete checkpoint saved before it is marked in its state.json
(`before_instability`: the step and why; `mark_before_instability`, temp name + rename) and pruning
(keep_last, llm.c's -nk) never deletes it: the run as it was right before the explosion stays on
disk, however many checkpoints follow. The mark is the one change to a checkpoint after its DONE;
its weights, and so its content hash, stay as they were.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, fields
from pathlib import Path
from pickle import UnpicklingError
from typing import TYPE_CHECKING, Any, Callable

from gpt2train.errors import DataError, Gpt2TrainError
from gpt2train.failpoints import failpoint
from gpt2train.fileio import (fsync_files_alike, is_disk_full, read_json, replace_dir, sha256_file,
                              write_json_atomic)
from gpt2train.layout import (
    CHECKPOINT_DONE, CHECKPOINT_STATE, CHECKPOINT_WEIGHTS, STALE_STEP_DIRS, STEP_DIR, loader_state_name,
    optimizer_shard_name, rng_state_name, step_deleting_dir, step_dir, step_temp_dir,
)

if TYPE_CHECKING:
    import torch

# torch and safetensors are imported where tensors are read or written: the Dagster code location
# (and every run worker it starts) imports this module for its paths and state.json alone, and
# torch's import costs a data or summary run ~3.5 s of its start.

DONE = CHECKPOINT_DONE  # the short name this module's messages use; tests import it from here too


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
    tmp = step_temp_dir(final)
    if rank == 0:
        root.mkdir(parents=True, exist_ok=True)
        for stale in [p for pattern in STALE_STEP_DIRS for p in root.glob(pattern)]:  # left by crashed saves/prunes
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
                      tmp / CHECKPOINT_WEIGHTS)
            failpoint("checkpoint.model_written")
        barrier()
        if rank == 0:
            write_json_atomic(tmp / CHECKPOINT_STATE, {"artifact": "checkpoint", "step": step, **(state or {}),
                                                       "model_sha256": sha256_file(tmp / CHECKPOINT_WEIGHTS)})
            failpoint("checkpoint.state_written")
            # data on disk before the directory claims to be complete; the weights (safetensors: 0600) as
            # readable as the state and optimizer files, for the export and eval processes of other users
            fsync_files_alike(tmp, like=CHECKPOINT_STATE)
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
    for name, obj in ((optimizer_shard_name(rank), optimizer_state), (rng_state_name(rank), rng)):
        with open(tmp / name, "wb") as f:
            torch.save(obj, f)
    with open(tmp / loader_state_name(rank), "w") as f:
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


@dataclass(frozen=True)
class RecordedModel:
    """config.model as a checkpoint recorded it; a field it lacks is None."""

    descriptor: str | None = None
    block_size: int | None = None


@dataclass(frozen=True)
class RecordedTrain:
    """The fields of config.train that are read back from a checkpoint; a field it lacks is None."""

    max_steps: int | None = None
    batch_size: int | None = None
    seq_len: int | None = None
    total_batch_tokens: int | None = None
    init_from: str | None = None
    train_glob: str | None = None
    val_glob: str | None = None


@dataclass(frozen=True)
class RecordedConfig:
    """The run config a checkpoint recorded (state.json's `config`), reduced to the fields read back. Not
    a gpt2train.config.Config: a record from an older gpt2train may lack keys that Config now has, or hold
    keys it no longer has."""

    data_dir: str | None = None
    model: RecordedModel = RecordedModel()
    train: RecordedTrain | None = None  # None: the record has no (or an empty) config.train


@dataclass(frozen=True)
class TrainingLineage:
    """state.json's `lineage`: what the run was made from (training/loop.py: run_lineage)."""

    run_tag: str | None = None
    shards_dir: str | None = None  # recorded_path of the train shards' folder; older records lack it
    train_shards: tuple[dict[str, Any], ...] = ()  # one entry per shard: file, tokens, sha256, sources
    val_shards: tuple[dict[str, Any], ...] = ()
    code_version: str | None = None
    git_commit: str | None = None
    gpt2train_version: str | None = None


BEFORE_INSTABILITY = "before_instability"  # state.json's key for the mark (see the module docstring)


@dataclass(frozen=True)
class InstabilityMark:
    """state.json's `before_instability`: this is the newest checkpoint saved before update `step`, the
    first one skipped after it (a non-finite step, or an outlier under train.skip_loss_z / skip_grad_z)."""

    step: int
    reason: str | None = None  # e.g. `loss z 41.3 > train.skip_loss_z=5`, `loss nan, grad norm nan: not finite`

    def describe(self) -> str:
        """`last checkpoint before the instability at step 5 (loss z 41.3 > train.skip_loss_z=5)`."""
        return f"last checkpoint before the instability at step {self.step}" + (
            f" ({self.reason})" if self.reason else "")


@dataclass(frozen=True)
class CheckpointState:
    """A checkpoint's state.json, read into typed fields (what training/checkpointer.py's `save` writes).

    A field the record lacks is None (or empty): checkpoints of older versions lack some, and the lineage
    walk and the eval report read whatever state.json they find. Values are kept as recorded."""

    # The whole JSON (from_dir fills in model_sha256), for what is passed on whole: a run's lineage as
    # metadata (training/runs.py), the data dir its paths are relative to (lineage/records.py: sidecar_data_dir).
    record: dict[str, Any]
    step: int | None
    model_sha256: str | None  # sha256 of the checkpoint's weights; from_dir always sets it
    loss: float | None
    val_loss: float | None
    created_at: str | None
    world: int | None         # how many ranks saved it (each wrote its optimizer, RNG and loader files)
    kernels: str | None       # the hot-path ops it was trained with: triton or torch
    config: RecordedConfig
    lineage: TrainingLineage | None  # None: the record has no (or an empty) lineage
    before_instability: InstabilityMark | None = None  # kept out of pruning: the last one before an instability

    @property
    def run_tag(self) -> str | None:
        return self.lineage.run_tag if self.lineage else None

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> CheckpointState:
        """The typed view of a state.json already read. A section that is missing, empty or not a
        mapping counts as absent: older records, and the state.json files the lineage walk meets, may
        lack any of them."""
        config = _mapping(record.get("config"))
        model, train = _mapping(config.get("model")), _mapping(config.get("train"))
        lineage = _mapping(record.get("lineage"))
        mark = _mapping(record.get(BEFORE_INSTABILITY))
        return cls(
            record=record, step=record.get("step"), model_sha256=record.get("model_sha256"),
            loss=record.get("loss"), val_loss=record.get("val_loss"), created_at=record.get("created_at"),
            world=record.get("world"), kernels=record.get("kernels"),
            config=RecordedConfig(
                data_dir=config.get("data_dir"),
                model=RecordedModel(descriptor=model.get("descriptor"), block_size=model.get("block_size")),
                train=RecordedTrain(**{f.name: train.get(f.name) for f in fields(RecordedTrain)}) if train else None),
            lineage=TrainingLineage(
                run_tag=lineage.get("run_tag"), shards_dir=lineage.get("shards_dir"),
                train_shards=tuple(lineage.get("train_shards") or ()),
                val_shards=tuple(lineage.get("val_shards") or ()),
                code_version=lineage.get("code_version"), git_commit=lineage.get("git_commit"),
                gpt2train_version=lineage.get("gpt2train_version")) if lineage else None,
            before_instability=InstabilityMark(step=mark["step"], reason=mark.get("reason"))
            if isinstance(mark.get("step"), int) else None,
        )

    @classmethod
    def from_dir(cls, path: str | Path, verify_hash: bool = False) -> CheckpointState:
        """The state of a complete checkpoint, with `model_sha256` (hashed now if the checkpoint predates
        it; with `verify_hash`, re-hashed and checked against the recorded one). Every way a directory
        can fail to be a complete checkpoint is an error saying which."""
        path = Path(path)
        _check_complete(path)
        state = read_json(path / CHECKPOINT_STATE, "checkpoint state")
        recorded = state.get("model_sha256")
        if recorded is None or verify_hash:
            actual = sha256_file(path / CHECKPOINT_WEIGHTS)
            if recorded is not None and recorded != actual:
                raise Gpt2TrainError(f"checkpoint {path}: {CHECKPOINT_WEIGHTS} has sha256 {actual} but "
                                     f"{CHECKPOINT_STATE} records {recorded}: the weights changed after the save; "
                                     f"use another checkpoint")
            state["model_sha256"] = actual
        return cls.from_record(state)


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _check_complete(path: Path) -> None:
    if not path.exists():
        raise Gpt2TrainError(f"checkpoint {path} does not exist: it was deleted (pruned by train.keep_last, "
                             f"or the run was removed) or the path is wrong; use a complete checkpoint from "
                             f"<run>/checkpoints/step_XXXXXXXX, or rerun training")
    if not path.is_dir():
        raise Gpt2TrainError(f"checkpoint {path} is not a directory; pass a <run>/checkpoints/step_XXXXXXXX folder")
    has = {name: (path / name).is_file() for name in (DONE, CHECKPOINT_STATE, CHECKPOINT_WEIGHTS)}
    if not any(has.values()):
        raise Gpt2TrainError(f"{path} is not a checkpoint (no {DONE}, {CHECKPOINT_STATE} or {CHECKPOINT_WEIGHTS}); "
                             f"pass a <run>/checkpoints/step_XXXXXXXX folder")
    if not has[DONE]:
        raise Gpt2TrainError(f"checkpoint {path} has no {DONE} marker: it is incomplete (a crash during the "
                             f"save, or still being written); use a complete checkpoint of the run instead")
    for name in (CHECKPOINT_STATE, CHECKPOINT_WEIGHTS):
        if not has[name]:
            raise Gpt2TrainError(f"checkpoint {path} has {DONE} but no {name}: it was damaged after the save; "
                                 f"use another checkpoint of the run")


def checkpoint_state(path: str | Path, verify_hash: bool = False) -> dict[str, Any]:
    """state.json of a complete checkpoint as a dict: `CheckpointState.from_dir(path, verify_hash).record`."""
    return CheckpointState.from_dir(path, verify_hash).record


def load_checkpoint(path: str | Path, rank: int = 0, weights_only: bool = False) -> dict[str, Any]:
    """Weights, this rank's optimizer/RNG/loader state and the run state of a complete checkpoint
    (`weights_only`: just the weights and the run state)."""
    from safetensors.torch import load_file

    path = Path(path)
    if not (path / DONE).is_file():
        raise Gpt2TrainError(f"checkpoint {path} has no {DONE} marker: it is incomplete (a crash during the "
                             f"save) or not a checkpoint; use a complete one (`latest_checkpoint` skips these)")
    if weights_only:
        model = load_file(path / CHECKPOINT_WEIGHTS)
        model["lm_head.weight"] = model["transformer.wte.weight"]
        return {"model": model, "state": json.loads((path / CHECKPOINT_STATE).read_text())}
    optimizer_file = path / optimizer_shard_name(rank)
    if not optimizer_file.exists():
        raise Gpt2TrainError(f"checkpoint {path} has no state for rank {rank}: it was saved with fewer ranks "
                             f"({len(list(path.glob(optimizer_shard_name('*'))))}); resume with that world size")
    model = load_file(path / CHECKPOINT_WEIGHTS)
    if "transformer.wte.weight" in model:
        model["lm_head.weight"] = model["transformer.wte.weight"]
    return {
        "model": model,
        "optimizer": _load_tensors(optimizer_file),
        "rng": _load_tensors(path / rng_state_name(rank)),
        "loader": json.loads((path / loader_state_name(rank)).read_text()),
        "state": json.loads((path / CHECKPOINT_STATE).read_text()),
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


def mark_before_instability(root: str | Path, step: int, reason: str) -> tuple[Path | None, bool]:
    """Mark the newest complete checkpoint in `root` saved before update `step` (its step < `step`) as the
    last before the instability at `step`, so that pruning keeps it. Returns (that checkpoint, or None when
    there is none; whether the mark is new). A checkpoint already marked keeps its first instability's
    step: a run that keeps skipping, or is resumed and meets the same instability again, marks nothing new.
    state.json is rewritten under a temp name and renamed: a crash leaves the old record or the new one."""
    before = [p for p in complete_checkpoints(root) if int(STEP_DIR.match(p.name)[1]) < step]
    if not before:
        return None, False
    path = before[-1]
    record = read_json(path / CHECKPOINT_STATE, "checkpoint state")
    if CheckpointState.from_record(record).before_instability is not None:
        return path, False
    record[BEFORE_INSTABILITY] = {"step": step, "reason": reason}
    write_json_atomic(path / CHECKPOINT_STATE, record)
    return path, True


def kept_before_instability(checkpoint: Path) -> InstabilityMark | None:
    """The checkpoint's mark, or None (also when its state.json cannot be read: pruned as any other)."""
    try:
        return CheckpointState.from_record(read_json(checkpoint / CHECKPOINT_STATE, "checkpoint state")
                                           ).before_instability
    except (OSError, DataError):
        return None


def prune_checkpoints(root: str | Path, keep_last: int, major_every: int = 0) -> list[Path]:
    """Delete complete checkpoints beyond the newest `keep_last`, sparing steps that are multiples of
    `major_every` (llm.c's -nk / -nm) and the last checkpoint before each instability
    (`mark_before_instability`). Returns the deleted directories. keep_last <= 0 keeps all."""
    if keep_last <= 0:
        return []
    done = complete_checkpoints(root)
    deleted = []
    for p in done[:-keep_last]:
        step = int(STEP_DIR.match(p.name)[1])
        if (major_every and step % major_every == 0) or kept_before_instability(p) is not None:
            continue
        # Out of the step_* namespace first (one atomic rename), then deleted: a crash mid-delete
        # leaves a `.step_*.deleting` folder that the next save removes, never a partial step_*.
        doomed = step_deleting_dir(p)
        os.replace(p, doomed)
        failpoint("checkpoint.prune_renamed")
        shutil.rmtree(doomed)
        deleted.append(p)
    return deleted
