/* Layout, reductions and indexing on the device: transpose of the two leading dims, sums over a
 * middle axis (deterministic, cuda_reduce.cuh), row gather and its scatter-add backward. */
#include "core/cuda/cuda_reduce.cuh"
#include "core/cuda/scatter_slabs.h"

/* Indexed by the output so writes are coalesced along C (and along A when C is small). */
__global__ static void transpose01_kernel(float *y, const float *x, int64_t A, int64_t B, int64_t C,
                                          bool accumulate)
{
    const int64_t n = A * B * C;
    MF_GRID_LOOP(e, n)
    {
        const int64_t c = e % C, ba = e / C, a = ba % A, b = ba / A;
        const float v = x[(a * B + b) * C + c];
        y[e] = accumulate ? y[e] + v : v;
    }
}

/* dx[o, k, i] += scale * dy[o, i] */
__global__ static void sum_axis_backward_kernel(float *dx, const float *dy, int64_t n_axis,
                                                int64_t inner, int64_t total, float scale)
{
    MF_GRID_LOOP(e, total)
    {
        const int64_t i = e % inner, o = e / (inner * n_axis);
        dx[e] += scale * dy[o * inner + i];
    }
}

/* Indices outside [0, n) give a zero row: negative ones by the op's definition (padding), and
 * ones >= n because a device-side index cannot be checked without a synchronisation; reading
 * out of bounds would be worse. */
__global__ static void gather_rows_kernel(float *y, const float *x, const int32_t *idx, int64_t m,
                                          int64_t n, int64_t C)
{
    MF_GRID_LOOP(e, m * C)
    {
        const int64_t i = e / C, c = e % C;
        const int64_t j = idx[i];
        y[e] = (j >= 0 && j < n) ? x[j * C + c] : 0.0f;
    }
}

/* The deterministic scatter (scatter_slabs.h): pass 1 per (slab, column), pass 2 per element. */
__global__ static void scatter_slab_kernel(float *partial, const float *dy, const int32_t *idx,
                                           int64_t m, int64_t n, int64_t C, int64_t S)
{
    MF_GRID_LOOP(t, S * C) mf_scatter_slab_body(partial, dy, idx, m, n, C, S, t);
}

__global__ static void scatter_sum_kernel(float *dx, const float *partial, int64_t n, int64_t C,
                                          int64_t S)
{
    MF_GRID_LOOP(e, n * C) mf_scatter_sum_body(dx, partial, n, C, S, e);
}

/* atomicAdd, for tables too large for the slabs' partials: rows hit by several indices receive
 * their terms in an unspecified order, so the result is not bitwise deterministic when idx
 * repeats (it is exact when it does not). */
__global__ static void scatter_add_rows_kernel(float *dx, const float *dy, const int32_t *idx,
                                               int64_t m, int64_t n, int64_t C)
{
    MF_GRID_LOOP(e, m * C)
    {
        const int64_t i = e / C, c = e % C;
        const int64_t j = idx[i];
        if (j >= 0 && j < n) atomicAdd(&dx[j * C + c], dy[e]);
    }
}

extern "C" mf_status mf_cuda_transpose01(mf_ctx *ctx, mf_tensor *y, const mf_tensor *x,
                                         bool accumulate)
{
    const char *op = "transpose01";
    MF_TRY(mf_cuda_check_ctx(ctx, op));
    MF_TRY(mf_cuda_check_dev(y, op, "y", MF_F32));
    MF_TRY(mf_cuda_check_dev(x, op, "x", MF_F32));
    MF_TRY(mf_check_tensor(x, "transpose01 x", MF_F32, 3));
    MF_TRY(mf_check_tensor(y, "transpose01 y", MF_F32, 3));
    const int64_t A = x->shape[0], B = x->shape[1], C = x->shape[2];
    if (y->shape[0] != B || y->shape[1] != A || y->shape[2] != C) {
        char s1[96], s2[96];
        return MF_ERROR(MF_ERR_INVALID, "%s: y %s is not x %s with its two leading dims swapped",
                        op, mf_tensor_describe(y, s1, sizeof s1),
                        mf_tensor_describe(x, s2, sizeof s2));
    }
    MF_REQUIRE(y->data != x->data || A * B * C == 0, "%s: y must not alias x", op);
    const int64_t n = A * B * C;
    if (n == 0) return MF_OK;
    transpose01_kernel<<<mf_cuda_blocks(n, MF_CUDA_THREADS), MF_CUDA_THREADS, 0,
                         ctx->cuda->stream>>>((float *)y->data, (const float *)x->data, A, B, C,
                                              accumulate);
    MF_CUDA_CHECK_LAUNCH();
    return MF_OK;
}

static mf_status sum_axis_dims(const mf_tensor *x, const mf_tensor *y, const char *op,
                               int64_t *outer, int64_t *n, int64_t *inner)
{
    MF_TRY(mf_check_tensor(x, "sum_axis x [outer, n, inner]", MF_F32, 3));
    *outer = x->shape[0];
    *n = x->shape[1];
    *inner = x->shape[2];
    return mf_cuda_check_numel(y, "y [outer, inner]", *outer * *inner, op);
}

extern "C" mf_status mf_cuda_sum_axis(mf_ctx *ctx, mf_tensor *y, const mf_tensor *x, float scale)
{
    const char *op = "sum_axis";
    MF_TRY(mf_cuda_check_ctx(ctx, op));
    MF_TRY(mf_cuda_check_dev(y, op, "y", MF_F32));
    MF_TRY(mf_cuda_check_dev(x, op, "x", MF_F32));
    int64_t outer, n, inner;
    MF_TRY(sum_axis_dims(x, y, op, &outer, &n, &inner));
    mf_colsum_plain f = {(const float *)x->data, n, inner};
    return mf_cuda_colsum(ctx, (float *)y->data, f, outer, n, inner, scale, false);
}

extern "C" mf_status mf_cuda_sum_axis_backward(mf_ctx *ctx, mf_tensor *dx, const mf_tensor *dy,
                                               float scale)
{
    const char *op = "sum_axis_backward";
    MF_TRY(mf_cuda_check_ctx(ctx, op));
    MF_TRY(mf_cuda_check_dev(dx, op, "dx", MF_F32));
    MF_TRY(mf_cuda_check_dev(dy, op, "dy", MF_F32));
    int64_t outer, n, inner;
    MF_TRY(sum_axis_dims(dx, dy, op, &outer, &n, &inner));
    const int64_t total = outer * n * inner;
    if (total == 0) return MF_OK;
    sum_axis_backward_kernel<<<mf_cuda_blocks(total, MF_CUDA_THREADS), MF_CUDA_THREADS, 0,
                               ctx->cuda->stream>>>((float *)dx->data, (const float *)dy->data, n,
                                                    inner, total, scale);
    MF_CUDA_CHECK_LAUNCH();
    return MF_OK;
}

/* The indices on the device: used in place, or copied (after a range check) from the host. */
static mf_status device_indices(mf_ctx *ctx, const mf_tensor *idx, int64_t n, const char *op,
                                const int32_t **out)
{
    *out = NULL;
    MF_REQUIRE(idx && idx->data, "%s: idx is missing", op);
    MF_REQUIRE(idx->dtype == MF_I32, "%s: idx must be i32, not %s", op, mf_dtype_name(idx->dtype));
    const int64_t m = mf_tensor_numel(idx);
    if (idx->device == MF_DEV_CUDA) {
        *out = (const int32_t *)idx->data;
        return MF_OK;
    }
    const int32_t *h = (const int32_t *)idx->data;
    for (int64_t i = 0; i < m; i++)
        MF_REQUIRE(h[i] < n, "%s: idx[%lld] = %d is out of range for %lld rows", op, (long long)i,
                   h[i], (long long)n);
    void *d = NULL;
    MF_TRY(mf_arena_alloc(ctx->arena, (size_t)m * sizeof(int32_t), "cuda row indices", &d));
    /* From pageable memory this returns once the source has been staged, so the caller's host
     * buffer may change afterwards; the kernel that reads d is ordered after it on the stream. */
    MF_CUDA_CHECK(cudaMemcpyAsync(d, h, (size_t)m * sizeof(int32_t), cudaMemcpyHostToDevice,
                                  ctx->cuda->stream));
    *out = (const int32_t *)d;
    return MF_OK;
}

static mf_status rows_impl(mf_ctx *ctx, mf_tensor *dst, const mf_tensor *src, const mf_tensor *idx,
                           bool scatter)
{
    const char *op = scatter ? "scatter_add_rows" : "gather_rows";
    /* gather: dst y [m, C], src x [n, C]; scatter: dst dx [n, C], src dy [m, C]. */
    const mf_tensor *table = scatter ? dst : src, *rows = scatter ? src : dst;
    const int64_t C = mf_tensor_cols(table), n = mf_tensor_rows(table);
    const int64_t m = mf_tensor_numel(idx);
    if (mf_tensor_cols(rows) != C || mf_tensor_rows(rows) != m) {
        char s1[96], s2[96];
        return MF_ERROR(MF_ERR_INVALID, "%s: %s and %s disagree with %lld indices", op,
                        mf_tensor_describe(dst, s1, sizeof s1),
                        mf_tensor_describe(src, s2, sizeof s2), (long long)m);
    }
    if (m * C == 0) return MF_OK;
    const int32_t *d_idx = NULL;
    MF_TRY(device_indices(ctx, idx, n, op, &d_idx));
    const unsigned blocks = mf_cuda_blocks(m * C, MF_CUDA_THREADS);
    const int64_t S = scatter ? mf_scatter_slabs(m, n, C) : 0;
    if (scatter && S > 0) {
        float *partial = NULL;
        MF_TRY(mf_arena_alloc(ctx->arena, (size_t)(S * n * C) * sizeof(float),
                              "cuda scatter partials", (void **)&partial));
        MF_CUDA_CHECK(
            cudaMemsetAsync(partial, 0, (size_t)(S * n * C) * sizeof(float), ctx->cuda->stream));
        MF_LAUNCH(scatter_slab_kernel, S * C, partial, (const float *)src->data, d_idx, m, n, C, S);
        MF_LAUNCH(scatter_sum_kernel, n * C, (float *)dst->data, partial, n, C, S);
        return MF_OK;
    }
    if (scatter)
        scatter_add_rows_kernel<<<blocks, MF_CUDA_THREADS, 0, ctx->cuda->stream>>>(
            (float *)dst->data, (const float *)src->data, d_idx, m, n, C);
    else
        gather_rows_kernel<<<blocks, MF_CUDA_THREADS, 0, ctx->cuda->stream>>>(
            (float *)dst->data, (const float *)src->data, d_idx, m, n, C);
    MF_CUDA_CHECK_LAUNCH();
    return MF_OK;
}

static mf_status rows_op(mf_ctx *ctx, mf_tensor *dst, const mf_tensor *src, const mf_tensor *idx,
                         bool scatter)
{
    const char *op = scatter ? "scatter_add_rows" : "gather_rows";
    MF_TRY(mf_cuda_check_ctx(ctx, op));
    MF_TRY(mf_cuda_check_dev(dst, op, scatter ? "dx" : "y", MF_F32));
    MF_TRY(mf_cuda_check_dev(src, op, scatter ? "dy" : "x", MF_F32));
    MF_REQUIRE(idx && idx->data, "%s: idx is missing", op);
    mf_arena_mark_t mark = mf_arena_mark(ctx->arena);
    mf_status st = rows_impl(ctx, dst, src, idx, scatter);
    mf_arena_release(ctx->arena, mark);
    return st;
}

extern "C" mf_status mf_cuda_gather_rows(mf_ctx *ctx, mf_tensor *y, const mf_tensor *x,
                                         const mf_tensor *idx)
{
    return rows_op(ctx, y, x, idx, false);
}

extern "C" mf_status mf_cuda_scatter_add_rows(mf_ctx *ctx, mf_tensor *dx, const mf_tensor *dy,
                                              const mf_tensor *idx)
{
    return rows_op(ctx, dx, dy, idx, true);
}
