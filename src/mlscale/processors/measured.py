"""Measured: what each usable device delivers (matmul FLOP/s per dtype, memory bandwidth), next to
the vendor's peak, cached per machine.

`measure_devices` runs the micro-benchmarks (`mlscale.processors.microbench`) on every usable
device and writes a JSON cache keyed by host, torch version, thread count and the devices found, so
the planner and `mlscale profile` read a machine's roofs in milliseconds; `measured_devices()` is
that cached read (measuring first if there is no cache).
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from mlscale.errors import MlscaleError
from mlscale.processors import microbench, vendor_peaks
from mlscale.processors.discovery import DeviceInfo, one_line_error, discover_devices

CACHE_VERSION = 1

#: operand size n of the n x n matmul and bytes copied, per kind: large enough to be compute-bound
#: (matmul) and far beyond the caches (copy); `quick` sizes keep a CPU run to seconds.
SIZES = {"cuda": (8192, 2**30), "xla": (4096, 2**28), "mps": (4096, 2**28), "cpu": (2048, 2**28)}
QUICK_SIZES = {"cuda": (8192, 2**30), "xla": (2048, 2**27), "mps": (2048, 2**27), "cpu": (1024, 2**27)}


@dataclass(frozen=True)
class MeasuredDevice:
    """What one device delivers, measured here, with the vendor's peak beside it where known.

    Attributes:
        name: the device's model name.
        kind: "cpu", "cuda", "mps" or "xla".
        index: torch device string ("cpu", "cuda:0").
        matmul_flops: dtype name ("fp32", "bf16", "fp16", "tf32") -> median measured FLOP/s.
        mem_bandwidth: median measured copy bandwidth, bytes/s.
        matmul_spread: dtype name -> (min, max) FLOP/s over the repeats.
        mem_bandwidth_spread: (min, max) bytes/s.
        repeats: timed samples behind each median.
        matmul_n: operand size of the n x n matmuls; copy_bytes: size of the copied buffer.
        vendor_matmul_flops, vendor_mem_bandwidth, vendor_source: the maker's peak (empty/None if
            unknown) and where it comes from.
        errors: dtype (or "bandwidth") -> why it could not be measured.
        measured_at: UTC time of the measurement (ISO 8601).
    """

    name: str
    kind: str
    index: str
    matmul_flops: dict[str, float]
    mem_bandwidth: float
    matmul_spread: dict[str, tuple[float, float]] = field(default_factory=dict)
    mem_bandwidth_spread: tuple[float, float] = (0.0, 0.0)
    repeats: int = 0
    matmul_n: int = 0
    copy_bytes: int = 0
    vendor_matmul_flops: dict[str, float] = field(default_factory=dict)
    vendor_mem_bandwidth: float | None = None
    vendor_source: str = ""
    errors: dict[str, str] = field(default_factory=dict)
    measured_at: str = ""

    @property
    def peak_flops(self) -> float:
        """The highest measured matmul FLOP/s over dtypes."""
        return max(self.matmul_flops.values(), default=0.0)

    def ridge_intensity(self, dtype: str = "fp32") -> float:
        """FLOPs per byte where the roofline turns from memory- to compute-bound (Williams et al.,
        "Roofline", CACM 2009): peak FLOP/s / bandwidth."""
        return self.matmul_flops[dtype] / self.mem_bandwidth

    @classmethod
    def from_dict(cls, d: dict) -> MeasuredDevice:
        """Rebuild from `asdict` output; TypeError if a field that readers rely on has the wrong type."""
        d = dict(d)
        number = (int, float)
        if not (all(isinstance(d.get(k), str) for k in ("name", "kind", "index"))
                and isinstance(d.get("matmul_flops"), dict)
                and all(isinstance(k, str) and isinstance(v, number) and not isinstance(v, bool)
                        for k, v in d["matmul_flops"].items())
                and isinstance(d.get("mem_bandwidth"), number) and not isinstance(d["mem_bandwidth"], bool)):
            raise TypeError("not a measured device record")
        d["matmul_spread"] = {k: tuple(v) for k, v in d.get("matmul_spread", {}).items()}
        d["mem_bandwidth_spread"] = tuple(d.get("mem_bandwidth_spread", (0.0, 0.0)))
        return cls(**d)


def supported_dtypes(info: DeviceInfo) -> list[str]:
    """The matmul dtypes worth measuring on a device: fp32 always; bf16/fp16 where the hardware has
    units for them (elsewhere they are emulated and slower than fp32); tf32 on Ampere and newer."""
    if info.kind == "cuda":
        major = int(str(info.detail.get("capability", "0.0")).split(".")[0])
        return ["fp32", "fp16"] + (["tf32", "bf16"] if major >= 8 else [])
    if info.kind == "cpu":
        simd = set(info.detail.get("simd", ()))
        out = ["fp32"]
        if simd & {"avx512_bf16", "amx_bf16"}:
            out.append("bf16")
        if simd & {"avx512_fp16", "amx_fp16"}:
            out.append("fp16")
        return out
    if info.kind == "mps":
        return ["fp32", "fp16"]
    return ["fp32", "bf16"]


def measure_device(info: DeviceInfo, *, matmul_n: int | None = None, copy_bytes: int | None = None,
                   repeats: int = 5, quick: bool = False) -> MeasuredDevice:
    """Run the micro-benchmarks on one usable device (see `mlscale.processors.microbench`).

    A dtype that fails (out of memory, unsupported kernel) is left out and its error kept in
    `errors`; the device is still returned.
    """
    if not info.usable:
        raise MlscaleError(f"{info.index} is not usable ({info.status}: {info.error})")
    default_n, default_bytes = (QUICK_SIZES if quick else SIZES)[info.kind]
    n, nbytes = matmul_n or default_n, copy_bytes or default_bytes
    device = torch.device(info.index)
    flops, spread, errors = {}, {}, {}
    for dtype in supported_dtypes(info):
        try:
            m = microbench.matmul_flops(device, dtype, n, repeats=repeats)
            flops[dtype], spread[dtype] = m.median, (m.min, m.max)
        except Exception as err:  # one dtype failing must not lose the others
            errors[dtype] = one_line_error(err)
    try:
        bw = microbench.copy_bandwidth(device, nbytes, repeats=repeats)
        bandwidth, bw_spread = bw.median, (bw.min, bw.max)
    except Exception as err:
        bandwidth, bw_spread, errors["bandwidth"] = 0.0, (0.0, 0.0), one_line_error(err)
    if info.kind == "cuda":
        peak = vendor_peaks.gpu_peak(info.name)
    elif info.kind == "cpu":
        peak = vendor_peaks.cpu_peak(info.detail.get("cores"), info.detail.get("mhz"), info.detail.get("simd", ()))
    else:
        peak = None
    return MeasuredDevice(
        name=info.name, kind=info.kind, index=info.index, matmul_flops=flops, mem_bandwidth=bandwidth,
        matmul_spread=spread, mem_bandwidth_spread=bw_spread, repeats=repeats, matmul_n=n, copy_bytes=nbytes,
        vendor_matmul_flops=dict(peak.matmul_flops) if peak else {},
        vendor_mem_bandwidth=peak.mem_bandwidth if peak else None, vendor_source=peak.source if peak else "",
        errors=errors, measured_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    )


def default_cache_dir() -> Path:
    """~/.cache/mlscale (the CLI takes MLSCALE_CACHE_DIR instead where it is set)."""
    return Path.home() / ".cache" / "mlscale"


def cache_path(cache_dir: str | Path | None = None, devices: list[DeviceInfo] | None = None) -> Path:
    """The cache file of this machine: keyed by host, CPU model, torch version, the intra-op threads
    torch uses and the devices found, so a new GPU, a driver that breaks, a torch upgrade or another
    thread count measures afresh."""
    devices = discover_devices() if devices is None else devices
    key = json.dumps([socket.gethostname(), torch.__version__, CACHE_VERSION, torch.get_num_threads(),
                      [(d.index, d.name, d.status) for d in devices]])
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return Path(cache_dir or default_cache_dir()) / f"devices-{digest}.json"


def measure_devices(remeasure: bool = False, cache_dir: str | Path | None = None, *, quick: bool = False,
                    repeats: int = 5, matmul_n: int | None = None,
                    copy_bytes: int | None = None) -> list[MeasuredDevice]:
    """Measured FLOP/s and bandwidth of every usable device, from this machine's cache unless
    `remeasure` (or no cache yet); a fresh measurement is written to the cache.

    Args:
        remeasure: measure even if a cache exists.
        cache_dir: where the cache lives (default `default_cache_dir()`).
        quick: smaller sizes (a CPU takes seconds instead of tens of seconds).
        repeats, matmul_n, copy_bytes: passed to `measure_device`.

    Raises:
        MlscaleError: the cache directory cannot be written.
    """
    devices = discover_devices()
    path = cache_path(cache_dir, devices)
    if not remeasure:
        cached = _read_cache(path)
        if cached is not None:
            return cached
    measured = [measure_device(d, matmul_n=matmul_n, copy_bytes=copy_bytes, repeats=repeats, quick=quick)
                for d in devices if d.usable]
    payload = {"version": CACHE_VERSION, "host": socket.gethostname(), "torch": torch.__version__,
               "devices": [d.to_dict() for d in devices], "measured": [asdict(m) for m in measured]}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(payload, indent=1))
        tmp.replace(path)  # atomic: a concurrent reader sees the old file or the new one
    except OSError as err:
        raise MlscaleError(f"cannot write the device cache {path}: {err.strerror or err}") from err
    return measured


def measured_devices(cache_dir: str | Path | None = None) -> list[MeasuredDevice]:
    """This machine's measured devices: the cache, measured first if there is none.

    Example:
        >>> from mlscale.processors.devices import measured_devices
        >>> cpu = measured_devices()[0]                      # doctest: +SKIP
        >>> cpu.kind, cpu.matmul_flops["fp32"] > 0           # doctest: +SKIP
        ('cpu', True)
    """
    return measure_devices(remeasure=False, cache_dir=cache_dir)


def cached_devices(cache_dir: str | Path | None = None) -> list[MeasuredDevice]:
    """The newest measurement `mlscale devices` cached on this machine (this host, this torch),
    whatever thread count it ran with; [] when there is none. Never measures: for readers such as
    the planner that must not spend minutes benchmarking before checking their own inputs."""
    files = sorted(Path(cache_dir or default_cache_dir()).glob("devices-*.json"),
                   key=lambda f: f.stat().st_mtime, reverse=True)
    for f in files:
        try:
            payload = json.loads(f.read_text())
            ours = payload.get("host") == socket.gethostname() and payload.get("torch") == torch.__version__
        except (OSError, ValueError, AttributeError):
            continue
        measured = _read_cache(f) if ours else None
        if measured is not None:
            return measured
    return []


def _read_cache(path: Path) -> list[MeasuredDevice] | None:
    """The cached measurements, or None when missing, unreadable or of another version."""
    try:
        payload = json.loads(path.read_text())
        if payload.get("version") != CACHE_VERSION:
            return None
        return [MeasuredDevice.from_dict(m) for m in payload["measured"]]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
