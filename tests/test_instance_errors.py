"""Dagster storage faults become one-line errors naming DAGSTER_HOME, the fault and the fix
(pipelines/instance.py), and opening a broken instance changes nothing in it.

SQLite cases on a real instance in a temp DAGSTER_HOME (one run recorded first, so there is a
history to lose): a truncated or overwritten `runs.db`, `history/` deleted before opening and while
in use, a read-only DAGSTER_HOME (a read-only bind mount in a private mount namespace when we
are root, whom permissions do not stop; `chmod a-w` otherwise). Postgres (e2e): a closed port; with
the session's throwaway server (tests/fixtures/servers.py) wrong credentials, a missing database and
the server stopped while the instance is open.

    pytest tests/test_instance_errors.py -q                      # SQLite
    pytest -m "e2e or not e2e" tests/test_instance_errors.py -q   # + Postgres and the command on a corrupt instance
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from pipelines.instance import CHECK_KEY, InstanceStorageError, open_instance
from tests.paths import REPO

INSTANCE_YAML = "telemetry:\n  enabled: false\n"


@dg.asset
def one() -> int:
    return 1


def snapshot(root: Path) -> dict[str, str]:
    """Every file under `root` (name -> sha256), and every directory (name -> "dir"). SQLite's -wal and
    -shm files are left out: opening a database in WAL mode creates them empty, changing no data."""
    return {str(p.relative_to(root)): "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if not p.name.endswith(("-wal", "-shm"))}


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """A SQLite instance with one successful run in it; DAGSTER_HOME points at it."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(INSTANCE_YAML)
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    with dg.DagsterInstance.get() as instance:
        assert dg.materialize([one], instance=instance).success
    return home


def one_line(err: pytest.ExceptionInfo, home: Path, *patterns: str) -> str:
    message = str(err.value)
    assert "\n" not in message
    assert f"DAGSTER_HOME={home}" in message
    for p in patterns:
        assert p in message, f"{p!r} not in: {message}"
    return message


def test_a_healthy_instance_opens_and_is_checked(home):
    with open_instance() as instance:
        assert len(instance.get_runs()) == 1
        # The check wrote its key: the run storage is writable.
        assert CHECK_KEY in instance.run_storage.get_cursor_values({CHECK_KEY})


def damaged(data: bytes, damage: str) -> bytes:
    if damage == "truncate":
        return data[: len(data) // 2]
    if damage == "overwrite":
        return os.urandom(len(data))
    page_size = int.from_bytes(data[16:18], "big")  # "scramble": a sound header, every other page garbage
    return data[:page_size] + os.urandom(len(data) - page_size)


@pytest.mark.parametrize("damage, says", [
    ("truncate", "truncated: "),                           # found from the header, before Dagster opens it
    ("overwrite", "not a SQLite database"),                # likewise
    ("scramble", "database disk image is malformed"),      # what SQLite says when Dagster reads it
])
def test_a_corrupt_runs_db_is_named(home, damage, says):
    runs_db = home / "history" / "runs.db"
    runs_db.write_bytes(damaged(runs_db.read_bytes(), damage))
    before = snapshot(home)
    with pytest.raises(InstanceStorageError) as err:
        with open_instance():
            pass
    one_line(err, home, str(runs_db), "is corrupt", says, "restore it from a backup", "aside")
    assert snapshot(home) == before


def test_a_deleted_history_is_refused_not_replaced(home):
    shutil.rmtree(home / "history")
    before = snapshot(home)
    with pytest.raises(InstanceStorageError) as err:
        with open_instance():
            pass
    one_line(err, home, f"{home / 'history'} is missing", "restore history/ from a backup")
    # Dagster alone would have made an empty history/ and carried on with no runs.
    assert snapshot(home) == before and not (home / "history").exists()


def test_history_deleted_while_in_use(home):
    with pytest.raises(InstanceStorageError) as err:
        with open_instance() as instance:
            shutil.rmtree(home / "history")
            dg.materialize([one], instance=instance)
    one_line(err, home, "history was deleted while the instance was in use", "restore it from a backup")


def test_a_read_only_dagster_home(home, tmp_path):
    """In a subprocess: as root only a read-only mount stops writes, and that needs its own mount namespace."""
    before = snapshot(home)
    code = ("from pipelines.instance import open_instance\n"
            "try:\n    with open_instance(): print('opened')\nexcept Exception as e: print(f'{type(e).__name__}: {e}')")
    cmd = [sys.executable, "-c", code]
    if os.geteuid() == 0:
        if shutil.which("unshare") is None:
            pytest.fail("as root this test needs util-linux's unshare (a read-only bind mount)")
        cmd = ["unshare", "-m", "sh", "-c", 'mount --bind "$H" "$H" && mount -o remount,ro,bind "$H" "$H" && '
               'exec "$@"', "sh", *cmd]
    else:
        for d in (home, *[p for p in home.rglob("*") if p.is_dir()]):
            d.chmod(0o555)
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=120,
                             env={**os.environ, "H": str(home), "DAGSTER_HOME": str(home)})
    finally:
        for d in (home, *[p for p in home.rglob("*") if p.is_dir()]):
            d.chmod(0o755)
    assert out.stdout.startswith("InstanceStorageError: "), out.stdout + out.stderr
    message = out.stdout.strip().removeprefix("InstanceStorageError: ")
    assert "\n" not in message and f"DAGSTER_HOME={home}:" in message
    assert "is read-only" in message and "writable" in message, message
    assert snapshot(home) == before


def test_dagster_home_unset_or_not_a_directory(tmp_path, monkeypatch):
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    with pytest.raises(InstanceStorageError, match="DAGSTER_HOME is not set: export DAGSTER_HOME="):
        with open_instance():
            pass
    afile = tmp_path / "afile"
    afile.write_text("x")
    monkeypatch.setenv("DAGSTER_HOME", str(afile))
    with pytest.raises(InstanceStorageError, match=f"DAGSTER_HOME={afile} is not a directory"):
        with open_instance():
            pass


def postgres_home(tmp_path: Path, monkeypatch, port: int, user: str = "dagster", password: str = "x",
                  db: str = "dagster") -> Path:
    """A DAGSTER_HOME whose dagster.yaml is tests/deployment.py's (Postgres storage from DAGSTER_PG_*)."""
    from tests.deployment import DAGSTER_YAML

    home = tmp_path / "pg_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(DAGSTER_YAML)
    for k, v in {"DAGSTER_HOME": str(home), "DAGSTER_PG_HOST": "127.0.0.1", "DAGSTER_PG_PORT": str(port),
                 "DAGSTER_PG_USERNAME": user, "DAGSTER_PG_PASSWORD": password, "DAGSTER_PG_DB": db}.items():
        monkeypatch.setenv(k, v)
    return home


def closed_port() -> int:
    with socket.socket() as s:  # bound, never listening: connections to it are refused
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.e2e  # ~10 s: dagster-postgres retries the connection before it gives up
def test_postgres_unreachable(tmp_path, monkeypatch):
    port = closed_port()
    home = postgres_home(tmp_path, monkeypatch, port)
    with pytest.raises(InstanceStorageError) as err:
        with open_instance():
            pass
    one_line(err, home, f"Postgres at 127.0.0.1:{port} is unreachable", "start PostgreSQL there",
             "DAGSTER_PG_HOST")


@pytest.fixture(scope="module")
def live_postgres(postgres):
    """The session's PostgreSQL (tests/fixtures/servers.py), with a database of these tests' own."""
    postgres.create_database("instance_errors")
    return postgres


@pytest.mark.e2e
def test_postgres_wrong_credentials_and_missing_database(tmp_path, monkeypatch, live_postgres):
    pg = live_postgres
    home = postgres_home(tmp_path, monkeypatch, pg.port, password="wrong", db="instance_errors")
    with pytest.raises(InstanceStorageError) as err:
        with open_instance():
            pass
    one_line(err, home, f"127.0.0.1:{pg.port} refused user 'dagster'", "wrong user or password",
             "DAGSTER_PG_PASSWORD")
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", pg.password)
    monkeypatch.setenv("DAGSTER_PG_DB", "nope")
    with pytest.raises(InstanceStorageError) as err:
        with open_instance():
            pass
    one_line(err, home, "has no database 'nope'", "createdb -O dagster nope")


@pytest.mark.e2e
def test_postgres_stopped_while_open(tmp_path, monkeypatch, live_postgres):
    pg = live_postgres
    home = postgres_home(tmp_path, monkeypatch, pg.port, password=pg.password, db="instance_errors")
    try:
        with pytest.raises(InstanceStorageError) as err:
            with open_instance() as instance:
                assert dg.materialize([one], instance=instance).success
                pg.stop("fast")
                instance.get_runs()
        one_line(err, home, f"Postgres at 127.0.0.1:{pg.port} is unreachable")
    finally:
        if not pg.is_running():
            pg.start()
    with open_instance() as instance:  # back up: the run recorded before the stop is still there
        assert len(instance.get_runs()) == 1


@pytest.mark.e2e
def test_gpt2train_pipeline_on_a_corrupt_instance_says_one_line_and_touches_no_data(home, tmp_path, edu_mini):
    """The command a user runs: exit 2, one line naming DAGSTER_HOME and the fix, before any work."""
    runs_db = home / "history" / "runs.db"
    runs_db.write_bytes(damaged(runs_db.read_bytes(), "truncate"))
    data = tmp_path / "data"
    r = subprocess.run([sys.executable, "-m", "pipelines.cli", "pipeline", "--set", f"data_dir={data}",
                        "--set", f"corpus.source={edu_mini}", "--through", "data"],
                       capture_output=True, text=True, cwd=REPO, env={**os.environ, "DAGSTER_HOME": str(home)})
    assert r.returncode == 2, r.stderr[-2000:]
    errors = [line for line in r.stderr.splitlines() if "error" in line.lower()]
    assert errors == [line for line in errors if line.startswith("gpt2train pipeline: error: DAGSTER_HOME=")]
    assert len(errors) == 1 and str(runs_db) in errors[0] and "Traceback" not in r.stderr
    assert not data.exists()
