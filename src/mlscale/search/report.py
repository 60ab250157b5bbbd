"""What a study shows: a progress line while it runs; at the end a leaderboard table, the best
trial's config as a YAML that `mlscale train --config` takes, and PNG plots (optimisation history,
parameter importances)."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from mlscale.runs import atomic_write_text

LEADERBOARD_ROWS = 10
# fields of a trial's config that belong to the trial's run, not to the configuration found
_RUN_FIELDS = ("out_dir", "name", "progress", "workers", "threads", "checkpoint_every_steps", "curves")


@dataclass
class TuneResult:
    """A study's outcome: counts by state, the best trial, and where the report files are."""

    study_name: str
    study_dir: Path
    n_complete: int
    n_pruned: int
    n_failed: int
    best_value: float | None
    best_params: dict
    best_trial: int | None
    files: dict[str, Path] = field(default_factory=dict)


def progress_line(study, n_trials: int) -> str:
    """`12/40 done (8 complete, 3 pruned, 1 failed), 2 running; best 0.9749 (trial 7)`."""
    counts = _counts(study)
    best = _best(study)
    best_text = f"best {best.value:.4f} (trial {best.number})" if best else "no complete trial yet"
    done = counts["COMPLETE"] + counts["PRUNED"] + counts["FAIL"]
    return (f"trials {done}/{n_trials} done ({counts['COMPLETE']} complete, {counts['PRUNED']} pruned, "
            f"{counts['FAIL']} failed), {counts['RUNNING']} running; {best_text}")


def leaderboard(study, base: dict | None = None, rows: int = LEADERBOARD_ROWS) -> str:
    """The best complete trials, best first, with the searched fields; then pruned and failed counts
    and each failure's error."""
    from optuna.trial import TrialState

    trials = _trials(study)
    complete = sorted((t for t in trials if t.state == TrialState.COMPLETE), key=lambda t: -t.value)
    names = list(study.user_attrs.get("space", {}) or {p for t in trials for p in t.params})
    header = ["rank", "trial", "accuracy", "epochs"] + names
    table = [header]
    for rank, t in enumerate(complete[:rows], 1):
        table.append([str(rank), str(t.number), f"{t.value:.4f}", str(t.user_attrs.get("epochs_done", "")),
                      *(_fmt(t.params.get(n)) for n in names)])
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in table]
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    failed = [t for t in trials if t.state == TrialState.FAIL]
    lines.append(f"{len(complete)} complete, {len(pruned)} pruned"
                 + (f" (after {sum(len(t.intermediate_values) for t in pruned)} epochs in all)" if pruned else "")
                 + f", {len(failed)} failed")
    for t in failed:
        lines.append(f"  trial {t.number} failed: {t.user_attrs.get('error') or 'its worker stopped (no heartbeat)'}")
    return "\n".join(lines)


def best_config(study, base: dict) -> dict | None:
    """The best trial's whole config, with the run's own fields (out_dir, name...) from `base`."""
    best = _best(study)
    if best is None or "config" not in best.user_attrs:
        return None
    config = dict(best.user_attrs["config"])
    for key in _RUN_FIELDS:
        config[key] = base[key]
    return config


def write_report(study, study_dir: Path, base: dict, say=print) -> TuneResult:
    """Write leaderboard.txt, best.yaml, history.png, importances.png; print the leaderboard."""
    import yaml

    study_dir = Path(study_dir)
    files = {}
    board = leaderboard(study, base)
    atomic_write_text(study_dir / "leaderboard.txt", board + "\n")
    files["leaderboard"] = study_dir / "leaderboard.txt"
    best = _best(study)
    config = best_config(study, base)
    if config is not None:
        header = (f"# best of study '{study.study_name}': trial {best.number}, test accuracy {best.value:.4f}\n"
                  f"# mlscale train --config {study_dir / 'best.yaml'}\n")
        atomic_write_text(study_dir / "best.yaml", header + yaml.safe_dump(config, sort_keys=False))
        files["best_config"] = study_dir / "best.yaml"
    files.update(write_plots(study, study_dir))
    say(board)
    if config is not None:
        say(f"best: trial {best.number}, test accuracy {best.value:.4f}; config {files['best_config']}")
    say(f"outputs: {study_dir}/  " + " ".join(p.name for p in files.values()))
    counts = _counts(study)
    return TuneResult(study_name=study.study_name, study_dir=study_dir, n_complete=counts["COMPLETE"],
                      n_pruned=counts["PRUNED"], n_failed=counts["FAIL"], best_value=best.value if best else None,
                      best_params=dict(best.params) if best else {}, best_trial=best.number if best else None,
                      files=files)


def write_plots(study, study_dir: Path) -> dict[str, Path]:
    """history.png (every complete trial's accuracy and the best so far) and importances.png
    (fANOVA importance of each field; needs two complete trials that differ)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    out = {}
    plots = [("history", ovm.plot_optimization_history)]
    if len(_complete(study)) >= 2 and study.user_attrs.get("space"):
        plots.append(("importances", ovm.plot_param_importances))
    for name, plot in plots:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Optuna marks its matplotlib plots experimental
            try:
                ax = plot(study)
            except (ValueError, RuntimeError, ZeroDivisionError):  # e.g. no variation to attribute
                continue
        fig = (ax[0] if hasattr(ax, "__len__") else ax).figure
        fig.tight_layout()
        path = Path(study_dir) / f"{name}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        out[name] = path
    return out


def _trials(study):
    """The study's trials, less the surplus ones (started by a worker that lost a race for the
    last trial of the budget, never run)."""
    return [t for t in study.get_trials(deepcopy=False) if not t.user_attrs.get("surplus")]


def _counts(study) -> dict[str, int]:
    counts = {"COMPLETE": 0, "PRUNED": 0, "FAIL": 0, "RUNNING": 0, "WAITING": 0}
    for t in _trials(study):
        counts[t.state.name] = counts.get(t.state.name, 0) + 1
    return counts


def _complete(study):
    from optuna.trial import TrialState

    return [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if t.value is not None and math.isfinite(t.value)]


def _best(study):
    complete = _complete(study)
    return max(complete, key=lambda t: (t.value, -t.number)) if complete else None


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)
