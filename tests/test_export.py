"""The Hugging Face export (gpt2train/export/hf_export.py) of a real tiny checkpoint, loaded back by transformers.

    pytest tests/test_export.py -q        # offline; the CLI run is marked e2e

The checkpoint and its export are the session's (tests/fixtures/evals.py: a seeded tiny GPT saved by
gpt2train.training.checkpoint.save_checkpoint, exported once); the tests load the export with
transformers' Auto classes and check it against our model and tiktoken independently of the export's
own verification, then break the export on purpose (a transposed weight, a damaged tokenizer, a full
disk) and check that a previous export survives each failure (on a copy of the session's export).
"""

from __future__ import annotations

import dataclasses
import errno
import json
import shutil
from pathlib import Path

import pytest
import torch

from gpt2train.export import hf_export as export_mod
from gpt2train.export import state_dict as state_dict_mod
from gpt2train.training.checkpoint import DONE, load_checkpoint
from gpt2train.errors import DataError, Gpt2TrainError
from gpt2train.export.hf_export import export_checkpoint, export_code_version
from gpt2train.fileio import sha256_file
from gpt2train.export.tokenizer import (ENCODER_JSON_SHA256, TOKENIZER_CHECK_TEXTS, VOCAB_BPE_SHA256,
                                    check_vocab_against_tiktoken, gpt2_bpe_files)
from gpt2train.model import GPT, GPTConfig
from gpt2train.data.tokenizer import get_encoding
from tests.commands import gpt2train
from tests.fixtures.evals import LINEAGE, LOSS, RUN_TAG, STEP

EXPORT_FILES = {"model.safetensors", "config.json", "generation_config.json", "vocab.json", "merges.txt",
                "tokenizer.json", "tokenizer_config.json", "README.md", "lineage.json"}


def snapshot(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def leftovers(parent: Path) -> list[str]:
    """Temp or moved-aside directories an export may leave next to its destination (its writer lock
    file, `.<name>.lock`, stays by design: gpt2train/locks.py)."""
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(".") and not p.name.endswith(".lock"))


@pytest.fixture
def exported(tiny_export, tmp_path):
    """A copy of the session's export (the ExportResult's out_dir moved to it): a test may replace it."""
    out = tmp_path / "exports" / tiny_export.out_dir.name
    shutil.copytree(tiny_export.out_dir, out)
    return dataclasses.replace(tiny_export, out_dir=out)


def copy_checkpoint(checkpoint: Path, dest: Path) -> Path:
    target = dest / "run" / "checkpoints" / checkpoint.name
    shutil.copytree(checkpoint, target)
    return target


def test_export_loads_in_transformers_and_matches_our_model_and_tiktoken(tiny_checkpoint, tiny_export):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    checkpoint, exported = tiny_checkpoint, tiny_export
    out = exported.out_dir
    assert {p.name for p in out.iterdir()} >= EXPORT_FILES
    assert exported.step == STEP and exported.model_sha256 == sha256_file(out / "model.safetensors")
    v = exported.verification
    assert v["logits_max_abs_diff"] <= v["logits_tolerance"] == 1e-4
    assert v["tokenizer_texts"] == len(TOKENIZER_CHECK_TEXTS) and v["tokenizer_match"] is True

    config = json.loads((out / "config.json").read_text())
    assert (config["model_type"], config["activation_function"], config["vocab_size"], config["n_positions"],
            config["n_layer"], config["n_head"], config["n_embd"]) == ("gpt2", "gelu_new", 50257, 64, 2, 2, 128)
    generation = json.loads((out / "generation_config.json").read_text())
    assert generation["bos_token_id"] == generation["eos_token_id"] == 50256
    # OpenAI's BPE files byte for byte (tiktoken's pinned hashes)
    assert sha256_file(out / "vocab.json") == ENCODER_JSON_SHA256
    assert sha256_file(out / "merges.txt") == VOCAB_BPE_SHA256

    # Our own check, on a batch and length the export's verification did not use.
    ours = GPT(GPTConfig.from_descriptor("tiny", 64))
    ours.load_state_dict(load_checkpoint(checkpoint, weights_only=True)["model"])
    hf = AutoModelForCausalLM.from_pretrained(out).eval()
    idx = torch.randint(0, 50257, (3, 64), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        diff = (ours.eval()(idx)[0] - hf(input_ids=idx).logits).abs().max().item()
    assert diff <= 1e-4
    assert (hf.lm_head.weight.data_ptr() == hf.transformer.wte.weight.data_ptr())  # tied, as ours

    tok = AutoTokenizer.from_pretrained(out)
    assert tok.eos_token_id == tok.bos_token_id == 50256 and tok.model_max_length == 64 and len(tok) == 50257
    text = "Übung macht den Meister 🎯 — x=42;\n\n  print(f'{x:>8}')  # 東京"
    assert tok(text)["input_ids"] == get_encoding("gpt2").encode_ordinary(text)

    card = (out / "README.md").read_text()
    from huggingface_hub import ModelCard  # the card's own reader: tests/test_model_card.py has the rest

    data = ModelCard.load(out / "README.md").data
    assert (data.library_name, data.license, data.datasets) == ("transformers", "mit", ["HuggingFaceFW/fineweb-edu"])
    assert data.base_model is None and "initialised from" not in card  # this run started from scratch
    for fact in (RUN_TAG, f"step {STEP}", f"{LOSS:.4f}", exported.model_sha256, str(checkpoint),
                 LINEAGE["train_shards"][0]["sha256"],
                 "AutoModelForCausalLM.from_pretrained"):
        assert fact in card, fact


def test_lineage_json_is_the_documented_sidecar(tiny_checkpoint, tiny_export):
    checkpoint, exported = tiny_checkpoint, tiny_export
    out = exported.out_dir
    lineage = json.loads((out / "lineage.json").read_text())
    assert lineage == exported.lineage
    assert lineage["artifact"] == "hf_export" and lineage["stage"] == "hf_export"
    assert lineage["checkpoint"] == {"path": str(checkpoint), "key": f"{RUN_TAG}@step_{STEP:08d}", "step": STEP,
                                     "model_sha256": sha256_file(checkpoint / "model.safetensors"),
                                     "run_tag": RUN_TAG}
    on_disk = {p.name: sha256_file(p) for p in out.iterdir() if p.name != "lineage.json"}
    assert lineage["files"] == on_disk == exported.files
    assert lineage["model_sha256"] == on_disk["model.safetensors"]
    assert set(lineage["verification"]) == {"logits_max_abs_diff", "logits_tolerance", "tokenizer_texts",
                                            "tokenizer_match"}
    assert lineage["model"] == {"descriptor": "tiny", "n_layer": 2, "n_head": 2, "n_embd": 128, "block_size": 64,
                                "vocab_size": 50257}
    assert lineage["code_version"] == export_code_version()
    assert {"gpt2train_version", "git_commit", "created_at"} <= set(lineage)


def test_reexport_replaces_it_byte_identically(tiny_checkpoint, tmp_path):
    # Two exports into one folder (the model card names the folder it was written for).
    first = export_checkpoint(tiny_checkpoint, tmp_path / "exports" / "tiny")
    before = snapshot(first.out_dir)
    again = export_checkpoint(tiny_checkpoint, first.out_dir)
    after = snapshot(first.out_dir)
    assert after.keys() == before.keys()
    for name in before.keys() - {"lineage.json"}:
        assert after[name] == before[name], f"{name} differs between two exports of the same checkpoint"
    assert again.files == first.files and again.model_sha256 == first.model_sha256
    assert leftovers(first.out_dir.parent) == []


@pytest.mark.e2e
def test_cli_export_prints_the_verification(tiny_checkpoint, tmp_path):
    out = tmp_path / "cli-export"
    r = gpt2train("export", tiny_checkpoint, out)
    assert r.returncode == 0, r.stderr
    assert f"(step {STEP}) to {out}" in r.stdout
    assert "logits max |diff|" in r.stdout and "(<= 0.0001)" in r.stdout
    assert f"tokenizer == tiktoken on {len(TOKENIZER_CHECK_TEXTS)} texts" in r.stdout
    assert json.loads((out / "lineage.json").read_text())["checkpoint"]["step"] == STEP


def test_bad_checkpoints_are_refused_with_a_clear_error(tiny_checkpoint, tmp_path):
    checkpoint = tiny_checkpoint
    out = tmp_path / "out"

    with pytest.raises(Gpt2TrainError, match="does not exist: it was deleted"):
        export_checkpoint(tmp_path / "gone" / "step_00000040", out)

    not_ckpt = tmp_path / "notes"
    not_ckpt.mkdir()
    (not_ckpt / "todo.txt").write_text("hi")
    with pytest.raises(Gpt2TrainError, match="is not a checkpoint"):
        export_checkpoint(not_ckpt, out)

    incomplete = copy_checkpoint(checkpoint, tmp_path / "a")
    (incomplete / DONE).unlink()
    with pytest.raises(Gpt2TrainError, match=f"{incomplete}.*no DONE marker: it is incomplete"):
        export_checkpoint(incomplete, out)

    wrong_shape = copy_checkpoint(checkpoint, tmp_path / "b")
    state = json.loads((wrong_shape / "state.json").read_text())
    state["config"]["model"]["descriptor"] = "small"  # 4 layers x 256: not the tiny weights saved
    (wrong_shape / "state.json").write_text(json.dumps(state))
    with pytest.raises(Gpt2TrainError, match=r"is not the GPT-2 state.json describes.*missing transformer.h.2"):
        export_checkpoint(wrong_shape, out)

    tampered = copy_checkpoint(checkpoint, tmp_path / "c")
    state = json.loads((tampered / "state.json").read_text())
    state["model_sha256"] = "0" * 64  # the recorded hash the lead's checkpoints carry
    (tampered / "state.json").write_text(json.dumps(state))
    with pytest.raises(Gpt2TrainError, match="weights changed after the save"):
        export_checkpoint(tampered, out)

    assert not out.exists() and leftovers(tmp_path) == []

    user_dir = tmp_path / "my-stuff"  # not an earlier export: replacing it would delete it
    user_dir.mkdir()
    (user_dir / "thesis.tex").write_text("precious")
    with pytest.raises(Gpt2TrainError, match="is not a gpt2train export"):
        export_checkpoint(checkpoint, user_dir)
    assert (user_dir / "thesis.tex").read_text() == "precious"


def test_wrong_vocab_file_is_caught():
    vocab = json.loads(gpt2_bpe_files()[0])
    check_vocab_against_tiktoken(vocab)
    vocab["Ġthe"], vocab["Ġa"] = vocab["Ġa"], vocab["Ġthe"]
    with pytest.raises(DataError, match="not GPT-2's"):
        check_vocab_against_tiktoken(vocab)


def _transposed_c_fc(real_to_hf, model):
    # A plausible mapping bug: one Conv1D weight laid out wrongly. The (C, 4C) transpose would
    # not load at all, so it is reshaped back to (C, 4C): the same shape with the wrong values.
    sd = real_to_hf(model)
    w = sd["transformer.h.0.mlp.c_fc.weight"]
    sd["transformer.h.0.mlp.c_fc.weight"] = w.t().reshape(w.shape).contiguous()
    return sd


def _damaged_tokenizer(out_dir, model_max_length):
    names = real_write_gpt2_tokenizer(out_dir, model_max_length)
    tj = json.loads((out_dir / "tokenizer.json").read_text())
    tj["model"]["merges"] = tj["model"]["merges"][100:]  # drops e.g. "Ġ t" and "h e": "the" splits
    (out_dir / "tokenizer.json").write_text(json.dumps(tj))
    return names


def _disk_full(out_dir, model_max_length):
    raise OSError(errno.ENOSPC, "No space left on device", str(out_dir / "tokenizer.json"))


real_write_gpt2_tokenizer = export_mod.write_gpt2_tokenizer


@pytest.mark.parametrize("fault, error, match", [
    ("weights", Gpt2TrainError, "logits differ from the checkpoint's"),
    ("tokenizer", Gpt2TrainError, "encodes .* differently from tiktoken"),
    ("disk_full", DataError, "disk full"),
])
def test_failed_export_leaves_the_previous_one_intact(tiny_checkpoint, exported, monkeypatch, fault, error, match):
    checkpoint = tiny_checkpoint
    if fault == "weights":  # write_hf_model imports it from state_dict.py when it runs
        real = state_dict_mod.to_hf_state_dict
        monkeypatch.setattr(state_dict_mod, "to_hf_state_dict", lambda model: _transposed_c_fc(real, model))
    elif fault == "tokenizer":
        monkeypatch.setattr(export_mod, "write_gpt2_tokenizer", _damaged_tokenizer)
    else:
        monkeypatch.setattr(export_mod, "write_gpt2_tokenizer", _disk_full)
    before = snapshot(exported.out_dir)
    with pytest.raises(error, match=match):
        export_checkpoint(checkpoint, exported.out_dir)
    assert snapshot(exported.out_dir) == before
    assert leftovers(exported.out_dir.parent) == []

