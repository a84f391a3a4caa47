/* Layout, reduction and row-indexing entry points: argument checks, device dispatch, and on the CPU
 * the reference (core/ref/layout.inc), which is the CPU implementation of these ops: f32 tensors
 * run mf_ref_*_f32, f64 tensors (CPU only) mf_ref_*_f64. */
#include "core/ops_dispatch.h"
#include "core/ref/ref.h"

/* The floating type a call runs in, from its leading tensor: f64 when that is f64, else f32 (a
 * tensor of any other type then fails the f32 check with its name). f64 exists on the CPU only. */
static mf_status run_dtype(const mf_ctx *ctx, const char *op, const mf_tensor *lead,
                           const char *name, mf_dtype *dt)
{
    MF_REQUIRE(ctx, "%s: context is NULL", op);
    MF_REQUIRE(lead && lead->data, "%s: tensor %s is missing", op, name);
    *dt = lead->dtype == MF_F64 ? MF_F64 : MF_F32;
    if (*dt == MF_F64 && ctx->device != MF_DEV_CPU)
        return MF_ERROR(MF_ERR_UNSUPPORTED,
                        "%s: tensor %s is f64, which runs on the CPU only (the context is on cuda)",
                        op, name);
    return MF_OK;
}

static mf_status check_on(const mf_ctx *ctx, const mf_tensor *t, const char *name, mf_dtype dtype,
                          int ndim)
{
    if (t && t->data && t->dtype != dtype && (t->dtype == MF_F32 || t->dtype == MF_F64) &&
        (dtype == MF_F32 || dtype == MF_F64)) {
        char b[96];
        return MF_ERROR(MF_ERR_INVALID,
                        "tensor %s is %s but this call runs in %s: f32 and f64 tensors cannot be "
                        "mixed in one call",
                        name, mf_tensor_describe(t, b, sizeof b), mf_dtype_name(dtype));
    }
    MF_TRY(mf_check_tensor(t, name, dtype, ndim));
    if (t->device != ctx->device) {
        char b[96];
        return MF_ERROR(MF_ERR_INVALID, "tensor %s is %s but the context is on %s", name,
                        mf_tensor_describe(t, b, sizeof b),
                        ctx->device == MF_DEV_CUDA ? "cuda" : "cpu");
    }
    return MF_OK;
}

mf_status mf_transpose01(mf_ctx *ctx, mf_tensor *y, const mf_tensor *x, bool accumulate)
{
    mf_dtype dt;
    MF_TRY(run_dtype(ctx, "transpose01", x, "transpose01 x", &dt));
    MF_TRY(check_on(ctx, x, "transpose01 x", dt, 3));
    MF_TRY(check_on(ctx, y, "transpose01 y", dt, 3));
    if (y->shape[0] != x->shape[1] || y->shape[1] != x->shape[0] || y->shape[2] != x->shape[2]) {
        char a[96], b[96];
        return MF_ERROR(MF_ERR_INVALID,
                        "transpose01: y is %s, expected [B, A, C] for x %s [A, B, C]",
                        mf_tensor_describe(y, a, sizeof a), mf_tensor_describe(x, b, sizeof b));
    }
    MF_REQUIRE(y->data != x->data || x->shape[0] == 1 || x->shape[1] == 1,
               "transpose01: y must not alias x");
    MF_DISPATCH_CUDA(ctx, transpose01, y, x, accumulate);
    if (dt == MF_F64)
        mf_ref_transpose01_f64((double *)y->data, (const double *)x->data, x->shape[0], x->shape[1],
                               x->shape[2], accumulate);
    else
        mf_ref_transpose01_f32((float *)y->data, (const float *)x->data, x->shape[0], x->shape[1],
                               x->shape[2], accumulate);
    return MF_OK;
}

/* x [outer, n, inner] against y [outer, inner]. */
static mf_status check_sum_axis(const char *op, const mf_tensor *x, const char *xn,
                                const mf_tensor *y, const char *yn)
{
    if (y->shape[0] != x->shape[0] || y->shape[1] != x->shape[2]) {
        char a[96], b[96];
        return MF_ERROR(MF_ERR_INVALID, "%s: %s is %s, expected [outer, inner] of %s %s", op, yn,
                        mf_tensor_describe(y, a, sizeof a), xn, mf_tensor_describe(x, b, sizeof b));
    }
    return MF_OK;
}

mf_status mf_sum_axis(mf_ctx *ctx, mf_tensor *y, const mf_tensor *x, float scale)
{
    mf_dtype dt;
    MF_TRY(run_dtype(ctx, "sum_axis", x, "sum_axis x [outer, n, inner]", &dt));
    MF_TRY(check_on(ctx, x, "sum_axis x [outer, n, inner]", dt, 3));
    MF_TRY(check_on(ctx, y, "sum_axis y [outer, inner]", dt, 2));
    MF_TRY(check_sum_axis("sum_axis", x, "x", y, "y"));
    MF_DISPATCH_CUDA(ctx, sum_axis, y, x, scale);
    if (dt == MF_F64)
        mf_ref_sum_axis_f64((double *)y->data, (const double *)x->data, x->shape[0], x->shape[1],
                            x->shape[2], scale);
    else
        mf_ref_sum_axis_f32((float *)y->data, (const float *)x->data, x->shape[0], x->shape[1],
                            x->shape[2], scale);
    return MF_OK;
}

mf_status mf_sum_axis_backward(mf_ctx *ctx, mf_tensor *dx, const mf_tensor *dy, float scale)
{
    mf_dtype dt;
    MF_TRY(run_dtype(ctx, "sum_axis_backward", dy, "sum_axis dy [outer, inner]", &dt));
    MF_TRY(check_on(ctx, dx, "sum_axis dx [outer, n, inner]", dt, 3));
    MF_TRY(check_on(ctx, dy, "sum_axis dy [outer, inner]", dt, 2));
    MF_TRY(check_sum_axis("sum_axis_backward", dx, "dx", dy, "dy"));
    MF_DISPATCH_CUDA(ctx, sum_axis_backward, dx, dy, scale);
    if (dt == MF_F64)
        mf_ref_sum_axis_backward_f64((double *)dx->data, (const double *)dy->data, dx->shape[0],
                                     dx->shape[1], dx->shape[2], scale);
    else
        mf_ref_sum_axis_backward_f32((float *)dx->data, (const float *)dy->data, dx->shape[0],
                                     dx->shape[1], dx->shape[2], scale);
    return MF_OK;
}

/* table [n, C] (x of gather, dx of scatter), rows [m, C], idx i32 [m]. The index tensor may live
 * on the host or on the context's device, so its device is not checked here. */
static mf_status check_rows(const mf_ctx *ctx, const char *op, const mf_tensor *table,
                            const char *tn, const mf_tensor *rows, const char *rn,
                            const mf_tensor *idx, mf_dtype *dt)
{
    MF_TRY(run_dtype(ctx, op, table, tn, dt));
    MF_TRY(check_on(ctx, table, tn, *dt, 2));
    MF_TRY(check_on(ctx, rows, rn, *dt, 2));
    MF_TRY(mf_check_tensor(idx, "idx", MF_I32, 1));
    if (rows->shape[0] != idx->shape[0] || rows->shape[1] != table->shape[1]) {
        char a[96], b[96], c[96];
        return MF_ERROR(MF_ERR_INVALID, "%s: %s is %s, expected [m, C] for idx %s and %s %s", op,
                        rn, mf_tensor_describe(rows, a, sizeof a),
                        mf_tensor_describe(idx, b, sizeof b), tn,
                        mf_tensor_describe(table, c, sizeof c));
    }
    return MF_OK;
}

/* Host indices must be below n; checked before anything is written. */
static mf_status check_index_range(const char *op, const mf_tensor *idx, int64_t n)
{
    const int32_t *p = (const int32_t *)idx->data;
    int64_t m = idx->shape[0];
    for (int64_t i = 0; i < m; i++)
        if (p[i] >= n)
            return MF_ERROR(MF_ERR_INVALID, "%s: idx[%lld] = %d is out of range for %lld rows", op,
                            (long long)i, (int)p[i], (long long)n);
    return MF_OK;
}

mf_status mf_gather_rows(mf_ctx *ctx, mf_tensor *y, const mf_tensor *x, const mf_tensor *idx)
{
    mf_dtype dt;
    MF_TRY(check_rows(ctx, "gather_rows", x, "gather_rows x [n, C]", y, "gather_rows y [m, C]", idx,
                      &dt));
    MF_DISPATCH_CUDA(ctx, gather_rows, y, x, idx);
    MF_REQUIRE(idx->device == MF_DEV_CPU, "gather_rows: idx is on the GPU but x is on the CPU");
    MF_TRY(check_index_range("gather_rows", idx, x->shape[0]));
    if (dt == MF_F64)
        mf_ref_gather_rows_f64((double *)y->data, (const double *)x->data,
                               (const int32_t *)idx->data, y->shape[0], y->shape[1]);
    else
        mf_ref_gather_rows_f32((float *)y->data, (const float *)x->data, (const int32_t *)idx->data,
                               y->shape[0], y->shape[1]);
    return MF_OK;
}

mf_status mf_scatter_add_rows(mf_ctx *ctx, mf_tensor *dx, const mf_tensor *dy, const mf_tensor *idx)
{
    mf_dtype dt;
    MF_TRY(check_rows(ctx, "scatter_add_rows", dx, "scatter_add_rows dx [n, C]", dy,
                      "scatter_add_rows dy [m, C]", idx, &dt));
    MF_DISPATCH_CUDA(ctx, scatter_add_rows, dx, dy, idx);
    MF_REQUIRE(idx->device == MF_DEV_CPU,
               "scatter_add_rows: idx is on the GPU but dx is on the CPU");
    MF_TRY(check_index_range("scatter_add_rows", idx, dx->shape[0]));
    if (dt == MF_F64)
        mf_ref_scatter_add_rows_f64((double *)dx->data, (const double *)dy->data,
                                    (const int32_t *)idx->data, dy->shape[0], dy->shape[1]);
    else
        mf_ref_scatter_add_rows_f32((float *)dx->data, (const float *)dy->data,
                                    (const int32_t *)idx->data, dy->shape[0], dy->shape[1]);
    return MF_OK;
}
