"""Numba CPU backend: parallel kernels bit-identical to the NumPy reference.

Every kernel is a branch-free scalar body so LLVM vectorises the loop.  ``round`` of
float32 to a format inside float32 works on the bit pattern (integer add and mask,
see the float32 round kernels below), with one kernel per mode and per shape of the
policy, compiled on first use and cached on disk; ``encode`` and float64 inputs use
the reference's arithmetic (integer significand, quantum exponent, one decision per
mode) with one kernel per mode.  Stochastic modes generate SplitMix64 bits in the
kernel, so their cost is paid only where they are used.
"""

from __future__ import annotations

import dataclasses
import functools

import numba
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
def _mix64(z):
    """SplitMix64's finaliser."""
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


@njit(inline="always")
def _splitmix64(seed, counter):
    return _mix64(seed + (counter + np.uint64(1)) * _GAMMA)


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
    # floor(log2 |v|); for a subnormal input from the exponent of float(frac), exact below 2^53
    e = (np.int64(_f64_bits(np.float64(frac)) >> np.uint64(52)) - 2097) if sub else expf - 1023
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
        if negative and (a > 0.0 or is_inf):
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


@functools.lru_cache(maxsize=512)
def _params(spec: RoundSpec):
    """Per-call constants of the general kernels (the order _f64_one unpacks)."""
    fmt = spec.format
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
    return (fmt.mantissa_bits, fmt.emin, seed, spec.sr_bits, flush_below, fmt.bias, over_inf, policy,
            fmt.max, fmt.smallest_normal, fmt.smallest_subnormal, spec.keeps_subnormals, fmt.has_zero,
            fmt.has_inf, fmt.nan != "none", fmt.signed, fmt.nan == "fnuz")


@njit(inline="always")
def _f64_one(v, i, mode, p):
    """Round one value (any float64): returns (value, negative, class, N, q); see _finish."""
    (m, emin, seed, sr_bits, flush_below, bias, over_inf, policy, fmax, fmin_normal, fsmallest,
     keep_sub, has_zero, has_inf, has_nan, signed, fnuz) = p
    N, q, a = _round_one(v, mode, m, emin, seed, i, sr_bits, flush_below)
    r, neg, cls = _finish(v, N, q, a, mode, m, bias, over_inf, policy, fmax, fmin_normal, fsmallest,
                          keep_sub, has_zero, has_inf, has_nan, signed, fnuz)
    return r, neg, cls, N, q


@njit(inline="always")
def _f64_code(neg, cls, N, q, m, bias, k):
    sign_mask, max_code, inf_code, nan_code, nan_signed = k
    code = (np.uint64(q + m + bias) << np.uint64(m)) + N - (np.uint64(1) << np.uint64(m))
    if cls == 1 or cls == 5:
        code = np.uint64(0)
    elif cls == 2:
        code = max_code
    elif cls == 3:
        code = inf_code
    if neg:
        code |= sign_mask
    if cls == 4:
        code = nan_code | (sign_mask if (nan_signed and neg) else np.uint64(0))
    return code


def _make_f64_kernels(mode: int):
    """The general (float64 arithmetic) round and encode kernels of one mode; the mode is a
    compile-time constant for the reason given at _make_f32_kernels."""

    @njit(parallel=True, cache=True)
    def round_kernel(x, out, start, p):
        for i in prange(x.size):
            out[i] = _f64_one(np.float64(x[i]), np.uint64(start + i), mode, p)[0]

    @njit(parallel=True, cache=True)
    def encode_kernel(x, out, start, p, k):
        for i in prange(x.size):
            r, neg, cls, N, q = _f64_one(np.float64(x[i]), np.uint64(start + i), mode, p)
            out[i] = _f64_code(neg, cls, N, q, p[0], p[5], k)

    return round_kernel, encode_kernel


_F64_KERNELS = {mode: _make_f64_kernels(mode) for mode in _MODES.values()}


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
def _f32_decide(u, sig, s, mode):
    """Deterministic modes as one increment added before the shift.  ``mode`` is a literal at
    every call site, so only its branch is compiled into the loop."""
    mask = U.sub(U.shl(1, s), 1)
    if mode == 0:                                   # rne: half - 1, plus the last kept bit
        inc = U.shr(U.add(mask, U.and_(U.shr(sig, s), 1)), 1)
    elif mode == 1:                                 # rna: half
        inc = U.shr(U.add(mask, 1), 1)
    elif mode == 3:                                 # rup: away from zero when positive
        inc = U.sel(U.ult(0x7FFFFFFF, u), 0, mask)
    elif mode == 4:                                 # rdn: away from zero when negative
        inc = U.sel(U.ult(0x7FFFFFFF, u), mask, 0)
    else:                                           # rtz, rto
        inc = U.and_(mask, 0)
    N = U.shr(U.add(sig, inc), s)
    if mode == 5:                                   # rto: sticky bit into the last place
        N = U.or_(N, U.sel(U.ueq(U.and_(sig, mask), 0), 0, 1))
    return N


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
def _f32_finish(u, a, Q, N, c):
    """The rounded magnitude N * 2^q through flushing, overflow and special inputs.

    Per-call constants in ``c`` (see _params_f32): results below ``fmin_keep`` flush to 0;
    ``floor_val`` replaces a non-zero input rounded to 0 (no-zero formats); ``over_pos``/
    ``over_neg`` are what a finite overflow becomes; ``inf_val``/``zero_val`` are what ±Inf / ±0
    inputs become.  Returns (signed float32 value, negative flag)."""
    fmin_keep, floor_val, fmax, over_pos, over_neg, inf_val, zero_val, unsigned, fnuz = c[3:]
    negative = U.ult(0x7FFFFFFF, u)
    p = U.sel(U.ult(Q, 23), U.shl(1, U.sel(U.ult(Q, 31), Q, 31)), U.shl(U.sub(Q, 22), 23))
    r = U.u2f(N) * U.as_f32(p)
    r = np.float32(0.0) if r < fmin_keep else r
    r = floor_val if r == np.float32(0.0) else r
    r = (over_neg if negative else over_pos) if r > fmax else r
    r = inf_val if U.ueq(a, 0x7F800000) else r
    r = zero_val if U.ueq(a, 0) else r
    r = np.float32(np.nan) if U.ult(0x7F800000, a) else r
    r = np.float32(np.nan) if (unsigned & negative & (not U.ueq(a, 0))) else r
    negative = negative & (not unsigned) & ((not fnuz) | ((r != np.float32(0.0)) & (r == r)))
    return (-r if negative else r), negative


@njit(inline="always")
def _f32_one(u, mode, c, seed, counter, sr_bits):
    """Round one float32 (bits ``u``): returns (value, negative, Q, N)."""
    a, sig, Q, shift, s = _f32_core(u, c[0], c[1], c[2])
    if mode < 6:
        N = _f32_decide(u, sig, s, mode)
    else:
        N = _f32_decide_sr(mode, seed, counter, sr_bits, sig, shift, s)
    r, negative = _f32_finish(u, a, Q, N, c)
    return r, negative, Q, N


@njit(inline="always")
def _f32_code(r, negative, Q, N, m, k):
    """The code of a rounded value: ((q + m + bias) << m) + N - 2^m with q = Q - 149
    (``code_base`` = bias + m - 149); values the finish step substituted have fixed codes."""
    code_base, sign_mask, fmax, smallest, smallest_code, max_code, inf_code, nan_code, nan_signed = k
    mag = abs(r)
    code = U.sub(U.add(U.shl(U.add(Q, code_base), m), N), U.shl(1, m))
    code = U.sel(mag == fmax, max_code, code)
    code = U.sel(mag == smallest, smallest_code, code)
    code = U.sel(mag == np.float32(0.0), 0, code)
    code = U.sel(mag == np.float32(np.inf), inf_code, code)
    code = U.or_(code, U.sel(negative, sign_mask, 0))
    return U.sel(r != r, U.or_(nan_code, U.sel(negative & nan_signed, sign_mask, 0)), code)


@njit(inline="always")
def _f32_encode_one(u, mode, c, k, seed, counter, sr_bits):
    r, negative, Q, N = _f32_one(u, mode, c, seed, counter, sr_bits)
    return _f32_code(r, negative, Q, N, c[0], k)


def _make_f32_encode_kernel(mode: int):
    """The float32 encode kernel of one mode.  The mode is a compile-time constant: with a
    runtime mode LLVM if-converts every mode into one loop, and each element pays for all of
    them (SplitMix64 included).  Numba caches each closure separately."""

    @njit(parallel=True, cache=True)
    def encode_kernel(xb, out, start, c, k, seed, sr_bits):
        for i in prange(xb.size):
            out[i] = _f32_encode_one(xb[i], mode, c, k, seed, np.uint64(start + i), sr_bits)

    return encode_kernel


_F32_ENCODE_KERNELS = {mode: _make_f32_encode_kernel(mode) for mode in _MODES.values()}


# ---- float32 round kernels: rounding on the bit pattern ------------------------------
# Rounding |x| at bit ``s`` of its float32 bit pattern (add an increment below bit s, clear
# those bits) rounds the significand, and a carry into the exponent field is the step to the
# next binade, so while the format's last place is at or below the input's implicit bit
# (s <= 23) the whole rounding is a few integer instructions.  Below that (|x| < 2^q, q the
# format's smallest quantum) the result is 0 or 2^q, decided against per-call constants.
# What the policy makes of overflow, flushing, zero, Inf, NaN and the sign is resolved per call
# into constants and into compile-time switches (the kernel key), so a kernel only contains the
# steps its format and policy need and LLVM vectorises the loop without branches.

_NAN32 = 0x7FC00000
_INF32 = 0x7F800000

#: How the rounding position depends on the input (see _f32_position).
_FIXED, _ABOVE, _BELOW, _TWO_SHIFTS = 0, 1, 2, 3
#: Which policy steps a kernel has: the common case, the general steps (DAZ, flush, floor, zero
#: inputs, the fnuz sign rule) for signed formats, the same for unsigned ones.
_PLAIN, _GENERAL, _GENERAL_UNSIGNED = 0, 1, 2

#: Arrays shorter than this run a serial kernel: a parallel launch costs more than it saves.
_PARALLEL_MIN = 1 << 15


@njit(inline="always")
def _f32_position(a, kind, c):
    """The bit of |x|'s pattern ``a`` that becomes the format's last place (``c``: _f32_round_plan).

    _FIXED (emin = -126, m > 0: bf16, tf32): 23 - m everywhere, the format's subnormals being
    float32's at the same relative spacing.  _ABOVE (emin > -126, or m = 0): 23 - m plus the binades
    |x| lies below 2^emin, at most 24 (where |x| < 2^q the result is decided apart).  _BELOW
    (emin < -127): 23 - m for normal inputs; for float32 subnormals from the exponent of float(a),
    their leading bit, at most 22.  _TWO_SHIFTS (emin = -127, e8m0): 23 - m for normal inputs, 22 - m
    for every float32 subnormal (all of them lie in or below the format's lowest binade)."""
    sh = c[0]
    if kind == 0:
        return sh
    e = U.shr(a, 23)
    if kind == 1:
        e = U.sel(U.ueq(e, 0), 1, e)
        s = U.add(sh, U.sub(U.sel(U.ult(e, c[1]), c[1], e), e))
        return U.sel(U.ult(24, s), 24, s)
    if kind == 3:
        return U.sel(U.ueq(e, 0), c[2], sh)
    lead = U.shr(U.as_u32(U.u2f(a)), 23)
    return U.sel(U.ueq(e, 0), U.sub(U.sel(U.ult(lead, c[2]), c[2], lead), c[3]), sh)


@njit(inline="always")
def _f32_round_one(u, w, c, key):
    """Round one float32 (bits ``u``) to the bits of the float32 result.

    ``key`` = (mode, kind, steps, short), compile-time constants (see _f32_round_plan); ``c``
    holds the per-call constants; ``w`` is the element's SplitMix64 state, seed + (i + 1)·γ.
    Stochastic rounding adds the top s bits of the element's word below bit s: the carry out is
    P3109 StochasticA's ``floor(δ·2^N) + R >= 2^N`` (the low bits of R cannot carry when N >= s;
    for N < s the bits below s - N of both are cleared first).  ``short``: 0 for N = 64, 1 for
    23 <= N < 64, 2 for N < 23 (the only case where N < s)."""
    mode, kind, steps, short = key
    (sh, emin_field, lead_min, lead_base, qbits, th_pos, th_neg, flush_bits, keep_min, floor_bits, max_bits,
     over_pos, over_neg, inf_bits, zero_bits, sr_bits, sign_lo, sign_span, f_lo, f_span, f_mask, f_scale) = c
    general = steps != 0
    a = U.and_(u, 0x7FFFFFFF)
    negative = U.ult(0x7FFFFFFF, u)
    if general:                                    # DAZ
        a = U.sel(U.ult(a, flush_bits), 0, a)
    s = _f32_position(a, kind, c)
    mask = U.sub(U.shl(1, s), 1)
    keep = U.sub(0xFFFFFFFF, mask)
    z = np.uint64(0)
    if mode == 6 or mode == 7:
        z = _mix64(w)
    if mode == 6:
        rnd = U.shr(U.shr(np.uint32(z >> np.uint64(32)), U.sub(31, s)), 1)      # the top s bits, s <= 23
        if short == 2:
            low = U.sub(0xFFFFFFFF, U.sub(U.shl(1, U.sel(U.ult(sr_bits, s), U.sub(s, sr_bits), 0)), 1))
            r = U.and_(U.add(U.and_(a, low), U.and_(rnd, low)), keep)
        else:
            r = U.and_(U.add(a, rnd), keep)
    elif mode == 7:
        away = (not U.ueq(U.and_(a, mask), 0)) & ((z >> np.uint64(63)) != 0)
        r = U.add(U.and_(a, keep), U.sel(away, U.add(mask, 1), 0))
    else:
        # the last kept bit; at s = 23 that is the implicit one (a | 2^23 supplies it)
        odd = U.and_(U.shr(U.or_(a, 0x800000), s), 1)
        if mode == 0:
            inc = U.shr(U.add(mask, odd), 1)
        elif mode == 1:
            inc = U.shr(U.add(mask, 1), 1)
        elif mode == 3:
            inc = U.sel(negative, 0, mask)
        elif mode == 4:
            inc = U.sel(negative, mask, 0)
        else:
            inc = U.and_(mask, 0)
        r = U.and_(U.add(a, inc), keep)
        if mode == 5:                              # rto: an even inexact result moves up one place
            r = U.add(r, U.sel(U.ueq(U.and_(a, mask), 0) | U.ueq(odd, 1), 0, U.add(mask, 1)))
    if kind == 1:                                  # |x| < 2^q: 0 or 2^q
        tiny = U.ult(a, qbits)
        if mode == 6:                              # away iff floor(|x| 2^(64-q)), cut to N bits, + z carries
            # (inputs below 2^(q-64) give 0: kept out of the float multiply where they are float32 subnormals)
            f = np.uint64(np.float64(U.as_f32(U.sel(U.ult(U.sub(a, f_lo), f_span), a, 0))) * f_scale)
            if short:
                f = f & f_mask
            up = f > ~z
        elif mode == 7:
            up = ((z >> np.uint64(63)) != 0) & (not U.ueq(a, 0))
        elif mode == 3 or mode == 4:
            up = U.ult(U.sel(negative, th_neg, th_pos), a)
        elif mode == 2:
            up = False
        elif mode == 5:
            up = not U.ueq(a, 0)
        else:
            up = U.ult(th_pos, a)
        r = U.sel(tiny, U.sel(up, qbits, 0), r)
    if general:
        # flush results below the normal range to 0, or to the floor of formats without zero (which
        # also replaces a result of 0; zero inputs are set below)
        r = U.sel(U.ult(r, keep_min), floor_bits, r)
    r = U.sel(U.ult(max_bits, r), U.sel(negative, over_neg, over_pos), r)
    if general:
        r = U.sel(U.ueq(a, 0), zero_bits, r)
    r = U.sel(U.ueq(a, _INF32), inf_bits, r)
    r = U.sel(U.ult(_INF32, a), _NAN32, r)
    if steps == 0:
        return U.or_(r, U.and_(u, 0x80000000))
    if steps == 2:                                 # unsigned: no sign, NaN for a negative input
        return U.sel(negative & (not U.ueq(a, 0)), _NAN32, r)
    signed = U.ult(U.sub(r, sign_lo), sign_span)   # fnuz: not on zero or NaN
    return U.or_(r, U.sel(signed, U.and_(u, 0x80000000), 0))


@njit(inline="always")
def _f32_round_range(xb, ob, start, c, seed, key):
    """Every element of ``xb`` (counters from ``start``); the SplitMix64 state steps by γ per
    element (an induction variable, so no multiply for it in the loop).  Callers pass slices: a
    loop over lo..hi of the whole array made LLVM emit gathers and scatters (3x slower)."""
    w = seed + (start + np.uint64(1)) * _GAMMA
    for i in range(xb.size):
        ob[i] = _f32_round_one(xb[i], w, c, key)
        w += _GAMMA


#: Elements per parallel task of the float32 round kernels.
_CHUNK = 1 << 14


@functools.cache
def _f32_round_kernels(key: tuple):
    """The parallel and the serial round kernel of one key (compiled on first use, cached on disk)."""

    @njit(parallel=True, cache=True)
    def parallel_kernel(xb, ob, start, c, seed):
        n = xb.size
        for k in prange((n + _CHUNK - 1) // _CHUNK):
            U.prefer_wide_vectors()
            lo = k * _CHUNK
            hi = min(lo + _CHUNK, n)
            _f32_round_range(xb[lo:hi], ob[lo:hi], start + np.uint64(lo), c, seed, key)

    @njit(cache=True)
    def serial_kernel(xb, ob, start, c, seed):
        U.prefer_wide_vectors()
        _f32_round_range(xb, ob, start, c, seed, key)

    return parallel_kernel, serial_kernel


@njit(parallel=True, cache=True)
def _count_nan(x):
    n = 0
    for i in prange(x.size):
        n += x[i] != x[i]
    return n


def any_nan(x: np.ndarray) -> bool:
    """Whether the flat float array ``x`` holds a NaN: one read on the backend's threads (the front end's
    check for formats without NaN; NumPy's ``x.max()`` reads 10^7 float32 in about 1.3 ms on one)."""
    with _threads_for(0.1 * x.size):
        return bool(_count_nan(x))


def _bits32(v: float) -> int:
    """The float32 bit pattern of |v| (NaN: the canonical quiet NaN)."""
    b = int(np.array(v, np.float32).view(np.uint32)) & 0x7FFFFFFF
    return _NAN32 if b > _INF32 else b


@functools.lru_cache(maxsize=1024)
def _f32_round_plan(fmt: Format, rounding: Rounding, overflow: Overflow, subnormals: bool, flush_inputs: bool,
                    sr_bits: int):
    """(kernels, constants) of the float32 round kernels for one policy (everything but the seed).

    The kernel has the general ``steps`` where the format or policy needs DAZ, flushing, a floor for
    formats without zero, unsigned or fnuz sign rules; the common case compiles without them."""
    spec = RoundSpec(fmt, rounding, overflow, subnormals, flush_inputs, None, sr_bits)
    m, emin = fmt.mantissa_bits, fmt.emin
    q = emin - m
    _, _, flush_bits, fmin_keep, floor_val, fmax, over_pos, over_neg, inf_val, zero_val, unsigned, fnuz = \
        _params_f32(spec)
    keep_min, floor_bits, max_bits, over_pos, over_neg, inf_bits, zero_bits = (
        _bits32(v) for v in (fmin_keep, floor_val, fmax, over_pos, over_neg, inf_val, zero_val))
    # m = 0 at emin = -126 cuts at the implicit bit, which float32 subnormals lack: the tiny path decides those
    kind = _FIXED if emin == -126 and m else (_ABOVE if emin >= -126 else (_TWO_SHIFTS if emin == -127 else _BELOW))
    mode = _MODES[rounding]
    qbits = _bits32(2.0 ** q)
    half = _bits32(2.0 ** (q - 1)) if q - 1 >= -149 else 0
    # results below 2^q: away from zero iff |x| (bits) exceeds the threshold
    th = {0: (half, half), 1: (max(half - 1, 0),) * 2, 3: (0, 0xFFFFFFFF), 4: (0xFFFFFFFF, 0), 5: (0, 0)}
    th_pos, th_neg = th.get(mode, (0xFFFFFFFF, 0xFFFFFFFF))
    general = bool(flush_inputs or keep_min or not fmt.has_zero or unsigned or fnuz)
    steps = (_GENERAL_UNSIGNED if unsigned else _GENERAL) if general else _PLAIN
    keep_min = max(keep_min, 0 if fmt.has_zero else 1)          # where the flush or the floor applies
    short = 0 if rounding is not Rounding.SR or sr_bits == 64 else (1 if sr_bits >= 23 else 2)
    f_lo = 0x800000 if q > -62 and kind == _ABOVE else 0      # float32 subnormals are below 2^(q-64)
    key = (mode, kind, steps, short)
    u32 = np.uint32
    sub_shift = emin + 276 if kind == _BELOW else (22 - m if kind == _TWO_SHIFTS else 0)
    c = (u32(23 - m), u32(emin + 127 if kind == _ABOVE else 0), u32(sub_shift),
         u32(127 + m), u32(qbits), u32(th_pos), u32(th_neg), u32(flush_bits), u32(keep_min), u32(floor_bits),
         u32(max_bits), u32(over_pos), u32(over_neg), u32(inf_bits), u32(zero_bits), u32(sr_bits),
         u32(1 if fnuz else 0), u32(_INF32 if fnuz else 0xFFFFFFFF), u32(f_lo), u32(qbits - f_lo),
         np.uint64(((1 << 64) - 1) ^ ((1 << (64 - sr_bits)) - 1)), np.float64(2.0 ** (64 - q)))
    return _f32_round_kernels(key), c


def _empty_like(x: np.ndarray) -> np.ndarray:
    """The output array.  A fresh array of tens of MB costs page faults and kernel zeroing on first
    write, as much as the rounding itself; callers that round large arrays repeatedly should pass
    ``out=`` (a library-side buffer pool would hold memory the caller cannot see or free)."""
    return np.empty_like(x)


def _fast_path(x: np.ndarray, spec: RoundSpec) -> bool:
    return x.dtype == np.float32 and fits_float32(spec.format)


@functools.lru_cache(maxsize=512)
def _params_f32(spec: RoundSpec):
    """Per-call constants of the float32 kernels (the policy, resolved to values); the order
    is the one _f32_core and _f32_finish unpack."""
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
    return (np.uint32(fmt.mantissa_bits), np.uint32(fmt.emin + 149), np.uint32(np.float32(flush_below).view(np.uint32)),
            np.float32(0.0 if spec.keeps_subnormals else fmt.smallest_normal),
            np.float32(0.0 if fmt.has_zero else fmt.smallest_subnormal), fmax, over_pos, over_neg, inf_val,
            np.float32(0.0) if fmt.has_zero else nan, not fmt.signed, fmt.nan == "fnuz")


@functools.lru_cache(maxsize=512)
def _code_params_f32(fmt: Format):
    """Per-format constants of the float32 encode kernels (the order _f32_code unpacks)."""
    smallest_code = 1 if fmt.has_subnormals and fmt.mantissa_bits else (1 << fmt.mantissa_bits) * fmt.has_zero
    return (np.uint32((fmt.bias + fmt.mantissa_bits - 149) & 0xFFFFFFFF), np.uint32(fmt.sign_mask),
            np.float32(fmt.max), np.float32(fmt.smallest_subnormal), np.uint32(smallest_code),
            np.uint32(fmt._max_magnitude_code), np.uint32(fmt.inf_code or 0), np.uint32(fmt.nan_code or 0),
            fmt.nan in ("ieee", "fn"))


def round_values(x: np.ndarray, spec: RoundSpec, counter_start: int, out: np.ndarray | None = None) -> np.ndarray:
    out = _empty_like(x) if out is None else out
    if _fast_path(x, spec):
        kernels, c = _f32_round_plan(spec.format, spec.rounding, spec.overflow, spec.subnormals, spec.flush_inputs,
                                     spec.sr_bits)
        kernel = kernels[0] if x.size >= _PARALLEL_MIN else kernels[1]
        kernel(x.view(np.uint32), out.view(np.uint32), np.uint64(counter_start), c, np.uint64(spec.seed or 0))
        return out
    _F64_KERNELS[_MODES[spec.rounding]][0](x, out, np.uint64(counter_start), _params(spec))
    return out


def encode_values(x: np.ndarray, spec: RoundSpec, counter_start: int) -> np.ndarray:
    fmt = spec.format
    if _fast_path(x, spec):
        out = np.empty(x.shape, dtype=fmt.code_dtype)
        kernel = _F32_ENCODE_KERNELS[_MODES[spec.rounding]]
        kernel(x.view(np.uint32), out, np.uint64(counter_start), _params_f32(spec), _code_params_f32(fmt),
               np.uint64(spec.seed or 0), spec.sr_bits)
        return out
    out = np.empty(x.shape, dtype=np.uint64)
    _F64_KERNELS[_MODES[spec.rounding]][1](
        x, out, np.uint64(counter_start), _params(spec),
        (np.uint64(fmt.sign_mask), np.uint64(fmt._max_magnitude_code), np.uint64(fmt.inf_code or 0),
         np.uint64(fmt.nan_code or 0), fmt.nan in ("ieee", "fn")))
    return out.astype(fmt.code_dtype)


@njit(parallel=True, cache=True)
def _decode_kernel(codes, out, m, bias, emin, has_sub, has_zero, sign_mask, inf_code, has_inf, nan_kind,
                   e_all_ones):
    mant_mask = (np.uint64(1) << np.uint64(m)) - np.uint64(1)
    for i in prange(codes.size):
        c = np.uint64(codes[i])
        negative = (c & sign_mask) != 0
        mag = c & ~sign_mask
        ef = np.int64(mag >> np.uint64(m))
        fr = np.float64(np.int64(mag & mant_mask))
        if ef == 0 and has_zero and not has_sub:
            r = 0.0
        elif ef == 0 and has_sub:
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
    _decode_kernel(codes, out, fmt.mantissa_bits, fmt.bias, fmt.emin, fmt.has_subnormals, fmt.has_zero,
                   np.uint64(fmt.sign_mask), np.uint64(fmt.inf_code or 0), fmt.has_inf, nan_kind,
                   (1 << fmt.exponent_bits) - 1)
    return out


# =====================================================================================================
# Matmul (DESIGN §6): compiled kernels for the common accumulation models
#
# ``matmul_values`` has the interface of the NumPy reference and equals it bit for bit.  One
# compiled kernel computes a whole output row (all N columns at once, so the inner loops run
# across n and vectorise) for the models whose arithmetic fits float64 / int64 exactly:
#
# * every value of the formats involved lies in fp32's range (at most 8 exponent bits) and the
#   accumulator has at most 28 fraction bits, so products of operands and the promotion FMA's
#   products are exact float64 values;
# * an addition rounded once to the accumulator is computed as the float64 sum rounded to odd
#   (Boldo & Melquiond: two-sum, then the last bit made sticky), then rounded to the format:
#   exact for every rounding mode when the format has at most 51 fraction bits;
# * the block FMA (``fused``, C early or late_rn) works on integer significands: every term cut
#   to a multiple of 2^(e_ref - n_frac) is below 2^(n_frac + 2), and their sum below 2^53.
#
# Stochastic rounding, ``exact`` steps, ``late_rd``, fused steps with a product_format, wider formats
# and n_frac > 40 run the NumPy reference instead (the same result, slowly).  fp32 accumulation with
# RNE (fp32_sequential, torch_cpu_*, ml_dtypes_dot) uses hardware fp32 FMA / multiply-add directly.
# =====================================================================================================


from ..formats import get_format  # noqa: E402
from . import _gemm  # noqa: E402
from . import numpy_backend as _reference  # noqa: E402

_FP32 = get_format("fp32")


#: Work estimated below this many nanoseconds on one thread runs on the calling thread alone: waking
#: the other threads costs tens of microseconds on an idle machine, and a scheduler time slice
#: (4-20 ms, measured on the shared 2-core machine) when another process holds a core.
SERIAL_BELOW_NS = 500_000


def _thread_count_functions():
    """(get, set) of Numba's thread mask for the calling thread.  Once the pool is up, Numba's own ctypes
    getters are called directly: the public get/set take a multiprocessing lock on every call (about
    1-2 us each, paid several times per small pl.matmul)."""
    from numba.np.ufunc import parallel

    def get() -> int:
        if getattr(parallel, "_is_initialized", False) and callable(getattr(parallel, "_get_num_threads", None)):
            return int(parallel._get_num_threads())
        return numba.get_num_threads()

    def put(n: int) -> None:
        if getattr(parallel, "_is_initialized", False) and callable(getattr(parallel, "_set_num_threads", None)):
            parallel._set_num_threads(n)
        else:
            numba.set_num_threads(n)
    return get, put


_get_threads, _set_threads = _thread_count_functions()


class _threads_for:
    """``with _threads_for(ns):`` runs the kernels inside on one thread when the work (estimated ns on one
    thread) is below SERIAL_BELOW_NS."""

    __slots__ = ("threads",)

    def __init__(self, ns: float) -> None:
        self.threads = 1 if ns >= SERIAL_BELOW_NS else _get_threads()

    def __enter__(self) -> None:
        if self.threads > 1:
            _set_threads(1)

    def __exit__(self, *exc: object) -> None:
        if self.threads > 1:
            _set_threads(self.threads)


def _fma(ty):
    """The fused multiply-add of ``ty`` (float32 or float64) with one rounding, as llvm.fma."""
    @intrinsic
    def fma(typingctx, a, b, c):
        def codegen(context, builder, signature, args):
            return builder.fma(args[0], args[1], args[2])
        return ty(ty, ty, ty), codegen
    return fma


_fma32, _fma64 = _fma(types.float32), _fma(types.float64)


_SIGN = np.uint64(0x8000000000000000)
_ABS = np.uint64(0x7FFFFFFFFFFFFFFF)


@njit(inline="always")
def _add_odd(x, y):
    """``x + y`` in float64 rounded to odd: the RNE sum with its last bit set when inexact."""
    s = x + y
    bb = s - x
    err = (x - (s - bb)) + (y - bb)
    u = np.int64(_f64_bits(s))
    need = (err != 0.0) & ((u & 1) == 0) & (abs(s) < np.inf)
    toward_larger = (err > 0.0) == (s > 0.0)
    return _bits_f64(np.uint64(u + np.int64(need) * (2 * np.int64(toward_larger) - 1)))


@functools.lru_cache(maxsize=512)
def _mode_params(spec: RoundSpec):
    """(mode,) + _params(spec): the rounding constants as the matmul kernels index them."""
    return (_MODES[spec.rounding],) + _params(spec)


@njit(inline="always")
def _fast_consts(P):
    """Loop-invariant constants of the branch-free RNE / RTZ rounding to the format of ``P``."""
    m, emin = P[1], P[2]
    shift = np.uint64(52 - m)
    low = (np.uint64(1) << shift) - np.uint64(1)
    return (P[0] == 2, shift, low, low >> np.uint64(1), _pow2(emin - m) * 4503599627370496.0, _pow2(emin),
            _pow2(m - emin), _pow2(emin - m), P[9], P[12], np.inf if P[14] else np.nan, P[17])


@njit(inline="always")
def _sign_back(r, x, fnuz):
    sign = _f64_bits(x) & _SIGN
    if fnuz and r == 0.0:
        sign = np.uint64(0)
    return _bits_f64(_f64_bits(r) | sign)


@njit(inline="always")
def _rne_fast(x, F):
    """RNE of a float64 to a format of at most 51 fraction bits, default overflow; branch-free so loops vectorise.
    Normal range: add half an ulp (plus the last bit) to the bits and clear the tail; below the smallest
    normal: (|x| + 2^52 quanta) - 2^52 quanta, one float64 RNE on the subnormal grid."""
    shift, low, half, big, tiny, fmax, keep_sub, ion, fnuz = F[1], F[2], F[3], F[4], F[5], F[8], F[9], F[10], F[11]
    ax = abs(x)
    u = _f64_bits(ax)
    rn = _bits_f64((u + half + ((u >> shift) & np.uint64(1))) & ~low)
    rs = (ax + big) - big
    r = rs if ax < tiny else rn
    r = r if (keep_sub or r >= tiny) else 0.0
    r = ion if r > fmax else r
    r = r if ax < np.inf else (ion if ax == np.inf else np.nan)
    return _sign_back(r, x, fnuz)


@njit(inline="always")
def _rtz_fast(x, F):
    """RTZ of a float64 to a format of at most 51 fraction bits, default overflow (finite overflow gives max)."""
    low, tiny, inv_q, q, fmax, keep_sub, ion, fnuz = F[2], F[5], F[6], F[7], F[8], F[9], F[10], F[11]
    ax = abs(x)
    rn = _bits_f64(_f64_bits(ax) & ~low)
    rs = np.floor(ax * inv_q) * q
    r = rs if ax < tiny else rn
    r = r if (keep_sub or r >= tiny) else 0.0
    r = fmax if r > fmax else r
    r = r if ax < np.inf else (ion if ax == np.inf else np.nan)
    return _sign_back(r, x, fnuz)


@njit
def _round_general(x, P):
    """Round a float64 once to the format of ``P`` (the ``round`` kernel's arithmetic), any mode."""
    N, q, a = _round_one(x, P[0], P[1], P[2], P[3], np.uint64(0), P[4], P[5])
    r, neg, cls = _finish(x, N, q, a, P[0], P[1], P[6], P[7], P[8], P[9], P[10], P[11], P[12], P[13], P[14],
                          P[15], P[16], P[17])
    return r


@njit(inline="always")
def _is_fast(P):
    return P[0] == 0 or P[0] == 2


@njit(inline="always")
def _round_fast_p(x, P):
    F = _fast_consts(P)
    return _rtz_fast(x, F) if F[0] else _rne_fast(x, F)


@njit(inline="always")
def _round_any(x, P):
    """Round a float64 once to a format: inline RNE/RTZ, or the general kernel."""
    if _is_fast(P):
        return _round_fast_p(x, P)
    return _round_general(x, P)


@njit(inline="always")
def _add_round(x, y, P):
    """One IEEE addition ``x + y`` rounded once to the format of ``P``."""
    return _round_any(_add_odd(x, y), P)


@njit(inline="always")
def _split(v, emin, m):
    """A finite non-zero value of a format (emin, m) as (significand, lsb exponent, E = max(floor log2, emin))."""
    e = np.int64((_f64_bits(v) >> np.uint64(52)) & np.uint64(0x7FF)) - 1023
    E = max(e, emin)
    lsb = E - m
    return np.int64(abs(v) * _pow2(-lsb)), lsb, E


@njit(inline="always")
def _split_exact(v, emin):
    """Any finite non-zero float64 (C may be wider than the accumulator) as (53-bit significand, lsb, E)."""
    e = np.int64((_f64_bits(v) >> np.uint64(52)) & np.uint64(0x7FF)) - 1023
    lsb = e - 52
    return np.int64(abs(v) * _pow2(-lsb)), lsb, max(e, emin)


@njit(inline="always")
def _cut(t, d, floor_mode, negative):
    """A term's integer significand scaled by 2^d (d < 0: cut toward zero, or toward -inf)."""
    if d >= 0:
        return t << np.int64(d)
    s = -d
    if s > 62:
        return np.int64(1) if (floor_mode and negative and t != 0) else np.int64(0)
    if floor_mode and negative:
        return (t + (np.int64(1) << np.int64(s)) - 1) >> np.int64(s)
    return t >> np.int64(s)


@njit
def _fused_step(acc, a_row, b, k0, k1, n_cols, P_acc, P_rne, c_mode, n_frac, floor_mode, has_floor, floor_e,
                a_emin, a_m, b_emin, b_m, acc_emin, acc_m, emax_buf, sum_buf, flag_buf):
    """The block FMA on products k0..k1 for every column: acc[n] <- D (DESIGN §6 'fused')."""
    early = c_mode == 0
    for n in range(n_cols):
        emax_buf[n] = floor_e if has_floor else -(1 << 40)
        flag_buf[n] = 0                       # bit 0 NaN, 1 +Inf, 2 -Inf, 3 a term is not -0
        c = acc[n]
        if c != c:
            flag_buf[n] |= 1
        elif abs(c) == np.inf:
            flag_buf[n] |= 2 if c > 0 else 4
        if early:
            if c != 0.0 or not (_f64_bits(c) & _SIGN):
                flag_buf[n] |= 8
            if c != 0.0 and abs(c) < np.inf:
                s, lsb, E = _split_exact(c, acc_emin)
                emax_buf[n] = max(emax_buf[n], E)
    for k in range(k0, k1):
        x = a_row[k]
        for n in range(n_cols):
            y = b[k, n]
            p = x * y
            if p != p:
                flag_buf[n] |= 1
            elif abs(p) == np.inf:
                flag_buf[n] |= 2 if p > 0 else 4
            elif p != 0.0:
                flag_buf[n] |= 8
                ex = max(np.int64((_f64_bits(x) >> np.uint64(52)) & np.uint64(0x7FF)) - 1023, a_emin)
                ey = max(np.int64((_f64_bits(y) >> np.uint64(52)) & np.uint64(0x7FF)) - 1023, b_emin)
                emax_buf[n] = max(emax_buf[n], ex + ey)
            elif not (_f64_bits(p) & _SIGN):
                flag_buf[n] |= 8
    for n in range(n_cols):
        sum_buf[n] = 0
        if early:
            c = acc[n]
            if c != 0.0 and abs(c) < np.inf:
                s, lsb, E = _split_exact(c, acc_emin)
                q = emax_buf[n] - n_frac
                t = _cut(s, lsb - q, floor_mode, c < 0)
                sum_buf[n] = -t if c < 0 else t
    for k in range(k0, k1):
        x = a_row[k]
        if x == 0.0 or not (abs(x) < np.inf):
            continue
        sx, lx, Ex = _split(x, a_emin, a_m)
        for n in range(n_cols):
            y = b[k, n]
            if y == 0.0 or not (abs(y) < np.inf):
                continue
            sy, ly, Ey = _split(y, b_emin, b_m)
            neg = (x < 0) != (y < 0)
            t = _cut(sx * sy, lx + ly - (emax_buf[n] - n_frac), floor_mode, neg)
            sum_buf[n] += -t if neg else t
    for n in range(n_cols):
        f = flag_buf[n]
        if f & 7:
            v = np.nan if (f & 1) or (f & 6) == 6 else (np.inf if f & 2 else -np.inf)
            acc[n] = _round_any(v, P_acc)
            continue
        S = sum_buf[n]
        if S == 0:
            v = 0.0 if f & 8 else -0.0
        else:
            v = np.float64(S) * _pow2(emax_buf[n] - n_frac)
        d = _round_any(v, P_acc)
        acc[n] = d if early else _add_round(d, acc[n], P_rne)


@njit(inline="always")
def _fused_step_fast(acc, dec, k0, k1, n_cols, P_acc, P_rne, early, n_frac, floor_mode, has_floor, floor_e,
                     acc_emin, emax_buf, sum_buf, flag_buf, scale_buf):
    """The block FMA as ``_fused_step``, for finite operands, in float64 with exact integers: a product
    (at most 48 bits) times 2^-q is exact, its cut is ``trunc`` (rtz) or ``floor``, and the cut terms
    are integers below 2^(n_frac + 2) whose sum stays below 2^53.  Branch-free loops across n."""
    AE, BE = dec[0], dec[1]
    for n in range(n_cols):
        emax_buf[n] = floor_e if has_floor else -(1 << 40)
        sum_buf[n] = 0.0
        c = acc[n]
        f = np.int64(0)
        if c != c:
            f |= 1
        elif abs(c) == np.inf:
            f |= 2 if c > 0 else 4
        elif early and c != 0.0:
            emax_buf[n] = max(emax_buf[n], _split_exact(c, acc_emin)[2])
        if early and (c != 0.0 or not (_f64_bits(c) & _SIGN)):
            f |= 8
        flag_buf[n] = f
    for k in range(k0, k1):
        ae = np.int64(AE[k])
        bek = BE[k]
        for n in range(n_cols):
            emax_buf[n] = max(emax_buf[n], ae + np.int64(bek[n]))
    for n in range(n_cols):
        scale_buf[n] = _pow2(min(max(n_frac - emax_buf[n], -1000), 1000))
        c = acc[n]
        if early and c != 0.0 and abs(c) < np.inf:
            sum_buf[n] = np.floor(c * scale_buf[n]) if floor_mode else np.trunc(c * scale_buf[n])
    for k in range(k0, k1):
        x = dec[2][k]
        bk = dec[3][k]
        if floor_mode:
            for n in range(n_cols):
                prod = x * bk[n]
                sum_buf[n] += np.floor(prod * scale_buf[n])
                flag_buf[n] |= 8 * np.int64(_f64_bits(prod) != _SIGN)
        else:
            for n in range(n_cols):
                prod = x * bk[n]
                sum_buf[n] += np.trunc(prod * scale_buf[n])
                flag_buf[n] |= 8 * np.int64(_f64_bits(prod) != _SIGN)
    for n in range(n_cols):
        f = flag_buf[n]
        if f & 7:
            v = np.nan if (f & 1) or (f & 6) == 6 else (np.inf if f & 2 else -np.inf)
            acc[n] = _round_any(v, P_acc)
            continue
        S = sum_buf[n]
        if S == 0.0:
            v = 0.0 if f & 8 else -0.0
        else:
            v = S * _pow2(emax_buf[n] - n_frac)
        d = _round_any(v, P_acc)
        acc[n] = d if early else _add_round(d, acc[n], P_rne)


@njit
def _pairwise_step(acc, a_row, b, k0, k1, n_cols, P_acc, P_prod, has_prod, tmp):
    for n in range(n_cols):
        cnt = 0
        for k in range(k0, k1):
            p = a_row[k] * b[k, n]
            tmp[cnt] = _round_any(p, P_prod) if has_prod else p
            cnt += 1
        while cnt > 1:
            j = 0
            for i in range(0, cnt, 2):
                tmp[j] = _add_round(tmp[i], tmp[i + 1], P_acc) if i + 1 < cnt else tmp[i]
                j += 1
            cnt = j
        acc[n] = _add_round(acc[n], tmp[0], P_acc)


@njit
def _ieee_step(acc, a_row, b, k0, k1, n_cols, P_acc, P_prod, has_prod):
    F = _fast_consts(P_acc)
    rne, rtz = P_acc[0] == 0, P_acc[0] == 2
    for k in range(k0, k1):
        x = a_row[k]
        bk = b[k]
        if has_prod:
            for n in range(n_cols):
                acc[n] = _add_round(acc[n], _round_any(x * bk[n], P_prod), P_acc)
        elif rne:                                    # the hot loops: branch-free, vectorised across n
            for n in range(n_cols):
                acc[n] = _rne_fast(_add_odd(acc[n], x * bk[n]), F)
        elif rtz:
            for n in range(n_cols):
                acc[n] = _rtz_fast(_add_odd(acc[n], x * bk[n]), F)
        else:
            for n in range(n_cols):
                acc[n] = _round_general(_add_odd(acc[n], x * bk[n]), P_acc)


@njit
def _ieee_step_fp32(acc, a_row, b, k0, k1, n_cols, has_prod):
    """fp32 accumulation with RNE: one hardware FMA per product (or fp32 multiply, then add)."""
    for k in range(k0, k1):
        x = a_row[k]
        if has_prod:
            for n in range(n_cols):
                acc[n] = acc[n] + x * b[k, n]
        else:
            for n in range(n_cols):
                acc[n] = _fma32(x, b[k, n], acc[n])


@njit
def _ieee_lanes(lanes, a_row, b, k0, k1, n_cols, P_acc, P_prod, has_prod, native, lanes32, a32_row, b32):
    """Products k0..k1 into w partial sums, product k into lane (k - k0) mod w: one call for the whole range."""
    w = lanes.shape[0] if not native else lanes32.shape[0]
    for k in range(k0, k1):
        j = (k - k0) % w
        if native:
            _ieee_step_fp32(lanes32[j], a32_row, b32, k, k + 1, n_cols, has_prod)
        else:
            _ieee_step(lanes[j], a_row, b, k, k + 1, n_cols, P_acc, P_prod, has_prod)


@njit
def _fused_steps(acc, dec, k0, k1, k_fused, n_cols, P_acc, P_rne, early, n_frac, floor_mode, has_floor, floor_e,
                 acc_emin, emax_buf, sum_buf, flag_buf):
    """Consecutive block FMAs over k0..k1 into one running sum (sequential order): one call per row."""
    sums = np.empty(n_cols)
    scales = np.empty(n_cols)
    for j0 in range(k0, k1, k_fused):
        _fused_step_fast(acc, dec, j0, min(j0 + k_fused, k1), n_cols, P_acc, P_rne, early, n_frac, floor_mode,
                         has_floor, floor_e, acc_emin, emax_buf, sums, flag_buf, scales)


@njit
def _step(acc, a_row, b, k0, k1, n_cols, cfg, P_acc, P_rne, P_prod, bufs, a32_row, b32, acc32):
    (step, c_mode, n_frac, floor_mode, has_floor, floor_e, a_emin, a_m, b_emin, b_m, acc_emin, acc_m,
     has_prod, native, fast_fused) = cfg
    if native:
        _ieee_step_fp32(acc32, a32_row, b32, k0, k1, n_cols, has_prod)
    elif step == 0:
        _ieee_step(acc, a_row, b, k0, k1, n_cols, P_acc, P_prod, has_prod)
    elif step == 1 and fast_fused:
        _fused_steps(acc, bufs[4], k0, k1, k1 - k0, n_cols, P_acc, P_rne, c_mode == 0, n_frac, floor_mode,
                     has_floor, floor_e, acc_emin, bufs[0], bufs[1], bufs[2])
    elif step == 1:
        _fused_step(acc, a_row, b, k0, k1, n_cols, P_acc, P_rne, c_mode, n_frac, floor_mode, has_floor, floor_e,
                    a_emin, a_m, b_emin, b_m, acc_emin, acc_m, bufs[0], bufs[1], bufs[2])
    else:
        _pairwise_step(acc, a_row, b, k0, k1, n_cols, P_acc, P_prod, has_prod, bufs[3])


@njit
def _combine(x, y, n_cols, P_acc, native, x32, y32):
    """x[n] <- x[n] + y[n], one accumulator addition per column."""
    if native:
        for n in range(n_cols):
            x32[n] = x32[n] + y32[n]
    else:
        for n in range(n_cols):
            x[n] = _add_round(x[n], y[n], P_acc)


@njit
def _chunk_row(out, out32, c0, a_row, b, a32_row, b32, k_start, k_stop, n_cols, cfg, order, width, k_fused,
               P_acc, P_rne, P_prod, bufs):
    """One chunk of K for all columns, in the spec's order; the result lands in out / out32."""
    native = cfg[13]
    n_steps = (k_stop - k_start + k_fused - 1) // k_fused
    if order == 0 or order == 4:                      # sequential, blocked
        out[:] = c0
        out32[:] = c0.astype(np.float32)
        if order == 0:
            if cfg[0] == 0:                           # ieee: the steps are one loop over k
                _step(out, a_row, b, k_start, k_stop, n_cols, cfg, P_acc, P_rne, P_prod, bufs, a32_row, b32, out32)
                return
            if cfg[0] == 1 and cfg[14]:               # fused, finite operands: one call for all steps
                _fused_steps(out, bufs[4], k_start, k_stop, k_fused, n_cols, P_acc, P_rne, cfg[1] == 0, cfg[2],
                             cfg[3], cfg[4], cfg[5], cfg[10], bufs[0], bufs[1], bufs[2])
                return
            for j in range(n_steps):
                k0 = k_start + j * k_fused
                _step(out, a_row, b, k0, min(k0 + k_fused, k_stop), n_cols, cfg, P_acc, P_rne, P_prod, bufs,
                      a32_row, b32, out32)
            return
        per_block = width // k_fused
        blk = np.empty(n_cols)
        blk32 = np.empty(n_cols, np.float32)
        for j0 in range(0, n_steps, per_block):
            blk[:] = -0.0
            blk32[:] = -0.0
            if cfg[0] == 0:                           # ieee: the block's steps are one loop over k
                k0 = k_start + j0 * k_fused
                _step(blk, a_row, b, k0, min(k0 + per_block * k_fused, k_stop), n_cols, cfg, P_acc, P_rne, P_prod,
                      bufs, a32_row, b32, blk32)
            else:
                for j in range(j0, min(j0 + per_block, n_steps)):
                    k0 = k_start + j * k_fused
                    _step(blk, a_row, b, k0, min(k0 + k_fused, k_stop), n_cols, cfg, P_acc, P_rne, P_prod, bufs,
                          a32_row, b32, blk32)
            _combine(out, blk, n_cols, P_acc, native, out32, blk32)
        return
    if order == 3:                                    # pairwise over the steps
        res = np.empty((max(n_steps, 1), n_cols))
        res32 = np.empty((max(n_steps, 1), n_cols), np.float32)
        res[0, :] = -0.0
        res32[0, :] = -0.0
        for j in range(n_steps):
            res[j, :] = -0.0
            res32[j, :] = -0.0
            k0 = k_start + j * k_fused
            _step(res[j], a_row, b, k0, min(k0 + k_fused, k_stop), n_cols, cfg, P_acc, P_rne, P_prod, bufs,
                  a32_row, b32, res32[j])
        cnt = n_steps
        while cnt > 1:
            jj = 0
            for i in range(0, cnt, 2):
                if i + 1 < cnt:
                    _combine(res[i], res[i + 1], n_cols, P_acc, native, res32[i], res32[i + 1])
                res[jj, :] = res[i]
                res32[jj, :] = res32[i]
                jj += 1
            cnt = jj
        out[:] = c0
        out32[:] = c0.astype(np.float32)
        _combine(out, res[0], n_cols, P_acc, native, out32, res32[0])
        return
    lanes = np.empty((width, n_cols))                 # interleaved (1), lanes (2)
    lanes32 = np.empty((width, n_cols), np.float32)
    lanes[:, :] = -0.0
    lanes32[:, :] = -0.0
    full = n_steps - n_steps % width
    ieee = cfg[0] == 0
    if ieee:
        _ieee_lanes(lanes, a_row, b, k_start, k_start + full, n_cols, P_acc, P_prod, cfg[12], native, lanes32,
                    a32_row, b32)
    else:
        for j in range(full):
            k0 = k_start + j * k_fused
            _step(lanes[j % width], a_row, b, k0, min(k0 + k_fused, k_stop), n_cols, cfg, P_acc, P_rne, P_prod,
                  bufs, a32_row, b32, lanes32[j % width])
    if order == 1:
        if ieee:
            _step(lanes[0], a_row, b, k_start + full, k_stop, n_cols, cfg, P_acc, P_rne, P_prod, bufs, a32_row,
                  b32, lanes32[0])
        for j in range(full, n_steps):
            if ieee:
                break
            k0 = k_start + j * k_fused
            _step(lanes[0], a_row, b, k0, min(k0 + k_fused, k_stop), n_cols, cfg, P_acc, P_rne, P_prod, bufs,
                  a32_row, b32, lanes32[0])
        for i in range(1, width):
            _combine(lanes[0], lanes[i], n_cols, P_acc, native, lanes32[0], lanes32[i])
    else:
        h = width // 2
        while h >= 1:
            for i in range(h):
                _combine(lanes[i], lanes[i + h], n_cols, P_acc, native, lanes32[i], lanes32[i + h])
            h //= 2
        if ieee:
            _step(lanes[0], a_row, b, k_start + full, k_stop, n_cols, cfg, P_acc, P_rne, P_prod, bufs, a32_row,
                  b32, lanes32[0])
        for j in range(full, n_steps):
            if ieee:
                break
            k0 = k_start + j * k_fused
            _step(lanes[0], a_row, b, k0, min(k0 + k_fused, k_stop), n_cols, cfg, P_acc, P_rne, P_prod, bufs,
                  a32_row, b32, lanes32[0])
    out[:] = c0
    out32[:] = c0.astype(np.float32)
    _combine(out, lanes[0], n_cols, P_acc, native, out32, lanes32[0])


@njit(parallel=True, cache=True)
def _matmul_kernel(a, b, c, a32, b32, sa, sb, out, cfg, order, width, k_fused, chunk, promotes, scale_at_promotion,
                   has_sa, has_sb, P_acc, P_rne, P_prod, P_fp32, da, db):
    """Rows of ``out`` (n_tiles, batch, M, T) for column tiles of B (n_tiles, batch, K, T): a tile stays in
    cache while every row of A passes over it."""
    n_tiles, n_batch, K, n_cols = b.shape
    n_rows = a.shape[1]
    native = cfg[13]
    for r in prange(n_tiles * n_batch * n_rows):
        t = r // (n_batch * n_rows)
        bi = (r // n_rows) % n_batch
        m = r % n_rows
        dec = (da[bi, m], db[t, bi], a[bi, m], b[t, bi])
        bufs = (np.empty(n_cols, np.int64), np.empty(n_cols, np.int64), np.empty(n_cols, np.int64),
                np.empty(max(k_fused, 1)), dec)
        row = np.empty(n_cols)
        row32 = np.empty(n_cols, np.float32)
        bt, b32t, ct = b[t, bi], b32[t, bi], c[t, bi, m]
        if not promotes:
            _chunk_row(row, row32, ct, a[bi, m], bt, a32[bi, m], b32t, 0, K, n_cols, cfg, order, width,
                       k_fused, P_acc, P_rne, P_prod, bufs)
            if native:
                for n in range(n_cols):
                    out[t, bi, m, n] = row32[n]
            else:
                out[t, bi, m, :] = row
            continue
        outer = np.empty(n_cols)
        for n in range(n_cols):
            outer[n] = _round_any(ct[n], P_fp32)
        zero = np.full(n_cols, -0.0)
        for k_start in range(0, max(K, 1), chunk):
            k_stop = min(k_start + chunk, K)
            _chunk_row(row, row32, zero, a[bi, m], bt, a32[bi, m], b32t, k_start, k_stop, n_cols, cfg, order,
                       width, k_fused, P_acc, P_rne, P_prod, bufs)
            for n in range(n_cols):
                partial = np.float64(row32[n]) if native else row[n]
                scale = 1.0
                if scale_at_promotion and k_start < K:
                    s_a = sa[bi, m, k_start] if has_sa else 1.0
                    s_b = sb[t, bi, k_start, n] if has_sb else 1.0
                    scale = _round_any(s_a * s_b, P_fp32)
                outer[n] = _add_round(outer[n], partial * scale, P_fp32)
        out[t, bi, m, :] = outer


#: Columns of B per tile: a tile of K x 128 (float64 values and int32 exponents) stays in L2.
_TILE = 128


def _tiles(x: np.ndarray, width: int) -> np.ndarray:
    """(..., N) -> (n_tiles, ..., width), zero-padded: contiguous column tiles."""
    n = x.shape[-1]
    n_tiles = max(-(-n // width), 1)
    padded = np.zeros(x.shape[:-1] + (n_tiles * width,), x.dtype)
    padded[..., :n] = x
    return np.ascontiguousarray(np.moveaxis(padded.reshape(x.shape[:-1] + (n_tiles, width)), -2, 0))


def _exponents(x: np.ndarray, emin: int) -> np.ndarray:
    """E(x) = max(floor(log2|x|), emin) of finite values as int32; zeros get -2^20 (no exponent)."""
    nz = x != 0
    E = np.maximum(np.frexp(np.where(nz, np.abs(x), 1.0))[1].astype(np.int64) - 1, emin)
    return np.where(nz, E, -(1 << 20)).astype(np.int32)


def _fits(fmt: Format, max_fraction_bits: int = 28) -> bool:
    return fmt.exponent_bits <= 8 and fmt.mantissa_bits <= max_fraction_bits


#: Orders the compiled kernels run (the composite ones run as order programs, numba_program.py).
_COMPILED_ORDERS = ("sequential", "interleaved", "lanes", "pairwise", "blocked")


@functools.lru_cache(maxsize=256)
def _compiled(spec) -> bool:
    """Whether the compiled kernels cover ``spec`` exactly (see the section comment)."""
    if spec.stochastic or spec.step == "exact":
        return False
    if spec.order.parts or spec.order.kind not in _COMPILED_ORDERS or spec.scale_at not in ("operands", "promotion"):
        return False
    inputs = [spec.a_format, spec.effective_b_format]
    if not all(_fits(f, 23) for f in inputs):
        return False
    if not all(_fits(f) for f in (spec.accumulator, spec.effective_c_format)):
        return False
    if spec.product_format is not None and not _fits(spec.product_format):
        return False
    if spec.step == "fused":
        return (spec.c_mode != "late_rd" and spec.n_frac is not None and spec.n_frac <= 40 and spec.k_fused <= 64
                and spec.product_format is None)
    return True


@functools.lru_cache(maxsize=256)
def _gemm_plan(spec) -> tuple[str, np.ndarray] | None:
    """(kind, rounding constants) when the register-blocked kernels of _gemm run ``spec``, else None:
    ``ieee`` steps with RNE into an accumulator with subnormals -- fp32 (exact or fp32-rounded products),
    or an IEEE-like format inside float32 (exact products) -- operands and C that are float32 values, no
    promotion, an order other than ``pairwise``."""
    fmts = (spec.a_format, spec.effective_b_format, spec.effective_c_format)
    if not (spec.step == "ieee" and spec.step_rounding is Rounding.RNE and spec.accumulator_subnormals
            and not spec.promotes and spec.order.kind in _gemm.ORDERS and not spec.order.parts
            and all(fits_float32(f) for f in fmts)):
        return None
    acc = spec.accumulator
    if acc == _FP32:
        if spec.product_format is None:
            return "fma32", _NO_CONSTANTS
        return ("mul_add32", _NO_CONSTANTS) if spec.product_format == _FP32 else None
    ieee_like = (acc.signed and acc.has_inf and acc.nan == "ieee" and acc.has_subnormals and acc.has_zero
                 and fits_float32(acc))
    if spec.product_format is not None or not ieee_like:
        return None
    kind = "rne64" if _gemm.double_rounding_is_safe(acc, *fmts) else "rne64_odd"
    return kind, _gemm.rounding_constants(acc)


_NO_CONSTANTS = np.zeros(5, np.int64)


@functools.lru_cache(maxsize=256)
def _output_specs(spec, seed: int | None) -> tuple[RoundSpec, ...]:
    return tuple(rs for rs in (spec.via_spec(seed), spec.output_spec(seed)) if rs is not None)


def _keeps_float32(rs: RoundSpec) -> bool:
    """Whether the rounding leaves every float32 value as it is (fp32 itself, Inf kept, subnormals kept)."""
    return (rs.format == _FP32 and rs.overflow is Overflow.DEFAULT and rs.keeps_subnormals and not rs.flush_inputs
            and not rs.rounding.stochastic)


def _nan_only_from_nan(fmt: Format) -> bool:
    """Whether rounding to ``fmt`` gives NaN only for a NaN (it has Inf, a sign and a zero)."""
    return fmt.has_inf and fmt.nan == "ieee" and fmt.signed and fmt.has_zero


def _round_output(out: np.ndarray, spec, seed: int | None) -> np.ndarray:
    """``output_via`` then the output rounding; float32 in, float32 out where the format allows.

    ``out`` holds the canonical NaN (the tiled kernels store it); the float32 kernels keep it, so the NaN
    is made canonical again only after a rounding that can turn a number into NaN, or one in float64.  A
    rounding that keeps every float32 value is skipped."""
    for rs in _output_specs(spec, seed):
        if out.dtype == np.float32 and _keeps_float32(rs):
            continue
        if out.dtype == np.float32 and not fits_float32(rs.format):
            out = out.astype(np.float64)
        out = round_values(out.reshape(-1), rs, 0).reshape(out.shape)
        if out.dtype != np.float32 or not _nan_only_from_nan(rs.format):
            np.copyto(out, np.nan, where=np.isnan(out))             # one NaN, as the reference
    return out


def _operands_times_scales(a, b, a_scale, b_scale, spec):
    """With ``scale_at="operands"``: each operand times its scales, rounded once to fp32."""
    if spec.scale_at == "operands" and a_scale is not None:
        a = _times_fp32(a, a_scale)
    if spec.scale_at == "operands" and b_scale is not None:
        b = _times_fp32(b, b_scale)
    return a, b


def _matmul_tiled(a, b, c, a_scale, b_scale, spec, seed, plan) -> np.ndarray:
    kind, constants = plan
    a, b = (np.ascontiguousarray(x) for x in _operands_times_scales(a, b, a_scale, b_scale, spec))
    c = np.broadcast_to(c, c.shape)                 # read-only, any strides: one compiled signature per layout
    out = _gemm.gemm(kind, a, b, c, spec.order.kind, spec.order.width or 1, constants, _threads_for)
    return _round_output(out, spec, seed)


def _tiled_leaves(order) -> bool:
    """Whether every plain order nested in ``order`` runs in the tiled kernels (no strided, no pairwise)."""
    if order.kind == "strided" or (not order.parts and order.kind not in _gemm.ORDERS):
        return False
    return all(_tiled_leaves(p) for p in order.parts)


@functools.lru_cache(maxsize=256)
def _composite_plan(spec) -> tuple[str, np.ndarray] | None:
    """The tiled plan of a composite order with an fp32 accumulator: its plain parts run as tiled GEMMs
    over their K ranges, the additions that join them as float32 additions (fp32 RNE)."""
    if not (spec.order.parts and spec.order.kind in ("split", "group", "blocked") and _tiled_leaves(spec.order)):
        return None
    plan = _gemm_plan(dataclasses.replace(spec, order="sequential"))
    return plan if plan is not None and plan[0] in ("fma32", "mul_add32") else None


def _gemm_over(a, b, acc, k0, k1, plan, order_kind: str, width: int, inner: int = 1):
    """``acc`` + the products k0..k1 in one tiled GEMM of ``order_kind`` (see _gemm.gemm)."""
    kind, constants = plan
    return _gemm.gemm(kind, np.ascontiguousarray(a[:, :, k0:k1]), np.ascontiguousarray(b[:, k0:k1, :]), acc,
                      order_kind, width, constants, _threads_for, inner)


def _tiled_sum(a, b, acc, order, k0, k1, plan):
    """The reference's chunk_sum(products k0..k1, acc, order) of every output element (composite_sum's
    recursion; ``acc`` float32 (nb, M, N))."""
    if k1 <= k0:
        return acc
    w = order.width
    if not order.parts:
        return _gemm_over(a, b, acc, k0, k1, plan, order.kind, w or 1)
    inner = order.parts[0]
    if order.kind == "group":
        return acc + _tiled_sum(a, b, np.full(acc.shape, -0.0, np.float32), inner, k0, k1, plan)
    if order.kind == "split":
        head = k0 + (k1 - k0) // w * w
        acc = _tiled_sum(a, b, acc, order.parts[0], k0, head, plan)
        return _tiled_sum(a, b, acc, order.parts[1], head, k1, plan)
    if not inner.parts and inner.kind in ("sequential", "interleaved"):  # blocked(kc, interleaved(v)): one GEMM
        return _gemm_over(a, b, acc, k0, k1, plan, "blocked", w, inner.width or 1)
    for start in range(k0, k1, w):                                   # blocked(kc, inner)
        acc = acc + _tiled_sum(a, b, np.full(acc.shape, -0.0, np.float32), inner, start, min(start + w, k1), plan)
    return acc


def _matmul_composite_tiled(a, b, c, a_scale, b_scale, spec, seed, plan) -> np.ndarray:
    a, b = _operands_times_scales(a, b, a_scale, b_scale, spec)
    acc = np.array(np.broadcast_to(c, c.shape), np.float32)          # C fits float32 (the plan checks)
    return _round_output(_tiled_sum(a, b, acc, spec.order, 0, a.shape[2], plan), spec, seed)


# ---- flush-to-zero accumulators ------------------------------------------------------------
# An fp32 accumulator that flushes subnormal results (accumulator_subnormals=False: AMX, YNNPACK,
# CDNA) flushes nothing when every value the accumulation adds is an integer multiple of 2^-126:
# products, sums, and their fp32 roundings then stay multiples of 2^-126 (a multiple below 2^-102
# is a float32 value, so rounding keeps it; above, float32's grid is itself coarser), and a nonzero
# multiple of 2^-126 is normal.  A float32 value with exponent field f is a multiple of 2^(max(f,1)-150),
# so the condition holds when the smallest such power over the nonzero elements of A, plus that of
# B, is at least -126, and that of C too.  Then the spec keeping subnormals gives the same bits and
# runs in the tiled kernels; otherwise the order program flushes step by step.

@njit(cache=True)
def _min_quantum(x):
    """min over nonzero elements of float32 bits ``x`` of max(f, 1) - 150 (f: the exponent field);
    105 when every element is zero."""
    U.prefer_wide_vectors()
    lo = np.uint32(255)
    for i in range(x.size):
        v = U.and_(x[i], 0x7FFFFFFF)
        f = U.shr(v, 23)
        key = U.sel(U.ueq(v, 0), 255, U.sel(U.ueq(f, 0), 1, f))
        lo = U.sel(U.ult(key, lo), key, lo)
    return np.int64(lo) - 150


def _distinct(c: np.ndarray) -> np.ndarray:
    """The elements of ``c`` without the repeats of its broadcast (zero-stride) axes, contiguous."""
    return np.ascontiguousarray(c[tuple(slice(None) if st else slice(0, 1) for st in c.strides)])


def _flush_cannot_fire(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> bool:
    if not all(x.dtype == np.float32 for x in (a, b, c)):
        return False
    q = [_min_quantum(np.ascontiguousarray(x).reshape(-1).view(np.uint32)) for x in (a, b)]
    return q[0] + q[1] >= -126 and _min_quantum(_distinct(c).reshape(-1).view(np.uint32)) >= -126


@functools.lru_cache(maxsize=256)
def _keeping_subnormals(spec):
    """``spec`` with an fp32 accumulator that keeps subnormals, where the tiled kernels run that one."""
    if (spec.accumulator != _FP32 or spec.accumulator_subnormals or spec.step != "ieee" or spec.stochastic
            or spec.scale_at != "operands"):
        return None
    keep = dataclasses.replace(spec, accumulator_subnormals=True)
    tiled = _composite_plan(keep) if keep.order.parts else _gemm_plan(keep)
    return keep if tiled is not None else None


# ---- per-tensor scales on the products ---------------------------------------------------------------
# scale_at="products" multiplies each (fp32) product by its A scale, then its B scale, each rounded to
# fp32 (torch._scaled_mm on CPU).  With one float32 scale per operand that is three float32 multiplies
# and the add in the tiled kernels (kind scaled32); other scales run in the reference.

def _products_fit_fp32(fa: Format, fb: Format) -> bool:
    """Whether float32 holds every product of two values of ``fa`` and ``fb`` exactly (a multiply is exact)."""
    quantum = (fa.emin - fa.mantissa_bits) + (fb.emin - fb.mantissa_bits)       # of the smallest product
    return (fa.mantissa_bits + fb.mantissa_bits + 2 <= 24 and quantum >= -149
            and fa.max * fb.max <= float(np.finfo(np.float32).max))


@functools.lru_cache(maxsize=256)
def _scaled_products_tiled(spec) -> bool:
    if spec.scale_at != "products":
        return False
    plan = _gemm_plan(spec)
    if plan is None:
        return False
    return plan[0] == "mul_add32" or (plan[0] == "fma32" and _products_fit_fp32(spec.a_format,
                                                                                spec.effective_b_format))


def _one_float32(scale: np.ndarray | None) -> float | None:
    """The scale's one value where every element holds the same float32 value (None: scale 1), else None."""
    if scale is None:
        return 1.0
    s = scale.flat[0] if scale.size else 1.0
    return float(s) if np.float32(s) == s and bool((scale == s).all()) else None


def _scaled32_plan(scales: list[float]) -> tuple[str, np.ndarray]:
    """The tiled plan of kind scaled32: the two scales' float32 bits in the constants."""
    rc = np.zeros(5, np.int64)
    rc[:2] = np.array(scales, np.float32).view(np.uint32)
    return "scaled32", rc


def matmul_values(a: np.ndarray, b: np.ndarray, c: np.ndarray, a_scale: np.ndarray | None,
                  b_scale: np.ndarray | None, spec, seed: int | None) -> np.ndarray:
    """The kernel interface of the NumPy reference (same arguments, same bits)."""
    from . import numba_program

    keep = _keeping_subnormals(spec)
    if keep is not None and a_scale is None and b_scale is None and _flush_cannot_fire(a, b, c):
        spec = keep
    if _scaled_products_tiled(spec):
        scales = [_one_float32(s) for s in (a_scale, b_scale)]
        if None not in scales:
            return _matmul_tiled(a, b, c, None, None, spec, seed, _scaled32_plan(scales))
    composite = _composite_plan(spec) if spec.scale_at == "operands" else None
    if composite is not None:
        return _matmul_composite_tiled(a, b, c, a_scale, b_scale, spec, seed, composite)
    if not _compiled(spec):
        if not numba_program.covers(spec):
            return _reference.matmul_values(a, b, c, a_scale, b_scale, spec, seed)
        a, b, c = _scaled_operands(a, b, c, a_scale, b_scale, spec)[:3]
        with _threads_for(a.shape[0] * a.shape[1] * a.shape[2] * b.shape[2] + c.size):
            return _round_output(numba_program.matmul_values(a, b, c, spec, _TILE), spec, seed)
    plan = _gemm_plan(spec)
    if plan is not None:
        return _matmul_tiled(a, b, c, a_scale, b_scale, spec, seed, plan)
    with _threads_for(a.shape[0] * a.shape[1] * a.shape[2] * b.shape[2] + c.size):
        return _matmul_rows(a, b, c, a_scale, b_scale, spec, seed)


def _matmul_rows(a: np.ndarray, b: np.ndarray, c: np.ndarray, a_scale: np.ndarray | None,
                 b_scale: np.ndarray | None, spec, seed: int | None) -> np.ndarray:
    """The row kernel (_matmul_kernel) for every other compiled model."""
    a, b, c, a_scale, b_scale = _scaled_operands(a, b, c, a_scale, b_scale, spec)
    a_emin, a_m = spec.a_format.emin, spec.a_format.mantissa_bits
    b_emin, b_m = spec.effective_b_format.emin, spec.effective_b_format.mantissa_bits
    fp32_spec = RoundSpec(_FP32)
    if spec.scale_at == "operands" and a_scale is not None:          # the operands are fp32 values now
        a_emin, a_m = _FP32.emin, _FP32.mantissa_bits
    if spec.scale_at == "operands" and b_scale is not None:
        b_emin, b_m = _FP32.emin, _FP32.mantissa_bits
    acc = spec.accumulator_spec(seed)
    native = (spec.step == "ieee" and acc.format == _FP32 and acc.rounding is Rounding.RNE and acc.subnormals
              and (spec.product_format is None or spec.product_format == _FP32)
              and fits_float32(spec.effective_c_format))
    step = {"ieee": 0, "fused": 1, "pairwise": 2}[spec.step]
    N = b.shape[2]
    width = min(_TILE, max(N, 1))
    n_tiles = max(-(-N // width), 1)
    fast_fused = spec.step == "fused" and bool(np.isfinite(a).all() and np.isfinite(b).all())
    if fast_fused:
        da = _exponents(a, a_emin)
        db = _tiles(_exponents(b, b_emin), width)
    else:
        da = np.zeros((a.shape[0], a.shape[1], 0), np.int32)
        db = np.zeros((n_tiles, b.shape[0], 0, width), np.int32)
    cfg = (step, {"early": 0, "late_rn": 1}.get(spec.c_mode, 0), spec.n_frac or 0, spec.align_rounding == "floor",
           spec.ref_exp_floor is not None, spec.ref_exp_floor or 0, a_emin, a_m, b_emin, b_m,
           acc.format.emin, acc.format.mantissa_bits, spec.product_format is not None, native, fast_fused)
    order = {"sequential": 0, "interleaved": 1, "lanes": 2, "pairwise": 3, "blocked": 4}[spec.order.kind]
    order_width = spec.order.width or 1
    prod = spec.product_spec() or fp32_spec
    K = a.shape[2]
    chunk = spec.promote_every or max(K, 1)
    a32 = a.astype(np.float32) if native else np.zeros((a.shape[0], a.shape[1], 0), np.float32)
    b32 = _tiles(b.astype(np.float32), width) if native else np.zeros((n_tiles, b.shape[0], 0, width), np.float32)
    bt = _tiles(b, width)
    out = np.empty((bt.shape[0], a.shape[0], a.shape[1], width))
    _matmul_kernel(a, bt, _tiles(c, width), a32, b32, a_scale if a_scale is not None else np.zeros((1, 1, 1)),
                   _tiles(b_scale, width) if b_scale is not None else np.zeros((1, 1, 1, 1)), out, cfg, order,
                   order_width, spec.k_fused, chunk, spec.promotes, spec.scale_at == "promotion",
                   a_scale is not None, b_scale is not None, _mode_params(acc),
                   _mode_params(spec.accumulator_rne_spec()), _mode_params(prod), _mode_params(fp32_spec), da, db)
    return _round_output(np.moveaxis(out, 0, -2).reshape(a.shape[0], a.shape[1], -1)[..., :N], spec, seed)


@njit(parallel=True, cache=True)
def _times_fp32_kernel(x, s, out):
    for i in prange(x.size):
        xi = np.float64(x[i])
        p = xi * s[i]
        err = _fma64(xi, s[i], -p)                   # exact: x·s = p + err (TwoProduct)
        u = _f64_bits(p)
        if err != 0.0 and (u & np.uint64(1)) == 0 and np.isfinite(p):      # to odd, toward x·s
            p = _bits_f64(u + np.uint64(1) if (err > 0.0) == (p > 0.0) else u - np.uint64(1))
        out[i] = np.float32(p)                       # then RNE to fp32 (subnormals, overflow to Inf)


def _times_fp32(x: np.ndarray, s: np.ndarray) -> np.ndarray:
    """fp32(x · s) with one rounding, as the reference: the float64 product rounded to odd (its last bit
    records whether the exact product was cut), then RNE to fp32 -- one rounding of the exact product, as
    53 >= 24 + 2.  A plain float64 product would round twice when x·s needs more than 53 bits (a long
    float64 scale).  Same dtype as ``x`` (float32 or float64)."""
    x, s = np.broadcast_arrays(x, np.asarray(s, np.float64))
    xc, sc = np.ascontiguousarray(x).reshape(-1), np.ascontiguousarray(s).reshape(-1)
    out = np.empty(xc.size, np.float32)
    with _threads_for(2.0 * xc.size):
        _times_fp32_kernel(xc, sc, out)
    return out.reshape(x.shape).astype(x.dtype, copy=False)


def _scaled_operands(a, b, c, a_scale, b_scale, spec):
    """Writeable C float64 arrays (one compiled signature: read-only broadcast views would compile a
    second one); with ``scale_at="operands"`` the operands times their scales, rounded to fp32."""
    a, b, c = (np.require(x, np.float64, ["C", "W"]) for x in (a, b, c))
    if a_scale is not None:
        a_scale = np.require(a_scale, np.float64, ["C", "W"])
    if b_scale is not None:
        b_scale = np.require(b_scale, np.float64, ["C", "W"])
    a, b = _operands_times_scales(a, b, a_scale, b_scale, spec)
    return a, b, c, a_scale, b_scale


def compiles(spec) -> bool:
    """Whether :func:`matmul_values` runs ``spec`` in compiled code (else it runs the NumPy reference)."""
    from . import numba_program

    return _compiled(spec) or numba_program.covers(spec)


def _serial_when_small(kernel, ns_per_element: float):
    """``kernel(x, ...)`` on the calling thread alone when ``x`` is small (see SERIAL_BELOW_NS)."""
    @functools.wraps(kernel)
    def run(x, *args, **kwargs):
        with _threads_for(x.size * ns_per_element):
            return kernel(x, *args, **kwargs)
    return run


round_values = _serial_when_small(round_values, 1.0)
encode_values = _serial_when_small(encode_values, 1.0)
decode_codes = _serial_when_small(decode_codes, 2.0)
