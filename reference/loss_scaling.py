"""Loss scaling: none, static, dynamic (DESIGN §8).

The protocol a trainer follows each step::

    scaled_loss = loss * scaler.scale            # the scale *used* this step
    ... backward, unscale the gradients by 1 / scaler.scale ...
    skipped = scaler.update(found_nonfinite)     # True: do not apply this step
    # scaler.scale is now the scale of the next step

:class:`DynamicLossScaler` implements one parametrized rule that covers the three
systems users know; :meth:`DynamicLossScaler.preset` gives each with its exact
constants, arithmetic precision and update order, read from their sources:

* ``"torch"`` -- PyTorch ``GradScaler`` (``torch/amp/grad_scaler.py``;
  ``aten/src/ATen/native/cpu/AmpGradScalerKernels.cpp`` and ``cuda/AmpKernels.cu``,
  ``_amp_update_scale_``): a float32 scale, init 2^16, growth 2, backoff 0.5,
  interval 2000.  On Inf/NaN: ``scale *= backoff; tracker = 0``.  Otherwise
  ``successful = tracker + 1``; if ``successful == interval``:
  ``new = float(scale * growth)``, kept only ``if isfinite(new)`` ("Do not grow the
  scale past fp32 bounds to inf"), and ``tracker = 0``; else ``tracker = successful``.
* ``"apex"`` -- NVIDIA Apex AMP ``LossScaler`` (``apex/amp/scaler.py``,
  ``update_scale``): a Python float, init 2^16, ``scale_window`` 2000,
  ``max_loss_scale`` 2^24, ``min_loss_scale`` None.  On overflow:
  ``scale = max(min_loss_scale, scale / 2)`` when a minimum is set (truthy), else
  ``scale / 2``; ``unskipped = 0``.  Otherwise ``unskipped += 1``.  Then, in both
  cases, ``if unskipped == scale_window: scale = min(max_loss_scale, scale * 2);
  unskipped = 0``.  So the window counts clean steps since the last overflow or
  growth, like torch's tracker.
* ``"keras"`` -- Keras 3 ``LossScaleOptimizer`` (``keras/src/optimizers/
  loss_scale_optimizer.py``): a float32 ``dynamic_scale``, ``initial_scale`` 2^15,
  ``dynamic_growth_steps`` 2000.  Finite gradients: ``if step_counter ==
  growth_steps - 1: step_counter = 0; scale *= 2`` else ``step_counter += 1``;
  non-finite: ``step_counter = 0; scale /= 2``.  No minimum, no maximum and no
  finiteness check (the float32 scale could grow to Inf).
* ``"tf_keras"`` -- TF2 / Keras 2 ``mixed_precision.LossScaleOptimizer``
  (``tensorflow/python/keras/mixed_precision/loss_scale_optimizer.py``,
  ``_DynamicLossScaleState.update``): as Keras 3 but the backoff is
  ``max(scale / 2, 1)`` and growth is ``_assign_if_finite``.

Static scaling (:class:`StaticLossScaler`) never changes its scale and, like Apex with
a fixed ``loss_scale``, does not skip steps unless asked to; no scaling is a static
scale of 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

__all__ = ["DynamicLossScaler", "StaticLossScaler", "LossScalingRule", "LOSS_SCALER_PRESETS", "no_loss_scaling",
           "make_loss_scaler", "SCALE_DTYPES"]

SCALE_DTYPES = ("fp32", "fp64")


def _real(arg: str, value: Any) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{arg}={value!r} must be a real number")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{arg}={value!r} must be finite")
    return v


@dataclass(frozen=True)
class LossScalingRule:
    """The constants and semantics of one dynamic loss-scaling rule (see the module
    docstring for the sources of the presets)."""

    init_scale: float = 2.0 ** 16
    growth_factor: float = 2.0
    backoff_factor: float = 0.5
    growth_interval: int = 2000
    max_scale: float | None = None
    min_scale: float | None = None
    #: 'fp32': the scale is a float32 and every product is rounded to float32 (torch, Keras);
    #: 'fp64': a Python float (Apex).
    scale_dtype: str = "fp32"
    #: torch and TF-Keras refuse a growth whose result is not finite; Keras 3 does not check.
    skip_nonfinite_growth: bool = True
    name: str = "custom"

    def __post_init__(self) -> None:
        init = _real("init_scale", self.init_scale)
        if init <= 0:
            raise ValueError(f"init_scale={self.init_scale!r} must be > 0")
        if _real("growth_factor", self.growth_factor) <= 1:
            raise ValueError(f"growth_factor={self.growth_factor!r} must be > 1")
        if not 0 < _real("backoff_factor", self.backoff_factor) < 1:
            raise ValueError(f"backoff_factor={self.backoff_factor!r} must be in (0, 1)")
        gi = self.growth_interval
        if isinstance(gi, (bool, np.bool_)) or not isinstance(gi, (int, np.integer)):
            raise TypeError(f"growth_interval={gi!r} must be an int")
        if gi < 1:
            raise ValueError(f"growth_interval={gi} must be >= 1")
        for arg in ("max_scale", "min_scale"):
            v = getattr(self, arg)
            if v is not None and _real(arg, v) <= 0:
                raise ValueError(f"{arg}={v!r} must be > 0 or None")
        if self.max_scale is not None and self.min_scale is not None and self.min_scale > self.max_scale:
            raise ValueError(f"min_scale={self.min_scale!r} exceeds max_scale={self.max_scale!r}")
        if self.scale_dtype not in SCALE_DTYPES:
            raise ValueError(f"scale_dtype={self.scale_dtype!r} not allowed; choose one of {SCALE_DTYPES}")
        if not isinstance(self.skip_nonfinite_growth, bool):
            raise TypeError(f"skip_nonfinite_growth={self.skip_nonfinite_growth!r} must be True or False")


#: The presets of :meth:`DynamicLossScaler.preset`.
LOSS_SCALER_PRESETS: dict[str, LossScalingRule] = {
    "torch": LossScalingRule(2.0 ** 16, 2.0, 0.5, 2000, None, None, "fp32", True, "torch"),
    "apex": LossScalingRule(2.0 ** 16, 2.0, 0.5, 2000, 2.0 ** 24, None, "fp64", True, "apex"),
    "keras": LossScalingRule(2.0 ** 15, 2.0, 0.5, 2000, None, None, "fp32", False, "keras"),
    "tf_keras": LossScalingRule(2.0 ** 15, 2.0, 0.5, 2000, None, 1.0, "fp32", True, "tf_keras"),
}


class DynamicLossScaler:
    """Dynamic loss scaling: back off on a non-finite gradient (and skip the step),
    grow after ``growth_interval`` consecutive clean steps.

    Per step, with ``found_nonfinite``:

    * True: ``scale = scale * backoff_factor``, raised to ``min_scale`` if set;
      the growth counter resets; the step is skipped.
    * False: the counter counts the clean step; when it reaches ``growth_interval``
      the scale becomes ``scale * growth_factor`` lowered to ``max_scale`` if set (and
      left unchanged when that is not finite, unless ``skip_nonfinite_growth=False``),
      and the counter resets.

    Products are rounded to float32 when ``scale_dtype="fp32"``.
    """

    def __init__(self, init_scale: float = 2.0 ** 16, growth_factor: float = 2.0, backoff_factor: float = 0.5,
                 growth_interval: int = 2000, max_scale: float | None = None, min_scale: float | None = None, *,
                 scale_dtype: str = "fp32", skip_nonfinite_growth: bool = True, name: str = "custom") -> None:
        self.rule = LossScalingRule(init_scale, growth_factor, backoff_factor, growth_interval, max_scale, min_scale,
                                    scale_dtype, skip_nonfinite_growth, name)
        self._scale = self._round(float(init_scale))
        self._tracker = 0

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> DynamicLossScaler:
        """``"torch"``, ``"apex"``, ``"keras"`` or ``"tf_keras"``, optionally with fields changed
        (e.g. ``preset("torch", init_scale=1024, growth_interval=3)``)."""
        if name not in LOSS_SCALER_PRESETS:
            raise ValueError(f"preset={name!r} is not a loss-scaler preset; allowed: {', '.join(LOSS_SCALER_PRESETS)}")
        try:
            rule = replace(LOSS_SCALER_PRESETS[name], **overrides)
        except TypeError:
            fields = ", ".join(f for f in LossScalingRule.__dataclass_fields__ if f != "name")
            raise TypeError(f"preset overrides {sorted(overrides)} not understood; fields: {fields}") from None
        return cls.from_rule(rule)

    @classmethod
    def from_rule(cls, rule: LossScalingRule) -> DynamicLossScaler:
        return cls(rule.init_scale, rule.growth_factor, rule.backoff_factor, rule.growth_interval, rule.max_scale,
                   rule.min_scale, scale_dtype=rule.scale_dtype, skip_nonfinite_growth=rule.skip_nonfinite_growth,
                   name=rule.name)

    def _round(self, v: float) -> float:
        if self.rule.scale_dtype == "fp32":
            with np.errstate(over="ignore"):
                return float(np.float32(v))
        return v

    @property
    def scale(self) -> float:
        """The scale to multiply the next step's loss by."""
        return self._scale

    @property
    def growth_tracker(self) -> int:
        """Consecutive clean steps since the last backoff or growth."""
        return self._tracker

    def update(self, found_nonfinite: bool) -> bool:
        """Record this step's outcome; returns True when the step must be skipped."""
        if not isinstance(found_nonfinite, (bool, np.bool_)):
            raise TypeError(f"found_nonfinite={found_nonfinite!r} must be True or False")
        r = self.rule
        if found_nonfinite:
            new = self._round(self._scale * r.backoff_factor)
            if r.min_scale is not None:
                new = max(new, r.min_scale)
            self._scale = new
            self._tracker = 0
            return True
        self._tracker += 1
        if self._tracker == r.growth_interval:
            new = self._round(self._scale * r.growth_factor)
            if r.max_scale is not None:
                new = min(new, r.max_scale)
            if math.isfinite(new) or not r.skip_nonfinite_growth:
                self._scale = new
            self._tracker = 0
        return False

    def __repr__(self) -> str:
        return f"DynamicLossScaler(preset={self.rule.name!r}, scale={self._scale!r}, growth_tracker={self._tracker})"


class StaticLossScaler:
    """A fixed scale.  ``update`` skips a step with non-finite gradients only when
    ``skip_nonfinite=True`` (Apex's static ``loss_scale`` applies such steps)."""

    def __init__(self, scale: float = 1.0, *, skip_nonfinite: bool = False) -> None:
        s = _real("scale", scale)
        if s <= 0:
            raise ValueError(f"scale={scale!r} must be > 0")
        if not isinstance(skip_nonfinite, bool):
            raise TypeError(f"skip_nonfinite={skip_nonfinite!r} must be True or False")
        self._scale = s
        self.skip_nonfinite = skip_nonfinite

    @property
    def scale(self) -> float:
        return self._scale

    def update(self, found_nonfinite: bool) -> bool:
        if not isinstance(found_nonfinite, (bool, np.bool_)):
            raise TypeError(f"found_nonfinite={found_nonfinite!r} must be True or False")
        return bool(found_nonfinite) and self.skip_nonfinite

    def __repr__(self) -> str:
        return f"StaticLossScaler(scale={self._scale!r}, skip_nonfinite={self.skip_nonfinite})"


def no_loss_scaling() -> StaticLossScaler:
    """Scale 1, never skips: training without loss scaling."""
    return StaticLossScaler(1.0)


def make_loss_scaler(kind: str, **kwargs: Any) -> DynamicLossScaler | StaticLossScaler:
    """``"none"``, ``"static"`` (``scale=...``), ``"dynamic"`` (DynamicLossScaler arguments), or a
    preset name (``"torch"``, ``"apex"``, ``"keras"``, ``"tf_keras"``, with overrides)."""
    if kind == "none":
        if kwargs:
            raise TypeError(f"loss scaling 'none' takes no arguments; got {sorted(kwargs)}")
        return no_loss_scaling()
    if kind == "static":
        return StaticLossScaler(**kwargs)
    if kind == "dynamic":
        return DynamicLossScaler(**kwargs)
    if kind in LOSS_SCALER_PRESETS:
        return DynamicLossScaler.preset(kind, **kwargs)
    allowed = ", ".join(["none", "static", "dynamic", *LOSS_SCALER_PRESETS])
    raise ValueError(f"loss_scaling={kind!r} not allowed; choose one of {allowed}")
