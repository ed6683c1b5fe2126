#!/usr/bin/env python3
"""Benchmark the GPU backends on the lent GPU machine (DESIGN §11, §12).

Rounding: elements/s of ``round_values`` / ``encode_values`` of the ``cupy`` and
``numba_cuda`` backends on device-resident float32 (and float64) data, side by side with
CuPy's own cast (``x.astype(cupy.float16)``, ``x.astype(cupy.float64)``) and a plain
device copy on the same data; the copy's bandwidth is the yardstick (issue 4's target:
``round`` at >= 50% of it).

Matmul: multiply-adds/s of ``pl.matmul`` with each backend on M = N = K square float32
CuPy operands (4096 by default), for presets covering every step algorithm (``fused`` with C
early / late_rn / late_rd, FP8, ``ieee``, ``pairwise``, ``exact``), side by side with
``cupy.matmul`` in float32 on the same data (issue 4's target: fused presets >= 1 T
multiply-adds/s at 4096^3).  The time is pl.matmul's whole call (operand rounding included).

Each result is also checked bit for bit against the NumPy reference on a sample (rounding:
the first and last 100k elements; matmul: a corner of the output, whole K), so a fast wrong
kernel cannot report a number.

Run by hand on a machine with a CUDA GPU and CuPy::

    python tools/bench/bench_gpu.py                       # default sweep, tables on stdout
    python tools/bench/bench_gpu.py --suite round --sizes 1e6 1e8 --formats e4m3 bf16 --modes rne sr --json out.json
    python tools/bench/bench_gpu.py --suite matmul --presets h100_fp16 exact --matmul-sizes 1024 4096
    python tools/bench/bench_gpu.py --dry-run             # the plan, no GPU needed

Without a GPU only ``--help`` and ``--dry-run`` work; anything else exits with status 2
and says which of package / driver / device is missing.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

DEFAULT_SIZES = (1 << 20, 1 << 24, 1 << 28)
DEFAULT_FORMATS = ("e4m3", "e5m2", "bf16", "fp16", "fp4_e2m1")
DEFAULT_MODES = ("rne", "rtz", "sr")
DEFAULT_BACKENDS = ("cupy", "numba_cuda")
DEFAULT_MATMUL_SIZES = (4096,)
#: At least one preset per step algorithm: fused (C early, FP8, late_rn, late_rd), ieee, pairwise, exact.
DEFAULT_PRESETS = ("h100_fp16", "h100_e4m3", "b200_e4m3", "mi300_fp16", "fp32_sequential", "torch_cpu_nn",
                   "mi250_fp16", "exact")


@dataclass
class Result:
    suite: str
    what: str            # e.g. "round cupy e4m3 rne", "copy", "astype float16"
    dtype: str
    n: int
    seconds: float       # best of --repeat
    elements_per_s: float
    gbytes_per_s: float  # bytes read + written per second
    vs_copy: float       # gbytes_per_s / the copy's on the same data


@dataclass
class MatmulResult:
    suite: str
    what: str            # e.g. "matmul cupy h100_fp16", "cupy.matmul float32"
    step: str            # the spec's step algorithm
    n: int               # M = N = K
    seconds: float       # best of --matmul-repeat
    macs_per_s: float    # n^3 / seconds
    vs_float32: float    # macs_per_s / cupy.matmul float32's on the same data


def _timer(cupy, fn: Callable[[], object], repeat: int, warmup: bool = True) -> float:
    """Best device time of fn over `repeat` runs (after one warm-up, which also compiles)."""
    if warmup:
        fn()
    times = []
    for _ in range(repeat):
        start, stop = cupy.cuda.Event(), cupy.cuda.Event()
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(cupy.cuda.get_elapsed_time(start, stop) / 1e3)
    return min(times)


def _check_sample(got, x, spec, kind: str) -> None:
    """Bits of the first and last 100k results against the NumPy reference (with their counters)."""
    from precisionlab.backends import numpy_backend as ref

    k = min(x.size, 100_000)
    for start in (0, x.size - k):
        xs = x[start:start + k].get()
        want = ref.round_values(xs, spec, start) if kind == "round" else ref.encode_values(xs, spec, start)
        have = got[start:start + k].get()
        if not np.array_equal(want.view(np.uint8), have.view(np.uint8)):
            raise SystemExit(f"bench_gpu: {kind} {spec.format.name} {spec.rounding.value} differs from the "
                             f"NumPy reference")


def bench_rounding(args, cupy) -> list[Result]:
    """Rounding suite: copy, CuPy's casts, and each backend x format x mode."""
    from precisionlab.backends import get_backend
    from precisionlab.rounding import make_round_spec

    backends = {name: get_backend(name) for name in args.backends}
    results: list[Result] = []
    rng = cupy.random.default_rng(0)
    for n in args.sizes:
        for dtype in args.dtypes:
            x = (rng.standard_normal(n, dtype=np.float32) * 100).astype(dtype)
            width = x.itemsize
            out = cupy.empty_like(x)
            t_copy = _timer(cupy, lambda: cupy.copyto(out, x), args.repeat)      # noqa: B023
            copy_gbs = 2 * width * n / t_copy / 1e9

            def add(what, seconds, bytes_moved, dtype=dtype, n=n, copy_gbs=copy_gbs):
                gbs = bytes_moved / seconds / 1e9
                results.append(Result("round", what, dtype, n, seconds, n / seconds, gbs, gbs / copy_gbs))

            add("copy", t_copy, 2 * width * n)
            add("astype float16 (CuPy)", _timer(cupy, lambda: x.astype(cupy.float16), args.repeat),  # noqa: B023
                (width + 2) * n)
            for fname in args.formats:
                for mode in args.modes:
                    spec = make_round_spec(fname, mode, seed=1 if mode in ("sr", "sr_equal") else None)
                    for bname, backend in backends.items():
                        got = backend.round_values(x, spec, 0)
                        _check_sample(got, x, spec, "round")
                        t = _timer(cupy, lambda: backend.round_values(x, spec, 0), args.repeat)  # noqa: B023
                        add(f"round {bname} {fname} {mode}", t, 2 * width * n)
                        if args.encode:
                            codes = backend.encode_values(x, spec, 0)
                            _check_sample(codes, x, spec, "encode")
                            t = _timer(cupy, lambda: backend.encode_values(x, spec, 0), args.repeat)  # noqa: B023
                            add(f"encode {bname} {fname} {mode}", t, (width + codes.itemsize) * n)
            cupy.get_default_memory_pool().free_all_blocks()
    return results


# ---- matmul benchmarks -------------------------------------------------------------------

def _check_matmul_sample(got, a, b, spec, rows: int = 2, cols: int = 3) -> None:
    """The output's top-left corner (whole K) against the NumPy reference on the same operands."""
    import precisionlab as pl

    want = pl.matmul(a[:rows].get(), b[:, :cols].get(), spec, backend="numpy")
    have = got[:rows, :cols].get()
    if not np.array_equal(want.view(np.uint8), have.view(np.uint8)):
        raise SystemExit(f"bench_gpu: matmul {spec.name} differs from the NumPy reference")


def bench_matmul(args, cupy) -> list[MatmulResult]:
    """Matmul suite: cupy.matmul in float32, then each preset x backend on the same operands."""
    import precisionlab as pl

    results: list[MatmulResult] = []
    rng = np.random.default_rng(0)
    for n in args.matmul_sizes:
        a = cupy.asarray(rng.standard_normal((n, n), dtype=np.float32))
        b = cupy.asarray(rng.standard_normal((n, n), dtype=np.float32))
        t32 = _timer(cupy, lambda: cupy.matmul(a, b), args.repeat)                          # noqa: B023
        rate32 = n**3 / t32
        results.append(MatmulResult("matmul", "cupy.matmul float32", "-", n, t32, rate32, 1.0))
        for name in args.presets:
            spec = pl.get_preset(name)
            for bname in args.backends:
                got = pl.matmul(a, b, spec, backend=bname)                       # compiles, and is checked
                _check_matmul_sample(got, a, b, spec)
                t = _timer(cupy, lambda: pl.matmul(a, b, spec, backend=bname), args.matmul_repeat,  # noqa: B023
                           warmup=False)
                results.append(MatmulResult("matmul", f"matmul {bname} {name}", spec.step, n, t, n**3 / t,
                                            n**3 / t / rate32))
        cupy.get_default_memory_pool().free_all_blocks()
    return results


SUITES: dict[str, Callable] = {"round": bench_rounding, "matmul": bench_matmul}


def _size(text: str) -> int:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"size {text!r} is not a number (e.g. 1e6, 16777216)") from None
    if value < 1 or value != int(value):
        raise argparse.ArgumentTypeError(f"size {text!r} must be a positive integer")
    return int(value)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--suite", choices=sorted(SUITES), nargs="+", default=sorted(SUITES))
    p.add_argument("--sizes", type=_size, nargs="+", default=list(DEFAULT_SIZES), help="elements per array")
    p.add_argument("--dtypes", choices=["float32", "float64"], nargs="+", default=["float32"])
    p.add_argument("--formats", nargs="+", default=list(DEFAULT_FORMATS))
    p.add_argument("--modes", nargs="+", default=list(DEFAULT_MODES))
    p.add_argument("--backends", choices=list(DEFAULT_BACKENDS), nargs="+", default=list(DEFAULT_BACKENDS))
    p.add_argument("--encode", action="store_true", help="also time encode_values")
    p.add_argument("--matmul-sizes", type=_size, nargs="+", default=list(DEFAULT_MATMUL_SIZES),
                   help="M = N = K of the matmul suite")
    p.add_argument("--presets", nargs="+", default=list(DEFAULT_PRESETS), help="matmul presets (precisionlab presets)")
    p.add_argument("--repeat", type=int, default=10, help="timed runs per case (best is kept)")
    p.add_argument("--matmul-repeat", type=int, default=3, help="timed runs per emulated matmul (best is kept)")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    p.add_argument("--dry-run", action="store_true", help="print the plan and exit (no GPU needed)")
    args = p.parse_args(argv)
    import precisionlab as pl
    try:
        for f in args.formats:
            pl.get_format(f)
        for m in args.modes:
            pl.Rounding.parse(m)
        from precisionlab.backends.cuda import matmul_unsupported
        for name in args.presets:
            reason = matmul_unsupported(pl.get_preset(name))
            if reason is not None:
                raise ValueError(f"--presets {name}: the GPU matmul kernels do not run it: {reason}")
    except ValueError as exc:
        p.error(str(exc))
    return args


def _device_or_exit(args):
    from precisionlab.backends import get_backend

    try:
        import cupy
        for name in args.backends:
            get_backend(name)
    except (ImportError, RuntimeError) as exc:
        print(f"bench_gpu: needs a CUDA GPU with CuPy: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    if "numba_cuda" in args.backends and get_backend("numba_cuda").SIMULATED:
        print("bench_gpu: NUMBA_ENABLE_CUDASIM=1 is set; unset it to time the device", file=sys.stderr)
        raise SystemExit(2)
    return cupy


def matmul_table(results: list[MatmulResult]) -> str:
    from tabulate import tabulate

    rows = [(r.what, r.step, f"{r.n}^3", f"{r.seconds:.3f}", f"{r.macs_per_s / 1e12:.4f}", f"{r.vs_float32:.2%}")
            for r in results]
    return tabulate(rows, headers=["case", "step", "size", "s", "T MAC/s", "vs cupy float32"])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.dry_run:
        for suite in args.suite:
            if suite == "matmul":
                print(f"suite matmul: sizes {args.matmul_sizes} (M = N = K), presets {args.presets}, backends "
                      f"{args.backends}, repeat {args.matmul_repeat}, against cupy.matmul float32")
            else:
                print(f"suite {suite}: sizes {args.sizes}, dtypes {args.dtypes}, formats {args.formats}, "
                      f"modes {args.modes}, backends {args.backends}, repeat {args.repeat}")
        return 0
    cupy = _device_or_exit(args)
    props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
    device = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    results = [r for suite in args.suite for r in SUITES[suite](args, cupy)]
    from tabulate import tabulate

    print(f"device: {device}")
    rounding = [r for r in results if isinstance(r, Result)]
    if rounding:
        rows = [(r.what, r.dtype, r.n, f"{r.elements_per_s / 1e9:.2f}", f"{r.gbytes_per_s:.0f}", f"{r.vs_copy:.0%}")
                for r in rounding]
        print(tabulate(rows, headers=["case", "dtype", "n", "G elem/s", "GB/s", "vs copy"]))
        ratios = [r.vs_copy for r in rounding if r.what.startswith("round ")]
        if ratios:
            print(f"median round / copy bandwidth: {statistics.median(ratios):.0%}")
    matmuls = [r for r in results if isinstance(r, MatmulResult)]
    if matmuls:
        print(matmul_table(matmuls))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"device": device, "results": [asdict(r) for r in results]}, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
