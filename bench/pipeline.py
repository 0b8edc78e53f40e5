"""Dagster's overhead on the whole chain, what `--stale-only` saves (issue #4's goals), and what a
run costs when the instance launches it in a worker process (issue 15's goals).

    python bench/pipeline.py                 # all of it: tiny preset, offline, ~30 min on 2 CPU cores
    python bench/pipeline.py --part overhead # 1-3 below only (~8 min)
    python bench/pipeline.py --part launcher # 4-5 below only
    python bench/pipeline.py --part per-run --pairs 3   # 4 below only

Three timings, each in a fresh data dir (one-time costs — imports, lm-eval's task index — are paid
before any clock starts, as both paths run in this one process):
1. the whole tiny chain through Dagster (`run_pipeline` in a SQLite instance: corpus and shards
   per file, training through Pipes + torchrun, export, lm-eval, report, summary);
2. the same stages called directly from the library, with the same launcher for the trainer
   (`torchrun -m gpt2train.train`), no Dagster: the ratio 1/2 is Dagster's overhead (goal <= 1.15x);
3. `--stale-only` after an eval-config change (evals.tasks gets an explicit few-shot count), in the
   instance of (1): against (1), the full rerun it replaces (goal <= 0.2x).
4. `gpt2train pipeline` (each run submitted to the instance's queue and launched in a run worker)
   against `gpt2train pipeline --in-process`, both as the console script in fresh dirs, alternated
   A B A B: the difference over the number of runs is the per-run cost of a worker process (goal
   <= 5 s per run on this 2-core machine);
5. 4 checkpoints exported and evaluated (4 `checkpoint_evals` runs submitted at once) with the queue
   limited to 2 concurrent runs against 1, alternated: the ratio, and that every checkpoint ran
   exactly once (no lost or duplicated run). On 2 cores two lm-eval runs mostly share the CPU; the
   speed-up belongs to machines with a core (or a GPU) per run.
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


def instance_home(root: Path, max_concurrent_runs: int | None = None) -> Path:
    """A DAGSTER_HOME as `gpt2train pipeline` creates one (pipelines/cli.py), with its run limit changed."""
    from pipelines.cli import NEW_INSTANCE_YAML

    home = root / "home"
    home.mkdir(parents=True)
    yaml = NEW_INSTANCE_YAML
    if max_concurrent_runs:
        assert "max_concurrent_runs: 10\n" in yaml
        yaml = yaml.replace("max_concurrent_runs: 10\n", f"max_concurrent_runs: {max_concurrent_runs}\n")
    (home / "dagster.yaml").write_text(yaml)
    return home


def timed_cli(root: Path, extra: list[str], *flags: str) -> tuple[float, int]:
    """Seconds for `gpt2train pipeline` on the tiny chain in a fresh dir, and how many runs it made."""
    import dagster as dg

    home = instance_home(root)
    sets = [a for s in [f"data_dir={root / 'data'}", *extra] for a in ("--set", s)]
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "pipelines.cli", "pipeline", "--config", "tiny", *sets, *flags], check=True,
                   cwd=REPO, env={**os.environ, "DAGSTER_HOME": str(home)}, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - t0
    with dg.DagsterInstance.from_config(str(home)) as instance:
        return seconds, len(instance.get_runs())


def launched_against_in_process(tmp: Path, extra: list[str], pairs: int) -> None:
    rows = []
    for i in range(pairs):
        launched, runs = timed_cli(tmp / f"launched-{i}", extra)
        in_process, _ = timed_cli(tmp / f"in-process-{i}", extra, "--in-process")
        rows.append((launched, in_process, runs))
        print(f"  pair {i + 1}: launched {launched:.1f} s, in-process {in_process:.1f} s, {runs} runs")
    per_run = sorted((a - b) / n for a, b, n in rows)[len(rows) // 2]
    ratio = sorted(a / b for a, b, _ in rows)[len(rows) // 2]
    print(f"{'tiny chain, runs launched in workers':44s} {'':8s}  {ratio:6.3f}  (median of {pairs} paired ratios)")
    print(f"{'  per-run cost of a worker process':44s} {per_run:8.2f}  {'':6s}  <= 5 s")


def evals_with_concurrency(tmp: Path, extra: list[str], pairs: int) -> None:
    """Train once (4 checkpoints), then export and evaluate them in fresh instances limited to 1 and 2 runs."""
    import shutil

    import dagster as dg

    from assets.checkpoints import register_checkpoints
    from gpt2train.layout import runs_root
    from gpt2train.training.runs import find_checkpoints
    from pipelines.definitions import CHECKPOINT_EVALS_JOB
    from pipelines.executors import LaunchedRuns, code_location_env

    sets = ["train.max_steps=8", "train.checkpoint_every=2", *extra]
    trained = tmp / "trained"
    timed_cli(trained, sets, "--through", "training", "--in-process")
    timings: dict[int, list[float]] = {1: [], 2: []}
    for i in range(pairs):
        for limit in (1, 2):
            root = tmp / f"evals-{limit}-{i}"
            shutil.copytree(trained / "data", root / "data", ignore=shutil.ignore_patterns("exports", "reports"))
            overrides = [f"data_dir={root / 'data'}", *sets]
            with dg.DagsterInstance.from_config(str(instance_home(root, limit))) as instance:
                checkpoints = find_checkpoints(runs_root(root / "data"))
                register_checkpoints(instance, checkpoints)
                runs = LaunchedRuns(instance, code_location_env("tiny", overrides), str(root / "data"))
                try:
                    t0 = time.perf_counter()
                    ids = [runs.submit(CHECKPOINT_EVALS_JOB, ["hf_export", "eval_report"], c.key) for c in checkpoints]
                    outcomes = runs.wait(ids)
                    timings[limit].append(time.perf_counter() - t0)
                finally:
                    runs.close()
                partitions = [instance.get_run_by_id(r).tags["dagster/partition"] for r in ids]
                reports = instance.fetch_materializations(dg.AssetKey("eval_report"), limit=100).records
                exact = (len(checkpoints) == 4 and all(o.ok for o in outcomes.values())
                         and sorted(partitions) == sorted(c.key for c in checkpoints)
                         and sorted(r.partition_key for r in reports) == sorted(c.key for c in checkpoints))
            print(f"  limit {limit}, pass {i + 1}: {timings[limit][-1]:.1f} s, "
                  f"{'each checkpoint exactly once' if exact else 'LOST OR DUPLICATED RUNS'}")
    ratio = sorted(b / a for a, b in zip(timings[1], timings[2]))[pairs // 2]
    print(f"{'4 checkpoints exported + evaluated, limit 2':44s} {'':8s}  {ratio:6.3f}  "
          f"(against limit 1; {os.cpu_count()} CPU cores: no goal here)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--set", dest="extra", action="append", default=[], help="extra config overrides")
    ap.add_argument("--part", choices=("all", "overhead", "launcher", "per-run"), default="all")
    ap.add_argument("--pairs", type=int, default=1, help="A/B pairs for 4 and 5 (default 1; the median is reported)")
    args = ap.parse_args()
    if args.part in ("all", "launcher", "per-run"):
        # A code server may still be writing its last log lines into a DAGSTER_HOME as the folder goes.
        with tempfile.TemporaryDirectory(prefix="bench-launcher-", ignore_cleanup_errors=True) as tmp:
            launched_against_in_process(Path(tmp), args.extra, args.pairs)
            if args.part != "per-run":
                evals_with_concurrency(Path(tmp), args.extra, args.pairs)
    if args.part in ("launcher", "per-run"):
        return
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
