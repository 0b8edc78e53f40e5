"""The learning-rate schedules of llm.c's train_gpt2.cu (`-q`, `-u`, `-k`)."""

from __future__ import annotations

import math

from gpt2train.config import TrainConfig


def learning_rate(step: int, t: TrainConfig, max_steps: int) -> float:
    """llm.c's schedules: linear warmup to the peak, then cosine / linear / constant / wsd decay
    to `final_lr_frac` of the peak (wsd: constant, then linear decay over the last 20%)."""
    peak, final = t.learning_rate, t.learning_rate * t.final_lr_frac
    if step < t.warmup_steps:
        return peak * (step + 1) / t.warmup_steps
    if t.lr_schedule == "constant":
        return peak
    progress = (step - t.warmup_steps) / max(1, max_steps - t.warmup_steps)
    if t.lr_schedule == "cosine":
        return final + (peak - final) * 0.5 * (1.0 + math.cos(math.pi * progress))
    if t.lr_schedule == "linear":
        return peak - (peak - final) * progress
    decay_start = 0.8  # wsd
    return peak if progress < decay_start else peak - (peak - final) * (progress - decay_start) / (1 - decay_start)
