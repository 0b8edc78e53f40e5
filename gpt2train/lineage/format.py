"""A lineage walk printed as a tree: what `gpt2train lineage PATH` shows.

    from gpt2train.lineage.format import format_lineage
    print(format_lineage(walk_lineage(path)))      # gpt2train/lineage/walk.py

One line per artifact (status, kind, path, short hash, code version, git commit), its config
summary and any problems under it; hundreds of shards or corpus files at one level print as
counts plus the ones that are not ok.
"""

from __future__ import annotations

import textwrap
from collections import Counter

from gpt2train.lineage.nodes import MISMATCH, MISSING, OK, SHORT, UNVERIFIED, LineageNode

# A level with more shard nodes than this prints as counts plus the ones that are not ok.
COMPACT_OVER = 8
_COMPACTABLE = ("token_shard", "corpus_record", "corpus_file")


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
    info = _shared_info(group)
    if info:
        out.append(pad + " " * 11 + "  ".join(info))
    for s in group:
        if not s.ok:
            out.append("  " + _node_line(s))
            out += ["  " + line for line in _problem_lines(s)]
    return out


def _shared_info(group: list[LineageNode]) -> list[str]:
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
    return info
