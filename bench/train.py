"""Training-step throughput and peak memory: our step against a plain eager nanoGPT-style GPT-2.

    python bench/train.py                 # CPU: `small` preset (4 layers, 256 channels), B=4, T=256
    python bench/train.py --device cuda   # GPU: d12 (124M), B=16, T=1024, bf16 autocast, with MFU

Each variant runs in its own process (so peak memory is its own), `--warmup` steps first
(compilation happens there), then `--steps` timed steps of forward + backward + AdamW, of
which the median is reported:

- reference  nanoGPT's way: the whole model eager, loss over all padded-vocab logits
- ours       gpt2train's model and optimizer (`build_optimizer`), `torch.compile`d as
             `train.compile=true` does, bf16 autocast on CUDA

Goal (issue #3): ours >= 1.2x the reference on CPU; >= 50% bf16 MFU at 124M on an H100.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:] = [str(REPO)] + [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402


class RefBlock(nn.Module):
    """nanoGPT's block, verbatim in spirit: eager attention via SDPA, tanh GELU MLP."""

    def __init__(self, C: int, nh: int):
        super().__init__()
        self.nh = nh
        self.ln_1, self.ln_2 = nn.LayerNorm(C), nn.LayerNorm(C)
        self.c_attn, self.c_proj = nn.Linear(C, 3 * C), nn.Linear(C, C)
        self.c_fc, self.mlp_proj = nn.Linear(C, 4 * C), nn.Linear(4 * C, C)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, self.nh, C // self.nh).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).contiguous().view(B, T, C)
        x = x + self.c_proj(y)
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))


class RefGPT(nn.Module):
    def __init__(self, L: int, C: int, nh: int, T: int, V: int = 50304):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(V, C), nn.Embedding(T, C)
        self.h = nn.ModuleList(RefBlock(C, nh) for _ in range(L))
        self.ln_f = nn.LayerNorm(C)
        self.lm_head = nn.Linear(C, V, bias=False)
        self.lm_head.weight = self.wte.weight

    def forward(self, idx, targets):
        x = self.wte(idx) + self.wpe(torch.arange(idx.size(1), device=idx.device))
        for block in self.h:
            x = block(x)
        logits = self.lm_head(self.ln_f(x))
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))


def peak_memory_mb(device: str) -> float:
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_variant(variant: str, args) -> dict:
    from gpt2train.config import TrainConfig
    from gpt2train.model import GPT, GPTConfig
    from gpt2train.parallelize import apply_compile, build_optimizer

    torch.manual_seed(0)
    device = args.device
    cfg = GPTConfig.from_descriptor(args.model, block_size=args.T)
    if variant == "reference":
        model = RefGPT(cfg.n_layer, cfg.n_embd, cfg.n_head, args.T).to(device)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1)
        step_model = model
        loss_fn = lambda x, y: step_model(x, y)  # noqa: E731
    else:
        model = GPT(cfg).init_weights(0).to(device)
        opt = build_optimizer(model, TrainConfig(learning_rate=1e-4), device, world=1)
        step_model = apply_compile(model)
        loss_fn = lambda x, y: step_model(x, y)[1]  # noqa: E731
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device == "cuda" else torch.autocast("cpu", enabled=False)
    x = torch.randint(0, 50257, (args.B, args.T), device=device)
    y = torch.randint(0, 50257, (args.B, args.T), device=device)

    def step():
        with autocast:
            loss = loss_fn(x, y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(args.warmup):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        step()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    # The median step: this shared 2-core machine has bursts of noise that a mean would carry.
    seconds = statistics.median(times)
    tok_s = args.B * args.T / seconds
    flops = (6 * model_params(cfg) + 6 * cfg.n_layer * cfg.n_embd * args.T) * tok_s
    return {"variant": variant, "s_per_step": seconds, "tok_s": tok_s, "peak_mb": peak_memory_mb(device),
            "mfu": flops / 989e12 if device == "cuda" else None}


def model_params(cfg) -> int:
    C, L = cfg.n_embd, cfg.n_layer
    return cfg.padded_vocab_size * C + cfg.block_size * C + L * (12 * C * C + 13 * C) + 2 * C


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--model", help="descriptor or preset (default: small on CPU, d12 on CUDA)")
    ap.add_argument("--B", type=int)
    ap.add_argument("--T", type=int)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--variant", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("bench/train.py --device cuda: no CUDA device here; skipped (run the CPU comparison without --device)")
        return
    gpu = args.device == "cuda"
    args.model = args.model or ("d12" if gpu else "small")
    args.B = args.B or (16 if gpu else 4)
    args.T = args.T or (1024 if gpu else 256)

    if args.variant:
        print(json.dumps(run_variant(args.variant, args)))
        return
    results = {}
    for variant in ("reference", "ours"):
        cmd = [sys.executable, __file__, "--variant", variant, "--device", args.device, "--model", args.model,
               "--B", str(args.B), "--T", str(args.T), "--warmup", str(args.warmup), "--steps", str(args.steps)]
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ})
        if proc.returncode != 0:
            sys.exit(f"{variant} failed:\n{proc.stderr[-3000:]}")
        results[variant] = json.loads(proc.stdout.strip().splitlines()[-1])
    ref, ours = results["reference"], results["ours"]
    print(f"{args.model}, B={args.B}, T={args.T}, {args.device}, {args.steps} timed steps after {args.warmup} warm-up")
    print(f"{'variant':<40}{'tok/s':>10}{'ms/step':>10}{'peak MB':>10}{'MFU':>8}")
    for name, r in (("reference: eager nanoGPT-style", ref), ("ours: gpt2train + torch.compile", ours)):
        mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "-"
        print(f"{name:<40}{r['tok_s']:>10.0f}{1000 * r['s_per_step']:>10.0f}{r['peak_mb']:>10.0f}{mfu:>8}")
    ratio = ours["tok_s"] / ref["tok_s"]
    print(f"ours / reference = {ratio:.2f}x tokens/s (goal >= 1.2x on CPU); "
          f"peak memory {ours['peak_mb'] / ref['peak_mb']:.2f}x")
    if gpu and not math.isnan(ours["mfu"] or math.nan):
        print(f"ours MFU = {100 * ours['mfu']:.1f}% of 989 TFLOP/s (goal >= 50% on an H100)")


if __name__ == "__main__":
    main()
