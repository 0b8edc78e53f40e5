"""Walk any artifact back to the corpus files it was made from, re-hashing every file on the way.

    from gpt2train.lineage.walk import walk_lineage, format_lineage
    nodes = walk_lineage("data/reports/tiny-3f9a1c2b0e@step_00000040")   # or an export, checkpoint, shard, record
    print(format_lineage(nodes))

    gpt2train lineage PATH [--no-rehash]      # the same; exit 2 if any file no longer matches

The chain, and the sidecar each hop is read from (formats: docs/lineage.md):

    eval_report    <report>/lineage.json        -> export.path, checkpoint (a copy of the export's)
    hf_export      <export>/lineage.json        -> checkpoint.path
    checkpoint     <step dir>/state.json + DONE -> lineage.shards_dir / {train,val}_shards[].file
    token_shard    <shard>.bin.json             -> sources[].key
    corpus_record  <shards>/../corpus/records/<partition_tag(key)>.json -> local_path
    corpus_file    the source file itself

A file may have its sha256 recorded in several places (a checkpoint's weights in its own
state.json, in the export's lineage and in the report's; a shard in its sidecar and in the
checkpoint's list): every recorded value must equal the file's hash now, so a file replaced
and re-recorded in one place still shows up as a MISMATCH against the others. A node whose
file is gone is MISSING; the walk goes on past it wherever a sidecar still says what comes
next (the report keeps a copy of the checkpoint reference, so a deleted export does not end
the walk). Shards and corpus files reached from several parents appear once.

The walk reads every sidecar first and hashes afterwards, all files in one pass, so one
progress bar (bytes) covers the whole chain.
"""

from __future__ import annotations

import json
import textwrap
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from gpt2train.training.checkpoint import DONE
from gpt2train.errors import Gpt2TrainError
from gpt2train.fileio import sha256_file
from gpt2train.lineage.records import resolve_recorded, sidecar_data_dir, sidecar_path
from gpt2train.data.stage import corpus_record_path

OK, MISMATCH, MISSING, UNVERIFIED = "ok", "MISMATCH", "MISSING", "unverified"
# A node shows its worst file's status.
_SEVERITY = {OK: 0, UNVERIFIED: 1, MISMATCH: 2, MISSING: 3}
# A level with more shard nodes than this prints as counts plus the ones that are not ok.
COMPACT_OVER = 8
SHORT = 12  # hex chars of a hash shown
_COMPACTABLE = ("token_shard", "corpus_record", "corpus_file")

ACCEPTED = ("an eval report directory or its lineage.json, a Hugging Face export directory or its "
            "lineage.json, a checkpoint directory (.../checkpoints/step_XXXXXXXX) or its state.json, a token "
            "shard (.bin) or its .bin.json sidecar, or a corpus record (<data_dir>/corpus/records/<tag>.json)")


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


# ---------------------------------------------------------------------------------------------
# Which artifact a path is
# ---------------------------------------------------------------------------------------------

def detect_artifact(path: str | Path) -> tuple[str, Path]:
    """(kind, canonical path): the directory of a report / export / checkpoint, the `.bin` of a
    shard, the record JSON of a corpus record. Raises Gpt2TrainError for anything else."""
    path = Path(path)
    if path.name.endswith(".bin") and not path.exists() and sidecar_path(path).is_file():
        return "token_shard", path  # the shard is gone but its sidecar says what it was
    if not path.exists():
        raise Gpt2TrainError(f"{path} does not exist; `gpt2train lineage` takes {ACCEPTED}")
    if path.is_dir():
        if (path / "lineage.json").is_file():
            kind = _read_json(path / "lineage.json").get("artifact")
            if kind in ("eval_report", "hf_export"):
                return kind, path
        if (path / "state.json").is_file():
            return _checkpoint_dir(path)
        raise _not_an_artifact(path)
    if path.name.endswith(".bin"):
        if not sidecar_path(path).is_file():
            raise Gpt2TrainError(f"shard {path} has no sidecar {sidecar_path(path).name}: it records no lineage "
                                 f"(not written by gpt2train, e.g. a published llm.c shard)")
        return "token_shard", path
    if path.name.endswith(".bin.json"):
        return "token_shard", path.with_name(path.name[: -len(".json")])
    if path.name == "state.json":
        return _checkpoint_dir(path.parent)
    if path.suffix == ".json":
        kind = _read_json(path).get("artifact")
        if kind in ("eval_report", "hf_export") and path.name == "lineage.json":
            return kind, path.parent
        if kind == "corpus_file":  # a record describes a corpus file: the record is the node asked about
            return "corpus_record", path
    raise _not_an_artifact(path)


def _checkpoint_dir(path: Path) -> tuple[str, Path]:
    state = _read_json(path / "state.json")
    if "step" not in state or state.get("artifact", "checkpoint") != "checkpoint":
        raise _not_an_artifact(path)
    if not (path / DONE).is_file():
        raise Gpt2TrainError(f"checkpoint {path} has no {DONE} marker: it is incomplete (a crash during the save, "
                             f"or still being written); walk a complete checkpoint")
    return "checkpoint", path


def _not_an_artifact(path: Path) -> Gpt2TrainError:
    return Gpt2TrainError(f"{path} is not an artifact with recorded lineage; `gpt2train lineage` takes {ACCEPTED}")


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise Gpt2TrainError(f"{path} cannot be read as JSON ({e}); `gpt2train lineage` takes {ACCEPTED}") from e
    return data if isinstance(data, dict) else {}


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


def _resolve(recorded: str | None, sidecar: dict | None, base: Path) -> Path | None:
    """A path the sidecar in folder `base` recorded: absolute as written; a relative one from the data
    dir the sidecar records (docs/lineage.md), so a copied or moved data dir resolves to its own files.
    Sidecars from before that field: from the sidecar's folder, then the working directory."""
    if not recorded:
        return None
    data = sidecar_data_dir(sidecar or {}, base)
    if data is not None:
        return resolve_recorded(recorded, data)
    p = Path(recorded)
    if p.is_absolute():
        return p
    return base / p if (base / p).exists() else p


# ---------------------------------------------------------------------------------------------
# The walk: read sidecars, build nodes (no hashing yet)
# ---------------------------------------------------------------------------------------------

def walk_lineage(path: str | Path, rehash: bool = True, progress: bool = True) -> list[LineageNode]:
    """Every artifact from `path` back to the corpus files, shallowest first (depth 0 = `path`).

    With `rehash`, every file with a recorded sha256 is hashed and compared; without, files are
    only checked to exist and have their recorded size, and content checks read "unverified".
    """
    kind, root = detect_artifact(path)
    nodes: list[LineageNode] = []
    depth = 0
    report = export = None
    ckpt_dir: Path | None = None
    ckpt_expect: dict[str, str | None] = {}
    shard_refs: list[tuple[Path, dict | None]] = []  # (.bin, the checkpoint's entry for it)
    record_refs: dict[Path, dict] = {}

    report_root = root
    if kind == "eval_report":
        node, report = _report_node(root, depth)
        nodes.append(node)
        depth += 1
        root, kind = _resolve((report.get("export") or {}).get("path"), report, root), "hf_export"
        if root is None:
            node.notes.append("records no export path: following its copy of the checkpoint reference")
    if kind == "hf_export":
        if root is not None:
            node, export = _export_node(root, depth, report)
            nodes.append(node)
            depth += 1
        # The export's reference; if its lineage.json is gone, the report's copy of it.
        if (export or {}).get("checkpoint"):
            ref = export["checkpoint"]
            ckpt_dir = _resolve(ref.get("path"), export, root)
        else:
            ref = (report or {}).get("checkpoint") or {}
            ckpt_dir = _resolve(ref.get("path"), report, report_root) if report else None
        if export:
            ckpt_expect["export lineage.json"] = ref.get("model_sha256")
        if report:
            ckpt_expect["report lineage.json"] = (report.get("checkpoint") or {}).get("model_sha256")
        if ckpt_dir is None:
            nodes[-1].notes.append("records no checkpoint path: the walk ends here")
        kind = "checkpoint"
    elif kind == "checkpoint":
        ckpt_dir = root
    if kind == "checkpoint" and ckpt_dir is not None:
        node, state = _checkpoint_node(ckpt_dir, depth, ckpt_expect)
        nodes.append(node)
        depth += 1
        if state is not None:
            shard_refs = _checkpoint_shards(state, ckpt_dir)
            if not shard_refs:
                node.notes.append("records no shards (trained before checkpoints recorded lineage?)")
    elif kind == "token_shard":
        shard_refs = [(root, None)]

    seen_shards: dict[Path, LineageNode] = {}
    for shard, entry in shard_refs:
        key = shard.resolve()
        if key in seen_shards:  # listed twice (train and val globs overlapping): one node, both records
            _add_recorded(seen_shards[key].checks[0], "checkpoint state.json", (entry or {}).get("sha256"))
            continue
        node, sidecar = _shard_node(shard, depth, entry)
        seen_shards[key] = node
        nodes.append(node)
        # Sources from the sidecar (key + the source file's sha256 when the shard was written);
        # without one, the checkpoint's list still names the keys.
        sources = (sidecar or {}).get("sources") or [{"key": k} for k in (entry or {}).get("sources") or []]
        for src in sources:
            if not src.get("key"):
                continue
            rec = corpus_record_path(shard.parent.parent, src["key"])
            ref = record_refs.setdefault(rec, {"key": src["key"], "by_shard": {}})
            ref["by_shard"].setdefault(src.get("sha256"), []).append(shard.name)
    if shard_refs:
        depth += 1
    if kind == "corpus_record":
        record_refs = {root: {"key": None, "by_shard": {}}}

    files: list[LineageNode] = []
    seen_files: set[Path] = set()
    for rec, ref in record_refs.items():
        node, record = _record_node(rec, depth, ref["key"])
        nodes.append(node)
        if record is None:
            continue
        local = _resolve(record.get("local_path"), record, rec.parent)
        if local is None:
            node.notes.append("records no local_path: the walk ends here")
            continue
        if local.resolve() in seen_files:
            continue
        seen_files.add(local.resolve())
        files.append(_corpus_file_node(local, depth + 1, record, ref["by_shard"]))
        if not local.exists():  # e.g. a data dir moved to another machine without its corpus.source mirror
            files[-1].notes.append(f"the source file {record.get('key')!r} is missing: it was recorded at {local} "
                                   f"(corpus.source outside the data dir stays where it was); put it back there "
                                   f"to verify the chain")
    nodes.extend(files)

    _verify(nodes, rehash, progress)
    return nodes


def _provenance(sidecar: dict | None) -> dict[str, Any]:
    s = sidecar or {}
    return {"code_version": s.get("code_version"), "git_commit": s.get("git_commit"),
            "created_at": s.get("created_at")}


def _report_node(root: Path, depth: int) -> tuple[LineageNode, dict]:
    report = _read_json(root / "lineage.json")  # the path asked about: unreadable is an error
    files = report.get("files") or {}
    # results.json first: the report's main file (its numbers); then the rest in name order.
    names = sorted(files, key=lambda n: (n != "results.json", n))
    checks = [FileCheck(root / n, {"report lineage.json": files[n]}) for n in names]
    checks.append(FileCheck(root / "lineage.json", {}, content=False))
    summary = {"tasks": _format_tasks(report.get("tasks")), "metrics": _format_metrics(report.get("metrics"))}
    ck = report.get("checkpoint") or {}
    if ck.get("key") or ck.get("step") is not None:
        summary["checkpoint"] = f"{ck.get('key') or '?'} (step {ck.get('step')})"
    return LineageNode("eval_report", root, depth, checks=checks,
                       details={**_provenance(report), "summary": summary}), report


def _export_node(root: Path, depth: int, report: dict | None) -> tuple[LineageNode, dict | None]:
    lineage_check = FileCheck(root / "lineage.json", {}, content=False)
    from_report = (report or {}).get("export") or {}
    if from_report.get("lineage_sha256"):
        lineage_check.recorded["report lineage.json"] = from_report["lineage_sha256"]
        lineage_check.content = True
    export = _sidecar(root / "lineage.json", lineage_check)
    files = dict((export or {}).get("files") or {})
    files.setdefault("model.safetensors", None)  # checked even if the export's own record is gone
    names = sorted(files, key=lambda n: (n != "model.safetensors", n))
    checks = []
    for name in names:
        check = FileCheck(root / name, {"export lineage.json": files[name]} if files[name] else {})
        if name == "model.safetensors":
            _add_recorded(check, "export lineage.json (model_sha256)", (export or {}).get("model_sha256"))
            _add_recorded(check, "report lineage.json", from_report.get("model_sha256"))
        checks.append(check)
    checks.append(lineage_check)
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
    node = LineageNode("hf_export", root, depth, checks=checks, details={**_provenance(export), "summary": summary})
    if export is None and not lineage_check.broken:
        node.notes.append("lineage.json is gone: following the report's copy of the checkpoint reference")
    return node, export


def _checkpoint_node(root: Path, depth: int, expect: dict[str, str | None]) -> tuple[LineageNode, dict | None]:
    state_check = FileCheck(root / "state.json", {}, content=False)
    state = _sidecar(root / "state.json", state_check)
    weights = FileCheck(root / "model.safetensors", {})
    _add_recorded(weights, "checkpoint state.json", (state or {}).get("model_sha256"))
    for who, h in expect.items():
        _add_recorded(weights, who, h)
    checks = [weights, state_check, FileCheck(root / DONE, {}, content=False)]
    lineage = (state or {}).get("lineage") or {}
    summary: dict[str, str] = {}
    if state:
        cfg = state.get("config") or {}
        model, t = cfg.get("model") or {}, cfg.get("train") or {}
        summary["step"] = str(state.get("step"))
        summary["descriptor"] = str(model.get("descriptor"))
        if t:
            summary["steps"] = str(t.get("max_steps"))
            summary["batch"] = f"{t.get('batch_size')}x{t.get('seq_len')} ({t.get('total_batch_tokens')} tokens/step)"
        if isinstance(state.get("loss"), (int, float)):
            summary["loss"] = f"{state['loss']:.4f}"
        if lineage.get("run_tag"):
            summary["run_tag"] = lineage["run_tag"]
        if lineage:
            n_train, n_val = len(lineage.get("train_shards") or []), len(lineage.get("val_shards") or [])
            summary["shards"] = f"{n_train} train + {n_val} val"
    node = LineageNode("checkpoint", root, depth, checks=checks,
                       details={"code_version": lineage.get("code_version"), "git_commit": lineage.get("git_commit"),
                                "created_at": (state or {}).get("created_at"), "summary": summary})
    return node, state


def _checkpoint_shards(state: dict, root: Path) -> list[tuple[Path, dict]]:
    lineage = state.get("lineage") or {}
    cfg = state.get("config") or {}
    t = cfg.get("train") or {}
    # `shards_dir` is recorded since checkpoints carry full lineage; older ones: the configured globs.
    if lineage.get("shards_dir"):
        train_dir = val_dir = _resolve(lineage["shards_dir"], state, root)
    else:
        default = Path(cfg.get("data_dir") or ".") / "shards"
        train_dir = Path(t["train_glob"]).parent if t.get("train_glob") else default
        val_dir = Path(t["val_glob"]).parent if t.get("val_glob") else default
    refs = []
    for split, glob_key, folder in (("train_shards", "train_glob", train_dir), ("val_shards", "val_glob", val_dir)):
        for entry in lineage.get(split) or []:
            path = folder / entry["file"]
            if t.get(glob_key) and not (path.exists() or sidecar_path(path).exists()):
                # shards_dir is the train glob's folder: a val glob elsewhere keeps its shards there
                alt = Path(t[glob_key]).parent / entry["file"]
                path = alt if alt.exists() or sidecar_path(alt).exists() else path
            refs.append((path, entry))
    return refs


def _shard_node(shard: Path, depth: int, entry: dict | None) -> tuple[LineageNode, dict | None]:
    side = FileCheck(sidecar_path(shard), {}, content=False)
    sidecar = _sidecar(sidecar_path(shard), side)
    check = FileCheck(shard, {}, size=(sidecar or {}).get("bytes"))
    _add_recorded(check, "shard sidecar", (sidecar or {}).get("sha256"))
    if entry is not None:
        _add_recorded(check, "checkpoint state.json", entry.get("sha256"))
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


def _record_node(path: Path, depth: int, key: str | None) -> tuple[LineageNode, dict | None]:
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


def _corpus_file_node(path: Path, depth: int, record: dict, by_shard: dict[str | None, list[str]]) -> LineageNode:
    check = FileCheck(path, {"corpus record": record.get("sha256")}, size=record.get("bytes"))
    # The file's hash as each shard saw it when tokenizing: a record rewritten after the file
    # changed agrees with the file but not with the shards made from the old bytes.
    for h, shards in by_shard.items():
        if h:
            more = f" (+{len(shards) - 1})" if len(shards) > 1 else ""
            _add_recorded(check, f"shard sidecar {shards[0]}{more}", h)
    return LineageNode("corpus_file", path, depth, checks=[check],
                       details={"code_version": None, "git_commit": None, "created_at": None,
                                "summary": {"bytes": str(record.get("bytes"))}})


def _add_recorded(check: FileCheck, who: str, h: str | None) -> None:
    if h:
        check.recorded[who] = h
        check.content = True


# ---------------------------------------------------------------------------------------------
# Verification: stat everything, hash (once per file, one progress bar), set statuses
# ---------------------------------------------------------------------------------------------

def _verify(nodes: list[LineageNode], rehash: bool, progress: bool) -> None:
    checks = [c for n in nodes for c in n.checks]
    to_hash: dict[Path, int] = {}
    for c in checks:
        if c.content and c.recorded_values and rehash and c.path.is_file() and not c.broken:
            size = c.path.stat().st_size
            if c.size is None or c.size == size:  # a size mismatch is already decided
                to_hash[c.path.resolve()] = size
    hashes: dict[Path, str] = {}
    if to_hash:
        with tqdm(total=sum(to_hash.values()), unit="B", unit_scale=True, desc="sha256",
                  disable=None if progress else True) as bar:
            for p, size in to_hash.items():
                hashes[p] = sha256_file(p)
                bar.update(size)
    for c in checks:
        _settle(c, hashes)
    for n in nodes:
        n.status = max((c.status for c in n.checks), key=_SEVERITY.__getitem__, default=UNVERIFIED)
        main = n.checks[0] if n.checks else None
        if main is not None and main.content:
            n.recorded_hash = main.recorded_values[0] if main.recorded_values else None
            n.actual_hash = main.actual


def _settle(c: FileCheck, hashes: dict[Path, str]) -> None:
    if not c.path.exists():
        c.status = MISSING
        c.why = (f"no {DONE} marker in {c.path.parent}: the checkpoint is incomplete" if c.path.name == DONE
                 else f"{c.path} is gone")
        return
    if c.broken:
        c.status, c.why = MISMATCH, c.broken
        return
    if not c.content:
        c.status = OK
        return
    distinct = sorted(set(c.recorded_values))
    size = c.path.stat().st_size if c.path.is_file() else None
    if c.size is not None and size is not None and size != c.size:
        c.status, c.why = MISMATCH, f"{c.path.name} is {size:,} bytes, recorded {c.size:,}"
        return
    c.actual = hashes.get(c.path.resolve())
    if c.actual is not None:
        wrong = [h for h in distinct if h != c.actual]
        if wrong:
            c.status = MISMATCH
            c.why = f"{c.path.name}: sha256 now {c.actual[:SHORT]}, recorded {_who_recorded(c, wrong)}"
        else:
            c.status = OK
    elif len(distinct) > 1:  # not hashed, but the records already disagree with each other
        c.status, c.why = MISMATCH, f"{c.path.name}: recorded differently: {_who_recorded(c, distinct)}"
    else:
        c.status = UNVERIFIED


def _who_recorded(c: FileCheck, hashes: list[str]) -> str:
    return "; ".join(f"{h[:SHORT]} by {', '.join(w for w, v in c.recorded.items() if v == h)}" for h in hashes)


# ---------------------------------------------------------------------------------------------
# Printing
# ---------------------------------------------------------------------------------------------

def format_lineage(nodes: list[LineageNode]) -> str:
    """A tree, one line per artifact (status, kind, path, short hash, code version, git commit),
    its config summary and any problems under it; a level with more than COMPACT_OVER shards
    (or corpus records / files) prints as counts plus the ones that are not ok. Ends with a count of every status."""
    lines: list[str] = []
    i = 0
    while i < len(nodes):
        n = nodes[i]
        j = i + 1
        while j < len(nodes) and (nodes[j].kind, nodes[j].depth) == (n.kind, n.depth):
            j += 1
        group = nodes[i:j]
        if n.kind in _COMPACTABLE and len(group) > COMPACT_OVER:
            lines += _compact(group)
        else:
            for m in group:
                lines.append(_node_line(m))
                if m.kind != "token_shard":  # a shard's settings are its level's, shown once compacted
                    lines += _summary_lines(m)
                lines += _problem_lines(m)
        i = j
    counts = Counter(n.status for n in nodes)
    tail = (f"{len(nodes)} artifacts, {counts[OK]} verified, {counts[MISMATCH]} mismatched, "
            f"{counts[MISSING]} missing")
    if counts[UNVERIFIED]:
        tail += f", {counts[UNVERIFIED]} unverified (not re-hashed)"
    return "\n".join(lines + [tail])


def _indent(depth: int) -> str:
    return "  " * depth


def _short(h: str | None) -> str:
    return h[:SHORT] if h else "-"


def _git(commit: str | None) -> str:
    if not commit:
        return "-"
    dirty = commit.endswith("-dirty")
    return commit.removesuffix("-dirty")[:SHORT] + ("-dirty" if dirty else "")


def _node_line(n: LineageNode) -> str:
    shown = n.actual_hash or n.recorded_hash
    return (f"{_indent(n.depth)}{n.status:<10} {n.kind:<13} {n.path}  sha256 {_short(shown)}  "
            f"code {n.details.get('code_version') or '-'}  git {_git(n.details.get('git_commit'))}")


def _summary_lines(n: LineageNode) -> list[str]:
    pad = _indent(n.depth) + " " * 11
    parts = [f"created {n.details['created_at']}"] if n.details.get("created_at") else []
    parts += [f"{k}: {v}" for k, v in (n.details.get("summary") or {}).items() if v not in (None, "", "None")]
    if not parts:
        return []
    return textwrap.wrap(" · ".join(parts), width=110, initial_indent=pad, subsequent_indent=pad + "  ",
                         break_on_hyphens=False)


def _problem_lines(n: LineageNode) -> list[str]:
    pad = _indent(n.depth) + " " * 11
    out = [f"{pad}{c.status}: {c.why}" for c in n.checks if c.status in (MISMATCH, MISSING)]
    return out + [f"{pad}note: {note}" for note in n.notes]


def _compact(group: list[LineageNode]) -> list[str]:
    """Many nodes of one kind at one level (hundreds of shards, a corpus of many files): one line of
    counts, one of what they share, then only the nodes that are not ok."""
    pad = _indent(group[0].depth)
    counts = Counter(s.status for s in group)
    folders = sorted({str(s.path.parent) for s in group})
    where = folders[0] if len(folders) == 1 else f"{len(folders)} folders"
    status = ", ".join(f"{counts[k]} {k}" for k in (OK, UNVERIFIED, MISMATCH, MISSING) if counts[k])
    head = "NOT OK" if counts[MISMATCH] or counts[MISSING] else counts.most_common(1)[0][0]
    out = [f"{pad}{head:<10} {group[0].kind} x{len(group)} in {where}: {status}"]
    # What they share, once: code versions, commits, the settings that shaped them.
    summary = lambda key: lambda s: (s.details.get("summary") or {}).get(key)  # noqa: E731
    info = []
    for label, get in (("code", lambda s: s.details.get("code_version")),
                       ("git", lambda s: _git(s.details.get("git_commit"))),
                       ("shard_size", summary("shard_size")), ("tokenizer", summary("tokenizer")),
                       ("max_documents_per_file", summary("max_documents_per_file"))):
        values = Counter(v for v in map(get, group) if v and v not in ("-", "None"))
        if values:
            shown = ", ".join(v if len(values) == 1 else f"{v} ({c})" for v, c in values.most_common(3))
            info.append(f"{label} {shown}" + (f", +{len(values) - 3} more" if len(values) > 3 else ""))
    for key, unit in (("tokens", "tokens"), ("documents", "documents"), ("bytes", "bytes")):
        values = [int(v) for v in map(summary(key), group) if v and v.isdigit()]
        if values:
            info.append(f"{sum(values):,} {unit}")
    if info:
        out.append(pad + " " * 11 + "  ".join(info))
    for s in group:
        if not s.ok:
            out.append("  " + _node_line(s))
            out += ["  " + line for line in _problem_lines(s)]
    return out


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
