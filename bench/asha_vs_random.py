"""Time to a target test accuracy on a fixed task (the embedded digits): plain sequential random
search (one process, every trial trained to the end: the peer) vs mlscale's ASHA-pruned random
search with `--parallel 2`, each a fresh `mlscale tune` process. Same space, same budget of trials, a few sampler seeds. Prints the
wall time until the first trial reaching the target completed, its ratio, and the whole study's
time.

    python bench/asha_vs_random.py [--trials 12] [--epochs 9] [--target 0.96] [--seeds 2] [--peer-threads 0] [--quick]
"""

import argparse
import datetime
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import yaml
from optuna.storages.journal import JournalFileBackend, JournalStorage
from optuna.trial import TrialState


SPACE = {"optim.lr": {"type": "float", "low": 1e-5, "high": 0.3, "log": True},
         "optim.name": ["sgd", "adamw"],
         "model.width": {"type": "int", "low": 16, "high": 256, "log": True},
         "model.depth": {"type": "int", "low": 1, "high": 3}}


def run(parallel: int, pruner: str, args, seed: int):
    """(seconds from the command's start to the first complete trial >= target, or None; the
    whole command's seconds; pruned trials). Each run is a fresh `mlscale tune` process."""
    with tempfile.TemporaryDirectory() as out:
        space = Path(out) / "space.yaml"
        space.write_text(yaml.safe_dump(SPACE))
        threads = args.peer_threads if parallel == 1 else 0
        cmd = [sys.executable, "-m", "mlscale", "tune", "--space", str(space), "--trials", str(args.trials),
               "--parallel", str(parallel), "--sampler", "random", "--pruner", pruner, "--seed", str(seed),
               "--out-dir", out, "--quiet", "--epochs", str(args.epochs), "--batch_size", "32", "--threads", str(threads)]
        start = datetime.datetime.now()
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        total = time.perf_counter() - t0
        study = optuna.load_study(study_name="space", storage=JournalStorage(JournalFileBackend(
            str(Path(out) / "tune-space" / "journal.log"))))
        hits = [(t.datetime_complete - start).total_seconds() for t in study.get_trials(states=(TrialState.COMPLETE,))
                if t.value >= args.target]
        return (min(hits) if hits else None), total, len(study.get_trials(states=(TrialState.PRUNED,)))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--epochs", type=int, default=9)
    parser.add_argument("--target", type=float, default=0.96)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--peer-threads", type=int, default=0,
                        help="torch threads of the sequential peer (0: the tuner's default, all cores)")
    parser.add_argument("--quick", action="store_true", help="6 trials of 3 epochs, target 0.93, 1 seed")
    args = parser.parse_args()
    if args.quick:
        args.trials, args.epochs, args.target, args.seeds = 6, 3, 0.93, 1
    print(f"{os.cpu_count()} cores, peer threads {args.peer_threads or 'all'}; digits, {args.trials} random-search trials of up to "
          f"{args.epochs} epochs; target test accuracy {args.target}; seeds 0..{args.seeds - 1}")
    print(f"{'seed':>4} {'random seq: to target s':>24} {'total s':>8} {'ASHA par 2: to target s':>24} {'total s':>8} "
          f"{'pruned':>6} {'ratio':>6}")
    ratios = []
    for seed in range(args.seeds):
        seq_hit, seq_total, _ = run(1, "none", args, seed)
        asha_hit, asha_total, pruned = run(2, "asha", args, seed)
        ratio = seq_hit / asha_hit if seq_hit and asha_hit else None
        if ratio:
            ratios.append(ratio)
        fmt = lambda v: f"{v:.1f}" if v is not None else "not reached"  # noqa: E731
        print(f"{seed:>4} {fmt(seq_hit):>24} {seq_total:>8.1f} {fmt(asha_hit):>24} {asha_total:>8.1f} {pruned:>6} "
              f"{(f'{ratio:.2f}x' if ratio else '-'):>6}")
    if ratios:
        print(f"time to target, sequential random / ASHA parallel 2: median {statistics.median(ratios):.2f}x "
              f"over {len(ratios)} seed(s) where both reached it")
    else:
        print("the target was not reached by both searches in any seed: lower --target or raise --trials")


if __name__ == "__main__":
    main()
