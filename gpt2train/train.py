"""The training command: `gpt2train train` and `python -m gpt2train.train` are this one.

    gpt2train train --config tiny                                  # one process
    torchrun --nproc_per_node=2 -m gpt2train.train --config tiny   # DDP (gloo on CPU, NCCL on GPU)
    python -m gpt2train.train --config gpt2_124m -b 32 -x 2000     # llm.c's flags (gpt2train/training/llmc.py)

On start it resumes from the newest complete checkpoint of its run directory. The loop itself is
gpt2train/training/loop.py; this module only reads the command line.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import os
import sys
from pathlib import Path

from gpt2train.config import load_config
from gpt2train.errors import Gpt2TrainError
from gpt2train.training.llmc import llmc_args_to_overrides


def add_train_args(ap: argparse.ArgumentParser) -> None:
    """The training command's own flags (llm.c's are taken out of the command line first)."""
    ap.add_argument("--help", action="help", help="show this help (-h is llm.c's HellaSwag flag)")
    ap.add_argument("--config", default="tiny", help="a shipped preset (gpt2train/configs/*.yaml) or a YAML path; default: tiny")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                    help="override one config value; repeatable (e.g. --set train.max_steps=100)")
    ap.add_argument("--kernels", help="hot-path ops (train.kernels): auto = Triton on CUDA, PyTorch elsewhere")


def parse_train_args(ap: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """`argv` parsed into `config` and `overrides`: llm.c's flags first, then --set, then --kernels."""
    rest, llmc_overrides = llmc_args_to_overrides(argv)
    args = ap.parse_args(rest)
    args.overrides = llmc_overrides + args.overrides + ([f"train.kernels={args.kernels}"] if args.kernels else [])
    return args


def run(args: argparse.Namespace) -> None:
    from gpt2train.training.loop import train  # imports torch: not for `gpt2train --help`

    summary = train(load_config(args.config, args.overrides))
    if os.environ.get("RANK", "0") == "0":  # once per job, not once per rank
        print(json.dumps(dataclasses.asdict(summary)))


def print_error_once(error: Exception) -> None:
    """`gpt2train train: error: ...` on stderr, once per torchrun agent rather than once per rank: a config
    or data error is raised by every rank alike. The ranks of one agent share its attempt folder
    (TORCHELASTIC_ERROR_FILE is `<attempt>/<local rank>/error.json`): the first to create a marker for the
    message prints it. A message only one rank raised is printed by that rank; outside torchrun, always."""
    message = f"gpt2train train: error: {error}"
    error_file = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if error_file:
        marker = Path(error_file).parent.parent / f"reported-{hashlib.sha256(message.encode()).hexdigest()[:16]}"
        try:
            os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        except FileExistsError:
            return  # another rank of this agent printed it
        except OSError:
            pass  # no marker possible (the folder is gone): better twice than never
    print(message, file=sys.stderr)


def main(argv: list[str] | None = None, prog: str = "gpt2train.train") -> int:
    ap = argparse.ArgumentParser(prog=prog, description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter, add_help=False)
    add_train_args(ap)
    args = parse_train_args(ap, sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    try:
        run(args)
    except Gpt2TrainError as e:
        print_error_once(e)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
