"""Per-partition stale status, computed the way the Dagster UI computes its "stale" markers.

Dagster has no public API for staleness, and its asset-level status ignores partitions,
so this asks the same resolver the webserver uses (`CachingStaleStatusResolver`) for each
(asset, partition). Used by `gpt2train pipeline --stale-only` and by the tests.
"""

from __future__ import annotations

import dagster as dg
from dagster._core.asset_graph_view.asset_graph_view import AssetGraphView, TemporalContext
from dagster._core.definitions.data_version import CachingStaleStatusResolver, StaleStatus
from dagster._time import get_current_datetime

__all__ = ["StaleStatus", "stale_statuses"]


def stale_statuses(defs: dg.Definitions, instance: dg.DagsterInstance,
                   partition_keys: list[str]) -> dict[tuple[str, str | None], StaleStatus]:
    """{(asset name, partition key): FRESH | STALE | MISSING} for every asset and partition."""
    asset_graph = defs.resolve_asset_graph()
    view = AssetGraphView(temporal_context=TemporalContext(effective_dt=get_current_datetime(), last_event_id=None),
                          instance=instance, asset_graph=asset_graph)
    resolver = CachingStaleStatusResolver(instance=instance, asset_graph=asset_graph, loading_context=view)
    out = {}
    for key in asset_graph.get_all_asset_keys():
        if not asset_graph.get(key).is_materializable:
            continue
        parts = partition_keys if asset_graph.get(key).partitions_def else [None]
        for p in parts:
            out[(key.to_user_string(), p)] = resolver.get_status(key, p)
    return out
