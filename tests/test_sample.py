"""`gpt2train sample`: the text training logged, from the checkpoint, its export and a save_pretrained GPT-2.

The trained run is the session's (tests/fixtures/training.py: 6 steps, a 12-token sample logged with
train.seed at each of its checkpoints, 2, 4 and 6).
"""

from __future__ import annotations

import ast
import re
import shutil
import subprocess

import pytest
import torch

from gpt2train.errors import Gpt2TrainError
from gpt2train.sample import sample
from gpt2train.weights import load_model
from tests.fixtures.training import SAMPLE_TOKENS as TOKENS

SEED = 1337  # the tiny preset's train.seed


@pytest.fixture(scope="module")
def logged(trained_run) -> dict[int, str]:
    """{step: text} of the samples the trained run logged."""
    found = re.findall(r"sample at step (\d+): (.*)$", (trained_run.out / "main.log").read_text(), re.M)
    return {int(step): ast.literal_eval(text) for step, text in found}


def test_sample_draws_the_text_training_logged(trained_run, logged, capsys):
    from gpt2train.cli import main

    assert set(logged) == {2, 4, 6}
    for step, text in logged.items():
        assert main(["-q", "sample", str(trained_run.checkpoint(step)), "--tokens", str(TOKENS),
                     "--seed", str(SEED)]) == 0
        out, err = capsys.readouterr()
        assert out == text + "\n"
        assert f"checkpoint {trained_run.checkpoint(step)} (step {step}, tiny)" in err


def test_an_export_and_its_checkpoint_sample_alike(trained_run, logged, tmp_path):
    from gpt2train.export.hf_export import export_checkpoint

    export = export_checkpoint(trained_run.checkpoint(6), tmp_path / "export").out_dir
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


@pytest.mark.e2e
def test_the_command_on_a_source_that_is_no_model_exits_2_with_one_line(tmp_path):
    exe = shutil.which("gpt2train")
    r = subprocess.run([exe, "sample", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
