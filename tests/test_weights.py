"""Starting from other people's weights: an llm.c model file (fp32 and bf16) and a save_pretrained
GPT-2, loaded with the logits of the model they came from, and `train.init_from` / llm.c's `-e`
training from them (gpt2train/weights.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from gpt2train.config import load_config
from gpt2train.errors import ConfigError, Gpt2TrainError
from gpt2train.model import GPT, GPTConfig
from gpt2train.weights import load_model
from tests.paths import REPO
from tests.faults import train_env

TINY = GPTConfig.from_descriptor("tiny", 64)  # the tiny preset's shape


def write_llmc_model(path, model: GPT, bf16: bool = False) -> None:
    """An llm.c model file as llm.c's train_gpt2.py `write_model` writes it, from `model`'s tensors:
    header (magic, version 3 fp32 / 5 bf16, maxT, V, L, NH, C, Vp), then the parameters in its order."""
    c, sd = model.config, model.state_dict()
    header = np.zeros(256, dtype=np.int32)
    header[:8] = [20240326, 5 if bf16 else 3, c.block_size, c.vocab_size, c.n_layer, c.n_head, c.n_embd,
                  c.padded_vocab_size]
    layers = range(c.n_layer)
    order = [sd["transformer.wte.weight"], sd["transformer.wpe.weight"]]
    for name in ("ln_1.weight", "ln_1.bias", "attn.c_attn.weight", "attn.c_attn.bias", "attn.c_proj.weight",
                 "attn.c_proj.bias", "ln_2.weight", "ln_2.bias", "mlp.c_fc.weight", "mlp.c_fc.bias",
                 "mlp.c_proj.weight", "mlp.c_proj.bias"):
        order += [sd[f"transformer.h.{i}.{name}"] for i in layers]
    order += [sd["transformer.ln_f.weight"], sd["transformer.ln_f.bias"]]
    flat = torch.cat([t.reshape(-1) for t in order])
    data = flat.to(torch.bfloat16).view(torch.int16).numpy() if bf16 else flat.numpy()
    with open(path, "wb") as f:
        f.write(header.tobytes())
        f.write(data.tobytes())


def source_model(seed: int = 3) -> GPT:
    model = GPT(TINY).init_weights(seed)
    with torch.no_grad():  # every tensor distinct from init's constants (LayerNorm ones, zero biases)
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())) * 0.01)
        model.transformer.wte.weight[TINY.vocab_size:] = 0  # llm.c's padded rows
    return model.eval()


@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16"])
def test_an_llmc_model_file_loads_with_its_logits(tmp_path, bf16):
    src = source_model()
    write_llmc_model(tmp_path / "m.bin", src, bf16)
    model, what = load_model(tmp_path / "m.bin")
    assert what.startswith(f"llm.c model file {tmp_path / 'm.bin'} (2 layers, 128 wide")
    if bf16:  # what the file holds: every weight rounded to bf16
        with torch.no_grad():
            for p in src.parameters():
                p.copy_(p.to(torch.bfloat16).float())
    idx = torch.randint(0, TINY.vocab_size, (2, 33), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(model(idx)[0], src(idx)[0])


def test_a_truncated_llmc_file_is_one_line(tmp_path):
    write_llmc_model(tmp_path / "m.bin", source_model())
    data = (tmp_path / "m.bin").read_bytes()
    (tmp_path / "m.bin").write_bytes(data[:-4])
    with pytest.raises(Gpt2TrainError, match=r"parameters after the header, but its header .* a truncated"):
        load_model(tmp_path / "m.bin")


def _train_from(tmp_path, data_dir, init: list[str]) -> dict:
    """One step at learning rate 0 from `init` (the flags that name the weights): the checkpoint's
    weights are then the ones it started from."""
    out = tmp_path / "run"
    args = [sys.executable, "-m", "gpt2train.train", "--config", "tiny", *init, f"--set=data_dir={data_dir}",
            f"--set=train.out_dir={out}", "--set=train.max_steps=1", "--set=train.learning_rate=0",
            "--set=train.val_every=0", "--set=train.hellaswag_every=0", "--set=train.sample_every=0"]
    r = subprocess.run(args, capture_output=True, text=True, env=train_env(), cwd=REPO, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return load_file(out / "checkpoints" / "step_00000001" / "model.safetensors")


@pytest.mark.e2e
def test_llmc_e_flag_trains_from_an_llmc_model_file(tmp_path, tiny_shards):
    src = source_model()
    write_llmc_model(tmp_path / "gpt2_tiny.bin", src)
    weights = _train_from(tmp_path, tiny_shards, ["-e", str(tmp_path / "gpt2_tiny.bin")])
    expected = src.state_dict()
    assert all(torch.equal(weights[k], expected[k]) for k in weights), [k for k in weights
                                                                       if not torch.equal(weights[k], expected[k])]


@pytest.mark.e2e
def test_init_from_a_save_pretrained_gpt2(tmp_path, tiny_shards):
    import transformers

    from gpt2train.export.state_dict import to_hf_state_dict

    src = source_model(seed=5)
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(
        n_layer=TINY.n_layer, n_head=TINY.n_head, n_embd=TINY.n_embd, n_positions=TINY.block_size,
        vocab_size=TINY.vocab_size, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0))
    hf.load_state_dict(to_hf_state_dict(src), strict=False)
    hf.save_pretrained(tmp_path / "gpt2")
    weights = _train_from(tmp_path, tiny_shards, [f"--set=train.init_from={tmp_path / 'gpt2'}"])
    expected = src.state_dict()
    assert all(torch.equal(weights[k], expected[k]) for k in weights)


def test_init_from_of_another_shape_is_refused_at_config_load(tmp_path):
    other = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=64, block_size=64))
    write_llmc_model(tmp_path / "small.bin", other)
    with pytest.raises(ConfigError, match=r"train.init_from=.*small.bin holds another model shape .*n_layer=1 "
                                          r"n_head=2 n_embd=64 block_size=64; the config asks for n_layer=2"):
        load_config("tiny", [f"train.init_from={tmp_path / 'small.bin'}"])
    (tmp_path / "notes.txt").write_text("not weights")
    with pytest.raises(ConfigError, match=r"train.init_from: .*notes.txt: neither a checkpoint directory"):
        load_config("tiny", [f"train.init_from={tmp_path / 'notes.txt'}"])


def _cached_hub_model(cache: Path, repo: str, hf_model) -> Path:
    """`repo` as huggingface_hub's cache holds a downloaded model: refs/main -> snapshots/<commit>/."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    folder = cache / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(commit)
    hf_model.save_pretrained(folder / "snapshots" / commit)
    return folder / "snapshots" / commit


@pytest.mark.e2e
def test_a_hub_model_id_is_read_from_the_cache_offline(tmp_path):
    """`hf:<owner>/<name>` through huggingface_hub's own cache and offline rules: sample and init_from
    read the cached snapshot; an id with no cached copy while offline says what to do, in one line."""
    import shutil

    import transformers

    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(
        n_layer=2, n_head=2, n_embd=32, n_positions=48, vocab_size=50257, resid_pdrop=0.0, embd_pdrop=0.0,
        attn_pdrop=0.0)).eval()
    snapshot = _cached_hub_model(tmp_path / "hub", "test-org/tiny-gpt2", hf)
    env = {**train_env(), "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}
    exe = shutil.which("gpt2train")

    def cli(*args):
        return subprocess.run([exe, *args], capture_output=True, text=True, env=env, cwd=REPO, timeout=300)

    by_id, by_dir = cli("sample", "hf:test-org/tiny-gpt2", "--tokens", "8"), cli("sample", str(snapshot), "--tokens", "8")
    assert by_id.returncode == 0 and by_id.stdout == by_dir.stdout and by_id.stdout.strip(), by_id.stderr[-2000:]
    missing = cli("sample", "hf:test-org/not-downloaded")
    assert missing.returncode == 2 and len(missing.stderr.strip().splitlines()) == 1, missing.stderr
    assert "not in the local Hugging Face cache" in missing.stderr and "HF_HUB_OFFLINE" in missing.stderr
    # As train.init_from the id stays an id (not a path beside the YAML) and its shape is checked.
    shape = cli("config", "--config", "tiny", "--set", "train.init_from=hf:test-org/tiny-gpt2")
    assert shape.returncode == 2 and "train.init_from=hf:test-org/tiny-gpt2 holds another model shape" in shape.stderr, \
        shape.stderr
