"""The nodes of a lineage walk: each artifact's files and what its sidecar says, read into a LineageNode.

    node, export = export_node(export_dir, depth, report)    # gpt2train/lineage/walk.py calls these

One builder per artifact kind (eval_report, hf_export, checkpoint, token_shard, corpus_record,
corpus_file). Each lists the files to check with every sha256 recorded for them and a summary of
the config that shaped the artifact; it hashes nothing (walk.py's `_verify` does, all files in one
pass) and raises nothing for a missing or unreadable sidecar: the rest of the chain is still worth
printing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpt2train.layout import CHECKPOINT_DONE, CHECKPOINT_STATE, CHECKPOINT_WEIGHTS, HF_WEIGHTS, LINEAGE_FILE
from gpt2train.lineage.records import sidecar_path
from gpt2train.training.checkpoint import CheckpointState, TrainingLineage

OK, MISMATCH, MISSING, UNVERIFIED = "ok", "MISMATCH", "MISSING", "unverified"
SHORT = 12  # hex chars of a hash shown


@dataclass
class FileCheck:
    """One file of an artifact and every sha256 the chain recorded for it."""

    path: Path
    recorded: dict[str, str | None]  # who recorded it ("state.json", "export lineage.json") -> sha256
    size: int | None = None  # recorded bytes: compared even without re-hashing (a stat is free)
    content: bool = True  # False: only has to exist (a record, a DONE marker)
    broken: str | None = None  # a reason found while reading (bad JSON, wrong key): always MISMATCH
    actual: str | None = None  # sha256 now; None until (unless) re-hashed
    status: str = UNVERIFIED
    why: str = ""  # for MISMATCH / MISSING: what differs

    @property
    def recorded_values(self) -> list[str]:
        return [h for h in self.recorded.values() if h]


@dataclass
class LineageNode:
    """One artifact of the chain: its files' checks and what its sidecar says about how it was made."""

    kind: str  # corpus_file | corpus_record | token_shard | checkpoint | hf_export | eval_report
    path: Path
    depth: int  # 0: the artifact asked about; +1 per hop towards the corpus
    recorded_hash: str | None = None  # of its main file (weights, .bin, results.json, source file)
    actual_hash: str | None = None  # the same file's sha256 now; None when not re-hashed
    status: str = UNVERIFIED  # "ok" | "MISMATCH" | "MISSING" | "unverified"
    details: dict[str, Any] = field(default_factory=dict)  # code_version, git_commit, created_at, summary
    checks: list[FileCheck] = field(default_factory=list)  # checks[0] is the main file
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status in (OK, UNVERIFIED)


def add_recorded(check: FileCheck, who: str, h: str | None) -> None:
    if h:
        check.recorded[who] = h
        check.content = True


def _sidecar(path: Path, check: FileCheck | None = None) -> dict | None:
    """A sidecar met along the walk: None if missing; unreadable marks `check` broken (no exception:
    the rest of the chain is still worth printing)."""
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else None
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        if check is not None:
            check.broken = f"{path.name} is not valid JSON ({e})"
        return None


def _provenance(sidecar: dict | None) -> dict[str, Any]:
    s = sidecar or {}
    return {"code_version": s.get("code_version"), "git_commit": s.get("git_commit"),
            "created_at": s.get("created_at")}


# ---------------------------------------------------------------------------------------------
# One builder per artifact kind, from the report back to the corpus file
# ---------------------------------------------------------------------------------------------

def report_node(root: Path, depth: int, report: dict) -> LineageNode:
    """`report`: the report's lineage.json, already read (walk.py: the path asked about must be readable)."""
    files = report.get("files") or {}
    # results.json first: the report's main file (its numbers); then the rest in name order.
    names = sorted(files, key=lambda n: (n != "results.json", n))
    checks = [FileCheck(root / n, {"report lineage.json": files[n]}) for n in names]
    checks.append(FileCheck(root / LINEAGE_FILE, {}, content=False))
    summary = {"tasks": _format_tasks(report.get("tasks")), "metrics": _format_metrics(report.get("metrics"))}
    ck = report.get("checkpoint") or {}
    if ck.get("key") or ck.get("step") is not None:
        summary["checkpoint"] = f"{ck.get('key') or '?'} (step {ck.get('step')})"
    return LineageNode("eval_report", root, depth, checks=checks,
                       details={**_provenance(report), "summary": summary})


def export_node(root: Path, depth: int, report: dict | None) -> tuple[LineageNode, dict | None]:
    lineage_check = FileCheck(root / LINEAGE_FILE, {}, content=False)
    from_report = (report or {}).get("export") or {}
    if from_report.get("lineage_sha256"):
        lineage_check.recorded["report lineage.json"] = from_report["lineage_sha256"]
        lineage_check.content = True
    export = _sidecar(root / LINEAGE_FILE, lineage_check)
    files = dict((export or {}).get("files") or {})
    files.setdefault(HF_WEIGHTS, None)  # checked even if the export's own record is gone
    names = sorted(files, key=lambda n: (n != HF_WEIGHTS, n))
    checks = []
    for name in names:
        check = FileCheck(root / name, {"export lineage.json": files[name]} if files[name] else {})
        if name == HF_WEIGHTS:
            add_recorded(check, "export lineage.json (model_sha256)", (export or {}).get("model_sha256"))
            add_recorded(check, "report lineage.json", from_report.get("model_sha256"))
        checks.append(check)
    checks.append(lineage_check)
    node = LineageNode("hf_export", root, depth, checks=checks,
                       details={**_provenance(export), "summary": _export_summary(export)})
    if export is None and not lineage_check.broken:
        node.notes.append("lineage.json is gone: following the report's copy of the checkpoint reference")
    return node, export


def _export_summary(export: dict | None) -> dict[str, str]:
    summary: dict[str, str] = {}
    if export:
        ck, model, v = export.get("checkpoint") or {}, export.get("model") or {}, export.get("verification") or {}
        summary["checkpoint"] = f"{ck.get('key') or '?'} (step {ck.get('step')})"
        if model:
            summary["model"] = ", ".join(f"{k} {model[k]}" for k in
                                         ("n_layer", "n_head", "n_embd", "block_size", "vocab_size") if k in model)
        if v:
            summary["verified"] = (f"logits max|diff| {v.get('logits_max_abs_diff')} "
                                   f"(tol {v.get('logits_tolerance')}), "
                                   f"tokenizer match {v.get('tokenizer_match')} on {v.get('tokenizer_texts')} texts")
    return summary


def checkpoint_node(root: Path, depth: int,
                    expect: dict[str, str | None]) -> tuple[LineageNode, CheckpointState | None]:
    state_check = FileCheck(root / CHECKPOINT_STATE, {}, content=False)
    record = _sidecar(root / CHECKPOINT_STATE, state_check)
    state = CheckpointState.from_record(record) if record is not None else None
    weights = FileCheck(root / CHECKPOINT_WEIGHTS, {})
    add_recorded(weights, "checkpoint state.json", state.model_sha256 if state else None)
    for who, h in expect.items():
        add_recorded(weights, who, h)
    checks = [weights, state_check, FileCheck(root / CHECKPOINT_DONE, {}, content=False)]
    lineage = (state.lineage if state else None) or TrainingLineage()
    node = LineageNode("checkpoint", root, depth, checks=checks,
                       details={"code_version": lineage.code_version, "git_commit": lineage.git_commit,
                                "created_at": state.created_at if state else None,
                                "summary": _checkpoint_summary(state)})
    return node, state


def _checkpoint_summary(state: CheckpointState | None) -> dict[str, str]:
    summary: dict[str, str] = {}
    if state is None or not state.record:  # an empty state.json says nothing
        return summary
    summary["step"] = str(state.step)
    summary["descriptor"] = str(state.config.model.descriptor)
    if t := state.config.train:
        summary["steps"] = str(t.max_steps)
        summary["batch"] = f"{t.batch_size}x{t.seq_len} ({t.total_batch_tokens} tokens/step)"
    if isinstance(state.loss, (int, float)):
        summary["loss"] = f"{state.loss:.4f}"
    if state.run_tag:
        summary["run_tag"] = state.run_tag
    if state.lineage:
        summary["shards"] = f"{len(state.lineage.train_shards)} train + {len(state.lineage.val_shards)} val"
    if state.before_instability:
        summary["kept"] = state.before_instability.describe()
    return summary


def shard_node(shard: Path, depth: int, entry: dict | None) -> tuple[LineageNode, dict | None]:
    side = FileCheck(sidecar_path(shard), {}, content=False)
    sidecar = _sidecar(sidecar_path(shard), side)
    check = FileCheck(shard, {}, size=(sidecar or {}).get("bytes"))
    add_recorded(check, "shard sidecar", (sidecar or {}).get("sha256"))
    if entry is not None:
        add_recorded(check, "checkpoint state.json", entry.get("sha256"))
    checks = [check]
    notes = []
    if sidecar is None and not side.broken and (entry is None or not entry.get("sha256")):
        # Never had one (a published llm.c shard): nothing to verify, not a break in the chain.
        notes.append("no sidecar: not written by gpt2train; its corpus lineage is unknown")
    else:
        checks.append(side)
    s = sidecar or {}
    tok = s.get("tokenizer")
    summary = {"split": str(s.get("split")), "tokens": str(s.get("tokens")), "shard_size": str(s.get("shard_size")),
               "tokenizer": str(tok.get("name") if isinstance(tok, dict) else tok)} if sidecar else {}
    return LineageNode("token_shard", shard, depth, checks=checks, notes=notes,
                       details={**_provenance(sidecar), "summary": summary}), sidecar


def record_node(path: Path, depth: int, key: str | None) -> tuple[LineageNode, dict | None]:
    check = FileCheck(path, {}, content=False)
    record = _sidecar(path, check)
    if record is not None and key is not None and record.get("key") != key:
        check.broken = f"the record is for {record.get('key')!r}, not {key!r}"
    summary: dict[str, str] = {}
    if record:
        summary["key"] = str(record.get("key"))
        origin = record.get("source")
        if record.get("repo"):
            origin = f"{origin} {record['repo']}@{record.get('revision')}"
        summary["source"] = str(origin)
        summary["documents"] = str(record.get("documents"))
        corpus = (record.get("config") or {}).get("corpus") or {}
        for k in ("dataset", "name", "text_field", "max_documents_per_file"):
            if k in corpus:
                summary[k] = str(corpus[k])
    return LineageNode("corpus_record", path, depth, checks=[check],
                       details={**_provenance(record), "summary": summary}), record


def corpus_file_node(path: Path, depth: int, record: dict, by_shard: dict[str | None, list[str]]) -> LineageNode:
    check = FileCheck(path, {"corpus record": record.get("sha256")}, size=record.get("bytes"))
    # The file's hash as each shard saw it when tokenizing: a record rewritten after the file
    # changed agrees with the file but not with the shards made from the old bytes.
    for h, shards in by_shard.items():
        if h:
            more = f" (+{len(shards) - 1})" if len(shards) > 1 else ""
            add_recorded(check, f"shard sidecar {shards[0]}{more}", h)
    return LineageNode("corpus_file", path, depth, checks=[check],
                       details={"code_version": None, "git_commit": None, "created_at": None,
                                "summary": {"bytes": str(record.get("bytes"))}})


# ---------------------------------------------------------------------------------------------
# An eval report's summary: its tasks and metrics on one line each
# ---------------------------------------------------------------------------------------------

def _format_tasks(tasks: Any) -> str:
    """`tasks` as the report resolved them: a list of dicts (name + settings), names, or a mapping."""
    if not tasks:
        return ""
    if isinstance(tasks, dict):
        tasks = [{"name": k, **(v if isinstance(v, dict) else {"value": v})} for k, v in tasks.items()]
    out = []
    for t in tasks:
        if isinstance(t, dict):
            extra = ", ".join(f"{k} {v}" for k, v in t.items() if k != "name" and v not in (None, ""))
            out.append(f"{t.get('name', '?')}" + (f" ({extra})" if extra else ""))
        else:
            out.append(str(t))
    return "; ".join(out)


def _format_metrics(metrics: Any) -> str:
    if not isinstance(metrics, dict):
        return ""
    out = []
    for task, values in metrics.items():
        if isinstance(values, dict):
            out.append(f"{task} " + " ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                             for k, v in values.items()))
        else:
            out.append(f"{task} {values}")
    return "; ".join(out)
