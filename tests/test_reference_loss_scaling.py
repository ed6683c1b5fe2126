"""Loss scaling: the PyTorch, Apex and Keras rules step for step.

Each oracle below transcribes the update function of its source (cited in
reference/loss_scaling.py), with that source's arithmetic precision.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from precisionlab.reference import (
    LOSS_SCALER_PRESETS,
    DynamicLossScaler,
    StaticLossScaler,
    make_loss_scaler,
    no_loss_scaling,
)

f32 = np.float32


class TorchGradScaler:
    """aten _amp_update_scale_ (cpu/cuda kernels): float32 scale, int tracker."""

    def __init__(self, init=2.0**16, growth=2.0, backoff=0.5, interval=2000):
        self.scale, self.tracker = float(f32(init)), 0
        self.growth, self.backoff, self.interval = growth, backoff, interval

    def update(self, found_inf):
        if found_inf:
            self.scale = float(f32(self.scale * self.backoff))
            self.tracker = 0
        else:
            successful = self.tracker + 1
            if successful == self.interval:
                with np.errstate(over="ignore"):
                    new_scale = float(f32(self.scale * self.growth))
                if math.isfinite(new_scale):
                    self.scale = new_scale
                self.tracker = 0
            else:
                self.tracker = successful
        return found_inf  # GradScaler.step skips the optimizer step when found_inf


class ApexLossScaler:
    """apex/amp/scaler.py LossScaler.update_scale (dynamic): Python floats."""

    def __init__(self, init=2.0**16, window=2000, min_loss_scale=None, max_loss_scale=2.0**24):
        self._loss_scale, self._scale_seq_len = init, window
        self._min_loss_scale, self._max_loss_scale = min_loss_scale, max_loss_scale
        self._unskipped = 0

    def update(self, has_overflow):
        if has_overflow:
            should_skip = True
            if self._min_loss_scale:
                self._loss_scale = max(self._min_loss_scale, self._loss_scale / 2.0)
            else:
                self._loss_scale = self._loss_scale / 2.0
            self._unskipped = 0
        else:
            should_skip = False
            self._unskipped += 1
        if self._unskipped == self._scale_seq_len:
            self._loss_scale = min(self._max_loss_scale, self._loss_scale * 2.0)
            self._unskipped = 0
        return should_skip

    @property
    def scale(self):
        return self._loss_scale


class Keras3LossScaleOptimizer:
    """keras/src/optimizers/loss_scale_optimizer.py: float32 dynamic_scale, int step_counter."""

    def __init__(self, initial_scale=2.0**15, dynamic_growth_steps=2000):
        self.dynamic_scale, self.step_counter, self.steps = f32(initial_scale), 0, dynamic_growth_steps

    def update(self, nonfinite):
        with np.errstate(over="ignore"):
            if nonfinite:
                self.step_counter = 0
                self.dynamic_scale = f32(self.dynamic_scale / f32(2.0))
            elif self.step_counter == self.steps - 1:
                self.step_counter = 0
                self.dynamic_scale = f32(self.dynamic_scale * f32(2.0))
            else:
                self.step_counter += 1
        return nonfinite

    @property
    def scale(self):
        return float(self.dynamic_scale)


class TFKerasDynamicLossScale:
    """tf.keras mixed_precision _DynamicLossScaleState.update: float32, backoff floored at 1."""

    def __init__(self, initial=2.0**15, growth_steps=2000, multiplier=2.0):
        self.scale, self.counter, self.growth_steps, self.multiplier = float(f32(initial)), 0, growth_steps, multiplier

    def update(self, nonfinite):
        if not nonfinite:
            if self.counter + 1 >= self.growth_steps:
                with np.errstate(over="ignore"):
                    new = float(f32(self.scale * self.multiplier))
                if math.isfinite(new):  # _assign_if_finite
                    self.scale = new
                self.counter = 0
            else:
                self.counter += 1
        else:
            self.scale = max(float(f32(self.scale / self.multiplier)), 1.0)
            self.counter = 0
        return nonfinite


SCRIPT = ["ok", "inf", "ok", "ok", "ok", "nan"] + ["ok"] * 6 + ["-inf"] + ["ok"] * 4
#: The trainer issue's expected trajectory for init 1024, interval 3: the scale *after*
#: each step's update, i.e. GradScaler.get_scale() read after scaler.update().
AFTER = [1024, 512, 512, 512, 1024, 512, 512, 512, 1024, 1024, 1024, 2048, 1024, 1024, 1024, 2048, 2048]


def test_torch_preset_reproduces_the_scripted_trajectory():
    scaler = DynamicLossScaler.preset("torch", init_scale=1024, growth_interval=3)
    used, after, skipped = [], [], []
    for outcome in SCRIPT:
        used.append(scaler.scale)  # the scale this step's loss is multiplied by
        skipped.append(scaler.update(outcome != "ok"))
        after.append(scaler.scale)  # the scale of the next step
    assert after == AFTER
    assert used == [1024] + AFTER[:-1]
    assert skipped == [o != "ok" for o in SCRIPT]
    assert scaler.growth_tracker == 1


def test_torch_never_grows_to_a_non_finite_scale():
    scaler = DynamicLossScaler.preset("torch", init_scale=2.0**126, growth_interval=1)
    for _ in range(5):
        scaler.update(False)
    assert scaler.scale == 2.0**127 and scaler.growth_tracker == 0
    # float32 rounding: a scale that would round past FLT_MAX also stays
    near = DynamicLossScaler.preset("torch", init_scale=3e38, growth_factor=1.5, growth_interval=1)
    near.update(False)
    assert near.scale == float(f32(3e38))


def test_preset_constants():
    torch, apex, keras = (LOSS_SCALER_PRESETS[k] for k in ("torch", "apex", "keras"))
    assert (torch.init_scale, torch.growth_factor, torch.backoff_factor) == (2.0**16, 2, 0.5)
    assert (torch.growth_interval, torch.max_scale, torch.min_scale) == (2000, None, None)
    assert (apex.init_scale, apex.growth_interval, apex.max_scale, apex.min_scale) == (2.0**16, 2000, 2.0**24, None)
    assert (keras.init_scale, keras.growth_interval, keras.max_scale, keras.min_scale) == (2.0**15, 2000, None, None)
    assert DynamicLossScaler.preset("torch").scale == 65536.0 and DynamicLossScaler.preset("keras").scale == 32768.0


steps = st.lists(st.booleans(), max_size=120)


@settings(max_examples=150, deadline=None)
@given(steps, st.sampled_from([1, 2, 3, 7]), st.sampled_from([1.0, 3.0, 2.0**10, 2.0**120, 1e-30]))
def test_torch_preset_matches_gradscaler_kernel(outcomes, interval, init):
    ours = DynamicLossScaler.preset("torch", init_scale=init, growth_interval=interval)
    ref = TorchGradScaler(init, interval=interval)
    for nonfinite in outcomes:
        assert ours.update(nonfinite) == ref.update(nonfinite)
        assert ours.scale == ref.scale and ours.growth_tracker == ref.tracker


@settings(max_examples=150, deadline=None)
@given(steps, st.sampled_from([1, 2, 5]), st.sampled_from([2.0**16, 2.0**23, 3.0]), st.sampled_from([None, 1.0, 64.0]))
def test_apex_preset_matches_amp_scaler(outcomes, window, init, min_scale):
    ours = DynamicLossScaler.preset("apex", init_scale=init, growth_interval=window, min_scale=min_scale)
    ref = ApexLossScaler(init, window, min_scale)
    for nonfinite in outcomes:
        assert ours.update(nonfinite) == ref.update(nonfinite)
        assert ours.scale == ref.scale


@settings(max_examples=150, deadline=None)
@given(steps, st.sampled_from([1, 2, 4]), st.sampled_from([2.0**15, 2.0**126, 2.0**-140]))
def test_keras_preset_matches_loss_scale_optimizer(outcomes, growth_steps, init):
    ours = DynamicLossScaler.preset("keras", init_scale=init, growth_interval=growth_steps)
    ref = Keras3LossScaleOptimizer(init, growth_steps)
    for nonfinite in outcomes:
        assert ours.update(nonfinite) == ref.update(nonfinite)
        assert ours.scale == ref.scale


@settings(max_examples=100, deadline=None)
@given(steps, st.sampled_from([1, 3]), st.sampled_from([2.0**15, 4.0, 2.0**126]))
def test_tf_keras_preset_matches_dynamic_loss_scale(outcomes, growth_steps, init):
    ours = DynamicLossScaler.preset("tf_keras", init_scale=init, growth_interval=growth_steps)
    ref = TFKerasDynamicLossScale(init, growth_steps)
    for nonfinite in outcomes:
        assert ours.update(nonfinite) == ref.update(nonfinite)
        assert ours.scale == ref.scale


def test_the_rules_differ_where_their_sources_do():
    # Apex caps growth at 2^24; torch does not
    apex = DynamicLossScaler.preset("apex", init_scale=2.0**24, growth_interval=1)
    torch = DynamicLossScaler.preset("torch", init_scale=2.0**24, growth_interval=1)
    apex.update(False)
    torch.update(False)
    assert apex.scale == 2.0**24 and torch.scale == 2.0**25
    # Keras 3 has no finiteness check: its float32 scale can overflow to Inf
    keras = DynamicLossScaler.preset("keras", init_scale=2.0**127, growth_interval=1)
    keras.update(False)
    assert keras.scale == math.inf
    # TF-Keras never backs off below 1; Apex keeps an optional minimum; torch halves freely
    for name, floor in (("tf_keras", 1.0), ("torch", 2.0**-10)):
        s = DynamicLossScaler.preset(name, init_scale=1.0)
        for _ in range(10):
            s.update(True)
        assert s.scale == floor
    s = DynamicLossScaler.preset("apex", init_scale=8.0, min_scale=2.0)
    for _ in range(5):
        assert s.update(True)
    assert s.scale == 2.0
    # Apex's scale is a Python float: 3 * 0.5^k is exact in both, but 1e-30 is not a float32
    assert DynamicLossScaler.preset("apex", init_scale=1e-30).scale == 1e-30
    assert DynamicLossScaler.preset("torch", init_scale=1e-30).scale == float(f32(1e-30))


def test_static_and_no_scaling():
    s = StaticLossScaler(128.0)
    assert s.scale == 128 and s.update(True) is False and s.update(False) is False and s.scale == 128
    assert StaticLossScaler(128.0, skip_nonfinite=True).update(True) is True
    none = no_loss_scaling()
    assert none.scale == 1 and none.update(True) is False
    assert make_loss_scaler("none").scale == 1 and make_loss_scaler("static", scale=8.0).scale == 8
    assert make_loss_scaler("apex").rule.max_scale == 2.0**24
    assert make_loss_scaler("dynamic", init_scale=4.0, growth_interval=1).scale == 4


@pytest.mark.parametrize("call, exc, words", [
    (lambda: DynamicLossScaler.preset("amp"), ValueError, "preset='amp'"),
    (lambda: DynamicLossScaler.preset("torch", interval=3), TypeError, "growth_interval"),
    (lambda: DynamicLossScaler(init_scale=math.inf), ValueError, "init_scale=inf"),
    (lambda: DynamicLossScaler(init_scale=0.0), ValueError, "init_scale=0.0"),
    (lambda: DynamicLossScaler(growth_factor=1.0), ValueError, "growth_factor=1.0"),
    (lambda: DynamicLossScaler(backoff_factor=1.5), ValueError, "backoff_factor=1.5"),
    (lambda: DynamicLossScaler(growth_interval=0), ValueError, "growth_interval=0"),
    (lambda: DynamicLossScaler(growth_interval=2.5), TypeError, "growth_interval=2.5"),
    (lambda: DynamicLossScaler(max_scale=1.0, min_scale=2.0), ValueError, "min_scale=2.0"),
    (lambda: DynamicLossScaler(scale_dtype="fp16"), ValueError, "scale_dtype='fp16'"),
    (lambda: DynamicLossScaler().update(1), TypeError, "found_nonfinite=1"),
    (lambda: StaticLossScaler(-1.0), ValueError, "scale=-1.0"),
    (lambda: make_loss_scaler("adaptive"), ValueError, "loss_scaling='adaptive'"),
    (lambda: make_loss_scaler("none", scale=2.0), TypeError, "'none'"),
])
def test_bad_input_is_named(call, exc, words):
    with pytest.raises(exc) as info:
        call()
    assert words in str(info.value)
