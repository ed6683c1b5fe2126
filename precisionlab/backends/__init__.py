"""Backend registry and selection (DESIGN §7).

Every backend module implements the same small kernel interface and no policy:

* ``round_values(x, spec, counter_start, out=None)`` -- flat float32/float64 array in, same
  dtype out (written into ``out`` when given: same dtype and size, may be ``x`` itself);
* ``encode_values(x, spec, counter_start)`` -- flat floats in, ``spec.format.code_dtype`` codes out;
* ``decode_codes(codes, fmt)`` -- flat codes in, floats out;
* optionally ``any_nan(x)`` -- whether a flat float array holds a NaN, which the front end asks
  before rounding to a format without NaN (otherwise it uses ``x.max()``).

``counter_start`` offsets the random-bit counter of stochastic modes (DESIGN §5).
Discovery never fails at import: a backend whose package is missing is simply
unavailable, and asking for it by name gives an error saying what is missing.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

__all__ = ["BACKENDS", "available_backends", "get_backend", "select_backend"]

#: Backend name -> module implementing the kernel interface.
BACKENDS = {
    "numpy": "precisionlab.backends.numpy_backend",
    "numba": "precisionlab.backends.numba_backend",
    "numba_cuda": "precisionlab.backends.numba_cuda_backend",   # GPU or NUMBA_ENABLE_CUDASIM=1; never 'auto'
    "cupy": "precisionlab.backends.cupy_backend",               # GPU; 'auto' for CuPy inputs
}

_cache: dict[str, ModuleType | Exception] = {}


def _load(name: str) -> ModuleType | Exception:
    if name not in _cache:
        try:
            _cache[name] = importlib.import_module(BACKENDS[name])
        except ImportError as exc:  # a missing optional package
            _cache[name] = exc
    return _cache[name]


def available_backends() -> list[str]:
    """Names of the backends that load on this machine."""
    return [n for n in BACKENDS if isinstance(_load(n), ModuleType)]


def get_backend(name: str) -> ModuleType:
    """The backend module called ``name``; ValueError if unknown, RuntimeError if unavailable."""
    if name not in BACKENDS:
        raise ValueError(f"backend={name!r} is not a backend; allowed: 'auto', " + ", ".join(repr(n) for n in BACKENDS))
    mod = _load(name)
    if isinstance(mod, Exception):
        raise RuntimeError(f"backend={name!r} is not available here: {mod}")
    return mod


def select_backend(backend: str, array: Any = None) -> ModuleType:
    """Resolve ``backend`` ('auto' or a name) for an input array."""
    if not isinstance(backend, str):
        raise TypeError(f"backend={backend!r} must be a string: 'auto' or one of {list(BACKENDS)}")
    from .arrays import check_device_support, is_cupy_array

    if backend != "auto":
        mod = get_backend(backend)
        check_device_support(mod, array)
        return mod
    # auto: the CuPy backend for CuPy arrays (DESIGN §7); numba_cuda only by name
    for name in ("cupy",) if is_cupy_array(array) else ("numba", "numpy"):
        mod = _load(name)
        if isinstance(mod, ModuleType):
            return mod
    if is_cupy_array(array):
        return get_backend("cupy")      # raises, saying what is missing
    raise AssertionError("the numpy backend always loads")
