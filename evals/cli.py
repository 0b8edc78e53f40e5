"""`gpt2train eval`: any Hugging Face GPT-2 (a directory or a Hub id) scored with the harness and tasks
of the eval reports, e.g. OpenAI's GPT-2 as a reference row (evals/reference.py).

    gpt2train eval ./gpt2 --out reports/gpt2 --set evals.limit=100
    gpt2train eval hf:openai-community/gpt2 --out reports/gpt2 --set evals.limit=100

Here and not in gpt2train/cli.py because the library imports nothing above it; the console script
(pipelines/cli.py) adds this command to the library's, as it adds `pipeline`.
"""

from __future__ import annotations

import argparse

from gpt2train.cli import add_config_args, load_from_args


def cmd_eval(args: argparse.Namespace) -> None:
    from evals.runner import evaluate_export
    from gpt2train.hub_models import HUB_PREFIX, is_hub_model
    from gpt2train.weights import local_source

    cfg = load_from_args(args)
    source = local_source(args.source)  # a Hub id hf:<owner>/<name>: its cached snapshot
    label = args.label or (args.source.removeprefix(HUB_PREFIX) if is_hub_model(args.source) else source.name)
    report = evaluate_export(source, args.out, cfg.evals, model_label=label, reference=True)
    print(f"eval report: {report.report_dir / 'report.md'}")
    for task, metrics in report.metrics.items():
        shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float) and "stderr" not in k)
        print(f"  {task}: {shown}")


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
