"""The four kernels as the model's hot-path ops (gpt2train/hot_path.py)."""

from __future__ import annotations

import torch

from gpt2train.hot_path import HotPathOps


def triton_ops() -> HotPathOps:
    """The model's hot-path ops (gpt2train/hot_path.py) backed by these kernels.

    Under torch.compile each op is an opaque call (`torch.compiler.disable`: a graph break) and
    inductor compiles what lies between them (the matmuls, the embedding). Dynamo can trace
    user Triton kernels on CUDA, but not the interpreter the CPU tests run, so this is the one
    path that is tested; tests/kernels/test_training_step.py runs it compiled.
    """
    from gpt2train.kernels.attention import causal_attention
    from gpt2train.kernels.classifier import fused_classifier
    from gpt2train.kernels.gelu import bias_gelu
    from gpt2train.kernels.layernorm import residual_layernorm

    opaque = torch.compiler.disable
    return HotPathOps(residual_layernorm=opaque(residual_layernorm), bias_gelu=opaque(bias_gelu),
                      causal_attention=opaque(causal_attention), classifier=opaque(fused_classifier))
