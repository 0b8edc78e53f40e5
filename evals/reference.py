"""Reference rows: a model scored by `gpt2train eval` shown beside each checkpoint's own scores, only
where it was measured on the same data and settings.

    gpt2train eval hf:openai-community/gpt2 --out reports/gpt2 --set evals.limit=100
    # then, in the config:  evals: {reference_reports: [reports/gpt2]}

    refs = load_references(ecfg.reference_reports)   # evaluate_export, before the harness runs
    cmp = compare_reference(ref, task_dicts, raw)    # after it: per task, the scores or what differs
    reference_identity(ecfg.reference_reports)       # the references' lineage.json sha256: evals_code_version

A reference report is a whole report folder (evals/runner.py, `reference=True`); its lineage.json
records results.json's sha256, so hashing that one small file identifies all of its scores. Per
task, the reference's score ± stderr is shown only when both reports agree on everything that moves
a score besides the weights (`_differences`): the task, the data (a local file's sha256, or both on
the harness's own dataset), the harness's task config (prompts, metrics, splits, task version), the
few-shot count, `evals.limit` and items scored, the harness's seeds and the lm-eval version. Where
anything differs the cell holds no number and a note names what differs: a score on 20 items next
to one on 100, or on another file, would read as a comparison it is not.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evals.report import harness_metrics
from gpt2train.config_checks import check_reference_report
from gpt2train.errors import DataError
from gpt2train.fileio import read_json, sha256_file
from gpt2train.layout import LINEAGE_FILE
from gpt2train.lineage.records import recorded_path

# results.json's `config` keys that move a score: the seeds of few-shot sampling and of the harness's RNGs.
SEED_KEYS = ("fewshot_seed", "random_seed", "numpy_seed", "torch_seed")
# A function in the harness's task config is written as its repr, with a memory address that differs per process.
_FUNCTION_REPR = re.compile(r"<function (\S+) at 0x[0-9a-f]+>")


@dataclass
class Reference:
    """One reference report, as read (and checked) before any work."""

    path: Path
    label: str
    """Its model_label (`gpt2`, `openai-community/gpt2`): the column is `<label> (measured here, same harness)`."""
    lineage: dict[str, Any]
    lineage_sha256: str
    results: dict[str, Any]
    """Its results.json: the harness's output, verified against the sha256 its lineage.json records."""


@dataclass
class TaskMatch:
    differs: list[str]
    """What differs from this report's measurement (empty: the same data and settings)."""
    metrics: dict[str, float] = field(default_factory=dict)
    """The reference's metrics for the task ({acc, acc_stderr, ...}); only when nothing differs."""


@dataclass
class ReferenceComparison:
    """A reference against one report's tasks: what the report's score table and lineage show."""

    reference: Reference
    tasks: dict[str, TaskMatch]
    """By configured task name (`hellaswag`)."""

    @property
    def header(self) -> str:
        return f"{self.reference.label} (measured here, same harness)"

    def cell(self, task: str, metric: str) -> str:
        """`0.3100 ± 0.0462`, or `–` when the task's measurement differs or the metric is not there."""
        m = self.tasks.get(task)
        if m is None or m.differs or metric not in m.metrics:
            return "–"
        value = m.metrics[metric]
        stderr = m.metrics.get(metric.replace(",", "_stderr,", 1) if "," in metric else metric + "_stderr")
        return f"{value:.4f} ± {stderr:.4f}" if stderr is not None else f"{value:.4f}"

    def notes(self) -> list[str]:
        """One line per task the reference was measured on differently (or not at all)."""
        return [f"{self.reference.label} ({self.reference.path}): no {task} score shown, measured differently: "
                f"{'; '.join(m.differs)}." for task, m in self.tasks.items() if m.differs]

    def to_lineage(self, data_dir: Path | None) -> dict[str, Any]:
        """The report's record of the reference: where, its identity, and per task its scores or what differs."""
        ref = self.reference
        return {"path": recorded_path(ref.path, data_dir), "label": ref.label, "lineage_sha256": ref.lineage_sha256,
                "results_sha256": ref.lineage["files"]["results.json"],
                "tasks": {t: ({"differs": m.differs} if m.differs else {"metrics": m.metrics})
                          for t, m in self.tasks.items()}}


def reference_identity(paths: list[str]) -> list[str]:
    """The sha256 of each reference's lineage.json (which records its results.json's): the part of the
    eval reports' code version that stales them when a reference is measured again or the list changes."""
    out = []
    for p in paths:
        sidecar = Path(p) / LINEAGE_FILE
        out.append(sha256_file(sidecar) if sidecar.is_file() else f"missing:{p}")
    return out


def load_references(paths: list[str]) -> list[Reference]:
    """Each `evals.reference_reports` folder, checked: a reference report whose results.json is the one its
    lineage.json records. Raises a one-line error naming the folder."""
    refs = []
    for p in paths:
        path = Path(p).resolve()
        lineage = check_reference_report(path)
        recorded = (lineage.get("files") or {}).get("results.json")
        results_path = path / "results.json"
        if not recorded or not results_path.is_file() or sha256_file(results_path) != recorded:
            raise DataError(f"evals.reference_reports: {path}/results.json is missing or not the file its "
                            f"lineage.json records; run `gpt2train eval SOURCE --out {path}` again")
        refs.append(Reference(path=path, label=str(lineage.get("model_label") or path.name), lineage=lineage,
                              lineage_sha256=sha256_file(path / LINEAGE_FILE),
                              results=read_json(results_path, "reference results")))
    return refs


def compare_reference(ref: Reference, task_dicts: list[dict[str, Any]], raw: dict[str, Any],
                      lm_eval_version: str) -> ReferenceComparison:
    """`ref` against this report's tasks (`task_dicts`: runner._task_dicts) and harness output `raw`."""
    theirs = {t["name"]: t for t in ref.lineage.get("tasks") or []}
    tasks = {}
    for ours in task_dicts:
        other = theirs.get(ours["name"])
        if other is None:
            measured = ", ".join(theirs) or "none"
            tasks[ours["name"]] = TaskMatch([f"it has no {ours['name']} score (its report scored: {measured})"])
            continue
        differs = _differences(ours, raw, lm_eval_version, other, ref)
        metrics = {} if differs else harness_metrics(ref.results.get("results", {}).get(other["harness_task"], {}))
        tasks[ours["name"]] = TaskMatch(differs, metrics)
    return ReferenceComparison(ref, tasks)


def _differences(ours: dict[str, Any], raw: dict[str, Any], lm_eval_version: str, other: dict[str, Any],
                 ref: Reference) -> list[str]:
    """What differs between two measurements of one task, each as `what: this report's vs the reference's`."""
    out = []

    def data(t: dict[str, Any]) -> str:
        return f"local file sha256 {t['local_sha256'][:12]}…" if t.get("local_sha256") else "the harness's dataset (Hub)"

    if data(ours) != data(other):
        out.append(f"data: {data(ours)} vs {data(other)}")
    if (_task_config_hash(raw, ours["harness_task"], bool(ours.get("local_sha256"))) !=
            _task_config_hash(ref.results, other["harness_task"], bool(other.get("local_sha256")))):
        out.append("the harness's task config (prompts, metrics, splits or task version)")
    for key, what in (("n_shot", "few-shot"), ("limit", "evals.limit"), ("n_samples", "items scored")):
        if ours.get(key) != other.get(key):
            out.append(f"{what}: {ours.get(key)} vs {other.get(key)}")
    seeds = [(raw.get("config") or {}).get(k) for k in SEED_KEYS]
    if seeds != [(ref.results.get("config") or {}).get(k) for k in SEED_KEYS]:
        out.append("the harness's seeds (" + ", ".join(SEED_KEYS) + ")")
    theirs = str((ref.lineage.get("harness") or {}).get("lm_eval", ""))
    if lm_eval_version != theirs:
        out.append(f"lm-eval {lm_eval_version} vs {theirs or 'unknown'}")
    return out


def _task_config_hash(results: dict[str, Any], harness_task: str, local: bool) -> str | None:
    """sha256 of the harness's config of the task (results.json `configs`) without what names a place: a
    `local` file's path (its sha256 is compared instead), the generated YAML's path, function addresses."""
    cfg = (results.get("configs") or {}).get(harness_task)
    if cfg is None:
        return None
    cfg = json.loads(json.dumps(cfg, default=str))  # a copy
    kwargs = cfg.get("dataset_kwargs")
    if local and isinstance(kwargs, dict):
        kwargs.pop("data_files", None)
    # Of `metadata` only the task's version: the rest is where the YAML lay (config_source) and model args.
    cfg["metadata"] = {"version": (cfg.get("metadata") or {}).get("version")}
    text = _FUNCTION_REPR.sub(r"<function \1>", json.dumps(cfg, sort_keys=True))
    return hashlib.sha256(text.encode()).hexdigest()
