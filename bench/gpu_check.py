"""What to run the day a GPU is lent, in one go (bench/gpu_check.sh calls this): ~8 minutes on one
H100, offline, results in one JSON.

    bash bench/gpu_check.sh [OUT_DIR]          # default OUT_DIR: $OUT, else /tmp/gpt2train-gpu-check
    python bench/gpu_check.py --out DIR --dry-run

1. the kernel tests on CUDA against their PyTorch references (tests/kernels/test_<op>.py: compiled
   kernels, not the interpreter);
2. `bench/kernels.py --gpu-only`: each kernel against eager and torch.compile at 124M and 1558M
   shapes, the fused classifier's memory, the d12 step's MFU with each kernel set, AdamW;
3. a d12 (GPT-2 124M) training run of 50 steps at B=32, T=1024 through the trainer itself
   (`python -m gpt2train.train --config gpt2_124m`, bf16 autocast, fp32 master weights, no
   gradient accumulation), with the Triton kernels and with PyTorch's, each twice: tok/s, ms/step
   and MFU (medians over steps 11-50: the first ten hold compilation and autotuning), peak memory,
   and whether the two runs of a kernel set are bitwise equal (every loss and the final weights).
   The tokens are random (a fixed seed), written as llm.c shards here: no tokenizer and no corpus
   are needed, and the speed of a step does not depend on the text.

Each part has its own time limit (together 495 s, inside one 600 s call of the device tool), so one
that hangs cannot take the others' time; a part that fails or times out is recorded, the JSON is
rewritten after every part, and the next one runs. Triton's autotuner timings are cached on disk
(TRITON_CACHE_AUTOTUNING, one cache for all parts), so the second run of a kernel set uses the
tiles the first one chose (TRITON_PRINT_AUTOTUNING puts them in the log): a bitwise difference
between the two is then the kernels', not the autotuner's. Without CUDA it says so, checks that
every file it would run exists and that the d12 run's config loads, and exits 0
(tests/test_gpu_check.py).
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[0] = str(REPO)  # the repo root, not bench/ (bench/tokenize.py would shadow the stdlib's)

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402

KERNEL_TESTS = [f"tests/kernels/test_{op}.py" for op in ("layernorm", "gelu", "attention", "classifier")]
STEPS, B, T, TIMED_FROM = 50, 32, 1024, 11
TRAIN_TOKENS, VAL_TOKENS = (STEPS + 2) * B * T + 1, 4 * B * T + 1


@dataclass
class Part:
    name: str
    command: list[str]
    timeout: int
    log: str
    result: dict = field(default_factory=dict)


def run_part(part: Part, out: Path, env: dict) -> dict:
    """Run one part with its time limit; its output goes to OUT/<log> (appended)."""
    t0 = time.perf_counter()
    with open(out / part.log, "a") as log:
        log.write(f"$ {' '.join(part.command)}\n")
        log.flush()
        try:
            proc = subprocess.run(part.command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                                  timeout=part.timeout)
            rc = proc.returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
    seconds = time.perf_counter() - t0
    print(f"  {part.name}: {'ok' if rc == 0 else f'FAILED ({rc})'} in {seconds:.0f} s (log: {out / part.log})",
          flush=True)
    return {"name": part.name, "rc": rc, "seconds": round(seconds, 1), "log": part.log}


def write_random_shards(root: Path) -> tuple[str, str]:
    """llm.c shards of random GPT-2 token ids (seed 0): one train, one val. Returns their globs."""
    import numpy as np

    from gpt2train.data.shards import ShardFileWriter

    rng = np.random.default_rng(0)
    for name, n in (("gpucheck_train_000001.bin", TRAIN_TOKENS), ("gpucheck_val_000000.bin", VAL_TOKENS)):
        writer = ShardFileWriter(root / name)
        writer.write(rng.integers(0, 50257, size=n, dtype=np.uint16))
        writer.finish()
    return str(root / "gpucheck_train_*.bin"), str(root / "gpucheck_val_*.bin")


def train_command(work: Path, kernels: str, rep: int) -> tuple[list[str], Path]:
    out_dir = work / "runs" / f"{kernels}-{rep}"
    sets = [f"data_dir={work}", f"train.out_dir={out_dir}", f"train.train_glob={work}/shards/gpucheck_train_*.bin",
            f"train.val_glob={work}/shards/gpucheck_val_*.bin", f"train.batch_size={B}", f"train.seq_len={T}",
            f"train.total_batch_tokens={B * T}", f"train.max_steps={STEPS}", "train.warmup_steps=10",
            "train.val_every=25", "train.val_batches=4", "train.checkpoint_every=0", "train.hellaswag_every=0",
            "train.sample_every=0", "train.zero_stage=0", "train.resume=false", "launch.nproc_per_node=1"]
    command = [sys.executable, "-m", "gpt2train.train", "--config", "gpt2_124m", "--kernels", kernels,
               *(f"--set={s}" for s in sets)]
    return command, out_dir


def summarize_run(out_dir: Path, log: Path) -> dict:
    """The run's figures from its metrics.jsonl, its final weights, and the summary line the trainer
    printed last (the newest JSON line of the shared log)."""
    try:
        return _summarize_run(out_dir, log)
    except (OSError, ValueError, KeyError) as e:  # a run that ended early: say so, keep the others
        return {"error": f"{type(e).__name__}: {e}"}


def _summarize_run(out_dir: Path, log: Path) -> dict:
    records = [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    steps = [r for r in records if "loss" in r and r["step"] >= TIMED_FROM]
    summary_line = next((json.loads(line) for line in reversed(log.read_text().splitlines())
                         if line.startswith('{"steps"')), {})
    weights = out_dir / "checkpoints" / f"step_{STEPS:08d}" / "model.safetensors"
    from gpt2train.fileio import sha256_file

    mfu = [r["mfu"] for r in steps if r.get("mfu") is not None]
    return {"tok_s": statistics.median(r["tok_s"] for r in steps), "ms_per_step": statistics.median(r["ms"] for r in steps),
            "mfu": statistics.median(mfu) if mfu else None, "peak_memory_mb": summary_line.get("peak_memory_mb"),
            "losses": [r["loss"] for r in records if "loss" in r],
            "val_losses": [r["val_loss"] for r in records if "val_loss" in r],
            "weights_sha256": sha256_file(weights) if weights.exists() else None}


def dry_run(work: Path) -> list[str]:
    """Without a GPU: what would run must exist, and the d12 run's config must load."""
    from gpt2train.config import load_config

    missing = [p for p in [*KERNEL_TESTS, "bench/kernels.py", "gpt2train/train.py", "gpt2train/configs/gpt2_124m.yaml"]
               if not (REPO / p).is_file()]
    command, _ = train_command(work, "triton", 1)
    sets = [arg.split("=", 1)[1] for arg in command if arg.startswith("--set=")]
    load_config("gpt2_124m", sets + ["train.kernels=triton"])  # raises ConfigError on a bad setting
    return missing


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="where the JSON and the logs go")
    ap.add_argument("--dry-run", action="store_true", help="check the plan without running it")
    args = ap.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    work = Path(os.environ.get("GPU_CHECK_WORK", "/tmp/gpt2train-gpu-check-work"))

    import torch

    if args.dry_run or not torch.cuda.is_available():
        missing = dry_run(work)
        if missing:
            print(f"gpu_check: missing: {', '.join(missing)}")
            return 1
        reason = "--dry-run" if args.dry_run else "no CUDA device here"
        print(f"gpu_check: {reason}: nothing run. Checked that the kernel tests, bench/kernels.py and the d12 "
              f"run's config (gpt2_124m, B={B}, T={T}, {STEPS} steps) are all in place.")
        return 0

    import triton

    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1", "TRITON_CACHE_AUTOTUNING": "1",
           "TRITON_PRINT_AUTOTUNING": "1", "TRITON_CACHE_DIR": str(work / "triton-cache")}
    device = torch.cuda.get_device_name()
    report = {"device": device, "capability": list(torch.cuda.get_device_capability()),
              "torch": torch.__version__, "cuda": torch.version.cuda, "triton": triton.__version__, "parts": [],
              "runs": {}}
    print(f"gpu_check on {device} (torch {torch.__version__}, CUDA {torch.version.cuda}, triton {triton.__version__})")
    t0 = time.perf_counter()
    results = out / "gpu_check.json"
    for part in (Part("kernel tests on CUDA", [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                                               *KERNEL_TESTS], 140, "kernel_tests.log"),
                 Part("bench/kernels.py --gpu-only", [sys.executable, "bench/kernels.py", "--gpu-only"], 160,
                      "bench_kernels.log")):
        report["parts"].append(run_part(part, out, env))
        results.write_text(json.dumps(report, indent=1))

    (work / "shards").mkdir(parents=True, exist_ok=True)
    write_random_shards(work / "shards")
    for kernels in ("triton", "torch"):
        for rep in (1, 2):
            command, out_dir = train_command(work, kernels, rep)
            # The first Triton run compiles the kernels (the trainer's preflight) and autotunes them.
            part = Part(f"d12 run, {kernels} kernels, #{rep}", command, 60 if (kernels, rep) == ("triton", 1) else 45,
                        "d12_runs.log")
            report["parts"].append(run_part(part, out, env))
            if report["parts"][-1]["rc"] == 0:
                report["runs"][f"{kernels}-{rep}"] = summarize_run(out_dir, out / part.log)
            results.write_text(json.dumps(report, indent=1))
    report["determinism"] = {}
    for kernels in ("triton", "torch"):
        a, b = report["runs"].get(f"{kernels}-1"), report["runs"].get(f"{kernels}-2")
        if a and b and "error" not in a and "error" not in b:
            report["determinism"][kernels] = {"losses_equal": a["losses"] == b["losses"],
                                              "val_losses_equal": a["val_losses"] == b["val_losses"],
                                              "weights_equal": a["weights_sha256"] == b["weights_sha256"]}
    report["seconds"] = round(time.perf_counter() - t0, 1)
    results.write_text(json.dumps(report, indent=1))

    print(f"\nd12, B={B}, T={T}, steps {TIMED_FROM}-{STEPS} (medians), {device}:")
    print(f"{'run':<12}{'tok/s':>10}{'ms/step':>10}{'MFU':>8}{'peak MiB':>10}")
    for name, r in report["runs"].items():
        if "error" in r:
            print(f"{name:<12}{r['error']}")
            continue
        mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "-"
        print(f"{name:<12}{r['tok_s']:>10.0f}{r['ms_per_step']:>10.1f}{mfu:>8}{r['peak_memory_mb'] or 0:>10.0f}")
    for kernels, d in report["determinism"].items():
        print(f"bitwise deterministic, {kernels} kernels: " + ", ".join(f"{k} {v}" for k, v in d.items()))
    failed = [p["name"] for p in report["parts"] if p["rc"] != 0]
    print(f"\n{len(report['parts']) - len(failed)}/{len(report['parts'])} parts ok in {report['seconds']:.0f} s; "
          f"results: {out / 'gpu_check.json'}" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
