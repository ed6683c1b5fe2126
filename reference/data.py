"""Deterministic data for the reference trainer: synthetic tasks and scikit-learn's digits.

Every task is generated from a seed with NumPy's PCG64 (``np.random.default_rng``),
so the same seed gives the same float32 arrays on every machine.  Nothing is
downloaded: :func:`digits` reads the copy bundled with scikit-learn and is available
only when scikit-learn is installed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Dataset", "gaussian_blobs", "teacher_classification", "teacher_regression", "sequence_task", "digits",
           "TASKS", "get_task"]


@dataclass(frozen=True, eq=False)
class Dataset:
    """Train/test arrays (float32 inputs; int64 labels or float32 targets) and what they are."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    n_classes: int | None  # None for regression

    @property
    def n_features(self) -> int:
        return int(self.x_train.shape[-1])

    def batches(self, batch_size: int, *, seed: int | None = None):
        """Yield ``(x, y)`` minibatches of the training set (shuffled when ``seed`` is given)."""
        bs = _count("batch_size", batch_size)
        n = self.x_train.shape[0]
        order = np.arange(n) if seed is None else np.random.default_rng(seed).permutation(n)
        for start in range(0, n, bs):
            idx = order[start:start + bs]
            yield self.x_train[idx], self.y_train[idx]


def _count(arg: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{arg}={value!r} must be an int")
    if value < minimum:
        raise ValueError(f"{arg}={value} must be >= {minimum}")
    return int(value)


def _fraction(arg: str, value: Any) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float)) or not 0 < value < 1:
        raise ValueError(f"{arg}={value!r} must be a number strictly between 0 and 1")
    return float(value)


def _split(name: str, x: np.ndarray, y: np.ndarray, test_fraction: float, rng: np.random.Generator,
           n_classes: int | None) -> Dataset:
    n = x.shape[0]
    order = rng.permutation(n)
    n_test = max(1, int(round(n * _fraction("test_fraction", test_fraction))))
    test, train = order[:n_test], order[n_test:]
    return Dataset(name, x[train], y[train], x[test], y[test], n_classes)


def gaussian_blobs(n_samples: int = 512, n_features: int = 16, n_classes: int = 4, *, spread: float = 1.0,
                   separation: float = 3.0, test_fraction: float = 0.25, seed: int = 0) -> Dataset:
    """Classification: ``n_classes`` isotropic Gaussian blobs (std ``spread``) whose centres
    are random directions of length ``separation``; classes are balanced."""
    n, d, c = _count("n_samples", n_samples, 2), _count("n_features", n_features), _count("n_classes", n_classes, 2)
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((c, d))
    centres *= separation / np.linalg.norm(centres, axis=1, keepdims=True)
    y = np.arange(n) % c
    x = centres[y] + spread * rng.standard_normal((n, d))
    return _split("blobs", x.astype(np.float32), y.astype(np.int64), test_fraction, rng, c)


def teacher_classification(n_samples: int = 512, n_features: int = 16, n_classes: int = 10, *, hidden: int = 32,
                           test_fraction: float = 0.25, seed: int = 0) -> Dataset:
    """Classification by a fixed random teacher network: labels are
    ``argmax(tanh(x A) B)`` for standard-normal inputs."""
    n, d, c = _count("n_samples", n_samples, 2), _count("n_features", n_features), _count("n_classes", n_classes, 2)
    h = _count("hidden", hidden)
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((d, h)) / np.sqrt(d)
    b = rng.standard_normal((h, c)) / np.sqrt(h)
    x = rng.standard_normal((n, d))
    y = np.argmax(np.tanh(x @ a) @ b, axis=1)
    return _split("teacher", x.astype(np.float32), y.astype(np.int64), test_fraction, rng, c)


def teacher_regression(n_samples: int = 512, n_features: int = 16, n_outputs: int = 1, *, output_scale: float = 1.0,
                       noise: float = 0.0, test_fraction: float = 0.25, seed: int = 0) -> Dataset:
    """Regression on a random linear teacher, ``y = output_scale * x W + noise``; a small
    ``output_scale`` makes the gradients small (the case loss scaling exists for)."""
    n, d, k = _count("n_samples", n_samples, 2), _count("n_features", n_features), _count("n_outputs", n_outputs)
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((d, k)) / np.sqrt(d)
    x = rng.standard_normal((n, d))
    y = output_scale * (x @ w) + noise * rng.standard_normal((n, k))
    return _split("regression", x.astype(np.float32), y.astype(np.float32), test_fraction, rng, None)


def sequence_task(n_samples: int = 512, seq_len: int = 8, n_features: int = 8, n_classes: int = 4, *,
                  noise: float = 0.5, test_fraction: float = 0.25, seed: int = 0) -> Dataset:
    """Sequence classification for the transformer: each sequence is noise except one
    token, at a random position, equal to its class's prototype (plus noise)."""
    n, t = _count("n_samples", n_samples, 2), _count("seq_len", seq_len)
    d, c = _count("n_features", n_features), _count("n_classes", n_classes, 2)
    rng = np.random.default_rng(seed)
    prototypes = 3.0 * rng.standard_normal((c, d)) / np.sqrt(d)
    y = np.arange(n) % c
    x = noise * rng.standard_normal((n, t, d))
    pos = rng.integers(0, t, n)
    x[np.arange(n), pos] += prototypes[y]
    return _split("sequence", x.astype(np.float32), y.astype(np.int64), test_fraction, rng, c)


def digits(*, test_fraction: float = 0.25, seed: int = 0) -> Dataset:
    """scikit-learn's bundled 8x8 digits (1797 images, 10 classes), pixels scaled to [0, 1]
    (no download).  Raises ImportError when scikit-learn is not installed."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:
        raise ImportError("the digits data set needs scikit-learn (pip install scikit-learn); it ships with the "
                          "package, nothing is downloaded") from exc
    bunch = load_digits()
    x = (np.asarray(bunch.data, dtype=np.float64) / 16.0).astype(np.float32)
    y = np.asarray(bunch.target, dtype=np.int64)
    return _split("digits", x, y, test_fraction, np.random.default_rng(seed), 10)


#: Task name -> builder.
TASKS = {"blobs": gaussian_blobs, "teacher": teacher_classification, "regression": teacher_regression,
         "sequence": sequence_task, "digits": digits}


def get_task(name: str, **kwargs: Any) -> Dataset:
    """Build a task by name with its keyword arguments."""
    if name not in TASKS:
        raise ValueError(f"task={name!r} is not a task; allowed: {', '.join(TASKS)}")
    return TASKS[name](**kwargs)
