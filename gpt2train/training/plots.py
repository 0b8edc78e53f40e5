"""Training curves as a PNG (llm.c's vislog): train / val loss, in-loop HellaSwag, the learning rate
and the gradient norm against step, one panel each."""

from __future__ import annotations

from pathlib import Path

from gpt2train.training.runs import read_metrics_file


def plot_training(metrics_path: str | Path, out_png: str | Path, title: str = "") -> Path:
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
    for panel in axes.flat:
        panel.set_xlabel("step")
        if panel.lines:
            panel.legend()
        panel.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    out_png = Path(out_png)
    tmp = out_png.with_name(f".{out_png.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(out_png)
    return out_png
