"""What processors this machine has, and which one a run uses.

`discover_devices` lists every kind of processor torch can drive, in a stated order, as one record
each: present and usable, absent, not installed (torch_xla), or broken (CUDA present but failing,
with the error). It never raises: a broken device is a row, not a crash. `choose_device("auto")`
takes the first usable one in `AUTO_ORDER`, as Lightning Fabric's `_choose_auto_accelerator` does,
and says why.

`measure_devices` runs the micro-benchmarks (`mlscale.processors.microbench`) on every usable
device and caches the result per machine (JSON keyed by host, CPU model, torch version and the
devices found), so the planner and `mlscale profile` read a machine's roofs in milliseconds;
`measured_devices()` is that cached read.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
import socket
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from mlscale.errors import MlscaleError
from mlscale.processors import microbench, vendor_peaks

AUTO_ORDER = ("cuda", "mps", "cpu")

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
        return [DeviceInfo("cuda", "cuda", "CUDA", ERROR, error=_one_line(err))]
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
        rows.append(DeviceInfo("cuda", f"cuda:{len(rows)}", "CUDA", ERROR, error=_one_line(err)))
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
        return DeviceInfo("mps", "mps", "Apple MPS", ERROR, error=_one_line(err))


def _xla() -> DeviceInfo:
    try:
        import torch_xla  # noqa: F401  (optional: TPUs through PyTorch/XLA)
        import torch_xla.core.xla_model as xm
    except ImportError:
        return DeviceInfo("xla", "xla", "XLA (TPU)", NOT_INSTALLED, error="torch_xla is not installed")
    except Exception as err:
        return DeviceInfo("xla", "xla", "XLA (TPU)", ERROR, error=_one_line(err))
    try:
        device = xm.xla_device()
        return DeviceInfo("xla", str(device), f"XLA {xm.xla_device_hw(device)}", OK)
    except Exception as err:
        return DeviceInfo("xla", "xla", "XLA (TPU)", ERROR, error=_one_line(err))


def _one_line(err: BaseException) -> str:
    return " ".join(f"{type(err).__name__}: {err}".split())


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


# ---------------------------------------------------------------------------------------------
# Measured: what each usable device delivers, cached per machine.

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
            errors[dtype] = _one_line(err)
    try:
        bw = microbench.copy_bandwidth(device, nbytes, repeats=repeats)
        bandwidth, bw_spread = bw.median, (bw.min, bw.max)
    except Exception as err:
        bandwidth, bw_spread, errors["bandwidth"] = 0.0, (0.0, 0.0), _one_line(err)
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


def _read_cache(path: Path) -> list[MeasuredDevice] | None:
    """The cached measurements, or None when missing, unreadable or of another version."""
    try:
        payload = json.loads(path.read_text())
        if payload.get("version") != CACHE_VERSION:
            return None
        return [MeasuredDevice.from_dict(m) for m in payload["measured"]]
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
