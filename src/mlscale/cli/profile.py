"""`mlscale profile`: a model's layers on every present device, and which processor and batch to use."""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

from mlscale.cli.args import ArgumentParser, png_file
from mlscale.cli.devices import cache_dir, set_threads
from mlscale.errors import MlscaleError

EXAMPLES = """examples:
  mlscale profile --model mlp --batch 64
  mlscale profile --model transformer --width 256 --depth 4 --batch 128 --roofline roofline.png
  mlscale profile --model my_net.py:build --input-shape 3,32,32 --batch 32 --json
A factory (module.py:NAME) is called with no arguments and must return a torch.nn.Module taking a
float tensor (batch, *input-shape)."""


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="mlscale profile", epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Per-layer FLOPs, bytes moved, arithmetic intensity, measured time and bound on "
                                   "each present device, a TPU-like systolic estimate, and a recommendation.")
    p.add_argument("--model", required=True, help="built-in model (mlp, cnn, transformer) or module.py:Factory")
    p.add_argument("--batch", type=int, required=True, help="batch size profiled layer by layer")
    p.add_argument("--input-shape", default="1,8,8", help="shape of one sample (default 1,8,8: the digits)")
    p.add_argument("--classes", type=int, default=10, help="classes of a built-in model's head")
    p.add_argument("--width", type=int, help="built-in model width (default: the model's)")
    p.add_argument("--depth", type=int, help="built-in model depth (default: the model's)")
    p.add_argument("--threads", type=int, help="torch intra-op threads on the CPU (default: torch's, one per core)")
    p.add_argument("--roofline", type=png_file, metavar="PNG", help="draw the roofline with the model's layers to this PNG")
    p.add_argument("--json", action="store_true", help="print JSON instead of the table")
    p.add_argument("--no-systolic", action="store_true", help="leave out the TPU-like systolic column")
    return p


def run(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    set_threads(args.threads)
    if args.batch < 1:
        raise MlscaleError(f"--batch must be >= 1, got {args.batch}")
    shape = _shape(args.input_shape)
    model, name = _build(args, shape)
    from mlscale.processors.devices import cache_path, measured_devices
    from mlscale.processors.profile import profile_model

    if not cache_path(cache_dir()).exists():
        print("measuring this machine's devices first (once; cached, see mlscale devices)", file=sys.stderr)

    prof = profile_model(model, shape, args.batch, measured_devices(cache_dir()), name=name,
                         systolic=not args.no_systolic)
    if args.roofline:
        from mlscale.processors.roofline import plot_roofline

        plot_roofline(prof.devices, args.roofline, prof)
    if args.json:
        print(json.dumps(prof.to_dict(), indent=1))
        return 0
    print(format_profile(prof))
    if args.roofline:
        print(f"roofline: {args.roofline}")
    return 0


def _shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(s) for s in text.replace("x", ",").split(","))
    except ValueError:
        shape = ()
    if not shape or any(s < 1 for s in shape):
        raise MlscaleError(f"--input-shape must be positive integers like 1,8,8, got '{text}'")
    return shape


def _build(args, shape: tuple[int, ...]):
    """The model: a built-in one from the registry, or a user factory `file.py:NAME`."""
    import torch

    if ":" not in args.model:
        from mlscale.config import ModelConfig
        from mlscale.training.models import MODELS, build_model

        if args.model not in MODELS:
            raise MlscaleError(f"unknown model '{args.model}'; built-in models: {', '.join(MODELS)}, or module.py:Factory")
        cfg = ModelConfig(name=args.model)
        for field in ("width", "depth"):
            value = getattr(args, field)
            if value is not None:
                if value < 1:
                    raise MlscaleError(f"--{field} must be >= 1, got {value}")
                setattr(cfg, field, value)
        if args.classes < 2:
            raise MlscaleError(f"--classes must be >= 2, got {args.classes}")
        try:
            return build_model(cfg, shape, args.classes), args.model
        except (RuntimeError, MemoryError) as err:  # e.g. weights for an absurd input shape
            raise MlscaleError(f"cannot build {args.model} for input shape {shape}: {err}") from err
    file, _, attr = args.model.rpartition(":")
    path = Path(file)
    if not path.is_file():
        raise MlscaleError(f"{file}: no such file (--model takes a built-in name or module.py:Factory)")
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as err:
        raise MlscaleError(f"{file}: importing it failed: {type(err).__name__}: {err}") from err
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise MlscaleError(f"{file}: no callable '{attr}' in it")
    try:
        model = factory()
    except Exception as err:
        raise MlscaleError(f"{args.model}: calling it failed: {type(err).__name__}: {err}") from err
    if not isinstance(model, torch.nn.Module):
        raise MlscaleError(f"{args.model} returned a {type(model).__name__}, not a torch.nn.Module")
    return model, f"{path.name}:{attr}"


def format_profile(prof) -> str:
    idx = [d.index for d in prof.devices]
    head = ["layer", "type", "MFLOP", "KiB moved", "FLOP/B"]
    for i in idx:
        head += [f"{i} ms", f"{i} bound"]
    sys_col = any(l.systolic_s is not None for l in prof.layers)
    if sys_col:
        head.append(f"{prof.systolic_array} ms")
    rows = [tuple(head)]
    for l in prof.layers:
        row = [l.name, l.type, f"{l.flops / 1e6:,.3f}", f"{l.bytes_moved / 1024:,.1f}", f"{l.intensity:.1f}"]
        for i in idx:
            row += [f"{l.time_s[i] * 1e3:.4f}", l.bound[i] if l.flops else "memory (no matmul)"]
        if sys_col:
            row.append(f"{l.systolic_s * 1e3:.4f}" if l.systolic_s is not None else "-")
        rows.append(tuple(row))
    widths = [max(len(str(r[c])) for r in rows) for c in range(len(rows[0]))]
    table = "\n".join("  ".join(str(v).ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows)
    roofs = "; ".join(f"{d.index}: {d.matmul_flops.get('fp32', 0) / 1e9:,.1f} GFLOP/s fp32, "
                      f"{d.mem_bandwidth / 1e9:,.1f} GB/s, ridge {d.ridge_intensity('fp32'):.1f} FLOP/B"
                      for d in prof.devices if d.matmul_flops.get("fp32") and d.mem_bandwidth)
    r = prof.recommendation
    return (f"profile of {prof.model}, batch {prof.batch}, input {tuple(prof.input_shape)}, fp32 forward: "
            f"{prof.total_flops / 1e6:,.1f} MFLOP\n{table}\n"
            f"roofs (measured): {roofs}\n"
            f"{prof.systolic_array}: 256x256 MACs at {prof.systolic_clock_hz / 1e6:.0f} MHz, simulated (matmul layers only)\n"
            f"recommendation: {r.device}, batch {r.batch} ({r.samples_per_s:,.0f} samples/s forward)\n  because {r.reason}")
