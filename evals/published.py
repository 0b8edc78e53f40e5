"""The published GPT-2 / GPT-3 figures as the eval code reads them (evals/report.py, evals/tasks.py), and
which published val loss may stand beside a checkpoint's.

The table itself is gpt2train/published.py: training.png (gpt2train/training/plots.py) draws some of
its figures, and the library imports nothing above it.
"""

from __future__ import annotations

from typing import Any

from gpt2train.published import (NOMINAL_PARAMS, VAL_LOSS_DATASETS, baseline_lines, published_baselines,
                                 published_size)

__all__ = ["NOMINAL_PARAMS", "VAL_LOSS_DATASETS", "baseline_lines", "published_baselines", "published_size",
           "same_val_data", "val_loss_left_out"]


def same_val_data(figure: str, corpus: dict[str, Any] | None) -> bool:
    """Whether the published val loss `figure` was measured on the dataset the checkpoint's val tokens are
    (`corpus`: gpt2train/data/identity.py CorpusIdentity as a dict; None: unknown)."""
    return corpus is not None and corpus.get("dataset") is not None and \
        VAL_LOSS_DATASETS.get(figure) == corpus["dataset"]


def val_loss_left_out(published: list[str], corpus: dict[str, Any] | None) -> str | None:
    """One line saying why none of the `published` val losses (figure names) stands beside the checkpoint's,
    when none does; None when one does, or there is none to show."""
    if not published or any(same_val_data(k, corpus) for k in published):
        return None
    on = " and ".join(sorted({VAL_LOSS_DATASETS[k] for k in published if k in VAL_LOSS_DATASETS}))
    if corpus is None:
        why = "what its val tokens are is unknown (the checkpoint's state.json is gone or names no corpus)"
    elif corpus.get("dataset") is None:
        why = f"this checkpoint's val tokens are {corpus['label']} ({corpus['why']})"
    else:
        why = f"this checkpoint's val tokens come from {corpus['label']}"
    return (f"No published val loss beside this one: GPT-2's were measured on {on}, and {why}. A loss measured "
            f"on other text is not comparable.")
