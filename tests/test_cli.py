"""The `gpt2train` console script, run as a user runs it (a subprocess of the installed entry point)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.commands import gpt2train
from tests.fixtures.chain import most_at_once, pipeline_args, ran, worker_pid
from tests.paths import REPO

pytestmark = pytest.mark.e2e


def test_prepare_then_verify(tmp_path, edu_mini):
    out = tmp_path / "shards"
    r = gpt2train("prepare", "--source", edu_mini, "--files", 1, "--documents", 60, "--shard-size", 100_001,
                  "--out", out)
    assert r.returncode == 0, r.stderr
    assert "edu_fineweb_val_000000.bin" in r.stdout and "edu_fineweb_train_000001.bin" in r.stdout
    sidecar = json.loads((out / "edu_fineweb_val_000000.bin.json").read_text())
    assert sidecar["tokens"] == 100_001 and sidecar["sources"][0]["key"] == "sample/10BT/000_00000.parquet"
    # downloads and corpus records go next to the shards, not into the repo
    assert (tmp_path / "corpus" / "records").is_dir()

    r = gpt2train("verify", out)
    assert r.returncode == 0 and "valid" in r.stdout.splitlines()[-1], r.stdout + r.stderr

    shard = out / "edu_fineweb_train_000001.bin"
    shard.write_bytes(shard.read_bytes()[:-2])  # truncate by one token
    r = gpt2train("verify", out)
    assert r.returncode == 2
    assert f"{shard}: FAILED" in r.stdout and "size_matches_header" in r.stdout
    assert "1 of" in r.stderr and "Traceback" not in r.stderr


def test_user_errors_exit_2_with_one_clear_line(tmp_path):
    r = gpt2train("prepare", "--source", tmp_path / "nope", "--out", tmp_path / "out")
    assert r.returncode == 2 and "does not exist" in r.stderr and "Traceback" not in r.stderr

    r = gpt2train("config", "--set", "shards.shard_sise=5")
    assert r.returncode == 2 and "shard_sise" in r.stderr and "shard_size" in r.stderr

    r = gpt2train("config", "--config", "no_such_preset")
    assert r.returncode == 2 and "gpt2_124m" in r.stderr  # lists the presets there are


def test_config_prints_resolved_values():
    r = gpt2train("config", "--config", "gpt2_124m", "--set", "shards.shard_size=5000")
    assert r.returncode == 0, r.stderr
    cfg = json.loads(r.stdout)
    assert cfg["shards"]["shard_size"] == 5000 and cfg["corpus"]["name"] == "sample-10BT"


def test_pipeline_runs_the_whole_chain_in_dagster_home_then_skips_fresh(materialized_chain, chain_instance,
                                                                       chain_copy):
    """The README's main command, on a smaller corpus and run (the session's chain: tests/fixtures/chain.py):
    every stage, then nothing stale."""
    r, home = materialized_chain.output, materialized_chain.home
    done = [asset for asset, _ in ran(r.stdout)]
    assert done.count("corpus") == 2 and done.count("token_shards") == 2 and done.count("training_run") == 1
    assert done.count("hf_export") == 2 and done.count("eval_report") == 2 and done.count("eval_summary") == 1
    reports = [line.split(": ", 1)[1] for line in r.stdout.splitlines() if line.startswith("eval report: ")]
    assert len(reports) == 2 and all(Path(p).is_file() for p in reports)
    assert r.stdout.splitlines()[-1].startswith("eval trend: ")  # it ends by saying where to look
    assert (home / "history" / "runs.db").exists() or any(home.rglob("*.db"))  # SQLite storage persisted
    # The instance it created says so, with telemetry off: no banner; no Dagster preview warning;
    # every trainer line once (through Pipes), not also forwarded from the trainer's stderr.
    assert "telemetry:\n  enabled: false" in (home / "dagster.yaml").read_text()
    assert f"wrote {home / 'dagster.yaml'}: " in r.stdout  # one line says so (pipelines/cli.py)
    output = r.stdout + r.stderr
    assert "Telemetry" not in output and "PreviewWarning" not in output, output[-3000:]
    for step in range(1, 5):
        assert len(re.findall(rf"step +{step}/4 \| loss", output)) == 1, output[-3000:]
    # Every run went through the instance's queue into a run worker of its own, none in the CLI
    # (pipelines/executors.py); the 2 corpus files, and the 2 checkpoints, were launched together.
    import dagster as dg

    from pipelines.executors import DATA_DIR_TAG

    instance = chain_instance
    runs = instance.get_runs()
    assert sorted(r.job_name for r in runs) == sorted(
        ["data", "data", "training", "checkpoint_evals", "checkpoint_evals", "refresh_eval_summary"])
    assert all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)
    assert len({worker_pid(instance, r.run_id) for r in runs} - {None}) == len(runs)
    assert all(r.tags[DATA_DIR_TAG] == str(materialized_chain.data.resolve()) for r in runs)
    for job in ("data", "checkpoint_evals"):
        assert most_at_once(instance, [r.run_id for r in runs if r.job_name == job]) == 2, job

    # Again, --stale-only, on a copy (its own data dir and DAGSTER_HOME): nothing runs, everything is skipped.
    r = gpt2train(*pipeline_args(chain_copy.root, "--stale-only"), env_extra=chain_copy.env(), timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "ran " not in r.stdout and r.stdout.count("skipped  ") == 2 * 2 + 1 + 2 * 2 + 1


def test_module_entry_points():
    r = subprocess.run([sys.executable, "-m", "gpt2train.cli", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "{prepare,verify,train,export,sample,lineage,config}" in r.stdout  # the library's own
    r = subprocess.run([sys.executable, "-m", "pipelines.cli", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "{prepare,verify,train,export,sample,lineage,config,eval,pipeline}" in r.stdout


@pytest.mark.parametrize("flags, error", [
    (["-b", "0"], "train.batch_size=0 is out of range; use a value in [1, 2^20]"),                       # an llm.c flag
    (["--kernels", "cuda"], "train.kernels='cuda'; use auto, triton or torch"),
    (["--set", "train.max_steps=-5"], "train.max_steps=-5 is out of range"),
])
def test_gpt2train_train_and_python_m_gpt2train_train_take_the_same_flags(flags, error):
    """One training CLI: `gpt2train train` hands its command line to gpt2train/train.py, llm.c's flags
    included; the kernel choice is refused by the config check, as any other bad value."""
    via_console = gpt2train("train", "--config", "tiny", *flags)
    via_module = subprocess.run([sys.executable, "-m", "gpt2train.train", "--config", "tiny", *flags],
                                capture_output=True, text=True, cwd=REPO, timeout=300)
    for r in (via_console, via_module):
        assert r.returncode == 2 and r.stderr.startswith("gpt2train train: error: "), r.stderr
        assert error in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert via_console.stderr == via_module.stderr


def test_library_never_imports_dagster():
    code = ("import sys, gpt2train.cli, gpt2train.data.stage, gpt2train.train, gpt2train.training.loop, "
            "gpt2train.training.checkpoint, gpt2train.training.runs, gpt2train.training.failure, gpt2train.layout, "
            "gpt2train.export.hf_export, gpt2train.lineage.walk, evals.runner, evals.trend; "
            "print(any(m == 'dagster' or m.startswith('dagster.') for m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert r.stdout.strip() == "False", r.stderr


def test_pipeline_ignores_the_dagster_dev_environment(tmp_path, edu_mini):
    # GPT2TRAIN_* pick the config `dagster dev` loads; the CLI's own --config/--set win.
    r = gpt2train("pipeline", "--set", f"data_dir={tmp_path / 'data'}", "--set", f"corpus.source={edu_mini}",
                  "--set", "corpus.max_documents_per_file=5", "--set", "corpus.files=1", "--through", "data",
                  env_extra={"DAGSTER_HOME": str(tmp_path / "home"), "GPT2TRAIN_CONFIG": "nope",
                             "GPT2TRAIN_SET": "shards.shard_sise=5"})
    assert r.returncode == 0, r.stderr[-2000:]
