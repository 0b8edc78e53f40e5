"""llm.c's .bin shard format: header, reading, the four validation checks, atomic writes."""

from __future__ import annotations

import errno
import json

import numpy as np
import pytest

from tests.faults import FullDiskFile
from gpt2train import fileio
from gpt2train.data import shards
from gpt2train.errors import DataError
from gpt2train.fileio import atomic_output, read_json, sha256_file, write_json_atomic
from gpt2train.data.shards import (
    HEADER_BYTES,
    SHARD_MAGIC,
    ShardFileWriter,
    make_header,
    read_header,
    read_tokens,
    validate_shard,
)


def temp_files(folder):
    return sorted(p.name for p in folder.rglob(".*.tmp-*"))


def write_shard(path, tokens) -> None:
    w = ShardFileWriter(path)
    w.write(np.asarray(tokens))
    w.finish()


def check_map(checks) -> dict[str, bool]:
    return {c.name: c.passed for c in checks}


@pytest.fixture
def good_shard(tmp_path):
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 50000, size=5000).astype(np.uint16)
    tokens[0] = 50256
    path = tmp_path / "edu_fineweb_train_000001.bin"
    write_shard(path, tokens)
    return path, tokens


# ---------------------------------------------------------------- format


def test_header_layout_is_llmc():
    h = np.frombuffer(make_header(1234), dtype="<i4")
    assert len(h) == 256 and HEADER_BYTES == 1024
    assert h[0] == 20240520 and h[1] == 1 and h[2] == 1234
    assert not h[3:].any()


def test_writer_bytes_match_llmc_definition(good_shard):
    path, tokens = good_shard
    header = np.zeros(256, dtype=np.int32)
    header[:3] = [20240520, 1, len(tokens)]
    assert path.read_bytes() == header.tobytes() + tokens.astype("<u2").tobytes()


def test_writer_streams_in_pieces_and_leaves_no_temp(tmp_path):
    path = tmp_path / "sub" / "s.bin"
    w = ShardFileWriter(path)
    assert not path.exists()  # only the temp name exists while writing
    assert temp_files(tmp_path) == [f".s.bin.tmp-{__import__('os').getpid()}"]
    for chunk in (np.arange(10), np.arange(10, 25, dtype=np.uint32), np.array([], dtype=np.uint16)):
        w.write(chunk)
    assert w.finish() == path
    assert temp_files(tmp_path) == []
    np.testing.assert_array_equal(read_tokens(path), np.arange(25))
    assert read_header(path)[2] == 25


def test_read_tokens_is_readonly_memmap(good_shard):
    path, tokens = good_shard
    got = read_tokens(path)
    assert isinstance(got, np.memmap) and got.dtype == np.uint16
    np.testing.assert_array_equal(got, tokens)
    with pytest.raises(ValueError):
        got[0] = 1


def test_empty_shard_reads_back(tmp_path):
    path = tmp_path / "empty.bin"
    write_shard(path, np.array([], dtype=np.uint16))
    assert path.stat().st_size == HEADER_BYTES
    assert len(read_tokens(path)) == 0


# ---------------------------------------------------------------- validation


def test_good_shard_passes_all_checks(good_shard):
    path, _ = good_shard
    checks = validate_shard(path, sha256_file(path))
    assert [c.name for c in checks] == ["header", "size_matches_header", "tokens_in_vocab", "sha256_matches_sidecar"]
    assert all(c.passed for c in checks), checks


def test_flipped_bit_fails_sha256_only(good_shard):
    path, tokens = good_shard
    sha = sha256_file(path)
    data = bytearray(path.read_bytes())
    i = int(np.argmax(tokens < 40000))  # a token that stays in the vocabulary after flipping bit 0
    data[HEADER_BYTES + 2 * i] ^= 0x01
    path.write_bytes(bytes(data))
    checks = check_map(validate_shard(path, sha))
    assert checks == {"header": True, "size_matches_header": True, "tokens_in_vocab": True,
                      "sha256_matches_sidecar": False}


def test_truncated_shard(good_shard):
    path, _ = good_shard
    sha = sha256_file(path)
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size - 3)
    checks = check_map(validate_shard(path, sha))
    assert checks["header"] is True
    assert checks["size_matches_header"] is False
    assert checks["tokens_in_vocab"] is False  # not checked
    assert checks["sha256_matches_sidecar"] is False
    with pytest.raises(DataError) as e:
        read_header(path)
    assert str(path) in str(e.value) and "truncated" in str(e.value)
    with pytest.raises(DataError):
        read_tokens(path)


def test_truncated_inside_header(good_shard):
    path, _ = good_shard
    with open(path, "r+b") as f:
        f.truncate(100)
    checks = check_map(validate_shard(path, None))
    assert not any(checks.values())
    with pytest.raises(DataError) as e:
        read_header(path)
    assert str(path) in str(e.value) and "100 bytes" in str(e.value)


def test_bad_magic(good_shard):
    path, _ = good_shard
    data = bytearray(path.read_bytes())
    data[0:4] = np.array([20240801], dtype="<i4").tobytes()  # llm.c's llama-3 magic
    path.write_bytes(bytes(data))
    checks = validate_shard(path, sha256_file(path))
    header = next(c for c in checks if c.name == "header")
    assert not header.passed and "magic" in header.detail and "20240801" in header.detail
    assert not check_map(checks)["size_matches_header"]
    with pytest.raises(DataError) as e:
        read_header(path)
    assert "magic" in str(e.value) and str(SHARD_MAGIC) in str(e.value) and str(path) in str(e.value)


def test_bad_version(good_shard):
    path, _ = good_shard
    data = bytearray(path.read_bytes())
    data[4:8] = np.array([2], dtype="<i4").tobytes()
    path.write_bytes(bytes(data))
    assert not check_map(validate_shard(path, None))["header"]
    with pytest.raises(DataError, match="version 2"):
        read_header(path)


def test_tokens_out_of_vocab(tmp_path):
    path = tmp_path / "crafted.bin"
    write_shard(path, np.array([50256, 17, 50257, 3], dtype=np.uint16))
    checks = validate_shard(path, sha256_file(path))
    m = check_map(checks)
    assert m == {"header": True, "size_matches_header": True, "tokens_in_vocab": False,
                 "sha256_matches_sidecar": True}
    assert "50257" in next(c for c in checks if c.name == "tokens_in_vocab").detail
    # 50256 is the largest valid id
    ok = tmp_path / "ok.bin"
    write_shard(ok, np.array([50256, 0], dtype=np.uint16))
    assert check_map(validate_shard(ok, sha256_file(ok)))["tokens_in_vocab"]


def test_missing_shard_and_missing_sidecar(tmp_path, good_shard):
    path, _ = good_shard
    m = check_map(validate_shard(path, None))
    assert m["sha256_matches_sidecar"] is False and m["header"] and m["tokens_in_vocab"]
    gone = tmp_path / "gone.bin"
    assert not any(check_map(validate_shard(gone, "0" * 64)).values())
    with pytest.raises(DataError, match="not found"):
        read_header(gone)


# ---------------------------------------------------------------- disk full in the shard writer




def test_shard_writer_disk_full(tmp_path, monkeypatch):
    path = tmp_path / "s.bin"
    write_shard(path, np.arange(100))  # an earlier complete shard with the same name
    before = path.read_bytes()
    real_open = open
    monkeypatch.setattr(shards, "open",
                        lambda p, mode="r", *a, **k: FullDiskFile(real_open(p, mode, *a, **k), HEADER_BYTES + 50),
                        raising=False)
    w = ShardFileWriter(path)
    w.write(np.arange(10))
    with pytest.raises(DataError) as e:
        w.write(np.arange(1000))
    assert "disk full" in str(e.value) and str(path) in str(e.value)
    assert isinstance(e.value.__cause__, OSError) and e.value.__cause__.errno == errno.ENOSPC
    assert temp_files(tmp_path) == []
    assert path.read_bytes() == before


def test_shard_writer_other_errors_propagate_unchanged(tmp_path, monkeypatch):
    path = tmp_path / "s.bin"
    w = ShardFileWriter(path)
    monkeypatch.setattr(shards.os, "replace", lambda *a: (_ for _ in ()).throw(PermissionError(errno.EACCES, "no")))
    with pytest.raises(PermissionError):
        w.finish()
    assert temp_files(tmp_path) == [] and not path.exists()


# ---------------------------------------------------------------- fileio


def test_atomic_output_exception_keeps_old_file(tmp_path):
    path = tmp_path / "a.json"
    path.write_text("old")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_output(path, "w") as f:
            f.write("new, half written")
            raise RuntimeError("boom")
    assert path.read_text() == "old"
    assert temp_files(tmp_path) == []


def test_atomic_output_success_replaces(tmp_path):
    path = tmp_path / "deep" / "a.bin"
    with atomic_output(path) as f:
        f.write(b"one")
        assert not path.exists()
    assert path.read_bytes() == b"one"
    with atomic_output(path) as f:
        f.write(b"two")
    assert path.read_bytes() == b"two"
    assert temp_files(tmp_path) == []


def test_atomic_output_disk_full(tmp_path):
    path = tmp_path / "a.bin"
    path.write_bytes(b"old")
    with pytest.raises(DataError) as e:
        with atomic_output(path) as f:
            f.write(b"x")
            raise OSError(errno.ENOSPC, "No space left on device")
    assert "disk full" in str(e.value) and str(path) in str(e.value) and "MiB free" in str(e.value)
    assert path.read_bytes() == b"old"
    assert temp_files(tmp_path) == []


def test_json_helpers(tmp_path):
    path = tmp_path / "x.json"
    write_json_atomic(path, {"b": 1, "a": [1, 2]})
    assert json.loads(path.read_text()) == {"a": [1, 2], "b": 1}
    assert read_json(path, "thing") == {"a": [1, 2], "b": 1}
    with pytest.raises(DataError, match="thing .* not found"):
        read_json(tmp_path / "missing.json", "thing")
    path.write_text("{not json")
    with pytest.raises(DataError) as e:
        read_json(path, "thing")
    assert str(path) in str(e.value) and "not valid JSON" in str(e.value)


def test_sha256_file(tmp_path):
    import hashlib

    p = tmp_path / "f"
    data = bytes(range(256)) * 5000
    p.write_bytes(data)
    assert sha256_file(p) == hashlib.sha256(data).hexdigest()
    assert fileio.temp_path_for(p).name.startswith(".f.tmp-")
