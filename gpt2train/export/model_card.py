"""The model card of a Hugging Face export (its README.md), and the eval report's card with the scores.

    text = model_card(ckpt, checkpoint_ref, verification, ...)     # hf_export.py -> <export>/README.md
    text = report_model_card(export_dir / "README.md", model_name, metrics, tasks, configs)
                                                                   # evals/runner.py -> <report>/model_card.md

Both are built with huggingface_hub's `ModelCard` / `ModelCardData`, so the YAML header is what
the Hub reads and `ModelCard.load(path)` returns the same fields: library, license, task, tags,
the training dataset, and `base_model` when the run started from a model the Hub names
(`train.init_from`: `hf:<repo>`, a Hub cache snapshot, or one of llm.c's OpenAI conversions such as
gpt2_124M.bin). The body keeps shape, step, losses, verification, lineage and how to load.
Neither card holds a timestamp, so exporting or scoring the same thing twice writes the same bytes.

Why the scores (`model-index`) live in the report folder and not in the export's README.md: an
eval report records the export's lineage.json sha256, and that lineage.json records README.md's
sha256 (`files`); rewriting the export's card after a report would either break the export's own
record (`gpt2train verify` / `gpt2train lineage` flag it) or, re-recorded, change lineage.json under
every report of it. So the export's card never changes after the export, and each report writes
`model_card.md` = the export's card plus `model-index` and an Evaluation section: the file to
upload as README.md when the model is published with its scores.

huggingface_hub is imported by the functions that build cards: the Dagster code location imports
this module (through hf_export.py) and should not pay for it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gpt2train.data.identity import CorpusIdentity, checkpoint_corpus_identity
from gpt2train.data.tokenizer import EOT_TOKEN
from gpt2train.errors import Gpt2TrainError
from gpt2train.hub_models import is_hub_model, parse_hub_model
from gpt2train.lineage.records import provenance
from gpt2train.model_config import GPTConfig
from gpt2train.training.checkpoint import CheckpointState, RecordedConfig, TrainingLineage

if TYPE_CHECKING:  # hf_export imports this module
    from huggingface_hub import EvalResult, ModelCardData

    from gpt2train.weights import LoadedCheckpoint

# The card's metadata besides the dataset and base model. MIT: llm.c's licence and OpenAI GPT-2's.
LICENSE = "mit"
TAGS = ["gpt2", "llm.c", "gpt2train"]

# llm.c's conversions of OpenAI's checkpoints (its train_gpt2.py writes gpt2_<size>.bin and _bf16.bin)
# -> the Hub repo they came from; any other llm.c file (its own checkpoints) names no Hub model.
LLMC_OPENAI_FILES = {"124M": "openai-community/gpt2", "350M": "openai-community/gpt2-medium",
                     "355M": "openai-community/gpt2-medium", "774M": "openai-community/gpt2-large",
                     "1558M": "openai-community/gpt2-xl"}
_LLMC_FILE = re.compile(r"gpt2_(\d+M)(?:_bf16)?\.bin")
# A Hub cache snapshot (where huggingface_hub downloads a repo): .../models--<org>--<name>/snapshots/<rev>
_HUB_SNAPSHOT = re.compile(r"(?:^|/)models--([^/]+?)--([^/]+)/snapshots/[^/]+/?$")
_HUB_ID = re.compile(r"[\w.-]+(?:/[\w.-]+)?")


def model_card(ckpt: LoadedCheckpoint, checkpoint_ref: dict, verification: dict, model_sha256: str,
               n_params: int, export_ver: str, out_dir: Path) -> str:
    """README.md: a Hugging Face model card. Holds no timestamp, so re-exports are byte-identical."""
    from huggingface_hub import ModelCard

    c, state = ckpt.model.config, ckpt.state
    body = (_overview(c, state, checkpoint_ref, n_params, _init_from(state.config))
            + _verification(c, verification)
            + _lineage(state.lineage or TrainingLineage(), checkpoint_ref, model_sha256, export_ver, out_dir)
            + _how_to_load(out_dir))
    # Parsed back before it is written: what the Hub (and ModelCard.load) will read is what was meant.
    return str(ModelCard(_card_text(card_data(state.config, checkpoint_corpus_identity(state.record)), body)))


def card_data(config: RecordedConfig, corpus: CorpusIdentity | None) -> ModelCardData:
    """The YAML header the Hub reads: library, license, task, tags, the training dataset (only where the
    corpus is a Hub dataset or a mirror of it: gpt2train/data/identity.py), the base model."""
    from huggingface_hub import ModelCardData

    dataset = corpus.dataset if corpus else None
    return ModelCardData(library_name="transformers", license=LICENSE, pipeline_tag="text-generation",
                         tags=list(TAGS), datasets=[dataset] if dataset else None,
                         base_model=base_model(_init_from(config)))


def _init_from(config: RecordedConfig) -> str | None:
    return config.train.init_from if config.train else None


def base_model(init_from: str | None) -> str | None:
    """The Hub id of the model `train.init_from` started from, where the Hub names one: `hf:<repo>[@rev]`
    (gpt2train/hub_models.py), a Hub cache snapshot path, or llm.c's gpt2_<size>[_bf16].bin (OpenAI's
    GPT-2). None otherwise (our own checkpoints, a save_pretrained folder, another llm.c file): the Hub rejects a `base_model`
    that is not a repo id, and the body names the source either way. Read from the string only, so
    the card does not depend on whether that source is still on disk when exporting."""
    if not init_from:
        return None
    s = str(init_from)
    if is_hub_model(s):
        try:
            repo, _ = parse_hub_model(s)  # an `@revision` suffix is not part of the id
        except Gpt2TrainError:
            return None
        return repo if _HUB_ID.fullmatch(repo) else None
    if m := _HUB_SNAPSHOT.search(s):
        return f"{m.group(1)}/{m.group(2)}"
    if m := _LLMC_FILE.fullmatch(Path(s).name):
        return LLMC_OPENAI_FILES.get(m.group(1))
    return None


def _card_text(data: ModelCardData, body: list[str]) -> str:
    return "\n".join(["---", data.to_yaml(), "---", "", *body])


def _overview(c: GPTConfig, state: CheckpointState, checkpoint_ref: dict, n_params: int,
              init_from: str | None) -> list[str]:
    title = checkpoint_ref["run_tag"] or checkpoint_ref["key"]
    base = base_model(init_from)
    start = ([f"| initialised from | `{init_from}`" + (f" (base model `{base}`)" if base else "") + " |"]
             if init_from else [])
    return [
        f"# {title} at step {checkpoint_ref['step']}",
        "",
        f"A GPT-2 trained with gpt2train (llm.c's recipe) and exported from checkpoint `{checkpoint_ref['key']}`.",
        "",
        "| | |", "|---|---|",
        f"| model | `{state.config.model.descriptor}`: {c.n_layer} layers, {c.n_head} heads, "
        f"{c.n_embd} channels |",
        f"| context | {c.block_size} tokens |",
        f"| vocabulary | {c.vocab_size} (GPT-2 BPE; end of text = {EOT_TOKEN}) |",  # no `|` inside a table
        f"| parameters | {n_params:,} (tied embeddings counted once) |",
        *start,
        f"| step | {checkpoint_ref['step']} |",
        f"| train loss (last step) | {_fmt_loss(state.loss)} |",
        f"| val loss | {_fmt_loss(state.val_loss)} |",
        "",
    ]


def _verification(c: GPTConfig, verification: dict) -> list[str]:
    from gpt2train.export.verify import LOGITS_BATCH, LOGITS_MAX_T  # imports torch: only when exporting

    return [
        "## Verification",
        "",
        f"Before this directory was written, transformers loaded it back: its logits matched the checkpoint's "
        f"to {verification['logits_max_abs_diff']:.2e} (tolerance {verification['logits_tolerance']:g}, fp32, "
        f"a {LOGITS_BATCH}x{min(LOGITS_MAX_T, c.block_size)} batch), and its tokenizer encoded "
        f"{verification['tokenizer_texts']} texts exactly as tiktoken's `gpt2`.",
        "",
    ]


def _lineage(train_lineage: TrainingLineage, checkpoint_ref: dict, model_sha256: str, export_ver: str,
             out_dir: Path) -> list[str]:
    """The checkpoint, both weights' sha256, the code versions and every shard the model trained on."""
    prov = provenance("hf_export", export_ver)
    return [
        "## Lineage",
        "",
        f"- checkpoint: `{checkpoint_ref['path']}` (key `{checkpoint_ref['key']}`)",
        f"- checkpoint model.safetensors sha256: `{checkpoint_ref['model_sha256']}`",
        f"- this export's model.safetensors sha256: `{model_sha256}`",
        f"- run tag: `{checkpoint_ref['run_tag']}`",
        f"- training code version: `{train_lineage.code_version}`, git commit "
        f"`{train_lineage.git_commit}`, gpt2train {train_lineage.gpt2train_version}",
        f"- export code version: `{export_ver}`, git commit `{prov['git_commit']}`, "
        f"gpt2train {prov['gpt2train_version']}",
        f"- shards read from: `{train_lineage.shards_dir}`",
        "",
        "| shard | tokens | sha256 |", "|---|---|---|",
        *_shard_rows(train_lineage.train_shards),
        *_shard_rows(train_lineage.val_shards),
        "",
        f"`lineage.json` holds the same facts and every file's sha256; `gpt2train lineage {out_dir}` walks "
        f"them back to the corpus files.",
        "",
    ]


def _how_to_load(out_dir: Path) -> list[str]:
    return [
        "## How to load",
        "",
        "```python",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        "",
        f'model = AutoModelForCausalLM.from_pretrained("{out_dir}")',
        f'tokenizer = AutoTokenizer.from_pretrained("{out_dir}")',
        'ids = tokenizer("The meaning of life is", return_tensors="pt").input_ids',
        "print(tokenizer.decode(model.generate(ids, max_new_tokens=32, do_sample=True, top_k=40)[0]))",
        "```",
        "",
    ]


def _fmt_loss(v) -> str:
    return f"{v:.4f}" if isinstance(v, (int, float)) else "not recorded"


def _shard_rows(shards) -> list[str]:
    return [f"| {s.get('file')} | {s.get('tokens') if s.get('tokens') is not None else '?'} | "
            f"`{s.get('sha256') or 'no sidecar'}` |" for s in shards or []]


# ------------------------------------------------------------------------------- the eval report's card

REPORT_CARD = "model_card.md"  # in the report folder, beside report.md
# lm-eval's metric keys -> the readable names the Hub shows beside them.
METRIC_NAMES = {"acc": "accuracy", "acc_norm": "normalized accuracy"}


def report_model_card(export_card: Path, model_name: str, metrics: dict[str, dict[str, float]],
                      tasks: list[dict[str, Any]], configs: dict[str, dict] | None = None) -> str:
    """The export's card (`export_card`: its README.md) with an eval report's scores: `model-index`
    in the header, named `model_name`, and an Evaluation section before Verification.

    metrics: the report's {task: {metric: value}}; tasks: its task dicts (name, harness_task, n_shot,
    n_samples, split, local_path); configs: the harness's task configs (results.json `configs`).
    model-index has no field for a standard error: `*_stderr` values are in the Evaluation table only.
    """
    import yaml
    from huggingface_hub import ModelCard, ModelCardData

    try:  # a Path: a missing file is a ValueError, never a Hub download
        card = ModelCard.load(Path(export_card))
    except yaml.YAMLError as e:
        raise ValueError(f"{export_card}: its YAML header does not parse ({e})") from e
    data = card.data.to_dict()
    data.pop("model-index", None)  # an earlier report's scores (a card copied back): replaced, not merged
    results = eval_results(metrics, tasks, configs or {})
    header = ModelCardData(**data, model_name=model_name, eval_results=results or None)
    section = "\n".join(_evaluation(metrics, tasks)) + "\n"  # a blank line before the next heading
    body = re.sub(r"^## Evaluation\n.*?(?=^## |\Z)", "", card.text, count=1, flags=re.M | re.S)  # as model-index
    marker = "## Verification\n"
    body = body.replace(marker, section + marker, 1) if marker in body else body.rstrip("\n") + "\n\n" + section
    return str(ModelCard(f"---\n{header.to_yaml()}\n---\n{body}"))


def eval_results(metrics: dict[str, dict[str, float]], tasks: list[dict[str, Any]],
                 configs: dict[str, dict]) -> list[EvalResult]:
    """One EvalResult per task and metric (standard errors left out). The dataset is the harness task's
    Hub dataset (`dataset_path`, its config and split), or the local file scored in its place."""
    from huggingface_hub import EvalResult

    by_name = {t.get("name"): t for t in tasks}
    out = []
    for task, values in metrics.items():
        t = by_name.get(task) or {}
        cfg = configs.get(t.get("harness_task") or task) or {}
        local = t.get("local_path")
        shots = t.get("n_shot")
        args = {k: v for k, v in (("num_few_shot", shots), ("limit", t.get("limit"))) if v is not None}
        dataset = {
            "dataset_type": Path(local).name if local else (cfg.get("dataset_path") or task),
            "dataset_name": task if shots is None else f"{task} ({shots}-shot)",
            "dataset_config": None if local else cfg.get("dataset_name"),
            "dataset_split": t.get("split") or cfg.get("test_split") or cfg.get("validation_split"),
            "dataset_args": args or None,
        }
        for metric, value in values.items():
            if metric.partition(",")[0].endswith("_stderr"):
                continue
            out.append(EvalResult(task_type="text-generation", task_name=task, metric_type=metric,
                                  metric_value=float(value), metric_name=METRIC_NAMES.get(metric), **dataset))
    return out


def _evaluation(metrics: dict[str, dict[str, float]], tasks: list[dict[str, Any]]) -> list[str]:
    """The scores as a table, each with its standard error; the report beside this card has the rest."""
    by_name = {t.get("name"): t for t in tasks}
    rows = []
    for task, values in metrics.items():
        t = by_name.get(task) or {}
        data = f"local file `{Path(t['local_path']).name}`" if t.get("local_path") else "the harness's (Hub)"
        for metric, value in values.items():
            base, sep, filt = metric.partition(",")
            if base.endswith("_stderr"):
                continue
            stderr = values.get(f"{base}_stderr{sep}{filt}")
            rows.append(f"| {task} | {_or_dash(t.get('n_shot'))} | {_or_dash(t.get('n_samples'))} | {data} | "
                        f"{metric} | {value:.4f} | {'-' if stderr is None else f'{stderr:.4f}'} |")
    return [
        "## Evaluation",
        "",
        "Scored by the lm-eval harness on this export; `report.md` beside this card has the published "
        "figures, the in-loop numbers and the lineage. The same scores are this card's `model-index`.",
        "",
        "| task | few-shot | items | data | metric | value | stderr |", "|---|---|---|---|---|---|---|",
        *rows,
        "",
    ]


def _or_dash(v) -> str:
    return "-" if v is None else str(v)
