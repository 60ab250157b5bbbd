"""Checking the planner where it can be checked: predict the step time for the worker counts this
machine holds, then really run them and compare (`mlscale plan --validate`, bench/plan_accuracy.py)."""

from __future__ import annotations

import math
import os
import statistics
from dataclasses import dataclass, replace

from mlscale.config import TrainConfig
from mlscale.planning import calibrate as cb
from mlscale.planning.costmodel import Link, StepPrediction, StepProfile, predict_step

MIN_WINDOW_S = 1.0  # the shortest timed window of a measured run (more steps for short steps)


@dataclass(frozen=True)
class Check:
    """Predicted vs measured step of one worker count (seconds)."""

    n_workers: int
    threads: int  # per worker
    predicted: StepPrediction
    measured_step_s: float
    link_fit: cb.LinkFit | None = None  # the all-reduce fitted for this count (None for 1 worker)
    alone_compute_s: float = 0.0  # one worker's compute with the host to itself (at `threads`)

    @property
    def error(self) -> float:
        """Relative error of the prediction: +0.10 = predicted 10% slower than measured."""
        return self.predicted.step_s / self.measured_step_s - 1


def local_counts(counts: list[int]) -> list[int]:
    """Of `counts`, those this machine holds with at least one core per worker (at least [1])."""
    cores = os.cpu_count() or 1
    return [n for n in counts if n <= cores] or [1]


def validate(cfg: TrainConfig, counts: list[int] | None = None, *, steps: int = 20, repeats: int = 1) -> list[Check]:
    """For each local count n (threads per worker = cores / n, as the launcher gives them): measure
    one worker's step alone (its input wait; its compute for n = 1), benchmark the all-reduce among
    n processes that each run the job's step before it (the link, and the step's compute while the
    workers synchronize every step, as they do in the real run), predict n workers from these, then
    run n workers for real. With `repeats`, measurements and real runs alternate and the medians are
    compared (a shared machine is noisy)."""
    counts = counts or local_counts([1, 2])
    cores = os.cpu_count() or 1
    buckets = cb.gradient_buckets(cfg)
    on_gpus = cfg.device.startswith("cuda")
    checks = []
    for n in counts:
        threads = max(1, cores // n)
        frac = cb.backward_fraction(cfg, threads=threads)
        # every timed window at least MIN_WINDOW_S long: a few ms steps over a few steps is noise here
        n_steps = max(steps, math.ceil(MIN_WINDOW_S / cb.measure_step(cfg, steps=steps, threads=threads).step_s))
        alone, fits, runs = [], [], []
        for _ in range(repeats):  # alternate: a load that comes and goes hits both alike
            alone.append(cb.measure_step(cfg, steps=n_steps, threads=threads))
            if n > 1:  # gloo among n processes here (NCCL needs a GPU per worker, as the real run does)
                fits.append(cb.benchmark_allreduce(n, device="cuda" if on_gpus else "cpu", threads=threads,
                                                   compute_s=alone[-1].compute_s, job=cfg))
            runs.append(cb.measure_step(cfg, steps=n_steps, threads=threads, workers=n))
        alone_compute = statistics.median(m.compute_s for m in alone)
        link_fit = _median_fit(fits) if fits else None
        compute = link_fit.compute_s if link_fit else alone_compute
        profile = StepProfile(compute_s=compute, backward_s=compute * frac,
                              input_wait_s=statistics.median(m.input_wait_s for m in alone), bucket_bytes=buckets)
        link = link_fit.link if link_fit else Link(0.0, 1.0)
        predicted = predict_step(profile, n, link, overlap=on_gpus or n * threads < cores)
        checks.append(Check(n, threads, predicted, statistics.median(m.step_s for m in runs), link_fit, alone_compute))
    return checks


def _median_fit(fits: list[cb.LinkFit]) -> cb.LinkFit:
    """One fit from repeated benchmarks: the median time per size and idle latency, refitted; the
    median compute."""
    first = fits[0]
    times = tuple(statistics.median(f.times_s[i] for f in fits) for i in range(len(first.sizes_bytes)))
    idle = statistics.median(f.idle_s for f in fits) if all(f.idle_s is not None for f in fits) else None
    return replace(first, link=cb.fit_link(first.sizes_bytes, times, first.n_workers, idle), times_s=times,
                   compute_s=statistics.median(f.compute_s for f in fits), idle_s=idle)
