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
import logging
from dataclasses import dataclass
from pathlib import Path

from gpt2train import layout
from gpt2train.config import Config, config_to_dict
from gpt2train.errors import ConfigError, DataError
from gpt2train.fileio import read_json, write_json_atomic
from gpt2train.lineage.records import code_version, sidecar_path
from gpt2train.training.checkpoint import CheckpointState, latest_checkpoint
from gpt2train.weights import weights_sha256

log = logging.getLogger(__name__)

# Train settings that do not change the weights: where the run and its shards live (the run tag names
# the shards by their hashes), how often checkpoints are kept, samples, the in-loop evals (they use
# no RNG and leave the model and loaders as they were), and the trackers that copy the metrics.
NOT_OUTPUT_SHAPING = ("out_dir", "train_glob", "val_glob", "resume", "checkpoint_every", "keep_last",
                      "major_every", "sample_every", "sample_tokens", "val_every", "val_batches", "hellaswag_every",
                      "hellaswag_file", "hellaswag_items", "verify_shards", "max_nonfinite_steps", "init_from",
                      "loggers")
# Train settings added after runs already existed, with the value every earlier run trained with (the
# code's fixed choice before the field): hashed only when set to another value, so a config that leaves
# them at it keeps its run tag and code version, and a run started before the field resumes.
ADDED_SETTINGS = {"adam_beta1": 0.9, "adam_beta2": 0.95}


def train_code_version(cfg: Config) -> str:
    """Version of what training computes: the training stage's version (with the Triton kernels' when
    train.kernels may pick them) and the model / train settings that shape the weights (the Dagster
    `training_run` asset's code_version). The kernel choice counts as configured, never as resolved
    on this machine: a code server without a GPU and a GPU trainer compute the same version."""
    t = cfg.train
    train_settings = {k: v for k, v in config_to_dict(t).items()
                      if k not in NOT_OUTPUT_SHAPING and not (k in ADDED_SETTINGS and v == ADDED_SETTINGS[k])}
    if t.init_from:  # the weights it starts from, wherever they lie
        train_settings["init_from"] = weights_sha256(t.init_from)
    stages = ["training"] + (["triton_kernels"] if t.kernels in ("auto", "triton") else [])
    return code_version(stages, {"model": config_to_dict(cfg.model), "train": train_settings})


def shard_globs(cfg: Config) -> tuple[str, str]:
    """(train glob, val glob): train.train_glob / val_glob, or llm.c's names under <data_dir>/shards."""
    shards = layout.shards_dir(cfg.data_dir)
    t = cfg.train
    return (t.train_glob or str(shards / f"{cfg.shards.prefix}_train_*.bin"),
            t.val_glob or str(shards / f"{cfg.shards.prefix}_val_*.bin"))


def shard_lineage(pattern: str, strict: bool = True) -> list[dict]:
    """What the run reads: each shard's name, tokens and sha256 from its sidecar (None for shards
    without one, e.g. karpathy's published files). A sidecar that is not JSON raises a DataError, or
    with `strict=False` counts as `unreadable:<file>` (a manifest must not stop on one bad file)."""
    out = []
    for path in sorted(globlib.glob(pattern)):
        sidecar = sidecar_path(path)
        try:
            meta = read_json(sidecar, "shard sidecar") if sidecar.exists() else {}
        except DataError:
            if strict:
                raise
            log.warning("shard sidecar %s cannot be read; counted as changed", sidecar)
            meta = {"sha256": f"unreadable:{sidecar.name}"}
        out.append({"file": Path(path).name, "sha256": meta.get("sha256"), "tokens": meta.get("tokens"),
                    "sources": [src.get("key") for src in meta.get("sources", [])]})
    return out


def shard_set(cfg: Config, strict: bool = True) -> list[dict]:
    """Every shard the run reads, train then val (shard_lineage entries)."""
    return [entry for pattern in shard_globs(cfg) for entry in shard_lineage(pattern, strict)]


def shards_digest(shards: list[dict]) -> str:
    """24 hex of sha256 over the shards' names and recorded sha256s, in order."""
    h = hashlib.sha256()
    for entry in shards:
        h.update(f"{entry['file']}:{entry['sha256']};".encode())
    return h.hexdigest()[:24]


@dataclass(frozen=True)
class RunIdentity:
    tag: str               # `<descriptor>-<10 hex>`
    code_version: str      # train_code_version(cfg)
    shards: list[dict]     # shard_set(cfg): what the run reads


def run_identity(cfg: Config) -> RunIdentity:
    """The run a config and the shards on disk make: its tag hashes the training code version and the
    sha256 of every shard it reads, so a changed config or corpus starts a new run (new checkpoint
    partitions) and never resumes from, or overwrites, another run's checkpoints."""
    version, shards = train_code_version(cfg), shard_set(cfg)
    h = hashlib.sha256(f"{version}|{shards_digest(shards)}".encode())
    return RunIdentity(f"{cfg.model.descriptor.replace(':', '-')}-{h.hexdigest()[:10]}", version, shards)


def run_tag(cfg: Config) -> str:
    """`<descriptor>-<10 hex>` (see run_identity)."""
    return run_identity(cfg).tag


def run_dir(cfg: Config) -> Path:
    """`<data_dir>/runs/<run_tag>`: where the configured run trains (the trainer's default, the
    `training_run` asset's always: its checkpoints' partition keys start with this folder's name)."""
    return layout.run_dir(cfg.data_dir, run_tag(cfg))


def check_run_dir(run: Path, tag: str, home: Path) -> None:
    """Refuse a run directory that belongs to another run; record `tag` in one that has no record.
    What it belongs to: its run.json, else the run tag its newest complete checkpoint recorded (a
    directory from before run.json, or one named with llm.c's -o). `home` is where this config's run
    lives by default (`run_dir`), for the message."""
    record = run / layout.RUN_RECORD
    if record.exists():
        recorded, how = read_json(record, "run record").get("run_tag"), f"its {layout.RUN_RECORD}"
    else:
        newest = latest_checkpoint(layout.checkpoints_dir(run))
        recorded = CheckpointState.from_dir(newest).run_tag if newest else None
        how = f"its checkpoint {newest.name}" if newest else ""
    if recorded is not None and recorded != tag:
        where = "train there" if run == home else f"train in {home} (leave train.out_dir unset)"
        raise ConfigError(f"run directory {run} belongs to run {recorded} ({how} says so), but this config and these "
                          f"shards make run {tag}: another config, changed shards, or a file edited by hand. To start "
                          f"this run, {where} or pick an empty train.out_dir; to continue {recorded}, use the config "
                          f"and shards it was made with")
    if not record.exists():
        write_json_atomic(record, {"run_tag": tag})
