"""Hugging Face Hub access for the corpus: list a dataset config's files, download one resumably.

This is the real download path (`huggingface_hub`), used unchanged in tests against a local
server: `huggingface_hub` sends every request to `HF_ENDPOINT`, so tests serve a folder
with the Hub's URL layout (`/datasets/<repo>/resolve/<revision>/<path>`, range requests)
and exercise listing, download, interruption and resume for real (tests/hub_server.py).

Downloads land in `<data_dir>/corpus/hub/<repo>/<path>` through `hf_hub_download(local_dir=...)`,
which keeps a partial file under `.cache/huggingface/download/` and resumes it with an HTTP
range request when the download is retried, after a crash as well.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from gpt2train.errors import DataError

DEFAULT_ENDPOINT = "https://huggingface.co"


def endpoint() -> str:
    # Read at call time (huggingface_hub reads it at import), so tests and users can set it late.
    return os.environ.get("HF_ENDPOINT", DEFAULT_ENDPOINT).rstrip("/")


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


def _unreachable(what: str, repo: str, revision: str, err: Exception) -> DataError:
    return DataError(
        f"cannot reach the Hugging Face Hub at {endpoint()} to {what} {repo}@{revision} "
        f"({type(err).__name__}: {err}). Connect to the internet, set HF_ENDPOINT to a reachable mirror, "
        f"or set corpus.source to a local copy with the Hub's layout (e.g. ../shared/data/edu-mini)."
    )


def list_hub_files(repo: str, name: str, revision: str) -> list[HubFile]:
    """The config's parquet files in the repo at `revision`, sorted by path (= source order)."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    subdir = config_subdir(name)
    api = HfApi(endpoint=endpoint())
    try:
        entries = list(api.list_repo_tree(repo, path_in_repo=subdir, repo_type="dataset",
                                          revision=revision, recursive=True))
    except (HfHubHTTPError, OfflineModeIsEnabled, OSError) as e:
        status = getattr(getattr(e, "response", None), "status_code", None)
        if status in (401, 403, 404):
            raise DataError(f"{repo}@{revision} has no folder {subdir!r} on {endpoint()} (HTTP {status}); "
                            f"check corpus.dataset, corpus.name and corpus.revision") from e
        raise _unreachable("list", repo, revision, e) from e
    except Exception as e:  # httpx transport errors surface unwrapped from some calls
        raise _unreachable("list", repo, revision, e) from e
    files = sorted((HubFile(e.path, getattr(e, "size", None)) for e in entries
                    if e.path.endswith(".parquet") and hasattr(e, "size")), key=lambda f: f.path)
    if not files:
        raise DataError(f"{repo}@{revision}: no .parquet files under {subdir!r}; check corpus.name")
    return files


def download_hub_file(repo: str, path: str, revision: str, local_dir: Path) -> tuple[Path, str | None]:
    """Download (or resume, or reuse) one file; returns (local path, commit sha it came from)."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url

    try:
        meta = get_hf_file_metadata(hf_hub_url(repo, path, repo_type="dataset", revision=revision,
                                               endpoint=endpoint()))
        # Download from the resolved commit, so a branch that moves mid-run cannot mix versions.
        revision_used = meta.commit_hash or revision
        local = hf_hub_download(repo, path, repo_type="dataset", revision=revision_used,
                                local_dir=local_dir, endpoint=endpoint())
    except Exception as e:
        local = local_dir / path
        if local.is_file():
            # Offline but downloaded before: hf_hub_download only writes the final name once the
            # size matched, so a file under this name is complete.
            return local, None
        raise _unreachable(f"download {path} from", repo, revision, e) from e
    return Path(local), meta.commit_hash
