"""Which processors this machine has, what they deliver, and which one a run uses.

The public face of device handling: discovery (`mlscale.processors.discovery`) and measurement
(`mlscale.processors.measured`) are re-exported here, so callers (the planner, the CLI) import one
module. `choose_device("auto")` takes the first usable device in `AUTO_ORDER` from the same
discovery, as Lightning Fabric's `_choose_auto_accelerator` checks each kind in a stated order, and
returns a record saying what it chose and why.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from mlscale.errors import MlscaleError
from mlscale.processors.discovery import (  # noqa: F401  (re-exported)
    ABSENT, ERROR, NOT_INSTALLED, OK, SIMD_FLAGS, DeviceInfo, cpu_flags, discover_devices,
)
from mlscale.processors.measured import (  # noqa: F401  (re-exported)
    CACHE_VERSION, MeasuredDevice, cache_path, cached_devices, default_cache_dir, measure_device, measure_devices,
    measured_devices, supported_dtypes,
)

AUTO_ORDER = ("cuda", "mps", "cpu")


@dataclass(frozen=True)
class DeviceChoice:
    device: torch.device
    reason: str


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps and mps.is_available())


def choose_device(spec: str = "auto") -> DeviceChoice:
    """`auto` takes the first usable of CUDA > MPS > CPU (from `discover_devices`); otherwise the
    named device, checked."""
    spec = spec.strip().lower()
    if spec == "auto":
        found = discover_devices()
        usable = {d.kind: d for d in reversed(found) if d.usable}  # the first of each kind wins
        skipped = [f"{d.kind} {d.status} ({d.error})" for d in found if d.kind in ("cuda", "mps") and not d.usable]
        for kind in AUTO_ORDER:
            if kind in usable:
                n_gpus = sum(d.kind == "cuda" and d.usable for d in found)
                what = {"cuda": f"CUDA present ({n_gpus} GPU)", "mps": "Apple MPS present, no CUDA",
                        "cpu": "no usable CUDA or MPS device"}[kind]
                note = f"; {'; '.join(skipped)}" if kind == "cpu" and skipped else ""
                return DeviceChoice(torch.device(usable[kind].index), f"auto: {what}{note}")
    if spec == "cpu":
        return DeviceChoice(torch.device("cpu"), "asked for")
    if m := re.fullmatch(r"cuda(?::(\d+))?", spec):
        if not torch.cuda.is_available():
            build = "a CPU-only build" if torch.version.cuda is None else f"built for CUDA {torch.version.cuda}"
            raise MlscaleError(f"device '{spec}' asked for, but no CUDA GPU is usable (torch {torch.__version__}, {build})")
        index = int(m.group(1) or 0)
        if index >= torch.cuda.device_count():
            raise MlscaleError(f"device '{spec}' asked for, but only {torch.cuda.device_count()} CUDA GPU(s) are present")
        return DeviceChoice(torch.device("cuda", index), "asked for")
    if spec == "mps":
        if not _mps_available():
            raise MlscaleError("device 'mps' asked for, but Apple MPS is not available here")
        return DeviceChoice(torch.device("mps"), "asked for")
    raise MlscaleError(f"unknown device '{spec}'; use auto, cpu, cuda, cuda:N or mps")


def choose_autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for `precision` on `device` (None: plain fp32)."""
    if precision == "fp32":
        return None
    bf16_ok = device.type == "cpu" or (device.type == "cuda" and torch.cuda.is_bf16_supported())
    if precision == "bf16":
        if not bf16_ok:
            raise MlscaleError(f"precision bf16 is not supported on {device}")
        return torch.bfloat16
    # auto: bf16 autocast where the GPU supports it; fp32 on CPU (bf16 there is slower on most CPUs)
    return torch.bfloat16 if device.type == "cuda" and bf16_ok else None
