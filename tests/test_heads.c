/* Output heads (model/heads.h): distogram, masked MSA, predicted lDDT, experimentally resolved,
 * predicted aligned error.
 *  1. each head run in f64: its forward against a double reference written here with plain loops
 *     (1e-12), its backward (input and every parameter gradient) against central finite
 *     differences of its forward (mf_gradcheck, random upstream gradient, random nonzero
 *     parameters, odd sizes: N = 7, c_z = 5, c_m = c_s = 6, bins 9 / 11 / 13, 37 atoms, S = 5);
 *     the f32 head (output and every gradient) against the f64 head (MF_TOL_F32);
 *  2. chunk sizes {1, 3, 64} at inference against unchunked: bitwise; inference against the
 *     training forward: bitwise;
 *  3. accumulate: the forward adds onto a nonzero output, the backward onto nonzero gradients;
 *  4. arena: inference leaves it at its mark, training keeps exactly the saved tensors (two for
 *     the pLDDT head, none for the linear heads), backward leaves nothing;
 *  5. bf16 storage of the pLDDT head's saved activations and bf16 compute of every head against
 *     f32 (MF_TOL_BF16);
 *  6. confidence outputs: pLDDT, expected aligned error and pTM against hand-derived values
 *     (uniform and one-hot logits, d0 with the N < 19 clip, residue weights, first-maximum
 *     frame); the parameter tables (names, shapes, AF2 initialisers) and dims from the tiny preset;
 *  7. shared/testvectors through mf_verify_heads: distogram, masked MSA, experimentally resolved
 *     and lDDT logits and pLDDT against expected_outputs.h5 (1e-4), the four loss terms against
 *     train_expected.h5 (1e-4) and every head weight's gradient of loss/total (1e-3). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model/heads.h"
#include "model/verify_heads.h"
#include "tests/support/mf_test.h"

#define MAXP 8
/* Double rounding (~1e-16) times the condition of short sums. */
#define TOL_F64 1e-12
/* Finite-difference step for the heads that are linear in every single input (see test_head). */
#define FD_STEP_LINEAR 1e-3

typedef enum { H_DGRAM, H_MSA, H_PLDDT, H_EXPRES, H_PAE, H_COUNT } head_kind;

static const char *const head_names[H_COUNT] = {
    "distogram head", "masked MSA head", "predicted lDDT head", "experimentally resolved head",
    "predicted aligned error head"};

typedef struct {
    head_kind kind;
    mf_heads_dims d;
    int xnd, ond;
    int64_t xs[3], os[3], nx, no;
    int np;
    mf_param_spec specs[MAXP];
    int64_t pn[MAXP];
    double *x, *p[MAXP];
} hcase;

typedef union {
    mf_linear_head_saved lin;
    mf_predicted_lddt_head_saved pl;
} hsaved;

static double *dalloc(int64_t n)
{
    return calloc((size_t)(n > 0 ? n : 1), sizeof(double));
}

static float *falloc(int64_t n)
{
    return calloc((size_t)(n > 0 ? n : 1), sizeof(float));
}

static void round_f32(double *x, int64_t n)
{
    for (int64_t i = 0; i < n; i++) x[i] = (double)(float)x[i];
}

static float *mirror(const double *x, int64_t n)
{
    float *f = falloc(n);
    mf_f64_to_f32(f, x, n);
    return f;
}

static void case_init(hcase *c, head_kind kind, uint64_t seed)
{
    memset(c, 0, sizeof *c);
    c->kind = kind;
    const int64_t N = 7, S = 5;
    c->d = (mf_heads_dims){.c_m = 6,
                           .c_z = 5,
                           .c_s = 6,
                           .distogram_num_bins = 9,
                           .distogram_first_break = 2.3125,
                           .distogram_last_break = 21.6875,
                           .masked_msa_num_output = 11,
                           .plddt_num_bins = 13,
                           .plddt_c_hidden = 5,
                           .experimentally_resolved_num_output = 37,
                           .pae_num_bins = 11,
                           .pae_max_error_bin = 31.0};
    const mf_heads_dims *d = &c->d;
    switch (kind) {
    case H_DGRAM:
        c->xnd = c->ond = 3;
        c->xs[0] = N, c->xs[1] = N, c->xs[2] = d->c_z;
        c->os[0] = N, c->os[1] = N, c->os[2] = d->distogram_num_bins;
        c->np = mf_distogram_head_param_specs(d, c->specs);
        break;
    case H_MSA:
        c->xnd = c->ond = 3;
        c->xs[0] = S, c->xs[1] = N, c->xs[2] = d->c_m;
        c->os[0] = S, c->os[1] = N, c->os[2] = d->masked_msa_num_output;
        c->np = mf_masked_msa_head_param_specs(d, c->specs);
        break;
    case H_PLDDT:
        c->xnd = c->ond = 2;
        c->xs[0] = N, c->xs[1] = d->c_s;
        c->os[0] = N, c->os[1] = d->plddt_num_bins;
        c->np = mf_predicted_lddt_head_param_specs(d, c->specs);
        break;
    case H_EXPRES:
        c->xnd = c->ond = 2;
        c->xs[0] = N, c->xs[1] = d->c_s;
        c->os[0] = N, c->os[1] = d->experimentally_resolved_num_output;
        c->np = mf_experimentally_resolved_head_param_specs(d, c->specs);
        break;
    case H_PAE:
        c->xnd = c->ond = 3;
        c->xs[0] = N, c->xs[1] = N, c->xs[2] = d->c_z;
        c->os[0] = N, c->os[1] = N, c->os[2] = d->pae_num_bins;
        c->np = mf_predicted_aligned_error_head_param_specs(d, c->specs);
        break;
    default:
        break;
    }
    c->nx = c->no = 1;
    for (int k = 0; k < c->xnd; k++) c->nx *= c->xs[k];
    for (int k = 0; k < c->ond; k++) c->no *= c->os[k];
    c->x = dalloc(c->nx);
    mf_test_fill_normal_f64(c->x, c->nx, seed, 1.0);
    round_f32(c->x, c->nx);
    for (int i = 0; i < c->np; i++) {
        c->pn[i] = 1;
        for (int k = 0; k < c->specs[i].ndim; k++) c->pn[i] *= c->specs[i].shape[k];
        c->p[i] = dalloc(c->pn[i]);
        /* Random parameters everywhere (AF2's zero inits would hide gradients); weights of
         * variance 1/fan_in keep activations O(1); layer-norm scales around 1. */
        const double sd = c->specs[i].ndim == 2 ? 1.0 / sqrt((double)c->specs[i].shape[0]) : 0.5;
        mf_test_fill_normal_f64(c->p[i], c->pn[i], seed + 10 + (uint64_t)i, sd);
        if (c->specs[i].init == MF_INIT_ONES)
            for (int64_t k = 0; k < c->pn[i]; k++) c->p[i][k] += 1.0;
        round_f32(c->p[i], c->pn[i]);
    }
}

static void case_free(hcase *c)
{
    free(c->x);
    for (int i = 0; i < c->np; i++) free(c->p[i]);
}

static void make_params(const hcase *c, mf_dtype dt, void *const *data, mf_tensor *out)
{
    for (int i = 0; i < c->np; i++)
        out[i] = mf_tensor_make(data ? data[i] : NULL, dt, MF_DEV_CPU, c->specs[i].ndim,
                                c->specs[i].shape);
}

/* ---- dispatch ------------------------------------------------------------------------------- */

static mf_status head_forward(mf_ctx *ctx, const hcase *c, mf_tensor *out, bool acc, hsaved *sv,
                              const mf_tensor *x, mf_tensor *p)
{
    const mf_heads_dims *d = &c->d;
    switch (c->kind) {
    case H_DGRAM:
        return mf_distogram_head_forward(ctx, out, acc, sv ? &sv->lin : NULL, x,
                                         (const mf_distogram_head_params *)(void *)p, d);
    case H_MSA:
        return mf_masked_msa_head_forward(ctx, out, acc, sv ? &sv->lin : NULL, x,
                                          (const mf_masked_msa_head_params *)(void *)p, d);
    case H_PLDDT:
        return mf_predicted_lddt_head_forward(ctx, out, acc, sv ? &sv->pl : NULL, x,
                                              (const mf_predicted_lddt_head_params *)(void *)p, d);
    case H_EXPRES:
        return mf_experimentally_resolved_head_forward(
            ctx, out, acc, sv ? &sv->lin : NULL, x,
            (const mf_experimentally_resolved_head_params *)(void *)p, d);
    case H_PAE:
        return mf_predicted_aligned_error_head_forward(
            ctx, out, acc, sv ? &sv->lin : NULL, x,
            (const mf_predicted_aligned_error_head_params *)(void *)p, d);
    default:
        return MF_ERROR(MF_ERR_INVALID, "unknown head");
    }
}

static mf_status head_backward(mf_ctx *ctx, const hcase *c, mf_tensor *dx, mf_tensor *dp,
                               const mf_tensor *dout, const hsaved *sv, const mf_tensor *x,
                               mf_tensor *p)
{
    const mf_heads_dims *d = &c->d;
    switch (c->kind) {
    case H_DGRAM:
        return mf_distogram_head_backward(ctx, dx, (mf_distogram_head_params *)(void *)dp, dout,
                                          &sv->lin, x, (const mf_distogram_head_params *)(void *)p,
                                          d);
    case H_MSA:
        return mf_masked_msa_head_backward(ctx, dx, (mf_masked_msa_head_params *)(void *)dp, dout,
                                           &sv->lin, x,
                                           (const mf_masked_msa_head_params *)(void *)p, d);
    case H_PLDDT:
        return mf_predicted_lddt_head_backward(ctx, dx, (mf_predicted_lddt_head_params *)(void *)dp,
                                               dout, &sv->pl, x,
                                               (const mf_predicted_lddt_head_params *)(void *)p, d);
    case H_EXPRES:
        return mf_experimentally_resolved_head_backward(
            ctx, dx, (mf_experimentally_resolved_head_params *)(void *)dp, dout, &sv->lin, x,
            (const mf_experimentally_resolved_head_params *)(void *)p, d);
    case H_PAE:
        return mf_predicted_aligned_error_head_backward(
            ctx, dx, (mf_predicted_aligned_error_head_params *)(void *)dp, dout, &sv->lin, x,
            (const mf_predicted_aligned_error_head_params *)(void *)p, d);
    default:
        return MF_ERROR(MF_ERR_INVALID, "unknown head");
    }
}

static size_t aligned(size_t n)
{
    return (n + MF_ARENA_ALIGN - 1) / MF_ARENA_ALIGN * MF_ARENA_ALIGN;
}

static size_t saved_bytes(const hcase *c, const hsaved *sv)
{
    if (c->kind != H_PLDDT) return 0;
    return aligned(mf_tensor_bytes(&sv->pl.act_0)) + aligned(mf_tensor_bytes(&sv->pl.act_1));
}

/* ---- the double reference (plain loops) ---------------------------------------------------- */

static void ref_linear(double *y, const double *x, const double *w, const double *b, int64_t R,
                       int64_t F, int64_t C)
{
    for (int64_t r = 0; r < R; r++)
        for (int64_t o = 0; o < C; o++) {
            double s = b[o];
            for (int64_t k = 0; k < F; k++) s += x[r * F + k] * w[k * C + o];
            y[r * C + o] = s;
        }
}

static void ref_forward(const hcase *c, double *out)
{
    const mf_heads_dims *d = &c->d;
    const int64_t R = c->nx / c->xs[c->xnd - 1], F = c->xs[c->xnd - 1], C = c->os[c->ond - 1];
    if (c->kind != H_PLDDT) {
        ref_linear(out, c->x, c->p[0], c->p[1], R, F, C);
        if (c->kind == H_DGRAM) {
            /* AF2: logits = half + swapaxes(half) */
            const int64_t N = c->xs[0];
            double *half = dalloc(c->no);
            memcpy(half, out, sizeof(double) * (size_t)c->no);
            for (int64_t i = 0; i < N; i++)
                for (int64_t j = 0; j < N; j++)
                    for (int64_t b = 0; b < C; b++)
                        out[(i * N + j) * C + b] =
                            half[(i * N + j) * C + b] + half[(j * N + i) * C + b];
            free(half);
        }
        return;
    }
    const int64_t H = d->plddt_c_hidden;
    double *ln = dalloc(R * F), *a0 = dalloc(R * H), *a1 = dalloc(R * H);
    for (int64_t r = 0; r < R; r++) {
        double mean = 0, var = 0;
        for (int64_t k = 0; k < F; k++) mean += c->x[r * F + k];
        mean /= (double)F;
        for (int64_t k = 0; k < F; k++) var += (c->x[r * F + k] - mean) * (c->x[r * F + k] - mean);
        var /= (double)F;
        const double rs = 1.0 / sqrt(var + (double)MF_HEADS_LN_EPS);
        for (int64_t k = 0; k < F; k++)
            ln[r * F + k] = (c->x[r * F + k] - mean) * rs * c->p[0][k] + c->p[1][k];
    }
    ref_linear(a0, ln, c->p[2], c->p[3], R, F, H);
    for (int64_t k = 0; k < R * H; k++) a0[k] = a0[k] > 0 ? a0[k] : 0;
    ref_linear(a1, a0, c->p[4], c->p[5], R, H, H);
    for (int64_t k = 0; k < R * H; k++) a1[k] = a1[k] > 0 ? a1[k] : 0;
    ref_linear(out, a1, c->p[6], c->p[7], R, H, C);
    free(ln), free(a0), free(a1);
}

/* ---- 1: f64 oracle, finite differences, f32 vs f64 ------------------------------------------ */

typedef struct {
    mf_ctx *ctx;
    hcase *c;
    double *out;
} f64_run;

static void f64_forward(void *ud)
{
    f64_run *u = ud;
    hcase *c = u->c;
    mf_tensor x = mf_tensor_make(c->x, MF_F64, MF_DEV_CPU, c->xnd, c->xs);
    mf_tensor out = mf_tensor_make(u->out, MF_F64, MF_DEV_CPU, c->ond, c->os);
    mf_tensor p[MAXP];
    make_params(c, MF_F64, (void *const *)c->p, p);
    if (head_forward(u->ctx, c, &out, false, NULL, &x, p) != MF_OK)
        mf_test_fail("%s f64 forward: %s", head_names[c->kind], mf_last_error());
}

typedef struct {
    void *out, *dx, *dp[MAXP];
} hres;

static void res_alloc(const hcase *c, mf_dtype dt, hres *r, const hres *init)
{
    const size_t es = mf_dtype_size(dt);
    r->out = calloc((size_t)c->no, es), r->dx = calloc((size_t)c->nx, es);
    if (init) {
        memcpy(r->out, init->out, es * (size_t)c->no);
        memcpy(r->dx, init->dx, es * (size_t)c->nx);
    }
    for (int i = 0; i < c->np; i++) {
        r->dp[i] = calloc((size_t)c->pn[i], es);
        if (init) memcpy(r->dp[i], init->dp[i], es * (size_t)c->pn[i]);
    }
}

static void res_free(const hcase *c, hres *r)
{
    free(r->out), free(r->dx);
    for (int i = 0; i < c->np; i++) free(r->dp[i]);
}

/* Training forward + backward under ctx's policy (dtype of xd/pd), accumulating into r; checks the
 * arena accounting. */
static void run_train(mf_ctx *ctx, const hcase *c, mf_dtype dt, void *xd, void *const *pd,
                      const void *gout, hres *r, bool accumulate, const char *what)
{
    mf_tensor x = mf_tensor_make(xd, dt, MF_DEV_CPU, c->xnd, c->xs);
    mf_tensor out = mf_tensor_make(r->out, dt, MF_DEV_CPU, c->ond, c->os);
    mf_tensor dx = mf_tensor_make(r->dx, dt, MF_DEV_CPU, c->xnd, c->xs);
    mf_tensor g = mf_tensor_make((void *)gout, dt, MF_DEV_CPU, c->ond, c->os);
    mf_tensor p[MAXP], dp[MAXP];
    make_params(c, dt, pd, p);
    make_params(c, dt, r->dp, dp);
    hsaved sv;
    memset(&sv, 0, sizeof sv);
    const mf_arena_mark_t mark = mf_arena_mark(ctx->arena);
    const size_t used = mf_arena_used(ctx->arena);
    MF_TEST_OK(head_forward(ctx, c, &out, accumulate, &sv, &x, p));
    const size_t kept = mf_arena_used(ctx->arena) - used;
    MF_TEST_TRUE(kept == saved_bytes(c, &sv),
                 "%s: training forward kept %zu arena bytes, the saved tensors take %zu", what,
                 kept, saved_bytes(c, &sv));
    MF_TEST_OK(head_backward(ctx, c, &dx, dp, &g, &sv, &x, p));
    MF_TEST_TRUE(mf_arena_used(ctx->arena) == used + kept, "%s: backward left %zu arena bytes",
                 what, mf_arena_used(ctx->arena) - used - kept);
    mf_arena_release(ctx->arena, mark);
}

static void run_inference(mf_ctx *ctx, const hcase *c, float *xf, float *const *pf, float *outd,
                          const char *what)
{
    mf_tensor x = mf_tensor_make(xf, MF_F32, MF_DEV_CPU, c->xnd, c->xs);
    mf_tensor out = mf_tensor_make(outd, MF_F32, MF_DEV_CPU, c->ond, c->os);
    mf_tensor p[MAXP];
    make_params(c, MF_F32, (void *const *)pf, p);
    const size_t used = mf_arena_used(ctx->arena);
    MF_TEST_OK(head_forward(ctx, c, &out, false, NULL, &x, p));
    MF_TEST_TRUE(mf_arena_used(ctx->arena) == used, "%s: inference left %zu arena bytes", what,
                 mf_arena_used(ctx->arena) - used);
}

static void check_f64(const char *name, const double *a, const double *ref, int64_t n)
{
    double mx = 0;
    for (int64_t i = 0; i < n; i++) mx = fmax(mx, fabs(ref[i]));
    mf_check_close_f64(name, a, ref, n, TOL_F64 * mx, TOL_F64);
}

/* bf16 runs against f32, per array: max|a - ref| / max|ref| <= rtol (the metric of the reference
 * vectors). Element-wise checks do not fit here: weight gradients sum products over all N^2 rows
 * of bf16-rounded inputs and cancel, so single elements far below the array's scale carry the
 * absolute error of the whole sum. */
static void compare_res_bf16(const hcase *c, const hres *a, const hres *b, double rtol,
                             const char *what)
{
    char name[200];
    snprintf(name, sizeof name, "%s: output", what);
    mf_check_maxrel_f32(name, a->out, b->out, c->no, rtol);
    snprintf(name, sizeof name, "%s: dx", what);
    mf_check_maxrel_f32(name, a->dx, b->dx, c->nx, rtol);
    for (int i = 0; i < c->np; i++) {
        snprintf(name, sizeof name, "%s: d %s", what, c->specs[i].name);
        mf_check_maxrel_f32(name, a->dp[i], b->dp[i], c->pn[i], rtol);
    }
}

static void test_head(mf_ctx *ctx, head_kind kind, uint64_t seed)
{
    hcase c;
    case_init(&c, kind, seed);
    const char *hn = head_names[kind];
    char what[200];
    double *goutd = dalloc(c.no);
    mf_test_fill_normal_f64(goutd, c.no, seed + 99, 1.0);
    round_f32(goutd, c.no);

    /* 1. f64 head: reference forward and finite differences (chunked, bf16 storage asked for:
     * f64 runs keep f64). */
    ctx->policy = mf_policy_default();
    ctx->policy.storage = MF_BF16;
    ctx->policy.chunk_size = 3;
    hres r64;
    res_alloc(&c, MF_F64, &r64, NULL);
    run_train(ctx, &c, MF_F64, c.x, (void *const *)c.p, goutd, &r64, false, hn);
    double *ref = dalloc(c.no);
    ref_forward(&c, ref);
    snprintf(what, sizeof what, "%s (x %lld values): f64 output vs double reference", hn,
             (long long)c.nx);
    check_f64(what, r64.out, ref, c.no);
    f64_run u = {ctx, &c, dalloc(c.no)};
    mf_gc_array in[1 + MAXP];
    const double *grads[1 + MAXP];
    in[0] = (mf_gc_array){"x", c.x, c.nx};
    grads[0] = r64.dx;
    for (int i = 0; i < c.np; i++) {
        in[1 + i] = (mf_gc_array){c.specs[i].name, c.p[i], c.pn[i]};
        grads[1 + i] = r64.dp[i];
    }
    mf_gc_array outs[1] = {{"logits", u.out, c.no}};
    const double *gouts[1] = {goutd};
    snprintf(what, sizeof what, "%s f64 backward", hn);
    /* The linear heads are linear in each single input or parameter: a central difference is
     * exact for any step, and a larger step shrinks the rounding error of L(x + h) - L(x - h). */
    const double step = kind == H_PLDDT ? MF_TOL_FD_STEP : FD_STEP_LINEAR;
    mf_gradcheck(what, f64_forward, &u, in, grads, 1 + c.np, outs, gouts, 1, step, MF_TOL_FD_ATOL,
                 MF_TOL_FD_RTOL, 0);
    free(u.out);

    /* f32 against f64. */
    ctx->policy = mf_policy_default();
    float *xf = mirror(c.x, c.nx), *pf[MAXP], *gout = mirror(goutd, c.no);
    for (int i = 0; i < c.np; i++) pf[i] = mirror(c.p[i], c.pn[i]);
    hres base;
    res_alloc(&c, MF_F32, &base, NULL);
    run_train(ctx, &c, MF_F32, xf, (void *const *)pf, gout, &base, false, hn);
    snprintf(what, sizeof what, "%s: f32 output vs f64", hn);
    mf_check_close_f32_f64(what, base.out, r64.out, c.no, MF_TOL_F32_ATOL, MF_TOL_F32_RTOL);
    snprintf(what, sizeof what, "%s: f32 dx vs f64", hn);
    mf_check_close_f32_f64(what, base.dx, r64.dx, c.nx, MF_TOL_F32_ATOL, MF_TOL_F32_RTOL);
    for (int i = 0; i < c.np; i++) {
        snprintf(what, sizeof what, "%s: f32 d %s vs f64", hn, c.specs[i].name);
        mf_check_close_f32_f64(what, base.dp[i], r64.dp[i], c.pn[i], MF_TOL_F32_ATOL,
                               MF_TOL_F32_RTOL);
    }

    /* 2. chunking at inference, inference against training. */
    float *inf0 = falloc(c.no), *infk = falloc(c.no);
    run_inference(ctx, &c, xf, pf, inf0, hn);
    snprintf(what, sizeof what, "%s: inference vs training forward", hn);
    mf_check_bitwise_f32(what, inf0, base.out, c.no);
    const int64_t chunks[3] = {1, 3, 64};
    for (int k = 0; k < 3; k++) {
        ctx->policy.chunk_size = chunks[k];
        run_inference(ctx, &c, xf, pf, infk, hn);
        snprintf(what, sizeof what, "%s: inference chunk %lld vs unchunked", hn,
                 (long long)chunks[k]);
        mf_check_bitwise_f32(what, infk, inf0, c.no);
    }
    ctx->policy = mf_policy_default();

    /* 3. accumulate onto nonzero outputs and gradients. */
    hres init, acc;
    res_alloc(&c, MF_F32, &init, NULL);
    mf_test_fill_normal_f32(init.out, c.no, seed + 200, 1.0f);
    mf_test_fill_normal_f32(init.dx, c.nx, seed + 201, 1.0f);
    for (int i = 0; i < c.np; i++)
        mf_test_fill_normal_f32(init.dp[i], c.pn[i], seed + 202 + (uint64_t)i, 1.0f);
    res_alloc(&c, MF_F32, &acc, &init);
    run_train(ctx, &c, MF_F32, xf, (void *const *)pf, gout, &acc, true, hn);
    float *diff = falloc(c.no);
    for (int64_t k = 0; k < c.no; k++) diff[k] = ((float *)acc.out)[k] - ((float *)init.out)[k];
    snprintf(what, sizeof what, "%s: accumulated output - initial vs output", hn);
    mf_check_close_f32(what, diff, base.out, c.no, MF_TOL_F32_ATOL, MF_TOL_F32_RTOL);
    free(diff);
    diff = falloc(c.nx);
    for (int64_t k = 0; k < c.nx; k++) diff[k] = ((float *)acc.dx)[k] - ((float *)init.dx)[k];
    snprintf(what, sizeof what, "%s: accumulated dx - initial vs dx", hn);
    mf_check_close_f32(what, diff, base.dx, c.nx, MF_TOL_F32_ATOL, MF_TOL_F32_RTOL);
    free(diff);
    for (int i = 0; i < c.np; i++) {
        diff = falloc(c.pn[i]);
        for (int64_t k = 0; k < c.pn[i]; k++)
            diff[k] = ((float *)acc.dp[i])[k] - ((float *)init.dp[i])[k];
        snprintf(what, sizeof what, "%s: accumulated d %s - initial", hn, c.specs[i].name);
        mf_check_close_f32(what, diff, base.dp[i], c.pn[i], MF_TOL_F32_ATOL, MF_TOL_F32_RTOL);
        free(diff);
    }

    /* 5. bf16 storage (the pLDDT head's saved ReLU outputs) and bf16 compute. */
    if (kind == H_PLDDT) {
        hres sb;
        res_alloc(&c, MF_F32, &sb, NULL);
        ctx->policy.storage = MF_BF16;
        run_train(ctx, &c, MF_F32, xf, (void *const *)pf, gout, &sb, false, hn);
        snprintf(what, sizeof what, "%s storage bf16 vs f32", hn);
        compare_res_bf16(&c, &sb, &base, MF_TOL_BF16_RTOL, what);
        res_free(&c, &sb);
        ctx->policy = mf_policy_default();
    }
    hres cb;
    res_alloc(&c, MF_F32, &cb, NULL);
    ctx->policy.compute = MF_BF16;
    run_train(ctx, &c, MF_F32, xf, (void *const *)pf, gout, &cb, false, hn);
    snprintf(what, sizeof what, "%s compute bf16 vs f32", hn);
    compare_res_bf16(&c, &cb, &base, MF_TOL_BF16_RTOL, what);
    ctx->policy = mf_policy_default();

    res_free(&c, &cb), res_free(&c, &acc), res_free(&c, &init), res_free(&c, &base);
    res_free(&c, &r64);
    free(inf0), free(infk), free(xf), free(gout), free(goutd), free(ref);
    for (int i = 0; i < c.np; i++) free(pf[i]);
    case_free(&c);
}

/* ---- 6: confidence outputs, tables ------------------------------------------------------------
 */

static void test_confidence(void)
{
    enum { N = 3, B = 50 };
    float logits[N * B] = {0}, plddt[N];
    /* uniform -> mean bin centre 0.5; one-hot-like logits -> the bin centre */
    logits[1 * B + 37] = 200.0f;
    logits[2 * B + 0] = 200.0f;
    mf_tensor lt = mf_tensor_f32(logits, 2, N, B), pt = mf_tensor_f32(plddt, 1, N);
    MF_TEST_OK(mf_compute_plddt(&pt, &lt));
    const float want[N] = {50.0f, 100.0f * 37.5f / 50.0f, 1.0f};
    mf_check_close_f32("pLDDT of uniform / bin-37 / bin-0 logits", plddt, want, N, 1e-4, 1e-6);

    /* Aligned error, 64 bins, breaks linspace(0, 31, 63) (step 0.5): centres 0.25, 0.75, ...,
     * 31.25 and the catch-all 31.75. */
    enum { M = 4, E = 64 };
    float *pl = falloc(M * M * E), pae[M * M];
    for (int ij = 0; ij < M * M; ij++) pl[ij * E + (ij % E)] = 300.0f;
    pl[(M * M - 1) * E + E - 1] = 600.0f; /* the last pair in the catch-all bin */
    mf_tensor plt = mf_tensor_f32(pl, 3, M, M, E), paet = mf_tensor_f32(pae, 2, M, M);
    double max_pae = 0;
    MF_TEST_OK(mf_compute_predicted_aligned_error(&paet, &max_pae, &plt, 31.0));
    float pwant[M * M];
    for (int ij = 0; ij < M * M; ij++) pwant[ij] = 0.25f + 0.5f * (float)(ij % E);
    pwant[M * M - 1] = 31.75f;
    mf_check_close_f32("expected aligned error of one-hot logits", pae, pwant, M * M, 1e-5, 1e-6);
    MF_TEST_TRUE(fabs(max_pae - 31.75) < 1e-12, "max predicted aligned error %g, want 31.75",
                 max_pae);

    /* pTM: all mass in bin b for frame rows -> tm = 1 / (1 + c_b^2 / d0^2), with d0 from
     * max(N, 19) (N = 4 -> 19: d0 = 1.24 * 4^(1/3) - 1.8). Row i puts its mass in bin 2 i. */
    memset(pl, 0, sizeof(float) * M * M * E);
    for (int i = 0; i < M; i++)
        for (int j = 0; j < M; j++) pl[(i * M + j) * E + 2 * i] = 400.0f;
    const double d0 = 1.24 * cbrt(19.0 - 15.0) - 1.8;
    double ptm = 0;
    MF_TEST_OK(mf_compute_predicted_tm_score(&ptm, &plt, NULL, 31.0));
    const double c0 = 0.25; /* row 0 (bin 0) has the highest score */
    double want_ptm = 1.0 / (1.0 + c0 * c0 / (d0 * d0));
    mf_check_close_f64("pTM (4 residues, d0 of 19, best frame 0)", &ptm, &want_ptm, 1, 1e-6, 1e-6);
    /* weights: frame 0 weighted 0 -> best weighted frame is 1 (bin 2, centre 1.25); pair weights
     * w_i w_j make row 1's average over j with weights (0, 1, 1, 1). */
    float w[M] = {0, 1, 1, 1};
    mf_tensor wt = mf_tensor_f32(w, 1, M);
    MF_TEST_OK(mf_compute_predicted_tm_score(&ptm, &plt, &wt, 31.0));
    const double c1 = 1.25;
    want_ptm = 3.0 / (1e-8 + 3.0) / (1.0 + c1 * c1 / (d0 * d0));
    mf_check_close_f64("pTM with residue weights (frame 0 weight 0)", &ptm, &want_ptm, 1, 1e-6,
                       1e-6);
    /* a long chain: d0 from N itself (N = 40 > 19) */
    enum { L = 40 };
    float *ll = falloc(L * L * E);
    for (int ij = 0; ij < L * L; ij++) ll[ij * E + 10] = 400.0f;
    mf_tensor llt = mf_tensor_f32(ll, 3, L, L, E);
    MF_TEST_OK(mf_compute_predicted_tm_score(&ptm, &llt, NULL, 31.0));
    const double d40 = 1.24 * cbrt(40.0 - 15.0) - 1.8, c10 = 5.25;
    want_ptm = 1.0 / (1.0 + c10 * c10 / (d40 * d40));
    mf_check_close_f64("pTM (40 residues, all in bin 10)", &ptm, &want_ptm, 1, 1e-6, 1e-6);
    free(ll), free(pl);
}

static void test_tables(void)
{
    mf_config cfg;
    MF_TEST_OK(mf_config_preset("tiny", &cfg));
    const mf_heads_dims d = mf_heads_dims_from_config(&cfg);
    MF_TEST_TRUE(d.c_z == 16 && d.c_m == 32 && d.c_s == 32 && d.distogram_num_bins == 64 &&
                     d.plddt_num_bins == 50 && d.plddt_c_hidden == 16 &&
                     d.masked_msa_num_output == 23 && d.experimentally_resolved_num_output == 37 &&
                     d.distogram_first_break == 2.3125 && d.distogram_last_break == 21.6875,
                 "dims from the tiny preset do not match shared/testvectors/config.json");
    mf_param_spec s[MAXP];
    int n = mf_predicted_lddt_head_param_specs(&d, s);
    static const char *const names[8] = {"input_layer_norm//scale", "input_layer_norm//offset",
                                         "act_0//weights",          "act_0//bias",
                                         "act_1//weights",          "act_1//bias",
                                         "logits//weights",         "logits//bias"};
    static const mf_init inits[8] = {MF_INIT_ONES, MF_INIT_ZEROS, MF_INIT_RELU,  MF_INIT_ZEROS,
                                     MF_INIT_RELU, MF_INIT_ZEROS, MF_INIT_ZEROS, MF_INIT_ZEROS};
    bool ok = n == 8 && s[2].shape[0] == 32 && s[2].shape[1] == 16 && s[6].shape[1] == 50;
    for (int i = 0; ok && i < n; i++) ok = !strcmp(s[i].name, names[i]) && s[i].init == inits[i];
    MF_TEST_TRUE(ok, "predicted_lddt_head table: names, shapes or initialisers differ from AF2");
    n = mf_distogram_head_param_specs(&d, s);
    MF_TEST_TRUE(n == 2 && !strcmp(s[0].name, "half_logits//weights") && s[0].shape[0] == 16 &&
                     s[0].shape[1] == 64 && s[0].init == MF_INIT_ZEROS,
                 "distogram_head table differs from AF2");
    n = mf_masked_msa_head_param_specs(&d, s);
    MF_TEST_TRUE(n == 2 && !strcmp(s[0].name, "logits//weights") && s[0].shape[1] == 23,
                 "masked_msa_head table differs from AF2");
    n = mf_experimentally_resolved_head_param_specs(&d, s);
    MF_TEST_TRUE(n == 2 && s[0].shape[0] == 32 && s[0].shape[1] == 37,
                 "experimentally_resolved_head table differs from AF2");
    n = mf_predicted_aligned_error_head_param_specs(&d, s);
    MF_TEST_TRUE(n == 2 && s[0].shape[0] == 16 && s[0].shape[1] == d.pae_num_bins,
                 "predicted_aligned_error_head table differs");
    printf("parameter tables: names, shapes and AF2 initialisers of the five heads; dims from the "
           "tiny preset\n");
}

/* ---- 7: reference vectors ------------------------------------------------------------------ */

static void test_vectors(mf_ctx *ctx)
{
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/testvectors", mf_test_shared_dir());
    mf_verify_report rep;
    memset(&rep, 0, sizeof rep);
    const size_t before = mf_arena_used(ctx->arena);
    ctx->policy = mf_policy_default();
    MF_TEST_OK(mf_verify_heads(ctx, dir, &rep));
    MF_TEST_TRUE(mf_arena_used(ctx->arena) == before, "verifier left arena allocations");
    MF_TEST_TRUE(rep.count == 23, "expected 23 compared datasets, got %d", rep.count);
    for (int i = 0; i < rep.count; i++) {
        const mf_compare_result *r = &rep.items[i].result;
        printf("  %-56s max|c-r|/max|r| = %.3e (tol %.0e) %s\n", rep.items[i].name, r->rel, r->tol,
               r->pass ? "ok" : "FAIL");
        MF_TEST_TRUE(r->pass, "%s: %.3e > %.0e%s", rep.items[i].name, r->rel, r->tol,
                     r->nan ? " (NaN)" : "");
    }
}

/* ---- argument errors ------------------------------------------------------------------------ */

static void expect_error(mf_status st, const char *what, const char *needle)
{
    const bool ok = st == MF_ERR_INVALID && strstr(mf_last_error(), needle);
    MF_TEST_TRUE(ok, "%s: expected MF_ERR_INVALID naming '%s', got %s: %s", what, needle,
                 mf_status_name(st), mf_last_error());
    if (ok) printf("rejected %s: %s\n", what, mf_last_error());
}

static void test_errors(mf_ctx *ctx)
{
    hcase c;
    case_init(&c, H_DGRAM, 777);
    float *xf = mirror(c.x, c.nx), *out = falloc(c.no), *pf[MAXP];
    for (int i = 0; i < c.np; i++) pf[i] = mirror(c.p[i], c.pn[i]);
    mf_tensor p[MAXP];
    make_params(&c, MF_F32, (void *const *)pf, p);
    mf_tensor x = mf_tensor_make(xf, MF_F32, MF_DEV_CPU, 3, c.xs);
    mf_tensor o = mf_tensor_make(out, MF_F32, MF_DEV_CPU, 3, c.os);
    /* a [5, 9, c_z] pair (fits in x's memory) */
    mf_tensor ns = mf_tensor_f32(xf, 3, 5, 9, c.xs[2]), ons = mf_tensor_f32(out, 3, 5, 9, c.os[2]);
    expect_error(head_forward(ctx, &c, &ons, false, NULL, &ns, p), "a non-square pair", "square");
    mf_tensor pw = p[0];
    p[0].shape[0] += 1;
    expect_error(head_forward(ctx, &c, &o, false, NULL, &x, p),
                 "half_logits weights of the wrong "
                 "shape",
                 "half_logits//weights");
    p[0] = pw;
    mf_tensor x64 = x;
    x64.dtype = MF_F64;
    expect_error(head_forward(ctx, &c, &o, false, NULL, &x64, p), "f64 pair with f32 logits",
                 "logits");
    free(xf), free(out);
    for (int i = 0; i < c.np; i++) free(pf[i]);
    case_free(&c);
}

int main(void)
{
    mf_ctx ctx;
    mf_arena arena;
    if (mf_test_ctx_cpu(&ctx, &arena, (size_t)32 << 20) != MF_OK) {
        fprintf(stderr, "context: %s\n", mf_last_error());
        return 1;
    }
    for (int k = 0; k < H_COUNT; k++) test_head(&ctx, (head_kind)k, 300 + 31 * (uint64_t)k);
    test_confidence();
    test_tables();
    test_errors(&ctx);
    test_vectors(&ctx);
    mf_test_ctx_free(&ctx, &arena);
    return mf_test_finish("test_heads");
}
