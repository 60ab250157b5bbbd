"""The training configuration: typed dataclasses, a YAML loader, and `--a.b value` overrides.

A config is built in one order (as torchtitan's JobConfig documents): field defaults < YAML file <
command-line overrides. Every field carries its help text and its constraints in `metadata`, so the
same declaration drives validation, `mlscale train --help`, and the error a user sees
("optim.lr must be > 0, got -1").
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlscale.errors import MlscaleError


def _f(default, help: str, **checks):
    """A config field: default, help text, and checks (gt, ge, le, choices)."""
    kwargs = {"default_factory": (lambda d=default: list(d))} if isinstance(default, list) else {"default": default}
    return field(metadata={"help": help, **checks}, **kwargs)


@dataclass
class ModelConfig:
    """Which model to build and how big. The same fields size every built-in model."""

    name: str = _f("mlp", "built-in model: mlp, cnn or transformer", choices=("mlp", "cnn", "transformer"))
    width: int = _f(128, "hidden units (mlp), channels of the first conv (cnn), model dim (transformer)", gt=0)
    depth: int = _f(2, "hidden layers (mlp), conv blocks (cnn), encoder layers (transformer)", gt=0)
    dropout: float = _f(0.0, "dropout probability", ge=0.0, lt=1.0)
    n_heads: int = _f(4, "attention heads (transformer); must divide width", gt=0)
    patch_size: int = _f(8, "features per token (transformer): the input is cut into tokens of this size", gt=0)


@dataclass
class DataConfig:
    """Where the samples come from and how they are split and loaded."""

    dataset: str = _f("digits", "digits (embedded), synthetic, or the path of a .npz, .csv or .parquet file")
    label_column: str = _f("label", "the label column (.csv/.parquet) or array (.npz; features in array 'x')")
    input_shape: list[int] | None = _f(None, "reshape each sample's features to this shape, e.g. 1,8,8 (digits: 1,8,8)", gt=0)
    test_fraction: float = _f(0.2, "share of samples held out for evaluation", gt=0.0, lt=1.0)
    n_samples: int = _f(10_000, "synthetic: number of samples", gt=1)
    n_features: int = _f(64, "synthetic: features per sample", gt=0)
    n_classes: int = _f(10, "synthetic: number of classes", gt=1)
    num_workers: int = _f(0, "DataLoader worker processes (0: load in the training process; best for in-memory data)", ge=0)
    prefetch_factor: int = _f(2, "batches each DataLoader worker loads ahead (when num_workers > 0)", gt=0)


@dataclass
class OptimConfig:
    """The optimizer and its learning-rate schedule."""

    name: str = _f("adamw", "optimizer: sgd or adamw", choices=("sgd", "adamw"))
    lr: float = _f(3e-3, "peak learning rate", gt=0.0)
    weight_decay: float = _f(0.0, "decoupled weight decay (adamw) or L2 penalty (sgd)", ge=0.0)
    momentum: float = _f(0.9, "sgd momentum", ge=0.0, lt=1.0)
    schedule: str = _f("cosine", "learning-rate schedule after warm-up: constant or cosine", choices=("constant", "cosine"))
    warmup_steps: int = _f(0, "optimizer steps of linear warm-up from 0 to lr", ge=0)


@dataclass
class DistConfig:
    """How workers find each other and talk (used when there are several)."""

    master_addr: str = _f("127.0.0.1", "address mlscale's own launcher binds its rendezvous to (loopback unless you say)")
    master_port: int = _f(0, "rendezvous port of mlscale's own launcher (0: any free port)", ge=0, le=65535)
    timeout_s: float = _f(300.0, "seconds a rendezvous or collective may wait before failing", gt=0.0, le=1e6)
    bucket_cap_mb: float = _f(0.0, "ddp: gradient bucket size in MB, all-reduced as backward fills it (0: torch DDP's "
                                   "default, 25 MB after a small 1 MB first bucket)", ge=0.0)


@dataclass
class PipelineConfig:
    """Pipeline model parallelism (`strategy: pipeline`): the model's layers cut into stages, one per
    worker, micro-batches flowing through them (GPipe, Huang et al. 2019; 1F1B, Narayanan et al. 2019)."""

    n_stages: int = _f(2, "pipeline stages; workers = n_stages x data-parallel replicas", gt=1)
    n_microbatches: int = _f(4, "micro-batches each batch_size batch is cut into; must divide batch_size", gt=0)
    schedule: str = _f("1f1b", "gpipe (all forwards, then all backwards) or 1f1b (one forward, one backward: fewer activations alive)", choices=("gpipe", "1f1b"))
    split: str = _f("params", "balance the stages by parameter count (params) or by per-layer forward+backward time measured before training (time)", choices=("params", "time"))
    split_points: list[str] = _f([], "names of the layers where stages 2, 3, ... begin (an nn.Sequential's child names, e.g. 3,6; built-in models: indices of their pipeline_layers()); empty: balanced automatically")


@dataclass
class TrainConfig:
    """A whole training run. Sections: model, data, optim; the rest is the run itself."""

    name: str = _f("", "run name; the run directory is <out_dir>/<name>-<timestamp> (default: <model>-<dataset>)")
    out_dir: str = _f("runs", "where run directories are created")
    seed: int = _f(0, "seed for the data split, shuffling, initialisation and dropout", ge=0, le=2**31 - 1)
    device: str = _f("auto", "auto (cuda > mps > cpu), cpu, cuda, cuda:N or mps")
    precision: str = _f("auto", "auto (bf16 autocast on GPUs that support it, else fp32), fp32 or bf16", choices=("auto", "fp32", "bf16"))
    threads: int = _f(0, "CPU threads for torch per worker (0: torch's default; cores / local workers with several)", ge=0)
    workers: int = _f(1, "local worker processes mlscale starts (under torchrun, torchrun's world is used)", gt=0)
    max_restarts: int = _f(0, "restart all workers up to this many times after one dies, resuming from the latest checkpoint (as torchrun --max-restarts)", ge=0, le=1000)
    strategy: str = _f("ddp", "with several workers: ddp (replicated model), fsdp (sharded parameters, gradients, optimizer state) or pipeline (layers split into stages; see pipeline.*)", choices=("ddp", "fsdp", "pipeline"))
    baseline: str = _f("", "a 1-worker run directory of the same config: the summary adds scaling efficiency against it")
    epochs: int = _f(10, "passes over the training split", gt=0)
    batch_size: int = _f(64, "samples per micro-batch (per worker)", gt=0)
    grad_accum_steps: int = _f(1, "micro-batches accumulated into one optimizer step", gt=0)
    grad_clip_norm: float = _f(0.0, "clip the global gradient norm to this value (0: off)", ge=0.0)
    eval_batch_size: int = _f(512, "samples per evaluation batch", gt=0)
    log_every_steps: int = _f(10, "optimizer steps between metric records", gt=0)
    checkpoint_every_steps: int = _f(0, "optimizer steps between checkpoints (0: at the end of every epoch)", ge=0)
    keep_checkpoints: int = _f(3, "periodic checkpoints kept (the final one is always kept)", gt=0)
    stop_at_step: int = _f(0, "stop with a checkpoint after this optimizer step, to resume later (0: run to the end)", ge=0)
    progress: bool = _f(True, "show a progress bar")
    curves: bool = _f(True, "plot curves.png (loss and accuracy over the run) when the run ends")
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    dist: DistConfig = field(default_factory=DistConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)


# Fields that may differ between a run and its resumption: they change how the run is carried out or
# reported, not what it computes.
RESUMABLE_FIELDS = frozenset({
    "device", "threads", "eval_batch_size", "log_every_steps", "checkpoint_every_steps",
    "keep_checkpoints", "stop_at_step", "progress", "curves", "out_dir", "data.num_workers", "data.prefetch_factor",
    "strategy", "baseline", "dist.master_addr", "dist.master_port", "dist.timeout_s", "dist.bucket_cap_mb",
    # the split of the global batch among workers, micro-batches and accumulation may change, as long
    # as the global batch per optimizer step stays the same (checked by the engine)
    "workers", "batch_size", "grad_accum_steps", "max_restarts",
    # how the layers are cut into stages changes where they run, not what they compute
    "pipeline.n_stages", "pipeline.n_microbatches", "pipeline.schedule", "pipeline.split", "pipeline.split_points",
})
# ... and `epochs` too when the learning rate does not depend on the run's length (checked by the engine)
RESUMABLE_WITH_CONSTANT_SCHEDULE = frozenset({"epochs"})


# --- building and validating --------------------------------------------------------------------


def read_yaml_file(path: str | Path, what: str = "config file"):
    """The YAML document in `path` (None when empty); a missing, unreadable or malformed file is one
    clear error naming `what` it is."""
    import yaml

    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise MlscaleError(f"{what} not found: {path}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise MlscaleError(f"cannot read {what} {path}: {getattr(err, 'strerror', None) or err}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise MlscaleError(f"{what} {path} is not valid YAML{where}: {getattr(err, 'problem', err)}") from None


def load_yaml(path: str | Path) -> dict:
    """Read a YAML config file into a nested dict; a clear error for a missing or malformed file."""
    data = read_yaml_file(path)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise MlscaleError(f"config file {path} must hold a mapping of fields, got {type(data).__name__}")
    return data


def build_config(values: dict | None = None, overrides: list[tuple[str, str]] = (), cls=TrainConfig):
    """Defaults < `values` (a nested dict, e.g. from YAML) < `overrides` (dotted key, string value)."""
    values = _deep_copy(values or {})
    for key, raw in overrides:
        _set_dotted(values, key, raw, cls)
    return from_dict(cls, values)


def from_dict(cls, values: dict, prefix: str = ""):
    """Build dataclass `cls` from a nested dict, checking names, types and ranges."""
    if not isinstance(values, dict):
        raise MlscaleError(f"config section '{prefix.rstrip('.') or 'root'}' must be a mapping, got {values!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in values:
        if key not in fields:
            raise MlscaleError(f"unknown config key '{prefix}{key}'{_did_you_mean(key, fields, prefix)}")
    kwargs = {}
    for name, f in fields.items():
        if name not in values:
            continue
        full = prefix + name
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = from_dict(hint, values[name], full + ".")
        else:
            kwargs[name] = _check(full, _coerce(full, values[name], hint), f.metadata)
    return cls(**kwargs)


def validate(config: TrainConfig) -> TrainConfig:
    """Re-check a config built in Python (field by field, then the rules across fields)."""
    if not isinstance(config, TrainConfig):
        raise MlscaleError(f"expected a TrainConfig, got {type(config).__name__}")
    config = from_dict(TrainConfig, to_dict(config))
    if config.model.name == "transformer" and config.model.width % config.model.n_heads:
        raise MlscaleError(
            f"model.n_heads ({config.model.n_heads}) must divide model.width ({config.model.width})"
        )
    if config.strategy == "pipeline":
        _validate_pipeline(config)
    return config


def _validate_pipeline(config: TrainConfig) -> None:
    """The rules across fields of a pipelined run (the world size is checked again when it is known)."""
    p = config.pipeline
    if config.workers > 1 and config.workers % p.n_stages:
        raise MlscaleError(f"pipeline.n_stages ({p.n_stages}) must divide workers ({config.workers}): "
                           f"workers = n_stages x data-parallel replicas")
    if config.batch_size % p.n_microbatches:
        raise MlscaleError(f"batch_size ({config.batch_size}) must be divisible by pipeline.n_microbatches "
                           f"({p.n_microbatches})")
    if p.schedule == "1f1b" and p.n_microbatches < p.n_stages:
        raise MlscaleError(f"pipeline.schedule 1f1b needs n_microbatches >= n_stages ({p.n_microbatches} < "
                           f"{p.n_stages}); raise pipeline.n_microbatches or use gpipe")
    if config.grad_accum_steps != 1:
        raise MlscaleError("grad_accum_steps must be 1 with strategy pipeline: its micro-batches already "
                           "accumulate gradients (raise pipeline.n_microbatches and batch_size instead)")
    if p.split_points and len(p.split_points) != p.n_stages - 1:
        raise MlscaleError(f"pipeline.split_points names {len(p.split_points)} layer(s); {p.n_stages} stages "
                           f"need {p.n_stages - 1} (where stages 2..{p.n_stages} begin)")


def to_dict(config) -> dict:
    return dataclasses.asdict(config)


def field_help(cls=TrainConfig, prefix: str = "") -> list[tuple[str, str, Any]]:
    """(dotted name, help, default) for every field, in declaration order: the CLI's --help."""
    rows = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            rows += field_help(hints[f.name], prefix + f.name + ".")
        else:
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            rows.append((prefix + f.name, f.metadata.get("help", ""), default))
    return rows


def diff_fields(a: dict, b: dict, prefix: str = "") -> list[tuple[str, Any, Any]]:
    """(dotted name, value in a, value in b) for every leaf field that differs."""
    out = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += diff_fields(va, vb, prefix + key + ".")
        elif va != vb:
            out.append((prefix + key, va, vb))
    return out


# --- helpers --------------------------------------------------------------------------------------


def _did_you_mean(key, choices, prefix: str) -> str:
    close = difflib.get_close_matches(str(key), [str(c) for c in choices], n=1)
    return f" (did you mean '{prefix}{close[0]}'?)" if close else ""


def _deep_copy(d):
    return {k: _deep_copy(v) for k, v in d.items()} if isinstance(d, dict) else d


def _set_dotted(values: dict, key: str, raw: str, cls) -> None:
    parts = key.replace("-", "_").split(".")
    node, section = values, cls
    for depth, part in enumerate(parts):
        fields = {f.name: f for f in dataclasses.fields(section)}
        prefix = ".".join(parts[:depth]) + ("." if depth else "")
        if part not in fields:
            raise MlscaleError(f"unknown config key '{prefix}{part}'{_did_you_mean(part, fields, prefix)}")
        hint = typing.get_type_hints(section)[part]
        if depth == len(parts) - 1:
            if dataclasses.is_dataclass(hint):
                raise MlscaleError(f"'{key}' is a section; set one of its fields, e.g. --{key}.{dataclasses.fields(hint)[0].name}")
            node[part] = raw
        else:
            if not dataclasses.is_dataclass(hint):
                raise MlscaleError(f"'{prefix}{part}' is a field, not a section: use --{prefix}{part} VALUE")
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise MlscaleError(f"config section '{prefix}{part}' must be a mapping")
            section = hint


_TRUE, _FALSE = {"true", "yes", "on", "1"}, {"false", "no", "off", "0"}


def _coerce(name: str, value, hint):
    """Turn a YAML value or a command-line string into the field's type, or raise a clear error."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):  # X | None
        if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null", "")):
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(name, value, inner)
    if origin is list:
        (item,) = args
        if isinstance(value, str):
            text = value.strip().strip("[]")
            value = [v for v in (p.strip() for p in text.split(",")) if v] if text else []
        if not isinstance(value, (list, tuple)):
            raise MlscaleError(f"{name} must be a list, got {value!r}")
        return [_coerce(f"{name}[{i}]", v, item) for i, v in enumerate(value)]
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise MlscaleError(f"{name} must be true or false, got {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip().replace("_", ""))
            except ValueError:
                pass
        raise MlscaleError(f"{name} must be an integer, got {value!r}")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            result = float(value)
        elif isinstance(value, str):
            try:
                result = float(value.strip())
            except ValueError:
                raise MlscaleError(f"{name} must be a number, got {value!r}") from None
        else:
            raise MlscaleError(f"{name} must be a number, got {value!r}")
        if not math.isfinite(result):
            raise MlscaleError(f"{name} must be a finite number, got {value!r}")
        return result
    if hint is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise MlscaleError(f"{name} must be a string, got {value!r}")
    raise TypeError(f"config field {name} has an unsupported type {hint}")  # a bug, not a user error


def _check(name: str, value, meta):
    if value is None:
        return value
    items = [(f"{name}[{i}]", v) for i, v in enumerate(value)] if isinstance(value, list) else [(name, value)]
    for name, v in items:
        if "choices" in meta and v not in meta["choices"]:
            raise MlscaleError(f"{name} must be one of {', '.join(meta['choices'])}; got {v!r}{_did_you_mean(str(v), meta['choices'], '')}")
        for op, ok, word in (("gt", lambda a, b: a > b, ">"), ("ge", lambda a, b: a >= b, ">="),
                             ("lt", lambda a, b: a < b, "<"), ("le", lambda a, b: a <= b, "<=")):
            if op in meta and not ok(v, meta[op]):
                raise MlscaleError(f"{name} must be {word} {meta[op]}, got {v}")
    return value
