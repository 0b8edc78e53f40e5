"""Kernel tests run Triton's interpreter on CPU tensors when there is no GPU (gpt2train.kernels
switches it on at import, before any kernel is defined), and the compiled kernels on CUDA."""

from __future__ import annotations

import pytest
import torch

import gpt2train.kernels  # noqa: F401  (sets TRITON_INTERPRET=1 without CUDA, before the op modules load)

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
