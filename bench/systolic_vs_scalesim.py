"""mlscale's systolic simulator vs SCALE-Sim (PyPI `scalesim`), same configs and topologies, one run.

For each (topology, config, dataflow) it runs SCALE-Sim as a subprocess (its own venv: SCALE-Sim
needs numpy < 2.4), parses its COMPUTE_REPORT.csv, runs `mlscale.simulate` on the same files, and
prints per-layer cycles side by side and the wall-time ratio.

Compute cycles compared: SCALE-Sim's "Total Cycles" minus its "Stall Cycles" is the 0-based index of
the last stall-free cycle; mlscale's count is that plus one (`scalesim_total_cycles` holds SCALE-Sim's
figure). Stall and "incl. prefetch" cycles come from different memory models (SCALE-Sim: trace-driven buffers; mlscale:
a first-order overlap model) and are printed, not required to agree.

Usage:
    python bench/systolic_vs_scalesim.py --scalesim-python /tmp/scalesim-venv/bin/python
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import mlscale
from mlscale.processors.systolic import load_config

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "scalesim"
DEFAULT_CASES = [
    # (topology, kind, config)
    ("topologies/alexnet.csv", "conv", "configs/scale.cfg"),
    ("topologies/test_mnk_input.csv", "gemm", "configs/scale.cfg"),
    ("topologies/vit_s.csv", "gemm", "configs/scale.cfg"),
    # user bandwidth (10 words/cycle): stall and prefetch figures from the two memory models
    ("topologies/test_mnk_input.csv", "gemm", "configs/google.cfg"),
]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scalesim-python", default=os.environ.get("SCALESIM_PYTHON", sys.executable),
                   help="python of a venv where `import scalesim` works (env SCALESIM_PYTHON)")
    p.add_argument("--shared", type=Path, default=SHARED, help="folder with configs/, topologies/, layout_test.csv")
    p.add_argument("--case", action="append", metavar="TOPOLOGY:KIND:CONFIG",
                   help="relative to --shared; repeatable (default: alexnet conv + two GEMM files on scale.cfg)")
    p.add_argument("--dataflows", default="os,ws,is")
    p.add_argument("--repeat", type=int, default=5, help="mlscale runs per case (best time kept)")
    args = p.parse_args()
    cases = [tuple(c.split(":")) for c in args.case] if args.case else DEFAULT_CASES
    layout = args.shared / "layout_test.csv"
    work = Path(tempfile.mkdtemp(prefix="systolic-bench-"))
    print(f"scalesim python: {args.scalesim_python}\nscratch: {work}\n")
    totals = {"scalesim_s": 0.0, "mlscale_s": 0.0, "layers": 0, "agree": 0}
    per_df = {}
    for topo_rel, kind, cfg_rel in cases:
        topo, cfg = args.shared / topo_rel, args.shared / cfg_rel
        for df in args.dataflows.split(","):
            cfg_df = work / f"{cfg.stem}_{df}.cfg"
            cfg_df.write_text(re.sub(r"(?im)^(\s*Dataflow\s*[:=]\s*)\w+", rf"\g<1>{df}", cfg.read_text()))
            out = work / f"{topo.stem}_{cfg.stem}_{df}"
            t0 = time.perf_counter()
            proc = subprocess.run(
                [args.scalesim_python, "-m", "scalesim.scale", "-c", str(cfg_df), "-t", str(topo),
                 "-l", str(layout), "-p", str(out), "-i", kind, "-s", "N"],
                capture_output=True, text=True,
            )
            ss_s = time.perf_counter() - t0
            if proc.returncode != 0:
                print(proc.stdout[-2000:], proc.stderr[-2000:])
                raise SystemExit(f"SCALE-Sim failed on {topo.name} {df}")
            report = next(out.rglob("COMPUTE_REPORT.csv"))
            ss_rows = [[c.strip() for c in line.split(",")] for line in report.read_text().splitlines()[1:] if line.strip()]
            best = float("inf")
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                res = mlscale.simulate(topo, load_config(cfg_df), topology_kind=kind, progress=False)
                best = min(best, time.perf_counter() - t0)
            print(f"== {topo.name} on {cfg.name}, dataflow {df.upper()}: "
                  f"SCALE-Sim {ss_s:.2f} s, mlscale {best * 1e3:.2f} ms, ratio {ss_s / best:,.0f}x")
            print(f"{'layer':<10} {'SS total':>10} {'SS stall':>9} {'SS compute':>11} {'ml compute-1':>13} "
                  f"{'ml stall':>9} {'ml count':>10}  same {'SS incl.pref':>13} {'ml incl.pref':>13}")
            for row, t in zip(ss_rows, res.layers):
                ss_incl, ss_total, ss_stall = int(float(row[1])), int(float(row[2])), int(float(row[3]))
                ss_compute = ss_total - ss_stall
                ml = t.compute_cycles - 1
                same = ss_compute == ml
                print(f"{t.name:<10} {ss_total:>10} {ss_stall:>9} {ss_compute:>11} {ml:>13} "
                      f"{t.stall_cycles:>9} {t.compute_cycles:>10}  {'yes ' if same else 'NO  '} {ss_incl:>13} "
                      f"{t.total_cycles_incl_prefetch:>13}")
                d = per_df.setdefault(df, [0, 0])
                d[0] += 1
                d[1] += same
                totals["layers"] += 1
                totals["agree"] += same
            if len(ss_rows) != len(res.layers):
                print(f"!! layer count differs: SCALE-Sim {len(ss_rows)}, mlscale {len(res.layers)}")
            totals["scalesim_s"] += ss_s
            totals["mlscale_s"] += best
            print()
    print("compute cycles identical to SCALE-Sim, per dataflow: "
          + ", ".join(f"{df.upper()} {a}/{n}" for df, (n, a) in per_df.items()))
    print(f"all: {totals['agree']}/{totals['layers']} layers; wall time SCALE-Sim {totals['scalesim_s']:.1f} s, "
          f"mlscale {totals['mlscale_s'] * 1e3:.1f} ms, ratio {totals['scalesim_s'] / totals['mlscale_s']:,.0f}x")
    return 0 if totals["agree"] == totals["layers"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
