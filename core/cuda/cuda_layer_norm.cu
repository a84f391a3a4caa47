/* Layer norm over the last dim (AF2 / haiku: biased variance, eps inside the square root), f32
 * throughout. One warp per row; the parameter gradients are deterministic two-pass column sums
 * (cuda_reduce.cuh), never atomics. */
#include "core/cuda/cuda_reduce.cuh"

__device__ static inline float warp_sum(float v)
{
    /* Butterfly: every lane ends with the same total, in an order fixed by the lane pattern. */
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__global__ static void __launch_bounds__(MF_CUDA_THREADS)
    layer_norm_forward_kernel(float *y, float *mean_out, float *rstd_out, const float *x,
                              const float *gamma, const float *beta, int64_t rows, int64_t C,
                              float eps)
{
    const int lane = (int)(threadIdx.x & 31);
    const int64_t r = (int64_t)blockIdx.x * MF_CUDA_WARPS + (threadIdx.x >> 5);
    if (r >= rows) return;
    const float *xr = x + r * C;
    float *yr = y + r * C;
    float s = 0.0f;
    for (int64_t c = lane; c < C; c += 32) s += xr[c];
    const float mean = warp_sum(s) / (float)C;
    /* Two passes (mean, then squared deviations) rather than E[x^2] - E[x]^2, which cancels. */
    float v = 0.0f;
    for (int64_t c = lane; c < C; c += 32) {
        const float d = xr[c] - mean;
        v += d * d;
    }
    const float var = warp_sum(v) / (float)C;
    const float rstd = 1.0f / sqrtf(var + eps);
    /* y may alias x: each element is read and then written by the same lane. */
    for (int64_t c = lane; c < C; c += 32) yr[c] = (xr[c] - mean) * rstd * gamma[c] + beta[c];
    if (lane == 0) {
        if (mean_out) mean_out[r] = mean;
        if (rstd_out) rstd_out[r] = rstd;
    }
}

/* dx += rstd * (g - mean_c(g) - xhat * mean_c(g * xhat)), g = gamma * dy. */
__global__ static void __launch_bounds__(MF_CUDA_THREADS)
    layer_norm_backward_kernel(float *dx, const float *dy, const float *x, const float *mean,
                               const float *rstd, const float *gamma, int64_t rows, int64_t C)
{
    const int lane = (int)(threadIdx.x & 31);
    const int64_t r = (int64_t)blockIdx.x * MF_CUDA_WARPS + (threadIdx.x >> 5);
    if (r >= rows) return;
    const float *xr = x + r * C, *dyr = dy + r * C;
    float *dxr = dx + r * C;
    const float mu = mean[r], rs = rstd[r];
    float sg = 0.0f, sgx = 0.0f;
    for (int64_t c = lane; c < C; c += 32) {
        const float g = gamma[c] * dyr[c];
        sg += g;
        sgx += g * (xr[c] - mu) * rs;
    }
    const float mg = warp_sum(sg) / (float)C, mgx = warp_sum(sgx) / (float)C;
    for (int64_t c = lane; c < C; c += 32) {
        const float xhat = (xr[c] - mu) * rs;
        dxr[c] += rs * (gamma[c] * dyr[c] - mg - xhat * mgx);
    }
}

/* dgamma terms dy * xhat over rows; dbeta's are plain dy. */
struct dgamma_terms {
    const float *dy, *x, *mean, *rstd;
    int64_t C;
    __device__ float operator()(int64_t, int64_t r, int64_t c) const
    {
        return dy[r * C + c] * ((x[r * C + c] - mean[r]) * rstd[r]);
    }
};

static mf_status check_stats(const mf_tensor *t, const char *op, const char *name, int64_t rows)
{
    MF_TRY(mf_cuda_check_dev(t, op, name, MF_F32));
    return mf_cuda_check_numel(t, name, rows, op);
}

extern "C" mf_status mf_cuda_layer_norm_forward(mf_ctx *ctx, mf_tensor *y, mf_tensor *mean,
                                                mf_tensor *rstd, const mf_tensor *x,
                                                const mf_tensor *gamma, const mf_tensor *beta,
                                                float eps)
{
    const char *op = "layer_norm_forward";
    MF_TRY(mf_cuda_check_ctx(ctx, op));
    MF_TRY(mf_cuda_check_dev(y, op, "y", MF_F32));
    MF_TRY(mf_cuda_check_dev(x, op, "x", MF_F32));
    MF_TRY(mf_cuda_check_dev(gamma, op, "gamma", MF_F32));
    MF_TRY(mf_cuda_check_dev(beta, op, "beta", MF_F32));
    MF_TRY(mf_check_same_shape(y, "y", x, "x"));
    const int64_t rows = mf_tensor_rows(x), C = mf_tensor_cols(x);
    MF_TRY(mf_cuda_check_numel(gamma, "gamma", C, op));
    MF_TRY(mf_cuda_check_numel(beta, "beta", C, op));
    if (mean) MF_TRY(check_stats(mean, op, "mean", rows));
    if (rstd) MF_TRY(check_stats(rstd, op, "rstd", rows));
    MF_REQUIRE(C > 0 || rows == 0, "%s: rows of length 0", op);
    if (rows == 0) return MF_OK;
    const int64_t blocks = (rows + MF_CUDA_WARPS - 1) / MF_CUDA_WARPS;
    MF_REQUIRE(blocks <= INT_MAX, "%s: %lld rows", op, (long long)rows);
    layer_norm_forward_kernel<<<(unsigned)blocks, MF_CUDA_THREADS, 0, ctx->cuda->stream>>>(
        (float *)y->data, mean ? (float *)mean->data : NULL, rstd ? (float *)rstd->data : NULL,
        (const float *)x->data, (const float *)gamma->data, (const float *)beta->data, rows, C,
        eps);
    MF_CUDA_CHECK_LAUNCH();
    return MF_OK;
}

extern "C" mf_status mf_cuda_layer_norm_backward(mf_ctx *ctx, mf_tensor *dx, mf_tensor *dgamma,
                                                 mf_tensor *dbeta, const mf_tensor *dy,
                                                 const mf_tensor *x, const mf_tensor *mean,
                                                 const mf_tensor *rstd, const mf_tensor *gamma)
{
    const char *op = "layer_norm_backward";
    MF_TRY(mf_cuda_check_ctx(ctx, op));
    MF_TRY(mf_cuda_check_dev(dy, op, "dy", MF_F32));
    MF_TRY(mf_cuda_check_dev(x, op, "x", MF_F32));
    MF_TRY(mf_check_same_shape(dy, "dy", x, "x"));
    const int64_t rows = mf_tensor_rows(x), C = mf_tensor_cols(x);
    MF_TRY(check_stats(mean, op, "mean", rows));
    MF_TRY(check_stats(rstd, op, "rstd", rows));
    const float *dyp = (const float *)dy->data, *xp = (const float *)x->data;
    const float *mp = (const float *)mean->data, *rp = (const float *)rstd->data;
    /* the parameter gradients first, so that dx may alias dy (as on the CPU) */
    if (dgamma) {
        MF_TRY(mf_cuda_check_dev(dgamma, op, "dgamma", MF_F32));
        MF_TRY(mf_cuda_check_numel(dgamma, "dgamma", C, op));
        dgamma_terms f = {dyp, xp, mp, rp, C};
        MF_TRY(mf_cuda_colsum(ctx, (float *)dgamma->data, f, 1, rows, C, 1.0f, true));
    }
    if (dbeta) {
        MF_TRY(mf_cuda_check_dev(dbeta, op, "dbeta", MF_F32));
        MF_TRY(mf_cuda_check_numel(dbeta, "dbeta", C, op));
        mf_colsum_plain f = {dyp, rows, C};
        MF_TRY(mf_cuda_colsum(ctx, (float *)dbeta->data, f, 1, rows, C, 1.0f, true));
    }
    if (dx) {
        MF_TRY(mf_cuda_check_dev(dx, op, "dx", MF_F32));
        MF_TRY(mf_cuda_check_dev(gamma, op, "gamma", MF_F32));
        MF_TRY(mf_check_same_shape(dx, "dx", x, "x"));
        MF_TRY(mf_cuda_check_numel(gamma, "gamma", C, op));
        if (rows > 0 && C > 0) {
            const int64_t blocks = (rows + MF_CUDA_WARPS - 1) / MF_CUDA_WARPS;
            MF_REQUIRE(blocks <= INT_MAX, "%s: %lld rows", op, (long long)rows);
            layer_norm_backward_kernel<<<(unsigned)blocks, MF_CUDA_THREADS, 0, ctx->cuda->stream>>>(
                (float *)dx->data, dyp, xp, mp, rp, (const float *)gamma->data, rows, C);
            MF_CUDA_CHECK_LAUNCH();
        }
    }
    return MF_OK;
}
