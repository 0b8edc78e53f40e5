"""A full disk while writing a shard, a checkpoint, an export or a report: the error says what
filled up, and every artifact written before stays intact and valid.

The disk is real: a tmpfs of fixed size mounted for this module (root only; elsewhere the module
is skipped, and the injected-ENOSPC tests in test_shards.py, test_prepare.py and test_export.py
still run). The chain is written into it once while there is room; then each test fills the disk
with a filler file, leaving less than its artifact needs, retries the write, checks the error and
the earlier artifacts, and removes the filler.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess

import pytest

from evals.runner import evaluate_export
from gpt2train.training.checkpoint import checkpoint_state, latest_checkpoint
from gpt2train.config import EvalsConfig, load_config
from gpt2train.data.stage import prepare
from gpt2train.errors import DataError
from gpt2train.export.hf_export import export_checkpoint
from gpt2train.fileio import sha256_file
from gpt2train.lineage.records import sidecar_path
from gpt2train.data.shards import validate_shard
from gpt2train.training.loop import train
from tests.paths import HELLASWAG
from tests.faults import file_hashes

pytestmark = pytest.mark.e2e

DISK_MB = 256


def mount_tmpfs(path, size_mb):
    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(path)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a {size_mb} MiB tmpfs (needs root): {r.stderr.strip()}")


@contextlib.contextmanager
def filled(disk, leave_bytes):
    """Fill the filesystem of `disk` until about `leave_bytes` are free; free it again after."""
    filler = disk / "filler"
    free = shutil.disk_usage(disk).free
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        os.posix_fallocate(fd, 0, max(0, free - leave_bytes))
        yield shutil.disk_usage(disk).free
    finally:
        os.close(fd)
        filler.unlink()


def temp_leftovers(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob(".*") if ".tmp" in p.name)


@pytest.fixture(scope="module")
def chain(tmp_path_factory, edu_mini, task_index):
    """Shards, a checkpoint at step 2, its export and its eval report, all on a small tmpfs."""
    disk = tmp_path_factory.mktemp("small-disk")
    mount_tmpfs(disk, DISK_MB)
    try:
        data = disk / "data"
        sets = [f"data_dir={data}", f"corpus.source={edu_mini}", "corpus.max_documents_per_file=40",
                "shards.shard_size=60000", "train.max_steps=4", "train.checkpoint_every=2", "train.val_every=0",
                "train.hellaswag_every=0", "train.sample_tokens=2"]
        cfg = load_config("tiny", sets)
        prepare(cfg, data / "shards", progress=False)
        out = data / "runs" / "run"
        train(load_config("tiny", [*sets, f"train.out_dir={out}"]))
        # As if the run had stopped after its step-2 checkpoint (test_checkpoint saves step 4 again).
        shutil.rmtree(out / "checkpoints" / "step_00000004")
        ckpt = latest_checkpoint(out / "checkpoints")
        export = export_checkpoint(ckpt, data / "exports" / "run-step2").out_dir
        ecfg = EvalsConfig(tasks=["hellaswag"], limit=8, batch_size=8, device="cpu",
                           local_data=[f"hellaswag={HELLASWAG}"])
        report = data / "reports" / "run-step2"
        evaluate_export(export, report, ecfg)
        yield {"disk": disk, "data": data, "sets": sets, "out": out, "ckpt": ckpt, "export": export,
               "report": report, "ecfg": ecfg}
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def assert_disk_full_error(e, names):
    msg = str(e.value)
    assert "disk full while writing" in msg and str(names) in msg, msg
    assert "MiB free" in msg and "Free space there" in msg  # what filled up, and what to do


def test_shard(chain):
    data = chain["data"]
    before = file_hashes(data / "shards")
    # Re-tokenizing with another shard size: the first new 100 KB shard does not fit in 64 KB.
    cfg = load_config("tiny", [*chain["sets"], "shards.shard_size=50000"])
    with filled(chain["disk"], 64 << 10), pytest.raises(DataError) as e:
        prepare(cfg, data / "shards", progress=False)
    assert_disk_full_error(e, data / "shards")
    assert file_hashes(data / "shards") == before and temp_leftovers(data) == []
    shards = sorted((data / "shards").glob("*.bin"))
    assert len(shards) > 2
    for shard in shards:  # header, size, token range and sha256 against the sidecar
        assert all(c.passed for c in validate_shard(shard, json.loads(sidecar_path(shard).read_text())["sha256"]))


def test_checkpoint(chain):
    out, ckpt = chain["out"], chain["ckpt"]
    before = file_hashes(out / "checkpoints")
    cfg = load_config("tiny", [*chain["sets"], f"train.out_dir={out}"])
    # 1 MiB: room for the log and metrics lines of steps 3-4, not for the step-4 checkpoint (~80 MB).
    with filled(chain["disk"], 1 << 20), pytest.raises(DataError) as e:
        train(cfg)
    msg = str(e.value)
    assert "disk full while writing the step-4 checkpoint" in msg and f"latest complete: {ckpt}" in msg, msg
    assert "MiB free" in msg and "training resumes from the latest complete checkpoint" in msg
    assert file_hashes(out / "checkpoints") == before and temp_leftovers(out) == []
    checkpoint_state(ckpt, verify_hash=True)
    # With the space back, the same command resumes from step 2 and completes.
    assert train(cfg).steps == 4 and latest_checkpoint(out / "checkpoints").name == "step_00000004"
    assert f"(resumed from {ckpt})" in (out / "main.log").read_text()


def test_export(chain):
    export = chain["export"]
    before = file_hashes(export)
    with filled(chain["disk"], 256 << 10), pytest.raises(DataError) as e:
        export_checkpoint(chain["ckpt"], export)  # the ~26 MB weights do not fit in 256 KB
    assert_disk_full_error(e, export)
    assert file_hashes(export) == before and temp_leftovers(export.parent) == []
    recorded = json.loads((export / "lineage.json").read_text())["files"]
    assert {name: sha256_file(export / name) for name in recorded} == recorded


def test_report(chain):
    report = chain["report"]
    before = file_hashes(report)
    with filled(chain["disk"], 0), pytest.raises(DataError) as e:
        evaluate_export(chain["export"], report, chain["ecfg"])
    assert_disk_full_error(e, report)
    assert file_hashes(report) == before and temp_leftovers(report.parent) == []
