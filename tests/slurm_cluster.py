"""A real one-node Slurm cluster on 127.0.0.1 for the tests: munged, slurmctld and slurmd.

    with SlurmCluster(tmp_dir) as cluster:     # or the `slurm_cluster` fixture (tests/test_slurm.py)
        os.environ["SLURM_CONF"] = str(cluster.conf)
        subprocess.run(["srun", "-N1", "-n2", "hostname"])

Debian's `slurm-wlm` 22.05 and `munge` 0.5 (`apt-get install slurm-wlm munge`), run as root, each
daemon in the foreground with everything of its own in one temp directory (munged's socket in one
under the system's temp: see `_start`): munged with its own key and socket, slurmctld and slurmd with their state, spool, logs and pid files there, and a
`slurm.conf` that the clients find through SLURM_CONF. The node is `localhost` with the machine's
CPUs (at least 2: two tasks stand in for two nodes, one torchrun agent each); the partition `debug`
holds it. What makes it run in a container without cgroups or systemd: `proctrack/linuxproc` (Slurm
tracks a job's processes by parent pid) and `task/none`.

Teardown stops each daemon by its own pid (SIGTERM, then SIGKILL), slurmd first so no job outlives
the cluster.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "srun", "squeue", "scontrol", "scancel", "sinfo")
PARTITION = "debug"
START_TIMEOUT_S = 60


def missing_binaries() -> list[str]:
    """The Slurm / munge programs not installed here (`apt-get install slurm-wlm munge` adds them)."""
    search = f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin"
    return [name for name in (*DAEMONS, *CLIENTS) if shutil.which(name, path=search) is None]


def free_ports(n: int) -> list[int]:
    """n distinct free TCP ports on 127.0.0.1 (held open together, so they differ)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def slurm_conf(root: Path, ctld_port: int, slurmd_port: int, cpus: int, munge_socket: Path) -> str:
    return f"""\
# A one-node test cluster (tests/slurm_cluster.py); everything lives under {root}.
ClusterName=gpt2train
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={munge_socket}
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
# No cgroups or systemd in a container: track a job's processes by parent pid, bind nothing.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
MpiDefault=none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
ReturnToService=2
# Seconds between SIGTERM and SIGKILL at scancel / a time limit (the trainer's ranks stop in < 1 s).
KillWait=5
# A finished job stays in slurmctld's memory this long: `scontrol show job` reads its end state.
MinJobAge=600
# The time-limit check runs every 30 s by default (OverTimeLimit 0): a 1-minute limit ends by ~90 s.
InactiveLimit=0
NodeName=localhost NodeAddr=127.0.0.1 CPUs={cpus} State=UNKNOWN
PartitionName={PARTITION} Nodes=localhost Default=YES MaxTime=INFINITE State=UP
"""


class SlurmCluster:
    """munged + slurmctld + slurmd in `root`, on 127.0.0.1; `conf` is the slurm.conf for SLURM_CONF."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.procs: dict[str, subprocess.Popen] = {}
        self.conf = self.root / "slurm.conf"
        self.partition = PARTITION
        self.socket_dir: Path | None = None

    def env(self) -> dict[str, str]:
        """This process's environment with the cluster's SLURM_CONF (for the clients and the jobs)."""
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def __enter__(self) -> "SlurmCluster":
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _start(self) -> None:
        root = self.root
        for sub in ("state", "spool", "munge"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(root / "munge", 0o700)
        key = root / "munge" / "munge.key"  # munged refuses a key that others may read
        key.write_bytes(secrets.token_bytes(1024))
        os.chmod(key, 0o400)
        # munged wants every folder above its socket open to all (clients of every user connect), which
        # pytest's 0700 temp folders are not: the socket gets a folder of its own in the system's temp.
        self.socket_dir = Path(tempfile.mkdtemp(prefix="gpt2train-munge-"))
        os.chmod(self.socket_dir, 0o755)
        munge_socket = self.socket_dir / "munge.socket"
        ctld_port, slurmd_port = free_ports(2)
        self.conf.write_text(slurm_conf(root, ctld_port, slurmd_port, max(2, os.cpu_count() or 2), munge_socket))
        env = self.env()
        self._spawn("munged", ["munged", "--foreground", f"--socket={munge_socket}", f"--key-file={key}",
                               f"--pid-file={root}/munge/munged.pid", f"--log-file={root}/munge/munged.log",
                               f"--seed-file={root}/munge/munged.seed"], env)
        self._wait(lambda: munge_socket.exists(), "munged's socket")
        # -i: ignore (absent) saved state; -D: foreground. slurmd -N: the node name in slurm.conf.
        self._spawn("slurmctld", ["slurmctld", "-D", "-i", "-f", str(self.conf)], env)
        self._spawn("slurmd", ["slurmd", "-D", "-N", "localhost", "-f", str(self.conf)], env)
        self._wait(self._node_idle, "node localhost idle")

    def _spawn(self, name: str, args: list[str], env: dict[str, str]) -> None:
        log = open(self.root / f"{name}.out", "w")
        with log:
            self.procs[name] = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env,
                                                start_new_session=True)

    def _wait(self, ready, what: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited ({proc.returncode}) while waiting for {what}:\n"
                                       f"{self.logs()}")
            if ready():
                return
            time.sleep(0.2)
        raise TimeoutError(f"{what}: not within {START_TIMEOUT_S} s\n{self.logs()}")

    def _node_idle(self) -> bool:
        out = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], capture_output=True, text=True, env=self.env())
        return out.returncode == 0 and out.stdout.strip() == "idle"

    def logs(self) -> str:
        parts = []
        for path in sorted(self.root.glob("*.out")) + sorted(self.root.glob("*.log")):
            parts.append(f"--- {path.name}\n{path.read_text(errors='replace')[-3000:]}")
        return "\n".join(parts)

    def stop(self) -> None:
        """slurmd first (it ends its jobs' steps), then slurmctld, then munged: each by its own pid."""
        for name in reversed(DAEMONS):
            proc = self.procs.pop(name, None)
            if proc is None:
                continue
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        if self.socket_dir is not None:
            shutil.rmtree(self.socket_dir, ignore_errors=True)
