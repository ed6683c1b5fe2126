"""Build round.cuh and matmul.cuh into a host shared library and call it like a backend.

``build(compiler, directory)`` compiles tests/gpu/cuda_host_driver.cu (which includes the
package's round.cuh and matmul.cuh) with nvcc (``-x cu``, host code only) or g++ (``-x c++``;
the headers define the CUDA qualifiers away without __CUDACC__).  :class:`HostKernels` wraps
the library in the kernel interface of precisionlab.backends (``round_values``,
``encode_values``, ``decode_codes``, ``matmul_values``) with a ``path`` choice for rounding:
``"auto"`` takes the path the CuPy backend takes, ``"general"`` forces the 64-bit one.
"""

from __future__ import annotations

import ctypes
import shutil
import subprocess
from pathlib import Path

import numpy as np

from precisionlab.backends import cuda as plcuda
from precisionlab.formats import Format
from precisionlab.rounding import RoundSpec, decode_dtype

DRIVER = Path(__file__).resolve().parent / "cuda_host_driver.cu"
COMPILERS = ("nvcc", "g++")


def compiler_command(compiler: str, out: Path) -> list[str]:
    include = str(plcuda.source_dir())
    if compiler == "nvcc":
        return ["nvcc", "-O2", "-std=c++14", "-x", "cu", "--compiler-options", "-fPIC,-Wall,-Wextra", "-shared",
                "-I", include, "-o", str(out), str(DRIVER)]
    return ["g++", "-O2", "-std=c++14", "-Wall", "-Wextra", "-x", "c++", "-fPIC", "-shared", "-I", include,
            "-o", str(out), str(DRIVER)]


def available_compilers() -> list[str]:
    return [c for c in COMPILERS if shutil.which(c)]


def build(compiler: str, directory: Path) -> HostKernels:
    out = directory / f"libplcuda_host_{compiler.replace('+', 'p')}.so"
    proc = subprocess.run(compiler_command(compiler, out), capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        raise RuntimeError(f"{compiler} failed on {DRIVER.name}:\n{proc.stdout}\n{proc.stderr}")
    return HostKernels(ctypes.CDLL(str(out)), compiler, proc.stderr)


_CTYPES = {"i32": ctypes.c_int, "u64": ctypes.c_uint64}


def _c_args(values, types) -> list:
    return [_CTYPES[t](v) for v, t in zip(values, types, strict=True)]


def _ptr(a: np.ndarray) -> ctypes.c_void_p:
    return ctypes.c_void_p(a.ctypes.data)


class HostKernels:
    """The host-compiled round.cuh behind the backend kernel interface."""

    def __init__(self, lib: ctypes.CDLL, compiler: str, warnings: str):
        self.lib, self.compiler, self.warnings = lib, compiler, warnings
        self.path = "auto"
        spec_types = [_CTYPES[t] for t in plcuda.SPEC_ARG_TYPES]
        fmt_types = [_CTYPES[t] for t in plcuda.FORMAT_ARG_TYPES]
        vp, i32, i64, u64 = ctypes.c_void_p, ctypes.c_int, ctypes.c_int64, ctypes.c_uint64
        lib.pl_host_round.argtypes = [vp, i32, i32, vp, i64, u64, *spec_types]
        lib.pl_host_round.restype = None
        lib.pl_host_encode.argtypes = [vp, i32, i32, vp, i32, i64, u64, *spec_types]
        lib.pl_host_encode.restype = None
        lib.pl_host_decode.argtypes = [vp, i32, i32, i32, vp, i64, *fmt_types]
        lib.pl_host_decode.restype = None
        lib.pl_host_constant.argtypes = [i32]
        lib.pl_host_constant.restype = i32
        lib.pl_host_matmul.argtypes = [vp] * 6 + [i64] * 3 + [vp, i64, i64]
        lib.pl_host_matmul.restype = None
        lib.pl_host_scale.argtypes = [vp, vp, vp, i64, *spec_types]
        lib.pl_host_scale.restype = None
        lib.pl_host_matmul_constant.argtypes = [i32]
        lib.pl_host_matmul_constant.restype = i32

    def _fast(self, fmt: Format, float32_data: bool) -> bool:
        return self.path == "auto" and plcuda.uses_fast_path(fmt, float32_data)

    def round_values(self, x: np.ndarray, spec: RoundSpec, counter_start: int) -> np.ndarray:
        x = np.ascontiguousarray(x)
        out = np.empty_like(x)
        in64 = x.dtype == np.float64
        self.lib.pl_host_round(_ptr(x), int(in64), int(self._fast(spec.format, not in64)), _ptr(out), x.size,
                               counter_start, *_c_args(plcuda.spec_args(spec), plcuda.SPEC_ARG_TYPES))
        return out

    def encode_values(self, x: np.ndarray, spec: RoundSpec, counter_start: int) -> np.ndarray:
        x = np.ascontiguousarray(x)
        out = np.empty(x.shape, spec.format.code_dtype)
        in64 = x.dtype == np.float64
        self.lib.pl_host_encode(_ptr(x), int(in64), int(self._fast(spec.format, not in64)), _ptr(out),
                                out.itemsize, x.size, counter_start,
                                *_c_args(plcuda.spec_args(spec), plcuda.SPEC_ARG_TYPES))
        return out

    def decode_codes(self, codes: np.ndarray, fmt: Format) -> np.ndarray:
        codes = np.ascontiguousarray(codes)
        out = np.empty(codes.shape, decode_dtype(fmt))
        out64 = out.dtype == np.float64
        self.lib.pl_host_decode(_ptr(codes), codes.itemsize, int(out64), int(self._fast(fmt, not out64)), _ptr(out),
                                codes.size, *_c_args(plcuda.format_args(fmt), plcuda.FORMAT_ARG_TYPES))
        return out

    def constants(self) -> list[int]:
        """The PL_* constants in the order of pl_host_constant's table."""
        out, i = [], 0
        while (v := self.lib.pl_host_constant(i)) != -1:
            out.append(v)
            i += 1
        return out

    def scale_values(self, x: np.ndarray, s: np.ndarray, spec: RoundSpec) -> np.ndarray:
        """fp32(x * s) elementwise (pl_scale_kernel's loop), float64 in and out."""
        x, s = (np.ascontiguousarray(v, np.float64) for v in (x, s))
        out = np.empty_like(x)
        self.lib.pl_host_scale(_ptr(x), _ptr(s), _ptr(out), x.size, *_c_args(plcuda.spec_args(spec),
                                                                          plcuda.SPEC_ARG_TYPES))
        return out

    def matmul_values(self, a, b, c, a_scale, b_scale, spec, seed, start: int = 0, stop: int | None = None):
        """The matmul kernel interface (as cupy_backend.matmul_values, pl_matmul_kernel's loop on
        the host); ``start`` / ``stop`` restrict it to a range of flat output indices."""
        a, b, c = (np.ascontiguousarray(x, np.float64) for x in (a, b, c))
        n_batch, M, K = a.shape
        N = b.shape[2]
        plcuda.check_matmul(spec, K, "cuda_host")
        fp32 = plcuda.matmul_specs(spec, seed)[plcuda.MATMUL_SPECS.index("fp32")]
        dummy = np.zeros(1)
        sa = dummy if a_scale is None else np.ascontiguousarray(a_scale, np.float64)
        sb = dummy if b_scale is None else np.ascontiguousarray(b_scale, np.float64)
        if spec.scale_at == "operands":
            if a_scale is not None:
                a = self.scale_values(a, sa, fp32)
            if b_scale is not None:
                b = self.scale_values(b, sb, fp32)
        params = plcuda.matmul_params(spec, K, seed)
        out = np.full((n_batch, M, N), np.nan)
        stop = n_batch * M * N if stop is None else stop
        self.lib.pl_host_matmul(_ptr(a), _ptr(b), _ptr(c), _ptr(sa), _ptr(sb), _ptr(out), n_batch, M, N,
                                _ptr(params), start, stop)
        return out

    def matmul_constants(self) -> list[int]:
        out, i = [], 0
        while (v := self.lib.pl_host_matmul_constant(i)) != -1000000:
            out.append(v)
            i += 1
        return out
