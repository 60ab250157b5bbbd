"""Timing mode: a GEMM folded onto the fixed array, in closed form (no per-cycle loop).

Folding (SCALE-Sim's "spatio-temporal" mapping; Samajdar et al., ISPASS 2020, section III): each
dataflow maps two GEMM dimensions onto the array's rows and columns (S_r, S_c) and streams the third
through it in time (T):

    dataflow  S_r (rows)  S_c (cols)  T (time)   cycles per fold (stall-free)
    OS        M           N           K          T + R + C - 2
    WS        K           N           M          2R + C + T - 2   (R cycles to load the weights)
    IS        K           M           N          2R + C + T - 2   (R cycles to load the inputs)

Folds = ceil(S_r / R) * ceil(S_c / C), run one after another, each with full fill and drain, which is
what SCALE-Sim's demand matrices encode (`compute/systolic_compute_{os,ws,is}.py`: operand rows per
fold, skewed, plus the inter-fold gaps). `dataflows.py` runs the same schedule PE by PE; tests check
both give the same cycles. For OS with M = N = K = n on an n x n array this is the 3n - 2 wavefront.

Memory (`_memory`) is mlscale's own first-order model, not SCALE-Sim's trace-driven buffer model:
an operand that fits in the active half of its double-buffered SRAM (SCALE-Sim's `active_buf_frac =
0.5`) is read from DRAM once; otherwise once per pass the dataflow makes over it. Outputs go to DRAM
as often as they are written to the output SRAM (partial sums of every K fold, as SCALE-Sim drains
them). With a user bandwidth B (words/cycle per interface), the first fold's operands are
prefetched before compute starts, later fetches overlap compute (double buffering), and the array
stalls for whatever DRAM time exceeds the compute time. In CALC mode (no bandwidth given) the
bandwidth is taken as what keeps the array stall-free, as SCALE-Sim's CALC mode estimates it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from mlscale.errors import MlscaleError
from mlscale.processors.systolic.array import ArrayConfig
from mlscale.processors.systolic.layers import Layer


@dataclass(frozen=True)
class Folding:
    """How one GEMM is cut into passes over the array.

    Attributes:
        S_r, S_c, T: GEMM dims mapped to rows, columns and time (see module docstring).
        row_folds, col_folds: ceil(S_r / R), ceil(S_c / C).
        cycles_per_fold: stall-free cycles of one pass, fill and drain included.
    """

    S_r: int
    S_c: int
    T: int
    row_folds: int
    col_folds: int
    cycles_per_fold: int

    @property
    def n_folds(self) -> int:
        return self.row_folds * self.col_folds


def fold(layer: Layer, array: ArrayConfig) -> Folding:
    """Fold `layer` onto `array` for its dataflow (table in the module docstring)."""
    R, C = array.rows, array.cols
    M, N, K = layer.M, layer.N, layer.K
    if array.dataflow == "os":
        S_r, S_c, T = M, N, K
        per_fold = T + R + C - 2
    elif array.dataflow == "ws":
        S_r, S_c, T = K, N, M
        per_fold = 2 * R + C + T - 2
    else:  # "is"
        S_r, S_c, T = K, M, N
        per_fold = 2 * R + C + T - 2
    return Folding(S_r, S_c, T, math.ceil(S_r / R), math.ceil(S_c / C), per_fold)


def fold_tiles(layer: Layer, array: ArrayConfig) -> list[tuple[slice, slice, slice]]:
    """The (M, N, K) index ranges each fold computes, in SCALE-Sim's order (column folds outer).

    The union of all tiles is every (m, n, k) MAC of the layer exactly once (tests check this).
    """
    f = fold(layer, array)
    R, C = array.rows, array.cols
    tiles = []
    for fc in range(f.col_folds):
        for fr in range(f.row_folds):
            rows = slice(fr * R, min((fr + 1) * R, f.S_r))
            cols = slice(fc * C, min((fc + 1) * C, f.S_c))
            time = slice(0, f.T)
            if array.dataflow == "os":
                tiles.append((rows, cols, time))  # (M, N, K)
            elif array.dataflow == "ws":
                tiles.append((time, cols, rows))
            else:
                tiles.append((cols, time, rows))
    return tiles


@dataclass(frozen=True)
class LayerTiming:
    """Per-layer figures; cycles are counts (SCALE-Sim's 0-based figures are in `scalesim_*`).

    Attributes:
        name, M, N, K: the layer.
        dataflow, rows, cols: the array.
        row_folds, col_folds, n_folds, cycles_per_fold: the folding.
        compute_cycles: stall-free cycles, n_folds * cycles_per_fold.
        stall_cycles: cycles the array waits on DRAM.
        prefetch_cycles: DRAM time before the first fold can start.
        drain_cycles: DRAM time to write the last fold's outputs after compute ends.
        total_cycles: compute_cycles + stall_cycles.
        total_cycles_incl_prefetch: prefetch + total + drain.
        macs: M * N * K.
        overall_util_pct: macs / (R * C * total_cycles) * 100.
        mapping_eff_pct: mean over folds of PEs mapped / (R * C) * 100.
        compute_util_pct: macs / (R * C * compute_cycles) * 100.
        ifmap_sram_reads, filter_sram_reads, ofmap_sram_writes: words moved between SRAM and array.
        ifmap_dram_reads, filter_dram_reads, ofmap_dram_writes: words moved over the DRAM interface.
        scalesim_total_cycles: SCALE-Sim's "Total Cycles" figure: index of the last cycle
            (compute_cycles - 1 + stall_cycles).
        scalesim_compute_util_pct: SCALE-Sim's "Compute Util %" formula (for WS/IS its per-fold
            cycle count carries C - 1 extra cycles).
        scalesim_overall_util_pct: macs / (R * C * scalesim_total_cycles) * 100.
        scalesim_ofmap_sram_writes: SCALE-Sim's OFMAP write count (for OS it adds R + C per fold).
    """

    name: str
    M: int
    N: int
    K: int
    dataflow: str
    rows: int
    cols: int
    row_folds: int
    col_folds: int
    n_folds: int
    cycles_per_fold: int
    compute_cycles: int
    stall_cycles: int
    prefetch_cycles: int
    drain_cycles: int
    total_cycles: int
    total_cycles_incl_prefetch: int
    macs: int
    overall_util_pct: float
    mapping_eff_pct: float
    compute_util_pct: float
    ifmap_sram_reads: int
    filter_sram_reads: int
    ofmap_sram_writes: int
    ifmap_dram_reads: int
    filter_dram_reads: int
    ofmap_dram_writes: int
    scalesim_total_cycles: int
    scalesim_compute_util_pct: float
    scalesim_overall_util_pct: float
    scalesim_ofmap_sram_writes: int

    def as_dict(self) -> dict:
        return asdict(self)


def check_fits(layer: Layer, array: ArrayConfig) -> None:
    """Raise MlscaleError when an operand cannot be held at all.

    The stationary operand needs one R x C tile in its SRAM (OS: outputs, WS: weights, IS: inputs);
    a streamed operand needs one edge of the array (R or C words) per cycle.
    """
    R, C = array.rows, array.cols
    stationary = {"os": "ofmap", "ws": "filter", "is": "ifmap"}[array.dataflow]
    # streamed edges: OS feeds A down the rows (R) and B across the columns (C); WS and IS feed the
    # streamed operand along the rows (R) and emit outputs along the columns (C)
    need = {"ifmap": R, "filter": C if array.dataflow == "os" else R, "ofmap": C}
    need[stationary] = R * C
    label = {"ifmap": "IfmapSramSzkB", "filter": "FilterSramSzkB", "ofmap": "OfmapSramSzkB"}
    for operand, words in need.items():
        if words > array.sram_words(operand):
            raise MlscaleError(
                f"layer {layer.name!r}: the {operand} SRAM ({label[operand]} = "
                f"{array.sram_words(operand) * array.word_bytes // 1024} -> {array.sram_words(operand)} words) "
                f"cannot hold the {words} words the {array.dataflow.upper()} dataflow keeps on chip "
                f"for a {R}x{C} array"
            )


def time_layer(layer: Layer, array: ArrayConfig) -> LayerTiming:
    """Cycles, utilisation and memory traffic of one layer on `array` (closed form).

    Args:
        layer: the GEMM (or im2col-lowered conv).
        array: the hardware, dataflow included.

    Returns:
        LayerTiming with counts (mlscale) and SCALE-Sim's figures side by side.

    Raises:
        MlscaleError: an operand cannot fit its SRAM at all (see `check_fits`).

    Example:
        >>> t = time_layer(Layer.gemm("sq", 8, 8, 8), ArrayConfig(rows=8, cols=8, dataflow="os"))
        >>> t.compute_cycles, t.scalesim_total_cycles     # 3n - 2 = 22; SCALE-Sim prints 21
        (22, 21)
    """
    check_fits(layer, array)
    f = fold(layer, array)
    R, C = array.rows, array.cols
    df = array.dataflow
    M, N, K = layer.M, layer.N, layer.K
    compute = f.n_folds * f.cycles_per_fold
    macs = layer.macs
    # Sum over folds of PEs used = S_r * S_c, so the per-fold mean has this closed form.
    mapping_eff = f.S_r * f.S_c / (f.n_folds * R * C)
    # SRAM traffic: the operand streamed through the array is re-read once per fold along the
    # other array dimension (SCALE-Sim counts the same: `ifmap_reads`, `filter_reads`, ...).
    if df == "os":
        sram = {"ifmap": f.col_folds * M * K, "filter": f.row_folds * K * N, "ofmap": M * N}
        passes = {"ifmap": f.col_folds, "filter": f.row_folds}
    elif df == "ws":
        sram = {"ifmap": f.col_folds * M * K, "filter": K * N, "ofmap": f.row_folds * M * N}
        passes = {"ifmap": f.col_folds, "filter": 1}
    else:
        sram = {"ifmap": M * K, "filter": f.col_folds * K * N, "ofmap": f.row_folds * M * N}
        passes = {"ifmap": 1, "filter": f.col_folds}
    dram, stall, prefetch, drain = _memory(layer, array, f, sram, passes, compute)
    total = compute + stall
    # SCALE-Sim per-fold utilisation uses its demand-matrix rows + C - 1: for OS that is the
    # skewed row count itself, for WS/IS (unskewed filter/ifmap demand) C - 1 cycles too many.
    ss_fold_cycles = f.cycles_per_fold + (0 if df == "os" else C - 1)
    ss_compute_util = f.S_r * f.S_c * f.T / (f.n_folds * R * C * ss_fold_cycles)
    ss_total = compute - 1 + stall
    return LayerTiming(
        name=layer.name, M=M, N=N, K=K, dataflow=df, rows=R, cols=C,
        row_folds=f.row_folds, col_folds=f.col_folds, n_folds=f.n_folds,
        cycles_per_fold=f.cycles_per_fold, compute_cycles=compute, stall_cycles=stall,
        prefetch_cycles=prefetch, drain_cycles=drain, total_cycles=total,
        total_cycles_incl_prefetch=prefetch + total + drain, macs=macs,
        overall_util_pct=100.0 * macs / (R * C * total),
        mapping_eff_pct=100.0 * mapping_eff,
        compute_util_pct=100.0 * macs / (R * C * compute),
        ifmap_sram_reads=sram["ifmap"], filter_sram_reads=sram["filter"], ofmap_sram_writes=sram["ofmap"],
        ifmap_dram_reads=dram["ifmap"], filter_dram_reads=dram["filter"], ofmap_dram_writes=dram["ofmap"],
        scalesim_total_cycles=ss_total,
        scalesim_compute_util_pct=100.0 * ss_compute_util,
        scalesim_overall_util_pct=100.0 * macs / (R * C * max(ss_total, 1)),
        scalesim_ofmap_sram_writes=sram["ofmap"] + (f.n_folds * (R + C) if df == "os" else 0),
    )


def _memory(layer, array, f, sram, passes, compute):
    """DRAM words per operand and the stall / prefetch / drain cycles (model in module docstring)."""
    unique = {"ifmap": layer.ifmap_words, "filter": layer.K * layer.N}
    dram = {}
    first = {}
    for operand in ("ifmap", "filter"):
        half = array.sram_words(operand) // 2
        fits = unique[operand] <= half
        dram[operand] = unique[operand] * (1 if fits else passes[operand])
        # before fold 0 starts, its share of the operand (at most half the SRAM) must be on chip
        first[operand] = min(half, math.ceil(dram[operand] / f.n_folds) if not fits else unique[operand])
    dram["ofmap"] = sram["ofmap"]
    bw = array.bandwidth_words_per_cycle
    if bw is None:  # CALC mode: bandwidth sized so the array never waits
        return dram, 0, 0, 0
    prefetch = math.ceil(max(first.values()) / bw)
    last_out = math.ceil(dram["ofmap"] / f.n_folds)
    busy = max(
        (dram["ifmap"] - first["ifmap"]) / bw,
        (dram["filter"] - first["filter"]) / bw,
        (dram["ofmap"] - last_out) / bw,
    )
    stall = max(0, math.ceil(busy - compute))
    drain = math.ceil(last_out / bw)
    return dram, stall, prefetch, drain
