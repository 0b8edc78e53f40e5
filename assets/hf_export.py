"""The `hf_export` asset: each checkpoint as a verified Hugging Face GPT2LMHeadModel directory.

Wraps `gpt2train.export.hf_export.export_checkpoint` (also `gpt2train export CHECKPOINT OUT`): weights,
config, generation config, GPT-2's tokenizer built offline from its BPE ranks, a model card
with the lineage, and `lineage.json`; verified on export (transformers loads it, logits equal
ours within 1e-4, the tokenizer equals tiktoken). Written to `<data_dir>/exports/<partition>`.

Data version: a hash of the exported weights, config and tokenizer files (not the model card or
lineage.json, which name the code's git commit and the time), so re-exporting an unchanged
checkpoint leaves its evals fresh.

`export_checkpoint` writes the directory under its writer lock (gpt2train/locks.py): two runs of one
partition (the sensor's and a UI click, two pipelines, a CLI export) are refused rather than racing.
"""

import hashlib

import dagster as dg

from assets.partitions import checkpoints
from gpt2train.config import Config
from gpt2train.export.hf_export import export_checkpoint, export_code_version
from gpt2train.layout import LINEAGE_FILE, MODEL_CARD, checkpoint_path, export_dir

# Files whose bytes are the model; README.md and lineage.json carry the commit and the time.
_NOT_CONTENT = {MODEL_CARD, LINEAGE_FILE}


def export_data_version(files: dict[str, str]) -> str:
    content = sorted((name, sha) for name, sha in files.items() if name not in _NOT_CONTENT)
    return hashlib.sha256(repr(content).encode()).hexdigest()[:24]


def build_hf_export_asset(cfg: Config) -> dg.AssetsDefinition:
    @dg.asset(
        name="hf_export",
        partitions_def=checkpoints,
        deps=[dg.AssetDep("checkpoint", partition_mapping=dg.IdentityPartitionMapping())],
        code_version=export_code_version(),
        group_name="evaluation",
        kinds={"huggingface", "safetensors"},
        description="The checkpoint as a Hugging Face GPT2LMHeadModel directory (weights, config, tokenizer "
                    "built offline, model card with lineage), verified against our model on export.",
    )
    def hf_export(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        key = context.partition_key
        result = export_checkpoint(checkpoint_path(cfg.data_dir, key), export_dir(cfg.data_dir, key), key=key)
        v = result.verification
        return dg.MaterializeResult(
            data_version=dg.DataVersion(export_data_version(result.files)),
            metadata={
                "dir": dg.MetadataValue.path(str(result.out_dir)),
                "step": dg.MetadataValue.int(result.step),
                "model_sha256": result.model_sha256,
                "checkpoint_sha256": result.lineage["checkpoint"]["model_sha256"],
                "logits_max_abs_diff": dg.MetadataValue.float(float(v["logits_max_abs_diff"])),
                "tokenizer_matches_tiktoken": bool(v["tokenizer_match"]),
                "files": dg.MetadataValue.md("\n".join(f"- `{n}` sha256 `{h[:16]}…`" for n, h in sorted(result.files.items()))),
                "model_card": dg.MetadataValue.path(str(result.out_dir / MODEL_CARD)),
                "lineage": dg.MetadataValue.path(str(result.out_dir / LINEAGE_FILE)),
                "code_version": result.lineage.get("code_version", ""),
                "git_commit": result.lineage.get("git_commit") or "",
            },
        )

    return hf_export
