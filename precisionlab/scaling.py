"""Scale rules of FP8 training recipes and block-scaled formats (DESIGN §2, §8).

Plain functions for the arithmetic and frozen dataclasses for the recipes; the one
stateful piece is :class:`DelayedScaler` (an amax history with an explicit
``update()``).  Every rule follows the arithmetic of the system it is named after,
including the precision it runs in (TE keeps amaxes and scales in float32 and
computes them with float32 IEEE operations), so the scales here are bit-identical
to the real ones.  Elements are rounded with :func:`precisionlab.round`.

* **Per-tensor current scaling** (TE ``Float8CurrentScaling``,
  ``transformer_engine/common/recipe/recipe_common.cuh: compute_scale_from_amax``):
  ``scale = fl32(fp8_max / amax)``; amax 0, Inf or NaN gives 1; an infinite quotient
  gives FLT_MAX; optionally ``amax`` is first raised to ``epsilon`` and the scale
  truncated to a power of two.
* **Delayed scaling** (TE ``DelayedScaling``, ``transformer_engine/common/recipe/
  delayed_scaling.cu``, ``kernel_bulk``): ``scale = fl32(fl32(fp8_max * 2^-margin) / amax)``
  from an amax history of length L reduced by ``max`` or ``most_recent``; the previous
  scale is kept when the amax is 0 or not finite; an infinite scale becomes FLT_MAX.
  This equals DESIGN's ``(fp8_max / amax) / 2^margin`` except where ``fp8_max / amax``
  alone would overflow float32.
* **MX block scaling** (OCP Microscaling Formats v1.0, §6.3): blocks of 32 elements
  along one axis share an E8M0 scale ``X = 2^(floor(log2 amax) - emax_elem)``; elements
  are ``V / X`` rounded to nearest-even with finite overflow clamped to the element's
  max.  ``rule="nvidia"`` is cuBLAS/cuDNN/TE's alternative, ``X = round_up_pow2(amax /
  elem_max)``, computed as TE does: ``float_to_e8m0(fl32(amax * fl32(1 / elem_max)))``
  (``transformer_engine/common/util/ptx.cuh``), so ``V / X`` never needs clamping.
* **DeepSeek-V3 tiles** (``deepseek-ai/DeepSeek-V3 inference/kernel.py``,
  ``act_quant_kernel`` / ``weight_quant_kernel``): one float32 scale
  ``s = fl32(amax / fp8_max)`` per 1x128 activation tile or 128x128 weight tile; the
  elements are ``fl32(x / s)`` rounded to E4M3 (saturating, as Triton's fp8 cast does).

Decisions (documented because the sources differ or are silent):

* A NaN or Inf anywhere in an MX block makes its scale NaN (E8M0 0xFF) and every
  element of the block NaN, under both rules (OCP: the block is not representable;
  TE's ``satfinite`` would give 2^127 for an Inf amax instead).
* An all-zero MX block gets the smallest scale 2^-127 (E8M0 code 0) and zero elements
  under both rules (what the OCP reference code and TE produce).  TE multiplies the
  elements of a code-0 block by 1 instead of 2^127 (``exp2f_rcp``); that only matters
  for blocks whose amax is below ``2^-127 * elem_max`` and is not reproduced.
* A DeepSeek tile whose float32 scale would be 0 (amax 0, or below ``fp8_max * 2^-150``)
  gets scale 1 (the reference kernel divides by 0 and stores NaN or Inf);
  ``amax_floor=1e-4`` gives DeepGEMM's clamp instead.
* Float32 inputs are scaled in float32 as the GPU kernels do; float64 inputs in
  float64 (one rounding less).  The MX rule ``"nvidia"`` always evaluates its scale in
  float32, as TE does (amax rounded to float32 first).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .formats import Format, get_format
from .rounding import Rounding, fits_float32
from .rounding import round as pl_round

__all__ = [
    "FLT_MAX", "MX_BLOCK_SIZE", "E8M0_MIN_EXPONENT", "E8M0_MAX_EXPONENT",
    "DEEPSEEK_ACTIVATION_TILE", "DEEPSEEK_WEIGHT_TILE", "DIRECTIONS", "AMAX_COMPUTE_ALGOS", "MX_RULES",
    "FP8Formats", "E4M3", "E5M2", "HYBRID", "get_fp8_formats",
    "amax", "current_scale", "delayed_scale", "scaled_cast", "DelayedScaler",
    "mx_scales", "mx_quantize", "mx_dequantize", "tile_quantize", "tile_dequantize",
    "CurrentScaling", "DelayedScaling", "MXScaling", "TileScaling",
]

#: Largest finite float32 (``std::numeric_limits<float>::max()``), TE's cap for infinite scales.
FLT_MAX = float(np.finfo(np.float32).max)
#: OCP MX block size.
MX_BLOCK_SIZE = 32
#: E8M0 represents 2^-127 .. 2^127 (codes 0..254; 255 is NaN).
E8M0_MIN_EXPONENT = -127
E8M0_MAX_EXPONENT = 127
#: DeepSeek-V3 tiles: 1x128 for activations (per token), 128x128 for weights.
DEEPSEEK_ACTIVATION_TILE = (1, 128)
DEEPSEEK_WEIGHT_TILE = (128, 128)
DIRECTIONS = ("forward", "backward")
AMAX_COMPUTE_ALGOS = ("max", "most_recent")
MX_RULES = ("ocp", "nvidia")

_F32 = np.float32


# ---- validation helpers ------------------------------------------------------------------

def _choice(arg: str, value: Any, allowed: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise ValueError(f"{arg}={value!r} not allowed; choose one of {', '.join(repr(a) for a in allowed)}")
    return value


def _real(arg: str, value: Any, *, finite: bool = True, minimum: float | None = None) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{arg}={value!r} must be a real number")
    v = float(value)
    if finite and not math.isfinite(v):
        raise ValueError(f"{arg}={value!r} must be a finite number")
    if minimum is not None and v < minimum:
        raise ValueError(f"{arg}={value!r} must be >= {minimum}")
    return v


def _amax_arg(value: Any) -> float:
    """An amax: a non-negative real number or NaN/+Inf (which the rules handle)."""
    v = _real("amax", value, finite=False)
    if v < 0:
        raise ValueError(f"amax={value!r} must be >= 0 (a maximum of absolute values), or NaN/Inf")
    return v


def _int(arg: str, value: Any, minimum: int) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{arg}={value!r} must be an int")
    if value < minimum:
        raise ValueError(f"{arg}={value} must be >= {minimum}")
    return int(value)


def _float_array(x: Any, arg: str = "x") -> np.ndarray:
    xp = np.asarray(x)
    if xp.dtype not in (np.float32, np.float64):
        raise TypeError(f"{arg} has dtype {xp.dtype}; allowed: float32, float64")
    return xp


def _fp8_max(fmt: str | Format) -> float:
    f = get_format(fmt)
    if not fits_float32(f):
        raise ValueError(f"format={f.name!r}: its max {f.max} is not a float32; scales are float32")
    return f.max


def _element_format(fmt: str | Format, arg: str = "element_format") -> Format:
    f = get_format(fmt)
    if not fits_float32(f) or not f.signed or not f.has_zero:
        raise ValueError(f"{arg}={f.name!r} not allowed: elements need a signed format with zero whose values "
                         "are float32 values (e.g. e4m3, e5m2, fp6_e3m2, fp6_e2m3, fp4_e2m1, fp16, bf16)")
    return f


# ---- FP8 format pairs (TE recipe.Format) -------------------------------------------------

@dataclass(frozen=True)
class FP8Formats:
    """Which format forward tensors (activations, weights) and backward tensors
    (gradients) are cast to: Transformer Engine's ``recipe.Format``
    (``transformer_engine/common/recipe/__init__.py``)."""

    name: str
    forward: str
    backward: str

    def format(self, direction: str) -> Format:
        """The format of ``direction`` ('forward' or 'backward')."""
        _choice("direction", direction, DIRECTIONS)
        return get_format(self.forward if direction == "forward" else self.backward)


#: TE ``Format.E4M3``: E4M3 everywhere.
E4M3 = FP8Formats("E4M3", "e4m3", "e4m3")
#: TE ``Format.E5M2``: E5M2 everywhere.
E5M2 = FP8Formats("E5M2", "e5m2", "e5m2")
#: TE ``Format.HYBRID``: E4M3 forward, E5M2 backward (the default of TE's FP8 recipes).
HYBRID = FP8Formats("HYBRID", "e4m3", "e5m2")

_FP8_FORMATS = {f.name: f for f in (E4M3, E5M2, HYBRID)}


def get_fp8_formats(name: str | FP8Formats) -> FP8Formats:
    """``"E4M3"``, ``"E5M2"`` or ``"HYBRID"`` (case-insensitive), or an FP8Formats passed through."""
    if isinstance(name, FP8Formats):
        return name
    if isinstance(name, str) and name.strip().upper() in _FP8_FORMATS:
        return _FP8_FORMATS[name.strip().upper()]
    raise ValueError(f"fp8_format={name!r} not allowed; choose one of {', '.join(_FP8_FORMATS)}")


# ---- per-tensor scales -------------------------------------------------------------------

def amax(x: Any) -> float:
    """``max |x|`` as a Python float: NaN when ``x`` holds a NaN, 0 for an empty array."""
    xp = _float_array(x)
    if xp.size == 0:
        return 0.0
    return float(np.max(np.abs(xp)))


def current_scale(amax: float, fmt: str | Format = "e4m3", *, power_2: bool = False,
                  epsilon: float = 0.0) -> np.float32:
    """TE's per-tensor current scale ``fl32(fmt.max / amax)`` (``compute_scale_from_amax``).

    ``amax`` is first rounded to float32 (TE's amaxes are float32) and raised to
    ``epsilon``; amax 0 or Inf gives 1, a NaN quotient gives 1, an infinite quotient
    gives FLT_MAX; ``power_2=True`` truncates the scale to a power of two (TE's
    ``force_pow_2_scales`` keeps only the sign and exponent bits).
    """
    a = _F32(_amax_arg(amax))
    eps = _F32(_real("epsilon", epsilon, minimum=0.0))
    if not isinstance(power_2, (bool, np.bool_)):
        raise TypeError(f"power_2={power_2!r} must be True or False")
    fmax = _F32(_fp8_max(fmt))
    if a < eps:
        a = eps
    if np.isinf(a) or a == 0:
        return _F32(1.0)
    with np.errstate(over="ignore", invalid="ignore"):
        scale = fmax / a
    if np.isinf(scale):
        scale = _F32(FLT_MAX)
    if np.isnan(scale):
        scale = _F32(1.0)
    if power_2:
        scale = (np.array(scale, dtype=_F32).view(np.uint32) & np.uint32(0xFF800000)).view(_F32)[()]
    return _F32(scale)


def delayed_scale(amax: float, previous_scale: float, fmt: str | Format = "e4m3", margin: int = 0) -> np.float32:
    """TE's delayed-scaling rule for one reduced amax (``delayed_scaling.cu``):
    ``fl32(fl32(fmt.max * 2^-margin) / amax)`` when amax is finite and > 0, else the
    previous scale; an infinite result becomes FLT_MAX.  ``amax`` is taken as float32."""
    a = _F32(_amax_arg(amax))
    prev = _F32(_real("previous_scale", previous_scale))
    if not prev > 0:
        raise ValueError(f"previous_scale={previous_scale!r} must be > 0")
    m = _margin(margin)
    scaled_max = _F32(_fp8_max(fmt)) * _F32(2.0 ** -m)
    if np.isfinite(a) and a > 0:
        with np.errstate(over="ignore"):
            scale = scaled_max / a
    else:
        scale = prev
    if np.isinf(scale):
        scale = _F32(FLT_MAX)
    return _F32(scale)


def _margin(margin: Any) -> int:
    if isinstance(margin, (bool, np.bool_)) or not isinstance(margin, (int, np.integer)):
        raise TypeError(f"margin={margin!r} must be an int (TE's DelayedScaling.margin)")
    if not -100 <= margin <= 100:
        raise ValueError(f"margin={margin} not allowed; must be in -100..100")
    return int(margin)


def scaled_cast(x: Any, scale: float, fmt: str | Format = "e4m3", *, rounding: str | Rounding = "rne") -> np.ndarray:
    """Cast ``x * scale`` to ``fmt`` as an FP8 quantizer does: the product in ``x``'s
    precision (float32 for float32 ``x``, like TE), then one rounding with saturation
    (``cvt.rn.satfinite``: finite overflow and ±Inf clamp to ±max, NaN stays NaN).
    Returns the scaled values (dequantize with ``q * fl32(1 / scale)``)."""
    xp = _float_array(x)
    s = _real("scale", scale, minimum=0.0)
    if s == 0:
        raise ValueError("scale=0 not allowed: every value would become 0 and the inverse scale is infinite")
    with np.errstate(over="ignore", invalid="ignore"):
        y = xp * xp.dtype.type(s)
    return pl_round(y, fmt, rounding=rounding, overflow="saturate")


# ---- delayed scaling state -----------------------------------------------------------------

class DelayedScaler:
    """The amax history and scale of one tensor under TE delayed scaling.

    ``record(amax)`` folds the amax of this step's cast into slot 0 of the history
    (``fmax``, as TE's atomic max does); ``update()`` then reduces the history and
    computes the next scale, exactly as TE's ``kernel_bulk`` (the path PyTorch TE
    uses, ``delayed_scaling.cu``):

    * ``last = history[0]``; when ``last != 0`` the history rolls by -1 (``new[i] =
      old[i+1]``, ``new[L-1] = last``) and slot 0 is zeroed; when ``last == 0`` nothing
      moves and the reduced amax is 0 (so the scale is kept);
    * ``"max"`` reduces with ``fmaxf`` over the L entries (NaN entries are ignored, an
      Inf keeps the previous scale while it is in the window); ``"most_recent"`` uses
      ``last``;
    * the scale follows :func:`delayed_scale`.

    The scale starts at 1 (TE's initial ``scale``), so the first step casts unscaled.
    """

    def __init__(self, fmt: str | Format = "e4m3", amax_history_len: int = 1024,
                 amax_compute_algo: str = "max", margin: int = 0) -> None:
        self.format = get_format(fmt)
        _fp8_max(self.format)
        self.amax_history_len = _int("amax_history_len", amax_history_len, 1)
        self.amax_compute_algo = _choice("amax_compute_algo", amax_compute_algo, AMAX_COMPUTE_ALGOS)
        self.margin = _margin(margin)
        self._history = np.zeros(self.amax_history_len, dtype=_F32)
        self._scale = _F32(1.0)

    @property
    def scale(self) -> np.float32:
        """The scale the next cast uses."""
        return self._scale

    @property
    def scale_inv(self) -> np.float32:
        """``fl32(1 / scale)``, what dequantization multiplies by."""
        return _F32(1.0) / self._scale

    @property
    def amax_history(self) -> np.ndarray:
        """A copy of the history; slot 0 collects the current step's amax."""
        return self._history.copy()

    def record(self, amax: float) -> None:
        """Fold the amax of a cast made this step into the history."""
        a = _F32(_amax_arg(amax))
        self._history[0] = np.fmax(self._history[0], a)

    def quantize(self, x: Any) -> np.ndarray:
        """Cast ``x`` with the current scale (:func:`scaled_cast`) and record its amax, as a TE
        delayed-scaling quantizer does in one pass; dequantize with ``q * scale_inv``."""
        q = scaled_cast(x, self._scale, self.format)
        self.record(amax(x))
        return q

    def update(self) -> np.float32:
        """Reduce the history, roll it, and compute the scale of the next step."""
        h = self._history
        last = h[0]
        reduced = _F32(0.0)
        if last != 0:  # NaN != 0 too, as in the kernel
            window = np.concatenate([h[1:], [last]]).astype(_F32)
            reduced = _F32(np.fmax.reduce(np.concatenate([[_F32(0.0)], window])))  # fmaxf from 0
            window[0] = 0
            self._history = window
        if self.amax_compute_algo == "most_recent":
            reduced = last
        self._scale = delayed_scale(float(reduced), float(self._scale), self.format, self.margin)
        return self._scale


# ---- MX block scaling ----------------------------------------------------------------------

def _ocp_exponent(a: float, emax_elem: int) -> float:
    """``floor(log2 a) - emax_elem`` clamped below to -127; NaN above 127 or for non-finite a."""
    if not math.isfinite(a):
        return math.nan
    if a == 0:
        return float(E8M0_MIN_EXPONENT)
    mant, e = math.frexp(a)  # a = mant * 2^e, 0.5 <= mant < 1, exact for subnormals too
    shared = (e - 1) - emax_elem
    if shared > E8M0_MAX_EXPONENT:
        return math.nan
    return float(max(shared, E8M0_MIN_EXPONENT))


def _nvidia_exponent(a: float, elem_max: float) -> float:
    """TE's ``float_to_e8m0(fl32(amax * fl32(1 / elem_max)))`` (round up, satfinite) as an exponent."""
    with np.errstate(over="ignore"):
        a32 = _F32(a)
    if not np.isfinite(a32):
        return math.nan
    descale = a32 * (_F32(1.0) / _F32(elem_max))
    bits = int(np.array(descale, dtype=_F32).view(np.uint32))
    exponent, mantissa = bits >> 23, bits & 0x7FFFFF
    if descale != 0 and mantissa > 0 and exponent != 0xFE and not (exponent == 0 and mantissa <= 0x400000):
        exponent += 1
    return float(exponent - 127)


def _block_view(xp: np.ndarray, axis: int, block_size: int) -> tuple[np.ndarray, int]:
    """Move ``axis`` last and pad it with zeros to whole blocks: (..., n_blocks, block_size)."""
    moved = np.moveaxis(xp, axis, -1)
    n = moved.shape[-1]
    n_blocks = -(-n // block_size)
    padded = np.zeros(moved.shape[:-1] + (n_blocks * block_size,), dtype=xp.dtype)
    padded[..., :n] = moved
    return padded.reshape(moved.shape[:-1] + (n_blocks, block_size)), n


def _axis(axis: Any, ndim: int) -> int:
    if isinstance(axis, (bool, np.bool_)) or not isinstance(axis, (int, np.integer)):
        raise TypeError(f"axis={axis!r} must be an int")
    if not -ndim <= axis < ndim:
        raise ValueError(f"axis={axis} out of range for an array of {ndim} dimensions")
    return int(axis) % ndim


def mx_scales(block_amax: Any, element_format: str | Format = "e4m3", rule: str = "ocp") -> np.ndarray:
    """E8M0 scales (as float32 values ``2^k`` or NaN) for an array of block amaxes.

    ``rule="ocp"``: ``2^(floor(log2 amax) - emax_elem)``, below 2^-127 clamped to
    2^-127, above 2^127 NaN (OCP MX v1.0 §6.3 and its reference code,
    ``microsoft/microxcaling mx/mx_ops.py``).  ``rule="nvidia"``: the smallest power of
    two >= ``fl32(fl32(amax) * fl32(1 / elem_max))``, within 2^-127 .. 2^127 (TE
    ``float_to_e8m0``; cuDNN "quantize_round_up(amax / vmax)").  Non-finite amax: NaN.
    """
    f = _element_format(element_format)
    _choice("rule", rule, MX_RULES)
    a = np.asarray(block_amax, dtype=np.float64)
    if np.any(a < 0):
        raise ValueError("block_amax holds negative values; amaxes are maxima of absolute values")
    if rule == "ocp":
        exps = [_ocp_exponent(float(v), f.emax) for v in a.reshape(-1)]
    else:
        exps = [_nvidia_exponent(float(v), f.max) for v in a.reshape(-1)]
    e = np.array(exps, dtype=np.float64).reshape(a.shape)
    return np.exp2(e).astype(_F32)


def mx_quantize(x: Any, element_format: str | Format = "e4m3", *, axis: int = -1, block_size: int = MX_BLOCK_SIZE,
                rule: str = "ocp", rounding: str | Rounding = "rne") -> tuple[np.ndarray, np.ndarray]:
    """MX block quantization of ``x`` along ``axis``: returns ``(scales, elements)``.

    ``scales`` are float32 E8M0 values (``pl.encode(scales, "e8m0")`` gives the codes),
    shaped like ``x`` with ``axis`` shortened to ``ceil(n / block_size)``; the last block
    may be partial (its amax covers only its own elements).  ``elements`` have ``x``'s
    shape and dtype and hold values of ``element_format``: ``V / X`` rounded with
    ``rounding`` ('rne', as the OCP spec and cuDNN use, or 'rna'), finite overflow
    clamped to ``±elem_max``.  Blocks with a NaN scale have NaN elements.
    ``x ≈ mx_dequantize(scales, elements, axis=axis, block_size=block_size)``.
    """
    xp = _float_array(x)
    f = _element_format(element_format)
    _choice("rule", rule, MX_RULES)
    bs = _int("block_size", block_size, 1)
    r = Rounding.parse(rounding)
    if r not in (Rounding.RNE, Rounding.RNA):
        raise ValueError(f"rounding={r.value!r} not allowed for MX elements; choose 'rne' (OCP) or 'rna'")
    if xp.ndim == 0:
        raise ValueError("x must have at least one dimension (the blocked axis)")
    ax = _axis(axis, xp.ndim)
    blocks, n = _block_view(xp, ax, bs)
    block_amax = np.max(np.abs(blocks.astype(np.float64)), axis=-1)
    scales = mx_scales(block_amax, f, rule)
    finite = np.isfinite(scales)
    quotient = blocks.astype(np.float64) / np.where(finite, scales, 1.0).astype(np.float64)[..., None]
    quotient = np.where(finite[..., None], quotient, 0.0)
    elems = pl_round(quotient, f, rounding=r, overflow="saturate")
    elems = np.where(finite[..., None], elems, np.nan)
    elems = elems.reshape(blocks.shape[:-2] + (-1,))[..., :n].astype(xp.dtype)
    return np.moveaxis(scales, -1, ax), np.moveaxis(elems, -1, ax)


def mx_dequantize(scales: Any, elements: Any, *, axis: int = -1, block_size: int = MX_BLOCK_SIZE) -> np.ndarray:
    """``elements * X`` with each block's scale broadcast over its elements (exact in
    float64; returned in ``elements``' dtype, where it is exact for float32 too unless
    the product leaves the float32 range)."""
    ep = _float_array(elements, "elements")
    sp = _float_array(scales, "scales")
    bs = _int("block_size", block_size, 1)
    ax = _axis(axis, ep.ndim)
    n = ep.shape[ax]
    expected = ep.shape[:ax] + (-(-n // bs),) + ep.shape[ax + 1:]
    if sp.shape != expected:
        raise ValueError(f"scales has shape {sp.shape}; elements of shape {ep.shape} with block_size={bs} "
                         f"along axis={axis} need {expected}")
    full = np.repeat(sp.astype(np.float64), bs, axis=ax)
    full = np.take(full, np.arange(n), axis=ax)
    with np.errstate(over="ignore", under="ignore"):
        return (ep.astype(np.float64) * full).astype(ep.dtype)


# ---- DeepSeek-V3 tile scaling ----------------------------------------------------------------

def _tile(tile: Any) -> tuple[int, int]:
    if not isinstance(tile, (tuple, list)) or len(tile) != 2:
        raise TypeError(f"tile={tile!r} must be a pair (rows, columns), e.g. (1, 128) or (128, 128)")
    return _int("tile[0]", tile[0], 1), _int("tile[1]", tile[1], 1)


def _tile_view(xp: np.ndarray, tr: int, tc: int) -> tuple[np.ndarray, int, int]:
    """(..., M, N) -> (..., M_tiles, tr, N_tiles, tc), zero padded."""
    m, n = xp.shape[-2:]
    mt, nt = -(-m // tr), -(-n // tc)
    padded = np.zeros(xp.shape[:-2] + (mt * tr, nt * tc), dtype=xp.dtype)
    padded[..., :m, :n] = xp
    return padded.reshape(xp.shape[:-2] + (mt, tr, nt, tc)), m, n


def tile_quantize(x: Any, tile: tuple[int, int] = DEEPSEEK_ACTIVATION_TILE, fmt: str | Format = "e4m3", *,
                  amax_floor: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """DeepSeek-V3 tile quantization over the last two axes: returns ``(scales, elements)``.

    ``scales[..., i, j] = fl32(max(amax_tile, amax_floor) / fmt.max)`` (float32, shape
    ``(..., ceil(M / rows), ceil(N / columns))``; edge tiles may be partial), and
    ``elements = round_sat(x / s)`` with the quotient in ``x``'s precision (float32 in
    the reference kernel).  A tile whose scale would be 0 gets scale 1 (see the module notes).
    """
    xp = _float_array(x)
    if xp.ndim < 2:
        raise ValueError(f"x must have at least 2 dimensions (tiles cover the last two); got shape {xp.shape}")
    tr, tc = _tile(tile)
    f = get_format(fmt)
    fmax = _fp8_max(f)
    floor = _real("amax_floor", amax_floor, minimum=0.0)
    tiles, m, n = _tile_view(xp, tr, tc)
    tile_amax = np.max(np.abs(tiles), axis=(-3, -1)).astype(_F32)
    tile_amax = np.maximum(tile_amax, _F32(floor))
    with np.errstate(over="ignore", invalid="ignore"):
        scales = (tile_amax / _F32(fmax)).astype(_F32)
    scales = np.where(scales == 0, _F32(1.0), scales).astype(_F32)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        quotient = tiles / scales.astype(xp.dtype)[..., :, None, :, None]
    elems = pl_round(quotient, f, overflow="saturate")
    elems = elems.reshape(xp.shape[:-2] + (tiles.shape[-4] * tr, tiles.shape[-2] * tc))[..., :m, :n]
    return scales, np.ascontiguousarray(elems)


def tile_dequantize(scales: Any, elements: Any, tile: tuple[int, int] = DEEPSEEK_ACTIVATION_TILE) -> np.ndarray:
    """``elements * s`` with each tile's float32 scale broadcast over it, in float32 as
    DeepSeek's ``weight_dequant_kernel`` does (float64 for float64 elements)."""
    ep = _float_array(elements, "elements")
    sp = _float_array(scales, "scales")
    tr, tc = _tile(tile)
    if ep.ndim < 2:
        raise ValueError(f"elements must have at least 2 dimensions; got shape {ep.shape}")
    m, n = ep.shape[-2:]
    expected = ep.shape[:-2] + (-(-m // tr), -(-n // tc))
    if sp.shape != expected:
        raise ValueError(f"scales has shape {sp.shape}; elements of shape {ep.shape} with tile={tile} need {expected}")
    full = np.repeat(np.repeat(sp, tr, axis=-2), tc, axis=-1)[..., :m, :n].astype(ep.dtype)
    with np.errstate(over="ignore", invalid="ignore"):
        return ep * full


# ---- recipes (data) --------------------------------------------------------------------------

@dataclass(frozen=True)
class CurrentScaling:
    """TE ``Float8CurrentScaling``: a fresh per-tensor scale from each tensor's own amax.

    Defaults as TE (``transformer_engine/common/recipe/__init__.py``): HYBRID formats,
    no power-of-two scales, epsilon 0.
    """

    fp8_format: FP8Formats = HYBRID
    power_2_scale: bool = False
    amax_epsilon: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "fp8_format", get_fp8_formats(self.fp8_format))
        _real("amax_epsilon", self.amax_epsilon, minimum=0.0)

    def scale(self, amax: float, direction: str) -> np.float32:
        return current_scale(amax, self.fp8_format.format(direction), power_2=self.power_2_scale,
                             epsilon=self.amax_epsilon)


@dataclass(frozen=True)
class DelayedScaling:
    """TE ``DelayedScaling``: scales from an amax history (TE defaults: margin 0,
    HYBRID, history 1024, ``"max"``; ``transformer_engine/common/recipe/__init__.py``)."""

    margin: int = 0
    fp8_format: FP8Formats = HYBRID
    amax_history_len: int = 1024
    amax_compute_algo: str = "max"

    def __post_init__(self) -> None:
        object.__setattr__(self, "fp8_format", get_fp8_formats(self.fp8_format))
        _margin(self.margin)
        _int("amax_history_len", self.amax_history_len, 1)
        _choice("amax_compute_algo", self.amax_compute_algo, AMAX_COMPUTE_ALGOS)

    def scaler(self, direction: str) -> DelayedScaler:
        """A fresh :class:`DelayedScaler` for one tensor of ``direction``."""
        return DelayedScaler(self.fp8_format.format(direction), self.amax_history_len,
                             self.amax_compute_algo, self.margin)


@dataclass(frozen=True)
class MXScaling:
    """MX block scaling: ``block_size`` elements along K share an E8M0 scale.

    The default is MXFP8 with the OCP rule; TE's ``MXFP8BlockScaling`` (E4M3) is
    ``MXScaling("e4m3", rule="nvidia")``.
    """

    element_format: str = "e4m3"
    block_size: int = MX_BLOCK_SIZE
    rule: str = "ocp"

    def __post_init__(self) -> None:
        _element_format(self.element_format)
        _int("block_size", self.block_size, 1)
        _choice("rule", self.rule, MX_RULES)

    def quantize(self, x: Any, axis: int = -1) -> tuple[np.ndarray, np.ndarray]:
        return mx_quantize(x, self.element_format, axis=axis, block_size=self.block_size, rule=self.rule)


@dataclass(frozen=True)
class TileScaling:
    """DeepSeek-V3 fine-grained FP8: E4M3 with 1x128 activation tiles and 128x128
    weight tiles, float32 scales (DeepSeek-V3 technical report §3.3;
    ``inference/kernel.py``)."""

    activation_tile: tuple[int, int] = DEEPSEEK_ACTIVATION_TILE
    weight_tile: tuple[int, int] = DEEPSEEK_WEIGHT_TILE
    fmt: str = "e4m3"
    amax_floor: float = 0.0

    def __post_init__(self) -> None:
        _tile(self.activation_tile)
        _tile(self.weight_tile)
        _fp8_max(self.fmt)
        _real("amax_floor", self.amax_floor, minimum=0.0)
