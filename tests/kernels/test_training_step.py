"""The Triton kernels inside the model and the trainer (`--kernels triton`, interpreted on CPU)
against `--kernels torch`: one full training step of a small GPT (loss, every gradient), and the kernels
composed with activation recompute, torch.compile, DDP (2 processes) and the trainer's own loop (the
tiny preset: loss and the weights after AdamW).

The model-level tests use a GPT of the tiny preset's depth and heads but 64 wide, over a 300-token
vocabulary padded to 320: every kernel and every wiring of it (the fused classifier's ignored targets and
padded rows, the residual LayerNorms, recompute's wrappers, compile's graph breaks) runs as in the
tiny preset, at a twentieth of the interpreter's time; the kernels' own tests cover odd shapes, the
trainer-level ones the preset's full 50,304-row classifier.

Tolerances: loss and gradients atol 1e-5 (fp32: the kernels sum in another order than PyTorch;
the biggest gradient differences seen are ~1e-7). Weights after AdamW steps: within lr (1e-3).
Adam's first update is lr * g / (|g| + eps), so a gradient entry near zero flips between -lr and
+lr on a 1e-7 difference; seen: one of 65536 entries 1.9e-4 apart after one step.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from gpt2train.model import GPT, GPTConfig
from gpt2train.training.parallelize import apply_recompute
from gpt2train.training.loop import train
from tests.commands import metrics
from tests.faults import weights
from tests.fixtures.training import run_cfg
from tests.kernels.conftest import DEVICE
from tests.paths import REPO

TOL = 1e-5
VOCAB, PADDED_VOCAB = 300, 320


def _pair():
    cfg = GPTConfig(n_layer=2, n_head=2, n_embd=64, block_size=64, vocab_size=VOCAB, padded_vocab_size=PADDED_VOCAB)
    ref = GPT(cfg, kernels="torch").init_weights(7).to(DEVICE)
    ours = GPT(cfg, kernels="triton").to(DEVICE)
    ours.load_state_dict(ref.state_dict())
    return ref, ours


def _batch(B=2, T=33):  # T odd and past one 32-row block of the interpreted attention kernel
    g = torch.Generator().manual_seed(3)
    idx = torch.randint(0, VOCAB, (B, T + 1), generator=g).to(DEVICE)
    return idx[:, :-1].clone(), idx[:, 1:].clone()


def _assert_same_grads(ref, ours, tol=TOL):
    # activation recompute's wrapper adds `_checkpoint_wrapped_module.` to the names it wraps
    ours_params = {n.replace("_checkpoint_wrapped_module.", ""): p for n, p in ours.named_parameters()}
    for name, p in ref.named_parameters():
        torch.testing.assert_close(ours_params[name].grad, p.grad, atol=tol, rtol=tol, msg=lambda m: f"{name}: {m}")


def test_training_step_matches_torch_kernels():
    """Loss and every gradient (tied wte/lm_head included) of one training step."""
    ref, ours = _pair()
    x, y = _batch()
    y[0, :5] = -1  # ignored targets take the same path in both
    losses = []
    for model in (ref, ours):
        logits, loss = model(x, y)
        loss.backward()
        losses.append(loss.detach())
        if model is ours:
            assert logits is None  # the fused classifier never builds the logits
    torch.testing.assert_close(losses[1], losses[0], atol=TOL, rtol=TOL)
    _assert_same_grads(ref, ours)
    assert (dict(ours.named_parameters())["transformer.wte.weight"].grad[VOCAB:] == 0).all()  # the padded rows


def test_inference_logits_match():
    ref, ours = _pair()
    x, _ = _batch(B=1, T=23)
    with torch.no_grad():
        torch.testing.assert_close(ours(x)[0], ref(x)[0], atol=TOL, rtol=TOL)


@pytest.mark.parametrize("level", [1, 2])
def test_kernels_compose_with_activation_recompute(level):
    ref, ours = _pair()
    apply_recompute(ours, level)
    x, y = _batch()
    ref(x, y)[1].backward()
    ours(x, y)[1].backward()
    _assert_same_grads(ref, ours)


@pytest.mark.e2e  # ~11 s of dynamo tracing: too long for the unit tier
def test_kernels_compose_with_torch_compile():
    """Each kernel is a graph break under compile (gpt2train.kernels.ops.triton_ops says why)."""
    ref, ours = _pair()
    x, y = _batch()
    ref(x, y)[1].backward()
    torch.compile(ours)(x, y)[1].backward()
    _assert_same_grads(ref, ours)


@pytest.mark.e2e  # the interpreter on the preset's full classifier: ~30 s
def test_trainer_switch_matches_torch(tiny_shards, tmp_path):
    # One step of 2 x 32 tokens (the interpreter's time grows with the rows its classifier and attention see).
    base = ["train.max_steps=1", "train.checkpoint_every=1", "train.val_every=1", "train.val_batches=1",
            "train.batch_size=2", "train.seq_len=32", "train.total_batch_tokens=64", "train.sample_tokens=2"]
    s_torch = train(run_cfg(tiny_shards, tmp_path / "torch", *base, "train.kernels=torch"))
    s_triton = train(run_cfg(tiny_shards, tmp_path / "triton", *base, "train.kernels=triton"))
    assert (s_torch.kernels, s_triton.kernels) == ("torch", "triton")
    la = [m.get("loss", m.get("val_loss")) for m in metrics(tmp_path / "torch")]
    lb = [m.get("loss", m.get("val_loss")) for m in metrics(tmp_path / "triton")]
    assert lb == pytest.approx(la, abs=TOL)
    a, b = weights(tmp_path / "torch", 1), weights(tmp_path / "triton", 1)
    assert max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-3  # lr: see the module docstring
    assert "triton (Triton interpreter) kernels" in (tmp_path / "triton" / "main.log").read_text()


def test_auto_is_torch_without_cuda_and_bad_choice_is_named(tiny_shards, tmp_path):
    from gpt2train.config import load_config
    from gpt2train.errors import ConfigError

    if not torch.cuda.is_available():
        cfg = run_cfg(tiny_shards, tmp_path / "auto", "train.max_steps=1", "train.val_every=0", "train.sample_every=0")
        assert train(cfg).kernels == "torch"
    with pytest.raises(ConfigError, match="train.kernels='cuda'; use auto, triton or torch"):
        load_config("tiny", ["train.kernels=cuda"])


@pytest.mark.e2e
@pytest.mark.timeout(900)
def test_ddp_two_ranks_with_triton_kernels_match_one_process(tiny_shards, tmp_path):
    """2 gloo processes with B=2 each read the global batches of one process with B=4 (of 32 tokens: the
    interpreter's time grows with the rows it sees)."""
    common = ["train.max_steps=2", "train.checkpoint_every=2", "train.val_every=0", "train.kernels=triton",
              "train.seq_len=32", "train.total_batch_tokens=128", "train.shuffle=false", "train.sample_tokens=2"]
    train(run_cfg(tiny_shards, tmp_path / "one", "train.batch_size=4", *common))
    args = [f"--set=data_dir={tiny_shards}", f"--set=train.out_dir={tmp_path / 'ddp'}", "--set=train.batch_size=2",
            "--set=train.hellaswag_every=0", "--set=train.warmup_steps=2", *(f"--set={c}" for c in common)]
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                        "-m", "gpt2train.train", "--config", "tiny", *args],
                       capture_output=True, text=True, cwd=REPO, timeout=800,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    la = [m["loss"] for m in metrics(tmp_path / "one") if "loss" in m]
    lb = [m["loss"] for m in metrics(tmp_path / "ddp") if "loss" in m]
    assert lb == pytest.approx(la, abs=TOL)
    a, b = weights(tmp_path / "one", 2), weights(tmp_path / "ddp", 2)
    assert max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-3
