"""The numba_cuda backend bit for bit against the NumPy reference (DESIGN §7).

Without a GPU the kernels run on Numba's CUDA simulator (tests/gpu/conftest.py sets
NUMBA_ENABLE_CUDASIM=1), which executes every CUDA thread as a Python thread, so the
arrays here are small; with PRECISIONLAB_REAL_GPU=1 the same tests run on the device.
The device functions are also compiled for a real GPU (PTX) where NVRTC is loadable.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from oracle import MODES, POLICIES
from test_backends import assert_same_bits
from test_rounding import fits_float32, formats_st, values_st

import precisionlab as pl
from precisionlab.backends import available_backends, get_backend, select_backend
from precisionlab.backends import numpy_backend as ref
from precisionlab.rounding import _contains_float32, make_round_spec

try:
    nc = get_backend("numba_cuda")
except RuntimeError as exc:
    pytest.skip(f"numba_cuda is not available: {exc}", allow_module_level=True)

SIM = nc.SIMULATED
REAL_GPU = os.environ.get("PRECISIONLAB_REAL_GPU") == "1"
if REAL_GPU and SIM:
    pytest.skip("PRECISIONLAB_REAL_GPU=1 but numba.cuda runs on the simulator", allow_module_level=True)


@st.composite
def small_cases(draw):
    """The CPU kernels' corpus (test_backends.backend_cases) with simulator-sized bulks."""
    fmt = draw(formats_st)
    dtype = draw(st.sampled_from([np.float32, np.float64])) if fits_float32(fmt) else np.float64
    listed = draw(st.lists(values_st(fmt, dtype), min_size=1, max_size=24))
    n_bulk = draw(st.sampled_from([0, 1, 7, 40] if SIM else [0, 1, 1000, 100_000]))
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
    return fmt, x, kw


def _spec(fmt, kw):
    return make_round_spec(fmt, kw["rounding"], kw["overflow"], kw["subnormals"], kw["flush_inputs"],
                           kw.get("seed"), kw.get("sr_bits"))


@settings(max_examples=150 if SIM else 300, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(case=small_cases(), start=st.integers(0, 2**64 - 1))
def test_numba_cuda_equals_numpy(case, start):
    fmt, x, kw = case
    spec = _spec(fmt, kw)
    ctx = f"{fmt} {x.dtype} {kw} start={start}"
    assert_same_bits(nc.round_values(x, spec, start), ref.round_values(x, spec, start), "round " + ctx)
    assert_same_bits(nc.encode_values(x, spec, start), ref.encode_values(x, spec, start), "encode " + ctx)


def _corpus(fmt, dtype, rng, n_random):
    """Specials, the format's extremes and their neighbours, ties, and random bit patterns."""
    m = fmt.mantissa_bits
    pts = [0.0, np.inf, np.nan, fmt.max, fmt.smallest_normal, fmt.smallest_subnormal,
           fmt.max * (1 + 2.0 ** -(m + 1)), fmt.max * (1 + 2.0 ** -m), 2 * fmt.max,
           fmt.smallest_subnormal / 2, fmt.smallest_subnormal * 0.75, fmt.smallest_normal * (1 - 2.0 ** -(m + 2)),
           1 + 2.0 ** -(m + 1), 1 + 3 * 2.0 ** -(m + 1), 1 + 2.0 ** -(m + 2), 1.0]
    with np.errstate(over="ignore"):
        x = np.array(pts, dtype)
        x = np.concatenate([x, np.nextafter(x, dtype(np.inf)), np.nextafter(x, dtype(0))])
    width = np.uint32 if dtype == np.float32 else np.uint64
    bits = rng.integers(0, np.iinfo(width).max, n_random, dtype=np.uint64, endpoint=True).astype(width)
    x = np.concatenate([x, -x, bits.view(dtype)])
    return np.where(np.isnan(x), dtype(1.0), x) if fmt.nan == "none" else x


@pytest.mark.parametrize("fmt", list(pl.formats.values()), ids=lambda f: f.name)
def test_every_mode_and_policy_on_catalogue(fmt):
    """Every catalogue format x mode x overflow policy, FTZ and DAZ in turn, both input widths."""
    rng = np.random.default_rng(zlib.crc32(fmt.name.encode()))
    dtypes = [np.float64] + ([np.float32] if fits_float32(fmt) or _contains_float32(fmt) else [])
    for dtype in dtypes:
        x = _corpus(fmt, dtype, rng, 16 if SIM else 100_000)
        for i, mode in enumerate(MODES):
            for j, policy in enumerate(POLICIES):
                sub, daz = [(True, False), (False, False), (True, True)][(i + j) % 3]
                spec = make_round_spec(fmt, mode, policy, sub, daz, seed=i * 7 + j if mode in ("sr", "sr_equal")
                                       else None)
                ctx = f"{fmt} {mode} {policy} sub={sub} daz={daz} {np.dtype(dtype)}"
                assert_same_bits(nc.round_values(x, spec, 5), ref.round_values(x, spec, 5), "round " + ctx)
                assert_same_bits(nc.encode_values(x, spec, 5), ref.encode_values(x, spec, 5), "encode " + ctx)


@pytest.mark.parametrize("sr_bits", [1, 2, 3, 8, 23, 53, 64])
def test_sr_bits(sr_bits):
    """rounding='sr' with N random bits; with few bits R hits the threshold exactly often."""
    rng = np.random.default_rng(sr_bits)
    for name in ("bf16", "e4m3"):
        fmt = pl.get_format(name)
        for dtype in (np.float32, np.float64):
            x = _corpus(fmt, dtype, rng, 48 if SIM else 100_000)
            spec = make_round_spec(fmt, "sr", seed=int(rng.integers(0, 2**63)), sr_bits=sr_bits)
            ctx = f"{name} sr_bits={sr_bits} {np.dtype(dtype)}"
            assert_same_bits(nc.round_values(x, spec, 1), ref.round_values(x, spec, 1), "round " + ctx)
            assert_same_bits(nc.encode_values(x, spec, 1), ref.encode_values(x, spec, 1), "encode " + ctx)


@pytest.mark.parametrize("fmt", [f for f in pl.formats.values() if f.bits <= 8 or f.name in ("fp16", "fp32", "fp64")],
                         ids=lambda f: f.name)
def test_decode_equals_numpy(fmt):
    if fmt.bits <= 8:
        codes = np.arange(1 << fmt.bits, dtype=np.uint16).astype(fmt.code_dtype)
    else:
        rng = np.random.default_rng(fmt.bits)
        n = 300 if SIM else 1_000_000
        codes = rng.integers(0, 1 << fmt.bits, n, dtype=np.uint64, endpoint=False).astype(fmt.code_dtype)
        codes = np.concatenate([codes, np.array([0, fmt.sign_mask, fmt.inf_code or 0, fmt.nan_code or 0,
                                                 fmt._max_magnitude_code, 1], fmt.code_dtype)])
    assert_same_bits(nc.decode_codes(codes, fmt), ref.decode_codes(codes, fmt), f"decode {fmt}")


@settings(max_examples=25 if SIM else 200, deadline=None)
@given(fmt=formats_st, seed=st.integers(0, 2**32 - 1))
def test_decode_custom_formats(fmt, seed):
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 1 << fmt.bits, 40, dtype=np.uint64, endpoint=False).astype(fmt.code_dtype)
    assert_same_bits(nc.decode_codes(codes, fmt), ref.decode_codes(codes, fmt), f"decode {fmt}")


@pytest.mark.parametrize("mode", ["sr", "sr_equal", "rne"])
def test_launch_shape_does_not_matter(mode):
    """DESIGN §5: the random word is a function of (seed, flat index), not of the thread."""
    rng = np.random.default_rng(3)
    x = (rng.standard_normal(96 if SIM else 1_000_003) * 10).astype(np.float32)
    spec = make_round_spec("e4m3", mode, seed=99 if mode != "rne" else None)
    shapes = [(1, 1), (3, 5), (2, 32)] if SIM else [(1, 32), (7, 64), (4096, 256)]
    results = [nc.round_values(x, spec, 0, blocks=b, threads=t) for b, t in shapes]
    for r in results[1:]:
        assert_same_bits(r, results[0], "launch shape")
    assert_same_bits(results[0], ref.round_values(x, spec, 0), "vs numpy")


def test_front_end_by_name_and_never_auto():
    x = np.linspace(-500, 500, 41).astype(np.float32)
    assert_same_bits(pl.round(x, "e4m3", backend="numba_cuda"), pl.round(x, "e4m3", backend="numpy"), "round")
    codes = pl.encode(x.reshape(1, -1, 1), "bf16", backend="numba_cuda")
    assert codes.shape == (1, 41, 1) and codes.dtype == np.uint16
    assert_same_bits(pl.decode(codes, "bf16", backend="numba_cuda"), pl.decode(codes, "bf16", backend="numpy"), "dec")
    assert "numba_cuda" in available_backends()
    assert select_backend("auto", x).name == "numba"      # the simulator (and the GPU) only by name


def test_empty_and_scalar_inputs():
    assert pl.round(np.zeros(0, np.float32), "bf16", backend="numba_cuda").shape == (0,)
    r = pl.round(np.float64(1 / 3), "fp16", backend="numba_cuda")
    assert r.shape == () and r == pl.round(np.float64(1 / 3), "fp16", backend="numpy")


def test_device_arrays_stay_on_device():
    """An array with __cuda_array_interface__ (Numba's, or CuPy's) is rounded where it lives."""
    from numba import cuda

    x = np.array([0.1, -2.5, 1e-9, np.inf, np.nan, 70000.0], np.float32)
    spec = make_round_spec("fp16", "rna")
    out = nc.round_values(cuda.to_device(x), spec, 0)
    assert not isinstance(out, np.ndarray) and hasattr(out, "copy_to_host")
    assert_same_bits(out.copy_to_host(), ref.round_values(x, spec, 0), "device round")
    codes = nc.encode_values(cuda.to_device(x), spec, 0)
    assert_same_bits(codes.copy_to_host(), ref.encode_values(x, spec, 0), "device encode")
    back = nc.decode_codes(codes, spec.format)
    assert_same_bits(back.copy_to_host(), ref.decode_codes(ref.encode_values(x, spec, 0), spec.format), "decode")


def _nvrtc_or_skip():
    try:
        from cuda.bindings import nvrtc
        nvrtc.nvrtcVersion()
    except Exception as exc:
        pytest.skip(f"NVRTC is not loadable here ({type(exc).__name__}): numba-cuda needs it to compile PTX")


_PTX_SCRIPT = r"""
import sys, types
import numba.cuda.dispatcher as dispatcher
from numba import cuda, types as T
# compile for sm_90 without a device: device functions ask the current device for its CC
dispatcher.get_current_device = lambda: types.SimpleNamespace(compute_capability=(9, 0))
import numpy as np
from precisionlab.backends import numba_cuda_device as D
src = open(sys.argv[1]).read()
ns = {"cuda": cuda, "D": D, "U64": np.uint64}
kernels = src[src.index("# ---- rounding kernels"):src.index("# ---- host side")]
exec(kernels.replace("@cuda.jit(cache=True)", "@cuda.jit"), ns)      # exec'd text has no file to cache for
fp = T.Tuple([T.int64] * 5 + [T.uint64] * 4)
sp = T.Tuple([T.int64] * 4 + [T.uint64])
for kernel, bits, out in [("_round_kernel", T.uint32, T.uint32), ("_round_kernel", T.uint64, T.uint64),
                          ("_encode_kernel", T.uint32, T.uint8), ("_encode_kernel", T.uint64, T.uint64)]:
    ptx, _ = cuda.compile_ptx(ns[kernel].py_func, T.void(bits[::1], out[::1], T.boolean, T.uint64, fp, sp), cc=(9, 0))
    assert ".entry" in ptx and not [l for l in ptx.splitlines() if ".f64" in l or ".f32" in l], kernel
ptx, _ = cuda.compile_ptx(ns["_decode_kernel"].py_func, T.void(T.uint16[::1], T.uint32[::1], T.boolean, fp),
                          cc=(9, 0))
assert ".entry" in ptx and not [l for l in ptx.splitlines() if ".f64" in l or ".f32" in l], "decode"
print("ok")
"""


def test_kernels_compile_to_ptx_for_a_real_gpu():
    """The simulator runs Python; this compiles the same kernels with numba-cuda for sm_90
    (in a process without the simulator): typing errors, or integer code that Numba typed
    as floating point (uint64 op int64), would show up here."""
    _nvrtc_or_skip()
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    backend_src = Path(nc.__file__)
    proc = subprocess.run([sys.executable, "-c", _PTX_SCRIPT, str(backend_src)], capture_output=True, text=True,
                          env=env, timeout=600)
    assert proc.returncode == 0 and "ok" in proc.stdout, proc.stderr[-3000:]
