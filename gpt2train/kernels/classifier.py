"""The fused classifier: lm_head projection + cross-entropy + its gradient, chunked over rows, so
the (B*T, V) logits are never held at once (llm.c's `fused_classifier3`; Liger-Kernel's fused
linear cross-entropy), with the row kernel in Triton.

For each chunk of rows x_c (R, C) of the final LayerNorm's output:

    z = x_c W^T                          (R, Vp) in the compute dtype (bf16 under autocast)
    lse = log sum_{v < V} exp z_v        padded columns V..Vp-1 take no part: never chosen
    loss_r = lse - z_target              (0 where target = -1: ignored)
    dz = softmax(z) - onehot(target)     written over z in place (padded columns: 0)
    dx_c = dz W,   dW += dz^T x_c        the gradients are finished in the forward

and at the end loss = sum loss_r / n, dx and dW divided by n (n = targets != -1; no host sync).
The backward only scales the saved dx and dW by the incoming gradient (usually 1). When no
gradient is wanted (validation under `torch.no_grad()`), only the loss is computed: the same
chunks, without dz, dx or dW (llm.c's validation forward writes no gradient either). Peak memory
beyond x and W is one chunk of logits plus dx (N, C) and dW (Vp, C) fp32, instead of the
unfused (N, V) fp32 logits, their log-softmax and their gradient: `python bench/kernels.py
--memory` measures both on CPU at B=16, T=1024, V=50304.

`chunk_rows` defaults to Liger's choice: the chunk's logits about as large as x itself,
next_pow2(N / ceil(Vp / C)) rows (256 for GPT-2 124M at B*T = 16384). The per-chunk
cross-entropy is the Triton kernel below, or (`backend="torch"`) the same steps in plain
PyTorch: that is the reference of the chunked algorithm, runnable anywhere.

Inputs: x (..., C) fp32 / bf16, W (Vp, C), targets (...) int64 in [0, V) or -1.
Targets >= V are not checked on the device (that would cost a host sync per step): the shards
hold GPT-2 token ids, which are < V by construction (gpt2train/data/shards.py checks them).

Tests: tests/kernels/test_classifier.py. Benchmark: bench/kernels.py (`classifier`).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from gpt2train.kernels import interpreted, launch

# Columns per step of the row loop. 4096 fp32 values per pass is 16 KiB of registers spread
# over 8 warps; a row of GPT-2's 50304 logits takes 13 steps per pass (two passes: statistics,
# then gradients). Bandwidth-bound: each logit is read twice and written once. The interpreter
# pays per step, not per element (numpy), so it takes 16384: 4x fewer steps, same results.
BLOCK_V = 16384 if interpreted() else 4096
NUM_WARPS = 8


@triton.jit
def cross_entropy_rows_kernel(
    logits_ptr,        # (R, Vp) logits in; their gradient softmax - onehot out (same buffer)
    stride_row,        # row stride of logits
    targets_ptr,       # (R,) int64 target ids, -1 = ignored
    loss_ptr,          # (R,) fp32 per-row loss out (0 for ignored rows)
    V, VP,             # real and padded vocabulary sizes
    WRITE_GRAD: tl.constexpr,  # False: the loss only (validation); the logits are left as they are
    BLOCK_V: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    logits_ptr += row * stride_row
    target = tl.load(targets_ptr + row)
    # Pass 1: online max and sum of exp over the real vocabulary (as in the attention kernel).
    m = float("-inf")
    d = 0.0
    for start in range(0, V, BLOCK_V):
        cols = start + tl.arange(0, BLOCK_V)
        z = tl.load(logits_ptr + cols, mask=cols < V, other=float("-inf")).to(tl.float32)
        m_new = tl.maximum(m, tl.max(z, 0))
        d = d * tl.exp(m - m_new) + tl.sum(tl.exp(z - m_new), 0)
        m = m_new
    lse = m + tl.log(d)
    valid = target != -1
    z_target = tl.load(logits_ptr + tl.where(valid, target, 0)).to(tl.float32)
    tl.store(loss_ptr + row, tl.where(valid, lse - z_target, 0.0))
    if WRITE_GRAD:
        # Pass 2: dz = softmax - onehot over the real columns, 0 on padded ones and ignored rows.
        keep = tl.where(valid, 1.0, 0.0)
        for start in range(0, VP, BLOCK_V):
            cols = start + tl.arange(0, BLOCK_V)
            z = tl.load(logits_ptr + cols, mask=cols < V, other=float("-inf")).to(tl.float32)
            dz = tl.exp(z - lse) - tl.where(cols == target, 1.0, 0.0)
            dz = tl.where(cols < V, dz * keep, 0.0)
            tl.store(logits_ptr + cols, dz.to(logits_ptr.dtype.element_ty), mask=cols < VP)


def cross_entropy_rows_triton(logits: torch.Tensor, targets: torch.Tensor, vocab_size: int,
                              loss_out: torch.Tensor, write_grad: bool = True) -> None:
    """Per-row loss into loss_out; with write_grad, logits overwritten by their gradient (unscaled)."""
    R, VP = logits.shape
    launch(cross_entropy_rows_kernel, (R,), logits, logits.stride(0), targets, loss_out, vocab_size, VP,
           WRITE_GRAD=write_grad, BLOCK_V=BLOCK_V, num_warps=NUM_WARPS)


def cross_entropy_rows_torch(logits: torch.Tensor, targets: torch.Tensor, vocab_size: int,
                             loss_out: torch.Tensor, write_grad: bool = True) -> None:
    """The same contract as the kernel, in plain PyTorch (fp32 math on a chunk)."""
    z = logits[:, :vocab_size].float()
    lse = torch.logsumexp(z, dim=-1)
    valid = targets != -1
    safe = targets.clamp(min=0)[:, None]
    loss_out.copy_(torch.where(valid, lse - z.gather(1, safe).squeeze(1), 0.0))
    if not write_grad:
        return
    dz = torch.exp(z - lse[:, None])
    dz.scatter_add_(1, safe, torch.full_like(safe, -1, dtype=dz.dtype))
    logits[:, :vocab_size] = dz * valid[:, None]
    logits[:, vocab_size:] = 0


CROSS_ENTROPY_ROWS = {"triton": cross_entropy_rows_triton, "torch": cross_entropy_rows_torch}


def default_chunk_rows(N: int, C: int, VP: int) -> int:
    return triton.next_power_of_2(max(1, triton.cdiv(N, triton.cdiv(VP, C))))


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    if x.device.type == "cuda" and torch.is_autocast_enabled("cuda"):
        return torch.get_autocast_dtype("cuda")
    return x.dtype


def _in_compute_dtype(x, weight, chunk_rows):
    """(x, W) as the matmuls take them (bf16 under autocast) and the rows per chunk."""
    dtype = _compute_dtype(x)
    return x.to(dtype), weight.to(dtype), chunk_rows or default_chunk_rows(x.shape[0], x.shape[1], weight.shape[0])


def _scored_rows(targets):
    """How many rows carry a target (not -1), as a device tensor: no host sync."""
    return (targets != -1).sum().clamp(min=1).to(torch.float32)


def fused_classifier_forward(x, weight, targets, vocab_size, chunk_rows=None, backend="triton"):
    """-> (loss, dx, dW): the mean loss and its gradients, chunk by chunk."""
    N, C = x.shape
    xc, wc, chunk = _in_compute_dtype(x, weight, chunk_rows)
    ce_rows = CROSS_ENTROPY_ROWS[backend]
    dx = torch.empty_like(x)
    dw = torch.zeros(weight.shape[0], C, device=x.device, dtype=torch.float32)
    loss_rows = torch.empty(N, device=x.device, dtype=torch.float32)
    for s in range(0, N, chunk):
        e = min(s + chunk, N)
        logits = xc[s:e] @ wc.T                       # (R, Vp): the only logits alive at a time
        ce_rows(logits, targets[s:e], vocab_size, loss_rows[s:e])
        dx[s:e] = logits @ wc                          # logits now hold dz
        if xc.dtype == torch.float32:
            dw.addmm_(logits.T, xc[s:e])
        else:
            dw += (logits.T @ xc[s:e]).float()
    n = _scored_rows(targets)
    return loss_rows.sum() / n, dx / n.to(dx.dtype), (dw / n).to(weight.dtype)


def fused_classifier_loss(x, weight, targets, vocab_size, chunk_rows=None, backend="triton"):
    """The mean loss alone, chunk by chunk: no dz, dx or dW (validation)."""
    xc, wc, chunk = _in_compute_dtype(x, weight, chunk_rows)
    loss_rows = torch.empty(x.shape[0], device=x.device, dtype=torch.float32)
    for s in range(0, x.shape[0], chunk):
        e = min(s + chunk, x.shape[0])
        CROSS_ENTROPY_ROWS[backend](xc[s:e] @ wc.T, targets[s:e], vocab_size, loss_rows[s:e], write_grad=False)
    return loss_rows.sum() / _scored_rows(targets)


class FusedClassifierFunction(torch.autograd.Function):
    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda")
    def forward(ctx, x, weight, targets, vocab_size, chunk_rows, backend):
        loss, dx, dw = fused_classifier_forward(x, weight, targets, vocab_size, chunk_rows, backend)
        ctx.save_for_backward(dx, dw)
        return loss

    @staticmethod
    @torch.amp.custom_bwd(device_type="cuda")
    def backward(ctx, g):
        dx, dw = ctx.saved_tensors
        return dx * g.to(dx.dtype), dw * g.to(dw.dtype), None, None, None, None


def fused_classifier(x: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, vocab_size: int,
                     chunk_rows: int | None = None, backend: str = "triton") -> torch.Tensor:
    """Mean cross-entropy of (x @ weight^T)[..., :vocab_size] against targets (-1 ignored),
    never materialising more than one chunk of logits. x (..., C), weight (Vp, C). Without a
    gradient to compute (no_grad, or inputs that need none) only the loss is computed."""
    if backend not in CROSS_ENTROPY_ROWS:
        raise ValueError(f"backend={backend!r}; use one of {', '.join(CROSS_ENTROPY_ROWS)}")
    C = x.shape[-1]
    x2, t2 = x.reshape(-1, C), targets.reshape(-1)
    if not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)):
        return fused_classifier_loss(x2, weight, t2, vocab_size, chunk_rows, backend)
    return FusedClassifierFunction.apply(x2, weight, t2, vocab_size, chunk_rows, backend)


def classifier_reference(x, weight, targets, vocab_size):
    """Unfused, as the model's torch path: all (N, V) logits in fp32, then F.cross_entropy."""
    logits = (x @ weight.T)[..., :vocab_size]
    return torch.nn.functional.cross_entropy(logits.float().reshape(-1, vocab_size), targets.reshape(-1),
                                             ignore_index=-1)
