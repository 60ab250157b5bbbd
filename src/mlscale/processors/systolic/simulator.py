"""`simulate`: one engine call from a workload and an array to per-layer timing and comparisons."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from mlscale.errors import MlscaleError
from mlscale.processors.systolic.array import ArrayConfig, check_dataflow
from mlscale.processors.systolic.formats import load_config, load_topology
from mlscale.processors.systolic.layers import Layer
from mlscale.processors.systolic.timing import LayerTiming, time_layer
from mlscale.processors.systolic.vonneumann import VonNeumannComparison, compare


@dataclass
class SimulationResult:
    """Timing of every layer of a workload on one array.

    Attributes:
        array: the hardware simulated.
        layers: per-layer timing, in topology order.
        comparisons: per-layer naive-MAC-loop vs systolic comparison, same order.
        wall_s: seconds the simulation took.
    """

    array: ArrayConfig
    layers: list[LayerTiming] = field(default_factory=list)
    comparisons: list[VonNeumannComparison] = field(default_factory=list)
    wall_s: float = 0.0

    @property
    def compute_cycles(self) -> int:
        """Stall-free cycles of the whole workload."""
        return sum(t.compute_cycles for t in self.layers)

    @property
    def total_cycles(self) -> int:
        """Cycles including stalls (layers one after another)."""
        return sum(t.total_cycles for t in self.layers)

    @property
    def macs(self) -> int:
        return sum(t.macs for t in self.layers)


def simulate(
    workload,
    config: ArrayConfig | str | Path = "scale",
    *,
    dataflow: str | None = None,
    array: tuple[int, int] | None = None,
    bandwidth_words_per_cycle: float | None = None,
    topology_kind: str = "auto",
    progress: bool | None = None,
) -> SimulationResult:
    """Simulate a workload on a systolic array (timing mode, every layer).

    Args:
        workload: a topology CSV path (SCALE-Sim conv or GEMM format), a `Layer`, a list of layers,
            or an (M, K, N) tuple for one GEMM (M x K) @ (K x N).
        config: an ArrayConfig, a built-in name ("tpu-v1", "google", "scale", "small") or a `.cfg`.
        dataflow: override the config's dataflow ("os", "ws", "is").
        array: override the config's (rows, cols).
        bandwidth_words_per_cycle: override the DRAM bandwidth (words/cycle per interface).
        topology_kind: "auto", "conv" or "gemm" for CSV workloads.
        progress: show a progress bar (default: when stderr is a terminal and there are >= 20 layers).

    Returns:
        SimulationResult with per-layer LayerTiming and VonNeumannComparison.

    Raises:
        MlscaleError: bad file, row, size or dataflow, or an operand that cannot fit its SRAM.

    Example:
        >>> r = simulate((64, 64, 64), "small", dataflow="os", array=(64, 64))
        >>> r.layers[0].compute_cycles      # 3 * 64 - 2
        190
    """
    start = time.perf_counter()
    hw = config if isinstance(config, ArrayConfig) else load_config(config)
    changes = {}
    if dataflow is not None:
        changes["dataflow"] = check_dataflow(dataflow)
    if array is not None and tuple(array) != (hw.rows, hw.cols):
        changes["rows"], changes["cols"] = array
        changes["name"] = f"{hw.name}-{array[0]}x{array[1]}"  # reports must not pass it off as the named array
    if bandwidth_words_per_cycle is not None:
        changes["bandwidth_words_per_cycle"] = bandwidth_words_per_cycle
    if changes:
        hw = hw.with_(**changes)
    layers = _layers(workload, topology_kind)
    show = progress if progress is not None else (len(layers) >= 20 and sys.stderr.isatty())
    iterator = layers
    if show:
        from tqdm import tqdm  # lazy: only for long networks

        iterator = tqdm(layers, desc="layers", unit="layer", file=sys.stderr)
    result = SimulationResult(hw)
    for layer in iterator:
        t = time_layer(layer, hw)
        result.layers.append(t)
        result.comparisons.append(compare(t, hw.word_bytes))
    result.wall_s = time.perf_counter() - start
    return result


def _layers(workload, kind: str) -> list[Layer]:
    if isinstance(workload, (str, Path)):
        return load_topology(workload, kind)
    if isinstance(workload, Layer):
        return [workload]
    if isinstance(workload, tuple) and len(workload) == 3 and all(isinstance(v, int) for v in workload):
        M, K, N = workload
        return [Layer.gemm(f"gemm_{M}x{K}x{N}", M, K, N)]
    if isinstance(workload, list) and workload and all(isinstance(v, Layer) for v in workload):
        return list(workload)
    raise MlscaleError(
        "workload must be a topology CSV path, a Layer, a list of Layers or an (M, K, N) tuple"
    )
