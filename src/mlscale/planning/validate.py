"""Checking the planner where it can be checked: predict the step time for the worker counts this
machine holds, then really run them and compare (`mlscale plan --validate`, bench/plan_accuracy.py)."""

from __future__ import annotations

import os
import statistics
from dataclasses import dataclass

from mlscale.config import TrainConfig
from mlscale.planning import calibrate as cb
from mlscale.planning.costmodel import Link, StepPrediction, StepProfile, predict_step


@dataclass(frozen=True)
class Check:
    """Predicted vs measured step of one worker count (seconds)."""

    n_workers: int
    threads: int  # per worker
    predicted: StepPrediction
    measured_step_s: float
    link_fit: cb.LinkFit | None = None  # the all-reduce fitted for this count (None for 1 worker)

    @property
    def error(self) -> float:
        """Relative error of the prediction: +0.10 = predicted 10% slower than measured."""
        return self.predicted.step_s / self.measured_step_s - 1


def local_counts(counts: list[int]) -> list[int]:
    """Of `counts`, those this machine holds with at least one core per worker (at least [1])."""
    cores = os.cpu_count() or 1
    return [n for n in counts if n <= cores] or [1]


def validate(cfg: TrainConfig, counts: list[int] | None = None, *, steps: int = 20, repeats: int = 1) -> list[Check]:
    """For each local count n (threads per worker = cores / n, as the launcher gives them): calibrate
    one worker's compute at that thread count with n copies side by side (on one host the workers
    share cores and memory bandwidth, which separate machines would not), fit the all-reduce among n
    processes that each compute that long before it, predict n workers from these, then run n
    workers for real. With `repeats`, calibration and real runs alternate and the medians are
    compared (a shared machine is noisy)."""
    counts = counts or local_counts([1, 2])
    cores = os.cpu_count() or 1
    buckets = cb.gradient_buckets(cfg)
    on_gpus = cfg.device.startswith("cuda")
    checks = []
    for n in counts:
        threads = max(1, cores // n)
        frac = cb.backward_fraction(cfg, threads=threads)
        calibrations, runs = [], []
        for _ in range(repeats):  # alternate: a load that comes and goes hits both alike
            if on_gpus:  # each worker has a GPU of its own: nothing shared to calibrate beside
                calibrations.append(cb.measure_step(cfg, steps=steps, threads=threads))
            else:  # synchronous workers go at the pace of the slowest: its compute, not the copies' median
                calibrations.append(max(cb.measure_concurrent(cfg, n, steps=steps, threads=threads),
                                        key=lambda m: m.compute_s))
            runs.append(cb.measure_step(cfg, steps=steps, threads=threads, workers=n))
        compute = statistics.median(m.compute_s for m in calibrations)
        profile = StepProfile(compute_s=compute, backward_s=compute * frac,
                              input_wait_s=statistics.median(m.input_wait_s for m in calibrations), bucket_bytes=buckets)
        link_fit = None
        if n > 1:  # gloo among n processes here (NCCL needs a GPU per worker, as the real run does)
            link_fit = cb.benchmark_allreduce(n, device="cuda" if on_gpus else "cpu", compute_s=compute)
        link = link_fit.link if link_fit else Link(0.0, 1.0)
        predicted = predict_step(profile, n, link, overlap=on_gpus or n * threads < cores)
        checks.append(Check(n, threads, predicted, statistics.median(m.step_s for m in runs), link_fit))
    return checks
