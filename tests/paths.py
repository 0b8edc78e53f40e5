"""Where the tests find the checkout and ../shared (read in place, never copied into the repo)."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
EDU_MINI = SHARED / "data" / "edu-mini"
TIKTOKEN_DIR = SHARED / "tiktoken"
HELLASWAG = SHARED / "data" / "hellaswag-format" / "invented_val.jsonl"  # the invented HellaSwag-schema file
BASELINES = SHARED / "data" / "published_baselines.json"
