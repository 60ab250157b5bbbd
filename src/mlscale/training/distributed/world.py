"""The world a training process lives in: rank, size, device, backend, as one explicit value.

This is the only module that reads the launcher's environment variables (torchrun's RANK,
WORLD_SIZE, ...) and the only one that creates or destroys a process group.
"""

from __future__ import annotations

import datetime
import gc
import os
import socket
from dataclasses import dataclass

import torch
import torch.distributed as dist

from mlscale.errors import MlscaleError, RunFailed


@dataclass(frozen=True)
class World:
    """Where this process stands. A single process is `World()`."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    restart_count: int = 0  # torchrun's elastic restarts so far

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def world_from_env() -> World:
    """The world torchrun (or any env:// launcher) describes; `World()` when none does."""
    if "WORLD_SIZE" not in os.environ or "RANK" not in os.environ:
        return World()
    try:
        world_size, rank = int(os.environ["WORLD_SIZE"]), int(os.environ["RANK"])
        local_rank = int(os.environ.get("LOCAL_RANK", rank))
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world_size))
        restarts = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", 0))
    except ValueError as err:
        raise MlscaleError(f"malformed launcher environment: {err}") from None
    if not 0 <= rank < world_size:
        raise MlscaleError(f"launcher environment: RANK {rank} is outside WORLD_SIZE {world_size}")
    return World(rank, world_size, local_rank, local_world, restarts)


def backend_for(device: torch.device) -> str:
    """NCCL between CUDA devices, gloo otherwise."""
    return "nccl" if device.type == "cuda" else "gloo"


def device_for(world: World, device: torch.device) -> torch.device:
    """One GPU per local rank when training on CUDA; the given device otherwise."""
    if device.type == "cuda" and world.distributed:
        if world.local_rank >= torch.cuda.device_count():
            raise MlscaleError(f"local rank {world.local_rank} has no GPU: {torch.cuda.device_count()} present")
        torch.cuda.set_device(world.local_rank)
        return torch.device("cuda", world.local_rank)
    return device


def threads_per_worker(world: World) -> int:
    """Cores shared among the local workers: one process per core oversubscribes nothing
    (shared/PLATFORM.md: 2 workers x 2 threads on 2 cores ran 4x slower than x 1 thread)."""
    return max(1, (os.cpu_count() or 1) // world.local_world_size)


def init_process_group(world: World, device: torch.device, timeout_s: float,
                       store_addr: tuple[str, int] | None = None) -> dist.Store:
    """Join the process group: with `store_addr`, as a client of mlscale's own launcher's store
    (bound to loopback); otherwise from torchrun's MASTER_ADDR/MASTER_PORT.

    The store is namespaced by restart attempt: after an elastic restart, the dead attempt's keys
    stay in torchrun's store and confuse a new group (shared/PLATFORM.md). Returns the store itself,
    un-namespaced: under torchrun it outlives the attempt (see `shared_run_dir`).
    """
    timeout = datetime.timedelta(seconds=timeout_s)
    if store_addr is not None:
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")  # a local run stays on loopback,
        os.environ.setdefault("NCCL_SOCKET_IFNAME", "lo")  # NCCL's bootstrap too
        host, port = store_addr
    else:
        host, port = os.environ.get("MASTER_ADDR", "127.0.0.1"), int(os.environ.get("MASTER_PORT", 29500))
    agent_store = os.environ.get("TORCHELASTIC_USE_AGENT_STORE", "").lower() == "true"
    try:
        if store_addr is None and world.is_main and not agent_store:  # rank 0 serves, on MASTER_ADDR only
            store = dist.TCPStore(host, port, world.world_size, is_master=True, timeout=timeout,
                                  wait_for_workers=False, master_listen_fd=listen(host, port).detach(),
                                  use_libuv=False)
        else:
            store = dist.TCPStore(host, port, world.world_size, is_master=False, timeout=timeout)
        dist.init_process_group(
            backend_for(device),
            store=dist.PrefixStore(f"mlscale/attempt{world.restart_count}", store),
            rank=world.rank, world_size=world.world_size, timeout=timeout,
            device_id=device if device.type == "cuda" else None,
        )
    except (RuntimeError, dist.DistError) as err:
        raise RunFailed(f"rank {world.rank} could not join the process group at {host}:{port} within "
                        f"{timeout_s:g} s: {str(err).strip().splitlines()[0]}") from None
    return store


RUN_DIR_KEY = "mlscale/run_dir"


def shared_run_dir(world: World, store: dist.Store, make) -> tuple[str, bool]:
    """The run directory every rank and every elastic restart of this job writes to, and whether
    this attempt is a restart that should continue it. Rank 0 of the first attempt makes it
    (`make()`) and records it in the store; torchrun's agent store outlives the attempt, so the
    workers of a restart (TORCHELASTIC_RESTART_COUNT > 0) find it there and resume."""
    if world.restart_count > 0 and store.check([RUN_DIR_KEY]):
        return store.get(RUN_DIR_KEY).decode(), True
    if world.is_main:
        store.set(RUN_DIR_KEY, str(make()))
    return store.get(RUN_DIR_KEY).decode(), False


def listen(addr: str, port: int) -> socket.socket:
    """A listening socket bound to `addr` alone (TCPStore's own server binds every interface)."""
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((addr, port))
        sock.listen(128)
    except OSError as err:
        sock.close()
        hint = "; choose another --dist.master_port, or 0 for any free port" if port else ""
        raise MlscaleError(f"cannot start the rendezvous on {addr}:{port}: {err.strerror}{hint}") from None
    return sock


def shutdown(world: World) -> None:
    """Leave the process group cleanly. Callers drop their wrapped model and optimizer first:
    a DDP model alive at destroy time makes a worker abort at exit now and then, after a
    successful run (shared/PLATFORM.md: 15 of 250 runs; 0 of 30 with this order)."""
    if not dist.is_initialized():
        return
    gc.collect()
    try:
        dist.barrier()
    finally:
        dist.destroy_process_group()


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    """Element-wise sum of `values` over all ranks (identity in a single process)."""
    if not dist.is_initialized():
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def broadcast_object(obj, world: World):
    """Rank 0's `obj`, on every rank."""
    if not dist.is_initialized():
        return obj
    box = [obj if world.is_main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_gather_object(obj, world: World) -> list:
    if not dist.is_initialized():
        return [obj]
    out = [None] * world.world_size
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()
