"""Writer locks (gpt2train/locks.py): one writer per artifact, a clear refusal for the second.

The holder is a real second process where it matters (a flock held by another pid, released
by the kernel when that process is SIGKILLed). The asset tests hold an artifact's lock in this
process and run the asset in-process: flock locks on two separate opens conflict within one
process too, so this is what a second Dagster run (e.g. from the UI) meets. Seconds in all;
the two real concurrent `gpt2train pipeline` processes are in tests/test_pipeline_faults.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from gpt2train.locks import ArtifactBusy, lock_path_for, writer_lock
from tests.conftest import REPO

CORPUS_KEY = "sample/10BT/000_00000.parquet"
CHECKPOINT_KEY = "tiny-0123456789@step_00000002"
# How each asset names its artifact when refused.
WHAT = {"corpus": f"corpus partition {CORPUS_KEY}: record",
        "token_shards": f"token_shards partition {CORPUS_KEY}: manifest",
        "hf_export": "Hugging Face export", "eval_report": "eval report", "eval_summary": "eval summary"}

HOLDER = """
import sys, time
from gpt2train.locks import writer_lock
with writer_lock(sys.argv[1], "test artifact", lock=sys.argv[2] if len(sys.argv) > 2 else None):
    print("held", flush=True)
    time.sleep(120)
"""


@pytest.fixture
def holder():
    """Starts a process that holds the writer lock of an artifact (lock file: `lock` or beside it)
    until killed; returns its Popen."""
    procs = []

    def start(artifact: Path, lock: Path | None = None) -> subprocess.Popen:
        p = subprocess.Popen([sys.executable, "-c", HOLDER, str(artifact), *([str(lock)] if lock else [])],
                             stdout=subprocess.PIPE, text=True, cwd=REPO)
        procs.append(p)
        assert p.stdout.readline().strip() == "held"  # the lock is taken before this line is printed
        return p

    yield start
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait()


def test_a_second_writer_is_refused_naming_the_holder(tmp_path, holder):
    artifact = tmp_path / "exports" / "run@step_00000002"
    p = holder(artifact)
    with pytest.raises(ArtifactBusy) as err:
        with writer_lock(artifact, "Hugging Face export"):
            pytest.fail("the second writer got the lock")
    message = str(err.value)
    assert f"pid {p.pid}" in message and str(artifact) in message and "Hugging Face export" in message
    assert "wait for it to finish or stop it" in message  # says what to do
    assert lock_path_for(artifact) == artifact.parent / ".run@step_00000002.lock"
    assert not artifact.exists()  # the lock lives beside the artifact, which it never creates


def test_a_sigkilled_holder_leaves_no_stale_lock(tmp_path, holder):
    artifact = tmp_path / "shards"
    p = holder(artifact)
    with pytest.raises(ArtifactBusy):
        with writer_lock(artifact, "token shards"):
            pass
    p.send_signal(signal.SIGKILL)
    assert p.wait(timeout=10) == -signal.SIGKILL
    assert f'"pid": {p.pid}' in lock_path_for(artifact).read_text()  # no cleanup ran
    # The kernel dropped the flock with the process; the leftover lock file is only information.
    with writer_lock(artifact, "token shards") as lock:
        assert f'"pid": {os.getpid()}' in lock.read_text()  # rewritten by the new holder


def test_the_lock_is_released_when_the_block_ends_or_raises(tmp_path):
    artifact = tmp_path / "report"
    with pytest.raises(RuntimeError):
        with writer_lock(artifact, "eval report"):
            raise RuntimeError("writer failed")
    with writer_lock(artifact, "eval report"):
        pass
    with writer_lock(artifact, "eval report"):  # sequential holders in one process: fine
        pass


def test_the_same_process_cannot_take_one_lock_twice(tmp_path):
    # Why the runner's lock and the assets' locks must be different files: nesting one deadlocks
    # no one, but refuses the inner writer.
    with writer_lock(tmp_path / "data", "pipeline data dir"):
        with pytest.raises(ArtifactBusy, match=f"pid {os.getpid()}"):
            with writer_lock(tmp_path / "data", "pipeline data dir"):
                pass


# ---------------------------------------------------------------------------------------------
# The pipeline and its assets take the locks.


def test_run_pipeline_is_refused_while_another_holds_the_data_dir(tiny_cfg, holder):
    from gpt2train.layout import pipeline_lock_path
    from pipelines.runner import run_pipeline

    data = Path(tiny_cfg.data_dir)
    assert pipeline_lock_path(tiny_cfg.data_dir) == data / ".pipeline.lock"  # inside the data dir: git-ignored, writable
    other = holder(data, pipeline_lock_path(tiny_cfg.data_dir))
    with dg.DagsterInstance.ephemeral() as instance:
        with pytest.raises(ArtifactBusy, match=rf"pipeline data dir {data} is being written .*pid {other.pid}"):
            run_pipeline(tiny_cfg, instance)
        assert instance.get_runs() == []  # refused before any Dagster run started
    assert [p.name for p in data.iterdir()] == [".pipeline.lock"]  # and before writing anything


def _artifact_of(cfg, asset: str) -> Path:
    from gpt2train import layout

    data = cfg.data_dir
    return {"corpus": layout.corpus_record_path(data, CORPUS_KEY),
            "token_shards": layout.shard_partition_manifest(layout.shards_dir(data), CORPUS_KEY),
            "hf_export": layout.export_dir(data, CHECKPOINT_KEY),
            "eval_report": layout.report_dir(data, CHECKPOINT_KEY),
            "eval_summary": layout.summary_dir(data)}[asset]


def _inputs_of(cfg, asset: str) -> None:
    """hf_export needs a complete checkpoint, eval_report an export: the library checks them before
    it takes the lock (a bad input is reported as such, not as a busy artifact)."""
    from gpt2train.layout import export_dir, runs_root
    from gpt2train.training.checkpoint import save_checkpoint
    from gpt2train.config import config_to_dict
    from gpt2train.model import GPT, GPTConfig
    from tests.test_evals import build_export

    if asset not in ("hf_export", "eval_report"):
        return
    run, step = CHECKPOINT_KEY.split("@")
    model = GPT(GPTConfig.from_descriptor("tiny", 64)).init_weights(0)
    save_checkpoint(runs_root(cfg.data_dir) / run / "checkpoints", int(step.split("_")[1]), model_state=model.state_dict(),
                    optimizer_state={}, loader_state={}, state={"config": config_to_dict(cfg), "lineage": {}})
    if asset == "eval_report":
        export = export_dir(cfg.data_dir, CHECKPOINT_KEY)
        export.mkdir(parents=True)
        build_export(export, runs_root(cfg.data_dir) / run)


@pytest.mark.parametrize("asset, job, partition", [
    ("corpus", "data", CORPUS_KEY),
    ("token_shards", "data", CORPUS_KEY),
    ("hf_export", "checkpoint_evals", CHECKPOINT_KEY),
    ("eval_report", "checkpoint_evals", CHECKPOINT_KEY),
    ("eval_summary", "refresh_eval_summary", None),
])
def test_an_asset_run_is_refused_while_its_artifact_is_being_written(tiny_cfg, asset, job, partition):
    """As a second Dagster run of the same partition (the UI, the sensor) meets it: the run fails at
    once with the holder's pid, and the asset writes nothing."""
    from pipelines.definitions import build_definitions
    from pipelines.runner import failure_cause

    artifact = _artifact_of(tiny_cfg, asset)
    _inputs_of(tiny_cfg, asset)  # real inputs: the input checks pass and the lock is what refuses
    defs = build_definitions(tiny_cfg)
    with dg.DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions("corpus_files", [CORPUS_KEY])
        instance.add_dynamic_partitions("checkpoints", [CHECKPOINT_KEY])
        with writer_lock(artifact, "the other run's artifact"):
            result = defs.resolve_job_def(job).execute_in_process(
                partition_key=partition, instance=instance, raise_on_error=False,
                asset_selection=[dg.AssetKey(asset)])
        assert not result.success
        cause = failure_cause(result)
        assert f"{artifact} is being written by another process (pid {os.getpid()} on" in cause, cause
        assert cause.startswith(WHAT[asset]), cause  # the refused asset names what it is
    assert not artifact.exists()
