"""A checkpoint -> a verified Hugging Face `GPT2LMHeadModel` directory, with its lineage.

    result = export_checkpoint("data/runs/tiny-<hash>/checkpoints/step_00000040", "exports/tiny-40")
    # gpt2train export data/runs/tiny-<hash>/checkpoints/step_00000040 exports/tiny-40

The export directory holds what `from_pretrained` needs and nothing it would fetch from the Hub:

    model.safetensors         fp32 weights, 50257-token vocabulary (our padded rows dropped), lm_head tied
    config.json               GPT2Config: n_positions = block_size, gelu_new (= our tanh GELU), eps 1e-5
    generation_config.json    bos = eos = 50256 (<|endoftext|>)
    vocab.json, merges.txt    GPT-2's BPE (OpenAI's encoder.json / vocab.bpe, via tiktoken's cache)
    tokenizer.json, tokenizer_config.json   the fast tokenizer (gpt2train/export/tokenizer.py)
    README.md                 model card (huggingface_hub ModelCard): license, dataset, tags, base model;
                              shape, step, losses, lineage, how to load (model_card.py). Never rewritten
                              after the export: an eval report's scores go to its own model_card.md
    lineage.json              docs/lineage.md's hf_export sidecar: every other file's sha256, the
                              checkpoint it came from, the verification figures

It is written into `.<name>.tmp-<pid>` next to `out_dir` and renamed into place only after
transformers has loaded it back, its logits matched ours (max |diff| <= 1e-4 in fp32) and its
tokenizer matched tiktoken's gpt2 on a varied set of texts (gpt2train/export/verify.py). Any
failure removes the temp directory and leaves a previous export at `out_dir` as it was.
Exporting the same checkpoint twice gives byte-identical files except lineage.json (its
`created_at`): the Dagster data version of an export is its model.safetensors hash.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gpt2train.data.tokenizer import EOT_TOKEN
from gpt2train.errors import Gpt2TrainError
from gpt2train.export.model_card import model_card
from gpt2train.export.tokenizer import write_gpt2_tokenizer
from gpt2train.failpoints import failpoint
from gpt2train.fileio import (disk_full_error, fsync_files_alike, is_disk_full, replace_dir, sha256_file,
                              temp_path_for)
from gpt2train.layout import HF_CONFIG, HF_WEIGHTS, LINEAGE_FILE, MODEL_CARD, checkpoint_key
from gpt2train.lineage.records import (
    code_version, data_dir_field, provenance, recorded_path, resolve_recorded, sidecar_data_dir,
)
from gpt2train.locks import writer_lock
from gpt2train.model_config import GPTConfig
from gpt2train.weights import LoadedCheckpoint, read_checkpoint

if TYPE_CHECKING:
    from gpt2train.model import GPT

# torch and the modules that use it are imported by the functions that write and verify weights:
# the Dagster code location, which every run worker imports, reads only `exported_checkpoint` and
# `export_code_version` from here, and torch's import costs ~3.5 s.


@dataclass
class ExportResult:
    out_dir: Path
    step: int
    model_sha256: str           # sha256 of the export's model.safetensors (its Dagster data version)
    files: dict[str, str]       # every file of the export except lineage.json -> sha256
    verification: dict          # logits_max_abs_diff, logits_tolerance, tokenizer_texts, tokenizer_match
    lineage: dict               # the lineage.json written


def export_code_version() -> str:
    return code_version(["export"], {})


def export_checkpoint(checkpoint_dir: str | Path, out_dir: str | Path, *, key: str | None = None) -> ExportResult:
    """Export a complete checkpoint to `out_dir` (replaced atomically) as a verified HF GPT-2 directory.

    `key` is the checkpoint's Dagster partition key; by default `<run dir>@step_XXXXXXXX`.
    """
    from gpt2train.export.verify import verify_export

    ckpt = read_checkpoint(checkpoint_dir)
    out_dir = Path(out_dir).absolute()
    # One writer per export directory: a second export of it (CLI or Dagster) is refused, naming the first.
    with writer_lock(out_dir, "Hugging Face export"):
        check_replaceable(out_dir)  # under the lock: no other writer changes it between check and write
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_path_for(out_dir)
        shutil.rmtree(tmp, ignore_errors=True)  # left by an earlier crash of a process with our pid
        try:
            tmp.mkdir()
            # The tokenizer first: offline without the BPE files in TIKTOKEN_CACHE_DIR it fails fast.
            write_gpt2_tokenizer(tmp, model_max_length=ckpt.model.config.block_size)
            with _quiet_transformers():
                hf_params = write_hf_model(ckpt.model, tmp)
                failpoint("export.model_written")
                verification = verify_export(tmp, ckpt.model)
            data = sidecar_data_dir(ckpt.state.record, ckpt.path)  # the checkpoint's data dir, where it records one
            checkpoint_ref = _checkpoint_ref(ckpt, key, data)
            export_ver = export_code_version()
            model_sha256 = sha256_file(tmp / HF_WEIGHTS)
            (tmp / MODEL_CARD).write_text(
                model_card(ckpt, checkpoint_ref, verification, model_sha256, hf_params, export_ver, out_dir),
                encoding="utf-8")
            files = {f.name: model_sha256 if f.name == HF_WEIGHTS else sha256_file(f)
                     for f in sorted(tmp.iterdir())}
            c = ckpt.model.config
            lineage = {
                "artifact": "hf_export",
                "checkpoint": checkpoint_ref,
                "files": files,
                "model_sha256": model_sha256,
                "verification": verification,
                # The descriptor as the run recorded it (`d12`, `tiny`, `custom:L3-NH2-C64` for a shape
                # taken from an init_from file), beside the shape it names.
                "model": {"descriptor": ckpt.state.config.model.descriptor, "n_layer": c.n_layer,
                          "n_head": c.n_head, "n_embd": c.n_embd, "block_size": c.block_size,
                          "vocab_size": c.vocab_size},
                **({"data_dir": data_dir_field(out_dir, data)} if data else {}),
                **provenance("hf_export", export_ver),
            }
            (tmp / LINEAGE_FILE).write_text(json.dumps(lineage, indent=2, sort_keys=True) + "\n")
            fsync_files_alike(tmp, like=HF_CONFIG)  # data on disk, every file readable alike, then the name
            replace_dir(tmp, out_dir)
        except BaseException as e:
            shutil.rmtree(tmp, ignore_errors=True)
            if is_disk_full(e):
                raise disk_full_error(out_dir) from e
            raise
    return ExportResult(out_dir=out_dir, step=ckpt.state.step, model_sha256=model_sha256, files=files,
                        verification=verification, lineage=lineage)


def _checkpoint_ref(ckpt: LoadedCheckpoint, key: str | None, data: Path | None) -> dict[str, Any]:
    """The checkpoint as the export's lineage.json and model card name it (`path` relative to the data
    dir `data` when inside it)."""
    return {
        "path": recorded_path(ckpt.path, data), "key": key or _checkpoint_key(ckpt.path),
        "step": ckpt.state.step, "model_sha256": ckpt.model_sha256, "run_tag": ckpt.state.run_tag,
    }


def exported_checkpoint(lineage: dict, export_dir: str | Path) -> Path | None:
    """The checkpoint an export's lineage.json names, as a usable path (None if it names none)."""
    ref = (lineage.get("checkpoint") or {}).get("path")
    return resolve_recorded(ref, sidecar_data_dir(lineage, export_dir)) if ref else None


def hf_config(cfg: GPTConfig):
    """The GPT2Config of our model: same shape, same activation, no dropout (llm.c trains without)."""
    from transformers import GPT2Config

    return GPT2Config(
        vocab_size=cfg.vocab_size, n_positions=cfg.block_size, n_embd=cfg.n_embd, n_layer=cfg.n_layer,
        n_head=cfg.n_head, n_inner=4 * cfg.n_embd,
        activation_function="gelu_new",  # tanh-approximated GELU, as F.gelu(approximate="tanh")
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        layer_norm_epsilon=1e-5,  # nn.LayerNorm's default eps
        initializer_range=0.02, bos_token_id=EOT_TOKEN, eos_token_id=EOT_TOKEN, tie_word_embeddings=True,
        architectures=["GPT2LMHeadModel"],
    )


def write_hf_model(model: GPT, out_dir: Path) -> int:
    """model.safetensors, config.json, generation_config.json into `out_dir`; returns the parameter count."""
    import torch
    from transformers import GPT2LMHeadModel

    from gpt2train.export.state_dict import to_hf_state_dict

    # fork_rng: GPT2LMHeadModel's random init (overwritten below) must not move the caller's RNG.
    with torch.random.fork_rng(devices=[]):
        hf = GPT2LMHeadModel(hf_config(model.config))
    missing, unexpected = hf.load_state_dict(to_hf_state_dict(model), strict=False)
    # lm_head.weight is tied to wte; older versions also list the causal-mask buffers.
    missing = [k for k in missing if k != "lm_head.weight" and not k.endswith((".attn.bias", ".attn.masked_bias"))]
    if missing or unexpected:
        raise Gpt2TrainError(f"the Hugging Face GPT-2 does not take our weights (missing {missing}, unexpected "
                             f"{unexpected}): gpt2train/export/state_dict.py does not match the installed transformers")
    hf.tie_weights()
    kwargs: dict[str, Any] = {"max_shard_size": "1000GB"}  # one model.safetensors at any size
    if "safe_serialization" in inspect.signature(hf.save_pretrained).parameters:
        kwargs["safe_serialization"] = True  # transformers 4; 5 writes safetensors only
    hf.save_pretrained(out_dir, **kwargs)
    if not (out_dir / HF_WEIGHTS).is_file():
        raise Gpt2TrainError(f"transformers wrote no {HF_WEIGHTS} into {out_dir} "
                             f"(wrote {sorted(p.name for p in out_dir.iterdir())})")
    return sum(p.numel() for p in hf.parameters())  # tied weights once


def check_replaceable(out_dir: Path) -> None:
    """Refuse to replace a directory that is not an earlier export (it would be deleted)."""
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise Gpt2TrainError(f"export destination {out_dir} is a file; choose a directory path")
    if not any(out_dir.iterdir()):
        return
    try:
        artifact = json.loads((out_dir / LINEAGE_FILE).read_text()).get("artifact")
    except (OSError, ValueError, AttributeError):
        artifact = None
    if artifact != "hf_export":
        raise Gpt2TrainError(f"export destination {out_dir} exists and is not a gpt2train export (its {LINEAGE_FILE} "
                             f"does not record one); it would be replaced, so choose another path or delete it")


@contextlib.contextmanager
def _quiet_transformers():
    # transformers' per-call progress bars ("Loading weights", "Writing model shards") take
    # milliseconds here and would clutter the CLI and Dagster logs; restored afterwards.
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def _checkpoint_key(path: Path) -> str:
    try:
        return checkpoint_key(path)  # <run dir>@step_XXXXXXXX, the Dagster partition key
    except Gpt2TrainError:  # a complete checkpoint copied under another name still exports
        return f"{path.parent.parent.name}@{path.name}"
