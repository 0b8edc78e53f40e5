"""torchrun that leaves a note of how its workers ended: what the `training_run` asset launches.

    python -m pipelines.torchrun_launcher --failure-note NOTE.json <torchrun arguments>

runs `python -m torch.distributed.run <torchrun arguments>` in this process (with `--log-dir` in the
note's folder unless one is given). Why the wrapper: only torchrun (the elastic agent) sees how a
trainer rank ended. A rank killed by a signal (the OOM killer, `kill -9`, a preempted node) cannot
report anything itself, and torchrun then exits 1 as for any other failure, so the Pipes client
knows only "exit code 1". On a worker failure this writes the first failed rank's pid, exit code and signal to the note as JSON (the
`training_run` asset turns it into its error message), then fails exactly as torchrun does.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

USAGE = "usage: python -m pipelines.torchrun_launcher --failure-note PATH <torchrun arguments>"


def failure_note(failures: dict) -> dict:
    """The first failed rank of a ChildFailedError's `failures` ({global rank: ProcessFailure})."""
    # The first to fail, as ChildFailedError.get_first_failure, but never a rank torchrun itself stopped
    # (SIGTERM) when another one failed: timestamps are whole seconds, so a tie could name the bystander.
    candidates = {r: f for r, f in failures.items() if f.exitcode != -15} or failures
    rank = min(candidates, key=lambda r: candidates[r].timestamp)
    first = failures[rank]
    return {"rank": rank, "pid": first.pid, "exitcode": first.exitcode,
            # torchrun reports a death by signal as a negative exit code, as subprocess does.
            "signal": first.signal_name() if first.exitcode < 0 else None}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) < 2 or argv[0] != "--failure-note":
        raise SystemExit(USAGE)
    note, torchrun_args = Path(argv[1]), argv[2:]
    if not any(a == "--log-dir" or a.startswith(("--log-dir=", "--log_dir")) for a in torchrun_args):
        # torchrun's per-attempt folders, in the attempt's notes folder that the asset removes, rather
        # than a new /tmp/torchelastic_* that nothing removes at every launch.
        torchrun_args = [f"--log-dir={note.parent / 'torchelastic'}", *torchrun_args]
    from torch.distributed import run as torchrun
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    from gpt2train.training.distributed import die_with_parent

    # SIGTERM when the Dagster run process (or `gpt2train pipeline`) that started this one dies:
    # torchrun then stops its ranks, and nothing trains on unsupervised holding the run directory.
    die_with_parent()

    # torch 2.13 shares one rendezvous TCP store across --max-restarts attempts, and restarted workers
    # can then read the dead attempt's gloo addresses (pytorch/pytorch#135712): 2 of 8 restarts came up
    # without this setting, 8 of 8 with it (tests/test_fault_rank_kill.py).
    os.environ.setdefault("TORCH_DISABLE_SHARE_RDZV_TCP_STORE", "1")
    try:
        torchrun.main(torchrun_args)
    except ChildFailedError as e:
        note.parent.mkdir(parents=True, exist_ok=True)
        note.write_text(json.dumps(failure_note(e.failures), indent=1) + "\n")
        raise  # torchrun's own report (traceback, rank table) and exit code 1, as without the wrapper


if __name__ == "__main__":
    main()
