"""Training curves as a PNG: train / val loss and in-loop HellaSwag against step (llm.c's vislog)."""

from __future__ import annotations

from pathlib import Path

from gpt2train.training.runs import read_metrics_file


def plot_training(metrics_path: str | Path, out_png: str | Path, title: str = "") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_metrics_file(metrics_path)
    train = [(r["step"], r["loss"]) for r in records if "loss" in r]
    val = [(r["step"], r["val_loss"]) for r in records if "val_loss" in r]
    hella = [(r["step"], r["hellaswag_acc_norm"]) for r in records if "hellaswag_acc_norm" in r]
    fig, axes = plt.subplots(1, 2 if hella else 1, figsize=(12 if hella else 7, 4.5), squeeze=False)
    ax = axes[0][0]
    if train:
        ax.plot(*zip(*train), label="train loss", lw=1)
    if val:
        ax.plot(*zip(*val), "o-", label="val loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend()
    ax.grid(alpha=0.3)
    if hella:
        ax2 = axes[0][1]
        ax2.plot(*zip(*hella), "o-", color="C2", label="HellaSwag acc_norm (llm.c scorer)")
        ax2.set_xlabel("step")
        ax2.legend()
        ax2.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    out_png = Path(out_png)
    tmp = out_png.with_name(f".{out_png.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    tmp.replace(out_png)
    return out_png
