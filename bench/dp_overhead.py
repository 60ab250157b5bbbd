"""mlscale's data-parallel training vs a plain hand-written torch DDP script: same model, data,
per-worker batch, optimizer, 2 workers x 1 thread on gloo/loopback, run interleaved in one run;
prints global samples/s of each and the ratio. Target (shared/DESIGN.md): mlscale >= 0.97 x plain.

Both sides time training steps only. The plain script is what a user writes by hand: spawn two
processes, init a gloo group, wrap the model in DDP, index this rank's slice of each global batch.

    python bench/dp_overhead.py [--repeats 3] [--epochs 2]
"""

import argparse
import os
import socket
import statistics
import tempfile
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn import functional as F
from torch.nn.parallel import DistributedDataParallel as DDP

from mlscale import train
from mlscale.config import build_config
from mlscale.training.data import build_data
from mlscale.training.models import build_model
from mlscale.training.optim import build_optimizer, build_scheduler

WORKERS = 2
CASES = {
    "synthetic-mlp 512x3, batch 256/worker": {
        "batch_size": 256, "data": {"dataset": "synthetic", "n_samples": 40_000, "n_features": 256},
        "model": {"name": "mlp", "width": 512, "depth": 3},
    },
    "digits-cnn 32ch, batch 64/worker": {"batch_size": 64, "model": {"name": "cnn", "width": 32}},
}


def _plain_rank(rank, port, cfg, result):
    torch.set_num_threads(1)
    os.environ["GLOO_SOCKET_IFNAME"] = "lo"
    store = dist.TCPStore("127.0.0.1", port, WORKERS, is_master=False)
    dist.init_process_group("gloo", store=store, rank=rank, world_size=WORKERS)
    torch.manual_seed(cfg.seed)
    data = build_data(cfg.data, cfg.seed)
    model = DDP(build_model(cfg.model, data.input_shape, data.n_classes))
    x_all, y_all = data.train.x, data.train.y
    b, gb = cfg.batch_size, cfg.batch_size * WORKERS
    steps_per_epoch = len(y_all) // gb
    opt = build_optimizer(cfg.optim, model)
    sched = build_scheduler(cfg.optim, opt, steps_per_epoch * cfg.epochs)
    samples, busy = 0, 0.0
    for epoch in range(cfg.epochs):
        perm = torch.randperm(len(y_all), generator=torch.Generator().manual_seed(epoch))
        t0 = time.perf_counter()
        for s in range(steps_per_epoch):
            idx = perm[s * gb + rank * b:s * gb + (rank + 1) * b]
            loss = F.cross_entropy(model(x_all[idx]), y_all[idx])
            loss.backward()
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            samples += gb
        busy += time.perf_counter() - t0
    if rank == 0:
        result["samples_per_s"] = samples / busy
    del model, opt
    dist.barrier()
    dist.destroy_process_group()


def plain_ddp(cfg) -> float:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    store = dist.TCPStore("127.0.0.1", port, WORKERS, is_master=True, wait_for_workers=False)
    with mp.Manager() as manager:
        result = manager.dict()
        mp.spawn(_plain_rank, args=(port, cfg, result), nprocs=WORKERS)
        del store
        return result["samples_per_s"]


def mlscale_ddp(cfg) -> float:
    with tempfile.TemporaryDirectory() as out:
        cfg.out_dir = out
        return train(cfg).samples_per_s


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {WORKERS} workers x 1 thread, gloo on loopback, "
          f"median of {args.repeats} interleaved runs")
    print(f"{'case':<40} {'plain DDP samples/s':>20} {'mlscale samples/s':>18} {'ratio':>7}")
    for name, overrides in CASES.items():
        plain, ours = [], []
        for i in range(args.repeats):
            cfg = build_config({**overrides, "epochs": args.epochs, "progress": False, "threads": 1,
                                "workers": WORKERS, "strategy": "ddp"})
            for side in ((plain_ddp, mlscale_ddp) if i % 2 else (mlscale_ddp, plain_ddp)):
                (plain if side is plain_ddp else ours).append(side(cfg))
        p, m = statistics.median(plain), statistics.median(ours)
        print(f"{name:<40} {p:>20,.0f} {m:>18,.0f} {m / p:>7.3f}", flush=True)


if __name__ == "__main__":
    main()
