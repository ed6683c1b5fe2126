"""Hypothesis strategies: values are values of the format (the enumerated oracle list),
every value is reachable, the edge values and the rounding boundaries show up, flags hold."""

from __future__ import annotations

import dataclasses
import math
from fractions import Fraction
from functools import cache

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from oracle import code_values, finite_values

import precisionlab as pl
from precisionlab.analysis import representable
from precisionlab.matmul import C_MODES, ORDER_KINDS, STEPS
from precisionlab.testing import strategies as S

FAST = settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])


@cache
def value_set(fmt) -> frozenset:
    return frozenset(finite_values(fmt))


def in_format(v: float, fmt) -> bool:
    if math.isnan(v):
        return any(isinstance(c, float) and math.isnan(c) for c in code_values(fmt))
    if math.isinf(v):
        return any(c == v for c in code_values(fmt) if isinstance(c, float))
    return Fraction(v) in value_set(fmt)


@pytest.mark.parametrize("name", ["e4m3", "fp4_e2m1", "e8m0", "e4m3fnuz", "binary8p3u", "fp16"])
def test_values_are_values_of_the_format(name):
    fmt = pl.get_format(name)
    seen = []

    @FAST
    @given(S.values(fmt))
    def collect(v):
        seen.append(v)

    collect()
    assert all(in_format(v, fmt) for v in seen)
    assert representable(np.array(seen), fmt).all()
    if fmt.bits <= 4:                                   # every value is reachable
        reachable = {float(v) for v in code_values(fmt) if not (isinstance(v, float) and math.isnan(v))}
        assert reachable <= set(seen)


def test_edge_values():
    e4m3 = S.edge_values("e4m3")
    for v in (0.0, 2.0**-9, 2.0**-6, 448.0, -448.0, 1.0, 7 * 2.0**-9, 416.0):
        assert v in e4m3
    assert any(math.isnan(v) for v in e4m3) and math.inf not in e4m3
    assert any(v == 0 and math.copysign(1, v) < 0 for v in e4m3)
    fnuz = S.edge_values("e4m3fnuz")                     # no -0 there
    assert not any(v == 0 and math.copysign(1, v) < 0 for v in fnuz) and 240.0 in fnuz
    assert math.inf in S.edge_values("fp16") and -math.inf in S.edge_values("fp16")
    assert all(v > 0 or math.isnan(v) for v in S.edge_values("e8m0"))


@FAST
@given(v=S.values("fp16", allow_nan=False, allow_infinity=False, allow_subnormal=False, allow_negative_zero=False))
def test_value_flags(v):
    assert math.isfinite(v)
    assert not 0 < abs(v) < 2.0**-14
    assert not (v == 0 and math.copysign(1, v) < 0)


def test_cast_inputs_reach_the_boundaries():
    fmt = pl.get_format("e4m3")
    vals = [float(v) for v in finite_values(fmt)]
    ties = {(a + b) / 2 for a, b in zip(vals, vals[1:], strict=False)} | {464.0}
    seen = []

    @FAST
    @given(S.cast_inputs(fmt, np.float32))
    def collect(v):
        assert float(np.float32(v)) == v or math.isnan(v)
        seen.append(v)

    collect()
    assert any(abs(v) in ties for v in seen)
    assert any(448 < abs(v) < 512 for v in seen)                    # the overflow band
    assert any(0 < abs(v) < 2.0**-6 for v in seen)                   # subnormal range
    assert any(math.isnan(v) for v in seen) and any(v < 0 for v in seen)
    assert any(float(np.nextafter(np.float32(t), np.float32(np.inf))) == abs(v) for t in ties for v in seen)


@FAST
@given(v=S.cast_inputs("fp4_e2m1", np.float64, allow_infinity=False))
def test_cast_inputs_respect_the_format(v):
    assert not math.isnan(v) and not math.isinf(v)            # fp4 has no NaN


@FAST
@given(v=S.cast_inputs("e8m0"))
def test_cast_inputs_for_unsigned_formats_are_not_negative(v):
    assert math.isnan(v) or math.copysign(1, v) > 0


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_arrays(data):
    fmt = data.draw(S.formats(max_bits=16))
    a = data.draw(S.arrays(fmt, (2, 3)))
    assert a.shape == (2, 3) and a.dtype == pl.rounding.decode_dtype(fmt)
    assert representable(a, fmt).all()
    b = data.draw(S.arrays(fmt, 4, elements=S.cast_inputs(fmt, np.float64), dtype=np.float64))
    assert b.shape == (4,) and b.dtype == np.float64


def test_formats():
    drawn = []

    @FAST
    @given(S.formats(max_bits=10))
    def collect(f):
        drawn.append(f)

    collect()
    assert all(isinstance(f, pl.Format) and f.bits <= 10 for f in drawn)
    assert any(f not in pl.formats.values() for f in drawn) and any(f in pl.formats.values() for f in drawn)
    assert len({(f.exponent_bits, f.mantissa_bits, f.nan, f.has_inf, f.signed) for f in drawn}) > 10
    only_ml = []

    @FAST
    @given(S.formats(with_ml_dtype=True))
    def collect_ml(f):
        only_ml.append(f)

    collect_ml()
    assert all(f.ml_dtype is not None for f in only_ml)
    with pytest.raises(ValueError, match="nothing to draw"):
        S.formats(catalogue_formats=False, custom=False)


# ------------------------------------------------------------------ specs ----


def test_specs_are_valid_and_cover_the_model():
    drawn = []

    @settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
    @given(S.specs())
    def collect(spec):
        drawn.append(spec)

    collect()
    fields = [f.name for f in dataclasses.fields(pl.MatmulSpec)]
    for spec in drawn:
        assert isinstance(spec, pl.MatmulSpec)
        assert pl.MatmulSpec(**{f: getattr(spec, f) for f in fields}) == spec   # it passes its own validator
        assert not spec.stochastic and not spec.has_scales
    assert {s.step for s in drawn} == set(STEPS)
    assert {s.order.kind for s in drawn} == set(ORDER_KINDS)
    assert {s.c_mode for s in drawn if s.step == "fused"} == set(C_MODES)
    assert any(s.promote_every is not None for s in drawn) and any(s.product_format is not None for s in drawn)
    assert any(s.accumulator not in pl.formats.values() for s in drawn)          # custom accumulators
    assert any(s in pl.presets.values() for s in drawn) and any(s.name == "random" for s in drawn)


def test_specs_options():
    def draw_all(strategy, n=150):
        out = []

        @settings(max_examples=n, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
        @given(strategy)
        def collect(spec):
            out.append(spec)

        collect()
        return out

    only_presets = draw_all(S.specs(custom=False, with_scales=True, stochastic=True), 400)
    assert all(s.name in pl.presets for s in only_presets)
    assert {s.name for s in only_presets} == set(pl.presets)                 # every preset, deepseek_fp8 too
    assert any(s.stochastic for s in draw_all(S.specs(presets=False, stochastic=True)))
    fp8 = draw_all(S.specs(input_formats=("e4m3", "e5m2")))
    assert all({s.a_format.name, s.effective_b_format.name} <= {"e4m3", "e5m2"} for s in fp8)
    assert any(s.name == "h100_e4m3" or s.name == "b200_e5m2" for s in fp8)
    with pytest.raises(ValueError, match="nothing to draw"):
        S.specs(presets=False, custom=False)
    with pytest.raises(ValueError, match="e9m9"):
        S.specs(input_formats=("e9m9",))


@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_every_drawn_spec_runs_and_the_backends_agree(data):
    """The use the strategy is for: a property over all specs -- here that pl.matmul accepts
    every drawn spec and the Numba backend gives the NumPy reference's bits."""
    from precisionlab.testing import assert_bitwise_equal

    spec = data.draw(S.specs(stochastic=True))
    k = data.draw(st.integers(1, 40))
    flags = dict(allow_nan=False, allow_infinity=False)
    a = data.draw(S.arrays(spec.a_format, (2, k), dtype=np.float64, **flags))
    b = data.draw(S.arrays(spec.effective_b_format, (k, 3), dtype=np.float64, **flags))
    seed = 7 if spec.stochastic else None
    with np.errstate(all="ignore"):
        ref = pl.matmul(a, b, spec, seed=seed, backend="numpy")
        fast = pl.matmul(a, b, spec, seed=seed, backend="numba")
    assert ref.shape == (2, 3)
    assert_bitwise_equal(fast, ref, spec.output_format)
