"""Residual add fused with the LayerNorm that follows it (llm.c's `fused_residual_forward5` and
`layernorm_backward`), in Triton.

    r = x + delta                      # the residual stream after the previous sub-block
    y = (r - mean(r)) * rstd * w + b   # rstd = 1 / sqrt(var(r) + eps), per row of C channels

Forward returns (r, y) and saves mean and rstd (fp32, one per row) for the backward, which
recomputes x_hat = (r - mean) * rstd instead of storing it:

    dr = g_r + rstd * (g_y*w - mean(g_y*w) - x_hat * mean(g_y*w * x_hat))   (= dx = d_delta)
    dw = sum_rows g_y * x_hat,   db = sum_rows g_y

Without `delta` (the first block: the embeddings) it is a plain LayerNorm and r is x itself.
Inputs: x, delta (N, C) rows of any float dtype (fp32, bf16, fp16; they may differ: under
autocast the stream is fp32 and delta bf16), w and b (C,). Statistics are fp32 whatever the
dtype; r has x's dtype, y has r's. Any C up to 65536; any N.

Tests: tests/kernels/test_layernorm.py. Benchmark: bench/kernels.py (`layernorm`).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from gpt2train.kernels import as_rows as _rows
from gpt2train.kernels import launch

# One program per row in the forward: a GPT-2 row (C <= 1600) fits one block of registers.
# The backward gives each program ROWS_PER_PROGRAM rows so that its partial dw/db sums are
# few (N / ROWS_PER_PROGRAM rows of C floats), then torch sums the partials: Liger-Kernel's
# layer_norm does the same. 8 warps for C > 1024 and 4 below is its choice too.
BACKWARD_ROWS_PER_PROGRAM = 64


def _num_warps(block_c: int) -> int:
    return 8 if block_c > 1024 else 4


@triton.jit
def residual_layernorm_forward_kernel(
    x_ptr, delta_ptr, r_ptr, y_ptr,  # (N, C) rows, each with its own row stride
    w_ptr, b_ptr,                    # (C,) LayerNorm weight and bias
    mean_ptr, rstd_ptr,              # (N,) fp32 statistics saved for the backward
    stride_x, stride_delta, stride_r, stride_y,
    C, eps,
    HAS_DELTA: tl.constexpr,         # False: y = LN(x) and r is not written
    BLOCK_C: tl.constexpr,           # next power of two >= C
):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK_C)
    mask = cols < C
    r = tl.load(x_ptr + row * stride_x + cols, mask=mask, other=0.0).to(tl.float32)
    if HAS_DELTA:
        r += tl.load(delta_ptr + row * stride_delta + cols, mask=mask, other=0.0).to(tl.float32)
        # Normalize r as stored (rounded to its dtype), as the unfused `F.layer_norm(x + delta)` does.
        r = r.to(r_ptr.dtype.element_ty)
        tl.store(r_ptr + row * stride_r + cols, r, mask=mask)
        r = r.to(tl.float32)
    mean = tl.sum(r, axis=0) / C
    centered = tl.where(mask, r - mean, 0.0)
    var = tl.sum(centered * centered, axis=0) / C
    rstd = 1.0 / tl.sqrt(var + eps)
    w = tl.load(w_ptr + cols, mask=mask, other=0.0).to(tl.float32)
    b = tl.load(b_ptr + cols, mask=mask, other=0.0).to(tl.float32)
    y = centered * rstd * w + b
    tl.store(y_ptr + row * stride_y + cols, y.to(y_ptr.dtype.element_ty), mask=mask)
    tl.store(mean_ptr + row, mean)
    tl.store(rstd_ptr + row, rstd)


@triton.jit
def residual_layernorm_backward_kernel(
    r_ptr, dy_ptr, gr_ptr, dr_ptr,  # (N, C): the saved r, g_y, g_r (r's own gradient), dr (out)
    w_ptr, mean_ptr, rstd_ptr,    # (C,), (N,), (N,)
    dw_partial_ptr, db_partial_ptr,  # (programs, C) fp32 partial sums, reduced by the host
    stride_r, stride_dy, stride_gr, stride_dr,
    N, C,
    HAS_GR: tl.constexpr,         # False: r's own gradient is zero (nothing used r downstream)
    ROWS_PER_PROGRAM: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    pid = tl.program_id(0)
    cols = tl.arange(0, BLOCK_C)
    mask = cols < C
    w = tl.load(w_ptr + cols, mask=mask, other=0.0).to(tl.float32)
    dw = tl.zeros((BLOCK_C,), dtype=tl.float32)
    db = tl.zeros((BLOCK_C,), dtype=tl.float32)
    row_start = pid * ROWS_PER_PROGRAM
    for i in range(0, ROWS_PER_PROGRAM):
        row = row_start + i
        if row < N:
            row64 = row.to(tl.int64)
            r = tl.load(r_ptr + row64 * stride_r + cols, mask=mask, other=0.0).to(tl.float32)
            dy = tl.load(dy_ptr + row64 * stride_dy + cols, mask=mask, other=0.0).to(tl.float32)
            mean = tl.load(mean_ptr + row)
            rstd = tl.load(rstd_ptr + row)
            x_hat = tl.where(mask, (r - mean) * rstd, 0.0)
            wdy = w * dy
            dw += dy * x_hat
            db += dy
            c1 = tl.sum(x_hat * wdy, axis=0) / C
            c2 = tl.sum(wdy, axis=0) / C
            dr = (wdy - (x_hat * c1 + c2)) * rstd
            if HAS_GR:
                dr += tl.load(gr_ptr + row64 * stride_gr + cols, mask=mask, other=0.0).to(tl.float32)
            tl.store(dr_ptr + row64 * stride_dr + cols, dr.to(dr_ptr.dtype.element_ty), mask=mask)
    tl.store(dw_partial_ptr + pid * C + cols, dw, mask=mask)
    tl.store(db_partial_ptr + pid * C + cols, db, mask=mask)


def residual_layernorm_forward(x, delta, w, b, eps):
    shape = x.shape
    x2 = _rows(x)
    N, C = x2.shape
    d2 = _rows(delta) if delta is not None else x2
    r2 = torch.empty_like(x2) if delta is not None else x2
    y2 = torch.empty_like(r2)
    mean = torch.empty(N, device=x.device, dtype=torch.float32)
    rstd = torch.empty(N, device=x.device, dtype=torch.float32)
    block_c = triton.next_power_of_2(C)
    launch(
        residual_layernorm_forward_kernel, (N,), x2, d2, r2, y2, w, b, mean, rstd,
        x2.stride(0), d2.stride(0), r2.stride(0), y2.stride(0), C, eps,
        HAS_DELTA=delta is not None, BLOCK_C=block_c, num_warps=_num_warps(block_c))
    return r2.view(shape), y2.view(shape), mean, rstd


def residual_layernorm_backward(r, dy, gr, w, mean, rstd):
    """Returns (d_input, dw, db); d_input is both dx and d_delta. `gr`, r's own gradient, may be None."""
    r2, dy2 = _rows(r), _rows(dy)
    N, C = r2.shape
    gr2 = _rows(gr) if gr is not None else r2  # r2: a valid pointer the kernel never reads
    d_in = torch.empty_like(r2)
    programs = triton.cdiv(N, BACKWARD_ROWS_PER_PROGRAM)
    dw_partial = torch.empty(programs, C, device=r.device, dtype=torch.float32)
    db_partial = torch.empty(programs, C, device=r.device, dtype=torch.float32)
    block_c = triton.next_power_of_2(C)
    launch(
        residual_layernorm_backward_kernel, (programs,), r2, dy2, gr2, d_in, w, mean, rstd, dw_partial, db_partial,
        r2.stride(0), dy2.stride(0), gr2.stride(0), d_in.stride(0), N, C,
        HAS_GR=gr is not None, ROWS_PER_PROGRAM=BACKWARD_ROWS_PER_PROGRAM, BLOCK_C=block_c,
        num_warps=_num_warps(block_c))
    return d_in.view(r.shape), dw_partial.sum(0).to(w.dtype), db_partial.sum(0).to(w.dtype)


class ResidualLayerNormFunction(torch.autograd.Function):
    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda")
    def forward(ctx, x, delta, w, b, eps):
        r, y, mean, rstd = residual_layernorm_forward(x, delta, w, b, eps)
        ctx.save_for_backward(r, w, mean, rstd)
        ctx.has_delta = delta is not None
        ctx.dtypes = (x.dtype, None if delta is None else delta.dtype)
        if delta is None:
            return y
        return r, y

    @staticmethod
    @torch.amp.custom_bwd(device_type="cuda")
    def backward(ctx, *grads):
        r, w, mean, rstd = ctx.saved_tensors
        gr, dy = grads if ctx.has_delta else (None, grads[0])
        if dy is None:
            dy = torch.zeros_like(r)
        d_in, dw, db = residual_layernorm_backward(r, dy, gr, w, mean, rstd)
        x_dtype, delta_dtype = ctx.dtypes
        d_delta = d_in.to(delta_dtype) if ctx.has_delta else None
        return d_in.to(x_dtype), d_delta, dw, db, None


def residual_layernorm(x: torch.Tensor, delta: torch.Tensor | None, weight: torch.Tensor,
                       bias: torch.Tensor, eps: float = 1e-5) -> tuple[torch.Tensor, torch.Tensor]:
    """(x + delta, LayerNorm(x + delta)); with delta None, (x, LayerNorm(x))."""
    if delta is None:
        return x, ResidualLayerNormFunction.apply(x, None, weight, bias, eps)
    return ResidualLayerNormFunction.apply(x, delta, weight, bias, eps)


def residual_layernorm_reference(x, delta, weight, bias, eps=1e-5):
    """Plain PyTorch, with the statistics spelled out: (r, y, mean, rstd), all differentiable."""
    r = x if delta is None else x + delta
    rf = r.float()
    mean = rf.mean(-1, keepdim=True)
    rstd = torch.rsqrt(((rf - mean) ** 2).mean(-1, keepdim=True) + eps)
    y = ((rf - mean) * rstd * weight.float() + bias.float()).to(r.dtype)
    return r, y, mean.squeeze(-1), rstd.squeeze(-1)
