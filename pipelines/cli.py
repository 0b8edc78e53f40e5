"""The `gpt2train` console script: the library's CLI (gpt2train/cli.py), `eval` (evals/cli.py) and
`pipeline`, the one subcommand that needs Dagster: each layer's commands are added here, above them all,
so the library imports neither evals/ nor Dagster.

    gpt2train pipeline --config tiny                 # the whole chain, in the instance at DAGSTER_HOME
    gpt2train pipeline --config tiny --stale-only    # only stale or missing (asset, partition) pairs
    gpt2train pipeline --config tiny --stale-only --verify   # ... re-hashing what it would skip
    gpt2train pipeline --config tiny --stale-only --dry-run  # what that would run, and why; runs nothing
    gpt2train pipeline --config tiny --through data  # stop after the token shards
    gpt2train pipeline --config tiny --in-process    # every run inside this process (a debugger, a profiler)
"""

from __future__ import annotations

import argparse
import os
import signal
from pathlib import Path

from evals.cli import add_eval_command
from gpt2train import cli as library_cli
from gpt2train.errors import Gpt2TrainError
from gpt2train.layout import shards_dir, summary_dir


def _print_summary(summary) -> None:
    for asset, key in summary.ran:
        print(f"ran      {asset}{f' [{key}]' if key else ''}")
    for asset, key in summary.skipped:
        print(f"skipped  {asset}{f' [{key}]' if key else ''} (fresh)")
    for asset, key, _cause in summary.failed:
        print(f"FAILED   {asset}{f' [{key}]' if key else ''}")


# The dagster.yaml `gpt2train pipeline` writes into a DAGSTER_HOME that has none (new, or made by
# `mkdir -p` as the README's UI section does): Dagster's defaults (SQLite under DAGSTER_HOME), said
# explicitly, and its telemetry off, so that no banner interrupts the pipeline's output. A
# dagster.yaml that is there is the user's and is used as it is.
NEW_INSTANCE_YAML = """\
# Written by `gpt2train pipeline` into this Dagster instance, which had no dagster.yaml. Storage:
# SQLite files in this folder (Dagster's default); docs/deploy.md shows the Postgres storage of a deployment.
telemetry:
  enabled: false
# Runs wait in the instance's queue and at most this many run at once (Dagster's default, said
# explicitly): `gpt2train pipeline`'s independent corpus files and checkpoints, the UI's, the sensors'.
concurrency:
  runs:
    max_concurrent_runs: 10
# Launch the runs of one dequeue pass side by side: the code server answers a launch only once the
# run's worker has imported the code location (~2-3 s), so one at a time, the fourth corpus file
# would start ~9 s after the first.
run_coordinator:
  module: dagster.core.run_coordinator
  class: QueuedRunCoordinator
  config:
    dequeue_use_threads: true
    dequeue_num_workers: 4
"""


def prepare_dagster_home(home: Path) -> bool:
    """Create DAGSTER_HOME if needed and write NEW_INSTANCE_YAML into it if it has no dagster.yaml;
    True if written. Never replaces a dagster.yaml: the file appears whole (written under a temporary
    name, then hard-linked into place, which fails rather than overwrites if one appeared meanwhile;
    on a filesystem without hard links, created exclusively)."""
    target = home / "dagster.yaml"
    if target.exists() or target.is_symlink():
        return False
    tmp = home / f".dagster.yaml.{os.getpid()}.tmp"
    try:
        home.mkdir(parents=True, exist_ok=True)
        tmp.write_text(NEW_INSTANCE_YAML)
        try:
            os.link(tmp, target)
        except FileExistsError:
            raise
        except OSError:  # no hard links here (EPERM, ENOTSUP: some network and FUSE filesystems)
            with open(target, "x") as f:
                f.write(NEW_INSTANCE_YAML)
    except FileExistsError:
        return False  # written meanwhile (by the user, or another `gpt2train pipeline`): theirs stands
    except OSError:
        return False  # not writable, or not a directory: open_instance's check says so in one line
    finally:
        if tmp.exists():
            tmp.unlink()
    return True


def _label(asset: str, key: str | None) -> str:
    return f"{asset}{f' [{key}]' if key else ''}"


def _print_plan(plan) -> None:
    for asset, key, why in plan.would_run:
        print(f"would run   {_label(asset, key)}: {why}")
    for asset, key in plan.fresh:
        print(f"would skip  {_label(asset, key)} (fresh)")
    for asset, key, why in plan.after:
        print(f"then asks   {_label(asset, key)}: {why}")
    print(f"dry run: {len(plan.would_run)} (asset, partition) pair(s) would run now"
          f"{', and what they change after them' if plan.after else ''}; nothing ran, no Dagster run was created")


def cmd_pipeline_dry_run(args: argparse.Namespace, cfg) -> None:
    """`--stale-only --dry-run`: the plan, from the instance and the disk; writes nothing, DAGSTER_HOME included."""
    from pipelines.instance import open_instance
    from pipelines.runner import plan_stale_only

    home = Path(os.environ.get("DAGSTER_HOME") or "dagster_home").resolve()
    if not home.is_dir():
        raise Gpt2TrainError(f"DAGSTER_HOME={home} does not exist: nothing was materialized there, so "
                             f"`gpt2train pipeline` would run every stage")
    os.environ["DAGSTER_HOME"] = str(home)
    print(f"Dagster instance: DAGSTER_HOME={home}")
    with open_instance(check=False) as instance:  # check_instance writes a row; this reads only
        _print_plan(plan_stale_only(cfg, instance, through=args.through, verify=args.verify))


def cmd_pipeline(args: argparse.Namespace) -> None:
    from pipelines.executors import LaunchedRuns, code_location_env
    from pipelines.instance import open_instance
    from pipelines.runner import PipelineFailed, run_pipeline

    cfg = library_cli.load_from_args(args)
    if args.dry_run:
        if not args.stale_only:
            raise Gpt2TrainError("--dry-run tells what --stale-only would run: add --stale-only (without it, "
                                 "every stage runs)")
        return cmd_pipeline_dry_run(args, cfg)
    env = None if args.in_process else code_location_env(args.config, list(args.overrides))
    if not os.environ.get("DAGSTER_HOME"):
        os.environ["DAGSTER_HOME"] = str(Path("dagster_home").resolve())
    home = Path(os.environ["DAGSTER_HOME"])
    if prepare_dagster_home(home):
        print(f"wrote {home / 'dagster.yaml'}: SQLite storage, run queue limits, telemetry off "
              f"(it had none; edit it freely, it is never overwritten)")
    print(f"Dagster instance: DAGSTER_HOME={home}")
    # SIGTERM (a scheduler, `kill`) unwinds like Ctrl-C: the runs this pipeline has in flight are canceled.
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    with open_instance() as instance:  # a storage fault: one line naming DAGSTER_HOME, before any work
        runs = None if env is None else LaunchedRuns(instance, env, cfg.data_dir)
        try:
            summary = run_pipeline(cfg, instance, stale_only=args.stale_only, through=args.through, runs=runs,
                                   verify=args.verify)
        except PipelineFailed as e:
            _print_summary(e.summary)
            raise
        except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM above: the runs in flight were canceled (runner)
            raise Gpt2TrainError(f"stopped by {e or 'SIGINT'}; the runs it had in flight were canceled: "
                                 f"`gpt2train pipeline --stale-only` goes on from what was materialized "
                                 f"(training from its last complete checkpoint)") from None
        finally:
            if runs is not None:
                runs.close()
    _print_summary(summary)
    print(f"shards: {shards_dir(cfg.data_dir)}")
    if args.through == "evals":
        for report in summary.reports:
            print(f"eval report: {Path(report) / 'report.md'}")
        if (summary_dir(cfg.data_dir) / "summary.md").exists():
            print(f"eval trend: {summary_dir(cfg.data_dir) / 'summary.md'}")


def _raise_keyboard_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def build_parser() -> argparse.ArgumentParser:
    ap = library_cli.build_parser()
    add_eval_command(ap)
    p = ap.subcommands.add_parser("pipeline", help="run the Dagster pipeline in the instance at DAGSTER_HOME")
    library_cli.add_config_args(p)
    p.add_argument("--stale-only", action="store_true", help="only stale or missing (asset, partition) pairs")
    p.add_argument("--verify", action="store_true",
                   help="with --stale-only: re-hash every artifact it would skip (default: check that its files are "
                        "there, at their recorded sizes)")
    p.add_argument("--dry-run", action="store_true",
                   help="with --stale-only: print what it would run now and why, and run nothing (no Dagster run; "
                        "nothing written to the instance)")
    p.add_argument("--through", choices=("data", "training", "evals"), default="evals",
                   help="last stage to run (default: evals, the whole chain)")
    p.add_argument("--in-process", action="store_true",
                   help="execute every run inside this process, one by one, instead of submitting them to the "
                        "instance's run queue (for a debugger or a profiler)")
    p.set_defaults(func=cmd_pipeline)
    return ap


def main(argv: list[str] | None = None) -> int:
    return library_cli.main(argv, build_parser())


if __name__ == "__main__":
    raise SystemExit(main())
