"""Runs left STARTED by a process that was killed, found and marked failed.

Two kinds of process can die with a run unfinished and no one left to notice:
- `gpt2train pipeline --in-process` executes runs in its own process, so no run worker, code
  server or daemon outlives it: a SIGKILL (the OOM killer, `kill -9`, a closed terminal's SIGHUP)
  would leave its run STARTED forever in the UI. Each run it executes is tagged with the process
  (`RUN_PROCESS_TAG`: host, pid and the process's start time, so that a reused pid is never taken
  for the same process).
- A run worker started by Dagster's DefaultRunLauncher (`gpt2train pipeline`'s runs) is watched
  by the code server that started it, which marks the run failed if the worker dies; if the
  code server was killed too, nothing does. Such a run records its worker's pid ("Started process
  for run (pid: N)"), and runs submitted from this host by `gpt2train pipeline` say so
  (`SUBMITTED_BY_TAG`).

Every `gpt2train pipeline` first marks failed the unfinished runs of this host whose process is
gone. Their assets were not materialized, so the next `--stale-only` redoes them (training
resumes from its last complete checkpoint). Runs of another host are left alone: only that host
can tell.
"""

from __future__ import annotations

import logging
import os
import re
import socket

import dagster as dg

log = logging.getLogger(__name__)

RUN_PROCESS_TAG = "gpt2train/process"
SUBMITTED_BY_TAG = "gpt2train/submitted_by"  # host:pid:start of the `gpt2train pipeline` that submitted a run
WORKER_STARTED = re.compile(r"Started process for run \(pid: (\d+)\)")
UNFINISHED = [dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED]


def process_tag(pid: int | None = None) -> str:
    """`host:pid:start time` of a process (this one by default), for RUN_PROCESS_TAG."""
    pid = os.getpid() if pid is None else pid
    return f"{socket.gethostname()}:{pid}:{_start_ticks(pid)}"


def _start_ticks(pid: int) -> str | None:
    """When the process started, in clock ticks since boot (field 22 of /proc/<pid>/stat), or None
    if there is no such process. The field list resumes after the command name, which may hold spaces."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _started_at(pid: int) -> float | None:
    """The process's start as a Unix time, or None if there is no such process."""
    ticks = _start_ticks(pid)
    if ticks is None:
        return None
    with open("/proc/stat") as f:
        boot = next(float(line.split()[1]) for line in f if line.startswith("btime "))
    return boot + int(ticks) / os.sysconf("SC_CLK_TCK")


def _owner_is_gone(instance: dg.DagsterInstance, run: dg.DagsterRun, host: str) -> str | None:
    """What died, if the process that should finish `run` on this host is gone; None otherwise."""
    owner = run.tags.get(RUN_PROCESS_TAG)
    if owner and owner.count(":") >= 2:
        owner_host, pid, start = owner.rsplit(":", 2)
        if owner_host == host and pid.isdigit() and _start_ticks(int(pid)) != start:
            return f"the `gpt2train pipeline` process that executed this run (pid {pid} on {host})"
        return None
    submitter = run.tags.get(SUBMITTED_BY_TAG, "")
    if submitter.rsplit(":", 2)[0] != host or run.status != dg.DagsterRunStatus.STARTED:
        return None
    for record in instance.get_records_for_run(run.run_id, of_type=dg.DagsterEventType.ENGINE_EVENT).records:
        match = WORKER_STARTED.search(record.event_log_entry.dagster_event.message or "")
        if match:
            pid, logged = int(match.group(1)), record.event_log_entry.timestamp
            started = _started_at(pid)
            # Gone, or its pid reused by a process that started after the worker said it had.
            if started is None or started > logged + 1:
                return f"the run worker (pid {pid} on {host}) and the code server that watched it"
    return None


def fail_runs_of_dead_processes(instance: dg.DagsterInstance) -> list[str]:
    """Mark failed every unfinished run whose process on this host is gone; returns their run ids."""
    host = socket.gethostname()
    failed = []
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=UNFINISHED)):
        gone = _owner_is_gone(instance, run, host)
        if gone is None:
            continue
        instance.report_run_failed(run, message=(
            f"{gone} ended without finishing it (killed?); marked failed by a later `gpt2train pipeline`, "
            f"whose --stale-only redoes it"))
        failed.append(run.run_id)
    if failed:
        log.warning("marked %d run(s) of a killed process as failed: %s", len(failed), ", ".join(failed))
    return failed
