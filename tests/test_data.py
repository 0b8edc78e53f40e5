"""The training loader: llm.c's global-batch slicing, per-epoch shuffles, exact resume."""

from __future__ import annotations

import numpy as np
import pytest

from gpt2train.data.loader import ShardLoader
from gpt2train.errors import DataError
from gpt2train.data.shards import make_header


def write_shard(path, tokens):
    path.write_bytes(make_header(len(tokens)) + np.asarray(tokens, dtype="<u2").tobytes())


@pytest.fixture
def shards(tmp_path):
    # 3 shards of distinct, position-coding tokens: token value = global position mod 50000
    sizes = [1001, 640, 1333]
    start = 0
    for i, n in enumerate(sizes):
        write_shard(tmp_path / f"x_train_{i:06d}.bin", (np.arange(start, start + n) % 50000))
        start += n
    return str(tmp_path / "x_train_*.bin"), sizes


def test_targets_are_inputs_shifted(shards):
    pattern, _ = shards
    x, y = ShardLoader(pattern, B=2, T=7, shuffle=False).next_batch()
    assert x.shape == y.shape == (2, 7)
    assert (y.flatten()[:-1] == x.flatten()[1:]).all()


def test_ranks_read_disjoint_slices_of_one_global_batch(shards):
    pattern, _ = shards
    single = ShardLoader(pattern, B=4, T=5, rank=0, world=1, shuffle=True, seed=3)
    ranks = [ShardLoader(pattern, B=2, T=5, rank=r, world=2, shuffle=True, seed=3) for r in range(2)]
    for _ in range(30):
        xs, _ = single.next_batch()
        parts = [rk.next_batch()[0] for rk in ranks]
        assert (xs.flatten() == np.concatenate([p.flatten() for p in parts])).all()


def test_one_epoch_visits_every_global_batch_once_then_reshuffles(shards):
    pattern, sizes = shards
    loader = ShardLoader(pattern, B=3, T=10, shuffle=True, seed=0)
    n = loader.batches_per_epoch
    assert n == sum((s - 1) // 30 for s in sizes)
    first = [loader.next_batch()[0][0, 0].item() for _ in range(n)]
    second = [loader.next_batch()[0][0, 0].item() for _ in range(n)]
    assert len(set(first)) == n and sorted(first) == sorted(second) and first != second
    assert loader.pos.epoch == 1


def test_resume_reproduces_the_same_batches(shards):
    pattern, _ = shards
    a = ShardLoader(pattern, B=2, T=9, shuffle=True, seed=5)
    for _ in range(37):
        a.next_batch()
    state = a.state_dict()
    expected = [a.next_batch()[0] for _ in range(50)]
    b = ShardLoader(pattern, B=2, T=9, shuffle=True, seed=99)
    b.load_state_dict(state)
    assert all((b.next_batch()[0] == e).all() for e in expected)


def test_resume_with_another_world_size_of_the_same_global_batch(shards):
    pattern, _ = shards
    one = ShardLoader(pattern, B=4, T=5, rank=0, world=1, seed=1)
    for _ in range(11):
        one.next_batch()
    state = one.state_dict()
    expected = one.next_batch()[0].flatten()
    halves = []
    for r in range(2):
        rk = ShardLoader(pattern, B=2, T=5, rank=r, world=2, seed=1)
        rk.load_state_dict(state)
        halves.append(rk.next_batch()[0].flatten())
    assert (expected == np.concatenate(halves)).all()


def test_micro_batches_of_one_step_equal_its_batch_at_any_world_size_and_accumulation(shards):
    """A step's tokens are the same global batch whether 1 rank reads them in 2 micro-batches or 2
    ranks read them in 1: what makes a resume at another world size exact in data."""
    pattern, _ = shards
    one = ShardLoader(pattern, B=2, T=5, rank=0, world=1, seed=1, accum=2)
    for _ in range(6):  # three steps
        one.next_batch()
    state = one.state_dict()
    step = np.concatenate([one.next_batch()[0].flatten() for _ in range(2)])
    ranks = []
    for r in range(2):
        rk = ShardLoader(pattern, B=2, T=5, rank=r, world=2, seed=1, accum=1)
        rk.load_state_dict(state)
        ranks.append(rk.next_batch()[0].flatten())
    assert (step == np.concatenate(ranks)).all()
    with pytest.raises(RuntimeError, match="mid-step"):
        one.next_batch()
        one.state_dict()


def test_resume_refuses_a_different_global_batch_or_data(shards, tmp_path):
    pattern, _ = shards
    state = ShardLoader(pattern, B=2, T=5).state_dict()
    with pytest.raises(DataError, match="tokens per step changed from 10 to 20"):
        ShardLoader(pattern, B=4, T=5).load_state_dict(state)
    write_shard(tmp_path / "x_train_000009.bin", np.arange(500))
    with pytest.raises(DataError, match="differ from the ones"):
        ShardLoader(pattern, B=2, T=5).load_state_dict(state)


def test_clear_errors(tmp_path, shards):
    with pytest.raises(DataError, match="no token shards match"):
        ShardLoader(str(tmp_path / "nothing_*.bin"), B=1, T=4)
    pattern, _ = shards
    with pytest.raises(DataError, match="fewer than one global batch"):
        ShardLoader(pattern, B=64, T=1024)
