/* Batched matrix product: a case worked by hand; the double reference's backward against finite
 * differences for every transpose and broadcast combination; the oneDNN f32 path against the
 * double reference (forward with beta = 0 over NaN and beta != 0, accumulating backward, odd and
 * larger sizes); the bf16 compute path against the f32 path; the strided internal API (per-head
 * products on [B, Q, H, D] tensors, bias and alpha); arena balance and scratchpad accounting;
 * primitive cache reuse; shape errors. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/cpu/cpu_backend.h"
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

/* Arena offset unchanged by an op (workspaces released before returning). */
static void check_arena_balanced(const char *what, const mf_ctx *ctx, size_t before)
{
    size_t after = mf_arena_used(ctx->arena);
    MF_TEST_TRUE(after == before, "%s: arena offset %zu after the op, %zu before", what, after,
                 before);
}

/* The product ran in one of oneDNN's optimised kernels, not its reference loops. */
static void check_fast_impl(const char *what, const mf_ctx *ctx)
{
    const char *impl = mf_dnnl_last_impl(ctx->dnnl);
    MF_TEST_TRUE(impl[0] && strncmp(impl, "ref", 3) != 0,
                 "%s: oneDNN ran '%s', its slow reference implementation", what, impl);
}

static const mf_arena_label_stat *arena_label(const mf_arena *a, const char *label)
{
    for (int i = 0; i < a->nlabels; i++)
        if (strcmp(a->labels[i].label, label) == 0) return &a->labels[i];
    return NULL;
}

/* Per-element check after dividing candidate and reference by the reference's rms: bf16 input
 * rounding errs in proportion to the size of the products, so the tolerance is stated relative
 * to the output's scale (a transposed or misplaced result still errs by O(1) and fails). */
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

/* ---- a case worked by hand ------------------------------------------------------------------ */

static void test_hand_case(mf_ctx *ctx)
{
    /* a = [[1, 2, 3], [4, 5, 6]], b = [[1, 0], [0, 1], [1, 1]]: a @ b = [[4, 5], [10, 11]];
     * alpha 2, beta 0.5 over c = [[1, 2], [3, 4]] gives [[8.5, 11], [21.5, 24]]. */
    float a[6] = {1, 2, 3, 4, 5, 6}, b[6] = {1, 0, 0, 1, 1, 1}, c[4] = {1, 2, 3, 4};
    const double want[4] = {8.5, 11, 21.5, 24};
    mf_tensor ta = mf_tensor_4(a, MF_F32, MF_DEV_CPU, 3, 1, 2, 3, 1);
    mf_tensor tb = mf_tensor_4(b, MF_F32, MF_DEV_CPU, 3, 1, 3, 2, 1);
    mf_tensor tc = mf_tensor_4(c, MF_F32, MF_DEV_CPU, 3, 1, 2, 2, 1);
    MF_TEST_OK(mf_matmul(ctx, &tc, &ta, false, &tb, false, 2.0f, 0.5f));
    mf_check_close_f32_f64("hand case: 2 a@b + 0.5 c [2, 2]", c, want, 4, MF_TOL_F32_ATOL,
                           MF_TOL_F32_RTOL);
    /* The same with both operands stored transposed: a^T [3, 2], b^T [2, 3]. */
    float at[6] = {1, 4, 2, 5, 3, 6}, bt[6] = {1, 0, 1, 0, 1, 1}, c2[4] = {1, 2, 3, 4};
    mf_tensor tat = mf_tensor_4(at, MF_F32, MF_DEV_CPU, 3, 1, 3, 2, 1);
    mf_tensor tbt = mf_tensor_4(bt, MF_F32, MF_DEV_CPU, 3, 1, 2, 3, 1);
    mf_tensor tc2 = mf_tensor_4(c2, MF_F32, MF_DEV_CPU, 3, 1, 2, 2, 1);
    MF_TEST_OK(mf_matmul(ctx, &tc2, &tat, true, &tbt, true, 2.0f, 0.5f));
    mf_check_close_f32_f64("hand case: both transposed", c2, want, 4, MF_TOL_F32_ATOL,
                           MF_TOL_F32_RTOL);
}

/* ---- configurations ------------------------------------------------------------------------ */

typedef struct {
    int64_t batch, batch_a, batch_b, M, N, K;
    bool ta, tb;
} mm_cfg;

static const mm_cfg CFGS[] = {
    {1, 1, 1, 7, 13, 5, false, false}, {3, 3, 3, 7, 13, 5, false, false},
    {3, 3, 3, 7, 13, 5, true, false},  {3, 3, 3, 7, 13, 5, false, true},
    {3, 3, 3, 7, 13, 5, true, true},   {3, 1, 3, 7, 13, 5, false, false},
    {3, 3, 1, 7, 13, 5, true, true},   {3, 1, 3, 7, 13, 5, true, false},
    {3, 3, 1, 7, 13, 5, false, true},  {3, 1, 1, 7, 13, 5, false, true},
};
#define NCFG ((int)(sizeof CFGS / sizeof CFGS[0]))

static void cfg_name(char *buf, size_t cap, const mm_cfg *c)
{
    snprintf(buf, cap, "b%lld(a%lld,b%lld) %lldx%lldx%lld%s%s", (long long)c->batch,
             (long long)c->batch_a, (long long)c->batch_b, (long long)c->M, (long long)c->N,
             (long long)c->K, c->ta ? " aT" : "", c->tb ? " bT" : "");
}

static mf_tensor t3(float *p, int64_t d0, int64_t d1, int64_t d2)
{
    return mf_tensor_4(p, MF_F32, MF_DEV_CPU, 3, d0, d1, d2, 1);
}

static mf_tensor tensor_a(float *p, const mm_cfg *c)
{
    return c->ta ? t3(p, c->batch_a, c->K, c->M) : t3(p, c->batch_a, c->M, c->K);
}

static mf_tensor tensor_b(float *p, const mm_cfg *c)
{
    return c->tb ? t3(p, c->batch_b, c->N, c->K) : t3(p, c->batch_b, c->K, c->N);
}

/* ---- finite differences of the double reference -------------------------------------------- */

typedef struct {
    const mm_cfg *c;
    double *out, *a, *b, alpha;
} mm_gc;

static void mm_fwd(void *ud)
{
    mm_gc *s = ud;
    const mm_cfg *c = s->c;
    mf_ref_matmul_f64(s->out, s->a, c->ta, s->b, c->tb, c->batch, c->batch_a, c->batch_b, c->M,
                      c->N, c->K, s->alpha, 0.0);
}

static void test_gradcheck(void)
{
    printf("double reference backward vs central finite differences (h=%.0e):\n", MF_TOL_FD_STEP);
    for (int i = 0; i < NCFG; i++) {
        const mm_cfg *c = &CFGS[i];
        int64_t na = c->batch_a * c->M * c->K, nb = c->batch_b * c->K * c->N,
                nc = c->batch * c->M * c->N;
        double *a = normal_f64(na, 10 + i, 1), *b = normal_f64(nb, 20 + i, 1);
        double *out = calloc((size_t)nc, sizeof(double)), *gout = normal_f64(nc, 30 + i, 1);
        double *da = calloc((size_t)na, sizeof(double)), *db = calloc((size_t)nb, sizeof(double));
        mm_gc s = {c, out, a, b, 0.7};
        mf_ref_matmul_backward_f64(da, db, gout, a, c->ta, b, c->tb, c->batch, c->batch_a,
                                   c->batch_b, c->M, c->N, c->K, 0.7);
        char name[96];
        cfg_name(name, sizeof name, c);
        mf_gc_array ins[2] = {{"a", a, na}, {"b", b, nb}};
        const double *grads[2] = {da, db};
        mf_gc_array outs[1] = {{"c", out, nc}};
        const double *gouts[1] = {gout};
        mf_gradcheck(name, mm_fwd, &s, ins, grads, 2, outs, gouts, 1, MF_TOL_FD_STEP,
                     MF_TOL_FD_ATOL, MF_TOL_FD_RTOL, 0);
        free(a), free(b), free(out), free(gout), free(da), free(db);
    }
}

/* ---- oneDNN f32 against the double reference ----------------------------------------------- */

/* Forward with beta = 0 over a c full of NaN (must be overwritten, never read) and with
 * beta = 0.5 over random c; backward accumulating into random gradients. */
static void check_f32_cfg(mf_ctx *ctx, const mm_cfg *c, uint64_t seed, const char *tag)
{
    int64_t na = c->batch_a * c->M * c->K, nb = c->batch_b * c->K * c->N,
            nc = c->batch * c->M * c->N;
    /* b scaled by K^-1/2 and dc by M^-1/2 keep every output O(1) for the tolerance's sake */
    double *a = normal_f64(na, seed, 1), *b = normal_f64(nb, seed + 1, 1 / sqrt((double)c->K));
    double *c0 = normal_f64(nc, seed + 2, 1),
           *dc = normal_f64(nc, seed + 3, 1 / sqrt((double)c->M));
    double *da0 = normal_f64(na, seed + 4, 1), *db0 = normal_f64(nb, seed + 5, 1);
    float *fa = to_f32(a, na), *fb = to_f32(b, nb), *fc0 = to_f32(c0, nc), *fdc = to_f32(dc, nc);
    float *fda = to_f32(da0, na), *fdb = to_f32(db0, nb);
    float *fc = malloc(sizeof(float) * (size_t)nc);
    double *rc = malloc(sizeof(double) * (size_t)nc);
    mf_tensor ta = tensor_a(fa, c), tb = tensor_b(fb, c), tc = t3(fc, c->batch, c->M, c->N);
    mf_tensor tdc = t3(fdc, c->batch, c->M, c->N);
    mf_tensor tda = tensor_a(fda, c), tdb = tensor_b(fdb, c);
    char name[96], label[160];
    cfg_name(name, sizeof name, c);
    size_t before = mf_arena_used(ctx->arena);

    for (int64_t i = 0; i < nc; i++) fc[i] = NAN;
    MF_TEST_OK(mf_matmul(ctx, &tc, &ta, c->ta, &tb, c->tb, 0.7f, 0.0f));
    check_arena_balanced("mf_matmul", ctx, before);
    check_fast_impl(name, ctx);
    mf_ref_matmul_f64(rc, a, c->ta, b, c->tb, c->batch, c->batch_a, c->batch_b, c->M, c->N, c->K,
                      0.7, 0.0);
    snprintf(label, sizeof label, "%s %s c=0.7ab (over NaN)", tag, name);
    mf_check_close_f32_f64(label, fc, rc, nc, MF_TOL_F32_ATOL, MF_TOL_F32_RTOL);

    memcpy(fc, fc0, sizeof(float) * (size_t)nc);
    memcpy(rc, c0, sizeof(double) * (size_t)nc);
    MF_TEST_OK(mf_matmul(ctx, &tc, &ta, c->ta, &tb, c->tb, 0.7f, 0.5f));
    check_arena_balanced("mf_matmul beta", ctx, before);
    mf_ref_matmul_f64(rc, a, c->ta, b, c->tb, c->batch, c->batch_a, c->batch_b, c->M, c->N, c->K,
                      0.7, 0.5);
    snprintf(label, sizeof label, "%s %s c=0.7ab+0.5c", tag, name);
    mf_check_close_f32_f64(label, fc, rc, nc, MF_TOL_F32_ATOL, MF_TOL_F32_RTOL);

    MF_TEST_OK(mf_matmul_backward(ctx, &tda, &tdb, &tdc, &ta, c->ta, &tb, c->tb, 0.7f));
    check_arena_balanced("mf_matmul_backward", ctx, before);
    mf_ref_matmul_backward_f64(da0, db0, dc, a, c->ta, b, c->tb, c->batch, c->batch_a, c->batch_b,
                               c->M, c->N, c->K, 0.7);
    snprintf(label, sizeof label, "%s %s da (accumulated)", tag, name);
    mf_check_close_f32_f64(label, fda, da0, na, MF_TOL_F32_ATOL, MF_TOL_F32_RTOL);
    snprintf(label, sizeof label, "%s %s db (accumulated)", tag, name);
    mf_check_close_f32_f64(label, fdb, db0, nb, MF_TOL_F32_ATOL, MF_TOL_F32_RTOL);

    /* NULL gradients are skipped: only db changes. */
    float *keep = malloc(sizeof(float) * (size_t)na);
    memcpy(keep, fda, sizeof(float) * (size_t)na);
    MF_TEST_OK(mf_matmul_backward(ctx, NULL, &tdb, &tdc, &ta, c->ta, &tb, c->tb, 0.7f));
    MF_TEST_TRUE(memcmp(keep, fda, sizeof(float) * (size_t)na) == 0,
                 "%s: da changed although not requested", name);
    free(keep);
    free(a), free(b), free(c0), free(dc), free(da0), free(db0), free(fa), free(fb), free(fc0);
    free(fdc), free(fda), free(fdb), free(fc), free(rc);
}

static void test_f32_vs_reference(mf_ctx *ctx)
{
    printf("oneDNN f32 vs double reference (atol %.0e, rtol %.0e):\n", MF_TOL_F32_ATOL,
           MF_TOL_F32_RTOL);
    for (int i = 0; i < NCFG; i++) check_f32_cfg(ctx, &CFGS[i], 100 + 10 * (uint64_t)i, "f32");
    /* One size large enough for oneDNN's blocked kernels, odd tail sizes, and a batched
     * broadcast of AF2-like attention size. */
    const mm_cfg big[] = {
        {1, 1, 1, 128, 256, 384, false, false},
        {1, 1, 1, 131, 257, 383, true, true},
        {4, 4, 1, 67, 96, 33, false, true},
    };
    for (int i = 0; i < 3; i++) check_f32_cfg(ctx, &big[i], 500 + 10 * (uint64_t)i, "f32 large");
    /* Unit dims, whose strides oneDNN must not mistake for a transposed layout. */
    const mm_cfg unit[] = {
        {2, 2, 2, 1, 13, 5, false, false},
        {2, 2, 2, 7, 1, 5, true, true},
        {2, 1, 2, 7, 13, 1, true, false},
        {2, 2, 1, 1, 1, 5, false, true},
    };
    for (int i = 0; i < 4; i++) check_f32_cfg(ctx, &unit[i], 600 + 10 * (uint64_t)i, "f32 unit");
}

/* ---- bf16 compute against f32 -------------------------------------------------------------- */

static void check_bf16_cfg(mf_ctx *ctx, const mm_cfg *c, uint64_t seed)
{
    int64_t na = c->batch_a * c->M * c->K, nb = c->batch_b * c->K * c->N,
            nc = c->batch * c->M * c->N;
    float *a = malloc(sizeof(float) * (size_t)na), *b = malloc(sizeof(float) * (size_t)nb);
    float *dc = malloc(sizeof(float) * (size_t)nc), *c0 = malloc(sizeof(float) * (size_t)nc);
    float *cf = malloc(sizeof(float) * (size_t)nc), *cb = malloc(sizeof(float) * (size_t)nc);
    float *daf = calloc((size_t)na, sizeof(float)), *dab = calloc((size_t)na, sizeof(float));
    float *dbf = calloc((size_t)nb, sizeof(float)), *dbb = calloc((size_t)nb, sizeof(float));
    mf_test_fill_normal_f32(a, na, seed, 1);
    mf_test_fill_normal_f32(b, nb, seed + 1, 1);
    mf_test_fill_normal_f32(dc, nc, seed + 2, 1);
    mf_test_fill_normal_f32(c0, nc, seed + 3, 1);
    memcpy(cf, c0, sizeof(float) * (size_t)nc);
    memcpy(cb, c0, sizeof(float) * (size_t)nc);
    mf_tensor ta = tensor_a(a, c), tb = tensor_b(b, c), tdc = t3(dc, c->batch, c->M, c->N);
    mf_tensor tcf = t3(cf, c->batch, c->M, c->N), tcb = t3(cb, c->batch, c->M, c->N);
    mf_tensor tdaf = tensor_a(daf, c), tdab = tensor_a(dab, c);
    mf_tensor tdbf = tensor_b(dbf, c), tdbb = tensor_b(dbb, c);
    size_t before = mf_arena_used(ctx->arena);
    ctx->policy.compute = MF_F32;
    MF_TEST_OK(mf_matmul(ctx, &tcf, &ta, c->ta, &tb, c->tb, 0.5f, 1.0f));
    MF_TEST_OK(mf_matmul_backward(ctx, &tdaf, &tdbf, &tdc, &ta, c->ta, &tb, c->tb, 0.5f));
    ctx->policy.compute = MF_BF16;
    MF_TEST_OK(mf_matmul(ctx, &tcb, &ta, c->ta, &tb, c->tb, 0.5f, 1.0f));
    check_arena_balanced("bf16 mf_matmul", ctx, before);
    MF_TEST_OK(mf_matmul_backward(ctx, &tdab, &tdbb, &tdc, &ta, c->ta, &tb, c->tb, 0.5f));
    check_arena_balanced("bf16 mf_matmul_backward", ctx, before);
    ctx->policy.compute = MF_F32;
    char name[96], label[160];
    cfg_name(name, sizeof name, c);
    /* The products' share of c (c - c0): accumulating onto c0 would hide the bf16 error. */
    for (int64_t i = 0; i < nc; i++) cf[i] -= c0[i], cb[i] -= c0[i];
    snprintf(label, sizeof label, "bf16 vs f32 %s c", name);
    check_close_rms(label, cb, cf, nc, MF_TOL_BF16_ATOL, MF_TOL_BF16_RTOL);
    snprintf(label, sizeof label, "bf16 vs f32 %s da", name);
    check_close_rms(label, dab, daf, na, MF_TOL_BF16_ATOL, MF_TOL_BF16_RTOL);
    snprintf(label, sizeof label, "bf16 vs f32 %s db", name);
    check_close_rms(label, dbb, dbf, nb, MF_TOL_BF16_ATOL, MF_TOL_BF16_RTOL);
    /* bf16 must actually round: a bit-identical result would mean f32 ran. */
    MF_TEST_TRUE(memcmp(cb, cf, sizeof(float) * (size_t)nc) != 0,
                 "%s: bf16 result identical to f32: inputs were not rounded", name);
    /* Sharper: products of bf16 values are exact in f32, so the bf16 path must match the f32
     * path run on inputs rounded with mf_round_bf16 (round to nearest even) to f32 accuracy. */
    for (int64_t i = 0; i < na; i++) a[i] = mf_round_bf16(a[i]);
    for (int64_t i = 0; i < nb; i++) b[i] = mf_round_bf16(b[i]);
    for (int64_t i = 0; i < nc; i++) dc[i] = mf_round_bf16(dc[i]);
    memset(cf, 0, sizeof(float) * (size_t)nc);
    memset(daf, 0, sizeof(float) * (size_t)na);
    memset(dbf, 0, sizeof(float) * (size_t)nb);
    for (int64_t i = 0; i < nc; i++) cb[i] += c0[i]; /* undo: compare whole results below */
    memcpy(cf, c0, sizeof(float) * (size_t)nc);
    MF_TEST_OK(mf_matmul(ctx, &tcf, &ta, c->ta, &tb, c->tb, 0.5f, 1.0f));
    MF_TEST_OK(mf_matmul_backward(ctx, &tdaf, &tdbf, &tdc, &ta, c->ta, &tb, c->tb, 0.5f));
    for (int64_t i = 0; i < nc; i++) cf[i] -= c0[i], cb[i] -= c0[i];
    snprintf(label, sizeof label, "bf16 vs f32 of rounded inputs %s c", name);
    check_close_rms(label, cb, cf, nc, MF_TOL_F32_ATOL, MF_TOL_F32_RTOL);
    snprintf(label, sizeof label, "bf16 vs f32 of rounded inputs %s da", name);
    check_close_rms(label, dab, daf, na, MF_TOL_F32_ATOL, MF_TOL_F32_RTOL);
    snprintf(label, sizeof label, "bf16 vs f32 of rounded inputs %s db", name);
    check_close_rms(label, dbb, dbf, nb, MF_TOL_F32_ATOL, MF_TOL_F32_RTOL);
    free(a), free(b), free(dc), free(c0), free(cf), free(cb), free(daf), free(dab), free(dbf);
    free(dbb);
}

/* The bf16 inputs are rounded to nearest, ties to even (mf_f32_to_bf16): with K = 1 and
 * b = 1 + 2^-8 (a tie that rounds down to 1), c[m] = bf16(a[m]) exactly. */
static void test_bf16_rounding(mf_ctx *ctx)
{
    enum { M = 67 };
    float a[M], b[1] = {1.0f + 0x1p-8f}, c[M], want[M];
    mf_test_fill_normal_f32(a, M, 31, 3);
    a[0] = 1.0f + 0x1p-8f;               /* tie between 1 and 1 + 2^-7: even is 1 */
    a[1] = 1.0f + 0x1p-7f + 0x1p-8f;     /* tie between 1 + 2^-7 and 1 + 2^-6: even is the latter */
    a[2] = -(1.0f + 0x1p-8f + 0x1p-20f); /* just above the tie: rounds away */
    a[3] = 3.0e38f;                      /* near the largest finite bf16 */
    /* (no subnormals: the AVX512_BF16 dot product treats them as zero, by design of the ISA) */
    for (int m = 0; m < M; m++) want[m] = mf_round_bf16(a[m]);
    mf_tensor ta = t3(a, 1, M, 1), tb = t3(b, 1, 1, 1), tc = t3(c, 1, M, 1);
    ctx->policy.compute = MF_BF16;
    MF_TEST_OK(mf_matmul(ctx, &tc, &ta, false, &tb, false, 1, 0));
    ctx->policy.compute = MF_F32;
    mf_check_bitwise_f32("bf16 inputs rounded to nearest even (K=1)", c, want, M);
}

static void test_bf16_vs_f32(mf_ctx *ctx)
{
    printf("bf16 compute vs f32 compute, per element after dividing by the f32 result's rms "
           "(atol %.0e, rtol %.0e; against f32 of bf16-rounded inputs: atol %.0e, rtol %.0e):\n",
           MF_TOL_BF16_ATOL, MF_TOL_BF16_RTOL, MF_TOL_F32_ATOL, MF_TOL_F32_RTOL);
    test_bf16_rounding(ctx);
    for (int i = 0; i < NCFG; i++) check_bf16_cfg(ctx, &CFGS[i], 700 + 10 * (uint64_t)i);
    const mm_cfg big[] = {{1, 1, 1, 128, 256, 384, false, false},
                          {2, 2, 2, 131, 257, 65, true, true}};
    for (int i = 0; i < 2; i++) check_bf16_cfg(ctx, &big[i], 900 + 10 * (uint64_t)i);

    /* The scratchpad oneDNN asks for comes from the arena under its label, released after. */
    const mf_arena_label_stat *ls = arena_label(ctx->arena, "dnnl scratchpad");
    const mf_arena_label_stat *lq = arena_label(ctx->arena, "matmul bf16 inputs");
    printf("  arena label 'dnnl scratchpad': %lld allocations, peak %zu B, live %zu B\n",
           ls ? ls->count : 0LL, ls ? ls->peak : (size_t)0, ls ? ls->current : (size_t)0);
    printf("  arena label 'matmul bf16 inputs': %lld allocations, peak %zu B, live %zu B\n",
           lq ? lq->count : 0LL, lq ? lq->peak : (size_t)0, lq ? lq->current : (size_t)0);
    MF_TEST_TRUE(ls && ls->count > 0 && ls->peak > 0 && ls->current == 0,
                 "oneDNN scratchpad not taken from the arena (or not released)");
    MF_TEST_TRUE(lq && lq->count > 0 && lq->peak > 0 && lq->current == 0,
                 "bf16 input copies not taken from the arena (or not released)");
}

/* ---- strided internal API -------------------------------------------------------------------- */

/* Attention-shaped products read per head straight from [B, Q, H, D] tensors:
 * logits[b, h, q, k] = alpha sum_d q[b, q, h, d] k[b, k, h, d] and
 * out[b, q, h, d] = sum_k p[b, h, q, k] v[b, k, h, d], with 2 batch dims {B, H}. */
static void test_strided(mf_ctx *ctx, mf_dtype compute, int64_t Q)
{
    const int64_t B = 2, Kk = 9, H = 3, D = 5;
    const int64_t nq = B * Q * H * D, nk = B * Kk * H * D, nl = B * H * Q * Kk;
    float *q = malloc(sizeof(float) * nq), *k = malloc(sizeof(float) * nk);
    float *v = malloc(sizeof(float) * nk), *lg = malloc(sizeof(float) * nl);
    float *out = malloc(sizeof(float) * nq);
    double *rl = malloc(sizeof(double) * nl), *ro = malloc(sizeof(double) * nq);
    mf_test_fill_normal_f32(q, nq, 41, 1);
    mf_test_fill_normal_f32(k, nk, 42, 1);
    mf_test_fill_normal_f32(v, nk, 43, 1);
    for (int64_t i = 0; i < nq; i++) out[i] = NAN;
    const float alpha = 0.4472136f; /* D^-1/2 */
    mf_cpu_gemm_desc g;
    memset(&g, 0, sizeof g);
    g.nbatch = 2;
    g.batch[0] = B, g.batch[1] = H;
    g.M = Q, g.N = Kk, g.K = D;
    g.a_sb[0] = Q * H * D, g.a_sb[1] = D, g.a_sm = H * D, g.a_sk = 1;
    g.b_sb[0] = Kk * H * D, g.b_sb[1] = D, g.b_sk = 1, g.b_sn = H * D;
    g.c_sb[0] = H * Q * Kk, g.c_sb[1] = Q * Kk, g.c_sm = Kk, g.c_sn = 1;
    g.alpha = alpha;
    ctx->policy.compute = compute;
    size_t before = mf_arena_used(ctx->arena);
    MF_TEST_OK(mf_cpu_gemm(ctx, &g, lg, q, k, NULL));
    check_arena_balanced("strided logits", ctx, before);
    check_fast_impl("strided logits", ctx);
    mf_cpu_gemm_desc g2;
    memset(&g2, 0, sizeof g2);
    g2.nbatch = 2;
    g2.batch[0] = B, g2.batch[1] = H;
    g2.M = Q, g2.N = D, g2.K = Kk;
    g2.a_sb[0] = H * Q * Kk, g2.a_sb[1] = Q * Kk, g2.a_sm = Kk, g2.a_sk = 1;
    g2.b_sb[0] = Kk * H * D, g2.b_sb[1] = D, g2.b_sk = H * D, g2.b_sn = 1;
    g2.c_sb[0] = Q * H * D, g2.c_sb[1] = D, g2.c_sm = H * D, g2.c_sn = 1;
    g2.alpha = 1;
    MF_TEST_OK(mf_cpu_gemm(ctx, &g2, out, lg, v, NULL));
    check_arena_balanced("strided p @ v", ctx, before);
    check_fast_impl("strided p @ v", ctx);
    ctx->policy.compute = MF_F32;
    /* References from the f32 inputs as stored (the second product from the computed logits, so
     * only its own rounding is measured). */
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < H; h++)
            for (int64_t i = 0; i < Q; i++)
                for (int64_t j = 0; j < Kk; j++) {
                    double s = 0;
                    for (int64_t d = 0; d < D; d++)
                        s += (double)q[((b * Q + i) * H + h) * D + d] *
                             (double)k[((b * Kk + j) * H + h) * D + d];
                    rl[((b * H + h) * Q + i) * Kk + j] = alpha * s;
                }
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < H; h++)
            for (int64_t i = 0; i < Q; i++)
                for (int64_t d = 0; d < D; d++) {
                    double s = 0;
                    for (int64_t j = 0; j < Kk; j++)
                        s += (double)lg[((b * H + h) * Q + i) * Kk + j] *
                             (double)v[((b * Kk + j) * H + h) * D + d];
                    ro[((b * Q + i) * H + h) * D + d] = s;
                }
    const char *tag = compute == MF_BF16 ? "bf16" : "f32";
    char label[128];
    if (compute == MF_F32) {
        snprintf(label, sizeof label, "strided %s: logits = q k^T per head [2,3,%lld,9]", tag,
                 (long long)Q);
        mf_check_close_f32_f64(label, lg, rl, nl, MF_TOL_F32_ATOL, MF_TOL_F32_RTOL);
        snprintf(label, sizeof label, "strided %s: out = p v per head into [2,%lld,3,5]", tag,
                 (long long)Q);
        mf_check_close_f32_f64(label, out, ro, nq, MF_TOL_F32_ATOL, MF_TOL_F32_RTOL);
    } else {
        float *rlf = malloc(sizeof(float) * nl), *rof = malloc(sizeof(float) * nq);
        mf_f64_to_f32(rlf, rl, nl);
        mf_f64_to_f32(rof, ro, nq);
        snprintf(label, sizeof label, "strided %s: logits per head, Q=%lld", tag, (long long)Q);
        check_close_rms(label, lg, rlf, nl, MF_TOL_BF16_ATOL, MF_TOL_BF16_RTOL);
        snprintf(label, sizeof label, "strided %s: out per head, Q=%lld", tag, (long long)Q);
        check_close_rms(label, out, rof, nq, MF_TOL_BF16_ATOL, MF_TOL_BF16_RTOL);
        free(rlf), free(rof);
    }
    free(q), free(k), free(v), free(lg), free(out), free(rl), free(ro);
}

/* c = alpha (a @ b + bias) + beta c through the internal API, and K = 0. */
static void test_bias_alpha_k0(mf_ctx *ctx)
{
    const int64_t M = 9, N = 11, K = 6;
    float a[9 * 6], b[6 * 11], bias[11], c[9 * 11], c0[9 * 11];
    double ref[9 * 11];
    mf_test_fill_normal_f32(a, M * K, 51, 1);
    mf_test_fill_normal_f32(b, K * N, 52, 1);
    mf_test_fill_normal_f32(bias, N, 53, 1);
    mf_test_fill_normal_f32(c0, M * N, 54, 1);
    memcpy(c, c0, sizeof c);
    mf_cpu_gemm_desc g = mf_cpu_gemm_contiguous(1, 1, 1, M, N, K, false, false, 0.8f, -0.3f);
    MF_TEST_OK(mf_cpu_gemm(ctx, &g, c, a, b, bias));
    for (int64_t m = 0; m < M; m++)
        for (int64_t n = 0; n < N; n++) {
            double s = bias[n];
            for (int64_t k = 0; k < K; k++) s += (double)a[m * K + k] * b[k * N + n];
            ref[m * N + n] = 0.8 * s - 0.3 * c0[m * N + n];
        }
    mf_check_close_f32_f64("internal gemm: 0.8 (ab + bias) - 0.3 c", c, ref, M * N, MF_TOL_F32_ATOL,
                           MF_TOL_F32_RTOL);
    /* K = 0: an empty product, c = alpha bias + beta c. */
    memcpy(c, c0, sizeof c);
    mf_cpu_gemm_desc g0 = mf_cpu_gemm_contiguous(1, 1, 1, M, N, 0, false, false, 0.8f, -0.3f);
    MF_TEST_OK(mf_cpu_gemm(ctx, &g0, c, a, b, bias));
    for (int64_t m = 0; m < M; m++)
        for (int64_t n = 0; n < N; n++) ref[m * N + n] = 0.8 * bias[n] - 0.3 * c0[m * N + n];
    mf_check_close_f32_f64("internal gemm: K = 0 gives 0.8 bias - 0.3 c", c, ref, M * N,
                           MF_TOL_F32_ATOL, MF_TOL_F32_RTOL);
}

/* ---- primitive cache ------------------------------------------------------------------------- */

static void test_cache(mf_ctx *ctx)
{
    float a[5 * 3 * 4], b[5 * 4 * 6], c[5 * 3 * 6];
    mf_test_fill_normal_f32(a, 60, 61, 1);
    mf_test_fill_normal_f32(b, 120, 62, 1);
    mf_tensor ta = t3(a, 5, 3, 4), tb = t3(b, 5, 4, 6), tc = t3(c, 5, 3, 6);
    long h0, m0, h1, m1, h2, m2;
    mf_dnnl_cache_stats(ctx->dnnl, &h0, &m0);
    for (int i = 0; i < 10; i++) MF_TEST_OK(mf_matmul(ctx, &tc, &ta, false, &tb, false, 1, 0));
    mf_dnnl_cache_stats(ctx->dnnl, &h1, &m1);
    printf("  cache: 10 identical products: %ld misses, %ld hits (want 1, 9)  %s\n", m1 - m0,
           h1 - h0, m1 - m0 == 1 && h1 - h0 == 9 ? "ok" : "FAIL");
    MF_TEST_TRUE(m1 - m0 == 1 && h1 - h0 == 9, "cache: %ld misses, %ld hits for 10 repeats",
                 m1 - m0, h1 - h0);
    /* A different alpha, beta, or transpose is a different primitive. */
    MF_TEST_OK(mf_matmul(ctx, &tc, &ta, false, &tb, false, 0.5f, 0));
    MF_TEST_OK(mf_matmul(ctx, &tc, &ta, false, &tb, false, 1, 1));
    mf_dnnl_cache_stats(ctx->dnnl, &h2, &m2);
    MF_TEST_TRUE(m2 - m1 == 2 && h2 == h1, "cache: alpha/beta changes should miss (%ld, %ld)",
                 m2 - m1, h2 - h1);
    printf("  cache: new alpha and new beta: %ld misses (want 2); %d primitives held (cap %d)\n",
           m2 - m1, mf_dnnl_cache_size(ctx->dnnl), MF_DNNL_CACHE_CAPACITY);
    /* The cache is bounded: many distinct shapes keep it at its capacity. */
    float *big = calloc(400 * 400, sizeof(float)), *bc = calloc(400 * 400, sizeof(float));
    for (int64_t n = 1; n <= MF_DNNL_CACHE_CAPACITY + 20; n++) {
        mf_tensor x = t3(big, 1, 2, n), w = t3(big, 1, n, 1), y = t3(bc, 1, 2, 1);
        MF_TEST_OK(mf_matmul(ctx, &y, &x, false, &w, false, 1, 0));
    }
    int held = mf_dnnl_cache_size(ctx->dnnl);
    printf("  cache after %d distinct shapes: %d primitives held  %s\n",
           MF_DNNL_CACHE_CAPACITY + 20, held, held == MF_DNNL_CACHE_CAPACITY ? "ok" : "FAIL");
    MF_TEST_TRUE(held == MF_DNNL_CACHE_CAPACITY, "cache holds %d primitives, capacity %d", held,
                 MF_DNNL_CACHE_CAPACITY);
    /* Evicted entries are gone cleanly: the first shape still computes correctly. */
    MF_TEST_OK(mf_matmul(ctx, &tc, &ta, false, &tb, false, 1, 0));
    double ref[90];
    double da[60], db[120];
    mf_f32_to_f64(da, a, 60);
    mf_f32_to_f64(db, b, 120);
    mf_ref_matmul_f64(ref, da, false, db, false, 5, 5, 5, 3, 6, 4, 1, 0);
    mf_check_close_f32_f64("cache: product after evictions", c, ref, 90, MF_TOL_F32_ATOL,
                           MF_TOL_F32_RTOL);
    free(big), free(bc);
}

/* ---- shape errors ---------------------------------------------------------------------------- */

static void test_errors(mf_ctx *ctx)
{
    float buf[64] = {0};
    mf_tensor a = t3(buf, 2, 3, 4), b = t3(buf, 2, 5, 6), c = t3(buf, 2, 3, 6);
    expect_invalid("mf_matmul K mismatch (4 vs 5)", mf_matmul(ctx, &c, &a, false, &b, false, 1, 0),
                   "a is [2, 3, 4]");
    mf_tensor b2 = t3(buf, 3, 4, 6);
    expect_invalid("mf_matmul batch 2 vs 3", mf_matmul(ctx, &c, &a, false, &b2, false, 1, 0),
                   "b is [3, 4, 6]");
    mf_tensor b3 = t3(buf, 2, 4, 6), c2 = t3(buf, 2, 4, 6);
    expect_invalid("mf_matmul c rows", mf_matmul(ctx, &c2, &a, false, &b3, false, 1, 0),
                   "c is [2, 4, 6]");
    mf_tensor a2 = mf_tensor_4(buf, MF_F32, MF_DEV_CPU, 2, 3, 4, 1, 1);
    expect_invalid("mf_matmul 2-D a", mf_matmul(ctx, &c, &a2, false, &b3, false, 1, 0),
                   "a is [3, 4]");
    mf_tensor da = t3(buf, 2, 4, 3);
    expect_invalid("mf_matmul_backward da shape",
                   mf_matmul_backward(ctx, &da, NULL, &c, &a, false, &b3, false, 1), "da");
    mf_tensor ab = a;
    ab.dtype = MF_BF16;
    expect_invalid("mf_matmul bf16 tensor", mf_matmul(ctx, &c, &ab, false, &b3, false, 1, 0),
                   "expected f32");
    expect_invalid("mf_matmul NULL a", mf_matmul(ctx, &c, NULL, false, &b3, false, 1, 0), "a");
}

/* A workspace that does not fit the arena is a clear MF_ERR_NOMEM naming its label, and the
 * arena is left as it was. */
static void test_arena_too_small(void)
{
    mf_ctx ctx;
    mf_arena arena;
    MF_TEST_OK(mf_test_ctx_cpu(&ctx, &arena, 4096));
    if (mf_test_failures()) return;
    const int64_t M = 128, N = 256, K = 384;
    float *a = calloc((size_t)(M * K), sizeof(float)), *b = calloc((size_t)(K * N), sizeof(float));
    float *c = calloc((size_t)(M * N), sizeof(float));
    /* a stored transposed: oneDNN then asks for a scratchpad (~190 KiB) to repack it in f32 */
    mf_tensor ta = t3(a, 1, K, M), tb = t3(b, 1, K, N), tc = t3(c, 1, M, N);
    for (int p = 0; p < 2; p++) {
        ctx.policy.compute = p ? MF_BF16 : MF_F32;
        const char *label = p ? "matmul bf16 inputs" : "dnnl scratchpad";
        mf_status st = mf_matmul(&ctx, &tc, &ta, true, &tb, false, 1, 0);
        const char *msg = st ? mf_last_error() : "";
        bool ok = st == MF_ERR_NOMEM && strstr(msg, label) && mf_arena_used(&arena) == 0;
        printf("  %s 128x256x384 aT in a 4 KiB arena -> %s: %s  %s\n",
               mf_dtype_name(ctx.policy.compute), mf_status_name(st), msg, ok ? "ok" : "FAIL");
        MF_TEST_TRUE(ok, "%s product in a 4 KiB arena: expected MF_ERR_NOMEM naming '%s'",
                     mf_dtype_name(ctx.policy.compute), label);
        mf_clear_error();
    }
    free(a), free(b), free(c);
    mf_test_ctx_free(&ctx, &arena);
}

int main(void)
{
    mf_ctx ctx;
    mf_arena arena;
    MF_TEST_OK(mf_test_ctx_cpu(&ctx, &arena, (size_t)256 << 20));
    if (mf_test_failures()) return mf_test_finish("test_matmul");
    test_hand_case(&ctx);
    test_gradcheck();
    test_f32_vs_reference(&ctx);
    test_bf16_vs_f32(&ctx);
    printf("strided batched products through the internal API:\n");
    test_strided(&ctx, MF_F32, 7);
    test_strided(&ctx, MF_BF16, 7);
    test_strided(&ctx, MF_F32, 1);
    test_bias_alpha_k0(&ctx);
    printf("primitive cache:\n");
    test_cache(&ctx);
    printf("shape errors:\n");
    test_errors(&ctx);
    printf("workspaces larger than the arena:\n");
    test_arena_too_small();
    MF_TEST_TRUE(mf_arena_used(&arena) == 0, "arena not empty at the end: %zu bytes",
                 mf_arena_used(&arena));
    mf_test_ctx_free(&ctx, &arena);
    return mf_test_finish("test_matmul");
}
