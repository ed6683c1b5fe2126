"""The cupy backend's Python side without a GPU: cupy_backend.py driven through a stand-in
``cupy`` (tests/gpu/fake_cupy.py) whose kernels are the host-compiled round.cuh.

This checks what only a GPU run would otherwise show: the source and template names the
backend compiles, the exact C types and order of every kernel argument, the choice of the
32-bit or 64-bit kernels, output dtypes, host-array copies, and the front end's CuPy path
(auto picks cupy, CuPy arrays in give CuPy arrays out, validation on CuPy arrays).
"""

from __future__ import annotations

import importlib
import sys

import fake_cupy
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_backends import assert_same_bits, backend_cases

import precisionlab as pl
from precisionlab import backends
from precisionlab.backends import cuda as plcuda
from precisionlab.backends import numpy_backend as ref
from precisionlab.backends.cuda import discovery
from precisionlab.rounding import make_round_spec

MODULE = "precisionlab.backends.cupy_backend"


@pytest.fixture
def cb(monkeypatch, host):
    """precisionlab's cupy backend imported against the stand-in cupy."""
    fake_cupy.RawModule.host = host
    fake_cupy.RawModule.launches = []
    monkeypatch.setitem(sys.modules, "cupy", fake_cupy)
    monkeypatch.setattr(discovery, "_probe_result", None)          # "a driver and a device"
    saved = sys.modules.pop(MODULE, None)
    module = importlib.import_module(MODULE)
    monkeypatch.setitem(backends._cache, "cupy", module)
    yield module
    sys.modules.pop(MODULE, None)
    if saved is not None:
        sys.modules[MODULE] = saved
    if hasattr(backends, "cupy_backend"):
        delattr(backends, "cupy_backend")


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
