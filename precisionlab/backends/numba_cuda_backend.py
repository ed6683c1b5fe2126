"""Numba-CUDA backend: the rounding kernels of DESIGN §5 on an NVIDIA GPU, or on Numba's
CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``), bit-identical to the NumPy reference.

Each kernel is a grid-stride loop calling the device functions of
:mod:`precisionlab.backends.numba_cuda_device` on one element's bit pattern; the
element's flat index plus ``counter_start`` is its random-bit counter, so results do
not depend on the launch shape.  Host arrays in, host arrays out (copied to the device
and back); arrays with ``__cuda_array_interface__`` stay on the device: CuPy arrays in,
CuPy arrays out, other device arrays (Numba's) in, Numba device arrays out.

The module raises :class:`~precisionlab.backends.cuda.discovery.GPUUnavailable` at
import when numba-cuda, the driver or a device is missing (not under the simulator),
so the registry reports which.  ``backend="auto"`` never picks this backend (the
simulator is slow, and on a GPU the CuPy backend is the fast one); name it.
Matmul: :func:`matmul_values` (its kernel at the end of this module, the arithmetic in
:mod:`precisionlab.backends.numba_cuda_matmul`).
"""

from __future__ import annotations

import os
import warnings

import numpy as np

from ..formats import Format
from ..rounding import RoundSpec, decode_dtype
from . import cuda as plcuda
from .arrays import contiguous_float64
from .cuda.discovery import GPUUnavailable, missing_package, require_device

name = "numba_cuda"
accepts_device_arrays = True     # CuPy / CUDA-array-interface inputs stay on the device

try:
    from numba import cuda
except ImportError as exc:           # numba-cuda or the CUDA Python bindings are missing
    raise missing_package(name, "numba-cuda", exc) from exc


def _simulated() -> bool:
    try:
        from numba.cuda.core import config
        return bool(config.ENABLE_CUDASIM)
    except ImportError:
        return os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"


#: True when the kernels run on Numba's CUDA simulator (CPU, slow; for tests).
SIMULATED = _simulated()
if not SIMULATED:
    require_device(name)
    if not cuda.is_available():
        raise GPUUnavailable(name, "driver", "numba-cuda cannot use the CUDA driver (see numba.cuda.detect())")

from numba.cuda.cudadrv.devicearray import is_cuda_ndarray  # noqa: E402  (the simulator's, under it)

from . import numba_cuda_device as D  # noqa: E402  (after the checks: it compiles nothing, but needs numba.cuda)

U64 = np.uint64
_THREADS = 256
_MAX_BLOCKS = 8192
_SIM_THREADS = 8               # the simulator runs each thread as a Python thread: few, looping


# ---- rounding kernels ------------------------------------------------------------------

@cuda.jit(cache=True)
def _round_kernel(xbits, out, in64, counter_start, fp, sp):
    i = cuda.grid(1)
    stride = cuda.gridsize(1)
    while i < xbits.size:
        out[i] = D.round_bits(U64(xbits[i]), in64, fp, sp, counter_start + U64(i))
        i += stride


@cuda.jit(cache=True)
def _encode_kernel(xbits, out, in64, counter_start, fp, sp):
    i = cuda.grid(1)
    stride = cuda.gridsize(1)
    while i < xbits.size:
        out[i] = D.encode_bits(U64(xbits[i]), in64, fp, sp, counter_start + U64(i))
        i += stride


@cuda.jit(cache=True)
def _decode_kernel(codes, out, out64, fp):
    i = cuda.grid(1)
    stride = cuda.gridsize(1)
    while i < codes.size:
        out[i] = D.code_to_float_bits(U64(codes[i]), fp, out64)
        i += stride


# ---- host side -------------------------------------------------------------------------

def kernel_format_args(fmt: Format) -> tuple:
    """format_args typed for the device functions: int64 facts, uint64 codes."""
    a = plcuda.format_args(fmt)
    return tuple(np.int64(v) for v in a[:5]) + tuple(U64(v) for v in a[5:])


def kernel_spec_args(spec: RoundSpec) -> tuple[tuple, tuple]:
    """(format tuple, spec tuple) for the device functions."""
    a = plcuda.spec_args(spec)
    return kernel_format_args(spec.format), tuple(np.int64(v) for v in a[9:13]) + (U64(a[13]),)


def _launch(kernel, n: int, *args, blocks: int | None = None, threads: int | None = None) -> None:
    """Launch a grid-stride kernel over n elements (any shape gives the same result)."""
    if n == 0:
        return
    if SIMULATED:
        threads = threads or _SIM_THREADS
        blocks = blocks or 1
        with warnings.catch_warnings():      # NumPy scalars warn where the GPU wraps mod 2^64
            warnings.filterwarnings("ignore", "overflow encountered", RuntimeWarning)
            kernel[blocks, threads](*args)
        return
    threads = threads or _THREADS
    blocks = blocks or min(_MAX_BLOCKS, -(-n // threads))
    kernel[blocks, threads](*args)


def _on_device(a) -> bool:
    return is_cuda_ndarray(a) or (hasattr(a, "__cuda_array_interface__") and not isinstance(a, np.ndarray))


def _is_cupy(a) -> bool:
    return type(a).__module__.split(".")[0] == "cupy"


def _bits_dtype(dtype) -> np.dtype:
    return np.dtype(np.uint64 if np.dtype(dtype).itemsize == 8 else np.uint32)


def _device_input(a, bits: np.dtype | None):
    """A Numba device view of ``a`` (reinterpreted as ``bits``), copying host data over."""
    if _on_device(a):
        d = a if is_cuda_ndarray(a) else cuda.as_cuda_array(a)      # the simulator's arrays have no CAI
        return d.view(bits) if bits is not None else d
    a = np.ascontiguousarray(a)
    return cuda.to_device(a.view(bits) if bits is not None else a)


def _device_output(like, shape, dtype):
    """(kernel view in bits, finisher giving the result in like's kind: numpy, CuPy or Numba)."""
    dtype = np.dtype(dtype)
    bits = _bits_dtype(dtype) if dtype.kind == "f" else dtype
    if _on_device(like) and _is_cupy(like):
        import cupy
        out = cupy.empty(shape, dtype)
        return cuda.as_cuda_array(out).view(bits), lambda: out
    d = cuda.device_array(shape, bits)
    if _on_device(like):
        return d, lambda: d.view(dtype)
    return d, lambda: d.copy_to_host().view(dtype)


def round_values(x, spec: RoundSpec, counter_start: int, out=None, blocks: int | None = None,
                 threads: int | None = None):
    if out is not None:                     # the caller's array: filled from the kernel's result
        out[...] = round_values(x, spec, counter_start, blocks=blocks, threads=threads)
        return out
    in_bits = _bits_dtype(x.dtype)
    dx = _device_input(x, in_bits)
    dout, result = _device_output(x, x.shape, x.dtype)
    fp, sp = kernel_spec_args(spec)
    _launch(_round_kernel, x.size, dx, dout, x.dtype == np.float64, U64(counter_start % 2**64), fp, sp,
            blocks=blocks, threads=threads)
    return result()


def encode_values(x, spec: RoundSpec, counter_start: int, blocks: int | None = None,
                  threads: int | None = None):
    dx = _device_input(x, _bits_dtype(x.dtype))
    dout, result = _device_output(x, x.shape, spec.format.code_dtype)
    fp, sp = kernel_spec_args(spec)
    _launch(_encode_kernel, x.size, dx, dout, x.dtype == np.float64, U64(counter_start % 2**64), fp, sp,
            blocks=blocks, threads=threads)
    return result()


def decode_codes(codes, fmt: Format, blocks: int | None = None, threads: int | None = None):
    dc = _device_input(codes, None)
    out_dtype = decode_dtype(fmt)
    dout, result = _device_output(codes, codes.shape, out_dtype)
    _launch(_decode_kernel, codes.size, dc, dout, out_dtype == np.float64, kernel_format_args(fmt),
            blocks=blocks, threads=threads)
    return result()


# ---- matmul (DESIGN §6) ------------------------------------------------------------------
# One thread per output element, grid-stride; the element's arithmetic is numba_cuda_matmul's
# (the reference's schedule, exact integers, the rounding device functions above).  The flat
# output index times the rounding events per element is the element's first random-bit
# counter, so results do not depend on the launch shape.

from . import numba_cuda_matmul as MM  # noqa: E402


@cuda.jit(cache=True)
def _matmul_kernel(a, b, c, sa, sb, out, mp, specs):
    i = cuda.grid(1)
    stride = cuda.gridsize(1)
    n_cols = out.shape[2]
    per_batch = out.shape[1] * n_cols
    events = U64(mp[MM.F_EVENTS])
    while i < out.size:
        bi = i // per_batch
        r = i - bi * per_batch
        m = r // n_cols
        n = r - m * n_cols
        out[bi, m, n] = MM.element(a, b, c, sa, sb, bi, m, n, U64(i) * events, mp, specs)
        i += stride


@cuda.jit(cache=True)
def _scale_kernel(x, s, out, fp, sp):
    i = cuda.grid(1)
    stride = cuda.gridsize(1)
    while i < x.size:
        out[i] = MM.scaled_operand_bits(x[i], s[i], fp, sp)
        i += stride


def _scaled(x_dev, scale, spec_fp32) -> object:
    """fp32(x * scale) elementwise on the device (scale_at='operands')."""
    ds = _device_input(scale, np.dtype(np.uint64))
    out = cuda.device_array(x_dev.shape, np.uint64)
    fp, sp = kernel_spec_args(spec_fp32)
    _launch(_scale_kernel, x_dev.size, x_dev.reshape(-1), ds.reshape(-1), out.reshape(-1), fp, sp)
    return out


def covers(spec) -> bool:
    """Whether :func:`matmul_values` computes ``spec`` (else it raises the ValueError of
    ``cuda.check_matmul``, which names the parameter; see ``cuda.matmul_unsupported``)."""
    return plcuda.matmul_unsupported(spec) is None


def matmul_values(a, b, c, a_scale, b_scale, spec, seed: int | None, blocks: int | None = None,
                  threads: int | None = None):
    """The kernel interface of the NumPy reference (same arguments, same bits): ``a`` (B, M, K),
    ``b`` (B, K, N), ``c`` (B, M, N) float64, scales expanded to the operands' shapes or None.
    A spec the kernels cannot compute exactly (``cuda.matmul_unsupported``) is a ValueError."""
    a, b, c, a_scale, b_scale = (contiguous_float64(x) for x in (a, b, c, a_scale, b_scale))
    n_batch, n_rows, K = a.shape
    n_cols = b.shape[2]
    plcuda.check_matmul(spec, K, name)
    u64 = np.dtype(np.uint64)
    da, db, dc = (_device_input(x, u64) for x in (a, b, c))
    specs = plcuda.matmul_specs(spec, seed)
    fp32 = specs[plcuda.MATMUL_SPECS.index("fp32")]
    dummy = cuda.to_device(np.zeros((1, 1, 1), np.uint64))
    dsa = dsb = dummy
    if a_scale is not None:
        dsa = _device_input(a_scale, u64)
        if spec.scale_at == "operands":
            da = _scaled(da, a_scale, fp32)
    if b_scale is not None:
        dsb = _device_input(b_scale, u64)
        if spec.scale_at == "operands":
            db = _scaled(db, b_scale, fp32)
    dout, result = _device_output(a, (n_batch, n_rows, n_cols), np.float64)
    mp = tuple(np.int64(v) for v in plcuda.matmul_model(spec, K))
    args = tuple(kernel_spec_args(s) for s in specs)
    _launch(_matmul_kernel, n_batch * n_rows * n_cols, da, db, dc, dsa, dsb, dout, mp, args,
            blocks=blocks, threads=threads)
    return result()
