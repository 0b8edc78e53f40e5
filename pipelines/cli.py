"""The `gpt2train` console script: the library's CLI (gpt2train/cli.py) plus `pipeline`, the
one subcommand that needs Dagster, so the library stays free of Dagster imports.

    gpt2train pipeline --config tiny                 # the whole chain, in the instance at DAGSTER_HOME
    gpt2train pipeline --config tiny --stale-only    # only stale or missing (asset, partition) pairs
    gpt2train pipeline --config tiny --through data  # stop after the token shards
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from gpt2train import cli as library_cli
from gpt2train.layout import shards_dir, summary_dir


def _print_summary(summary) -> None:
    for asset, key in summary.ran:
        print(f"ran      {asset}{f' [{key}]' if key else ''}")
    for asset, key in summary.skipped:
        print(f"skipped  {asset}{f' [{key}]' if key else ''} (fresh)")
    for asset, key, _cause in summary.failed:
        print(f"FAILED   {asset}{f' [{key}]' if key else ''}")


# The dagster.yaml of an instance this command creates: Dagster's defaults (SQLite under DAGSTER_HOME),
# said explicitly, and its telemetry off, so that no banner interrupts the pipeline's output. An
# existing DAGSTER_HOME is used as it is.
NEW_INSTANCE_YAML = """\
# Written by `gpt2train pipeline` when it created this Dagster instance. Storage: SQLite files in
# this folder (Dagster's default); docs/deploy.md shows the Postgres storage of a deployment.
telemetry:
  enabled: false
"""


def create_instance_dir(home: Path) -> None:
    home.mkdir(parents=True)
    (home / "dagster.yaml").write_text(NEW_INSTANCE_YAML)


def cmd_pipeline(args: argparse.Namespace) -> None:
    import dagster as dg

    from pipelines.runner import PipelineFailed, run_pipeline

    cfg = library_cli.load_from_args(args)
    if not os.environ.get("DAGSTER_HOME"):
        os.environ["DAGSTER_HOME"] = str(Path("dagster_home").resolve())
    home = Path(os.environ["DAGSTER_HOME"])
    if not home.exists():
        create_instance_dir(home)
    print(f"Dagster instance: DAGSTER_HOME={home}")
    with dg.DagsterInstance.get() as instance:
        try:
            summary = run_pipeline(cfg, instance, stale_only=args.stale_only, through=args.through)
        except PipelineFailed as e:
            _print_summary(e.summary)
            raise
    _print_summary(summary)
    print(f"shards: {shards_dir(cfg.data_dir)}")
    if args.through == "evals":
        for report in summary.reports:
            print(f"eval report: {Path(report) / 'report.md'}")
        if (summary_dir(cfg.data_dir) / "summary.md").exists():
            print(f"eval trend: {summary_dir(cfg.data_dir) / 'summary.md'}")


def build_parser() -> argparse.ArgumentParser:
    ap = library_cli.build_parser()
    p = ap.subcommands.add_parser("pipeline", help="run the Dagster pipeline in the instance at DAGSTER_HOME")
    library_cli.add_config_args(p)
    p.add_argument("--stale-only", action="store_true", help="only stale or missing (asset, partition) pairs")
    p.add_argument("--through", choices=("data", "training", "evals"), default="evals",
                   help="last stage to run (default: evals, the whole chain)")
    p.set_defaults(func=cmd_pipeline)
    return ap


def main(argv: list[str] | None = None) -> int:
    return library_cli.main(argv, build_parser())


if __name__ == "__main__":
    raise SystemExit(main())
