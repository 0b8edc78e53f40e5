"""The data stage's entry points: what `gpt2train prepare` and the Dagster assets call.

    materialize_corpus_file(cfg, key)   # fetch one source file, write its lineage record
    materialize_token_shards(cfg, key)  # shard one source file (partition layout)
    prepare(cfg, out_dir)               # every file in one stream (llm.c's layout)

Each takes the writer lock of what it writes (gpt2train/locks.py), so the CLI and the Dagster assets
refuse a second writer alike.

Where each goes under `cfg.data_dir`: gpt2train/layout.py.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from concurrent.futures import Future
from pathlib import Path

from gpt2train.config import Config, config_to_dict
from gpt2train.data import hf_dataset
from gpt2train.data.corpus import (
    READER_VERSIONS, CorpusRecord, check_source_file, check_source_key, fetch_source_file, hash_checked_file,
    list_source_files,
)
from gpt2train.data.feed import fetch_ahead, wait_all
from gpt2train.data.identity import CorpusIdentity, corpus_identity
from gpt2train.errors import DataError
from gpt2train.failpoints import failpoint
from gpt2train.fileio import FileStamp, read_json, unchanged_since, write_json_atomic
from gpt2train.lineage.records import (
    code_version, data_dir_field, provenance, recorded_path, resolve_recorded, sidecar_path,
)
from gpt2train.data.shard_writer import (
    ShardsResult, ValidationSplit, partition_validation_split, stream_validation_split, validation_notice,
    write_partition_shards, write_shards,
)
from gpt2train.data.shards import verification_path
from gpt2train.layout import corpus_record_path, prepared_dir, shard_partition_manifest, shards_dir
from gpt2train.locks import writer_lock

log = logging.getLogger(__name__)

def corpus_code_version(cfg: Config) -> str:
    """The settings that decide what a partition's record holds. Not `source` (a mirror and the
    Hub give the same bytes, and the data version is their hash), not `files` (it selects
    partitions: raising it adds partitions and leaves the others fresh), and the oversize settings
    only where they can change a token (see `_oversize_settings`)."""
    c = cfg.corpus
    return code_version(["corpus"], {"dataset": c.dataset, "name": c.name, "revision": c.revision,
                                              "text_field": c.text_field,
                                              "max_documents_per_file": c.max_documents_per_file,
                                              **_oversize_settings(cfg)})


def _oversize_settings(cfg: Config) -> dict:
    """`max_document_chars` and `oversize_documents` where they shape output: only when oversize documents
    are split (the cut positions). Refusing changes no token of any document it lets through, so under
    `refuse` (the default) neither setting makes anything stale."""
    c = cfg.corpus
    return {"oversize_split_chars": c.max_document_chars} if c.oversize_documents == "split" else {}


def corpus_data_version(record: CorpusRecord, cfg: Config) -> str:
    """The file's bytes *and* which documents of it are used, as what: changing `text_field`,
    `max_documents_per_file` or how oversize documents are split, or the reader of the file's type
    (READER_VERSIONS), changes the documents the shards are made of, so it must reach them."""
    c = cfg.corpus
    extra = "".join(f"|{k}={v}" for k, v in _oversize_settings(cfg).items())
    reader = READER_VERSIONS.get(Path(record.key).suffix, 1)
    if reader > 1:  # version 1 readers add nothing: their files' data versions stay as recorded before
        extra += f"|reader={reader}"
    return hashlib.sha256(f"{record.sha256}|{c.text_field}|{c.max_documents_per_file}{extra}".encode()).hexdigest()[:24]


def materialize_corpus_file(cfg: Config, key: str) -> CorpusRecord:
    """Fetch source file `key` (download or locate), hash it, and write its record."""
    check_source_key(cfg.corpus, key)  # before its lock creates anything under the data dir
    # The record is written last and marks the partition done; its lock covers the download too.
    with writer_lock(corpus_record_path(cfg.data_dir, key), f"corpus record of source file {key}"):
        return write_corpus_record(cfg, fetch_source_file(cfg.corpus, key, Path(cfg.data_dir)))


def write_corpus_record(cfg: Config, record: CorpusRecord) -> CorpusRecord:
    """Write the lineage record of a fetched source file (`corpus/records/<tag>.json`)."""
    key = record.key
    path = corpus_record_path(cfg.data_dir, key)
    identity = corpus_identity(cfg.corpus, [key])
    write_json_atomic(path, {
        "artifact": "corpus_file",
        **record.to_dict(),
        # A download under the data dir is recorded relative to it; a local mirror elsewhere absolute.
        "local_path": recorded_path(record.local_path, Path(cfg.data_dir)),
        "data_dir": data_dir_field(path.parent, Path(cfg.data_dir)),
        "dataset": identity.to_dict(),  # what the file is: a Hub dataset's (or its mirror's), or the user's own
        "config": {"corpus": applied_corpus_settings(cfg, identity)},
        **provenance("corpus", corpus_code_version(cfg)),
    })
    log.info("corpus file %s (%s): %s documents, %s bytes, sha256 %s", key, identity.label, record.documents,
             record.bytes, record.sha256[:16])
    return record


def applied_corpus_settings(cfg: Config, identity: CorpusIdentity) -> dict:
    """The corpus settings as a record keeps them: without the ones that named nothing for this source.
    `dataset` and `name` default to FineWeb-Edu's for every source; kept, they would label a folder of the
    user's own files (or another `hf-dataset:`) as FineWeb-Edu in the record and in `gpt2train lineage`.
    `revision` applies to the Hub and hf-dataset sources only."""
    settings = config_to_dict(cfg.corpus)
    if identity.dataset is None or hf_dataset.is_dataset_source(cfg.corpus.source):
        settings.pop("dataset", None)
        settings.pop("name", None)
    if cfg.corpus.source != "hub" and not hf_dataset.is_dataset_source(cfg.corpus.source):
        settings.pop("revision", None)
    return settings


def load_corpus_record(cfg: Config, key: str, verify: bool = True) -> CorpusRecord:
    """The record the corpus asset wrote for `key`; with `verify`, check that the file is still the one it
    records: by the stamp recorded with its sha256, hashing the file again only when the stamp moved (or the
    record predates stamps), so a file fetched and then tokenized is hashed once (gpt2train/fileio.py)."""
    path = corpus_record_path(cfg.data_dir, key)
    if not path.exists():
        raise DataError(f"no corpus record for {key!r} ({path}); fetch that source file first (`gpt2train "
                        f"pipeline --through data`, or `gpt2train prepare`)")
    raw = read_json(path, "corpus record")
    try:
        record = CorpusRecord(**{k: raw[k] for k in CorpusRecord.__dataclass_fields__ if k != "stamp"},
                              stamp=raw.get("stamp"))
        record.local_path = str(resolve_recorded(record.local_path, Path(cfg.data_dir)))
    except KeyError as e:
        raise DataError(f"corpus record {path} lacks field {e}; {_refetch(key)}") from e
    if record.key != key:
        raise DataError(f"corpus record {path} is for {record.key!r}, not {key!r}; {_refetch(key)}")
    if verify:
        local = Path(record.local_path)
        actual = unchanged_since(local, record.sha256, record.file_stamp())
        if actual is not None:
            raise DataError(f"corpus file {local} changed since it was recorded (sha256 {actual[:16]}…, record "
                            f"{record.sha256[:16]}…); {_refetch(key)}")
    return record


def _refetch(key: str) -> str:
    return f"fetch source file {key!r} again to rewrite its record"


def source_changed(cfg: Config, key: str) -> bool:
    """Whether a local source file's bytes differ from its record: by the stamp recorded with its sha256,
    hashing the file again only when the stamp moved (gpt2train/fileio.py unchanged_since).

    Dagster cannot see a root asset's inputs change, so `gpt2train pipeline --stale-only` asks
    this before trusting a FRESH `corpus`. Hub files are addressed by commit and do not change.
    """
    path = corpus_record_path(cfg.data_dir, key)
    if cfg.corpus.source == "hub" or not path.exists():
        return False
    record = read_json(path, "corpus record")
    local = resolve_recorded(record["local_path"], Path(cfg.data_dir))
    return unchanged_since(local, record["sha256"], FileStamp.from_dict(record.get("stamp"))) is not None


def val_file_key(cfg: Config) -> str:
    """The source file whose first shard holds the validation tokens (see gpt2train/data/shard_writer.py).

    `shards.val_file` if set (it must be one of the source files); otherwise the first source
    file at the time the first one was chosen, pinned in `shards/val_file.json`, so that a new
    file sorting earlier does not take the validation shard over from the current owner.
    """
    pinned = shards_dir(cfg.data_dir) / "val_file.json"
    if cfg.shards.val_file:
        keys = [f.key for f in list_source_files(cfg.corpus)]
        if cfg.shards.val_file not in keys:
            raise DataError(f"shards.val_file={cfg.shards.val_file!r} is not one of the source files "
                            f"({', '.join(keys[:5])}{', ...' if len(keys) > 5 else ''}); use one of their keys")
        return cfg.shards.val_file
    if pinned.exists():
        return read_json(pinned, "validation file pin")["key"]
    key = list_source_files(cfg.corpus)[0].key
    write_json_atomic(pinned, {"key": key, "why": "first source file when the validation shard was first "
                                                  "written; set shards.val_file to choose another"})
    return key


def materialize_token_shards(cfg: Config, key: str, progress: bool = True,
                             corpus_keys: list[str] | None = None) -> dict:
    """Tokenize source file `key` into its own shards (the asset's partition); returns its manifest, with
    `validation`: the corpus's validation split as far as it is sharded now (`corpus_validation_split`;
    `corpus_keys`: the corpus's source files, default the configured ones)."""
    out = shards_dir(cfg.data_dir)
    # The manifest is written last and marks the partition complete; one lock per partition, as
    # partitions write disjoint shard files (the val shard belongs to the pinned val file's partition).
    with writer_lock(shard_partition_manifest(out, key), f"token shards of source file {key}"):
        record = load_corpus_record(cfg, key)
        failpoint("token_shards.started")  # the fault tests hold or kill a data run here
        manifest = write_partition_shards(record, out, cfg, is_val_file=(key == val_file_key(cfg)), progress=progress)
    keys = corpus_keys if corpus_keys is not None else [f.key for f in list_source_files(cfg.corpus)]
    split, sharded = corpus_validation_split(cfg, keys)
    if sharded == len(keys):
        tell_validation_split(cfg, split)
    return {**manifest, "validation": {**split.to_dict(), "files_sharded": sharded, "files_in_corpus": len(keys)}}


def corpus_validation_split(cfg: Config, keys: list[str]) -> tuple[ValidationSplit, int]:
    """(the validation split over the source files `keys` that have been sharded, how many have). The
    val/train split is decided in the validation file's partition, the totals only once every file's is
    written: partitions run side by side, in any order."""
    out = shards_dir(cfg.data_dir)
    paths = [shard_partition_manifest(out, k) for k in keys]
    manifests = [read_json(p, "partition manifest") for p in paths if p.exists()]
    return partition_validation_split(manifests), len(manifests)


def tell_validation_split(cfg: Config, split: ValidationSplit) -> str | None:
    """Log the validation notice (shard_writer.validation_notice) once per split: each partition of a
    complete corpus computes the same split, and the first to get here tells it (`shards/validation_split.json`
    records what was told). Returns the notice, or None when there is none or it was told already."""
    told = shards_dir(cfg.data_dir) / "validation_split.json"
    now = split.to_dict()
    with writer_lock(told, "validation split record", wait=True):
        if told.exists() and read_json(told, "validation split record") == now:
            return None
        write_json_atomic(told, now)
    notice = validation_notice(split, cfg)
    if notice:
        log.warning(notice)
    return notice


# Source files `prepare` checks, and then hashes (or downloads), at once: the hashes ahead of the tokenizer.
# One hash thread nearly keeps pace with 64 tokenizing cores (a 1.7 GB FineWeb-Edu file: ~1.8 s to hash at
# ~0.95 GB/s, ~2.3 s to tokenize at ~5 M tokens/s per core); four leave room for a slower disk or the Hub.
FETCH_THREADS = 4


def prepare(cfg: Config, out_dir: str | Path | None = None, progress: bool = True) -> ShardsResult:
    """`gpt2train prepare`: fetch every configured source file and write llm.c's exact layout.

    Every file is checked first (it holds text: a parquet file's footer, every document of a .jsonl or
    .txt), on FETCH_THREADS threads, before anything is written: a bad file among many stops `prepare`
    with the data dir as it was. Then the files are hashed (a Hub file: downloaded) ahead of the tokenizer
    (gpt2train/data/feed.py), the first file tokenized while later ones are hashed. Records are written
    once every file is hashed and every shard written, and the shards moved into place after them."""
    out_dir = Path(out_dir) if out_dir else prepared_dir(cfg.data_dir)
    if (out_dir / "partitions").is_dir():
        # Mixing the two layouts would put every token in two shards under the same glob.
        raise DataError(f"{out_dir} holds shards written one source file at a time (it has partitions/); "
                        f"give `prepare` another --out, e.g. {out_dir.parent / 'prepared'}")
    files = list_source_files(cfg.corpus)
    log.info("corpus: %d file(s) from %s", len(files), cfg.corpus.source)
    data_dir = Path(cfg.data_dir)
    # An hf-dataset file's check streams it through `datasets`, one at a time as before: its thread safety
    # across concurrent streams is not something this code relies on.
    checkers = 1 if hf_dataset.is_dataset_source(cfg.corpus.source) else FETCH_THREADS
    with fetch_ahead([f.key for f in files], lambda key: check_source_file(cfg.corpus, key, data_dir),
                     checkers) as checks:
        checked = wait_all(checks)
    with contextlib.ExitStack() as held:
        # Each record under the lock the corpus asset takes for it, the output folder under its own:
        # `prepare` next to a pipeline run (or another `prepare`) is refused, never interleaved.
        for f in files:
            record = corpus_record_path(cfg.data_dir, f.key)
            held.enter_context(writer_lock(record, f"corpus record of source file {f.key}"))
        held.enter_context(writer_lock(out_dir, "prepared shards"))
        fetches = held.enter_context(fetch_ahead(checked, lambda c: hash_checked_file(cfg.corpus, c, data_dir),
                                                 FETCH_THREADS))
        # Hub files are counted once downloaded: for them the progress bar's total grows as they come in.
        documents = None if any(c.local is None and c.record is None for c in checked) else \
            sum(c.record.documents if c.record else c.documents for c in checked)
        return _write_prepared(cfg, fetches, out_dir, progress, documents)


def _write_prepared(cfg: Config, fetches: list[Future], out_dir: Path, progress: bool,
                    documents: int | None) -> ShardsResult:
    # Earlier stream-layout shards here (never per-partition ones, which the asset owns).
    stale = [p for p in sorted(out_dir.glob(f"{cfg.shards.prefix}_*.bin"))
             if _sidecar_layout(p) == "stream"] if out_dir.exists() else []
    result = write_shards(fetches, out_dir, cfg, layout="stream", progress=progress,
                          before_publish=lambda records: [write_corpus_record(cfg, r) for r in records],
                          documents=documents)
    notice = validation_notice(stream_validation_split(result.shards), cfg)
    if notice:
        log.warning(notice)
    # A rerun with a larger shard size writes fewer files: drop the ones this run did not write.
    current = {s["file"] for s in result.shards}
    for old in stale:
        if old.name not in current:
            old.unlink(missing_ok=True)
            sidecar_path(old).unlink(missing_ok=True)
            verification_path(old).unlink(missing_ok=True)
    return result


def _sidecar_layout(shard: Path) -> str | None:
    sidecar = sidecar_path(shard)
    try:
        return read_json(sidecar, "shard sidecar").get("layout") if sidecar.exists() else None
    except DataError:
        return None
