"""Data-parallel scaling on this machine: the same compute-bound job on 1 worker and on 2 workers
(one thread per worker), plus 1 worker with all cores' threads for comparison; prints samples/s,
speed-up and scaling efficiency, and the step's split into all-reduce in flight vs the rest.

    python bench/dp_scaling.py [--repeats 3] [--epochs 2] [--strategy ddp|fsdp]
"""

import argparse
import os
import statistics
import tempfile

import torch

from mlscale import train
from mlscale.config import build_config

JOB = {
    "batch_size": 256,
    "data": {"dataset": "synthetic", "n_samples": 40_000, "n_features": 256},
    "model": {"name": "mlp", "width": 1024, "depth": 3},
}


def run(workers: int, threads: int, epochs: int, strategy: str, global_batch: int):
    cfg = build_config({**JOB, "epochs": epochs, "progress": False, "workers": workers, "threads": threads,
                        "strategy": strategy})
    # same global batch for every row: the per-worker batch shrinks as workers are added
    cfg.batch_size = global_batch // workers
    with tempfile.TemporaryDirectory() as out:
        cfg.out_dir = out
        return train(cfg)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--strategy", default="ddp", choices=["ddp", "fsdp"])
    parser.add_argument("--global-batch", type=int, default=JOB["batch_size"])
    args = parser.parse_args()
    cores = os.cpu_count()
    rows = [("1 worker x 1 thread", 1, 1), (f"2 workers x 1 thread ({args.strategy})", 2, 1),
            (f"1 worker x {cores} threads", 1, cores)]
    print(f"torch {torch.__version__}, {cores} cores; MLP 256-1024x3-10 on 40k synthetic samples, "
          f"global batch {args.global_batch}; median of {args.repeats}")
    results = {label: [] for label, _, _ in rows}
    for _ in range(args.repeats):
        for label, workers, threads in rows:
            results[label].append(run(workers, threads, args.epochs, args.strategy, args.global_batch))
    base = statistics.median(r.samples_per_s for r in results[rows[0][0]])
    print(f"{'setup':<32} {'samples/s':>10} {'speed-up':>9} {'efficiency':>11} {'step ms':>8} {'all-reduce ms':>14}")
    for label, workers, _ in rows:
        rs = results[label]
        sps = statistics.median(r.samples_per_s for r in rs)
        step = statistics.median(r.step_time_s for r in rs) * 1e3
        comm = rs[0].comm_time_s_per_step
        comm_txt = f"{statistics.median(r.comm_time_s_per_step for r in rs) * 1e3:.2f}" if comm is not None else "-"
        print(f"{label:<32} {sps:>10,.0f} {sps / base:>8.2f}x {sps / base / workers:>10.0%} {step:>8.2f} {comm_txt:>14}")


if __name__ == "__main__":
    main()
