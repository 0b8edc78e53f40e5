"""A Dagster deployment on one machine, with the real servers, for tests (tests/test_deployment.py).

    with postgres_cluster() as postgres, dagster_deployment(tmp_root, postgres, ["train.max_steps=4"]) as dep:
        dep.graphql("{ version }")                  # the webserver's GraphQL API
        with dep.instance() as instance: ...        # the same Postgres-backed instance
        dep.postgres.stop(); dep.postgres.start()   # a database restart

On 127.0.0.1 only, every port free and chosen here, files under the given root (the cluster's aside):
- a throwaway PostgreSQL 15 cluster (Debian's `postgresql`: `initdb` / `pg_ctl` from
  /usr/lib/postgresql/15/bin) with a `dagster` role, password auth over TCP (`postgres_cluster`, one per
  test run: tests/fixtures/servers.py); the deployment gets a database of its own in it;
- `DAGSTER_HOME/dagster.yaml`: dagster-postgres storage (the password comes from the env, never
  the file), the queued run coordinator with a run limit and tag limits, run monitoring, no
  telemetry: the layout of docs/deploy.md without its Kubernetes run launcher (so Dagster's
  default launcher starts each run as a subprocess of the code server);
- `dagster code-server start` serving `pipelines.definitions:defs` over gRPC, configured by
  GPT2TRAIN_CONFIG / GPT2TRAIN_SET (pipelines/settings.py), with `data_dir` in the temp dir;
- `dagster-webserver` and `dagster-daemon run` on a workspace.yaml that points at the code server.

Each server starts in its own session, is waited for with a bounded timeout (a clear error with
its log's tail if it exits or does not come up), and is stopped by its pid on the way out (the
PostgreSQL cluster with `pg_ctl stop`, when its own context ends), also when the body raised. `Deployment.env` is the
environment every process got: a `gpt2train pipeline` run with it uses the same instance.
initdb refuses to run as root, so as root the cluster belongs to the `postgres` user
(`runuser -u postgres --`), in a temp dir of its own outside pytest's (root-only) tmp dirs.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import dagster as dg
from dagster._grpc.client import DagsterGrpcClient
from dagster_graphql import DagsterGraphQLClient

from tests.paths import EDU_MINI, REPO
from tests.webserver import Webserver, _default_signals, free_port

PG_BIN = Path(os.environ.get("GPT2TRAIN_PG_BIN", "/usr/lib/postgresql/15/bin"))
LOCATION = "gpt2train"
PG_USER, PG_DB = "dagster", "dagster"

# The instance file; everything that differs between deployments comes from the env.
DAGSTER_YAML = """\
# A Postgres-backed instance (docs/deploy.md), as tests/deployment.py runs it on one machine.
storage:
  postgres:
    postgres_db:
      hostname: {env: DAGSTER_PG_HOST}
      port: {env: DAGSTER_PG_PORT}
      username: {env: DAGSTER_PG_USERNAME}
      password: {env: DAGSTER_PG_PASSWORD}
      db_name: {env: DAGSTER_PG_DB}
      # SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3; dagster-postgres installs psycopg2.
      scheme: postgresql+psycopg2
run_coordinator:
  module: dagster.core.run_coordinator
  class: QueuedRunCoordinator
  config:
    dequeue_interval_seconds: 1      # default 5 s: a run waits in the queue up to that long
    dequeue_use_threads: true        # as docs/deploy.md: a pass's runs launched side by side
    dequeue_num_workers: 4
concurrency:
  runs:
    max_concurrent_runs: 3
    tag_concurrency_limits:
      - {key: dagster/sensor_name, value: checkpoints_sensor, limit: 2}
      - {key: gpt2train/stage, value: training, limit: 1}
run_monitoring:
  enabled: true
  poll_interval_seconds: 2           # a dead run worker is failed within seconds
  start_timeout_seconds: 120
telemetry:
  enabled: false
"""


class DeploymentError(RuntimeError):
    """A server did not start or answer in time; the message carries its log's tail."""


def _tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return "(no log)"


def _exe(name: str) -> str:
    exe = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if exe is None:
        raise DeploymentError(f"no `{name}` executable beside {sys.executable}: pip install -e '.[dev]'")
    return exe


@dataclass
class Postgres:
    """A throwaway cluster: `root/data` (its files), `root/pg.log`, listening on 127.0.0.1:`port`."""

    root: Path
    port: int
    password: str
    as_postgres: bool  # run initdb / pg_ctl as the `postgres` user (we are root)

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def log(self) -> Path:
        return self.root / "pg.log"

    def _run(self, *cmd: str, timeout: float = 90) -> subprocess.CompletedProcess:
        prefix = ["runuser", "-u", "postgres", "--"] if self.as_postgres else []
        return subprocess.run([*prefix, *cmd], capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL, preexec_fn=_default_signals, cwd=self.root)

    def _check(self, what: str, proc: subprocess.CompletedProcess) -> None:
        if proc.returncode != 0:
            raise DeploymentError(f"PostgreSQL {what} failed (rc {proc.returncode}): {proc.stderr.strip()}\n"
                                  f"{_tail(self.log)}")

    def init(self) -> None:
        pwfile = self.root / "pwfile"
        pwfile.write_text(self.password + "\n")
        if self.as_postgres:
            shutil.chown(pwfile, "postgres")
        # --auth scram-sha-256: every connection, socket or TCP, needs the password, as on a server.
        self._check("initdb", self._run(str(PG_BIN / "initdb"), "-D", str(self.data), "-U", "postgres",
                                        f"--pwfile={pwfile}", "--auth=scram-sha-256", "-E", "UTF8",
                                        "--no-instructions"))
        pwfile.unlink()

    def start(self, timeout: float = 60) -> None:
        opts = f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories={self.root}"
        self._check("start", self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w",
                                       "-t", str(int(timeout)), "-o", opts, "start", timeout=timeout + 10))

    def stop(self, mode: str = "fast", timeout: float = 60) -> None:
        """`pg_ctl stop -m fast`: open connections are closed, in-flight transactions rolled back."""
        self._check("stop", self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w",
                                      "-t", str(int(timeout)), "stop", timeout=timeout + 10))

    def is_running(self) -> bool:
        return self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "status").returncode == 0

    def create_database(self, name: str) -> str:
        """A new, empty database owned by the `dagster` role: each user of one cluster has its own."""
        self.sql(f"CREATE DATABASE {name} OWNER {PG_USER}")
        return name

    def sql(self, statement: str, db: str = "postgres") -> str:
        """One statement as the superuser over TCP (psql), its output."""
        env = {**os.environ, "PGPASSWORD": self.password}
        proc = subprocess.run([str(PG_BIN / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres",
                               "-d", db, "-v", "ON_ERROR_STOP=1", "-Atc", statement],
                              capture_output=True, text=True, env=env, timeout=60, stdin=subprocess.DEVNULL)
        self._check(f"query {statement!r}", proc)
        return proc.stdout


@contextmanager
def postgres_cluster(timeout: float = 60) -> Iterator[Postgres]:
    """A fresh cluster with a `dagster` role (password auth) owning a `dagster` database; always stopped
    and deleted afterwards."""
    if not (PG_BIN / "initdb").exists():
        raise DeploymentError(f"no PostgreSQL at {PG_BIN}: apt-get install -y postgresql "
                              "(or set GPT2TRAIN_PG_BIN to its bin directory)")
    as_postgres = os.geteuid() == 0
    # Not under pytest's tmp dirs: those are root-only (0700), and the postgres user must reach this one.
    root = Path(tempfile.mkdtemp(prefix="gpt2train-pg-"))
    if as_postgres:
        shutil.chown(root, "postgres", "postgres")
    pg = Postgres(root=root, port=free_port(), password=secrets.token_hex(16), as_postgres=as_postgres)
    try:
        pg.init()
        pg.start(timeout)
        pg.sql(f"CREATE ROLE {PG_USER} LOGIN PASSWORD '{pg.password}'")
        pg.sql(f"CREATE DATABASE {PG_DB} OWNER {PG_USER}")
        yield pg
    finally:
        try:
            if pg.data.exists() and pg.is_running():
                pg.stop("immediate")
        finally:
            shutil.rmtree(root, ignore_errors=True)


@dataclass
class Server:
    """One started server process (its own session) and its log."""

    name: str
    proc: subprocess.Popen
    log: Path

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise DeploymentError(f"{self.name} exited with {self.proc.returncode}:\n{_tail(self.log)}")

    def stop(self, grace: float = 20) -> None:
        """SIGTERM by pid, then SIGKILL its session (the code server's run workers live there) if it lingers."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # its own session: pgid == its pid
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.wait(timeout=10)


@dataclass
class Deployment:
    root: Path
    home: Path              # DAGSTER_HOME (dagster.yaml, compute logs)
    data_dir: Path          # the code location's data_dir
    workspace: Path         # workspace.yaml: one grpc_server entry
    env: dict[str, str]     # the environment every server got (DAGSTER_HOME, DAGSTER_PG_*, GPT2TRAIN_*)
    overrides: list[str]    # GPT2TRAIN_SET, split
    code_server_port: int
    webserver: Webserver
    postgres: Postgres
    database: str           # its own database in `postgres`
    servers: dict[str, Server] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.webserver.url

    def graphql(self, query: str, variables: dict | None = None, timeout: float = 60) -> dict:
        return self.webserver.graphql(query, variables, timeout)

    def launch(self, job: str, partition: str | None = None, tags: dict[str, str] | None = None) -> str:
        """Submit a run of `job` through the webserver's GraphQL API (as the launchpad does); its run id.
        It goes through the instance's run coordinator: QUEUED until the daemon starts it."""
        host, port = self.url.removeprefix("http://").split(":")
        client = DagsterGraphQLClient(host, port_number=int(port), timeout=60)
        return client.submit_job_execution(job, repository_location_name=LOCATION, repository_name="__repository__",
                                           tags={**(tags or {}), **({"dagster/partition": partition} if partition else {})})

    def log_tail(self, name: str, chars: int = 3000) -> str:
        return _tail(self.servers[name].log, chars)

    @contextmanager
    def instance(self):
        """The deployment's instance, opened in this process (DAGSTER_HOME and DAGSTER_PG_* from `env`)."""
        saved = {k: os.environ.get(k) for k in self.env if k.startswith("DAGSTER_")}
        os.environ.update({k: v for k, v in self.env.items() if k.startswith("DAGSTER_")})
        try:
            with dg.DagsterInstance.get() as instance:
                yield instance
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


def _start(name: str, cmd: list[str], env: dict, log: Path) -> Server:
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=_default_signals)
    return Server(name, proc, log)


def _wait(what: str, server: Server, ready, timeout: float) -> None:
    """Poll `ready()` (True when up; may raise OSError while not) until `timeout`, failing fast if it exits."""
    deadline, last = time.monotonic() + timeout, "no answer yet"
    while time.monotonic() < deadline:
        server.check_alive()
        try:
            if ready():
                return
        except Exception as e:  # any answer but "ready" means: not yet (connection refused, loading...)
            last = f"{type(e).__name__}: {e}"
        time.sleep(0.5)
    raise DeploymentError(f"{what} not ready after {timeout:.0f} s ({last}):\n{_tail(server.log)}")


def _code_server_serving(port: int) -> bool:
    # The port first: a health check against a closed port prints gRPC's error on every try.
    socket.create_connection(("127.0.0.1", port), timeout=2).close()
    return DagsterGrpcClient(port=port, host="127.0.0.1").health_check_query() == "SERVING"


DAEMON_HEALTH = "{ instance { daemonHealth { allDaemonStatuses { daemonType healthy required } } } }"
NEEDED_DAEMONS = {"SENSOR", "QUEUED_RUN_COORDINATOR", "MONITORING"}


def daemons_healthy(dep_or_server) -> set[str]:
    statuses = dep_or_server.graphql(DAEMON_HEALTH, timeout=10)["instance"]["daemonHealth"]["allDaemonStatuses"]
    return {s["daemonType"] for s in statuses if s["healthy"]}


@contextmanager
def dagster_deployment(root: Path, postgres: Postgres, overrides: list[str] = (), config: str = "tiny",
                       database: str = "deployment", ready_timeout: float = 120) -> Iterator[Deployment]:
    """Code server, webserver and daemon as described above on a new database of `postgres`, all ready
    when yielded."""
    root = Path(root)
    home, data_dir, logs = root / "dagster_home", root / "data", root / "logs"
    for d in (home, data_dir, logs):
        d.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text(DAGSTER_YAML)
    sets = [f"data_dir={data_dir}", f"corpus.source={EDU_MINI}", *overrides]
    code_port, web_port = free_port(), free_port()
    workspace = root / "workspace.yaml"
    workspace.write_text(f"load_from:\n  - grpc_server: {{host: 127.0.0.1, port: {code_port}, "
                         f"location_name: {LOCATION}}}\n")
    with ExitStack() as stack:
        pg = postgres
        db = pg.create_database(database)
        env = {**os.environ,
               "DAGSTER_HOME": str(home), "DAGSTER_PG_HOST": "127.0.0.1", "DAGSTER_PG_PORT": str(pg.port),
               "DAGSTER_PG_USERNAME": PG_USER, "DAGSTER_PG_PASSWORD": pg.password, "DAGSTER_PG_DB": db,
               "GPT2TRAIN_CONFIG": config, "GPT2TRAIN_SET": ";".join(sets), "PYTHONUNBUFFERED": "1"}
        servers: dict[str, Server] = {}

        def stop_all():
            for name in ("daemon", "webserver", "code_server"):  # reverse order of start
                if name in servers:
                    servers[name].stop()

        stack.callback(stop_all)
        dagster = _exe("dagster")
        servers["code_server"] = _start("code_server", [
            dagster, "code-server", "start", "-h", "127.0.0.1", "-p", str(code_port), "-m", "pipelines.definitions",
            "-a", "defs", "--location-name", LOCATION, "-d", str(REPO)], env, logs / "code_server.log")
        _wait("dagster code-server", servers["code_server"], lambda: _code_server_serving(code_port), ready_timeout)
        web = _start("webserver", [_exe("dagster-webserver"), "-h", "127.0.0.1", "-p", str(web_port),
                                   "-w", str(workspace)], env, logs / "webserver.log")
        servers["webserver"] = web
        webserver = Webserver(url=f"http://127.0.0.1:{web_port}", proc=web.proc, log_path=web.log)
        webserver.wait_ready(LOCATION, ready_timeout)
        servers["daemon"] = _start("daemon", [_exe("dagster-daemon"), "run", "-w", str(workspace)], env,
                                   logs / "daemon.log")
        _wait("dagster-daemon (sensor, run queue and monitoring heartbeats)", servers["daemon"],
              lambda: NEEDED_DAEMONS <= daemons_healthy(webserver), ready_timeout)
        yield Deployment(root=root, home=home, data_dir=data_dir, workspace=workspace, env=env,
                         overrides=sets, code_server_port=code_port, webserver=webserver, postgres=pg,
                         database=db, servers=servers)


def wait_for(what: str, predicate, timeout: float, interval: float = 1.0, detail=lambda: ""):
    """Poll `predicate()` until truthy (returned) or `timeout` (AssertionError naming `what`)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not after {timeout:.0f} s. {detail()}")
        time.sleep(interval)
