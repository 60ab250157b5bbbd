"""The search space: a YAML file mapping training-config fields to Optuna distributions.

Keys are config fields written as the config and `mlscale train` write them (`optim.lr`,
`model.name`, `batch_size`); each value says how the field varies:

```yaml
optim.lr: {type: float, low: 1.0e-4, high: 0.1, log: true}    # log-uniform
optim.weight_decay: {type: float, low: 0.0, high: 0.1}
model.depth: {type: int, low: 1, high: 4}
model.width: {type: int, low: 16, high: 256, log: true}
model.name: [mlp, cnn]                                        # a list: categorical
optim.name: {type: categorical, choices: [sgd, adamw]}
```

Every bound and choice is checked against the config's own rules when the file is read (a space
that could only produce invalid runs is one clear error, not forty failed trials). For
`--sampler grid`, int fields enumerate `low..high` by `step`; float fields need `step` or `values`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlscale.config import TrainConfig, build_config, field_help, read_yaml_file
from mlscale.errors import MlscaleError

KINDS = ("float", "int", "categorical")
_KEYS = {"float": {"type", "low", "high", "log", "step", "values"},
         "int": {"type", "low", "high", "log", "step", "values"},
         "categorical": {"type", "choices"}}
_MAX_GRID = 100_000  # grid points beyond this are surely a mistake (a float step far too small)


@dataclass(frozen=True)
class Param:
    """One searched field: `kind` float/int (between `low` and `high`, on a log scale when `log`,
    on multiples of `step` when given) or categorical (`choices`); `values` lists grid points."""

    name: str
    kind: str
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple = ()
    values: tuple = ()

    def distribution(self):
        import optuna.distributions as d

        if self.kind == "categorical":
            return d.CategoricalDistribution(list(self.choices))
        if self.kind == "int":
            return d.IntDistribution(int(self.low), int(self.high), log=self.log, step=int(self.step or 1))
        return d.FloatDistribution(float(self.low), float(self.high), log=self.log, step=self.step)

    def grid_values(self) -> list:
        if self.kind == "categorical":
            return list(self.choices)
        if self.values:
            return list(self.values)
        if self.kind == "int":
            return list(range(int(self.low), int(self.high) + 1, int(self.step or 1)))
        if self.step is None:
            raise MlscaleError(f"{self.name}: a float field needs 'step' or 'values' for --sampler grid")
        n = int(math.floor((self.high - self.low) / self.step + 1e-9)) + 1
        return [round(self.low + i * self.step, 12) for i in range(n)]

    def to_dict(self) -> dict:
        if self.kind == "categorical":
            return {"type": "categorical", "choices": list(self.choices)}
        out = {"type": self.kind, "low": self.low, "high": self.high, "log": self.log}
        if self.step is not None:
            out["step"] = self.step
        if self.values:
            out["values"] = list(self.values)
        return out


@dataclass(frozen=True)
class SearchSpace:
    """The searched fields, in file order."""

    params: tuple[Param, ...]

    def distributions(self) -> dict:
        return {p.name: p.distribution() for p in self.params}

    def grid(self) -> dict[str, list]:
        """Optuna's GridSampler search space: field -> every value it takes."""
        grid = {p.name: p.grid_values() for p in self.params}
        if math.prod(len(v) for v in grid.values()) > _MAX_GRID:
            raise MlscaleError(f"the grid has more than {_MAX_GRID:,} points; give coarser steps or fewer values")
        return grid

    def suggest(self, trial) -> dict[str, Any]:
        """Ask `trial` for one value of every field: {dotted field: value}."""
        return {p.name: _suggest(trial, p) for p in self.params}

    def to_dict(self) -> dict:
        return {p.name: p.to_dict() for p in self.params}


def _suggest(trial, p: Param):
    if p.kind == "categorical":
        return trial.suggest_categorical(p.name, list(p.choices))
    if p.kind == "int":
        return trial.suggest_int(p.name, int(p.low), int(p.high), step=int(p.step or 1), log=p.log)
    return trial.suggest_float(p.name, float(p.low), float(p.high), step=p.step, log=p.log)


def load_space(path: str | Path) -> SearchSpace:
    """Read and check a space file; any mistake is one MlscaleError line naming the field."""
    data = read_yaml_file(path, "space file")
    try:
        return parse_space(data)
    except MlscaleError as err:
        raise MlscaleError(f"space file {path}: {err}") from None


def parse_space(data: Any) -> SearchSpace:
    """Build a SearchSpace from the parsed YAML (a mapping of field -> spec)."""
    if not isinstance(data, dict) or not data:
        raise MlscaleError("must map config fields to how they vary, e.g. 'optim.lr: {type: float, low: 1e-4, "
                           "high: 0.1, log: true}'")
    fields = {name for name, _, _ in field_help(TrainConfig)}
    params = []
    for name, spec in data.items():
        if not isinstance(name, str) or name not in fields:
            import difflib

            close = difflib.get_close_matches(str(name), sorted(fields), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise MlscaleError(f"'{name}' is not a training config field{hint}")
        params.append(_param(name, spec))
    return SearchSpace(tuple(params))


def _param(name: str, spec: Any) -> Param:
    if isinstance(spec, list):
        spec = {"type": "categorical", "choices": spec}
    if not isinstance(spec, dict):
        raise MlscaleError(f"{name}: give a list of choices or a mapping with 'type' (float, int, categorical)")
    kind = spec.get("type")
    if kind not in KINDS:
        raise MlscaleError(f"{name}: 'type' must be one of {', '.join(KINDS)}, got {kind!r}")
    unknown = sorted(str(k) for k in spec if k not in _KEYS[kind])
    if unknown:
        raise MlscaleError(f"{name}: unknown key '{unknown[0]}' for a {kind} field "
                           f"(keys: {', '.join(sorted(_KEYS[kind]))})")
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise MlscaleError(f"{name}: 'choices' must be a non-empty list")
        for c in choices:
            if c is not None and not isinstance(c, (str, int, float, bool)):
                raise MlscaleError(f"{name}: choices must be plain values (strings, numbers), got {c!r}")
            if isinstance(c, float) and not math.isfinite(c):
                raise MlscaleError(f"{name}: choices must be finite, got {c!r}")
        if len(set(map(repr, choices))) != len(choices):
            raise MlscaleError(f"{name}: 'choices' lists a value twice")
        for c in choices:
            _check_value(name, c)
        return Param(name, kind, choices=tuple(choices))
    return _numeric(name, kind, spec)


def _numeric(name: str, kind: str, spec: dict) -> Param:
    number = int if kind == "int" else float

    def num(key, required=True):
        v = spec.get(key)
        if v is None and not required:
            return None
        if isinstance(v, bool) or not isinstance(v, (int, float)) or (kind == "int" and isinstance(v, float)
                                                                         and not v.is_integer()):
            raise MlscaleError(f"{name}: '{key}' must be {'an integer' if kind == 'int' else 'a number'}, got {v!r}")
        if not math.isfinite(v):
            raise MlscaleError(f"{name}: '{key}' must be finite, got {v!r}")
        return number(v)

    low, high = num("low"), num("high")
    step = num("step", required=False)
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise MlscaleError(f"{name}: 'log' must be true or false, got {log!r}")
    if low > high:
        raise MlscaleError(f"{name}: low ({low}) must not exceed high ({high})")
    if log and low <= 0:
        raise MlscaleError(f"{name}: a log scale needs low > 0, got {low}")
    if step is not None and step <= 0:
        raise MlscaleError(f"{name}: 'step' must be > 0, got {step}")
    if log and step is not None and not (kind == "int" and step == 1):
        raise MlscaleError(f"{name}: give 'log' or 'step', not both")
    values = spec.get("values", ())
    if not isinstance(values, (list, tuple)):
        raise MlscaleError(f"{name}: 'values' must be a list of grid points")
    values = tuple(_grid_value(name, kind, v, low, high) for v in values)
    for v in (low, high, *values):
        _check_value(name, v)
    return Param(name, kind, low=low, high=high, log=log, step=step, values=values)


def _grid_value(name, kind, v, low, high):
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (kind == "int" and isinstance(v, float)
                                                                     and not v.is_integer()):
        raise MlscaleError(f"{name}: grid values must be numbers, got {v!r}")
    if not (math.isfinite(v) and low <= v <= high):
        raise MlscaleError(f"{name}: grid value {v} is outside [{low}, {high}]")
    return int(v) if kind == "int" else float(v)


def _check_value(name: str, value) -> None:
    """The field's own rules (type, range, choices), as `mlscale train --NAME VALUE` applies them."""
    try:
        build_config({}, [(name, "null" if value is None else str(value))])
    except MlscaleError as err:
        raise MlscaleError(f"{name}: {value!r} is not a valid value ({err})") from None
