"""Example user cast kernels for ``precisionlab.testing.check_kernel`` and ``precisionlab conformance``.

Each takes a float32 array and returns the values rounded to the target format as float32,
the way a kernel author would write a reference or a fast path:

* :func:`cast_bf16` -- correct: round to nearest even through ``ml_dtypes.bfloat16``;
* :func:`cast_bf16_truncating` -- wrong: drops the low 16 bits (round toward zero), the
  classic fast bf16 conversion;
* :func:`cast_e4m3` -- correct for the default policy (``ml_dtypes.float8_e4m3fn``: NaN on
  overflow, E4M3 has no Inf);
* :func:`cast_e4m3_saturating` -- wrong for the default policy: clamps to ±448 first, so
  overflow and ±Inf give ±448 instead of NaN (right for ``overflow="saturate"``).

    precisionlab conformance examples/cast_kernels.py:cast_bf16 --op cast --to bf16
    precisionlab conformance examples/cast_kernels.py:cast_bf16_truncating --op cast --to bf16
"""

import ml_dtypes
import numpy as np


def cast_bf16(x: np.ndarray) -> np.ndarray:
    return x.astype(ml_dtypes.bfloat16).astype(np.float32)


def cast_bf16_truncating(x: np.ndarray) -> np.ndarray:
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    return (bits & np.uint32(0xFFFF0000)).view(np.float32)


def cast_e4m3(x: np.ndarray) -> np.ndarray:
    return x.astype(ml_dtypes.float8_e4m3fn).astype(np.float32)


def cast_e4m3_saturating(x: np.ndarray) -> np.ndarray:
    return np.clip(x, -448, 448).astype(ml_dtypes.float8_e4m3fn).astype(np.float32)
