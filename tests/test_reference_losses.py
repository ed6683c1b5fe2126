"""Losses: values from their definitions, gradients against central differences, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
from gradcheck import TOLERANCE, numerical_gradient, relative_error
from precisionlab.reference import Float64Ops, MSELoss, SoftmaxCrossEntropy, get_loss

OPS = Float64Ops()


def test_cross_entropy_value_and_gradient():
    rng = np.random.default_rng(0)
    logits = 3 * rng.standard_normal((5, 4))
    labels = np.array([0, 3, 1, 1, 2])
    ce = SoftmaxCrossEntropy()
    loss = ce.forward(logits, labels, OPS)
    want = np.mean([math.log(sum(math.exp(v) for v in row)) - row[y] for row, y in zip(logits, labels, strict=True)])
    assert loss == pytest.approx(want, rel=1e-14)
    g = ce.backward(OPS)
    num = numerical_gradient(lambda: SoftmaxCrossEntropy().forward(logits, labels, OPS), logits)
    assert relative_error(g, num) < TOLERANCE


def test_cross_entropy_is_stable_and_uniform_is_log_c():
    ce = SoftmaxCrossEntropy()
    assert ce.forward(np.zeros((3, 7)), np.array([0, 1, 6]), OPS) == pytest.approx(math.log(7), rel=1e-15)
    assert ce.forward(np.array([[1000.0, 0.0]]), np.array([0]), OPS) == 0.0
    assert math.isfinite(ce.forward(np.array([[1000.0, -1000.0]]), np.array([1]), OPS))


def test_loss_gradient_scales_exactly_with_the_loss_scale():
    rng = np.random.default_rng(1)
    for loss, target in ((SoftmaxCrossEntropy(), np.array([1, 0, 2])), (MSELoss(), rng.standard_normal((3, 3)))):
        out = rng.standard_normal((3, 3))
        loss.forward(out, target, OPS)
        assert np.array_equal(loss.backward(OPS, grad=1024.0), 1024.0 * loss.backward(OPS))


def test_mse_value_and_gradient():
    rng = np.random.default_rng(2)
    out, target = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    mse = MSELoss()
    assert mse.forward(out, target, OPS) == pytest.approx(np.mean((out - target) ** 2), rel=1e-15)
    num = numerical_gradient(lambda: MSELoss().forward(out, target, OPS), out)
    assert relative_error(mse.backward(OPS), num) < TOLERANCE


@pytest.mark.parametrize("call, exc, words", [
    (lambda: SoftmaxCrossEntropy().forward(np.ones(3), np.zeros(3, int), OPS), ValueError, "(batch, classes)"),
    (lambda: SoftmaxCrossEntropy().forward(np.ones((2, 3)), np.zeros(3, int), OPS), ValueError, "expected (2,)"),
    (lambda: SoftmaxCrossEntropy().forward(np.ones((2, 3)), np.array([0, 3]), OPS), ValueError, "label 3"),
    (lambda: SoftmaxCrossEntropy().forward(np.ones((2, 3)), np.array([0.0, 1.0]), OPS), TypeError, "float64"),
    (lambda: MSELoss().forward(np.ones((2, 3)), np.ones((3, 2)), OPS), ValueError, "(2, 3)"),
    (lambda: SoftmaxCrossEntropy().backward(OPS), RuntimeError, "before forward"),
    (lambda: get_loss("hinge"), ValueError, "loss='hinge'"),
])
def test_bad_input_is_named(call, exc, words):
    with pytest.raises(exc) as info:
        call()
    assert words in str(info.value)


def test_non_finite_loss_scale_is_rejected():
    ce = SoftmaxCrossEntropy()
    ce.forward(np.ones((1, 2)), np.array([0]), OPS)
    with pytest.raises(ValueError, match="grad=inf"):
        ce.backward(OPS, grad=math.inf)


def test_float32_exp_and_log_are_rounded_once_from_float64():
    """The loss's exp/log do not depend on NumPy's SIMD float32 kernels: each is the float64
    result rounded once to float32, which is the correctly rounded value for these inputs
    (checked against a 50-digit evaluation)."""
    from decimal import Decimal, getcontext

    from precisionlab.reference.losses import exp, log

    getcontext().prec = 50

    def nearest(value: float, exact: Decimal) -> bool:
        v = np.float32(value)
        lo, hi = np.nextafter(v, np.float32(-np.inf)), np.nextafter(v, np.float32(np.inf))
        err = abs(Decimal(float(v)) - exact)
        return err <= abs(Decimal(float(lo)) - exact) and err <= abs(Decimal(float(hi)) - exact)

    x = np.random.default_rng(9).uniform(-20, 20, 300).astype(np.float32)
    got = exp(x)
    assert got.dtype == np.float32
    assert all(nearest(g, Decimal(xi).exp()) for xi, g in zip(x.tolist(), got.tolist(), strict=True))
    y = np.abs(x) + np.float32(0.5)
    assert all(nearest(g, Decimal(yi).ln()) for yi, g in zip(y.tolist(), log(y).tolist(), strict=True))
    assert exp(np.array([1.0])).dtype == np.float64
