"""The Slurm job that trains a run (`launch.backend: slurm`): its sbatch script, its submission, its state.

    check_slurm(cfg)                                 # sbatch on PATH, the partition known: before any work
    script = write_job_script(cfg, run, config_path, notes, pipes_env)
    job = submit(cfg, script)                        # `sbatch --parsable` -> job id
    state = wait_for_job(job, cfg.launch.slurm.pending_timeout_s, on_poll=...)
    describe_job_end(run, job, state)                # the failure message for an unsuccessful end

The job is what llm.c's multi-node runs are: one `torchrun` agent per node (`--ntasks-per-node=1`,
`srun --ntasks=<nodes>`), c10d rendezvous on the job's first node, whose agent hosts the rendezvous
store (`is_host`, by SLURM_PROCID 0: the first task runs on the first node). Which node's process gets
global rank 0, the one that opens Dagster Pipes, is c10d's choice (it sorts the agents by address);
it does not matter here, because Pipes goes through two files in the run directory (the context in,
the messages out), which must be on a filesystem every node and the Dagster worker see. The trainer's
ranks are the same `pipelines.torchrun_launcher` + `pipelines.train_pipes` as the local backend.

Slurm itself reports how a job ended (`scontrol show job`; `sacct` once slurmctld has forgotten it):
scancel, a time limit, a dead node and a preemption each become a one-line failure naming the job,
its state and the checkpoint a rerun resumes from. No Dagster here: pipelines/slurm_pipes.py is the
Dagster side.

A watchdog in the job: the run worker that waits for the job touches `<notes>/heartbeat` at every
poll (`touch_heartbeat`), and a background loop of the batch script (`watchdog_lines`) cancels its own
job when that file's mtime has not changed for `launch.slurm.heartbeat_timeout_s`. A worker that can
still act (SIGTERM, a cancelled run) scancels the job itself; this covers the one that cannot (SIGKILL,
the OOM killer), whose job would otherwise train on unwatched until its time limit.
"""

from __future__ import annotations

import math
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from gpt2train.config import Config
from gpt2train.errors import Gpt2TrainError
from gpt2train.fileio import atomic_output
from gpt2train.layout import MAIN_LOG
from gpt2train.training.failure import LAUNCH_FAILURE, TRAINER_ERROR, resume_note, run_progress

JOB_SCRIPT = "slurm_job.sh"  # in the run directory: the last submitted job's script
JOB_OUTPUT = "slurm-%j.out"  # in the run directory: every task's stdout and stderr, per job (%j: its id)
LAUNCHER_MODULE = "pipelines.torchrun_launcher"
TRAINER_MODULE = "pipelines.train_pipes"
POLL_S = 2.0  # how often the job's state is read (and the heartbeat touched) while it is queued or runs
HEARTBEAT = "heartbeat"  # in the attempt's notes folder: touched by the run worker at every poll
SLURM_CMD_TIMEOUT_S = 60  # slurmctld answers within seconds; more means it is down

# A job in one of these states has not ended yet (`man squeue`, JOB STATE CODES).
ACTIVE_STATES = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED", "REQUEUE_FED",
                 "REQUEUE_HOLD", "RESIZING", "SIGNALING", "STAGE_OUT", "STOPPED", "RESV_DEL_HOLD"}
# Why a job that did not finish ended, in words a user acts on.
END_REASONS = {
    "CANCELLED": "it was cancelled (scancel, or an administrator)",
    "TIMEOUT": "it reached its time limit (launch.slurm.time_limit, or the partition's)",
    "NODE_FAIL": "one of its nodes failed",
    "PREEMPTED": "it was preempted",
    "OUT_OF_MEMORY": "a task ran out of memory",
    "BOOT_FAIL": "its nodes failed to boot",
    "DEADLINE": "it reached its deadline",
}


class SlurmError(Gpt2TrainError):
    """Slurm refused, lost or ended the training job."""


@dataclass(frozen=True)
class JobState:
    """One reading of a job: Slurm's JobState (e.g. RUNNING, CANCELLED), its Reason and ExitCode."""

    state: str
    reason: str = ""
    exit_code: str = ""

    @property
    def ended(self) -> bool:
        return self.state not in ACTIVE_STATES


def _slurm(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(args, capture_output=True, text=True, env=env, timeout=SLURM_CMD_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise SlurmError(f"`{' '.join(args)}` got no answer within {SLURM_CMD_TIMEOUT_S} s; is slurmctld up "
                         f"(`scontrol ping`)?") from None


def check_slurm(cfg: Config, env: dict[str, str] | None = None) -> None:
    """Before any work: Slurm's client commands are on PATH and launch.slurm.partition exists."""
    path = (env or os.environ).get("PATH", "")
    for command in ("sbatch", "scontrol", "scancel"):
        if shutil.which(command, path=path) is None:
            raise SlurmError(f"launch.backend=slurm: `{command}` is not on PATH; install Slurm's client commands "
                             f"(Debian: apt-get install slurm-client) or set launch.backend=local")
    partition = cfg.launch.slurm.partition
    if partition is not None:
        out = _slurm(["scontrol", "show", "partition", partition], env)
        said = ((out.stdout + out.stderr).strip().splitlines() or ["no output"])[-1]  # the last line: the cause
        if out.returncode != 0 and "not found" not in said:
            raise SlurmError(f"launch.backend=slurm: `scontrol show partition {partition}` failed: {said}; is "
                             f"slurmctld up and SLURM_CONF right (`scontrol ping`)?")
        if out.returncode != 0:
            known = _slurm(["sinfo", "-h", "-o", "%R"], env).stdout.split() if shutil.which("sinfo", path=path) else []
            raise SlurmError(f"launch.slurm.partition={partition!r}: {said}; use one of "
                             f"the cluster's partitions ({', '.join(known) or 'see `sinfo`'}) or null for its default")


def sbatch_options(cfg: Config, run: Path) -> list[str]:
    """The #SBATCH lines' options: one task (one torchrun agent) per node."""
    s = cfg.launch.slurm
    # --no-requeue: after a node failure Slurm would start the job again on its own, with the same Pipes
    # files, behind its launcher's back; instead the run fails, and launching it again resumes.
    options = [f"--job-name=gpt2train-{run.name}", f"--nodes={s.nodes}", "--ntasks-per-node=1",
               f"--output={run / JOB_OUTPUT}", "--no-requeue"]
    if s.partition:
        options.append(f"--partition={s.partition}")
    if s.gpus_per_node:
        options.append(f"--gpus-per-node={s.gpus_per_node}")
    if s.cpus_per_task:
        options.append(f"--cpus-per-task={s.cpus_per_task}")
    if s.time_limit:
        options.append(f"--time={s.time_limit}")
    return options


def agent_command(cfg: Config, config_path: Path, notes: Path) -> str:
    """One node's torchrun agent (through the launcher that notes how a rank died), as a shell line
    that srun runs once per node: $RDZV_HOST and the SLURM_* variables are expanded on that node."""
    s = cfg.launch.slurm
    launcher = [sys.executable, "-m", LAUNCHER_MODULE, "--failure-note", str(notes / LAUNCH_FAILURE),
                f"--nnodes={s.nodes}", f"--nproc_per_node={cfg.launch.nproc_per_node}", "--rdzv-backend=c10d"]
    tail = [*cfg.launch.torchrun_args, "-m", TRAINER_MODULE, "--config", str(config_path),
            "--error-file", str(notes / TRAINER_ERROR)]
    # The first task (SLURM_PROCID 0, on the first node) hosts the rendezvous store at $RDZV_HOST:port.
    rendezvous = (f'--rdzv-endpoint="$RDZV_HOST:{s.rdzv_port}" --rdzv-id="$SLURM_JOB_ID" '
                  f'--rdzv-conf=is_host="$([ "$SLURM_PROCID" = 0 ] && echo true || echo false)"')
    return f"exec {shlex.join(launcher)} {rendezvous} {shlex.join(tail)}"


def touch_heartbeat(notes: Path) -> None:
    """The run worker is alive and waiting: the job's watchdog sees the heartbeat's mtime change."""
    (notes / HEARTBEAT).touch()


def watchdog_check_s(heartbeat_timeout_s: float) -> int:
    """Seconds between two looks at the heartbeat: a tenth of the timeout, 1 to 30 (a whole number:
    POSIX sleep takes no fractions)."""
    return max(1, min(30, int(heartbeat_timeout_s // 10)))


def watchdog_lines(heartbeat: Path, heartbeat_timeout_s: float) -> list[str]:
    """The batch script's watchdog, a background loop on the job's first node: `scancel` of its own job
    once the heartbeat's mtime has not changed for the timeout, with a line in the job output saying why.

    It compares mtimes with each other, never with its own clock, so clock skew between the run worker,
    the file server and this node does not matter. Its start counts as a beat: the asset touches the
    file before sbatch, so a job that waited in the queue gets the full timeout to be seen."""
    timeout = f"{heartbeat_timeout_s:g}"
    return [
        "# Watchdog: the launcher touches the heartbeat every few seconds while it waits for this",
        "# job; if it died (SIGKILL, the OOM killer) nothing else would stop the job, so it cancels itself.",
        f"heartbeat={shlex.quote(str(heartbeat))}",
        "(",
        '  seen="" last_beat=$(date +%s) nap=""',
        "  # Stopped with the job (the EXIT trap below): the sleep in progress goes too, not left on the node.",
        """  trap 'kill "$nap" 2>/dev/null; exit 0' TERM""",
        f'  while sleep {watchdog_check_s(heartbeat_timeout_s)} & nap=$!; wait "$nap"; do',
        '    beat=$(stat -c %y "$heartbeat" 2>/dev/null || true)  # its mtime, to the nanosecond',
        '    if [ -n "$beat" ] && [ "$beat" != "$seen" ]; then seen=$beat last_beat=$(date +%s); continue; fi',
        f'    if [ $(( $(date +%s) - last_beat )) -ge {math.ceil(heartbeat_timeout_s)} ]; then',
        f'      echo "gpt2train watchdog: no heartbeat from the launcher in $heartbeat for {timeout} s '
        f'(launch.slurm.heartbeat_timeout_s): the launcher is gone; cancelling Slurm job $SLURM_JOB_ID at '
        f'$(date -u "+%F %T") UTC" >&2',
        '      scancel "$SLURM_JOB_ID" && break  # else slurmctld did not answer: try again at the next look',
        "    fi",
        "  done",
        ") &",
        "watchdog=$!",
        # The job ended by itself: stop watching, and wait, so that the watchdog's sleep is gone before
        # Slurm ends the batch step (it would orphan it, out of its reach, by killing the loop first).
        """trap 'kill "$watchdog" 2>/dev/null; wait "$watchdog" 2>/dev/null || true' EXIT""",
    ]


def job_script(cfg: Config, run: Path, config_path: Path, notes: Path, pipes_env: dict[str, str]) -> str:
    """The sbatch script: #SBATCH options, the Pipes variables (paths of the run's Pipes files), the
    heartbeat watchdog and `srun` of one torchrun agent per node."""
    lines = ["#!/bin/bash", *(f"#SBATCH {o}" for o in sbatch_options(cfg, run)),
             f"# Written by gpt2train for the run {run.name}; launch.slurm.sbatch_args",
             "# are given to sbatch on its command line, where they override the lines above.",
             "set -euo pipefail",
             '# The first node of the job: c10d\'s rendezvous endpoint, read by every node\'s agent below.',
             'export RDZV_HOST=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)',
             "# Pipes: where rank 0 reads its context and writes its messages (files in the run's folder).",
             *(f"export {k}={shlex.quote(v)}" for k, v in sorted(pipes_env.items())),
             "export TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1  # for --max-restarts (pipelines/torchrun_launcher.py)",
             # The same interpreter and working directory as the asset's (a shared filesystem), so the
             # trainer's modules import as they do for the local backend.
             f"cd {shlex.quote(os.getcwd())}",
             *watchdog_lines(notes / HEARTBEAT, cfg.launch.slurm.heartbeat_timeout_s),
             # --kill-on-bad-exit: one agent failing ends the others at once instead of at their timeout.
             f"srun --ntasks={cfg.launch.slurm.nodes} --kill-on-bad-exit=1 "
             f"bash -c {shlex.quote(agent_command(cfg, config_path, notes))}", ""]
    return "\n".join(lines)


def write_job_script(cfg: Config, run: Path, config_path: Path, notes: Path, pipes_env: dict[str, str]) -> Path:
    path = run / JOB_SCRIPT
    with atomic_output(path, "w") as f:
        f.write(job_script(cfg, run, config_path, notes, pipes_env))
    os.chmod(path, 0o755)
    return path


def submit(cfg: Config, script: Path, env: dict[str, str] | None = None) -> str:
    """`sbatch --parsable [launch.slurm.sbatch_args] SCRIPT`: the job id."""
    out = _slurm(["sbatch", "--parsable", *cfg.launch.slurm.sbatch_args, str(script)], env)
    if out.returncode != 0:
        raise SlurmError(f"sbatch refused the training job ({script}): {(out.stderr or out.stdout).strip()}")
    return out.stdout.strip().split(";")[0]  # `<id>[;<cluster>]`


def job_state(job: str, env: dict[str, str] | None = None) -> JobState | None:
    """The job's state from slurmctld, else from accounting (sacct) once slurmctld forgot it (MinJobAge);
    None when neither knows it."""
    out = _slurm(["scontrol", "show", "job", "--oneliner", job], env)
    fields = dict(re.findall(r"(\w+)=(\S*)", out.stdout)) if out.returncode == 0 else {}
    if "JobState" in fields:
        return JobState(fields["JobState"], fields.get("Reason", ""), fields.get("ExitCode", ""))
    if shutil.which("sacct", path=(env or os.environ).get("PATH", "")):
        acct = _slurm(["sacct", "-n", "-X", "-P", "-j", job, "-o", "State,ExitCode"], env)
        rows = [r.split("|") for r in acct.stdout.splitlines() if "|" in r] if acct.returncode == 0 else []
        if rows:
            return JobState(rows[0][0].split()[0], "", rows[0][1])  # "CANCELLED by 0" -> CANCELLED
    return None


def cancel(job: str, env: dict[str, str] | None = None) -> None:
    _slurm(["scancel", job], env)


def wait_for_job(job: str, pending_timeout_s: float, env: dict[str, str] | None = None,
                 on_poll: Callable[[JobState], None] | None = None, poll_s: float = POLL_S) -> JobState:
    """Poll the job until it ends; its last state. Still pending after `pending_timeout_s`: cancelled,
    SlurmError. `on_poll` sees every reading (to stream the job's output, to log a state change)."""
    submitted = time.monotonic()
    state = JobState("PENDING")
    while True:
        seen = job_state(job, env)
        if seen is None:  # neither slurmctld nor accounting knows it any more
            return JobState("UNKNOWN", "slurmctld no longer knows the job and there is no accounting (sacct)")
        state = seen
        if on_poll:
            on_poll(state)
        if state.ended:
            return state
        if state.state == "PENDING" and time.monotonic() - submitted > pending_timeout_s:
            cancel(job, env)
            raise SlurmError(f"Slurm job {job} was still pending after {pending_timeout_s:g} s (reason: "
                             f"{state.reason or 'none given'}) and was cancelled; free or add nodes, pick another "
                             f"launch.slurm.partition, or raise launch.slurm.pending_timeout_s")
        time.sleep(poll_s)


def describe_job_end(run: Path, job: str, state: JobState) -> str:
    """Why a job that Slurm ended (not the trainer: a FAILED job is described by its notes) stopped the
    training run, how far it got and which checkpoint launching it again resumes from."""
    why = END_REASONS.get(state.state, f"Slurm reported {state.state}" + (f" ({state.reason})" if state.reason else ""))
    return (f"training run {run.name} failed: Slurm job {job} ended {state.state}: {why}{run_progress(run)}. "
            f"Log: {run / MAIN_LOG}; the job's output: {run / JOB_OUTPUT.replace('%j', job)}. {resume_note(run)}.")
