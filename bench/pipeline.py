"""Dagster's overhead on the whole chain, and what `--stale-only` saves (issue #4's goals).

    python bench/pipeline.py            # tiny preset, offline, ~8 min on 2 CPU cores

Three timings, each in a fresh data dir (one-time costs — imports, lm-eval's task index — are paid
before any clock starts, as both paths run in this one process):
1. the whole tiny chain through Dagster (`run_pipeline` in a SQLite instance: corpus and shards
   per file, training through Pipes + torchrun, export, lm-eval, report, summary);
2. the same stages called directly from the library, with the same launcher for the trainer
   (`torchrun -m gpt2train.train`), no Dagster: the ratio 1/2 is Dagster's overhead (goal <= 1.15x);
3. `--stale-only` after an eval-config change (evals.tasks gets an explicit few-shot count), in the
   instance of (1): against (1), the full rerun it replaces (goal <= 0.2x).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
# bench/tokenize.py would shadow the stdlib's `tokenize` for anything imported with bench/ first
# on sys.path: put the repo there instead.
sys.path[:] = [str(REPO)] + [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(SHARED / "tiktoken"))
os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


def config(data_dir: Path, *extra: str):
    from gpt2train.config import load_config

    return load_config("tiny", [f"data_dir={data_dir}", *extra])


def through_dagster(root: Path, extra: list[str]) -> tuple[float, object]:
    import dagster as dg

    from pipelines.runner import run_pipeline

    (root / "home").mkdir(parents=True)
    instance = dg.DagsterInstance.local_temp(str(root / "home"))
    t0 = time.perf_counter()
    run_pipeline(config(root / "data", *extra), instance)
    return time.perf_counter() - t0, instance


def through_library(root: Path, extra: list[str]) -> float:
    from evals.runner import evaluate_export
    from evals.trend import write_trend
    from gpt2train.data.stage import materialize_corpus_file, materialize_token_shards
    from gpt2train.data.corpus import list_source_files
    from gpt2train.export.hf_export import export_checkpoint
    from gpt2train.training.run_identity import run_dir
    from gpt2train.training.runs import find_checkpoints, write_run_config

    cfg = config(root / "data", *extra)
    t0 = time.perf_counter()
    for f in list_source_files(cfg.corpus):
        materialize_corpus_file(cfg, f.key)
        materialize_token_shards(cfg, f.key)
    run = run_dir(cfg)
    run.mkdir(parents=True)
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1",
                    "-m", "gpt2train.train", "--config", str(write_run_config(cfg, run))], check=True, cwd=REPO)
    reports = []
    for ckpt in find_checkpoints(Path(cfg.data_dir) / "runs"):
        export = export_checkpoint(ckpt.path, Path(cfg.data_dir) / "exports" / ckpt.key, key=ckpt.key)
        report = evaluate_export(export.out_dir, Path(cfg.data_dir) / "reports" / ckpt.key, cfg.evals,
                                 model_label=ckpt.key)
        reports.append(report.report_dir)
    write_trend(reports, Path(cfg.data_dir) / "eval_summary")
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--set", dest="extra", action="append", default=[], help="extra config overrides")
    args = ap.parse_args()
    # Both paths run in this one process: pay the one-time costs (imports, the harness's task index,
    # ~20-40 s) before either clock starts, or whichever runs first carries them.
    import dagster  # noqa: F401
    import lm_eval  # noqa: F401
    import transformers  # noqa: F401

    from evals.tasks import harness_task_manager

    harness_task_manager()
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp:
        tmp = Path(tmp)
        library_s = through_library(tmp / "library", args.extra)
        dagster_s, instance = through_dagster(tmp / "dagster", args.extra)

        from pipelines.runner import run_pipeline

        changed = config(tmp / "dagster" / "data", *args.extra, "evals.tasks=[hellaswag:0]")
        t0 = time.perf_counter()
        summary = run_pipeline(changed, instance, stale_only=True)
        stale_s = time.perf_counter() - t0
        instance.dispose()

    print(f"\nwhole tiny chain (corpus -> shards -> train -> export -> lm-eval -> reports), "
          f"{os.cpu_count()} CPU cores")
    print(f"{'':44s} {'seconds':>8s}  {'ratio':>6s}  goal")
    print(f"{'library stages called directly':44s} {library_s:8.1f}  {1.0:6.3f}")
    print(f"{'through Dagster (gpt2train pipeline)':44s} {dagster_s:8.1f}  {dagster_s / library_s:6.3f}  <= 1.15x")
    print(f"{'full rerun (= the Dagster chain above)':44s} {dagster_s:8.1f}  {1.0:6.3f}")
    print(f"{'--stale-only after an eval-config change':44s} {stale_s:8.1f}  {stale_s / dagster_s:6.3f}  <= 0.20x")
    print(f"  stale-only ran: {', '.join(sorted({a for a, _ in summary.ran}))}; "
          f"skipped {len(summary.skipped)} fresh (asset, partition) pairs")


if __name__ == "__main__":
    main()
