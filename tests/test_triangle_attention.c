/* Triangle attention around the starting node (Alg. 13) and the ending node (Alg. 14)
 * (evoformer/triangle_attention.h):
 *  1. the module run in f64 (the same module code on the CPU's double ops) against central
 *     finite differences of itself: z and every parameter gradient, random upstream gradient,
 *     odd sizes (N 7, c_z 6, 2 heads of 3), a pair mask with zeros (the diagonal kept, so no row
 *     or column is left without a key: a fully masked row's -1e9 logits keep only ~1e-7 absolute
 *     precision in double, below a finite difference);
 *  2. the f64 module's forward against a double reference written independently from core/ref
 *     (layer norm, pair bias loops, the reference gated attention; the ending node as AF2's
 *     per_column: swap the residue axes of z and the mask, attend, swap back);
 *  3. f32 against f64 (forward adding onto a nonzero output, backward onto nonzero gradients);
 *  4. chunk sizes {0, 1, 3, 64} at N 13, c_z 16: inference updates bitwise equal to unchunked,
 *     inference bitwise equal to training at each chunk size, training gradients within f32
 *     tolerance; the inference arena back at its mark, the backward leaving nothing, a smaller
 *     inference peak at chunk 1; in-place inference (out = z, accumulate) bitwise equal to
 *     z + update;
 *  5. bf16 storage and bf16 compute against f32;
 *  6. the reference vectors through the verifiers (rtol 1e-5 of the file, outputs and every
 *     gradient). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/ref/ref.h"
#include "evoformer/triangle_attention.h"
#include "evoformer/verify_evoformer_attention.h"
#include "tests/support/mf_test.h"

/* The f64 module against an independent double reference: the same arithmetic up to summation
 * order (~1e-14 relative). */
#define REF64_ATOL 1e-11
#define REF64_RTOL 1e-9

enum { START = 0, END = 1 };
static const char *const g_kind_name[2] = {"triangle_attention_starting_node",
                                           "triangle_attention_ending_node"};
#define MAXP 16

typedef struct {
    int kind;
    int64_t N, C, H, D, nz;
    double *z, *mask, *gout, *out;
    int np;
    mf_param_spec specs[MAXP];
    int64_t pn[MAXP];
    double *w[MAXP];
    mf_ctx *ctx; /* for the finite-difference forward */
} tcase;

typedef struct {
    double *out, *dz, *dw[MAXP];
} tres;

static double *dalloc(int64_t n)
{
    return calloc((size_t)(n > 0 ? n : 1), sizeof(double));
}

static void round_f32(double *x, int64_t n)
{
    for (int64_t i = 0; i < n; i++) x[i] = (double)(float)x[i];
}

static mf_triangle_attention_dims dims_of(const tcase *c)
{
    return (mf_triangle_attention_dims){c->C, c->H, c->D};
}

/* Inputs of glorot size so logits and gates stay O(1); layer-norm scales and gating biases near
 * 1 but random, so every gradient is generic. Every value is an f32 value. */
static void case_init(tcase *c, int kind, int64_t N, int64_t C, int64_t H, int64_t D, uint64_t seed)
{
    memset(c, 0, sizeof *c);
    c->kind = kind, c->N = N, c->C = C, c->H = H, c->D = D, c->nz = N * N * C;
    c->z = dalloc(c->nz);
    mf_test_fill_normal_f64(c->z, c->nz, seed + 1, 1.0);
    round_f32(c->z, c->nz);
    c->mask = dalloc(N * N);
    mf_test_fill_mask_f64(c->mask, N, N, seed + 3, 0.6);
    for (int64_t i = 0; i < N; i++) c->mask[i * N + i] = 1.0;
    mf_triangle_attention_dims d = dims_of(c);
    c->np = mf_triangle_attention_param_specs(&d, c->specs);
    for (int i = 0; i < c->np; i++) {
        const mf_param_spec *s = &c->specs[i];
        c->pn[i] = 1;
        for (int k = 0; k < s->ndim; k++) c->pn[i] *= s->shape[k];
        c->w[i] = dalloc(c->pn[i]);
        double sd = s->ndim >= 2 ? 1.0 / sqrt((double)s->shape[0]) : 0.3;
        if (!strcmp(s->name, "attention//output_w")) sd = 1.0 / sqrt((double)(H * D));
        mf_test_fill_normal_f64(c->w[i], c->pn[i], seed + 10 + (uint64_t)i, sd);
        if (s->init == MF_INIT_ONES)
            for (int64_t k = 0; k < c->pn[i]; k++) c->w[i][k] += 1.0;
        round_f32(c->w[i], c->pn[i]);
    }
    c->gout = dalloc(c->nz);
    mf_test_fill_normal_f64(c->gout, c->nz, seed + 5, 1.0);
    round_f32(c->gout, c->nz);
    c->out = dalloc(c->nz);
}

static void case_free(tcase *c)
{
    free(c->z);
    free(c->mask);
    for (int i = 0; i < c->np; i++) free(c->w[i]);
    free(c->gout);
    free(c->out);
}

static void res_alloc(const tcase *c, tres *r)
{
    r->out = dalloc(c->nz);
    r->dz = dalloc(c->nz);
    for (int i = 0; i < c->np; i++) r->dw[i] = dalloc(c->pn[i]);
}

static void res_free(const tcase *c, tres *r)
{
    free(r->out);
    free(r->dz);
    for (int i = 0; i < c->np; i++) free(r->dw[i]);
}

/* Host buffer of dtype dt holding x (zeros when x is NULL). */
static void *to_dt(const double *x, int64_t n, mf_dtype dt)
{
    void *y = calloc((size_t)(n > 0 ? n : 1), dt == MF_F64 ? sizeof(double) : sizeof(float));
    if (!x) return y;
    if (dt == MF_F64)
        memcpy(y, x, sizeof(double) * (size_t)n);
    else
        mf_f64_to_f32(y, x, n);
    return y;
}

static void from_dt(double *y, const void *x, int64_t n, mf_dtype dt)
{
    if (dt == MF_F64)
        memcpy(y, x, sizeof(double) * (size_t)n);
    else
        mf_f32_to_f64(y, x, n);
}

typedef union {
    mf_triangle_attention_params p;
    mf_tensor t[MAXP];
} any_params;

typedef struct {
    bool train;       /* saved activations and backward */
    bool inplace;     /* inference into z itself (accumulate) */
    const tres *init; /* accumulate onto these (NULL: zeros, overwrite) */
    size_t peak;      /* out: arena high-water above the start */
} run_opts;

static void run_module(mf_ctx *ctx, const tcase *c, mf_dtype dt, run_opts *o, tres *r)
{
    const int64_t N = c->N, C = c->C, nz = c->nz;
    const bool end = c->kind == END;
    void *z = to_dt(c->z, nz, dt), *mask = to_dt(c->mask, N * N, dt), *g = to_dt(c->gout, nz, dt);
    void *out = o->inplace ? z : to_dt(o->init ? o->init->out : NULL, nz, dt);
    void *dz = to_dt(o->init ? o->init->dz : NULL, nz, dt);
    any_params p, dp;
    void *pw[MAXP], *dpw[MAXP];
    for (int i = 0; i < c->np; i++) {
        const mf_param_spec *s = &c->specs[i];
        pw[i] = to_dt(c->w[i], c->pn[i], dt);
        dpw[i] = to_dt(o->init ? o->init->dw[i] : NULL, c->pn[i], dt);
        p.t[i] = mf_tensor_make(pw[i], dt, MF_DEV_CPU, s->ndim, s->shape);
        dp.t[i] = mf_tensor_make(dpw[i], dt, MF_DEV_CPU, s->ndim, s->shape);
    }
    mf_tensor tz = mf_tensor_4(z, dt, MF_DEV_CPU, 3, N, N, C, 1),
              tmask = mf_tensor_4(mask, dt, MF_DEV_CPU, 2, N, N, 1, 1),
              tout = mf_tensor_4(out, dt, MF_DEV_CPU, 3, N, N, C, 1),
              tg = mf_tensor_4(g, dt, MF_DEV_CPU, 3, N, N, C, 1),
              tdz = mf_tensor_4(dz, dt, MF_DEV_CPU, 3, N, N, C, 1);
    const bool acc = o->inplace || o->init;
    const mf_triangle_attention_dims d = dims_of(c);
    mf_arena_mark_t mark = mf_arena_mark(ctx->arena);
    size_t used = mf_arena_used(ctx->arena);
    mf_arena_reset_peak(ctx->arena);
    if (o->train) {
        mf_triangle_attention_saved saved;
        if (end)
            MF_TEST_OK(mf_triangle_attention_ending_node_forward(ctx, &tout, acc, &saved, &tz,
                                                                 &tmask, &p.p, &d));
        else
            MF_TEST_OK(mf_triangle_attention_starting_node_forward(ctx, &tout, acc, &saved, &tz,
                                                                   &tmask, &p.p, &d));
        size_t after_fwd = mf_arena_used(ctx->arena);
        if (end)
            MF_TEST_OK(mf_triangle_attention_ending_node_backward(ctx, &tdz, &dp.p, &tg, &saved,
                                                                  &tz, &tmask, &p.p, &d));
        else
            MF_TEST_OK(mf_triangle_attention_starting_node_backward(ctx, &tdz, &dp.p, &tg, &saved,
                                                                    &tz, &tmask, &p.p, &d));
        MF_TEST_TRUE(mf_arena_used(ctx->arena) == after_fwd, "%s backward left %zu arena bytes",
                     g_kind_name[c->kind], mf_arena_used(ctx->arena) - after_fwd);
    } else {
        if (end)
            MF_TEST_OK(mf_triangle_attention_ending_node_forward(ctx, &tout, acc, NULL, &tz, &tmask,
                                                                 &p.p, &d));
        else
            MF_TEST_OK(mf_triangle_attention_starting_node_forward(ctx, &tout, acc, NULL, &tz,
                                                                   &tmask, &p.p, &d));
        MF_TEST_TRUE(mf_arena_used(ctx->arena) == used, "%s inference left %zu arena bytes",
                     g_kind_name[c->kind], mf_arena_used(ctx->arena) - used);
    }
    o->peak = mf_arena_high_water(ctx->arena) - used;
    mf_arena_release(ctx->arena, mark);
    from_dt(r->out, out, nz, dt);
    from_dt(r->dz, dz, nz, dt);
    for (int i = 0; i < c->np; i++) {
        from_dt(r->dw[i], dpw[i], c->pn[i], dt);
        free(pw[i]);
        free(dpw[i]);
    }
    if (!o->inplace) free(out);
    free(z);
    free(mask);
    free(g);
    free(dz);
}

/* ---- independent double reference ---------------------------------------------------------- */

static const double *W(const tcase *c, const char *name)
{
    for (int i = 0; i < c->np; i++)
        if (!strcmp(c->specs[i].name, name)) return c->w[i];
    mf_test_fail("parameter %s missing", name);
    return c->w[0];
}

/* [A, B, C] -> [B, A, C] */
static void ref_transpose(double *y, const double *x, int64_t A, int64_t B, int64_t C)
{
    for (int64_t a = 0; a < A; a++)
        for (int64_t b = 0; b < B; b++)
            for (int64_t k = 0; k < C; k++) y[(b * A + a) * C + k] = x[(a * B + b) * C + k];
}

static void ref_forward(const tcase *c, double *out)
{
    const int64_t N = c->N, C = c->C, H = c->H, D = c->D;
    double *z = dalloc(c->nz), *mask = dalloc(N * N), *x = dalloc(c->nz), *mean = dalloc(N * N),
           *rstd = dalloc(N * N), *bias = dalloc(H * N * N), *o = dalloc(c->nz);
    if (c->kind == END) {
        ref_transpose(z, c->z, N, N, C);
        ref_transpose(mask, c->mask, N, N, 1);
    } else {
        memcpy(z, c->z, sizeof(double) * (size_t)c->nz);
        memcpy(mask, c->mask, sizeof(double) * (size_t)(N * N));
    }
    mf_ref_layer_norm_forward_f64(x, mean, rstd, z, W(c, "query_norm//scale"),
                                  W(c, "query_norm//offset"), N * N, C, 1e-5);
    const double *fw = W(c, "/feat_2d_weights");
    for (int64_t h = 0; h < H; h++)
        for (int64_t jk = 0; jk < N * N; jk++) {
            double acc = 0;
            for (int64_t k = 0; k < C; k++) acc += x[jk * C + k] * fw[k * H + h];
            bias[h * N * N + jk] = acc;
        }
    mf_ref_gated_attention_forward_f64(
        o, x, x, bias, mask, W(c, "attention//query_w"), W(c, "attention//key_w"),
        W(c, "attention//value_w"), W(c, "attention//gating_w"), W(c, "attention//gating_b"),
        W(c, "attention//output_w"), W(c, "attention//output_b"), N, N, N, C, H, D, C);
    if (c->kind == END)
        ref_transpose(out, o, N, N, C);
    else
        memcpy(out, o, sizeof(double) * (size_t)c->nz);
    free(z);
    free(mask);
    free(x);
    free(mean);
    free(rstd);
    free(bias);
    free(o);
}

/* ---- checks -------------------------------------------------------------------------------- */

/* Every result of a against b, per element. */
static void compare_res(const tcase *c, const char *label, const tres *a, const tres *b,
                        double atol, double rtol, bool scale_atol)
{
    char name[256];
    for (int f = -2; f < c->np; f++) {
        const double *x = f == -2 ? a->out : f == -1 ? a->dz : a->dw[f];
        const double *y = f == -2 ? b->out : f == -1 ? b->dz : b->dw[f];
        const char *what = f == -2 ? "out" : f == -1 ? "dz" : c->specs[f].name;
        const int64_t n = f < 0 ? c->nz : c->pn[f];
        double at = atol;
        if (scale_atol) {
            /* sums over many rows cancel far below their terms: the bf16 error follows the
             * terms' size, so atol scales with max|ref| */
            double mx = 1;
            for (int64_t i = 0; i < n; i++) mx = fmax(mx, fabs(y[i]));
            at *= mx;
        }
        snprintf(name, sizeof name, "%s %s", label, what);
        mf_check_close_f64(name, x, y, n, at, rtol);
    }
}

static void bitwise_out(const char *label, const double *a, const double *b, int64_t n)
{
    float *fa = calloc((size_t)n, sizeof(float)), *fb = calloc((size_t)n, sizeof(float));
    mf_f64_to_f32(fa, a, n);
    mf_f64_to_f32(fb, b, n);
    mf_check_bitwise_f32(label, fa, fb, n);
    free(fa);
    free(fb);
}

/* ---- 1.-2. the f64 module ------------------------------------------------------------------ */

static void fd_forward(void *ud)
{
    tcase *c = ud;
    tres r = {0};
    res_alloc(c, &r);
    run_opts o = {.train = false};
    run_module(c->ctx, c, MF_F64, &o, &r);
    memcpy(c->out, r.out, sizeof(double) * (size_t)c->nz);
    res_free(c, &r);
}

static void test_fd(mf_ctx *ctx, int kind)
{
    tcase c;
    case_init(&c, kind, 7, 6, 2, 3, 500 + 10 * (uint64_t)kind);
    c.ctx = ctx;
    tres r = {0};
    res_alloc(&c, &r);
    run_opts o = {.train = true};
    run_module(ctx, &c, MF_F64, &o, &r);
    mf_gc_array in[1 + MAXP];
    const double *grads[1 + MAXP];
    int n = 0;
    in[n] = (mf_gc_array){"z", c.z, c.nz};
    grads[n++] = r.dz;
    for (int i = 0; i < c.np; i++) {
        in[n] = (mf_gc_array){c.specs[i].name, c.w[i], c.pn[i]};
        grads[n++] = r.dw[i];
    }
    mf_gc_array outs[1] = {{"update", c.out, c.nz}};
    const double *gouts[1] = {c.gout};
    char what[160];
    snprintf(what, sizeof what, "%s f64 module N7 c_z6 H2 D3", g_kind_name[kind]);
    mf_gradcheck(what, fd_forward, &c, in, grads, n, outs, gouts, 1, MF_TOL_FD_STEP, MF_TOL_FD_ATOL,
                 MF_TOL_FD_RTOL, 0);
    double *ref = dalloc(c.nz);
    ref_forward(&c, ref);
    snprintf(what, sizeof what, "%s f64 module out vs independent double reference",
             g_kind_name[kind]);
    mf_check_close_f64(what, r.out, ref, c.nz, REF64_ATOL, REF64_RTOL);
    free(ref);
    res_free(&c, &r);
    case_free(&c);
}

/* ---- 3.-5. the f32 module ------------------------------------------------------------------ */

static void test_f32(mf_ctx *ctx, int kind)
{
    const char *nm = g_kind_name[kind];
    char label[200];
    tcase c;
    case_init(&c, kind, 7, 6, 2, 3, 600 + 10 * (uint64_t)kind);
    tres init, r64, r32;
    res_alloc(&c, &init);
    mf_test_fill_normal_f64(init.out, c.nz, 690, 1.0);
    mf_test_fill_normal_f64(init.dz, c.nz, 691, 1.0);
    round_f32(init.out, c.nz);
    round_f32(init.dz, c.nz);
    for (int i = 0; i < c.np; i++) {
        mf_test_fill_normal_f64(init.dw[i], c.pn[i], 700 + (uint64_t)i, 1.0);
        round_f32(init.dw[i], c.pn[i]);
    }
    res_alloc(&c, &r64);
    res_alloc(&c, &r32);
    run_opts o = {.train = true, .init = &init};
    run_module(ctx, &c, MF_F64, &o, &r64);
    run_module(ctx, &c, MF_F32, &o, &r32);
    snprintf(label, sizeof label, "%s f32 vs f64 (accumulating):", nm);
    compare_res(&c, label, &r32, &r64, MF_TOL_F32_ATOL, MF_TOL_F32_RTOL, false);
    res_free(&c, &init);
    res_free(&c, &r64);
    res_free(&c, &r32);
    case_free(&c);

    case_init(&c, kind, 13, 16, 3, 5, 800 + 10 * (uint64_t)kind);
    static const int64_t chunks[4] = {0, 1, 3, 64};
    tres inf[4], tr[4];
    size_t peak[4];
    for (int ci = 0; ci < 4; ci++) {
        ctx->policy.chunk_size = chunks[ci];
        res_alloc(&c, &inf[ci]);
        res_alloc(&c, &tr[ci]);
        run_opts oi = {.train = false}, ot = {.train = true};
        run_module(ctx, &c, MF_F32, &oi, &inf[ci]);
        peak[ci] = oi.peak;
        run_module(ctx, &c, MF_F32, &ot, &tr[ci]);
        printf("  %s chunk=%lld: inference peak %zu bytes, training peak %zu bytes\n", nm,
               (long long)chunks[ci], oi.peak, ot.peak);
        snprintf(label, sizeof label, "%s chunk=%lld inference vs training out", nm,
                 (long long)chunks[ci]);
        bitwise_out(label, inf[ci].out, tr[ci].out, c.nz);
        if (ci == 0) continue;
        snprintf(label, sizeof label, "%s chunk=%lld vs unchunked inference out", nm,
                 (long long)chunks[ci]);
        bitwise_out(label, inf[ci].out, inf[0].out, c.nz);
        snprintf(label, sizeof label, "%s chunk=%lld vs unchunked training:", nm,
                 (long long)chunks[ci]);
        compare_res(&c, label, &tr[ci], &tr[0], MF_TOL_F32_ATOL, MF_TOL_F32_RTOL, false);
    }
    MF_TEST_TRUE(peak[1] < peak[0], "%s: chunk=1 inference peak %zu not below unchunked %zu", nm,
                 peak[1], peak[0]);

    ctx->policy.chunk_size = 3;
    {
        tres ip, ref, init_z;
        res_alloc(&c, &ip);
        res_alloc(&c, &ref);
        res_alloc(&c, &init_z);
        memcpy(init_z.out, c.z, sizeof(double) * (size_t)c.nz);
        run_opts oi = {.train = false, .inplace = true}, oa = {.train = false, .init = &init_z};
        run_module(ctx, &c, MF_F32, &oi, &ip);
        run_module(ctx, &c, MF_F32, &oa, &ref);
        snprintf(label, sizeof label, "%s chunk=3 in place (out = z) vs z + update", nm);
        bitwise_out(label, ip.out, ref.out, c.nz);
        res_free(&c, &ip);
        res_free(&c, &ref);
        res_free(&c, &init_z);
    }
    for (int mode = 0; mode < 2; mode++) {
        tres rb;
        res_alloc(&c, &rb);
        if (mode == 0)
            ctx->policy.compute = MF_BF16;
        else
            ctx->policy.storage = MF_BF16;
        run_opts ot = {.train = true};
        run_module(ctx, &c, MF_F32, &ot, &rb);
        ctx->policy.compute = MF_F32;
        ctx->policy.storage = MF_F32;
        snprintf(label, sizeof label, "%s %s chunk=3 vs f32:", nm,
                 mode == 0 ? "bf16 compute" : "bf16 storage");
        compare_res(&c, label, &rb, &tr[2], MF_TOL_BF16_ATOL, MF_TOL_BF16_RTOL, true);
        res_free(&c, &rb);
    }
    ctx->policy.chunk_size = 0;
    for (int ci = 0; ci < 4; ci++) {
        res_free(&c, &inf[ci]);
        res_free(&c, &tr[ci]);
    }
    case_free(&c);
}

/* ---- 6. reference vectors ------------------------------------------------------------------ */

static void test_vectors(mf_ctx *ctx, const char *module, mf_module_verifier run)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/testvectors/modules/%s.h5", mf_test_shared_dir(), module);
    mf_module_vectors v;
    if (mf_module_vectors_load(path, &v) != MF_OK) {
        mf_test_fail("cannot load %s: %s", path, mf_last_error());
        return;
    }
    mf_verify_report rep = {0};
    MF_TEST_OK(run(ctx, &v, &rep));
    MF_TEST_TRUE(rep.count > 0, "%s: nothing compared", module);
    for (int i = 0; i < rep.count; i++) {
        const mf_compare_result *r = &rep.items[i].result;
        printf("  %s %-36s %s=%.3e  tol=%.0e  %s\n", module, rep.items[i].name,
               r->absolute ? "max|d|/grad_scale" : "max|d|/max|ref|", r->rel, r->tol,
               r->pass ? "ok" : "FAIL");
        MF_TEST_TRUE(r->pass, "%s %s: %.3e > %.0e%s", module, rep.items[i].name, r->rel, r->tol,
                     r->nan ? " (NaN)" : "");
    }
    mf_module_vectors_free(&v);
}

int main(void)
{
    mf_ctx ctx;
    mf_arena arena;
    MF_TEST_OK(mf_test_ctx_cpu(&ctx, &arena, (size_t)64 << 20));
    for (int kind = 0; kind < 2; kind++) test_fd(&ctx, kind);
    for (int kind = 0; kind < 2; kind++) test_f32(&ctx, kind);
    test_vectors(&ctx, "triangle_attention_starting_node",
                 mf_verify_triangle_attention_starting_node);
    test_vectors(&ctx, "triangle_attention_ending_node", mf_verify_triangle_attention_ending_node);
    mf_test_ctx_free(&ctx, &arena);
    return mf_test_finish("test_triangle_attention");
}
