"""Precision policies: cast resolution from the allow/deny lists, the per-role and per-site
MatmulSpecs, the ops object against pl.matmul/pl.round, gradient statistics, FP8 state, errors."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
from precisionlab.reference import CAST_POINTS, OPERANDS, MatmulRoles, Policy
from precisionlab.reference.policy import GRADIENT_CAST_POINTS, OPS, PARAMETER_CAST_POINTS
from precisionlab.reference.recipes import fp8_roles, torch_cpu_roles

import precisionlab as pl
from precisionlab.scaling import (
    CurrentScaling,
    DelayedScaling,
    MXScaling,
    TileScaling,
    current_scale,
    delayed_scale,
    mx_quantize,
    scaled_cast,
    tile_quantize,
)

RNG = np.random.default_rng(7)


def f32(*shape, scale=1.0):
    return (scale * RNG.standard_normal(shape)).astype(np.float32)


# ---- cast resolution ---------------------------------------------------------------------------

def test_every_cast_point_is_an_op_point_or_a_parameter_point():
    op_points = [w for points in OPS.values() for w in points]
    assert sorted(op_points + list(PARAMETER_CAST_POINTS)) == sorted(CAST_POINTS)
    assert OPS["relu"] == ("relu.out", "relu.grad") and OPS["loss"] == ("loss.grad",)
    assert set(GRADIENT_CAST_POINTS) == {w for w in CAST_POINTS if w.endswith(".grad")} | {"param_grad",
                                                                                           "linear.bias_grad"}


def test_allow_deny_and_the_more_specific_entry_wins():
    p = Policy(low="fp16", allow=("relu", "loss.grad", "layernorm.grad"), deny=("loss", "layernorm"))
    f = p.formats()
    assert f["relu.out"] == f["relu.grad"] == "fp16"
    assert f["loss.grad"] == "fp16"                       # point in allow beats its op in deny
    assert f["layernorm.grad"] == "fp16" and f["layernorm.out"] is None
    assert f["gelu.out"] is None and f["input"] is None   # unlisted: no rounding
    assert p.cast_format("relu.out") == pl.get_format("fp16")
    q = Policy(low="bf16", allow=("gelu",), deny=("gelu.grad",))
    assert q.formats()["gelu.out"] == "bf16" and q.formats()["gelu.grad"] is None


def test_parameter_points_come_from_their_fields():
    with_master = Policy(weight="fp16", param_grad="fp16", optimizer_state="bf16")
    f = with_master.formats()
    assert (f["weight"], f["master"], f["param_grad"]) == ("fp16", None, "fp16")
    assert f["optimizer.exp_avg"] == f["optimizer.exp_avg_sq"] == f["optimizer.momentum_buffer"] == "bf16"
    without = Policy(weight="fp16", master_weights=False)
    assert without.formats()["master"] == "fp16"


def test_ops_cast_rounds_with_pl_round():
    p = Policy(low="bf16", allow=("gelu",), weight="fp16")
    ops = p.ops()
    x = f32(50, scale=3.0)
    assert np.array_equal(ops.cast(x, "gelu.out", "g"), pl.round(x, "bf16"))
    assert np.array_equal(ops.cast(x, "weight", "fc.weight"), pl.round(x, "fp16"))
    same = ops.cast(x.astype(np.float64), "relu.out", "r")
    assert same.dtype == np.float32 and np.array_equal(same, x)
    assert Policy(compute="fp64").ops().cast(x, "input", "m").dtype == np.float64


# ---- GEMMs ---------------------------------------------------------------------------------

SPECS = {"forward": "bf16_accumulate", "dgrad": "fp16_accumulate", "wgrad": "fp32_sequential"}


def test_each_role_and_site_uses_its_spec():
    p = Policy(matmul=SPECS, sites={"*.scores": "exact", "head": {"forward": "fp16_accumulate"}})
    ops = p.ops()
    a, b = f32(3, 9), f32(9, 4)
    for role, name in SPECS.items():
        assert np.array_equal(ops.matmul(a, b, role, "fc1"), pl.matmul(a, b, name)), role
    assert np.array_equal(ops.matmul(a, b, "dgrad", "attn.scores"), pl.matmul(a, b, "exact"))
    assert np.array_equal(ops.matmul(a, b, "forward", "head"), pl.matmul(a, b, "fp16_accumulate"))
    assert np.array_equal(ops.matmul(a, b, "wgrad", "head"), pl.matmul(a, b, "fp16_accumulate"))  # defaults to fwd
    assert p.spec("wgrad", "fc1") is pl.get_preset("fp32_sequential")
    assert MatmulRoles("exact").dgrad is pl.get_preset("exact")


def test_the_bias_is_the_gemms_c_or_a_separate_add():
    a, b, c = f32(4, 6), f32(6, 5), f32(5, scale=4.0)
    spec = replace(pl.get_preset("a100_fp16"), output_format="fp16")
    fused = Policy(matmul=spec).ops().matmul(a, b, "forward", "fc", c=c)
    assert np.array_equal(fused, pl.matmul(a, b, spec, c=c))
    separate = Policy(matmul=spec, bias="separate").ops().matmul(a, b, "forward", "fc", c=c)
    want = pl.round(pl.matmul(a, b, spec) + pl.round(c, "fp16"), "fp16")   # Keras: matmul, then add in fp16
    assert np.array_equal(separate, want)
    assert not np.array_equal(fused, separate)


def wide_cases():
    roles = torch_cpu_roles("fp16")
    return [roles.dgrad, roles.wgrad, torch_cpu_roles("bf16").wgrad,
            replace(pl.get_preset("v100_fp16"), output_format="fp16"),
            replace(pl.get_preset("a100_fp16"), output_format="fp16")]


@pytest.mark.parametrize("spec", wide_cases(), ids=lambda s: s.name)
def test_gradient_gemms_give_the_specs_bits_and_count_what_the_output_rounding_lost(spec):
    """dgrad/wgrad run with an fp32 output and then the spec's output rounding: the same bits as the
    spec itself (the matmul model rounds the fp32 accumulator once), with the lost values counted."""
    a = np.concatenate([f32(3, 8, scale=1e-6), f32(3, 8, scale=300.0), f32(2, 8)])   # underflow, overflow
    b = f32(8, 5, scale=1e-3 if spec.output_format.name == "fp16" else 1e-36)
    b[:, 4] *= 1e6
    ops = Policy(matmul=spec).ops()
    got = ops.matmul(a, b, "wgrad", "fc")
    assert np.array_equal(got, pl.matmul(a, b, spec), equal_nan=True)
    stats = ops.end_step()
    wide = pl.matmul(a, b, replace(spec, output_format="fp32"))
    assert stats.grad_values == got.size
    assert stats.grad_underflow == int(np.sum((wide != 0) & (got == 0))) > 0
    assert stats.grad_overflow == int(np.sum(np.isfinite(wide) & ~np.isfinite(got)))
    assert stats.grad_overflow > 0 or spec.output_format.name == "bf16"
    assert np.array_equal(ops.matmul(a, b, "forward", "fc"), got) and ops.end_step().grad_values == 0


def test_gradient_casts_are_counted_and_others_are_not():
    ops = Policy(low="fp16", allow=("relu", "gelu")).ops()
    g = np.array([1e-9, -1e-9, 1e5, -1e6, 0.0, 1.0, np.inf, np.nan], dtype=np.float32)
    ops.cast(g, "relu.grad", "act1")
    ops.cast(g, "gelu.out", "act2")          # forward values are not gradients
    stats = ops.end_step()
    assert (stats.grad_values, stats.grad_underflow, stats.grad_overflow) == (8, 2, 2)
    ops.training = False
    ops.cast(g, "relu.grad", "act1")
    assert ops.end_step().grad_values == 0


def test_amax_per_operand_is_the_max_over_the_step_and_keeps_nan():
    ops = Policy().ops()
    a, b = f32(2, 3), f32(3, 2)
    ops.matmul(a, b, "forward", "fc1")
    ops.matmul(2 * a, b, "forward", "fc1")
    ops.matmul(a, b, "dgrad", "fc1")
    amax = ops.end_step().amax
    assert amax["fc1.input"] == float(np.max(np.abs(2 * a)))
    assert amax["fc1.weight"] == float(np.max(np.abs(b)))
    assert amax["fc1.grad_output"] == float(np.max(np.abs(a)))
    bad = a.copy()
    bad[0, 0] = np.nan
    ops.matmul(bad, b, "forward", "fc1")
    ops.matmul(a, b, "forward", "fc1")
    assert math.isnan(ops.end_step().amax["fc1.input"])
    assert ops.end_step().amax == {}


# ---- FP8 ------------------------------------------------------------------------------------

def test_delayed_scaling_keeps_one_scaler_per_site_and_tensor():
    recipe = DelayedScaling(amax_history_len=4)
    policy = Policy(matmul=fp8_roles(), fp8=recipe, sites={"*.scores": "fp32_sequential"})
    ops = policy.ops()
    x, w, dy = f32(4, 32, scale=0.01), f32(32, 8, scale=3.0), f32(4, 8, scale=1e-3)
    roles = policy.matmul

    def expected(a, b, role, sa, sb):
        fa, fb = ("e5m2", "e4m3") if role != "forward" else ("e4m3", "e4m3")
        qa, qb = scaled_cast(a, sa, fa), scaled_cast(b, sb, fb)
        inv = lambda s: np.float32(1) / np.float32(s)  # noqa: E731
        return pl.matmul(qa, qb, roles[role], a_scale=np.float32(inv(sa)), b_scale=np.float32(inv(sb)))

    # step 0: every scale is 1 (TE's initial scale)
    assert np.array_equal(ops.matmul(x, w, "forward", "fc1"), expected(x, w, "forward", 1, 1))
    assert np.array_equal(ops.matmul(dy, w.T, "dgrad", "fc1"), expected(dy, w.T, "dgrad", 1, 1))
    assert np.array_equal(ops.matmul(dy.T, x, "wgrad", "fc1"), expected(dy.T, x, "wgrad", 1, 1))
    ops.matmul(x @ np.ones((32, 32), np.float32), w, "forward", "attn.scores")  # excluded site: no scaler
    assert sorted(ops.delayed_scalers) == [("fc1", "grad_output"), ("fc1", "input"), ("fc1", "weight")]
    assert ops.delayed_scalers[("fc1", "grad_output")].format.name == "e5m2"
    ops.end_step()
    # step 1: scale = fp8_max / amax of the history (TE delayed_scaling.cu)
    sx = delayed_scale(np.abs(x).max(), 1.0, "e4m3")
    sw = delayed_scale(np.abs(w).max(), 1.0, "e4m3")
    sg = delayed_scale(np.abs(dy).max(), 1.0, "e5m2")
    assert ops.delayed_scalers[("fc1", "input")].scale == sx
    assert np.array_equal(ops.matmul(x, w, "forward", "fc1"), expected(x, w, "forward", sx, sw))
    assert np.array_equal(ops.matmul(dy.T, x, "wgrad", "fc1"), expected(dy.T, x, "wgrad", sg, sx))
    # evaluation uses the scales without recording amaxes
    ops.end_step()
    history = ops.delayed_scalers[("fc1", "input")].amax_history.copy()
    ops.training = False
    ops.matmul(100 * x, w, "forward", "fc1")
    assert np.array_equal(ops.delayed_scalers[("fc1", "input")].amax_history, history)


def test_current_scaling_scales_every_operand_by_its_own_amax():
    policy = Policy(matmul=fp8_roles(), fp8=CurrentScaling())
    a, b = f32(4, 16, scale=50.0), f32(16, 3, scale=1e-3)
    sa, sb = current_scale(np.abs(a).max(), "e4m3"), current_scale(np.abs(b).max(), "e4m3")
    want = pl.matmul(scaled_cast(a, sa, "e4m3"), scaled_cast(b, sb, "e4m3"), policy.matmul.forward,
                     a_scale=np.float32(1) / sa, b_scale=np.float32(1) / sb)
    got = policy.ops().matmul(a, b, "forward", "fc")
    assert np.array_equal(got, want)
    assert np.allclose(got, a @ b, rtol=0.1, atol=0.05 * np.abs(a @ b).max())


def test_mx_scaling_blocks_both_operands_along_k():
    roles = fp8_roles("b200_e4m3", backward_formats=("e4m3", "e4m3"), backward_promote_every=None,
                      blocks=((1, 32), (32, 1)), scale_at="operands")
    policy = Policy(matmul=roles, fp8=MXScaling("e4m3", rule="nvidia"))
    a, b = f32(3, 40, scale=5.0), f32(40, 2)
    sa, qa = mx_quantize(a, "e4m3", axis=-1, rule="nvidia")
    sb, qb = mx_quantize(b, "e4m3", axis=-2, rule="nvidia")
    want = pl.matmul(qa, qb, roles.forward, a_scale=sa, b_scale=sb)
    assert sa.shape == (3, 2) and sb.shape == (2, 2)
    assert np.array_equal(policy.ops().matmul(a, b, "forward", "fc"), want)


def test_tile_scaling_follows_the_specs_scale_blocks():
    spec = pl.get_preset("deepseek_fp8")
    policy = Policy(matmul=spec, fp8=TileScaling())
    a, b = f32(2, 160, scale=3.0), f32(160, 3)
    sa, qa = tile_quantize(a, (1, 128))
    sb, qb = tile_quantize(b, (128, 128))
    assert np.array_equal(policy.ops().matmul(a, b, "forward", "fc"), pl.matmul(qa, qb, spec, a_scale=sa, b_scale=sb))


def test_fp8_specs_must_fit_the_recipe():
    with pytest.raises(ValueError, match="forward spec does not fit fp8=DelayedScaling.*scale blocks"):
        Policy(matmul="h100_e4m3", fp8=DelayedScaling())
    with pytest.raises(ValueError, match="dgrad spec.*e5m2 x e4m3"):
        Policy(matmul=fp8_roles(backward_formats=("e4m3", "e4m3")), fp8=DelayedScaling())
    lazy = Policy(matmul="fp32_sequential", fp8=DelayedScaling(), fp8_sites=("fc*",))
    with pytest.raises(ValueError, match="site 'fc1' role 'forward'"):
        lazy.ops().matmul(f32(2, 4), f32(4, 2), "forward", "fc1")
    assert lazy.ops().matmul(f32(2, 4), f32(4, 2), "forward", "head").shape == (2, 2)


# ---- errors ------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, exc, words", [
    (dict(low="fp16", allow=("relu", "softmx")), ValueError, "'softmx' is not an op or cast point; ops: input, relu"),
    (dict(low="fp16", deny=("attention.weights",)), ValueError, "'attention.weights' is not an op or cast point"),
    (dict(low="fp16", allow=("weight",)), ValueError, "'weight' is a parameter cast point"),
    (dict(low="fp16", allow=("relu",), deny=("relu",)), ValueError, "allow and deny both name the ops ['relu']"),
    (dict(allow=("relu",)), ValueError, "needs low=<format>"),
    (dict(low="fp17", allow=("relu",)), ValueError, "low: "),
    (dict(master_weights=False), ValueError, "master_weights=False needs a weight format"),
    (dict(bias="epilogue"), ValueError, "bias='epilogue' not allowed; choose one of fused, separate"),
    (dict(compute="fp16"), ValueError, "compute='fp16' not allowed"),
    (dict(matmul="h100_fp17"), ValueError, "preset='h100_fp17' is not a preset"),
    (dict(matmul={"backward": "exact"}), ValueError, "unknown roles ['backward']"),
    (dict(matmul=3), TypeError, "matmul=3 must be"),
    (dict(fp8="delayed"), TypeError, "fp8='delayed' must be None or one of DelayedScaling"),
    (dict(allow=5), TypeError, "allow=5 must be a sequence of names"),
    (dict(name=""), TypeError, "name='' must be a non-empty string"),
    (dict(sites={"*.scores": "h100_fp17"}), ValueError, "sites['*.scores']: preset='h100_fp17' is not a preset"),
    (dict(sites=(("*.scores",),)), TypeError, "is not a (site pattern, roles) pair"),
    (dict(sites=5), TypeError, "sites=5 must map site patterns"),
])
def test_bad_policies_are_named(kwargs, exc, words):
    with pytest.raises(exc) as info:
        Policy(**kwargs)
    assert words in str(info.value)


def test_policies_are_data():
    p = Policy(low="fp16", allow=("relu",), sites={"*.scores": "exact"})
    q = replace(p, low="bf16")
    assert q.formats()["relu.out"] == "bf16" and p.formats()["relu.out"] == "fp16"
    assert replace(q, low="fp16") == p and hash(replace(q, low="fp16")) == hash(p)
    assert q.sites == (("*.scores", MatmulRoles("exact")),)


def test_ops_errors_name_the_argument():
    ops = Policy().ops()
    with pytest.raises(ValueError, match="what='relu.output' is not a cast point"):
        ops.cast(np.ones(2), "relu.output", "act")
    with pytest.raises(ValueError, match="role='bprop'"):
        ops.matmul(np.ones((2, 2)), np.ones((2, 2)), "bprop", "fc")
    with pytest.raises(ValueError, match=r"site='fc2': shapes \(2, 3\) @ \(4, 2\) do not match"):
        ops.matmul(np.ones((2, 3)), np.ones((4, 2)), "forward", "fc2")
    assert OPERANDS["wgrad"] == ("grad_output", "input")
