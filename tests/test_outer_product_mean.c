/* Outer product mean (Alg. 10; evoformer/outer_product_mean.h):
 *  1. the module run in f64: its forward against a double reference written from Alg. 10 / AF2's
 *     einsums (LayerNorm, masked projections, outer products summed over s, output_w [c, c, c_z]
 *     + bias, divided by 1e-3 + sum_s mask_si mask_sj) within 1e-12, its backward (dm and every
 *     parameter gradient) against central finite differences of its forward, with a random
 *     upstream gradient; odd sizes (S 4, N 7, c_m 6, c_hidden 3, c_z 5), a mask with zeros and
 *     one residue masked in every sequence (its pairs are bias / 1e-3); the f32 module (output
 *     and every gradient) against the f64 module;
 *  2. chunk sizes {1, 3, 64} against unchunked: outputs bitwise, gradients (sums over chunks of
 *     rows) within f32 tolerance; inference (saved NULL) bitwise equal to training;
 *  3. accumulate onto a nonzero output and nonzero gradients;
 *  4. arena: inference leaves it at its mark, training keeps exactly the saved tensors, backward
 *     leaves nothing;
 *  5. bf16 storage and bf16 compute against f32;
 *  6. the outer_product_mean reference vector through its verifier. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/ref/ref.h"
#include "evoformer/outer_product_mean.h"
#include "evoformer/verify_evoformer_pair.h"
#include "tests/support/mf_test.h"

#define NP 8

typedef struct {
    int64_t S, N, Cm, Ch, Cz, nm, no;
    mf_outer_product_mean_dims d;
    mf_param_spec specs[NP];
    int64_t pn[NP];
    double *m, *mask, *p[NP], *out; /* double data, every value representable in f32 */
    double *ln, *left, *right;      /* reference scratch */
} tcase;

typedef struct {
    float *out, *dm, *dp[NP];
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

static void case_init(tcase *c, int64_t S, int64_t N, int64_t Cm, int64_t Ch, int64_t Cz,
                      uint64_t seed)
{
    memset(c, 0, sizeof *c);
    c->S = S, c->N = N, c->Cm = Cm, c->Ch = Ch, c->Cz = Cz;
    c->nm = S * N * Cm, c->no = N * N * Cz;
    c->d = (mf_outer_product_mean_dims){.c_m = Cm, .c_hidden = Ch, .c_z = Cz};
    MF_TEST_TRUE(mf_outer_product_mean_param_specs(&c->d, c->specs) == NP,
                 "outer_product_mean: %d parameters", NP);
    c->m = dalloc(c->nm);
    mf_test_fill_normal_f64(c->m, c->nm, seed, 1.0);
    round_to_f32(c->m, c->nm);
    c->mask = dalloc(S * N);
    mf_test_fill_mask_f64(c->mask, S, N, seed + 1, 0.7);
    /* The first row is the query sequence, present at every residue but residue 2, which no
     * sequence covers (a padded residue). Every other pair is then seen at least once; pairs
     * seen by no sequence would have update = bias / 1e-3. */
    for (int64_t i = 0; i < N; i++) c->mask[i] = 1.0;
    for (int64_t s = 0; s < S; s++) c->mask[s * N + 2] = 0.0;
    for (int i = 0; i < NP; i++) {
        c->pn[i] = 1;
        for (int k = 0; k < c->specs[i].ndim; k++) c->pn[i] *= c->specs[i].shape[k];
        c->p[i] = dalloc(c->pn[i]);
        double sd = c->specs[i].ndim >= 2 ? 1.0 / sqrt((double)c->specs[i].fan_in) : 0.5;
        mf_test_fill_normal_f64(c->p[i], c->pn[i], seed + 10 + (uint64_t)i, sd);
        if (i == 0)
            for (int64_t k = 0; k < c->pn[i]; k++) c->p[i][k] += 1.0;
        round_to_f32(c->p[i], c->pn[i]);
    }
    c->out = dalloc(c->no);
    c->ln = dalloc(S * N * Cm);
    c->left = dalloc(S * N * Ch);
    c->right = dalloc(S * N * Ch);
}

static void case_free(tcase *c)
{
    free(c->m);
    free(c->mask);
    for (int i = 0; i < NP; i++) free(c->p[i]);
    free(c->out);
    free(c->ln);
    free(c->left);
    free(c->right);
}

/* The double reference: Alg. 10 with AF2's normalisation, by plain loops. */
static void ref_forward(void *ud)
{
    tcase *c = ud;
    const int64_t S = c->S, N = c->N, Ch = c->Ch, Cz = c->Cz, SN = S * N;
    mf_ref_layer_norm_forward_f64(c->ln, NULL, NULL, c->m, c->p[0], c->p[1], SN, c->Cm,
                                  MF_OUTER_PRODUCT_MEAN_LN_EPS);
    mf_ref_linear_forward_f64(c->left, c->ln, c->p[2], c->p[3], SN, c->Cm, Ch, false);
    mf_ref_linear_forward_f64(c->right, c->ln, c->p[4], c->p[5], SN, c->Cm, Ch, false);
    for (int64_t r = 0; r < SN; r++)
        for (int64_t k = 0; k < Ch; k++) {
            c->left[r * Ch + k] *= c->mask[r];
            c->right[r * Ch + k] *= c->mask[r];
        }
    const double *w = c->p[6], *bias = c->p[7];
    for (int64_t i = 0; i < N; i++)
        for (int64_t j = 0; j < N; j++) {
            double norm = 0;
            for (int64_t s = 0; s < S; s++) norm += c->mask[s * N + i] * c->mask[s * N + j];
            for (int64_t f = 0; f < Cz; f++) {
                double acc = bias[f];
                for (int64_t a = 0; a < Ch; a++)
                    for (int64_t e = 0; e < Ch; e++) {
                        double o = 0;
                        for (int64_t s = 0; s < S; s++)
                            o += c->left[(s * N + i) * Ch + a] * c->right[(s * N + j) * Ch + e];
                        acc += o * w[(a * Ch + e) * Cz + f];
                    }
                c->out[(i * N + j) * Cz + f] = acc / ((double)MF_OUTER_PRODUCT_MEAN_EPS + norm);
            }
        }
}

static mf_outer_product_mean_params make_params(const tcase *c, float *const *data)
{
    mf_outer_product_mean_params p;
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
    float *m, *mask, *p[NP], *gout;
} f32_in;

/* Training forward + backward under ctx's policy, accumulating onto copies of init (or zeros). */
static void run_f32(mf_ctx *ctx, const tcase *c, const f32_in *in, tres *r, const tres *init,
                    bool accumulate, const char *what)
{
    r->out = falloc(c->no);
    r->dm = falloc(c->nm);
    if (init) {
        memcpy(r->out, init->out, sizeof(float) * (size_t)c->no);
        memcpy(r->dm, init->dm, sizeof(float) * (size_t)c->nm);
    }
    for (int i = 0; i < NP; i++) {
        r->dp[i] = falloc(c->pn[i]);
        if (init) memcpy(r->dp[i], init->dp[i], sizeof(float) * (size_t)c->pn[i]);
    }
    mf_tensor m = mf_tensor_f32(in->m, 3, c->S, c->N, c->Cm);
    mf_tensor mask = mf_tensor_f32(in->mask, 2, c->S, c->N);
    mf_tensor out = mf_tensor_f32(r->out, 3, c->N, c->N, c->Cz);
    mf_tensor dm = mf_tensor_f32(r->dm, 3, c->S, c->N, c->Cm);
    mf_tensor g = mf_tensor_f32(in->gout, 3, c->N, c->N, c->Cz);
    mf_outer_product_mean_params p = make_params(c, in->p), dp = make_params(c, r->dp);
    mf_outer_product_mean_saved saved;
    mf_arena_mark_t mark = mf_arena_mark(ctx->arena);
    size_t used = mf_arena_used(ctx->arena);
    MF_TEST_OK(mf_outer_product_mean_forward(ctx, &out, accumulate, &saved, &m, &mask, &p, &c->d));
    size_t kept = mf_arena_used(ctx->arena) - used;
    size_t want = aligned(mf_tensor_bytes(&saved.left_t)) + aligned(mf_tensor_bytes(&saved.right));
    MF_TEST_TRUE(kept == want,
                 "%s: training forward kept %zu arena bytes, the saved tensors take %zu", what,
                 kept, want);
    MF_TEST_OK(mf_outer_product_mean_backward(ctx, &dm, &dp, &g, &saved, &m, &mask, &p, &c->d));
    MF_TEST_TRUE(mf_arena_used(ctx->arena) == used + kept, "%s: backward left %zu arena bytes",
                 what, mf_arena_used(ctx->arena) - used - kept);
    mf_arena_release(ctx->arena, mark);
}

static void run_inference(mf_ctx *ctx, const tcase *c, const f32_in *in, float *out_data,
                          const char *what)
{
    mf_tensor m = mf_tensor_f32(in->m, 3, c->S, c->N, c->Cm);
    mf_tensor mask = mf_tensor_f32(in->mask, 2, c->S, c->N);
    mf_tensor out = mf_tensor_f32(out_data, 3, c->N, c->N, c->Cz);
    mf_outer_product_mean_params p = make_params(c, in->p);
    size_t used = mf_arena_used(ctx->arena);
    MF_TEST_OK(mf_outer_product_mean_forward(ctx, &out, false, NULL, &m, &mask, &p, &c->d));
    MF_TEST_TRUE(mf_arena_used(ctx->arena) == used, "%s: inference left %zu arena bytes", what,
                 mf_arena_used(ctx->arena) - used);
}

static void free_res(tres *r)
{
    free(r->out);
    free(r->dm);
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

/* Every result of r against want. bitwise: the output bit for bit. scaled (bf16 runs): atol is
 * multiplied by the size of the quantity, max|output| for the output and the module's gradient
 * scale (the largest |gradient| over dm and every parameter gradient, like the reference vectors'
 * grad_scale) for gradients: bf16 inputs err in proportion to the terms of each sum, and a sum
 * over rows can cancel to far below its terms. */
static void compare_res(const tcase *c, const char *what, const tres *r, const tres *want,
                        bool bitwise, double atol, double rtol, bool scaled)
{
    /* The output's scale leaves out the masked residue's pairs (bias / 1e-3, no product). */
    double out_scale = 1.0;
    for (int64_t i = 0; scaled && i < c->N; i++)
        for (int64_t j = 0; j < c->N; j++)
            if (i != 2 && j != 2)
                out_scale = max_abs(want->out + (i * c->N + j) * c->Cz, c->Cz, out_scale);
    double g_scale = scaled ? max_abs(want->dm, c->nm, 1.0) : 1.0;
    for (int i = 0; scaled && i < NP; i++) g_scale = max_abs(want->dp[i], c->pn[i], g_scale);
    char name[300];
    snprintf(name, sizeof name, "%s: output", what);
    if (bitwise)
        mf_check_bitwise_f32(name, r->out, want->out, c->no);
    else
        check(what, "output", r->out, want->out, c->no, atol, rtol, out_scale);
    check(what, "dm", r->dm, want->dm, c->nm, atol, rtol, g_scale);
    for (int i = 0; i < NP; i++) {
        snprintf(name, sizeof name, "d %s", c->specs[i].name);
        check(what, name, r->dp[i], want->dp[i], c->pn[i], atol, rtol, g_scale);
    }
}

/* ---- the module in f64 (every op runs its double reference) ---------------------------------- */

/* Double rounding (~1e-16) times the condition of short sums: 1e-12 leaves orders of magnitude of
 * headroom; elements near zero get atol = 1e-12 * max|ref|. */
#define TOL_F64 1e-12

static mf_outer_product_mean_params make_params_f64(const tcase *c, double *const *data)
{
    mf_outer_product_mean_params p;
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
    mf_tensor m = F64_TENSOR(c->m, 3, c->S, c->N, c->Cm);
    mf_tensor mask = F64_TENSOR(c->mask, 2, c->S, c->N);
    mf_tensor out = F64_TENSOR(u->out, 3, c->N, c->N, c->Cz);
    mf_outer_product_mean_params p = make_params_f64(c, c->p);
    mf_status st = mf_outer_product_mean_forward(u->ctx, &out, false, NULL, &m, &mask, &p, &c->d);
    if (st != MF_OK) mf_test_fail("outer_product_mean f64 forward: %s", mf_last_error());
}

/* Training forward and backward in f64: out, and dm, dp accumulated from zero. */
static void module_f64_train(mf_ctx *ctx, tcase *c, double *out, double *dm, double **dp,
                             const double *gout)
{
    mf_tensor m = F64_TENSOR(c->m, 3, c->S, c->N, c->Cm);
    mf_tensor mask = F64_TENSOR(c->mask, 2, c->S, c->N);
    mf_tensor to = F64_TENSOR(out, 3, c->N, c->N, c->Cz);
    mf_tensor tdm = F64_TENSOR(dm, 3, c->S, c->N, c->Cm);
    mf_tensor g = F64_TENSOR((void *)gout, 3, c->N, c->N, c->Cz);
    mf_outer_product_mean_params p = make_params_f64(c, c->p), tdp = make_params_f64(c, dp);
    mf_outer_product_mean_saved saved;
    mf_arena_mark_t mark = mf_arena_mark(ctx->arena);
    MF_TEST_OK(mf_outer_product_mean_forward(ctx, &to, false, &saved, &m, &mask, &p, &c->d));
    MF_TEST_TRUE(saved.left_t.dtype == MF_F64 && saved.right.dtype == MF_F64,
                 "outer_product_mean f64: saved projections are %s, %s",
                 mf_dtype_name(saved.left_t.dtype), mf_dtype_name(saved.right.dtype));
    MF_TEST_OK(mf_outer_product_mean_backward(ctx, &tdm, &tdp, &g, &saved, &m, &mask, &p, &c->d));
    mf_arena_release(ctx->arena, mark);
}

static void check_f64(const char *name, const double *a, const double *ref, int64_t n)
{
    double mx = 0;
    for (int64_t i = 0; i < n; i++) mx = fmax(mx, fabs(ref[i]));
    mf_check_close_f64(name, a, ref, n, TOL_F64 * mx, TOL_F64);
}

static void check_case(mf_ctx *ctx, int64_t S, int64_t N, int64_t Cm, int64_t Ch, int64_t Cz,
                       uint64_t seed)
{
    tcase c;
    case_init(&c, S, N, Cm, Ch, Cz, seed);
    char dims[96];
    snprintf(dims, sizeof dims, "opm S %lld N %lld c_m %lld c %lld c_z %lld", (long long)S,
             (long long)N, (long long)Cm, (long long)Ch, (long long)Cz);
    f32_in in;
    in.m = to_f32(c.m, c.nm);
    in.mask = to_f32(c.mask, S * N);
    for (int i = 0; i < NP; i++) in.p[i] = to_f32(c.p[i], c.pn[i]);
    double *goutd = dalloc(c.no);
    mf_test_fill_normal_f64(goutd, c.no, seed + 99, 1.0);
    /* The masked residue's pairs are bias / 1e-3: a 1e-3 upstream gradient there keeps their terms
     * of the checked sum O(1) (finite differences in double lose ~eps |L| / h) and keeps them from
     * dominating d output_b and the gradient scale of the bf16 checks. */
    for (int64_t i = 0; i < N; i++)
        for (int64_t f = 0; f < Cz; f++) {
            goutd[(2 * N + i) * Cz + f] *= 1e-3;
            if (i != 2) goutd[(i * N + 2) * Cz + f] *= 1e-3;
        }
    round_to_f32(goutd, c.no);
    in.gout = to_f32(goutd, c.no);

    /* 1. The module in f64 against the reference and against its own finite differences (storage
     * bf16 asked for, which f64 runs ignore); the f32 module against the f64 module. */
    char what[200];
    double *out64 = dalloc(c.no), *dm64 = dalloc(c.nm), *dp64[NP];
    for (int i = 0; i < NP; i++) dp64[i] = dalloc(c.pn[i]);
    ctx->policy = mf_policy_default();
    ctx->policy.storage = MF_BF16;
    ctx->policy.chunk_size = 2;
    module_f64_train(ctx, &c, out64, dm64, dp64, goutd);
    ref_forward(&c);
    snprintf(what, sizeof what, "%s: f64 module output vs f64 reference", dims);
    check_f64(what, out64, c.out, c.no);
    f64_run u = {ctx, &c, dalloc(c.no)};
    mf_gc_array gin[1 + NP];
    const double *grads[1 + NP];
    gin[0] = (mf_gc_array){"m", c.m, c.nm};
    grads[0] = dm64;
    for (int i = 0; i < NP; i++) {
        gin[1 + i] = (mf_gc_array){c.specs[i].name, c.p[i], c.pn[i]};
        grads[1 + i] = dp64[i];
    }
    mf_gc_array outs[1] = {{"update", u.out, c.no}};
    const double *gouts[1] = {goutd};
    snprintf(what, sizeof what, "%s: f64 module backward", dims);
    mf_gradcheck(what, module_f64_forward, &u, gin, grads, 1 + NP, outs, gouts, 1, MF_TOL_FD_STEP,
                 MF_TOL_FD_ATOL, MF_TOL_FD_RTOL, 0);
    free(u.out);
    ctx->policy = mf_policy_default();
    tres base;
    run_f32(ctx, &c, &in, &base, NULL, false, dims);
    snprintf(what, sizeof what, "%s: f32 output vs f64 module", dims);
    mf_check_close_f32_f64(what, base.out, out64, c.no, MF_TOL_F32_ATOL, MF_TOL_F32_RTOL);
    snprintf(what, sizeof what, "%s: f32 dm vs f64 module", dims);
    mf_check_close_f32_f64(what, base.dm, dm64, c.nm, MF_TOL_F32_ATOL, MF_TOL_F32_RTOL);
    for (int i = 0; i < NP; i++) {
        snprintf(what, sizeof what, "%s: f32 d %s vs f64 module", dims, c.specs[i].name);
        mf_check_close_f32_f64(what, base.dp[i], dp64[i], c.pn[i], MF_TOL_F32_ATOL,
                               MF_TOL_F32_RTOL);
    }
    free(out64);
    free(dm64);
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
        float *inf = falloc(c.no);
        run_inference(ctx, &c, &in, inf, what);
        char name[240];
        snprintf(name, sizeof name, "%s chunk %lld: inference output vs training", dims,
                 (long long)chunks[k]);
        mf_check_bitwise_f32(name, inf, base.out, c.no);
        free(inf);
        free_res(&r);
    }

    /* 3. */
    {
        ctx->policy = mf_policy_default();
        ctx->policy.chunk_size = 3;
        tres init, r, want;
        init.out = falloc(c.no), init.dm = falloc(c.nm);
        want.out = falloc(c.no), want.dm = falloc(c.nm);
        mf_test_fill_normal_f32(init.out, c.no, seed + 200, 1.0f);
        mf_test_fill_normal_f32(init.dm, c.nm, seed + 201, 1.0f);
        for (int64_t k = 0; k < c.no; k++) want.out[k] = init.out[k] + base.out[k];
        for (int64_t k = 0; k < c.nm; k++) want.dm[k] = init.dm[k] + base.dm[k];
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
        /* bf16 storage leaves the forward in f32: its output is the f32 output. */
        compare_res(&c, what, &r, &base, mode == 0, MF_TOL_BF16_ATOL, MF_TOL_BF16_RTOL, true);
        free_res(&r);
    }
    ctx->policy = mf_policy_default();

    free_res(&base);
    free(in.m);
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
        return mf_test_finish("test_outer_product_mean");
    }
    check_case(&ctx, 4, 7, 6, 3, 5, 500);
    run_file(&ctx, "outer_product_mean", mf_verify_outer_product_mean);
    mf_test_ctx_free(&ctx, &arena);
    return mf_test_finish("test_outer_product_mean");
}
