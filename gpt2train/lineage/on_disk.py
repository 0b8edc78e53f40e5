"""Is an artifact still on disk as it was recorded? A record of what was built (e.g. an orchestrator's)
cannot see a deleted export or a truncated shard, so whoever skips work because of such a record
asks here first (`gpt2train pipeline --stale-only`, through pipelines/artifacts.py).

    shards_problem(cfg, "sample/10BT/000_00000.parquet")   # None: the source file's shards as recorded
    export_problem(cfg, key, rehash=True)                  # also every recorded sha256

One check per artifact: a source file's corpus record, its token shards, the configured run, a
checkpoint's export, its eval report, the eval summary. Cheap by default: every file the artifact's
own record names exists, with the size the record implies where it implies one (a shard is its
1024-byte header plus 2 bytes per recorded token). `rehash` (`--verify`) also re-hashes every file
whose sha256 the record holds. Each returns one line saying what is missing or changed, or None.
"""

from __future__ import annotations

import json
from pathlib import Path

from gpt2train.config import Config
from gpt2train.data.shards import HEADER_BYTES, TOKEN_DTYPE
from gpt2train.fileio import sha256_file
from gpt2train.layout import (
    LINEAGE_FILE, checkpoints_dir, corpus_record_path, export_dir, report_dir, shard_partition_manifest, shards_dir,
    summary_dir,
)
from gpt2train.training.checkpoint import complete_checkpoints
from gpt2train.training.run_identity import run_dir

SUMMARY_FILES = ("summary.json", "summary.md")


def corpus_record_problem(cfg: Config, key: str) -> str | None:
    """The corpus record of source file `key`."""
    return _missing(corpus_record_path(cfg.data_dir, key))


def shards_problem(cfg: Config, key: str, rehash: bool = False) -> str | None:
    """The token shards of source file `key`: its manifest and every shard it lists."""
    shards = shards_dir(cfg.data_dir)
    manifest, problem = _read_record(shard_partition_manifest(shards, key))
    if problem:
        return problem
    for shard in manifest.get("shards", []):
        path = shards / shard["file"]
        if not path.is_file():
            return f"{path} is missing"
        expected = HEADER_BYTES + int(shard["tokens"]) * TOKEN_DTYPE.itemsize
        if path.stat().st_size != expected:
            return f"{path} is {path.stat().st_size} bytes, not the {expected} its {shard['tokens']} tokens make"
        if rehash and sha256_file(path) != shard["sha256"]:
            return f"{path} no longer has its recorded sha256 {shard['sha256'][:16]}…"
    return None


def run_problem(cfg: Config) -> str | None:
    """The configured training run: at least one complete checkpoint."""
    run = run_dir(cfg)
    return None if complete_checkpoints(checkpoints_dir(run)) else f"{run} holds no complete checkpoint"


def export_problem(cfg: Config, key: str, rehash: bool = False) -> str | None:
    """The Hugging Face export of checkpoint `key`."""
    return _recorded_files_problem(export_dir(cfg.data_dir, key), rehash)


def report_problem(cfg: Config, key: str, rehash: bool = False) -> str | None:
    """The eval report of checkpoint `key`."""
    return _recorded_files_problem(report_dir(cfg.data_dir, key), rehash)


def summary_problem(cfg: Config) -> str | None:
    """The eval summary over every report."""
    return next(filter(None, (_missing(summary_dir(cfg.data_dir) / name) for name in SUMMARY_FILES)), None)


def _missing(path: Path) -> str | None:
    return None if path.is_file() else f"{path} is missing"


def _read_record(path: Path) -> tuple[dict | None, str | None]:
    try:
        return json.loads(path.read_text()), None
    except FileNotFoundError:
        return None, f"{path} is missing"
    except (OSError, ValueError) as e:
        return None, f"{path} cannot be read ({e})"


def _recorded_files_problem(folder: Path, rehash: bool) -> str | None:
    """An export or a report: its lineage sidecar lists each of its files with a sha256."""
    record, problem = _read_record(folder / LINEAGE_FILE)
    if problem:
        return problem
    for name, sha256 in sorted(record.get("files", {}).items()):
        path = folder / name
        if not path.is_file():
            return f"{path} is missing"
        if rehash and sha256_file(path) != sha256:
            return f"{path} no longer has its recorded sha256 {sha256[:16]}…"
    return None
