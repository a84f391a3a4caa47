/* f64 through the tensor API (core/ops.h) on the CPU: the double-precision runs that module code
 * uses as its finite-difference oracle.
 *  1. every op (activations, add/mul with broadcast, scale, axpy, transpose01, sum_axis,
 *     gather/scatter rows, layer norm, softmax with bias and a mask with zeros, linear in the AF2
 *     [C, H, D] layout, batched matmul with transposes and a broadcast batch, the attention core):
 *     the f64 op equals mf_ref_*_f64 on the same data BITWISE, forward and backward, with
 *     gradients accumulated onto nonzero buffers (and accumulate = true where the op has it);
 *     mf_fill and mf_convert (f32 <-> f64, f64 -> f64; bf16 <-> f64 refused) exactly;
 *  2. the same op in f32 on the same (f32-representable) data agrees with the f64 result within
 *     MF_TOL_F32 (atol 1e-5, rtol 1e-4);
 *  3. gated attention in f64 against mf_ref_gated_attention_*_f64 within 1e-12 relative (see
 *     TOL_F64_GA_RTOL), gated cross-attention and ungated self-attention, batch sliced
 *     (chunk_size 2 of B 3) with bf16 storage and bf16 compute set in the policy: the saved
 *     tensors and lse stay f64 and the numbers do not change; its f32 run agrees within MF_TOL_F32;
 *  4. a finite-difference check (mf_gradcheck, step 1e-6, atol 1e-8, rtol 1e-6) of the f64 gated
 *     attention through the tensor API: q_x, kv_x, bias and all seven weights, a mask with zeros,
 *     a random upstream gradient, B3 Q5 K4 Cin5 H2 D3 Cout4;
 *  5. a call mixing f32 and f64 is MF_ERR_INVALID naming the offending tensor; f64 on a CUDA
 *     context is MF_ERR_UNSUPPORTED before any dispatch;
 *  6. memopt/saved: f64 activations are saved in f64 under bf16 storage, mf_saved_view returns
 *     them (and f32 ones) as they are and widens bf16, mf_saved_as_f32 refuses f64. */
#include "core/ref/ref.h"
#include "memopt/saved.h"
#include "tests/support/mf_test.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* f64 gated attention through the tensor API against the double reference: the same arithmetic
 * up to the order of a few additions (bias added before rather than after the dot products, the
 * overflow-free sigmoid, dbias summed per batch slice), so the two differ by a few f64 ulps
 * (~1e-16) times the condition of the sums; 1e-12 relative leaves orders of magnitude of
 * headroom. Elements that cancel to near zero get atol = 1e-12 * max|ref| of their tensor. */
#define TOL_F64_GA_RTOL 1e-12

#define T64(p, nd, ...)                                                                            \
    mf_tensor_make((p), MF_F64, MF_DEV_CPU, (nd), (const int64_t[MF_MAX_DIMS]){__VA_ARGS__})
#define T32(p, nd, ...) mf_tensor_f32((p), (nd), __VA_ARGS__)

static mf_ctx g_ctx;
static mf_arena g_arena;

/* ---- buffers: every allocation of one test section is freed together ---------------------- */

enum { MAX_ALLOCS = 512 };
static void *g_allocs[MAX_ALLOCS];
static int g_nallocs;

static void *track(void *p)
{
    if (!p || g_nallocs == MAX_ALLOCS) {
        fprintf(stderr, "test_ops_f64: out of test buffers\n");
        abort();
    }
    g_allocs[g_nallocs++] = p;
    return p;
}

static void free_all(void)
{
    while (g_nallocs > 0) free(g_allocs[--g_nallocs]);
}

static double *dnew(int64_t n)
{
    return track(calloc((size_t)(n > 0 ? n : 1), sizeof(double)));
}

/* Normal data rounded to f32, so the f32 run sees exactly the f64 run's inputs. */
static double *rnd(int64_t n, uint64_t seed)
{
    double *p = dnew(n);
    mf_test_fill_normal_f64(p, n, seed, 1.0);
    for (int64_t i = 0; i < n; i++) p[i] = (float)p[i];
    return p;
}

static double *dup64(const double *x, int64_t n)
{
    double *p = dnew(n);
    memcpy(p, x, sizeof(double) * (size_t)n);
    return p;
}

static float *to32(const double *x, int64_t n)
{
    float *p = track(calloc((size_t)(n > 0 ? n : 1), sizeof(float)));
    mf_f64_to_f32(p, x, n);
    return p;
}

static double *mask64(int64_t rows, int64_t row, uint64_t seed)
{
    double *p = dnew(rows * row);
    mf_test_fill_mask_f64(p, rows, row, seed, 0.6);
    return p;
}

/* ---- checks --------------------------------------------------------------------------------- */

/* Every element identical in its bits to the reference's, and not NaN. */
static bool bitwise64(const char *name, const double *a, const double *ref, int64_t n)
{
    int64_t bad = 0, first = -1;
    for (int64_t i = 0; i < n; i++)
        if (memcmp(&a[i], &ref[i], sizeof(double)) != 0 || isnan(a[i])) {
            if (first < 0) first = i;
            bad++;
        }
    mf_test_count(bad == 0);
    printf("  %-56s n=%-6lld bitwise (tol: 0 ulp)  %s\n", name, (long long)n, bad ? "FAIL" : "ok");
    if (bad)
        mf_test_fail("%s: %lld of %lld elements differ; first at %lld: %.17g vs ref %.17g", name,
                     (long long)bad, (long long)n, (long long)first, a[first], ref[first]);
    return bad == 0;
}

/* The f32 run against the f64 run of the same op. */
static void agree32(const char *name, const float *a, const double *ref, int64_t n)
{
    char label[160];
    snprintf(label, sizeof label, "%.120s f32 vs f64", name);
    mf_check_close_f32_f64(label, a, ref, n, MF_TOL_F32_ATOL, MF_TOL_F32_RTOL);
}

/* |a - ref| <= 1e-12 max|ref| + 1e-12 |ref| per element. */
static void close_ga(const char *name, const double *a, const double *ref, int64_t n)
{
    double mx = 0;
    for (int64_t i = 0; i < n; i++) mx = fmax(mx, fabs(ref[i]));
    char label[160];
    snprintf(label, sizeof label, "%.100s (atol 1e-12 x max|ref| %.2g)", name, mx);
    mf_check_close_f64(label, a, ref, n, TOL_F64_GA_RTOL * mx, TOL_F64_GA_RTOL);
}

/* ---- 1, 2: elementwise ---------------------------------------------------------------------- */

static void test_activations(void)
{
    const int64_t R = 5, C = 7, n = R * C;
    const char *names[3] = {"relu", "sigmoid", "softplus"};
    for (int act = 0; act < 3; act++) {
        double *x = rnd(n, 100 + (uint64_t)act), *y = dnew(n), *yr = dnew(n);
        double *dy = rnd(n, 110 + (uint64_t)act), *dx0 = rnd(n, 120 + (uint64_t)act);
        double *dx = dup64(dx0, n), *dxr = dup64(dx0, n);
        mf_tensor tx = T64(x, 2, R, C), ty = T64(y, 2, R, C), tdy = T64(dy, 2, R, C),
                  tdx = T64(dx, 2, R, C);
        MF_TEST_OK(mf_activation_forward(&g_ctx, (mf_activation)act, &ty, &tx));
        MF_TEST_OK(mf_activation_backward(&g_ctx, (mf_activation)act, &tdx, &tdy, &tx));
        mf_ref_activation_forward_f64(act, yr, x, n);
        mf_ref_activation_backward_f64(act, dxr, dy, x, n);
        char nm[96];
        snprintf(nm, sizeof nm, "activation %s forward [5, 7]", names[act]);
        bitwise64(nm, y, yr, n);
        snprintf(nm, sizeof nm, "activation %s backward dx (+=)", names[act]);
        bitwise64(nm, dx, dxr, n);

        float *x32 = to32(x, n), *y32 = to32(y, n), *dy32 = to32(dy, n), *dx32 = to32(dx0, n);
        mf_tensor sx = T32(x32, 2, R, C), sy = T32(y32, 2, R, C), sdy = T32(dy32, 2, R, C),
                  sdx = T32(dx32, 2, R, C);
        MF_TEST_OK(mf_activation_forward(&g_ctx, (mf_activation)act, &sy, &sx));
        MF_TEST_OK(mf_activation_backward(&g_ctx, (mf_activation)act, &sdx, &sdy, &sx));
        snprintf(nm, sizeof nm, "activation %s forward", names[act]);
        agree32(nm, y32, y, n);
        snprintf(nm, sizeof nm, "activation %s dx", names[act]);
        agree32(nm, dx32, dx, n);
    }
    free_all();
}

static void test_add_mul(void)
{
    const int64_t R = 5, C = 7, n = R * C;
    double *a = rnd(n, 200), *b = rnd(C, 201), *dy = rnd(n, 202);
    double *da0 = rnd(n, 203), *db0 = rnd(C, 204);
    mf_tensor ta = T64(a, 2, R, C), tb = T64(b, 1, C), tdy = T64(dy, 2, R, C);
    for (int op = 0; op < 2; op++) {
        const char *nm = op ? "mul" : "add";
        double *y = dnew(n), *yr = dnew(n);
        double *da = dup64(da0, n), *db = dup64(db0, C), *dar = dup64(da0, n), *dbr = dup64(db0, C);
        mf_tensor ty = T64(y, 2, R, C), tda = T64(da, 2, R, C), tdb = T64(db, 1, C);
        if (op) {
            MF_TEST_OK(mf_mul(&g_ctx, &ty, &ta, &tb));
            MF_TEST_OK(mf_mul_backward(&g_ctx, &tda, &tdb, &tdy, &ta, &tb));
            mf_ref_mul_f64(yr, a, b, n, C);
            mf_ref_mul_backward_f64(dar, dbr, dy, a, b, n, C);
        } else {
            MF_TEST_OK(mf_add(&g_ctx, &ty, &ta, &tb));
            MF_TEST_OK(mf_add_backward(&g_ctx, &tda, &tdb, &tdy));
            mf_ref_add_f64(yr, a, b, n, C);
            mf_ref_add_backward_f64(dar, dbr, dy, n, C);
        }
        char s[96];
        snprintf(s, sizeof s, "%s a [5, 7] b [7] (broadcast) forward", nm);
        bitwise64(s, y, yr, n);
        snprintf(s, sizeof s, "%s backward da (+=)", nm);
        bitwise64(s, da, dar, n);
        snprintf(s, sizeof s, "%s backward db (+=, summed over rows)", nm);
        bitwise64(s, db, dbr, C);

        float *a32 = to32(a, n), *b32 = to32(b, C), *dy32 = to32(dy, n), *y32 = to32(y, n),
              *da32 = to32(da0, n), *db32 = to32(db0, C);
        mf_tensor sa = T32(a32, 2, R, C), sb = T32(b32, 1, C), sdy = T32(dy32, 2, R, C),
                  sy = T32(y32, 2, R, C), sda = T32(da32, 2, R, C), sdb = T32(db32, 1, C);
        if (op) {
            MF_TEST_OK(mf_mul(&g_ctx, &sy, &sa, &sb));
            MF_TEST_OK(mf_mul_backward(&g_ctx, &sda, &sdb, &sdy, &sa, &sb));
        } else {
            MF_TEST_OK(mf_add(&g_ctx, &sy, &sa, &sb));
            MF_TEST_OK(mf_add_backward(&g_ctx, &sda, &sdb, &sdy));
        }
        snprintf(s, sizeof s, "%s forward", nm);
        agree32(s, y32, y, n);
        snprintf(s, sizeof s, "%s da", nm);
        agree32(s, da32, da, n);
        snprintf(s, sizeof s, "%s db", nm);
        agree32(s, db32, db, C);
    }
    free_all();
}

static void test_scale_axpy_fill_convert(void)
{
    const int64_t n = 23;
    const float alpha = 0.37f;
    double *x = rnd(n, 300), *y0 = rnd(n, 301);
    double *ys = dnew(n), *ysr = dnew(n), *ya = dup64(y0, n), *yar = dup64(y0, n);
    mf_tensor tx = T64(x, 1, n), tys = T64(ys, 1, n), tya = T64(ya, 1, n);
    MF_TEST_OK(mf_scale(&g_ctx, &tys, &tx, alpha));
    MF_TEST_OK(mf_axpy(&g_ctx, &tya, alpha, &tx));
    mf_ref_scale_f64(ysr, x, alpha, n);
    mf_ref_axpy_f64(yar, alpha, x, n);
    bitwise64("scale [23] alpha 0.37f", ys, ysr, n);
    bitwise64("axpy [23] (y += alpha x)", ya, yar, n);
    float *x32 = to32(x, n), *ys32 = to32(ys, n), *ya32 = to32(y0, n);
    mf_tensor sx = T32(x32, 1, n), sys = T32(ys32, 1, n), sya = T32(ya32, 1, n);
    MF_TEST_OK(mf_scale(&g_ctx, &sys, &sx, alpha));
    MF_TEST_OK(mf_axpy(&g_ctx, &sya, alpha, &sx));
    agree32("scale", ys32, ys, n);
    agree32("axpy", ya32, ya, n);

    /* fill: every element the float value, exactly */
    double *f = rnd(n, 302), *fr = dnew(n);
    for (int64_t i = 0; i < n; i++) fr[i] = (double)-1.625f;
    mf_tensor tf = T64(f, 1, n);
    MF_TEST_OK(mf_fill(&g_ctx, &tf, -1.625f));
    bitwise64("fill f64 with -1.625 (expected: the value)", f, fr, n);

    /* convert: f32 -> f64 exact, f64 -> f32 rounds like a C cast, f64 -> f64 copies */
    double *wide = rnd(n, 303), *back = dnew(n), *copy = dnew(n), *want = dnew(n);
    for (int64_t i = 0; i < n; i++) wide[i] += 1e-9 * (double)i; /* not f32-representable */
    float *narrow = to32(wide, n), *n2 = to32(wide, n);
    for (int64_t i = 0; i < n; i++) n2[i] = 0;
    mf_tensor tw = T64(wide, 1, n), tn2 = T32(n2, 1, n), tback = T64(back, 1, n),
              tcopy = T64(copy, 1, n);
    MF_TEST_OK(mf_convert(&g_ctx, &tn2, &tw));
    MF_TEST_TRUE(memcmp(n2, narrow, sizeof(float) * (size_t)n) == 0,
                 "convert f64 -> f32 differs from the C cast (round to nearest)");
    printf("  convert f64 -> f32 equals (float) cast, %lld elements\n", (long long)n);
    MF_TEST_OK(mf_convert(&g_ctx, &tback, &tn2));
    for (int64_t i = 0; i < n; i++) want[i] = (double)narrow[i];
    bitwise64("convert f32 -> f64 (expected: exact widening)", back, want, n);
    MF_TEST_OK(mf_convert(&g_ctx, &tcopy, &tw));
    bitwise64("convert f64 -> f64 (expected: a copy)", copy, wide, n);
    mf_bf16 hb[23];
    mf_tensor th = mf_tensor_make(hb, MF_BF16, MF_DEV_CPU, 1, (const int64_t[MF_MAX_DIMS]){n});
    MF_TEST_TRUE(mf_convert(&g_ctx, &th, &tw) == MF_ERR_INVALID, "convert f64 -> bf16 accepted");
    MF_TEST_TRUE(mf_convert(&g_ctx, &tw, &th) == MF_ERR_INVALID, "convert bf16 -> f64 accepted");
    printf("  convert f64 <-> bf16 refused: %s\n", mf_last_error());
    free_all();
}

/* ---- 1, 2: layout, reductions, indexing ----------------------------------------------------- */

static void test_layout(void)
{
    const int64_t A = 3, B = 4, C = 5, n = A * B * C;
    double *x = rnd(n, 400), *y0 = rnd(n, 401);
    for (int acc = 0; acc < 2; acc++) {
        double *y = dup64(y0, n), *yr = dup64(y0, n);
        mf_tensor tx = T64(x, 3, A, B, C), ty = T64(y, 3, B, A, C);
        MF_TEST_OK(mf_transpose01(&g_ctx, &ty, &tx, acc));
        mf_ref_transpose01_f64(yr, x, A, B, C, acc);
        bitwise64(acc ? "transpose01 [3, 4, 5] accumulate" : "transpose01 [3, 4, 5]", y, yr, n);
        float *x32 = to32(x, n), *y32 = to32(y0, n);
        mf_tensor sx = T32(x32, 3, A, B, C), sy = T32(y32, 3, B, A, C);
        MF_TEST_OK(mf_transpose01(&g_ctx, &sy, &sx, acc));
        agree32(acc ? "transpose01 accumulate" : "transpose01", y32, y, n);
    }

    /* sum_axis over n = 5 of [2, 5, 3], scale 0.2f (a mean) */
    const int64_t O = 2, N = 5, I = 3;
    const float sc = 0.2f;
    double *s = rnd(O * N * I, 410), *sy = dnew(O * I), *syr = dnew(O * I);
    double *gy = rnd(O * I, 411), *gx0 = rnd(O * N * I, 412);
    double *gx = dup64(gx0, O * N * I), *gxr = dup64(gx0, O * N * I);
    mf_tensor ts = T64(s, 3, O, N, I), tsy = T64(sy, 2, O, I), tgy = T64(gy, 2, O, I),
              tgx = T64(gx, 3, O, N, I);
    MF_TEST_OK(mf_sum_axis(&g_ctx, &tsy, &ts, sc));
    MF_TEST_OK(mf_sum_axis_backward(&g_ctx, &tgx, &tgy, sc));
    mf_ref_sum_axis_f64(syr, s, O, N, I, sc);
    mf_ref_sum_axis_backward_f64(gxr, gy, O, N, I, sc);
    bitwise64("sum_axis [2, 5, 3] -> [2, 3], scale 0.2f", sy, syr, O * I);
    bitwise64("sum_axis backward dx (+=)", gx, gxr, O * N * I);
    float *s32 = to32(s, O * N * I), *sy32 = to32(sy, O * I), *gy32 = to32(gy, O * I),
          *gx32 = to32(gx0, O * N * I);
    mf_tensor ss = T32(s32, 3, O, N, I), ssy = T32(sy32, 2, O, I), sgy = T32(gy32, 2, O, I),
              sgx = T32(gx32, 3, O, N, I);
    MF_TEST_OK(mf_sum_axis(&g_ctx, &ssy, &ss, sc));
    MF_TEST_OK(mf_sum_axis_backward(&g_ctx, &sgx, &sgy, sc));
    agree32("sum_axis", sy32, sy, O * I);
    agree32("sum_axis backward", gx32, gx, O * N * I);

    /* gather/scatter rows: padding (-1) and repeated indices */
    const int64_t rows = 6, m = 7, W = 4;
    int32_t idx[7] = {2, -1, 5, 0, 2, 3, -1};
    mf_tensor tidx = mf_tensor_make(idx, MF_I32, MF_DEV_CPU, 1, (const int64_t[MF_MAX_DIMS]){m});
    double *gt = rnd(rows * W, 420), *gy2 = rnd(m * W, 421), *gyr = dnew(m * W);
    double *dt0 = rnd(rows * W, 422), *dtab = dup64(dt0, rows * W), *dtr = dup64(dt0, rows * W);
    double *dr = rnd(m * W, 423);
    mf_tensor tt = T64(gt, 2, rows, W), tg = T64(gy2, 2, m, W), tdt = T64(dtab, 2, rows, W),
              tdr = T64(dr, 2, m, W);
    MF_TEST_OK(mf_gather_rows(&g_ctx, &tg, &tt, &tidx));
    MF_TEST_OK(mf_scatter_add_rows(&g_ctx, &tdt, &tdr, &tidx));
    mf_ref_gather_rows_f64(gyr, gt, idx, m, W);
    mf_ref_scatter_add_rows_f64(dtr, dr, idx, m, W);
    bitwise64("gather_rows [6, 4] by 7 indices (-1 pads)", gy2, gyr, m * W);
    bitwise64("scatter_add_rows (+=, repeated index)", dtab, dtr, rows * W);
    float *gt32 = to32(gt, rows * W), *gy32b = to32(gy2, m * W), *dt32 = to32(dt0, rows * W),
          *dr32 = to32(dr, m * W);
    mf_tensor st = T32(gt32, 2, rows, W), sg = T32(gy32b, 2, m, W), sdt = T32(dt32, 2, rows, W),
              sdr = T32(dr32, 2, m, W);
    MF_TEST_OK(mf_gather_rows(&g_ctx, &sg, &st, &tidx));
    MF_TEST_OK(mf_scatter_add_rows(&g_ctx, &sdt, &sdr, &tidx));
    agree32("gather_rows", gy32b, gy2, m * W);
    agree32("scatter_add_rows", dt32, dtab, rows * W);
    free_all();
}

/* ---- 1, 2: layer norm and softmax ----------------------------------------------------------- */

static void test_layer_norm(void)
{
    const int64_t R = 5, C = 7, n = R * C;
    const float eps = 1e-5f;
    double *x = rnd(n, 500), *g = rnd(C, 501), *be = rnd(C, 502), *dy = rnd(n, 503);
    for (int64_t i = 0; i < n; i++) x[i] = (float)(2 * x[i] + 0.5); /* off-centre rows */
    double *y = dnew(n), *yr = dnew(n), *mu = dnew(R), *mur = dnew(R), *rs = dnew(R),
           *rsr = dnew(R);
    double *dx0 = rnd(n, 504), *dg0 = rnd(C, 505), *db0 = rnd(C, 506);
    double *dx = dup64(dx0, n), *dg = dup64(dg0, C), *db = dup64(db0, C), *dxr = dup64(dx0, n),
           *dgr = dup64(dg0, C), *dbr = dup64(db0, C);
    mf_tensor tx = T64(x, 2, R, C), ty = T64(y, 2, R, C), tg = T64(g, 1, C), tb = T64(be, 1, C),
              tmu = T64(mu, 1, R), trs = T64(rs, 1, R), tdy = T64(dy, 2, R, C),
              tdx = T64(dx, 2, R, C), tdg = T64(dg, 1, C), tdb = T64(db, 1, C);
    MF_TEST_OK(mf_layer_norm_forward(&g_ctx, &ty, &tmu, &trs, &tx, &tg, &tb, eps));
    MF_TEST_OK(mf_layer_norm_backward(&g_ctx, &tdx, &tdg, &tdb, &tdy, &tx, &tmu, &trs, &tg));
    mf_ref_layer_norm_forward_f64(yr, mur, rsr, x, g, be, R, C, eps);
    mf_ref_layer_norm_backward_f64(dxr, dgr, dbr, dy, x, mur, rsr, g, R, C);
    bitwise64("layer_norm [5, 7] forward y", y, yr, n);
    bitwise64("layer_norm forward mean", mu, mur, R);
    bitwise64("layer_norm forward rstd", rs, rsr, R);
    bitwise64("layer_norm backward dx (+=)", dx, dxr, n);
    bitwise64("layer_norm backward dgamma (+=)", dg, dgr, C);
    bitwise64("layer_norm backward dbeta (+=)", db, dbr, C);

    float *x32 = to32(x, n), *g32 = to32(g, C), *b32 = to32(be, C), *dy32 = to32(dy, n),
          *y32 = to32(y, n), *mu32 = to32(mu, R), *rs32 = to32(rs, R), *dx32 = to32(dx0, n),
          *dg32 = to32(dg0, C), *db32 = to32(db0, C);
    mf_tensor sx = T32(x32, 2, R, C), sy = T32(y32, 2, R, C), sg = T32(g32, 1, C),
              sb = T32(b32, 1, C), smu = T32(mu32, 1, R), srs = T32(rs32, 1, R),
              sdy = T32(dy32, 2, R, C), sdx = T32(dx32, 2, R, C), sdg = T32(dg32, 1, C),
              sdb = T32(db32, 1, C);
    MF_TEST_OK(mf_layer_norm_forward(&g_ctx, &sy, &smu, &srs, &sx, &sg, &sb, eps));
    MF_TEST_OK(mf_layer_norm_backward(&g_ctx, &sdx, &sdg, &sdb, &sdy, &sx, &smu, &srs, &sg));
    agree32("layer_norm y", y32, y, n);
    agree32("layer_norm rstd", rs32, rs, R);
    agree32("layer_norm dx", dx32, dx, n);
    agree32("layer_norm dgamma", dg32, dg, C);
    agree32("layer_norm dbeta", db32, db, C);
    free_all();
}

static void test_softmax(void)
{
    const int64_t B = 2, H = 3, Q = 4, K = 5, n = B * H * Q * K, nb = H * Q * K;
    double *x = rnd(n, 600), *bias = rnd(nb, 601), *mask = mask64(B, K, 602), *dy = rnd(n, 603);
    double *y = dnew(n), *yr = dnew(n), *dx0 = rnd(n, 604), *dbs0 = rnd(nb, 605);
    double *dx = dup64(dx0, n), *dbs = dup64(dbs0, nb), *dxr = dup64(dx0, n),
           *dbsr = dup64(dbs0, nb);
    mf_tensor tx = T64(x, 4, B, H, Q, K), ty = T64(y, 4, B, H, Q, K), tb = T64(bias, 3, H, Q, K),
              tm = T64(mask, 2, B, K), tdy = T64(dy, 4, B, H, Q, K), tdx = T64(dx, 4, B, H, Q, K),
              tdb = T64(dbs, 3, H, Q, K);
    MF_TEST_OK(mf_softmax_forward(&g_ctx, &ty, &tx, &tb, &tm));
    MF_TEST_OK(mf_softmax_backward(&g_ctx, &tdx, &tdb, &tdy, &ty));
    mf_ref_softmax_forward_f64(yr, x, bias, mask, B, H, Q, K);
    mf_ref_softmax_backward_f64(dxr, dbsr, dy, yr, B, H, Q, K);
    bitwise64("softmax [2, 3, 4, 5] bias, mask with zeros", y, yr, n);
    bitwise64("softmax backward dx (+=)", dx, dxr, n);
    bitwise64("softmax backward dbias (+=, summed over B)", dbs, dbsr, nb);

    float *x32 = to32(x, n), *b32 = to32(bias, nb), *m32 = to32(mask, B * K), *dy32 = to32(dy, n),
          *y32 = to32(y, n), *dx32 = to32(dx0, n), *db32 = to32(dbs0, nb);
    mf_tensor sx = T32(x32, 4, B, H, Q, K), sy = T32(y32, 4, B, H, Q, K), sb = T32(b32, 3, H, Q, K),
              sm = T32(m32, 2, B, K), sdy = T32(dy32, 4, B, H, Q, K),
              sdx = T32(dx32, 4, B, H, Q, K), sdb = T32(db32, 3, H, Q, K);
    MF_TEST_OK(mf_softmax_forward(&g_ctx, &sy, &sx, &sb, &sm));
    MF_TEST_OK(mf_softmax_backward(&g_ctx, &sdx, &sdb, &sdy, &sy));
    agree32("softmax y", y32, y, n);
    agree32("softmax dx", dx32, dx, n);
    agree32("softmax dbias", db32, dbs, nb);
    free_all();
}

/* ---- 1, 2: matrix products ------------------------------------------------------------------ */

static void test_linear(void)
{
    /* x [2, 3, 5] @ w [5, 2, 3] (the AF2 [C, H, D] layout) + b [2, 3] -> y [2, 3, 2, 3] */
    const int64_t rows = 6, in = 5, out = 6;
    double *x = rnd(rows * in, 700), *w = rnd(in * out, 701), *b = rnd(out, 702);
    double *y0 = rnd(rows * out, 703), *dy = rnd(rows * out, 704);
    double *y = dup64(y0, rows * out), *yr = dup64(y0, rows * out);
    double *dx0 = rnd(rows * in, 705), *dw0 = rnd(in * out, 706), *db0 = rnd(out, 707);
    double *dx = dup64(dx0, rows * in), *dw = dup64(dw0, in * out), *db = dup64(db0, out),
           *dxr = dup64(dx0, rows * in), *dwr = dup64(dw0, in * out), *dbr = dup64(db0, out);
    mf_tensor tx = T64(x, 3, 2, 3, in), tw = T64(w, 3, in, 2, 3), tb = T64(b, 2, 2, 3),
              ty = T64(y, 4, 2, 3, 2, 3), tdy = T64(dy, 4, 2, 3, 2, 3), tdx = T64(dx, 3, 2, 3, in),
              tdw = T64(dw, 3, in, 2, 3), tdb = T64(db, 2, 2, 3);
    g_ctx.policy.compute = MF_BF16; /* applies to f32 runs only */
    MF_TEST_OK(mf_linear_forward(&g_ctx, &ty, &tx, &tw, &tb, true));
    MF_TEST_OK(mf_linear_backward(&g_ctx, &tdx, &tdw, &tdb, &tdy, &tx, &tw));
    g_ctx.policy = mf_policy_default();
    mf_ref_linear_forward_f64(yr, x, w, b, rows, in, out, true);
    mf_ref_linear_backward_f64(dxr, dwr, dbr, dy, x, w, rows, in, out);
    bitwise64("linear x [2, 3, 5] w [5, 2, 3] + b, accumulate, compute=bf16", y, yr, rows * out);
    bitwise64("linear backward dx (+=)", dx, dxr, rows * in);
    bitwise64("linear backward dw (+=)", dw, dwr, in * out);
    bitwise64("linear backward db (+=)", db, dbr, out);

    float *x32 = to32(x, rows * in), *w32 = to32(w, in * out), *b32 = to32(b, out),
          *y32 = to32(y0, rows * out), *dy32 = to32(dy, rows * out), *dx32 = to32(dx0, rows * in),
          *dw32 = to32(dw0, in * out), *db32 = to32(db0, out);
    mf_tensor sx = T32(x32, 3, 2, 3, in), sw = T32(w32, 3, in, 2, 3), sb = T32(b32, 2, 2, 3),
              sy = T32(y32, 4, 2, 3, 2, 3), sdy = T32(dy32, 4, 2, 3, 2, 3),
              sdx = T32(dx32, 3, 2, 3, in), sdw = T32(dw32, 3, in, 2, 3), sdb = T32(db32, 2, 2, 3);
    MF_TEST_OK(mf_linear_forward(&g_ctx, &sy, &sx, &sw, &sb, true));
    MF_TEST_OK(mf_linear_backward(&g_ctx, &sdx, &sdw, &sdb, &sdy, &sx, &sw));
    agree32("linear y", y32, y, rows * out);
    agree32("linear dx", dx32, dx, rows * in);
    agree32("linear dw", dw32, dw, in * out);
    agree32("linear db", db32, db, out);
    free_all();
}

static void test_matmul(void)
{
    const int64_t batch = 3, M = 4, N = 6, K = 5;
    const float alpha = 0.7f;
    for (int cfg = 0; cfg < 2; cfg++) {
        /* cfg 0: a stored [1, K, M] transposed and broadcast over the batch, beta 0.5;
         * cfg 1: b stored [batch, N, K] transposed, beta 0 */
        bool ta = cfg == 0, tb = cfg == 1;
        float beta = cfg == 0 ? 0.5f : 0.0f;
        int64_t ba = cfg == 0 ? 1 : batch, na = ba * M * K, nbb = batch * K * N, nc = batch * M * N;
        double *a = rnd(na, 800 + (uint64_t)cfg), *b = rnd(nbb, 810 + (uint64_t)cfg);
        double *c0 = rnd(nc, 820 + (uint64_t)cfg), *dc = rnd(nc, 830 + (uint64_t)cfg);
        double *c = dup64(c0, nc), *cr = dup64(c0, nc);
        double *da0 = rnd(na, 840 + (uint64_t)cfg), *db0 = rnd(nbb, 850 + (uint64_t)cfg);
        double *da = dup64(da0, na), *db = dup64(db0, nbb), *dar = dup64(da0, na),
               *dbr = dup64(db0, nbb);
        mf_tensor tA = ta ? T64(a, 3, ba, K, M) : T64(a, 3, ba, M, K);
        mf_tensor tB = tb ? T64(b, 3, batch, N, K) : T64(b, 3, batch, K, N);
        mf_tensor tC = T64(c, 3, batch, M, N), tdC = T64(dc, 3, batch, M, N);
        mf_tensor tdA = tA, tdB = tB;
        tdA.data = da;
        tdB.data = db;
        g_ctx.policy.compute = MF_BF16; /* applies to f32 runs only */
        MF_TEST_OK(mf_matmul(&g_ctx, &tC, &tA, ta, &tB, tb, alpha, beta));
        MF_TEST_OK(mf_matmul_backward(&g_ctx, &tdA, &tdB, &tdC, &tA, ta, &tB, tb, alpha));
        g_ctx.policy = mf_policy_default();
        mf_ref_matmul_f64(cr, a, ta, b, tb, batch, ba, batch, M, N, K, alpha, beta);
        mf_ref_matmul_backward_f64(dar, dbr, dc, a, ta, b, tb, batch, ba, batch, M, N, K, alpha);
        const char *nm = cfg == 0 ? "matmul a^T (broadcast batch) beta 0.5" : "matmul b^T beta 0";
        char s[128];
        snprintf(s, sizeof s, "%s [3, 4, 6] compute=bf16", nm);
        bitwise64(s, c, cr, nc);
        snprintf(s, sizeof s, "%s backward da (+=)", nm);
        bitwise64(s, da, dar, na);
        snprintf(s, sizeof s, "%s backward db (+=)", nm);
        bitwise64(s, db, dbr, nbb);

        float *a32 = to32(a, na), *b32 = to32(b, nbb), *c32 = to32(c0, nc), *dc32 = to32(dc, nc),
              *da32 = to32(da0, na), *db32 = to32(db0, nbb);
        mf_tensor sA = tA, sB = tB, sC = T32(c32, 3, batch, M, N), sdC = T32(dc32, 3, batch, M, N);
        sA.dtype = sB.dtype = MF_F32;
        sA.data = a32;
        sB.data = b32;
        mf_tensor sdA = sA, sdB = sB;
        sdA.data = da32;
        sdB.data = db32;
        MF_TEST_OK(mf_matmul(&g_ctx, &sC, &sA, ta, &sB, tb, alpha, beta));
        MF_TEST_OK(mf_matmul_backward(&g_ctx, &sdA, &sdB, &sdC, &sA, ta, &sB, tb, alpha));
        agree32(nm, c32, c, nc);
        snprintf(s, sizeof s, "%s da", nm);
        agree32(s, da32, da, na);
        snprintf(s, sizeof s, "%s db", nm);
        agree32(s, db32, db, nbb);
    }
    free_all();
}

/* ---- 1, 2: attention core ------------------------------------------------------------------- */

static void test_attention_core(void)
{
    const int64_t B = 2, Q = 5, K = 4, H = 2, D = 3;
    const int64_t nq = B * Q * H * D, nk = B * K * H * D, nb = H * Q * K, nl = B * H * Q;
    const float scale = 0.6f;
    g_ctx.policy.chunk_size = 2; /* chunking of the f32 path; the f64 path is unchunked */
    double *q = rnd(nq, 900), *k = rnd(nk, 901), *v = rnd(nk, 902), *bias = rnd(nb, 903);
    double *mask = mask64(B, K, 904), *dout = rnd(nq, 905);
    double *out = dnew(nq), *outr = dnew(nq), *lse = dnew(nl), *lser = dnew(nl);
    double *dq0 = rnd(nq, 906), *dk0 = rnd(nk, 907), *dv0 = rnd(nk, 908), *dbs0 = rnd(nb, 909);
    double *dq = dup64(dq0, nq), *dk = dup64(dk0, nk), *dv = dup64(dv0, nk), *dbs = dup64(dbs0, nb);
    double *dqr = dup64(dq0, nq), *dkr = dup64(dk0, nk), *dvr = dup64(dv0, nk),
           *dbsr = dup64(dbs0, nb);
    mf_tensor tq = T64(q, 4, B, Q, H, D), tk = T64(k, 4, B, K, H, D), tv = T64(v, 4, B, K, H, D),
              tb = T64(bias, 3, H, Q, K), tm = T64(mask, 2, B, K), tdo = T64(dout, 4, B, Q, H, D),
              to = T64(out, 4, B, Q, H, D), tl = T64(lse, 3, B, H, Q), tdq = T64(dq, 4, B, Q, H, D),
              tdk = T64(dk, 4, B, K, H, D), tdv = T64(dv, 4, B, K, H, D),
              tdb = T64(dbs, 3, H, Q, K);
    MF_TEST_OK(mf_attention_forward(&g_ctx, &to, &tl, &tq, &tk, &tv, &tb, &tm, scale));
    MF_TEST_OK(mf_attention_backward(&g_ctx, &tdq, &tdk, &tdv, &tdb, &tdo, &to, &tl, &tq, &tk, &tv,
                                     &tb, &tm, scale));
    mf_ref_attention_forward_f64(outr, lser, q, k, v, bias, mask, B, Q, K, H, D, scale);
    mf_ref_attention_backward_f64(dqr, dkr, dvr, dbsr, dout, q, k, v, bias, mask, B, Q, K, H, D,
                                  scale);
    bitwise64("attention B2 Q5 K4 H2 D3 out (bias, mask)", out, outr, nq);
    bitwise64("attention lse", lse, lser, nl);
    bitwise64("attention backward dq (+=)", dq, dqr, nq);
    bitwise64("attention backward dk (+=)", dk, dkr, nk);
    bitwise64("attention backward dv (+=)", dv, dvr, nk);
    bitwise64("attention backward dbias (+=)", dbs, dbsr, nb);

    float *q32 = to32(q, nq), *k32 = to32(k, nk), *v32 = to32(v, nk), *b32 = to32(bias, nb),
          *m32 = to32(mask, B * K), *do32 = to32(dout, nq), *o32 = to32(out, nq),
          *l32 = to32(lse, nl), *dq32 = to32(dq0, nq), *dk32 = to32(dk0, nk), *dv32 = to32(dv0, nk),
          *db32 = to32(dbs0, nb);
    mf_tensor sq = T32(q32, 4, B, Q, H, D), sk = T32(k32, 4, B, K, H, D),
              sv = T32(v32, 4, B, K, H, D), sb = T32(b32, 3, H, Q, K), sm = T32(m32, 2, B, K),
              sdo = T32(do32, 4, B, Q, H, D), so = T32(o32, 4, B, Q, H, D),
              sl = T32(l32, 3, B, H, Q), sdq = T32(dq32, 4, B, Q, H, D),
              sdk = T32(dk32, 4, B, K, H, D), sdv = T32(dv32, 4, B, K, H, D),
              sdb = T32(db32, 3, H, Q, K);
    MF_TEST_OK(mf_attention_forward(&g_ctx, &so, &sl, &sq, &sk, &sv, &sb, &sm, scale));
    MF_TEST_OK(mf_attention_backward(&g_ctx, &sdq, &sdk, &sdv, &sdb, &sdo, &so, &sl, &sq, &sk, &sv,
                                     &sb, &sm, scale));
    agree32("attention out", o32, out, nq);
    agree32("attention lse", l32, lse, nl);
    agree32("attention dq", dq32, dq, nq);
    agree32("attention dk", dk32, dk, nk);
    agree32("attention dv", dv32, dv, nk);
    agree32("attention dbias", db32, dbs, nb);
    g_ctx.policy = mf_policy_default();
    free_all();
}

/* ---- 3, 4: gated attention ------------------------------------------------------------------ */

enum { W_QUERY, W_KEY, W_VALUE, W_GATING, W_GATING_B, W_OUTPUT, W_OUTPUT_B, NW };
static const char *const g_wname[NW] = {"query_w",  "key_w",    "value_w", "gating_w",
                                        "gating_b", "output_w", "output_b"};

typedef struct {
    int64_t B, Q, K, Cin, H, D, Cout;
    bool gated, self;
    double *q_x, *kv_x, *bias, *mask, *w[NW];
} ga_case;

static int64_t w_numel(const ga_case *c, int i)
{
    int64_t HD = c->H * c->D;
    return i == W_GATING_B   ? HD
           : i == W_OUTPUT   ? HD * c->Cout
           : i == W_OUTPUT_B ? c->Cout
                             : c->Cin * HD;
}

static ga_case ga_make(bool gated, bool self, uint64_t seed)
{
    ga_case c = {.B = 3, .Q = 5, .K = self ? 5 : 4, .Cin = 5, .H = 2, .D = 3, .Cout = 4};
    c.gated = gated;
    c.self = self;
    c.q_x = rnd(c.B * c.Q * c.Cin, seed + 1);
    c.kv_x = self ? c.q_x : rnd(c.B * c.K * c.Cin, seed + 2);
    c.bias = rnd(c.H * c.Q * c.K, seed + 3);
    c.mask = mask64(c.B, c.K, seed + 4);
    for (int i = 0; i < NW; i++) {
        int64_t n = w_numel(&c, i);
        c.w[i] = rnd(n, seed + 10 + (uint64_t)i);
        /* glorot-sized weights keep logits and gates O(1) */
        double s = 1.0 / sqrt((double)(i == W_OUTPUT ? c.H * c.D : c.Cin));
        for (int64_t j = 0; j < n; j++) c.w[i][j] = (float)(c.w[i][j] * s);
    }
    return c;
}

static mf_tensor w_tensor(const ga_case *c, void *p, int i, mf_dtype dt)
{
    const int64_t s[NW][3] = {{c->Cin, c->H, c->D}, {c->Cin, c->H, c->D}, {c->Cin, c->H, c->D},
                              {c->Cin, c->H, c->D}, {c->H, c->D, 1},      {c->H, c->D, c->Cout},
                              {c->Cout, 1, 1}};
    int nd = i == W_GATING_B ? 2 : i == W_OUTPUT_B ? 1 : 3;
    return mf_tensor_make(p, dt, MF_DEV_CPU, nd, s[i]);
}

static mf_attention_params ga_params(const ga_case *c, void *const w[NW], mf_dtype dt)
{
    mf_attention_params p = {0};
    p.query_w = w_tensor(c, w[W_QUERY], W_QUERY, dt);
    p.key_w = w_tensor(c, w[W_KEY], W_KEY, dt);
    p.value_w = w_tensor(c, w[W_VALUE], W_VALUE, dt);
    if (c->gated) {
        p.gating_w = w_tensor(c, w[W_GATING], W_GATING, dt);
        p.gating_b = w_tensor(c, w[W_GATING_B], W_GATING_B, dt);
    }
    p.output_w = w_tensor(c, w[W_OUTPUT], W_OUTPUT, dt);
    p.output_b = w_tensor(c, w[W_OUTPUT_B], W_OUTPUT_B, dt);
    p.gated = c->gated;
    return p;
}

/* Results of one run: out and every gradient, in f64 or f32 (data pointers as void). */
typedef struct {
    void *out, *dq_x, *dkv_x, *dbias, *dw[NW];
} ga_res;

/* Tensor-API forward (training, out += ) and backward (gradients +=) in dtype dt with the
 * inputs x (f64 or f32 copies of the case) onto the buffers in r. */
static void ga_run(const ga_case *c, mf_dtype dt, void *q_x, void *kv_x, void *bias, void *mask,
                   void *const w[NW], void *dout, const ga_res *r, const char *what)
{
    int64_t B = c->B, Q = c->Q, K = c->K, H = c->H;
    mf_tensor tqx = mf_tensor_4(q_x, dt, MF_DEV_CPU, 3, B, Q, c->Cin, 1),
              tkvx = mf_tensor_4(kv_x, dt, MF_DEV_CPU, 3, B, K, c->Cin, 1),
              tb = mf_tensor_4(bias, dt, MF_DEV_CPU, 3, H, Q, K, 1),
              tm = mf_tensor_4(mask, dt, MF_DEV_CPU, 2, B, K, 1, 1),
              tdo = mf_tensor_4(dout, dt, MF_DEV_CPU, 3, B, Q, c->Cout, 1),
              to = mf_tensor_4(r->out, dt, MF_DEV_CPU, 3, B, Q, c->Cout, 1),
              tdq = mf_tensor_4(r->dq_x, dt, MF_DEV_CPU, 3, B, Q, c->Cin, 1),
              tdkv = mf_tensor_4(r->dkv_x, dt, MF_DEV_CPU, 3, B, K, c->Cin, 1),
              tdb = mf_tensor_4(r->dbias, dt, MF_DEV_CPU, 3, H, Q, K, 1);
    mf_attention_params p = ga_params(c, w, dt), dp = ga_params(c, r->dw, dt);
    mf_attention_saved saved;
    mf_arena_mark_t mark = mf_arena_mark(g_ctx.arena);
    MF_TEST_OK(mf_gated_attention_forward(&g_ctx, &to, &saved, &tqx, c->self ? &tqx : &tkvx, &tb,
                                          &tm, &p, true));
    if (dt == MF_F64) {
        const mf_tensor *st[6] = {&saved.q, &saved.k, &saved.v, &saved.gate, &saved.o, &saved.lse};
        bool all64 = true;
        for (int i = 0; i < 6; i++)
            if (st[i]->data && st[i]->dtype != MF_F64) all64 = false;
        MF_TEST_TRUE(all64, "%s: a saved tensor is not f64 (storage %s)", what,
                     mf_dtype_name(g_ctx.policy.storage));
        printf("  %s: saved q, k, v, gate, o and lse are f64 under storage=%s, compute=%s\n", what,
               mf_dtype_name(g_ctx.policy.storage), mf_dtype_name(g_ctx.policy.compute));
    }
    MF_TEST_OK(mf_gated_attention_backward(&g_ctx, &tdq, c->self ? &tdq : &tdkv, &tdb, &dp, &tdo,
                                           &saved, &tqx, c->self ? &tqx : &tkvx, &tb, &tm, &p));
    mf_arena_release(g_ctx.arena, mark);
}

/* Fresh result buffers holding the initial values init (f64), in dt. */
static ga_res ga_res_from(const ga_case *c, const ga_res *init, mf_dtype dt)
{
    int64_t n[4] = {c->B * c->Q * c->Cout, c->B * c->Q * c->Cin, c->B * c->K * c->Cin,
                    c->H * c->Q * c->K};
    void *const *src = &init->out;
    ga_res r;
    void **dst = &r.out;
    for (int f = 0; f < 4 + NW; f++) {
        int64_t m = f < 4 ? n[f] : w_numel(c, f - 4);
        dst[f] = dt == MF_F64 ? (void *)dup64(src[f], m) : (void *)to32(src[f], m);
    }
    if (c->self) r.dkv_x = r.dq_x;
    return r;
}

static void test_gated(bool gated, bool self)
{
    ga_case c = ga_make(gated, self, 1000 + 10 * (uint64_t)gated + (uint64_t)self);
    int64_t B = c.B, Q = c.Q, K = c.K, nq = B * Q * c.Cin, nk = B * K * c.Cin, nb = c.H * Q * K,
            no = B * Q * c.Cout;
    const char *cfg = gated ? "gated cross" : "ungated self";
    double *dout = rnd(no, 1090);
    ga_res init;
    init.out = rnd(no, 1091);
    init.dq_x = rnd(nq, 1092);
    init.dkv_x = self ? init.dq_x : rnd(nk, 1093);
    init.dbias = rnd(nb, 1094);
    for (int i = 0; i < NW; i++) init.dw[i] = rnd(w_numel(&c, i), 1100 + (uint64_t)i);

    /* the tensor API in f64 under a policy an f64 run must ignore */
    g_ctx.policy.chunk_size = 2;
    g_ctx.policy.storage = MF_BF16;
    g_ctx.policy.compute = MF_BF16;
    ga_res r64 = ga_res_from(&c, &init, MF_F64);
    char what[128];
    snprintf(what, sizeof what, "gated attention f64 %s B3 Q5 K%lld Cin5 H2 D3 Cout4", cfg,
             (long long)K);
    ga_run(&c, MF_F64, c.q_x, c.kv_x, c.bias, c.mask, (void *const *)c.w, dout, &r64, what);

    /* the reference onto the same initial values */
    ga_res rr = ga_res_from(&c, &init, MF_F64);
    double *ref_out = dnew(no);
    double *const *rw = (double *const *)rr.dw;
    mf_ref_gated_attention_forward_f64(ref_out, c.q_x, c.kv_x, c.bias, c.mask, c.w[W_QUERY],
                                       c.w[W_KEY], c.w[W_VALUE], gated ? c.w[W_GATING] : NULL,
                                       c.w[W_GATING_B], c.w[W_OUTPUT], c.w[W_OUTPUT_B], B, Q, K,
                                       c.Cin, c.H, c.D, c.Cout);
    for (int64_t i = 0; i < no; i++) ((double *)rr.out)[i] += ref_out[i];
    mf_ref_gated_attention_backward_f64(
        rr.dq_x, rr.dkv_x, rr.dbias, rw[W_QUERY], rw[W_KEY], rw[W_VALUE],
        gated ? rw[W_GATING] : NULL, gated ? rw[W_GATING_B] : NULL, rw[W_OUTPUT], rw[W_OUTPUT_B],
        dout, c.q_x, c.kv_x, c.bias, c.mask, c.w[W_QUERY], c.w[W_KEY], c.w[W_VALUE],
        gated ? c.w[W_GATING] : NULL, c.w[W_GATING_B], c.w[W_OUTPUT], c.w[W_OUTPUT_B], B, Q, K,
        c.Cin, c.H, c.D, c.Cout);

    /* the f32 tensor API on the same (f32-representable) data, default precision policy */
    g_ctx.policy = mf_policy_default();
    g_ctx.policy.chunk_size = 2;
    ga_res r32 = ga_res_from(&c, &init, MF_F32);
    float *w32[NW];
    for (int i = 0; i < NW; i++) w32[i] = to32(c.w[i], w_numel(&c, i));
    float *qx32 = to32(c.q_x, nq), *kvx32 = self ? qx32 : to32(c.kv_x, nk);
    ga_run(&c, MF_F32, qx32, kvx32, to32(c.bias, nb), to32(c.mask, B * K), (void *const *)w32,
           to32(dout, no), &r32, "gated attention f32");
    g_ctx.policy = mf_policy_default();

    const char *names[4] = {"out (+=)", self ? "dx (+=)" : "dq_x (+=)", "dkv_x (+=)", "dbias (+=)"};
    void **a64 = &r64.out, **aref = &rr.out, **a32 = &r32.out;
    int64_t n[4] = {no, nq, nk, nb};
    for (int f = 0; f < 4 + NW; f++) {
        if (f == 2 && self) continue;
        if (!gated && (f == 4 + W_GATING || f == 4 + W_GATING_B)) continue;
        int64_t m = f < 4 ? n[f] : w_numel(&c, f - 4);
        char s[160];
        snprintf(s, sizeof s, "%s %s vs ref", cfg, f < 4 ? names[f] : g_wname[f - 4]);
        close_ga(s, a64[f], aref[f], m);
        snprintf(s, sizeof s, "gated attention %s %s", cfg, f < 4 ? names[f] : g_wname[f - 4]);
        agree32(s, a32[f], a64[f], m);
    }
    free_all();
}

/* 4: finite differences of the tensor-API f64 module. */
typedef struct {
    ga_case c;
    double *out;
} gc_ud;

static void gc_forward(void *ud)
{
    gc_ud *u = ud;
    const ga_case *c = &u->c;
    mf_tensor tqx = T64(c->q_x, 3, c->B, c->Q, c->Cin), tkvx = T64(c->kv_x, 3, c->B, c->K, c->Cin),
              tb = T64(c->bias, 3, c->H, c->Q, c->K), tm = T64(c->mask, 2, c->B, c->K),
              to = T64(u->out, 3, c->B, c->Q, c->Cout);
    mf_attention_params p = ga_params(c, (void *const *)c->w, MF_F64);
    mf_arena_mark_t mark = mf_arena_mark(g_ctx.arena);
    mf_status st = mf_gated_attention_forward(&g_ctx, &to, NULL, &tqx, &tkvx, &tb, &tm, &p, false);
    if (st != MF_OK) mf_test_fail("gradcheck forward failed: %s", mf_last_error());
    mf_arena_release(g_ctx.arena, mark);
}

static void test_gated_gradcheck(void)
{
    gc_ud u = {.c = ga_make(true, false, 3000)};
    ga_case *c = &u.c;
    int64_t nq = c->B * c->Q * c->Cin, nk = c->B * c->K * c->Cin, nb = c->H * c->Q * c->K,
            no = c->B * c->Q * c->Cout;
    u.out = dnew(no);
    double *gout = rnd(no, 3090);
    ga_res zero = {0}, g;
    zero.out = dnew(no);
    zero.dq_x = dnew(nq);
    zero.dkv_x = dnew(nk);
    zero.dbias = dnew(nb);
    for (int i = 0; i < NW; i++) zero.dw[i] = dnew(w_numel(c, i));
    g = ga_res_from(c, &zero, MF_F64);
    g_ctx.policy.chunk_size = 2;
    g_ctx.policy.storage = MF_BF16; /* ignored by the f64 run */
    ga_run(c, MF_F64, c->q_x, c->kv_x, c->bias, c->mask, (void *const *)c->w, gout, &g,
           "gated attention f64 (gradcheck case)");
    mf_gc_array in[3 + NW];
    const double *grads[3 + NW];
    int n = 0;
    in[n] = (mf_gc_array){"q_x", c->q_x, nq};
    grads[n++] = g.dq_x;
    in[n] = (mf_gc_array){"kv_x", c->kv_x, nk};
    grads[n++] = g.dkv_x;
    in[n] = (mf_gc_array){"bias", c->bias, nb};
    grads[n++] = g.dbias;
    for (int i = 0; i < NW; i++) {
        in[n] = (mf_gc_array){g_wname[i], c->w[i], w_numel(c, i)};
        grads[n++] = g.dw[i];
    }
    mf_gc_array outs[1] = {{"out", u.out, no}};
    const double *gouts[1] = {gout};
    mf_gradcheck("tensor-API f64 gated cross-attention B3 Q5 K4 Cin5 H2 D3 Cout4 chunk 2",
                 gc_forward, &u, in, grads, n, outs, gouts, 1, MF_TOL_FD_STEP, MF_TOL_FD_ATOL,
                 MF_TOL_FD_RTOL, 0);
    g_ctx.policy = mf_policy_default();
    free_all();
}

/* ---- 5: mixed dtypes and f64 on CUDA -------------------------------------------------------- */

static void expect_error(mf_status got, mf_status want, const char *needle, const char *what)
{
    const char *msg = mf_last_error();
    bool ok = got == want && strstr(msg, needle) != NULL;
    mf_test_count(ok);
    printf("  %-40s -> %s: %s  %s\n", what, mf_status_name(got), msg, ok ? "ok" : "FAIL");
    if (!ok)
        mf_test_fail("%s: expected %s naming \"%s\", got %s: %s", what, mf_status_name(want),
                     needle, mf_status_name(got), msg);
    mf_clear_error();
}

static void test_rejections(void)
{
    double d[64] = {0};
    float f[64] = {0};
    for (int i = 0; i < 64; i++) d[i] = f[i] = 1.0f + 0.01f * (float)i;
    mf_tensor a64 = T64(d, 2, 2, 3), b32 = T32(f, 1, 3), y64 = T64(d + 8, 2, 2, 3);
    mf_tensor a32 = T32(f, 2, 2, 3), b64 = T64(d, 1, 3), y32 = T32(f + 8, 2, 2, 3);
    expect_error(mf_add(&g_ctx, &y64, &a64, &b32), MF_ERR_INVALID, "tensor b ",
                 "add(f64 a, f32 b)");
    expect_error(mf_mul(&g_ctx, &y32, &a32, &b64), MF_ERR_INVALID, "tensor b ",
                 "mul(f32 a, f64 b)");
    expect_error(mf_add(&g_ctx, &y32, &a64, &b64), MF_ERR_INVALID, "tensor y ",
                 "add(f64 a, f64 b) into f32 y");

    mf_tensor x64 = T64(d, 2, 2, 3), w32 = T32(f, 2, 3, 2), o64 = T64(d + 8, 2, 2, 2);
    expect_error(mf_linear_forward(&g_ctx, &o64, &x64, &w32, NULL, false), MF_ERR_INVALID,
                 "tensor w ", "linear(f64 x, f32 w)");
    mf_tensor m3a = T64(d, 3, 1, 2, 3), m3b = T32(f, 3, 1, 3, 2), m3c = T64(d + 8, 3, 1, 2, 2);
    expect_error(mf_matmul(&g_ctx, &m3c, &m3a, false, &m3b, false, 1.0f, 0.0f), MF_ERR_INVALID,
                 "tensor b ", "matmul(f64 a, f32 b)");

    mf_tensor g32 = T32(f, 1, 3), be64 = T64(d + 16, 1, 3), ln_y = T64(d + 24, 2, 2, 3);
    expect_error(mf_layer_norm_forward(&g_ctx, &ln_y, NULL, NULL, &x64, &g32, &be64, 1e-5f),
                 MF_ERR_INVALID, "gamma", "layer_norm(f64 x, f32 gamma)");
    mf_tensor sx = T64(d, 4, 1, 1, 2, 3), sy = T64(d + 8, 4, 1, 1, 2, 3), sm = T32(f, 2, 1, 3);
    expect_error(mf_softmax_forward(&g_ctx, &sy, &sx, NULL, &sm), MF_ERR_INVALID, "softmax mask",
                 "softmax(f64 x, f32 mask)");
    mf_tensor tab = T64(d, 2, 4, 2), rows32 = T32(f, 2, 2, 2);
    int32_t idx[2] = {0, 3};
    mf_tensor ti = mf_tensor_make(idx, MF_I32, MF_DEV_CPU, 1, (const int64_t[MF_MAX_DIMS]){2});
    expect_error(mf_gather_rows(&g_ctx, &rows32, &tab, &ti), MF_ERR_INVALID, "gather_rows y",
                 "gather_rows(f64 x) into f32 y");
    mf_tensor q = T64(d, 4, 1, 2, 1, 2), o = T64(d + 8, 4, 1, 2, 1, 2), l32 = T32(f, 3, 1, 1, 2);
    expect_error(mf_attention_forward(&g_ctx, &o, &l32, &q, &q, &q, NULL, NULL, 1.0f),
                 MF_ERR_INVALID, "lse", "attention(f64 q, f32 lse)");

    /* gated attention: an f32 mask, then an f32 weight, in an f64 call */
    ga_case c = ga_make(true, false, 4000);
    mf_tensor tqx = T64(c.q_x, 3, c.B, c.Q, c.Cin), tkvx = T64(c.kv_x, 3, c.B, c.K, c.Cin),
              tm32 = T32(to32(c.mask, c.B * c.K), 2, c.B, c.K), tm = T64(c.mask, 2, c.B, c.K),
              to = T64(dnew(c.B * c.Q * c.Cout), 3, c.B, c.Q, c.Cout);
    mf_attention_params p = ga_params(&c, (void *const *)c.w, MF_F64);
    expect_error(mf_gated_attention_forward(&g_ctx, &to, NULL, &tqx, &tkvx, NULL, &tm32, &p, false),
                 MF_ERR_INVALID, "mask", "gated attention(f64, f32 mask)");
    p.key_w = w_tensor(&c, to32(c.w[W_KEY], w_numel(&c, W_KEY)), W_KEY, MF_F32);
    expect_error(mf_gated_attention_forward(&g_ctx, &to, NULL, &tqx, &tkvx, NULL, &tm, &p, false),
                 MF_ERR_INVALID, "key_w", "gated attention(f64, f32 key_w)");

    /* f64 on a CUDA context: refused before dispatch (the tensors are never touched) */
    mf_ctx cuda = g_ctx;
    cuda.device = MF_DEV_CUDA;
    mf_tensor ca = a64, cb = b64, cy = y64, c32 = a32;
    ca.device = cb.device = cy.device = c32.device = MF_DEV_CUDA;
    expect_error(mf_add(&cuda, &cy, &ca, &cb), MF_ERR_UNSUPPORTED, "CPU only", "add f64 on cuda");
    expect_error(mf_convert(&cuda, &cy, &c32), MF_ERR_UNSUPPORTED, "CPU only",
                 "convert f32 -> f64 on cuda");
    mf_tensor cm = m3a, cmc = m3c, cmb = m3a;
    cm.device = cmc.device = MF_DEV_CUDA;
    cmb.device = MF_DEV_CUDA;
    cmb.shape[1] = 3, cmb.shape[2] = 2;
    expect_error(mf_matmul(&cuda, &cmc, &cm, false, &cmb, false, 1.0f, 0.0f), MF_ERR_UNSUPPORTED,
                 "CPU only", "matmul f64 on cuda");
    tqx.device = MF_DEV_CUDA;
    expect_error(mf_gated_attention_forward(&cuda, &to, NULL, &tqx, &tqx, NULL, NULL, &p, false),
                 MF_ERR_UNSUPPORTED, "CPU only", "gated attention f64 on cuda");
    free_all();
}

/* ---- 6: saved activations ------------------------------------------------------------------- */

static void test_saved(void)
{
    const int64_t n = 13;
    double *x = rnd(n, 5000);
    for (int64_t i = 0; i < n; i++) x[i] += 1e-10 * (double)(i + 1); /* below f32 and bf16 */
    float *x32 = to32(x, n);
    mf_tensor t64 = T64(x, 1, n), t32 = T32(x32, 1, n), s64, s32, v64, v32, w;
    g_ctx.policy.storage = MF_BF16;
    mf_arena_mark_t mark = mf_arena_mark(g_ctx.arena);
    MF_TEST_OK(mf_save_activation(&g_ctx, &s64, &t64, "test saved f64"));
    MF_TEST_TRUE(s64.dtype == MF_F64, "f64 activation saved as %s under bf16 storage",
                 mf_dtype_name(s64.dtype));
    bitwise64("saved f64 activation under bf16 storage (expected: src)", s64.data, x, n);
    MF_TEST_OK(mf_saved_view(&g_ctx, &v64, &s64, "test view f64"));
    MF_TEST_TRUE(v64.dtype == MF_F64 && v64.data == s64.data,
                 "mf_saved_view of an f64 tensor is not the tensor itself");
    expect_error(mf_saved_as_f32(&g_ctx, &w, &s64, "test as_f32"), MF_ERR_INVALID, "f64",
                 "mf_saved_as_f32 of an f64 tensor");

    MF_TEST_OK(mf_save_activation(&g_ctx, &s32, &t32, "test saved f32"));
    MF_TEST_TRUE(s32.dtype == MF_BF16, "f32 activation saved as %s under bf16 storage",
                 mf_dtype_name(s32.dtype));
    MF_TEST_OK(mf_saved_view(&g_ctx, &v32, &s32, "test view bf16"));
    float *want = to32(x, n);
    for (int64_t i = 0; i < n; i++) want[i] = mf_round_bf16(x32[i]);
    MF_TEST_TRUE(v32.dtype == MF_F32 && memcmp(v32.data, want, sizeof(float) * (size_t)n) == 0,
                 "mf_saved_view of bf16 is not the f32 widening of the rounded values");
    MF_TEST_OK(mf_saved_as_f32(&g_ctx, &w, &s32, "test as_f32 bf16"));
    MF_TEST_TRUE(w.dtype == MF_F32 && memcmp(w.data, want, sizeof(float) * (size_t)n) == 0,
                 "mf_saved_as_f32 of bf16 changed");
    g_ctx.policy.storage = MF_F32;
    mf_tensor s32b, v32b;
    MF_TEST_OK(mf_save_activation(&g_ctx, &s32b, &t32, "test saved f32 f32"));
    MF_TEST_OK(mf_saved_view(&g_ctx, &v32b, &s32b, "test view f32"));
    MF_TEST_TRUE(v32b.dtype == MF_F32 && v32b.data == s32b.data,
                 "mf_saved_view of an f32 tensor is not the tensor itself");
    printf("  saved: f64 kept in f64 under bf16 storage; views f64 -> f64, f32 -> f32, bf16 -> "
           "f32\n");
    mf_arena_release(g_ctx.arena, mark);
    g_ctx.policy = mf_policy_default();
    free_all();
}

int main(void)
{
    mf_status st = mf_test_ctx_cpu(&g_ctx, &g_arena, (size_t)64 << 20);
    if (st != MF_OK) {
        printf("FAIL: context: %s\n", mf_last_error());
        return 1;
    }
    printf("1-2. every op in f64 against mf_ref_*_f64 (bitwise) and against its f32 run\n");
    test_activations();
    test_add_mul();
    test_scale_axpy_fill_convert();
    test_layout();
    test_layer_norm();
    test_softmax();
    test_linear();
    test_matmul();
    test_attention_core();
    printf("3. gated attention f64 against mf_ref_gated_attention_*_f64 (rtol 1e-12)\n");
    test_gated(true, false);
    test_gated(false, true);
    printf("4. finite differences of the tensor-API f64 gated attention\n");
    test_gated_gradcheck();
    printf("5. mixed f32/f64 calls and f64 on CUDA are refused\n");
    test_rejections();
    printf("6. saved activations in f64\n");
    test_saved();
    mf_test_ctx_free(&g_ctx, &g_arena);
    return mf_test_finish("test_ops_f64");
}
