"""Which on-disk check of the library (gpt2train/lineage/on_disk.py) answers for which asset: what
`gpt2train pipeline --stale-only` asks before it skips an (asset, partition) that Dagster's records
call fresh (pipelines/runner.py). The asset names live here, not in the library.

    artifact_problem(cfg, "token_shards", "sample/10BT/000_00000.parquet")   # None: as recorded
    artifact_problem(cfg, "hf_export", key, rehash=True)                    # also every recorded sha256
"""

from __future__ import annotations

from gpt2train.config import Config
from gpt2train.lineage import on_disk


def artifact_problem(cfg: Config, asset: str, key: str | None = None, rehash: bool = False) -> str | None:
    """What is missing or changed of `asset`'s artifact (for partition `key`), or None."""
    if asset == "corpus":
        return on_disk.corpus_record_problem(cfg, key)
    if asset == "token_shards":
        return on_disk.shards_problem(cfg, key, rehash)
    if asset == "training_run":
        return on_disk.run_problem(cfg)
    if asset == "hf_export":
        return on_disk.export_problem(cfg, key, rehash)
    if asset == "eval_report":
        return on_disk.report_problem(cfg, key, rehash)
    if asset == "eval_summary":
        return on_disk.summary_problem(cfg)
    raise ValueError(f"no on-disk check for asset {asset!r}")
