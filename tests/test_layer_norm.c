/* Layer norm (AF2 / haiku: biased variance, eps inside the square root): a case worked by hand,
 * the double reference's backward against finite differences (input and both parameters), the f32
 * op against the double reference (forward, saved statistics, accumulating backward), aliasing,
 * inference without statistics, thread-count independence of dgamma/dbeta, and argument checks. */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "core/ref/ref.h"
#include "tests/support/mf_test.h"

#define LN_EPS 1e-5 /* AlphaFold 2's layer-norm epsilon */

static double *normal_f64(int64_t n, uint64_t seed, double sd, double offset)
{
    double *p = malloc(sizeof(double) * (size_t)(n ? n : 1));
    mf_test_fill_normal_f64(p, n, seed, sd);
    for (int64_t i = 0; i < n; i++) p[i] += offset;
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

/* want = init + fresh, where fresh is the reference's backward into zeros: the expected
 * accumulated gradient does not rely on the reference accumulating correctly itself. */
static void add_fresh(double *init_to_want, const double *fresh, int64_t n)
{
    for (int64_t i = 0; i < n; i++) init_to_want[i] += fresh[i];
}

static void expect_invalid(const char *what, mf_status st)
{
    printf("  %-48s -> %s: %s  %s\n", what, mf_status_name(st), st ? mf_last_error() : "",
           st == MF_ERR_INVALID ? "ok" : "FAIL");
    MF_TEST_TRUE(st == MF_ERR_INVALID, "%s: expected MF_ERR_INVALID, got %s", what,
                 mf_status_name(st));
    mf_clear_error();
}

static void test_hand_case(mf_ctx *ctx)
{
    /* Row 0: mean 2.5, biased variance (2.25 + 0.25 + 0.25 + 2.25) / 4 = 1.25,
     * rstd = 1 / sqrt(1.25 + 1e-5) = 0.894423613312618;
     * y = (x - 2.5) * rstd * gamma + beta = [-1.5 r, 1 - r, 0.25 r, 0.5 - 1.5 r].
     * Row 1 is constant: variance 0, so rstd = 1 / sqrt(eps) = 316.2277660168379 and y = beta
     * (eps inside the square root keeps it finite). */
    float x[8] = {1, 2, 3, 4, 2, 2, 2, 2};
    float gamma[4] = {1, 2, 0.5f, -1}, beta[4] = {0, 1, 0, 0.5f};
    const double y_hand[8] = {-1.3416354199689269,
                              0.105576386687382,
                              0.2236059033281545,
                              -0.8416354199689269,
                              0,
                              1,
                              0,
                              0.5};
    const double mean_hand[2] = {2.5, 2.0}, rstd_hand[2] = {0.894423613312618, 316.2277660168379};
    float y[8], mean[2], rstd[2];
    mf_tensor tx = mf_tensor_4(x, MF_F32, MF_DEV_CPU, 2, 2, 4, 1, 1);
    mf_tensor ty = mf_tensor_4(y, MF_F32, MF_DEV_CPU, 2, 2, 4, 1, 1);
    mf_tensor tg = mf_tensor_4(gamma, MF_F32, MF_DEV_CPU, 1, 4, 1, 1, 1);
    mf_tensor tb = mf_tensor_4(beta, MF_F32, MF_DEV_CPU, 1, 4, 1, 1, 1);
    mf_tensor tm = mf_tensor_4(mean, MF_F32, MF_DEV_CPU, 1, 2, 1, 1, 1);
    mf_tensor tr = mf_tensor_4(rstd, MF_F32, MF_DEV_CPU, 1, 2, 1, 1, 1);
    MF_TEST_OK(mf_layer_norm_forward(ctx, &ty, &tm, &tr, &tx, &tg, &tb, (float)LN_EPS));
    mf_check_close_f32_f64("hand case: y [2, 4]", y, y_hand, 8, MF_TOL_F32_ATOL, MF_TOL_F32_RTOL);
    mf_check_close_f32_f64("hand case: mean", mean, mean_hand, 2, MF_TOL_F32_ATOL, MF_TOL_F32_RTOL);
    mf_check_close_f32_f64("hand case: rstd (eps inside sqrt)", rstd, rstd_hand, 2, MF_TOL_F32_ATOL,
                           MF_TOL_F32_RTOL);
}

typedef struct {
    double *y, *x, *gamma, *beta;
    int64_t rows, C;
} ln_case;

static void ln_fwd(void *ud)
{
    ln_case *s = ud;
    mf_ref_layer_norm_forward_f64(s->y, NULL, NULL, s->x, s->gamma, s->beta, s->rows, s->C, LN_EPS);
}

/* x scale `sd`: 1 for ordinary rows, ~3e-3 so that the variance is comparable to eps. */
static void test_gradcheck(const char *what, int64_t rows, int64_t C, double sd, uint64_t seed)
{
    int64_t n = rows * C;
    double *x = normal_f64(n, seed, sd, 0.3 * sd);
    double *gamma = normal_f64(C, seed + 1, 0.3, 1.0);
    double *beta = normal_f64(C, seed + 2, 0.5, 0.0);
    double *gy = normal_f64(n, seed + 3, 1.0, 0.0);
    double *y = calloc((size_t)n, sizeof(double)), *mean = calloc((size_t)rows, sizeof(double));
    double *rstd = calloc((size_t)rows, sizeof(double));
    double *dx = calloc((size_t)n, sizeof(double)), *dg = calloc((size_t)C, sizeof(double));
    double *db = calloc((size_t)C, sizeof(double));
    mf_ref_layer_norm_forward_f64(y, mean, rstd, x, gamma, beta, rows, C, LN_EPS);
    mf_ref_layer_norm_backward_f64(dx, dg, db, gy, x, mean, rstd, gamma, rows, C);
    ln_case s = {y, x, gamma, beta, rows, C};
    mf_gc_array in[3] = {{"x", x, n}, {"gamma", gamma, C}, {"beta", beta, C}};
    const double *grads[3] = {dx, dg, db};
    mf_gc_array out[1] = {{"y", y, n}};
    const double *gout[1] = {gy};
    mf_gradcheck(what, ln_fwd, &s, in, grads, 3, out, gout, 1, MF_TOL_FD_STEP, MF_TOL_FD_ATOL,
                 MF_TOL_FD_RTOL, 0);
    free(x), free(gamma), free(beta), free(gy), free(y), free(mean), free(rstd), free(dx);
    free(dg), free(db);
}

static void test_f32_against_f64(mf_ctx *ctx)
{
    const int64_t B = 5, N = 13, C = 67, rows = B * N, n = rows * C;
    double *x = normal_f64(n, 11, 2.0, 0.5), *gamma = normal_f64(C, 12, 0.3, 1.0);
    double *beta = normal_f64(C, 13, 0.5, 0.0), *dy = normal_f64(n, 14, 1.0, 0.0);
    /* Nonzero initial gradients: the backward must add to them. */
    double *dx = normal_f64(n, 15, 1.0, 0.0), *dg = normal_f64(C, 16, 1.0, 0.0);
    double *db = normal_f64(C, 17, 1.0, 0.0);
    float *xf = to_f32(x, n), *gf = to_f32(gamma, C), *bf = to_f32(beta, C), *dyf = to_f32(dy, n);
    float *dxf = to_f32(dx, n), *dgf = to_f32(dg, C), *dbf = to_f32(db, C);
    double *y = malloc(sizeof(double) * n), *mean = malloc(sizeof(double) * rows);
    double *rstd = malloc(sizeof(double) * rows);
    float *yf = malloc(sizeof(float) * n), *meanf = malloc(sizeof(float) * rows);
    float *rstdf = malloc(sizeof(float) * rows);

    mf_ref_layer_norm_forward_f64(y, mean, rstd, x, gamma, beta, rows, C, LN_EPS);
    double *fx = calloc((size_t)n, sizeof(double)), *fg = calloc((size_t)C, sizeof(double));
    double *fb = calloc((size_t)C, sizeof(double));
    mf_ref_layer_norm_backward_f64(fx, fg, fb, dy, x, mean, rstd, gamma, rows, C);
    add_fresh(dx, fx, n), add_fresh(dg, fg, C), add_fresh(db, fb, C);
    free(fx), free(fg), free(fb);

    mf_tensor tx = mf_tensor_4(xf, MF_F32, MF_DEV_CPU, 3, B, N, C, 1);
    mf_tensor ty = mf_tensor_4(yf, MF_F32, MF_DEV_CPU, 3, B, N, C, 1);
    mf_tensor tdy = mf_tensor_4(dyf, MF_F32, MF_DEV_CPU, 3, B, N, C, 1);
    mf_tensor tdx = mf_tensor_4(dxf, MF_F32, MF_DEV_CPU, 3, B, N, C, 1);
    mf_tensor tg = mf_tensor_4(gf, MF_F32, MF_DEV_CPU, 1, C, 1, 1, 1);
    mf_tensor tb = mf_tensor_4(bf, MF_F32, MF_DEV_CPU, 1, C, 1, 1, 1);
    mf_tensor tdg = mf_tensor_4(dgf, MF_F32, MF_DEV_CPU, 1, C, 1, 1, 1);
    mf_tensor tdb = mf_tensor_4(dbf, MF_F32, MF_DEV_CPU, 1, C, 1, 1, 1);
    mf_tensor tm = mf_tensor_4(meanf, MF_F32, MF_DEV_CPU, 2, B, N, 1, 1);
    mf_tensor tr = mf_tensor_4(rstdf, MF_F32, MF_DEV_CPU, 2, B, N, 1, 1);
    MF_TEST_OK(mf_layer_norm_forward(ctx, &ty, &tm, &tr, &tx, &tg, &tb, (float)LN_EPS));
    MF_TEST_OK(mf_layer_norm_backward(ctx, &tdx, &tdg, &tdb, &tdy, &tx, &tm, &tr, &tg));
    mf_check_close_f32_f64("f32 op vs f64 ref: y [5, 13, 67]", yf, y, n, MF_TOL_F32_ATOL,
                           MF_TOL_F32_RTOL);
    mf_check_close_f32_f64("f32 op vs f64 ref: mean", meanf, mean, rows, MF_TOL_F32_ATOL,
                           MF_TOL_F32_RTOL);
    mf_check_close_f32_f64("f32 op vs f64 ref: rstd", rstdf, rstd, rows, MF_TOL_F32_ATOL,
                           MF_TOL_F32_RTOL);
    mf_check_close_f32_f64("f32 op vs f64 ref: dx (accumulated)", dxf, dx, n, MF_TOL_F32_ATOL,
                           MF_TOL_F32_RTOL);
    mf_check_close_f32_f64("f32 op vs f64 ref: dgamma (accumulated)", dgf, dg, C, MF_TOL_F32_ATOL,
                           MF_TOL_F32_RTOL);
    mf_check_close_f32_f64("f32 op vs f64 ref: dbeta (accumulated)", dbf, db, C, MF_TOL_F32_ATOL,
                           MF_TOL_F32_RTOL);

    /* Inference: no statistics saved, same y. */
    float *y2 = malloc(sizeof(float) * n);
    mf_tensor ty2 = mf_tensor_4(y2, MF_F32, MF_DEV_CPU, 3, B, N, C, 1);
    MF_TEST_OK(mf_layer_norm_forward(ctx, &ty2, NULL, NULL, &tx, &tg, &tb, (float)LN_EPS));
    mf_check_bitwise_f32("mean, rstd NULL: y unchanged", y2, yf, n);

    /* y aliasing x: in place gives the same bits. */
    float *xa = malloc(sizeof(float) * n);
    memcpy(xa, xf, sizeof(float) * n);
    mf_tensor txa = mf_tensor_4(xa, MF_F32, MF_DEV_CPU, 3, B, N, C, 1);
    MF_TEST_OK(mf_layer_norm_forward(ctx, &txa, NULL, NULL, &txa, &tg, &tb, (float)LN_EPS));
    mf_check_bitwise_f32("y aliasing x: same as out of place", xa, yf, n);

    free(x), free(gamma), free(beta), free(dy), free(dx), free(dg), free(db), free(xf), free(gf);
    free(bf), free(dyf), free(dxf), free(dgf), free(dbf), free(y), free(mean), free(rstd);
    free(yf), free(meanf), free(rstdf), free(y2), free(xa);
}

/* dgamma/dbeta are reductions over rows: the same bits with 1, 2 and 3 threads. */
static void test_thread_determinism(mf_ctx *ctx)
{
    const int64_t rows = 301, C = 203, n = rows * C;
    double *x = normal_f64(n, 21, 1.0, 0.0), *g = normal_f64(C, 22, 0.3, 1.0);
    double *b = normal_f64(C, 23, 0.5, 0.0), *dy = normal_f64(n, 24, 1.0, 0.0);
    float *xf = to_f32(x, n), *gf = to_f32(g, C), *bf = to_f32(b, C), *dyf = to_f32(dy, n);
    float *mean = malloc(sizeof(float) * rows), *rstd = malloc(sizeof(float) * rows);
    float *y = malloc(sizeof(float) * n), *res[3];
    mf_tensor tx = mf_tensor_4(xf, MF_F32, MF_DEV_CPU, 2, rows, C, 1, 1);
    mf_tensor ty = mf_tensor_4(y, MF_F32, MF_DEV_CPU, 2, rows, C, 1, 1);
    mf_tensor tdy = mf_tensor_4(dyf, MF_F32, MF_DEV_CPU, 2, rows, C, 1, 1);
    mf_tensor tg = mf_tensor_4(gf, MF_F32, MF_DEV_CPU, 1, C, 1, 1, 1);
    mf_tensor tb = mf_tensor_4(bf, MF_F32, MF_DEV_CPU, 1, C, 1, 1, 1);
    mf_tensor tm = mf_tensor_4(mean, MF_F32, MF_DEV_CPU, 1, rows, 1, 1, 1);
    mf_tensor tr = mf_tensor_4(rstd, MF_F32, MF_DEV_CPU, 1, rows, 1, 1, 1);
    MF_TEST_OK(mf_layer_norm_forward(ctx, &ty, &tm, &tr, &tx, &tg, &tb, (float)LN_EPS));
    int saved = omp_get_max_threads();
    for (int t = 0; t < 3; t++) {
        res[t] = calloc((size_t)(n + 2 * C), sizeof(float));
        mf_tensor tdx = mf_tensor_4(res[t], MF_F32, MF_DEV_CPU, 2, rows, C, 1, 1);
        mf_tensor tdg = mf_tensor_4(res[t] + n, MF_F32, MF_DEV_CPU, 1, C, 1, 1, 1);
        mf_tensor tdb = mf_tensor_4(res[t] + n + C, MF_F32, MF_DEV_CPU, 1, C, 1, 1, 1);
        omp_set_num_threads(t + 1);
        MF_TEST_OK(mf_layer_norm_backward(ctx, &tdx, &tdg, &tdb, &tdy, &tx, &tm, &tr, &tg));
    }
    omp_set_num_threads(saved);
    mf_check_bitwise_f32("dx, dgamma, dbeta [301, 203]: 2 threads vs 1", res[1], res[0], n + 2 * C);
    mf_check_bitwise_f32("dx, dgamma, dbeta [301, 203]: 3 threads vs 1", res[2], res[0], n + 2 * C);
    free(x), free(g), free(b), free(dy), free(xf), free(gf), free(bf), free(dyf), free(mean);
    free(rstd), free(y);
    for (int t = 0; t < 3; t++) free(res[t]);
}

static void test_argument_checks(mf_ctx *ctx)
{
    float buf[64] = {0};
    mf_bf16 hbuf[24] = {{0}};
    mf_tensor x = mf_tensor_4(buf, MF_F32, MF_DEV_CPU, 2, 4, 6, 1, 1);
    mf_tensor y = mf_tensor_4(buf + 24, MF_F32, MF_DEV_CPU, 2, 4, 6, 1, 1);
    mf_tensor g6 = mf_tensor_4(buf + 48, MF_F32, MF_DEV_CPU, 1, 6, 1, 1, 1);
    mf_tensor g5 = mf_tensor_4(buf + 48, MF_F32, MF_DEV_CPU, 1, 5, 1, 1, 1);
    mf_tensor m3 = mf_tensor_4(buf + 56, MF_F32, MF_DEV_CPU, 1, 3, 1, 1, 1);
    mf_tensor m4 = mf_tensor_4(buf + 56, MF_F32, MF_DEV_CPU, 1, 4, 1, 1, 1);
    mf_tensor y5 = mf_tensor_4(buf + 24, MF_F32, MF_DEV_CPU, 2, 4, 5, 1, 1);
    mf_tensor xh = mf_tensor_4(hbuf, MF_BF16, MF_DEV_CPU, 2, 4, 6, 1, 1);
    expect_invalid("forward: gamma [5] for C = 6",
                   mf_layer_norm_forward(ctx, &y, NULL, NULL, &x, &g5, &g6, 1e-5f));
    expect_invalid("forward: y [4, 5] for x [4, 6]",
                   mf_layer_norm_forward(ctx, &y5, NULL, NULL, &x, &g6, &g6, 1e-5f));
    expect_invalid("forward: mean [3] for 4 rows",
                   mf_layer_norm_forward(ctx, &y, &m3, NULL, &x, &g6, &g6, 1e-5f));
    expect_invalid("forward: bf16 x",
                   mf_layer_norm_forward(ctx, &y, NULL, NULL, &xh, &g6, &g6, 1e-5f));
    expect_invalid("forward: eps < 0",
                   mf_layer_norm_forward(ctx, &y, NULL, NULL, &x, &g6, &g6, -1e-5f));
    expect_invalid("backward: mean missing",
                   mf_layer_norm_backward(ctx, &y, NULL, NULL, &y, &x, NULL, &m4, &g6));
    expect_invalid("backward: dgamma [5] for C = 6",
                   mf_layer_norm_backward(ctx, NULL, &g5, NULL, &y, &x, &m4, &m4, &g6));
}

int main(void)
{
    mf_ctx ctx;
    mf_arena arena;
    MF_TEST_OK(mf_test_ctx_cpu(&ctx, &arena, (size_t)1 << 20));
    if (mf_test_failures()) return mf_test_finish("test_layer_norm");

    test_hand_case(&ctx);
    test_gradcheck("f64 ref [7, 37], eps 1e-5", 7, 37, 1.0, 1);
    test_gradcheck("f64 ref [5, 19], variance ~ eps", 5, 19, 3e-3, 2);
    test_f32_against_f64(&ctx);
    test_thread_determinism(&ctx);
    test_argument_checks(&ctx);

    mf_test_ctx_free(&ctx, &arena);
    return mf_test_finish("test_layer_norm");
}
