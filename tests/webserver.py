"""A real `dagster dev` in a subprocess, for tests that look at the UI (tests/test_ui.py, tests/test_security.py).

    with dagster_dev(repo_root, env, log_path) as server:
        server.graphql("{ assetNodes { assetKey { path } } }")   # -> the response's "data"
        server.url                                               # http://127.0.0.1:<port>

`dagster dev` runs in its own process group (it starts the webserver, the daemon and a code
server below it), with SIGINT/SIGTERM at their defaults: background shells here may start
children with those signals ignored, and then a SIGINT would leave the whole tree running.
On exit the group gets SIGINT (dagster dev's own clean shutdown), then SIGKILL if it lingers.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

# Whether the code location loaded, and its error if it did not: a broken definitions module
# fails fast with Dagster's own traceback instead of a timeout.
WORKSPACE_QUERY = """{ workspaceOrError { __typename ... on Workspace { locationEntries {
    name loadStatus locationOrLoadError { __typename ... on PythonError { message stack } } } } } }"""


class WebserverError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _default_signals() -> None:
    # In the child, before exec: ignored signals stay ignored across exec, so undo that.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


@dataclass
class Webserver:
    url: str
    proc: subprocess.Popen
    log_path: Path

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    def graphql(self, query: str, variables: dict | None = None, timeout: float = 60) -> dict:
        """POST a query to /graphql; its `data`, or WebserverError with the GraphQL errors."""
        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        req = urllib.request.Request(f"{self.url}/graphql", data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            out = json.loads(resp.read())
        if out.get("errors"):
            raise WebserverError(f"GraphQL errors: {json.dumps(out['errors'], indent=1)[:4000]}")
        return out["data"]

    def wait_ready(self, location: str, timeout: float) -> None:
        """Until /server_info answers and `location` is loaded; fails early if dagster dev exits
        or the location fails to load."""
        deadline = time.monotonic() + timeout
        last = "no answer yet"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise WebserverError(f"dagster dev exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/server_info", timeout=5):
                    pass
                entries = self.graphql(WORKSPACE_QUERY, timeout=10)["workspaceOrError"].get("locationEntries", [])
                entry = next((e for e in entries if e["name"] == location), None)
                last = f"location entries: {entries}"
                if entry and entry["loadStatus"] == "LOADED":
                    loaded = entry["locationOrLoadError"]
                    if loaded and loaded["__typename"] == "PythonError":
                        raise WebserverError(f"code location {location} failed to load:\n{loaded['message']}\n"
                                             f"{''.join(loaded.get('stack') or [])}")
                    return
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as e:
                last = repr(e)
            time.sleep(1)
        raise WebserverError(f"dagster dev not ready after {timeout:.0f} s ({last}):\n{self.log_tail()}")


def stop_group(proc: subprocess.Popen, grace: float = 30) -> None:
    """SIGINT the process group (dagster dev shuts its children down), SIGKILL it if still alive."""
    try:
        pgid = os.getpgid(proc.pid)
    except ProcessLookupError:
        return
    try:
        os.killpg(pgid, signal.SIGINT)
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass
    except ProcessLookupError:
        return
    # dagster dev may have exited while a grandchild (code server, daemon) still runs.
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=10)


@contextmanager
def dagster_dev(repo_root: Path, env: dict[str, str], log_path: Path, location: str = "gpt2train",
                ready_timeout: float = 120) -> Iterator[Webserver]:
    """`dagster dev -w workspace.yaml` as the README starts it (the host left to its default: loopback,
    which tests/test_security.py checks) on a free port, ready when yielded; always stopped."""
    exe = shutil.which("dagster", path=str(Path(sys.executable).parent)) or shutil.which("dagster")
    if exe is None:
        raise WebserverError("no `dagster` executable beside the interpreter: pip install -e '.[dev]'")
    port = free_port()
    cmd = [exe, "dev", "-w", "workspace.yaml", "-p", str(port)]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, cwd=repo_root, env=env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=_default_signals)
    server = Webserver(url=f"http://127.0.0.1:{port}", proc=proc, log_path=log_path)
    try:
        server.wait_ready(location, ready_timeout)
        yield server
    finally:
        stop_group(proc)
