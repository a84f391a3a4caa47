/* Elementwise ops: relu, sigmoid, softplus (forward, backward, numerical stability), add and mul
 * with b broadcast over leading dims, scale, axpy, fill. The double reference's backward against
 * finite differences for every input, the f32 op against the double reference, thread-count
 * independence of the broadcast reduction, and argument checks. (bf16 conversion: test_bf16.) */
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

static float *to_f32(double *p, int64_t n)
{
    float *f = malloc(sizeof(float) * (size_t)(n ? n : 1));
    mf_f64_to_f32(f, p, n);
    mf_f32_to_f64(p, f, n);
    return f;
}

static mf_tensor t1(float *p, int64_t n)
{
    return mf_tensor_4(p, MF_F32, MF_DEV_CPU, 1, n, 1, 1, 1);
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

static const char *act_name[3] = {"relu", "sigmoid", "softplus"};

typedef struct {
    int act;
    double *y, *x;
    int64_t n;
} act_case;

static void act_fwd(void *ud)
{
    act_case *s = ud;
    mf_ref_activation_forward_f64(s->act, s->y, s->x, s->n);
}

static void test_activation(mf_ctx *ctx, int act)
{
    const int64_t n = 211;
    char label[96];
    double *x = normal_f64(n, 100 + act, 3.0);
    /* ReLU has a kink at 0: keep |x| >= 0.1 so the central difference (h = 1e-6) never
     * straddles it. */
    for (int64_t i = 0; i < n; i++) x[i] = x[i] >= 0 ? x[i] + 0.1 : x[i] - 0.1;
    double *gy = normal_f64(n, 200 + act, 1.0), *y = malloc(sizeof(double) * n);
    double *dx = calloc((size_t)n, sizeof(double));
    mf_ref_activation_forward_f64(act, y, x, n);
    mf_ref_activation_backward_f64(act, dx, gy, x, n);
    act_case s = {act, y, x, n};
    mf_gc_array in[1] = {{"x", x, n}};
    const double *grads[1] = {dx};
    mf_gc_array out[1] = {{"y", y, n}};
    const double *gout[1] = {gy};
    snprintf(label, sizeof label, "f64 ref %s [211]", act_name[act]);
    mf_gradcheck(label, act_fwd, &s, in, grads, 1, out, gout, 1, MF_TOL_FD_STEP, MF_TOL_FD_ATOL,
                 MF_TOL_FD_RTOL, 0);

    /* f32 op against the double reference; backward onto a nonzero dx. */
    double *dx0 = normal_f64(n, 300 + act, 1.0);
    float *xf = to_f32(x, n), *gyf = to_f32(gy, n), *dxf = to_f32(dx0, n);
    float *yf = malloc(sizeof(float) * n);
    mf_ref_activation_forward_f64(act, y, x, n);
    memset(dx, 0, sizeof(double) * n);
    mf_ref_activation_backward_f64(act, dx, gy, x, n);
    add_fresh(dx0, dx, n);
    mf_tensor tx = mf_tensor_4(xf, MF_F32, MF_DEV_CPU, 2, 1, n, 1, 1);
    mf_tensor ty = mf_tensor_4(yf, MF_F32, MF_DEV_CPU, 2, 1, n, 1, 1);
    mf_tensor tgy = mf_tensor_4(gyf, MF_F32, MF_DEV_CPU, 2, 1, n, 1, 1);
    mf_tensor tdx = mf_tensor_4(dxf, MF_F32, MF_DEV_CPU, 2, 1, n, 1, 1);
    MF_TEST_OK(mf_activation_forward(ctx, (mf_activation)act, &ty, &tx));
    MF_TEST_OK(mf_activation_backward(ctx, (mf_activation)act, &tdx, &tgy, &tx));
    snprintf(label, sizeof label, "f32 op vs f64 ref: %s y", act_name[act]);
    mf_check_close_f32_f64(label, yf, y, n, MF_TOL_F32_ATOL, MF_TOL_F32_RTOL);
    snprintf(label, sizeof label, "f32 op vs f64 ref: %s dx (accumulated)", act_name[act]);
    mf_check_close_f32_f64(label, dxf, dx0, n, MF_TOL_F32_ATOL, MF_TOL_F32_RTOL);

    /* In place: y aliasing x. */
    MF_TEST_OK(mf_activation_forward(ctx, (mf_activation)act, &tx, &tx));
    snprintf(label, sizeof label, "%s: y aliasing x", act_name[act]);
    mf_check_bitwise_f32(label, xf, yf, n);
    free(x), free(gy), free(y), free(dx), free(dx0), free(xf), free(gyf), free(dxf), free(yf);
}

/* Large |x|: no overflow, NaN or cancellation. Exact values from the definitions:
 * sigmoid(100) = 1, sigmoid(-100) = e^-100, softplus(100) = 100, softplus(-100) = e^-100,
 * sigmoid'(x) = e^-|x| / (1 + e^-|x|)^2. */
static void test_activation_extremes(mf_ctx *ctx)
{
    /* e^-100 = 3.7e-44 is an f32 subnormal with ~5 significant bits: an absolute 1e-40 (far below
     * the smallest normal f32, 1.2e-38) accepts its rounding and still fails on NaN, Inf, or on
     * 1 - s cancelling to 0 for e^-30 = 9.4e-14. */
    const double tol_subnormal = 1e-40;
    float x[4] = {100.0f, -100.0f, 30.0f, -30.0f}, y[4], dx[4], ones[4] = {1, 1, 1, 1};
    const double e100 = exp(-100.0), e30 = exp(-30.0);
    const double sig[4] = {1.0 / (1.0 + e100), e100 / (1.0 + e100), 1.0 / (1.0 + e30),
                           e30 / (1.0 + e30)};
    const double sp[4] = {100.0 + log1p(e100), log1p(e100), 30.0 + log1p(e30), log1p(e30)};
    const double d100 = e100 / ((1 + e100) * (1 + e100)), d30 = e30 / ((1 + e30) * (1 + e30));
    const double dsig[4] = {d100, d100, d30, d30};
    mf_tensor tx = t1(x, 4), ty = t1(y, 4), tdx = t1(dx, 4), tones = t1(ones, 4);
    MF_TEST_OK(mf_activation_forward(ctx, MF_ACT_SIGMOID, &ty, &tx));
    mf_check_close_f32_f64("sigmoid(100, -100, 30, -30)", y, sig, 4, tol_subnormal,
                           MF_TOL_F32_RTOL);
    MF_TEST_OK(mf_activation_forward(ctx, MF_ACT_SOFTPLUS, &ty, &tx));
    mf_check_close_f32_f64("softplus(100, -100, 30, -30)", y, sp, 4, tol_subnormal,
                           MF_TOL_F32_RTOL);
    memset(dx, 0, sizeof dx);
    MF_TEST_OK(mf_activation_backward(ctx, MF_ACT_SIGMOID, &tdx, &tones, &tx));
    mf_check_close_f32_f64("sigmoid'(100, -100, 30, -30)", dx, dsig, 4, tol_subnormal,
                           MF_TOL_F32_RTOL);
    memset(dx, 0, sizeof dx);
    MF_TEST_OK(mf_activation_backward(ctx, MF_ACT_SOFTPLUS, &tdx, &tones, &tx));
    mf_check_close_f32_f64("softplus'(100, -100, 30, -30) = sigmoid", dx, sig, 4, tol_subnormal,
                           MF_TOL_F32_RTOL);
}

typedef struct {
    bool is_mul;
    double *y, *a, *b;
    int64_t n, nb;
} bin_case;

static void bin_fwd(void *ud)
{
    bin_case *s = ud;
    if (s->is_mul)
        mf_ref_mul_f64(s->y, s->a, s->b, s->n, s->nb);
    else
        mf_ref_add_f64(s->y, s->a, s->b, s->n, s->nb);
}

/* a [R, ..., tail], b [tail]: nb = tail elements, repeated n / nb times. */
static void test_binary(mf_ctx *ctx, bool is_mul, int a_ndim, const int64_t *a_shape, int b_ndim,
                        const int64_t *b_shape, uint64_t seed)
{
    mf_tensor ta = mf_tensor_make(NULL, MF_F32, MF_DEV_CPU, a_ndim, a_shape);
    mf_tensor tb = mf_tensor_make(NULL, MF_F32, MF_DEV_CPU, b_ndim, b_shape);
    int64_t n = mf_tensor_numel(&ta), nb = mf_tensor_numel(&tb);
    const char *op = is_mul ? "mul" : "add";
    char shapes[160], label[256], sa[64], sb[64];
    snprintf(shapes, sizeof shapes, "a %s, b %s", mf_tensor_describe(&ta, sa, sizeof sa),
             mf_tensor_describe(&tb, sb, sizeof sb));

    double *a = normal_f64(n, seed, 1.0), *b = normal_f64(nb, seed + 1, 1.0);
    double *gy = normal_f64(n, seed + 2, 1.0), *y = malloc(sizeof(double) * n);
    double *da = calloc((size_t)n, sizeof(double)), *db = calloc((size_t)nb, sizeof(double));
    bin_case s = {is_mul, y, a, b, n, nb};
    bin_fwd(&s);
    if (is_mul)
        mf_ref_mul_backward_f64(da, db, gy, a, b, n, nb);
    else
        mf_ref_add_backward_f64(da, db, gy, n, nb);
    mf_gc_array in[2] = {{"a", a, n}, {"b", b, nb}};
    const double *grads[2] = {da, db};
    mf_gc_array out[1] = {{"y", y, n}};
    const double *gout[1] = {gy};
    snprintf(label, sizeof label, "f64 ref %s %s", op, shapes);
    mf_gradcheck(label, bin_fwd, &s, in, grads, 2, out, gout, 1, MF_TOL_FD_STEP, MF_TOL_FD_ATOL,
                 MF_TOL_FD_RTOL, 0);

    /* f32 op against the double reference, gradients accumulated onto nonzero values. */
    double *da0 = normal_f64(n, seed + 3, 1.0), *db0 = normal_f64(nb, seed + 4, 1.0);
    float *af = to_f32(a, n), *bf = to_f32(b, nb), *gyf = to_f32(gy, n);
    float *daf = to_f32(da0, n), *dbf = to_f32(db0, nb), *yf = malloc(sizeof(float) * n);
    bin_fwd(&s);
    memset(da, 0, sizeof(double) * n);
    memset(db, 0, sizeof(double) * nb);
    if (is_mul)
        mf_ref_mul_backward_f64(da, db, gy, a, b, n, nb);
    else
        mf_ref_add_backward_f64(da, db, gy, n, nb);
    add_fresh(da0, da, n), add_fresh(db0, db, nb);
    ta.data = af;
    tb.data = bf;
    mf_tensor ty = ta, tgy = ta, tda = ta, tdb = tb;
    ty.data = yf, tgy.data = gyf, tda.data = daf, tdb.data = dbf;
    if (is_mul) {
        MF_TEST_OK(mf_mul(ctx, &ty, &ta, &tb));
        MF_TEST_OK(mf_mul_backward(ctx, &tda, &tdb, &tgy, &ta, &tb));
    } else {
        MF_TEST_OK(mf_add(ctx, &ty, &ta, &tb));
        MF_TEST_OK(mf_add_backward(ctx, &tda, &tdb, &tgy));
    }
    snprintf(label, sizeof label, "f32 op vs f64 ref: %s y, %s", op, shapes);
    mf_check_close_f32_f64(label, yf, y, n, MF_TOL_F32_ATOL, MF_TOL_F32_RTOL);
    snprintf(label, sizeof label, "f32 op vs f64 ref: %s da (accumulated)", op);
    mf_check_close_f32_f64(label, daf, da0, n, MF_TOL_F32_ATOL, MF_TOL_F32_RTOL);
    snprintf(label, sizeof label, "f32 op vs f64 ref: %s db (accumulated)", op);
    mf_check_close_f32_f64(label, dbf, db0, nb, MF_TOL_F32_ATOL, MF_TOL_F32_RTOL);

    /* y aliasing a. */
    MF_TEST_OK(is_mul ? mf_mul(ctx, &ta, &ta, &tb) : mf_add(ctx, &ta, &ta, &tb));
    snprintf(label, sizeof label, "%s: y aliasing a", op);
    mf_check_bitwise_f32(label, af, yf, n);
    free(a), free(b), free(gy), free(y), free(da), free(db), free(da0), free(db0), free(af);
    free(bf), free(gyf), free(daf), free(dbf), free(yf);
}

typedef struct {
    double *y, *x, *yin, alpha;
    int64_t n;
    bool axpy;
} lin_case;

static void lin_fwd(void *ud)
{
    lin_case *s = ud;
    if (s->axpy) {
        memcpy(s->y, s->yin, sizeof(double) * (size_t)s->n);
        mf_ref_axpy_f64(s->y, s->alpha, s->x, s->n);
    } else {
        mf_ref_scale_f64(s->y, s->x, s->alpha, s->n);
    }
}

/* scale: y = alpha x, backward dx += alpha dy (an axpy). axpy: y_out = y_in + alpha x, so
 * dy_in += dy and dx += alpha dy. */
static void test_scale_axpy(mf_ctx *ctx)
{
    const int64_t n = 97;
    const double alpha = -0.37;
    double *x = normal_f64(n, 401, 1.0), *yin = normal_f64(n, 402, 1.0);
    double *gy = normal_f64(n, 403, 1.0), *y = malloc(sizeof(double) * n);
    double *dx = calloc((size_t)n, sizeof(double)), *dyin = calloc((size_t)n, sizeof(double));
    lin_case s = {y, x, yin, alpha, n, false};
    mf_ref_axpy_f64(dx, alpha, gy, n);
    mf_gc_array in[2] = {{"x", x, n}, {"y_in", yin, n}};
    const double *grads[2] = {dx, dyin};
    mf_gc_array out[1] = {{"y", y, n}};
    const double *gout[1] = {gy};
    mf_gradcheck("f64 ref scale [97]", lin_fwd, &s, in, grads, 1, out, gout, 1, MF_TOL_FD_STEP,
                 MF_TOL_FD_ATOL, MF_TOL_FD_RTOL, 0);
    s.axpy = true;
    mf_ref_axpy_f64(dyin, 1.0, gy, n);
    mf_gradcheck("f64 ref axpy [97]", lin_fwd, &s, in, grads, 2, out, gout, 1, MF_TOL_FD_STEP,
                 MF_TOL_FD_ATOL, MF_TOL_FD_RTOL, 0);

    float *xf = to_f32(x, n), *yinf = to_f32(yin, n), *yf = malloc(sizeof(float) * n);
    mf_tensor tx = t1(xf, n), ty = t1(yf, n), tyin = t1(yinf, n);
    s.axpy = false;
    lin_fwd(&s);
    MF_TEST_OK(mf_scale(ctx, &ty, &tx, (float)alpha));
    mf_check_close_f32_f64("f32 op vs f64 ref: scale", yf, y, n, MF_TOL_F32_ATOL, MF_TOL_F32_RTOL);
    s.alpha = (float)alpha; /* the f32 op sees alpha rounded to f32 */
    s.axpy = true;
    lin_fwd(&s);
    MF_TEST_OK(mf_axpy(ctx, &tyin, (float)alpha, &tx));
    mf_check_close_f32_f64("f32 op vs f64 ref: axpy", yinf, y, n, MF_TOL_F32_ATOL, MF_TOL_F32_RTOL);
    MF_TEST_OK(mf_fill(ctx, &ty, 2.5f));
    double *ref = malloc(sizeof(double) * n);
    for (int64_t i = 0; i < n; i++) ref[i] = 2.5;
    mf_check_close_f32_f64("fill 2.5", yf, ref, n, 0, 0);
    free(x), free(yin), free(gy), free(y), free(dx), free(dyin), free(xf), free(yinf), free(yf);
    free(ref);
}

/* db is a reduction over the broadcast rows: the same bits with 1, 2 and 3 threads. */
static void test_thread_determinism(mf_ctx *ctx)
{
    const int64_t R = 1001, C = 259, n = R * C;
    double *a = normal_f64(n, 501, 1.0), *dy = normal_f64(n, 502, 1.0);
    double *b = normal_f64(C, 503, 1.0);
    float *af = to_f32(a, n), *dyf = to_f32(dy, n), *bf = to_f32(b, C), *res[3];
    mf_tensor ta = mf_tensor_4(af, MF_F32, MF_DEV_CPU, 2, R, C, 1, 1);
    mf_tensor tdy = mf_tensor_4(dyf, MF_F32, MF_DEV_CPU, 2, R, C, 1, 1);
    mf_tensor tb = t1(bf, C);
    int saved = omp_get_max_threads();
    for (int t = 0; t < 3; t++) {
        res[t] = calloc((size_t)(2 * C), sizeof(float));
        mf_tensor tdb_add = t1(res[t], C), tdb_mul = t1(res[t] + C, C);
        omp_set_num_threads(t + 1);
        MF_TEST_OK(mf_add_backward(ctx, NULL, &tdb_add, &tdy));
        MF_TEST_OK(mf_mul_backward(ctx, NULL, &tdb_mul, &tdy, &ta, &tb));
    }
    omp_set_num_threads(saved);
    mf_check_bitwise_f32("add/mul db (sum over 1001 rows): 2 threads vs 1", res[1], res[0], 2 * C);
    mf_check_bitwise_f32("add/mul db (sum over 1001 rows): 3 threads vs 1", res[2], res[0], 2 * C);
    free(a), free(dy), free(b), free(af), free(dyf), free(bf);
    for (int t = 0; t < 3; t++) free(res[t]);
}

static void test_argument_checks(mf_ctx *ctx)
{
    float buf[64] = {0};
    mf_tensor a = mf_tensor_4(buf, MF_F32, MF_DEV_CPU, 2, 4, 6, 1, 1);
    mf_tensor b4 = t1(buf + 24, 4), b5 = t1(buf + 24, 5), y5 = t1(buf + 30, 5);
    mf_tensor i6 = mf_tensor_4(buf + 24, MF_I32, MF_DEV_CPU, 1, 6, 1, 1, 1);
    expect_invalid("add: b [5] does not divide a [4, 6]", mf_add(ctx, &a, &a, &b5));
    expect_invalid("mul: b [4] is not a's trailing dims [4, 6]", mf_mul(ctx, &a, &a, &b4));
    expect_invalid("add: i32 b", mf_add(ctx, &a, &a, &i6));
    expect_invalid("scale: y [5] for x [4, 6]", mf_scale(ctx, &y5, &a, 2.0f));
    expect_invalid("activation: unknown kind 7", mf_activation_forward(ctx, 7, &a, &a));
    expect_invalid("add_backward: db [5] for dy [4, 6]", mf_add_backward(ctx, NULL, &b5, &a));
}

int main(void)
{
    mf_ctx ctx;
    mf_arena arena;
    MF_TEST_OK(mf_test_ctx_cpu(&ctx, &arena, (size_t)1 << 20));
    if (mf_test_failures()) return mf_test_finish("test_elementwise");

    for (int act = 0; act < 3; act++) test_activation(&ctx, act);
    test_activation_extremes(&ctx);
    const int64_t s713[2] = {7, 13}, s13[1] = {13}, s3511[3] = {3, 5, 11}, s511[2] = {5, 11};
    const int64_t s1[1] = {1};
    test_binary(&ctx, false, 2, s713, 1, s13, 600);
    test_binary(&ctx, true, 2, s713, 1, s13, 610);
    test_binary(&ctx, false, 3, s3511, 2, s511, 620);
    test_binary(&ctx, true, 3, s3511, 2, s511, 630);
    test_binary(&ctx, false, 3, s3511, 3, s3511, 640);
    test_binary(&ctx, true, 3, s3511, 3, s3511, 650);
    test_binary(&ctx, true, 2, s713, 1, s1, 660);
    test_scale_axpy(&ctx);
    test_thread_determinism(&ctx);
    test_argument_checks(&ctx);

    mf_test_ctx_free(&ctx, &arena);
    return mf_test_finish("test_elementwise");
}
