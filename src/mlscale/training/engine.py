"""The training engine: `train(config)` runs input pipeline -> forward -> loss -> backward ->
optimizer step -> schedule, evaluates on the held-out split, logs, checkpoints, and resumes.

The loop itself is `_fit`, one screen, in the order nanoGPT's and torchtitan's loops use;
everything it calls (metrics, checkpoints, evaluation) lives beside it, not inside it.
"""

from __future__ import annotations

import json
import math
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import Dataset

from mlscale.config import RESUMABLE_FIELDS, TrainConfig, diff_fields, from_dict, load_yaml, to_dict, validate
from mlscale.errors import MlscaleError, RunFailed
from mlscale.processors.devices import choose_autocast_dtype, choose_device
from mlscale.runs import MetricsLog, atomic_write_text, new_run_dir, read_jsonl
from mlscale.training import checkpoint as ckpt
from mlscale.training.data import DataBundle, EpochBatchSampler, build_data, make_loader
from mlscale.training.metrics import Meter, evaluate, plot_curves
from mlscale.training.models import build_model
from mlscale.training.optim import build_optimizer, build_scheduler


@dataclass
class RunResult:
    """What a run produced. Times in seconds; samples/s counts training steps only."""

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
    model: nn.Module = field(repr=False)


@dataclass
class LoopState:
    """Where the loop is; saved in every checkpoint."""

    epoch: int = 0  # the epoch in progress
    batch: int = 0  # micro-batches of that epoch already done
    step: int = 0  # optimizer steps done
    samples: int = 0  # training samples processed
    train_time_s: float = 0.0  # time spent in training steps (not evaluation or checkpoints)
    n_records: int = 0  # metrics.jsonl records written


@dataclass
class _Run:
    """Everything one run needs, built once by `train` and handed to the loop."""

    cfg: TrainConfig
    run_dir: Path
    data: DataBundle
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    sampler: EpochBatchSampler
    loader: torch.utils.data.DataLoader
    test_loader: torch.utils.data.DataLoader
    device: torch.device
    autocast_dtype: torch.dtype | None
    log: MetricsLog
    state: LoopState
    meter: Meter
    bar: object = None
    last_eval: dict | None = None


def train(config: TrainConfig | None = None, *, model: nn.Module | None = None,
          train_data: Dataset | None = None, test_data: Dataset | None = None,
          resume: str | Path | None = None, on_eval=None) -> RunResult:
    """Train a model and return its result; the run directory holds config, metrics, checkpoints.

    Args:
        config: the run's configuration (default: `TrainConfig()`, an MLP on the embedded digits).
        model: any `torch.nn.Module` mapping a batch of samples to class logits; default: the
            built-in model named by `config.model`.
        train_data, test_data: any map-style `Dataset` of `(features, label)` pairs, given
            together; default: `config.data`.
        resume: a run directory to continue from its latest checkpoint.
        on_eval: called as `on_eval(epoch, metrics)` after each evaluation (e.g. for pruning).

    Raises:
        MlscaleError: bad config, data, device or checkpoint (a user mistake).
        RunFailed: the loss became NaN/Inf; the last good checkpoint is kept.

    Example:
        >>> import mlscale
        >>> result = mlscale.train(mlscale.TrainConfig(epochs=2, progress=False))  # doctest: +SKIP
        >>> result.test_accuracy > 0.9  # doctest: +SKIP
        True
    """
    t_start = time.perf_counter()
    cfg, saved = _resolve_config(config, resume)
    if (train_data is None) != (test_data is None):
        raise MlscaleError("give train_data and test_data together (or neither, to use config.data)")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    device = choose_device(cfg.device).device
    data = _user_data(train_data, test_data, cfg) if train_data is not None else build_data(cfg.data, cfg.seed)
    net = (model if model is not None else build_model(cfg.model, data.input_shape, data.n_classes)).to(device)

    sampler = EpochBatchSampler(len(data.train), cfg.batch_size, seed=cfg.seed)
    if sampler.batches_per_epoch() == 0:
        raise MlscaleError(f"batch_size {cfg.batch_size} is larger than the training split ({len(data.train)} samples)")
    loader_kw = dict(num_workers=cfg.data.num_workers, prefetch_factor=cfg.data.prefetch_factor,
                     pin_memory=device.type == "cuda")
    steps_per_epoch = math.ceil(sampler.batches_per_epoch() / cfg.grad_accum_steps)
    optimizer = build_optimizer(cfg.optim, net)
    run = _Run(
        cfg=cfg, run_dir=Path(resume) if resume else _new_run_dir(cfg, net if model is not None else None, data),
        data=data, model=net, optimizer=optimizer,
        scheduler=build_scheduler(cfg.optim, optimizer, steps_per_epoch * cfg.epochs),
        sampler=sampler, loader=make_loader(data.train, sampler, **loader_kw),
        test_loader=make_loader(data.test, EpochBatchSampler(len(data.test), cfg.eval_batch_size, shuffle=False,
                                                             drop_last=False), **loader_kw),
        device=device, autocast_dtype=choose_autocast_dtype(cfg.precision, device),
        log=None, state=LoopState(), meter=Meter(device),
    )
    if resume:
        _restore(run, saved)
    atomic_write_text(run.run_dir / "config.yaml", _yaml(to_dict(cfg)))
    run.log = MetricsLog(run.run_dir / "metrics.jsonl", keep_records=run.state.n_records if resume else None)
    try:
        _say(run, f"training {type(net).__name__} ({_n_params(net):,} parameters) on {data.name} "
                  f"({len(data.train)} train / {len(data.test)} test), {device}"
                  f"{', bf16 autocast' if run.autocast_dtype else ''}, {cfg.epochs} epochs x {steps_per_epoch} steps"
                  f"{f' (resuming at step {run.state.step})' if resume else ''}")
        completed = _fit(run, steps_per_epoch * cfg.epochs, on_eval)
        return _finish(run, completed, time.perf_counter() - t_start)
    finally:
        run.log.close()
        if run.bar is not None:
            run.bar.close()


def _fit(run: _Run, total_steps: int, on_eval) -> bool:
    """The training loop. Returns False if it stopped early at `stop_at_step`."""
    cfg, model, opt, state, meter = run.cfg, run.model, run.optimizer, run.state, run.meter
    accum, n_micro = cfg.grad_accum_steps, run.sampler.batches_per_epoch()
    autocast = torch.autocast(run.device.type, dtype=run.autocast_dtype) if run.autocast_dtype else nullcontext()
    run.bar = _progress_bar(cfg, total_steps, state.step)
    meter.reset()
    for epoch in range(state.epoch, cfg.epochs):
        run.sampler.set_epoch(epoch, start_batch=state.batch)
        model.train()
        for x, y in run.loader:  # input pipeline: this rank's batches of this epoch
            x, y = x.to(run.device, non_blocking=True), y.to(run.device, non_blocking=True)
            group = min(accum, n_micro - state.batch // accum * accum)  # micro-batches in this step
            with autocast:
                logits = model(x)  # forward
            loss = F.cross_entropy(logits.float(), y)  # loss
            (loss / group if group > 1 else loss).backward()  # backward (gradients add up over the group)
            meter.add(loss, logits, y)
            state.batch += 1
            if state.batch % accum and state.batch < n_micro:
                continue  # more micro-batches before this optimizer step
            if cfg.grad_clip_norm:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip_norm)
            opt.step()  # parameter update
            run.scheduler.step()  # learning-rate schedule
            opt.zero_grad(set_to_none=True)
            state.step += 1
            state.samples += group * len(y)
            run.bar.update(1)
            if state.step % cfg.log_every_steps == 0:
                _log_train(run)
            if state.step == cfg.stop_at_step:
                _save(run, ckpt.step_checkpoint_path(run.run_dir, state.step))
                return False
            if cfg.checkpoint_every_steps and state.step % cfg.checkpoint_every_steps == 0 and state.step < total_steps:
                _save(run, ckpt.step_checkpoint_path(run.run_dir, state.step))
        state.epoch, state.batch = epoch + 1, 0
        _evaluate(run, on_eval)
        if not cfg.checkpoint_every_steps and state.epoch < cfg.epochs:
            _save(run, ckpt.step_checkpoint_path(run.run_dir, state.step))
    if run.meter.batches:
        _log_train(run)
    _save(run, ckpt.checkpoint_dir(run.run_dir) / ckpt.FINAL)
    return True


# --- what the loop calls ----------------------------------------------------------------------------


def _log_train(run: _Run) -> None:
    window = run.meter.flush()
    _require_finite(run, window["loss"])
    run.state.train_time_s += window["train_time_s"]
    record = {
        "kind": "train", "step": run.state.step,
        "epoch": round(run.state.epoch + run.state.batch / run.sampler.batches_per_epoch(), 4),
        "loss": window["loss"], "accuracy": window["accuracy"],
        "samples_per_s": round(window["samples_per_s"], 1),
        "lr": run.scheduler.get_last_lr()[0],
    }
    run.log.write(record)
    run.bar.set_postfix(loss=f"{record['loss']:.4f}", acc=f"{record['accuracy']:.3f}",
                        samples_per_s=f"{record['samples_per_s']:,.0f}", refresh=False)
    run.meter.resume()


def _evaluate(run: _Run, on_eval=None) -> dict:
    run.meter.pause()
    sums = evaluate(run.model, run.test_loader, run.device, run.autocast_dtype)
    count = max(1, sums["count"])
    metrics = {"loss": sums["loss_sum"].item() / count, "accuracy": sums["correct"].item() / count,
               "samples": sums["count"]}
    run.log.write({"kind": "eval", "step": run.state.step, "epoch": run.state.epoch, **metrics})
    run.last_eval = {**metrics, "step": run.state.step}
    if on_eval is not None:
        on_eval(run.state.epoch, metrics)
    run.meter.resume()
    return metrics


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
    """Save the whole state to `path`, after checking it is worth keeping (finite)."""
    run.meter.pause()
    _require_finite(run, run.meter.loss_sum())
    if not all(torch.isfinite(p).all() for p in run.model.parameters()):
        _require_finite(run, float("nan"))
    run.state.n_records = run.log.n_records
    loop = asdict(run.state) | {"train_time_s": run.state.train_time_s + run.meter.busy_s}
    ckpt.save_checkpoint(path, {
        "model": run.model.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(),
        "rng": ckpt.rng_state(),
        "loop": loop,
        "config": to_dict(run.cfg),
        "data_fingerprint": run.data.fingerprint,
    })
    ckpt.prune_checkpoints(run.run_dir, run.cfg.keep_checkpoints)
    run.meter.resume()


def _restore(run: _Run, saved: TrainConfig) -> None:
    path = ckpt.latest_checkpoint(run.run_dir)
    if path is None:
        raise MlscaleError(f"no checkpoint in {ckpt.checkpoint_dir(run.run_dir)} to resume from")
    payload = ckpt.load_checkpoint(path)
    _check_compatible(to_dict(run.cfg), payload.get("config", {}), f"checkpoint {path}")
    if payload.get("data_fingerprint") != run.data.fingerprint:
        raise MlscaleError(f"the data changed since {path} was written (its samples or split differ); "
                           f"resume with the same data, or start a new run")
    try:
        run.model.load_state_dict(payload["model"])
        run.optimizer.load_state_dict(payload["optimizer"])
    except (RuntimeError, ValueError, KeyError) as err:
        raise MlscaleError(f"checkpoint {path} does not fit this model: {str(err).splitlines()[0]}") from None
    run.scheduler.load_state_dict(payload["scheduler"])
    ckpt.set_rng_state(payload["rng"])
    run.state = LoopState(**payload["loop"])


def _finish(run: _Run, completed: bool, wall_time_s: float) -> RunResult:
    final = run.last_eval if run.last_eval and run.last_eval["step"] == run.state.step else None
    if final is None:  # stopped mid-epoch, or resumed a finished run: measure now, log nothing
        sums = evaluate(run.model, run.test_loader, run.device, run.autocast_dtype)
        count = max(1, sums["count"])
        final = {"loss": sums["loss_sum"].item() / count, "accuracy": sums["correct"].item() / count}
    state = run.state
    result = RunResult(
        run_dir=run.run_dir, test_accuracy=final["accuracy"], test_loss=final["loss"],
        samples_per_s=state.samples / state.train_time_s if state.train_time_s else 0.0,
        train_time_s=state.train_time_s, wall_time_s=wall_time_s, steps=state.step,
        epochs_done=state.epoch, completed=completed, device=str(run.device), model=run.model,
    )
    summary = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(result).items() if k != "model"}
    atomic_write_text(run.run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    plot_curves(read_jsonl(run.log.path), run.run_dir / "curves.png", title=run.run_dir.name)
    return result


# --- set-up helpers ---------------------------------------------------------------------------------


def _resolve_config(config: TrainConfig | None, resume) -> tuple[TrainConfig, TrainConfig | None]:
    """The config to run, and (when resuming) the one the run was started with."""
    if resume is None:
        return validate(config if config is not None else TrainConfig()), None
    run_dir = Path(resume)
    if not (run_dir / "config.yaml").is_file():
        raise MlscaleError(f"cannot resume {run_dir}: not a run directory (no config.yaml)")
    saved = validate(from_dict(TrainConfig, load_yaml(run_dir / "config.yaml")))
    cfg = validate(config) if config is not None else saved
    _check_compatible(to_dict(cfg), to_dict(saved), f"run {run_dir}")
    return cfg, saved


def _check_compatible(new: dict, old: dict, what: str) -> None:
    changed = [(k, a, b) for k, a, b in diff_fields(new, old) if k not in RESUMABLE_FIELDS]
    if changed:
        k, a, b = changed[0]
        raise MlscaleError(f"{what} was written with {k}={b!r}, this config has {k}={a!r}; "
                           f"a resumed run must keep the config it started with")


def _user_data(train_data: Dataset, test_data: Dataset, cfg: TrainConfig) -> DataBundle:
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


def _progress_bar(cfg: TrainConfig, total: int, initial: int):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, unit="step", disable=not cfg.progress, dynamic_ncols=True,
                mininterval=0.25, leave=True)


def _say(run: _Run, message: str) -> None:
    if run.cfg.progress:
        print(message, flush=True)


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _yaml(d: dict) -> str:
    import yaml

    return yaml.safe_dump(d, sort_keys=False)
