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
from tests.paths import REPO

CORPUS_KEY = "sample/10BT/000_00000.parquet"
CHECKPOINT_KEY = "tiny-0123456789@step_00000002"
# How each asset names its artifact when refused.
WHAT = {"corpus": f"corpus record of source file {CORPUS_KEY}",
        "token_shards": f"token shards of source file {CORPUS_KEY}",
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


@pytest.mark.e2e
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


def _inputs_of(cfg, asset: str, export: Path) -> None:
    """hf_export needs a complete checkpoint, eval_report an export (a copy of `export`): the library
    checks them before it takes the lock (a bad input is reported as such, not as a busy artifact)."""
    import shutil

    from gpt2train.config import config_to_dict
    from gpt2train.layout import export_dir, runs_root
    from tests.fixtures.evals import save_tiny_checkpoint

    if asset not in ("hf_export", "eval_report"):
        return
    run, step = CHECKPOINT_KEY.split("@")
    save_tiny_checkpoint(runs_root(cfg.data_dir) / run / "checkpoints", int(step.split("_")[1]),
                         {"config": config_to_dict(cfg), "lineage": {}})
    if asset == "eval_report":
        shutil.copytree(export, export_dir(cfg.data_dir, CHECKPOINT_KEY))


@pytest.mark.e2e
@pytest.mark.parametrize("asset, job, partition", [
    ("corpus", "data", CORPUS_KEY),
    ("token_shards", "data", CORPUS_KEY),
    ("hf_export", "checkpoint_evals", CHECKPOINT_KEY),
    ("eval_report", "checkpoint_evals", CHECKPOINT_KEY),
    ("eval_summary", "refresh_eval_summary", None),
])
def test_an_asset_run_is_refused_while_its_artifact_is_being_written(tiny_cfg, tiny_export, task_index, asset, job,
                                                                     partition):
    """As a second Dagster run of the same partition (the UI, the sensor) meets it: the run fails at
    once with the holder's pid, and the asset writes nothing. (The eval report checks its tasks against
    the harness's task index before it takes its lock: `task_index`.)"""
    from pipelines.definitions import build_definitions
    from pipelines.runner import failure_cause

    artifact = _artifact_of(tiny_cfg, asset)
    _inputs_of(tiny_cfg, asset, tiny_export.out_dir)  # real inputs: the input checks pass and the lock refuses
    defs = build_definitions(tiny_cfg)
    with dg.DagsterInstance.ephemeral() as instance:
        instance.add_dynamic_partitions("corpus_files", [CORPUS_KEY])
        instance.add_dynamic_partitions("checkpoints", [CHECKPOINT_KEY])
        with writer_lock(artifact, "the other run's artifact"):
            result = defs.resolve_job_def(job).execute_in_process(
                partition_key=partition, instance=instance, raise_on_error=False,
                asset_selection=[dg.AssetKey(asset)])
        assert not result.success
        cause = failure_cause(result.all_events)
        assert f"{artifact} is being written by another process (pid {os.getpid()} on" in cause, cause
        assert cause.startswith(WHAT[asset]), cause  # the refused asset names what it is
    assert not artifact.exists()


# ---------------------------------------------------------------------------------------------
# What a killed writer leaves beside its artifact is cleaned by the next writer, whatever its pid.

WRITER_WITH_TEMP = """
import sys, time
from pathlib import Path
from gpt2train.fileio import temp_path_for
from gpt2train.locks import writer_lock
artifact = Path(sys.argv[1])
with writer_lock(artifact, "eval report"):
    tmp = temp_path_for(artifact)  # as evals/runner.py and the export write: `.<name>.tmp-<pid>`
    tmp.mkdir()
    (tmp / "results.json").write_text("{}")
    print("writing", flush=True)
    time.sleep(120)
"""


def _start_writer(artifact: Path) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-c", WRITER_WITH_TEMP, str(artifact)], stdout=subprocess.PIPE, text=True,
                         cwd=REPO)
    assert p.stdout.readline().strip() == "writing"
    return p


def test_a_live_writers_temp_is_left_alone_and_a_dead_ones_is_removed(tmp_path):
    """Dead = its lock is free. While the writer lives, a second writer is refused and its temp stays;
    once it is SIGKILLed, the next holder (another pid) removes its `.<name>.tmp-<pid>` and any
    `.<name>.old-<pid>` set aside, and nothing of other artifacts."""
    report = tmp_path / "reports" / "run@step_00000002"
    p = _start_writer(report)
    left = report.with_name(f".{report.name}.tmp-{p.pid}")
    aside = report.with_name(f".{report.name}.old-{p.pid + 1}")  # a replace_dir killed between its renames
    aside.mkdir()
    other = report.with_name(f".run@step_00000004.tmp-{p.pid}")  # another artifact's: its own lock decides
    other.mkdir()
    try:
        with pytest.raises(ArtifactBusy):
            with writer_lock(report, "eval report"):
                pass
        assert (left / "results.json").exists() and aside.exists()  # a live writer's files are never touched
        p.send_signal(signal.SIGKILL)
        assert p.wait(timeout=10) == -signal.SIGKILL
        assert left.is_dir()  # SIGKILL: nothing cleaned itself up
        with writer_lock(report, "eval report"):
            assert not left.exists() and not aside.exists()
        assert other.is_dir()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_a_folder_written_file_by_file_loses_its_dead_writers_temp_files(tmp_path):
    """The eval summary and a run directory are written file by file inside the locked folder: a dead
    writer's `.trend.png.tmp-<pid>.png` there goes with the next lock, the folder's own files stay."""
    summary = tmp_path / "eval_summary"
    summary.mkdir()
    kept = [summary / "summary.md", summary / ".summary.lock-notes"]
    for f in kept:
        f.write_text("kept")
    left = [summary / ".trend.png.tmp-4242.png", summary / ".summary.md.tmp-4243"]
    for f in left:
        f.write_text("half")
    with writer_lock(summary, "eval summary"):
        assert [f for f in left if f.exists()] == [] and all(f.exists() for f in kept)


@pytest.mark.e2e
def test_a_sigkilled_gpt2train_export_leaves_a_copy_that_the_next_export_removes(tmp_path):
    """The issue's case: `gpt2train export` SIGKILLed once its temp copy holds the weights; the next
    export (another process) removes that copy and writes the export."""
    import shutil
    import time

    from gpt2train.config import config_to_dict, load_config
    from gpt2train.export.hf_export import export_checkpoint
    from tests.faults import train_env
    from tests.fixtures.evals import save_tiny_checkpoint

    cfg = load_config("tiny", [f"data_dir={tmp_path / 'data'}"])
    ckpt = save_tiny_checkpoint(tmp_path / "data" / "runs" / "r" / "checkpoints", 2,
                                {"config": config_to_dict(cfg), "world": 1})
    out = tmp_path / "data" / "exports" / "r@step_00000002"
    exe = shutil.which("gpt2train") or pytest.fail("the gpt2train console script is not installed")
    # Held once its temp copy holds the weights (gpt2train/failpoints.py), so the kill lands there.
    p = subprocess.Popen([exe, "export", str(ckpt), str(out)], env=train_env("export.model_written=hold"), cwd=REPO,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    left = out.with_name(f".{out.name}.tmp-{p.pid}")
    try:
        deadline = time.monotonic() + 120
        while not (left / "model.safetensors").exists():  # the weights are in the temp copy: kill it now
            assert p.poll() is None, "the export ended before it could be killed"
            assert time.monotonic() < deadline, "no temp copy with weights appeared"
            time.sleep(0.05)
        p.send_signal(signal.SIGKILL)
        assert p.wait(timeout=10) == -signal.SIGKILL
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert (left / "model.safetensors").exists() and not out.exists()  # what the kill left
    result = export_checkpoint(ckpt, out)  # this process: another pid
    assert result.out_dir == out and (out / "model.safetensors").exists()
    assert not left.exists()
    assert sorted(q.name for q in out.parent.iterdir()) == [f".{out.name}.lock", out.name]
