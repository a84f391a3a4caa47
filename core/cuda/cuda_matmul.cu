/* Matrix products through cuBLAS (cublasGemmStridedBatchedEx): inputs read in the policy's compute
 * precision (f32, or bf16 converted into arena scratch, tensor cores), f32 accumulation
 * (CUBLAS_COMPUTE_32F) and f32 outputs. */
#include "core/cuda/cuda_reduce.cuh"

/* ---- linear (AF2 layout: w [in, out] row-major) ------------------------------------------- */

static mf_status check_matrix_input(const mf_tensor *t, const char *op, const char *name)
{
    MF_TRY(mf_cuda_check_dev(t, op, name, t ? t->dtype : MF_F32));
    MF_REQUIRE(t->dtype == MF_F32 || t->dtype == MF_BF16, "%s: %s has dtype %s (f32 or bf16)", op,
               name, mf_dtype_name(t->dtype));
    return MF_OK;
}

static mf_status linear_forward_impl(mf_ctx *ctx, mf_tensor *y, const mf_tensor *x,
                                     const mf_tensor *w, const mf_tensor *b, bool accumulate,
                                     int64_t rows, int64_t in, int64_t out)
{
    const mf_dtype dt = mf_cuda_compute_dtype(ctx);
    const void *xp = NULL, *wp = NULL;
    MF_TRY(mf_cuda_operand(ctx, x, dt, &xp));
    MF_TRY(mf_cuda_operand(ctx, w, dt, &wp));
    float *yp = (float *)y->data;
    MF_TRY(mf_cuda_gemm(ctx, yp, xp, false, wp, false, dt, 1, 1, 1, rows, out, in, 1.0f,
                        accumulate ? 1.0f : 0.0f));
    if (b) MF_TRY(mf_cuda_add_raw(ctx, yp, yp, (const float *)b->data, rows * out, out));
    return MF_OK;
}

extern "C" mf_status mf_cuda_linear_forward(mf_ctx *ctx, mf_tensor *y, const mf_tensor *x,
                                            const mf_tensor *w, const mf_tensor *b, bool accumulate)
{
    const char *op = "linear_forward";
    MF_TRY(mf_cuda_check_ctx(ctx, op));
    MF_TRY(mf_cuda_check_dev(y, op, "y", MF_F32));
    MF_TRY(check_matrix_input(x, op, "x"));
    MF_TRY(check_matrix_input(w, op, "w"));
    int64_t rows, in, out;
    MF_TRY(mf_linear_dims(op, x, "x", w, "w", y, "y", &rows, &in, &out));
    MF_TRY(mf_cuda_check_numel(y, "y [rows, out]", rows * out, op));
    if (b) {
        MF_TRY(mf_cuda_check_dev(b, op, "b", MF_F32));
        MF_TRY(mf_cuda_check_numel(b, "b [out]", out, op));
    }
    MF_REQUIRE(y->data != x->data, "%s: y must not alias x", op);
    mf_arena_mark_t mark = mf_arena_mark(ctx->arena);
    mf_status st = linear_forward_impl(ctx, y, x, w, b, accumulate, rows, in, out);
    mf_arena_release(ctx->arena, mark);
    return st;
}

static mf_status linear_backward_impl(mf_ctx *ctx, mf_tensor *dx, mf_tensor *dw, mf_tensor *db,
                                      const mf_tensor *dy, const mf_tensor *x, const mf_tensor *w,
                                      int64_t rows, int64_t in, int64_t out)
{
    const mf_dtype dt = mf_cuda_compute_dtype(ctx);
    const void *dyp = NULL;
    if (dx || dw) MF_TRY(mf_cuda_operand(ctx, dy, dt, &dyp));
    if (dx) {
        /* dx [rows, in] += dy [rows, out] @ w^T */
        const void *wp = NULL;
        MF_TRY(mf_cuda_operand(ctx, w, dt, &wp));
        MF_TRY(mf_cuda_gemm(ctx, (float *)dx->data, dyp, false, wp, true, dt, 1, 1, 1, rows, in,
                            out, 1.0f, 1.0f));
    }
    if (dw) {
        /* dw [in, out] += x^T @ dy */
        const void *xp = NULL;
        MF_TRY(mf_cuda_operand(ctx, x, dt, &xp));
        MF_TRY(mf_cuda_gemm(ctx, (float *)dw->data, xp, true, dyp, false, dt, 1, 1, 1, in, out,
                            rows, 1.0f, 1.0f));
    }
    if (db) {
        mf_colsum_plain f = {(const float *)dy->data, rows, out};
        MF_TRY(mf_cuda_colsum(ctx, (float *)db->data, f, 1, rows, out, 1.0f, true));
    }
    return MF_OK;
}

extern "C" mf_status mf_cuda_linear_backward(mf_ctx *ctx, mf_tensor *dx, mf_tensor *dw,
                                             mf_tensor *db, const mf_tensor *dy, const mf_tensor *x,
                                             const mf_tensor *w)
{
    const char *op = "linear_backward";
    MF_TRY(mf_cuda_check_ctx(ctx, op));
    MF_TRY(mf_cuda_check_dev(dy, op, "dy", MF_F32));
    MF_TRY(check_matrix_input(x, op, "x"));
    MF_TRY(check_matrix_input(w, op, "w"));
    int64_t rows, in, out;
    MF_TRY(mf_linear_dims(op, x, "x", w, "w", dy, "dy", &rows, &in, &out));
    MF_TRY(mf_cuda_check_numel(dy, "dy [rows, out]", rows * out, op));
    if (dx) {
        MF_TRY(mf_cuda_check_dev(dx, op, "dx", MF_F32));
        MF_TRY(mf_cuda_check_numel(dx, "dx (like x)", rows * in, op));
    }
    if (dw) {
        MF_TRY(mf_cuda_check_dev(dw, op, "dw", MF_F32));
        MF_TRY(mf_cuda_check_numel(dw, "dw (like w)", in * out, op));
    }
    if (db) {
        MF_TRY(mf_cuda_check_dev(db, op, "db", MF_F32));
        MF_TRY(mf_cuda_check_numel(db, "db [out]", out, op));
    }
    mf_arena_mark_t mark = mf_arena_mark(ctx->arena);
    mf_status st = linear_backward_impl(ctx, dx, dw, db, dy, x, w, rows, in, out);
    mf_arena_release(ctx->arena, mark);
    return st;
}

/* ---- batched matmul ------------------------------------------------------------------------- */

typedef struct {
    int64_t batch, batch_a, batch_b, M, N, K;
} matmul_dims;

static mf_status matmul_shapes(const mf_tensor *c, const mf_tensor *a, bool ta, const mf_tensor *b,
                               bool tb, const char *op, matmul_dims *d)
{
    MF_TRY(mf_check_tensor(a, "matmul a", a->dtype, 3));
    MF_TRY(mf_check_tensor(b, "matmul b", b->dtype, 3));
    MF_TRY(mf_check_tensor(c, "matmul c", MF_F32, 3));
    d->batch_a = a->shape[0];
    d->batch_b = b->shape[0];
    d->M = ta ? a->shape[2] : a->shape[1];
    d->K = ta ? a->shape[1] : a->shape[2];
    const int64_t kb = tb ? b->shape[2] : b->shape[1];
    d->N = tb ? b->shape[1] : b->shape[2];
    d->batch = c->shape[0];
    char s1[96], s2[96], s3[96];
    if (kb != d->K || c->shape[1] != d->M || c->shape[2] != d->N ||
        (d->batch_a != d->batch && d->batch_a != 1) || (d->batch_b != d->batch && d->batch_b != 1))
        return MF_ERROR(MF_ERR_INVALID, "%s: c %s != op(a %s%s) @ op(b %s%s)", op,
                        mf_tensor_describe(c, s1, sizeof s1), mf_tensor_describe(a, s2, sizeof s2),
                        ta ? ", transposed" : "", mf_tensor_describe(b, s3, sizeof s3),
                        tb ? ", transposed" : "");
    return MF_OK;
}

static mf_status matmul_impl(mf_ctx *ctx, mf_tensor *c, const mf_tensor *a, bool ta,
                             const mf_tensor *b, bool tb, float alpha, float beta,
                             const matmul_dims *d)
{
    const mf_dtype dt = mf_cuda_compute_dtype(ctx);
    const void *ap = NULL, *bp = NULL;
    MF_TRY(mf_cuda_operand(ctx, a, dt, &ap));
    MF_TRY(mf_cuda_operand(ctx, b, dt, &bp));
    return mf_cuda_gemm(ctx, (float *)c->data, ap, ta, bp, tb, dt, d->batch, d->batch_a, d->batch_b,
                        d->M, d->N, d->K, alpha, beta);
}

extern "C" mf_status mf_cuda_matmul(mf_ctx *ctx, mf_tensor *c, const mf_tensor *a, bool trans_a,
                                    const mf_tensor *b, bool trans_b, float alpha, float beta)
{
    const char *op = "matmul";
    MF_TRY(mf_cuda_check_ctx(ctx, op));
    MF_TRY(mf_cuda_check_dev(c, op, "c", MF_F32));
    MF_TRY(check_matrix_input(a, op, "a"));
    MF_TRY(check_matrix_input(b, op, "b"));
    matmul_dims d;
    MF_TRY(matmul_shapes(c, a, trans_a, b, trans_b, op, &d));
    MF_REQUIRE(c->data != a->data && c->data != b->data, "%s: c must not alias a or b", op);
    mf_arena_mark_t mark = mf_arena_mark(ctx->arena);
    mf_status st = matmul_impl(ctx, c, a, trans_a, b, trans_b, alpha, beta, &d);
    mf_arena_release(ctx->arena, mark);
    return st;
}

/* grad [batch_g, rows, cols] += gemm over the full batch; a gradient whose operand was broadcast
 * (batch_g == 1 < batch) takes the batch entries one after the other (cuBLAS cannot accumulate
 * several batch entries of one strided-batched call into one matrix safely). */
static mf_status grad_gemm(mf_ctx *ctx, float *grad, int64_t batch_g, const void *p, bool tp,
                           int64_t batch_p, const void *q, bool tq, int64_t batch_q, mf_dtype dt,
                           int64_t batch, int64_t rows, int64_t cols, int64_t inner, float alpha)
{
    if (batch_g == batch)
        return mf_cuda_gemm(ctx, grad, p, tp, q, tq, dt, batch, batch_p, batch_q, rows, cols, inner,
                            alpha, 1.0f);
    /* a broadcast operand's gradient: the batch entries' products added into it one after the
     * other, as on the CPU (no [batch, rows, cols] scratch: for the extra-MSA outer product mean's
     * backward that would be batch x S x N x c tens of GiB) */
    const size_t es = mf_dtype_size(dt);
    for (int64_t i = 0; i < batch; i++) {
        const char *pi = (const char *)p + (batch_p == batch ? (size_t)(i * rows * inner) * es : 0);
        const char *qi = (const char *)q + (batch_q == batch ? (size_t)(i * inner * cols) * es : 0);
        MF_TRY(
            mf_cuda_gemm(ctx, grad, pi, tp, qi, tq, dt, 1, 1, 1, rows, cols, inner, alpha, 1.0f));
    }
    return MF_OK;
}

static mf_status matmul_backward_impl(mf_ctx *ctx, mf_tensor *da, mf_tensor *db,
                                      const mf_tensor *dc, const mf_tensor *a, bool ta,
                                      const mf_tensor *b, bool tb, float alpha,
                                      const matmul_dims *d)
{
    const mf_dtype dt = mf_cuda_compute_dtype(ctx);
    const void *dcp = NULL, *ap = NULL, *bp = NULL;
    MF_TRY(mf_cuda_operand(ctx, dc, dt, &dcp));
    const int64_t B = d->batch, M = d->M, N = d->N, K = d->K;
    if (da) {
        MF_TRY(mf_cuda_operand(ctx, b, dt, &bp));
        if (!ta) /* da [M, K] += alpha dc [M, N] @ op(b)^T [N, K] */
            MF_TRY(grad_gemm(ctx, (float *)da->data, d->batch_a, dcp, false, B, bp, !tb, d->batch_b,
                             dt, B, M, K, N, alpha));
        else /* da [K, M] += alpha op(b) [K, N] @ dc^T [N, M] */
            MF_TRY(grad_gemm(ctx, (float *)da->data, d->batch_a, bp, tb, d->batch_b, dcp, true, B,
                             dt, B, K, M, N, alpha));
    }
    if (db) {
        MF_TRY(mf_cuda_operand(ctx, a, dt, &ap));
        if (!tb) /* db [K, N] += alpha op(a)^T [K, M] @ dc [M, N] */
            MF_TRY(grad_gemm(ctx, (float *)db->data, d->batch_b, ap, !ta, d->batch_a, dcp, false, B,
                             dt, B, K, N, M, alpha));
        else /* db [N, K] += alpha dc^T [N, M] @ op(a) [M, K] */
            MF_TRY(grad_gemm(ctx, (float *)db->data, d->batch_b, dcp, true, B, ap, ta, d->batch_a,
                             dt, B, N, K, M, alpha));
    }
    return MF_OK;
}

extern "C" mf_status mf_cuda_matmul_backward(mf_ctx *ctx, mf_tensor *da, mf_tensor *db,
                                             const mf_tensor *dc, const mf_tensor *a, bool trans_a,
                                             const mf_tensor *b, bool trans_b, float alpha)
{
    const char *op = "matmul_backward";
    MF_TRY(mf_cuda_check_ctx(ctx, op));
    MF_TRY(mf_cuda_check_dev(dc, op, "dc", MF_F32));
    MF_TRY(check_matrix_input(a, op, "a"));
    MF_TRY(check_matrix_input(b, op, "b"));
    matmul_dims d;
    MF_TRY(matmul_shapes(dc, a, trans_a, b, trans_b, op, &d));
    if (da) {
        MF_TRY(mf_cuda_check_dev(da, op, "da", MF_F32));
        MF_TRY(mf_check_same_shape(da, "da", a, "a"));
    }
    if (db) {
        MF_TRY(mf_cuda_check_dev(db, op, "db", MF_F32));
        MF_TRY(mf_check_same_shape(db, "db", b, "b"));
    }
    mf_arena_mark_t mark = mf_arena_mark(ctx->arena);
    mf_status st = matmul_backward_impl(ctx, da, db, dc, a, trans_a, b, trans_b, alpha, &d);
    mf_arena_release(ctx->arena, mark);
    return st;
}
