"""Micro-benchmark sanity on the CPU: positive rates, spread around the median, work counted right."""

import pytest
import torch

from mlscale.errors import MlscaleError
from mlscale.processors.microbench import copy_bandwidth, matmul_flops, rate, time_op


def test_matmul_flops_positive_with_spread_around_the_median():
    m = matmul_flops("cpu", "fp32", n=128, repeats=4, min_sample_s=0.002)
    assert m.unit == "FLOP/s" and m.repeats == 4
    assert 0 < m.min <= m.median <= m.max


def test_bf16_matmul_runs_on_cpu():
    m = matmul_flops("cpu", "bf16", n=64, repeats=2, min_sample_s=0.001)
    assert m.median > 0


def test_copy_bandwidth_positive_with_spread():
    m = copy_bandwidth("cpu", 2**20, repeats=3, min_sample_s=0.002)
    assert m.unit == "bytes/s" and 0 < m.min <= m.median <= m.max


def test_time_op_runs_enough_calls_per_sample_and_rate_uses_the_median():
    calls = []
    samples, per_sample = time_op(lambda: calls.append(1), torch.device("cpu"), warmup=2, repeats=3,
                                  min_sample_s=0.001)
    assert len(samples) == 3 and per_sample > 1
    assert len(calls) == 2 + 3 * per_sample  # the (timed) warm-up calls, then the timed samples
    r = rate(10.0, [1.0, 2.0, 5.0], "x/s")
    assert (r.median, r.min, r.max) == (5.0, 2.0, 10.0)


def test_bad_arguments_are_clear_errors():
    with pytest.raises(MlscaleError, match="unknown dtype"):
        matmul_flops("cpu", "int3")
    with pytest.raises(MlscaleError, match="repeats"):
        matmul_flops("cpu", "fp32", n=8, repeats=0)
