"""Corpus sources: listing, fetching, streaming documents, and errors on bad input files."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gpt2train.config import CorpusConfig
from gpt2train.data.corpus import count_documents, fetch_source_file, iter_document_batches, list_source_files
from gpt2train.errors import DataError
from gpt2train.fileio import sha256_file

FIRST = "sample/10BT/000_00000.parquet"


def local_cfg(source, **kw) -> CorpusConfig:
    return CorpusConfig(source=str(source), **kw)


def write_jsonl(path: Path, texts, field="text") -> Path:
    path.write_text("".join(json.dumps({field: t, "id": i}) + "\n" for i, t in enumerate(texts)))
    return path


def parquet_texts(path) -> list[str]:
    return pq.read_table(path, columns=["text"]).column("text").to_pylist()


# ---------------------------------------------------------------- listing and fetching


def test_list_edu_mini_hub_layout(edu_mini):
    files = list_source_files(local_cfg(edu_mini))
    assert [f.key for f in files] == [f"sample/10BT/00{i}_00000.parquet" for i in range(3)]
    assert all(f.local_path == edu_mini / f.key for f in files)
    assert [f.key for f in list_source_files(local_cfg(edu_mini, files=2))] == [files[0].key, files[1].key]


def test_list_single_file_and_glob(edu_mini, tmp_path):
    one = edu_mini / FIRST
    assert [f.key for f in list_source_files(local_cfg(one))] == ["000_00000.parquet"]
    files = list_source_files(local_cfg(f"{edu_mini}/sample/*/00[12]_*.parquet"))
    assert [f.key for f in files] == ["10BT/001_00000.parquet", "10BT/002_00000.parquet"]


def test_list_own_folder_skips_hidden_and_other_types(tmp_path):
    (tmp_path / "b").mkdir()
    write_jsonl(tmp_path / "b" / "2.jsonl", ["x"])
    write_jsonl(tmp_path / "1.jsonl", ["y"])
    (tmp_path / "notes.md").write_text("not a corpus file")
    (tmp_path / ".hidden").mkdir()
    write_jsonl(tmp_path / ".hidden" / "h.jsonl", ["z"])
    assert [f.key for f in list_source_files(local_cfg(tmp_path))] == ["1.jsonl", "b/2.jsonl"]


def test_fetch_record(edu_mini, tmp_path):
    rec = fetch_source_file(local_cfg(edu_mini), FIRST, tmp_path)
    assert rec.key == FIRST and rec.source == "local" and rec.repo is None
    assert rec.documents == 250
    assert rec.sha256 == sha256_file(edu_mini / FIRST)
    assert rec.bytes == (edu_mini / FIRST).stat().st_size
    assert Path(rec.local_path) == edu_mini / FIRST
    limited = fetch_source_file(local_cfg(edu_mini, max_documents_per_file=7), FIRST, tmp_path)
    assert limited.documents == 7
    assert not any(tmp_path.iterdir())  # fetching a local file writes nothing


def test_fetch_unknown_key(edu_mini, tmp_path):
    with pytest.raises(DataError) as e:
        fetch_source_file(local_cfg(edu_mini), "sample/10BT/999_00000.parquet", tmp_path)
    assert "999_00000" in str(e.value) and "restore the file" in str(e.value)


# ---------------------------------------------------------------- bad inputs


def test_missing_source(tmp_path):
    missing = tmp_path / "no" / "such" / "dir"
    with pytest.raises(DataError) as e:
        list_source_files(local_cfg(missing))
    msg = str(e.value)
    assert str(missing) in msg and "does not exist" in msg and "give 'hub', a folder" in msg


def test_folder_without_corpus_files(tmp_path):
    (tmp_path / "readme.md").write_text("x")
    with pytest.raises(DataError, match="holds no"):
        list_source_files(local_cfg(tmp_path))


def test_glob_with_unsupported_file(tmp_path):
    (tmp_path / "a.csv").write_text("text\nx\n")
    with pytest.raises(DataError) as e:
        list_source_files(local_cfg(tmp_path / "*"))
    assert "a.csv" in str(e.value) and "unsupported file type" in str(e.value)


@pytest.mark.parametrize("name", ["empty.parquet", "empty.jsonl", "empty.txt"])
def test_empty_file(tmp_path, name):
    (tmp_path / name).write_bytes(b"")
    with pytest.raises(DataError) as e:
        fetch_source_file(local_cfg(tmp_path), name, tmp_path)
    assert str(tmp_path / name) in str(e.value) and "empty" in str(e.value) and "delete it" in str(e.value)


def test_parquet_without_text_column(tmp_path):
    path = tmp_path / "notext.parquet"
    pq.write_table(pa.table({"body": ["a", "b"], "id": [1, 2]}), path)
    with pytest.raises(DataError) as e:
        fetch_source_file(local_cfg(tmp_path), "notext.parquet", tmp_path)
    msg = str(e.value)
    assert str(path) in msg and "'text'" in msg and "body, id" in msg and "corpus.text_field" in msg
    # ...and with text_field pointing at the right column it reads
    rec = fetch_source_file(local_cfg(tmp_path, text_field="body"), "notext.parquet", tmp_path)
    assert rec.documents == 2
    assert list(iter_document_batches(path, "body", 10)) == [["a", "b"]]


def test_parquet_text_column_not_string(tmp_path):
    path = tmp_path / "ints.parquet"
    pq.write_table(pa.table({"text": [1, 2]}), path)
    with pytest.raises(DataError) as e:
        count_documents(path, "text", None)
    assert str(path) in str(e.value) and "string column" in str(e.value)


def test_parquet_null_text(tmp_path):
    path = tmp_path / "nulls.parquet"
    pq.write_table(pa.table({"text": ["a", None, "c"]}), path)
    with pytest.raises(DataError) as e:
        list(iter_document_batches(path, "text", 10))
    assert str(path) in str(e.value) and "null" in str(e.value)


def test_not_a_parquet_file(tmp_path):
    path = tmp_path / "garbage.parquet"
    path.write_bytes(b"this is not parquet at all" * 10)
    with pytest.raises(DataError) as e:
        fetch_source_file(local_cfg(tmp_path), "garbage.parquet", tmp_path)
    assert str(path) in str(e.value) and "not a readable parquet file" in str(e.value)


def test_jsonl_bad_json_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "one"}\n{"text": "two"}\n{"text": oops}\n{"text": "four"}\n')
    with pytest.raises(DataError) as e:
        list(iter_document_batches(path, "text", 10))
    assert f"{path}:3" in str(e.value) and "fix or remove the line" in str(e.value)
    with pytest.raises(DataError, match=f"{path}:3"):
        fetch_source_file(local_cfg(tmp_path), "bad.jsonl", tmp_path)


def test_jsonl_invalid_utf8(tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(b'{"text": "ok"}\n\n{"text": "caf\xe9"}\n')
    with pytest.raises(DataError) as e:
        list(iter_document_batches(path, "text", 10))
    msg = str(e.value)
    assert f"{path}:3" in msg and "UTF-8" in msg and "re-encode" in msg


def test_jsonl_missing_field(tmp_path):
    path = tmp_path / "nofield.jsonl"
    path.write_text('{"text": "ok"}\n{"body": "x"}\n')
    with pytest.raises(DataError) as e:
        list(iter_document_batches(path, "text", 10))
    assert f"{path}:2" in str(e.value) and "corpus.text_field" in str(e.value)
    path.write_text('{"text": "ok"}\n[1, 2]\n')
    with pytest.raises(DataError, match=f"{path}:2"):
        list(iter_document_batches(path, "text", 10))


def test_txt_invalid_utf8(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes(b"abc\xff\xfe")
    with pytest.raises(DataError) as e:
        list(iter_document_batches(path, "text", 10))
    assert str(path) in str(e.value) and "byte 3" in str(e.value)


def test_unsupported_suffix_in_reader(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("a")
    with pytest.raises(DataError, match="unsupported file type"):
        list(iter_document_batches(path, "text", 10))


# ---------------------------------------------------------------- streaming


@pytest.mark.parametrize("batch_size", [1, 7, 64, 1000])
def test_parquet_batches(edu_mini, batch_size):
    path = edu_mini / FIRST
    batches = list(iter_document_batches(path, "text", batch_size))
    assert all(1 <= len(b) <= batch_size for b in batches)
    assert [t for b in batches for t in b] == parquet_texts(path)


@pytest.mark.parametrize("limit, batch_size, sizes", [(10, 4, [4, 4, 2]), (8, 4, [4, 4]), (3, 100, [3]),
                                                     (250, 100, [100, 100, 50]), (10_000, 200, [200, 50])])
def test_parquet_max_documents(edu_mini, limit, batch_size, sizes):
    path = edu_mini / FIRST
    batches = list(iter_document_batches(path, "text", batch_size, limit))
    assert [len(b) for b in batches] == sizes
    assert [t for b in batches for t in b] == parquet_texts(path)[:limit]
    assert count_documents(path, "text", limit) == sum(sizes)


def test_parquet_multiple_row_groups(tmp_path):
    path = tmp_path / "rg.parquet"
    texts = [f"doc {i}" for i in range(23)]
    pq.write_table(pa.table({"text": texts}), path, row_group_size=5)
    batches = list(iter_document_batches(path, "text", 4, 17))
    assert all(len(b) <= 4 for b in batches)
    assert [t for b in batches for t in b] == texts[:17]


@pytest.mark.parametrize("limit, batch_size, sizes", [(None, 5, [5, 5, 2]), (5, 2, [2, 2, 1]),
                                                     (4, 2, [2, 2]), (100, 100, [12])])
def test_jsonl_batches_and_limit(tmp_path, limit, batch_size, sizes):
    texts = [f"document number {i}\nwith a second line" for i in range(12)]
    path = write_jsonl(tmp_path / "docs.jsonl", texts)
    # blank lines are skipped, not documents
    path.write_text(path.read_text().replace("\n", "\n\n", 3))
    batches = list(iter_document_batches(path, "text", batch_size, limit))
    assert [len(b) for b in batches] == sizes
    assert [t for b in batches for t in b] == texts[: limit or None]
    assert count_documents(path, "text", limit) == sum(sizes)


def test_jsonl_limit_stops_before_bad_lines(tmp_path):
    path = tmp_path / "tail.jsonl"
    path.write_text('{"text": "a"}\n{"text": "b"}\nnot json\n')
    assert list(iter_document_batches(path, "text", 10, 2)) == [["a", "b"]]


def test_jsonl_custom_field_and_escapes(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text('{"content": "a\\ud800b"}\n{"content": "<|endoftext|>"}\n')
    assert list(iter_document_batches(path, "content", 10)) == [["a\ud800b", "<|endoftext|>"]]


def test_txt_is_one_document(tmp_path):
    path = tmp_path / "book.txt"
    text = "Chapter 1\n\nIt was a dark night.\n\nChapter 2\n" * 50
    path.write_text(text, encoding="utf-8")
    assert list(iter_document_batches(path, "text", 1)) == [[text]]
    assert list(iter_document_batches(path, "text", 10, 1)) == [[text]]
    assert count_documents(path, "text", None) == 1
    rec = fetch_source_file(local_cfg(path), "book.txt", tmp_path)
    assert rec.documents == 1 and rec.key == "book.txt"


# ---------------------------------------------------------------- what a corpus is labeled as


def test_records_name_the_dataset_only_for_the_hub_or_a_mirror_of_it(edu_mini, tmp_path):
    """A corpus record names FineWeb-Edu sample-10BT for edu-mini (the Hub's layout: a mirror) and labels
    a folder of other files by its path, with no dataset in it anywhere (its config section included)."""
    from gpt2train.config import load_config
    from gpt2train.data.identity import corpus_identity
    from gpt2train.data.stage import materialize_corpus_file
    from gpt2train.layout import corpus_record_path

    mirror = load_config("tiny", [f"data_dir={tmp_path / 'm'}", f"corpus.source={edu_mini}"])
    materialize_corpus_file(mirror, FIRST)
    rec = json.loads(corpus_record_path(mirror.data_dir, FIRST).read_text())
    assert rec["dataset"]["dataset"] == "HuggingFaceFW/fineweb-edu" and rec["dataset"]["config"] == "sample-10BT"
    assert rec["dataset"]["label"] == f"HuggingFaceFW/fineweb-edu sample-10BT (local mirror {edu_mini})"
    assert rec["config"]["corpus"]["dataset"] == "HuggingFaceFW/fineweb-edu"

    own = tmp_path / "book"
    own.mkdir()
    write_jsonl(own / "chapter1.jsonl", ["Call me Ishmael.", "Some years ago"])
    cfg = load_config("tiny", [f"data_dir={tmp_path / 'o'}", f"corpus.source={own}"])
    materialize_corpus_file(cfg, "chapter1.jsonl")
    rec = json.loads(corpus_record_path(cfg.data_dir, "chapter1.jsonl").read_text())
    assert rec["dataset"]["dataset"] is None and rec["dataset"]["label"] == f"local files {own}"
    assert "not laid out as a mirror of HuggingFaceFW/fineweb-edu sample-10BT (sample/10BT/*.parquet)" in \
        rec["dataset"]["why"]
    assert rec["config"]["corpus"]["source"] == str(own)
    assert not {"dataset", "name", "revision"} & set(rec["config"]["corpus"])  # settings that named nothing

    # The same rule for any key: parquet files where the Hub keeps the config's files; the Hub itself.
    hub = CorpusConfig(source="hub")
    assert corpus_identity(hub, [FIRST]).dataset == "HuggingFaceFW/fineweb-edu"
    assert corpus_identity(local_cfg(edu_mini), [FIRST, "sample/10BT/001_00000.parquet"]).config == "sample-10BT"
    assert corpus_identity(local_cfg(edu_mini), ["000_00000.parquet"]).dataset is None  # one file given alone
    assert corpus_identity(local_cfg(edu_mini), ["sample/10BT/notes.jsonl"]).dataset is None
    assert corpus_identity(local_cfg(edu_mini, name="not-a-config"), [FIRST]).dataset is None
    assert corpus_identity(CorpusConfig(source="hf-dataset:Salesforce/wikitext:wikitext-2-raw-v1"),
                           ["a.parquet"]).dataset == "Salesforce/wikitext"
