"""Per-partition stale status, computed the way the Dagster UI computes its "stale" markers.

    stale_statuses(defs, instance, assets=["token_shards"])   # {(asset, partition): FRESH | STALE | MISSING}
    stale_report(defs, instance)        # {(asset, partition): Staleness(status, causes)}: also why, in Dagster's words

Dagster has no public API for staleness, and its asset-level status ignores partitions. The UI asks
its resolver (`CachingStaleStatusResolver`) one partition at a time, a few database queries each:
about 20 s for 1,000 corpus partitions here. So for a partitioned asset whose dependencies are
partitioned the same way (identity mapping: corpus -> token_shards, checkpoint -> hf_export ->
eval_report) this applies the resolver's own rules to records fetched in bulk, a few queries per
asset (`_bulk_statuses`); anything else (an unpartitioned asset such as training_run, a partition
whose record carries no provenance) is asked of the resolver itself. tests/test_pipeline_chain.py
checks, in every state it walks the chain through, that both give the same answer. The resolver and
the rules' private parts (a record's data version, the INITIAL/NULL exception) come from
pipelines/dagster_internals.py, Dagster's private API in one place.

The rules (dagster/_core/definitions/data_version.py, `_get_stale_causes_materialized`), for a
partition with a materialization that records its provenance:
- STALE when the asset's code version is not the one recorded, when a dependency was removed or
  added, or when a dependency partition has a record newer than the run's input pointer whose data
  version differs from the one the pointer saw (for an external dependency, its observations);
- MISSING without a materialization; FRESH otherwise.

Staleness does not propagate ahead of data: an asset goes stale when an upstream's *data
version* changes (or its own code version does), so after changing the shard config only the
shards are stale until they rerun; callers walk the graph in order and ask again after each stage.
Used by `gpt2train pipeline --stale-only` (and `--dry-run`, which prints the causes), by the
`stale_partitions` asset checks (pipelines/stale_checks.py) and by the tests.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from dataclasses import dataclass

import dagster as dg

from pipelines.dagster_internals import StaleStatus, data_version_of, data_versions_differ, stale_status_resolver

__all__ = ["StaleStatus", "Staleness", "stale_report", "stale_statuses"]

PAGE = 1000


@dataclass(frozen=True)
class Staleness:
    status: StaleStatus
    # Why it is STALE, in the words of the UI's "Unsynced" popover ("has a new code version", "has a
    # new dependency data version: hf_export [key]"), sorted; empty unless STALE.
    causes: tuple[str, ...] = ()


def stale_statuses(defs: dg.Definitions, instance: dg.DagsterInstance, assets: list[str] | None = None,
                   partition_keys: list[str] | None = None,
                   bulk: bool = True) -> dict[tuple[str, str | None], StaleStatus]:
    """{(asset name, partition key): FRESH | STALE | MISSING} for the materializable `assets` (default:
    all), over each asset's current dynamic partitions (or `partition_keys`, if given). `bulk=False`
    asks Dagster's resolver for every partition (what the UI does)."""
    return {k: v.status for k, v in stale_report(defs, instance, assets, partition_keys, bulk).items()}


def stale_report(defs: dg.Definitions | dg.RepositoryDefinition, instance: dg.DagsterInstance,
                 assets: list[str] | None = None, partition_keys: list[str] | None = None,
                 bulk: bool = True) -> dict[tuple[str, str | None], Staleness]:
    """`stale_statuses`, each with its causes. `defs` may also be the repository a sensor or a check
    runs in (`context.repository_def`)."""
    asset_graph = defs.asset_graph if isinstance(defs, dg.RepositoryDefinition) else defs.resolve_asset_graph()
    resolver = stale_status_resolver(instance, asset_graph)
    records = _Records(instance)
    out = {}
    for key in asset_graph.get_all_asset_keys():
        node = asset_graph.get(key)
        if not node.is_materializable or (assets is not None and key.to_user_string() not in assets):
            continue
        if node.partitions_def is None:
            parts: list[str | None] = [None]
        elif partition_keys is not None:
            parts = list(partition_keys)
        else:
            parts = list(node.partitions_def.get_partition_keys(dynamic_partitions_store=instance))
        fast = _bulk_statuses(asset_graph, records, key, parts) if bulk and _bulk_applies(asset_graph, key) else {}
        for p in parts:
            found = fast.get(p)
            if found is None:
                status = resolver.get_status(key, p)
                causes = resolver.get_stale_causes(key, p) if status == StaleStatus.STALE else []
                found = Staleness(status, tuple(sorted(_describe(c) for c in causes)))
            out[(key.to_user_string(), p)] = found
    return out


def _describe(cause) -> str:
    """A resolver's StaleCause as the UI words it: the reason, and the dependency it names."""
    dep = cause.dependency
    if dep is None or dep.asset_key.to_user_string() in cause.reason:
        return cause.reason
    return f"{cause.reason}: {_label(dep.asset_key.to_user_string(), dep.partition_key)}"


def _label(asset: str, partition: str | None) -> str:
    return f"{asset} [{partition}]" if partition else asset


def _bulk_applies(asset_graph, key: dg.AssetKey) -> bool:
    """A partitioned asset every dependency of which has the same partitions, mapped one to one."""
    node = asset_graph.get(key)
    return node.partitions_def is not None and all(
        asset_graph.get(dep).partitions_def == node.partitions_def
        and isinstance(asset_graph.get_partition_mapping(key, dep), dg.IdentityPartitionMapping)
        for dep in node.parent_keys)


class _Records:
    """Every materialization (or, for an external asset's stale check, observation) of an asset,
    fetched once, newest first in pages, grouped by partition in storage-id order."""

    def __init__(self, instance: dg.DagsterInstance):
        self.instance = instance
        self._cache: dict[tuple[dg.AssetKey, bool], dict[str | None, list]] = {}

    def by_partition(self, key: dg.AssetKey, observations: bool = False) -> dict[str | None, list]:
        if (key, observations) not in self._cache:
            fetch = self.instance.fetch_observations if observations else self.instance.fetch_materializations
            grouped: dict[str | None, list] = defaultdict(list)
            cursor = None
            while True:
                page = fetch(key, limit=PAGE, cursor=cursor)
                for record in page.records:
                    grouped[record.partition_key].append(record)
                if not page.has_more:
                    break
                cursor = page.cursor
            for records in grouped.values():
                records.sort(key=lambda r: r.storage_id)
            self._cache[(key, observations)] = grouped
        return self._cache[(key, observations)]


def _bulk_statuses(asset_graph, records: _Records, key: dg.AssetKey,
                   partitions: list[str | None]) -> dict[str | None, Staleness | None]:
    """The resolver's rules over bulk-fetched records, with its causes (sorted, as stale_report's
    are); None where only the resolver can tell."""
    node = asset_graph.get(key)
    deps = sorted(node.parent_keys)
    own = records.by_partition(key)
    dep_records = {dep: records.by_partition(dep, observations=asset_graph.get(dep).is_external) for dep in deps}
    out: dict[str | None, Staleness | None] = {}
    for p in partitions:
        mine = own.get(p)
        if not mine:
            out[p] = Staleness(StaleStatus.MISSING)
            continue
        provenance = dg.DataProvenance.from_tags(mine[-1].event_log_entry.tags or {})
        if provenance is None:
            out[p] = None  # recorded without provenance: the resolver compares timestamps instead
            continue
        causes = []
        if node.code_version and node.code_version != provenance.code_version:
            causes.append("has a new code version")
        causes += [f"removed dependency on {d.to_user_string()}"
                   for d in sorted(set(provenance.input_data_versions) - set(deps))]
        for dep in deps:
            name = dep.to_user_string()
            if not provenance.has_input_asset(dep):
                causes.append(f"has a new dependency on {name}")
            elif _dep_updated(dep_records[dep].get(p, []), provenance.input_storage_ids[dep]):
                # The resolver says "data version" where the dependency's versions are meaningful: it
                # has a code version, or it is external (its data versions are recorded, never computed).
                dep_node = asset_graph.get(dep)
                noun = "data version" if dep_node.code_version is not None or dep_node.is_external else \
                    "materialization"
                causes.append(f"has a new dependency {noun}: {_label(name, p)}")
        out[p] = Staleness(StaleStatus.STALE if causes else StaleStatus.FRESH, tuple(sorted(causes)))
    return out


def _dep_updated(dep_records: list, pointer: int | None) -> bool:
    """The resolver's `_is_dep_updated` for a partitioned dependency: the newest record after the
    run's input pointer against the newest at or before it (both None-safe)."""
    ids = [r.storage_id for r in dep_records]
    after = dep_records[-1] if dep_records and (pointer is None or ids[-1] > pointer) else None
    if after is None:
        return False
    i = len(dep_records) if pointer is None else bisect.bisect_right(ids, pointer)
    before = dep_records[i - 1] if i > 0 else None
    return data_versions_differ(data_version_of(before.event_log_entry) if before else None,
                                data_version_of(after.event_log_entry))
