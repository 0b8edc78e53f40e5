"""Corpus -> token shards: byte identity with llm.c's fineweb.py, the partition layout,
lineage sidecars, tokenization edge cases and failures (bad input, full disk)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from bench.llmc_fineweb import llmc_write_shards
from tests.faults import FullDiskFile
from gpt2train.data import shards as shards_mod
from gpt2train.config import load_config
from gpt2train.data.corpus import fetch_source_file, list_source_files
from gpt2train.errors import DataError
from gpt2train.fileio import sha256_file
from gpt2train.lineage.records import sidecar_path
from gpt2train.layout import partition_tag
from gpt2train.layout import shard_partition_manifest as manifest_path
from gpt2train.data.shard_writer import (
    load_sidecar,
    partition_data_version,
    shards_code_version,
    write_partition_shards,
    write_shards,
)
from gpt2train.data.shards import HEADER_BYTES, read_header, read_tokens, validate_shard
from gpt2train.data.tokenizer import EOT_TOKEN, DocumentEncoder, get_encoding, ranks_sha256

SHARD = 300_001  # odd: several shards plus a remainder on edu-mini
FIRST = "sample/10BT/000_00000.parquet"
SECOND = "sample/10BT/001_00000.parquet"


@pytest.fixture(scope="module")
def enc():
    return get_encoding("gpt2")


def make_cfg(data_dir, source, *overrides):
    return load_config("tiny", overrides=[f"data_dir={data_dir}", f"corpus.source={source}", *overrides])


def records_for(cfg, data_dir):
    return [fetch_source_file(cfg.corpus, f.key, Path(data_dir)) for f in list_source_files(cfg.corpus)]


def bins(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("*.bin"))


def temp_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob(".*.tmp-*"))


def reference_stream(enc, texts) -> np.ndarray:
    """The plain definition: [eot] + encode_ordinary(text) for every document, concatenated."""
    parts = []
    for tokens in enc.encode_ordinary_batch(list(texts), num_threads=2):  # encode_ordinary per text
        parts.append(np.array([EOT_TOKEN], dtype=np.uint16))
        parts.append(np.array(tokens, dtype=np.uint16))
    return np.concatenate(parts) if parts else np.empty(0, dtype=np.uint16)


def reference_shards(stream: np.ndarray, shard_size: int, prefix="edu_fineweb") -> dict[str, np.ndarray]:
    """llm.c's layout by definition: the stream cut every shard_size tokens, shard 0 = val."""
    return {f"{prefix}_{'val' if i == 0 else 'train'}_{i:06d}.bin": stream[s : s + shard_size]
            for i, s in enumerate(range(0, len(stream), shard_size))}


def shard_tokens(folder: Path) -> dict[str, np.ndarray]:
    return {name: np.array(read_tokens(folder / name)) for name in bins(folder)}


def write_jsonl(path: Path, texts) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return path


# ---------------------------------------------------------------- llm.c byte identity


@pytest.fixture(scope="module")
def edu_texts(edu_mini):
    files = sorted((edu_mini / "sample" / "10BT").glob("*.parquet"))
    assert len(files) == 3
    return [t for f in files for t in pq.read_table(f, columns=["text"]).column("text").to_pylist()]


@pytest.fixture(scope="module")
def stream_run(tmp_path_factory, edu_mini):
    """Our stream layout over all of edu-mini at SHARD tokens per shard (shared by several tests)."""
    root = tmp_path_factory.mktemp("stream")
    cfg = make_cfg(root / "data", edu_mini, f"shards.shard_size={SHARD}", "shards.threads=2",
                   "shards.batch_documents=37")
    records = records_for(cfg, root / "data")
    out = root / "shards"
    result = write_shards(records, out, cfg, layout="stream", progress=False)
    return cfg, records, result, out


@pytest.fixture(scope="module")
def llmc_run(tmp_path_factory, edu_texts):
    out = tmp_path_factory.mktemp("llmc")
    written = llmc_write_shards(edu_texts, str(out), SHARD)
    return out, written


def test_stream_layout_byte_identical_to_llmc(stream_run, llmc_run):
    _, _, result, ours = stream_run
    theirs, written = llmc_run
    assert len(written) >= 10  # 4.08M tokens / 300,001: several shards and a remainder
    assert bins(ours) == bins(theirs) == sorted(Path(w).name for w in written)
    assert bins(ours)[0] == "edu_fineweb_train_000001.bin" and "edu_fineweb_val_000000.bin" in bins(ours)
    for name in bins(theirs):
        a, b = (ours / name).read_bytes(), (theirs / name).read_bytes()
        assert len(a) == len(b), name
        assert a == b, f"{name} differs from llm.c's"
    sizes = [read_header(ours / n)[2] for n in sorted(bins(ours), key=lambda n: int(n[-10:-4]))]
    assert all(s == SHARD for s in sizes[:-1]) and 0 < sizes[-1] < SHARD
    assert result.tokens == sum(sizes)
    assert result.documents == 736
    assert [s["file"] for s in result.shards] == sorted(bins(ours), key=lambda n: int(n[-10:-4]))


def test_stream_equals_plain_definition(stream_run, edu_texts, enc):
    _, _, result, out = stream_run
    stream = np.concatenate([read_tokens(out / s["file"]) for s in result.shards])
    np.testing.assert_array_equal(stream, reference_stream(enc, edu_texts))
    assert int((stream == EOT_TOKEN).sum()) >= 736


@pytest.mark.parametrize("delta", [-1, 0, 1])
def test_shard_size_at_exact_total(tmp_path, edu_mini, enc, delta):
    # first 40 documents of the first file: one shard of exactly all tokens, no empty trailing shard
    texts = pq.read_table(edu_mini / FIRST, columns=["text"]).column("text").to_pylist()[:40]
    total = len(reference_stream(enc, texts))
    cfg = make_cfg(tmp_path / "data", edu_mini / FIRST, f"shards.shard_size={total + delta}",
                   "corpus.max_documents_per_file=40", "shards.threads=1")
    result = write_shards(records_for(cfg, tmp_path), tmp_path / "ours", cfg, progress=False)
    llmc_write_shards(texts, str(tmp_path / "llmc"), total + delta)
    expected = ["edu_fineweb_train_000001.bin", "edu_fineweb_val_000000.bin"] if delta < 0 \
        else ["edu_fineweb_val_000000.bin"]
    assert bins(tmp_path / "ours") == bins(tmp_path / "llmc") == expected
    for name in expected:
        assert (tmp_path / "ours" / name).read_bytes() == (tmp_path / "llmc" / name).read_bytes()
    assert result.tokens == total
    assert [s["tokens"] for s in result.shards] == ([total - 1, 1] if delta < 0 else [total])


@pytest.mark.parametrize("threads", [1, 2])
def test_document_longer_than_a_shard(tmp_path, enc, threads):
    long_doc = " ".join(f"word{i}" for i in range(400))  # ~800 tokens
    texts = ["short one", long_doc, "tiny", "", long_doc[:333], "the end."]
    src = write_jsonl(tmp_path / "c" / "docs.jsonl", texts)
    stream = reference_stream(enc, texts)
    shard_size = 97
    assert len(enc.encode_ordinary(long_doc)) > 5 * shard_size
    cfg = make_cfg(tmp_path / "data", src, f"shards.shard_size={shard_size}", f"shards.threads={threads}",
                   "shards.batch_documents=2")
    result = write_shards(records_for(cfg, tmp_path), tmp_path / "out", cfg, progress=False)
    expected = reference_shards(stream, shard_size)
    got = shard_tokens(tmp_path / "out")
    assert sorted(got) == sorted(expected)
    for name in expected:
        np.testing.assert_array_equal(got[name], expected[name], err_msg=name)
    assert result.tokens == len(stream) and result.documents == len(texts)
    assert temp_files(tmp_path) == []


# ---------------------------------------------------------------- tokens


def test_tokens_equal_encode_ordinary_with_special_strings(tmp_path, enc):
    texts = ["Hello world", "text with <|endoftext|> inside it <|endoftext|>", "a\ud800b", "",
             "emoji 🤖 and ünïcödé", "  leading spaces\n\ttabs\r\n", "<|endoftext|>"]
    # JSON escapes the lone surrogate as \ud800, so the jsonl file itself is valid UTF-8
    src = write_jsonl(tmp_path / "c" / "docs.jsonl", texts)
    cfg = make_cfg(tmp_path / "data", src, "shards.shard_size=100000")
    write_shards(records_for(cfg, tmp_path), tmp_path / "out", cfg, progress=False)
    tokens = np.array(read_tokens(tmp_path / "out" / "edu_fineweb_val_000000.bin"))
    expected = [t for text in texts for t in [50256] + enc.encode_ordinary(text)]
    assert tokens.tolist() == expected
    # "<|endoftext|>" inside a text is ordinary text, never token 50256
    assert int((tokens == 50256).sum()) == len(texts)
    # per document, too, without the writer around it
    with DocumentEncoder("gpt2", threads=2) as de:
        for text in texts:
            assert de.encode_document(text).tolist() == enc.encode_ordinary(text)
        assert de.encode_batch(texts).tolist() == expected
        assert de.encode_batch([]).tolist() == []


def test_unknown_tokenizer(tmp_path, edu_mini):
    with pytest.raises(DataError) as e:
        get_encoding("cl100k_base")
    assert "cl100k_base" in str(e.value) and "gpt2" in str(e.value)
    cfg = make_cfg(tmp_path / "data", edu_mini / FIRST, "shards.tokenizer=cl100k_base")
    with pytest.raises(DataError, match="cl100k_base"):
        write_shards(records_for(cfg, tmp_path), tmp_path / "out", cfg, progress=False)
    assert bins(tmp_path / "out") == []
    assert list((tmp_path / "out").glob(".staging-*")) == []  # no staging folder left behind


def test_tokenizer_cache_missing(monkeypatch, tmp_path):
    import tiktoken

    def offline(name):
        raise ConnectionError("no network")

    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "empty-cache"))
    monkeypatch.setattr(tiktoken, "get_encoding", offline)
    with pytest.raises(DataError) as e:
        get_encoding("gpt2")
    msg = str(e.value)
    assert "TIKTOKEN_CACHE_DIR" in msg and str(tmp_path / "empty-cache") in msg and "ConnectionError" in msg


# ---------------------------------------------------------------- sidecars


def test_sidecars(stream_run, enc):
    cfg, records, result, out = stream_run
    by_key = {r.key: r for r in records}
    assert [s["file"] for s in result.shards] and len(result.shards) == len(bins(out))
    seen_sources = []
    for s in result.shards:
        shard = out / s["file"]
        side = json.loads(sidecar_path(shard).read_text())
        assert sidecar_path(shard).name == s["file"] + ".json"
        assert side == json.loads(json.dumps(s, default=str))
        assert load_sidecar(shard) == side
        assert side["sha256"] == sha256_file(shard)
        assert side["tokens"] == int(read_header(shard)[2])
        assert side["bytes"] == shard.stat().st_size == HEADER_BYTES + 2 * side["tokens"]
        assert side["split"] == ("val" if side["index"] == 0 else "train")
        assert side["layout"] == "stream"
        assert side["shard_size"] == SHARD
        assert side["tokenizer"] == {"name": "gpt2", "ranks_sha256": ranks_sha256(enc), "eot": 50256}
        assert side["code_version"] == shards_code_version(cfg) and len(side["code_version"]) == 16
        assert "git_commit" in side and side["stage"] == "token_shards"
        assert side["config"]["shards"]["shard_size"] == SHARD
        assert side["config"]["corpus"]["source"] == cfg.corpus.source
        assert side["sources"], s["file"]
        for src in side["sources"]:
            rec = by_key[src["key"]]
            assert src["sha256"] == rec.sha256 == sha256_file(rec.local_path)
            assert src["bytes"] == rec.bytes and src["source"] == "local"
        seen_sources.append([src["key"] for src in side["sources"]])
        assert all(c.passed for c in validate_shard(shard, side["sha256"])), s["file"]
    # shard 0 is inside the first file (982k tokens); some shard spans the first two files
    assert seen_sources[0] == [FIRST]
    assert [FIRST, SECOND] in seen_sources
    assert seen_sources[-1] == ["sample/10BT/002_00000.parquet"]


def test_code_version_follows_shards_config(tmp_path, edu_mini):
    a = make_cfg(tmp_path, edu_mini)
    assert shards_code_version(a) == shards_code_version(make_cfg(tmp_path, edu_mini))
    assert shards_code_version(a) != shards_code_version(make_cfg(tmp_path, edu_mini, "shards.shard_size=5"))


def test_load_sidecar_missing(tmp_path):
    with pytest.raises(DataError, match="no lineage sidecar"):
        load_sidecar(tmp_path / "x.bin")


# ---------------------------------------------------------------- partition layout


def test_partition_tag():
    tag = partition_tag("sample/10BT/000_00000.parquet")
    assert tag.startswith("000_00000-") and len(tag) == len("000_00000-") + 8
    assert partition_tag("my docs/a b.jsonl").startswith("a-b-")
    assert partition_tag("noext").startswith("noext-")
    # keys that sanitize alike must still get distinct tags (distinct shards, distinct records)
    for a, b in (("a.jsonl", "a.txt"), ("x/y.parquet", "x-y.parquet"), ("d1/f.txt", "d2/f.txt")):
        assert partition_tag(a) != partition_tag(b)


def test_partition_layout(tmp_path, edu_mini, stream_run, enc):
    cfg = make_cfg(tmp_path / "data", edu_mini, f"shards.shard_size={SHARD}", "shards.threads=2")
    first, second = records_for(make_cfg(tmp_path / "data", edu_mini, "corpus.files=2"), tmp_path)
    out = tmp_path / "shards"

    m1 = write_partition_shards(first, out, cfg, is_val_file=True, progress=False)
    tag1 = partition_tag("sample/10BT/000_00000.parquet")
    names1 = ["edu_fineweb_val_000000.bin"] + [f"edu_fineweb_train_{tag1}_{i:06d}.bin" for i in range(1, 4)]
    assert [s["file"] for s in m1["shards"]] == names1  # 982,209 tokens: 3 full + a remainder
    assert [s["split"] for s in m1["shards"]] == ["val", "train", "train", "train"]

    m2 = write_partition_shards(second, out, cfg, is_val_file=False, progress=False)
    tag2 = partition_tag("sample/10BT/001_00000.parquet")
    names2 = [f"edu_fineweb_train_{tag2}_{i:06d}.bin" for i in range(6)]  # 1,620,548 tokens
    assert [s["file"] for s in m2["shards"]] == names2
    assert all(s["split"] == "train" for s in m2["shards"])
    assert bins(out) == sorted(names1 + names2)
    assert len(list(out.glob("edu_fineweb_val_*.bin"))) == 1  # llm.c's globs still split val/train
    assert len(list(out.glob("edu_fineweb_train_*.bin"))) == len(names1) + len(names2) - 1

    # each partition's shards concatenate to its file's own stream
    for rec, m in ((first, m1), (second, m2)):
        texts = pq.read_table(rec.local_path, columns=["text"]).column("text").to_pylist()
        got = np.concatenate([read_tokens(out / s["file"]) for s in m["shards"]])
        np.testing.assert_array_equal(got, reference_stream(enc, texts))
        assert m["tokens"] == len(got) and m["documents"] == len(texts)
        for s in m["shards"]:
            assert s["sha256"] == sha256_file(out / s["file"])
            side = load_sidecar(out / s["file"])
            assert side["layout"] == "partition" and [x["key"] for x in side["sources"]] == [rec.key]

    # manifests, with a data version over the shard hashes
    for rec, m in ((first, m1), (second, m2)):
        on_disk = json.loads(manifest_path(out, rec.key).read_text())
        assert on_disk["data_version"] == m["data_version"] == partition_data_version(m["shards"])
        assert on_disk["key"] == rec.key and on_disk["source"]["sha256"] == rec.sha256
        assert len(on_disk["data_version"]) == 24
    assert manifest_path(out, FIRST).name == f"{tag1}.json"
    assert m1["data_version"] != m2["data_version"]

    # the val shard is the stream layout's val shard (the first file holds >= SHARD tokens)
    _, _, _, stream_out = stream_run
    assert (out / names1[0]).read_bytes() == (stream_out / "edu_fineweb_val_000000.bin").read_bytes()

    # rerun unchanged: same bytes, same data version
    again = write_partition_shards(first, out, cfg, is_val_file=True, progress=False)
    assert again["data_version"] == m1["data_version"]

    # rerun with a bigger shard size: fewer shards, the stale ones and their sidecars are gone
    big = make_cfg(tmp_path / "data", edu_mini, "shards.shard_size=600000", "shards.threads=2")
    m1b = write_partition_shards(first, out, big, is_val_file=True, progress=False)
    assert [s["file"] for s in m1b["shards"]] == ["edu_fineweb_val_000000.bin", f"edu_fineweb_train_{tag1}_000001.bin"]
    assert m1b["data_version"] != m1["data_version"]
    assert bins(out) == sorted(s["file"] for s in m1b["shards"] + m2["shards"])
    assert sorted(p.name for p in out.glob("*.bin.json")) == sorted(n + ".json" for n in bins(out))
    assert json.loads(manifest_path(out, FIRST).read_text())["data_version"] == m1b["data_version"]
    got = np.concatenate([read_tokens(out / s["file"]) for s in m1b["shards"]])
    assert len(got) == m1["tokens"]
    assert temp_files(out) == []


def test_partition_split_label_not_fooled_by_file_name(tmp_path):
    """A source file whose name holds `_val_` still yields train shards (sidecar and manifest)."""
    src = write_jsonl(tmp_path / "c" / "my_val_docs.jsonl", ["one document", "another document"] * 20)
    cfg = make_cfg(tmp_path / "data", src, "shards.shard_size=50")
    (rec,) = records_for(cfg, tmp_path)
    m = write_partition_shards(rec, tmp_path / "out", cfg, is_val_file=False, progress=False)
    assert len(m["shards"]) > 1
    assert all(s["file"].startswith(f"edu_fineweb_train_{partition_tag('my_val_docs.jsonl')}_") for s in m["shards"])
    assert all(s["split"] == "train" for s in m["shards"])
    assert all(load_sidecar(tmp_path / "out" / s["file"])["split"] == "train" for s in m["shards"])


def test_partition_cleanup_spares_a_val_shard_another_partition_rewrote(tmp_path):
    """shards.val_file moves from A to B; B is rematerialized first, then A: A's cleanup of its
    old val shard must not delete B's new one (same file name, another partition's tokens)."""
    a = write_jsonl(tmp_path / "c" / "a.jsonl", [f"alpha {i} " * 10 for i in range(20)])
    write_jsonl(tmp_path / "c" / "b.jsonl", [f"beta {i} " * 10 for i in range(20)])
    cfg = make_cfg(tmp_path / "data", a.parent, "shards.shard_size=100")
    rec_a, rec_b = records_for(cfg, tmp_path)
    assert (rec_a.key, rec_b.key) == ("a.jsonl", "b.jsonl")
    out = tmp_path / "out"
    val = out / "edu_fineweb_val_000000.bin"
    write_partition_shards(rec_a, out, cfg, is_val_file=True, progress=False)
    write_partition_shards(rec_b, out, cfg, is_val_file=False, progress=False)
    # b may not take over a's validation shard silently: the error says what to do ...
    with pytest.raises(DataError, match="holds the validation tokens of a.jsonl"):
        write_partition_shards(rec_b, out, cfg, is_val_file=True, progress=False)
    val.unlink()  # ... which is: delete it, then rematerialize both
    sidecar_path(val).unlink()
    mb = write_partition_shards(rec_b, out, cfg, is_val_file=True, progress=False)  # val_file -> b
    b_val = val.read_bytes()
    assert mb["shards"][0]["file"] == val.name and mb["shards"][0]["sha256"] == sha256_file(val)
    ma = write_partition_shards(rec_a, out, cfg, is_val_file=False, progress=False)
    assert val.name not in {s["file"] for s in ma["shards"]}
    assert val.read_bytes() == b_val
    assert load_sidecar(val)["sources"][0]["key"] == "b.jsonl"
    assert all(c.passed for c in validate_shard(val, load_sidecar(val)["sha256"]))
    # b's own stale train shard 0 (from its non-val run) is gone, a's shards are complete
    assert not (out / f"edu_fineweb_train_{partition_tag('b.jsonl')}_000000.bin").exists()
    assert all((out / s["file"]).exists() for s in ma["shards"] + mb["shards"])


def test_partition_layout_needs_one_record(tmp_path, edu_mini):
    cfg = make_cfg(tmp_path / "data", edu_mini)
    with pytest.raises(ValueError):
        write_shards([], tmp_path / "out", cfg, layout="partition", progress=False)
    assert list((tmp_path / "out").glob(".staging-*")) == []


# ---------------------------------------------------------------- failures while writing


def test_bad_line_midway_fails_cleanly(tmp_path):
    src = tmp_path / "c" / "docs.jsonl"
    write_jsonl(src, [f"document {i} " * 20 for i in range(30)])
    with open(src, "a") as f:
        f.write("{broken json\n")
    cfg = make_cfg(tmp_path / "data", src.parent, "shards.shard_size=100", "shards.batch_documents=4")
    # count_documents reads the whole file, so fetching already reports the line
    with pytest.raises(DataError, match=f"{src}:31"):
        records_for(cfg, tmp_path)
    rec = records_for(make_cfg(tmp_path / "data", src.parent, "corpus.max_documents_per_file=30"), tmp_path)
    with pytest.raises(DataError, match=f"{src}:31") as e:
        write_shards(rec, tmp_path / "out", cfg, progress=False)
    assert "fix or remove the line" in str(e.value)
    assert temp_files(tmp_path) == []




def test_disk_full_while_writing_a_shard(tmp_path, edu_mini, monkeypatch):
    src = edu_mini / FIRST
    cfg = make_cfg(tmp_path / "data", src, "shards.shard_size=20000", "corpus.max_documents_per_file=40",
                   "shards.threads=1")
    records = records_for(cfg, tmp_path)
    out = tmp_path / "out"
    first = write_shards(records, out, cfg, progress=False)
    assert len(first.shards) >= 4
    victim = out / "edu_fineweb_train_000002.bin"
    victim_bytes, victim_sha = victim.read_bytes(), load_sidecar(victim)["sha256"]
    names_before = bins(out)

    real_open = open

    def fake_open(path, mode="r", *args, **kwargs):
        f = real_open(path, mode, *args, **kwargs)
        if "w" in mode and Path(path).name.startswith(f".{victim.name}.tmp-"):
            return FullDiskFile(f, HEADER_BYTES + 3000)  # the disk fills partway through the body
        return f

    monkeypatch.setattr(shards_mod, "open", fake_open, raising=False)
    with pytest.raises(DataError) as e:
        write_shards(records, out, cfg, progress=False)
    msg = str(e.value)
    assert "disk full" in msg and str(victim) in msg
    assert temp_files(tmp_path) == []
    assert list(out.glob(".staging-*")) == []
    # the shard of the earlier run with the same name is intact and still valid
    assert victim.read_bytes() == victim_bytes
    assert all(c.passed for c in validate_shard(victim, victim_sha))
    assert bins(out) == names_before
    monkeypatch.undo()
    # with space again, the run completes and reproduces the same shards
    again = write_shards(records, out, cfg, progress=False)
    assert [s["sha256"] for s in again.shards] == [s["sha256"] for s in first.shards]


def test_failed_rerun_with_new_settings_leaves_every_earlier_shard_intact(tmp_path, edu_mini, monkeypatch):
    """Shards are staged and moved into place only as a complete set: a rerun with another shard
    size that dies on its third shard must not leave shards 0-1 rewritten and 2+ from before."""
    cfg = make_cfg(tmp_path / "data", edu_mini / FIRST, "shards.shard_size=20000",
                   "corpus.max_documents_per_file=40", "shards.threads=1")
    records = records_for(cfg, tmp_path)
    out = tmp_path / "out"
    write_shards(records, out, cfg, progress=False)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}

    real_open = open
    opened = []

    def fake_open(path, mode="r", *args, **kwargs):
        f = real_open(path, mode, *args, **kwargs)
        opened.append(Path(path).name)
        if "w" in mode and Path(path).name.startswith(".edu_fineweb_train_000002.bin.tmp-"):
            return FullDiskFile(f, HEADER_BYTES + 3000)
        return f

    monkeypatch.setattr(shards_mod, "open", fake_open, raising=False)
    cfg.shards.shard_size = 25000
    with pytest.raises(DataError, match="disk full"):
        write_shards(records, out, cfg, progress=False)
    # shards 0 and 1 of the new size were complete (in staging) before the disk filled
    assert any(n.startswith(".edu_fineweb_train_000001.bin.tmp-") for n in opened)
    after = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    assert after == before
    assert list(out.glob(".staging-*")) == []


# ---------------------------------------------------------------- how much of the corpus validation takes


def test_a_large_validation_share_is_told_once_with_its_numbers_and_setting(small_corpus, tmp_path, caplog):
    """A first file smaller than a shard becomes validation whole, in both layouts: `prepare` says so in one
    line with the numbers and the setting that changes it; the partition layout says it once, when the
    last file of the corpus is sharded, and every partition's result carries the share so far."""
    import logging

    from gpt2train.data.stage import materialize_corpus_file, materialize_token_shards, prepare

    sets = ("corpus.max_documents_per_file=6", "shards.shard_size=40000")  # 6 documents: ~30k tokens a file
    cfg = make_cfg(tmp_path / "stream", small_corpus, *sets)
    with caplog.at_level(logging.WARNING, logger="gpt2train"):
        result = prepare(cfg, progress=False)
    told = [r.getMessage() for r in caplog.records if "validation takes" in r.getMessage()]
    val = result.shards[0]["tokens"]
    assert result.shards[0]["split"] == "val" and [s["sources"][0]["key"] for s in result.shards][:1] == [FIRST]
    assert len(told) == 1, told
    assert told[0].startswith(f"validation takes {val / result.tokens:.1%} of the corpus's tokens: {val:,} of "
                              f"{result.tokens:,} in 2 source file(s), all of {FIRST} (fewer tokens than a shard)")
    assert "lower shards.shard_size (now 40,000" in told[0]

    caplog.clear()
    cfg = make_cfg(tmp_path / "parts", small_corpus, *sets)
    keys = [FIRST, SECOND]
    results = []
    with caplog.at_level(logging.WARNING, logger="gpt2train"):
        for key in keys:
            materialize_corpus_file(cfg, key)
            results.append(materialize_token_shards(cfg, key, progress=False, corpus_keys=keys))
        materialize_token_shards(cfg, SECOND, progress=False, corpus_keys=keys)  # again: the same split, not told again
    told = [r.getMessage() for r in caplog.records if "validation takes" in r.getMessage()]
    first, second = results
    assert [s["split"] for s in first["shards"]] == ["val"]  # the whole first file
    assert first["validation"]["files_sharded"] == 1 and first["validation"]["share"] == 1.0
    v = second["validation"]
    assert (v["files_sharded"], v["files_in_corpus"], v["whole_files"]) == (2, 2, [FIRST])
    assert v["val_tokens"] == first["tokens"] and v["total_tokens"] == first["tokens"] + second["tokens"]
    assert len(told) == 1 and f"{v['val_tokens']:,} of {v['total_tokens']:,} in 2 source file(s)" in told[0], told
    assert "or set shards.val_file" in told[0]

    # Validation that takes one shard of a large file and a small share says nothing.
    big = make_cfg(tmp_path / "quiet", small_corpus, "corpus.max_documents_per_file=60", "shards.shard_size=20000")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="gpt2train"):
        result = prepare(big, progress=False)
    assert result.shards[0]["tokens"] / result.tokens < 0.1
    assert not [r for r in caplog.records if "validation takes" in r.getMessage()]
