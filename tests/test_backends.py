"""Backends (DESIGN §7): numba == numpy bit for bit, thread-count independence, selection."""

from __future__ import annotations

import zlib

import numba
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from oracle import MODES, POLICIES
from test_rounding import fits_float32, formats_st, values_st

import precisionlab as pl
from precisionlab.backends import BACKENDS, available_backends, get_backend, select_backend


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
