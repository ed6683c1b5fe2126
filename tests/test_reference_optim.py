"""Optimizers: the published algorithms (float64), PyTorch's operation order (float32,
bit for bit, against a per-element transcription of torch's single-tensor code with an
exact fused multiply-add oracle), the FMA itself, master/state casts, and hyperparameter
errors."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from oracle import neighbours
from precisionlab.reference import SGD, Adam, AdamW, Float64Ops, Parameter, fused_multiply_add, get_optimizer

import precisionlab as pl


def round_exact(value: Fraction, fmt: str) -> float:
    """An exact rational rounded to nearest-even in fp32/fp64 (Inf beyond the largest finite)."""
    f = pl.get_format(fmt)
    if value == 0:
        return 0.0
    a = abs(value)
    lo, hi, n, _ = neighbours(a, f)
    r = lo if a - lo < hi - a else hi if a - lo > hi - a else (lo if n % 2 == 0 else hi)
    out = math.inf if r > Fraction(f.max) else float(r)
    return -out if value < 0 else out


def fma_oracle(a, b, c, fmt="fp32") -> float:
    """fl(a*b + c), one rounding, from the exact rational value."""
    return round_exact(Fraction(float(a)) * Fraction(float(b)) + Fraction(float(c)), fmt)


def adversarial_triples(dtype, n=400, seed=0):
    rng = np.random.default_rng(seed)
    info = np.finfo(dtype)
    a = rng.standard_normal(n) * np.exp2(rng.integers(-20, 20, n))
    b = rng.standard_normal(n) * np.exp2(rng.integers(-20, 20, n))
    c = rng.standard_normal(n) * np.exp2(rng.integers(-40, 40, n))
    a, b, c = a.astype(dtype), b.astype(dtype), c.astype(dtype)
    c[::5] = (-(a[::5].astype(np.float64) * b[::5]) * (1 + 2.0 ** -30)).astype(dtype)    # cancellation
    eps = info.eps
    extra = [(1.0, eps / 2, 1.0), (1.0 + eps, eps / 2, 1.0), (1 + 2 * eps, 0.5 * (1 + eps), 1.0),  # ties, near-ties
             (float(info.tiny), 0.5, float(info.tiny) * 2 ** -3),                                # subnormal results
             (float(info.max), 2.0, -float(info.max)), (float(info.max), 1.5, 0.0),              # overflow
             (3.0, 1 / 3, -1.0), (0.0, 5.0, -0.0)]
    ea, eb, ec = (np.array(v, dtype=dtype) for v in zip(*extra, strict=True))
    return np.concatenate([a, ea]), np.concatenate([b, eb]), np.concatenate([c, ec])


@pytest.mark.parametrize("dtype, fmt", [(np.float32, "fp32"), (np.float64, "fp64")])
def test_fused_multiply_add_is_one_rounding(dtype, fmt):
    a, b, c = adversarial_triples(dtype)
    if dtype == np.float64:  # the documented domain of the float64 emulation: no overflow, products >= 2^-969
        with np.errstate(over="ignore"):
            p = np.abs(a * b)
        keep = (p == 0) | ((p < np.finfo(np.float64).max / 4) & (p >= 2.0 ** -969))
        a, b, c = a[keep], b[keep], c[keep]
    with np.errstate(over="ignore"):
        got = fused_multiply_add(a, b, c, dtype)
        two = (a * b + c).astype(dtype)
    assert got.dtype == dtype
    want = np.array([fma_oracle(x, y, z, fmt) for x, y, z in zip(a, b, c, strict=True)])
    ok = np.isfinite(want) | np.isfinite(got)
    assert np.array_equal(got[ok], want[ok].astype(dtype)) and np.array_equal(np.isinf(got), np.isinf(want))
    assert np.sum(two != got) > 10  # the data separates one rounding from two

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


def fma32(a, b, c):
    return f32(fma_oracle(f32(a), f32(b), f32(c)))


def torch_sgd_f32(w, grads, lr, momentum, weight_decay):
    """Per element, torch's _single_tensor_sgd in float32, where ``x.add(y, alpha=a)`` is the CPU
    kernel's fused ``fmadd(y, a, x)`` (measured on torch 2.13: see reference/optim.py):
    d_p = g.add(p, alpha=wd); buf = clone(d_p) then buf.mul_(m).add_(d_p, alpha=1-dampening);
    p.add_(d_p, alpha=-lr)."""
    out = []
    for i in range(w.size):
        p, buf = f32(w[i]), None
        for g in grads:
            d = fma32(weight_decay, p, g[i])
            if momentum:
                buf = d if buf is None else fma32(1.0, d, buf * f32(momentum))
                d = buf
            p = fma32(-lr, d, p)
        out.append(p)
    return np.array(out, dtype=f32)


def torch_adam_f32(w, grads, lr, b1, b2, eps, weight_decay, decoupled):
    """Per element, torch's _single_tensor_adam/adamw in float32 (lerp and addcmul fused, as the
    CPU kernels are; addcdiv and the rest one rounding per operation)."""
    out = []
    for i in range(w.size):
        p, m, v = f32(w[i]), f32(0), f32(0)
        for t, gg in enumerate(grads, start=1):
            g = f32(gg[i])
            if decoupled:
                p = p * f32(1 - lr * weight_decay)          # param.mul_(1 - lr * wd)
            elif weight_decay:
                g = fma32(weight_decay, p, g)                # grad.add(param, alpha=wd)
            wt = f32(1 - b1)                                 # exp_avg.lerp_(grad, 1 - b1)
            m = fma32(wt, g - m, m) if wt < 0.5 else fma32(-(g - m), f32(1) - wt, g)
            v = fma32(f32(1 - b2) * g, g, v * f32(b2))        # mul_(b2).addcmul_(g, g, value=1-b2)
            step_size = lr / (1 - b1**t)
            denom = np.sqrt(v) / f32(math.sqrt(1 - b2**t)) + f32(eps)
            p = p + f32(-step_size) * m / denom               # addcdiv_(m, denom, value=-step_size)
        out.append(p)
    return np.array(out, dtype=f32)


def test_float32_updates_follow_torchs_operation_order():
    w0, grads = trajectory(3, n=16, steps=6, dtype=np.float32)
    grads = [g * np.float32(30) for g in grads]  # large steps, where one rounding and two differ
    ops = Float32Ops()
    got, _ = run(SGD, dict(lr=0.1, momentum=0.9, weight_decay=0.01), w0, grads, ops)
    assert got.dtype == np.float32
    assert np.array_equal(got, torch_sgd_f32(w0, grads, 0.1, 0.9, 0.01))
    for cls, decoupled, wd, b1 in ((Adam, False, 0.01, 0.9), (AdamW, True, 0.1, 0.9), (Adam, False, 0.0, 0.3)):
        got, _ = run(cls, dict(lr=1e-2, weight_decay=wd, betas=(b1, 0.999)), w0, grads, ops)
        assert np.array_equal(got, torch_adam_f32(w0, grads, 1e-2, b1, 0.999, 1e-8, wd, decoupled)), cls
    two_roundings = w0.copy()
    for g in grads:
        two_roundings = two_roundings + f32(-0.1) * g
    got, _ = run(SGD, dict(lr=0.1), w0, grads, ops)
    assert not np.array_equal(got, two_roundings)


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
