"""Text for the planning commands: tables of measured sweeps and predictions, and the answers."""

from __future__ import annotations


def duration(seconds: float) -> str:
    """`42 s`, `3.5 min`, `2.1 h`, `3.2 d`."""
    if seconds < 120:
        return f"{seconds:.3g} s"
    if seconds < 7200:
        return f"{seconds / 60:.3g} min"
    if seconds < 3 * 86400:
        return f"{seconds / 3600:.3g} h"
    return f"{seconds / 86400:.3g} d"


def money(cost: float | None) -> str:
    if cost is None:
        return "-"
    return f"{cost:.3g}" if cost < 100 else f"{cost:,.0f}"


def sweep_table(rows) -> str:
    head = (f"{'workers':>7} {'threads':>7} {'samples/s':>11} {'speed-up':>8} {'effic.':>6} {'step ms':>8} "
            f"{'compute':>8} {'comm':>8} {'input':>7} {'time (epochs)':>13} {'cost':>9}")
    lines = [head]
    for r in rows:
        lines.append(f"{r.n_workers:>7} {r.threads:>7} {r.samples_per_s:>11,.0f} {r.speedup:>7.2f}x {r.efficiency:>6.0%} "
                     f"{r.step_s * 1e3:>8.2f} {r.compute_s * 1e3:>8.2f} {r.comm_s * 1e3:>8.2f} {r.input_wait_s * 1e3:>7.3f} "
                     f"{duration(r.time_s):>13} {money(r.cost):>9}")
    return "\n".join(lines)


def calibration_text(cal) -> str:
    p = cal.profile
    lines = [f"calibrated on this machine ({cal.device}, {cal.threads} thread(s) per worker, batch {cal.batch_size}):",
             f"  one worker's step {(p.compute_s + p.input_wait_s) * 1e3:.2f} ms = compute {p.compute_s * 1e3:.2f} ms "
             f"(backward {p.backward_s * 1e3:.2f}) + input wait {p.input_wait_s * 1e3:.3f} ms",
             f"  gradients {p.gradient_bytes / 1e6:.3g} MB per step in {len(p.bucket_bytes)} DDP bucket(s); "
             f"matmul {cal.matmul_flops / 1e9:.3g} GFLOP/s (fp32)"]
    if cal.link_fit:
        f = cal.link_fit
        lines.append(f"  all-reduce ({f.backend}, {f.n_workers} workers, {len(f.sizes_bytes)} sizes "
                     f"{f.sizes_bytes[0] / 1024:.0f} KiB-{f.sizes_bytes[-1] / 2**20:.0f} MiB): alpha {f.link.alpha_s * 1e6:.0f} us "
                     f"per hop, bandwidth {f.link.bandwidth_bytes_per_s / 1e9:.3g} GB/s, and {f.link.sync_s * 1e3:.2f} ms a "
                     f"step waiting for the ranks (the fit is off by at most {f.max_rel_error():.0%} at any size)")
    return "\n".join(lines)


def prediction_table(predictions) -> str:
    head = (f"{'device':<10} {'workers':>7} {'samples/s':>13} {'speed-up':>9} {'effic.':>6} {'step ms':>9} "
            f"{'comm ms':>8} {'exposed':>8} {'time (epochs)':>13} {'cost':>10}")
    lines = [head]
    for p in predictions:
        if p.steps_total == 0:
            lines.append(f"{p.device:<10} {p.n_workers:>7}  (the global batch exceeds the training data)")
            continue
        lines.append(f"{p.device:<10} {p.n_workers:>7} {p.samples_per_s:>13,.0f} {p.speedup:>8.1f}x {p.efficiency:>6.0%} "
                     f"{p.step.step_s * 1e3:>9.3f} {p.step.comm_s * 1e3:>8.3f} {p.step.exposed_comm_s * 1e3:>8.3f} "
                     f"{duration(p.time_s):>13} {money(p.cost):>10}")
    return "\n".join(lines)


def answers_text(answers, cheapest, min_efficiency: float) -> str:
    lines = []
    for a in answers:
        f, k = a.fastest, a.knee
        line = (f"{a.device}: fastest {f.n_workers} worker(s) ({duration(f.time_s)}); adding workers pays up to "
                f"{k.n_workers} (efficiency {k.efficiency:.0%}, the last count >= {min_efficiency:.0%})")
        if a.deadline_s is not None:
            w = a.within_deadline
            line += (f"; meets {duration(a.deadline_s)} at least cost with {w.n_workers} worker(s) "
                     f"({duration(w.time_s)}, cost {money(w.cost)})" if w else f"; no count meets {duration(a.deadline_s)}")
        lines.append(line)
    if cheapest is not None:
        lines.append(f"cheapest within the deadline: {cheapest.n_workers} x {cheapest.device} "
                     f"({duration(cheapest.time_s)}, cost {money(cheapest.cost)})")
    return "\n".join(lines)


def validation_text(checks) -> str:
    lines = ["validation on this machine (predicted vs measured step time per worker; compute alone, and while the "
             "workers synchronize every step, as predicted):",
             f"{'workers':>7} {'threads':>7} {'alone ms':>8} {'synced ms':>9} {'predicted ms':>12} {'measured ms':>11} {'error':>7}"]
    for c in checks:
        lines.append(f"{c.n_workers:>7} {c.threads:>7} {c.alone_compute_s * 1e3:>8.2f} {c.predicted.compute_s * 1e3:>9.2f} "
                     f"{c.predicted.step_s * 1e3:>12.2f} {c.measured_step_s * 1e3:>11.2f} {c.error:>+7.1%}")
    return "\n".join(lines)
