/* MSA attention modules (evoformer/msa_attention.h): row attention with pair bias (Alg. 7),
 * column attention (Alg. 8) and the extra-MSA stack's global column attention (Alg. 19).
 *  1. the module run in f64 (the same module code on the CPU's double ops) against central
 *     finite differences of itself: every input (m, z) and every parameter gradient, random
 *     upstream gradient, odd sizes (S 5, N 7, c_m 6, c_z 4, 2 heads of 3), masks with zeros (the
 *     first MSA row kept, so no query or column is left without a key: a fully masked row's
 *     -1e9 logits keep only ~1e-7 absolute precision in double, below a finite difference);
 *  2. the f64 module's forward against a double reference written independently: Alg. 7 and 8
 *     composed from core/ref (layer norm, pair bias loops, the reference gated attention), and a
 *     plain-loop AF2 GlobalAttention (masked mean with eps 1e-10, where(mask, logits, -1e9)),
 *     including a column with no sequence and a fully masked sequence row;
 *  3. f32 against f64 (forward and every gradient; forward adds onto a nonzero output, backward
 *     onto nonzero gradients);
 *  4. chunk sizes {0, 1, 3, 64} at S 11, N 13: inference updates bitwise equal to unchunked for
 *     Alg. 7 and 8 (within f32 tolerance for Alg. 19, whose masked mean sums over sequence
 *     slices), inference bitwise equal to training at each chunk size, training gradients within
 *     f32 tolerance; the inference arena back at its mark, the backward leaving nothing, a smaller
 *     inference peak at chunk 1 for Alg. 7 and 19; in-place inference (out = m, accumulate)
 *     bitwise equal to m + update;
 *  5. bf16 storage and bf16 compute against f32;
 *  6. the reference vectors through the verifiers (rtol 1e-5 of the file, outputs and every
 *     gradient). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/ref/ref.h"
#include "evoformer/msa_attention.h"
#include "evoformer/verify_evoformer_attention.h"
#include "tests/support/mf_test.h"

/* The f64 module against an independent double reference: the same arithmetic up to summation
 * order (~1e-14 relative); 1e-9 leaves room for AF2's masked-mean epsilon (1e-10 relative per
 * sequence count), which the global attention's softmax weights do not carry. */
#define REF64_ATOL 1e-11
#define REF64_RTOL 1e-9

enum { ROW = 0, COL = 1, GLOBAL = 2 };
static const char *const g_kind_name[3] = {"msa_row_attention_with_pair_bias",
                                           "msa_column_attention", "msa_column_global_attention"};
#define MAXP 16

typedef struct {
    int kind;
    int64_t S, N, C, Cz, H, D;
    int n_in; /* m, and z for the row attention */
    int64_t in_n[2];
    double *in[2], *mask, *gout, *out;
    int np;
    mf_param_spec specs[MAXP];
    int64_t pn[MAXP];
    double *w[MAXP];
    mf_ctx *ctx; /* for the finite-difference forward */
} mcase;

typedef struct {
    double *out, *din[2], *dw[MAXP];
} mres;

static double *dalloc(int64_t n)
{
    return calloc((size_t)(n > 0 ? n : 1), sizeof(double));
}

static int64_t numel_spec(const mf_param_spec *s)
{
    int64_t n = 1;
    for (int k = 0; k < s->ndim; k++) n *= s->shape[k];
    return n;
}

static int specs_of(const mcase *c, mf_param_spec *out)
{
    switch (c->kind) {
    case ROW: {
        mf_msa_row_attention_dims d = {c->C, c->Cz, c->H, c->D};
        return mf_msa_row_attention_param_specs(&d, out);
    }
    case COL: {
        mf_msa_column_attention_dims d = {c->C, c->H, c->D};
        return mf_msa_column_attention_param_specs(&d, out);
    }
    default: {
        mf_msa_column_global_attention_dims d = {c->C, c->H, c->D};
        return mf_msa_column_global_attention_param_specs(&d, out);
    }
    }
}

static void round_f32(double *x, int64_t n)
{
    for (int64_t i = 0; i < n; i++) x[i] = (double)(float)x[i];
}

/* Inputs of glorot size so logits and gates stay O(1); layer-norm scales near 1 and gating
 * biases near 1 but random, so every gradient is generic. Every value is an f32 value. */
static void case_init(mcase *c, int kind, int64_t S, int64_t N, int64_t C, int64_t Cz, int64_t H,
                      int64_t D, uint64_t seed)
{
    memset(c, 0, sizeof *c);
    *c = (mcase){.kind = kind, .S = S, .N = N, .C = C, .Cz = Cz, .H = H, .D = D};
    c->n_in = kind == ROW ? 2 : 1;
    c->in_n[0] = S * N * C;
    c->in_n[1] = N * N * Cz;
    for (int k = 0; k < c->n_in; k++) {
        c->in[k] = dalloc(c->in_n[k]);
        mf_test_fill_normal_f64(c->in[k], c->in_n[k], seed + 1 + (uint64_t)k, 1.0);
        round_f32(c->in[k], c->in_n[k]);
    }
    c->mask = dalloc(S * N);
    mf_test_fill_mask_f64(c->mask, S, N, seed + 3, 0.6);
    for (int64_t j = 0; j < N; j++) c->mask[j] = 1.0; /* the query sequence is always present */
    c->np = specs_of(c, c->specs);
    for (int i = 0; i < c->np; i++) {
        const mf_param_spec *s = &c->specs[i];
        c->pn[i] = numel_spec(s);
        c->w[i] = dalloc(c->pn[i]);
        double sd = s->ndim >= 2 ? 1.0 / sqrt((double)s->shape[0]) : 0.3;
        if (!strcmp(s->name, "attention//output_w")) sd = 1.0 / sqrt((double)(H * D));
        mf_test_fill_normal_f64(c->w[i], c->pn[i], seed + 10 + (uint64_t)i, sd);
        if (s->init == MF_INIT_ONES)
            for (int64_t k = 0; k < c->pn[i]; k++) c->w[i][k] += 1.0;
        round_f32(c->w[i], c->pn[i]);
    }
    c->gout = dalloc(S * N * C);
    mf_test_fill_normal_f64(c->gout, S * N * C, seed + 5, 1.0);
    round_f32(c->gout, S * N * C);
    c->out = dalloc(S * N * C);
}

static void case_free(mcase *c)
{
    for (int k = 0; k < c->n_in; k++) free(c->in[k]);
    free(c->mask);
    for (int i = 0; i < c->np; i++) free(c->w[i]);
    free(c->gout);
    free(c->out);
}

static void res_alloc(const mcase *c, mres *r)
{
    r->out = dalloc(c->S * c->N * c->C);
    for (int k = 0; k < c->n_in; k++) r->din[k] = dalloc(c->in_n[k]);
    for (int i = 0; i < c->np; i++) r->dw[i] = dalloc(c->pn[i]);
}

static void res_free(const mcase *c, mres *r)
{
    free(r->out);
    for (int k = 0; k < c->n_in; k++) free(r->din[k]);
    for (int i = 0; i < c->np; i++) free(r->dw[i]);
}

/* Host buffer of dtype dt holding x. */
static void *to_dt(const double *x, int64_t n, mf_dtype dt)
{
    if (dt == MF_F64) {
        double *y = dalloc(n);
        memcpy(y, x, sizeof(double) * (size_t)n);
        return y;
    }
    float *y = calloc((size_t)(n > 0 ? n : 1), sizeof(float));
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

static mf_tensor mk(void *p, mf_dtype dt, int ndim, int64_t a, int64_t b, int64_t cc)
{
    return mf_tensor_4(p, dt, MF_DEV_CPU, ndim, a, b, cc, 1);
}

typedef union {
    mf_msa_row_attention_saved row;
    mf_msa_column_attention_saved col;
    mf_msa_column_global_attention_saved glob;
} any_saved;

typedef union {
    mf_msa_row_attention_params row;
    mf_msa_column_attention_params col;
    mf_msa_column_global_attention_params glob;
    mf_tensor t[MAXP];
} any_params;

static mf_status module_forward(mf_ctx *ctx, const mcase *c, mf_tensor *out, bool acc, any_saved *s,
                                const mf_tensor *m, const mf_tensor *z, const mf_tensor *mask,
                                const any_params *p)
{
    switch (c->kind) {
    case ROW: {
        mf_msa_row_attention_dims d = {c->C, c->Cz, c->H, c->D};
        return mf_msa_row_attention_with_pair_bias_forward(ctx, out, acc, s ? &s->row : NULL, m, z,
                                                           mask, &p->row, &d);
    }
    case COL: {
        mf_msa_column_attention_dims d = {c->C, c->H, c->D};
        return mf_msa_column_attention_forward(ctx, out, acc, s ? &s->col : NULL, m, mask, &p->col,
                                               &d);
    }
    default: {
        mf_msa_column_global_attention_dims d = {c->C, c->H, c->D};
        return mf_msa_column_global_attention_forward(ctx, out, acc, s ? &s->glob : NULL, m, mask,
                                                      &p->glob, &d);
    }
    }
}

static mf_status module_backward(mf_ctx *ctx, const mcase *c, mf_tensor *dm, mf_tensor *dz,
                                 any_params *dp, const mf_tensor *dout, const any_saved *s,
                                 const mf_tensor *m, const mf_tensor *z, const mf_tensor *mask,
                                 const any_params *p)
{
    switch (c->kind) {
    case ROW: {
        mf_msa_row_attention_dims d = {c->C, c->Cz, c->H, c->D};
        return mf_msa_row_attention_with_pair_bias_backward(ctx, dm, dz, &dp->row, dout, &s->row, m,
                                                            z, mask, &p->row, &d);
    }
    case COL: {
        mf_msa_column_attention_dims d = {c->C, c->H, c->D};
        return mf_msa_column_attention_backward(ctx, dm, &dp->col, dout, &s->col, m, mask, &p->col,
                                                &d);
    }
    default: {
        mf_msa_column_global_attention_dims d = {c->C, c->H, c->D};
        return mf_msa_column_global_attention_backward(ctx, dm, &dp->glob, dout, &s->glob, m, mask,
                                                       &p->glob, &d);
    }
    }
}

typedef struct {
    bool train;       /* saved activations and backward */
    bool inplace;     /* inference into m itself (accumulate) */
    const mres *init; /* accumulate onto these (NULL: zeros, overwrite) */
    size_t peak;      /* out: arena high-water above the start */
} run_opts;

/* Runs the module in dtype dt on ctx; results into r (allocated by the caller). */
static void run_module(mf_ctx *ctx, const mcase *c, mf_dtype dt, run_opts *o, mres *r)
{
    const int64_t S = c->S, N = c->N, C = c->C, no = S * N * C;
    void *m = to_dt(c->in[0], c->in_n[0], dt), *mask = to_dt(c->mask, S * N, dt), *z = NULL;
    if (c->kind == ROW) z = to_dt(c->in[1], c->in_n[1], dt);
    void *gout = to_dt(c->gout, no, dt);
    double *zero = dalloc(c->in_n[0] > c->in_n[1] ? c->in_n[0] : c->in_n[1]);
    void *out = o->inplace ? m : to_dt(o->init ? o->init->out : zero, no, dt);
    void *dm = to_dt(o->init ? o->init->din[0] : zero, c->in_n[0], dt), *dz = NULL;
    if (c->kind == ROW) dz = to_dt(o->init ? o->init->din[1] : zero, c->in_n[1], dt);
    any_params p, dp;
    void *pw[MAXP], *dpw[MAXP];
    for (int i = 0; i < c->np; i++) {
        const mf_param_spec *s = &c->specs[i];
        pw[i] = to_dt(c->w[i], c->pn[i], dt);
        double *z0 = dalloc(c->pn[i]);
        dpw[i] = to_dt(o->init ? o->init->dw[i] : z0, c->pn[i], dt);
        free(z0);
        p.t[i] = mf_tensor_make(pw[i], dt, MF_DEV_CPU, s->ndim, s->shape);
        dp.t[i] = mf_tensor_make(dpw[i], dt, MF_DEV_CPU, s->ndim, s->shape);
    }
    mf_tensor tm = mk(m, dt, 3, S, N, C), tz = mk(z, dt, 3, N, N, c->Cz),
              tmask = mk(mask, dt, 2, S, N, 1), tout = mk(out, dt, 3, S, N, C),
              tg = mk(gout, dt, 3, S, N, C), tdm = mk(dm, dt, 3, S, N, C),
              tdz = mk(dz, dt, 3, N, N, c->Cz);
    const bool acc = o->inplace || o->init;
    mf_arena_mark_t mark = mf_arena_mark(ctx->arena);
    size_t used = mf_arena_used(ctx->arena);
    mf_arena_reset_peak(ctx->arena);
    if (o->train) {
        any_saved saved;
        MF_TEST_OK(module_forward(ctx, c, &tout, acc, &saved, &tm, &tz, &tmask, &p));
        size_t after_fwd = mf_arena_used(ctx->arena);
        MF_TEST_OK(module_backward(ctx, c, &tdm, c->kind == ROW ? &tdz : NULL, &dp, &tg, &saved,
                                   &tm, &tz, &tmask, &p));
        MF_TEST_TRUE(mf_arena_used(ctx->arena) == after_fwd, "%s backward left %zu arena bytes",
                     g_kind_name[c->kind], mf_arena_used(ctx->arena) - after_fwd);
    } else {
        MF_TEST_OK(module_forward(ctx, c, &tout, acc, NULL, &tm, &tz, &tmask, &p));
        MF_TEST_TRUE(mf_arena_used(ctx->arena) == used, "%s inference left %zu arena bytes",
                     g_kind_name[c->kind], mf_arena_used(ctx->arena) - used);
    }
    o->peak = mf_arena_high_water(ctx->arena) - used;
    mf_arena_release(ctx->arena, mark);
    from_dt(r->out, out, no, dt);
    from_dt(r->din[0], dm, c->in_n[0], dt);
    if (c->kind == ROW) from_dt(r->din[1], dz, c->in_n[1], dt);
    for (int i = 0; i < c->np; i++) {
        from_dt(r->dw[i], dpw[i], c->pn[i], dt);
        free(pw[i]);
        free(dpw[i]);
    }
    if (!o->inplace) free(out);
    free(m);
    free(mask);
    free(z);
    free(gout);
    free(dm);
    free(dz);
    free(zero);
}

/* ---- independent double references -------------------------------------------------------- */

static int pidx(const mcase *c, const char *name)
{
    for (int i = 0; i < c->np; i++)
        if (!strcmp(c->specs[i].name, name)) return i;
    mf_test_fail("parameter %s missing", name);
    return 0;
}

static const double *W(const mcase *c, const char *name)
{
    return c->w[pidx(c, name)];
}

static void ref_layer_norm(double *y, const double *x, const double *g, const double *b,
                           int64_t rows, int64_t C)
{
    double *mean = dalloc(rows), *rstd = dalloc(rows);
    mf_ref_layer_norm_forward_f64(y, mean, rstd, x, g, b, rows, C, 1e-5);
    free(mean);
    free(rstd);
}

static void ref_gated(const mcase *c, double *out, const double *x, const double *bias,
                      const double *mask, int64_t B, int64_t L)
{
    mf_ref_gated_attention_forward_f64(
        out, x, x, bias, mask, W(c, "attention//query_w"), W(c, "attention//key_w"),
        W(c, "attention//value_w"), W(c, "attention//gating_w"), W(c, "attention//gating_b"),
        W(c, "attention//output_w"), W(c, "attention//output_b"), B, L, L, c->C, c->H, c->D, c->C);
}

/* [A, B, C] -> [B, A, C] */
static void ref_transpose(double *y, const double *x, int64_t A, int64_t B, int64_t C)
{
    for (int64_t a = 0; a < A; a++)
        for (int64_t b = 0; b < B; b++)
            for (int64_t k = 0; k < C; k++) y[(b * A + a) * C + k] = x[(a * B + b) * C + k];
}

/* AF2's GlobalAttention on the normalised column-major MSA, plain loops. */
static void ref_global(const mcase *c, double *out, const double *xt /* [N, S, C] */,
                       const double *mt /* [N, S] */)
{
    const int64_t S = c->S, N = c->N, C = c->C, H = c->H, D = c->D;
    const double *qw = W(c, "attention//query_w"), *kw = W(c, "attention//key_w"),
                 *vw = W(c, "attention//value_w"), *gw = W(c, "attention//gating_w"),
                 *gb = W(c, "attention//gating_b"), *ow = W(c, "attention//output_w"),
                 *ob = W(c, "attention//output_b");
    double *qa = dalloc(C), *q = dalloc(H * D), *k = dalloc(S * D), *v = dalloc(S * D),
           *a = dalloc(S), *o = dalloc(H * D);
    for (int64_t n = 0; n < N; n++) {
        const double *x = xt + n * S * C, *mk_ = mt + n * S;
        double cnt = 0;
        for (int64_t s = 0; s < S; s++) cnt += mk_[s];
        for (int64_t ch = 0; ch < C; ch++) {
            double acc = 0;
            for (int64_t s = 0; s < S; s++) acc += mk_[s] * x[s * C + ch];
            qa[ch] = acc / (cnt + 1e-10);
        }
        for (int64_t j = 0; j < H * D; j++) {
            double acc = 0;
            for (int64_t ch = 0; ch < C; ch++) acc += qa[ch] * qw[ch * H * D + j];
            q[j] = acc / sqrt((double)D);
        }
        for (int64_t s = 0; s < S; s++)
            for (int64_t dd = 0; dd < D; dd++) {
                double ak = 0, av = 0;
                for (int64_t ch = 0; ch < C; ch++) {
                    ak += x[s * C + ch] * kw[ch * D + dd];
                    av += x[s * C + ch] * vw[ch * D + dd];
                }
                k[s * D + dd] = ak;
                v[s * D + dd] = av;
            }
        for (int64_t h = 0; h < H; h++) {
            double mx = -INFINITY, sum = 0;
            for (int64_t s = 0; s < S; s++) {
                double l = 0;
                for (int64_t dd = 0; dd < D; dd++) l += q[h * D + dd] * k[s * D + dd];
                a[s] = mk_[s] > 0 ? l : -1e9;
                mx = fmax(mx, a[s]);
            }
            for (int64_t s = 0; s < S; s++) sum += (a[s] = exp(a[s] - mx));
            for (int64_t dd = 0; dd < D; dd++) {
                double acc = 0;
                for (int64_t s = 0; s < S; s++) acc += a[s] / sum * v[s * D + dd];
                o[h * D + dd] = acc;
            }
        }
        for (int64_t s = 0; s < S; s++) {
            double *y = out + (s * N + n) * C;
            for (int64_t oc = 0; oc < C; oc++) y[oc] = ob[oc];
            for (int64_t j = 0; j < H * D; j++) {
                double g = gb[j];
                for (int64_t ch = 0; ch < C; ch++) g += x[s * C + ch] * gw[ch * H * D + j];
                g = 1.0 / (1.0 + exp(-g)) * o[j];
                for (int64_t oc = 0; oc < C; oc++) y[oc] += g * ow[j * C + oc];
            }
        }
    }
    free(qa);
    free(q);
    free(k);
    free(v);
    free(a);
    free(o);
}

static void ref_forward(const mcase *c, double *out)
{
    const int64_t S = c->S, N = c->N, C = c->C, H = c->H;
    double *mn = dalloc(S * N * C);
    ref_layer_norm(mn, c->in[0], W(c, "query_norm//scale"), W(c, "query_norm//offset"), S * N, C);
    if (c->kind == ROW) {
        const int64_t Cz = c->Cz;
        double *zn = dalloc(N * N * Cz), *bias = dalloc(H * N * N);
        ref_layer_norm(zn, c->in[1], W(c, "feat_2d_norm//scale"), W(c, "feat_2d_norm//offset"),
                       N * N, Cz);
        const double *fw = W(c, "/feat_2d_weights");
        for (int64_t h = 0; h < H; h++)
            for (int64_t ij = 0; ij < N * N; ij++) {
                double acc = 0;
                for (int64_t k = 0; k < Cz; k++) acc += zn[ij * Cz + k] * fw[k * H + h];
                bias[h * N * N + ij] = acc;
            }
        ref_gated(c, out, mn, bias, c->mask, S, N);
        free(zn);
        free(bias);
    } else {
        double *xt = dalloc(S * N * C), *mt = dalloc(S * N), *ot = dalloc(S * N * C);
        ref_transpose(xt, mn, S, N, C);
        ref_transpose(mt, c->mask, S, N, 1);
        if (c->kind == COL) {
            ref_gated(c, ot, xt, NULL, mt, N, S);
            ref_transpose(out, ot, N, S, C);
        } else {
            ref_global(c, out, xt, mt);
        }
        free(xt);
        free(mt);
        free(ot);
    }
    free(mn);
}

/* ---- checks -------------------------------------------------------------------------------- */

static const char *in_name(const mcase *c, int k)
{
    (void)c;
    return k == 0 ? "dm" : "dz";
}

/* The largest |gradient| over every input and parameter gradient of r. */
static double grad_scale(const mcase *c, const mres *r)
{
    double mx = 0;
    for (int k = 0; k < c->n_in; k++)
        for (int64_t i = 0; i < c->in_n[k]; i++) mx = fmax(mx, fabs(r->din[k][i]));
    for (int j = 0; j < c->np; j++)
        for (int64_t i = 0; i < c->pn[j]; i++) mx = fmax(mx, fabs(r->dw[j][i]));
    return mx;
}

/* Every result of a against b, per element. */
static void compare_res(const mcase *c, const char *label, const mres *a, const mres *b,
                        double atol, double rtol, bool scale_atol)
{
    char name[256];
    int64_t n = c->S * c->N * c->C;
    for (int f = -1; f < c->n_in + c->np; f++) {
        const double *x, *y;
        const char *what;
        if (f < 0) {
            x = a->out, y = b->out, what = "out";
        } else if (f < c->n_in) {
            x = a->din[f], y = b->din[f], what = in_name(c, f), n = c->in_n[f];
        } else {
            int i = f - c->n_in;
            x = a->dw[i], y = b->dw[i], what = c->specs[i].name, n = c->pn[i];
        }
        if (f < 0) n = c->S * c->N * c->C;
        double at = atol;
        if (scale_atol) {
            /* sums over many rows cancel far below their terms: the bf16 error follows the
             * terms' size, so atol scales with max|ref|; feat_2d_norm//offset is exactly zero in
             * exact arithmetic (a per-head constant added to every logit of a row), only
             * rounding noise of the other gradients' size: it scales with the largest gradient
             * (the reference vectors' grad_scale rule) */
            double mx = 1;
            for (int64_t i = 0; i < n; i++) mx = fmax(mx, fabs(y[i]));
            if (!strcmp(what, "feat_2d_norm//offset")) mx = fmax(mx, grad_scale(c, b));
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

/* ---- 1. finite differences of the f64 module ---------------------------------------------- */

static void fd_forward(void *ud)
{
    mcase *c = ud;
    mres r = {0};
    res_alloc(c, &r);
    run_opts o = {.train = false};
    run_module(c->ctx, c, MF_F64, &o, &r);
    memcpy(c->out, r.out, sizeof(double) * (size_t)(c->S * c->N * c->C));
    res_free(c, &r);
}

static void test_fd(mf_ctx *ctx, int kind)
{
    mcase c;
    case_init(&c, kind, 5, 7, 6, 4, 2, 3, 100 + 10 * (uint64_t)kind);
    if (kind == GLOBAL)
        for (int64_t j = 0; j < c.N; j++) c.mask[4 * c.N + j] = 0.0; /* a padded extra-MSA row */
    c.ctx = ctx;
    mres r = {0};
    res_alloc(&c, &r);
    run_opts o = {.train = true};
    run_module(ctx, &c, MF_F64, &o, &r);
    mf_gc_array in[2 + MAXP];
    const double *grads[2 + MAXP];
    int n = 0;
    static const char *const names[2] = {"m", "z"};
    for (int k = 0; k < c.n_in; k++) {
        in[n] = (mf_gc_array){names[k], c.in[k], c.in_n[k]};
        grads[n++] = r.din[k];
    }
    for (int i = 0; i < c.np; i++) {
        in[n] = (mf_gc_array){c.specs[i].name, c.w[i], c.pn[i]};
        grads[n++] = r.dw[i];
    }
    mf_gc_array outs[1] = {{"update", c.out, c.S * c.N * c.C}};
    const double *gouts[1] = {c.gout};
    char what[160];
    snprintf(what, sizeof what, "%s f64 module S5 N7 c6%s H2 D3", g_kind_name[kind],
             kind == ROW ? " c_z4" : "");
    mf_gradcheck(what, fd_forward, &c, in, grads, n, outs, gouts, 1, MF_TOL_FD_STEP, MF_TOL_FD_ATOL,
                 MF_TOL_FD_RTOL, 0);

    /* 2. the f64 module against the independent reference (training forward) */
    double *ref = dalloc(c.S * c.N * c.C);
    ref_forward(&c, ref);
    snprintf(what, sizeof what, "%s f64 module out vs independent double reference",
             g_kind_name[kind]);
    mf_check_close_f64(what, r.out, ref, c.S * c.N * c.C, REF64_ATOL, REF64_RTOL);
    if (kind == GLOBAL) {
        /* a residue column with no sequence at all: AF2's masked mean is 0/(0 + 1e-10) = 0 and
         * every key is masked (uniform weights) */
        for (int64_t s = 0; s < c.S; s++) c.mask[s * c.N + 2] = 0.0;
        mres r2 = {0};
        res_alloc(&c, &r2);
        run_opts o2 = {.train = false};
        run_module(ctx, &c, MF_F64, &o2, &r2);
        ref_forward(&c, ref);
        /* every key of that column is masked: the core's weights exp(logit - lse) then come
         * from -1e9 + log(N_seq), whose double keeps ~1.2e-7 absolute, so that column agrees to
         * ~1e-7 relative only */
        mf_check_close_f64("msa_column_global_attention f64 with an empty column vs reference",
                           r2.out, ref, c.S * c.N * c.C, 1e-9, 1e-6);
        res_free(&c, &r2);
    }
    free(ref);
    res_free(&c, &r);
    case_free(&c);
}

/* ---- 3.-5. the f32 module ------------------------------------------------------------------ */

static void random_init(const mcase *c, mres *init, uint64_t seed)
{
    res_alloc(c, init);
    mf_test_fill_normal_f64(init->out, c->S * c->N * c->C, seed, 1.0);
    round_f32(init->out, c->S * c->N * c->C);
    for (int k = 0; k < c->n_in; k++) {
        mf_test_fill_normal_f64(init->din[k], c->in_n[k], seed + 1 + (uint64_t)k, 1.0);
        round_f32(init->din[k], c->in_n[k]);
    }
    for (int i = 0; i < c->np; i++) {
        mf_test_fill_normal_f64(init->dw[i], c->pn[i], seed + 5 + (uint64_t)i, 1.0);
        round_f32(init->dw[i], c->pn[i]);
    }
}

static void test_f32(mf_ctx *ctx, int kind)
{
    const char *nm = g_kind_name[kind];
    char label[200];
    mcase c;
    case_init(&c, kind, 5, 7, 6, 4, 2, 3, 300 + 10 * (uint64_t)kind);
    mres init, r64, r32;
    random_init(&c, &init, 390);
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

    /* chunking at sizes no chunk divides */
    case_init(&c, kind, 11, 13, 16, 8, 3, 5, 400 + 10 * (uint64_t)kind);
    static const int64_t chunks[4] = {0, 1, 3, 64};
    mres inf[4], tr[4];
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
        bitwise_out(label, inf[ci].out, tr[ci].out, c.S * c.N * c.C);
        if (ci == 0) continue;
        snprintf(label, sizeof label, "%s chunk=%lld vs unchunked inference out", nm,
                 (long long)chunks[ci]);
        if (kind == GLOBAL)
            mf_check_close_f64(label, inf[ci].out, inf[0].out, c.S * c.N * c.C, MF_TOL_F32_ATOL,
                               MF_TOL_F32_RTOL);
        else
            bitwise_out(label, inf[ci].out, inf[0].out, c.S * c.N * c.C);
        snprintf(label, sizeof label, "%s chunk=%lld vs unchunked training:", nm,
                 (long long)chunks[ci]);
        compare_res(&c, label, &tr[ci], &tr[0], MF_TOL_F32_ATOL, MF_TOL_F32_RTOL, false);
    }
    if (kind != COL)
        MF_TEST_TRUE(peak[1] < peak[0], "%s: chunk=1 inference peak %zu not below unchunked %zu",
                     nm, peak[1], peak[0]);

    /* in place at inference: out = m, accumulate */
    ctx->policy.chunk_size = 3;
    {
        mres ip, ref;
        res_alloc(&c, &ip);
        res_alloc(&c, &ref);
        mres init_m = {0};
        res_alloc(&c, &init_m);
        memcpy(init_m.out, c.in[0], sizeof(double) * (size_t)c.in_n[0]);
        run_opts oi = {.train = false, .inplace = true}, oa = {.train = false, .init = &init_m};
        run_module(ctx, &c, MF_F32, &oi, &ip);
        run_module(ctx, &c, MF_F32, &oa, &ref);
        snprintf(label, sizeof label, "%s chunk=3 in place (out = m) vs m + update", nm);
        bitwise_out(label, ip.out, ref.out, c.S * c.N * c.C);
        res_free(&c, &ip);
        res_free(&c, &ref);
        res_free(&c, &init_m);
    }

    /* bf16 compute, then bf16 storage, against f32 (chunk 3) */
    for (int mode = 0; mode < 2; mode++) {
        mres rb;
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
    for (int kind = 0; kind < 3; kind++) test_fd(&ctx, kind);
    for (int kind = 0; kind < 3; kind++) test_f32(&ctx, kind);
    test_vectors(&ctx, "msa_row_attention_with_pair_bias",
                 mf_verify_msa_row_attention_with_pair_bias);
    test_vectors(&ctx, "msa_column_attention", mf_verify_msa_column_attention);
    test_vectors(&ctx, "msa_column_global_attention", mf_verify_msa_column_global_attention);
    mf_test_ctx_free(&ctx, &arena);
    return mf_test_finish("test_msa_attention");
}
