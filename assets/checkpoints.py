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

Each record's metadata: the train loss, the val loss and the in-loop HellaSwag (llm.c's scorer) with
the step each was measured at (`*_at_step`: the checkpoint's own step, or the latest one before it that
measured it; left out where training never measured it), and for the last checkpoint before an
instability (the trainer marks it in its state.json and never prunes it) `before_instability` saying so.
A mark lands after the checkpoint was recorded: the checkpoint is recorded again, with the same data
version, so its exports and reports stay fresh.

Why external, and keyed `<run_tag>@step_XXXXXXXX`: an old run's checkpoints never change, so
their exports and eval reports must stay fresh when a new run trains. Dagster marks an external
asset never stale, and its downstream goes stale only when a partition's recorded content hash
changes — never because `training_run` ran again.
"""

from __future__ import annotations

import dagster as dg

from assets.partitions import checkpoints
from evals.report import in_loop_metrics
from gpt2train.errors import Gpt2TrainError
from gpt2train.layout import METRICS
from gpt2train.training.checkpoint import CheckpointState, kept_before_instability
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
                "its model.safetensors. Metadata: train loss; val loss and in-loop HellaSwag with the step "
                "each was measured at (this one, or the latest before it); `before_instability` on the last "
                "checkpoint before an instability, which training keeps.",
)
INSTABILITY_STEP = "instability_step"  # metadata: the step of the instability this checkpoint was kept for


def checkpoint_events(info: CheckpointInfo) -> list[dg.AssetObservation | dg.AssetMaterialization]:
    """The observation, then the materialization, that record a checkpoint (see the module docstring)."""
    fields = dict(asset_key=CHECKPOINT, partition=info.key, tags={DATA_VERSION_TAG: info.model_sha256},
                  metadata={"path": dg.MetadataValue.path(str(info.path)), "step": dg.MetadataValue.int(info.step),
                            "run_tag": info.run_tag, "model_sha256": info.model_sha256,
                            **({"loss": dg.MetadataValue.float(info.loss)} if info.loss is not None else {}),
                            **measured_figures(info), **instability_metadata(info)})
    return [dg.AssetObservation(**fields), dg.AssetMaterialization(**fields)]


def measured_figures(info: CheckpointInfo) -> dict[str, dg.MetadataValue]:
    """The val loss (its state.json's: of these very weights) and the in-loop HellaSwag acc_norm, each
    with the step it was measured at: the checkpoint's, else the latest earlier step in the run's
    metrics.jsonl (HellaSwag every train.hellaswag_every steps, a record older than the val loss field)."""
    figures = in_loop_metrics(info.path.parent.parent / METRICS, info.step)
    try:
        val_loss = CheckpointState.from_dir(info.path).val_loss
    except Gpt2TrainError:  # pruned since it was listed: metrics.jsonl alone
        val_loss = None
    if val_loss is not None:
        figures["val_loss"] = {"value": val_loss, "step": info.step}
    return {name: value for key in ("val_loss", "hellaswag_acc_norm") if key in figures
            for name, value in ((key, dg.MetadataValue.float(float(figures[key]["value"]))),
                                (f"{key}_at_step", dg.MetadataValue.int(int(figures[key]["step"]))))}


def instability_metadata(info: CheckpointInfo) -> dict[str, dg.MetadataValue]:
    """For the last checkpoint before an instability: `before_instability` (its words) and its step."""
    mark = kept_before_instability(info.path)
    if mark is None:
        return {}
    return {"before_instability": dg.MetadataValue.text(mark.describe()),
            INSTABILITY_STEP: dg.MetadataValue.int(mark.step)}


def recorded_checkpoints(instance: dg.DagsterInstance) -> dict[str, tuple[str | None, int | None]]:
    """{partition key: (the content hash, the instability step) its latest materialization recorded}, in
    one paged query (the sensor asks every tick, for every checkpoint)."""
    latest: dict[str, tuple[str | None, int | None]] = {}
    cursor = None
    while True:
        page = instance.fetch_materializations(CHECKPOINT, limit=1000, cursor=cursor)  # newest first
        for record in page.records:
            mat = record.asset_materialization
            instability = mat.metadata.get(INSTABILITY_STEP)
            latest.setdefault(record.partition_key, (mat.tags.get(DATA_VERSION_TAG),
                                                     instability.value if instability is not None else None))
        if not page.has_more:
            return latest
        cursor = page.cursor


def pending_registrations(instance: dg.DagsterInstance,
                          infos: list[CheckpointInfo]) -> tuple[list[str], list]:
    """(partition keys to add, events to record, in order) for checkpoints Dagster has not seen, has seen
    with other contents (a run directory rewritten in place), or has seen before an instability marked
    it (recorded again, with the same data version)."""
    known = set(instance.get_dynamic_partitions(checkpoints.name))
    recorded = recorded_checkpoints(instance)
    new_keys = [i.key for i in infos if i.key not in known]
    events = [e for i in infos if recorded.get(i.key) != (i.model_sha256, _instability_step(i))
              for e in checkpoint_events(i)]
    return new_keys, events


def _instability_step(info: CheckpointInfo) -> int | None:
    mark = kept_before_instability(info.path)
    return mark.step if mark is not None else None


def register_checkpoints(instance: dg.DagsterInstance, infos: list[CheckpointInfo]) -> list[str]:
    """Register and record the given checkpoints now; returns the keys that were new."""
    new_keys, events = pending_registrations(instance, infos)
    if new_keys:
        instance.add_dynamic_partitions(checkpoints.name, new_keys)
    for event in events:
        instance.report_runless_asset_event(event)
    return new_keys
