"""gpt2train/kernels/layernorm.py against its PyTorch reference: r, y and every gradient
(x, delta, weight, bias) on odd row counts and non-power-of-two widths.

Tolerances: fp32 atol = rtol = 1e-5 (the kernel and reference differ only in summation order);
bf16 inputs atol = rtol = 2e-2 (one bf16 rounding of outputs and gradients is 2^-8 relative).
The interpreter has no bf16 arithmetic: the kernel loads bf16, computes in fp32 and rounds on
store, exactly as it does on a GPU, so the bf16 path runs unchanged there.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from gpt2train.kernels.layernorm import residual_layernorm, residual_layernorm_reference
from tests.kernels.conftest import DEVICE

TOL = {torch.float32: 1e-5, torch.bfloat16: 2e-2}


def _leaves(*tensors):
    return [t.detach().clone().requires_grad_(True) for t in tensors]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("rows", [1, 47, 123])
@pytest.mark.parametrize("C", [48, 96, 200])
@pytest.mark.parametrize("with_delta", [True, False])
def test_residual_layernorm_matches_reference(dtype, rows, C, with_delta):
    tol = TOL[dtype]
    x = torch.randn(rows, C, device=DEVICE, dtype=dtype)
    delta = torch.randn(rows, C, device=DEVICE, dtype=dtype) if with_delta else None
    w = 1 + 0.1 * torch.randn(C, device=DEVICE)
    b = 0.1 * torch.randn(C, device=DEVICE)
    g_r = torch.randn(rows, C, device=DEVICE, dtype=dtype)
    g_y = torch.randn(rows, C, device=DEVICE, dtype=dtype)

    ins = [x, w, b] + ([delta] if with_delta else [])
    ours, ref = _leaves(*ins), _leaves(*ins)
    r1, y1 = residual_layernorm(ours[0], ours[3] if with_delta else None, ours[1], ours[2])
    r2, y2, _, _ = residual_layernorm_reference(ref[0], ref[3] if with_delta else None, ref[1], ref[2])
    torch.testing.assert_close(r1, r2, atol=tol, rtol=tol)
    torch.testing.assert_close(y1, y2, atol=tol, rtol=tol)
    # r's own gradient flows on through the residual stream; y's through the sub-block.
    ((r1.float() * g_r.float()).sum() + (y1.float() * g_y.float()).sum()).backward()
    ((r2.float() * g_r.float()).sum() + (y2.float() * g_y.float()).sum()).backward()
    for name, a, e in zip(["x", "weight", "bias", "delta"], ours, ref):
        # dw/db sum over rows: their error grows with the row count in bf16.
        t = tol * (4 if dtype == torch.bfloat16 and name in ("weight", "bias") else 1)
        torch.testing.assert_close(a.grad, e.grad, atol=t, rtol=t, msg=lambda m: f"d{name}: {m}")


def test_reference_is_torch_layer_norm():
    """The reference itself against torch's LayerNorm, so the two cannot drift together."""
    x, d = torch.randn(5, 3, 96).unbind(1)[:2]
    w, b = torch.randn(96), torch.randn(96)
    r, y, mean, rstd = residual_layernorm_reference(x, d, w, b)
    torch.testing.assert_close(y, F.layer_norm(x + d, (96,), w, b))
    torch.testing.assert_close(mean, (x + d).mean(-1))


def test_three_dimensional_input_and_unused_residual_gradient():
    """(B, T, C) input as the model passes it, and r unused downstream (ln_f): its grad is None."""
    x = torch.randn(3, 7, 48, device=DEVICE, requires_grad=True)
    d = torch.randn(3, 7, 48, device=DEVICE, requires_grad=True)
    w, b = torch.ones(48, device=DEVICE, requires_grad=True), torch.zeros(48, device=DEVICE, requires_grad=True)
    _, y = residual_layernorm(x, d, w, b)
    y.sum().backward()
    x2, d2 = x.detach().clone().requires_grad_(True), d.detach().clone().requires_grad_(True)
    F.layer_norm(x2 + d2, (48,)).sum().backward()
    torch.testing.assert_close(x.grad, x2.grad, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(d.grad, d2.grad, atol=1e-5, rtol=1e-5)
