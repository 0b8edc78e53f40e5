"""The raw corpus: which source files there are, fetching one, and reading its documents.

A corpus is an ordered list of source files, each identified by a *key*: its path relative
to the source root (`sample/10BT/000_00000.parquet`), identical for the Hub and for a local
mirror of it. Keys are the Dagster partition keys of the `corpus` and `token_shards`
assets, and the sorted key order is the source order (the order `datasets.load_dataset`
reads FineWeb-Edu in, so llm.c's document stream is ours too).

Supported files: `.parquet` (column `corpus.text_field`), `.jsonl` (one JSON object per
line, key `corpus.text_field`), `.txt` (the whole file is one document, UTF-8).

    files = list_source_files(cfg.corpus)
    record = fetch_source_file(cfg.corpus, files[0].key, data_dir)   # download + hash
    for texts in iter_document_batches(record.local_path, cfg.corpus.text_field, 512): ...
"""

from __future__ import annotations

import glob
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

from gpt2train.data import hub
from gpt2train.config import CorpusConfig
from gpt2train.errors import DataError
from gpt2train.fileio import sha256_file
from gpt2train.layout import corpus_hub_dir

SUPPORTED_SUFFIXES = (".parquet", ".jsonl", ".txt")


@dataclass(frozen=True)
class SourceFile:
    """One source file before it is fetched."""

    key: str  # partition key: path relative to the source root, '/'-separated
    local_path: Path | None  # None for a Hub file not yet downloaded


@dataclass
class CorpusRecord:
    """What the corpus asset records per source file: its lineage and data version."""

    key: str
    source: str  # "hub" or "local"
    repo: str | None
    revision: str | None  # the commit the Hub resolved the configured revision to
    local_path: str
    sha256: str
    bytes: int
    documents: int  # documents taken (after corpus.max_documents_per_file)

    def to_dict(self) -> dict:
        return asdict(self)


def list_source_files(cfg: CorpusConfig) -> list[SourceFile]:
    """The configured source files in source order (first `cfg.files` of them)."""
    if cfg.source == "hub":
        files = [SourceFile(f.path, None) for f in hub.list_hub_files(cfg.dataset, cfg.name, cfg.revision)]
    else:
        files = _list_local(cfg)
    return files[: cfg.files] if cfg.files else files


def _list_local(cfg: CorpusConfig) -> list[SourceFile]:
    src = Path(cfg.source)
    if glob.has_magic(cfg.source):
        # the glob's longest literal prefix is the root that keys are relative to
        literal = []
        for part in Path(cfg.source).parts:
            if glob.has_magic(part):
                break
            literal.append(part)
        root = Path(*literal) if literal else Path(".")
        paths = [Path(p) for p in sorted(glob.glob(cfg.source, recursive=True)) if Path(p).is_file()]
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
        paths = sorted(p for p in search.rglob("*") if p.is_file() and p.suffix in SUPPORTED_SUFFIXES
                       and not any(part.startswith(".") for part in p.relative_to(src).parts))
    else:
        raise DataError(f"corpus.source {cfg.source} does not exist; give 'hub', a folder, a file or a glob "
                        f"of .parquet/.jsonl/.txt files")
    bad = [p for p in paths if p.suffix not in SUPPORTED_SUFFIXES]
    if bad:
        raise DataError(f"{bad[0]}: unsupported file type {bad[0].suffix!r}; corpus files must be "
                        f"{', '.join(SUPPORTED_SUFFIXES)}")
    if not paths:
        raise DataError(f"corpus.source {cfg.source} holds no {', '.join(SUPPORTED_SUFFIXES)} files; point "
                        f"corpus.source (prepare --source) at a folder, file or glob of them, or 'hub'")
    return [SourceFile(p.relative_to(root).as_posix(), p) for p in paths]


def check_source_key(cfg: CorpusConfig, key: str) -> None:
    """Refuse a partition key that names no source file (a key added by hand, a file since deleted),
    before anything is written for it."""
    if cfg.source == "hub":
        hub.check_repo_path(key)
    else:
        _local_file(cfg, key)


def _local_file(cfg: CorpusConfig, key: str) -> SourceFile:
    matches = [f for f in _list_local(cfg) if f.key == key]
    if not matches:
        raise DataError(f"corpus partition {key!r} is not a file under corpus.source {cfg.source}; "
                        f"it was deleted or renamed: remove the partition or restore the file")
    return matches[0]


def fetch_source_file(cfg: CorpusConfig, key: str, data_dir: Path) -> CorpusRecord:
    """Make source file `key` available locally (downloading it from the Hub if needed),
    check that it holds documents, and return its record. Does not write anything else."""
    if cfg.source == "hub":
        local, commit = hub.download_hub_file(cfg.dataset, key, cfg.revision, corpus_hub_dir(data_dir, cfg.dataset))
        source, repo, revision = "hub", cfg.dataset, commit or cfg.revision
    else:
        local, source, repo, revision = _local_file(cfg, key).local_path, "local", None, None
    if local.stat().st_size == 0:
        raise DataError(f"{local}: the file is empty; delete it (or re-download it) and run again")
    documents, has_text = _count_documents(local, cfg.text_field, cfg.max_documents_per_file)
    if documents == 0 or not has_text:
        what = "no documents" if documents == 0 else f"{documents} document(s), every one empty or blank"
        raise DataError(f"{local}: {what} in field {cfg.text_field!r}, so no text to tokenize; "
                        f"remove the file from the corpus or fill it (or set corpus.text_field)")
    return CorpusRecord(key=key, source=source, repo=repo, revision=revision, local_path=str(local),
                        sha256=sha256_file(local), bytes=local.stat().st_size, documents=documents)


def count_documents(path: Path, text_field: str, limit: int | None) -> int:
    """Documents in the file (capped at `limit`), validating it on the way."""
    return _count_documents(path, text_field, limit)[0]


def _count_documents(path: Path, text_field: str, limit: int | None) -> tuple[int, bool]:
    """(documents, whether any holds non-blank text). A .jsonl/.txt is read through anyway, so its
    text is checked; a .parquet is counted from its footer only (reading a 2 GB column to find
    text would double the corpus stage's I/O), so True is assumed for it."""
    if path.suffix == ".parquet":
        pf = _open_parquet(path, text_field)
        n = pf.metadata.num_rows
        return (min(n, limit) if limit else n), True
    n, has_text = 0, False
    for batch in iter_document_batches(path, text_field, 4096, limit):
        n += len(batch)
        has_text = has_text or any(text.strip() for text in batch)
    return n, has_text


def _open_parquet(path: Path, text_field: str):
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
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


def iter_document_batches(path: str | Path, text_field: str, batch_size: int,
                          limit: int | None = None) -> Iterator[list[str]]:
    """Yield the file's documents in order, `batch_size` at a time (streaming: constant memory)."""
    path = Path(path)
    remaining = limit if limit else float("inf")
    if path.suffix == ".parquet":
        pf = _open_parquet(path, text_field)
        for rb in pf.iter_batches(batch_size=batch_size, columns=[text_field]):
            texts = rb.column(0).to_pylist()[: int(min(remaining, batch_size))]
            if any(t is None for t in texts):
                i = texts.index(None)
                raise DataError(f"{path}: row {i} of a batch has a null {text_field!r}; drop null rows first")
            remaining -= len(texts)
            if texts:
                yield texts
            if remaining <= 0:
                return
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
                    raise DataError(f"{path}:{lineno}: no string field {text_field!r}; every line needs one "
                                    f"(or set corpus.text_field)")
                batch.append(text)
                remaining -= 1
                if len(batch) == batch_size:
                    yield batch
                    batch = []
        if batch:
            yield batch
    elif path.suffix == ".txt":
        try:
            yield [path.read_text(encoding="utf-8")]
        except UnicodeDecodeError as e:
            raise DataError(f"{path}: not valid UTF-8 at byte {e.start} ({e.reason}); "
                            f"re-encode the file as UTF-8") from e
    else:
        raise DataError(f"{path}: unsupported file type; corpus files must be {', '.join(SUPPORTED_SUFFIXES)}")
