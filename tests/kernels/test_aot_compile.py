"""The ahead-of-time compile check (gpt2train/kernels/compile_check.py, bench/aot_compile.py): every
kernel built for sm_80 and sm_90 without a GPU, and what it reports.

The builds need TRITON_INTERPRET=0 before gpt2train.kernels is imported, which this test session
has already done with the interpreter on: they run in subprocesses.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from gpt2train.kernels.compile_check import KernelBuild, find_problems, parse_ptxas_log

REPO = Path(__file__).resolve().parents[2]

PTXAS_LOG = """\
ptxas info    : 11 bytes gmem, 8 bytes cmem[4]
ptxas info    : Compiling entry function 'attention_forward_kernel' for 'sm_80'
ptxas info    : Function properties for attention_forward_kernel
    8 bytes stack frame, 8 bytes spill stores, 8 bytes spill loads
ptxas info    : Used 255 registers, used 1 barriers, 8 bytes cumulative stack size, 472 bytes cmem[0]
ptxas info    : Compile time = 350.231 ms

ptxas-blackwell info    : Compiling entry function 'bias_gelu_forward_kernel' for 'sm_90a'
ptxas-blackwell info    : Function properties for bias_gelu_forward_kernel
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas-blackwell info    : Used 38 registers, used 0 barriers, 400 bytes cmem[0]
"""


def test_ptxas_log_is_read_per_entry():
    assert parse_ptxas_log(PTXAS_LOG) == [("attention_forward_kernel", 255, 8), ("bias_gelu_forward_kernel", 38, 0)]


def _build(config="128x64 w8 s3", **kw):
    base = dict(kernel="attention_forward_kernel", launch="attention forward", arch=80, shape="124M",
                mode="bf16-autocast", config=config, spills_ok=None, num_warps=8, registers=200, spill_bytes=0,
                shared_bytes=49152)
    return KernelBuild(**{**base, **kw})


def test_a_spilling_config_is_a_problem_unless_its_entry_says_why():
    problems = find_problems([_build(), _build("128x32 w4 s4", spill_bytes=8)])
    assert [p.kind for p in problems] == ["spills"]
    assert "attention_forward_kernel [128x32 w4 s4] for sm_80 (A100), 124M bf16-autocast: spills 8 bytes" in \
        problems[0].text
    assert not find_problems([_build(), _build("128x32 w4 s4", spill_bytes=8, spills_ok="fastest on sm_80")])


def test_a_launch_with_no_config_that_fits_is_named():
    too_big = _build("128x128 w8 s3", shared_bytes=229_888)
    spills = _build("128x64 w4 s3", spill_bytes=48)
    kinds = sorted(p.kind for p in find_problems([too_big, spills]))
    assert kinds == ["no-fit", "shared", "spills"]
    no_fit = next(p for p in find_problems([too_big, spills]) if p.kind == "no-fit")
    assert no_fit.text == "attention_forward_kernel (attention forward) has no config that fits sm_80 (A100) at " \
                          "124M bf16-autocast"
    assert no_fit.blocks_training


def test_compile_errors_and_register_overflow():
    broken = _build(error="CompilationError: NameError('Cannot access global variable X')", registers=None)
    over = _build(registers=255, num_warps=16)  # 255 x 512 threads > 65,536 registers
    kinds = [p.kind for p in find_problems([broken, over])]
    assert kinds[:2] == ["compile", "registers"] and "no-fit" in kinds


def _run(script: Path, code: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run `code` as a file (triton.jit reads a kernel's source from its file) with the compiler on."""
    script.write_text(textwrap.dedent(code))
    env = {**os.environ, "TRITON_INTERPRET": "0", "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, str(script)], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_a_kernel_that_does_not_build_stops_the_trainers_preflight_with_one_line(tmp_path):
    """A @triton.jit helper reading a module-level float (the bug the CPU interpreter let through in
    gelu.py): the preflight names the kernel and the architecture, no Triton traceback."""
    proc = _run(tmp_path / "broken_kernel.py", """
        import triton
        from gpt2train.errors import KernelCompileError
        from gpt2train.kernels import gelu
        from gpt2train.kernels.compile_check import MODES, ModelShape, check_kernels_compile

        SCALE = 0.7978845608028654  # a plain float: not readable from a GPU kernel

        @triton.jit
        def broken(u):
            return SCALE * u

        gelu._tanh_argument = broken
        shape = ModelShape("tiny", C=128, H=2, B=4, T=64)
        try:
            check_kernels_compile(shape, MODES["bf16-autocast"], choice="auto", arch=90, stand_in=True,
                                  launches=["bias+gelu forward"])
        except KernelCompileError as e:
            print("ERROR:", e)
    """, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = proc.stdout.strip().splitlines()[-1]
    assert line.startswith("ERROR: Triton kernels (train.kernels=auto): bias_gelu_forward_kernel (bias+gelu forward) "
                           "does not compile for sm_90 (H100, H200) at tiny bf16-autocast: NameError: Cannot access "
                           "global variable SCALE"), line
    assert "(in broken)" in line and "--kernels torch" in line


@pytest.mark.e2e
def test_every_kernel_builds_for_sm80_and_sm90_without_spills(tmp_path):
    out = tmp_path / "aot.json"
    proc = subprocess.run([sys.executable, "bench/aot_compile.py", "--json", str(out)], cwd=REPO,
                          capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["problems"] == []
    builds = report["builds"]
    assert {b["arch"] for b in builds} == {80, 90}
    assert {b["shape"] for b in builds} == {"124M", "1558M"}
    assert {b["mode"] for b in builds} == {"bf16-autocast", "bf16-pure", "fp32-tf32", "fp32-ieee"}
    kernels = {b["kernel"] for b in builds}
    assert kernels == {"residual_layernorm_forward_kernel", "residual_layernorm_backward_kernel",
                       "bias_gelu_forward_kernel", "bias_gelu_backward_kernel", "attention_forward_kernel",
                       "attention_backward_dkdv_kernel", "attention_backward_dq_kernel", "cross_entropy_rows_kernel"}
    assert all(b["registers"] is not None and b["error"] is None for b in builds), "every build ran ptxas"
    assert "every kernel compiles" in proc.stdout
