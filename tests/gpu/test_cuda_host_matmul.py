"""The CUDA C matmul (precisionlab/backends/cuda/matmul.cuh) compiled for the host, bit for bit
against the NumPy reference, on the property-test corpus of the CPU kernels (DESIGN §6, §7).

matmul.cuh is built with round.cuh into the host test driver (nvcc -x cu, host code only, or
g++), whose pl_host_matmul is pl_matmul_kernel's loop with one "thread".  The reference result
is ReferenceMatmul's on the same operands (tests/gpu/matmul_cases.py); test_matmul.py checks
the reference itself against an independent Fraction oracle.
"""

from __future__ import annotations

import dataclasses

import matmul_cases as mc
import numpy as np
import pytest
from cuda_host import available_compilers, build
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from matmul_cases import check_kernel, draw_case, kernel_inputs

import precisionlab as pl
from precisionlab.backends import cuda as plcuda
from precisionlab.backends import numpy_backend as ref
from precisionlab.matmul import MatmulSpec

COMPILERS = available_compilers()
pytestmark = pytest.mark.skipif(not COMPILERS, reason="neither nvcc nor g++ is installed: the CUDA C sources "
                                                      "cannot be compiled for the host")
SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                      HealthCheck.filter_too_much,
                                                      HealthCheck.function_scoped_fixture])


def seeds():
    return st.integers(0, 2**64 - 1)


@settings(max_examples=400, **SETTINGS)
@given(spec=mc.covered_specs(), M=st.integers(1, 3), N=st.integers(1, 5), K=st.integers(0, 21), data=st.data(),
       with_c=st.booleans(), specials=st.booleans(), seed=seeds())
def test_host_matmul_equals_the_reference(host, spec, M, N, K, data, with_c, specials, seed):
    """Any spec (test_matmul's strategy, as the CPU kernel's test): every parameter at once, K from 0
    past every block, NaN/Inf/±0/subnormal/overflow operands, block scales, every rounding mode."""
    a, b, c, sa, sb = draw_case(data, spec, M, N, K, specials, with_c)
    check_kernel(host.matmul_values, *kernel_inputs(a, b, c, sa, sb, spec), spec, seed, f"M={M} N={N} K={K}")


@settings(max_examples=300, **SETTINGS)
@given(spec=mc.fused_specs(), K=st.integers(1, 13), data=st.data(), specials=st.booleans(), seed=seeds())
def test_host_fused_steps(host, spec, K, data, specials, seed):
    a, b, c, sa, sb = draw_case(data, spec, 1, 3, K, specials, True)
    check_kernel(host.matmul_values, *kernel_inputs(a, b, c, sa, sb, spec), spec, seed, f"K={K}")


@settings(max_examples=300, **SETTINGS)
@given(spec=mc.order_specs(), K=st.integers(0, 40), data=st.data(), seed=seeds())
def test_host_orders_and_promotion(host, spec, K, data, seed):
    a, b, c, sa, sb = draw_case(data, spec, 1, 3, K, False, True)
    check_kernel(host.matmul_values, *kernel_inputs(a, b, c, sa, sb, spec), spec, seed, f"K={K}")


@settings(max_examples=300, **SETTINGS)
@given(spec=mc.order_specs(stochastic=True), K=st.integers(0, 40), data=st.data(), seed=seeds())
def test_host_stochastic_orders_use_the_reference_counters(host, spec, K, data, seed):
    """Trees evaluated depth first here and level by level in the reference: every addition's
    random-bit counter must still be the reference's (a wrong one shows with sr)."""
    a, b, c, sa, sb = draw_case(data, spec, 1, 3, K, False, True)
    check_kernel(host.matmul_values, *kernel_inputs(a, b, c, sa, sb, spec), spec, seed, f"K={K}")


@settings(max_examples=200, **SETTINGS)
@given(spec=mc.scaled_specs(), M=st.integers(1, 3), N=st.integers(1, 3), K=st.integers(0, 12), data=st.data(),
       seed=seeds())
def test_host_scales(host, spec, M, N, K, data, seed):
    a, b, c, sa, sb = draw_case(data, spec, M, N, K, False, True)
    check_kernel(host.matmul_values, *kernel_inputs(a, b, c, sa, sb, spec), spec, seed, f"M={M} N={N} K={K}")


@settings(max_examples=300, **SETTINGS)
@given(case=mc.wide_cases(), seed=seeds())
def test_host_wide_sums(host, case, seed):
    """Sums that need more than 62 bits (the 128-bit path) into accumulators up to fp64."""
    spec, a, b, c = case
    check_kernel(host.matmul_values, *kernel_inputs(a, b, c, None, None, spec), spec, seed)


def test_products_below_the_window(host):
    """Deterministic cases for the sticky bit of the 128-bit addition (random data reaches it rarely)."""
    for spec, a, b, c in mc.below_the_window_cases():
        check_kernel(host.matmul_values, *kernel_inputs(a, b, c, None, None, spec), spec, 7, f"{spec.accumulator.name} "
                     f"{spec.step_rounding.value} {spec.order} c={c[0, 0]} a={a.tolist()}")


def test_below_the_window_products_are_not_zero():
    """The operands are fp16 values (the products below the window are not rounded away)."""
    for _spec, a, b, _c in mc.below_the_window_cases()[:3]:
        assert np.all(pl.round(a, "fp16") == a) and np.all(pl.round(b, "fp16") == b) and np.all(a @ b != 0)


@pytest.mark.parametrize("name", sorted(pl.presets))
def test_host_every_preset(host, name):
    """Every preset on data that separates orders and alignments, with the specials, K past blocks."""
    spec = pl.get_preset(name)
    rng = np.random.default_rng(7)
    K = 300 if spec.promote_every else 75
    a = (rng.standard_normal((2, 3, K)) * np.exp2(rng.integers(-12, 12, (2, 3, K)))).astype(np.float32)
    a[0, 0, :10] = [np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-40, 3e38, -3e38, 2.0**-24, 65504.0]
    a[1, 1, ::2] = -a[1, 1, 1::2] if K % 2 == 0 else a[1, 1, ::2]
    a = np.clip(a, -spec.a_format.max, spec.a_format.max) if not spec.a_format.has_inf else a
    b = rng.standard_normal((2, K, 5)).astype(np.float32)
    c = rng.standard_normal((2, 3, 5)).astype(np.float32)
    sa, sb = mc.preset_scales(rng, spec, a.shape, b.shape)
    args = kernel_inputs(a, b, c, sa, sb, spec)
    if plcuda.matmul_unsupported(spec) is not None:
        mc.assert_not_covered(lambda: host.matmul_values(*args, spec, None), spec, "cuda_host")
        return
    for seed in (None, 5) if not spec.stochastic else (5,):
        check_kernel(host.matmul_values, *args, spec, seed, name)
    sr = dataclasses.replace(spec, step_rounding="sr", output_rounding="sr")
    if plcuda.matmul_unsupported(sr) is None:
        check_kernel(host.matmul_values, *args, sr, 11, name + " with sr")


def test_host_launch_range_does_not_matter(host):
    """pl_matmul_kernel's threads each take a range of flat output indices: any split gives the same
    bits (DESIGN §5), stochastic rounding included."""
    spec = dataclasses.replace(pl.get_preset("h100_fp16"), step_rounding="sr", output_rounding="sr_equal")
    rng = np.random.default_rng(2)
    a3, b3, c3 = (pl.round(rng.standard_normal(s), "fp16") for s in ((2, 3, 40), (2, 40, 4), (2, 3, 4)))
    whole = host.matmul_values(a3, b3, c3, None, None, spec, 9)
    parts = [host.matmul_values(a3, b3, c3, None, None, spec, 9, start, stop) for start, stop in ((0, 7), (7, 24))]
    split = np.where(np.arange(24).reshape(2, 3, 4) < 7, parts[0], parts[1])
    assert np.array_equal(whole.view(np.uint64), split.view(np.uint64))
    check_kernel(host.matmul_values, a3, b3, c3, None, None, spec, 9)


def test_host_scale_kernel_rounds_the_exact_product(host):
    """fp32(x * s) of operands and float64 scales with long significands: the exact product
    rounded once, with the specials of an exact product (0 * Inf is NaN)."""
    rng = np.random.default_rng(4)
    x = pl.round(rng.standard_normal(5000) * 100, "e4m3")
    s = rng.standard_normal(5000) * np.exp2(rng.integers(-20, 20, 5000))
    s[:6] = [np.inf, 0.0, -0.0, np.nan, 1 + 2.0**-52, 2.0**-1074]
    x[:6] = [0.0, -np.inf, 1.0, 1.0, 1 + 2.0**-3, 448.0]
    fp32 = plcuda.matmul_specs(pl.get_preset("fp32_sequential"), None)[3]
    want = np.array([ref.round_exact(ref.exact_product(float(xi), float(si)), fp32)
                     for xi, si in zip(x, s, strict=True)])
    got = host.scale_values(x, s, fp32)
    nan = np.isnan(want)
    assert np.array_equal(np.isnan(got), nan) and nan[0] and nan[1] and not nan[2]
    assert np.array_equal(got[~nan].view(np.uint64), want[~nan].view(np.uint64))


@pytest.mark.parametrize("x, s", [(1.5, 0.6666667064030966), (3.0, 0.3333333532015483), (1.125, 0.8888889418707954)])
def test_double_rounding_of_scaled_operands_is_avoided(host, x, s):
    """x * s just above an fp32 tie that a float64 multiply rounds onto the tie: fp32(fp64(x * s))
    is one fp32 ulp below fp32(x * s), which the scale kernel gives."""
    fp32 = plcuda.matmul_specs(pl.get_preset("fp32_sequential"), None)[3]
    exact = ref.round_exact(ref.exact_product(x, s), fp32)
    assert float(np.float32(x * s)) == 1.0 and exact == 1.0 + 2.0**-23
    assert host.scale_values(np.array([x]), np.array([s]), fp32)[0] == exact


def test_constants_match_python(host):
    assert host.matmul_constants() == [plcuda.SACC_LIMBS, plcuda.SACC_BASE, plcuda.FUSED_MAX_K,
                                       len(plcuda.MATMUL_FIELDS)] + list(plcuda.STEP_CODES.values()) \
        + list(plcuda.ORDER_CODES.values())
    assert list(plcuda.STEP_CODES) == ["ieee", "fused", "pairwise", "exact"]
    assert list(plcuda.ORDER_CODES) == ["sequential", "interleaved", "lanes", "pairwise", "blocked"]


def test_unsupported_specs_are_named():
    assert plcuda.matmul_unsupported(pl.get_preset("h100_e4m3")) is None
    assert "48 bits" in plcuda.matmul_unsupported(MatmulSpec(a_format="fp64"))
    assert "k_fused=65" in plcuda.matmul_unsupported(MatmulSpec(step="fused", k_fused=65, n_frac=10))
    assert "exact accumulator" in plcuda.matmul_unsupported(MatmulSpec(step="exact", c_format="fp64"))
    assert "b's format" in plcuda.matmul_unsupported(MatmulSpec(a_format="fp64", a_scale_block=(None, None)))
    assert plcuda.matmul_unsupported(MatmulSpec(a_format="fp64", a_scale_block=(None, None),
                                                b_scale_block=(None, None))) is None      # scaled: fp32 operands


@pytest.mark.skipif(len(COMPILERS) < 2, reason="only one of nvcc / g++ is installed")
def test_other_compiler_gives_the_same_matmul_bits(host, tmp_path_factory):
    other = build(COMPILERS[1], tmp_path_factory.mktemp("plcuda-matmul-other"))
    rng = np.random.default_rng(8)
    for name in sorted(pl.presets):
        spec = pl.get_preset(name)
        if plcuda.matmul_unsupported(spec) is not None:       # test_host_every_preset: they raise
            continue
        if not spec.stochastic:
            spec = dataclasses.replace(spec, output_rounding="sr")
        K = 200 if spec.promote_every else 50
        a3 = pl.round(rng.standard_normal((1, 4, K)) * 8, spec.a_format)
        b3 = pl.round(rng.standard_normal((1, K, 3)), spec.effective_b_format)
        c3 = pl.round(rng.standard_normal((1, 4, 3)), spec.effective_c_format)
        sa = sb = None
        if spec.a_scale_block is not None:
            sa, sb = np.full((1, 4, K), 0.5), np.full((1, K, 3), 3.0)
        x, y = host.matmul_values(a3, b3, c3, sa, sb, spec, 3), other.matmul_values(a3, b3, c3, sa, sb, spec, 3)
        assert np.array_equal(x.view(np.uint64), y.view(np.uint64)), name
