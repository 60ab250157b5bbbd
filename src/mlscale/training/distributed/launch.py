"""mlscale's own launcher: `train --workers N` starts N local worker processes and watches them.

The rendezvous store is served by this (parent) process on a socket bound to `dist.master_addr`
(127.0.0.1 by default: torchrun's store binds every interface whatever it is told, see
shared/PLATFORM.md). Each worker joins as a client and runs the same engine as rank r of N.
A worker that raises or dies ends the run: the others are stopped, and the error names the rank
and the cause (the worker's own exception, or the signal that killed it), so nothing hangs.
"""

from __future__ import annotations

import datetime
import json
import multiprocessing as mp
import pickle
import signal
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

    port = sock.getsockname()[1]
    store = dist.TCPStore(cfg.dist.master_addr, port, cfg.workers, is_master=True, wait_for_workers=False,
                          timeout=datetime.timedelta(seconds=cfg.dist.timeout_s),
                          master_listen_fd=sock.detach(), use_libuv=False)
    errors = Path(tempfile.mkdtemp(prefix=".workers-", dir=run_dir))
    ctx = mp.get_context("spawn")  # a fresh interpreter per worker: no inherited threads or CUDA state
    procs = [
        ctx.Process(target=_worker, name=f"mlscale-rank{rank}",
                    args=(cfg, World(rank, cfg.workers, rank, cfg.workers), (cfg.dist.master_addr, port),
                          model, train_data, test_data, resume, run_dir, errors))
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
        del store
        for f in errors.glob("*"):
            f.unlink()
        errors.rmdir()
    return _parent_result(cfg, run_dir, model, data)


def _worker(cfg, world, store_addr, model, train_data, test_data, resume, run_dir, errors: Path) -> None:
    """One rank. On failure it records its error for the parent and exits at once, without the
    group's teardown: the other ranks may be blocked in a collective that will never finish."""
    import os

    from mlscale.training.engine import run_in_world

    try:
        run_in_world(cfg, world, model=model, train_data=train_data, test_data=test_data, resume=resume,
                     run_dir=run_dir, store_addr=store_addr)
    except BaseException as err:  # noqa: BLE001 - reported to the parent, whatever it is
        record = {"rank": world.rank, "type": type(err).__name__, "message": str(err).strip().splitlines()[0]
                  if str(err).strip() else type(err).__name__, "user_error": isinstance(err, MlscaleError)
                  and not isinstance(err, RunFailed), "traceback": traceback.format_exc()}
        try:
            (errors / f"rank{world.rank}.json").write_text(json.dumps(record))
        finally:
            os._exit(1)


def _watch(procs: list, errors: Path) -> None:
    """Wait for every worker; on the first failure, stop the rest and raise with its cause."""
    running = {p.sentinel: p for p in procs}
    while running:
        for sentinel in wait(list(running)):
            p = running.pop(sentinel)
            p.join()
            if p.exitcode != 0:
                rank = procs.index(p)
                _stop(procs)
                raise _failure(rank, p.exitcode, errors)


def _failure(rank: int, exitcode: int, errors: Path) -> MlscaleError:
    path = errors / f"rank{rank}.json"
    if path.exists():
        record = json.loads(path.read_text())
        if record["user_error"]:
            return MlscaleError(record["message"])
        return RunFailed(f"worker rank {rank} failed: {record['type']}: {record['message']}")
    if exitcode < 0:
        return RunFailed(f"worker rank {rank} was killed by {signal.Signals(-exitcode).name}")
    return RunFailed(f"worker rank {rank} exited with status {exitcode}")


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
