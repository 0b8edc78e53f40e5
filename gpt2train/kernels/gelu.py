"""Bias add fused with GPT-2's tanh-GELU (llm.c's `gelu_forward` / `gelu_backward_inplace`, with
the bias add that its cuBLASLt epilogue does folded in), in Triton.

    u = h + b                                        # h = x @ W_fc^T, from a bias-free matmul
    y = 0.5 u (1 + tanh(k (u + 0.044715 u^3))),      k = sqrt(2 / pi)
    dy/du = 0.5 (1 + t) + 0.5 u (1 - t^2) k (1 + 3 * 0.044715 u^2),   t = tanh(...)
    dh = g * dy/du,   db = sum_rows dh

The backward recomputes u and t from the saved h and b (no (N, 4C) activation is kept beyond
the matmul output that autograd holds anyway). Inputs: h (N, F) of any float dtype, b (F,);
math in fp32, y and dh in h's dtype. `db` is reduced by torch over the fp32 dh rows.

Tests: tests/kernels/test_gelu.py. Benchmark: bench/kernels.py (`bias_gelu`).
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from gpt2train.kernels import as_rows as _rows
from gpt2train.kernels import launch

# 2-D tiles: BLOCK_ROWS rows x BLOCK_F columns per program, 1024 elements per warp group of 4
# warps. An elementwise op is bandwidth-bound; any tile this size saturates HBM on Hopper.
BLOCK_ROWS = 4
BLOCK_F = 1024

@triton.jit
def _tanh(x):
    # tanh without libdevice (which the CPU interpreter lacks), from e = exp(-2|x|) in (0, 1]:
    # tanh(|x|) = (1 - e) / (1 + e), never overflowing, then x's sign.
    e = tl.exp(-2.0 * tl.abs(x))
    t = (1.0 - e) / (1.0 + e)
    return tl.where(x < 0, -t, t)


# The constants are literals inside the kernels: a @triton.jit function cannot read a module-level
# float on a GPU (a NameError at compile time, which the CPU interpreter does not raise), and the
# interpreter cannot multiply a tl.constexpr global by a tensor. bench/aot_compile.py compiles
# them for sm_80 / sm_90. The reference below computes sqrt(2 / pi) on its own.
@triton.jit
def _tanh_argument(u):
    # k (u + 0.044715 u^3), k = sqrt(2 / pi)
    return 0.7978845608028654 * (u + 0.044715 * u * u * u)


@triton.jit
def _tanh_argument_grad(u):
    # d/du of the above: k (1 + 3 * 0.044715 u^2)
    return 0.7978845608028654 * (1.0 + 0.134145 * u * u)


@triton.jit
def _load_tile_plus_bias(h_ptr, b_ptr, stride_h, N, F, BLOCK_ROWS: tl.constexpr, BLOCK_F: tl.constexpr):
    """This program's (BLOCK_ROWS, BLOCK_F) tile of u = h + b in fp32, its row offsets, columns, mask."""
    rows = tl.program_id(0) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
    cols = tl.program_id(1) * BLOCK_F + tl.arange(0, BLOCK_F)
    mask = (rows[:, None] < N) & (cols[None, :] < F)
    rows64 = rows.to(tl.int64)[:, None]
    u = tl.load(h_ptr + rows64 * stride_h + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    u += tl.load(b_ptr + cols, mask=cols < F, other=0.0).to(tl.float32)[None, :]
    return u, rows64, cols[None, :], mask


@triton.jit
def bias_gelu_forward_kernel(
    h_ptr, b_ptr, y_ptr,   # (N, F), (F,), (N, F)
    stride_h, stride_y,    # row strides; columns are contiguous
    N, F,
    BLOCK_ROWS: tl.constexpr, BLOCK_F: tl.constexpr,
):
    u, rows64, cols, mask = _load_tile_plus_bias(h_ptr, b_ptr, stride_h, N, F, BLOCK_ROWS, BLOCK_F)
    t = _tanh(_tanh_argument(u))
    y = 0.5 * u * (1.0 + t)
    tl.store(y_ptr + rows64 * stride_y + cols, y.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def bias_gelu_backward_kernel(
    h_ptr, b_ptr, dy_ptr, dh_ptr,          # (N, F), (F,), (N, F), (N, F)
    stride_h, stride_dy, stride_dh,
    N, F,
    BLOCK_ROWS: tl.constexpr, BLOCK_F: tl.constexpr,
):
    u, rows64, cols, mask = _load_tile_plus_bias(h_ptr, b_ptr, stride_h, N, F, BLOCK_ROWS, BLOCK_F)
    g = tl.load(dy_ptr + rows64 * stride_dy + cols, mask=mask, other=0.0).to(tl.float32)
    t = _tanh(_tanh_argument(u))
    du = 0.5 * (1.0 + t) + 0.5 * u * (1.0 - t * t) * _tanh_argument_grad(u)
    tl.store(dh_ptr + rows64 * stride_dh + cols, (g * du).to(dh_ptr.dtype.element_ty), mask=mask)


def _grid(N: int, F: int) -> tuple[int, int]:
    return triton.cdiv(N, BLOCK_ROWS), triton.cdiv(F, BLOCK_F)


def bias_gelu_forward(h: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    h2 = _rows(h)
    N, F = h2.shape
    y = torch.empty_like(h2)
    launch(bias_gelu_forward_kernel, _grid(N, F), h2, b, y, h2.stride(0), y.stride(0), N, F,
           BLOCK_ROWS=BLOCK_ROWS, BLOCK_F=BLOCK_F)
    return y.view(h.shape)


def bias_gelu_backward(h: torch.Tensor, b: torch.Tensor, dy: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    h2, dy2 = _rows(h), _rows(dy)
    N, F = h2.shape
    dh = torch.empty_like(h2)
    launch(bias_gelu_backward_kernel, _grid(N, F), h2, b, dy2, dh, h2.stride(0), dy2.stride(0), dh.stride(0), N, F,
           BLOCK_ROWS=BLOCK_ROWS, BLOCK_F=BLOCK_F)
    db = dh.sum(0, dtype=torch.float32).to(b.dtype)
    return dh.view(h.shape), db


class BiasGeluFunction(torch.autograd.Function):
    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda")
    def forward(ctx, h, b):
        ctx.save_for_backward(h, b)
        return bias_gelu_forward(h, b)

    @staticmethod
    @torch.amp.custom_bwd(device_type="cuda")
    def backward(ctx, dy):
        h, b = ctx.saved_tensors
        return bias_gelu_backward(h, b, dy)


def bias_gelu(h: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """gelu_tanh(h + bias), h (..., F), bias (F,)."""
    return BiasGeluFunction.apply(h, bias)


def bias_gelu_reference(h: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Plain PyTorch: the formula above in fp32, cast back to h's dtype."""
    u = h.float() + bias.float()
    return (0.5 * u * (1.0 + torch.tanh(math.sqrt(2 / math.pi) * (u + 0.044715 * u ** 3)))).to(h.dtype)
