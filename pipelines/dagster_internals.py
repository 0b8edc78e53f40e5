"""Every use of Dagster's private modules (`dagster._...`) in the product, and why each has no public equivalent.

    workspace = start_code_server(instance, "pipelines.definitions", "defs", "gpt2train", repo_root)
    location, repo = load_code_location(workspace, "gpt2train")
    run_id = submit_asset_run(instance, workspace, location, repo, "data", keys, run_config, tags)
    if not queue_daemon_is_running(instance): RunDequeuer().run_once(workspace)

    resolver = stale_status_resolver(instance, defs.resolve_asset_graph())   # .get_status(key, partition)

pipelines/executors.py (runs submitted to the instance's queue, as the UI's Materialize button does)
and pipelines/staleness.py (the UI's stale markers, per partition) import Dagster's public API and this
module only. Searched for public replacements, in Dagster 1.13.27:
- the Python API (`dagster.__all__`, docs.dagster.io's API reference): public are `DataVersion`,
  `DataProvenance` and `QueuedRunCoordinator`, which the callers now use from `dagster`; nothing public
  loads a code location, builds a run from its snapshots, reads the daemon's heartbeats, dequeues runs,
  or answers staleness (dagster-io/dagster#19368, "Expose functions to check staleness of assets",
  closed without an API);
- `dagster.DagsterGraphQLClient` (`submit_job_execution` takes an asset selection and tags) and the
  webserver's GraphQL (`launchRun`, `assetNodes { staleStatusByPartition }`): both need a running
  dagster-webserver, which `gpt2train pipeline` does not start, and `staleStatusByPartition` asks the
  same per-partition resolver as below (~20 s at 1,000 partitions; staleness.py's bulk rules decide
  all of `--stale-only` in ~1 s, bench/scale.py);
- the `dagster` CLI: `dagster job launch` submits to the queue but takes an op selection, not an asset
  selection, and loads the code location anew in each process; `dagster asset materialize` executes
  in its own process instead of submitting; `dagster-daemon liveness-check` is a process per check
  (the caller polls every 0.5 s); the `dg` CLI (dagster-dg-cli, whose `dg launch` succeeds `dagster
  asset materialize`) is not installed here.
Each private import below names what it does for us and the public API it waits for;
tests/test_dagster_internals.py exercises each function. The imports for launched runs sit in the
functions that use them, as they sat in executors.py: importing the runner (an in-process pipeline,
the tests) loads none of the workspace's or the daemon's modules.
"""

from __future__ import annotations

import dagster as dg
# The resolver's request-scoped loading context, at the current time: what the webserver builds for
# each GraphQL request. Public API awaited: a public stale-status query (dagster-io/dagster#19368).
from dagster._core.asset_graph_view.asset_graph_view import AssetGraphView, TemporalContext
# CachingStaleStatusResolver: the UI's own per-partition staleness rules. StaleStatus: its answers.
# The two sentinel versions: its rule that an assumed INITIAL against a managed asset's NULL is no
# change. extract_data_version_from_entry: a record's data version (today's tag and the old one).
# Public API awaited: dagster-io/dagster#19368; `dagster` exports DataVersion but none of these.
from dagster._core.definitions.data_version import (
    DEFAULT_DATA_VERSION, NULL_DATA_VERSION, CachingStaleStatusResolver, StaleStatus,
    extract_data_version_from_entry,
)
# The resolver's clock, which Dagster's own freeze_time moves in tests. Public API awaited: with the
# resolver (dagster-io/dagster#19368).
from dagster._time import get_current_datetime

__all__ = ["CodeLocationLoadError", "RunDequeuer", "StaleStatus", "data_version_of", "data_versions_differ",
           "load_code_location", "queue_daemon_is_running", "remote_code_version", "stale_status_resolver",
           "start_code_server", "submit_asset_run"]

# A daemon beats every 30 s by default; two missed beats and the caller takes over dequeuing.
DAEMON_HEARTBEAT_TOLERANCE_SECONDS = 70


# ------------------------------------------------------------------------------------------------ staleness


def stale_status_resolver(instance: dg.DagsterInstance, asset_graph) -> CachingStaleStatusResolver:
    """Dagster's resolver of the UI's stale markers, as of now: `.get_status(asset_key, partition_key)`
    gives a StaleStatus (a few database queries per partition, cached for the resolver's life)."""
    view = AssetGraphView(temporal_context=TemporalContext(effective_dt=get_current_datetime(), last_event_id=None),
                          instance=instance, asset_graph=asset_graph)
    return CachingStaleStatusResolver(instance=instance, asset_graph=asset_graph, loading_context=view)


def data_version_of(entry) -> dg.DataVersion | None:
    """The data version an event log entry (a materialization or observation) records, if any."""
    return extract_data_version_from_entry(entry)


def data_versions_differ(previous: dg.DataVersion | None, current: dg.DataVersion | None) -> bool:
    """The resolver's `_data_versions_differ`: an external asset's assumed INITIAL against a managed
    asset's NULL is not a change."""
    if previous == DEFAULT_DATA_VERSION and current == NULL_DATA_VERSION:
        return False
    return previous != current


# ------------------------------------------------------------------------------------- launched runs


class CodeLocationLoadError(Exception):
    """The code location's code server started, but loading its definitions failed (the message says why)."""


def start_code_server(instance: dg.DagsterInstance, module_name: str, attribute: str, location_name: str,
                      working_directory: str):
    """A workspace of one code location, `attribute` of `module_name`, served by a code-server subprocess
    that inherits this process's environment. Stop it with `.__exit__(None, None, None)`."""
    # The code server (a gRPC subprocess) that dagster-webserver and dagster-daemon load a code location
    # with; the run launcher starts run workers through it. Public API awaited: loading a code location
    # from Python (the `dagster`/`dg` CLIs and the webserver do it internally only).
    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster._core.workspace.load_target import ModuleTarget

    target = ModuleTarget(module_name=module_name, attribute=attribute, location_name=location_name,
                          working_directory=working_directory)
    # The code server's start and stop lines would interleave with the runs' (each printed once, from the events).
    return WorkspaceProcessContext(instance, target, version=dg.__version__, code_server_log_level="WARNING")


def load_code_location(workspace, location_name: str):
    """(the code location, its one repository) as the workspace loaded them now; CodeLocationLoadError
    if its definitions failed to load."""
    ctx = workspace.create_request_context()
    error = ctx.get_code_location_error(location_name)
    if error is not None:
        raise CodeLocationLoadError(error.message.strip())
    location = ctx.get_code_location(location_name)
    (repo,) = location.get_repositories().values()
    return location, repo


def remote_code_version(repo, key: dg.AssetKey) -> str | None:
    """The code version the code location's repository gives `key` (None: no such asset, or no version)."""
    remote = repo.asset_graph
    return remote.get(key).code_version if remote.has(key) else None


def submit_asset_run(instance: dg.DagsterInstance, workspace, location, repo, job_name: str,
                     asset_keys: list[dg.AssetKey], run_config: dict, tags: dict[str, str]) -> str:
    """Create a run of `job_name` for `asset_keys` from the code location's snapshots (the job's own tags,
    then `tags`) and submit it to the instance's run coordinator, as the UI's Materialize button does.
    Returns its run id."""
    # The job subset for an asset selection in a remote code location (`dagster.JobSelector` has no asset
    # selection). Public API awaited: submitting a run from Python without a webserver (DagsterGraphQLClient's
    # `submit_job_execution` does it through one); DagsterInstance.create_run and submit_run, called
    # below with the remote job's snapshots, are undocumented too.
    from dagster._core.definitions.selector import JobSubsetSelector

    remote_job = location.get_job(JobSubsetSelector(location_name=location.name, repository_name=repo.name,
                                                    job_name=job_name, op_selection=None, asset_selection=asset_keys))
    plan = location.get_execution_plan(remote_job, run_config, step_keys_to_execute=None, known_state=None,
                                       instance=instance)
    run = instance.create_run(
        job_name=job_name, run_id=None, run_config=run_config,
        resolved_op_selection=remote_job.resolved_op_selection,
        step_keys_to_execute=plan.execution_plan_snapshot.step_keys_to_execute,
        status=dg.DagsterRunStatus.NOT_STARTED, op_selection=None, root_run_id=None, parent_run_id=None,
        tags={**remote_job.run_tags, **tags}, job_snapshot=remote_job.job_snapshot,
        execution_plan_snapshot=plan.execution_plan_snapshot, parent_job_snapshot=remote_job.parent_job_snapshot,
        remote_job_origin=remote_job.get_remote_origin(), job_code_origin=remote_job.get_python_origin(),
        asset_selection=frozenset(asset_keys), asset_check_selection=None, asset_graph=repo.asset_graph)
    instance.submit_run(run.run_id, workspace.create_request_context())
    return run.run_id


def queue_daemon_is_running(instance: dg.DagsterInstance) -> bool:
    """Whether a dagster-daemon dequeues this instance's runs: its run-queue daemon beat recently
    (its errors aside: a daemon that logs an error still dequeues)."""
    # The heartbeat check behind the UI's daemon page, with our tolerance and errors ignored (the
    # instance's own, undocumented `get_daemon_statuses` takes neither). Public API awaited: a daemon
    # health query on DagsterInstance (GraphQL `instance { daemonHealth }` needs a webserver).
    from dagster._daemon.controller import get_daemon_statuses
    from dagster._daemon.run_coordinator.queued_run_coordinator_daemon import QueuedRunCoordinatorDaemon

    kind = QueuedRunCoordinatorDaemon.daemon_type()
    status = get_daemon_statuses(instance, [kind], ignore_errors=True,
                                 heartbeat_tolerance_seconds=DAEMON_HEARTBEAT_TOLERANCE_SECONDS)[kind]
    return bool(status.healthy)


class RunDequeuer:
    """The dagster-daemon's run-queue pass, made from this process: launches the queued runs the
    instance's limits (`concurrency.runs` in dagster.yaml) allow now."""

    def __init__(self):
        # The dagster-daemon's own run-queue daemon, its limits and priorities included. Public API
        # awaited: a dequeue call on DagsterInstance or QueuedRunCoordinator (only `dagster-daemon run`
        # dequeues, with every other daemon: schedules, sensors, backfills).
        from dagster._daemon.run_coordinator.queued_run_coordinator_daemon import QueuedRunCoordinatorDaemon

        self._daemon = QueuedRunCoordinatorDaemon(interval_seconds=1)

    def run_once(self, workspace) -> None:
        for _ in self._daemon.run_iteration(workspace):
            pass
