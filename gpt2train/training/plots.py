"""Training curves as PNGs, after llm.c's dev/vislog.ipynb.

    plot_training(run / "metrics.jsonl", run / "training.png", title, shape=(12, 768))
    plot_loss_curve(run / "metrics.jsonl", report / "loss_curve.png", step=40)

`plot_training` (the trainer redraws it at every eval): train / val loss, in-loop HellaSwag, the
learning rate and the gradient norm against step, one panel each; with the model's `shape`
(n_layer, n_embd), the loss and HellaSwag panels also get vislog's horizontal lines for OpenAI's
GPT-2 and GPT-3 at that size (gpt2train/published.py `baseline_lines`: only for GPT-2's published
shapes, each labelled with its size and source). `plot_loss_curve` is the eval report's loss curve
(evals/report_extras.py): train and val loss up to the report's step, with a marker at that step.

Both are written under a temp name and renamed, and without matplotlib's `Software` stamp, so the
same records give the same bytes (a report's lineage.json hashes its PNGs).
"""

from __future__ import annotations

from pathlib import Path

from gpt2train.published import baseline_lines
from gpt2train.training.runs import read_metrics_file

# PNG metadata: matplotlib otherwise writes its own version into every file.
PNG_METADATA = {"Software": None}


def plot_training(metrics_path: str | Path, out_png: str | Path, title: str = "",
                  shape: tuple[int, int] | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_metrics_file(metrics_path)

    def series(key: str) -> list[tuple[int, float]]:
        return [(r["step"], r[key]) for r in records if r.get(key) is not None]

    train, val, hella = series("loss"), series("val_loss"), series("hellaswag_acc_norm")
    fig, axes = plt.subplots(2, 2, figsize=(12, 8), squeeze=False)
    ax = axes[0][0]
    if train:
        ax.plot(*zip(*train), label="train loss", lw=1)
    if val:
        ax.plot(*zip(*val), "o-", label="val loss")
    ax.set_ylabel("loss")
    panels = [(axes[0][1], hella, "o-", "C2", "HellaSwag acc_norm (llm.c scorer)", None),
              (axes[1][0], series("lr"), "-", "C3", "learning rate", None),
              (axes[1][1], series("norm"), "-", "C4", "gradient norm (before clipping)", "log")]
    for panel, points, style, color, label, yscale in panels:
        if points:
            panel.plot(*zip(*points), style, color=color, lw=1, label=label)
            if yscale:
                panel.set_yscale(yscale)
        else:
            panel.text(0.5, 0.5, f"no {label} logged yet", ha="center", va="center", transform=panel.transAxes)
    # vislog's baselines: dashed horizontal lines, one colour per published model.
    by_panel = {"loss": axes[0][0], "hellaswag": axes[0][1]}
    for i, line in enumerate(baseline_lines(*shape) if shape else []):
        by_panel[line.panel].axhline(line.value, ls="--", lw=1, color=f"C{5 + i}",
                                     label=f"{line.label}: {line.value:g}")
    for panel in axes.flat:
        panel.set_xlabel("step")
        if panel.lines:
            panel.legend(fontsize=8)
        panel.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, Path(out_png))


def plot_loss_curve(metrics_path: str | Path, out_png: str | Path, step: int) -> Path | None:
    """Train and val loss of the records at or before `step`, a marker at `step`; None (nothing
    written) when no loss is logged by then."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [r for r in read_metrics_file(metrics_path) if isinstance(r.get("step"), int) and r["step"] <= step]
    train = sorted({r["step"]: r["loss"] for r in records if r.get("loss") is not None}.items())
    val = sorted({r["step"]: r["val_loss"] for r in records if r.get("val_loss") is not None}.items())
    if not train and not val:
        return None
    fig, ax = plt.subplots(figsize=(8, 4.5))
    if train:
        ax.plot(*zip(*train), lw=1, label="train loss")
    if val:
        ax.plot(*zip(*val), "o-", color="C1", label="val loss (in-loop)")
    ax.axvline(step, color="k", ls=":", lw=1, label=f"this checkpoint (step {step})")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(f"training loss up to step {step}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, Path(out_png))


def _save(fig, out_png: Path) -> Path:
    import gc

    import matplotlib.pyplot as plt

    # The temp name ends in .png so matplotlib picks the format; renamed only when complete.
    tmp = out_png.with_name(f".{out_png.name}.tmp.png")
    try:
        fig.savefig(tmp, dpi=100, metadata=PNG_METADATA)
        tmp.replace(out_png)
    finally:
        plt.close(fig)
        # A figure is a web of reference cycles that only the cyclic collector frees: left to its schedule,
        # the trainer's redraws held ~7 MB more after each one (measured over 10 redraws, until a full pass).
        gc.collect()
        tmp.unlink(missing_ok=True)
    return out_png
