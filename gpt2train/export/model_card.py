"""The model card (README.md) of a Hugging Face export: shape, step, losses, verification, lineage, how to load.

    (tmp / "README.md").write_text(model_card(ckpt, checkpoint_ref, verification, ...))   # hf_export.py

It holds no timestamp, so exporting the same checkpoint twice writes the same bytes.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from gpt2train.data.tokenizer import EOT_TOKEN
from gpt2train.lineage.records import provenance
from gpt2train.model_config import GPTConfig

if TYPE_CHECKING:  # hf_export imports this module
    from gpt2train.weights import LoadedCheckpoint


def model_card(ckpt: LoadedCheckpoint, checkpoint_ref: dict, verification: dict, model_sha256: str,
               n_params: int, export_ver: str, out_dir: Path) -> str:
    """README.md: a Hugging Face model card. Holds no timestamp, so re-exports are byte-identical."""
    c, state = ckpt.model.config, ckpt.state
    config = state.get("config") or {}
    lines = (_front_matter(config)
             + _overview(c, state, checkpoint_ref, n_params)
             + _verification(c, verification)
             + _lineage(state.get("lineage") or {}, checkpoint_ref, model_sha256, export_ver, out_dir)
             + _how_to_load(out_dir))
    return "\n".join(lines)


def _front_matter(config: dict) -> list[str]:
    """The YAML header the Hub reads: library, license, task, tags, the training dataset."""
    dataset = (config.get("corpus") or {}).get("dataset")
    front = ["---", "library_name: transformers", "license: mit", "pipeline_tag: text-generation",
             "tags:", "- gpt2", "- llm.c", "- gpt2train"]
    if dataset:
        front += ["datasets:", f"- {dataset}"]
    return front + ["---", ""]


def _overview(c: GPTConfig, state: dict, checkpoint_ref: dict, n_params: int) -> list[str]:
    config = state.get("config") or {}
    title = checkpoint_ref["run_tag"] or checkpoint_ref["key"]
    return [
        f"# {title} at step {checkpoint_ref['step']}",
        "",
        f"A GPT-2 trained with gpt2train (llm.c's recipe) and exported from checkpoint `{checkpoint_ref['key']}`.",
        "",
        "| | |", "|---|---|",
        f"| model | `{config.get('model', {}).get('descriptor')}`: {c.n_layer} layers, {c.n_head} heads, "
        f"{c.n_embd} channels |",
        f"| context | {c.block_size} tokens |",
        f"| vocabulary | {c.vocab_size} (GPT-2 BPE; end of text = {EOT_TOKEN}) |",  # no `|` inside a table
        f"| parameters | {n_params:,} (tied embeddings counted once) |",
        f"| step | {checkpoint_ref['step']} |",
        f"| train loss (last step) | {_fmt_loss(state.get('loss'))} |",
        f"| val loss | {_fmt_loss(state.get('val_loss'))} |",
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


def _lineage(train_lineage: dict, checkpoint_ref: dict, model_sha256: str, export_ver: str,
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
        f"- training code version: `{train_lineage.get('code_version')}`, git commit "
        f"`{train_lineage.get('git_commit')}`, gpt2train {train_lineage.get('gpt2train_version')}",
        f"- export code version: `{export_ver}`, git commit `{prov['git_commit']}`, "
        f"gpt2train {prov['gpt2train_version']}",
        f"- shards read from: `{train_lineage.get('shards_dir')}`",
        "",
        "| shard | tokens | sha256 |", "|---|---|---|",
        *_shard_rows(train_lineage.get("train_shards")),
        *_shard_rows(train_lineage.get("val_shards")),
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
