"""The planner: from a calibration, predict throughput, efficiency, time and cost for every worker
count and device, and answer the two questions users rent machines by: which count meets the
deadline at least cost, and past which count adding workers stops paying.

Workers keep the config's per-worker batch (as `mlscale train --workers N` does), so the global
batch, and with it the optimizer steps per epoch, changes with N.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from mlscale.planning.calibrate import Calibration
from mlscale.planning.catalog import SPEC_SHEET_UTILISATION, DeviceSpec
from mlscale.planning.costmodel import Link, StepPrediction, predict_step

DEFAULT_MIN_EFFICIENCY = 0.5  # below this, each added worker buys less than half its own share


@dataclass(frozen=True)
class Prediction:
    """One (device, worker count): per-worker step, global throughput, time and cost of the run."""

    device: str
    n_workers: int
    step: StepPrediction
    samples_per_s: float
    speedup: float  # over 1 worker of the same device
    efficiency: float  # speedup / n_workers
    steps_total: int  # optimizer steps for the configured epochs (0: the global batch exceeds the data)
    time_s: float  # to finish the configured epochs (training steps only)
    cost: float | None  # n_workers x hours x price per device-hour; None without a price


@dataclass(frozen=True)
class Answer:
    """The planner's answers for one device."""

    device: str
    fastest: Prediction
    knee: Prediction  # the last count whose efficiency stays >= min_efficiency
    within_deadline: Prediction | None  # cheapest (then fastest) count meeting the deadline
    deadline_s: float | None


def compute_scale(cal: Calibration, device: DeviceSpec, dtype: str) -> float:
    """How much longer (> 1) or shorter (< 1) the calibrated compute takes on `device`: measured
    devices at their measured FLOP/s, spec-sheet ones at SPEC_SHEET_UTILISATION of their peak."""
    if device.name == "cpu":
        return 1.0
    peak = device.peak_flops.get(dtype) or device.peak_flops.get("fp32") or max(device.peak_flops.values())
    achieved = peak if device.measured else peak * SPEC_SHEET_UTILISATION
    return cal.matmul_flops / achieved


def steps_for_epochs(n_train: int, batch_size: int, n_workers: int, grad_accum_steps: int, epochs: int) -> int:
    """Optimizer steps to train `epochs` on `n_workers` with a per-worker `batch_size` (each epoch's
    remainder dropped, as the engine does)."""
    micro_batches = n_train // (batch_size * n_workers)
    return math.ceil(micro_batches / grad_accum_steps) * epochs


def predict(cal: Calibration, devices: list[DeviceSpec], counts: list[int], prices: dict[str, float] | None = None,
            dtype: str = "fp32") -> list[Prediction]:
    """Every (device, count) in `devices` x `counts`; a device without a link of its own uses the
    link calibrated here."""
    from mlscale.planning.prices import price_of

    calibrated = cal.link_fit.link if cal.link_fit else Link(0.0, math.inf)
    out = []
    for device in devices:
        price = price_of(prices, device.name, "--prices")
        scale = compute_scale(cal, device, dtype)
        one = predict_step(cal.profile, 1, calibrated, compute_scale=scale)
        for n in counts:
            step = predict_step(cal.profile, n, device.link_for(n) or calibrated, compute_scale=scale)
            sps = n * cal.batch_size * cal.grad_accum_steps / step.step_s
            speedup = n * one.step_s / step.step_s
            total = steps_for_epochs(cal.n_train, cal.batch_size, n, cal.grad_accum_steps, cal.epochs)
            time_s = total * step.step_s
            cost = None if price is None else n * time_s / 3600 * price
            out.append(Prediction(device.name, n, step, sps, speedup, speedup / n, total, time_s, cost))
    return out


def answer(predictions: list[Prediction], deadline_s: float | None = None,
           min_efficiency: float = DEFAULT_MIN_EFFICIENCY) -> list[Answer]:
    """Per device: the fastest count, the knee (last count with efficiency >= `min_efficiency`, past
    which each added worker buys less than that share of itself), and the count meeting the
    deadline at least cost (fewest device-hours when no prices are given)."""
    answers = []
    for device in dict.fromkeys(p.device for p in predictions):
        rows = [p for p in predictions if p.device == device and p.steps_total > 0]
        if not rows:
            continue
        fastest = min(rows, key=lambda p: (p.time_s, p.n_workers))
        efficient = [p for p in rows if p.efficiency >= min_efficiency]
        knee = max(efficient, key=lambda p: p.n_workers) if efficient else rows[0]
        within = None
        if deadline_s is not None:
            ok = [p for p in rows if p.time_s <= deadline_s]
            if ok:
                within = min(ok, key=lambda p: (p.cost if p.cost is not None else p.n_workers * p.time_s, p.time_s))
        answers.append(Answer(device, fastest, knee, within, deadline_s))
    return answers


def cheapest_overall(answers: list[Answer]) -> Prediction | None:
    """Across devices, the cheapest prediction that meets the deadline (None if none does or no prices)."""
    ok = [a.within_deadline for a in answers if a.within_deadline is not None and a.within_deadline.cost is not None]
    return min(ok, key=lambda p: (p.cost, p.time_s)) if ok else None
