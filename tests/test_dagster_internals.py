"""pipelines/dagster_internals.py, Dagster's private API in one place, each function against a real instance.

A Dagster release that moves or changes one of these names fails here, by name, before it fails in
`gpt2train pipeline`. The staleness functions run on a temporary SQLite instance with two tiny assets
materialized in this process (unit tier); the launched-run functions start a code server for this
module's `defs` and let one run worker execute it (e2e: a server, a Dagster run).
"""

from __future__ import annotations

import time
from pathlib import Path

import dagster as dg
import pytest

from pipelines import dagster_internals as di

PARTITIONS = dg.StaticPartitionsDefinition(["a", "b"])
UPSTREAM_VERSIONS = {"a": "v1", "b": "v1"}  # what `upstream` reports; a test changes it to make a new version


@dg.asset(partitions_def=PARTITIONS, code_version="1")
def upstream(context) -> dg.MaterializeResult:
    return dg.MaterializeResult(data_version=dg.DataVersion(UPSTREAM_VERSIONS[context.partition_key]))


@dg.asset(partitions_def=PARTITIONS, code_version="1", deps=[upstream])
def downstream() -> dg.MaterializeResult:
    return dg.MaterializeResult()


both = dg.define_asset_job("both", selection=[upstream, downstream])
defs = dg.Definitions(assets=[upstream, downstream], jobs=[both])  # the code location of the e2e tests
LOCATION = "internals_test"
REPO = Path(__file__).resolve().parent.parent


def materialize(instance: dg.DagsterInstance, partition: str, *assets) -> None:
    assert dg.materialize(list(assets), instance=instance, partition_key=partition).success


def statuses(instance: dg.DagsterInstance) -> dict[tuple[str, str], di.StaleStatus]:
    resolver = di.stale_status_resolver(instance, defs.resolve_asset_graph())
    return {(key.to_user_string(), p): resolver.get_status(key, p)
            for key in (upstream.key, downstream.key) for p in ("a", "b")}


# ------------------------------------------------------------------------------------------------ staleness


def test_the_resolver_gives_the_uis_stale_status_per_partition(instance, monkeypatch):
    materialize(instance, "a", upstream, downstream)
    assert statuses(instance) == {("upstream", "a"): di.StaleStatus.FRESH, ("downstream", "a"): di.StaleStatus.FRESH,
                                  ("upstream", "b"): di.StaleStatus.MISSING, ("downstream", "b"): di.StaleStatus.MISSING}
    # A new data version upstream makes that partition downstream stale, and only that one.
    monkeypatch.setitem(UPSTREAM_VERSIONS, "a", "v2")
    materialize(instance, "a", upstream)
    materialize(instance, "b", upstream, downstream)
    assert statuses(instance) == {("upstream", "a"): di.StaleStatus.FRESH, ("downstream", "a"): di.StaleStatus.STALE,
                                  ("upstream", "b"): di.StaleStatus.FRESH, ("downstream", "b"): di.StaleStatus.FRESH}


def test_data_version_of_reads_what_a_record_says(instance):
    materialize(instance, "a", upstream)
    (record,) = instance.fetch_materializations(upstream.key, limit=1).records
    assert di.data_version_of(record.event_log_entry) == dg.DataVersion("v1")
    instance.report_runless_asset_event(dg.AssetMaterialization("reported", tags={"dagster/data_version": "x1"}))
    instance.report_runless_asset_event(dg.AssetMaterialization("unversioned"))
    (reported,) = instance.fetch_materializations(dg.AssetKey("reported"), limit=1).records
    (unversioned,) = instance.fetch_materializations(dg.AssetKey("unversioned"), limit=1).records
    assert di.data_version_of(reported.event_log_entry) == dg.DataVersion("x1")
    assert di.data_version_of(unversioned.event_log_entry) is None


def test_data_versions_differ_as_the_resolver_compares_them():
    v1, v2 = dg.DataVersion("v1"), dg.DataVersion("v2")
    initial, null = dg.DataVersion("INITIAL"), dg.DataVersion("NULL")  # Dagster's DEFAULT and NULL data versions
    assert not di.data_versions_differ(v1, v1)
    assert di.data_versions_differ(v1, v2)
    assert di.data_versions_differ(None, v1)
    # An external asset's assumed INITIAL, seen as a managed asset's NULL: no change. The other way round is one.
    assert not di.data_versions_differ(initial, null)
    assert di.data_versions_differ(null, initial)


# ------------------------------------------------------------------------------------- launched runs


def test_no_daemon_beats_for_a_fresh_instance_and_one_that_beats_is_seen(instance):
    from dagster._daemon.types import DaemonHeartbeat  # test set-up only: a heartbeat as the daemon writes it

    assert not di.queue_daemon_is_running(instance)
    instance.add_daemon_heartbeat(DaemonHeartbeat(time.time(), "QUEUED_RUN_COORDINATOR", "test-daemon", errors=[]))
    assert di.queue_daemon_is_running(instance)
    stale_beat = time.time() - di.DAEMON_HEARTBEAT_TOLERANCE_SECONDS - 60
    instance.add_daemon_heartbeat(DaemonHeartbeat(stale_beat, "QUEUED_RUN_COORDINATOR", "test-daemon", errors=[]))
    assert not di.queue_daemon_is_running(instance)


@pytest.mark.e2e
def test_a_run_submitted_from_the_code_location_is_dequeued_and_runs(instance):
    assert isinstance(instance.run_coordinator, dg.QueuedRunCoordinator)
    workspace = di.start_code_server(instance, __name__, "defs", LOCATION, str(REPO))
    try:
        location, repo = di.load_code_location(workspace, LOCATION)
        assert di.remote_code_version(repo, upstream.key) == "1"
        assert di.remote_code_version(repo, dg.AssetKey("no_such_asset")) is None

        run_id = di.submit_asset_run(instance, workspace, location, repo, "both", [upstream.key],
                                     {}, {"dagster/partition": "a", "test/tag": "yes"})
        run = instance.get_run_by_id(run_id)
        assert run.status == dg.DagsterRunStatus.QUEUED
        assert run.asset_selection == {upstream.key}
        assert run.tags["test/tag"] == "yes" and run.tags["dagster/partition"] == "a"

        di.RunDequeuer().run_once(workspace)  # no daemon serves this instance
        deadline = time.monotonic() + 120
        while not instance.get_run_by_id(run_id).is_finished and time.monotonic() < deadline:
            time.sleep(0.2)
        assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.SUCCESS
        (record,) = instance.fetch_materializations(upstream.key, limit=1).records
        assert record.partition_key == "a" and not instance.fetch_materializations(downstream.key, limit=1).records
    finally:
        workspace.__exit__(None, None, None)


@pytest.mark.e2e
def test_a_code_location_that_fails_to_load_says_why(instance):
    with pytest.warns(UserWarning, match=f"Error loading repository location {LOCATION}"):  # Dagster's own word
        workspace = di.start_code_server(instance, "tests.no_such_module", "defs", LOCATION, str(REPO))
    try:
        with pytest.raises(di.CodeLocationLoadError, match="no_such_module"):
            di.load_code_location(workspace, LOCATION)
    finally:
        workspace.__exit__(None, None, None)
