"""The cupy backend on a real GPU, rounding and matmul bit for bit against the NumPy reference
(DESIGN §7, §11).

Runs only where CuPy, a CUDA driver and a device are present (the lent GPU machine); it
skips elsewhere, saying which is missing.  The CUDA C arithmetic itself is checked without
a GPU by test_cuda_host.py and test_cuda_host_matmul.py.
"""

from __future__ import annotations

import zlib

import matmul_cases
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from oracle import MODES, POLICIES
from test_backends import assert_same_bits, backend_cases

import precisionlab as pl
from precisionlab.backends import get_backend, select_backend
from precisionlab.backends import numpy_backend as ref
from precisionlab.rounding import make_round_spec

try:
    cb = get_backend("cupy")
except RuntimeError as exc:
    pytest.skip(f"no CuPy GPU here: {exc}", allow_module_level=True)

import cupy  # noqa: E402  (only where the backend loaded)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(case=backend_cases(), start=st.integers(0, 2**64 - 1))
def test_cupy_equals_numpy(case, start):
    """The CPU kernels' corpus, host arrays (copied) and CuPy arrays."""
    fmt, x, kw = case
    kw.pop("via", None)
    spec = make_round_spec(fmt, kw["rounding"], kw["overflow"], kw["subnormals"], kw["flush_inputs"],
                           kw.get("seed"), kw.get("sr_bits"))
    flat = x.reshape(-1)
    ctx = f"{fmt} {x.dtype} {kw} start={start}"
    want_round, want_codes = ref.round_values(flat, spec, start), ref.encode_values(flat, spec, start)
    assert_same_bits(cb.round_values(flat, spec, start), want_round, "round (host) " + ctx)
    assert_same_bits(cb.encode_values(flat, spec, start), want_codes, "encode (host) " + ctx)
    assert_same_bits(cb.round_values(cupy.asarray(flat), spec, start).get(), want_round, "round " + ctx)
    assert_same_bits(cb.encode_values(cupy.asarray(flat), spec, start).get(), want_codes, "encode " + ctx)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", ["bf16", "e4m3", "fp16", "e8m0", "fp4_e2m1", "e5m2fnuz"])
def test_cupy_equals_numpy_bulk(name, mode):
    rng = np.random.default_rng(zlib.crc32(f"{name}/{mode}".encode()))
    x = rng.integers(0, 2**32, 1_000_000, dtype=np.uint64).astype(np.uint32).view(np.float32)
    if pl.get_format(name).nan == "none":
        x = np.where(np.isnan(x), np.float32(1), x)
    x64 = rng.standard_normal(200_000) * 2.0 ** rng.integers(-140, 140, 200_000)
    xd, x64d = cupy.asarray(x), cupy.asarray(x64)
    for policy in POLICIES:
        for sub, daz in ((True, False), (False, False), (True, True)):
            spec = make_round_spec(name, mode, policy, sub, daz, seed=1234 if mode in ("sr", "sr_equal") else None)
            ctx = f"{name} {mode} {policy} sub={sub} daz={daz}"
            assert_same_bits(cb.round_values(xd, spec, 0).get(), ref.round_values(x, spec, 0), ctx)
            assert_same_bits(cb.encode_values(xd, spec, 0).get(), ref.encode_values(x, spec, 0), ctx)
            assert_same_bits(cb.round_values(x64d, spec, 0).get(), ref.round_values(x64, spec, 0), ctx + " f64")


@pytest.mark.parametrize("fmt", list(pl.formats.values()), ids=lambda f: f.name)
def test_cupy_decode_equals_numpy(fmt):
    if fmt.bits <= 16:
        codes = np.arange(1 << fmt.bits, dtype=np.uint32).astype(fmt.code_dtype)
    else:
        codes = np.random.default_rng(0).integers(0, 1 << fmt.bits, 1_000_000, dtype=np.uint64,
                                                  endpoint=False).astype(fmt.code_dtype)
    assert_same_bits(cb.decode_codes(cupy.asarray(codes), fmt).get(), ref.decode_codes(codes, fmt), fmt.name)


def test_front_end_cupy_in_cupy_out():
    x = cupy.asarray(np.linspace(-500, 500, 1001, dtype=np.float32).reshape(7, 11, 13)[:, ::2])   # strided view
    assert select_backend("auto", x).name == "cupy"
    y = pl.round(x, "e4m3", rounding="sr", seed=5)
    assert isinstance(y, cupy.ndarray) and y.shape == x.shape and y.dtype == np.float32
    assert_same_bits(y.get(), pl.round(x.get(), "e4m3", rounding="sr", seed=5, backend="numpy"), "round")
    codes = pl.encode(x, "bf16")
    assert isinstance(codes, cupy.ndarray) and codes.dtype == np.uint16
    back = pl.decode(codes, "bf16")
    assert isinstance(back, cupy.ndarray)
    assert_same_bits(back.get(), pl.decode(codes.get(), "bf16", backend="numpy"), "decode")


def test_front_end_validates_cupy_arrays():
    with pytest.raises(ValueError, match="NaN"):
        pl.round(cupy.asarray(np.array([1.0, np.nan], np.float32)), "fp4_e2m1")
    with pytest.raises(TypeError, match="dtype"):
        pl.round(cupy.arange(3), "bf16")
    with pytest.raises(ValueError, match="outside"):
        pl.decode(cupy.asarray(np.array([300], np.uint16)), "e4m3")
    with pytest.raises(TypeError, match="CuPy array"):
        pl.round(cupy.ones(3, np.float32), "bf16", backend="numba")


def test_numba_cuda_on_cupy_arrays_matches_cupy():
    """Both GPU backends on the same device data (CuPy arrays into numba_cuda come back as CuPy)."""
    nc = get_backend("numba_cuda")
    if nc.SIMULATED:
        pytest.skip("numba.cuda runs on the simulator here; set PRECISIONLAB_REAL_GPU=1 for the device")
    x = cupy.asarray(np.random.default_rng(1).standard_normal(100_000).astype(np.float32) * 1000)
    for mode in MODES:
        spec = make_round_spec("e5m2", mode, seed=3 if mode in ("sr", "sr_equal") else None)
        a, b = nc.round_values(x, spec, 0), cb.round_values(x, spec, 0)
        assert isinstance(a, cupy.ndarray)
        assert_same_bits(a.get(), b.get(), mode)


# ---- matmul -----------------------------------------------------------------------------------

@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                                                  HealthCheck.data_too_large])
@given(spec=matmul_cases.covered_specs(), M=st.integers(1, 3), N=st.integers(1, 5), K=st.integers(0, 21),
       data=st.data(), specials=st.booleans(), seed=st.integers(0, 2**64 - 1))
def test_cupy_matmul_equals_the_reference(spec, M, N, K, data, specials, seed):
    a, b, c, sa, sb = matmul_cases.draw_case(data, spec, M, N, K, specials, True)
    args = matmul_cases.kernel_inputs(a, b, c, sa, sb, spec)
    matmul_cases.check_kernel(cb.matmul_values, *args, spec, seed, "host arrays")
    got = cb.matmul_values(*[None if x is None else cupy.asarray(x) for x in args], spec, seed)
    matmul_cases.check_kernel(lambda *_: got.get(), *args, spec, seed, "device arrays")


@pytest.mark.parametrize("name", sorted(pl.presets))
def test_cupy_matmul_every_preset(name):
    """Every preset through pl.matmul on CuPy operands (auto picks cupy), against the reference."""
    spec = pl.get_preset(name)
    rng = np.random.default_rng(3)
    K = 300 if spec.promote_every else 133
    a = (rng.standard_normal((2, 6, K)) * np.exp2(rng.integers(-12, 12, (2, 6, K)))).astype(np.float32)
    a[0, 0, :6] = [np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-40]
    a = np.clip(a, -spec.a_format.max, spec.a_format.max) if not spec.a_format.has_inf else a
    b = rng.standard_normal((K, 7)).astype(np.float32)
    sa, sb = matmul_cases.preset_scales(rng, spec, a.shape, b.shape)
    kw = {} if sa is None else {"a_scale": sa, "b_scale": sb}
    if not cb.covers(spec):
        matmul_cases.assert_not_covered(lambda: pl.matmul(cupy.asarray(a), cupy.asarray(b), spec, **{
            k: cupy.asarray(v) for k, v in kw.items()}), spec, "cupy")
        return
    got = pl.matmul(cupy.asarray(a), cupy.asarray(b), spec, **{k: cupy.asarray(v) for k, v in kw.items()})
    assert isinstance(got, cupy.ndarray)
    assert_same_bits(got.get(), pl.matmul(a, b, spec, backend="numpy", **kw), name)


def test_numba_cuda_and_cupy_matmul_agree():
    """Both GPU backends on the same device data, stochastic rounding included, larger than the
    reference can check."""
    nc = get_backend("numba_cuda")
    if nc.SIMULATED:
        pytest.skip("numba.cuda runs on the simulator here; set PRECISIONLAB_REAL_GPU=1 for the device")
    import dataclasses

    rng = np.random.default_rng(1)
    a = cupy.asarray(rng.standard_normal((64, 1000)).astype(np.float32))
    b = cupy.asarray(rng.standard_normal((1000, 48)).astype(np.float32))
    for name in ("h100_fp16", "torch_cpu_nn", "mi250_fp16", "exact", "deepseek_fp8"):
        spec = dataclasses.replace(pl.get_preset(name), output_rounding="sr")
        kw = {}
        if spec.a_scale_block is not None:
            kw = {"a_scale": cupy.full((64, 8), 0.5, np.float32), "b_scale": cupy.full((8, 1), 2.0, np.float32)}
        x = pl.matmul(a, b, spec, seed=4, backend="cupy", **kw)
        y = pl.matmul(a, b, spec, seed=4, backend="numba_cuda", **kw)
        assert_same_bits(x.get(), y.get(), name)
