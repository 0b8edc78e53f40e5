"""Causal flash attention, FlashAttention-2 style (Dao 2023; Triton's fused-attention tutorial),
in Triton: tiled, online softmax, the log-sum-exp saved, no T x T matrix ever in memory.

Forward, per block of BLOCK_M queries, over key blocks j <= the diagonal:

    s = q k_j^T / sqrt(D)                     (BLOCK_M, BLOCK_N)
    m' = max(m, rowmax s);  p = exp(s - m')   the running max keeps exp() in range
    l = l exp(m - m') + rowsum p;  acc = acc exp(m - m') + p v_j
    o = acc / l;  lse = m + log l             (saved: the backward rebuilds p = exp(s - lse))

Backward (two kernels, no atomics): with D_i = rowsum(o * do),
    dv_j = sum_i p_ij do_i,   dk_j = sum_i ds_ij q_i / sqrt(D)      one program per key block
    dq_i = sum_j ds_ij k_j / sqrt(D)                                one program per query block
    ds_ij = p_ij (do_i . v_j - D_i)

Scores are kept in base 2 (s * log2(e), exp2) as the tutorial does: one multiply fewer per score.
Inputs: q, k, v (B, H, T, D) with unit stride on D (they may be strided views of the c_attn
output: no copy is made), D in {16, 32, 64, 128} (GPT-2 uses 64), any T, fp32 / bf16 / fp16.
Accumulation is fp32; p and ds are rounded to the input dtype before their matmuls, as in FA2.
The output is returned as a (B, H, T, D) view of a (B, T, H, D) buffer, so the model's
`transpose(1, 2).view(B, T, C)` costs no copy.

Tests: tests/kernels/test_attention.py. Benchmark: bench/kernels.py (`attention`).
"""

from __future__ import annotations

import inspect
import math

import torch
import triton
import triton.language as tl

from gpt2train.kernels import interpreted, launch

LOG2E = 1.4426950408889634
HEAD_DIMS = (16, 32, 64, 128)

# Tile shapes (BLOCK_M, BLOCK_N, num_warps, num_stages). On a GPU the autotuner picks among them
# per (T, D, precision) on first use. Starting point: the Triton tutorial's Hopper choices
# (BLOCK_M 128 x BLOCK_N 64 forward, 32 x 128 for dk/dv, 128 x 32 for dq). Then each list was
# cut to what compiles for both sm_80 and sm_90 at GPT-2's D = 64 without a register spill and
# within shared memory (`python bench/aot_compile.py`; the README has the table). Three lists,
# by what multiplies: 16-bit operands on tensor cores; fp32 as TF32 on tensor cores (twice the
# bytes per tile); fp32 in full precision (TF32 off), which does not use the tensor cores and
# needs far smaller tiles (every 16-bit tile spills KBs there). Dropped by that check:
# dk/dv 32x128 w4 (8 B spilled per thread in 16-bit, 180-660 B in TF32), forward 128x32 w4 s4
# (8 B on sm_80), forward 128x128 in TF32 (spills on sm_90). BLOCK_M must be a multiple of
# BLOCK_N in the forward (its unmasked loop stops at the diagonal block).
TILES = {
    "forward": {"16-bit": [(128, 64, 8, 3), (128, 64, 4, 3), (64, 64, 4, 3), (128, 128, 8, 3)],
                "tf32": [(128, 64, 8, 3), (64, 64, 4, 3), (64, 32, 4, 3)],
                "ieee": [(32, 32, 4, 2), (64, 16, 4, 2), (32, 16, 4, 2), (64, 32, 8, 2)]},
    "dkdv": {"16-bit": [(64, 128, 8, 3), (32, 64, 4, 3), (64, 64, 4, 3)],
             "tf32": [(32, 64, 4, 3), (32, 64, 4, 2), (32, 32, 4, 3)],
             "ieee": [(16, 32, 4, 2), (16, 16, 4, 2)]},
    "dq": {"16-bit": [(128, 32, 4, 3), (128, 64, 8, 3), (64, 32, 4, 3), (64, 64, 4, 3)],
           "tf32": [(128, 32, 4, 3), (128, 64, 8, 3), (64, 32, 4, 3), (64, 64, 4, 3)],
           "ieee": [(64, 16, 4, 2), (32, 32, 4, 2), (64, 32, 8, 2)]},
}


def _configs(kernel: str) -> list[triton.Config]:
    """The autotune candidates of one kernel, each tagged with the precision it is for. The
    interpreter gets one small tile for everything: autotuning there would only run every config
    through numpy."""
    if interpreted():
        config = triton.Config({"BLOCK_M": 32, "BLOCK_N": 32})
        config.precision = None
        return [config]
    configs = []
    for precision, tiles in TILES[kernel].items():
        for bm, bn, warps, stages, *why in tiles:
            config = triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=warps, num_stages=stages)
            config.precision = precision
            # A fifth element would say why a tile that spills registers stays (bench/aot_compile.py
            # fails on a spilling tile without one); none does today.
            config.spills_ok = why[0] if why else None
            configs.append(config)
    return configs


def _precision_of_call(configs, named_args, **kwargs):
    """early_config_prune: the candidates for this call's operands (see TILES)."""
    q = named_args["q_ptr"]
    precision = "ieee" if kwargs["IEEE"] else "tf32" if q.dtype == torch.float32 else "16-bit"
    return [c for c in configs if c.precision in (None, precision)]


# IEEE is part of the key: fp32 with TF32 on and off take different tiles. The timings are cached on
# disk (triton's cache_results), so a restarted or resumed run on the same machine picks the same
# tiles, and with them the same summation order (bitwise-equal resumes); older triton lacks the option.
_AUTOTUNE = dict(key=["T_BUCKET", "HEAD_DIM", "IEEE"], prune_configs_by={"early_config_prune": _precision_of_call},
                 **({"cache_results": True} if "cache_results" in inspect.signature(triton.autotune).parameters
                    else {}))


@triton.jit
def _dot(a, b, UPCAST: tl.constexpr, IEEE: tl.constexpr):
    # UPCAST: the CPU interpreter has no bf16 matmul; bf16 operands are widened to fp32, which
    # is exact (a bf16 product fits fp32), so it computes what a tensor core does.
    # IEEE: fp32 operands multiplied in full fp32 (TF32 off), not on TF32 tensor cores.
    if UPCAST:
        out = tl.dot(a.to(tl.float32), b.to(tl.float32))
    elif IEEE:
        out = tl.dot(a, b, input_precision="ieee")
    else:
        out = tl.dot(a, b)
    return out


@triton.autotune(configs=_configs("forward"), **_AUTOTUNE)
@triton.jit
def attention_forward_kernel(
    q_ptr, k_ptr, v_ptr,   # (B, H, T, D) strided, unit stride on D
    o_ptr,                 # (B, H, T, D) strided (a view of a (B, T, H, D) buffer)
    lse_ptr,               # (B * H, T) fp32, base-2 log-sum-exp of each query's scores
    sqb, sqh, sqt, skb, skh, skt, svb, svh, svt, sob, soh, sot,  # batch / head / time strides
    H, T, scale_log2,      # scale_log2 = log2(e) / sqrt(D)
    T_BUCKET,              # next power of two >= T: the autotuner's key (one tuning per bucket)
    HEAD_DIM: tl.constexpr, UPCAST: tl.constexpr, IEEE: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):
    start_m = tl.program_id(0) * BLOCK_M
    bh = tl.program_id(1)
    b, h = (bh // H).to(tl.int64), (bh % H).to(tl.int64)
    q_ptr += b * sqb + h * sqh
    k_ptr += b * skb + h * skh
    v_ptr += b * svb + h * svh
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    q = tl.load(q_ptr + offs_m[:, None] * sqt + offs_d[None, :], mask=offs_m[:, None] < T, other=0.0)
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)

    # Keys before this query block are visible to all of its queries and lie inside T: no mask.
    for start_n in range(0, start_m, BLOCK_N):
        kn = start_n + offs_n
        k_t = tl.load(k_ptr + kn[None, :] * skt + offs_d[:, None])  # (D, BLOCK_N)
        s = _dot(q, k_t, UPCAST, IEEE) * scale_log2
        m_new = tl.maximum(m_i, tl.max(s, 1))
        p = tl.math.exp2(s - m_new[:, None])
        alpha = tl.math.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        v = tl.load(v_ptr + kn[:, None] * svt + offs_d[None, :])
        acc = acc * alpha[:, None] + _dot(p.to(v.dtype), v, UPCAST, IEEE)
        m_i = m_new
    # The diagonal block(s): causal mask, and the end of the sequence. Every query row keeps at
    # least its own key (kn == offs_m), so m_i stays finite.
    for start_n in range(start_m, tl.minimum(start_m + BLOCK_M, T), BLOCK_N):
        kn = start_n + offs_n
        k_t = tl.load(k_ptr + kn[None, :] * skt + offs_d[:, None], mask=kn[None, :] < T, other=0.0)
        s = _dot(q, k_t, UPCAST, IEEE) * scale_log2
        s = tl.where((offs_m[:, None] >= kn[None, :]) & (kn[None, :] < T), s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        p = tl.math.exp2(s - m_new[:, None])
        alpha = tl.math.exp2(m_i - m_new)
        l_i = l_i * alpha + tl.sum(p, 1)
        v = tl.load(v_ptr + kn[:, None] * svt + offs_d[None, :], mask=kn[:, None] < T, other=0.0)
        acc = acc * alpha[:, None] + _dot(p.to(v.dtype), v, UPCAST, IEEE)
        m_i = m_new

    acc = acc / l_i[:, None]
    row_ok = offs_m < T
    tl.store(lse_ptr + bh.to(tl.int64) * T + offs_m, m_i + tl.math.log2(l_i), mask=row_ok)
    o_ptr += b * sob + h * soh
    tl.store(o_ptr + offs_m[:, None] * sot + offs_d[None, :], acc.to(o_ptr.dtype.element_ty),
             mask=row_ok[:, None])


@triton.autotune(configs=_configs("dkdv"), **_AUTOTUNE)
@triton.jit
def attention_backward_dkdv_kernel(
    q_ptr, k_ptr, v_ptr, do_ptr,  # (B, H, T, D) strided; do has q's strides' layout of its own
    dk_ptr, dv_ptr,               # (B, H, T, D) contiguous outputs
    lse_ptr, delta_ptr,           # (B * H, T) fp32: base-2 lse, rowsum(o * do)
    sqb, sqh, sqt, skb, skh, skt, svb, svh, svt, sdb, sdh, sdt,
    H, T, scale_log2, scale, T_BUCKET,
    HEAD_DIM: tl.constexpr, UPCAST: tl.constexpr, IEEE: tl.constexpr,
    BLOCK_M: tl.constexpr,        # queries per inner step
    BLOCK_N: tl.constexpr,        # keys owned by this program
):
    start_n = tl.program_id(0) * BLOCK_N
    bh = tl.program_id(1)
    b, h = (bh // H).to(tl.int64), (bh % H).to(tl.int64)
    q_ptr += b * sqb + h * sqh
    k_ptr += b * skb + h * skh
    v_ptr += b * svb + h * svh
    do_ptr += b * sdb + h * sdh
    lse_ptr += bh.to(tl.int64) * T
    delta_ptr += bh.to(tl.int64) * T
    offs_n = start_n + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    key_ok = offs_n[:, None] < T
    k = tl.load(k_ptr + offs_n[:, None] * skt + offs_d[None, :], mask=key_ok, other=0.0)
    v = tl.load(v_ptr + offs_n[:, None] * svt + offs_d[None, :], mask=key_ok, other=0.0)
    dk = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, HEAD_DIM], dtype=tl.float32)
    # Only queries at or after the first key see these keys.
    for start_m in range(start_n, T, BLOCK_M):
        offs_m = start_m + tl.arange(0, BLOCK_M)
        row_ok = offs_m < T
        q = tl.load(q_ptr + offs_m[:, None] * sqt + offs_d[None, :], mask=row_ok[:, None], other=0.0)
        do = tl.load(do_ptr + offs_m[:, None] * sdt + offs_d[None, :], mask=row_ok[:, None], other=0.0)
        lse = tl.load(lse_ptr + offs_m, mask=row_ok, other=0.0)
        di = tl.load(delta_ptr + offs_m, mask=row_ok, other=0.0)
        s_t = _dot(k, tl.trans(q), UPCAST, IEEE) * scale_log2          # (BLOCK_N, BLOCK_M)
        p_t = tl.math.exp2(s_t - lse[None, :])
        p_t = tl.where((offs_m[None, :] >= offs_n[:, None]) & row_ok[None, :], p_t, 0.0)
        dv += _dot(p_t.to(do.dtype), do, UPCAST, IEEE)
        dp_t = _dot(v, tl.trans(do), UPCAST, IEEE)                      # (BLOCK_N, BLOCK_M)
        ds_t = p_t * (dp_t - di[None, :])
        dk += _dot(ds_t.to(q.dtype), q, UPCAST, IEEE)
    out = bh.to(tl.int64) * T * HEAD_DIM + offs_n[:, None] * HEAD_DIM + offs_d[None, :]
    tl.store(dk_ptr + out, (dk * scale).to(dk_ptr.dtype.element_ty), mask=key_ok)
    tl.store(dv_ptr + out, dv.to(dv_ptr.dtype.element_ty), mask=key_ok)


@triton.autotune(configs=_configs("dq"), **_AUTOTUNE)
@triton.jit
def attention_backward_dq_kernel(
    q_ptr, k_ptr, v_ptr, do_ptr,  # (B, H, T, D) strided
    dq_ptr,                       # (B, H, T, D) contiguous output
    lse_ptr, delta_ptr,           # (B * H, T) fp32
    sqb, sqh, sqt, skb, skh, skt, svb, svh, svt, sdb, sdh, sdt,
    H, T, scale_log2, scale, T_BUCKET,
    HEAD_DIM: tl.constexpr, UPCAST: tl.constexpr, IEEE: tl.constexpr,
    BLOCK_M: tl.constexpr,        # queries owned by this program
    BLOCK_N: tl.constexpr,        # keys per inner step
):
    start_m = tl.program_id(0) * BLOCK_M
    bh = tl.program_id(1)
    b, h = (bh // H).to(tl.int64), (bh % H).to(tl.int64)
    q_ptr += b * sqb + h * sqh
    k_ptr += b * skb + h * skh
    v_ptr += b * svb + h * svh
    do_ptr += b * sdb + h * sdh
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, HEAD_DIM)
    row_ok = offs_m < T
    q = tl.load(q_ptr + offs_m[:, None] * sqt + offs_d[None, :], mask=row_ok[:, None], other=0.0)
    do = tl.load(do_ptr + offs_m[:, None] * sdt + offs_d[None, :], mask=row_ok[:, None], other=0.0)
    lse = tl.load(lse_ptr + bh.to(tl.int64) * T + offs_m, mask=row_ok, other=0.0)
    di = tl.load(delta_ptr + bh.to(tl.int64) * T + offs_m, mask=row_ok, other=0.0)
    dq = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
    for start_n in range(0, tl.minimum(start_m + BLOCK_M, T), BLOCK_N):
        kn = start_n + tl.arange(0, BLOCK_N)
        key_ok = kn < T
        k = tl.load(k_ptr + kn[:, None] * skt + offs_d[None, :], mask=key_ok[:, None], other=0.0)
        v_t = tl.load(v_ptr + kn[None, :] * svt + offs_d[:, None], mask=key_ok[None, :], other=0.0)
        s = _dot(q, tl.trans(k), UPCAST, IEEE) * scale_log2              # (BLOCK_M, BLOCK_N)
        p = tl.math.exp2(s - lse[:, None])
        p = tl.where((offs_m[:, None] >= kn[None, :]) & key_ok[None, :], p, 0.0)
        dp = _dot(do, v_t, UPCAST, IEEE)
        ds = p * (dp - di[:, None])
        dq += _dot(ds.to(k.dtype), k, UPCAST, IEEE)
    out = bh.to(tl.int64) * T * HEAD_DIM + offs_m[:, None] * HEAD_DIM + offs_d[None, :]
    tl.store(dq_ptr + out, (dq * scale).to(dq_ptr.dtype.element_ty), mask=row_ok[:, None])


def _check(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    if q.dim() != 4 or q.shape != k.shape or q.shape != v.shape:
        raise ValueError(f"q, k, v must share one (B, H, T, D) shape, got {tuple(q.shape)}, "
                         f"{tuple(k.shape)}, {tuple(v.shape)}")
    if q.shape[-1] not in HEAD_DIMS:
        raise ValueError(f"head dim {q.shape[-1]} is not supported by the Triton attention; use one of "
                         f"{HEAD_DIMS} or kernels=torch")


def _unit_last(t: torch.Tensor) -> torch.Tensor:
    return t if t.stride(-1) == 1 else t.contiguous()


def _flags(q: torch.Tensor) -> dict:
    # fp32 follows torch's TF32 switch (train.tf32) on a GPU; the interpreter multiplies exactly.
    fp32 = q.dtype == torch.float32
    return dict(HEAD_DIM=q.shape[-1], UPCAST=interpreted() and not fp32,
                IEEE=fp32 and (interpreted() or not torch.backends.cuda.matmul.allow_tf32))


def attention_forward(q, k, v):
    """-> (o (B, H, T, D) view of a (B, T, H, D) buffer, lse (B * H, T) fp32 base 2)."""
    B, H, T, D = q.shape
    q, k, v = _unit_last(q), _unit_last(k), _unit_last(v)
    o = torch.empty(B, T, H, D, device=q.device, dtype=q.dtype).transpose(1, 2)
    lse = torch.empty(B * H, T, device=q.device, dtype=torch.float32)

    def grid(meta):
        return triton.cdiv(T, meta["BLOCK_M"]), B * H

    launch(attention_forward_kernel, grid, q, k, v, o, lse,
           *q.stride()[:3], *k.stride()[:3], *v.stride()[:3], *o.stride()[:3],
           H, T, LOG2E / math.sqrt(D), triton.next_power_of_2(T), **_flags(q))
    return o, lse


def attention_backward(q, k, v, o, lse, do):
    B, H, T, D = q.shape
    q, k, v, do = _unit_last(q), _unit_last(k), _unit_last(v), _unit_last(do)
    delta = (o.float() * do.float()).sum(-1).reshape(B * H, T)  # D_i = rowsum(o * do), fp32
    dq, dk, dv = (torch.empty(B, H, T, D, device=q.device, dtype=q.dtype) for _ in range(3))
    strides = (*q.stride()[:3], *k.stride()[:3], *v.stride()[:3], *do.stride()[:3])
    scale = 1.0 / math.sqrt(D)
    launch(attention_backward_dkdv_kernel, lambda meta: (triton.cdiv(T, meta["BLOCK_N"]), B * H),
           q, k, v, do, dk, dv, lse, delta, *strides, H, T, LOG2E * scale, scale, triton.next_power_of_2(T),
           **_flags(q))
    launch(attention_backward_dq_kernel, lambda meta: (triton.cdiv(T, meta["BLOCK_M"]), B * H),
           q, k, v, do, dq, lse, delta, *strides, H, T, LOG2E * scale, scale, triton.next_power_of_2(T),
           **_flags(q))
    return dq, dk, dv


class CausalAttentionFunction(torch.autograd.Function):
    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda")
    def forward(ctx, q, k, v):
        _check(q, k, v)
        o, lse = attention_forward(q, k, v)
        ctx.save_for_backward(q, k, v, o, lse)
        return o

    @staticmethod
    @torch.amp.custom_bwd(device_type="cuda")
    def backward(ctx, do):
        return attention_backward(*ctx.saved_tensors, do)


def causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(D) + causal mask) v for q, k, v (B, H, T, D) -> (B, H, T, D)."""
    return CausalAttentionFunction.apply(q, k, v)


def causal_attention_reference(q, k, v):
    """Plain PyTorch: the whole (T, T) score matrix in fp32, masked, softmaxed."""
    T, D = q.shape[-2], q.shape[-1]
    s = (q.float() @ k.float().transpose(-2, -1)) / math.sqrt(D)
    s = s.masked_fill(torch.ones(T, T, dtype=torch.bool, device=q.device).triu(1), float("-inf"))
    return (torch.softmax(s, dim=-1) @ v.float()).to(q.dtype)
