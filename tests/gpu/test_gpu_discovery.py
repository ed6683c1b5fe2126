"""GPU backend discovery (DESIGN §7): importing precisionlab never touches a GPU package;
a missing package, driver or device makes backend="auto" use the CPU and an explicit
GPU backend raise a RuntimeError that says which of the three is missing."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys

import numpy as np
import pytest

from precisionlab.backends import BACKENDS, get_backend, select_backend
from precisionlab.backends.arrays import check_device_support, is_cupy_array
from precisionlab.backends.cuda import discovery


def _run(code: str, simulator: bool = False) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    if simulator:
        env["NUMBA_ENABLE_CUDASIM"] = "1"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)


def test_registry_names_the_gpu_backends():
    assert {"numba_cuda", "cupy"} <= set(BACKENDS)


def test_import_touches_no_gpu_package():
    proc = _run("import sys, numpy as np, precisionlab as pl\n"
                "pl.round(np.ones(3, np.float32), 'bf16'); pl.decode(np.zeros(2, np.uint8), 'e4m3')\n"
                "print(sorted(m for m in sys.modules if m.split('.')[0] == 'cupy' or m.startswith('numba.cuda')))")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


_EXPLICIT = """
import sys, numpy as np
{setup}
import precisionlab as pl
x = np.ones(4, np.float32)
assert pl.round(x, "bf16").tolist() == [1.0] * 4              # auto: the CPU
try:
    pl.round(x, "bf16", backend={backend!r})
except RuntimeError as exc:
    print("RuntimeError:", exc)
"""


def _explicit(backend: str, setup: str = "", simulator: bool = False) -> str:
    proc = _run(_EXPLICIT.format(setup=setup, backend=backend), simulator)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.mark.parametrize("backend, module", [("cupy", "cupy"), ("numba_cuda", "numba.cuda")])
def test_missing_package(backend, module):
    out = _explicit(backend, f"sys.modules[{module!r}] = None   # as if not installed")
    assert "RuntimeError:" in out and f"backend={backend!r}" in out and "package missing" in out, out


@pytest.mark.parametrize("missing", ["driver", "device"])
def test_missing_driver_or_device_numba_cuda(missing):
    setup = ("import precisionlab.backends.cuda.discovery as d\n"
             f"d._probe_result = ({missing!r}, 'as the probe would say (test)')")
    out = _explicit("numba_cuda", setup)
    assert f"{missing} missing: as the probe would say" in out, out


def test_simulator_counts_as_available_but_not_for_auto():
    proc = _run("import numpy as np\nfrom precisionlab.backends import available_backends, select_backend\n"
                "print('numba_cuda' in available_backends(), select_backend('auto', np.ones(2)).name)",
                simulator=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["True", "numba"]


def _driver_present() -> bool:
    for name in ("libcuda.so.1", "libcuda.so"):
        try:
            ctypes.CDLL(name)
            return True
        except OSError:
            pass
    return False


@pytest.mark.skipif(_driver_present(), reason="a CUDA driver is installed here")
def test_this_machine_has_no_driver(monkeypatch):
    monkeypatch.setattr(discovery, "_probe_result", False)
    assert discovery.probe_driver()[0] == "driver"
    out = _explicit("numba_cuda")
    assert "driver missing" in out and "libcuda" in out, out


class _FakeDriver:
    def __init__(self, init_rc: int, count: int):
        self.init_rc, self.count = init_rc, count

    def cuInit(self, flags):
        return self.init_rc

    def cuDeviceGetCount(self, ptr):
        ctypes.cast(ptr, ctypes.POINTER(ctypes.c_int))[0] = self.count
        return 0

    def cuGetErrorName(self, rc, ptr):
        return 1                               # unknown: the probe prints the number


@pytest.mark.parametrize("init_rc, count, expected", [(100, 0, "device"), (46, 0, "device"), (0, 0, "device"),
                                                      (999, 0, "driver"), (35, 0, "driver"), (0, 2, None)])
def test_probe_classifies_driver_answers(monkeypatch, init_rc, count, expected):
    monkeypatch.setattr(discovery, "_probe_result", False)
    monkeypatch.setattr(discovery.ctypes, "CDLL", lambda name: _FakeDriver(init_rc, count))
    result = discovery.probe_driver()
    assert (result and result[0]) == expected
    if expected == "driver":
        assert f"CUresult {init_rc}" in result[1]


def test_probe_without_library(monkeypatch):
    monkeypatch.setattr(discovery, "_probe_result", False)

    def no_library(name):
        raise OSError(f"{name}: cannot open shared object file")
    monkeypatch.setattr(discovery.ctypes, "CDLL", no_library)
    assert discovery.probe_driver()[0] == "driver"
    with pytest.raises(discovery.GPUUnavailable, match="driver missing") as info:
        discovery.require_device("cupy")
    assert isinstance(info.value, ImportError) and info.value.missing == "driver"


class _FakeCupyArray:
    """Looks like a CuPy array to the dispatch (type module and the CUDA array interface)."""
    __module__ = "cupy._core.core"
    __cuda_array_interface__ = {"shape": (2,), "typestr": "<f4", "data": (0, False), "version": 3}
    dtype = np.dtype(np.float32)
    shape = (2,)


def test_cupy_arrays_route_to_cupy():
    fake = _FakeCupyArray()
    assert is_cupy_array(fake) and not is_cupy_array(np.ones(2))
    try:
        import cupy  # noqa: F401
    except ImportError:
        with pytest.raises(RuntimeError, match="backend='cupy'.*package missing"):
            select_backend("auto", fake)
    with pytest.raises(TypeError, match="CuPy array.*backend='numba'"):
        select_backend("numba", fake)
    with pytest.raises(TypeError, match="CuPy array.*backend='numpy'"):
        check_device_support(get_backend("numpy"), fake)
