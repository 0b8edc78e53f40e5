"""Shared fixtures: the offline tokenizer cache and the local FineWeb-Edu mirror in ../shared."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
EDU_MINI = SHARED / "data" / "edu-mini"
TIKTOKEN_DIR = SHARED / "tiktoken"
HELLASWAG = SHARED / "data" / "hellaswag-format" / "invented_val.jsonl"  # the invented HellaSwag-schema file

# Set before any test imports tiktoken; offline, tiktoken finds GPT-2's files here.
os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(TIKTOKEN_DIR))
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


@pytest.fixture(scope="session")
def edu_mini() -> Path:
    if not EDU_MINI.is_dir():
        pytest.fail(f"{EDU_MINI} is missing: tests read the local corpus mirror from ../shared")
    return EDU_MINI


@pytest.fixture
def tiny_cfg(tmp_path, edu_mini):
    """The `tiny` preset pointed at edu-mini, writing into a fresh tmp data dir."""
    from gpt2train.config import load_config

    return load_config("tiny", overrides=[f"data_dir={tmp_path / 'data'}", f"corpus.source={edu_mini}"])
os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")


@pytest.fixture(scope="session")
def tiny_shards(tmp_path_factory, edu_mini) -> Path:
    """A data dir holding small shards of edu-mini (60k tokens each: 1 val and 11 train, with sidecars), made once."""
    from gpt2train.config import load_config
    from gpt2train.data.stage import prepare

    data = tmp_path_factory.mktemp("tiny-shards")
    cfg = load_config("tiny", [f"data_dir={data}", f"corpus.source={edu_mini}", "corpus.max_documents_per_file=40",
                               "shards.shard_size=60000"])
    prepare(cfg, data / "shards", progress=False)
    return data


@pytest.fixture
def instance(tmp_path):
    """A SQLite Dagster instance in a temp DAGSTER_HOME."""
    import dagster as dg

    home = tmp_path / "dagster_home"
    home.mkdir()
    with dg.DagsterInstance.local_temp(str(home)) as inst:
        yield inst


@pytest.fixture
def small_corpus(tmp_path, edu_mini):
    """Two of edu-mini's files in a folder of our own (so a test can add the third)."""
    import shutil

    root = tmp_path / "corpus" / "sample" / "10BT"
    root.mkdir(parents=True)
    for name in ("000_00000.parquet", "001_00000.parquet"):
        shutil.copyfile(edu_mini / "sample" / "10BT" / name, root / name)
    return tmp_path / "corpus"
