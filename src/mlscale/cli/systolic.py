"""`mlscale systolic`: simulate a systolic array of MAC units (NumPy only; no torch)."""

from __future__ import annotations

import argparse
import re
import time
from pathlib import Path

from mlscale.cli.args import ArgumentParser
from mlscale.errors import MlscaleError

EXAMPLES = """examples:
  mlscale systolic --gemm 64x64x64 --array 8x8 --dataflow ws
  mlscale systolic --topology net.csv --config google.cfg
  mlscale systolic --topology net.csv --config tpu-v1 --scalesim-compatible
  mlscale systolic --functional --gemm 6x5x7 --array 4x4 --dataflow os
built-in configs: tpu-v1, google, scale, small"""


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="mlscale systolic",
        description="Simulate a systolic array of MAC units cycle by cycle (OS/WS/IS dataflows).",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    what = p.add_argument_group("workload (one of)")
    what.add_argument("--topology", metavar="CSV", help="SCALE-Sim topology CSV (conv or GEMM layers)")
    what.add_argument("--topology-kind", choices=("auto", "conv", "gemm"), default="auto")
    what.add_argument("--gemm", metavar="MxKxN", action="append",
                      help="one GEMM (M x K) @ (K x N); repeatable")
    hw = p.add_argument_group("array")
    hw.add_argument("--config", default=None, metavar="CFG",
                    help="SCALE-Sim .cfg file or built-in name (default: scale, or small for --functional)")
    hw.add_argument("--array", metavar="RxC", help="override array size, e.g. 128x128")
    hw.add_argument("--dataflow", help="override dataflow: os, ws or is")
    hw.add_argument("--bandwidth", type=float, metavar="WORDS", help="DRAM words/cycle per operand interface")
    out = p.add_argument_group("output")
    out.add_argument("--functional", action="store_true",
                     help="run the GEMM(s) PE by PE on random integers and check the product against A @ B")
    out.add_argument("--scalesim-compatible", action="store_true",
                     help="report SCALE-Sim's figures (0-based Total Cycles, its util and write counts)")
    out.add_argument("--out", metavar="DIR", help="output folder (default runs/systolic-<timestamp>)")
    out.add_argument("--no-plots", action="store_true", help="skip the PNG pictures")
    out.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                     help="progress bar (default: on a terminal with >= 20 layers)")
    out.add_argument("--seed", type=int, default=0, help="random operands for --functional")
    return p


def run(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if bool(args.topology) == bool(args.gemm):
        raise MlscaleError("give exactly one workload: --topology CSV or --gemm MxKxN")
    from mlscale.processors import systolic as sy
    from mlscale.processors.systolic import report
    from mlscale.processors.systolic.array import parse_array_dims

    dims = parse_array_dims(args.array) if args.array else None
    if args.dataflow is not None:
        from mlscale.processors.systolic.array import check_dataflow

        check_dataflow(args.dataflow)
    if args.bandwidth is not None and not args.bandwidth > 0:
        raise MlscaleError(f"--bandwidth must be > 0, got {args.bandwidth}")
    workload = args.topology or [sy.Layer.gemm(f"gemm{i}_{g}", *_gemm_dims(g)) for i, g in enumerate(args.gemm)]
    out_dir = Path(args.out or f"runs/systolic-{time.strftime('%Y%m%d-%H%M%S')}")
    if args.functional:
        return _functional(args, workload, dims, out_dir)
    result = sy.simulate(workload, args.config or "scale", dataflow=args.dataflow, array=dims,
                         bandwidth_words_per_cycle=args.bandwidth, topology_kind=args.topology_kind,
                         progress=args.progress)
    print(report.format_table(result, args.scalesim_compatible))
    written = report.write_csvs(result, out_dir, args.scalesim_compatible)
    if not args.no_plots:
        written.append(report.plot_utilisation(result, out_dir / "utilisation.png"))
    print(f"wrote {', '.join(p.name for p in written)} to {out_dir}/")
    return 0


def _gemm_dims(text: str) -> tuple[int, int, int]:
    match = re.fullmatch(r"\s*(\d+)\s*x\s*(\d+)\s*x\s*(\d+)\s*", text, re.IGNORECASE)
    if not match or min(int(g) for g in match.groups()) <= 0:
        raise MlscaleError(f"--gemm: expected MxKxN with positive integers (e.g. 64x64x64), got {text!r}")
    return tuple(int(g) for g in match.groups())


def _functional(args, workload, dims, out_dir: Path) -> int:
    import numpy as np

    from mlscale.processors import systolic as sy
    from mlscale.processors.systolic import report

    if args.topology:
        raise MlscaleError("--functional runs --gemm workloads (a small product, PE by PE)")
    hw = sy.load_config(args.config or "small")
    rows, cols = dims or (hw.rows, hw.cols)
    from mlscale.processors.systolic.array import check_dataflow

    dataflow = check_dataflow(args.dataflow or hw.dataflow)
    rng = np.random.default_rng(args.seed)
    ok = True
    for layer in workload:
        hw_l = hw.with_(rows=rows, cols=cols, dataflow=dataflow)
        f = sy.fold(layer, hw_l)
        if f.n_folds * f.cycles_per_fold * rows * cols > 5e8:  # PE-cycles: minutes of NumPy beyond this
            raise MlscaleError(f"--functional: {layer.name} is too large to run PE by PE; use timing mode")
        A = rng.integers(-128, 128, (layer.M, layer.K))
        B = rng.integers(-128, 128, (layer.K, layer.N))
        r = sy.run_functional(A, B, rows, cols, dataflow, record=not args.no_plots)
        timed = sy.time_layer(layer, hw_l)
        equal = bool(np.array_equal(r.product, A @ B))
        ok &= equal and r.n_macs == layer.macs and r.cycles == timed.compute_cycles
        print(f"{layer.name}: ({layer.M}x{layer.K}) @ ({layer.K}x{layer.N}) on {rows}x{cols} {dataflow.upper()}: "
              f"product == A @ B: {equal}; MACs {r.n_macs} (M*N*K = {layer.macs}); "
              f"{r.n_folds} folds x {r.cycles_per_fold} cycles = {r.cycles} cycles "
              f"(timing mode: {timed.compute_cycles})")
        if not args.no_plots:
            out_dir.mkdir(parents=True, exist_ok=True)
            path = report.plot_wavefront(r.wavefront, out_dir / f"wavefront_{layer.name}.png",
                                         f"{layer.name} on {rows}x{cols} {dataflow.upper()}: active PEs, fold 0")
            print(f"wrote {path}")
    return 0 if ok else 1
