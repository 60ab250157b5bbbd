"""`mlscale scale`: really run the job at each worker count and report how it scales, with plots."""

from __future__ import annotations

import json
from pathlib import Path

from mlscale.cli.args import ArgumentParser
from mlscale.runs import atomic_write_text

from mlscale.errors import MlscaleError

USAGE = "mlscale scale [--config FILE.yaml] --workers 1,2,... [--steps N] [--prices FILE] [--out DIR] [--FIELD VALUE ...]"


def run(argv: list[str]) -> int:
    parser = ArgumentParser(prog="mlscale scale", usage=USAGE, add_help=True,
                                     description="Run the job for a few steps at each worker count and report "
                                                 "throughput, speed-up, efficiency, the step's split, time and cost.")
    parser.add_argument("--config", help="YAML config file of the job (mlscale train's fields)")
    parser.add_argument("--workers", default="1,2", help="worker counts: 1,2,4 or 1-8 (powers of two) [1,2]")
    parser.add_argument("--steps", type=int, default=20, help="timed optimizer steps per count, after a warm-up [20]")
    parser.add_argument("--prices", help="YAML price table: device name -> price per device-hour")
    parser.add_argument("--price-as", help="the price table's name for this job's device [cpu or cuda]")
    parser.add_argument("--out", help="directory for scale.json and the PNG plots [runs/scale]")
    known, rest = parser.parse_known_args(argv)
    from mlscale.cli.train import parse_overrides
    from mlscale.config import build_config, load_yaml
    from mlscale.planning.prices import load_prices, price_of
    from mlscale.planning.workers import parse_workers

    config = build_config(load_yaml(known.config) if known.config else {}, parse_overrides(rest))
    counts = parse_workers(known.workers)
    if known.steps < 1:
        raise MlscaleError("--steps must be at least 1")
    if known.price_as:
        device_name = known.price_as
    else:
        from mlscale.processors.devices import choose_device

        device_name = "cuda" if choose_device(config.device).device.type == "cuda" else "cpu"
    price = price_of(load_prices(known.prices), device_name, known.prices) if known.prices else None
    out = Path(known.out or Path(config.out_dir) / "scale")

    from mlscale.planning import report
    from mlscale.planning.sweep import plot_sweep, rows_as_dicts, sweep

    print(f"sweeping {config.model.name} on {config.data.dataset}, batch {config.batch_size} per worker, "
          f"{known.steps} timed steps at each of {', '.join(map(str, counts))} worker(s)", flush=True)
    rows = sweep(config, counts, steps=known.steps, price_per_hour=price)
    print(report.sweep_table(rows))
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "scale.json", json.dumps({"workers": counts, "price_per_hour": price, "device": device_name,
                                                            "rows": rows_as_dicts(rows)}, indent=2) + "\n")
    paths = plot_sweep(rows, out, title=f"{config.model.name}, batch {config.batch_size}/worker (measured)")
    print(f"times are per worker per step (ms) and for the configured {config.epochs} epochs; comm is the all-reduce "
          f"in flight, overlapping backward")
    print(f"outputs        {out}/  scale.json {' '.join(p.name for p in paths)}")
    return 0
