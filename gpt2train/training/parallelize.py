"""How the model is spread over devices and memory, as small `apply_*` steps (after torchtitan).

    apply_recompute(model, level)          # activation checkpointing (llm.c's -r)
    compiled = apply_compile(model)        # torch.compile (train.compile)
    ddp_model = apply_ddp(compiled, world) # data parallel over the process group
    opt = build_optimizer(model, t, ...)   # AdamW, or ZeRO-1 sharded AdamW (llm.c's -z 1)

Applied in this order by gpt2train/train.py: recompute changes the modules that compile and
DDP wrap.
"""

from __future__ import annotations

import torch
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import CheckpointImpl, checkpoint_wrapper
from torch.nn.parallel import DistributedDataParallel as DDP

from gpt2train.config import TrainConfig
from gpt2train.model import GPT


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
    """AdamW(0.9, 0.95, eps 1e-8), weight decay on 2-D weights only (not biases or LayerNorms).
    With zero_stage=1 on several ranks, each rank keeps the Adam state of its share only."""
    params = [p for p in model.parameters() if p.requires_grad]  # the tied wte/lm_head appears once
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    kwargs = dict(lr=t.learning_rate, betas=(0.9, 0.95), eps=1e-8, fused=device_type == "cuda")
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
