"""A local stand-in for the Hugging Face Hub, speaking the HTTP that `huggingface_hub` sends.

It serves a folder (e.g. ../shared/data/edu-mini) as the dataset repo `HuggingFaceFW/fineweb-edu`
so tests can run the real download path (`gpt2train.data.hub` -> `huggingface_hub` -> httpx2) against
a real socket, with no internet:

- `HEAD|GET /datasets/<repo>/resolve/<revision>/<path>`: the file, with the headers
  `huggingface_hub.file_download.get_hf_file_metadata` reads: `X-Repo-Commit` (a fixed fake commit),
  `ETag` / `X-Linked-Etag` (quoted sha256, as the Hub sends for LFS files; a sha256 etag also lets
  `hf_hub_download` recognise a file already in `local_dir` by hashing it), `X-Linked-Size`,
  `Content-Length`, `Accept-Ranges: bytes`. `Range: bytes=N-` / `bytes=N-M` get 206 + `Content-Range`.
  No `X-Xet-*` headers and no `Link: <...>; rel="xet-auth"`, so `huggingface_hub` never tries Xet.
- `GET /api/datasets/<repo>/tree/<revision>[/<path>]?recursive=...`: the JSON entries of
  `HfApi.list_repo_tree` (`{"type": "file", "oid", "size", "path", "lfs": {...}}`,
  `{"type": "directory", "oid", "path"}`), all in one page (no `Link: rel="next"` header).
- Errors like the Hub's: 404 with `X-Error-Code` (`RepoNotFound`, `RevisionNotFound`,
  `EntryNotFound`), which `huggingface_hub.utils.hf_raise_for_status` maps to its exception types.

Fault injection, for download interruption tests:

- `cut_gets(path, after_bytes, times)`: the next `times` GETs of `path` send their headers (full
  `Content-Length`) but only `after_bytes` body bytes, then the connection is closed, as when a
  network drops mid-download (httpx2 raises `RemoteProtocolError`).
- `refuse = True`: every request is read and the connection closed without an answer (the Hub is
  gone); `cut_gets(..., then_refuse=True)` switches it on right after the last cut.
- `stop()`: nothing listens on the port any more (connection refused).

Every request is recorded in `requests` (method, path, Range header) for the tests to inspect.

    with HubServer(EDU_MINI) as hub:
        os.environ["HF_ENDPOINT"] = hub.url
        ...
        hub.cut_gets("sample/10BT/000_00000.parquet", after_bytes=500_000)
        ...  # download it
        assert hub.gets("sample/10BT/000_00000.parquet")[-1].range  # e.g. "bytes=N-" on a resume
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

REPO_ID = "HuggingFaceFW/fineweb-edu"
# The commit every revision resolves to (what `X-Repo-Commit` reports); any 40-hex string will do.
COMMIT_SHA = "c0ffee00" + "1234567890abcdef" * 2
BRANCH = "main"
CHUNK = 64 * 1024

_RANGE = re.compile(r"bytes=(\d+)-(\d*)")


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str  # URL path, percent-decoded, without the query string
    query: str
    range: str | None  # the Range header as sent, None when absent
    refused: bool  # True when the server closed the connection without answering (refuse mode)


@dataclass(frozen=True)
class FileInfo:
    size: int
    sha256: str
    pointer_size: int  # size of the git-lfs pointer file the Hub stores in git
    blob_oid: str  # git blob sha1 of that pointer: the tree listing's "oid" for LFS files


@dataclass
class _Cut:
    after_bytes: int
    times: int
    then_refuse: bool


class HubServer:
    """A Hub-like HTTP server on 127.0.0.1 (a free port) serving `root` as dataset repo `repo_id`.

    Use as a context manager, or call `start()` / `stop()`.
    """

    def __init__(self, root: Path, repo_id: str = REPO_ID, commit: str = COMMIT_SHA):
        self.root = Path(root)
        self.repo_id = repo_id
        self.commit = commit
        self.requests: list[RecordedRequest] = []
        self.refuse = False
        self._cuts: dict[str, _Cut] = {}
        self._infos: dict[str, FileInfo] = {}
        self._lock = threading.Lock()
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None
        self.port: int | None = None

    # --- lifecycle -------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        assert self.port is not None, "server not started"
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "HubServer":
        # Port 0: the OS picks a free port; a restart after stop() reuses the same port if it can,
        # so `url` stays valid.
        self._httpd = _Server(("127.0.0.1", self.port or 0), _Handler, hub=self)
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"hub-server-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening and drop every open connection: afterwards the port refuses connections."""
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self._httpd.server_close()
        # Keep-alive connections outlive serve_forever(); close them, or a client's connection pool
        # would still reach the "stopped" server.
        self._httpd.close_all_connections()
        self._thread.join(timeout=5)
        self._httpd = self._thread = None

    def __enter__(self) -> "HubServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- fault injection and inspection -----------------------------------------------------------

    def cut_gets(self, path: str, after_bytes: int, times: int = 1, then_refuse: bool = False) -> None:
        """Cut the body of the next `times` GETs of repo file `path` after `after_bytes` bytes.

        With `then_refuse`, the server refuses every request after the last cut (see `refuse`),
        so a client's own retries fail too until the test sets `refuse = False`.
        """
        with self._lock:
            self._cuts[path] = _Cut(after_bytes, times, then_refuse)

    def gets(self, path: str) -> list[RecordedRequest]:
        """The recorded GET requests for repo file `path` (any revision), in order."""
        suffix = f"/{path}"
        prefix = f"/datasets/{self.repo_id}/resolve/"
        with self._lock:
            return [r for r in self.requests
                    if r.method == "GET" and r.path.startswith(prefix) and r.path.endswith(suffix)]

    def file_info(self, path: str) -> FileInfo:
        """Size and hashes of repo file `path` (computed once; the served folder is read-only)."""
        with self._lock:
            info = self._infos.get(path)
        if info is None:
            data = (self.root / path).read_bytes()
            sha = hashlib.sha256(data).hexdigest()
            # The pointer file git stores for an LFS file; its blob sha1 is the file's "oid" in the
            # tree listing, its size the "pointerSize".
            pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha}\nsize {len(data)}\n".encode()
            blob_oid = hashlib.sha1(b"blob %d\0" % len(pointer) + pointer).hexdigest()
            info = FileInfo(len(data), sha, len(pointer), blob_oid)
            with self._lock:
                self._infos[path] = info
        return info

    # --- used by the handler --------------------------------------------------------------------------

    def _record(self, req: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(req)

    def _take_cut(self, path: str) -> int | None:
        """Bytes to send before cutting this GET of `path`, or None to send it whole."""
        with self._lock:
            cut = self._cuts.get(path)
            if cut is None or cut.times <= 0:
                return None
            cut.times -= 1
            if cut.times == 0:
                del self._cuts[path]
                if cut.then_refuse:
                    self.refuse = True
            return cut.after_bytes


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a hung keep-alive connection must not block stop()
    allow_reuse_address = True

    def __init__(self, address, handler, hub: HubServer):
        self.hub = hub
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        super().__init__(address, handler)

    def process_request(self, request, client_address):
        with self._conns_lock:
            self._conns.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request):
        with self._conns_lock:
            self._conns.discard(request)
        super().shutdown_request(request)

    def close_all_connections(self) -> None:
        with self._conns_lock:
            conns, self._conns = list(self._conns), set()
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like the Hub; every response carries Content-Length
    timeout = 30  # idle keep-alive connections end eventually
    server: _Server

    def log_message(self, format, *args):  # noqa: A002 - quiet: tests inspect `requests` instead
        pass

    def do_HEAD(self):
        self._dispatch(head=True)

    def do_GET(self):
        self._dispatch(head=False)

    # --- routing ------------------------------------------------------------------------------------

    def _dispatch(self, head: bool) -> None:
        hub = self.server.hub
        parts = urlsplit(self.path)
        path = unquote(parts.path)
        refused = hub.refuse
        hub._record(RecordedRequest(self.command, path, parts.query, self.headers.get("Range"), refused))
        if refused:
            # The request has been read in full (GET/HEAD have no body), so closing now sends a clean
            # FIN: the client sees "Server disconnected without sending a response".
            self.close_connection = True
            return

        if m := re.fullmatch(r"/datasets/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path):
            self._resolve(head, *m.groups())
        elif m := re.fullmatch(r"/api/datasets/([^/]+/[^/]+)/tree/([^/]+)(?:/(.*))?", path):
            self._tree(head, m[1], m[2], (m[3] or "").strip("/"), parse_qs(parts.query))
        elif m := re.fullmatch(r"/api/datasets/([^/]+/[^/]+)(?:/revision/([^/]+))?", path):
            self._info(head, m[1], m[2] or BRANCH)
        else:
            self._error(head, 404, None, "Not Found")

    def do_POST(self):
        # `HfApi.get_paths_info` (what `HfFileSystem.info` asks when its listing cache does not know a path):
        # a form body `paths=a&paths=b&expand=...`.
        hub = self.server.hub
        parts = urlsplit(self.path)
        path = unquote(parts.path)
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
        refused = hub.refuse
        hub._record(RecordedRequest(self.command, path, parts.query, None, refused))
        if refused:
            self.close_connection = True
            return
        if m := re.fullmatch(r"/api/datasets/([^/]+/[^/]+)/paths-info/([^/]+)", path):
            self._paths_info(m[1], m[2], parse_qs(body).get("paths", []))
        else:
            self._error(False, 404, None, "Not Found")

    def _check_repo(self, head: bool, repo: str, revision: str) -> bool:
        hub = self.server.hub
        if repo != hub.repo_id:
            # The Hub answers unknown (and private) repos alike; hf_hub maps the code to RepositoryNotFoundError.
            self._error(head, 404, "RepoNotFound", "Repository not found")
            return False
        if revision not in (BRANCH, hub.commit):
            self._error(head, 404, "RevisionNotFound", f"Invalid rev id: {revision}")
            return False
        return True

    def _repo_file(self, rel: str) -> Path | None:
        root = self.server.hub.root.resolve()
        p = (root / rel).resolve()
        # No escaping the served folder, no hidden files (the Hub has no such paths).
        if root not in p.parents or any(part.startswith(".") for part in Path(rel).parts):
            return None
        return p

    # --- /resolve --------------------------------------------------------------------------------------

    def _resolve(self, head: bool, repo: str, revision: str, rel: str) -> None:
        hub = self.server.hub
        if not self._check_repo(head, repo, revision):
            return
        p = self._repo_file(rel)
        if p is None or not p.is_file():
            self._error(head, 404, "EntryNotFound", f"{rel} does not exist on \"{revision}\"",
                        extra={"X-Repo-Commit": hub.commit})
            return
        info = hub.file_info(rel)
        size = info.size
        start, end = 0, size - 1
        status = 200
        rng = self.headers.get("Range")
        if rng is not None:
            m = _RANGE.fullmatch(rng.strip())
            if not m or int(m[1]) >= size:
                self._error(head, 416, None, "Range Not Satisfiable", extra={"Content-Range": f"bytes */{size}"})
                return
            start = int(m[1])
            end = min(int(m[2]), size - 1) if m[2] else size - 1
            status = 206

        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(end - start + 1))
        self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("X-Repo-Commit", hub.commit)
        # An LFS file's ETag on the Hub is its quoted sha256; X-Linked-* describe the LFS object.
        self.send_header("ETag", f'"{info.sha256}"')
        self.send_header("X-Linked-Etag", f'"{info.sha256}"')
        self.send_header("X-Linked-Size", str(size))
        self.end_headers()
        if head:
            return

        limit = end - start + 1
        cut = hub._take_cut(rel)
        if cut is not None:
            limit = min(limit, cut)
        with open(p, "rb") as f:
            f.seek(start)
            while limit > 0:
                chunk = f.read(min(CHUNK, limit))
                if not chunk:
                    break
                self.wfile.write(chunk)
                limit -= len(chunk)
        if cut is not None:
            # Fewer bytes than Content-Length, then close: the body is cut off mid-stream.
            self.wfile.flush()
            self.close_connection = True

    # --- /api/.../tree -------------------------------------------------------------------------------------

    def _tree(self, head: bool, repo: str, revision: str, rel: str, query: dict) -> None:
        if not self._check_repo(head, repo, revision):
            return
        recursive = query.get("recursive", ["false"])[0].lower() in ("1", "true")
        base = self._repo_file(rel) if rel else self.server.hub.root.resolve()
        if base is None or not base.is_dir():
            self._error(head, 404, "EntryNotFound", f"{rel} does not exist on \"{revision}\"")
            return
        children = base.rglob("*") if recursive else base.iterdir()
        root = self.server.hub.root.resolve()
        entries = []
        for p in sorted(children):
            if (p.is_dir() or p.is_file()) and (entry := self._entry(p)) is not None:
                entries.append(entry)
        self._json(head, 200, entries)

    # --- /api/datasets/<repo>[/revision/<rev>] and paths-info (what `datasets` asks) ------------------------

    def _entry(self, p: Path) -> dict | None:
        """The tree / paths-info entry of `p` (a file or folder of the served repo), None for a hidden one."""
        root = self.server.hub.root.resolve()
        key = p.relative_to(root).as_posix()
        if any(part.startswith(".") for part in p.relative_to(root).parts):
            return None
        if p.is_dir():
            # A tree's git oid; any stable 40-hex value serves the client.
            return {"type": "directory", "oid": hashlib.sha1(key.encode()).hexdigest(), "path": key}
        info = self.server.hub.file_info(key)
        return {"type": "file", "oid": info.blob_oid, "size": info.size, "path": key,
                "lfs": {"oid": info.sha256, "size": info.size, "pointerSize": info.pointer_size}}

    def _info(self, head: bool, repo: str, revision: str) -> None:
        """`HfApi.dataset_info`: the commit a revision resolves to and the repo's files (`siblings`)."""
        hub = self.server.hub
        if not self._check_repo(head, repo, revision):
            return
        root = hub.root.resolve()
        siblings = []
        for p in sorted(root.rglob("*")):
            entry = self._entry(p) if p.is_file() else None
            if entry is not None:
                siblings.append({"rfilename": entry["path"], "size": entry["size"], "blobId": entry["oid"],
                                 "lfs": {"sha256": entry["lfs"]["oid"], "size": entry["size"],
                                         "pointerSize": entry["lfs"]["pointerSize"]}})
        self._json(head, 200, {"id": repo, "sha": hub.commit, "private": False, "gated": False,
                               "disabled": False, "siblings": siblings})

    def _paths_info(self, repo: str, revision: str, paths: list[str]) -> None:
        if not self._check_repo(False, repo, revision):
            return
        entries = []
        for rel in paths:
            p = self._repo_file(rel.strip("/"))
            if p is not None and p.exists() and (entry := self._entry(p)) is not None:
                entries.append(entry)
        self._json(False, 200, entries)

    # --- responses -------------------------------------------------------------------------------------------

    def _json(self, head: bool, status: int, obj, extra: dict[str, str] | None = None) -> None:
        body = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _error(self, head: bool, status: int, code: str | None, message: str,
               extra: dict[str, str] | None = None) -> None:
        headers = dict(extra or {})
        if code is not None:
            headers["X-Error-Code"] = code
        headers["X-Error-Message"] = message
        self._json(head, status, {"error": message}, headers)
