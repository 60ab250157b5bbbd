"""`mlscale COMMAND ...`: parse, dispatch to one command module, turn MlscaleError into one line.

Command modules are imported only when their command runs, so a light command (`systolic`) never
pays for `import torch`.
"""

import argparse
import sys
from importlib import import_module

from mlscale.errors import MlscaleError

# command -> (module under mlscale.cli, one-line help)
COMMANDS = {
    "train": ("train", "train a model (one process, or many with --workers)"),
    "tune": ("tune", "search hyperparameters and architectures with Optuna: parallel trials, early stopping"),
    "systolic": ("systolic", "simulate a systolic array of MAC units, cycle by cycle (no torch needed)"),
    "devices": ("devices", "every processor here: measured matmul FLOP/s and memory bandwidth, vendor peaks"),
    "profile": ("profile", "per-layer FLOPs, bytes, intensity and time on each device; which processor and batch"),
    "scale": ("scale", "run a job at several worker counts: throughput, efficiency, step split, time, cost"),
    "plan": ("plan", "predict time and cost per worker count and device, calibrated here"),
}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="mlscale",
        description="Take a machine-learning job from one CPU to many accelerators, measured.",
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_) in COMMANDS.items():
        sub.add_parser(name, help=help_, add_help=False)
    if not argv or argv[0] in ("-h", "--help", "--version") or argv[0] not in COMMANDS:
        parser.parse_args(argv[:1] or ["--help"])
        return 2
    module = import_module(f"mlscale.cli.{COMMANDS[argv[0]][0]}")
    try:
        return module.run(argv[1:]) or 0
    except MlscaleError as err:
        print(f"mlscale {argv[0]}: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print(f"mlscale {argv[0]}: interrupted", file=sys.stderr)
        return 130


def _version() -> str:
    from mlscale import __version__

    return f"mlscale {__version__}"
