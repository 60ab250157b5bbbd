"""The cost model on hand-computed cases."""

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mlscale.planning.costmodel import (
    MIB, Link, StepProfile, amdahl_limit, bucket_allreduce_s, ddp_buckets, exposed_comm_s, predict_step,
    ring_allreduce_s, speedup,
)

LINK = Link(alpha_s=1e-3, bandwidth_bytes_per_s=1e6)  # 1 ms per message, 1 MB/s: easy arithmetic


def test_one_worker_communicates_nothing():
    assert ring_allreduce_s(10_000, 1, LINK) == 0.0
    p = StepProfile(compute_s=0.3, backward_s=0.2, input_wait_s=0.1, bucket_bytes=(4000, 6000))
    step = predict_step(p, 1, LINK)
    assert step.comm_s == step.exposed_comm_s == 0.0 and step.step_s == pytest.approx(0.4)


def test_ring_allreduce_volume_and_latency():
    # N=2: each byte crosses a link once each way: 2*(1/2)*S/B = 1e4/1e6 = 10 ms, plus 2 messages of 1 ms
    assert ring_allreduce_s(10_000, 2, LINK) == pytest.approx(0.010 + 0.002)
    # N=4: 2*3/4 * 10 ms = 15 ms, plus 6 ms
    assert ring_allreduce_s(10_000, 4, LINK) == pytest.approx(0.015 + 0.006)
    # the bandwidth term tends to 2*S/B as N grows; latency grows linearly
    assert ring_allreduce_s(10_000, 1001, Link(0.0, 1e6)) == pytest.approx(0.02 * 1000 / 1001)


def test_overlap_hand_computed():
    # two buckets of 5 kB, backward 40 ms: bucket 1 ready at 20 ms, its all-reduce (5+2 ms) ends at 27 ms;
    # bucket 2 ready at 40 ms, ends at 47 ms: 7 ms exposed
    assert exposed_comm_s((5000, 5000), 0.040, 2, LINK) == pytest.approx(0.007)
    # a short backward (4 ms): bucket 1 ends at 2+7=9 ms, bucket 2 starts then, ends at 16 ms: 12 ms exposed
    assert exposed_comm_s((5000, 5000), 0.004, 2, LINK) == pytest.approx(0.012)


def test_the_wait_for_the_ranks_is_paid_once_a_step_on_the_first_bucket():
    link = Link(alpha_s=1e-3, bandwidth_bytes_per_s=1e6, sync_s=0.003)
    assert bucket_allreduce_s((5000, 5000), 2, link) == pytest.approx([0.010, 0.007])
    assert bucket_allreduce_s((5000, 5000), 1, link) == [0.0, 0.0]
    # backward 40 ms: bucket 1 ready at 20 ms, ends at 30; bucket 2 ready at 40, ends at 47: the wait is hidden
    assert exposed_comm_s((5000, 5000), 0.040, 2, link) == pytest.approx(0.007)
    # backward 4 ms: bucket 1 ends at 2+10 = 12 ms, bucket 2 at 19: 15 ms exposed
    assert exposed_comm_s((5000, 5000), 0.004, 2, link) == pytest.approx(0.015)
    p = StepProfile(compute_s=0.05, backward_s=0.04, input_wait_s=0.0, bucket_bytes=(5000, 5000))
    assert predict_step(p, 2, link).comm_s == pytest.approx(0.017)
    # it does not grow with N as the ring's hops do: 64 workers pay it once, and 126 alphas
    one = StepProfile(compute_s=0.05, backward_s=0.04, input_wait_s=0.0, bucket_bytes=(5000,))
    assert predict_step(one, 64, link).comm_s == pytest.approx(ring_allreduce_s(5000, 64, link) + 0.003)
    assert predict_step(one, 1, link).comm_s == 0.0


@given(st.lists(st.integers(1, 50 * MIB), min_size=1, max_size=8), st.floats(0.0, 5.0), st.integers(1, 512),
       st.floats(1e-7, 1e-2), st.floats(1e7, 1e11), st.floats(0.0, 1e-2))
def test_overlap_bounds(buckets, backward_s, n, alpha, bw, sync):
    link = Link(alpha, bw, sync)
    times = bucket_allreduce_s(tuple(buckets), n, link)
    total = sum(times)
    exposed = exposed_comm_s(tuple(buckets), backward_s, n, link)
    hidden_best = max(total - backward_s, times[-1])  # fully hidden but the last
    assert hidden_best - 1e-12 <= exposed <= total + 1e-12  # .. fully exposed


def test_amdahl_limit_of_a_serial_input_pipeline():
    # half of a 0.2 s input wait is one shared reader: step(1) = 0.8 + 0.2 = 1 s; serial 0.1 s -> at most 10x
    p = StepProfile(compute_s=0.8, backward_s=0.5, input_wait_s=0.2, bucket_bytes=(), serial_fraction=0.5)
    assert amdahl_limit(p) == pytest.approx(10.0)
    free = Link(0.0, math.inf)
    assert speedup(p, 2, free) == pytest.approx(2 * 1.0 / 1.1)
    assert speedup(p, 10**6, free) < 10.0 and speedup(p, 10**6, free) == pytest.approx(10.0, rel=1e-4)
    assert amdahl_limit(StepProfile(1.0, 0.5, 0.2, ())) == math.inf


def test_perfect_scaling_without_communication_or_serial_input():
    p = StepProfile(compute_s=0.5, backward_s=0.3, input_wait_s=0.1, bucket_bytes=())
    assert speedup(p, 64, LINK) == pytest.approx(64.0)


def test_ddp_buckets_follow_ddp_caps():
    params = [MIB // 2] * 6  # 3 MiB of gradients in 6 parameters of 0.5 MiB
    assert ddp_buckets(params) == (MIB, 2 * MIB)  # 1 MiB first bucket, then up to 25 MiB
    assert ddp_buckets(params, bucket_cap_mb=1.0) == (MIB, MIB, MIB)
    assert ddp_buckets([100, 200, 300]) == (600,)
    assert sum(ddp_buckets([7, MIB, 3 * MIB, 5])) == 7 + 4 * MIB + 5
