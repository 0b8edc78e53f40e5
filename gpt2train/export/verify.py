"""An export loaded back by transformers and compared with our model and tiktoken's gpt2.

    verification = verify_export(export_dir, model)   # hf_export.py, before the export is renamed into place

The figures it returns go into the export's lineage.json and its model card.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from gpt2train.errors import Gpt2TrainError
from gpt2train.export.tokenizer import verify_tokenizer
from gpt2train.model import GPT

# fp32 on CPU, our SDPA attention vs Hugging Face's: differences are ~1e-6 on logits of size ~10;
# 1e-4 leaves room for that and still catches any real mapping error (a transposed or missing
# weight moves logits by >= 1e-2).
LOGITS_TOLERANCE = 1e-4
LOGITS_BATCH = 2       # B of the sample batch the logits are compared on
LOGITS_MAX_T = 32      # T = min(32, block_size)
LOGITS_SEED = 1234     # the sample batch's token ids: fixed, so the recorded diff is reproducible


@torch.no_grad()
def verify_export(export_dir: Path, model: GPT) -> dict[str, Any]:
    """Load `export_dir` with transformers' Auto classes and compare it with `model` and tiktoken.

    Raises Gpt2TrainError on any mismatch; returns the figures for lineage.json and the model card.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        hf = AutoModelForCausalLM.from_pretrained(export_dir, use_safetensors=True).float().eval()
        tokenizer = AutoTokenizer.from_pretrained(export_dir)
    except Exception as e:
        raise Gpt2TrainError(f"transformers cannot load the export in {export_dir} "
                             f"({type(e).__name__}: {e})") from e
    V, T = model.config.vocab_size, min(LOGITS_MAX_T, model.config.block_size)
    idx = torch.randint(0, V, (LOGITS_BATCH, T), generator=torch.Generator().manual_seed(LOGITS_SEED))
    ours = model(idx)[0][..., :V].float()  # (B, T, V)
    theirs = hf(input_ids=idx).logits.float()  # (B, T, V)
    if theirs.shape != ours.shape:
        raise Gpt2TrainError(f"the exported model's logits have shape {tuple(theirs.shape)}, ours {tuple(ours.shape)}")
    diff = (ours - theirs).abs().max().item()
    if not diff <= LOGITS_TOLERANCE:  # `not <=`: a NaN fails too
        raise Gpt2TrainError(f"the exported model's logits differ from the checkpoint's by up to {diff:.3g} "
                             f"(tolerance {LOGITS_TOLERANCE:g}) on a {LOGITS_BATCH}x{T} batch: the weight "
                             f"mapping (gpt2train/export/state_dict.py) or the GPT2Config does not match our model")
    texts = verify_tokenizer(tokenizer)
    return {"logits_max_abs_diff": diff, "logits_tolerance": LOGITS_TOLERANCE, "tokenizer_texts": texts,
            "tokenizer_match": True}
