"""The CUDA C rounding (precisionlab/backends/cuda/round.cuh) compiled for the host, bit for bit
against the NumPy reference, on the property-test corpus of the CPU kernels (DESIGN §7).

The header is built into a shared library once per session with nvcc (-x cu, host code
only), or g++ (the header defines the CUDA qualifiers away) where nvcc is missing; the
reference comparisons run on that build, and a build with the other compiler, where
present, must give the same bits.  Both the path the CuPy backend takes (32-bit kernels
for float32 data of formats inside float32) and the general 64-bit path are checked.
The kernels file is also compiled for the device (nvcc -ptx), and, where the NVRTC
library loads, exactly as CuPy compiles it.
"""

from __future__ import annotations

import shutil
import subprocess
import zlib

import numpy as np
import pytest
from cuda_host import available_compilers, build
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from oracle import MODES, POLICIES
from test_backends import assert_same_bits, backend_cases
from test_rounding import formats_st

import precisionlab as pl
from precisionlab.backends import cuda as plcuda
from precisionlab.backends import numpy_backend as ref
from precisionlab.rounding import _contains_float32, fits_float32, make_round_spec

COMPILERS = available_compilers()
pytestmark = pytest.mark.skipif(not COMPILERS, reason="neither nvcc nor g++ is installed: the CUDA C sources "
                                                      "cannot be compiled for the host")


def _build(compiler, tmp_path_factory):
    return build(compiler, tmp_path_factory.mktemp(f"plcuda-{compiler.replace('+', 'p')}"))


PATHS = ("auto", "general")


def check_round_encode(host, x, spec, start, context):
    """Both paths of the host build against one computation of the reference."""
    want_values, want_codes = ref.round_values(x, spec, start), ref.encode_values(x, spec, start)
    try:
        for path in PATHS:
            host.path = path
            ctx = f"{host.compiler}/{path} {context}"
            assert_same_bits(host.round_values(x, spec, start), want_values, "round " + ctx)
            assert_same_bits(host.encode_values(x, spec, start), want_codes, "encode " + ctx)
    finally:
        host.path = "auto"


def check_decode(host, codes, fmt):
    want = ref.decode_codes(codes, fmt)
    try:
        for path in PATHS:
            host.path = path
            assert_same_bits(host.decode_codes(codes, fmt), want, f"decode {host.compiler}/{path} {fmt}")
    finally:
        host.path = "auto"


def _spec_of(fmt, kw):
    return make_round_spec(fmt, kw.get("rounding", "rne"), kw.get("overflow", "default"), kw.get("subnormals", True),
                           kw.get("flush_inputs", False), kw.get("seed"), kw.get("sr_bits"))


def test_builds_without_warnings(host):
    assert "round.cuh" not in host.warnings and "matmul.cuh" not in host.warnings, host.warnings


@pytest.mark.skipif(len(COMPILERS) < 2, reason="only one of nvcc / g++ is installed")
def test_other_compiler_gives_the_same_bits(host, tmp_path_factory):
    """The g++ build (CUDA qualifiers defined away) equals the nvcc build on every format,
    mode, policy and input width."""
    other = _build(COMPILERS[1], tmp_path_factory)
    assert "round.cuh" not in other.warnings and "matmul.cuh" not in other.warnings, other.warnings
    rng = np.random.default_rng(5)
    x32, x64 = _bulk32(rng, 20_000), _bulk64(rng, 20_000)
    for fmt in pl.formats.values():
        for i, mode in enumerate(MODES):
            spec = make_round_spec(fmt, mode, POLICIES[i % 3], i % 2 == 0, i % 4 == 3,
                                   seed=i if mode in ("sr", "sr_equal") else None)
            for x in (x32, x64) if fits_float32(fmt) or _contains_float32(fmt) else (x64,):
                if fmt.nan == "none":
                    x = np.where(np.isnan(x), x.dtype.type(1.0), x)
                for path in ("auto", "general"):
                    host.path = other.path = path
                    ctx = f"{fmt} {mode} {x.dtype} {path}"
                    assert_same_bits(other.round_values(x, spec, 3), host.round_values(x, spec, 3), ctx)
                    assert_same_bits(other.encode_values(x, spec, 3), host.encode_values(x, spec, 3), ctx)
        host.path = other.path = "auto"
        codes = np.arange(min(1 << fmt.bits, 1 << 16), dtype=np.uint64).astype(fmt.code_dtype)
        assert_same_bits(other.decode_codes(codes, fmt), host.decode_codes(codes, fmt), f"decode {fmt}")


def test_constants_match_python(host):
    expected = [plcuda.MODE_CODES[m] for m in pl.Rounding] + [plcuda.OVERFLOW_CODES[o] for o in pl.Overflow] \
        + [plcuda.NAN_KINDS[k] for k in ("ieee", "fn", "fnuz", "none")] \
        + [plcuda.HAS_INF, plcuda.HAS_ZERO, plcuda.HAS_SUBNORMALS, plcuda.SIGNED,
           plcuda.KEEP_SUBNORMALS, plcuda.FLUSH_INPUTS]
    assert host.constants() == expected


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                                                  HealthCheck.function_scoped_fixture])
@given(case=backend_cases(), start=st.integers(0, 2**64 - 1))
def test_host_equals_numpy(host, case, start):
    """The CPU kernels' corpus (test_backends.backend_cases): random catalogue and custom formats,
    values at/next to/between grid points, every mode, policy, FTZ/DAZ, sr_bits, random counters."""
    fmt, x, kw = case
    if kw.pop("via", None):
        x = x.astype(np.float32).astype(np.float64)
    spec = _spec_of(fmt, kw)
    flat = x.reshape(-1)
    check_round_encode(host, flat, spec, start, f"{fmt} {x.dtype} {kw} start={start}")


def _bulk32(rng, n):
    """Any float32 bit pattern, plus float32 subnormals and the specials."""
    x = rng.integers(0, 2**32, n, dtype=np.uint64).astype(np.uint32).view(np.float32)
    sub = rng.integers(0, 1 << 23, n // 8, dtype=np.uint32).view(np.float32)
    specials = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, -np.nan, 2.0**-149, -(2.0**-149), 2.0**-126],
                        np.float32)
    return np.concatenate([x, sub, -sub, specials])


def _bulk64(rng, n):
    x = rng.standard_normal(n) * 2.0 ** rng.integers(-1074, 1023, n)
    bits = rng.integers(0, 2**64, n, dtype=np.uint64, endpoint=False).view(np.float64)
    sub = rng.integers(0, 1 << 52, n // 8, dtype=np.uint64).view(np.float64)
    return np.concatenate([x, bits, sub, -sub, [0.0, -0.0, np.inf, -np.inf, np.nan, -np.nan]])


def _grid_points(fmt, rng, n, dtype):
    """Random values of the format, the midpoints (ties) to their neighbours, one input ulp
    either side of those, and the same past the largest value (the overflow band)."""
    top = min((1 << (fmt.bits - int(fmt.signed))) - 1, fmt._max_magnitude_code)
    codes = rng.integers(0, top, n, dtype=np.uint64, endpoint=True).astype(fmt.code_dtype)
    lo = ref.decode_codes(codes, fmt).astype(np.float64)
    ulp = np.ldexp(1.0, np.maximum(np.frexp(np.where(lo > 0, lo, fmt.smallest_normal))[1] - 1, fmt.emin)
                   - fmt.mantissa_bits)
    mids = np.concatenate([lo + ulp / 2, [fmt.max + ulp.max() / 2, fmt.max * 2]])
    with np.errstate(over="ignore", invalid="ignore"):
        v = np.concatenate([lo, mids]).astype(dtype)
        v = np.concatenate([v, np.nextafter(v, dtype(np.inf)), np.nextafter(v, dtype(0))])
    v = v[np.isfinite(v)]
    return np.concatenate([v, -v])


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", ["bf16", "e4m3", "fp16", "e8m0", "fp4_e2m1", "fp64"])
def test_host_equals_numpy_bulk(host, name, mode):
    """Every mode, policy, FTZ and DAZ on large random arrays of both input widths, with the
    format's ties and overflow band (random bit patterns almost never hold a tie)."""
    fmt = pl.get_format(name)
    rng = np.random.default_rng(zlib.crc32(f"{name}/{mode}".encode()))
    inputs = [np.concatenate([_bulk64(rng, 8_000), _grid_points(fmt, rng, 2_000, np.float64)])]
    if fits_float32(fmt) or _contains_float32(fmt):
        inputs.append(np.concatenate([_bulk32(rng, 16_000), _grid_points(fmt, rng, 2_000, np.float32)]))
    seed = int(rng.integers(0, 2**63)) if mode in ("sr", "sr_equal") else None
    for x in inputs:
        if fmt.nan == "none":
            x = np.where(np.isnan(x), x.dtype.type(1.0), x)
        for policy in POLICIES:
            for sub, daz in ((True, False), (False, False), (True, True)):
                spec = make_round_spec(fmt, mode, policy, sub, daz, seed)
                check_round_encode(host, x, spec, 11, f"{name} {mode} {policy} sub={sub} daz={daz} {x.dtype}")


SR_BITS = (1, 2, 3, 5, 8, 13, 23, 24, 31, 52, 53, 63, 64)


@pytest.mark.parametrize("sr_bits", SR_BITS)
def test_host_sr_bits(host, sr_bits):
    """rounding='sr' with N random bits: away iff floor(delta * 2^N) + R >= 2^N.  With few bits
    R hits the threshold exactly for a good share of elements, so the comparison is pinned."""
    rng = np.random.default_rng(sr_bits)
    for name in ("bf16", "e4m3", "fp4_e2m1", "e5m2"):
        fmt = pl.get_format(name)
        for x in (np.concatenate([_bulk32(rng, 4_000), _grid_points(fmt, rng, 1_000, np.float32)]),
                  np.concatenate([_bulk64(rng, 2_000), _grid_points(fmt, rng, 1_000, np.float64)])):
            if fmt.nan == "none":
                x = np.where(np.isnan(x), x.dtype.type(1.0), x)
            spec = make_round_spec(fmt, "sr", seed=int(rng.integers(0, 2**63)), sr_bits=sr_bits)
            check_round_encode(host, x, spec, 1, f"{name} sr_bits={sr_bits} {x.dtype}")


@pytest.mark.parametrize("fmt", list(pl.formats.values()), ids=lambda f: f.name)
def test_host_decode_equals_numpy(host, fmt):
    if fmt.bits <= 16:
        codes = np.arange(1 << fmt.bits, dtype=np.uint32).astype(fmt.code_dtype)
    else:
        rng = np.random.default_rng(fmt.bits)
        codes = rng.integers(0, 1 << fmt.bits, 50_000, dtype=np.uint64, endpoint=False).astype(fmt.code_dtype)
    check_decode(host, codes, fmt)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fmt=formats_st, seed=st.integers(0, 2**32 - 1))
def test_host_decode_custom_formats(host, fmt, seed):
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 1 << fmt.bits, 500, dtype=np.uint64, endpoint=False).astype(fmt.code_dtype)
    codes = np.concatenate([codes, np.array([0, fmt.sign_mask, (1 << fmt.bits) - 1, fmt._max_magnitude_code],
                                            fmt.code_dtype)])
    check_decode(host, codes, fmt)


def test_fast_path_choice():
    """Float32 data of formats inside float32 take the 32-bit kernels; nothing else does."""
    assert plcuda.uses_fast_path(pl.get_format("e4m3"), True)
    assert plcuda.uses_fast_path(pl.get_format("fp32"), True)
    assert not plcuda.uses_fast_path(pl.get_format("e4m3"), False)
    assert not plcuda.uses_fast_path(pl.get_format("fp64"), True)
    assert not plcuda.uses_fast_path(pl.Format(8, 30), True)


# ---- the kernels file compiles for the device --------------------------------------------

def _instances_source() -> str:
    """kernels.cu plus a table taking the address of every template instance CuPy launches."""
    refs = ",\n    ".join(f"(const void*)&{n}" for n in plcuda.kernel_names())
    return plcuda.kernel_source() + f"\nconst void* pl_all_instances[] = {{\n    {refs}\n}};\n"


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not installed")
def test_kernels_compile_for_device_with_nvcc(tmp_path):
    src = tmp_path / "instances.cu"
    src.write_text(_instances_source())
    ptx = tmp_path / "instances.ptx"
    proc = subprocess.run(["nvcc", "-ptx", "-arch=sm_90", "-std=c++14", "-o", str(ptx), str(src)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    text = ptx.read_text()
    assert text.count(".entry ") == len(plcuda.kernel_names())
    # integer arithmetic only: no floating-point instruction anywhere in the kernels
    float_ops = [line for line in text.splitlines() if ".f32" in line or ".f64" in line]
    assert not float_ops, float_ops[:5]


def _nvrtc():
    try:
        from cuda.bindings import nvrtc
        nvrtc.nvrtcVersion()
    except Exception as exc:  # not installed, or libnvrtc.so cannot be loaded
        pytest.skip(f"NVRTC is not loadable here ({type(exc).__name__}); CuPy compiles with it on a GPU machine")
    return nvrtc


def test_kernels_compile_with_nvrtc_as_cupy_does():
    """The text and name expressions the CuPy backend hands to cupy.RawModule, through NVRTC."""
    nvrtc = _nvrtc()
    ok = nvrtc.nvrtcResult.NVRTC_SUCCESS
    err, prog = nvrtc.nvrtcCreateProgram(plcuda.kernel_source().encode(), b"kernels.cu", 0, [], [])
    assert err == ok
    for n in plcuda.kernel_names():
        assert nvrtc.nvrtcAddNameExpression(prog, n.encode())[0] == ok
    opts = [b"--std=c++14", b"-arch=compute_90"]
    err = nvrtc.nvrtcCompileProgram(prog, len(opts), opts)[0]
    size = nvrtc.nvrtcGetProgramLogSize(prog)[1]
    log = b" " * size
    nvrtc.nvrtcGetProgramLog(prog, log)
    assert err == ok, log.decode(errors="replace")
    for n in plcuda.kernel_names():
        err, lowered = nvrtc.nvrtcGetLoweredName(prog, n.encode())
        assert err == ok and lowered.startswith(b"_Z"), n


def test_sources_ship_in_the_package():
    """round.cuh / kernels.cu are package data (pyproject), read through importlib.resources."""
    from fnmatch import fnmatch
    from pathlib import Path

    tomllib = pytest.importorskip("tomllib", reason="tomllib is Python 3.11+")
    root = Path(__file__).resolve().parents[2]
    setup = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "precisionlab.backends.cuda" in setup["packages"]
    patterns = setup["package-data"]["precisionlab.backends.cuda"]
    sources = [p.name for p in (root / "precisionlab" / "backends" / "cuda").iterdir() if p.suffix in (".cu", ".cuh")]
    assert sorted(sources) == ["kernels.cu", "matmul.cuh", "round.cuh"]
    assert all(any(fnmatch(name, pat) for pat in patterns) for name in sources)
    assert "pl_round_code" in plcuda.source("round.cuh") and "pl_mm_element_bits" in plcuda.source("matmul.cuh")
    text = plcuda.kernel_source()
    assert "#include" not in text.replace("#include <", "")
    assert text.count("#define PRECISIONLAB_ROUND_CUH") == 1 and text.count("#define PRECISIONLAB_MATMUL_CUH") == 1
