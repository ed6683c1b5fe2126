"""Optimizers: the published algorithms (float64), PyTorch's operation order (float32,
bit for bit, against a per-element transcription of torch's single-tensor code),
master/state casts, and hyperparameter errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
from precisionlab.reference import SGD, Adam, AdamW, Float64Ops, Parameter, get_optimizer

import precisionlab as pl

OPS = Float64Ops()


class Float32Ops(Float64Ops):
    compute_dtype = np.dtype(np.float32)
    master_dtype = np.dtype(np.float32)

    def cast(self, x, what, site):
        super().cast(x, what, site)
        return np.asarray(x, dtype=np.float32)


def run(opt_cls, kwargs, w0, grads, ops=OPS):
    p = Parameter("w", w0.copy())
    opt = opt_cls([p], **kwargs)
    for g in grads:
        p.grad = g.copy()
        opt.step(ops)
    return p.master, opt


def trajectory(seed=0, n=4, steps=5, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return rng.standard_normal(n).astype(dtype), [rng.standard_normal(n).astype(dtype) for _ in range(steps)]


# ---- float64: the published algorithms ------------------------------------------------------

def sgd_reference(w, grads, lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False):
    """torch.optim.SGD's documented algorithm."""
    w, buf = w.copy(), None
    for g in grads:
        g = g + weight_decay * w
        if momentum:
            buf = g.copy() if buf is None else momentum * buf + (1 - dampening) * g
            g = g + momentum * buf if nesterov else buf
        w = w - lr * g
    return w


def adam_reference(w, grads, lr, b1, b2, eps, weight_decay=0.0, decoupled=False):
    """The Adam / AdamW papers' algorithm with bias correction (as torch documents it)."""
    w, m, v = w.copy(), np.zeros_like(w), np.zeros_like(w)
    for t, g in enumerate(grads, start=1):
        if decoupled:
            w = w - lr * weight_decay * w
        else:
            g = g + weight_decay * w
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        mhat, vhat = m / (1 - b1**t), v / (1 - b2**t)
        w = w - lr * mhat / (np.sqrt(vhat) + eps)
    return w


@pytest.mark.parametrize("kwargs", [dict(lr=0.1), dict(lr=0.05, momentum=0.9),
                                    dict(lr=0.05, momentum=0.9, dampening=0.3),
                                    dict(lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.01)])
def test_sgd_follows_the_algorithm(kwargs):
    w0, grads = trajectory(1)
    got, _ = run(SGD, kwargs, w0, grads)
    np.testing.assert_allclose(got, sgd_reference(w0, grads, **kwargs), rtol=1e-14, atol=1e-15)


@pytest.mark.parametrize("cls, kwargs, decoupled", [
    (Adam, dict(lr=1e-2), False), (Adam, dict(lr=1e-2, weight_decay=0.1, betas=(0.8, 0.99)), False),
    (Adam, dict(lr=1e-2, betas=(0.3, 0.9)), False),  # beta1 < 0.5: torch's other lerp formula
    (AdamW, dict(lr=1e-2), True), (AdamW, dict(lr=1e-2, weight_decay=0.5, eps=1e-3), True)])
def test_adam_follows_the_algorithm(cls, kwargs, decoupled):
    w0, grads = trajectory(2, steps=7)
    got, opt = run(cls, kwargs, w0, grads)
    want = adam_reference(w0, grads, kwargs["lr"], *opt.betas, opt.eps, opt.weight_decay, decoupled)
    np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-15)
    assert opt.state["w"]["step"] == 7


# ---- float32: torch's operation order, bit for bit ------------------------------------------

f32 = np.float32


def torch_sgd_f32(w, grads, lr, momentum, weight_decay):
    """Per element, torch's _single_tensor_sgd in float32: d_p = g.add(p, alpha=wd);
    buf = clone(d_p) then buf.mul_(m).add_(d_p, alpha=1-dampening); p.add_(d_p, alpha=-lr)."""
    out = []
    for i in range(w.size):
        p, buf = f32(w[i]), None
        for g in grads:
            d = f32(g[i]) + f32(weight_decay) * p
            if momentum:
                buf = d if buf is None else buf * f32(momentum) + f32(1.0) * d
                d = buf
            p = p + f32(-lr) * d
        out.append(p)
    return np.array(out, dtype=f32)


def torch_adam_f32(w, grads, lr, b1, b2, eps, weight_decay, decoupled):
    """Per element, torch's _single_tensor_adam/adamw in float32."""
    out = []
    for i in range(w.size):
        p, m, v = f32(w[i]), f32(0), f32(0)
        for t, gg in enumerate(grads, start=1):
            g = f32(gg[i])
            if decoupled:
                p = p * f32(1 - lr * weight_decay)          # param.mul_(1 - lr * wd)
            elif weight_decay:
                g = g + f32(weight_decay) * p                # grad.add(param, alpha=wd)
            m = m + f32(1 - b1) * (g - m)                     # exp_avg.lerp_(grad, 1 - b1)
            v = v * f32(b2) + f32(1 - b2) * g * g             # mul_(b2).addcmul_(g, g, value=1-b2)
            step_size = lr / (1 - b1**t)
            denom = np.sqrt(v) / f32(math.sqrt(1 - b2**t)) + f32(eps)
            p = p + f32(-step_size) * m / denom               # addcdiv_(m, denom, value=-step_size)
        out.append(p)
    return np.array(out, dtype=f32)


def test_float32_updates_follow_torchs_operation_order():
    w0, grads = trajectory(3, n=16, steps=6, dtype=np.float32)
    ops = Float32Ops()
    got, _ = run(SGD, dict(lr=0.1, momentum=0.9, weight_decay=0.01), w0, grads, ops)
    assert got.dtype == np.float32
    assert np.array_equal(got, torch_sgd_f32(w0, grads, 0.1, 0.9, 0.01))
    for cls, decoupled, wd in ((Adam, False, 0.01), (AdamW, True, 0.1)):
        got, _ = run(cls, dict(lr=1e-2, weight_decay=wd), w0, grads, ops)
        assert np.array_equal(got, torch_adam_f32(w0, grads, 1e-2, 0.9, 0.999, 1e-8, wd, decoupled)), cls


# ---- master and state formats ----------------------------------------------------------------

class HalfMasterOps(Float32Ops):
    """No master weights (fp16 'master'), bf16 Adam moments."""

    def cast(self, x, what, site):
        x = super().cast(x, what, site)
        if what == "master":
            return pl.round(x, "fp16")
        if what.startswith("optimizer."):
            return pl.round(x, "bf16")
        return x


def test_master_and_state_casts_apply():
    w0, grads = trajectory(4, n=32, steps=3, dtype=np.float32)
    got, opt = run(Adam, dict(lr=1e-3), w0, grads, HalfMasterOps())
    assert np.array_equal(pl.round(got, "fp16"), got)
    for key in ("exp_avg", "exp_avg_sq"):
        s = opt.state["w"][key]
        assert s.dtype == np.float32 and np.array_equal(pl.round(s, "bf16"), s)
    exact, _ = run(Adam, dict(lr=1e-3), w0, grads, Float32Ops())
    assert not np.array_equal(got, exact)


def test_small_updates_vanish_without_fp32_master_weights():
    """The reason for master weights: an fp16 weight of 1 cannot take a step of 1e-4."""
    w0 = np.ones(4, dtype=np.float32)
    grads = [np.full(4, 1e-3, dtype=np.float32)] * 10
    half, _ = run(SGD, dict(lr=0.1), w0, grads, HalfMasterOps())
    master, _ = run(SGD, dict(lr=0.1), w0, grads, Float32Ops())
    assert np.array_equal(half, w0) and np.all(master < 1)


def test_parameters_without_gradients_are_left_alone():
    a, b = Parameter("a", np.ones(2)), Parameter("b", np.ones(2))
    opt = SGD([a, b], lr=1.0)
    a.grad = np.ones(2)
    opt.step(OPS)
    assert a.master.tolist() == [0.0, 0.0] and b.master.tolist() == [1.0, 1.0]
    opt.zero_grad()
    assert a.grad is None


# ---- errors ------------------------------------------------------------------------------------

P = [Parameter("w", np.zeros(2))]


@pytest.mark.parametrize("lr", [math.nan, math.inf, -math.inf])
def test_non_finite_learning_rate_is_rejected(lr):
    for cls in (SGD, Adam, AdamW):
        with pytest.raises(ValueError, match="lr=.*must be finite"):
            cls(P, lr=lr)
    opt = SGD(P, lr=0.1)
    with pytest.raises(ValueError, match="lr="):
        opt.lr = lr
    assert opt.lr == 0.1


@pytest.mark.parametrize("call, exc, words", [
    (lambda: SGD(P, lr=-0.1), ValueError, "lr=-0.1"),
    (lambda: SGD(P, lr="0.1"), TypeError, "lr='0.1'"),
    (lambda: SGD(P, lr=0.1, momentum=-0.5), ValueError, "momentum=-0.5"),
    (lambda: SGD(P, lr=0.1, nesterov=True), ValueError, "nesterov=True"),
    (lambda: Adam(P, betas=(0.9, 1.0)), ValueError, "betas[1]=1.0"),
    (lambda: Adam(P, betas=0.9), TypeError, "betas=0.9"),
    (lambda: Adam(P, eps=math.nan), ValueError, "eps=nan"),
    (lambda: AdamW(P, weight_decay=-1), ValueError, "weight_decay=-1"),
    (lambda: SGD([], lr=0.1), TypeError, "non-empty"),
    (lambda: get_optimizer("lamb", P, lr=0.1), ValueError, "optimizer='lamb'"),
])
def test_bad_hyperparameters_are_named(call, exc, words):
    with pytest.raises(exc) as info:
        call()
    assert words in str(info.value)


def test_get_optimizer():
    assert isinstance(get_optimizer("adamw", P, lr=0.1), AdamW)
