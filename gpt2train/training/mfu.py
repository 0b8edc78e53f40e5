"""Model FLOPs utilization: achieved training FLOP/s over the GPU's dense bf16 tensor-core peak (and
the memory bandwidth that bandwidth-bound kernels are measured against), per GPU model.

    peak = peak_bf16_flops(torch.cuda.get_device_name())   # None for a GPU not in the table
    mfu = flops_per_token * tokens_per_second / (peak * world)

As llm.c's `llmc/mfu.h`, a device is found by the exact name CUDA reports (`torch.cuda.get_device_name()`),
never by a substring: "NVIDIA H100 PCIe" and "NVIDIA H100 NVL" have other peaks than the SXM part
("NVIDIA H100 80GB HBM3"), and "NVIDIA L40S" is not an "NVIDIA L4". A GPU that is not here gets no MFU
(the trainer says so once) rather than a wrong one. Used by gpt2train/training/loop.py, bench/train.py and
bench/kernels.py.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GpuPeak:
    tflops: float          # dense bf16 (fp32 accumulate), no structured sparsity
    memory_tbps: float     # memory bandwidth, TB/s (what bandwidth-bound kernels are measured against)
    source: str            # the datasheet both figures come from


_H100_SXM = GpuPeak(989.4, 3.35, "NVIDIA H100 datasheet: H100 SXM BF16 Tensor Core 1,979 TFLOPS with sparsity, "
                                  "3.35 TB/s")
_H100_NVL = GpuPeak(835.5, 3.9, "NVIDIA H100 datasheet: H100 NVL BF16 Tensor Core 1,671 TFLOPS with sparsity, "
                                 "3.9 TB/s")
_H200_SXM = GpuPeak(989.4, 4.8, "NVIDIA H200 datasheet: H200 SXM BF16 Tensor Core 1,979 TFLOPS with sparsity, "
                                 "4.8 TB/s")
_H200_NVL = GpuPeak(835.5, 4.8, "NVIDIA H200 datasheet: H200 NVL BF16 Tensor Core 1,671 TFLOPS with sparsity, "
                                 "4.8 TB/s")
_A100_SOURCE = "NVIDIA A100 datasheet: BF16 Tensor Core 312 TFLOPS (624 with sparsity); llm.c mfu.h AMPERE_DATACENTER"

# torch.cuda.get_device_name() -> peak. Names are CUDA's own (nvidia-smi prints the same).
GPU_PEAKS = {
    "NVIDIA H100 80GB HBM3": _H100_SXM,   # the SXM5 part; llm.c mfu.h derives 988.8 from its clocks
    "NVIDIA H100 PCIe": GpuPeak(756.0, 2.0, "NVIDIA H100 PCIe datasheet: BF16 Tensor Core 1,513 TFLOPS with "
                                            "sparsity, 2.0 TB/s; llm.c mfu.h HOPPER"),
    "NVIDIA H100 NVL": _H100_NVL,
    "NVIDIA H200": _H200_SXM,
    "NVIDIA H200 NVL": _H200_NVL,
    "NVIDIA A100-SXM4-80GB": GpuPeak(312.0, 2.039, _A100_SOURCE + "; 2,039 GB/s"),
    "NVIDIA A100-SXM4-40GB": GpuPeak(312.0, 1.555, _A100_SOURCE + "; 1,555 GB/s"),
    "NVIDIA A100-PCIE-40GB": GpuPeak(312.0, 1.555, _A100_SOURCE + "; 1,555 GB/s"),
    "NVIDIA A100 80GB PCIe": GpuPeak(312.0, 1.935, _A100_SOURCE + "; 1,935 GB/s"),
    "NVIDIA L40S": GpuPeak(362.05, 0.864, "NVIDIA L40S datasheet: BF16 Tensor Core 362.05 TFLOPS (733 with "
                                          "sparsity), 864 GB/s"),
    "NVIDIA L4": GpuPeak(121.0, 0.3, "NVIDIA L4 datasheet: BF16 Tensor Core 242 TFLOPS with sparsity, 300 GB/s"),
    "NVIDIA A10": GpuPeak(125.0, 0.6, "NVIDIA A10 datasheet: BF16 Tensor Core 125 TFLOPS (250 with sparsity), "
                                      "600 GB/s"),
    "NVIDIA GeForce RTX 4090": GpuPeak(165.2, 1.008, "NVIDIA Ada Lovelace architecture whitepaper: RTX 4090 peak "
                                                     "BF16 Tensor TFLOPS with FP32 accumulate 165.2, 1,008 GB/s; "
                                                     "llm.c mfu.h ADA"),
    "NVIDIA GeForce RTX 3090": GpuPeak(71.0, 0.936, "NVIDIA Ampere GA102 whitepaper: RTX 3090 peak BF16 Tensor "
                                                    "TFLOPS with FP32 accumulate 71, 936 GB/s"),
}


def peak_bf16_flops(device_name: str | None) -> float | None:
    """FLOP/s of the named GPU's dense bf16 peak, or None when it is not in GPU_PEAKS."""
    peak = GPU_PEAKS.get(device_name or "")
    return peak.tflops * 1e12 if peak else None


def peak_memory_bytes_per_s(device_name: str | None) -> float | None:
    """Bytes/s of the named GPU's memory bandwidth, or None when it is not in GPU_PEAKS."""
    peak = GPU_PEAKS.get(device_name or "")
    return peak.memory_tbps * 1e12 if peak else None


def unknown_device_note(device_name: str) -> str:
    return (f"MFU omitted: no bf16 peak is known for {device_name!r} (add its datasheet figures to "
            f"gpt2train/training/mfu.py GPU_PEAKS)")
