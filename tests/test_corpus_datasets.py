"""`corpus.source: hf-dataset:<repo>[:<config>]`: any Hugging Face dataset, streamed through `datasets`.

For real, offline: `datasets` (unpatched) talks HTTP to the local Hub of tests/hub_server.py, serving a
copy of ../shared/data/edu-mini with a README.md whose `configs:` YAML is what FineWeb-Edu's own card
says (`sample-10BT` = `sample/10BT/*`), and reads local dataset folders made the same way. The shards
must be byte-for-byte those of the pyarrow path (gpt2train/data/corpus.py) for the same documents.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gpt2train.config import load_config
from gpt2train.data.corpus import fetch_source_file, list_source_files
from gpt2train.data.stage import materialize_corpus_file, materialize_token_shards, prepare
from gpt2train.errors import ConfigError, DataError
from gpt2train.layout import shards_dir
from tests.hub_server import COMMIT_SHA, REPO_ID, HubServer

KEYS = ["sample/10BT/000_00000.parquet", "sample/10BT/001_00000.parquet", "sample/10BT/002_00000.parquet"]
CARD = """---
configs:
- config_name: sample-10BT
  data_files:
  - split: train
    path: sample/10BT/*
- config_name: code
  data_files:
  - split: train
    path: code/*.jsonl
---
# A FineWeb-Edu-shaped test dataset
"""
SMALL = ["corpus.max_documents_per_file=40", "shards.shard_size=60000"]  # 4 shards per file, as tiny_shards


def _docs(path: Path, n: int) -> list[str]:
    return pq.read_table(path, columns=["text"]).column("text").to_pylist()[:n]


@pytest.fixture(scope="module")
def edu_repo(tmp_path_factory, edu_mini) -> Path:
    """edu-mini's three files, a dataset card with two configs, and `code/`: two .jsonl files whose
    documents (edu-mini's first ones) are under `content`, with an `id` beside them."""
    root = tmp_path_factory.mktemp("edu-repo")
    (root / "sample" / "10BT").mkdir(parents=True)
    for key in KEYS:
        shutil.copyfile(edu_mini / key, root / key)
    (root / "README.md").write_text(CARD)
    (root / "code").mkdir()
    texts = _docs(edu_mini / KEYS[0], 30)
    for i, part in enumerate((texts[:18], texts[18:])):
        with open(root / "code" / f"part-{i}.jsonl", "w") as f:
            for j, text in enumerate(part):
                f.write(json.dumps({"id": f"{i}-{j}", "content": text}) + "\n")
    return root


@pytest.fixture
def datasets_online(hf_isolated, monkeypatch):
    """`datasets` online too: it read HF_HUB_OFFLINE / HF_DATASETS_OFFLINE when first imported, and the
    tests' environment sets them for the whole session (tests/fixtures/environment.py)."""
    import datasets.config

    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", False)


@pytest.fixture
def hub(edu_repo, datasets_online, monkeypatch):
    server = HubServer(edu_repo).start()
    monkeypatch.setenv("HF_ENDPOINT", server.url)  # read at call time (gpt2train/data/hf_dataset.py)
    yield server
    server.stop()


def cfg_for(tmp_path: Path, name: str, source: str, *overrides: str):
    return load_config("tiny", [f"data_dir={tmp_path / name}", f"corpus.source={source}", *SMALL, *overrides])


def shard_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.bin"))}


def data_file_gets(server: HubServer) -> list:
    return [r for r in server.requests if r.method == "GET" and "/resolve/" in r.path
            and r.path.endswith((".parquet", ".jsonl"))]


# --- listing: one partition per data file of the config ------------------------------------------------------


def test_lists_one_partition_per_data_file_of_the_config(hub, tmp_path, instance):
    from assets.partitions import unregistered_source_files

    cfg = cfg_for(tmp_path, "d", f"hf-dataset:{REPO_ID}:sample-10BT")
    assert [f.key for f in list_source_files(cfg.corpus)] == KEYS
    assert all(f.local_path is None for f in list_source_files(cfg.corpus))  # nothing fetched by listing
    # The Dagster partitions are those keys: one per data file, so a new file stales only its own.
    assert unregistered_source_files(cfg, instance) == (KEYS, KEYS)
    instance.add_dynamic_partitions("corpus_files", KEYS[:2])
    assert unregistered_source_files(cfg, instance) == (KEYS, KEYS[2:])

    code = cfg_for(tmp_path, "d", f"hf-dataset:{REPO_ID}:code")
    assert [f.key for f in list_source_files(code.corpus)] == ["code/part-0.jsonl", "code/part-1.jsonl"]
    two = cfg_for(tmp_path, "d", f"hf-dataset:{REPO_ID}:sample-10BT", "corpus.files=2")
    assert [f.key for f in list_source_files(two.corpus)] == KEYS[:2]
    # Listed at the commit the branch resolved to, and no data file read.
    assert any(r.path == f"/api/datasets/{REPO_ID}/revision/main" for r in hub.requests)
    assert not data_file_gets(hub)


def test_local_folder_lists_its_configs_files(edu_repo, tmp_path):
    cfg = cfg_for(tmp_path, "d", f"hf-dataset:{edu_repo}:sample-10BT")
    assert [f.key for f in list_source_files(cfg.corpus)] == KEYS
    # No card: datasets' own default patterns, every data file of the folder's one format.
    plain = tmp_path / "plain"
    shutil.copytree(edu_repo / "sample", plain / "sample")
    assert [f.key for f in list_source_files(cfg_for(tmp_path, "d", f"hf-dataset:{plain}").corpus)] == KEYS


# --- the shards equal those of the pyarrow path ----------------------------------------------------------------


def test_streamed_hub_shards_equal_the_pyarrow_shards(hub, edu_mini, tmp_path):
    ours = prepare(cfg_for(tmp_path, "stream", f"hf-dataset:{REPO_ID}:sample-10BT"), progress=False)
    pyarrow = prepare(cfg_for(tmp_path, "pyarrow", str(edu_mini)), progress=False)
    assert len(ours.shards) == 12 and shard_bytes(ours.out_dir) == shard_bytes(pyarrow.out_dir)

    # Streamed, not downloaded: every read of a data file was a range request, and no data file is on disk.
    gets = data_file_gets(hub)
    assert {g.path.rsplit("/", 3)[-1] for g in gets} == {Path(k).name for k in KEYS}
    assert all(g.range and f"/resolve/{COMMIT_SHA}/" in g.path for g in gets)
    assert not [p for p in (tmp_path / "stream").rglob("*") if p.suffix in (".parquet", ".jsonl")]


def test_local_folder_partitions_equal_the_pyarrow_partitions(edu_repo, tmp_path):
    ours = cfg_for(tmp_path, "ours", f"hf-dataset:{edu_repo}:sample-10BT")
    pyarrow = cfg_for(tmp_path, "pyarrow", str(edu_repo))  # a mirror: corpus.name's sub-folder, the same keys
    assert [f.key for f in list_source_files(pyarrow.corpus)] == KEYS
    for cfg in (ours, pyarrow):
        for key in KEYS:
            materialize_corpus_file(cfg, key)
            materialize_token_shards(cfg, key, progress=False)
    a = shard_bytes(shards_dir(ours.data_dir))
    assert len(a) == 13 and a == shard_bytes(shards_dir(pyarrow.data_dir))  # val + 4 train shards per file


def test_content_column_through_text_field(hub, edu_repo, tmp_path):
    ours = prepare(cfg_for(tmp_path, "ours", f"hf-dataset:{REPO_ID}:code", "corpus.text_field=content"),
                   progress=False)
    pyarrow = prepare(cfg_for(tmp_path, "pyarrow", str(edu_repo / "code"), "corpus.text_field=content"),
                      progress=False)
    assert ours.documents == 30 and shard_bytes(ours.out_dir) == shard_bytes(pyarrow.out_dir)
    assert all(g.range for g in data_file_gets(hub))


# --- lineage ---------------------------------------------------------------------------------------------------


def test_lineage_records_the_commit_config_and_data_file(hub, edu_repo, tmp_path):
    cfg = cfg_for(tmp_path, "d", f"hf-dataset:{REPO_ID}:sample-10BT")
    key = KEYS[1]
    record = materialize_corpus_file(cfg, key)
    assert (record.source, record.repo, record.revision, record.key) == ("hf-dataset", REPO_ID, COMMIT_SHA, key)
    assert record.documents == 40

    descriptor = Path(record.local_path)
    assert descriptor == tmp_path / "d" / "corpus" / "hf-dataset" / REPO_ID / f"{key}.json"
    assert record.sha256 == hashlib.sha256(descriptor.read_bytes()).hexdigest()  # what the data version hashes
    d = json.loads(descriptor.read_text())
    assert (d["dataset"], d["config"], d["split"], d["commit"]) == (REPO_ID, "sample-10BT", "train", COMMIT_SHA)
    raw = (edu_repo / key).read_bytes()
    assert d["data_file"] == {"path": key, "uri": f"hf://datasets/{REPO_ID}@{COMMIT_SHA}/{key}", "size": len(raw),
                              "sha256": hashlib.sha256(raw).hexdigest(), "git_blob_id": None}
    h = hashlib.sha256()
    for text in _docs(edu_repo / key, 40):
        h.update(len(text.encode()).to_bytes(8, "little") + text.encode())
    assert (d["documents"], d["documents_sha256"], d["text_field"]) == (40, h.hexdigest(), "text")

    # Made again from the same documents, the descriptor is the same bytes: the shards stay fresh.
    assert materialize_corpus_file(cfg, key).sha256 == record.sha256
    # Another text selection is another data version.
    other = cfg_for(tmp_path, "d", f"hf-dataset:{REPO_ID}:sample-10BT", "corpus.max_documents_per_file=39")
    assert fetch_source_file(other.corpus, key, Path(other.data_dir)).sha256 != record.sha256


# --- what changes while it is read, or is not there ------------------------------------------------------------


def test_hub_documents_that_differ_from_the_record_are_refused(edu_repo, datasets_online, tmp_path, monkeypatch):
    cfg = cfg_for(tmp_path, "d", f"hf-dataset:{REPO_ID}:sample-10BT")
    key = KEYS[0]
    with HubServer(edu_repo) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        materialize_corpus_file(cfg, key)
    # A mirror that serves other bytes under the same commit: one document differs.
    other = tmp_path / "other-repo"
    shutil.copytree(edu_repo, other)
    texts = pq.read_table(other / key).column("text").to_pylist()
    texts[7] = texts[7] + " (edited)"
    pq.write_table(pa.table({"text": texts}), other / key)
    with HubServer(other) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        with pytest.raises(DataError, match=rf"{REPO_ID}@{COMMIT_SHA[:12]}/{key} changed while it was tokenized"):
            materialize_token_shards(cfg, key, progress=False)
    assert not list(shards_dir(cfg.data_dir).glob("*.bin"))  # nothing published


def test_local_file_changed_since_its_record_is_refused(edu_repo, tmp_path):
    folder = tmp_path / "ds"
    shutil.copytree(edu_repo / "sample", folder / "sample")
    cfg = cfg_for(tmp_path, "d", f"hf-dataset:{folder}")  # no card: datasets' `default` config
    materialize_corpus_file(cfg, KEYS[2])
    assert materialize_token_shards(cfg, KEYS[2], progress=False)["documents"] == 40
    with open(folder / KEYS[2], "ab") as f:
        f.write(b"\0")
    with pytest.raises(DataError, match=r"changed since its corpus record was made.*fetch source file "
                                        r"'sample/10BT/002_00000.parquet' again to rewrite its record"):
        materialize_token_shards(cfg, KEYS[2], progress=False)
    (folder / KEYS[1]).unlink()
    with pytest.raises(DataError, match=r"source file 'sample/10BT/001_00000.parquet' is not a file of .*ds; "
                                        r"it was deleted or renamed"):
        materialize_corpus_file(cfg, KEYS[1])


def _jsonl_dataset(folder: Path, rows: list[dict]) -> Path:
    folder.mkdir(parents=True)
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def test_missing_text_field_is_refused_in_one_line_naming_the_columns(hub, tmp_path):
    cfg = cfg_for(tmp_path, "d", f"hf-dataset:{REPO_ID}:sample-10BT", "corpus.text_field=content")
    with pytest.raises(DataError) as e:
        materialize_corpus_file(cfg, KEYS[0])
    message = str(e.value)
    assert "\n" not in message
    assert message.startswith(f"{REPO_ID}@{COMMIT_SHA[:12]}/{KEYS[0]}: no column 'content' (columns: text, id, dump, "
                              f"url, date, file_path, language, language_score, token_count, score, int_score); "
                              f"set corpus.text_field")
    assert not list((tmp_path / "d" / "corpus").rglob("*.json"))  # no record, no descriptor


def test_null_and_oversize_documents_are_refused_with_their_file_row(tmp_path):
    folder = _jsonl_dataset(tmp_path / "ds", [{"text": "one"}, {"text": "two"}, {"text": None}, {"text": "x" * 50}])
    cfg = cfg_for(tmp_path, "d", f"hf-dataset:{folder}")
    with pytest.raises(DataError, match=r"train.jsonl: row 2 \(counting from 0\) has a null 'text'"):
        materialize_corpus_file(cfg, "train.jsonl")
    folder2 = _jsonl_dataset(tmp_path / "ds2", [{"text": "one"}, {"text": "two"}, {"text": "x" * 50}])
    small = cfg_for(tmp_path, "d", f"hf-dataset:{folder2}", "corpus.max_document_chars=20")
    with pytest.raises(DataError, match=r"train.jsonl: row 2 \(counting from 0\) is a document of 50 characters, "
                                        r"over corpus.max_document_chars=20"):
        materialize_corpus_file(small, "train.jsonl")
    numbers = _jsonl_dataset(tmp_path / "ds3", [{"text": 1}, {"text": 2}])
    with pytest.raises(DataError, match=r"column 'text' is Value\('int64'\), expected a string column"):
        materialize_corpus_file(cfg_for(tmp_path, "d", f"hf-dataset:{numbers}"), "train.jsonl")


def test_unknown_config_repo_and_unreachable_hub_say_what_to_do(hub, tmp_path):
    with pytest.raises(DataError, match=r"BuilderConfig 'nope' not found\. Available: \['sample-10BT', 'code'\]; "
                                        r"put one of those configs after the last ':'"):
        list_source_files(cfg_for(tmp_path, "d", f"hf-dataset:{REPO_ID}:nope").corpus)
    with pytest.raises(DataError, match=r"someone/else@main is not a dataset revision on http://127\.0\.0\.1:\d+ "
                                        r"\(HTTP 404\)"):
        list_source_files(cfg_for(tmp_path, "d", "hf-dataset:someone/else").corpus)
    with pytest.raises(DataError, match=r"source file 'sample/10BT/009_00000.parquet' is not a data file of "
                                        rf"{REPO_ID} at commit {COMMIT_SHA}; it was deleted or renamed"):
        materialize_corpus_file(cfg_for(tmp_path, "d", f"hf-dataset:{REPO_ID}:sample-10BT"),
                                "sample/10BT/009_00000.parquet")
    hub.stop()
    with pytest.raises(DataError, match=r"cannot reach the Hugging Face Hub at .* set corpus\.source to "
                                        r"hf-dataset:<a local copy of the dataset's folder>"):
        list_source_files(cfg_for(tmp_path, "d", f"hf-dataset:{REPO_ID}:sample-10BT").corpus)


@pytest.mark.parametrize("source, fragment", [
    ("hf-dataset:", "names no dataset"),
    ("hf-dataset:../no/such/folder", "neither a dataset folder that exists nor a Hub repo id"),
    ("hf-dataset:owner/name:bad config", "is not a config name"),
])
def test_a_malformed_source_is_refused_when_the_config_loads(tmp_path, source, fragment):
    with pytest.raises(ConfigError, match=fragment):
        cfg_for(tmp_path, "d", source)


# --- memory --------------------------------------------------------------------------------------------------

_PEAK = """
import resource, sys
from gpt2train.config import load_config
from gpt2train.data.corpus import fetch_source_file
cfg = load_config("tiny", [f"data_dir={sys.argv[2]}", f"corpus.source=hf-dataset:{sys.argv[1]}"])
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
fetch_source_file(cfg.corpus, "data/train.parquet", __import__("pathlib").Path(sys.argv[2]))
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
"""


@pytest.mark.e2e
def test_streaming_memory_does_not_grow_with_the_file(tmp_path):
    """Peak memory while streaming a 20 MB and an 80 MB file (row groups of 50 documents): the same."""
    import random

    growth = {}
    rng = random.Random(0)
    for mb in (20, 80):
        folder = tmp_path / f"ds{mb}" / "data"
        folder.mkdir(parents=True)
        texts = [rng.randbytes(10_000).hex() for _ in range(mb * 50)]
        pq.write_table(pa.table({"text": texts}), folder / "train.parquet", compression="none", row_group_size=50)
        del texts
        out = subprocess.run([sys.executable, "-c", _PEAK, str(folder.parent), str(tmp_path / f"d{mb}")],
                             capture_output=True, text=True, check=True, cwd=Path(__file__).resolve().parent.parent)
        growth[mb] = int(out.stdout.split()[-1])
    assert growth[80] < growth[20] + 30, growth  # MiB: 60 MB more file, well under 30 MiB more memory
