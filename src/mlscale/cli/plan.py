"""`mlscale plan`: calibrate on this machine, predict time and cost for any worker count and device,
answer the deadline and diminishing-returns questions, and check what can be checked here."""

from __future__ import annotations

import json
from pathlib import Path

from mlscale.cli.args import ArgumentParser
from mlscale.runs import atomic_write_text

USAGE = ("mlscale plan [--config FILE.yaml] --workers 1-1024 --device cpu,h100-sxm,... [--deadline 2h] "
         "[--prices FILE] [--validate] [--FIELD VALUE ...]")


def run(argv: list[str]) -> int:
    parser = ArgumentParser(prog="mlscale plan", usage=USAGE,
                                     description="Predict throughput, efficiency, time and cost per worker count and "
                                                 "device from measurements taken here.")
    parser.add_argument("--config", help="YAML config file of the job (mlscale train's fields)")
    parser.add_argument("--workers", default="1-1024", help="worker counts: 1,2,4 or 1-1024 (powers of two) [1-1024]")
    parser.add_argument("--device", help="devices from the catalog to predict for, comma-separated [this machine's: cpu, or cuda]; the job's own device is the config file's `device` field")
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
    from mlscale.planning import report
    from mlscale.planning.planner import plan

    config = build_config(load_yaml(known.config) if known.config else {}, parse_overrides(rest))

    def calibrated(cal):
        print(report.calibration_text(cal), flush=True)

    result = plan(config, known.workers, known.device, deadline=known.deadline, prices=known.prices,
                  min_efficiency=known.min_efficiency, steps=known.steps, on_calibrated=calibrated)
    print(report.prediction_table(result.predictions))
    print(report.answers_text(result.answers, result.cheapest, known.min_efficiency))
    checks = []
    if known.validate:
        from mlscale.planning.validate import local_counts, validate

        counts = sorted({p.n_workers for p in result.predictions})
        checks = validate(config, local_counts(counts), steps=known.steps)
        print(report.validation_text(checks))
    if known.out:
        _write(Path(known.out), result, checks, config)
    return 0


def _write(out: Path, result, checks, config) -> None:
    from dataclasses import asdict

    from mlscale.planning.sweep import plot_sweep

    out.mkdir(parents=True, exist_ok=True)
    payload = {"calibration": result.calibration.to_dict(),
               "predictions": [asdict(p) | {"step_s": p.step.step_s} for p in result.predictions],
               "validation": [asdict(c) | {"error": c.error} for c in checks]}
    atomic_write_text(out / "plan.json", json.dumps(payload, indent=2, default=str) + "\n")
    first = [p for p in result.predictions if p.device == result.predictions[0].device and p.steps_total > 0]
    paths = plot_sweep(first, out, title=f"{config.model.name} on {first[0].device} (predicted)", predicted=True) if first else []
    print(f"outputs        {out}/  plan.json {' '.join(p.name for p in paths)}")
