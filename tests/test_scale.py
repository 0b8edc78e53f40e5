"""The staleness matrix at scale: 150 corpus files, 151 checkpoints, in `--stale-only`'s decisions and in
the UI's own markers (GraphQL `staleStatus` / `staleStatusByPartition` from a real code server over the
same instance).

Past 100 partitions Dagster stops following a dependency on a partitioned asset (its only such threshold:
dagster/_core/definitions/data_version.py); the chain's manifests (assets/manifests.py) are what keep
`training_run` and `eval_summary` exact here. 150 files is past it; `--stale-only`'s bulk reader
(pipelines/staleness.py) reads the records in pages of PAGE (1,000), set to 64 here so that it turns
pages at 150 as it does at thousands of files. The time those decisions take at 1,000 files is
bench/scale.py's to measure. The history is built as bench/scale.py builds it (tiny generated parquet
files through the library's data stage, each materialization recorded with a run's provenance tags; one
real training run; checkpoints with their exports and reports recorded). 3 files:
tests/test_pipeline_chain.py.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import dagster as dg
import pytest

from bench.scale import UiWorkspace, build, scale_cfg, scale_sets, ui_env, write_corpus
from gpt2train.lineage import stage_versions
from pipelines import staleness
from pipelines.definitions import build_definitions
from pipelines.runner import run_pipeline
from pipelines.staleness import StaleStatus, stale_statuses

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]

FILES = 150
CHECKPOINTS = 150  # built, besides the training run's own (one more: scored for real)
PAGE = 64  # the bulk reader's page here: 150 files' records fill three


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp(f"scale-{FILES}")
    (root / "home").mkdir()
    mp = pytest.MonkeyPatch()
    mp.setattr(staleness, "PAGE", PAGE)
    try:
        with dg.DagsterInstance.local_temp(str(root / "home")) as instance:
            build(root, instance, FILES, CHECKPOINTS)
            yield root, instance, FILES
    finally:
        mp.undo()


def not_fresh(root: Path, instance, *sets: str) -> dict[str, int]:
    """{asset: how many of its partitions are not FRESH} under the config with `sets`, from the
    bulk rules (the chain tests assert that they equal Dagster's resolver)."""
    defs = build_definitions(scale_cfg(root, *sets))
    statuses = stale_statuses(defs, instance)
    out: dict[str, int] = {}
    for (asset, _), status in statuses.items():
        if status != StaleStatus.FRESH:
            out[asset] = out.get(asset, 0) + 1
    return out


def ui_not_fresh(root: Path, instance, assets: list[str], *sets: str) -> dict[str, int]:
    """The same count as the UI shows it: a code server loading the config, then its GraphQL answers."""
    old = {k: os.environ.get(k) for k in ("GPT2TRAIN_CONFIG", "GPT2TRAIN_SET")}
    os.environ.update(ui_env(scale_sets(root, *sets)))
    try:
        with UiWorkspace(instance) as ui:
            out = {}
            for asset in assets:
                partitioned = asset not in ("training_run", "eval_summary")
                field = "staleStatusByPartition" if partitioned else "staleStatus"
                node = ui.query(f"""{{ assetNodeOrError(assetKey: {{path: ["{asset}"]}}) {{
                    ... on AssetNode {{ {field} }} }} }}""")["assetNodeOrError"]
                values = node[field] if partitioned else [node[field]]
                out[asset] = sum(v != "FRESH" for v in values)
            return {a: n for a, n in out.items() if n}
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


ALL = ["corpus", "token_shards", "training_run", "hf_export", "eval_report", "eval_summary"]


def test_nothing_changed_nothing_stale(world):
    root, instance, files = world
    assert not_fresh(root, instance) == {}
    assert ui_not_fresh(root, instance, ALL) == {}
    summary = run_pipeline(scale_cfg(root), instance, stale_only=True)
    checkpoints = len(instance.get_dynamic_partitions("checkpoints"))
    assert checkpoints == CHECKPOINTS + 1
    assert summary.ran == [] and len(summary.skipped) == 2 * files + 1 + 2 * checkpoints + 1


@pytest.mark.parametrize("sets,expected", [
    (["shards.shard_size=300"], "token_shards"),
    (["train.learning_rate=0.002"], "training_run"),
    (["evals.limit=3"], "eval_report"),
], ids=["shard config", "train config", "eval tasks"])
def test_a_config_change_makes_exactly_its_stage_stale(world, sets, expected):
    root, instance, files = world
    count = {"token_shards": files, "training_run": 1,
             "eval_report": len(instance.get_dynamic_partitions("checkpoints"))}[expected]
    assert not_fresh(root, instance, *sets) == {expected: count}
    assert ui_not_fresh(root, instance, [expected, "eval_summary"], *sets) == {expected: count}


def test_an_export_change_makes_every_export_stale(world, monkeypatch):
    # No config setting shapes an export: its output changes with its code, i.e. its stage version.
    root, instance, _ = world
    monkeypatch.setitem(stage_versions.STAGE_VERSIONS, "export", stage_versions.STAGE_VERSIONS["export"] + 1)
    assert not_fresh(root, instance) == {"hf_export": len(instance.get_dynamic_partitions("checkpoints"))}


def test_a_changed_then_an_added_corpus_file_retrain_through_the_shard_manifest(world):
    root, instance, files = world
    cfg = scale_cfg(root)
    # One file's bytes change: its partition reruns, the shard manifest moves, training goes stale.
    changed = root / "src" / "sample" / "10BT" / "0007_00000.parquet"
    shutil.copyfile(root / "src" / "sample" / "10BT" / "0008_00000.parquet", changed)
    shards_before = shard_count(instance)
    summary = run_pipeline(cfg, instance, stale_only=True, through="data")
    assert summary.ran == [("corpus", "sample/10BT/0007_00000.parquet"),
                           ("token_shards", "sample/10BT/0007_00000.parquet")]
    # The token_shards run recorded the manifest it changed: training_run is stale, and only it.
    assert not_fresh(root, instance) == {"training_run": 1}
    assert ui_not_fresh(root, instance, ALL) == {"training_run": 1}
    assert run_pipeline(cfg, instance, stale_only=True, through="data").ran == []

    # A new file: one new partition, its shards in the manifest, training (still) stale.
    write_corpus(root / "src", 1, start=files)
    summary = run_pipeline(cfg, instance, stale_only=True, through="data")
    new_key = f"sample/10BT/{files:04d}_00000.parquet"
    assert summary.ran == [("corpus", new_key), ("token_shards", new_key)]
    assert not_fresh(root, instance) == {"training_run": 1}
    assert shard_count(instance) > shards_before


def shard_count(instance) -> int:
    record = instance.fetch_materializations(dg.AssetKey("shard_manifest"), limit=1).records[0]
    return record.asset_materialization.metadata["shards"].value
