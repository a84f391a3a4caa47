/* Template pointwise attention (Alg. 17; evoformer/template_pointwise_attention.h). There is no
 * module reference file for it, so:
 *  1. the module run in f64 (the same module code on the CPU's double ops) against central
 *     finite differences of itself: z, t and every parameter gradient, random upstream gradient,
 *     odd sizes (N 5, T 3 with template 1 absent, c_z 6 and c_t 4 of different widths, 2 heads
 *     of 3);
 *  2. the f64 module's forward against a hand-written double reference of AF2's
 *     TemplateEmbedding attention (plain loops: q scaled by c^-1/2, where(mask, logits, -1e9),
 *     softmax over the templates, output projection, times (sum(template_mask) > 0));
 *  3. no template present: the update is exactly 0 (output_b included) and every gradient
 *     exactly 0, as AF2's "no gradients if no templates";
 *  4. f32 against f64 (forward adding onto a nonzero output, backward onto nonzero gradients);
 *  5. chunk sizes {0, 1, 3, 64} at N 11, T 4: inference updates bitwise equal to unchunked,
 *     inference bitwise equal to training, training gradients within f32 tolerance; the
 *     inference arena back at its mark, the backward leaving nothing, a smaller inference peak at
 *     chunk 1; in-place inference (out = z, accumulate) bitwise equal to z + update;
 *  6. bf16 storage and bf16 compute against f32. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "evoformer/template_pointwise_attention.h"
#include "tests/support/mf_test.h"

/* The f64 module against the hand-written double reference: the same arithmetic up to
 * summation order (~1e-14 relative). */
#define REF64_ATOL 1e-11
#define REF64_RTOL 1e-9
#define NPAR       5

typedef struct {
    int64_t N, T, Cz, Ct, H, D, nz, nt;
    double *z, *t, *tmask, *gout, *out;
    mf_param_spec specs[NPAR];
    int64_t pn[NPAR];
    double *w[NPAR];
    mf_ctx *ctx;
} pcase;

typedef struct {
    double *out, *dz, *dt, *dw[NPAR];
} pres;

static double *dalloc(int64_t n)
{
    return calloc((size_t)(n > 0 ? n : 1), sizeof(double));
}

static void round_f32(double *x, int64_t n)
{
    for (int64_t i = 0; i < n; i++) x[i] = (double)(float)x[i];
}

static mf_template_pointwise_attention_dims dims_of(const pcase *c)
{
    return (mf_template_pointwise_attention_dims){c->Cz, c->Ct, c->H, c->D};
}

static void case_init(pcase *c, int64_t N, int64_t T, int64_t Cz, int64_t Ct, int64_t H, int64_t D,
                      uint64_t seed)
{
    memset(c, 0, sizeof *c);
    c->N = N, c->T = T, c->Cz = Cz, c->Ct = Ct, c->H = H, c->D = D;
    c->nz = N * N * Cz, c->nt = T * N * N * Ct;
    c->z = dalloc(c->nz);
    c->t = dalloc(c->nt);
    mf_test_fill_normal_f64(c->z, c->nz, seed + 1, 1.0);
    mf_test_fill_normal_f64(c->t, c->nt, seed + 2, 1.0);
    round_f32(c->z, c->nz);
    round_f32(c->t, c->nt);
    c->tmask = dalloc(T);
    for (int64_t k = 0; k < T; k++) c->tmask[k] = k == 1 ? 0.0 : 1.0;
    mf_template_pointwise_attention_dims d = dims_of(c);
    MF_TEST_TRUE(mf_template_pointwise_attention_param_specs(&d, c->specs) == NPAR,
                 "template_pointwise_attention: %d parameters", NPAR);
    for (int i = 0; i < NPAR; i++) {
        const mf_param_spec *s = &c->specs[i];
        c->pn[i] = 1;
        for (int k = 0; k < s->ndim; k++) c->pn[i] *= s->shape[k];
        c->w[i] = dalloc(c->pn[i]);
        double sd = s->ndim == 3 ? 1.0 / sqrt((double)s->shape[0]) : 0.3;
        if (!strcmp(s->name, "attention//output_w")) sd = 1.0 / sqrt((double)(H * D));
        mf_test_fill_normal_f64(c->w[i], c->pn[i], seed + 10 + (uint64_t)i, sd);
        round_f32(c->w[i], c->pn[i]);
    }
    c->gout = dalloc(c->nz);
    mf_test_fill_normal_f64(c->gout, c->nz, seed + 5, 1.0);
    round_f32(c->gout, c->nz);
    c->out = dalloc(c->nz);
}

static void case_free(pcase *c)
{
    free(c->z);
    free(c->t);
    free(c->tmask);
    for (int i = 0; i < NPAR; i++) free(c->w[i]);
    free(c->gout);
    free(c->out);
}

static void res_alloc(const pcase *c, pres *r)
{
    r->out = dalloc(c->nz);
    r->dz = dalloc(c->nz);
    r->dt = dalloc(c->nt);
    for (int i = 0; i < NPAR; i++) r->dw[i] = dalloc(c->pn[i]);
}

static void res_free(pres *r)
{
    free(r->out);
    free(r->dz);
    free(r->dt);
    for (int i = 0; i < NPAR; i++) free(r->dw[i]);
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
    mf_template_pointwise_attention_params p;
    mf_tensor t[NPAR];
} any_params;

typedef struct {
    bool train, inplace;
    const pres *init;
    size_t peak;
} run_opts;

static void run_module(mf_ctx *ctx, const pcase *c, mf_dtype dt, run_opts *o, pres *r)
{
    const int64_t N = c->N, T = c->T;
    void *z = to_dt(c->z, c->nz, dt), *t = to_dt(c->t, c->nt, dt), *tm = to_dt(c->tmask, T, dt),
         *g = to_dt(c->gout, c->nz, dt);
    void *out = o->inplace ? z : to_dt(o->init ? o->init->out : NULL, c->nz, dt);
    void *dz = to_dt(o->init ? o->init->dz : NULL, c->nz, dt),
         *dtt = to_dt(o->init ? o->init->dt : NULL, c->nt, dt);
    any_params p, dp;
    void *pw[NPAR], *dpw[NPAR];
    for (int i = 0; i < NPAR; i++) {
        const mf_param_spec *s = &c->specs[i];
        pw[i] = to_dt(c->w[i], c->pn[i], dt);
        dpw[i] = to_dt(o->init ? o->init->dw[i] : NULL, c->pn[i], dt);
        p.t[i] = mf_tensor_make(pw[i], dt, MF_DEV_CPU, s->ndim, s->shape);
        dp.t[i] = mf_tensor_make(dpw[i], dt, MF_DEV_CPU, s->ndim, s->shape);
    }
    mf_tensor tz = mf_tensor_4(z, dt, MF_DEV_CPU, 3, N, N, c->Cz, 1),
              tt = mf_tensor_4(t, dt, MF_DEV_CPU, 4, T, N, N, c->Ct),
              ttm = mf_tensor_4(tm, dt, MF_DEV_CPU, 1, T, 1, 1, 1),
              tout = mf_tensor_4(out, dt, MF_DEV_CPU, 3, N, N, c->Cz, 1),
              tg = mf_tensor_4(g, dt, MF_DEV_CPU, 3, N, N, c->Cz, 1),
              tdz = mf_tensor_4(dz, dt, MF_DEV_CPU, 3, N, N, c->Cz, 1),
              tdt = mf_tensor_4(dtt, dt, MF_DEV_CPU, 4, T, N, N, c->Ct);
    const bool acc = o->inplace || o->init;
    const mf_template_pointwise_attention_dims d = dims_of(c);
    mf_arena_mark_t mark = mf_arena_mark(ctx->arena);
    size_t used = mf_arena_used(ctx->arena);
    mf_arena_reset_peak(ctx->arena);
    if (o->train) {
        mf_template_pointwise_attention_saved saved;
        MF_TEST_OK(mf_template_pointwise_attention_forward(ctx, &tout, acc, &saved, &tz, &tt, &ttm,
                                                           &p.p, &d));
        size_t after_fwd = mf_arena_used(ctx->arena);
        MF_TEST_OK(mf_template_pointwise_attention_backward(ctx, &tdz, &tdt, &dp.p, &tg, &saved,
                                                            &tz, &tt, &ttm, &p.p, &d));
        MF_TEST_TRUE(mf_arena_used(ctx->arena) == after_fwd,
                     "template_pointwise_attention backward left %zu arena bytes",
                     mf_arena_used(ctx->arena) - after_fwd);
    } else {
        MF_TEST_OK(mf_template_pointwise_attention_forward(ctx, &tout, acc, NULL, &tz, &tt, &ttm,
                                                           &p.p, &d));
        MF_TEST_TRUE(mf_arena_used(ctx->arena) == used,
                     "template_pointwise_attention inference left %zu arena bytes",
                     mf_arena_used(ctx->arena) - used);
    }
    o->peak = mf_arena_high_water(ctx->arena) - used;
    mf_arena_release(ctx->arena, mark);
    from_dt(r->out, out, c->nz, dt);
    from_dt(r->dz, dz, c->nz, dt);
    from_dt(r->dt, dtt, c->nt, dt);
    for (int i = 0; i < NPAR; i++) {
        from_dt(r->dw[i], dpw[i], c->pn[i], dt);
        free(pw[i]);
        free(dpw[i]);
    }
    if (!o->inplace) free(out);
    free(z);
    free(t);
    free(tm);
    free(g);
    free(dz);
    free(dtt);
}

/* AF2's TemplateEmbedding attention in plain double loops (weights in spec order: query_w,
 * key_w, value_w, output_w, output_b). */
static void ref_forward(const pcase *c, double *out)
{
    const int64_t N = c->N, T = c->T, Cz = c->Cz, Ct = c->Ct, H = c->H, D = c->D, P = N * N;
    const double *qw = c->w[0], *kw = c->w[1], *vw = c->w[2], *ow = c->w[3], *ob = c->w[4];
    double any = 0;
    for (int64_t k = 0; k < T; k++) any += c->tmask[k];
    const double factor = any > 0 ? 1.0 : 0.0;
    double *q = dalloc(H * D), *k = dalloc(T * H * D), *v = dalloc(T * H * D), *a = dalloc(T),
           *o = dalloc(H * D);
    for (int64_t p = 0; p < P; p++) {
        const double *zp = c->z + p * Cz;
        for (int64_t j = 0; j < H * D; j++) {
            double acc = 0;
            for (int64_t ch = 0; ch < Cz; ch++) acc += zp[ch] * qw[ch * H * D + j];
            q[j] = acc * pow((double)D, -0.5);
        }
        for (int64_t tt = 0; tt < T; tt++) {
            const double *tp = c->t + (tt * P + p) * Ct;
            for (int64_t j = 0; j < H * D; j++) {
                double ak = 0, av = 0;
                for (int64_t ch = 0; ch < Ct; ch++) {
                    ak += tp[ch] * kw[ch * H * D + j];
                    av += tp[ch] * vw[ch * H * D + j];
                }
                k[tt * H * D + j] = ak;
                v[tt * H * D + j] = av;
            }
        }
        for (int64_t h = 0; h < H; h++) {
            double mx = -INFINITY, sum = 0;
            for (int64_t tt = 0; tt < T; tt++) {
                double l = 0;
                for (int64_t dd = 0; dd < D; dd++) l += q[h * D + dd] * k[(tt * H + h) * D + dd];
                a[tt] = c->tmask[tt] > 0 ? l : -1e9;
                mx = fmax(mx, a[tt]);
            }
            for (int64_t tt = 0; tt < T; tt++) sum += (a[tt] = exp(a[tt] - mx));
            for (int64_t dd = 0; dd < D; dd++) {
                double acc = 0;
                for (int64_t tt = 0; tt < T; tt++) acc += a[tt] / sum * v[(tt * H + h) * D + dd];
                o[h * D + dd] = acc;
            }
        }
        for (int64_t oc = 0; oc < Cz; oc++) {
            double acc = ob[oc];
            for (int64_t j = 0; j < H * D; j++) acc += o[j] * ow[j * Cz + oc];
            out[p * Cz + oc] = acc * factor;
        }
    }
    free(q);
    free(k);
    free(v);
    free(a);
    free(o);
}

static void compare_res(const pcase *c, const char *label, const pres *a, const pres *b,
                        double atol, double rtol, bool scale_atol)
{
    char name[256];
    for (int f = -3; f < NPAR; f++) {
        const double *x = f == -3 ? a->out : f == -2 ? a->dz : f == -1 ? a->dt : a->dw[f];
        const double *y = f == -3 ? b->out : f == -2 ? b->dz : f == -1 ? b->dt : b->dw[f];
        const char *what = f == -3 ? "out" : f == -2 ? "dz" : f == -1 ? "dt" : c->specs[f].name;
        const int64_t n = f == -3 || f == -2 ? c->nz : f == -1 ? c->nt : c->pn[f];
        double at = atol;
        if (scale_atol) {
            /* sums over many pairs cancel far below their terms: the bf16 error follows the
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

static void fd_forward(void *ud)
{
    pcase *c = ud;
    pres r;
    res_alloc(c, &r);
    run_opts o = {.train = false};
    run_module(c->ctx, c, MF_F64, &o, &r);
    memcpy(c->out, r.out, sizeof(double) * (size_t)c->nz);
    res_free(&r);
}

static void test_f64(mf_ctx *ctx)
{
    pcase c;
    case_init(&c, 5, 3, 6, 4, 2, 3, 900);
    c.ctx = ctx;
    pres r;
    res_alloc(&c, &r);
    run_opts o = {.train = true};
    run_module(ctx, &c, MF_F64, &o, &r);
    mf_gc_array in[2 + NPAR];
    const double *grads[2 + NPAR];
    int n = 0;
    in[n] = (mf_gc_array){"z", c.z, c.nz};
    grads[n++] = r.dz;
    in[n] = (mf_gc_array){"t", c.t, c.nt};
    grads[n++] = r.dt;
    for (int i = 0; i < NPAR; i++) {
        in[n] = (mf_gc_array){c.specs[i].name, c.w[i], c.pn[i]};
        grads[n++] = r.dw[i];
    }
    mf_gc_array outs[1] = {{"update", c.out, c.nz}};
    const double *gouts[1] = {c.gout};
    mf_gradcheck("template_pointwise_attention f64 module N5 T3 (one absent) c_z6 c_t4 H2 D3",
                 fd_forward, &c, in, grads, n, outs, gouts, 1, MF_TOL_FD_STEP, MF_TOL_FD_ATOL,
                 MF_TOL_FD_RTOL, 0);
    double *ref = dalloc(c.nz);
    ref_forward(&c, ref);
    mf_check_close_f64("template_pointwise_attention f64 module out vs hand-written reference",
                       r.out, ref, c.nz, REF64_ATOL, REF64_RTOL);

    /* 3. no template at all */
    for (int64_t k = 0; k < c.T; k++) c.tmask[k] = 0.0;
    pres r0, zero;
    res_alloc(&c, &r0);
    res_alloc(&c, &zero);
    run_module(ctx, &c, MF_F64, &o, &r0);
    compare_res(&c, "template_pointwise_attention f64 no template present (exactly 0):", &r0, &zero,
                0.0, 0.0, false);
    ref_forward(&c, ref);
    mf_check_close_f64("template_pointwise_attention reference with no template (exactly 0)", ref,
                       zero.out, c.nz, 0.0, 0.0);
    res_free(&r0);
    res_free(&zero);
    free(ref);
    res_free(&r);
    case_free(&c);
}

static void test_f32(mf_ctx *ctx)
{
    const char *nm = "template_pointwise_attention";
    char label[200];
    pcase c;
    case_init(&c, 5, 3, 6, 4, 2, 3, 1000);
    pres init, r64, r32;
    res_alloc(&c, &init);
    mf_test_fill_normal_f64(init.out, c.nz, 1090, 1.0);
    mf_test_fill_normal_f64(init.dz, c.nz, 1091, 1.0);
    mf_test_fill_normal_f64(init.dt, c.nt, 1092, 1.0);
    round_f32(init.out, c.nz);
    round_f32(init.dz, c.nz);
    round_f32(init.dt, c.nt);
    for (int i = 0; i < NPAR; i++) {
        mf_test_fill_normal_f64(init.dw[i], c.pn[i], 1100 + (uint64_t)i, 1.0);
        round_f32(init.dw[i], c.pn[i]);
    }
    res_alloc(&c, &r64);
    res_alloc(&c, &r32);
    run_opts o = {.train = true, .init = &init};
    run_module(ctx, &c, MF_F64, &o, &r64);
    run_module(ctx, &c, MF_F32, &o, &r32);
    snprintf(label, sizeof label, "%s f32 vs f64 (accumulating):", nm);
    compare_res(&c, label, &r32, &r64, MF_TOL_F32_ATOL, MF_TOL_F32_RTOL, false);
    res_free(&init);
    res_free(&r64);
    res_free(&r32);
    case_free(&c);

    case_init(&c, 11, 4, 16, 8, 3, 5, 1200);
    static const int64_t chunks[4] = {0, 1, 3, 64};
    pres inf[4], tr[4];
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
        pres ip, ref, init_z;
        res_alloc(&c, &ip);
        res_alloc(&c, &ref);
        res_alloc(&c, &init_z);
        memcpy(init_z.out, c.z, sizeof(double) * (size_t)c.nz);
        run_opts oi = {.train = false, .inplace = true}, oa = {.train = false, .init = &init_z};
        run_module(ctx, &c, MF_F32, &oi, &ip);
        run_module(ctx, &c, MF_F32, &oa, &ref);
        snprintf(label, sizeof label, "%s chunk=3 in place (out = z) vs z + update", nm);
        bitwise_out(label, ip.out, ref.out, c.nz);
        res_free(&ip);
        res_free(&ref);
        res_free(&init_z);
    }
    for (int mode = 0; mode < 2; mode++) {
        pres rb;
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
        res_free(&rb);
    }
    ctx->policy.chunk_size = 0;
    for (int ci = 0; ci < 4; ci++) {
        res_free(&inf[ci]);
        res_free(&tr[ci]);
    }
    case_free(&c);
}

int main(void)
{
    mf_ctx ctx;
    mf_arena arena;
    MF_TEST_OK(mf_test_ctx_cpu(&ctx, &arena, (size_t)64 << 20));
    test_f64(&ctx);
    test_f32(&ctx);
    mf_test_ctx_free(&ctx, &arena);
    return mf_test_finish("test_template_pointwise_attention");
}
