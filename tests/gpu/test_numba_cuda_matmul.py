"""The numba_cuda matmul kernel bit for bit against the NumPy reference (DESIGN §6, §7).

Without a GPU the kernel runs on Numba's CUDA simulator (each thread a Python thread), so the
shapes are small; the corpus is the CPU kernels' (tests/gpu/matmul_cases.py): random specs
with every step algorithm, order, promotion, scales and rounding mode, K from 0 past every
block, NaN/Inf/±0/subnormal/overflow operands.  Stochastic step and output rounding must give
the reference's bits (DESIGN §5 counters), whatever the launch shape.  With
PRECISIONLAB_REAL_GPU=1 the same tests run on the device, with more examples.
"""

from __future__ import annotations

import dataclasses
import math
import os
import subprocess
import sys
from pathlib import Path

import matmul_cases as mc
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from matmul_cases import check_kernel, draw_case, kernel_inputs
from test_backends import assert_same_bits

import precisionlab as pl
from precisionlab.backends import get_backend, select_backend
from precisionlab.backends.cuda import matmul_unsupported
from precisionlab.matmul import MatmulSpec

try:
    nc = get_backend("numba_cuda")
except RuntimeError as exc:
    pytest.skip(f"numba_cuda is not available: {exc}", allow_module_level=True)

SIM = nc.SIMULATED
REAL_GPU = os.environ.get("PRECISIONLAB_REAL_GPU") == "1"
if REAL_GPU and SIM:
    pytest.skip("PRECISIONLAB_REAL_GPU=1 but numba.cuda runs on the simulator", allow_module_level=True)

SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                      HealthCheck.filter_too_much])
@settings(max_examples=400 if SIM else 1000, **SETTINGS)
@given(spec=mc.covered_specs(), M=st.integers(1, 2), N=st.integers(1, 3), K=st.integers(0, 21), data=st.data(),
       with_c=st.booleans(), specials=st.booleans())
def test_numba_cuda_equals_the_reference(spec, M, N, K, data, with_c, specials):
    """Any spec (test_matmul's strategy): every parameter at once."""
    a, b, c, sa, sb = draw_case(data, spec, M, N, K, specials, with_c)
    args = kernel_inputs(a, b, c, sa, sb, spec)
    check_kernel(nc.matmul_values, *args, spec, data.draw(st.integers(0, 2**64 - 1)), f"M={M} N={N} K={K}")


@settings(max_examples=200 if SIM else 500, **SETTINGS)
@given(spec=mc.fused_specs(), K=st.integers(1, 13), data=st.data(), specials=st.booleans(),
       seed=st.integers(0, 2**64 - 1))
def test_fused_steps(spec, K, data, specials, seed):
    """The block FMA in detail: alignment, cuts, the e_ref floor, C early / late_rn / late_rd."""
    a, b, c, sa, sb = draw_case(data, spec, 1, 2, K, specials, True)
    check_kernel(nc.matmul_values, *kernel_inputs(a, b, c, sa, sb, spec), spec, seed, f"K={K}")


@settings(max_examples=200 if SIM else 500, **SETTINGS)
@given(stochastic=st.booleans(), data=st.data(), K=st.integers(0, 30), seed=st.integers(0, 2**64 - 1))
def test_orders_and_promotion(stochastic, data, K, seed):
    """Every order and promotion; with stochastic rounding also the counters: the trees are
    evaluated depth first here and level by level in the reference, so a wrong counter shows."""
    spec = data.draw(mc.order_specs(stochastic))
    a, b, c, sa, sb = draw_case(data, spec, 1, 2, K, False, True)
    check_kernel(nc.matmul_values, *kernel_inputs(a, b, c, sa, sb, spec), spec, seed, f"K={K}")


@settings(max_examples=100 if SIM else 300, **SETTINGS)
@given(spec=mc.scaled_specs(), K=st.integers(0, 12), data=st.data(), seed=st.integers(0, 2**64 - 1))
def test_scales(spec, K, data, seed):
    a, b, c, sa, sb = draw_case(data, spec, 2, 2, K, False, True)
    check_kernel(nc.matmul_values, *kernel_inputs(a, b, c, sa, sb, spec), spec, seed, f"K={K}")


@settings(max_examples=300 if SIM else 600, **SETTINGS)
@given(case=mc.wide_cases(), seed=st.integers(0, 2**64 - 1))
def test_wide_sums(case, seed):
    """Sums that need more than 62 bits (the 128-bit path) into accumulators up to fp64, 64 random
    bits for sr."""
    spec, a, b, c = case
    check_kernel(nc.matmul_values, *kernel_inputs(a, b, c, None, None, spec), spec, seed)


def test_products_below_the_window():
    """Deterministic cases for the sticky bit of the 128-bit addition (random data reaches it rarely)."""
    for spec, a, b, c in mc.below_the_window_cases():
        check_kernel(nc.matmul_values, *kernel_inputs(a, b, c, None, None, spec), spec, 7, f"{spec.accumulator.name} "
                     f"{spec.step_rounding.value} {spec.order} c={c[0, 0]} a={a.tolist()}")


PRESETS = sorted(pl.presets)


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset(name):
    """Every preset through pl.matmul (operands rounded on the device too), with NaN, ±Inf, ±0,
    subnormals and values past the input format's range, K not a multiple of any block."""
    spec = pl.get_preset(name)
    rng = np.random.default_rng(3)
    K = 261 if spec.promote_every else 37
    a = (rng.standard_normal((2, K)) * np.exp2(rng.integers(-12, 12, (2, K)))).astype(np.float32)
    b = rng.standard_normal((K, 2)).astype(np.float32)
    a[0, :10] = [np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-40, 3e38, -3e38, 2.0**-24, 65504.0]
    a[1, :2] = [0.0, 2.0**-20]
    a = np.clip(a, -spec.a_format.max, spec.a_format.max) if not spec.a_format.has_inf else a
    c = rng.standard_normal((2, 2)).astype(np.float32)
    sa, sb = mc.preset_scales(rng, spec, a.shape, b.shape)
    kw = {} if sa is None else {"a_scale": sa, "b_scale": sb}
    if not nc.covers(spec):
        mc.assert_not_covered(lambda: pl.matmul(a, b, spec, c=c, backend="numba_cuda", **kw), spec, "numba_cuda")
        return
    want = pl.matmul(a, b, spec, c=c, backend="numpy", **kw)
    assert_same_bits(pl.matmul(a, b, spec, c=c, backend="numba_cuda", **kw), want, name)


@pytest.mark.parametrize("name", ["h100_fp16", "exact", "torch_cpu_nt", "mi300_fp16", "mi250_fp16"])
@pytest.mark.parametrize("a, b, c, want", [
    ([1.0, math.nan], [1.0, 1.0], 0.0, math.nan),        # NaN operand
    ([0.0, 1.0], [math.inf, 1.0], 0.0, math.nan),        # 0 * Inf
    ([math.inf, 1.0], [1.0, -math.inf], 0.0, math.nan),  # Inf - Inf between products
    ([math.inf, 1.0], [1.0, 1.0], -math.inf, math.nan),  # Inf - Inf with C
    ([math.inf, 2.0], [-1.0, 3.0], 5.0, -math.inf),      # an Inf wins
    ([-0.0, 0.0], [1.0, -1.0], -0.0, -0.0),              # every term -0
    ([1.0, 1.0], [1.0, -1.0], -0.0, 0.0),                # exact cancellation gives +0
])
def test_special_values(name, a, b, c, want):
    def run(backend):
        return pl.matmul(np.array([a]), np.array([b]).T, name, c=np.array([[c]]), backend=backend)[0, 0]

    if not nc.covers(pl.get_preset(name)):
        mc.assert_not_covered(lambda: run("numba_cuda"), pl.get_preset(name), "numba_cuda")
        got = run("numba")
    else:
        got = run("numba_cuda")
    assert (math.isnan(got) and math.isnan(want)) or (got == want and math.copysign(1, got) == math.copysign(1, want))


@pytest.mark.parametrize("shape", [(1, 1), (3, 5), (2, 32)] if SIM else [(1, 32), (7, 64), (4096, 256)])
def test_launch_shape_does_not_matter(shape):
    """DESIGN §5: the random words are a function of (seed, flat output index, event)."""
    spec = dataclasses.replace(pl.get_preset("bf16_accumulate"), step_rounding="sr", output_rounding="sr_equal",
                               order="lanes(4)")
    rng = np.random.default_rng(1)
    a3 = pl.round(rng.standard_normal((2, 3, 9)), "bf16")
    b3 = pl.round(rng.standard_normal((2, 9, 4)), "bf16")
    c3 = pl.round(rng.standard_normal((2, 3, 4)), "bf16")
    blocks, threads = shape
    check_kernel(lambda *args: nc.matmul_values(*args, blocks=blocks, threads=threads), a3, b3, c3, None, None,
                 spec, 77, str(shape))


def test_front_end_by_name_never_auto():
    a = np.ones((2, 3), np.float32)
    b = np.ones((3, 2), np.float32)
    assert_same_bits(pl.matmul(a, b, "h100_fp16", backend="numba_cuda"), pl.matmul(a, b, "h100_fp16", backend="numpy"),
                     "ones")
    assert select_backend("auto", a).name == "numba"        # the simulator (and the GPU) only by name
    d = pl.matmul(np.zeros((1, 2, 0)), np.zeros((3, 0, 2)), "exact", backend="numba_cuda")
    assert d.shape == (3, 2, 2) and not d.any()


@pytest.mark.parametrize("kwargs, words", [
    (dict(a_format="fp32", b_format=pl.Format(8, 30, name="e8m30")), "mantissa bits"),
    (dict(a_format="fp16", step="fused", k_fused=4, n_frac=58), "n_frac=58"),
    (dict(a_format="fp16", step="exact", accumulator="fp64", output_format="fp64"), "exact accumulator"),
])
def test_specs_it_cannot_compute_are_an_error(kwargs, words):
    spec = MatmulSpec(**kwargs)
    assert words in matmul_unsupported(spec)
    with pytest.raises(ValueError, match="backend='numba_cuda' cannot compute"):
        pl.matmul(np.ones((1, 2)), np.ones((2, 1)), spec, backend="numba_cuda")
    assert pl.matmul(np.ones((1, 2)), np.ones((2, 1)), spec, backend="numpy")[0, 0] == 2.0


def test_the_presets_not_covered_are_the_cpu_frameworks():
    """Composite orders and scale_at='products' / 'output' (the CPU frameworks' presets) are not
    implemented by the GPU kernels: they raise, and no other preset does."""
    uncovered = {n: matmul_unsupported(s) for n, s in pl.presets.items() if not nc.covers(s)}
    assert set(uncovered) == {"torch_cpu_nt", "torch_cpu_amx_bf16", "torch_cpu_onednn_fp16", "jax_cpu_dot",
                              "jax_cpu_bf16_f32", "torch_cpu_scaled_mm"}
    assert all(uncovered[n].startswith("order=") for n in uncovered if n != "torch_cpu_scaled_mm")
    assert uncovered["torch_cpu_scaled_mm"].startswith("scale_at='products'")


@pytest.mark.parametrize("kwargs, words", [
    (dict(order="group(sequential)"), "order='group(sequential)' is a composite order; the GPU kernels run the "
                                      "orders sequential, interleaved, lanes, pairwise, blocked"),
    (dict(order="blocked(4,lanes(2))"), "order='blocked(4,lanes(2))' is a composite order"),
    (dict(order="strided(3)"), "order='strided(3)' is a composite order"),
    (dict(order="split(2,sequential,pairwise)"), "order='split(2,sequential,pairwise)'"),
    (dict(a_scale_block=(None, None), b_scale_block=(None, None), scale_at="products"),
     "scale_at='products'; the GPU kernels scale at 'operands' or 'promotion'"),
    (dict(a_scale_block=(None, None), b_scale_block=(None, None), scale_at="output"), "scale_at='output'"),
])
def test_composite_orders_and_cpu_scaling_are_an_error(kwargs, words):
    """Never a KeyError or a wrong answer: a ValueError naming the parameter, its value and what
    the GPU kernels run."""
    spec = MatmulSpec(a_format="bf16", **kwargs)
    assert words in matmul_unsupported(spec) and not nc.covers(spec)
    kw = {"a_scale": np.ones((1, 1)), "b_scale": np.ones((1, 1))} if spec.has_scales else {}
    with pytest.raises(ValueError, match="backend='numba_cuda' cannot compute") as info:
        pl.matmul(np.ones((1, 5)), np.ones((5, 1)), spec, backend="numba_cuda", **kw)
    assert words in str(info.value)
    assert pl.matmul(np.ones((1, 5)), np.ones((5, 1)), spec, backend="numpy", **kw)[0, 0] == 5.0


# ---- the kernels compile for a real GPU -------------------------------------------------------------

_PTX_SCRIPT = r"""
import sys, types
import numba.cuda.dispatcher as dispatcher
from numba import cuda, types as T
dispatcher.get_current_device = lambda: types.SimpleNamespace(compute_capability=(9, 0))
import numpy as np
from precisionlab.backends import numba_cuda_matmul as MM
src = open(sys.argv[1]).read()
ns = {"cuda": cuda, "MM": MM, "U64": np.uint64}
kernels = src[src.index("@cuda.jit(cache=True)\ndef _matmul_kernel"):src.index("def _scaled")]
exec(kernels.replace("@cuda.jit(cache=True)", "@cuda.jit"), ns)
fp = T.Tuple([T.int64] * 5 + [T.uint64] * 4)
sp = T.Tuple([T.int64] * 4 + [T.uint64])
arr = T.uint64[:, :, ::1]
sig = T.void(arr, arr, arr, arr, arr, arr, T.UniTuple(T.int64, len(MM.MATMUL_FIELDS)), T.UniTuple(T.Tuple([fp, sp]), 6))
for kernel, signature in [("_matmul_kernel", sig), ("_scale_kernel", T.void(T.uint64[::1], T.uint64[::1],
                                                                             T.uint64[::1], fp, sp))]:
    ptx, _ = cuda.compile_ptx(ns[kernel].py_func, signature, cc=(9, 0))
    floats = [l for l in ptx.splitlines() if ".f64" in l or ".f32" in l]
    assert ".entry" in ptx and not floats, (kernel, floats[:5])
print("ok")
"""


def test_kernels_compile_to_ptx_for_a_real_gpu():
    """The simulator runs Python; this compiles the matmul kernels with numba-cuda for sm_90 (in a
    process without the simulator): typing errors, or integer code that Numba typed as floating
    point (uint64 op int64), would show up here as errors or as .f64 instructions."""
    try:
        from cuda.bindings import nvrtc
        nvrtc.nvrtcVersion()
    except Exception as exc:
        pytest.skip(f"NVRTC is not loadable here ({type(exc).__name__}): numba-cuda needs it to compile PTX")
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    proc = subprocess.run([sys.executable, "-c", _PTX_SCRIPT, str(Path(nc.__file__))], capture_output=True, text=True,
                          env=env, timeout=900)
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-3000:]
