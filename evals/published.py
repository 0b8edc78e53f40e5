"""The published GPT-2 / GPT-3 figures as the eval code reads them (evals/report.py, evals/tasks.py).

The table itself is gpt2train/published.py: training.png (gpt2train/training/plots.py) draws some of
its figures, and the library imports nothing above it.
"""

from __future__ import annotations

from gpt2train.published import NOMINAL_PARAMS, baseline_lines, published_baselines, published_size

__all__ = ["NOMINAL_PARAMS", "baseline_lines", "published_baselines", "published_size"]
