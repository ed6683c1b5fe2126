"""Backends (DESIGN §7): numba == numpy bit for bit, thread-count independence, selection."""

from __future__ import annotations

import math
import zlib

import numba
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from oracle import MODES, POLICIES
from test_rounding import fits_float32, formats_st, values_st

import precisionlab as pl
from precisionlab.backends import BACKENDS, available_backends, get_backend, numba_backend, select_backend


def bits(a: np.ndarray) -> np.ndarray:
    """The raw bits of a float array (so NaN payloads and the sign of zero count)."""
    return a.view(np.uint32 if a.dtype == np.float32 else np.uint64)


def assert_same_bits(a: np.ndarray, b: np.ndarray, context: str) -> None:
    assert a.dtype == b.dtype and a.shape == b.shape, context
    if a.dtype.kind == "f":
        ka, kb = bits(a), bits(b)
    else:
        ka, kb = a, b
    bad = np.flatnonzero(ka.reshape(-1) != kb.reshape(-1))
    assert bad.size == 0, f"{context}: {bad.size} differences, first at {bad[:5].tolist()}: " \
                          f"{a.reshape(-1)[bad[:5]].tolist()} vs {b.reshape(-1)[bad[:5]].tolist()}"


@st.composite
def backend_cases(draw):
    fmt = draw(formats_st)
    dtype = draw(st.sampled_from([np.float32, np.float64])) if fits_float32(fmt) else np.float64
    listed = draw(st.lists(values_st(fmt, dtype), min_size=1, max_size=40))
    # plus a bulk of random values (different lengths exercise the parallel split and tails)
    n_bulk = draw(st.sampled_from([0, 1, 7, 1000, 40_000]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    scale = 2.0 ** rng.integers(int(fmt.emin) - int(fmt.mantissa_bits) - 3, int(fmt.emax) + 3, n_bulk)
    bulk = (rng.standard_normal(n_bulk) * scale).astype(dtype)
    x = np.concatenate([np.array(listed, dtype), bulk])
    if fmt.nan == "none":
        x = np.where(np.isnan(x), dtype(1.0), x)
    mode = draw(st.sampled_from(MODES))
    kw = dict(rounding=mode, overflow=draw(st.sampled_from(POLICIES)), subnormals=draw(st.booleans()),
              flush_inputs=draw(st.booleans()))
    if mode in ("sr", "sr_equal"):
        kw["seed"] = draw(st.integers(0, 2**64 - 1))
        if mode == "sr":
            kw["sr_bits"] = draw(st.one_of(st.none(), st.integers(1, 64)))
    if dtype == np.float64 and draw(st.integers(0, 4)) == 0 and fits_float32(fmt):
        kw["via"] = "fp32"
    shape = draw(st.sampled_from(["flat", "2d"]))
    if shape == "2d" and x.size % 2 == 0:
        x = x.reshape(2, -1)
    return fmt, x, kw


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(case=backend_cases())
def test_numba_equals_numpy(case):
    fmt, x, kw = case
    ctx = f"{fmt.name} {x.dtype} {kw}"
    assert_same_bits(pl.round(x, fmt, backend="numba", **kw), pl.round(x, fmt, backend="numpy", **kw), "round " + ctx)
    if fmt.has_subnormals or not fmt.has_zero:
        assert_same_bits(pl.encode(x, fmt, backend="numba", **kw), pl.encode(x, fmt, backend="numpy", **kw),
                         "encode " + ctx)


@pytest.mark.parametrize("fmt", [f for f in pl.formats.values() if f.bits <= 16], ids=lambda f: f.name)
def test_decode_numba_equals_numpy(fmt):
    codes = np.arange(1 << fmt.bits, dtype=np.uint32).astype(fmt.code_dtype)
    assert_same_bits(pl.decode(codes, fmt, backend="numba"), pl.decode(codes, fmt, backend="numpy"), fmt.name)


@pytest.mark.parametrize("name", ["fp32", "tf32", "fp64"])
def test_decode_wide_numba_equals_numpy(name):
    fmt = pl.get_format(name)
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 1 << fmt.bits, 100_000, dtype=np.uint64, endpoint=False).astype(fmt.code_dtype)
    assert_same_bits(pl.decode(codes, fmt, backend="numba"), pl.decode(codes, fmt, backend="numpy"), name)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", ["bf16", "e4m3", "fp16", "e8m0"])
def test_numba_equals_numpy_bulk(name, mode):
    """Every mode on a large varied array (all float32 bit patterns of a random sample)."""
    rng = np.random.default_rng(zlib.crc32(f"{name}/{mode}".encode()))
    x = rng.integers(0, 2**32, 200_000, dtype=np.uint64).astype(np.uint32).view(np.float32)
    kw = dict(rounding=mode, seed=1234 if mode in ("sr", "sr_equal") else None)
    for policy in POLICIES:
        for sub in (True, False):
            a = pl.round(x, name, overflow=policy, subnormals=sub, backend="numba", **kw)
            b = pl.round(x, name, overflow=policy, subnormals=sub, backend="numpy", **kw)
            assert_same_bits(a, b, f"{name} {mode} {policy} subnormals={sub}")
    x64 = rng.standard_normal(50_000) * 2.0 ** rng.integers(-140, 140, 50_000)
    assert_same_bits(pl.round(x64, name, backend="numba", **kw), pl.round(x64, name, backend="numpy", **kw),
                     f"{name} {mode} float64")


@pytest.mark.parametrize("mode", ["rne", "sr", "sr_equal"])
def test_thread_count_does_not_matter(mode):
    rng = np.random.default_rng(7)
    x = (rng.standard_normal(1_000_003) * 100).astype(np.float32)
    kw = dict(rounding=mode, seed=99 if mode != "rne" else None)
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = pl.round(x, "e4m3", backend="numba", **kw)
        one_codes = pl.encode(x, "bf16", backend="numba", **kw)
        numba.set_num_threads(min(2, numba.config.NUMBA_NUM_THREADS))
        two = pl.round(x, "e4m3", backend="numba", **kw)
        two_codes = pl.encode(x, "bf16", backend="numba", **kw)
    finally:
        numba.set_num_threads(before)
    assert_same_bits(one, two, "threads round")
    assert_same_bits(one_codes, two_codes, "threads encode")
    assert_same_bits(one, pl.round(x, "e4m3", backend="numpy", **kw), "numba vs numpy")


def test_auto_picks_numba():
    x = np.ones(3, np.float32)
    assert "numba" in available_backends() and "numpy" in available_backends()
    assert select_backend("auto", x) is get_backend("numba")
    assert get_backend("numba").name == "numba" and get_backend("numpy").name == "numpy"
    y = np.linspace(-500, 500, 10001).astype(np.float32)
    assert_same_bits(pl.round(y, "e4m3"), pl.round(y, "e4m3", backend="numba"), "auto")


@pytest.mark.parametrize("bad", ["numpyy", "cuda", "NUMBA", "", "cupy_"])
def test_unknown_backend(bad):
    with pytest.raises(ValueError, match="backend") as info:
        pl.round(np.ones(2, np.float32), "bf16", backend=bad)
    assert repr(bad) in str(info.value) and "numpy" in str(info.value)
    with pytest.raises(ValueError, match="backend"):
        pl.decode(np.zeros(2, np.uint8), "e4m3", backend=bad)
    with pytest.raises(ValueError, match="backend"):
        get_backend(bad)


def test_registry_lists_design_backends():
    assert {"numpy", "numba"} <= set(BACKENDS)


# ---- the numba float32 kernels at the edges of their bit-domain rounding ----------------------
# The kernels round the float32 bit pattern at a cut position s and decide results below the
# format's smallest quantum 2^q against thresholds; these inputs sit on and next to every cut
# and every threshold.  Formats: the catalogue's float32 ones plus custom ones for the cases the
# catalogue lacks (normal range starting at 2^-127 with m > 0, and further below; a smallest
# quantum below 2^-126 with emin above it; m = 0 and m = 22 at float32's exponent range;
# unsigned with zero; no subnormals).

EDGE_FORMATS = [f for f in pl.formats.values() if fits_float32(f)] + [
    pl.Format(exponent_bits=8, mantissa_bits=2, bias=128),
    pl.Format(exponent_bits=8, mantissa_bits=1, bias=130),
    pl.Format(exponent_bits=7, mantissa_bits=4, bias=126),
    pl.Format(exponent_bits=7, mantissa_bits=3, bias=124),
    pl.Format(exponent_bits=8, mantissa_bits=0, nan="fn", has_inf=False),
    pl.Format(exponent_bits=8, mantissa_bits=22),
    pl.Format(exponent_bits=5, mantissa_bits=2, signed=False),
    pl.Format(exponent_bits=5, mantissa_bits=2, has_subnormals=False),
]


def cut_patterns(rng: np.random.Generator) -> np.ndarray:
    """Float32 bit patterns around every rounding cut: for every exponent field and cut position
    s = 0..23, the bits below the cut 0, 1, half - 1, half, half + 1 and all ones, with the last
    kept bit even and odd (random bits above it, random sign)."""
    e = np.arange(256, dtype=np.uint32)
    parts = []
    for s in range(24):
        half = (1 << s) >> 1
        for low in sorted({0, 1, max(half - 1, 0), half, half + 1, (1 << s) - 1}):
            for kept in (0, 1):
                above = rng.integers(0, 1 << 23, e.size, dtype=np.uint32) & np.uint32(~((2 << s) - 1) & 0x7FFFFF)
                mant = (above | np.uint32((kept << s) & 0x7FFFFF) | np.uint32(low)) & np.uint32(0x7FFFFF)
                parts.append((e << np.uint32(23)) | mant)
    bits = np.concatenate(parts)
    return bits | (rng.integers(0, 2, bits.size, dtype=np.uint32) << np.uint32(31))


def format_edges(fmt: pl.Format) -> np.ndarray:
    """The format's thresholds as float32 bit patterns, each with its two neighbours, both signs:
    2^q and 2^(q-1) (q the smallest quantum), min normal, max, max + half an ulp (the overflow
    tie), 2 max (at most float32's max), float32's extremes and the specials (NaNs with payloads)."""
    q = fmt.emin - fmt.mantissa_bits
    ulp_max = 2.0 ** (math.floor(math.log2(fmt.max)) - fmt.mantissa_bits)
    points = np.array([2.0 ** q, 2.0 ** max(q - 1, -149), 1.5 * 2.0 ** q, fmt.smallest_normal, fmt.max,
                       fmt.max + ulp_max / 2, 2 * fmt.max, 2.0 ** -149, 2.0 ** -126, np.inf])
    points = np.minimum(points, float(np.finfo(np.float32).max))
    centre = points.astype(np.float32).view(np.uint32).astype(np.int64)
    near = (centre[:, None] + np.arange(-1, 2)).reshape(-1).astype(np.uint32)
    special = np.array([0, 0x7F800000, 0x7F7FFFFF, 0x7FC00000, 0x7F800001, 0x7FFFFFFF, 0x00000001, 0x007FFFFF],
                       np.uint32)
    bits = np.concatenate([near, special])
    return np.concatenate([bits, bits | np.uint32(0x80000000)])


#: (overflow, subnormals, flush_inputs, sr_bits) combinations cycled over the modes
EDGE_POLICIES = [("default", True, False, None), ("saturate", False, False, 20), ("saturate_finite", True, True, 7),
                 ("default", False, True, 1), ("saturate", True, False, 23)]


@pytest.mark.parametrize("fmt", EDGE_FORMATS, ids=lambda f: f.name)
def test_numba_float32_kernels_at_their_edges(fmt):
    rng = np.random.default_rng(zlib.crc32(fmt.name.encode()))
    bits = np.concatenate([cut_patterns(rng), format_edges(fmt)])
    x = bits.view(np.float32)
    if fmt.nan == "none":
        x = np.where(np.isnan(x), np.float32(0.5), x)
    if not fmt.signed and fmt.nan == "none":
        x = np.abs(x)
    # the parallel kernel over several chunks (counters continue across them); the slice below runs the serial one
    assert x.size >= max(numba_backend._PARALLEL_MIN, 2 * numba_backend._CHUNK)
    for k, mode in enumerate(MODES):
        for j in range(2):
            overflow, subnormals, flush, sr_bits = EDGE_POLICIES[(k + j) % len(EDGE_POLICIES)]
            kw = dict(rounding=mode, overflow=overflow, subnormals=subnormals, flush_inputs=flush)
            if mode in ("sr", "sr_equal"):
                kw["seed"] = 2**64 - 1 - k
                if mode == "sr":
                    kw["sr_bits"] = sr_bits
            want = pl.round(x, fmt, backend="numpy", **kw)
            ctx = f"{fmt.name} {kw}"
            assert_same_bits(pl.round(x, fmt, backend="numba", **kw), want, "parallel " + ctx)
            assert_same_bits(pl.round(x[:4000], fmt, backend="numba", **kw), want[:4000], "serial " + ctx)
