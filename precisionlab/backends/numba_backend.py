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
from ..rounding import Overflow, Rounding, RoundSpec, decode_dtype, fits_float32
from . import _u32 as U

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


# ---- float32 fast path -------------------------------------------------------------
# The same arithmetic in 32-bit lanes (see _u32): exponents carry an offset of 149 so
# every quantity is unsigned; Q = q + 149 is the quantum exponent, E149 = E + 149 the
# input's.  Valid for float32 inputs and formats whose values all fit float32.

@njit(inline="always")
def _f32_core(u, m, emin149, flush_bits):
    """Split |x| into integer significand ``sig`` and find the shift ``s`` to the target grid."""
    a = U.and_(u, 0x7FFFFFFF)
    a = U.sel(U.ult(a, flush_bits), 0, a)
    expf = U.shr(a, 23)
    frac = U.and_(a, 0x7FFFFF)
    sub_in = U.ueq(expf, 0)
    log2frac = U.sub(U.shr(U.as_u32(U.u2f(frac)), 23), 127)
    e149 = U.sel(sub_in, log2frac, U.add(expf, 22))
    sig = U.sel(sub_in, frac, U.or_(frac, 0x800000))
    E149 = U.sel(sub_in, 0, U.sub(expf, 1))
    Q = U.sub(U.sel(U.ult(e149, emin149), emin149, e149), m)
    shift = U.sub(Q, E149)
    s = U.sel(U.ult(31, shift), 31, shift)
    return a, sig, Q, shift, s


@njit(inline="always")
def _f32_decide(u, sig, s, k_rne, k_rna, k_dir, dir_neg, k_rto):
    """Deterministic modes as one increment added before the shift (k_* are 0/1 per call)."""
    mask = U.sub(U.shl(1, s), 1)
    odd = U.and_(U.shr(sig, s), 1)
    negative = U.shr(u, 31)
    inc = U.add(U.and_(U.shr(U.add(mask, odd), 1), U.sub(0, k_rne)),
                U.and_(U.shr(U.add(mask, 1), 1), U.sub(0, k_rna)))
    inc = U.add(inc, U.and_(mask, U.sub(0, U.and_(k_dir, U.sel(U.ueq(negative, dir_neg), 1, 0)))))
    N = U.shr(U.add(sig, inc), s)
    inexact = U.sel(U.ueq(U.and_(sig, mask), 0), 0, 1)
    return U.or_(N, U.and_(inexact, k_rto))


@njit(inline="always")
def _f32_decide_sr(mode, seed, counter, sr_bits, sig, shift, s):
    N = U.shr(sig, s)
    rem = U.sub(sig, U.shl(N, s))
    z = _splitmix64(seed, counter)
    inexact = not U.ueq(rem, 0)
    if mode == 7:
        up = inexact & ((z >> np.uint64(63)) == 1)
    else:
        R = z >> np.uint64(64 - sr_bits)
        d = np.int64(shift) - sr_bits
        r64 = np.uint64(rem)
        if d >= 0:
            f = r64 >> np.uint64(d) if d < 64 else np.uint64(0)
        else:
            f = r64 << np.uint64(-d)
        threshold = (np.uint64(0) - f) if sr_bits == 64 else ((np.uint64(1) << np.uint64(sr_bits)) - f)
        up = inexact & (f > 0) & (R >= threshold)
    return U.add(N, U.b2u(up))


@njit(inline="always")
def _f32_finish(u, a, Q, N, fmin_keep, floor_val, fmax, over_pos, over_neg, inf_val, zero_val, unsigned,
                fnuz):
    """The rounded magnitude N * 2^q through flushing, overflow and special inputs.

    Per-call constants: ``fmin_keep`` results below it flush to 0; ``floor_val`` replaces a
    non-zero input rounded to 0 (no-zero formats); ``over_pos``/``over_neg`` are what a
    finite overflow becomes; ``inf_val``/``zero_val`` are what ±Inf / ±0 inputs become.
    Returns (signed float32 value, negative flag)."""
    negative = U.ult(0x7FFFFFFF, u)
    p = U.sel(U.ult(Q, 23), U.shl(1, U.sel(U.ult(Q, 31), Q, 31)), U.shl(U.sub(Q, 22), 23))
    r = U.u2f(N) * U.as_f32(p)
    r = np.float32(0.0) if r < fmin_keep else r
    r = floor_val if r == np.float32(0.0) else r
    r = (over_neg if negative else over_pos) if r > fmax else r
    r = inf_val if U.ueq(a, 0x7F800000) else r
    r = zero_val if U.ueq(a, 0) else r
    r = np.float32(np.nan) if U.ult(0x7F800000, a) else r
    r = np.float32(np.nan) if (unsigned & negative & (r != np.float32(0.0))) else r
    negative = negative & (not unsigned) & ((not fnuz) | ((r != np.float32(0.0)) & (r == r)))
    return (-r if negative else r), negative


@njit(parallel=True, cache=True)
def _round_f32_kernel(xb, out, start, mode, m, emin149, flush_bits, k_rne, k_rna, k_dir, dir_neg, k_rto, seed,
                      sr_bits, fmin_keep, floor_val, fmax, over_pos, over_neg, inf_val, zero_val, unsigned, fnuz):
    for i in prange(xb.size):
        u = xb[i]
        a, sig, Q, shift, s = _f32_core(u, m, emin149, flush_bits)
        if mode < 6:
            N = _f32_decide(u, sig, s, k_rne, k_rna, k_dir, dir_neg, k_rto)
        else:
            N = _f32_decide_sr(mode, seed, np.uint64(start + i), sr_bits, sig, shift, s)
        out[i] = _f32_finish(u, a, Q, N, fmin_keep, floor_val, fmax, over_pos, over_neg, inf_val, zero_val,
                             unsigned, fnuz)[0]


@njit(parallel=True, cache=True)
def _encode_f32_kernel(xb, out, start, mode, m, emin149, flush_bits, k_rne, k_rna, k_dir, dir_neg, k_rto, seed,
                       sr_bits, fmin_keep, floor_val, fmax, over_pos, over_neg, inf_val, zero_val, unsigned, fnuz,
                       code_base, sign_mask, smallest, smallest_code, max_code, inf_code, nan_code, nan_signed):
    for i in prange(xb.size):
        u = xb[i]
        a, sig, Q, shift, s = _f32_core(u, m, emin149, flush_bits)
        if mode < 6:
            N = _f32_decide(u, sig, s, k_rne, k_rna, k_dir, dir_neg, k_rto)
        else:
            N = _f32_decide_sr(mode, seed, np.uint64(start + i), sr_bits, sig, shift, s)
        r, negative = _f32_finish(u, a, Q, N, fmin_keep, floor_val, fmax, over_pos, over_neg, inf_val, zero_val,
                                  unsigned, fnuz)
        mag = abs(r)
        # N * 2^q in the format: ((q + m + bias) << m) + N - 2^m, q = Q - 149 (code_base = bias + m - 149);
        # values the finish step substituted have fixed codes
        code = U.sub(U.add(U.shl(U.add(Q, code_base), m), N), U.shl(1, m))
        code = U.sel(mag == fmax, max_code, code)
        code = U.sel(mag == smallest, smallest_code, code)
        code = U.sel(mag == np.float32(0.0), 0, code)
        code = U.sel(mag == np.float32(np.inf), inf_code, code)
        code = U.or_(code, U.sel(negative, sign_mask, 0))
        code = U.sel(r != r, U.or_(nan_code, U.sel(negative & nan_signed, sign_mask, 0)), code)
        out[i] = code


def _fast_path(x: np.ndarray, spec: RoundSpec) -> bool:
    return x.dtype == np.float32 and fits_float32(spec.format)


def _params_f32(spec: RoundSpec):
    """Per-call constants of the float32 kernels (the policy, resolved to values)."""
    fmt, mode, policy = spec.format, spec.rounding, spec.overflow
    nan = np.float32(np.nan)
    no_inf = (nan if fmt.nan != "none" else np.float32(fmt.max))
    inf = np.float32(np.inf) if fmt.has_inf else no_inf
    fmax = np.float32(fmt.max)
    if policy is Overflow.DEFAULT:
        pos_inf = mode not in (Rounding.RTZ, Rounding.RTO, Rounding.RDN)
        neg_inf = mode not in (Rounding.RTZ, Rounding.RTO, Rounding.RUP)
        over_pos, over_neg = (inf if pos_inf else fmax), (inf if neg_inf else fmax)
    else:
        over_pos = over_neg = fmax
    inf_val = fmax if policy is Overflow.SATURATE else inf
    flush_below = fmt.smallest_normal if spec.flush_inputs else 0.0
    return (_MODES[mode], np.uint32(fmt.mantissa_bits), np.uint32(fmt.emin + 149),
            np.uint32(np.float32(flush_below).view(np.uint32)),
            np.uint32(mode is Rounding.RNE), np.uint32(mode is Rounding.RNA),
            np.uint32(mode in (Rounding.RUP, Rounding.RDN)), np.uint32(mode is Rounding.RDN),
            np.uint32(mode is Rounding.RTO), np.uint64(spec.seed or 0), spec.sr_bits,
            np.float32(0.0 if spec.keeps_subnormals else fmt.smallest_normal),
            np.float32(0.0 if fmt.has_zero else fmt.smallest_subnormal), fmax, over_pos, over_neg, inf_val,
            np.float32(0.0) if fmt.has_zero else nan, not fmt.signed, fmt.nan == "fnuz")


def round_values(x: np.ndarray, spec: RoundSpec, counter_start: int) -> np.ndarray:
    out = np.empty_like(x)
    if _fast_path(x, spec):
        _round_f32_kernel(x.view(np.uint32), out, np.uint64(counter_start), *_params_f32(spec))
        return out
    _round_kernel(x, out, np.uint64(counter_start), *_params(spec))
    return out


def encode_values(x: np.ndarray, spec: RoundSpec, counter_start: int) -> np.ndarray:
    fmt = spec.format
    nan_code = fmt.nan_code if fmt.nan_code is not None else 0
    inf_code = fmt.inf_code if fmt.inf_code is not None else 0
    if _fast_path(x, spec):
        out = np.empty(x.shape, dtype=fmt.code_dtype)
        smallest_code = 1 if fmt.has_subnormals and fmt.mantissa_bits else (1 << fmt.mantissa_bits) * (fmt.has_zero)
        _encode_f32_kernel(x.view(np.uint32), out, np.uint64(counter_start), *_params_f32(spec),
                           np.uint32((fmt.bias + fmt.mantissa_bits - 149) & 0xFFFFFFFF), np.uint32(fmt.sign_mask),
                           np.float32(fmt.smallest_subnormal), np.uint32(smallest_code),
                           np.uint32(fmt._max_magnitude_code), np.uint32(inf_code), np.uint32(nan_code),
                           fmt.nan in ("ieee", "fn"))
        return out
    out = np.empty(x.shape, dtype=np.uint64)
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
