/* Tensor-level matrix products (core/ops.h): shape checks, then strided products through the CPU
 * backend (core/cpu/cpu_backend.h). Transposes are strides, never copies; backward passes add
 * into the gradients through oneDNN's sum post-op (beta = 1), so no temporary gradient exists.
 * f64 tensors (CPU only: the double-precision oracle runs) go to the plain double reference
 * (mf_ref_*_f64), which ignores ctx->policy.compute. */
#include <string.h>

#include "core/cpu/cpu_backend.h"
#include "core/ops_dispatch.h"
#include "core/shape_rules.h"
#include "core/ref/ref.h"

/* The floating type a call runs in, from its leading tensor (f64 when that is f64, else f32);
 * checked before the device dispatch because f64 exists on the CPU only. */
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

static mf_status check_real_cpu(mf_ctx *ctx, const mf_tensor *t, const char *op, const char *name,
                                mf_dtype dt)
{
    if (!t || !t->data) return MF_ERROR(MF_ERR_INVALID, "%s: tensor %s is missing", op, name);
    char b[96];
    if (t->dtype != dt && (t->dtype == MF_F32 || t->dtype == MF_F64))
        return MF_ERROR(MF_ERR_INVALID,
                        "%s: tensor %s is %s but this call runs in %s: f32 and f64 tensors "
                        "cannot be mixed in one call",
                        op, name, mf_tensor_describe(t, b, sizeof b), mf_dtype_name(dt));
    if (t->dtype != dt)
        return MF_ERROR(MF_ERR_INVALID, "%s: tensor %s is %s, expected %s", op, name,
                        mf_tensor_describe(t, b, sizeof b), mf_dtype_name(dt));
    if (t->device != ctx->device)
        return MF_ERROR(MF_ERR_INVALID, "%s: tensor %s %s is not on the context's device", op, name,
                        mf_tensor_describe(t, b, sizeof b));
    return MF_OK;
}

/* ---- linear ------------------------------------------------------------------------------- */

static bool has_suffix_product(const mf_tensor *t, int64_t p)
{
    int64_t s = 1;
    for (int d = t->ndim - 1; d >= 0; d--) {
        s *= t->shape[d];
        if (s == p) return true;
    }
    return false;
}

/* core/shape_rules.h; the CUDA twins resolve shapes with it too. */
mf_status mf_linear_dims(const char *op, const mf_tensor *x, const char *xn, const mf_tensor *w,
                         const char *wn, const mf_tensor *y, const char *yn, int64_t *rows,
                         int64_t *in, int64_t *out)
{
    int64_t nx = mf_tensor_numel(x), nw = mf_tensor_numel(w), ny = mf_tensor_numel(y);
    int64_t i0 = mf_tensor_cols(x), o0 = mf_tensor_cols(y);
    if (i0 > 0 && o0 > 0 && nw == i0 * o0 && nx / i0 == ny / o0) {
        *in = i0, *out = o0, *rows = nx / i0;
        return MF_OK;
    }
    int64_t pre = 1;
    for (int j = 1; j < w->ndim; j++) {
        pre *= w->shape[j - 1];
        if (pre <= 0) break;
        int64_t post = nw / pre;
        if (post <= 0 || !has_suffix_product(x, pre) || !has_suffix_product(y, post)) continue;
        if (nx / pre != ny / post) continue;
        *in = pre, *out = post, *rows = nx / pre;
        return MF_OK;
    }
    char a[96], b[96], c[96];
    return MF_ERROR(MF_ERR_INVALID,
                    "%s: shapes do not fit %s = %s @ %s: %s is %s, %s is %s, %s is %s (need %s "
                    "[..., in], %s with in*out elements, %s [..., out], the same number of rows)",
                    op, yn, xn, wn, xn, mf_tensor_describe(x, a, sizeof a), wn,
                    mf_tensor_describe(w, b, sizeof b), yn, mf_tensor_describe(y, c, sizeof c), xn,
                    wn, yn);
}

mf_status mf_linear_forward(mf_ctx *ctx, mf_tensor *y, const mf_tensor *x, const mf_tensor *w,
                            const mf_tensor *b, bool accumulate)
{
    const char *op = "mf_linear_forward";
    mf_dtype dt;
    MF_TRY(run_dtype(ctx, op, x, "x", &dt));
    MF_DISPATCH_CUDA(ctx, linear_forward, y, x, w, b, accumulate);
    MF_TRY(check_real_cpu(ctx, y, op, "y", dt));
    MF_TRY(check_real_cpu(ctx, x, op, "x", dt));
    MF_TRY(check_real_cpu(ctx, w, op, "w", dt));
    int64_t rows, in, out;
    MF_TRY(mf_linear_dims(op, x, "x", w, "w", y, "y", &rows, &in, &out));
    if (b) {
        MF_TRY(check_real_cpu(ctx, b, op, "b", dt));
        char bd[96];
        MF_REQUIRE(mf_tensor_numel(b) == out, "%s: bias b is %s, expected %lld elements (out)", op,
                   mf_tensor_describe(b, bd, sizeof bd), (long long)out);
    }
    if (dt == MF_F64) {
        mf_ref_linear_forward_f64(y->data, x->data, w->data, b ? b->data : NULL, rows, in, out,
                                  accumulate);
        return MF_OK;
    }
    mf_cpu_gemm_desc d = mf_cpu_gemm_contiguous(1, 1, 1, rows, out, in, false, false, 1.0f,
                                                accumulate ? 1.0f : 0.0f);
    return mf_cpu_gemm(ctx, &d, y->data, x->data, w->data, b ? b->data : NULL);
}

/* db[c] += sum_r dy[r, c] in a fixed order whatever the thread count: fixed row blocks summed in
 * double, then the block partials added in block order. */
static mf_status column_sums_accumulate(mf_ctx *ctx, float *db, const float *dy, int64_t rows,
                                        int64_t cols)
{
    enum { ROWS_PER_BLOCK = 512 };
    int64_t nblk = (rows + ROWS_PER_BLOCK - 1) / ROWS_PER_BLOCK;
    if (nblk == 0 || cols == 0) return MF_OK;
    mf_arena_mark_t mark = mf_arena_mark(ctx->arena);
    void *p;
    MF_TRY(mf_arena_alloc(ctx->arena, (size_t)(nblk * cols) * sizeof(double), "linear db partials",
                          &p));
    double *part = p; /* [nblk, cols] */
#pragma omp parallel for schedule(static) if (rows * cols > 65536)
    for (int64_t k = 0; k < nblk; k++) {
        double *acc = part + k * cols;
        for (int64_t c = 0; c < cols; c++) acc[c] = 0;
        int64_t r1 = (k + 1) * ROWS_PER_BLOCK < rows ? (k + 1) * ROWS_PER_BLOCK : rows;
        for (int64_t r = k * ROWS_PER_BLOCK; r < r1; r++) {
            const float *row = dy + r * cols;
#pragma omp simd
            for (int64_t c = 0; c < cols; c++) acc[c] += row[c];
        }
    }
#pragma omp parallel for schedule(static) if (nblk * cols > 65536)
    for (int64_t c = 0; c < cols; c++) {
        double s = 0;
        for (int64_t k = 0; k < nblk; k++) s += part[k * cols + c];
        db[c] += (float)s;
    }
    mf_arena_release(ctx->arena, mark);
    return MF_OK;
}

mf_status mf_linear_backward(mf_ctx *ctx, mf_tensor *dx, mf_tensor *dw, mf_tensor *db,
                             const mf_tensor *dy, const mf_tensor *x, const mf_tensor *w)
{
    const char *op = "mf_linear_backward";
    mf_dtype dt;
    MF_TRY(run_dtype(ctx, op, x, "x", &dt));
    MF_DISPATCH_CUDA(ctx, linear_backward, dx, dw, db, dy, x, w);
    MF_TRY(check_real_cpu(ctx, dy, op, "dy", dt));
    MF_TRY(check_real_cpu(ctx, x, op, "x", dt));
    MF_TRY(check_real_cpu(ctx, w, op, "w", dt));
    int64_t rows, in, out;
    MF_TRY(mf_linear_dims(op, x, "x", w, "w", dy, "dy", &rows, &in, &out));
    char s1[96];
    if (dx) {
        MF_TRY(check_real_cpu(ctx, dx, op, "dx", dt));
        MF_REQUIRE(mf_tensor_numel(dx) == rows * in, "%s: dx is %s, expected %lld elements like x",
                   op, mf_tensor_describe(dx, s1, sizeof s1), (long long)(rows * in));
    }
    if (dw) {
        MF_TRY(check_real_cpu(ctx, dw, op, "dw", dt));
        MF_REQUIRE(mf_tensor_numel(dw) == in * out, "%s: dw is %s, expected %lld elements like w",
                   op, mf_tensor_describe(dw, s1, sizeof s1), (long long)(in * out));
    }
    if (db) {
        MF_TRY(check_real_cpu(ctx, db, op, "db", dt));
        MF_REQUIRE(mf_tensor_numel(db) == out, "%s: db is %s, expected %lld elements (out)", op,
                   mf_tensor_describe(db, s1, sizeof s1), (long long)out);
    }
    if (dt == MF_F64) {
        mf_ref_linear_backward_f64(dx ? dx->data : NULL, dw ? dw->data : NULL, db ? db->data : NULL,
                                   dy->data, x->data, w->data, rows, in, out);
        return MF_OK;
    }
    if (dx) { /* dx[rows, in] += dy[rows, out] @ w^T, w stored [in, out] */
        mf_cpu_gemm_desc d = mf_cpu_gemm_contiguous(1, 1, 1, rows, in, out, false, true, 1, 1);
        MF_TRY(mf_cpu_gemm(ctx, &d, dx->data, dy->data, w->data, NULL));
    }
    if (dw) { /* dw[in, out] += x^T @ dy, x stored [rows, in] */
        mf_cpu_gemm_desc d = mf_cpu_gemm_contiguous(1, 1, 1, in, out, rows, true, false, 1, 1);
        MF_TRY(mf_cpu_gemm(ctx, &d, dw->data, x->data, dy->data, NULL));
    }
    if (db) MF_TRY(column_sums_accumulate(ctx, db->data, dy->data, rows, out));
    return MF_OK;
}

/* ---- batched matmul ------------------------------------------------------------------------ */

typedef struct {
    int64_t batch, batch_a, batch_b, M, N, K;
} mm_dims;

static mf_status matmul_dims(const char *op, const mf_tensor *c, const char *cn, const mf_tensor *a,
                             bool ta, const mf_tensor *b, bool tb, mm_dims *d)
{
    char x[96], y[96], z[96];
    MF_REQUIRE(a->ndim == 3 && b->ndim == 3 && c->ndim == 3,
               "%s: a, b, %s must be 3-D [batch, rows, cols]; a is %s, b is %s, %s is %s", op, cn,
               mf_tensor_describe(a, x, sizeof x), mf_tensor_describe(b, y, sizeof y), cn,
               mf_tensor_describe(c, z, sizeof z));
    d->batch = c->shape[0];
    d->M = c->shape[1];
    d->N = c->shape[2];
    d->batch_a = a->shape[0];
    d->batch_b = b->shape[0];
    int64_t am = ta ? a->shape[2] : a->shape[1], ak = ta ? a->shape[1] : a->shape[2];
    int64_t bk = tb ? b->shape[2] : b->shape[1], bn = tb ? b->shape[1] : b->shape[2];
    d->K = ak;
    bool ok = am == d->M && bn == d->N && bk == ak && (d->batch_a == d->batch || d->batch_a == 1) &&
              (d->batch_b == d->batch || d->batch_b == 1);
    if (!ok)
        return MF_ERROR(MF_ERR_INVALID,
                        "%s: shapes do not fit %s = op(a) @ op(b): a is %s%s, b is %s%s, %s is %s "
                        "(need op(a) [M, K], op(b) [K, N], %s [batch, M, N], batch of a and b "
                        "equal to %s's or 1)",
                        op, cn, mf_tensor_describe(a, x, sizeof x), ta ? " (transposed)" : "",
                        mf_tensor_describe(b, y, sizeof y), tb ? " (transposed)" : "", cn,
                        mf_tensor_describe(c, z, sizeof z), cn, cn);
    return MF_OK;
}

mf_status mf_matmul(mf_ctx *ctx, mf_tensor *c, const mf_tensor *a, bool trans_a, const mf_tensor *b,
                    bool trans_b, float alpha, float beta)
{
    const char *op = "mf_matmul";
    mf_dtype dt;
    MF_TRY(run_dtype(ctx, op, a, "a", &dt));
    MF_DISPATCH_CUDA(ctx, matmul, c, a, trans_a, b, trans_b, alpha, beta);
    MF_TRY(check_real_cpu(ctx, c, op, "c", dt));
    MF_TRY(check_real_cpu(ctx, a, op, "a", dt));
    MF_TRY(check_real_cpu(ctx, b, op, "b", dt));
    mm_dims d;
    MF_TRY(matmul_dims(op, c, "c", a, trans_a, b, trans_b, &d));
    if (dt == MF_F64) {
        mf_ref_matmul_f64(c->data, a->data, trans_a, b->data, trans_b, d.batch, d.batch_a,
                          d.batch_b, d.M, d.N, d.K, alpha, beta);
        return MF_OK;
    }
    mf_cpu_gemm_desc g = mf_cpu_gemm_contiguous(d.batch, d.batch_a, d.batch_b, d.M, d.N, d.K,
                                                trans_a, trans_b, alpha, beta);
    return mf_cpu_gemm(ctx, &g, c->data, a->data, b->data, NULL);
}

/* One operand of a gradient product: base pointer, matrix strides, per-batch stride (0 for an
 * operand shared by the whole batch). */
typedef struct {
    const float *p;
    int64_t s0, s1, sb;
} mm_operand;

/* out[i] += alpha * x[i] @ y[i] for i < batch; out [rows, cols] row-major with batch stride
 * out_sb, or 0 when out is shared by the batch (a broadcast operand's gradient): then the
 * products are added one batch element after another (a fixed order, no scratch). */
static mf_status grad_product(mf_ctx *ctx, float *out, int64_t out_sb, int64_t rows, int64_t cols,
                              int64_t inner, mm_operand x, mm_operand y, int64_t batch, float alpha)
{
    mf_cpu_gemm_desc g;
    memset(&g, 0, sizeof g);
    g.M = rows, g.N = cols, g.K = inner;
    g.a_sm = x.s0, g.a_sk = x.s1;
    g.b_sk = y.s0, g.b_sn = y.s1;
    g.c_sm = cols, g.c_sn = 1;
    g.alpha = alpha, g.beta = 1.0f;
    if (out_sb != 0 || batch == 1) {
        g.nbatch = 1;
        g.batch[0] = batch;
        g.a_sb[0] = x.sb, g.b_sb[0] = y.sb, g.c_sb[0] = out_sb;
        return mf_cpu_gemm(ctx, &g, out, x.p, y.p, NULL);
    }
    for (int64_t i = 0; i < batch; i++)
        MF_TRY(mf_cpu_gemm(ctx, &g, out, x.p + i * x.sb, y.p + i * y.sb, NULL));
    return MF_OK;
}

mf_status mf_matmul_backward(mf_ctx *ctx, mf_tensor *da, mf_tensor *db, const mf_tensor *dc,
                             const mf_tensor *a, bool trans_a, const mf_tensor *b, bool trans_b,
                             float alpha)
{
    const char *op = "mf_matmul_backward";
    mf_dtype dt;
    MF_TRY(run_dtype(ctx, op, a, "a", &dt));
    MF_DISPATCH_CUDA(ctx, matmul_backward, da, db, dc, a, trans_a, b, trans_b, alpha);
    MF_TRY(check_real_cpu(ctx, dc, op, "dc", dt));
    MF_TRY(check_real_cpu(ctx, a, op, "a", dt));
    MF_TRY(check_real_cpu(ctx, b, op, "b", dt));
    mm_dims d;
    MF_TRY(matmul_dims(op, dc, "dc", a, trans_a, b, trans_b, &d));
    if (da) {
        MF_TRY(check_real_cpu(ctx, da, op, "da", dt));
        MF_TRY(mf_check_same_shape(da, "da", a, "a"));
    }
    if (db) {
        MF_TRY(check_real_cpu(ctx, db, op, "db", dt));
        MF_TRY(mf_check_same_shape(db, "db", b, "b"));
    }
    if (dt == MF_F64) {
        mf_ref_matmul_backward_f64(da ? da->data : NULL, db ? db->data : NULL, dc->data, a->data,
                                   trans_a, b->data, trans_b, d.batch, d.batch_a, d.batch_b, d.M,
                                   d.N, d.K, alpha);
        return MF_OK;
    }
    const int64_t M = d.M, N = d.N, K = d.K;
    const int64_t a_sb = d.batch_a == 1 ? 0 : M * K, b_sb = d.batch_b == 1 ? 0 : K * N;
    /* op(a)[m, k] and op(b)[k, n] as (pointer, stride over first index, over second index) */
    mm_operand opa = {a->data, trans_a ? 1 : K, trans_a ? M : 1, a_sb};
    mm_operand opb = {b->data, trans_b ? 1 : N, trans_b ? K : 1, b_sb};
    mm_operand gc = {dc->data, N, 1, M * N};
    mm_operand gc_t = {dc->data, 1, N, M * N};
    mm_operand opa_t = {a->data, opa.s1, opa.s0, a_sb};
    mm_operand opb_t = {b->data, opb.s1, opb.s0, b_sb};
    if (da) {
        if (!trans_a) /* da [M, K] += alpha dc @ op(b)^T */
            MF_TRY(grad_product(ctx, da->data, a_sb, M, K, N, gc, opb_t, d.batch, alpha));
        else /* da stored [K, M] += alpha op(b) @ dc^T */
            MF_TRY(grad_product(ctx, da->data, a_sb, K, M, N, opb, gc_t, d.batch, alpha));
    }
    if (db) {
        if (!trans_b) /* db [K, N] += alpha op(a)^T @ dc */
            MF_TRY(grad_product(ctx, db->data, b_sb, K, N, M, opa_t, gc, d.batch, alpha));
        else /* db stored [N, K] += alpha dc^T @ op(a) */
            MF_TRY(grad_product(ctx, db->data, b_sb, N, K, M, gc_t, opa, d.batch, alpha));
    }
    return MF_OK;
}
