"""gpt2train/kernels/attention.py against its PyTorch reference (the full T x T softmax) and
torch's SDPA: output and dq, dk, dv on odd lengths (1, 47, 123: not multiples of any tile), head
dims 64 and 128, q/k/v as the strided views the model passes (no copy).

Tolerances: fp32 atol = rtol = 1e-5 on the output, 2e-5 on gradients (a different summation
order over up to 123 keys); bf16 atol = rtol = 2e-2 (p and ds rounded to bf16 before their
matmuls, as FA2 does). The interpreter has no bf16 matmul: the kernel widens bf16 operands to
fp32 there, which is exact, so it computes what a tensor core does.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from gpt2train.kernels.attention import causal_attention, causal_attention_reference
from tests.kernels.conftest import DEVICE

TOL = {torch.float32: (1e-5, 2e-5), torch.bfloat16: (2e-2, 2e-2)}


def _qkv(B, T, H, D, dtype):
    """q, k, v as CausalSelfAttention makes them: strided (B, H, T, D) views of one (B, T, 3C)."""
    qkv = torch.randn(B, T, 3 * H * D, device=DEVICE).to(dtype)
    return [t.view(B, T, H, D).transpose(1, 2) for t in qkv.split(H * D, dim=2)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("T", [1, 47, 123])
@pytest.mark.parametrize("D", [64, 128])
def test_causal_attention_matches_reference(dtype, T, D):
    B, H = 2, 3
    out_tol, grad_tol = TOL[dtype]
    q, k, v = _qkv(B, T, H, D, dtype)
    do = torch.randn(B, H, T, D, device=DEVICE).to(dtype)
    ours = [t.detach().clone().requires_grad_(True) for t in (q, k, v)]
    ref = [t.detach().clone().requires_grad_(True) for t in (q, k, v)]
    o1, o2 = causal_attention(*ours), causal_attention_reference(*ref)
    assert o1.shape == (B, H, T, D) and o1.dtype == dtype
    torch.testing.assert_close(o1, o2, atol=out_tol, rtol=out_tol)
    (o1.float() * do.float()).sum().backward()
    (o2.float() * do.float()).sum().backward()
    for name, a, e in zip("qkv", ours, ref):
        torch.testing.assert_close(a.grad, e.grad, atol=grad_tol, rtol=grad_tol, msg=lambda m: f"d{name}: {m}")


def test_reference_is_sdpa():
    q, k, v = _qkv(2, 19, 2, 64, torch.float32)
    torch.testing.assert_close(causal_attention_reference(q, k, v),
                               F.scaled_dot_product_attention(q, k, v, is_causal=True), atol=1e-5, rtol=1e-5)


def test_output_is_a_view_of_a_time_major_buffer():
    """The model's transpose(1, 2).contiguous() after attention must be a no-op."""
    q, k, v = _qkv(1, 33, 2, 64, torch.float32)
    o = causal_attention(q, k, v)
    assert o.transpose(1, 2).is_contiguous()


def test_unsupported_head_dim_is_a_clear_error():
    q, k, v = _qkv(1, 8, 2, 48, torch.float32)
    with pytest.raises(ValueError, match="head dim 48 .* kernels=torch"):
        causal_attention(q, k, v)
