"""One hash per byte: every file is hashed once where it is produced (or first fetched), and every later
check reads that record (issue 26). The hashing function logs each pass when GPT2TRAIN_HASH_LOG names a
file (gpt2train/fileio.py), in this process and in the ones it starts (torchrun's ranks), so these tests
count the passes over each file: `prepare`, the data stage's two materializations, the shard checks, the
trainer's verify_shards in one process and across a 2-rank launch.

What makes a later check skip the hash (gpt2train/data/shards.py): a shard's verification record, written
by a check that hashed it whole, vouches for it while the sidecar's sha256 and the file's stamp (size,
mtime, ctime, inode) are the recorded ones; a source file's corpus record does the same with its stamp.
"""

from __future__ import annotations

import collections
import json
import os
import re
import shutil
from pathlib import Path

import pytest

from gpt2train.config import load_config
from gpt2train.data.shard_writer import STAGING_PREFIX
from gpt2train.data.shards import HEADER_BYTES, validate_shard, verification_path, verify_shard_hashes
from gpt2train.data.stage import materialize_corpus_file, materialize_token_shards, prepare
from gpt2train.fileio import HASH_LOG_ENV
from gpt2train.lineage.records import sidecar_path
from tests.faults import TWO_RANK_SETS, TorchrunJob

KEYS = ("sample/10BT/000_00000.parquet", "sample/10BT/001_00000.parquet")


@pytest.fixture
def hash_log(tmp_path, monkeypatch):
    """Counts of hash passes per file (resolved path) since the test began, read on call."""
    log = tmp_path / "hash.log"
    log.touch()
    monkeypatch.setenv(HASH_LOG_ENV, str(log))

    def passes(under: Path | None = None) -> collections.Counter:
        count: collections.Counter = collections.Counter()
        for line in log.read_text().splitlines():
            nbytes, _, path = line.split("\t")
            path = where_published(Path(path))
            if under is None or path.is_relative_to(under.resolve()):
                assert int(nbytes) == path.stat().st_size, line  # a pass reads the whole file
                count[path] += 1
        return count

    passes.lines = lambda: log.read_text().splitlines()  # type: ignore[attr-defined]
    return passes


def where_published(path: Path) -> Path:
    """A file hashed before its rename into place is counted as the file it becomes: a shard in its writer's
    staging folder (gpt2train/data/shard_writer.py), a Hub download's partial file (gpt2train/data/hub.py)."""
    if path.parent.name.startswith(STAGING_PREFIX):
        return path.parent.parent / path.name
    local_dir, sep, part = path.as_posix().partition("/.cache/huggingface/download/")
    return Path(local_dir, re.sub(r"\.[0-9a-f]{64}\.incomplete$", "", part)) if sep else path


def shards_in(folder: Path) -> set[Path]:
    return {p.resolve() for p in folder.glob("*.bin")}


def sources(corpus: Path) -> set[Path]:
    return {(corpus / k).resolve() for k in KEYS}


def verify(*patterns: str) -> None:
    """verify_shard_hashes in one process, its records written as the trainer writes them."""
    found = verify_shard_hashes(list(patterns))
    assert found.problems == []
    found.record()


def test_prepare_hashes_each_source_file_and_shard_once(tmp_path, small_corpus, hash_log):
    cfg = load_config("tiny", [f"data_dir={tmp_path / 'data'}", f"corpus.source={small_corpus}",
                               "corpus.max_documents_per_file=40", "shards.shard_size=50000"])
    out = tmp_path / "data" / "prepared"
    prepare(cfg, out, progress=False)
    passes = hash_log()
    assert len(shards_in(out)) > 2
    assert {p: passes[p] for p in sources(small_corpus) | shards_in(out)} == \
        dict.fromkeys(sources(small_corpus) | shards_in(out), 1)


def test_the_data_stage_and_its_checks_hash_each_byte_once(tmp_path, small_corpus, hash_log, instance):
    from pipelines.runner import run_shard_checks

    cfg = load_config("tiny", [f"data_dir={tmp_path / 'data'}", f"corpus.source={small_corpus}",
                               "corpus.max_documents_per_file=40", "shards.shard_size=50000"])
    for key in KEYS:  # the corpus asset's and the token_shards asset's functions, as their runs call them
        materialize_corpus_file(cfg, key)
        materialize_token_shards(cfg, key, progress=False, corpus_keys=list(KEYS))
    out = tmp_path / "data" / "shards"
    made = shards_in(out)
    assert hash_log(tmp_path) == collections.Counter(dict.fromkeys(sources(small_corpus) | made, 1))

    # The four asset checks of a partition: one Dagster op, one read of each of its shards for all four
    # (counted under tmp_path: building the definitions hashes the eval tasks' files).
    evaluations = run_shard_checks(cfg, instance, KEYS[1])
    assert {name: e.passed for name, e in evaluations.items()} == {
        "header": True, "size_matches_header": True, "tokens_in_vocab": True, "sha256_matches_sidecar": True}
    checked = {p for p in made if "001_00000" in p.name}
    assert checked and hash_log(tmp_path) == collections.Counter(
        {**dict.fromkeys(sources(small_corpus) | made, 1), **dict.fromkeys(checked, 2)})
    assert all(verification_path(p).is_file() for p in checked)

    # The trainer's verify_shards hashes only what no check vouched for: the other partition's shards.
    before = hash_log(tmp_path)
    verify(str(out / "*.bin"))
    assert hash_log(tmp_path) - before == collections.Counter(dict.fromkeys(made - checked, 1))
    before = hash_log(tmp_path)
    verify(str(out / "*.bin"))  # the next launch: every shard vouched for
    assert hash_log(tmp_path) == before


def test_a_record_vouches_only_while_the_file_is_as_it_was_checked(tiny_shards, tmp_path, hash_log):
    shards = tmp_path / "shards"
    shutil.copytree(tiny_shards / "shards", shards)  # a copy: new inodes, so no record of the original vouches
    files = sorted(shards.glob("*.bin"))
    pattern = [str(shards / "*.bin")]
    verify(*pattern)
    assert hash_log(shards) == collections.Counter({p.resolve(): 1 for p in files})

    touched, flipped = files[1], files[2]
    os.utime(touched)  # a new mtime, the same bytes: hashed again, and passes
    mtime = flipped.stat().st_mtime_ns
    data = bytearray(flipped.read_bytes())
    data[HEADER_BYTES + 101] ^= 0x10
    flipped.write_bytes(bytes(data))
    os.utime(flipped, ns=(mtime, mtime))  # the old mtime back: the ctime still says it was written
    before = hash_log(shards)
    problems = verify_shard_hashes(pattern).problems
    assert len(problems) == 1 and str(flipped) in problems[0] and "differs from" in problems[0]
    assert hash_log(shards) - before == collections.Counter({touched.resolve(): 1, flipped.resolve(): 1})

    # A regenerated sidecar (another sha256) makes the record vouch for nothing, whatever the stamp.
    sidecar = json.loads(sidecar_path(touched).read_text())
    sidecar_path(touched).write_text(json.dumps({**sidecar, "sha256": "0" * 64}))
    before = hash_log(shards)
    assert any(str(touched) in p for p in verify_shard_hashes(pattern).problems)
    assert hash_log(shards) - before == collections.Counter({touched.resolve(): 1, flipped.resolve(): 1})


def test_ranks_split_the_shards_and_each_is_hashed_by_one(tiny_shards, tmp_path, hash_log):
    shards = tmp_path / "shards"
    shutil.copytree(tiny_shards / "shards", shards)
    pattern = [str(shards / "*_train_*.bin"), str(shards / "*_val_*.bin")]
    for rank in (0, 1):
        found = verify_shard_hashes(pattern, rank, 2)
        assert found.problems == [] and 0 < len(found.verified) < len(shards_in(shards))
    assert hash_log(shards) == collections.Counter({p: 1 for p in shards_in(shards)})

    # A sidecar that cannot be read is a verdict of the rank whose share it is, not an error raised there
    # alone: the trainer's ranks exchange verdicts, so every rank stops with the same message.
    broken = min(shards.glob("*_train_*.bin"))
    sidecar_path(broken).write_text("{not json")
    lines = [verify_shard_hashes(pattern, rank, 2).problems for rank in (0, 1)]
    assert sorted(map(len, lines)) == [0, 1] and sidecar_path(broken).name in sum(lines, [])[0]


def test_a_file_fetched_from_the_hub_is_hashed_once(hub_server, tmp_path, hash_log, monkeypatch):
    """The download checks the file against the Hub's sha256, and that hash is the record's: neither the
    corpus stage nor `hf_hub_download` (which hashes a file it finds without its metadata) reads it again;
    a second fetch of the downloaded file hashes it once, for its record."""
    import huggingface_hub.file_download as file_download

    from gpt2train.data.corpus import fetch_source_file
    from tests.fixtures.hub import hub_cfg

    library_hashes = []
    library_sha = file_download.sha_fileobj
    monkeypatch.setattr(file_download, "sha_fileobj", lambda f, *a, **k: library_hashes.append(f.name) or
                        library_sha(f, *a, **k))
    cfg = hub_cfg(tmp_path / "data")
    record = fetch_source_file(cfg.corpus, KEYS[1], Path(cfg.data_dir))
    local = Path(record.local_path).resolve()
    assert hash_log(tmp_path) == collections.Counter({local: 1}) and library_hashes == []
    again = fetch_source_file(cfg.corpus, KEYS[1], Path(cfg.data_dir))
    assert again.sha256 == record.sha256 and hash_log(tmp_path) == collections.Counter({local: 2})
    assert library_hashes == [] and len(hub_server.gets(KEYS[1])) == 1


def test_validate_shard_reads_a_shard_once_for_its_four_checks(tiny_shards, hash_log):
    shard = min((tiny_shards / "shards").glob("*_train_*.bin"))
    sha = json.loads(sidecar_path(shard).read_text())["sha256"]
    checks = validate_shard(shard, sha)
    assert [c.name for c in checks if c.passed] == ["header", "size_matches_header", "tokens_in_vocab",
                                                     "sha256_matches_sidecar"]
    assert hash_log() == collections.Counter({shard.resolve(): 1})


@pytest.mark.e2e
def test_a_two_rank_launch_hashes_each_shard_once_and_its_relaunch_none(tiny_shards, tmp_path, hash_log):
    data = tmp_path / "data"
    shutil.copytree(tiny_shards / "shards", data / "shards")  # new inodes: nothing vouched for yet
    shards = shards_in(data / "shards")
    for launch in (1, 2):  # the second finds the run complete and trains nothing, but verifies first
        job = TorchrunJob(data, tmp_path / "run", tmp_path / f"torchrun-{launch}.log",
                          (*TWO_RANK_SETS, "train.max_steps=2"), env={HASH_LOG_ENV: os.environ[HASH_LOG_ENV]})
        try:
            assert job.proc.wait(timeout=300) == 0, job.output()[-3000:]
        finally:
            job.cleanup()
        lines = [line.split("\t") for line in hash_log.lines()]
        by_shard = collections.Counter(Path(p) for _, _, p in lines if Path(p) in shards)
        pids = {pid for _, pid, p in lines if Path(p) in shards}
        # Each shard once across the job, the two ranks a share each; at the relaunch, none.
        assert by_shard == collections.Counter(dict.fromkeys(shards, 1)), launch
        assert len(pids) == 2

    # A shard changed since: only the rank whose share it is hashes it, and every rank stops with its verdict
    # (the same line from every rank that prints one: gpt2train/train.py print_error_once).
    flipped = min((data / "shards").glob("*_train_*.bin"))
    raw = bytearray(flipped.read_bytes())
    raw[HEADER_BYTES + 11] ^= 0x01
    flipped.write_bytes(bytes(raw))
    job = TorchrunJob(data, tmp_path / "run", tmp_path / "torchrun-3.log", (*TWO_RANK_SETS, "train.max_steps=2"))
    try:
        assert job.proc.wait(timeout=300) != 0
    finally:
        job.cleanup()
    said = [line for line in job.output().splitlines() if line.startswith("gpt2train train: error:")]
    assert len(set(said)) == 1 and str(flipped) in said[0] and "differs from" in said[0], job.output()[-3000:]
    assert collections.Counter(Path(line.split("\t")[2]) for line in hash_log.lines())[flipped.resolve()] == 2
