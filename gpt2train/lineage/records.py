"""Lineage: what every artifact records about how it was made.

Each artifact (corpus record, shard, and later checkpoint, export, report) gets a JSON
sidecar holding its content hash, the hashes of its inputs, the config section that
shaped it, the stage's code version and the git commit. Dagster gets the same facts as
metadata, and its staleness markers use `code_version` and the content hashes.

`code_version(stages, settings)` hashes the version of what the stage computes
(gpt2train/lineage/stage_versions.py) with the settings that shape its output (not speed knobs like
thread counts): changing either changes the version, and Dagster marks that stage and its
downstream stale, and nothing upstream.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
import os
import subprocess
from pathlib import Path
from typing import Any

from gpt2train import __version__
from gpt2train.config_paths import REPO_ROOT
from gpt2train.lineage.stage_versions import STAGE_VERSIONS


def code_version(stages: list[str], settings: dict[str, Any]) -> str:
    """16 hex chars of sha256 over the stages' versions and the settings that shape their output."""
    h = hashlib.sha256()
    for stage in sorted(stages):
        h.update(f"{stage}={STAGE_VERSIONS[stage]};".encode())
    h.update(json.dumps(settings, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


@functools.cache
def git_commit() -> str | None:
    """The checkout's HEAD commit, suffixed `-dirty` if tracked files differ; None when gpt2train is not
    running from a git checkout of its own (an installed package, or a copy without .git). Only a
    checkout whose top level is REPO_ROOT counts: a package installed into a virtual environment that lies
    inside some other repository must not record that repository's commit. git's own messages ("fatal:
    not a git repository") are captured, never printed."""
    try:
        head = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "--show-toplevel", "HEAD"],
                              capture_output=True, text=True, timeout=10)
        lines = head.stdout.split()
        if head.returncode != 0 or len(lines) != 2 or Path(lines[0]).resolve() != Path(REPO_ROOT).resolve():
            return None
        dirty = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=10,
        ).stdout.strip()
        return lines[1] + ("-dirty" if dirty else "")
    except (OSError, subprocess.TimeoutExpired):
        return None


def code_origin() -> str:
    """Where the code that made an artifact came from, in words: the git commit of a checkout, or, outside
    one, the installed package's version (all there is to name it by)."""
    commit = git_commit()
    if commit:
        return f"git checkout at commit {commit}"
    return f"installed package gpt2train {__version__} (not a git checkout, so no commit is recorded)"


def provenance(stage: str, code_ver: str) -> dict[str, Any]:
    """The fields every sidecar shares: who made it, with what code, when."""
    return {
        "stage": stage,
        "code_version": code_ver,
        "gpt2train_version": __version__,
        "git_commit": git_commit(),
        "code_origin": code_origin(),
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


# Paths in sidecars. A path inside the data dir is recorded relative to it, and each sidecar records
# where its data dir is relative to itself (`"data_dir": "../.."`), so a data dir that is copied or
# moved names its own files, and `gpt2train lineage` on the copy verifies the copy. A path outside
# the data dir (a local corpus mirror, a shared read-only checkout) stays absolute.

def _absolute(path: str | Path) -> Path:
    return Path(os.path.normpath(os.path.abspath(path)))  # `..` folded, symlinks left as they are


def recorded_path(path: str | Path, data_dir: str | Path | None) -> str:
    """`path` as a sidecar records it: relative to `data_dir` (POSIX) when it lies inside, else absolute."""
    p = _absolute(path)
    if data_dir is not None and p.is_relative_to(_absolute(data_dir)):
        return p.relative_to(_absolute(data_dir)).as_posix()
    return str(p)


def data_dir_field(sidecar_dir: str | Path, data_dir: str | Path) -> str:
    """A sidecar's `data_dir` field: the way from its folder up to the data dir when inside it, else absolute."""
    here, data = _absolute(sidecar_dir), _absolute(data_dir)
    return os.path.relpath(data, here) if here.is_relative_to(data) else str(data)


def sidecar_data_dir(sidecar: dict, sidecar_dir: str | Path) -> Path | None:
    """The data dir a sidecar's relative paths start from (None: it records absolute paths only)."""
    field = sidecar.get("data_dir")
    return _absolute(Path(sidecar_dir) / field) if field else None


def resolve_recorded(recorded: str, data_dir: Path | None) -> Path:
    """A recorded path, made usable: absolute as written; relative, from the recording data dir."""
    p = Path(recorded)
    return p if p.is_absolute() or data_dir is None else data_dir / p


def sidecar_path(artifact: str | Path) -> Path:
    """`x.bin` -> `x.bin.json`."""
    artifact = Path(artifact)
    return artifact.with_name(artifact.name + ".json")
