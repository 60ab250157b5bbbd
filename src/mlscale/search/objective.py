"""One trial = one full training run through the engine, its per-epoch test accuracy fed to the
pruner (Optuna's `trial.report` / `trial.should_prune`), its final test accuracy the trial's value.

A trial whose run fails (a NaN loss, an invalid combination of fields, any exception) records its
error in the trial's `error` user attribute and re-raises: the study records it FAILED and goes on
(runner.py calls `study.optimize(..., catch=(Exception,))`).

With `workers_per_trial > 1` the run is itself data-parallel through mlscale's launcher; the engine
then calls no `on_eval` in this process, so a watcher thread reads the run's `metrics.jsonl` as it
grows and reports each evaluation; a pruned run's workers are stopped at once.

A trial writes its final checkpoint only (unless the base config sets `checkpoint_every_steps`):
a stopped trial is failed and sampled again, never resumed, and an fsync'ed checkpoint after
every epoch took a fifth to a third of a short trial's time on the project's machine. Nor does it
plot its own curves.png (about 0.35 s a trial, and matplotlib's import once per worker): the
study's history.png and each trial's metrics.jsonl hold the same figures.
"""

from __future__ import annotations

import json
import multiprocessing
import threading
from dataclasses import dataclass
from pathlib import Path

from mlscale.config import build_config, to_dict
from mlscale.errors import MlscaleError

METRIC = "test accuracy"  # what a trial maximises: the held-out split's accuracy after each epoch
FINAL_CHECKPOINT_ONLY = 10 ** 12  # checkpoint_every_steps past any run's end: no periodic checkpoints


@dataclass(frozen=True)
class TrialSettings:
    """What every trial of a study shares: the base config (nested dict), where runs go, threads."""

    base: dict
    trials_dir: str
    threads: int = 1
    workers_per_trial: int = 1


def trial_config(settings: TrialSettings, values: dict, number: int):
    """The base config with the trial's sampled `values` ({dotted field: value}) set on it."""
    config = _nested(settings.base)
    for name, value in values.items():
        node = config
        *sections, leaf = name.split(".")
        for s in sections:
            node = node.setdefault(s, {})
        node[leaf] = value
    config.update(out_dir=settings.trials_dir, name=f"trial-{number:04d}", progress=False,
                  workers=settings.workers_per_trial, threads=settings.threads, curves=False)
    if not config.get("checkpoint_every_steps"):
        config["checkpoint_every_steps"] = FINAL_CHECKPOINT_ONLY
    return build_config(config)


def run_trial(trial, space, settings: TrialSettings) -> float:
    """Optuna objective: train the sampled config, return its final test accuracy."""
    import optuna

    from mlscale.config import validate

    values = space.suggest(trial)
    try:
        cfg = validate(trial_config(settings, values, trial.number))
        trial.set_user_attr("config", to_dict(cfg))
        if settings.workers_per_trial > 1:
            result = _train_data_parallel(trial, cfg)
        else:
            from mlscale.training.engine import train

            result = train(cfg, on_eval=lambda epoch, metrics: _report(trial, epoch, metrics["accuracy"]))
    except optuna.TrialPruned:
        raise
    except Exception as err:  # noqa: BLE001 - any failure is this trial's, recorded, and the study goes on
        text = str(err).strip().splitlines()[0] if str(err).strip() else ""
        trial.set_user_attr("error", f"{type(err).__name__}: {text}" if not isinstance(err, MlscaleError) else text)
        raise
    trial.set_user_attr("run_dir", str(result.run_dir))
    return float(result.test_accuracy)


def _report(trial, epoch: int, accuracy: float) -> None:
    import optuna

    trial.report(accuracy, epoch)
    trial.set_user_attr("epochs_done", epoch)
    if trial.should_prune():
        raise optuna.TrialPruned(f"pruned after epoch {epoch} ({METRIC} {accuracy:.4f})")


def _train_data_parallel(trial, cfg):
    import optuna

    from mlscale.errors import RunFailed
    from mlscale.training.engine import train

    watcher = _EvalWatcher(trial, Path(cfg.out_dir), cfg.name)
    watcher.start()
    try:
        result = train(cfg)
    except RunFailed:
        if watcher.pruned_at is not None:
            raise optuna.TrialPruned(f"pruned after epoch {watcher.pruned_at}") from None
        raise
    finally:
        watcher.stop()
    if watcher.pruned_at is not None:  # pruned as the run finished its last epoch
        raise optuna.TrialPruned(f"pruned after epoch {watcher.pruned_at}")
    return result


class _EvalWatcher(threading.Thread):
    """Follows `<out_dir>/<name>-*/metrics.jsonl` of a data-parallel run and reports each `eval`
    record; when the pruner says stop, terminates the launcher's worker processes (the launcher
    then fails the run, which the objective turns into a pruned trial)."""

    def __init__(self, trial, out_dir: Path, name: str, poll_s: float = 0.2):
        super().__init__(daemon=True, name=f"eval-watcher-{name}")
        self.trial, self.out_dir, self.name, self.poll_s = trial, out_dir, name, poll_s
        self.pruned_at: int | None = None
        self._done = threading.Event()
        self._offset = 0

    def run(self) -> None:
        while not self._done.wait(self.poll_s) and self.pruned_at is None:
            self._poll()

    def stop(self) -> None:
        self._done.set()
        self.join()
        if self.pruned_at is None:
            self._poll()  # the records written since the last look

    def _poll(self) -> None:
        import optuna

        paths = sorted(self.out_dir.glob(f"{self.name}-*/metrics.jsonl"))
        if not paths:
            return
        with open(paths[-1], "rb") as f:
            f.seek(self._offset)
            chunk = f.read()
        complete = chunk[: chunk.rfind(b"\n") + 1]
        self._offset += len(complete)
        for line in complete.splitlines():
            record = json.loads(line)
            if record.get("kind") != "eval":
                continue
            try:
                _report(self.trial, int(record["epoch"]), float(record["accuracy"]))
            except optuna.TrialPruned:
                self.pruned_at = int(record["epoch"])
                for p in multiprocessing.active_children():
                    if p.name.startswith("mlscale-rank"):
                        p.terminate()
                return


def _nested(d: dict) -> dict:
    return {k: _nested(v) if isinstance(v, dict) else v for k, v in d.items()}
