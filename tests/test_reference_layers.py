"""Reference layers: gradients against float64 central finite differences, the ops seam, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
from gradcheck import TOLERANCE, numerical_gradient, relative_error
from precisionlab.reference import (
    CAST_POINTS,
    GELU,
    OPERANDS,
    Float64Ops,
    LayerNorm,
    Linear,
    MeanPool,
    Parameter,
    ReLU,
    Residual,
    SelfAttention,
    Sequential,
)

import precisionlab as pl

OPS = Float64Ops()


def check_gradients(layer, x, seed=0, zero=()):
    """Analytic input and parameter gradients of sum(layer(x) * R) vs central differences.

    Parameters named in ``zero`` have an identically zero gradient (the relative error is
    then undefined): both gradients must be zero up to rounding noise instead."""
    rng = np.random.default_rng(seed)
    y = layer.forward(x, OPS)
    r = rng.standard_normal(y.shape)
    for p in layer.parameters():
        p.grad = None
    dx = layer.backward(r, OPS)

    def objective():
        return float(np.sum(layer.forward(x, OPS) * r))

    errors = {"x": relative_error(dx, numerical_gradient(objective, x))}
    for p in layer.parameters():
        numeric = numerical_gradient(objective, p.master)
        if p.name in zero:
            assert np.abs(p.grad).max() < 1e-13 and np.abs(numeric).max() < 1e-8, (p.name, p.grad, numeric)
            continue
        errors[p.name] = relative_error(p.grad, numeric)
    assert max(errors.values()) < TOLERANCE, errors
    return errors


def randomize(layer, seed=1):
    rng = np.random.default_rng(seed)
    for p in layer.parameters():
        p.master = rng.standard_normal(p.master.shape)


def test_linear_gradients():
    rng = np.random.default_rng(2)
    errors = check_gradients(Linear(5, 3, name="fc"), rng.standard_normal((4, 5)))
    assert set(errors) == {"x", "fc.weight", "fc.bias"}
    check_gradients(Linear(5, 3, bias=False), rng.standard_normal((4, 5)))
    check_gradients(Linear(5, 2), rng.standard_normal((2, 3, 5)))  # leading dimensions are flattened


def test_linear_matches_torch_layout_and_init():
    lin = Linear(4, 3, rng=np.random.default_rng(0))
    assert lin.weight.master.shape == (3, 4) and lin.bias.master.shape == (3,)
    assert np.all(np.abs(lin.weight.master) <= 0.5) and np.all(np.abs(lin.bias.master) <= 0.5)
    x = np.arange(8.0).reshape(2, 4)
    assert np.array_equal(lin.forward(x, OPS), x @ lin.weight.master.T + lin.bias.master)


def test_relu_gradients_and_zero():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 6))
    x = np.where(np.abs(x) < 0.05, 0.5, x)  # keep finite differences away from the kink
    check_gradients(ReLU(), x)
    relu = ReLU()
    relu.forward(np.array([-1.0, 0.0, 2.0]), OPS)
    assert relu.backward(np.ones(3), OPS).tolist() == [0.0, 0.0, 1.0]  # d/dx at 0 is 0, as torch


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_gradients(approximate):
    check_gradients(GELU(approximate), 2 * np.random.default_rng(4).standard_normal((3, 7)))


def test_gelu_values_follow_their_definitions():
    x = np.array([-3.0, -1.0, 0.0, 0.5, 1.0, 4.0])
    exact = [v * 0.5 * (1 + math.erf(v / math.sqrt(2))) for v in x]
    tanh = [0.5 * v * (1 + math.tanh(math.sqrt(2 / math.pi) * (v + 0.044715 * v**3))) for v in x]
    assert GELU().forward(x, OPS).tolist() == pytest.approx(exact, rel=1e-15, abs=1e-300)
    assert GELU("tanh").forward(x, OPS).tolist() == pytest.approx(tanh, rel=1e-15, abs=1e-300)
    assert GELU().forward(np.array([1.0]), OPS)[0] == pytest.approx(0.8413447460685429, rel=1e-15)


def test_layernorm_gradients():
    rng = np.random.default_rng(5)
    ln = LayerNorm(6, name="ln")
    randomize(ln)
    errors = check_gradients(ln, rng.standard_normal((3, 6)))
    assert set(errors) == {"x", "ln.weight", "ln.bias"}
    check_gradients(ln, 3 + rng.standard_normal((2, 3, 6)))


def test_layernorm_normalizes():
    y = LayerNorm(5).forward(np.array([[1.0, 2.0, 3.0, 4.0, 10.0]]), OPS)
    assert abs(y.mean()) < 1e-15 and y.var() == pytest.approx(1 / (1 + 1e-5 / 10.0), rel=1e-12)


@pytest.mark.parametrize("causal", [False, True])
def test_self_attention_gradients(causal):
    attn = SelfAttention(4, causal=causal, name="attn", rng=np.random.default_rng(6))
    # the key bias shifts every score of a row by the same q.b_k, which softmax ignores
    errors = check_gradients(attn, np.random.default_rng(7).standard_normal((2, 3, 4)), zero=("attn.k.bias",))
    assert {"attn.q.weight", "attn.q.bias", "attn.k.weight", "attn.v.weight", "attn.out.bias"} <= set(errors)


def test_self_attention_is_softmax_qk_v():
    attn = SelfAttention(3, rng=np.random.default_rng(8))
    x = np.random.default_rng(9).standard_normal((1, 4, 3))

    def lin(layer, z):
        return z @ layer.weight.master.T + layer.bias.master

    q, k, v = lin(attn.q, x[0]), lin(attn.k, x[0]), lin(attn.v, x[0])
    s = q @ k.T / math.sqrt(3)
    p = np.exp(s - s.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    want = lin(attn.out, p @ v)
    np.testing.assert_allclose(attn.forward(x, OPS)[0], want, rtol=1e-13, atol=1e-15)
    causal = SelfAttention(3, causal=True, rng=np.random.default_rng(8))
    y = causal.forward(x, OPS)
    y_first = causal.forward(x[:, :1], OPS)  # position 0 sees only itself
    np.testing.assert_allclose(y[:, 0], y_first[:, 0], rtol=1e-13)


def test_residual_meanpool_sequential_gradients():
    rng = np.random.default_rng(10)
    block = Residual(Sequential([LayerNorm(4, name="ln"), Linear(4, 4, name="fc")], name="inner"), name="res")
    randomize(block)
    check_gradients(block, rng.standard_normal((2, 3, 4)))
    check_gradients(MeanPool(), rng.standard_normal((2, 3, 4)))
    check_gradients(Sequential([Linear(3, 5, name="a"), GELU(name="g"), Linear(5, 2, name="b")]),
                    rng.standard_normal((4, 3)))


# ---- the ops seam --------------------------------------------------------------------------

class RecordingOps(Float64Ops):
    """Float64 arithmetic that logs every matmul and cast."""

    def __init__(self):
        self.matmuls, self.casts, self.operands = [], [], []

    def matmul(self, a, b, role, site, *, c=None):
        self.matmuls.append((role, site, np.shape(a), np.shape(b), c is not None))
        self.operands.append((np.array(a), np.array(b)))
        return super().matmul(a, b, role, site, c=c)

    def cast(self, x, what, site):
        self.casts.append((what, site))
        return super().cast(x, what, site)


def test_linear_uses_the_three_roles():
    ops = RecordingOps()
    lin = Linear(5, 3, name="fc1")
    x = np.random.default_rng(11).standard_normal((4, 5))
    lin.forward(x, ops)
    lin.backward(np.ones((4, 3)), ops)
    assert ops.matmuls == [("forward", "fc1", (4, 5), (5, 3), True),   # x @ W.T + b
                           ("dgrad", "fc1", (4, 3), (3, 5), False),    # dY @ W
                           ("wgrad", "fc1", (3, 4), (4, 5), False)]    # dY.T @ x
    assert ("weight", "fc1.weight") in ops.casts and ("param_grad", "fc1.bias") in ops.casts
    # the operands are the tensors OPERANDS names: input x, weight W, grad_output dY
    tensors = {"input": x, "weight": lin.weight.master, "grad_output": np.ones((4, 3))}
    for (role, *_), (a, b) in zip(ops.matmuls, ops.operands, strict=True):
        left, right = OPERANDS[role]
        assert np.array_equal(a, tensors[left] if role != "wgrad" else tensors[left].T)
        assert np.array_equal(b, tensors[right] if role != "forward" else tensors[right].T)


def test_attention_products_have_their_own_sites():
    ops = RecordingOps()
    attn = SelfAttention(4, name="attn")
    attn.forward(np.ones((2, 3, 4)), ops)
    attn.backward(np.ones((2, 3, 4)), ops)
    inner = [(r, s) for r, s, *_ in ops.matmuls if s.startswith("attn.") and s.split(".")[1] in ("scores", "context")]
    assert inner == [("forward", "attn.scores"), ("forward", "attn.context"),
                     ("dgrad", "attn.context"), ("wgrad", "attn.context"),
                     ("dgrad", "attn.scores"), ("wgrad", "attn.scores")]
    assert all(what in CAST_POINTS for what, _ in ops.casts)


def test_every_site_passes_its_operands_in_operands_order():
    """For each site, OPERANDS names the same tensors in every role: wgrad's B is forward's A (the
    input), dgrad's B is forward's B transposed (the weight), wgrad's A is dgrad's A transposed (the
    output gradient) -- so an FP8 policy can give each tensor its own scale and format."""
    ops = RecordingOps()
    attn = SelfAttention(4, name="attn")
    attn.forward(np.random.default_rng(13).standard_normal((2, 3, 4)), ops)
    attn.backward(np.random.default_rng(14).standard_normal((2, 3, 4)), ops)
    calls: dict[str, dict[str, tuple]] = {}
    for (role, site, *_), operands in zip(ops.matmuls, ops.operands, strict=True):
        calls.setdefault(site, {})[role] = operands
    assert set(calls) == {"attn.q", "attn.k", "attn.v", "attn.out", "attn.scores", "attn.context"}
    for site, roles in calls.items():
        (fa, fb), (da, db), (wa, wb) = roles["forward"], roles["dgrad"], roles["wgrad"]
        assert np.array_equal(wb, fa), site
        assert np.array_equal(db, np.swapaxes(fb, -1, -2)), site
        assert np.array_equal(wa, np.swapaxes(da, -1, -2)), site


def test_linear_can_skip_its_input_gradient():
    ops = RecordingOps()
    lin = Linear(3, 2, name="fc1")
    lin.forward(np.ones((4, 3)), ops)
    assert lin.backward(np.ones((4, 2)), ops, input_grad=False) is None
    assert [r for r, *_ in ops.matmuls] == ["forward", "wgrad"]
    assert lin.weight.grad.shape == (2, 3) and ("linear.bias_grad", "fc1") in ops.casts


class BF16Ops(Float64Ops):
    """A toy policy: every GEMM output and every cast rounded to bf16 with pl.round."""

    compute_dtype = np.dtype(np.float32)
    master_dtype = np.dtype(np.float32)

    def matmul(self, a, b, role, site, *, c=None):
        return pl.round(super().matmul(a, b, role, site, c=c).astype(np.float32), "bf16")

    def cast(self, x, what, site):
        super().cast(x, what, site)
        return pl.round(np.asarray(x, dtype=np.float32), "bf16")


def test_a_policy_plugs_in_without_changing_the_layers():
    ops = BF16Ops()
    model = Sequential([Linear(6, 8, name="fc1", dtype=np.float32), GELU(name="g"),
                        LayerNorm(8, name="ln", dtype=np.float32), Linear(8, 3, name="fc2", dtype=np.float32)])
    x = np.random.default_rng(12).standard_normal((5, 6)).astype(np.float32)
    y = model.forward(x, ops)
    dx = model.backward(np.ones_like(y), ops)
    for arr in [y, dx] + [p.grad for p in model.parameters()]:
        assert arr.dtype == np.float32 and np.array_equal(pl.round(arr, "bf16"), arr)
    y64 = model.forward(x.astype(np.float64), OPS)
    assert not np.array_equal(y64, y) and np.allclose(y64, y, rtol=0.05, atol=0.05)


# ---- errors --------------------------------------------------------------------------------

@pytest.mark.parametrize("call, exc, words", [
    (lambda: Linear(5, 3).forward(np.ones((2, 4)), OPS), ValueError, "in_features=5"),
    (lambda: Linear(0, 3), ValueError, "in_features=0"),
    (lambda: Linear(2.5, 3), TypeError, "in_features=2.5"),
    (lambda: Linear(2, 2).forward(np.ones((2, 2), dtype=np.int64), OPS), TypeError, "int64"),
    (lambda: Linear(2, 2).backward(np.ones((2, 2)), OPS), RuntimeError, "before forward"),
    (lambda: LayerNorm(4).forward(np.ones((2, 5)), OPS), ValueError, "features=4"),
    (lambda: LayerNorm(4, eps=0.0), ValueError, "eps=0.0"),
    (lambda: SelfAttention(4).forward(np.ones((3, 4)), OPS), ValueError, "(batch, seq, d_model=4)"),
    (lambda: GELU("fast"), ValueError, "approximate='fast'"),
    (lambda: MeanPool().forward(np.ones((2, 3)), OPS), ValueError, "(batch, seq, features)"),
    (lambda: Sequential([Linear(2, 2, name="a"), Linear(2, 2, name="a")]), ValueError, "'a.weight'"),
    (lambda: Sequential([]), TypeError, "non-empty"),
    (lambda: Residual(Linear(2, 3)).forward(np.ones((1, 2)), OPS), ValueError, "(1, 2) to (1, 3)"),
    (lambda: Parameter("w", np.zeros(3)).accumulate(np.zeros(4), OPS), ValueError, "'w'"),
    (lambda: Linear(2, 2, name=""), TypeError, "name=''"),
])
def test_bad_input_is_named(call, exc, words):
    with pytest.raises(exc) as info:
        call()
    assert words in str(info.value)


def test_backward_checks_the_gradient_shape():
    lin = Linear(3, 2, name="fc")
    lin.forward(np.ones((4, 3)), OPS)
    with pytest.raises(ValueError, match=r"'fc': dy has shape \(4, 3\); the forward output had shape \(4, 2\)"):
        lin.backward(np.ones((4, 3)), OPS)
