"""The Trainer: loss scaling and skipped steps, gradient underflow (pure fp16 against AMP and bf16),
FP8 training accuracy, the per-step log, determinism, the conveniences and bad input.

Sizes are tiny: every GEMM goes through pl.matmul, whose NumPy reference kernel is exact but slow."""

from __future__ import annotations

import math

import numpy as np
import pytest
from precisionlab.reference import (
    MLP,
    SGD,
    DynamicLossScaler,
    MSELoss,
    Trainer,
    TransformerClassifier,
    compare_recipes,
    gaussian_blobs,
    get_recipe,
    plot_losses,
    sequence_task,
    teacher_regression,
    train,
)

TASK = gaussian_blobs(16, 4, 3, seed=1)          # 12 train, 4 test


def mlp(seed=0, sizes=(4, 8, 3)):
    return MLP(list(sizes), seed=seed, dtype=np.float32)


def small_gradient_run(recipe, steps=3):
    """MSE regression whose output gradients are ~1e-4 and whose hidden-layer gradients are ~1e-7:
    below fp16's normal range (2^-14), partly below its smallest subnormal (2^-24)."""
    task = teacher_regression(16, 4, 1, output_scale=1e-3, seed=2)
    model = MLP([4, 8, 1], seed=3, dtype=np.float32)
    state = model.state_dict()
    state["fc2.weight"] = state["fc2.weight"] * np.float32(1e-3)
    state["fc2.bias"] = state["fc2.bias"] * np.float32(1e-3)
    model.load_state_dict(state)
    trainer = Trainer(model, recipe, SGD(model.parameters(), lr=0.5), task, loss=MSELoss())
    start = model.state_dict()  # after the trainer's cast to the master format
    result = trainer.run(steps)
    changed = {n: int(np.sum(result.state[n] != start[n])) for n in start}
    return result, changed


def test_pure_fp16_loses_small_gradients_that_amp_keeps():
    pure, pure_changed = small_gradient_run("pure_fp16")
    amp, amp_changed = small_gradient_run("torch_amp_fp16")
    lost = sum(s.grad_underflow for s in pure.log)
    kept = sum(s.grad_underflow for s in amp.log)
    assert lost > 20 and kept == 0, (lost, kept)
    assert pure.underflow_fraction > 0.1 and amp.underflow_fraction == 0
    # the first layer's updates: none survive in fp16 weights; AMP's fp32 masters take every one
    # (29 of the 32 weights have a non-zero gradient: 3 belong to inputs of inactive ReLUs)
    assert pure_changed["fc1.weight"] == 0 and amp_changed["fc1.weight"] == 29, (pure_changed, amp_changed)
    assert amp.scales.tolist() == [2.0 ** 16] * 3 and amp.skipped_steps == 0
    assert all(s.scale == 1.0 for s in pure.log)


def test_bf16_needs_no_loss_scaling():
    bf16, changed = small_gradient_run("torch_amp_bf16")
    assert sum(s.grad_underflow for s in bf16.log) == 0 and changed["fc1.weight"] == 29
    assert bf16.scales.tolist() == [1.0] * 3 and bf16.skipped_steps == 0
    fp32, _ = small_gradient_run("fp32")
    assert np.allclose(bf16.losses, fp32.losses, rtol=0.05)


def test_overflowing_steps_are_skipped_and_the_scale_backs_off():
    model = mlp(4)
    start = model.state_dict()
    recipe = get_recipe("torch_amp_fp16")
    trainer = Trainer(model, recipe, SGD(model.parameters(), lr=0.1), TASK,
                      loss_scaler=recipe.loss_scaler(init_scale=2.0 ** 20))
    log = [trainer.step(TASK.x_train, TASK.y_train) for _ in range(5)]
    assert [s.skipped for s in log] == [True, True, True, False, False]
    assert [s.scale for s in log] == [2.0 ** 20, 2.0 ** 19, 2.0 ** 18, 2.0 ** 17, 2.0 ** 17]
    for s in log[:3]:
        assert s.nonfinite and s.grad_overflow > 0   # fp16 gradients overflowed to Inf
    assert log[3].grad_overflow == 0 and not log[3].nonfinite
    assert log[0].loss == log[1].loss == log[2].loss == log[3].loss != log[4].loss  # skips leave the weights
    assert any(not np.array_equal(start[n], w) for n, w in trainer.model.state_dict().items())
    replay = DynamicLossScaler.preset("torch", init_scale=2.0 ** 20)
    for s in log:
        assert s.scale == replay.scale
        replay.update(s.nonfinite)


def test_fp8_delayed_trains_to_within_two_percent_of_fp32():
    kw = dict(model="mlp", steps=15, hidden=8, batch_size=24, lr=0.5, task="blobs",
              task_args=dict(n_samples=240, n_features=4, n_classes=3, test_fraction=0.5))
    fp32, fp8 = train("fp32", **kw), train("fp8_delayed", **kw)
    assert fp32.test_accuracy > 0.85, fp32.test_accuracy
    assert abs(fp8.test_accuracy - fp32.test_accuracy) <= 0.02, (fp8.test_accuracy, fp32.test_accuracy)
    assert fp8.losses[-1] < 0.5 * fp8.losses[0]
    keys = set(fp8.log[-1].amax)
    assert {"fc1.input", "fc1.weight", "fc1.grad_output", "fc2.input", "fc2.weight", "fc2.grad_output"} <= keys


def test_runs_are_deterministic_and_minibatches_cycle():
    a = train("torch_amp_bf16", steps=3, hidden=4, batch_size=5, task=TASK, seed=3)
    b = train("torch_amp_bf16", steps=3, hidden=4, batch_size=5, task=TASK, seed=3)
    assert a.log == b.log and all(np.array_equal(a.state[k], b.state[k]) for k in a.state)
    c = train("torch_amp_bf16", steps=3, hidden=4, batch_size=5, task=TASK, seed=4)
    assert a.losses.tolist() != c.losses.tolist()
    full = train("torch_amp_bf16", steps=1, hidden=4, task=TASK, seed=3)
    assert full.log[0].grad_values > a.log[0].grad_values  # 12 samples against 5


def test_masters_start_in_the_policys_format():
    model = mlp(5)
    Trainer(model, "pure_fp16", SGD(model.parameters(), lr=0.1), TASK)
    import precisionlab as pl
    for p in model.parameters():
        assert p.master.dtype == np.float32 and np.array_equal(pl.round(p.master, "fp16"), p.master)


def test_the_transformer_trains_under_fp8_with_attention_in_fp32():
    task = sequence_task(6, seq_len=3, n_features=3, n_classes=2, seed=5)
    model = TransformerClassifier(3, 4, 2, d_ff=4, seed=6, dtype=np.float32)
    trainer = Trainer(model, "fp8_delayed", SGD(model.parameters(), lr=0.1), task)
    log = trainer.step(task.x_train, task.y_train)
    assert math.isfinite(log.loss) and not log.skipped
    sites = {(site, t) for site, t in trainer.ops.delayed_scalers}
    assert ("block.attn.q", "input") in sites and ("head", "grad_output") in sites
    assert not any(s.endswith((".scores", ".context")) for s, _ in sites)
    assert "block.attn.scores.input" in log.amax  # logged, though not quantised


def test_compare_recipes_runs_the_reference_once():
    results, ref = compare_recipes(["torch_amp_bf16"], steps=2, hidden=4, task=TASK)
    assert [r.recipe for r in results] == ["torch_amp_bf16"] and ref.recipe == "fp32"
    assert results[0].divergence(ref) < 0.05 and ref.divergence(ref) == 0
    results, ref = compare_recipes(["fp32", "torch_amp_bf16"], steps=1, hidden=4, task=TASK)
    assert ref is results[0]


def test_plot_needs_matplotlib(tmp_path):
    result = train("fp32", steps=1, hidden=4, task=TASK)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match=r"pip install 'precisionlab\[plot\]'"):
            plot_losses([result], str(tmp_path / "x.png"))
    else:
        plot_losses([result], str(tmp_path / "x.png"))
        assert (tmp_path / "x.png").stat().st_size > 1000


# ---- bad input ---------------------------------------------------------------------------------

def bad_calls():
    model = mlp()
    opt = SGD(model.parameters(), lr=0.1)
    other = mlp()
    return [
        (lambda: Trainer(model, "amp_o3", opt, TASK), ValueError, "recipe='amp_o3' is not a recipe"),
        (lambda: Trainer(model, "fp32", SGD(other.parameters(), lr=0.1), TASK), ValueError,
         "optimizer must be built over exactly model.parameters()"),
        (lambda: Trainer(model, "fp32", opt, gaussian_blobs(16, 5, 3)), ValueError,
         "task 'blobs' has 5 input features but the model's first layer takes 4"),
        (lambda: Trainer("mlp", "fp32", opt, TASK), TypeError, "model='mlp' must be a reference Model"),
        (lambda: Trainer(model, "fp32", "sgd", TASK), TypeError, "optimizer='sgd' must be an Optimizer"),
        (lambda: Trainer(model, "fp32", opt, TASK, loss="hinge"), ValueError, "loss='hinge' is not a loss"),
        (lambda: Trainer(model, "fp32", opt, TASK, batch_size=0), ValueError, "batch_size=0 must be >= 1"),
        (lambda: Trainer(model, "fp32", opt, (TASK.x_train, TASK.y_train)), TypeError, "must be a Dataset"),
        (lambda: Trainer(model, "fp32", opt, TASK).run(0), ValueError, "steps=0 must be >= 1"),
        (lambda: Trainer(model, "fp32", opt).run(2), ValueError, "run() needs a task"),
        (lambda: Trainer(model, "fp32", opt).step(np.ones((3, 5), np.float32), np.zeros(3, np.int64)),
         ValueError, "expected last dimension in_features=4"),
        (lambda: Trainer(model, "fp32", opt).step(TASK.x_train, TASK.y_train[:5]), ValueError,
         "labels have shape (5,)"),
        (lambda: train("fp32", lr=math.nan, steps=1, task=TASK), ValueError, "lr=nan must be a finite number"),
        (lambda: train("fp32", lr=math.inf, steps=1, task=TASK), ValueError, "lr=inf must be a finite number"),
        (lambda: SGD(model.parameters(), lr=-math.inf), ValueError, "lr=-inf must be finite"),
        (lambda: train("fp32", model="cnn", steps=1), ValueError, "model='cnn' is not a model; allowed: mlp"),
        (lambda: train("fp32", model="transformer", steps=1, task=TASK), ValueError,
         "model='transformer' needs (samples, seq, features) inputs"),
        (lambda: train("fp32", steps=1, task="regression"), ValueError, "is a regression task"),
        (lambda: train("fp32", steps=1, task="mnist"), ValueError, "task='mnist' is not a task"),
        (lambda: train("fp32", steps=1, task="digits", task_args={"n_samples": 5}), ValueError,
         "task 'digits' does not take the arguments {'n_samples': 5}"),
    ]


@pytest.mark.parametrize("index", range(len(bad_calls())))
def test_bad_input_is_named(index):
    call, exc, words = bad_calls()[index]
    with pytest.raises(exc) as info:
        call()
    assert words in str(info.value)
