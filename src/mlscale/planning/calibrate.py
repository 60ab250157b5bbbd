"""Calibration: the measurements the cost model needs, taken on this machine.

- one worker's step, split into compute and input-pipeline wait, from a real short training run
  (the engine's own timers; the first window, with its warm-up, is dropped);
- the share of compute that is backward (where DDP overlaps the all-reduce), timed on the model;
- the gradient bytes per step, per DDP bucket, from the model's parameters;
- the collective's latency and bandwidth: an all-reduce micro-benchmark over message sizes on the
  real backend (gloo over 127.0.0.1 here, NCCL between GPUs), least-squares fitted to the ring
  model t = 2(N-1)/N * S/B + 2(N-1) * alpha. Each rank runs the job's own training step before
  every all-reduce, as DDP's ranks do, and the fit is to the mean time (the step-time model
  predicts mean steps): on a host whose cores the workers fill, a collective's threads often wait
  milliseconds for a core, a tail the median hides. The same benchmark times that step while the
  ranks synchronize every step: on one host this alone slows compute (on the project's 2-core
  machine by 2-80% across bench/plan_accuracy.py's jobs, the most for the shortest steps: a rank
  that slept in the collective starts its next step cold), which copies running side by side
  without communicating do not show;
- the matrix-multiply FLOP/s of the device, to scale compute to devices that are not here.
"""

from __future__ import annotations

import datetime
import json
import multiprocessing as mp
import statistics
import tempfile
import time
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.distributed as dist
from torch.nn import functional as F

from mlscale.config import TrainConfig
from mlscale.errors import MlscaleError, RunFailed
from mlscale.planning.costmodel import Link, StepProfile, ddp_buckets
from mlscale.training.distributed import world as dw

DEFAULT_SIZES_BYTES = tuple(4 ** k * 1024 for k in range(0, 7))  # 1 KiB .. 4 MiB


@dataclass(frozen=True)
class StepMeasure:
    """One worker's measured step (seconds, means over the timed steps)."""

    step_s: float
    input_wait_s: float
    steps: int
    threads: int
    comm_s: float = 0.0  # gradient all-reduce in flight per step (ddp; mean over the whole run)

    @property
    def compute_s(self) -> float:
        return self.step_s - self.input_wait_s


@dataclass(frozen=True)
class LinkFit:
    """An all-reduce benchmark and its fit to the ring model."""

    link: Link
    n_workers: int
    backend: str
    sizes_bytes: tuple[int, ...]
    times_s: tuple[float, ...]  # mean per size (over the ranks and the repeats)
    compute_s: float | None = None  # the job's step before each all-reduce, mean over ranks and repeats
    idle_s: float | None = None  # the smallest size's all-reduce among idle ranks lined up (median)

    def max_rel_error(self) -> float:
        from mlscale.planning.costmodel import bucket_allreduce_s

        # each timed all-reduce was a step's only one: the ring's time and the wait for the ranks
        return max(abs(bucket_allreduce_s((s,), self.n_workers, self.link)[0] - t) / t
                   for s, t in zip(self.sizes_bytes, self.times_s))


@dataclass(frozen=True)
class Calibration:
    """Everything `mlscale.planning.planner` predicts from."""

    profile: StepProfile
    link_fit: LinkFit | None  # None when only one worker was measurable
    matmul_flops: float  # this device's fp32 matrix-multiply FLOP/s at `threads`
    threads: int
    device: str
    batch_size: int  # per worker
    n_train: int  # training samples (for steps per epoch)
    grad_accum_steps: int
    epochs: int

    def to_dict(self) -> dict:
        from dataclasses import asdict

        return asdict(self)


def measure_step(cfg: TrainConfig, *, steps: int = 20, warmup_steps: int = 5, threads: int = 0,
                 workers: int = 1, out_dir: str | None = None) -> StepMeasure:
    """Run `cfg` on `workers` local workers (`threads` each) for `warmup_steps + steps` optimizer
    steps and return the mean step and input wait (rank 0's) of the last `steps`, from the engine's
    windowed records (the warm-up window dropped)."""
    import mlscale

    threads = threads or torch.get_num_threads()
    with tempfile.TemporaryDirectory(prefix="mlscale-calibrate-") as tmp:
        run_cfg = replace(cfg, workers=workers, threads=threads, progress=False, out_dir=out_dir or tmp, name="calibrate",
                          log_every_steps=warmup_steps, stop_at_step=warmup_steps + steps, baseline="",
                          checkpoint_every_steps=warmup_steps + steps, epochs=max(cfg.epochs, 10_000), max_restarts=0)
        run_cfg.optim = replace(cfg.optim, schedule="constant")  # an epoch count this large must not shape the lr
        result = mlscale.train(run_cfg)
        records = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["kind"] == "train"]
    step_samples = cfg.batch_size * cfg.grad_accum_steps * workers
    first, timed = train[0], train[1:]
    if not timed:
        raise MlscaleError("calibration recorded no timed window; raise --steps")
    time_s = sum((r["step"] - prev["step"]) * step_samples / r["samples_per_s"]
                 for prev, r in zip(train, timed) if r["samples_per_s"] > 0)
    n = timed[-1]["step"] - first["step"]
    wait = timed[-1]["input_wait_s"] - first["input_wait_s"]
    return StepMeasure(step_s=time_s / n, input_wait_s=wait / n, steps=n, threads=threads,
                       comm_s=result.comm_time_s_per_step or 0.0)


def _gather(procs, queue, n_answers: int, timeout_s: float, join_s: float) -> list:
    """Start `procs` and collect up to `n_answers` items from `queue` within `timeout_s`, fewer
    once every process has ended; then reap them, killing any still alive after `join_s`."""
    for p in procs:
        p.start()
    answers, deadline = [], time.monotonic() + timeout_s
    while len(answers) < n_answers and time.monotonic() < deadline:
        try:
            answers.append(queue.get(timeout=0.5))
        except Exception:  # queue.Empty: a process that died without answering ends the wait
            if not any(p.is_alive() for p in procs) and queue.empty():
                break
    for p in procs:
        p.join(timeout=join_s)
        if p.is_alive():
            p.kill()
            p.join()
    return answers


def _one_line(err: BaseException) -> str:
    text = str(err)
    return f"{type(err).__name__}: {text.splitlines()[0] if text else ''}"


def backward_fraction(cfg: TrainConfig, *, repeats: int = 10, threads: int = 0) -> float:
    """The share of forward + backward + update time that is backward, timed on the config's model
    with one batch of its data (the part of compute DDP can overlap with its all-reduce)."""
    if threads:
        torch.set_num_threads(threads)
    model, opt, x, y = _job(cfg)
    fwd, bwd, upd = [], [], []
    for _ in range(repeats + 2):
        t0 = time.perf_counter()
        loss = F.cross_entropy(model(x).float(), y)
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        opt.step()
        opt.zero_grad(set_to_none=True)
        t3 = time.perf_counter()
        fwd.append(t1 - t0), bwd.append(t2 - t1), upd.append(t3 - t2)
    f, b, u = (statistics.median(v[2:]) for v in (fwd, bwd, upd))
    return b / (f + b + u)


def count_ops(cfg: TrainConfig) -> int:
    """Operators one training step dispatches (forward, loss, backward, optimizer update), each a
    kernel launch on a GPU: below a point, a step costs launches, not FLOPs."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class _Count(TorchDispatchMode):
        n = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            _Count.n += 1
            return func(*args, **(kwargs or {}))

    step = _train_step(cfg)
    for _ in range(2):  # the second step: optimizer state exists, as in every later step
        _Count.n = 0
        with _Count():
            step()
    return _Count.n


def _job(cfg: TrainConfig, device: str | torch.device = "cpu"):
    """The config's model and optimizer, and its first training batch, on `device`."""
    from mlscale.training.data import build_data
    from mlscale.training.models import build_model
    from mlscale.training.optim import build_optimizer

    torch.manual_seed(cfg.seed)
    data = build_data(cfg.data, cfg.seed)
    model = build_model(cfg.model, data.input_shape, data.n_classes).to(device)
    opt = build_optimizer(cfg.optim, model)
    x, y = (torch.stack([torch.as_tensor(data.train[i][k]) for i in range(min(cfg.batch_size, len(data.train)))])
            .to(device) for k in (0, 1))
    return model, opt, x, y


def _train_step(cfg: TrainConfig, device: str | torch.device = "cpu", ddp: bool = False):
    """One training step of the config's job on one fixed batch (forward, loss, backward, update),
    as a function to call repeatedly. With `ddp` (in a process group), the model is wrapped in DDP
    as the engine wraps it, with a communication hook that sends nothing: DDP's own per-step work
    (gradient hooks, bucket copies) without the all-reduce, which the caller times itself."""
    device = torch.device(device)
    model, opt, x, y = _job(cfg, device)
    if ddp:
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
        model.register_comm_hook(None, _keep_local)

    def step():
        F.cross_entropy(model(x).float(), y).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step


def _keep_local(_, bucket):  # no annotations: DDP checks them
    """A DDP communication hook that leaves the bucket's gradients as they are."""
    fut = torch.futures.Future()
    fut.set_result(bucket.buffer())
    return fut


def gradient_buckets(cfg: TrainConfig) -> tuple[int, ...]:
    """Gradient bytes per DDP bucket for the config's model (fp32 gradients)."""
    from mlscale.training.data import build_data
    from mlscale.training.models import build_model

    data = build_data(cfg.data, cfg.seed)
    model = build_model(cfg.model, data.input_shape, data.n_classes)
    sizes = [p.numel() * p.element_size() for p in model.parameters() if p.requires_grad]
    return ddp_buckets(sizes, cfg.dist.bucket_cap_mb)


def matmul_flops(threads: int = 0, n: int = 512, seconds: float = 0.3, device: str = "cpu",
                 dtype: torch.dtype = torch.float32) -> float:
    """Matrix-multiply FLOP/s of `device` (this CPU at `threads` threads, or a GPU) in `dtype`,
    2 n^3 FLOPs per product of two n x n matrices."""
    if threads:
        torch.set_num_threads(threads)
    dev = torch.device(device)
    a, b = torch.randn(n, n, device=dev, dtype=dtype), torch.randn(n, n, device=dev, dtype=dtype)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    a @ b
    sync()
    count, t0 = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - t0) < seconds:
        for _ in range(10 if dev.type == "cuda" else 1):  # keep a GPU's queue full between checks
            a @ b
            count += 1
        sync()
        elapsed = time.perf_counter() - t0
    return 2 * n ** 3 * count / elapsed


# --- the all-reduce micro-benchmark -----------------------------------------------------------------


def fit_link(sizes_bytes, times_s, n_workers: int, idle_s: float | None = None) -> Link:
    """Least-squares fit of t = 2(N-1)/N * S/B + 2(N-1) * alpha to measured (S, t). With `idle_s`
    (an all-reduce of a small message among idle ranks lined up: the ring's own latency), the
    constant is split: alpha = idle_s / 2(N-1) per hop, and the rest is the step's `sync_s`
    (waiting for ranks that arrive from compute), which does not grow with N as hops do."""
    s, t = np.asarray(sizes_bytes, dtype=float), np.asarray(times_s, dtype=float)
    # weighted by 1/t: every size counts by its relative error, not the biggest by its absolute one
    w = 1.0 / t
    A = np.stack([np.full_like(s, 2 * (n_workers - 1)), 2 * (n_workers - 1) / n_workers * s], axis=1)
    (alpha, inv_b), *_ = np.linalg.lstsq(A * w[:, None], t * w, rcond=None)
    if inv_b <= 0:  # noise swamped the slope: latency from the smallest message, bandwidth from the largest
        big = int(np.argmax(s))
        alpha = t.min() / (2 * (n_workers - 1))
        inv_b = (t[big] - t.min()) / (2 * (n_workers - 1) / n_workers * s[big])
    if inv_b <= 0:
        raise RunFailed("the all-reduce benchmark's times do not grow with message size; rerun on a quieter machine")
    alpha = max(0.0, float(alpha))
    hop = alpha if idle_s is None else min(alpha, idle_s / (2 * (n_workers - 1)))
    return Link(alpha_s=hop, bandwidth_bytes_per_s=float(1.0 / inv_b), sync_s=2 * (n_workers - 1) * (alpha - hop))


def benchmark_allreduce(n_workers: int = 2, sizes_bytes=DEFAULT_SIZES_BYTES, repeats: int = 0,
                        device: str = "cpu", timeout_s: float = 180.0, compute_s: float = 0.002,
                        job: TrainConfig | None = None, threads: int = 1) -> LinkFit:
    """Time a float32 all-reduce of each size among `n_workers` local processes (gloo on 127.0.0.1,
    or NCCL with one GPU each for `device="cuda"`) and fit the ring model.

    Before each all-reduce a rank computes, and the ranks are not lined up by a barrier: a rank
    arrives from compute, as from a backward pass, and waits there for the slowest. The compute is
    one training step of `job` (its model, optimizer and first batch, `threads` threads per rank),
    timed, which gives the fit's `compute_s`; without a job, matrix products for `compute_s`
    seconds. (On a CPU host the longer the ranks computed, the more the all-reduce that follows
    costs: 1-2 ms more after 20 ms than after 2 ms on the project's 2-core machine.) The time per
    size is the mean over ranks and `repeats` (0: as many as fit in about a second of compute, 20 to
    60, with `compute_s` the step's expected length; the first few dropped). Last, the smallest size
    among idle ranks lined up by a barrier (median): the ring's own latency, which splits the fit's
    constant into per-hop latency and the step's wait for its ranks (`fit_link`)."""
    repeats = repeats or min(60, max(20, round(1.0 / max(compute_s, 1e-3))))
    ctx = mp.get_context("spawn")
    sock = dw.listen("127.0.0.1", 0)
    port = sock.getsockname()[1]
    store = dist.TCPStore("127.0.0.1", port, n_workers, is_master=True, wait_for_workers=False,
                          timeout=datetime.timedelta(seconds=timeout_s), master_listen_fd=sock.detach(),
                          use_libuv=False)
    queue = ctx.Queue()
    procs = [ctx.Process(target=_allreduce_worker, daemon=True,
                         args=(r, n_workers, port, tuple(sizes_bytes), repeats, device, timeout_s, queue, compute_s,
                               job, threads))
             for r in range(n_workers)]
    answers = _gather(procs, queue, 1, timeout_s, join_s=30)  # rank 0 answers for all
    answer = answers[0] if answers else None
    del store
    if not isinstance(answer, tuple):
        raise RunFailed(f"the all-reduce benchmark failed: {answer or 'no answer within the timeout'}")
    times, computed, idle = answer
    backend = dw.backend_for(torch.device(device))
    return LinkFit(fit_link(sizes_bytes, times, n_workers, idle), n_workers, backend, tuple(sizes_bytes), tuple(times),
                   compute_s=computed if job is not None else None, idle_s=idle)


def _allreduce_worker(rank, n_workers, port, sizes, repeats, device, timeout_s, queue, compute_s, job, threads) -> None:
    try:
        torch.set_num_threads(threads)
        world = dw.World(rank, n_workers, rank, n_workers)
        dev = dw.device_for(world, torch.device(device))
        dw.init_process_group(world, dev, timeout_s, ("127.0.0.1", port))
        sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)
        if job is not None:
            work = _train_step(job, dev, ddp=True)
        else:
            a = torch.randn(64, 64, device=dev)

            def work():  # a moment of real work, as backward before DDP's all-reduce
                nonlocal a
                until = time.perf_counter() + compute_s
                while time.perf_counter() < until:
                    a = torch.tanh(a @ a)
                    sync()
        means, computed = [], []
        for size in sizes:
            t = torch.ones(max(1, size // 4), device=dev)
            samples = []
            dw.barrier()
            for i in range(repeats + 3):
                t0 = time.perf_counter()
                work()
                sync()
                t1 = time.perf_counter()
                dist.all_reduce(t)
                sync()
                samples.append(time.perf_counter() - t1)
                if i >= 3:
                    computed.append(t1 - t0)
            # the mean, not the median: a step waits out every slow all-reduce, and on a busy host
            # the slow ones (a thread waiting for a core) are common enough to count
            gathered = dw.all_gather_object(statistics.fmean(samples[3:]), world)
            means.append(statistics.fmean(gathered))
        computed = statistics.fmean(dw.all_gather_object(statistics.fmean(computed), world))
        t, idle = torch.ones(max(1, sizes[0] // 4), device=dev), []
        for _ in range(repeats + 3):  # the ring's own latency: the smallest size among ranks lined up, idle
            dw.barrier()
            t0 = time.perf_counter()
            dist.all_reduce(t)
            sync()
            idle.append(time.perf_counter() - t0)
        idle = statistics.fmean(dw.all_gather_object(statistics.median(idle[3:]), world))
        dw.shutdown(world)
        if rank == 0:
            queue.put((means, computed, idle))
    except BaseException as err:  # report, never hang the parent
        if rank == 0:
            queue.put(_one_line(err))
        raise


def calibrate(cfg: TrainConfig, *, steps: int = 20, threads: int = 0, link_workers: int = 2,
              serial_fraction: float = 0.0, device: str = "cpu") -> Calibration:
    """All of the above for `cfg` on `device` (`cpu` or `cuda`, where the job runs): one worker's
    step at `threads` threads, its buckets, and the all-reduce fitted among `link_workers` local
    processes (0 or 1: no benchmark; gloo when there are fewer GPUs than that)."""
    from mlscale.training.data import build_data

    threads = threads or torch.get_num_threads()
    measured = measure_step(cfg, steps=steps, threads=threads)
    frac = backward_fraction(cfg, threads=threads)
    buckets = gradient_buckets(cfg)
    profile = StepProfile(compute_s=measured.compute_s, backward_s=measured.compute_s * frac,
                          input_wait_s=measured.input_wait_s, bucket_bytes=buckets, serial_fraction=serial_fraction,
                          ops_per_step=count_ops(cfg))
    # NCCL between GPUs where there are enough of them; gloo between processes otherwise
    gpus = torch.cuda.device_count() if device == "cuda" else 0
    link_device = "cuda" if gpus >= link_workers else "cpu"
    # before each all-reduce the ranks run the job's step, where it runs on the benchmark's device
    link_fit = (benchmark_allreduce(link_workers, device=link_device, compute_s=measured.compute_s,
                                    job=cfg if link_device == device else None,
                                    threads=max(1, threads // link_workers) if link_device == "cpu" else threads)
                if link_workers >= 2 else None)
    n_train = len(build_data(cfg.data, cfg.seed).train)
    if device == "cuda":  # what the job's precision runs its matmuls in there
        flops = matmul_flops(n=4096, device="cuda", dtype=torch.float32 if cfg.precision == "fp32" else torch.bfloat16)
    else:
        flops = matmul_flops(threads)
    return Calibration(profile=profile, link_fit=link_fit, matmul_flops=flops, threads=threads,
                       device=device, batch_size=cfg.batch_size, n_train=n_train,
                       grad_accum_steps=cfg.grad_accum_steps, epochs=cfg.epochs)
