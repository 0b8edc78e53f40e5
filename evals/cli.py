"""`gpt2train eval`: any Hugging Face GPT-2 (a directory or a Hub id) scored with the harness and tasks
of the eval reports, e.g. OpenAI's GPT-2 as a reference row (evals/reference.py).

    gpt2train eval ./gpt2 --out reports/gpt2 --set evals.limit=100
    gpt2train eval hf:openai-community/gpt2 --out reports/gpt2 --set evals.limit=100
    gpt2train eval data/exports/<run>@step_00000040 --out reports/mine

One of gpt2train's own exports (its lineage.json says `hf_export`) is scored as the `eval_report` asset
scores it: its lineage is checked and read, so the report names its step, run and checkpoint and shows
the val loss and HellaSwag training logged for it. Any other directory is a reference model.

Here and not in gpt2train/cli.py because the library imports nothing above it; the console script
(pipelines/cli.py) adds this command to the library's, as it adds `pipeline`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from gpt2train.cli import add_config_args, load_from_args
from gpt2train.layout import LINEAGE_FILE


def cmd_eval(args: argparse.Namespace) -> None:
    from evals.device import eval_device
    from evals.runner import evaluate_export
    from gpt2train.hub_models import HUB_PREFIX, is_hub_model
    from gpt2train.weights import local_source

    cfg = load_from_args(args)
    source = local_source(args.source)  # a Hub id hf:<owner>/<name>: its cached snapshot
    label = args.label or (args.source.removeprefix(HUB_PREFIX) if is_hub_model(args.source) else source.name)
    ours = not is_hub_model(args.source) and is_gpt2train_export(source)
    device = eval_device(cfg)  # auto: never a GPU a training run of cfg's data dir is using on this host
    print(f"# eval device {device.device}: {device.reason}", file=sys.stderr)
    report = evaluate_export(source, args.out, cfg.evals, model_label=label, reference=not ours, device=device)
    print(f"eval report: {report.report_dir / 'report.md'}")
    for task, metrics in report.metrics.items():
        shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float) and "stderr" not in k)
        print(f"  {task}: {shown}")


def is_gpt2train_export(folder: Path) -> bool:
    """Whether `folder` is one of gpt2train's exports: its lineage.json is an hf_export sidecar. Whether
    that lineage is true (the weights it records, the checkpoint it names) evaluate_export checks."""
    try:
        lineage = json.loads((folder / LINEAGE_FILE).read_text())
    except (OSError, ValueError):  # none, unreadable or not JSON: not ours, scored as a reference model
        return False
    return isinstance(lineage, dict) and lineage.get("artifact") == "hf_export"


def add_eval_command(ap: argparse.ArgumentParser) -> None:
    """Add `eval` to the library's parser (gpt2train/cli.py build_parser)."""
    p = ap.subcommands.add_parser("eval", help="score any Hugging Face GPT-2 directory with the eval reports' "
                                               "harness and tasks (evals.*), e.g. OpenAI's GPT-2 as a reference")
    add_config_args(p)
    p.add_argument("source", help="a Hugging Face GPT-2 directory (save_pretrained, or an export) or a Hub id "
                                  "hf:<owner>/<name>[@revision], e.g. hf:openai-community/gpt2")
    p.add_argument("--out", required=True, help="the report directory (replaced atomically)")
    p.add_argument("--label", help="the model's name in the report (default: the directory's name, or the Hub id)")
    p.set_defaults(func=cmd_eval)
