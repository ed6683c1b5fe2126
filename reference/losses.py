"""Losses with explicit backward passes: softmax cross-entropy and mean squared error.

``forward(output, target, ops)`` returns the mean loss as a Python float (computed in
``ops.compute_dtype``); ``backward(ops, grad=1.0)`` returns the gradient of
``grad * loss`` w.r.t. the output, cast as ``"loss.grad"``.  ``grad`` is where a loss
scale enters, as in ``(loss * scale).backward()``.

``exp`` and ``log`` of float32 values are evaluated in float64 and rounded once to
float32 (:func:`exp`, :func:`log`): nearly always the correctly rounded result, and the
same on every machine, whereas NumPy's float32 ``exp`` depends on the CPU's SIMD
level (on an AVX-512 machine about a third of its results are one ulp off).  torch's
vectorised kernels have their own approximations (Sleef ``u10`` and the ``exp_u20``
polynomial), so the last bit of the loss and of its gradient can still differ from
torch's (measured against the recorded run in golden/train: see
tests/golden/test_golden_train.py).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .ops import Ops

__all__ = ["SoftmaxCrossEntropy", "MSELoss", "LOSSES", "get_loss", "exp", "log"]


def exp(x: np.ndarray) -> np.ndarray:
    """``e^x`` in ``x``'s float dtype; float32 through float64 (one rounding, machine independent)."""
    x = np.asarray(x)
    return np.exp(x.astype(np.float64)).astype(x.dtype) if x.dtype == np.float32 else np.exp(x)


def log(x: np.ndarray) -> np.ndarray:
    """``ln x`` in ``x``'s float dtype; float32 through float64, like :func:`exp`."""
    x = np.asarray(x)
    return np.log(x.astype(np.float64)).astype(x.dtype) if x.dtype == np.float32 else np.log(x)


def _grad(grad: Any) -> float:
    if isinstance(grad, (bool, np.bool_)) or not isinstance(grad, (int, float, np.integer, np.floating)):
        raise TypeError(f"grad={grad!r} must be a real number")
    if not math.isfinite(float(grad)):
        raise ValueError(f"grad={grad!r} must be finite")
    return float(grad)


class SoftmaxCrossEntropy:
    """Mean over the batch of ``-log softmax(logits)[label]`` (torch's ``cross_entropy``,
    computed as log-softmax then negative log-likelihood, with torch's formulas:
    ``logp = (z - max) - log(sum exp(z - max))``, ``dz = dlogp - exp(logp) * sum(dlogp)``).  ``logits`` are ``(N, C)``,
    ``labels`` integers in ``0..C-1`` of shape ``(N,)``."""

    name = "cross_entropy"

    def __init__(self) -> None:
        self._cache: tuple[np.ndarray, np.ndarray] | None = None

    def forward(self, logits: np.ndarray, labels: np.ndarray, ops: Ops) -> float:
        z = np.asarray(logits)
        y = np.asarray(labels)
        if z.ndim != 2:
            raise ValueError(f"cross_entropy: logits have shape {z.shape}; expected (batch, classes)")
        if y.shape != (z.shape[0],):
            raise ValueError(f"cross_entropy: labels have shape {y.shape}; expected ({z.shape[0]},) for logits "
                             f"of shape {z.shape}")
        if y.dtype.kind not in "iu":
            raise TypeError(f"cross_entropy: labels have dtype {y.dtype}; integer class indices are needed")
        if y.size and (y.min() < 0 or y.max() >= z.shape[1]):
            bad = int(y.min()) if y.min() < 0 else int(y.max())
            raise ValueError(f"cross_entropy: label {bad} outside 0..{z.shape[1] - 1}")
        z = z.astype(ops.compute_dtype)
        shifted = z - z.max(axis=1, keepdims=True)
        total = np.cumsum(exp(shifted), axis=1)[:, -1:]  # the classes summed in order
        logp = shifted - log(total)
        self._cache = (logp, y)
        return float(-logp[np.arange(y.size), y].mean())

    def backward(self, ops: Ops, grad: float = 1.0) -> np.ndarray:
        if self._cache is None:
            raise RuntimeError("cross_entropy: backward() called before forward()")
        logp, y = self._cache
        g = _grad(grad)
        n = y.size
        dlogp = np.zeros_like(logp)
        dlogp[np.arange(n), y] = -(logp.dtype.type(g) / logp.dtype.type(n))
        dz = dlogp - exp(logp) * dlogp.sum(axis=1, keepdims=True)
        return ops.cast(dz.astype(ops.compute_dtype), "loss.grad", self.name)


class MSELoss:
    """Mean over all elements of ``(output - target)^2`` (torch's ``mse_loss``)."""

    name = "mse"

    def __init__(self) -> None:
        self._cache: np.ndarray | None = None

    def forward(self, output: np.ndarray, target: np.ndarray, ops: Ops) -> float:
        o = np.asarray(output)
        t = np.asarray(target)
        if o.shape != t.shape:
            raise ValueError(f"mse: output has shape {o.shape} but target has shape {t.shape}")
        if t.dtype.kind != "f":
            raise TypeError(f"mse: target has dtype {t.dtype}; a float array is needed")
        diff = o.astype(ops.compute_dtype) - t.astype(ops.compute_dtype)
        self._cache = diff
        return float((diff * diff).mean())

    def backward(self, ops: Ops, grad: float = 1.0) -> np.ndarray:
        if self._cache is None:
            raise RuntimeError("mse: backward() called before forward()")
        diff = self._cache
        g = diff.dtype.type(_grad(grad))
        d = diff * (diff.dtype.type(2.0) * g / diff.dtype.type(diff.size))
        return ops.cast(d.astype(ops.compute_dtype), "loss.grad", self.name)


#: Loss name -> class.
LOSSES = {"cross_entropy": SoftmaxCrossEntropy, "mse": MSELoss}


def get_loss(name: str) -> SoftmaxCrossEntropy | MSELoss:
    """A fresh loss by name."""
    if name not in LOSSES:
        raise ValueError(f"loss={name!r} is not a loss; allowed: {', '.join(LOSSES)}")
    return LOSSES[name]()
