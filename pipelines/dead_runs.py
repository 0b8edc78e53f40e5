"""Runs left STARTED by a `gpt2train pipeline` that was killed, found and marked failed.

`gpt2train pipeline` executes each run in its own process (`execute_in_process`), so no run
worker, code server or daemon outlives it to notice that it died: a SIGKILL (the OOM killer,
`kill -9`, a closed terminal's SIGHUP) would leave its run STARTED forever in the UI. Each run it
executes is tagged with the process (`RUN_PROCESS_TAG`: host, pid and the process's start time,
so that a reused pid is never taken for the same process), and every `gpt2train pipeline` on the
same host first marks failed the unfinished runs whose process is gone. Their assets were not
materialized, so the next `--stale-only` redoes them (training resumes from its last complete
checkpoint). Runs of another host are left alone: only that host can tell.
"""

from __future__ import annotations

import logging
import os
import socket

import dagster as dg

log = logging.getLogger(__name__)

RUN_PROCESS_TAG = "gpt2train/process"
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


def fail_runs_of_dead_processes(instance: dg.DagsterInstance) -> list[str]:
    """Mark failed every unfinished run tagged by a process of this host that no longer runs;
    returns their run ids."""
    host = socket.gethostname()
    failed = []
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=UNFINISHED)):
        owner = run.tags.get(RUN_PROCESS_TAG)
        if not owner or owner.count(":") < 2:
            continue
        owner_host, pid, start = owner.rsplit(":", 2)
        if owner_host != host or not pid.isdigit() or _start_ticks(int(pid)) == start:
            continue  # another host's, or its process still runs
        instance.report_run_failed(run, message=(
            f"the `gpt2train pipeline` process that executed this run (pid {pid} on {host}) ended without "
            f"finishing it (killed?); marked failed by a later `gpt2train pipeline`, whose --stale-only redoes it"))
        failed.append(run.run_id)
    if failed:
        log.warning("marked %d run(s) of a killed `gpt2train pipeline` as failed: %s", len(failed), ", ".join(failed))
    return failed
