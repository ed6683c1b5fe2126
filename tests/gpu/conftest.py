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
