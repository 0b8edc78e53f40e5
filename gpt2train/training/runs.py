"""Training runs on disk (their layout: gpt2train/layout.py): their checkpoints, metrics and summary.

    find_checkpoints(runs_root(data_dir))      every complete checkpoint of every run, as CheckpointInfo
    summarize_run(run_dir)                     what the `training_run` asset reports as metadata
    MetricsLog(run / METRICS, writer=...)      metrics.jsonl as the trainer writes it
    write_run_config(cfg, run)                 the config.yaml a launched trainer reads

Used by the Dagster assets and sensor (a checkpoint becomes a `checkpoints` partition as soon as
it is complete) and by `gpt2train` without Dagster.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import statistics
from dataclasses import dataclass
from pathlib import Path

import yaml

from gpt2train.config import Config, config_to_dict
from gpt2train.errors import Gpt2TrainError
from gpt2train.fileio import atomic_output, disk_full_error, is_disk_full
from gpt2train.layout import MAIN_LOG, METRICS, RUN_CONFIG, TRAINING_PLOT, checkpoint_key, checkpoints_dir
from gpt2train.training.checkpoint import CheckpointState, complete_checkpoints


@dataclass(frozen=True)
class CheckpointInfo:
    key: str  # `<run>@step_XXXXXXXX`: the `checkpoints` partition key
    path: Path
    step: int
    model_sha256: str  # content hash: the partition's data version
    run_tag: str
    loss: float | None


def checkpoint_info(path: str | Path) -> CheckpointInfo:
    path = Path(path)
    state = CheckpointState.from_dir(path)
    return CheckpointInfo(key=checkpoint_key(path), path=path.resolve(), step=int(state.step),
                          model_sha256=state.model_sha256, run_tag=state.run_tag or path.parent.parent.name,
                          loss=state.loss)


def find_checkpoints(root: str | Path) -> list[CheckpointInfo]:
    """Every complete checkpoint under `root` (a runs folder), oldest run first, by step."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    for run in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        found += [checkpoint_info(p) for p in complete_checkpoints(checkpoints_dir(run))]
    return found


def read_metrics(run: str | Path) -> list[dict]:
    return read_metrics_file(Path(run) / METRICS)


def read_metrics_file(path: str | Path) -> list[dict]:
    """The records of a metrics.jsonl; [] if there is none. A line that is not JSON is one a
    SIGKILL tore mid-write (the trainer appends a line per record): it is dropped, and the
    resumed run writes that step again."""
    path = Path(path)
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


class MetricsLog:
    """A run's metrics.jsonl as the trainer writes it: one JSON line per record, appended by rank 0
    (the other ranks' writes do nothing, so every rank can call `write`)."""

    def __init__(self, path: Path, writer: bool):
        self.path, self.writer = Path(path), writer

    def start(self, start_step: int) -> None:
        """Drop what a crashed run logged after its last checkpoint (and a line it tore): those steps
        are redone now. Rewritten whole under a temp name: a kill here loses nothing."""
        if not (self.writer and self.path.exists()):
            return
        # Every record's step counts completed updates, and the evals of a checkpoint's step are
        # logged before it is saved: a resumed run keeps everything up to its checkpoint's step. A
        # run that starts over from step 0 keeps nothing (it evaluates step 0 again).
        kept = [r for r in read_metrics_file(self.path) if start_step > 0 and r["step"] <= start_step]
        with atomic_output(self.path, "w") as f:
            f.write("".join(json.dumps(r) + "\n" for r in kept))

    def write(self, record: dict) -> None:
        if not self.writer:
            return
        try:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")
        except OSError as e:  # a torn last line is dropped on resume (read_metrics_file)
            if is_disk_full(e):
                raise disk_full_error(self.path) from e
            raise


def summarize_run(run: str | Path) -> dict:
    """Steps, tokens, final train / val loss, median tokens/s and MFU, and the checkpoints of a run."""
    run = Path(run)
    checkpoints = [checkpoint_info(p) for p in complete_checkpoints(checkpoints_dir(run))]
    if not checkpoints:
        raise Gpt2TrainError(f"training run {run} has no complete checkpoint; see {run / MAIN_LOG}")
    final = checkpoints[-1]
    state = CheckpointState.from_dir(final.path)
    records = read_metrics(run)
    train = [r for r in records if "loss" in r]
    val = [r for r in records if "val_loss" in r]
    hella = [r for r in records if "hellaswag_acc_norm" in r]
    # Steady-state speed: the first steps include warm-up (allocation, compilation).
    steady = train[min(len(train) // 4, 10):] or train
    mfu = [r["mfu"] for r in steady if r.get("mfu") is not None]
    total_batch = state.config.train.total_batch_tokens if state.config.train else None
    return {
        "run_tag": final.run_tag,
        "run_dir": str(run.resolve()),
        "steps": final.step,
        "tokens": final.step * total_batch if total_batch else None,
        "final_train_loss": train[-1]["loss"] if train else final.loss,
        "final_val_loss": val[-1]["val_loss"] if val else None,
        "final_hellaswag_acc_norm": hella[-1]["hellaswag_acc_norm"] if hella else None,
        "tokens_per_second": statistics.median(r["tok_s"] for r in steady) if steady else None,
        "mfu": statistics.median(mfu) if mfu else None,
        "checkpoints": [{"key": c.key, "path": str(c.path), "step": c.step, "model_sha256": c.model_sha256}
                        for c in checkpoints],
        "plot": str(run / TRAINING_PLOT) if (run / TRAINING_PLOT).exists() else None,
        "log": str(run / MAIN_LOG),
        # The run's data version: what it names (config + shards) and the weights it ended with.
        "data_version": hashlib.sha256(f"{final.run_tag}|{final.model_sha256}".encode()).hexdigest()[:24],
        "lineage": state.record.get("lineage", {}),
    }


def write_run_config(cfg: Config, run: str | Path) -> Path:
    """The resolved config, with `train.out_dir` = `run`, as `<run>/config.yaml`: what every rank of
    the launched trainer reads (paths in it are absolute, so it loads from anywhere)."""
    run = Path(run)
    resolved = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, out_dir=str(run.resolve())))
    path = run / RUN_CONFIG
    with atomic_output(path, "w") as f:
        f.write(f"# written by gpt2train for the training run {run.name}\n")
        yaml.safe_dump(config_to_dict(resolved), f, sort_keys=False)
    return path
