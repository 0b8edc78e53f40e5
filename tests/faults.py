"""Fault injection helpers shared by the tests."""

from __future__ import annotations

import errno


class FullDiskFile:
    """Wraps a real file; writes fail with ENOSPC once `budget` bytes were written (a full disk)."""

    def __init__(self, f, budget: int):
        self._f, self.budget = f, budget

    def write(self, data):
        if len(data) > self.budget:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.budget -= len(data)
        return self._f.write(data)

    def __getattr__(self, name):
        return getattr(self._f, name)
