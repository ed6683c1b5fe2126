"""The register-blocked GEMM kernels (precisionlab/backends/_gemm.py) behind the numba backend's
``ieee`` specs: bit for bit against the NumPy reference, and against an independent vectorised
oracle written here from DESIGN §6 on shapes the reference is too slow for.

The oracle's one primitive is "x + y rounded once to F": the float64 sum made exact by TwoSum,
rounded to odd (Boldo & Melquiond), then rounded with the reference's ``pl.round``; it is checked
against the Fraction oracle of tests/matmul_oracle.py first.  Orders follow the DESIGN's words
(interleaved: s[k mod w], tail into s0, s0 + s1 + ...; lanes: halving tree, then the tail; blocked:
blocks from -0 added in order; C + r at the end) and share nothing with the kernels.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import platform
from fractions import Fraction

import numba
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from matmul_oracle import round_fraction

import precisionlab as pl
from precisionlab.backends import _gemm
from precisionlab.backends import numba_backend as nbk
from precisionlab.matmul import MatmulSpec, Order


def bits(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x).view(np.uint32 if x.dtype == np.float32 else np.uint64)


# ---- the oracle ---------------------------------------------------------------------------------------

def rounded_sum(x: np.ndarray, y: np.ndarray, fmt) -> np.ndarray:
    """x + y (float64 arrays of values) rounded once, RNE, to ``fmt``."""
    with np.errstate(invalid="ignore", over="ignore"):
        s = x + y
        bb = s - x
        err = (x - (s - bb)) + (y - bb)
    u = s.view(np.int64)
    fix = np.isfinite(s) & (err != 0) & ((u & 1) == 0)
    step = np.where(np.signbit(err) == np.signbit(s), 1, -1)          # toward the exact sum, in magnitude
    odd = np.where(fix, u + step, u).view(np.float64)
    return pl.round(odd, fmt, backend="numpy").astype(np.float64)


def products(a_col: np.ndarray, b_row: np.ndarray, spec: MatmulSpec) -> np.ndarray:
    with np.errstate(invalid="ignore", over="ignore"):
        p = a_col[:, None] * b_row[None, :]                             # exact: at most 48 bits, fp32 range
    return p if spec.product_format is None else pl.round(p, spec.product_format, backend="numpy")


def oracle(a: np.ndarray, b: np.ndarray, c: np.ndarray, spec: MatmulSpec) -> np.ndarray:
    """The accumulation model of an ``ieee`` spec over (M, K) x (K, N) + (M, N), before the output rounding."""
    F = spec.accumulator
    M, K = a.shape
    N = b.shape[1]

    def step(acc, k):
        return rounded_sum(acc, products(a[:, k], b[k], spec), F)

    neg_zero = np.full((M, N), -0.0)

    def interleaved(ks, w):                              # from -0: s[j] owns ks[j], ks[j+w], ...; tail into s0
        full = len(ks) - len(ks) % w
        s = [neg_zero] * w
        for i in range(full):
            s[i % w] = step(s[i % w], ks[i])
        for k in ks[full:]:
            s[0] = step(s[0], k)
        r = s[0]
        for i in range(1, w):
            r = rounded_sum(r, s[i], F)
        return r

    kind, w = spec.order.kind, spec.order.width
    if kind == "sequential":
        acc = c.copy()
        for k in range(K):
            acc = step(acc, k)
        return acc
    if kind == "blocked":                                # blocks from -0 (plain, or interleaved(v) inside)
        v = (spec.order.parts[0].width or 1) if spec.order.parts else 1
        acc = c.copy()
        for k0 in range(0, K, w):
            acc = rounded_sum(acc, interleaved(list(range(k0, min(k0 + w, K))), v), F)
        return acc
    full = K - K % w
    s = [neg_zero] * w
    for k in range(full):
        s[k % w] = step(s[k % w], k)
    if kind == "interleaved":
        for k in range(full, K):
            s[0] = step(s[0], k)
        r = s[0]
        for i in range(1, w):
            r = rounded_sum(r, s[i], F)
    else:
        h = w // 2
        while h >= 1:
            for i in range(h):
                s[i] = rounded_sum(s[i], s[i + h], F)
            h //= 2
        for k in range(full, K):
            s[0] = step(s[0], k)
        r = s[0]
    return rounded_sum(c, r, F)


def expected(a, b, c, spec):
    d = pl.round(oracle(a.astype(np.float64), b.astype(np.float64), c.astype(np.float64), spec),
                 spec.output_format, backend="numpy")
    return np.where(np.isnan(d), np.nan, d).astype(np.float32)


EDGE = [0.0, -0.0, 1.0, -1.0, 2.0**-24, -(2.0**-24), 2.0**-14, 65504.0, -65504.0, 2.0**-133, 3e38, -3e38,
        1.5, 1.75, 1.15625, 2.0**-149, 2.0**20, 448.0]
SPECIAL = [math.inf, -math.inf, math.nan]


@settings(max_examples=300, deadline=None)
@given(fmt=st.sampled_from(["fp32", "fp16", "bf16", "e5m2"]), x=st.sampled_from(EDGE + SPECIAL) | st.floats(width=32),
       y=st.sampled_from(EDGE + SPECIAL) | st.floats(width=32), scale=st.sampled_from([1.0, 2.0**-40, 2.0**-60]))
def test_the_oracles_rounded_sum_is_one_rounding_of_the_exact_sum(fmt, x, y, scale):
    y = y * scale
    got = rounded_sum(np.array([x]), np.array([y]), fmt)[0]
    if math.isnan(x) or math.isnan(y) or (math.isinf(x) and math.isinf(y) and x != y):
        assert math.isnan(got)
    elif math.isinf(x) or math.isinf(y):
        assert got == (x if math.isinf(x) else y)
    else:
        exact = Fraction(x) + Fraction(y)
        want = round_fraction(exact, pl.get_format(fmt), negative_zero=(x == 0 and y == 0 and math.copysign(1, x) < 0
                                                          and math.copysign(1, y) < 0))
        assert got == want and math.copysign(1, got) == math.copysign(1, want), (x, y, got, want)


# ---- operands -----------------------------------------------------------------------------------------

def operands(rng, M, N, K, fmt, c_fmt, profile):
    """Values of the input formats: a wide exponent spread, exact cancellations, edge values, specials."""
    lo, hi = (-30, 12) if fmt != "e5m2" else (-14, 8)

    def draw(shape):
        x = rng.standard_normal(shape) * np.exp2(rng.integers(lo, hi, shape))
        if "edge" in profile:
            pick = rng.random(shape) < 0.15
            x = np.where(pick, rng.choice(EDGE, shape), x)
        if "special" in profile:
            pick = rng.random(shape) < 0.03
            x = np.where(pick, rng.choice(SPECIAL, shape), x)
        return x

    a, b, c = draw((M, K)), draw((K, N)), draw((M, N))
    if "cancel" in profile and K >= 2:                   # the second half of K undoes the first, exactly
        h = K // 2
        a[:, h:2 * h] = a[:, :h]
        b[h:2 * h] = -b[:h]
    with np.errstate(over="ignore", invalid="ignore"):
        a = pl.round(a, fmt, backend="numpy").astype(np.float32)
        b = pl.round(b, fmt, backend="numpy").astype(np.float32)
        c = pl.round(c, c_fmt, backend="numpy").astype(np.float32)
    return a, b, c


ORDERS = st.one_of(st.just("sequential"), st.integers(1, 9).map(lambda w: f"interleaved({w})"),
                   st.sampled_from([1, 2, 4, 8, 64]).map(lambda w: f"lanes({w})"),
                   st.integers(1, 12).map(lambda w: f"blocked({w})"))
MODELS = st.sampled_from([("fp32", "bf16", None), ("fp32", "fp16", None), ("fp32", "fp32", None),
                          ("fp32", "e4m3", None), ("fp32", "bf16", "fp32"), ("fp32", "fp32", "fp32"),
                          ("fp16", "fp16", None), ("bf16", "bf16", None), ("e5m2", "e5m2", None),
                          ("bf16", "fp16", None), ("fp16", "e4m3", None)])
PROFILES = st.sampled_from([(), ("edge",), ("cancel",), ("edge", "cancel"), ("edge", "special")])


def spec_of(model, order, out=None) -> MatmulSpec:
    acc, fmt, prod = model
    return MatmulSpec(a_format=fmt, accumulator=acc, product_format=prod, order=order, output_format=out or acc)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(model=MODELS, order=ORDERS, M=st.integers(1, 19), N=st.integers(1, 40), K=st.integers(0, 140),
       profile=PROFILES, seed=st.integers(0, 2**32 - 1), with_c=st.booleans())
def test_tiled_kernels_equal_the_oracle(model, order, M, N, K, profile, seed, with_c):
    """Shapes across tile edges (M, N not multiples of the tile, K not a multiple of the width)."""
    spec = spec_of(model, order)
    assert nbk._gemm_plan(spec) is not None
    a, b, c = operands(np.random.default_rng(seed), M, N, K, model[1], model[0], profile)
    if not with_c:
        c = np.zeros_like(c)
    got = pl.matmul(a, b, spec, c=c if with_c else None, backend="numba")
    assert np.array_equal(bits(got), bits(expected(a, b, c, spec)))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(model=MODELS, order=ORDERS, M=st.integers(1, 9), N=st.integers(1, 35), K=st.integers(0, 12),
       profile=PROFILES, seed=st.integers(0, 2**32 - 1), out=st.sampled_from([None, "bf16", "fp16", "e4m3"]))
def test_tiled_kernels_equal_the_reference(model, order, M, N, K, profile, seed, out):
    spec = spec_of(model, order, out)
    a, b, c = operands(np.random.default_rng(seed), M, N, K, model[1], spec.effective_c_format.name, profile)
    want = pl.matmul(a, b, spec, c=c, backend="numpy")
    got = pl.matmul(a, b, spec, c=c, backend="numba")
    assert np.array_equal(bits(got), bits(want))


def test_plans_of_the_presets():
    kinds = {name: (nbk._gemm_plan(pl.get_preset(name)) or nbk._composite_plan(pl.get_preset(name)) or ("rows",))[0]
             for name in
             ("fp32_sequential", "torch_cpu_nn", "torch_cpu_nt", "torch_cpu_tn", "ml_dtypes_dot", "fp16_accumulate",
              "bf16_accumulate", "h100_fp16")}
    assert kinds == {"fp32_sequential": "fma32", "torch_cpu_nn": "fma32", "torch_cpu_nt": "fma32",
                     "torch_cpu_tn": "fma32", "ml_dtypes_dot": "mul_add32", "fp16_accumulate": "rne64",
                     "bf16_accumulate": "rne64_odd", "h100_fp16": "rows"}


def test_double_rounding_safety_conditions():
    f = pl.get_format
    assert _gemm.double_rounding_is_safe(f("fp16"), f("fp16"), f("fp16"), f("fp16"))
    assert _gemm.double_rounding_is_safe(f("e5m2"), f("e5m2"), f("e5m2"), f("e5m2"))
    assert not _gemm.double_rounding_is_safe(f("bf16"), f("bf16"), f("bf16"), f("bf16"))   # exponent range
    assert not _gemm.double_rounding_is_safe(f("fp16"), f("fp16"), f("fp16"), f("fp32"))   # C off F's grid


# ---- adversarial cases, with the value each must give -------------------------------------------------

ALL_ORDERS = ["sequential", "interleaved(4)", "lanes(64)", "lanes(2)", "blocked(3)"]


def one(a, b, spec, c=None):
    a, b = np.asarray(a, np.float32)[None, :], np.asarray(b, np.float32)[:, None]
    cc = None if c is None else np.full((1, 1), c, np.float32)
    got = pl.matmul(a, b, spec, c=cc, backend="numba")
    want = pl.matmul(a, b, spec, c=cc, backend="numpy")
    assert np.array_equal(bits(got), bits(want)), (got, want)
    return float(got[0, 0])


@pytest.mark.parametrize("order", ALL_ORDERS)
def test_fma_and_separate_multiply_add_differ(order):
    """(1+2^-23)^2 = 1 + 2^-22 + 2^-46: added to a partial sum of -(1+2^-22) by an FMA it leaves 2^-46, as a
    rounded product 0.  The three products land in one partial sum in every order listed."""
    x = 1 + 2.0**-23
    a, b = [1.0, 0.0, x], [-(1 + 2.0**-22), 0.0, x]
    fused = MatmulSpec(a_format="fp32", accumulator="fp32", order=order, output_format="fp32")
    separate = dataclasses.replace(fused, product_format="fp32")
    assert one(a, b, fused) == 2.0**-46
    assert one(a, b, separate) == 0.0


def test_bf16_accumulation_is_not_a_double_rounding():
    """1.75 * 1.15625 = 2 + 6/256, a bf16 midpoint; with C = -2^-133 the exact sum lies just below it and
    rounds down to 2 + 4/256, where RN53 would give the midpoint itself and ties-to-even would go up."""
    spec = pl.get_preset("bf16_accumulate")
    assert one([1.75], [1.15625], spec, c=-(2.0**-133)) == 2 + 4 / 256
    assert one([1.75], [1.15625], spec, c=2.0**-133) == 2 + 8 / 256
    assert one([1.75], [1.15625], spec) == 2 + 8 / 256                       # the tie itself: to even


@pytest.mark.parametrize("order", ALL_ORDERS)
def test_ties_and_overflow_inside_the_sum(order):
    """fp16: 2048 + 1 is a tie that stays at 2048 (sequential), 2048 + 3 a tie that goes to 2052 (the other
    orders sum the three products first); 65504 + 16 = 65520 ties to 2^16, i.e. Inf, and Inf - 16 stays Inf."""
    spec = dataclasses.replace(pl.get_preset("fp16_accumulate"), order=order)
    assert one([1.0, 1.0, 1.0], [1.0, 1.0, 1.0], spec, c=2048.0) == (2048.0 if order == "sequential" else 2052.0)
    assert one([3.0], [1.0], spec, c=2048.0) == 2052.0
    assert one([16.0, -16.0], [1.0, 1.0], spec, c=65504.0) == (math.inf if order == "sequential" else 65504.0)


@pytest.mark.parametrize("name", ["fp32_sequential", "torch_cpu_nt", "torch_cpu_nn", "ml_dtypes_dot",
                                  "fp16_accumulate", "bf16_accumulate"])
def test_special_values_and_signed_zeros(name):
    spec = pl.get_preset(name)
    big = 65504.0 if spec.a_format.name == "fp16" else 3e38
    assert math.isnan(one([math.inf, 1.0], [0.0, 1.0], spec))                # Inf * 0
    assert math.isnan(one([math.inf, -math.inf], [1.0, 1.0], spec))          # Inf - Inf
    assert math.isnan(one([math.nan, 1.0], [1.0, 1.0], spec))
    assert one([math.inf, big], [1.0, 1.0], spec) == math.inf
    z = one([-0.0, 0.0], [1.0, -1.0], spec, c=-0.0)                          # every term -0: -0
    assert z == 0 and math.copysign(1, z) < 0
    z = one([-0.0], [1.0], spec)                                              # c=None is +0
    assert z == 0 and math.copysign(1, z) > 0
    z = one([2.0, -2.0], [1.0, 1.0], spec)                                    # exact cancellation: +0
    assert z == 0 and math.copysign(1, z) > 0


def test_subnormal_products():
    fp16 = pl.get_preset("fp16_accumulate")
    assert one([2.0**-24], [0.5], fp16) == 0.0                               # 2^-25: a tie, to even (0)
    assert one([2.0**-24], [0.75], fp16) == 2.0**-24
    bf = MatmulSpec(a_format="bf16", accumulator="fp32", output_format="fp32")
    assert one([2.0**-100], [2.0**-100], bf) == 0.0                          # 2^-200: below fp32's range
    assert one([2.0**-75], [2.0**-75], bf) == 0.0                            # 2^-150: a tie, to even (0)
    assert one([1.5 * 2.0**-75], [2.0**-75], bf) == 2.0**-149
    assert one([2.0**-70, 2.0**-75], [2.0**-79, 2.0**-75], bf) == 2.0**-148  # 2^-149 + 2^-150: a tie, to even


LANES64 = dataclasses.replace(pl.get_preset("torch_cpu_nt"), order="lanes(64)", name="lanes64")


@pytest.mark.parametrize("K", [0, 1, 2, 63, 64, 65, 129])
@pytest.mark.parametrize("name", ["lanes64", "torch_cpu_nn", "bf16_accumulate"])
def test_k_around_the_lane_width_and_batch_broadcasting(K, name):
    spec = LANES64 if name == "lanes64" else pl.get_preset(name)
    rng = np.random.default_rng(K)
    a = rng.standard_normal((2, 1, 9, K)).astype(np.float32)
    b = rng.standard_normal((3, K, 33)).astype(np.float32)
    c = rng.standard_normal(33).astype(np.float32)
    got = pl.matmul(a, b, spec, c=c, backend="numba")
    assert got.shape == (2, 3, 9, 33)
    for i in range(2):
        for j in range(3):
            ar = pl.round(a[i, 0], spec.a_format, backend="numpy")
            br = pl.round(b[j], spec.a_format, backend="numpy")
            cr = np.broadcast_to(pl.round(c, spec.effective_c_format, backend="numpy"), (9, 33))
            assert np.array_equal(bits(got[i, j]), bits(expected(ar, br, cr, spec)))


def test_results_do_not_depend_on_the_thread_count():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((300, 200)).astype(np.float32)
    b = rng.standard_normal((200, 300)).astype(np.float32)
    before = numba.get_num_threads()
    outs = []
    for threads in (1, min(2, numba.config.NUMBA_NUM_THREADS)):
        numba.set_num_threads(threads)
        try:
            outs.append([pl.matmul(a, b, name, backend="numba") for name in ("torch_cpu_nt", "bf16_accumulate")])
        finally:
            numba.set_num_threads(before)
    for x, y in zip(outs[0], outs[1], strict=True):
        assert np.array_equal(bits(x), bits(y))
    assert numba.get_num_threads() == before


def test_small_kernels_run_on_the_calling_thread_and_restore_the_count():
    before = numba.get_num_threads()
    with nbk._threads_for(10):
        assert numba.get_num_threads() == 1
    assert numba.get_num_threads() == before
    with pytest.raises(RuntimeError), nbk._threads_for(10):
        raise RuntimeError
    assert numba.get_num_threads() == before
    with nbk._threads_for(nbk.SERIAL_BELOW_NS):
        assert numba.get_num_threads() == before


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="x86 instruction names")
def test_separate_multiply_add_is_never_contracted():
    """The product-rounding kernel must not fuse (fast-math off); the exact-product kernel must."""
    spec = MatmulSpec(a_format="fp32", accumulator="fp32", product_format="fp32", output_format="fp32")
    a = np.ones((3, 5), np.float32)
    pl.matmul(a, a.T, spec, backend="numba")
    pl.matmul(a, a.T, "fp32_sequential", backend="numba")
    asm = {kind: "".join(_gemm._DRIVERS[kind].inspect_asm().values()) for kind in ("mul_add32", "fma32")}
    assert "vfmadd" not in asm["mul_add32"] and "vfnmadd" not in asm["mul_add32"]
    assert "vfmadd" in asm["fma32"]


def test_order_strings_are_the_specs():
    assert str(Order.parse("lanes(64)")) == "lanes(64)"


@pytest.mark.parametrize("K", [0, 1, 15, 16, 17, 63, 64, 65, 79, 80, 81, 130])
@pytest.mark.parametrize("name", ["torch_cpu_nt", "torch_cpu_onednn_fp16"])
def test_composite_orders_as_tiled_gemms_over_k_ranges(K, name):
    """split/group orders of fp32 accumulators run their plain parts as tiled GEMMs over K ranges."""
    spec = pl.get_preset(name)
    assert nbk._composite_plan(spec) is not None
    rng = np.random.default_rng(K)
    a = (rng.standard_normal((2, 3, K)) * np.exp2(rng.integers(-12, 12, (2, 3, K)))).astype(np.float32)
    b = rng.standard_normal((2, K, 5)).astype(np.float32)
    c = rng.standard_normal((2, 3, 5)).astype(np.float32)
    if K > 2:
        a[0, 0, :3] = [np.inf, 1e30, -1e30]
    want = pl.matmul(a, b, spec, c=c, backend="numpy")
    got = pl.matmul(a, b, spec, c=c, backend="numba")
    assert np.array_equal(bits(got), bits(want))


# ---- blocked(kc, interleaved(w)) in one GEMM; flush-to-zero fp32 accumulators -----------------------------

@contextlib.contextmanager
def gemm_calls():
    """The order argument of every _gemm.gemm call made inside the block."""
    calls = []
    real = _gemm.gemm

    def counting(*args, **kwargs):
        calls.append(args[4])
        return real(*args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_gemm, "gemm", counting)
        yield calls


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(model=st.sampled_from([("fp32", "bf16", None), ("fp32", "fp32", "fp32"), ("fp32", "fp16", None)]),
       kc=st.integers(1, 40), v=st.integers(1, 5), M=st.integers(1, 11), N=st.integers(1, 37), K=st.integers(0, 130),
       profile=PROFILES, seed=st.integers(0, 2**32 - 1))
def test_blocked_interleaved_runs_in_one_gemm_as_the_oracle(model, kc, v, M, N, K, profile, seed):
    """Blocks shorter than v, a last short block and tails inside blocks, against the oracle's words."""
    spec = spec_of(model, f"blocked({kc},interleaved({v}))")
    a, b, c = operands(np.random.default_rng(seed), M, N, K, model[1], model[0], profile)
    with gemm_calls() as calls:
        got = pl.matmul(a, b, spec, c=c, backend="numba")
    assert calls == (["blocked"] if K else [])
    assert np.array_equal(bits(got), bits(expected(a, b, c, spec)))


def flushing(order: str, fmt: str = "bf16") -> MatmulSpec:
    return MatmulSpec(a_format=fmt, accumulator="fp32", accumulator_subnormals=False, order=order,
                      output_format="fp32")


def test_flush_cannot_fire_at_its_boundary():
    """Products of A's and B's smallest quanta at 2^-126 cannot give a subnormal; at 2^-127 they can."""
    z = np.zeros((1, 1, 1), np.float32)
    one = np.ones((1, 1, 1), np.float32)
    for qa, qb, want in [(-63, -63, True), (-63, -64, False), (-126, 0, True), (-127, 0, False)]:
        a = np.full((1, 1, 2), 2.0 ** (qa + 23), np.float32)        # exponent qa + 23: quantum 2^qa
        b = np.full((1, 2, 1), 2.0 ** (qb + 23), np.float32)
        assert nbk._flush_cannot_fire(a, b, z) is want, (qa, qb)
    assert nbk._flush_cannot_fire(z, z, z) and nbk._flush_cannot_fire(one, one, np.zeros((1, 1, 1), np.float32))
    sub = np.full((1, 1, 1), 2.0**-130, np.float32)                 # a subnormal C, or a subnormal operand
    assert not nbk._flush_cannot_fire(one, one, sub)
    assert not nbk._flush_cannot_fire(sub, one, z)                  # quantum 2^-149 times 2^-23
    wide = np.broadcast_to(np.array([1.0, 2.0**-127], np.float32), (1, 4, 2))    # C as a broadcast view
    assert not nbk._flush_cannot_fire(one, one, wide)
    assert nbk._flush_cannot_fire(one, one, np.broadcast_to(np.float32(1.0), (1, 4, 2)))


@pytest.mark.parametrize("order", ["sequential", "group(blocked(32,interleaved(2)))",
                                   "split(2,blocked(32,interleaved(2)),sequential)", "interleaved(4)"])
def test_flushing_accumulators_use_the_tiled_kernels_only_where_no_flush_can_fire(order):
    rng = np.random.default_rng(5)
    spec = flushing(order)
    keep = dataclasses.replace(spec, accumulator_subnormals=True)
    a = rng.standard_normal((9, 70)).astype(np.float32)
    b = rng.standard_normal((70, 21)).astype(np.float32)
    with gemm_calls() as calls:
        got = pl.matmul(a, b, spec, backend="numba")
    assert calls, "the tiled kernels ran"
    assert np.array_equal(bits(got), bits(pl.matmul(a, b, spec, backend="numpy")))
    # tiny operands whose products and sums are subnormal: the flush changes the result, so the step-by-step path
    tiny_a, tiny_b = (a * np.float32(2.0**-60)), (b * np.float32(2.0**-70))
    with gemm_calls() as calls:
        got = pl.matmul(tiny_a, tiny_b, spec, backend="numba")
    want = pl.matmul(tiny_a, tiny_b, spec, backend="numpy")
    assert not calls
    assert np.array_equal(bits(got), bits(want))
    assert not np.array_equal(bits(want), bits(pl.matmul(tiny_a, tiny_b, keep, backend="numpy")))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(order=st.sampled_from(["sequential", "group(blocked(8,interleaved(2)))", "blocked(5)", "lanes(4)"]),
       M=st.integers(1, 6), N=st.integers(1, 20), K=st.integers(0, 40), ea=st.integers(-90, 0), eb=st.integers(-90, 0),
       fmt=st.sampled_from(["bf16", "fp32"]), seed=st.integers(0, 2**32 - 1), with_c=st.booleans())
def test_flushing_accumulators_equal_the_reference(order, M, N, K, ea, eb, fmt, seed, with_c):
    """Operand scales on both sides of the no-flush condition, C with tiny values or none."""
    rng = np.random.default_rng(seed)
    spec = flushing(order, fmt)
    a = pl.round(rng.standard_normal((M, K)) * 2.0**ea, fmt, backend="numpy").astype(np.float32)
    b = pl.round(rng.standard_normal((K, N)) * 2.0**eb, fmt, backend="numpy").astype(np.float32)
    c = (rng.standard_normal((M, N)) * 2.0 ** rng.integers(-140, 0)).astype(np.float32) if with_c else None
    got = pl.matmul(a, b, spec, c=c, backend="numba")
    assert np.array_equal(bits(got), bits(pl.matmul(a, b, spec, c=c, backend="numpy")))


@pytest.mark.parametrize("product_format", ["fp32", None])
@pytest.mark.parametrize("scales", [(0.5, 1.5), (0.1, 7.7), (3e-38, 2.0**-30), (1e30, 1e10), (1.0, None),
                                    (np.float64(0.1), 2.0)])
def test_per_tensor_scales_on_the_products_in_the_tiled_kernel(product_format, scales):
    """scale_at="products" (torch._scaled_mm on CPU): the product, times sa, times sb, each rounded to fp32.
    float32 scales run in the tiled kernel; a scale that is not a float32 value runs in the reference."""
    spec = dataclasses.replace(pl.get_preset("torch_cpu_scaled_mm"), product_format=product_format)
    rng = np.random.default_rng(len(str(scales)))
    a = pl.round(rng.standard_normal((2, 13, 70)) * 30, "e4m3").astype(np.float32)
    b = pl.round(rng.standard_normal((2, 70, 35)) * 30, "e4m3").astype(np.float32)
    a[0, 0, :2] = [np.inf, 448.0]
    sa, sb = (np.float32(s) if isinstance(s, float) else s for s in scales)
    if sb is None:
        sb = np.float32(1.0)
    with gemm_calls() as calls:
        got = pl.matmul(a, b, spec, a_scale=sa, b_scale=sb, backend="numba")
    want = pl.matmul(a, b, spec, a_scale=sa, b_scale=sb, backend="numpy")
    assert np.array_equal(bits(got), bits(want))
    assert bool(calls) == (np.float32(sa) == sa)
    if scales == (1e30, 1e10):
        assert not np.isfinite(want).all()              # products overflow to ±Inf (their sums: NaN)


def test_times_fp32_rounds_the_exact_product_once():
    """3 · s where 3s is an fp32 midpoint plus 2^-60: a float64 product would round to the midpoint, then to even."""
    s = np.array([(1 + 2.0**-24 + 2.0**-60) / 3])
    got = nbk._times_fp32(np.array([3.0], np.float32), s)
    exact = Fraction(3) * Fraction(float(s[0]))
    assert exact > 1 + Fraction(1, 2**24)
    assert got[0] == np.float32(1 + 2.0**-23) and got.dtype == np.float32
