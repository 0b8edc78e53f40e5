"""The data stage's entry points: what `gpt2train prepare` and the Dagster assets call.

    materialize_corpus_file(cfg, key)   # fetch one source file, write its lineage record
    materialize_token_shards(cfg, key)  # shard one source file (partition layout)
    prepare(cfg, out_dir)               # every file in one stream (llm.c's layout)

Where things go under `cfg.data_dir`:

    corpus/hub/<repo>/<path>             Hub downloads (resumable)
    corpus/records/<tag>.json            one record per source file: sha256, bytes, documents, origin
    shards/<prefix>_{val,train}_*.bin    token shards, each with a `.bin.json` lineage sidecar
    shards/partitions/<tag>.json         per source file: its shards and data version (written last)
"""

from __future__ import annotations

import logging
from pathlib import Path

from gpt2train.config import Config, config_to_dict
from gpt2train.corpus import CorpusRecord, fetch_source_file, list_source_files
from gpt2train.errors import DataError
from gpt2train.fileio import read_json, sha256_file, write_json_atomic
from gpt2train.lineage import code_version, provenance
from gpt2train.prepare import ShardsResult, partition_tag, write_partition_shards, write_shards

log = logging.getLogger(__name__)

CORPUS_CODE_MODULES = ["gpt2train.corpus", "gpt2train.hub"]


def corpus_code_version(cfg: Config) -> str:
    return code_version(CORPUS_CODE_MODULES, cfg.corpus)


def data_dir(cfg: Config) -> Path:
    return Path(cfg.data_dir)


def shards_dir(cfg: Config) -> Path:
    return data_dir(cfg) / "shards"


def record_path(cfg: Config, key: str) -> Path:
    return data_dir(cfg) / "corpus" / "records" / f"{partition_tag(key)}.json"


def materialize_corpus_file(cfg: Config, key: str) -> CorpusRecord:
    """Fetch source file `key` (download or locate), hash it, and write its record."""
    record = fetch_source_file(cfg.corpus, key, data_dir(cfg))
    write_json_atomic(record_path(cfg, key), {
        "artifact": "corpus_file",
        **record.to_dict(),
        "config": {"corpus": config_to_dict(cfg.corpus)},
        **provenance("corpus", corpus_code_version(cfg)),
    })
    log.info("corpus file %s: %s documents, %s bytes, sha256 %s", key, record.documents, record.bytes,
             record.sha256[:16])
    return record


def load_corpus_record(cfg: Config, key: str, verify: bool = True) -> CorpusRecord:
    """The record the corpus asset wrote for `key`; with `verify`, re-hash the file against it."""
    path = record_path(cfg, key)
    if not path.exists():
        raise DataError(f"no corpus record for {key!r} ({path}); materialize the `corpus` asset's partition "
                        f"{key!r} first (or run `gpt2train prepare`)")
    raw = read_json(path, "corpus record")
    record = CorpusRecord(**{k: raw[k] for k in CorpusRecord.__dataclass_fields__})
    if verify:
        local = Path(record.local_path)
        actual = sha256_file(local) if local.exists() else "(missing)"
        if actual != record.sha256:
            raise DataError(f"corpus file {local} changed since it was recorded (sha256 {actual[:16]}…, record "
                            f"{record.sha256[:16]}…); rematerialize the `corpus` partition {key!r}")
    return record


def val_file_key(cfg: Config) -> str:
    """The source file whose first shard holds the validation tokens (see gpt2train/prepare.py)."""
    if cfg.shards.val_file:
        return cfg.shards.val_file
    try:
        return list_source_files(cfg.corpus)[0].key
    except DataError:
        # Offline with a Hub source: the files recorded so far are the ones there are.
        recorded = sorted(read_json(p, "corpus record")["key"]
                          for p in (data_dir(cfg) / "corpus" / "records").glob("*.json"))
        if not recorded:
            raise
        return recorded[0]


def materialize_token_shards(cfg: Config, key: str, progress: bool = True) -> dict:
    """Tokenize source file `key` into its own shards (the asset's partition); returns its manifest."""
    record = load_corpus_record(cfg, key)
    return write_partition_shards(record, shards_dir(cfg), cfg, is_val_file=(key == val_file_key(cfg)),
                                  progress=progress)


def prepare(cfg: Config, out_dir: str | Path | None = None, progress: bool = True) -> ShardsResult:
    """`gpt2train prepare`: fetch every configured source file and write llm.c's exact layout."""
    out_dir = Path(out_dir) if out_dir else data_dir(cfg) / "prepared"
    files = list_source_files(cfg.corpus)
    log.info("corpus: %d file(s) from %s", len(files), cfg.corpus.source)
    records = [materialize_corpus_file(cfg, f.key) for f in files]
    # Earlier stream-layout shards here (never per-partition ones, which the asset owns).
    stale = [p for p in sorted(out_dir.glob(f"{cfg.shards.prefix}_*.bin"))
             if _sidecar_layout(p) == "stream"] if out_dir.exists() else []
    result = write_shards(records, out_dir, cfg, layout="stream", progress=progress)
    # A rerun with a larger shard size writes fewer files: drop the ones this run did not write.
    current = {s["file"] for s in result.shards}
    for old in stale:
        if old.name not in current:
            old.unlink(missing_ok=True)
            old.with_name(old.name + ".json").unlink(missing_ok=True)
    return result


def _sidecar_layout(shard: Path) -> str | None:
    sidecar = shard.with_name(shard.name + ".json")
    try:
        return read_json(sidecar, "shard sidecar").get("layout") if sidecar.exists() else None
    except DataError:
        return None
