"""Scores across checkpoints: a table and a plot of every eval report's metrics against step.

    from evals.trend import write_trend
    trend = write_trend(sorted(Path("data/evals").glob("*")), Path("data/evals_trend"))
    print(trend.markdown)

Reads each report's lineage.json (evals/runner.py writes it: step, run tag, metrics, and the
in-loop val loss / HellaSwag training logged for that step) and writes into `out_dir`:
`summary.json`, `summary.md` (run, step, each task metric, in-loop numbers) and `trend.png`
(metric vs step, one line per run directory and metric; like llm.c's dev/vislog.ipynb). A folder
without a lineage.json (a report that was never finished) is skipped with a warning.

A report draws the same plot of its own run's earlier reports for its report.html (`plot_trend`,
evals/report_extras.py).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpt2train.errors import DataError
from gpt2train.fileio import atomic_output, read_json, write_json_atomic
from gpt2train.layout import LINEAGE_FILE
from gpt2train.locks import writer_lock

log = logging.getLogger(__name__)

IN_LOOP_COLUMNS = (("val_loss", "in-loop val loss"), ("hellaswag_acc_norm", "in-loop HellaSwag (llm.c)"))


@dataclass
class Trend:
    out_dir: Path
    markdown: str
    rows: list[dict[str, Any]]
    """One per report, sorted by (run, step): report_dir, run, run_tag, step, metrics, in_loop."""
    paths: dict[str, Path] = field(default_factory=dict)
    """summary.json, summary.md, trend.png."""
    skipped: list[str] = field(default_factory=list)


def read_reports(report_dirs: list[Path]) -> tuple[list[dict[str, Any]], list[str]]:
    """(rows, skipped): a row per report dir holding a readable eval_report lineage.json."""
    rows, skipped = [], []
    for d in map(Path, report_dirs):
        sidecar = d / LINEAGE_FILE
        if not sidecar.is_file():
            log.warning("trend: %s has no lineage.json (not a finished eval report); skipped", d)
            skipped.append(str(d))
            continue
        try:
            lin = read_json(sidecar, "eval report lineage")
        except DataError as e:
            log.warning("trend: %s; skipped", e)
            skipped.append(str(d))
            continue
        if not isinstance(lin, dict) or lin.get("artifact") != "eval_report":
            log.warning("trend: %s is not an eval report's lineage; skipped", sidecar)
            skipped.append(str(d))
            continue
        rows.append(report_row(lin, d))
    rows.sort(key=lambda r: (r["run"], r["step"] if r["step"] is not None else -1))
    return rows, skipped


def report_row(lin: dict[str, Any], report_dir: Path) -> dict[str, Any]:
    """The summary's row of one report, from its lineage.json."""
    ck = lin.get("checkpoint") or {}
    # A line per run directory (the checkpoint key's `<run>@` part): two directories that hold the
    # same run tag (a run trained again elsewhere) are two runs, never one zig-zag line.
    run = ck["key"].split("@", 1)[0] if ck.get("key") else ck.get("run_tag") or "?"
    row = {"report_dir": str(report_dir), "run": run, "run_tag": ck.get("run_tag") or "?",
           "step": lin.get("step", ck.get("step")), "limit": (lin.get("config", {}).get("evals") or {}).get("limit"),
           "metrics": lin.get("metrics") or {}, "in_loop": lin.get("in_loop") or {}}
    # The reference models' scores the report showed (measured on its data and settings: evals/reference.py).
    refs = {r["label"]: {t: m["metrics"] for t, m in r.get("tasks", {}).items() if "metrics" in m}
            for r in lin.get("references") or []}
    if any(refs.values()):  # only then: a summary of reports without references stays as it was
        row["references"] = {label: tasks for label, tasks in refs.items() if tasks}
    return row


def reference_lines(rows: list[dict[str, Any]]) -> list[tuple[str, str, str, float]]:
    """(label, task, metric, value) of every reference score the reports showed, once each: a horizontal
    line in trend.png (a reference measured again gives a second line)."""
    return sorted({(label, task, metric, value) for r in rows for label, tasks in r.get("references", {}).items()
                   for task, ms in tasks.items() for metric, value in ms.items()
                   if not metric.endswith("_stderr") and "_stderr," not in metric})


def plot_trend(rows: list[dict[str, Any]], out_png: Path) -> None:
    """trend.png of `rows` (as read_reports gives them): each metric against step, a line per run."""
    _plot(rows, _metric_columns(rows), out_png)


def write_trend(report_dirs: list[Path], out_dir: Path) -> Trend:
    """Write summary.json, summary.md and trend.png for the reports in `report_dirs` into `out_dir`,
    under its writer lock."""
    out_dir = Path(out_dir)
    with writer_lock(out_dir, "eval summary"):
        return _write_trend(report_dirs, out_dir)


def _write_trend(report_dirs: list[Path], out_dir: Path) -> Trend:
    rows, skipped = read_reports(report_dirs)
    columns = _metric_columns(rows)
    markdown = _markdown(rows, columns, skipped)
    paths = {"summary.json": out_dir / "summary.json", "summary.md": out_dir / "summary.md",
             "trend.png": out_dir / "trend.png"}
    write_json_atomic(paths["summary.json"], {"reports": rows, "skipped": skipped,
                                              "columns": [list(c) for c in columns]})
    with atomic_output(paths["summary.md"], "w") as f:
        f.write(markdown)
    _plot(rows, columns, paths["trend.png"])
    return Trend(out_dir=out_dir, markdown=markdown, rows=rows, paths=paths, skipped=skipped)


def _metric_columns(rows: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """Every (task, metric) some report has, stderr columns left out (shown as ± in the cells)."""
    cols = {(task, metric) for r in rows for task, ms in r["metrics"].items() for metric in ms
            if not metric.endswith("_stderr") and "_stderr," not in metric}
    return sorted(cols)


def _stderr_key(metric: str) -> str:
    return metric.replace(",", "_stderr,", 1) if "," in metric else metric + "_stderr"


def _markdown(rows: list[dict[str, Any]], columns: list[tuple[str, str]], skipped: list[str]) -> str:
    header = ["run", "step"] + [f"{t} {m}" for t, m in columns] + [label for _, label in IN_LOOP_COLUMNS]
    lines = ["# Eval scores by checkpoint", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        cells = [r["run"], str(r["step"])]
        for task, metric in columns:
            ms = r["metrics"].get(task, {})
            if metric not in ms:
                cells.append("–")
                continue
            se = ms.get(_stderr_key(metric))
            cells.append(f"{ms[metric]:.4f}" + (f" ± {se:.4f}" if se is not None else ""))
        for key, _ in IN_LOOP_COLUMNS:
            rec = r["in_loop"].get(key)
            cells.append("–" if not rec else f"{rec['value']:.4f}" + ("" if rec["step"] == r["step"]
                                                                       else f" (step {rec['step']})"))
        lines.append("| " + " | ".join(cells) + " |")
    limited = sorted({r["limit"] for r in rows if r["limit"] is not None})
    refs = reference_lines(rows)
    if refs:
        lines += ["", "Reference models (measured here, same harness, same data and settings): "
                  + "; ".join(f"{label} {task} {metric} {value:.4f}" for label, task, metric, value in refs)]
    if limited:
        lines += ["", f"Some reports scored only the first {', '.join(map(str, limited))} items of each task "
                      f"(evals.limit); their scores are not comparable to full-set figures."]
    if skipped:
        lines += ["", "Skipped (no eval report lineage.json): " + ", ".join(skipped)]
    return "\n".join(lines) + "\n"


def _in_loop_points(rows: list[dict[str, Any]], key: str) -> list[tuple[int, float]]:
    """In-loop values at the step training logged them (a report may show an earlier step's), once each."""
    return sorted({(r["in_loop"][key]["step"], r["in_loop"][key]["value"]) for r in rows if key in r["in_loop"]})


def _plot(rows: list[dict[str, Any]], columns: list[tuple[str, str]], out_png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = sorted({r["run"] for r in rows})
    has_loss = any("val_loss" in r["in_loop"] for r in rows)
    fig, axes = plt.subplots(1, 2 if has_loss else 1, figsize=(12 if has_loss else 7, 4.5), squeeze=False)
    ax = axes[0][0]
    for run in runs:
        mine = [r for r in rows if r["run"] == run and r["step"] is not None]
        for task, metric in columns:
            pts = [(r["step"], r["metrics"][task][metric]) for r in mine if metric in r["metrics"].get(task, {})]
            if pts:
                ax.plot(*zip(*pts), "o-", label=f"{run} {task} {metric}")
        pts = _in_loop_points(mine, "hellaswag_acc_norm")
        if pts:
            ax.plot(*zip(*pts), "s--", label=f"{run} in-loop HellaSwag (llm.c)")
    for label, task, metric, value in reference_lines(rows):
        ax.axhline(value, linestyle=":", label=f"{label} {task} {metric} (measured here)")
    ax.set_xlabel("step")
    ax.set_ylabel("score")
    ax.set_title("harness metrics (lm-eval)")
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=8)
    if has_loss:
        ax2 = axes[0][1]
        for run in runs:
            pts = _in_loop_points([r for r in rows if r["run"] == run], "val_loss")
            if pts:
                ax2.plot(*zip(*pts), "o-", label=f"{run} val loss")
        ax2.set_xlabel("step")
        ax2.set_title("in-loop val loss")
        ax2.grid(alpha=0.3)
        ax2.legend(fontsize=8)
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    # Temp name ends in .png so matplotlib picks the format; renamed only when complete.
    tmp = out_png.with_name(f".{out_png.name}.tmp-{os.getpid()}.png")
    try:
        fig.savefig(tmp, dpi=100, metadata={"Software": None})  # no matplotlib version: same rows, same bytes
        os.replace(tmp, out_png)
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)
