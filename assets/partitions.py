"""Partition definitions shared by the assets."""

import dagster as dg

# One partition per corpus source file, keyed by its path relative to the source root
# (`sample/10BT/000_00000.parquet`). Dynamic: the `corpus_files_sensor` (or
# `gpt2train pipeline`) adds a key when a file appears, so a new file fetches and
# tokenizes only that file.
corpus_files = dg.DynamicPartitionsDefinition(name="corpus_files")
