"""Training-step throughput and peak memory: the trainer's own step against a plain eager nanoGPT-style GPT-2.

    python bench/train.py                 # CPU: `small` preset (4 layers, 256 channels), B=4, T=256
    python bench/train.py --device cuda   # GPU: d12 (124M), B=16, T=1024, with MFU
    python bench/train.py --device cuda --json out.json --pairs 5

The two variants:

- reference  nanoGPT's way: the whole model eager, loss over all padded-vocab logits, AdamW;
             bf16 autocast on CUDA with TF32 on, as nanoGPT trains
- ours       what `gpt2train train` runs with `train.compile=true`, built by the trainer's own
             functions: `build_model` (kernels=auto: the Triton kernels on CUDA, PyTorch's on
             CPU), `set_matmul_precision` (TF32), `autocast_for` (bf16 autocast over fp32 master
             weights on CUDA), `build_optimizer` (fused AdamW on CUDA), `apply_compile`, and the
             trainer's gradient clipping

Each run is a fresh process (so its peak memory is its own): `--warmup` steps (compilation happens
there), then `--steps` timed steps of forward + backward + clip + AdamW, each ended by a device
sync, of which the median is that run's step time. The variants alternate, reference then ours,
`--pairs` times; the reported speed-up is the median of the pairs' ratios, so a burst of noise on
this shared machine hits one pair, not one variant.

MFU (CUDA): 6 N + 6 L C T FLOPs per token over the GPU's dense bf16 peak from gpt2train/training/mfu.py,
found by the exact device name; for a GPU not in that table it is omitted, and said once.
Goals: ours >= 1.2x the reference on CPU; >= 50% MFU at 124M on an H100.
"""

from __future__ import annotations

import sys
from pathlib import Path

# The repo root, not bench/, first on the path: bench/tokenize.py would shadow the stdlib's.
sys.path[0] = str(Path(__file__).resolve().parent.parent)

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402

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


def build_variant(variant: str, args):
    """(model, step function) of one variant; the step runs forward, backward, clip and AdamW."""
    from gpt2train.config import TrainConfig
    from gpt2train.kernels import resolve_kernels
    from gpt2train.model import GPTConfig
    from gpt2train.training.parallelize import (
        apply_compile, autocast_for, build_model, build_optimizer, set_matmul_precision,
    )

    torch.manual_seed(0)
    device = args.device
    cfg = GPTConfig.from_descriptor(args.model, block_size=args.T)
    if variant == "reference":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        model = RefGPT(cfg.n_layer, cfg.n_embd, cfg.n_head, args.T).to(device)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1)
        autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if device == "cuda" else None
        loss_of = model
    else:
        t = TrainConfig(learning_rate=1e-4, compile=True, batch_size=args.B, seq_len=args.T)
        set_matmul_precision(t, device)
        kernels = resolve_kernels(t.kernels, device)
        model = build_model(cfg, t, kernels, device)
        opt = build_optimizer(model, t, device, world=1)
        autocast = autocast_for(t, device)
        compiled = apply_compile(model)
        loss_of = lambda x, y: compiled(x, y)[1]  # noqa: E731
    autocast = autocast or (lambda: torch.autocast("cpu", enabled=False))
    x = torch.randint(0, 50257, (args.B, args.T), device=device)
    y = torch.randint(0, 50257, (args.B, args.T), device=device)

    def step():
        with autocast():
            loss = loss_of(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()

    return model, step


def run_variant(variant: str, args) -> dict:
    from gpt2train.training.mfu import peak_bf16_flops
    from gpt2train.model import GPT, GPTConfig
    from gpt2train.training.step import peak_memory_mb

    model, step = build_variant(variant, args)
    for _ in range(args.warmup):
        step()
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    seconds = statistics.median(times)
    tok_s = args.B * args.T / seconds
    peak_mb = peak_memory_mb(args.device)  # before anything else is built in this process
    # The reference has the same parameters as our model: one FLOP count for both (6 N + 6 L C T).
    flops_per_token = model.flops_per_token(args.T) if isinstance(model, GPT) else \
        GPT(GPTConfig.from_descriptor(args.model, block_size=args.T)).flops_per_token(args.T)
    device_name = torch.cuda.get_device_name() if args.device == "cuda" else None
    peak = peak_bf16_flops(device_name)
    return {"variant": variant, "ms_per_step": 1000 * seconds, "tok_s": tok_s, "peak_mb": peak_mb,
            "mfu": flops_per_token * tok_s / peak if peak else None, "device": device_name or "cpu"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--model", help="descriptor or preset (default: small on CPU, d12 on CUDA)")
    ap.add_argument("--B", type=int)
    ap.add_argument("--T", type=int)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--pairs", type=int, default=3, help="reference/ours pairs of runs, alternated")
    ap.add_argument("--json", type=Path, help="write every run and the summary here")
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
    print(f"{args.model}, B={args.B}, T={args.T}, {args.device}: {args.pairs} pairs of runs (reference, ours), "
          f"each {args.warmup} warm-up + {args.steps} timed steps in a fresh process")
    print(f"{'pair':>4} {'variant':<10}{'tok/s':>10}{'ms/step':>10}{'peak MB':>10}{'MFU':>8}")
    runs, ratios = [], []
    for pair in range(1, args.pairs + 1):
        result = {}
        for variant in ("reference", "ours"):
            cmd = [sys.executable, __file__, "--variant", variant, "--device", args.device, "--model", args.model,
                   "--B", str(args.B), "--T", str(args.T), "--warmup", str(args.warmup), "--steps", str(args.steps)]
            proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ})
            if proc.returncode != 0:
                sys.exit(f"{variant} failed:\n{proc.stderr[-3000:]}")
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            result[variant] = r
            runs.append({"pair": pair, **r})
            mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "-"
            print(f"{pair:>4} {variant:<10}{r['tok_s']:>10.0f}{r['ms_per_step']:>10.1f}{r['peak_mb']:>10.0f}{mfu:>8}",
                  flush=True)
        ratios.append(result["ours"]["tok_s"] / result["reference"]["tok_s"])

    def median_of(variant, key):
        values = [r[key] for r in runs if r["variant"] == variant and r[key] is not None]
        return statistics.median(values) if values else None

    summary = {"model": args.model, "B": args.B, "T": args.T, "device": runs[0]["device"], "pairs": args.pairs,
               "ratios": ratios, "median_ratio": statistics.median(ratios),
               **{f"{v}_{k}": median_of(v, k) for v in ("reference", "ours") for k in ("tok_s", "ms_per_step",
                                                                                        "peak_mb", "mfu")}}
    print(f"ours / reference: {' '.join(f'{r:.2f}x' for r in ratios)} -> median {summary['median_ratio']:.2f}x "
          f"tokens/s (goal >= 1.2x on CPU); peak memory "
          f"{summary['ours_peak_mb'] / summary['reference_peak_mb']:.2f}x (medians)")
    if gpu:
        if summary["ours_mfu"] is None:
            from gpt2train.training.mfu import unknown_device_note

            print(unknown_device_note(summary["device"]))
        else:
            print(f"ours MFU (median) = {100 * summary['ours_mfu']:.1f}% of {summary['device']}'s dense bf16 peak "
                  f"(goal >= 50% at 124M on an H100)")
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "runs": runs}, indent=1))


if __name__ == "__main__":
    main()
