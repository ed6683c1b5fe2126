"""pl.matmul and MatmulSpec (DESIGN §3, §6): validation, the NumPy reference against the
independent Fraction oracle of tests/matmul_oracle.py, special values, textbook facts."""

from __future__ import annotations

import dataclasses
import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from matmul_oracle import check_against_oracle, round_fraction, same
from oracle import oracle_round

import precisionlab as pl
from precisionlab.backends import numpy_backend as ref
from precisionlab.matmul import MatmulSpec, Order, rounding_events
from precisionlab.random import splitmix64
from precisionlab.rounding import make_round_spec


def mm(a, b, spec, **kw):
    return pl.matmul(np.asarray(a, np.float64), np.asarray(b, np.float64), spec, backend="numpy", **kw)


# ---- the exact rounding helper of the reference, against tests/oracle.py ----------------------

ROUND_FORMATS = ["fp32", "fp16", "bf16", "e4m3", "e5m2", "e4m3fnuz", "e3m4", "tf32", "fp6_e2m3", "fp4_e2m1",
                 "binary8p3"]
MODES = ["rne", "rna", "rtz", "rup", "rdn", "rto", "sr", "sr_equal"]


def _R(mode: str, seed: int, counter: int, nbits: int = 64) -> int | None:
    if mode == "sr":
        return splitmix64(seed, counter) >> (64 - nbits)
    if mode == "sr_equal":
        return splitmix64(seed, counter) >> 63
    return None


@settings(max_examples=400, deadline=None)
@given(fmt=st.sampled_from(ROUND_FORMATS), mode=st.sampled_from(MODES),
       overflow=st.sampled_from(["default", "saturate", "saturate_finite"]), subnormals=st.booleans(),
       x=st.floats(allow_nan=False, width=64), counter=st.integers(0, 2**40), nbits=st.integers(1, 64))
def test_round_exact_matches_the_oracle_on_floats(fmt, mode, overflow, subnormals, x, counter, nbits):
    spec = make_round_spec(fmt, mode, overflow, subnormals, seed=7 if mode.startswith("sr") else None,
                           sr_bits=nbits if mode == "sr" else None)
    got = ref.round_exact(ref.exact(x) if math.isfinite(x) else x, spec, counter)
    want = oracle_round(x, pl.get_format(fmt), mode, overflow, subnormals, R=_R(mode, 7, counter, spec.sr_bits),
                        sr_bits=spec.sr_bits)
    assert same(got, want), (x, got, want)


@settings(max_examples=400, deadline=None)
@given(fmt=st.sampled_from(["fp32", "fp16", "bf16", "e4m3", "e5m2", "e8m13"]), mode=st.sampled_from(MODES),
       n=st.integers(-(2**90), 2**90), e=st.integers(-200, 60), counter=st.integers(0, 2**40),
       subnormals=st.booleans())
def test_round_exact_matches_the_oracle_on_wide_values(fmt, mode, n, e, counter, subnormals):
    """Values with up to 90 significant bits, far from any float: the accumulator's case."""
    fmt = pl.presets["h100_e4m3"].accumulator if fmt == "e8m13" else pl.get_format(fmt)
    spec = make_round_spec(fmt, mode, subnormals=subnormals, seed=11 if mode.startswith("sr") else None)
    got = ref.round_exact(ref.Exact(n, e, n < 0), spec, counter)
    want = round_fraction(Fraction(n) * Fraction(2) ** e, fmt, mode, R=_R(mode, 11, counter), subnormals=subnormals)
    assert same(got, want), (n, e, got, want)


# ---- MatmulSpec validation: one validator, errors name the parameter ---------------------------

@pytest.mark.parametrize("kwargs, param", [
    ({"step": "fused", "k_fused": 0}, "k_fused"),
    ({"step": "fused", "k_fused": 4, "n_frac": -1}, "n_frac"),
    ({"step": "ieee", "k_fused": 4}, "k_fused"),
    ({"step": "tree"}, "step"),
    ({"c_mode": "middle"}, "c_mode"),
    ({"align_rounding": "rne"}, "align_rounding"),
    ({"order": "zigzag"}, "order"),
    ({"order": "lanes(3)"}, "lanes"),
    ({"order": "interleaved(0)"}, "interleaved"),
    ({"order": "sequential(4)"}, "sequential"),
    ({"step": "fused", "k_fused": 4, "order": "blocked(6)"}, "blocked"),
    ({"step": "fused", "k_fused": 4, "promote_every": 6}, "promote_every"),
    ({"promote_every": 0}, "promote_every"),
    ({"a_format": "fp7"}, "format"),
    ({"accumulator": "e8m0"}, "accumulator"),
    ({"accumulator": "fp4_e2m1"}, "accumulator"),
    ({"output_format": "fp6_e3m2"}, "output_format"),
    ({"step_rounding": "nearest_up"}, "step_rounding"),
    ({"output_rounding": "x"}, "output_rounding"),
    ({"output_overflow": "wrap"}, "output_overflow"),
    ({"input_rounding": "sr"}, "input_rounding"),
    ({"scale_at": "end"}, "scale_at"),
    ({"a_scale_block": (0, 32)}, "a_scale_block"),
    ({"b_scale_block": (32,)}, "b_scale_block"),
    ({"a_scale_block": (1, 128), "scale_at": "promotion"}, "a_scale_block"),
    ({"step": "fused", "k_fused": 8, "n_frac": 24, "c_mode": "late_rd"}, "late_n_frac"),
])
def test_spec_validation_names_the_parameter(kwargs, param):
    with pytest.raises(ValueError, match=param):
        MatmulSpec(**kwargs)


@pytest.mark.parametrize("kwargs, param", [({"k_fused": 2.0}, "k_fused"), ({"input_subnormals": 1}, "input_subnormals"),
                                           ({"n_frac": "24"}, "n_frac"), ({"order": 4}, "order")])
def test_spec_type_errors_name_the_parameter(kwargs, param):
    with pytest.raises(TypeError, match=param):
        MatmulSpec(**kwargs)


def test_spec_is_frozen_normalised_data():
    s = MatmulSpec(a_format="half", step="FUSED", k_fused=4, n_frac=23, order="Lanes(8)", step_rounding="toward_zero")
    assert s.a_format is pl.get_format("fp16") and s.step == "fused"
    assert s.order == Order("lanes", 8) and str(s.order) == "lanes(8)"
    assert s.step_rounding is pl.Rounding.RTZ
    assert s.effective_b_format is s.a_format and s.effective_c_format is s.output_format
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.k_fused = 8
    assert dataclasses.replace(s, name="x", source="y") == s          # name/source are labels, not semantics
    assert dataclasses.replace(s, n_frac=24) != s


def test_order_parse_round_trips():
    for text in ("sequential", "pairwise", "interleaved(4)", "lanes(64)", "blocked(256)"):
        assert str(Order.parse(text)) == text
        assert Order.parse(Order.parse(text)) == Order.parse(text)


# ---- front-end validation --------------------------------------------------------------------------

A2 = np.ones((2, 3), np.float32)
B2 = np.ones((3, 4), np.float32)
DS = pl.get_preset("deepseek_fp8")


@pytest.mark.parametrize("call, exc, words", [
    (lambda: pl.matmul(A2, np.ones((4, 4), np.float32), "fp32_sequential"), ValueError, "K mismatch"),
    (lambda: pl.matmul(np.ones(3, np.float32), B2, "fp32_sequential"), ValueError, "2 dimensions"),
    (lambda: pl.matmul(np.ones((2, 2, 3)), np.ones((3, 3, 4)), "fp32_sequential"), ValueError, "batch"),
    (lambda: pl.matmul(A2.astype(np.int32), B2, "fp32_sequential"), TypeError, "a has dtype int32"),
    (lambda: pl.matmul(A2, B2, "fp32_sequential", c=np.ones((3, 4))), ValueError, "c has shape"),
    (lambda: pl.matmul(A2, B2, "fp32_sequential", a_scale=np.ones((1, 1))), ValueError, "a_scale_block"),
    (lambda: pl.matmul(A2, B2, DS, b_scale=np.ones((1, 1))), ValueError, "a_scale is required"),
    (lambda: pl.matmul(A2, B2, DS, a_scale=np.ones((2, 2)), b_scale=np.ones((1, 1))), ValueError, "a_scale has shape"),
    (lambda: pl.matmul(A2, B2, DS, a_scale=np.ones((2, 1)), b_scale=np.ones((2, 1))), ValueError, "b_scale has shape"),
    (lambda: pl.matmul(A2, B2, dataclasses.replace(pl.get_preset("fp32_sequential"), step_rounding="sr")),
     ValueError, "seed"),
    (lambda: pl.matmul(A2, B2, "h100_fp17"), ValueError, "h100_fp16"),
    (lambda: pl.matmul(A2, B2, 3), TypeError, "spec"),
    (lambda: pl.matmul(A2, B2, "fp32_sequential", backend="fortran"), ValueError, "backend"),
])
def test_front_end_errors_name_the_argument(call, exc, words):
    with pytest.raises(exc, match=words):
        call()


def test_broadcasting_follows_np_matmul_and_dtype():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((2, 1, 3, 5)).astype(np.float32)
    b = rng.standard_normal((4, 5, 2)).astype(np.float32)
    c = rng.standard_normal(2).astype(np.float32)
    spec = pl.get_preset("a100_bf16")
    d = pl.matmul(a, b, spec, c=c, backend="numpy")
    assert d.shape == np.matmul(a, b).shape == (2, 4, 3, 2) and d.dtype == np.float32
    for i in range(2):
        for j in range(4):
            assert np.array_equal(d[i, j], pl.matmul(a[i, 0], b[j], spec, c=c, backend="numpy"))
    f64 = dataclasses.replace(pl.get_preset("exact"), accumulator="fp64", output_format="fp64")
    assert pl.matmul(a, b, f64, backend="numpy").dtype == np.float64
    assert pl.matmul(np.zeros((2, 0)), np.zeros((0, 3)), "h100_fp16").tolist() == [[0.0] * 3] * 2


# ---- the reference against the independent oracle, on random specs -------------------------------

ACCUMULATORS = ["fp32", "fp16", "bf16", "e4m3", pl.Format(4, 5, name="e4m5")]


@st.composite
def specs(draw):
    step = draw(st.sampled_from(["ieee", "fused", "pairwise", "exact"]))
    k = 1 if step == "ieee" else draw(st.integers(1, 5))
    c_mode = draw(st.sampled_from(["early", "late_rn", "late_rd"])) if step == "fused" else "early"
    n_frac = draw(st.integers(0, 14)) if c_mode == "late_rd" else draw(st.none() | st.integers(0, 14))
    order = draw(st.sampled_from(["sequential", "pairwise", "interleaved", "lanes", "blocked"]))
    if order == "interleaved":
        order = f"interleaved({draw(st.integers(1, 4))})"
    elif order == "lanes":
        order = f"lanes({draw(st.sampled_from([1, 2, 4]))})"
    elif order == "blocked":
        order = f"blocked({k * draw(st.integers(1, 3))})"
    promote = draw(st.none() | st.integers(1, 3).map(lambda i: i * k))
    scaled = draw(st.sampled_from(["none", "operands", "promotion"]))
    blocks = {}
    if scaled != "none":
        if scaled == "operands":
            kb = draw(st.none() | st.integers(1, 4))
        else:                       # one scale per promotion chunk: a multiple of promote_every, or all of K
            kb = None if promote is None else draw(st.sampled_from([None, promote, 2 * promote]))
        blocks = {"a_scale_block": (draw(st.none() | st.integers(1, 2)), kb),
                  "b_scale_block": (kb, draw(st.none() | st.integers(1, 2))), "scale_at": scaled}
    a_fmt = draw(st.sampled_from(["fp16", "bf16", "e4m3", "e5m2"]))
    return MatmulSpec(
        a_format=a_fmt, b_format=draw(st.none() | st.sampled_from(["fp16", "e4m3", "e5m2"])),
        input_rounding=draw(st.sampled_from(["rne", "rtz"])), input_subnormals=draw(st.booleans()),
        product_format=draw(st.none() | st.sampled_from(["fp32", "bf16", "fp16"])),
        step=step, k_fused=k, n_frac=n_frac, align_rounding=draw(st.sampled_from(["rtz", "floor"])),
        c_mode=c_mode, ref_exp_floor=draw(st.none() | st.integers(-30, 4)),
        late_n_frac=draw(st.integers(0, 14)) if c_mode == "late_rd" else None,
        accumulator=draw(st.sampled_from(ACCUMULATORS)), step_rounding=draw(st.sampled_from(MODES)),
        accumulator_subnormals=draw(st.booleans()), order=order, promote_every=promote,
        c_format=draw(st.none() | st.sampled_from(["fp32", "fp16"])),
        output_format=draw(st.sampled_from(["fp32", "fp16", "bf16", "e5m2"])),
        output_rounding=draw(st.sampled_from(MODES)),
        output_overflow=draw(st.sampled_from(["default", "saturate", "saturate_finite"])),
        output_via=draw(st.none() | st.sampled_from(["fp16", "bf16"])), **blocks)


VALUES = st.one_of(
    st.floats(-8, 8, width=32),
    st.sampled_from([0.0, -0.0, 1.0, -1.0, 1.5, 3.0, 2.0**-14, 2.0**-20, -(2.0**-17), 2.0**-9, 240.0, 448.0,
                     57344.0, 60000.0, -60000.0, 1e-30]),
    st.floats(-(2.0**-12), 2.0**-12, width=32),
)
SCALES = st.sampled_from([1.0, 2.0, 0.5, 2.0**-10, 3.0, 0.1, 2.0**20, 1.25])


def draw_operands(data, M, N, K, values, with_c=True):
    a = np.array(data.draw(st.lists(values, min_size=M * K, max_size=M * K)), np.float32).reshape(M, K)
    b = np.array(data.draw(st.lists(values, min_size=K * N, max_size=K * N)), np.float32).reshape(K, N)
    c = np.array(data.draw(st.lists(values, min_size=M * N, max_size=M * N)), np.float32).reshape(M, N)
    return a, b, (c if with_c else None)


def draw_scales(data, spec, M, N, K):
    if spec.a_scale_block is None:
        return None, None
    ga = [math.ceil(M / (spec.a_scale_block[0] or M)), math.ceil(K / (spec.a_scale_block[1] or max(K, 1)))]
    gb = [math.ceil(K / (spec.b_scale_block[0] or max(K, 1))), math.ceil(N / (spec.b_scale_block[1] or N))]
    sa = np.array(data.draw(st.lists(SCALES, min_size=ga[0] * ga[1], max_size=ga[0] * ga[1])), np.float32)
    sb = np.array(data.draw(st.lists(SCALES, min_size=gb[0] * gb[1], max_size=gb[0] * gb[1])), np.float32)
    return sa.reshape(ga), sb.reshape(gb)


#: Small significands over a wide exponent range: alignment cuts, cancellation and carries.
SPREAD = st.one_of(
    st.builds(lambda s, m, e: s * m * 2.0**e, st.sampled_from([-1, 1]), st.integers(1, 31), st.integers(-20, 6)),
    st.sampled_from([0.0, -0.0, 1.0, -1.0, 1.5, -1.5, 2.0**-14, 3 * 2.0**-24]),
)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(spec=specs(), M=st.integers(1, 2), N=st.integers(1, 2), K=st.integers(0, 9), data=st.data(),
       with_c=st.booleans())
def test_reference_equals_the_oracle(spec, M, N, K, data, with_c):
    """Any spec: every parameter at once."""
    a, b, c = draw_operands(data, M, N, K, VALUES | SPREAD, with_c)
    sa, sb = draw_scales(data, spec, M, N, K)
    check_against_oracle(spec, a, b, c, sa, sb, data.draw(st.integers(0, 2**64 - 1)))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(c_mode=st.sampled_from(["early", "late_rn", "late_rd"]), k=st.integers(1, 6), n_frac=st.integers(0, 8),
       late=st.integers(0, 8), align=st.sampled_from(["rtz", "floor"]), floor=st.none() | st.integers(-12, 3),
       acc=st.sampled_from(["fp32", "fp16", "bf16", pl.Format(5, 6, name="e5m6")]), mode=st.sampled_from(MODES),
       inputs=st.sampled_from(["fp16", "bf16", "e5m2"]), K=st.integers(1, 13), data=st.data())
def test_fused_steps_equal_the_oracle(c_mode, k, n_frac, late, align, floor, acc, mode, inputs, K, data):
    """The block FMA in detail: alignment, cuts, e_ref floor, C early / late, two-stage AMD form."""
    spec = MatmulSpec(a_format=inputs, step="fused", k_fused=k, n_frac=n_frac, align_rounding=align, c_mode=c_mode,
                      ref_exp_floor=floor, late_n_frac=late, accumulator=acc, step_rounding=mode,
                      c_format="fp32", output_format="fp32")
    a, b, c = draw_operands(data, 1, 2, K, SPREAD)
    check_against_oracle(spec, a, b, c, None, None, 3)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(step=st.sampled_from(["ieee", "pairwise", "fused"]), k=st.integers(1, 3),
       order=st.sampled_from(["sequential", "pairwise", "interleaved(2)", "interleaved(3)", "lanes(2)", "lanes(4)",
                              "blocked(1)", "blocked(2)", "blocked(3)"]),
       acc=st.sampled_from(["fp16", "bf16", pl.Format(5, 3, name="e5m3")]), mode=st.sampled_from(["rne", "rtz", "rup"]),
       promote=st.none() | st.integers(1, 4), K=st.integers(0, 17), data=st.data())
def test_orders_and_promotion_equal_the_oracle(step, k, order, acc, mode, promote, K, data):
    """The step orders over K and promotion, with a low-precision accumulator that shows every order."""
    k = 1 if step == "ieee" else k
    if order.startswith("blocked"):
        order = f"blocked({int(order[8:-1]) * k})"
    spec = MatmulSpec(a_format="fp16", step=step, k_fused=k, n_frac=6, accumulator=acc, step_rounding=mode,
                      order=order, promote_every=None if promote is None else promote * k, c_format="fp32",
                      output_format="fp32")
    a, b, c = draw_operands(data, 1, 2, K, SPREAD)
    check_against_oracle(spec, a, b, c, None, None, 4)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(where=st.sampled_from(["operands", "promotion"]), promote=st.integers(1, 4), kb=st.integers(1, 3),
       rows=st.none() | st.integers(1, 2), cols=st.none() | st.integers(1, 2), step=st.sampled_from(["ieee", "fused"]),
       M=st.integers(1, 3), N=st.integers(1, 3), K=st.integers(0, 10), data=st.data())
def test_scales_equal_the_oracle(where, promote, kb, rows, cols, step, M, N, K, data):
    k = 1 if step == "ieee" else 2
    kblock = (kb * k if where == "operands" else kb * promote * k)
    spec = MatmulSpec(a_format="e4m3", b_format="e5m2", step=step, k_fused=k, n_frac=10, accumulator="bf16",
                      step_rounding="rtz", promote_every=promote * k, a_scale_block=(rows, kblock),
                      b_scale_block=(kblock, cols), scale_at=where, output_format="fp32")
    a, b, c = draw_operands(data, M, N, K, SPREAD.filter(lambda v: abs(v) <= 448))
    sa, sb = draw_scales(data, spec, M, N, K)
    check_against_oracle(spec, a, b, c, sa, sb, 5)


def test_two_stage_c_exponent_of_a_subnormal_c():
    """The second stage aligns C at E(C) = the accumulator's emin when C is subnormal there (MMA-Sim
    normalises at emin): with an fp16 accumulator, C = 2^-15 + 2^-17 is cut at 2^(-14-n_frac)."""
    spec = MatmulSpec(a_format="fp16", step="fused", k_fused=1, n_frac=2, c_mode="late_rd", late_n_frac=8,
                      accumulator="fp16", step_rounding="rne", c_format="fp32", output_format="fp32")
    a, b = np.zeros((1, 1), np.float32), np.zeros((1, 1), np.float32)
    c = np.array([[2.0**-15 + 2.0**-17]], np.float32)
    check_against_oracle(spec, a, b, c, None, None, 0)
    assert pl.matmul(a, b, spec, c=c, backend="numpy")[0, 0] == np.float32(2.0**-15)


# ---- exact: an independent Fraction sum rounded once -------------------------------------------------

@settings(max_examples=120, deadline=None)
@given(fmt=st.sampled_from(["fp16", "bf16", "e4m3", "fp32"]), out=st.sampled_from(["fp32", "fp16", "bf16"]),
       mode=st.sampled_from(["rne", "rtz", "rup", "rdn"]), M=st.integers(1, 3), N=st.integers(1, 3),
       K=st.integers(0, 12), data=st.data())
def test_exact_is_one_rounding_of_the_fraction_sum(fmt, out, mode, M, N, K, data):
    spec = dataclasses.replace(pl.get_preset("exact"), a_format=fmt, step_rounding=mode, output_format=out)
    vals = st.floats(-400, 400, width=32) | st.sampled_from([0.0, -0.0, 2.0**-24, 1e-10, 300.0])
    a = np.array(data.draw(st.lists(vals, min_size=M * K, max_size=M * K)), np.float32).reshape(M, K)
    b = np.array(data.draw(st.lists(vals, min_size=K * N, max_size=K * N)), np.float32).reshape(K, N)
    c = np.array(data.draw(st.lists(vals, min_size=M * N, max_size=M * N)), np.float32).reshape(M, N)
    ar, br = pl.round(a, fmt), pl.round(b, fmt)
    cr = pl.round(c, out)
    got = pl.matmul(a, b, spec, c=c, backend="numpy")
    for m in range(M):
        for n in range(N):
            terms = [float(ar[m, k]) * float(br[k, n]) for k in range(K)] + [float(cr[m, n])]
            exact_sum = sum((Fraction(float(ar[m, k])) * Fraction(float(br[k, n])) for k in range(K)),
                            Fraction(float(cr[m, n])))
            neg_zero = all(t == 0 and math.copysign(1, t) < 0 for t in terms)
            once = round_fraction(exact_sum, pl.get_format("fp32"), mode, negative_zero=neg_zero)
            want = round_fraction(Fraction(once), pl.get_format(out), "rne",
                                  negative_zero=math.copysign(1, once) < 0) if math.isfinite(once) else once
            assert same(float(got[m, n]), want)


@settings(max_examples=60, deadline=None)
@given(K=st.integers(0, 40), seed=st.integers(0, 2**32), out=st.sampled_from(["fp32", "bf16", "e4m3"]))
def test_exact_is_order_independent(K, seed, out):
    rng = np.random.default_rng(seed)
    a = (rng.standard_normal((2, K)) * np.exp2(rng.integers(-20, 20, (2, K)))).astype(np.float32)
    b = rng.standard_normal((K, 3)).astype(np.float32)
    spec = dataclasses.replace(pl.get_preset("exact"), output_format=out)
    perm = rng.permutation(K)
    d1 = pl.matmul(a, b, spec, backend="numpy")
    d2 = pl.matmul(a[:, perm], b[perm], spec, backend="numpy")
    assert np.array_equal(d1, d2, equal_nan=True)


# ---- textbook facts ----------------------------------------------------------------------------------

def test_fp16_accumulation_of_4096_ones_stops_at_2048():
    ones = np.ones((1, 4096), np.float32)
    assert mm(ones, ones.T, "fp16_accumulate")[0, 0] == 2048.0
    assert mm(ones, ones.T, "fp32_sequential")[0, 0] == 4096.0
    assert mm(ones, ones.T, "exact")[0, 0] == 4096.0
    assert mm(ones[:, :1000], ones[:, :1000].T, "bf16_accumulate")[0, 0] == 256.0
    # pairwise summation does not stagnate: every partial sum is a power of two
    pairwise = dataclasses.replace(pl.get_preset("fp16_accumulate"), order="pairwise")
    assert mm(ones, ones.T, pairwise)[0, 0] == 4096.0


def test_promote_every_bounds_the_error_growth_of_h100_e4m3():
    """Positive data: the 13-bit truncating accumulator loses ever more as K grows; promoting
    to fp32 every 128 elements keeps the error at the level of one 128-block."""
    rng = np.random.default_rng(1)
    h100 = pl.get_preset("h100_e4m3")
    promoted = dataclasses.replace(h100, promote_every=128, name="promoted")
    errors = {}
    for K in (256, 4096):
        a = pl.round(rng.uniform(0.5, 1.0, (1, K)).astype(np.float32), "e4m3")
        b = pl.round(rng.uniform(0.5, 1.0, (K, 2)).astype(np.float32), "e4m3")
        exact = (a.astype(np.float64) @ b.astype(np.float64))[0]
        for spec in (h100, promoted):
            d = pl.matmul(a, b, spec, backend="numpy")[0].astype(np.float64)
            errors[spec.name, K] = float(np.max(np.abs(d - exact) / exact))
    assert errors["h100_e4m3", 4096] > 8 * errors["h100_e4m3", 256]        # grows with K
    assert errors["promoted", 4096] < errors["h100_e4m3", 4096] / 8         # bounded by promotion
    assert errors["promoted", 4096] < 2.0**-12


# ---- special values and zeros -------------------------------------------------------------------------

SPECIAL_SPECS = ["fp32_sequential", "h100_fp16", "b200_e4m3", "mi300_fp16", "mi250_fp16", "exact", "torch_cpu_nt",
                 "fp16_accumulate"]
INF = math.inf


@pytest.mark.parametrize("name", SPECIAL_SPECS)
@pytest.mark.parametrize("a, b, c, want", [
    ([1.0, math.nan], [1.0, 1.0], 0.0, math.nan),        # NaN operand
    ([0.0, 1.0], [INF, 1.0], 0.0, math.nan),             # 0 * Inf
    ([INF, 1.0], [1.0, -INF], 0.0, math.nan),            # Inf - Inf between products
    ([INF, 1.0], [1.0, 1.0], -INF, math.nan),            # Inf - Inf with C
    ([INF, 2.0], [-1.0, 3.0], 5.0, -INF),                # an Inf wins
    ([1.0, 2.0], [3.0, 4.0], INF, INF),                  # C = Inf
    ([-0.0, 0.0], [1.0, -1.0], -0.0, -0.0),              # every term -0
    ([-0.0, 1.0], [1.0, 0.0], -0.0, 0.0),                # one +0 term
    ([1.0, 1.0], [1.0, -1.0], 0.0, 0.0),                 # exact cancellation gives +0
    ([1.0, 1.0], [1.0, -1.0], -0.0, 0.0),
])
def test_special_values(name, a, b, c, want):
    spec = pl.get_preset(name)
    if spec.a_format.name in ("e4m3", "e5m2") and not spec.a_format.has_inf and any(map(math.isinf, a + b)):
        spec = dataclasses.replace(spec, a_format="e5m2")        # e4m3 holds no Inf
    got = float(mm([a], np.array([b]).T, spec, c=np.array([[c]]))[0, 0])
    assert same(got, want), (got, want)


def test_c_none_is_plus_zero():
    assert same(float(mm([[-0.0]], [[1.0]], "fp32_sequential", c=np.array([[-0.0]]))[0, 0]), -0.0)
    assert same(float(mm([[-0.0]], [[1.0]], "fp32_sequential")[0, 0]), 0.0)


def test_overflow_follows_the_rounding_direction():
    big = [[60000.0, 60000.0]]
    ones = [[1.0], [1.0]]
    assert mm(big, ones, "fp16_accumulate")[0, 0] == INF                         # RNE overflows to Inf
    rtz16 = dataclasses.replace(pl.get_preset("fp16_accumulate"), step_rounding="rtz")
    assert mm(big, ones, rtz16)[0, 0] == 65504.0                                  # RTZ stays at max
    sat = dataclasses.replace(pl.get_preset("fp32_sequential"), output_format="fp16", output_overflow="saturate")
    assert mm(big, ones, sat)[0, 0] == 65504.0
    assert mm([[3e38, 3e38]], ones, "fp32_sequential")[0, 0] == INF
    # the tensor cores truncate (rtz): an exact sum beyond fp32's max is cut back to max, not Inf
    fmax = float(np.finfo(np.float32).max)
    assert mm([[60000.0]], [[60000.0]], "h100_fp16", c=np.array([[fmax]], np.float32))[0, 0] == fmax


# ---- stochastic rounding -------------------------------------------------------------------------------

def test_stochastic_step_rounding_is_seeded_and_unbiased():
    spec = dataclasses.replace(pl.get_preset("bf16_accumulate"), step_rounding="sr", output_rounding="sr")
    a = np.ones((16, 1024), np.float32)
    b = np.ones((1024, 1), np.float32)
    d1 = pl.matmul(a, b, spec, seed=5, backend="numpy")
    assert np.array_equal(d1, pl.matmul(a, b, spec, seed=5, backend="numpy"))
    assert not np.array_equal(d1, pl.matmul(a, b, spec, seed=6, backend="numpy"))
    rn = mm(a[:1], b, "bf16_accumulate")[0, 0]
    assert rn == 256.0                                                      # RNE stagnates at 2^8 ...
    assert abs(float(d1.mean()) - 1024.0) < 64.0                            # ... SR does not


def test_rounding_events_count():
    assert rounding_events(pl.get_preset("fp32_sequential"), 10) == 10 + 1
    assert rounding_events(pl.get_preset("h100_fp16"), 40) == 3 + 1
    assert rounding_events(pl.get_preset("mi250_fp16"), 8) == 8 + 1
    assert rounding_events(pl.get_preset("torch_cpu_nn"), 10) == 10 + 3 + 1 + 1
    assert rounding_events(pl.get_preset("exact"), 1000) == 2
    assert rounding_events(dataclasses.replace(pl.get_preset("fp16_accumulate"), output_via="bf16"), 0) == 2


# ---- backends: the Numba kernel equals the NumPy reference ----------------------------------------------

SPECIALS = st.sampled_from([math.nan, math.inf, -math.inf, 0.0, -0.0, 65504.0, -65504.0, 3e38, 2.0**-24,
                            -(2.0**-133), 1e-45, 448.0, 57344.0])


def bits(x: np.ndarray) -> np.ndarray:
    return x.view(np.uint32 if x.dtype == np.float32 else np.uint64)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(spec=specs(), M=st.integers(1, 3), N=st.integers(1, 5), K=st.integers(0, 21), data=st.data(),
       with_c=st.booleans(), specials=st.booleans())
def test_numba_equals_the_reference(spec, M, N, K, data, with_c, specials):
    values = (VALUES | SPREAD | SPECIALS) if specials else (VALUES | SPREAD)
    a, b, c = draw_operands(data, M, N, K, values, with_c)
    sa, sb = draw_scales(data, spec, M, N, K)
    kw = {} if c is None else {"c": c}
    if sa is not None:
        kw.update(a_scale=sa, b_scale=sb)
    seed = data.draw(st.integers(0, 2**64 - 1))
    want = pl.matmul(a, b, spec, seed=seed, backend="numpy", **kw)
    got = pl.matmul(a, b, spec, seed=seed, backend="numba", **kw)
    assert np.array_equal(bits(got), bits(want)), (got, want)


@pytest.mark.parametrize("name", sorted(pl.presets))
def test_numba_equals_the_reference_on_every_preset(name):
    spec = pl.get_preset(name)
    rng = np.random.default_rng(3)
    K = 300 if spec.promote_every else 75
    a = (rng.standard_normal((3, K)) * np.exp2(rng.integers(-10, 10, (3, K)))).astype(np.float32)
    b = rng.standard_normal((2, K, 5)).astype(np.float32)
    a[0, :10] = [np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-40, 3e38, -3e38, 2.0**-24, 65504.0]
    a = np.clip(a, -spec.a_format.max, spec.a_format.max) if not spec.a_format.has_inf else a
    c = rng.standard_normal((2, 3, 5)).astype(np.float32)
    kw = {}
    if spec.a_scale_block is not None:
        def blocks(shape, block):
            return tuple(-(-n // (bk or n)) for n, bk in zip(shape, block, strict=True))
        kw = {"a_scale": np.exp2(rng.integers(-3, 3, blocks((3, K), spec.a_scale_block))).astype(np.float32),
              "b_scale": np.exp2(rng.integers(-3, 3, blocks((K, 5), spec.b_scale_block))).astype(np.float32)}
    want = pl.matmul(a, b, spec, c=c, backend="numpy", **kw)
    got = pl.matmul(a, b, spec, c=c, backend="numba", **kw)
    assert np.array_equal(bits(got), bits(want))


def test_numba_compiles_the_common_models():
    """Which presets run compiled code (the others run the reference inside the numba backend)."""
    from precisionlab.backends import numba_backend

    compiled = {n for n, s in pl.presets.items() if numba_backend.compiles(s)}
    assert {"fp32_sequential", "torch_cpu_nn", "torch_cpu_nt", "torch_cpu_tn", "ml_dtypes_dot", "fp16_accumulate",
            "bf16_accumulate", "h100_fp16", "h100_e4m3", "deepseek_fp8", "b200_e4m3", "mi250_fp16",
            "torch_cpu_amx_bf16", "torch_cpu_onednn_fp16", "jax_cpu_dot", "jax_cpu_bf16_f32"} <= compiled
    assert set(pl.presets) - compiled == {"exact", "mi100_fp16", "mi300_fp16", "mi300_bf16", "torch_cpu_scaled_mm"}


# ---- composite orders and per-product scales (the CPU framework models of presets.py) -------------

def test_composite_orders_parse_round_trip_and_validate():
    for text in ("blocked(32,interleaved(2))", "split(64,lanes(64),split(16,lanes(8),sequential))",
                 "group(split(2,blocked(32,interleaved(2)),sequential))", "split(4,strided(4),group(sequential))",
                 "strided(3)"):
        assert str(Order.parse(text)) == text
        assert Order.parse(text.replace(",", ", ").upper()) == Order.parse(text)
    assert Order.parse("blocked(32,sequential)") != Order.parse("blocked(32)")
    for bad, words in (("split(4,lanes(4))", "2 nested"), ("group", "1 nested"), ("group(3)", "takes no width"),
                       ("lanes(4,sequential)", "0 nested"), ("split(0,lanes(2),sequential)", "positive"),
                       ("blocked(32,interleaved(2)", "not an order"), ("strided", "positive integer width")):
        with pytest.raises(ValueError, match=words):
            Order.parse(bad)
    with pytest.raises(ValueError, match="multiple of k_fused"):
        MatmulSpec(step="fused", k_fused=4, n_frac=24, order="group(split(6,sequential,sequential))")


def _nested_orders(depth: int):
    plain = st.sampled_from(["sequential", "pairwise", "interleaved(2)", "interleaved(3)", "lanes(2)", "lanes(4)",
                             "blocked(2)", "strided(2)", "strided(3)"])
    if depth == 0:
        return plain
    sub = _nested_orders(depth - 1)
    return st.one_of(plain,
                     st.builds(lambda g, h, t: f"split({g},{h},{t})", st.integers(1, 5), sub, sub),
                     st.builds(lambda i: f"group({i})", sub),
                     st.builds(lambda w, i: f"blocked({w},{i})", st.integers(1, 5), sub))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(order=_nested_orders(2), step=st.sampled_from(["ieee", "fused"]), k=st.integers(1, 2),
       acc=st.sampled_from(["fp16", "bf16", pl.Format(5, 3, name="e5m3")]), mode=st.sampled_from(["rne", "rtz", "sr"]),
       subnormals=st.booleans(), K=st.integers(0, 19), data=st.data())
def test_composite_orders_equal_the_oracle(order, step, k, acc, mode, subnormals, K, data):
    """Nested split / group / blocked(kc, inner) / strided orders: values, signs of zero and event counts."""
    k = 1 if step == "ieee" else k
    order = Order.parse(order)

    def scale(o):          # K-element widths must be multiples of k_fused
        w = o.width * k if o.kind in ("blocked", "split") else o.width
        return Order(o.kind, w, tuple(scale(p) for p in o.parts))

    spec = MatmulSpec(a_format="fp16", step=step, k_fused=k, n_frac=6, accumulator=acc, step_rounding=mode,
                      accumulator_subnormals=subnormals, order=scale(order), c_format="fp32", output_format="fp32")
    a, b, c = draw_operands(data, 1, 2, K, SPREAD, data.draw(st.booleans()))
    check_against_oracle(spec, a, b, c, None, None, 5)


def test_composite_orders_build_the_documented_trees():
    """Hand-built instances of the trees measured on CPUs: L, -L at positions i, j and ones elsewhere give
    K - |leaves under the node where i and j meet| (the ones that join L before the cancellation vanish)."""
    def survivors(order, K, i, j):
        spec = MatmulSpec(a_format="fp32", order=order, output_format="fp32")
        b = np.ones((K, 1))
        b[i], b[j] = 2.0**40, -(2.0**40)
        return int(mm(np.ones((1, K)), b, spec)[0, 0])
    torch_dot = "group(split(64,lanes(64),split(16,lanes(8),sequential)))"
    assert survivors(torch_dot, 70, 0, 64) == 70 - 65     # 64 joins the reduced 64-lane main loop
    assert survivors(torch_dot, 70, 64, 65) == 70 - 2 - 64  # the scalar tail continues the main sum
    assert survivors(torch_dot, 40, 0, 8) == 40 - 2       # 8 vector lanes over the 32 elements: lane 0 = 0, 8, ...
    assert survivors(torch_dot, 40, 0, 16) == 40 - 3      # ... 0, 8 first, then 16
    amx = "blocked(32,interleaved(2))"
    assert survivors(amx, 64, 0, 2) == 64 - 2 and survivors(amx, 64, 0, 1) == 64 - 32
    assert survivors(amx, 64, 0, 32) == 0
    xla = "split(2,blocked(32,interleaved(2)),sequential)"
    assert survivors(xla, 47, 0, 46) == 0 and survivors(xla, 47, 32, 33) == 47 - 14
    ynn = "split(4,strided(4),group(sequential))"
    assert survivors(ynn, 11, 0, 4) == 11 - 2 and survivors(ynn, 11, 0, 1) == 11 - 4
    assert survivors(ynn, 11, 8, 9) == 11 - 2         # the tail 8, 9, 10 is summed on its own, then added


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(rows=st.none() | st.integers(1, 2), cols=st.none() | st.integers(1, 2), kb=st.none() | st.integers(1, 3),
       prod=st.none() | st.sampled_from(["fp32", "bf16"]), M=st.integers(1, 3), N=st.integers(1, 3),
       K=st.integers(0, 8), data=st.data())
def test_product_scales_equal_the_oracle(rows, cols, kb, prod, M, N, K, data):
    spec = MatmulSpec(a_format="e4m3", b_format="e5m2", product_format=prod, accumulator="fp32",
                      a_scale_block=(rows, kb), b_scale_block=(kb, cols), scale_at="products", output_format="bf16")
    a, b, c = draw_operands(data, M, N, K, VALUES)
    sa, sb = draw_scales(data, spec, M, N, K)
    check_against_oracle(spec, a, b, c, sa, sb, 6)


def test_product_scales_round_each_multiplication_to_fp32():
    """(p·sa)·sb with two fp32 roundings differs from p·(sa·sb) and from scaling the sum."""
    spec = MatmulSpec(a_format="e4m3", accumulator="fp32", a_scale_block=(None, None), b_scale_block=(None, None),
                      scale_at="products", output_format="fp32")
    a, b = np.array([[1.125]]), np.array([[1.0]])
    sa, sb = np.float32(0.3), np.float32(1.7)
    got = float(mm(a, b, spec, a_scale=sa, b_scale=sb)[0, 0])
    want = float(np.float32(np.float32(np.float32(1.125) * sa) * sb))
    assert got == want != float(np.float32(1.125) * np.float32(sa * sb))


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(rows=st.none() | st.integers(1, 2), cols=st.none() | st.integers(1, 2), promote=st.none() | st.integers(1, 4),
       M=st.integers(1, 3), N=st.integers(1, 3), K=st.integers(0, 9), data=st.data())
def test_output_scales_equal_the_oracle(rows, cols, promote, M, N, K, data):
    spec = MatmulSpec(a_format="e4m3", b_format="e5m2", step="fused", k_fused=1, n_frac=13, accumulator="fp32",
                      a_scale_block=(rows, None), b_scale_block=(None, cols), scale_at="output", promote_every=promote,
                      output_format="bf16")
    a, b, c = draw_operands(data, M, N, K, VALUES)
    sa, sb = draw_scales(data, spec, M, N, K)
    check_against_oracle(spec, a, b, c, sa, sb, 7)


def test_output_scales_multiply_the_promoted_sum_once():
    """Promotion without scales, then one multiplication: unlike scaling each promoted chunk."""
    base = dict(a_format="e4m3", accumulator="fp32", a_scale_block=(None, None), b_scale_block=(None, None),
                promote_every=1, output_format="fp32")
    a, b = np.array([[1.0, 1.0, 1.0]]), np.array([[1.0], [2.0**-9], [2.0]])
    sa, sb = np.float32(0.3), np.float32(1.7)
    f32 = np.float32
    s = f32(sa * sb)
    out = float(mm(a, b, MatmulSpec(**base, scale_at="output"), a_scale=sa, b_scale=sb)[0, 0])
    assert out == float(f32(f32(f32(1 + 2.0**-9) + 2) * s))
    per_chunk = float(mm(a, b, MatmulSpec(**base, scale_at="promotion"), a_scale=sa, b_scale=sb)[0, 0])
    assert per_chunk == float(f32(f32(s + f32(2.0**-9 * s)) + f32(2 * s))) != out
    with pytest.raises(ValueError, match="scale_at='output' one scale covers all of K"):
        MatmulSpec(**{**base, "a_scale_block": (1, 32)}, scale_at="output")


# ---- backends: composite orders compiled as programs (precisionlab/backends/numba_program.py) -----------

PLAIN_ORDERS = st.one_of(st.sampled_from(["sequential", "pairwise"]),
                         st.integers(1, 5).map(lambda w: f"interleaved({w})"),
                         st.sampled_from([1, 2, 4, 8]).map(lambda w: f"lanes({w})"),
                         st.integers(1, 6).map(lambda w: f"blocked({w})"),
                         st.integers(1, 5).map(lambda w: f"strided({w})"))
ORDERS = st.recursive(PLAIN_ORDERS, lambda inner: st.one_of(
    st.tuples(st.integers(1, 8), inner).map(lambda t: f"blocked({t[0]},{t[1]})"),
    st.tuples(st.integers(1, 8), inner, inner).map(lambda t: f"split({t[0]},{t[1]},{t[2]})"),
    inner.map(lambda o: f"group({o})")), max_leaves=4)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(order=ORDERS, M=st.integers(1, 2), N=st.integers(1, 4), K=st.integers(0, 40), data=st.data(),
       specials=st.booleans())
def test_numba_runs_composite_orders_as_the_reference(order, M, N, K, data, specials):
    from precisionlab.backends import numba_program

    spec = MatmulSpec(a_format=data.draw(st.sampled_from(["fp16", "bf16", "e4m3"])), step="ieee",
                      product_format=data.draw(st.none() | st.sampled_from(["fp32", "bf16"])),
                      accumulator=data.draw(st.sampled_from(["fp32", *ACCUMULATORS])),    # fp32 RNE: hardware
                      step_rounding=data.draw(st.sampled_from(["rne"] + [m for m in MODES if not m.startswith("sr")])),
                      accumulator_subnormals=data.draw(st.booleans()), order=order,
                      c_format=data.draw(st.none() | st.sampled_from(["fp32", "fp16"])),
                      output_format=data.draw(st.sampled_from(["fp32", "bf16", "e5m2"])))
    assert numba_program.covers(spec)
    values = (VALUES | SPREAD | SPECIALS) if specials else (VALUES | SPREAD)
    a, b, c = draw_operands(data, M, N, K, values, True)
    want = pl.matmul(a, b, spec, c=c, backend="numpy")
    got = pl.matmul(a, b, spec, c=c, backend="numba")
    assert np.array_equal(bits(got), bits(want)), (got, want)


@pytest.mark.parametrize("order", ["sequential", "lanes(8)", "group(split(64,lanes(64),split(16,lanes(8),sequential)))",
                                   "split(4,strided(4),group(sequential))", "group(blocked(32,interleaved(2)))"])
@pytest.mark.parametrize("K", [0, 1, 15, 16, 63, 64, 80, 129])
def test_an_order_program_has_one_instruction_per_rounding_event(order, K):
    """The recorded program performs exactly the additions rounding_events counts (all but the output's)."""
    from precisionlab.backends import numba_program

    spec = MatmulSpec(a_format="bf16", step="ieee", accumulator="fp32", order=order, output_format="bf16")
    prog, n_regs, result = numba_program.program(spec, K)
    additions = int(np.sum(prog[:, 0] != numba_program.INIT))
    assert additions == rounding_events(spec, K) - 1
    assert int(np.sum(prog[:, 0] == numba_program.ADD_PRODUCT)) == K
    assert sorted(prog[prog[:, 0] == numba_program.ADD_PRODUCT, 2].tolist()) == list(range(K))
    assert 0 <= result < n_regs <= 2 + K.bit_length() + 64          # registers are reused, not one per step


@pytest.mark.parametrize("backend", ["numpy", "numba"])
def test_operand_scaling_rounds_once_to_fp32(backend):
    """3 · s is exactly the fp32 midpoint 1 + 2^-24 plus 2^-54: a float64 product rounds it onto the
    midpoint, and fp32 RNE then goes to 1.0 (double rounding); the single rounding gives 1 + 2^-23."""
    s = float((2**54 + 2**30 + 1) // 3) * 2.0**-54
    assert Fraction(s) * 3 == 1 + Fraction(1, 2**24) + Fraction(1, 2**54)
    spec = MatmulSpec(a_format="bf16", accumulator="fp32", output_format="fp32", a_scale_block=(None, None),
                      b_scale_block=(None, None), scale_at="operands")
    out = pl.matmul(np.array([[3.0]], np.float32), np.array([[1.0]], np.float32), spec, a_scale=np.array(s),
                    b_scale=np.array(1.0), backend=backend)
    assert float(out[0, 0]) == 1 + 2.0**-23
