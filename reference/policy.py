"""Precision policies (DESIGN §8): which op runs in which format, which MatmulSpec each GEMM uses.

A :class:`Policy` is plain data, like autocast's op lists; :meth:`Policy.ops` builds the
object that the layers call (:mod:`.ops`), which implements every GEMM with
``pl.matmul`` and every cast with ``pl.round`` and keeps the per-tensor state a
recipe needs (FP8 scales, amax histories) plus per-step statistics.

**Casts.**  Every cast point of :data:`~.ops.CAST_POINTS` resolves, once, to a format
or to ``None`` (the value stays as computed, in the compute dtype):

* parameter points come from their own fields: ``"weight"`` (the working copy) from
  ``weight``; ``"master"`` is ``None`` with master weights and ``weight`` without them
  (the working copy *is* the master, rounded after each update); ``"param_grad"`` from
  ``param_grad`` (the gradient format); ``"optimizer.*"`` from ``optimizer_state``;
* every other point belongs to an op (:data:`OPS`: ``"relu"`` covers ``relu.out`` and
  ``relu.grad``).  ``allow`` lists ops or single cast points rounded to ``low`` (the
  autocast "lower precision" list); ``deny`` lists ops or points kept in fp32 (the
  autocast fp32 list); a cast point named in a list beats its op named in the other
  (``deny=("loss",), allow=("loss.grad",)``: the loss runs in fp32, the gradient it hands
  back to fp16 logits is cast to fp16, as autocast's cast node does); anything unlisted
  stays as computed.  Autocast's third kind, ops that run in their input's dtype, is
  resolved statically: a recipe lists them in ``allow`` where their input is low
  precision in the reference models.

**GEMMs.**  ``matmul`` gives a :class:`MatmulRoles` (forward, dgrad, wgrad specs, each a
``MatmulSpec`` or a preset name); ``sites`` overrides it for sites matching an
``fnmatch`` pattern (first match wins), e.g. ``"*.scores"`` for the attention
products.  ``bias="fused"`` passes a Linear's bias as the GEMM's C (``F.linear``,
cuBLASLt's bias epilogue); ``"separate"`` adds it afterwards in the output format
(Keras' Dense: ``matmul`` then ``add``).

**FP8.**  With ``fp8`` set (a :mod:`precisionlab.scaling` recipe), the GEMMs of sites
matching ``fp8_sites`` and not ``fp8_exclude`` (by default the attention products, as
Transformer Engine keeps ``DotProductAttention`` out of FP8 unless asked) quantise their
operands first and pass the scales to ``pl.matmul``:

* ``DelayedScaling``: one :class:`~precisionlab.scaling.DelayedScaler` per
  ``(site, tensor)``, tensors named by :data:`~.ops.OPERANDS` (``input``, ``weight``,
  ``grad_output``); forward tensors take ``fp8_format.forward``, ``grad_output`` the
  backward format (E5M2 under HYBRID); the scales of step t come from the amax histories
  of steps before t (:meth:`PolicyOps.end_step` updates them, as TE does once per
  iteration).  A tensor used by two GEMMs (the input in forward and wgrad) is quantised
  with the same scale both times, which gives the same values TE caches.
* ``CurrentScaling``: a fresh scale from each operand's amax.
* ``MXScaling``: blocks along K (A's last axis, B's first), E8M0 scales applied to the
  operands (``a_scale_block=(1, 32)``, ``b_scale_block=(32, 1)``).
* ``TileScaling`` (DeepSeek-V3): tiles shaped like the spec's scale blocks, float32 scales
  applied at promotion (the ``deepseek_fp8`` preset).

The specs of FP8 sites must already say so (input formats, scale blocks); a mismatch is
a ValueError naming the site and role.  Per-tensor scales are passed as the inverse
scales (``scale_inv``) that dequantise the product.

**Statistics** (per step, :class:`StepStats`): the amax of every GEMM operand by
``"<site>.<tensor>"``, and how many gradient values overflowed or were flushed to zero
when rounded to a narrower format: at gradient casts (``*.grad``, ``loss.grad``,
``linear.bias_grad``, ``param_grad``), at the output rounding of dgrad/wgrad GEMMs, and
at the FP8 quantisation of ``grad_output``.  To see a GEMM's values before its output
rounding, a dgrad/wgrad GEMM whose output is narrower than fp32 runs with an fp32
output and is then rounded with the spec's output rounding; by the matmul model
(DESIGN §6: the accumulator's fp32 value is rounded once to the output) this gives the
same bits, which tests/test_reference_policy.py checks.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from fnmatch import fnmatchcase
from typing import Any

import numpy as np

import precisionlab as pl
from precisionlab.formats import Format, get_format
from precisionlab.matmul import MatmulSpec
from precisionlab.presets import get_preset
from precisionlab.rounding import fits_float32
from precisionlab.scaling import (
    CurrentScaling,
    DelayedScaler,
    DelayedScaling,
    MXScaling,
    TileScaling,
    amax,
    mx_dequantize,
    scaled_cast,
    tile_dequantize,
    tile_quantize,
)

from .ops import CAST_POINTS, OPERANDS, ROLES, check_cast_point, check_matmul_shapes, check_role

__all__ = ["MatmulRoles", "Policy", "PolicyOps", "StepStats", "OPS", "PARAMETER_CAST_POINTS", "GRADIENT_CAST_POINTS",
           "BIAS_MODES", "COMPUTE_DTYPES", "FP8_RECIPES", "ATTENTION_SITES"]

#: Cast points set by the parameter fields of a Policy, not by the op lists.
PARAMETER_CAST_POINTS = ("weight", "master", "param_grad", "optimizer.momentum_buffer", "optimizer.exp_avg",
                         "optimizer.exp_avg_sq")
#: Op name -> its cast points (every cast point that is not a parameter point).
OPS: dict[str, tuple[str, ...]] = {}
for _what in CAST_POINTS:
    if _what not in PARAMETER_CAST_POINTS:
        OPS.setdefault(_what.split(".")[0], ())
        OPS[_what.split(".")[0]] += (_what,)
del _what
#: Cast points that carry gradients (counted for overflow and underflow).
GRADIENT_CAST_POINTS = tuple(w for w in CAST_POINTS if w.endswith(".grad") or w in ("linear.bias_grad", "param_grad"))
BIAS_MODES = ("fused", "separate")
COMPUTE_DTYPES = {"fp32": np.dtype(np.float32), "fp64": np.dtype(np.float64)}
FP8_RECIPES = (DelayedScaling, CurrentScaling, MXScaling, TileScaling)
#: The attention products' sites (kept out of FP8 by default).
ATTENTION_SITES = ("*.scores", "*.context")


def _spec(value: Any, arg: str) -> MatmulSpec:
    if isinstance(value, MatmulSpec):
        return value
    if isinstance(value, str):
        return get_preset(value)
    raise TypeError(f"{arg}={value!r} must be a MatmulSpec or a preset name")


@dataclass(frozen=True)
class MatmulRoles:
    """The MatmulSpec of each GEMM role; ``dgrad`` and ``wgrad`` default to ``forward``'s.
    Preset names are accepted and resolved."""

    forward: MatmulSpec | str = "fp32_sequential"
    dgrad: MatmulSpec | str | None = None
    wgrad: MatmulSpec | str | None = None

    def __post_init__(self) -> None:
        fwd = _spec(self.forward, "forward")
        object.__setattr__(self, "forward", fwd)
        object.__setattr__(self, "dgrad", fwd if self.dgrad is None else _spec(self.dgrad, "dgrad"))
        object.__setattr__(self, "wgrad", fwd if self.wgrad is None else _spec(self.wgrad, "wgrad"))

    @classmethod
    def of(cls, value: Any, arg: str = "matmul") -> MatmulRoles:
        """A MatmulRoles from itself, one spec/preset for all roles, or a ``{role: spec}`` mapping."""
        if isinstance(value, MatmulRoles):
            return value
        if isinstance(value, Mapping):
            unknown = sorted(set(value) - set(ROLES))
            if unknown:
                raise ValueError(f"{arg}: unknown roles {unknown}; allowed: {', '.join(ROLES)}")
            if "forward" not in value:
                raise ValueError(f"{arg}={dict(value)!r} needs a 'forward' spec")
            return cls(**value)
        if isinstance(value, (MatmulSpec, str)):
            return cls(value)
        raise TypeError(f"{arg}={value!r} must be a MatmulRoles, a MatmulSpec, a preset name or a {{role: spec}} dict")

    def __getitem__(self, role: str) -> MatmulSpec:
        return getattr(self, check_role(role))


def _format(value: Any, arg: str) -> Format | None:
    if value is None:
        return None
    try:
        return get_format(value)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{arg}: {exc}") from None


def _names(value: Any, arg: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = (value,)
    if not isinstance(value, (tuple, list)) or not all(isinstance(v, str) for v in value):
        raise TypeError(f"{arg}={value!r} must be a sequence of names")
    return tuple(value)


def _entries(names: tuple[str, ...], arg: str) -> tuple[set[str], set[str]]:
    """Split op names and cast points of an allow/deny list; unknown names are an error."""
    ops, points = set(), set()
    for n in names:
        if n in OPS:
            ops.add(n)
        elif n in CAST_POINTS and n not in PARAMETER_CAST_POINTS:
            points.add(n)
        elif n in PARAMETER_CAST_POINTS:
            raise ValueError(f"{arg}: {n!r} is a parameter cast point; set it with the policy's weight, "
                             "master_weights, param_grad or optimizer_state fields")
        else:
            raise ValueError(f"{arg}: {n!r} is not an op or cast point; ops: {', '.join(OPS)}; cast points: "
                             f"{', '.join(w for w in CAST_POINTS if w not in PARAMETER_CAST_POINTS)}")
    return ops, points


@dataclass(frozen=True)
class Policy:
    """Which op runs in which format and how every GEMM is computed (see the module docstring)."""

    name: str = "custom"
    matmul: MatmulRoles | MatmulSpec | str | Mapping[str, Any] = "fp32_sequential"
    sites: tuple[tuple[str, Any], ...] | Mapping[str, Any] = ()
    low: Format | str | None = None
    allow: tuple[str, ...] = ()
    deny: tuple[str, ...] = ()
    weight: Format | str | None = None
    master_weights: bool = True
    param_grad: Format | str | None = None
    optimizer_state: Format | str | None = None
    fp8: DelayedScaling | CurrentScaling | MXScaling | TileScaling | None = None
    fp8_sites: tuple[str, ...] = ("*",)
    fp8_exclude: tuple[str, ...] = ATTENTION_SITES
    bias: str = "fused"
    compute: str = "fp32"
    source: str = field(default="", compare=False, repr=False)
    _formats: dict[str, Format | None] = field(default_factory=dict, init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        put = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731
        if not isinstance(self.name, str) or not self.name:
            raise TypeError(f"name={self.name!r} must be a non-empty string")
        put("matmul", MatmulRoles.of(self.matmul))
        items = self.sites.items() if isinstance(self.sites, Mapping) else self.sites
        if not isinstance(items, (tuple, list)) and not isinstance(self.sites, Mapping):
            raise TypeError(f"sites={self.sites!r} must map site patterns to MatmulRoles, specs or preset names")
        sites = []
        for item in items:
            if not isinstance(item, (tuple, list)) or len(item) != 2 or not isinstance(item[0], str):
                raise TypeError(f"sites: {item!r} is not a (site pattern, roles) pair")
            try:
                sites.append((item[0], MatmulRoles.of(item[1], f"sites[{item[0]!r}]")))
            except ValueError as exc:
                raise ValueError(f"sites[{item[0]!r}]: {exc}") from None
        put("sites", tuple(sites))
        for arg in ("low", "weight", "param_grad", "optimizer_state"):
            put(arg, _format(getattr(self, arg), arg))
        put("allow", _names(self.allow, "allow"))
        put("deny", _names(self.deny, "deny"))
        put("fp8_sites", _names(self.fp8_sites, "fp8_sites"))
        put("fp8_exclude", _names(self.fp8_exclude, "fp8_exclude"))
        if not isinstance(self.master_weights, bool):
            raise TypeError(f"master_weights={self.master_weights!r} must be True or False")
        if not self.master_weights and self.weight is None:
            raise ValueError("master_weights=False needs a weight format (the working copy that is also the master)")
        if self.bias not in BIAS_MODES:
            raise ValueError(f"bias={self.bias!r} not allowed; choose one of {', '.join(BIAS_MODES)}")
        if self.compute not in COMPUTE_DTYPES:
            raise ValueError(f"compute={self.compute!r} not allowed; choose one of {', '.join(COMPUTE_DTYPES)}")
        if self.fp8 is not None and not isinstance(self.fp8, FP8_RECIPES):
            raise TypeError(f"fp8={self.fp8!r} must be None or one of "
                            f"{', '.join(c.__name__ for c in FP8_RECIPES)} (precisionlab.scaling)")
        allow_ops, allow_points = _entries(self.allow, "allow")
        deny_ops, deny_points = _entries(self.deny, "deny")
        for kind, both in (("ops", allow_ops & deny_ops), ("cast points", allow_points & deny_points)):
            if both:
                raise ValueError(f"allow and deny both name the {kind} {sorted(both)}")
        if (allow_ops or allow_points) and self.low is None:
            raise ValueError(f"allow={self.allow!r} needs low=<format> (the format allowed ops run in)")
        self._formats.update(self._resolve(allow_ops, allow_points, deny_points))
        if self.fp8 is not None and "*" in self.fp8_sites:  # the default roles serve FP8 sites
            for role in ROLES:
                problem = _fp8_spec_problem(self.fp8, role, self.matmul[role])
                if problem:
                    raise ValueError(f"policy {self.name!r}: the {role} spec does not fit "
                                     f"fp8={type(self.fp8).__name__}: {problem}")

    def _resolve(self, allow_ops: set[str], allow_points: set[str], deny_points: set[str]) -> dict[str, Format | None]:
        out: dict[str, Format | None] = {
            "weight": self.weight,
            "master": None if self.master_weights else self.weight,
            "param_grad": self.param_grad,
            "optimizer.momentum_buffer": self.optimizer_state,
            "optimizer.exp_avg": self.optimizer_state,
            "optimizer.exp_avg_sq": self.optimizer_state,
        }
        for op, points in OPS.items():
            for what in points:
                if what in allow_points:
                    out[what] = self.low
                elif what in deny_points:
                    out[what] = None
                else:
                    out[what] = self.low if op in allow_ops else None
        return out

    # ---- queries ------------------------------------------------------------------------------
    @property
    def compute_dtype(self) -> np.dtype:
        return COMPUTE_DTYPES[self.compute]

    def cast_format(self, what: str) -> Format | None:
        """The format cast point ``what`` rounds to (None: no rounding)."""
        return self._formats[check_cast_point(what)]

    def roles(self, site: str) -> MatmulRoles:
        for pattern, roles in self.sites:
            if fnmatchcase(site, pattern):
                return roles
        return self.matmul

    def spec(self, role: str, site: str) -> MatmulSpec:
        """The MatmulSpec of GEMM ``role`` at ``site``."""
        return self.roles(site)[role]

    def uses_fp8(self, site: str) -> bool:
        """Whether the GEMMs at ``site`` quantise their operands with the FP8 recipe."""
        return (self.fp8 is not None and any(fnmatchcase(site, p) for p in self.fp8_sites)
                and not any(fnmatchcase(site, p) for p in self.fp8_exclude))

    def formats(self) -> dict[str, str | None]:
        """Cast point -> format name (None: no rounding), for tables and reports."""
        return {w: (f.name if f is not None else None) for w, f in self._formats.items()}

    def ops(self, backend: str = "auto") -> PolicyOps:
        """A fresh ops object (own FP8 state and statistics) implementing this policy."""
        return PolicyOps(self, backend=backend)


# ---- FP8 spec checks ------------------------------------------------------------------------

def _fp8_formats(recipe: Any, role: str) -> tuple[Format, Format]:
    """The formats the A and B operands of ``role`` are quantised to."""
    if isinstance(recipe, (DelayedScaling, CurrentScaling)):
        a = recipe.fp8_format.format("backward" if OPERANDS[role][0] == "grad_output" else "forward")
        return a, recipe.fp8_format.format("forward")
    if isinstance(recipe, MXScaling):
        f = get_format(recipe.element_format)
        return f, f
    f = get_format(recipe.fmt)
    return f, f


def _fp8_spec_problem(recipe: Any, role: str, spec: MatmulSpec) -> str | None:
    fa, fb = _fp8_formats(recipe, role)
    if spec.a_format != fa or spec.effective_b_format != fb:
        return (f"operands are quantised to {fa.name} x {fb.name} but the spec {spec.name or ''} takes "
                f"{spec.a_format.name} x {spec.effective_b_format.name}")
    if isinstance(recipe, (DelayedScaling, CurrentScaling)):
        want = ((None, None), (None, None))
    elif isinstance(recipe, MXScaling):
        want = ((1, recipe.block_size), (recipe.block_size, 1))
        if spec.scale_at != "operands":
            return "MX scales multiply the operands: the spec needs scale_at='operands'"
    else:
        if spec.a_scale_block is None or spec.b_scale_block is None:
            return "tile scaling needs a_scale_block and b_scale_block (the tiles)"
        return None
    if (spec.a_scale_block, spec.b_scale_block) != want:
        return f"scale blocks must be a_scale_block={want[0]}, b_scale_block={want[1]}; the spec has " \
               f"{spec.a_scale_block}, {spec.b_scale_block}"
    return None


# ---- the ops object -------------------------------------------------------------------------

@dataclass(frozen=True)
class StepStats:
    """What the ops saw in one training step (see the module docstring)."""

    grad_values: int
    grad_underflow: int
    grad_overflow: int
    amax: dict[str, float]


def _amax_or_nan(x: np.ndarray) -> float:
    return amax(x) if x.size else 0.0


def _max_keep_nan(old: float | None, new: float) -> float:
    if old is None:
        return new
    if math.isnan(old) or math.isnan(new):
        return math.nan
    return max(old, new)


@functools.lru_cache(maxsize=128)
def _wide_output(spec: MatmulSpec) -> MatmulSpec | None:
    """The spec with an fp32 output (and C in its original format), when rounding that fp32
    value with the spec's output rounding gives the spec's result (see the module docstring)."""
    if (spec.output_format.bits >= 32 or spec.output_via is not None or spec.output_rounding.stochastic
            or not fits_float32(spec.accumulator)):
        return None
    return replace(spec, output_format="fp32", output_rounding="rne", output_overflow="default",
                   c_format=spec.effective_c_format, name=None)


class PolicyOps:
    """The ops object of a :class:`Policy`: ``matmul`` through ``pl.matmul``, ``cast`` through
    ``pl.round``, FP8 state per ``(site, tensor)``, statistics per step.

    ``training=False`` (evaluation) uses the current FP8 scales without recording amaxes and
    collects no statistics.
    """

    def __init__(self, policy: Policy, backend: str = "auto") -> None:
        if not isinstance(policy, Policy):
            raise TypeError(f"policy={policy!r} must be a Policy")
        self.policy = policy
        self.backend = backend
        self.compute_dtype = policy.compute_dtype
        self.master_dtype = policy.compute_dtype
        self.training = True
        self._delayed: dict[tuple[str, str], DelayedScaler] = {}
        self._checked: set[tuple[str, str]] = set()
        self._reset()

    def _reset(self) -> None:
        self._values = self._underflow = self._overflow = 0
        self._amax: dict[str, float] = {}

    # ---- statistics -----------------------------------------------------------------------
    def _count(self, before: np.ndarray, after: np.ndarray) -> None:
        """Gradient values flushed to zero (non-zero -> 0) or overflowed (finite -> Inf/NaN)."""
        if not self.training:
            return
        finite = np.isfinite(before)
        self._values += before.size
        self._underflow += int(np.count_nonzero(finite & (before != 0) & (after == 0)))
        self._overflow += int(np.count_nonzero(finite & ~np.isfinite(after)))

    def _record_amax(self, key: str, x: np.ndarray) -> None:
        if self.training:
            self._amax[key] = _max_keep_nan(self._amax.get(key), _amax_or_nan(x))

    def end_step(self) -> StepStats:
        """Finish a training step: update the delayed-scaling state, return and reset the statistics."""
        for scaler in self._delayed.values():
            scaler.update()
        stats = StepStats(self._values, self._underflow, self._overflow, dict(self._amax))
        self._reset()
        return stats

    @property
    def delayed_scalers(self) -> dict[tuple[str, str], DelayedScaler]:
        """The delayed-scaling state by ``(site, tensor)`` (empty for other recipes)."""
        return dict(self._delayed)

    # ---- casts -------------------------------------------------------------------------------
    def cast(self, x: np.ndarray, what: str, site: str) -> np.ndarray:
        fmt = self.policy.cast_format(what)
        xp = np.asarray(x, dtype=self.compute_dtype)
        if fmt is None:
            return xp
        y = pl.round(xp, fmt, backend=self.backend)
        if what in GRADIENT_CAST_POINTS:
            self._count(xp, y)
        return y

    # ---- GEMMs ---------------------------------------------------------------------------------
    def matmul(self, a: np.ndarray, b: np.ndarray, role: str, site: str, *, c: np.ndarray | None = None) -> np.ndarray:
        check_role(role)
        a = np.asarray(a, dtype=self.compute_dtype)
        b = np.asarray(b, dtype=self.compute_dtype)
        check_matmul_shapes(a, b, site)
        if c is not None:
            c = np.asarray(c, dtype=self.compute_dtype)
        spec = self.policy.spec(role, site)
        names = OPERANDS[role]
        self._record_amax(f"{site}.{names[0]}", a)
        self._record_amax(f"{site}.{names[1]}", b)
        if self.policy.uses_fp8(site):
            out = self._fp8_matmul(a, b, role, site, spec, c)
        else:
            out = self._matmul(a, b, role, spec, c)
        return np.asarray(out, dtype=self.compute_dtype)

    def _matmul(self, a: np.ndarray, b: np.ndarray, role: str, spec: MatmulSpec, c: np.ndarray | None,
                a_scale: Any = None, b_scale: Any = None) -> np.ndarray:
        separate = c is not None and self.policy.bias == "separate"
        cc = None if separate else c
        wide = _wide_output(spec) if role != "forward" and self.training else None
        if wide is not None:
            full = pl.matmul(a, b, wide, c=cc, a_scale=a_scale, b_scale=b_scale, backend=self.backend)
            out = pl.round(full, spec.output_format, rounding=spec.output_rounding, overflow=spec.output_overflow,
                           backend=self.backend)
            self._count(full, out)
        else:
            out = pl.matmul(a, b, spec, c=cc, a_scale=a_scale, b_scale=b_scale, backend=self.backend)
        if separate:
            cr = pl.round(c, spec.effective_c_format, backend=self.backend).astype(out.dtype)
            with np.errstate(over="ignore", invalid="ignore"):
                out = pl.round(out + cr, spec.output_format, overflow=spec.output_overflow, backend=self.backend)
        return out

    # ---- FP8 ------------------------------------------------------------------------------------
    def _check_fp8_spec(self, role: str, site: str, spec: MatmulSpec) -> None:
        if (role, site) in self._checked:
            return
        problem = _fp8_spec_problem(self.policy.fp8, role, spec)
        if problem:
            raise ValueError(f"policy {self.policy.name!r}: site {site!r} role {role!r} uses "
                             f"fp8={type(self.policy.fp8).__name__} but {problem}")
        self._checked.add((role, site))

    def _scaler(self, site: str, tensor: str) -> DelayedScaler:
        key = (site, tensor)
        if key not in self._delayed:
            self._delayed[key] = self.policy.fp8.scaler("backward" if tensor == "grad_output" else "forward")
        return self._delayed[key]

    def _per_tensor(self, x: np.ndarray, site: str, tensor: str, fmt: Format) -> tuple[np.ndarray, np.ndarray]:
        """Quantise with a per-tensor scale; returns (values, inverse scale)."""
        recipe = self.policy.fp8
        if isinstance(recipe, DelayedScaling):
            scaler = self._scaler(site, tensor)
            q = scaler.quantize(x) if self.training else scaled_cast(x, scaler.scale, fmt)
            scale = scaler.scale
        else:
            scale = recipe.scale(amax(x), "backward" if tensor == "grad_output" else "forward")
            q = scaled_cast(x, scale, fmt)
        if tensor == "grad_output":
            with np.errstate(over="ignore", invalid="ignore"):
                self._count_quantized(x * x.dtype.type(scale), q, fmt)
        return q, np.asarray(np.float32(1.0) / np.float32(scale), dtype=np.float32)

    def _fp8_matmul(self, a: np.ndarray, b: np.ndarray, role: str, site: str, spec: MatmulSpec,
                    c: np.ndarray | None) -> np.ndarray:
        self._check_fp8_spec(role, site, spec)
        recipe = self.policy.fp8
        na, nb = OPERANDS[role]
        fa, fb = _fp8_formats(recipe, role)
        if isinstance(recipe, (DelayedScaling, CurrentScaling)):
            qa, sa = self._per_tensor(a, site, na, fa)
            qb, sb = self._per_tensor(b, site, nb, fb)
        elif isinstance(recipe, MXScaling):
            sa, qa = recipe.quantize(a, axis=-1)
            sb, qb = recipe.quantize(b, axis=-2)
            self._count_blocked(a, qa, mx_dequantize(sa, np.ones_like(a), axis=-1, block_size=recipe.block_size),
                                na, fa)
            self._count_blocked(b, qb, mx_dequantize(sb, np.ones_like(b), axis=-2, block_size=recipe.block_size),
                                nb, fb)
        else:
            ta = _tile(spec.a_scale_block, a.shape)
            tb = _tile(spec.b_scale_block, b.shape)
            sa, qa = tile_quantize(a, ta, recipe.fmt, amax_floor=recipe.amax_floor)
            sb, qb = tile_quantize(b, tb, recipe.fmt, amax_floor=recipe.amax_floor)
            self._count_blocked(a, qa, tile_dequantize(sa, np.ones_like(a), ta), na, fa)
            self._count_blocked(b, qb, tile_dequantize(sb, np.ones_like(b), tb), nb, fb)
        return self._matmul(qa, qb, role, spec, c, a_scale=sa, b_scale=sb)

    def _count_blocked(self, x: np.ndarray, q: np.ndarray, element_scale: np.ndarray, tensor: str, fmt: Format) -> None:
        if tensor != "grad_output":
            return
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            scaled = x.astype(np.float64) / element_scale.astype(np.float64)
        self._count_quantized(scaled, q, fmt)

    def _count_quantized(self, scaled: np.ndarray, q: np.ndarray, fmt: Format) -> None:
        """Count a saturating FP8 cast of the scaled values: beyond ``fmt.max`` is an overflow."""
        overflowed = np.isfinite(scaled) & (np.abs(scaled) > fmt.max)
        self._count(scaled, np.where(overflowed, np.inf, q))

    def __repr__(self) -> str:
        return f"PolicyOps({self.policy.name!r}, backend={self.backend!r})"


def _tile(block: tuple[int | None, int | None], shape: tuple[int, ...]) -> tuple[int, int]:
    """A spec's scale block with None (the whole dimension) filled in from the operand's shape."""
    rows, cols = shape[-2:]
    return (max(rows, 1) if block[0] is None else block[0], max(cols, 1) if block[1] is None else block[1])
