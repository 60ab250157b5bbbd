"""The engine's step split: input-pipeline wait measured per step, train time that includes the last
partial logging window, and DDP's own bucket layout unless the user sets a bucket size."""

import json

import pytest
import torch
import torch.distributed as dist
from torch import nn

import mlscale
from mlscale.training.distributed.ddp import DDPStrategy


def test_input_wait_is_measured_and_part_of_the_step(small_config):
    result = mlscale.train(small_config(epochs=1))
    assert 0 < result.input_wait_s_per_step < result.step_time_s
    records = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    waits = [r["input_wait_s"] for r in records if r["kind"] == "train"]
    assert waits == sorted(waits) and waits[-1] > 0  # cumulative
    summary = json.loads((result.run_dir / "summary.json").read_text())
    assert summary["input_wait_s_per_step"] == pytest.approx(result.input_wait_s_per_step)


def test_a_stop_between_log_windows_keeps_the_partial_window_time(small_config):
    # 7 steps with a record every 10: before the fix, the 7 steps' time was dropped (step time 0)
    result = mlscale.train(small_config(epochs=1, stop_at_step=7, log_every_steps=10))
    assert result.steps == 7 and not result.completed
    assert result.train_time_s > 0 and result.step_time_s == pytest.approx(result.train_time_s / 7)
    assert result.samples_per_s > 0
    resumed = mlscale.train(small_config(epochs=1, log_every_steps=10), resume=result.run_dir)
    assert resumed.completed and resumed.train_time_s > result.train_time_s


@pytest.fixture
def one_rank_group(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def test_ddp_keeps_its_small_first_bucket_unless_a_size_is_set(one_rank_group):
    model = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 2))
    default = DDPStrategy(torch.device("cpu")).setup_module(model)
    assert default.bucket_bytes_cap_default  # DDP's 1 MB first bucket, then 25 MB
    chosen = DDPStrategy(torch.device("cpu"), bucket_cap_mb=5.0).setup_module(nn.Linear(8, 2))
    assert not chosen.bucket_bytes_cap_default and chosen.bucket_bytes_cap == 5 * 1024 * 1024
    del default, chosen
