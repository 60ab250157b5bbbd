"""mlscale's own launcher: `train --workers N` starts N local worker processes and watches them.

The rendezvous store is served by this (parent) process on a socket bound to `dist.master_addr`
(127.0.0.1 by default: torchrun's store binds every interface whatever it is told, see
shared/PLATFORM.md). Each worker joins as a client and runs the same engine as rank r of N.
A worker that raises or dies ends the attempt: the others are stopped, and the error names the rank
and the cause (the worker's own exception, or the signal that killed it), so nothing hangs. With
`max_restarts` left and a crash that a restart can cure (a killed worker, a broken connection, not a
config mistake or a diverged loss), all workers are started again and resume from the latest good
checkpoint, as torchrun's elastic agent does. Workers die with the launcher (PR_SET_PDEATHSIG), so a
killed launcher leaves no orphan writing to the run directory.
"""

from __future__ import annotations

import datetime
import json
import multiprocessing as mp
import os
import pickle
import signal
import sys
import tempfile
import traceback
from multiprocessing.connection import wait
from pathlib import Path

import torch.distributed as dist

from mlscale.config import TrainConfig, to_dict
from mlscale.errors import MlscaleError, RunFailed
from mlscale.runs import atomic_write_text
from mlscale.training.distributed.world import World, listen

STOP_GRACE_S = 5.0  # after SIGTERM, before SIGKILL


def launch_workers(cfg: TrainConfig, *, model=None, train_data=None, test_data=None, resume=None):
    """Run `cfg` on `cfg.workers` local processes; return rank 0's result with the trained model."""
    from mlscale.training import engine

    # validate what can be validated here, so a mistake is one line before any process starts
    data = engine._user_data(train_data, test_data) if train_data is not None else None
    if data is None:
        from mlscale.training.data import build_data

        data = build_data(cfg.data, cfg.seed)
    sock = listen(cfg.dist.master_addr, cfg.dist.master_port)  # before the run directory: a busy port leaves none
    if resume:
        run_dir = Path(resume)
    else:
        run_dir = engine._new_run_dir(cfg, model, data)
        atomic_write_text(run_dir / "config.yaml", engine._yaml(to_dict(cfg)))

    # The model goes to each worker as plain pickle bytes: through multiprocessing, torch would hand
    # every worker the parent's parameter storage in shared memory, and each rank's optimizer would
    # then update the same tensors (N updates per step, and the parent's model changed under it).
    try:
        model_bytes = pickle.dumps(model) if model is not None else None
    except (pickle.PicklingError, AttributeError, TypeError) as err:
        raise MlscaleError(f"with workers > 1 the model must pickle (each worker is a new process): "
                           f"{str(err).splitlines()[0]}") from None
    port = sock.getsockname()[1]
    store = dist.TCPStore(cfg.dist.master_addr, port, cfg.workers, is_master=True, wait_for_workers=False,
                          timeout=datetime.timedelta(seconds=cfg.dist.timeout_s),
                          master_listen_fd=sock.detach(), use_libuv=False)
    errors = Path(tempfile.mkdtemp(prefix=".workers-", dir=run_dir))
    try:
        for attempt in range(cfg.max_restarts + 1):
            try:
                _run_attempt(cfg, attempt, (cfg.dist.master_addr, port), model_bytes, train_data, test_data, resume,
                             run_dir, errors)
                break
            except _AttemptFailed as failed:
                if not failed.restartable or attempt == cfg.max_restarts:
                    if attempt and isinstance(failed.error, RunFailed):
                        raise RunFailed(f"{failed.error} (after {attempt} restart{'s' * (attempt > 1)})") from None
                    raise failed.error from None
                resume = _prepare_restart(run_dir, failed.error, attempt + 1, cfg.max_restarts)
    finally:
        del store
        for f in errors.glob("*"):
            f.unlink()
        errors.rmdir()
    return _parent_result(cfg, run_dir, model, data)


class _AttemptFailed(Exception):
    def __init__(self, error: MlscaleError, restartable: bool):
        self.error, self.restartable = error, restartable


def _run_attempt(cfg, attempt, store_addr, model_bytes, train_data, test_data, resume, run_dir, errors) -> None:
    """Start every rank (in the store's namespace for this attempt) and wait for them all."""
    for f in errors.glob("*"):
        f.unlink()
    ctx = mp.get_context("spawn")  # a fresh interpreter per worker: no inherited threads or CUDA state
    procs = [
        ctx.Process(target=_worker, name=f"mlscale-rank{rank}",
                    args=(cfg, World(rank, cfg.workers, rank, cfg.workers, restart_count=attempt), store_addr,
                          model_bytes, train_data, test_data, resume, run_dir, errors, os.getpid()))
        for rank in range(cfg.workers)
    ]
    try:
        for p in procs:
            try:
                p.start()
            except (pickle.PicklingError, AttributeError, TypeError) as err:
                raise MlscaleError(f"with workers > 1 the model and datasets must pickle (each worker is a new "
                                   f"process): {str(err).splitlines()[0]}") from None
        _watch(procs, errors)
    finally:
        _stop(procs)


def _prepare_restart(run_dir: Path, error: MlscaleError, restart: int, max_restarts: int) -> Path | None:
    """Say what happened and where the next attempt starts: the latest good checkpoint, or the
    beginning (with the dead attempt's metrics dropped) when none was written yet."""
    from mlscale.training import checkpoint as ckpt

    latest = ckpt.latest_checkpoint(run_dir)
    where = f"resuming from {latest.name}" if latest else "from the start (no checkpoint yet)"
    print(f"mlscale: {error}; restarting the workers ({restart}/{max_restarts}), {where}", file=sys.stderr, flush=True)
    if latest is None:
        (run_dir / "metrics.jsonl").unlink(missing_ok=True)
        return None
    return run_dir


def _worker(cfg, world, store_addr, model_bytes, train_data, test_data, resume, run_dir, errors: Path,
            launcher_pid: int) -> None:
    """One rank. On failure it records its error for the parent and exits at once, without the
    group's teardown: the other ranks may be blocked in a collective that will never finish."""
    from mlscale.training.engine import run_in_world

    _die_with(launcher_pid)
    try:
        model = pickle.loads(model_bytes) if model_bytes is not None else None
        run_in_world(cfg, world, model=model, train_data=train_data, test_data=test_data, resume=resume,
                     run_dir=run_dir, store_addr=store_addr)
    except BaseException as err:  # noqa: BLE001 - reported to the parent, whatever it is
        record = {"rank": world.rank, "type": type(err).__name__, "message": str(err).strip().splitlines()[0]
                  if str(err).strip() else type(err).__name__, "user_error": isinstance(err, MlscaleError)
                  and not isinstance(err, RunFailed), "mlscale_error": isinstance(err, MlscaleError),
                  "traceback": traceback.format_exc()}
        try:
            (errors / f"rank{world.rank}.json").write_text(json.dumps(record))
        finally:
            os._exit(1)


def _die_with(launcher_pid: int) -> None:
    """Have the kernel SIGKILL this worker when the launcher dies (Linux), so that a killed
    launcher leaves no orphan that could write into the run directory a resumed run is using."""
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != launcher_pid:  # it died before the line above took effect
        os._exit(1)


def _watch(procs: list, errors: Path) -> None:
    """Wait for every worker; on the first failure, stop the rest and raise with its cause. When
    several ranks have ended by then, the cause is the one that did not just lose its peers: a
    user's mistake first, then a rank that died without a word (killed, crashed), then the rest
    (often a collective that broke because another rank died)."""
    running = {p.sentinel: p for p in procs}
    while running:
        ended = [running.pop(sentinel) for sentinel in wait(list(running))]
        for p in ended:
            p.join()
        failed = [procs.index(p) for p in ended if p.exitcode != 0]
        if failed:
            rank = min(failed, key=lambda r: (_cause_rank(errors / f"rank{r}.json"), r))
            _stop(procs)
            raise _failure(rank, procs[rank].exitcode, errors)


def _cause_rank(record_path: Path) -> int:
    """0 for a recorded user mistake, 1 for a rank that recorded nothing, 2 for any other error."""
    if not record_path.exists():
        return 1
    return 0 if json.loads(record_path.read_text())["user_error"] else 2


def _failure(rank: int, exitcode: int, errors: Path) -> _AttemptFailed:
    """The first failed rank's error, and whether a restart could cure it: a crash can be, a
    mistake in the config or data, or a diverged loss, cannot (it would only happen again)."""
    path = errors / f"rank{rank}.json"
    if path.exists():
        record = json.loads(path.read_text())
        if record["user_error"]:
            return _AttemptFailed(MlscaleError(record["message"]), restartable=False)
        return _AttemptFailed(RunFailed(f"worker rank {rank} failed: {record['type']}: {record['message']}"),
                              restartable=not record.get("mlscale_error"))
    if exitcode < 0:
        return _AttemptFailed(RunFailed(f"worker rank {rank} was killed by {signal.Signals(-exitcode).name}"), True)
    return _AttemptFailed(RunFailed(f"worker rank {rank} exited with status {exitcode}"), True)


def _stop(procs: list) -> None:
    procs = [p for p in procs if p.pid is not None]  # started ones
    for p in procs:
        if p.is_alive():
            p.terminate()
    for p in procs:
        p.join(STOP_GRACE_S)
        if p.is_alive():
            p.kill()
            p.join()


def _parent_result(cfg: TrainConfig, run_dir: Path, model, data):
    """Rank 0's summary, with the trained weights loaded into a model in this process."""
    from mlscale.training import checkpoint as ckpt
    from mlscale.training.engine import RunResult
    from mlscale.training.models import build_model

    summary = json.loads((run_dir / "summary.json").read_text())
    net = model if model is not None else build_model(cfg.model, data.input_shape, data.n_classes)
    path = ckpt.latest_checkpoint(run_dir)
    net.load_state_dict(ckpt.load_checkpoint(path)["model"])
    summary["run_dir"] = Path(summary["run_dir"])
    return RunResult(**summary, model=net)
