"""Is an artifact still on disk as it was recorded? Dagster's records cannot see a deleted export
or a truncated shard, so `gpt2train pipeline --stale-only` asks this before it skips anything
the records call fresh.

    artifact_problem(cfg, "token_shards", "sample/10BT/000_00000.parquet")   # None: as recorded
    artifact_problem(cfg, "hf_export", key, rehash=True)                    # also every recorded sha256

Cheap by default: every file the artifact's own record names exists, with the size the record
implies where it implies one (a shard is its 1024-byte header plus 2 bytes per recorded token).
`rehash` (`--verify`) also re-hashes every file whose sha256 the record holds. Returns one line
saying what is missing or changed, or None.
"""

from __future__ import annotations

import json
from pathlib import Path

from gpt2train.config import Config
from gpt2train.data.shards import HEADER_BYTES, TOKEN_DTYPE
from gpt2train.fileio import sha256_file
from gpt2train.layout import (
    LINEAGE_FILE, corpus_record_path, export_dir, report_dir, shard_partition_manifest, shards_dir, summary_dir,
)
from gpt2train.training.checkpoint import complete_checkpoints
from gpt2train.training.run_identity import run_dir

SUMMARY_FILES = ("summary.json", "summary.md")


def artifact_problem(cfg: Config, asset: str, key: str | None = None, rehash: bool = False) -> str | None:
    """What is missing or changed of `asset`'s artifact (for partition `key`), or None."""
    if asset == "corpus":
        return _missing(corpus_record_path(cfg.data_dir, key))
    if asset == "token_shards":
        return _shards_problem(cfg, key, rehash)
    if asset == "training_run":
        run = run_dir(cfg)
        return None if complete_checkpoints(run / "checkpoints") else f"{run} holds no complete checkpoint"
    if asset in ("hf_export", "eval_report"):
        folder = export_dir(cfg.data_dir, key) if asset == "hf_export" else report_dir(cfg.data_dir, key)
        return _recorded_files_problem(folder, rehash)
    if asset == "eval_summary":
        return next(filter(None, (_missing(summary_dir(cfg.data_dir) / name) for name in SUMMARY_FILES)), None)
    raise ValueError(f"no on-disk check for asset {asset!r}")


def _missing(path: Path) -> str | None:
    return None if path.is_file() else f"{path} is missing"


def _read_record(path: Path) -> tuple[dict | None, str | None]:
    try:
        return json.loads(path.read_text()), None
    except FileNotFoundError:
        return None, f"{path} is missing"
    except (OSError, ValueError) as e:
        return None, f"{path} cannot be read ({e})"


def _shards_problem(cfg: Config, key: str, rehash: bool) -> str | None:
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
