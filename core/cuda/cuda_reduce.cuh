/* Deterministic sums over the middle axis of a [outer, n, inner] view, used for every reduction
 * across rows (dbias, dgamma/dbeta, broadcast gradients, softmax dbias, sum_axis): no atomics, and
 * an order of additions that depends on the sizes only, so a run reproduces itself bit for bit.
 *
 * Pass 1: block (tile of columns i, slab s of k) sums its slab with a fixed tree in shared memory.
 * Pass 2 (only when there is more than one slab): each output sums its slab partials in order s.
 * The terms come from a functor f(o, k, i) so a reduction can fuse its element-wise product
 * (dy * xhat for dgamma, dy * a for a mul's broadcast operand) without a temporary. */
#ifndef MF_CORE_CUDA_CUDA_REDUCE_CUH
#define MF_CORE_CUDA_CUDA_REDUCE_CUH

#include "core/cuda/colsum_slabs.h"
#include "core/cuda/cuda_internal.h"

static_assert(MF_COLSUM_THREADS == MF_CUDA_THREADS, "colsum_slabs.h mirrors the block size");

template <class F>
__global__ void __launch_bounds__(MF_CUDA_THREADS)
    mf_colsum_kernel(float *out, F f, int64_t outer_inner, int64_t n, int64_t inner, int64_t ntiles,
                     int64_t slab, int ti_log2, float scale, bool accumulate, bool partial)
{
    __shared__ float sm[MF_CUDA_THREADS];
    const int tid = (int)threadIdx.x;
    const int TI = 1 << ti_log2, KL = MF_CUDA_THREADS >> ti_log2;
    const int ti = tid & (TI - 1), kl = tid >> ti_log2;
    const int64_t o = (int64_t)blockIdx.x / ntiles;
    const int64_t i = ((int64_t)blockIdx.x % ntiles) * TI + ti;
    const int64_t k0 = (int64_t)blockIdx.y * slab;
    const int64_t k1 = k0 + slab < n ? k0 + slab : n;
    float acc = 0.0f;
    if (i < inner)
        for (int64_t k = k0 + kl; k < k1; k += KL) acc += f(o, k, i);
    sm[tid] = acc;
    __syncthreads();
    for (int h = KL / 2; h > 0; h >>= 1) {
        if (kl < h) sm[tid] += sm[tid + h * TI];
        __syncthreads();
    }
    if (kl == 0 && i < inner) {
        const int64_t j = o * inner + i;
        if (partial)
            out[(int64_t)blockIdx.y * outer_inner + j] = sm[tid];
        else
            out[j] = accumulate ? out[j] + scale * sm[tid] : scale * sm[tid];
    }
}

/* A template so that each translation unit that uses it instantiates its own copy (no separable
 * compilation needed, no unused-function warning where it is not used). */
template <typename T>
__global__ void mf_colsum_final_kernel(T *out, const T *partial, int64_t nslab, int64_t outer_inner,
                                       T scale, bool accumulate)
{
    for (int64_t j = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; j < outer_inner;
         j += (int64_t)gridDim.x * blockDim.x) {
        T s = 0;
        for (int64_t p = 0; p < nslab; p++) s += partial[p * outer_inner + j];
        out[j] = accumulate ? out[j] + scale * s : scale * s;
    }
}

/* out[o, i] = (accumulate ? out[o, i] : 0) + scale * sum_k f(o, k, i), out [outer, inner] f32 on
 * the device. Partial sums come from ctx->arena and are released before returning. */
template <class F>
static mf_status mf_cuda_colsum_impl(mf_ctx *ctx, float *out, F f, int64_t outer, int64_t n,
                                     int64_t inner, float scale, bool accumulate)
{
    const int64_t outer_inner = outer * inner;
    if (outer_inner == 0) return MF_OK;
    const mf_colsum_split sp = mf_colsum_split_of(outer, n, inner);
    const int ti_log2 = sp.ti_log2;
    const int64_t ntiles = sp.ntiles, nslab = sp.nslab, slab = sp.slab;
    const int64_t blocks = outer * ntiles;
    if (blocks > INT_MAX)
        return MF_ERROR(MF_ERR_UNSUPPORTED, "reduction over [%lld, %lld, %lld]: too many outputs",
                        (long long)outer, (long long)n, (long long)inner);
    cudaStream_t stream = ctx->cuda->stream;
    if (nslab == 1) {
        mf_colsum_kernel<F><<<dim3((unsigned)blocks, 1), MF_CUDA_THREADS, 0, stream>>>(
            out, f, outer_inner, n, inner, ntiles, slab, ti_log2, scale, accumulate, false);
        MF_CUDA_CHECK_LAUNCH();
        return MF_OK;
    }
    float *partial = NULL;
    MF_TRY(mf_arena_alloc(ctx->arena, (size_t)(nslab * outer_inner) * sizeof(float),
                          "cuda reduction partial sums", (void **)&partial));
    mf_colsum_kernel<F><<<dim3((unsigned)blocks, (unsigned)nslab), MF_CUDA_THREADS, 0, stream>>>(
        partial, f, outer_inner, n, inner, ntiles, slab, ti_log2, 1.0f, false, true);
    MF_CUDA_CHECK_LAUNCH();
    mf_colsum_final_kernel<float>
        <<<mf_cuda_blocks(outer_inner, MF_CUDA_THREADS), MF_CUDA_THREADS, 0, stream>>>(
            out, partial, nslab, outer_inner, scale, accumulate);
    MF_CUDA_CHECK_LAUNCH();
    return MF_OK;
}

template <class F>
static mf_status mf_cuda_colsum(mf_ctx *ctx, float *out, F f, int64_t outer, int64_t n,
                                int64_t inner, float scale, bool accumulate)
{
    mf_arena_mark_t mark = mf_arena_mark(ctx->arena);
    mf_status st = mf_cuda_colsum_impl(ctx, out, f, outer, n, inner, scale, accumulate);
    mf_arena_release(ctx->arena, mark);
    return st;
}

/* Terms of the plain sum: x viewed as [outer, n, inner]. */
struct mf_colsum_plain {
    const float *x;
    int64_t n, inner;
    __device__ float operator()(int64_t o, int64_t k, int64_t i) const
    {
        return x[(o * n + k) * inner + i];
    }
};

#endif
