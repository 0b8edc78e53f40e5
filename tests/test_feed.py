"""`prepare` keeps every core busy across source files (gpt2train/data/feed.py): fetches run ahead of the
tokenizer, the next file is read while this one is tokenized, one tokenizer window spans files, and shards
are finished on a thread of their own. None of it may change a token, a sidecar, or what a failure leaves."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import Future
from pathlib import Path

import numpy as np
import pytest

from gpt2train.config import load_config
from gpt2train.data import shard_writer, stage
from gpt2train.data.feed import documents_of, done_future, fetch_ahead, wait_all
from gpt2train.data.stage import prepare
from gpt2train.data.tokenizer import DocumentEncoder
from gpt2train.errors import DataError

WAIT = 20  # seconds: only reached when the overlap under test is missing


def write_jsonl(path: Path, texts) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return path


def every_file(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and ".lock" not in p.name)


@pytest.fixture
def three_files(tmp_path):
    src = tmp_path / "c"
    for i in range(3):
        write_jsonl(src / f"{i}.jsonl", [f"file {i} document {j} " * (5 + j % 7) for j in range(60)])
    return src


def cfg_for(tmp_path, src, *overrides):
    return load_config("tiny", overrides=[f"data_dir={tmp_path / 'data'}", f"corpus.source={src}",
                                          "shards.shard_size=1000", "shards.batch_documents=7", *overrides])


def test_one_window_across_files_gives_each_files_tokens_unmixed():
    """`encode_tagged` over batches of three tags equals encoding each tag's documents alone, and no piece of
    output mixes two tags (the sink names each shard's source files from them)."""
    docs = {tag: [f"{tag} says {j} " * (1 + j % 5) for j in range(40)] for tag in ("a", "b", "c")}
    batches = [(tag, docs[tag][k:k + 3]) for tag in docs for k in range(0, 40, 3)]
    with DocumentEncoder("gpt2", threads=2) as encoder:
        pieces = list(encoder.encode_tagged(batches))
        alone = {tag: encoder.encode_batch(docs[tag]) for tag in docs}
    tags = [tag for _, _, tag in pieces]
    assert tags == sorted(tags)  # in input order
    for tag in docs:
        got = np.concatenate([t for t, _, g in pieces if g == tag])
        np.testing.assert_array_equal(got, alone[tag])
        assert sum(n for _, n, g in pieces if g == tag) == len(docs[tag])


def test_the_next_file_is_read_while_this_one_is_consumed():
    next_opened = threading.Event()

    def open_batches(name):
        if name == "second":
            next_opened.set()
        yield from ([f"{name} {k}"] for k in range(5))

    seen = []
    for name, texts in documents_of([done_future("first"), done_future("second")], open_batches):
        if name == "first" and not seen:
            # Without read-ahead across files, "second" is opened only after "first" is used up.
            assert next_opened.wait(WAIT), "the next file's reader had not started while this one was consumed"
        seen.append(texts[0])
    assert seen == [f"first {k}" for k in range(5)] + [f"second {k}" for k in range(5)]


def test_the_first_failure_in_corpus_order_is_raised_whatever_finishes_first():
    first, second, third = done_future("ok"), Future(), Future()
    third.set_exception(DataError("third is bad"))
    threading.Timer(0.2, lambda: second.set_exception(DataError("second is bad"))).start()
    with pytest.raises(DataError, match="second is bad"):
        wait_all([first, second, third])


def test_a_later_files_failed_fetch_stops_the_reading_of_an_earlier_one():
    bad: Future = Future()
    consumed = []

    def open_batches(name):
        for k in range(1000):
            if k == 3:
                bad.set_exception(DataError("file 3: no column 'text'"))
            yield [f"{name} {k}"]

    with pytest.raises(DataError, match="file 3"):
        for _, texts in documents_of([done_future("one"), done_future("two"), bad], open_batches):
            consumed.append(texts)
    assert len(consumed) < 10  # stopped at once, not after the first two files' 2,000 batches


def test_prepare_tokenizes_the_first_file_while_later_ones_are_hashed(tmp_path, three_files, monkeypatch):
    """The last file's hash waits until the first file's documents are being read: with every hash before
    the first token (the old order), it would wait in vain and fail."""
    first_read = threading.Event()
    real_hash, real_read = stage.hash_checked_file, shard_writer.iter_document_batches

    def hash_checked_file(corpus, checked, data_dir):
        if checked.key == "2.jsonl" and not first_read.wait(WAIT):
            raise AssertionError("no document was read before the last file's hash ended")
        return real_hash(corpus, checked, data_dir)

    def read(path, *args, **kwargs):
        if Path(path).name == "0.jsonl":
            first_read.set()
        yield from real_read(path, *args, **kwargs)

    monkeypatch.setattr(stage, "hash_checked_file", hash_checked_file)
    monkeypatch.setattr(shard_writer, "iter_document_batches", read)
    cfg = cfg_for(tmp_path, three_files)
    result = prepare(cfg, tmp_path / "out", progress=False)
    assert result.documents == 180
    monkeypatch.undo()
    # The same shards as one file after the other, one window per file (the tokens do not depend on it).
    sequential = cfg_for(tmp_path / "seq", three_files)
    records = [stage.fetch_source_file(sequential.corpus, f"{i}.jsonl", tmp_path / "seq") for i in range(3)]
    again = shard_writer.write_shards(records, tmp_path / "seq-out", sequential, progress=False)
    assert [s["sha256"] for s in again.shards] == [s["sha256"] for s in result.shards]
    assert [[src["key"] for src in s["sources"]] for s in again.shards] == \
        [[src["key"] for src in s["sources"]] for s in result.shards]


def test_a_bad_last_file_stops_prepare_before_anything_is_written(tmp_path, three_files):
    with open(three_files / "2.jsonl", "a") as f:
        f.write("{broken json\n")
    cfg = cfg_for(tmp_path, three_files)
    with pytest.raises(DataError, match=f"{three_files / '2.jsonl'}:61"):
        prepare(cfg, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists() and not (tmp_path / "data").exists()  # not even a lock file


def test_a_file_changed_after_its_check_stops_prepare_mid_run_with_nothing_published(tmp_path, three_files,
                                                                                      monkeypatch):
    """Hashing runs while earlier files are tokenized: a file appended to after it was counted is refused
    then, and the shards of the files before it (in staging) and every record are left unwritten."""
    real_hash = stage.hash_checked_file

    def hash_after_an_append(corpus, checked, data_dir):
        if checked.key == "2.jsonl":
            with open(three_files / "2.jsonl", "a") as f:
                f.write(json.dumps({"text": "appended"}) + "\n")
        return real_hash(corpus, checked, data_dir)

    monkeypatch.setattr(stage, "hash_checked_file", hash_after_an_append)
    cfg = cfg_for(tmp_path, three_files)
    with pytest.raises(DataError, match=f"{three_files / '2.jsonl'} changed after it was counted"):
        prepare(cfg, tmp_path / "out", progress=False)
    assert every_file(tmp_path / "out") == []
    assert [f for f in every_file(tmp_path / "data") if "records" in f] == []


def test_a_shard_that_cannot_be_finished_stops_the_run_and_publishes_nothing(tmp_path, three_files, monkeypatch):
    """Shards are finished (hashed, sidecar written) on their own thread; a failure there stops the stream
    like one in the writer, and the earlier run's shards stay as they were."""
    cfg = cfg_for(tmp_path, three_files)
    before = prepare(cfg, tmp_path / "out", progress=False)
    assert len(before.shards) >= 3
    snapshot = {p: p.read_bytes() for p in (tmp_path / "out").iterdir() if p.is_file()}
    real = shard_writer._shard_sidecar

    def sidecar(path, index, *args):
        if index == 1:
            time.sleep(0.1)  # still finishing while the writer goes on
            raise DataError(f"{path}: cannot write its sidecar")
        return real(path, index, *args)

    monkeypatch.setattr(shard_writer, "_shard_sidecar", sidecar)
    with pytest.raises(DataError, match="cannot write its sidecar"):
        prepare(cfg, tmp_path / "out", progress=False)
    assert {p: p.read_bytes() for p in (tmp_path / "out").iterdir() if p.is_file()} == snapshot
    assert list((tmp_path / "out").glob(".staging-*")) == []


def test_an_error_does_not_wait_for_a_fetch_still_running():
    """After an error (or Ctrl-C), a download in flight is left to end on its own thread rather than held
    for: the next run resumes it (gpt2train/data/hub.py)."""
    release = threading.Event()

    def fetch(key):
        if key == "slow":
            release.wait(WAIT)
        return key

    t0 = time.perf_counter()
    with pytest.raises(KeyboardInterrupt):
        with fetch_ahead(["fast", "slow", "later"], fetch, workers=2) as fetches:
            assert fetches[0].result(WAIT) == "fast"
            raise KeyboardInterrupt
    assert time.perf_counter() - t0 < WAIT / 2  # the blocked fetch would hold it for WAIT
    release.set()
    assert fetches[1].result(WAIT) == "slow"


def test_closing_the_documents_does_not_wait_for_the_next_files_fetch():
    """The next file's reader waits for its fetch on its own thread; an error in this file must not then
    wait for that fetch (a download) to end."""
    slow: Future = Future()  # never finishes in this test
    t0 = time.perf_counter()
    with pytest.raises(DataError, match="bad document"):
        for _ in documents_of([done_future("first"), slow], lambda name: iter([["a"], ["b"]])):
            raise DataError("bad document")
    assert time.perf_counter() - t0 < WAIT / 2  # waiting for the fetch would hang here
    slow.set_result("second")
