"""Numba CPU backend: parallel kernels bit-identical to the NumPy reference.

The arithmetic is the reference's (integer significand, quantum exponent, one
decision per mode), written as a branch-free scalar body so LLVM vectorises the
loop.  Mode, overflow policy and format facts are runtime arguments (one compiled
kernel per dtype, cached on disk); stochastic modes have their own kernel so the
SplitMix64 cost is paid only where it is used.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange, types
from numba.extending import intrinsic

from ..formats import Format
from ..rounding import Overflow, RoundSpec, Rounding, decode_dtype

name = "numba"

_MODES = {Rounding.RNE: 0, Rounding.RNA: 1, Rounding.RTZ: 2, Rounding.RUP: 3, Rounding.RDN: 4,
          Rounding.RTO: 5, Rounding.SR: 6, Rounding.SR_EQUAL: 7}


@intrinsic
def _f64_bits(typingctx, x):
    sig = types.uint64(types.float64)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(types.uint64))
    return sig, codegen


@intrinsic
def _bits_f64(typingctx, u):
    sig = types.float64(types.uint64)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(types.float64))
    return sig, codegen


_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


@njit(inline="always")
def _splitmix64(seed, counter):
    z = seed + (counter + np.uint64(1)) * _GAMMA
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


@njit(inline="always")
def _pow2(q):
    """2^q as float64 for -1022 <= q <= 1023."""
    return _bits_f64(np.uint64(q + 1023) << np.uint64(52))


@njit(inline="always")
def _round_one(v, mode, m, emin, seed, counter, sr_bits, flush_below):
    """Round |v| (finite, > 0 after flushing) on the grid; returns (N, q, a) with
    a the flushed magnitude: the result is N * 2^q."""
    u = _f64_bits(v) & np.uint64(0x7FFFFFFFFFFFFFFF)
    a = _bits_f64(u)
    if a < flush_below:
        a = 0.0
    safe = a if a > 0.0 else 1.0
    u = _f64_bits(safe)
    expf = np.int64(u >> np.uint64(52))
    frac = u & np.uint64(0xFFFFFFFFFFFFF)
    sub = expf == 0
    M = frac if sub else frac | np.uint64(1 << 52)
    E = np.int64(-1074) if sub else expf - 1075
    e = np.int64(-1075) if sub else expf - 1023
    q = max(e, emin) - m
    shift = q - E
    s = min(shift, 60)
    N = M >> np.uint64(s)
    rem = M - (N << np.uint64(s))
    half = (np.uint64(1) << np.uint64(s)) >> np.uint64(1)
    inexact = rem != 0
    negative = (_f64_bits(v) >> np.uint64(63)) != 0
    if mode < 6:
        odd = (N & np.uint64(1)) != 0
        up = ((mode == 0) & inexact & ((rem > half) | ((rem == half) & odd))) | \
             ((mode == 1) & inexact & (rem >= half)) | \
             ((mode == 3) & inexact & (not negative)) | \
             ((mode == 4) & inexact & negative)
        if mode == 5:
            N = N | np.uint64(inexact)
    elif mode == 6:
        z = _splitmix64(seed, counter) >> np.uint64(64 - sr_bits)
        d = shift - sr_bits
        if d >= 0:
            f = rem >> np.uint64(d) if d < 64 else np.uint64(0)
        else:
            f = rem << np.uint64(-d)
        threshold = (np.uint64(0) - f) if sr_bits == 64 else ((np.uint64(1) << np.uint64(sr_bits)) - f)
        up = inexact & (f > 0) & (z >= threshold)
    else:
        z = _splitmix64(seed, counter) >> np.uint64(63)
        up = inexact & (z == 1)
    N = N + np.uint64(up)
    return N, q, a


@njit(inline="always")
def _finish(v, N, q, a, mode, m, bias, over_inf_default, policy, fmax, fmin_normal, fsmallest,
            keep_sub, has_zero, has_inf, has_nan, signed, fnuz):
    """Apply flushing, overflow, specials, sign rules; returns (value, class) where class is
    0 finite, 1 flushed/zero, 2 saturated to max, 3 Inf, 4 NaN, 5 smallest (no-zero floor)."""
    negative = (_f64_bits(v) >> np.uint64(63)) != 0
    is_nan = v != v
    is_inf = (not is_nan) and (abs(v) == np.inf)
    if q < -960:
        r = (np.float64(np.int64(N)) * _pow2(q + 64)) * 5.421010862427522e-20
    else:
        r = np.float64(np.int64(N)) * _pow2(q)
    if a == 0.0 or is_nan or is_inf:
        r = 0.0
    cls = 0
    if r == 0.0:
        cls = 1
    if (not keep_sub) and r < fmin_normal:
        r = 0.0
        cls = 1
    if (not has_zero) and r == 0.0 and a > 0.0:
        r = fsmallest
        cls = 5
    if r > fmax:
        to_inf = False
        if policy == 0:
            to_inf = over_inf_default == 1 or (over_inf_default == 2 and not negative) or \
                (over_inf_default == 3 and negative)
        r = fmax
        cls = 3 if to_inf else 2
    if is_inf:
        cls = 2 if policy == 1 else 3
        r = fmax
    if cls == 3:
        if has_inf:
            r = np.inf
        elif has_nan:
            cls = 4
        else:
            cls = 2
    if is_nan:
        cls = 4
    if not signed:
        if negative and r != 0.0:
            cls = 4
        negative = False
    if (not has_zero) and r == 0.0:
        cls = 4
    if fnuz and r == 0.0:
        negative = False
    if cls == 4:
        r = np.nan
        if fnuz:
            negative = False
    return (-r if negative else r), negative, cls


def _params(spec: RoundSpec):
    fmt = spec.format
    mode = _MODES[spec.rounding]
    if spec.rounding in (Rounding.RTZ, Rounding.RTO):
        over_inf = 0
    elif spec.rounding is Rounding.RUP:
        over_inf = 2
    elif spec.rounding is Rounding.RDN:
        over_inf = 3
    else:
        over_inf = 1
    policy = {Overflow.DEFAULT: 0, Overflow.SATURATE: 1, Overflow.SATURATE_FINITE: 2}[spec.overflow]
    seed = np.uint64(spec.seed if spec.seed is not None else 0)
    flush_below = fmt.smallest_normal if spec.flush_inputs else 0.0
    return (mode, fmt.mantissa_bits, fmt.emin, seed, spec.sr_bits, flush_below, fmt.bias, over_inf, policy,
            fmt.max, fmt.smallest_normal, fmt.smallest_subnormal, spec.keeps_subnormals, fmt.has_zero,
            fmt.has_inf, fmt.nan != "none", fmt.signed, fmt.nan == "fnuz")


@njit(parallel=True, cache=True)
def _round_kernel(x, out, start, mode, m, emin, seed, sr_bits, flush_below, bias, over_inf, policy,
                  fmax, fmin_normal, fsmallest, keep_sub, has_zero, has_inf, has_nan, signed, fnuz):
    for i in prange(x.size):
        v = np.float64(x[i])
        N, q, a = _round_one(v, mode, m, emin, seed, np.uint64(start + i), sr_bits, flush_below)
        r, neg, cls = _finish(v, N, q, a, mode, m, bias, over_inf, policy, fmax, fmin_normal, fsmallest,
                              keep_sub, has_zero, has_inf, has_nan, signed, fnuz)
        out[i] = r


@njit(parallel=True, cache=True)
def _encode_kernel(x, out, start, mode, m, emin, seed, sr_bits, flush_below, bias, over_inf, policy,
                   fmax, fmin_normal, fsmallest, keep_sub, has_zero, has_inf, has_nan, signed, fnuz,
                   sign_mask, max_code, inf_code, nan_code, nan_signed):
    for i in prange(x.size):
        v = np.float64(x[i])
        N, q, a = _round_one(v, mode, m, emin, seed, np.uint64(start + i), sr_bits, flush_below)
        r, neg, cls = _finish(v, N, q, a, mode, m, bias, over_inf, policy, fmax, fmin_normal, fsmallest,
                              keep_sub, has_zero, has_inf, has_nan, signed, fnuz)
        code = (np.uint64(q + m + bias) << np.uint64(m)) + N - (np.uint64(1) << np.uint64(m))
        if cls == 1:
            code = np.uint64(0)
        elif cls == 2:
            code = max_code
        elif cls == 3:
            code = inf_code
        elif cls == 5:
            code = np.uint64(0)
        if neg:
            code |= sign_mask
        if cls == 4:
            code = nan_code | (sign_mask if (nan_signed and neg) else np.uint64(0))
        out[i] = code


def round_values(x: np.ndarray, spec: RoundSpec, counter_start: int) -> np.ndarray:
    out = np.empty_like(x)
    _round_kernel(x, out, np.uint64(counter_start), *_params(spec))
    return out


def encode_values(x: np.ndarray, spec: RoundSpec, counter_start: int) -> np.ndarray:
    fmt = spec.format
    out = np.empty(x.shape, dtype=np.uint64)
    nan_code = fmt.nan_code if fmt.nan_code is not None else 0
    inf_code = fmt.inf_code if fmt.inf_code is not None else 0
    _encode_kernel(x, out, np.uint64(counter_start), *_params(spec), np.uint64(fmt.sign_mask),
                   np.uint64(fmt._max_magnitude_code), np.uint64(inf_code), np.uint64(nan_code),
                   fmt.nan in ("ieee", "fn"))
    return out.astype(fmt.code_dtype)


@njit(parallel=True, cache=True)
def _decode_kernel(codes, out, m, bias, emin, has_sub, sign_mask, inf_code, has_inf, nan_kind, e_all_ones):
    mant_mask = (np.uint64(1) << np.uint64(m)) - np.uint64(1)
    for i in prange(codes.size):
        c = np.uint64(codes[i])
        negative = (c & sign_mask) != 0
        mag = c & ~sign_mask
        ef = np.int64(mag >> np.uint64(m))
        fr = np.float64(np.int64(mag & mant_mask))
        if ef == 0 and has_sub:
            r = fr * _pow2(emin - m) if emin - m >= -1022 else (fr * _pow2(emin - m + 64)) * 5.421010862427522e-20
        else:
            r = (fr + _pow2(m)) * _pow2(ef - bias - m) if ef - bias - m >= -1022 else \
                ((fr + _pow2(m)) * _pow2(ef - bias - m + 64)) * 5.421010862427522e-20
        if has_inf and mag == inf_code:
            r = np.inf
        is_nan = False
        if nan_kind == 0:
            is_nan = ef == e_all_ones and fr != 0.0
        elif nan_kind == 1:
            is_nan = ef == e_all_ones and np.uint64(mag & mant_mask) == mant_mask
        elif nan_kind == 2:
            is_nan = c == sign_mask
            if is_nan:
                negative = False
        if is_nan:
            r = np.nan
        out[i] = -r if negative else r


def decode_codes(codes: np.ndarray, fmt: Format) -> np.ndarray:
    out = np.empty(codes.shape, dtype=decode_dtype(fmt))
    nan_kind = {"ieee": 0, "fn": 1, "fnuz": 2, "none": 3}[fmt.nan]
    _decode_kernel(codes, out, fmt.mantissa_bits, fmt.bias, fmt.emin, fmt.has_subnormals,
                   np.uint64(fmt.sign_mask), np.uint64(fmt.inf_code or 0), fmt.has_inf, nan_kind,
                   (1 << fmt.exponent_bits) - 1)
    return out
