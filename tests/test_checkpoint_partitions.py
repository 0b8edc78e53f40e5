"""Checkpoints as `checkpoints` partitions: keys, recording, the trainer's Pipes reports and the sensor
(fast: checkpoints are written directly with `save_checkpoint`, no training)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import dagster as dg
import pytest

from assets.checkpoints import register_checkpoints
from assets.training import build_training_asset
from gpt2train.config import config_to_dict
from gpt2train.errors import Gpt2TrainError
from gpt2train.fileio import sha256_file
from gpt2train.layout import checkpoint_key, checkpoint_path, runs_root
from gpt2train.model import GPT, GPTConfig
from gpt2train.training.checkpoint import checkpoint_state, mark_before_instability, save_checkpoint
from gpt2train.training.runs import find_checkpoints
from pipelines.definitions import (
    CHECKPOINT_EVALS_JOB,
    EVAL_SUMMARY_JOB,
    build_definitions,
)
from pipelines.train_pipes import CHECKPOINT_MESSAGE
from pipelines.training_client import TrainingPipesClient


def write_checkpoint(cfg, run: str, step: int, seed: int = 0, **record):
    model = GPT(GPTConfig.from_descriptor("tiny", 64)).init_weights(seed)
    return save_checkpoint(runs_root(cfg.data_dir) / run / "checkpoints", step, model_state=model.state_dict(),
                           optimizer_state={}, loader_state={},
                           state={"config": config_to_dict(cfg), "loss": 5.0, "lineage": {"run_tag": run}, **record})


def test_keys_round_trip_and_state_records_the_content_hash(tiny_cfg):
    path = write_checkpoint(tiny_cfg, "tiny-0123456789", 20)
    key = checkpoint_key(path)
    assert key == "tiny-0123456789@step_00000020"
    assert checkpoint_path(tiny_cfg.data_dir, key) == path
    assert checkpoint_state(path)["model_sha256"] == sha256_file(path / "model.safetensors")
    for bad in ("tiny", "tiny@20", "../x@step_00000020", "@step_00000020"):
        with pytest.raises(Gpt2TrainError, match="not a checkpoint key"):
            checkpoint_path(tiny_cfg.data_dir, bad)
    with pytest.raises(Gpt2TrainError, match="deleted"):
        checkpoint_state(runs_root(tiny_cfg.data_dir) / "gone" / "checkpoints" / "step_00000001")
    (path / "DONE").unlink()
    with pytest.raises(Gpt2TrainError, match="DONE"):
        checkpoint_state(path)


def test_register_records_the_content_hash_once(tiny_cfg, instance):
    write_checkpoint(tiny_cfg, "tiny-aaaaaaaaaa", 2)
    write_checkpoint(tiny_cfg, "tiny-aaaaaaaaaa", 4, seed=1)
    infos = find_checkpoints(runs_root(tiny_cfg.data_dir))
    assert register_checkpoints(instance, infos) == ["tiny-aaaaaaaaaa@step_00000002", "tiny-aaaaaaaaaa@step_00000004"]
    assert register_checkpoints(instance, infos) == []  # nothing new, no second record
    mats = instance.fetch_materializations(dg.AssetKey("checkpoint"), limit=10).records
    assert len(mats) == 2
    assert {m.asset_materialization.tags["dagster/data_version"] for m in mats} == {i.model_sha256 for i in infos}
    # Materialized partitions, as the UI shows them (runless materializations of an external asset).
    assert instance.get_materialized_partitions(dg.AssetKey("checkpoint")) == {i.key for i in infos}
    # The same step rewritten with other weights (a run directory reused by hand): recorded again.
    write_checkpoint(tiny_cfg, "tiny-aaaaaaaaaa", 4, seed=2)
    assert register_checkpoints(instance, find_checkpoints(runs_root(tiny_cfg.data_dir))) == []
    assert len(instance.fetch_materializations(dg.AssetKey("checkpoint"), limit=10).records) == 3


def checkpoint_records(instance, key: str) -> list:
    """The materializations recorded for checkpoint partition `key`, newest first."""
    return instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=dg.AssetKey("checkpoint"),
                                                                 asset_partitions=[key]), limit=10).records


def test_a_checkpoints_record_carries_its_val_loss_hellaswag_and_instability_mark(tiny_cfg, instance):
    """What the UI shows of a checkpoint: its val loss and in-loop HellaSwag, each with the step it was measured
    at (its own, or the latest before it); and once an instability marks it, that it is the last checkpoint
    before it, recorded again with the same data version (its weights did not change)."""
    run = "tiny-cccccccccc"
    two, four = write_checkpoint(tiny_cfg, run, 2, val_loss=4.5), write_checkpoint(tiny_cfg, run, 4, 1, val_loss=4.25)
    # As the trainer logs them: validation every 2 steps, HellaSwag every 3 (and at 0), both at each checkpoint but 4.
    (two.parent.parent / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [
        {"step": 0, "val_loss": 5.0, "hellaswag_acc_norm": 0.25, "hellaswag_n": 4}, {"step": 1, "loss": 5.2},
        {"step": 2, "val_loss": 4.5, "hellaswag_acc_norm": 0.5, "hellaswag_n": 4},
        {"step": 3, "hellaswag_acc_norm": 0.75, "hellaswag_n": 4}, {"step": 4, "val_loss": 4.25}]))
    runs = runs_root(tiny_cfg.data_dir)
    register_checkpoints(instance, find_checkpoints(runs))
    figures = {}
    for key in (checkpoint_key(two), checkpoint_key(four)):
        metadata = checkpoint_records(instance, key)[0].asset_materialization.metadata
        figures[key] = {k: metadata[k].value for k in ("val_loss", "val_loss_at_step", "hellaswag_acc_norm",
                                                        "hellaswag_acc_norm_at_step")}
        assert "before_instability" not in metadata
    assert figures == {checkpoint_key(two): {"val_loss": 4.5, "val_loss_at_step": 2, "hellaswag_acc_norm": 0.5,
                                             "hellaswag_acc_norm_at_step": 2},
                       checkpoint_key(four): {"val_loss": 4.25, "val_loss_at_step": 4, "hellaswag_acc_norm": 0.75,
                                              "hellaswag_acc_norm_at_step": 3}}

    assert mark_before_instability(four.parent, 5, "loss z 9.0 > train.skip_loss_z=5") == (four, True)
    assert register_checkpoints(instance, find_checkpoints(runs)) == []  # no new partition: a new record of it
    records = checkpoint_records(instance, checkpoint_key(four))
    assert len(records) == 2 and len(checkpoint_records(instance, checkpoint_key(two))) == 1
    latest = records[0].asset_materialization
    assert latest.metadata["before_instability"].value == ("last checkpoint before the instability at step 5 "
                                                           "(loss z 9.0 > train.skip_loss_z=5)")
    assert latest.metadata["instability_step"].value == 5 and latest.metadata["val_loss"].value == 4.25
    assert {r.asset_materialization.tags["dagster/data_version"] for r in records} == {sha256_file(
        four / "model.safetensors")}
    register_checkpoints(instance, find_checkpoints(runs))
    assert len(checkpoint_records(instance, checkpoint_key(four))) == 2  # recorded once


# A trainer's part in the Pipes protocol, as pipelines/train_pipes.py plays it: report checkpoint 1, wait for
# the go file, report checkpoint 2, then the run's materialization, and exit with the given code.
REPORTING_TRAINER = f"""
import sys, time
from pathlib import Path
from dagster_pipes import open_dagster_pipes
first, second, go, code = sys.argv[1:]
with open_dagster_pipes() as pipes:
    pipes.report_custom_message({{"{CHECKPOINT_MESSAGE}": "1", "path": first}})
    deadline = time.monotonic() + 60
    while not Path(go).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    pipes.report_custom_message({{"{CHECKPOINT_MESSAGE}": "2", "path": second}})
    pipes.report_asset_materialization(metadata={{"steps": 2}})
sys.exit(int(code))
"""


class ReportingTrainerClient(TrainingPipesClient):
    """A backend whose trainer is REPORTING_TRAINER: it records which checkpoints were partitions when the
    first one was, the trainer still running, and then lets the trainer go on."""

    poll_interval_s = 0.05

    def __init__(self, first, second, exit_code: int):
        self.first, self.second, self.exit_code = first, second, exit_code
        self.seen_while_training: list[str] = []

    def train(self, context, launch, pipes_env, poll):
        go = launch.notes / "go"
        trainer = subprocess.Popen([sys.executable, "-c", REPORTING_TRAINER, str(self.first), str(self.second),
                                    str(go), str(self.exit_code)], env={**os.environ, **pipes_env})
        while trainer.poll() is None:
            poll()
            if not go.exists() and (registered := context.instance.get_dynamic_partitions("checkpoints")):
                self.seen_while_training = registered  # before the trainer may report its second checkpoint
                go.touch()
            time.sleep(self.poll_interval_s)
        if trainer.returncode:
            raise Gpt2TrainError(f"the trainer exited with code {trainer.returncode}")


def test_the_trainers_checkpoint_reports_register_partitions_while_it_runs(tiny_cfg, instance):
    """The one path by which a checkpoint becomes a partition during a Dagster run: the trainer's Pipes report,
    passed on within a poll, and what arrived after the last poll once the trainer has ended, also when it failed."""
    first, second = write_checkpoint(tiny_cfg, "tiny-bbbbbbbbbb", 1), write_checkpoint(tiny_cfg, "tiny-bbbbbbbbbb", 2)
    key1, key2 = checkpoint_key(first), checkpoint_key(second)
    asset = build_training_asset(tiny_cfg)
    client = ReportingTrainerClient(first, second, exit_code=0)
    result = dg.materialize([asset], instance=instance, resources={"training_client": client})
    assert result.success
    assert client.seen_while_training == [key1]  # registered while the trainer ran, before it reported step 2
    assert instance.get_dynamic_partitions("checkpoints") == [key1, key2]
    run = runs_root(tiny_cfg.data_dir) / "tiny-bbbbbbbbbb"
    (mat,) = result.asset_materializations_for_node("training_run")
    assert mat.metadata["steps"].value == 2

    # A trainer that fails after its reports: they are recorded all the same, the failure is the error.
    third = write_checkpoint(tiny_cfg, "tiny-cccccccccc", 3)
    failing = ReportingTrainerClient(first, third, exit_code=1)
    result = dg.materialize([asset], instance=instance, resources={"training_client": failing},
                            raise_on_error=False)
    assert not result.success
    assert instance.get_dynamic_partitions("checkpoints") == [key1, key2, checkpoint_key(third)]
    recorded = instance.fetch_materializations(dg.AssetKey("checkpoint"), limit=10).records
    assert sorted(r.partition_key for r in recorded) == sorted([key1, key2, checkpoint_key(third)])  # each once
    assert not list(run.parent.glob("*/.launch-*"))  # every attempt's notes folder was removed


def test_incomplete_checkpoints_are_never_registered(tiny_cfg, instance):
    path = write_checkpoint(tiny_cfg, "tiny-cccccccccc", 3)
    (path / "DONE").unlink()
    (runs_root(tiny_cfg.data_dir) / "tiny-cccccccccc" / "checkpoints" / ".step_00000004.tmp").mkdir()
    assert find_checkpoints(runs_root(tiny_cfg.data_dir)) == []
    sensor = build_definitions(tiny_cfg).resolve_sensor_def("checkpoints_sensor")
    result = sensor(dg.build_sensor_context(instance=instance))
    assert result.dynamic_partitions_requests == [] and result.run_requests == []


def test_sensor_registers_and_requests_exports_and_evals(tiny_cfg, instance):
    write_checkpoint(tiny_cfg, "tiny-dddddddddd", 2)
    sensor = build_definitions(tiny_cfg).resolve_sensor_def("checkpoints_sensor")
    result = sensor(dg.build_sensor_context(instance=instance))
    (add,) = result.dynamic_partitions_requests
    assert list(add.partition_keys) == ["tiny-dddddddddd@step_00000002"]
    assert [(type(e).__name__, e.asset_key.to_user_string(), e.partition) for e in result.asset_events] == [
        ("AssetObservation", "checkpoint", "tiny-dddddddddd@step_00000002"),
        ("AssetMaterialization", "checkpoint", "tiny-dddddddddd@step_00000002")]
    # The tick recorded report_manifest itself (no report yet: an empty digest), under its lock.
    assert instance.fetch_materializations(dg.AssetKey("report_manifest"), limit=1).records
    (request,) = result.run_requests
    assert request.job_name == CHECKPOINT_EVALS_JOB and request.partition_key == "tiny-dddddddddd@step_00000002"

    # Once registered, the request is repeated with the same run key (deduplicated by Dagster)
    # until a report exists; no second partition request, no second record.
    instance.add_dynamic_partitions("checkpoints", list(add.partition_keys))
    for event in result.asset_events:
        instance.report_runless_asset_event(event)
    again = sensor(dg.build_sensor_context(instance=instance))
    assert again.dynamic_partitions_requests == [] and again.asset_events == []
    assert [r.run_key for r in again.run_requests] == [request.run_key]

    # A report landed: no more evals requests for it, and the summary is requested once.
    instance.report_runless_asset_event(dg.AssetMaterialization("eval_report", partition="tiny-dddddddddd@step_00000002"))
    after = sensor(dg.build_sensor_context(instance=instance))
    assert [r.job_name for r in after.run_requests] == [EVAL_SUMMARY_JOB]


@pytest.mark.e2e
def test_the_chains_checkpoints_carry_their_own_figures_and_a_mark_leaves_them_fresh(chain_copy):
    """On the chain's real checkpoints (validation and in-loop HellaSwag at each): each partition carries the
    val loss and HellaSwag of its own step. An instability marking one (after its export and report) records
    it again with the same data version, so nothing downstream goes stale."""
    from pipelines.staleness import StaleStatus, stale_statuses

    instance, cfg = chain_copy.instance, chain_copy.cfg()
    keys = sorted(instance.get_dynamic_partitions("checkpoints"))
    for key in keys:
        metadata = checkpoint_records(instance, key)[0].asset_materialization.metadata
        step = checkpoint_state(checkpoint_path(cfg.data_dir, key))["step"]
        assert metadata["val_loss"].value == checkpoint_state(checkpoint_path(cfg.data_dir, key))["val_loss"]
        assert metadata["val_loss_at_step"].value == step and metadata["hellaswag_acc_norm_at_step"].value == step
        assert 0 <= metadata["hellaswag_acc_norm"].value <= 1
    first = checkpoint_path(cfg.data_dir, keys[0])
    assert mark_before_instability(first.parent, 3, "loss z 9.0 > train.skip_loss_z=5") == (first, True)
    register_checkpoints(instance, find_checkpoints(runs_root(cfg.data_dir)))
    assert [len(checkpoint_records(instance, k)) for k in keys] == [2, 1]
    assert checkpoint_records(instance, keys[0])[0].asset_materialization.metadata["before_instability"].value == (
        "last checkpoint before the instability at step 3 (loss z 9.0 > train.skip_loss_z=5)")
    defs = build_definitions(cfg)
    statuses = stale_statuses(defs, instance)
    assert statuses == stale_statuses(defs, instance, bulk=False)  # the bulk rules and Dagster's resolver agree
    assert set(statuses.values()) == {StaleStatus.FRESH}
