"""Rounding to any format: ``round``, ``encode``, ``decode`` (DESIGN §5).

The front ends here validate every argument once into a :class:`RoundSpec` (one
option struct, one validator, as in CPFloat) and hand flat, contiguous arrays to
a backend kernel.  The NumPy backend is the definition; the others are tested to
be bit-identical to it.

Decisions the DESIGN leaves open, made here and documented:

* Rounding is done on the format's full grid including subnormals; with
  ``subnormals=False`` (or a format without subnormals) a non-zero *result* below
  the smallest normal is then flushed to signed zero (tininess after rounding).
  ``flush_inputs=True`` (DAZ) replaces inputs whose magnitude is below the
  target's smallest normal by signed zero before rounding.
* Round-to-odd overflows like round-toward-zero (``default`` gives ±max): it never
  moves past the truncated value by more than the sticky bit.
* Stochastic modes overflow like the nearest modes (``default`` gives ±Inf, or
  NaN / saturation where the format lacks Inf / NaN).
* Formats without NaN (FP4, FP6) have no right answer for a NaN input:
  ``round``/``encode`` raise ``ValueError`` instead of inventing one (ml_dtypes
  returns a zero).  ±Inf saturate there under every policy.
* Formats without zero (E8M0): 0 and -0 are NaN (as in ml_dtypes), positive
  values too small to round to the smallest value give the smallest value.
* Unsigned formats: any value below zero is NaN (also one too small to round to a
  non-zero value); -0 is +0.  An unsigned format without NaN raises ValueError
  for negative inputs, as FP4/FP6 do for NaN.
"""

from __future__ import annotations

import enum
import functools
from dataclasses import dataclass
from typing import Any

import numpy as np

from .backends.arrays import as_array, ascontiguous
from .formats import Format, get_format
from .random import normalize_seed

__all__ = ["Rounding", "Overflow", "RoundSpec", "make_round_spec", "round", "encode", "decode"]


class Rounding(str, enum.Enum):
    """Rounding modes (string values; long aliases accepted by :meth:`parse`)."""

    RNE = "rne"
    RNA = "rna"
    RTZ = "rtz"
    RUP = "rup"
    RDN = "rdn"
    RTO = "rto"
    SR = "sr"
    SR_EQUAL = "sr_equal"

    @classmethod
    def parse(cls, value: str | Rounding, arg: str = "rounding") -> Rounding:
        if isinstance(value, cls):
            return value
        if isinstance(value, str):
            key = value.strip().lower()
            key = _ROUNDING_ALIASES.get(key, key)
            for member in cls:
                if member.value == key:
                    return member
        allowed = ", ".join(m.value for m in cls) + " (aliases: " + ", ".join(_ROUNDING_ALIASES) + ")"
        raise ValueError(f"{arg}={value!r} is not a rounding mode; allowed: {allowed}")

    @property
    def stochastic(self) -> bool:
        return self in (Rounding.SR, Rounding.SR_EQUAL)


_ROUNDING_ALIASES = {
    "nearest_even": "rne", "nearest": "rne", "nearest_away": "rna", "toward_zero": "rtz",
    "truncate": "rtz", "up": "rup", "toward_positive": "rup", "down": "rdn",
    "toward_negative": "rdn", "odd": "rto", "stochastic": "sr", "stochastic_equal": "sr_equal",
}


class Overflow(str, enum.Enum):
    """What happens to values beyond the largest finite one."""

    DEFAULT = "default"
    SATURATE = "saturate"
    SATURATE_FINITE = "saturate_finite"

    @classmethod
    def parse(cls, value: str | Overflow, arg: str = "overflow") -> Overflow:
        if isinstance(value, cls):
            return value
        if isinstance(value, str):
            key = value.strip().lower()
            for member in cls:
                if member.value == key:
                    return member
        allowed = ", ".join(m.value for m in cls)
        raise ValueError(f"{arg}={value!r} is not an overflow policy; allowed: {allowed}")


@dataclass(frozen=True)
class RoundSpec:
    """Everything a rounding kernel needs, validated (see :func:`make_round_spec`)."""

    format: Format
    rounding: Rounding = Rounding.RNE
    overflow: Overflow = Overflow.DEFAULT
    subnormals: bool = True
    flush_inputs: bool = False
    seed: int | None = None
    sr_bits: int = 64
    via: str | None = None

    @property
    def keeps_subnormals(self) -> bool:
        return self.subnormals and self.format.has_subnormals


def _check_bool(arg: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{arg}={value!r} must be True or False")
    return bool(value)


def make_round_spec(fmt: str | Format, rounding: str | Rounding = "rne", overflow: str | Overflow = "default",
                    subnormals: bool = True, flush_inputs: bool = False, seed: int | None = None,
                    sr_bits: int | None = None, via: str | None = None) -> RoundSpec:
    """Validate rounding arguments once; raises ValueError/TypeError naming the argument."""
    fmt = get_format(fmt)
    rounding = Rounding.parse(rounding)
    overflow = Overflow.parse(overflow)
    subnormals = _check_bool("subnormals", subnormals)
    flush_inputs = _check_bool("flush_inputs", flush_inputs)
    if sr_bits is None:
        sr_bits = 64
    elif isinstance(sr_bits, bool) or not isinstance(sr_bits, (int, np.integer)):
        raise TypeError(f"sr_bits={sr_bits!r} must be an int in 1..64 or None")
    elif not 1 <= sr_bits <= 64:
        raise ValueError(f"sr_bits={sr_bits} not allowed; must be 1..64 or None (64)")
    elif rounding is not Rounding.SR:
        raise ValueError(f"sr_bits={sr_bits} only applies to rounding='sr', not rounding={rounding.value!r}")
    if rounding.stochastic:
        if seed is None:
            raise ValueError(f"rounding={rounding.value!r} is stochastic and needs seed=<int>; got seed=None")
        seed = normalize_seed(seed)
    elif seed is not None:
        seed = normalize_seed(seed)
    if via not in (None, "fp32"):
        raise ValueError(f"via={via!r} not allowed; choose None or 'fp32'")
    return RoundSpec(fmt, rounding, overflow, subnormals, flush_inputs, seed, int(sr_bits), via)


@functools.lru_cache(maxsize=512)
def _cached_round_spec(*args: Any) -> RoundSpec:
    return make_round_spec(*args)


def _round_spec(*args: Any) -> RoundSpec:
    """make_round_spec, remembered for repeated calls with the same (hashable) arguments."""
    try:
        return _cached_round_spec(*args)
    except TypeError as exc:
        if "unhashable" not in str(exc):
            raise
        return make_round_spec(*args)


def _float_input(x: Any, arg: str = "x") -> np.ndarray:
    xp = as_array(x)                  # CuPy arrays stay on their device
    if xp.dtype not in (np.float32, np.float64):
        raise TypeError(f"{arg} has dtype {xp.dtype}; allowed: float32, float64 "
                        f"(convert explicitly, e.g. x.astype(np.float32))")
    return xp


@functools.lru_cache(maxsize=256)
def fits_float32(fmt: Format) -> bool:
    """True when every value of ``fmt`` is a float32 value: at most 24 significant bits, and
    the spacing of the lowest binade (2^(emin - m), also without subnormals) at least 2^-149."""
    return fmt.emax <= 127 and fmt.mantissa_bits <= 23 and fmt.emin - fmt.mantissa_bits >= -149


@functools.lru_cache(maxsize=256)
def _contains_float32(fmt: Format) -> bool:
    return fmt.mantissa_bits >= 23 and fmt.emax >= 127 and fmt.emin <= -126 and fmt.smallest_subnormal <= 2.0 ** -149


def check_input_dtype(fmt: Format, dtype: np.dtype, arg: str = "x") -> None:
    """A float32 input can only be rounded to a format whose results fit float32."""
    if dtype == np.float32 and not (fits_float32(fmt) or _contains_float32(fmt)):
        raise ValueError(f"format={fmt.name!r} has results that float32 cannot hold; pass {arg} as float64")


def _prepare(x: Any, spec: RoundSpec, backend: str):
    """The validated, C-contiguous input and the backend kernel module for it."""
    from .backends import select_backend

    xp = _float_input(x)
    if spec.via == "fp32" and xp.dtype == np.float64:
        xp = xp.astype(np.float32).astype(np.float64)
    check_input_dtype(spec.format, xp.dtype)
    xp = ascontiguous(xp).reshape(xp.shape)      # ascontiguousarray makes 0-d arrays 1-d
    kernel = select_backend(backend, xp)
    if spec.format.nan == "none" and xp.size:
        # one read each (a backend's any_nan, or max and min, which propagate NaN); the element-wise
        # search only to name the first offender
        any_nan = getattr(kernel, "any_nan", None)
        if any_nan(xp.reshape(-1)) if any_nan else np.isnan(xp.max()):
            _reject(np.isnan(xp), "NaN", spec.format, "replace NaNs before rounding")
        least = spec.format.smallest_normal if spec.flush_inputs else 0     # negatives of smaller size are 0
        if not spec.format.signed and (xp.min() <= -least if least else xp.min() < 0):
            _reject(np.signbit(xp) & (np.abs(xp) >= least) & (xp != 0), "a negative value", spec.format,
                    "it is unsigned")
    return xp, kernel


def _reject(where: np.ndarray, what: str, fmt: Format, hint: str) -> None:
    """A value the format cannot answer for (it has no NaN to give): a ValueError naming the first."""
    if where.any():
        first = tuple(int(i) for i in np.argwhere(where)[0]) if where.ndim else ()
        raise ValueError(f"x holds {what} (first at index {first}) but format={fmt.name!r} has no NaN; "
                         f"no value is right: {hint}")


def round(x: Any, fmt: str | Format, rounding: str | Rounding = "rne", overflow: str | Overflow = "default",
          subnormals: bool = True, flush_inputs: bool = False, seed: int | None = None,
          sr_bits: int | None = None, via: str | None = None, backend: str = "auto",
          out: np.ndarray | None = None) -> np.ndarray:
    """Round ``x`` to ``fmt``; returns an array of ``x``'s float dtype and shape holding
    values exactly representable in ``fmt`` (NaN stays NaN, ±Inf where the format has them).

    ``out``: a C-contiguous, writeable array of ``x``'s dtype and shape to write the result
    into (and return), as NumPy ufuncs take; ``out=x`` rounds in place.  It saves the
    allocation, which for large arrays costs as much as the rounding itself.
    """
    spec = _round_spec(fmt, rounding, overflow, subnormals, flush_inputs, seed, sr_bits, via)
    xp, kernel = _prepare(x, spec, backend)
    if out is not None:
        _check_out(out, xp)
        if np.may_share_memory(out, xp) and not (out.ctypes.data == xp.ctypes.data and out.strides == xp.strides):
            xp = xp.copy()          # a partial overlap: the kernels read and write element by element
    if out is None:
        return kernel.round_values(xp.reshape(-1), spec, 0).reshape(xp.shape)
    kernel.round_values(xp.reshape(-1), spec, 0, out=out.reshape(-1))
    return out


def _check_out(out: Any, x: np.ndarray) -> None:
    if type(out) is not type(x):
        raise TypeError(f"out must be a {type(x).__module__} array like x, of dtype {x.dtype} and shape {x.shape}; "
                        f"got {type(out).__name__}")
    if out.dtype != x.dtype or out.shape != x.shape:
        raise ValueError(f"out has dtype {out.dtype} and shape {out.shape}; it must have x's dtype {x.dtype} "
                         f"and shape {x.shape}")
    if not (out.flags.c_contiguous and out.flags.writeable):
        raise ValueError("out must be C-contiguous and writeable (np.ascontiguousarray makes a copy that is)")


def encode(x: Any, fmt: str | Format, rounding: str | Rounding = "rne", overflow: str | Overflow = "default",
           subnormals: bool = True, flush_inputs: bool = False, seed: int | None = None,
           sr_bits: int | None = None, via: str | None = None, backend: str = "auto") -> np.ndarray:
    """Round ``x`` to ``fmt`` and return the codes (``fmt.code_dtype``: uint8/16/32/64).

    NaN becomes the canonical quiet NaN code (keeping the sign where the format has one).
    """
    spec = _round_spec(fmt, rounding, overflow, subnormals, flush_inputs, seed, sr_bits, via)
    xp, kernel = _prepare(x, spec, backend)
    return kernel.encode_values(xp.reshape(-1), spec, 0).reshape(xp.shape)


def decode_dtype(fmt: Format) -> np.dtype:
    """float32 where every value of the format is a float32, else float64."""
    return np.dtype(np.float32) if fits_float32(fmt) else np.dtype(np.float64)


def decode(codes: Any, fmt: str | Format, backend: str = "auto") -> np.ndarray:
    """Values of ``codes`` in ``fmt``: float32 for formats inside float32, else float64."""
    from .backends import select_backend

    fmt = get_format(fmt)
    cp = as_array(codes)
    if cp.dtype.kind not in "ui":
        raise TypeError(f"codes has dtype {cp.dtype}; allowed: unsigned or signed integer dtypes")
    if cp.size:
        lo, hi = int(cp.min()), int(cp.max())
        if lo < 0 or hi >= 1 << fmt.bits:
            bad = lo if lo < 0 else hi
            raise ValueError(f"codes holds {bad}, outside 0..{(1 << fmt.bits) - 1} for format={fmt.name!r}")
    cp = ascontiguous(cp.astype(fmt.code_dtype, copy=False)).reshape(cp.shape)
    kernel = select_backend(backend, cp)
    return kernel.decode_codes(cp.reshape(-1), fmt).reshape(cp.shape)

