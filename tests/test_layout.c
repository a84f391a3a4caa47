/* Layout, reduction and indexing ops: transpose01 (with accumulate), sum_axis (sum and mean),
 * gather_rows and scatter_add_rows (negative = padding, repeated indices, out-of-range indices
 * rejected before anything is written). The double reference's backward against finite
 * differences, the f32 op against the double reference, thread-count independence of the
 * reductions and of scatters with repeated indices, and argument checks. */
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

/* ---- transpose01 ---- */

typedef struct {
    double *y, *x;
    int64_t A, B, C;
} tr_case;

static void tr_fwd(void *ud)
{
    tr_case *s = ud;
    mf_ref_transpose01_f64(s->y, s->x, s->A, s->B, s->C, false);
}

static void test_transpose(mf_ctx *ctx)
{
    const int64_t A = 3, B = 5, C = 7, n = A * B * C;
    double *x = normal_f64(n, 1, 1.0), *gy = normal_f64(n, 2, 1.0);
    double *y = malloc(sizeof(double) * n), *dx = calloc((size_t)n, sizeof(double));
    mf_ref_transpose01_f64(dx, gy, B, A, C, true); /* its own backward */
    tr_case s = {y, x, A, B, C};
    mf_gc_array in[1] = {{"x", x, n}};
    const double *grads[1] = {dx};
    mf_gc_array out[1] = {{"y", y, n}};
    const double *gout[1] = {gy};
    mf_gradcheck("f64 ref transpose01 [3, 5, 7]", tr_fwd, &s, in, grads, 1, out, gout, 1,
                 MF_TOL_FD_STEP, MF_TOL_FD_ATOL, MF_TOL_FD_RTOL, 0);

    /* The f32 op: overwrite, then accumulate onto nonzero values; and index by index. */
    double *y0 = normal_f64(n, 3, 1.0);
    float *xf = to_f32(x, n), *yf = malloc(sizeof(float) * n), *yacc = to_f32(y0, n);
    mf_tensor tx = mf_tensor_4(xf, MF_F32, MF_DEV_CPU, 3, A, B, C, 1);
    mf_tensor ty = mf_tensor_4(yf, MF_F32, MF_DEV_CPU, 3, B, A, C, 1);
    mf_tensor tyacc = mf_tensor_4(yacc, MF_F32, MF_DEV_CPU, 3, B, A, C, 1);
    MF_TEST_OK(mf_transpose01(ctx, &ty, &tx, false));
    MF_TEST_OK(mf_transpose01(ctx, &tyacc, &tx, true));
    double *want = malloc(sizeof(double) * n);
    for (int64_t a = 0; a < A; a++)
        for (int64_t b = 0; b < B; b++)
            for (int64_t c = 0; c < C; c++) want[(b * A + a) * C + c] = x[(a * B + b) * C + c];
    mf_check_close_f32_f64("transpose01 f32: y[b, a, c] = x[a, b, c]", yf, want, n, 0, 0);
    for (int64_t i = 0; i < n; i++) want[i] += y0[i];
    mf_check_close_f32_f64("transpose01 f32 accumulate: y += x^T", yacc, want, n, MF_TOL_F32_ATOL,
                           MF_TOL_F32_RTOL);
    free(x), free(gy), free(y), free(dx), free(y0), free(xf), free(yf), free(yacc), free(want);
}

/* ---- sum_axis ---- */

typedef struct {
    double *y, *x, scale;
    int64_t outer, n, inner;
} sum_case;

static void sum_fwd(void *ud)
{
    sum_case *s = ud;
    mf_ref_sum_axis_f64(s->y, s->x, s->outer, s->n, s->inner, s->scale);
}

static void test_sum_axis(mf_ctx *ctx, int64_t outer, int64_t n, int64_t inner, bool mean)
{
    char label[160];
    const int64_t nx = outer * n * inner, ny = outer * inner;
    const double scale = mean ? 1.0 / (double)n : 1.0;
    double *x = normal_f64(nx, 10 + n, 1.0), *gy = normal_f64(ny, 11 + n, 1.0);
    double *y = malloc(sizeof(double) * ny), *dx = calloc((size_t)nx, sizeof(double));
    mf_ref_sum_axis_backward_f64(dx, gy, outer, n, inner, scale);
    sum_case s = {y, x, scale, outer, n, inner};
    mf_gc_array in[1] = {{"x", x, nx}};
    const double *grads[1] = {dx};
    mf_gc_array out[1] = {{"y", y, ny}};
    const double *gout[1] = {gy};
    snprintf(label, sizeof label, "f64 ref sum_axis [%lld, %lld, %lld]%s", (long long)outer,
             (long long)n, (long long)inner, mean ? " mean" : "");
    mf_gradcheck(label, sum_fwd, &s, in, grads, 1, out, gout, 1, MF_TOL_FD_STEP, MF_TOL_FD_ATOL,
                 MF_TOL_FD_RTOL, 0);

    /* The f32 op against the double reference (scale rounded to f32 as the op sees it). */
    s.scale = (float)scale;
    sum_fwd(&s);
    double *dx0 = normal_f64(nx, 12 + n, 1.0);
    float *xf = to_f32(x, nx), *gyf = to_f32(gy, ny), *dxf = to_f32(dx0, nx);
    float *yf = malloc(sizeof(float) * ny);
    memset(dx, 0, sizeof(double) * nx);
    mf_ref_sum_axis_backward_f64(dx, gy, outer, n, inner, s.scale);
    add_fresh(dx0, dx, nx);
    mf_tensor tx = mf_tensor_4(xf, MF_F32, MF_DEV_CPU, 3, outer, n, inner, 1);
    mf_tensor tdx = mf_tensor_4(dxf, MF_F32, MF_DEV_CPU, 3, outer, n, inner, 1);
    mf_tensor ty = mf_tensor_4(yf, MF_F32, MF_DEV_CPU, 2, outer, inner, 1, 1);
    mf_tensor tgy = mf_tensor_4(gyf, MF_F32, MF_DEV_CPU, 2, outer, inner, 1, 1);
    MF_TEST_OK(mf_sum_axis(ctx, &ty, &tx, (float)scale));
    MF_TEST_OK(mf_sum_axis_backward(ctx, &tdx, &tgy, (float)scale));
    snprintf(label, sizeof label, "f32 op vs f64 ref: sum_axis y%s", mean ? " (mean)" : "");
    mf_check_close_f32_f64(label, yf, y, ny, MF_TOL_F32_ATOL, MF_TOL_F32_RTOL);
    snprintf(label, sizeof label, "f32 op vs f64 ref: sum_axis dx (accumulated)%s",
             mean ? " (mean)" : "");
    mf_check_close_f32_f64(label, dxf, dx0, nx, MF_TOL_F32_ATOL, MF_TOL_F32_RTOL);
    free(x), free(gy), free(y), free(dx), free(dx0), free(xf), free(gyf), free(dxf), free(yf);
}

/* ---- gather / scatter ---- */

typedef struct {
    double *y, *x;
    const int32_t *idx;
    int64_t m, C;
} gs_case;

static void gs_fwd(void *ud)
{
    gs_case *s = ud;
    mf_ref_gather_rows_f64(s->y, s->x, s->idx, s->m, s->C);
}

typedef struct {
    double *dx_out, *dx_in, *dy;
    const int32_t *idx;
    int64_t n, m, C;
} sc_case;

static void sc_fwd(void *ud)
{
    sc_case *s = ud;
    memcpy(s->dx_out, s->dx_in, sizeof(double) * (size_t)(s->n * s->C));
    mf_ref_scatter_add_rows_f64(s->dx_out, s->dy, s->idx, s->m, s->C);
}

static void test_gather_scatter(mf_ctx *ctx)
{
    /* 9 source rows, 13 gathered rows with repeats (2, 5 twice) and padding (-1). */
    const int64_t n = 9, m = 13, C = 67;
    const int32_t idx[13] = {2, 0, 5, -1, 8, 2, 3, 5, 7, -1, 1, 2, 6};
    double *x = normal_f64(n * C, 21, 1.0), *gy = normal_f64(m * C, 22, 1.0);
    double *y = malloc(sizeof(double) * m * C), *dx = calloc((size_t)(n * C), sizeof(double));
    mf_ref_scatter_add_rows_f64(dx, gy, idx, m, C);
    gs_case g = {y, x, idx, m, C};
    mf_gc_array in[1] = {{"x", x, n * C}};
    const double *grads[1] = {dx};
    mf_gc_array out[1] = {{"y", y, m * C}};
    const double *gout[1] = {gy};
    mf_gradcheck("f64 ref gather_rows [9, 67] -> [13, 67]", gs_fwd, &g, in, grads, 1, out, gout, 1,
                 MF_TOL_FD_STEP, MF_TOL_FD_ATOL, MF_TOL_FD_RTOL, 0);

    /* scatter_add: dx_out = dx_in + scatter(dy); d/d dy is a gather, d/d dx_in the identity. */
    double *dy = normal_f64(m * C, 23, 1.0), *dx_in = normal_f64(n * C, 24, 1.0);
    double *dx_out = malloc(sizeof(double) * n * C), *g_out = normal_f64(n * C, 25, 1.0);
    double *ddy = calloc((size_t)(m * C), sizeof(double)), *ddx_in = malloc(sizeof(double) * n * C);
    mf_ref_gather_rows_f64(ddy, g_out, idx, m, C);
    memcpy(ddx_in, g_out, sizeof(double) * n * C);
    sc_case sc = {dx_out, dx_in, dy, idx, n, m, C};
    mf_gc_array sin[2] = {{"dy", dy, m * C}, {"dx_in", dx_in, n * C}};
    const double *sgrads[2] = {ddy, ddx_in};
    mf_gc_array sout[1] = {{"dx_out", dx_out, n * C}};
    const double *sgout[1] = {g_out};
    mf_gradcheck("f64 ref scatter_add_rows [13, 67] -> [9, 67]", sc_fwd, &sc, sin, sgrads, 2, sout,
                 sgout, 1, MF_TOL_FD_STEP, MF_TOL_FD_ATOL, MF_TOL_FD_RTOL, 0);

    /* The f32 ops against the double reference. */
    float *xf = to_f32(x, n * C), *dyf = to_f32(dy, m * C), *dxf = to_f32(dx_in, n * C);
    float *yf = malloc(sizeof(float) * m * C);
    int32_t idxc[13];
    memcpy(idxc, idx, sizeof idx);
    mf_ref_gather_rows_f64(y, x, idx, m, C);
    sc_fwd(&sc);
    mf_tensor tx = mf_tensor_4(xf, MF_F32, MF_DEV_CPU, 2, n, C, 1, 1);
    mf_tensor ty = mf_tensor_4(yf, MF_F32, MF_DEV_CPU, 2, m, C, 1, 1);
    mf_tensor tdx = mf_tensor_4(dxf, MF_F32, MF_DEV_CPU, 2, n, C, 1, 1);
    mf_tensor tdy = mf_tensor_4(dyf, MF_F32, MF_DEV_CPU, 2, m, C, 1, 1);
    mf_tensor tidx = mf_tensor_4(idxc, MF_I32, MF_DEV_CPU, 1, m, 1, 1, 1);
    for (int64_t i = 0; i < m * C; i++) yf[i] = NAN; /* padding rows must be written as 0 */
    MF_TEST_OK(mf_gather_rows(ctx, &ty, &tx, &tidx));
    MF_TEST_OK(mf_scatter_add_rows(ctx, &tdx, &tdy, &tidx));
    mf_check_close_f32_f64("gather_rows f32 (repeats, padding rows = 0)", yf, y, m * C, 0, 0);
    mf_check_close_f32_f64("f32 op vs f64 ref: scatter_add_rows (repeats)", dxf, dx_out, n * C,
                           MF_TOL_F32_ATOL, MF_TOL_F32_RTOL);

    /* Out-of-range index: MF_ERR_INVALID and nothing written. */
    float *before = malloc(sizeof(float) * n * C);
    memcpy(before, dxf, sizeof(float) * n * C);
    idxc[7] = (int32_t)n;
    expect_invalid("gather_rows: idx[7] = 9 for 9 rows", mf_gather_rows(ctx, &ty, &tx, &tidx));
    expect_invalid("scatter_add_rows: idx[7] = 9 for 9 rows",
                   mf_scatter_add_rows(ctx, &tdx, &tdy, &tidx));
    mf_check_bitwise_f32("scatter_add_rows: dx untouched after the error", dxf, before, n * C);

    /* Repeated indices: the same bits with 1, 2 and 3 threads. */
    memcpy(idxc, idx, sizeof idx);
    const int64_t C2 = 301;
    double *dy2 = normal_f64(m * C2, 26, 1.0);
    float *dy2f = to_f32(dy2, m * C2), *res[3];
    mf_tensor tdy2 = mf_tensor_4(dy2f, MF_F32, MF_DEV_CPU, 2, m, C2, 1, 1);
    int saved = omp_get_max_threads();
    for (int t = 0; t < 3; t++) {
        res[t] = calloc((size_t)(n * C2), sizeof(float));
        mf_tensor tdx2 = mf_tensor_4(res[t], MF_F32, MF_DEV_CPU, 2, n, C2, 1, 1);
        omp_set_num_threads(t + 1);
        MF_TEST_OK(mf_scatter_add_rows(ctx, &tdx2, &tdy2, &tidx));
    }
    omp_set_num_threads(saved);
    mf_check_bitwise_f32("scatter_add_rows [13, 301] repeats: 2 threads vs 1", res[1], res[0],
                         n * C2);
    mf_check_bitwise_f32("scatter_add_rows [13, 301] repeats: 3 threads vs 1", res[2], res[0],
                         n * C2);
    for (int t = 0; t < 3; t++) free(res[t]);
    free(x), free(gy), free(y), free(dx), free(dy), free(dx_in), free(dx_out), free(g_out);
    free(ddy), free(ddx_in), free(xf), free(dyf), free(dxf), free(yf), free(before), free(dy2);
    free(dy2f);
}

static void test_sum_determinism(mf_ctx *ctx)
{
    const int64_t outer = 3, n = 517, inner = 131, nx = outer * n * inner;
    double *x = normal_f64(nx, 31, 1.0);
    float *xf = to_f32(x, nx), *res[3];
    mf_tensor tx = mf_tensor_4(xf, MF_F32, MF_DEV_CPU, 3, outer, n, inner, 1);
    int saved = omp_get_max_threads();
    for (int t = 0; t < 3; t++) {
        res[t] = malloc(sizeof(float) * outer * inner);
        mf_tensor ty = mf_tensor_4(res[t], MF_F32, MF_DEV_CPU, 2, outer, inner, 1, 1);
        omp_set_num_threads(t + 1);
        MF_TEST_OK(mf_sum_axis(ctx, &ty, &tx, 1.0f));
    }
    omp_set_num_threads(saved);
    mf_check_bitwise_f32("sum_axis [3, 517, 131]: 2 threads vs 1", res[1], res[0], outer * inner);
    mf_check_bitwise_f32("sum_axis [3, 517, 131]: 3 threads vs 1", res[2], res[0], outer * inner);
    for (int t = 0; t < 3; t++) free(res[t]);
    free(x), free(xf);
}

static void test_argument_checks(mf_ctx *ctx)
{
    float buf[128] = {0};
    int32_t ib[4] = {0, 1, 2, 3};
    mf_tensor x3 = mf_tensor_4(buf, MF_F32, MF_DEV_CPU, 3, 2, 3, 4, 1);
    mf_tensor y_bad = mf_tensor_4(buf + 24, MF_F32, MF_DEV_CPU, 3, 2, 3, 4, 1);
    mf_tensor s_bad = mf_tensor_4(buf + 24, MF_F32, MF_DEV_CPU, 2, 2, 3, 1, 1);
    mf_tensor x2 = mf_tensor_4(buf, MF_F32, MF_DEV_CPU, 2, 5, 4, 1, 1);
    mf_tensor y2 = mf_tensor_4(buf + 40, MF_F32, MF_DEV_CPU, 2, 4, 3, 1, 1);
    mf_tensor idx = mf_tensor_4(ib, MF_I32, MF_DEV_CPU, 1, 4, 1, 1, 1);
    mf_tensor idx_f = mf_tensor_4(ib, MF_F32, MF_DEV_CPU, 1, 4, 1, 1, 1);
    mf_tensor y_ok = mf_tensor_4(buf + 40, MF_F32, MF_DEV_CPU, 2, 4, 4, 1, 1);
    expect_invalid("transpose01: y [2, 3, 4] for x [2, 3, 4]",
                   mf_transpose01(ctx, &y_bad, &x3, false));
    expect_invalid("sum_axis: y [2, 3] for x [2, 3, 4]", mf_sum_axis(ctx, &s_bad, &x3, 1.0f));
    expect_invalid("gather_rows: y [4, 3] for x [5, 4]", mf_gather_rows(ctx, &y2, &x2, &idx));
    expect_invalid("gather_rows: f32 idx", mf_gather_rows(ctx, &y_ok, &x2, &idx_f));
}

int main(void)
{
    mf_ctx ctx;
    mf_arena arena;
    MF_TEST_OK(mf_test_ctx_cpu(&ctx, &arena, (size_t)1 << 20));
    if (mf_test_failures()) return mf_test_finish("test_layout");

    test_transpose(&ctx);
    test_sum_axis(&ctx, 3, 7, 5, false);
    test_sum_axis(&ctx, 2, 11, 67, true);
    test_gather_scatter(&ctx);
    test_sum_determinism(&ctx);
    test_argument_checks(&ctx);

    mf_test_ctx_free(&ctx, &arena);
    return mf_test_finish("test_layout");
}
