"""Experiment trackers: TensorBoard and Weights & Biases, fed the numbers metrics.jsonl holds.

    trackers = start_trackers(cfg, run, start_step)   # train.loggers, on rank 0 (loop.py)
    trackers.log(step, {"loss": 3.2, "lr": 6e-4})     # every tracker, at `step`
    trackers.close()
    log_report_scores(run, step, report.metrics)      # an eval report's scores at its step (evals/runner.py)

Off by default (`train.loggers: []`); each package is imported only when configured (the `tracking`
extra: `pip install 'gpt2train[tracking]'`; gpt2train/config_checks.py checks it is installed).

Same numbers as metrics.jsonl: the loop's MetricsLog is a `TrackedMetricsLog`, so every record written
there (train steps, val loss, in-loop HellaSwag) goes to the trackers under the same names at the same
step; bools as 0/1, None left out. TensorBoard stores doubles (not its default float32), so a value read
back equals the JSON's. An eval report's scores go in as `eval/<task>/<metric>` at its checkpoint's step.

Files, all inside the run directory (gpt2train/layout.py), which lineage never hashes:
    tensorboard/     event files: one per process that logged (training, a resumed run, each report)
    wandb/           W&B's own folder (offline: offline-run-*/run-<id>.wandb; `wandb sync` uploads it)
    tracking.json    the loggers the run was last started with and its W&B run id, so that a resumed run
                     and an eval report log to the same W&B run

Resuming: metrics.jsonl drops what a crashed run logged after its checkpoint; TensorBoard does the same
through `purge_step`, and W&B takes `step` as every metric's x-axis (define_metric), so a value at an
earlier step than the run's last (a resumed run, a report written later) is kept, not dropped.

Secrets: the W&B run's config is the config tree (no credential is a config field); W&B's git capture,
code saving and console capture are off (a git remote URL may carry a token; the console is main.log's).
"""

from __future__ import annotations

import logging
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from gpt2train import layout
from gpt2train.config import Config, config_to_dict
from gpt2train.config_checks import check_loggers
from gpt2train.fileio import read_json, write_json_atomic
from gpt2train.training.runs import MetricsLog

log = logging.getLogger(__name__)

STEP_KEY = "step"  # W&B: the x-axis of every metric (as metrics.jsonl's "step": updates done)
DEFAULT_WANDB_PROJECT = "gpt2train"  # when WANDB_PROJECT is unset


class Tracker(Protocol):
    def log(self, step: int, values: dict[str, float]) -> None: ...
    def close(self, failed: bool) -> None: ...


class TensorBoardTracker:
    """Scalars into `<run>/tensorboard/` through torch.utils.tensorboard's SummaryWriter."""

    def __init__(self, log_dir: Path, purge_step: int | None = None):
        from torch.utils.tensorboard import SummaryWriter

        # purge_step: TensorBoard's readers drop the events of earlier files at steps >= it.
        self.writer = SummaryWriter(str(log_dir), purge_step=purge_step)

    def log(self, step: int, values: dict[str, float]) -> None:
        for name, value in values.items():
            # new_style + double_precision: a float64 tensor, so the value read back is the JSON's.
            self.writer.add_scalar(name, value, global_step=step, new_style=True, double_precision=True)

    def close(self, failed: bool) -> None:
        self.writer.close()


class WandbTracker:
    """One W&B run (resumed by its id), its files under `<run>/wandb/`. WANDB_MODE (offline), WANDB_PROJECT
    and WANDB_ENTITY are read from the environment, as W&B's own scripts do."""

    def __init__(self, run: Path, run_id: str, name: str, config: dict | None = None):
        import wandb

        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", DEFAULT_WANDB_PROJECT), id=run_id, name=name, dir=str(run),
            config=config, resume="allow",
            settings=wandb.Settings(console="off", disable_git=True, disable_code=True, save_code=False,
                                    silent=True))
        self.run.define_metric(STEP_KEY)
        self.run.define_metric("*", step_metric=STEP_KEY)

    def log(self, step: int, values: dict[str, float]) -> None:
        self.run.log({**values, STEP_KEY: step})

    def close(self, failed: bool) -> None:
        self.run.finish(exit_code=1 if failed else 0)


@dataclass
class Trackers:
    """The trackers one process logs to; none on ranks other than 0 or when train.loggers is empty.
    As a context manager it closes them, marking a W&B run failed when the block raised."""

    trackers: list[Tracker] = field(default_factory=list)

    def log(self, step: int, record: dict) -> None:
        values = scalars(record)
        if values:
            for tracker in self.trackers:
                tracker.log(step, values)

    def close(self, failed: bool = False) -> None:
        for tracker in self.trackers:
            tracker.close(failed)
        self.trackers = []

    def __enter__(self) -> Trackers:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(failed=exc_type is not None)


class TrackedMetricsLog(MetricsLog):
    """metrics.jsonl, every record also sent to the trackers: the same numbers at the same step."""

    def __init__(self, path: Path, writer: bool, trackers: Trackers):
        super().__init__(path, writer)
        self.trackers = trackers

    def write(self, record: dict) -> None:
        super().write(record)
        if self.writer:
            self.trackers.log(record["step"], record)


def scalars(record: dict) -> dict[str, float]:
    """The numbers of a metrics record as trackers take them: bools as 0/1; `step`, None and text left out."""
    return {k: int(v) if isinstance(v, bool) else v for k, v in record.items()
            if k != STEP_KEY and isinstance(v, (int, float))}


def start_trackers(cfg: Config, run: Path, start_step: int) -> Trackers:
    """The trackers of train.loggers for a run starting (or resuming) after `start_step` updates, and the
    run's tracking.json brought up to date. Call on rank 0 only."""
    record_path = run / layout.TRACKING_RECORD
    record = read_json(record_path, "tracking record") if record_path.exists() else {}
    loggers = list(cfg.train.loggers)
    if not loggers and not record:
        return Trackers()  # off: no file at all
    if "wandb" in loggers and not record.get("wandb_run_id"):
        record["wandb_run_id"] = secrets.token_hex(6)  # unique in a project; kept for every later resume
    record["loggers"] = loggers
    write_json_atomic(record_path, record)
    trackers = Trackers()
    try:
        if "tensorboard" in loggers:
            # As MetricsLog.start: a resumed run keeps steps <= start_step, a run from step 0 keeps none.
            # A run from step 0 records its start too: TensorBoard takes only a later start as a restart.
            purge_step = start_step + 1 if start_step > 0 else 0
            trackers.trackers.append(TensorBoardTracker(run / layout.TENSORBOARD_DIR, purge_step))
        if "wandb" in loggers:
            trackers.trackers.append(WandbTracker(run, record["wandb_run_id"], name=run.name,
                                                  config=config_to_dict(cfg)))
    except BaseException:
        trackers.close(failed=True)
        raise
    log.info("tracking to %s in %s", " and ".join(loggers), run)
    return trackers


def recorded_loggers(run: Path) -> list[str]:
    """The loggers `run` was last started with (its tracking.json); [] when it has none."""
    record_path = run / layout.TRACKING_RECORD
    return list(read_json(record_path, "tracking record").get("loggers", [])) if record_path.exists() else []


def check_report_trackers(run: Path) -> None:
    """Before an eval report is made: the trackers its run logs to are installed (one line if not)."""
    check_loggers(recorded_loggers(run), str(run / layout.TRACKING_RECORD))


def log_report_scores(run: Path, step: int, metrics: dict[str, dict]) -> None:
    """An eval report's scores (`{task: {metric: value}}`) into the trackers `run` logs to, at `step`
    (its checkpoint's): `eval/<task>/<metric>`. Nothing when the run has no loggers."""
    loggers = recorded_loggers(run)
    if not loggers:
        return
    values = {f"eval/{task}/{name}": v for task, scores in metrics.items() for name, v in scores.items()}
    trackers = Trackers()
    with trackers:
        if "tensorboard" in loggers:
            trackers.trackers.append(TensorBoardTracker(run / layout.TENSORBOARD_DIR))  # a new event file
        if "wandb" in loggers:
            record = read_json(run / layout.TRACKING_RECORD, "tracking record")
            trackers.trackers.append(WandbTracker(run, record["wandb_run_id"], name=run.name))
        trackers.log(step, values)
    log.info("eval scores at step %d logged to %s of %s", step, " and ".join(loggers), run)
