#!/usr/bin/env python3
"""Throughput of ``pl.round`` against its peers, side by side in one process on the same values.

What is timed (DESIGN §12, issue 2's benchmark item), all on one array of 10^7 float32 values:

* ``pl.round(x, fmt, rounding=mode, backend="numba")`` -- float32 in, float32 out, for each
  thread count (``numba.set_num_threads``); stochastic rounding with ``seed`` and the default
  ``sr_bits`` (64 random bits per element, generated inside the kernel);
* ``x.astype(dtype)`` (ml_dtypes; NumPy's own ``float16`` for fp16) -- float32 in, 1- or 2-byte
  codes out -- and the round trip ``x.astype(dtype).astype(float32)``, which produces what
  ``pl.round`` produces.  The issue's ratios compare ``pl.round`` (writing float32) with
  ``astype(dtype)`` alone; the round-trip ratio is printed beside it;
* ``gfloat.round_ndarray`` and ``pychop.Chop`` (NumPy backend) -- slow, so they are timed on a
  prefix of the same array (``--peer-n``, default 10^6 values) and their rate is elements/s on
  that prefix.  gfloat gets the prefix as float64 (exact; converted before timing), its
  documented input; for ``sr`` it is given 16 precomputed random bits per element (the
  StochasticFastest rule, which is P3109 StochasticA; generating them is not timed);
* ``np.copyto(dst, x)`` into a preallocated array: the memory-copy limit.  "% copy" is the bytes
  a call reads and writes (input + output) per second over the bytes ``np.copyto`` moves per
  second (8 per element).  ``np.copyto`` runs on one thread; a numba ``prange`` copy at each
  thread count shows what several threads can move (so a 2-thread figure can exceed 100 %).

pychop gets ``chunk_size`` above the prefix size, so it skips dask (its fastest setting).
Each figure is the best over ``--rounds`` passes (spread over the run, so that a burst of load
from other processes spoils one pass, not the figure) of ``--repeats`` calls each, after one
untimed warm-up call that also compiles.  Peers run single-threaded (they are NumPy code);
``threads`` applies to ``pl.round`` only.
Every timed output is checked: pl.round (numba) against the NumPy reference backend on a
prefix; the ml_dtypes round trip against pl.round on all values (NaN vs NaN counts as equal,
everything else bitwise; the e8m0 deviation documented in README "Decisions" is counted
apart); gfloat against pl.round (sr: ``pl.round(..., sr_bits=16)`` with the same bits);
pychop against pl.round (pychop's E4M3 is IEEE-style, so it is compared with e4m3_ieee; its
sr uses its own generator, so it is checked to be one of the two neighbours).

Data (``make_values``, fixed seed): ``--data mix`` (default) is 90 % N(0,1) scaled by 2^k,
k in {-24,-16,...,16}, with 3 % exact ties of the bf16/fp16/fp8/fp6/fp4 grids, 1 % float32
subnormals, 3 % overflow bands around each format's maximum, 2 % uniformly random finite bit
patterns and 1 % ±0/±Inf/NaN, shuffled; ``--data normal`` is plain N(0,1).  Formats without
NaN (fp4/fp6) get the same array with NaN replaced by +0 (``pl.round`` raises on NaN for them
by design).

Setup and run (peers only in this benchmark venv, never project dependencies)::

    python3 -m venv /tmp/bench-venv
    /tmp/bench-venv/bin/pip install -e . gfloat pychop
    /tmp/bench-venv/bin/python tools/bench/bench_round.py                  # markdown on stdout
    /tmp/bench-venv/bin/python tools/bench/bench_round.py --json bench.json
    /tmp/bench-venv/bin/python tools/bench/bench_round.py --data normal --no-peers
    /tmp/bench-venv/bin/python tools/bench/bench_round.py --quick          # smoke run, small sizes
    /tmp/bench-venv/bin/python tools/bench/bench_round.py --from-json bench.json   # re-print a saved run

Without gfloat/pychop installed their columns are left empty.
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import ml_dtypes
import numba
import numpy as np

import precisionlab as pl
from precisionlab.random import random_bits

FORMATS = ("bf16", "fp16", "e4m3", "e5m2", "fp6_e3m2", "fp6_e2m3", "fp4_e2m1", "e8m0")
MODES = ("rne", "rtz", "sr")
SEED = 12345
SR_BITS_PEER = 16

#: Issue 2's benchmark targets: (format, ratio of pl.round to astype) on 2 threads.
ASTYPE_TARGETS = {"bf16": 2.0, "fp16": 5.0, "e4m3": 15.0, "e5m2": 15.0}
PEER_TARGET = 100.0
SR_TARGET = 800e6


# ---- data -----------------------------------------------------------------------------------

#: Shares of the "mix" data set (see make_values).
MIX = {"scaled normal": 0.90, "ties": 0.03, "float32 subnormals": 0.01, "overflow bands": 0.03,
       "random bit patterns": 0.02, "specials": 0.01}


def make_values(n: int, seed: int = 0, kind: str = "mix") -> np.ndarray:
    """The benchmark's float32 values (fixed seed).

    ``normal``: N(0, 1).  ``mix``: mostly N(0, 1) at scales 2^k, k in {-24, -16, ..., 16} (which
    reaches the fp8/fp16 subnormal, underflow and overflow ranges), plus exact ties of the
    bf16/fp16/fp8/fp6/fp4 grids, float32 subnormals, bands 0.9..1.2 times each format's maximum,
    uniformly random finite bit patterns and ±0/±Inf/NaN, in the shares of ``MIX``, shuffled.
    """
    rng = np.random.default_rng(seed)
    if kind == "normal":
        return rng.standard_normal(n, dtype=np.float32)
    if kind != "mix":
        raise ValueError(f"kind={kind!r} not allowed; choose 'mix' or 'normal'")
    counts = {k: int(round(n * v)) for k, v in MIX.items()}
    counts["scaled normal"] += n - sum(counts.values())
    parts = []
    k = rng.choice(np.arange(-24, 17, 8), counts["scaled normal"])
    parts.append(rng.standard_normal(k.size) * np.exp2(k))
    # exact ties: a float32 whose bits below the kept mantissa are 100..0, for m in {7, 10, 3, 2, 1}
    t = counts["ties"]
    m = rng.choice(np.array([7, 10, 3, 2, 1], dtype=np.uint32), t)
    e = rng.integers(127 - 20, 127 + 16, t).astype(np.uint32)
    top = rng.integers(0, 1 << 23, t, dtype=np.uint32) & ~((np.uint32(1) << (23 - m)) - np.uint32(1))
    tie = (e << np.uint32(23)) | top | (np.uint32(1) << (22 - m))
    parts.append(tie.view(np.float32).astype(np.float64))
    sub = rng.integers(1, 1 << 23, counts["float32 subnormals"], dtype=np.uint32)
    parts.append(sub.view(np.float32).astype(np.float64))
    maxima = np.array([pl.get_format(f).max for f in ("bf16", "fp16", "e4m3", "e5m2", "fp6_e3m2", "fp6_e2m3",
                                                       "fp4_e2m1")])
    o = counts["overflow bands"]
    band = rng.choice(maxima, o) * rng.uniform(0.9, 1.2, o)
    parts.append(np.minimum(band, 3.4e38))
    r = rng.integers(0, 1 << 32, counts["random bit patterns"], dtype=np.uint64).astype(np.uint32).view(np.float32)
    parts.append(np.where(np.isfinite(r), r, 1.0).astype(np.float64))
    x = np.concatenate(parts).astype(np.float32)
    x = np.where(rng.integers(0, 2, x.size).astype(bool), -x, x)
    special = np.array([0.0, -0.0, np.inf, -np.inf, np.nan], dtype=np.float32)
    x = np.concatenate([x, rng.choice(special, counts["specials"])])
    return rng.permutation(x)


# ---- timing ---------------------------------------------------------------------------------

@numba.njit(parallel=True)
def parallel_copy(x: np.ndarray, out: np.ndarray) -> None:
    """``out[:] = x`` on numba's threads: the copy limit at more than one thread."""
    for i in numba.prange(x.size):
        out[i] = x[i]


def best_of(fn: Callable[[], object], repeats: int) -> tuple[float, list[float]]:
    """Best wall time of ``repeats`` calls (after one untimed warm-up call, which also compiles)."""
    times = []
    gc_was = gc.isenabled()
    gc.disable()
    try:
        with np.errstate(all="ignore"):   # the peers warn on overflow; their results are checked instead
            fn()
            for _ in range(repeats):
                t0 = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t0)
    finally:
        if gc_was:
            gc.enable()
    return min(times), times


@dataclass
class Record:
    impl: str
    format: str
    mode: str
    threads: int | None
    n: int
    best_s: float
    times_s: list[float]
    bytes_per_el: int
    el_per_s: float = 0.0
    frac_copy: float = 0.0
    check: str = ""
    mismatches: int | None = None
    examples: list[str] = field(default_factory=list)
    explained: dict[str, int] = field(default_factory=dict)


# ---- correctness checks -----------------------------------------------------------------------

def differ(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Elements whose float32 bits differ (two NaNs count as equal)."""
    a = np.asarray(a, dtype=np.float32)
    b = np.asarray(b, dtype=np.float32)
    d = a.view(np.uint32) != b.view(np.uint32)
    return d & ~(np.isnan(a) & np.isnan(b))


def e8m0_documented(x: np.ndarray, ours: np.ndarray, theirs: np.ndarray) -> np.ndarray:
    """README "Decisions": float32 subnormals in (2^-127, 1.5·2^-127) -> 2^-127 (ml_dtypes: 2^-126)."""
    lo = np.float32(2.0 ** -127)
    return (x > lo) & (x < np.float32(1.5 * 2.0 ** -127)) & (ours == lo) & (theirs == np.float32(2.0 ** -126))


def explain(fmt: pl.Format, x: np.ndarray, expect: np.ndarray, theirs: np.ndarray,
            bad: np.ndarray) -> tuple[np.ndarray, dict[str, int]]:
    """Split a peer's mismatches into known behaviours; returns (unexplained mask, counts per behaviour).

    Seen in pychop: it drops the sign of zero, gives 0 for finite inputs in the binade above the
    format's maximum, sends finite overflow to ±Inf in every mode (IEEE 754 rounds toward zero to
    ±max), and rounds some values just above the maximum to 2^(emax+1), which the format lacks.
    Seen in gfloat: negative inputs to unsigned formats are not defined (pl.round gives NaN), and
    e8m0 results below 2^-127 that the format lacks."""
    theirs = np.asarray(theirs, dtype=np.float32)
    finite = np.isfinite(theirs)
    with np.errstate(all="ignore"):
        outside = bad & finite & (differ(pl.round(np.where(finite, theirs, 0), fmt, backend="numpy"), theirs))
    cats = {
        "x < 0 to an unsigned format": bad & (x < 0) if not fmt.signed else np.zeros_like(bad),
        "abs(x) > max -> 0": bad & np.isfinite(x) & (np.abs(x) > fmt.max) & (theirs == 0),
        "result not a value of the format": outside,
        "-0 -> +0": bad & (x == 0) & (theirs == 0) & np.signbit(x) & ~np.signbit(theirs),
        "finite overflow -> ±Inf": bad & np.isfinite(x) & np.isinf(theirs) & (np.abs(expect) == fmt.max),
    }
    rest = bad.copy()
    counts = {}
    for name, m in cats.items():
        m = m & rest
        if m.any():
            counts[name] = int(m.sum())
        rest &= ~m
    return rest, counts


def describe(x: np.ndarray, ours: np.ndarray, theirs: np.ndarray, bad: np.ndarray, keep: int = 3) -> list[str]:
    idx = np.flatnonzero(bad)[:keep]
    return [f"x={float(x[i])!r}: pl={float(ours[i])!r} peer={float(theirs[i])!r}" for i in idx]


# ---- peers ------------------------------------------------------------------------------------

def _gfloat():
    try:
        import gfloat
        import gfloat.formats as gf
    except ImportError:
        return None
    infos = {"bf16": gf.format_info_bfloat16, "fp16": gf.format_info_binary16, "e4m3": gf.format_info_ocp_e4m3,
             "e5m2": gf.format_info_ocp_e5m2, "fp6_e3m2": gf.format_info_ocp_e3m2,
             "fp6_e2m3": gf.format_info_ocp_e2m3, "fp4_e2m1": gf.format_info_ocp_e2m1,
             "e8m0": gf.format_info_ocp_e8m0}
    modes = {"rne": gfloat.RoundMode.TiesToEven, "rtz": gfloat.RoundMode.TowardZero,
             "sr": gfloat.RoundMode.StochasticFastest}
    return gfloat, infos, modes


def _pychop():
    os.environ.setdefault("chop_backend", "numpy")
    try:
        import pychop
    except ImportError:
        return None
    # (exponent bits, trailing significand bits, precisionlab format it should equal)
    formats = {"bf16": (8, 7, "bf16"), "fp16": (5, 10, "fp16"), "e4m3": (4, 3, "e4m3_ieee"),
               "e5m2": (5, 2, "e5m2")}
    return pychop, formats, {"rne": 1, "rtz": 4, "sr": 5}


def _version(mod: str) -> str:
    try:
        from importlib.metadata import version
        return version(mod)
    except Exception:  # noqa: BLE001 -- any failure means "not installed"
        return "not installed"


# ---- the benchmark ----------------------------------------------------------------------------

def run(n: int, peer_n: int, repeats: int, peer_repeats: int, threads: list[int], formats: list[str],
        modes: list[str], log, data_kind: str = "mix", peers: bool = True,
        rounds: int = 1) -> tuple[list[Record], dict]:
    """Time and check every case; with ``rounds`` > 1 every case is timed again in later passes
    (each of ``repeats`` calls) and the best over all passes kept, so that a burst of load from
    other processes spoils one pass of a case, not its figure."""
    env = environment()   # before the run: the checkout may move while it runs
    x = make_values(n, kind=data_kind)
    x_nonan = np.where(np.isnan(x), np.float32(0.0), x)
    gfl, pyc = (_gfloat(), _pychop()) if peers else (None, None)
    records: list[Record] = []
    timers: list[tuple[Record, Callable[[], object], int | None, int]] = []

    def say(msg: str) -> None:
        print(msg, file=log, flush=True)

    def timed(fn: Callable[[], object], reps: int, t: int | None = None) -> tuple[float, list[float]]:
        if t is not None:
            numba.set_num_threads(t)
        best, times = best_of(fn, reps)
        timers.append((None, fn, t, reps))
        return best, times

    def add(rec: Record) -> Record:
        records.append(rec)
        timers[-1] = (rec, *timers[-1][1:])
        return rec

    dst = np.empty_like(x)
    best, times = timed(lambda: np.copyto(dst, x), repeats)
    add(Record("np.copyto", "-", "-", None, n, best, times, 8, check="-"))
    best, times = timed(lambda: x.copy(), repeats)
    add(Record("x.copy() (fresh output)", "-", "-", None, n, best, times, 8, check="-"))
    for t in threads:                  # what t threads can copy (np.copyto is one thread)
        best, times = timed(lambda: parallel_copy(x, dst), repeats, t)
        add(Record(f"copy on {t} thread{'s' if t > 1 else ''} (numba prange)", "-", "-", t, n, best, times, 8,
                   check="-"))
    say(f"copy: {n / records[0].best_s / 1e6:.0f} M el/s")

    for fname in formats:
        fmt = pl.get_format(fname)
        data = x_nonan if fmt.nan == "none" else x
        for mode in modes:
            kw = {"rounding": mode, "seed": SEED if mode == "sr" else None}
            ref_prefix = pl.round(data[:peer_n], fmt, backend="numpy", **kw)
            ours = None
            for t in threads:
                best, times = timed(lambda fmt=fmt, data=data, kw=kw: pl.round(data, fmt, backend="numba", **kw),
                                    repeats, t)
                ours = pl.round(data, fmt, backend="numba", **kw)
                bad = differ(ours[:peer_n], ref_prefix)
                add(Record("pl.round", fname, mode, t, n, best, times, 8,
                                      check=f"= numpy backend on {peer_n:,}", mismatches=int(bad.sum()),
                                      examples=describe(data, ours, ref_prefix, bad)))
                say(f"pl.round {fname} {mode} t={t}: {n / best / 1e6:.0f} M el/s")
                into = np.empty_like(data)
                best, times = timed(lambda fmt=fmt, data=data, kw=kw, into=into:
                                    pl.round(data, fmt, backend="numba", out=into, **kw), repeats, t)
                add(Record("pl.round out=", fname, mode, t, n, best, times, 8,
                           check="= pl.round", mismatches=int(differ(into, ours).sum()),
                           examples=describe(data, into, ours, differ(into, ours))))
            # ml_dtypes / NumPy astype: RNE only
            dtype = fmt.ml_dtype
            if mode == "rne" and dtype is not None:
                name = "numpy astype" if dtype == np.float16 else "ml_dtypes astype"
                with np.errstate(all="ignore"):
                    best, times = timed(lambda d=data, dt=dtype: d.astype(dt), repeats)
                    add(Record(f"{name}", fname, mode, None, n, best, times, 4 + dtype.itemsize,
                                          check="(codes; see round trip)"))
                    best, times = timed(lambda d=data, dt=dtype: d.astype(dt).astype(np.float32), repeats)
                    theirs = data.astype(dtype).astype(np.float32)
                bad = differ(ours, theirs)
                documented = e8m0_documented(data, ours, theirs) if fname == "e8m0" else np.zeros_like(bad)
                note = f"= pl.round on {n:,}"
                if documented.any():
                    note += f" ({int(documented.sum())} documented e8m0 deviations excluded)"
                add(Record(f"{name} round trip", fname, mode, None, n, best, times, 8, check=note,
                                      mismatches=int((bad & ~documented).sum()),
                                      examples=describe(data, ours, theirs, bad & ~documented)))
                say(f"{name} {fname}: {n / records[-2].best_s / 1e6:.0f} M el/s, round trip "
                    f"{n / best / 1e6:.0f} M el/s")
            prefix = data[:peer_n]
            if gfl is not None and fname in gfl[1]:
                gfloat, infos, gmodes = gfl
                fi = infos[fname]
                sat = fmt.nan == "none"   # gfloat raises on overflow without Inf/NaN; pl.round saturates there
                p64 = prefix.astype(np.float64)
                if mode == "sr":
                    bits = random_bits(SEED, 0, peer_n, SR_BITS_PEER).astype(np.int64)
                    call = functools.partial(gfloat.round_ndarray, fi, p64, gmodes[mode], sat, bits, SR_BITS_PEER)
                    expect = pl.round(prefix, fmt, backend="numpy", rounding="sr", seed=SEED, sr_bits=SR_BITS_PEER)
                    note = f"= pl.round(sr_bits={SR_BITS_PEER}) on {peer_n:,}"
                else:
                    call = functools.partial(gfloat.round_ndarray, fi, p64, gmodes[mode], sat)
                    expect = ref_prefix
                    note = f"= pl.round on {peer_n:,}"
                best, times = timed(call, peer_repeats)
                with np.errstate(all="ignore"):
                    theirs = call()
                bad = differ(expect, theirs)
                bad, explained = explain(fmt, prefix, expect, theirs, bad)
                add(Record("gfloat", fname, mode, None, peer_n, best, times, 8, check=note,
                                      mismatches=int(bad.sum()), examples=describe(prefix, expect, theirs, bad),
                                      explained=explained))
                say(f"gfloat {fname} {mode}: {peer_n / best / 1e6:.1f} M el/s")
            if pyc is not None and fname in pyc[1]:
                pychop, pformats, pmodes = pyc
                eb, sb, same_as = pformats[fname]
                chop = pychop.Chop(eb, sb, rmode=pmodes[mode], subnormal=True, chunk_size=peer_n + 1,
                                   random_state=SEED)
                best, times = timed(lambda c=chop, p=prefix: c(p), peer_repeats)
                with np.errstate(all="ignore"):
                    theirs = np.asarray(chop(prefix), dtype=np.float32)
                if mode == "sr":
                    lo = pl.round(prefix, same_as, rounding="rdn", backend="numpy")
                    hi = pl.round(prefix, same_as, rounding="rup", backend="numpy")
                    bad = differ(lo, theirs) & differ(hi, theirs)
                    expect, note = lo, f"in {{rdn, rup}} of {same_as} on {peer_n:,}"
                else:
                    expect = ref_prefix if same_as == fname else pl.round(prefix, same_as, backend="numpy", **kw)
                    bad = differ(expect, theirs)
                    note = f"= pl.round({same_as}) on {peer_n:,}"
                bad, explained = explain(pl.get_format(same_as), prefix, expect, theirs, bad)
                add(Record("pychop", fname, mode, None, peer_n, best, times, 8, check=note,
                                      mismatches=int(bad.sum()), examples=describe(prefix, expect, theirs, bad),
                                      explained=explained))
                say(f"pychop {fname} {mode}: {peer_n / best / 1e6:.1f} M el/s")

    for k in range(1, rounds):
        say(f"pass {k + 1} of {rounds}")
        for rec, fn, t, reps in timers:
            if t is not None:
                numba.set_num_threads(t)
            best, times = best_of(fn, reps)
            rec.times_s += times
            rec.best_s = min(rec.best_s, best)
    copy_rate = n / records[0].best_s
    for r in records:
        r.el_per_s = r.n / r.best_s
        r.frac_copy = r.el_per_s * r.bytes_per_el / (copy_rate * 8)
    meta = {"data": data_kind, "n": n, "peer_n": peer_n, "repeats": repeats, "peer_repeats": peer_repeats,
            "rounds": rounds,
            "threads": threads, "sr_seed": SEED, "copy_el_per_s": copy_rate, **env,
            "load_average": os.getloadavg(), "numba_threading_layer": numba.threading_layer()}
    return records, meta


def environment() -> dict:
    def lscpu(key: str) -> str:
        try:
            out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        except (OSError, subprocess.CalledProcessError):
            return "?"
        for line in out.splitlines():
            if line.startswith(key + ":"):
                return line.split(":", 1)[1].strip()
        return "?"

    try:
        with open("/proc/meminfo") as fh:
            mem = f"{int(fh.readline().split()[1]) / 2**20:.1f} GiB"
    except OSError:
        mem = "?"
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True,
                                cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    return {"cpu": lscpu("Model name"), "cpus": os.cpu_count(), "memory": mem,
            "load_average": os.getloadavg(),
            "python": platform.python_version(), "numpy": np.__version__, "numba": numba.__version__,
            "ml_dtypes": ml_dtypes.__version__, "gfloat": _version("gfloat"), "pychop": _version("pychop"),
            "precisionlab_commit": commit}


# ---- report -----------------------------------------------------------------------------------

def _find(records: list[Record], impl: str, fmt: str, mode: str, threads: int | None = None) -> Record | None:
    for r in records:
        if r.impl == impl and r.format == fmt and r.mode == mode and r.threads == threads:
            return r
    return None


def _rate(r: Record | None, copy: bool = False) -> str:
    if r is None:
        return ""
    s = f"{r.el_per_s / 1e6:,.1f}" if r.el_per_s < 1e8 else f"{r.el_per_s / 1e6:,.0f}"
    return f"{s} ({100 * r.frac_copy:.0f} %)" if copy else s


def targets(records: list[Record], threads: list[int]) -> list[dict]:
    """One row per acceptance ratio of issue 2 (on 2 threads when measured, else the most threads)."""
    t = 2 if 2 in threads else max(threads)
    rows = []

    def ratio(name, fmt, mode, peer, need, impl="pl.round"):
        ours, theirs = _find(records, impl, fmt, mode, t), _find(records, peer, fmt, mode)
        if ours is None or theirs is None:
            return
        value = ours.el_per_s / theirs.el_per_s
        rows.append({"target": name, "format": fmt, "mode": mode, "threads": t, "measured": value, "need": need,
                     "pass": value >= need})

    for fmt, need in ASTYPE_TARGETS.items():
        peer = "numpy astype" if fmt == "fp16" else "ml_dtypes astype"
        ratio(f"pl.round / {peer} ({fmt})", fmt, "rne", peer, need)
        ratio(f"pl.round out= / {peer} ({fmt})", fmt, "rne", peer, need, "pl.round out=")
    for peer in ("gfloat", "pychop"):
        for r in records:
            if r.impl == peer:
                ratio(f"pl.round / {peer}", r.format, r.mode, peer, PEER_TARGET)
                ratio(f"pl.round out= / {peer}", r.format, r.mode, peer, PEER_TARGET, "pl.round out=")
    for r in records:
        if r.impl == "pl.round" and r.mode == "sr" and r.threads == t:
            rows.append({"target": "pl.round sr, M el/s", "format": r.format, "mode": "sr", "threads": t,
                         "measured": r.el_per_s / 1e6, "need": SR_TARGET / 1e6, "pass": r.el_per_s >= SR_TARGET})
    return rows


def markdown(records: list[Record], meta: dict) -> str:
    th = meta["threads"]
    copy = meta["copy_el_per_s"]
    load = ", ".join(f"{v:.2f}" for v in meta["load_average"])
    out = [f"Data '{meta['data']}': n = {meta['n']:,} float32 values (gfloat/pychop: the first {meta['peer_n']:,}); "
           f"best of {meta['rounds']} passes × {meta['repeats']} calls (gfloat/pychop: × {meta['peer_repeats']}); "
           f"np.copyto: {copy / 1e6:,.0f} M el/s = "
           f"{copy * 8 / 1e9:.1f} GB/s; load average at the end {load}; precisionlab {meta['precisionlab_commit']}.",
           "",
           "Throughput, M elements/s (in brackets: bytes read + written per second as % of np.copyto's):", ""]
    head = ["format", "mode"] + [f"pl.round {t} thr" for t in th] + [f"pl.round out= {t} thr" for t in th] + \
        ["astype(dtype)", "astype round trip", "gfloat", "pychop"]
    out += ["| " + " | ".join(head) + " |", "|" + "---|" * 2 + "---:|" * (len(head) - 2)]
    fmts = list(dict.fromkeys(r.format for r in records if r.impl == "pl.round"))
    modes = list(dict.fromkeys(r.mode for r in records if r.impl == "pl.round"))
    for f in fmts:
        for m in modes:
            ast = _find(records, "ml_dtypes astype", f, m) or _find(records, "numpy astype", f, m)
            rt = _find(records, "ml_dtypes astype round trip", f, m) or _find(records, "numpy astype round trip", f, m)
            cells = [f, m] + [_rate(_find(records, "pl.round", f, m, t), True) for t in th] + \
                [_rate(_find(records, "pl.round out=", f, m, t), True) for t in th] + \
                [_rate(ast, True), _rate(rt, True), _rate(_find(records, "gfloat", f, m)),
                 _rate(_find(records, "pychop", f, m))]
            out.append("| " + " | ".join(cells) + " |")
    for r in records:
        if r.format == "-":
            out.append(f"| {r.impl} | | {_rate(r, True)} |" + " |" * (len(head) - 3))
    rows = targets(records, th)
    out += ["", "Targets of issue 2, summary (ratios are pl.round's elements/s over the peer's):", "",
            "| target | needed | cases | met | worst | best |", "|---|---:|---:|---:|---|---|"]
    for name in dict.fromkeys(r["target"] for r in rows):
        group = [r for r in rows if r["target"] == name]
        lo, hi = min(group, key=lambda r: r["measured"]), max(group, key=lambda r: r["measured"])
        out.append(f"| {name} | {group[0]['need']:,.0f} | {len(group)} | {sum(r['pass'] for r in group)} | "
                   f"{lo['measured']:,.1f} ({lo['format']} {lo['mode']}) | {hi['measured']:,.1f} "
                   f"({hi['format']} {hi['mode']}) |")
    out += ["", "Targets of issue 2, every case:", "",
            "| target | format | mode | threads | measured | needed | met |", "|---|---|---|---:|---:|---:|---|"]
    for row in rows:
        out.append(f"| {row['target']} | {row['format']} | {row['mode']} | {row['threads']} | "
                   f"{row['measured']:,.1f} | {row['need']:,.0f} | {'yes' if row['pass'] else '**no**'} |")
    rt_rows = []
    for f in fmts:
        ours = _find(records, "pl.round", f, "rne", 2 if 2 in th else max(th))
        rt = _find(records, "ml_dtypes astype round trip", f, "rne") or _find(records, "numpy astype round trip",
                                                                               f, "rne")
        if ours and rt:
            rt_rows.append(f"{f} {ours.el_per_s / rt.el_per_s:.2f}×")
    if rt_rows:
        out += ["", "For comparison, pl.round over the astype round trip (same float32 output): " + ", ".join(rt_rows)
                + "."]
    out += ["", "Correctness of what was timed (unexplained mismatches; known peer behaviours counted apart):", "",
            "| implementation | format | mode | threads | checked | unexplained mismatches | known behaviours | "
            "first unexplained |", "|---|---|---|---:|---|---:|---|---|"]
    for r in records:
        if r.mismatches is None:
            continue
        known = ", ".join(f"{k}: {v:,}" for k, v in r.explained.items())
        out.append(f"| {r.impl} | {r.format} | {r.mode} | {r.threads or ''} | {r.check} | {r.mismatches:,} | "
                   f"{known} | {'; '.join(r.examples)} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=10**7, help="values timed (default 10^7)")
    ap.add_argument("--peer-n", type=int, default=10**6, help="prefix timed for gfloat and pychop (default 10^6)")
    ap.add_argument("--repeats", type=int, default=5, help="timed calls per figure and pass (default 5)")
    ap.add_argument("--rounds", type=int, default=3,
                    help="passes over all cases, best over all kept; spreads each case over time (default 3)")
    ap.add_argument("--peer-repeats", type=int, default=3, help="timed calls for gfloat/pychop (default 3)")
    ap.add_argument("--threads", default="2,1", help="numba thread counts, comma separated (default 2,1)")
    ap.add_argument("--formats", nargs="+", default=list(FORMATS), metavar="FMT",
                    help="formats (default: " + " ".join(FORMATS) + ")")
    ap.add_argument("--modes", nargs="+", default=list(MODES), metavar="MODE",
                    help="rounding modes (default rne rtz sr)")
    ap.add_argument("--json", metavar="PATH", help="also write every measurement as JSON to PATH ('-': stdout)")
    ap.add_argument("--data", choices=("mix", "normal"), default="mix", help="data set (default mix)")
    ap.add_argument("--no-peers", action="store_true", help="skip gfloat and pychop")
    ap.add_argument("--from-json", metavar="PATH", help="print the markdown of a saved --json run; time nothing")
    ap.add_argument("--quick", action="store_true", help="smoke run: n=10^5, peer-n=10^4, 2 repeats")
    args = ap.parse_args(argv)
    if args.quick:
        args.n, args.peer_n, args.repeats, args.peer_repeats, args.rounds = 10**5, 10**4, 2, 1, 1
    if args.from_json:
        with open(args.from_json) as fh:
            payload = json.load(fh)
        print(markdown([Record(**r) for r in payload["records"]], payload["meta"]))
        return 0
    threads = [int(t) for t in args.threads.split(",")]
    bad = [t for t in threads if not 1 <= t <= numba.config.NUMBA_NUM_THREADS]
    if bad:
        ap.error(f"--threads {bad} not allowed; numba allows 1..{numba.config.NUMBA_NUM_THREADS} here")
    for f in args.formats:
        pl.get_format(f)
    if not 1 <= args.peer_n <= args.n:
        ap.error(f"--peer-n={args.peer_n} must be in 1..--n ({args.n})")
    records, meta = run(args.n, args.peer_n, args.repeats, args.peer_repeats, threads, args.formats, args.modes,
                        sys.stderr, args.data, not args.no_peers, args.rounds)
    payload = {"meta": meta, "records": [asdict(r) for r in records], "targets": targets(records, threads)}
    if args.json == "-":
        json.dump(payload, sys.stdout, indent=1)
        return 0
    print(markdown(records, meta))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(payload, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
