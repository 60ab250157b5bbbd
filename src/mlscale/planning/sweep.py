"""A measured scaling sweep: really run the job for a few steps at each worker count and report
throughput, speed-up, efficiency, the step's split, and the time and cost of the whole run."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

from mlscale.config import TrainConfig
from mlscale.planning.calibrate import measure_step
from mlscale.planning.planner import steps_for_epochs


@dataclass(frozen=True)
class SweepRow:
    """One worker count, measured (seconds per step are per worker)."""

    n_workers: int
    threads: int  # per worker
    step_s: float
    input_wait_s: float
    comm_s: float  # gradient all-reduce in flight (overlapping backward, so not all of it adds)
    samples_per_s: float  # global
    speedup: float  # over the 1-worker row (or the smallest count measured, scaled)
    efficiency: float
    steps_total: int  # optimizer steps for the configured epochs
    time_s: float  # to finish the configured epochs, training steps only
    cost: float | None  # n_workers x hours x price per device-hour

    @property
    def compute_s(self) -> float:
        """The rest of the step: forward, backward and update, less what overlapped the all-reduce."""
        return max(0.0, self.step_s - self.input_wait_s - self.comm_s)


def sweep(cfg: TrainConfig, counts: list[int], *, steps: int = 20, price_per_hour: float | None = None,
          n_train: int | None = None, on_row=None) -> list[SweepRow]:
    """Run `cfg` for `steps` timed steps (after a warm-up window) at each count in `counts`, with
    `cores / n` threads per worker unless `cfg.threads` says otherwise."""
    if n_train is None:
        from mlscale.training.data import build_data

        n_train = len(build_data(cfg.data, cfg.seed).train)
    cores = os.cpu_count() or 1
    rows, base = [], None
    for n in counts:
        threads = cfg.threads or max(1, cores // n)
        m = measure_step(cfg, steps=steps, threads=threads, workers=n)
        sps = n * cfg.batch_size * cfg.grad_accum_steps / m.step_s
        if base is None:
            base = (n, sps)
        speedup = sps / base[1] * base[0]  # relative to one worker, extrapolated linearly from the first count
        total = steps_for_epochs(n_train, cfg.batch_size, n, cfg.grad_accum_steps, cfg.epochs)
        time_s = total * m.step_s
        cost = None if price_per_hour is None else n * time_s / 3600 * price_per_hour
        rows.append(SweepRow(n, threads, m.step_s, m.input_wait_s, m.comm_s, sps, speedup, speedup / n, total,
                             time_s, cost))
        if on_row is not None:
            on_row(rows[-1])
    return rows


def rows_as_dicts(rows: list[SweepRow]) -> list[dict]:
    return [asdict(r) | {"compute_s": r.compute_s} for r in rows]


def plot_sweep(rows: list, out_dir: Path, title: str = "", predicted: bool = False) -> list[Path]:
    """Two PNGs: throughput and efficiency vs workers; time and cost vs workers. Works for measured
    SweepRows and planner Predictions alike (same field names)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mlscale.runs import atomic_write

    out_dir.mkdir(parents=True, exist_ok=True)
    n = [r.n_workers for r in rows]
    label = "predicted" if predicted else "measured"
    paths = []
    fig, ax = plt.subplots(figsize=(6.5, 4))
    ax.plot(n, [r.samples_per_s for r in rows], "o-", label=f"samples/s ({label})")
    ax.plot(n, [r.samples_per_s / r.speedup * k for r, k in zip(rows, n)], ":", color="gray", label="linear scaling")
    ax.set_xlabel("workers")
    ax.set_ylabel("global samples/s")
    ax2 = ax.twinx()
    ax2.plot(n, [r.efficiency for r in rows], "s--", color="tab:orange", label="efficiency")
    ax2.set_ylabel("scaling efficiency")
    ax2.set_ylim(0, max(1.05, max(r.efficiency for r in rows) * 1.05))
    _finish(fig, ax, ax2, n, title, out_dir / "throughput_efficiency.png", atomic_write, plt, paths)
    fig, ax = plt.subplots(figsize=(6.5, 4))
    ax.plot(n, [r.time_s / 3600 for r in rows], "o-", label="time to finish (h)")
    ax.set_xlabel("workers")
    ax.set_ylabel("hours (training steps)")
    ax2 = None
    if all(r.cost is not None for r in rows):
        ax2 = ax.twinx()
        ax2.plot(n, [r.cost for r in rows], "s--", color="tab:green", label="cost")
        ax2.set_ylabel("cost (price table's currency)")
    _finish(fig, ax, ax2, n, title, out_dir / "time_cost.png", atomic_write, plt, paths)
    return paths


def _finish(fig, ax, ax2, n, title, path, atomic_write, plt, paths) -> None:
    if len(n) > 1 and n[-1] / n[0] >= 8:
        ax.set_xscale("log", base=2)
    ax.set_xticks(n, [str(k) for k in n])  # worker counts are whole numbers
    handles, labels = ax.get_legend_handles_labels()
    if ax2 is not None:
        h2, l2 = ax2.get_legend_handles_labels()
        handles, labels = handles + h2, labels + l2
    ax.legend(handles, labels, fontsize=8, loc="best")
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100))
    plt.close(fig)
    paths.append(path)
