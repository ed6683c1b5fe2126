"""The MLP and the one-block transformer: whole-model gradients against central
differences, determinism, state exchange, training, errors."""

from __future__ import annotations

import numpy as np
import pytest
from gradcheck import TOLERANCE, numerical_gradient, relative_error
from precisionlab.reference import (
    MLP,
    SGD,
    Adam,
    Float64Ops,
    MSELoss,
    SoftmaxCrossEntropy,
    TransformerClassifier,
    gaussian_blobs,
    get_model,
    sequence_task,
)

OPS = Float64Ops()


def model_gradient_errors(model, x, target, loss, zero=()):
    model.zero_grad()
    loss.forward(model.forward(x, OPS), target, OPS)
    dx = model.backward(loss.backward(OPS), OPS)

    def objective():
        return loss.forward(model.forward(x, OPS), target, OPS)

    errors = {"x": relative_error(dx, numerical_gradient(objective, x))}
    for name, p in model.named_parameters().items():
        numeric = numerical_gradient(objective, p.master)
        if name in zero:  # gradient identically zero: relative error undefined
            assert np.abs(p.grad).max() < 1e-13 and np.abs(numeric).max() < 1e-8, name
            continue
        errors[name] = relative_error(p.grad, numeric)
    return errors


@pytest.mark.parametrize("activation", ["relu", "gelu", "gelu_tanh"])
def test_mlp_gradients(activation):
    rng = np.random.default_rng(0)
    model = MLP([5, 7, 6, 3], activation=activation, seed=1)
    x = rng.standard_normal((8, 5))
    errors = model_gradient_errors(model, x, rng.integers(0, 3, 8), SoftmaxCrossEntropy())
    assert set(errors) == {"x", "fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias", "fc3.weight", "fc3.bias"}
    assert max(errors.values()) < TOLERANCE, errors


def test_mlp_gradients_with_mse():
    rng = np.random.default_rng(1)
    model = MLP([4, 6, 2], activation="gelu", seed=2)
    errors = model_gradient_errors(model, rng.standard_normal((5, 4)), rng.standard_normal((5, 2)), MSELoss())
    assert max(errors.values()) < TOLERANCE, errors


@pytest.mark.parametrize("causal", [False, True])
def test_transformer_gradients(causal):
    rng = np.random.default_rng(3)
    model = TransformerClassifier(3, 4, 3, d_ff=8, causal=causal, seed=4)
    for p in model.parameters():  # move LayerNorm off its identity initialization
        if p.name.startswith(("block.ln", "ln_f")):
            p.master = p.master + 0.3 * rng.standard_normal(p.master.shape)
    x = rng.standard_normal((2, 3, 3))
    errors = model_gradient_errors(model, x, np.array([0, 2]), SoftmaxCrossEntropy(), zero=("block.attn.k.bias",))
    assert len(errors) == len(model.parameters())  # x plus all parameters but the key bias
    assert max(errors.values()) < TOLERANCE, errors


def test_models_are_deterministic_and_exchange_state():
    a, b = MLP([4, 8, 3], seed=7), MLP([4, 8, 3], seed=7)
    assert all(np.array_equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())
    c = MLP([4, 8, 3], seed=8)
    assert not np.array_equal(a.state_dict()["fc1.weight"], c.state_dict()["fc1.weight"])
    c.load_state_dict(a.state_dict())
    x = np.random.default_rng(0).standard_normal((3, 4))
    assert np.array_equal(a.forward(x, OPS), c.forward(x, OPS))
    t = TransformerClassifier(3, 4, 2, seed=1)
    assert "block.attn.q.weight" in t.state_dict() and t.state_dict()["embed.weight"].shape == (4, 3)


def test_training_fits_the_synthetic_tasks():
    data = gaussian_blobs(256, 8, 4, seed=0)
    model, loss = MLP([8, 16, 4], seed=0), SoftmaxCrossEntropy()
    opt = SGD(model.parameters(), lr=0.2, momentum=0.9)
    first = None
    for _ in range(40):
        model.zero_grad()
        value = loss.forward(model.forward(data.x_train, OPS), data.y_train, OPS)
        first = value if first is None else first
        model.backward(loss.backward(OPS), OPS)
        opt.step(OPS)
    assert value < 0.1 * first
    assert (model.forward(data.x_test, OPS).argmax(1) == data.y_test).mean() > 0.9
    seq = sequence_task(128, 6, 4, 3, seed=0)
    tr = TransformerClassifier(4, 8, 3, seed=0)
    opt = Adam(tr.parameters(), lr=1e-2)
    for _ in range(60):
        tr.zero_grad()
        value = loss.forward(tr.forward(seq.x_train, OPS), seq.y_train, OPS)
        tr.backward(loss.backward(OPS), OPS)
        opt.step(OPS)
    assert (tr.forward(seq.x_train, OPS).argmax(1) == seq.y_train).mean() > 0.9


@pytest.mark.parametrize("call, exc, words", [
    (lambda: get_model("resnet"), ValueError, "model='resnet'"),
    (lambda: MLP([4]), ValueError, "sizes=[4]"),
    (lambda: MLP([4, 3], activation="tanh"), ValueError, "activation='tanh'"),
    (lambda: MLP([4, 3]).forward(np.ones((2, 5)), OPS), ValueError, "in_features=4"),
    (lambda: MLP([4, 3]).forward(np.ones((2, 4), dtype=int), OPS), TypeError, "int"),
    (lambda: MLP([4, 3]).load_state_dict({"fc1.weight": np.ones((3, 4))}), ValueError, "fc1.bias"),
    (lambda: MLP([4, 3]).load_state_dict({"fc1.weight": np.ones((4, 3)), "fc1.bias": np.ones(3)}), ValueError,
     "'fc1.weight' has shape (4, 3)"),
    (lambda: TransformerClassifier(3, 4, 2).forward(np.ones((2, 3)), OPS), ValueError, "(batch, seq, d_in=3)"),
])
def test_bad_input_is_named(call, exc, words):
    with pytest.raises(exc) as info:
        call()
    assert words in str(info.value)


def test_get_model_builds_both():
    assert get_model("mlp", sizes=[2, 3]).sizes == [2, 3]
    assert get_model("transformer", d_in=2, d_model=4, n_classes=2).d_ff == 16
