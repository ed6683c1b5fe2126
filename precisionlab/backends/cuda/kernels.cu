/* precisionlab: CUDA kernels of the CuPy backend (compiled at run time by cupy.RawModule).
 *
 * Each kernel is a grid-stride loop over a flat array that calls one element function
 * of round.cuh, where all the arithmetic lives; the element's flat index (plus
 * counter_start) is its random-bit counter, so the result does not depend on the launch
 * shape.  Kernels are templates instantiated by name from Python (cupy_backend.py):
 *
 *   pl_round_kernel<IN64, FAST>       float bits in -> rounded float bits out (same width)
 *   pl_encode_kernel<IN64, FAST, C>   float bits in -> codes of type C out
 *   pl_decode_kernel<C, OUT64, FAST>  codes in -> float bits out
 *
 * FAST selects the 32-bit path (float32 data, formats inside float32).  The matmul kernels
 * (arithmetic in matmul.cuh) are plain functions:
 *
 *   pl_matmul_kernel   one thread per output element of a (B, M, N) result, float64 bits
 *   pl_scale_kernel    fp32(x * s) elementwise (operands scaled before the products)
 */
#include "round.cuh"
#include "matmul.cuh"

template <bool IN64, bool FAST>
__global__ void pl_round_kernel(const void* __restrict__ x, void* __restrict__ out, pl_i64 n,
                                pl_u64 counter_start, PL_SPEC_PARAMS)
{
    const pl_spec s = pl_make_spec(PL_SPEC_ARGS);
    const pl_i64 stride = (pl_i64)blockDim.x * gridDim.x;
    for (pl_i64 i = (pl_i64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        const pl_u64 counter = counter_start + (pl_u64)i;
        if (FAST) {
            ((pl_u32*)out)[i] = pl_round_element_f32(((const pl_u32*)x)[i], s, counter);
        } else if (IN64) {
            ((pl_u64*)out)[i] = pl_round_element(((const pl_u64*)x)[i], true, s, counter);
        } else {
            ((pl_u32*)out)[i] = (pl_u32)pl_round_element(((const pl_u32*)x)[i], false, s, counter);
        }
    }
}

template <bool IN64, bool FAST, typename C>
__global__ void pl_encode_kernel(const void* __restrict__ x, C* __restrict__ out, pl_i64 n,
                                 pl_u64 counter_start, PL_SPEC_PARAMS)
{
    const pl_spec s = pl_make_spec(PL_SPEC_ARGS);
    const pl_i64 stride = (pl_i64)blockDim.x * gridDim.x;
    for (pl_i64 i = (pl_i64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        const pl_u64 counter = counter_start + (pl_u64)i;
        if (FAST) {
            out[i] = (C)pl_encode_element_f32(((const pl_u32*)x)[i], s, counter);
        } else if (IN64) {
            out[i] = (C)pl_encode_element(((const pl_u64*)x)[i], true, s, counter);
        } else {
            out[i] = (C)pl_encode_element(((const pl_u32*)x)[i], false, s, counter);
        }
    }
}

template <typename C, bool OUT64, bool FAST>
__global__ void pl_decode_kernel(const C* __restrict__ codes, void* __restrict__ out, pl_i64 n, PL_FORMAT_PARAMS)
{
    const pl_format f = pl_make_format(PL_FORMAT_ARGS);
    const pl_i64 stride = (pl_i64)blockDim.x * gridDim.x;
    for (pl_i64 i = (pl_i64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        if (FAST) {
            ((pl_u32*)out)[i] = pl_decode_element_f32((pl_u32)codes[i], f);
        } else if (OUT64) {
            ((pl_u64*)out)[i] = pl_decode_element((pl_u64)codes[i], f, true);
        } else {
            ((pl_u32*)out)[i] = (pl_u32)pl_decode_element((pl_u64)codes[i], f, false);
        }
    }
}

/* a (B, M, K), b (B, K, N), c (B, M, N), the scales (like a / b, or unused) and out (B, M, N):
 * float64 bits.  params: precisionlab/backends/cuda/__init__.py's matmul_params().  The flat
 * output index times the rounding events per element is the element's first random-bit
 * counter, so the result does not depend on the launch shape. */
__global__ void pl_matmul_kernel(const pl_u64* __restrict__ a, const pl_u64* __restrict__ b,
                                 const pl_u64* __restrict__ c, const pl_u64* __restrict__ sa,
                                 const pl_u64* __restrict__ sb, pl_u64* __restrict__ out, pl_i64 n_batch, pl_i64 M,
                                 pl_i64 N, const pl_u64* __restrict__ params)
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
    const pl_i64 n = n_batch * M * N;
    const pl_i64 stride = (pl_i64)blockDim.x * gridDim.x;
    for (pl_i64 i = (pl_i64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        el.bi = i / (M * N);
        el.m = (i / N) % M;
        el.n = i % N;
        out[i] = pl_mm_element_bits(el, P, (pl_u64)i * (pl_u64)P.p.events);
    }
}

__global__ void pl_scale_kernel(const pl_u64* __restrict__ x, const pl_u64* __restrict__ s, pl_u64* __restrict__ out,
                                pl_i64 n, PL_SPEC_PARAMS)
{
    const pl_spec f32 = pl_make_spec(PL_SPEC_ARGS);
    const pl_i64 stride = (pl_i64)blockDim.x * gridDim.x;
    for (pl_i64 i = (pl_i64)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        out[i] = pl_mm_scaled_operand_bits(x[i], s[i], f32);
    }
}
