"""The two reference models: an MLP and a one-block transformer classifier.

Both are :class:`~.layers.Sequential` stacks with deterministic initialization from a
seed, parameter names in PyTorch's style (``fc1.weight``) and
``state_dict()``/``load_state_dict()`` so weights can be exchanged with a torch model.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .layers import GELU, Layer, LayerNorm, Linear, MeanPool, Parameter, ReLU, Residual, SelfAttention, Sequential
from .ops import Ops

__all__ = ["Model", "MLP", "TransformerClassifier", "MODELS", "get_model", "ACTIVATIONS"]

ACTIVATIONS = ("relu", "gelu", "gelu_tanh")


def _activation(kind: str, name: str) -> Layer:
    if kind == "relu":
        return ReLU(name=name)
    if kind == "gelu":
        return GELU("none", name=name)
    if kind == "gelu_tanh":
        return GELU("tanh", name=name)
    raise ValueError(f"activation={kind!r} not allowed; choose one of {', '.join(ACTIVATIONS)}")


class Model(Sequential):
    """A Sequential with named parameters, state exchange and the input cast."""

    def named_parameters(self) -> dict[str, Parameter]:
        return {p.name: p for p in self.parameters()}

    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of the master weights by name."""
        return {p.name: p.master.copy() for p in self.parameters()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Replace every master weight (names and shapes must match exactly)."""
        params = self.named_parameters()
        missing, unknown = sorted(set(params) - set(state)), sorted(set(state) - set(params))
        if missing or unknown:
            raise ValueError(f"load_state_dict: missing parameters {missing}, unknown parameters {unknown}")
        for name, p in params.items():
            value = np.asarray(state[name])
            if value.shape != p.master.shape:
                raise ValueError(f"load_state_dict: {name!r} has shape {value.shape}; expected {p.master.shape}")
            p.master = value.astype(p.master.dtype)

    def zero_grad(self) -> None:
        for p in self.parameters():
            p.grad = None

    def backward(self, dy: np.ndarray, ops: Ops, *, input_grad: bool = True) -> np.ndarray | None:
        """Backward through every layer; ``input_grad=False`` skips the gradient w.r.t. the model's
        input when the first layer is a Linear (its dgrad GEMM is not run, as in torch) and returns None."""
        first = self.layers[0]
        if input_grad or not isinstance(first, Linear):
            return super().backward(dy, ops)
        for layer in reversed(self.layers[1:]):
            dy = layer.backward(dy, ops)
        return first.backward(dy, ops, input_grad=False)

    def forward(self, x: np.ndarray, ops: Ops) -> np.ndarray:
        x = np.asarray(x)
        if x.dtype.kind != "f":
            raise TypeError(f"{type(self).__name__}: x has dtype {x.dtype}; a float array is needed")
        return super().forward(ops.cast(x.astype(ops.compute_dtype), "input", self.name), ops)


class MLP(Model):
    """``Linear -> activation -> ... -> Linear`` for ``sizes = [in, hidden..., out]``;
    layers are named ``fc1, act1, fc2, ...``."""

    def __init__(self, sizes: Sequence[int], *, activation: str = "relu", seed: int = 0,
                 dtype: Any = np.float64, name: str = "mlp") -> None:
        sizes = list(sizes)
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation={activation!r} not allowed; choose one of {', '.join(ACTIVATIONS)}")
        if len(sizes) < 2:
            raise ValueError(f"sizes={sizes!r} needs at least an input and an output size")
        rng = np.random.default_rng(seed)
        layers: list[Layer] = []
        for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True), start=1):
            layers.append(Linear(fan_in, fan_out, name=f"fc{i}", rng=rng, dtype=dtype))
            if i < len(sizes) - 1:
                layers.append(_activation(activation, f"act{i}"))
        super().__init__(layers, name=name)
        self.sizes = sizes


class TransformerClassifier(Model):
    """A one-block pre-LayerNorm transformer over ``(batch, seq, d_in)`` inputs:

    ``embed`` (Linear d_in -> d_model), ``x + attn(ln1(x))``, ``x + fc2(gelu(fc1(ln2(x))))``,
    ``ln_f``, mean over the sequence, ``head`` (Linear d_model -> n_classes).
    Block layers are named ``block.ln1``, ``block.attn`` (with ``.q .k .v .out``),
    ``block.ln2``, ``block.fc1``, ``block.gelu``, ``block.fc2``.
    """

    def __init__(self, d_in: int, d_model: int, n_classes: int, *, d_ff: int | None = None, causal: bool = False,
                 gelu: str = "none", seed: int = 0, dtype: Any = np.float64, name: str = "transformer") -> None:
        rng = np.random.default_rng(seed)
        d_ff = 4 * d_model if d_ff is None else d_ff
        attn_block = Sequential([LayerNorm(d_model, name="block.ln1", dtype=dtype),
                                 SelfAttention(d_model, causal=causal, name="block.attn", rng=rng, dtype=dtype)],
                                name="block.attn_branch")
        mlp_block = Sequential([LayerNorm(d_model, name="block.ln2", dtype=dtype),
                                Linear(d_model, d_ff, name="block.fc1", rng=rng, dtype=dtype),
                                GELU(gelu, name="block.gelu"),
                                Linear(d_ff, d_model, name="block.fc2", rng=rng, dtype=dtype)],
                               name="block.mlp_branch")
        layers: list[Layer] = [
            Linear(d_in, d_model, name="embed", rng=rng, dtype=dtype),
            Residual(attn_block, name="block.res1"),
            Residual(mlp_block, name="block.res2"),
            LayerNorm(d_model, name="ln_f", dtype=dtype),
            MeanPool(name="pool"),
            Linear(d_model, n_classes, name="head", rng=rng, dtype=dtype),
        ]
        super().__init__(layers, name=name)
        self.d_in, self.d_model, self.n_classes, self.d_ff = d_in, d_model, n_classes, d_ff

    def forward(self, x: np.ndarray, ops: Ops) -> np.ndarray:
        shape = np.shape(x)
        if len(shape) != 3 or shape[-1] != self.d_in:
            raise ValueError(f"TransformerClassifier: x has shape {shape}; expected (batch, seq, d_in={self.d_in})")
        return super().forward(x, ops)


#: Model name -> class.
MODELS = {"mlp": MLP, "transformer": TransformerClassifier}


def get_model(name: str, **kwargs: Any) -> Model:
    """Build a model by name (``"mlp"`` or ``"transformer"``) with its keyword arguments."""
    if name not in MODELS:
        raise ValueError(f"model={name!r} is not a model; allowed: {', '.join(MODELS)}")
    return MODELS[name](**kwargs)
