"""bench/gpu_check.sh without a GPU, and the GPU peak table that MFU is computed against."""

from __future__ import annotations

import subprocess

from gpt2train.training.mfu import GPU_PEAKS, peak_bf16_flops, peak_memory_bytes_per_s, unknown_device_note
from tests.paths import REPO


def test_gpu_check_without_cuda_checks_its_plan_and_exits_0(tmp_path):
    r = subprocess.run(["bash", "bench/gpu_check.sh", str(tmp_path / "out")], cwd=REPO, capture_output=True,
                       text=True, timeout=300, env={"PATH": "/usr/bin:/bin", "PYTHON": _python()})
    assert r.returncode == 0, r.stdout + r.stderr
    assert "no CUDA device here: nothing run" in r.stdout
    assert "d12 run's config (gpt2_124m, B=32, T=1024, 50 steps)" in r.stdout


def _python() -> str:
    import sys

    return sys.executable


def test_peaks_are_found_by_exact_device_name():
    assert peak_bf16_flops("NVIDIA H100 80GB HBM3") == 989.4e12      # SXM
    assert peak_bf16_flops("NVIDIA H100 PCIe") == 756e12
    assert peak_bf16_flops("NVIDIA H100 NVL") == 835.5e12
    assert peak_bf16_flops("NVIDIA L40S") == 362.05e12
    assert peak_bf16_flops("NVIDIA L4") == 121e12                   # not L40S's, as a substring match gave
    assert peak_bf16_flops("NVIDIA H200") == 989.4e12 and peak_memory_bytes_per_s("NVIDIA H200") == 4.8e12
    assert peak_bf16_flops("NVIDIA B200") is None and peak_bf16_flops(None) is None
    assert "NVIDIA B200" in unknown_device_note("NVIDIA B200")
    assert all(p.source and p.tflops > 0 and p.memory_tbps > 0 for p in GPU_PEAKS.values())
