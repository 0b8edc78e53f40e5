"""A `stale_partitions` asset check on each partitioned asset: which of its partitions are stale and why,
on the asset graph.

Dagster 1.13 marks staleness per partition only: a partition's page says "Unsynced", while the asset
graph and the catalog show a partitioned asset fresh whatever its partitions say (the resolver answers
FRESH for a partitioned asset asked without a partition; dagster-io/dagster#22553, open). An asset
check is what the graph does show on every node, with its latest result, so each partitioned asset
(corpus, token_shards, hf_export, eval_report) gets one, WARN severity (stale is not broken):

    passed   "all 2 materialized partitions are fresh"
    failed   "2 of 2 partitions are stale: <run>@step_00000002, <run>@step_00000004 (has a new code version)"

with a table of every stale partition and its causes in the metadata (pipelines/staleness.py's
`stale_report`: the resolver's rules, in its words). Never-materialized partitions are counted but do
not fail it: the partition bar already shows them, and a checkpoint that just landed is one.

When it is evaluated: not with the materializations (a check run then could not know of a later code
change, which is the common cause), but where staleness changes or is looked at:
- `stale_partitions_sensor` (pipelines/sensors.py, on by default, every 30 s): the code location's
  definitions against the instance's records, as the UI itself compares them; it records an
  evaluation (a runless event, no run) only for a check whose result differs from its latest one,
  or whose latest the UI would not show as current (below). A code-version change shows once `dagster dev` (or the code location) has been reloaded and the
  sensor has ticked;
- `gpt2train pipeline`, after its stages (`record_stale_checks`), with its own config's versions;
- on demand: "Execute" on the check in the UI runs it alone (a small run, nothing materialized).
The asset jobs leave it out (pipelines/definitions.py); a run that materializes assets by selection
(the UI's Materialize, `gpt2train pipeline`'s runs) selects the checks of those assets, this one too,
and there it yields nothing (its step says why; the UI shows it skipped): a pass over every partition
in each of N partition runs is O(N^2), and would miss the runs beside it. Whenever the latest result is
not one the UI shows as current (skipped, or older than the asset's latest materialization), the
pipeline and the sensor record a new one (`changed_evaluations`).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Callable

import dagster as dg

from pipelines.staleness import StaleStatus, stale_report

STALE_CHECK = "stale_partitions"
CHECKED_ASSETS = ("corpus", "token_shards", "hf_export", "eval_report")  # every partitioned, materializable asset
NAMED = 10  # partitions named per cause in a result's description; the metadata table lists them all
TABLE_ROWS = 500  # the UI renders the metadata table in full: beyond this many rows it says how many more

__all__ = ["CHECKED_ASSETS", "STALE_CHECK", "build_stale_partitions_check", "changed_evaluations",
           "record_stale_checks", "stale_check_keys", "stale_partition_evaluations"]


def stale_check_keys() -> list[dg.AssetCheckKey]:
    return [dg.AssetCheckKey(dg.AssetKey(a), STALE_CHECK) for a in CHECKED_ASSETS]


def build_stale_partitions_check(definitions: Callable[[], dg.Definitions]) -> dg.AssetChecksDefinition:
    """The checks; `definitions()` gives the code location's definitions (pipelines/definitions.py passes
    its own builder: a run in this process has no repository to ask)."""
    specs = [dg.AssetCheckSpec(STALE_CHECK, asset=a, description=(
        f"Which partitions of {a} are stale (a partition's \"Unsynced\" marker) and why; fails, as a warning, "
        "while any is. Kept current by stale_partitions_sensor and `gpt2train pipeline`.")) for a in CHECKED_ASSETS]

    @dg.multi_asset_check(specs=specs, name="stale_partitions_checks", can_subset=True,
                          description="The stale partitions of each partitioned asset, evaluated now.")
    def stale_partitions_checks(context):  # an AssetCheckExecutionContext
        if context.run.asset_selection:
            # A run that materializes assets by selection (the UI's Materialize, `gpt2train pipeline`'s runs)
            # selects their checks: one pass over every partition per run would cost O(partitions) each,
            # and the result would miss the other runs in flight. Skipped here; the sensor and the
            # pipeline record it (`changed_evaluations` sees the skip).
            context.log.info("stale_partitions: not evaluated inside a materialization run; "
                             "stale_partitions_sensor and `gpt2train pipeline` record it")
            return
        selected = [k.asset_key.to_user_string() for k in context.selected_asset_check_keys]
        try:
            evaluations = stale_partition_evaluations(definitions(), context.instance, selected)
        except Exception as e:  # noqa: BLE001 - it runs in materialization runs too: never fail one
            context.log.warning(f"stale_partitions not evaluated: {e}")
            evaluations = [dg.AssetCheckEvaluation(asset_key=dg.AssetKey(a), check_name=STALE_CHECK, passed=False,
                                                   severity=dg.AssetCheckSeverity.WARN,
                                                   description=f"not evaluated: {e}") for a in selected]
        for e in evaluations:
            yield dg.AssetCheckResult(asset_key=e.asset_key, check_name=e.check_name, passed=e.passed,
                                      severity=e.severity, description=e.description, metadata=e.metadata)

    return stale_partitions_checks


def stale_partition_evaluations(defs: dg.Definitions | dg.RepositoryDefinition, instance: dg.DagsterInstance,
                                assets=CHECKED_ASSETS) -> list[dg.AssetCheckEvaluation]:
    """The `stale_partitions` result of each of `assets`, as of now (one bulk staleness pass); `defs`
    as `stale_report` takes them."""
    report = stale_report(defs, instance, assets=list(assets))
    by_asset: dict[str, dict] = defaultdict(dict)
    for (asset, partition), staleness in report.items():
        by_asset[asset][partition] = staleness
    return [_evaluation(asset, by_asset[asset]) for asset in assets]


def _evaluation(asset: str, partitions: dict) -> dg.AssetCheckEvaluation:
    stale = {p: s.causes for p, s in partitions.items() if s.status == StaleStatus.STALE}
    missing = [p for p, s in partitions.items() if s.status == StaleStatus.MISSING]
    materialized = len(partitions) - len(missing)
    if stale:
        by_causes: dict[tuple, list[str]] = defaultdict(list)
        for p, causes in stale.items():
            by_causes[causes].append(p)
        groups = [f"{', '.join(keys[:NAMED])}{f' and {len(keys) - NAMED} more' if len(keys) > NAMED else ''} "
                  f"({'; '.join(causes)})" for causes, keys in by_causes.items()]
        description = f"{len(stale)} of {materialized} partitions are stale: {'; '.join(groups)}"
    else:
        description = f"all {materialized} materialized partitions are fresh"
    if missing:
        description += f"; {len(missing)} never materialized"
    rows = [f"| `{p}` | {'; '.join(causes)} |" for p, causes in sorted(stale.items())]
    more = [f"| … | and {len(rows) - TABLE_ROWS} more |"] if len(rows) > TABLE_ROWS else []
    table = "\n".join(["| stale partition | why |", "| --- | --- |", *rows[:TABLE_ROWS], *more]) if rows else \
        "no stale partition"
    return dg.AssetCheckEvaluation(
        asset_key=dg.AssetKey(asset), check_name=STALE_CHECK, passed=not stale,
        severity=dg.AssetCheckSeverity.WARN, description=description,
        metadata={"stale_partitions": dg.MetadataValue.md(table), "stale": dg.MetadataValue.int(len(stale)),
                  "materialized": dg.MetadataValue.int(materialized), "missing": dg.MetadataValue.int(len(missing))})


def changed_evaluations(defs: dg.Definitions | dg.RepositoryDefinition,
                        instance: dg.DagsterInstance) -> list[dg.AssetCheckEvaluation]:
    """The current results that differ from the latest recorded for their check, or whose latest the UI
    would not show as current: none, a skipped one (a materialization run's), or one it takes for an
    earlier materialization's (`_shown`)."""
    changed = []
    for evaluation in stale_partition_evaluations(defs, instance):
        record = instance.get_latest_asset_check_evaluation_record(
            dg.AssetCheckKey(evaluation.asset_key, STALE_CHECK))
        data = record.event.dagster_event.event_specific_data if record and record.event and \
            record.event.dagster_event else None
        if not isinstance(data, dg.AssetCheckEvaluation) or _result(data) != _result(evaluation) or \
                not _shown(instance, record, data):
            changed.append(evaluation)
    return changed


def _shown(instance: dg.DagsterInstance, record, data: dg.AssetCheckEvaluation) -> bool:
    """Whether the UI shows this result as the check's current one: Dagster's rule
    (AssetCheckExecutionRecord.targets_latest_materialization) that it belongs to the asset's latest
    materialization: from the same run, aimed at it, or else created after it. A result recorded
    before a partition was materialized again is not shown, however true it still is."""
    latest = instance.fetch_materializations(data.asset_key, limit=1).records
    if not latest:
        return True
    if record.run_id and latest[0].run_id == record.run_id:
        return True
    if data.target_materialization_data is not None:
        return data.target_materialization_data.storage_id == latest[0].storage_id
    return latest[0].timestamp < record.create_timestamp


def _result(e: dg.AssetCheckEvaluation) -> tuple:
    return e.passed, e.description, {k: getattr(v, "value", v) for k, v in e.metadata.items()}


def record_stale_checks(defs: dg.Definitions, instance: dg.DagsterInstance) -> list[dg.AssetCheckEvaluation]:
    """Record (runless) each `stale_partitions` result that changed; returns them."""
    changed = changed_evaluations(defs, instance)
    for evaluation in changed:
        instance.report_runless_asset_event(evaluation)
    return changed
