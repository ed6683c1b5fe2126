/* precisionlab: the matmul accumulation model (DESIGN §6), one output element at a time.
 *
 * The arithmetic of the CuPy matmul kernel (kernels.cu) and of the host test driver, as
 * __host__ __device__ functions in integer arithmetic only, like round.cuh, whose
 * pl_round_code / pl_round_up / pl_code_value do every rounding.  It is the Numba-CUDA device
 * code (backends/numba_cuda_matmul.py) function for function, which is the NumPy reference's
 * ReferenceMatmul written per element; see that module's docstring for the representation:
 *
 *   values are exact (negative, kind, M, E) = +-M * 2^E; products of operands with at most 24
 *   significant bits are exact in 48 bits; an addition is exact in 128 bits (hi, lo) with the
 *   bits shifted out kept as a round-to-odd sticky bit one place below at least 124 bits;
 *   fused steps cut their terms as int64 integers; exact sums (step "exact", fused steps
 *   without n_frac) use a fixed-point accumulator of 32-bit limbs held in int64.
 *
 * Orders that the reference evaluates level by level (pairwise trees, the lanes' halving
 * tree) are evaluated depth first with a small stack, the random-bit counter of each addition
 * computed from its place in the reference's schedule.  The model arrives as one array of
 * uint64 (precisionlab/backends/cuda/__init__.py: matmul_params): MATMUL_FIELDS, then six
 * spec_args() lists (MATMUL_SPECS).
 */
#ifndef PRECISIONLAB_MATMUL_CUH
#define PRECISIONLAB_MATMUL_CUH

#include "round.cuh"

/* the limits of cuda/__init__.py (a test compares them) */
#define PL_SACC_LIMBS 24
#define PL_SACC_BASE (-320)
#define PL_FUSED_MAX_K 64
#define PL_STACK 64
#define PL_NO_EXP (-(1ll << 40))
#define PL_MM_FIELDS 24

enum { PL_STEP_IEEE = 0, PL_STEP_FUSED = 1, PL_STEP_PAIRWISE = 2, PL_STEP_EXACT = 3 };
enum { PL_ORDER_SEQUENTIAL = 0, PL_ORDER_INTERLEAVED = 1, PL_ORDER_LANES = 2, PL_ORDER_PAIRWISE = 3,
       PL_ORDER_BLOCKED = 4 };

/* MATMUL_FIELDS, in order */
struct pl_mm_model {
    pl_i64 step, k_fused, n_frac, align_floor, c_mode, has_ref_floor, ref_exp_floor, late_n_frac, order, width,
        log2_width, chunk, promotes, scale_at_promotion, has_a_scale, has_b_scale, has_product, has_via, a_emin,
        b_emin, acc_emin, product_emin, events, K;
};

/* The model and its six roundings (MATMUL_SPECS). */
struct pl_mm_params {
    pl_mm_model p;
    pl_spec acc, rne, prod, f32, via, out;
};

/* One output element's operands: a (B, M, K), b (B, K, N), c (B, M, N) float64 bits, the
 * scales like a and b (or NULL), and the element's indices. */
struct pl_mm_element {
    const pl_u64 *a, *b, *c, *sa, *sb;
    pl_i64 M, N, K, bi, m, n;
};

struct pl_value {
    bool neg;
    int kind;
    pl_u64 M;
    pl_i64 E;
};

struct pl_wide {                    /* +-(hi, lo) * 2^E */
    bool neg;
    int kind;
    pl_u64 hi, lo;
    pl_i64 E;
};

PL_FN pl_spec pl_spec_from(const pl_u64* q)
{
    return pl_make_spec((int)q[0], (int)q[1], (int)q[2], (int)q[3], (int)q[4], q[5], q[6], q[7], q[8], (int)q[9],
                        (int)q[10], (int)q[11], (int)q[12], q[13]);
}

PL_FN pl_mm_params pl_mm_load(const pl_u64* q)
{
    pl_mm_params P;
    pl_i64* f = &P.p.step;
    for (int i = 0; i < PL_MM_FIELDS; ++i) f[i] = (pl_i64)q[i];
    const pl_u64* s = q + PL_MM_FIELDS;
    P.acc = pl_spec_from(s);
    P.rne = pl_spec_from(s + 14);
    P.prod = pl_spec_from(s + 28);
    P.f32 = pl_spec_from(s + 42);
    P.via = pl_spec_from(s + 56);
    P.out = pl_spec_from(s + 70);
    return P;
}

PL_FN pl_value pl_val(bool neg, int kind, pl_u64 M, pl_i64 E)
{
    pl_value v;
    v.neg = neg;
    v.kind = kind;
    v.M = M;
    v.E = E;
    return v;
}

PL_FN pl_wide pl_wide_of(bool neg, int kind, pl_u64 hi, pl_u64 lo, pl_i64 E)
{
    pl_wide w;
    w.neg = neg;
    w.kind = kind;
    w.hi = hi;
    w.lo = lo;
    w.E = E;
    return w;
}

PL_FN pl_value pl_negzero() { return pl_val(true, PL_FINITE, 0, 0); }

/* ---- 128-bit integers as (hi, lo) ----------------------------------------------------------- */

struct pl_u128 {
    pl_u64 hi, lo;
};

PL_FN pl_u128 pl_u128_of(pl_u64 hi, pl_u64 lo)
{
    pl_u128 r;
    r.hi = hi;
    r.lo = lo;
    return r;
}

PL_FN pl_u128 pl_shl128(pl_u128 x, pl_i64 s)           /* 0 <= s < 128 */
{
    if (s == 0) return x;
    if (s >= 64) return pl_u128_of(x.lo << (s - 64), 0);
    return pl_u128_of((x.hi << s) | (x.lo >> (64 - s)), x.lo << s);
}

PL_FN pl_u128 pl_shr128(pl_u128 x, pl_i64 s)           /* s >= 0; 0 from 128 on */
{
    if (s == 0) return x;
    if (s >= 128) return pl_u128_of(0, 0);
    if (s >= 64) return pl_u128_of(0, x.hi >> (s - 64));
    return pl_u128_of(x.hi >> s, (x.lo >> s) | (x.hi << (64 - s)));
}

PL_FN pl_i64 pl_bitlen128(pl_u128 x) { return x.hi ? 64 + pl_bit_length(x.hi) : pl_bit_length(x.lo); }

PL_FN pl_u128 pl_add128(pl_u128 a, pl_u128 b)
{
    const pl_u64 lo = a.lo + b.lo;
    return pl_u128_of(a.hi + b.hi + (lo < a.lo ? 1u : 0u), lo);
}

PL_FN pl_u128 pl_sub128(pl_u128 a, pl_u128 b)          /* a >= b */
{
    return pl_u128_of(a.hi - b.hi - (a.lo < b.lo ? 1u : 0u), a.lo - b.lo);
}

PL_FN bool pl_less128(pl_u128 a, pl_u128 b) { return a.hi < b.hi || (a.hi == b.hi && a.lo < b.lo); }

PL_FN bool pl_eq128(pl_u128 a, pl_u128 b) { return a.hi == b.hi && a.lo == b.lo; }

PL_FN pl_u128 pl_mul64(pl_u64 x, pl_u64 y)             /* the 128-bit product, from 32-bit halves */
{
    const pl_u64 M32 = 0xFFFFFFFFull;
    const pl_u64 x0 = x & M32, x1 = x >> 32, y0 = y & M32, y1 = y >> 32;
    const pl_u64 p00 = x0 * y0, p01 = x0 * y1, p10 = x1 * y0, p11 = x1 * y1;
    const pl_u64 mid = (p00 >> 32) + (p01 & M32) + (p10 & M32);
    return pl_u128_of(p11 + (p01 >> 32) + (p10 >> 32) + (mid >> 32), (p00 & M32) | (mid << 32));
}

/* ---- rounding exact values (the one rounding site of every operation) ------------------------ */

/* The code of x (kind PL_FINITE: below 2^127, possibly with a round-to-odd sticky bit at the
 * bottom; else Inf / NaN) rounded once.  Above 62 bits the grid split is done here in 128 bits
 * and the decision by pl_round_up; the value then lies on the grid and pl_round_code applies
 * the policy (overflow, flushing, specials) as for any value. */
PL_FN pl_u64 pl_round_exact(const pl_wide& x, const pl_spec& s, pl_u64 counter)
{
    pl_u64 M = x.lo;
    pl_i64 E = x.E;
    if (x.kind == PL_FINITE && (x.hi != 0 || x.lo >= (1ull << 62))) {
        const pl_u128 v = pl_u128_of(x.hi, x.lo);
        const pl_i64 e = x.E + pl_bitlen128(v) - 1;
        const pl_i64 q = (e > s.f.emin ? e : (pl_i64)s.f.emin) - s.f.m;
        const pl_i64 shift = q - x.E;                 /* > 9: the value has more than 62 bits */
        M = pl_shr128(v, shift).lo;                   /* below 2^(m + 1) */
        pl_u128 rem = v;
        bool above_half = false, at_half = false;
        if (shift < 128) {                            /* else half a place is 2^127 or more */
            rem = pl_sub128(v, pl_shl128(pl_u128_of(0, M), shift));
            const pl_u128 half = pl_shl128(pl_u128_of(0, 1), shift - 1);
            above_half = pl_less128(half, rem);
            at_half = pl_eq128(half, rem);
        }
        const bool inexact = rem.hi != 0 || rem.lo != 0;
        pl_u64 frac = 0;
        if (s.mode == PL_SR) {                        /* the top n bits of the remainder */
            const pl_i64 d = shift - s.sr_bits;
            frac = d >= 0 ? pl_shr128(rem, d).lo : (rem.lo << (-d));   /* rem < 2^shift < 2^n */
        }
        if (pl_round_up(s.mode, x.neg, (M & 1u) != 0, inexact, above_half, at_half, frac, s, counter)) M += 1;
        E = q;
    }
    return pl_round_code<pl_u64>(x.neg, x.kind, M, (int)E, s, counter);
}

PL_FN pl_value pl_value_of(pl_u64 code, const pl_format& f)
{
    pl_value v;
    int E;
    pl_code_value<pl_u64>(code, f, v.neg, v.kind, v.M, E);
    v.E = E;
    return v;
}

/* pl_round_exact, as the value of the rounded code. */
PL_FN pl_value pl_round_to(const pl_wide& x, const pl_spec& s, pl_u64 counter)
{
    return pl_value_of(pl_round_exact(x, s, counter), s.f);
}

PL_FN pl_wide pl_widen(const pl_value& v) { return pl_wide_of(v.neg, v.kind, 0, v.M, v.E); }

/* ---- exact arithmetic on values ---------------------------------------------------------------- */

PL_FN pl_i64 pl_floor_log2(pl_u64 M, pl_i64 E) { return E + pl_bit_length(M) - 1; }

/* E(x) = max(floor(log2|x|), emin) of a non-zero finite value */
PL_FN pl_i64 pl_exponent(pl_u64 M, pl_i64 E, pl_i64 emin)
{
    const pl_i64 e = pl_floor_log2(M, E);
    return e > emin ? e : emin;
}

/* Unpack float64 bits into a value (pl_unpack_float of round.cuh). */
PL_FN pl_value pl_unpack64(pl_u64 bits)
{
    pl_value v;
    int E;
    pl_unpack_float<pl_u64>(bits, true, v.neg, v.kind, v.M, E);
    v.E = E;
    return v;
}

/* M without its trailing zero bits (M != 0): an operand's significand in a float64 has 53
 * bits, of which an input format's value uses at most 24. */
PL_FN void pl_strip_zeros(pl_u64& M, pl_i64& E)
{
    for (int s = 32; s >= 1; s >>= 1) {
        if ((M & ((1ull << s) - 1)) == 0) {
            M >>= s;
            E += s;
        }
    }
}

/* (negative, kind) of a product: NaN for NaN or 0 * Inf, else Inf, else finite */
PL_FN void pl_mul_kind(const pl_value& a, const pl_value& b, bool& neg, int& kind)
{
    neg = a.neg != b.neg;
    kind = PL_FINITE;
    if (a.kind == PL_NAN || b.kind == PL_NAN) {
        neg = false;
        kind = PL_NAN;
    } else if (a.kind == PL_INF || b.kind == PL_INF) {
        if ((a.kind == PL_FINITE && a.M == 0) || (b.kind == PL_FINITE && b.M == 0)) {
            neg = false;
            kind = PL_NAN;
        } else {
            kind = PL_INF;
        }
    }
}

/* the exact product of two values */
PL_FN pl_wide pl_mul_wide(const pl_value& a, const pl_value& b)
{
    bool neg;
    int kind;
    pl_mul_kind(a, b, neg, kind);
    if (kind != PL_FINITE) return pl_wide_of(neg, kind, 0, 0, 0);
    const pl_u128 p = pl_mul64(a.M, b.M);
    return pl_wide_of(neg, PL_FINITE, p.hi, p.lo, a.E + b.E);
}

/* x + y of two non-zero finite values below 2^125: exact, or with a round-to-odd sticky bit at
 * the bottom and at least 124 bits above it.  An exact cancellation is +0. */
PL_FN pl_wide pl_add_wide(pl_wide x, pl_wide y)
{
    const pl_i64 bx = pl_bitlen128(pl_u128_of(x.hi, x.lo)), by = pl_bitlen128(pl_u128_of(y.hi, y.lo));
    pl_u128 X = pl_shl128(pl_u128_of(x.hi, x.lo), 125 - bx);      /* significands at bits 124.. */
    pl_u128 Y = pl_shl128(pl_u128_of(y.hi, y.lo), 125 - by);
    pl_i64 ex = x.E - (125 - bx), ey = y.E - (125 - by);
    bool xn = x.neg, yn = y.neg;
    if (ey > ex || (ey == ex && pl_less128(X, Y))) {
        const pl_u128 T = X;
        X = Y;
        Y = T;
        const pl_i64 te = ex;
        ex = ey;
        ey = te;
        const bool tn = xn;
        xn = yn;
        yn = tn;
    }
    const pl_i64 d = ex - ey;
    pl_u128 S = pl_shr128(Y, d);
    pl_u64 sticky = 0;
    if (d >= 128) sticky = 1;
    else if (d > 0 && !pl_eq128(pl_shl128(S, d), Y)) sticky = 1;
    X = pl_shl128(X, 1);                                          /* one more place: the sticky bit's */
    S = pl_shl128(S, 1);
    S.lo |= sticky;
    pl_u128 R;
    if (xn == yn) {
        R = pl_add128(X, S);
    } else {
        R = pl_sub128(X, S);
        if (R.hi == 0 && R.lo == 0) xn = false;
    }
    return pl_wide_of(xn, PL_FINITE, R.hi, R.lo, ex - 1);
}

/* x + y before rounding: DESIGN §6 special values (NaN for a NaN or Inf - Inf, else the Inf),
 * a zero sum +0 unless both are -0.  Operands below 2^125. */
PL_FN pl_wide pl_exact_add(const pl_wide& x, const pl_wide& y)
{
    if (x.kind == PL_NAN || y.kind == PL_NAN || (x.kind == PL_INF && y.kind == PL_INF && x.neg != y.neg))
        return pl_wide_of(false, PL_NAN, 0, 0, 0);
    if (x.kind == PL_INF) return pl_wide_of(x.neg, PL_INF, 0, 0, 0);
    if (y.kind == PL_INF) return pl_wide_of(y.neg, PL_INF, 0, 0, 0);
    const bool x0 = x.hi == 0 && x.lo == 0, y0 = y.hi == 0 && y.lo == 0;
    if (x0 && y0) return pl_wide_of(x.neg && y.neg, PL_FINITE, 0, 0, 0);
    if (x0) return y;
    if (y0) return x;
    if (x.hi == 0 && y.hi == 0) {                 /* narrow and close: the exact sum in 62 bits */
        const bool xbig = x.E >= y.E;
        const pl_wide& big = xbig ? x : y;
        const pl_wide& small = xbig ? y : x;
        const pl_i64 d = big.E - small.E;
        if (pl_bit_length(big.lo) + d <= 60 && pl_bit_length(small.lo) <= 60) {
            const pl_u64 B = big.lo << d;
            if (big.neg == small.neg) return pl_wide_of(big.neg, PL_FINITE, 0, B + small.lo, small.E);
            if (B > small.lo) return pl_wide_of(big.neg, PL_FINITE, 0, B - small.lo, small.E);
            if (small.lo > B) return pl_wide_of(small.neg, PL_FINITE, 0, small.lo - B, small.E);
            return pl_wide_of(false, PL_FINITE, 0, 0, 0);
        }
    }
    return pl_add_wide(x, y);
}

/* one addition of two values (below 2^62) rounded once */
PL_FN pl_value pl_add_round(const pl_value& x, const pl_value& y, const pl_spec& s, pl_u64 counter)
{
    return pl_round_to(pl_exact_add(pl_widen(x), pl_widen(y)), s, counter);
}

/* A non-zero finite term cut to a multiple of 2^q, as a signed count of 2^q: toward zero (rtz),
 * or toward -inf (floor).  Callers bound the result below 2^61. */
PL_FN pl_i64 pl_cut(bool neg, pl_u64 M, pl_i64 E, pl_i64 q, bool floor_mode)
{
    const pl_i64 sh = E - q;
    pl_i64 t;
    if (sh >= 0) {
        t = (pl_i64)(M << sh);
    } else {
        const pl_i64 s = -sh;
        const bool up = floor_mode && neg;
        if (s >= 63) t = up ? 1 : 0;
        else if (up) t = (pl_i64)((M + (1ull << s) - 1) >> s);
        else t = (pl_i64)(M >> s);
    }
    return neg ? -t : t;
}

/* floor(S * 2^sh) for a signed S (sh < 0 drops bits toward -inf) */
PL_FN pl_i64 pl_floor_shift(pl_i64 S, pl_i64 sh)
{
    if (sh >= 0) return (pl_i64)((pl_u64)S << sh);
    if (-sh >= 63) return S < 0 ? -1 : 0;
    return S >> (-sh);                   /* arithmetic shift: floor (C++20; every compiler here) */
}

/* ---- the exact (fixed-point) accumulator -------------------------------------------------------- */

PL_FN void pl_sacc_clear(pl_i64* L)
{
    for (int j = 0; j < PL_SACC_LIMBS; ++j) L[j] = 0;
}

/* add +-M * 2^E (0 < M < 2^53, inside the accumulator's range) */
PL_FN void pl_sacc_add(pl_i64* L, bool neg, pl_u64 M, pl_i64 E)
{
    const pl_u64 M32 = 0xFFFFFFFFull;
    const pl_i64 o = E - PL_SACC_BASE;
    const pl_i64 j = o >> 5;
    const int r = (int)(o & 31);
    const pl_u64 t0 = (M & M32) << r, t1 = (M >> 32) << r;
    pl_i64 a0 = (pl_i64)(t0 & M32), a1 = (pl_i64)(t0 >> 32) + (pl_i64)(t1 & M32), a2 = (pl_i64)(t1 >> 32);
    if (neg) {
        a0 = -a0;
        a1 = -a1;
        a2 = -a2;
    }
    L[j] += a0;
    L[j + 1] += a1;
    L[j + 2] += a2;
}

PL_FN void pl_sacc_carry(pl_i64* L)
{
    for (int j = 0; j < PL_SACC_LIMBS - 1; ++j) {
        const pl_i64 c = L[j] >> 32;
        L[j] -= (pl_i64)((pl_u64)c << 32);
        L[j + 1] += c;
    }
}

/* The accumulator's value: exact, or its top 127 bits rounded to odd; an exact zero is -0 if
 * negzero, else +0. */
PL_FN pl_wide pl_sacc_value(pl_i64* L, bool negzero)
{
    pl_sacc_carry(L);
    const bool neg = L[PL_SACC_LIMBS - 1] < 0;
    if (neg) {
        for (int j = 0; j < PL_SACC_LIMBS; ++j) L[j] = -L[j];
        pl_sacc_carry(L);
    }
    int t = PL_SACC_LIMBS - 1;
    while (t >= 0 && L[t] == 0) --t;
    if (t < 0) return pl_wide_of(negzero, PL_FINITE, 0, 0, 0);
    /* the top 128 bits (limbs t..t-4), the bits below as a sticky bit */
    pl_u128 v = pl_u128_of(((pl_u64)L[t] << 32) | (t >= 1 ? (pl_u64)L[t - 1] : 0ull),
                           (t >= 2 ? ((pl_u64)L[t - 2] << 32) : 0ull) | (t >= 3 ? (pl_u64)L[t - 3] : 0ull));
    const pl_i64 s = 32 - pl_bit_length((pl_u64)L[t]);
    v = pl_shl128(v, s);
    bool sticky = false;
    if (t >= 4) {
        const pl_u64 nxt = (pl_u64)L[t - 4];
        if (s > 0) {
            v.lo |= nxt >> (32 - s);
            sticky = (nxt & ((1ull << (32 - s)) - 1)) != 0;
        } else {
            sticky = nxt != 0;
        }
        for (int j = 0; j < t - 4; ++j) sticky = sticky || L[j] != 0;
    }
    sticky = sticky || (v.lo & 1u) != 0;                       /* one place down (below 2^127), round to odd */
    v = pl_shr128(v, 1);
    if (sticky) v.lo |= 1u;
    return pl_wide_of(neg, PL_FINITE, v.hi, v.lo, PL_SACC_BASE + 32 * ((pl_i64)t - 3) - s + 1);
}

/* ---- products ------------------------------------------------------------------------------------- */

/* A product and its alignment exponent (exp): E(a)+E(b) not renormalised, or E(p) of a product
 * rounded to product_format; PL_NO_EXP for zero and special products (which are never rounded). */
struct pl_term {
    pl_value v;
    pl_i64 exp;
};

PL_FN pl_term pl_mm_term(const pl_mm_element& el, pl_i64 k, const pl_mm_params& P)
{
    const pl_value a = pl_unpack64(el.a[(el.bi * el.M + el.m) * el.K + k]);
    const pl_value b = pl_unpack64(el.b[(el.bi * el.K + k) * el.N + el.n]);
    pl_term t;
    bool neg;
    int kind;
    pl_mul_kind(a, b, neg, kind);
    t.exp = PL_NO_EXP;
    t.v = pl_val(neg, kind, 0, 0);
    if (kind != PL_FINITE || a.M == 0 || b.M == 0) return t;
    pl_u64 sa = a.M, sb = b.M;
    pl_i64 ea = a.E, eb = b.E;
    pl_strip_zeros(sa, ea);
    pl_strip_zeros(sb, eb);
    t.v = pl_val(neg, PL_FINITE, sa * sb, ea + eb);                  /* below 2^48 */
    if (!P.p.has_product) {
        t.exp = pl_exponent(a.M, a.E, P.p.a_emin) + pl_exponent(b.M, b.E, P.p.b_emin);
        return t;
    }
    t.v = pl_round_to(pl_widen(t.v), P.prod, 0);
    if (t.v.kind == PL_FINITE && t.v.M != 0) t.exp = pl_exponent(t.v.M, t.v.E, P.p.product_emin);
    return t;
}

/* ---- pairwise trees: depth first, with the counters of the reference's level order -------------- */

/* position of the addition making node i of level in a level-by-level tree of n leaves */
PL_FN pl_i64 pl_level_order_event(pl_i64 n, pl_i64 level, pl_i64 i)
{
    pl_i64 c = 0, cnt = n;
    for (pl_i64 l = 1; l < level; ++l) {
        c += cnt / 2;
        cnt = (cnt + 1) / 2;
    }
    return c + i;
}

PL_FN pl_i64 pl_bit_reverse(pl_i64 t, pl_i64 bits)
{
    pl_i64 r = 0;
    for (pl_i64 i = 0; i < bits; ++i) {
        r = (r << 1) | (t & 1);
        t >>= 1;
    }
    return r;
}

struct pl_tree {
    pl_value v[PL_STACK];
    pl_i64 start[PL_STACK], level[PL_STACK];
    int depth;
};

PL_FN void pl_tree_put(pl_tree& T, int i, const pl_value& v, pl_i64 start, pl_i64 level)
{
    T.v[i] = v;
    T.start[i] = start;
    T.level[i] = level;
}

/* Merge the two top entries (left + right) while they are trees of one height, or, when
 * finishing, until one is left: the level order's odd last nodes moving up.  The counter of
 * each addition is its place in the reference's schedule: level order, or (halving,
 * lanes(2^logw)) s[i] += s[i + h] for h = w/2, ..., 1, whose leaves are pushed in bit-reversed
 * order. */
PL_FN void pl_tree_reduce(pl_tree& T, bool finishing, pl_i64 n_leaves, bool halving, pl_i64 logw, pl_u64 base,
                          const pl_spec& s)
{
    while (T.depth >= 2 && (finishing || T.level[T.depth - 1] == T.level[T.depth - 2])) {
        const int left = T.depth - 2;
        const pl_i64 level = T.level[left] + 1;
        pl_u64 counter;
        if (halving) {
            const pl_i64 h = (1ll << logw) >> level;
            counter = base + (pl_u64)((1ll << logw) - 2 * h + pl_bit_reverse(T.start[left], logw));
        } else {
            counter = base + (pl_u64)pl_level_order_event(n_leaves, level, T.start[left] >> level);
        }
        const pl_value r = pl_add_round(T.v[left], T.v[left + 1], s, counter);
        pl_tree_put(T, left, r, T.start[left], level);
        --T.depth;
    }
}

/* ---- one step -------------------------------------------------------------------------------------- */

PL_FN pl_value pl_mm_ieee_step(const pl_value& acc, const pl_mm_element& el, pl_i64 k, const pl_mm_params& P,
                               pl_u64 counter)
{
    return pl_add_round(acc, pl_mm_term(el, k, P).v, P.acc, counter);
}

/* the products as a tree of additions (level order), then added to acc */
PL_FN pl_value pl_mm_pairwise_step(const pl_value& acc, const pl_mm_element& el, pl_i64 k0, pl_i64 k1,
                                   const pl_mm_params& P, pl_u64 counter)
{
    pl_tree T;
    T.depth = 0;
    const pl_i64 n_leaves = k1 - k0;
    for (pl_i64 k = k0; k < k1; ++k) {
        pl_tree_put(T, T.depth, pl_mm_term(el, k, P).v, k - k0, 0);
        ++T.depth;
        pl_tree_reduce(T, k == k1 - 1, n_leaves, false, 0, counter, P.acc);
    }
    return pl_add_round(acc, T.v[0], P.acc, counter + (pl_u64)(n_leaves - 1));
}

/* The tensor-core block FMA (DESIGN §6 'fused') with C early, late_rn or late_rd.  The products
 * are computed once into local arrays (k_fused <= 64), then cut and summed. */
PL_FN pl_value pl_mm_fused_step(const pl_value& acc, const pl_mm_element& el, pl_i64 k0, pl_i64 k1,
                                const pl_mm_params& P, pl_u64 counter)
{
    bool tN[PL_FUSED_MAX_K];
    pl_u64 tM[PL_FUSED_MAX_K];
    pl_i64 tE[PL_FUSED_MAX_K];
    const pl_mm_model& p = P.p;
    const bool floor_mode = p.align_floor != 0;
    const pl_i64 n_frac = p.n_frac, acc_emin = p.acc_emin;
    bool nan = acc.kind == PL_NAN, pinf = acc.kind == PL_INF && !acc.neg, ninf = acc.kind == PL_INF && acc.neg;
    pl_i64 e_ref = p.has_ref_floor ? p.ref_exp_floor : PL_NO_EXP;
    bool negzero = true;                                             /* every product is -0 */
    for (pl_i64 k = k0; k < k1; ++k) {
        const pl_term t = pl_mm_term(el, k, P);
        tN[k - k0] = t.v.neg;
        tM[k - k0] = t.v.kind == PL_FINITE ? t.v.M : 0;
        tE[k - k0] = t.v.E;
        if (t.v.kind == PL_NAN) {
            nan = true;
        } else if (t.v.kind == PL_INF) {
            if (t.v.neg) ninf = true;
            else pinf = true;
        } else {
            if (t.v.M != 0 || !t.v.neg) negzero = false;
            if (t.v.M != 0 && t.exp > e_ref) e_ref = t.exp;
        }
    }
    const bool early = p.c_mode == 0;
    if (early && acc.kind == PL_FINITE) {
        if (acc.M != 0 || !acc.neg) negzero = false;
        if (acc.M != 0) {
            const pl_i64 ec = pl_exponent(acc.M, acc.E, acc_emin);
            if (ec > e_ref) e_ref = ec;
        }
    }
    const pl_i64 n = k1 - k0;
    pl_wide x = pl_wide_of(false, PL_FINITE, 0, 0, 0);        /* the step's exact result before its rounding */
    if (nan || (pinf && ninf)) {
        x.kind = PL_NAN;
    } else if (pinf || ninf) {
        x.neg = ninf;
        x.kind = PL_INF;
    } else if (p.c_mode == 2) {                                    /* late_rd: AMD CDNA3's two stages */
        pl_i64 Sd = 0;
        const pl_i64 qd = e_ref - n_frac;
        if (e_ref != PL_NO_EXP)
            for (pl_i64 i = 0; i < n; ++i)
                if (tM[i] != 0) Sd += pl_cut(tN[i], tM[i], tE[i], qd, floor_mode);
        const pl_i64 late = p.late_n_frac;
        const pl_i64 e_c = acc.M != 0 ? pl_exponent(acc.M, acc.E, acc_emin) : acc_emin;
        const pl_i64 e_max = e_ref == PL_NO_EXP ? e_c : (e_ref > e_c ? e_ref : e_c);
        const pl_i64 q2 = e_max - late - 1, qc = e_max - n_frac;
        pl_i64 low = q2 < qc ? q2 : qc;
        pl_i64 S = 0;
        if (Sd != 0) S = (pl_i64)((pl_u64)pl_floor_shift(Sd, qd - q2) << (q2 - low));
        if (acc.M != 0) S += (pl_i64)((pl_u64)pl_cut(acc.neg, acc.M, acc.E, qc, true) << (qc - low));
        if (S == 0) {
            x.neg = negzero && acc.neg && acc.M == 0;
        } else {
            const pl_u64 mag = S < 0 ? (pl_u64)(-S) : (pl_u64)S;
            const pl_i64 e3 = pl_floor_log2(mag, low);
            const pl_i64 q3 = (e3 > acc_emin ? e3 : acc_emin) - late;
            if (q3 > low) {
                S = pl_floor_shift(S, low - q3);
                low = q3;
            }
            x.neg = S < 0;
            x.lo = S < 0 ? (pl_u64)(-S) : (pl_u64)S;
            x.E = low;
        }
    } else if (n_frac < 0) {                                       /* no cut: the exact block FMA */
        pl_i64 L[PL_SACC_LIMBS];
        pl_sacc_clear(L);
        for (pl_i64 i = 0; i < n; ++i)
            if (tM[i] != 0) pl_sacc_add(L, tN[i], tM[i], tE[i]);
        if (early && acc.M != 0) pl_sacc_add(L, acc.neg, acc.M, acc.E);
        x = pl_sacc_value(L, negzero);
    } else {
        pl_i64 S = 0;
        const pl_i64 q = e_ref - n_frac;
        if (e_ref != PL_NO_EXP) {
            for (pl_i64 i = 0; i < n; ++i)
                if (tM[i] != 0) S += pl_cut(tN[i], tM[i], tE[i], q, floor_mode);
            if (early && acc.M != 0) S += pl_cut(acc.neg, acc.M, acc.E, q, floor_mode);
        }
        if (S == 0) {
            x.neg = negzero;
        } else {
            x.neg = S < 0;
            x.lo = S < 0 ? (pl_u64)(-S) : (pl_u64)S;
            x.E = q;
        }
    }
    pl_value d = pl_round_to(x, P.acc, counter);
    if (p.c_mode == 1 && x.kind == PL_FINITE) d = pl_add_round(d, acc, P.rne, 0);   /* late_rn: one RNE add of C */
    return d;
}

/* step j of the chunk ks..ke into acc; its first random-bit counter is counter */
PL_FN pl_value pl_mm_step_at(const pl_value& acc, const pl_mm_element& el, pl_i64 ks, pl_i64 ke, pl_i64 j,
                             const pl_mm_params& P, pl_u64 counter)
{
    const pl_i64 k0 = ks + j * P.p.k_fused;
    const pl_i64 k1 = k0 + P.p.k_fused < ke ? k0 + P.p.k_fused : ke;
    if (P.p.step == PL_STEP_IEEE) return pl_mm_ieee_step(acc, el, k0, P, counter);
    if (P.p.step == PL_STEP_FUSED) return pl_mm_fused_step(acc, el, k0, k1, P, counter);
    return pl_mm_pairwise_step(acc, el, k0, k1, P, counter);
}

/* step "exact": the chunk's products and c0 summed exactly, rounded once */
PL_FN pl_value pl_mm_exact_chunk(const pl_value& c0, const pl_mm_element& el, pl_i64 ks, pl_i64 ke,
                                 const pl_mm_params& P, pl_u64 counter)
{
    pl_i64 L[PL_SACC_LIMBS];
    pl_sacc_clear(L);
    bool nan = c0.kind == PL_NAN, pinf = c0.kind == PL_INF && !c0.neg, ninf = c0.kind == PL_INF && c0.neg;
    bool negzero = c0.kind == PL_FINITE && c0.neg && c0.M == 0;
    if (c0.kind == PL_FINITE && c0.M != 0) pl_sacc_add(L, c0.neg, c0.M, c0.E);
    for (pl_i64 k = ks; k < ke; ++k) {
        const pl_value t = pl_mm_term(el, k, P).v;
        if (t.kind == PL_NAN) {
            nan = true;
        } else if (t.kind == PL_INF) {
            if (t.neg) ninf = true;
            else pinf = true;
        } else {
            if (t.M != 0 || !t.neg) negzero = false;
            if (t.M != 0) pl_sacc_add(L, t.neg, t.M, t.E);
        }
    }
    pl_wide x = pl_sacc_value(L, negzero);
    if (nan || (pinf && ninf)) {
        x.kind = PL_NAN;
    } else if (pinf || ninf) {
        x.neg = ninf;
        x.kind = PL_INF;
    }
    return pl_round_to(x, P.acc, counter);
}

/* ---- the order of the steps over one chunk ------------------------------------------------------- */

/* rounding events of the first j steps of a chunk of length K elements */
PL_FN pl_i64 pl_mm_step_events(pl_i64 j, pl_i64 length, const pl_mm_model& p)
{
    if (p.step == PL_STEP_PAIRWISE) return j * p.k_fused < length ? j * p.k_fused : length;
    return j;
}

/* rounding events of one chunk (precisionlab.matmul._chunk_events) */
PL_FN pl_i64 pl_mm_chunk_events(pl_i64 length, const pl_mm_model& p)
{
    if (p.step == PL_STEP_EXACT) return 1;
    const pl_i64 n_steps = (length + p.k_fused - 1) / p.k_fused;
    const pl_i64 inner = pl_mm_step_events(n_steps, length, p);
    if (p.order == PL_ORDER_SEQUENTIAL) return inner;
    if (p.order == PL_ORDER_INTERLEAVED || p.order == PL_ORDER_LANES) return inner + p.width;
    if (p.order == PL_ORDER_PAIRWISE) return inner + (n_steps > 1 ? n_steps - 1 : 0) + 1;
    return inner + (length + p.width - 1) / p.width;
}

/* The steps of group g of an order: count of them at first, first + stride, ..., then the steps
 * full .. full + tail - 1 (see chunk_sum). */
PL_FN void pl_mm_group_steps(pl_i64 order, pl_i64 g, pl_i64 w, pl_i64 logw, pl_i64 per_block, pl_i64 n_steps,
                             pl_i64 full, pl_i64& count, pl_i64& first, pl_i64& stride, pl_i64& tail)
{
    count = 0;
    first = 0;
    stride = 1;
    tail = 0;
    if (order == PL_ORDER_SEQUENTIAL) {
        count = n_steps;
    } else if (order == PL_ORDER_BLOCKED) {
        count = per_block < n_steps - g * per_block ? per_block : n_steps - g * per_block;
        first = g * per_block;
    } else if (order == PL_ORDER_PAIRWISE) {
        count = 1;
        first = g;
    } else if (order == PL_ORDER_INTERLEAVED) {
        count = full / w;
        first = g;
        stride = w;
        tail = g == 0 ? n_steps - full : 0;
    } else if (g == w) {                         /* lanes: the tail after the tree */
        tail = n_steps - full;
    } else {
        count = full / w;
        first = pl_bit_reverse(g, logw);
        stride = w;
    }
}

/* The chunk ks..ke summed from c0 in the spec's order; its counters start at base.  Every
 * order is a loop over groups of steps, each summed from -0 (from c0 in sequential order, from
 * the tree's root for the lanes' tail) and then combined: blocks and interleaved partial sums by
 * one addition, pairwise / lanes leaves into a tree.  Groups: sequential one (every step);
 * blocked one per block; pairwise one per step (the tree's leaves); interleaved one per partial
 * sum, the tail in partial sum 0; lanes one per partial sum in bit-reversed order (the halving
 * tree's leaves), then one for the tail. */
PL_FN pl_value pl_mm_chunk_sum(const pl_value& c0, const pl_mm_element& el, pl_i64 ks, pl_i64 ke,
                               const pl_mm_params& P, pl_u64 base)
{
    const pl_mm_model& p = P.p;
    if (p.step == PL_STEP_EXACT) return pl_mm_exact_chunk(c0, el, ks, ke, P, base);
    pl_tree T;
    T.depth = 0;
    const pl_i64 k = p.k_fused, w = p.width, order = p.order, length = ke - ks;
    const pl_i64 n_steps = (length + k - 1) / k;
    const pl_i64 full = n_steps - n_steps % w;
    const pl_i64 per_block = w / k;
    const pl_u64 total = base + (pl_u64)pl_mm_step_events(n_steps, length, p);
    pl_i64 n_groups = 1;
    if (order == PL_ORDER_BLOCKED) n_groups = (n_steps + per_block - 1) / per_block;
    else if (order == PL_ORDER_PAIRWISE) n_groups = n_steps;
    else if (order == PL_ORDER_INTERLEAVED) n_groups = w;
    else if (order == PL_ORDER_LANES) n_groups = w + 1;
    const bool tree = order == PL_ORDER_PAIRWISE || order == PL_ORDER_LANES;
    const bool lanes = order == PL_ORDER_LANES;
    pl_value acc = c0;                  /* the running sum of sequential and blocked */
    pl_value r = pl_negzero();          /* the result of the other orders, before C is added */
    for (pl_i64 g = 0; g < n_groups; ++g) {
        pl_i64 count, first, stride, tail;
        pl_mm_group_steps(order, g, w, p.log2_width, per_block, n_steps, full, count, first, stride, tail);
        pl_value s = pl_negzero();
        if (order == PL_ORDER_SEQUENTIAL) s = c0;
        else if (lanes && g == w) s = r;
        const pl_i64 offset = order == PL_ORDER_BLOCKED ? g : 0;          /* the block additions before */
        for (pl_i64 idx = 0; idx < count + tail; ++idx) {
            const pl_i64 j = idx < count ? first + idx * stride : full + idx - count;
            const pl_i64 extra = offset + ((lanes && j >= full) ? w - 1 : 0);
            s = pl_mm_step_at(s, el, ks, ke, j, P, base + (pl_u64)(pl_mm_step_events(j, length, p) + extra));
        }
        if (tree && g < n_groups - (lanes ? 1 : 0)) {
            const bool last = g == n_groups - (lanes ? 2 : 1);
            pl_tree_put(T, T.depth, s, g, 0);
            ++T.depth;
            const pl_u64 tree_base = lanes ? base + (pl_u64)pl_mm_step_events(full, length, p) : total;
            pl_tree_reduce(T, last, n_steps, lanes, p.log2_width, tree_base, P.acc);
            if (last) r = T.v[0];
        } else if (order == PL_ORDER_SEQUENTIAL || lanes || (order == PL_ORDER_INTERLEAVED && g == 0)) {
            r = s;
        } else if (order == PL_ORDER_BLOCKED) {                           /* acc + block */
            const pl_i64 end = (g + 1) * per_block < n_steps ? (g + 1) * per_block : n_steps;
            acc = pl_add_round(acc, s, P.acc, base + (pl_u64)(pl_mm_step_events(end, length, p) + g));
        } else {                                                          /* interleaved: r + partial sum g */
            r = pl_add_round(r, s, P.acc, total + (pl_u64)(g - 1));
        }
    }
    if (order == PL_ORDER_SEQUENTIAL) return r;
    if (order == PL_ORDER_BLOCKED) return acc;
    const pl_u64 last_add = total + (pl_u64)(order == PL_ORDER_PAIRWISE ? (n_steps > 1 ? n_steps - 1 : 0) : w - 1);
    return pl_add_round(c0, r, P.acc, last_add);
}

/* ---- one output element ---------------------------------------------------------------------------- */

/* fp32(x * s) rounded once (RNE): a scaled operand, or a promotion chunk's scale */
PL_FN pl_value pl_mm_scale_value(pl_u64 x_bits, pl_u64 s_bits, const pl_spec& f32)
{
    return pl_round_to(pl_mul_wide(pl_unpack64(x_bits), pl_unpack64(s_bits)), f32, 0);
}

/* the float64 bits of fp32(x * s) (scale_at = "operands") */
PL_FN pl_u64 pl_mm_scaled_operand_bits(pl_u64 x_bits, pl_u64 s_bits, const pl_spec& f32)
{
    return pl_code_to_float<pl_u64>(pl_round_exact(pl_mul_wide(pl_unpack64(x_bits), pl_unpack64(s_bits)), f32, 0),
                                    f32.f, true);
}

/* The output element as float64 bits (the reference's ReferenceMatmul.element); base is its
 * first random-bit counter (flat index x rounding events). */
PL_FN pl_u64 pl_mm_element_bits(const pl_mm_element& el, const pl_mm_params& P, pl_u64 base)
{
    const pl_mm_model& p = P.p;
    const pl_value cv = pl_unpack64(el.c[(el.bi * el.M + el.m) * el.N + el.n]);
    const bool promotes = p.promotes != 0;
    pl_value outer = pl_round_to(pl_widen(cv), P.f32, 0);
    pl_value result = cv;
    pl_u64 cnt = base;
    const pl_i64 K = p.K, chunk = p.chunk;                     /* chunk = max(K, 1) without promotion */
    for (pl_i64 ks = 0; ks < (K > 1 ? K : 1); ks += chunk) {
        const pl_i64 ke = ks + chunk < K ? ks + chunk : K;
        result = pl_mm_chunk_sum(promotes ? pl_negzero() : cv, el, ks, ke, P, cnt);
        cnt += (pl_u64)pl_mm_chunk_events(ke - ks, p);
        if (promotes) {
            pl_value scale = pl_val(false, PL_FINITE, 1, 0);
            if (p.scale_at_promotion && ks < K) {
                const pl_u64 one = 0x3FF0000000000000ull;
                const pl_u64 s_a = p.has_a_scale ? el.sa[(el.bi * el.M + el.m) * el.K + ks] : one;
                const pl_u64 s_b = p.has_b_scale ? el.sb[(el.bi * el.K + ks) * el.N + el.n] : one;
                scale = pl_mm_scale_value(s_a, s_b, P.f32);
            }
            outer = pl_round_to(pl_exact_add(pl_widen(outer), pl_mul_wide(result, scale)), P.f32, 0);
        }
    }
    if (promotes) result = outer;
    if (p.has_via) {
        result = pl_round_to(pl_widen(result), P.via, cnt);
        cnt += 1;
    }
    const pl_u64 code = pl_round_exact(pl_widen(result), P.out, cnt);
    if (pl_value_of(code, P.out.f).kind == PL_NAN) return 0x7FF8000000000000ull;      /* the canonical NaN */
    return pl_code_to_float<pl_u64>(code, P.out.f, true);
}

#endif /* PRECISIONLAB_MATMUL_CUH */
