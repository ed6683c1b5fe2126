"""The cupy backend's Python side without a GPU: cupy_backend.py driven through a stand-in
``cupy`` (tests/gpu/fake_cupy.py) whose kernels are the host-compiled round.cuh and matmul.cuh.

This checks what only a GPU run would otherwise show: the source and template names the
backend compiles, the exact C types and order of every kernel argument, the choice of the
32-bit or 64-bit kernels, output dtypes, host-array copies, and the front end's CuPy path
(auto picks cupy, CuPy arrays in give CuPy arrays out, validation on CuPy arrays), for
rounding and matmul.
"""

from __future__ import annotations

import dataclasses

import fake_cupy
import matmul_cases
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_backends import assert_same_bits, backend_cases

import precisionlab as pl
from precisionlab import backends
from precisionlab.backends import cuda as plcuda
from precisionlab.backends import numpy_backend as ref
from precisionlab.rounding import make_round_spec


def _spec(fmt, kw):
    return make_round_spec(fmt, kw["rounding"], kw["overflow"], kw["subnormals"], kw["flush_inputs"],
                           kw.get("seed"), kw.get("sr_bits"))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                                                 HealthCheck.function_scoped_fixture])
@given(case=backend_cases(), start=st.integers(0, 2**64 - 1))
def test_backend_glue_equals_numpy(cb, case, start):
    fmt, x, kw = case
    kw.pop("via", None)
    spec = _spec(fmt, kw)
    flat = x.reshape(-1)
    ctx = f"{fmt} {x.dtype} {kw} start={start}"
    want_values, want_codes = ref.round_values(flat, spec, start), ref.encode_values(flat, spec, start)
    got = cb.round_values(flat, spec, start)                       # host array: copied over and back
    assert type(got) is np.ndarray
    assert_same_bits(got, want_values, "round (host array) " + ctx)
    dev = fake_cupy.asarray(flat)
    got = cb.round_values(dev, spec, start)
    assert isinstance(got, fake_cupy.ndarray)
    assert_same_bits(got.get(), want_values, "round " + ctx)
    codes = cb.encode_values(dev, spec, start)
    assert isinstance(codes, fake_cupy.ndarray) and codes.dtype == fmt.code_dtype
    assert_same_bits(codes.get(), want_codes, "encode " + ctx)
    back = cb.decode_codes(codes, fmt)
    assert_same_bits(back.get(), ref.decode_codes(want_codes, fmt), "decode " + ctx)


def test_kernel_choice_and_launch_shape(cb):
    x32 = fake_cupy.asarray(np.linspace(-3, 3, 100_000, dtype=np.float32))
    cb.round_values(x32, make_round_spec("e4m3"), 0)
    cb.round_values(x32, make_round_spec("fp64"), 0)
    cb.round_values(fake_cupy.asarray(np.ones(10)), make_round_spec("e4m3"), 0)
    cb.encode_values(x32, make_round_spec("bf16"), 0)
    cb.decode_codes(fake_cupy.asarray(np.arange(256, dtype=np.uint8)), pl.get_format("e5m2"))
    cb.decode_codes(fake_cupy.asarray(np.arange(256, dtype=np.uint64)), pl.get_format("fp64"))
    names = [name for name, _, _ in fake_cupy.RawModule.launches]
    assert names == [plcuda.round_kernel_name(False, True), plcuda.round_kernel_name(False, False),
                     plcuda.round_kernel_name(True, False), plcuda.encode_kernel_name(False, True, 2),
                     plcuda.decode_kernel_name(1, False, True), plcuda.decode_kernel_name(8, True, False)]
    _, grid, block = fake_cupy.RawModule.launches[0]
    assert block == (256,) and grid == (min(-(-100_000 // 256), 4 * 32),)
    assert cb.round_values(fake_cupy.asarray(np.zeros(0, np.float32)), make_round_spec("bf16"), 0).size == 0


def test_front_end_with_cupy_arrays(cb):
    x = fake_cupy.asarray(np.linspace(-500, 500, 1001, dtype=np.float32).reshape(7, 11, 13)[:, ::2])
    assert backends.select_backend("auto", x) is cb
    y = pl.round(x, "e4m3", rounding="sr", seed=5)
    assert isinstance(y, fake_cupy.ndarray) and y.shape == x.shape and y.dtype == np.float32
    assert_same_bits(y.get(), pl.round(x.get(), "e4m3", rounding="sr", seed=5, backend="numpy"), "round")
    codes = pl.encode(x, "bf16")
    assert isinstance(codes, fake_cupy.ndarray) and codes.dtype == np.uint16 and codes.shape == x.shape
    back = pl.decode(codes, "bf16")
    assert isinstance(back, fake_cupy.ndarray)
    assert_same_bits(back.get(), pl.decode(codes.get(), "bf16", backend="numpy"), "decode")
    with pytest.raises(ValueError, match="NaN"):
        pl.round(fake_cupy.asarray(np.array([1.0, np.nan], np.float32)), "fp4_e2m1")
    with pytest.raises(TypeError, match="dtype"):
        pl.round(fake_cupy.asarray(np.arange(3)), "bf16")
    with pytest.raises(ValueError, match="outside"):
        pl.decode(fake_cupy.asarray(np.array([300], np.uint16)), "e4m3")
    with pytest.raises(TypeError, match="CuPy array"):
        pl.round(fake_cupy.asarray(np.ones(3, np.float32)), "bf16", backend="numba")


# ---- matmul ------------------------------------------------------------------------------------

@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                                                 HealthCheck.data_too_large,
                                                                 HealthCheck.function_scoped_fixture])
@given(spec=matmul_cases.covered_specs(), M=st.integers(1, 3), N=st.integers(1, 3), K=st.integers(0, 17),
       data=st.data(), specials=st.booleans(), seed=st.integers(0, 2**64 - 1))
def test_matmul_glue_equals_the_reference(cb, spec, M, N, K, data, specials, seed):
    """cupy_backend.matmul_values with host arrays (copied over and back) and device arrays, the
    kernels the host-compiled matmul.cuh: the parameter array, scale pre-pass and argument types."""
    a, b, c, sa, sb = matmul_cases.draw_case(data, spec, M, N, K, specials, True)
    args = matmul_cases.kernel_inputs(a, b, c, sa, sb, spec)
    matmul_cases.check_kernel(cb.matmul_values, *args, spec, seed, "host arrays")
    dev = [None if x is None else fake_cupy.asarray(x) for x in args]
    got = cb.matmul_values(*dev, spec, seed)
    assert isinstance(got, fake_cupy.ndarray)
    matmul_cases.check_kernel(lambda *_: got.get(), *args, spec, seed, "device arrays")


def test_matmul_front_end_with_cupy_arrays(cb):
    """backend='auto' sends CuPy operands to the cupy backend's matmul kernel (DESIGN §7): CuPy in,
    CuPy out, bit for bit the reference; NumPy c / scales go to the device, mixed operands are an error."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((2, 3, 40)).astype(np.float32)
    b = rng.standard_normal((40, 5)).astype(np.float32)
    c = rng.standard_normal(5).astype(np.float32)
    for spec, kw in [("h100_fp16", {}), ("mi250_fp16", {"c": c}), ("exact", {"c": c}),
                     ("deepseek_fp8", {"a_scale": np.full((3, 1), 0.5, np.float32),
                                       "b_scale": fake_cupy.asarray(np.full((1, 1), 4.0, np.float32))}),
                     (dataclasses.replace(pl.get_preset("torch_cpu_nn"), a_scale_block=(1, None),
                                          b_scale_block=(None, None)),
                      {"a_scale": rng.uniform(0.5, 2, (3, 1)), "b_scale": np.float64(3.0)})]:
        fake_cupy.RawModule.launches = []
        got = pl.matmul(fake_cupy.asarray(a), fake_cupy.asarray(b), spec, **kw)
        assert isinstance(got, fake_cupy.ndarray) and got.shape == (2, 3, 5) and got.dtype == np.float32
        host_kw = {k: (v.get() if isinstance(v, fake_cupy.ndarray) else v) for k, v in kw.items()}
        assert_same_bits(got.get(), pl.matmul(a, b, spec, backend="numpy", **host_kw), str(spec)[:40])
        names = [name for name, _, _ in fake_cupy.RawModule.launches]
        assert names.count(plcuda.MATMUL_KERNEL) == 1, names
        assert (plcuda.SCALE_KERNEL in names) == (not isinstance(spec, str)), names     # scales at the operands
        _, grid, block = fake_cupy.RawModule.launches[-1]
        assert block == (128,) and grid == (1,)
    with pytest.raises(TypeError, match="both as NumPy"):
        pl.matmul(fake_cupy.asarray(a), b, "h100_fp16")
    with pytest.raises(TypeError, match="CuPy array"):
        pl.matmul(a, b, "h100_fp16", c=fake_cupy.asarray(c))
    with pytest.raises(ValueError, match="backend='cupy' cannot compute"):
        pl.matmul(fake_cupy.asarray(a), fake_cupy.asarray(b), pl.MatmulSpec(a_format="fp64"))
    with pytest.raises(TypeError, match="CuPy array"):
        pl.matmul(fake_cupy.asarray(a), fake_cupy.asarray(b), "h100_fp16", backend="numba")
    empty = pl.matmul(fake_cupy.asarray(np.zeros((2, 0), np.float32)), fake_cupy.asarray(np.zeros((0, 3), np.float32)),
                      "h100_fp16")
    assert isinstance(empty, fake_cupy.ndarray) and empty.get().tolist() == [[0.0] * 3] * 2


@pytest.mark.parametrize("name", sorted(n for n, s in pl.presets.items() if plcuda.matmul_unsupported(s) is not None))
def test_matmul_presets_not_covered_are_an_error(cb, name):
    """The CPU frameworks' composite orders and scale_at='products' / 'output' on CuPy operands:
    the ValueError naming the parameter before any kernel runs, never a KeyError or a result."""
    spec = pl.get_preset(name)
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((3, 40)).astype(np.float32), rng.standard_normal((40, 2)).astype(np.float32)
    sa, sb = matmul_cases.preset_scales(rng, spec, a.shape, b.shape)
    kw = {} if sa is None else {"a_scale": fake_cupy.asarray(sa), "b_scale": fake_cupy.asarray(sb)}
    assert not cb.covers(spec)
    fake_cupy.RawModule.launches = []
    matmul_cases.assert_not_covered(lambda: pl.matmul(fake_cupy.asarray(a), fake_cupy.asarray(b), spec, **kw), spec,
                                    "cupy")
    assert plcuda.MATMUL_KERNEL not in [launch[0] for launch in fake_cupy.RawModule.launches]
