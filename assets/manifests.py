"""Manifests: where many partitions flow into one asset, a small external asset that stands for all of them.

    token_shards (one partition per corpus file) -> shard_manifest  -> training_run
    eval_report  (one partition per checkpoint)  -> report_manifest -> eval_summary

Why: Dagster does not track a dependency on 100 or more partitions of an upstream asset (its
`SKIP_PARTITION_DATA_VERSION_DEPENDENCY_THRESHOLD`, a module constant), so with FineWeb-Edu's ~140
files `training_run` would never go stale when a shard changed, nor `eval_summary` once 100
checkpoints were scored. A manifest is unpartitioned, and its data version hashes every member:
`shard_manifest` the name and sha256 of every train and val shard (the run tag's data part,
gpt2train/training/run_identity.py `shards_digest`), `report_manifest` every finished report's key and scores.
A downstream asset depends on the manifest alone, one edge Dagster always follows, at any count.

Manifests are external (Dagster does not compute them): they are recorded, as a runless
materialization whose data version is the digest, whenever the digest on disk differs from the
recorded one, by whoever is about to rely on it or has just changed it: the token_shards and
eval_report assets after they write, the sensors on every tick, and `gpt2train pipeline` before the
training and summary stages. Computing, comparing and recording happen under one lock
(`<data_dir>/.manifests.lock`, waited for), so the last record is always of the newest state on
disk, whichever recorder comes last. A sidecar that cannot be read counts as its own value
(`unreadable:<file>`), with a warning, so one bad file neither stops a sensor nor hides a change.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import dagster as dg

from assets.checkpoints import DATA_VERSION_TAG
from assets.partitions import checkpoints
from evals.trend import read_reports
from gpt2train.config import Config
from gpt2train.layout import LINEAGE_FILE, manifests_lock_path, report_dir
from gpt2train.locks import writer_lock
from gpt2train.training.run_identity import shard_set, shards_digest

SHARD_MANIFEST = dg.AssetKey("shard_manifest")
REPORT_MANIFEST = dg.AssetKey("report_manifest")

shard_manifest_spec = dg.AssetSpec(
    SHARD_MANIFEST,
    deps=["token_shards"],
    group_name="data",
    kinds={"json"},
    description="Every train and val shard, by name and sha256: what training reads. Data version = their hash "
                "(the run tag's data part); recorded whenever it changes.",
)

report_manifest_spec = dg.AssetSpec(
    REPORT_MANIFEST,
    deps=["eval_report"],
    group_name="evaluation",
    kinds={"json"},
    description="Every finished eval report, by checkpoint and scores: what eval_summary gathers. Data version = "
                "their hash; recorded whenever it changes.",
)


def shard_manifest(cfg: Config) -> tuple[str, dict]:
    """(digest, metadata) of the shards on disk now."""
    shards = shard_set(cfg, strict=False)
    return shards_digest(shards), {"shards": dg.MetadataValue.int(len(shards)),
                                   "tokens": dg.MetadataValue.int(sum(s["tokens"] or 0 for s in shards))}


def report_manifest(cfg: Config, instance: dg.DagsterInstance) -> tuple[str, dict]:
    """(digest, metadata) of the finished reports of every known checkpoint partition, now: exactly
    what eval_summary reads of them (evals.trend.read_reports: run, step, limit, scores, in-loop
    figures), so a report rewritten with the same figures leaves the summary fresh."""
    keys = sorted(instance.get_dynamic_partitions(checkpoints.name))
    dirs = [report_dir(cfg.data_dir, k) for k in keys if (report_dir(cfg.data_dir, k) / LINEAGE_FILE).is_file()]
    rows, _ = read_reports(dirs)
    # report_dir follows from the checkpoint key and the data dir, which the summary names anyway.
    read = [{k: v for k, v in row.items() if k != "report_dir"} | {"key": Path(row["report_dir"]).name}
            for row in rows]
    digest = hashlib.sha256(json.dumps(read, sort_keys=True).encode()).hexdigest()[:24]
    return digest, {"reports": dg.MetadataValue.int(len(rows))}


def _recorded_version(instance: dg.DagsterInstance, key: dg.AssetKey) -> str | None:
    records = instance.fetch_materializations(key, limit=1).records
    return records[0].asset_materialization.tags.get(DATA_VERSION_TAG) if records else None


def pending_manifests(cfg: Config, instance: dg.DagsterInstance,
                      keys: tuple[dg.AssetKey, ...] = (SHARD_MANIFEST, REPORT_MANIFEST)) -> list[dg.AssetMaterialization]:
    """A materialization for each of the manifests `keys` whose digest on disk differs from the recorded one."""
    events = []
    for key in keys:
        digest, metadata = shard_manifest(cfg) if key == SHARD_MANIFEST else report_manifest(cfg, instance)
        if _recorded_version(instance, key) != digest:
            events.append(dg.AssetMaterialization(asset_key=key, tags={DATA_VERSION_TAG: digest}, metadata=metadata))
    return events


def record_manifests(cfg: Config, instance: dg.DagsterInstance,
                     keys: tuple[dg.AssetKey, ...] = (SHARD_MANIFEST, REPORT_MANIFEST)) -> list[str]:
    """Record the manifests `keys` that changed; returns their names."""
    with writer_lock(Path(cfg.data_dir), "manifests", lock=manifests_lock_path(cfg.data_dir), wait=True):
        events = pending_manifests(cfg, instance, keys)
        for event in events:
            instance.report_runless_asset_event(event)
    return [e.asset_key.to_user_string() for e in events]
