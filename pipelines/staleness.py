"""Per-partition stale status, computed the way the Dagster UI computes its "stale" markers.

Dagster has no public API for staleness, and its asset-level status ignores partitions,
so this asks the same resolver the webserver uses (`CachingStaleStatusResolver`) for each
(asset, partition) — every partition of each asset's dynamic partitions definition, as the
instance lists them now. Used by `gpt2train pipeline --stale-only` and by the tests.

Staleness does not propagate ahead of data: an asset goes stale when an upstream's *data
version* changes (or its own code version does), so after changing the shard config only the
shards are stale until they rerun; callers walk the graph in order and ask again after each stage.
"""

from __future__ import annotations

import dagster as dg
from dagster._core.asset_graph_view.asset_graph_view import AssetGraphView, TemporalContext
from dagster._core.definitions.data_version import CachingStaleStatusResolver, StaleStatus
from dagster._time import get_current_datetime

__all__ = ["StaleStatus", "stale_statuses"]


def stale_statuses(defs: dg.Definitions, instance: dg.DagsterInstance, assets: list[str] | None = None,
                   partition_keys: list[str] | None = None) -> dict[tuple[str, str | None], StaleStatus]:
    """{(asset name, partition key): FRESH | STALE | MISSING} for the materializable `assets` (default:
    all), over each asset's current dynamic partitions (or `partition_keys`, if given)."""
    asset_graph = defs.resolve_asset_graph()
    view = AssetGraphView(temporal_context=TemporalContext(effective_dt=get_current_datetime(), last_event_id=None),
                          instance=instance, asset_graph=asset_graph)
    resolver = CachingStaleStatusResolver(instance=instance, asset_graph=asset_graph, loading_context=view)
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
        for p in parts:
            out[(key.to_user_string(), p)] = resolver.get_status(key, p)
    return out
