"""What one eval report costs besides its model (issue 26, item 3): before/after, A/B pairs.

    python bench/evals.py                          # tiny and d12 (GPT-2 124M's shape), evals.limit=20, 3 pairs
    python bench/evals.py --shapes tiny --pairs 5 --before 1685b2f

Each timed run is one fresh process doing what the `eval_report` asset does, `evaluate_export` on an
export (HellaSwag on `--limit` items of the invented local file, offline, evals.device auto: this
machine's CPU without a GPU), as an eval run worker does per checkpoint. "before" is the code at
commit `--before` (`git archive` into a temp folder: the repository is only read), "after" this
checkout; both score the same exports (made once, by this checkout, at seed-0 initial weights), in
the same HF_HOME (the local data's datasets cache warmed once before any clock). The after side's
lm-eval task index cache (GPT2TRAIN_CACHE_DIR, evals/tasks.py) is built once before the clocks
start, as it is once per installed harness; that build is printed as "cold index".

Printed per shape: the wall time of each run, the medians, the median of the paired ratios
after/before (pairs alternate which side runs first), and the fixed overhead: wall time minus the
model's own work, which is the harness's model load and scoring (lm-eval's HFLM construction and its
`loglikelihood` calls) and the sample's generation (`gpt2train.sample.sample`), each timed inside
the process by wrapping those functions. What is left is interpreter start, imports, the task index,
the export's checks, a second load of the model (before), the report's files. Goal: <= 10 s.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
# This file is bench/evals.py: with bench/ first on sys.path, `evals` (and `tokenize`) would be bench's.
sys.path[:] = [str(REPO)] + [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
HELLASWAG = SHARED / "data" / "hellaswag-format" / "invented_val.jsonl"
SHAPES = {"tiny": ("tiny", 64, "tiny"), "d12": ("d12", 1024, "gpt2_124m")}  # descriptor, context, preset

# Run in the timed process (either side's code on PYTHONPATH): wrap the model's own work, run the report.
DRIVER = r"""
import json, sys, time
t_start = time.perf_counter()
from lm_eval.models.huggingface import HFLM
import gpt2train.sample
spent = {"harness_model": 0.0, "sample": 0.0}

def timed(fn, key):
    def wrapper(*a, **k):
        t0 = time.perf_counter()
        try:
            return fn(*a, **k)
        finally:
            spent[key] += time.perf_counter() - t0
    return wrapper

HFLM.__init__ = timed(HFLM.__init__, "harness_model")
HFLM.loglikelihood = timed(HFLM.loglikelihood, "harness_model")
gpt2train.sample.sample = timed(gpt2train.sample.sample, "sample")
from evals.runner import evaluate_export
from gpt2train.config import EvalsConfig
export, out, limit, data = sys.argv[1:5]
ecfg = EvalsConfig(tasks=["hellaswag"], limit=int(limit), local_data=[f"hellaswag={data}"])
report = evaluate_export(export, out, ecfg, model_label="bench")
spent["in_process"] = time.perf_counter() - t_start
spent["device"] = report.lineage.get("device")
print("BENCH " + json.dumps(spent))
"""


def make_export(root: Path, shape: str) -> Path:
    """A checkpoint of `shape` at seed-0 initial weights with a run folder around it, exported."""
    from gpt2train.config import config_to_dict, load_config
    from gpt2train.export.hf_export import export_checkpoint
    from gpt2train.model import GPT, GPTConfig
    from gpt2train.training.checkpoint import save_checkpoint

    descriptor, block, preset = SHAPES[shape]
    run = root / "runs" / f"{shape}-bench"
    run.mkdir(parents=True)
    (run / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "loss": 10.0, "ms": 100.0}) + "\n"
                                               for s in range(1, 11)))
    model = GPT(GPTConfig.from_descriptor(descriptor, block)).init_weights(0)
    lineage = {"run_tag": f"{shape}-bench", "shards_dir": "/data/shards", "code_version": "0" * 16, "git_commit": "x",
               "gpt2train_version": "0", "train_shards": [], "val_shards": []}
    ckpt = save_checkpoint(run / "checkpoints", 10, model_state=model.state_dict(), optimizer_state={},
                           loader_state={}, state={"config": config_to_dict(load_config(preset)), "loss": 5.0,
                                                   "lineage": lineage})
    return export_checkpoint(ckpt, root / "exports" / f"{shape}-bench@step_00000010").out_dir


def run_report(tree: Path, export: Path, out: Path, limit: int, env: dict) -> dict:
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", DRIVER, str(export), str(out), str(limit), str(HELLASWAG)],
                       cwd=tree, env={**env, "PYTHONPATH": str(tree)}, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"eval report in {tree} failed:\n{r.stderr[-4000:]}")
    spent = json.loads(next(line for line in r.stdout.splitlines() if line.startswith("BENCH "))[6:])
    spent["wall"] = wall
    spent["fixed"] = wall - spent["harness_model"] - spent["sample"]
    return spent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shapes", default="tiny,d12", help="comma-separated: tiny, d12")
    ap.add_argument("--pairs", type=int, default=3)
    ap.add_argument("--limit", type=int, default=20, help="evals.limit (HellaSwag items scored)")
    ap.add_argument("--before", default="1685b2f", help="the commit timed as 'before'")
    args = ap.parse_args()
    shapes = [s.strip() for s in args.shapes.split(",") if s.strip()]
    for s in shapes:
        if s not in SHAPES:
            raise SystemExit(f"--shapes: {s!r} is not one of {', '.join(SHAPES)}")

    with tempfile.TemporaryDirectory(prefix="bench-evals-") as tmp:
        tmp = Path(tmp)
        before = tmp / "before"
        before.mkdir()
        archive = subprocess.run(["git", "-C", str(REPO), "archive", args.before], capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", str(before)], input=archive.stdout, check=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("GPT2TRAIN_")}
        env.update(HF_HOME=str(tmp / "hf"), GPT2TRAIN_CACHE_DIR=str(tmp / "cache"), HF_HUB_OFFLINE="1",
                   HF_DATASETS_OFFLINE="1", TIKTOKEN_CACHE_DIR=env.get("TIKTOKEN_CACHE_DIR", str(SHARED / "tiktoken")))
        os.environ.update(TIKTOKEN_CACHE_DIR=env["TIKTOKEN_CACHE_DIR"])
        exports = {s: make_export(tmp / "data", s) for s in shapes}

        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "from evals.tasks import harness_task_manager; harness_task_manager()"],
                       cwd=REPO, env={**env, "PYTHONPATH": str(REPO)}, check=True, capture_output=True)
        print(f"cold index: building lm-eval's task index and caching it took {time.perf_counter() - t0:.1f} s "
              f"(once per installed harness)")
        run_report(REPO, exports[shapes[0]], tmp / "warmup", args.limit, env)  # the datasets cache, both sides'

        print(f"eval_report wall time, evals.limit={args.limit}, before = {args.before}, after = this checkout; "
              f"{args.pairs} A/B pairs per shape, alternating which runs first")
        for shape in shapes:
            rows = []
            for i in range(args.pairs):
                order = [("before", before), ("after", REPO)]
                if i % 2:
                    order.reverse()
                pair = {name: run_report(tree, exports[shape], tmp / f"r-{shape}-{name}-{i}", args.limit, env)
                        for name, tree in order}
                rows.append(pair)
                b, a = pair["before"], pair["after"]
                print(f"  {shape} pair {i + 1} ({order[0][0]} first): before {b['wall']:.1f} s (fixed {b['fixed']:.1f}), "
                      f"after {a['wall']:.1f} s (fixed {a['fixed']:.1f}); model work before/after: harness "
                      f"{b['harness_model']:.1f}/{a['harness_model']:.1f} s, sample {b['sample']:.2f}/{a['sample']:.2f} s; "
                      f"device {a['device']}")
            med = {k: {side: statistics.median(r[side][k] for r in rows) for side in ("before", "after")}
                   for k in ("wall", "fixed", "harness_model", "sample")}
            ratio = statistics.median(r["after"]["wall"] / r["before"]["wall"] for r in rows)
            print(f"{shape}: median wall before {med['wall']['before']:.1f} s, after {med['wall']['after']:.1f} s; "
                  f"median paired ratio after/before {ratio:.3f}; fixed overhead (wall - harness model load and "
                  f"scoring - sample) before {med['fixed']['before']:.1f} s, after {med['fixed']['after']:.1f} s "
                  f"(goal <= 10 s)")


if __name__ == "__main__":
    main()
