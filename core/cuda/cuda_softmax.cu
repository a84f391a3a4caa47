/* Softmax over the last dim of [B, H, Q, K] logits with AlphaFold 2's additive pair bias [H, Q, K]
 * and key mask [B, K] (1e9 * (mask - 1)). One warp per row, f32, max-subtracted. */
#include "core/cuda/cuda_reduce.cuh"

__device__ static inline float warp_sum(float v)
{
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ static inline float warp_max(float v)
{
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

__device__ static inline float logit(const float *xr, const float *br, const float *mr, int64_t k)
{
    float l = xr[k];
    if (br) l += br[k];
    if (mr) l += 1e9f * (mr[k] - 1.0f);
    return l;
}

__global__ static void __launch_bounds__(MF_CUDA_THREADS)
    softmax_forward_kernel(float *y, const float *x, const float *bias, const float *mask,
                           int64_t rows, int64_t HQ, int64_t K)
{
    const int lane = (int)(threadIdx.x & 31);
    const int64_t r = (int64_t)blockIdx.x * MF_CUDA_WARPS + (threadIdx.x >> 5);
    if (r >= rows) return;
    const int64_t b = r / HQ, hq = r % HQ;
    const float *xr = x + r * K;
    const float *br = bias ? bias + hq * K : NULL;
    const float *mr = mask ? mask + b * K : NULL;
    float *yr = y + r * K;
    float m = -INFINITY;
    for (int64_t k = lane; k < K; k += 32) m = fmaxf(m, logit(xr, br, mr, k));
    m = warp_max(m);
    float s = 0.0f;
    for (int64_t k = lane; k < K; k += 32) s += expf(logit(xr, br, mr, k) - m);
    const float inv = 1.0f / warp_sum(s);
    /* y may alias x: each lane reads its elements before writing them. */
    for (int64_t k = lane; k < K; k += 32) yr[k] = expf(logit(xr, br, mr, k) - m) * inv;
}

/* dx += y * (dy - sum_k dy*y); the row sums are kept in dot[] when dbias needs them. */
__global__ static void __launch_bounds__(MF_CUDA_THREADS)
    softmax_backward_kernel(float *dx, float *dot_out, const float *dy, const float *y,
                            int64_t rows, int64_t K)
{
    const int lane = (int)(threadIdx.x & 31);
    const int64_t r = (int64_t)blockIdx.x * MF_CUDA_WARPS + (threadIdx.x >> 5);
    if (r >= rows) return;
    const float *dyr = dy + r * K, *yr = y + r * K;
    float s = 0.0f;
    for (int64_t k = lane; k < K; k += 32) s += dyr[k] * yr[k];
    const float dot = warp_sum(s);
    if (dx) {
        float *dxr = dx + r * K;
        for (int64_t k = lane; k < K; k += 32) dxr[k] += yr[k] * (dyr[k] - dot);
    }
    if (dot_out && lane == 0) dot_out[r] = dot;
}

/* dbias[j] += sum_b y[b, j] * (dy[b, j] - dot[b, j / K]) over the [B, H*Q*K] view. */
struct dbias_terms {
    const float *dy, *y, *dot;
    int64_t HQK, K;
    __device__ float operator()(int64_t, int64_t b, int64_t j) const
    {
        const int64_t e = b * HQK + j;
        return y[e] * (dy[e] - dot[b * (HQK / K) + j / K]);
    }
};

extern "C" mf_status mf_cuda_softmax_forward(mf_ctx *ctx, mf_tensor *y, const mf_tensor *x,
                                             const mf_tensor *bias, const mf_tensor *mask)
{
    const char *op = "softmax_forward";
    MF_TRY(mf_cuda_check_ctx(ctx, op));
    MF_TRY(mf_cuda_check_dev(y, op, "y", MF_F32));
    MF_TRY(mf_cuda_check_dev(x, op, "x", MF_F32));
    MF_TRY(mf_check_tensor(x, "softmax x", MF_F32, 4));
    MF_TRY(mf_check_same_shape(y, "y", x, "x"));
    const int64_t B = x->shape[0], H = x->shape[1], Q = x->shape[2], K = x->shape[3];
    MF_TRY(mf_cuda_check_bias_mask(op, bias, mask, B, H, Q, K));
    const int64_t rows = B * H * Q;
    if (rows == 0 || K == 0) return MF_OK;
    const int64_t blocks = (rows + MF_CUDA_WARPS - 1) / MF_CUDA_WARPS;
    MF_REQUIRE(blocks <= INT_MAX, "%s: %lld rows", op, (long long)rows);
    softmax_forward_kernel<<<(unsigned)blocks, MF_CUDA_THREADS, 0, ctx->cuda->stream>>>(
        (float *)y->data, (const float *)x->data, bias ? (const float *)bias->data : NULL,
        mask ? (const float *)mask->data : NULL, rows, H * Q, K);
    MF_CUDA_CHECK_LAUNCH();
    return MF_OK;
}

static mf_status softmax_backward_impl(mf_ctx *ctx, mf_tensor *dx, mf_tensor *dbias,
                                       const mf_tensor *dy, const mf_tensor *y)
{
    const char *op = "softmax_backward";
    const int64_t B = y->shape[0], H = y->shape[1], Q = y->shape[2], K = y->shape[3];
    const int64_t rows = B * H * Q;
    if (rows == 0 || K == 0) return MF_OK;
    float *dot = NULL;
    if (dbias)
        MF_TRY(mf_arena_alloc(ctx->arena, (size_t)rows * sizeof(float), "cuda softmax row dots",
                              (void **)&dot));
    const int64_t blocks = (rows + MF_CUDA_WARPS - 1) / MF_CUDA_WARPS;
    MF_REQUIRE(blocks <= INT_MAX, "%s: %lld rows", op, (long long)rows);
    /* dx may alias dy (as on the CPU): then the row dots and dbias, which read dy, come first and
     * dx in a second pass */
    const bool alias = dx && dbias && dx->data == dy->data;
    softmax_backward_kernel<<<(unsigned)blocks, MF_CUDA_THREADS, 0, ctx->cuda->stream>>>(
        dx && !alias ? (float *)dx->data : NULL, dot, (const float *)dy->data,
        (const float *)y->data, rows, K);
    MF_CUDA_CHECK_LAUNCH();
    if (dbias) {
        dbias_terms f = {(const float *)dy->data, (const float *)y->data, dot, H * Q * K, K};
        MF_TRY(mf_cuda_colsum(ctx, (float *)dbias->data, f, 1, B, H * Q * K, 1.0f, true));
    }
    if (alias) {
        softmax_backward_kernel<<<(unsigned)blocks, MF_CUDA_THREADS, 0, ctx->cuda->stream>>>(
            (float *)dx->data, NULL, (const float *)dy->data, (const float *)y->data, rows, K);
        MF_CUDA_CHECK_LAUNCH();
    }
    return MF_OK;
}

extern "C" mf_status mf_cuda_softmax_backward(mf_ctx *ctx, mf_tensor *dx, mf_tensor *dbias,
                                              const mf_tensor *dy, const mf_tensor *y)
{
    const char *op = "softmax_backward";
    MF_TRY(mf_cuda_check_ctx(ctx, op));
    MF_TRY(mf_cuda_check_dev(dy, op, "dy", MF_F32));
    MF_TRY(mf_cuda_check_dev(y, op, "y", MF_F32));
    MF_TRY(mf_check_tensor(y, "softmax y", MF_F32, 4));
    MF_TRY(mf_check_same_shape(dy, "dy", y, "y"));
    if (dx) {
        MF_TRY(mf_cuda_check_dev(dx, op, "dx", MF_F32));
        MF_TRY(mf_cuda_check_numel(dx, "dx", mf_tensor_numel(y), op));
    }
    if (dbias) {
        MF_TRY(mf_cuda_check_dev(dbias, op, "dbias", MF_F32));
        MF_TRY(mf_cuda_check_numel(dbias, "dbias [H, Q, K]",
                                   y->shape[1] * y->shape[2] * y->shape[3], op));
    }
    mf_arena_mark_t mark = mf_arena_mark(ctx->arena);
    mf_status st = softmax_backward_impl(ctx, dx, dbias, dy, y);
    mf_arena_release(ctx->arena, mark);
    return st;
}
