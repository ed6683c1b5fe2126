"""Layers with explicit forward and backward passes (DESIGN §8).

Each layer computes with the injected ``ops`` (see :mod:`.ops`): GEMMs through
``ops.matmul`` with a role, format changes through ``ops.cast``, elementwise
arithmetic in ``ops.compute_dtype``.  ``forward(x, ops)`` keeps what ``backward``
needs; ``backward(dy, ops)`` returns the input gradient and accumulates parameter
gradients into :class:`Parameter.grad`.  Layouts follow PyTorch (Linear weights are
``(out_features, in_features)``; attention is ``softmax(q k^T / sqrt(d)) v``) so that
weights and results can be compared with torch one to one.

The parameter's working copy is ``ops.cast(master, "weight", name)`` taken at every
use; since only the optimizer changes the master, this is the same as a persistent
low-precision copy refreshed after each update, without a stale copy to forget.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .ops import Ops

__all__ = ["Parameter", "Layer", "Linear", "ReLU", "GELU", "LayerNorm", "SelfAttention", "Residual", "Sequential",
           "MeanPool", "softmax", "softmax_backward", "GELU_APPROXIMATIONS"]

GELU_APPROXIMATIONS = ("none", "tanh")


@dataclass(eq=False)
class Parameter:
    """A trainable tensor: its master copy (``ops.master_dtype``) and accumulated gradient."""

    name: str
    master: np.ndarray
    grad: np.ndarray | None = None

    def working(self, ops: Ops) -> np.ndarray:
        """The copy the layer computes with."""
        return ops.cast(self.master, "weight", self.name)

    def accumulate(self, g: np.ndarray, ops: Ops) -> None:
        """Add a gradient (cast to the policy's gradient format)."""
        if g.shape != self.master.shape:
            raise ValueError(f"parameter {self.name!r}: gradient of shape {g.shape} for a parameter of shape "
                             f"{self.master.shape}")
        g = ops.cast(g, "param_grad", self.name)
        self.grad = g if self.grad is None else ops.cast(self.grad + g, "param_grad", self.name)


def _name(name: Any) -> str:
    if not isinstance(name, str) or not name:
        raise TypeError(f"name={name!r} must be a non-empty string")
    return name


def _features(arg: str, value: Any) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{arg}={value!r} must be an int")
    if value < 1:
        raise ValueError(f"{arg}={value} must be >= 1")
    return int(value)


class Layer:
    """Base of the layers: a name, parameters, and the forward cache."""

    def __init__(self, name: str) -> None:
        self.name = _name(name)
        self._cache: Any = None

    def parameters(self) -> list[Parameter]:
        return []

    def forward(self, x: np.ndarray, ops: Ops) -> np.ndarray:
        raise NotImplementedError

    def backward(self, dy: np.ndarray, ops: Ops) -> np.ndarray:
        raise NotImplementedError

    def _saved(self) -> Any:
        if self._cache is None:
            raise RuntimeError(f"{type(self).__name__} {self.name!r}: backward() called before forward()")
        return self._cache

    def _check_dy(self, dy: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        dy = np.asarray(dy)
        if dy.shape != shape:
            raise ValueError(f"{type(self).__name__} {self.name!r}: dy has shape {dy.shape}; the forward output "
                             f"had shape {shape}")
        return dy

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


def _input(x: Any, ops: Ops, layer: Layer) -> np.ndarray:
    xp = np.asarray(x)
    if xp.dtype.kind != "f":
        raise TypeError(f"{type(layer).__name__} {layer.name!r}: x has dtype {xp.dtype}; a float array is needed")
    return xp.astype(ops.compute_dtype, copy=False)


class Linear(Layer):
    """``y = x @ W.T + b`` over the last axis; W is ``(out_features, in_features)``.

    torch's default initialization: W and b uniform in ``±1/sqrt(in_features)``.
    """

    def __init__(self, in_features: int, out_features: int, *, bias: bool = True, name: str = "linear",
                 rng: np.random.Generator | None = None, dtype: Any = np.float64) -> None:
        super().__init__(name)
        self.in_features = _features("in_features", in_features)
        self.out_features = _features("out_features", out_features)
        rng = np.random.default_rng(0) if rng is None else rng
        bound = 1.0 / math.sqrt(self.in_features)
        self.weight = Parameter(f"{self.name}.weight",
                                rng.uniform(-bound, bound, (self.out_features, self.in_features)).astype(dtype))
        self.bias = Parameter(f"{self.name}.bias", rng.uniform(-bound, bound, self.out_features).astype(dtype)) \
            if bias else None

    def parameters(self) -> list[Parameter]:
        return [self.weight] + ([self.bias] if self.bias is not None else [])

    def forward(self, x: np.ndarray, ops: Ops) -> np.ndarray:
        x = np.asarray(x)
        if x.ndim < 1 or x.shape[-1] != self.in_features:
            raise ValueError(f"Linear {self.name!r}: x has shape {x.shape}; expected last dimension "
                             f"in_features={self.in_features}")
        x2 = _input(x, ops, self).reshape(-1, self.in_features)
        w = self.weight.working(ops)
        b = self.bias.working(ops) if self.bias is not None else None
        y = ops.matmul(x2, w.T, "forward", self.name, c=b)
        self._cache = (x2, w, x.shape)
        return y.reshape(x.shape[:-1] + (self.out_features,))

    def backward(self, dy: np.ndarray, ops: Ops, *, input_grad: bool = True) -> np.ndarray | None:
        """``input_grad=False`` skips the dgrad GEMM and returns None (torch does not compute the
        gradient of an input that does not require one, e.g. the model's input batch)."""
        x2, w, shape = self._saved()
        dy = self._check_dy(dy, shape[:-1] + (self.out_features,))
        dy2 = dy.reshape(-1, self.out_features)
        dx = ops.matmul(dy2, w, "dgrad", self.name) if input_grad else None
        self.weight.accumulate(ops.matmul(dy2.T, x2, "wgrad", self.name), ops)
        if self.bias is not None:
            db = ops.cast(dy2.astype(ops.compute_dtype).sum(axis=0), "linear.bias_grad", self.name)
            self.bias.accumulate(db, ops)
        return dx.reshape(shape) if dx is not None else None


class ReLU(Layer):
    """``max(x, 0)``; the gradient at 0 is 0 (as torch)."""

    def __init__(self, name: str = "relu") -> None:
        super().__init__(name)

    def forward(self, x: np.ndarray, ops: Ops) -> np.ndarray:
        x = _input(x, ops, self)
        self._cache = x > 0
        return ops.cast(np.where(self._cache, x, 0).astype(ops.compute_dtype), "relu.out", self.name)

    def backward(self, dy: np.ndarray, ops: Ops) -> np.ndarray:
        mask = self._saved()
        dy = self._check_dy(dy, mask.shape).astype(ops.compute_dtype)
        return ops.cast(np.where(mask, dy, 0).astype(ops.compute_dtype), "relu.grad", self.name)


_erf = np.vectorize(math.erf, otypes=[np.float64])
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


class GELU(Layer):
    """Gaussian error linear unit.

    ``approximate="none"`` (torch's default) is the exact form ``x * Phi(x)`` with
    ``Phi(x) = (1 + erf(x / sqrt 2)) / 2`` (erf from ``math.erf``, evaluated in float64);
    ``"tanh"`` is ``x/2 * (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))``.
    """

    def __init__(self, approximate: str = "none", name: str = "gelu") -> None:
        super().__init__(name)
        if approximate not in GELU_APPROXIMATIONS:
            raise ValueError(f"approximate={approximate!r} not allowed; choose one of {GELU_APPROXIMATIONS}")
        self.approximate = approximate

    def forward(self, x: np.ndarray, ops: Ops) -> np.ndarray:
        x = _input(x, ops, self)
        x64 = x.astype(np.float64)
        if self.approximate == "none":
            cdf = 0.5 * (1.0 + _erf(x64 / math.sqrt(2.0)))
            y = x64 * cdf
            self._cache = ("none", x64, cdf)
        else:
            t = np.tanh(_SQRT_2_OVER_PI * (x64 + 0.044715 * x64 ** 3))
            y = 0.5 * x64 * (1.0 + t)
            self._cache = ("tanh", x64, t)
        return ops.cast(y.astype(ops.compute_dtype), "gelu.out", self.name)

    def backward(self, dy: np.ndarray, ops: Ops) -> np.ndarray:
        kind, x, aux = self._saved()
        dy = self._check_dy(dy, x.shape).astype(np.float64)
        if kind == "none":
            dydx = aux + x * np.exp(-0.5 * x * x) * _INV_SQRT_2PI
        else:
            dydx = 0.5 * (1.0 + aux) + 0.5 * x * (1.0 - aux * aux) * _SQRT_2_OVER_PI * (1.0 + 3 * 0.044715 * x * x)
        return ops.cast((dy * dydx).astype(ops.compute_dtype), "gelu.grad", self.name)


class LayerNorm(Layer):
    """Normalization over the last axis, ``(x - mean) / sqrt(var + eps) * gamma + beta``
    with the biased variance (torch's ``nn.LayerNorm``, eps 1e-5)."""

    def __init__(self, features: int, *, eps: float = 1e-5, name: str = "layernorm", dtype: Any = np.float64) -> None:
        super().__init__(name)
        self.features = _features("features", features)
        if not isinstance(eps, (int, float)) or not (math.isfinite(eps) and eps > 0):
            raise ValueError(f"eps={eps!r} must be a finite number > 0")
        self.eps = float(eps)
        self.gamma = Parameter(f"{self.name}.weight", np.ones(self.features, dtype=dtype))
        self.beta = Parameter(f"{self.name}.bias", np.zeros(self.features, dtype=dtype))

    def parameters(self) -> list[Parameter]:
        return [self.gamma, self.beta]

    def forward(self, x: np.ndarray, ops: Ops) -> np.ndarray:
        x = _input(x, ops, self)
        if x.shape[-1] != self.features:
            raise ValueError(f"LayerNorm {self.name!r}: x has shape {x.shape}; expected last dimension "
                             f"features={self.features}")
        mean = x.mean(axis=-1, keepdims=True)
        centered = x - mean
        var = (centered * centered).mean(axis=-1, keepdims=True)
        rstd = 1.0 / np.sqrt(var + self.eps)
        xhat = centered * rstd
        gamma, beta = self.gamma.working(ops), self.beta.working(ops)
        self._cache = (xhat, rstd, gamma)
        return ops.cast((xhat * gamma + beta).astype(ops.compute_dtype), "layernorm.out", self.name)

    def backward(self, dy: np.ndarray, ops: Ops) -> np.ndarray:
        xhat, rstd, gamma = self._saved()
        dy = self._check_dy(dy, xhat.shape).astype(ops.compute_dtype)
        lead = tuple(range(dy.ndim - 1))
        self.gamma.accumulate((dy * xhat).sum(axis=lead), ops)
        self.beta.accumulate(dy.sum(axis=lead), ops)
        dxhat = dy * gamma
        dx = rstd * (dxhat - dxhat.mean(axis=-1, keepdims=True) - xhat * (dxhat * xhat).mean(axis=-1, keepdims=True))
        return ops.cast(dx.astype(ops.compute_dtype), "layernorm.grad", self.name)


def softmax(s: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax; ``-inf`` entries get probability 0."""
    m = np.max(s, axis=axis, keepdims=True)
    e = np.exp(s - m)
    return e / e.sum(axis=axis, keepdims=True)


def softmax_backward(p: np.ndarray, dp: np.ndarray, axis: int = -1) -> np.ndarray:
    """Gradient of the scores from the probabilities ``p`` and their gradient ``dp``."""
    return p * (dp - (dp * p).sum(axis=axis, keepdims=True))


class SelfAttention(Layer):
    """Single-head self-attention on ``(batch, seq, d_model)``:
    ``softmax(q k^T / sqrt(d_model) [+ causal mask]) v`` with q, k, v and the output
    projection as Linear layers named ``<name>.q``, ``.k``, ``.v``, ``.out``.  The two
    products use sites ``<name>.scores`` and ``<name>.context``."""

    def __init__(self, d_model: int, *, causal: bool = False, name: str = "attn",
                 rng: np.random.Generator | None = None, dtype: Any = np.float64) -> None:
        super().__init__(name)
        self.d_model = _features("d_model", d_model)
        if not isinstance(causal, bool):
            raise TypeError(f"causal={causal!r} must be True or False")
        self.causal = causal
        rng = np.random.default_rng(0) if rng is None else rng
        self.q, self.k, self.v, self.out = (Linear(self.d_model, self.d_model, name=f"{self.name}.{p}", rng=rng,
                                                   dtype=dtype) for p in ("q", "k", "v", "out"))
        self.scale = 1.0 / math.sqrt(self.d_model)

    def parameters(self) -> list[Parameter]:
        return [p for lin in (self.q, self.k, self.v, self.out) for p in lin.parameters()]

    def forward(self, x: np.ndarray, ops: Ops) -> np.ndarray:
        x = np.asarray(x)
        if x.ndim != 3 or x.shape[-1] != self.d_model:
            raise ValueError(f"SelfAttention {self.name!r}: x has shape {x.shape}; expected (batch, seq, "
                             f"d_model={self.d_model})")
        q, k, v = self.q.forward(x, ops), self.k.forward(x, ops), self.v.forward(x, ops)
        kt = np.swapaxes(k, -1, -2)
        s = ops.matmul(q, kt, "forward", f"{self.name}.scores").astype(ops.compute_dtype) * self.scale
        s = ops.cast(s, "attention.scores", self.name)
        if self.causal:
            t = x.shape[1]
            s = np.where(np.tril(np.ones((t, t), dtype=bool)), s, -np.inf)
        p = ops.cast(softmax(s).astype(ops.compute_dtype), "softmax.out", self.name)
        ctx = ops.matmul(p, v, "forward", f"{self.name}.context")
        self._cache = (q, k, v, p)
        return self.out.forward(ctx, ops)

    def backward(self, dy: np.ndarray, ops: Ops) -> np.ndarray:
        q, k, v, p = self._saved()
        dctx = self.out.backward(dy, ops)
        dp = ops.matmul(dctx, np.swapaxes(v, -1, -2), "dgrad", f"{self.name}.context")
        # dv = p^T @ dctx, computed as (dctx^T @ p)^T so that every wgrad has OPERANDS' order
        # (grad_output^T, input); the products commute and K is summed in the same order.
        dv = np.swapaxes(ops.matmul(np.swapaxes(dctx, -1, -2), p, "wgrad", f"{self.name}.context"), -1, -2)
        ds = softmax_backward(p, np.asarray(dp, dtype=ops.compute_dtype)) * self.scale
        ds = ops.cast(ds.astype(ops.compute_dtype), "softmax.grad", self.name)
        dq = ops.matmul(ds, k, "dgrad", f"{self.name}.scores")
        dk = ops.matmul(np.swapaxes(ds, -1, -2), q, "wgrad", f"{self.name}.scores")
        return self.q.backward(dq, ops) + self.k.backward(dk, ops) + self.v.backward(dv, ops)


class Residual(Layer):
    """``x + inner(x)``."""

    def __init__(self, inner: Layer, name: str = "residual") -> None:
        super().__init__(name)
        if not isinstance(inner, Layer):
            raise TypeError(f"inner={inner!r} must be a Layer")
        self.inner = inner

    def parameters(self) -> list[Parameter]:
        return self.inner.parameters()

    def forward(self, x: np.ndarray, ops: Ops) -> np.ndarray:
        x = _input(x, ops, self)
        y = self.inner.forward(x, ops)
        if y.shape != x.shape:
            raise ValueError(f"Residual {self.name!r}: inner layer maps shape {x.shape} to {y.shape}")
        self._cache = x.shape
        return ops.cast((x + y).astype(ops.compute_dtype), "residual.out", self.name)

    def backward(self, dy: np.ndarray, ops: Ops) -> np.ndarray:
        shape = self._saved()
        dy = self._check_dy(dy, shape).astype(ops.compute_dtype)
        d_inner = np.asarray(self.inner.backward(dy, ops), dtype=ops.compute_dtype)
        return ops.cast(dy + d_inner, "residual.grad", self.name)


class MeanPool(Layer):
    """Mean over axis 1 (the sequence): ``(batch, seq, d) -> (batch, d)``."""

    def __init__(self, name: str = "pool") -> None:
        super().__init__(name)

    def forward(self, x: np.ndarray, ops: Ops) -> np.ndarray:
        x = _input(x, ops, self)
        if x.ndim != 3:
            raise ValueError(f"MeanPool {self.name!r}: x has shape {x.shape}; expected (batch, seq, features)")
        self._cache = x.shape
        return ops.cast(x.mean(axis=1), "pool.out", self.name)

    def backward(self, dy: np.ndarray, ops: Ops) -> np.ndarray:
        b, t, d = self._saved()
        dy = self._check_dy(dy, (b, d)).astype(ops.compute_dtype)
        dx = np.broadcast_to((dy / t)[:, None, :], (b, t, d)).astype(ops.compute_dtype)
        return ops.cast(dx, "pool.grad", self.name)


class Sequential(Layer):
    """Layers applied in order; their names must be unique."""

    def __init__(self, layers: Sequence[Layer], name: str = "sequential") -> None:
        super().__init__(name)
        layers = list(layers)
        if not layers or not all(isinstance(layer, Layer) for layer in layers):
            raise TypeError(f"layers={layers!r} must be a non-empty sequence of Layers")
        self.layers = layers
        seen: set[str] = set()
        for p in self.parameters():
            if p.name in seen:
                raise ValueError(f"Sequential {self.name!r}: two parameters are named {p.name!r}; give layers "
                                 "unique names")
            seen.add(p.name)

    def parameters(self) -> list[Parameter]:
        return [p for layer in self.layers for p in layer.parameters()]

    def forward(self, x: np.ndarray, ops: Ops) -> np.ndarray:
        for layer in self.layers:
            x = layer.forward(x, ops)
        return x

    def backward(self, dy: np.ndarray, ops: Ops) -> np.ndarray:
        for layer in reversed(self.layers):
            dy = layer.backward(dy, ops)
        return dy
