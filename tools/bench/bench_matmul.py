"""Benchmark pl.matmul's Numba kernels on M = N = K (default 512), beside NumPy's float32 matmul
and an ml_dtypes per-step-rounding loop, in one process on the same data (DESIGN §12).

    python tools/bench/bench_matmul.py [--size 512] [--threads 2] [--rounds 5] [--presets fp32_sequential,...]

Prints G multiply-adds/s for each; run by hand, never by the tests.  Every figure is the best over
``--rounds`` passes, each pass timing every preset once (best of ``--repeat`` calls), so that a burst
of load from other processes spoils one pass, not a figure.  NumPy is timed in passes of its own
before and after the presets, with a pause between: OpenBLAS's worker threads spin for a while after
each call, and a Numba parallel region started meanwhile (GNU OpenMP layer) competes with them for
the two cores.  NumPy's thread count is OpenBLAS's (set OPENBLAS_NUM_THREADS before starting).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import time

import ml_dtypes
import numba
import numpy as np

import precisionlab as pl
from precisionlab.backends import numba_backend

DEFAULT = ["fp32_sequential", "torch_cpu_nn", "torch_cpu_nt", "torch_cpu_tn", "ml_dtypes_dot", "fp16_accumulate",
           "bf16_accumulate", "h100_fp16", "h100_e4m3", "a100_bf16"]


#: The clock: wall time, or the process's CPU time (``--clock cpu``: with one thread for NumPy and for
#: Numba it is the time the work took, whatever else shares the cores).
CLOCK = time.perf_counter


def best_of(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = CLOCK()
        fn()
        times.append(CLOCK() - t)
    return min(times)


def commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--threads", type=int, default=2, help="Numba threads (default 2)")
    ap.add_argument("--repeat", type=int, default=3, help="calls per entry per pass; the best counts")
    ap.add_argument("--rounds", type=int, default=5, help="passes over every entry; the best counts")
    ap.add_argument("--presets", default=",".join(DEFAULT))
    ap.add_argument("--no-ml-dtypes", action="store_true", help="skip the (slow) ml_dtypes cast loop")
    ap.add_argument("--settle", type=float, default=1.0,
                    help="seconds of pause between the NumPy passes (before and after the presets) and Numba's")
    ap.add_argument("--json", default=None, metavar="FILE", help="also write every timing as JSON")
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                    help="wall time (default) or process CPU time (meaningful with one thread each)")
    args = ap.parse_args()
    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    numba.set_num_threads(args.threads)
    n = args.size
    rng = np.random.default_rng(0)
    a = rng.uniform(-1, 1, (n, n)).astype(np.float32)
    b = rng.uniform(-1, 1, (n, n)).astype(np.float32)
    macs = n ** 3
    a16, b16 = a.astype(ml_dtypes.bfloat16), b.astype(ml_dtypes.bfloat16)

    def ml_dtypes_loop():                       # per-step rounding with ml_dtypes casts, vectorised over (m, n)
        acc = np.zeros((n, n), ml_dtypes.bfloat16)
        for k in range(n):
            acc = (acc.astype(np.float32) + np.outer(a16[:, k], b16[k]).astype(np.float32)).astype(ml_dtypes.bfloat16)
        return acc

    peer = "numpy float32 matmul"
    def scales(name: str) -> dict:
        """Per-tensor scales for presets that take them (``torch_cpu_scaled_mm``: (None, None) blocks)."""
        spec = pl.get_preset(name)
        if spec.a_scale_block is None and spec.b_scale_block is None:
            return {}
        if spec.a_scale_block != (None, None) or spec.b_scale_block != (None, None):
            raise SystemExit(f"{name}: only per-tensor scale blocks are benchmarked here")
        return {"a_scale": np.float32(0.5), "b_scale": np.float32(1.5)}

    def entry(name: str):
        kw = scales(name)
        return lambda: pl.matmul(a, b, name, backend="numba", **kw)

    entries = {name: entry(name) for name in args.presets.split(",")}
    for fn in entries.values():                 # compile and warm up
        fn()
    load_before = os.getloadavg()
    best = {peer: float("inf")} | {k: float("inf") for k in entries}

    def time_peer():
        for _ in range(args.rounds):
            best[peer] = min(best[peer], best_of(lambda: a @ b, args.repeat))
        time.sleep(args.settle)                 # let OpenBLAS's spinning threads park before Numba's run

    time_peer()
    for _ in range(args.rounds):
        for k, fn in entries.items():
            best[k] = min(best[k], best_of(fn, args.repeat))
    time_peer()
    if not args.no_ml_dtypes:
        best["ml_dtypes bf16 cast loop"] = best_of(ml_dtypes_loop, 1)
    load_after = os.getloadavg()
    t_np = best["numpy float32 matmul"]
    print(f"{n}x{n}x{n}, Numba threads {args.threads} (layer {numba.threading_layer()}), OpenBLAS threads "
          f"{os.environ.get('OPENBLAS_NUM_THREADS', 'default')}; {args.clock} clock; load average "
          f"{load_before[0]:.1f} before, {load_after[0]:.1f} after; commit {commit()}")
    for k, t in best.items():
        print(f"{k:26s} {macs / t / 1e9:8.2f} G MAC/s   ({t_np / t:5.2f} x numpy float32)")
    if args.json:
        result = {"size": n, "threads": args.threads, "threading_layer": numba.threading_layer(), "clock": args.clock,
                  "rounds": args.rounds, "repeat": args.repeat,
                  "seconds": best, "g_mac_per_s": {k: macs / t / 1e9 for k, t in best.items()},
                  "load_average": [load_before, load_after], "commit": commit(),
                  "python": platform.python_version(), "numpy": np.__version__, "numba": numba.__version__,
                  "serial_below_ns": getattr(numba_backend, "SERIAL_BELOW_NS", None)}
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
