"""tests/gpu: the GPU backends without a GPU (Numba's CUDA simulator, the CUDA C compiled
for the host), and on a real GPU when PRECISIONLAB_REAL_GPU=1.

NUMBA_ENABLE_CUDASIM must be set before numba.cuda is first imported, so it is set here,
at collection time, unless PRECISIONLAB_REAL_GPU=1 asks for the real device.  The helper
modules of tests/ (oracle, test_rounding's strategies) are put on sys.path for the files here.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

REAL_GPU = os.environ.get("PRECISIONLAB_REAL_GPU") == "1"
if not REAL_GPU:
    os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")

TESTS = Path(__file__).resolve().parent.parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def host(tmp_path_factory):
    """round.cuh built for the host (nvcc, else g++), once per session (see cuda_host.py)."""
    from cuda_host import available_compilers, build

    compilers = available_compilers()
    if not compilers:
        pytest.skip("neither nvcc nor g++ is installed: the CUDA C sources cannot be compiled for the host")
    return build(compilers[0], tmp_path_factory.mktemp(f"plcuda-{compilers[0].replace('+', 'p')}"))


CUPY_MODULE = "precisionlab.backends.cupy_backend"


@pytest.fixture
def cb(monkeypatch, host):
    """precisionlab's cupy backend imported against the stand-in cupy (tests/gpu/fake_cupy.py),
    whose kernels are the host build of the CUDA C sources."""
    import importlib

    import fake_cupy

    from precisionlab import backends
    from precisionlab.backends.cuda import discovery

    fake_cupy.RawModule.host = host
    fake_cupy.RawModule.launches = []
    monkeypatch.setitem(sys.modules, "cupy", fake_cupy)
    monkeypatch.setattr(discovery, "_probe_result", None)          # "a driver and a device"
    saved = sys.modules.pop(CUPY_MODULE, None)
    module = importlib.import_module(CUPY_MODULE)
    monkeypatch.setitem(backends._cache, "cupy", module)
    yield module
    sys.modules.pop(CUPY_MODULE, None)
    if saved is not None:
        sys.modules[CUPY_MODULE] = saved
    if hasattr(backends, "cupy_backend"):
        delattr(backends, "cupy_backend")
