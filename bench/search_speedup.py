"""Parallel search speed-up: the same budget of trials (same space, sampler, pruner off, same base
job) run sequentially (one process, one trial at a time, all cores' threads: what a plain Optuna
`study.optimize` loop does) and with `--parallel 2` (two worker processes, one thread each), for a
few sampler seeds. Prints wall time, speed-up, and the best test accuracy each found per seed.

    python bench/search_speedup.py [--trials 6] [--seeds 2] [--epochs 3] [--quick]
"""

import argparse
import os
import statistics
import tempfile
import time

import torch

from mlscale import tune
from mlscale.config import build_config
from mlscale.search.space import parse_space

SPACE = {"optim.lr": {"type": "float", "low": 3e-4, "high": 3e-2, "log": True},
         "model.width": {"type": "int", "low": 64, "high": 256, "log": True},
         "model.depth": {"type": "int", "low": 1, "high": 3},
         "optim.name": ["sgd", "adamw"]}
JOB = {"batch_size": 32, "progress": False}  # digits, MLP: ~1-2 s a trial at 4 epochs


def run(parallel: int, n_trials: int, seed: int, epochs: int):
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        result = tune(parse_space(SPACE), build_config({**JOB, "epochs": epochs}), n_trials=n_trials,
                      parallel=parallel, sampler="random", pruner="none", out_dir=out, seed=seed, progress=False)
        return time.perf_counter() - t0, result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="4 trials, 1 seed, 2 epochs (under a minute)")
    args = parser.parse_args()
    if args.quick:
        args.trials, args.seeds, args.epochs = 4, 1, 2
    print(f"torch {torch.__version__}, {os.cpu_count()} cores; {args.trials} trials of a digits MLP "
          f"({args.epochs} epochs each), random sampler, no pruning; seeds 0..{args.seeds - 1}")
    print(f"{'seed':>4} {'sequential s':>13} {'parallel 2 s':>13} {'speed-up':>9} {'best seq':>9} {'best par':>9}")
    speedups, best_seq, best_par = [], [], []
    for seed in range(args.seeds):
        t_seq, r_seq = run(1, args.trials, seed, args.epochs)
        t_par, r_par = run(2, args.trials, seed, args.epochs)
        assert r_seq.n_complete == r_par.n_complete == args.trials
        speedups.append(t_seq / t_par)
        best_seq.append(r_seq.best_value)
        best_par.append(r_par.best_value)
        print(f"{seed:>4} {t_seq:>13.1f} {t_par:>13.1f} {t_seq / t_par:>8.2f}x {r_seq.best_value:>9.4f} "
              f"{r_par.best_value:>9.4f}")
    print(f"median speed-up {statistics.median(speedups):.2f}x (target >= 1.7x); best accuracy mean "
          f"{statistics.mean(best_seq):.4f} sequential vs {statistics.mean(best_par):.4f} parallel")


if __name__ == "__main__":
    main()
