"""The state-dict adapter between our GPT and Hugging Face's `GPT2LMHeadModel`.

Names are already the same (see gpt2train/model.py); two things differ:
- HF's `Conv1D` stores a Linear's weight as (in, out): the four matmul weights of each block
  are transposed;
- HF's vocabulary is the real 50257 tokens: our padded rows of `wte` are dropped on the way
  out and zero-filled on the way in, and `lm_head.weight` is tied to `wte` on both sides.
"""

from __future__ import annotations

import torch

from gpt2train.model import GPT, GPTConfig

# Our nn.Linear weights that HF keeps as Conv1D (transposed).
CONV1D_SUFFIXES = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


def to_hf_state_dict(model: GPT) -> dict[str, torch.Tensor]:
    """Our weights as GPT2LMHeadModel's state dict (fp32 copies, contiguous, no padded rows)."""
    V = model.config.vocab_size
    out = {}
    for name, tensor in model.state_dict().items():
        if name == "lm_head.weight":
            continue  # tied: HF re-ties it to transformer.wte.weight on load
        t = tensor.detach().float()
        if name.endswith(CONV1D_SUFFIXES):
            t = t.t()
        if name == "transformer.wte.weight":
            t = t[:V]
        out[name] = t.contiguous().clone()
    return out


def from_hf_state_dict(state: dict[str, torch.Tensor], cfg: GPTConfig) -> GPT:
    """A GPT holding GPT2LMHeadModel weights (e.g. OpenAI's GPT-2 checkpoints)."""
    model = GPT(cfg)
    ours = model.state_dict()
    with torch.no_grad():
        for name, tensor in state.items():
            if name == "lm_head.weight" or name.endswith(".attn.bias") or name.endswith(".attn.masked_bias"):
                continue  # tied / HF's causal-mask buffers
            t = tensor.t() if name.endswith(CONV1D_SUFFIXES) else tensor
            if name == "transformer.wte.weight":
                ours[name].zero_()
                ours[name][: t.shape[0]].copy_(t)
            else:
                if name not in ours:
                    raise KeyError(f"unexpected weight {name!r} in the Hugging Face state dict")
                ours[name].copy_(t)
    return model
