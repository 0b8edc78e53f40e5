"""Writer locks: one writer per artifact, and a clear refusal for the second.

Two pipeline runs (two `gpt2train pipeline` commands, two runs launched in the UI, a CLI
command next to a UI run) can reach the same artifact at once. Each writer of an artifact
takes an exclusive `flock` on a lock file next to it, `.<name>.lock`, for as long as it
writes; a second writer is refused at once with the first one's pid, host, command and start
time, instead of waiting or writing over it.

`flock` locks belong to the open file: the kernel drops them when the holder exits, SIGKILL
included, so a crashed writer never leaves a stale lock behind (the lock file stays; it is a
few bytes of holder information, rewritten by the next holder). The lock file lives beside
the artifact, not in it, because artifacts are directories replaced whole by a rename.

What a killed writer leaves beside the artifact (its `.<name>.tmp-<pid>` copy, a `.<name>.old-<pid>`
set aside) or, in a folder written file by file, inside it (a file's `.tmp-<pid>` copy) is deleted
by the next holder of the lock, whatever its pid: a free lock means that writer is dead
(gpt2train/fileio.py remove_dead_writers_files).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import sys
import time
from pathlib import Path
from typing import Iterator

from gpt2train.errors import Gpt2TrainError
from gpt2train.fileio import remove_dead_writers_files

log = logging.getLogger(__name__)


class ArtifactBusy(Gpt2TrainError):
    """Another process is writing the artifact (it holds its writer lock)."""


def lock_path_for(artifact: str | Path) -> Path:
    artifact = Path(artifact)
    return artifact.with_name(f".{artifact.name}.lock")


@contextlib.contextmanager
def writer_lock(artifact: str | Path, what: str, lock: str | Path | None = None, wait: bool = False) -> Iterator[Path]:
    """Hold the writer lock of `artifact` (a file or directory, existing or not) for the block.
    Raises ArtifactBusy, naming the holder, when another process holds it; `what` names the
    artifact in that message (e.g. "training run", "token shards of partition X"). `lock` puts
    the lock file elsewhere than beside the artifact: inside a directory that is never replaced
    whole, such as the data dir, whose parent may be a checkout or not writable. `wait` queues
    behind the holder instead, for short sections that must not interleave (recording a manifest).
    Once held, the artifact's leftovers from dead writers are deleted (see the module docstring)."""
    lock = Path(lock) if lock is not None else lock_path_for(artifact)
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            raise ArtifactBusy(f"{what} {artifact} is being written by another process ({_holder(lock)}); "
                               f"wait for it to finish or stop it, then run again. Two writers of one "
                               f"artifact are refused so neither can overwrite the other.") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                  "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                                  "command": " ".join(sys.argv)[:300]}).encode(), 0)
        if lock == lock_path_for(artifact):  # the artifact's own lock; a data-dir-wide lock guards no files
            for left in remove_dead_writers_files(Path(artifact)):
                log.info("removed %s, left by a writer of %s that died", left, artifact)
        yield lock
    finally:
        os.close(fd)  # releases the lock


def _holder(lock: Path) -> str:
    try:
        h = json.loads(lock.read_text())
        return f"pid {h['pid']} on {h['host']}, since {h['started']}: {h['command']}"
    except (OSError, ValueError, KeyError):
        return "holder unknown"
