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
    devices at their measured FLOP/s, spec-sheet ones at SPEC_SHEET_UTILISATION of their peak, and
    never below the step's operator count x the device's launch time."""
    if device.name == cal.device:  # the calibrated device itself
        return 1.0
    peak = device.peak_flops.get(dtype) or device.peak_flops.get("fp32") or max(device.peak_flops.values())
    achieved = peak if device.measured else peak * SPEC_SHEET_UTILISATION
    scale = cal.matmul_flops / achieved
    # an eager GPU step takes at least its operators' launches, however few FLOPs they hold
    floor_s = cal.profile.ops_per_step * device.launch_s
    return max(scale, floor_s / cal.profile.compute_s) if cal.profile.compute_s > 0 else scale


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


@dataclass(frozen=True)
class Plan:
    """What `plan` returns: the calibration, every prediction, the answers per device."""

    calibration: Calibration
    predictions: list[Prediction]
    answers: list[Answer]
    cheapest: Prediction | None  # across devices, the cheapest that meets the deadline


def plan(config=None, workers: str | list[int] = "1-1024", devices: str | list[str] | None = None, *,
         deadline: str | float | None = None, prices: str | dict[str, float] | None = None,
         min_efficiency: float = DEFAULT_MIN_EFFICIENCY, steps: int = 20, calibration: Calibration | None = None,
         on_calibrated=None) -> Plan:
    """Calibrate `config`'s job on this machine and predict it for every worker count and device.

    Args:
        config: a `TrainConfig` (default: the default digits MLP).
        workers: counts, as a list or as `mlscale plan --workers` takes them (`"1-1024"`, `"1,2,4"`).
        devices: catalog names, as a list or comma-separated (default: this machine's device,
            `cpu`, or `cuda` when the job runs on a GPU here).
        deadline: seconds, or `"2h"`-style text: also answer which count meets it at least cost.
        prices: a price table (device -> price per device-hour) or the path of its YAML file.
        calibration: reuse an earlier one instead of measuring again.
        on_calibrated: called with the calibration as soon as it is done (e.g. to print it).

    Raises:
        MlscaleError: a worker list, device, deadline or price table that is wrong; every input is
            checked before the calibration's measurements start.

    Example:
        >>> import mlscale
        >>> p = mlscale.plan(mlscale.TrainConfig(), "1-64", "cpu,h100-sxm", deadline="1h")  # doctest: +SKIP
        >>> [(a.device, a.knee.n_workers) for a in p.answers]  # doctest: +SKIP
    """
    import os

    from mlscale.config import TrainConfig, validate
    from mlscale.errors import MlscaleError
    from mlscale.planning.calibrate import calibrate
    from mlscale.planning.catalog import load_catalog, select
    from mlscale.planning.prices import load_prices, price_of
    from mlscale.planning.workers import parse_duration, parse_workers

    from mlscale.processors.devices import choose_device

    cfg = validate(config if config is not None else TrainConfig())
    if cfg.strategy != "ddp":
        raise MlscaleError(f"mlscale plan models data-parallel (ddp) training; strategy {cfg.strategy} is not "
                           f"modelled (measure it with mlscale scale)")
    host = "cuda" if choose_device(cfg.device).device.type == "cuda" else "cpu"  # where the job runs here
    counts = parse_workers(workers) if isinstance(workers, str) else parse_workers(",".join(map(str, workers)))
    devices = host if devices is None else devices
    names = [n.strip() for n in devices.split(",") if n.strip()] if isinstance(devices, str) else list(devices)
    if not names:
        raise MlscaleError("--device: name at least one device (e.g. cpu,h100-sxm)")
    select(load_catalog(host_matmul_flops=0.0, host=host), names)
    deadline_s = parse_duration(deadline) if isinstance(deadline, str) else deadline
    if deadline_s is not None and not deadline_s > 0:
        raise MlscaleError(f"the deadline must be positive, got {deadline}")
    source = prices if isinstance(prices, str) else "the price table"
    table = load_prices(prices) if isinstance(prices, str) else prices
    for name in names:
        price_of(table, name, source)
    if steps < 1 or not 0 < min_efficiency <= 1:
        raise MlscaleError("--steps must be >= 1 and --min-efficiency in (0, 1]")
    if calibration is None:
        calibration = calibrate(cfg, steps=steps, threads=cfg.threads or (os.cpu_count() or 1), device=host)
    if on_calibrated is not None:
        on_calibrated(calibration)
    dtype = "fp32" if cfg.precision == "fp32" else "bf16"
    catalog = load_catalog(calibration.matmul_flops, host=calibration.device)
    predictions = predict(calibration, select(catalog, names), counts, table, dtype)
    answers = answer(predictions, deadline_s, min_efficiency)
    return Plan(calibration, predictions, answers, cheapest_overall(answers))
