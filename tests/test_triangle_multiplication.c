/* Triangular multiplicative update, outgoing (Alg. 11) and incoming (Alg. 12)
 * (evoformer/triangle_multiplication.h), each direction:
 *  1. the module run in f64: its forward against a double reference written from the algorithms
 *     / AF2's einsums ('ikc,jkc->ijc', 'kjc,kic->ijc') by plain loops within 1e-12, its backward
 *     (dz and all 16 parameter gradients) against central finite differences of its forward,
 *     with a random upstream gradient; odd sizes (N 7, c_z 5, c_hidden 4), a pair mask with zeros
 *     and one residue (row and column) fully masked; the f32 module (output and every gradient)
 *     against the f64 module;
 *  2. chunk sizes {1, 3, 64} against unchunked: outputs and dz bitwise, weight gradients (sums
 *     over chunks of rows) within f32 tolerance; inference (saved NULL) bitwise equal to
 *     training;
 *  3. accumulate onto a nonzero output and nonzero gradients;
 *  4. arena: inference leaves it at its mark, training keeps exactly the saved tensors, backward
 *     leaves nothing;
 *  5. bf16 storage and bf16 compute against f32;
 *  6. the triangle_multiplication_outgoing / _incoming reference vectors through their
 *     verifiers. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/ref/ref.h"
#include "evoformer/triangle_multiplication.h"
#include "evoformer/verify_evoformer_pair.h"
#include "tests/support/mf_test.h"

#define NP 16

/* Parameter indices, in the order of triangle_multiplication.def. */
enum {
    LN_SCALE,
    LN_OFFSET,
    LEFT_W,
    LEFT_B,
    RIGHT_W,
    RIGHT_B,
    LEFT_GATE_W,
    LEFT_GATE_B,
    RIGHT_GATE_W,
    RIGHT_GATE_B,
    CENTER_SCALE,
    CENTER_OFFSET,
    OUT_W,
    OUT_B,
    GATING_W,
    GATING_B
};

typedef struct {
    int64_t N, Cz, Ch, nz;
    mf_triangle_multiplication_dims d;
    mf_param_spec specs[NP];
    int64_t pn[NP];
    double *z, *mask, *p[NP], *out;      /* double data, every value representable in f32 */
    double *zn, *a, *b, *g, *x, *xn, *y; /* reference scratch */
} tcase;

typedef struct {
    float *out, *dz, *dp[NP];
} tres;

static double *dalloc(int64_t n)
{
    return calloc((size_t)(n > 0 ? n : 1), sizeof(double));
}

static float *falloc(int64_t n)
{
    return calloc((size_t)(n > 0 ? n : 1), sizeof(float));
}

static void round_to_f32(double *x, int64_t n)
{
    for (int64_t i = 0; i < n; i++) x[i] = (double)(float)x[i];
}

static float *to_f32(const double *x, int64_t n)
{
    float *f = falloc(n);
    mf_f64_to_f32(f, x, n);
    return f;
}

static void case_init(tcase *c, int64_t N, int64_t Cz, int64_t Ch, bool outgoing, uint64_t seed)
{
    memset(c, 0, sizeof *c);
    c->N = N, c->Cz = Cz, c->Ch = Ch, c->nz = N * N * Cz;
    c->d = (mf_triangle_multiplication_dims){.c_z = Cz, .c_hidden = Ch, .outgoing = outgoing};
    MF_TEST_TRUE(mf_triangle_multiplication_param_specs(&c->d, c->specs) == NP,
                 "triangle_multiplication: %d parameters", NP);
    c->z = dalloc(c->nz);
    mf_test_fill_normal_f64(c->z, c->nz, seed, 1.0);
    round_to_f32(c->z, c->nz);
    c->mask = dalloc(N * N);
    mf_test_fill_mask_f64(c->mask, N, N, seed + 1, 0.7);
    for (int64_t k = 0; k < N; k++) c->mask[2 * N + k] = c->mask[k * N + 2] = 0.0; /* residue 2 */
    for (int i = 0; i < NP; i++) {
        c->pn[i] = 1;
        for (int k = 0; k < c->specs[i].ndim; k++) c->pn[i] *= c->specs[i].shape[k];
        c->p[i] = dalloc(c->pn[i]);
        double sd = c->specs[i].ndim >= 2 ? 1.0 / sqrt((double)c->specs[i].shape[0]) : 0.5;
        mf_test_fill_normal_f64(c->p[i], c->pn[i], seed + 10 + (uint64_t)i, sd);
        if (i == LN_SCALE || i == CENTER_SCALE)
            for (int64_t k = 0; k < c->pn[i]; k++) c->p[i][k] += 1.0;
        round_to_f32(c->p[i], c->pn[i]);
    }
    c->out = dalloc(c->nz);
    c->zn = dalloc(c->nz);
    c->g = dalloc(c->nz);
    c->y = dalloc(c->nz);
    c->a = dalloc(N * N * Ch);
    c->b = dalloc(N * N * Ch);
    c->x = dalloc(N * N * Ch);
    c->xn = dalloc(N * N * Ch);
}

static void case_free(tcase *c)
{
    free(c->z);
    free(c->mask);
    for (int i = 0; i < NP; i++) free(c->p[i]);
    double *s[8] = {c->out, c->zn, c->g, c->y, c->a, c->b, c->x, c->xn};
    for (int i = 0; i < 8; i++) free(s[i]);
}

/* mask * (zn @ w + b) * sigmoid(zn @ gw + gb), [N*N, Ch]. */
static void ref_side(const tcase *c, double *out, int w, int gw)
{
    const int64_t NN = c->N * c->N, Ch = c->Ch;
    double *gate = dalloc(NN * Ch);
    mf_ref_linear_forward_f64(out, c->zn, c->p[w], c->p[w + 1], NN, c->Cz, Ch, false);
    mf_ref_linear_forward_f64(gate, c->zn, c->p[gw], c->p[gw + 1], NN, c->Cz, Ch, false);
    mf_ref_activation_forward_f64(MF_ACT_SIGMOID, gate, gate, NN * Ch);
    for (int64_t r = 0; r < NN; r++)
        for (int64_t k = 0; k < Ch; k++) out[r * Ch + k] *= gate[r * Ch + k] * c->mask[r];
    free(gate);
}

/* The double reference: Alg. 11 / 12 with AF2's equations, by plain loops. */
static void ref_forward(void *ud)
{
    tcase *c = ud;
    const int64_t N = c->N, NN = N * N, Cz = c->Cz, Ch = c->Ch;
    mf_ref_layer_norm_forward_f64(c->zn, NULL, NULL, c->z, c->p[LN_SCALE], c->p[LN_OFFSET], NN, Cz,
                                  MF_TRIANGLE_MULTIPLICATION_LN_EPS);
    ref_side(c, c->a, LEFT_W, LEFT_GATE_W);
    ref_side(c, c->b, RIGHT_W, RIGHT_GATE_W);
    for (int64_t i = 0; i < N; i++)
        for (int64_t j = 0; j < N; j++)
            for (int64_t h = 0; h < Ch; h++) {
                double acc = 0;
                for (int64_t k = 0; k < N; k++)
                    acc += c->d.outgoing ? c->a[(i * N + k) * Ch + h] * c->b[(j * N + k) * Ch + h]
                                         : c->a[(k * N + j) * Ch + h] * c->b[(k * N + i) * Ch + h];
                c->x[(i * N + j) * Ch + h] = acc;
            }
    mf_ref_layer_norm_forward_f64(c->xn, NULL, NULL, c->x, c->p[CENTER_SCALE], c->p[CENTER_OFFSET],
                                  NN, Ch, MF_TRIANGLE_MULTIPLICATION_LN_EPS);
    mf_ref_linear_forward_f64(c->y, c->xn, c->p[OUT_W], c->p[OUT_B], NN, Ch, Cz, false);
    mf_ref_linear_forward_f64(c->g, c->zn, c->p[GATING_W], c->p[GATING_B], NN, Cz, Cz, false);
    mf_ref_activation_forward_f64(MF_ACT_SIGMOID, c->g, c->g, NN * Cz);
    for (int64_t k = 0; k < NN * Cz; k++) c->out[k] = c->y[k] * c->g[k];
}

static mf_triangle_multiplication_params make_params(const tcase *c, float *const *data)
{
    mf_triangle_multiplication_params p;
    mf_tensor *t = MF_PARAMS_AS_ARRAY(&p);
    for (int i = 0; i < NP; i++)
        t[i] = mf_tensor_make(data[i], MF_F32, MF_DEV_CPU, c->specs[i].ndim, c->specs[i].shape);
    return p;
}

static size_t aligned(size_t n)
{
    return (n + MF_ARENA_ALIGN - 1) / MF_ARENA_ALIGN * MF_ARENA_ALIGN;
}

typedef struct {
    float *z, *mask, *p[NP], *gout;
} f32_in;

/* Training forward + backward under ctx's policy, accumulating onto copies of init (or zeros). */
static void run_f32(mf_ctx *ctx, const tcase *c, const f32_in *in, tres *r, const tres *init,
                    bool accumulate, const char *what)
{
    r->out = falloc(c->nz);
    r->dz = falloc(c->nz);
    if (init) {
        memcpy(r->out, init->out, sizeof(float) * (size_t)c->nz);
        memcpy(r->dz, init->dz, sizeof(float) * (size_t)c->nz);
    }
    for (int i = 0; i < NP; i++) {
        r->dp[i] = falloc(c->pn[i]);
        if (init) memcpy(r->dp[i], init->dp[i], sizeof(float) * (size_t)c->pn[i]);
    }
    mf_tensor z = mf_tensor_f32(in->z, 3, c->N, c->N, c->Cz);
    mf_tensor mask = mf_tensor_f32(in->mask, 2, c->N, c->N);
    mf_tensor out = mf_tensor_f32(r->out, 3, c->N, c->N, c->Cz);
    mf_tensor dz = mf_tensor_f32(r->dz, 3, c->N, c->N, c->Cz);
    mf_tensor g = mf_tensor_f32(in->gout, 3, c->N, c->N, c->Cz);
    mf_triangle_multiplication_params p = make_params(c, in->p), dp = make_params(c, r->dp);
    mf_triangle_multiplication_saved saved;
    mf_arena_mark_t mark = mf_arena_mark(ctx->arena);
    size_t used = mf_arena_used(ctx->arena);
    MF_TEST_OK(
        mf_triangle_multiplication_forward(ctx, &out, accumulate, &saved, &z, &mask, &p, &c->d));
    size_t kept = mf_arena_used(ctx->arena) - used;
    size_t want = aligned(mf_tensor_bytes(&saved.a_t)) + aligned(mf_tensor_bytes(&saved.b_t)) +
                  aligned(mf_tensor_bytes(&saved.x));
    MF_TEST_TRUE(kept == want,
                 "%s: training forward kept %zu arena bytes, the saved tensors take %zu", what,
                 kept, want);
    MF_TEST_OK(
        mf_triangle_multiplication_backward(ctx, &dz, &dp, &g, &saved, &z, &mask, &p, &c->d));
    MF_TEST_TRUE(mf_arena_used(ctx->arena) == used + kept, "%s: backward left %zu arena bytes",
                 what, mf_arena_used(ctx->arena) - used - kept);
    mf_arena_release(ctx->arena, mark);
}

static void run_inference(mf_ctx *ctx, const tcase *c, const f32_in *in, float *out_data,
                          const char *what)
{
    mf_tensor z = mf_tensor_f32(in->z, 3, c->N, c->N, c->Cz);
    mf_tensor mask = mf_tensor_f32(in->mask, 2, c->N, c->N);
    mf_tensor out = mf_tensor_f32(out_data, 3, c->N, c->N, c->Cz);
    mf_triangle_multiplication_params p = make_params(c, in->p);
    size_t used = mf_arena_used(ctx->arena);
    MF_TEST_OK(mf_triangle_multiplication_forward(ctx, &out, false, NULL, &z, &mask, &p, &c->d));
    MF_TEST_TRUE(mf_arena_used(ctx->arena) == used, "%s: inference left %zu arena bytes", what,
                 mf_arena_used(ctx->arena) - used);
}

static void free_res(tres *r)
{
    free(r->out);
    free(r->dz);
    for (int i = 0; i < NP; i++) free(r->dp[i]);
}

static double max_abs(const float *x, int64_t n, double floor)
{
    double m = floor;
    for (int64_t i = 0; i < n; i++) m = fmax(m, fabs((double)x[i]));
    return m;
}

static void check(const char *what, const char *field, const float *got, const float *want,
                  int64_t n, double atol, double rtol, double scale)
{
    char name[640];
    if (scale != 1.0)
        snprintf(name, sizeof name, "%s: %s (atol x %.2f)", what, field, scale);
    else
        snprintf(name, sizeof name, "%s: %s", what, field);
    mf_check_close_f32(name, got, want, n, atol * scale, rtol);
}

/* Every result of r against want. bitwise: the output and dz bit for bit. scaled (bf16 runs): atol
 * is multiplied by the size of the quantity, max|output| for the output and the module's gradient
 * scale (the largest |gradient| over dz and every parameter gradient, like the reference vectors'
 * grad_scale) for gradients: bf16 inputs err in proportion to the terms of each sum, and a sum
 * over rows can cancel to far below its terms. */
static void compare_res(const tcase *c, const char *what, const tres *r, const tres *want,
                        bool bitwise, double atol, double rtol, bool scaled)
{
    double out_scale = scaled ? max_abs(want->out, c->nz, 1.0) : 1.0;
    double g_scale = scaled ? max_abs(want->dz, c->nz, 1.0) : 1.0;
    for (int i = 0; scaled && i < NP; i++) g_scale = max_abs(want->dp[i], c->pn[i], g_scale);
    char name[300];
    snprintf(name, sizeof name, "%s: output", what);
    if (bitwise)
        mf_check_bitwise_f32(name, r->out, want->out, c->nz);
    else
        check(what, "output", r->out, want->out, c->nz, atol, rtol, out_scale);
    snprintf(name, sizeof name, "%s: dz", what);
    if (bitwise)
        mf_check_bitwise_f32(name, r->dz, want->dz, c->nz);
    else
        check(what, "dz", r->dz, want->dz, c->nz, atol, rtol, g_scale);
    for (int i = 0; i < NP; i++) {
        snprintf(name, sizeof name, "d %s", c->specs[i].name);
        check(what, name, r->dp[i], want->dp[i], c->pn[i], atol, rtol, g_scale);
    }
}

/* ---- the module in f64 (every op runs its double reference) ---------------------------------- */

/* Double rounding (~1e-16) times the condition of short sums: 1e-12 leaves orders of magnitude of
 * headroom; elements near zero get atol = 1e-12 * max|ref|. */
#define TOL_F64 1e-12

static mf_triangle_multiplication_params make_params_f64(const tcase *c, double *const *data)
{
    mf_triangle_multiplication_params p;
    mf_tensor *t = MF_PARAMS_AS_ARRAY(&p);
    for (int i = 0; i < NP; i++)
        t[i] = mf_tensor_make(data[i], MF_F64, MF_DEV_CPU, c->specs[i].ndim, c->specs[i].shape);
    return p;
}

#define F64_TENSOR(p, nd, ...)                                                                     \
    mf_tensor_make((p), MF_F64, MF_DEV_CPU, (nd), (const int64_t[MF_MAX_DIMS]){__VA_ARGS__})

typedef struct {
    mf_ctx *ctx;
    tcase *c;
    double *out;
} f64_run;

/* The inference forward in f64 over the case's (perturbed) double arrays, for mf_gradcheck. */
static void module_f64_forward(void *ud)
{
    f64_run *u = ud;
    tcase *c = u->c;
    mf_tensor z = F64_TENSOR(c->z, 3, c->N, c->N, c->Cz);
    mf_tensor mask = F64_TENSOR(c->mask, 2, c->N, c->N);
    mf_tensor out = F64_TENSOR(u->out, 3, c->N, c->N, c->Cz);
    mf_triangle_multiplication_params p = make_params_f64(c, c->p);
    mf_status st =
        mf_triangle_multiplication_forward(u->ctx, &out, false, NULL, &z, &mask, &p, &c->d);
    if (st != MF_OK) mf_test_fail("triangle_multiplication f64 forward: %s", mf_last_error());
}

/* Training forward and backward in f64: out, and dz, dp accumulated from zero. */
static void module_f64_train(mf_ctx *ctx, tcase *c, double *out, double *dz, double **dp,
                             const double *gout)
{
    mf_tensor z = F64_TENSOR(c->z, 3, c->N, c->N, c->Cz);
    mf_tensor mask = F64_TENSOR(c->mask, 2, c->N, c->N);
    mf_tensor to = F64_TENSOR(out, 3, c->N, c->N, c->Cz);
    mf_tensor tdz = F64_TENSOR(dz, 3, c->N, c->N, c->Cz);
    mf_tensor g = F64_TENSOR((void *)gout, 3, c->N, c->N, c->Cz);
    mf_triangle_multiplication_params p = make_params_f64(c, c->p), tdp = make_params_f64(c, dp);
    mf_triangle_multiplication_saved saved;
    mf_arena_mark_t mark = mf_arena_mark(ctx->arena);
    MF_TEST_OK(mf_triangle_multiplication_forward(ctx, &to, false, &saved, &z, &mask, &p, &c->d));
    MF_TEST_TRUE(saved.a_t.dtype == MF_F64 && saved.b_t.dtype == MF_F64 && saved.x.dtype == MF_F64,
                 "triangle_multiplication f64: saved activations not f64");
    MF_TEST_OK(
        mf_triangle_multiplication_backward(ctx, &tdz, &tdp, &g, &saved, &z, &mask, &p, &c->d));
    mf_arena_release(ctx->arena, mark);
}

static void check_f64(const char *name, const double *a, const double *ref, int64_t n)
{
    double mx = 0;
    for (int64_t i = 0; i < n; i++) mx = fmax(mx, fabs(ref[i]));
    mf_check_close_f64(name, a, ref, n, TOL_F64 * mx, TOL_F64);
}

static void check_case(mf_ctx *ctx, int64_t N, int64_t Cz, int64_t Ch, bool outgoing, uint64_t seed)
{
    tcase c;
    case_init(&c, N, Cz, Ch, outgoing, seed);
    char dims[96];
    snprintf(dims, sizeof dims, "triangle %s N %lld c_z %lld c %lld",
             outgoing ? "outgoing" : "incoming", (long long)N, (long long)Cz, (long long)Ch);
    f32_in in;
    in.z = to_f32(c.z, c.nz);
    in.mask = to_f32(c.mask, N * N);
    for (int i = 0; i < NP; i++) in.p[i] = to_f32(c.p[i], c.pn[i]);
    double *goutd = dalloc(c.nz);
    /* Standard deviation 0.5: the checked sum L stays ~10, so the finite differences' rounding
     * (~eps |L| / h) stays well under MF_TOL_FD_ATOL. */
    mf_test_fill_normal_f64(goutd, c.nz, seed + 99, 0.5);
    round_to_f32(goutd, c.nz);
    in.gout = to_f32(goutd, c.nz);

    /* 1. The module in f64 against the reference and against its own finite differences (storage
     * bf16 asked for, which f64 runs ignore); the f32 module against the f64 module. */
    char what[200];
    double *out64 = dalloc(c.nz), *dz64 = dalloc(c.nz), *dp64[NP];
    for (int i = 0; i < NP; i++) dp64[i] = dalloc(c.pn[i]);
    ctx->policy = mf_policy_default();
    ctx->policy.storage = MF_BF16;
    ctx->policy.chunk_size = 2;
    module_f64_train(ctx, &c, out64, dz64, dp64, goutd);
    ref_forward(&c);
    snprintf(what, sizeof what, "%s: f64 module output vs f64 reference", dims);
    check_f64(what, out64, c.out, c.nz);
    f64_run u = {ctx, &c, dalloc(c.nz)};
    mf_gc_array gin[1 + NP];
    const double *grads[1 + NP];
    gin[0] = (mf_gc_array){"z", c.z, c.nz};
    grads[0] = dz64;
    for (int i = 0; i < NP; i++) {
        gin[1 + i] = (mf_gc_array){c.specs[i].name, c.p[i], c.pn[i]};
        grads[1 + i] = dp64[i];
    }
    mf_gc_array outs[1] = {{"update", u.out, c.nz}};
    const double *gouts[1] = {goutd};
    snprintf(what, sizeof what, "%s: f64 module backward", dims);
    mf_gradcheck(what, module_f64_forward, &u, gin, grads, 1 + NP, outs, gouts, 1, MF_TOL_FD_STEP,
                 MF_TOL_FD_ATOL, MF_TOL_FD_RTOL, 0);
    free(u.out);
    ctx->policy = mf_policy_default();
    tres base;
    run_f32(ctx, &c, &in, &base, NULL, false, dims);
    snprintf(what, sizeof what, "%s: f32 output vs f64 module", dims);
    mf_check_close_f32_f64(what, base.out, out64, c.nz, MF_TOL_F32_ATOL, MF_TOL_F32_RTOL);
    snprintf(what, sizeof what, "%s: f32 dz vs f64 module", dims);
    mf_check_close_f32_f64(what, base.dz, dz64, c.nz, MF_TOL_F32_ATOL, MF_TOL_F32_RTOL);
    for (int i = 0; i < NP; i++) {
        snprintf(what, sizeof what, "%s: f32 d %s vs f64 module", dims, c.specs[i].name);
        mf_check_close_f32_f64(what, base.dp[i], dp64[i], c.pn[i], MF_TOL_F32_ATOL,
                               MF_TOL_F32_RTOL);
    }
    free(out64);
    free(dz64);
    for (int i = 0; i < NP; i++) free(dp64[i]);

    /* 2. */
    const int64_t chunks[3] = {1, 3, 64};
    for (int k = 0; k < 3; k++) {
        ctx->policy = mf_policy_default();
        ctx->policy.chunk_size = chunks[k];
        tres r;
        snprintf(what, sizeof what, "%s chunk %lld vs unchunked", dims, (long long)chunks[k]);
        run_f32(ctx, &c, &in, &r, NULL, false, what);
        compare_res(&c, what, &r, &base, true, MF_TOL_F32_ATOL, MF_TOL_F32_RTOL, false);
        float *inf = falloc(c.nz);
        run_inference(ctx, &c, &in, inf, what);
        char name[240];
        snprintf(name, sizeof name, "%s chunk %lld: inference output vs training", dims,
                 (long long)chunks[k]);
        mf_check_bitwise_f32(name, inf, base.out, c.nz);
        free(inf);
        free_res(&r);
    }

    /* 3. */
    {
        ctx->policy = mf_policy_default();
        ctx->policy.chunk_size = 3;
        tres init, r, want;
        init.out = falloc(c.nz), init.dz = falloc(c.nz);
        want.out = falloc(c.nz), want.dz = falloc(c.nz);
        mf_test_fill_normal_f32(init.out, c.nz, seed + 200, 1.0f);
        mf_test_fill_normal_f32(init.dz, c.nz, seed + 201, 1.0f);
        for (int64_t k = 0; k < c.nz; k++) {
            want.out[k] = init.out[k] + base.out[k];
            want.dz[k] = init.dz[k] + base.dz[k];
        }
        for (int i = 0; i < NP; i++) {
            init.dp[i] = falloc(c.pn[i]), want.dp[i] = falloc(c.pn[i]);
            mf_test_fill_normal_f32(init.dp[i], c.pn[i], seed + 210 + (uint64_t)i, 1.0f);
            for (int64_t k = 0; k < c.pn[i]; k++) want.dp[i][k] = init.dp[i][k] + base.dp[i][k];
        }
        snprintf(what, sizeof what, "%s chunk 3 accumulate onto nonzero buffers", dims);
        run_f32(ctx, &c, &in, &r, &init, true, what);
        compare_res(&c, what, &r, &want, false, MF_TOL_F32_ATOL, MF_TOL_F32_RTOL, false);
        free_res(&init);
        free_res(&want);
        free_res(&r);
    }

    /* 5. */
    for (int mode = 0; mode < 2; mode++) {
        ctx->policy = mf_policy_default();
        ctx->policy.chunk_size = 3;
        if (mode == 0)
            ctx->policy.storage = MF_BF16;
        else
            ctx->policy.compute = MF_BF16;
        tres r;
        snprintf(what, sizeof what, "%s %s vs f32", dims,
                 mode == 0 ? "bf16 storage" : "bf16 compute");
        run_f32(ctx, &c, &in, &r, NULL, false, what);
        if (mode == 0) { /* the forward stays f32: its output is the f32 output */
            char name[240];
            snprintf(name, sizeof name, "%s: output (forward unchanged)", what);
            mf_check_bitwise_f32(name, r.out, base.out, c.nz);
        }
        compare_res(&c, what, &r, &base, false, MF_TOL_BF16_ATOL, MF_TOL_BF16_RTOL, true);
        free_res(&r);
    }
    ctx->policy = mf_policy_default();

    free_res(&base);
    free(in.z);
    free(in.mask);
    for (int i = 0; i < NP; i++) free(in.p[i]);
    free(in.gout);
    free(goutd);
    case_free(&c);
}

static void run_file(mf_ctx *ctx, const char *module, mf_module_verifier fn)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/testvectors/modules/%s.h5", mf_test_shared_dir(), module);
    mf_module_vectors v;
    memset(&v, 0, sizeof v);
    mf_status st = mf_module_vectors_load(path, &v);
    MF_TEST_TRUE(st == MF_OK, "%s: %s", path, mf_last_error());
    if (st != MF_OK) return;
    MF_TEST_TRUE(!strcmp(v.module, module), "%s: module attribute is '%s'", path, v.module);
    printf("%s.h5 (rtol %g):\n", module, v.rtol);
    mf_verify_report *r = calloc(1, sizeof *r);
    ctx->policy = mf_policy_default();
    st = fn(ctx, &v, r);
    MF_TEST_TRUE(st == MF_OK, "%s verifier failed: %s", module, mf_last_error());
    for (int i = 0; i < r->count; i++) {
        const mf_compare_result *cr = &r->items[i].result;
        printf("  %-44s rel %.3e (max err %.3e, max |ref| %.3e) tol %.0e %s\n", r->items[i].name,
               cr->rel, cr->max_err, cr->max_ref, cr->tol, cr->pass ? "ok" : "FAIL");
        mf_test_count(cr->pass);
        if (!cr->pass) mf_test_fail("%s: %s rel %.3e", module, r->items[i].name, cr->rel);
    }
    int expected = v.outputs.count + v.grads_inputs.count + v.grads_weights.count;
    MF_TEST_TRUE(r->count == expected, "%s: %d comparisons, the file has %d datasets", module,
                 r->count, expected);
    free(r);
    mf_module_vectors_free(&v);
}

int main(void)
{
    mf_ctx ctx;
    mf_arena arena;
    if (mf_test_ctx_cpu(&ctx, &arena, (size_t)64 << 20) != MF_OK) {
        mf_test_fail("context: %s", mf_last_error());
        return mf_test_finish("test_triangle_multiplication");
    }
    check_case(&ctx, 7, 5, 4, true, 700);
    check_case(&ctx, 7, 5, 4, false, 800);
    run_file(&ctx, "triangle_multiplication_outgoing", mf_verify_triangle_multiplication_outgoing);
    run_file(&ctx, "triangle_multiplication_incoming", mf_verify_triangle_multiplication_incoming);
    mf_test_ctx_free(&ctx, &arena);
    return mf_test_finish("test_triangle_multiplication");
}
