"""`mlscale plan`: calibrate on this machine, predict time and cost for any worker count and device,
answer the deadline and diminishing-returns questions, and check what can be checked here."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from mlscale.errors import MlscaleError

USAGE = ("mlscale plan [--config FILE.yaml] --workers 1-1024 --device cpu,h100-sxm,... [--deadline 2h] "
         "[--prices FILE] [--validate] [--FIELD VALUE ...]")


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="mlscale plan", usage=USAGE,
                                     description="Predict throughput, efficiency, time and cost per worker count and "
                                                 "device from measurements taken here.")
    parser.add_argument("--config", help="YAML config file of the job (mlscale train's fields)")
    parser.add_argument("--workers", default="1-1024", help="worker counts: 1,2,4 or 1-1024 (powers of two) [1-1024]")
    parser.add_argument("--device", default="cpu", help="devices from the catalog, comma-separated [cpu]")
    parser.add_argument("--deadline", help="the time the run must finish in: 90m, 2h, 1.5d")
    parser.add_argument("--prices", help="YAML price table: device name -> price per device-hour")
    parser.add_argument("--min-efficiency", type=float, default=0.5,
                        help="adding workers stops paying below this scaling efficiency [0.5]")
    parser.add_argument("--validate", action="store_true",
                        help="also run the worker counts this machine holds and print predicted vs measured")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per calibration or validation run [20]")
    parser.add_argument("--out", help="write plan.json and the PNG plots (first device) to this directory")
    known, rest = parser.parse_known_args(argv)
    from mlscale.cli.train import parse_overrides
    from mlscale.config import build_config, load_yaml
    from mlscale.planning.catalog import load_catalog, select
    from mlscale.planning.prices import load_prices, price_of
    from mlscale.planning.workers import parse_duration, parse_workers

    # every input is checked before the minutes of calibration start
    config = build_config(load_yaml(known.config) if known.config else {}, parse_overrides(rest))
    counts = parse_workers(known.workers)
    names = [n.strip() for n in known.device.split(",") if n.strip()]
    if not names:
        raise MlscaleError("--device: name at least one device (e.g. cpu,h100-sxm)")
    select(load_catalog(host_matmul_flops=0.0), names)
    deadline_s = parse_duration(known.deadline) if known.deadline else None
    prices = load_prices(known.prices) if known.prices else None
    for name in names:
        price_of(prices, name, known.prices)
    if known.steps < 1 or not 0 < known.min_efficiency <= 1:
        raise MlscaleError("--steps must be >= 1 and --min-efficiency in (0, 1]")

    from mlscale.planning import report
    from mlscale.planning.calibrate import calibrate
    from mlscale.planning.planner import answer, cheapest_overall, predict

    device = "cuda" if config.device.startswith("cuda") else "cpu"
    print("calibrating: a short run of the job, the all-reduce benchmark, a matmul benchmark ...", flush=True)
    cal = calibrate(config, steps=known.steps, threads=config.threads or (os.cpu_count() or 1), device=device)
    print(report.calibration_text(cal))
    devices = select(load_catalog(cal.matmul_flops), names)
    dtype = "fp32" if config.precision == "fp32" else "bf16"
    predictions = predict(cal, devices, counts, prices, dtype=dtype)
    print(report.prediction_table(predictions))
    answers = answer(predictions, deadline_s, known.min_efficiency)
    print(report.answers_text(answers, cheapest_overall(answers), known.min_efficiency))
    checks = []
    if known.validate:
        from mlscale.planning.validate import local_counts, validate

        checks = validate(config, local_counts(counts), steps=known.steps, link_fit=cal.link_fit)
        print(report.validation_text(checks))
    if known.out:
        _write(Path(known.out), cal, predictions, checks, config)
    return 0


def _write(out: Path, cal, predictions, checks, config) -> None:
    from dataclasses import asdict

    from mlscale.planning.sweep import plot_sweep

    out.mkdir(parents=True, exist_ok=True)
    payload = {"calibration": cal.to_dict(), "predictions": [asdict(p) | {"step_s": p.step.step_s} for p in predictions],
               "validation": [asdict(c) | {"error": c.error} for c in checks]}
    (out / "plan.json").write_text(json.dumps(payload, indent=2, default=str) + "\n")
    first = [p for p in predictions if p.device == predictions[0].device and p.steps_total > 0]
    paths = plot_sweep(first, out, title=f"{config.model.name} on {first[0].device} (predicted)", predicted=True) if first else []
    print(f"outputs        {out}/  plan.json {' '.join(p.name for p in paths)}")
