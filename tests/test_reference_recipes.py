"""Named recipes: the DESIGN §8 list, what each one rounds where (the facts of the system it
reproduces), its GEMMs and its loss scaling, and the lookup errors."""

from __future__ import annotations

from dataclasses import replace

import pytest
from precisionlab.reference import DynamicLossScaler, Recipe, StaticLossScaler, get_recipe, recipes
from precisionlab.reference.policy import OPS, Policy

import precisionlab as pl
from precisionlab.scaling import CurrentScaling, DelayedScaling, MXScaling

DESIGN_NAMES = ["fp32", "pure_fp16", "torch_amp_fp16", "torch_amp_bf16", "apex_o1", "apex_o2",
                "keras_mixed_float16", "fp8_delayed", "fp8_current", "mxfp8"]
ACTIVATION_POINTS = [w for points in OPS.values() for w in points]


def test_the_design_recipes_exist_and_cite_their_sources():
    assert list(recipes) == DESIGN_NAMES
    for name, r in recipes.items():
        assert r.name == r.policy.name == name
        assert len(r.source) > 80, name
    assert get_recipe(" Torch_AMP_FP16 ") is recipes["torch_amp_fp16"]
    assert get_recipe(recipes["mxfp8"]) is recipes["mxfp8"]


def test_unknown_recipe_lists_the_names():
    with pytest.raises(ValueError) as info:
        get_recipe("amp_o3")
    assert "recipe='amp_o3' is not a recipe; allowed: fp32, pure_fp16, torch_amp_fp16" in str(info.value)
    with pytest.raises(TypeError, match="recipe=3"):
        get_recipe(3)


def test_fp32_rounds_nothing():
    f = recipes["fp32"].policy.formats()
    assert set(f.values()) == {None}
    assert recipes["fp32"].policy.matmul.forward is pl.get_preset("fp32_sequential")


def test_pure_fp16_is_a_whole_model_in_half_without_master_weights_or_scaling():
    r = recipes["pure_fp16"]
    f = r.policy.formats()
    assert all(v == "fp16" for v in f.values()), f
    assert not r.policy.master_weights and isinstance(r.loss_scaler(), StaticLossScaler)
    assert r.loss_scaler().scale == 1.0


def test_torch_autocast_recipes_follow_cpu_autocast():
    for fmt in ("fp16", "bf16"):
        p = recipes[f"torch_amp_{fmt}"].policy
        f = p.formats()
        assert (f["weight"], f["master"], f["param_grad"], f["input"]) == (None, None, None, None)
        for what in ("relu.out", "gelu.out", "layernorm.out", "softmax.out", "attention.scores", "residual.out",
                     "pool.out", "loss.grad", "linear.bias_grad", "layernorm.grad"):
            assert f[what] == fmt, (fmt, what)
        assert "loss" in p.deny
        # nn.Linear's three GEMMs on a CPU: x @ W.T (transposed view), dY @ W, dY.T @ x
        for role, preset in (("forward", "torch_cpu_nt"), ("dgrad", "torch_cpu_nn"), ("wgrad", "torch_cpu_tn")):
            spec = p.matmul[role]
            assert spec == replace(pl.get_preset(preset), a_format=fmt, output_format=fmt), role
        assert p.bias == "fused"
    scaler = recipes["torch_amp_fp16"].loss_scaler()
    assert isinstance(scaler, DynamicLossScaler) and scaler.rule.name == "torch" and scaler.scale == 2.0 ** 16
    assert recipes["torch_amp_fp16"].loss_scaler(init_scale=2.0 ** 24).scale == 2.0 ** 24


def test_bf16_needs_no_loss_scaling():
    r = recipes["torch_amp_bf16"]
    assert r.loss_scaling == "none" and isinstance(r.loss_scaler(), StaticLossScaler)
    assert pl.get_format("bf16").smallest_subnormal < pl.get_format("fp16").smallest_subnormal * 2.0 ** -100


def test_apex_levels():
    o1 = recipes["apex_o1"].policy.formats()
    assert o1["layernorm.out"] is None and o1["gelu.out"] is None and o1["softmax.out"] is None   # FP32_FUNCS
    assert o1["layernorm.grad"] == o1["gelu.grad"] == o1["softmax.grad"] == "fp16"  # gradients into fp16 inputs
    assert o1["pool.out"] is None and o1["pool.grad"] is None and o1["relu.out"] == "fp16"
    assert o1["weight"] is None
    o2 = recipes["apex_o2"].policy
    assert o2.formats()["weight"] == "fp16" and o2.master_weights and o2.formats()["master"] is None
    assert o2.formats()["param_grad"] == "fp16" and o2.formats()["layernorm.out"] == "fp16"
    for name in ("apex_o1", "apex_o2"):
        s = recipes[name].loss_scaler()
        assert s.rule.name == "apex" and s.rule.max_scale == 2.0 ** 24
        assert recipes[name].policy.matmul.forward.k_fused == pl.get_preset("v100_fp16").k_fused
        assert recipes[name].policy.matmul.forward.output_format.name == "fp16"


def test_keras_mixed_float16():
    r = recipes["keras_mixed_float16"]
    f = r.policy.formats()
    assert r.policy.bias == "separate" and f["param_grad"] == "fp16" and f["weight"] is None
    assert all(f[w] == "fp16" for w in ACTIVATION_POINTS), f
    s = r.loss_scaler()
    assert s.rule.name == "keras" and s.scale == 2.0 ** 15 and s.rule.growth_interval == 2000


@pytest.mark.parametrize("name, scaling", [("fp8_delayed", DelayedScaling), ("fp8_current", CurrentScaling),
                                           ("mxfp8", MXScaling)])
def test_fp8_recipes(name, scaling):
    r = recipes[name]
    p = r.policy
    assert isinstance(p.fp8, scaling) and r.loss_scaling == "none"
    assert p.uses_fp8("fc1") and p.uses_fp8("block.attn.q") and not p.uses_fp8("block.attn.scores")
    assert p.spec("forward", "block.attn.context") is pl.get_preset("fp32_sequential")
    assert set(p.formats().values()) == {None}
    if scaling is MXScaling:
        assert p.fp8.rule == "nvidia" and p.matmul.forward.a_scale_block == (1, 32)
        assert p.matmul.dgrad.a_format.name == "e4m3"
    else:
        assert p.fp8.fp8_format.name == "HYBRID"
        assert p.matmul.forward.promote_every is None and p.matmul.wgrad.promote_every == 128
        assert (p.matmul.dgrad.a_format.name, p.matmul.dgrad.effective_b_format.name) == ("e5m2", "e4m3")
    if scaling is DelayedScaling:
        assert (p.fp8.margin, p.fp8.amax_history_len, p.fp8.amax_compute_algo) == (0, 1024, "max")


def test_recipes_are_data_and_validate():
    r = replace(recipes["torch_amp_fp16"], loss_scaler_args={"init_scale": 1024.0})
    assert r.loss_scaler().scale == 1024.0 and r.loss_scaler_args == (("init_scale", 1024.0),)
    assert recipes["fp32"] == get_recipe("fp32") and hash(recipes["fp32"]) == hash(get_recipe("fp32"))
    with pytest.raises(ValueError, match="loss_scaling='gradscaler' not allowed"):
        Recipe("x", Policy(), loss_scaling="gradscaler")
    with pytest.raises(TypeError, match="policy='fp32' must be a Policy"):
        Recipe("x", "fp32")
    with pytest.raises(TypeError, match="not understood"):
        Recipe("x", Policy(), loss_scaling="torch", loss_scaler_args={"initial": 2.0})
