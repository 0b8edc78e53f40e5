"""The trainer as a Dagster Pipes process: what the `training_run` asset launches under torchrun.

    torchrun --standalone --nproc_per_node=N -m pipelines.train_pipes --config RUN_DIR/config.yaml

Every rank inherits the Pipes environment (DAGSTER_PIPES_CONTEXT / _MESSAGES), but only rank 0
opens it: one writer of messages, and only rank 0 would receive `extras` anyway, so the config
comes as a command-line argument that every rank reads. Rank 0 streams the trainer's log into
the Dagster run, reports each checkpoint as it completes, and ends with the run's materialization
(metadata and data version from `gpt2train.training.runs.summarize_run`).

Without Pipes variables (run by hand) it trains as `python -m gpt2train.train` does.
"""

from __future__ import annotations

import argparse
import base64
import logging
import os
import sys
from pathlib import Path

from gpt2train.config import load_config
from gpt2train.errors import Gpt2TrainError
from gpt2train.fileio import atomic_output

PIPES_CONTEXT_ENV = "DAGSTER_PIPES_CONTEXT"
# The key of the custom Pipes message that reports a complete checkpoint (pipelines/training_client.py reads it).
CHECKPOINT_MESSAGE = "checkpoint"


class PipesLogHandler(logging.Handler):
    """Forwards the trainer's log records to the Dagster run's event log."""

    def __init__(self, pipes_log: logging.Logger):
        super().__init__(logging.INFO)
        self.pipes_log = pipes_log

    def emit(self, record: logging.LogRecord) -> None:
        self.pipes_log.log(record.levelno, record.getMessage())


def run_metadata(summary: dict) -> dict:
    """The training run's summary as Pipes metadata (typed, so the UI renders it)."""
    md: dict = {
        "run_tag": summary["run_tag"],
        "steps": {"raw_value": summary["steps"], "type": "int"},
        "run_dir": {"raw_value": summary["run_dir"], "type": "path"},
        "log": {"raw_value": summary["log"], "type": "path"},
        "checkpoints": {"raw_value": "\n".join(f"- `{c['key']}` ({c['path']}), sha256 `{c['model_sha256'][:16]}…`"
                                               for c in summary["checkpoints"]), "type": "md"},
        "code_version": summary["lineage"].get("code_version", ""),
        "git_commit": summary["lineage"].get("git_commit") or "",
        "shards": {"raw_value": "\n".join(f"- `{s['file']}` sha256 `{(s['sha256'] or '?')[:16]}…`"
                                          for s in summary["lineage"].get("train_shards", [])
                                          + summary["lineage"].get("val_shards", [])), "type": "md"},
    }
    for name in ("tokens", "final_train_loss", "final_val_loss", "final_hellaswag_acc_norm",
                 "tokens_per_second", "mfu"):
        if summary.get(name) is not None:
            md[name] = {"raw_value": summary[name], "type": "int" if name == "tokens" else "float"}
    if summary.get("plot"):
        png = base64.b64encode(Path(summary["plot"]).read_bytes()).decode()
        md["loss_curve"] = {"raw_value": f"![loss curve](data:image/png;base64,{png})", "type": "md"}
    return md


def write_text_atomic(path: Path, text: str) -> None:
    with atomic_output(path, "w") as f:
        f.write(text)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="pipelines.train_pipes", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True, help="the run's resolved config YAML")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    ap.add_argument("--error-file", type=Path, default=None,
                    help="where rank 0 writes a gpt2train error for the asset (the training_run asset passes it)")
    args = ap.parse_args(argv)
    # Here, not at the top: the Dagster side imports this module for CHECKPOINT_MESSAGE and has no use for torch.
    from gpt2train.train import print_error_once
    from gpt2train.training.loop import TRAINING_LOG, train
    from gpt2train.training.runs import checkpoint_info, summarize_run

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    cfg = load_config(args.config, args.overrides)
    if os.environ.get("RANK", "0") != "0" or PIPES_CONTEXT_ENV not in os.environ:
        try:
            train(cfg)
        except Gpt2TrainError as e:
            print_error_once(e)
            return 2
        return 0

    from dagster_pipes import open_dagster_pipes

    with open_dagster_pipes() as pipes:
        training_log = logging.getLogger(TRAINING_LOG)
        training_log.addHandler(PipesLogHandler(pipes.log))
        # Each line once: through Pipes into the Dagster run (whose console logger prints it), not
        # also on this process's stderr, which the Pipes client forwards to the same terminal.
        training_log.propagate = False

        def on_checkpoint(path: Path) -> None:
            info = checkpoint_info(path)
            pipes.report_custom_message({CHECKPOINT_MESSAGE: info.key, "path": str(info.path), "step": info.step,
                                         "model_sha256": info.model_sha256})

        try:
            trained = train(cfg, on_checkpoint=on_checkpoint)
        except Gpt2TrainError as e:
            # The asset reads this back: the Pipes client itself only knows the exit code.
            if args.error_file:
                write_text_atomic(args.error_file, f"{e}\n")
            pipes.log.error(f"training failed: {e}")
            print_error_once(e)
            return 2
        summary = summarize_run(trained.out_dir)
        pipes.report_asset_materialization(metadata=run_metadata(summary), data_version=summary["data_version"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
