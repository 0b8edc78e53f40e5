"""One rank of a 2-process torchrun job killed with SIGKILL (the OOM killer, `kill -9`).

- Without restarts the whole job stops within a bounded time: torchrun's agent sees the dead
  worker, stops the other (rank 0, blocked in a gloo collective), leaves no worker behind,
  exits non-zero and names the failed rank, its pid and the signal. Every visible checkpoint
  is complete, and the trainer's log names the newest one last.
- Rank 0 does not hang even where torchrun would not step in (its next check of the workers
  far away): gloo sees the dead peer's connection close and raises in the pending collective.
- With `--max-restarts=1` torchrun restarts both workers; they resume from the newest complete
  checkpoint at kill time and finish, with final weights and loss log bitwise equal to an
  uninterrupted 2-rank run (2 gloo ranks on CPU with a fixed thread count are reproducible): the
  session's reference run (tests/fixtures/training.py). Needs TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1
  with torch 2.13 (tests/faults.py: RESTARTABLE).

    pytest tests/test_fault_rank_kill.py -m e2e
"""

from __future__ import annotations

import re
import signal
import time
import warnings
from pathlib import Path

import pytest

from gpt2train.fileio import sha256_file
from gpt2train.training.checkpoint import latest_checkpoint
from tests.faults import (RESTARTABLE, STOP_BOUND_S, TWO_RANK_SETS, TorchrunJob, assert_visible_checkpoints_complete,
                          gone_within, held, is_gone, leftovers, loss_log)
from tests.fixtures.training import REFERENCE_STEPS

pytestmark = pytest.mark.e2e

SETS = TWO_RANK_SETS


def failure_summary(text: str) -> tuple[dict[int, tuple[int, int, str]], int]:
    """torchrun's ChildFailedError summary: {rank: (exit code, pid, traceback line)} and the rank it
    names as the root cause."""
    entry = re.compile(r"rank\s*: (\d+) \(local_rank: \d+\)\n\s*exitcode\s*: (-?\d+) \(pid: (\d+)\).*\n"
                       r"\s*error_file: .*\n\s*traceback : (.*)")
    failures = {int(m[1]): (int(m[2]), int(m[3]), m[4].strip()) for m in entry.finditer(text)}
    roots = entry.findall(text.split("Root Cause (first observed failure):", 1)[-1])
    assert failures and len(roots) == 1, text[-3000:]
    return failures, int(roots[0][0])


def main_log_starts(out: Path) -> list[str]:
    """The "model tiny: ..." line each launch of the trainer's rank 0 wrote into main.log, in order."""
    return [line for line in (out / "main.log").read_text().splitlines() if " model tiny: " in line]


def test_killed_rank_stops_the_whole_job(tiny_shards, tmp_path):
    out = tmp_path / "run"
    started = time.monotonic()
    job = TorchrunJob(tiny_shards, out, tmp_path / "torchrun.log", (*SETS, "train.max_steps=400"))
    try:
        workers = job.wait_for_workers(restart=0)
        job.wait_for_step(3)  # training under way, the step-2 checkpoint written
        victim, survivor = workers[1], workers[0]
        killed_at = time.monotonic()
        victim.send_signal(signal.SIGKILL)
        rc = job.proc.wait(timeout=STOP_BOUND_S)  # TimeoutExpired here: the job hangs
        stop_s = time.monotonic() - killed_at
        assert rc != 0, job.output()[-3000:]
        # No worker outlives torchrun: rank 0 was stopped, not left blocked in a collective.
        assert gone_within(list(job.seen.values()), 5), [p.pid for p in job.alive()]
        assert is_gone(survivor)
    finally:
        job.cleanup()

    # torchrun's ChildFailedError summary names rank 1, its pid and SIGKILL; rank 0 is listed as
    # stopped by torchrun (SIGTERM) or, had it noticed the closed gloo connection first, exit code 1.
    text = job.output()
    assert "gpt2train.train FAILED" in text, text[-3000:]
    failures, root = failure_summary(text)
    assert failures[1] == (-9, victim.pid, f"Signal 9 (SIGKILL) received by PID {victim.pid}"), failures
    assert failures[0][:2] in ((-15, survivor.pid), (1, survivor.pid)), failures
    # torchrun's log line when it sees the failure, printed before the summary.
    assert f"failed (exitcode: -9) local_rank: 1 (pid: {victim.pid})" in text, text[-3000:]
    if root != 1:  # torchrun orders failures seen in one poll by whole seconds: a tie can name rank 0
        warnings.warn(f"torchrun named rank {root} as the root cause, not the killed rank 1: {failures}")

    # Every visible checkpoint is complete; a save cut short leaves at most a hidden temp folder.
    complete = assert_visible_checkpoints_complete(out)
    assert complete and complete[-1] == latest_checkpoint(out / "checkpoints"), complete
    left = leftovers(out)
    # The trainer's log names the newest complete checkpoint last: where a rerun resumes.
    logged = re.findall(r" checkpoint (\S+)$", (out / "main.log").read_text(), re.M)
    assert logged and Path(logged[-1]) == complete[-1], (logged[-3:], complete)
    print(f"\nSIGKILL of rank 1 -> torchrun exit {rc} after {stop_s:.2f} s (bound {STOP_BOUND_S} s); "
          f"checkpoints {[p.name for p in complete]}, leftovers {left}; test {time.monotonic() - started:.1f} s")


def test_surviving_rank_does_not_hang_in_a_collective(tiny_shards, tmp_path):
    """Without torchrun's help (its next check of the workers 10 minutes away), rank 0 itself
    stops: gloo sees the killed peer's connection close and raises in the pending collective."""
    out = tmp_path / "run"
    job = TorchrunJob(tiny_shards, out, tmp_path / "torchrun.log", (*SETS, "train.max_steps=400"),
                      "--monitor-interval=600")
    try:
        workers = job.wait_for_workers(restart=0)
        job.wait_for_step(3)
        killed_at = time.monotonic()
        workers[1].send_signal(signal.SIGKILL)
        assert gone_within([workers[0]], STOP_BOUND_S), f"rank 0 still runs {STOP_BOUND_S} s after rank 1 died"
        rank0_s = time.monotonic() - killed_at
        text = job.output()
        assert "Sending process" not in text, text[-3000:]  # torchrun did not stop it
        # gloo names the dead peer's connection "closed" (FIN) or "reset" (RST, when the killed rank's
        # socket still held unread bytes): which one depends on where in the step rank 1 was killed.
        assert re.search(r"\[rank0\]: RuntimeError: .*Connection (closed|reset) by peer", text), text[-3000:]
        job.proc.send_signal(signal.SIGTERM)  # torchrun would only notice at its next check
        job.proc.wait(timeout=STOP_BOUND_S)
        assert gone_within(list(job.seen.values()), 5), [p.pid for p in job.alive()]
    finally:
        job.cleanup()
    assert assert_visible_checkpoints_complete(out)
    print(f"\nrank 0 stopped by itself {rank0_s:.2f} s after rank 1's SIGKILL")


def test_max_restarts_resumes_from_the_last_complete_checkpoint(tiny_shards, two_rank_reference, tmp_path):
    started = time.monotonic()
    sets = (*SETS, f"train.max_steps={REFERENCE_STEPS}")
    out = tmp_path / "run"
    # Both ranks hold after step 5 (the step-4 checkpoint written) until the kill, whatever this machine's
    # speed; the restarted attempt, resumed from step 4, never reaches a fifth step.
    job = TorchrunJob(tiny_shards, out, tmp_path / "torchrun.log", sets, "--max-restarts=1",
                      env={**RESTARTABLE, **held("train.step_done@5", tmp_path / "release")})
    try:
        first = job.wait_for_workers(restart=0)
        job.wait_for_step(5)
        killed_at = time.monotonic()
        first[1].send_signal(signal.SIGKILL)
        # Once torchrun has stopped attempt 0's rank 0 nothing writes checkpoints until attempt 1
        # has started (seconds later): what is complete now is what attempt 1 must resume from.
        assert gone_within(list(first.values()), STOP_BOUND_S), job.output()[-3000:]
        at_kill = assert_visible_checkpoints_complete(out)
        assert at_kill and at_kill[-1].name == "step_00000004", (at_kill, job.output()[-3000:])
        second = job.wait_for_workers(restart=1)  # torchrun restarted both ranks
        assert set(second) == {0, 1} and not {p.pid for p in second.values()} & {p.pid for p in first.values()}
        rc = job.proc.wait(timeout=300)
        resumed_s = time.monotonic() - killed_at
        assert rc == 0, job.output()[-3000:]
    finally:
        job.cleanup()
    assert not job.alive()

    # What torchrun says: one line naming the dead worker (no summary: the job went on).
    text = job.output()
    assert f"failed (exitcode: -9) local_rank: 1 (pid: {first[1].pid})" in text, text[-3000:]
    assert "FAILED" not in text, text[-3000:]
    starts = main_log_starts(out)
    assert len(starts) == 2, starts
    assert f"(resumed from {at_kill[-1]})" in starts[1], (starts, at_kill)
    final = f"step_{REFERENCE_STEPS:08d}"
    assert assert_visible_checkpoints_complete(out)[-1].name == final
    assert leftovers(out) == {"tmp": [], "deleting": []}
    # Bit for bit the uninterrupted run: every loss, norm, lr and val loss, and the final weights.
    assert loss_log(out) == loss_log(two_rank_reference)
    assert (sha256_file(out / "checkpoints" / final / "model.safetensors")
            == sha256_file(two_rank_reference / "checkpoints" / final / "model.safetensors"))
    print(f"\nrank 1 killed at step 5 ({at_kill[-1].name} complete); torchrun restarted both ranks, resumed "
          f"and finished {resumed_s:.1f} s after the kill; test {time.monotonic() - started:.1f} s")
