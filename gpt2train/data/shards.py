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
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
from tqdm import tqdm

from gpt2train.errors import DataError
from gpt2train.fileio import (
    FileStamp, disk_full_error, file_stamp, hash_file, is_disk_full, read_json, temp_path_for, write_json_atomic,
)
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


def validate_shard(path: str | Path, expected_sha256: str | None, vocab_size: int = 50257,
                   record: bool = False) -> list[ShardCheck]:
    """The four shard checks: header, size = header count, tokens < vocab, sha256 = sidecar, in one read of
    the file (the largest token is found in the pass that hashes it). With `record`, a shard that passes all
    four gets a verification record (`record_verification`), so the trainer does not hash it again."""
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
    biggest = 0

    def largest_token(offset: int, chunk: bytes) -> None:
        nonlocal biggest
        # Chunks start at multiples of 8 MiB (gpt2train/fileio.py), so the body's part of each starts on a token.
        start = max(0, HEADER_BYTES - offset)
        n = (len(chunk) - start) // TOKEN_DTYPE.itemsize
        if n > 0:
            biggest = max(biggest, int(np.frombuffer(chunk, dtype=TOKEN_DTYPE, count=n, offset=start).max()))

    actual, stamp = hash_file(path, largest_token if size_ok else None) if path.exists() else ("(missing)", None)
    if size_ok:
        checks.append(ShardCheck("tokens_in_vocab", biggest < vocab_size,
                                 f"max token id {biggest} (vocabulary {vocab_size})"))
    else:
        checks.append(ShardCheck("tokens_in_vocab", False, "not checked: header or size is wrong"))
    if expected_sha256 is None:
        checks.append(ShardCheck("sha256_matches_sidecar", False, "no lineage sidecar with a sha256"))
    else:
        checks.append(ShardCheck("sha256_matches_sidecar", actual == expected_sha256,
                                 f"sha256 {actual[:16]}…, sidecar {expected_sha256[:16]}…"))
    if record and stamp is not None and all(c.passed for c in checks):
        record_verification(path, actual, stamp)
    return checks


# Verification records. A shard's sha256 is computed once, where it is written (its sidecar). Whatever
# hashes it again to check it (the token_shards asset checks, `gpt2train verify`, the trainer's
# verify_shards) and finds the sidecar's sha256, with the file's stamp the same before and after its read,
# records that beside it: `<shard>.bin.verified.json` = {sha256, stamp}. The record vouches for the shard
# while (1) its sha256 is the one the sidecar records now and (2) the shard's stamp now (size, mtime, ctime,
# inode: gpt2train/fileio.py FileStamp) is the recorded one: no write, truncation, copy or replacement since
# the check, so the bytes are the ones it hashed. The trainer hashes only what no record vouches for; the
# explicit verifications (`gpt2train verify`, the asset checks, `pipeline --verify`, `gpt2train lineage`)
# always hash. A record that cannot be written (a read-only shard folder) costs a hash at the next launch.
VERIFIED_SUFFIX = ".verified.json"


def verification_path(shard: str | Path) -> Path:
    """`x.bin` -> `x.bin.verified.json`."""
    shard = Path(shard)
    return shard.with_name(shard.name + VERIFIED_SUFFIX)


def record_verification(shard: Path, sha256: str, stamp: FileStamp) -> None:
    """Record that `shard` was hashed whole to `sha256`, its sidecar's, with `stamp` unchanged throughout."""
    try:
        write_json_atomic(verification_path(shard), {"artifact": "token_shard_verification", "file": shard.name,
                                                     "sha256": sha256, "stamp": stamp.to_dict()})
    except (OSError, DataError) as e:  # read-only data, a full disk: the shard is hashed again next time
        log.debug("no verification record for %s (%s); it will be hashed again at the next check", shard, e)


def vouched_for(shard: Path, sidecar_sha256: str) -> bool:
    """Whether a verification record vouches for `shard` holding `sidecar_sha256` (the rule above)."""
    try:
        rec = json.loads(verification_path(shard).read_text())
    except (OSError, ValueError):
        return False
    stamp = FileStamp.from_dict(rec.get("stamp")) if isinstance(rec, dict) else None
    return stamp is not None and rec.get("sha256") == sidecar_sha256 and file_stamp(shard) == stamp


def share_of(files: list[Path], rank: int, world: int) -> list[Path]:
    """Rank `rank`'s share of `files` when `world` ranks split them by bytes (largest first, each to the rank
    with the fewest bytes so far): every rank computes the same split from the same sizes, without talking."""
    sizes = {f: f.stat().st_size for f in files}
    loads = [0] * world
    mine = []
    for f in sorted(files, key=lambda f: (-sizes[f], str(f))):
        r = loads.index(min(loads))
        loads[r] += sizes[f]
        if r == rank:
            mine.append(f)
    return sorted(mine)


@dataclass
class ShardVerification:
    """What one rank's `verify_shard_hashes` found: a line per changed shard, and the shards found intact."""

    problems: list[str]
    verified: list[tuple[Path, str, FileStamp]]  # (shard, sha256, its stamp while it was hashed)

    def record(self) -> None:
        """Write the verification records of the shards found intact (`record_verification`). The trainer
        calls it once every input is checked and the run directory is its own: a launch refused for
        another reason leaves the data dir as it was."""
        for path, sha256, stamp in self.verified:
            record_verification(path, sha256, stamp)


def verify_shard_hashes(patterns: Iterable[str], rank: int = 0, world: int = 1,
                        progress: bool = False) -> ShardVerification:
    """Hash this rank's share (`share_of`) of the shards matching `patterns` that no verification record
    vouches for, and compare each with its sidecar's sha256; `problems` has one line per shard that changed
    after it was written (a flipped bit, a truncation, an edited header), naming it. The caller gathers the
    lines of every rank (gpt2train/training/loop.py): each byte of the job's shards is hashed by one rank
    at most, and not at all while a record vouches for it. Shards without a sidecar (e.g. karpathy's
    published ones) cannot be checked and are logged as such."""
    files = sorted({Path(p) for pattern in patterns for p in globlib.glob(pattern)})
    unchecked, vouched, to_hash, problems = [], 0, [], []
    for path in share_of(files, rank, world):
        sidecar = sidecar_path(path)
        try:
            expected = read_json(sidecar, "shard sidecar").get("sha256") if sidecar.exists() else None
        except DataError as e:  # a verdict like any other: every rank gets it and raises it (one rank reads it)
            problems.append(str(e))
            continue
        if expected is None:
            unchecked.append(path.name)
        elif vouched_for(path, expected):
            vouched += 1
        else:
            to_hash.append((path, sidecar, expected))
    verified = []
    with tqdm(total=sum(p.stat().st_size for p, _, _ in to_hash), unit="B", unit_scale=True, desc="verify shards",
              disable=None if progress and to_hash else True, leave=False) as bar:  # None: only on a terminal
        for path, sidecar, expected in to_hash:
            actual, stamp = hash_file(path)
            if actual != expected:
                problems.append(
                    f"token shard {path}: sha256 {actual[:16]}… differs from {expected[:16]}… recorded in "
                    f"{sidecar.name} when it was written: the file changed since (a flipped bit, a truncation, "
                    f"an edit). Training has not read it. Delete it and its sidecar and regenerate the "
                    f"shards (`gpt2train prepare` or `gpt2train pipeline`).")
            elif stamp is not None:
                verified.append((path, actual, stamp))
            bar.update(path.stat().st_size)
    log.info("verify shards (rank %d of %d): %d hashed, %d vouched for by their verification records, %d without "
             "a sidecar", rank, world, len(to_hash), vouched, len(unchecked))
    if unchecked:
        log.warning("%d shard(s) have no sidecar with a sha256 and were not verified: %s", len(unchecked),
                    ", ".join(unchecked[:5]) + (" …" if len(unchecked) > 5 else ""))
    return ShardVerification(problems, verified)


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
