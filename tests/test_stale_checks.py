"""The `stale_partitions` check's result as the asset graph shows it (pipelines/stale_checks.py): what it
says of stale, fresh and never-materialized partitions. The checks over a real chain, recorded by the
sensor and seen in the UI: tests/test_ui.py."""

from __future__ import annotations

import dagster as dg

from pipelines.stale_checks import NAMED, STALE_CHECK, TABLE_ROWS, _evaluation
from pipelines.staleness import StaleStatus, Staleness

CODE = ("has a new code version",)


def test_stale_partitions_are_named_with_their_causes_and_fail_as_a_warning():
    partitions = {"run@step_2": Staleness(StaleStatus.STALE, CODE),
                  "run@step_4": Staleness(StaleStatus.STALE, ("has a new dependency data version: hf_export "
                                                              "[run@step_4]",)),
                  "run@step_6": Staleness(StaleStatus.FRESH), "run@step_8": Staleness(StaleStatus.MISSING)}
    e = _evaluation("eval_report", partitions)
    assert e.asset_key == dg.AssetKey("eval_report") and e.check_name == STALE_CHECK
    assert not e.passed and e.severity == dg.AssetCheckSeverity.WARN
    assert e.description == ("2 of 3 partitions are stale: run@step_2 (has a new code version); run@step_4 "
                             "(has a new dependency data version: hf_export [run@step_4]); 1 never materialized")
    table = e.metadata["stale_partitions"].value
    assert "| `run@step_2` | has a new code version |" in table and "run@step_6" not in table
    assert {k: e.metadata[k].value for k in ("stale", "materialized", "missing")} == \
        {"stale": 2, "materialized": 3, "missing": 1}


def test_fresh_partitions_pass_and_missing_ones_do_not_fail_it():
    e = _evaluation("hf_export", {"a": Staleness(StaleStatus.FRESH), "b": Staleness(StaleStatus.MISSING)})
    assert e.passed and e.description == "all 1 materialized partitions are fresh; 1 never materialized"
    assert e.metadata["stale_partitions"].value == "no stale partition"


def test_many_stale_partitions_are_counted_not_all_named():
    n = TABLE_ROWS + 5
    e = _evaluation("corpus", {f"file_{i:04d}": Staleness(StaleStatus.STALE, CODE) for i in range(n)})
    assert e.description == (f"{n} of {n} partitions are stale: "
                             f"{', '.join(f'file_{i:04d}' for i in range(NAMED))} and {n - NAMED} more "
                             "(has a new code version)")
    table = e.metadata["stale_partitions"].value
    assert table.count("| `file_") == TABLE_ROWS and table.endswith("| … | and 5 more |")
