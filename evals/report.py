"""The human eval report: the harness's scores next to published GPT-2 / GPT-3 figures.

    md, html = render_report(ReportInputs(...))     # evals/runner.py calls this

One report = one checkpoint's export. It shows
- the harness's metrics (value ± stderr) beside the published GPT-2 figure *of the same
  scorer* for the model's size (llm.c's quotes of the harness: HellaSwag acc_norm 0.3114 for
  124M, 0.5089 for 1558M);
- every published figure for that size from `evals.baselines_file`, each with its scorer:
  the harness's acc_norm (normalised by characters) and llm.c's scorer (mean per-token loss,
  what gpt2train's in-loop eval uses) differ by ~0.02 on GPT-2 124M (0.3114 vs 0.2955);
- the in-loop HellaSwag (llm.c's scorer) and val loss that training logged for the checkpoint's
  own step (`metrics.jsonl`; the trainer evaluates every checkpoint), next to the published
  figures of *that* scorer; a figure from an earlier step is labelled as such, never as the same;
  a published val loss only where the checkpoint's val tokens are from the dataset it was measured
  on (FineWeb-Edu, FineWeb: the Hub's files or a mirror of them), else one line says why not;
- the training behind the checkpoint (evals/report_extras.py): tokens seen, wall time, training
  FLOPs, the loss curve and this run's score trend (inline PNGs in report.html, files beside
  report.md) and a sample of the exported weights for a fixed prompt and seed;
- the lineage (export, checkpoint, run tag, code version, git commit, the state.json and
  metrics.jsonl lines the training figures come from) and, when `limit` is set, that the scores
  come from a subset and are not comparable to full-set figures.

Models smaller than GPT-2 124M (the `tiny` CPU preset) are compared with 124M, the smallest
published size; every column of published figures names the size it holds, and a note says when
the model is more than FAR_RATIO× smaller or larger than it (`size_note`).
"""

from __future__ import annotations

import base64
import fnmatch
import html
import json
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evals.published import (NOMINAL_PARAMS, published_baselines, published_size, same_val_data,
                             val_loss_left_out)
from gpt2train.errors import DataError
from gpt2train.fileio import read_json

# What each published figure (evals/published.py, or evals.baselines_file) is: (name, scorer). Only a
# figure of the harness's scorer stands next to a harness metric; llm.c's stand next to the in-loop numbers.
BASELINE_LABELS = {
    "gpt2_harness_hellaswag_acc_norm": ("GPT-2 HellaSwag acc_norm", "Eleuther harness acc_norm (this report's scorer)"),
    "gpt2_harness_hellaswag_acc": ("GPT-2 HellaSwag acc", "Eleuther harness acc (this report's scorer)"),
    "gpt2_hellaswag_llmc": ("GPT-2 HellaSwag (llm.c)", "llm.c's scorer (mean per-token loss; the in-loop eval's)"),
    "gpt2_hellaswag_llmc_script_acc_norm": ("GPT-2 HellaSwag acc_norm (llm.c script)",
                                            "llm.c's dev/data/hellaswag.py (mean per-token loss)"),
    "gpt2_hellaswag_llmc_script_acc": ("GPT-2 HellaSwag acc (llm.c script)",
                                       "llm.c's dev/data/hellaswag.py (summed loss)"),
    "gpt3_hellaswag": ("GPT-3 HellaSwag", "GPT-3 paper figure (llm.c's vislog baseline line)"),
    "gpt2_val_loss_fineweb": ("GPT-2 val loss, FineWeb", "mean next-token loss on FineWeb 10B validation tokens"),
    "gpt2_val_loss_fineweb_edu": ("GPT-2 val loss, FineWeb-Edu",
                                  "mean next-token loss on FineWeb-Edu validation tokens"),
}
# Our harness (task, metric) -> the published figure of the same scorer.
HARNESS_BASELINE = {("hellaswag", "acc_norm"): "gpt2_harness_hellaswag_acc_norm",
                    ("hellaswag", "acc"): "gpt2_harness_hellaswag_acc"}
# In-loop metric -> published figures of the same scorer / data.
IN_LOOP_BASELINES = {"hellaswag_acc_norm": ("gpt2_hellaswag_llmc", "gpt3_hellaswag"),
                     "val_loss": ("gpt2_val_loss_fineweb_edu", "gpt2_val_loss_fineweb")}


@dataclass
class ModelSize:
    published: str
    """Key into the baselines' `models` (`124M`)."""
    label: str
    """How the report names the comparison (`124M (the smallest published)`)."""
    n_params: int | None


@dataclass
class ReportInputs:
    """Everything one report shows; the runner fills it."""

    title: str
    step: int | None
    tasks: list[dict[str, Any]]
    """EvalTask.to_dict() of each task, plus `n_shot` (what the harness used) and `n_samples`."""
    results: dict[str, Any]
    """The harness's `results` section: {harness_task: {"acc,none": ..., "acc_stderr,none": ...}}."""
    size: ModelSize
    baselines: dict[str, Any] | None
    baselines_file: str | None
    in_loop: dict[str, Any]
    limit: int | None
    lineage: dict[str, Any]
    versions: dict[str, str] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    """Tokens seen, wall time, FLOPs at the checkpoint's step (evals/report_extras.py training_facts)."""
    sample: dict[str, Any] = field(default_factory=dict)
    """prompt, tokens, top_k, seed, text: the sample of the exported weights."""
    images: list[tuple[str, str, bytes]] = field(default_factory=list)
    """(file name in the report folder, caption, PNG bytes): linked from report.md, embedded in report.html."""
    references: list[Any] = field(default_factory=list)
    """evals/reference.py ReferenceComparison per evals.reference_reports entry: a score column each."""
    corpus: dict[str, Any] | None = None
    """What the checkpoint's val tokens are (gpt2train/data/identity.py CorpusIdentity as a dict; None:
    unknown): which published val loss may stand beside the checkpoint's own (evals/published.py)."""


# ------------------------------------------------------------------------------- inputs

def count_parameters(safetensors_path: str | Path) -> int:
    """Parameters stored in a .safetensors file, from its header (no tensor is read)."""
    with open(safetensors_path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))  # little-endian u64: header length
        header = json.loads(f.read(n))
    total = 0
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        count = 1
        for d in meta["shape"]:
            count *= d
        total += count
    return total


def model_size(n_layer: int, n_embd: int, n_params: int | None) -> ModelSize:
    """GPT-2's published size for this shape: d12 124M, d24 350M, d36 774M, d48 1558M; smaller -> 124M."""
    size = published_size(n_layer, n_embd)
    if size is not None:
        return ModelSize(size, size, n_params)
    if n_params is None or n_params < NOMINAL_PARAMS["124M"]:
        return ModelSize("124M", "124M (the smallest published)", n_params)
    # An unpublished shape larger than 124M: the nearest published size by parameter count.
    size = min(NOMINAL_PARAMS, key=lambda s: abs(NOMINAL_PARAMS[s] - n_params))
    return ModelSize(size, f"{size} (the nearest published size)", n_params)


def load_baselines(path: str | Path | None) -> dict[str, Any]:
    """The published figures: evals.baselines_file when set (a JSON of the same shape), else the
    project's own table (evals/published.py)."""
    if not path:
        return published_baselines()
    data = read_json(path, "evals.baselines_file")
    if not isinstance(data, dict) or not isinstance(data.get("models"), dict):
        raise DataError(f"evals.baselines_file {path}: expected a JSON object with `models: {{size: {{figure: "
                        f"value}}}}`; fix the file or unset evals.baselines_file")
    return data


def in_loop_metrics(metrics_path: str | Path | None, step: int | None) -> dict[str, Any]:
    """The val loss and in-loop HellaSwag training logged at `step`, else at the nearest earlier step.

    Returns {"val_loss": {"value", "step"}, "hellaswag_acc_norm": {"value", "step", "n"}, "path"} with
    only the metrics found; {} without a metrics file or step.
    """
    if metrics_path is None or step is None or not Path(metrics_path).is_file():
        return {}
    best: dict[str, dict[str, Any]] = {}
    for line in Path(metrics_path).read_text().splitlines():
        if not line.strip():
            continue
        try:
            r = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line torn by a crash mid-write; the others still count
        s = r.get("step")
        if not isinstance(s, int) or s > step:
            continue
        for key in ("val_loss", "hellaswag_acc_norm"):
            if key in r and (key not in best or s >= best[key]["step"]):
                best[key] = {"value": r[key], "step": s}
                if key == "hellaswag_acc_norm" and "hellaswag_n" in r:
                    best[key]["n"] = r["hellaswag_n"]
    return {**best, "path": str(metrics_path)} if best else {}


def harness_metrics(task_results: dict[str, Any]) -> dict[str, float]:
    """{"acc,none": 0.3, "acc_stderr,none": 0.01, "alias": ...} -> {"acc": 0.3, "acc_stderr": 0.01}.

    The harness keys a metric `<metric>,<filter>`; the filter `none` is dropped, others kept.
    Non-numeric values (an "N/A" stderr) are left out.
    """
    out = {}
    for key, value in task_results.items():
        metric, sep, filt = key.partition(",")
        if not sep or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        out[metric if filt == "none" else key] = float(value)
    return out


# ------------------------------------------------------------------------------- rendering

# What guessing scores on multiple-choice tasks with a fixed number of choices (1 / choices), for
# acc and acc_norm: HellaSwag 4 endings, PIQA and WinoGrande 2 options, MMLU and OpenBookQA 4; ARC
# mostly 4 (a few questions have 3 or 5).
CHANCE = {"hellaswag": 0.25, "piqa": 0.5, "winogrande": 0.5, "mmlu": 0.25, "openbookqa": 0.25,
          "arc_easy": 0.25, "arc_challenge": 0.25}


def render_report(r: ReportInputs) -> tuple[str, str]:
    """(markdown, html) of the report."""
    blocks = _report_blocks(r)
    return _to_markdown(blocks), _to_html(blocks, r.title)


def _report_blocks(r: ReportInputs) -> list[tuple]:
    """The report as blocks (`h1`, `h2`, `p`, `note`, `ul`, `table`), rendered by _to_markdown and _to_html."""
    models = (r.baselines or {}).get("models", {})
    figures = models.get(r.size.published, {})
    return (_header_blocks(r) + _score_blocks(r, figures) + _in_loop_blocks(r, figures) + _training_blocks(r)
            + _published_blocks(r, figures) + _notes_blocks(r) + _lineage_blocks(r))


def _header_blocks(r: ReportInputs) -> list[tuple]:
    params = f"{r.size.n_params / 1e6:.2f}M parameters" if r.size.n_params else "parameter count unknown"
    b: list[tuple] = [("h1", r.title)]
    b.append(("p", f"Step {r.step if r.step is not None else '?'} · {params} · compared with GPT-2 "
                   f"{r.size.label} · scored by the Eleuther lm-eval harness {r.versions.get('lm_eval', '')}"))
    far = size_note(r.size)
    if far:
        b.append(("note", far))
    if r.limit is not None:
        b.append(("note", f"limit = {r.limit}: only the first {r.limit} items of each task were scored. The scores "
                          f"have wide error bars and are not comparable to the published full-set figures."))
    return b


def _score_blocks(r: ReportInputs, figures: dict[str, Any]) -> list[tuple]:
    # Scores, each beside the published figure of the same scorer and the task's chance level.
    rows, near_chance = [], []
    by_harness = {t["harness_task"]: t for t in r.tasks}
    for harness_task, res in r.results.items():
        t = by_harness.get(harness_task)
        name = t["name"] if t else harness_task
        m = harness_metrics(res)
        for metric, value in m.items():
            if metric.endswith("_stderr") or "_stderr," in metric:
                continue
            stderr = m.get(metric.replace(",", "_stderr,", 1) if "," in metric else metric + "_stderr")
            key = HARNESS_BASELINE.get((name, metric))
            ref = f"{figures[key]:.4f}" if key and key in figures else "–"
            data = ("local: " + Path(t["local_path"]).name) if t and t.get("local_path") else "Hub"
            chance = CHANCE.get(name) if metric.split(",")[0] in ("acc", "acc_norm") else None
            if chance is not None and abs(value - chance) <= 2 * (stderr or 0):
                near_chance.append(f"{name} {metric} {_pm(value, stderr)} is within two standard errors of chance "
                                   f"({chance:g}): no evidence yet that the model does better than guessing.")
            elif chance is not None and value < chance - 2 * (stderr or 0):
                near_chance.append(f"{name} {metric} {_pm(value, stderr)} is below chance ({chance:g}) by more than "
                                   f"two standard errors: guessing would do better, so suspect the task's data or "
                                   f"labels (a local file's) as much as the model.")
            rows.append([name if harness_task == name or not t else f"{name} ({harness_task})", metric,
                         _pm(value, stderr), _fmt(chance), ref, *(c.cell(name, metric) for c in r.references),
                         _fmt(t.get("n_samples") if t else None), _fmt(t.get("n_shot") if t else None), data])
    # A reference measured on other data or settings: a line saying what differs, not its number.
    differs = [n for c in r.references for n in c.notes()]
    return [("h2", "Scores (Eleuther lm-eval harness)"),
            ("table", ["task", "metric", "this model (± stderr)", "chance",
                       f"GPT-2 {r.size.published} (published, harness)", *(c.header for c in r.references),
                       "items", "few-shot", "data"], rows)] + [("note", n) for n in near_chance + differs]


def _in_loop_blocks(r: ReportInputs, figures: dict[str, Any]) -> list[tuple]:
    # In-loop numbers (llm.c's scorer), of this checkpoint's own weights where training logged them.
    b: list[tuple] = [("h2", "In-loop numbers from training")]
    il = r.in_loop
    if not il:
        b.append(("p", "No training metrics for this step were found (the run's metrics.jsonl was not given or "
                       "holds no val loss / HellaSwag at or before this step)."))
        return b
    rows = []
    for key, label in (("hellaswag_acc_norm", "HellaSwag acc_norm (llm.c scorer)"), ("val_loss", "val loss")):
        if key not in il:
            continue
        rec = il[key]
        at = (f"step {rec['step']} (this checkpoint)" if rec["step"] == r.step else
              f"step {rec['step']}: an earlier model than this step-{r.step} checkpoint")
        if "n" in rec:
            label += f", {rec['n']} items"
        shown = [k for k in IN_LOOP_BASELINES[key] if k in figures]
        if key == "val_loss":
            shown = [k for k in shown if same_val_data(k, r.corpus)]
        refs = "; ".join(f"{_baseline_name(k)} {figures[k]:.4f}" for k in shown)
        rows.append([label, f"{rec['value']:.4f}", at, refs or "–"])
    b.append(("table", ["metric", "value", "logged at", f"GPT-2 {r.size.published} (published, same scorer)"], rows))
    if "val_loss" in il and (why := val_loss_left_out([k for k in IN_LOOP_BASELINES["val_loss"] if k in figures],
                                                       r.corpus)):
        b.append(("note", why))
    b.append(("p", f"From {il['path']}."))
    return b


# Sizes further apart than this (either way) make the comparison a size the model is not.
FAR_RATIO = 4


def size_note(size: ModelSize) -> str | None:
    """A line when the model's parameter count is more than FAR_RATIO× from the compared size's, else None."""
    if not size.n_params:
        return None
    nominal = NOMINAL_PARAMS[size.published]
    ratio = nominal / size.n_params
    if 1 / FAR_RATIO <= ratio <= FAR_RATIO:
        return None
    apart = f"{ratio:.0f}× smaller than" if ratio > 1 else f"{1 / ratio:.0f}× larger than"
    return (f"model has {size.n_params / 1e6:.1f} M parameters, {apart} the comparison (GPT-2 {size.published}, "
            f"~{nominal / 1e6:.0f} M): the published figures say what a model of that size reaches, not what "
            f"one of this size should.")


def _training_blocks(r: ReportInputs) -> list[tuple]:
    # What the checkpoint's weights cost and saw, their loss curve and trend, and a sample of them.
    t, b = r.training, [("h2", "Training behind this checkpoint")]
    if t.get("before_instability"):  # the checkpoint's mark in its state.json (evals/report_extras.py)
        b.append(("note", f"This is the {t['before_instability']['says']}: kept by training, never pruned."))
    if t.get("tokens") is not None:
        seen = f"{t['tokens']:,} (step {t['step']} × {t['total_batch_tokens']:,} tokens per step)"
        if t.get("init_from"):
            seen += f", after starting from {t['init_from']} (what it had seen before is not counted)"
        rows = [["tokens seen", seen]]
        if t.get("wall_seconds") is not None:
            timed = (f"all {t['steps_timed']} steps" if t["steps_timed"] == t["step"] else
                     f"only {t['steps_timed']} of the {t['step']} steps")
            rows.append(["training wall time", f"{_duration(t['wall_seconds'])}: the step times metrics.jsonl logged "
                                               f"({timed}); evals, samples and checkpoint saves not counted"])
        if t.get("flops") is not None:
            rows.append(["training FLOPs", f"{t['flops']:.3e} = (6·N + 6·L·C·T) · D with N = {t['n_params']:,} "
                                           f"parameters (vocabulary padded, as the trainer counts), "
                                           f"L = {t['n_layer']}, C = {t['n_embd']}, T = {t['seq_len']}, D = tokens "
                                           f"seen: llm.c's count (causal attention), the one the trainer's MFU uses"])
        b.append(("table", ["figure", "value"], rows))
    else:
        b.append(("p", f"Tokens seen, wall time and FLOPs unknown: {t.get('missing', 'no training state given')}."))
    b += [("img", caption, name, png) for name, caption, png in r.images]
    smp = r.sample
    if smp:
        b.append(("p", f"Sample of the exported weights: prompt {smp['prompt']!r}, {smp['tokens']} tokens, top-k "
                       f"{smp['top_k']}, temperature {smp['temperature']:g}, seed {smp['seed']}, on the "
                       f"{smp['device']} (`gpt2train sample EXPORT --prompt \"{smp['prompt']}\" --tokens {smp['tokens']} "
                       f"--seed {smp['seed']} --device {smp['device']}` prints the same):"))
        b.append(("pre", smp["text"]))
    return b


def _published_blocks(r: ReportInputs, figures: dict[str, Any]) -> list[tuple]:
    # Every published figure for the size, with its scorer and source.
    b: list[tuple] = [("h2", f"Published figures for GPT-2 {r.size.published}")]
    source_name = r.baselines_file or "the project's table of published figures (evals/published.py)"
    if not figures:
        why = "no published figures were given" if r.baselines is None else \
            f"{source_name} has no figures for {r.size.published}"
        b.append(("p", f"None shown: {why}."))
        return b
    sources = (r.baselines or {}).get("sources", {})
    rows = [[_baseline_name(k), f"{v:.4f}" if isinstance(v, (int, float)) else str(v),
             BASELINE_LABELS.get(k, (k, "–"))[1], _source(k, sources)]
            for k, v in figures.items()]
    b.append(("table", ["figure", "value", "scorer", "source"], rows))
    b.append(("p", f"From {source_name}. The harness's acc_norm normalises each ending's log-likelihood "
                   f"by its length in characters; llm.c's scorer takes the mean per-token loss; the two differ "
                   f"by ~0.02 on GPT-2 124M, so compare each number only with the figure of its own scorer."))
    return b


def _notes_blocks(r: ReportInputs) -> list[tuple]:
    notes = []
    for t in r.tasks:
        if t.get("local_path"):
            notes.append(f"{t['name']}: the harness's own task definition ({t['harness_yaml']}) run on the local file "
                         f"{t['local_path']} (sha256 {t['local_sha256'][:16]}…) as its {t['split']} split, not on the "
                         f"Hub's dataset; reported by the harness as {t['harness_task']}.")
            if t.get("n_shot"):
                notes.append(f"{t['name']}: the {t['n_shot']} few-shot examples come from the same local file "
                             f"(the scored item excluded), since it holds no training split.")
        if t.get("num_fewshot") is not None and t.get("n_shot") is not None and t["num_fewshot"] != t["n_shot"]:
            notes.append(f"{t['name']}: {t['num_fewshot']} few-shot examples were asked for; the harness's task "
                         f"config fixes {t['n_shot']}.")
    return [("h2", "Notes"), ("ul", notes)] if notes else []


def _lineage_blocks(r: ReportInputs) -> list[tuple]:
    lin = r.lineage
    ck = lin.get("checkpoint", {})
    ex = lin.get("export", {})
    return [("h2", "Lineage"), ("table", ["record", "value"], [
        ["export", str(ex.get("path"))],
        ["export model.safetensors sha256", str(ex.get("model_sha256"))],
        ["checkpoint", f"{ck.get('key')} ({ck.get('path')})"],
        ["checkpoint step", _fmt(ck.get("step"))],
        ["run tag", str(ck.get("run_tag"))],
        ["eval code version", str(lin.get("code_version"))],
        ["git commit", str(lin.get("git_commit"))],
        ["versions", ", ".join(f"{k} {v}" for k, v in r.versions.items())],
        ["eval device", f"{lin.get('device')}: {(lin.get('device_choice') or {}).get('reason', '')}"],
    ] + [[f"reference: {c.reference.label}", f"{c.reference.path} (lineage.json sha256 {c.reference.lineage_sha256})"]
         for c in r.references] + _training_lineage_rows(r.training))]


def _training_lineage_rows(t: dict[str, Any]) -> list[list[str]]:
    rows = []
    if t.get("state"):
        rows.append(["checkpoint state.json", f"{t['state']['path']} (sha256 {t['state']['sha256']})"])
    if t.get("metrics"):
        m = t["metrics"]
        rows.append([f"metrics.jsonl up to step {t['step']}", f"{m['path']}: {m['records']} records "
                                                              f"(sha256 of those lines {m['sha256']})"])
    return rows


def _baseline_name(key: str) -> str:
    return BASELINE_LABELS.get(key, (key, ""))[0]


def _source(key: str, sources: dict[str, str]) -> str:
    for patterns, text in sources.items():
        if any(fnmatch.fnmatchcase(key, p.strip()) for p in patterns.split(",")):
            return text
    return "–"


def _duration(seconds: float) -> str:
    """`1h02m03s`, `4m05s`, `12.3s`."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    s = int(round(seconds))
    h, m = s // 3600, s // 60 % 60
    return f"{h}h{m:02d}m{s % 60:02d}s" if h else f"{m}m{s % 60:02d}s"


def _pm(value: float, stderr: float | None) -> str:
    return f"{value:.4f} ± {stderr:.4f}" if stderr is not None else f"{value:.4f}"


def _fmt(v: Any) -> str:
    return "–" if v is None else str(v)


def _longest_backtick_run(text: str) -> int:
    """A fence longer than any run of backticks in a sample keeps it one code block."""
    return max([0] + [len(run) for run in re.findall(r"`+", text)])


def _to_markdown(blocks: list[tuple]) -> str:
    out = []
    for kind, *rest in blocks:
        if kind == "h1":
            out.append(f"# {rest[0]}\n")
        elif kind == "h2":
            out.append(f"## {rest[0]}\n")
        elif kind == "p":
            out.append(f"{rest[0]}\n")
        elif kind == "note":
            out.append(f"> **Note:** {rest[0]}\n")
        elif kind == "ul":
            out.append("\n".join(f"- {item}" for item in rest[0]) + "\n")
        elif kind == "pre":
            fence = "`" * max(3, _longest_backtick_run(rest[0]) + 1)
            out.append(f"{fence}text\n{rest[0]}\n{fence}\n")
        elif kind == "img":  # the PNG lies beside report.md
            caption, name, _ = rest
            out.append(f"![{caption}]({name})\n")
        elif kind == "table":
            header, rows = rest
            cell = lambda s: str(s).replace("|", "\\|")  # noqa: E731
            lines = ["| " + " | ".join(map(cell, header)) + " |", "|" + "---|" * len(header)]
            lines += ["| " + " | ".join(map(cell, row)) + " |" for row in rows]
            out.append("\n".join(lines) + "\n")
    return "\n".join(out)


def _to_html(blocks: list[tuple], title: str) -> str:
    e = html.escape
    out = [f"<!doctype html>\n<html><head><meta charset='utf-8'><title>{e(title)}</title>",
           "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}table{border-collapse:collapse}"
           "td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left}.note{background:#fff3cd;padding:.5em}"
           "img{max-width:100%}pre{white-space:pre-wrap;background:#f6f6f6;padding:.5em}"
           "</style></head><body>"]
    for kind, *rest in blocks:
        if kind in ("h1", "h2"):
            out.append(f"<{kind}>{e(rest[0])}</{kind}>")
        elif kind == "p":
            out.append(f"<p>{e(rest[0])}</p>")
        elif kind == "note":
            out.append(f"<p class='note'><b>Note:</b> {e(rest[0])}</p>")
        elif kind == "ul":
            out.append("<ul>" + "".join(f"<li>{e(i)}</li>" for i in rest[0]) + "</ul>")
        elif kind == "pre":
            out.append(f"<pre>{e(rest[0])}</pre>")
        elif kind == "img":  # inline, so that report.html is one self-contained file
            caption, _, png = rest
            out.append(f"<figure><img alt='{e(caption)}' src='data:image/png;base64,{base64.b64encode(png).decode()}'>"
                       f"<figcaption>{e(caption)}</figcaption></figure>")
        elif kind == "table":
            header, rows = rest
            out.append("<table><tr>" + "".join(f"<th>{e(str(h))}</th>" for h in header) + "</tr>")
            out += ["<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in row) + "</tr>" for row in rows]
            out.append("</table>")
    out.append("</body></html>\n")
    return "\n".join(out)
