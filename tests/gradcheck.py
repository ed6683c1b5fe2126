"""Float64 central finite differences for the reference trainer's gradient tests."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

#: The acceptance bound of DESIGN §8 / the trainer issue: relative error below 1e-6.
TOLERANCE = 1e-6


def numerical_gradient(f: Callable[[], float], x: np.ndarray, h: float = 1e-6) -> np.ndarray:
    """d f / d x by central differences, perturbing ``x`` (float64) in place, one element at a time."""
    assert x.dtype == np.float64
    g = np.zeros_like(x)
    for idx in np.ndindex(*x.shape):
        old = x[idx]
        step = h * max(1.0, abs(old))
        x[idx] = old + step
        up = f()
        x[idx] = old - step
        down = f()
        x[idx] = old
        g[idx] = (up - down) / (2 * step)
    return g


def relative_error(analytic: np.ndarray, numeric: np.ndarray) -> float:
    """``||a - n|| / max(||a||, ||n||)`` (0 when both are 0)."""
    a, n = np.asarray(analytic, dtype=np.float64), np.asarray(numeric, dtype=np.float64)
    assert a.shape == n.shape, (a.shape, n.shape)
    scale = max(np.linalg.norm(a), np.linalg.norm(n))
    return 0.0 if scale == 0 else float(np.linalg.norm(a - n) / scale)
