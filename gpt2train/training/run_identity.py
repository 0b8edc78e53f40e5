"""Which training run a config is: its code version, its run tag, its directory, the shards it reads.

    run_tag(cfg)                  # `<descriptor>-<10 hex>`: the training code version + every shard's sha256
    run_dir(cfg)                  # <data_dir>/runs/<run_tag>
    shard_globs(cfg)              # (train glob, val glob)
    shards_digest(shard_set(cfg)) # the shard set's hash: the `shard_manifest` asset's data version

One run, one directory, whoever launches it: `gpt2train train`, `torchrun -m gpt2train.train` and the
`training_run` asset all train the same config and shards in `run_dir(cfg)` (unless `train.out_dir`,
llm.c's -o, names another place for a CLI run). The trainer records the tag in the directory
(`run.json`) the first time and refuses a directory made for another tag (`check_run_dir`): another
config, other shards, or a file edited by hand.
"""

from __future__ import annotations

import glob as globlib
import hashlib
from pathlib import Path

from gpt2train.training.checkpoint import checkpoint_state
from gpt2train.config import Config, config_to_dict
from gpt2train.errors import ConfigError
from gpt2train.fileio import read_json, write_json_atomic
from gpt2train.lineage.records import code_version, sidecar_path

RUN_RECORD = "run.json"

# Train settings that do not change the weights: where the run and its shards live (the run tag names
# the shards by their hashes), how often checkpoints are kept, samples, and the in-loop evals (they use
# no RNG and leave the model and loaders as they were).
NOT_OUTPUT_SHAPING = ("out_dir", "train_glob", "val_glob", "resume", "checkpoint_every", "keep_last",
                      "major_every", "sample_every", "sample_tokens", "val_every", "val_batches", "hellaswag_every",
                      "hellaswag_file", "hellaswag_items", "verify_shards", "max_nonfinite_steps", "init_from")


def train_code_version(cfg: Config) -> str:
    """Version of what training computes: the training stage's version (with the Triton kernels' when
    train.kernels may pick them) and the model / train settings that shape the weights (the Dagster
    `training_run` asset's code_version). The kernel choice counts as configured, never as resolved
    on this machine: a code server without a GPU and a GPU trainer compute the same version."""
    t = cfg.train
    train_settings = {k: v for k, v in config_to_dict(t).items() if k not in NOT_OUTPUT_SHAPING}
    if t.init_from:  # the weights it starts from, wherever that checkpoint lies
        train_settings["init_from"] = checkpoint_state(t.init_from)["model_sha256"]
    stages = ["training"] + (["triton_kernels"] if t.kernels in ("auto", "triton") else [])
    return code_version(stages, {"model": config_to_dict(cfg.model), "train": train_settings})


def shard_globs(cfg: Config) -> tuple[str, str]:
    """(train glob, val glob): train.train_glob / val_glob, or llm.c's names under <data_dir>/shards."""
    shards = Path(cfg.data_dir) / "shards"
    t = cfg.train
    return (t.train_glob or str(shards / f"{cfg.shards.prefix}_train_*.bin"),
            t.val_glob or str(shards / f"{cfg.shards.prefix}_val_*.bin"))


def shard_lineage(pattern: str) -> list[dict]:
    """What the run reads: each shard's name, tokens and sha256 from its sidecar (None for shards
    without one, e.g. karpathy's published files)."""
    out = []
    for path in sorted(globlib.glob(pattern)):
        sidecar = sidecar_path(path)
        meta = read_json(sidecar, "shard sidecar") if sidecar.exists() else {}
        out.append({"file": Path(path).name, "sha256": meta.get("sha256"), "tokens": meta.get("tokens"),
                    "sources": [src.get("key") for src in meta.get("sources", [])]})
    return out


def shard_set(cfg: Config) -> list[dict]:
    """Every shard the run reads, train then val (shard_lineage entries)."""
    return [entry for pattern in shard_globs(cfg) for entry in shard_lineage(pattern)]


def shards_digest(shards: list[dict]) -> str:
    """24 hex of sha256 over the shards' names and recorded sha256s, in order."""
    h = hashlib.sha256()
    for entry in shards:
        h.update(f"{entry['file']}:{entry['sha256']};".encode())
    return h.hexdigest()[:24]


def run_tag(cfg: Config) -> str:
    """`<descriptor>-<10 hex>`: names a training run by what decides its weights, the training code
    version and the sha256 of every shard it reads. A changed config or corpus starts a new run (new
    checkpoint partitions) and never resumes from, or overwrites, another run's checkpoints."""
    h = hashlib.sha256(f"{train_code_version(cfg)}|{shards_digest(shard_set(cfg))}".encode())
    return f"{cfg.model.descriptor.replace(':', '-')}-{h.hexdigest()[:10]}"


def runs_root(cfg: Config) -> Path:
    return Path(cfg.data_dir) / "runs"


def run_dir(cfg: Config) -> Path:
    """`<data_dir>/runs/<run_tag>`: where the configured run trains (the trainer's default, the
    `training_run` asset's always: its checkpoints' partition keys start with this folder's name)."""
    return runs_root(cfg) / run_tag(cfg)


def trainer_dir(cfg: Config) -> Path:
    """Where the trainer trains this config: train.out_dir (llm.c's -o) when set, else run_dir(cfg)."""
    return Path(cfg.train.out_dir) if cfg.train.out_dir else run_dir(cfg)


def check_run_dir(run: Path, tag: str) -> None:
    """Refuse a run directory recorded for another run tag; record `tag` in a new one."""
    record = run / RUN_RECORD
    if record.exists():
        recorded = read_json(record, "run record").get("run_tag")
        if recorded != tag:
            raise ConfigError(f"run directory {run} belongs to run {recorded}, but this config and these shards make "
                              f"run {tag} (another config, changed shards, or {RUN_RECORD} edited by hand): leave "
                              f"train.out_dir unset to train in {run.parent / tag}, or pick an empty train.out_dir")
    else:
        write_json_atomic(record, {"run_tag": tag})
