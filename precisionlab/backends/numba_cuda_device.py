"""Numba-CUDA device functions for rounding (DESIGN §5), shared by every Numba-CUDA kernel.

The same arithmetic as ``cuda/round.cuh`` (general 64-bit path), which is the NumPy
reference written per element: ``|x| = M * 2^E``, quantum ``2^q`` with
``q = max(floor(log2|x|), emin) - m``, one decision per mode, then the result's code
``((q + m + bias) << m) + N - 2^m`` on the grid continued upwards, so overflow,
flushing and special values are comparisons and substitutions on codes.

Written to run both compiled for a GPU and in Numba's CUDA simulator (where each
function is ordinary Python on NumPy scalars): only integer arithmetic on bit
patterns, every constant typed (``np.uint64``/``np.int64``, since Numba types uint64 op
int64 as float64), no shift by 64 or more, no intrinsics (the simulator's ``clz`` is
32-bit only).  Formats and specs arrive as the tuples of
:func:`precisionlab.backends.cuda.format_args` / ``spec_args`` (as int64 / uint64).

:func:`round_code` rounds any exact value ``±M * 2^E`` (``M < 2^62``), :func:`code_value`
gives a code's exact value back and :func:`round_up` is the rule of each mode on its own:
the matmul device code (``numba_cuda_matmul.py``) builds its roundings from these three;
:func:`encode_bits`, :func:`code_to_float_bits` are what the rounding kernels call per element.
"""

from __future__ import annotations

import numpy as np
from numba import cuda

__all__ = ["bit_length", "splitmix64", "round_up", "round_code", "code_value", "code_to_float_bits", "unpack_float",
           "encode_bits", "round_bits"]

U64 = np.uint64
I64 = np.int64
_Z = U64(0)
_1 = U64(1)
_GAMMA = U64(0x9E3779B97F4A7C15)
_MIX1 = U64(0xBF58476D1CE4E5B9)
_MIX2 = U64(0x94D049BB133111EB)

# input kinds; modes, policies, NaN kinds and flags have the values of cuda/__init__.py
FINITE, INF, NAN = 0, 1, 2


@cuda.jit(device=True)
def bit_length(x):
    """Significant bits of a uint64 (0 for 0), by binary search."""
    n = I64(0)
    if x >= U64(1 << 32):
        x = x >> U64(32)
        n += I64(32)
    if x >= U64(1 << 16):
        x = x >> U64(16)
        n += I64(16)
    if x >= U64(1 << 8):
        x = x >> U64(8)
        n += I64(8)
    if x >= U64(1 << 4):
        x = x >> U64(4)
        n += I64(4)
    if x >= U64(1 << 2):
        x = x >> U64(2)
        n += I64(2)
    if x >= U64(2):
        x = x >> U64(1)
        n += I64(1)
    if x != _Z:
        n += I64(1)
    return n


@cuda.jit(device=True)
def splitmix64(seed, counter):
    """DESIGN §5: SplitMix64's finaliser of seed + (counter + 1) * gamma (mod 2^64)."""
    z = seed + (counter + _1) * _GAMMA
    z = (z ^ (z >> U64(30))) * _MIX1
    z = (z ^ (z >> U64(27))) * _MIX2
    return z ^ (z >> U64(31))


@cuda.jit(device=True)
def _overflow_to_inf(mode, negative):
    """Does a finite overflow go to Inf under the default policy (IEEE 754 by direction)?"""
    if mode == 2 or mode == 5:          # rtz, rto
        return False
    if mode == 3:                       # rup
        return not negative
    if mode == 4:                       # rdn
        return negative
    return True


@cuda.jit(device=True)
def round_up(mode, negative, N, inexact, above_half, at_half, frac, sp, counter):
    """The rounding rule of ``mode``: does the kept significand N step one away from zero?

    The remainder below N's last place is described by ``inexact`` (non-zero),
    ``above_half`` / ``at_half`` (against half a place) and, for ``sr``, ``frac`` =
    floor(delta * 2^n), its top n = sr_bits bits.  rto steps up exactly when that makes an
    inexact N odd.  Shared by round_code and the matmul device code's wide roundings."""
    if mode == 0:                        # rne
        return above_half or (at_half and (N & _1) == _1)
    if mode == 1:                        # rna
        return above_half or at_half
    if mode == 3:                        # rup
        return inexact and not negative
    if mode == 4:                        # rdn
        return inexact and negative
    if mode == 5:                        # rto: the sticky bit into the last place
        return inexact and (N & _1) == _Z
    if mode == 6:                        # sr: away iff floor(delta * 2^n) + R >= 2^n
        n = sp[3]
        R = splitmix64(sp[4], counter) >> U64(I64(64) - n)
        if n == I64(64):
            threshold = _Z - frac
        else:
            threshold = (_1 << U64(n)) - frac
        return inexact and frac > _Z and R >= threshold
    if mode == 7:                        # sr_equal
        return inexact and (splitmix64(sp[4], counter) >> U64(63)) == _1
    return False


@cuda.jit(device=True)
def round_code(negative, kind, M, E, fp, sp, counter):
    """Round ±M·2^E (kind FINITE, M < 2^62; or INF / NAN) to a code, sign included.

    ``fp`` = format_args (e, m, bias, nan_kind, flags, sign_mask, max_code, inf_code,
    nan_code), ``sp`` = (mode, overflow, flags, sr_bits, seed); ``counter`` indexes the
    random word of stochastic modes."""
    m = fp[1]
    bias = fp[2]
    nan_kind = fp[3]
    fflags = fp[4]
    sign_mask = fp[5]
    max_code = fp[6]
    mode = sp[0]
    overflow = sp[1]
    sflags = sp[2]
    has_zero = (fflags & I64(2)) != I64(0)
    emin = (I64(1) if has_zero else I64(0)) - bias
    zero_in = kind != FINITE or M == _Z
    e = E + bit_length(M) - I64(1)
    if (sflags & I64(2)) != I64(0) and (not zero_in) and e < emin:      # DAZ
        zero_in = True

    N = _Z
    q = emin - m
    if not zero_in:
        q = max(e, emin) - m
        shift = q - E
        rem = _Z
        inexact = False
        above_half = False
        at_half = False
        if shift <= I64(0):                  # fewer bits than the grid holds: exact
            N = M << U64(-shift)
        elif shift < I64(63):
            N = M >> U64(shift)
            rem = M - (N << U64(shift))
            half = _1 << U64(shift - I64(1))
            inexact = rem != _Z
            above_half = rem > half
            at_half = rem == half
        else:                                # below half of the smallest step (M < 2^62)
            rem = M
            inexact = True
        frac = _Z
        if mode == 6:                        # sr: the top n bits of the remainder, floor(delta * 2^n)
            n = sp[3]
            d = shift - n
            if d >= I64(64):
                frac = _Z
            elif d >= I64(0):
                frac = rem >> U64(d)
            else:
                frac = rem << U64(-d)        # rem < 2^shift: stays below 2^n
        up = round_up(mode, negative, N, inexact, above_half, at_half, frac, sp, counter)
        if up:
            N = N + _1

    # the magnitude code on the grid continued upwards; zero is a flag (no-zero formats
    # use the code 0 for their smallest value)
    zero = zero_in or N == _Z
    code = _Z
    if not zero:
        code = ((U64(q + m + bias) << U64(m)) + N) - (_1 << U64(m))
    min_normal_code = (_1 << U64(m)) if has_zero else _Z
    if (sflags & I64(1)) == I64(0) and (not zero) and code < min_normal_code:     # FTZ
        zero = True
        code = _Z
    if (not has_zero) and zero and not zero_in:        # no zero: the smallest value is the floor
        zero = False
        code = _Z
    is_inf = kind == INF
    is_nan = kind == NAN
    over = (not zero) and code > max_code
    to_inf = over and overflow == I64(0) and _overflow_to_inf(mode, negative)
    if over:
        code = max_code
    inf_result = to_inf or (is_inf and overflow != I64(1))
    if is_inf and not inf_result:                      # saturate clamps ±Inf to ±max
        code = max_code
        zero = False
    if (fflags & I64(1)) == I64(0):                    # an Inf the format cannot hold
        if nan_kind == I64(3):
            if inf_result:
                code = max_code
                zero = False
        elif inf_result:
            is_nan = True
        inf_result = False
    if inf_result:
        code = fp[7]
        zero = False
    if (fflags & I64(8)) == I64(0):                    # unsigned: below zero is NaN, -0 is +0
        if negative and ((not zero_in) or is_inf):
            is_nan = True
        negative = False
    if (not has_zero) and zero:                        # no zero: ±0 is NaN
        is_nan = True
    if nan_kind == I64(2) and zero:                    # fnuz: no -0
        negative = False

    if negative:
        code = code | sign_mask
    if is_nan:
        code = fp[8]
        if negative and (nan_kind == I64(0) or nan_kind == I64(1)):
            code = code | sign_mask
    return code


# binary64 / binary32 as formats (format_args order), and RNE with the default policy
_F64_FORMAT = (I64(11), I64(52), I64(1023), I64(0), I64(15),
               U64(0x8000000000000000), U64(0x7FEFFFFFFFFFFFFF), U64(0x7FF0000000000000), U64(0x7FF8000000000000))
_F32_FORMAT = (I64(8), I64(23), I64(127), I64(0), I64(15),
               U64(0x80000000), U64(0x7F7FFFFF), U64(0x7F800000), U64(0x7FC00000))
_FLOAT_SPEC = (I64(0), I64(0), I64(1), I64(64), U64(0))


@cuda.jit(device=True)
def _pack_float(S, q, out64):
    """Bits of the float64 (out64) or float32 nearest to S·2^q (ties to even, overflow to Inf:
    NumPy's astype).  Values of a format are exact in its decode dtype; only a float32 result
    of a format wider than float32 (the max that overflow='saturate' gives for an infinite
    float32 input) is rounded, as the reference's final astype(float32) rounds it.  A float is
    a format, so this is round_code to binary64/32."""
    if out64:
        return round_code(False, FINITE, S, q, _F64_FORMAT, _FLOAT_SPEC, _Z)
    return round_code(False, FINITE, S, q, _F32_FORMAT, _FLOAT_SPEC, _Z)


@cuda.jit(device=True)
def code_value(code, fp):
    """The exact value of ``code``: (negative, kind, M, E) with the value ±M·2^E when kind is
    FINITE (the reference's decode, without the final conversion to a float)."""
    ebits = fp[0]
    m = fp[1]
    bias = fp[2]
    nan_kind = fp[3]
    fflags = fp[4]
    sign_mask = fp[5]
    negative = (code & sign_mask) != _Z
    mag = code & ~sign_mask
    exp_field = mag >> U64(m)
    frac = mag & ((_1 << U64(m)) - _1)
    is_nan = False
    if nan_kind == I64(0):
        is_nan = exp_field == (_1 << U64(ebits)) - _1 and frac != _Z
    elif nan_kind == I64(1):
        is_nan = mag == (_1 << U64(ebits + m)) - _1
    elif nan_kind == I64(2):
        is_nan = code == sign_mask
    if is_nan:
        return negative and nan_kind != I64(2), NAN, _Z, I64(0)
    if (fflags & I64(1)) != I64(0) and mag == fp[7]:
        return negative, INF, _Z, I64(0)
    if exp_field == _Z and (fflags & I64(2)) != I64(0):      # subnormals, or only zeros
        S = frac if (fflags & I64(4)) != I64(0) else _Z
        return negative, FINITE, S, I64(1) - bias - m
    return negative, FINITE, frac | (_1 << U64(m)), I64(exp_field) - bias - m


@cuda.jit(device=True)
def code_to_float_bits(code, fp, out64):
    """Bits of the float64 (out64) or float32 holding the value of ``code`` (the reference's decode)."""
    negative, kind, M, E = code_value(code, fp)
    sign_bit = _Z
    if negative:
        sign_bit = (_1 << U64(63)) if out64 else (_1 << U64(31))
    if kind == NAN:
        return (U64(0x7FF8000000000000) if out64 else U64(0x7FC00000)) | sign_bit
    if kind == INF:
        return (U64(0x7FF0000000000000) if out64 else U64(0x7F800000)) | sign_bit
    return sign_bit | _pack_float(M, E, out64)


@cuda.jit(device=True)
def unpack_float(bits, in64):
    """Split float bits (a float64 when in64, else a float32, as uint64) into
    (negative, kind, M, E): the value is ±M·2^E exactly when kind is FINITE."""
    mb = I64(52) if in64 else I64(23)
    ew = I64(11) if in64 else I64(8)
    ibias = I64(1023) if in64 else I64(127)
    all_ones = (_1 << U64(ew)) - _1
    negative = ((bits >> U64(mb + ew)) & _1) == _1
    exp_field = (bits >> U64(mb)) & all_ones
    frac = bits & ((_1 << U64(mb)) - _1)
    kind = FINITE
    if exp_field == all_ones:
        kind = NAN if frac != _Z else INF
    if exp_field != _Z:
        M = frac | (_1 << U64(mb))
        E = I64(exp_field) - ibias - mb
    else:
        M = frac
        E = I64(1) - ibias - mb
    return negative, kind, M, E


@cuda.jit(device=True)
def encode_bits(bits, in64, fp, sp, counter):
    """The code of one float (bits of a float64 when in64, else of a float32, as uint64)."""
    negative, kind, M, E = unpack_float(bits, in64)
    return round_code(negative, kind, M, E, fp, sp, counter)


@cuda.jit(device=True)
def round_bits(bits, in64, fp, sp, counter):
    """The rounded value of one float, as float bits of the same width."""
    return code_to_float_bits(encode_bits(bits, in64, fp, sp, counter), fp, in64)
