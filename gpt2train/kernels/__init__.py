"""Triton kernels for the training hot path, one file per op (after Liger-Kernel):

    layernorm.py   residual add + LayerNorm            (llm.c's fused_residual_forward5)
    gelu.py        bias add + tanh-GELU                (llm.c's gelu_forward, bias folded in)
    attention.py   causal flash attention, FA2-style   (llm.c's cuDNN / attention_forward)
    classifier.py  lm_head + cross-entropy + gradient, chunked over rows (llm.c's fused_classifier)
    ops.py         the four as the model's hot-path ops
    compile_check.py  every kernel built for sm_80 / sm_90 without running it (no GPU needed)

AdamW has no Triton kernel here: `torch.optim.AdamW(fused=True)`, which the trainer uses on
CUDA, is already one multi-tensor CUDA kernel over all parameters (llm.c's adamw_kernel3 does
the same job). bench/kernels.py times it against the foreach implementation on a GPU.

Each op file holds its kernels, their host launchers, a `torch.autograd.Function`, and a plain
PyTorch `<op>_reference` that tests/kernels/test_<op>.py compares it with, forward and backward.
bench/kernels.py times each op against PyTorch eager and torch.compile on a GPU.

ops.py hands the four to the model as its hot-path ops (`triton_ops()`); the model takes them
with `GPT(cfg, kernels="triton")` (`train.kernels`, `--kernels`): the default `auto` is Triton on
CUDA and PyTorch elsewhere. Without CUDA, Triton can only run its
interpreter (`TRITON_INTERPRET=1`, numpy on CPU tensors: correct but ~1000x slower), which this
package switches on when it is imported on a machine without CUDA, so that the tests and a
`--kernels triton` run on CPU work; it must happen before any kernel is defined (`triton.jit`
reads the setting when a kernel is decorated).

Every host launcher starts its kernels through `launch(...)`, so that `compile_only()` can
compile them for a GPU exactly as they would be launched, without running them: that is how
gpt2train/kernels/compile_check.py (and `python bench/aot_compile.py`) proves them for sm_80 /
sm_90 on a machine with no GPU, and how the trainer checks them before its first step.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch


if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
# FMA contraction in the kernels, triton's default so far; stated, since triton 3.9 warns that 3.10
# turns it off by default (the tolerances in tests/kernels and the AOT builds assume it on).
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")


def interpreted() -> bool:
    """True when Triton kernels run in the CPU interpreter (no bf16 arithmetic there)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def resolve_kernels(choice: str, device_type: str) -> str:
    """train.kernels (auto, triton or torch: checked in gpt2train/config.py) for this device: `auto`
    -> `triton` on CUDA (when Triton is installed), `torch` elsewhere."""
    if choice == "auto":
        return "triton" if device_type == "cuda" and triton_available() else "torch"
    if choice == "triton" and not triton_available():
        raise ValueError("kernels=triton needs the `triton` package (pip install triton; Linux only); "
                         "use kernels=torch")
    return choice


def as_rows(t: torch.Tensor) -> torch.Tensor:
    """(..., C) -> (N, C) with unit column stride, as the row kernels index it (a view when possible)."""
    t = t.reshape(-1, t.shape[-1])
    return t if t.stride(-1) == 1 else t.contiguous()


@dataclass
class Build:
    """One kernel compiled under `compile_only()`: the JIT function, the autotune config it was built
    with (None for a kernel without autotuning), and triton's CompiledKernel (metadata, PTX, cubin),
    or the exception that stopped its compilation."""

    fn: Any
    config: Any
    compiled: Any = None
    error: BaseException | None = None

    @property
    def name(self) -> str:
        return self.fn.__name__


_COMPILE_ONLY: contextvars.ContextVar[list[Build] | None] = contextvars.ContextVar("compile_only", default=None)


@contextlib.contextmanager
def compile_only() -> Iterator[list[Build]]:
    """Within this block `launch` compiles kernels (every config an autotuner would try) and runs
    nothing; the yielded list collects the builds, failed ones included (a compile error is kept
    in its Build, not raised). Outputs of the host launchers hold garbage."""
    builds: list[Build] = []
    token = _COMPILE_ONLY.set(builds)
    try:
        yield builds
    finally:
        _COMPILE_ONLY.reset(token)


def launch(kernel, grid, *args, **meta) -> None:
    """`kernel[grid](*args, **meta)`, or under `compile_only()` the same compilation without a launch."""
    builds = _COMPILE_ONLY.get()
    if builds is None:
        kernel[grid](*args, **meta)
        return
    from triton.runtime.autotuner import Autotuner

    if isinstance(kernel, Autotuner):
        # The configs the autotuner would benchmark on this call (after its early pruning), each
        # compiled as its benchmark run would compile it.
        kernel.nargs = dict(zip(kernel.arg_names, args))
        try:
            configs = kernel.prune_configs(meta)
        finally:
            kernel.nargs = None
        for config in configs:
            builds.append(_compile(kernel.fn, config, args, grid, {**meta, **config.all_kwargs()}))
    else:
        builds.append(_compile(kernel, None, args, grid, meta))


def _compile(fn, config, args, grid, meta) -> Build:
    try:
        return Build(fn, config, compiled=fn.warmup(*args, grid=grid, **meta))
    except Exception as e:  # noqa: BLE001  (every compile failure is a finding, reported by the caller)
        return Build(fn, config, error=e)


def triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True
