"""Benchmark pl.matmul's Numba kernels on M = N = K (default 512), beside NumPy's float32 matmul
and an ml_dtypes per-step-rounding loop, in one process on the same data (DESIGN §12).

    python tools/bench/bench_matmul.py [--size 512] [--threads 2] [--presets fp32_sequential,...]

Prints G multiply-adds/s for each; run by hand, never by the tests.
"""

from __future__ import annotations

import argparse
import time

import ml_dtypes
import numba
import numpy as np

import precisionlab as pl

DEFAULT = ["fp32_sequential", "torch_cpu_nn", "torch_cpu_nt", "torch_cpu_tn", "fp16_accumulate", "bf16_accumulate",
           "h100_fp16", "h100_e4m3", "a100_bf16"]


def best_of(fn, repeat: int) -> float:
    fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--presets", default=",".join(DEFAULT))
    args = ap.parse_args()
    numba.set_num_threads(args.threads)
    n = args.size
    rng = np.random.default_rng(0)
    a = rng.uniform(-1, 1, (n, n)).astype(np.float32)
    b = rng.uniform(-1, 1, (n, n)).astype(np.float32)
    macs = n ** 3
    t_np = best_of(lambda: a @ b, args.repeat)
    print(f"numpy float32 matmul       {macs / t_np / 1e9:8.2f} G MAC/s")
    a16, b16 = a.astype(ml_dtypes.bfloat16), b.astype(ml_dtypes.bfloat16)

    def ml_dtypes_loop():                       # per-step rounding with ml_dtypes casts, vectorised over (m, n)
        acc = np.zeros((n, n), ml_dtypes.bfloat16)
        for k in range(n):
            acc = (acc.astype(np.float32) + np.outer(a16[:, k], b16[k]).astype(np.float32)).astype(ml_dtypes.bfloat16)
        return acc
    t_ml = best_of(ml_dtypes_loop, 1)
    print(f"ml_dtypes bf16 cast loop   {macs / t_ml / 1e9:8.2f} G MAC/s")
    for name in args.presets.split(","):
        t = best_of(lambda name=name: pl.matmul(a, b, name, backend="numba"), args.repeat)
        print(f"{name:26s} {macs / t / 1e9:8.2f} G MAC/s   ({t_np / t:5.2f} x numpy float32)")


if __name__ == "__main__":
    main()
