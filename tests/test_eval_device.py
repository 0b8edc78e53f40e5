"""evals.device `auto` (evals/device.py): an eval never lands on a GPU a training run on this host is using.

The policy is a function of what the machine shows (the GPU count, CUDA_VISIBLE_DEVICES, the training runs
active here, launch.nproc_per_node), so the machines it must handle are simulated by their inputs; the
real resolution path is then run on this machine, with a real trainer's lock held as the trainer holds it.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from evals.device import active_training_runs, choose_eval_device
from gpt2train.config import load_config
from gpt2train.errors import ConfigError
from gpt2train.layout import run_dir
from gpt2train.locks import lock_path_for, writer_lock
from tests.paths import REPO


def choose(gpus, runs=(), nproc=1, visible=None, requested="auto"):
    return choose_eval_device(requested, gpu_count=gpus, visible=visible, training_runs=list(runs),
                              nproc_per_node=nproc)


@pytest.mark.parametrize("gpus, runs, nproc, visible, device", [
    (0, [], 1, None, "cpu"),                        # a laptop, a CPU run pod
    (0, ["r"], 1, [], "cpu"),                       # CUDA_VISIBLE_DEVICES="" hides them all
    (1, [], 1, None, "cuda:0"),                     # one GPU, nothing training: use it
    (8, [], 8, None, "cuda:0"),                     # training over: any GPU
    (1, ["r"], 1, None, "cpu"),                     # the one GPU is rank 0's (the issue's case)
    (8, ["r"], 8, None, "cpu"),                     # every GPU trains
    (8, ["r"], 6, None, "cuda:6"),                  # 6 ranks on cuda:0-5: the first one they leave
    (4, ["r"], 8, None, "cpu"),                     # more ranks than GPUs seen here: none is free
    (4, ["a", "b"], 2, ["4", "5", "6", "7"], "cuda:2"),
])
def test_auto_never_picks_a_training_gpu(gpus, runs, nproc, visible, device):
    choice = choose(gpus, runs, nproc, visible)
    assert choice.device == device and choice.requested == "auto"
    if runs and gpus:
        index = int(device.split(":")[1]) if device.startswith("cuda") else None
        assert index is None or index >= min(nproc, gpus)  # past the ranks' cuda:0..nproc-1
        assert all(r in choice.reason for r in runs) and f"launch.nproc_per_node={nproc}" in choice.reason


def test_the_reason_names_the_physical_gpu_and_what_to_set():
    spare = choose(4, ["tiny-0123456789"], 2, ["4", "5", "6", "7"])
    assert spare.reason == ("training run tiny-0123456789 is on cuda:0-1 (CUDA_VISIBLE_DEVICES 4,5) "
                            "(launch.nproc_per_node=2): cuda:2 (CUDA_VISIBLE_DEVICES 6), which the launch does not use")
    full = choose(1, ["tiny-0123456789"], 1)
    assert full.device == "cpu" and "never a training GPU (set evals.device to override)" in full.reason
    assert "CUDA_VISIBLE_DEVICES is empty" in choose(0, [], 1, []).reason


@pytest.mark.parametrize("requested", ["cpu", "cuda", "cuda:0", "cuda:3", "mps"])
def test_a_named_device_is_used_as_given_even_beside_training(requested):
    choice = choose(1, ["r"], 1, requested=requested)
    assert (choice.device, choice.reason) == (requested, f"evals.device={requested}, as configured")


@pytest.mark.parametrize("bad", ["gpu", "cuda:x", "CUDA", "cuda:", "tpu:0", ""])
def test_an_unknown_device_is_refused_with_the_choices(bad):
    with pytest.raises(ConfigError, match=r"evals.device=.*; use auto \(never a training GPU\), cpu, cuda, cuda:N or mps"):
        load_config("tiny", [f"evals.device={bad}"])


def test_a_held_trainer_lock_on_this_host_is_an_active_run(tmp_path):
    """The real path: the run directory's writer lock as the trainer takes it (gpt2train/locks.py), this
    process's GPUs as torch and CUDA_VISIBLE_DEVICES show them."""
    cfg = load_config("tiny", [f"data_dir={tmp_path / 'data'}"])
    tag = "tiny-0123456789"
    run = run_dir(cfg.data_dir, tag)
    run.parent.mkdir(parents=True)
    assert active_training_runs(cfg) == []
    with writer_lock(run, "training run"):
        assert active_training_runs(cfg) == [tag]
    # Released: the file stays with this (live) process's pid in it, and the run is over.
    assert lock_path_for(run).is_file() and json.loads(lock_path_for(run).read_text())["pid"] == os.getpid()
    assert active_training_runs(cfg) == []


@pytest.mark.e2e
def test_eval_device_in_a_process_that_sees_no_gpu_beside_a_training_run(tmp_path):
    """eval_device itself, in a fresh process (torch reads CUDA_VISIBLE_DEVICES when it first counts the
    GPUs) with CUDA_VISIBLE_DEVICES empty, beside a trainer's held lock."""
    cfg = load_config("tiny", [f"data_dir={tmp_path / 'data'}"])
    tag = "tiny-0123456789"
    run = run_dir(cfg.data_dir, tag)
    run.parent.mkdir(parents=True)
    # A fresh process (torch reads CUDA_VISIBLE_DEVICES when it first counts the GPUs) beside the held lock.
    probe = ("import json, sys; from evals.device import active_training_runs, eval_device; "
             "from gpt2train.config import load_config; cfg = load_config('tiny', [sys.argv[1]]); "
             "print(json.dumps([active_training_runs(cfg), eval_device(cfg).to_dict()]))")
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(REPO)}
    with writer_lock(run, "training run"):
        out = subprocess.run([sys.executable, "-c", probe, f"data_dir={cfg.data_dir}"], env=env, capture_output=True,
                             text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    runs, choice = json.loads(out.stdout)
    assert runs == [tag]
    assert choice == {"device": "cpu", "requested": "auto", "reason": "CUDA_VISIBLE_DEVICES is empty: the CPU"}


def test_a_lock_held_for_another_host_is_not_this_hosts_gpus(tmp_path):
    """A Slurm job's rank 0 on another node holds the lock over the shared data dir: its GPUs are not here."""
    import fcntl

    cfg = load_config("tiny", [f"data_dir={tmp_path / 'data'}"])
    lock = lock_path_for(run_dir(cfg.data_dir, "tiny-0123456789"))
    lock.parent.mkdir(parents=True)
    lock.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname() + "-node7", "started": "",
                                "command": "train"}))
    with open(lock) as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        assert active_training_runs(cfg) == []


@pytest.mark.e2e
def test_the_eval_runs_tag_and_metadata_name_the_device_the_report_used(materialized_chain, chain_instance):
    """The session chain's eval_report runs (`gpt2train pipeline`): each run's tag, each materialization's
    metadata and the report's lineage.json say the same device and why."""
    import dagster as dg

    from assets.evals import EVAL_DEVICE_TAG
    from gpt2train.layout import report_dir

    records = chain_instance.fetch_materializations(dg.AssetKey("eval_report"), limit=100).records
    assert records
    for record in records:
        mat = record.asset_materialization
        lineage = json.loads((report_dir(materialized_chain.data, mat.partition) / "lineage.json").read_text())
        choice = lineage["device_choice"]
        assert mat.metadata["device"].value == choice["device"] == lineage["sample"]["device"]
        assert mat.metadata["device_reason"].value == choice["reason"]
        assert chain_instance.get_run_by_id(record.run_id).tags[EVAL_DEVICE_TAG] == choice["device"]
