"""mlscale's training engine vs a plain hand-written PyTorch loop: same model, data, batch,
optimizer and schedule, run interleaved in one process; prints samples/s of each and the ratio.

Both sides are timed over their training steps only (mlscale reports that figure itself; the plain
loop is timed the same way: from the first batch to the last optimizer step of each epoch). Both
evaluate on the test split after every epoch, outside the timed steps; neither writes a checkpoint
mid-run (mlscale's periodic checkpoints are set beyond the run; `--with-checkpoints` keeps its
default per-epoch ones, to show what they cost the steps after them).
Target (shared/DESIGN.md): mlscale >= 0.97 x the plain loop.

    python bench/engine_overhead.py [--repeats 5] [--threads 1]
"""

import argparse
import statistics
import tempfile
import time

import torch
from torch.nn import functional as F

from mlscale import TrainConfig, train
from mlscale.config import build_config
from mlscale.training.data import build_data
from mlscale.training.models import build_model
from mlscale.training.optim import build_optimizer, build_scheduler

CASES = {
    # name: config overrides (all other fields default)
    "digits-mlp (default run, tiny steps)": {"epochs": 10},
    "synthetic-mlp 512x3, batch 256": {
        "epochs": 2, "batch_size": 256,
        "data": {"dataset": "synthetic", "n_samples": 40_000, "n_features": 256, "n_classes": 10},
        "model": {"name": "mlp", "width": 512, "depth": 3},
    },
    "digits-cnn 32ch, batch 64": {"epochs": 2, "model": {"name": "cnn", "width": 32}},
}


def plain_loop(cfg: TrainConfig) -> float:
    """What a user would write by hand; returns training samples/s."""
    torch.manual_seed(cfg.seed)
    data = build_data(cfg.data, cfg.seed)
    model = build_model(cfg.model, data.input_shape, data.n_classes)
    x_all, y_all = data.train.x, data.train.y
    steps_per_epoch = len(y_all) // cfg.batch_size
    opt = build_optimizer(cfg.optim, model)
    sched = build_scheduler(cfg.optim, opt, steps_per_epoch * cfg.epochs)
    samples, busy = 0, 0.0
    for epoch in range(cfg.epochs):
        model.train()
        perm = torch.randperm(len(y_all), generator=torch.Generator().manual_seed(epoch))
        t0 = time.perf_counter()
        running = 0.0
        for b in range(steps_per_epoch):
            idx = perm[b * cfg.batch_size:(b + 1) * cfg.batch_size]
            x, y = x_all[idx], y_all[idx]
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            running += loss.item()
            samples += len(y)
        busy += time.perf_counter() - t0
        model.eval()
        with torch.no_grad():
            accuracy = (model(data.test.x).argmax(1) == data.test.y).float().mean().item()  # noqa: F841
    return samples / busy


def mlscale_engine(cfg: TrainConfig) -> float:
    with tempfile.TemporaryDirectory() as out:
        cfg.out_dir = out
        return train(cfg).samples_per_s


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch threads for both sides")
    parser.add_argument("--with-checkpoints", action="store_true", help="keep mlscale's per-epoch checkpoints")
    args = parser.parse_args()
    ckpt = {} if args.with_checkpoints else {"checkpoint_every_steps": 10**9}
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), median of {args.repeats} interleaved runs, "
          f"{'with' if args.with_checkpoints else 'without'} mlscale's per-epoch checkpoints")
    print(f"{'case':<38} {'plain samples/s':>16} {'mlscale samples/s':>18} {'ratio':>7}")
    for name, overrides in CASES.items():
        plain, ours = [], []
        for i in range(args.repeats):
            cfg = build_config({**overrides, "progress": False, "threads": args.threads, **ckpt})
            # alternate which side goes first, so neither always runs on a warmer process
            for side in ((plain_loop, mlscale_engine) if i % 2 else (mlscale_engine, plain_loop)):
                (plain if side is plain_loop else ours).append(side(cfg))
        p, m = statistics.median(plain), statistics.median(ours)
        print(f"{name:<38} {p:>16,.0f} {m:>18,.0f} {m / p:>7.3f}", flush=True)


if __name__ == "__main__":
    main()
