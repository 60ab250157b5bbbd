"""The data-parallel step-time model: what one optimizer step costs on N workers.

A step of one worker is input-pipeline wait + compute (forward, backward, update) + the part of the
gradient all-reduce that backward does not hide. Each piece comes from a measurement
(`mlscale.planning.calibrate`) or a device's documented figures (`mlscale.planning.catalog`):

- Ring all-reduce of S bytes over N workers on links of bandwidth B and per-message latency alpha
  moves 2(N-1)/N * S bytes through every link in 2(N-1) steps (reduce-scatter then all-gather):
  time 2(N-1)/N * S/B + 2(N-1) * alpha (Patarasuk & Yuan, "Bandwidth optimal all-reduce algorithms
  for clusters of workstations", JPDC 2009; Thakur et al., "Optimization of collective
  communication operations in MPICH", IJHPCA 2005). N = 1 communicates nothing.
- Synchronization: once per step, the first collective also waits for the slowest rank to arrive
  and for the ranks' sleeping threads to wake (`sync_s`, measured with the link; 0 for spec-sheet
  links). It is per step, not per ring hop: counted in alpha, it would grow 2(N-1)-fold with N.
- Overlap with backward per DDP bucket (Li et al., "PyTorch Distributed", VLDB 2020): gradients
  fill buckets in reverse parameter order while backward runs; a bucket's all-reduce starts when it
  is full and the previous one is done (one collective at a time). Only what runs past the end of
  backward is exposed. Bounds: at best max(total - backward, last bucket) is exposed, at worst all.
- Input pipeline (Amdahl, "Validity of the single processor approach", 1967): each worker loads its
  own shard, except a `serial_fraction` of the input time that is one shared resource (one reader,
  one disk) and grows with the global batch, N times per step. That share caps the speed-up at
  step(1) / serial time, however many workers are added.
"""

from __future__ import annotations

from dataclasses import dataclass

MIB = 1024 * 1024
DDP_FIRST_BUCKET_BYTES = 1 * MIB  # torch.distributed._DEFAULT_FIRST_BUCKET_BYTES
DDP_BUCKET_BYTES = 25 * MIB  # DDP's default bucket_cap_mb


@dataclass(frozen=True)
class Link:
    """The collective's network: per-message latency (s) and per-link bandwidth (B/s), and the
    time a step's first collective waits for its ranks (s; see the module's docstring)."""

    alpha_s: float
    bandwidth_bytes_per_s: float
    sync_s: float = 0.0


@dataclass(frozen=True)
class StepProfile:
    """One worker's measured step, split (seconds), and its gradients (bytes per DDP bucket, in the
    order backward fills them)."""

    compute_s: float  # forward + loss + backward + optimizer update
    backward_s: float  # the part of compute_s that produces gradients (overlaps communication)
    input_wait_s: float  # waiting for the next batch
    bucket_bytes: tuple[int, ...]
    serial_fraction: float = 0.0  # of input_wait_s that is one resource shared by all workers
    ops_per_step: int = 0  # device operations (kernels) one step runs: forward, backward, update

    @property
    def gradient_bytes(self) -> int:
        return sum(self.bucket_bytes)


@dataclass(frozen=True)
class StepPrediction:
    """A predicted step on N workers (seconds; per worker, all workers alike)."""

    n_workers: int
    compute_s: float
    input_wait_s: float
    comm_s: float  # all-reduce time, hidden or not
    exposed_comm_s: float  # the part of comm_s that adds to the step

    @property
    def step_s(self) -> float:
        return self.compute_s + self.input_wait_s + self.exposed_comm_s


def ring_allreduce_s(n_bytes: float, n_workers: int, link: Link) -> float:
    """Seconds for a ring all-reduce of `n_bytes` among `n_workers`: 2(N-1)/N * S/B + 2(N-1) * alpha.

    >>> ring_allreduce_s(1e6, 2, Link(alpha_s=1e-4, bandwidth_bytes_per_s=1e9))
    0.0012
    """
    if n_workers <= 1 or n_bytes <= 0:
        return 0.0
    n = n_workers
    return 2 * (n - 1) / n * n_bytes / link.bandwidth_bytes_per_s + 2 * (n - 1) * link.alpha_s


def bucket_allreduce_s(bucket_bytes: tuple[int, ...], n_workers: int, link: Link) -> list[float]:
    """Seconds for each bucket's all-reduce in one step: the ring's, and the first one waits
    `link.sync_s` for the ranks as well."""
    if n_workers <= 1:
        return [0.0] * len(bucket_bytes)
    return [ring_allreduce_s(b, n_workers, link) + (link.sync_s if i == 0 else 0.0) for i, b in enumerate(bucket_bytes)]


def exposed_comm_s(bucket_bytes: tuple[int, ...], backward_s: float, n_workers: int, link: Link) -> float:
    """Communication time left after backward ends, when each bucket's all-reduce starts as soon as
    backward has filled it (gradients assumed produced at a steady rate in bytes) and the previous
    all-reduce is done."""
    total = sum(bucket_bytes)
    if n_workers <= 1 or total == 0:
        return 0.0
    filled, comm_free_at = 0, 0.0
    for size, took in zip(bucket_bytes, bucket_allreduce_s(bucket_bytes, n_workers, link)):
        filled += size
        ready_at = backward_s * filled / total
        comm_free_at = max(ready_at, comm_free_at) + took
    return max(0.0, comm_free_at - backward_s)


def predict_step(profile: StepProfile, n_workers: int, link: Link, *, compute_scale: float = 1.0,
                 overlap: bool = True) -> StepPrediction:
    """The step of each of `n_workers` workers; `compute_scale` multiplies compute and backward
    (another device's speed relative to the calibrated one: 0.1 = ten times faster). `overlap=False`
    exposes all communication: when the workers' compute threads already occupy every core of a
    host, the collective's own copies and reductions take their cycles from backward instead of
    running beside it (gloo reduces on the CPU)."""
    if n_workers < 1:
        raise ValueError(f"n_workers must be >= 1, got {n_workers}")
    compute, backward = profile.compute_s * compute_scale, profile.backward_s * compute_scale
    serial = profile.input_wait_s * profile.serial_fraction
    input_wait = profile.input_wait_s - serial + serial * n_workers
    comm = sum(bucket_allreduce_s(profile.bucket_bytes, n_workers, link))
    exposed = exposed_comm_s(profile.bucket_bytes, backward, n_workers, link) if overlap else comm
    return StepPrediction(n_workers, compute, input_wait, comm, exposed)


def ddp_buckets(param_bytes_in_order: list[int], bucket_cap_mb: float = 0.0) -> tuple[int, ...]:
    """Bytes per DDP bucket, in the order backward fills them (reverse registration order).
    `bucket_cap_mb` 0 is DDP's default: a 1 MiB first bucket, then 25 MiB ones. A parameter never
    splits; a bucket closes once it reaches its cap (as DDP's `_compute_bucket_assignment_by_size`)."""
    caps = [DDP_FIRST_BUCKET_BYTES, DDP_BUCKET_BYTES] if not bucket_cap_mb else [int(bucket_cap_mb * MIB)]
    buckets, current = [], 0
    for size in reversed(param_bytes_in_order):
        current += size
        if current >= caps[min(len(buckets), len(caps) - 1)]:
            buckets.append(current)
            current = 0
    if current:
        buckets.append(current)
    return tuple(buckets)


def speedup(profile: StepProfile, n_workers: int, link: Link) -> float:
    """Global throughput on `n_workers` over one worker's (each worker a fixed per-worker batch)."""
    one = predict_step(profile, 1, link).step_s
    return n_workers * one / predict_step(profile, n_workers, link).step_s


def amdahl_limit(profile: StepProfile) -> float:
    """The speed-up no worker count exceeds when part of the input pipeline is serial (inf if none)."""
    serial = profile.input_wait_s * profile.serial_fraction
    return float("inf") if serial <= 0 else predict_step(profile, 1, Link(0.0, 1.0)).step_s / serial
