"""mlscale's micro-benchmarks vs plain torch: the measured roofs must be what torch itself reaches.

The peer is a hand-written loop: `a @ b` (or `dst.copy_(src)`) run `calls` times between two device
synchronisations, seconds per call from the wall clock. mlscale's side is
`mlscale.processors.microbench` (warm-up, sync, median of repeats). The two run interleaved, in
rounds, on the same operands' sizes, so a load change on a shared machine hits both; each prints
the median over rounds, and the ratio mlscale / plain. Issue 5's bar (on an H100): >= 0.90 for the
bf16 matmul, >= 0.85 for the copy.

    python bench/roofline.py [--quick] [--rounds 5] [--device cpu|cuda] [--threads N]
"""

import argparse
import statistics
import time

import torch

from mlscale.processors.devices import discover_devices, supported_dtypes
from mlscale.processors.microbench import DTYPES, copy_bandwidth, matmul_flops, synchronize


def plain_rate(fn, work: float, device: torch.device, calls: int) -> float:
    fn()
    synchronize(device)
    t = time.perf_counter()
    for _ in range(calls):
        fn()
    synchronize(device)
    return work * calls / (time.perf_counter() - t)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small sizes and few rounds (< 1 minute on 2 cores)")
    p.add_argument("--rounds", type=int, default=None)
    p.add_argument("--device", default=None, help="one device (default: every usable one)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rounds = args.rounds or (3 if args.quick else 5)
    infos = [d for d in discover_devices() if d.usable and (args.device is None or d.index.startswith(args.device))]
    print(f"torch {torch.__version__}, {rounds} rounds, threads {torch.get_num_threads()}")
    print(f"{'device':8} {'what':22} {'plain torch':>16} {'mlscale':>16} {'ratio':>6}")
    for info in infos:
        device = torch.device(info.index)
        gpu = device.type == "cuda"
        n = (8192 if gpu else 1024) if args.quick else (8192 if gpu else 2048)
        nbytes = (2**30 if gpu else 2**27) if args.quick else (2**30 if gpu else 2**28)
        for dtype in supported_dtypes(info):
            a = torch.randn(n, n, device=device).to(DTYPES[dtype])
            b = torch.randn(n, n, device=device).to(DTYPES[dtype])
            torch.backends.cuda.matmul.allow_tf32 = dtype == "tf32"
            calls = 20 if gpu else 3
            plain, ours = [], []
            for _ in range(rounds):
                plain.append(plain_rate(lambda: a @ b, 2.0 * n**3, device, calls))
                ours.append(matmul_flops(device, dtype, n, repeats=5).median)
            torch.backends.cuda.matmul.allow_tf32 = False
            del a, b
            pm, om = statistics.median(plain), statistics.median(ours)
            print(f"{info.index:8} {'matmul ' + dtype + f' n={n}':22} {pm / 1e9:>10,.1f} GFLOP/s {om / 1e9:>8,.1f} GFLOP/s"
                  f" {om / pm:6.3f}")
        src = torch.ones(nbytes // 4, device=device)
        dst = torch.empty_like(src)
        plain, ours = [], []
        for _ in range(rounds):
            plain.append(plain_rate(lambda: dst.copy_(src), 2.0 * nbytes, device, 20 if gpu else 5))
            ours.append(copy_bandwidth(device, nbytes, repeats=5).median)
        pm, om = statistics.median(plain), statistics.median(ours)
        print(f"{info.index:8} {f'copy {nbytes >> 20} MiB':22} {pm / 1e9:>13,.1f} GB/s {om / 1e9:>11,.1f} GB/s {om / pm:6.3f}")


if __name__ == "__main__":
    main()
