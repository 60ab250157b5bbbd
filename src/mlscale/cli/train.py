"""`mlscale train`: parse a config file and `--field value` overrides, call `mlscale.train`, print
the summary. Every config field is an override: `--epochs 5`, `--model.name cnn`, `--optim.lr 1e-3`."""

from __future__ import annotations

import argparse
import sys

from mlscale.config import TrainConfig, build_config, field_help, load_yaml
from mlscale.errors import MlscaleError

USAGE = "mlscale train [--config FILE.yaml] [--resume RUN_DIR] [--FIELD VALUE ...]"


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="mlscale train", usage=USAGE, add_help=False,
                                     description="Train a model; every config field below is a --FIELD VALUE override.")
    parser.add_argument("--config", help="YAML config file (overrides come on top of it)")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its latest checkpoint")
    parser.add_argument("-h", "--help", action="store_true")
    known, rest = parser.parse_known_args(argv)
    if known.help:
        print(_help(parser))
        return 0
    overrides = parse_overrides(rest)

    if known.resume and known.config:
        raise MlscaleError("--resume uses the run's own config.yaml; give --config or --resume, not both")
    base = load_yaml(known.config) if known.config else {}
    if known.resume:
        from pathlib import Path

        saved = Path(known.resume) / "config.yaml"
        if not saved.is_file():
            raise MlscaleError(f"cannot resume {known.resume}: not a run directory (no config.yaml)")
        base = load_yaml(saved)
    config = build_config(base, overrides)

    from mlscale.training.engine import train  # torch is imported only from here on

    result = train(config, resume=known.resume)
    if result.rank == 0:  # under torchrun every rank returns here; one reports
        print(format_summary(result))
    return 0


def parse_overrides(args: list[str]) -> list[tuple[str, str]]:
    """['--a.b', '1', '--c=2'] -> [('a.b', '1'), ('c', '2')], with a clear error for anything else."""
    pairs, i = [], 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--") or len(arg) == 2:
            raise MlscaleError(f"unexpected argument '{arg}'; overrides are --FIELD VALUE (see mlscale train --help)")
        key, eq, value = arg[2:].partition("=")
        if not eq:
            if i + 1 >= len(args) or (args[i + 1].startswith("--") and len(args[i + 1]) > 2):
                raise MlscaleError(f"--{key} needs a value")
            value, i = args[i + 1], i + 1
        pairs.append((key, value))
        i += 1
    return pairs


def format_summary(result) -> str:
    status = "done" if result.completed else f"stopped at step {result.steps} (resume with --resume {result.run_dir})"
    workers = f" x {result.world_size} workers" if result.world_size > 1 else ""
    lines = [
        f"{status}: {result.epochs_done} epochs, {result.steps} steps on {result.device}{workers}",
        f"  test accuracy  {result.test_accuracy:.4f}   (test loss {result.test_loss:.4f})",
        f"  throughput     {result.samples_per_s:,.0f} samples/s in training steps"
        + (f" ({result.samples_per_s_per_worker:,.0f} per worker)" if result.world_size > 1 else ""),
    ]
    if result.world_size > 1:
        step_ms = result.step_time_s * 1e3
        comm = (f", gradient all-reduce in flight {result.comm_time_s_per_step * 1e3:.2f} ms of it (overlapped with backward)"
                if result.comm_time_s_per_step is not None else "")
        lines.append(f"  step time      {step_ms:.2f} ms{comm}")
    if getattr(result, "pipeline", None):
        lines += format_pipeline(result.pipeline)
    if result.scaling_efficiency is not None:
        lines.append(f"  scaling        {result.scaling_efficiency:.0%} efficiency vs the 1-worker baseline")
    return "\n".join(lines + [
        f"  wall time      {result.wall_time_s:.1f} s ({result.train_time_s:.1f} s in training steps)",
        f"  outputs        {result.run_dir}/  config.yaml metrics.jsonl summary.json"
        f"{' curves.png' if (result.run_dir / 'curves.png').exists() else ''} checkpoints/",
    ])


def format_pipeline(p: dict) -> list[str]:
    """The pipeline's lines of the summary: split, bubble measured vs theory, each stage's time and memory."""
    measured = p["bubble_fraction_measured"]
    lines = [f"  pipeline       {p['n_stages']} stages x {p['n_replicas']} replica(s), {p['n_microbatches']} micro-batches, "
             f"{p['schedule']}; split by {p['split'].replace('_', ' ')}",
             f"  bubble         {measured:.1%} of stage time idle (measured) vs {p['bubble_fraction_theory']:.1%} in theory "
             f"(S-1)/(M+S-1)" if measured is not None else "  bubble         not measured (one step)"]
    for s in p["stages"]:
        per_step = s["step_s"] / max(1, s["steps"] - 1) * 1e3
        idle = f", idle {s['idle_fraction']:.0%}" if s["idle_fraction"] is not None else ""
        lines.append(f"    stage {s['stage']}  layers {s['layers']:<7} {s['params']:>10,} params  {per_step:7.2f} ms/step, "
                     f"busy {s['busy_s'] / max(1, s['steps'] - 1) * 1e3:.2f} ms{idle}; memory: params+grads+optimizer "
                     f"{_mib(s['param_bytes'] + s['grad_bytes'] + s['optimizer_bytes'])}, activations {_mib(s['activation_peak_bytes'])}")
    return lines


def _mib(n: int) -> str:
    return f"{n / 2**20:.2f} MiB"


def _help(parser: argparse.ArgumentParser) -> str:
    lines = [f"usage: {USAGE}", "", parser.description, "",
             "  --config FILE     YAML config file (overrides come on top of it)",
             "  --resume RUN_DIR  continue a run from its latest checkpoint", "", "config fields (default):"]
    for name, help_, default in field_help(TrainConfig):
        lines.append(f"  --{name:<26} {help_} [{default}]")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
