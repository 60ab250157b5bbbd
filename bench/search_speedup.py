"""Parallel search speed-up: the same budget of trials (same space, random sampler, no pruning,
same base job) run by `mlscale tune` sequentially (`--parallel 1`: one process, one trial at a
time, torch on all cores' threads, as a plain Optuna `study.optimize` loop runs) and with
`--parallel 2` (two worker processes, one thread each), for a few sampler seeds. Each run is a
fresh `mlscale tune` process, so each pays its own start-up (Python, torch, the workers' spawn).
Prints wall times, the speed-up, and the best test accuracy each found.

    python bench/search_speedup.py [--trials 8] [--seeds 2] [--epochs 4] [--peer-threads 0] [--identical] [--quick]
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

SPACE = {"optim.lr": {"type": "float", "low": 3e-4, "high": 3e-2, "log": True},
         "model.width": {"type": "int", "low": 64, "high": 256, "log": True},
         "model.depth": {"type": "int", "low": 1, "high": 3},
         "optim.name": ["sgd", "adamw"]}
# --identical: only the learning rate varies, so every trial costs the same on both sides and the
# ratio measures the parallelism, not which configurations the two samplers happened to draw
IDENTICAL = {"optim.lr": {"type": "float", "low": 3e-4, "high": 3e-2, "log": True}}


def run(parallel: int, args, seed: int) -> tuple[float, float]:
    """(wall seconds of the whole `mlscale tune` command, best test accuracy)."""
    with tempfile.TemporaryDirectory() as out:
        space = Path(out) / "space.yaml"
        space.write_text(yaml.safe_dump(IDENTICAL if args.identical else SPACE))
        cmd = [sys.executable, "-m", "mlscale", "tune", "--space", str(space), "--trials", str(args.trials),
               "--parallel", str(parallel), "--sampler", "random", "--pruner", "none", "--seed", str(seed),
               "--out-dir", out, "--quiet", "--epochs", str(args.epochs), "--batch_size", "32",
               "--threads", str(args.peer_threads if parallel == 1 else 0)]
        if args.identical:
            cmd += ["--model.width", "128"]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        wall = time.perf_counter() - t0
        best = yaml.safe_load((Path(out) / "tune-space" / "best.yaml").read_text().split("\n", 1)[0].split(
            "test accuracy ")[1])
        return wall, float(best)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--peer-threads", type=int, default=0,
                        help="torch threads of the --parallel 1 run (0: the tuner's default, all cores)")
    parser.add_argument("--quick", action="store_true", help="4 trials of 2 epochs, 1 seed")
    parser.add_argument("--identical", action="store_true",
                        help="vary only the learning rate (width 128): every trial costs the same on both sides")
    args = parser.parse_args()
    if args.quick:
        args.trials, args.seeds, args.epochs = 4, 1, 2
    print(f"{os.cpu_count()} cores, --parallel 1 with {args.peer_threads or 'all cores'} threads; mlscale tune, {args.trials} trials of a digits MLP ({args.epochs} epochs each), "
          f"random sampler, no pruning; seeds 0..{args.seeds - 1}")
    print(f"{'seed':>4} {'--parallel 1 s':>15} {'--parallel 2 s':>15} {'speed-up':>9} {'best p1':>8} {'best p2':>8}")
    speedups, best1, best2 = [], [], []
    for seed in range(args.seeds):
        t1, b1 = run(1, args, seed)
        t2, b2 = run(2, args, seed)
        speedups.append(t1 / t2)
        best1.append(b1)
        best2.append(b2)
        print(f"{seed:>4} {t1:>15.1f} {t2:>15.1f} {t1 / t2:>8.2f}x {b1:>8.4f} {b2:>8.4f}")
    print(f"median speed-up {statistics.median(speedups):.2f}x (target >= 1.7x); best test accuracy over seeds: "
          f"--parallel 1 mean {statistics.mean(best1):.4f} (min {min(best1):.4f}), "
          f"--parallel 2 mean {statistics.mean(best2):.4f} (min {min(best2):.4f})")


if __name__ == "__main__":
    main()
