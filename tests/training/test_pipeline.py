"""Real pipeline parallelism: 2 (or 4) processes, gloo, loopback, against one process on the whole batch."""

import json
from collections import OrderedDict

import pytest
import torch
from torch import nn

from mlscale import RunFailed, train
from mlscale.training.data import ArrayDataset

pytestmark = pytest.mark.multiprocess


def _params(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()])


@pytest.mark.parametrize("schedule, n_microbatches", [("gpipe", 4), ("1f1b", 8)])
def test_two_stages_match_one_process_on_the_whole_batch(small_config, schedule, n_microbatches):
    common = dict(epochs=1, batch_size=64, model__depth=3, model__dropout=0.0)
    one = train(small_config(**common))
    two = train(small_config(workers=2, strategy="pipeline", pipeline__schedule=schedule,
                             pipeline__n_microbatches=n_microbatches, **common))
    assert two.steps == one.steps == 22
    torch.testing.assert_close(_params(two.model), _params(one.model), atol=1e-5, rtol=0)
    assert abs(two.test_accuracy - one.test_accuracy) < 1e-9  # evaluation through the pipeline
    report = json.loads((two.run_dir / "summary.json").read_text())["pipeline"]
    assert report["schedule"] == schedule and report["split"] == "params"
    assert report["bubble_fraction_theory"] == pytest.approx(1 / (n_microbatches + 1))
    assert 0 < report["bubble_fraction_measured"] < 1
    stages = report["stages"]
    assert [s["stage"] for s in stages] == [0, 1]
    assert sum(s["params"] for s in stages) == sum(p.numel() for p in one.model.parameters())
    for s in stages:
        assert 0 < s["busy_s"] < s["step_s"]
        assert 2 * s["param_bytes"] <= s["optimizer_bytes"] < 2 * s["param_bytes"] + 1024  # AdamW: 2 moments + steps
        assert s["activation_peak_bytes"] > 0


def test_two_stages_x_two_replicas_with_clipping_match_one_process(small_config):
    """World 4 = 2 stages x 2 replicas (a 2-D mesh); the global gradient norm spans both stages."""
    common = dict(epochs=1, grad_clip_norm=0.5, optim__name="sgd", optim__lr=0.1)
    one = train(small_config(batch_size=64, **common))
    four = train(small_config(workers=4, batch_size=32, strategy="pipeline", **common))
    assert four.steps == one.steps
    torch.testing.assert_close(_params(four.model), _params(one.model), atol=1e-5, rtol=0)
    report = json.loads((four.run_dir / "summary.json").read_text())["pipeline"]
    assert report["n_replicas"] == 2 and len(report["stages"]) == 2


def test_resume_from_pipelined_to_not_and_back(small_config):
    """Checkpoints hold the whole model under its own names: a pipelined run stops, a 1-process run
    continues it, and a pipelined run finishes it, to the uninterrupted run's parameters."""
    common = dict(epochs=1, batch_size=64)
    whole = train(small_config(**common))
    piped = train(small_config(workers=2, strategy="pipeline", stop_at_step=8, **common))
    single = train(small_config(stop_at_step=15, **common), resume=piped.run_dir)
    assert not piped.completed and not single.completed and single.steps == 15
    resumed = train(small_config(workers=2, strategy="pipeline", pipeline__schedule="gpipe", **common),
                    resume=piped.run_dir)
    assert resumed.completed and resumed.steps == whole.steps
    torch.testing.assert_close(_params(resumed.model), _params(whole.model), atol=1e-5, rtol=0)


def _data():
    x = torch.randn(256, 4, generator=torch.Generator().manual_seed(1))
    return ArrayDataset(x, (x[:, 0] > x[:, 1]).long())


def _user_model():
    torch.manual_seed(0)
    return nn.Sequential(OrderedDict(embed=nn.Linear(4, 16), act=nn.Tanh(), hidden=nn.Linear(16, 16),
                                     act2=nn.Tanh(), out=nn.Linear(16, 2)))


def test_a_user_sequential_split_where_the_user_says(small_config):
    data = _data()
    one = train(small_config(batch_size=16), model=_user_model(), train_data=data, test_data=data)
    two = train(small_config(batch_size=16, workers=2, strategy="pipeline", pipeline__split_points=["out"]),
                model=_user_model(), train_data=data, test_data=data)
    torch.testing.assert_close(_params(two.model), _params(one.model), atol=1e-5, rtol=0)
    report = json.loads((two.run_dir / "summary.json").read_text())["pipeline"]
    assert report["split"] == "split_points"
    assert [s["layers"] for s in report["stages"]] == ["embed-act2", "out"]


class RaisesOnThirdCall(nn.Module):
    """A layer that raises at its third forward pass (a bug in a user's stage)."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        if self.calls == 3:
            raise ValueError("injected failure in a user layer")
        return x


def test_a_stage_that_raises_fails_the_run_naming_stage_and_cause(small_config):
    data = _data()
    model = nn.Sequential(OrderedDict(first=nn.Linear(4, 8), act=nn.Tanh(), bad=RaisesOnThirdCall(),
                                      out=nn.Linear(8, 2)))
    with pytest.raises(RunFailed, match=r"worker rank 1 failed: RunFailed: pipeline stage 1 \(layers bad-out\) "
                                        r"failed: ValueError: injected failure in a user layer"):
        # no hang: one would end in small_config's 60 s collective timeout, whose error does not match
        train(small_config(batch_size=16, workers=2, strategy="pipeline", pipeline__split_points=["bad"]),
              model=model, train_data=data, test_data=data)
