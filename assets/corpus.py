"""The `corpus` asset: one FineWeb-Edu (or local, or any `hf-dataset:`) source file per partition.

Wraps `gpt2train.data.stage.materialize_corpus_file`. Its data version hashes the file's
sha256 with the document selection (text field, documents per file), so downstream shards
go stale exactly when the documents they are made of change. An `hf-dataset:` data file is streamed,
not downloaded: its sha256 is that of its stream descriptor (commit, data file, the documents' own
sha256; gpt2train/data/hf_dataset.py). A partition is written under the
writer lock of its record (gpt2train/locks.py): two runs of one partition, e.g. launched twice
from the UI, are refused rather than interleaved.
"""

import dagster as dg

from assets.partitions import corpus_files
from gpt2train.config import Config
from gpt2train.data.identity import corpus_identity
from gpt2train.data.stage import corpus_code_version, corpus_data_version, materialize_corpus_file
from gpt2train.layout import corpus_record_path


def build_corpus_asset(cfg: Config) -> dg.AssetsDefinition:
    @dg.asset(
        name="corpus",
        partitions_def=corpus_files,
        code_version=corpus_code_version(cfg),
        group_name="data",
        kinds={"parquet", "huggingface"},
        description="Raw documents: one source file per partition, downloaded from the Hugging Face Hub "
                    "(resumable), read from a local mirror, or streamed from any Hugging Face dataset through "
                    "`datasets` (hf-dataset:). Data version = hash(file sha256, document selection).",
    )
    def corpus(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        record = materialize_corpus_file(cfg, context.partition_key)
        identity = corpus_identity(cfg.corpus, [record.key])
        return dg.MaterializeResult(
            data_version=dg.DataVersion(corpus_data_version(record, cfg)),
            metadata={
                "dataset": identity.label,  # a Hub dataset (or its mirror) only where it is one
                "source": record.source,
                "repo": record.repo or "",
                "revision": record.revision or "",
                "path": dg.MetadataValue.path(record.local_path),
                "sha256": record.sha256,
                "bytes": dg.MetadataValue.int(record.bytes),
                "documents": dg.MetadataValue.int(record.documents),
                "lineage_record": dg.MetadataValue.path(str(corpus_record_path(cfg.data_dir, context.partition_key))),
            },
        )

    return corpus
