"""Named mixed-precision training recipes (DESIGN §8): a :class:`Policy` plus loss scaling.

Each recipe is data; its ``source`` says which system it reproduces and from which
sources its choices come.  ``get_recipe(name)`` returns one, ``recipes`` lists them.
``dataclasses.replace`` derives variants (another matmul preset, a CUDA autocast op
list, another loss-scaler setting).

The GEMM presets follow the system each recipe models: the PyTorch CPU recipes use the
measured ``torch_cpu_*`` layouts of ``nn.Linear`` (forward ``x @ W.T`` a transposed view
-> ``torch_cpu_nt`` with the bias inside the single rounding; dgrad ``dY @ W`` ->
``torch_cpu_nn``; wgrad ``dY.T @ x`` -> ``torch_cpu_tn``; verified on torch 2.13 with
data that separates the orders, tools/make_golden_train.py), Apex the V100 tensor cores
it was written for, Keras an A100 (cuBLAS fp16 GEMMs with fp32 compute and an fp16
output), the FP8 recipes an H100 (TE's defaults: fast accumulation in forward,
promotion every 128 K elements in dgrad/wgrad) and MXFP8 a B200.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from precisionlab.matmul import MatmulSpec
from precisionlab.presets import get_preset
from precisionlab.scaling import CurrentScaling, DelayedScaling, MXScaling

from .loss_scaling import DynamicLossScaler, StaticLossScaler, make_loss_scaler
from .policy import OPS, MatmulRoles, Policy

__all__ = ["Recipe", "recipes", "get_recipe", "LOSS_SCALING_KINDS", "ALL_OPS", "torch_cpu_roles", "gpu_roles",
           "fp8_roles"]

#: Loss scaling of a recipe: ``make_loss_scaler`` kinds.
LOSS_SCALING_KINDS = ("none", "static", "dynamic", "torch", "apex", "keras", "tf_keras")
#: Every op of the allow/deny lists (a whole model in the low format).
ALL_OPS = tuple(OPS)


@dataclass(frozen=True)
class Recipe:
    """A precision policy and the loss scaling that goes with it.

    ``loss_scaling`` is a :func:`~.loss_scaling.make_loss_scaler` kind (``"none"``,
    ``"static"``, ``"dynamic"`` or a preset: ``"torch"``, ``"apex"``, ``"keras"``) and
    ``loss_scaler_args`` its keyword arguments (e.g. ``(("init_scale", 2**24),)``).
    """

    name: str
    policy: Policy
    loss_scaling: str = "none"
    loss_scaler_args: tuple[tuple[str, Any], ...] = ()
    source: str = field(default="", compare=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise TypeError(f"name={self.name!r} must be a non-empty string")
        if not isinstance(self.policy, Policy):
            raise TypeError(f"policy={self.policy!r} must be a Policy")
        if self.loss_scaling not in LOSS_SCALING_KINDS:
            raise ValueError(f"loss_scaling={self.loss_scaling!r} not allowed; choose one of "
                             f"{', '.join(LOSS_SCALING_KINDS)}")
        args = self.loss_scaler_args.items() if isinstance(self.loss_scaler_args, dict) else self.loss_scaler_args
        object.__setattr__(self, "loss_scaler_args", tuple((str(k), v) for k, v in args))
        self.loss_scaler()  # validate the arguments now

    def loss_scaler(self, **overrides: Any) -> DynamicLossScaler | StaticLossScaler:
        """A fresh loss scaler of this recipe (``overrides`` replace its arguments)."""
        return make_loss_scaler(self.loss_scaling, **{**dict(self.loss_scaler_args), **overrides})


# ---- GEMM roles ---------------------------------------------------------------------------

def torch_cpu_roles(fmt: str) -> MatmulRoles:
    """PyTorch CPU ``nn.Linear`` GEMMs in ``fmt`` (fp16 or bf16): forward ``torch_cpu_nt`` (bias
    inside), dgrad ``torch_cpu_nn``, wgrad ``torch_cpu_tn``, inputs and output in ``fmt``."""
    def one(name: str) -> MatmulSpec:
        return replace(get_preset(name), a_format=fmt, output_format=fmt, name=f"{name}[{fmt}]")
    return MatmulRoles(one("torch_cpu_nt"), one("torch_cpu_nn"), one("torch_cpu_tn"))


def gpu_roles(preset: str, output: str) -> MatmulRoles:
    """One tensor-core preset for all three GEMMs, with the output rounded to ``output`` (cuBLAS
    fp16/bf16 GEMMs with an fp32 compute type)."""
    spec = replace(get_preset(preset), output_format=output, name=f"{preset}[out {output}]")
    return MatmulRoles(spec)


def fp8_roles(forward: str = "h100_e4m3", forward_formats: tuple[str, str] = ("e4m3", "e4m3"),
              backward_formats: tuple[str, str] = ("e5m2", "e4m3"), backward_promote_every: int | None = 128,
              blocks: tuple[Any, Any] = ((None, None), (None, None)), scale_at: str = "promotion") -> MatmulRoles:
    """FP8 GEMMs: ``forward`` preset with the operand formats and scale blocks of the recipe;
    dgrad and wgrad take ``grad_output`` (A) in the backward format and promote to fp32 every
    ``backward_promote_every`` K elements (TE's split accumulator for dgrad/wgrad)."""
    base = replace(get_preset(forward), a_scale_block=blocks[0], b_scale_block=blocks[1], scale_at=scale_at)
    fwd = replace(base, a_format=forward_formats[0], b_format=forward_formats[1], name=f"{forward}[fprop]")
    bwd = replace(base, a_format=backward_formats[0], b_format=backward_formats[1],
                  promote_every=backward_promote_every, name=f"{forward}[{backward_formats[0]} x "
                                                             f"{backward_formats[1]}, bprop]")
    return MatmulRoles(fwd, bwd, bwd)


# ---- the recipes ------------------------------------------------------------------------------

#: CPU autocast's ops of the reference models that run in fp16/bf16: matmuls are autocast's
#: lower-precision list (through the specs); relu, gelu, layer_norm, softmax, the score scaling,
#: residual adds and the mean are in neither list and run in their input's dtype, which is
#: low precision after the first Linear; ``cross_entropy_loss`` is in the fp32 list, and the
#: gradient it returns to the low-precision logits is cast back by autocast's cast node.
_TORCH_CPU_AUTOCAST_LOW = ("relu", "gelu", "layernorm", "softmax", "attention", "residual", "pool", "loss.grad",
                           "linear.bias_grad")

_SOURCE_TORCH_AMP = (
    "PyTorch automatic mixed precision on a CPU: torch.autocast('cpu', dtype=torch.{fmt}){scaler}. Parameters and "
    "their gradients stay float32 (a Linear's weight and bias gradients hold {fmt} values: the wgrad GEMM and the "
    "bias sum run in {fmt} and autocast's cast node converts them exactly); op lists from "
    "aten/src/ATen/autocast_mode.cpp (CPU: linear/matmul in lower_precision_fp, cross_entropy_loss in fp32, every "
    "other op of the reference models runs in its input's dtype); GEMMs are torch's CPU kernels (torch_cpu_nt for "
    "the forward x @ W.T with the bias added in fp32 before the one rounding, torch_cpu_nn for dgrad, torch_cpu_tn "
    "for wgrad), as measured on torch 2.13."
)

_FP32 = Recipe(
    "fp32",
    Policy("fp32", matmul="fp32_sequential",
           source="float32 everywhere; GEMMs as sequential fp32 FMA loops."),
    source="Plain float32 training, the baseline the other recipes are compared with. Every GEMM is the textbook "
           "sequential fp32 FMA loop (fp32_sequential), elementwise arithmetic in float32, no casts, no loss "
           "scaling.",
)

_PURE_FP16 = Recipe(
    "pure_fp16",
    Policy("pure_fp16", matmul=torch_cpu_roles("fp16"), low="fp16", allow=ALL_OPS, weight="fp16",
           master_weights=False, param_grad="fp16", optimizer_state="fp16",
           source="model.half(): every tensor fp16."),
    source="A whole model cast to half with model.half() and input.half() on a CPU, no loss scaling and no master "
           "weights: every activation, weight, gradient and optimizer state is fp16 and the optimizer updates the "
           "fp16 weights directly. GEMMs are torch's CPU fp16 kernels (fp32 accumulation, one rounding to fp16; "
           "torch_cpu_*). The naive recipe that mixed-precision training exists to fix: gradients below 2^-24 "
           "flush to zero and small updates vanish in fp16 weights (Micikevicius et al., 'Mixed Precision "
           "Training', ICLR 2018, §3).",
)

_TORCH_AMP_FP16 = Recipe(
    "torch_amp_fp16",
    Policy("torch_amp_fp16", matmul=torch_cpu_roles("fp16"), low="fp16", allow=_TORCH_CPU_AUTOCAST_LOW,
           deny=("loss",), source="torch.autocast('cpu', dtype=torch.float16)"),
    loss_scaling="torch",
    source=_SOURCE_TORCH_AMP.format(fmt="float16", scaler=" with torch.amp.GradScaler (init 2^16, growth 2, backoff "
                                                          "0.5, interval 2000; torch/amp/grad_scaler.py)"),
)

_TORCH_AMP_BF16 = Recipe(
    "torch_amp_bf16",
    Policy("torch_amp_bf16", matmul=torch_cpu_roles("bf16"), low="bf16", allow=_TORCH_CPU_AUTOCAST_LOW,
           deny=("loss",), source="torch.autocast('cpu', dtype=torch.bfloat16)"),
    source=_SOURCE_TORCH_AMP.format(fmt="bfloat16", scaler=" without a GradScaler (bf16 has fp32's exponent range; "
                                                           "the AMP docs use no scaler for bf16)"),
)

#: Apex O1 (apex/amp/lists/functional_overrides.py, torch_overrides.py): linear/matmul are FP16_FUNCS;
#: softmax, log_softmax, gelu, layer_norm, mean/sum and the losses are FP32_FUNCS; relu, add and the
#: score scaling promote (fp16 when both inputs are). A gradient takes the dtype of the forward input
#: it belongs to: fp16 into layer_norm, gelu and softmax (their inputs were fp16 and were cast up),
#: fp32 into the mean (its input is the fp32 LayerNorm output).
_APEX_O1_LOW = ("relu", "residual", "attention", "layernorm.grad", "gelu.grad", "softmax.grad", "loss.grad",
                "linear.bias_grad")

_APEX_O1 = Recipe(
    "apex_o1",
    Policy("apex_o1", matmul=gpu_roles("v100_fp16", "fp16"), low="fp16", allow=_APEX_O1_LOW,
           deny=("layernorm", "gelu", "softmax", "pool", "loss"),
           source="apex.amp.initialize(model, optimizer, opt_level='O1')"),
    loss_scaling="apex",
    source="NVIDIA Apex AMP opt_level O1 (apex.amp.initialize(..., opt_level='O1'), deprecated in favour of "
           "torch.amp): torch functions patched by op lists (apex/amp/lists/functional_overrides.py and "
           "torch_overrides.py: linear/matmul in fp16; softmax, gelu, layer_norm, mean and the losses in fp32; relu, "
           "add and scalar multiplication promote), fp32 weights cast per use, the Apex dynamic loss scaler (init "
           "2^16, window 2000, max 2^24; apex/amp/scaler.py). GEMMs on the V100 tensor cores Apex was written for "
           "(v100_fp16, fp32 accumulation, output rounded to fp16 as cuBLAS does with an fp32 compute type).",
)

_APEX_O2 = Recipe(
    "apex_o2",
    Policy("apex_o2", matmul=gpu_roles("v100_fp16", "fp16"), low="fp16", allow=ALL_OPS, weight="fp16",
           master_weights=True, param_grad="fp16",
           source="apex.amp.initialize(model, optimizer, opt_level='O2')"),
    loss_scaling="apex",
    source="NVIDIA Apex AMP opt_level O2: the model cast to fp16 (cast_model_type=torch.float16; batch norm would "
           "stay fp32, LayerNorm does not), inputs cast to fp16, fp16 gradients copied to fp32 master weights which "
           "the optimizer updates in fp32 and copies back to the fp16 model (master_weights=True), Apex dynamic "
           "loss scaling (init 2^16, window 2000, max 2^24; apex/amp/_process_optimizer.py, scaler.py). GEMMs on "
           "V100 tensor cores with an fp16 output. The loss is computed in fp32 here (Apex's fp16 logits are "
           "upcast inside the CUDA loss kernels).",
)

_KERAS_MIXED_FLOAT16 = Recipe(
    "keras_mixed_float16",
    Policy("keras_mixed_float16", matmul=gpu_roles("a100_fp16", "fp16"), low="fp16",
           allow=tuple(op for op in ALL_OPS if op != "loss") + ("loss.grad",), deny=("loss",),
           param_grad="fp16", bias="separate",
           source="keras.mixed_precision.set_dtype_policy('mixed_float16')"),
    loss_scaling="keras",
    source="Keras 3 dtype policy 'mixed_float16' (keras/src/dtype_policies/dtype_policy.py) with the "
           "LossScaleOptimizer that model.compile adds (init 2^15, doubled after 2000 clean steps; "
           "keras/src/optimizers/loss_scale_optimizer.py): float32 variables read as fp16 (AutoCastVariable), every "
           "layer computing in fp16, Dense adding its bias after the matmul in fp16, the loss computed in float32 "
           "(Loss casts y_pred to its float32 dtype), variable gradients holding fp16 values. GEMMs as cuBLAS fp16 "
           "GEMMs on an A100 (a100_fp16, output rounded to fp16).",
)

_FP8_DELAYED = Recipe(
    "fp8_delayed",
    Policy("fp8_delayed", matmul=fp8_roles(), fp8=DelayedScaling(),
           sites={"*.scores": "fp32_sequential", "*.context": "fp32_sequential"},
           source="te.fp8_autocast(fp8_recipe=DelayedScaling())"),
    source="NVIDIA Transformer Engine FP8 with delayed scaling (transformer_engine.common.recipe.DelayedScaling "
           "defaults: Format.HYBRID = E4M3 forward / E5M2 gradients, margin 0, amax_history_len 1024, "
           "amax_compute_algo 'max'), one scale per (GEMM site, tensor) from the amax history, updated once per "
           "step. GEMMs on an H100: forward h100_e4m3 with fast accumulation (TE's fprop default), dgrad/wgrad "
           "E5M2 x E4M3 promoted to fp32 every 128 K elements (TE's split accumulator; the H100 _scaled_mm "
           "recording in golden/ shows this promotion interval), inverse scales applied to each fp32 partial sum; "
           "outputs and all other ops in float32 (te.Linear with params_dtype=float32); attention products stay "
           "fp32 (fp8_dpa=False). No loss scaling.",
)

_FP8_CURRENT = Recipe(
    "fp8_current",
    Policy("fp8_current", matmul=fp8_roles(), fp8=CurrentScaling(),
           sites={"*.scores": "fp32_sequential", "*.context": "fp32_sequential"},
           source="te.fp8_autocast(fp8_recipe=Float8CurrentScaling())"),
    source="NVIDIA Transformer Engine FP8 with per-tensor current scaling (transformer_engine.common.recipe."
           "Float8CurrentScaling defaults: HYBRID, no power-of-two scales, epsilon 0): each GEMM operand scaled by "
           "fp8_max / its own amax. GEMMs, outputs and the other ops as fp8_delayed.",
)

_MXFP8 = Recipe(
    "mxfp8",
    Policy("mxfp8", matmul=fp8_roles("b200_e4m3", backward_formats=("e4m3", "e4m3"), backward_promote_every=None,
                                     blocks=((1, 32), (32, 1)), scale_at="operands"),
           fp8=MXScaling("e4m3", rule="nvidia"),
           sites={"*.scores": "fp32_sequential", "*.context": "fp32_sequential"},
           source="te.fp8_autocast(fp8_recipe=MXFP8BlockScaling())"),
    source="NVIDIA Transformer Engine MXFP8 block scaling (transformer_engine.common.recipe.MXFP8BlockScaling: "
           "E4M3 for every tensor, 32 elements along K share an E8M0 scale rounded up as cuBLAS/TE do, OCP MX v1.0 "
           "layout) on a B200: each GEMM operand quantised along its K axis (TE keeps row- and column-wise copies "
           "for this), the power-of-two scales applied to the operands exactly, the products accumulated as the "
           "b200_e4m3 preset (a model: the block-scaled tcgen05 MMA has no published bit-level measurements). "
           "Outputs and the other ops float32, attention products fp32, no loss scaling.",
)

#: Recipe name -> Recipe (DESIGN §8).
recipes: dict[str, Recipe] = {r.name: r for r in (_FP32, _PURE_FP16, _TORCH_AMP_FP16, _TORCH_AMP_BF16, _APEX_O1,
                                                   _APEX_O2, _KERAS_MIXED_FLOAT16, _FP8_DELAYED, _FP8_CURRENT, _MXFP8)}


def get_recipe(name: str | Recipe) -> Recipe:
    """The recipe called ``name``; ValueError listing the names otherwise."""
    if isinstance(name, Recipe):
        return name
    if not isinstance(name, str):
        raise TypeError(f"recipe={name!r} must be a recipe name or a Recipe")
    key = name.strip().lower()
    if key not in recipes:
        raise ValueError(f"recipe={name!r} is not a recipe; allowed: {', '.join(recipes)}")
    return recipes[key]
