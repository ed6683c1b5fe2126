"""Optimizers on master weights: SGD (momentum, Nesterov), Adam, AdamW (DESIGN §8).

Each ``step(ops)`` reads the (already unscaled) gradients, updates the master copies
with PyTorch's single-tensor algorithms (``torch/optim/sgd.py``, ``adam.py``,
``adamw.py``, ``foreach=False``), in the masters' dtype, and passes every result
through the policy: the new master as ``ops.cast(.., "master", name)`` (identity for
FP32 masters; a half-precision "master" reproduces training without master weights)
and each state tensor as ``"optimizer.<state>"`` (e.g. BF16 Adam moments).  The
working copies follow from the masters (``Parameter.working``).

The arithmetic is that of torch's CPU kernels, every operation rounded in the masters'
dtype: where torch's vectorised kernel uses a fused multiply-add (``add(x, alpha=a)``
is ``fmadd(x, a, self)``; ``lerp``, ``addcmul``) the update uses :func:`fused_multiply_add`,
one rounding; ``mul``, ``addcdiv``, ``sqrt`` and division round each operation.  This
was measured on torch 2.13 (CPU): ``p.add_(g, alpha=-lr)`` equals the exactly rounded
``fl32(p - lr*g)`` on every one of 2*10^5 random elements and differs from the
two-rounding ``fl32(p + fl32(-lr*g))`` on 28% of them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np

from .layers import Parameter
from .ops import Ops

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "OPTIMIZERS", "get_optimizer", "fused_multiply_add"]


def _two_sum(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Knuth's TwoSum: ``s = fl(a + b)`` and the exact error ``a + b - s``."""
    s = a + b
    bb = s - a
    return s, (a - (s - bb)) + (b - bb)


def _round_to_odd_sum(s: np.ndarray, err: np.ndarray) -> np.ndarray:
    """``s`` (RNE of a sum whose exact error is ``err``) moved to the sum rounded to odd: when the
    sum was inexact and ``s`` has an even last bit, step one ulp toward the exact value."""
    bits = s.view(np.uint64)
    fix = np.isfinite(s) & (err != 0) & ((bits & np.uint64(1)) == 0)
    return np.where(fix, np.nextafter(s, np.where(err > 0, np.inf, -np.inf)), s)


def _split(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Veltkamp's split of a float64 into two halves of at most 26 significant bits."""
    t = a * 134217729.0  # 2^27 + 1
    hi = t - (t - a)
    return hi, a - hi


def fused_multiply_add(a: Any, b: Any, c: Any, dtype: Any) -> np.ndarray:
    """``a * b + c`` rounded once (RNE) to ``dtype`` (float32 or float64), as an FMA instruction.

    float32: the product is exact in float64, the sum is rounded to odd in float64 (TwoSum
    plus a last-bit fix) and then to float32, which is correct because float64 has more than
    24 + 2 bits (Boldo & Melquiond, "Emulation of FMA and correctly rounded sums: proved
    algorithms using rounding to odd", IEEE TC 2008).  float64: the same paper's emulated FMA
    (Dekker's exact product, TwoSum, one addition rounded to odd), exact unless a partial
    result overflows or the product falls below 2^-969.
    """
    dt = np.dtype(dtype)
    if dt == np.float32:
        a64, b64, c64 = (np.asarray(v, dtype=np.float32).astype(np.float64) for v in (a, b, c))
        prod = a64 * b64
        with np.errstate(invalid="ignore", over="ignore"):
            s, err = _two_sum(prod, c64)
            return _round_to_odd_sum(s, err).astype(np.float32)
    if dt != np.float64:
        raise TypeError(f"dtype={dt} not allowed; float32 or float64")
    a64, b64, c64 = (np.asarray(v, dtype=np.float64) for v in (a, b, c))
    with np.errstate(invalid="ignore", over="ignore"):
        uh = a64 * b64
        ah, al = _split(a64)
        bh, bl = _split(b64)
        ul = ((ah * bh - uh) + ah * bl + al * bh) + al * bl
        th, tl = _two_sum(c64, uh)
        v = _round_to_odd_sum(*_two_sum(tl, ul))
        out = th + v
    return np.where(np.isfinite(uh) & np.isfinite(c64), out, uh + c64)


def _hyper(arg: str, value: Any, *, low: float = 0.0, high: float | None = None, open_high: bool = False) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{arg}={value!r} must be a real number")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{arg}={value!r} must be finite")
    if v < low or (high is not None and (v >= high if open_high else v > high)):
        bound = "" if high is None else (f" and < {high}" if open_high else f" and <= {high}")
        raise ValueError(f"{arg}={value!r} not allowed; must be >= {low}{bound}")
    return v


class Optimizer:
    """Common parts: the parameter list, the learning rate, per-parameter state."""

    def __init__(self, params: Iterable[Parameter], lr: float) -> None:
        self.params = list(params)
        if not self.params or not all(isinstance(p, Parameter) for p in self.params):
            raise TypeError("params must be a non-empty iterable of Parameters (e.g. model.parameters())")
        self.lr = lr
        self.state: dict[str, dict[str, Any]] = {p.name: {} for p in self.params}

    @property
    def lr(self) -> float:
        return self._lr

    @lr.setter
    def lr(self, value: float) -> None:
        self._lr = _hyper("lr", value)

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def step(self, ops: Ops) -> None:
        for p in self.params:
            if p.grad is None:
                continue
            if p.grad.shape != p.master.shape:
                raise ValueError(f"parameter {p.name!r}: gradient shape {p.grad.shape} != {p.master.shape}")
            dt = p.master.dtype.type
            new = self._update(p, np.asarray(p.grad, dtype=p.master.dtype), self.state[p.name], ops, dt)
            p.master = np.asarray(ops.cast(new, "master", p.name), dtype=p.master.dtype)

    def _update(self, p: Parameter, g: np.ndarray, state: dict[str, Any], ops: Ops, dt: type) -> np.ndarray:
        raise NotImplementedError

    @staticmethod
    def _keep(state: dict[str, Any], key: str, value: np.ndarray, p: Parameter, ops: Ops) -> np.ndarray:
        state[key] = np.asarray(ops.cast(value, f"optimizer.{key}", p.name), dtype=p.master.dtype)
        return state[key]


class SGD(Optimizer):
    """torch ``SGD``: ``g += wd * p``; ``buf = g`` (first step) or ``momentum * buf + (1 - dampening) * g``;
    ``g = g + momentum * buf`` (Nesterov) or ``buf``; ``p -= lr * g``."""

    def __init__(self, params: Iterable[Parameter], lr: float, *, momentum: float = 0.0, dampening: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False) -> None:
        super().__init__(params, lr)
        self.momentum = _hyper("momentum", momentum)
        self.dampening = _hyper("dampening", dampening, high=1.0)
        self.weight_decay = _hyper("weight_decay", weight_decay)
        if not isinstance(nesterov, bool):
            raise TypeError(f"nesterov={nesterov!r} must be True or False")
        if nesterov and (self.momentum <= 0 or self.dampening != 0):
            raise ValueError("nesterov=True needs momentum > 0 and dampening == 0 (as torch)")
        self.nesterov = nesterov

    def _update(self, p: Parameter, g: np.ndarray, state: dict[str, Any], ops: Ops, dt: type) -> np.ndarray:
        w = p.master
        fma = fused_multiply_add
        if self.weight_decay:
            g = fma(dt(self.weight_decay), w, g, dt)                     # g.add(p, alpha=wd)
        if self.momentum:
            buf = state.get("momentum_buffer")
            # buf = clone(g), later buf.mul_(momentum).add_(g, alpha=1 - dampening)
            buf = g.copy() if buf is None else fma(dt(1 - self.dampening), g, buf * dt(self.momentum), dt)
            buf = self._keep(state, "momentum_buffer", buf, p, ops)
            g = fma(dt(self.momentum), buf, g, dt) if self.nesterov else buf  # g.add(buf, alpha=momentum)
        return fma(dt(-self.lr), g, w, dt)                                 # p.add_(g, alpha=-lr)


class Adam(Optimizer):
    """torch ``Adam`` (no amsgrad): ``g += wd * p``; ``m = lerp(m, g, 1 - b1)``;
    ``v = b2 * v + (1 - b2) * g * g``; ``p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)``."""

    decoupled = False

    def __init__(self, params: Iterable[Parameter], lr: float = 1e-3, *, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0) -> None:
        super().__init__(params, lr)
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise TypeError(f"betas={betas!r} must be a pair (beta1, beta2)")
        self.betas = (_hyper("betas[0]", betas[0], high=1.0, open_high=True),
                      _hyper("betas[1]", betas[1], high=1.0, open_high=True))
        self.eps = _hyper("eps", eps)
        self.weight_decay = _hyper("weight_decay", weight_decay)

    def _update(self, p: Parameter, g: np.ndarray, state: dict[str, Any], ops: Ops, dt: type) -> np.ndarray:
        b1, b2 = self.betas
        w = p.master
        if self.decoupled:
            w = w * dt(1 - self.lr * self.weight_decay)
        elif self.weight_decay:
            g = fused_multiply_add(dt(self.weight_decay), w, g, dt)
        step = state.get("step", 0) + 1
        state["step"] = step
        m = state.get("exp_avg", np.zeros_like(w))
        v = state.get("exp_avg_sq", np.zeros_like(w))
        fma = fused_multiply_add
        weight = dt(1 - b1)  # torch's lerp(m, g, weight) picks its formula by the weight, both fused
        lerp = fma(weight, g - m, m, dt) if weight < 0.5 else fma(-(g - m), dt(1) - weight, g, dt)
        m = self._keep(state, "exp_avg", lerp, p, ops)
        # exp_avg_sq.mul_(b2).addcmul_(g, g, value=1 - b2): fl(fl(value * g) * g + fl(v * b2))
        v = self._keep(state, "exp_avg_sq", fma(dt(1 - b2) * g, g, v * dt(b2), dt), p, ops)
        step_size = self.lr / (1 - b1 ** step)
        bias_correction2_sqrt = math.sqrt(1 - b2 ** step)
        denom = np.sqrt(v) / dt(bias_correction2_sqrt) + dt(self.eps)
        return w + (dt(-step_size) * m) / denom  # addcdiv: self + value * t1 / t2


class AdamW(Adam):
    """torch ``AdamW``: decoupled weight decay ``p *= 1 - lr * wd`` before the Adam step
    (default ``weight_decay=0.01`` as torch)."""

    decoupled = True

    def __init__(self, params: Iterable[Parameter], lr: float = 1e-3, *, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.01) -> None:
        super().__init__(params, lr, betas=betas, eps=eps, weight_decay=weight_decay)


#: Optimizer name -> class.
OPTIMIZERS = {"sgd": SGD, "adam": Adam, "adamw": AdamW}


def get_optimizer(name: str, params: Iterable[Parameter], **kwargs: Any) -> Optimizer:
    """Build an optimizer by name (``"sgd"``, ``"adam"``, ``"adamw"``)."""
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer={name!r} is not an optimizer; allowed: {', '.join(OPTIMIZERS)}")
    return OPTIMIZERS[name](params, **kwargs)
