"""The NumPy reference backend: the definition every other backend must equal.

Rounding works on exact integers.  Every float32/float64 input is split into
``|x| = M * 2^E`` with an integer ``M < 2^53``; the target quantum at that
magnitude is ``2^q`` with ``q = max(floor(log2|x|), emin) - mantissa_bits``;
``M`` is divided by ``2^(q - E)`` into a kept integer ``N`` and a remainder, and
the rounding mode decides from the remainder whether ``N`` goes one step away
from zero.  The result ``N * 2^q`` is exact in float64.  Overflow, flushing,
special values and the missing-zero / unsigned rules are then applied as data
(DESIGN §5).
"""

from __future__ import annotations

import numpy as np

from ..formats import Format
from ..random import random_bits
from ..rounding import Overflow, Rounding, RoundSpec, decode_dtype

name = "numpy"

_U1 = np.uint64(1)


def _shr(x: np.ndarray, n: np.ndarray) -> np.ndarray:
    """x >> n for uint64 arrays, 0 where n >= 64."""
    big = n >= 64
    return np.where(big, np.uint64(0), x >> np.where(big, 0, n).astype(np.uint64))


def _shl(x: np.ndarray, n: np.ndarray) -> np.ndarray:
    """x << n for uint64 arrays (n < 64 by construction)."""
    return x << n.astype(np.uint64)


def round_magnitudes(mag: np.ndarray, negative: np.ndarray, spec: RoundSpec, counter_start: int) -> np.ndarray:
    """Round finite non-negative float64 magnitudes on the format's grid with an unbounded
    exponent range above; returns the rounded magnitudes (float64, exact)."""
    fmt, mode = spec.format, spec.rounding
    m = fmt.mantissa_bits
    frac, exp = np.frexp(mag)                       # mag = frac * 2^exp, frac in [0.5, 1)
    M = np.ldexp(frac, 53).astype(np.uint64)        # integer significand, < 2^53
    E = exp.astype(np.int64) - 53                   # mag = M * 2^E exactly
    e = exp.astype(np.int64) - 1                    # floor(log2(mag)) for mag > 0
    q = np.maximum(e, fmt.emin) - m                 # quantum exponent of the target grid
    shift = q - E                                   # low bits of M that do not fit (>= 0)
    s = np.minimum(shift, 60)                       # M < 2^53: beyond 55 nothing changes
    N = _shr(M, s)                                  # kept integer significand
    rem = M - _shl(N, s)                            # discarded part, in units of 2^E
    half = _shl(np.ones_like(M), np.maximum(s - 1, 0))
    inexact = rem != 0
    if mode is Rounding.RNE:
        up = (rem > half) | ((rem == half) & inexact & ((N & _U1) == 1))
    elif mode is Rounding.RNA:
        up = (rem >= half) & inexact
    elif mode is Rounding.RTZ:
        up = np.zeros_like(inexact)
    elif mode is Rounding.RUP:
        up = inexact & ~negative
    elif mode is Rounding.RDN:
        up = inexact & negative
    elif mode is Rounding.RTO:
        N = N | inexact.astype(np.uint64)
        up = np.zeros_like(inexact)
    elif mode is Rounding.SR:
        nb = spec.sr_bits
        R = random_bits(spec.seed, counter_start, mag.size, nb)
        # f = floor(delta * 2^nb) with delta = rem / 2^shift (shift may exceed 64)
        f = np.where(shift >= nb, _shr(rem, np.maximum(shift - nb, 0)), _shl(rem, np.maximum(nb - shift, 0)))
        with np.errstate(over="ignore"):
            threshold = (np.uint64(0) - f) if nb == 64 else (np.uint64(1 << nb) - f)   # 2^nb - f
        up = inexact & (f > 0) & (R >= threshold)
    elif mode is Rounding.SR_EQUAL:
        R = random_bits(spec.seed, counter_start, mag.size, 1)
        up = inexact & (R == 1)
    else:
        raise AssertionError(mode)
    N = N + up.astype(np.uint64)
    return np.ldexp(N.astype(np.float64), q.astype(np.int32))


def _overflow_to_inf(spec: RoundSpec, negative: np.ndarray) -> np.ndarray:
    """Per element: does a finite overflow go to Inf (True) or to ±max (False)?"""
    mode = spec.rounding
    if spec.overflow is not Overflow.DEFAULT:
        return np.zeros_like(negative)
    if mode in (Rounding.RTZ, Rounding.RTO):
        return np.zeros_like(negative)
    if mode is Rounding.RUP:
        return ~negative
    if mode is Rounding.RDN:
        return negative.copy()
    return np.ones_like(negative)


def round_to_values(x: np.ndarray, spec: RoundSpec, counter_start: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Round a flat float array; returns (magnitude float64, negative bool, is_nan bool).

    The magnitude is finite and exactly representable, or ``inf`` for ±Inf results.
    """
    fmt = spec.format
    x64 = x.astype(np.float64)
    negative = np.signbit(x64)
    is_nan = np.isnan(x64)
    is_inf = np.isinf(x64)
    mag = np.where(is_nan | is_inf, 0.0, np.abs(x64))
    if spec.flush_inputs:
        mag = np.where(mag < fmt.smallest_normal, 0.0, mag)
    rounded = np.where(mag > 0, round_magnitudes(np.where(mag > 0, mag, 1.0), negative, spec, counter_start), 0.0)

    # results below the smallest normal when subnormals are off: flush to zero
    if not spec.keeps_subnormals:
        rounded = np.where(rounded < fmt.smallest_normal, 0.0, rounded)
    # formats without zero: the smallest value is the floor
    if not fmt.has_zero:
        rounded = np.where((rounded == 0) & (mag > 0), fmt.smallest_subnormal, rounded)

    # finite overflow
    over = rounded > fmt.max
    to_inf = over & _overflow_to_inf(spec, negative)
    rounded = np.where(over, fmt.max, rounded)
    # infinite inputs: saturate clamps them, the other policies keep them
    inf_result = to_inf | (is_inf & (spec.overflow is not Overflow.SATURATE))
    rounded = np.where(is_inf & ~inf_result, fmt.max, rounded)
    # an Inf the format cannot hold is NaN, or ±max where there is no NaN either
    if not fmt.has_inf:
        if fmt.nan == "none":
            rounded = np.where(inf_result, fmt.max, rounded)
        else:
            is_nan = is_nan | inf_result
        inf_result = np.zeros_like(inf_result)
    rounded = np.where(inf_result, np.inf, rounded)

    # unsigned formats: below zero is NaN, -0 is +0; formats without zero: ±0 is NaN
    if not fmt.signed:
        is_nan = is_nan | (negative & ((mag > 0) | is_inf))
        negative = np.zeros_like(negative)
    if not fmt.has_zero:
        is_nan = is_nan | (rounded == 0)
    if fmt.nan == "fnuz":
        negative = negative & (rounded != 0)       # no -0
    return rounded, negative, is_nan


def encode_values(x: np.ndarray, spec: RoundSpec, counter_start: int) -> np.ndarray:
    fmt = spec.format
    mag, negative, is_nan = round_to_values(x, spec, counter_start)
    return values_to_codes(mag, negative, is_nan, fmt)


def values_to_codes(mag: np.ndarray, negative: np.ndarray, is_nan: np.ndarray, fmt: Format) -> np.ndarray:
    """Codes of exactly representable magnitudes (``inf`` allowed where the format has Inf)."""
    m = fmt.mantissa_bits
    finite = np.isfinite(mag) & ~is_nan
    safe = np.where(finite & (mag > 0), mag, 1.0)
    frac, exp = np.frexp(safe)
    e = exp.astype(np.int64) - 1
    normal = e >= fmt.emin
    # normal: exponent field e + bias, fraction bits of the significand
    sig = np.ldexp(frac, m + 1).astype(np.uint64)                 # 1.xxx * 2^m, exact
    normal_code = (((e + fmt.bias).astype(np.uint64)) << np.uint64(m)) | (sig - (np.uint64(1) << np.uint64(m)))
    sub_code = np.ldexp(np.where(normal, 0.0, safe), m - fmt.emin).astype(np.uint64)   # multiples of 2^(emin - m)
    code = np.where(normal, normal_code, sub_code)
    code = np.where(mag == 0, np.uint64(0), code)
    if fmt.inf_code is not None:
        code = np.where(np.isinf(mag), np.uint64(fmt.inf_code), code)
    code = code | np.where(negative, np.uint64(fmt.sign_mask), np.uint64(0))
    if fmt.nan_code is not None:
        nan_code = np.uint64(fmt.nan_code)
        if fmt.nan in ("ieee", "fn"):
            nan_code = nan_code | np.where(negative, np.uint64(fmt.sign_mask), np.uint64(0))
        code = np.where(is_nan, nan_code, code)
    return code.astype(fmt.code_dtype)


def round_values(x: np.ndarray, spec: RoundSpec, counter_start: int) -> np.ndarray:
    mag, negative, is_nan = round_to_values(x, spec, counter_start)
    value = np.where(negative, -mag, mag)
    nan_negative = negative & (spec.format.nan != "fnuz")      # the fnuz NaN has no sign
    value = np.where(is_nan, np.where(nan_negative, -np.nan, np.nan), value)
    return value.astype(x.dtype)


def decode_codes(codes: np.ndarray, fmt: Format) -> np.ndarray:
    c = codes.astype(np.uint64)
    m = fmt.mantissa_bits
    negative = (c & np.uint64(fmt.sign_mask)) != 0
    mag = c & ~np.uint64(fmt.sign_mask)
    exp_field = (mag >> np.uint64(m)).astype(np.int64)
    frac = (mag & np.uint64((1 << m) - 1)).astype(np.float64)
    value = np.ldexp(frac + 2.0 ** m, (exp_field - fmt.bias - m).astype(np.int32))
    if fmt.has_zero:      # exponent field 0: subnormals, or only zeros without subnormals
        sub = np.ldexp(frac, fmt.emin - m) if fmt.has_subnormals else np.zeros_like(frac)
        value = np.where(exp_field == 0, sub, value)
    if fmt.inf_code is not None:
        value = np.where(mag == np.uint64(fmt.inf_code), np.inf, value)
    is_nan = np.zeros(c.shape, dtype=bool)
    if fmt.nan == "ieee":
        is_nan = (exp_field == (1 << fmt.exponent_bits) - 1) & (frac != 0)
    elif fmt.nan == "fn":
        is_nan = mag == np.uint64((1 << (fmt.exponent_bits + m)) - 1)
    elif fmt.nan == "fnuz":
        is_nan = c == np.uint64(fmt.sign_mask)
    value = np.where(negative, -value, value)
    value = np.where(is_nan, np.where(negative & (fmt.nan != "fnuz"), -np.nan, np.nan), value)
    return value.astype(decode_dtype(fmt))
