"""Two torchrun agents as two nodes (one process each, c10d rendezvous on 127.0.0.1), as llm.c's
multi-node runs and `launch.torchrun_args` launch them, against one agent with two processes.

- Bitwise the same training (CPU, gloo): final weights and the loss log of 2 agents x 1 process
  equal 1 agent x 2 processes at the same world size.
- The agent of the asset's node holds global rank 0, the rank that opens Dagster Pipes and writes
  the run's log: c10d orders agents by their address (`--local-addr`), lowest first
  (torch/distributed/elastic/rendezvous/dynamic_rendezvous.py), so that node is given the lowest.
- A SIGKILLed agent stops the whole job within a bounded time: its rank dies with it
  (gpt2train/training/distributed.py: die_with_launcher; torchrun starts ranks in sessions of
  their own, so without it the rank trained on unsupervised), the other rank's collective fails,
  and the other agent exits non-zero.
- With `--max-restarts=1` on both agents, a killed rank restarts the job on both nodes, which
  resumes from the newest complete checkpoint and ends bitwise equal to the uninterrupted run.

    pytest tests/test_multinode.py -m e2e
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.faults import RESTARTABLE, STOP_BOUND_S, TWO_RANK_SETS, gone_within, held, loss_log, train_env, weights
from tests.fixtures.training import REFERENCE_STEPS
from tests.paths import REPO
from tests.webserver import free_port

pytestmark = pytest.mark.e2e

SETS, STEPS = TWO_RANK_SETS, REFERENCE_STEPS  # the session's 2-rank reference run (tests/fixtures/training.py)
HEAD, WORKER = "127.0.0.1", "127.0.0.2"  # the asset's node sorts first: it gets rank 0


class Agent:
    """One node's `torchrun --nnodes=2 --nproc_per_node=1 --rdzv-backend=c10d` of the trainer."""

    def __init__(self, addr: str, port: int, data: Path, out: Path, log: Path, sets: tuple[str, ...],
                 *torchrun_args: str, env: dict[str, str] | None = None):
        self.log = log
        env = {**train_env(), "OMP_NUM_THREADS": "1", **(env or {})}  # as TorchrunJob: one thread a rank
        args = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=1",
                "--rdzv-backend=c10d", f"--rdzv-endpoint={HEAD}:{port}", "--rdzv-id=multinode-test",
                f"--local-addr={addr}", f"--rdzv-conf=is_host={'true' if addr == HEAD else 'false'}",
                *torchrun_args, "-m", "gpt2train.train", "--config", "tiny", f"--set=data_dir={data}",
                f"--set=train.out_dir={out}", *(f"--set={s}" for s in sets)]
        with open(log, "w") as f:
            self.proc = subprocess.Popen(args, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=REPO,
                                         start_new_session=True)
        self.seen: dict[int, psutil.Process] = {}

    def workers(self) -> list[psutil.Process]:
        with contextlib.suppress(psutil.NoSuchProcess):
            for child in psutil.Process(self.proc.pid).children(recursive=True):
                self.seen[child.pid] = child
        return [p for p in self.seen.values() if _running(p)]

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def cleanup(self) -> None:
        self.workers()
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        self.proc.wait(timeout=30)
        for p in self.seen.values():
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()


def _running(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@contextlib.contextmanager
def two_nodes(data: Path, out: Path, tmp: Path, sets: tuple[str, ...], *torchrun_args: str,
              env: dict[str, str] | None = None):
    port = free_port()
    head = Agent(HEAD, port, data, out, tmp / "head.log", sets, *torchrun_args, env=env)
    worker = Agent(WORKER, port, data, out, tmp / "worker.log", sets, *torchrun_args, env=env)
    try:
        yield head, worker
    finally:
        head.cleanup()
        worker.cleanup()


def wait_for_step(out: Path, step: int, agents: tuple[Agent, ...], timeout: float = 180) -> None:
    from gpt2train.training.runs import read_metrics_file

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for a in agents:
            a.workers()
            assert a.proc.poll() is None, f"an agent exited ({a.proc.returncode}):\n{a.output()[-3000:]}"
        if any("loss" in r and r["step"] >= step for r in read_metrics_file(out / "metrics.jsonl")):
            return
        time.sleep(0.05)
    raise TimeoutError(f"step {step} not logged within {timeout} s")


def test_two_nodes_train_bitwise_as_one_node_and_the_head_holds_rank_0(tiny_shards, tmp_path, two_rank_reference):
    reference = two_rank_reference  # one agent, two processes: the run the two nodes must reproduce
    out = tmp_path / "run"
    started = time.monotonic()
    with two_nodes(tiny_shards, out, tmp_path, (*SETS, f"train.max_steps={STEPS}")) as (head, worker):
        assert head.proc.wait(timeout=300) == 0, head.output()[-3000:]
        assert worker.proc.wait(timeout=60) == 0, worker.output()[-3000:]
    two_nodes_s = time.monotonic() - started
    # Rank 0 logs the run (and under Dagster opens Pipes): only the head's output has its lines.
    assert " model tiny: " in head.output() and " model tiny: " not in worker.output(), worker.output()[-2000:]
    assert "world=2" in head.output()
    assert loss_log(out) == loss_log(reference)
    mine, theirs = weights(out, STEPS), weights(reference, STEPS)
    assert mine.keys() == theirs.keys() and all(mine[k].equal(theirs[k]) for k in mine)
    print(f"\n2 agents x 1 process: {STEPS} steps in {two_nodes_s:.1f} s, bitwise equal to 1 agent x 2 processes")


def test_a_killed_agent_stops_the_whole_job(tiny_shards, tmp_path):
    out = tmp_path / "run"
    with two_nodes(tiny_shards, out, tmp_path, (*SETS, "train.max_steps=400")) as (head, worker):
        wait_for_step(out, 3, (head, worker))
        ranks = head.workers() + worker.workers()
        assert len(ranks) == 2, (head.output()[-2000:], worker.output()[-2000:])
        killed_at = time.monotonic()
        worker.proc.send_signal(signal.SIGKILL)  # the worker node's agent: its rank is left behind
        rc = head.proc.wait(timeout=STOP_BOUND_S)
        stop_s = time.monotonic() - killed_at
        assert rc != 0, head.output()[-3000:]
        # No rank trains on unsupervised: the orphan died with its agent, the head's was stopped.
        assert gone_within(ranks, 10), [p.pid for p in ranks if _running(p)]
    text = head.output()
    assert "gpt2train.train FAILED" in text, text[-3000:]
    print(f"\nSIGKILL of the worker node's agent -> head agent exit {rc} after {stop_s:.2f} s (bound {STOP_BOUND_S} s)")


def test_max_restarts_on_two_nodes_resumes_bitwise(tiny_shards, tmp_path, two_rank_reference):
    reference = two_rank_reference
    out = tmp_path / "run"
    sets = (*SETS, f"train.max_steps={STEPS}")
    # Both ranks hold after step 5 (the step-4 checkpoint written) until the kill, whatever this machine's
    # speed; the restarted job, resumed from step 4, never reaches a fifth step.
    env = {**RESTARTABLE, **held("train.step_done@5", tmp_path / "release")}
    with two_nodes(tiny_shards, out, tmp_path, sets, "--max-restarts=1", env=env) as (head, worker):
        wait_for_step(out, 5, (head, worker))
        (victim,) = worker.workers()
        victim.send_signal(signal.SIGKILL)
        assert head.proc.wait(timeout=300) == 0, head.output()[-3000:]
        assert worker.proc.wait(timeout=60) == 0, worker.output()[-3000:]
    # Both nodes started again: the worker's agent restarted its failed rank (its restart 1), the
    # head's re-joined the rendezvous the worker's opened (not a restart of its own: its count stays 0).
    starts = [line for line in (out / "main.log").read_text().splitlines() if " model tiny: " in line]
    assert len(starts) == 2 and "(resumed from " in starts[1], starts
    assert loss_log(out) == loss_log(reference)
    mine, theirs = weights(out, STEPS), weights(reference, STEPS)
    assert all(mine[k].equal(theirs[k]) for k in mine)
