"""Crash-safe file writing and hashing, used by every artifact the library writes.

An artifact is written under a temporary name in the same folder and renamed into place
only when complete (rename is atomic on POSIX), so a crash or a full disk never leaves a
half-written file under a name that looks complete.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from gpt2train.errors import DataError

_HASH_CHUNK = 8 << 20  # 8 MiB reads: page-cache friendly, negligible overhead vs hashing


# Where every hash pass is logged, one line per file hashed ("<bytes>\t<pid>\t<path>"), when set: how
# tests/test_hash_once.py counts the passes over each file in processes it does not run itself (torchrun's
# ranks). Unset (every real run), it costs one dict lookup per file.
HASH_LOG_ENV = "GPT2TRAIN_HASH_LOG"


@dataclass(frozen=True)
class FileStamp:
    """What the filesystem says about a file without reading it: size, mtime and ctime (ns), inode. A write,
    a truncation, a copy or a file renamed over it changes at least one of them (ctime even when the writer
    sets mtime back: no call sets ctime), so a record of a file's sha256 taken with its stamp describes the
    file for as long as the stamp is the same. What no stamp sees: bits rotting on the medium, under the
    filesystem, and on a filesystem with coarse timestamps (FAT's 2 s) a same-size rewrite within the tick of
    the hash; only hashing again finds those (`gpt2train verify`, `pipeline --verify`, `gpt2train lineage`)."""

    size: int
    mtime_ns: int
    ctime_ns: int
    inode: int

    @classmethod
    def of(cls, st: os.stat_result) -> FileStamp:
        return cls(st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)

    @classmethod
    def from_dict(cls, d: Any) -> FileStamp | None:
        """The stamp a record holds; None for a record without one (written before stamps) or a damaged one."""
        try:
            return cls(**{k: int(d[k]) for k in ("size", "mtime_ns", "ctime_ns", "inode")})
        except (TypeError, KeyError, ValueError):
            return None

    def to_dict(self) -> dict:
        return asdict(self)


def file_stamp(path: str | Path) -> FileStamp | None:
    """The file's stamp now; None when there is no file."""
    try:
        return FileStamp.of(os.stat(path))
    except FileNotFoundError:
        return None


def hash_file(path: str | Path, each_chunk: Callable[[int, bytes], None] | None = None) -> tuple[str, FileStamp | None]:
    """(sha256, stamp) in one read of the file; `each_chunk(offset, bytes)` sees every chunk on the way (the
    shard checks find the largest token in the same pass). The stamp is the file's when the read began, or
    None when it changed while it was read (the hash may then mix two versions: nothing may record it as
    the file's)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        before = FileStamp.of(os.fstat(f.fileno()))
        offset = 0
        while chunk := f.read(_HASH_CHUNK):
            h.update(chunk)
            if each_chunk is not None:
                each_chunk(offset, chunk)
            offset += len(chunk)
        after = FileStamp.of(os.fstat(f.fileno()))
    if log := os.environ.get(HASH_LOG_ENV):
        with open(log, "a") as out:  # one short append per file: whole lines from concurrent processes
            out.write(f"{offset}\t{os.getpid()}\t{Path(path).resolve()}\n")
    return h.hexdigest(), before if after == before else None


def sha256_file(path: str | Path) -> str:
    return hash_file(path)[0]


def unchanged_since(path: str | Path, sha256: str, stamp: FileStamp | None) -> str | None:
    """None when the file still holds `sha256`, the hash recorded with `stamp`: by the stamp alone when it is
    the same (no read), else by hashing the file again (a file touched but not changed passes). Otherwise
    its sha256 now, or "(missing)"."""
    if stamp is not None and file_stamp(path) == stamp:
        return None
    if not Path(path).exists():
        return "(missing)"
    now = sha256_file(path)
    return None if now == sha256 else now


def temp_path_for(path: Path) -> Path:
    # Dot-prefixed and pid-tagged: never matched by a shard glob, never shared by two writers.
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


@contextlib.contextmanager
def atomic_output(path: str | Path, mode: str = "wb") -> Iterator[Any]:
    """Open a temp file next to `path`; on success fsync and rename it to `path`.

    On any error the temp file is removed and the previous `path` (if any) is untouched;
    a full disk becomes a DataError that names the file and the free space left.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path_for(path)
    try:
        with open(tmp, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        if is_disk_full(e):
            raise disk_full_error(path) from e
        raise


def remove_dead_writers_files(artifact: Path) -> list[Path]:
    """Delete what earlier writers of `artifact` left, whatever their pid: beside it, its temp copies
    `.<name>.tmp-<pid>` (temp_path_for) and copies set aside `.<name>.old-<pid>` (replace_dir); inside
    it, when it is a folder written file by file (a run directory, the eval summary), the same kind of
    temp copy of any of its files (`.trend.png.tmp-<pid>.png`: matplotlib wants the extension last).
    A SIGKILLed export leaves a whole model beside it (~6 GB at 1558M), which a writer with another pid
    never reused. Only the holder of the artifact's writer lock calls this (gpt2train/locks.py): every
    writer of it holds that lock while it writes, so while we hold it, whoever made these is dead.
    Returns what was removed."""
    beside = re.compile(rf"\.{re.escape(artifact.name)}\.(tmp|old)-\d+")
    inside = re.compile(r"\..+\.(tmp|old)-\d+(\.\w+)?")
    found = [p for p in artifact.parent.iterdir() if beside.fullmatch(p.name)] if artifact.parent.is_dir() else []
    if artifact.is_dir() and not artifact.is_symlink():
        found += [p for p in artifact.iterdir() if inside.fullmatch(p.name)]
    for p in found:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    return found


def fsync_files_alike(folder: Path, like: str) -> None:
    """fsync every file in `folder` and give it the mode of `folder / like`, before the folder is renamed
    into place. safetensors writes its file 0600 where Python's open() follows the umask (0644 under the
    usual 022): without this, the export and eval pods of docs/deploy.md, each its own user of one
    group, could read a checkpoint's or an export's state but not its weights."""
    mode = (folder / like).stat().st_mode & 0o777
    for f in folder.iterdir():
        f.chmod(mode)
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())


def replace_dir(tmp: Path, final: Path) -> None:
    """Rename the complete directory `tmp` to `final`. A rename cannot replace a non-empty directory,
    so an existing `final` is moved aside first and deleted after; if the second rename fails the
    old one is put back. A crash between the two renames leaves the old one aside, never half of it."""
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
    try:
        os.replace(tmp, final)
    except BaseException:
        if old is not None and not final.exists():
            os.replace(old, final)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def is_disk_full(e: BaseException) -> bool:
    """Whether `e`, or an error it was raised from, is a full disk. safetensors and tokenizers write
    from Rust and raise their own types; torch.save into a file object raises a RuntimeError whose
    context is the OSError(ENOSPC)."""
    seen: set[int] = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if (isinstance(e, OSError) and e.errno == errno.ENOSPC) or "No space left on device" in str(e):
            return True
        e = e.__cause__ or e.__context__
    return False


def disk_full_error(path: Path) -> DataError:
    free = shutil.disk_usage(path.parent).free if path.parent.exists() else 0
    return DataError(
        f"disk full while writing {path} ({free / 2**20:.1f} MiB free on its filesystem); "
        f"nothing was left half-written and earlier files are intact. Free space there or "
        f"point data_dir at a larger disk, then run again."
    )


def write_json_atomic(path: str | Path, obj: Any) -> None:
    with atomic_output(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True, default=str)
        f.write("\n")


def read_json(path: str | Path, what: str) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise DataError(f"{what} {path} not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{what} {path} is not valid JSON ({e}); delete it and regenerate it") from e
