/* The AlphaFold 2 embedders (model/embedders.h): input embedder + relpos (Alg. 3, 4), recycling
 * embedder (Alg. 32), extra-MSA embedder, template single (torsion) and template pair embedders,
 * and their feature construction.
 *  1. feature construction: relpos bins/one-hot (clipping both ways), AF2's squared-distance
 *     distogram (a distance exactly on an edge is in no bin, beyond the last edge in the last bin,
 *     f32 and f64 positions), pseudo-beta (CA for glycine), the 25-channel extra-MSA feature, the
 *     57-channel angle feature, the template MSA-row mask, the 88-channel template pair feature
 *     (layout, backbone-mask zeroing, row slices) and its unit vector (against frames built from
 *     known rotations, independent of quat_affine's construction);
 *  2. each module run in f64 against an independent double oracle written with explicit one-hot
 *     matrix products (forward), and its backward against central finite differences for every
 *     input and parameter gradient (random upstream gradient, odd sizes, bins with -1 = no bin);
 *  3. f32 against f64, forward and backward (gradients accumulated onto nonzero buffers);
 *  4. chunk sizes {0, 1, 3, 64}: bitwise equal outputs and gradients; inference path against the
 *     training path (bitwise); accumulate = initial + update; the arena back at its mark; a
 *     smaller inference peak when chunked;
 *  5. bf16 storage (only the template single embedder saves an activation) and bf16 compute
 *     against f32;
 *  6. argument errors and NaN propagation caught by the comparison metric;
 *  7. shared/testvectors: every embedder stage of expected_outputs.h5 (both recycling iterations)
 *     and the constructed features through mf_verify_embedders (rtol 1e-4). */
#include "model/embedders.h"
#include "model/verify_embedders.h"
#include "eval/compare.h"
#include "tests/support/mf_test.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Finite-difference step for modules linear in every input (see test_f64_oracle_and_gradients). */
#define EMB_FD_STEP_LINEAR 1e-3

/* ==== helpers ================================================================================ */

typedef struct {
    char name[64];
    int ndim;
    int64_t shape[4];
    int64_t n;
    double *d, *gd; /* values, gradient (f64 run) */
    float *f, *gf;  /* f32 mirrors */
} arr;

static void arr_init(arr *a, const char *name, int ndim, const int64_t *shape)
{
    memset(a, 0, sizeof *a);
    snprintf(a->name, sizeof a->name, "%s", name);
    a->ndim = ndim;
    a->n = 1;
    for (int k = 0; k < ndim; k++) a->shape[k] = shape[k], a->n *= shape[k];
    a->d = calloc((size_t)a->n, sizeof(double));
    a->gd = calloc((size_t)a->n, sizeof(double));
    a->f = calloc((size_t)a->n, sizeof(float));
    a->gf = calloc((size_t)a->n, sizeof(float));
}

static void arr_free(arr *a)
{
    free(a->d), free(a->gd), free(a->f), free(a->gf);
}

/* Random values representable in f32, so the f32 and f64 runs see the same inputs. */
static void arr_random(arr *a, uint64_t seed, double mean, double sd)
{
    mf_test_fill_normal_f64(a->d, a->n, seed, sd);
    for (int64_t i = 0; i < a->n; i++) {
        a->f[i] = (float)(a->d[i] + mean);
        a->d[i] = a->f[i];
    }
}

static void arr_sync_f32(arr *a)
{
    for (int64_t i = 0; i < a->n; i++) a->f[i] = (float)a->d[i];
}

static mf_tensor tval(arr *a, bool f64)
{
    return mf_tensor_make(f64 ? (void *)a->d : (void *)a->f, f64 ? MF_F64 : MF_F32, MF_DEV_CPU,
                          a->ndim, a->shape);
}

static mf_tensor tgrad(arr *a, bool f64)
{
    return mf_tensor_make(f64 ? (void *)a->gd : (void *)a->gf, f64 ? MF_F64 : MF_F32, MF_DEV_CPU,
                          a->ndim, a->shape);
}

/* ==== module cases =========================================================================== */

enum { K_INPUT, K_RECYCLING, K_EXTRA_MSA, K_TEMPLATE_SINGLE, K_TEMPLATE_PAIR, NKIND };
#define MAXP 12

typedef struct {
    int kind;
    const char *name;
    int n_in, n_par, n_out;
    arr in[2], par[MAXP], out[2], gout[2];
    int64_t N;
    int32_t *bins;      /* relpos or dgram bins [N, N] */
    int32_t *res_index; /* input embedder */
    double *pos;        /* recycling: previous pseudo-beta [N, 3] */
    mf_input_embedder_dims din;
    mf_recycling_embedder_dims drec;
    mf_extra_msa_embedder_dims dex;
    mf_template_single_embedder_dims dts;
    mf_template_pair_embedder_dims dtp;
} mcase;

typedef union {
    mf_input_embedder_saved in;
    mf_recycling_embedder_saved rec;
    mf_extra_msa_embedder_saved ex;
    mf_template_single_embedder_saved ts;
    mf_template_pair_embedder_saved tp;
} usaved;

static int case_specs(const mcase *c, mf_param_spec *specs)
{
    switch (c->kind) {
    case K_INPUT:
        return mf_input_embedder_param_specs(&c->din, specs);
    case K_RECYCLING:
        return mf_recycling_embedder_param_specs(&c->drec, specs);
    case K_EXTRA_MSA:
        return mf_extra_msa_embedder_param_specs(&c->dex, specs);
    case K_TEMPLATE_SINGLE:
        return mf_template_single_embedder_param_specs(&c->dts, specs);
    default:
        return mf_template_pair_embedder_param_specs(&c->dtp, specs);
    }
}

static void case_params(mcase *c, uint64_t seed)
{
    mf_param_spec specs[MAXP];
    c->n_par = case_specs(c, specs);
    for (int i = 0; i < c->n_par; i++) {
        arr_init(&c->par[i], specs[i].name, specs[i].ndim, specs[i].shape);
        /* Layer-norm scales near 1, everything else O(1) random (zero-initialised weights would
         * hide transposed gradients). */
        bool scale = strstr(specs[i].name, "//scale") != NULL;
        arr_random(&c->par[i], seed + (uint64_t)i, scale ? 1.0 : 0.0, scale ? 0.3 : 0.5);
    }
}

static void case_outputs(mcase *c, int n, const int64_t shapes[][4], const int *ndims,
                         const char *const *names, uint64_t seed)
{
    c->n_out = n;
    for (int o = 0; o < n; o++) {
        arr_init(&c->out[o], names[o], ndims[o], shapes[o]);
        arr_init(&c->gout[o], names[o], ndims[o], shapes[o]);
        arr_random(&c->gout[o], seed + 100 + (uint64_t)o, 0.0, 1.0);
    }
}

/* Alg. 4 relpos and AF2's distogram, written out independently of the library for the oracle. */
static int32_t oracle_relpos(int32_t ri, int32_t rj, int64_t r)
{
    int64_t o = (int64_t)ri - rj + r;
    return (int32_t)(o < 0 ? 0 : o > 2 * r ? 2 * r : o);
}

static int32_t oracle_dgram(const double *pi, const double *pj, int64_t nb, double lo, double hi)
{
    double d2 = 0;
    for (int k = 0; k < 3; k++) d2 += (pi[k] - pj[k]) * (pi[k] - pj[k]);
    for (int64_t b = 0; b < nb; b++) {
        double l = lo + (hi - lo) * (double)b / (double)(nb - 1);
        double u = b + 1 < nb ? lo + (hi - lo) * (double)(b + 1) / (double)(nb - 1) : 1e4;
        if (d2 > l * l && d2 < u * u) return (int32_t)b;
    }
    return -1;
}

static void make_case(mcase *c, int kind)
{
    memset(c, 0, sizeof *c);
    c->kind = kind;
    const uint64_t seed = 1000 * (uint64_t)(kind + 1);
    switch (kind) {
    case K_INPUT: {
        c->name = "input embedder";
        const int64_t N = 7, S = 5;
        c->N = N;
        c->din = (mf_input_embedder_dims){
            .target_feat_dim = 6, .msa_feat_dim = 5, .c_m = 7, .c_z = 5, .max_relative_feature = 3};
        c->n_in = 2;
        arr_init(&c->in[0], "target_feat", 2, (const int64_t[]){N, 6});
        arr_init(&c->in[1], "msa_feat", 3, (const int64_t[]){S, N, 5});
        /* Jumps beyond the clip on both sides (offsets -20..20 against r = 3). */
        static const int32_t ri[7] = {0, 1, 2, 3, 9, 10, 20};
        c->res_index = malloc(sizeof ri);
        memcpy(c->res_index, ri, sizeof ri);
        c->bins = malloc(sizeof(int32_t) * (size_t)(N * N));
        mf_tensor tb = mf_tensor_make(c->bins, MF_I32, MF_DEV_CPU, 2, (const int64_t[]){N, N});
        mf_tensor tr = mf_tensor_make(c->res_index, MF_I32, MF_DEV_CPU, 1, &N);
        MF_TEST_OK(mf_relpos_bins(&tb, &tr, 3));
        const int64_t sh[2][4] = {{S, N, 7}, {N, N, 5}};
        case_outputs(c, 2, sh, (const int[]){3, 3}, (const char *const[]){"msa", "pair"}, seed);
        break;
    }
    case K_RECYCLING: {
        c->name = "recycling embedder";
        const int64_t N = 7;
        c->N = N;
        c->drec = (mf_recycling_embedder_dims){
            .c_m = 7, .c_z = 5, .num_bins = 6, .min_bin = 3.25, .max_bin = 20.75};
        c->n_in = 2;
        arr_init(&c->in[0], "m1_prev", 2, (const int64_t[]){N, 7});
        arr_init(&c->in[1], "z_prev", 3, (const int64_t[]){N, N, 5});
        c->pos = calloc((size_t)(3 * N), sizeof(double));
        mf_test_fill_normal_f64(c->pos, 3 * N, seed + 7, 8.0);
        for (int k = 0; k < 3; k++) c->pos[3 * 6 + k] = c->pos[3 * 2 + k]; /* d = 0: no bin */
        for (int64_t i = 0; i < 3 * N; i++) c->pos[i] = (float)c->pos[i];
        c->bins = malloc(sizeof(int32_t) * (size_t)(N * N));
        mf_tensor tb = mf_tensor_make(c->bins, MF_I32, MF_DEV_CPU, 2, (const int64_t[]){N, N});
        mf_tensor tp = mf_tensor_make(c->pos, MF_F64, MF_DEV_CPU, 2, (const int64_t[]){N, 3});
        MF_TEST_OK(mf_recycling_dgram_bins(&tb, &tp, &c->drec));
        const int64_t sh[2][4] = {{N, 7}, {N, N, 5}};
        case_outputs(c, 2, sh, (const int[]){2, 3}, (const char *const[]){"m1_update", "z_update"},
                     seed);
        break;
    }
    case K_EXTRA_MSA: {
        c->name = "extra-MSA embedder";
        c->dex = (mf_extra_msa_embedder_dims){.extra_msa_feat_dim = 9, .c_e = 6};
        c->n_in = 1;
        arr_init(&c->in[0], "extra_msa_feat", 3, (const int64_t[]){5, 7, 9});
        const int64_t sh[1][4] = {{5, 7, 6}};
        case_outputs(c, 1, sh, (const int[]){3}, (const char *const[]){"extra_msa_act"}, seed);
        break;
    }
    case K_TEMPLATE_SINGLE: {
        c->name = "template single embedder";
        c->dts = (mf_template_single_embedder_dims){.angle_feat_dim = 11, .c_m = 7};
        c->n_in = 1;
        arr_init(&c->in[0], "template_angle_feat", 3, (const int64_t[]){3, 7, 11});
        const int64_t sh[1][4] = {{3, 7, 7}};
        case_outputs(c, 1, sh, (const int[]){3}, (const char *const[]){"template_rows"}, seed);
        break;
    }
    default: {
        c->name = "template pair embedder";
        c->dtp = (mf_template_pair_embedder_dims){.pair_feat_dim = 13, .c_t = 6};
        c->n_in = 1;
        arr_init(&c->in[0], "template_pair_feat", 3, (const int64_t[]){7, 7, 13});
        const int64_t sh[1][4] = {{7, 7, 6}};
        case_outputs(c, 1, sh, (const int[]){3}, (const char *const[]){"template_pair_act"}, seed);
        break;
    }
    }
    for (int i = 0; i < c->n_in; i++) arr_random(&c->in[i], seed + 50 + (uint64_t)i, 0.0, 1.0);
    case_params(c, seed + 200);
}

static void free_case(mcase *c)
{
    for (int i = 0; i < c->n_in; i++) arr_free(&c->in[i]);
    for (int i = 0; i < c->n_par; i++) arr_free(&c->par[i]);
    for (int i = 0; i < c->n_out; i++) arr_free(&c->out[i]), arr_free(&c->gout[i]);
    free(c->bins), free(c->res_index), free(c->pos);
}

static mf_status run_forward(mf_ctx *ctx, mcase *c, bool f64, bool accumulate, usaved *saved)
{
    mf_tensor P[MAXP], in[2], out[2];
    for (int i = 0; i < c->n_par; i++) P[i] = tval(&c->par[i], f64);
    for (int i = 0; i < c->n_in; i++) in[i] = tval(&c->in[i], f64);
    for (int i = 0; i < c->n_out; i++) out[i] = tval(&c->out[i], f64);
    mf_tensor bins = mf_tensor_make(c->bins, MF_I32, MF_DEV_CPU, 2, (const int64_t[]){c->N, c->N});
    switch (c->kind) {
    case K_INPUT:
        return mf_input_embedder_forward(ctx, &out[0], &out[1], accumulate,
                                         saved ? &saved->in : NULL, &in[0], &in[1], &bins,
                                         (const mf_input_embedder_params *)(void *)P, &c->din);
    case K_RECYCLING:
        return mf_recycling_embedder_forward(
            ctx, &out[0], &out[1], accumulate, saved ? &saved->rec : NULL, &in[0], &in[1], &bins,
            (const mf_recycling_embedder_params *)(void *)P, &c->drec);
    case K_EXTRA_MSA:
        return mf_extra_msa_embedder_forward(
            ctx, &out[0], accumulate, saved ? &saved->ex : NULL, &in[0],
            (const mf_extra_msa_embedder_params *)(void *)P, &c->dex);
    case K_TEMPLATE_SINGLE:
        return mf_template_single_embedder_forward(
            ctx, &out[0], accumulate, saved ? &saved->ts : NULL, &in[0],
            (const mf_template_single_embedder_params *)(void *)P, &c->dts);
    default:
        return mf_template_pair_embedder_forward(
            ctx, &out[0], accumulate, saved ? &saved->tp : NULL, &in[0],
            (const mf_template_pair_embedder_params *)(void *)P, &c->dtp);
    }
}

static mf_status run_backward(mf_ctx *ctx, mcase *c, bool f64, const usaved *saved)
{
    mf_tensor P[MAXP], G[MAXP], in[2], din[2], gout[2];
    for (int i = 0; i < c->n_par; i++) P[i] = tval(&c->par[i], f64), G[i] = tgrad(&c->par[i], f64);
    for (int i = 0; i < c->n_in; i++) in[i] = tval(&c->in[i], f64), din[i] = tgrad(&c->in[i], f64);
    for (int i = 0; i < c->n_out; i++) gout[i] = tval(&c->gout[i], f64);
    mf_tensor bins = mf_tensor_make(c->bins, MF_I32, MF_DEV_CPU, 2, (const int64_t[]){c->N, c->N});
    switch (c->kind) {
    case K_INPUT:
        return mf_input_embedder_backward(ctx, &din[0], &din[1],
                                          (mf_input_embedder_params *)(void *)G, &gout[0], &gout[1],
                                          &saved->in, &in[0], &in[1], &bins,
                                          (const mf_input_embedder_params *)(void *)P, &c->din);
    case K_RECYCLING:
        return mf_recycling_embedder_backward(
            ctx, &din[0], &din[1], (mf_recycling_embedder_params *)(void *)G, &gout[0], &gout[1],
            &saved->rec, &in[0], &in[1], &bins, (const mf_recycling_embedder_params *)(void *)P,
            &c->drec);
    case K_EXTRA_MSA:
        return mf_extra_msa_embedder_backward(
            ctx, &din[0], (mf_extra_msa_embedder_params *)(void *)G, &gout[0], &saved->ex, &in[0],
            (const mf_extra_msa_embedder_params *)(void *)P, &c->dex);
    case K_TEMPLATE_SINGLE:
        return mf_template_single_embedder_backward(
            ctx, &din[0], (mf_template_single_embedder_params *)(void *)G, &gout[0], &saved->ts,
            &in[0], (const mf_template_single_embedder_params *)(void *)P, &c->dts);
    default:
        return mf_template_pair_embedder_backward(
            ctx, &din[0], (mf_template_pair_embedder_params *)(void *)G, &gout[0], &saved->tp,
            &in[0], (const mf_template_pair_embedder_params *)(void *)P, &c->dtp);
    }
}

static void zero_grads(mcase *c)
{
    for (int i = 0; i < c->n_in; i++)
        memset(c->in[i].gd, 0, sizeof(double) * (size_t)c->in[i].n),
            memset(c->in[i].gf, 0, sizeof(float) * (size_t)c->in[i].n);
    for (int i = 0; i < c->n_par; i++)
        memset(c->par[i].gd, 0, sizeof(double) * (size_t)c->par[i].n),
            memset(c->par[i].gf, 0, sizeof(float) * (size_t)c->par[i].n);
}

/* Forward (saved) + backward in one arena scope. */
static mf_status run_train(mf_ctx *ctx, mcase *c, bool f64)
{
    mf_arena_mark_t m = mf_arena_mark(ctx->arena);
    usaved sv;
    mf_status st = run_forward(ctx, c, f64, false, &sv);
    if (st == MF_OK) st = run_backward(ctx, c, f64, &sv);
    mf_arena_release(ctx->arena, m);
    return st;
}

/* ==== 2. f64 module against an independent double oracle ===================================== */

static double dot_row(const double *x, const double *w, int64_t in, int64_t out, int64_t c)
{
    double s = 0;
    for (int64_t k = 0; k < in; k++) s += x[k] * w[k * out + c];
    return s;
}

static void layer_norm_row(double *y, const double *x, const double *g, const double *b, int64_t C)
{
    double m = 0, v = 0;
    for (int64_t k = 0; k < C; k++) m += x[k];
    m /= (double)C;
    for (int64_t k = 0; k < C; k++) v += (x[k] - m) * (x[k] - m);
    v /= (double)C;
    /* haiku's eps 1e-5, passed to the op as a float (as AF2 runs it in f32). */
    const double eps = (double)MF_EMBEDDER_LN_EPS;
    for (int64_t k = 0; k < C; k++) y[k] = (x[k] - m) / sqrt(v + eps) * g[k] + b[k];
}

/* Writes the oracle's outputs into ref[o] (same layout as c->out[o]). */
static void oracle_forward(const mcase *c, double **ref)
{
    const arr *P = c->par;
    switch (c->kind) {
    case K_INPUT: {
        const mf_input_embedder_dims *d = &c->din;
        const int64_t N = c->N, S = c->in[1].shape[0], K = 2 * d->max_relative_feature + 1;
        const double *tf = c->in[0].d, *mf = c->in[1].d;
        for (int64_t s = 0; s < S; s++)
            for (int64_t i = 0; i < N; i++)
                for (int64_t ch = 0; ch < d->c_m; ch++)
                    ref[0][(s * N + i) * d->c_m + ch] =
                        dot_row(tf + i * d->target_feat_dim, P[0].d, d->target_feat_dim, d->c_m,
                                ch) +
                        P[1].d[ch] +
                        dot_row(mf + (s * N + i) * d->msa_feat_dim, P[2].d, d->msa_feat_dim, d->c_m,
                                ch) +
                        P[3].d[ch];
        double *onehot = calloc((size_t)K, sizeof(double));
        for (int64_t i = 0; i < N; i++)
            for (int64_t j = 0; j < N; j++) {
                memset(onehot, 0, sizeof(double) * (size_t)K);
                onehot[oracle_relpos(c->res_index[i], c->res_index[j], d->max_relative_feature)] =
                    1;
                for (int64_t ch = 0; ch < d->c_z; ch++)
                    ref[1][(i * N + j) * d->c_z + ch] =
                        dot_row(tf + i * d->target_feat_dim, P[4].d, d->target_feat_dim, d->c_z,
                                ch) +
                        P[5].d[ch] +
                        dot_row(tf + j * d->target_feat_dim, P[6].d, d->target_feat_dim, d->c_z,
                                ch) +
                        P[7].d[ch] + dot_row(onehot, P[8].d, K, d->c_z, ch) + P[9].d[ch];
            }
        free(onehot);
        break;
    }
    case K_RECYCLING: {
        const mf_recycling_embedder_dims *d = &c->drec;
        const int64_t N = c->N, B = d->num_bins;
        for (int64_t i = 0; i < N; i++)
            layer_norm_row(ref[0] + i * d->c_m, c->in[0].d + i * d->c_m, P[2].d, P[3].d, d->c_m);
        double *onehot = calloc((size_t)B, sizeof(double));
        for (int64_t i = 0; i < N; i++)
            for (int64_t j = 0; j < N; j++) {
                double *y = ref[1] + (i * N + j) * d->c_z;
                layer_norm_row(y, c->in[1].d + (i * N + j) * d->c_z, P[4].d, P[5].d, d->c_z);
                memset(onehot, 0, sizeof(double) * (size_t)B);
                int32_t b = oracle_dgram(c->pos + 3 * i, c->pos + 3 * j, B, d->min_bin, d->max_bin);
                if (b >= 0) onehot[b] = 1;
                for (int64_t ch = 0; ch < d->c_z; ch++)
                    y[ch] += dot_row(onehot, P[0].d, B, d->c_z, ch) + P[1].d[ch];
            }
        free(onehot);
        break;
    }
    case K_TEMPLATE_SINGLE: {
        const int64_t rows = c->in[0].n / c->dts.angle_feat_dim, F = c->dts.angle_feat_dim,
                      C = c->dts.c_m;
        double *h = calloc((size_t)C, sizeof(double));
        for (int64_t r = 0; r < rows; r++) {
            for (int64_t ch = 0; ch < C; ch++) {
                double v = dot_row(c->in[0].d + r * F, P[0].d, F, C, ch) + P[1].d[ch];
                h[ch] = v > 0 ? v : 0;
            }
            for (int64_t ch = 0; ch < C; ch++)
                ref[0][r * C + ch] = dot_row(h, P[2].d, C, C, ch) + P[3].d[ch];
        }
        free(h);
        break;
    }
    default: {
        const int64_t F = c->in[0].shape[c->in[0].ndim - 1], rows = c->in[0].n / F;
        const int64_t C = c->out[0].shape[c->out[0].ndim - 1];
        for (int64_t r = 0; r < rows; r++)
            for (int64_t ch = 0; ch < C; ch++)
                ref[0][r * C + ch] = dot_row(c->in[0].d + r * F, P[0].d, F, C, ch) + P[1].d[ch];
        break;
    }
    }
}

typedef struct {
    mf_ctx *ctx;
    mcase *c;
} gc_ud;

static void gc_forward(void *ud)
{
    gc_ud *u = ud;
    mf_status st = run_forward(u->ctx, u->c, true, false, NULL);
    if (st != MF_OK) mf_test_fail("%s f64 forward failed: %s", u->c->name, mf_last_error());
}

static void test_f64_oracle_and_gradients(mf_ctx *ctx, mcase *c)
{
    char what[160];
    /* Forward against the oracle. */
    MF_TEST_OK(run_forward(ctx, c, true, false, NULL));
    double *ref[2];
    for (int o = 0; o < c->n_out; o++) ref[o] = calloc((size_t)c->out[o].n, sizeof(double));
    oracle_forward(c, ref);
    for (int o = 0; o < c->n_out; o++) {
        snprintf(what, sizeof what, "%s f64 %s vs explicit one-hot oracle", c->name,
                 c->out[o].name);
        mf_check_close_f64(what, c->out[o].d, ref[o], c->out[o].n, 1e-12, 1e-12);
        free(ref[o]);
    }
    /* Backward against central differences (every input and parameter). */
    zero_grads(c);
    MF_TEST_OK(run_train(ctx, c, true));
    mf_gc_array inputs[2 + MAXP], outputs[2];
    const double *grads[2 + MAXP], *gout[2];
    int n = 0;
    for (int i = 0; i < c->n_in; i++) {
        inputs[n] = (mf_gc_array){c->in[i].name, c->in[i].d, c->in[i].n};
        grads[n++] = c->in[i].gd;
    }
    for (int i = 0; i < c->n_par; i++) {
        inputs[n] = (mf_gc_array){c->par[i].name, c->par[i].d, c->par[i].n};
        grads[n++] = c->par[i].gd;
    }
    for (int o = 0; o < c->n_out; o++) {
        outputs[o] = (mf_gc_array){c->out[o].name, c->out[o].d, c->out[o].n};
        gout[o] = c->gout[o].d;
    }
    gc_ud ud = {ctx, c};
    snprintf(what, sizeof what, "%s f64", c->name);
    /* The input, extra-MSA and template pair embedders are linear in every input and parameter:
     * a central difference has no truncation error there, so a large step leaves only rounding
     * (eps |L| / h, with |L| summing a few hundred O(1) terms: ~5e-8 at h = 1e-6, 5e-11 at
     * 1e-3). The layer norms and the ReLU keep the table's step. */
    const bool linear = c->kind == K_INPUT || c->kind == K_EXTRA_MSA || c->kind == K_TEMPLATE_PAIR;
    mf_gradcheck(what, gc_forward, &ud, inputs, grads, n, outputs, gout, c->n_out,
                 linear ? EMB_FD_STEP_LINEAR : MF_TOL_FD_STEP, MF_TOL_FD_ATOL, MF_TOL_FD_RTOL, 80);
}

/* ==== 3. f32 against f64 ====================================================================== */

static void test_f32_vs_f64(mf_ctx *ctx, mcase *c)
{
    char what[160];
    zero_grads(c);
    MF_TEST_OK(run_train(ctx, c, true));
    /* f32 gradients start from nonzero values: the backward must add to them. */
    double *g0[2 + MAXP];
    arr *ga[2 + MAXP];
    int n = 0;
    for (int i = 0; i < c->n_in; i++) ga[n++] = &c->in[i];
    for (int i = 0; i < c->n_par; i++) ga[n++] = &c->par[i];
    for (int k = 0; k < n; k++) {
        g0[k] = calloc((size_t)ga[k]->n, sizeof(double));
        mf_test_fill_normal_f64(g0[k], ga[k]->n, 77 + (uint64_t)k, 1.0);
        for (int64_t i = 0; i < ga[k]->n; i++) ga[k]->gf[i] = (float)g0[k][i];
    }
    for (int i = 0; i < c->n_in; i++) arr_sync_f32(&c->in[i]);
    for (int i = 0; i < c->n_par; i++) arr_sync_f32(&c->par[i]);
    mf_arena_mark_t m = mf_arena_mark(ctx->arena);
    usaved sv;
    MF_TEST_OK(run_forward(ctx, c, false, false, &sv));
    MF_TEST_OK(run_backward(ctx, c, false, &sv));
    mf_arena_release(ctx->arena, m);
    MF_TEST_OK(run_forward(ctx, c, true, false, NULL));
    for (int o = 0; o < c->n_out; o++) {
        snprintf(what, sizeof what, "%s f32 %s vs f64", c->name, c->out[o].name);
        mf_check_close_f32_f64(what, c->out[o].f, c->out[o].d, c->out[o].n, MF_TOL_F32_ATOL,
                               MF_TOL_F32_RTOL);
    }
    for (int k = 0; k < n; k++) {
        float *delta = calloc((size_t)ga[k]->n, sizeof(float));
        for (int64_t i = 0; i < ga[k]->n; i++) delta[i] = (float)((double)ga[k]->gf[i] - g0[k][i]);
        snprintf(what, sizeof what, "%s f32 d%s (accumulated onto nonzero) vs f64", c->name,
                 ga[k]->name);
        mf_check_close_f32_f64(what, delta, ga[k]->gd, ga[k]->n, MF_TOL_F32_ATOL, MF_TOL_F32_RTOL);
        free(delta);
        free(g0[k]);
    }
}

/* ==== 4. policies: chunking, inference vs training, accumulate, arena ========================= */

typedef struct {
    float *out[2];
    float *grads[2 + MAXP];
    int n_grads;
} f32_result;

static void result_take(f32_result *r, mcase *c)
{
    for (int o = 0; o < c->n_out; o++) {
        r->out[o] = malloc(sizeof(float) * (size_t)c->out[o].n);
        memcpy(r->out[o], c->out[o].f, sizeof(float) * (size_t)c->out[o].n);
    }
    int n = 0;
    for (int i = 0; i < c->n_in; i++) {
        r->grads[n] = malloc(sizeof(float) * (size_t)c->in[i].n);
        memcpy(r->grads[n++], c->in[i].gf, sizeof(float) * (size_t)c->in[i].n);
    }
    for (int i = 0; i < c->n_par; i++) {
        r->grads[n] = malloc(sizeof(float) * (size_t)c->par[i].n);
        memcpy(r->grads[n++], c->par[i].gf, sizeof(float) * (size_t)c->par[i].n);
    }
    r->n_grads = n;
}

static void result_free(f32_result *r, int n_out)
{
    for (int o = 0; o < n_out; o++) free(r->out[o]);
    for (int k = 0; k < r->n_grads; k++) free(r->grads[k]);
}

static arr *grad_arr(mcase *c, int k)
{
    return k < c->n_in ? &c->in[k] : &c->par[k - c->n_in];
}

/* f32 training run (forward saved + backward from zero gradients) under the current policy. */
static void f32_train(mf_ctx *ctx, mcase *c, f32_result *r)
{
    zero_grads(c);
    for (int i = 0; i < c->n_in; i++) arr_sync_f32(&c->in[i]);
    for (int i = 0; i < c->n_par; i++) arr_sync_f32(&c->par[i]);
    size_t before = mf_arena_used(ctx->arena);
    MF_TEST_OK(run_train(ctx, c, false));
    MF_TEST_TRUE(mf_arena_used(ctx->arena) == before, "%s: arena not back at its mark", c->name);
    result_take(r, c);
}

static void test_policies(mf_ctx *ctx, mcase *c)
{
    char what[200];
    const mf_policy saved_policy = ctx->policy;
    f32_result base;
    ctx->policy.chunk_size = 0;
    f32_train(ctx, c, &base);
    /* Inference (saved NULL) at every chunk size: bitwise the training path's output. */
    static const int64_t chunks[4] = {0, 1, 3, 64};
    size_t peak[4] = {0};
    for (int k = 0; k < 4; k++) {
        ctx->policy.chunk_size = chunks[k];
        size_t before = mf_arena_used(ctx->arena);
        mf_arena_reset_peak(ctx->arena);
        MF_TEST_OK(run_forward(ctx, c, false, false, NULL));
        peak[k] = mf_arena_high_water(ctx->arena) - before;
        MF_TEST_TRUE(mf_arena_used(ctx->arena) == before,
                     "%s inference chunk %lld: arena not back at its mark", c->name,
                     (long long)chunks[k]);
        for (int o = 0; o < c->n_out; o++) {
            snprintf(what, sizeof what, "%s inference chunk=%lld %s vs training path (bitwise)",
                     c->name, (long long)chunks[k], c->out[o].name);
            mf_check_bitwise_f32(what, c->out[o].f, base.out[o], c->out[o].n);
        }
        /* accumulate: out = initial + update. */
        float *init[2];
        for (int o = 0; o < c->n_out; o++) {
            init[o] = malloc(sizeof(float) * (size_t)c->out[o].n);
            for (int64_t i = 0; i < c->out[o].n; i++)
                init[o][i] = c->out[o].f[i] = (float)(0.25 * (double)(i % 7) - 0.5);
        }
        MF_TEST_OK(run_forward(ctx, c, false, true, NULL));
        for (int o = 0; o < c->n_out; o++) {
            float *want = malloc(sizeof(float) * (size_t)c->out[o].n);
            for (int64_t i = 0; i < c->out[o].n; i++) want[i] = init[o][i] + base.out[o][i];
            snprintf(what, sizeof what, "%s accumulate chunk=%lld %s = initial + update", c->name,
                     (long long)chunks[k], c->out[o].name);
            mf_check_close_f32(what, c->out[o].f, want, c->out[o].n, 1e-6, 1e-6);
            free(want), free(init[o]);
        }
        /* Training at this chunk size: bitwise the unchunked outputs and gradients. */
        if (chunks[k] != 0) {
            f32_result r;
            f32_train(ctx, c, &r);
            for (int o = 0; o < c->n_out; o++) {
                snprintf(what, sizeof what, "%s training chunk=%lld %s vs unchunked (bitwise)",
                         c->name, (long long)chunks[k], c->out[o].name);
                mf_check_bitwise_f32(what, r.out[o], base.out[o], c->out[o].n);
            }
            for (int g = 0; g < r.n_grads; g++) {
                snprintf(what, sizeof what, "%s training chunk=%lld d%s vs unchunked (bitwise)",
                         c->name, (long long)chunks[k], grad_arr(c, g)->name);
                mf_check_bitwise_f32(what, r.grads[g], base.grads[g], grad_arr(c, g)->n);
            }
            result_free(&r, c->n_out);
        }
    }
    printf("%s inference arena peak: chunk 0 %zu B, 1 %zu B, 3 %zu B, 64 %zu B\n", c->name, peak[0],
           peak[1], peak[2], peak[3]);
    if (c->kind == K_RECYCLING || c->kind == K_TEMPLATE_SINGLE)
        MF_TEST_TRUE(peak[1] < peak[0],
                     "%s: inference peak with chunk 1 (%zu B) not below unchunked (%zu B)", c->name,
                     peak[1], peak[0]);

    /* bf16 storage: only the template single embedder keeps an activation (its ReLU output, one
     * bf16 rounding of relative size <= 2^-9 per element entering dW and the ReLU input
     * gradient: MF_TOL_BF16); the others keep none (layer-norm statistics stay f32) and must be
     * bitwise unchanged. */
    ctx->policy.chunk_size = 0;
    ctx->policy.storage = MF_BF16;
    {
        f32_result r;
        f32_train(ctx, c, &r);
        for (int g = 0; g < r.n_grads; g++) {
            snprintf(what, sizeof what, "%s storage=bf16 d%s vs f32", c->name,
                     grad_arr(c, g)->name);
            if (c->kind == K_TEMPLATE_SINGLE)
                mf_check_close_f32(what, r.grads[g], base.grads[g], grad_arr(c, g)->n,
                                   MF_TOL_BF16_ATOL, MF_TOL_BF16_RTOL);
            else
                mf_check_bitwise_f32(what, r.grads[g], base.grads[g], grad_arr(c, g)->n);
        }
        result_free(&r, c->n_out);
    }
    ctx->policy.storage = MF_F32;
    /* bf16 compute (matrix-product inputs). */
    ctx->policy.compute = MF_BF16;
    MF_TEST_OK(run_forward(ctx, c, false, false, NULL));
    for (int o = 0; o < c->n_out; o++) {
        snprintf(what, sizeof what, "%s compute=bf16 %s vs f32", c->name, c->out[o].name);
        mf_check_close_f32(what, c->out[o].f, base.out[o], c->out[o].n, MF_TOL_BF16_ATOL,
                           MF_TOL_BF16_RTOL);
    }
    ctx->policy = saved_policy;
    result_free(&base, c->n_out);
}

/* ==== 1. feature construction ================================================================ */

static mf_tensor ti32(int32_t *p, int ndim, const int64_t *shape)
{
    return mf_tensor_make(p, MF_I32, MF_DEV_CPU, ndim, shape);
}

static void test_relpos(void)
{
    int32_t ri[4] = {0, 1, 5, 40}, bins[16];
    const int64_t N = 4;
    mf_tensor tr = ti32(ri, 1, &N), tb = ti32(bins, 2, (const int64_t[]){4, 4});
    MF_TEST_OK(mf_relpos_bins(&tb, &tr, 3));
    /* offset + r clipped to 0..2r: (0,1) -1 -> 2, (0,3) -40 -> 0, (3,0) +40 -> 6, (2,1) 4 -> 6. */
    MF_TEST_TRUE(bins[0 * 4 + 1] == 2 && bins[0 * 4 + 3] == 0 && bins[3 * 4 + 0] == 6 &&
                     bins[2 * 4 + 1] == 6 && bins[2 * 4 + 2] == 3 && bins[1 * 4 + 2] == 0,
                 "relpos bins wrong: %d %d %d %d %d %d", bins[1], bins[3], bins[12], bins[9],
                 bins[10], bins[6]);
    float oh[4 * 4 * 7];
    mf_tensor to = mf_tensor_f32(oh, 3, 4, 4, 7);
    MF_TEST_OK(mf_relpos_one_hot(&to, &tr, 3));
    bool ok = true;
    for (int p = 0; p < 16; p++)
        for (int k = 0; k < 7; k++) ok &= oh[p * 7 + k] == (k == bins[p] ? 1.0f : 0.0f);
    MF_TEST_TRUE(ok, "relpos one-hot disagrees with the bins");
    printf("relpos: clipping both ways and the one-hot checked (exact)\n");
}

static void test_dgram(void)
{
    /* 15 bins 3.25..20.75: lower edges 3.25 + 1.25 b, squared. */
    float p[7][3] = {{0, 0, 0}, {3.25f, 0, 0}, {0, 3.3f, 0},  {0, 0, 100},
                     {0, 0, 0}, {4, 3, 0},     {20.75f, 0, 0}};
    const int64_t N = 7;
    int32_t b[49], b64[49];
    mf_tensor tp = mf_tensor_f32(p, 2, 7, 3), tb = ti32(b, 2, (const int64_t[]){N, N});
    MF_TEST_OK(mf_dgram_bins(&tb, &tp, 15, 3.25, 20.75));
    /* (0,1): d = 3.25 exactly on the first edge: no bin; (0,2): bin 0; (0,3): 100 A, last bin;
     * (0,4): d = 0, no bin; (0,5): d = 5 (25 in (20.25, 33.06)): bin 1; (1,2): d^2 = 21.45: bin
     * 1; (0,6): on the last lower edge: no bin; (1,6): 17.5 (306.25 in (289, 333.06)): bin 11. */
    MF_TEST_TRUE(b[1] == -1 && b[2] == 0 && b[3] == 14 && b[4] == -1 && b[5] == 1 &&
                     b[7 + 2] == 1 && b[6] == -1 && b[7 + 6] == 11 && b[0] == -1 &&
                     b[3 * 7 + 0] == 14,
                 "dgram bins wrong: %d %d %d %d %d %d %d %d", b[1], b[2], b[3], b[4], b[5], b[9],
                 b[6], b[13]);
    double p64[21];
    for (int i = 0; i < 21; i++) p64[i] = ((float *)p)[i];
    mf_tensor tp64 = mf_tensor_make(p64, MF_F64, MF_DEV_CPU, 2, (const int64_t[]){7, 3});
    mf_tensor tb64 = ti32(b64, 2, (const int64_t[]){N, N});
    MF_TEST_OK(mf_dgram_bins(&tb64, &tp64, 15, 3.25, 20.75));
    MF_TEST_TRUE(!memcmp(b, b64, sizeof b), "dgram bins differ between f32 and f64 positions");
    /* The one-hot of rows 2..4 matches the bins. */
    float oh[3 * 7 * 15];
    mf_tensor to = mf_tensor_f32(oh, 3, 3, 7, 15);
    MF_TEST_OK(mf_dgram_one_hot(&to, 2, &tp, 15, 3.25, 20.75));
    bool ok = true;
    for (int r = 0; r < 3; r++)
        for (int j = 0; j < 7; j++)
            for (int k = 0; k < 15; k++)
                ok &= oh[(r * 7 + j) * 15 + k] == (k == b[(2 + r) * 7 + j] ? 1.0f : 0.0f);
    MF_TEST_TRUE(ok, "dgram one-hot rows 2..4 disagree with the bins");
    printf("dgram: edges exclusive, last bin open, f32 = f64 bins, one-hot rows (exact)\n");
}

static void test_pseudo_beta(void)
{
    int32_t aa[2] = {7, 0}; /* G, A */
    float pos[2 * 37 * 3], mask[2 * 37], pb[6], pbm[2];
    for (int i = 0; i < 2 * 37 * 3; i++) pos[i] = (float)i;
    for (int i = 0; i < 2 * 37; i++) mask[i] = (float)(i % 2);
    const int64_t N = 2;
    mf_tensor ta = ti32(aa, 1, &N), tpos = mf_tensor_f32(pos, 3, 2, 37, 3);
    mf_tensor tm = mf_tensor_f32(mask, 2, 2, 37), tpb = mf_tensor_f32(pb, 2, 2, 3);
    mf_tensor tpbm = mf_tensor_f32(pbm, 1, 2);
    MF_TEST_OK(mf_pseudo_beta(&tpb, &tpbm, &ta, &tpos, &tm));
    /* Glycine: CA (atom 1); alanine: CB (atom 3). */
    MF_TEST_TRUE(pb[0] == pos[1 * 3] && pb[2] == pos[1 * 3 + 2] && pb[3] == pos[(37 + 3) * 3] &&
                     pb[5] == pos[(37 + 3) * 3 + 2] && pbm[0] == mask[1] && pbm[1] == mask[40],
                 "pseudo-beta picks the wrong atom");
    printf("pseudo-beta: CA for glycine, CB otherwise (exact)\n");
}

static void test_extra_msa_and_angle_feat(void)
{
    int32_t msa[6] = {0, 22, 5, 21, 3, 7};
    float hd[6] = {0, 1, 0, 1, 1, 0}, dv[6] = {0.1f, 0.2f, 0.3f, 0.4f, 0.5f, 0.6f};
    float out[6 * 25];
    mf_tensor tm = ti32(msa, 2, (const int64_t[]){2, 3}), th = mf_tensor_f32(hd, 2, 2, 3);
    mf_tensor tdv = mf_tensor_f32(dv, 2, 2, 3), to = mf_tensor_f32(out, 3, 2, 3, 25);
    MF_TEST_OK(mf_extra_msa_feat(&to, &tm, &th, &tdv));
    bool ok = true;
    for (int k = 0; k < 6; k++) {
        for (int c = 0; c < 23; c++) ok &= out[k * 25 + c] == (c == msa[k] ? 1.0f : 0.0f);
        ok &= out[k * 25 + 23] == hd[k] && out[k * 25 + 24] == dv[k];
    }
    MF_TEST_TRUE(ok, "extra-MSA feature layout wrong");
    msa[4] = 23;
    MF_TEST_TRUE(mf_extra_msa_feat(&to, &tm, &th, &tdv) == MF_ERR_INVALID,
                 "extra_msa value 23 accepted");

    /* Angle feature of 2 templates x 2 residues. */
    int32_t taa[4] = {3, 21, 0, 7};
    float sc[4 * 14], alt[4 * 14], tmask[4 * 7], feat[4 * 57], rows[4];
    for (int i = 0; i < 56; i++) sc[i] = (float)i, alt[i] = (float)(100 + i);
    for (int i = 0; i < 28; i++) tmask[i] = (float)((i * 3) % 2);
    mf_tensor ta = ti32(taa, 2, (const int64_t[]){2, 2});
    mf_tensor tsc = mf_tensor_f32(sc, 4, 2, 2, 7, 2), talt = mf_tensor_f32(alt, 4, 2, 2, 7, 2);
    mf_tensor ttm = mf_tensor_f32(tmask, 3, 2, 2, 7), tf = mf_tensor_f32(feat, 3, 2, 2, 57);
    MF_TEST_OK(mf_template_angle_feat(&tf, &ta, &tsc, &talt, &ttm));
    ok = true;
    for (int k = 0; k < 4; k++) {
        for (int c = 0; c < 22; c++) ok &= feat[k * 57 + c] == (c == taa[k] ? 1.0f : 0.0f);
        for (int c = 0; c < 14; c++)
            ok &=
                feat[k * 57 + 22 + c] == sc[k * 14 + c] && feat[k * 57 + 36 + c] == alt[k * 14 + c];
        for (int c = 0; c < 7; c++) ok &= feat[k * 57 + 50 + c] == tmask[k * 7 + c];
    }
    MF_TEST_TRUE(ok, "template angle feature layout wrong");
    mf_tensor tr = mf_tensor_f32(rows, 2, 2, 2);
    MF_TEST_OK(mf_template_row_mask(&tr, &ttm));
    MF_TEST_TRUE(rows[0] == tmask[2] && rows[3] == tmask[3 * 7 + 2],
                 "template row mask is not the psi mask");
    printf("extra-MSA feature (25), angle feature (57), template row mask: layout (exact)\n");
}

/* A rotation from a unit quaternion. */
static void quat_rot(double R[9], double w, double x, double y, double z)
{
    double n = sqrt(w * w + x * x + y * y + z * z);
    w /= n, x /= n, y /= n, z /= n;
    R[0] = 1 - 2 * (y * y + z * z), R[1] = 2 * (x * y - w * z), R[2] = 2 * (x * z + w * y);
    R[3] = 2 * (x * y + w * z), R[4] = 1 - 2 * (x * x + z * z), R[5] = 2 * (y * z - w * x);
    R[6] = 2 * (x * z - w * y), R[7] = 2 * (y * z + w * x), R[8] = 1 - 2 * (x * x + y * y);
}

static void test_template_pair_feat(void)
{
    enum { N = 5, B = 6 };
    const int64_t F = MF_TEMPLATE_PAIR_FEAT_DIM(B);
    mf_template_pair_embedder_dims d = {.pair_feat_dim = F,
                                        .c_t = 4,
                                        .num_bins = B,
                                        .min_bin = 3.25,
                                        .max_bin = 15.0,
                                        .use_unit_vector = false};
    double pos[N * 37 * 3] = {0}, amask[N * 37], pb[N * 3], pbm[N], R[N][9], t[N][3];
    int32_t aa[N] = {0, 7, 21, 12, 3};
    mf_test_fill_normal_f64(pb, N * 3, 5, 6.0);
    for (int i = 0; i < N * 37; i++) amask[i] = 1.0;
    amask[3 * 37 + 2] = 0.0; /* residue 3 has no C: backbone mask 0 */
    for (int i = 0; i < N; i++) pbm[i] = i == 1 ? 0.0 : 1.0;
    /* Backbones: CA at t_i, C = t + R (1.52, 0, 0), N = t + R (-0.53, 1.36, 0): C on the local
     * +x axis and N in the xy plane with positive y, the frame of make_canonical_transform. */
    for (int i = 0; i < N; i++) {
        quat_rot(R[i], 1.0 + 0.3 * i, 0.2 * i - 0.3, 0.5 - 0.1 * i, 0.1 * i);
        for (int k = 0; k < 3; k++) t[i][k] = 2.0 * i + (k == 1 ? 1.5 * i : 0.3 * k);
        const double cl[3] = {1.52, 0, 0}, nl[3] = {-0.53, 1.36, 0};
        for (int k = 0; k < 3; k++) {
            double c = 0, n = 0;
            for (int m = 0; m < 3; m++) c += R[i][3 * k + m] * cl[m], n += R[i][3 * k + m] * nl[m];
            pos[(i * 37 + 1) * 3 + k] = t[i][k];
            pos[(i * 37 + 2) * 3 + k] = t[i][k] + c;
            pos[(i * 37 + 0) * 3 + k] = t[i][k] + n;
        }
    }
    mf_tensor tpb = mf_tensor_make(pb, MF_F64, MF_DEV_CPU, 2, (const int64_t[]){N, 3});
    mf_tensor tpbm = mf_tensor_make(pbm, MF_F64, MF_DEV_CPU, 1, (const int64_t[]){N});
    mf_tensor taa = ti32(aa, 1, (const int64_t[]){N});
    mf_tensor tpos = mf_tensor_make(pos, MF_F64, MF_DEV_CPU, 3, (const int64_t[]){N, 37, 3});
    mf_tensor tam = mf_tensor_make(amask, MF_F64, MF_DEV_CPU, 2, (const int64_t[]){N, 37});
    double *feat = calloc((size_t)(N * N * F), sizeof(double));
    double *part = calloc((size_t)(N * N * F), sizeof(double));
    mf_tensor tf = mf_tensor_make(feat, MF_F64, MF_DEV_CPU, 3, (const int64_t[]){N, N, F});
    int32_t bins[N * N];
    mf_tensor tb = ti32(bins, 2, (const int64_t[]){N, N});
    MF_TEST_OK(mf_dgram_bins(&tb, &tpb, B, d.min_bin, d.max_bin));
    for (int pass = 0; pass < 2; pass++) {
        d.use_unit_vector = pass == 1;
        MF_TEST_OK(mf_template_pair_feat(&tf, 0, &tpb, &tpbm, &taa, &tpos, &tam, &d));
        double *want = calloc((size_t)F, sizeof(double));
        double max_err = 0;
        bool ok = true;
        for (int i = 0; i < N; i++)
            for (int j = 0; j < N; j++) {
                memset(want, 0, sizeof(double) * (size_t)F);
                double bb = (i == 3 || j == 3) ? 0.0 : 1.0;
                if (bins[i * N + j] >= 0) want[bins[i * N + j]] = bb;
                want[B] = pbm[i] * pbm[j] * bb;
                want[B + 1 + aa[j]] = bb;
                want[B + 1 + 22 + aa[i]] = bb;
                if (d.use_unit_vector && bb != 0.0) {
                    double v[3], v2 = 0;
                    for (int a = 0; a < 3; a++) {
                        v[a] = 0;
                        for (int k = 0; k < 3; k++) v[a] += R[i][3 * k + a] * (t[j][k] - t[i][k]);
                        v2 += v[a] * v[a];
                    }
                    for (int a = 0; a < 3; a++) want[B + 45 + a] = v[a] / sqrt(1e-6 + v2);
                }
                want[F - 1] = bb;
                for (int c = 0; c < F; c++) {
                    double e = fabs(feat[(i * N + j) * F + c] - want[c]);
                    max_err = e > max_err ? e : max_err;
                    ok &= e <= 1e-9;
                }
            }
        free(want);
        MF_TEST_TRUE(ok, "template pair feature (unit vector %s): max error %.3e",
                     pass ? "on" : "off", max_err);
        printf("template pair feature [%d, %d, %lld], unit vector %s: layout, masks%s; max error "
               "%.2e (tol 1e-9)\n",
               N, N, (long long)F, pass ? "on" : "off (zeros)",
               pass ? ", CA_j in the frame of i from known rotations" : "", max_err);
    }
    /* Rows built in two slices equal the whole. */
    mf_tensor p1 = mf_tensor_make(part, MF_F64, MF_DEV_CPU, 3, (const int64_t[]){2, N, F});
    mf_tensor p2 =
        mf_tensor_make(part + 2 * N * F, MF_F64, MF_DEV_CPU, 3, (const int64_t[]){3, N, F});
    MF_TEST_OK(mf_template_pair_feat(&p1, 0, &tpb, &tpbm, &taa, &tpos, &tam, &d));
    MF_TEST_OK(mf_template_pair_feat(&p2, 2, &tpb, &tpbm, &taa, &tpos, &tam, &d));
    MF_TEST_TRUE(!memcmp(part, feat, sizeof(double) * (size_t)(N * N * F)),
                 "template pair feature rows 0..1 + 2..4 differ from the whole");
    /* Errors: a wrong channel count and rows beyond N. */
    mf_template_pair_embedder_dims bad = d;
    bad.pair_feat_dim = F + 1;
    MF_TEST_TRUE(mf_template_pair_feat(&tf, 0, &tpb, &tpbm, &taa, &tpos, &tam, &bad) ==
                     MF_ERR_INVALID,
                 "pair_feat_dim inconsistent with num_bins accepted");
    MF_TEST_TRUE(mf_template_pair_feat(&p2, 3, &tpb, &tpbm, &taa, &tpos, &tam, &d) ==
                     MF_ERR_INVALID,
                 "rows beyond N accepted");
    mf_clear_error();
    free(feat), free(part);
}

/* ==== 6. argument errors, NaN ================================================================ */

static void test_errors_and_nan(mf_ctx *ctx)
{
    mcase c;
    make_case(&c, K_EXTRA_MSA);
    for (int i = 0; i < c.n_par; i++) arr_sync_f32(&c.par[i]);
    arr_sync_f32(&c.in[0]);
    MF_TEST_OK(run_forward(ctx, &c, false, false, NULL));
    float *ref = malloc(sizeof(float) * (size_t)c.out[0].n);
    memcpy(ref, c.out[0].f, sizeof(float) * (size_t)c.out[0].n);
    c.in[0].f[4] = NAN;
    MF_TEST_OK(run_forward(ctx, &c, false, false, NULL));
    mf_compare_result r =
        mf_compare_maxrel(c.out[0].f, ref, c.out[0].n, c.out[0].n, NULL, 0, 1e-4, 0.0);
    MF_TEST_TRUE(!r.pass && r.nan, "a NaN feature did not reach the output or passed the metric");
    printf("NaN in the extra-MSA feature: output NaN, metric fails (as required)\n");
    free(ref);
    /* Shapes: a feature with the wrong channel count. */
    mf_tensor P[MAXP];
    for (int i = 0; i < c.n_par; i++) P[i] = tval(&c.par[i], false);
    mf_tensor x = mf_tensor_make(c.in[0].f, MF_F32, MF_DEV_CPU, 3, (const int64_t[]){5, 9, 7});
    mf_tensor y = tval(&c.out[0], false);
    MF_TEST_TRUE(mf_extra_msa_embedder_forward(ctx, &y, false, NULL, &x,
                                               (const mf_extra_msa_embedder_params *)(void *)P,
                                               &c.dex) == MF_ERR_INVALID,
                 "extra-MSA feature [5, 9, 7] accepted for 9 channels");
    printf("error: %s\n", mf_last_error());
    free_case(&c);
    /* Bins out of range. */
    make_case(&c, K_INPUT);
    for (int i = 0; i < c.n_par; i++) arr_sync_f32(&c.par[i]);
    for (int i = 0; i < c.n_in; i++) arr_sync_f32(&c.in[i]);
    c.bins[3] = 7; /* 2r + 1 = 7 rows */
    MF_TEST_TRUE(run_forward(ctx, &c, false, false, NULL) == MF_ERR_INVALID,
                 "relpos bin 7 accepted for 7 weight rows");
    printf("error: %s\n", mf_last_error());
    mf_clear_error();
    free_case(&c);
}

/* ==== 7. reference vectors =================================================================== */

static void test_reference_vectors(mf_ctx *ctx)
{
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/testvectors", mf_test_shared_dir());
    mf_verify_report rep;
    memset(&rep, 0, sizeof rep);
    size_t before = mf_arena_used(ctx->arena);
    MF_TEST_OK(mf_verify_embedders(ctx, dir, &rep));
    MF_TEST_TRUE(mf_arena_used(ctx->arena) == before, "verifier left arena allocations");
    MF_TEST_TRUE(rep.count == 25, "expected 25 compared datasets, got %d", rep.count);
    for (int i = 0; i < rep.count; i++) {
        const mf_compare_result *r = &rep.items[i].result;
        printf("  %-66s max|c-r|/max|r| = %.3e (tol %.0e) %s\n", rep.items[i].name, r->rel, r->tol,
               r->pass ? "ok" : "FAIL");
        MF_TEST_TRUE(r->pass, "%s: %.3e > %.0e%s", rep.items[i].name, r->rel, r->tol,
                     r->nan ? " (NaN)" : "");
    }
}

int main(void)
{
    mf_ctx ctx;
    mf_arena arena;
    if (mf_test_ctx_cpu(&ctx, &arena, (size_t)256 << 20) != MF_OK) {
        fprintf(stderr, "context: %s\n", mf_last_error());
        return 1;
    }
    test_relpos();
    test_dgram();
    test_pseudo_beta();
    test_extra_msa_and_angle_feat();
    test_template_pair_feat();
    for (int k = 0; k < NKIND; k++) {
        mcase c;
        make_case(&c, k);
        test_f64_oracle_and_gradients(&ctx, &c);
        test_f32_vs_f64(&ctx, &c);
        test_policies(&ctx, &c);
        free_case(&c);
    }
    test_errors_and_nan(&ctx);
    test_reference_vectors(&ctx);
    mf_test_ctx_free(&ctx, &arena);
    return mf_test_finish("test_embedders");
}
