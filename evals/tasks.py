"""Configured eval tasks -> what the Eleuther lm-eval harness runs, checked before any work.

    tasks = check_tasks(cfg.evals)                 # every error up front, nothing written
    tasks = write_local_task_yamls(tasks, work_dir)  # local data: one generated YAML per task
    evals_code_version(cfg.evals)                  # the eval report's Dagster code version

A task without local data runs the harness's own definition on the harness's own data (the
Hub; needs the network). A task with `evals.local_data: [task=PATH]` runs the harness's own
definition too, on a local jsonl: we write a YAML that `include:`s the installed harness
YAML (found through the harness's task index, never a hard-coded path) and overrides only
where the data comes from, so prompts, metrics and scoring stay the harness's:

    include: <site-packages>/lm_eval/tasks/hellaswag/hellaswag.yaml
    task: hellaswag_local
    dataset_path: json
    dataset_name: null
    dataset_kwargs: {data_files: {validation: /abs/invented_val.jsonl}}
    training_split: null        # the local file holds only the split that is scored

The split the harness scores is the included YAML's `test_split` if set, else its
`validation_split`; the local file becomes that split. Other splits it names (training,
few-shot) are set to null because the local file does not hold them: with few-shot > 0 the
harness then draws its examples from the scored split itself, leaving out the item being
scored (lm_eval/api/samplers.py); the report says so.

Building the harness's task index reads ~every YAML it ships (~20-40 s of one core), so it
is built once per installed harness, cached on disk and read back in every later process
(`harness_task_manager`; the cache is described above `task_index_key`), and generated YAMLs
are passed to it by path (the harness loads a task spec that is a YAML path directly).
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from evals.published import published_baselines
from evals.reference import reference_identity
from gpt2train.config import EvalsConfig
from gpt2train.config_checks import parse_task_spec
from gpt2train.errors import ConfigError, DataError
from gpt2train.fileio import atomic_output, sha256_file
from gpt2train.lineage.records import code_version

log = logging.getLogger(__name__)

# A task whose data is a local file is registered with the harness under its name plus this suffix.
LOCAL_SUFFIX = "_local"
_TRUE = {"1", "true", "yes", "on"}

# The HellaSwag fields the harness's hellaswag/utils.py:process_docs reads.
HELLASWAG_FIELDS = ("ctx_a", "ctx_b", "activity_label", "endings", "label")


@dataclass(frozen=True)
class EvalTask:
    """One configured task, resolved: what the harness is asked to run and on which data."""

    name: str
    """As configured (`hellaswag`); reports and metrics use this name."""
    num_fewshot: int | None
    """`name:K` -> K; None = the task's own default (0 for most)."""
    harness_task: str
    """The name the harness reports results under (`hellaswag`, or `hellaswag_local` on local data)."""
    harness_yaml: str | None
    """The installed harness YAML defining the task (None for groups/tags and Python tasks)."""
    local_path: str | None = None
    """The local jsonl scored instead of the Hub's data (absolute), or None."""
    local_sha256: str | None = None
    split: str | None = None
    """For local data: the split the local file stands in for (`validation`, `test`)."""
    spec: str | None = None
    """What is passed to `simple_evaluate(tasks=...)`: the task name, or the generated YAML's path."""

    @property
    def source(self) -> str:
        return f"local file {self.local_path}" if self.local_path else "the harness's own dataset (Hub)"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["source"] = "local" if self.local_path else "hub"
        return d


def is_offline() -> bool:
    """True when `HF_DATASETS_OFFLINE` or `HF_HUB_OFFLINE` is set: the Hub's datasets cannot be fetched."""
    return any(os.environ.get(k, "").strip().lower() in _TRUE for k in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"))


@functools.cache
def harness_task_manager():
    """The harness's task index (all built-in task YAMLs): read from the on-disk cache when it matches
    the installed harness (~0.3 s), else built (~20-40 s) and cached; once per process."""
    from lm_eval.tasks import TaskManager

    key = task_index_key()
    index = _read_task_index(key)
    if index is not None:
        try:
            return cached_index_task_manager(index)
        except TypeError as e:
            log.info("lm-eval's task index cache not usable with this harness (%s); building the index", e)
    tm = TaskManager()
    _write_task_index(key, tm.task_index)
    return tm


# ------------------------------------------------------------------------------- the task index cache
#
# lm-eval's TaskManager() loads every YAML it ships (~14,000 files, ~26,600 loads with their
# `include:`s) to learn each task's name, kind (task, group, tag, Python task), file and tags. That
# depends on nothing but those files, so the index is kept on disk between processes:
#
#     $GPT2TRAIN_CACHE_DIR/lm_eval_task_index.json   (default: $HF_HOME/gpt2train/, HF_HOME's own
#                                                     default being ~/.cache/huggingface, beside the
#                                                     harness's datasets cache)
#
# keyed by the harness's version, its tasks folder's path and, for every YAML under it, the file's
# relative name, size and mtime (one stat each, ~0.1 s for all of them; reading and hashing their
# ~7 MB in ~14,000 files would cost more and only catch an edit that keeps both size and mtime, which
# neither pip nor an editor makes). A pip upgrade,
# an editable checkout's edit, an added or removed task file each change the key, and the index is
# built again. The project's own generated YAMLs (local data, write_local_task_yamls) never enter the
# index: they are handed to the harness by path, which it loads directly (TaskIndex.entry_from_path),
# so they are not part of the key. The file is written whole (temp + rename); one that cannot be read,
# is not JSON, holds another key or an entry of an unexpected shape is rebuilt, never trusted.

TASK_INDEX_FILE = "lm_eval_task_index.json"
TASK_INDEX_FORMAT = 1  # the layout of the cached entries below; bump when it changes


def task_index_cache_dir() -> Path:
    """Where the cached task index lives: $GPT2TRAIN_CACHE_DIR, else $HF_HOME/gpt2train (HF_HOME's own
    default: $XDG_CACHE_HOME/huggingface, else ~/.cache/huggingface)."""
    if os.environ.get("GPT2TRAIN_CACHE_DIR"):
        return Path(os.environ["GPT2TRAIN_CACHE_DIR"]).expanduser()
    hf_home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME") or "~/.cache", "huggingface")
    return Path(hf_home).expanduser() / "gpt2train"


def harness_tasks_dir() -> Path:
    """The installed harness's task YAMLs (what TaskManager() indexes), found without importing them."""
    import lm_eval  # cheap: the package's __init__ imports nothing heavy; lm_eval.tasks would (~1 s)

    return Path(lm_eval.__file__).resolve().parent / "tasks"


def task_index_key(tasks_dir: Path | None = None) -> str:
    """sha256 of the cache's format, the harness's version, its tasks folder and every YAML's relative
    name, size and mtime (the files TaskIndex reads: `**/*.yaml`, __pycache__ and notebook checkpoints
    skipped), sorted by name."""
    import lm_eval

    root = tasks_dir or harness_tasks_dir()
    h = hashlib.sha256(f"{TASK_INDEX_FORMAT}\0{lm_eval.__version__}\0{root}\n".encode())
    rows = []
    for folder, dirs, files in os.walk(root, followlinks=True):  # pathlib's ** follows links too (3.11)
        dirs[:] = [d for d in dirs if d not in ("__pycache__", ".ipynb_checkpoints")]
        for name in files:
            if name.endswith(".yaml"):
                path = os.path.join(folder, name)
                st = os.stat(path)
                rows.append(f"{os.path.relpath(path, root)}\0{st.st_size}\0{st.st_mtime_ns}\n")
    for row in sorted(rows):
        h.update(row.encode())
    return h.hexdigest()


def _read_task_index(key: str) -> dict | None:
    """The cached index {name: Entry} if the cache file holds `key`; None (rebuild) otherwise."""
    from lm_eval.tasks._index import Entry, Kind

    path = task_index_cache_dir() / TASK_INDEX_FILE
    try:
        cached = json.loads(path.read_text())
        if not isinstance(cached, dict) or cached.get("key") != key:
            return None
        index = {}
        for name, kind, yaml_path, tags in cached["entries"]:
            # A name is what the YAML's `task:` / `group:` held: a string, or a number YAML read as one.
            if not (isinstance(name, (str, int, float)) and isinstance(tags, list)
                    and (yaml_path is None or isinstance(yaml_path, str))):
                return None
            index[name] = Entry(name=name, kind=Kind[kind], yaml_path=Path(yaml_path) if yaml_path else None,
                                tags=set(tags))
        return index
    except (OSError, ValueError, KeyError, TypeError) as e:  # missing, torn, not JSON, another shape
        if not isinstance(e, FileNotFoundError):
            log.info("lm-eval task index cache %s unreadable (%s); building the index again", path, e)
        return None


def _write_task_index(key: str, index: dict) -> None:
    """Cache `index` under `key`; a cache that cannot be written costs the next process the build, not this one."""
    from gpt2train.fileio import write_json_atomic

    # name, kind, YAML, tags: what TaskManager reads of an indexed entry. Its `cfg` (the parsed YAML) is
    # read only for an entry without a YAML, which an indexed one never is (lm_eval/tasks/_factory.py).
    path = task_index_cache_dir() / TASK_INDEX_FILE
    try:
        entries = [[name, e.kind.name, str(e.yaml_path) if e.yaml_path else None, sorted(e.tags, key=str)]
                   for name, e in index.items()]
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, {"key": key, "lm_eval_tasks": str(harness_tasks_dir()), "entries": entries})
    except (OSError, TypeError, ValueError) as e:  # TypeError/ValueError: an entry JSON cannot hold
        log.warning("could not cache lm-eval's task index in %s (%s); the next eval process builds it again "
                    "(set GPT2TRAIN_CACHE_DIR to a writable folder)", path, e)


def cached_index_task_manager(index: dict):
    """A harness TaskManager over `index` ({name: Entry}, as read from the cache) instead of one it builds."""
    return _cached_index_task_manager_class()(index)


@functools.cache
def _cached_index_task_manager_class():
    from lm_eval.tasks import TaskManager
    from lm_eval.tasks._index import Kind

    class CachedIndexTaskManager(TaskManager):
        """lm-eval's TaskManager, its index handed in: the parent's constructor is given no folder to
        scan (`include_defaults=False`: an empty index, no YAML read), then the index and the name lists
        are set as TaskManager.__init__ sets them from the index it builds (lm_eval/tasks/manager.py)."""

        def __init__(self, index: dict):
            super().__init__(include_defaults=False)
            names = ("_index", "_all_tasks", "_all_subtasks", "_all_groups", "_all_tags")
            missing = [n for n in names if not hasattr(self, n)]
            if missing:  # another harness's internals: build the index instead (harness_task_manager)
                raise TypeError(f"lm-eval's TaskManager has no {', '.join(missing)}")
            by_kind: dict = {}
            for name, entry in index.items():
                by_kind.setdefault(entry.kind, []).append(name)
            self._index = index
            self._all_tasks = sorted(index)
            self._all_subtasks = sorted(by_kind.get(Kind.TASK, []) + by_kind.get(Kind.PY_TASK, []))
            self._all_groups = sorted(by_kind.get(Kind.GROUP, []))
            self._all_tags = sorted(by_kind.get(Kind.TAG, []))

    return CachedIndexTaskManager


def parse_local_data(ecfg: EvalsConfig) -> dict[str, Path]:
    """`[hellaswag=/abs/x.jsonl]` -> {"hellaswag": Path}; every entry must name a configured task."""
    names = [parse_task_spec(s)[0] for s in ecfg.tasks]
    out: dict[str, Path] = {}
    for item in ecfg.local_data:
        task, sep, path = item.partition("=")
        task, path = task.strip(), path.strip()
        if not sep or not task or not path:
            raise ConfigError(f"evals.local_data: {item!r} is not `task=PATH` "
                              f"(e.g. hellaswag=data/hellaswag_val.jsonl)")
        if task not in names:
            raise ConfigError(f"evals.local_data: {item!r} names task {task!r}, which is not in evals.tasks "
                              f"({', '.join(names)}); add it to evals.tasks or remove the entry")
        if task in out:
            raise ConfigError(f"evals.local_data: task {task!r} is given twice; keep one file per task")
        out[task] = Path(path).expanduser()
    return out


def check_tasks(ecfg: EvalsConfig, task_manager=None) -> list[EvalTask]:
    """Resolve `ecfg.tasks` against the installed harness and check their data; raise before any work.

    Errors (each names the task or file and says what to do): a task the harness does not know
    (with close names), local data for a group/tag, offline with no local data for a task, a
    local file that is missing or has a malformed line.
    """
    specs = _task_specs(ecfg)
    local = {name: path.resolve() for name, path in parse_local_data(ecfg).items()}
    # The local files first: reading them takes milliseconds, the harness's task index below ~20 s,
    # so a malformed line is reported (by line number) before that wait.
    for name, path in local.items():
        if not path.is_file():
            raise DataError(f"evals.local_data: {name}'s file {path} not found; fix the path (relative paths "
                            f"are resolved against the config file's folder)")
        _check_jsonl(name, path)
    tasks = _harness_tasks(specs, local, task_manager or harness_task_manager())
    if is_offline():
        missing = [t.name for t in tasks if t.name not in local]
        if missing:
            raise ConfigError(f"offline (HF_DATASETS_OFFLINE/HF_HUB_OFFLINE is set) and no local data for "
                              f"{', '.join(missing)}: the harness would fetch their datasets from the Hub. Add "
                              f"evals.local_data entries ({missing[0]}=PATH.jsonl), or unset the offline "
                              f"variables where the Hub can be reached")
    return [_on_local_data(t, local[t.name]) if t.name in local else t for t in tasks]


def _task_specs(ecfg: EvalsConfig) -> list[tuple[str, int | None]]:
    """(name, few-shot) of each configured task; none listed twice."""
    if not ecfg.tasks:
        raise ConfigError("evals.tasks is empty; list at least one lm-eval task, e.g. [hellaswag]")
    specs = [parse_task_spec(s) for s in ecfg.tasks]
    seen = [n for n, _ in specs]
    dupes = sorted({n for n in seen if seen.count(n) > 1})
    if dupes:
        raise ConfigError(f"evals.tasks: {', '.join(dupes)} listed more than once; keep one entry per task")
    return specs


def _harness_tasks(specs: list[tuple[str, int | None]], local: dict[str, Path], tm) -> list[EvalTask]:
    """Each task as the harness's task index `tm` knows it; a task with local data must be one YAML task."""
    index = tm.task_index
    tasks = []
    for name, shots in specs:
        entry = index.get(name)
        if entry is None:
            close = difflib.get_close_matches(name, tm.all_tasks, n=5, cutoff=0.6)
            hint = f"did you mean {', '.join(close)}?" if close else "see `lm-eval ls tasks` for the names"
            raise ConfigError(f"evals.tasks: the lm-eval harness (installed version) has no task {name!r}; {hint}")
        kind = entry.kind.name
        if name in local and (kind != "TASK" or entry.yaml_path is None):
            raise ConfigError(f"evals.local_data: {name!r} is a harness {kind.lower()}, not a single YAML task; "
                              f"local data can replace one task's dataset only (list its tasks one by one)")
        tasks.append(EvalTask(name=name, num_fewshot=shots, harness_task=name,
                              harness_yaml=str(entry.yaml_path) if entry.yaml_path else None, spec=name))
    return tasks


def _on_local_data(t: EvalTask, path: Path) -> EvalTask:
    """`t` run on the local file `path` (checked by check_tasks): registered as `<name>_local`, standing in
    for the split the harness scores."""
    split = _eval_split(t)
    return replace(t, harness_task=t.name + LOCAL_SUFFIX, local_path=str(path), local_sha256=sha256_file(path),
                   split=split)


def write_local_task_yamls(tasks: list[EvalTask], work_dir: str | Path) -> list[EvalTask]:
    """Write `<work_dir>/<task>_local.yaml` for each local-data task; returns tasks whose `spec` is that path."""
    work_dir = Path(work_dir)
    out = []
    for t in tasks:
        if not t.local_path:
            out.append(t)
            continue
        included = _harness_config(t.harness_yaml)
        doc: dict[str, Any] = {
            "include": t.harness_yaml,
            "task": t.harness_task,
            "dataset_path": "json",
            "dataset_name": None,
            "dataset_kwargs": {"data_files": {t.split: t.local_path}},
        }
        # The local file holds one split: any other split the harness YAML names would be a
        # KeyError when the harness builds the task (it reads the few-shot pool eagerly).
        for key in ("training_split", "validation_split", "test_split", "fewshot_split"):
            if included.get(key) not in (None, t.split):
                doc[key] = None
        path = work_dir / f"{t.harness_task}.yaml"
        with atomic_output(path, "w") as f:
            f.write(f"# Generated by evals/tasks.py: the harness's own {t.name} task on a local file.\n")
            yaml.safe_dump(doc, f, sort_keys=False)
        out.append(replace(t, spec=str(path)))
    return out


def evals_code_version(ecfg: EvalsConfig) -> str:
    """Code version of an eval report: the evals stage's version, the tasks and few-shot, `limit`, the
    local files' sha256, the published figures shown beside the scores, the reference reports shown
    beside them (their lineage.json sha256: a reference measured again stales the reports too), and the
    harness version. Not `batch_size` or `device`:
    they change the speed, not the scores (up to float rounding)."""
    import lm_eval  # cheap: the package's __init__ imports nothing heavy

    local = {}
    for item in ecfg.local_data:
        task, _, path = item.partition("=")
        p = Path(path.strip()).expanduser()
        local[task.strip()] = sha256_file(p) if p.is_file() else f"missing:{p}"
    if ecfg.baselines_file:
        b = Path(ecfg.baselines_file)
        baselines = sha256_file(b) if b.is_file() else f"missing:{b}"
    else:  # the figures a report shows beside its scores: the project's table
        baselines = hashlib.sha256(json.dumps(published_baselines(), sort_keys=True).encode()).hexdigest()
    settings = {"tasks": [list(parse_task_spec(s)) for s in ecfg.tasks], "limit": ecfg.limit,
                "local_data": local, "baselines": baselines, "lm_eval": lm_eval.__version__}
    if ecfg.reference_reports:  # only when set: a config without references keeps its version
        settings["references"] = reference_identity(ecfg.reference_reports)
    return code_version(["evals"], settings)


# ------------------------------------------------------------------------------- helpers

@functools.cache  # read by both _eval_split and write_local_task_yamls; the installed files do not change
def _harness_config(yaml_path: str | None) -> dict[str, Any]:
    """The task's YAML as the harness reads it (its own `include:`s merged; `!function`s left as text)."""
    from lm_eval.tasks._yaml_loader import load_yaml

    return load_yaml(yaml_path, resolve_func=False, recursive=True)


def _eval_split(t: EvalTask) -> str:
    """The split the harness scores (lm_eval/api/task.py: eval_docs): test if set, else validation."""
    cfg = _harness_config(t.harness_yaml)
    if cfg.get("custom_dataset"):
        raise ConfigError(f"evals.local_data: the harness builds {t.name}'s dataset in Python (custom_dataset); "
                          f"a local jsonl cannot replace it. Remove the entry")
    split = cfg.get("test_split") or cfg.get("validation_split")
    if not split:
        raise ConfigError(f"evals.local_data: the harness's {t.name} ({t.harness_yaml}) scores no test or "
                          f"validation split; it cannot run on a local file")
    return split


def _check_jsonl(task: str, path: Path) -> None:
    """Every non-blank line a JSON object; for HellaSwag, the fields and shapes the harness reads."""
    n = 0
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                if not isinstance(obj, dict):
                    raise ValueError(f"a JSON {type(obj).__name__}, not an object")
                if task == "hellaswag":
                    _check_hellaswag_item(obj)
            except (json.JSONDecodeError, ValueError) as e:
                raise DataError(f"{path}:{lineno}: not a valid {task} item for the harness ({e}); fix or remove "
                                f"the line") from None
            n += 1
    if n == 0:
        raise DataError(f"{path} holds no items; evals.local_data for {task} needs a non-empty jsonl")


def _check_hellaswag_item(obj: dict) -> None:
    missing = [k for k in HELLASWAG_FIELDS if k not in obj]
    if missing:
        raise ValueError(f"missing field(s) {', '.join(missing)}; HellaSwag items need {', '.join(HELLASWAG_FIELDS)}")
    for k in ("ctx_a", "ctx_b", "activity_label"):
        if not isinstance(obj[k], str):
            raise ValueError(f"{k} must be a string")
    endings = obj["endings"]
    if not (isinstance(endings, list) and len(endings) == 4 and all(isinstance(e, str) for e in endings)):
        raise ValueError("endings must be a list of 4 strings")
    label = obj["label"]
    if isinstance(label, bool) or not (isinstance(label, int) or (isinstance(label, str) and label.strip().isdigit())):
        raise ValueError(f"label {label!r} must be an integer 0-3 (or its string)")
    if not 0 <= int(label) < 4:
        raise ValueError(f"label {label!r} must be 0-3")


def resolve_tasks(ecfg: EvalsConfig, work_dir: str | Path) -> list[EvalTask]:
    """`check_tasks` then `write_local_task_yamls`: the harness task specs, ready to run."""
    return write_local_task_yamls(check_tasks(ecfg), work_dir)
