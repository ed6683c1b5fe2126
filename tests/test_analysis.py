"""Error metrics (precisionlab.analysis) against exact oracles written from the definitions:
ordinals from enumerated code values (tests/oracle.py), errors and ulps with Fractions,
overflow / underflow thresholds and counts from the oracle's rounding."""

from __future__ import annotations

import dataclasses
import math
from bisect import bisect_left
from fractions import Fraction
from functools import cache

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from oracle import code_values, finite_values, of, oracle_round

import precisionlab as pl
from precisionlab import analysis as A
from precisionlab.testing import strategies as S

SMALL = [f for f in pl.formats.values() if f.bits <= 16]
DETERMINISTIC = ("rne", "rna", "rtz", "rup", "rdn", "rto")


def nan_code(fmt, code) -> bool:
    v = code_values(fmt)[code]
    return isinstance(v, float) and math.isnan(v)


@cache
def _origin(fmt) -> int:
    vals = finite_values(fmt)
    return vals.index(Fraction(0)) if of(fmt).has_zero else next(i for i, v in enumerate(vals) if v > 0)


def oracle_ordinal(v: float, fmt) -> int:
    """Index among the sorted distinct values (±0 as one), counted from zero's index
    (from the smallest value for formats without zero); Inf one past max."""
    vals = finite_values(fmt)
    origin = _origin(of(fmt))
    if math.isinf(v):
        i = len(vals) - 1 if v > 0 else 0
        return (i - origin) + (1 if v > 0 else -1)
    i = bisect_left(vals, Fraction(v))
    assert vals[i] == Fraction(v)
    return i - origin


def floor_log2(a: Fraction) -> int:
    e = 0
    while Fraction(2) ** e > a:
        e -= 1
    while Fraction(2) ** (e + 1) <= a:
        e += 1
    return e


def oracle_ulp(x, fmt) -> Fraction:
    a = abs(Fraction(x))
    e = fmt.emin if a == 0 else min(max(floor_log2(a), fmt.emin), fmt.emax)
    return Fraction(2) ** (e - fmt.mantissa_bits)


def to_float(fr: Fraction) -> float:
    try:
        return float(fr)
    except OverflowError:
        return math.inf if fr > 0 else -math.inf


# ---------------------------------------------------------------- ordinals ----


@pytest.mark.parametrize("fmt", SMALL, ids=lambda f: f.name)
def test_ordinal_of_every_code(fmt):
    codes = [c for c in range(1 << fmt.bits) if not nan_code(fmt, c)]
    vals = np.array([float(code_values(fmt)[c]) for c in codes])
    got = A.ordinal(vals, fmt)
    expected = [oracle_ordinal(v, fmt) for v in vals.tolist()]
    assert got.tolist() == expected


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_ordinal_of_custom_formats(data):
    fmt = data.draw(S.formats(catalogue_formats=False, max_bits=12))
    xs = data.draw(st.lists(S.values(fmt, allow_nan=False), min_size=1, max_size=20))
    got = A.ordinal(np.array(xs), fmt)
    assert got.tolist() == [oracle_ordinal(v, fmt) for v in xs]


def test_ordinal_rejects_nan_and_non_values():
    with pytest.raises(ValueError, match="NaN"):
        A.ordinal(np.array([1.0, np.nan]), "e4m3")
    with pytest.raises(ValueError, match=r"0\.1.*index \(1,\).*e4m3"):
        A.ordinal(np.array([1.0, 0.1]), "e4m3")
    with pytest.raises(ValueError, match="-0.0"):
        A.ordinal(np.array([-0.0]), "e4m3fnuz")             # no -0 in fnuz
    with pytest.raises(TypeError, match="codes must be decoded"):
        A.ordinal(np.array([1, 2], dtype=np.uint8), "e4m3")


# ----------------------------------------------------------- ULP distance ----


@settings(max_examples=80, deadline=None)
@given(data=st.data())
def test_ulp_distance_is_the_oracle_difference(data):
    fmt = data.draw(S.formats(max_bits=16))
    n = data.draw(st.integers(1, 12))
    a = data.draw(st.lists(S.values(fmt), min_size=n, max_size=n))
    b = data.draw(st.lists(S.values(fmt), min_size=n, max_size=n))
    got = A.ulp_distance(np.array(a), np.array(b), fmt)
    for x, y, d in zip(a, b, got.tolist(), strict=True):
        if math.isnan(x) and math.isnan(y):
            assert d == 0
        elif math.isnan(x) or math.isnan(y):
            assert d == math.inf
        else:
            assert d == oracle_ordinal(x, fmt) - oracle_ordinal(y, fmt)


def test_ulp_distance_facts():
    e4 = A.ulp_distance(np.array([448, -0.0, 2.0**-9, 1.0], np.float32), np.array([416, 0.0, -(2.0**-9), 448]),
                        "e4m3")
    assert e4.tolist() == [1, 0, 2, -(126 - 56)]
    e5 = A.ulp_distance(np.array([np.inf, np.nan, 1.0, -np.inf]), np.array([57344, 1.0, np.nan, np.inf]), "e5m2")
    assert e5.tolist() == [1, math.inf, math.inf, -2 * 124]  # 123 finite magnitudes + Inf each side
    assert A.ulp_distance(np.array([1.0078125]), np.array([1.0]), "bf16").tolist() == [1]
    assert A.ulp_distance(np.array([1.0]), np.array([0.5]), "fp16").tolist() == [1024]
    assert A.ulp_distance(np.array([2.0**-126]), np.array([2.0**-127]), "e8m0").tolist() == [1]
    nosub = pl.Format(4, 3, has_subnormals=False)          # the zero-exponent codes are one zero
    assert A.ulp_distance(np.array([2.0**-6, -(2.0**-6)]), np.array([0.0, 0.0]), nosub).tolist() == [1, -1]


def test_ulp_distance_fp64_and_broadcasting():
    one = 1023 * 2**52                                    # the ordinal of 1.0 is its code
    x = np.array([1.0, np.nextafter(1.0, 2.0), 5e-324, -5e-324, -np.finfo(np.float64).max])
    assert A.ulp_distance(x, 1.0, "fp64").tolist() == [0, 1, float(1 - one), float(-1 - one),
                                                        float(-(2**63 - 2**52 - 1) - one)]
    assert A.ulp_distance(np.array([np.nextafter(1.0, 2.0)]), np.array([1.0]), "fp64").tolist() == [1]


def test_ulp_distance_names_the_bad_argument():
    with pytest.raises(ValueError, match="expected holds 0.1"):
        A.ulp_distance(np.array([1.0]), np.array([0.1]), "bf16")
    with pytest.raises(ValueError, match="actual holds"):
        A.ulp_distance(np.array([0.1]), np.array([1.0]), "bf16")


# ------------------------------------------------------ ulp and error in ulps ----


@pytest.mark.parametrize("fmt", SMALL + [pl.get_format("fp32")], ids=lambda f: f.name)
def test_ulp_matches_the_oracle_grid(fmt):
    """Within the format's binades, ulp(x) is the spacing of the oracle's extended grid."""
    rng = np.random.default_rng(7)
    e = rng.integers(fmt.emin - fmt.mantissa_bits - 2, fmt.emax + 1, 300)
    x = np.ldexp(rng.uniform(1, 2, 300), e.astype(np.int32)) * rng.choice([-1, 1], 300)
    x = np.concatenate([x, [0.0, fmt.smallest_subnormal, fmt.smallest_normal, fmt.max]])
    from oracle import neighbours
    got = A.ulp(x, fmt)
    for xi, g in zip(x.tolist(), got.tolist(), strict=True):
        assert g == neighbours(abs(Fraction(xi)), fmt)[3] == oracle_ulp(xi, fmt), xi


def test_ulp_clamps_and_specials():
    e4m3 = pl.get_format("e4m3")
    assert A.ulp(np.array([464.0, 1e6, 0.0, 2.0**-12, 1.0]), e4m3).tolist() == [32, 32, 2.0**-9, 2.0**-9, 0.125]
    assert np.isnan(A.ulp(np.array([np.inf, np.nan]), e4m3)).all()
    exact = np.array([Fraction(3, 2**10), Fraction(10**40)], dtype=object)
    assert A.ulp(exact, e4m3).tolist() == [2.0**-9, 32]


@settings(max_examples=150, deadline=None)
@given(fmt=S.formats(), x=st.floats(allow_nan=False, allow_infinity=False),
       y=st.floats(allow_nan=False, allow_infinity=False))
def test_error_ulps_is_exact_error_correctly_rounded(fmt, x, y):
    expected = to_float((Fraction(y) - Fraction(x)) / oracle_ulp(x, fmt))
    assert A.error_ulps(np.array([y]), np.array([x]), fmt).tolist() == [expected]


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_error_ulps_of_correct_rounding(data):
    """A correctly rounded cast is within half an ulp (nearest) / one ulp (directed) of its input."""
    fmt = data.draw(S.formats(max_bits=16).filter(lambda f: f.signed and f.has_zero and f.has_subnormals))
    dtype = np.float32 if pl.rounding.fits_float32(fmt) else np.float64
    mode = data.draw(st.sampled_from(DETERMINISTIC))
    xs = data.draw(st.lists(S.cast_inputs(fmt, dtype, allow_nan=False, allow_infinity=False), min_size=1,
                            max_size=10))
    xs = [x for x in xs if abs(x) <= fmt.max] or [0.0]
    ys = [oracle_round(x, fmt, mode, subnormals=True) for x in xs]
    got = A.error_ulps(np.array(ys), np.array(xs), fmt)
    for x, yv, g in zip(xs, ys, got.tolist(), strict=True):
        exact = (Fraction(yv) - Fraction(x)) / oracle_ulp(x, fmt)
        assert g == float(exact)
        assert abs(exact) <= (Fraction(1, 2) if mode in ("rne", "rna") else 1)


def test_error_ulps_specials_and_exact_references():
    got = A.error_ulps(np.array([np.inf, 448, np.nan, np.nan, np.inf, -np.inf]),
                       np.array([np.inf, np.inf, np.nan, 1.0, 1.0, 1.0]), "e5m2")
    assert got.tolist() == [0, -math.inf, 0, math.inf, math.inf, -math.inf]
    ref = np.array([Fraction(1) + Fraction(1, 2**30), Fraction(-3, 7)], dtype=object)
    got = A.error_ulps(np.array([1.0, -0.4296875]), ref, "bf16")
    assert got.tolist() == [float(-Fraction(1, 2**30) / Fraction(1, 128)),
                            float((Fraction(-0.4296875) + Fraction(3, 7)) / Fraction(1, 2**9))]


def test_error_ulps_beyond_float64_range():
    big = np.finfo(np.float64).max
    got = A.error_ulps(np.array([big]), np.array([-big]), "fp64")
    assert got.tolist() == [float(Fraction(2) * Fraction(big) / Fraction(2) ** (1023 - 52))]


# -------------------------------------------------------- relative error ----


@settings(max_examples=150, deadline=None)
@given(x=st.floats(allow_nan=False, allow_infinity=False), y=st.floats(allow_nan=False, allow_infinity=False))
def test_relative_error_within_two_float64_ulps(x, y):
    got = A.relative_error(np.array([y]), np.array([x])).tolist()[0]
    if x == 0:
        assert got == (0.0 if y == 0 else math.inf)
        return
    exact = abs(Fraction(y) - Fraction(x)) / abs(Fraction(x))
    if exact > Fraction(np.finfo(np.float64).max):
        assert got == math.inf
    else:
        assert abs(Fraction(got) - exact) <= exact * Fraction(1, 2**51)
    exact_path = A.relative_error(np.array([y]), np.array([Fraction(x)], dtype=object)).tolist()[0]
    assert exact_path == to_float(exact)


def test_relative_error_rules():
    got = A.relative_error(np.array([0.0, -0.0, 1.0, np.nan, np.nan, np.inf, np.inf, 2.0, 1.5]),
                           np.array([-0.0, 0.0, 0.0, np.nan, 1.0, np.inf, -np.inf, np.inf, 1.0]))
    assert got.tolist() == [0, 0, math.inf, 0, math.inf, 0, math.inf, math.inf, 0.5]


# ------------------------------------------------------ bits of agreement ----


def test_bits_of_agreement_definition():
    x = np.array([1.0, 1.0, 1.0, 3.0, 1.0])
    y = np.array([1.0, 1.0 + 2.0**-5, 1.0 + 2.0**-20, 0.0, 2.5])
    assert A.bits_of_agreement(y, x, 8).tolist() == [8, 5, 8, 0, 0]
    assert A.bits_lost(y, x, 8).tolist() == [0, 3, 0, 8, 8]
    assert A.bits_of_agreement(y, x, "bf16").tolist() == [8, 5, 8, 0, 0]
    # between the ends it is -log2 of the relative error (libm's log2 is faithful, not exact)
    assert A.bits_of_agreement(np.array([1.0 + 3 * 2.0**-7]), np.array([1.0]), 24).tolist() == \
        [pytest.approx(7 - math.log2(3), rel=2**-50)]
    with pytest.raises(ValueError, match="precision=0"):
        A.bits_of_agreement(x, x, 0)


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_correct_rounding_loses_no_bits(data):
    """|round(x) - x| <= 2^-p |x| in the normal range, so every nearest result keeps all p bits."""
    fmt = data.draw(S.formats(max_bits=16))
    assume(fmt.max >= fmt.smallest_normal)      # e.g. exponent_bits=1 with the top binade taken by NaN: no normals
    mode = data.draw(st.sampled_from(["rne", "rna"]))
    xs = data.draw(st.lists(st.floats(fmt.smallest_normal, fmt.max), min_size=1, max_size=10))
    ys = [oracle_round(x, fmt, mode) for x in xs]
    assert A.bits_lost(np.array(ys), np.array(xs), fmt).tolist() == [0.0] * len(xs)


# ---------------------------------------------------------------- summary ----


def test_summarize():
    rng = np.random.default_rng(3)
    e = rng.standard_normal(1001)
    s = A.summarize(e)
    assert s.count == 1001 and s.max == float(np.abs(e).max())
    assert s.mean == float(sum(Fraction(abs(v)) for v in e.tolist())) / 1001
    assert A.summarize(np.array([])) == A.ErrorSummary(0, None, None)
    assert A.summarize(np.array([1.0, np.inf])).mean == math.inf
    assert math.isnan(A.summarize(np.array([1.0, np.nan])).max)


# ------------------------------------------------- overflow and underflow ----


def widened(fmt):
    """The oracle's format with one more exponent bit: the grid continued upward."""
    return dataclasses.replace(of(fmt), e=of(fmt).e + 1)


def oracle_overflows(x: float, fmt, mode: str) -> bool:
    """Rounded with an unbounded exponent, |x| exceeds max: past the widened format's range too
    (its Inf or NaN), or between the two."""
    r = oracle_round(x, widened(fmt), mode)
    return abs(x) > fmt.max and not abs(r) <= fmt.max


def step(x: float, direction: float) -> float:
    return float(np.nextafter(x, direction))


@pytest.mark.parametrize("mode", DETERMINISTIC)
@pytest.mark.parametrize("fmt", [f for f in SMALL if f.exponent_bits < 11], ids=lambda f: f.name)
def test_overflow_threshold(fmt, mode):
    t = A.overflow_threshold(fmt, mode)
    inside, outside = (step(t.value, 0), t.value) if t.inclusive else (t.value, step(t.value, math.inf))
    assert not oracle_overflows(inside, fmt, mode) and oracle_overflows(outside, fmt, mode), t


def test_overflow_threshold_facts():
    assert A.overflow_threshold("e4m3") == A.Threshold(464.0, False)
    assert A.overflow_threshold("fp16") == A.Threshold(65520.0, True)
    assert A.overflow_threshold("e4m3", "rtz") == A.Threshold(480.0, True)
    assert A.overflow_threshold("e4m3", "rup") == A.Threshold(448.0, False)
    assert A.overflow_threshold("e4m3", "sr") == A.Threshold(448.0, False)
    assert A.overflow_threshold("fp16").describe("overflow") == ">= 65520.0"


@pytest.mark.parametrize("subnormals", [True, False])
@pytest.mark.parametrize("mode", DETERMINISTIC)
@pytest.mark.parametrize("fmt", SMALL, ids=lambda f: f.name)
def test_underflow_threshold(fmt, mode, subnormals):
    t = A.underflow_threshold(fmt, mode, subnormals)
    zero = lambda x: oracle_round(x, fmt, mode, subnormals=subnormals) == 0  # noqa: E731
    if t is None:
        assert not any(zero(x) for x in (5e-324, fmt.smallest_subnormal / 3, fmt.smallest_normal / 2))
        return
    below, above = (t.value, step(t.value, math.inf)) if t.inclusive else (step(t.value, 0), t.value)
    assert zero(below) and not zero(above), t
    if fmt.has_zero:
        flush = A.underflow_threshold(fmt, mode, subnormals, flush_inputs=True)
        assert oracle_round(step(flush.value, 0), fmt, mode, subnormals=subnormals, flush_inputs=True) == 0
        assert oracle_round(flush.value, fmt, mode, subnormals=subnormals, flush_inputs=True) != 0


def test_underflow_threshold_facts():
    assert A.underflow_threshold("fp16") == A.Threshold(2.0**-25, True)
    assert A.underflow_threshold("fp16", "rna") == A.Threshold(2.0**-25, False)
    assert A.underflow_threshold("fp16", "rtz") == A.Threshold(2.0**-24, False)
    assert A.underflow_threshold("fp16", "rup") is None
    assert A.underflow_threshold("e8m0") is None
    assert A.underflow_threshold("e4m3", subnormals=False) == A.Threshold(7.5 * 2.0**-9, False)


@settings(max_examples=80, deadline=None)
@given(data=st.data())
def test_overflowed_matches_the_oracle(data):
    fmt = data.draw(S.formats(max_bits=16).filter(lambda f: f.exponent_bits < 10))
    dtype = np.float32 if pl.rounding.fits_float32(fmt) else np.float64
    mode = data.draw(st.sampled_from(DETERMINISTIC))
    policy = data.draw(st.sampled_from(["default", "saturate", "saturate_finite"]))
    xs = data.draw(st.lists(S.cast_inputs(fmt, dtype, allow_nan=False), min_size=1, max_size=12))
    if not fmt.signed:
        xs = [abs(x) for x in xs]
    got = A.overflowed(np.array(xs, dtype), pl.rounding.make_round_spec(fmt, mode, policy))
    assert got.tolist() == [math.isfinite(x) and oracle_overflows(x, fmt, mode) for x in xs]


def test_overflowed_stochastic_agrees_with_inf_results():
    x = np.linspace(65000, 66000, 2001)
    for mode in ("sr", "sr_equal"):
        spec = pl.rounding.make_round_spec("fp16", mode, seed=5)
        y = pl.round(x, "fp16", rounding=mode, seed=5, backend="numpy")
        assert (A.overflowed(x, spec) == np.isinf(y)).all()
        assert 0 < A.overflowed(x, spec).sum() < (x > 65504).sum()


def test_underflowed():
    assert A.underflowed(np.array([0.0, 1e-9, 1e-9, np.inf]), np.array([0.0, 0.0, 2.0**-24, np.inf])).tolist() == \
        [False, True, False, False]


# ------------------------------------------------------------- cast error ----


@pytest.mark.parametrize("fmt, mode", [("e4m3", "rne"), ("fp16", "rtz"), ("bf16", "rna"), ("fp4_e2m1", "rne"),
                                       ("e5m2", "rup")])
def test_cast_error_against_the_oracle(fmt, mode):
    fmt = pl.get_format(fmt)
    rng = np.random.default_rng(11)
    exponents = rng.integers(fmt.emin - fmt.mantissa_bits - 3, min(fmt.emax + 3, 128), 400).astype(np.int32)
    x = (np.ldexp(rng.uniform(1, 2, 400), exponents) * rng.choice([-1, 1], 400)).astype(np.float32)
    x[0] = np.finfo(np.float32).max
    c = A.cast_error(x, fmt, mode)
    ys = [oracle_round(v, fmt, mode) for v in x.tolist()]
    over = [oracle_overflows(v, fmt, mode) for v in x.tolist()]
    kept = [(v, yv) for v, yv, o in zip(x.tolist(), ys, over, strict=True) if not o]
    rel = [abs(Fraction(yv) - Fraction(v)) / abs(Fraction(v)) for v, yv in kept]
    ulps = [abs(Fraction(yv) - Fraction(v)) / oracle_ulp(v, fmt) for v, yv in kept]
    assert c.n == 400 and c.overflowed == sum(over) > 0 and c.in_range == len(kept)
    assert c.underflowed == sum(1 for v, yv in zip(x.tolist(), ys, strict=True) if yv == 0 and v != 0) > 0
    assert c.relative.max == float(max(rel))
    assert c.ulps.max == float(max(ulps))
    assert c.ulps.mean == float(sum(ulps)) / len(ulps)
    assert c.ulps.max <= (0.5 if mode in ("rne", "rna") else 1)
    assert c.overflow_threshold == A.overflow_threshold(fmt, mode)
    assert c.overflow_fraction == c.overflowed / 400


def test_cast_error_rejects_non_finite():
    with pytest.raises(ValueError, match="finite"):
        A.cast_error(np.array([1.0, np.nan]), "bf16")
