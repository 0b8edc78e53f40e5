"""The training loop on CPU: exact resume, DDP equivalence, schedules, config errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from gpt2train.config import load_config
from gpt2train.data_stage import prepare
from gpt2train.errors import ConfigError
from gpt2train.train import learning_rate, train
from tests.conftest import REPO, TIKTOKEN_DIR


@pytest.fixture(scope="module")
def shard_dir(tmp_path_factory, edu_mini):
    data = tmp_path_factory.mktemp("train-data")
    cfg = load_config("tiny", [f"data_dir={data}", f"corpus.source={edu_mini}", "corpus.max_documents_per_file=40",
                               "shards.shard_size=60000"])
    prepare(cfg, data / "shards", progress=False)
    return data


def run_cfg(shard_dir, out, *extra):
    return load_config("tiny", [f"data_dir={shard_dir}", f"train.out_dir={out}", "train.max_steps=6",
                                "train.checkpoint_every=3", "train.val_every=3", "train.val_batches=2",
                                "train.warmup_steps=2", *extra])


def metrics(out, timings=True):
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return records if timings else [{k: v for k, v in r.items() if k not in ("ms", "tok_s")} for r in records]


def weights(out, step):
    return load_file(out / "checkpoints" / f"step_{step:08d}" / "model.safetensors")


def test_resume_is_bitwise_exact(shard_dir, tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    train(run_cfg(shard_dir, straight))
    train(run_cfg(shard_dir, resumed))
    # As if the run had been killed after its step-3 checkpoint: remove what came later, rerun.
    shutil.rmtree(resumed / "checkpoints" / "step_00000006")
    summary = train(run_cfg(shard_dir, resumed))
    assert summary["steps"] == 6
    assert metrics(straight, timings=False) == metrics(resumed, timings=False)  # losses, norms, lrs
    a, b = weights(straight, 6), weights(resumed, 6)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_loss_decreases_and_logs_are_written(shard_dir, tmp_path):
    out = tmp_path / "run"
    train(run_cfg(shard_dir, out, "train.max_steps=12", "train.learning_rate=0.003"))
    losses = [m["loss"] for m in metrics(out) if "loss" in m]
    assert len(losses) == 12 and losses[-1] < losses[0] - 0.5
    log_text = (out / "main.log").read_text()
    assert "step   12/12" in log_text and "sample at step 12" in log_text


DDP_COMMON = ["train.max_steps=3", "train.val_every=0", "train.checkpoint_every=0", "train.total_batch_tokens=512",
              "train.warmup_steps=2"]


def torchrun(shard_dir, out, *sets):
    env = {**os.environ, "TIKTOKEN_CACHE_DIR": str(TIKTOKEN_DIR), "OMP_NUM_THREADS": "1"}
    args = [f"--set=data_dir={shard_dir}", f"--set=train.out_dir={out}", "--set=train.batch_size=2",
            *(f"--set={c}" for c in (*DDP_COMMON, *sets))]
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                        "-m", "gpt2train.train", "--config", "tiny", *args],
                       capture_output=True, text=True, env=env, cwd=REPO, timeout=280)
    assert r.returncode == 0, r.stderr[-3000:]


def assert_same_run(a_out, b_out, tol):
    la = [m["loss"] for m in metrics(a_out) if "loss" in m]
    lb = [m["loss"] for m in metrics(b_out) if "loss" in m]
    assert la == pytest.approx(lb, abs=tol)
    a, b = weights(a_out, 3), weights(b_out, 3)
    assert max((a[k] - b[k]).abs().max().item() for k in a) <= tol


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_ddp_two_ranks_equal_one_process_and_zero1_equals_ddp(shard_dir, tmp_path):
    one, ddp, zero = tmp_path / "one", tmp_path / "ddp", tmp_path / "zero"
    # one process with B=4 reads the same global batches as 2 ranks with B=2 each
    train(run_cfg(shard_dir, one, "train.batch_size=4", *DDP_COMMON))
    torchrun(shard_dir, ddp)
    assert_same_run(one, ddp, 1e-5)
    torchrun(shard_dir, zero, "train.zero_stage=1")
    assert_same_run(ddp, zero, 1e-6)
    # each rank checkpointed only its shard of the Adam state
    ck = one.parent / "zero" / "checkpoints" / "step_00000003"
    shard_sizes = [len(torch.load(ck / f"optimizer_rank{r}.pt", weights_only=True)["state"]) for r in (0, 1)]
    full = len(torch.load(one / "checkpoints" / "step_00000003" / "optimizer_rank0.pt", weights_only=True)["state"])
    assert sum(shard_sizes) == full and all(0 < n < full for n in shard_sizes)


def test_recompute_gives_the_same_training(shard_dir, tmp_path):
    base = ["train.max_steps=3", "train.val_every=0", "train.checkpoint_every=0"]
    train(run_cfg(shard_dir, tmp_path / "r0", *base))
    for level in (1, 2):
        train(run_cfg(shard_dir, tmp_path / f"r{level}", *base, f"train.recompute={level}"))
        assert_same_run(tmp_path / "r0", tmp_path / f"r{level}", 1e-6)


def test_overfit_one_batch(shard_dir, tmp_path):
    out = tmp_path / "overfit"
    train(run_cfg(shard_dir, out, "train.overfit_batch=true", "train.max_steps=30", "train.learning_rate=0.003",
                  "train.val_every=0", "train.checkpoint_every=0", "train.lr_schedule=constant"))
    losses = [m["loss"] for m in metrics(out) if "loss" in m]
    assert losses[-1] < 0.3 * losses[0]


def test_outlier_detector_z_scores():
    from gpt2train.outliers import OutlierDetector

    det = OutlierDetector(window=4)
    assert all(det.update(v) != det.update(v) for v in (1.0, 3.0))  # nan until the window is full
    assert det.update(2.0) == pytest.approx(0.0)
    z = det.update(100.0)
    assert z > 5
    clone = OutlierDetector()
    clone.load_state_dict(det.state_dict())
    assert clone.update(2.0) == det.update(2.0)


def test_lr_schedules():
    t = load_config("tiny").train
    t.warmup_steps, t.learning_rate, t.final_lr_frac = 10, 1.0, 0.1
    assert learning_rate(0, t, 100) == pytest.approx(0.1)
    assert learning_rate(9, t, 100) == pytest.approx(1.0)
    for schedule in ("cosine", "linear", "wsd"):
        t.lr_schedule = schedule
        assert learning_rate(100, t, 100) == pytest.approx(0.1)
    t.lr_schedule = "wsd"
    assert learning_rate(60, t, 100) == 1.0  # stable phase
    t.lr_schedule = "constant"
    assert learning_rate(99, t, 100) == 1.0


@pytest.mark.parametrize("override, match", [
    ("train.total_batch_tokens=1000", "not a multiple"),
    ("train.seq_len=128", "exceeds model.block_size"),
    ("train.max_steps=0", "max_steps"),
    ("train.lr_schedule=exponential", "lr_schedule"),
])
def test_bad_training_config(override, match, shard_dir, tmp_path):
    with pytest.raises(ConfigError, match=match):
        run_cfg(shard_dir, tmp_path / "x", override)


def test_unknown_model_descriptor(shard_dir, tmp_path):
    with pytest.raises(ConfigError, match="model.descriptor.*d12"):
        train(run_cfg(shard_dir, tmp_path / "x", "model.descriptor=d13"))
