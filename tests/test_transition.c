/* MSA / pair transition (Alg. 9, Alg. 15; evoformer/transition.h):
 *  1. the module run in f64: its forward against a double reference composed from core/ref ops
 *     (1e-12), its backward (input and every parameter gradient) against central finite
 *     differences of its forward, with a random upstream gradient, at odd sizes (x [3, 5, 6],
 *     factor 3, and a 2-D x [7, 5], factor 2); the f32 module (output and every gradient)
 *     against the f64 module;
 *  2. chunk sizes {1, 3, 64} against unchunked: outputs and dx bitwise, weight gradients (sums
 *     over chunks) within f32 tolerance; inference (saved NULL) bitwise equal to training;
 *  3. accumulate: the forward adds onto a nonzero output, the backward onto nonzero gradients;
 *  4. arena: inference leaves it at its mark, training keeps exactly the saved tensor, backward
 *     leaves nothing;
 *  5. bf16 storage of the saved activation and bf16 compute against f32;
 *  6. the msa_transition and pair_transition reference vectors through their verifiers. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/ref/ref.h"
#include "evoformer/transition.h"
#include "evoformer/verify_evoformer_pair.h"
#include "tests/support/mf_test.h"

#define NP 6

typedef struct {
    int ndim;
    int64_t shape[3];
    int64_t R, C, H, nx; /* rows, channels, hidden, elements of x */
    mf_transition_dims d;
    mf_param_spec specs[NP];
    int64_t pn[NP];
    double *x, *p[NP], *out; /* double data, every value representable in f32 */
    double *ln, *hid;        /* reference scratch */
} tcase;

typedef struct {
    float *out, *dx, *dp[NP];
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

static void case_init(tcase *c, int ndim, const int64_t *shape, int64_t factor, uint64_t seed)
{
    memset(c, 0, sizeof *c);
    c->ndim = ndim;
    c->nx = 1;
    for (int k = 0; k < ndim; k++) c->shape[k] = shape[k], c->nx *= shape[k];
    c->C = shape[ndim - 1];
    c->R = c->nx / c->C;
    c->H = c->C * factor;
    c->d = (mf_transition_dims){.c = c->C, .factor = factor};
    MF_TEST_TRUE(mf_transition_param_specs(&c->d, c->specs) == NP, "transition: %d parameters", NP);
    c->x = dalloc(c->nx);
    mf_test_fill_normal_f64(c->x, c->nx, seed, 1.0);
    round_to_f32(c->x, c->nx);
    for (int i = 0; i < NP; i++) {
        c->pn[i] = 1;
        for (int k = 0; k < c->specs[i].ndim; k++) c->pn[i] *= c->specs[i].shape[k];
        c->p[i] = dalloc(c->pn[i]);
        /* Random parameters everywhere (AF2's zero inits would hide gradients); weights of
         * variance 1/fan_in keep activations O(1); scales around 1. */
        double sd = c->specs[i].ndim == 2 ? 1.0 / sqrt((double)c->specs[i].shape[0]) : 0.5;
        mf_test_fill_normal_f64(c->p[i], c->pn[i], seed + 10 + (uint64_t)i, sd);
        if (i == 0)
            for (int64_t k = 0; k < c->pn[i]; k++) c->p[i][k] += 1.0;
        round_to_f32(c->p[i], c->pn[i]);
    }
    c->out = dalloc(c->nx);
    c->ln = dalloc(c->R * c->C);
    c->hid = dalloc(c->R * c->H);
}

static void case_free(tcase *c)
{
    free(c->x);
    for (int i = 0; i < NP; i++) free(c->p[i]);
    free(c->out);
    free(c->ln);
    free(c->hid);
}

/* The double reference: Alg. 9 / 15 as written, from the plain reference ops. */
static void ref_forward(void *ud)
{
    tcase *c = ud;
    mf_ref_layer_norm_forward_f64(c->ln, NULL, NULL, c->x, c->p[0], c->p[1], c->R, c->C,
                                  MF_TRANSITION_LN_EPS);
    mf_ref_linear_forward_f64(c->hid, c->ln, c->p[2], c->p[3], c->R, c->C, c->H, false);
    mf_ref_activation_forward_f64(MF_ACT_RELU, c->hid, c->hid, c->R * c->H);
    mf_ref_linear_forward_f64(c->out, c->hid, c->p[4], c->p[5], c->R, c->H, c->C, false);
}

static mf_transition_params make_params(const tcase *c, float *const *data)
{
    mf_transition_params p;
    mf_tensor *t = MF_PARAMS_AS_ARRAY(&p);
    for (int i = 0; i < NP; i++)
        t[i] = mf_tensor_make(data[i], MF_F32, MF_DEV_CPU, c->specs[i].ndim, c->specs[i].shape);
    return p;
}

static size_t aligned(size_t n)
{
    return (n + MF_ARENA_ALIGN - 1) / MF_ARENA_ALIGN * MF_ARENA_ALIGN;
}

/* Training forward + backward of the f32 module under ctx's policy. r's buffers start as copies
 * of init's (or zeros) and are accumulated into. */
static void run_f32(mf_ctx *ctx, const tcase *c, const float *xf, float *const *pf,
                    const float *gout, tres *r, const tres *init, bool accumulate, const char *what)
{
    r->out = falloc(c->nx);
    r->dx = falloc(c->nx);
    if (init) {
        memcpy(r->out, init->out, sizeof(float) * (size_t)c->nx);
        memcpy(r->dx, init->dx, sizeof(float) * (size_t)c->nx);
    }
    for (int i = 0; i < NP; i++) {
        r->dp[i] = falloc(c->pn[i]);
        if (init) memcpy(r->dp[i], init->dp[i], sizeof(float) * (size_t)c->pn[i]);
    }
    mf_tensor x = mf_tensor_make((void *)xf, MF_F32, MF_DEV_CPU, c->ndim, c->shape);
    mf_tensor out = mf_tensor_make(r->out, MF_F32, MF_DEV_CPU, c->ndim, c->shape);
    mf_tensor dx = mf_tensor_make(r->dx, MF_F32, MF_DEV_CPU, c->ndim, c->shape);
    mf_tensor g = mf_tensor_make((void *)gout, MF_F32, MF_DEV_CPU, c->ndim, c->shape);
    mf_transition_params p = make_params(c, pf), dp = make_params(c, r->dp);
    mf_transition_saved saved;
    mf_arena_mark_t mark = mf_arena_mark(ctx->arena);
    size_t used = mf_arena_used(ctx->arena);
    MF_TEST_OK(mf_transition_forward(ctx, &out, accumulate, &saved, &x, &p, &c->d));
    size_t kept = mf_arena_used(ctx->arena) - used;
    MF_TEST_TRUE(kept == aligned(mf_tensor_bytes(&saved.hidden)),
                 "%s: training forward kept %zu arena bytes, the saved tensor takes %zu", what,
                 kept, aligned(mf_tensor_bytes(&saved.hidden)));
    MF_TEST_OK(mf_transition_backward(ctx, &dx, &dp, &g, &saved, &x, &p, &c->d));
    MF_TEST_TRUE(mf_arena_used(ctx->arena) == used + kept, "%s: backward left %zu arena bytes",
                 what, mf_arena_used(ctx->arena) - used - kept);
    mf_arena_release(ctx->arena, mark);
}

static void run_inference(mf_ctx *ctx, const tcase *c, const float *xf, float *const *pf,
                          float *out_data, const char *what)
{
    mf_tensor x = mf_tensor_make((void *)xf, MF_F32, MF_DEV_CPU, c->ndim, c->shape);
    mf_tensor out = mf_tensor_make(out_data, MF_F32, MF_DEV_CPU, c->ndim, c->shape);
    mf_transition_params p = make_params(c, pf);
    size_t used = mf_arena_used(ctx->arena);
    MF_TEST_OK(mf_transition_forward(ctx, &out, false, NULL, &x, &p, &c->d));
    MF_TEST_TRUE(mf_arena_used(ctx->arena) == used, "%s: inference left %zu arena bytes", what,
                 mf_arena_used(ctx->arena) - used);
}

static void free_res(tres *r)
{
    free(r->out);
    free(r->dx);
    for (int i = 0; i < NP; i++) free(r->dp[i]);
}

/* ---- the module in f64 (every op runs its double reference) ---------------------------------- */

/* Double rounding (~1e-16) times the condition of short sums: 1e-12 leaves orders of magnitude of
 * headroom; elements near zero get atol = 1e-12 * max|ref|. */
#define TOL_F64 1e-12

static mf_transition_params make_params_f64(const tcase *c, double *const *data)
{
    mf_transition_params p;
    mf_tensor *t = MF_PARAMS_AS_ARRAY(&p);
    for (int i = 0; i < NP; i++)
        t[i] = mf_tensor_make(data[i], MF_F64, MF_DEV_CPU, c->specs[i].ndim, c->specs[i].shape);
    return p;
}

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
    mf_tensor x = mf_tensor_make(c->x, MF_F64, MF_DEV_CPU, c->ndim, c->shape);
    mf_tensor out = mf_tensor_make(u->out, MF_F64, MF_DEV_CPU, c->ndim, c->shape);
    mf_transition_params p = make_params_f64(c, c->p);
    mf_status st = mf_transition_forward(u->ctx, &out, false, NULL, &x, &p, &c->d);
    if (st != MF_OK) mf_test_fail("transition f64 forward: %s", mf_last_error());
}

/* Training forward and backward in f64: out, and dx, dp accumulated from zero. */
static void module_f64_train(mf_ctx *ctx, tcase *c, double *out, double *dx, double **dp,
                             const double *gout)
{
    mf_tensor x = mf_tensor_make(c->x, MF_F64, MF_DEV_CPU, c->ndim, c->shape);
    mf_tensor to = mf_tensor_make(out, MF_F64, MF_DEV_CPU, c->ndim, c->shape);
    mf_tensor tdx = mf_tensor_make(dx, MF_F64, MF_DEV_CPU, c->ndim, c->shape);
    mf_tensor g = mf_tensor_make((void *)gout, MF_F64, MF_DEV_CPU, c->ndim, c->shape);
    mf_transition_params p = make_params_f64(c, c->p), tdp = make_params_f64(c, dp);
    mf_transition_saved saved;
    mf_arena_mark_t mark = mf_arena_mark(ctx->arena);
    MF_TEST_OK(mf_transition_forward(ctx, &to, false, &saved, &x, &p, &c->d));
    MF_TEST_TRUE(saved.hidden.dtype == MF_F64, "transition f64: saved hidden is %s",
                 mf_dtype_name(saved.hidden.dtype));
    MF_TEST_OK(mf_transition_backward(ctx, &tdx, &tdp, &g, &saved, &x, &p, &c->d));
    mf_arena_release(ctx->arena, mark);
}

static void check_f64(const char *name, const double *a, const double *ref, int64_t n)
{
    double mx = 0;
    for (int64_t i = 0; i < n; i++) mx = fmax(mx, fabs(ref[i]));
    mf_check_close_f64(name, a, ref, n, TOL_F64 * mx, TOL_F64);
}

static void check_case(mf_ctx *ctx, int ndim, const int64_t *shape, int64_t factor, uint64_t seed)
{
    tcase c;
    case_init(&c, ndim, shape, factor, seed);
    char dims[96];
    if (ndim == 3)
        snprintf(dims, sizeof dims, "x [%lld, %lld, %lld] factor %lld", (long long)shape[0],
                 (long long)shape[1], (long long)shape[2], (long long)factor);
    else
        snprintf(dims, sizeof dims, "x [%lld, %lld] factor %lld", (long long)shape[0],
                 (long long)shape[1], (long long)factor);
    float *xf = to_f32(c.x, c.nx), *pf[NP];
    for (int i = 0; i < NP; i++) pf[i] = to_f32(c.p[i], c.pn[i]);
    double *goutd = dalloc(c.nx);
    mf_test_fill_normal_f64(goutd, c.nx, seed + 99, 1.0);
    round_to_f32(goutd, c.nx);
    float *gout = to_f32(goutd, c.nx);

    /* 1. The module in f64 against the reference and against its own finite differences (storage
     * bf16 asked for, which f64 runs ignore); the f32 module against the f64 module. */
    char what[160];
    double *out64 = dalloc(c.nx), *dx64 = dalloc(c.nx), *dp64[NP];
    for (int i = 0; i < NP; i++) dp64[i] = dalloc(c.pn[i]);
    ctx->policy = mf_policy_default();
    ctx->policy.storage = MF_BF16;
    ctx->policy.chunk_size = 2;
    module_f64_train(ctx, &c, out64, dx64, dp64, goutd);
    ref_forward(&c);
    snprintf(what, sizeof what, "transition %s: f64 module output vs f64 reference", dims);
    check_f64(what, out64, c.out, c.nx);
    f64_run u = {ctx, &c, dalloc(c.nx)};
    mf_gc_array in[1 + NP];
    const double *grads[1 + NP];
    in[0] = (mf_gc_array){"x", c.x, c.nx};
    grads[0] = dx64;
    for (int i = 0; i < NP; i++) {
        in[1 + i] = (mf_gc_array){c.specs[i].name, c.p[i], c.pn[i]};
        grads[1 + i] = dp64[i];
    }
    mf_gc_array outs[1] = {{"update", u.out, c.nx}};
    const double *gouts[1] = {goutd};
    snprintf(what, sizeof what, "transition %s: f64 module backward", dims);
    mf_gradcheck(what, module_f64_forward, &u, in, grads, 1 + NP, outs, gouts, 1, MF_TOL_FD_STEP,
                 MF_TOL_FD_ATOL, MF_TOL_FD_RTOL, 0);
    free(u.out);
    ctx->policy = mf_policy_default();
    tres base;
    run_f32(ctx, &c, xf, pf, gout, &base, NULL, false, dims);
    snprintf(what, sizeof what, "transition %s: f32 output vs f64 module", dims);
    mf_check_close_f32_f64(what, base.out, out64, c.nx, MF_TOL_F32_ATOL, MF_TOL_F32_RTOL);
    snprintf(what, sizeof what, "transition %s: f32 dx vs f64 module", dims);
    mf_check_close_f32_f64(what, base.dx, dx64, c.nx, MF_TOL_F32_ATOL, MF_TOL_F32_RTOL);
    for (int i = 0; i < NP; i++) {
        snprintf(what, sizeof what, "transition %s: f32 d %s vs f64 module", dims, c.specs[i].name);
        mf_check_close_f32_f64(what, base.dp[i], dp64[i], c.pn[i], MF_TOL_F32_ATOL,
                               MF_TOL_F32_RTOL);
    }
    free(out64);
    free(dx64);
    for (int i = 0; i < NP; i++) free(dp64[i]);

    /* 2. chunking, and inference against training. */
    const int64_t chunks[3] = {1, 3, 64};
    for (int k = 0; k < 3; k++) {
        ctx->policy = mf_policy_default();
        ctx->policy.chunk_size = chunks[k];
        tres r;
        snprintf(what, sizeof what, "transition %s chunk %lld", dims, (long long)chunks[k]);
        run_f32(ctx, &c, xf, pf, gout, &r, NULL, false, what);
        char name[200];
        snprintf(name, sizeof name, "%s: output vs unchunked", what);
        mf_check_bitwise_f32(name, r.out, base.out, c.nx);
        snprintf(name, sizeof name, "%s: dx vs unchunked", what);
        mf_check_bitwise_f32(name, r.dx, base.dx, c.nx);
        for (int i = 0; i < NP; i++) {
            snprintf(name, sizeof name, "%s: d %s vs unchunked (sum over chunks)", what,
                     c.specs[i].name);
            mf_check_close_f32(name, r.dp[i], base.dp[i], c.pn[i], MF_TOL_F32_ATOL,
                               MF_TOL_F32_RTOL);
        }
        float *inf = falloc(c.nx);
        run_inference(ctx, &c, xf, pf, inf, what);
        snprintf(name, sizeof name, "%s: inference output vs training", what);
        mf_check_bitwise_f32(name, inf, base.out, c.nx);
        free(inf);
        free_res(&r);
    }

    /* 3. accumulation onto nonzero buffers. */
    {
        ctx->policy = mf_policy_default();
        ctx->policy.chunk_size = 3;
        tres init, r;
        init.out = falloc(c.nx), init.dx = falloc(c.nx);
        mf_test_fill_normal_f32(init.out, c.nx, seed + 200, 1.0f);
        mf_test_fill_normal_f32(init.dx, c.nx, seed + 201, 1.0f);
        for (int i = 0; i < NP; i++) {
            init.dp[i] = falloc(c.pn[i]);
            mf_test_fill_normal_f32(init.dp[i], c.pn[i], seed + 210 + (uint64_t)i, 1.0f);
        }
        snprintf(what, sizeof what, "transition %s accumulate", dims);
        run_f32(ctx, &c, xf, pf, gout, &r, &init, true, what);
        float *want = falloc(c.nx);
        char name[200];
        for (int64_t k = 0; k < c.nx; k++) want[k] = init.out[k] + base.out[k];
        snprintf(name, sizeof name, "%s: out = init + update", what);
        mf_check_close_f32(name, r.out, want, c.nx, MF_TOL_F32_ATOL, MF_TOL_F32_RTOL);
        for (int64_t k = 0; k < c.nx; k++) want[k] = init.dx[k] + base.dx[k];
        snprintf(name, sizeof name, "%s: dx = init + dx", what);
        mf_check_close_f32(name, r.dx, want, c.nx, MF_TOL_F32_ATOL, MF_TOL_F32_RTOL);
        free(want);
        for (int i = 0; i < NP; i++) {
            float *w = falloc(c.pn[i]);
            for (int64_t k = 0; k < c.pn[i]; k++) w[k] = init.dp[i][k] + base.dp[i][k];
            snprintf(name, sizeof name, "%s: d %s = init + grad", what, c.specs[i].name);
            mf_check_close_f32(name, r.dp[i], w, c.pn[i], MF_TOL_F32_ATOL, MF_TOL_F32_RTOL);
            free(w);
        }
        free_res(&init);
        free_res(&r);
    }

    /* 5. bf16 storage (forward unchanged, gradients from the rounded hidden activation) and
     * bf16 compute. */
    for (int mode = 0; mode < 2; mode++) {
        ctx->policy = mf_policy_default();
        ctx->policy.chunk_size = 3;
        if (mode == 0)
            ctx->policy.storage = MF_BF16;
        else
            ctx->policy.compute = MF_BF16;
        tres r;
        snprintf(what, sizeof what, "transition %s %s", dims,
                 mode == 0 ? "bf16 storage" : "bf16 compute");
        run_f32(ctx, &c, xf, pf, gout, &r, NULL, false, what);
        char name[200];
        snprintf(name, sizeof name, "%s: output vs f32", what);
        if (mode == 0)
            mf_check_bitwise_f32(name, r.out, base.out, c.nx);
        else
            mf_check_close_f32(name, r.out, base.out, c.nx, MF_TOL_BF16_ATOL, MF_TOL_BF16_RTOL);
        snprintf(name, sizeof name, "%s: dx vs f32", what);
        mf_check_close_f32(name, r.dx, base.dx, c.nx, MF_TOL_BF16_ATOL, MF_TOL_BF16_RTOL);
        for (int i = 0; i < NP; i++) {
            snprintf(name, sizeof name, "%s: d %s vs f32", what, c.specs[i].name);
            mf_check_close_f32(name, r.dp[i], base.dp[i], c.pn[i], MF_TOL_BF16_ATOL,
                               MF_TOL_BF16_RTOL);
        }
        free_res(&r);
    }
    ctx->policy = mf_policy_default();

    free_res(&base);
    free(xf);
    for (int i = 0; i < NP; i++) free(pf[i]);
    free(goutd);
    free(gout);
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
        return mf_test_finish("test_transition");
    }
    check_case(&ctx, 3, (const int64_t[]){3, 5, 6}, 3, 100);
    check_case(&ctx, 2, (const int64_t[]){7, 5}, 2, 300);
    run_file(&ctx, "msa_transition", mf_verify_msa_transition);
    run_file(&ctx, "pair_transition", mf_verify_pair_transition);
    mf_test_ctx_free(&ctx, &arena);
    return mf_test_finish("test_transition");
}
