"""Ahead-of-time compile check: every Triton kernel built for NVIDIA GPUs, on a machine without one.

    python bench/aot_compile.py                       # sm_80 + sm_90, GPT-2 124M + 1558M, every precision
    python bench/aot_compile.py --arch 90 --json aot.json
    python bench/aot_compile.py --markdown            # the per-kernel summary as the README's table

Each kernel is compiled to a cubin exactly as its host launcher would launch it during a training
step (gpt2train/kernels/compile_check.py: the real launchers, called on tensors of the real shapes,
under `compile_only()`), with every config its autotuner would try, by triton's own compiler and
the ptxas in the triton wheel, for the target a stand-in driver reports. Printed per build:
registers, spill stores (bytes per thread), shared memory per block; then a summary per kernel and
architecture.

Exit status 1 when a kernel does not compile, when a launch has no config that fits (spill-free,
within the architecture's shared memory and registers), when a config in an autotune list could
never launch on an architecture (over its shared memory or registers), or when a config that spills
stays in a list without a reason given in its entry. One process per architecture, in parallel;
about 1.5 minutes on 2 cores (tests/kernels/test_aot_compile.py runs it).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

# Compile, do not interpret: must be set before gpt2train.kernels is imported (triton.jit reads it
# when a kernel is defined). The repo root, not bench/, first on the path (bench/tokenize.py would
# shadow the stdlib's).
os.environ["TRITON_INTERPRET"] = "0"
sys.path[0] = str(Path(__file__).resolve().parent.parent)

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402

ARCHS = (80, 90)


def compile_arch(arch: int, shapes: list[str], modes: list[str]) -> dict:
    """Every launch for one arch (run in its own process: a fresh triton cache, one target)."""
    import triton

    from gpt2train.kernels.compile_check import MODES, SHAPES, compile_launches, fresh_triton_cache

    builds, stats, t0 = [], {}, time.perf_counter()
    with fresh_triton_cache():
        for shape in shapes:
            for mode in modes:
                builds += compile_launches(arch, SHAPES[shape], MODES[mode], stats=stats)
    return {"arch": arch, "triton": triton.__version__, "seconds": time.perf_counter() - t0,
            "distinct_builds": len(stats), "builds": [dataclasses.asdict(b) for b in builds]}


def _status(b) -> str:
    if b.error:
        return "ERROR"
    if b.spill_bytes:
        return "spills (kept: " + b.spills_ok + ")" if b.spills_ok else "SPILLS"
    if b.over_shared:
        return "SMEM"
    if b.over_registers:
        return "REGS"
    return "ok"


def print_builds(builds) -> None:
    """One row per build; the same build at both model sizes is one row."""
    rows: dict[tuple, list[str]] = {}
    for b in builds:
        key = (b.arch, b.kernel, b.launch, b.mode, b.config, b.registers, b.spill_bytes, b.shared_bytes, _status(b))
        rows.setdefault(key, []).append(b.shape)
    print(f"{'arch':5} {'kernel':35} {'launch':32} {'precision':14} {'tile':15} {'regs':>5} {'spill B':>8} "
          f"{'smem B':>8}  {'shapes':11} status")
    for (arch, kernel, launch, mode, config, regs, spills, smem, status), shapes in rows.items():
        print(f"sm_{arch:<2} {kernel:35} {launch:32} {mode:14} {config:15} {_n(regs):>5} {_n(spills):>8} "
              f"{_n(smem):>8}  {','.join(shapes):11} {status}")


def summary_rows(builds) -> list[list[str]]:
    """Per kernel and arch: configs built, register range, worst spill, largest shared memory, status."""
    groups: dict[tuple, list] = {}
    for b in builds:
        groups.setdefault((b.kernel, b.arch), []).append(b)
    rows = []
    for (kernel, arch), group in sorted(groups.items()):
        regs = [b.registers for b in group if b.registers is not None]
        spills = max((b.spill_bytes or 0) for b in group)
        smem = max((b.shared_bytes or 0) for b in group)
        builds = {(b.launch, b.mode, b.shape, b.config) for b in group}
        bad = sorted({_status(b) for b in group} - {"ok"})
        rows.append([kernel, f"sm_{arch}", str(len(builds)), f"{min(regs)}–{max(regs)}" if regs else "?",
                     str(spills), f"{smem / 1024:.1f} KiB", "ok" if not bad else ", ".join(bad)])
    return rows


def _n(v) -> str:
    return "?" if v is None else str(v)


def main() -> int:
    from gpt2train.kernels.compile_check import MODES, SHAPES, KernelBuild, find_problems

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default=",".join(map(str, ARCHS)), help="compute capabilities, e.g. 80,90")
    ap.add_argument("--shapes", default=",".join(SHAPES), help=f"model shapes: {', '.join(SHAPES)}")
    ap.add_argument("--modes", default=",".join(MODES), help=f"precisions: {', '.join(MODES)}")
    ap.add_argument("--json", type=Path, help="write every build and problem here")
    ap.add_argument("--markdown", action="store_true", help="print the summary as a markdown table")
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    shapes, modes = args.shapes.split(","), args.modes.split(",")
    for name, known in (*((s, SHAPES) for s in shapes), *((m, MODES) for m in modes)):
        if name not in known:
            ap.error(f"unknown {name!r}; use one of {', '.join(known)}")
    if args.child:
        print(json.dumps(compile_arch(args.child, shapes, modes)))
        return 0
    try:
        archs = [int(a) for a in args.arch.split(",")]
    except ValueError:
        ap.error(f"--arch {args.arch!r}: give compute capabilities as integers, e.g. 80,90")

    def child(arch: int) -> dict:
        proc = subprocess.run([sys.executable, __file__, "--child", str(arch), "--shapes", args.shapes,
                               "--modes", args.modes], capture_output=True, text=True)
        if proc.returncode:
            raise SystemExit(f"aot_compile: sm_{arch} failed:\n{proc.stderr[-4000:]}")
        return json.loads(proc.stdout.strip().splitlines()[-1])

    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=len(archs)) as pool:
        results = list(pool.map(child, archs))
    builds = [KernelBuild(**b) for r in results for b in r["builds"]]
    problems = find_problems(builds)

    print(f"triton {results[0]['triton']}; shapes {', '.join(shapes)}; precisions {', '.join(modes)}")
    for r in results:
        print(f"sm_{r['arch']}: {r['distinct_builds']} distinct builds in {r['seconds']:.0f} s")
    print()
    print_builds(builds)
    print()
    header = ["kernel", "arch", "checked", "registers", "max spill B", "max smem", "status"]
    rows = summary_rows(builds)
    if args.markdown:
        print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
        for row in rows:
            print("| " + " | ".join(row) + " |")
    else:
        for row in [header] + rows:
            print(f"{row[0]:35} {row[1]:6} {row[2]:>6} {row[3]:>10} {row[4]:>11} {row[5]:>10}  {row[6]}")
    print(f"\n{len(builds)} builds checked in {time.perf_counter() - t0:.0f} s")
    for p in problems:
        print(f"PROBLEM: {p.text}")
    if args.json:
        args.json.write_text(json.dumps({"results": [{k: v for k, v in r.items() if k != "builds"} for r in results],
                                         "builds": [dataclasses.asdict(b) for b in builds],
                                         "problems": [{"kind": p.kind, "text": p.text} for p in problems]}, indent=1))
    if problems:
        print(f"{len(problems)} problem(s): see above")
        return 1
    print("every kernel compiles, and every launch has a spill-free config that fits")
    return 0


if __name__ == "__main__":
    sys.exit(main())
