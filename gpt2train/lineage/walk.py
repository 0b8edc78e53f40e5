"""Walk any artifact back to the corpus files it was made from, re-hashing every file on the way.

    from gpt2train.lineage.walk import walk_lineage
    from gpt2train.lineage.format import format_lineage
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

The walk reads every sidecar first (each kind's node: gpt2train/lineage/nodes.py) and hashes
afterwards, all files in one pass, so one progress bar (bytes) covers the whole chain. Printing
the nodes is gpt2train/lineage/format.py.
"""

from __future__ import annotations

import json
from pathlib import Path

from tqdm.auto import tqdm

from gpt2train.errors import Gpt2TrainError
from gpt2train.fileio import sha256_file
from gpt2train.layout import CHECKPOINT_DONE, CHECKPOINT_STATE, LINEAGE_FILE, corpus_record_path, shards_dir
from gpt2train.lineage.nodes import (
    MISMATCH, MISSING, OK, SHORT, UNVERIFIED, FileCheck, LineageNode, add_recorded, checkpoint_node,
    corpus_file_node, export_node, record_node, report_node, shard_node,
)
from gpt2train.lineage.records import resolve_recorded, sidecar_data_dir, sidecar_path
from gpt2train.training.checkpoint import CheckpointState, RecordedTrain, TrainingLineage

# A node shows its worst file's status.
_SEVERITY = {OK: 0, UNVERIFIED: 1, MISMATCH: 2, MISSING: 3}

ACCEPTED = ("an eval report directory or its lineage.json, a Hugging Face export directory or its "
            "lineage.json, a checkpoint directory (.../checkpoints/step_XXXXXXXX) or its state.json, a token "
            "shard (.bin) or its .bin.json sidecar, or a corpus record (<data_dir>/corpus/records/<tag>.json)")


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
        if (path / LINEAGE_FILE).is_file():
            kind = _read_json(path / LINEAGE_FILE).get("artifact")
            if kind in ("eval_report", "hf_export"):
                return kind, path
        if (path / CHECKPOINT_STATE).is_file():
            return _checkpoint_dir(path)
        raise _not_an_artifact(path)
    if path.name.endswith(".bin"):
        if not sidecar_path(path).is_file():
            raise Gpt2TrainError(f"shard {path} has no sidecar {sidecar_path(path).name}: it records no lineage "
                                 f"(not written by gpt2train, e.g. a published llm.c shard)")
        return "token_shard", path
    if path.name.endswith(".bin.json"):
        return "token_shard", path.with_name(path.name[: -len(".json")])
    if path.name == CHECKPOINT_STATE:
        return _checkpoint_dir(path.parent)
    if path.suffix == ".json":
        kind = _read_json(path).get("artifact")
        if kind in ("eval_report", "hf_export") and path.name == LINEAGE_FILE:
            return kind, path.parent
        if kind == "corpus_file":  # a record describes a corpus file: the record is the node asked about
            return "corpus_record", path
    raise _not_an_artifact(path)


def _checkpoint_dir(path: Path) -> tuple[str, Path]:
    state = _read_json(path / CHECKPOINT_STATE)
    if "step" not in state or state.get("artifact", "checkpoint") != "checkpoint":
        raise _not_an_artifact(path)
    if not (path / CHECKPOINT_DONE).is_file():
        raise Gpt2TrainError(f"checkpoint {path} has no {CHECKPOINT_DONE} marker: it is incomplete (a crash during "
                             f"the save, or still being written); walk a complete checkpoint")
    return "checkpoint", path


def _not_an_artifact(path: Path) -> Gpt2TrainError:
    return Gpt2TrainError(f"{path} is not an artifact with recorded lineage; `gpt2train lineage` takes {ACCEPTED}")


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise Gpt2TrainError(f"{path} cannot be read as JSON ({e}); `gpt2train lineage` takes {ACCEPTED}") from e
    return data if isinstance(data, dict) else {}


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
    shard_refs: list[tuple[Path, dict | None]] = []  # (.bin, the checkpoint's entry for it)
    record_refs: dict[Path, dict] = {}  # record JSON -> {"key", "by_shard": {sha256 a shard saw: [shard names]}}
    if kind == "token_shard":
        shard_refs = [(root, None)]
    elif kind == "corpus_record":
        record_refs = {root: {"key": None, "by_shard": {}}}
    else:
        shard_refs = _walk_to_shards(kind, root, nodes)
    depth = len(nodes)  # above the shards every hop is one node
    if shard_refs:
        record_refs = _walk_shards(shard_refs, depth, nodes)
        depth += 1
    _walk_records(record_refs, depth, nodes)
    _verify(nodes, rehash, progress)
    return nodes


def _walk_to_shards(kind: str, root: Path, nodes: list[LineageNode]) -> list[tuple[Path, dict | None]]:
    """An eval report, export or checkpoint: its node and those of the hops down to the checkpoint
    (appended to `nodes`, one per depth); returns the shards the checkpoint trained on."""
    ckpt_dir: Path | None = root
    ckpt_expect: dict[str, str | None] = {}
    if kind == "eval_report":
        report, export_dir = _walk_report(root, nodes)
        ckpt_dir, ckpt_expect = _walk_export(export_dir, report, root, nodes)
    elif kind == "hf_export":
        ckpt_dir, ckpt_expect = _walk_export(root, None, root, nodes)
    if ckpt_dir is None:
        return []
    return _walk_checkpoint(ckpt_dir, ckpt_expect, nodes)


def _walk_report(root: Path, nodes: list[LineageNode]) -> tuple[dict, Path | None]:
    """The report's node; returns its lineage.json and the export it names (None if it names none)."""
    report = _read_json(root / LINEAGE_FILE)  # the path asked about: unreadable is an error
    node = report_node(root, len(nodes), report)
    nodes.append(node)
    export_dir = _resolve((report.get("export") or {}).get("path"), report, root)
    if export_dir is None:
        node.notes.append("records no export path: following its copy of the checkpoint reference")
    return report, export_dir


def _walk_export(root: Path | None, report: dict | None, report_root: Path,
                 nodes: list[LineageNode]) -> tuple[Path | None, dict[str, str | None]]:
    """The export's node (none when the report names no export); returns the checkpoint it names
    and the checkpoint weights' sha256 as the export and the report recorded them."""
    export = None
    if root is not None:
        node, export = export_node(root, len(nodes), report)
        nodes.append(node)
    # The export's reference; if its lineage.json is gone, the report's copy of it.
    if (export or {}).get("checkpoint"):
        ref = export["checkpoint"]
        ckpt_dir = _resolve(ref.get("path"), export, root)
    else:
        ref = (report or {}).get("checkpoint") or {}
        ckpt_dir = _resolve(ref.get("path"), report, report_root) if report else None
    ckpt_expect: dict[str, str | None] = {}
    if export:
        ckpt_expect["export lineage.json"] = ref.get("model_sha256")
    if report:
        ckpt_expect["report lineage.json"] = (report.get("checkpoint") or {}).get("model_sha256")
    if ckpt_dir is None:
        nodes[-1].notes.append("records no checkpoint path: the walk ends here")
    return ckpt_dir, ckpt_expect


def _walk_checkpoint(ckpt_dir: Path, expect: dict[str, str | None],
                     nodes: list[LineageNode]) -> list[tuple[Path, dict | None]]:
    """The checkpoint's node; returns the shards its state.json lists, with its entry for each."""
    node, state = checkpoint_node(ckpt_dir, len(nodes), expect)
    nodes.append(node)
    if state is None:
        return []
    shard_refs = _checkpoint_shards(state, ckpt_dir)
    if not shard_refs:
        node.notes.append("records no shards (trained before checkpoints recorded lineage?)")
    return shard_refs


def _walk_shards(shard_refs: list[tuple[Path, dict | None]], depth: int,
                 nodes: list[LineageNode]) -> dict[Path, dict]:
    """One node per shard; returns the corpus records their sources name, with the sha256 each shard
    saw of the record's file (by_shard: sha256 -> the shards that recorded it)."""
    record_refs: dict[Path, dict] = {}
    seen_shards: dict[Path, LineageNode] = {}
    for shard, entry in shard_refs:
        key = shard.resolve()
        if key in seen_shards:  # listed twice (train and val globs overlapping): one node, both records
            add_recorded(seen_shards[key].checks[0], "checkpoint state.json", (entry or {}).get("sha256"))
            continue
        node, sidecar = shard_node(shard, depth, entry)
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
    return record_refs


def _walk_records(record_refs: dict[Path, dict], depth: int, nodes: list[LineageNode]) -> None:
    """One node per corpus record at `depth`, then one per source file they name at `depth + 1`."""
    files: list[LineageNode] = []
    seen_files: set[Path] = set()
    for rec, ref in record_refs.items():
        node, record = record_node(rec, depth, ref["key"])
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
        files.append(corpus_file_node(local, depth + 1, record, ref["by_shard"]))
        if not local.exists():  # e.g. a data dir moved to another machine without its corpus.source mirror
            files[-1].notes.append(f"the source file {record.get('key')!r} is missing: it was recorded at {local} "
                                   f"(corpus.source outside the data dir stays where it was); put it back there "
                                   f"to verify the chain")
    nodes.extend(files)


def _checkpoint_shards(state: CheckpointState, root: Path) -> list[tuple[Path, dict]]:
    lineage = state.lineage or TrainingLineage()
    t = state.config.train or RecordedTrain()
    # `shards_dir` is recorded since checkpoints carry full lineage; older ones: the configured globs.
    if lineage.shards_dir:
        train_dir = val_dir = _resolve(lineage.shards_dir, state.record, root)
    else:
        default = shards_dir(state.config.data_dir or ".")
        train_dir = Path(t.train_glob).parent if t.train_glob else default
        val_dir = Path(t.val_glob).parent if t.val_glob else default
    refs = []
    for entries, glob, folder in ((lineage.train_shards, t.train_glob, train_dir),
                                  (lineage.val_shards, t.val_glob, val_dir)):
        for entry in entries:
            path = folder / entry["file"]
            if glob and not (path.exists() or sidecar_path(path).exists()):
                # shards_dir is the train glob's folder: a val glob elsewhere keeps its shards there
                alt = Path(glob).parent / entry["file"]
                path = alt if alt.exists() or sidecar_path(alt).exists() else path
            refs.append((path, entry))
    return refs


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
        c.why = (f"no {CHECKPOINT_DONE} marker in {c.path.parent}: the checkpoint is incomplete"
                 if c.path.name == CHECKPOINT_DONE else f"{c.path} is gone")
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
