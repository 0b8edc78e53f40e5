"""`gpt2train sample`: the text training logged, from the checkpoint, its export and a save_pretrained GPT-2."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess

import pytest
import torch

from gpt2train.errors import Gpt2TrainError
from gpt2train.sample import sample
from gpt2train.training.loop import train
from gpt2train.weights import load_model
from tests.test_cli import gpt2train
from tests.test_train import run_cfg

SEED, TOKENS = 1337, 12  # the tiny preset's train.seed; train.sample_tokens below


@pytest.fixture(scope="module")
def trained(tiny_shards, tmp_path_factory):
    out = tmp_path_factory.mktemp("sampled") / "run"
    train(run_cfg(tiny_shards, out, "train.sample_every=3", f"train.sample_tokens={TOKENS}"))
    logged = dict(re.findall(r"sample at step (\d+): (.*)$", (out / "main.log").read_text(), re.M))
    return out, {int(step): ast.literal_eval(text) for step, text in logged.items()}


def test_sample_draws_the_text_training_logged(trained):
    out, logged = trained
    assert set(logged) == {3, 6}
    for step, text in logged.items():
        r = gpt2train("sample", out / "checkpoints" / f"step_{step:08d}", "--tokens", TOKENS, "--seed", SEED)
        assert r.returncode == 0, r.stderr
        assert r.stdout == text + "\n"
        assert f"checkpoint {out / 'checkpoints' / f'step_{step:08d}'} (step {step}, tiny)" in r.stderr


def test_an_export_and_its_checkpoint_sample_alike(trained, tmp_path):
    from gpt2train.export.hf_export import export_checkpoint

    out, logged = trained
    export = export_checkpoint(out / "checkpoints" / "step_00000006", tmp_path / "export").out_dir
    model, what = load_model(export)
    assert what.startswith(f"Hugging Face GPT-2 {export}")
    assert sample(model, tokens=TOKENS, seed=SEED)[0] == logged[6]
    # several samples, a prompt, greedy: the prompt starts each text; sample i draws with seed + i
    texts = sample(model, "The sky", num_samples=3, tokens=5, seed=SEED)
    assert all(t.startswith("The sky") for t in texts) and texts[1] == sample(model, "The sky", tokens=5,
                                                                               seed=SEED + 1)[0]
    greedy = sample(model, "The sky", num_samples=2, tokens=5, temperature=0)
    assert greedy[0] == greedy[1]


def test_a_save_pretrained_gpt2_loads_with_the_same_logits(tmp_path):
    import transformers

    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(
        n_layer=2, n_head=2, n_embd=32, n_positions=48, vocab_size=50257, resid_pdrop=0.0, embd_pdrop=0.0,
        attn_pdrop=0.0)).eval()
    hf.save_pretrained(tmp_path / "gpt2")
    model, what = load_model(tmp_path / "gpt2")
    assert "2 layers, 32 wide" in what
    idx = torch.randint(0, 50257, (2, 17), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours, theirs = model(idx)[0], hf(idx).logits
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)


def test_a_source_that_is_no_model_is_one_line(tmp_path):
    with pytest.raises(Gpt2TrainError, match="neither a checkpoint directory .* a Hugging Face GPT-2 directory"):
        load_model(tmp_path)
    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(Gpt2TrainError, match=r"model_type='bert'.*only GPT-2"):
        load_model(tmp_path / "bert")
    exe = shutil.which("gpt2train")
    r = subprocess.run([exe, "sample", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
