"""Partition definitions shared by the assets."""

import dagster as dg

from gpt2train.config import Config
from gpt2train.data.corpus import list_source_files

# One partition per corpus source file, keyed by its path relative to the source root
# (`sample/10BT/000_00000.parquet`; for `hf-dataset:`, a data file of the config, by its path in the
# dataset repo or folder). Dynamic: the `corpus_files_sensor` (or
# `gpt2train pipeline`) adds a key when a file appears, so a new file fetches and
# tokenizes only that file.
corpus_files = dg.DynamicPartitionsDefinition(name="corpus_files")

# One partition per complete checkpoint, keyed `<run_tag>@step_XXXXXXXX` (gpt2train.training.checkpoint.
# checkpoint_key). Immutable: the run tag names the config and shards that made it, so a new
# training run adds partitions and never makes an old run's exports and reports stale.
checkpoints = dg.DynamicPartitionsDefinition(name="checkpoints")


def unregistered_source_files(cfg: Config, instance: dg.DagsterInstance) -> tuple[list[str], list[str]]:
    """(all configured source-file keys in source order, those not yet a `corpus_files` partition)."""
    keys = [f.key for f in list_source_files(cfg.corpus)]
    known = set(instance.get_dynamic_partitions(corpus_files.name))
    return keys, [k for k in keys if k not in known]
