"""Error metrics: ULP distance, error in ULPs, relative error, bits of agreement (DESIGN §2, §10).

Plain vectorised functions of NumPy arrays; every metric returns a float64 array of the
broadcast shape of its inputs.  They are exact where exactness is cheap and matters:

* :func:`ulp_distance` counts representable values through the format's codes (an
  exact integer whenever it is at most 2^53, so always except far apart fp64 values).
* :func:`error_ulps` and :func:`relative_error` take the difference of result and
  reference with an error-free transformation (TwoSum), so the error in ULPs is the
  exact error correctly rounded to float64; a reference given as an object array of
  :class:`fractions.Fraction` (an exact sum that float64 cannot hold) is used exactly.

Definitions (``fmt`` is a :class:`precisionlab.Format`, ``m`` its mantissa bits):

ordinal
    The position of a value among the format's distinct values, counted from zero
    (an int64, exact for every format):
    ``+0`` and ``-0`` are both 0, the smallest positive value is 1, ``-smallest`` is -1,
    and so on; ``±Inf`` are one step beyond ``±max`` (IEEE 754 ``nextUp(max) = +Inf``).
    In a format without subnormals the zero-exponent codes all read as ±0 and count
    once.  In a format without zero (E8M0) the smallest positive value is 0 (and, were
    it signed, the largest negative one -1).
ULP distance
    ``ordinal(actual) - ordinal(expected)``: the signed number of steps between two
    values of the format.  Both NaN: 0.  NaN on one side only: ``+inf``.
ulp(x)
    The spacing of the format's grid at a reference value ``x``:
    ``2^(max(min(floor(log2|x|), emax), emin) - m)`` -- the binade of ``x`` clamped to
    the format's normal binades, so below the smallest normal it is the subnormal
    spacing (also for formats without subnormals) and beyond ``max`` the spacing of
    the top binade.  The CLI's ``error (ulp)`` uses the same definition.
error in ULPs
    ``(actual - reference) / ulp(reference)``, signed.  ``actual == reference``
    (including equal infinities and NaN vs NaN): 0.  Otherwise, with a non-finite
    value on either side: ``±inf`` with the sign of ``actual - reference``
    (``+inf`` when that is NaN, e.g. NaN on one side only).
relative error
    ``|actual - reference| / |reference|``.  Equal values (±0 vs ±0, equal
    infinities, NaN vs NaN): 0.  A non-zero result for a zero reference, any other
    non-finite case, or NaN on one side only: ``+inf``.
bits of agreement
    ``clip(-log2(relative error), 0, p)`` with ``p`` the precision in bits (for a
    format, ``m + 1``): the number of leading significant bits result and reference
    share, ``p`` for an exact result (and for a correctly rounded one, whose relative
    error is at most ``2^-p``), 0 when the error is as large as the reference.
bits lost
    ``p - bits of agreement``.

NaN rule: a NaN compares equal to any NaN, whatever its sign or payload (the emulator
produces one canonical NaN per format, DESIGN §5, and float arrays do not keep the
payload of a low-precision code); a NaN where a number is expected, or the reverse,
is infinitely wrong.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import ml_dtypes
import numpy as np

from .formats import Format, get_format
from .rounding import Rounding, RoundSpec, make_round_spec
from .rounding import round as round_to_format

__all__ = ["as_float64", "representable", "ordinal", "ulp_distance", "ulp", "error_ulps", "relative_error",
           "bits_of_agreement", "bits_lost", "ErrorSummary", "summarize", "Threshold", "overflow_threshold",
           "underflow_threshold", "overflowed", "underflowed", "CastError", "cast_error", "input_dtype",
           "DISTRIBUTIONS", "sample"]

_ML_FLOATS = {np.dtype(getattr(ml_dtypes, n)) for n in dir(ml_dtypes)
              if n.startswith(("float", "bfloat")) and isinstance(getattr(ml_dtypes, n), type)}


# ---------------------------------------------------------------------------
# inputs
# ---------------------------------------------------------------------------


def as_float64(x: Any, arg: str = "x") -> np.ndarray:
    """An array of floats (NumPy float16/32/64 or an ``ml_dtypes`` float such as bfloat16)
    as float64, exactly.  Integer arrays are refused: codes are not values (decode them)."""
    xp = np.asarray(x)
    if xp.dtype.kind == "f" or xp.dtype in _ML_FLOATS:
        if xp.dtype.itemsize > 8:
            raise TypeError(f"{arg} has dtype {xp.dtype}; allowed: float16, float32, float64 or an ml_dtypes float")
        return xp.astype(np.float64)
    raise TypeError(f"{arg} has dtype {xp.dtype}; allowed: float16, float32, float64 or an ml_dtypes float "
                    "(codes must be decoded first: pl.decode(codes, fmt))")


def _bits(x: np.ndarray) -> np.ndarray:
    return x.view(np.uint64)


def representable(x: Any, fmt: str | Format) -> np.ndarray:
    """Boolean array: which elements of ``x`` are values of ``fmt``.

    A value is in the format when rounding it to the format gives it back bit for bit
    as a float64, so ``-0.0`` is not a value of a format without -0 (fnuz, unsigned),
    and NaN is a value of every format that has a NaN.
    """
    fmt = get_format(fmt)
    x64 = as_float64(x)
    is_nan = np.isnan(x64)
    ok = np.zeros(x64.shape, dtype=bool)
    if fmt.nan != "none":
        ok |= is_nan
    candidates = ~is_nan
    if not fmt.signed:
        candidates &= ~(x64 < 0)
    if candidates.any():
        vals = x64[candidates]
        back = round_to_format(vals, fmt, backend="numpy")
        ok[candidates] = _bits(np.ascontiguousarray(back)) == _bits(np.ascontiguousarray(vals))
    return ok


def _check_values(x64: np.ndarray, fmt: Format, arg: str) -> None:
    bad = ~representable(x64, fmt)
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0]) if bad.ndim else ()
        raise ValueError(f"{arg} holds {float(x64[where])!r} at index {where}, which is not a value of "
                         f"format={fmt.name!r}; round it first (pl.round(x, {fmt.name!r}))")


# ---------------------------------------------------------------------------
# ordinals and ULP distance
# ---------------------------------------------------------------------------


def _ordinal_of_values(x64: np.ndarray, fmt: Format) -> np.ndarray:
    """Ordinals of non-NaN values of ``fmt`` (checked by the caller)."""
    from .rounding import encode

    codes = np.asarray(encode(x64, fmt, backend="numpy")).astype(np.uint64)
    mag = (codes & np.uint64((1 << (fmt.exponent_bits + fmt.mantissa_bits)) - 1)).astype(np.int64)
    if fmt.has_zero and not fmt.has_subnormals:
        first_normal = 1 << fmt.mantissa_bits     # every code below it reads as zero
        mag = np.where(mag < first_normal, 0, mag - first_normal + 1)
    negative = (codes & np.uint64(fmt.sign_mask)) != 0 if fmt.signed else np.zeros(codes.shape, dtype=bool)
    return np.where(negative, -mag - (0 if fmt.has_zero else 1), mag)


def ordinal(x: Any, fmt: str | Format) -> np.ndarray:
    """The ordinal (see the module docstring) of each value of ``fmt`` in ``x``, as int64.

    Raises ValueError when ``x`` holds NaN (which has no place in the order) or a
    value that is not in the format.
    """
    fmt = get_format(fmt)
    x64 = as_float64(x)
    if np.isnan(x64).any():
        raise ValueError("x holds NaN, which has no ordinal; mask NaNs first (np.isnan)")
    _check_values(x64, fmt, "x")
    return _ordinal_of_values(x64.reshape(-1), fmt).reshape(x64.shape)


def ulp_distance(actual: Any, expected: Any, fmt: str | Format) -> np.ndarray:
    """Signed number of representable values of ``fmt`` from ``expected`` to ``actual``.

    ``ordinal(actual) - ordinal(expected)`` as float64 (exact up to 2^53, which covers
    every format but fp64, and correctly rounded beyond): 0 for -0 vs +0 and for NaN vs
    NaN, ``+inf`` for NaN vs a number, 1 from ``max`` to ``Inf``.  Both arrays must hold values of ``fmt`` (ValueError
    otherwise, naming the argument and the first offending index); they broadcast.
    """
    fmt = get_format(fmt)
    a64, e64 = np.broadcast_arrays(as_float64(actual, "actual"), as_float64(expected, "expected"))
    _check_values(a64, fmt, "actual")
    _check_values(e64, fmt, "expected")
    a_nan, e_nan = np.isnan(a64), np.isnan(e64)
    both = ~a_nan & ~e_nan
    out = np.where(a_nan & e_nan, 0.0, np.inf)
    if both.any():
        oa = _ordinal_of_values(a64[both], fmt)
        oe = _ordinal_of_values(e64[both], fmt)
        with np.errstate(over="ignore"):
            d = oa - oe                                  # wraps only for fp64 values of opposite signs
        wrapped = ((oa ^ oe) < 0) & ((oa ^ d) < 0)
        dist = d.astype(np.float64)
        if wrapped.any():
            dist[wrapped] = [float(int(x) - int(y)) for x, y in zip(oa[wrapped], oe[wrapped], strict=True)]
        out[both] = dist
    return out


# ---------------------------------------------------------------------------
# ulp of a reference value, errors
# ---------------------------------------------------------------------------


def _is_exact(ref: Any) -> bool:
    return isinstance(ref, np.ndarray) and ref.dtype == object


def _floor_log2(a: Fraction) -> int:
    e = a.numerator.bit_length() - a.denominator.bit_length()
    return e - 1 if Fraction(2) ** e > a else e


def _ulp_exponent(e: np.ndarray, fmt: Format) -> np.ndarray:
    return np.clip(e, fmt.emin, fmt.emax) - fmt.mantissa_bits


def ulp(x: Any, fmt: str | Format) -> np.ndarray:
    """The spacing of ``fmt`` at reference values ``x`` (see the module docstring), float64;
    NaN for non-finite ``x``.  ``x`` may be an object array of Fractions (exact)."""
    fmt = get_format(fmt)
    if _is_exact(x):
        return np.array([float(_ulp_exact(v, fmt)) if _finite(v) else math.nan for v in x.reshape(-1)],
                        dtype=np.float64).reshape(x.shape)
    x64 = as_float64(x)
    finite = np.isfinite(x64)
    _, e = np.frexp(np.where(finite & (x64 != 0), x64, 1.0))
    e = np.where(x64 == 0, fmt.emin, e - 1)
    out = np.ldexp(1.0, _ulp_exponent(e, fmt).astype(np.int32))
    return np.where(finite, out, np.nan)


def _ulp_exact(x: Fraction | float, fmt: Format) -> Fraction:
    a = abs(Fraction(x))
    e = fmt.emin if a == 0 else _floor_log2(a)
    return Fraction(2) ** (min(max(e, fmt.emin), fmt.emax) - fmt.mantissa_bits)


def _finite(v: Any) -> bool:
    return not (isinstance(v, float) and not math.isfinite(v))


def _two_diff(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``a - b = s + t`` exactly (Knuth's TwoSum), for finite a, b whose difference is finite."""
    s = a - b
    bb = s - a
    t = (a - (s - bb)) + (-b - bb)
    return s, t


def _special_error(a: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Signed error for pairs where a value is non-finite: 0 when equal, else ±inf."""
    same = (a == r) | (np.isnan(a) & np.isnan(r))
    with np.errstate(invalid="ignore"):
        below = (a - r) < 0                              # False where the difference is NaN
    return np.where(same, 0.0, np.where(below, -np.inf, np.inf))


def _pairs(actual: Any, reference: Any) -> tuple[np.ndarray, np.ndarray]:
    return np.broadcast_arrays(as_float64(actual, "actual"), as_float64(reference, "reference"))


def _exact_pairs(actual: Any, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a64 = as_float64(actual, "actual")
    a64, ref = np.broadcast_arrays(a64, reference)
    return a64, ref


def error_ulps(actual: Any, reference: Any, fmt: str | Format) -> np.ndarray:
    """``(actual - reference) / ulp(reference)``: the exact error in ULPs of ``fmt`` at the
    reference, correctly rounded to float64 (see the module docstring for special values).

    ``reference`` is a float array (float64 holds every float32 input exactly) or an
    object array of Fractions for references that are not float64 numbers.
    """
    fmt = get_format(fmt)
    if _is_exact(reference):
        a64, ref = _exact_pairs(actual, reference)
        out = np.empty(a64.shape, dtype=np.float64)
        for i, (a, r) in enumerate(zip(a64.reshape(-1).tolist(), ref.reshape(-1).tolist(), strict=True)):
            out.reshape(-1)[i] = _error_ulps_one(a, r, fmt)
        return out
    a64, r64 = _pairs(actual, reference)
    finite = np.isfinite(a64) & np.isfinite(r64)
    out = _special_error(a64, r64)
    if finite.any():
        a, r = a64[finite], r64[finite]
        with np.errstate(over="ignore", invalid="ignore"):
            s, t = _two_diff(a, r)
        u = ulp(r, fmt)
        with np.errstate(over="ignore"):
            val = s / u + t / u
        spill = ~np.isfinite(s)                    # |a - r| beyond float64: rare, do it exactly
        if spill.any():
            val[spill] = [_error_ulps_one(ai, ri, fmt) for ai, ri in zip(a[spill], r[spill], strict=True)]
        out[finite] = val
    return out


def _error_ulps_one(a: float, r: Fraction | float, fmt: Format) -> float:
    if not (_finite(a) and _finite(r)):
        return float(_special_error(np.array([float(a)]), np.array([float(r)]))[0])
    err = (Fraction(a) - Fraction(r)) / _ulp_exact(r, fmt)
    try:
        return float(err)
    except OverflowError:
        return math.inf if err > 0 else -math.inf


def relative_error(actual: Any, reference: Any) -> np.ndarray:
    """``|actual - reference| / |reference|`` as float64 (see the module docstring for zeros
    and special values).  For a float reference the difference is exact (TwoSum) and the
    quotient accurate to about one float64 ulp; for an object array of Fractions the result
    is the exact relative error correctly rounded."""
    if _is_exact(reference):
        a64, ref = _exact_pairs(actual, reference)
        out = np.empty(a64.shape, dtype=np.float64)
        flat = out.reshape(-1)
        for i, (a, r) in enumerate(zip(a64.reshape(-1).tolist(), ref.reshape(-1).tolist(), strict=True)):
            flat[i] = _relative_error_one(a, r)
        return out
    a64, r64 = _pairs(actual, reference)
    out = np.abs(_special_error(a64, r64))        # also zero references: 0 for ±0, else inf
    regular = np.isfinite(a64) & np.isfinite(r64) & (r64 != 0)
    if regular.any():
        a, r = a64[regular], r64[regular]
        with np.errstate(over="ignore", invalid="ignore"):
            s, t = _two_diff(a, r)
        mag = np.abs(r)
        with np.errstate(over="ignore"):
            val = np.abs(s / mag + t / mag)
        spill = ~np.isfinite(s)
        if spill.any():
            val[spill] = [_relative_error_one(ai, ri) for ai, ri in zip(a[spill], r[spill], strict=True)]
        out[regular] = val
    return out


def _relative_error_one(a: float, r: Fraction | float) -> float:
    if not (_finite(a) and _finite(r)):
        return float(abs(_special_error(np.array([float(a)]), np.array([float(r)]))[0]))
    fa, fr = Fraction(a), Fraction(r)
    if fr == 0:
        return 0.0 if fa == 0 else math.inf
    try:
        return float(abs(fa - fr) / abs(fr))
    except OverflowError:
        return math.inf


def _precision(precision: int | str | Format) -> int:
    if isinstance(precision, (str, Format)):
        return get_format(precision).mantissa_bits + 1
    if isinstance(precision, bool) or not isinstance(precision, (int, np.integer)) or precision < 1:
        raise ValueError(f"precision={precision!r} not allowed; give a number of bits >= 1 or a format")
    return int(precision)


def bits_of_agreement(actual: Any, reference: Any, precision: int | str | Format) -> np.ndarray:
    """``clip(-log2(relative_error(actual, reference)), 0, p)``, float64; ``precision`` is ``p``
    in bits or a format (``p = m + 1``).  Exactly ``p`` when the relative error is at most
    ``2^-p`` (so every correctly rounded result of a ``p``-bit format has all ``p`` bits)."""
    p = _precision(precision)
    rel = relative_error(actual, reference)
    with np.errstate(divide="ignore"):
        bits = -np.log2(rel)
    bits = np.where(rel <= 2.0 ** -p, float(p), np.clip(bits, 0.0, float(p)))
    return np.where(rel >= 1.0, 0.0, bits)


def bits_lost(actual: Any, reference: Any, precision: int | str | Format) -> np.ndarray:
    """``p - bits_of_agreement(actual, reference, p)``: 0 for exact or correctly rounded
    results of a ``p``-bit format, ``p`` when nothing agrees."""
    p = _precision(precision)
    return p - bits_of_agreement(actual, reference, p)


# ---------------------------------------------------------------------------
# summaries
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ErrorSummary:
    """Statistics of the magnitudes of an error array: ``count``, ``max``, ``mean``
    (``None`` for an empty array; the mean is the correctly rounded sum, ``math.fsum``,
    divided by the count)."""

    count: int
    max: float | None
    mean: float | None

    def to_dict(self) -> dict[str, Any]:
        return {"count": self.count, "max": self.max, "mean": self.mean}


def summarize(errors: Any) -> ErrorSummary:
    """Max and mean of ``|errors|`` (NaN propagates, as does ``inf``)."""
    e = np.abs(np.asarray(errors, dtype=np.float64)).reshape(-1)
    if e.size == 0:
        return ErrorSummary(0, None, None)
    if np.isnan(e).any():
        return ErrorSummary(int(e.size), math.nan, math.nan)
    mx = float(e.max())
    mean = math.inf if math.isinf(mx) else math.fsum(e.tolist()) / e.size
    return ErrorSummary(int(e.size), mx, mean)


# ---------------------------------------------------------------------------
# overflow and underflow
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Threshold:
    """A magnitude boundary: ``value`` and whether the boundary itself belongs to the set.

    For overflow the set is ``|x| >= value`` (``inclusive``) or ``|x| > value``; for
    underflow it is ``|x| <= value`` (``inclusive``) or ``|x| < value`` (positive ``x``).
    """

    value: float
    inclusive: bool

    def describe(self, kind: str) -> str:
        if kind == "overflow":
            return (">= " if self.inclusive else "> ") + repr(self.value)
        return ("<= " if self.inclusive else "< ") + repr(self.value)

    def to_dict(self) -> dict[str, Any]:
        return {"value": self.value, "inclusive": self.inclusive}


def _round_up_boundary(lower: Fraction, upper: Fraction, upper_n_even: bool, mode: Rounding) -> tuple[Fraction, bool]:
    """For positive ``x`` between adjacent grid points ``lower < upper``: the set of ``x``
    that round to ``upper`` or beyond is ``x >= T`` (``True``) or ``x > T`` (``False``).
    Stochastic modes: the set where rounding up is possible."""
    mid = (lower + upper) / 2
    if mode is Rounding.RNE:
        return mid, upper_n_even
    if mode is Rounding.RNA:
        return mid, True
    if mode in (Rounding.RTZ, Rounding.RDN):
        return upper, True
    if mode is Rounding.RTO:
        return (lower, False) if not upper_n_even else (upper, True)
    return lower, False                                  # RUP, SR, SR_EQUAL


def _threshold_float(v: Fraction) -> float:
    try:
        return float(v)
    except OverflowError:                                # fp64: no finite float64 reaches it
        return math.inf


def overflow_threshold(fmt: str | Format, rounding: str | Rounding = "rne") -> Threshold:
    """Where positive inputs overflow: their rounding with an unbounded exponent range exceeds
    ``max`` (IEEE 754's definition; what the result then is depends on the overflow policy).

    Negative inputs mirror it with ``rup`` and ``rdn`` swapped.  For the stochastic modes the
    threshold bounds where overflow is possible.  From the definitions: the first grid point
    past ``max`` is ``max + u`` with ``u = 2^(emax - m)``; e.g. E4M3 with RNE overflows for
    ``|x| > 464`` (464 ties to the even 448), fp16 for ``|x| >= 65520`` (the tie goes to the
    even 65536).
    """
    fmt = get_format(fmt)
    mode = Rounding.parse(rounding)
    u = Fraction(2) ** (fmt.emax - fmt.mantissa_bits)
    mx = Fraction(fmt.max)
    n_upper = (mx + u) / u
    value, inclusive = _round_up_boundary(mx, mx + u, n_upper.numerator % 2 == 0, mode)
    return Threshold(_threshold_float(value), inclusive)


def underflow_threshold(fmt: str | Format, rounding: str | Rounding = "rne", subnormals: bool = True,
                        flush_inputs: bool = False) -> Threshold | None:
    """Where non-zero positive inputs give zero: below the boundary of rounding up to the
    smallest non-zero result (the smallest subnormal, or the smallest normal when results
    are flushed), or below the smallest normal with ``flush_inputs`` (DAZ).  ``None`` when
    no positive input gives zero (formats without zero; ``rup``, ``rto`` and the stochastic
    modes, which can always round up, with subnormals; fp64 with nearest modes, whose
    boundary 2^-1075 is below every positive float64).  E.g. fp16 with RNE: ``|x| <= 2^-25``.
    """
    fmt = get_format(fmt)
    mode = Rounding.parse(rounding)
    if not fmt.has_zero:
        return None
    if flush_inputs:
        return Threshold(fmt.smallest_normal, False)
    u = Fraction(2) ** (fmt.emin - fmt.mantissa_bits)
    smallest = u if (subnormals and fmt.has_subnormals) else Fraction(2) ** fmt.emin
    n_smallest = smallest / u
    value, inclusive = _round_up_boundary(smallest - u, smallest, n_smallest.numerator % 2 == 0, mode)
    if float(value) == 0:                                # also fp64's 2^-1075: no float64 is that small
        return None
    return Threshold(float(value), not inclusive)


def _widened(fmt: Format) -> Format:
    """``fmt`` with one more exponent bit and the same bias: the same grid, continued upward."""
    try:
        return Format(fmt.exponent_bits + 1, fmt.mantissa_bits, bias=fmt.bias, signed=fmt.signed,
                      has_inf=fmt.has_inf, nan=fmt.nan, has_subnormals=fmt.has_subnormals, has_zero=fmt.has_zero,
                      name=f"{fmt.name}+1e")
    except ValueError:
        raise ValueError(f"format={fmt.name!r}: overflow statistics need the format with one more exponent bit, "
                         "which binary64 cannot hold (exponent_bits >= 10)") from None


def overflowed(x: Any, spec: RoundSpec) -> np.ndarray:
    """Which finite elements of ``x`` overflow when rounded with ``spec``: their rounding with
    an unbounded exponent range (the same format with one more exponent bit, same mode,
    same random bits) exceeds ``max`` in magnitude.  Exact for every mode and policy."""
    x64 = as_float64(x)
    fmt = spec.format
    if fmt.max >= np.finfo(np.float64).max:
        return np.zeros(x64.shape, dtype=bool)           # no finite float64 exceeds fp64's range
    wide = _widened(fmt)
    finite = np.isfinite(x64)
    safe = np.where(finite, x64, 0.0)
    if not fmt.signed:
        safe = np.where(safe < 0, 0.0, safe)             # negative inputs are invalid (NaN), not overflow
    r = round_to_format(safe, wide, spec.rounding, "default", spec.subnormals, spec.flush_inputs, spec.seed,
                        spec.sr_bits if spec.rounding is Rounding.SR else None, spec.via, backend="numpy")
    big = finite & (np.abs(x64) > fmt.max)               # nothing at or below max rounds past it
    return big & ~(np.abs(r) <= fmt.max)                 # beyond the wide format too: Inf/NaN there


def underflowed(x: Any, y: Any) -> np.ndarray:
    """Which non-zero finite inputs ``x`` gave a zero result ``y`` (total underflow)."""
    x64, y64 = np.broadcast_arrays(as_float64(x), as_float64(y, "y"))
    return np.isfinite(x64) & (x64 != 0) & (y64 == 0)


# ---------------------------------------------------------------------------
# the error of a cast
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class CastError:
    """Error statistics of rounding one input array to a format (``precisionlab error cast``).

    ``relative``, ``ulps`` (error in ULPs at the input) and ``bits_lost`` (against the
    format's precision ``m + 1``) summarise the elements that did not overflow; the
    overflowed and underflowed (non-zero input, zero result) elements are counted apart.
    """

    n: int
    in_range: int
    relative: ErrorSummary
    ulps: ErrorSummary
    bits_lost: ErrorSummary
    overflowed: int
    underflowed: int
    overflow_threshold: Threshold
    underflow_threshold: Threshold | None

    @property
    def overflow_fraction(self) -> float:
        return self.overflowed / self.n if self.n else 0.0

    @property
    def underflow_fraction(self) -> float:
        return self.underflowed / self.n if self.n else 0.0


def input_dtype(fmt: str | Format) -> np.dtype:
    """The float dtype that feeds a cast to ``fmt``: float32, or float64 where float32 cannot
    hold the format's results or is (at least) the format itself (fp32, fp64)."""
    from .rounding import check_input_dtype

    fmt = get_format(fmt)
    try:
        check_input_dtype(fmt, np.dtype(np.float32))
    except ValueError:
        return np.dtype(np.float64)
    return np.dtype(np.float64) if fmt.mantissa_bits >= 23 else np.dtype(np.float32)


def cast_error(x: Any, fmt: str | Format, rounding: str | Rounding = "rne", overflow: str = "default",
               subnormals: bool = True, seed: int | None = None, backend: str = "auto") -> CastError:
    """Round the finite array ``x`` to ``fmt`` and measure the error against ``x`` itself."""
    spec = make_round_spec(fmt, rounding, overflow, subnormals, seed=seed)
    xp = np.asarray(x)
    x64 = as_float64(xp).reshape(-1)
    if not np.isfinite(x64).all():
        raise ValueError("x must be finite for cast error statistics (NaN/Inf have no error)")
    y = np.asarray(round_to_format(xp, spec.format, spec.rounding, spec.overflow, spec.subnormals, seed=spec.seed,
                                   backend=backend), dtype=np.float64).reshape(-1)
    over = overflowed(x64, spec)
    keep = ~over
    xs, ys = x64[keep], y[keep]
    return CastError(
        n=int(x64.size), in_range=int(keep.sum()),
        relative=summarize(relative_error(ys, xs)),
        ulps=summarize(error_ulps(ys, xs, spec.format)),
        bits_lost=summarize(bits_lost(ys, xs, spec.format)),
        overflowed=int(over.sum()), underflowed=int(underflowed(x64, y).sum()),
        overflow_threshold=overflow_threshold(spec.format, spec.rounding),
        underflow_threshold=underflow_threshold(spec.format, spec.rounding, spec.subnormals),
    )


# ---------------------------------------------------------------------------
# input distributions (shared by `precisionlab error cast` and check_kernel)
# ---------------------------------------------------------------------------

#: Input distributions by name: standard normal, uniform on [-1, 1), and log-uniform
#: magnitudes (random sign) spanning the format's whole range -- from a quarter of its
#: smallest subnormal to four times its max, clipped to the dtype's finite range -- so
#: that underflow and overflow show.
DISTRIBUTIONS = ("normal", "uniform", "loguniform")


def sample(dist: str, n: int, fmt: str | Format, seed: int = 0, dtype: Any = np.float32) -> np.ndarray:
    """``n`` inputs from the distribution ``dist`` (see :data:`DISTRIBUTIONS`) for casts to
    ``fmt``, as ``dtype``; deterministic in ``(dist, n, fmt, seed)``.  For unsigned formats
    the magnitudes are taken (negative inputs have no error to measure)."""
    import zlib

    fmt = get_format(fmt)
    if dist not in DISTRIBUTIONS:
        raise ValueError(f"dist={dist!r} is not a distribution; allowed: {', '.join(DISTRIBUTIONS)}")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"n={n!r} not allowed; must be an int >= 0")
    dtype = np.dtype(dtype)
    rng = np.random.default_rng([int(seed) & (2**63 - 1), zlib.crc32(dist.encode())])
    if dist == "normal":
        x = rng.standard_normal(n)
    elif dist == "uniform":
        x = rng.uniform(-1.0, 1.0, n)
    else:
        info = np.finfo(dtype)
        lo = max(math.log2(fmt.smallest_subnormal) - 2, math.log2(float(info.smallest_subnormal)))
        hi = min(math.log2(fmt.max) + 2, math.log2(float(info.max)))
        x = np.exp2(rng.uniform(lo, hi, n)) * rng.choice([-1.0, 1.0], n)
        x = np.clip(x, -float(info.max), float(info.max))
    if not fmt.signed:
        x = np.abs(x)
    return x.astype(dtype)
