"""The Dagster instance at DAGSTER_HOME, opened with its storage faults told in one line.

    with open_instance() as instance:     # checked: it can be read and written
        run_pipeline(cfg, instance)

Dagster meets a broken instance with a long traceback that ends in a database error ("unable to
open database file", "database disk image is malformed", a psycopg2 connection error) and names
neither DAGSTER_HOME nor a fix. Here each fault becomes an InstanceStorageError (a
Gpt2TrainError: the CLI prints it without a traceback) naming DAGSTER_HOME, what is wrong and what
to do:

- a SQLite instance (Dagster's default: `history/runs.db`, `history/runs/*.db`,
  `schedules/schedules.db` under DAGSTER_HOME): DAGSTER_HOME not writable (a read-only mount or
  permissions), a corrupt database file, `history/` deleted (Dagster would silently start an empty
  history beside the old schedules and logs);
- a Postgres instance (dagster-postgres, docs/deploy.md): the server unreachable (host:port),
  the credentials refused (user), the database missing.

Faults are found before any work where they can be: the files and permissions before Dagster opens
anything, then `check_instance` (one read and one tiny write of each storage). A fault that appears
later inside the `with` (e.g. `history/` deleted while runs execute) is told the same way. Nothing
here reads or writes anything outside DAGSTER_HOME; a data dir is never touched.
"""

from __future__ import annotations

import os
import re
import sqlite3
import time
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Iterator
from urllib.parse import urlparse

import dagster as dg
import yaml

from assets.partitions import corpus_files
from gpt2train.errors import Gpt2TrainError

# The key check_instance writes in the run storage's key-value table, with the time of the check.
CHECK_KEY = "gpt2train/instance_check"
SQLITE_FILES = ("history/runs.db", "history/runs/index.db", "schedules/schedules.db")


class InstanceStorageError(Gpt2TrainError):
    """The Dagster instance's storage (SQLite files under DAGSTER_HOME, or Postgres) cannot be used."""


def dagster_home() -> Path:
    home = os.environ.get("DAGSTER_HOME")
    if not home:
        raise InstanceStorageError("DAGSTER_HOME is not set: export DAGSTER_HOME=<the Dagster instance's "
                                   "directory>")
    return Path(home)


@contextmanager
def open_instance(check: bool = True) -> Iterator[dg.DagsterInstance]:
    """`dg.DagsterInstance.get()` for DAGSTER_HOME, checked first (`check_instance`) unless `check=False`;
    storage faults, there or in the body, raise InstanceStorageError."""
    home = dagster_home()
    storage = _storage_config(home)
    _precheck(home, storage)
    try:
        instance = dg.DagsterInstance.get()
    except Exception as e:
        _raise_explained(home, storage, e)
    with instance:
        try:
            if check:
                check_instance(instance)
            yield instance
        except Exception as e:
            _raise_explained(home, storage, e)


def check_instance(instance) -> None:
    """One cheap read of the run and event storages and one write (a key-value row of the run
    storage): a read-only or unreachable storage fails here, before any work."""
    instance.get_run_records(limit=1)
    instance.get_dynamic_partitions(corpus_files.name)  # the event log storage
    instance.run_storage.set_cursor_values({CHECK_KEY: str(time.time())})


# -- what the instance file says -------------------------------------------------------------------


def _resolve(value):
    """A config value, `{env: NAME}` read from the environment as Dagster does."""
    if isinstance(value, dict) and set(value) == {"env"}:
        return os.environ.get(value["env"])
    return value


def _storage_config(home: Path) -> dict:
    """{"kind": "sqlite", "dir": base dir} or {"kind": "postgres", "host", "port", "user", "db", "env"};
    an unreadable dagster.yaml is an error here, since Dagster could not read it either."""
    path = home / "dagster.yaml"
    try:
        config = (yaml.safe_load(path.read_text()) if path.exists() else None) or {}
    except (OSError, yaml.YAMLError) as e:
        raise InstanceStorageError(f"DAGSTER_HOME={home}: dagster.yaml cannot be read "
                                   f"({str(e).splitlines()[0]}): fix or remove {path}") from e
    storage = config.get("storage") or {}
    legacy = (config.get("run_storage") or {}).get("module", "")
    if "postgres" in storage or legacy.startswith("dagster_postgres"):
        pg = storage.get("postgres") or (config.get("run_storage") or {}).get("config") or {}
        db = pg.get("postgres_db") or {}
        names = [v["env"] for v in db.values() if isinstance(v, dict) and set(v) == {"env"}]
        if pg.get("postgres_url"):
            url = urlparse(_resolve(pg["postgres_url"]) or "")
            return {"kind": "postgres", "host": url.hostname, "port": url.port or 5432, "user": url.username,
                    "db": url.path.lstrip("/"), "env": names}
        return {"kind": "postgres", "host": _resolve(db.get("hostname")), "port": _resolve(db.get("port")) or 5432,
                "user": _resolve(db.get("username")), "db": _resolve(db.get("db_name")), "env": names}
    if "sqlite" in storage:
        base = _resolve((storage["sqlite"] or {}).get("base_dir"))
        return {"kind": "sqlite", "dir": Path(base) if base else home}
    if storage or legacy:
        return {"kind": "other"}  # another storage class: Dagster's own errors stand
    return {"kind": "sqlite", "dir": home}


# -- faults found before Dagster opens anything --------------------------------------------------


def _precheck(home: Path, storage: dict) -> None:
    if home.exists() and not home.is_dir():
        raise InstanceStorageError(f"DAGSTER_HOME={home} is not a directory: point DAGSTER_HOME at a directory")
    if storage["kind"] != "sqlite":
        return
    base = storage["dir"]
    if base.exists() and not os.access(base, os.W_OK | os.X_OK):
        raise _read_only(home, base)
    history = base / "history"
    if not history.exists() and (base / "schedules" / "schedules.db").exists():
        # Dagster would create an empty history and carry on: every run and materialization forgotten.
        raise InstanceStorageError(
            f"DAGSTER_HOME={home}: {history} is missing (deleted?) while the rest of the instance is there: "
            f"restore history/ from a backup, or move {base} aside to start an empty instance")
    for name in SQLITE_FILES:
        path = base / name
        if path.exists() and not os.access(path, os.R_OK | os.W_OK):
            raise _read_only(home, path)
        fault = _header_fault(path) if path.exists() else None
        if fault:
            raise _corrupt(home, base, [path], fault)


def _header_fault(path: Path) -> str | None:
    """What is wrong with a SQLite file's 100-byte header (https://sqlite.org/fileformat.html), or
    None: a cheap test, before Dagster opens it, for a file cut short or overwritten."""
    size = path.stat().st_size
    if size == 0:
        return None  # SQLite takes an empty file for an empty database
    with open(path, "rb") as f:
        head = f.read(100)
    if len(head) < 100 or not head.startswith(b"SQLite format 3\x00"):
        return "not a SQLite database"
    page_size = int.from_bytes(head[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(head[28:32], "big")
    # The page count is valid when the change counter (24) equals the version-valid-for number (92).
    if head[24:28] == head[92:96] and pages * page_size > size:
        return f"truncated: {size} of {pages * page_size} bytes"
    return None


def _corrupt(home: Path, base: Path, files: list[Path], what: str) -> InstanceStorageError:
    names = ", ".join(map(str, files)) or f"a database file under {base}"
    return InstanceStorageError(
        f"DAGSTER_HOME={home}: {names} is corrupt ({what}): restore it from a backup, or move "
        f"{base / 'history'} aside to start an empty run history")


def _read_only(home: Path, path: Path) -> InstanceStorageError:
    return InstanceStorageError(
        f"DAGSTER_HOME={home}: {path} is read-only (a read-only mount, or owned by another user): make it "
        "writable for this user, or point DAGSTER_HOME at a writable directory")


# -- faults Dagster raised ------------------------------------------------------------------------


def _chain(e: BaseException) -> list[BaseException]:
    out = []
    while e is not None and e not in out:
        out.append(e)
        e = e.__cause__ or e.__context__
    return out


def _is_storage_error(e: BaseException) -> bool:
    module = type(e).__module__
    return module.startswith(("sqlalchemy", "sqlite3", "psycopg2", "psycopg")) or \
        type(e).__name__ == "DagsterPostgresException"


def _raise_explained(home: Path, storage: dict, e: Exception):
    explained = _explained(home, storage, e)
    if explained is e:
        raise e
    raise explained from e


def _explained(home: Path, storage: dict, e: Exception) -> Exception:
    """An InstanceStorageError for a storage fault anywhere in `e`'s chain; `e` itself otherwise."""
    chain = _chain(e)
    if isinstance(e, Gpt2TrainError) or not any(_is_storage_error(c) for c in chain):
        return e
    text = " ".join(str(c) for c in chain)
    first = next((str(c).strip().splitlines()[0] for c in reversed(chain) if str(c).strip()), type(e).__name__)
    if storage["kind"] == "postgres":
        return _postgres_error(home, storage, text, first) or e
    if storage["kind"] == "sqlite":
        return _sqlite_error(home, storage["dir"], text, first) or e
    return e


def _postgres_error(home: Path, pg: dict, text: str, first: str) -> InstanceStorageError | None:
    where = f"Postgres at {pg['host']}:{pg['port']}"
    settings = f"storage.postgres in {home / 'dagster.yaml'}" + \
        (f" and the variables it reads ({', '.join(pg['env'])})" if pg["env"] else "")
    if "password authentication failed" in text or "no password supplied" in text or \
            re.search(r'role "[^"]*" does not exist', text):
        return InstanceStorageError(f"DAGSTER_HOME={home}: {where} refused user {pg['user']!r} for database "
                                    f"{pg['db']!r} (wrong user or password): fix the credentials in {settings}")
    if re.search(r'database "[^"]*" does not exist', text):
        return InstanceStorageError(f"DAGSTER_HOME={home}: {where} has no database {pg['db']!r}: create it "
                                    f"(createdb -O {pg['user']} {pg['db']}) or fix db_name in {settings}")
    if re.search(r"Connection refused|could not connect|timeout expired|could not translate host name|"
                 r"server closed the connection|terminating connection|too many retries for DB connection|"
                 r"Network is unreachable|No route to host|the database system is (starting|shutting) down", text):
        return InstanceStorageError(f"DAGSTER_HOME={home}: {where} is unreachable ({first}): start PostgreSQL "
                                    f"there, or fix hostname/port in {settings}")
    return None


def _sqlite_error(home: Path, base: Path, text: str, first: str) -> InstanceStorageError | None:
    if not (base / "history").exists():
        return InstanceStorageError(
            f"DAGSTER_HOME={home}: {base / 'history'} was deleted while the instance was in use ({first}): "
            f"restore it from a backup, or move {base} aside to start an empty instance")
    if "malformed" in text or "not a database" in text:
        return _corrupt(home, base, _corrupt_files(base), first)
    if "readonly database" in text or "unable to open database file" in text or "Read-only file system" in text:
        if not os.access(base, os.W_OK | os.X_OK):
            return _read_only(home, base)
        if "readonly database" in text:
            return _read_only(home, base / "history")
    return None


def _corrupt_files(base: Path) -> list[Path]:
    """The instance's SQLite files that fail `PRAGMA quick_check` (or do not open as a database)."""
    bad = []
    files = [base / n for n in SQLITE_FILES] + sorted((base / "history" / "runs").glob("*.db"))
    for path in dict.fromkeys(files):
        if not path.exists():
            continue
        try:
            # immutable: read as it is, writing nothing beside it (no -wal / -shm files).
            with closing(sqlite3.connect(f"file:{path}?immutable=1", uri=True)) as db:
                ok = db.execute("PRAGMA quick_check").fetchone()[0] == "ok"
        except sqlite3.DatabaseError:
            ok = False
        if not ok:
            bad.append(path)
    return bad
