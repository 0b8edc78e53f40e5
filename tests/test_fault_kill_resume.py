"""SIGKILL during training, then resume: the result is bitwise the uninterrupted run's.

Two kinds of kill, each trial a fresh `python -m gpt2train.train` process killed with SIGKILL
(no cleanup, as a power cut or the OOM killer) and started again until the run completes:

- at named places (gpt2train/failpoints.py): between checkpoints, and at every stage of a
  checkpoint write and of the pruning of an old checkpoint;
- at random times (seeded; GPT2TRAIN_FAULT_SEED picks another seed) while it trains, with a
  checkpoint every step so that many land inside a write: each kill comes within the time the
  launch's remaining steps take on this machine (measured on the uninterrupted run), so kills land
  while it trains on a fast machine as on a slow one; a launch that finishes anyway is checked
  against the uninterrupted run and the next kills go to a fresh run.

After every kill: each `step_*` directory is a complete checkpoint whose weights hash to what it
records, the Dagster `checkpoints` partitions registered from the run (the sensor's code path) are
exactly those, and the next launch resumes from the newest of them. At the end, the final
weights, optimizer state and loss log equal an uninterrupted run's, bit for bit (CPU).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time

import dagster as dg
import pytest
import torch

from assets.checkpoints import register_checkpoints
from gpt2train.layout import checkpoint_key
from gpt2train.fileio import sha256_file
from gpt2train.training.runs import find_checkpoints
from tests.faults import assert_visible_checkpoints_complete, leftovers, loss_log, start_training, wait_for_text

pytestmark = pytest.mark.e2e

STEPS = 10
SETS = (f"train.max_steps={STEPS}", "train.total_batch_tokens=256", "train.checkpoint_every=1", "train.keep_last=2",
        "train.val_every=5",
        "train.val_batches=2", "train.warmup_steps=2", "train.hellaswag_every=0", "train.sample_tokens=4")
# (failpoint, what the kill leaves in checkpoints/): every stage of a save, a prune, and a plain step.
NAMED_KILLS = [
    ("train.step_done@3=kill", None),  # after step 3's update, before its checkpoint
    ("checkpoint.tmp_created@2=kill", "tmp"),  # the temp folder made, nothing in it
    ("checkpoint.rank_files_written@1=kill", "tmp"),  # optimizer, RNG and loader state written
    ("checkpoint.model_written@2=kill", "tmp"),  # + model.safetensors
    ("checkpoint.state_written@1=kill", "tmp"),  # + state.json
    ("checkpoint.done_written@2=kill", "tmp"),  # + DONE, not yet renamed into place
    ("checkpoint.prune_renamed@1=kill", "deleting"),  # an old checkpoint renamed aside, not yet deleted
]
FINAL = f"step_{STEPS:08d}"


@pytest.fixture(scope="module")
def uninterrupted(tiny_shards, tmp_path_factory):
    """(the uninterrupted run's directory, the seconds one of its steps took: from its first log line to
    its end, over STEPS)."""
    out = tmp_path_factory.mktemp("uninterrupted") / "run"
    log = out.parent / "launch.log"
    proc = start_training(tiny_shards, out, SETS, log)
    assert wait_for_text(log, "model tiny:", proc), log.read_text()[-3000:]
    started = time.monotonic()
    assert proc.wait(timeout=300) == 0, log.read_text()[-3000:]
    return out, (time.monotonic() - started) / STEPS


class KilledRun:
    """One run directory, launched again and again; checks the invariants after every kill."""

    def __init__(self, data, runs_root, instance):
        self.data, self.runs_root, self.instance = data, runs_root, instance
        self.out = runs_root / "run"
        self.launches, self.kills, self.where = 0, 0, {}
        self.resumed_from: list[str] = []

    def launch(self, failpoints=""):
        self.launches += 1
        self.log = self.runs_root.parent / f"{self.runs_root.name}-launch-{self.launches}.log"
        done = self.complete()
        latest = done[-1] if done else None
        self.proc = start_training(self.data, self.out, SETS, self.log, failpoints)
        # The run names the checkpoint it resumed from in its first log line: the newest complete one.
        started = wait_for_text(self.log, "model tiny:", self.proc)
        if started:
            expected = f"(resumed from {latest})" if latest else "steps 0.."
            assert expected in self.log.read_text(), self.log.read_text()[-2000:]
            if latest:
                self.resumed_from.append(latest.name)
        return self.proc

    def complete(self):
        return assert_visible_checkpoints_complete(self.out)

    def after_kill(self):
        assert self.proc.wait(timeout=60) == -signal.SIGKILL, self.log.read_text()[-2000:]
        self.kills += 1
        left = leftovers(self.out)
        kind = "checkpoint write" if left["tmp"] else "checkpoint prune" if left["deleting"] else "between writes"
        self.where[kind] = self.where.get(kind, 0) + 1
        complete = self.complete()
        # What the sensor registers as `checkpoints` partitions: exactly the complete ones.
        registered = register_checkpoints(self.instance, find_checkpoints(self.runs_root))
        assert set(registered) <= {checkpoint_key(p) for p in complete}, (registered, complete)
        return left

    def finish(self):
        proc = self.launch()
        assert proc.wait(timeout=300) == 0, self.log.read_text()[-3000:]


def assert_same_as_uninterrupted(out, reference):
    assert loss_log(out) == loss_log(reference)  # every loss, norm, lr and val loss, as written
    a, b = out / "checkpoints" / FINAL, reference / "checkpoints" / FINAL
    assert sha256_file(a / "model.safetensors") == sha256_file(b / "model.safetensors")
    oa = torch.load(a / "optimizer_rank0.pt", weights_only=True)
    ob = torch.load(b / "optimizer_rank0.pt", weights_only=True)
    for i, state in ob["state"].items():
        assert all(torch.equal(state[k], oa["state"][i][k]) for k in state)


def test_kills_at_every_stage_of_a_checkpoint_write(tiny_shards, uninterrupted, tmp_path):
    reference, _ = uninterrupted
    with dg.DagsterInstance.ephemeral() as instance:
        run = KilledRun(tiny_shards, tmp_path / "runs", instance)
        for failpoint, leaves in NAMED_KILLS:
            run.launch(failpoint)
            left = run.after_kill()
            if leaves:
                assert left[leaves], f"{failpoint}: expected a .step_*.{leaves} folder, found {left}"
        run.finish()
        assert leftovers(run.out) == {"tmp": [], "deleting": []}  # cleared by the first save after each kill
    assert run.kills == len(NAMED_KILLS) and len(run.resumed_from) == len(NAMED_KILLS)
    assert_same_as_uninterrupted(run.out, reference)
    print(f"\nnamed kills: {run.kills}, resumed from {run.resumed_from}, where {run.where}")


def test_kills_at_random_times(tiny_shards, uninterrupted, tmp_path):
    reference, step_s = uninterrupted
    seed = int(os.environ.get("GPT2TRAIN_FAULT_SEED", "6"))
    rng = random.Random(seed)
    kills, runs = 0, 0
    with dg.DagsterInstance.ephemeral() as instance:
        run = KilledRun(tiny_shards, tmp_path / f"runs-{runs}", instance)
        while kills < 6:
            complete = run.complete()
            done = int(complete[-1].name.split("_")[1]) if complete else 0  # the step this launch resumes from
            proc = run.launch()
            # Training starts right after the log line: a kill within the time its remaining steps take.
            try:
                proc.wait(timeout=rng.uniform(0.0, 0.9) * step_s * (STEPS - done))
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
                run.after_kill()
                kills += 1
                continue
            # Finished before the kill (this machine sped up): the run is complete; check it, start another.
            assert proc.returncode == 0, run.log.read_text()[-3000:]
            assert_same_as_uninterrupted(run.out, reference)
            runs += 1
            run = KilledRun(tiny_shards, tmp_path / f"runs-{runs}", instance)
        run.finish()
    assert_same_as_uninterrupted(run.out, reference)
    print(f"\nrandom kills (seed {seed}): {kills} in {run.launches} launches of the last of {runs + 1} run(s), "
          f"where {run.where}")
