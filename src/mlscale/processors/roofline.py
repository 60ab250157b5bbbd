"""The roofline picture (Williams, Waterman and Patterson, CACM 2009): attainable FLOP/s against
arithmetic intensity (FLOPs per byte moved), one line per device and dtype,
min(peak FLOP/s, bandwidth x intensity), with a model's layers placed at their intensity and the
FLOP/s they reached. Left of a device's ridge a layer is memory-bound: a faster ALU would not help.
"""

from __future__ import annotations

from pathlib import Path

from mlscale.errors import MlscaleError
from mlscale.processors.devices import MeasuredDevice


def plot_roofline(devices: list[MeasuredDevice], path: str | Path, profile=None) -> Path:
    """Write a roofline PNG of `devices` (measured roofs), with `profile`'s layers if given.

    Args:
        devices: measured devices; each dtype measured gives a roof.
        path: the PNG to write.
        profile: a `ModelProfile`; its layers with FLOPs are placed at (intensity, achieved FLOP/s)
            on each device they were timed on.

    Raises:
        MlscaleError: nothing to draw, or the file cannot be written.
    """
    import matplotlib

    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt

    drawable = [d for d in devices if d.mem_bandwidth > 0 and d.matmul_flops]
    if not drawable:
        raise MlscaleError("no measured device with both a matmul and a bandwidth figure to draw")
    layers = [l for l in (profile.layers if profile else []) if l.flops and l.bytes_moved]
    lo = min([0.1, *(l.intensity / 2 for l in layers)])
    hi = max([1e3, *(2 * d.ridge_intensity(k) for d in drawable for k in d.matmul_flops),
              *(2 * l.intensity for l in layers)])
    xs = [lo * (hi / lo) ** (i / 200) for i in range(201)]
    fig, ax = plt.subplots(figsize=(8, 5.5))
    markers = "os^Dv"
    for i, d in enumerate(drawable):
        colour = f"C{i}"
        # fp32 solid and bold; the other dtypes thinner, dashed
        for j, (dtype, peak) in enumerate(sorted(d.matmul_flops.items(), key=lambda kv: kv[0] != "fp32")):
            ax.loglog(xs, [min(peak, d.mem_bandwidth * x) for x in xs], color=colour, lw=2 if dtype == "fp32" else 1,
                      ls=["-", "--", ":", "-."][j % 4],
                      label=f"{d.index} {d.name} {dtype}: {peak / 1e9:,.0f} GFLOP/s, {d.mem_bandwidth / 1e9:,.1f} GB/s")
        points = [(l.intensity, l.achieved_flops(d.index)) for l in layers if l.achieved_flops(d.index) > 0]
        if points:
            ax.scatter(*zip(*points), color=colour, marker=markers[i % len(markers)], zorder=3,
                       label=f"{profile.model} layers on {d.index} (batch {profile.batch})")
            for l in layers:
                if l.achieved_flops(d.index) > 0:
                    ax.annotate(l.name, (l.intensity, l.achieved_flops(d.index)), fontsize=6, alpha=0.7,
                                xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("arithmetic intensity (FLOPs per byte moved)")
    ax.set_ylabel("FLOP/s")
    ax.set_title("Roofline: measured roofs" + (f", {profile.model} layers" if profile else ""))
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path = Path(path)
    try:
        fig.savefig(path, dpi=120)
    except OSError as err:
        raise MlscaleError(f"cannot write {path}: {err.strerror or err}") from err
    finally:
        plt.close(fig)
    return path
