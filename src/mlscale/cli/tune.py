"""`mlscale tune`: search a space of training-config fields with Optuna, trials in parallel.

    mlscale tune --space space.yaml --trials 40 --parallel 4 [--sampler tpe|random|grid]
        [--pruner asha|hyperband|median|none] [--storage URL] [--study NAME] [--resume]
        [--config base.yaml] [--FIELD VALUE ...]

The storage may also come from the environment variable MLSCALE_TUNE_STORAGE (keeps a database
password off the command line and out of shell history).
"""

from __future__ import annotations

import os

from mlscale.cli.args import ArgumentParser
from mlscale.cli.train import parse_overrides
from mlscale.config import build_config, load_yaml

USAGE = ("mlscale tune --space SPACE.yaml [--trials N] [--parallel P] [--workers-per-trial W] "
         "[--sampler tpe|random|grid] [--pruner asha|hyperband|median|none] [--storage URL] [--study NAME] "
         "[--resume] [--config BASE.yaml] [--FIELD VALUE ...]")
STORAGE_ENV = "MLSCALE_TUNE_STORAGE"


def run(argv: list[str]) -> int:
    parser = ArgumentParser(
        prog="mlscale tune", usage=USAGE, allow_abbrev=False,
        description="Search hyperparameters and architectures: each trial is a full training run; trials run "
                    "in parallel and are pruned early on their per-epoch test accuracy. Fields of the base "
                    "config may be overridden as in mlscale train (--FIELD VALUE).")
    parser.add_argument("--space", required=True, help="YAML file: config field -> how it varies")
    parser.add_argument("--trials", type=int, default=20, help="the study's total budget of trials [20]")
    parser.add_argument("--parallel", type=int, default=1, help="trials at a time on this machine [1]")
    parser.add_argument("--workers-per-trial", type=int, default=1,
                        help="data-parallel workers per trial (mlscale train --workers) [1]")
    parser.add_argument("--sampler", default="tpe", help="tpe, random or grid [tpe]")
    parser.add_argument("--pruner", default="asha", help="asha, hyperband, median or none [asha]")
    parser.add_argument("--storage", default=None,
                        help=f"sqlite:///FILE, postgresql://USER:PASSWORD@HOST/DB, or a journal file (.log); "
                             f"default: ${STORAGE_ENV}, else a journal file in the study directory")
    parser.add_argument("--study", default=None, help="study name; the same name continues it [the space file's name]")
    parser.add_argument("--resume", action="store_true", help="continue an existing study (error if none)")
    parser.add_argument("--config", help="base training config (YAML) every trial starts from")
    parser.add_argument("--out-dir", default="runs", help="the study directory is OUT_DIR/tune-STUDY [runs]")
    parser.add_argument("--seed", type=int, default=0, help="sampler seed (worker i: seed + i) [0]")
    parser.add_argument("--quiet", action="store_true", help="no progress lines: print only the leaderboard")
    args, rest = parser.parse_known_args(argv)
    base = build_config(load_yaml(args.config) if args.config else {}, parse_overrides(rest))

    from mlscale.search.runner import tune

    result = tune(args.space, base, n_trials=args.trials, parallel=args.parallel, workers_per_trial=args.workers_per_trial,
         sampler=args.sampler, pruner=args.pruner, storage=args.storage or os.environ.get(STORAGE_ENV) or None,
         study_name=args.study, resume=args.resume, out_dir=args.out_dir, seed=args.seed,
         progress=not args.quiet)
    if args.quiet:
        print(result.files["leaderboard"].read_text(), end="")
    return 0
