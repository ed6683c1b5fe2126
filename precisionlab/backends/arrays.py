"""Host or device arrays: what the front ends need to keep CuPy arrays on their device.

CuPy arrays are recognised by their type's module, so nothing here imports CuPy unless
the caller already holds a CuPy array.  NumPy's ufuncs and ``np.argwhere`` dispatch to
CuPy by themselves (``__array_ufunc__`` / ``__array_function__``); only array creation
(``np.asarray`` / ``np.ascontiguousarray``) needs the switch below.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["is_cupy_array", "as_array", "ascontiguous", "check_device_support"]


def is_cupy_array(a: Any) -> bool:
    return type(a).__module__.split(".")[0] == "cupy" and hasattr(a, "__cuda_array_interface__")


def as_array(a: Any) -> Any:
    """``np.asarray(a)``, except that a CuPy array stays a CuPy array."""
    return a if is_cupy_array(a) else np.asarray(a)


def ascontiguous(a: Any) -> Any:
    """C-contiguous copy-if-needed of a NumPy or CuPy array."""
    if is_cupy_array(a):
        import cupy
        return cupy.ascontiguousarray(a)
    return np.ascontiguousarray(a)


def check_device_support(backend: Any, a: Any, arg: str = "x") -> None:
    """A CuPy array given to a CPU backend is a TypeError (no silent device-host copies)."""
    if is_cupy_array(a) and not getattr(backend, "accepts_device_arrays", False):
        raise TypeError(f"{arg} is a CuPy array but backend={backend.name!r} runs on the CPU; use backend='cupy' "
                        f"(or 'auto', which picks it for CuPy arrays), or pass cupy.asnumpy({arg})")


def contiguous_float64(a: Any) -> Any:
    """``a`` as a C-contiguous float64 array of its own kind (NumPy or CuPy; a copy only if needed): the
    GPU kernels read operands as 64-bit words, while the front end may pass float32 values or
    broadcast views."""
    if a is None:
        return None
    if is_cupy_array(a):
        import cupy
        return cupy.ascontiguousarray(a, dtype=np.float64)
    return np.ascontiguousarray(a, dtype=np.float64)
