"""Calibration: the alpha-beta fit on hand-made data, and each real measurement on this machine."""

import pytest
import torch

from mlscale import TrainConfig
from mlscale.planning import calibrate as cb
from mlscale.planning.costmodel import Link, ring_allreduce_s


@pytest.mark.parametrize("n", [2, 4, 8])
def test_fit_recovers_the_link_that_made_the_times(n):
    link = Link(alpha_s=50e-6, bandwidth_bytes_per_s=2e9)
    sizes = [1024, 65536, 1 << 20, 1 << 24]
    fitted = cb.fit_link(sizes, [ring_allreduce_s(s, n, link) for s in sizes], n)
    assert fitted.alpha_s == pytest.approx(50e-6, rel=1e-6)
    assert fitted.bandwidth_bytes_per_s == pytest.approx(2e9, rel=1e-6)


def test_idle_latency_splits_the_constant_into_hops_and_the_wait_for_the_ranks():
    # ranks arriving from compute paid 2 ms more per all-reduce than idle ranks lined up (2 hops of 50 us)
    made = Link(alpha_s=50e-6, bandwidth_bytes_per_s=2e9, sync_s=0.002)
    sizes = [1024, 65536, 1 << 20, 1 << 24]
    times = [ring_allreduce_s(s, 2, made) + made.sync_s for s in sizes]
    split = cb.fit_link(sizes, times, 2, idle_s=100e-6)
    assert split.alpha_s == pytest.approx(50e-6) and split.sync_s == pytest.approx(0.002)
    assert split.bandwidth_bytes_per_s == pytest.approx(2e9)
    whole = cb.fit_link(sizes, times, 2)  # without the idle latency, alpha holds it all
    assert whole.alpha_s == pytest.approx(50e-6 + 0.001) and whole.sync_s == 0.0
    # idle slower than the fit's constant (noise): no negative wait, alpha as fitted
    assert cb.fit_link(sizes, times, 2, idle_s=0.01).sync_s == 0.0


def test_fit_refuses_times_that_do_not_grow():
    from mlscale.errors import RunFailed

    with pytest.raises(RunFailed, match="do not grow"):
        cb.fit_link([1024, 1 << 20], [1e-3, 1e-4], 2)


def test_a_noisy_small_message_does_not_break_the_fit():
    # the least-squares slope goes negative (a slow 64 KiB outlier); fall back to the ends:
    # alpha from the fastest time, bandwidth from the largest message's extra time
    fitted = cb.fit_link([4096, 65536, 1 << 20], [4e-4, 9e-4, 4.5e-4], 2)
    assert fitted.alpha_s == pytest.approx(2e-4)
    assert fitted.bandwidth_bytes_per_s == pytest.approx((1 << 20) / 0.5e-4)


def test_step_split_gradients_and_backward_share(small_config):
    cfg = small_config()
    m = cb.measure_step(cfg, steps=10, warmup_steps=5, threads=1)
    assert m.steps == 10 and m.step_s > 0 and 0 < m.input_wait_s < m.step_s and m.compute_s > 0
    from mlscale.training.data import build_data
    from mlscale.training.models import build_model

    data = build_data(cfg.data, cfg.seed)
    model = build_model(cfg.model, data.input_shape, data.n_classes)
    n_bytes = sum(p.numel() * 4 for p in model.parameters())
    assert sum(cb.gradient_buckets(cfg)) == n_bytes  # fp32 gradients, every parameter once
    assert 0 < cb.backward_fraction(cfg, repeats=3, threads=1) < 1
    assert cb.matmul_flops(threads=1, n=128, seconds=0.05) > 0
    # the MLP's step: per linear layer at least a matmul forward and two backward, plus AdamW's updates
    n_linear = sum(isinstance(m, torch.nn.Linear) for m in model.modules())
    assert cb.count_ops(cfg) >= 3 * n_linear + len(list(model.parameters()))


@pytest.mark.multiprocess
@pytest.mark.parametrize("with_job", [False, True])
def test_allreduce_benchmark_on_gloo(small_config, with_job):
    # before each all-reduce the ranks run the job's DDP step (timed: the synchronized compute),
    # or compute 5 ms of matrix products, as after a backward pass
    job = small_config() if with_job else None
    fit = cb.benchmark_allreduce(2, sizes_bytes=(4096, 1 << 20, 1 << 22), repeats=10, timeout_s=60, compute_s=0.005,
                                 job=job)
    assert fit.backend == "gloo" and fit.n_workers == 2 and len(fit.times_s) == 3
    assert all(t > 0 for t in fit.times_s)
    assert fit.link.alpha_s >= 0 and fit.link.bandwidth_bytes_per_s > 0
    assert fit.max_rel_error() >= 0
    assert (fit.compute_s > 0) if with_job else fit.compute_s is None
    assert fit.idle_s > 0 and fit.link.sync_s >= 0


def test_repeated_benchmarks_combine_by_median_per_size():
    from mlscale.planning.validate import _median_fit

    sizes, link = (1024, 1 << 20, 1 << 22), Link(100e-6, 1e9)
    fits = [cb.LinkFit(link, 2, "gloo", sizes, tuple(ring_allreduce_s(s, 2, link) * k for s in sizes), compute_s=c)
            for k, c in ((1.0, 0.003), (5.0, 0.009), (1.0, 0.002))]  # one slow outlier among three
    combined = _median_fit(fits)
    assert combined.times_s == fits[0].times_s and combined.compute_s == 0.003
    assert combined.link.alpha_s == pytest.approx(100e-6) and combined.link.bandwidth_bytes_per_s == pytest.approx(1e9)
