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
def _f32_round_bits(u, mode, b):
    """Deterministic rounding of one float32 (bits ``u``) to the bits of the float32 result,
    in integer arithmetic only (no float multiply, so no subnormal stalls).

    While the target spacing is at most the input's last mantissa place (``shift <= 23``,
    which covers every result but the smallest), rounding the bit pattern at bit ``shift`` is
    rounding the significand: a carry into the exponent field is the step to the next binade.
    Below that the result is 0 or the smallest quantum, decided on the significand as in the
    float path.  ``b``: see _params_f32_bits."""
    (m, emin149, flush_bits, keep_min, floor_bits, max_bits, over_pos, over_neg, inf_bits, zero_bits,
     unsigned, fnuz) = b
    a, sig, Q, shift, s = _f32_core(u, m, emin149, flush_bits)
    negative = U.ult(0x7FFFFFFF, u)
    sh = U.sel(U.ult(23, shift), 23, shift)
    mask = U.sub(U.shl(1, sh), 1)
    odd = U.and_(U.shr(sig, sh), 1)                 # the last kept bit (at sh = 23 the implicit one)
    if mode == 0:                                   # rne
        inc = U.shr(U.add(mask, odd), 1)
    elif mode == 1:                                 # rna
        inc = U.shr(U.add(mask, 1), 1)
    elif mode == 3:                                 # rup
        inc = U.sel(negative, 0, mask)
    elif mode == 4:                                 # rdn
        inc = U.sel(negative, mask, 0)
    else:                                           # rtz, rto
        inc = U.and_(mask, 0)
    r = U.and_(U.add(a, inc), U.sub(0xFFFFFFFF, mask))
    if mode == 5:                                   # rto: an even inexact result moves up one place
        r = U.add(r, U.sel(U.ueq(U.and_(a, mask), 0) | U.ueq(odd, 1), 0, U.shl(1, sh)))
    quantum = U.sel(U.ult(Q, 23), U.shl(1, U.sel(U.ult(Q, 31), Q, 31)), U.shl(U.sub(Q, 22), 23))
    tiny = U.sel(U.ueq(_f32_decide(u, sig, s, mode), 0), 0, quantum)
    r = U.sel(U.ult(23, shift), tiny, r)
    r = U.sel(U.ult(r, keep_min), 0, r)                                    # flush to zero
    r = U.sel(U.ueq(r, 0) & (not U.ueq(a, 0)), floor_bits, r)               # no-zero formats
    r = U.sel(U.ult(max_bits, r), U.sel(negative, over_neg, over_pos), r)   # finite overflow
    r = U.sel(U.ueq(a, 0x7F800000), inf_bits, r)
    r = U.sel(U.ueq(a, 0), zero_bits, r)
    r = U.sel(U.ult(0x7F800000, a) | (unsigned & negative & (not U.ueq(a, 0))), 0x7FC00000, r)
    keep_sign = negative & (not unsigned) & ((not fnuz) | ((not U.ueq(r, 0)) & (not U.ult(0x7F800000, r))))
    return U.or_(r, U.sel(keep_sign, 0x80000000, 0))


@njit(inline="always")
def _f32_encode_one(u, mode, c, k, seed, counter, sr_bits):
    r, negative, Q, N = _f32_one(u, mode, c, seed, counter, sr_bits)
    return _f32_code(r, negative, Q, N, c[0], k)


def _make_f32_kernels(mode: int):
    """The float32 round and encode kernels of one mode.  The mode is a compile-time constant
    of each: with a runtime mode LLVM if-converts every mode into one loop, and each element
    pays for all of them (SplitMix64 included).  Numba caches each closure separately.
    Deterministic modes round in the bit domain (_f32_round_bits), stochastic ones through
    the integer significand (_f32_one)."""

    if mode < 6:
        @njit(parallel=True, cache=True)
        def round_kernel(xb, outb, b):
            for i in prange(xb.size):
                outb[i] = _f32_round_bits(xb[i], mode, b)
    else:
        @njit(parallel=True, cache=True)
        def round_kernel(xb, out, start, c, seed, sr_bits):
            for i in prange(xb.size):
                out[i] = _f32_one(xb[i], mode, c, seed, np.uint64(start + i), sr_bits)[0]

    @njit(parallel=True, cache=True)
    def encode_kernel(xb, out, start, c, k, seed, sr_bits):
        for i in prange(xb.size):
            out[i] = _f32_encode_one(xb[i], mode, c, k, seed, np.uint64(start + i), sr_bits)

    return round_kernel, encode_kernel


_F32_KERNELS = {mode: _make_f32_kernels(mode) for mode in _MODES.values()}


def _fast_path(x: np.ndarray, spec: RoundSpec) -> bool:
    return x.dtype == np.float32 and fits_float32(spec.format)


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


def _params_f32_bits(spec: RoundSpec):
    """The constants of _params_f32 as float32 bit patterns (magnitudes), for _f32_round_bits."""
    m, emin149, flush_bits, fmin_keep, floor_val, fmax, over_pos, over_neg, inf_val, zero_val, unsigned, fnuz = \
        _params_f32(spec)
    bits = [np.array(v, np.float32).view(np.uint32) & np.uint32(0x7FFFFFFF)
            for v in (fmin_keep, floor_val, fmax, over_pos, over_neg, inf_val, zero_val)]
    bits = [np.uint32(0x7FC00000) if v > 0x7F800000 else np.uint32(v) for v in bits]   # the canonical NaN
    return (m, emin149, flush_bits, *bits, unsigned, fnuz)


def _code_params_f32(fmt: Format):
    """Per-format constants of the float32 encode kernels (the order _f32_code unpacks)."""
    smallest_code = 1 if fmt.has_subnormals and fmt.mantissa_bits else (1 << fmt.mantissa_bits) * fmt.has_zero
    return (np.uint32((fmt.bias + fmt.mantissa_bits - 149) & 0xFFFFFFFF), np.uint32(fmt.sign_mask),
            np.float32(fmt.max), np.float32(fmt.smallest_subnormal), np.uint32(smallest_code),
            np.uint32(fmt._max_magnitude_code), np.uint32(fmt.inf_code or 0), np.uint32(fmt.nan_code or 0),
            fmt.nan in ("ieee", "fn"))


def round_values(x: np.ndarray, spec: RoundSpec, counter_start: int, out: np.ndarray | None = None) -> np.ndarray:
    out = np.empty_like(x) if out is None else out
    if _fast_path(x, spec):
        kernel = _F32_KERNELS[_MODES[spec.rounding]][0]
        if spec.rounding.stochastic:
            kernel(x.view(np.uint32), out, np.uint64(counter_start), _params_f32(spec), np.uint64(spec.seed),
                   spec.sr_bits)
        else:
            kernel(x.view(np.uint32), out.view(np.uint32), _params_f32_bits(spec))
        return out
    _F64_KERNELS[_MODES[spec.rounding]][0](x, out, np.uint64(counter_start), _params(spec))
    return out


def encode_values(x: np.ndarray, spec: RoundSpec, counter_start: int) -> np.ndarray:
    fmt = spec.format
    if _fast_path(x, spec):
        out = np.empty(x.shape, dtype=fmt.code_dtype)
        kernel = _F32_KERNELS[_MODES[spec.rounding]][1]
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
