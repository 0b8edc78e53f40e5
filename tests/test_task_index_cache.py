"""lm-eval's task index cached on disk between processes (evals/tasks.py `harness_task_manager`).

The index is built by the harness's own TaskIndex over real YAML files (a few here, in a temp folder:
the same code that indexes its ~14,000), written, read back and handed to a TaskManager; the cache
lives under the tests' own HF_HOME (tests/fixtures/environment.py), never the caller's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from evals import tasks as evals_tasks
from evals.tasks import (TASK_INDEX_FILE, _read_task_index, _write_task_index, cached_index_task_manager,
                         task_index_cache_dir, task_index_key)
from tests.paths import REPO

TASK_YAML = "task: {name}\ndataset_path: json\noutput_type: multiple_choice\ntag: [{tag}]\n"
GROUP_YAML = "group: {name}\ntask: [{members}]\n"


@pytest.fixture
def task_dir(tmp_path) -> Path:
    """Three tasks (two tagged `letters`), a group of two, a non-YAML file and a __pycache__ YAML."""
    d = tmp_path / "tasks"
    (d / "a").mkdir(parents=True)
    (d / "a" / "alpha.yaml").write_text(TASK_YAML.format(name="alpha", tag="letters"))
    (d / "a" / "beta.yaml").write_text(TASK_YAML.format(name="beta", tag="letters"))
    (d / "gamma.yaml").write_text(TASK_YAML.format(name="gamma", tag="greek"))
    (d / "pair.yaml").write_text(GROUP_YAML.format(name="pair", members="alpha, beta"))
    (d / "utils.py").write_text("x = 1\n")
    (d / "__pycache__").mkdir()
    (d / "__pycache__" / "junk.yaml").write_text("task: junk\n")
    return d


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("GPT2TRAIN_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / TASK_INDEX_FILE


def entries(index: dict) -> dict:
    return {name: (e.kind.name, str(e.yaml_path) if e.yaml_path else None, sorted(e.tags)) for name, e in index.items()}


def test_the_cache_lies_under_the_cache_dir_or_hf_home(monkeypatch, tmp_path):
    monkeypatch.delenv("GPT2TRAIN_CACHE_DIR", raising=False)
    assert task_index_cache_dir() == Path(os.environ["HF_HOME"]) / "gpt2train"  # the tests' temp HF_HOME
    monkeypatch.delenv("HF_HOME")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert task_index_cache_dir() == tmp_path / "xdg" / "huggingface" / "gpt2train"
    monkeypatch.setenv("GPT2TRAIN_CACHE_DIR", str(tmp_path / "mine"))
    assert task_index_cache_dir() == tmp_path / "mine"


def test_the_key_follows_every_yaml_file_and_nothing_else(task_dir):
    key = task_index_key(task_dir)
    assert task_index_key(task_dir) == key and len(key) == 64
    seen = {key}

    def changed() -> str:
        new = task_index_key(task_dir)
        assert new not in seen
        seen.add(new)
        return new

    (task_dir / "utils.py").write_text("x = 2\n")  # not a YAML: not indexed
    (task_dir / "__pycache__" / "junk.yaml").write_text("task: junk2\n")  # a folder the harness skips
    assert task_index_key(task_dir) == key
    alpha = task_dir / "a" / "alpha.yaml"
    alpha.write_text(TASK_YAML.format(name="alphax", tag="letters"))  # size
    changed()
    st = alpha.stat()
    os.utime(alpha, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))  # an edit that kept the size
    changed()
    (task_dir / "delta.yaml").write_text(TASK_YAML.format(name="delta", tag="greek"))  # a new task
    changed()
    (task_dir / "delta.yaml").rename(task_dir / "a" / "delta.yaml")  # moved
    changed()


def test_a_written_index_reads_back_as_the_harness_built_it(task_dir, cache):
    from lm_eval.tasks import TaskManager

    built = TaskManager(include_path=str(task_dir), include_defaults=False)
    assert set(built.task_index) == {"alpha", "beta", "gamma", "pair", "letters", "greek"}  # the files were indexed
    key = task_index_key(task_dir)
    _write_task_index(key, built.task_index)
    assert json.loads(cache.read_text())["key"] == key
    index = _read_task_index(key)
    assert entries(index) == entries(built.task_index)
    tm = cached_index_task_manager(index)
    assert isinstance(tm, TaskManager)
    assert (tm.all_tasks, tm.all_subtasks, tm.all_groups, tm.all_tags) == (
        built.all_tasks, built.all_subtasks, built.all_groups, built.all_tags)
    assert tm.task_index is index and tm.match_tasks(["alp*"]) == ["alpha"]


@pytest.mark.parametrize("damage", ["torn", "not json", "a list", "another key", "an unknown kind", "short rows"])
def test_a_damaged_or_stale_cache_is_not_trusted(task_dir, cache, damage):
    from lm_eval.tasks import TaskManager

    key = task_index_key(task_dir)
    _write_task_index(key, TaskManager(include_path=str(task_dir), include_defaults=False).task_index)
    text = cache.read_text()
    doc = json.loads(text)
    if damage == "torn":
        cache.write_text(text[: len(text) // 2])
    elif damage == "not json":
        cache.write_bytes(b"\x00\xff" * 10)
    elif damage == "a list":
        cache.write_text("[]")
    elif damage == "another key":
        doc["key"] = "0" * 64
        cache.write_text(json.dumps(doc))
    elif damage == "an unknown kind":
        doc["entries"][0][1] = "SOMETHING_NEW"
        cache.write_text(json.dumps(doc))
    else:
        doc["entries"][0] = doc["entries"][0][:2]
        cache.write_text(json.dumps(doc))
    assert _read_task_index(key) is None


def test_an_unwritable_cache_costs_a_build_not_the_eval(task_dir, tmp_path, monkeypatch, caplog):
    from lm_eval.tasks import TaskManager

    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("GPT2TRAIN_CACHE_DIR", str(blocker / "cache"))  # under a file: cannot be made
    _write_task_index("k", TaskManager(include_path=str(task_dir), include_defaults=False).task_index)
    assert "could not cache lm-eval's task index" in caplog.text and "GPT2TRAIN_CACHE_DIR" in caplog.text


@pytest.mark.e2e
def test_a_new_process_reads_the_index_the_first_one_built(task_index):
    """The session's index (tests/fixtures/evals.py) is on disk under the tests' HF_HOME; a fresh process
    reads it back, equal entry for entry, and reads no task YAML to do it."""
    probe = """
import json
import lm_eval.tasks._index as idx
read = []
walk = idx.TaskIndex._iter_yaml_files
idx.TaskIndex._iter_yaml_files = staticmethod(lambda root: (read.append(p) or p for p in walk(root)))
from evals.tasks import harness_task_manager
tm = harness_task_manager()
print(json.dumps({"class": type(tm).__name__, "yaml_read": len(read), "all_tasks": tm.all_tasks,
                  "entries": {n: [e.kind.name, str(e.yaml_path), sorted(e.tags)] for n, e in tm.task_index.items()}}))
"""
    cache = evals_tasks.task_index_cache_dir() / TASK_INDEX_FILE
    assert json.loads(cache.read_text())["key"] == task_index_key()
    out = subprocess.run([sys.executable, "-c", probe], env={**os.environ, "PYTHONPATH": str(REPO)},
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.splitlines()[-1])
    assert got["class"] == "CachedIndexTaskManager" and got["yaml_read"] == 0
    assert got["all_tasks"] == task_index.all_tasks and len(got["all_tasks"]) > 1000
    assert got["entries"] == {n: [e.kind.name, str(e.yaml_path), sorted(e.tags)]
                              for n, e in task_index.task_index.items()}
