"""The training loop of the reference trainer (DESIGN §8): a model, a recipe, an optimizer and a
loss scaler on a task, logged step by step.

One step follows PyTorch's AMP loop (``torch/amp/grad_scaler.py``) with every rounding
taken from the recipe's policy::

    out = model(x); loss = loss_fn(out, y)           # forward under the policy
    (loss * scale).backward()                        # loss.grad carries the scale
    grads *= fl32(1 / scale); found = any non-finite  # GradScaler.unscale_
    skipped = scaler.update(found)                   # the scale of the next step
    if not skipped: optimizer.step()                 # on the master weights
    ops.end_step()                                   # FP8 delayed scales, statistics

The logged scale is the one the step used.  Only parameter gradients decide whether a
step is skipped (as torch: the gradient w.r.t. the input batch is never computed).
Everything is deterministic: the only randomness is the minibatch order, drawn from
``seed``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .data import Dataset, get_task
from .layers import Linear
from .loss_scaling import DynamicLossScaler, StaticLossScaler
from .losses import MSELoss, SoftmaxCrossEntropy, get_loss
from .models import MLP, Model, TransformerClassifier
from .optim import Optimizer, get_optimizer
from .policy import PolicyOps
from .recipes import Recipe, get_recipe

__all__ = ["StepLog", "TrainResult", "Trainer", "train", "compare_recipes", "plot_losses", "MODEL_TASKS"]

#: The default task of each model name (:func:`train`).
MODEL_TASKS = {"mlp": "blobs", "transformer": "sequence"}


@dataclass(frozen=True)
class StepLog:
    """One training step: the (unscaled) loss, the loss scale used, whether the update was
    skipped, whether a parameter gradient was non-finite, how many gradient values were rounded
    to a narrower format and how many of them flushed to zero or overflowed, and the amax of
    every GEMM operand (``"<site>.<tensor>"``)."""

    step: int
    loss: float
    scale: float
    skipped: bool
    nonfinite: bool
    grad_values: int
    grad_underflow: int
    grad_overflow: int
    amax: dict[str, float] = field(default_factory=dict)


@dataclass
class TrainResult:
    """The log of a run, the final master weights and the test metrics."""

    recipe: str
    log: list[StepLog]
    state: dict[str, np.ndarray]
    test_loss: float | None = None
    test_accuracy: float | None = None
    seconds: float = 0.0

    @property
    def losses(self) -> np.ndarray:
        return np.array([s.loss for s in self.log])

    @property
    def scales(self) -> np.ndarray:
        return np.array([s.scale for s in self.log])

    @property
    def skipped(self) -> np.ndarray:
        return np.array([s.skipped for s in self.log], dtype=bool)

    @property
    def skipped_steps(self) -> int:
        return int(self.skipped.sum())

    @property
    def final_loss(self) -> float:
        return self.log[-1].loss if self.log else math.nan

    @property
    def underflow_fraction(self) -> float:
        """Gradient values flushed to zero / gradient values rounded, over the whole run."""
        total = sum(s.grad_values for s in self.log)
        return sum(s.grad_underflow for s in self.log) / total if total else 0.0

    @property
    def overflow_count(self) -> int:
        return sum(s.grad_overflow for s in self.log)

    def divergence(self, reference: TrainResult) -> float:
        """``max_t |loss_t - ref_t| / |ref_t|`` over the common steps (Inf where a loss is not
        finite but the reference's is)."""
        n = min(len(self.log), len(reference.log))
        if n == 0:
            return math.nan
        mine, ref = self.losses[:n], reference.losses[:n]
        with np.errstate(invalid="ignore", divide="ignore"):
            rel = np.abs(mine - ref) / np.abs(ref)
        rel = np.where(np.isfinite(ref) & ~np.isfinite(mine), np.inf, rel)
        rel = np.where((ref == 0) & (mine == 0), 0.0, rel)
        return float(np.max(rel))


def _positive_int(arg: str, value: Any) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{arg}={value!r} must be an int")
    if value < 1:
        raise ValueError(f"{arg}={value} must be >= 1")
    return int(value)


def _input_features(model: Model) -> int | None:
    first = model.layers[0]
    return first.in_features if isinstance(first, Linear) else None


class Trainer:
    """Train ``model`` with ``recipe`` (a Recipe or its name) and ``optimizer`` (built over
    ``model.parameters()``) on ``task``.

    ``loss`` defaults to cross-entropy for classification tasks and MSE for regression;
    ``loss_scaler`` to the recipe's; ``batch_size=None`` trains full-batch.  The masters are
    converted to the policy's master dtype and cast as ``"master"`` at the start (a
    recipe without master weights starts from the rounded weights, as ``model.half()``).
    """

    def __init__(self, model: Model, recipe: Recipe | str, optimizer: Optimizer, task: Dataset | None = None, *,
                 loss: Any = None, loss_scaler: DynamicLossScaler | StaticLossScaler | None = None,
                 batch_size: int | None = None, seed: int = 0, backend: str = "auto") -> None:
        if not isinstance(model, Model):
            raise TypeError(f"model={model!r} must be a reference Model (MLP, TransformerClassifier)")
        self.model = model
        self.recipe = get_recipe(recipe)
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"optimizer={optimizer!r} must be an Optimizer (SGD, Adam, AdamW)")
        if {id(p) for p in optimizer.params} != {id(p) for p in model.parameters()}:
            raise ValueError("optimizer must be built over exactly model.parameters()")
        self.optimizer = optimizer
        if task is not None and not isinstance(task, Dataset):
            raise TypeError(f"task={task!r} must be a Dataset (see precisionlab.reference.get_task)")
        self.task = task
        if task is not None:
            features = _input_features(model)
            if features is not None and features != task.n_features:
                raise ValueError(f"task {task.name!r} has {task.n_features} input features but the model's first "
                                 f"layer takes {features}")
        if loss is None:
            loss = SoftmaxCrossEntropy() if task is None or task.n_classes is not None else MSELoss()
        self.loss = get_loss(loss) if isinstance(loss, str) else loss
        if not isinstance(self.loss, (SoftmaxCrossEntropy, MSELoss)):
            raise TypeError(f"loss={loss!r} must be 'cross_entropy', 'mse' or a loss object")
        if loss_scaler is None:
            loss_scaler = self.recipe.loss_scaler()
        if not isinstance(loss_scaler, (DynamicLossScaler, StaticLossScaler)):
            raise TypeError(f"loss_scaler={loss_scaler!r} must be a DynamicLossScaler or StaticLossScaler")
        self.scaler = loss_scaler
        self.batch_size = None if batch_size is None else _positive_int("batch_size", batch_size)
        if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)):
            raise TypeError(f"seed={seed!r} must be an int")
        self.seed = int(seed)
        self.ops = PolicyOps(self.recipe.policy, backend=backend)
        self.steps_done = 0
        self._batches: Any = None
        self._epoch = 0
        for p in model.parameters():
            p.grad = None
            p.master = np.asarray(self.ops.cast(np.asarray(p.master, dtype=self.ops.master_dtype), "master", p.name),
                                  dtype=self.ops.master_dtype)

    # ---- one step ----------------------------------------------------------------------------
    def step(self, x: np.ndarray, y: np.ndarray) -> StepLog:
        """One training step on the batch ``(x, y)``."""
        ops, model = self.ops, self.model
        ops.training = True
        model.zero_grad()
        with np.errstate(over="ignore", invalid="ignore"):  # overflow to Inf/NaN is counted and handled
            loss = self.loss.forward(model.forward(x, ops), y, ops)
            scale = float(self.scaler.scale)
            model.backward(self.loss.backward(ops, grad=scale), ops, input_grad=False)
        nonfinite = self._unscale(scale)
        skipped = bool(self.scaler.update(nonfinite))
        if not skipped:
            self.optimizer.step(ops)
        stats = ops.end_step()
        log = StepLog(self.steps_done, float(loss), scale, skipped, nonfinite, stats.grad_values,
                      stats.grad_underflow, stats.grad_overflow, stats.amax)
        self.steps_done += 1
        return log

    def _unscale(self, scale: float) -> bool:
        """``grad *= fl(1 / scale)`` in the master dtype (GradScaler.unscale_); True when a
        gradient holds Inf or NaN."""
        dt = self.ops.master_dtype
        inv = dt.type(1.0 / scale)
        nonfinite = False
        for p in self.model.parameters():
            if p.grad is None:
                continue
            g = np.asarray(p.grad, dtype=dt)
            if scale != 1.0:
                with np.errstate(over="ignore", invalid="ignore"):
                    g = g * inv
            nonfinite = nonfinite or not bool(np.all(np.isfinite(g)))
            p.grad = g
        return nonfinite

    # ---- runs ----------------------------------------------------------------------------------
    def _next_batch(self) -> tuple[np.ndarray, np.ndarray]:
        task = self.task
        if self.batch_size is None:
            return task.x_train, task.y_train
        while True:
            if self._batches is None:
                self._batches = task.batches(self.batch_size, seed=self.seed + self._epoch)
                self._epoch += 1
            try:
                return next(self._batches)
            except StopIteration:
                self._batches = None

    def run(self, steps: int, *, progress: Callable[[int, int, StepLog], None] | None = None,
            evaluate: bool = True) -> TrainResult:
        """Train ``steps`` steps on the task; ``progress(i, steps, log)`` is called after each."""
        steps = _positive_int("steps", steps)
        if self.task is None:
            raise ValueError("run() needs a task; give Trainer(..., task=...) or call step(x, y) yourself")
        start = time.perf_counter()
        log = []
        for i in range(steps):
            log.append(self.step(*self._next_batch()))
            if progress is not None:
                progress(i + 1, steps, log[-1])
        seconds = time.perf_counter() - start
        test_loss, test_accuracy = self.evaluate() if evaluate else (None, None)
        return TrainResult(self.recipe.name, log, self.model.state_dict(), test_loss, test_accuracy, seconds)

    def evaluate(self, x: np.ndarray | None = None, y: np.ndarray | None = None) -> tuple[float, float | None]:
        """Loss and accuracy (None for regression) on ``(x, y)``, by default the task's test set,
        with the policy's forward pass (FP8 scales used, not updated)."""
        if x is None:
            if self.task is None:
                raise ValueError("evaluate() needs (x, y) or a task")
            x, y = self.task.x_test, self.task.y_test
        self.ops.training = False
        try:
            out = self.model.forward(x, self.ops)
            loss = float(self.loss.forward(out, y, self.ops))
        finally:
            self.ops.training = True
        accuracy = None
        if isinstance(self.loss, SoftmaxCrossEntropy):
            accuracy = float(np.mean(np.argmax(out, axis=1) == np.asarray(y)))
        return loss, accuracy


# ---- conveniences for the CLI and experiments ---------------------------------------------------

def _build_model(model: str, task: Dataset, hidden: int, seed: int) -> Model:
    if task.n_classes is None:
        raise ValueError(f"task {task.name!r} is a regression task; the built-in models classify "
                         "(use Trainer with MSE yourself)")
    if model == "mlp":
        if task.x_train.ndim != 2:
            raise ValueError(f"model='mlp' needs (samples, features) inputs; task {task.name!r} has shape "
                             f"{task.x_train.shape} (use model='transformer')")
        return MLP([task.n_features, hidden, task.n_classes], seed=seed, dtype=np.float32)
    if model == "transformer":
        if task.x_train.ndim != 3:
            raise ValueError(f"model='transformer' needs (samples, seq, features) inputs; task {task.name!r} has "
                             f"shape {task.x_train.shape} (use task='sequence')")
        return TransformerClassifier(task.n_features, hidden, task.n_classes, seed=seed, dtype=np.float32)
    raise ValueError(f"model={model!r} is not a model; allowed: {', '.join(MODEL_TASKS)}")


def train(recipe: Recipe | str, *, model: str = "mlp", task: str | Dataset | None = None, steps: int = 50,
          optimizer: str = "sgd", lr: float = 0.1, batch_size: int | None = None, hidden: int = 32, seed: int = 0,
          task_args: dict[str, Any] | None = None, backend: str = "auto",
          progress: Callable[[int, int, StepLog], None] | None = None) -> TrainResult:
    """Build a model (``"mlp"``: one hidden layer of ``hidden`` units; ``"transformer"``: ``d_model =
    hidden``) and a task (default: ``"blobs"`` for the MLP, ``"sequence"`` for the transformer, built with
    ``seed`` and ``task_args``), train ``steps`` steps with ``recipe`` and return the result.  The same
    seed gives every recipe the same initial weights and batches."""
    if not isinstance(lr, (int, float, np.integer, np.floating)) or isinstance(lr, bool) or not math.isfinite(lr):
        raise ValueError(f"lr={lr!r} must be a finite number")
    if model not in MODEL_TASKS:
        raise ValueError(f"model={model!r} is not a model; allowed: {', '.join(MODEL_TASKS)}")
    if isinstance(task, Dataset):
        data = task
    else:
        name = task or MODEL_TASKS[model]
        try:
            data = get_task(name, **{"seed": seed, **(task_args or {})})
        except TypeError as exc:
            raise ValueError(f"task {name!r} does not take the arguments {task_args}: {exc}") from None
    net = _build_model(model, data, _positive_int("hidden", hidden), seed)
    opt = get_optimizer(optimizer, net.parameters(), lr=lr)
    trainer = Trainer(net, recipe, opt, data, batch_size=batch_size, seed=seed, backend=backend)
    return trainer.run(steps, progress=progress)


def compare_recipes(names: Sequence[str], *, reference: str = "fp32",
                    progress: Callable[[str, int, int, StepLog], None] | None = None,
                    **kwargs: Any) -> tuple[list[TrainResult], TrainResult | None]:
    """Train every recipe of ``names`` with the same model, task, weights and batches
    (:func:`train`'s keywords) and the ``reference`` run (reused when it is among ``names``);
    returns the results in order and the reference result."""
    names = [get_recipe(n).name for n in names]
    if not names:
        raise ValueError("recipes: give at least one recipe name")
    results: dict[str, TrainResult] = {}
    order = names + ([reference] if reference and reference not in names else [])
    for name in order:
        report = None if progress is None else (lambda i, n, log, name=name: progress(name, i, n, log))
        results[name] = train(name, progress=report, **kwargs)
    return [results[n] for n in names], results.get(reference)


def plot_losses(results: Sequence[TrainResult], path: str, *, title: str | None = None) -> None:
    """Loss curves of ``results`` (skipped steps marked) into an image file (matplotlib needed)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError("plotting needs matplotlib: pip install 'precisionlab[plot]'") from exc
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for r in results:
        steps = np.arange(1, len(r.log) + 1)
        line, = ax.plot(steps, r.losses, label=r.recipe, linewidth=1.4)
        if r.skipped.any():
            ax.plot(steps[r.skipped], r.losses[r.skipped], "x", color=line.get_color(), markersize=5)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_yscale("log")
    ax.set_title(title or "precisionlab error train (x: skipped step)")
    ax.legend(fontsize=8)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
