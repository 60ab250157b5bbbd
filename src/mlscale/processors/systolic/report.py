"""Reports: a terminal table, CSVs named like SCALE-Sim's, and PNG pictures.

CSV headers copy SCALE-Sim's `COMPUTE_REPORT.csv`, `BANDWIDTH_REPORT.csv` and the read/write columns
of `DETAILED_ACCESS_REPORT.csv` (`simulator.py`, `generate_reports`), with its ", " separator and
trailing comma, so the two can be diffed. By default the cycle columns are counts; with
`scalesim_compatible=True` they are SCALE-Sim's own figures (0-based last-cycle index, its compute
utilisation formula, its OFMAP write count). `mlscale_layers.csv` has every field mlscale computes.
"""

from __future__ import annotations

import csv
from pathlib import Path

from mlscale.processors.systolic.simulator import SimulationResult

COMPUTE_HEADER = ("LayerID, Total Cycles (incl. prefetch), Total Cycles, Stall Cycles, Overall Util %, "
                  "Mapping Efficiency %, Compute Util %,")
BANDWIDTH_HEADER = ("LayerID, Avg IFMAP SRAM BW, Avg FILTER SRAM BW, Avg OFMAP SRAM BW, "
                    "Avg IFMAP DRAM BW, Avg FILTER DRAM BW, Avg OFMAP DRAM BW,")
DETAIL_HEADER = ("LayerID, SRAM IFMAP Reads, SRAM Filter Reads, SRAM OFMAP Writes, "
                 "DRAM IFMAP Reads, DRAM Filter Reads, DRAM OFMAP Writes,")


def compute_rows(result: SimulationResult, scalesim_compatible: bool = False) -> list[list]:
    """Rows of the compute report (SCALE-Sim's columns), one per layer."""
    rows = []
    for lid, t in enumerate(result.layers):
        if scalesim_compatible:
            total, overall, compute_util = t.scalesim_total_cycles, t.scalesim_overall_util_pct, t.scalesim_compute_util_pct
            incl = t.total_cycles_incl_prefetch - 1
        else:
            total, overall, compute_util = t.total_cycles, t.overall_util_pct, t.compute_util_pct
            incl = t.total_cycles_incl_prefetch
        rows.append([lid, incl, total, t.stall_cycles, overall, t.mapping_eff_pct, compute_util])
    return rows


def format_table(result: SimulationResult, scalesim_compatible: bool = False) -> str:
    """A per-layer table for the terminal, with totals and the von Neumann comparison."""
    a = result.array
    bw = "CALC" if a.bandwidth_words_per_cycle is None else f"{a.bandwidth_words_per_cycle:g} words/cycle"
    cycles_label = "cycles(0-based)" if scalesim_compatible else "cycles"
    head = ["layer", "M", "N", "K", "folds", "compute", "stall", cycles_label, "util%", "map%", "naive/array acc"]
    lines = [f"{a.name}: {a.rows}x{a.cols} {a.dataflow.upper()}, SRAM {a.ifmap_sram_kb}/{a.filter_sram_kb}/"
             f"{a.ofmap_sram_kb} KiB (ifmap/filter/ofmap), DRAM bandwidth {bw}"]
    body = []
    for t, c in zip(result.layers, result.comparisons):
        total = t.scalesim_total_cycles if scalesim_compatible else t.total_cycles
        util = t.scalesim_compute_util_pct if scalesim_compatible else t.compute_util_pct
        body.append([t.name, t.M, t.N, t.K, t.n_folds, t.compute_cycles, t.stall_cycles, total,
                     f"{util:.1f}", f"{t.mapping_eff_pct:.1f}", f"{c.access_ratio:.1f}x"])
    naive = sum(c.naive_energy_uj for c in result.comparisons)
    systolic = sum(c.systolic_energy_uj for c in result.comparisons)
    widths = [max(len(str(r[i])) for r in [head, *body]) for i in range(len(head))]
    fmt = lambda r: "  ".join(str(v).rjust(w) if i else str(v).ljust(w) for i, (v, w) in enumerate(zip(r, widths)))
    lines += [fmt(head), fmt(["-" * w for w in widths]), *map(fmt, body)]
    lines.append(
        f"total: {len(result.layers)} layers, {result.macs:,} MACs, {result.compute_cycles:,} compute + "
        f"{sum(t.stall_cycles for t in result.layers):,} stall cycles; energy naive MAC loop "
        f"{naive:,.1f} uJ vs array {systolic:,.1f} uJ ({naive / systolic:.1f}x); simulated in {result.wall_s * 1e3:.1f} ms"
    )
    return "\n".join(lines)


def write_csvs(result: SimulationResult, out_dir: Path, scalesim_compatible: bool = False) -> list[Path]:
    """Write COMPUTE_REPORT.csv, BANDWIDTH_REPORT.csv, DETAILED_ACCESS_REPORT.csv, mlscale_layers.csv."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []

    def scalesim_style(name: str, header: str, rows: list[list]) -> None:
        path = out_dir / name
        text = header + "\n" + "".join(", ".join(str(v) for v in row) + ",\n" for row in rows)
        path.write_text(text)
        paths.append(path)

    scalesim_style("COMPUTE_REPORT.csv", COMPUTE_HEADER, compute_rows(result, scalesim_compatible))
    bw_rows, detail_rows = [], []
    for lid, t in enumerate(result.layers):
        cycles = t.scalesim_total_cycles if scalesim_compatible else t.total_cycles
        cycles = max(cycles, 1)
        span = max(t.total_cycles_incl_prefetch, 1)
        ofmap_writes = t.scalesim_ofmap_sram_writes if scalesim_compatible else t.ofmap_sram_writes
        bw_rows.append([lid, t.ifmap_sram_reads / cycles, t.filter_sram_reads / cycles, ofmap_writes / cycles,
                        t.ifmap_dram_reads / span, t.filter_dram_reads / span, t.ofmap_dram_writes / span])
        detail_rows.append([lid, t.ifmap_sram_reads, t.filter_sram_reads, ofmap_writes,
                            t.ifmap_dram_reads, t.filter_dram_reads, t.ofmap_dram_writes])
    scalesim_style("BANDWIDTH_REPORT.csv", BANDWIDTH_HEADER, bw_rows)
    scalesim_style("DETAILED_ACCESS_REPORT.csv", DETAIL_HEADER, detail_rows)
    path = out_dir / "mlscale_layers.csv"
    with path.open("w", newline="") as f:
        fields = list(result.layers[0].as_dict()) + [f"vn_{k}" for k in result.comparisons[0].as_dict()]
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for t, c in zip(result.layers, result.comparisons):
            writer.writerow({**t.as_dict(), **{f"vn_{k}": v for k, v in c.as_dict().items()}})
    paths.append(path)
    return paths


def plot_wavefront(wavefront, path: Path, title: str = "", max_frames: int = 24) -> Path:
    """PNG of the active PEs cycle by cycle (wavefront from `run_functional(..., record=True)`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    n = wavefront.shape[0]
    frames = np.unique(np.linspace(0, n - 1, min(n, max_frames)).round().astype(int))
    cols = min(8, len(frames))
    rows = -(-len(frames) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.7 * rows + 0.5), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, t in zip(axes.flat, frames):
        ax.imshow(wavefront[t], cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(f"cycle {t}", fontsize=8)
    fig.suptitle(title or "active PEs per cycle (first fold)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def plot_utilisation(result: SimulationResult, path: Path) -> Path:
    """PNG bar chart of per-layer compute utilisation and mapping efficiency."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = [t.name for t in result.layers]
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(6, 0.3 * len(names) + 2), 3.5))
    ax.bar(x - 0.2, [t.compute_util_pct for t in result.layers], 0.4, label="compute util %")
    ax.bar(x + 0.2, [t.mapping_eff_pct for t in result.layers], 0.4, label="mapping efficiency %")
    ax.set_xticks(x, names, rotation=90, fontsize=7)
    ax.set_ylim(0, 100)
    ax.set_ylabel("%")
    a = result.array
    ax.set_title(f"{a.name}: {a.rows}x{a.cols} {a.dataflow.upper()}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)
