#!/usr/bin/env python3
"""Where ``pl.round``'s time goes: its numba kernel against minimal kernels on the same values.

A measuring aid for the kernel's authors, not part of the library.  On the benchmark's 10^7
float32 values (``bench_round.make_values``) it times, for each thread count:

* ``copy`` -- a parallel numba loop ``out[i] = x[i]`` into a preallocated array (the memory
  limit for a kernel at this thread count), and the same into a fresh ``np.empty`` per call
  (what any function returning a new array pays for first-touching its output);
* ``bf16 rne bits`` / ``bf16 sr bits`` -- bf16 rounding as one integer add and mask on the
  float32 bit pattern (bf16 shares float32's exponent range, so this is exact everywhere,
  subnormals included), SR adding the top 16 bits of the same SplitMix64 word ``pl.round``
  uses (exactly P3109 StochasticA with 64 random bits);
* ``rne sketch`` -- a branch-free RNE for a format inside float32: integer add-and-mask where
  the result is normal, ``(|x| + C) - C`` with ``C = 2^(emin - m + 23)`` where it is subnormal,
  then overflow / NaN selects;
* ``splitmix64`` -- only the random words (the floor under any ``sr`` kernel);
* ``pl kernel`` -- precisionlab's float32 round kernel called directly with a preallocated
  output (private API; skipped if it changed), and ``pl.round`` end to end, allocating and with
  ``out=``.

Every minimal kernel's output is checked against ``pl.round`` (mismatch count printed), so a
figure here is a speed that an exact kernel reaches; ``--exhaustive`` also checks them against
``pl.round`` on all 2^32 float32 inputs (a few minutes).  Run::

    .venv/bin/python tools/bench/profile_round.py [--threads 2,1] [--n 10000000] [--exhaustive]
"""

from __future__ import annotations

import argparse
import os
import sys

import numba
import numpy as np
from numba import njit, prange

import precisionlab as pl
from precisionlab.backends import _u32 as U

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_round import best_of, differ, make_values  # noqa: E402

_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


@njit(parallel=True)
def copy_kernel(x, out):
    for i in prange(x.size):
        out[i] = x[i]


@njit(inline="always")
def _splitmix(seed, i):
    z = seed + (np.uint64(i) + np.uint64(1)) * _GAMMA
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


@njit(parallel=True)
def splitmix_kernel(seed, out):
    for i in prange(out.size):
        out[i] = np.uint32(_splitmix(seed, i) >> np.uint64(32))


@njit(parallel=True)
def bf16_rne_bits(xb, ob):
    """bf16 RNE: add 0x7FFF + lsb, clear the low 16 bits; NaN inputs stay (quiet) NaN."""
    for i in prange(xb.size):
        u = xb[i]
        a = U.and_(u, 0x7FFFFFFF)
        r = U.and_(U.add(U.add(a, 0x7FFF), U.and_(U.shr(a, 16), 1)), 0xFFFF0000)
        r = U.sel(U.ult(0x7F800000, a), 0x7FC00000, r)
        ob[i] = U.or_(r, U.and_(u, 0x80000000))


@njit(parallel=True)
def bf16_sr_bits(xb, ob, seed):
    """bf16 SR with 64 random bits: add the word's top 16 bits to the 16 discarded bits, truncate."""
    for i in prange(xb.size):
        u = xb[i]
        a = U.and_(u, 0x7FFFFFFF)
        rnd = np.uint32(_splitmix(seed, i) >> np.uint64(48))
        r = U.and_(U.add(a, rnd), 0xFFFF0000)
        r = U.sel(U.ult(0x7F800000, a), 0x7FC00000, r)
        ob[i] = U.or_(r, U.and_(u, 0x80000000))


@njit(parallel=True)
def rne_sketch(xb, ob, shift, min_normal_bits, magic, max_bits, over_bits, inf_bits):
    """RNE to a format inside float32 (m = 23 - shift mantissa bits) with constants per call."""
    half_m1 = U.sub(U.shr(U.shl(1, shift), 1), 1)
    keep = U.sub(0, U.shl(1, shift))
    for i in prange(xb.size):
        u = xb[i]
        a = U.and_(u, 0x7FFFFFFF)
        r = U.and_(U.add(U.add(a, half_m1), U.and_(U.shr(a, shift), 1)), keep)
        s = U.as_u32((U.as_f32(a) + magic) - magic)
        r = U.sel(U.ult(a, min_normal_bits), s, r)
        r = U.sel(U.ult(max_bits, r), over_bits, r)
        r = U.sel(U.ueq(a, 0x7F800000), inf_bits, r)
        r = U.sel(U.ult(0x7F800000, a), 0x7FC00000, r)
        ob[i] = U.or_(r, U.and_(u, 0x80000000))


def _sketch_args(name: str):
    fmt = pl.get_format(name)
    f32 = lambda v: int(np.float32(v).view(np.uint32))  # noqa: E731
    nan, inf = 0x7FC00000, 0x7F800000
    over = inf if fmt.has_inf else (nan if fmt.nan != "none" else f32(fmt.max))
    return (np.uint32(23 - fmt.mantissa_bits), np.uint32(f32(fmt.smallest_normal)),
            np.float32(2.0 ** (fmt.emin - fmt.mantissa_bits + 23)), np.uint32(f32(fmt.max)), np.uint32(over),
            np.uint32(over))


def exhaustive_check(log) -> list[tuple[str, int]]:
    """Mismatches of each minimal kernel against pl.round over all 2^32 float32 bit patterns."""
    seed = np.uint64(12345)
    cases = [("bf16 rne bits", "bf16", {}, lambda xb, ob: bf16_rne_bits(xb, ob)),
             ("bf16 sr bits", "bf16", {"rounding": "sr", "seed": 12345}, lambda xb, ob: bf16_sr_bits(xb, ob, seed))]
    for f in ("fp16", "e4m3", "e5m2"):
        sk = _sketch_args(f)
        cases.append((f"{f} rne sketch", f, {}, lambda xb, ob, sk=sk: rne_sketch(xb, ob, *sk)))
    chunk = 1 << 24
    result = []
    for label, fmt, kw, kernel in cases:
        bad = 0
        for c in range(1 << 8):
            xb = np.arange(c * chunk, (c + 1) * chunk, dtype=np.uint64).astype(np.uint32)
            ob = np.empty_like(xb)
            kernel(xb, ob)
            bad += int(differ(ob.view(np.float32), pl.round(xb.view(np.float32), fmt, **kw)).sum())
        print(f"{label}: {bad} mismatches over 2^32 inputs", file=log, flush=True)
        result.append((label, bad))
    return result


def _pl_internals():
    """precisionlab's float32 round kernels (private API), or None where it changed."""
    try:
        from precisionlab.backends import numba_backend as nb
        from precisionlab.rounding import make_round_spec
        nb._f32_round_plan  # noqa: B018 -- the attribute is the check
        return nb, make_round_spec
    except (ImportError, AttributeError):
        return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=10**7)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", default="2,1")
    ap.add_argument("--exhaustive", action="store_true", help="also check the minimal kernels on all 2^32 inputs")
    args = ap.parse_args(argv)
    x = make_values(args.n)
    n = x.size
    xb = x.view(np.uint32)
    out = np.empty_like(x)
    ob = out.view(np.uint32)
    seed = np.uint64(12345)
    rows: list[tuple[str, int | str, float, str]] = []

    def check(got: np.ndarray, fmt: str, **kw) -> str:
        want = pl.round(x, fmt, **kw)
        return f"{int(differ(got, want).sum()):,} mismatches vs pl.round({fmt}{', sr' if kw else ''})"

    internals = _pl_internals()
    for t in [int(v) for v in args.threads.split(",")]:
        numba.set_num_threads(t)

        def timed(label, fn, note="", t=t):
            best, _ = best_of(fn, args.repeats)
            rows.append((label, t, n / best, note))
            print(f"{label} t={t}: {n / best / 1e6:,.0f} M el/s {note}", file=sys.stderr, flush=True)

        timed("copy (preallocated output)", lambda: copy_kernel(x, out))
        timed("copy (fresh output each call)", lambda: copy_kernel(x, np.empty_like(x)))
        timed("splitmix64 words only", lambda: splitmix_kernel(seed, ob))
        bf16_rne_bits(xb, ob)
        timed("bf16 rne bits", lambda: bf16_rne_bits(xb, ob), check(out, "bf16"))
        bf16_sr_bits(xb, ob, seed)
        timed("bf16 sr bits", lambda: bf16_sr_bits(xb, ob, seed), check(out, "bf16", rounding="sr", seed=12345))
        for f in ("fp16", "e4m3", "e5m2"):
            sk = _sketch_args(f)
            rne_sketch(xb, ob, *sk)
            timed(f"{f} rne sketch", lambda sk=sk: rne_sketch(xb, ob, *sk), check(out, f))
        cases = (("bf16", "rne"), ("e4m3", "rne"), ("e8m0", "rne"), ("bf16", "sr"), ("e4m3", "sr"))
        if internals is not None:
            nb, make_round_spec = internals
            for f, mode in cases:
                spec = make_round_spec(f, mode, seed=12345 if mode == "sr" else None)
                (par, ser), c = nb._f32_round_plan(spec.format, spec.rounding, spec.overflow, spec.subnormals,
                                                   spec.flush_inputs, spec.sr_bits)
                kargs = (xb, ob, np.uint64(0), c, seed)
                timed(f"pl kernel {f} {mode} (preallocated output)", lambda par=par, kargs=kargs: par(*kargs))
        for f, mode in cases:
            kw = {"rounding": mode, "seed": 12345 if mode == "sr" else None}
            timed(f"pl.round {f} {mode}", lambda f=f, kw=kw: pl.round(x, f, **kw))
            timed(f"pl.round {f} {mode} out=", lambda f=f, kw=kw: pl.round(x, f, out=out, **kw))
    exhaustive = exhaustive_check(sys.stderr) if args.exhaustive else []
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    print(f"n = {n:,}, best of {args.repeats}, load average {load}\n")
    print("| kernel | threads | M el/s | check |\n|---|---:|---:|---|")
    for label, t, rate, note in rows:
        print(f"| {label} | {t} | {rate / 1e6:,.0f} | {note} |")
    if exhaustive:
        print("\nAll 2^32 float32 inputs: " + ", ".join(f"{k}: {v:,} mismatches" for k, v in exhaustive))
    return 0


if __name__ == "__main__":
    sys.exit(main())
