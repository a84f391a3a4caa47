/* Angle resnet (Alg. 20 lines 11-14; structure_module/angle_resnet.h):
 *  1. the module run in f64: its forward against an independent plain-loop double reference
 *     (1e-12), its backward (s, s_initial and every parameter, all 6 + 4 B of them) against
 *     central finite differences of its forward with random upstream gradients on both outputs
 *     (unnormalized and normalised angles), odd sizes (N 7, c_s 5, 6 channels) with 1, 2 and 3
 *     residual blocks (haiku names resblock1, resblock1_1, resblock1_2 ...);
 *  2. the f32 module against the f64 module (outputs and every gradient, MF_TOL_F32_*), the
 *     backward accumulating onto nonzero gradients; NULL upstream gradients;
 *  3. slice sizes {1, 3, 64} against unsliced (N 11): outputs and input gradients bitwise, weight
 *     gradients (sums over slices) within 1e-6 absolute + 1e-5 relative; inference (saved NULL)
 *     bitwise equal to the training forward;
 *  4. the arena: back at its mark after inference, exactly the saved tensors left after a training
 *     forward, nothing more after backward; a too small arena fails leaving nothing allocated;
 *     invalid dims and shapes refused;
 *  5. bf16 storage (forward bitwise unchanged) and bf16 compute against f32: outputs and every
 *     gradient within max|c - r| / max|r| <= MF_TOL_BF16_RTOL per tensor (a weight gradient sums
 *     N products of bf16-rounded factors: single elements near zero carry larger relative error);
 *  6. AF2 reference (expected_outputs.h5 with params_af2.npz): from the reference's recorded
 *     structure-module states and s_initial = single_layer_norm(in_single), every layer of both
 *     recycling iterations gives out_unnormalized_angles and out_angles within
 *     max|c - r| / max|r| <= MF_TOL_VEC_MODULE. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "data/h5io.h"
#include "model/param_store.h"
#include "structure_module/angle_resnet.h"
#include "tests/support/mf_test.h"

#define MAXP MF_ANGLE_RESNET_MAX_PARAMS
#define NA   14

/* Slicing changes only the summation order of the weight gradients (sums over row slices). */
#define TOL_SLICE_ATOL 1e-6
#define TOL_SLICE_RTOL 1e-5

static double *dalloc(int64_t n)
{
    return calloc((size_t)(n > 0 ? n : 1), sizeof(double));
}

static float *falloc(int64_t n)
{
    return calloc((size_t)(n > 0 ? n : 1), sizeof(float));
}

typedef struct {
    mf_angle_resnet_dims d;
    int64_t N;
    int np;
    mf_param_spec spec[MAXP];
    int64_t pn[MAXP];
    double *s, *si, *p[MAXP]; /* inputs and parameters (representable in f32) */
    double *u, *ang;          /* outputs of the last forward */
    double *gu, *ga;          /* random upstream gradients */
} arcase;

static void round_f32(double *x, int64_t n)
{
    for (int64_t i = 0; i < n; i++) x[i] = (double)(float)x[i];
}

static void case_init(arcase *c, int64_t N, int64_t c_s, int64_t ch, int64_t blocks, uint64_t seed)
{
    memset(c, 0, sizeof *c);
    c->d = (mf_angle_resnet_dims){.c_s = c_s, .num_channel = ch, .num_residual_block = blocks};
    c->N = N;
    c->np = mf_angle_resnet_param_specs(&c->d, c->spec);
    c->s = dalloc(N * c_s), c->si = dalloc(N * c_s);
    mf_test_fill_normal_f64(c->s, N * c_s, seed, 1.0);
    mf_test_fill_normal_f64(c->si, N * c_s, seed + 1, 1.0);
    round_f32(c->s, N * c_s), round_f32(c->si, N * c_s);
    for (int k = 0; k < c->np; k++) {
        c->pn[k] = 1;
        for (int j = 0; j < c->spec[k].ndim; j++) c->pn[k] *= c->spec[k].shape[j];
        c->p[k] = dalloc(c->pn[k]);
        /* random everywhere (AF2's zero init of resblock2 would hide gradients): weights of
         * variance 1/fan_in, biases 0.3 */
        const double sd = c->spec[k].ndim == 2 ? 1.0 / sqrt((double)c->spec[k].shape[0]) : 0.3;
        mf_test_fill_normal_f64(c->p[k], c->pn[k], seed + 10 + (uint64_t)k, sd);
        round_f32(c->p[k], c->pn[k]);
    }
    c->u = dalloc(N * NA), c->ang = dalloc(N * NA);
    c->gu = dalloc(N * NA), c->ga = dalloc(N * NA);
    mf_test_fill_normal_f64(c->gu, N * NA, seed + 2, 1.0);
    mf_test_fill_normal_f64(c->ga, N * NA, seed + 3, 1.0);
    round_f32(c->gu, N * NA), round_f32(c->ga, N * NA);
}

static void case_free(arcase *c)
{
    free(c->s), free(c->si), free(c->u), free(c->ang), free(c->gu), free(c->ga);
    for (int k = 0; k < c->np; k++) free(c->p[k]);
}

/* The plain-loop reference of AF2's MultiRigidSidechain angles. */
static void dense(double *y, const double *x, const double *w, const double *b, int64_t N,
                  int64_t in, int64_t out, bool relu_in, bool acc)
{
    for (int64_t i = 0; i < N; i++)
        for (int64_t o = 0; o < out; o++) {
            double v = b[o];
            for (int64_t k = 0; k < in; k++) {
                const double xv = x[i * in + k];
                v += (relu_in && xv < 0 ? 0 : xv) * w[k * out + o];
            }
            y[i * out + o] = acc ? y[i * out + o] + v : v;
        }
}

static void reference_forward(const arcase *c, double *u, double *ang)
{
    const int64_t N = c->N, CS = c->d.c_s, C = c->d.num_channel;
    double *a = dalloc(N * C), *h = dalloc(N * C);
    dense(a, c->s, c->p[0], c->p[1], N, CS, C, true, false);
    dense(a, c->si, c->p[2], c->p[3], N, CS, C, true, true);
    for (int64_t k = 0; k < c->d.num_residual_block; k++) {
        double *const *bp = &c->p[6 + 4 * k];
        dense(h, a, bp[0], bp[1], N, C, C, true, false);
        dense(a, h, bp[2], bp[3], N, C, C, true, true);
    }
    dense(u, a, c->p[4], c->p[5], N, C, NA, true, false);
    for (int64_t k = 0; k < N * 7; k++) {
        const double q = u[2 * k] * u[2 * k] + u[2 * k + 1] * u[2 * k + 1];
        const double n = sqrt(q > 1e-12 ? q : 1e-12);
        ang[2 * k] = u[2 * k] / n, ang[2 * k + 1] = u[2 * k + 1] / n;
    }
    free(a), free(h);
}

/* ---- the module over the case, in f64 or f32 ---- */

typedef struct {
    mf_dtype dt;
    void *s, *si, *p[MAXP];    /* inputs */
    void *u, *ang;             /* outputs */
    void *ds, *dsi, *dp[MAXP]; /* gradients (accumulated into) */
    void *gu, *ga;             /* upstream */
} arrun;

static void *conv(const double *x, int64_t n, mf_dtype dt)
{
    if (dt == MF_F64) {
        double *y = dalloc(n);
        memcpy(y, x, sizeof(double) * (size_t)n);
        return y;
    }
    float *y = falloc(n);
    mf_f64_to_f32(y, x, n);
    return y;
}

static void run_alloc(arrun *r, const arcase *c, mf_dtype dt)
{
    memset(r, 0, sizeof *r);
    r->dt = dt;
    const int64_t N = c->N, CS = c->d.c_s;
    r->s = conv(c->s, N * CS, dt), r->si = conv(c->si, N * CS, dt);
    r->gu = conv(c->gu, N * NA, dt), r->ga = conv(c->ga, N * NA, dt);
    const size_t es = dt == MF_F64 ? 8 : 4;
    r->u = calloc((size_t)(N * NA), es), r->ang = calloc((size_t)(N * NA), es);
    r->ds = calloc((size_t)(N * CS), es), r->dsi = calloc((size_t)(N * CS), es);
    for (int k = 0; k < c->np; k++) {
        r->p[k] = conv(c->p[k], c->pn[k], dt);
        r->dp[k] = calloc((size_t)c->pn[k], es);
    }
}

static void run_free(arrun *r, const arcase *c)
{
    free(r->s), free(r->si), free(r->gu), free(r->ga), free(r->u), free(r->ang);
    free(r->ds), free(r->dsi);
    for (int k = 0; k < c->np; k++) free(r->p[k]), free(r->dp[k]);
}

static mf_tensor tens(void *p, mf_dtype dt, int ndim, int64_t d0, int64_t d1, int64_t d2)
{
    return mf_tensor_4(p, dt, MF_DEV_CPU, ndim, d0, d1, d2, 1);
}

static void bind(const arcase *c, void *const *data, mf_dtype dt, mf_angle_resnet_params *p)
{
    memset(p, 0, sizeof *p);
    mf_tensor *t = MF_PARAMS_AS_ARRAY(p);
    for (int k = 0; k < c->np; k++)
        t[k] = mf_tensor_make(data[k], dt, MF_DEV_CPU, c->spec[k].ndim, c->spec[k].shape);
}

/* Forward (training when train, else inference) and, when train, backward with the case's
 * upstream gradients (NULL ones when gu_on / ga_on are false). Returns the status. */
static mf_status run_module(mf_ctx *ctx, const arcase *c, arrun *r, bool train, bool gu_on,
                            bool ga_on)
{
    const int64_t N = c->N, CS = c->d.c_s;
    const mf_dtype dt = r->dt;
    mf_angle_resnet_params p, dp;
    bind(c, r->p, dt, &p);
    bind(c, r->dp, dt, &dp);
    mf_tensor s = tens(r->s, dt, 2, N, CS, 1), si = tens(r->si, dt, 2, N, CS, 1);
    mf_tensor u = tens(r->u, dt, 3, N, 7, 2), a = tens(r->ang, dt, 3, N, 7, 2);
    mf_tensor gu = tens(r->gu, dt, 3, N, 7, 2), ga = tens(r->ga, dt, 3, N, 7, 2);
    mf_tensor ds = tens(r->ds, dt, 2, N, CS, 1), dsi = tens(r->dsi, dt, 2, N, CS, 1);
    const mf_arena_mark_t mark = mf_arena_mark(ctx->arena);
    mf_angle_resnet_saved sv;
    mf_status st = mf_angle_resnet_forward(ctx, &u, &a, train ? &sv : NULL, &s, &si, &p, &c->d);
    if (st == MF_OK && train)
        st = mf_angle_resnet_backward(ctx, &ds, &dsi, &dp, gu_on ? &gu : NULL, ga_on ? &ga : NULL,
                                      &sv, &s, &si, &p, &c->d);
    mf_arena_release(ctx->arena, mark);
    return st;
}

/* ---- 1. f64: reference and finite differences ---- */

typedef struct {
    mf_ctx *ctx;
    arcase *c;
    arrun *r;
} fd_ud;

static void fd_fwd(void *ud)
{
    fd_ud *f = ud;
    /* the FD perturbs the case's double arrays: refresh the run's copies (f64: same data) */
    arcase *c = f->c;
    arrun *r = f->r;
    memcpy(r->s, c->s, sizeof(double) * (size_t)(c->N * c->d.c_s));
    memcpy(r->si, c->si, sizeof(double) * (size_t)(c->N * c->d.c_s));
    for (int k = 0; k < c->np; k++) memcpy(r->p[k], c->p[k], sizeof(double) * (size_t)c->pn[k]);
    mf_status st = run_module(f->ctx, c, r, false, false, false);
    if (st != MF_OK) mf_test_fail("angle resnet f64 forward: %s", mf_last_error());
    memcpy(c->u, r->u, sizeof(double) * (size_t)(c->N * NA));
    memcpy(c->ang, r->ang, sizeof(double) * (size_t)(c->N * NA));
}

static void test_f64(mf_ctx *ctx, int64_t blocks)
{
    printf("1. f64 module, %lld residual block(s): reference forward and finite differences\n",
           (long long)blocks);
    arcase c;
    case_init(&c, 7, 5, 6, blocks, 100 + (uint64_t)blocks);
    arrun r;
    run_alloc(&r, &c, MF_F64);
    double *ru = dalloc(c.N * NA), *ra = dalloc(c.N * NA);
    reference_forward(&c, ru, ra);
    MF_TEST_OK(run_module(ctx, &c, &r, true, true, true));
    char name[96];
    snprintf(name, sizeof name, "f64 unnormalized angles vs reference (%lld blocks)",
             (long long)blocks);
    mf_check_close_f64(name, r.u, ru, c.N * NA, 1e-12, 1e-12);
    snprintf(name, sizeof name, "f64 angles vs reference (%lld blocks)", (long long)blocks);
    mf_check_close_f64(name, r.ang, ra, c.N * NA, 1e-12, 1e-12);
    /* the table's names for the blocks */
    snprintf(name, sizeof name, "resblock1%s//weights",
             blocks > 1 ? (blocks > 2 ? "_2" : "_1") : "");
    MF_TEST_TRUE(c.np == 6 + 4 * (int)blocks && !strcmp(c.spec[6 + 4 * (blocks - 1)].name, name),
                 "block %lld's first parameter is %s, expected %s", (long long)blocks,
                 c.spec[6 + 4 * (blocks - 1)].name, name);
    mf_gc_array in[2 + MAXP];
    const double *grads[2 + MAXP];
    in[0] = (mf_gc_array){"s", c.s, c.N * c.d.c_s};
    in[1] = (mf_gc_array){"s_initial", c.si, c.N * c.d.c_s};
    grads[0] = r.ds, grads[1] = r.dsi;
    for (int k = 0; k < c.np; k++) {
        in[2 + k] = (mf_gc_array){c.spec[k].name, c.p[k], c.pn[k]};
        grads[2 + k] = r.dp[k];
    }
    const mf_gc_array out[2] = {{"unnormalized_angles", c.u, c.N * NA},
                                {"angles", c.ang, c.N * NA}};
    const double *gout[2] = {c.gu, c.ga};
    fd_ud ud = {ctx, &c, &r};
    snprintf(name, sizeof name, "angle resnet f64 (%lld blocks)", (long long)blocks);
    mf_gradcheck(name, fd_fwd, &ud, in, grads, 2 + c.np, out, gout, 2, MF_TOL_FD_STEP,
                 MF_TOL_FD_ATOL, MF_TOL_FD_RTOL, 0);
    free(ru), free(ra);
    run_free(&r, &c);
    case_free(&c);
}

/* ---- 2-5. f32 ---- */

/* f64_ref: element-wise against the f64 run; else atol = rtol = 0: bitwise; atol < 0: max-relative
 * per tensor within rtol; otherwise element-wise. */
static void check_run_f32(const char *what, const arcase *c, const arrun *r, const arrun *ref,
                          bool f64_ref, double atol, double rtol, bool grads)
{
    char name[128];
    const int64_t N = c->N, CS = c->d.c_s;
#define CMP(label, a, b, n)                                                                        \
    do {                                                                                           \
        snprintf(name, sizeof name, "%s %s", what, label);                                         \
        if (f64_ref)                                                                               \
            mf_check_close_f32_f64(name, (const float *)(a), (const double *)(b), n, atol, rtol);  \
        else if (atol == 0 && rtol == 0)                                                           \
            mf_check_bitwise_f32(name, (const float *)(a), (const float *)(b), n);                 \
        else if (atol < 0)                                                                         \
            mf_check_maxrel_f32(name, (const float *)(a), (const float *)(b), n, rtol);            \
        else                                                                                       \
            mf_check_close_f32(name, (const float *)(a), (const float *)(b), n, atol, rtol);       \
    } while (0)
    CMP("unnormalized", r->u, ref->u, N * NA);
    CMP("angles", r->ang, ref->ang, N * NA);
    if (!grads) return;
    CMP("ds", r->ds, ref->ds, N * CS);
    CMP("ds_initial", r->dsi, ref->dsi, N * CS);
    for (int k = 0; k < c->np; k++) CMP(c->spec[k].name, r->dp[k], ref->dp[k], c->pn[k]);
#undef CMP
}

static void test_f32(mf_ctx *ctx)
{
    printf("2. f32 against f64 (accumulating backward, NULL upstream gradients)\n");
    arcase c;
    case_init(&c, 11, 9, 12, 2, 500);
    arrun r64, r32;
    run_alloc(&r64, &c, MF_F64);
    run_alloc(&r32, &c, MF_F32);
    /* gradients start at 1 in both runs */
    const int64_t N = c.N, CS = c.d.c_s;
    for (int64_t i = 0; i < N * CS; i++) {
        ((double *)r64.ds)[i] = ((double *)r64.dsi)[i] = 1.0;
        ((float *)r32.ds)[i] = ((float *)r32.dsi)[i] = 1.0f;
    }
    for (int k = 0; k < c.np; k++)
        for (int64_t i = 0; i < c.pn[k]; i++)
            ((double *)r64.dp[k])[i] = 1.0, ((float *)r32.dp[k])[i] = 1.0f;
    MF_TEST_OK(run_module(ctx, &c, &r64, true, true, true));
    MF_TEST_OK(run_module(ctx, &c, &r32, true, true, true));
    check_run_f32("f32 vs f64", &c, &r32, &r64, true, MF_TOL_F32_ATOL, MF_TOL_F32_RTOL, true);
    /* only one upstream gradient at a time: the sum of the two single runs is the joint one */
    arrun a1, a2;
    run_alloc(&a1, &c, MF_F64);
    run_alloc(&a2, &c, MF_F64);
    MF_TEST_OK(run_module(ctx, &c, &a1, true, true, false));
    MF_TEST_OK(run_module(ctx, &c, &a2, true, false, true));
    double *sum = dalloc(N * CS), *both = dalloc(N * CS);
    for (int64_t i = 0; i < N * CS; i++) {
        sum[i] = ((double *)a1.ds)[i] + ((double *)a2.ds)[i];
        both[i] = ((double *)r64.ds)[i] - 1.0;
    }
    mf_check_close_f64("ds(unnormalized only) + ds(angles only) = ds(both)", sum, both, N * CS,
                       1e-12, 1e-10);
    free(sum), free(both);
    run_free(&a1, &c), run_free(&a2, &c);
    run_free(&r64, &c), run_free(&r32, &c);
    case_free(&c);
}

static void test_slices_and_arena(mf_ctx *ctx)
{
    printf("3-4. slice sizes, inference vs training, arena\n");
    arcase c;
    case_init(&c, 11, 9, 12, 2, 600);
    arrun base, inf;
    run_alloc(&base, &c, MF_F32);
    run_alloc(&inf, &c, MF_F32);
    ctx->policy.chunk_size = 0;
    MF_TEST_OK(run_module(ctx, &c, &base, true, true, true));
    MF_TEST_OK(run_module(ctx, &c, &inf, false, false, false));
    check_run_f32("inference vs training", &c, &inf, &base, false, 0, 0, false);
    const int64_t chunks[3] = {1, 3, 64};
    for (int k = 0; k < 3; k++) {
        arrun r;
        run_alloc(&r, &c, MF_F32);
        ctx->policy.chunk_size = chunks[k];
        MF_TEST_OK(run_module(ctx, &c, &r, true, true, true));
        char what[64];
        snprintf(what, sizeof what, "slice %lld", (long long)chunks[k]);
        check_run_f32(what, &c, &r, &base, false, 0, 0, false);
        char name[96];
        snprintf(name, sizeof name, "%s ds", what);
        mf_check_bitwise_f32(name, r.ds, base.ds, c.N * c.d.c_s);
        snprintf(name, sizeof name, "%s ds_initial", what);
        mf_check_bitwise_f32(name, r.dsi, base.dsi, c.N * c.d.c_s);
        for (int j = 0; j < c.np; j++) {
            snprintf(name, sizeof name, "%s %s", what, c.spec[j].name);
            mf_check_close_f32(name, r.dp[j], base.dp[j], c.pn[j], TOL_SLICE_ATOL, TOL_SLICE_RTOL);
        }
        run_free(&r, &c);
    }
    ctx->policy.chunk_size = 3;
    /* arena accounting */
    mf_angle_resnet_params p;
    bind(&c, base.p, MF_F32, &p);
    const int64_t N = c.N, CS = c.d.c_s;
    mf_tensor s = tens(base.s, MF_F32, 2, N, CS, 1), si = tens(base.si, MF_F32, 2, N, CS, 1);
    mf_tensor u = tens(base.u, MF_F32, 3, N, 7, 2), a = tens(base.ang, MF_F32, 3, N, 7, 2);
    const size_t used0 = mf_arena_used(ctx->arena);
    MF_TEST_OK(mf_angle_resnet_forward(ctx, &u, &a, NULL, &s, &si, &p, &c.d));
    MF_TEST_TRUE(mf_arena_used(ctx->arena) == used0, "inference left %zu bytes in the arena",
                 mf_arena_used(ctx->arena) - used0);
    mf_angle_resnet_saved sv;
    const mf_arena_mark_t mark = mf_arena_mark(ctx->arena);
    MF_TEST_OK(mf_angle_resnet_forward(ctx, NULL, &a, &sv, &s, &si, &p, &c.d));
    const size_t kept = mf_arena_used(ctx->arena) - used0;
    const size_t want =
        ((size_t)(5 * N * 12 * 4 + 255) / 256 + (size_t)(N * NA * 4 + 255) / 256) * 256;
    printf("  training forward keeps %zu bytes (saved acts [5, %lld, 12] and unnormalized [%lld, "
           "7, 2] f32: %zu)\n",
           kept, (long long)N, (long long)N, want);
    MF_TEST_TRUE(kept == want, "training forward keeps %zu bytes, expected %zu", kept, want);
    mf_tensor ds = tens(base.ds, MF_F32, 2, N, CS, 1);
    mf_tensor ga = tens(base.ga, MF_F32, 3, N, 7, 2);
    MF_TEST_OK(mf_angle_resnet_backward(ctx, &ds, NULL, NULL, NULL, &ga, &sv, &s, &si, &p, &c.d));
    MF_TEST_TRUE(mf_arena_used(ctx->arena) - used0 == kept, "backward left arena memory behind");
    mf_arena_release(ctx->arena, mark);
    /* out of memory: nothing stays allocated */
    mf_arena small;
    mf_ctx sctx = *ctx;
    MF_TEST_OK(mf_arena_init(&small, MF_DEV_CPU, 4096, "small"));
    sctx.arena = &small;
    mf_status st = mf_angle_resnet_forward(&sctx, &u, &a, &sv, &s, &si, &p, &c.d);
    MF_TEST_TRUE(st == MF_ERR_NOMEM && mf_arena_used(&small) == 0,
                 "4 KiB arena: status %d, %zu bytes left", (int)st, mf_arena_used(&small));
    mf_arena_destroy(&small);
    /* invalid arguments */
    mf_angle_resnet_dims bad = c.d;
    bad.num_residual_block = 0;
    MF_TEST_TRUE(mf_angle_resnet_forward(ctx, &u, &a, NULL, &s, &si, &p, &bad) == MF_ERR_INVALID,
                 "0 residual blocks accepted");
    bad.num_residual_block = MF_ANGLE_RESNET_MAX_BLOCKS + 1;
    MF_TEST_TRUE(mf_angle_resnet_param_specs(&bad, NULL) == 0, "too many blocks accepted");
    mf_tensor wrong = tens(base.ang, MF_F32, 3, N, 6, 2);
    MF_TEST_TRUE(mf_angle_resnet_forward(ctx, &u, &wrong, NULL, &s, &si, &p, &c.d) ==
                     MF_ERR_INVALID,
                 "angles [N, 6, 2] accepted");
    mf_tensor keep_w = p.resblock1_weights_1;
    p.resblock1_weights_1.shape[0]--;
    MF_TEST_TRUE(mf_angle_resnet_forward(ctx, &u, &a, NULL, &s, &si, &p, &c.d) == MF_ERR_INVALID,
                 "a wrongly shaped resblock1_1//weights accepted");
    p.resblock1_weights_1 = keep_w;
    ctx->policy.chunk_size = 0;
    run_free(&base, &c), run_free(&inf, &c);
    case_free(&c);
}

static void test_bf16(mf_ctx *ctx)
{
    printf("5. bf16 storage and bf16 compute against f32\n");
    arcase c;
    case_init(&c, 11, 9, 12, 2, 700);
    arrun base, st, cp;
    run_alloc(&base, &c, MF_F32);
    run_alloc(&st, &c, MF_F32);
    run_alloc(&cp, &c, MF_F32);
    const mf_policy keep = ctx->policy;
    MF_TEST_OK(run_module(ctx, &c, &base, true, true, true));
    ctx->policy.storage = MF_BF16;
    MF_TEST_OK(run_module(ctx, &c, &st, true, true, true));
    ctx->policy = keep;
    check_run_f32("bf16 storage (forward)", &c, &st, &base, false, 0, 0, false);
    check_run_f32("bf16 storage", &c, &st, &base, false, -1, MF_TOL_BF16_RTOL, true);
    ctx->policy.compute = MF_BF16;
    MF_TEST_OK(run_module(ctx, &c, &cp, true, true, true));
    ctx->policy = keep;
    check_run_f32("bf16 compute", &c, &cp, &base, false, -1, MF_TOL_BF16_RTOL, true);
    run_free(&base, &c), run_free(&st, &c), run_free(&cp, &c);
    case_free(&c);
}

/* ---- 6. AF2 reference ---- */

static void test_reference(mf_ctx *ctx)
{
    printf("6. AF2 reference: structure-module states -> angles (expected_outputs.h5, "
           "params_af2.npz; max-rel <= %.0e)\n",
           MF_TOL_VEC_MODULE);
    char ppath[1024], epath[1024];
    snprintf(ppath, sizeof ppath, "%s/testvectors/params_af2.npz", mf_test_shared_dir());
    snprintf(epath, sizeof epath, "%s/testvectors/expected_outputs.h5", mf_test_shared_dir());
    mf_param_store store;
    mf_param_store_init(&store);
    MF_TEST_OK(mf_param_store_load_npz(&store, ppath, NULL));
    const char *sm = MF_AF2_ROOT "structure_module";
    char scope[256], name[320];
    snprintf(scope, sizeof scope, "%s/fold_iteration/rigid_sidechain", sm);
    snprintf(name, sizeof name, "%s/input_projection//weights", scope);
    const mf_tensor *w0 = mf_param_store_find(&store, name);
    MF_TEST_TRUE(w0 != NULL, "%s missing", name);
    if (!w0) {
        mf_param_store_free(&store);
        return;
    }
    mf_angle_resnet_dims d = {
        .c_s = w0->shape[0], .num_channel = w0->shape[1], .num_residual_block = 2};
    mf_param_spec specs[MAXP];
    const int np = mf_angle_resnet_param_specs(&d, specs);
    mf_angle_resnet_params p;
    memset(&p, 0, sizeof p);
    MF_TEST_OK(mf_param_store_bind(&store, scope, specs, np, -1, MF_PARAMS_AS_ARRAY(&p)));
    mf_tensor ln_scale, ln_offset;
    snprintf(name, sizeof name, "%s/single_layer_norm//scale", sm);
    MF_TEST_OK(mf_param_store_get(&store, name, 1, &d.c_s, &ln_scale));
    snprintf(name, sizeof name, "%s/single_layer_norm//offset", sm);
    MF_TEST_OK(mf_param_store_get(&store, name, 1, &d.c_s, &ln_offset));
    hid_t f = -1;
    MF_TEST_OK(mf_h5_open_read(epath, &f));
    mf_h5_array single = {0}, states = {0}, uref = {0}, aref = {0};
    if (f >= 0) {
        const char *g = "intermediates/structure_module/";
        snprintf(name, sizeof name, "%sin_single", g);
        MF_TEST_OK(mf_h5_read_array(f, epath, name, MF_F32, &single));
        snprintf(name, sizeof name, "%sout_states", g);
        MF_TEST_OK(mf_h5_read_array(f, epath, name, MF_F32, &states));
        snprintf(name, sizeof name, "%sout_unnormalized_angles", g);
        MF_TEST_OK(mf_h5_read_array(f, epath, name, MF_F32, &uref));
        snprintf(name, sizeof name, "%sout_angles", g);
        MF_TEST_OK(mf_h5_read_array(f, epath, name, MF_F32, &aref));
        H5Fclose(f);
    }
    if (single.data && states.data && uref.data && aref.data) {
        const int64_t R = states.shape[0], L = states.shape[1], N = states.shape[2];
        float *si = falloc(N * d.c_s), *u = falloc(N * NA), *a = falloc(N * NA);
        for (int64_t r = 0; r < R; r++) {
            /* s_initial: single_layer_norm of the structure module's input (AF2 initial_act) */
            mf_tensor x = mf_tensor_f32((float *)single.data + r * N * d.c_s, 2, N, d.c_s);
            mf_tensor tsi = mf_tensor_f32(si, 2, N, d.c_s);
            MF_TEST_OK(
                mf_layer_norm_forward(ctx, &tsi, NULL, NULL, &x, &ln_scale, &ln_offset, 1e-5f));
            for (int64_t l = 0; l < L; l++) {
                const int64_t il = r * L + l;
                mf_tensor s = mf_tensor_f32((float *)states.data + il * N * d.c_s, 2, N, d.c_s);
                mf_tensor tu = mf_tensor_f32(u, 3, N, 7, 2), ta = mf_tensor_f32(a, 3, N, 7, 2);
                MF_TEST_OK(mf_angle_resnet_forward(ctx, &tu, &ta, NULL, &s, &tsi, &p, &d));
                snprintf(name, sizeof name, "iteration %lld layer %lld unnormalized_angles",
                         (long long)r, (long long)l);
                mf_check_maxrel_f32(name, u, (const float *)uref.data + il * N * NA, N * NA,
                                    MF_TOL_VEC_MODULE);
                snprintf(name, sizeof name, "iteration %lld layer %lld angles", (long long)r,
                         (long long)l);
                mf_check_maxrel_f32(name, a, (const float *)aref.data + il * N * NA, N * NA,
                                    MF_TOL_VEC_MODULE);
            }
        }
        free(si), free(u), free(a);
    }
    mf_h5_array_free(&single), mf_h5_array_free(&states), mf_h5_array_free(&uref);
    mf_h5_array_free(&aref);
    mf_param_store_free(&store);
}

int main(void)
{
    mf_ctx ctx;
    mf_arena arena;
    if (mf_test_ctx_cpu(&ctx, &arena, (size_t)4 << 20) != MF_OK) {
        mf_test_fail("context: %s", mf_last_error());
        return mf_test_finish("test_angle_resnet");
    }
    mf_h5_quiet();
    for (int64_t b = 1; b <= 3; b++) test_f64(&ctx, b);
    test_f32(&ctx);
    test_slices_and_arena(&ctx);
    test_bf16(&ctx);
    test_reference(&ctx);
    mf_test_ctx_free(&ctx, &arena);
    return mf_test_finish("test_angle_resnet");
}
