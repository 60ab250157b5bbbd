"""`mlscale devices`: every processor here, its measured matmul FLOP/s and bandwidth, vendor peaks."""

from __future__ import annotations

import argparse
import json
import os
import sys

from mlscale.cli.args import ArgumentParser, png_file
from mlscale.errors import MlscaleError

EXAMPLES = """examples:
  mlscale devices                      # table; measures once, then reads this machine's cache
  mlscale devices --remeasure --quick  # measure again with smaller operands
  mlscale devices --json
  mlscale devices --roofline roofline.png
cache: ~/.cache/mlscale (MLSCALE_CACHE_DIR overrides)"""


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="mlscale devices", epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Every processor present, with measured peak matmul FLOP/s per dtype and memory "
                                   "bandwidth next to the vendor peak.")
    p.add_argument("--json", action="store_true", help="print JSON instead of the table")
    p.add_argument("--remeasure", action="store_true", help="measure again instead of reading the cache")
    p.add_argument("--quick", action="store_true", help="smaller operands when measuring (seconds on a CPU)")
    p.add_argument("--repeats", type=int, default=5, help="timed samples per figure (median and spread)")
    p.add_argument("--threads", type=int, help="torch intra-op threads on the CPU (default: torch's, one per core)")
    p.add_argument("--roofline", type=png_file, metavar="PNG", help="also draw the devices' measured rooflines to this PNG")
    return p


def cache_dir() -> str | None:
    """MLSCALE_CACHE_DIR if set (the library itself reads no environment)."""
    return os.environ.get("MLSCALE_CACHE_DIR") or None


def set_threads(threads: int | None) -> None:
    """Set torch's intra-op threads (on a busy machine, fewer threads than cores times far better)."""
    if threads is None:
        return
    if threads < 1:
        raise MlscaleError(f"--threads must be >= 1, got {threads}")
    import torch

    torch.set_num_threads(threads)


def run(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    set_threads(args.threads)
    if args.repeats < 1:
        raise MlscaleError(f"--repeats must be >= 1, got {args.repeats}")
    from mlscale.processors.devices import cache_path, discover_devices, measure_devices

    found = discover_devices()
    if args.remeasure or not cache_path(cache_dir(), found).exists():
        print("measuring matmul FLOP/s and memory bandwidth of "
              f"{', '.join(d.index for d in found if d.usable)} (once per machine; cached)", file=sys.stderr)
    measured = measure_devices(remeasure=args.remeasure, cache_dir=cache_dir(), quick=args.quick, repeats=args.repeats)
    if args.roofline:
        from mlscale.processors.roofline import plot_roofline

        plot_roofline(measured, args.roofline)
    if args.json:
        from dataclasses import asdict

        print(json.dumps({"devices": [d.to_dict() for d in found], "measured": [asdict(m) for m in measured],
                          "cache": str(cache_path(cache_dir(), found))}, indent=1))
        return 0
    print(format_devices(found))
    print()
    print(format_measured(measured))
    print(f"\ncache: {cache_path(cache_dir(), found)} (measured {measured[0].measured_at if measured else '-'}; "
          "--remeasure to refresh)")
    if args.roofline:
        print(f"roofline: {args.roofline}")
    return 0


def format_devices(found) -> str:
    rows = [("device", "name", "status", "detail")]
    for d in found:
        if d.kind == "cpu":
            det = d.detail
            n = det["torch_threads"]
            detail = (f"{det['cores']} cores, torch uses {n} thread{'s' if n != 1 else ''}"
                      + (f", {det['mhz']:.0f} MHz" if det.get("mhz") else "") + f", SIMD {' '.join(det['simd']) or '-'}")
        elif d.kind == "cuda" and d.usable:
            det = d.detail
            detail = f"{det['memory_bytes'] / 2**30:.1f} GiB, {det['sms']} SMs, compute capability {det['capability']}"
        else:
            detail = d.error
        rows.append((d.index, d.name, d.status, detail))
    return _table(rows)


def format_measured(measured) -> str:
    rows = [("device", "measured", "median", "spread (min-max)", "vendor peak", "% of peak")]
    for m in measured:
        for dtype, flops in m.matmul_flops.items():
            lo, hi = m.matmul_spread.get(dtype, (flops, flops))
            peak = m.vendor_matmul_flops.get(dtype)
            rows.append((m.index, f"matmul {dtype} (n={m.matmul_n})", f"{flops / 1e9:,.1f} GFLOP/s",
                         f"{lo / 1e9:,.1f}-{hi / 1e9:,.1f}", f"{peak / 1e9:,.0f} GFLOP/s" if peak else "unknown",
                         f"{100 * flops / peak:.0f}%" if peak else "-"))
        lo, hi = m.mem_bandwidth_spread
        peak = m.vendor_mem_bandwidth
        rows.append((m.index, f"copy ({m.copy_bytes / 2**20:.0f} MiB)", f"{m.mem_bandwidth / 1e9:,.1f} GB/s",
                     f"{lo / 1e9:,.1f}-{hi / 1e9:,.1f}", f"{peak / 1e9:,.0f} GB/s" if peak else "unknown",
                     f"{100 * m.mem_bandwidth / peak:.0f}%" if peak else "-"))
        for what, err in m.errors.items():
            rows.append((m.index, what, "not measured", err, "", ""))
    out = _table(rows)
    sources = {m.vendor_source for m in measured if m.vendor_source}
    return out + "".join(f"\nvendor peak: {s}" for s in sorted(sources))


def _table(rows: list[tuple]) -> str:
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)
