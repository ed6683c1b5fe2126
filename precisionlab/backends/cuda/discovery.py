"""Can a GPU backend run here?  Which of package, driver or device is missing (DESIGN §7).

The GPU backend modules call :func:`require_device` at import and raise
:class:`GPUUnavailable` (an ImportError) with the reason, so the registry in
``backends/__init__.py`` treats them like a backend whose package is missing:
``backend="auto"`` falls back to the CPU, and naming the backend gives a RuntimeError
carrying this message.  The driver is probed directly (ctypes on ``libcuda``) so the
three cases are told apart the same way for CuPy and Numba-CUDA.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

__all__ = ["GPUUnavailable", "probe_driver", "require_device", "missing_package"]

_CUDA_ERROR_NO_DEVICE = 100
_CUDA_ERROR_DEVICE_UNAVAILABLE = 46


class GPUUnavailable(ImportError):
    """A GPU backend cannot run here; ``missing`` is ``"package"``, ``"driver"`` or ``"device"``."""

    def __init__(self, backend: str, missing: str, detail: str):
        self.backend, self.missing = backend, missing
        super().__init__(f"{missing} missing: {detail}")


def _driver_names() -> list[str]:
    if sys.platform == "win32":
        return ["nvcuda.dll"]
    names = ["libcuda.so.1", "libcuda.so"]
    found = ctypes.util.find_library("cuda")
    return names + ([found] if found else []) + ["/usr/lib/wsl/lib/libcuda.so.1"]


def _error_name(lib, rc: int) -> str:
    name = ctypes.c_char_p()
    try:
        if lib.cuGetErrorName(ctypes.c_int(rc), ctypes.byref(name)) == 0 and name.value:
            return name.value.decode()
    except AttributeError:
        pass
    return f"CUresult {rc}"


_probe_result: tuple[str, str] | None | bool = False


def probe_driver() -> tuple[str, str] | None:
    """None when the CUDA driver loads and reports a device; else ``(missing, detail)`` with
    ``missing`` ``"driver"`` or ``"device"``.  Probed once per process."""
    global _probe_result
    if _probe_result is not False:
        return _probe_result
    lib = None
    for name in _driver_names():
        try:
            lib = ctypes.CDLL(name)
            break
        except OSError:
            continue
    if lib is None:
        result = ("driver", "the CUDA driver library (libcuda.so.1 / nvcuda.dll) cannot be loaded; "
                            "install the NVIDIA driver")
    else:
        rc = lib.cuInit(ctypes.c_uint(0))
        count = ctypes.c_int(0)
        if rc in (_CUDA_ERROR_NO_DEVICE, _CUDA_ERROR_DEVICE_UNAVAILABLE):
            result = ("device", f"the CUDA driver is installed but reports no usable GPU ({_error_name(lib, rc)})")
        elif rc != 0:
            result = ("driver", f"the CUDA driver failed to initialise: cuInit returned {_error_name(lib, rc)}")
        elif lib.cuDeviceGetCount(ctypes.byref(count)) != 0 or count.value == 0:
            result = ("device", "the CUDA driver is installed but reports 0 GPUs")
        else:
            result = None
    _probe_result = result
    return result


def missing_package(backend: str, package: str, exc: BaseException) -> GPUUnavailable:
    return GPUUnavailable(backend, "package", f"{package} is not importable ({exc}); "
                                              f"install it, e.g. pip install 'precisionlab[cuda]'")


def require_device(backend: str) -> None:
    """Raise :class:`GPUUnavailable` unless a CUDA driver and device are present."""
    problem = probe_driver()
    if problem is not None:
        raise GPUUnavailable(backend, *problem)
