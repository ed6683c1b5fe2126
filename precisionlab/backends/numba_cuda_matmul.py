"""Numba-CUDA device functions of the matmul accumulation model (DESIGN §6), shared by the
numba_cuda matmul kernels; ``cuda/matmul.cuh`` is the same code in CUDA C.

One output element is computed by one thread, in the order of the NumPy reference
(``ReferenceMatmul``), with every value held exactly as ``(negative, kind, M, E)`` -- the
value ±M·2^E when kind is FINITE, else Inf / NaN -- and every rounding done by the rounding
device code (:func:`~precisionlab.backends.numba_cuda_device.round_code`, ``round_up``,
``code_value``), so the rules of DESIGN §5 exist once.  Integer arithmetic only, as there:

* **products** of operands with at most 24 significant bits are exact in 48 bits;
* **an addition** ``x + y`` is exact in 128 bits (``hi, lo`` pairs): the larger operand's
  significand at bits 124..125, the smaller aligned to it with the bits shifted out kept as a
  sticky bit one place below (round to odd).  At least 124 bits stay above the sticky bit, more
  than the 53 + 64 + 1 that the widest result format with 64 random bits of ``sr`` needs, so
  rounding this is rounding the exact sum, for every mode;
* **a fused step** cuts its terms to multiples of 2^(e_ref - n_frac) as int64 integers
  (``cuda.matmul_unsupported`` bounds n_frac and k_fused so that their sum fits);
* **exact sums** (``step="exact"``, fused steps without ``n_frac``) go into a fixed-point
  accumulator of 32-bit limbs in int64 (carries resolved once at the end).

Orders that the reference evaluates level by level (pairwise trees, the lanes' halving tree)
are evaluated here depth first with a small stack (a thread cannot hold K partial sums); the
random-bit counter of each addition is computed from its place in the reference's schedule, so
stochastic results are the same.  Interleaved / lanes partial sums are computed one lane at a
time for the same reason.

NVVM inlines every device function at every call site, so each heavy function here is called
from one place: every operation rounds once, through :func:`round_exact`; a fused step
computes its products once; :func:`chunk_sum` runs every order as one loop with one call of
:func:`step_at`.  (Written with a call per order and per rounding, the kernel took ten minutes
to compile; now about fifteen seconds.)
"""

from __future__ import annotations

import numpy as np
from numba import cuda, types

from . import numba_cuda_device as D
from .cuda import FUSED_MAX_K, MATMUL_FIELDS, ORDER_CODES, SACC_BASE, SACC_LIMBS, STEP_CODES

U64 = np.uint64
I64 = np.int64
_Z = U64(0)
_1 = U64(1)
_M32 = U64(0xFFFFFFFF)
_TOP62 = U64(1 << 62)
FINITE, INF, NAN = D.FINITE, D.INF, D.NAN
NO_EXP = -(1 << 40)                 # the exponent of a term that has none (zero or special)
_STACK = 64                         # pairwise trees: depth log2(leaves) + 1
_KF_MAX = FUSED_MAX_K               # products of one fused step

# model fields (cuda.MATMUL_FIELDS) and round specs (cuda.MATMUL_SPECS)
(F_STEP, F_K, F_NFRAC, F_FLOOR, F_CMODE, F_HAS_REF, F_REF, F_LATE, F_ORDER, F_WIDTH, F_LOG2W, F_CHUNK, F_PROMOTES,
 F_AT_PROMOTION, F_HAS_SA, F_HAS_SB, F_HAS_PRODUCT, F_HAS_VIA, F_A_EMIN, F_B_EMIN, F_ACC_EMIN, F_PROD_EMIN, F_EVENTS,
 F_KDIM) = range(len(MATMUL_FIELDS))
S_ACC, S_RNE, S_PROD, S_F32, S_VIA, S_OUT = range(6)
IEEE, FUSED, PAIRWISE_STEP, EXACT = (STEP_CODES[s] for s in ("ieee", "fused", "pairwise", "exact"))
SEQUENTIAL, INTERLEAVED, LANES, PAIRWISE, BLOCKED = (ORDER_CODES[o] for o in ("sequential", "interleaved", "lanes",
                                                                              "pairwise", "blocked"))
_BASE = I64(SACC_BASE)


# ---- 128-bit integers as (hi, lo) --------------------------------------------------------

@cuda.jit(device=True)
def shl128(hi, lo, s):
    """(hi, lo) << s for 0 <= s < 128."""
    if s == I64(0):
        return hi, lo
    if s >= I64(64):
        return lo << U64(s - I64(64)), _Z
    return (hi << U64(s)) | (lo >> U64(I64(64) - s)), lo << U64(s)


@cuda.jit(device=True)
def shr128(hi, lo, s):
    """(hi, lo) >> s for s >= 0 (0 from 128 on)."""
    if s == I64(0):
        return hi, lo
    if s >= I64(128):
        return _Z, _Z
    if s >= I64(64):
        return _Z, hi >> U64(s - I64(64))
    return hi >> U64(s), (lo >> U64(s)) | (hi << U64(I64(64) - s))


@cuda.jit(device=True)
def bitlen128(hi, lo):
    if hi != _Z:
        return I64(64) + D.bit_length(hi)
    return D.bit_length(lo)


@cuda.jit(device=True)
def add128(ah, al, bh, bl):
    lo = al + bl
    return ah + bh + (_1 if lo < al else _Z), lo


@cuda.jit(device=True)
def sub128(ah, al, bh, bl):
    """(a - b) for a >= b."""
    return ah - bh - (_1 if al < bl else _Z), al - bl


@cuda.jit(device=True)
def less128(ah, al, bh, bl):
    return ah < bh or (ah == bh and al < bl)


@cuda.jit(device=True)
def mul64(x, y):
    """The 128-bit product of two uint64, from 32-bit halves."""
    x0 = x & _M32
    x1 = x >> U64(32)
    y0 = y & _M32
    y1 = y >> U64(32)
    p00 = x0 * y0
    p01 = x0 * y1
    p10 = x1 * y0
    p11 = x1 * y1
    mid = (p00 >> U64(32)) + (p01 & _M32) + (p10 & _M32)
    lo = (p00 & _M32) | (mid << U64(32))
    hi = p11 + (p01 >> U64(32)) + (p10 >> U64(32)) + (mid >> U64(32))
    return hi, lo


# ---- rounding exact values (the one rounding site of every operation) ----------------------

@cuda.jit(device=True)
def round_exact(neg, kind, hi, lo, E, fp, sp, counter):
    """The code of ±(hi, lo)·2^E (kind FINITE: below 2^127, possibly with a round-to-odd sticky
    bit at the bottom; else Inf / NaN) rounded once.  Above 62 bits the grid split is done here
    in 128 bits and the decision by ``round_up``; the value then lies on the grid, and
    ``round_code`` applies the policy (overflow, flushing, specials) as for any value."""
    M = lo
    if kind == FINITE and (hi != _Z or lo >= _TOP62):
        m = fp[1]
        emin = (I64(1) if (fp[4] & I64(2)) != I64(0) else I64(0)) - fp[2]
        q = max(E + bitlen128(hi, lo) - I64(1), emin) - m
        shift = q - E                              # > 9: the value has more than 62 bits
        nh, M = shr128(hi, lo, shift)              # nh = 0: M < 2^(m + 1)
        rh = hi
        rl = lo
        above_half = False
        at_half = False
        if shift < I64(128):                       # else half a place is 2^127 or more: above the value
            bh, bl = shl128(nh, M, shift)
            rh, rl = sub128(hi, lo, bh, bl)
            hh, hl = shl128(_Z, _1, shift - I64(1))
            above_half = less128(hh, hl, rh, rl)
            at_half = rh == hh and rl == hl
        inexact = rh != _Z or rl != _Z
        frac = _Z
        if sp[0] == 6:                             # sr: the top n bits of the remainder
            d = shift - sp[3]
            if d >= I64(0):
                fh, frac = shr128(rh, rl, d)
            else:
                frac = rl << U64(-d)               # rem < 2^shift < 2^n
        if D.round_up(sp[0], neg, M, inexact, above_half, at_half, frac, sp, counter):
            M = M + _1
        E = q
    return D.round_code(neg, kind, M, E, fp, sp, counter)


@cuda.jit(device=True)
def round_to(neg, kind, hi, lo, E, fp, sp, counter):
    """round_exact, as the value of the rounded code."""
    return D.code_value(round_exact(neg, kind, hi, lo, E, fp, sp, counter), fp)


# ---- exact arithmetic on values -----------------------------------------------------------------

@cuda.jit(device=True)
def floor_log2(M, E):
    return E + D.bit_length(M) - I64(1)


@cuda.jit(device=True)
def exponent(M, E, emin):
    """E(x) = max(floor(log2|x|), emin) of a non-zero finite value."""
    return max(floor_log2(M, E), emin)


@cuda.jit(device=True)
def strip_zeros(M, E):
    """(M, E) without M's trailing zero bits (M != 0): an operand's significand in a float64
    has 53 bits, of which an input format's value uses at most 24."""
    for s in (32, 16, 8, 4, 2, 1):
        if (M & ((_1 << U64(s)) - _1)) == _Z:
            M = M >> U64(s)
            E = E + I64(s)
    return M, E


@cuda.jit(device=True)
def mul_kind(an, ak, aM, bn, bk, bM):
    """(negative, kind) of a product: NaN for NaN or 0·Inf, else Inf, else finite."""
    neg = an != bn
    if ak == NAN or bk == NAN:
        return False, NAN
    if ak == INF or bk == INF:
        if (ak == FINITE and aM == _Z) or (bk == FINITE and bM == _Z):
            return False, NAN
        return neg, INF
    return neg, FINITE


@cuda.jit(device=True)
def mul_wide(an, ak, aM, aE, bn, bk, bM, bE):
    """The exact product of two values as (negative, kind, hi, lo, E)."""
    neg, kind = mul_kind(an, ak, aM, bn, bk, bM)
    hi, lo = mul64(aM, bM)
    if kind != FINITE:
        return neg, kind, _Z, _Z, I64(0)
    return neg, FINITE, hi, lo, aE + bE


@cuda.jit(device=True)
def add_wide(xn, xhi, xlo, xE, yn, yhi, ylo, yE):
    """x + y of two non-zero finite values below 2^125 as (negative, hi, lo, E), exact or with
    a round-to-odd sticky bit at the bottom and at least 124 bits above it (see the module
    docstring).  An exact cancellation is +0."""
    bx = bitlen128(xhi, xlo)
    by = bitlen128(yhi, ylo)
    Xh, Xl = shl128(xhi, xlo, I64(125) - bx)          # significands at bits 124..
    Yh, Yl = shl128(yhi, ylo, I64(125) - by)
    ex = xE - (I64(125) - bx)
    ey = yE - (I64(125) - by)
    if ey > ex or (ey == ex and less128(Xh, Xl, Yh, Yl)):
        Xh, Xl, Yh, Yl = Yh, Yl, Xh, Xl
        ex, ey = ey, ex
        xn, yn = yn, xn
    d = ex - ey
    Sh, Sl = shr128(Yh, Yl, d)
    sticky = _Z
    if d >= I64(128):
        sticky = _1
    elif d > I64(0):
        Bh, Bl = shl128(Sh, Sl, d)
        if Bh != Yh or Bl != Yl:
            sticky = _1
    Xh, Xl = shl128(Xh, Xl, I64(1))                    # one more place: the sticky bit's
    Sh, Sl = shl128(Sh, Sl, I64(1))
    Sl = Sl | sticky
    if xn == yn:
        Rh, Rl = add128(Xh, Xl, Sh, Sl)
    else:
        Rh, Rl = sub128(Xh, Xl, Sh, Sl)
        if Rh == _Z and Rl == _Z:
            xn = False
    return xn, Rh, Rl, ex - I64(1)


@cuda.jit(device=True)
def exact_add(xn, xk, xhi, xlo, xE, yn, yk, yhi, ylo, yE):
    """x + y before rounding, as (negative, kind, hi, lo, E): DESIGN §6 special values (NaN for a
    NaN or Inf - Inf, else the Inf), a zero sum +0 unless both are -0.  Operands below 2^125."""
    if xk == NAN or yk == NAN or (xk == INF and yk == INF and xn != yn):
        return False, NAN, _Z, _Z, I64(0)
    if xk == INF:
        return xn, INF, _Z, _Z, I64(0)
    if yk == INF:
        return yn, INF, _Z, _Z, I64(0)
    x0 = xhi == _Z and xlo == _Z
    y0 = yhi == _Z and ylo == _Z
    if x0 and y0:
        return xn and yn, FINITE, _Z, _Z, I64(0)
    if x0:
        return yn, FINITE, yhi, ylo, yE
    if y0:
        return xn, FINITE, xhi, xlo, xE
    if xhi == _Z and yhi == _Z:                     # narrow and close: the exact sum in 62 bits
        if xE >= yE:
            d = xE - yE
            big, bign, small, smalln, low = xlo, xn, ylo, yn, yE
        else:
            d = yE - xE
            big, bign, small, smalln, low = ylo, yn, xlo, xn, xE
        if D.bit_length(big) + d <= I64(60) and D.bit_length(small) <= I64(60):
            B = big << U64(d)
            if bign == smalln:
                return bign, FINITE, _Z, B + small, low
            if B > small:
                return bign, FINITE, _Z, B - small, low
            if small > B:
                return smalln, FINITE, _Z, small - B, low
            return False, FINITE, _Z, _Z, I64(0)
    n, hi, lo, E = add_wide(xn, xhi, xlo, xE, yn, yhi, ylo, yE)
    return n, FINITE, hi, lo, E


@cuda.jit(device=True)
def add_round(x, y, fp, sp, counter):
    """One addition of two values (below 2^62) rounded once: the rounded value."""
    n, k, hi, lo, E = exact_add(x[0], x[1], _Z, x[2], x[3], y[0], y[1], _Z, y[2], y[3])
    return round_to(n, k, hi, lo, E, fp, sp, counter)


@cuda.jit(device=True)
def cut(neg, M, E, q, floor_mode):
    """A non-zero finite term cut to a multiple of 2^q, as a signed count of 2^q: toward zero
    (rtz), or toward -inf (floor).  Callers bound the result below 2^61."""
    sh = E - q
    if sh >= I64(0):
        t = I64(M << U64(sh))
    else:
        s = -sh
        up = floor_mode and neg
        if s >= I64(63):
            t = I64(1) if up else I64(0)
        elif up:
            t = I64((M + (_1 << U64(s)) - _1) >> U64(s))
        else:
            t = I64(M >> U64(s))
    return -t if neg else t


@cuda.jit(device=True)
def floor_shift(S, sh):
    """floor(S · 2^sh) for a signed int64 S (sh < 0 drops bits toward -inf)."""
    if sh >= I64(0):
        return S << sh
    if -sh >= I64(63):
        return I64(-1) if S < I64(0) else I64(0)
    return S >> (-sh)


# ---- the exact (fixed-point) accumulator ----------------------------------------------------------

@cuda.jit(device=True)
def sacc_clear(L):
    for j in range(SACC_LIMBS):
        L[j] = I64(0)


@cuda.jit(device=True)
def sacc_add(L, neg, M, E):
    """Add ±M·2^E (0 < M < 2^53, inside the accumulator's range) to the limbs L."""
    o = E - _BASE
    j = o >> I64(5)
    r = U64(o & I64(31))
    t0 = (M & _M32) << r
    t1 = (M >> U64(32)) << r
    a0 = I64(t0 & _M32)
    a1 = I64(t0 >> U64(32)) + I64(t1 & _M32)
    a2 = I64(t1 >> U64(32))
    if neg:
        a0, a1, a2 = -a0, -a1, -a2
    L[j] += a0
    L[j + 1] += a1
    L[j + 2] += a2


@cuda.jit(device=True)
def sacc_carry(L):
    for j in range(SACC_LIMBS - 1):
        c = L[j] >> I64(32)
        L[j] -= c << I64(32)
        L[j + 1] += c


@cuda.jit(device=True)
def sacc_value(L, negzero):
    """The accumulator's value as (negative, hi, lo, E): exact, or its top 127 bits rounded to
    odd (a sticky bit at the bottom); an exact zero is -0 if negzero, else +0."""
    sacc_carry(L)
    neg = L[SACC_LIMBS - 1] < I64(0)
    if neg:
        for j in range(SACC_LIMBS):
            L[j] = -L[j]
        sacc_carry(L)
    t = SACC_LIMBS - 1
    while t >= 0 and L[t] == I64(0):
        t -= 1
    if t < 0:
        return negzero, _Z, _Z, I64(0)
    # the top 128 bits (limbs t..t-4), the bits below as a sticky bit
    hi = (U64(L[t]) << U64(32)) | (U64(L[t - 1]) if t >= 1 else _Z)
    lo = ((U64(L[t - 2]) << U64(32)) if t >= 2 else _Z) | (U64(L[t - 3]) if t >= 3 else _Z)
    s = I64(32) - D.bit_length(U64(L[t]))
    hi, lo = shl128(hi, lo, s)
    sticky = False
    if t >= 4:
        nxt = U64(L[t - 4])
        if s > I64(0):
            lo = lo | (nxt >> U64(I64(32) - s))
            sticky = (nxt & ((_1 << U64(I64(32) - s)) - _1)) != _Z
        else:
            sticky = nxt != _Z
        for j in range(t - 4):
            if L[j] != I64(0):
                sticky = True
    sticky = sticky or (lo & _1) == _1                   # one place down (below 2^127), round to odd
    hi, lo = shr128(hi, lo, I64(1))
    if sticky:
        lo = lo | _1
    return neg, hi, lo, _BASE + I64(32) * (I64(t) - I64(3)) - s + I64(1)


# ---- products ---------------------------------------------------------------------------------------

@cuda.jit(device=True)
def term(a, b, bi, m, n, k, mp, specs):
    """The k-th product of output (bi, m, n): (negative, kind, M, E, exp) with exp the alignment
    exponent E(a)+E(b) (not renormalised), or E(p) of a product rounded to product_format;
    NO_EXP for zero and special products (which are never rounded)."""
    an, ak, aM, aE = D.unpack_float(a[bi, m, k], True)
    bn, bk, bM, bE = D.unpack_float(b[bi, k, n], True)
    neg, kind = mul_kind(an, ak, aM, bn, bk, bM)
    if kind != FINITE:
        return neg, kind, _Z, I64(0), I64(NO_EXP)
    if aM == _Z or bM == _Z:
        return neg, FINITE, _Z, I64(0), I64(NO_EXP)
    sa, ea = strip_zeros(aM, aE)
    sb, eb = strip_zeros(bM, bE)
    M = sa * sb                                      # < 2^48
    E = ea + eb
    if mp[F_HAS_PRODUCT] == 0:
        return neg, FINITE, M, E, exponent(aM, aE, mp[F_A_EMIN]) + exponent(bM, bE, mp[F_B_EMIN])
    pf, ps = specs[S_PROD]
    neg, kind, M, E = round_to(neg, FINITE, _Z, M, E, pf, ps, _Z)
    if kind != FINITE or M == _Z:
        return neg, kind, M, E, I64(NO_EXP)
    return neg, FINITE, M, E, exponent(M, E, mp[F_PROD_EMIN])


# ---- pairwise trees: depth first, with the counters of the reference's level order ----------------

@cuda.jit(device=True)
def level_order_event(n, level, i):
    """Position of the addition making node i of ``level`` in a level-by-level tree of n leaves."""
    c = I64(0)
    cnt = n
    for _ in range(level - 1):
        c += cnt // I64(2)
        cnt = (cnt + I64(1)) // I64(2)
    return c + i


@cuda.jit(device=True)
def bit_reverse(t, bits):
    r = I64(0)
    for _ in range(bits):
        r = (r << I64(1)) | (t & I64(1))
        t = t >> I64(1)
    return r


@cuda.jit(device=True)
def tree_put(sN, sK, sM, sE, sS, sL, i, v, start, level):
    sN[i] = I64(1) if v[0] else I64(0)
    sK[i] = v[1]
    sM[i] = v[2]
    sE[i] = v[3]
    sS[i] = start
    sL[i] = level


@cuda.jit(device=True)
def tree_get(sN, sK, sM, sE, i):
    return sN[i] != I64(0), sK[i], sM[i], sE[i]


@cuda.jit(device=True)
def tree_reduce(sN, sK, sM, sE, sS, sL, depth, finishing, n_leaves, halving, logw, base, fp, sp):
    """Merge the two top entries (left + right) while they are trees of one height, or, when
    ``finishing``, until one is left: the level order's odd last nodes moving up.  The counter
    of each addition is its place in the reference's schedule: level order, or (``halving``,
    lanes(2^logw)) ``s[i] += s[i + h]`` for h = w/2, ..., 1, whose leaves are pushed here in
    bit-reversed order."""
    while depth >= 2 and (finishing or sL[depth - 1] == sL[depth - 2]):
        left = depth - 2
        level = sL[left] + I64(1)
        if halving:
            h = (I64(1) << logw) >> level
            counter = base + U64((I64(1) << logw) - I64(2) * h + bit_reverse(sS[left], logw))
        else:
            counter = base + U64(level_order_event(n_leaves, level, sS[left] >> level))
        r = add_round(tree_get(sN, sK, sM, sE, left), tree_get(sN, sK, sM, sE, left + 1), fp, sp, counter)
        tree_put(sN, sK, sM, sE, sS, sL, left, r, sS[left], level)
        depth -= 1
    return depth


# ---- one step ---------------------------------------------------------------------------------------

@cuda.jit(device=True)
def ieee_step(acc, a, b, bi, m, n, k, mp, specs, counter):
    fp, sp = specs[S_ACC]
    t = term(a, b, bi, m, n, k, mp, specs)
    return add_round(acc, (t[0], t[1], t[2], t[3]), fp, sp, counter)


@cuda.jit(device=True)
def pairwise_step(acc, a, b, bi, m, n, k0, k1, mp, specs, counter):
    """The products as a tree of additions (level order), then added to acc."""
    fp, sp = specs[S_ACC]
    sN = cuda.local.array(_STACK, types.int64)
    sK = cuda.local.array(_STACK, types.int64)
    sM = cuda.local.array(_STACK, types.uint64)
    sE = cuda.local.array(_STACK, types.int64)
    sS = cuda.local.array(_STACK, types.int64)
    sL = cuda.local.array(_STACK, types.int64)
    n_leaves = k1 - k0
    depth = 0
    for k in range(k0, k1):
        t = term(a, b, bi, m, n, k, mp, specs)
        tree_put(sN, sK, sM, sE, sS, sL, depth, (t[0], t[1], t[2], t[3]), k - k0, I64(0))
        depth = tree_reduce(sN, sK, sM, sE, sS, sL, depth + 1, k == k1 - 1, n_leaves, False, I64(0), counter, fp, sp)
    return add_round(acc, tree_get(sN, sK, sM, sE, 0), fp, sp, counter + U64(n_leaves - I64(1)))


@cuda.jit(device=True)
def fused_step(acc, a, b, bi, m, n, k0, k1, mp, specs, counter):
    """The tensor-core block FMA (DESIGN §6 'fused') with C early, late_rn or late_rd.  The
    products are computed once into local arrays (k_fused <= 64), then cut and summed."""
    fp, sp = specs[S_ACC]
    tN = cuda.local.array(_KF_MAX, types.boolean)
    tM = cuda.local.array(_KF_MAX, types.uint64)
    tE = cuda.local.array(_KF_MAX, types.int64)
    an, ak, aM, aE = acc
    c_mode = mp[F_CMODE]
    n_frac = mp[F_NFRAC]
    floor_mode = mp[F_FLOOR] != 0
    acc_emin = mp[F_ACC_EMIN]
    nan = ak == NAN
    pinf = ak == INF and not an
    ninf = ak == INF and an
    e_ref = mp[F_REF] if mp[F_HAS_REF] != 0 else I64(NO_EXP)
    negzero = True                                   # every product is -0
    for k in range(k0, k1):
        pn, pk, pM, pE, pe = term(a, b, bi, m, n, k, mp, specs)
        tN[k - k0] = pn
        tM[k - k0] = pM if pk == FINITE else _Z
        tE[k - k0] = pE
        if pk == NAN:
            nan = True
        elif pk == INF:
            if pn:
                ninf = True
            else:
                pinf = True
        else:
            if pM != _Z or not pn:
                negzero = False
            if pM != _Z:
                e_ref = max(e_ref, pe)
    early = c_mode == 0
    if early and ak == FINITE:
        if aM != _Z or not an:
            negzero = False
        if aM != _Z:
            e_ref = max(e_ref, exponent(aM, aE, acc_emin))
    # the step's exact result before its rounding: (xn, xk, xh, xl, xE)
    xn = False
    xk = FINITE
    xh = _Z
    xl = _Z
    xE = I64(0)
    if nan or (pinf and ninf):
        xk = NAN
    elif pinf or ninf:
        xn = ninf
        xk = INF
    elif c_mode == 2:                                # late_rd: AMD CDNA3's two stages
        Sd = I64(0)
        qd = e_ref - n_frac
        if e_ref != I64(NO_EXP):
            for i in range(k1 - k0):
                if tM[i] != _Z:
                    Sd += cut(tN[i], tM[i], tE[i], qd, floor_mode)
        late = mp[F_LATE]
        e_c = exponent(aM, aE, acc_emin) if aM != _Z else acc_emin
        e_max = e_c if e_ref == I64(NO_EXP) else max(e_ref, e_c)
        q2 = e_max - late - I64(1)
        qc = e_max - n_frac
        low = min(q2, qc)
        S = I64(0)
        if Sd != I64(0):
            S = floor_shift(Sd, qd - q2) << (q2 - low)
        if aM != _Z:
            S += cut(an, aM, aE, qc, True) << (qc - low)
        if S == I64(0):
            xn = negzero and an and aM == _Z
        else:
            mag = U64(-S) if S < I64(0) else U64(S)
            q3 = max(floor_log2(mag, low), acc_emin) - late
            if q3 > low:
                S = floor_shift(S, low - q3)
                low = q3
            xn = S < I64(0)
            xl = U64(-S) if S < I64(0) else U64(S)
            xE = low
    elif n_frac < I64(0):                            # no cut: the exact block FMA
        L = cuda.local.array(SACC_LIMBS, types.int64)
        sacc_clear(L)
        for i in range(k1 - k0):
            if tM[i] != _Z:
                sacc_add(L, tN[i], tM[i], tE[i])
        if early and aM != _Z:
            sacc_add(L, an, aM, aE)
        xn, xh, xl, xE = sacc_value(L, negzero)
    else:
        S = I64(0)
        q = e_ref - n_frac
        if e_ref != I64(NO_EXP):
            for i in range(k1 - k0):
                if tM[i] != _Z:
                    S += cut(tN[i], tM[i], tE[i], q, floor_mode)
            if early and aM != _Z:
                S += cut(an, aM, aE, q, floor_mode)
        if S == I64(0):
            xn = negzero
        else:
            xn = S < I64(0)
            xl = U64(-S) if S < I64(0) else U64(S)
            xE = q
    d = round_to(xn, xk, xh, xl, xE, fp, sp, counter)
    if c_mode == 1 and xk == FINITE:                 # late_rn: one RNE addition of C
        rf, rs = specs[S_RNE]
        d = add_round(d, acc, rf, rs, _Z)
    return d


@cuda.jit(device=True)
def step_at(acc, a, b, bi, m, n, ks, ke, j, mp, specs, counter):
    """Step j of the chunk ks..ke into acc; its first random-bit counter is ``counter``."""
    k0 = ks + j * mp[F_K]
    k1 = min(k0 + mp[F_K], ke)
    kind = mp[F_STEP]
    if kind == IEEE:
        return ieee_step(acc, a, b, bi, m, n, k0, mp, specs, counter)
    if kind == FUSED:
        return fused_step(acc, a, b, bi, m, n, k0, k1, mp, specs, counter)
    return pairwise_step(acc, a, b, bi, m, n, k0, k1, mp, specs, counter)


@cuda.jit(device=True)
def exact_chunk(c0, a, b, bi, m, n, ks, ke, mp, specs, counter):
    """step='exact': the chunk's products and c0 summed exactly, rounded once."""
    fp, sp = specs[S_ACC]
    L = cuda.local.array(SACC_LIMBS, types.int64)
    sacc_clear(L)
    nan = c0[1] == NAN
    pinf = c0[1] == INF and not c0[0]
    ninf = c0[1] == INF and c0[0]
    negzero = c0[1] == FINITE and c0[0] and c0[2] == _Z
    if c0[1] == FINITE and c0[2] != _Z:
        sacc_add(L, c0[0], c0[2], c0[3])
    for k in range(ks, ke):
        pn, pk, pM, pE, pe = term(a, b, bi, m, n, k, mp, specs)
        if pk == NAN:
            nan = True
        elif pk == INF:
            if pn:
                ninf = True
            else:
                pinf = True
        else:
            if pM != _Z or not pn:
                negzero = False
            if pM != _Z:
                sacc_add(L, pn, pM, pE)
    xn, xh, xl, xE = sacc_value(L, negzero)
    xk = FINITE
    if nan or (pinf and ninf):
        xk = NAN
    elif pinf or ninf:
        xn = ninf
        xk = INF
    return round_to(xn, xk, xh, xl, xE, fp, sp, counter)


# ---- the order of the steps over one chunk -----------------------------------------------------------

@cuda.jit(device=True)
def step_events(j, length, mp):
    """Rounding events of the first j steps of a chunk of ``length`` K elements."""
    if mp[F_STEP] == PAIRWISE_STEP:
        return min(j * mp[F_K], length)
    return j


@cuda.jit(device=True)
def chunk_events(length, mp):
    """Rounding events of one chunk (precisionlab.matmul._chunk_events)."""
    if mp[F_STEP] == EXACT:
        return I64(1)
    k = mp[F_K]
    w = mp[F_WIDTH]
    n_steps = (length + k - I64(1)) // k
    inner = step_events(n_steps, length, mp)
    order = mp[F_ORDER]
    if order == SEQUENTIAL:
        return inner
    if order == INTERLEAVED or order == LANES:
        return inner + w
    if order == PAIRWISE:
        return inner + max(n_steps - I64(1), I64(0)) + I64(1)
    return inner + (length + w - I64(1)) // w


@cuda.jit(device=True)
def group_steps(order, g, w, logw, per_block, n_steps, full):
    """The steps of group g of an order, as (count, first, stride, tail): steps first,
    first + stride, ... (count of them), then the steps full .. full + tail - 1.  Groups:
    sequential one (every step); blocked one per block; pairwise one per step (the tree's
    leaves); interleaved one per partial sum, the tail in partial sum 0; lanes one per partial
    sum in bit-reversed order (the halving tree's leaves), then one for the tail."""
    if order == SEQUENTIAL:
        return n_steps, I64(0), I64(1), I64(0)
    if order == BLOCKED:
        return min(per_block, n_steps - g * per_block), g * per_block, I64(1), I64(0)
    if order == PAIRWISE:
        return I64(1), g, I64(1), I64(0)
    per_lane = full // w
    if order == INTERLEAVED:
        return per_lane, g, w, (n_steps - full) if g == I64(0) else I64(0)
    if g == w:
        return I64(0), I64(0), I64(1), n_steps - full
    return per_lane, bit_reverse(g, logw), w, I64(0)


@cuda.jit(device=True)
def chunk_sum(c0, a, b, bi, m, n, ks, ke, mp, specs, base):
    """The chunk ks..ke summed from c0 in the spec's order; its counters start at ``base``.

    Every order is a loop over groups of steps (see group_steps), each summed from -0 (from c0
    in sequential order, from the tree's root for the lanes' tail) and then combined: blocks
    and interleaved partial sums by one addition, pairwise / lanes leaves into a tree.  One
    call of each step and addition in the loop body keeps the compiled kernel small."""
    if mp[F_STEP] == EXACT:
        return exact_chunk(c0, a, b, bi, m, n, ks, ke, mp, specs, base)
    fp, sp = specs[S_ACC]
    sN = cuda.local.array(_STACK, types.int64)
    sK = cuda.local.array(_STACK, types.int64)
    sM = cuda.local.array(_STACK, types.uint64)
    sE = cuda.local.array(_STACK, types.int64)
    sS = cuda.local.array(_STACK, types.int64)
    sL = cuda.local.array(_STACK, types.int64)
    k = mp[F_K]
    w = mp[F_WIDTH]
    order = mp[F_ORDER]
    length = ke - ks
    n_steps = (length + k - I64(1)) // k
    full = n_steps - n_steps % w
    per_block = w // k
    total = base + U64(step_events(n_steps, length, mp))
    n_groups = I64(1)
    if order == BLOCKED:
        n_groups = (n_steps + per_block - I64(1)) // per_block
    elif order == PAIRWISE:
        n_groups = n_steps
    elif order == INTERLEAVED:
        n_groups = w
    elif order == LANES:
        n_groups = w + I64(1)
    tree = order == PAIRWISE or order == LANES
    acc = c0                      # the running sum of sequential and blocked
    r = (True, FINITE, _Z, I64(0))  # the result of the other orders, before C is added
    depth = I64(0)
    for g in range(n_groups):
        count, first, stride, tail = group_steps(order, g, w, mp[F_LOG2W], per_block, n_steps, full)
        s = (True, FINITE, _Z, I64(0))
        if order == SEQUENTIAL:
            s = c0
        elif order == LANES and g == w:
            s = r
        offset = g if order == BLOCKED else I64(0)            # the block additions before
        for idx in range(count + tail):
            j = first + idx * stride if idx < count else full + idx - count
            extra = offset + (w - I64(1) if (order == LANES and j >= full) else I64(0))
            s = step_at(s, a, b, bi, m, n, ks, ke, j, mp, specs, base + U64(step_events(j, length, mp) + extra))
        if tree and g < n_groups - (I64(1) if order == LANES else I64(0)):
            last = g == n_groups - (I64(2) if order == LANES else I64(1))
            tree_put(sN, sK, sM, sE, sS, sL, depth, s, g, I64(0))
            tree_base = total if order == PAIRWISE else base + U64(step_events(full, length, mp))
            depth = tree_reduce(sN, sK, sM, sE, sS, sL, depth + I64(1), last, n_steps, order == LANES,
                                mp[F_LOG2W], tree_base, fp, sp)
            if last:
                r = tree_get(sN, sK, sM, sE, 0)
        elif order == SEQUENTIAL or order == LANES or (order == INTERLEAVED and g == I64(0)):
            r = s
        else:                       # blocked: acc + block; interleaved: r + partial sum g
            if order == BLOCKED:
                cnt = base + U64(step_events(min((g + I64(1)) * per_block, n_steps), length, mp) + g)
                acc = add_round(acc, s, fp, sp, cnt)
            else:
                r = add_round(r, s, fp, sp, total + U64(g - I64(1)))
    if order == SEQUENTIAL:
        return r
    if order == BLOCKED:
        return acc
    last_add = total + U64(max(n_steps - I64(1), I64(0)) if order == PAIRWISE else w - I64(1))
    return add_round(c0, r, fp, sp, last_add)


# ---- one output element --------------------------------------------------------------------------------

@cuda.jit(device=True)
def scale_value(x_bits, s_bits, fp, sp):
    """fp32(x · s), exactly rounded once (RNE): a scaled operand, or a promotion chunk's scale."""
    xn, xk, xM, xE = D.unpack_float(x_bits, True)
    sn, sk, sM, sE = D.unpack_float(s_bits, True)
    neg, kind, hi, lo, E = mul_wide(xn, xk, xM, xE, sn, sk, sM, sE)
    return round_to(neg, kind, hi, lo, E, fp, sp, _Z)


@cuda.jit(device=True)
def scaled_operand_bits(x_bits, s_bits, fp, sp):
    """The float64 bits of fp32(x · s) (scale_at='operands')."""
    xn, xk, xM, xE = D.unpack_float(x_bits, True)
    sn, sk, sM, sE = D.unpack_float(s_bits, True)
    neg, kind, hi, lo, E = mul_wide(xn, xk, xM, xE, sn, sk, sM, sE)
    return D.code_to_float_bits(round_exact(neg, kind, hi, lo, E, fp, sp, _Z), fp, True)


_ONE_BITS = U64(0x3FF0000000000000)
_CANONICAL_NAN = U64(0x7FF8000000000000)


@cuda.jit(device=True)
def element(a, b, c, sa, sb, bi, m, n, base, mp, specs):
    """The output element (bi, m, n) as float64 bits (the reference's ``ReferenceMatmul.element``);
    ``base`` is its first random-bit counter (flat index x rounding events)."""
    cv = D.unpack_float(c[bi, m, n], True)
    K = mp[F_KDIM]
    promotes = mp[F_PROMOTES] != 0
    f32f, f32s = specs[S_F32]
    outer = round_to(cv[0], cv[1], _Z, cv[2], cv[3], f32f, f32s, _Z)
    result = cv
    cnt = base
    chunk = mp[F_CHUNK]                              # max(K, 1) without promotion: one chunk
    for ks in range(0, max(K, I64(1)), chunk):
        ke = min(ks + chunk, K)
        c0 = (True, FINITE, _Z, I64(0)) if promotes else cv
        result = chunk_sum(c0, a, b, bi, m, n, ks, ke, mp, specs, cnt)
        cnt += U64(chunk_events(ke - ks, mp))
        if promotes:
            scale = (False, FINITE, _1, I64(0))
            if mp[F_AT_PROMOTION] != 0 and ks < K:
                s_a = sa[bi, m, ks] if mp[F_HAS_SA] != 0 else _ONE_BITS
                s_b = sb[bi, ks, n] if mp[F_HAS_SB] != 0 else _ONE_BITS
                scale = scale_value(s_a, s_b, f32f, f32s)
            pn, pk, phi, plo, pE = mul_wide(result[0], result[1], result[2], result[3], scale[0], scale[1],
                                            scale[2], scale[3])
            xn, xk, xh, xl, xE = exact_add(outer[0], outer[1], _Z, outer[2], outer[3], pn, pk, phi, plo, pE)
            outer = round_to(xn, xk, xh, xl, xE, f32f, f32s, _Z)
    if promotes:
        result = outer
    if mp[F_HAS_VIA] != 0:
        vf, vs = specs[S_VIA]
        result = round_to(result[0], result[1], _Z, result[2], result[3], vf, vs, cnt)
        cnt += _1
    of, os_ = specs[S_OUT]
    code = round_exact(result[0], result[1], _Z, result[2], result[3], of, os_, cnt)
    if D.code_value(code, of)[1] == NAN:
        return _CANONICAL_NAN
    return D.code_to_float_bits(code, of, True)
