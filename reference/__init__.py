"""The NumPy reference trainer (DESIGN §8), installed as ``precisionlab.reference``.

Layers with explicit forward/backward passes whose every GEMM and cast goes through
an injected ``ops`` object (:mod:`.ops`: the seam a precision policy fills), the MLP
and one-block transformer models, SGD/Adam/AdamW on master weights, loss scaling
(none, static, dynamic with the PyTorch, Apex and Keras rules) and deterministic
data.  FP8 scale rules live in :mod:`precisionlab.scaling`.  A precision policy
(:mod:`.policy`) says which op runs in which format and which MatmulSpec each GEMM
uses; named recipes (:mod:`.recipes`) reproduce the systems users know; the
:class:`Trainer` (:mod:`.trainer`) runs them and logs every step.
"""

from .data import Dataset, digits, gaussian_blobs, get_task, sequence_task, teacher_classification, teacher_regression
from .layers import (
    GELU,
    Layer,
    LayerNorm,
    Linear,
    MeanPool,
    Parameter,
    ReLU,
    Residual,
    SelfAttention,
    Sequential,
    softmax,
    softmax_backward,
)
from .loss_scaling import (
    LOSS_SCALER_PRESETS,
    DynamicLossScaler,
    LossScalingRule,
    StaticLossScaler,
    make_loss_scaler,
    no_loss_scaling,
)
from .losses import MSELoss, SoftmaxCrossEntropy, get_loss
from .models import MLP, Model, TransformerClassifier, get_model
from .ops import CAST_POINTS, OPERANDS, ROLES, Float32Ops, Float64Ops, Ops
from .optim import SGD, Adam, AdamW, Optimizer, fused_multiply_add, get_optimizer
from .policy import OPS, MatmulRoles, Policy, PolicyOps, StepStats
from .recipes import Recipe, get_recipe, recipes
from .trainer import StepLog, Trainer, TrainResult, compare_recipes, plot_losses, train

__all__ = [
    "Dataset", "digits", "gaussian_blobs", "get_task", "sequence_task", "teacher_classification", "teacher_regression",
    "GELU", "Layer", "LayerNorm", "Linear", "MeanPool", "Parameter", "ReLU", "Residual", "SelfAttention", "Sequential",
    "softmax", "softmax_backward",
    "LOSS_SCALER_PRESETS", "DynamicLossScaler", "LossScalingRule", "StaticLossScaler", "make_loss_scaler",
    "no_loss_scaling",
    "MSELoss", "SoftmaxCrossEntropy", "get_loss",
    "MLP", "Model", "TransformerClassifier", "get_model",
    "CAST_POINTS", "OPERANDS", "ROLES", "Float32Ops", "Float64Ops", "Ops",
    "SGD", "Adam", "AdamW", "Optimizer", "fused_multiply_add", "get_optimizer",
    "OPS", "MatmulRoles", "Policy", "PolicyOps", "StepStats",
    "Recipe", "get_recipe", "recipes",
    "StepLog", "Trainer", "TrainResult", "compare_recipes", "plot_losses", "train",
]
