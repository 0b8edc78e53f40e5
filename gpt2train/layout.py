"""Where the chain keeps everything under `data_dir`: every path it reads or writes is made here.

    <data_dir>/
        corpus/hub/<dataset repo>/...         source files downloaded from the Hub (data/corpus.py)
        corpus/records/<file tag>.json        one record per source file: sha256, size, documents (data/stage.py)
        shards/<prefix>_{train,val}_*.bin     llm.c token shards, each with a .json sidecar (data/shard_writer.py)
        shards/partitions/<file tag>.json     which shards one source file became
        runs/<run tag>/                       one training run (training/run_identity.py names it)
            run.json                          its run tag, recorded on first start
            config.yaml                       the resolved config it was launched with
            main.log  metrics.jsonl  training.png
            tracking.json  tensorboard/  wandb/   with train.loggers: the trackers' files (training/trackers.py)
            checkpoints/step_XXXXXXXX/        one checkpoint: what it holds is in training/checkpoint.py
        exports/<run tag>@step_XXXXXXXX/      a checkpoint as a Hugging Face GPT-2 directory (export/hf_export.py)
        reports/<run tag>@step_XXXXXXXX/      its eval report (evals/runner.py)
        eval_summary/summary.{md,json,png}    the trend over every report (evals/trend.py)
        hellaswag/<file name>                 a downloaded HellaSwag file (training/hellaswag.py)
        prepared/                             `gpt2train prepare`'s shards when no --out is given
        .pipeline.lock                        one `gpt2train pipeline` per data dir (pipelines/runner.py)
        .manifests.lock                       the writer of the shard / report manifests (assets/manifests.py)

`<file tag>` names a corpus partition (data/corpus.py: partition_tag); `<run tag>@step_XXXXXXXX` is a
checkpoint's key, its Dagster partition. Shards may also be written elsewhere (`gpt2train prepare
--out DIR`, `train.train_glob`); every other path here hangs off the data dir. Lineage records paths
relative to it (lineage/records.py: recorded_path), so a data dir can be moved whole.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from gpt2train.errors import Gpt2TrainError

STEP_DIR = re.compile(r"step_(\d{8})\Z")  # \Z: `$` would also match before a trailing newline
LINEAGE_FILE = "lineage.json"  # the lineage sidecar of an export and of a report

# The files of a run directory.
RUN_RECORD = "run.json"
RUN_CONFIG = "config.yaml"
MAIN_LOG = "main.log"
METRICS = "metrics.jsonl"
TRAINING_PLOT = "training.png"
# train.loggers (training/trackers.py): which trackers the run logs to and its W&B run id; their folders.
TRACKING_RECORD = "tracking.json"
TENSORBOARD_DIR = "tensorboard"
WANDB_DIR = "wandb"

# The files of a checkpoint directory (what each holds: training/checkpoint.py).
CHECKPOINT_WEIGHTS = "model.safetensors"
CHECKPOINT_STATE = "state.json"
CHECKPOINT_DONE = "DONE"  # written last: only a directory with it is a checkpoint
# Left in a run's checkpoints folder by a save or a prune that crashed (step_temp_dir, step_deleting_dir).
STALE_STEP_DIRS = (".step_*.tmp", ".step_*.deleting")

# Hugging Face's names (transformers' save_pretrained, the Hub), in an export of ours and in any GPT-2
# directory read as weights.
HF_WEIGHTS = "model.safetensors"
HF_CONFIG = "config.json"
MODEL_CARD = "README.md"


def partition_tag(key: str) -> str:
    """`sample/10BT/000_00000.parquet` -> `000_00000-<8 hex>`: file-name safe, readable, and unique
    per key (the hash tells `a.jsonl` from `a.txt` and `x/y.parquet` from `x-y.parquet`)."""
    stem = key.rsplit("/", 1)[-1].rsplit(".", 1)[0]
    safe = "".join(c if c.isalnum() or c in "_-" else "-" for c in stem)
    return f"{safe}-{hashlib.sha1(key.encode()).hexdigest()[:8]}"


def stream_shard_name(prefix: str, index: int) -> str:
    """llm.c's names for one stream of shards: the first is the validation shard."""
    return f"{prefix}_{'val' if index == 0 else 'train'}_{index:06d}.bin"


def partition_shard_name(prefix: str, tag: str, index: int, is_val_file: bool) -> str:
    """The shards of one source file: named after its tag, so that files shard independently; the
    validation file's first shard keeps llm.c's `<prefix>_val_000000.bin`."""
    if is_val_file and index == 0:
        return f"{prefix}_val_{index:06d}.bin"
    return f"{prefix}_train_{tag}_{index:06d}.bin"


def corpus_hub_dir(data_dir: str | Path, repo: str) -> Path:
    return Path(data_dir) / "corpus" / "hub" / repo


def corpus_record_path(data_dir: str | Path, key: str) -> Path:
    """The record of source file `key`."""
    return Path(data_dir) / "corpus" / "records" / f"{partition_tag(key)}.json"


def shards_dir(data_dir: str | Path) -> Path:
    return Path(data_dir) / "shards"


def shard_partition_manifest(shards: str | Path, key: str) -> Path:
    """Which shards of the folder `shards` source file `key` became."""
    return Path(shards) / "partitions" / f"{partition_tag(key)}.json"


def prepared_dir(data_dir: str | Path) -> Path:
    return Path(data_dir) / "prepared"


def runs_root(data_dir: str | Path) -> Path:
    return Path(data_dir) / "runs"


def run_dir(data_dir: str | Path, tag: str) -> Path:
    return runs_root(data_dir) / tag


def checkpoints_dir(run: str | Path) -> Path:
    return Path(run) / "checkpoints"


def step_dir(checkpoints: str | Path, step: int) -> Path:
    return Path(checkpoints) / f"step_{step:08d}"


def step_temp_dir(step: str | Path) -> Path:
    """Where the checkpoint `step` (a step_dir) is written before it is renamed into place: a name
    outside the `step_*` namespace, so that it never looks complete."""
    step = Path(step)
    return step.with_name(f".{step.name}.tmp")


def step_deleting_dir(step: str | Path) -> Path:
    """Where a pruned checkpoint is renamed before it is deleted, outside the `step_*` namespace."""
    step = Path(step)
    return step.with_name(f".{step.name}.deleting")


def optimizer_shard_name(rank: int | str) -> str:
    """The file of rank `rank`'s optimizer state in a checkpoint; `"*"` gives the glob of every rank's."""
    return f"optimizer_rank{rank}.pt"


def rng_state_name(rank: int) -> str:
    return f"rng_rank{rank}.pt"


def loader_state_name(rank: int) -> str:
    return f"loader_rank{rank}.json"


def checkpoint_key(path: str | Path) -> str:
    """`<data>/runs/tiny-3f9a1c2b0e/checkpoints/step_00000020` -> `tiny-3f9a1c2b0e@step_00000020`."""
    path = Path(path)
    if not STEP_DIR.match(path.name):
        raise Gpt2TrainError(f"{path} is not a checkpoint directory (expected .../checkpoints/step_XXXXXXXX)")
    return f"{path.parent.parent.name}@{path.name}"


def checkpoint_path(data_dir: str | Path, key: str) -> Path:
    """The directory of checkpoint `key` (the inverse of `checkpoint_key`)."""
    run, sep, step = key.rpartition("@")
    if not sep or not STEP_DIR.match(step) or not run or "/" in run or run.startswith("."):
        raise Gpt2TrainError(f"{key!r} is not a checkpoint key (expected <run>@step_XXXXXXXX)")
    return checkpoints_dir(run_dir(data_dir, run)) / step


def exports_root(data_dir: str | Path) -> Path:
    return Path(data_dir) / "exports"


def export_dir(data_dir: str | Path, key: str) -> Path:
    """The Hugging Face export of checkpoint `key`."""
    return exports_root(data_dir) / key


def reports_root(data_dir: str | Path) -> Path:
    return Path(data_dir) / "reports"


def report_dir(data_dir: str | Path, key: str) -> Path:
    """The eval report of checkpoint `key`."""
    return reports_root(data_dir) / key


def summary_dir(data_dir: str | Path) -> Path:
    return Path(data_dir) / "eval_summary"


def hellaswag_download(data_dir: str | Path, name: str) -> Path:
    return Path(data_dir) / "hellaswag" / name


def pipeline_lock_path(data_dir: str | Path) -> Path:
    """Inside the data dir (git-ignored, writable), not beside it as artifact locks are: the data
    dir is never replaced whole, and its parent may be a checkout or a read-only mount."""
    return Path(data_dir) / ".pipeline.lock"


def manifests_lock_path(data_dir: str | Path) -> Path:
    return Path(data_dir) / ".manifests.lock"
