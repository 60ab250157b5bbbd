"""Pipeline parallelism on 2 workers: the bubble measured vs theory for 2 stages x 4/8/16 micro-batches,
and throughput against data parallelism (ddp) on the same 2 workers and the same global batch, for
two jobs that pull opposite ways:

- "wide model, small batch": many parameters per sample. DDP all-reduces every gradient each step
  (here 8.9M parameters, 36 MB); the pipeline sends only one boundary activation (and its
  gradient) per micro-batch (at most 8 x 2048 floats, 64 KB).
- "narrow model, big batch": few parameters per sample. DDP's all-reduce is small and each worker
  computes half the batch; the pipeline adds bubbles and per-micro-batch latency.

Each worker runs 1 thread (shared/PLATFORM.md); every row is a real `mlscale.train` run. Last, the
peer: a hand-written `torch.distributed.pipelining` loop on the same job against mlscale's pipeline
(what mlscale's engine, evaluation excluded, costs on top of the library).

    python bench/pipeline_bubble.py [--quick] [--repeats 1] [--epochs 1] [--device cpu]
"""

import argparse
import os
import statistics
import tempfile

import torch

from mlscale import train
from mlscale.config import build_config

JOBS = {
    "wide model, small batch": {"batch_size": 32, "model": {"name": "mlp", "width": 2048, "depth": 3},
                                "data": {"dataset": "synthetic", "n_samples": 6_000, "n_features": 256}},
    "narrow model, big batch": {"batch_size": 1024, "model": {"name": "mlp", "width": 128, "depth": 4},
                                "data": {"dataset": "synthetic", "n_samples": 60_000, "n_features": 256}},
}
MICROBATCHES = (4, 8, 16)


def run(job: dict, epochs: int, device: str, quick: bool, **changes):
    values = {**job, "epochs": epochs, "progress": False, "workers": 2, "threads": 1, "device": device,
              "log_every_steps": 1000, **changes}
    if quick:
        values["data"] = {**job["data"], "n_samples": job["data"]["n_samples"] // 6}
    cfg = build_config(values)
    with tempfile.TemporaryDirectory() as out:
        cfg.out_dir = out
        return train(cfg)


def _plain_worker(rank: int, port: int, job: dict, m: int, schedule: str, n_steps: int, out) -> None:
    """The peer: a hand-written torch.distributed.pipelining loop (gloo, 1 thread), the same MLP,
    cut where mlscale's parameter balance cuts it, random data of the same shapes, AdamW."""
    import time

    import torch.distributed as dist
    from torch import nn
    from torch.distributed.pipelining import PipelineStage, Schedule1F1B, ScheduleGPipe

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    torch.manual_seed(0)
    width, depth, n_in = job["model"]["width"], job["model"]["depth"], job["data"]["n_features"]
    layers = [nn.Flatten()]
    for i in range(depth):
        layers += [nn.Linear(n_in if i == 0 else width, width), nn.ReLU(), nn.Dropout(0.0)]
    layers.append(nn.Linear(width, 10))
    from mlscale.training.distributed.split import Layer, balanced_bounds, param_costs

    bounds = balanced_bounds(param_costs([Layer(str(i), l) for i, l in enumerate(layers)]), 2)
    module = nn.Sequential(*layers[bounds[rank]:bounds[rank + 1]])
    stage = PipelineStage(module, rank, 2, torch.device("cpu"))
    kind = ScheduleGPipe if schedule == "gpipe" else Schedule1F1B
    sched = kind(stage, m, loss_fn=lambda out, y: nn.functional.cross_entropy(out, y))
    opt = torch.optim.AdamW(module.parameters(), lr=1e-3)
    b = job["batch_size"]
    x, y = torch.randn(b, n_in), torch.randint(0, 10, (b,))
    for i in range(n_steps + 1):
        if i == 1:
            dist.barrier()
            t0 = time.perf_counter()
        sched.step(*((x,) if rank == 0 else ()), **({"target": y, "losses": []} if rank == 1 else {}))
        opt.step()
        opt.zero_grad(set_to_none=True)
    if rank == 0:
        out.put(n_steps * b / (time.perf_counter() - t0))
    dist.barrier()
    dist.destroy_process_group()


def plain_pipeline(job: dict, m: int, schedule: str, n_steps: int) -> float:
    """Samples/s of the peer loop (steps after the first)."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_plain_worker, args=(r, port, job, m, schedule, n_steps, out)) for r in range(2)]
    for p in procs:
        p.start()
    sps = out.get(timeout=600)
    for p in procs:
        p.join()
    return sps


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--schedule", default="1f1b", choices=["gpipe", "1f1b"])
    parser.add_argument("--quick", action="store_true", help="a sixth of the samples: about a minute")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {os.cpu_count()} cores, device {args.device}; 2 workers x 1 thread, "
          f"schedule {args.schedule}; median of {args.repeats}")
    print(f"{'job':<25} {'setup':<22} {'samples/s':>10} {'vs ddp':>7} {'bubble measured':>16} {'theory':>7} "
          f"{'stage busy ms/step':>19}")
    for name, job in JOBS.items():
        rows = [("ddp", {"strategy": "ddp"})] + [
            (f"pipeline 2 x {m} micro", {"strategy": "pipeline", "pipeline": {"n_microbatches": m,
                                                                              "schedule": args.schedule}})
            for m in MICROBATCHES]
        results = {label: [] for label, _ in rows}
        for _ in range(args.repeats):
            for label, changes in rows:  # interleaved, so drifts in machine load hit every row alike
                results[label].append(run(job, args.epochs, args.device, args.quick, **changes))
        ddp = statistics.median(r.samples_per_s for r in results["ddp"])
        for label, _ in rows:
            rs = results[label]
            sps = statistics.median(r.samples_per_s for r in rs)
            bubble = theory = busy = "-"
            if rs[0].pipeline:
                measured = [r.pipeline["bubble_fraction_measured"] for r in rs]
                bubble = f"{statistics.median(measured):.1%}"
                theory = f"{rs[0].pipeline['bubble_fraction_theory']:.1%}"
                busy = " / ".join(f"{s['busy_s'] / max(1, s['steps'] - 1) * 1e3:.1f}" for s in rs[0].pipeline["stages"])
            print(f"{name:<25} {label:<22} {sps:>10,.0f} {sps / ddp:>6.2f}x {bubble:>16} {theory:>7} {busy:>19}")
    # the peer: a hand-written pipelining loop, against mlscale's pipeline rows (same job, m=4)
    print(f"\n{'job':<25} {'plain pipelining loop':>22} {'mlscale pipeline':>17} {'ratio':>6}   (2 x 4 micro-batches)")
    for name, job in JOBS.items():
        steps = max(30, job["data"]["n_samples"] // (6 if args.quick else 1) * 4 // 5 // job["batch_size"])
        ours_cfg = {"strategy": "pipeline", "pipeline": {"n_microbatches": 4, "schedule": args.schedule}}
        plain, ours = [], []
        for _ in range(args.repeats):
            plain.append(plain_pipeline(job, 4, args.schedule, steps))
            ours.append(run(job, args.epochs, args.device, args.quick, **ours_cfg).samples_per_s)
        p, o = statistics.median(plain), statistics.median(ours)
        print(f"{name:<25} {p:>22,.0f} {o:>17,.0f} {o / p:>6.2f}")


if __name__ == "__main__":
    main()
