"""Running z-scores over a window, for llm.c's update skipping (`-sl`, `-sg`; llmc/outlier_detector.h)."""

from __future__ import annotations

import math
from collections import deque

WINDOW = 128


class OutlierDetector:
    """z-score of each new value against the previous `window` values (nan until the window is full).
    `last_z` is the latest `update`'s: what the trainer's log names when an outlier skipped an update."""

    def __init__(self, window: int | None = None):
        self.window = WINDOW if window is None else window  # read when built: a test may shorten WINDOW
        self.values: deque[float] = deque(maxlen=self.window)
        self.last_z = float("nan")

    def update(self, x: float) -> float:
        z = float("nan")
        if len(self.values) == self.window:
            mean = sum(self.values) / self.window
            std = math.sqrt(sum((v - mean) ** 2 for v in self.values) / self.window)
            z = (x - mean) / std if std > 0 else 0.0
        self.values.append(x)
        self.last_z = z
        return z

    def state_dict(self) -> dict:
        return {"window": self.window, "values": list(self.values)}

    def load_state_dict(self, state: dict) -> None:
        self.window = state["window"]
        self.values = deque(state["values"], maxlen=self.window)
