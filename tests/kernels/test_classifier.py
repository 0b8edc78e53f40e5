"""gpt2train/kernels/classifier.py against the unfused classifier (all logits, F.cross_entropy):
the loss and the gradients of x and W, on odd row counts, widths, and vocabularies that are not
multiples of the kernel's column block, over several chunks with a short last one, with ignored
(-1) targets; and the torch backend of the chunked algorithm against the same reference.

Tolerances: fp32 atol = rtol = 1e-5 (loss and dx), dW 2e-5 (a sum over all rows); bf16 inputs
atol = rtol = 2e-2 against the fp32 reference on the same bf16 values (the logits and their
gradient are bf16 in the kernel's matmuls, as under autocast on a GPU).
"""

from __future__ import annotations

import pytest
import torch

from gpt2train.kernels.classifier import BLOCK_V, classifier_reference, fused_classifier
from tests.kernels.conftest import DEVICE


def _problem(N, C, V, VP, dtype, ignore=0):
    x = torch.randn(N, C, device=DEVICE).to(dtype)
    w = (0.3 * torch.randn(VP, C, device=DEVICE)).to(dtype)
    w[V:] = 0  # the model's padded rows start at zero
    targets = torch.randint(0, V, (N,), device=DEVICE)
    targets[torch.randperm(N)[:ignore]] = -1
    return x, w, targets


def _grads(fn, x, w, targets, V, **kw):
    x, w = x.detach().clone().requires_grad_(True), w.detach().clone().requires_grad_(True)
    loss = fn(x, w, targets, V, **kw) if kw else fn(x, w, targets, V)
    loss.backward()
    return loss.detach(), x.grad, w.grad


@pytest.mark.parametrize("backend", ["triton", "torch"])
@pytest.mark.parametrize("N,C,V,VP,chunk", [
    (1, 48, 1000, 1024, None),
    (47, 96, 1000, 1024, 16),       # three chunks of 16 and one of 15 rows
    (123, 200, 20000, 20096, 50),   # V over one BLOCK_V of columns (16384 interpreted, 4096 on GPU)
])
def test_fused_classifier_matches_unfused_fp32(backend, N, C, V, VP, chunk):
    assert V % BLOCK_V and VP > V
    assert N != 123 or V > BLOCK_V, "the last case must take several column blocks per pass"
    x, w, targets = _problem(N, C, V, VP, torch.float32, ignore=N // 5)
    loss, dx, dw = _grads(fused_classifier, x, w, targets, V, chunk_rows=chunk, backend=backend)
    ref_loss, ref_dx, ref_dw = _grads(classifier_reference, x, w, targets, V)
    torch.testing.assert_close(loss, ref_loss, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(dx, ref_dx, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(dw, ref_dw, atol=2e-5, rtol=2e-5)
    assert (dw[V:] == 0).all(), "padded vocabulary rows must get no gradient"


@pytest.mark.parametrize("N,C", [(47, 96), (123, 48)])
def test_fused_classifier_bf16(N, C):
    x, w, targets = _problem(N, C, 1000, 1024, torch.bfloat16, ignore=3)
    loss, dx, dw = _grads(fused_classifier, x, w, targets, 1000, chunk_rows=32)
    assert dx.dtype == torch.bfloat16 and dw.dtype == torch.bfloat16
    ref_loss, ref_dx, ref_dw = _grads(classifier_reference, x.float(), w.float(), targets, 1000)
    torch.testing.assert_close(loss, ref_loss, atol=2e-2, rtol=2e-2)
    torch.testing.assert_close(dx.float(), ref_dx, atol=2e-2, rtol=2e-2)
    torch.testing.assert_close(dw.float(), ref_dw, atol=2e-2, rtol=2e-2)


def test_incoming_gradient_scales_both_gradients():
    x, w, targets = _problem(9, 48, 300, 384, torch.float32)
    _, dx1, dw1 = _grads(fused_classifier, x, w, targets, 300)
    xx, ww = x.clone().requires_grad_(True), w.clone().requires_grad_(True)
    (fused_classifier(xx, ww, targets, 300) * 2.5).backward()
    torch.testing.assert_close(xx.grad, 2.5 * dx1)
    torch.testing.assert_close(ww.grad, 2.5 * dw1)


def test_three_dimensional_input():
    x, w, targets = _problem(2 * 7, 48, 300, 384, torch.float32)
    loss = fused_classifier(x.view(2, 7, 48), w, targets.view(2, 7), 300)
    torch.testing.assert_close(loss, classifier_reference(x, w, targets, 300), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_without_grad_only_the_loss_is_computed(backend, monkeypatch):
    """Validation (torch.no_grad) takes the forward-only path: the same loss, no dx / dW work."""
    import gpt2train.kernels.classifier as classifier

    x, w, targets = _problem(47, 96, 1000, 1024, torch.float32, ignore=5)
    expected = classifier_reference(x, w, targets, 1000)

    def no_gradients(*args, **kwargs):
        raise AssertionError("the gradient path ran under no_grad")

    monkeypatch.setattr(classifier, "fused_classifier_forward", no_gradients)
    with torch.no_grad():
        loss = fused_classifier(x.requires_grad_(True), w.requires_grad_(True), targets, 1000, chunk_rows=16,
                                backend=backend)
    torch.testing.assert_close(loss, expected.detach(), atol=1e-5, rtol=1e-5)
