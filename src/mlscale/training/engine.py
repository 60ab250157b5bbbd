"""The training engine: `train(config)` runs input pipeline -> forward -> loss -> backward ->
optimizer step -> schedule, evaluates on the held-out split, logs, checkpoints, and resumes, in one
process or in each of many (data-parallel: every rank runs this same code on its shard).

The loop itself is `_fit`, one screen, in the order nanoGPT's and torchtitan's loops use;
everything it calls (metrics, checkpoints, evaluation) lives beside it, not inside it.
"""

from __future__ import annotations

import json
import math
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import Dataset

from mlscale.config import RESUMABLE_FIELDS, RESUMABLE_WITH_CONSTANT_SCHEDULE, TrainConfig, diff_fields, from_dict, load_yaml, to_dict, validate
from mlscale.errors import MlscaleError, RunFailed
from mlscale.processors.devices import choose_autocast_dtype, choose_device
from mlscale.runs import MetricsLog, atomic_write_text, new_run_dir, read_jsonl
from mlscale.training import checkpoint as ckpt
from mlscale.training.data import DataBundle, EpochBatchSampler, build_data, make_loader
from mlscale.training.distributed import world as dw
from mlscale.training.distributed.strategies import build_strategy
from mlscale.training.metrics import Meter, plot_curves
from mlscale.training.models import build_model
from mlscale.training.optim import build_optimizer, build_scheduler


@dataclass
class RunResult:
    """What a run produced. Times in seconds; samples/s counts training steps only, all workers."""

    run_dir: Path
    test_accuracy: float
    test_loss: float
    samples_per_s: float
    train_time_s: float
    wall_time_s: float
    steps: int
    epochs_done: int
    completed: bool  # False when the run stopped at `stop_at_step` and can be resumed
    device: str
    world_size: int = 1
    samples_per_s_per_worker: float = 0.0
    step_time_s: float = 0.0  # mean wall time of an optimizer step
    comm_time_s_per_step: float | None = None  # gradient all-reduce in flight per step (ddp)
    input_wait_s_per_step: float = 0.0  # waiting for the input pipeline's next batch, per step
    scaling_efficiency: float | None = None  # vs the `baseline` 1-worker run, when given
    pipeline: dict | None = None  # strategy pipeline: split, per-stage time and memory, bubble fraction
    rank: int = 0
    model: nn.Module | None = field(default=None, repr=False)


@dataclass
class LoopState:
    """Where the loop is; saved in every checkpoint."""

    epoch: int = 0  # the epoch in progress
    batch: int = 0  # micro-batches (of batch_size x world_size samples) of that epoch already done
    step: int = 0  # optimizer steps done
    samples: int = 0  # training samples processed, all workers
    train_time_s: float = 0.0  # time spent in training steps (not evaluation or checkpoints)
    comm_time_s: float = 0.0  # of which a gradient collective was in flight (ddp)
    input_wait_s: float = 0.0  # of which this rank waited for the input pipeline's next batch
    n_records: int = 0  # metrics.jsonl records written


class _NoLog:
    """What ranks other than 0 write metrics to."""

    n_records = 0

    def write(self, record: dict) -> None:
        pass

    def close(self) -> None:
        pass


@dataclass
class _Run:
    """Everything one run needs, built once by `train` and handed to the loop."""

    cfg: TrainConfig
    world: dw.World
    run_dir: Path
    data: DataBundle
    model: nn.Module  # wrapped by the strategy
    strategy: object
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    sampler: EpochBatchSampler
    loader: object
    test_loader: object
    device: torch.device
    autocast_dtype: torch.dtype | None
    log: MetricsLog | _NoLog
    meter: Meter
    model_name: str = ""
    n_params: int = 0
    comm_base_s: float = 0.0  # all-reduce time of the run before it was resumed here
    state: LoopState = field(default_factory=LoopState)
    bar: object = None
    last_eval: dict | None = None
    logged_step: int = 0  # the optimizer step of the last training record


def train(config: TrainConfig | None = None, *, model: nn.Module | None = None,
          train_data: Dataset | None = None, test_data: Dataset | None = None,
          resume: str | Path | None = None, on_eval=None) -> RunResult:
    """Train a model and return its result; the run directory holds config, metrics, checkpoints.

    With `config.workers > 1`, starts that many local worker processes (data-parallel, gloo on
    CPU, NCCL on CUDA) and waits for them; under torchrun, runs as the rank torchrun says.

    Args:
        config: the run's configuration (default: `TrainConfig()`, an MLP on the embedded digits).
        model: any `torch.nn.Module` mapping a batch of samples to class logits; default: the
            built-in model named by `config.model`.
        train_data, test_data: any map-style `Dataset` of `(features, label)` pairs, given
            together; default: `config.data`.
        resume: a run directory to continue from its latest checkpoint.
        on_eval: called as `on_eval(epoch, metrics)` after each evaluation (e.g. for pruning);
            one process only.

    Raises:
        MlscaleError: bad config, data, device or checkpoint (a user mistake).
        RunFailed: the loss became NaN/Inf (the last good checkpoint is kept), or a worker failed.

    Example:
        >>> import mlscale
        >>> result = mlscale.train(mlscale.TrainConfig(epochs=2, progress=False))  # doctest: +SKIP
        >>> result.test_accuracy > 0.9  # doctest: +SKIP
        True
    """
    cfg = _resolve_config(config, resume)
    if (train_data is None) != (test_data is None):
        raise MlscaleError("give train_data and test_data together (or neither, to use config.data)")
    if cfg.baseline:
        _check_baseline(cfg)
    world = dw.world_from_env()
    if cfg.workers > 1 and not world.distributed:
        if on_eval is not None:
            raise MlscaleError("on_eval is called in one process only: use workers=1 with it")
        from mlscale.training.distributed.launch import launch_workers

        return launch_workers(cfg, model=model, train_data=train_data, test_data=test_data, resume=resume)
    if world.distributed and cfg.workers not in (1, world.world_size):
        raise MlscaleError(f"workers={cfg.workers}, but the launcher started {world.world_size} processes: "
                           f"under torchrun, leave workers at 1")
    return run_in_world(cfg, world, model=model, train_data=train_data, test_data=test_data,
                        resume=resume, on_eval=on_eval)


def run_in_world(cfg: TrainConfig, world: dw.World, *, model=None, train_data=None, test_data=None,
                 resume=None, on_eval=None, run_dir: Path | None = None,
                 store_addr: tuple[str, int] | None = None) -> RunResult:
    """Train as rank `world.rank` of `world.world_size`, joining (and leaving) the process group
    when there are several. `run_dir` and `store_addr` come from mlscale's own launcher."""
    t_start = time.perf_counter()
    device = choose_device(cfg.device).device
    device = dw.device_for(world, device)
    if cfg.threads or world.distributed:
        torch.set_num_threads(cfg.threads or dw.threads_per_worker(world))
    owns_group, store = world.distributed, None
    if owns_group:
        store = dw.init_process_group(world, device, cfg.dist.timeout_s, store_addr)
    run = None
    try:
        run = _build_run(cfg, world, device, model, train_data, test_data, resume, run_dir, store)
        _say(run, f"training {run.model_name} ({run.n_params:,} parameters) on {run.data.name} "
                  f"({len(run.data.train)} train / {len(run.data.test)} test), {device}"
                  f"{f' x {world.world_size} workers ({cfg.strategy})' if world.distributed else ''}"
                  f"{', bf16 autocast' if run.autocast_dtype else ''}, {cfg.epochs} epochs x "
                  f"{_steps_per_epoch(run)} steps{f' (resuming at step {run.state.step})' if resume else ''}")
        completed = _fit(run, _steps_per_epoch(run) * cfg.epochs, on_eval)
        result = _finish(run, completed, time.perf_counter() - t_start)
    except BaseException:
        owns_group = False  # leave at once: the other ranks may be stuck in a collective; the launcher ends them
        raise
    finally:
        if run is not None:
            run.log.close()
            if run.bar is not None:
                run.bar.close()
        if owns_group:
            run = None  # release the wrapped model before the group goes (shared/PLATFORM.md)
            dw.shutdown(world)
    return result


def _fit(run: _Run, total_steps: int, on_eval) -> bool:
    """The training loop. Returns False if it stopped early at `stop_at_step`."""
    cfg, model, opt, state, meter = run.cfg, run.model, run.optimizer, run.state, run.meter
    accum, n_micro = cfg.grad_accum_steps, run.sampler.batches_per_epoch()
    autocast = torch.autocast(run.device.type, dtype=run.autocast_dtype) if run.autocast_dtype else nullcontext()
    run.bar = _progress_bar(run, total_steps)
    meter.reset()
    for epoch in range(state.epoch, cfg.epochs):
        run.sampler.set_epoch(epoch, start_batch=state.batch)
        model.train()
        for x, y in _timed_fetch(run.loader, state):  # input pipeline: this rank's shard of each global batch
            x, y = x.to(run.device, non_blocking=True), y.to(run.device, non_blocking=True)
            group = min(accum, n_micro - state.batch // accum * accum)  # micro-batches in this step
            last = (state.batch + 1) % accum == 0 or state.batch + 1 == n_micro
            if run.strategy.pipelined:  # forward, loss, backward of every micro-batch, stage by stage
                loss, logits = run.strategy.step(x, y)
            else:
                with nullcontext() if last else run.strategy.no_sync(model):  # sync gradients on the last only
                    with autocast:
                        logits = model(x)  # forward
                    loss = F.cross_entropy(logits.float(), y)  # loss
                    (loss / group if group > 1 else loss).backward()  # backward (+ all-reduce when last)
            if logits is not None:  # a pipeline knows its loss on the last stage only
                meter.add(loss, logits, y)
            state.batch += 1
            if not last:
                continue
            if cfg.grad_clip_norm:  # (a pipeline's global norm spans every stage's gradients)
                run.strategy.clip_grad_norm_(model, cfg.grad_clip_norm)
            opt.step()  # parameter update
            run.scheduler.step()  # learning-rate schedule
            opt.zero_grad(set_to_none=True)
            state.step += 1
            state.samples += group * len(y) * run.sampler.world_size
            run.bar.update(1)
            if state.step % cfg.log_every_steps == 0:
                _log_train(run)
            if state.step == cfg.stop_at_step:
                if state.step > run.logged_step:  # the last, partial window counts too
                    _log_train(run)
                _save(run, ckpt.step_checkpoint_path(run.run_dir, state.step))
                return False
            if cfg.checkpoint_every_steps and state.step % cfg.checkpoint_every_steps == 0 and state.step < total_steps:
                _save(run, ckpt.step_checkpoint_path(run.run_dir, state.step))
        state.epoch, state.batch = epoch + 1, 0
        _evaluate(run, on_eval)
        if not cfg.checkpoint_every_steps and state.epoch < cfg.epochs:
            _save(run, ckpt.step_checkpoint_path(run.run_dir, state.step))
    if state.step > run.logged_step:  # (not meter.batches: a pipeline's first stages count no loss)
        _log_train(run)
    _save(run, ckpt.checkpoint_dir(run.run_dir) / ckpt.FINAL)
    return True


# --- what the loop calls ----------------------------------------------------------------------------


def _timed_fetch(loader, state: LoopState):
    """`loader`'s batches, adding the time spent waiting for each to `state.input_wait_s`: the
    input pipeline's share of a step (zero when prefetching loader workers keep ahead)."""
    batches = iter(loader)
    while True:
        t0 = time.perf_counter()
        try:
            batch = next(batches)
        except StopIteration:
            return
        state.input_wait_s += time.perf_counter() - t0
        yield batch


def _log_train(run: _Run) -> None:
    window = run.meter.flush()
    # all ranks: the window's sums over the whole world (the same on every rank)
    loss_sum, batches, correct, samples = dw.all_reduce_sum(
        [window["loss"] * window["batches"], window["batches"], window["correct"], window["samples"]], run.device)
    loss = loss_sum / max(1, batches)
    _require_finite(run, loss)
    run.state.train_time_s += window["train_time_s"]
    run.state.comm_time_s = _comm_time(run)
    record = {
        "kind": "train", "step": run.state.step,
        "epoch": round(run.state.epoch + run.state.batch / run.sampler.batches_per_epoch(), 4),
        "loss": loss, "accuracy": correct / max(1, samples),
        "samples_per_s": round(samples / window["train_time_s"], 1) if window["train_time_s"] else 0.0,
        "lr": run.scheduler.get_last_lr()[0],
        "input_wait_s": round(run.state.input_wait_s, 6),  # cumulative, rank 0
    }
    run.log.write(record)
    run.bar.set_postfix(loss=f"{record['loss']:.4f}", acc=f"{record['accuracy']:.3f}",
                        samples_per_s=f"{record['samples_per_s']:,.0f}", refresh=False)
    run.logged_step = run.state.step
    run.meter.resume()


def _evaluate(run: _Run, on_eval=None, log: bool = True) -> dict:
    """Loss and accuracy over the whole test split: each rank evaluates its shard, sums are added."""
    run.meter.pause()
    sums = run.strategy.evaluate(run.model, run.test_loader, run.device, run.autocast_dtype)
    loss_sum, correct, count = dw.all_reduce_sum(
        [sums["loss_sum"].item(), sums["correct"].item(), sums["count"]], run.device)
    metrics = {"loss": loss_sum / max(1, count), "accuracy": correct / max(1, count), "samples": int(count)}
    if log:
        run.log.write({"kind": "eval", "step": run.state.step, "epoch": run.state.epoch, **metrics})
        run.last_eval = {**metrics, "step": run.state.step}
    if on_eval is not None:
        on_eval(run.state.epoch, metrics)
    run.meter.resume()
    return metrics


def _comm_time(run: _Run) -> float:
    return run.comm_base_s + (run.strategy.comm_time_s or 0.0)


def _require_finite(run: _Run, loss: float) -> None:
    if math.isfinite(loss):
        return
    latest = ckpt.latest_checkpoint(run.run_dir)
    keep = f"the last good checkpoint is {latest}" if latest else "no checkpoint had been written yet"
    raise RunFailed(
        f"the training loss became {loss} by step {run.state.step} (epoch {run.state.epoch + 1}); {keep}. "
        f"Lower optim.lr or set grad_clip_norm"
    )


def _save(run: _Run, path: Path) -> None:
    """Save the whole state to `path` (rank 0 writes; every rank takes part), after checking it is
    worth keeping: the loss since the last record and every parameter shard finite on every rank."""
    run.meter.pause()
    local_bad = not math.isfinite(run.meter.loss_sum()) or not all(
        bool(torch.isfinite(p.to_local() if hasattr(p, "to_local") else p).all()) for p in run.model.parameters())
    (bad,) = dw.all_reduce_sum([float(local_bad)], run.device)
    if bad:
        _require_finite(run, float("nan"))
    model_state, optim_state = run.strategy.capture_training_state(run.model, run.optimizer)
    rng = dw.all_gather_object(ckpt.rng_state(), run.world)
    if run.world.is_main:
        run.state.n_records = run.log.n_records
        run.state.comm_time_s = _comm_time(run)
        loop = asdict(run.state) | {"train_time_s": run.state.train_time_s + run.meter.busy_s}
        ckpt.save_checkpoint(path, {
            "model": model_state, "optimizer": optim_state, "scheduler": run.scheduler.state_dict(),
            "rng": rng, "loop": loop, "config": to_dict(run.cfg), "data_fingerprint": run.data.fingerprint,
            "data_samples": [len(run.data.train), len(run.data.test)],
            "micro_batch_samples": run.sampler.global_batch, "steps_per_epoch": _steps_per_epoch(run),
        })
        ckpt.prune_checkpoints(run.run_dir, run.cfg.keep_checkpoints)
        if path.name != ckpt.FINAL:  # a resumed, extended run has moved past its old final state
            (ckpt.checkpoint_dir(run.run_dir) / ckpt.FINAL).unlink(missing_ok=True)
    run.meter.resume()


def _restore(run: _Run) -> None:
    """Load the newest good checkpoint into this run. Rank 0 picks and checks it and tells the
    others; then every rank reads the full state (the run directory is on a file system all see)."""
    error, path = None, None
    if run.world.is_main:
        try:
            path = _read_resumable(run)
        except MlscaleError as err:
            error = str(err)
    error, path = dw.broadcast_object((error, path), run.world)
    if error:
        raise MlscaleError(error)
    payload = ckpt.load_checkpoint(path)
    try:
        run.strategy.restore_training_state(run.model, run.optimizer, payload["model"], payload["optimizer"])
    except (RuntimeError, ValueError, KeyError) as err:
        raise MlscaleError(f"the checkpoint does not fit this model: {str(err).splitlines()[0]}") from None
    run.scheduler.load_state_dict(payload["scheduler"])
    rng = payload["rng"]
    ckpt.set_rng_state(rng[run.world.rank] if run.world.rank < len(rng) else rng[0])
    run.state = LoopState(**payload["loop"])
    run.comm_base_s = run.state.comm_time_s
    # the position counts micro-batches of the saving world's size; convert to this world's
    run.state.batch = run.state.batch * payload["micro_batch_samples"] // run.sampler.global_batch


def _read_resumable(run: _Run) -> Path:
    """The checkpoint to resume from, checked against this run; newer unusable ones are reported."""
    latest = ckpt.find_latest(run.run_dir)
    for line in latest.report():
        print(f"mlscale: warning: {line}", file=sys.stderr, flush=True)
    path = latest.path
    if path is None:
        raise MlscaleError(f"no usable checkpoint in {ckpt.checkpoint_dir(run.run_dir)} to resume from")
    payload = ckpt.load_checkpoint(path)
    saved_cfg = payload.get("config", {})
    _check_compatible(to_dict(run.cfg), saved_cfg, f"checkpoint {path}")
    if payload.get("data_fingerprint") != run.data.fingerprint:
        then, now = payload.get("data_samples"), [len(run.data.train), len(run.data.test)]
        how = (f"{then[0]} train / {then[1]} test samples then, {now[0]} / {now[1]} now" if then and then != now
               else f"same size, other contents: fingerprint {payload.get('data_fingerprint')} then, "
                    f"{run.data.fingerprint} now")
        raise MlscaleError(f"the data changed since {path} was written ({how}); "
                           f"resume with the same data, or start a new run")
    old_world = len(payload["rng"])
    old_step_samples = payload["micro_batch_samples"] * saved_cfg.get("grad_accum_steps", 1)
    new_step_samples = run.sampler.global_batch * run.cfg.grad_accum_steps
    if old_step_samples != new_step_samples:
        raise MlscaleError(
            f"{path} was trained with {old_step_samples} samples per optimizer step ({old_world} worker(s) x "
            f"batch_size {payload['micro_batch_samples'] // old_world} x grad_accum_steps "
            f"{saved_cfg.get('grad_accum_steps', 1)}); this run has {new_step_samples}: keep workers x batch_size "
            f"x grad_accum_steps the same")
    if payload["steps_per_epoch"] != _steps_per_epoch(run):
        raise MlscaleError(
            f"{path} was trained with {payload['steps_per_epoch']} optimizer steps per epoch; this split of the "
            f"global batch gives {_steps_per_epoch(run)} (the remainder of an epoch differs): keep batch_size x "
            f"workers per micro-batch, or resume with the original split")
    if payload["loop"]["batch"] * payload["micro_batch_samples"] % run.sampler.global_batch:
        raise MlscaleError(f"cannot resume {path} mid-epoch with this split of the global batch")
    return path


def _finish(run: _Run, completed: bool, wall_time_s: float) -> RunResult:
    final = run.last_eval if run.last_eval and run.last_eval["step"] == run.state.step else None
    if final is None:  # stopped mid-epoch, or resumed a finished run: measure now, log nothing
        final = _evaluate(run, log=False)
    state, world = run.state, run.world
    state.comm_time_s = _comm_time(run)
    global_sps = state.samples / state.train_time_s if state.train_time_s else 0.0
    result = RunResult(
        run_dir=run.run_dir, test_accuracy=final["accuracy"], test_loss=final["loss"],
        samples_per_s=global_sps, train_time_s=state.train_time_s, wall_time_s=wall_time_s, steps=state.step,
        epochs_done=state.epoch, completed=completed, device=str(run.device), world_size=world.world_size,
        samples_per_s_per_worker=global_sps / world.world_size,
        step_time_s=state.train_time_s / state.step if state.step else 0.0,
        comm_time_s_per_step=(state.comm_time_s / state.step if state.step else 0.0)
        if run.strategy.comm_time_s is not None else None,
        input_wait_s_per_step=state.input_wait_s / state.step if state.step else 0.0,
        scaling_efficiency=_efficiency(run.cfg.baseline, global_sps, world.world_size),
        rank=world.rank, model=None if world.distributed else run.strategy.unwrap(run.model),
        pipeline=run.strategy.report(run.model, run.optimizer),
    )
    if world.is_main:
        summary = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(result).items()
                   if k not in ("model", "rank")}
        atomic_write_text(run.run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
        if run.cfg.curves:
            plot_curves(read_jsonl(run.run_dir / "metrics.jsonl"), run.run_dir / "curves.png", title=run.run_dir.name)
    return result


def _check_baseline(cfg: TrainConfig) -> None:
    """The baseline must be a finished run of the same job (model, data, optimizer, batch per step)."""
    base = Path(cfg.baseline)
    if not (base / "summary.json").is_file() or not (base / "config.yaml").is_file():
        raise MlscaleError(f"baseline {base}: not a finished run directory (no summary.json / config.yaml)")
    theirs = to_dict(from_dict(TrainConfig, load_yaml(base / "config.yaml")))
    ours = to_dict(cfg)
    _baseline_samples_per_s(cfg.baseline)
    if theirs["workers"] != 1:
        raise MlscaleError(f"baseline {base} ran {theirs['workers']} workers; scaling efficiency needs a 1-worker run")
    for section in ("model", "data", "optim"):
        diff = [d for d in diff_fields(ours[section], theirs[section], section + ".") if d[0] not in RESUMABLE_FIELDS]
        if diff:
            k, a, b = diff[0]
            raise MlscaleError(f"baseline {base} ran another job: {k}={b!r} there, {a!r} here")


def _baseline_samples_per_s(baseline: str) -> float:
    try:
        sps = float(json.loads((Path(baseline) / "summary.json").read_text())["samples_per_s"])
    except (OSError, ValueError, KeyError, TypeError):
        sps = 0.0
    if not sps > 0:
        raise MlscaleError(f"baseline {baseline}: summary.json holds no positive samples_per_s")
    return sps


def _efficiency(baseline: str, samples_per_s: float, world_size: int) -> float | None:
    """Throughput over world_size x the 1-worker baseline's (1.0: perfect linear scaling)."""
    return samples_per_s / (world_size * _baseline_samples_per_s(baseline)) if baseline else None


# --- set-up -----------------------------------------------------------------------------------------


def _build_run(cfg, world, device, model, train_data, test_data, resume, run_dir, store=None) -> _Run:
    torch.manual_seed(cfg.seed)  # the same initial model on every rank
    data = _user_data(train_data, test_data) if train_data is not None else build_data(cfg.data, cfg.seed)
    net = (model if model is not None else build_model(cfg.model, data.input_shape, data.n_classes)).to(device)
    if world.distributed:
        torch.manual_seed(cfg.seed + 1_000_003 * world.rank)  # each rank its own dropout stream
    autocast_dtype = choose_autocast_dtype(cfg.precision, device)
    strategy = build_strategy(cfg.strategy, world, device, bucket_cap_mb=cfg.dist.bucket_cap_mb, pipeline=cfg.pipeline,
                              input_shape=data.input_shape, batch_size=cfg.batch_size, autocast_dtype=autocast_dtype)
    shard, n_shards = strategy.data_shard  # a pipeline's stages share their replica's shard
    sampler = EpochBatchSampler(len(data.train), cfg.batch_size, seed=cfg.seed, rank=shard, world_size=n_shards)
    if sampler.batches_per_epoch() == 0:
        raise MlscaleError(f"batch_size {cfg.batch_size} x {n_shards} worker(s) is larger than the "
                           f"training split ({len(data.train)} samples)")
    loader_kw = dict(num_workers=cfg.data.num_workers, prefetch_factor=cfg.data.prefetch_factor,
                     pin_memory=device.type == "cuda")
    model_name, n_params = type(net).__name__, _n_params(net)  # before a strategy wraps or shards it
    wrapped = strategy.setup_module(net)
    optimizer = build_optimizer(cfg.optim, wrapped)
    restarted = False
    if run_dir is None and resume:
        run_dir = Path(resume)
    elif run_dir is None and store is not None:  # under torchrun: one directory for all ranks and restarts
        run_dir, restarted = dw.shared_run_dir(world, store, lambda: _new_run_dir(cfg, net if model is not None else None, data))
        latest = ckpt.latest_checkpoint(Path(run_dir)) if restarted and world.is_main else None
        resume = dw.broadcast_object(run_dir if latest else None, world)  # else: start again, same directory
    elif run_dir is None:
        run_dir = _new_run_dir(cfg, net if model is not None else None, data)
    test_sampler = EpochBatchSampler(len(data.test), cfg.eval_batch_size, shuffle=False, drop_last=False,
                                     rank=shard, world_size=n_shards)
    run = _Run(
        cfg=cfg, world=world, run_dir=Path(run_dir), data=data, model=wrapped, strategy=strategy,
        optimizer=optimizer, scheduler=None, sampler=sampler, loader=make_loader(data.train, sampler, **loader_kw),
        test_loader=make_loader(data.test, test_sampler, **loader_kw), device=device,
        autocast_dtype=autocast_dtype, log=_NoLog(), meter=Meter(device),
        model_name=model_name, n_params=n_params,
    )
    run.scheduler = build_scheduler(cfg.optim, optimizer, _steps_per_epoch(run) * cfg.epochs)
    if resume:
        _restore(run)
        run.logged_step = run.state.step
    if world.is_main:
        atomic_write_text(run.run_dir / "config.yaml", _yaml(to_dict(cfg)))
        run.log = MetricsLog(run.run_dir / "metrics.jsonl",
                             keep_records=run.state.n_records if resume else 0 if restarted else None)
    return run


def _steps_per_epoch(run: _Run) -> int:
    return math.ceil(run.sampler.batches_per_epoch() / run.cfg.grad_accum_steps)


def _resolve_config(config: TrainConfig | None, resume) -> TrainConfig:
    """The config to run; when resuming, checked against the one the run was started with."""
    if resume is None:
        return validate(config if config is not None else TrainConfig())
    run_dir = Path(resume)
    if not (run_dir / "config.yaml").is_file():
        raise MlscaleError(f"cannot resume {run_dir}: not a run directory (no config.yaml)")
    saved = validate(from_dict(TrainConfig, load_yaml(run_dir / "config.yaml")))
    cfg = validate(config) if config is not None else saved
    _check_compatible(to_dict(cfg), to_dict(saved), f"run {run_dir}")
    return cfg


def _check_compatible(new: dict, old: dict, what: str) -> None:
    free = RESUMABLE_FIELDS | (RESUMABLE_WITH_CONSTANT_SCHEDULE if new["optim"]["schedule"] == "constant" else set())
    changed = [(k, a, b) for k, a, b in diff_fields(new, old) if k not in free]
    if changed:
        k, a, b = changed[0]
        raise MlscaleError(f"{what} was written with {k}={b!r}, this config has {k}={a!r}; "
                           f"a resumed run must keep the config it started with")


def _user_data(train_data: Dataset, test_data: Dataset) -> DataBundle:
    """Describe user-given datasets: sample shape from the first sample, classes from the labels."""
    for name, ds in (("train_data", train_data), ("test_data", test_data)):
        if not hasattr(ds, "__getitem__") or not hasattr(ds, "__len__") or len(ds) == 0:
            raise MlscaleError(f"{name} must be a non-empty map-style Dataset of (features, label) pairs")
    x0, _ = train_data[0]
    classes = getattr(train_data, "classes", None)
    if classes is not None:
        n_classes = len(classes)
    else:
        n_classes = 1 + max(int(train_data[i][1]) for i in range(len(train_data)))
    return DataBundle(train=train_data, test=test_data, input_shape=tuple(torch.as_tensor(x0).shape),
                      n_classes=n_classes, name=type(train_data).__name__,
                      fingerprint=f"{type(train_data).__name__}:{len(train_data)}:{len(test_data)}")


def _new_run_dir(cfg: TrainConfig, user_model: nn.Module | None, data: DataBundle) -> Path:
    model_name = type(user_model).__name__.lower() if user_model is not None else cfg.model.name
    return new_run_dir(cfg.out_dir, cfg.name or f"{model_name}-{data.name}")


def _progress_bar(run: _Run, total: int):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=run.state.step, unit="step", disable=not (run.cfg.progress and run.world.is_main),
                dynamic_ncols=True, mininterval=0.25, leave=True)


def _say(run: _Run, message: str) -> None:
    if run.cfg.progress and run.world.is_main:
        print(message, flush=True)


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _yaml(d: dict) -> str:
    import yaml

    return yaml.safe_dump(d, sort_keys=False)
