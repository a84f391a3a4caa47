/* Softmax over the last dim of [B, H, Q, K] logits with a bias [H, Q, K] shared over B and AF2's
 * additive key mask 1e9 * (mask[b, k] - 1): the double reference's backward against finite
 * differences (logits and bias), the f32 op against the double reference, rows summing to 1,
 * masked keys at zero probability, bias broadcast over B, large logits, aliasing, thread-count
 * independence of dbias, and argument checks. */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "core/ref/ref.h"
#include "tests/support/mf_test.h"

/* A masked key's logit is ~ -1e9 below the row max, and expf(-1e9) underflows to exactly 0 in f32;
 * any larger probability means the mask was not applied. */
#define TOL_MASKED_PROB 1e-30

static double *normal_f64(int64_t n, uint64_t seed, double sd)
{
    double *p = malloc(sizeof(double) * (size_t)(n ? n : 1));
    mf_test_fill_normal_f64(p, n, seed, sd);
    return p;
}

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

typedef struct {
    double *y, *x, *bias, *mask;
    int64_t B, H, Q, K;
} sm_case;

static void sm_fwd(void *ud)
{
    sm_case *s = ud;
    mf_ref_softmax_forward_f64(s->y, s->x, s->bias, s->mask, s->B, s->H, s->Q, s->K);
}

static void test_gradcheck(const char *what, int64_t B, int64_t H, int64_t Q, int64_t K,
                           bool with_bias, bool with_mask, uint64_t seed)
{
    int64_t n = B * H * Q * K, nb = H * Q * K;
    double *x = normal_f64(n, seed, 1.5), *bias = with_bias ? normal_f64(nb, seed + 1, 1.0) : NULL;
    double *mask = NULL;
    if (with_mask) {
        mask = malloc(sizeof(double) * (size_t)(B * K));
        mf_test_fill_mask_f64(mask, B, K, seed + 2, 0.7);
    }
    double *gy = normal_f64(n, seed + 3, 1.0), *y = calloc((size_t)n, sizeof(double));
    double *dx = calloc((size_t)n, sizeof(double)), *dbias = calloc((size_t)nb, sizeof(double));
    mf_ref_softmax_forward_f64(y, x, bias, mask, B, H, Q, K);
    mf_ref_softmax_backward_f64(dx, with_bias ? dbias : NULL, gy, y, B, H, Q, K);
    sm_case s = {y, x, bias, mask, B, H, Q, K};
    mf_gc_array in[2] = {{"x", x, n}, {"bias", bias, nb}};
    const double *grads[2] = {dx, dbias};
    mf_gc_array out[1] = {{"y", y, n}};
    const double *gout[1] = {gy};
    mf_gradcheck(what, sm_fwd, &s, in, grads, with_bias ? 2 : 1, out, gout, 1, MF_TOL_FD_STEP,
                 MF_TOL_FD_ATOL, MF_TOL_FD_RTOL, 0);
    free(x), free(bias), free(mask), free(gy), free(y), free(dx), free(dbias);
}

static void test_f32_against_f64(mf_ctx *ctx)
{
    const int64_t B = 3, H = 4, Q = 9, K = 33, n = B * H * Q * K, nb = H * Q * K;
    double *x = normal_f64(n, 31, 2.0), *bias = normal_f64(nb, 32, 1.0);
    double *dy = normal_f64(n, 33, 1.0), *dx = normal_f64(n, 34, 1.0);
    double *dbias = normal_f64(nb, 35, 1.0), *mask = malloc(sizeof(double) * B * K);
    mf_test_fill_mask_f64(mask, B, K, 36, 0.6);
    double *y = malloc(sizeof(double) * n);
    float *xf = to_f32(x, n), *bf = to_f32(bias, nb), *dyf = to_f32(dy, n);
    float *dxf = to_f32(dx, n), *dbf = to_f32(dbias, nb), *mf = to_f32(mask, B * K);
    float *yf = malloc(sizeof(float) * n);
    mf_ref_softmax_forward_f64(y, x, bias, mask, B, H, Q, K);
    double *fx = calloc((size_t)n, sizeof(double)), *fb = calloc((size_t)nb, sizeof(double));
    mf_ref_softmax_backward_f64(fx, fb, dy, y, B, H, Q, K);
    add_fresh(dx, fx, n), add_fresh(dbias, fb, nb);
    free(fx), free(fb);

    mf_tensor tx = mf_tensor_4(xf, MF_F32, MF_DEV_CPU, 4, B, H, Q, K);
    mf_tensor ty = mf_tensor_4(yf, MF_F32, MF_DEV_CPU, 4, B, H, Q, K);
    mf_tensor tdy = mf_tensor_4(dyf, MF_F32, MF_DEV_CPU, 4, B, H, Q, K);
    mf_tensor tdx = mf_tensor_4(dxf, MF_F32, MF_DEV_CPU, 4, B, H, Q, K);
    mf_tensor tb = mf_tensor_4(bf, MF_F32, MF_DEV_CPU, 3, H, Q, K, 1);
    mf_tensor tdb = mf_tensor_4(dbf, MF_F32, MF_DEV_CPU, 3, H, Q, K, 1);
    mf_tensor tm = mf_tensor_4(mf, MF_F32, MF_DEV_CPU, 2, B, K, 1, 1);
    MF_TEST_OK(mf_softmax_forward(ctx, &ty, &tx, &tb, &tm));
    MF_TEST_OK(mf_softmax_backward(ctx, &tdx, &tdb, &tdy, &ty));
    mf_check_close_f32_f64("f32 op vs f64 ref: y [3, 4, 9, 33] bias+mask", yf, y, n,
                           MF_TOL_F32_ATOL, MF_TOL_F32_RTOL);
    mf_check_close_f32_f64("f32 op vs f64 ref: dx (accumulated)", dxf, dx, n, MF_TOL_F32_ATOL,
                           MF_TOL_F32_RTOL);
    mf_check_close_f32_f64("f32 op vs f64 ref: dbias (accumulated)", dbf, dbias, nb,
                           MF_TOL_F32_ATOL, MF_TOL_F32_RTOL);

    /* Every row sums to 1; masked keys get zero probability. */
    int64_t rows = B * H * Q, nmasked = 0;
    double *ones = malloc(sizeof(double) * rows), *zeros = calloc((size_t)n, sizeof(double));
    float *sums = malloc(sizeof(float) * rows), *masked = malloc(sizeof(float) * n);
    for (int64_t r = 0; r < rows; r++) {
        double s = 0;
        for (int64_t k = 0; k < K; k++) s += yf[r * K + k];
        sums[r] = (float)s;
        ones[r] = 1.0;
        int64_t b = r / (H * Q);
        for (int64_t k = 0; k < K; k++)
            if (mf[b * K + k] == 0.0f) masked[nmasked++] = yf[r * K + k];
    }
    mf_check_close_f32_f64("rows of y sum to 1", sums, ones, rows, MF_TOL_F32_ATOL, 0);
    MF_TEST_TRUE(nmasked > 0, "the mask has no zeros: the masking check would be empty");
    mf_check_close_f32_f64("masked keys: probability 0", masked, zeros, nmasked, TOL_MASKED_PROB,
                           0);

    /* y aliasing x gives the same bits. */
    float *xa = malloc(sizeof(float) * n);
    memcpy(xa, xf, sizeof(float) * n);
    mf_tensor txa = mf_tensor_4(xa, MF_F32, MF_DEV_CPU, 4, B, H, Q, K);
    MF_TEST_OK(mf_softmax_forward(ctx, &txa, &txa, &tb, &tm));
    mf_check_bitwise_f32("y aliasing x: same as out of place", xa, yf, n);

    free(x), free(bias), free(dy), free(dx), free(dbias), free(mask), free(y), free(xf), free(bf);
    free(dyf), free(dxf), free(dbf), free(mf), free(yf), free(ones), free(zeros), free(sums);
    free(masked), free(xa);
}

/* The bias [H, Q, K] applies to every b: softmax(x, bias) equals softmax(x + bias[b-independent])
 * computed without a bias, bit for bit (the same additions in the same order). */
static void test_bias_broadcast(mf_ctx *ctx)
{
    const int64_t B = 4, H = 3, Q = 5, K = 7, n = B * H * Q * K, nb = H * Q * K;
    double *x = normal_f64(n, 41, 1.0), *bias = normal_f64(nb, 42, 2.0);
    float *xf = to_f32(x, n), *bf = to_f32(bias, nb), *y1 = malloc(sizeof(float) * n);
    float *xb = malloc(sizeof(float) * n), *y2 = malloc(sizeof(float) * n);
    for (int64_t i = 0; i < n; i++) xb[i] = xf[i] + bf[i % nb];
    mf_tensor tx = mf_tensor_4(xf, MF_F32, MF_DEV_CPU, 4, B, H, Q, K);
    mf_tensor txb = mf_tensor_4(xb, MF_F32, MF_DEV_CPU, 4, B, H, Q, K);
    mf_tensor ty1 = mf_tensor_4(y1, MF_F32, MF_DEV_CPU, 4, B, H, Q, K);
    mf_tensor ty2 = mf_tensor_4(y2, MF_F32, MF_DEV_CPU, 4, B, H, Q, K);
    mf_tensor tb = mf_tensor_4(bf, MF_F32, MF_DEV_CPU, 3, H, Q, K, 1);
    MF_TEST_OK(mf_softmax_forward(ctx, &ty1, &tx, &tb, NULL));
    MF_TEST_OK(mf_softmax_forward(ctx, &ty2, &txb, NULL, NULL));
    mf_check_bitwise_f32("bias [3, 5, 7] broadcast over B = 4", y1, y2, n);

    /* Logits of magnitude 1e4: the row max is subtracted, nothing overflows. Shifting every
     * logit of a row by a constant leaves the softmax unchanged. */
    float *big = malloc(sizeof(float) * n), *ybig = malloc(sizeof(float) * n);
    double *yref = malloc(sizeof(double) * n);
    for (int64_t i = 0; i < n; i++) big[i] = xf[i] + 1.0e4f;
    mf_tensor tbig = mf_tensor_4(big, MF_F32, MF_DEV_CPU, 4, B, H, Q, K);
    mf_tensor tybig = mf_tensor_4(ybig, MF_F32, MF_DEV_CPU, 4, B, H, Q, K);
    MF_TEST_OK(mf_softmax_forward(ctx, &tybig, &tbig, NULL, NULL));
    mf_f32_to_f64(x, big, n);
    for (int64_t i = 0; i < n; i++) x[i] -= 1.0e4;
    mf_ref_softmax_forward_f64(yref, x, NULL, NULL, B, H, Q, K);
    mf_check_close_f32_f64("logits + 1e4: finite, equal to the shifted softmax", ybig, yref, n,
                           MF_TOL_F32_ATOL, MF_TOL_F32_RTOL);
    free(x), free(bias), free(xf), free(bf), free(y1), free(xb), free(y2), free(big), free(ybig);
    free(yref);
}

static void test_thread_determinism(mf_ctx *ctx)
{
    const int64_t B = 17, H = 3, Q = 11, K = 29, n = B * H * Q * K, nb = H * Q * K;
    double *x = normal_f64(n, 51, 1.0), *dy = normal_f64(n, 52, 1.0);
    float *xf = to_f32(x, n), *dyf = to_f32(dy, n), *y = malloc(sizeof(float) * n), *res[3];
    mf_tensor tx = mf_tensor_4(xf, MF_F32, MF_DEV_CPU, 4, B, H, Q, K);
    mf_tensor ty = mf_tensor_4(y, MF_F32, MF_DEV_CPU, 4, B, H, Q, K);
    mf_tensor tdy = mf_tensor_4(dyf, MF_F32, MF_DEV_CPU, 4, B, H, Q, K);
    MF_TEST_OK(mf_softmax_forward(ctx, &ty, &tx, NULL, NULL));
    int saved = omp_get_max_threads();
    for (int t = 0; t < 3; t++) {
        res[t] = calloc((size_t)(n + nb), sizeof(float));
        mf_tensor tdx = mf_tensor_4(res[t], MF_F32, MF_DEV_CPU, 4, B, H, Q, K);
        mf_tensor tdb = mf_tensor_4(res[t] + n, MF_F32, MF_DEV_CPU, 3, H, Q, K, 1);
        omp_set_num_threads(t + 1);
        MF_TEST_OK(mf_softmax_backward(ctx, &tdx, &tdb, &tdy, &ty));
    }
    omp_set_num_threads(saved);
    mf_check_bitwise_f32("dx, dbias (sum over B = 17): 2 threads vs 1", res[1], res[0], n + nb);
    mf_check_bitwise_f32("dx, dbias (sum over B = 17): 3 threads vs 1", res[2], res[0], n + nb);
    free(x), free(dy), free(xf), free(dyf), free(y);
    for (int t = 0; t < 3; t++) free(res[t]);
}

static void test_argument_checks(mf_ctx *ctx)
{
    float buf[256] = {0};
    mf_tensor x = mf_tensor_4(buf, MF_F32, MF_DEV_CPU, 4, 2, 3, 4, 5);
    mf_tensor x3 = mf_tensor_4(buf, MF_F32, MF_DEV_CPU, 3, 6, 4, 5, 1);
    mf_tensor bias_bad = mf_tensor_4(buf + 120, MF_F32, MF_DEV_CPU, 3, 3, 5, 4, 1);
    mf_tensor mask_bad = mf_tensor_4(buf + 120, MF_F32, MF_DEV_CPU, 2, 2, 4, 1, 1);
    expect_invalid("forward: 3-D logits", mf_softmax_forward(ctx, &x3, &x3, NULL, NULL));
    expect_invalid("forward: bias [3, 5, 4] for [2, 3, 4, 5]",
                   mf_softmax_forward(ctx, &x, &x, &bias_bad, NULL));
    expect_invalid("forward: mask [2, 4] for K = 5",
                   mf_softmax_forward(ctx, &x, &x, NULL, &mask_bad));
    expect_invalid("backward: dbias [3, 5, 4] for [2, 3, 4, 5]",
                   mf_softmax_backward(ctx, NULL, &bias_bad, &x, &x));
}

int main(void)
{
    mf_ctx ctx;
    mf_arena arena;
    MF_TEST_OK(mf_test_ctx_cpu(&ctx, &arena, (size_t)1 << 20));
    if (mf_test_failures()) return mf_test_finish("test_softmax");

    test_gradcheck("f64 ref [2, 3, 5, 7] bias+mask", 2, 3, 5, 7, true, true, 1);
    test_gradcheck("f64 ref [3, 2, 3, 11] no bias/mask", 3, 2, 3, 11, false, false, 2);
    test_f32_against_f64(&ctx);
    test_bias_broadcast(&ctx);
    test_thread_determinism(&ctx);
    test_argument_checks(&ctx);

    mf_test_ctx_free(&ctx, &arena);
    return mf_test_finish("test_softmax");
}
