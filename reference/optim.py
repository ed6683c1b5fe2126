"""Optimizers on master weights: SGD (momentum, Nesterov), Adam, AdamW (DESIGN §8).

Each ``step(ops)`` reads the (already unscaled) gradients, updates the master copies
with PyTorch's single-tensor algorithms (``torch/optim/sgd.py``, ``adam.py``,
``adamw.py``, ``foreach=False``), in the masters' dtype, and passes every result
through the policy: the new master as ``ops.cast(.., "master", name)`` (identity for
FP32 masters; a half-precision "master" reproduces training without master weights)
and each state tensor as ``"optimizer.<state>"`` (e.g. BF16 Adam moments).  The
working copies follow from the masters (``Parameter.working``).

The arithmetic is NumPy's (every operation rounded in the masters' dtype); torch's
vectorized CPU kernels fuse some multiply-adds, so float32 updates can differ from
torch's in the last bit.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np

from .layers import Parameter
from .ops import Ops

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "OPTIMIZERS", "get_optimizer"]


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
        if self.weight_decay:
            g = g + dt(self.weight_decay) * w
        if self.momentum:
            buf = state.get("momentum_buffer")
            buf = g.copy() if buf is None else buf * dt(self.momentum) + dt(1 - self.dampening) * g
            buf = self._keep(state, "momentum_buffer", buf, p, ops)
            g = g + dt(self.momentum) * buf if self.nesterov else buf
        return w + dt(-self.lr) * g


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
            g = g + dt(self.weight_decay) * w
        step = state.get("step", 0) + 1
        state["step"] = step
        m = state.get("exp_avg", np.zeros_like(w))
        v = state.get("exp_avg_sq", np.zeros_like(w))
        weight = 1 - b1  # torch's lerp(m, g, weight) picks its formula by the weight
        lerp = m + dt(weight) * (g - m) if weight < 0.5 else g - (g - m) * dt(1 - weight)
        m = self._keep(state, "exp_avg", lerp, p, ops)
        v = self._keep(state, "exp_avg_sq", v * dt(b2) + (dt(1 - b2) * g) * g, p, ops)
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
