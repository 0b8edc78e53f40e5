"""train.loggers (gpt2train/training/trackers.py): TensorBoard and Weights & Biases, offline.

A tiny run with `train.loggers=[tensorboard,wandb]` under WANDB_MODE=offline; its event files (read back
with TensorBoard's EventAccumulator) and its offline W&B run (the .wandb file, read with W&B's own
protobuf schema) hold exactly metrics.jsonl's numbers at its steps; an eval report of its checkpoint
adds its scores at the checkpoint's step; under torchrun only rank 0 logs; the run tag does not move.

    pytest tests/test_trackers.py -q
"""

from __future__ import annotations

import json
import shutil
import struct
import sys
from pathlib import Path

import pytest

from gpt2train.config import load_config
from gpt2train.errors import ConfigError
from gpt2train.training.trackers import scalars
from tests.commands import metrics, torchrun, train_command
from tests.paths import HELLASWAG

LOGGERS = "train.loggers=[tensorboard,wandb]"
RUN_SETS = ["train.max_steps=4", "train.checkpoint_every=2", "train.val_every=2", "train.val_batches=1",
            "train.warmup_steps=2", "train.hellaswag_items=8", "train.sample_every=0"]


@pytest.fixture(scope="module")
def wandb_offline(tmp_path_factory):
    """W&B offline, with every folder it writes outside the run (settings, cache, logs) in a temp dir."""
    root = tmp_path_factory.mktemp("wandb-home")
    mp = pytest.MonkeyPatch()
    mp.setenv("WANDB_MODE", "offline")
    for name in ("WANDB_DIR", "WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        mp.setenv(name, str(root / name.lower()))
    mp.delenv("WANDB_API_KEY", raising=False)
    yield root
    mp.undo()


@pytest.fixture(scope="module")
def tracked_run(tiny_shards, wandb_offline, tmp_path_factory) -> tuple[Path, list[dict]]:
    """4 steps of the tiny preset (val loss and in-loop HellaSwag at 0, 2, 4; checkpoints at 2 and 4),
    logged to both trackers; then, as if killed after the step-2 checkpoint, resumed: steps 3 and 4 are
    logged again. Returns the run and the metrics the first attempt wrote."""
    out = tmp_path_factory.mktemp("tracked") / "run"
    r = train_command(tiny_shards, out, *RUN_SETS, LOGGERS)
    assert r.returncode == 0, r.stderr[-3000:]
    first_attempt = metrics(out)
    shutil.rmtree(out / "checkpoints" / "step_00000004")
    r = train_command(tiny_shards, out, *RUN_SETS, LOGGERS)
    assert r.returncode == 0, r.stderr[-3000:]
    return out, first_attempt


# ------------------------------------------------------------------------------- reading the files back

def tensorboard_scalars(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value), ...]} from every event file in `log_dir`, as TensorBoard shows them: in the
    order logged, less what a restarted writer's purge_step discarded."""
    from tensorboard.backend.event_processing.plugin_event_accumulator import TENSORS, EventAccumulator
    from tensorboard.util import tensor_util

    acc = EventAccumulator(str(log_dir), size_guidance={TENSORS: 0})  # 0: keep every event
    acc.Reload()
    return {tag: [(e.step, tensor_util.make_ndarray(e.tensor_proto).item()) for e in acc.Tensors(tag)]
            for tag in acc.Tags()["tensors"]}


def wandb_records(path: Path):
    """The protobuf records of a .wandb file. Its framing is LevelDB's log format (a 7-byte `:W&B`
    header, then 32 KiB blocks of chunks: crc32 u32, length u16, type u8 (1 full, 2 first, 3 middle,
    4 last)); W&B's Python package no longer ships a reader, its schema (wandb_internal_pb2) it does."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a .wandb file"
    pos, block, pending = 7, 32768, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a chunk header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        pending += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def wandb_history(run: Path) -> list[dict]:
    """Every row logged to the run's offline W&B runs, oldest run first, without W&B's own `_` keys."""
    rows = []
    for path in sorted((run / "wandb").glob("offline-run-*/run-*.wandb")):
        for record in wandb_records(path):
            if record.WhichOneof("record_type") == "history":
                row = {item.key or "/".join(item.nested_key): json.loads(item.value_json)
                       for item in record.history.item}
                rows.append({k: v for k, v in row.items() if not k.startswith("_")})
    return rows


def wandb_run_ids(run: Path) -> set[str]:
    ids = set()
    for path in (run / "wandb").glob("offline-run-*/run-*.wandb"):
        ids |= {r.run.run_id for r in wandb_records(path) if r.WhichOneof("record_type") == "run"}
    return ids


def expected_tensorboard(records: list[dict]) -> dict[str, list[tuple[int, float]]]:
    expected: dict[str, list[tuple[int, float]]] = {}
    for r in records:
        for name, value in scalars(r).items():
            expected.setdefault(name, []).append((r["step"], value))
    return expected


def without_evals(tags: dict) -> dict:
    return {k: v for k, v in tags.items() if not k.startswith("eval/")}


# ------------------------------------------------------------------------------- tests

@pytest.mark.e2e
def test_tensorboard_and_wandb_hold_exactly_the_metrics_jsonl_numbers(tracked_run):
    run, first_attempt = tracked_run
    records = metrics(run)  # the first attempt's up to step 2, the resumed one's after
    assert {"loss", "lr", "norm", "val_loss", "hellaswag_acc_norm"} <= {k for r in records for k in r}
    assert sorted({r["step"] for r in records}) == sorted({r["step"] for r in first_attempt}) == [0, 1, 2, 3, 4]
    assert records != first_attempt  # the redone steps' timings differ

    # TensorBoard: every tag, step and value (float64, as in the JSON); the resumed writer's purge_step
    # dropped the first attempt's steps 3 and 4, as metrics.jsonl did.
    tb = without_evals(tensorboard_scalars(run / "tensorboard"))
    assert tb == expected_tensorboard(records)
    # W&B keeps what it was sent: the first attempt's rows, then the resumed run's from step 3 on.
    history = [row for row in wandb_history(run) if not any(k.startswith("eval/") for k in row)]
    sent = first_attempt + [r for r in records if r["step"] > 2]
    assert history == [{**scalars(r), "step": r["step"]} for r in sent]
    tracking = json.loads((run / "tracking.json").read_text())
    assert tracking["loggers"] == ["tensorboard", "wandb"]
    assert wandb_run_ids(run) == {tracking["wandb_run_id"]}  # both attempts: one W&B run
    assert len(list((run / "wandb").glob("offline-run-*"))) >= 2


@pytest.mark.e2e
def test_an_eval_report_logs_its_scores_at_its_checkpoints_step(tracked_run, task_index, tmp_path):
    from evals.runner import evaluate_export
    from gpt2train.config import EvalsConfig
    from gpt2train.export.hf_export import export_checkpoint

    run, _ = tracked_run
    export = tmp_path / "export"
    export_checkpoint(run / "checkpoints" / "step_00000002", export)
    ecfg = EvalsConfig(tasks=["hellaswag"], limit=4, batch_size=8, device="cpu", local_data=[f"hellaswag={HELLASWAG}"])
    report = evaluate_export(export, tmp_path / "report", ecfg)
    scores = {f"eval/hellaswag/{k}": v for k, v in scalars(report.metrics["hellaswag"]).items()}
    assert "eval/hellaswag/acc_norm" in scores

    tb = tensorboard_scalars(run / "tensorboard")
    assert {k: v for k, v in tb.items() if k.startswith("eval/")} == {k: [(2, v)] for k, v in scores.items()}
    (row,) = [row for row in wandb_history(run) if "eval/hellaswag/acc" in row]
    assert row == {**scores, "step": 2}  # at the checkpoint's step, though the run went on to step 4
    tracking = json.loads((run / "tracking.json").read_text())
    assert wandb_run_ids(run) == {tracking["wandb_run_id"]}  # the training run's, resumed


@pytest.mark.e2e  # two torchrun ranks on CPU: ~1 min
def test_only_rank_0_logs_under_torchrun(tiny_shards, wandb_offline, tmp_path):
    out = tmp_path / "ddp"
    torchrun(tiny_shards, out, "train.max_steps=2", LOGGERS)
    assert len(list((out / "tensorboard").iterdir())) == 1
    assert len(list((out / "wandb").glob("offline-run-*"))) == 1
    records = metrics(out)
    assert tensorboard_scalars(out / "tensorboard") == expected_tensorboard(records)
    assert wandb_history(out) == [{**scalars(r), "step": r["step"]} for r in records]


def test_without_loggers_nothing_is_tracked_and_no_file_written(tmp_path):
    """The loop always starts its trackers through start_trackers: off by default, it writes nothing."""
    from gpt2train.training.trackers import start_trackers

    trackers = start_trackers(load_config("tiny"), tmp_path, start_step=0)
    assert trackers.trackers == [] and list(tmp_path.iterdir()) == []


def test_loggers_do_not_change_the_run_tag_or_the_training_code_version(tiny_shards):
    from gpt2train.training.run_identity import run_tag
    from tests import golden_outputs

    off = load_config("tiny", [f"data_dir={tiny_shards}"])
    on = load_config("tiny", [f"data_dir={tiny_shards}", LOGGERS])
    assert on.train.loggers == ["tensorboard", "wandb"] and off.train.loggers == []
    assert run_tag(on) == run_tag(off)  # the same run directory: toggling loggers resumes the same run
    # ...and no asset goes stale: the training_run asset's code version (and every other) is unchanged.
    assert golden_outputs.code_versions(LOGGERS) == golden_outputs.code_versions()


@pytest.mark.parametrize("value, match", [
    ("[mlflow]", r"train.loggers: 'mlflow' is not a tracker; use tensorboard and/or wandb"),
    ("[wandb, wandb]", r"train.loggers lists wandb 2 times; list it once"),
    ("wandb", r"expected a list"),
])
def test_bad_loggers_are_one_line_errors(value, match):
    with pytest.raises(ConfigError, match=match):
        load_config("tiny", [f"train.loggers={value}"])


@pytest.mark.parametrize("package", ["tensorboard", "wandb"])
def test_a_logger_whose_package_is_missing_says_what_to_install(package, monkeypatch):
    monkeypatch.setitem(sys.modules, package, None)  # Python's own "not importable" (find_spec -> None)
    with pytest.raises(ConfigError, match=rf"train.loggers: {package} is not installed; "
                                          r"pip install 'gpt2train\[tracking\]'"):
        load_config("tiny", [LOGGERS])
