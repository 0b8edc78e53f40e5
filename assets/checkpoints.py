"""The `checkpoint` asset: every complete training checkpoint, one `checkpoints` partition each.

Checkpoints are written by the trainer, not computed by Dagster, so `checkpoint` is an external
asset (an `AssetSpec` downstream of `training_run`): gpt2train *records* each one with
`register_checkpoints` — from the `training_run` asset when the trainer reports it over Pipes, from the
`checkpoints_sensor` (checkpoints written outside a Dagster run, e.g. by `gpt2train train`; the sensor
returns the same events in its result), and from `gpt2train pipeline` — registering its partition and reporting,
with the checkpoint's content hash (sha256 of model.safetensors) as data version, an observation
and then a runless materialization. Both, in that order: Dagster's stale check of a downstream
partition (`hf_export`) reads an external upstream's *observations*, newer than the pointer the
downstream's run recorded (the upstream's newest materialization), while the UI counts a
partition as materialized only with a materialization.

Why external, and keyed `<run_tag>@step_XXXXXXXX`: an old run's checkpoints never change, so
their exports and eval reports must stay fresh when a new run trains. Dagster marks an external
asset never stale, and its downstream goes stale only when a partition's recorded content hash
changes — never because `training_run` ran again.
"""

from __future__ import annotations

import dagster as dg

from assets.partitions import checkpoints
from gpt2train.training.runs import CheckpointInfo

CHECKPOINT = dg.AssetKey("checkpoint")
DATA_VERSION_TAG = "dagster/data_version"

checkpoint_spec = dg.AssetSpec(
    CHECKPOINT,
    deps=["training_run"],
    partitions_def=checkpoints,
    group_name="training",
    kinds={"pytorch", "safetensors"},
    description="A complete training checkpoint (weights, optimizer, loader and RNG state, lineage), recorded "
                "when its DONE marker lands. Partition `<run_tag>@step_XXXXXXXX`; data version = sha256 of "
                "its model.safetensors.",
)


def checkpoint_events(info: CheckpointInfo) -> list[dg.AssetObservation | dg.AssetMaterialization]:
    """The observation, then the materialization, that record a checkpoint (see the module docstring)."""
    fields = dict(asset_key=CHECKPOINT, partition=info.key, tags={DATA_VERSION_TAG: info.model_sha256},
                  metadata={"path": dg.MetadataValue.path(str(info.path)), "step": dg.MetadataValue.int(info.step),
                            "run_tag": info.run_tag, "model_sha256": info.model_sha256,
                            **({"loss": dg.MetadataValue.float(info.loss)} if info.loss is not None else {})})
    return [dg.AssetObservation(**fields), dg.AssetMaterialization(**fields)]


def recorded_versions(instance: dg.DagsterInstance) -> dict[str, str | None]:
    """{partition key: the content hash its latest materialization recorded}, in one paged query (the
    sensor asks every tick, for every checkpoint)."""
    latest: dict[str, str | None] = {}
    cursor = None
    while True:
        page = instance.fetch_materializations(CHECKPOINT, limit=1000, cursor=cursor)  # newest first
        for record in page.records:
            latest.setdefault(record.partition_key, record.asset_materialization.tags.get(DATA_VERSION_TAG))
        if not page.has_more:
            return latest
        cursor = page.cursor


def pending_registrations(instance: dg.DagsterInstance,
                          infos: list[CheckpointInfo]) -> tuple[list[str], list]:
    """(partition keys to add, events to record, in order) for checkpoints Dagster has not seen, or
    has seen with other contents (a run directory rewritten in place)."""
    known = set(instance.get_dynamic_partitions(checkpoints.name))
    recorded = recorded_versions(instance)
    new_keys = [i.key for i in infos if i.key not in known]
    events = [e for i in infos if recorded.get(i.key) != i.model_sha256 for e in checkpoint_events(i)]
    return new_keys, events


def register_checkpoints(instance: dg.DagsterInstance, infos: list[CheckpointInfo]) -> list[str]:
    """Register and record the given checkpoints now; returns the keys that were new."""
    new_keys, events = pending_registrations(instance, infos)
    if new_keys:
        instance.add_dynamic_partitions(checkpoints.name, new_keys)
    for event in events:
        instance.report_runless_asset_event(event)
    return new_keys
