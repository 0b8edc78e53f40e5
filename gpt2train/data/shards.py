"""llm.c's `.bin` token shard format: write (streaming, atomic), read, validate.

Layout (llm.c `dev/data/data_common.py::write_datafile`, model "gpt-2"):

    header : 256 x int32, little-endian   [0] magic 20240520, [1] version 1, [2] token count
    body   : token count x uint16          GPT-2 token ids (< 50257)

llm.c's `train_gpt2cu` reads these files unchanged, and `read_tokens` reads karpathy's
published shards (e.g. `edu_fineweb_train_000001.bin`).
"""

from __future__ import annotations

import contextlib
import glob as globlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from gpt2train.errors import DataError
from gpt2train.fileio import disk_full_error, is_disk_full, read_json, sha256_file, temp_path_for
from gpt2train.lineage.records import sidecar_path

log = logging.getLogger(__name__)

SHARD_MAGIC = 20240520
SHARD_VERSION = 1
HEADER_INTS = 256
HEADER_BYTES = HEADER_INTS * 4
TOKEN_DTYPE = np.dtype("<u2")


def make_header(num_tokens: int) -> bytes:
    header = np.zeros(HEADER_INTS, dtype="<i4")
    header[0], header[1], header[2] = SHARD_MAGIC, SHARD_VERSION, num_tokens
    return header.tobytes()


def read_header(path: str | Path) -> np.ndarray:
    """The 256-int32 header, after checking magic, version and that the body matches the count."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            raw = f.read(HEADER_BYTES)
    except FileNotFoundError:
        raise DataError(f"token shard {path} not found") from None
    if len(raw) < HEADER_BYTES:
        raise DataError(f"token shard {path} is {size} bytes, shorter than the {HEADER_BYTES}-byte llm.c header; "
                        f"it is truncated or not a shard: delete it and regenerate the shards")
    header = np.frombuffer(raw, dtype="<i4")
    if header[0] != SHARD_MAGIC:
        raise DataError(f"token shard {path}: magic {header[0]} is not llm.c's GPT-2 magic {SHARD_MAGIC} "
                        f"(a file from another tokenizer or format, e.g. llm.c's llama-3 shards use 20240801); "
                        f"regenerate it with `gpt2train prepare`")
    if header[1] != SHARD_VERSION:
        raise DataError(f"token shard {path}: version {header[1]}, expected {SHARD_VERSION} (uint16 GPT-2 tokens); "
                        f"regenerate it with `gpt2train prepare`")
    expected = HEADER_BYTES + int(header[2]) * TOKEN_DTYPE.itemsize
    if size != expected:
        raise DataError(f"token shard {path}: header says {header[2]} tokens ({expected} bytes) but the file has "
                        f"{size} bytes; it is truncated or corrupt: delete it and regenerate the shards")
    return header


def read_tokens(path: str | Path) -> np.ndarray:
    """The shard's tokens as a read-only (N,) uint16 memmap (no copy, no RAM growth)."""
    header = read_header(path)
    return np.memmap(path, dtype=TOKEN_DTYPE, mode="r", offset=HEADER_BYTES, shape=(int(header[2]),))


@dataclass
class ShardCheck:
    """Result of one validation rule on a shard (what the Dagster asset checks report)."""

    name: str
    passed: bool
    detail: str


def validate_shard(path: str | Path, expected_sha256: str | None, vocab_size: int = 50257) -> list[ShardCheck]:
    """The four shard checks: header, size = header count, tokens < vocab, sha256 = sidecar."""
    path = Path(path)
    checks = []
    size = path.stat().st_size if path.exists() else 0
    with open(path, "rb") if path.exists() else contextlib.nullcontext(None) as f:
        raw = f.read(HEADER_BYTES) if f else b""
    header = np.frombuffer(raw, dtype="<i4") if len(raw) == HEADER_BYTES else None
    if header is None:
        checks.append(ShardCheck("header", False, f"{size} bytes: no complete {HEADER_BYTES}-byte header"))
    elif (header[0], header[1]) != (SHARD_MAGIC, SHARD_VERSION):
        checks.append(ShardCheck("header", False, f"magic {header[0]}, version {header[1]}; "
                                 f"expected {SHARD_MAGIC}, {SHARD_VERSION}"))
        header = None
    else:
        checks.append(ShardCheck("header", True, f"magic {SHARD_MAGIC}, version {SHARD_VERSION}"))
    expected_size = HEADER_BYTES + int(header[2]) * TOKEN_DTYPE.itemsize if header is not None else None
    size_ok = expected_size == size
    checks.append(ShardCheck("size_matches_header", size_ok,
                             f"{size} bytes, header implies {expected_size}" if not size_ok
                             else f"{int(header[2])} tokens"))
    if size_ok:
        tokens = read_tokens(path)
        # Chunked max: a 100M-token shard never becomes one big temporary.
        biggest = max((int(tokens[i : i + (1 << 24)].max()) for i in range(0, len(tokens), 1 << 24)), default=0)
        checks.append(ShardCheck("tokens_in_vocab", biggest < vocab_size,
                                 f"max token id {biggest} (vocabulary {vocab_size})"))
    else:
        checks.append(ShardCheck("tokens_in_vocab", False, "not checked: header or size is wrong"))
    if expected_sha256 is None:
        checks.append(ShardCheck("sha256_matches_sidecar", False, "no lineage sidecar with a sha256"))
    else:
        actual = sha256_file(path) if path.exists() else "(missing)"
        checks.append(ShardCheck("sha256_matches_sidecar", actual == expected_sha256,
                                 f"sha256 {actual[:16]}…, sidecar {expected_sha256[:16]}…"))
    return checks


def verify_shard_hashes(pattern: str, progress: bool = False) -> None:
    """Hash every shard matching `pattern` and compare with its sidecar's sha256. A shard that changed after it was written (a flipped bit, a truncation, an edited
    header) raises a DataError naming it, before training reads a token of it. Shards without a
    sidecar (e.g. karpathy's published ones) cannot be checked and are logged as such."""
    files = sorted(Path(p) for p in globlib.glob(pattern))
    unchecked = []
    with tqdm(total=sum(f.stat().st_size for f in files), unit="B", unit_scale=True, desc="verify shards",
              disable=None if progress and files else True, leave=False) as bar:  # None: only on a terminal
        for path in files:
            sidecar = sidecar_path(path)
            expected = read_json(sidecar, "shard sidecar").get("sha256") if sidecar.exists() else None
            if expected is None:
                unchecked.append(path.name)
            else:
                actual = sha256_file(path)
                if actual != expected:
                    raise DataError(
                        f"token shard {path}: sha256 {actual[:16]}… differs from {expected[:16]}… recorded in "
                        f"{sidecar.name} when it was written: the file changed since (a flipped bit, a truncation, "
                        f"an edit). Training has not read it. Delete it and its sidecar and regenerate the "
                        f"shards (`gpt2train prepare` or `gpt2train pipeline`).")
            bar.update(path.stat().st_size)
    if unchecked and progress:
        log.warning("%d shard(s) have no sidecar with a sha256 and were not verified: %s", len(unchecked),
                    ", ".join(unchecked[:5]) + (" …" if len(unchecked) > 5 else ""))


class ShardFileWriter:
    """Streams tokens into one shard under a temp name; `finish()` patches the header and renames.

    Memory stays flat whatever the shard size: tokens go straight to the file. A full disk
    raises a DataError naming the shard; the temp file is removed and no file with the
    final name is created or touched.
    """

    def __init__(self, path: Path, report_as: Path | None = None):
        self.path = path
        self.report_as = report_as or path  # the name errors give (the final one, when staged)
        self.tmp = temp_path_for(path)
        self.count = 0
        path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(self.tmp, "wb")
        self._guard(lambda: self._f.write(make_header(0)))  # placeholder, patched in finish()

    def write(self, tokens: np.ndarray) -> None:
        self._guard(lambda: self._f.write(tokens.astype(TOKEN_DTYPE, copy=False).tobytes()))
        self.count += len(tokens)

    def finish(self) -> Path:
        def _finish():
            self._f.seek(0)
            self._f.write(make_header(self.count))
            self._f.flush()
            os.fsync(self._f.fileno())
            self._f.close()
            os.replace(self.tmp, self.path)
        self._guard(_finish)
        return self.path

    def abort(self) -> None:
        with contextlib.suppress(OSError):
            self._f.close()
        with contextlib.suppress(FileNotFoundError):
            self.tmp.unlink()

    def _guard(self, op) -> None:
        try:
            op()
        except BaseException as e:
            self.abort()
            if is_disk_full(e):
                raise disk_full_error(self.report_as) from e
            raise
