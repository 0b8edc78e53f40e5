"""How `gpt2train pipeline` executes its runs: submitted to the Dagster instance, or in its own process.

    runs = LaunchedRuns(instance, code_location_env("tiny", ["data_dir=/data"]), "/data")   # the CLI's default
    ids = [runs.submit("data", ["corpus", "token_shards"], key) for key in keys]  # all queued at once
    outcomes = runs.wait(ids)                                                      # {run id: RunOutcome}

`LaunchedRuns` creates each run from the code location `gpt2train` (pipelines/definitions.py, loaded
in a code-server subprocess that is given the CLI's config through GPT2TRAIN_CONFIG / GPT2TRAIN_SET)
and submits it to the instance's run coordinator, as the UI's Materialize button and the sensors
do. The run launcher starts it: a run-worker subprocess with Dagster's DefaultRunLauncher, a pod
with K8sRunLauncher (docs/deploy.md). Runs submitted together run concurrently up to the queue's
limits (`concurrency.runs` in dagster.yaml; QueuedRunCoordinator is Dagster's default). A
`dagster-daemon` dequeues them where one runs for the instance; where none does (a DAGSTER_HOME on
a workstation) this process makes the daemon's own dequeue pass, limits included, while it waits.
A worker that dies is marked failed by the code server that started it (its orphan check) or,
if that died too, by the next `gpt2train pipeline` (pipelines/dead_runs.py).

`InProcessRuns` (`gpt2train pipeline --in-process`) executes each run inside this process, one
after another (`execute_in_process`): one process to debug or profile, and no code server to
start, which the library-level tests use for speed (tests/test_cli.py and tests/test_pipeline_launched.py
run the launched path).
"""

from __future__ import annotations

import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import dagster as dg

from gpt2train.errors import Gpt2TrainError
from pipelines.dagster_internals import (
    CodeLocationLoadError, RunDequeuer, load_code_location, queue_daemon_is_running, remote_code_version,
    start_code_server, submit_asset_run,
)
from pipelines.dead_runs import RUN_PROCESS_TAG, SUBMITTED_BY_TAG, process_tag

log = logging.getLogger(__name__)

# Dagster's console logger at INFO: its DEBUG lines (every step event) drown the library's own log.
QUIET_RUN_CONFIG = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}
# A launched run's events reach the terminal once, through this process (`_print_new_events`); its
# worker's own console logger, whose stderr a local run launcher passes up to the same terminal,
# stays quiet. The event log (the UI, the instance) keeps every event either way.
LAUNCHED_RUN_CONFIG = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
LOCATION_NAME = "gpt2train"  # workspace.yaml's and pyproject's name for the code location
DATA_DIR_TAG = "gpt2train/data_dir"  # which data dir a run of `gpt2train pipeline` writes into
POLL_SECONDS = 0.5
CANCEL_WAIT_SECONDS = 60  # for terminated runs to end: the trainer stops, the run records where it resumes
# A run submitted and not yet finished: waiting in the queue, being launched, or running.
IN_FLIGHT = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
             dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING]
# The events of a launched run worth a line on the terminal (the run's full log is in the UI): the
# trainer's log (Pipes sends each line as a log message), steps starting and ending, what was
# materialized or checked, and how the run ended.
SHOWN_EVENTS = {"STEP_START", "STEP_SUCCESS", "STEP_FAILURE", "ASSET_MATERIALIZATION", "ASSET_CHECK_EVALUATION",
                "PIPELINE_FAILURE", "PIPELINE_CANCELED"}


@dataclass
class RunOutcome:
    run_id: str
    ok: bool
    cause: str = ""  # the library's own message when the run failed


def failure_cause(events) -> str:
    """The library's own message of a failed run, from its Dagster events (Dagster wraps it in its own errors)."""
    events = [e for e in events if e is not None]
    failure = next((e for e in events if e.event_type_value == "STEP_FAILURE" and e.step_failure_data.error), None)
    if failure is None:
        # No step failed: the run itself did (its code did not load, its worker died, it was
        # canceled). Dagster says why in an engine event: its error, or its message.
        engine = [e for e in events if e.event_type_value == "ENGINE_EVENT"]
        error = next((e.engine_event_data.error for e in reversed(engine) if e.engine_event_data.error), None)
        if error is not None:
            return _ours(error)
        messages = [e.message for e in reversed(engine) if e.message]
        # The code server's word on a dead worker ("... was terminated by signal 9 (SIGKILL)") first.
        crash = next((m for m in messages if "terminated by signal" in m or "exited with" in m), None) or \
            next((m for m in messages if "process" in m.lower()), None)
        return crash or "see the run in the UI"
    return _ours(failure.step_failure_data.error)


def _ours(err) -> str:
    """The first gpt2train error in an error chain: it names the file or field and what to do (what
    it wraps, e.g. the Pipes client's "exit code 1", says less)."""
    chain = []
    while err is not None:
        chain.append(err)
        err = err.cause
    ours_names = gpt2train_error_names()
    ours = next((e for e in chain if e.cls_name in ours_names), chain[-1])
    # Dagster's message starts "gpt2train.errors.Gpt2TrainError: "; the user needs only the text.
    return re.sub(rf"^[\w.]*\b{re.escape(ours.cls_name)}: ", "", ours.message.strip())


def gpt2train_error_names() -> set[str]:
    """Class names of Gpt2TrainError and its subclasses (ArtifactBusy, InjectedFault, ...): a failed
    run's error chain holds only names, and every module that defines one is imported by now."""
    names, todo = set(), [Gpt2TrainError]
    while todo:
        cls = todo.pop()
        names.add(cls.__name__)
        todo += cls.__subclasses__()
    return names


class InProcessRuns:
    """Each run executes in this process when submitted; `wait` only hands back the outcomes."""

    def __init__(self, defs: dg.Definitions, instance: dg.DagsterInstance):
        self.defs, self.instance = defs, instance
        self._outcomes: dict[str, RunOutcome] = {}

    def submit(self, job_name: str, assets: list[str], partition: str | None = None) -> str:
        job = self.defs.resolve_job_def(job_name)
        result = job.execute_in_process(partition_key=partition, instance=self.instance, raise_on_error=False,
                                        asset_selection=[dg.AssetKey(a) for a in assets], run_config=QUIET_RUN_CONFIG,
                                        tags={RUN_PROCESS_TAG: process_tag()})
        self._outcomes[result.run_id] = RunOutcome(result.run_id, result.success,
                                                   "" if result.success else failure_cause(result.all_events))
        return result.run_id

    def wait(self, run_ids: list[str]) -> dict[str, RunOutcome]:
        return {run_id: self._outcomes[run_id] for run_id in run_ids}


def code_location_env(config: str | None, overrides: list[str]) -> dict[str, str]:
    """The GPT2TRAIN_* variables that make the code location load the config `--config` and `--set`
    give the CLI (pipelines/settings.py reads them), so its runs have the CLI's code versions."""
    bad = [o for o in overrides if ";" in o]
    if bad:
        raise Gpt2TrainError(f"--set {bad[0]!r}: a value with ';' cannot reach the run workers (GPT2TRAIN_SET is "
                             f"';'-separated); put it in a config YAML, or run with --in-process")
    config = config or "tiny"
    path = Path(config)
    return {"GPT2TRAIN_CONFIG": str(path.resolve()) if path.is_file() else config,
            "GPT2TRAIN_SET": ";".join(overrides), "GPT2TRAIN_BASE_DIR": str(Path.cwd())}


class LaunchedRuns:
    """Runs submitted to the instance's run coordinator and launched by its run launcher."""

    def __init__(self, instance: dg.DagsterInstance, env: dict[str, str], data_dir: str):
        if instance.is_ephemeral:
            raise Gpt2TrainError("an ephemeral Dagster instance cannot launch runs: set DAGSTER_HOME, or use --in-process")
        self.instance, self.env, self.data_dir = instance, env, str(Path(data_dir).resolve())
        self._workspace = None  # the code server starts with the first run: a pipeline with nothing stale needs none
        self._expected: dg.Definitions | None = None
        self._dequeuer = None
        self._submitted: list[str] = []
        self._labels: dict[str, str] = {}  # run id -> what the terminal calls it
        self._cursors: dict[str, str | None] = {}

    def expect(self, defs: dg.Definitions) -> None:
        """The definitions this process computed staleness with: the code location must load the same."""
        self._expected = defs

    @property
    def workspace(self):
        if self._workspace is None:
            # The code server (and, through it, every run worker) inherits this process's environment.
            os.environ.update(self.env)
            self._workspace = start_code_server(self.instance, "pipelines.definitions", "defs", LOCATION_NAME,
                                                str(Path(__file__).resolve().parent.parent))
            if self._expected is not None:
                self._check_matches(self._expected)
        return self._workspace

    def _check_matches(self, defs: dg.Definitions) -> None:
        """Refuse when the code location's code versions differ from the ones this process computed
        (its staleness answers would be about other assets than the runs it launches)."""
        _, repo = self._location_and_repo()
        for node in defs.resolve_asset_graph().asset_nodes:
            if not node.is_materializable:
                continue
            theirs = remote_code_version(repo, node.key)
            if theirs != node.code_version:
                raise Gpt2TrainError(
                    f"the code location `{LOCATION_NAME}` loads {node.key.to_user_string()} with code version {theirs}, "
                    f"this command {node.code_version}: give its code server the same GPT2TRAIN_CONFIG/GPT2TRAIN_SET")

    def _location_and_repo(self):
        try:
            return load_code_location(self.workspace, LOCATION_NAME)
        except CodeLocationLoadError as e:
            raise Gpt2TrainError(f"the code location `{LOCATION_NAME}` failed to load: {e}") from None

    def submit(self, job_name: str, assets: list[str], partition: str | None = None) -> str:
        location, repo = self._location_and_repo()
        tags = {DATA_DIR_TAG: self.data_dir, SUBMITTED_BY_TAG: process_tag()}
        if partition is not None:
            tags["dagster/partition"] = partition
        run_id = submit_asset_run(self.instance, self.workspace, location, repo, job_name,
                                  [dg.AssetKey(a) for a in assets], LAUNCHED_RUN_CONFIG, tags)
        self._submitted.append(run_id)
        self._labels[run_id] = f"{job_name}{f' [{partition}]' if partition else ''}"
        log.info("submitted run %s: %s%s", run_id, " + ".join(assets), f" for {partition}" if partition else "")
        return run_id

    def wait(self, run_ids: list[str]) -> dict[str, RunOutcome]:
        """Block until every run has finished; dequeue them here when no daemon does."""
        pending, outcomes = list(run_ids), {}
        while pending:
            self._dequeue_if_no_daemon()
            for run_id in pending:
                self._print_new_events(run_id)
            for run_id in list(pending):
                run = self.instance.get_run_by_id(run_id)
                if run is None or not run.is_finished:
                    continue
                pending.remove(run_id)
                ok = run.status == dg.DagsterRunStatus.SUCCESS
                cause = "" if ok else failure_cause(e.dagster_event for e in self.instance.all_logs(run_id))
                outcomes[run_id] = RunOutcome(run_id, ok, cause)
            if pending:
                time.sleep(POLL_SECONDS)
        return outcomes

    def _print_new_events(self, run_id: str) -> None:
        """Each new event of SHOWN_EVENTS (and each log message at INFO or above) once, as one line."""
        while True:
            page = self.instance.get_records_for_run(run_id, cursor=self._cursors.get(run_id), limit=1000)
            self._cursors[run_id] = page.cursor
            for record in page.records:
                entry = record.event_log_entry
                event = entry.dagster_event
                if (event is None and entry.level >= logging.INFO) or \
                        (event is not None and event.event_type_value in SHOWN_EVENTS):
                    when = time.strftime("%H:%M:%S", time.localtime(entry.timestamp))
                    text = ((event.message if event is not None else None) or entry.user_message or "").strip()
                    if not text:
                        continue
                    text = text.splitlines()[0]
                    print(f"{when} {self._labels.get(run_id, run_id[:8])}: {text}", flush=True)
            if not page.has_more:
                return

    def _dequeue_if_no_daemon(self) -> None:
        if not isinstance(self.instance.run_coordinator, dg.QueuedRunCoordinator):
            return  # the DefaultRunCoordinator launched each run when it was submitted
        if queue_daemon_is_running(self.instance):
            return
        if self._dequeuer is None:
            # Its own INFO line on every pass (each POLL_SECONDS) would bury the pipeline's log.
            logging.getLogger("dagster.daemon").setLevel(logging.WARNING)
            log.info("no dagster-daemon dequeues runs for this instance: dequeuing them here, within its limits")
            self._dequeuer = RunDequeuer()
        self._dequeuer.run_once(self.workspace)

    def cancel_unfinished(self) -> list[str]:
        """Cancel (queued) or terminate (started) every run this object submitted that has not finished,
        then wait, within CANCEL_WAIT_SECONDS, until they have: a terminated run stops its trainer and
        records where it resumes from before this process exits."""
        canceled = []
        for run_id in self._submitted:
            run = self.instance.get_run_by_id(run_id)
            if run is not None and not run.is_finished:
                self.instance.run_coordinator.cancel_run(run_id)
                canceled.append(run_id)
        deadline = time.monotonic() + CANCEL_WAIT_SECONDS
        pending = list(canceled)
        while pending and time.monotonic() < deadline:
            for run_id in pending:
                self._print_new_events(run_id)
            pending = [r for r in pending if not self.instance.get_run_by_id(r).is_finished]
            time.sleep(POLL_SECONDS)
        return canceled

    def close(self) -> None:
        if self._workspace is not None:
            self._workspace.__exit__(None, None, None)
