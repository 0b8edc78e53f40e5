"""How the model is built and spread over devices and memory, as small `apply_*` steps (after torchtitan).

    model = build_model(model_cfg, t, kernels, device)   # init, weight precision, recompute
    apply_recompute(model, level)          # activation checkpointing (llm.c's -r)
    compiled = apply_compile(model)        # torch.compile (train.compile)
    ddp_model = apply_ddp(compiled, world) # data parallel over the process group
    opt = build_optimizer(model, t, ...)   # AdamW, or ZeRO-1 sharded AdamW (llm.c's -z 1)

Applied in this order by gpt2train/training/loop.py: recompute changes the modules that compile
and DDP wrap. The precision settings (TF32, bf16 autocast) are here too.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import CheckpointImpl, checkpoint_wrapper
from torch.nn.parallel import DistributedDataParallel as DDP

from gpt2train.config import TrainConfig
from gpt2train.model import GPT, GPTConfig


def build_model(model_cfg: GPTConfig, t: TrainConfig, kernels: str, device: str) -> GPT:
    """The model as the trainer trains it: GPT-2's seeded init, the precision of its weights (fp32
    master weights, or with `master_weights=false` on CUDA the weights themselves in bf16, llm.c's
    -w 0), on `device`, with activation recompute (-r) applied. bench/train.py builds the same."""
    model = GPT(model_cfg, kernels=kernels).init_weights(t.seed)
    if device.startswith("cuda") and t.bf16 and not t.master_weights:
        model.to(torch.bfloat16)
    model.to(device)
    apply_recompute(model, t.recompute)
    return model


def set_matmul_precision(t: TrainConfig, device_type: str) -> None:
    """TF32 for fp32 matmuls on CUDA (train.tf32, llm.c's -f)."""
    if device_type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = t.tf32


def autocast_for(t: TrainConfig, device_type: str) -> Callable[[], contextlib.AbstractContextManager]:
    """bf16 autocast on CUDA (train.bf16); fp32 elsewhere."""
    if device_type == "cuda" and t.bf16:
        return lambda: torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext


def apply_recompute(model: GPT, level: int) -> None:
    """Level 1: recompute each MLP (its 4C-wide activations are the largest) in the backward;
    level 2: recompute whole blocks (the MLP, attention inputs and both LayerNorms).
    The wrapper keeps parameter names, so checkpoints do not change."""
    for i, block in enumerate(model.transformer.h):
        if level == 1:
            block.mlp = checkpoint_wrapper(block.mlp, checkpoint_impl=CheckpointImpl.NO_REENTRANT)
        elif level == 2:
            model.transformer.h[i] = checkpoint_wrapper(block, checkpoint_impl=CheckpointImpl.NO_REENTRANT)


def apply_compile(model: GPT) -> GPT:
    """Compile the whole forward with torch.compile; parameters and state-dict names stay as they
    are (the compiled module is a wrapper that shares them), so checkpoints do not change."""
    return torch.compile(model)


def apply_ddp(model: torch.nn.Module, world: int) -> torch.nn.Module:
    return DDP(model) if world > 1 else model


def build_optimizer(model: torch.nn.Module, t: TrainConfig, device_type: str, world: int) -> torch.optim.Optimizer:
    """AdamW(train.adam_beta1, adam_beta2: llm.c CUDA's 0.9, 0.95 by default; eps 1e-8), weight decay on
    2-D weights only (not biases or LayerNorms).
    With zero_stage=1 on several ranks, each rank keeps the Adam state of its share only."""
    params = [p for p in model.parameters() if p.requires_grad]  # the tied wte/lm_head appears once
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    kwargs = dict(lr=t.learning_rate, betas=(t.adam_beta1, t.adam_beta2), eps=1e-8, fused=device_type == "cuda")
    if t.zero_stage == 1 and world > 1:
        from torch.distributed.optim import ZeroRedundancyOptimizer

        opt = ZeroRedundancyOptimizer(decay, optimizer_class=torch.optim.AdamW, weight_decay=t.weight_decay,
                                      **kwargs)
        opt.add_param_group({"params": no_decay, "weight_decay": 0.0})
        return opt
    return torch.optim.AdamW([{"params": decay, "weight_decay": t.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], **kwargs)


def optimizer_shard_state(opt: torch.optim.Optimizer) -> dict:
    """What this rank checkpoints: the whole state, or under ZeRO-1 its own shard."""
    return opt.optim.state_dict() if hasattr(opt, "optim") else opt.state_dict()


def load_optimizer_shard_state(opt: torch.optim.Optimizer, state: dict) -> None:
    (opt.optim if hasattr(opt, "optim") else opt).load_state_dict(state)
