"""CuPy backend: the CUDA C kernels of ``cuda/kernels.cu`` (arithmetic in ``cuda/round.cuh`` and
``cuda/matmul.cuh``), compiled at first use with ``cupy.RawModule``, bit-identical to the NumPy
reference.

CuPy arrays in, CuPy arrays out (``backend="auto"`` picks this backend for CuPy inputs,
DESIGN §7).  NumPy arrays are accepted too, by copying: they go to the device and the
result comes back as a NumPy array, so the CPU test corpus runs unchanged here.  Float32
data of formats inside float32 takes the 32-bit kernels, everything else the 64-bit ones
(``cuda.uses_fast_path``).  The module raises
:class:`~precisionlab.backends.cuda.discovery.GPUUnavailable` at import when CuPy, the
driver or a device is missing, so the registry reports which.
"""

from __future__ import annotations

import numpy as np

from ..formats import Format
from ..rounding import RoundSpec, decode_dtype
from . import cuda as plcuda
from .arrays import contiguous_float64
from .cuda.discovery import GPUUnavailable, missing_package, require_device

name = "cupy"
accepts_device_arrays = True     # CuPy / CUDA-array-interface inputs stay on the device

try:
    import cupy
except ImportError as exc:
    raise missing_package(name, "cupy (cupy-cuda13x)", exc) from exc

require_device(name)
try:
    _SM_COUNT = cupy.cuda.Device().attributes["MultiProcessorCount"]
except cupy.cuda.runtime.CUDARuntimeError as exc:      # the probe passed but CuPy's runtime disagrees
    raise GPUUnavailable(name, "driver", f"CuPy cannot use the CUDA runtime: {exc}") from exc

_THREADS = 256
_BLOCKS_PER_SM = 32
_module: cupy.RawModule | None = None


def kernels() -> cupy.RawModule:
    """The compiled module (compiled once per process; CuPy also caches it on disk)."""
    global _module
    if _module is None:
        module = cupy.RawModule(code=plcuda.kernel_source(), options=("--std=c++14",),
                                name_expressions=plcuda.kernel_names())
        try:
            module.get_function(plcuda.kernel_names()[0])      # compiles the whole module (every CuPy version)
        except Exception as exc:             # NVRTC missing or failing: say so, not a launch error later
            raise RuntimeError(f"backend='cupy': compiling precisionlab/backends/cuda/kernels.cu with NVRTC "
                               f"failed: {exc}") from exc
        _module = module
    return _module


_NP_TYPES = {"i32": np.int32, "u64": np.uint64}


def typed_args(values, types) -> tuple:
    """Kernel arguments with the C types of PL_FORMAT_PARAMS / PL_SPEC_PARAMS."""
    return tuple(_NP_TYPES[t](v) for v, t in zip(values, types, strict=True))


def _launch(kernel_name: str, n: int, *args, threads: int = _THREADS) -> None:
    if n == 0:
        return
    blocks = min(-(-n // threads), _SM_COUNT * _BLOCKS_PER_SM)
    kernels().get_function(kernel_name)((blocks,), (threads,), args)


def _to_device(a):
    """(contiguous CuPy array, whether the caller gave host data)."""
    if isinstance(a, cupy.ndarray):
        return cupy.ascontiguousarray(a), False
    return cupy.asarray(np.ascontiguousarray(a)), True


def round_values(x, spec: RoundSpec, counter_start: int, out=None):
    xd, host = _to_device(x)
    in64 = xd.dtype == np.float64
    fast = plcuda.uses_fast_path(spec.format, not in64)
    if out is not None:                     # the caller's array: filled from the kernel's result
        out[...] = round_values(x, spec, counter_start)
        return out
    out = cupy.empty_like(xd)
    _launch(plcuda.round_kernel_name(in64, fast), xd.size, xd, out, np.int64(xd.size),
            np.uint64(counter_start % 2**64), *typed_args(plcuda.spec_args(spec), plcuda.SPEC_ARG_TYPES))
    return out.get() if host else out


def encode_values(x, spec: RoundSpec, counter_start: int):
    xd, host = _to_device(x)
    in64 = xd.dtype == np.float64
    fast = plcuda.uses_fast_path(spec.format, not in64)
    out = cupy.empty(xd.shape, spec.format.code_dtype)
    _launch(plcuda.encode_kernel_name(in64, fast, out.itemsize), xd.size, xd, out, np.int64(xd.size),
            np.uint64(counter_start % 2**64), *typed_args(plcuda.spec_args(spec), plcuda.SPEC_ARG_TYPES))
    return out.get() if host else out


def decode_codes(codes, fmt: Format):
    cd, host = _to_device(codes)
    out_dtype = decode_dtype(fmt)
    out64 = out_dtype == np.float64
    fast = plcuda.uses_fast_path(fmt, not out64)
    out = cupy.empty(cd.shape, out_dtype)
    _launch(plcuda.decode_kernel_name(cd.itemsize, out64, fast), cd.size, cd, out, np.int64(cd.size),
            *typed_args(plcuda.format_args(fmt), plcuda.FORMAT_ARG_TYPES))
    return out.get() if host else out


# ---- matmul (DESIGN §6) ----------------------------------------------------------------------
# pl_matmul_kernel: one thread per output element, the arithmetic of cuda/matmul.cuh (the
# reference's schedule in exact integers), the model and its roundings in one parameter array
# (cuda.matmul_params).  Specs it cannot compute exactly (cuda.matmul_unsupported) are an error.

_MATMUL_THREADS = 128          # a thread holds two trees of partial sums in local memory


def _bits64(x):
    """A C-contiguous CuPy uint64 view of the float64 values of x (host data copied over)."""
    xd = x if isinstance(x, cupy.ndarray) else cupy.asarray(np.ascontiguousarray(x, np.float64))
    return cupy.ascontiguousarray(xd.astype(np.float64, copy=False)).view(np.uint64)


def covers(spec) -> bool:
    """Whether :func:`matmul_values` computes ``spec`` (else it raises the ValueError of
    ``cuda.check_matmul``, which names the parameter; see ``cuda.matmul_unsupported``)."""
    return plcuda.matmul_unsupported(spec) is None


def matmul_values(a, b, c, a_scale, b_scale, spec, seed: int | None):
    """The kernel interface of the NumPy reference (same arguments, same bits): ``a`` (B, M, K),
    ``b`` (B, K, N), ``c`` (B, M, N) float64 (CuPy arrays, or NumPy arrays, copied over and the
    result back), scales expanded to the operands' shapes or None.  A spec the kernels do not
    cover (``cuda.matmul_unsupported``: composite orders, scale_at='products' / 'output', ...) is a
    ValueError that names the parameter."""
    a, b, c, a_scale, b_scale = (contiguous_float64(x) for x in (a, b, c, a_scale, b_scale))
    n_batch, n_rows, K = a.shape
    n_cols = b.shape[2]
    plcuda.check_matmul(spec, K, name)
    host = not isinstance(a, cupy.ndarray)
    da, db, dc = (_bits64(x) for x in (a, b, c))
    fp32 = plcuda.matmul_specs(spec, seed)[plcuda.MATMUL_SPECS.index("fp32")]
    f32_args = typed_args(plcuda.spec_args(fp32), plcuda.SPEC_ARG_TYPES)
    dummy = cupy.empty((1,), np.uint64)
    scales = []
    for x, scale in ((da, a_scale), (db, b_scale)):
        ds = dummy if scale is None else _bits64(scale)
        if scale is not None and spec.scale_at == "operands":         # fp32(x * scale) before the products
            scaled = cupy.empty(x.shape, np.uint64)
            _launch(plcuda.SCALE_KERNEL, x.size, x, ds, scaled, np.int64(x.size), *f32_args)
            x = scaled
        scales.append((x, ds))
    (da, dsa), (db, dsb) = scales
    params = cupy.asarray(plcuda.matmul_params(spec, K, seed))
    out = cupy.empty((n_batch, n_rows, n_cols), np.uint64)
    _launch(plcuda.MATMUL_KERNEL, out.size, da, db, dc, dsa, dsb, out, np.int64(n_batch), np.int64(n_rows),
            np.int64(n_cols), params, threads=_MATMUL_THREADS)
    result = out.view(np.float64)
    return result.get() if host else result
