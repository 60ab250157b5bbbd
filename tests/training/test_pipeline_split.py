"""Cutting models into pipeline stages, and the pipeline's config rules: one process, no workers."""

import itertools
import random
from collections import OrderedDict

import pytest
import torch
from torch import nn

from mlscale import MlscaleError, TrainConfig, train
from mlscale.config import ModelConfig, build_config, validate
from mlscale.training.distributed import split as sp
from mlscale.training.models import MODELS


@pytest.mark.parametrize("name", sorted(MODELS))
def test_pipeline_layers_in_turn_compute_the_models_forward(name):
    torch.manual_seed(0)
    model = MODELS[name](ModelConfig(name=name, depth=3), (1, 8, 8), 10).eval()
    x = torch.randn(5, 1, 8, 8)
    h = x
    for layer in sp.model_layers(model):
        h = layer.module(h)
    torch.testing.assert_close(h, model(x), atol=1e-6, rtol=0)


def _brute_force(costs, n_stages):
    n = len(costs)
    best = min(max(sum(costs[a:b]) for a, b in zip((0, *cuts), (*cuts, n)))
               for cuts in itertools.combinations(range(1, n), n_stages - 1))
    return best


def test_balanced_bounds_minimise_the_largest_stage():
    rng = random.Random(0)
    for _ in range(200):
        n = rng.randint(2, 9)
        costs = [float(rng.choice([0, 1, 5, 17, 100])) for _ in range(n)]
        s = rng.randint(2, n)
        bounds = sp.balanced_bounds(costs, s)
        assert bounds[0] == 0 and bounds[-1] == n and len(bounds) == s + 1
        assert all(b > a for a, b in zip(bounds, bounds[1:]))  # contiguous, none empty
        assert max(sum(costs[a:b]) for a, b in zip(bounds, bounds[1:])) == _brute_force(costs, s)


def test_mlp_is_split_by_parameter_count():
    model = MODELS["mlp"](ModelConfig(width=128, depth=2), (64,), 10)
    split = sp.choose_split(sp.model_layers(model), 2, "params", [])
    # Flatten, Linear(64,128), ReLU, Dropout | Linear(128,128), ReLU, Dropout, Linear(128,10)
    assert split.stage_costs() == [64 * 128 + 128, 128 * 128 + 128 + 128 * 10 + 10]


def test_split_by_measured_time_covers_every_layer():
    model = MODELS["cnn"](ModelConfig(name="cnn", width=8, depth=2), (1, 8, 8), 10)
    layers = sp.model_layers(model)
    split = sp.choose_split(layers, 2, "time", [], torch.randn(4, 1, 8, 8))
    assert split.how == "time" and len(split.costs) == len(layers) and all(c > 0 for c in split.costs)
    assert all(p.grad is None for p in model.parameters())  # measuring leaves the model as it was


def test_measuring_time_leaves_buffers_and_the_random_stream_alone():
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Dropout(0.5), nn.Linear(8, 2))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(3)
    sp.choose_split(sp.model_layers(model), 2, "time", [], torch.randn(16, 4))
    after_split = torch.rand(3)
    torch.manual_seed(3)
    torch.randn(16, 4)
    torch.testing.assert_close(after_split, torch.rand(3), rtol=0, atol=0)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)


def test_user_sequential_is_cut_at_named_points():
    model = nn.Sequential(OrderedDict(embed=nn.Linear(4, 8), act=nn.Tanh(), mid=nn.Linear(8, 8), out=nn.Linear(8, 2)))
    layers = sp.model_layers(model)
    assert sp.named_bounds(layers, ["mid"], 2) == (0, 2, 4)
    assert sp.named_bounds(layers, ["act", "out"], 3) == (0, 1, 3, 4)
    with pytest.raises(MlscaleError, match="no layer named 'head'; the layers are embed, act, mid, out"):
        sp.named_bounds(layers, ["head"], 2)
    with pytest.raises(MlscaleError, match="must be in forward order"):
        sp.named_bounds(layers, ["out", "act"], 3)
    with pytest.raises(MlscaleError, match="must be in forward order"):
        sp.named_bounds(layers, ["embed"], 2)
    with pytest.raises(MlscaleError, match=r"stage 1 would hold only layers without trainable parameters \(act\)"):
        sp.choose_split(layers, 3, "params", ["act", "mid"])


class _NotSequential(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 2)

    def forward(self, x):
        return self.lin(x)


def test_a_model_that_is_not_a_sequence_is_a_clear_error():
    with pytest.raises(MlscaleError, match="nn.Sequential, or a module with a pipeline_layers"):
        sp.model_layers(_NotSequential())
    with pytest.raises(MlscaleError, match="fewer than pipeline.n_stages"):
        sp.balanced_bounds([1.0, 2.0], 3)


@pytest.mark.parametrize("overrides, message", [
    ({"workers": "3"}, r"pipeline.n_stages \(2\) must divide workers \(3\)"),
    ({"batch_size": "30", "pipeline.n_microbatches": "4"}, r"batch_size \(30\) must be divisible by pipeline.n_microbatches \(4\)"),
    ({"pipeline.n_microbatches": "1"}, r"1f1b needs n_microbatches >= n_stages \(1 < 2\)"),
    ({"grad_accum_steps": "2"}, "grad_accum_steps must be 1 with strategy pipeline"),
    ({"pipeline.split_points": "3,6"}, r"split_points names 2 layer\(s\); 2 stages need 1"),
    ({"pipeline.n_stages": "1"}, "pipeline.n_stages must be > 1, got 1"),
    ({"pipeline.schedule": "zb"}, "pipeline.schedule must be one of gpipe, 1f1b"),
])
def test_pipeline_config_errors_name_the_field(overrides, message):
    pairs = [("strategy", "pipeline"), ("workers", "2"), *overrides.items()]
    with pytest.raises(MlscaleError, match=message):
        validate(build_config({}, pairs))


def test_pipeline_with_one_worker_is_a_clear_error(tmp_path):
    cfg = TrainConfig(strategy="pipeline", out_dir=str(tmp_path), progress=False, epochs=1)
    with pytest.raises(MlscaleError, match="strategy pipeline needs workers = pipeline.n_stages x replicas"):
        train(cfg)


def test_cli_reports_a_pipeline_mistake_in_one_line(tmp_path):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "mlscale", "train", "--strategy", "pipeline", "--workers", "2",
                           "--batch_size", "30", "--out_dir", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "mlscale train: error: batch_size (30) must be divisible by pipeline.n_microbatches (4)"]
