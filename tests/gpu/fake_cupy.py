"""A stand-in for the ``cupy`` module, enough to run precisionlab's cupy backend without a GPU.

Arrays are NumPy arrays of a subclass that looks like CuPy's (its type's module is
``cupy``, it has ``__cuda_array_interface__`` and ``.get()``, and NumPy functions applied to
it return such arrays, as CuPy's ``__array_function__`` does).  ``RawModule.get_function``
returns a launcher that checks what CuPy would pass to the kernel -- the name is one the
module was built with, every argument has the exact C type of the kernel's parameter list
(a Python int or a wrong-width NumPy scalar would be marshalled wrongly by CuPy) -- and then
runs the loop of the host-compiled round.cuh / matmul.cuh (tests/gpu/cuda_host.py), so the
backend's glue is tested end to end.
"""

from __future__ import annotations

import re
import time
import types

import numpy as np

from precisionlab.backends import cuda as plcuda


class ndarray(np.ndarray):
    """NumPy memory posing as a CuPy device array."""

    @property
    def __cuda_array_interface__(self):
        return {"shape": self.shape, "typestr": self.dtype.str, "data": (self.ctypes.data, False), "version": 3}

    def get(self):
        return np.array(self, copy=True).view(np.ndarray)

    def __array_function__(self, func, types, args, kwargs):
        result = super().__array_function__(func, types, args, kwargs)
        return result.view(ndarray) if type(result) is np.ndarray else result


ndarray.__module__ = "cupy._core.core"


def _wrap(a) -> ndarray:
    return np.asarray(a).view(ndarray)


def asarray(a, dtype=None):
    return _wrap(np.array(a, dtype=dtype, copy=True) if not isinstance(a, ndarray) else a)


def ascontiguousarray(a, dtype=None):
    return _wrap(np.ascontiguousarray(a, dtype=dtype))


def empty(shape, dtype):
    return _wrap(np.empty(shape, dtype))


def empty_like(a):
    return _wrap(np.empty_like(a))


def zeros(shape, dtype=np.float64):
    return _wrap(np.zeros(shape, dtype))


_SPEC = ["ptr", "ptr", "i64", "u64"] + list(plcuda.SPEC_ARG_TYPES)
_DECODE = ["ptr", "ptr", "i64"] + list(plcuda.FORMAT_ARG_TYPES)
_MATMUL = ["ptr"] * 6 + ["i64"] * 3 + ["ptr"]
_SCALE = ["ptr"] * 3 + ["i64"] + list(plcuda.SPEC_ARG_TYPES)
_C_TYPES = {"i64": np.int64, "u64": np.uint64, "i32": np.int32}
_CODE_BYTES = {"unsigned char": 1, "unsigned short": 2, "unsigned int": 4, "unsigned long long": 8}


class RawModule:
    """Records what the backend asks to compile; launches run on the host build."""

    host = None          # a tests/gpu/cuda_host.HostKernels, set by the test
    launches: list = []

    def __init__(self, code, options=(), name_expressions=()):
        assert code == plcuda.kernel_source(), "the backend must compile kernel_source()"
        assert "--std=c++14" in options
        self.names = list(name_expressions)

    def get_function(self, name):
        if name not in self.names:
            raise ValueError(f"{name!r} is not one of the module's name expressions")
        return _Launcher(name)


class _Launcher:
    def __init__(self, name):
        self.name = name
        if name in (plcuda.MATMUL_KERNEL, plcuda.SCALE_KERNEL):
            self.kind, self.params = name[3:-7], []
        else:
            kind, params = re.fullmatch(r"pl_(round|encode|decode)_kernel<(.*)>", name).groups()
            self.kind, self.params = kind, [p.strip() for p in params.split(",")]

    def __call__(self, grid, block, args):
        assert len(grid) == 1 and len(block) == 1 and grid[0] >= 1 and block[0] >= 1
        expected = {"decode": _DECODE, "matmul": _MATMUL, "scale": _SCALE}.get(self.kind, _SPEC)
        assert len(args) == len(expected), (self.name, len(args))
        for i, (arg, ctype) in enumerate(zip(args, expected, strict=True)):
            if ctype == "ptr":
                assert isinstance(arg, ndarray) and arg.flags.c_contiguous, (self.name, i, type(arg))
            else:
                assert type(arg) is _C_TYPES[ctype], (self.name, i, type(arg), ctype)
        RawModule.launches.append((self.name, grid, block))
        lib = RawModule.host.lib
        if self.kind == "matmul":
            a, b, c, sa, sb, out, n_batch, M, N, params = args
            assert all(x.dtype == np.uint64 for x in (a, b, c, sa, sb, out, params))
            assert out.size == n_batch * M * N and a.size == n_batch * M * (a.size // max(n_batch * M, 1))
            lib.pl_host_matmul(*(x.ctypes.data for x in (a, b, c, sa, sb, out)), int(n_batch), int(M), int(N),
                               params.ctypes.data, 0, out.size)
            return
        if self.kind == "scale":
            x, s, out, n = args[:4]
            assert x.size == s.size == out.size == n and x.dtype == s.dtype == out.dtype == np.uint64
            lib.pl_host_scale(x.ctypes.data, s.ctypes.data, out.ctypes.data, int(n), *[int(v) for v in args[4:]])
            return
        x, out, n = args[0], args[1], int(args[2])
        assert x.size == n and out.size == n
        rest = [int(a) for a in args[3:]]
        flag = {"true": 1, "false": 0}
        px, pout = x.ctypes.data, out.ctypes.data
        if self.kind == "round":
            in64, fast = flag[self.params[0]], flag[self.params[1]]
            lib.pl_host_round(px, in64, fast, pout, n, *rest)
        elif self.kind == "encode":
            in64, fast = flag[self.params[0]], flag[self.params[1]]
            assert out.itemsize == _CODE_BYTES[self.params[2]]
            lib.pl_host_encode(px, in64, fast, pout, out.itemsize, n, *rest)
        else:
            assert x.itemsize == _CODE_BYTES[self.params[0]]
            out64, fast = flag[self.params[1]], flag[self.params[2]]
            lib.pl_host_decode(px, x.itemsize, out64, fast, pout, n, *rest)


def matmul(a, b):
    return _wrap(np.matmul(a, b))


class _Device:
    attributes = {"MultiProcessorCount": 4}


class CUDARuntimeError(RuntimeError):
    pass


class _Event:
    """A stream event: the host clock when recorded (launches here finish before they return)."""

    def record(self):
        self.t = time.perf_counter()

    def synchronize(self):
        pass


def _elapsed_ms(start, stop):
    return (stop.t - start.t) * 1e3


class _Pool:
    def free_all_blocks(self):
        pass


def get_default_memory_pool():
    return _Pool()


cuda = types.SimpleNamespace(Device=_Device, runtime=types.SimpleNamespace(CUDARuntimeError=CUDARuntimeError),
                             Event=_Event, get_elapsed_time=_elapsed_ms)
