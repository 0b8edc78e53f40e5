"""gpt2train/kernels/gelu.py against its PyTorch reference and torch's own tanh-GELU: output and
the gradients of h and bias, on odd row counts and widths that are not multiples of the block.

Tolerances: fp32 atol = rtol = 1e-5; bf16 atol = rtol = 2e-2 (the output and dh are rounded to
bf16 once; db sums bf16 dh rows and gets 4x that).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from gpt2train.kernels.gelu import bias_gelu, bias_gelu_reference
from tests.kernels.conftest import DEVICE

TOL = {torch.float32: 1e-5, torch.bfloat16: 2e-2}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("rows", [1, 47, 123])
@pytest.mark.parametrize("F_", [48, 200, 1100])
def test_bias_gelu_matches_reference(dtype, rows, F_):
    tol = TOL[dtype]
    h = (3 * torch.randn(rows, F_, device=DEVICE)).to(dtype)  # wide range: both tails of the tanh
    b = torch.randn(F_, device=DEVICE)
    g = torch.randn(rows, F_, device=DEVICE, dtype=dtype)
    h1, b1 = h.clone().requires_grad_(True), b.clone().requires_grad_(True)
    h2, b2 = h.clone().requires_grad_(True), b.clone().requires_grad_(True)
    y1, y2 = bias_gelu(h1, b1), bias_gelu_reference(h2, b2)
    assert y1.dtype == dtype
    torch.testing.assert_close(y1, y2, atol=tol, rtol=tol)
    (y1 * g).sum().backward()
    (y2 * g).sum().backward()
    torch.testing.assert_close(h1.grad, h2.grad, atol=tol, rtol=tol)
    db_tol = tol * (4 if dtype == torch.bfloat16 else 1) * max(1, rows ** 0.5 / 4)
    torch.testing.assert_close(b1.grad, b2.grad, atol=db_tol, rtol=db_tol)


def test_reference_is_torch_gelu_tanh():
    h, b = torch.randn(9, 33), torch.randn(33)
    torch.testing.assert_close(bias_gelu_reference(h, b), F.gelu(h + b, approximate="tanh"))


def test_extreme_inputs_stay_finite():
    h = torch.tensor([[-1e4, -30.0, 0.0, 30.0, 1e4]], device=DEVICE, requires_grad=True)
    y = bias_gelu(h, torch.zeros(5, device=DEVICE))
    y.sum().backward()
    assert torch.isfinite(y).all() and torch.isfinite(h.grad).all()
    torch.testing.assert_close(y.detach(), F.gelu(h.detach(), approximate="tanh"))
