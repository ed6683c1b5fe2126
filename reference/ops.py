"""The seam between the reference layers and a precision policy (DESIGN §8).

Layers never choose a precision.  Every GEMM they need goes through one injected
function, ``ops.matmul(a, b, role, site, c=None)``, and every change of format
through ``ops.cast(x, what, site)``; a precision policy is an object with these two
methods (and the two dtypes below).  :class:`Float64Ops` is the exact-ish baseline:
float64 ``np.matmul`` and identity casts, used to check gradients against finite
differences.  A low-precision policy maps

* ``role`` -> a ``MatmulSpec`` (``pl.matmul(a, b, spec, c=c)``), and
* ``what`` (with ``site`` for per-tensor choices such as FP8 scales) -> a
  ``pl.round`` format, or the identity.

Roles, for a product ``C = A @ B`` in the forward pass::

    forward   C  = A @ B            (e.g. Linear: x @ W.T)
    dgrad     dA = dC @ B.T         (gradient w.r.t. the left operand; Linear: dY @ W)
    wgrad     dB = A.T @ dC         (gradient w.r.t. the right operand; Linear: dY.T @ x
                                     gives dW directly)

For ``nn.Linear`` on a CPU these are torch's three memory layouts: forward multiplies
by a transposed view (``torch_cpu_nt``), dgrad is row-major by row-major
(``torch_cpu_nn``), wgrad has a column-major left operand (``torch_cpu_tn``).
:data:`OPERANDS` names what the two operands of each role are, in Transformer
Engine's terms (``input``, ``weight``, ``grad_output``): the tensor whose FP8 scale
and format (forward tensors E4M3, ``grad_output`` E5M2 under HYBRID) a policy applies
to that operand.  For the attention products both forward operands are activations;
a policy treats them by site.

``site`` names the call site: the layer's name for a Linear (``"fc1"``), or
``"<attention layer>.scores"`` / ``"<attention layer>.context"`` for the two
products inside attention, and the parameter's name for parameter casts
(``"fc1.weight"``).  ``c`` is an addend folded into the product before its output
rounding (a Linear's bias, as ``F.linear`` and cuBLASLt's bias epilogue do); it
broadcasts like ``np.matmul(a, b) + c``.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

__all__ = ["ROLES", "OPERANDS", "CAST_POINTS", "Ops", "Float64Ops", "Float32Ops", "check_role", "check_cast_point",
           "check_matmul_shapes"]

#: The three GEMMs of a layer (see the module docstring).
ROLES = ("forward", "dgrad", "wgrad")

#: role -> (left operand, right operand) of a Linear layer, in TE's tensor names.
OPERANDS: dict[str, tuple[str, str]] = {
    "forward": ("input", "weight"),       # x @ W.T
    "dgrad": ("grad_output", "weight"),   # dY @ W
    "wgrad": ("grad_output", "input"),    # dY.T @ x
}

#: Every ``what`` a layer, loss or optimizer passes to ``ops.cast``, with its meaning.
CAST_POINTS: dict[str, str] = {
    "input": "the model's input batch",
    "weight": "a parameter's working copy, cast from its master before use",
    "master": "a parameter's master copy after an optimizer update",
    "param_grad": "a parameter's gradient as it is accumulated",
    "optimizer.momentum_buffer": "SGD momentum buffer after its update",
    "optimizer.exp_avg": "Adam/AdamW first moment after its update",
    "optimizer.exp_avg_sq": "Adam/AdamW second moment after its update",
    "relu.out": "ReLU output", "relu.grad": "ReLU input gradient",
    "gelu.out": "GELU output", "gelu.grad": "GELU input gradient",
    "layernorm.out": "LayerNorm output", "layernorm.grad": "LayerNorm input gradient",
    "softmax.out": "attention probabilities", "softmax.grad": "gradient of the attention scores",
    "attention.scores": "scaled attention scores before the softmax",
    "residual.out": "residual sum x + f(x)", "residual.grad": "gradient flowing into a residual block",
    "pool.out": "mean over the sequence", "pool.grad": "gradient of the pooled input",
    "loss.grad": "gradient of the loss w.r.t. the model output (times the loss scale)",
    "linear.bias_grad": "a Linear's bias gradient, the batch sum of its output gradient",
}


def check_role(role: Any) -> str:
    """``role`` must be one of :data:`ROLES`."""
    if role not in ROLES:
        raise ValueError(f"role={role!r} is not a matmul role; allowed: {', '.join(ROLES)}")
    return role


def check_cast_point(what: Any) -> str:
    """``what`` must be one of :data:`CAST_POINTS`."""
    if what not in CAST_POINTS:
        raise ValueError(f"what={what!r} is not a cast point; allowed: {', '.join(CAST_POINTS)}")
    return what


def check_matmul_shapes(a: np.ndarray, b: np.ndarray, site: str) -> None:
    """``(..., M, K) @ (..., K, N)`` with broadcastable batch dimensions."""
    if a.ndim < 2 or b.ndim < 2:
        raise ValueError(f"matmul at site={site!r}: operands need at least 2 dimensions; got {a.shape} and {b.shape}")
    if a.shape[-1] != b.shape[-2]:
        raise ValueError(f"matmul at site={site!r}: shapes {a.shape} @ {b.shape} do not match "
                         f"(K={a.shape[-1]} vs {b.shape[-2]})")
    try:
        np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    except ValueError:
        raise ValueError(f"matmul at site={site!r}: batch dimensions of {a.shape} and {b.shape} "
                         "do not broadcast") from None


class Ops(Protocol):
    """What a precision policy provides to the layers."""

    #: dtype of elementwise arithmetic (softmax, LayerNorm statistics, GELU, ...).
    compute_dtype: np.dtype
    #: dtype of master weights and optimizer arithmetic.
    master_dtype: np.dtype

    def matmul(self, a: np.ndarray, b: np.ndarray, role: str, site: str, *, c: np.ndarray | None = None) -> np.ndarray:
        ...

    def cast(self, x: np.ndarray, what: str, site: str) -> np.ndarray:
        ...


class Float64Ops:
    """Float64 everywhere: ``np.matmul`` in float64 and identity casts (no policy)."""

    compute_dtype = np.dtype(np.float64)
    master_dtype = np.dtype(np.float64)

    def matmul(self, a: np.ndarray, b: np.ndarray, role: str, site: str, *, c: np.ndarray | None = None) -> np.ndarray:
        check_role(role)
        dt = self.compute_dtype
        a_ = np.asarray(a, dtype=dt)
        b_ = np.asarray(b, dtype=dt)
        check_matmul_shapes(a_, b_, site)
        out = np.matmul(a_, b_)
        if c is not None:
            out = out + np.asarray(c, dtype=dt)
        return out

    def cast(self, x: np.ndarray, what: str, site: str) -> np.ndarray:
        check_cast_point(what)
        return np.asarray(x, dtype=self.compute_dtype)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Float32Ops(Float64Ops):
    """Plain float32 NumPy: BLAS ``np.matmul`` in float32 (whatever order the BLAS uses) and
    identity casts; the speed baseline of a low-precision policy, not an emulation."""

    compute_dtype = np.dtype(np.float32)
    master_dtype = np.dtype(np.float32)
