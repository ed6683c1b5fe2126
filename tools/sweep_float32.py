#!/usr/bin/env python3
"""Exhaustive check: ``pl.round`` (RNE, default overflow) against ``ml_dtypes`` on all 2^32 float32 inputs.

DESIGN §4: where ``ml_dtypes`` has the format, round-to-nearest-even with the default
overflow policy must agree with ``x.astype(ml_dtype)`` bit for bit on every input.  The
test suite checks samples; this script checks every float32 bit pattern, in chunks, for
every catalogue format that ml_dtypes has, comparing ``pl.round(x, fmt)`` with
``x.astype(fmt.ml_dtype).astype(float32)`` as float32 bit patterns (two NaNs count as equal:
NaN payloads are not part of the contract; everything else, -0 included, must match bitwise).

Exclusions and expected deviations (README "Decisions"):

* formats without NaN (fp6_e3m2, fp6_e2m3, fp4_e2m1) raise on NaN input by design, so the
  2^24 - 2 NaN bit patterns are left out for them (ml_dtypes would give a zero);
* e8m0: float32-subnormal inputs in (2^-127, 1.5·2^-127) give the correctly rounded 2^-127
  where ml_dtypes gives 2^-126; these are counted separately as ``expected``.  Any other
  mismatch is ``unexpected`` and makes the exit status 1.

Usage (progress on stderr, a markdown summary on stdout)::

    python tools/sweep_float32.py                       # all 13 formats, 2^24 per chunk
    python tools/sweep_float32.py --formats bf16 e4m3   # a subset
    python tools/sweep_float32.py --threads 1 --json sweep.json
    nohup python tools/sweep_float32.py --threads 1 --json sweep.json > sweep.md 2> sweep.log &

A full run is 13 × 2^32 roundings, tens of minutes on one core.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

import ml_dtypes
import numba
import numpy as np

import precisionlab as pl

#: Catalogue formats that ml_dtypes has (DESIGN §4), in catalogue order.
FORMATS = ("fp16", "bf16", "e4m3", "e5m2", "e4m3fnuz", "e5m2fnuz", "e4m3b11fnuz", "e3m4", "e4m3_ieee",
           "fp6_e3m2", "fp6_e2m3", "fp4_e2m1", "e8m0")

_E8M0_LO = np.float32(2.0 ** -127)
_E8M0_HI = np.float32(1.5 * 2.0 ** -127)


def expected_deviation(fmt: pl.Format, x: np.ndarray, ours: np.ndarray, theirs: np.ndarray) -> np.ndarray:
    """Mask of mismatches that README "Decisions" documents (only e8m0 has one)."""
    if fmt.name != "e8m0":
        return np.zeros(x.shape, dtype=bool)
    return (x > _E8M0_LO) & (x < _E8M0_HI) & (ours == _E8M0_LO) & (theirs == np.float32(2.0 ** -126))


def sweep_format(name: str, chunk_bits: int, backend: str, keep: int, log, every: int = 1) -> dict:
    fmt = pl.get_format(name)
    dtype = fmt.ml_dtype
    skip_nan = fmt.nan == "none"
    chunk = 1 << chunk_bits
    nchunks = 1 << (32 - chunk_bits)
    checked = expected = unexpected = skipped = 0
    first: list[dict] = []
    t0 = time.perf_counter()
    for c in range(0, nchunks, every):
        bits = np.arange(c * chunk, (c + 1) * chunk, dtype=np.uint64).astype(np.uint32)
        x = bits.view(np.float32)
        if skip_nan:
            keep_mask = ~np.isnan(x)
            skipped += int(x.size - np.count_nonzero(keep_mask))
            x = x[keep_mask]
        with np.errstate(all="ignore"):
            theirs = x.astype(dtype).astype(np.float32)
        ours = pl.round(x, fmt, backend=backend)
        differ = ours.view(np.uint32) != theirs.view(np.uint32)
        differ &= ~(np.isnan(ours) & np.isnan(theirs))
        checked += x.size
        if differ.any():
            idx = np.flatnonzero(differ)
            ok = expected_deviation(fmt, x[idx], ours[idx], theirs[idx])
            expected += int(np.count_nonzero(ok))
            bad = idx[~ok]
            unexpected += bad.size
            for i in bad[: max(0, keep - len(first))]:
                first.append({"input_bits": f"0x{int(x.view(np.uint32)[i]):08x}", "input": repr(float(x[i])),
                              "precisionlab": repr(float(ours[i])), "ml_dtypes": repr(float(theirs[i]))})
        if (c // every + 1) % max(1, nchunks // every // 16) == 0 or c + every >= nchunks:
            el = time.perf_counter() - t0
            print(f"[{name}] {c + 1}/{nchunks} chunks, {checked:,} checked, {unexpected} unexpected, "
                  f"{expected} expected, {el:.0f} s", file=log, flush=True)
    return {"format": name, "ml_dtype": str(dtype), "checked": checked, "nan_patterns_skipped": skipped,
            "expected_deviations": expected, "unexpected_mismatches": unexpected, "first_mismatches": first,
            "seconds": round(time.perf_counter() - t0, 1)}


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=os.path.dirname(os.path.abspath(__file__)), check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def markdown(results: list[dict]) -> str:
    lines = ["| format | ml_dtypes dtype | inputs checked | NaN patterns left out | expected deviations | "
             "unexpected mismatches | time (s) |", "|---|---|---:|---:|---:|---:|---:|"]
    for r in results:
        lines.append(f"| {r['format']} | {r['ml_dtype']} | {r['checked']:,} | {r['nan_patterns_skipped']:,} | "
                     f"{r['expected_deviations']:,} | {r['unexpected_mismatches']:,} | {r['seconds']} |")
    for r in results:
        if r["first_mismatches"]:
            lines.append(f"\nFirst unexpected mismatches for {r['format']}:\n")
            lines.append("| input bits | input | precisionlab | ml_dtypes |")
            lines.append("|---|---|---|---|")
            for m in r["first_mismatches"]:
                lines.append(f"| {m['input_bits']} | {m['input']} | {m['precisionlab']} | {m['ml_dtypes']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--formats", nargs="+", default=list(FORMATS), choices=FORMATS, metavar="FMT",
                    help="formats to sweep (default: all 13 that ml_dtypes has)")
    ap.add_argument("--chunk-bits", type=int, default=24, help="log2 of the chunk size (default 24)")
    ap.add_argument("--threads", type=int, default=None, help="numba threads (default: numba's default)")
    ap.add_argument("--backend", default="numba", help="precisionlab backend (default numba)")
    ap.add_argument("--keep", type=int, default=5, help="mismatches to record per format (default 5)")
    ap.add_argument("--every", type=int, default=1,
                    help="sweep only every K-th chunk (a quick partial check; default 1 = all 2^32)")
    ap.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    args = ap.parse_args(argv)
    if not 16 <= args.chunk_bits <= 28:
        ap.error(f"--chunk-bits={args.chunk_bits} not allowed; choose 16..28")
    if args.threads is not None:
        numba.set_num_threads(args.threads)
    t0 = time.perf_counter()
    commit = _commit()   # before the run: the checkout may move while it runs
    results = [sweep_format(f, args.chunk_bits, args.backend, args.keep, sys.stderr, args.every)
               for f in args.formats]
    print(markdown(results))
    meta = {"python": platform.python_version(), "numpy": np.__version__, "numba": numba.__version__,
            "ml_dtypes": ml_dtypes.__version__, "precisionlab_commit": commit, "backend": args.backend,
            "threads": numba.get_num_threads(),
            "chunks_every": args.every, "complete": args.every == 1,
            "seconds": round(time.perf_counter() - t0, 1)}
    print(f"\n{meta}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"meta": meta, "results": results}, fh, indent=1)
    return 1 if any(r["unexpected_mismatches"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
