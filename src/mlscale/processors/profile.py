"""`profile_model`: per-layer FLOPs, bytes, arithmetic intensity and measured time on each present
device, the bound of each layer, a TPU-like systolic estimate, and a recommendation.

A "layer" is a leaf module, or an `nn.MultiheadAttention` taken whole. One forward pass records
each layer's real inputs (forward hooks); each layer is then counted and timed alone on those inputs.

- FLOPs: `mlscale.processors.flops.count_flops` (matmuls, convolutions, attention).
- Bytes moved: inputs + parameters and buffers + outputs, each once: the least traffic the layer
  needs from memory (intermediates inside a layer, such as attention scores, are not counted).
- Arithmetic intensity = FLOPs / bytes. Against a device's ridge point (measured peak FLOP/s /
  measured bandwidth; Williams, Waterman and Patterson, "Roofline", CACM 2009) a layer left of the
  ridge is memory-bound, right of it compute-bound.
- TPU-like column: the layer's matrix products lowered to GEMMs (convolutions by im2col) and timed
  by the systolic simulator on the TPU v1 array (256 x 256 MACs, weight-stationary) at its 700 MHz
  clock (Jouppi et al., ISCA 2017). Layers without matrix products have no entry.
"""

from __future__ import annotations

import copy
import math
import os
from dataclasses import dataclass, field

import torch
from torch import nn

from mlscale.errors import MlscaleError
from mlscale.processors.devices import MeasuredDevice
from mlscale.processors.flops import count_flops
from mlscale.processors.microbench import time_op

#: TPU v1 clock, Hz (Jouppi et al., "In-Datacenter Performance Analysis of a Tensor Processing Unit", 2017)
SYSTOLIC_CLOCK_HZ = 700e6
SYSTOLIC_ARRAY = "tpu-v1"


@dataclass
class LayerProfile:
    """One layer at the profiled batch.

    Attributes:
        name: module path in the model ("encoder.layers.0.self_attn").
        type: module class name.
        flops: FLOPs of one forward call.
        bytes_moved: inputs + parameters/buffers + outputs, in bytes.
        time_s: device index -> measured median seconds of one forward call.
        bound: device index -> "compute" or "memory".
        systolic_s: estimated seconds on the TPU-like array, None for a layer without matmuls.
    """

    name: str
    type: str
    flops: int
    bytes_moved: int
    time_s: dict[str, float] = field(default_factory=dict)
    bound: dict[str, str] = field(default_factory=dict)
    systolic_s: float | None = None

    @property
    def intensity(self) -> float:
        """FLOPs per byte moved."""
        return self.flops / self.bytes_moved if self.bytes_moved else 0.0

    def achieved_flops(self, device: str) -> float:
        return self.flops / self.time_s[device] if self.time_s.get(device) else 0.0


@dataclass
class Recommendation:
    """Which device and batch size, with the measured throughput behind it."""

    device: str
    batch: int
    samples_per_s: float
    reason: str


@dataclass
class ModelProfile:
    """The result of `profile_model`."""

    model: str
    batch: int
    input_shape: tuple[int, ...]
    layers: list[LayerProfile]
    devices: list[MeasuredDevice]
    throughput: dict[str, dict[int, float]]  # device index -> batch -> forward samples/s
    recommendation: Recommendation
    systolic_array: str = SYSTOLIC_ARRAY
    systolic_clock_hz: float = SYSTOLIC_CLOCK_HZ

    @property
    def total_flops(self) -> int:
        return sum(layer.flops for layer in self.layers)

    def to_dict(self) -> dict:
        return {
            "model": self.model, "batch": self.batch, "input_shape": list(self.input_shape),
            "total_flops": self.total_flops,
            "systolic": {"array": self.systolic_array, "clock_hz": self.systolic_clock_hz},
            "layers": [{"name": l.name, "type": l.type, "flops": l.flops, "bytes_moved": l.bytes_moved,
                        "intensity": l.intensity, "time_s": l.time_s, "bound": l.bound,
                        "systolic_s": l.systolic_s} for l in self.layers],
            "devices": [{"index": d.index, "name": d.name, "matmul_flops": d.matmul_flops,
                         "mem_bandwidth": d.mem_bandwidth} for d in self.devices],
            "throughput": {k: {str(b): v for b, v in t.items()} for k, t in self.throughput.items()},
            "recommendation": vars(self.recommendation),
        }


@dataclass
class _Call:
    name: str
    module: nn.Module
    args: tuple
    kwargs: dict
    output: object


def profile_model(model: nn.Module, input_shape: tuple[int, ...], batch: int, devices: list[MeasuredDevice],
                  *, name: str = "model", batches: list[int] | None = None, repeats: int = 5,
                  min_sample_s: float = 0.01, systolic: bool = True) -> ModelProfile:
    """Profile `model`'s forward pass at `batch` samples of `input_shape` on every device given.

    Args:
        model: any module taking one float tensor (batch, *input_shape); it is cast to fp32 (in
            place, as `Module.float()` does) and its train/eval mode is restored afterwards.
        input_shape: shape of one sample.
        batch: the batch size profiled layer by layer.
        devices: measured devices (`measured_devices()`); each is timed, and its roofs set the bounds.
        name: the model's name in reports.
        batches: batch sizes tried for the recommendation (default: batch/16 .. batch*4, by 4x).
        repeats, min_sample_s: timing of each layer (see `microbench.time_op`).
        systolic: add the TPU-like systolic estimate.

    Raises:
        MlscaleError: a non-positive batch, no device, or a model that fails on such an input.
    """
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise MlscaleError(f"batch must be a positive integer, got {batch!r}")
    if not devices:
        raise MlscaleError("no measured device to profile on")
    input_shape = tuple(int(s) for s in input_shape)
    batches = sorted(set(batches or [max(1, batch // 16), max(1, batch // 4), batch, batch * 4]))
    was_training = model.training
    model = model.float()
    # train mode throughout: no fused inference fast paths (TransformerEncoderLayer's, MultiheadAttention's
    # native kernel), so every submodule is really called, counted and timed
    model.train()
    try:
        calls = _record_calls(model, _batch_of(batch, input_shape, torch.device("cpu")))
        layers = [_profile_call(c, devices, repeats, min_sample_s) for c in calls]
        if systolic:
            for layer, call in zip(layers, calls):
                layer.systolic_s = _systolic_seconds(call)
        throughput = {d.index: _throughput(model, input_shape, batches, d.index, repeats, min_sample_s)
                      for d in devices}
    finally:
        model.train(was_training)
    return ModelProfile(name, batch, input_shape, layers, devices, throughput,
                        _recommend(layers, devices, throughput, batch))


def _batch_of(batch: int, input_shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
    n_bytes = 4 * batch * math.prod(input_shape)
    if device.type == "cpu" and hasattr(os, "sysconf") and n_bytes > _physical_memory_bytes():
        # refuse before allocating: with memory overcommit on, a huge allocation succeeds and filling
        # it brings the OOM killer instead of an error
        raise MlscaleError(f"a batch of {batch} samples of shape {input_shape} ({n_bytes / 2**30:,.1f} GiB) "
                           f"does not fit in memory on {device} ({_physical_memory_bytes() / 2**30:,.1f} GiB)")
    try:
        return torch.randn(batch, *input_shape, device=device)
    except (RuntimeError, MemoryError) as err:  # the allocator's "can't allocate memory", or CUDA OOM
        raise MlscaleError(f"a batch of {batch} samples of shape {input_shape} does not fit in memory on "
                           f"{device}: {err}") from err


def _physical_memory_bytes() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _out_of_memory(err: BaseException) -> bool:
    return isinstance(err, (torch.cuda.OutOfMemoryError, MemoryError)) or "allocate" in str(err)


def _layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Leaf modules, and MultiheadAttention whole (its out_proj is not called as a module)."""
    found, skip = [], set()
    for path, module in model.named_modules():
        if any(path.startswith(p + ".") for p in skip):
            continue
        if isinstance(module, nn.MultiheadAttention):
            found.append((path, module))
            skip.add(path)
        elif not any(True for _ in module.children()):
            found.append((path or type(module).__name__, module))
    return found


def _record_calls(model: nn.Module, x: torch.Tensor) -> list[_Call]:
    calls: list[_Call] = []
    handles = []
    for path, module in _layers(model):
        def hook(mod, args, kwargs, output, path=path):
            calls.append(_Call(path, mod, args, kwargs, output))
        handles.append(module.register_forward_hook(hook, with_kwargs=True))
    try:
        with torch.no_grad():
            model(x)
    except Exception as err:
        raise MlscaleError(f"the model fails on a batch of shape {tuple(x.shape)}: {type(err).__name__}: {err}") from err
    finally:
        for h in handles:
            h.remove()
    return calls


def _tensors(obj) -> list[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, (list, tuple)):
        return [t for o in obj for t in _tensors(o)]
    if isinstance(obj, dict):
        return [t for o in obj.values() for t in _tensors(o)]
    return []


def _bytes_moved(call: _Call) -> int:
    seen, total = set(), 0
    for t in [*_tensors(call.args), *_tensors(call.kwargs), *call.module.parameters(), *call.module.buffers(),
              *_tensors(call.output)]:
        key = (t.data_ptr(), t.numel(), t.dtype)
        if key not in seen:
            seen.add(key)
            total += t.numel() * t.element_size()
    return total


def _to(obj, device: torch.device):
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, tuple):
        return tuple(_to(o, device) for o in obj)
    if isinstance(obj, list):
        return [_to(o, device) for o in obj]
    if isinstance(obj, dict):
        return {k: _to(v, device) for k, v in obj.items()}
    return obj


def _profile_call(call: _Call, devices: list[MeasuredDevice], repeats: int, min_sample_s: float) -> LayerProfile:
    with torch.no_grad():
        flops = count_flops(lambda: call.module(*call.args, **call.kwargs))
    layer = LayerProfile(call.name, type(call.module).__name__, flops, _bytes_moved(call))
    for d in devices:
        device = torch.device(d.index)
        module = copy.deepcopy(call.module).to(device)
        args, kwargs = _to(call.args, device), _to(call.kwargs, device)
        with torch.no_grad():
            seconds, _ = time_op(lambda: module(*args, **kwargs), device, warmup=3, repeats=repeats,
                                 min_sample_s=min_sample_s)
        layer.time_s[d.index] = sorted(seconds)[len(seconds) // 2]
        ridge = d.ridge_intensity("fp32") if d.matmul_flops.get("fp32") and d.mem_bandwidth else math.inf
        layer.bound[d.index] = "compute" if layer.intensity >= ridge else "memory"
    return layer


def _gemms(call: _Call) -> list[tuple[int, int, int, int]]:
    """The layer's matrix products as (M, K, N, count): (M x K) @ (K x N), `count` times."""
    m, out = call.module, call.output
    if isinstance(m, nn.Linear):
        x = call.args[0]
        return [(x.numel() // m.in_features, m.in_features, m.out_features, 1)]
    if isinstance(m, nn.modules.conv._ConvNd) and isinstance(out, torch.Tensor):
        # im2col per group: M = batch x output pixels, K = window x channels per group, N = filters per group
        g = m.groups
        M = out.shape[0] * math.prod(out.shape[2:])
        K = math.prod(m.kernel_size) * m.in_channels // g
        return [(M, K, m.out_channels // g, g)]
    if isinstance(m, nn.MultiheadAttention):
        q, k, v = call.args[:3]
        batch_first = m.batch_first
        L, S = (q.shape[1], k.shape[1]) if batch_first and q.dim() == 3 else (q.shape[0], k.shape[0])
        B = q.numel() // (L * m.embed_dim)
        E, h = m.embed_dim, m.num_heads
        d = E // h
        return [(B * L, E, E, 1), (B * S, m.kdim, E, 1), (B * S, m.vdim, E, 1),  # Q, K, V projections
                (L, d, S, B * h), (L, S, d, B * h),                               # Q K^T, P V per head
                (B * L, E, E, 1)]                                                 # output projection
    return []


def _systolic_seconds(call: _Call) -> float | None:
    from mlscale.processors.systolic import Layer, simulate  # NumPy only

    gemms = _gemms(call)
    if not gemms:
        return None
    try:
        result = simulate([Layer.gemm(f"{call.name}.{i}", M, K, N) for i, (M, K, N, _) in enumerate(gemms)],
                          SYSTOLIC_ARRAY, progress=False)
    except MlscaleError:
        return None  # an operand the array's SRAM cannot hold: no estimate rather than a wrong one
    cycles = sum(t.total_cycles * count for t, (_, _, _, count) in zip(result.layers, gemms))
    return cycles / SYSTOLIC_CLOCK_HZ


def _throughput(model: nn.Module, input_shape: tuple[int, ...], batches: list[int], index: str,
                repeats: int, min_sample_s: float) -> dict[int, float]:
    device = torch.device(index)
    m = copy.deepcopy(model).to(device).eval()  # whole-model forward as served: fused paths allowed
    out = {}
    for b in batches:
        try:
            x = _batch_of(b, input_shape, device)
            with torch.no_grad():
                seconds, _ = time_op(lambda: m(x), device, warmup=3, repeats=repeats, min_sample_s=min_sample_s)
        except Exception as err:
            if out and (isinstance(err, MlscaleError) or _out_of_memory(err)):
                break  # larger batches do not fit: recommend among those that did
            if isinstance(err, MlscaleError):
                raise
            raise MlscaleError(f"the model fails on a batch of {b} on {device}: {type(err).__name__}: {err}") from err
        out[b] = b / sorted(seconds)[len(seconds) // 2]
    return out


def _recommend(layers: list[LayerProfile], devices: list[MeasuredDevice], throughput: dict[str, dict[int, float]],
               batch: int) -> Recommendation:
    """The device with the highest forward samples/s, at the smallest batch within 10% of its best
    (a larger batch buys no speed there, only memory and fewer updates per epoch)."""
    best_device = max(throughput, key=lambda k: max(throughput[k].values(), default=0.0))
    t = throughput[best_device]
    top = max(t.values())
    chosen = min(b for b, v in t.items() if v >= 0.9 * top)
    per_batch = ", ".join(f"batch {b}: {v:,.0f}/s" for b, v in sorted(t.items()))
    n_mem = sum(1 for l in layers if l.flops and l.bound.get(best_device) == "memory")
    n_mat = sum(1 for l in layers if l.flops)
    others = [f"{k} {max(v.values()):,.0f}/s" for k, v in throughput.items() if k != best_device and v]
    reason = (f"{best_device} reaches {t[chosen]:,.0f} samples/s (forward) at batch {chosen}, within 10% of its best "
              f"({per_batch}); at batch {batch}, {n_mem} of {n_mat} matmul layers are memory-bound there")
    if others:
        reason += f"; other devices: {', '.join(others)}"
    roofs = next((d.matmul_flops for d in devices if d.index == best_device), {})
    fp32, low = roofs.get("fp32", 0.0), max(roofs.get("bf16", 0.0), roofs.get("fp16", 0.0))
    if fp32 and low > 1.5 * fp32 and n_mat > n_mem:
        reason += (f"; its bf16/fp16 matmul roof measured {low / fp32:.1f}x its fp32 one, so the compute-bound "
                   f"layers may gain from bf16 (--precision bf16)")
    sys_total = sum(l.systolic_s for l in layers if l.systolic_s is not None)
    dev_total = sum(l.time_s[best_device] for l in layers if l.systolic_s is not None)
    if sys_total > 0:
        reason += (f"; its matmul layers take {dev_total * 1e3:.3f} ms there, {sys_total * 1e3:.3f} ms on a simulated "
                   f"{SYSTOLIC_ARRAY} array at {SYSTOLIC_CLOCK_HZ / 1e6:.0f} MHz")
    return Recommendation(best_device, chosen, t[chosen], reason)
