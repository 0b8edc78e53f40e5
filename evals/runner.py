"""Score a Hugging Face GPT-2 export with the Eleuther lm-eval harness and write its eval report.

    from gpt2train.config import load_config
    from evals.runner import evaluate_export
    cfg = load_config("tiny")
    rep = evaluate_export("data/exports/tiny-3f9a1c2b0e@step_00000040", "data/evals/...", cfg.evals)
    rep.metrics   # {"hellaswag": {"acc": 0.25, "acc_stderr": ..., "acc_norm": 0.3, ...}}

The harness does all the scoring (`lm_eval.simple_evaluate` with its `hf` model on the export
folder, in float32); this module checks the inputs first, runs it, and writes the report:

    <report_dir>/results.json            the harness's results, versions, n-shot, configs (no samples)
                 samples_<task>.jsonl    one record per scored item (the harness's log_samples)
                 report.md, report.html  the human report (evals/report.py); the HTML embeds the PNGs
                 loss_curve.png          train / val loss up to the step; trend.png: the run's earlier
                                         reports' scores and this one's, when there are earlier ones
                                         (evals/report_extras.py)
                 tasks/<task>_local.yaml the generated task YAMLs for local data (evals/tasks.py)
                 model_card.md           the export's README.md with these scores as model-index
                                         (gpt2train/export/model_card.py); not for a reference model
                 lineage.json            artifact eval_report (docs/lineage.md)

Everything is written into a temp folder next to `report_dir` and renamed into place at the
end, so a failed run leaves the previous report as it was and no half-written one.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from evals.report import (ReportInputs, count_parameters, harness_metrics, in_loop_metrics,
                          load_baselines, model_size, render_report)
from evals.reference import Reference, compare_reference, load_references
from evals.device import EvalDevice, choose_eval_device
from evals.report_extras import ExtrasSources, sampler_model, write_report_extras
from evals.tasks import EvalTask, check_tasks, evals_code_version, harness_task_manager, write_local_task_yamls
from gpt2train.config import EvalsConfig, config_to_dict
from gpt2train.errors import Gpt2TrainError
from gpt2train.export.hf_export import exported_checkpoint
from gpt2train.export.model_card import REPORT_CARD, report_model_card
from gpt2train.fileio import (
    atomic_output, disk_full_error, is_disk_full, read_json, replace_dir, sha256_file, temp_path_for,
    write_json_atomic,
)
from gpt2train.data.identity import checkpoint_corpus_identity
from gpt2train.layout import CHECKPOINT_STATE, HF_CONFIG, HF_WEIGHTS, LINEAGE_FILE, METRICS, MODEL_CARD
from gpt2train.lineage.records import data_dir_field, provenance, recorded_path, sidecar_data_dir
from gpt2train.locks import writer_lock
from gpt2train.training.trackers import check_report_trackers, log_report_scores

log = logging.getLogger(__name__)

# Files of an HF export the harness needs (the tokenizer as tokenizer.json, or vocab.json + merges.txt).
EXPORT_REQUIRED = (HF_CONFIG, HF_WEIGHTS, LINEAGE_FILE)


@dataclass
class EvalReport:
    report_dir: Path
    metrics: dict[str, dict[str, float]]
    """{task: {metric: value}}: `acc`, `acc_stderr`, `acc_norm`, ... (the harness's filter `none` dropped)."""
    markdown: str
    """The report text (report.md), for Dagster metadata."""
    files: dict[str, str] = field(default_factory=dict)
    """{name relative to report_dir: sha256}."""
    lineage: dict[str, Any] = field(default_factory=dict)


@dataclass
class ExportInfo:
    lineage: dict[str, Any]
    """The export's lineage.json (artifact hf_export); {} for a reference model."""
    hf_config: dict[str, Any]
    """Its config.json."""
    model_sha256: str
    """sha256 of model.safetensors, as re-hashed now."""
    has_tokenizer: bool = True
    """A reference model saved without its tokenizer is scored with GPT-2's, written by gpt2train."""


@dataclass
class EvalInputs:
    """What one eval report is made of besides the harness's output: the export scored, the
    checkpoint it came from, the tasks and settings, and the published figures shown beside the scores."""

    export_dir: Path
    export: ExportInfo
    tasks: list[EvalTask]
    """As run: a local-data task's `spec` is its generated YAML in the report's temp folder."""
    ecfg: EvalsConfig
    checkpoint: dict[str, Any]
    """path, key, step, model_sha256, run_tag from the export's lineage, updated with evaluate_export's
    `checkpoint_info`."""
    step: int | None
    model_label: str
    metrics_path: Path | None
    baselines: dict | None
    references: list[Reference] = field(default_factory=list)
    """evals.reference_reports, read and checked (evals/reference.py)."""
    device: EvalDevice | None = None
    """Where the harness ran and the sample was drawn, and why (evals/device.py)."""
    model: Any = None
    """Our GPT on the harness's loaded weights, on `device` (report_extras.sampler_model): the sample's and
    the FLOPs' model, so the export is loaded once per report."""

    @property
    def title(self) -> str:
        c = self.checkpoint
        return "Eval report: " + (self.model_label or c.get("key") or c.get("run_tag") or self.export_dir.name)


def check_export(export_dir: str | Path, reference: bool = False) -> ExportInfo:
    """Check the folder is a complete GPT-2 export whose weights are the ones its lineage records;
    with `reference`, any Hugging Face GPT-2 directory (OpenAI's GPT-2 saved with save_pretrained):
    no lineage, and a missing tokenizer is GPT-2's."""
    export_dir = Path(export_dir)
    what = f"{export_dir} is not a GPT-2 Hugging Face {'directory' if reference else 'export'}"
    if not export_dir.is_dir():
        raise Gpt2TrainError(f"{what}: no such folder; " + ("give a save_pretrained GPT-2 directory" if reference else
                             "export a checkpoint first (the hf_export asset / `gpt2train export`)"))
    required = [n for n in EXPORT_REQUIRED if n != LINEAGE_FILE] if reference else EXPORT_REQUIRED
    missing = [n for n in required if not (export_dir / n).is_file()]
    if missing:
        raise Gpt2TrainError(f"{what}: {', '.join(missing)} missing; export the checkpoint again")
    try:
        hf_config = json.loads((export_dir / HF_CONFIG).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise Gpt2TrainError(f"{what}: {HF_CONFIG} is not valid JSON ({e}); export the checkpoint again") from e
    if hf_config.get("model_type") != "gpt2":
        raise Gpt2TrainError(f"{what}: {HF_CONFIG} has model_type={hf_config.get('model_type')!r}, expected "
                             f"'gpt2'; point evals at a gpt2train export")
    has_tokenizer = ((export_dir / "tokenizer.json").is_file()
                     or ((export_dir / "vocab.json").is_file() and (export_dir / "merges.txt").is_file()))
    if reference:
        return ExportInfo(lineage={}, hf_config=hf_config, model_sha256=sha256_file(export_dir / HF_WEIGHTS),
                          has_tokenizer=has_tokenizer)
    if not has_tokenizer:
        raise Gpt2TrainError(f"{what}: no tokenizer (tokenizer.json, or vocab.json + merges.txt); export the "
                             f"checkpoint again")
    lineage = read_json(export_dir / LINEAGE_FILE, "export lineage")
    if not isinstance(lineage, dict) or lineage.get("artifact") != "hf_export":
        raise Gpt2TrainError(f"{what}: lineage.json is not an hf_export sidecar (artifact="
                             f"{lineage.get('artifact') if isinstance(lineage, dict) else None!r}); export again")
    recorded = lineage.get("model_sha256")
    actual = sha256_file(export_dir / HF_WEIGHTS)
    if recorded and recorded != actual:
        raise Gpt2TrainError(f"{export_dir / HF_WEIGHTS} (sha256 {actual[:16]}…) is not the file its "
                             f"lineage.json records ({recorded[:16]}…): it changed after the export; export the "
                             f"checkpoint again")
    return ExportInfo(lineage=lineage, hf_config=hf_config, model_sha256=actual)


def resolve_device(device: str) -> EvalDevice:
    """evals.device without the launch and the data dir to look at: `auto` -> cuda:0 if a GPU is visible,
    else the CPU, as if no training ran on this host. The CLI and the eval_report asset pass
    `evals.device.eval_device(cfg)` instead, which sees the training runs."""
    if device != "auto":
        return choose_eval_device(device, gpu_count=0, visible=None, training_runs=[], nproc_per_node=1)
    import torch

    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    return choose_eval_device("auto", gpu_count=torch.cuda.device_count(), training_runs=[], nproc_per_node=1,
                              visible=None if env is None else [d for d in env.split(",") if d.strip()])


def evaluate_export(export_dir: str | Path, report_dir: str | Path, ecfg: EvalsConfig, *, step: int | None = None,
                    model_label: str = "", metrics_path: Path | None = None,
                    checkpoint_info: dict | None = None, reference: bool = False,
                    device: EvalDevice | None = None) -> EvalReport:
    """Run the harness on `export_dir` for `ecfg.tasks` and write the report into `report_dir`.

    step: the training step shown (default: the export's checkpoint step). metrics_path: the run's
    metrics.jsonl for the in-loop numbers (default: `<run>/metrics.jsonl` next to the export's
    checkpoint, if there). checkpoint_info: fields that override the checkpoint facts copied from
    the export's lineage (e.g. the partition key). reference: `export_dir` is any Hugging Face GPT-2
    directory, not one of our exports (`gpt2train eval`). device: where to run (`evals.device.eval_device(cfg)`:
    `auto` never a training GPU); default `resolve_device(ecfg.device)`. All input errors are raised before
    any work.
    """
    export_dir, report_dir = Path(export_dir).resolve(), Path(report_dir).resolve()
    export = check_export(export_dir, reference)
    tasks = check_tasks(ecfg)
    baselines = load_baselines(ecfg.baselines_file)
    references = load_references(ecfg.reference_reports)
    checkpoint = {k: v for k, v in (export.lineage.get("checkpoint") or {}).items()
                  if k in ("path", "key", "step", "model_sha256", "run_tag")}
    checkpoint.update(checkpoint_info or {})
    step = step if step is not None else checkpoint.get("step")
    ckpt_dir = exported_checkpoint(export.lineage, export_dir)
    if metrics_path is None and ckpt_dir is not None:
        metrics_path = ckpt_dir.parent.parent / METRICS
    # The run that made the checkpoint: its trackers (train.loggers) get the scores at this step.
    tracked_run = ckpt_dir.parent.parent if ckpt_dir is not None and step is not None else None
    if tracked_run is not None:
        check_report_trackers(tracked_run)
    device = device or resolve_device(ecfg.device)
    log.info("eval device %s: %s", device.device, device.reason)

    report_dir.parent.mkdir(parents=True, exist_ok=True)
    # One writer per report directory: a second evaluation into it (CLI or Dagster) is refused.
    with writer_lock(report_dir, "eval report"):
        tmp = temp_path_for(report_dir)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        try:
            tasks = write_local_task_yamls(tasks, tmp / "tasks")
            with tempfile.TemporaryDirectory(prefix="gpt2-tokenizer-") as tokenizer:  # not part of the report
                if not export.has_tokenizer:
                    _gpt2_tokenizer(Path(tokenizer), export.hf_config)
                raw, lm = _run_harness(export_dir, tasks, ecfg, device.device,
                                       None if export.has_tokenizer else Path(tokenizer))
            # Our sampler's model over the harness's weights, on the same device; the harness's own
            # copy is dropped before the sample is drawn.
            model = sampler_model(lm.model, export_dir)
            del lm
            inputs = EvalInputs(export_dir=export_dir, export=export, tasks=tasks, ecfg=ecfg, checkpoint=checkpoint,
                                step=step, model_label=model_label, metrics_path=metrics_path, baselines=baselines,
                                references=references, device=device, model=model)
            report = _write_report(tmp, report_dir, raw, inputs)
            del inputs, model
            replace_dir(tmp, report_dir)
        except BaseException as e:
            shutil.rmtree(tmp, ignore_errors=True)
            if is_disk_full(e):  # name the report, not the temp file that was being written
                raise disk_full_error(report_dir) from e
            raise
    log.info("eval report %s: %s", report_dir, json.dumps(report.metrics))
    if tracked_run is not None:
        log_report_scores(tracked_run, step, report.metrics)
    return report


# ------------------------------------------------------------------------------- the harness

# lm-eval's modules that draw progress bars, each through its own `from tqdm import tqdm`.
HARNESS_BAR_MODULES = ("lm_eval.api.task", "lm_eval.api.model", "lm_eval.models.huggingface")


def _terminal_only_bars() -> None:
    """Make the harness quiet where its output is not a terminal, without touching the installed package:

    - its progress bars are drawn only on a terminal (tqdm's own `disable=None`). lm-eval passes
      `disable=False`, so in a file or a pipe (the pipeline's log, a run worker's output) every redraw
      was another carriage-return-joined copy of the bar. The `tqdm` name in its modules is bound to a
      subclass that says `None` instead; a bar lm-eval disables itself stays disabled. The `datasets`
      bars of its task loading are switched off through `datasets`' own setting, off a terminal only.
    - the commit it records in results.json (`git describe --always` in the working directory) is asked
      with git's stderr captured: outside a git checkout git printed "fatal: not a git repository".

    Idempotent: the names are rebound once per process, to the same objects."""
    import importlib
    import sys

    import lm_eval.evaluator

    for name in HARNESS_BAR_MODULES:
        module = importlib.import_module(name)
        if getattr(module, "tqdm", None) is not None and module.tqdm is not TerminalOnlyTqdm:
            module.tqdm = TerminalOnlyTqdm
    lm_eval.evaluator.get_git_commit_hash = quiet_git_commit_hash
    if not sys.stderr.isatty():
        import datasets

        datasets.disable_progress_bars()


class TerminalOnlyTqdm(tqdm):
    """tqdm that draws only on a terminal unless told to stay off: `disable=False` (lm-eval's) becomes
    None, tqdm's "only when the output is a TTY"."""

    def __init__(self, *args, **kwargs):
        kwargs["disable"] = True if kwargs.get("disable") else None
        super().__init__(*args, **kwargs)


def quiet_git_commit_hash() -> str | None:
    """lm-eval's `get_git_commit_hash` (the working directory's checkout, for results.json's `git_hash`)
    with git's stderr captured: None, silently, outside a checkout or without git."""
    import subprocess

    from lm_eval.loggers.utils import get_commit_from_path

    try:
        out = subprocess.run(["git", "describe", "--always"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        out = None
    if out is not None and out.returncode == 0:
        return out.stdout.strip()
    return get_commit_from_path(Path.cwd())  # lm-eval's own fallback: reads .git files, prints nothing


def _gpt2_tokenizer(out: Path, hf_config: dict) -> None:
    """GPT-2's tokenizer files (built offline from tiktoken's BPE files) for a model saved without them."""
    from gpt2train.export.tokenizer import write_gpt2_tokenizer

    write_gpt2_tokenizer(out, hf_config.get("n_positions", 1024))


def _run_harness(export_dir: Path, tasks: list[EvalTask], ecfg: EvalsConfig, device: str,
                 tokenizer: Path | None = None) -> tuple[dict[str, Any], Any]:
    """`simple_evaluate` once per distinct few-shot count (its `num_fewshot` applies to every task it
    runs), all on one loaded model; the results merged as one harness run would report them. Returns
    them and the harness's model (its `.model`: transformers' GPT2LMHeadModel on `device`)."""
    import lm_eval
    from lm_eval.api.registry import get_model

    _terminal_only_bars()
    # A dict, not the "pretrained=...,dtype=..." string: a path may hold commas.
    # use_safetensors: transformers refuses a pickled pytorch_model.bin instead of loading it.
    model_args = {"pretrained": str(export_dir), "dtype": "float32", "use_safetensors": True,
                  **({"tokenizer": str(tokenizer)} if tokenizer else {})}
    lm = get_model("hf").create_from_arg_obj(model_args, {"batch_size": ecfg.batch_size, "device": device})
    groups: dict[int | None, list[EvalTask]] = {}
    for t in tasks:
        groups.setdefault(t.num_fewshot, []).append(t)
    merged: dict[str, Any] = {}
    for shots, group in groups.items():
        out = lm_eval.simple_evaluate(model=lm, tasks=[t.spec for t in group], num_fewshot=shots, limit=ecfg.limit,
                                      batch_size=ecfg.batch_size, device=device, log_samples=True,
                                      task_manager=harness_task_manager())
        if out is None:  # only on non-zero ranks, which a single process never is
            raise Gpt2TrainError("the lm-eval harness returned no results (not rank 0?)")
        for key in ("results", "versions", "n-shot", "configs", "higher_is_better", "n-samples", "group_subtasks",
                    "samples"):
            merged.setdefault(key, {}).update(out.get(key) or {})
        for key, value in out.items():
            merged.setdefault(key, value)
    # A pre-built LM leaves the model name as its class: record what was run.
    merged["config"] = {**(merged.get("config") or {}), "model": "hf", "model_args": model_args}
    return merged, lm


# ------------------------------------------------------------------------------- writing

def _write_report(tmp: Path, report_dir: Path, raw: dict[str, Any], src: EvalInputs) -> EvalReport:
    """Every file of the report into `tmp` (the caller renames it to `report_dir`): the harness's output,
    report.md and report.html, and last lineage.json with every other file's sha256."""
    display = {t.harness_task: t.name for t in src.tasks}
    _write_harness_output(tmp, report_dir, raw, display)
    metrics = {display.get(k, k): harness_metrics(v) for k, v in raw.get("results", {}).items()}
    task_dicts = _task_dicts(src.tasks, raw, src.ecfg)
    hf = src.export.hf_config
    n_params = count_parameters(src.export_dir / HF_WEIGHTS)
    size = model_size(hf.get("n_layer", 0), hf.get("n_embd", 0), n_params)
    in_loop = in_loop_metrics(src.metrics_path, src.step)
    code_ver = evals_code_version(src.ecfg)
    versions = _versions(raw)
    # Paths relative to the export's data dir (the checkpoint reference copied from the export already is).
    data = sidecar_data_dir(src.export.lineage, src.export_dir)
    for d in task_dicts:  # the generated task YAML, where it lies once the report is in place
        if d.get("spec") and Path(d["spec"]).is_relative_to(tmp):
            d["spec"] = recorded_path(report_dir / Path(d["spec"]).relative_to(tmp), data)
    if in_loop:
        in_loop["path"] = recorded_path(in_loop["path"], data)
    corpus = trained_corpus(src.export.lineage, src.export_dir)
    lineage: dict[str, Any] = {
        "artifact": "eval_report",
        "export": {"path": recorded_path(src.export_dir, data), "model_sha256": src.export.model_sha256,
                   **({"lineage_sha256": sha256_file(src.export_dir / LINEAGE_FILE)} if src.export.lineage
                      else {"reference": True})},
        "checkpoint": src.checkpoint,
        "step": src.step,
        "model_label": src.model_label,
        "tasks": task_dicts,
        "config": {"evals": config_to_dict(src.ecfg)},
        "metrics": metrics,
        "in_loop": in_loop,
        "corpus": corpus,
        "model": {"n_params": n_params, "compared_with": size.published, "n_layer": hf.get("n_layer"),
                  "n_embd": hf.get("n_embd"), "n_head": hf.get("n_head"), "block_size": hf.get("n_positions")},
        "device": src.device.device if src.device else None,
        "device_choice": src.device.to_dict() if src.device else None,
        "harness": versions,
        **({"data_dir": data_dir_field(report_dir, data)} if data else {}),
        **provenance("eval_report", code_ver),
    }
    # Tokens, wall time, FLOPs, a sample, loss_curve.png and trend.png (evals/report_extras.py).
    extras = write_report_extras(tmp, ExtrasSources(report_dir, src.export_dir, src.export.lineage, src.metrics_path,
                                                    lineage, data, model=src.model,
                                                    device=src.device.device if src.device else "cpu"))
    lineage.update(extras.lineage)
    # Each reference's scores beside these, where measured on the same data and settings (evals/reference.py).
    refs = [compare_reference(ref, task_dicts, raw, versions["lm_eval"]) for ref in src.references]
    if refs:
        lineage["references"] = [c.to_lineage(data) for c in refs]
    inputs = ReportInputs(title=src.title, step=src.step, tasks=task_dicts, results=raw.get("results", {}),
                          size=size, baselines=src.baselines, baselines_file=src.ecfg.baselines_file,
                          in_loop=in_loop, limit=src.ecfg.limit, lineage=lineage, versions=versions,
                          training=extras.training, sample=extras.sample, images=extras.images,
                          references=refs, corpus=corpus)
    markdown = _write_rendered(tmp, inputs)
    _write_model_card(tmp, src, metrics, task_dicts, raw.get("configs") or {})
    files = {p.relative_to(tmp).as_posix(): sha256_file(p) for p in sorted(tmp.rglob("*")) if p.is_file()}
    lineage["files"] = files
    write_json_atomic(tmp / LINEAGE_FILE, lineage)
    return EvalReport(report_dir=report_dir, metrics=metrics, markdown=markdown, files=files, lineage=lineage)


def trained_corpus(export_lineage: dict[str, Any], export_dir: Path) -> dict[str, Any] | None:
    """What the exported checkpoint's val tokens are (gpt2train/data/identity.py CorpusIdentity as a dict),
    from its state.json: the run's corpus settings and the source files of its val shards (of its train
    shards when it had none). None for a reference model, or a checkpoint that records no corpus."""
    ckpt = exported_checkpoint(export_lineage, export_dir) if export_lineage else None
    if ckpt is None or not (ckpt / CHECKPOINT_STATE).is_file():
        return None
    identity = checkpoint_corpus_identity(read_json(ckpt / CHECKPOINT_STATE, "checkpoint state"))
    return identity.to_dict() if identity else None


def _write_harness_output(tmp: Path, report_dir: Path, raw: dict[str, Any], display: dict[str, str]) -> None:
    """results.json (`raw` without its samples, which this pops) and samples_<task>.jsonl, named by
    `display` (harness task -> configured name)."""
    from lm_eval.utils import handle_non_serializable

    def dumps(obj: Any, **kw) -> str:
        # The harness's own fallback (numpy scalars, sets, functions -> str); the temp folder's
        # name is replaced by the final one so the report never points at a vanished path.
        return json.dumps(obj, default=handle_non_serializable, **kw).replace(str(tmp), str(report_dir))

    samples = raw.pop("samples", {})
    with atomic_output(tmp / "results.json", "w") as f:
        f.write(dumps(raw, indent=2, sort_keys=True) + "\n")

    for harness_task, records in samples.items():
        with atomic_output(tmp / f"samples_{display.get(harness_task, harness_task)}.jsonl", "w") as f:
            for rec in records:
                f.write(dumps(rec) + "\n")


def _task_dicts(tasks: list[EvalTask], raw: dict[str, Any], ecfg: EvalsConfig) -> list[dict[str, Any]]:
    """Each task as the report records it: EvalTask.to_dict() plus `limit`, the few-shot count the
    harness used and the items it scored."""
    task_dicts = []
    for t in tasks:
        d = t.to_dict()
        d.update(limit=ecfg.limit, n_shot=raw.get("n-shot", {}).get(t.harness_task),
                 n_samples=(raw.get("n-samples", {}).get(t.harness_task) or {}).get("effective"))
        task_dicts.append(d)
    return task_dicts


def _write_rendered(tmp: Path, inputs: ReportInputs) -> str:
    """report.md and report.html (evals/report.py); returns the markdown."""
    markdown, html = render_report(inputs)
    with atomic_output(tmp / "report.md", "w") as f:
        f.write(markdown)
    with atomic_output(tmp / "report.html", "w") as f:
        f.write(html)
    return markdown


def _write_model_card(tmp: Path, src: EvalInputs, metrics: dict[str, dict[str, float]],
                      task_dicts: list[dict[str, Any]], configs: dict[str, Any]) -> None:
    """model_card.md: the export's card with these scores as model-index. The export's own README.md is
    never rewritten (this report records the hash of the lineage.json that records its hash). None for a
    reference model (its card is not ours) or an export whose README.md is gone or unreadable: the
    scores stand without it, so that is a warning, not a failed report."""
    card = src.export_dir / MODEL_CARD
    if not src.export.lineage:
        return
    name = src.model_label or src.checkpoint.get("key") or src.export_dir.name
    try:
        text = report_model_card(card, name, metrics, task_dicts, configs)
    except (OSError, ValueError) as e:  # ValueError: a missing file, or metadata ModelCard cannot parse
        log.warning("%s: no model card written with the scores (%s); export the checkpoint again to rewrite "
                    "its README.md", card, e)
        return
    with atomic_output(tmp / REPORT_CARD, "w") as f:
        f.write(text)


def _versions(raw: dict[str, Any]) -> dict[str, str]:
    import torch

    return {"lm_eval": str(raw.get("lm_eval_version", "")), "transformers": str(raw.get("transformers_version", "")),
            "torch": torch.__version__}
