"""Corpus inputs that loop, grow, hold nulls or one enormous document (issue 17), each on real files in a
tmp folder: listing never follows a directory symlink, a file that changes while it is read is refused
by name with nothing published, a null is named by its row in the file before anything is written,
`.txt` keeps its newlines, and a document over `corpus.max_document_chars` is refused or split."""

from __future__ import annotations

import glob
import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from gpt2train.config import load_config
from gpt2train.data import corpus as corpus_mod
from gpt2train.data import shard_writer
from gpt2train.data.corpus import CorpusRecord, fetch_source_file, iter_document_batches, list_source_files
from gpt2train.data.shards import read_tokens
from gpt2train.data.stage import corpus_code_version, corpus_data_version, materialize_corpus_file, \
    materialize_token_shards, prepare
from gpt2train.data.tokenizer import EOT_TOKEN, DocumentEncoder, get_encoding, split_document
from gpt2train.errors import ConfigError, DataError
from gpt2train.layout import corpus_record_path, shard_partition_manifest, shards_dir
from tests.commands import gpt2train

FIRST = "sample/10BT/000_00000.parquet"


def make_cfg(tmp_path: Path, source, *overrides):
    return load_config("tiny", [f"data_dir={tmp_path / 'data'}", f"corpus.source={source}", "shards.threads=1",
                                "shards.shard_size=5000", *overrides])


def write_jsonl(path: Path, texts) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return path


def written_files(folder: Path) -> list[str]:
    """Every file under `folder` (locks aside): what a refused run must not have left."""
    if not folder.exists():
        return []
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and ".lock" not in p.name)


# ---------------------------------------------------------------- 1. listing and symlinks


def test_a_glob_never_follows_a_symlink_back_into_the_source(tmp_path, edu_mini, caplog):
    """The reproduction of issue 17 item 3: `/c/**/*.parquet` with `/c/loop -> .` listed the file 41 times;
    with a second loop the listing never ended."""
    c = tmp_path / "c"
    c.mkdir()
    shutil.copyfile(edu_mini / FIRST, c / "000_00000.parquet")
    (c / "loop").symlink_to(".")
    (c / "sub").mkdir()
    (c / "sub" / "up").symlink_to("..")  # a second loop, through a real folder
    with caplog.at_level(logging.WARNING, logger="gpt2train.data.corpus"):
        files = list_source_files(make_cfg(tmp_path, f"{c}/**/*.parquet").corpus)
    assert [f.key for f in files] == ["000_00000.parquet"]  # once, where following the loops listed it 41 times
    said = caplog.text
    assert f"skips directory symlink {c / 'loop'} -> ." in said and f"{c / 'sub' / 'up'} -> .." in said
    # The folder form lists it once too.
    assert [f.key for f in list_source_files(make_cfg(tmp_path, c).corpus)] == ["000_00000.parquet"]


@pytest.mark.e2e
def test_prepare_with_a_looping_glob_tokenizes_the_file_once(tmp_path, edu_mini):
    c = tmp_path / "c"
    c.mkdir()
    shutil.copyfile(edu_mini / FIRST, c / "000_00000.parquet")
    (c / "loop").symlink_to(".")
    out = tmp_path / "shards"
    r = gpt2train("prepare", "--source", f"{c}/**/*.parquet", "--documents", 30, "--shard-size", 1_000_000,
                  "--threads", 1, "--out", out)
    assert r.returncode == 0, r.stderr
    sidecars = [json.loads(p.read_text()) for p in out.glob("*.bin.json")]
    assert len(sidecars) == 1 and [s["key"] for s in sidecars[0]["sources"]] == ["000_00000.parquet"]
    texts = pq.read_table(c / "000_00000.parquet", columns=["text"]).column(0).to_pylist()[:30]
    assert sidecars[0]["tokens"] == sum(len(t) + 1 for t in get_encoding("gpt2").encode_ordinary_batch(texts))
    assert "skips directory symlink" in r.stderr


def test_a_directory_symlink_out_of_the_source_is_not_followed(tmp_path):
    elsewhere = write_jsonl(tmp_path / "elsewhere" / "other.jsonl", ["not part of this corpus"])
    own = write_jsonl(tmp_path / "c" / "own.jsonl", ["ours"])
    (own.parent / "more").symlink_to(elsewhere.parent, target_is_directory=True)
    for source in (own.parent, f"{own.parent}/**/*.jsonl"):
        assert [f.key for f in list_source_files(make_cfg(tmp_path, source).corpus)] == ["own.jsonl"], source
    with pytest.raises(DataError, match="holds no"):  # glob.glob would list more/other.jsonl here
        list_source_files(make_cfg(tmp_path, f"{own.parent}/*/*.jsonl").corpus)


def test_a_file_symlink_is_read_but_one_file_under_two_keys_is_refused(tmp_path):
    outside = write_jsonl(tmp_path / "elsewhere" / "linked.jsonl", ["a linked file"])
    c = tmp_path / "c"
    write_jsonl(c / "a.jsonl", ["a"])
    (c / "linked.jsonl").symlink_to(outside)  # a Hub cache's snapshot folder links its blobs like this
    assert [f.key for f in list_source_files(make_cfg(tmp_path, c).corpus)] == ["a.jsonl", "linked.jsonl"]
    (c / "z_again.jsonl").symlink_to(c / "a.jsonl")
    for source in (c, f"{c}/*.jsonl"):
        with pytest.raises(DataError) as e:
            list_source_files(make_cfg(tmp_path, source).corpus)
        assert f"{c / 'a.jsonl'} and {c / 'z_again.jsonl'} are the same file" in str(e.value)
        assert "read twice" in str(e.value)


def test_the_glob_keeps_globs_meaning(tmp_path):
    """Without symlinks the listing is glob.glob's: hidden names only where the pattern asks, `**` at any
    depth including none, character classes; keys relative to the pattern's literal folder."""
    for key in ("a.jsonl", "d/b.jsonl", "d/e/c.jsonl", ".h/x.jsonl", "d/.y.jsonl", "d/e/z.txt"):
        write_jsonl(tmp_path / "c" / key, ["x"])
    for pattern, keys in (("**/*.jsonl", ["a.jsonl", "d/b.jsonl", "d/e/c.jsonl"]),
                          ("d/**/*.jsonl", ["b.jsonl", "e/c.jsonl"]), ("*/[bc].jsonl", ["d/b.jsonl"]),
                          ("d/.*.jsonl", [".y.jsonl"]), ("d/**", ["b.jsonl", "e/c.jsonl", "e/z.txt"]),
                          ("**/**/*.txt", ["d/e/z.txt"])):
        source = f"{tmp_path}/c/{pattern}"
        files = list_source_files(make_cfg(tmp_path, source).corpus)
        assert [f.key for f in files] == keys, pattern
        # (glob.glob lists z.txt three times for `**/**`; a file is listed once)
        assert [str(f.local_path) for f in files] == sorted({p for p in glob.glob(source, recursive=True)
                                                             if os.path.isfile(p)}), pattern


# ---------------------------------------------------------------- 2. a file that changes while it is read


def _grow_after_first_batch(monkeypatch, path: Path, extra: list[str]) -> None:
    """Append `extra` documents to `path` once the shard writer has read its first batch of it: the real
    reader keeps reading the real, now longer, file."""
    real = shard_writer.iter_document_batches

    def reading_while_appended(*args, **kwargs):
        for i, batch in enumerate(real(*args, **kwargs)):
            if i == 0:
                with open(path, "a") as f:
                    f.write("".join(json.dumps({"text": t}) + "\n" for t in extra))
            yield batch

    monkeypatch.setattr(shard_writer, "iter_document_batches", reading_while_appended)


def test_a_file_appended_while_tokenized_is_refused_and_nothing_is_published(tmp_path, monkeypatch):
    src = write_jsonl(tmp_path / "c" / "docs.jsonl", [f"document {i} " * 30 for i in range(400)])
    cfg = make_cfg(tmp_path, src.parent, "shards.batch_documents=8")
    record = materialize_corpus_file(cfg, "docs.jsonl")
    assert record.documents == 400
    _grow_after_first_batch(monkeypatch, src, [f"appended {i} " * 30 for i in range(300)])
    with pytest.raises(DataError) as e:
        materialize_token_shards(cfg, "docs.jsonl", progress=False)
    msg = str(e.value)
    assert msg.startswith(f"{src} changed while it was tokenized (sha256 {record.sha256[:16]}") and "run again" in msg
    out = shards_dir(cfg.data_dir)
    assert written_files(out) == ["val_file.json"]  # no shard, sidecar, manifest or staging folder
    assert not shard_partition_manifest(out, "docs.jsonl").exists()
    # The record still describes the content it hashed; the next corpus run records the new one.
    assert json.loads(corpus_record_path(cfg.data_dir, "docs.jsonl").read_text())["documents"] == 400
    monkeypatch.undo()
    assert materialize_corpus_file(cfg, "docs.jsonl").documents == 700
    assert materialize_token_shards(cfg, "docs.jsonl", progress=False)["documents"] == 700


def test_prepare_refuses_a_file_appended_while_tokenized(tmp_path, monkeypatch):
    src = write_jsonl(tmp_path / "c" / "docs.jsonl", [f"document {i} " * 30 for i in range(400)])
    cfg = make_cfg(tmp_path, src.parent, "shards.batch_documents=8")
    _grow_after_first_batch(monkeypatch, src, ["appended " * 30] * 300)
    with pytest.raises(DataError, match=f"{src} changed while it was tokenized"):
        prepare(cfg, tmp_path / "out", progress=False)
    assert written_files(tmp_path / "out") == []


def test_a_file_that_changes_while_it_is_counted_is_refused(tmp_path, monkeypatch):
    src = write_jsonl(tmp_path / "c" / "docs.jsonl", ["one", "two"])
    real = corpus_mod._count_documents

    def counting_while_appended(path, *args):
        with open(path, "a") as f:
            f.write(json.dumps({"text": "three"}) + "\n")
        return real(path, *args)

    monkeypatch.setattr(corpus_mod, "_count_documents", counting_while_appended)
    cfg = make_cfg(tmp_path, src.parent)
    with pytest.raises(DataError, match=f"{src} changed while it was counted"):
        materialize_corpus_file(cfg, "docs.jsonl")
    assert written_files(tmp_path / "data") == []


# ---------------------------------------------------------------- 3. nulls and newlines


@pytest.mark.parametrize("statistics", [True, False], ids=["footer-statistics", "no-statistics"])
def test_a_null_is_named_by_its_row_in_the_file_before_anything_is_written(tmp_path, statistics):
    """Issue 17 item 9: a null at file row 700 read "row 188 of a batch", after prepare wrote the record."""
    texts = [f"document {i}" for i in range(1000)]
    texts[700] = None
    src = tmp_path / "c" / "nulls.parquet"
    src.parent.mkdir()
    pq.write_table(pa.table({"text": texts}), src, row_group_size=256, write_statistics=statistics)
    cfg = make_cfg(tmp_path, src.parent)
    with pytest.raises(DataError) as e:
        prepare(cfg, progress=False)
    assert str(e.value) == (f"{src}: row 700 (counting from 0) has a null 'text'; drop or fill the null rows "
                            f"and run again")
    assert written_files(tmp_path / "data") == []  # no corpus record, no shards
    # The reader names the same row, whatever its batch size.
    with pytest.raises(DataError, match=r"row 700 \(counting from 0\)"):
        list(iter_document_batches(src, "text", 512))
    # Rows past corpus.max_documents_per_file are not read, nulls included.
    assert fetch_source_file(make_cfg(tmp_path, src.parent, "corpus.max_documents_per_file=700").corpus,
                             "nulls.parquet", tmp_path).documents == 700


def test_a_null_jsonl_text_is_named_by_its_line(tmp_path):
    src = tmp_path / "c" / "n.jsonl"
    src.parent.mkdir()
    src.write_text('{"text": "a"}\n{"text": null}\n')
    with pytest.raises(DataError, match=f"{src}:2: a null 'text'"):
        prepare(make_cfg(tmp_path, src.parent), progress=False)
    assert written_files(tmp_path / "data") == []


def test_txt_is_read_byte_exact_like_jsonl(tmp_path):
    text = "line one\r\nline two\rline three\n\r\n"
    c = tmp_path / "c"
    c.mkdir()
    (c / "doc.txt").write_bytes(text.encode())
    write_jsonl(c / "doc.jsonl", [text])
    assert list(iter_document_batches(c / "doc.txt", "text", 10)) == [[text]]
    assert list(iter_document_batches(c / "doc.jsonl", "text", 10)) == [[text]]
    result = prepare(make_cfg(tmp_path, c), tmp_path / "out", progress=False)
    tokens = np.array(read_tokens(tmp_path / "out" / result.shards[0]["file"]))
    one = [EOT_TOKEN, *get_encoding("gpt2").encode_ordinary(text)]
    assert tokens.tolist() == one + one  # doc.jsonl, then doc.txt: the same tokens


def test_only_txt_data_versions_move_with_the_txt_reader(tmp_path):
    """The .txt reader's change reaches the shards of .txt files (their data version moves) and no other's:
    a parquet or jsonl partition keeps the data version it had, so its shards stay fresh."""
    cfg = make_cfg(tmp_path, tmp_path)
    c = cfg.corpus

    def before(sha):  # the formula every data version was recorded with until the .txt reader changed
        return hashlib.sha256(f"{sha}|{c.text_field}|{c.max_documents_per_file}".encode()).hexdigest()[:24]

    for key, moves in (("a.parquet", False), ("b.jsonl", False), ("c.txt", True)):
        record = CorpusRecord(key, "local", None, None, key, "ab" * 32, 1, 1)
        assert (corpus_data_version(record, cfg) != before("ab" * 32)) == moves, key


# ---------------------------------------------------------------- 4. an enormous document


def _one_doc_parquet(path: Path, texts) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"text": texts}), path, row_group_size=3)
    return path


def test_an_oversize_document_is_refused_with_its_file_and_row(tmp_path):
    src = _one_doc_parquet(tmp_path / "c" / "big.parquet", ["short"] * 5 + ["x" * 5000] + ["short"] * 3)
    cfg = make_cfg(tmp_path, src.parent, "corpus.max_document_chars=4000")
    with pytest.raises(DataError) as e:
        prepare(cfg, tmp_path / "out", progress=False)
    msg = str(e.value)
    assert msg.startswith(f"{src}: row 5 (counting from 0) is a document of 5,000 characters, over "
                          f"corpus.max_document_chars=4,000"), msg
    assert "corpus.oversize_documents=split" in msg
    assert written_files(tmp_path / "out") == []
    jsonl = write_jsonl(tmp_path / "j" / "big.jsonl", ["short", "y" * 4001])
    with pytest.raises(DataError, match=f"{jsonl}:2 is a document of 4,001 characters"):
        fetch_source_file(make_cfg(tmp_path, jsonl.parent, "corpus.max_document_chars=4000").corpus, "big.jsonl",
                          tmp_path)
    txt = tmp_path / "t" / "big.txt"
    txt.parent.mkdir()
    txt.write_text("z" * 4001)
    with pytest.raises(DataError, match=r"big.txt \(the whole file\) is a document of 4,001 characters"):
        fetch_source_file(make_cfg(tmp_path, txt.parent, "corpus.max_document_chars=4000").corpus, "big.txt", tmp_path)


def test_split_keeps_the_whole_documents_tokens_where_it_can_cut_before_whitespace(edu_mini):
    texts = pq.read_table(edu_mini / FIRST, columns=["text"]).column(0).to_pylist()[:60]
    whole = DocumentEncoder("gpt2", threads=1)
    split = DocumentEncoder("gpt2", threads=1, split_chars=300)
    assert any(len(t) > 300 for t in texts)
    for text in texts:
        pieces = split_document(text, 300)
        assert "".join(pieces) == text and all(len(p) <= 300 for p in pieces)
        assert all(not p[-1].isspace() and q[0] in " \n" for p, q in zip(pieces, pieces[1:]))  # no forced cut
        assert np.array_equal(split.encode_document(text), whole.encode_document(text))


def test_split_mode_tokenizes_a_whitespace_free_document_in_pieces(tmp_path):
    doc = "abcdefghij" * 1000  # 10,000 characters and no whitespace: cut every 4,000
    src = _one_doc_parquet(tmp_path / "c" / "big.parquet", ["a short one", doc])
    cfg = make_cfg(tmp_path, src.parent, "corpus.max_document_chars=4000", "corpus.oversize_documents=split")
    result = prepare(cfg, tmp_path / "out", progress=False)
    tokens = np.array(read_tokens(tmp_path / "out" / result.shards[0]["file"])).tolist()
    enc = get_encoding("gpt2")
    expected = [EOT_TOKEN, *enc.encode_ordinary("a short one"), EOT_TOKEN]
    for piece in (doc[:4000], doc[4000:8000], doc[8000:]):
        expected += enc.encode_ordinary(piece)
    assert tokens == expected and tokens.count(EOT_TOKEN) == 2  # one <|endoftext|> per document


def test_oversize_settings_shape_lineage_only_when_they_can_change_a_token(tmp_path):
    record = CorpusRecord("a.parquet", "local", None, None, "a.parquet", "cd" * 32, 1, 1)

    def versions(*sets):
        cfg = make_cfg(tmp_path, tmp_path, *sets)
        return corpus_code_version(cfg), corpus_data_version(record, cfg)

    default = versions()
    # Refusing changes no token of a document it lets through: no limit makes anything stale.
    assert versions("corpus.max_document_chars=1000") == default
    # Splitting cuts where the limit says, so its setting reaches the corpus and, through the data version, the shards.
    split = versions("corpus.oversize_documents=split")
    assert split[0] != default[0] and split[1] != default[1]
    assert versions("corpus.oversize_documents=split", "corpus.max_document_chars=1000") != split


@pytest.mark.parametrize("setting, said", [
    ("corpus.max_document_chars=0", "corpus.max_document_chars=0 is out of range"),
    ("corpus.oversize_documents=truncate", "is not one of refuse, split"),
])
def test_bad_oversize_settings_are_refused(tmp_path, setting, said):
    with pytest.raises(ConfigError, match=said):
        make_cfg(tmp_path, tmp_path, setting)


def test_the_default_limit_is_stated_and_far_above_fineweb(tmp_path, edu_mini):
    cfg = make_cfg(tmp_path, edu_mini)
    assert cfg.corpus.max_document_chars == 4_000_000 and cfg.corpus.oversize_documents == "refuse"
    longest = max(len(t) for f in sorted((edu_mini / "sample" / "10BT").glob("*.parquet"))
                  for t in pq.read_table(f, columns=["text"]).column(0).to_pylist())
    assert longest < cfg.corpus.max_document_chars / 10


# ---------------------------------------------------------------- lineage through Dagster's own staleness


def data_made_at_corpus_stage_1(tmp_path, small_corpus, instance, monkeypatch):
    """The data stage run on the corpus plus a CRLF .txt file, as corpus stage 1 (its .txt reader 1) made
    it, before .txt files were read byte-exact; returns the config."""
    from gpt2train.lineage.stage_versions import STAGE_VERSIONS
    from pipelines.runner import run_pipeline

    (small_corpus / "sample" / "10BT" / "003_notes.txt").write_bytes(b"a note\r\nwith CRLF line ends\r\n" * 20)
    cfg = load_config("tiny", [f"data_dir={tmp_path / 'data'}", f"corpus.source={small_corpus}",
                               "corpus.max_documents_per_file=40", "shards.shard_size=50000"])
    with monkeypatch.context() as before:
        before.setitem(STAGE_VERSIONS, "corpus", 1)
        before.setitem(corpus_mod.READER_VERSIONS, ".txt", 1)
        run_pipeline(cfg, instance, through="data")
    return cfg


@pytest.mark.e2e
def test_the_txt_reader_change_makes_only_txt_shards_stale(tmp_path, small_corpus, instance, monkeypatch):
    """Data made before the corpus stage went to 2 (.txt read byte-exact): every corpus partition is stale
    (a hash and a count to redo); once they have rerun, Dagster marks only the .txt file's shards stale."""
    import dagster as dg

    from pipelines.definitions import DATA_JOB, build_definitions
    from pipelines.staleness import StaleStatus, stale_statuses

    cfg = data_made_at_corpus_stage_1(tmp_path, small_corpus, instance, monkeypatch)
    keys = ["sample/10BT/000_00000.parquet", "sample/10BT/001_00000.parquet", "sample/10BT/003_notes.txt"]
    defs = build_definitions(cfg)
    statuses = stale_statuses(defs, instance, assets=["corpus", "token_shards"])
    assert {statuses[("corpus", k)] for k in keys} == {StaleStatus.STALE}
    assert {statuses[("token_shards", k)] for k in keys} == {StaleStatus.FRESH}
    for key in keys:  # the corpus partitions rerun, as the UI's "materialize stale" does
        result = defs.resolve_job_def(DATA_JOB).execute_in_process(
            partition_key=key, instance=instance, asset_selection=[dg.AssetKey("corpus")])
        assert result.success
    statuses = stale_statuses(defs, instance, assets=["corpus", "token_shards"])
    assert {k: statuses[("token_shards", k)] for k in keys} == {
        keys[0]: StaleStatus.FRESH, keys[1]: StaleStatus.FRESH, keys[2]: StaleStatus.STALE}


@pytest.mark.e2e
def test_stale_only_after_the_txt_reader_change_retokenizes_only_the_txt_file(tmp_path, small_corpus, instance,
                                                                               monkeypatch):
    """`gpt2train pipeline --stale-only` on data made at corpus stage 1: every corpus record is redone
    (a hash and a count each), then only the .txt file's shards, the one file whose text changed."""
    from pipelines.runner import run_pipeline

    cfg = data_made_at_corpus_stage_1(tmp_path, small_corpus, instance, monkeypatch)
    summary = run_pipeline(cfg, instance, stale_only=True, through="data")
    txt = "sample/10BT/003_notes.txt"
    assert sorted(summary.ran) == sorted([("corpus", "sample/10BT/000_00000.parquet"),
                                          ("corpus", "sample/10BT/001_00000.parquet"), ("corpus", txt),
                                          ("token_shards", txt)])


@pytest.mark.e2e
def test_a_refuse_limit_makes_nothing_stale_and_split_reaches_the_shards(tmp_path, small_corpus, instance):
    from pipelines.runner import run_pipeline

    def cfg(*sets):
        return load_config("tiny", [f"data_dir={tmp_path / 'data'}", f"corpus.source={small_corpus}",
                                    "corpus.max_documents_per_file=40", "shards.shard_size=50000", *sets])

    run_pipeline(cfg(), instance, through="data")
    assert run_pipeline(cfg("corpus.max_document_chars=2000000"), instance, stale_only=True, through="data").ran == []
    summary = run_pipeline(cfg("corpus.oversize_documents=split"), instance, stale_only=True, through="data")
    keys = ["sample/10BT/000_00000.parquet", "sample/10BT/001_00000.parquet"]
    assert sorted(summary.ran) == sorted([("corpus", k) for k in keys] + [("token_shards", k) for k in keys])
