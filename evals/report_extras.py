"""What an eval report says besides the scores: the training behind the checkpoint, a sample, and plots.

    extras = write_report_extras(tmp, ExtrasSources(...))   # evals/runner.py, while writing a report
    extras.lineage    # {"training": ..., "sample": ..., "trend": ...}: merged into the report's lineage.json
    extras.images     # [(file name, caption, PNG bytes)]: report.md links them, report.html embeds them

- training: whether the checkpoint is the last before an instability (its state.json's mark:
  gpt2train/training/checkpoint.py `before_instability`), tokens seen (step × train.total_batch_tokens, from
  the checkpoint's state.json), wall time
  (the sum of the step times `ms` that metrics.jsonl logged up to that step: evals, samples and
  checkpoint saves not counted) and training FLOPs, `GPT.flops_per_token(seq_len)` × tokens: llm.c's
  count, 6·N + 6·L·C·T per token (N all parameters with the padded vocabulary, the causal attention
  scores 6·L·C·T), the same count as the trainer's MFU;
- one sample for a fixed prompt, drawn by gpt2train's own sampler (gpt2train/sample.py, with the KV
  cache) from the exported weights with a fixed seed, on the eval's device (evals.device: the report
  names it). Those weights are the ones the harness loaded for scoring, copied into our GPT on the
  same device (`sampler_model`): the export is read once per report. A seed gives the same text on
  the same device and torch: `gpt2train sample EXPORT --prompt "<SAMPLE_PROMPT>" --tokens 32 --seed
  1337 --device <device>` prints it (another device may round differently and, rarely, draw another
  token);
- loss_curve.png: train / val loss from metrics.jsonl up to the checkpoint's step, a marker at it;
- trend.png: the scores of this run's earlier reports (folders beside this one) and this one's.

Everything is read only up to the checkpoint's step (a run still training appends to metrics.jsonl),
so the same inputs give the same report; lineage.json records each input's sha256 (of metrics.jsonl:
of the lines used).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evals.trend import plot_trend, read_reports, report_row
from gpt2train.export.hf_export import exported_checkpoint
from gpt2train.fileio import read_json, sha256_file
from gpt2train.layout import CHECKPOINT_STATE, LINEAGE_FILE
from gpt2train.lineage.records import recorded_path
from gpt2train.training.checkpoint import CheckpointState, RecordedTrain

# The report's sample: nanoGPT / build-nanogpt's prompt; gpt2train.sample's defaults otherwise
# (top-k 40, temperature 1, seed 1337 = train.seed's default).
SAMPLE_PROMPT = "Hello, I'm a language model,"
SAMPLE_TOKENS = 32
SAMPLE_TOP_K = 40
SAMPLE_SEED = 1337
LOSS_PNG, TREND_PNG = "loss_curve.png", "trend.png"


@dataclass
class ExtrasSources:
    report_dir: Path
    """Where the report will lie: its sibling folders are the earlier reports the trend shows."""
    export_dir: Path
    export_lineage: dict[str, Any]
    """The export's lineage.json ({} for a reference model): names the checkpoint."""
    metrics_path: Path | None
    report_lineage: dict[str, Any]
    """The report's lineage.json so far (step, checkpoint, metrics, in_loop): its row of the trend."""
    data_dir: Path | None
    """Recorded paths are relative to it (gpt2train/lineage/records.py)."""
    model: Any = None
    """Our GPT holding the export's weights on `device` (`sampler_model`); None: loaded from export_dir."""
    device: str = "cpu"
    """Where the sample is drawn: the eval's device."""


@dataclass
class ReportExtras:
    training: dict[str, Any]
    sample: dict[str, Any]
    images: list[tuple[str, str, bytes]] = field(default_factory=list)
    trend_reports: list[dict[str, Any]] = field(default_factory=list)

    @property
    def lineage(self) -> dict[str, Any]:
        return {"training": self.training, "sample": self.sample, "trend": {"reports": self.trend_reports}}


def write_report_extras(tmp: Path, src: ExtrasSources) -> ReportExtras:
    """The facts and the sample, and loss_curve.png / trend.png written into `tmp` (the report's temp folder)."""
    from gpt2train.sample import sample
    from gpt2train.training.plots import plot_loss_curve
    from gpt2train.weights import load_model

    ckpt = exported_checkpoint(src.export_lineage, src.export_dir) if src.export_lineage else None
    training = training_facts(ckpt, src.metrics_path, src.data_dir, src.report_lineage.get("step"))
    model = src.model if src.model is not None else load_model(src.export_dir)[0].to(src.device)
    text = sample(model, SAMPLE_PROMPT, tokens=SAMPLE_TOKENS, top_k=SAMPLE_TOP_K, seed=SAMPLE_SEED,
                  device=src.device)[0]
    sampled = {"prompt": SAMPLE_PROMPT, "tokens": SAMPLE_TOKENS, "top_k": SAMPLE_TOP_K, "temperature": 1.0,
               "seed": SAMPLE_SEED, "device": src.device, "text": text}
    if training.get("tokens") is not None and training.get("seq_len"):
        c = model.config
        training.update(n_params=model.num_params(), n_layer=c.n_layer, n_embd=c.n_embd,
                        flops_per_token=model.flops_per_token(training["seq_len"]))
        training["flops"] = training["flops_per_token"] * training["tokens"]
    del model

    extras = ReportExtras(training=training, sample=sampled)
    step = training.get("step")
    if step is not None and src.metrics_path is not None and plot_loss_curve(src.metrics_path, tmp / LOSS_PNG, step):
        extras.images.append((LOSS_PNG, f"Train and val loss from metrics.jsonl up to step {step}",
                              (tmp / LOSS_PNG).read_bytes()))
    _add_trend(tmp, src, extras)
    return extras


def sampler_model(hf_model, export_dir: Path):
    """Our GPT (eval mode) holding the weights of the harness's `hf_model` (transformers' GPT2LMHeadModel, as
    lm-eval loaded it from `export_dir`), on its device: built by the converter `gpt2train sample EXPORT`
    loads the file with (gpt2train/export/state_dict.py `from_hf_state_dict`), so the same seed on the same
    device draws the same text; the harness's tensors are copied, the export is not read a second time."""
    from gpt2train.export.state_dict import from_hf_state_dict
    from gpt2train.weights import source_shape

    device = next(hf_model.parameters()).device
    return from_hf_state_dict(hf_model.state_dict(), source_shape(export_dir)).to(device).eval()


def training_facts(ckpt: Path | None, metrics_path: Path | None, data: Path | None,
                   step: int | None = None) -> dict[str, Any]:
    """Tokens seen and wall time at the checkpoint's step (`step` where its state.json is gone), with
    what they were read from; `missing` says why there is no state.json (pruned by train.keep_last,
    a reference model)."""
    state_path = ckpt / CHECKPOINT_STATE if ckpt is not None else None
    out: dict[str, Any] = {"step": step}
    if state_path is not None and state_path.is_file():
        # state.json alone: CheckpointState.from_dir would also require (and may hash) the weights, unused here.
        state = CheckpointState.from_record(read_json(state_path, "checkpoint state"))
        train = state.config.train or RecordedTrain()
        out["step"], total_batch = int(state.step), train.total_batch_tokens
        out.update(state={"path": recorded_path(state_path, data), "sha256": sha256_file(state_path)},
                   total_batch_tokens=total_batch, seq_len=train.seq_len, init_from=train.init_from,
                   tokens=out["step"] * total_batch if total_batch else None)
        if state.before_instability is not None:  # kept out of pruning: the run right before it went wrong
            mark = state.before_instability
            out["before_instability"] = {"step": mark.step, "reason": mark.reason, "says": mark.describe()}
    else:
        out["missing"] = ("no checkpoint: not a gpt2train export" if ckpt is None else
                          f"the checkpoint's {state_path} is gone (pruned by train.keep_last?)")
    if out["step"] is None or metrics_path is None or not Path(metrics_path).is_file():
        return out
    records, digest = metrics_upto(metrics_path, out["step"])
    # The last record of each step (a resumed run rewrote the steps after its checkpoint).
    ms = {r["step"]: r["ms"] for r in records if isinstance(r.get("ms"), (int, float)) and r["step"] >= 1}
    out.update(wall_seconds=sum(ms.values()) / 1000 if ms else None, steps_timed=len(ms),
               metrics={"path": recorded_path(metrics_path, data), "records": len(records), "sha256": digest})
    return out


def metrics_upto(metrics_path: Path | None, step: int) -> tuple[list[dict], str | None]:
    """(the records of metrics.jsonl at steps <= `step`, the sha256 of those lines as written)."""
    if metrics_path is None or not Path(metrics_path).is_file():
        return [], None
    records, h = [], hashlib.sha256()
    for line in Path(metrics_path).read_text().splitlines():
        try:
            r = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line torn by a kill; the resumed run wrote that step again
        if isinstance(r, dict) and isinstance(r.get("step"), int) and r["step"] <= step:
            records.append(r)
            h.update(line.encode() + b"\n")
    return records, h.hexdigest()


def _add_trend(tmp: Path, src: ExtrasSources, extras: ReportExtras) -> None:
    """trend.png when this run has earlier reports beside this one (same run, smaller step)."""
    me = report_row(src.report_lineage, src.report_dir)
    parent = src.report_dir.parent
    if me["step"] is None or not (src.report_lineage.get("checkpoint") or {}).get("key") or not parent.is_dir():
        return
    siblings = sorted(d for d in parent.iterdir() if d.is_dir() and d != src.report_dir
                      and not d.name.startswith(".") and (d / LINEAGE_FILE).is_file())
    rows, _ = read_reports(siblings)
    earlier = [r for r in rows if r["run"] == me["run"] and r["step"] is not None and r["step"] < me["step"]]
    if not earlier:
        return
    plot_trend(earlier + [me], tmp / TREND_PNG)
    extras.trend_reports = [{"path": recorded_path(r["report_dir"], src.data_dir), "step": r["step"],
                             "lineage_sha256": sha256_file(Path(r["report_dir"]) / LINEAGE_FILE)} for r in earlier]
    extras.images.append((TREND_PNG, f"Scores of this run's reports up to step {me['step']}",
                          (tmp / TREND_PNG).read_bytes()))
