"""llm.c's numbers as its users type them: `1e-4`-style floats in flags, `--set` and YAML; AdamW's betas and
`grad_clip: 0` (off) as settings that leave the run tags of earlier runs as they were; `-e FILE` of any GPT-2
shape built from the file's llm.c header or config.json (a `custom:` descriptor); and an llm.c file that is
not a GPT-2 model refused in one line (gpt2train/config.py, config_checks.py, model_config.py, weights.py,
training/llmc.py, parallelize.py, step.py, run_identity.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from gpt2train.config import Config, TrainConfig, load_config
from gpt2train.errors import ConfigError, Gpt2TrainError
from gpt2train.model import GPT, GPTConfig
from gpt2train.training.llmc import llmc_args_to_overrides
from gpt2train.training.run_identity import run_tag, train_code_version
from gpt2train.weights import load_model, source_shape
from tests.test_weights import write_llmc_model

# A GPT-2 shape that is no preset: 3 layers, 2 heads, 64 channels, 96 positions.
CUSTOM = GPTConfig(n_layer=3, n_head=2, n_embd=64, block_size=96)


def llmc_config(argv: list[str], preset: str = "tiny") -> Config:
    """The config `python -m gpt2train.train --config <preset> <argv>` trains: llm.c's flags as it reads them."""
    rest, overrides = llmc_args_to_overrides(argv)
    assert rest == []
    return load_config(preset, overrides)


# ---------------------------------------------------------------- 1e-4 style numbers


@pytest.mark.parametrize("text, value", [("1e-4", 1e-4), ("6e-4", 6e-4), ("6E-4", 6e-4), ("+3e-4", 3e-4),
                                         (".5e-3", 5e-4), ("0.0006", 6e-4), ("1", 1.0)])
def test_a_float_flag_takes_llmc_atof_spellings(text, value, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert llmc_config(["-l", text]).train.learning_rate == value
    assert load_config("tiny", [f"train.learning_rate={text}"]).train.learning_rate == value


def test_grad_clip_and_a_yaml_file_take_exponents(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert load_config("tiny", ["train.grad_clip=1e6"]).train.grad_clip == 1e6
    assert llmc_config(["-c", "1e-1", "-q", "1e-2"]).train.weight_decay == 0.1
    # PyYAML (YAML 1.1) loads `6e-4` as the string "6e-4": the float field takes it as the number.
    own = tmp_path / "own.yaml"
    own.write_text("model: {descriptor: tiny, block_size: 64}\n"
                   "train: {batch_size: 4, seq_len: 64, total_batch_tokens: 256, learning_rate: 6e-4, grad_clip: 1e6,"
                   " adam_beta2: 999e-3}\n")
    cfg = load_config(own)
    assert (cfg.train.learning_rate, cfg.train.grad_clip, cfg.train.adam_beta2) == (6e-4, 1e6, 0.999)
    assert all(isinstance(v, float) for v in (cfg.train.learning_rate, cfg.train.grad_clip, cfg.train.adam_beta2))


@pytest.mark.parametrize("argv, message", [
    (["-x", "1e3"], r"train\.max_steps: '1e3' is not a valid int \(an int field takes digits: write 1000\)"),
    (["-b", "1.6e1"], r"train\.batch_size: '1.6e1' is not a valid int \(an int field takes digits: write 16\)"),
    (["-u", "1e-4"], r"train\.warmup_steps: '1e-4' is not a valid int \(an int field takes a whole number"),
])
def test_an_int_flag_refuses_an_exponent_naming_the_digits(argv, message, tmp_path, monkeypatch):
    """llm.c's atoi reads `1e3` as 1: refused in one line, never guessed."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=message) as e:
        llmc_config(argv)
    assert "\n" not in str(e.value)


def test_a_float_field_still_refuses_words(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for text in ("nan", "inf", "1e", "e5", "six"):
        with pytest.raises(ConfigError, match=r"train\.learning_rate"):
            load_config("tiny", [f"train.learning_rate={text}"])


# ---------------------------------------------------------------- AdamW's betas, grad_clip 0


def test_the_betas_reach_adamw():
    from gpt2train.training.parallelize import build_optimizer

    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=32, block_size=8))
    default = build_optimizer(model, TrainConfig(), "cpu", world=1)
    assert {tuple(g["betas"]) for g in default.param_groups} == {(0.9, 0.95)}  # llm.c's CUDA trainer
    cpu_llmc = build_optimizer(model, TrainConfig(adam_beta2=0.999), "cpu", world=1)  # train_gpt2.c's
    assert {tuple(g["betas"]) for g in cpu_llmc.param_groups} == {(0.9, 0.999)}


@pytest.mark.parametrize("setting", ["train.adam_beta1=1", "train.adam_beta2=1.0", "train.adam_beta2=-1e-3"])
def test_a_beta_outside_0_to_1_is_refused(setting, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"adam_beta\d=.* is out of range; use a value in \[0, 0\.999999\]"):
        load_config("tiny", [setting])


def _gradients() -> tuple[GPT, dict[str, torch.Tensor]]:
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=32, block_size=8)).init_weights(0)
    idx = torch.randint(0, 50257, (2, 8), generator=torch.Generator().manual_seed(0))
    model(idx, idx)[1].backward()
    return model, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_grad_clip_0_measures_the_norm_and_clips_nothing():
    from gpt2train.training.step import clip_gradients

    model, before = _gradients()
    expected = torch.nn.utils.get_total_norm(list(before.values())).item()
    norm, coef = clip_gradients(model.parameters(), 0.0)
    assert (norm, coef) == (expected, 1.0) and norm > 1e-3  # the norm -sg's rule and the metrics read
    assert all(torch.equal(p.grad, before[n]) for n, p in model.named_parameters() if p.grad is not None)
    # ...where a threshold below the norm scales every gradient by threshold / norm.
    norm, coef = clip_gradients(model.parameters(), expected / 4)
    assert norm == expected and coef == pytest.approx(0.25, rel=1e-5)
    assert all(torch.allclose(p.grad, before[n] * coef) for n, p in model.named_parameters() if p.grad is not None)


def test_grad_clip_0_is_off_not_out_of_range(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert load_config("tiny", ["train.grad_clip=0"]).train.grad_clip == 0.0
    with pytest.raises(ConfigError, match=r"train\.grad_clip=-0\.5 is out of range; use a value in \[0, 1e\+06\] "
                                          r"\(0 = no clipping\)"):
        load_config("tiny", ["train.grad_clip=-0.5"])


# ---------------------------------------------------------------- run tags across the upgrade

# Recorded with the code before train.adam_beta1 / adam_beta2 existed (HEAD ac2c023, betas fixed at 0.9, 0.95
# in parallelize.py), for configs whose shard globs match no file (the tag hashes the shards it reads too,
# so these are the code version's part alone): the tiny preset and the built-in defaults (d12). A run
# started then resumes now only if its config still makes the same tag (run_identity.check_run_dir).
TAGS_BEFORE_THE_BETAS = {"tiny": ("e1daf227fa393b10", "tiny-09e100831e"), None: ("e152c10a48eeb465", "d12-e4c40b9ca0")}
NO_SHARDS = ["train.train_glob=/nonexistent/none_train_*.bin", "train.val_glob=/nonexistent/none_val_*.bin"]


def _tagged(preset: str | None, *overrides: str) -> tuple[str, str]:
    if preset is None:  # the dataclass defaults, no YAML at all
        cfg = Config()
        cfg.train.train_glob, cfg.train.val_glob = (o.split("=", 1)[1] for o in NO_SHARDS)
        for item in overrides:
            section, rest = item.split(".", 1)
            name, value = rest.split("=")
            setattr(getattr(cfg, section), name, float(value))
    else:
        cfg = load_config(preset, [*NO_SHARDS, *overrides])
    return train_code_version(cfg), run_tag(cfg)


@pytest.mark.parametrize("preset", list(TAGS_BEFORE_THE_BETAS), ids=["tiny", "defaults"])
def test_a_run_tag_from_before_the_betas_is_unchanged(preset, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = TAGS_BEFORE_THE_BETAS[preset]
    assert _tagged(preset) == before
    assert _tagged(preset, "train.adam_beta1=0.9", "train.adam_beta2=0.95") == before  # written out: the same run
    # Another beta is another run: another code version and tag.
    for other in ("train.adam_beta2=0.999", "train.adam_beta1=0.8"):
        version, tag = _tagged(preset, other)
        assert version != before[0] and tag != before[1] and tag.split("-")[0] == before[1].split("-")[0], other
    assert _tagged(preset, "train.grad_clip=0") != before


# ---------------------------------------------------------------- -e FILE of any shape


def _custom_llmc_file(path: Path, seed: int = 7) -> GPT:
    model = GPT(CUSTOM).init_weights(seed)
    with torch.no_grad():  # distinct weights, llm.c's padded rows zero
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())) * 0.01)
        model.transformer.wte.weight[CUSTOM.vocab_size:] = 0
    write_llmc_model(path, model)
    return model.eval()


def test_e_file_of_a_custom_shape_builds_it_from_the_header(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    src = _custom_llmc_file(tmp_path / "custom.bin")
    cfg = llmc_config(["-e", str(tmp_path / "custom.bin")])
    assert (cfg.model.descriptor, cfg.model.block_size) == ("custom:L3-NH2-C64", 96)
    assert cfg.train.init_from == str(tmp_path / "custom.bin")
    assert run_tag(cfg).startswith("custom-L3-NH2-C64-")
    built = GPTConfig.from_descriptor(cfg.model.descriptor, cfg.model.block_size)
    assert built == CUSTOM == source_shape(tmp_path / "custom.bin")
    model, what = load_model(tmp_path / "custom.bin")
    assert what.startswith(f"llm.c model file {tmp_path / 'custom.bin'} (3 layers, 64 wide")
    assert model.transformer.wpe.weight.shape == (96, 64) and len(model.transformer.h) == 3
    assert model.transformer.h[0].attn.c_attn.weight.shape == (192, 64)
    idx = torch.randint(0, 50257, (2, 96), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits = model(idx)[0]
        assert logits.shape == (2, 96, 50257) and torch.equal(logits, src(idx)[0])


def test_e_file_of_a_preset_shape_is_named_by_the_preset(tmp_path, monkeypatch):
    """The file decides, and a shape that is a preset's keeps the preset's name: a run started with
    `--config tiny -e tiny.bin` before `custom` existed makes the same tag now."""
    from tests.test_weights import source_model

    monkeypatch.chdir(tmp_path)
    write_llmc_model(tmp_path / "tiny.bin", source_model())
    _, flags = llmc_args_to_overrides(["-e", str(tmp_path / "tiny.bin")])
    cfg = load_config("tiny", ["model.descriptor=d12", "model.block_size=1024", *flags])  # d12 before `-e`
    assert (cfg.model.descriptor, cfg.model.block_size) == ("tiny", 64)
    explicit = load_config("tiny", [f"train.init_from={tmp_path / 'tiny.bin'}"])  # as before the upgrade
    assert (explicit.model.descriptor, explicit.model.block_size) == ("tiny", 64)
    same = llmc_config(["-e", str(tmp_path / "tiny.bin")])
    assert run_tag(same) == run_tag(explicit) and train_code_version(same) == train_code_version(explicit)


def test_an_explicit_descriptor_against_the_file_is_refused_in_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _custom_llmc_file(tmp_path / "custom.bin")
    with pytest.raises(ConfigError) as e:
        load_config("tiny", [f"train.init_from={tmp_path / 'custom.bin'}"])
    message = str(e.value)
    assert "\n" not in message
    assert "holds another model shape than model.descriptor='tiny' (it has n_layer=3 n_head=2 n_embd=64 " \
           "block_size=96" in message
    assert "set model.descriptor / model.block_size to its shape (custom:L3-NH2-C64, 96; model.descriptor=custom " \
           "takes both from the file)" in message
    # Named in full, the descriptor matches the file and loads.
    named = load_config("tiny", [f"train.init_from={tmp_path / 'custom.bin'}", "model.descriptor=custom:L3-NH2-C64",
                                 "model.block_size=96"])
    assert named.model.descriptor == "custom:L3-NH2-C64"
    with pytest.raises(ConfigError, match=r"model\.descriptor=custom takes its shape from train\.init_from, which "
                                          r"is not set"):
        load_config("tiny", ["model.descriptor=custom"])


def test_an_unpadded_vocabulary_is_part_of_the_shape(tmp_path, monkeypatch):
    """A header with Vp = V (no padding rows): the tiny preset's layers, another wte; named, built, loaded."""
    monkeypatch.chdir(tmp_path)
    unpadded = GPTConfig(n_layer=2, n_head=2, n_embd=128, block_size=64, padded_vocab_size=50257)
    src = GPT(unpadded).init_weights(2).eval()
    write_llmc_model(tmp_path / "unpadded.bin", src)
    with pytest.raises(ConfigError, match=r"it has n_layer=2 n_head=2 n_embd=128 block_size=64 vocab_size=50257 "
                                          r"padded_vocab_size=50257; the config asks for .* padded_vocab_size=50304\).*"
                                          r"\(custom:L2-NH2-C128-Vp50257, 64; model\.descriptor=custom takes both"):
        load_config("tiny", [f"train.init_from={tmp_path / 'unpadded.bin'}"])
    cfg = llmc_config(["-e", str(tmp_path / "unpadded.bin")])
    assert cfg.model.descriptor == "custom:L2-NH2-C128-Vp50257"
    model, _ = load_model(tmp_path / "unpadded.bin")
    assert model.transformer.wte.weight.shape == (50257, 128)
    idx = torch.randint(0, 50257, (1, 16), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert torch.equal(model(idx)[0], src(idx)[0])


def test_a_hugging_face_folder_of_a_custom_shape_gives_its_config_json_shape(tmp_path, monkeypatch):
    """A save_pretrained folder's two files, written as transformers writes them for GPT2LMHeadModel (its
    config.json keys, its safetensors names): the shape comes from config.json."""
    from safetensors.torch import save_file

    from gpt2train.export.state_dict import to_hf_state_dict

    monkeypatch.chdir(tmp_path)
    src = GPT(GPTConfig(n_layer=3, n_head=4, n_embd=64, block_size=80)).init_weights(5).eval()
    folder = tmp_path / "hf"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({
        "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "activation_function": "gelu_new",
        "n_layer": 3, "n_head": 4, "n_embd": 64, "n_positions": 80, "n_inner": None, "vocab_size": 50257,
        "layer_norm_epsilon": 1e-5, "tie_word_embeddings": True}))
    save_file(to_hf_state_dict(src), str(folder / "model.safetensors"))
    cfg = llmc_config(["-e", str(folder)])
    assert (cfg.model.descriptor, cfg.model.block_size) == ("custom:L3-NH4-C64", 80)
    model, _ = load_model(folder)
    idx = torch.randint(0, 50257, (1, 80), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.allclose(model(idx)[0], src(idx)[0], atol=1e-5)


@pytest.mark.parametrize("descriptor, shape", [
    ("custom:L3-NH2-C64", (3, 2, 64, 50257, 50304)),
    ("custom:L1-NH1-C8-V50304", (1, 1, 8, 50304, 50304)),
    ("custom:L2-NH2-C32-Vp50257", (2, 2, 32, 50257, 50257)),
    ("custom:L2-NH2-C32-V60000", (2, 2, 32, 60000, 60032)),  # Vp: V rounded up to a multiple of 128
    ("custom:L2-NH2-C32-V60000-Vp60160", (2, 2, 32, 60000, 60160)),
])
def test_a_custom_descriptor_names_its_shape_both_ways(descriptor, shape):
    c = GPTConfig.from_descriptor(descriptor, 16)
    assert (c.n_layer, c.n_head, c.n_embd, c.vocab_size, c.padded_vocab_size) == shape
    assert c.descriptor() == descriptor
    assert GPTConfig.from_descriptor("d24").descriptor() == "d24" and GPTConfig.from_descriptor("small").descriptor() \
        == "small"


@pytest.mark.parametrize("descriptor, message", [
    ("custom:L3-H2-C64", r"is not custom:L<layers>-NH<heads>-C<channels>"),
    ("custom:L0-NH2-C64", r"L, NH and C must be >= 1"),
    ("custom:L2-NH3-C64", r"n_embd=64 must be divisible by n_head=3"),
    ("custom:L2-NH2-C64-V1000", r"V=1000 is smaller than GPT-2's vocabulary"),
])
def test_a_bad_custom_descriptor_is_refused_at_config_load(descriptor, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"model\.descriptor: .*" + message):
        load_config("tiny", [f"model.descriptor={descriptor}"])


# ---------------------------------------------------------------- not a GPT-2 model file

def _header_file(path: Path, magic: int, version: int, size: int = 1024 + 64) -> Path:
    header = np.zeros(256, dtype=np.int32)
    header[:8] = [magic, version, 1024, 50257, 12, 12, 768, 50304]
    path.write_bytes(header.tobytes() + b"\0" * (size - 1024))
    return path


@pytest.mark.parametrize("magic, version, found", [
    (20240520, 1, r"its header holds magic 20240520, version 1, that of a GPT-2 token shard"),
    (20240527, 1, r"its header holds magic 20240527, version 1, that of an llm.c training-state file"),
    (20240328, 2, r"its header holds magic 20240328, version 2, that of llm.c's tokenizer file"),
    (20240326, 2, r"its header holds magic 20240326, version 2, that of a GPT-2 model file of a version gpt2train "
                  r"does not read"),
])
def test_an_llmc_file_that_is_not_a_gpt2_model_is_refused_in_one_line(magic, version, found, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = _header_file(tmp_path / "model.bin", magic, version)
    expected = r"; expected magic 20240326 with version 3 \(fp32\) or 5 \(bf16\)"
    for run in (lambda: llmc_config(["-e", str(path)]), lambda: load_model(path)):
        with pytest.raises((ConfigError, Gpt2TrainError)) as e:
            run()
        message = str(e.value)
        assert "\n" not in message
        assert f"{path}: not a GPT-2 llm.c model file: " in message
        assert re.search(found + r".*" + expected, message), message


def test_a_file_of_no_llmc_kind_says_what_its_start_holds(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = _header_file(tmp_path / "foreign.bin", 12345, 7)
    with pytest.raises(ConfigError, match=r"foreign\.bin: neither a checkpoint directory .* nor an llm\.c model file "
                                          r"\(header magic 20240326, version 3 or 5; its header holds magic 12345, "
                                          r"version 7\)"):
        llmc_config(["-e", str(path)])
    (tmp_path / "short.bin").write_bytes(b"\1\2\3")
    with pytest.raises(Gpt2TrainError, match=r"short\.bin: .*it is 3 bytes, shorter than llm\.c's 1024-byte header"):
        load_model(tmp_path / "short.bin")


def test_a_header_whose_shape_is_no_gpt2_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = _header_file(tmp_path / "odd.bin", 20240326, 3)
    data = bytearray(path.read_bytes())
    data[4 * 5:4 * 6] = np.int32(7).tobytes()  # NH = 7: 768 channels do not split into 7 heads
    path.write_bytes(bytes(data))
    with pytest.raises(ConfigError, match=r"odd\.bin: its header's shape is not a GPT-2 \(maxT=1024, V=50257, L=12, "
                                          r"NH=7, C=768, Vp=50304"):
        llmc_config(["-e", str(path)])


def test_a_file_shorter_than_its_header_says_is_refused_at_config_load(tmp_path, monkeypatch):
    """Found from the file's size, before a trainer builds the model its header describes."""
    monkeypatch.chdir(tmp_path)
    _custom_llmc_file(tmp_path / "custom.bin")
    data = (tmp_path / "custom.bin").read_bytes()
    (tmp_path / "custom.bin").write_bytes(data[:-64 * 4])
    with pytest.raises(ConfigError, match=r"custom\.bin: [\d,]+ parameters after the header, but its header \(L=3, "
                                          r"C=64, maxT=96, Vp=50304\) needs [\d,]+: a truncated or foreign file"):
        llmc_config(["-e", str(tmp_path / "custom.bin")])


# ---------------------------------------------------------------- trained, checkpointed, exported


@pytest.mark.e2e
def test_a_custom_shape_trains_checkpoints_exports_and_starts_again_from_its_export(tmp_path, tiny_shards,
                                                                                    monkeypatch):
    """In this process: one step at learning rate 0 from a custom-shape llm.c file leaves its weights; the
    checkpoint records the descriptor and rebuilds the model from it; the export records it too, and `-e`
    of the export (transformers' config.json) names the same shape. (e2e: transformers' import and the
    export's verification, 5 s alone here and 20 s beside other work.)"""
    from safetensors.torch import load_file

    from gpt2train.export.hf_export import export_checkpoint
    from gpt2train.training.checkpoint import CheckpointState
    from gpt2train.training.loop import train
    from gpt2train.weights import read_checkpoint
    from tests.fixtures.training import run_cfg

    src = _custom_llmc_file(tmp_path / "custom.bin")
    rest, flags = llmc_args_to_overrides(["-e", str(tmp_path / "custom.bin"), "-l", "0e0", "-x", "1"])
    cfg = run_cfg(tiny_shards, tmp_path / "run", *flags, "train.val_every=0", "train.sample_every=0")
    assert train(cfg).steps == 1
    checkpoint = tmp_path / "run" / "checkpoints" / "step_00000001"
    weights, expected = load_file(checkpoint / "model.safetensors"), src.state_dict()
    assert all(torch.equal(weights[k], expected[k]) for k in weights)
    state = CheckpointState.from_dir(checkpoint)
    assert (state.config.model.descriptor, state.config.model.block_size) == ("custom:L3-NH2-C64", 96)
    assert state.run_tag.startswith("custom-L3-NH2-C64-")
    assert read_checkpoint(checkpoint).model.config == CUSTOM

    export = export_checkpoint(checkpoint, tmp_path / "export")
    assert export.lineage["model"] == {"descriptor": "custom:L3-NH2-C64", "n_layer": 3, "n_head": 2, "n_embd": 64,
                                       "block_size": 96, "vocab_size": 50257}
    monkeypatch.chdir(tmp_path)
    again = llmc_config(["-e", str(tmp_path / "export")])
    assert (again.model.descriptor, again.model.block_size) == ("custom:L3-NH2-C64", 96)


def test_a_run_with_grad_clip_0_steps_as_one_whose_clip_never_bites(tmp_path, tiny_shards):
    """The trainer's step with clipping off (0) and with a threshold far above any norm (1e6): the same
    updates, bit for bit, and the same logged norms (a clip of 0 taken as a threshold would scale every
    gradient to 0 instead). Two 2-step runs in this process: ~2.5 s here."""
    from safetensors.torch import load_file

    from gpt2train.training.loop import train
    from tests.fixtures.training import run_cfg

    runs = {}
    for clip in ("0", "1e6"):
        out = tmp_path / f"clip-{clip}"
        train(run_cfg(tiny_shards, out, "train.max_steps=2", "train.val_every=0", "train.sample_every=0",
                      f"train.grad_clip={clip}"))
        records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        norms = [r["norm"] for r in records if "norm" in r]
        runs[clip] = (load_file(out / "checkpoints" / "step_00000002" / "model.safetensors"), norms)
    (off, off_norms), (loose, loose_norms) = runs["0"], runs["1e6"]
    assert len(off_norms) == 2 and off_norms == loose_norms and all(n > 0 for n in off_norms)
    assert all(torch.equal(off[k], loose[k]) for k in off)
