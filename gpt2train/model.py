"""GPT-2 as llm.c trains it, on one page (after nanoGPT's model.py).

Learned positions, pre-LayerNorm blocks, tanh-GELU MLP, tied input/output embeddings, and
the vocabulary padded 50257 -> 50304 (a multiple of 128, for fast matmuls). The padded
rows of `wte` start at zero and their logits are sliced off before any loss or sampling,
so they never win and never carry loss.

Parameter names match Hugging Face's `GPT2LMHeadModel` (`transformer.h.0.attn.c_attn.weight`
...), except that our Linear weights are (out, in) where HF's Conv1D stores (in, out):
gpt2train/export/state_dict.py transposes them.

    model = GPT(GPTConfig.from_descriptor("d12"))     # llm.c's -e d12: GPT-2 124M
    logits, loss = model(idx, targets)                 # idx, targets: (B, T) int64
    model.generate(idx, 100, temperature=0.8, top_k=40)  # with a KV cache: each new token one position

The hot path runs through four ops (`HotPathOps`, gpt2train/hot_path.py): the residual add + LayerNorm, bias + GELU,
causal attention and the classifier. `GPT(cfg, kernels="torch")` uses PyTorch's (below);
`kernels="triton"` swaps in gpt2train/kernels' fused Triton versions (llm.c's CUDA kernels).
The parameters and their names are the same either way, so checkpoints move between them.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
from torch.nn import functional as F

from gpt2train.hot_path import HotPathOps
from gpt2train.kernels.ops import triton_ops
# The shapes live apart from torch (config checks use them); imported here as the model's own names.
from gpt2train.model_config import DEPTH_SHAPES, GPT2_VOCAB_SIZE, MODEL_PRESETS, PADDED_VOCAB_SIZE, GPTConfig  # noqa: F401


def _residual_layernorm(x, delta, weight, bias, eps):
    x = x if delta is None else x + delta
    return x, F.layer_norm(x, (x.size(-1),), weight, bias, eps)


TORCH_OPS = HotPathOps(
    residual_layernorm=_residual_layernorm,
    bias_gelu=None,
    causal_attention=lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True),
    classifier=None,
)


def hot_path_ops(kernels: str) -> HotPathOps:
    """`kernels` as resolved (torch or triton): train.kernels is checked in gpt2train/config.py and
    `auto` resolved by gpt2train.kernels.resolve_kernels."""
    return triton_ops() if kernels == "triton" else TORCH_OPS


class KVCache:
    """The keys and values of every position fed so far, per layer, for generation: each new token is
    one position through the model instead of the whole context again (nanoGPT recomputes; litgpt
    and transformers cache the same way). Holds up to `capacity` positions, at most the context."""

    def __init__(self, cfg: GPTConfig, batch: int, capacity: int, device, dtype: torch.dtype):
        shape = (batch, cfg.n_head, capacity, cfg.n_embd // cfg.n_head)
        self.keys = [torch.empty(shape, device=device, dtype=dtype) for _ in range(cfg.n_layer)]
        self.values = [torch.empty(shape, device=device, dtype=dtype) for _ in range(cfg.n_layer)]
        self.capacity = capacity
        self.length = 0  # positions cached; GPT.forward advances it after its last layer

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Causal attention of the new positions' q (B, nh, T, hs) over every cached position and themselves."""
        start, T = self.length, q.size(2)
        self.keys[layer][:, :, start:start + T] = k
        self.values[layer][:, :, start:start + T] = v
        k, v = self.keys[layer][:, :, :start + T], self.values[layer][:, :, :start + T]
        if start == 0:
            return F.scaled_dot_product_attention(q, k, v, is_causal=True)
        # query i sits at position start + i and sees the keys up to it (one new token: all of them)
        positions = torch.arange(start + T, device=q.device)
        mask = None if T == 1 else positions <= positions[start:, None]
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


class ResidualLayerNorm(nn.LayerNorm):
    """nn.LayerNorm (same parameters) that first adds the pending residual: llm.c fuses the two."""

    def __init__(self, n_embd: int, ops: HotPathOps):
        super().__init__(n_embd)
        self.ops = ops

    def forward(self, x: torch.Tensor, delta: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return self.ops.residual_layernorm(x, delta, self.weight, self.bias, self.eps)


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig, ops: HotPathOps):
        super().__init__()
        self.ops = ops
        self.n_head = cfg.n_head
        self.c_attn = nn.Linear(cfg.n_embd, 3 * cfg.n_embd)  # q, k, v for all heads in one matmul
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd)
        self.c_proj.RESIDUAL_PROJECTION = True

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        # (B, T, C) -> (B, nh, T, hs)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        # (B, nh, T, hs); generation's cached attention is PyTorch's whatever the kernels (no backward there)
        y = self.ops.causal_attention(q, k, v) if cache is None else cache.attend(layer, q, k, v)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.c_proj(y)


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig, ops: HotPathOps):
        super().__init__()
        self.ops = ops
        self.c_fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd)
        self.c_proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd)
        self.c_proj.RESIDUAL_PROJECTION = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.ops.bias_gelu is None:
            return self.c_proj(F.gelu(self.c_fc(x), approximate="tanh"))  # GPT-2's tanh GELU
        # The bias add moves out of the matmul into the GELU kernel (one pass over (B, T, 4C)).
        return self.c_proj(self.ops.bias_gelu(F.linear(x, self.c_fc.weight), self.c_fc.bias))


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig, ops: HotPathOps):
        super().__init__()
        self.ln_1 = ResidualLayerNorm(cfg.n_embd, ops)
        self.attn = CausalSelfAttention(cfg, ops)
        self.ln_2 = ResidualLayerNorm(cfg.n_embd, ops)
        self.mlp = MLP(cfg, ops)

    def forward(self, x: torch.Tensor, delta: torch.Tensor | None, cache: KVCache | None = None,
                layer: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """Pre-LayerNorm block. x: the residual stream (B, T, C); delta: the previous block's MLP
        output, not yet added (None for the first block). Returns (x + delta + attention, this
        block's MLP output): each residual add happens inside the LayerNorm that follows it."""
        x, h = self.ln_1(x, delta)
        x, h = self.ln_2(x, self.attn(h, cache, layer))
        return x, self.mlp(h)


class GPT(nn.Module):
    def __init__(self, cfg: GPTConfig, kernels: str = "torch"):
        super().__init__()
        self.config = cfg
        self.ops = ops = hot_path_ops(kernels)
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(cfg.padded_vocab_size, cfg.n_embd),
            wpe=nn.Embedding(cfg.block_size, cfg.n_embd),
            h=nn.ModuleList(Block(cfg, ops) for _ in range(cfg.n_layer)),
            ln_f=ResidualLayerNorm(cfg.n_embd, ops),
        ))
        self.lm_head = nn.Linear(cfg.n_embd, cfg.padded_vocab_size, bias=False)
        self.lm_head.weight = self.transformer.wte.weight  # tied embeddings

    @torch.no_grad()
    def init_weights(self, seed: int) -> "GPT":
        """GPT-2 init, as llm.c: N(0, 0.02) weights, residual projections scaled by 1/sqrt(2 L),
        zero biases, unit LayerNorms; padded vocabulary rows zero. Seeded, device-independent."""
        gen = torch.Generator().manual_seed(seed)
        residual_std = 0.02 / math.sqrt(2 * self.config.n_layer)
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)) and module is not self.lm_head:
                std = residual_std if getattr(module, "RESIDUAL_PROJECTION", False) else 0.02
                # Drawn on the CPU: the same seed gives the same weights on any device.
                module.weight.copy_(torch.randn(module.weight.shape, generator=gen) * std)
                if getattr(module, "bias", None) is not None:
                    module.bias.zero_()
            elif isinstance(module, nn.LayerNorm):
                module.weight.fill_(1.0)
                module.bias.zero_()
        self.transformer.wte.weight[self.config.vocab_size:].zero_()
        return self

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, cache: KVCache | None = None):
        """idx (B, T) -> logits (B, T, vocab_size); loss = mean cross-entropy if targets given.

        Targets equal to -1 are ignored. The padded columns are sliced off here, once, so no
        caller can sample or score them. With the Triton kernels and targets, logits are None:
        the fused classifier never materialises them (llm.c's training forward does the same).
        With a `cache`, idx continues the positions it holds, and their keys and values join it.
        """
        B, T = idx.shape
        start = 0 if cache is None else cache.length
        limit, what = (self.config.block_size, "the model's context") if cache is None else (cache.capacity, "the KV cache")
        if start + T > limit:
            raise ValueError(f"sequence length {start + T} exceeds {what} ({limit})")
        pos = torch.arange(start, start + T, device=idx.device)
        x = self.transformer.wte(idx) + self.transformer.wpe(pos)  # (B, T, C)
        delta = None
        for layer, block in enumerate(self.transformer.h):
            x, delta = block(x, delta, cache, layer)
        if cache is not None:
            cache.length += T
        _, x = self.transformer.ln_f(x, delta)
        if targets is not None and self.ops.classifier is not None:
            return None, self.ops.classifier(x, self.lm_head.weight, targets, self.config.vocab_size)
        logits = self.lm_head(x)[..., : self.config.vocab_size]  # (B, T, V), padded columns dropped
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1)
        return logits, loss

    def num_params(self, non_embedding: bool = False) -> int:
        """Parameter count (tied weights once). llm.c reports it with the padded vocabulary."""
        n = sum(p.numel() for p in self.parameters())
        return n - self.transformer.wpe.weight.numel() if non_embedding else n

    def flops_per_token(self, T: int) -> int:
        """Training FLOPs per token as llm.c counts them: 6 N + 6 L C T (the attention scores)."""
        cfg = self.config
        return 6 * self.num_params() + 6 * cfg.n_layer * cfg.n_embd * T

    @torch.no_grad()
    def generate(self, idx: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
                 top_k: int | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """Sample `max_new_tokens` after `idx` (B, T); temperature 0 means greedy.

        The context is the last block_size tokens. Until it is full, a KV cache feeds each new token
        alone; once it is full the window slides, every position moves, and each step runs the whole
        window again (learned positions: a cached key belongs to its position)."""
        block = self.config.block_size
        cache = KVCache(self.config, idx.size(0), min(block, idx.size(1) + max_new_tokens), idx.device,
                        self.transformer.wte.weight.dtype)
        for _ in range(max_new_tokens):
            if cache.length == 0 or cache.length == cache.capacity:  # the first step, or a full window
                cache.length = 0
                logits, _ = self(idx[:, -block:], cache=cache)
            else:
                logits, _ = self(idx[:, -1:], cache=cache)
            logits = logits[:, -1, :]  # (B, V)
            if temperature == 0:
                nxt = logits.argmax(dim=-1, keepdim=True)
            else:
                logits = logits / temperature
                if top_k is not None:
                    kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, [-1]]
                    logits = logits.masked_fill(logits < kth, float("-inf"))
                probs = F.softmax(logits.float(), dim=-1)
                nxt = torch.multinomial(probs, num_samples=1, generator=generator)
            idx = torch.cat((idx, nxt), dim=1)
        return idx
