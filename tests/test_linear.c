/* Linear layer y = x @ w + b (AF2 layout, w [in, out]): the double reference's backward against
 * finite differences (dx, dw, db); the oneDNN f32 path against the double reference (forward with
 * and without bias, overwrite and accumulate; accumulating backward), AF2 weight layouts
 * [in, heads, c] and [heads, c, out]; bf16 compute against f32; db bitwise reproducible and
 * independent of the thread count; arena balance; shape errors naming the tensors. */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "core/ref/ref.h"
#include "tests/support/mf_test.h"

static double *normal_f64(int64_t n, uint64_t seed, double sd)
{
    double *p = malloc(sizeof(double) * (size_t)(n ? n : 1));
    mf_test_fill_normal_f64(p, n, seed, sd);
    return p;
}

/* f32 copy of p, and p rounded to those f32 values so both precisions see the same inputs. */
static float *to_f32(double *p, int64_t n)
{
    float *f = malloc(sizeof(float) * (size_t)(n ? n : 1));
    mf_f64_to_f32(f, p, n);
    mf_f32_to_f64(p, f, n);
    return f;
}

static void expect_invalid(const char *what, mf_status st, const char *must_mention)
{
    const char *msg = st ? mf_last_error() : "";
    bool named = must_mention == NULL || strstr(msg, must_mention) != NULL;
    printf("  %-48s -> %s: %s  %s\n", what, mf_status_name(st), msg,
           st == MF_ERR_INVALID && named ? "ok" : "FAIL");
    MF_TEST_TRUE(st == MF_ERR_INVALID, "%s: expected MF_ERR_INVALID, got %s", what,
                 mf_status_name(st));
    MF_TEST_TRUE(named, "%s: message does not mention '%s'", what, must_mention);
    mf_clear_error();
}

/* Per-element check after dividing both by the reference's rms (see test_matmul.c: bf16 input
 * rounding errs in proportion to the size of the products). */
static void check_close_rms(const char *name, const float *a, const float *ref, int64_t n,
                            double atol, double rtol)
{
    double ss = 0;
    for (int64_t i = 0; i < n; i++) ss += (double)ref[i] * ref[i];
    double rms = n ? sqrt(ss / (double)n) : 1;
    if (!(rms > 0)) rms = 1;
    float *an = malloc(sizeof(float) * (size_t)(n ? n : 1));
    float *rn = malloc(sizeof(float) * (size_t)(n ? n : 1));
    for (int64_t i = 0; i < n; i++) {
        an[i] = (float)(a[i] / rms);
        rn[i] = (float)(ref[i] / rms);
    }
    char label[160];
    snprintf(label, sizeof label, "%s (/rms %.3g)", name, rms);
    mf_check_close_f32(label, an, rn, n, atol, rtol);
    free(an);
    free(rn);
}

/* ---- finite differences of the double reference -------------------------------------------- */

typedef struct {
    double *y, *x, *w, *b;
    int64_t rows, in, out;
} lin_case;

static void lin_fwd(void *ud)
{
    lin_case *s = ud;
    mf_ref_linear_forward_f64(s->y, s->x, s->w, s->b, s->rows, s->in, s->out, false);
}

static void test_gradcheck(void)
{
    printf("double reference backward vs central finite differences (h=%.0e):\n", MF_TOL_FD_STEP);
    const int64_t shapes[][3] = {{7, 5, 13}, {21, 13, 6}};
    for (int t = 0; t < 2; t++) {
        int64_t rows = shapes[t][0], in = shapes[t][1], out = shapes[t][2];
        double *x = normal_f64(rows * in, 1 + t, 1), *w = normal_f64(in * out, 2 + t, 1);
        double *b = normal_f64(out, 3 + t, 1), *gy = normal_f64(rows * out, 4 + t, 1);
        double *y = calloc((size_t)(rows * out), sizeof(double));
        double *dx = calloc((size_t)(rows * in), sizeof(double));
        double *dw = calloc((size_t)(in * out), sizeof(double));
        double *db = calloc((size_t)out, sizeof(double));
        mf_ref_linear_backward_f64(dx, dw, db, gy, x, w, rows, in, out);
        lin_case s = {y, x, w, b, rows, in, out};
        char name[64];
        snprintf(name, sizeof name, "linear %lldx%lld->%lld", (long long)rows, (long long)in,
                 (long long)out);
        mf_gc_array ins[3] = {{"x", x, rows * in}, {"w", w, in * out}, {"b", b, out}};
        const double *grads[3] = {dx, dw, db};
        mf_gc_array outs[1] = {{"y", y, rows * out}};
        const double *gouts[1] = {gy};
        mf_gradcheck(name, lin_fwd, &s, ins, grads, 3, outs, gouts, 1, MF_TOL_FD_STEP,
                     MF_TOL_FD_ATOL, MF_TOL_FD_RTOL, 0);
        free(x), free(w), free(b), free(gy), free(y), free(dx), free(dw), free(db);
    }
}

/* ---- oneDNN f32 against the double reference ----------------------------------------------- */

/* x [lead..., in] given by xs (nx dims), w by ws (nw dims), y by ys (ny dims). */
typedef struct {
    const char *name;
    int nx, nw, ny;
    int64_t xs[4], ws[4], ys[4];
    int64_t rows, in, out;
} lin_cfg;

static const lin_cfg CFGS[] = {
    {"x [3,7,5] w [5,13]", 3, 2, 3, {3, 7, 5}, {5, 13}, {3, 7, 13}, 21, 5, 13},
    {"x [1,1] w [1,1]", 2, 2, 2, {1, 1}, {1, 1}, {1, 1}, 1, 1, 1},
    {"x [300,64] w [64,96]", 2, 2, 2, {300, 64}, {64, 96}, {300, 96}, 300, 64, 96},
    {"x [2,9,11] query_w [11,3,4] y [2,9,3,4]",
     3,
     3,
     4,
     {2, 9, 11},
     {11, 3, 4},
     {2, 9, 3, 4},
     18,
     11,
     12},
    {"o [2,9,3,4] output_w [3,4,6] y [2,9,6]",
     4,
     3,
     3,
     {2, 9, 3, 4},
     {3, 4, 6},
     {2, 9, 6},
     18,
     12,
     6},
    {"x [2,9,11] w [11,12] y [2,9,3,4]", 3, 2, 4, {2, 9, 11}, {11, 12}, {2, 9, 3, 4}, 18, 11, 12},
};
#define NCFG ((int)(sizeof CFGS / sizeof CFGS[0]))

static void check_f32_cfg(mf_ctx *ctx, const lin_cfg *c, uint64_t seed)
{
    const int64_t rows = c->rows, in = c->in, out = c->out;
    /* w scaled by in^-1/2 and dy by rows^-1/2 keep y, dw and db O(1) for the tolerance's sake */
    double *x = normal_f64(rows * in, seed, 1);
    double *w = normal_f64(in * out, seed + 1, 1 / sqrt((double)in));
    double *b = normal_f64(out, seed + 2, 1), *y0 = normal_f64(rows * out, seed + 3, 1);
    double *dy = normal_f64(rows * out, seed + 4, 1 / sqrt((double)rows));
    double *dx = normal_f64(rows * in, seed + 5, 1);
    double *dw = normal_f64(in * out, seed + 6, 1), *db = normal_f64(out, seed + 7, 1);
    float *fx = to_f32(x, rows * in), *fw = to_f32(w, in * out), *fb = to_f32(b, out);
    float *fy0 = to_f32(y0, rows * out), *fdy = to_f32(dy, rows * out);
    float *fdx = to_f32(dx, rows * in), *fdw = to_f32(dw, in * out), *fdb = to_f32(db, out);
    float *fy = malloc(sizeof(float) * (size_t)(rows * out));
    double *ry = malloc(sizeof(double) * (size_t)(rows * out));
    mf_tensor tx = mf_tensor_make(fx, MF_F32, MF_DEV_CPU, c->nx, c->xs);
    mf_tensor tw = mf_tensor_make(fw, MF_F32, MF_DEV_CPU, c->nw, c->ws);
    mf_tensor ty = mf_tensor_make(fy, MF_F32, MF_DEV_CPU, c->ny, c->ys);
    mf_tensor tdy = mf_tensor_make(fdy, MF_F32, MF_DEV_CPU, c->ny, c->ys);
    mf_tensor tdx = mf_tensor_make(fdx, MF_F32, MF_DEV_CPU, c->nx, c->xs);
    mf_tensor tdw = mf_tensor_make(fdw, MF_F32, MF_DEV_CPU, c->nw, c->ws);
    mf_tensor tb = mf_tensor_4(fb, MF_F32, MF_DEV_CPU, 1, out, 1, 1, 1);
    mf_tensor tdb = mf_tensor_4(fdb, MF_F32, MF_DEV_CPU, 1, out, 1, 1, 1);
    char label[160];
    size_t before = mf_arena_used(ctx->arena);
    for (int variant = 0; variant < 3; variant++) {
        bool bias = variant != 1, acc = variant == 2;
        if (acc) {
            memcpy(fy, fy0, sizeof(float) * (size_t)(rows * out));
            memcpy(ry, y0, sizeof(double) * (size_t)(rows * out));
        } else {
            for (int64_t i = 0; i < rows * out; i++) fy[i] = NAN; /* must be overwritten */
        }
        MF_TEST_OK(mf_linear_forward(ctx, &ty, &tx, &tw, bias ? &tb : NULL, acc));
        mf_ref_linear_forward_f64(ry, x, w, bias ? b : NULL, rows, in, out, acc);
        snprintf(label, sizeof label, "%s: y %s%s", c->name, bias ? "= xw+b" : "= xw",
                 acc ? " (accumulate)" : "");
        mf_check_close_f32_f64(label, fy, ry, rows * out, MF_TOL_F32_ATOL, MF_TOL_F32_RTOL);
    }
    MF_TEST_OK(mf_linear_backward(ctx, &tdx, &tdw, &tdb, &tdy, &tx, &tw));
    mf_ref_linear_backward_f64(dx, dw, db, dy, x, w, rows, in, out);
    snprintf(label, sizeof label, "%s: dx (accumulated)", c->name);
    mf_check_close_f32_f64(label, fdx, dx, rows * in, MF_TOL_F32_ATOL, MF_TOL_F32_RTOL);
    snprintf(label, sizeof label, "%s: dw (accumulated)", c->name);
    mf_check_close_f32_f64(label, fdw, dw, in * out, MF_TOL_F32_ATOL, MF_TOL_F32_RTOL);
    snprintf(label, sizeof label, "%s: db (accumulated)", c->name);
    mf_check_close_f32_f64(label, fdb, db, out, MF_TOL_F32_ATOL, MF_TOL_F32_RTOL);
    size_t after = mf_arena_used(ctx->arena);
    MF_TEST_TRUE(after == before, "%s: arena offset %zu after the ops, %zu before", c->name, after,
                 before);
    /* Only the requested gradients change. */
    float *keep = malloc(sizeof(float) * (size_t)(rows * in));
    memcpy(keep, fdx, sizeof(float) * (size_t)(rows * in));
    MF_TEST_OK(mf_linear_backward(ctx, NULL, NULL, &tdb, &tdy, &tx, &tw));
    MF_TEST_TRUE(memcmp(keep, fdx, sizeof(float) * (size_t)(rows * in)) == 0,
                 "%s: dx changed although not requested", c->name);
    free(keep);
    free(x), free(w), free(b), free(y0), free(dy), free(dx), free(dw), free(db), free(fx);
    free(fw), free(fb), free(fy0), free(fdy), free(fdx), free(fdw), free(fdb), free(fy), free(ry);
}

/* ---- bf16 compute against f32 -------------------------------------------------------------- */

static void test_bf16(mf_ctx *ctx)
{
    printf("bf16 compute vs f32 compute, per element after dividing by the f32 result's rms "
           "(atol %.0e, rtol %.0e):\n",
           MF_TOL_BF16_ATOL, MF_TOL_BF16_RTOL);
    const int64_t rows = 131, in = 67, out = 45;
    float *x = malloc(sizeof(float) * rows * in), *w = malloc(sizeof(float) * in * out);
    float *b = malloc(sizeof(float) * out), *dy = malloc(sizeof(float) * rows * out);
    float *y[2], *dx[2], *dw[2], *db[2];
    mf_test_fill_normal_f32(x, rows * in, 81, 1);
    mf_test_fill_normal_f32(w, in * out, 82, 1);
    mf_test_fill_normal_f32(b, out, 83, 1);
    mf_test_fill_normal_f32(dy, rows * out, 84, 1);
    mf_tensor tx = mf_tensor_4(x, MF_F32, MF_DEV_CPU, 2, rows, in, 1, 1);
    mf_tensor tw = mf_tensor_4(w, MF_F32, MF_DEV_CPU, 2, in, out, 1, 1);
    mf_tensor tb = mf_tensor_4(b, MF_F32, MF_DEV_CPU, 1, out, 1, 1, 1);
    mf_tensor tdy = mf_tensor_4(dy, MF_F32, MF_DEV_CPU, 2, rows, out, 1, 1);
    for (int p = 0; p < 2; p++) {
        y[p] = malloc(sizeof(float) * rows * out);
        dx[p] = calloc((size_t)(rows * in), sizeof(float));
        dw[p] = calloc((size_t)(in * out), sizeof(float));
        db[p] = calloc((size_t)out, sizeof(float));
        mf_tensor ty = mf_tensor_4(y[p], MF_F32, MF_DEV_CPU, 2, rows, out, 1, 1);
        mf_tensor tdx = mf_tensor_4(dx[p], MF_F32, MF_DEV_CPU, 2, rows, in, 1, 1);
        mf_tensor tdw = mf_tensor_4(dw[p], MF_F32, MF_DEV_CPU, 2, in, out, 1, 1);
        mf_tensor tdb = mf_tensor_4(db[p], MF_F32, MF_DEV_CPU, 1, out, 1, 1, 1);
        ctx->policy.compute = p ? MF_BF16 : MF_F32;
        size_t before = mf_arena_used(ctx->arena);
        MF_TEST_OK(mf_linear_forward(ctx, &ty, &tx, &tw, &tb, false));
        MF_TEST_OK(mf_linear_backward(ctx, &tdx, &tdw, &tdb, &tdy, &tx, &tw));
        MF_TEST_TRUE(mf_arena_used(ctx->arena) == before, "bf16 linear: arena not balanced");
    }
    ctx->policy.compute = MF_F32;
    check_close_rms("bf16 vs f32 linear 131x67->45: y", y[1], y[0], rows * out, MF_TOL_BF16_ATOL,
                    MF_TOL_BF16_RTOL);
    check_close_rms("bf16 vs f32 linear: dx", dx[1], dx[0], rows * in, MF_TOL_BF16_ATOL,
                    MF_TOL_BF16_RTOL);
    check_close_rms("bf16 vs f32 linear: dw", dw[1], dw[0], in * out, MF_TOL_BF16_ATOL,
                    MF_TOL_BF16_RTOL);
    /* db is a plain f32 column sum whatever the compute precision. */
    mf_check_bitwise_f32("bf16 compute leaves db exact (same as f32)", db[1], db[0], out);
    MF_TEST_TRUE(memcmp(y[1], y[0], sizeof(float) * rows * out) != 0,
                 "bf16 linear identical to f32: inputs were not rounded");
    for (int p = 0; p < 2; p++) free(y[p]), free(dx[p]), free(dw[p]), free(db[p]);
    free(x), free(w), free(b), free(dy);
}

/* ---- db reproducibility ---------------------------------------------------------------------- */

static void test_db_deterministic(mf_ctx *ctx)
{
    const int64_t rows = 5000, in = 3, out = 37; /* several row blocks, odd widths */
    float *x = malloc(sizeof(float) * rows * in), *w = malloc(sizeof(float) * in * out);
    float *dy = malloc(sizeof(float) * rows * out);
    float *db1 = calloc(out, sizeof(float)), *db2 = calloc(out, sizeof(float));
    float *db3 = calloc(out, sizeof(float));
    mf_test_fill_normal_f32(x, rows * in, 91, 1);
    mf_test_fill_normal_f32(w, in * out, 92, 1);
    mf_test_fill_normal_f32(dy, rows * out, 93, 1);
    mf_tensor tx = mf_tensor_4(x, MF_F32, MF_DEV_CPU, 2, rows, in, 1, 1);
    mf_tensor tw = mf_tensor_4(w, MF_F32, MF_DEV_CPU, 2, in, out, 1, 1);
    mf_tensor tdy = mf_tensor_4(dy, MF_F32, MF_DEV_CPU, 2, rows, out, 1, 1);
    mf_tensor t1 = mf_tensor_4(db1, MF_F32, MF_DEV_CPU, 1, out, 1, 1, 1);
    mf_tensor t2 = mf_tensor_4(db2, MF_F32, MF_DEV_CPU, 1, out, 1, 1, 1);
    mf_tensor t3 = mf_tensor_4(db3, MF_F32, MF_DEV_CPU, 1, out, 1, 1, 1);
    int threads = omp_get_max_threads();
    MF_TEST_OK(mf_linear_backward(ctx, NULL, NULL, &t1, &tdy, &tx, &tw));
    MF_TEST_OK(mf_linear_backward(ctx, NULL, NULL, &t2, &tdy, &tx, &tw));
    omp_set_num_threads(threads > 1 ? 1 : 2);
    MF_TEST_OK(mf_linear_backward(ctx, NULL, NULL, &t3, &tdy, &tx, &tw));
    omp_set_num_threads(threads);
    mf_check_bitwise_f32("db [5000x37 column sums]: run twice", db2, db1, out);
    mf_check_bitwise_f32("db: different thread count", db3, db1, out);
    double *ref = calloc(out, sizeof(double)), *ddy = malloc(sizeof(double) * rows * out);
    mf_f32_to_f64(ddy, dy, rows * out);
    mf_ref_linear_backward_f64(NULL, NULL, ref, ddy, NULL, NULL, rows, in, out);
    mf_check_close_f32_f64("db [5000 rows] vs double reference", db1, ref, out, MF_TOL_F32_ATOL,
                           MF_TOL_F32_RTOL);
    free(x), free(w), free(dy), free(db1), free(db2), free(db3), free(ref), free(ddy);
}

/* ---- shape errors ---------------------------------------------------------------------------- */

static void test_errors(mf_ctx *ctx)
{
    float buf[256] = {0};
    mf_tensor x = mf_tensor_4(buf, MF_F32, MF_DEV_CPU, 3, 2, 3, 4, 1);
    mf_tensor w = mf_tensor_4(buf, MF_F32, MF_DEV_CPU, 2, 5, 6, 1, 1);
    mf_tensor y = mf_tensor_4(buf, MF_F32, MF_DEV_CPU, 3, 2, 3, 6, 1);
    expect_invalid("linear: w [5,6] for x [...,4]", mf_linear_forward(ctx, &y, &x, &w, NULL, false),
                   "w is [5, 6]");
    mf_tensor w2 = mf_tensor_4(buf, MF_F32, MF_DEV_CPU, 2, 4, 6, 1, 1);
    mf_tensor y2 = mf_tensor_4(buf, MF_F32, MF_DEV_CPU, 3, 2, 4, 6, 1);
    expect_invalid("linear: y rows 8 vs x rows 6",
                   mf_linear_forward(ctx, &y2, &x, &w2, NULL, false), "y is [2, 4, 6]");
    mf_tensor b = mf_tensor_4(buf, MF_F32, MF_DEV_CPU, 1, 5, 1, 1, 1);
    expect_invalid("linear: bias [5] for out 6", mf_linear_forward(ctx, &y, &x, &w2, &b, false),
                   "bias b is [5]");
    mf_tensor dx = mf_tensor_4(buf, MF_F32, MF_DEV_CPU, 2, 6, 5, 1, 1);
    expect_invalid("linear backward: dx [6,5] for x [2,3,4]",
                   mf_linear_backward(ctx, &dx, NULL, NULL, &y, &x, &w2), "dx is [6, 5]");
    mf_tensor dw = mf_tensor_4(buf, MF_F32, MF_DEV_CPU, 2, 4, 5, 1, 1);
    expect_invalid("linear backward: dw [4,5] for w [4,6]",
                   mf_linear_backward(ctx, NULL, &dw, NULL, &y, &x, &w2), "dw is [4, 5]");
    expect_invalid("linear backward: dy mismatched",
                   mf_linear_backward(ctx, NULL, NULL, NULL, &y2, &x, &w2), "dy is [2, 4, 6]");
    mf_tensor xb = x;
    xb.dtype = MF_BF16;
    expect_invalid("linear: bf16 x", mf_linear_forward(ctx, &y, &xb, &w2, NULL, false),
                   "expected f32");
    expect_invalid("linear: NULL w", mf_linear_forward(ctx, &y, &x, NULL, NULL, false),
                   "w is missing");
}

int main(void)
{
    mf_ctx ctx;
    mf_arena arena;
    MF_TEST_OK(mf_test_ctx_cpu(&ctx, &arena, (size_t)64 << 20));
    if (mf_test_failures()) return mf_test_finish("test_linear");
    test_gradcheck();
    printf("oneDNN f32 vs double reference (atol %.0e, rtol %.0e):\n", MF_TOL_F32_ATOL,
           MF_TOL_F32_RTOL);
    for (int i = 0; i < NCFG; i++) check_f32_cfg(&ctx, &CFGS[i], 200 + 10 * (uint64_t)i);
    test_bf16(&ctx);
    printf("db column sums:\n");
    test_db_deterministic(&ctx);
    printf("shape errors:\n");
    test_errors(&ctx);
    MF_TEST_TRUE(mf_arena_used(&arena) == 0, "arena not empty at the end: %zu bytes",
                 mf_arena_used(&arena));
    mf_test_ctx_free(&ctx, &arena);
    return mf_test_finish("test_linear");
}
