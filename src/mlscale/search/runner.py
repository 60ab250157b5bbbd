"""`tune(...)`: run a study's trials in `parallel` worker processes that share one Optuna study.

Each worker is a fresh process (spawn) with its own storage connection, sampler (seeded
`seed + worker`, so random samplers do not repeat each other) and pruner, and with
`cores // (parallel x workers_per_trial)` torch threads, so the trials together use each core once
(shared/PLATFORM.md: oversubscribed threads ran 4x slower). Workers take trials until the study
holds `n_trials` counted ones; the parent prints a progress line meanwhile and, at the end, the
report (report.py).

The same study name continues the study (the storage holds it): finished trials are kept, and only
the rest of the budget runs. Trials left RUNNING by a killed tuner are marked FAILED with the
attribute `interrupted` when their worker process (host:pid, recorded as each trial starts) is gone,
in a journal, or by Optuna's heartbeat on an RDB storage; neither counts against the budget. Workers die with the tuner (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import multiprocessing as mp
import os
import re
import signal
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from mlscale.config import TrainConfig, to_dict, validate
from mlscale.errors import MlscaleError, RunFailed
from mlscale.search import report
from mlscale.search.report import TuneResult
from mlscale.search.objective import TrialSettings, run_trial
from mlscale.search.space import SearchSpace, load_space
from mlscale.search.storage import is_local_journal, journal_path, mask_url, open_storage

SAMPLERS = ("tpe", "random", "grid")
PRUNERS = ("asha", "hyperband", "median", "none")


@dataclass(frozen=True)
class StudySpec:
    """Everything a worker needs to open the study and run trials (it pickles: workers are spawned)."""

    study_name: str
    storage_url: str | None
    study_dir: str
    space: SearchSpace
    settings: TrialSettings
    n_trials: int
    sampler: str
    pruner: str
    seed: int
    max_epochs: int


def tune(space: str | Path | SearchSpace, config: TrainConfig | None = None, *, n_trials: int = 20,
         parallel: int = 1, workers_per_trial: int = 1, sampler: str = "tpe", pruner: str = "asha",
         storage: str | None = None, study_name: str | None = None, resume: bool = False,
         out_dir: str | Path = "runs", seed: int = 0, progress: bool = True) -> TuneResult:
    """Search `space` over `config` (the base every trial starts from) with Optuna.

    Args:
        space: a space file (see space.py) or a parsed SearchSpace.
        config: the base training config (default: `TrainConfig()`).
        n_trials: the study's total budget of trials (a continued study runs only the rest).
        parallel: worker processes on this machine, each running one trial at a time.
        workers_per_trial: data-parallel processes per trial (mlscale's launcher).
        sampler: tpe, random or grid. pruner: asha, hyperband, median or none.
        storage: None (a journal file in the study directory), sqlite:///FILE, postgresql://...
        study_name: default: the space file's name. The same name continues the study.
        resume: require the study to exist already.
        out_dir: the study directory is `<out_dir>/tune-<study_name>`.
        seed: the samplers' seed (worker i uses seed + i).

    Returns:
        TuneResult; the study directory holds leaderboard.txt, best.yaml, history.png, importances.png.

    Raises:
        MlscaleError: bad space, arguments or storage.
    """
    if not isinstance(space, SearchSpace):
        study_name = study_name or re.sub(r"[^A-Za-z0-9_.-]", "-", Path(space).stem).lstrip("-._") or "tune"
        space = load_space(space)
    study_name = study_name or "tune"
    _check_args(n_trials, parallel, workers_per_trial, sampler, pruner, study_name)
    base = validate(config if config is not None else TrainConfig())
    if sampler == "grid":
        grid_size = 1
        for values in space.grid().values():
            grid_size *= len(values)
        n_trials = min(n_trials, grid_size)
    study_dir = Path(out_dir) / f"tune-{study_name}"
    if resume and is_local_journal(storage) and not journal_path(storage, study_dir).exists():
        raise MlscaleError(f"--resume: no study '{study_name}' in {journal_path(storage, study_dir)} (no such file)")
    study_dir.mkdir(parents=True, exist_ok=True)
    threads = base.threads or max(1, (os.cpu_count() or 1) // (parallel * workers_per_trial))  # --threads wins
    base_dict = to_dict(base)
    spec = StudySpec(study_name=study_name, storage_url=storage, study_dir=str(study_dir), space=space,
                     settings=TrialSettings(base=base_dict, trials_dir=str(study_dir / "trials"), threads=threads,
                                            workers_per_trial=workers_per_trial),
                     n_trials=n_trials, sampler=sampler, pruner=pruner, seed=seed, max_epochs=base.epochs)
    study = _open_study(spec, resume, progress)
    say = (lambda m: print(m, file=sys.stderr, flush=True)) if progress else (lambda m: None)
    say(f"study '{study_name}' in {mask_url(storage) or study_dir / 'journal.log'}: {len(space.params)} fields, "
        f"{n_trials} trials, {parallel} at a time x {workers_per_trial} worker(s) x {threads} thread(s), "
        f"{sampler} sampler, {pruner} pruner")
    if parallel == 1:
        _work(spec, 0, progress_every_trial=say)
    else:
        _run_workers(spec, parallel, say)
    return report.write_report(study, study_dir, base_dict, print if progress else (lambda m: None))


def _check_args(n_trials, parallel, workers_per_trial, sampler, pruner, study_name) -> None:
    for name, value in (("--trials", n_trials), ("--parallel", parallel), ("--workers-per-trial", workers_per_trial)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise MlscaleError(f"{name} must be a positive integer, got {value!r}")
    if sampler not in SAMPLERS:
        raise MlscaleError(f"--sampler must be one of {', '.join(SAMPLERS)}, got {sampler!r}")
    if pruner not in PRUNERS:
        raise MlscaleError(f"--pruner must be one of {', '.join(PRUNERS)}, got {pruner!r}")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}", study_name):
        raise MlscaleError(f"--study {study_name!r}: use letters, digits, '.', '_' and '-' (up to 100)")


def _open_study(spec: StudySpec, resume: bool, progress: bool):
    """Create the study, or continue it (checking it searches the same space)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(spec.storage_url, Path(spec.study_dir), repair=True)
    names = {s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)}
    exists = spec.study_name in names
    if resume and not exists:
        raise MlscaleError(f"--resume: no study '{spec.study_name}' in {mask_url(spec.storage_url) or spec.study_dir}"
                           f"{' (studies there: ' + ', '.join(sorted(names)) + ')' if names else ''}")
    study = optuna.create_study(storage=storage, study_name=spec.study_name, direction="maximize",
                                load_if_exists=True)
    saved = study.user_attrs.get("space")
    if saved is None:
        study.set_user_attr("space", spec.space.to_dict())
    elif saved != spec.space.to_dict():
        raise MlscaleError(f"study '{spec.study_name}' searched another space; give a new --study name "
                           f"(or the space file it was started with)")
    if exists:
        finished = sum(t.state.is_finished() for t in study.get_trials(deepcopy=False))
        # a journal has no heartbeat: its dead RUNNING trials are found here (an RDB's by Optuna's heartbeat)
        interrupted = _fail_interrupted(study, own=not spec.storage_url) if is_local_journal(spec.storage_url) else 0
        if progress:
            print(f"continuing study '{spec.study_name}': {finished} finished trial(s) kept"
                  + (f", {interrupted} interrupted one(s) marked failed" if interrupted else ""), file=sys.stderr)
    return study


def _fail_interrupted(study, own: bool) -> int:
    """Trials left RUNNING by a dead worker: FAILED, marked `interrupted`. A trial records its
    worker as host:pid when it starts; one of this host whose process is gone is dead. A journal
    file given with --storage may be shared by other machines, whose RUNNING trials may be alive:
    those are left alone. In the study directory's `own` journal, a trial killed before it recorded
    its worker is dead too."""
    from optuna.trial import TrialState

    storage, dead = study._storage, []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        host, _, pid = str(t.user_attrs.get("worker", "")).rpartition(":")
        if (host == socket.gethostname() and pid.isdigit() and not _alive(int(pid))) or (own and not host):
            dead.append(t)
    for t in dead:
        storage.set_trial_user_attr(t._trial_id, "interrupted", True)
        storage.set_trial_user_attr(t._trial_id, "error", "interrupted: the tuner stopped while it ran")
        storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
    return len(dead)


def _alive(pid: int) -> bool:
    """Whether process `pid` runs (a zombie, dead but not yet reaped by its new parent, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # someone else's process: alive unless /proc says it is a zombie
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc here: the signal check is all there is
    return stat.rpartition(")")[2].split()[0] != "Z"


def _counted(study, before: int | None = None) -> int:
    """Trials that count against the budget (those numbered below `before`, if given): all but
    those a dead tuner or worker left behind, and surplus ones."""
    from optuna.trial import TrialState

    return sum(1 for t in study.get_trials(deepcopy=False)
               if (before is None or t.number < before) and not t.user_attrs.get("interrupted")
               and not t.user_attrs.get("surplus") and (t.state != TrialState.FAIL or "error" in t.user_attrs))


class _OverBudget(Exception):
    """Two workers saw one trial left and both started one: the later-numbered one does not run."""


def _objective(spec: StudySpec, study):
    """run_trial, after checking this trial is within the budget. The storage numbers trials
    atomically, so exactly the first `n_trials` counted ones run, however many workers race."""

    def objective(trial):
        if _counted(study, before=trial.number) >= spec.n_trials:
            trial.set_user_attr("surplus", True)
            raise _OverBudget("over budget: the last trial went to another worker")
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        return run_trial(trial, spec.space, spec.settings)

    return objective


def _work(spec: StudySpec, worker: int, progress_every_trial=None) -> None:
    """One worker: take trials until the budget is spent."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # failures are recorded in the trials themselves
    storage = open_storage(spec.storage_url, Path(spec.study_dir))
    study = optuna.load_study(study_name=spec.study_name, storage=storage,
                              sampler=build_sampler(spec, worker), pruner=build_pruner(spec.pruner, spec.max_epochs))
    while _counted(study) < spec.n_trials:
        study.optimize(_objective(spec, study), n_trials=1, catch=(Exception,), gc_after_trial=False)
        if progress_every_trial is not None:
            progress_every_trial(report.progress_line(study, spec.n_trials))


def build_sampler(spec: StudySpec, worker: int):
    import optuna

    seed = spec.seed + worker
    if spec.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if spec.sampler == "grid":
        return optuna.samplers.GridSampler(spec.space.grid(), seed=seed)
    # constant liar: running trials count as bad ones, so parallel workers spread their suggestions
    return optuna.samplers.TPESampler(seed=seed, constant_liar=True)


def build_pruner(name: str, max_epochs: int):
    """The pruner, its resource measured in epochs (the engine reports after each)."""
    import optuna

    if name == "asha":  # ASHA (Li et al., MLSys 2020): Optuna's SuccessiveHalvingPruner is its asynchronous form
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max_epochs, reduction_factor=3)
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1)
    return optuna.pruners.NopPruner()


def _run_workers(spec: StudySpec, parallel: int, say) -> None:
    """Start `parallel` workers, print progress while they run, and report any that died."""
    import optuna

    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_worker_main, args=(spec, i, os.getpid()), name=f"mlscale-tune-{i}")
             for i in range(parallel)]
    for p in procs:
        p.start()
    study = optuna.load_study(study_name=spec.study_name, storage=open_storage(spec.storage_url, Path(spec.study_dir)))
    last = None
    try:
        while any(p.is_alive() for p in procs):
            line = report.progress_line(study, spec.n_trials)
            if line != last:
                say(line)
                last = line
            for p in procs:
                p.join(timeout=1.0 / parallel)
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
            p.join()
    line = report.progress_line(study, spec.n_trials)
    if line != last:
        say(line)
    stopped = [(i, p.exitcode) for i, p in enumerate(procs) if p.exitcode]
    if stopped and _counted(study) < spec.n_trials:
        i, code = stopped[0]
        how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with status {code}"
        raise RunFailed(f"tuner worker {i} {how} (its error is above) with {spec.n_trials - _counted(study)} "
                        f"trial(s) of the budget left; the study keeps every finished trial: run the same "
                        f"command again to continue it")


def _worker_main(spec: StudySpec, worker: int, parent_pid: int) -> None:
    _die_with(parent_pid)
    try:
        _work(spec, worker)
    except KeyboardInterrupt:
        os._exit(130)


def _die_with(parent_pid: int) -> None:
    """Have the kernel SIGKILL this worker when the tuner dies (Linux): a killed tuner leaves no
    orphan trials running (as the training launcher does for its workers)."""
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:
        os._exit(1)
