"""Hugging Face Hub access for the corpus: list a dataset config's files, download one resumably; for an
`hf-dataset:` source (gpt2train/data/hf_dataset.py, which streams through `datasets`), resolve a revision
to its commit and look up a file's size and sha256 without downloading it.

This is the real download path (`huggingface_hub`), used unchanged in tests against a local
server: `huggingface_hub` sends every request to `HF_ENDPOINT`, so tests serve a folder
with the Hub's URL layout (`/datasets/<repo>/resolve/<revision>/<path>`, range requests)
and exercise listing, download, interruption and resume for real (tests/hub_server.py).

Downloads land in `<data_dir>/corpus/hub/<repo>/<path>`. A plain HTTP download goes to a partial
file `<local_dir>/.cache/huggingface/download/<path>.<etag>.incomplete` that a later call (after a
failure or a crash) resumes with an HTTP range request; the complete file is hashed once, checked
against the Hub's sha256 (an LFS file's etag), and its download metadata recorded as
`hf_hub_download(local_dir=...)` records it, so that `hf_hub_download` hands the file back without
hashing it again and the corpus record takes the same hash (`fetch_hub_file`: one hash per byte).
(`hf_hub_download` alone only resumes within one call: it deletes its partial file when it fails.)
Xet-backed files are left to `hf_hub_download`, whose Xet client does its own chunk-level caching.

What comes from the server is not trusted as a path: a listed file name (the partition key) must be
relative with no `..` (`check_repo_path`) and stay inside the download folder once symlinks are
followed, and an etag must be a plain token before it names the partial file. A mirror URL with
credentials in HF_ENDPOINT is shown masked in our errors and in huggingface_hub's own log lines.
"""

from __future__ import annotations

import errno
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from gpt2train.errors import DataError
from gpt2train.fileio import FileStamp, disk_full_error, file_stamp, hash_file

DEFAULT_ENDPOINT = "https://huggingface.co"


def endpoint() -> str:
    # Read at call time (huggingface_hub reads it at import), so tests and users can set it late.
    return os.environ.get("HF_ENDPOINT", DEFAULT_ENDPOINT).rstrip("/")


def shown_endpoint() -> str:
    """The endpoint for messages: a mirror URL may carry credentials (`https://user:token@host`),
    and messages end up in logs and Dagster's event log, so the user-info part is masked."""
    return re.sub(r"^([a-zA-Z][a-zA-Z0-9+.-]*://)[^/@]*@", r"\1***@", endpoint())


class _MaskEndpointCredentials(logging.Filter):
    """Masks the endpoint's credentials in huggingface_hub's own log records: its retry warnings quote
    the full request URL (`... thrown while requesting GET https://user:token@mirror/...`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = redact(message)
        if masked != message:
            record.msg, record.args = masked, None
        return True


_MASK = _MaskEndpointCredentials()


def mask_library_logs() -> None:
    """Put the mask on every huggingface_hub logger that exists now (a logger's filters only see the
    records logged to it, not its children's; the library's loggers exist once it is imported)."""
    for name in ["huggingface_hub", *logging.root.manager.loggerDict]:
        if name.startswith("huggingface_hub"):
            logger = logging.getLogger(name)
            if _MASK not in logger.filters:
                logger.addFilter(_MASK)


def redact(text: str) -> str:
    """`text` with the endpoint's credentials (if any) masked, e.g. an error that quotes a URL."""
    return text.replace(endpoint(), shown_endpoint())


def check_repo_path(path: str, what: str = "Hub file") -> str:
    """`path` (a name the Hub listed, or a partition key) as a path under the download folder:
    relative, '/'-separated, no `..`, `.` or empty segment, no backslash or NUL. A malicious or
    broken repo listing (`../../x.parquet`, `/etc/x.parquet`) is refused before anything is written."""
    parts = path.split("/")
    # An empty path and a leading `/` give an empty segment.
    if ("\\" in path or "\0" in path or re.match(r"^[A-Za-z]:", path)
            or any(part in ("", ".", "..") for part in parts)):
        raise DataError(f"{what} {path!r} is not a safe relative path (absolute, `..` or empty segments); "
                        f"refusing to write it under the download folder. Check corpus.dataset and "
                        f"HF_ENDPOINT: the repository or mirror lists a file name that would escape it")
    return path


def inside(root: Path, rel: str) -> Path:
    """root/rel, checked to stay inside root once resolved (symlinks followed)."""
    target = (root / check_repo_path(rel)).resolve()
    if not target.is_relative_to(root.resolve()):
        raise DataError(f"{root / rel} resolves to {target}, outside the download folder {root}; "
                        f"remove the symlink that leads there")
    return root / rel


def config_subdir(name: str) -> str:
    """FineWeb(-Edu) config name -> folder in the repo: `sample-10BT` -> `sample/10BT`."""
    if m := re.fullmatch(r"sample-(\d+BT)", name):
        return f"sample/{m[1]}"
    if name == "default":
        return "data"
    if re.fullmatch(r"CC-MAIN-\d{4}-\d{2}", name):
        return f"data/{name}"
    raise DataError(
        f"corpus.name={name!r} is not a FineWeb-Edu config; use sample-10BT, sample-100BT, sample-350BT, "
        f"default, or a dump such as CC-MAIN-2024-10"
    )


@dataclass(frozen=True)
class HubFile:
    path: str  # path inside the repo, e.g. sample/10BT/000_00000.parquet
    size: int | None


LOCAL_COPY_HINT = "a local copy with the Hub's layout (e.g. ../shared/data/edu-mini)"


def unreachable_error(what: str, repo: str, revision: str, err: Exception, local_copy: str = LOCAL_COPY_HINT
                      ) -> DataError:
    return DataError(
        f"cannot reach the Hugging Face Hub at {shown_endpoint()} to {what} {repo}@{revision} "
        f"({type(err).__name__}: {redact(str(err))}). Connect to the internet, set HF_ENDPOINT to a reachable "
        f"mirror, or set corpus.source to {local_copy}."
    )


def _http_status(err: Exception) -> int | None:
    return getattr(getattr(err, "response", None), "status_code", None)


def list_hub_files(repo: str, name: str, revision: str) -> list[HubFile]:
    """The config's parquet files in the repo at `revision`, sorted by path (= source order)."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    mask_library_logs()
    subdir = config_subdir(name)
    api = HfApi(endpoint=endpoint())
    try:
        entries = list(api.list_repo_tree(repo, path_in_repo=subdir, repo_type="dataset",
                                          revision=revision, recursive=True))
    except (HfHubHTTPError, OfflineModeIsEnabled, OSError) as e:
        status = getattr(getattr(e, "response", None), "status_code", None)
        if status in (401, 403, 404):
            raise DataError(f"{repo}@{revision} has no folder {subdir!r} on {shown_endpoint()} (HTTP {status}); "
                            f"check corpus.dataset, corpus.name and corpus.revision") from e
        raise unreachable_error("list", repo, revision, e) from e
    except Exception as e:  # httpx transport errors surface unwrapped from some calls
        raise unreachable_error("list", repo, revision, e) from e
    files = sorted((HubFile(e.path, getattr(e, "size", None)) for e in entries
                    if e.path.endswith(".parquet") and hasattr(e, "size")), key=lambda f: f.path)
    if not files:
        raise DataError(f"{repo}@{revision}: no .parquet files under {subdir!r}; check corpus.name")
    for f in files:  # listed names become partition keys and download paths
        check_repo_path(f.path, f"{repo}@{revision} on {shown_endpoint()} lists a file")
    return files


def resolve_dataset_commit(repo: str, revision: str, local_copy: str = LOCAL_COPY_HINT) -> str:
    """The commit sha that `revision` (branch, tag or sha) of dataset `repo` points at now: one request.
    Whatever is read afterwards is read at this commit, so a branch that moves meanwhile cannot mix versions."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    mask_library_logs()
    try:
        sha = HfApi(endpoint=endpoint()).dataset_info(repo, revision=revision).sha
    except HfHubHTTPError as e:
        if _http_status(e) in (401, 403, 404):
            raise DataError(f"{repo}@{revision} is not a dataset revision on {shown_endpoint()} (HTTP "
                            f"{_http_status(e)}); check the repo id in corpus.source and corpus.revision") from e
        raise unreachable_error("resolve", repo, revision, e, local_copy) from e
    except Exception as e:  # offline mode, httpx transport errors
        raise unreachable_error("resolve", repo, revision, e, local_copy) from e
    if not sha or not re.fullmatch(r"[0-9a-f]{40}", sha):
        raise DataError(f"{shown_endpoint()} resolved {repo}@{revision} to {sha!r}, not a commit sha; "
                        f"check HF_ENDPOINT")
    return sha


def dataset_file_info(repo: str, path: str, commit: str) -> dict:
    """Size and content hash of one file of dataset `repo` at `commit`, without downloading it: the LFS
    sha256 (what `sha256sum` of the downloaded file prints) or, for a file kept in git itself, its git blob id."""
    from huggingface_hub import HfApi

    mask_library_logs()
    try:
        (entry,) = HfApi(endpoint=endpoint()).get_paths_info(repo, [path], revision=commit, repo_type="dataset")
    except ValueError as e:  # no entry: the listing and the repo disagree
        raise DataError(f"{repo}@{commit} on {shown_endpoint()} has no file {path!r}; list the dataset again") from e
    except Exception as e:
        raise unreachable_error(f"look up {path} in", repo, commit, e) from e
    lfs = getattr(entry, "lfs", None)
    return {"size": getattr(entry, "size", None), "sha256": lfs.sha256 if lfs else None,
            "git_blob_id": None if lfs else getattr(entry, "blob_id", None)}


@dataclass(frozen=True)
class FetchedHubFile:
    """A Hub file on local disk."""

    local: Path
    commit: str | None        # the commit sha it came from
    sha256: str | None = None  # when this call downloaded it: its hash, equal to the Hub's LFS sha256
    stamp: FileStamp | None = None  # the file's stamp (gpt2train/fileio.py) with that hash


def download_hub_file(repo: str, path: str, revision: str, local_dir: Path) -> tuple[Path, str | None]:
    """Download (or resume, or reuse) one file; returns (local path, commit sha it came from)."""
    got = fetch_hub_file(repo, path, revision, local_dir)
    return got.local, got.commit


def fetch_hub_file(repo: str, path: str, revision: str, local_dir: Path) -> FetchedHubFile:
    """Download (or resume, or reuse) one file; with its sha256 and stamp when this call downloaded it."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url
    from huggingface_hub.errors import HfHubHTTPError

    inside(local_dir, path)  # before any request: the path may come from a partition key
    mask_library_logs()
    try:
        meta = get_hf_file_metadata(hf_hub_url(repo, path, repo_type="dataset", revision=revision,
                                               endpoint=endpoint()))
        # Download from the resolved commit, so a branch that moves mid-run cannot mix versions.
        revision_used = meta.commit_hash or revision
        hashed = None
        if not (local_dir / path).is_file() and getattr(meta, "xet_file_data", None) is None and meta.etag:
            hashed = _download_resumable(hf_hub_url(repo, path, repo_type="dataset", revision=revision_used,
                                                    endpoint=endpoint()), meta.etag, meta.size, local_dir, path,
                                         meta.commit_hash)
        local = hf_hub_download(repo, path, repo_type="dataset", revision=revision_used,
                                local_dir=local_dir, endpoint=endpoint())
    except DataError:
        raise
    except Exception as e:
        if isinstance(e, OSError) and e.errno == errno.ENOSPC:
            raise disk_full_error(local_dir / path) from e
        status = getattr(getattr(e, "response", None), "status_code", None)
        if isinstance(e, HfHubHTTPError) and status in (401, 403, 404):
            # The Hub answered: the file (or repo, or revision) is not there, which no retry or mirror fixes.
            raise DataError(f"{repo}@{revision} has no file {path!r} on {shown_endpoint()} (HTTP {status}); "
                            f"check corpus.dataset, corpus.name and corpus.revision, or remove the partition "
                            f"if the file was deleted upstream") from e
        local = local_dir / path
        if local.is_file():
            # Offline but downloaded before: hf_hub_download only writes the final name once the
            # size matched, so a file under this name is complete. Its commit is in the metadata
            # hf_hub_download recorded next to it; a pinned revision it does not match is refused.
            from huggingface_hub._local_folder import read_download_metadata

            meta_local = read_download_metadata(local_dir, path)
            commit = meta_local.commit_hash if meta_local else None
            if re.fullmatch(r"[0-9a-f]{40}", revision) and commit and commit != revision:
                raise DataError(f"{local} was downloaded from commit {commit}, but corpus.revision pins {revision} "
                                f"and the Hub is unreachable ({type(e).__name__}); connect, or set "
                                f"corpus.revision={commit}") from e
            return FetchedHubFile(local, commit)
        raise unreachable_error(f"download {path} from", repo, revision, e) from e
    if hashed is not None and file_stamp(local) == hashed[1]:  # hf_hub_download handed back the file we hashed
        return FetchedHubFile(Path(local), meta.commit_hash, *hashed)
    return FetchedHubFile(Path(local), meta.commit_hash)


def _download_resumable(url: str, etag: str, size: int | None, local_dir: Path, path: str,
                        commit: str | None) -> tuple[str, FileStamp] | None:
    """Download `url` to `local_dir/path` through a partial file that survives a failed call; returns the
    file's (sha256, stamp) when it was hashed here (an LFS file, whose etag is its sha256).

    The partial file is named after the etag, so bytes of another version are never resumed; the
    library's `http_get` does the HTTP (range request, in-call retries, size check). A file checked here
    against its sha256 gets the download metadata `hf_hub_download` would write after hashing it itself
    (its commit and etag): it then hands the file back as it is, without a second hash.
    """
    from huggingface_hub._local_folder import write_download_metadata
    from huggingface_hub.file_download import http_get
    from huggingface_hub.utils import WeakFileLock, build_hf_headers

    final = local_dir / path  # checked by the caller, download_hub_file, before any request
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", etag) or etag.strip(".") == "":
        # The etag comes from the server and names the partial file: it must stay one file name.
        raise DataError(f"{shown_endpoint()} sent the etag {etag[:80]!r} for {path}, which is not a plain "
                        f"token; refusing to use it in a file name. Check HF_ENDPOINT")
    part = local_dir / ".cache" / "huggingface" / "download" / f"{path}.{etag}.incomplete"
    part.parent.mkdir(parents=True, exist_ok=True)
    with WeakFileLock(part.with_name(part.name + ".lock")):
        if final.is_file():  # another process finished it while we waited for the lock
            return None
        resume = part.stat().st_size if part.is_file() else 0
        if size is not None and resume > size:  # not a prefix of this file: start over
            part.unlink()
            resume = 0
        with open(part, "ab") as f:
            http_get(url, f, resume_size=resume, headers=build_hf_headers(), expected_size=size)
        hashed = None
        if re.fullmatch(r"[0-9a-f]{64}", etag):
            sha256, stamp = hash_file(part)
            if sha256 != etag:
                # An LFS file's etag is its sha256: a mismatch means the partial bytes were bad.
                part.unlink()
                raise DataError(f"{redact(url)}: downloaded bytes do not match the Hub's sha256 {etag}; run again "
                                f"to download the file afresh")
            hashed = (sha256, stamp)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(part, final)
        if hashed is None or hashed[1] is None:
            return None
        moved = file_stamp(final)  # the rename gave it a new ctime; size, mtime and inode are the hashed file's
        if moved is None or (moved.size, moved.mtime_ns, moved.inode) != (stamp.size, stamp.mtime_ns, stamp.inode):
            return None
        if commit:
            write_download_metadata(local_dir, path, commit, etag)
        return sha256, moved
