"""Any Hugging Face dataset as the corpus, streamed through `datasets`: `corpus.source: hf-dataset:<repo>[:<config>]`.

`<repo>` is a Hub dataset repo id (`HuggingFaceFW/fineweb-edu`, `Salesforce/wikitext`) or a local dataset
folder (data files, optionally a README.md whose `configs:` YAML names each config's files), as
`datasets.load_dataset` takes it: an existing folder wins over a repo id of the same spelling. `<config>`
(after the last ':') is a config name as `datasets` knows it (`sample-10BT`, `wikitext-103-raw-v1`); without
one, the dataset's default. The corpus is the config's `train` split; documents are its
`corpus.text_field` column. Nothing is downloaded whole: each file is read with `datasets`' streaming
builder (HTTP range requests to the Hub), so the disk never holds the raw files.

One partition per data file of the config, keyed by its path in the repo (or folder), exactly as the
`hub` source keys FineWeb-Edu's files: a new or changed file stales only its own partition. A data file is
read twice: once when its corpus record is made (count the documents, check them, hash them) and once
when it is tokenized (the shard writer's stream).

What a partition records, in its *stream descriptor* `<data_dir>/corpus/hf-dataset/<repo>/<key>.json`,
which stands in for the downloaded file (the corpus record's `local_path`; its sha256 is the record's
`sha256` and so enters the data version, gpt2train/data/stage.py):

- the dataset (repo id, or the folder's absolute path), the config, the split, and for the Hub the commit
  sha the configured revision resolved to: everything is read at that commit, never at a moving branch;
- the data file's path, size and content hash when they come without reading it (the Hub's LFS sha256;
  a local file's sha256);
- `text_field`, `max_documents_per_file`, the number of documents, and the sha256 of those documents
  (each one's UTF-8 bytes with its length in front): exactly the text the shards are made of.

That is enough for exact staleness without the raw file's bytes: a Hub file cannot change under a
commit, and the document hash pins what was read from it. Reading it again to tokenize recomputes the hash
and refuses the result if it differs (a mirror serving other bytes, a local file edited meanwhile); a
local file whose sha256 no longer matches is refused before it is read. The descriptor holds no time
and no endpoint, so making it again from the same documents gives the same bytes and leaves the shards fresh.

    keys = list_dataset_files(cfg.corpus)                 # one per data file, sorted
    stream = DatasetFileStream.open(cfg.corpus, keys[0])  # commit resolved, nothing read yet
    for texts in stream.batches(512, limit=None): ...     # str | None (a null), in file row order
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from gpt2train.data import hub
from gpt2train.errors import DataError
from gpt2train.fileio import read_json, sha256_file, write_json_atomic

if TYPE_CHECKING:  # gpt2train/config_checks.py imports this module, and gpt2train/config.py imports that one
    from gpt2train.config import CorpusConfig

PREFIX = "hf-dataset:"
SPLIT = "train"  # the corpus is the config's train split (FineWeb-Edu has only that one)
DESCRIPTOR_ARTIFACT = "hf_dataset_file"
# What `DatasetFileStream` yields for the same data file. A change bumps it (and the corpus stage's version,
# gpt2train/lineage/stage_versions.py); it is written in every descriptor, so it enters the data version.
READER_VERSION = 1
# A repo id as the Hub spells it (huggingface_hub validate_repo_id): `name` or `owner/name`.
_REPO_ID = re.compile(r"(?:[A-Za-z0-9][\w.-]*/)?[A-Za-z0-9][\w.-]*")
_CONFIG_NAME = re.compile(r"[\w.+-]+")
# What an unreachable Hub's error offers instead (gpt2train/data/hub.py unreachable_error).
_LOCAL_COPY = "hf-dataset:<a local copy of the dataset's folder>"


@dataclass(frozen=True)
class DatasetSource:
    """`corpus.source` parsed: where the dataset is and which config."""

    repo: str  # Hub repo id, or the local folder's absolute path
    config: str | None  # None: the dataset's default config
    local: bool

    @property
    def shown(self) -> str:
        return f"{self.repo}" + (f" (config {self.config})" if self.config else "")


def is_dataset_source(source: str) -> bool:
    return source.startswith(PREFIX)


def parse_source(source: str) -> DatasetSource:
    """`hf-dataset:<repo or folder>[:<config>]`. Refuses a malformed one in one line (config load calls it)."""
    rest = source[len(PREFIX):]
    repo, config = rest, None
    if not _local_dir(rest) and ":" in rest:
        repo, _, config = rest.rpartition(":")
    usage = ("give corpus.source=hf-dataset:<repo id or dataset folder>[:<config>], "
             "e.g. hf-dataset:HuggingFaceFW/fineweb-edu:sample-10BT")
    if not repo:
        raise DataError(f"corpus.source={source!r} names no dataset; {usage}")
    if config is not None and not _CONFIG_NAME.fullmatch(config):
        raise DataError(f"corpus.source={source!r}: {config!r} is not a config name (letters, digits, '_', '-', '.', "
                        f"'+'); {usage}")
    if folder := _local_dir(repo):
        return DatasetSource(str(folder), config, local=True)
    if repo.startswith(("/", ".", "~")) or not _REPO_ID.fullmatch(repo) or ".." in repo:
        raise DataError(f"corpus.source={source!r}: {repo!r} is neither a dataset folder that exists nor a Hub "
                        f"repo id (`owner/name`); {usage}")
    return DatasetSource(repo, config, local=False)


def _local_dir(path: str) -> Path | None:
    p = Path(path).expanduser()
    return p.resolve() if path and p.is_dir() else None


# --- datasets, at call time --------------------------------------------------------------------------------

def _datasets():
    """`datasets`, pointed at the endpoint of this call. The library reads HF_ENDPOINT once, at import; ours
    is read at each call (gpt2train/data/hub.py), so a mirror set after import is the one used."""
    import datasets

    url = hub.endpoint()
    datasets.config.HF_ENDPOINT = url
    datasets.config.HUB_DATASETS_URL = url + "/datasets/{repo_id}/resolve/{revision}/{path}"
    hub.mask_library_logs()
    return datasets


@contextlib.contextmanager
def _builder(src: DatasetSource, commit: str | None, data_file: str | None = None) -> Iterator:
    """`datasets`' builder of the config at `commit` (all its files, or only `data_file`), with a cache folder
    of its own that is removed afterwards: nothing stays on disk, and no module cached by an earlier call
    can stand in for the dataset when the Hub is unreachable (`datasets` falls back to its cache then)."""
    datasets = _datasets()
    with tempfile.TemporaryDirectory(prefix="gpt2train-datasets-") as cache:
        try:
            builder = datasets.load_dataset_builder(
                src.repo, src.config, revision=commit, cache_dir=cache,
                data_files={SPLIT: [data_file]} if data_file else None)
        except ValueError as e:  # an unknown config: "BuilderConfig 'x' not found. Available: [...]"
            raise DataError(f"corpus.source {PREFIX}{src.shown}: {hub.redact(str(e))}; put one of those "
                            f"configs after the last ':'") from e
        except (ConnectionError, TimeoutError) as e:
            raise hub.unreachable_error("read", src.repo, commit or "", e, _LOCAL_COPY) from e
        except FileNotFoundError as e:  # also datasets' DatasetNotFoundError, DataFilesNotFoundError
            if data_file:
                at = f" at commit {commit}" if commit else ""
                raise DataError(f"source file {data_file!r} is not a data file of {src.repo}{at}; it was deleted "
                                f"or renamed: remove its partition (or restore the file)") from e
            why = hub.redact(str(e))  # datasets' own message can list hundreds of file extensions
            raise DataError(f"corpus.source {PREFIX}{src.shown}: no such dataset or data files ({type(e).__name__}: "
                            f"{why[:300]}{'…' if len(why) > 300 else ''}); check the repo id or folder") from e
        except Exception as e:
            if type(e).__module__.startswith(("httpx", "huggingface_hub")):
                raise hub.unreachable_error("read", src.repo, commit or "", e, _LOCAL_COPY) from e
            raise
        yield builder


def _commit(src: DatasetSource, revision: str) -> str | None:
    if src.local:
        return None
    return hub.resolve_dataset_commit(src.repo, revision, _LOCAL_COPY)


def _key(src: DatasetSource, commit: str | None, data_file: str) -> str:
    """A resolved data file (`hf://datasets/<repo>@<sha>/<path>` or an absolute path) -> its partition key."""
    if src.local:
        rel = Path(data_file).resolve().relative_to(src.repo).as_posix()
    else:
        prefix = f"hf://datasets/{src.repo}@{commit}/"
        if not data_file.startswith(prefix):
            raise DataError(f"{PREFIX}{src.shown}: datasets resolved a data file {hub.redact(data_file)!r} outside "
                            f"{prefix}; report this")
        rel = data_file[len(prefix):]
    return hub.check_repo_path(rel, f"{src.repo} lists a data file")


def _train_files(builder, src: DatasetSource) -> list[str]:
    files = (builder.config.data_files or {}).get(SPLIT)
    if not files:
        splits = ", ".join(builder.config.data_files or {}) or "none"
        raise DataError(f"{PREFIX}{src.shown} has no {SPLIT!r} split (splits: {splits}); the corpus is read from "
                        f"the train split: choose a config that has one")
    return list(files)


def list_dataset_files(cfg: CorpusConfig) -> list[str]:
    """The partition keys of the config's train split, sorted (= source order), one per data file."""
    src = parse_source(cfg.source)
    commit = _commit(src, cfg.revision)
    with _builder(src, commit) as builder:
        keys = sorted({_key(src, commit, f) for f in _train_files(builder, src)})
    return keys


# --- one data file ------------------------------------------------------------------------------------------

class DatasetFileStream:
    """The documents of one data file, read through `datasets`' streaming builder in file row order.

    `batches` yields each batch's `text_field` values as they are (None for a null: the caller refuses it,
    naming `where` and the row) and hashes them into `documents_sha256` as it goes.
    """

    def __init__(self, src: DatasetSource, commit: str | None, key: str, text_field: str):
        self.src, self.commit, self.key, self.text_field = src, commit, key, text_field
        self.documents_sha256: str | None = None  # set once `batches` has read to its end (or its limit)
        self.config_name: str | None = src.config  # the config `datasets` resolved (its default when None)

    @classmethod
    def open(cls, cfg: CorpusConfig, key: str) -> "DatasetFileStream":
        src = parse_source(cfg.source)
        hub.check_repo_path(key, "source file")
        return cls(src, _commit(src, cfg.revision), key, cfg.text_field)

    @property
    def where(self) -> str:
        """How errors name the file: `<repo>@<commit 12>/<key>` or the local path."""
        if self.src.local:
            return str(Path(self.src.repo, self.key))
        return f"{self.src.repo}@{self.commit[:12]}/{self.key}"

    @property
    def uri(self) -> str:
        if self.src.local:
            return str(Path(self.src.repo, self.key))
        return f"hf://datasets/{self.src.repo}@{self.commit}/{self.key}"

    def batches(self, batch_size: int, limit: int | None) -> Iterator[list[str | None]]:
        remaining = limit if limit else float("inf")
        digest = hashlib.sha256()
        with _builder(self.src, self.commit, self.key) as builder:
            self._check_one_file(builder)
            self.config_name = builder.config.name
            if self.key.endswith(".parquet") and hasattr(builder.config, "fragment_scan_options"):
                # As the pyarrow reader (gpt2train/data/corpus.py _open_parquet): no pre-buffering of whole
                # column chunks, a 1 MiB read buffer, so memory does not grow with the row-group size.
                import pyarrow.dataset as pds

                builder.config.fragment_scan_options = pds.ParquetFragmentScanOptions(
                    pre_buffer=False, use_buffered_stream=True, buffer_size=1 << 20)
            ds = builder.as_streaming_dataset(split=SPLIT)
            self._check_field(ds)
            for batch in ds.select_columns([self.text_field]).iter(batch_size=batch_size):
                texts = batch[self.text_field][: int(min(remaining, batch_size))]
                for text in texts:
                    if isinstance(text, str):  # a null is refused by the caller, before the hash is used
                        data = text.encode("utf-8")
                        digest.update(len(data).to_bytes(8, "little") + data)
                remaining -= len(texts)
                if texts:
                    yield texts
                if remaining <= 0:
                    break
        self.documents_sha256 = digest.hexdigest()

    def _check_one_file(self, builder) -> None:
        """The data file given is a glob pattern to `datasets`: it must have resolved to this one file."""
        keys = [_key(self.src, self.commit, f) for f in _train_files(builder, self.src)]
        if keys != [self.key]:
            raise DataError(f"{self.where}: datasets resolved this data file to {keys[:3]} (a name with glob "
                            f"characters such as '*', '?', '[' ?); rename the file, or remove the partition if it "
                            f"was deleted upstream")

    def _check_field(self, ds) -> None:
        features = ds.features
        # A builder that learns its columns from the rows has none yet: the first row's keys are its columns
        # (its values are type-checked as they are read: corpus.py refuses a document that is not a string).
        columns = list(features) if features is not None else list(next(iter(ds.take(1)), {}))
        if self.text_field not in columns:
            raise DataError(f"{self.where}: no column {self.text_field!r} (columns: {', '.join(columns)}); set "
                            f"corpus.text_field to the column holding the document text")
        dtype = getattr(features[self.text_field], "dtype", None) if features is not None else "string"
        if dtype not in ("string", "large_string"):
            raise DataError(f"{self.where}: column {self.text_field!r} is {features[self.text_field]}, expected a "
                            f"string column; set corpus.text_field to the column holding the document text")


# --- the stream descriptor -------------------------------------------------------------------------------

def descriptor_path(data_dir: Path, src: DatasetSource, key: str) -> Path:
    """`<data_dir>/corpus/hf-dataset/<repo>/<key>.json`; a local folder is named by its last part and a
    hash of its path (two folders of one name stay apart)."""
    root = Path(data_dir) / "corpus" / "hf-dataset"
    if src.local:
        root = root / "local" / f"{Path(src.repo).name}-{hashlib.sha256(src.repo.encode()).hexdigest()[:12]}"
    else:
        root = root / src.repo
    return hub.inside(root, key + ".json")


def write_descriptor(stream: DatasetFileStream, data_dir: Path, documents: int, limit: int | None) -> Path:
    """Write the descriptor of a fully read `stream` (see the module docstring) and return its path."""
    if stream.documents_sha256 is None:
        raise ValueError("the stream has not been read to its end")
    src = stream.src
    if src.local:
        local = Path(src.repo, stream.key)
        data_file = {"size": local.stat().st_size, "sha256": sha256_file(local), "git_blob_id": None}
    else:
        data_file = hub.dataset_file_info(src.repo, stream.key, stream.commit)
    path = descriptor_path(data_dir, src, stream.key)
    write_json_atomic(path, {
        "artifact": DESCRIPTOR_ARTIFACT,
        "reader": {"library": "datasets", "version": READER_VERSION},
        "dataset": src.repo,
        "location": "local" if src.local else "hub",
        "config": stream.config_name,
        "split": SPLIT,
        "commit": stream.commit,
        "data_file": {"path": stream.key, "uri": stream.uri, **data_file},
        "text_field": stream.text_field,
        "max_documents_per_file": limit,
        "documents": documents,
        "documents_sha256": stream.documents_sha256,
    })
    return path


def is_descriptor(path: Path) -> bool:
    """A stream descriptor, by its suffix: no corpus file is a .json (gpt2train/data/corpus.py SUPPORTED_SUFFIXES)."""
    return Path(path).suffix == ".json"


def iter_descriptor_batches(path: Path, text_field: str, batch_size: int, limit: int | None
                            ) -> tuple[str, Iterator[list[str | None]]]:
    """(where, batches) of the data file that descriptor `path` records, read again. The batches end by
    checking that the documents were those recorded; they are refused (a DataError) otherwise."""
    d = read_json(path, "hf-dataset stream descriptor")
    if d.get("artifact") != DESCRIPTOR_ARTIFACT:
        raise DataError(f"{path} is not an hf-dataset stream descriptor; fetch its source file again to rewrite it")
    redo = f"; fetch source file {d['data_file']['path']!r} again to rewrite its record"
    if (d["text_field"], d["max_documents_per_file"]) != (text_field, limit or None):
        raise DataError(f"{path} was recorded for corpus.text_field={d['text_field']!r}, max_documents_per_file="
                        f"{d['max_documents_per_file']}, not {text_field!r}, {limit or None}{redo}")
    if d["reader"].get("version") != READER_VERSION:
        raise DataError(f"{path} was recorded by hf-dataset reader version {d['reader'].get('version')}, this is "
                        f"version {READER_VERSION}{redo}")
    src = DatasetSource(d["dataset"], d["config"], d["location"] == "local")
    stream = DatasetFileStream(src, d["commit"], d["data_file"]["path"], text_field)
    if src.local:
        local = Path(stream.uri)
        now = sha256_file(local) if local.is_file() else "(missing)"
        if now != d["data_file"]["sha256"]:
            raise DataError(f"{local} changed since its corpus record was made (sha256 {now[:16]}…, recorded "
                            f"{d['data_file']['sha256'][:16]}…){redo}")

    def checked() -> Iterator[list[str | None]]:
        yield from stream.batches(batch_size, limit)
        if stream.documents_sha256 != d["documents_sha256"]:
            now, recorded = stream.documents_sha256[:16], d["documents_sha256"][:16]
            raise DataError(f"{stream.where} changed while it was tokenized: its documents hash to {now}…, its "
                            f"corpus record says {recorded}…, so what was read is not used; make sure the dataset "
                            f"stays as it is while gpt2train reads it{redo}")

    return stream.where, checked()
