"""NaN or Inf in the loss or the gradients: the update is skipped and counted, and after
train.max_nonfinite_steps such steps in a row the run stops, naming the step and the last good
checkpoint. Every skipped update (these, and loss spikes under llm.c's -sl) keeps the checkpoint
saved before it out of train.keep_last's pruning.

The faults are injected into the real model: its forward returns a NaN loss on chosen steps,
an autograd identity whose backward turns every gradient to Inf (the loss stays finite), or the
loss times 1000 (a spike: finite, far above the steps before it).
"""

from __future__ import annotations

import math

import pytest
import torch

from gpt2train import failpoints
from gpt2train import model as model_module
from gpt2train.config import load_config
from gpt2train.errors import TrainingDiverged
from gpt2train.train import main
from gpt2train.training import outliers
from gpt2train.training.checkpoint import CheckpointState
from gpt2train.training.loop import train
from tests.faults import loss_log, step_dirs, weights


class _InfGradient(torch.autograd.Function):
    """Identity forward; backward sends Inf down to every parameter (a blown-up gradient)."""

    @staticmethod
    def forward(ctx, loss):
        return loss.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * math.inf


@pytest.fixture
def poison(monkeypatch):
    """poison({step: "nan" | "inf" | "spike"}): from then on, training micro-batches of those (1-based)
    optimizer steps get a NaN loss, Inf gradients or a loss 1000 times its value (and so its gradients).
    Evaluation passes (model.eval()) are left alone."""

    def install(plan: dict[int, str], micro_batches_per_step: int):
        real_forward = model_module.GPT.forward
        calls = {"n": 0}

        def forward(self, idx, targets=None, **kwargs):  # kwargs: the sampler's KV cache
            logits, loss = real_forward(self, idx, targets, **kwargs)
            if not self.training or loss is None:
                return logits, loss
            step = calls["n"] // micro_batches_per_step + 1
            calls["n"] += 1
            kind = plan.get(step, plan.get("rest") if step >= plan.get("from", math.inf) else None)
            if kind == "nan":
                loss = loss * math.nan
            elif kind == "inf":
                loss = _InfGradient.apply(loss)
            elif kind == "spike":
                loss = loss * 1000
            return logits, loss

        monkeypatch.setattr(model_module.GPT, "forward", forward)

    return install


# One micro-batch of 4 x 64 tokens a step (the preset's 512 are two): the guard sees a step's loss and
# gradients the same way, at half the work.
TOKENS = "train.total_batch_tokens=256"


def cfg_for(data, out, *extra):
    return load_config("tiny", [f"data_dir={data}", f"train.out_dir={out}", "train.max_steps=6", TOKENS,
                                "train.checkpoint_every=1", "train.val_every=0", "train.warmup_steps=2",
                                "train.hellaswag_every=0", "train.sample_tokens=4", *extra])


def same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.e2e  # ~6 s of training: too long for the unit tier
def test_nan_loss_and_inf_gradients_skip_the_update_and_are_counted(tiny_shards, tmp_path, poison):
    poison({3: "nan", 5: "inf"}, micro_batches_per_step=1)
    out = tmp_path / "run"
    summary = train(cfg_for(tiny_shards, out, "train.max_nonfinite_steps=2"))
    assert summary.steps == 6 and summary.skipped_updates == 2
    records = {r["step"]: r for r in loss_log(out) if "loss" in r}
    assert math.isnan(records[3]["loss"]) and records[3]["skipped"] and records[3]["nonfinite"]
    assert math.isfinite(records[5]["loss"]) and not math.isfinite(records[5]["norm"])  # finite loss, Inf grads
    assert records[5]["skipped"] and records[5]["nonfinite"]
    assert all(not r["skipped"] and "nonfinite" not in r for s, r in records.items() if s not in (3, 5))
    # A skipped step leaves the weights exactly as they were; the others move them.
    assert same(weights(out, 2), weights(out, 3)) and same(weights(out, 4), weights(out, 5))
    assert not same(weights(out, 3), weights(out, 4))
    final = weights(out, 6)
    assert all(torch.isfinite(v).all() for v in final.values())
    log = (out / "main.log").read_text()
    assert "step 3: loss nan" in log and "not finite, update skipped (1 in a row)" in log


def test_nonfinite_steps_in_a_row_stop_the_run_naming_the_step_and_last_good_checkpoint(tiny_shards, tmp_path,
                                                                                         poison, capsys):
    poison({"from": 3, "rest": "nan"}, micro_batches_per_step=1)
    out = tmp_path / "run"
    args = ["--config", "tiny", f"--set=data_dir={tiny_shards}", f"--set=train.out_dir={out}",
            f"--set={TOKENS}", "--set=train.max_steps=8", "--set=train.checkpoint_every=2", "--set=train.val_every=0",
            "--set=train.warmup_steps=2", "--set=train.hellaswag_every=0", "--set=train.max_nonfinite_steps=3"]
    assert main(args) == 2
    err = capsys.readouterr().err
    # Steps 3, 4, 5 are NaN: the third in a row stops it, before step 5's checkpoint (none is due).
    assert "training stopped at step 5" in err and "3 steps in a row (steps 3..5" in err
    assert f"the last good checkpoint is {out / 'checkpoints' / 'step_00000004'} (step 4)" in err
    assert "train.max_nonfinite_steps=3" in err and "Lower train.learning_rate" in err
    # Step 4's checkpoint holds step 2's weights: the NaN steps never reached them.
    assert same(weights(out, 2), weights(out, 4))
    assert not (out / "checkpoints" / "step_00000006").exists()
    assert [r["step"] for r in loss_log(out) if "loss" in r] == [1, 2, 3, 4, 5]


def test_stop_with_no_checkpoint_yet_says_so(tiny_shards, tmp_path, poison):
    poison({"from": 1, "rest": "inf"}, micro_batches_per_step=1)
    with pytest.raises(TrainingDiverged, match=r"stopped at step 2: .*no checkpoint was written yet"):
        train(cfg_for(tiny_shards, tmp_path / "run", "train.max_nonfinite_steps=2", "train.checkpoint_every=4"))


def test_zero_limit_keeps_skipping_to_the_end(tiny_shards, tmp_path, poison):
    poison({"from": 2, "rest": "nan"}, micro_batches_per_step=1)
    out = tmp_path / "run"
    summary = train(cfg_for(tiny_shards, out, "train.max_nonfinite_steps=0", "train.max_steps=5"))
    assert summary.steps == 5 and summary.skipped_updates == 4
    assert same(weights(out, 1), weights(out, 5))


# A finite loss and gradient norm with a non-finite clip coefficient or learning rate: the config refuses
# a NaN or Inf train.grad_clip / learning_rate (tests/test_config.py), so they are set on the loaded
# config, as a library caller could, or come from the schedule. Before the guard checked them, step 1
# turned every weight into NaN and saved it as a complete checkpoint.
@pytest.mark.parametrize("field, value", [("grad_clip", math.nan), ("learning_rate", math.inf),
                                          ("schedule", math.nan)])
def test_a_nonfinite_clip_coefficient_or_learning_rate_never_reaches_the_weights(tiny_shards, tmp_path, monkeypatch,
                                                                                 field, value):
    from gpt2train.training import loop

    out = tmp_path / "run"
    cfg = cfg_for(tiny_shards, out, "train.max_nonfinite_steps=0", "train.max_steps=3")
    if field == "schedule":  # a schedule gone wrong (AdamW itself refuses a NaN rate at construction)
        monkeypatch.setattr(loop, "learning_rate", lambda step, t, max_steps: value)
    else:
        setattr(cfg.train, field, value)
    summary = train(cfg)
    assert summary.steps == 3 and summary.skipped_updates == 3
    records = [r for r in loss_log(out) if "loss" in r]
    # The loss and the norm were finite: only the coefficient or the rate was not.
    assert all(math.isfinite(r["loss"]) and math.isfinite(r["norm"]) for r in records)
    assert all(r["skipped"] and r["nonfinite"] for r in records)
    for step in (1, 2, 3):  # every checkpoint: finite weights, the untrained ones
        assert all(torch.isfinite(v).all() for v in weights(out, step).values())
    assert same(weights(out, 1), weights(out, 3))
    log = (out / "main.log").read_text()
    what = "clip coefficient nan" if field == "grad_clip" else f"lr {value}"
    assert f"{what}" in log and "not finite, update skipped (1 in a row)" in log


def test_a_nan_grad_clip_stops_the_run_after_the_limit_naming_it(tiny_shards, tmp_path):
    cfg = cfg_for(tiny_shards, tmp_path / "run", "train.max_nonfinite_steps=2", "train.checkpoint_every=4")
    cfg.train.grad_clip = math.nan
    with pytest.raises(TrainingDiverged, match=r"stopped at step 2: the loss, gradient norm, clip coefficient or "
                                               r"learning rate was NaN/Inf .*no checkpoint was written yet"):
        train(cfg)


@pytest.mark.e2e  # 8 steps and a resume (~6 s): too long for the unit tier
def test_the_checkpoint_before_each_instability_is_kept_through_a_crash_and_resume(tiny_shards, tmp_path, poison,
                                                                                   monkeypatch):
    """llm.c's users asked for the run "right before" it exploded: with train.keep_last=1, the checkpoint
    before a NaN step and the one before a loss spike (-sl) stay on disk, marked in their state.json, and a
    run that crashes and resumes keeps them; a NaN before any checkpoint says there is none to keep."""
    # The spike is judged against the last 2 finite losses (llm.c's window is 128 steps, this run 6).
    monkeypatch.setattr(outliers, "WINDOW", 2)
    poison({1: "nan", 3: "nan", 5: "spike"}, micro_batches_per_step=1)
    # The first launch dies after step 6's update, before its checkpoint: the run resumes from step 4.
    monkeypatch.setattr(failpoints, "_points", failpoints._parse("train.step_done@6=raise"))
    monkeypatch.setattr(failpoints, "_hits", {})
    out = tmp_path / "run"
    cfg = cfg_for(tiny_shards, out, "train.checkpoint_every=2", "train.keep_last=1", "train.skip_loss_z=100",
                  "train.max_nonfinite_steps=0")
    reported = []
    with pytest.raises(failpoints.InjectedFault):
        train(cfg, on_checkpoint=lambda path: reported.append(path.name))
    # Each mark reports its checkpoint again (its record changed): after step 2's save, and after step 4's.
    assert reported == ["step_00000002", "step_00000002", "step_00000004", "step_00000004"]
    train(cfg)  # resumed: step 5 again, without the spike (the poison counts calls), and step 6
    assert [p.name for p in step_dirs(out)] == ["step_00000002", "step_00000004", "step_00000006"]
    marks = {p.name: CheckpointState.from_dir(p).before_instability for p in step_dirs(out)}
    assert marks["step_00000002"].step == 3 and marks["step_00000004"].step == 5 and marks["step_00000006"] is None
    assert marks["step_00000002"].reason == "loss nan, grad norm nan: not finite"
    assert marks["step_00000004"].reason.startswith("loss z ") and "> train.skip_loss_z=100" in marks[
        "step_00000004"].reason
    log = (out / "main.log").read_text()
    assert "instability at step 1 (loss nan, grad norm nan: not finite): no checkpoint was saved before it, " \
           "so there is none to keep\n" in log
    for step, kept in ((3, 2), (5, 4)):
        line = next(x for x in log.splitlines() if f"instability at step {step} (" in x)
        assert line.endswith(f"keeping {out / 'checkpoints' / f'step_{kept:08d}'}, the last checkpoint before it; "
                             f"train.keep_last never deletes it"), line
    assert "instability at step 5" not in log.split("resumed from")[-1]  # the resumed run's step 5 was fine
