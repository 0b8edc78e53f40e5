"""What hashing costs where a file is checked again (issue 26, one hash per byte): ours vs a baseline checkout.

    python bench/hash_once.py --baseline-repo /tmp/base [--pairs 3] [--shard-mb 400] [--shards 8]

`--baseline-repo` is another checkout of gpt2train (`git worktree add /tmp/base <commit>`, or
`git archive <commit> | tar -x -C /tmp/base`). Each case runs in a fresh process with one checkout's code,
the two alternating (A/B, then B/A, ...), `--pairs` times; the median of the paired ratios is printed (the
noise of a shared machine cancels within a pair). The inputs are made fresh for every run (new inodes, so no
verification record of an earlier run vouches for them) and are in the page cache, as a just-written
shard is: the figures are hashing and scanning, not the disk.

- shard-checks    the `token_shards` asset checks of one partition holding one `--shard-mb` shard: the
                  baseline's four check ops each ran `validate_shard` (a sha256 and a max-scan each);
                  ours is one op, one read of the shard for all four
- launch-verify   `train.verify_shards` over `--shards` shards of `--shard-mb` each in one process, at a
                  first launch and at a relaunch (a restart or resume): the baseline hashes every shard
                  at both; ours hashes them at the first and records them, then reads the records
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/tokenize.py would shadow the standard library's `tokenize` (which `inspect` imports) and put this
# checkout first on sys.path, whatever PYTHONPATH says: bench/ is taken off sys.path before any import.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import argparse
import hashlib
import importlib
import inspect
import json
import os
import statistics
import subprocess
import tempfile
import time

REPO = Path(__file__).resolve().parent.parent
HEADER_INTS = 256


def make_shard(path: Path, mb: int, seed: int) -> None:
    """A valid llm.c shard of about `mb` MB of random GPT-2 token ids, and its sidecar's sha256."""
    import numpy as np

    tokens = np.random.default_rng(seed).integers(0, 50257, size=(mb << 20) // 2, dtype=np.uint16)
    header = np.zeros(HEADER_INTS, dtype="<i4")
    header[:3] = (20240520, 1, len(tokens))
    data = header.tobytes() + tokens.astype("<u2").tobytes()
    path.write_bytes(data)
    path.with_name(path.name + ".json").write_text(json.dumps({"sha256": hashlib.sha256(data).hexdigest()}))


def run_case(case: str, tmp: Path, shard_mb: int, shards: int) -> dict:
    """In the child: one case with whichever gpt2train PYTHONPATH names; seconds per phase."""
    shards_mod = importlib.import_module("gpt2train.data.shards")
    one_pass = hasattr(shards_mod, "verification_path")  # this checkout: records, one pass for four checks
    folder = tmp / "shards"
    folder.mkdir()
    if case == "shard-checks":
        make_shard(folder / "x_train_000001.bin", shard_mb, 0)
        shard = folder / "x_train_000001.bin"
        sha = json.loads(shard.with_name(shard.name + ".json").read_text())["sha256"]
        t0 = time.perf_counter()
        for _ in range(1 if one_pass else 4):
            assert all(c.passed for c in shards_mod.validate_shard(shard, sha))
        return {"checks": time.perf_counter() - t0}
    for i in range(shards):
        make_shard(folder / f"x_train_{i:06d}.bin", shard_mb, i)
    pattern = str(folder / "x_train_*.bin")
    out = {}
    for launch in ("first launch", "relaunch"):
        t0 = time.perf_counter()
        if "patterns" in inspect.signature(shards_mod.verify_shard_hashes).parameters:
            found = shards_mod.verify_shard_hashes([pattern])
            assert not found.problems
            found.record()
        else:
            shards_mod.verify_shard_hashes(pattern)
        out[launch] = time.perf_counter() - t0
    return out


def spawn(repo: Path, case: str, args) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-hash-") as tmp:
        r = subprocess.run([sys.executable, __file__, "--case", case, "--tmp", tmp, "--shard-mb", str(args.shard_mb),
                            "--shards", str(args.shards)], capture_output=True, text=True,
                           env={**os.environ, "PYTHONPATH": str(repo)})
        if r.returncode:
            sys.exit(f"{case} with {repo} failed:\n{r.stderr[-3000:]}")
        return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--baseline-repo", required=False, help="another gpt2train checkout to compare with, A/B")
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--shard-mb", type=int, default=400)
    ap.add_argument("--shards", type=int, default=8, help="launch-verify: shards in the job")
    ap.add_argument("--case", help=argparse.SUPPRESS)
    ap.add_argument("--tmp", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.case:
        print(json.dumps(run_case(args.case, Path(args.tmp), args.shard_mb, args.shards)))
        return
    repos = {"this": REPO, **({"baseline": Path(args.baseline_repo).resolve()} if args.baseline_repo else {})}
    print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the start (others' processes included)")
    for case in ("shard-checks", "launch-verify"):
        runs: dict[str, list[dict]] = {name: [] for name in repos}
        for pair in range(args.pairs):
            for name in (list(repos) if pair % 2 == 0 else list(reversed(repos))):
                runs[name].append(spawn(repos[name], case, args))
        for phase in runs["this"][0]:
            for name, trials in runs.items():
                print(f"{case:<14} {phase:<13} {name:<9} seconds {' '.join(f'{t[phase]:.2f}' for t in trials):<24} "
                      f"median {statistics.median(t[phase] for t in trials):.2f}")
            if len(runs) == 2:
                ratios = [t[phase] / max(b[phase], 1e-9) for t, b in zip(runs["this"], runs["baseline"])]
                print(f"{case:<14} {phase:<13} this/baseline, median of {len(ratios)} paired ratios: "
                      f"{statistics.median(ratios):.3f}x ({' '.join(f'{r:.3f}' for r in ratios)})")


if __name__ == "__main__":
    main()
