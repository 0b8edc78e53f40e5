"""Triton kernels (gpt2train/kernels) against PyTorch eager and torch.compile, and the fused
classifier's peak memory against the unfused one.

    python bench/kernels.py              # everything this machine can run
    python bench/kernels.py --memory     # only the classifier memory figures (CPU or GPU)
    python bench/kernels.py --gpu-only   # the GPU figures only (bench/gpu_check.sh)

On a CUDA GPU, for each kernel, forward and backward, at GPT-2 124M (d12) and 1558M (d48)
shapes: median time, TFLOP/s (attention, classifier) or GB/s (LayerNorm, GELU: bandwidth-bound),
the fraction of this GPU's peak (dense bf16 FLOP/s or memory bandwidth, from gpt2train/training/mfu.py; omitted
for a GPU not in its table), and the ratio to
eager and to torch.compile of the same PyTorch code; torch's SDPA flash backend stands for the
FA2 figures. Then a whole d12 training step (B=16, T=1024, bf16 autocast, AdamW) with each
kernel set, as MFU, and torch's fused AdamW against its foreach AdamW.

Without CUDA the GPU part prints why it is skipped, and the memory part runs on the CPU with
the PyTorch backend of the same chunked algorithm (`fused_classifier(..., backend="torch")`):
each variant in its own process, peak resident memory above what the inputs already hold.
"""

from __future__ import annotations

import sys
from pathlib import Path

# The repo root, not bench/, first on the path: bench/tokenize.py would shadow the stdlib's.
sys.path[0] = str(Path(__file__).resolve().parent.parent)

import argparse
import json
import os
import resource
import statistics
import subprocess

import torch
import torch.nn.functional as F

# (name, C, heads) for the two ends of llm.c's GPT-2 range; T = 1024 and B * T = 16384 rows.
SHAPES = [("124M (d12)", 768, 12), ("1558M (d48)", 1600, 25)]
B, T, V, VP = 16, 1024, 50257, 50304


# --- classifier memory -------------------------------------------------------------------------

def _classifier_inputs(device, C=768):
    g = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randn(B * T, C, generator=g).to(device).requires_grad_(True)
    w = (0.02 * torch.randn(VP, C, generator=g)).to(device).requires_grad_(True)
    targets = torch.randint(0, V, (B * T,), generator=g).to(device)
    return x, w, targets


def classifier_loss(variant: str, x, w, targets):
    from gpt2train.kernels.classifier import classifier_reference, fused_classifier

    if variant == "unfused":
        return classifier_reference(x, w, targets, V)
    return fused_classifier(x, w, targets, V, backend="torch" if variant == "chunked-torch" else "triton")


def _memory_child(variant: str) -> None:
    """One variant in a fresh process: peak RSS (KiB on Linux) above the inputs, forward + backward."""
    x, w, targets = _classifier_inputs("cpu")
    torch.mm(x[:8], w[:8].T)  # load the BLAS kernels before the baseline
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    loss = classifier_loss(variant, x, w, targets)
    loss.backward()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"variant": variant, "peak_bytes": (peak - base) * 1024, "loss": loss.item()}))


def memory_table(cpu: bool = True) -> None:
    print(f"fused classifier peak memory, B={B} T={T} V={V} (padded {VP}) C=768, forward + backward")
    rows = []
    if torch.cuda.is_available():
        for variant in ("unfused", "chunked-triton"):
            x, w, targets = _classifier_inputs("cuda")
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = classifier_loss(variant, x, w, targets)
            loss.backward()
            torch.cuda.synchronize()
            rows.append((variant + " (CUDA, bf16 autocast)", torch.cuda.max_memory_allocated() - base, loss.item()))
            del x, w, targets, loss
            torch.cuda.empty_cache()
    for variant in ("unfused", "chunked-torch") if cpu else ():
        r = subprocess.run([sys.executable, __file__, "--memory-child", variant], capture_output=True, text=True,
                           env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
        if r.returncode:
            raise SystemExit(f"memory child {variant} failed:\n{r.stderr[-2000:]}")
        out = json.loads(r.stdout.strip().splitlines()[-1])
        rows.append((variant + " (CPU, fp32)", out["peak_bytes"], out["loss"]))
    for name, peak, loss in rows:
        print(f"  {name:34s} peak {peak / 2**30:7.3f} GiB   loss {loss:.6f}")
    for device in ("CUDA", "CPU"):
        unfused = next((p for n, p, _ in rows if n.startswith("unfused") and device in n), None)
        fused = next((p for n, p, _ in rows if not n.startswith("unfused") and device in n), None)
        if unfused and fused:
            print(f"  {device}: fused / unfused = {fused / unfused:.3f}  (goal <= 0.25)")


# --- GPU timings -------------------------------------------------------------------------------

def _median_ms(fn, reps=20, warmup=3) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def _fwd_bwd_ms(make_out, inputs):
    """(forward ms, backward ms) of out = make_out(*inputs), backward with a fixed random grad."""
    out = make_out(*inputs)
    grad = torch.randn_like(out) if out.dim() else None

    def fwd():
        with torch.no_grad():
            make_out(*inputs)

    def fwd_bwd():
        for t in inputs:
            if isinstance(t, torch.Tensor) and t.requires_grad:
                t.grad = None
        o = make_out(*inputs)
        o.backward(grad)

    f = _median_ms(fwd)
    return f, max(_median_ms(fwd_bwd) - f, 0.0)


def kernel_cases(C: int, H: int):
    """(name, triton fn, torch fn, inputs, fwd work, bwd work, unit) per kernel; work in FLOPs or bytes."""
    from gpt2train.kernels.attention import causal_attention
    from gpt2train.kernels.classifier import fused_classifier
    from gpt2train.kernels.gelu import bias_gelu
    from gpt2train.kernels.layernorm import residual_layernorm

    dev, bf16, N = "cuda", torch.bfloat16, B * T
    D = C // H

    def leaf(*shape, dtype=torch.float32):
        return torch.randn(*shape, device=dev, dtype=dtype).requires_grad_(True)

    x, d, w, b = leaf(N, C), leaf(N, C, dtype=bf16), leaf(C), leaf(C)
    ln_bytes_f = N * C * (4 + 2 + 4 + 4)          # read x, delta; write r, y
    ln_bytes_b = N * C * (4 + 4 + 4 + 4 + 2)      # read r, dy, dr; write dx, d_delta
    h, hb = leaf(N, 4 * C, dtype=bf16), leaf(4 * C)
    gelu_bytes_f, gelu_bytes_b = N * 4 * C * 4, N * 4 * C * 6
    q, k, v = (leaf(B, H, T, D, dtype=bf16) for _ in range(3))
    attn_flops_f = 4 * B * H * T * T * D / 2      # two matmuls, half of them under the causal mask
    xc, wc = leaf(N, C), (0.02 * torch.randn(VP, C, device=dev)).requires_grad_(True)
    targets = torch.randint(0, V, (N,), device=dev)
    cls_flops = 6 * N * C * VP                    # forward and both backward matmuls (fused: all in fwd)

    def unfused_classifier(xx, ww):
        with torch.autocast("cuda", dtype=bf16):
            return F.cross_entropy((xx @ ww.T)[:, :V].float(), targets)

    def triton_classifier(xx, ww):
        with torch.autocast("cuda", dtype=bf16):
            return fused_classifier(xx, ww, targets, V)

    return [
        ("residual+layernorm", lambda *a: residual_layernorm(*a)[1],
         lambda xx, dd, ww, bb: F.layer_norm(xx + dd, (C,), ww, bb), (x, d, w, b), ln_bytes_f, ln_bytes_b, "B"),
        ("bias+gelu", bias_gelu, lambda hh, bb: F.gelu(hh + bb, approximate="tanh"), (h, hb),
         gelu_bytes_f, gelu_bytes_b, "B"),
        (f"attention (D={D})", causal_attention,
         lambda qq, kk, vv: F.scaled_dot_product_attention(qq, kk, vv, is_causal=True), (q, k, v),
         attn_flops_f, 2.5 * attn_flops_f, "F"),
        ("classifier (fwd+bwd)", triton_classifier, unfused_classifier, (xc, wc), cls_flops, 0, "F"),
    ]


def _device_peaks() -> tuple[float | None, float | None]:
    """(bf16 FLOP/s, memory bytes/s) of this GPU; None, said once, for a GPU gpt2train/training/mfu.py lacks."""
    from gpt2train.training.mfu import peak_bf16_flops, peak_memory_bytes_per_s, unknown_device_note

    name = torch.cuda.get_device_name()
    flops, bandwidth = peak_bf16_flops(name), peak_memory_bytes_per_s(name)
    if flops is None:
        print(unknown_device_note(name) + "; fractions of peak omitted")
    return flops, bandwidth


def timing_table(peak_flops: float | None, peak_bandwidth: float | None) -> None:
    print(f"\nkernels, B*T = {B * T} rows, bf16 where training uses it ({torch.cuda.get_device_name()})")
    print(f"{'kernel':24s} {'pass':4s} {'triton ms':>9s} {'eager ms':>9s} {'compile ms':>10s} "
          f"{'rate':>14s} {'of peak':>7s} {'vs eager':>8s} {'vs compile':>10s}")
    for shape_name, C, H in SHAPES:
        print(f"-- GPT-2 {shape_name}: C={C}, heads={H}")
        for name, ours, ref, inputs, work_f, work_b, unit in kernel_cases(C, H):
            compiled = torch.compile(ref)
            t_f, t_b = _fwd_bwd_ms(ours, inputs)
            e_f, e_b = _fwd_bwd_ms(ref, inputs)
            c_f, c_b = _fwd_bwd_ms(compiled, inputs)
            if name.startswith("classifier"):  # the fused classifier does its backward in the forward
                t_f, e_f, c_f, t_b, e_b, c_b = t_f + t_b, e_f + e_b, c_f + c_b, 0, 0, 0
            for pas, ms, ems, cms, work in (("fwd", t_f, e_f, c_f, work_f), ("bwd", t_b, e_b, c_b, work_b)):
                if not work:
                    continue
                rate = work / (ms / 1e3)
                peak = peak_flops if unit == "F" else peak_bandwidth
                label = f"{rate / 1e12:7.1f} TFLOP/s" if unit == "F" else f"{rate / 1e9:8.0f} GB/s"
                of_peak = f"{rate / peak:7.1%}" if peak else f"{'-':>7}"
                print(f"{name:24s} {pas:4s} {ms:9.3f} {ems:9.3f} {cms:10.3f} {label:>14s} {of_peak} "
                      f"{ems / ms:7.2f}x {cms / ms:9.2f}x")


def training_step_table(peak_flops: float | None) -> None:
    from gpt2train.model import GPT, GPTConfig

    cfg = GPTConfig.from_descriptor("d12")
    idx = torch.randint(0, V, (B, T + 1), device="cuda")
    x, y = idx[:, :-1].contiguous(), idx[:, 1:].contiguous()
    print(f"\nwhole d12 training step: B={B} T={T}, bf16 autocast, fp32 master weights, fused AdamW")
    for kernels, compile_ in (("torch", False), ("torch", True), ("triton", False), ("triton", True)):
        model = GPT(cfg, kernels=kernels).init_weights(0).cuda()
        run = torch.compile(model) if compile_ else model
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)

        def step():
            with torch.autocast("cuda", dtype=torch.bfloat16):
                _, loss = run(x, y)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        ms = _median_ms(step, reps=10, warmup=3)
        mfu = f"MFU {model.flops_per_token(T) * B * T / (ms / 1e3) / peak_flops:6.1%}" if peak_flops else "MFU -"
        print(f"  kernels={kernels:6s} compile={str(compile_):5s} {ms:8.1f} ms/step  "
              f"{B * T / (ms / 1e3):9.0f} tok/s  {mfu}  (goal >= 50% with triton)")
        del model, run, opt
        torch.cuda.empty_cache()
    model = GPT(cfg).init_weights(0).cuda()
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    for impl in ("fused", "foreach"):
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, **{impl: True})
        print(f"  AdamW {impl:8s} {_median_ms(opt.step):7.3f} ms per step over {model.num_params():,} parameters")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--memory", action="store_true", help="only the classifier memory figures")
    ap.add_argument("--gpu-only", action="store_true", help="skip the CPU memory comparison (bench/gpu_check.sh)")
    ap.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.memory_child:
        return _memory_child(args.memory_child)
    memory_table(cpu=not args.gpu_only)
    if args.memory:
        return
    if not torch.cuda.is_available():
        print("\nno CUDA device: kernel timings, the training-step MFU and AdamW timings are skipped "
              "(they need an NVIDIA GPU; the kernels' correctness is tested on CPU by tests/kernels).")
        return
    peak_flops, peak_bandwidth = _device_peaks()
    timing_table(peak_flops, peak_bandwidth)
    training_step_table(peak_flops)


if __name__ == "__main__":
    main()
