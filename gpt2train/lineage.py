"""Lineage: what every artifact records about how it was made.

Each artifact (corpus record, shard, and later checkpoint, export, report) gets a JSON
sidecar holding its content hash, the hashes of its inputs, the config section that
shaped it, the stage's code version and the git commit. Dagster gets the same facts as
metadata, and its staleness markers use `code_version` and the content hashes.

`code_version(...)` hashes the source of the modules a stage runs *and* the settings that
shape its output (not speed knobs like thread counts): changing either changes the version,
and Dagster marks that stage and its downstream stale, and nothing upstream.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import importlib
import json
import subprocess
from pathlib import Path
from typing import Any

from gpt2train import __version__
from gpt2train.config import REPO_ROOT


def code_version(modules: list[str], settings: dict[str, Any]) -> str:
    """16 hex chars of sha256 over the stage's module sources and the settings that shape its output."""
    h = hashlib.sha256()
    for name in sorted(modules):
        h.update(name.encode())
        h.update(_module_source_hash(name))
    h.update(json.dumps(settings, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


@functools.cache
def _module_source_hash(name: str) -> bytes:
    # Hashed once per process: the version of the code this process runs, even if the file
    # is edited on disk meanwhile (a long-lived `dagster dev` picks edits up on reload).
    return hashlib.sha256(Path(importlib.import_module(name).__file__).read_bytes()).digest()


@functools.cache
def git_commit() -> str | None:
    """The checkout's HEAD commit, suffixed `-dirty` if tracked files differ; None outside git."""
    try:
        head = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
        )
        if head.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=10,
        ).stdout.strip()
        return head.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.TimeoutExpired):
        return None


def provenance(stage: str, code_ver: str) -> dict[str, Any]:
    """The fields every sidecar shares: who made it, with what code, when."""
    return {
        "stage": stage,
        "code_version": code_ver,
        "gpt2train_version": __version__,
        "git_commit": git_commit(),
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


def sidecar_path(artifact: str | Path) -> Path:
    """`x.bin` -> `x.bin.json`."""
    artifact = Path(artifact)
    return artifact.with_name(artifact.name + ".json")
