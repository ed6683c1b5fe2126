/* precisionlab: rounding to any format, element by element (DESIGN §5).
 *
 * The arithmetic of the CuPy kernels (kernels.cu) and of the host test driver: every
 * function here is __host__ __device__, takes bit patterns and returns bit patterns, and
 * uses only integer arithmetic, so the same text compiles with nvcc, NVRTC (CuPy) and a
 * plain C++ compiler, and gives the same bits everywhere.  It is the NumPy reference
 * (backends/numpy_backend.py, the definition) written per element:
 *
 *   |x| = M * 2^E with an integer M; the quantum of the target grid at that magnitude is
 *   2^q with q = max(floor(log2|x|), emin) - m; M is split into a kept integer N and a
 *   remainder below 2^(q - E); the mode decides whether N steps one away from zero.
 *   The result N * 2^q is turned into its code ((q + m + bias) << m) + N - 2^m, which is
 *   monotone in the value and runs past the format's top code, so overflow, flushing and
 *   special values are comparisons and substitutions on codes.
 *
 * pl_round_code() is the reusable core: it rounds any exact value +-M * 2^E (M < 2^62);
 * pl_code_value() gives a code's exact value back and pl_round_up() is the rule of each
 * mode on its own: matmul.cuh builds the matmul kernels' roundings from these three.  The
 * element functions below unpack float32/float64 inputs for pl_round_code.  Two instantiations: the
 * general one in 64-bit integers (any format, float32 or float64 input) and a 32-bit one
 * for float32 inputs to formats whose values all fit float32 (GPU 64-bit integer
 * operations cost two or more 32-bit ones).  Mode, policy and format are runtime
 * arguments, uniform over a launch, so the branches do not diverge.
 *
 * The numeric values of the PL_* constants are fixed by precisionlab/backends/cuda/__init__.py
 * (a test compares them).
 */
#ifndef PRECISIONLAB_ROUND_CUH
#define PRECISIONLAB_ROUND_CUH

#if defined(__CUDACC__)
#define PL_FN __host__ __device__ __forceinline__
#else /* a plain C++ compiler: the CUDA qualifiers mean nothing there */
#define PL_FN inline
#endif

typedef unsigned long long pl_u64;
typedef long long pl_i64;
typedef unsigned int pl_u32;

/* rounding modes, overflow policies, NaN encodings, flags (values: cuda/__init__.py) */
enum { PL_RNE = 0, PL_RNA = 1, PL_RTZ = 2, PL_RUP = 3, PL_RDN = 4, PL_RTO = 5, PL_SR = 6, PL_SR_EQUAL = 7 };
enum { PL_OVERFLOW_DEFAULT = 0, PL_OVERFLOW_SATURATE = 1, PL_OVERFLOW_SATURATE_FINITE = 2 };
enum { PL_NAN_IEEE = 0, PL_NAN_FN = 1, PL_NAN_FNUZ = 2, PL_NAN_NONE = 3 };
enum { PL_HAS_INF = 1, PL_HAS_ZERO = 2, PL_HAS_SUBNORMALS = 4, PL_SIGNED = 8 };      /* format flags */
enum { PL_KEEP_SUBNORMALS = 1, PL_FLUSH_INPUTS = 2 };                               /* spec flags */
enum { PL_FINITE = 0, PL_INF = 1, PL_NAN = 2 };                                     /* input kinds */

/* The facts of a Format a kernel needs (codes are magnitude codes, without the sign). */
struct pl_format {
    int e, m, bias, emin, nan_kind, flags;
    pl_u64 sign_mask, max_code, inf_code, nan_code;
};

/* A RoundSpec: format, mode, overflow policy, subnormal/DAZ flags, SR bits and seed. */
struct pl_spec {
    pl_format f;
    int mode, overflow, flags, sr_bits;
    pl_u64 seed;
};

/* The argument lists every kernel and the host driver take, in the order of
 * cuda/__init__.py's format_args() / spec_args(), and the structs built from them. */
#define PL_FORMAT_PARAMS int f_e, int f_m, int f_bias, int f_nan_kind, int f_flags, \
    pl_u64 f_sign_mask, pl_u64 f_max_code, pl_u64 f_inf_code, pl_u64 f_nan_code
#define PL_SPEC_PARAMS PL_FORMAT_PARAMS, int s_mode, int s_overflow, int s_flags, int s_sr_bits, pl_u64 s_seed
#define PL_FORMAT_ARGS f_e, f_m, f_bias, f_nan_kind, f_flags, f_sign_mask, f_max_code, f_inf_code, f_nan_code
#define PL_SPEC_ARGS PL_FORMAT_ARGS, s_mode, s_overflow, s_flags, s_sr_bits, s_seed

PL_FN pl_format pl_make_format(PL_FORMAT_PARAMS)
{
    pl_format f;
    f.e = f_e;
    f.m = f_m;
    f.bias = f_bias;
    f.emin = ((f_flags & PL_HAS_ZERO) ? 1 : 0) - f_bias;   /* exponent of the smallest normal */
    f.nan_kind = f_nan_kind;
    f.flags = f_flags;
    f.sign_mask = f_sign_mask;
    f.max_code = f_max_code;
    f.inf_code = f_inf_code;
    f.nan_code = f_nan_code;
    return f;
}

PL_FN pl_spec pl_make_spec(PL_SPEC_PARAMS)
{
    pl_spec s;
    s.f = pl_make_format(PL_FORMAT_ARGS);
    s.mode = s_mode;
    s.overflow = s_overflow;
    s.flags = s_flags;
    s.sr_bits = s_sr_bits;
    s.seed = s_seed;
    return s;
}

/* ---- small integer helpers ------------------------------------------------------------ */

/* Number of significant bits (0 for 0). */
PL_FN int pl_bit_length(pl_u64 x)
{
#if defined(__CUDA_ARCH__)
    return 64 - __clzll((long long)x);
#else
    return x ? 64 - __builtin_clzll(x) : 0;
#endif
}

PL_FN int pl_bit_length(pl_u32 x)
{
#if defined(__CUDA_ARCH__)
    return 32 - __clz((int)x);
#else
    return x ? 32 - __builtin_clz(x) : 0;
#endif
}

/* DESIGN §5: the random word of counter i is SplitMix64's finaliser of seed + (i + 1) * gamma. */
PL_FN pl_u64 pl_splitmix64(pl_u64 seed, pl_u64 counter)
{
    pl_u64 z = seed + (counter + 1ull) * 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Does a finite overflow go to Inf under the default policy (IEEE 754 by rounding direction)? */
PL_FN bool pl_overflow_to_inf(int mode, bool negative)
{
    if (mode == PL_RTZ || mode == PL_RTO) return false;
    if (mode == PL_RUP) return !negative;
    if (mode == PL_RDN) return negative;
    return true;                            /* nearest and stochastic modes */
}

/* The rule of each rounding mode on its own: does the kept significand N (odd: its last bit)
 * step one away from zero?  The remainder below N's last place is described by inexact
 * (non-zero), above_half / at_half (against half a place) and, for PL_SR, frac =
 * floor(delta * 2^n), its top n = sr_bits bits.  rto steps up exactly when that makes an
 * inexact N odd.  Shared by pl_round_code and the matmul code's wide roundings (matmul.cuh). */
PL_FN bool pl_round_up(int mode, bool negative, bool odd, bool inexact, bool above_half, bool at_half, pl_u64 frac,
                       const pl_spec& s, pl_u64 counter)
{
    switch (mode) {
    case PL_RNE: return above_half || (at_half && odd);
    case PL_RNA: return above_half || at_half;
    case PL_RUP: return inexact && !negative;
    case PL_RDN: return inexact && negative;
    case PL_RTO: return inexact && !odd;
    case PL_SR: {
        /* away iff floor(delta * 2^n) + R >= 2^n (P3109 StochasticA) */
        const int n = s.sr_bits;
        const pl_u64 R = pl_splitmix64(s.seed, counter) >> (64 - n);
        const pl_u64 threshold = (n == 64) ? (0ull - frac) : ((1ull << n) - frac);
        return inexact && frac > 0 && R >= threshold;
    }
    case PL_SR_EQUAL: return inexact && (pl_splitmix64(s.seed, counter) >> 63) == 1ull;
    default: return false;                 /* rtz */
    }
}

/* ---- the core: round +-M * 2^E to a code ------------------------------------------------
 *
 * U is the integer type of the significands and codes (pl_u32 or pl_u64); M < 2^(bits(U)-2),
 * and every code of the format, also one past its top, must fit U.  kind says whether the
 * input is finite (then M, E hold its exact magnitude; M = 0 is zero), Inf or NaN.  counter
 * indexes the random word of stochastic modes.  Returns the full code (sign included).
 */
template <typename U>
PL_FN U pl_round_code(bool negative, int kind, U M, int E, const pl_spec& s, pl_u64 counter)
{
    const pl_format& f = s.f;
    const int m = f.m;
    const int W = (int)(sizeof(U) * 8);
    const bool has_zero = (f.flags & PL_HAS_ZERO) != 0;
    bool zero_in = (kind != PL_FINITE) || M == 0;          /* the reference's "mag == 0" */
    int e = E + pl_bit_length(M) - 1;                     /* floor(log2 |x|) when M > 0 */
    if ((s.flags & PL_FLUSH_INPUTS) && !zero_in && e < f.emin) zero_in = true;   /* DAZ */

    U N = 0;
    int q = f.emin - m;
    if (!zero_in) {
        q = (e > f.emin ? e : f.emin) - m;
        const int shift = q - E;
        U rem = 0;
        bool inexact = false, above_half = false, at_half = false;
        if (shift <= 0) {                    /* fewer bits than the grid holds: exact */
            N = M << (-shift);
        } else if (shift < W - 1) {
            N = M >> shift;
            rem = M - (N << shift);
            const U half = (U)1 << (shift - 1);
            inexact = rem != 0;
            above_half = rem > half;
            at_half = rem == half;
        } else {                             /* below half of the smallest step (M < 2^(W-2)) */
            rem = M;
            inexact = true;
        }
        pl_u64 frac = 0;
        if (s.mode == PL_SR) {
            /* floor(delta * 2^n), delta = rem / 2^shift: the top n bits of the remainder */
            const int d = shift - s.sr_bits;
            const pl_u64 r64 = (pl_u64)rem;
            if (d >= 64) frac = 0;
            else if (d >= 0) frac = r64 >> d;
            else frac = r64 << (-d);         /* rem < 2^shift, so this stays below 2^n */
        }
        const bool up = pl_round_up(s.mode, negative, (N & 1u) != 0, inexact, above_half, at_half, frac, s, counter);
        N += (U)(up ? 1u : 0u);
    }

    /* the magnitude code on the format's grid continued upwards; zero is a flag, since a
     * format without zero uses the code 0 for its smallest value */
    bool zero = zero_in || N == 0;
    U code = zero ? (U)0 : (U)((((U)(q + m + f.bias)) << m) + N - ((U)1 << m));
    const U min_normal_code = has_zero ? ((U)1 << m) : (U)0;
    if (!(s.flags & PL_KEEP_SUBNORMALS) && !zero && code < min_normal_code) {
        zero = true;                          /* FTZ: results below the smallest normal */
        code = 0;
    }
    if (!has_zero && zero && !zero_in) {      /* no zero: the smallest value is the floor */
        zero = false;
        code = 0;
    }
    const bool is_inf = kind == PL_INF;
    bool is_nan = kind == PL_NAN;
    const bool over = !zero && code > (U)f.max_code;
    const bool to_inf = over && s.overflow == PL_OVERFLOW_DEFAULT && pl_overflow_to_inf(s.mode, negative);
    if (over) code = (U)f.max_code;
    bool inf_result = to_inf || (is_inf && s.overflow != PL_OVERFLOW_SATURATE);
    if (is_inf && !inf_result) {              /* saturate clamps +-Inf to +-max */
        code = (U)f.max_code;
        zero = false;
    }
    if (!(f.flags & PL_HAS_INF)) {            /* an Inf the format cannot hold: NaN, or max */
        if (f.nan_kind == PL_NAN_NONE) {
            if (inf_result) {
                code = (U)f.max_code;
                zero = false;
            }
        } else {
            is_nan = is_nan || inf_result;
        }
        inf_result = false;
    }
    if (inf_result) {
        code = (U)f.inf_code;
        zero = false;
    }
    if (!(f.flags & PL_SIGNED)) {             /* unsigned: below zero is NaN, -0 is +0 */
        is_nan = is_nan || (negative && (!zero_in || is_inf));
        negative = false;
    }
    if (!has_zero) is_nan = is_nan || zero;   /* no zero: +-0 is NaN */
    if (f.nan_kind == PL_NAN_FNUZ) negative = negative && !zero;   /* no -0 */

    if (negative) code |= (U)f.sign_mask;
    if (is_nan) {
        const bool signed_nan = f.nan_kind == PL_NAN_IEEE || f.nan_kind == PL_NAN_FN;
        code = (U)f.nan_code | ((signed_nan && negative) ? (U)f.sign_mask : (U)0);
    }
    return code;
}

/* ---- floats as bit patterns ------------------------------------------------------------ */

/* Bits of the float32 with magnitude S * 2^q, which must be exact in float32 (32-bit path). */
PL_FN pl_u32 pl_pack_float(pl_u32 S, int q, bool)
{
    if (S == 0) return 0;
    const int top = pl_bit_length(S) - 1;
    const int e = q + top;
    if (e >= -126) {
        const pl_u32 sig = top <= 23 ? (S << (23 - top)) : (S >> (top - 23));
        return ((pl_u32)(e + 127) << 23) | (sig & 0x7FFFFFu);
    }
    const int sh = q + 149;                  /* multiples of 2^-149 */
    return sh >= 0 ? (S << sh) : (S >> (-sh));
}

/* The binary32 / binary64 formats themselves, for pl_round_code. */
PL_FN pl_spec pl_float_spec(bool out64)
{
    pl_spec s;
    if (out64) {
        s.f = pl_make_format(11, 52, 1023, PL_NAN_IEEE, PL_HAS_INF | PL_HAS_ZERO | PL_HAS_SUBNORMALS | PL_SIGNED,
                             0x8000000000000000ull, 0x7FEFFFFFFFFFFFFFull, 0x7FF0000000000000ull,
                             0x7FF8000000000000ull);
    } else {
        s.f = pl_make_format(8, 23, 127, PL_NAN_IEEE, PL_HAS_INF | PL_HAS_ZERO | PL_HAS_SUBNORMALS | PL_SIGNED,
                             0x80000000ull, 0x7F7FFFFFull, 0x7F800000ull, 0x7FC00000ull);
    }
    s.mode = PL_RNE;
    s.overflow = PL_OVERFLOW_DEFAULT;
    s.flags = PL_KEEP_SUBNORMALS;
    s.sr_bits = 64;
    s.seed = 0;
    return s;
}

/* Bits of the float64 (out64) or float32 nearest to S * 2^q, ties to even, overflow to Inf:
 * NumPy's astype.  Every value of a format is exact in its decode dtype; only a float32
 * result of a format wider than float32 (the max that overflow='saturate' gives for an
 * infinite float32 input) is rounded, as the reference's final astype(float32) rounds it.
 * A float is a format, so this is pl_round_code to binary32/64. */
PL_FN pl_u64 pl_pack_float(pl_u64 S, int q, bool out64)
{
    return pl_round_code<pl_u64>(false, PL_FINITE, S, q, pl_float_spec(out64), 0);
}

/* The exact value of code: negative, kind and (when kind is PL_FINITE) M, E with the value
 * +-M * 2^E (the reference's decode, without the final conversion to a float). */
template <typename U>
PL_FN void pl_code_value(U code, const pl_format& f, bool& negative, int& kind, U& M, int& E)
{
    const int m = f.m;
    negative = (code & (U)f.sign_mask) != 0;
    const U mag = code & ~(U)f.sign_mask;
    const U exp_field = mag >> m;
    const U frac = mag & (((U)1 << m) - 1);
    bool is_nan = false;
    if (f.nan_kind == PL_NAN_IEEE) is_nan = exp_field == (((U)1 << f.e) - 1) && frac != 0;
    else if (f.nan_kind == PL_NAN_FN) is_nan = mag == (((U)1 << (f.e + m)) - 1);
    else if (f.nan_kind == PL_NAN_FNUZ) is_nan = code == (U)f.sign_mask;
    M = 0;
    E = 0;
    if (is_nan) {
        negative = negative && f.nan_kind != PL_NAN_FNUZ;
        kind = PL_NAN;
    } else if ((f.flags & PL_HAS_INF) && mag == (U)f.inf_code) {
        kind = PL_INF;
    } else if (exp_field == 0 && (f.flags & PL_HAS_ZERO)) {      /* subnormals, or only zeros */
        kind = PL_FINITE;
        M = (f.flags & PL_HAS_SUBNORMALS) ? frac : (U)0;
        E = f.emin - m;
    } else {
        kind = PL_FINITE;
        M = (U)(frac | ((U)1 << m));
        E = (int)exp_field - f.bias - m;
    }
}

/* Bits of the float of width out64 holding the value of code (the reference's decode). */
template <typename U>
PL_FN U pl_code_to_float(U code, const pl_format& f, bool out64)
{
    bool negative;
    int kind, E;
    U M;
    pl_code_value<U>(code, f, negative, kind, M, E);
    const U sign_bit = negative ? ((U)1 << (out64 ? 63 : 31)) : (U)0;
    if (kind == PL_NAN) return (out64 ? (U)0x7FF8000000000000ull : (U)0x7FC00000u) | sign_bit;
    if (kind == PL_INF) return (out64 ? (U)0x7FF0000000000000ull : (U)0x7F800000u) | sign_bit;
    return sign_bit | pl_pack_float(M, E, out64);
}

/* ---- element functions: what one kernel thread does to one element --------------------- */

/* Split float bits (float64 if in64 else float32) into sign, kind and exact M * 2^E. */
template <typename U>
PL_FN void pl_unpack_float(U bits, bool in64, bool& negative, int& kind, U& M, int& E)
{
    const int mb = in64 ? 52 : 23;
    const int ew = in64 ? 11 : 8;
    const int bias = in64 ? 1023 : 127;
    const U all_ones = ((U)1 << ew) - 1;
    negative = ((bits >> (mb + ew)) & 1u) != 0;
    const U exp_field = (bits >> mb) & all_ones;
    const U frac = bits & (((U)1 << mb) - 1);
    kind = exp_field == all_ones ? (frac ? PL_NAN : PL_INF) : PL_FINITE;
    M = exp_field ? (frac | ((U)1 << mb)) : frac;
    E = (exp_field ? (int)exp_field : 1) - bias - mb;
}

/* General path: float bits (in64: float64, else float32 widened into the low 32 bits). */
PL_FN pl_u64 pl_encode_element(pl_u64 bits, bool in64, const pl_spec& s, pl_u64 counter)
{
    bool negative;
    int kind, E;
    pl_u64 M;
    pl_unpack_float<pl_u64>(bits, in64, negative, kind, M, E);
    return pl_round_code<pl_u64>(negative, kind, M, E, s, counter);
}

PL_FN pl_u64 pl_round_element(pl_u64 bits, bool in64, const pl_spec& s, pl_u64 counter)
{
    return pl_code_to_float<pl_u64>(pl_encode_element(bits, in64, s, counter), s.f, in64);
}

PL_FN pl_u64 pl_decode_element(pl_u64 code, const pl_format& f, bool out64)
{
    return pl_code_to_float<pl_u64>(code, f, out64);
}

/* Float32 path, all in 32-bit integers: float32 input, a format whose values fit float32
 * (rounding.fits_float32; its codes then fit 32 bits, also one past the top). */
PL_FN pl_u32 pl_encode_element_f32(pl_u32 bits, const pl_spec& s, pl_u64 counter)
{
    bool negative;
    int kind, E;
    pl_u32 M;
    pl_unpack_float<pl_u32>(bits, false, negative, kind, M, E);
    return pl_round_code<pl_u32>(negative, kind, M, E, s, counter);
}

PL_FN pl_u32 pl_round_element_f32(pl_u32 bits, const pl_spec& s, pl_u64 counter)
{
    return pl_code_to_float<pl_u32>(pl_encode_element_f32(bits, s, counter), s.f, false);
}

PL_FN pl_u32 pl_decode_element_f32(pl_u32 code, const pl_format& f)
{
    return pl_code_to_float<pl_u32>(code, f, false);
}

#endif /* PRECISIONLAB_ROUND_CUH */
