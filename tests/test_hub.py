"""The Hub download path, for real, against a local Hub (tests/hub_server.py).

Nothing here fakes `huggingface_hub`: `gpt2train.data.hub` / `gpt2train.data.corpus` call the installed
library, which talks HTTP to a server on 127.0.0.1 serving ../shared/data/edu-mini as
`HuggingFaceFW/fineweb-edu`. Patched in the library: only the waiting in its retry loops (retries
happen at once instead of after 1-8 s sleeps), and its import-time copies of HF_HOME & co. (so no
user cache or token is touched).

`huggingface_hub.file_download.http_get` reads the body in 10 MiB chunks and writes only whole
chunks, so a cut-off download can only resume past a 10 MiB boundary: the interruption tests use
a ~22 MB parquet file (the real FineWeb-Edu files are ~2 GB); the edu-mini files are ~1-2 MB.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from huggingface_hub import constants as hf_constants

from gpt2train.data import hub
from gpt2train.data.corpus import fetch_source_file, list_source_files
from gpt2train.errors import DataError
from tests.fixtures.hub import BIG_KEY, hub_cfg
from tests.hub_server import COMMIT_SHA, REPO_ID
from tests.paths import REPO

KEYS = ["sample/10BT/000_00000.parquet", "sample/10BT/001_00000.parquet", "sample/10BT/002_00000.parquet"]
HTTP_CHUNK = hf_constants.DOWNLOAD_CHUNK_SIZE  # http_get writes whole chunks of this size (10 MiB)


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# --- listing -------------------------------------------------------------------------------------------


def test_lists_the_config_files_sorted_with_sizes(hub_server, edu_mini, tmp_path):
    files = hub.list_hub_files(REPO_ID, "sample-10BT", "main")
    assert [f.path for f in files] == KEYS
    assert [f.size for f in files] == [(edu_mini / k).stat().st_size for k in KEYS]
    # One tree request, recursive, for the config's folder.
    (req,) = hub_server.requests
    assert (req.method, req.path) == ("GET", f"/api/datasets/{REPO_ID}/tree/main/sample/10BT")
    assert "recursive=true" in req.query

    sources = list_source_files(hub_cfg(tmp_path, files=2).corpus)
    assert [s.key for s in sources] == KEYS[:2]
    assert all(s.local_path is None for s in sources)  # not downloaded by listing


# --- download ------------------------------------------------------------------------------------------


def test_download_lands_in_data_dir_with_lineage(hub_server, edu_mini, tmp_path):
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    cfg = hub_cfg(tmp_path / "data")
    key = KEYS[1]
    record = fetch_source_file(cfg.corpus, key, Path(cfg.data_dir))

    expected = tmp_path / "data" / "corpus" / "hub" / "HuggingFaceFW" / "fineweb-edu" / key
    assert Path(record.local_path) == expected and expected.is_file()
    assert record.sha256 == sha256(edu_mini / key) == sha256(expected)
    assert record.bytes == (edu_mini / key).stat().st_size
    assert (record.source, record.repo, record.revision) == ("hub", REPO_ID, COMMIT_SHA)
    assert record.documents == pq.ParquetFile(edu_mini / key).metadata.num_rows

    # Plain HTTP, not Xet: the server sends no Xet headers, and nothing asked for a Xet token.
    meta = get_hf_file_metadata(hf_hub_url(REPO_ID, key, repo_type="dataset", endpoint=hub_server.url))
    assert meta.xet_file_data is None and meta.etag == record.sha256
    assert not [r for r in hub_server.requests if "xet" in r.path.lower()]
    # The body was fetched once, at the commit the branch resolved to.
    (get,) = hub_server.gets(key)
    assert f"/resolve/{COMMIT_SHA}/" in get.path and get.range is None

    # Fetching again reuses the file: no second GET of the body.
    again = fetch_source_file(cfg.corpus, key, Path(cfg.data_dir))
    assert again.sha256 == record.sha256 and again.revision == COMMIT_SHA
    assert len(hub_server.gets(key)) == 1


def test_cut_off_download_resumes_within_the_call(big_hub, big_mirror, tmp_path, hf_isolated):
    size = big_hub.file_info(BIG_KEY).size
    cut = size // 2  # past the first 10 MiB chunk, which is written before the cut
    big_hub.cut_gets(BIG_KEY, after_bytes=cut, times=1)

    local, commit = hub.download_hub_file(REPO_ID, BIG_KEY, "main", tmp_path / "dl")

    first, second = big_hub.gets(BIG_KEY)
    assert first.range is None
    k = int(re.fullmatch(r"bytes=(\d+)-", second.range)[1])
    assert 0 < k <= cut  # resumed from the bytes it had, not from scratch
    assert local.read_bytes() == (big_mirror / BIG_KEY).read_bytes()
    assert commit == COMMIT_SHA
    assert hf_isolated.slept  # the library's own retry did the resuming


def test_failed_download_is_resumed_by_the_next_call(big_hub, big_mirror, tmp_path):
    from huggingface_hub import close_session

    size = big_hub.file_info(BIG_KEY).size
    local_dir = tmp_path / "dl"
    # The body is cut halfway and then the Hub is gone: the library's retries fail, the call fails.
    big_hub.cut_gets(BIG_KEY, after_bytes=size // 2, times=1, then_refuse=True)
    with pytest.raises(DataError, match="cannot reach the Hugging Face Hub"):
        hub.download_hub_file(REPO_ID, BIG_KEY, "main", local_dir)
    assert not (local_dir / BIG_KEY).exists()
    (partial,) = (local_dir / ".cache" / "huggingface" / "download").rglob("*.incomplete")
    k = partial.stat().st_size
    assert 0 < k < size

    # The Hub is back; a fresh call (nothing carried over in memory, not even a connection) resumes.
    close_session()
    big_hub.refuse = False
    n_before = len(big_hub.gets(BIG_KEY))
    local, commit = hub.download_hub_file(REPO_ID, BIG_KEY, "main", local_dir)

    resumed = big_hub.gets(BIG_KEY)[n_before:]
    assert [r.range for r in resumed] == [f"bytes={k}-"]
    assert local.read_bytes() == (big_mirror / BIG_KEY).read_bytes()
    assert commit == COMMIT_SHA
    assert not partial.exists()


def test_download_killed_mid_file_is_resumed_by_another_process(big_hub, big_mirror, tmp_path):
    size = big_hub.file_info(BIG_KEY).size
    local_dir = tmp_path / "dl"
    partial = (local_dir / ".cache" / "huggingface" / "download"
               / f"{BIG_KEY}.{big_hub.file_info(BIG_KEY).sha256}.incomplete")
    # Cut the body halfway, then hold the Hub down so the child only retries until it is killed.
    big_hub.cut_gets(BIG_KEY, after_bytes=size // 2, times=1, then_refuse=True)
    env = {**os.environ, "HF_HUB_DISABLE_PROGRESS_BARS": "1"}  # HF_ENDPOINT, HF_HOME: set by the fixtures
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys; from pathlib import Path; from gpt2train.data import hub; "
                               "hub.download_hub_file(sys.argv[1], sys.argv[2], 'main', Path(sys.argv[3]))",
         REPO_ID, BIG_KEY, str(local_dir)],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not (partial.is_file() and partial.stat().st_size >= HTTP_CHUNK):
            assert child.poll() is None, "the download process ended before it was killed"
            assert time.monotonic() < deadline, "no partial file appeared"
            time.sleep(0.02)
    finally:
        child.kill()  # a crash: no cleanup code runs in the child
        child.wait()
    k = partial.stat().st_size
    assert 0 < k < size and not (local_dir / BIG_KEY).exists()

    big_hub.refuse = False
    n_before = len(big_hub.gets(BIG_KEY))
    local, commit = hub.download_hub_file(REPO_ID, BIG_KEY, "main", local_dir)

    assert [r.range for r in big_hub.gets(BIG_KEY)[n_before:]] == [f"bytes={k}-"]
    assert local.read_bytes() == (big_mirror / BIG_KEY).read_bytes()
    assert commit == COMMIT_SHA and not partial.exists()


# --- failures ------------------------------------------------------------------------------------------


def test_unreachable_hub_without_local_copy_says_what_to_do(hub_server, tmp_path):
    url = hub_server.url
    hub_server.stop()  # nothing listens on the port any more
    cfg = hub_cfg(tmp_path / "data")

    with pytest.raises(DataError) as e:
        list_source_files(cfg.corpus)
    msg = str(e.value)
    assert url in msg and REPO_ID in msg and "corpus.source" in msg

    with pytest.raises(DataError) as e:
        fetch_source_file(cfg.corpus, KEYS[0], Path(cfg.data_dir))
    msg = str(e.value)
    assert url in msg and KEYS[0] in msg and REPO_ID in msg and "corpus.source" in msg


def test_complete_download_is_used_when_the_hub_is_unreachable(hub_server, edu_mini, tmp_path):
    cfg = hub_cfg(tmp_path / "data")
    online = fetch_source_file(cfg.corpus, KEYS[0], Path(cfg.data_dir))
    hub_server.stop()

    offline = fetch_source_file(cfg.corpus, KEYS[0], Path(cfg.data_dir))
    assert offline.local_path == online.local_path
    assert offline.sha256 == online.sha256 == sha256(edu_mini / KEYS[0])
    # the commit comes from the metadata hf_hub_download recorded with the file
    assert offline.revision == online.revision != "main"


def test_hub_that_drops_connections_is_reported_as_unreachable(hub_server, tmp_path):
    hub_server.refuse = True
    with pytest.raises(DataError, match="cannot reach the Hugging Face Hub"):
        fetch_source_file(hub_cfg(tmp_path).corpus, KEYS[0], tmp_path)


@pytest.mark.parametrize("corpus", [
    {"name": "sample-100BT"},  # a FineWeb config this repo (the mirror) does not have
    {"revision": "no-such-branch"},
    {"dataset": "HuggingFaceFW/fineweb-edu-typo"},
])
def test_missing_folder_revision_or_repo_says_check_the_config(hub_server, tmp_path, corpus):
    with pytest.raises(DataError, match=r"check corpus\.dataset, corpus\.name and corpus\.revision"):
        list_source_files(hub_cfg(tmp_path, **corpus).corpus)


def test_unknown_config_name_says_check_corpus_name(hub_server, tmp_path):
    with pytest.raises(DataError, match=r"corpus\.name='sample10BT' is not a FineWeb-Edu config"):
        list_source_files(hub_cfg(tmp_path, name="sample10BT").corpus)
    assert hub_server.requests == []  # rejected before asking the Hub


def test_file_missing_on_the_hub_is_not_reported_as_unreachable(hub_server, tmp_path):
    with pytest.raises(DataError, match=r"has no file 'sample/10BT/999_00000.parquet'.*HTTP 404"):
        fetch_source_file(hub_cfg(tmp_path).corpus, "sample/10BT/999_00000.parquet", tmp_path)
