"""Checkpoints: round trip, DONE marker, safe loading, pruning with major checkpoints and the checkpoints kept
before an instability, the typed state record."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from gpt2train.config import Config, config_to_dict
from gpt2train.layout import CHECKPOINT_DONE, CHECKPOINT_STATE, CHECKPOINT_WEIGHTS, step_dir
from gpt2train.training.checkpoint import (
    CheckpointState, InstabilityMark, RecordedModel, RecordedTrain, TrainingLineage, complete_checkpoints,
    latest_checkpoint, load_checkpoint, mark_before_instability, prune_checkpoints, restore_rng, save_checkpoint,
)
from gpt2train.errors import Gpt2TrainError
from gpt2train.fileio import sha256_file
from gpt2train.model import GPT, GPTConfig


def tiny_model():
    return GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=8, padded_vocab_size=50304)).init_weights(0)


def save(root, step, model, opt, rank=0):
    return save_checkpoint(root, step, model_state=model.state_dict(), optimizer_state=opt.state_dict(),
                           loader_state={"epoch": 0, "shard_pos": 1, "batch_pos": step}, state={"loss": 1.5},
                           rank=rank)


def test_round_trip_restores_weights_optimizer_rng_and_loader(tmp_path):
    model = tiny_model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randint(0, 50257, (2, 8)), torch.randint(0, 50257, (2, 8)))[1].backward()
    opt.step()
    torch.manual_seed(123)
    path = save(tmp_path, 7, model, opt)
    expected_draw = torch.rand(3)

    ck = load_checkpoint(path)
    fresh = tiny_model()
    fresh.load_state_dict(ck["model"])
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), fresh.state_dict().values()))
    assert fresh.lm_head.weight is fresh.transformer.wte.weight  # still tied after loading
    opt2 = torch.optim.AdamW(fresh.parameters(), lr=1e-3)
    opt2.load_state_dict(ck["optimizer"])
    assert torch.equal(opt2.state_dict()["state"][0]["exp_avg"], opt.state_dict()["state"][0]["exp_avg"])
    torch.manual_seed(0)
    restore_rng(ck["rng"])
    assert torch.equal(torch.rand(3), expected_draw)
    assert ck["loader"]["batch_pos"] == 7
    assert ck["state"] == {"artifact": "checkpoint", "step": 7, "loss": 1.5,
                           "model_sha256": sha256_file(path / "model.safetensors")}  # the content hash


def test_every_file_of_a_checkpoint_has_one_mode(tmp_path):
    """safetensors writes its file 0600: the weights must be as readable as the rest (another user of the
    group exports and evaluates them), so every file takes the mode a new file gets under the umask."""
    import os

    umask = os.umask(0o027)  # a group-readable deployment's umask, not whatever this shell has
    try:
        model = tiny_model()
        path = save(tmp_path, 3, model, torch.optim.AdamW(model.parameters(), lr=1e-3))
    finally:
        os.umask(umask)
    modes = {p.name: oct(p.stat().st_mode & 0o777) for p in path.iterdir()}
    assert CHECKPOINT_WEIGHTS in modes and set(modes.values()) == {oct(0o640)}, modes


def test_incomplete_checkpoints_are_ignored(tmp_path):
    model, opt = tiny_model(), None
    opt = torch.optim.AdamW(model.parameters())
    save(tmp_path, 10, model, opt)
    later = save(tmp_path, 20, model, opt)
    (later / "DONE").unlink()  # as if the process died before the marker
    (tmp_path / ".step_00000030.tmp").mkdir()  # a save that died half way
    assert latest_checkpoint(tmp_path) == step_dir(tmp_path, 10)
    with pytest.raises(Gpt2TrainError, match="incomplete"):
        load_checkpoint(later)


def test_loading_never_unpickles_arbitrary_objects(tmp_path):
    model = tiny_model()
    path = save(tmp_path, 1, model, torch.optim.AdamW(model.parameters()))

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"state": Evil()}, path / "optimizer_rank0.pt")
    with pytest.raises(Gpt2TrainError, match=r"optimizer_rank0.pt holds objects other than tensors \(refused, "
                                             r"not unpickled: Unsupported global: GLOBAL print was not an allowed "
                                             r"global by default\); gpt2train never writes such files"):
        load_checkpoint(path)


def test_missing_rank_state_is_a_clear_error(tmp_path):
    model = tiny_model()
    path = save(tmp_path, 1, model, torch.optim.AdamW(model.parameters()))
    with pytest.raises(Gpt2TrainError, match="rank 1"):
        load_checkpoint(path, rank=1)


def test_prune_keeps_last_k_and_majors(tmp_path):
    model = tiny_model()
    opt = torch.optim.AdamW(model.parameters())
    for step in (100, 200, 300, 400, 500, 600):
        save(tmp_path, step, model, opt)
    deleted = prune_checkpoints(tmp_path, keep_last=2, major_every=300)
    assert sorted(p.name for p in deleted) == ["step_00000100", "step_00000200", "step_00000400"]
    assert [p.name for p in complete_checkpoints(tmp_path)] == ["step_00000300", "step_00000500", "step_00000600"]


def test_pruning_keeps_the_last_checkpoint_before_each_instability(tmp_path):
    """The mark is on disk (state.json), so whoever prunes next, a resumed run included, spares it; marks
    accumulate, one per checkpoint, each naming the first instability after it."""
    model = tiny_model()
    opt = torch.optim.AdamW(model.parameters())
    assert mark_before_instability(tmp_path, 1, "loss nan: not finite") == (None, False)  # nothing to keep yet
    for step in (2, 4):
        save(tmp_path, step, model, opt)
    weights = sha256_file(step_dir(tmp_path, 2) / CHECKPOINT_WEIGHTS)
    # Step 4's checkpoint was saved after update 4: the last one before an instability at step 4 is step 2's.
    assert mark_before_instability(tmp_path, 4, "loss z 9.0 > train.skip_loss_z=5") == (step_dir(tmp_path, 2), True)
    assert mark_before_instability(tmp_path, 5, "loss nan: not finite") == (step_dir(tmp_path, 4), True)
    assert mark_before_instability(tmp_path, 6, "again") == (step_dir(tmp_path, 4), False)  # the first one stays
    for step in (6, 8, 10):
        save(tmp_path, step, model, opt)
        prune_checkpoints(tmp_path, keep_last=1)
    assert [p.name for p in complete_checkpoints(tmp_path)] == ["step_00000002", "step_00000004", "step_00000010"]
    assert CheckpointState.from_dir(step_dir(tmp_path, 4)).before_instability == InstabilityMark(5, "loss nan: not "
                                                                                                    "finite")
    state = CheckpointState.from_dir(step_dir(tmp_path, 2), verify_hash=True)  # the weights are as saved
    assert state.before_instability.describe() == ("last checkpoint before the instability at step 4 "
                                                   "(loss z 9.0 > train.skip_loss_z=5)")
    assert state.model_sha256 == weights and state.loss == 1.5
    assert not list(tmp_path.glob("step_*/.*"))  # no temp file of the rewritten state.json left


def write_state(root, record: dict):
    """A complete checkpoint directory written by hand: CheckpointState reads the weights only to hash them."""
    path = step_dir(root, 40)
    path.mkdir(parents=True)
    (path / CHECKPOINT_WEIGHTS).write_bytes(b"weights")
    (path / CHECKPOINT_STATE).write_text(json.dumps(record))
    (path / CHECKPOINT_DONE).write_text("complete\n")
    return path


def test_checkpoint_state_reads_a_complete_record_into_typed_fields(tmp_path):
    """A record as training/checkpointer.py's `save` writes it."""
    cfg = Config()
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, init_from="hf:openai-community/gpt2",
                                                             train_glob="/shards/edu_fineweb_train_*.bin"))
    shard = {"file": "edu_fineweb_train_000001.bin", "tokens": 100, "sha256": "ab" * 32, "sources": ["a.jsonl"]}
    lineage = {"run_tag": "tiny-0123456789", "shards_dir": "shards", "train_shards": [shard], "val_shards": [],
               "code_version": "c0de", "git_commit": "f00d", "gpt2train_version": "0.1.0"}
    record = {"artifact": "checkpoint", "step": 40, "world": 1, "kernels": "torch", "loss": 5.25, "val_loss": 5.5,
              "data_dir": "../../../..", "config": config_to_dict(cfg), "skipped_updates": 0, "lineage": lineage,
              "model_sha256": "cd" * 32}
    state = CheckpointState.from_dir(write_state(tmp_path, record))
    assert state.record == record  # kept whole, for what is passed on as recorded
    assert (state.step, state.model_sha256, state.loss, state.val_loss, state.created_at) == (40, "cd" * 32, 5.25,
                                                                                                5.5, None)
    assert state.config.data_dir == "data"
    assert state.config.model == RecordedModel(descriptor="d12", block_size=1024)
    assert state.config.train == RecordedTrain(max_steps=-1, batch_size=64, seq_len=1024, total_batch_tokens=524288,
                                               init_from="hf:openai-community/gpt2",
                                               train_glob="/shards/edu_fineweb_train_*.bin", val_glob=None)
    assert state.lineage == TrainingLineage(run_tag="tiny-0123456789", shards_dir="shards", train_shards=(shard,),
                                            code_version="c0de", git_commit="f00d", gpt2train_version="0.1.0")
    assert state.run_tag == "tiny-0123456789"


def test_checkpoint_state_of_an_older_record_leaves_what_it_lacks_none(tmp_path):
    """No model_sha256 (hashed now), no config.train, no lineage, no losses: what the readers treat as absent."""
    record = {"step": 7, "config": {"model": {"descriptor": "tiny"}, "train": {}}, "lineage": {}}
    path = write_state(tmp_path, record)
    state = CheckpointState.from_dir(path)
    assert state.model_sha256 == sha256_file(path / CHECKPOINT_WEIGHTS)
    assert state.record == {**record, "model_sha256": state.model_sha256}
    assert (state.step, state.loss, state.val_loss, state.lineage, state.run_tag) == (7, None, None, None, None)
    assert state.config.model == RecordedModel(descriptor="tiny", block_size=None)
    assert state.config.train is None and state.config.data_dir is None
    # A section that is not a mapping (a damaged or foreign state.json, as the lineage walk may meet) is absent.
    odd = CheckpointState.from_record({"step": 1, "config": None, "lineage": ["x"]})
    assert odd.config.model == RecordedModel() and odd.config.train is None and odd.lineage is None
    (path / CHECKPOINT_STATE).write_text(json.dumps({**record, "model_sha256": "00" * 32}))
    with pytest.raises(Gpt2TrainError, match="the weights changed after the save"):
        CheckpointState.from_dir(path, verify_hash=True)
