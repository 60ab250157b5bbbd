"""Discovery: every kind of processor torch can drive here, as one record each.

A kind that is present and usable, absent, not installed (torch_xla) or broken (CUDA present but
failing, with the error) is a row: `discover_devices` never raises, so a broken device shows in
`mlscale devices` instead of crashing it.
"""

from __future__ import annotations

import os
import platform
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

#: SIMD flags of /proc/cpuinfo worth showing for ML: vector width and matrix/low-precision units.
SIMD_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "avx512_vnni",
              "avx_vnni", "amx_tile", "amx_bf16", "amx_int8", "amx_fp16", "asimd", "sve", "sve2")

#: status of a discovered device
OK, ABSENT, NOT_INSTALLED, ERROR = "ok", "absent", "not installed", "error"


@dataclass(frozen=True)
class DeviceInfo:
    """One processor (or one kind of processor that is missing).

    Attributes:
        kind: "cpu", "cuda", "mps" or "xla".
        index: the torch device string ("cpu", "cuda:0", "mps", "xla:0"); the kind alone for a row
            that is not a usable device.
        name: model name ("AMD EPYC", "NVIDIA H100 80GB HBM3"), or what is missing.
        status: OK, ABSENT, NOT_INSTALLED or ERROR.
        detail: what is known about it (cores, SIMD flags, memory, SMs, capability...).
        error: why it is absent, not installed or broken (one line); "" when OK.
    """

    kind: str
    index: str
    name: str
    status: str
    detail: dict = field(default_factory=dict)
    error: str = ""

    @property
    def usable(self) -> bool:
        return self.status == OK

    def to_dict(self) -> dict:
        return {"kind": self.kind, "index": self.index, "name": self.name, "status": self.status,
                "detail": dict(self.detail), "error": self.error}


def discover_devices(cpuinfo: str | Path = "/proc/cpuinfo") -> list[DeviceInfo]:
    """Every processor kind torch can drive here: CPU, then CUDA GPUs, MPS, XLA.

    A kind that is missing is one row saying so (status ABSENT or NOT_INSTALLED); a kind whose
    query fails is one row with status ERROR and the error. Never raises.

    Args:
        cpuinfo: where to read the CPU's model and flags (Linux `/proc/cpuinfo`).

    Example:
        >>> [d.kind for d in discover_devices()][:1]
        ['cpu']
    """
    return [_cpu(cpuinfo), *_cuda(), _mps(), _xla()]


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> tuple[str | None, set[str]]:
    """(model name, flags) from /proc/cpuinfo; (None, empty) where it cannot be read (macOS...)."""
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return None, set()
    model = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
    flags = re.search(r"^(?:flags|Features)\s*:\s*(.+)$", text, re.M)
    return (model.group(1).strip() if model else None), set(flags.group(1).split() if flags else ())


def _cpu(cpuinfo: str | Path) -> DeviceInfo:
    model, flags = cpu_flags(cpuinfo)
    mhz = None
    try:
        found = re.search(r"^cpu MHz\s*:\s*([\d.]+)", Path(cpuinfo).read_text(errors="replace"), re.M)
        mhz = float(found.group(1)) if found else None
    except OSError:
        pass
    detail = {
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "simd": [f for f in SIMD_FLAGS if f in flags],
        "mhz": mhz,
        "arch": platform.machine(),
    }
    return DeviceInfo("cpu", "cpu", model or platform.processor() or platform.machine(), OK, detail)


def _cuda() -> list[DeviceInfo]:
    try:
        available = torch.cuda.is_available()
    except Exception as err:  # a broken driver may raise here rather than answer False
        return [DeviceInfo("cuda", "cuda", "CUDA", ERROR, error=one_line_error(err))]
    if not available:
        why = "CPU-only build of torch" if torch.version.cuda is None else f"no usable GPU (torch built for CUDA {torch.version.cuda})"
        return [DeviceInfo("cuda", "cuda", "CUDA", ABSENT, error=why)]
    rows = []
    try:
        count = torch.cuda.device_count()
        if count == 0:
            raise RuntimeError("torch.cuda.is_available() is True but device_count() is 0")
        for i in range(count):
            p = torch.cuda.get_device_properties(i)
            detail = {"memory_bytes": int(p.total_memory), "sms": int(p.multi_processor_count),
                      "capability": f"{p.major}.{p.minor}"}
            rows.append(DeviceInfo("cuda", f"cuda:{i}", p.name, OK, detail))
    except Exception as err:  # CUDA present but failing: report it, keep what was found
        rows.append(DeviceInfo("cuda", f"cuda:{len(rows)}", "CUDA", ERROR, error=one_line_error(err)))
    return rows


def _mps() -> DeviceInfo:
    mps = getattr(torch.backends, "mps", None)
    try:
        if mps is not None and mps.is_available():
            return DeviceInfo("mps", "mps", "Apple MPS", OK, {"arch": platform.machine()})
        built = mps is not None and mps.is_built()
        return DeviceInfo("mps", "mps", "Apple MPS", ABSENT,
                          error="no Apple GPU here" if built else "torch built without MPS")
    except Exception as err:
        return DeviceInfo("mps", "mps", "Apple MPS", ERROR, error=one_line_error(err))


def _xla() -> DeviceInfo:
    try:
        import torch_xla  # noqa: F401  (optional: TPUs through PyTorch/XLA)
        import torch_xla.core.xla_model as xm
    except ImportError:
        return DeviceInfo("xla", "xla", "XLA (TPU)", NOT_INSTALLED, error="torch_xla is not installed")
    except Exception as err:
        return DeviceInfo("xla", "xla", "XLA (TPU)", ERROR, error=one_line_error(err))
    try:
        device = xm.xla_device()
        return DeviceInfo("xla", str(device), f"XLA {xm.xla_device_hw(device)}", OK)
    except Exception as err:
        return DeviceInfo("xla", "xla", "XLA (TPU)", ERROR, error=one_line_error(err))


def one_line_error(err: BaseException) -> str:
    """`Type: message` on one line, for a device row or a measurement that failed."""
    return " ".join(f"{type(err).__name__}: {err}".split())
