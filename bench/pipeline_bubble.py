"""Pipeline parallelism on 2 workers: the bubble measured vs theory for 2 stages x 4/8/16 micro-batches,
and throughput against data parallelism (ddp) on the same 2 workers and the same global batch, for
two jobs that pull opposite ways:

- "wide model, small batch": many parameters per sample. DDP all-reduces every gradient each step
  (here 8.9M parameters, 36 MB); the pipeline sends only one boundary activation (and its
  gradient) per micro-batch (at most 8 x 2048 floats, 64 KB).
- "narrow model, big batch": few parameters per sample. DDP's all-reduce is small and each worker
  computes half the batch; the pipeline adds bubbles and per-micro-batch latency.

Each worker runs 1 thread (shared/PLATFORM.md); every row is a real `mlscale.train` run.

    python bench/pipeline_bubble.py [--quick] [--repeats 1] [--epochs 1] [--device cpu]
"""

import argparse
import os
import statistics
import tempfile

import torch

from mlscale import train
from mlscale.config import build_config

JOBS = {
    "wide model, small batch": {"batch_size": 32, "model": {"name": "mlp", "width": 2048, "depth": 3},
                                "data": {"dataset": "synthetic", "n_samples": 6_000, "n_features": 256}},
    "narrow model, big batch": {"batch_size": 1024, "model": {"name": "mlp", "width": 128, "depth": 4},
                                "data": {"dataset": "synthetic", "n_samples": 60_000, "n_features": 256}},
}
MICROBATCHES = (4, 8, 16)


def run(job: dict, epochs: int, device: str, quick: bool, **changes):
    values = {**job, "epochs": epochs, "progress": False, "workers": 2, "threads": 1, "device": device,
              "log_every_steps": 1000, **changes}
    if quick:
        values["data"] = {**job["data"], "n_samples": job["data"]["n_samples"] // 6}
    cfg = build_config(values)
    with tempfile.TemporaryDirectory() as out:
        cfg.out_dir = out
        return train(cfg)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--schedule", default="1f1b", choices=["gpipe", "1f1b"])
    parser.add_argument("--quick", action="store_true", help="a sixth of the samples: about a minute")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {os.cpu_count()} cores, device {args.device}; 2 workers x 1 thread, "
          f"schedule {args.schedule}; median of {args.repeats}")
    print(f"{'job':<25} {'setup':<22} {'samples/s':>10} {'vs ddp':>7} {'bubble measured':>16} {'theory':>7} "
          f"{'stage busy ms/step':>19}")
    for name, job in JOBS.items():
        rows = [("ddp", {"strategy": "ddp"})] + [
            (f"pipeline 2 x {m} micro", {"strategy": "pipeline", "pipeline": {"n_microbatches": m,
                                                                              "schedule": args.schedule}})
            for m in MICROBATCHES]
        results = {label: [] for label, _ in rows}
        for _ in range(args.repeats):
            for label, changes in rows:  # interleaved, so drifts in machine load hit every row alike
                results[label].append(run(job, args.epochs, args.device, args.quick, **changes))
        ddp = statistics.median(r.samples_per_s for r in results["ddp"])
        for label, _ in rows:
            rs = results[label]
            sps = statistics.median(r.samples_per_s for r in rs)
            bubble = theory = busy = "-"
            if rs[0].pipeline:
                measured = [r.pipeline["bubble_fraction_measured"] for r in rs]
                bubble = f"{statistics.median(measured):.1%}"
                theory = f"{rs[0].pipeline['bubble_fraction_theory']:.1%}"
                busy = " / ".join(f"{s['busy_s'] / max(1, s['steps'] - 1) * 1e3:.1f}" for s in rs[0].pipeline["stages"])
            print(f"{name:<25} {label:<22} {sps:>10,.0f} {sps / ddp:>6.2f}x {bubble:>16} {theory:>7} {busy:>19}")


if __name__ == "__main__":
    main()
