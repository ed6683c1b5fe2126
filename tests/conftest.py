"""Session-wide test setup.

NUMBA_ENABLE_CUDASIM must be set before anything imports numba.cuda (a backend
discovery in any test module does), so it is set here, before collection, unless
PRECISIONLAB_REAL_GPU=1 asks for the real device: without a GPU the Numba-CUDA
kernels run on Numba's CUDA simulator (tests/gpu).  It does not change CPU Numba.
"""

from __future__ import annotations

import os

if os.environ.get("PRECISIONLAB_REAL_GPU") != "1":
    os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")
