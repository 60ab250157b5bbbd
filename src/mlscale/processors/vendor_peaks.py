"""Vendor peak figures, to set each measurement beside what the maker promises.

GPU figures are dense (no 2:4 sparsity), in FLOP/s and bytes/s, from the makers' datasheets:
- H100 SXM5 and PCIe: NVIDIA H100 Tensor Core GPU datasheet (2023): FP32 67 / 51 TFLOPS,
  TF32 495 / 378, BF16 and FP16 990 / 756 (the datasheet's "with sparsity" figures halved),
  HBM3 3.35 TB/s / HBM2e 2.0 TB/s.
- H200 SXM: NVIDIA H200 Tensor Core GPU datasheet (2024): the H100 SXM's compute, HBM3e 4.8 TB/s.
- A100 SXM4 and PCIe: NVIDIA A100 datasheet (2021): FP32 19.5, TF32 156, BF16/FP16 312 TFLOPS;
  HBM2e 2,039 GB/s (80GB SXM), 1,935 GB/s (80GB PCIe), HBM2 1,555 GB/s (40GB).
- V100 SXM2: NVIDIA V100 datasheet (2020): FP32 15.7, FP16 tensor 125 TFLOPS, HBM2 900 GB/s.

CPUs publish no such table; `cpu_peak_flops` derives one from cores x clock x FLOPs per cycle, where
FLOPs per cycle = 2 (a fused multiply-add) x SIMD lanes (avx512f: 16 fp32, avx2: 8, asimd: 4) x 2
FMA units per core (server cores since Skylake-SP and Zen 2 have two). With avx512_bf16 a bf16 dot
product does twice the fp32 work per instruction; Intel AMX does 1,024 bf16 FLOPs per cycle per core
(Intel, "Accelerate AI Workloads with Intel AMX", 2023). It is an estimate: a vCPU may be a
hyperthread sharing its core's units, and turbo clocks differ from the nominal one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

T = 1e12


@dataclass(frozen=True)
class VendorPeak:
    """Peak matmul FLOP/s per dtype name and memory bandwidth (bytes/s, None: unknown)."""

    source: str
    matmul_flops: dict[str, float] = field(default_factory=dict)
    mem_bandwidth: float | None = None


def _gpu(source: str, fp32: float, tf32: float | None, half: float, bw_gbs: float) -> VendorPeak:
    flops = {"fp32": fp32 * T, "bf16": half * T, "fp16": half * T}
    if tf32 is not None:
        flops["tf32"] = tf32 * T
    return VendorPeak(source, flops, bw_gbs * 1e9)


# (pattern on torch's device name, peak); the first match wins, so specific names come first.
GPU_PEAKS: list[tuple[str, VendorPeak]] = [
    (r"H200", _gpu("NVIDIA H200 datasheet", 67, 494.7, 989.4, 4800)),
    (r"H100.*PCIe", _gpu("NVIDIA H100 PCIe datasheet", 51.2, 378, 756, 2000)),
    (r"H100", _gpu("NVIDIA H100 SXM5 datasheet", 67, 494.7, 989.4, 3350)),
    (r"A100.*80GB.*PCIe|A100.*PCIe.*80GB", _gpu("NVIDIA A100 80GB PCIe datasheet", 19.5, 156, 312, 1935)),
    (r"A100.*80GB", _gpu("NVIDIA A100 80GB SXM datasheet", 19.5, 156, 312, 2039)),
    (r"A100", _gpu("NVIDIA A100 40GB datasheet", 19.5, 156, 312, 1555)),
    (r"V100", VendorPeak("NVIDIA V100 SXM2 datasheet", {"fp32": 15.7 * T, "fp16": 125 * T}, 900e9)),
]


def gpu_peak(name: str) -> VendorPeak | None:
    """The vendor peak for a CUDA device named `name` (torch's name), None if not in the table.

    Example:
        >>> gpu_peak("NVIDIA H100 80GB HBM3").matmul_flops["bf16"] / 1e12
        989.4
    """
    for pattern, peak in GPU_PEAKS:
        if re.search(pattern, name, re.I):
            return peak
    return None


def cpu_peak(cores: int | None, mhz: float | None, simd: list[str] | set[str]) -> VendorPeak | None:
    """An estimated CPU peak (see the module docstring), None where cores, clock or SIMD width are
    unknown. Bandwidth is not derivable from /proc/cpuinfo: left unknown.

    Example:
        >>> cpu_peak(2, 2000.0, ["avx2", "fma"]).matmul_flops["fp32"] / 1e9   # 2 x 2 GHz x 2 x 8 x 2
        128.0
    """
    simd = set(simd)
    lanes = 16 if "avx512f" in simd else 8 if {"avx2", "fma"} <= simd else 4 if "asimd" in simd else None
    if not cores or not mhz or lanes is None:
        return None
    per_core_cycle = 2 * lanes * 2  # FMA = 2 FLOPs, x SIMD lanes, x 2 FMA units
    hz = mhz * 1e6
    flops = {"fp32": cores * hz * per_core_cycle}
    if "amx_bf16" in simd:
        flops["bf16"] = cores * hz * 1024
    elif "avx512_bf16" in simd:
        flops["bf16"] = 2 * flops["fp32"]
    return VendorPeak(f"estimate: {cores} cores x {mhz:.0f} MHz x {per_core_cycle} fp32 FLOP/cycle", flops, None)
