/* Host test driver: the element functions of precisionlab/backends/cuda/round.cuh compiled
 * for the CPU (nvcc -x cu, or g++ -x c++), looped over arrays and called through ctypes by
 * test_cuda_host.py.  The loops are those of kernels.cu with one "thread"; the index plus
 * counter_start is the random-bit counter, as there.  code_bytes is the code dtype's size.
 */
#include "round.cuh"

template <typename C>
static void encode_loop(const void* x, bool in64, bool fast, C* out, pl_i64 n, pl_u64 start, const pl_spec& s)
{
    for (pl_i64 i = 0; i < n; ++i) {
        const pl_u64 counter = start + (pl_u64)i;
        if (fast) out[i] = (C)pl_encode_element_f32(((const pl_u32*)x)[i], s, counter);
        else if (in64) out[i] = (C)pl_encode_element(((const pl_u64*)x)[i], true, s, counter);
        else out[i] = (C)pl_encode_element(((const pl_u32*)x)[i], false, s, counter);
    }
}

template <typename C>
static void decode_loop(const C* codes, bool out64, bool fast, void* out, pl_i64 n, const pl_format& f)
{
    for (pl_i64 i = 0; i < n; ++i) {
        if (fast) ((pl_u32*)out)[i] = pl_decode_element_f32((pl_u32)codes[i], f);
        else if (out64) ((pl_u64*)out)[i] = pl_decode_element((pl_u64)codes[i], f, true);
        else ((pl_u32*)out)[i] = (pl_u32)pl_decode_element((pl_u64)codes[i], f, false);
    }
}

extern "C" {

void pl_host_round(const void* x, int in64, int fast, void* out, pl_i64 n, pl_u64 start, PL_SPEC_PARAMS)
{
    const pl_spec s = pl_make_spec(PL_SPEC_ARGS);
    for (pl_i64 i = 0; i < n; ++i) {
        const pl_u64 counter = start + (pl_u64)i;
        if (fast) ((pl_u32*)out)[i] = pl_round_element_f32(((const pl_u32*)x)[i], s, counter);
        else if (in64) ((pl_u64*)out)[i] = pl_round_element(((const pl_u64*)x)[i], true, s, counter);
        else ((pl_u32*)out)[i] = (pl_u32)pl_round_element(((const pl_u32*)x)[i], false, s, counter);
    }
}

void pl_host_encode(const void* x, int in64, int fast, void* out, int code_bytes, pl_i64 n, pl_u64 start,
                    PL_SPEC_PARAMS)
{
    const pl_spec s = pl_make_spec(PL_SPEC_ARGS);
    switch (code_bytes) {
    case 1: encode_loop((const void*)x, in64, fast, (unsigned char*)out, n, start, s); break;
    case 2: encode_loop((const void*)x, in64, fast, (unsigned short*)out, n, start, s); break;
    case 4: encode_loop((const void*)x, in64, fast, (pl_u32*)out, n, start, s); break;
    default: encode_loop((const void*)x, in64, fast, (pl_u64*)out, n, start, s); break;
    }
}

void pl_host_decode(const void* codes, int code_bytes, int out64, int fast, void* out, pl_i64 n, PL_FORMAT_PARAMS)
{
    const pl_format f = pl_make_format(PL_FORMAT_ARGS);
    switch (code_bytes) {
    case 1: decode_loop((const unsigned char*)codes, out64, fast, out, n, f); break;
    case 2: decode_loop((const unsigned short*)codes, out64, fast, out, n, f); break;
    case 4: decode_loop((const pl_u32*)codes, out64, fast, out, n, f); break;
    default: decode_loop((const pl_u64*)codes, out64, fast, out, n, f); break;
    }
}

/* The PL_* constants, so a test can check them against precisionlab/backends/cuda/__init__.py. */
int pl_host_constant(int which)
{
    const int table[] = {PL_RNE, PL_RNA, PL_RTZ, PL_RUP, PL_RDN, PL_RTO, PL_SR, PL_SR_EQUAL,
                         PL_OVERFLOW_DEFAULT, PL_OVERFLOW_SATURATE, PL_OVERFLOW_SATURATE_FINITE,
                         PL_NAN_IEEE, PL_NAN_FN, PL_NAN_FNUZ, PL_NAN_NONE,
                         PL_HAS_INF, PL_HAS_ZERO, PL_HAS_SUBNORMALS, PL_SIGNED,
                         PL_KEEP_SUBNORMALS, PL_FLUSH_INPUTS};
    return (which >= 0 && which < (int)(sizeof(table) / sizeof(table[0]))) ? table[which] : -1;
}

}

/* ---- matmul.cuh ---------------------------------------------------------------------------- */
#include "matmul.cuh"

extern "C" {

/* The loop of pl_matmul_kernel over the flat output indices start .. stop - 1 (kernels.cu). */
void pl_host_matmul(const pl_u64* a, const pl_u64* b, const pl_u64* c, const pl_u64* sa, const pl_u64* sb,
                    pl_u64* out, pl_i64 n_batch, pl_i64 M, pl_i64 N, const pl_u64* params, pl_i64 start, pl_i64 stop)
{
    const pl_mm_params P = pl_mm_load(params);
    pl_mm_element el;
    el.a = a;
    el.b = b;
    el.c = c;
    el.sa = sa;
    el.sb = sb;
    el.M = M;
    el.N = N;
    el.K = P.p.K;
    for (pl_i64 i = start; i < stop && i < n_batch * M * N; ++i) {
        el.bi = i / (M * N);
        el.m = (i / N) % M;
        el.n = i % N;
        out[i] = pl_mm_element_bits(el, P, (pl_u64)i * (pl_u64)P.p.events);
    }
}

void pl_host_scale(const pl_u64* x, const pl_u64* s, pl_u64* out, pl_i64 n, PL_SPEC_PARAMS)
{
    const pl_spec f32 = pl_make_spec(PL_SPEC_ARGS);
    for (pl_i64 i = 0; i < n; ++i) out[i] = pl_mm_scaled_operand_bits(x[i], s[i], f32);
}

/* matmul.cuh's limits and codes, to compare with precisionlab/backends/cuda/__init__.py. */
int pl_host_matmul_constant(int which)
{
    const int table[] = {PL_SACC_LIMBS, PL_SACC_BASE, PL_FUSED_MAX_K, PL_MM_FIELDS,
                         PL_STEP_IEEE, PL_STEP_FUSED, PL_STEP_PAIRWISE, PL_STEP_EXACT,
                         PL_ORDER_SEQUENTIAL, PL_ORDER_INTERLEAVED, PL_ORDER_LANES, PL_ORDER_PAIRWISE, PL_ORDER_BLOCKED};
    return (which >= 0 && which < (int)(sizeof(table) / sizeof(table[0]))) ? table[which] : -1000000;
}

}
