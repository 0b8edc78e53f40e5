"""The four ops of the model's hot path, as a swappable set: PyTorch's (gpt2train/model.py,
TORCH_OPS) or the fused Triton kernels (gpt2train/kernels, `triton_ops()`). Its own module so that
the model and the kernels both import it and neither imports the other's internals."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class HotPathOps:
    residual_layernorm: Callable  # (x, delta | None, w, b, eps) -> (x + delta, LayerNorm(x + delta))
    bias_gelu: Callable | None    # (h, b) -> gelu_tanh(h + b); None: the Linear adds its bias
    causal_attention: Callable    # q, k, v (B, nh, T, hs) -> (B, nh, T, hs)
    classifier: Callable | None   # (x, W, targets, V) -> mean loss; None: lm_head, then cross-entropy
