"""Micro-benchmarks: what a device delivers, measured the way a careful benchmark does.

Each figure is timed after warm-up runs (first calls pay for allocation, kernel selection and
caches), with the device synchronised before the clock is read (GPU work is asynchronous), as the
median of repeated samples with the spread (min and max) reported next to it. One sample runs the
operation enough times to last `min_sample_s`, so launch overhead and clock resolution vanish.

- Matmul FLOP/s: C = A @ B with square n x n operands costs 2 n^3 FLOPs (one multiply and one add
  per term of each of the n^2 dot products of length n).
- Memory bandwidth: `dst.copy_(src)` on buffers much larger than the caches moves 2 x nbytes (each
  byte read once and written once), the convention of STREAM's "Copy" kernel (McCalpin, 1995).
"""

from __future__ import annotations

import statistics
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable

import torch

from mlscale.errors import MlscaleError

DTYPES = {"fp32": torch.float32, "tf32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Measurement:
    """A rate measured `repeats` times: the median and the spread, in `unit`."""

    median: float
    min: float
    max: float
    repeats: int
    unit: str

    def to_dict(self) -> dict:
        return {"median": self.median, "min": self.min, "max": self.max, "repeats": self.repeats, "unit": self.unit}


def synchronize(device: torch.device) -> None:
    """Wait for all queued work on `device` (a no-op on CPU, where ops return when done)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()
    elif device.type == "xla":
        import torch_xla.core.xla_model as xm

        xm.wait_device_ops()


def time_op(fn: Callable[[], object], device: torch.device, *, warmup: int = 2, repeats: int = 5,
            min_sample_s: float = 0.02) -> tuple[list[float], int]:
    """Seconds per call of `fn` on `device`: one value per sample, and the calls per sample.

    Runs `warmup` calls (at least one), each timed; from the fastest it sets how many calls last
    `min_sample_s`, then times `repeats` samples of that many calls, synchronising before each
    clock read.
    """
    if repeats < 1 or warmup < 0:
        raise MlscaleError(f"repeats must be >= 1 and warmup >= 0, got {repeats} and {warmup}")
    one = float("inf")
    for _ in range(max(warmup, 1)):  # the fastest warm-up call sizes the samples: a call that was
        synchronize(device)            # descheduled on a busy machine must not shrink them to one call
        start = time.perf_counter()
        fn()
        synchronize(device)
        one = min(one, max(time.perf_counter() - start, 1e-9))
    calls = max(1, min(10_000, int(min_sample_s / one)))
    samples = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        synchronize(device)
        samples.append((time.perf_counter() - start) / calls)
    return samples, calls


def rate(work: float, seconds: list[float], unit: str) -> Measurement:
    """`work` per second for each timed sample, summarised as median and spread."""
    rates = [work / s for s in seconds]
    return Measurement(statistics.median(rates), min(rates), max(rates), len(rates), unit)


@contextmanager
def _tf32(enabled: bool):
    """Allow TF32 tensor cores for fp32 matmuls only inside the block (CUDA, Ampere and newer)."""
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old


def matmul_flops(device: torch.device | str, dtype: str = "fp32", n: int = 2048, *, warmup: int = 2,
                 repeats: int = 5, min_sample_s: float = 0.02) -> Measurement:
    """Matmul throughput of `device` in FLOP/s: (n x n) @ (n x n) in `dtype`.

    Args:
        device: where to run.
        dtype: "fp32", "tf32" (fp32 operands on TF32 tensor cores, CUDA only), "bf16" or "fp16".
        n: operand size; large enough to be compute-bound (GPUs: 8192).
        warmup, repeats, min_sample_s: see `time_op`.

    Returns:
        Measurement in FLOP/s.

    Example:
        >>> m = matmul_flops("cpu", "fp32", n=64, repeats=2, min_sample_s=0.001)
        >>> m.median > 0 and m.min <= m.median <= m.max
        True
    """
    device = torch.device(device)
    if dtype not in DTYPES:
        raise MlscaleError(f"unknown dtype '{dtype}'; use {', '.join(DTYPES)}")
    if n < 1:
        raise MlscaleError(f"matmul size must be >= 1, got {n}")
    a = torch.randn(n, n, device=device).to(DTYPES[dtype])
    b = torch.randn(n, n, device=device).to(DTYPES[dtype])
    out = torch.empty(n, n, device=device, dtype=DTYPES[dtype])
    with _tf32(dtype == "tf32"):
        seconds, _ = time_op(lambda: torch.matmul(a, b, out=out), device, warmup=warmup, repeats=repeats,
                             min_sample_s=min_sample_s)
    return rate(2.0 * n**3, seconds, "FLOP/s")


def copy_bandwidth(device: torch.device | str, n_bytes: int = 256 * 2**20, *, warmup: int = 2,
                   repeats: int = 5, min_sample_s: float = 0.02) -> Measurement:
    """Memory bandwidth of `device` in bytes/s: a device-to-device copy of `n_bytes`, counted as
    2 x n_bytes moved (read + write).

    Example:
        >>> m = copy_bandwidth("cpu", 2**20, repeats=2, min_sample_s=0.001)
        >>> m.unit, m.median > 0
        ('bytes/s', True)
    """
    device = torch.device(device)
    if n_bytes < 4:
        raise MlscaleError(f"copy size must be >= 4 bytes, got {n_bytes}")
    src = torch.ones(n_bytes // 4, device=device, dtype=torch.float32)
    dst = torch.empty_like(src)
    seconds, _ = time_op(lambda: dst.copy_(src), device, warmup=warmup, repeats=repeats, min_sample_s=min_sample_s)
    return rate(2.0 * src.numel() * 4, seconds, "bytes/s")
