"""The raw corpus: which source files there are, fetching one, and reading its documents.

A corpus is an ordered list of source files, each identified by a *key*: its path relative
to the source root (`sample/10BT/000_00000.parquet`), identical for the Hub and for a local
mirror of it. Keys are the Dagster partition keys of the `corpus` and `token_shards`
assets, and the sorted key order is the source order (the order `datasets.load_dataset`
reads FineWeb-Edu in, so llm.c's document stream is ours too).

Supported files: `.parquet` (column `corpus.text_field`), `.jsonl` (one JSON object per
line, key `corpus.text_field`), `.txt` (the whole file is one document, UTF-8, byte-exact: CRLF
and CR stay as they are, as in a .jsonl string). A `hf-dataset:` source is any Hugging Face dataset
(Hub or local folder) in whatever formats `datasets` reads, streamed instead of downloaded: its files
are listed and read in gpt2train/data/hf_dataset.py, and a partition's local file is a stream descriptor.

Listing never follows a directory symlink (it could lead out of the source, or back into it and
list the same files forever); file symlinks are followed, and two keys naming one file are refused.
Fetching a file is two steps: `check_source_file` (it is there and holds text; its documents counted) and
`hash_checked_file` (hashed once; a Hub file is downloaded and hashed on the way, then counted).
`gpt2train prepare` checks every file before it writes anything and hashes them while it tokenizes
(gpt2train/data/feed.py); the `corpus` asset does both at once (`fetch_source_file`). The record keeps the
hash with the file's stamp (size, mtime, ctime, inode: gpt2train/fileio.py FileStamp), the one it had while
counted and hashed. Every later read of it (tokenizing in gpt2train/data/shard_writer.py) checks the stamp
after it, and hashes again only when the stamp moved: a file that changed while it was read is refused, by
name, without a second pass over its bytes.

    files = list_source_files(cfg.corpus)
    record = fetch_source_file(cfg.corpus, files[0].key, data_dir)   # check, count, (download +) hash
    for texts in iter_document_batches(record.local_path, cfg.corpus.text_field, 512): ...
"""

from __future__ import annotations

import contextlib
import fnmatch
import glob
import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

from gpt2train.data import hf_dataset, hub
from gpt2train.config import CorpusConfig
from gpt2train.errors import DataError
from gpt2train.fileio import FileStamp, file_stamp, hash_file, unchanged_since
from gpt2train.layout import corpus_hub_dir

SUPPORTED_SUFFIXES = (".parquet", ".jsonl", ".txt")

# How each file type is read into documents. A change to what a reader yields for the same bytes bumps
# its number here and the corpus stage's (gpt2train/lineage/stage_versions.py). A number above 1 enters
# the file's data version (gpt2train/data/stage.py), so only shards of that file type go stale.
READER_VERSIONS = {".parquet": 1, ".jsonl": 1, ".txt": 2}  # .txt 2: read byte-exact (newlines kept)

STOP_WRITERS = "stop whatever writes to it (a corpus file must stay as it is while gpt2train reads it) and run again"

# Rows decoded at a time when a parquet row group is read to find its null texts.
PARQUET_READ_ROWS = 512

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SourceFile:
    """One source file before it is fetched."""

    key: str  # partition key: path relative to the source root, '/'-separated
    local_path: Path | None  # None for a Hub file not yet downloaded


@dataclass
class CorpusRecord:
    """What the corpus asset records per source file: its lineage and data version."""

    key: str
    source: str  # "hub", "local" or "hf-dataset"
    repo: str | None
    revision: str | None  # the commit the Hub resolved the configured revision to
    local_path: str  # the file read (for hf-dataset: its stream descriptor, gpt2train/data/hf_dataset.py)
    sha256: str
    bytes: int
    documents: int  # documents taken (after corpus.max_documents_per_file)
    # The file's stamp when it was hashed (FileStamp.to_dict): while it is the same, the file is as hashed.
    # None in a record written before stamps: its file is hashed again where the record is checked.
    stamp: dict | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    def file_stamp(self) -> FileStamp | None:
        return FileStamp.from_dict(self.stamp)


def list_source_files(cfg: CorpusConfig) -> list[SourceFile]:
    """The configured source files in source order (first `cfg.files` of them)."""
    if hf_dataset.is_dataset_source(cfg.source):
        files = [SourceFile(key, None) for key in hf_dataset.list_dataset_files(cfg)]
    elif cfg.source == "hub":
        files = [SourceFile(f.path, None) for f in hub.list_hub_files(cfg.dataset, cfg.name, cfg.revision)]
    else:
        files = _list_local(cfg)
    return files[: cfg.files] if cfg.files else files


def _list_local(cfg: CorpusConfig) -> list[SourceFile]:
    src = Path(cfg.source)
    skipped: set[Path] = set()  # directory symlinks not entered
    if glob.has_magic(cfg.source):
        # the glob's longest literal prefix is the root that keys are relative to
        literal = []
        for part in src.parts:
            if glob.has_magic(part):
                break
            literal.append(part)
        root = Path(*literal) if literal else Path(".")
        paths = sorted(set(_glob_files(root, src.parts[len(literal):], skipped)))
    elif src.is_file():
        root, paths = src.parent, [src]
    elif src.is_dir():
        # A mirror with the Hub's layout: use the config's sub-folder when it is there.
        try:
            sub = src / hub.config_subdir(cfg.name)
        except DataError:  # not a FineWeb config name: the folder is the user's own layout
            sub = src
        search = sub if sub.is_dir() else src
        root = src
        paths = sorted(p for p in _walk_files(search, skipped) if p.suffix in SUPPORTED_SUFFIXES)
    else:
        raise DataError(f"corpus.source {cfg.source} does not exist; give 'hub', a folder, a file or a glob "
                        f"of .parquet/.jsonl/.txt files")
    for link in sorted(skipped):
        log.warning("corpus listing skips directory symlink %s -> %s: a listing never follows one (it could lead "
                    "out of corpus.source or loop back into it); to read that folder, give it as corpus.source",
                    link, os.readlink(link))
    bad = [p for p in paths if p.suffix not in SUPPORTED_SUFFIXES]
    if bad:
        raise DataError(f"{bad[0]}: unsupported file type {bad[0].suffix!r}; corpus files must be "
                        f"{', '.join(SUPPORTED_SUFFIXES)}")
    if not paths:
        raise DataError(f"corpus.source {cfg.source} holds no {', '.join(SUPPORTED_SUFFIXES)} files; point "
                        f"corpus.source (prepare --source) at a folder, file or glob of them, or 'hub'")
    _refuse_one_file_twice(paths)
    return [SourceFile(p.relative_to(root).as_posix(), p) for p in paths]


# Listing. Python's glob follows directory symlinks (`/c/**` with `/c/loop -> .` lists every file once per
# nesting level, until the path is too long), so the corpus walks folders itself: a directory symlink is
# never entered, whether it leads out of the source or back into it, and is logged as skipped. File
# symlinks are followed (a Hub cache's snapshot folder links its blobs). Hidden names (a leading '.')
# are skipped, as glob does unless the pattern part starts with '.'.

def _walk_files(top: Path, skipped: set[Path]) -> Iterator[Path]:
    """Every non-hidden file under `top`, without entering directory symlinks (added to `skipped`)."""
    for dirpath, dirnames, filenames in os.walk(top):  # followlinks=False: symlinked dirs are listed, not entered
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        skipped.update(Path(dirpath, d) for d in dirnames if os.path.islink(os.path.join(dirpath, d)))
        for name in filenames:
            path = Path(dirpath, name)
            if not name.startswith(".") and path.is_file():  # is_file: a broken symlink is no file
                yield path


def _glob_files(folder: Path, parts: tuple[str, ...], skipped: set[Path]) -> Iterator[Path]:
    """Files under `folder` matching the glob pattern `parts` (one per path component; `**` = any
    number of folders), as glob.glob(recursive=True) would, without entering directory symlinks (added
    to `skipped`). A file can match twice (`**/**/x`): the caller dedupes."""
    head, rest = parts[0], parts[1:]
    if head == "**":
        if not rest:  # a trailing `**` matches everything below
            yield from _walk_files(folder, skipped)
            return
        yield from _glob_files(folder, rest, skipped)
        for dirpath, dirnames, _ in os.walk(folder):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            for d in dirnames:
                if os.path.islink(os.path.join(dirpath, d)):
                    skipped.add(Path(dirpath, d))
                else:
                    yield from _glob_files(Path(dirpath, d), rest, skipped)
        return
    try:
        names = sorted(os.listdir(folder))
    except OSError:  # unreadable or not a folder: glob lists nothing there either
        return
    for name in names:
        if (name.startswith(".") and not head.startswith(".")) or not fnmatch.fnmatchcase(name, head):
            continue
        path = folder / name
        if not rest:
            if path.is_file():
                yield path
        elif path.is_symlink():
            if path.is_dir():
                skipped.add(path)
        elif path.is_dir():
            yield from _glob_files(path, rest, skipped)


def _refuse_one_file_twice(paths: list[Path]) -> None:
    """Two keys for one file (a file symlink, a hard link) would tokenize its documents twice."""
    seen: dict[tuple[int, int], Path] = {}
    for p in paths:
        st = p.stat()
        first = seen.setdefault((st.st_dev, st.st_ino), p)
        if first is not p:
            raise DataError(f"{first} and {p} are the same file (through a symlink or hard link), so its documents "
                            f"would be read twice; remove one of them or narrow corpus.source")


def check_source_key(cfg: CorpusConfig, key: str) -> None:
    """Refuse a partition key that names no source file (a key added by hand, a file since deleted),
    before anything is written for it."""
    if hf_dataset.is_dataset_source(cfg.source):
        hub.check_repo_path(key, "source file")
        src = hf_dataset.parse_source(cfg.source)
        if src.local and not Path(src.repo, key).is_file():
            raise DataError(f"source file {key!r} is not a file of {src.repo}; it was deleted or renamed: "
                            f"remove its partition or restore the file")
    elif cfg.source == "hub":
        hub.check_repo_path(key)
    else:
        _local_file(cfg, key)


def _local_file(cfg: CorpusConfig, key: str) -> SourceFile:
    matches = [f for f in _list_local(cfg) if f.key == key]
    if not matches:
        raise DataError(f"source file {key!r} is not a file under corpus.source {cfg.source}; "
                        f"it was deleted or renamed: remove its partition or restore the file")
    return matches[0]


def fetch_source_file(cfg: CorpusConfig, key: str, data_dir: Path) -> CorpusRecord:
    """Make source file `key` available locally (downloading it from the Hub if needed),
    check that it holds documents, and return its record. Does not write anything else."""
    return hash_checked_file(cfg, check_source_file(cfg, key, data_dir), data_dir)


@dataclass
class CheckedFile:
    """A source file checked (it holds text), not yet hashed: what `prepare` knows before it writes anything."""

    key: str
    local: Path | None = None          # None: a Hub file, checked once it is downloaded
    documents: int = 0
    stamp: FileStamp | None = None     # the file's stamp while it was counted
    record: CorpusRecord | None = None  # an hf-dataset file: streaming it is its check, its hash and its count


def check_source_file(cfg: CorpusConfig, key: str, data_dir: Path) -> CheckedFile:
    """The checks of `fetch_source_file` that need no hash: the file is there, not empty, and holds text (a
    parquet file's footer; every document of a .jsonl or .txt). A Hub file is checked when it is downloaded."""
    if hf_dataset.is_dataset_source(cfg.source):
        return CheckedFile(key, record=_fetch_dataset_file(cfg, key, data_dir))
    if cfg.source == "hub":
        return CheckedFile(key)
    return _counted(cfg, key, _local_file(cfg, key).local_path)


def _counted(cfg: CorpusConfig, key: str, local: Path) -> CheckedFile:
    if local.stat().st_size == 0:
        raise DataError(f"{local}: the file is empty; delete it (or re-download it) and run again")
    stamp = file_stamp(local)
    documents, has_text = _count_documents(local, cfg.text_field, cfg.max_documents_per_file, reader_char_limit(cfg))
    if file_stamp(local) != stamp:
        raise DataError(f"{local} changed while it was counted (its stamp moved), so the count may mix two "
                        f"versions; {STOP_WRITERS}")
    if documents == 0 or not has_text:
        what = "no documents" if documents == 0 else f"{documents} document(s), every one empty or blank"
        raise DataError(f"{local}: {what} in field {cfg.text_field!r}, so no text to tokenize; "
                        f"remove the file from the corpus or fill it (or set corpus.text_field)")
    return CheckedFile(key, local, documents, stamp)


def hash_checked_file(cfg: CorpusConfig, checked: CheckedFile, data_dir: Path) -> CorpusRecord:
    """The record of a checked source file: its bytes hashed once (a Hub file: downloaded, hashed on the way,
    then counted), with the stamp that shows the hash and the count describe one content."""
    if checked.record is not None:
        return checked.record
    key = checked.key
    if cfg.source == "hub":
        downloaded = hub.fetch_hub_file(cfg.dataset, key, cfg.revision, corpus_hub_dir(data_dir, cfg.dataset))
        counted = _counted(cfg, key, downloaded.local)
        # Hashed by this call's download (against the Hub's sha256), or here for a file downloaded before;
        # either way checked against the file's stamp after the count: the hash is of the bytes counted.
        sha256, stamp = (downloaded.sha256, downloaded.stamp) if downloaded.sha256 else hash_file(downloaded.local)
        check_unchanged(downloaded.local, sha256, stamp, "counted")
        local, documents, stamp = downloaded.local, counted.documents, counted.stamp
        source, repo, revision = "hub", cfg.dataset, downloaded.commit or cfg.revision
    else:
        local, documents = checked.local, checked.documents
        sha256, stamp = hash_file(local)
        if stamp is None or stamp != checked.stamp:  # the count (or the hash) may describe another version
            raise DataError(f"{local} changed after it was counted (its stamp moved), so its hash and count may "
                            f"describe two versions; {STOP_WRITERS}")
        source, repo, revision = "local", None, None
    return CorpusRecord(key=key, source=source, repo=repo, revision=revision, local_path=str(local),
                        sha256=sha256, bytes=stamp.size, documents=documents, stamp=stamp.to_dict())


def _fetch_dataset_file(cfg: CorpusConfig, key: str, data_dir: Path) -> CorpusRecord:
    """An hf-dataset data file: stream it once (count, check and hash its documents, nothing kept on disk)
    and write its stream descriptor, which stands in for the file from then on."""
    stream = hf_dataset.DatasetFileStream.open(cfg, key)
    documents, has_text = 0, False
    with contextlib.closing(stream.batches(4096, cfg.max_documents_per_file)) as batches:  # closed on an error too
        for texts in _checked(batches, stream.where, cfg.text_field, reader_char_limit(cfg)):
            documents += len(texts)
            has_text = has_text or any(text.strip() for text in texts)
    if documents == 0 or not has_text:
        what = "no documents" if documents == 0 else f"{documents} document(s), every one empty or blank"
        raise DataError(f"{stream.where}: {what} in field {cfg.text_field!r}, so no text to tokenize; "
                        f"remove the file from the dataset's config or fill it (or set corpus.text_field)")
    local = hf_dataset.write_descriptor(stream, data_dir, documents, cfg.max_documents_per_file)
    sha256, stamp = hash_file(local)  # the descriptor: its own writer's, nothing else writes it meanwhile
    stamp = stamp or FileStamp.of(local.stat())
    return CorpusRecord(key=key, source="hf-dataset", repo=stream.src.repo, revision=stream.commit,
                        local_path=str(local), sha256=sha256, bytes=stamp.size, documents=documents,
                        stamp=stamp.to_dict())


def check_unchanged(path: str | Path, sha256: str, stamp: FileStamp | None, doing: str) -> None:
    """Refuse a source file whose bytes are no longer `sha256`, the hash it was recorded (and read) under:
    what was just read from it may mix two versions (a .jsonl appended to while it was tokenized). While its
    stamp is `stamp`, the one recorded with the hash, nothing is read; only a moved stamp is hashed again."""
    now = unchanged_since(path, sha256, stamp)
    if now is not None:
        raise DataError(f"{path} changed while it was {doing} (sha256 {sha256[:16]}… before, {now[:16]}… after), so "
                        f"what was read from it may mix two versions and is not used; {STOP_WRITERS}")


def reader_char_limit(cfg: CorpusConfig) -> int | None:
    """The document length the reader refuses above: `max_document_chars` when oversize documents are
    refused; None when they are split (the tokenizer cuts them, gpt2train/data/tokenizer.py)."""
    return cfg.max_document_chars if cfg.oversize_documents == "refuse" else None


def count_documents(path: Path, text_field: str, limit: int | None, max_chars: int | None = None) -> int:
    """Documents in the file (capped at `limit`), validating it on the way."""
    return _count_documents(path, text_field, limit, max_chars)[0]


def _count_documents(path: Path, text_field: str, limit: int | None, max_chars: int | None) -> tuple[int, bool]:
    """(documents, whether any holds non-blank text). A .jsonl/.txt is read through anyway, so its
    text is checked (nulls, length); a .parquet is counted from its footer only (reading a 2 GB column
    to find text would double the corpus stage's I/O), so True is assumed for it, its nulls are found
    from the footer's statistics, and its documents' lengths are checked when they are tokenized."""
    if path.suffix == ".parquet":
        pf = _open_parquet(path, text_field)
        n = pf.metadata.num_rows
        n = min(n, limit) if limit else n
        _refuse_parquet_nulls(pf, path, text_field, n)
        return n, True
    n, has_text = 0, False
    for batch in iter_document_batches(path, text_field, 4096, limit, max_chars):
        n += len(batch)
        has_text = has_text or any(text.strip() for text in batch)
    return n, has_text


def _open_parquet(path: Path, text_field: str):
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        # pre_buffer=False and a read buffer: a column chunk is streamed 1 MiB at a time instead of being
        # fetched whole (with coalesced neighbours) ahead of decoding, so memory does not grow with the
        # row-group size (a 396 MB file of 42 row groups: 549 MB peak RSS pre-buffered, see bench/tokenize.py).
        pf = pq.ParquetFile(path, pre_buffer=False, buffer_size=1 << 20)
    except (pa.ArrowException, OSError) as e:
        raise DataError(f"{path}: not a readable parquet file ({e}); re-download or replace it") from e
    columns = pf.schema_arrow.names
    if text_field not in columns:
        raise DataError(f"{path}: no column {text_field!r} (columns: {', '.join(columns)}); set corpus.text_field "
                        f"to the column holding the document text")
    ftype = pf.schema_arrow.field(text_field).type
    if not (pa.types.is_string(ftype) or pa.types.is_large_string(ftype)):
        raise DataError(f"{path}: column {text_field!r} has type {ftype}, expected a string column")
    return pf


def _refuse_parquet_nulls(pf, path: Path, text_field: str, rows: int) -> None:
    """Refuse a null text among the first `rows` rows, naming its row, before anything is written. The
    footer's per-row-group null counts say where to look without reading any text; a row group whose
    writer recorded none is read (its text column only) to make sure."""
    md, start = pf.metadata, 0
    for i in range(md.num_row_groups):
        if start >= rows:
            return
        group = md.row_group(i)
        chunk = next(group.column(j) for j in range(group.num_columns) if group.column(j).path_in_schema == text_field)
        stats = chunk.statistics
        if stats is None or not stats.has_null_count or stats.null_count > 0:
            for texts in _parquet_texts(pf, text_field, PARQUET_READ_ROWS, row_groups=[i]):
                if None in texts and start + texts.index(None) < rows:
                    raise _null_error(path, text_field, start + texts.index(None))
                start += len(texts)
        else:
            start += group.num_rows


def _parquet_texts(pf, text_field: str, batch_size: int, row_groups: list[int] | None = None) -> Iterator[list]:
    for rb in pf.iter_batches(batch_size=batch_size, columns=[text_field], row_groups=row_groups):
        yield rb.column(0).to_pylist()


def _parquet_batches(path: Path, text_field: str, batch_size: int, limit: int | None) -> Iterator[list]:
    """The first `limit` (None: all) texts of a parquet file, `batch_size` at a time, nulls included."""
    remaining = limit if limit else float("inf")
    for texts in _parquet_texts(_open_parquet(path, text_field), text_field, batch_size):
        texts = texts[: int(min(remaining, batch_size))]
        remaining -= len(texts)
        if texts:
            yield texts
        if remaining <= 0:
            return


def _checked(batches: Iterator[list], where: str, text_field: str, max_chars: int | None) -> Iterator[list[str]]:
    """`batches` of one file's texts (in file row order) with a null, a non-string or (above `max_chars`) an
    oversize document refused, naming its row."""
    row = 0  # of the first document of `texts`, in the file
    for texts in batches:
        if not all(isinstance(t, str) for t in texts):
            i = next(i for i, t in enumerate(texts) if not isinstance(t, str))
            if texts[i] is None:
                raise _null_error(where, text_field, row + i)
            raise DataError(f"{where}: row {row + i} (counting from 0) has a {type(texts[i]).__name__} in "
                            f"{text_field!r}, not a string; set corpus.text_field to the column holding the text")
        if max_chars is not None and texts and max(map(len, texts)) > max_chars:
            i = next(i for i, t in enumerate(texts) if len(t) > max_chars)
            raise _oversize_error(f"{where}: row {row + i} (counting from 0)", len(texts[i]), max_chars)
        row += len(texts)
        yield texts


def _null_error(path: Path | str, text_field: str, row: int) -> DataError:
    return DataError(f"{path}: row {row} (counting from 0) has a null {text_field!r}; drop or fill the null rows "
                     f"and run again")


def _oversize_error(where: str, chars: int, max_chars: int) -> DataError:
    return DataError(f"{where} is a document of {chars:,} characters, over corpus.max_document_chars={max_chars:,} "
                     f"(tokenizing one can take ~50 bytes of memory per character); drop it, raise "
                     f"corpus.max_document_chars, or set corpus.oversize_documents=split to tokenize it in pieces")


def iter_document_batches(path: str | Path, text_field: str, batch_size: int, limit: int | None = None,
                          max_chars: int | None = None) -> Iterator[list[str]]:
    """Yield the file's documents in order, `batch_size` at a time (streaming: memory bounded by a batch,
    not by the file). A document over `max_chars` characters is refused, naming its file and row."""
    path = Path(path)
    remaining = limit if limit else float("inf")
    if hf_dataset.is_descriptor(path):  # an hf-dataset data file, streamed again
        where, batches = hf_dataset.iter_descriptor_batches(path, text_field, batch_size, limit)
        yield from _checked(batches, where, text_field, max_chars)
    elif path.suffix == ".parquet":
        yield from _checked(_parquet_batches(path, text_field, batch_size, limit), str(path), text_field, max_chars)
    elif path.suffix == ".jsonl":
        batch: list[str] = []
        with open(path, "rb") as f:
            for lineno, line in enumerate(f, 1):
                if remaining <= 0:
                    break
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line.decode("utf-8"))
                except UnicodeDecodeError as e:
                    raise DataError(f"{path}:{lineno}: not valid UTF-8 ({e}); re-encode the file as UTF-8") from e
                except json.JSONDecodeError as e:
                    raise DataError(f"{path}:{lineno}: not a JSON object ({e}); fix or remove the line") from e
                text = obj.get(text_field) if isinstance(obj, dict) else None
                if not isinstance(text, str):
                    what = "a null" if isinstance(obj, dict) and obj.get(text_field, 0) is None else "no string field"
                    raise DataError(f"{path}:{lineno}: {what} {text_field!r}; every line needs a string there "
                                    f"(or set corpus.text_field)")
                if max_chars is not None and len(text) > max_chars:
                    raise _oversize_error(f"{path}:{lineno}", len(text), max_chars)
                batch.append(text)
                remaining -= 1
                if len(batch) == batch_size:
                    yield batch
                    batch = []
        if batch:
            yield batch
    elif path.suffix == ".txt":
        try:
            # Bytes decoded as they are (no newline translation): "\r\n" stays "\r\n", as in a .jsonl
            # string and as lineage hashes the file.
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError as e:
            raise DataError(f"{path}: not valid UTF-8 at byte {e.start} ({e.reason}); "
                            f"re-encode the file as UTF-8") from e
        if max_chars is not None and len(text) > max_chars:
            raise _oversize_error(f"{path} (the whole file)", len(text), max_chars)
        yield [text]
    else:
        raise DataError(f"{path}: unsupported file type; corpus files must be {', '.join(SUPPORTED_SUFFIXES)}")
