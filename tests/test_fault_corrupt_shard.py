"""A shard corrupted after it was written is found before training reads it, and named.

Each corruption is applied to a copy of real prepared shards (train and val), then training
is started: it must fail with a DataError naming the file before any step runs or anything is
written to the run directory. A flipped bit in the body or in an unused header word passes every
structural check; only the sha256 against the shard's sidecar catches it.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from gpt2train.config import load_config
from gpt2train.errors import DataError
from gpt2train.data.shards import HEADER_BYTES
from gpt2train.training.loop import train


def flip_bit(path, offset):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x10
    path.write_bytes(bytes(data))


def truncate(path, nbytes):
    data = path.read_bytes()
    path.write_bytes(data[:-nbytes])


def set_header_int(path, index, value):
    data = bytearray(path.read_bytes())
    data[4 * index : 4 * index + 4] = np.int32(value).tobytes()
    path.write_bytes(bytes(data))


# (id, corruption, what the error must say)
CORRUPTIONS = [
    ("bit-in-tokens", lambda p: flip_bit(p, HEADER_BYTES + 2 * 1001 + 1), "differs from"),
    ("bit-in-last-token", lambda p: flip_bit(p, p.stat().st_size - 1), "differs from"),
    ("bit-in-unused-header-word", lambda p: flip_bit(p, 4 * 17), "differs from"),
    ("truncated-by-100-bytes", lambda p: truncate(p, 100), "truncated or corrupt"),
    ("truncated-inside-header", lambda p: truncate(p, p.stat().st_size - 100), "shorter than the"),
    ("magic-of-another-tokenizer", lambda p: set_header_int(p, 0, 20240801), "magic 20240801"),
    ("version-changed", lambda p: set_header_int(p, 1, 2), "version 2"),
    ("token-count-changed", lambda p: set_header_int(p, 2, 1000), "header says 1000 tokens"),
]


@pytest.fixture
def data(tiny_shards, tmp_path):
    copy = tmp_path / "data"
    shutil.copytree(tiny_shards / "shards", copy / "shards")
    return copy


@pytest.mark.parametrize("split", ["train", "val"])
@pytest.mark.parametrize("name,corrupt,says", CORRUPTIONS, ids=[c[0] for c in CORRUPTIONS])
def test_corrupted_shard_is_named_before_training_reads_it(data, tmp_path, split, name, corrupt, says):
    shard = sorted((data / "shards").glob(f"edu_fineweb_{split}_*.bin"))[-1]
    corrupt(shard)
    out = tmp_path / "run"
    cfg = load_config("tiny", [f"data_dir={data}", f"train.out_dir={out}", "train.max_steps=2",
                               "train.val_every=1", "train.hellaswag_every=0"])
    with pytest.raises(DataError) as e:
        train(cfg)
    assert str(shard) in str(e.value) and says in str(e.value)
    assert "rematerialize" in str(e.value) or "regenerate" in str(e.value)  # says what to do
    assert not out.exists()  # no step ran, no log, metrics or checkpoint was written


def test_verify_shards_off_skips_the_hash(data, tmp_path):
    # The documented escape hatch (e.g. shards edited on purpose): the flip is then not detected.
    shard = sorted((data / "shards").glob("edu_fineweb_train_*.bin"))[-1]
    flip_bit(shard, HEADER_BYTES + 2 * 1001 + 1)
    cfg = load_config("tiny", [f"data_dir={data}", f"train.out_dir={tmp_path / 'run'}", "train.max_steps=1",
                               "train.val_every=0", "train.hellaswag_every=0", "train.verify_shards=false",
                               "train.sample_tokens=2"])
    assert train(cfg).steps == 1
