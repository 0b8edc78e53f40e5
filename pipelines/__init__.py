"""Dagster wiring: `definitions.py` (everything in one hop), `sensors.py`, `staleness.py`, `runner.py`."""
