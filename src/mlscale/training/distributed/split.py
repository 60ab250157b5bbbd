"""Cutting a model into pipeline stages: its layers in order, and contiguous stages balanced by
parameter count or by measured per-layer time, or cut where the user says.

A stage is a contiguous run of layers, so only the activation at a boundary travels between
workers. Balance matters because a pipeline runs at the pace of its slowest stage (GPipe, Huang et
al. 2019, section 2.2): the split minimises the largest stage's cost.
"""

from __future__ import annotations

import copy
import statistics
import time
from dataclasses import dataclass

import torch
from torch import nn

from mlscale.errors import MlscaleError


@dataclass(frozen=True)
class Layer:
    """One piece of the model's forward pass: `name` as the user refers to it."""

    name: str
    module: nn.Module


@dataclass(frozen=True)
class Split:
    """Stage s runs layers[bounds[s]:bounds[s + 1]]; `how` says how the bounds were chosen."""

    bounds: tuple[int, ...]
    how: str  # "params", "time" or "split_points"
    costs: tuple[float, ...]  # per layer: parameters, or seconds of forward + backward

    def stage_costs(self) -> list[float]:
        return [sum(self.costs[a:b]) for a, b in zip(self.bounds, self.bounds[1:])]


def model_layers(model: nn.Module) -> list[Layer]:
    """The model's forward pass as ordered layers: its `pipeline_layers()` (named by index), or the
    children of an `nn.Sequential` (named as the Sequential names them)."""
    if hasattr(model, "pipeline_layers"):
        layers = [Layer(str(i), m) for i, m in enumerate(model.pipeline_layers())]
    elif isinstance(model, nn.Sequential):
        layers = [Layer(name, m) for name, m in model.named_children()]
    else:
        raise MlscaleError(f"strategy pipeline needs a model whose forward pass is a sequence of layers: an "
                           f"nn.Sequential, or a module with a pipeline_layers() method; {type(model).__name__} "
                           f"is neither")
    owned = {id(p) for layer in layers for p in layer.module.parameters()}
    missing = [n for n, p in model.named_parameters() if id(p) not in owned]
    if missing:
        raise MlscaleError(f"{type(model).__name__}'s pipeline layers leave out parameter(s) {', '.join(missing[:3])}: "
                           f"every parameter must belong to one of its layers")
    return layers


def param_costs(layers: list[Layer]) -> list[float]:
    """Parameters per layer (a parameter shared by two layers counts where it is first seen)."""
    seen, costs = set(), []
    for layer in layers:
        fresh = [p for p in layer.module.parameters() if id(p) not in seen]
        seen.update(id(p) for p in fresh)
        costs.append(float(sum(p.numel() for p in fresh)))
    return costs


def time_costs(layers: list[Layer], example: torch.Tensor, repeats: int = 5) -> list[float]:
    """Median seconds of each layer's forward + backward on `example` (one micro-batch), each layer
    fed the previous layer's real output. Measured on copies of the layers, with the random number
    generator's state set back: the model, its buffers (batch-norm statistics) and the run's
    random stream are left as they were."""
    costs, x = [], example
    with torch.random.fork_rng(devices=[]):
        for layer in layers:
            module, times = copy.deepcopy(layer.module), []
            for _ in range(repeats):
                inp = x.detach().requires_grad_(x.is_floating_point())
                t0 = time.perf_counter()
                out = module(inp)
                if out.requires_grad:
                    out.float().sum().backward()
                times.append(time.perf_counter() - t0)
            costs.append(statistics.median(times))
            x = out.detach()
    return costs


def balanced_bounds(costs: list[float], n_stages: int) -> tuple[int, ...]:
    """Contiguous, non-empty stages minimising the largest stage's total cost (dynamic programming
    over cut positions; ties go to the earliest cut)."""
    n = len(costs)
    if n < n_stages:
        raise MlscaleError(f"the model has {n} pipeline layer(s), fewer than pipeline.n_stages ({n_stages})")
    prefix = [0.0]
    for c in costs:
        prefix.append(prefix[-1] + c)
    inf = float("inf")
    # best[s][i]: the smallest possible largest cost cutting layers[:i] into s stages
    best = [[inf] * (n + 1) for _ in range(n_stages + 1)]
    cut = [[0] * (n + 1) for _ in range(n_stages + 1)]
    best[0][0] = 0.0
    for s in range(1, n_stages + 1):
        for i in range(s, n + 1):
            for j in range(s - 1, i):
                value = max(best[s - 1][j], prefix[i] - prefix[j])
                if value < best[s][i]:
                    best[s][i], cut[s][i] = value, j
    bounds, i = [n], n
    for s in range(n_stages, 0, -1):
        i = cut[s][i]
        bounds.append(i)
    return tuple(reversed(bounds))


def named_bounds(layers: list[Layer], split_points: list[str], n_stages: int) -> tuple[int, ...]:
    """Bounds from the names of the layers where stages 2.. begin, in order."""
    names = [layer.name for layer in layers]
    if len(split_points) != n_stages - 1:
        raise MlscaleError(f"pipeline.split_points names {len(split_points)} layer(s); {n_stages} stages need "
                           f"{n_stages - 1}")
    starts = []
    for point in split_points:
        if point not in names:
            raise MlscaleError(f"pipeline.split_points: no layer named {point!r}; the layers are "
                               f"{', '.join(names)}")
        starts.append(names.index(point))
    bounds = (0, *starts, len(layers))
    if any(b <= a for a, b in zip(bounds, bounds[1:])):
        raise MlscaleError(f"pipeline.split_points {', '.join(split_points)} must be in forward order, after the "
                           f"first layer ({names[0]}), each stage at least one layer")
    return bounds


def choose_split(layers: list[Layer], n_stages: int, how: str, split_points: list[str],
                 example: torch.Tensor | None = None) -> Split:
    """The split a run uses: the user's points when given, else balanced by `how`."""
    if split_points:
        split = Split(named_bounds(layers, split_points, n_stages), "split_points", tuple(param_costs(layers)))
    else:
        costs = time_costs(layers, example) if how == "time" else param_costs(layers)
        split = Split(balanced_bounds(costs, n_stages), how, tuple(costs))
    for s, (a, b) in enumerate(zip(split.bounds, split.bounds[1:])):
        if not any(p.requires_grad for layer in layers[a:b] for p in layer.module.parameters()):
            names = ", ".join(layer.name for layer in layers[a:b])
            raise MlscaleError(f"pipeline stage {s} would hold only layers without trainable parameters ({names}): "
                               f"use fewer pipeline.n_stages or other pipeline.split_points")
    return split
