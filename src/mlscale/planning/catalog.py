"""The device catalog the planner predicts for: this machine's CPU (calibrated), the devices
`mlscale devices` measured (when that module is present), and documented spec-sheet entries
(`data/devices.yaml`, each with its source) for devices that are not here."""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources

from mlscale.errors import MlscaleError
from mlscale.planning.costmodel import Link

# A spec-sheet peak is not what a training step reaches. Compute on a device that is not here is
# scaled from this machine's *measured* matmul FLOP/s to this fraction of the device's peak (large
# well-tuned jobs reach 40-60% model FLOP/s utilisation: PaLM reports 46%, Megatron-LM 52%).
SPEC_SHEET_UTILISATION = 0.5
# host time per operator launched by eager PyTorch on a GPU (data/devices.yaml says why)
GPU_LAUNCH_S = 6.0e-6


@dataclass(frozen=True)
class DeviceSpec:
    """One device kind a worker may run on."""

    name: str
    kind: str  # cpu, gpu, tpu
    peak_flops: dict[str, float]  # dtype -> FLOP/s (measured or spec sheet)
    mem_bandwidth: float  # bytes/s
    link: Link | None = None  # within a node; None: the link calibrated here
    devices_per_node: int = 1
    network: Link | None = None  # between nodes; None: the same as `link`
    measured: bool = False  # figures measured on this machine, not read from a spec sheet
    launch_s: float = 0.0  # host time per operator launched (eager GPUs); 0: not a floor
    source: str = field(default="", compare=False)

    def link_for(self, n_workers: int) -> Link | None:
        """The slowest link a ring of `n_workers` crosses."""
        if n_workers > self.devices_per_node and self.network is not None:
            return self.network
        return self.link


def spec_sheet_devices() -> list[DeviceSpec]:
    """The documented entries shipped with mlscale."""
    import yaml

    text = resources.files("mlscale.planning").joinpath("data/devices.yaml").read_text()
    out = []
    for name, e in yaml.safe_load(text).items():
        out.append(DeviceSpec(
            name=name, kind=e["kind"], peak_flops={k: float(v) for k, v in e["peak_flops"].items()},
            mem_bandwidth=float(e["mem_bandwidth"]), link=_link(e.get("link")),
            devices_per_node=int(e.get("devices_per_node", 1)), network=_link(e.get("network")),
            launch_s=float(e.get("launch_s", 0.0)), source="spec sheet (src/mlscale/planning/data/devices.yaml)"))
    return out


def catalog_from_measured(items) -> list[DeviceSpec]:
    """DeviceSpecs from measured devices: any objects with `name`, `kind`, `matmul_flops`
    (dtype -> FLOP/s) and `mem_bandwidth` (B/s), as `mlscale.processors.devices.cached_devices()`
    returns. Their interconnect is the one calibrated here; a GPU's step has the spec-sheet GPUs'
    launch floor; a device with no matmul figure (every dtype failed) is left out."""
    return [DeviceSpec(name=str(d.name), kind=str(d.kind), peak_flops={k: float(v) for k, v in d.matmul_flops.items()},
                       mem_bandwidth=float(d.mem_bandwidth), measured=True, source="measured by mlscale devices",
                       launch_s=GPU_LAUNCH_S if d.kind == "cuda" else 0.0)
            for d in items if d.matmul_flops]


def load_catalog(host_matmul_flops: float | None = None, *, include_measured: bool = True,
                 host: str = "cpu") -> dict[str, DeviceSpec]:
    """name -> DeviceSpec: `host` (`cpu`, or `cuda` when the job calibrated on this machine's GPU),
    measured devices, spec sheets. A measured device of a spec sheet's name replaces the entry."""
    catalog = {d.name: d for d in spec_sheet_devices()}
    if include_measured:
        for d in _measured():
            catalog[d.name] = d
    if host_matmul_flops is not None:
        catalog[host] = DeviceSpec(name=host, kind="gpu" if host == "cuda" else "cpu",
                                   peak_flops={"fp32": host_matmul_flops}, mem_bandwidth=0.0, measured=True,
                                   source="this machine, calibrated")
    return catalog


def select(catalog: dict[str, DeviceSpec], names: list[str]) -> list[DeviceSpec]:
    """The named devices, or one clear error naming what the catalog holds."""
    missing = [n for n in names if n not in catalog]
    if missing:
        raise MlscaleError(f"device '{missing[0]}' is not in the device catalog; it holds {', '.join(sorted(catalog))}")
    return [catalog[n] for n in names]


def _measured(cache_dir=None) -> list[DeviceSpec]:
    """What `mlscale devices` last measured here, read from its cache (never measured here)."""
    from mlscale.processors.devices import cached_devices

    return catalog_from_measured(cached_devices(cache_dir))


def _link(e: dict | None) -> Link | None:
    return None if e is None else Link(alpha_s=float(e["alpha_s"]), bandwidth_bytes_per_s=float(e["bandwidth"]))
