"""Corpus files -> GPT-2 token shards with lineage sidecars (`gpt2train prepare`, the `token_shards` asset).

Two layouts, one writer:

- **stream** (`gpt2train prepare`, llm.c's layout): all documents of all files, in source
  order, form one stream cut every `shard_size` tokens. Shard 0 is
  `<prefix>_val_000000.bin`, the rest `<prefix>_train_%06d.bin`, the last one holds the
  remainder. Byte-identical to llm.c's `dev/data/fineweb.py -s shard_size` on the same
  documents (tests/test_prepare.py checks it against a re-implementation of that script).

- **partition** (the Dagster asset, one run per source file, so a new file only adds
  shards): each file's stream is cut on its own. Train shards are named
  `<prefix>_train_<file tag>_%06d.bin` so llm.c's `<prefix>_train_*.bin` glob still finds
  them all. The validation tokens are the first `shard_size` tokens of the validation
  file (`shards.val_file`, default the first source file), written as
  `<prefix>_val_000000.bin`: the same tokens as llm.c's val shard whenever that file holds
  at least `shard_size` tokens (true for FineWeb-Edu's ~2 GB files at 100 M tokens).

In either layout a first file smaller than `shard_size` becomes validation whole. When validation takes
a whole source file or more than VAL_SHARE_NOTICE of the tokens, `validation_notice` says so in one line
(gpt2train/data/stage.py logs it: `prepare` once its stream is written, the partition layout once every
source file of the corpus is sharded, once per split).

A run writes every shard and its sidecar `<shard>.bin.json` into a staging folder
(`<out>/.staging-<pid>-<thread>/`) and moves the complete set into place at the end, so a
failure leaves the previous run's shards exactly as they were; a partition's manifest
(`partitions/<tag>.json`) is written last and is what marks the partition complete.

Memory is bounded by `shards.batch_documents` (two batches read ahead in each of the two files read at once:
gpt2train/data/feed.py) and `corpus.max_document_chars`, not by the corpus, a file or the shard size. Each
source file's stamp is checked once it has been read (hashed again only if the stamp moved:
gpt2train/data/corpus.py): one that changed meanwhile is refused and nothing is published. Each shard is
hashed once, when it is complete, for its sidecar; every later check of it reads that record
(gpt2train/data/shards.py).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
from tqdm.auto import tqdm

from gpt2train.config import Config, config_to_dict
from gpt2train.data.corpus import CorpusRecord, check_unchanged, iter_document_batches, reader_char_limit
from gpt2train.data.feed import documents_of, done_future, wait_all
from gpt2train.errors import DataError
from gpt2train.fileio import read_json, sha256_file, write_json_atomic
from gpt2train.layout import partition_shard_name, partition_tag, shard_partition_manifest, stream_shard_name
from gpt2train.lineage.records import code_version, data_dir_field, provenance, recorded_path, sidecar_path
from gpt2train.data.shards import SHARD_MAGIC, SHARD_VERSION, ShardFileWriter, verification_path
from gpt2train.data.tokenizer import DocumentEncoder, ranks_sha256

log = logging.getLogger(__name__)


def shards_code_version(cfg: Config) -> str:
    """Only the settings that change a shard's bytes: not `threads` or `batch_documents`. The
    corpus settings that do (`text_field`, `max_documents_per_file`) reach the shards through
    the corpus data version (gpt2train/data/stage.py)."""
    s = cfg.shards
    return code_version(["shards"], {"tokenizer": s.tokenizer, "shard_size": s.shard_size,
                                             "prefix": s.prefix, "val_file": s.val_file})


@dataclass
class _OpenShard:
    writer: ShardFileWriter
    sources: list[CorpusRecord] = field(default_factory=list)


class ShardSink:
    """Cuts a token stream into shards of exactly `shard_size` tokens (the last: the rest),
    written into `staging` under their final names (errors name the final path in `out_dir`).

    A complete shard is finished (header, fsync, rename, hash, sidecar: `on_complete`) on a thread of its
    own, in order, while the next one is written: the hash of a 200 MB shard no longer stops the stream."""

    def __init__(self, staging: Path, out_dir: Path, shard_size: int, name_for: Callable[[int], str],
                 on_complete: Callable[[Path, int, int, list[CorpusRecord]], None]):
        self.staging, self.out_dir = staging, out_dir
        self.shard_size, self.name_for, self.on_complete = shard_size, name_for, on_complete
        self.index = 0
        self.source: CorpusRecord | None = None
        self._open: _OpenShard | None = None
        self._finisher = ThreadPoolExecutor(1, thread_name_prefix="shard-finish")
        self._finishing: list[Future] = []

    def write(self, tokens: np.ndarray) -> None:
        pos = 0
        while pos < len(tokens):
            if self._open is None:
                name = self.name_for(self.index)
                self._open = _OpenShard(ShardFileWriter(self.staging / name, report_as=self.out_dir / name))
            if self.source is not None and self.source not in self._open.sources:
                self._open.sources.append(self.source)
            take = min(len(tokens) - pos, self.shard_size - self._open.writer.count)
            self._open.writer.write(tokens[pos : pos + take])
            pos += take
            if self._open.writer.count == self.shard_size:
                self._finish()

    def close(self) -> None:
        """Finish the last shard and wait for every shard to be finished; raises the first failure."""
        if self._open is not None and self._open.writer.count > 0:
            self._finish()
        self._finisher.shutdown(wait=True)
        for f in self._finishing:
            f.result()

    def abort(self) -> None:
        if self._open is not None:
            self._open.writer.abort()
            self._open = None
        self._finisher.shutdown(wait=True)  # the shards queued are finished (seconds): nothing is left writing

    def _finish(self) -> None:
        shard, self._open = self._open, None
        self._finishing.append(self._finisher.submit(self._complete, shard, self.index))
        self.index += 1
        finished = [f for f in self._finishing if f.done()]
        for f in finished:  # a shard that could not be finished (a full disk) stops the stream now
            f.result()
        self._finishing = [f for f in self._finishing if f not in finished]

    def _complete(self, shard: _OpenShard, index: int) -> None:
        path = shard.writer.finish()
        self.on_complete(path, index, shard.writer.count, shard.sources)


STAGING_PREFIX = ".staging-"


def _publish(staging: Path, out_dir: Path, names: list[str]) -> None:
    """Move completed shards and their sidecars from `staging` into `out_dir` (renames only)."""
    for name in names:
        verification_path(out_dir / name).unlink(missing_ok=True)  # of the shard replaced: it vouches for nothing now
        os.replace(staging / name, out_dir / name)
        os.replace(sidecar_path(staging / name), sidecar_path(out_dir / name))


def _remove_abandoned_staging(out_dir: Path) -> None:
    """Delete staging folders left by writers that died (their pid is gone)."""
    for d in out_dir.glob(f"{STAGING_PREFIX}*"):
        pid = d.name[len(STAGING_PREFIX):].split("-", 1)[0]
        if pid.isdigit() and not _pid_alive(int(pid)):
            shutil.rmtree(d, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class ShardsResult:
    out_dir: Path
    shards: list[dict]  # the sidecars, in order
    tokens: int
    documents: int
    seconds: float

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / max(self.seconds, 1e-9)


# llm.c's validation shard is the first `shard_size` tokens: a small corpus, or a first file smaller than
# a shard, gives validation a large share of the tokens, all of that file among them, and no log line
# said so (34% of a 3-file corpus was never trained on). Above this share, or when a whole source file is
# validation, a notice names the numbers and the setting that changes them.
VAL_SHARE_NOTICE = 0.10


@dataclass
class ValidationSplit:
    """How much of a corpus the validation shard takes."""

    val_tokens: int
    total_tokens: int
    whole_files: list[str]  # source files (keys) every token of which is validation
    files: int              # source files counted
    layout: str             # "stream" (`prepare`) or "partition" (the token_shards asset)

    @property
    def share(self) -> float:
        return self.val_tokens / self.total_tokens if self.total_tokens else 0.0

    def to_dict(self) -> dict:
        return {"val_tokens": self.val_tokens, "total_tokens": self.total_tokens, "share": round(self.share, 6),
                "whole_files": self.whole_files, "files": self.files}


def stream_validation_split(shards: list[dict]) -> ValidationSplit:
    """The split of one stream of shards (their sidecars, in order): shard 0 is validation."""
    val = [s for s in shards if s["split"] == "val"]
    in_val = [src["key"] for s in val for src in s["sources"]]
    in_train = {src["key"] for s in shards if s["split"] != "val" for src in s["sources"]}
    files = {src["key"] for s in shards for src in s["sources"]}
    return ValidationSplit(sum(s["tokens"] for s in val), sum(s["tokens"] for s in shards),
                           [k for k in dict.fromkeys(in_val) if k not in in_train], len(files), "stream")


def partition_validation_split(manifests: list[dict]) -> ValidationSplit:
    """The split over source files sharded one at a time (their partition manifests)."""
    val = sum(s["tokens"] for m in manifests for s in m["shards"] if s["split"] == "val")
    whole = [m["key"] for m in manifests if m["shards"] and all(s["split"] == "val" for s in m["shards"])]
    return ValidationSplit(val, sum(m["tokens"] for m in manifests), whole, len(manifests), "partition")


def validation_notice(split: ValidationSplit, cfg: Config) -> str | None:
    """One line when validation takes a whole source file or more than VAL_SHARE_NOTICE of the tokens."""
    if not split.val_tokens or (not split.whole_files and split.share <= VAL_SHARE_NOTICE):
        return None
    size = cfg.shards.shard_size
    whole = ""
    if split.whole_files:
        names = ", ".join(split.whole_files[:3]) + (f" and {len(split.whole_files) - 3} more"
                                                     if len(split.whole_files) > 3 else "")
        whole = f", all of {names} (fewer tokens than a shard)"
    if split.layout == "stream":
        change = f"lower shards.shard_size (now {size:,}; the validation shard is the stream's first shard)"
    else:
        change = (f"lower shards.shard_size (now {size:,}; validation is the first shard of shards.val_file), or "
                  f"set shards.val_file to a source file holding more than that")
    return (f"validation takes {split.share:.1%} of the corpus's tokens: {split.val_tokens:,} of "
            f"{split.total_tokens:,} in {split.files} source file(s){whole}; training never sees them. To "
            f"change it, {change}")


# Source files whose readers run at once: the one being tokenized and the next, so that the tokenizer
# never waits for a file to open (gpt2train/data/feed.py).
FILES_READ_AHEAD = 2


def write_shards(records: Sequence[CorpusRecord | Future], out_dir: str | Path, cfg: Config, *,
                 layout: str = "stream", is_val_file: bool = False, progress: bool = True,
                 before_publish: Callable[[list[CorpusRecord]], None] | None = None,
                 documents: int | None = None) -> ShardsResult:
    """Tokenize `records` (in order) into shards under `out_dir`; returns their sidecars.

    layout="stream": llm.c's layout over all records. layout="partition": one record, the
    per-source-file layout described in the module docstring.

    `records` may hold futures of records still being fetched (`gpt2train prepare`: gpt2train/data/feed.py
    fetch_ahead): the first file is tokenized while later ones are fetched, and a fetch that fails stops the
    run as soon as it is known. `before_publish(records)` is called once every record is in and every shard
    is complete, before any is moved into place (`prepare` writes the corpus records there). `documents`:
    how many there are, when known before the records are (the progress bar's total; else it grows as
    records come in).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _remove_abandoned_staging(out_dir)
    # Everything is written into a staging folder first and moved into place only when the
    # whole set is complete: a failure (full disk, bad document, kill) leaves the shards of an
    # earlier run untouched, instead of half old and half new.
    staging = out_dir / f"{STAGING_PREFIX}{os.getpid()}-{threading.get_ident()}"
    if layout == "partition" and len(records) != 1:
        raise ValueError("the partition layout shards exactly one source file")
    fetches = [r if isinstance(r, Future) else done_future(r) for r in records]
    scfg = cfg.shards
    code_ver = shards_code_version(cfg)
    t0 = time.perf_counter()
    written: list[dict] = []

    split_chars = cfg.corpus.max_document_chars if cfg.corpus.oversize_documents == "split" else None
    with DocumentEncoder(scfg.tokenizer, scfg.threads, split_chars) as encoder:
        tokenizer_info = {"name": scfg.tokenizer, "ranks_sha256": ranks_sha256(encoder.enc), "eot": encoder.eot}

        def on_complete(path: Path, index: int, count: int, sources: list[CorpusRecord]) -> None:
            # From the position, not the name: a source file called `x_val_y` is still train.
            split = "val" if index == 0 and (layout == "stream" or is_val_file) else "train"
            sidecar = _shard_sidecar(path, index, split, count, sources, layout, tokenizer_info, cfg, code_ver)
            write_json_atomic(sidecar_path(path), sidecar)
            written.append(sidecar)

        if layout == "stream":
            name_for = lambda i: stream_shard_name(scfg.prefix, i)  # noqa: E731
        else:
            tag = partition_tag(records[0].key)
            name_for = lambda i: partition_shard_name(scfg.prefix, tag, i, is_val_file)  # noqa: E731
        staging.mkdir()  # after every check that can fail: the try below always removes it
        sink = ShardSink(staging, out_dir, scfg.shard_size, name_for, on_complete)
        bar = tqdm(total=documents or _documents_known(fetches), unit="doc", desc=f"tokenize → {out_dir.name}",
                   disable=None if progress else True, mininterval=1.0)
        try:
            n_tokens = _tokenize_into(sink, fetches, encoder, cfg, bar, grow_total=documents is None)
            sink.close()
            fetched = wait_all(fetches)
            if before_publish is not None:
                before_publish(fetched)
            _publish(staging, out_dir, [s["file"] for s in written])
        except BaseException:
            sink.abort()
            raise
        finally:
            bar.close()
            shutil.rmtree(staging, ignore_errors=True)

    seconds = time.perf_counter() - t0
    log.info("wrote %d shard(s), %s tokens, to %s in %.1fs (%.2fM tokens/s)", len(written), f"{n_tokens:,}",
             out_dir, seconds, n_tokens / max(seconds, 1e-9) / 1e6)
    return ShardsResult(out_dir, written, n_tokens, sum(r.documents for r in fetched), seconds)


def _documents_known(fetches: list[Future]) -> int:
    """Documents in the files fetched so far: the progress bar's total, which grows as fetches finish."""
    return sum(f.result().documents for f in fetches if f.done() and not f.cancelled() and f.exception() is None)


def _tokenize_into(sink: ShardSink, fetches: list[Future], encoder: DocumentEncoder, cfg: Config,
                   bar: tqdm, grow_total: bool) -> int:
    """Every document of the fetched records, in order, as tokens into `sink`; returns the token count.
    One window of tokenizer tasks spans every file, and the next file is read while this one is tokenized."""

    def open_batches(record: CorpusRecord) -> Iterator[list[str]]:  # on the file's reader thread
        yield from iter_document_batches(record.local_path, cfg.corpus.text_field, cfg.shards.batch_documents,
                                         cfg.corpus.max_documents_per_file, reader_char_limit(cfg.corpus))
        # Its shards are still in staging: a file appended to (or rewritten) while it was read gave
        # documents its record's hash and count do not describe, so none of them is published.
        check_unchanged(record.local_path, record.sha256, record.file_stamp(), "tokenized")

    n_tokens = 0
    documents = documents_of(fetches, open_batches, files_ahead=FILES_READ_AHEAD)
    with contextlib.closing(documents):  # on an error, every reader thread is stopped and its file closed
        for tokens, n_docs, record in encoder.encode_tagged(documents):
            if record is not sink.source:
                sink.source = record
                if grow_total:
                    bar.total = _documents_known(fetches)
            sink.write(tokens)
            n_tokens += len(tokens)
            bar.update(n_docs)
            bar.set_postfix(tokens=f"{n_tokens / 1e6:.1f}M", shard=sink.index, refresh=False)
    return n_tokens


def _shard_sidecar(path: Path, index: int, split: str, count: int, sources: list[CorpusRecord], layout: str,
                   tokenizer_info: dict, cfg: Config, code_ver: str) -> dict:
    """The lineage sidecar of one complete shard."""
    return {
        "artifact": "token_shard",
        "file": path.name,
        "split": split,
        "index": index,
        "tokens": count,
        "bytes": path.stat().st_size,
        "sha256": sha256_file(path),
        "format": {"magic": SHARD_MAGIC, "version": SHARD_VERSION, "dtype": "uint16"},
        "layout": layout,
        "sources": [{k: getattr(r, k) for k in ("key", "source", "repo", "revision", "sha256", "bytes")}
                    for r in sources],
        "tokenizer": tokenizer_info,
        "shard_size": cfg.shards.shard_size,
        "config": {"shards": config_to_dict(cfg.shards), "corpus": config_to_dict(cfg.corpus)},
        **provenance("token_shards", code_ver),
    }


def write_partition_shards(record: CorpusRecord, out_dir: str | Path, cfg: Config, *, is_val_file: bool,
                           progress: bool = True) -> dict:
    """Shard one source file (the `token_shards` asset's partition) and write its manifest.

    Re-running replaces the partition's shards; shards an earlier run wrote that this run did
    not (a larger shard size, say) are removed only after the new manifest is in place.
    """
    out_dir = Path(out_dir)
    mpath = shard_partition_manifest(out_dir, record.key)
    previous = read_json(mpath, "partition manifest") if mpath.exists() else None
    val_shard = out_dir / partition_shard_name(cfg.shards.prefix, "", 0, is_val_file=True)
    if is_val_file and sidecar_path(val_shard).exists():
        owner = [s["key"] for s in read_json(sidecar_path(val_shard), "shard sidecar")["sources"]]
        if owner != [record.key]:
            raise DataError(f"{val_shard} holds the validation tokens of {owner[0] if owner else '?'}, not "
                            f"{record.key}; set shards.val_file to the file you want, delete {val_shard} and its "
                            f"sidecar, and regenerate the shards of both source files")
    result = write_shards([record], out_dir, cfg, layout="partition", is_val_file=is_val_file, progress=progress)
    manifest = {
        "artifact": "token_shards_partition",
        "key": record.key,
        "source": {**record.to_dict(), "local_path": recorded_path(record.local_path, cfg.data_dir)},
        "data_dir": data_dir_field(mpath.parent, cfg.data_dir),
        "is_val_file": is_val_file,
        "shards": [{k: s[k] for k in ("file", "split", "tokens", "sha256")} for s in result.shards],
        "tokens": result.tokens,
        "documents": result.documents,
        "data_version": partition_data_version(result.shards),
        "seconds": round(result.seconds, 3),
        **provenance("token_shards", shards_code_version(cfg)),
    }
    write_json_atomic(mpath, manifest)
    if previous:
        current = {s["file"] for s in manifest["shards"]}
        for old in previous.get("shards", []):
            if old["file"] not in current and not _rewritten_since(out_dir / old["file"], old["sha256"]):
                for p in (out_dir / old["file"], sidecar_path(out_dir / old["file"]),
                          verification_path(out_dir / old["file"])):
                    p.unlink(missing_ok=True)
    return manifest


def _rewritten_since(shard: Path, sha256: str) -> bool:
    """Whether another partition has written `shard` since our manifest recorded it with `sha256`
    (the val shard, after `shards.val_file` moved to another file): then it is not ours to delete."""
    try:
        return read_json(sidecar_path(shard), "shard sidecar").get("sha256") != sha256
    except DataError:  # no (readable) sidecar: nobody completed it since
        return False


def partition_data_version(shards: list[dict]) -> str:
    """A partition's data version: hash of its shards' names and hashes, in order."""
    h = hashlib.sha256()
    for s in shards:
        h.update(f"{s['file']}:{s['sha256']};".encode())
    return h.hexdigest()[:24]


def load_sidecar(shard: str | Path) -> dict:
    path = sidecar_path(shard)
    if not path.exists():
        raise DataError(f"token shard {shard} has no lineage sidecar {path.name}; regenerate the shards")
    return read_json(path, "shard sidecar")
