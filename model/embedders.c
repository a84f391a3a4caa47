/* The embedder modules (see embedders.h): parameter tables, forward and backward from core/ops. */
#include "model/embedders.h"

#include <stdio.h>
#include <string.h>

#include "core/ops.h"
#include "memopt/saved.h"

/* ---- parameter tables ----------------------------------------------------------------------- */

int mf_input_embedder_param_specs(const mf_input_embedder_dims *d, mf_param_spec *out)
{
    const mf_param_spec specs[] = {
#define MF_PARAM MF_PARAM_SPEC
#include "model/embedders_input.def"
#undef MF_PARAM
    };
    if (out) memcpy(out, specs, sizeof specs);
    return (int)(sizeof specs / sizeof specs[0]);
}

int mf_recycling_embedder_param_specs(const mf_recycling_embedder_dims *d, mf_param_spec *out)
{
    const mf_param_spec specs[] = {
#define MF_PARAM MF_PARAM_SPEC
#include "model/embedders_recycling.def"
#undef MF_PARAM
    };
    if (out) memcpy(out, specs, sizeof specs);
    return (int)(sizeof specs / sizeof specs[0]);
}

int mf_extra_msa_embedder_param_specs(const mf_extra_msa_embedder_dims *d, mf_param_spec *out)
{
    const mf_param_spec specs[] = {
#define MF_PARAM MF_PARAM_SPEC
#include "model/embedders_extra_msa.def"
#undef MF_PARAM
    };
    if (out) memcpy(out, specs, sizeof specs);
    return (int)(sizeof specs / sizeof specs[0]);
}

int mf_template_single_embedder_param_specs(const mf_template_single_embedder_dims *d,
                                            mf_param_spec *out)
{
    const mf_param_spec specs[] = {
#define MF_PARAM MF_PARAM_SPEC
#include "model/embedders_template_single.def"
#undef MF_PARAM
    };
    if (out) memcpy(out, specs, sizeof specs);
    return (int)(sizeof specs / sizeof specs[0]);
}

int mf_template_pair_embedder_param_specs(const mf_template_pair_embedder_dims *d,
                                          mf_param_spec *out)
{
    const mf_param_spec specs[] = {
#define MF_PARAM MF_PARAM_SPEC
#include "model/embedders_template_pair.def"
#undef MF_PARAM
    };
    if (out) memcpy(out, specs, sizeof specs);
    return (int)(sizeof specs / sizeof specs[0]);
}

/* ---- dims from the configuration ------------------------------------------------------------ */

mf_input_embedder_dims mf_input_embedder_dims_from_config(const mf_config *cfg)
{
    return (mf_input_embedder_dims){
        .target_feat_dim = cfg->input_embedder.target_feat_dim,
        .msa_feat_dim = cfg->input_embedder.msa_feat_dim,
        .c_m = cfg->channels.c_m,
        .c_z = cfg->channels.c_z,
        .max_relative_feature = cfg->input_embedder.max_relative_feature,
    };
}

mf_recycling_embedder_dims mf_recycling_embedder_dims_from_config(const mf_config *cfg)
{
    return (mf_recycling_embedder_dims){
        .c_m = cfg->channels.c_m,
        .c_z = cfg->channels.c_z,
        .num_bins = cfg->recycling.num_bins,
        .min_bin = cfg->recycling.min_bin,
        .max_bin = cfg->recycling.max_bin,
    };
}

mf_extra_msa_embedder_dims mf_extra_msa_embedder_dims_from_config(const mf_config *cfg)
{
    return (mf_extra_msa_embedder_dims){
        .extra_msa_feat_dim = cfg->input_embedder.extra_msa_feat_dim,
        .c_e = cfg->channels.c_e,
    };
}

mf_template_single_embedder_dims mf_template_single_embedder_dims_from_config(const mf_config *cfg)
{
    return (mf_template_single_embedder_dims){
        .angle_feat_dim = cfg->template_embedding.angle_feat_dim,
        .c_m = cfg->channels.c_m,
    };
}

mf_template_pair_embedder_dims mf_template_pair_embedder_dims_from_config(const mf_config *cfg)
{
    return (mf_template_pair_embedder_dims){
        .pair_feat_dim = cfg->template_embedding.pair_feat_dim,
        .c_t = cfg->channels.c_t,
        .num_bins = cfg->template_embedding.dgram_num_bins,
        .min_bin = cfg->template_embedding.dgram_min_bin,
        .max_bin = cfg->template_embedding.dgram_max_bin,
        .use_unit_vector = cfg->template_embedding.use_unit_vector,
    };
}

mf_status mf_recycling_dgram_bins(mf_tensor *bins, const mf_tensor *prev_pseudo_beta,
                                  const mf_recycling_embedder_dims *d)
{
    MF_REQUIRE(d, "recycling dgram: dims missing");
    return mf_dgram_bins(bins, prev_pseudo_beta, d->num_bins, d->min_bin, d->max_bin);
}

/* ---- checks --------------------------------------------------------------------------------- */

static mf_tensor *present(mf_tensor *t)
{
    return t && t->data ? t : NULL;
}

/* A real tensor (f32 or f64) of the given shape on the context's device. */
static mf_status check_real(const mf_ctx *ctx, const mf_tensor *t, const char *name, mf_dtype dt,
                            int ndim, const int64_t *shape)
{
    MF_REQUIRE(t && t->data, "%s is missing", name);
    char b[96];
    bool ok = t->dtype == dt && t->device == ctx->device && t->ndim == ndim;
    for (int k = 0; ok && k < ndim; k++) ok = t->shape[k] == shape[k];
    if (!ok) {
        mf_tensor want = mf_tensor_make(NULL, dt, ctx->device, ndim, shape);
        char e[96];
        return MF_ERROR(
            MF_ERR_INVALID, "%s is %s on %s, expected %s on %s", name,
            mf_tensor_describe(t, b, sizeof b), t->device == MF_DEV_CUDA ? "cuda" : "cpu",
            mf_tensor_describe(&want, e, sizeof e), ctx->device == MF_DEV_CUDA ? "cuda" : "cpu");
    }
    return MF_OK;
}

/* The input's dtype decides the run's precision: f32, or f64 for the finite-difference oracle. */
static mf_status run_dtype(const mf_tensor *x, const char *name, mf_dtype *dt)
{
    MF_REQUIRE(x && x->data, "%s is missing", name);
    MF_REQUIRE(x->dtype == MF_F32 || x->dtype == MF_F64, "%s must be f32 or f64 (is %s)", name,
               mf_dtype_name(x->dtype));
    *dt = x->dtype;
    return MF_OK;
}

/* Bin indices: i32 with n elements (host or the context's device, as mf_gather_rows takes). */
static mf_status check_bins(const mf_tensor *t, const char *name, int64_t n)
{
    MF_REQUIRE(t && t->data, "%s is missing", name);
    char b[96];
    if (t->dtype != MF_I32 || mf_tensor_numel(t) != n)
        return MF_ERROR(MF_ERR_INVALID, "%s is %s: expected i32 with %lld elements", name,
                        mf_tensor_describe(t, b, sizeof b), (long long)n);
    return MF_OK;
}

static mf_status check_params(const mf_ctx *ctx, const char *module, const mf_param_spec *specs,
                              int n, const mf_tensor *params, mf_dtype dt)
{
    MF_REQUIRE(params, "%s: parameters missing", module);
    for (int i = 0; i < n; i++) {
        char name[256];
        snprintf(name, sizeof name, "%s parameter %s", module, specs[i].name);
        MF_TRY(check_real(ctx, &params[i], name, dt, specs[i].ndim, specs[i].shape));
    }
    return MF_OK;
}

static mf_status check_dims_positive(const char *module, const int64_t *v, int n)
{
    for (int i = 0; i < n; i++)
        MF_REQUIRE(v[i] > 0, "%s: dimension %d is %lld, must be positive", module, i,
                   (long long)v[i]);
    return MF_OK;
}

/* Slice length of dim-0 slices: the policy's chunk size at inference (0 = everything at once). */
static int64_t slice_rows(const mf_ctx *ctx, int64_t rows)
{
    int64_t c = ctx->policy.chunk_size;
    return c > 0 && c < rows ? c : rows;
}

/* A 1-D view of elements [start, start + count) of a contiguous i32 tensor. */
static mf_tensor i32_view(const mf_tensor *t, int64_t start, int64_t count)
{
    return mf_tensor_make((int32_t *)t->data + start, MF_I32, t->device, 1, &count);
}

/* t viewed with a new shape (same element count, checked by the caller's shapes). */
static mf_tensor view(const mf_tensor *t, int ndim, const int64_t *shape)
{
    return mf_tensor_make(t->data, t->dtype, t->device, ndim, shape);
}

static mf_status scratch(mf_ctx *ctx, mf_tensor *out, mf_dtype dt, int ndim, const int64_t *shape,
                         const char *label)
{
    return mf_arena_tensor(ctx->arena, out, dt, ndim, shape, label);
}

static mf_status scratch_zeros(mf_ctx *ctx, mf_tensor *out, mf_dtype dt, int ndim,
                               const int64_t *shape, const char *label)
{
    return mf_arena_zeros(ctx->arena, out, dt, ndim, shape, label);
}

/* db [C] += sum over rows of dy [rows, C] (the bias gradient of a gathered one-hot linear). */
static mf_status bias_grad_rows(mf_ctx *ctx, mf_tensor *db, const mf_tensor *dy, int64_t rows,
                                int64_t C)
{
    mf_tensor sum;
    MF_TRY(scratch(ctx, &sum, dy->dtype, 2, (const int64_t[]){1, C}, "embedders.bias_grad"));
    mf_tensor dy3 = view(dy, 3, (const int64_t[]){1, rows, C});
    MF_TRY(mf_sum_axis(ctx, &sum, &dy3, 1.0f));
    mf_tensor sum1 = view(&sum, 1, &C);
    return mf_add(ctx, db, db, &sum1);
}

/* ==== input embedder ========================================================================= */

mf_status mf_input_embedder_forward(mf_ctx *ctx, mf_tensor *msa, mf_tensor *pair, bool accumulate,
                                    mf_input_embedder_saved *saved, const mf_tensor *target_feat,
                                    const mf_tensor *msa_feat, const mf_tensor *relpos_bins,
                                    const mf_input_embedder_params *p,
                                    const mf_input_embedder_dims *d)
{
    const char *mod = "input embedder";
    MF_REQUIRE(ctx && ctx->arena && d, "%s: ctx, arena and dims required", mod);
    MF_TRY(check_dims_positive(mod,
                               (const int64_t[]){d->target_feat_dim, d->msa_feat_dim, d->c_m,
                                                 d->c_z, d->max_relative_feature},
                               5));
    mf_dtype dt;
    MF_TRY(run_dtype(target_feat, "input embedder target_feat", &dt));
    MF_REQUIRE(target_feat->ndim == 2 && msa_feat && msa_feat->ndim == 3,
               "%s: target_feat must be [N, F] and msa_feat [S, N, F]", mod);
    const int64_t N = target_feat->shape[0], S = msa_feat->shape[0];
    const int64_t Cm = d->c_m, Cz = d->c_z;
    MF_TRY(check_real(ctx, target_feat, "target_feat", dt, 2,
                      (const int64_t[]){N, d->target_feat_dim}));
    MF_TRY(check_real(ctx, msa_feat, "msa_feat", dt, 3, (const int64_t[]){S, N, d->msa_feat_dim}));
    MF_TRY(check_bins(relpos_bins, "relpos_bins [N, N]", N * N));
    MF_TRY(check_real(ctx, msa, "input embedder msa", dt, 3, (const int64_t[]){S, N, Cm}));
    MF_TRY(check_real(ctx, pair, "input embedder pair", dt, 3, (const int64_t[]){N, N, Cz}));
    mf_param_spec specs[MF_INPUT_EMBEDDER_NUM_PARAMS];
    int np = mf_input_embedder_param_specs(d, specs);
    MF_TRY(check_params(ctx, mod, specs, np, MF_PARAMS_AS_ARRAY(p), dt));

    mf_arena_mark_t mark = mf_arena_mark(ctx->arena);
    mf_status st = MF_OK;
    mf_tensor tf_m, left, right, tmp = {0};
    /* Alg. 3 lines 1-2: a = Linear(f^target) for the MSA and the pair's row/column terms. */
    MF_TRY_GOTO(scratch(ctx, &tf_m, dt, 2, (const int64_t[]){N, Cm}, "input_embedder.tf_m"));
    MF_TRY_GOTO(scratch(ctx, &left, dt, 2, (const int64_t[]){N, Cz}, "input_embedder.left"));
    MF_TRY_GOTO(scratch(ctx, &right, dt, 2, (const int64_t[]){N, Cz}, "input_embedder.right"));
    MF_TRY_GOTO(mf_linear_forward(ctx, &tf_m, target_feat, &p->preprocess_1d_weights,
                                  &p->preprocess_1d_bias, false));
    MF_TRY_GOTO(mf_linear_forward(ctx, &left, target_feat, &p->left_single_weights,
                                  &p->left_single_bias, false));
    MF_TRY_GOTO(mf_linear_forward(ctx, &right, target_feat, &p->right_single_weights,
                                  &p->right_single_bias, false));

    /* Alg. 3 line 5: m_si = Linear(f^msa_si) + a_i, over slices of MSA rows. */
    const int64_t cs = slice_rows(ctx, S);
    if (accumulate)
        MF_TRY_GOTO(scratch(ctx, &tmp, dt, 3, (const int64_t[]){cs, N, Cm}, "input_embedder.msa"));
    for (int64_t s0 = 0; s0 < S; s0 += cs) {
        const int64_t c = S - s0 < cs ? S - s0 : cs;
        mf_tensor x = mf_tensor_slice0(msa_feat, s0, c), y = mf_tensor_slice0(msa, s0, c);
        mf_tensor t = accumulate ? mf_tensor_slice0(&tmp, 0, c) : y;
        MF_TRY_GOTO(mf_linear_forward(ctx, &t, &x, &p->preprocess_msa_weights,
                                      &p->preprocess_msa_bias, false));
        MF_TRY_GOTO(mf_add(ctx, &t, &t, &tf_m));
        if (accumulate) MF_TRY_GOTO(mf_add(ctx, &y, &y, &t));
    }

    /* Alg. 3 line 3-4 and Alg. 4: z_ij = a_i + b_j + Linear(one_hot(relpos_ij)), the one-hot
     * linear as a row gather of its weights. */
    const int64_t ci = slice_rows(ctx, N);
    if (accumulate)
        MF_TRY_GOTO(scratch(ctx, &tmp, dt, 3, (const int64_t[]){ci, N, Cz}, "input_embedder.pair"));
    for (int64_t i0 = 0; i0 < N; i0 += ci) {
        const int64_t c = N - i0 < ci ? N - i0 : ci;
        mf_tensor y = mf_tensor_slice0(pair, i0, c);
        mf_tensor t = accumulate ? mf_tensor_slice0(&tmp, 0, c) : y;
        mf_tensor t2 = view(&t, 2, (const int64_t[]){c * N, Cz});
        mf_tensor idx = i32_view(relpos_bins, i0 * N, c * N);
        MF_TRY_GOTO(mf_gather_rows(ctx, &t2, &p->pair_activiations_weights, &idx));
        MF_TRY_GOTO(mf_add(ctx, &t, &t, &p->pair_activiations_bias));
        MF_TRY_GOTO(mf_add(ctx, &t, &t, &right));
        for (int64_t r = 0; r < c; r++) {
            mf_tensor row = mf_tensor_slice0(&t, r, 1), l = mf_tensor_slice0(&left, i0 + r, 1);
            MF_TRY_GOTO(mf_add(ctx, &row, &row, &l));
        }
        if (accumulate) MF_TRY_GOTO(mf_add(ctx, &y, &y, &t));
    }
    if (saved) saved->forward_done = true;
cleanup:
    mf_arena_release(ctx->arena, mark);
    return st;
}

mf_status mf_input_embedder_backward(mf_ctx *ctx, mf_tensor *dtarget_feat, mf_tensor *dmsa_feat,
                                     mf_input_embedder_params *dp, const mf_tensor *dmsa,
                                     const mf_tensor *dpair, const mf_input_embedder_saved *saved,
                                     const mf_tensor *target_feat, const mf_tensor *msa_feat,
                                     const mf_tensor *relpos_bins,
                                     const mf_input_embedder_params *p,
                                     const mf_input_embedder_dims *d)
{
    const char *mod = "input embedder backward";
    MF_REQUIRE(ctx && ctx->arena && d, "%s: ctx, arena and dims required", mod);
    MF_REQUIRE(!saved || saved->forward_done, "%s: the forward pass did not run", mod);
    mf_dtype dt;
    MF_TRY(run_dtype(target_feat, "input embedder target_feat", &dt));
    MF_REQUIRE(target_feat->ndim == 2 && msa_feat && msa_feat->ndim == 3,
               "%s: target_feat must be [N, F] and msa_feat [S, N, F]", mod);
    const int64_t N = target_feat->shape[0], S = msa_feat->shape[0];
    const int64_t Cm = d->c_m, Cz = d->c_z;
    MF_TRY(check_real(ctx, target_feat, "target_feat", dt, 2,
                      (const int64_t[]){N, d->target_feat_dim}));
    MF_TRY(check_real(ctx, msa_feat, "msa_feat", dt, 3, (const int64_t[]){S, N, d->msa_feat_dim}));
    MF_TRY(check_bins(relpos_bins, "relpos_bins [N, N]", N * N));
    if (dmsa)
        MF_TRY(check_real(ctx, dmsa, "input embedder dmsa", dt, 3, (const int64_t[]){S, N, Cm}));
    if (dpair)
        MF_TRY(check_real(ctx, dpair, "input embedder dpair", dt, 3, (const int64_t[]){N, N, Cz}));
    mf_param_spec specs[MF_INPUT_EMBEDDER_NUM_PARAMS];
    int np = mf_input_embedder_param_specs(d, specs);
    MF_TRY(check_params(ctx, mod, specs, np, MF_PARAMS_AS_ARRAY(p), dt));
    dtarget_feat = present(dtarget_feat);
    dmsa_feat = present(dmsa_feat);
    mf_input_embedder_params none = {0};
    mf_input_embedder_params *g = dp ? dp : &none;

    mf_arena_mark_t mark = mf_arena_mark(ctx->arena);
    mf_status st = MF_OK;
    if (dmsa) {
        MF_TRY_GOTO(mf_linear_backward(ctx, dmsa_feat, present(&g->preprocess_msa_weights),
                                       present(&g->preprocess_msa_bias), dmsa, msa_feat,
                                       &p->preprocess_msa_weights));
        if (dtarget_feat || present(&g->preprocess_1d_weights) || present(&g->preprocess_1d_bias)) {
            /* a_i is broadcast over the MSA rows: its gradient sums them. */
            mf_tensor dtf_m;
            MF_TRY_GOTO(
                scratch(ctx, &dtf_m, dt, 2, (const int64_t[]){1, N * Cm}, "input_embedder.dtf_m"));
            mf_tensor d3 = view(dmsa, 3, (const int64_t[]){1, S, N * Cm});
            MF_TRY_GOTO(mf_sum_axis(ctx, &dtf_m, &d3, 1.0f));
            mf_tensor dtf_m2 = view(&dtf_m, 2, (const int64_t[]){N, Cm});
            MF_TRY_GOTO(mf_linear_backward(ctx, dtarget_feat, present(&g->preprocess_1d_weights),
                                           present(&g->preprocess_1d_bias), &dtf_m2, target_feat,
                                           &p->preprocess_1d_weights));
        }
    }
    if (dpair) {
        mf_tensor dz2 = view(dpair, 2, (const int64_t[]){N * N, Cz});
        if (present(&g->pair_activiations_weights)) {
            mf_tensor idx = i32_view(relpos_bins, 0, N * N);
            MF_TRY_GOTO(mf_scatter_add_rows(ctx, &g->pair_activiations_weights, &dz2, &idx));
        }
        if (present(&g->pair_activiations_bias))
            MF_TRY_GOTO(bias_grad_rows(ctx, &g->pair_activiations_bias, &dz2, N * N, Cz));
        /* a_i (left) is broadcast over j, b_j (right) over i. */
        if (dtarget_feat || present(&g->left_single_weights) || present(&g->left_single_bias)) {
            mf_tensor dl;
            MF_TRY_GOTO(scratch(ctx, &dl, dt, 2, (const int64_t[]){N, Cz}, "input_embedder.dleft"));
            MF_TRY_GOTO(mf_sum_axis(ctx, &dl, dpair, 1.0f));
            MF_TRY_GOTO(mf_linear_backward(ctx, dtarget_feat, present(&g->left_single_weights),
                                           present(&g->left_single_bias), &dl, target_feat,
                                           &p->left_single_weights));
        }
        if (dtarget_feat || present(&g->right_single_weights) || present(&g->right_single_bias)) {
            mf_tensor dr;
            MF_TRY_GOTO(
                scratch(ctx, &dr, dt, 2, (const int64_t[]){1, N * Cz}, "input_embedder.dright"));
            mf_tensor d3 = view(dpair, 3, (const int64_t[]){1, N, N * Cz});
            MF_TRY_GOTO(mf_sum_axis(ctx, &dr, &d3, 1.0f));
            mf_tensor dr2 = view(&dr, 2, (const int64_t[]){N, Cz});
            MF_TRY_GOTO(mf_linear_backward(ctx, dtarget_feat, present(&g->right_single_weights),
                                           present(&g->right_single_bias), &dr2, target_feat,
                                           &p->right_single_weights));
        }
    }
cleanup:
    mf_arena_release(ctx->arena, mark);
    return st;
}

/* ==== recycling embedder ===================================================================== */

static mf_dtype stats_dtype(mf_dtype dt)
{
    return dt == MF_F64 ? MF_F64 : MF_F32;
}

static mf_status recycling_check(mf_ctx *ctx, const char *mod, const mf_tensor *m1_prev,
                                 const mf_tensor *z_prev, const mf_tensor *dgram_bins,
                                 const mf_recycling_embedder_params *p,
                                 const mf_recycling_embedder_dims *d, mf_dtype *dt, int64_t *N)
{
    MF_REQUIRE(ctx && ctx->arena && d, "%s: ctx, arena and dims required", mod);
    MF_TRY(check_dims_positive(mod, (const int64_t[]){d->c_m, d->c_z, d->num_bins}, 3));
    MF_TRY(run_dtype(m1_prev, "recycling m1_prev", dt));
    MF_REQUIRE(m1_prev->ndim == 2, "%s: m1_prev must be [N, c_m]", mod);
    *N = m1_prev->shape[0];
    MF_TRY(check_real(ctx, m1_prev, "m1_prev", *dt, 2, (const int64_t[]){*N, d->c_m}));
    MF_TRY(check_real(ctx, z_prev, "z_prev", *dt, 3, (const int64_t[]){*N, *N, d->c_z}));
    MF_TRY(check_bins(dgram_bins, "recycling dgram_bins [N, N]", *N * *N));
    mf_param_spec specs[MF_RECYCLING_EMBEDDER_NUM_PARAMS];
    int np = mf_recycling_embedder_param_specs(d, specs);
    return check_params(ctx, mod, specs, np, MF_PARAMS_AS_ARRAY(p), *dt);
}

mf_status mf_recycling_embedder_forward(mf_ctx *ctx, mf_tensor *m1_update, mf_tensor *z_update,
                                        bool accumulate, mf_recycling_embedder_saved *saved,
                                        const mf_tensor *m1_prev, const mf_tensor *z_prev,
                                        const mf_tensor *dgram_bins,
                                        const mf_recycling_embedder_params *p,
                                        const mf_recycling_embedder_dims *d)
{
    const char *mod = "recycling embedder";
    mf_dtype dt;
    int64_t N;
    MF_TRY(recycling_check(ctx, mod, m1_prev, z_prev, dgram_bins, p, d, &dt, &N));
    const int64_t Cm = d->c_m, Cz = d->c_z;
    MF_TRY(check_real(ctx, m1_update, "recycling m1_update", dt, 2, (const int64_t[]){N, Cm}));
    MF_TRY(check_real(ctx, z_update, "recycling z_update", dt, 3, (const int64_t[]){N, N, Cz}));
    MF_REQUIRE(!saved || (z_update->data != z_prev->data && m1_update->data != m1_prev->data),
               "%s: outputs may alias the inputs only at inference (the backward reads them)", mod);
    const mf_dtype sdt = stats_dtype(dt);
    mf_recycling_embedder_saved sv = {0};
    mf_arena_mark_t outer = mf_arena_mark(ctx->arena);
    mf_status st = MF_OK;
    if (saved) {
        MF_TRY_GOTO(scratch(ctx, &sv.m1_mean, sdt, 1, &N, "recycling.m1_mean"));
        MF_TRY_GOTO(scratch(ctx, &sv.m1_rstd, sdt, 1, &N, "recycling.m1_rstd"));
        const int64_t NN = N * N;
        MF_TRY_GOTO(scratch(ctx, &sv.z_mean, sdt, 1, &NN, "recycling.z_mean"));
        MF_TRY_GOTO(scratch(ctx, &sv.z_rstd, sdt, 1, &NN, "recycling.z_rstd"));
    }
    mf_arena_mark_t mark = mf_arena_mark(ctx->arena);
    mf_tensor tmp;
    /* Alg. 32 line 1 (AF2: prev_msa_first_row_norm, added to the first MSA row). */
    if (accumulate) {
        MF_TRY_GOTO(scratch(ctx, &tmp, dt, 2, (const int64_t[]){N, Cm}, "recycling.m1"));
        MF_TRY_GOTO(mf_layer_norm_forward(ctx, &tmp, saved ? &sv.m1_mean : NULL,
                                          saved ? &sv.m1_rstd : NULL, m1_prev,
                                          &p->prev_msa_first_row_norm_scale,
                                          &p->prev_msa_first_row_norm_offset, MF_EMBEDDER_LN_EPS));
        MF_TRY_GOTO(mf_add(ctx, m1_update, m1_update, &tmp));
    } else {
        MF_TRY_GOTO(mf_layer_norm_forward(ctx, m1_update, saved ? &sv.m1_mean : NULL,
                                          saved ? &sv.m1_rstd : NULL, m1_prev,
                                          &p->prev_msa_first_row_norm_scale,
                                          &p->prev_msa_first_row_norm_offset, MF_EMBEDDER_LN_EPS));
    }
    mf_arena_release(ctx->arena, mark);

    /* Alg. 32 lines 2-4: LayerNorm(z_prev) + Linear(one_hot(dgram)), the one-hot linear as a row
     * gather (bin -1: no bin, a zero row); slices of rows i. */
    const int64_t ci = slice_rows(ctx, N);
    MF_TRY_GOTO(scratch(ctx, &tmp, dt, 3, (const int64_t[]){ci, N, Cz}, "recycling.z"));
    for (int64_t i0 = 0; i0 < N; i0 += ci) {
        const int64_t c = N - i0 < ci ? N - i0 : ci;
        mf_tensor x = mf_tensor_slice0(z_prev, i0, c), y = mf_tensor_slice0(z_update, i0, c);
        mf_tensor t = mf_tensor_slice0(&tmp, 0, c);
        mf_tensor mean = saved ? mf_tensor_slice0(&sv.z_mean, i0 * N, c * N) : (mf_tensor){0};
        mf_tensor rstd = saved ? mf_tensor_slice0(&sv.z_rstd, i0 * N, c * N) : (mf_tensor){0};
        mf_tensor *ln_out = accumulate ? &t : &y;
        MF_TRY_GOTO(mf_layer_norm_forward(ctx, ln_out, saved ? &mean : NULL, saved ? &rstd : NULL,
                                          &x, &p->prev_pair_norm_scale, &p->prev_pair_norm_offset,
                                          MF_EMBEDDER_LN_EPS));
        if (accumulate) MF_TRY_GOTO(mf_add(ctx, &y, &y, &t));
        mf_tensor t2 = view(&t, 2, (const int64_t[]){c * N, Cz});
        mf_tensor idx = i32_view(dgram_bins, i0 * N, c * N);
        MF_TRY_GOTO(mf_gather_rows(ctx, &t2, &p->prev_pos_linear_weights, &idx));
        MF_TRY_GOTO(mf_add(ctx, &y, &y, &t));
        MF_TRY_GOTO(mf_add(ctx, &y, &y, &p->prev_pos_linear_bias));
    }
    mf_arena_release(ctx->arena, mark);
    if (saved) *saved = sv;
    return MF_OK;
cleanup:
    mf_arena_release(ctx->arena, outer);
    return st;
}

mf_status mf_recycling_embedder_backward(mf_ctx *ctx, mf_tensor *dm1_prev, mf_tensor *dz_prev,
                                         mf_recycling_embedder_params *dp,
                                         const mf_tensor *dm1_update, const mf_tensor *dz_update,
                                         const mf_recycling_embedder_saved *saved,
                                         const mf_tensor *m1_prev, const mf_tensor *z_prev,
                                         const mf_tensor *dgram_bins,
                                         const mf_recycling_embedder_params *p,
                                         const mf_recycling_embedder_dims *d)
{
    const char *mod = "recycling embedder backward";
    mf_dtype dt;
    int64_t N;
    MF_TRY(recycling_check(ctx, mod, m1_prev, z_prev, dgram_bins, p, d, &dt, &N));
    MF_REQUIRE(saved && saved->m1_mean.data && saved->z_mean.data,
               "%s: the forward's saved statistics are required", mod);
    const int64_t Cm = d->c_m, Cz = d->c_z;
    if (dm1_update)
        MF_TRY(
            check_real(ctx, dm1_update, "recycling dm1_update", dt, 2, (const int64_t[]){N, Cm}));
    if (dz_update)
        MF_TRY(
            check_real(ctx, dz_update, "recycling dz_update", dt, 3, (const int64_t[]){N, N, Cz}));
    mf_recycling_embedder_params none = {0};
    mf_recycling_embedder_params *g = dp ? dp : &none;
    dm1_prev = present(dm1_prev);
    dz_prev = present(dz_prev);
    mf_arena_mark_t mark = mf_arena_mark(ctx->arena);
    mf_status st = MF_OK;
    if (dm1_update && (dm1_prev || present(&g->prev_msa_first_row_norm_scale) ||
                       present(&g->prev_msa_first_row_norm_offset)))
        MF_TRY_GOTO(mf_layer_norm_backward(
            ctx, dm1_prev, present(&g->prev_msa_first_row_norm_scale),
            present(&g->prev_msa_first_row_norm_offset), dm1_update, m1_prev, &saved->m1_mean,
            &saved->m1_rstd, &p->prev_msa_first_row_norm_scale));
    if (dz_update) {
        if (dz_prev || present(&g->prev_pair_norm_scale) || present(&g->prev_pair_norm_offset))
            MF_TRY_GOTO(mf_layer_norm_backward(
                ctx, dz_prev, present(&g->prev_pair_norm_scale), present(&g->prev_pair_norm_offset),
                dz_update, z_prev, &saved->z_mean, &saved->z_rstd, &p->prev_pair_norm_scale));
        mf_tensor dz2 = view(dz_update, 2, (const int64_t[]){N * N, Cz});
        if (present(&g->prev_pos_linear_weights)) {
            mf_tensor idx = i32_view(dgram_bins, 0, N * N);
            MF_TRY_GOTO(mf_scatter_add_rows(ctx, &g->prev_pos_linear_weights, &dz2, &idx));
        }
        if (present(&g->prev_pos_linear_bias))
            MF_TRY_GOTO(bias_grad_rows(ctx, &g->prev_pos_linear_bias, &dz2, N * N, Cz));
    }
cleanup:
    mf_arena_release(ctx->arena, mark);
    return st;
}

/* ==== single linear embedders (extra MSA, template pair) ===================================== */

/* out [..., C_out] (+)= x [..., F] @ w + b over dim-0 slices. */
static mf_status linear_embedder_forward(mf_ctx *ctx, const char *mod, mf_tensor *out,
                                         bool accumulate, const mf_tensor *x, const mf_tensor *w,
                                         const mf_tensor *b, int64_t F, int64_t C)
{
    MF_REQUIRE(ctx && ctx->arena, "%s: ctx and arena required", mod);
    mf_dtype dt;
    MF_TRY(run_dtype(x, mod, &dt));
    MF_REQUIRE(x->ndim >= 2, "%s: the feature must have at least 2 dims", mod);
    int64_t shape[MF_MAX_DIMS];
    for (int k = 0; k < x->ndim; k++) shape[k] = x->shape[k];
    char name[128];
    snprintf(name, sizeof name, "%s feature", mod);
    shape[x->ndim - 1] = F;
    MF_TRY(check_real(ctx, x, name, dt, x->ndim, shape));
    snprintf(name, sizeof name, "%s output", mod);
    shape[x->ndim - 1] = C;
    MF_TRY(check_real(ctx, out, name, dt, x->ndim, shape));
    const int64_t rows = x->shape[0], cr = slice_rows(ctx, rows);
    for (int64_t r0 = 0; r0 < rows; r0 += cr) {
        const int64_t c = rows - r0 < cr ? rows - r0 : cr;
        mf_tensor xs = mf_tensor_slice0(x, r0, c), ys = mf_tensor_slice0(out, r0, c);
        MF_TRY(mf_linear_forward(ctx, &ys, &xs, w, b, accumulate));
    }
    return MF_OK;
}

static mf_status linear_embedder_backward(mf_ctx *ctx, const char *mod, mf_tensor *dx,
                                          mf_tensor *dw, mf_tensor *db, const mf_tensor *dout,
                                          const mf_tensor *x, const mf_tensor *w, int64_t F,
                                          int64_t C)
{
    MF_REQUIRE(ctx && ctx->arena, "%s: ctx and arena required", mod);
    mf_dtype dt;
    MF_TRY(run_dtype(x, mod, &dt));
    MF_REQUIRE(x->ndim >= 2, "%s: the feature must have at least 2 dims", mod);
    int64_t shape[MF_MAX_DIMS];
    for (int k = 0; k < x->ndim; k++) shape[k] = x->shape[k];
    char name[128];
    snprintf(name, sizeof name, "%s feature", mod);
    shape[x->ndim - 1] = F;
    MF_TRY(check_real(ctx, x, name, dt, x->ndim, shape));
    snprintf(name, sizeof name, "%s output gradient", mod);
    shape[x->ndim - 1] = C;
    MF_TRY(check_real(ctx, dout, name, dt, x->ndim, shape));
    dx = present(dx), dw = present(dw), db = present(db);
    if (!dx && !dw && !db) return MF_OK;
    return mf_linear_backward(ctx, dx, dw, db, dout, x, w);
}

mf_status mf_extra_msa_embedder_forward(mf_ctx *ctx, mf_tensor *out, bool accumulate,
                                        mf_extra_msa_embedder_saved *saved,
                                        const mf_tensor *extra_msa_feat,
                                        const mf_extra_msa_embedder_params *p,
                                        const mf_extra_msa_embedder_dims *d)
{
    const char *mod = "extra-MSA embedder";
    MF_REQUIRE(ctx && d && p && extra_msa_feat, "%s: ctx, dims, parameters and feature required",
               mod);
    MF_TRY(check_dims_positive(mod, (const int64_t[]){d->extra_msa_feat_dim, d->c_e}, 2));
    mf_param_spec specs[MF_EXTRA_MSA_EMBEDDER_NUM_PARAMS];
    int np = mf_extra_msa_embedder_param_specs(d, specs);
    MF_TRY(check_params(ctx, mod, specs, np, MF_PARAMS_AS_ARRAY(p), extra_msa_feat->dtype));
    /* Alg. 2 line 14: e_si = Linear(f^extra_msa_feat_si). */
    MF_TRY(linear_embedder_forward(ctx, mod, out, accumulate, extra_msa_feat,
                                   &p->extra_msa_activations_weights,
                                   &p->extra_msa_activations_bias, d->extra_msa_feat_dim, d->c_e));
    if (saved) saved->forward_done = true;
    return MF_OK;
}

mf_status mf_extra_msa_embedder_backward(mf_ctx *ctx, mf_tensor *dextra_msa_feat,
                                         mf_extra_msa_embedder_params *dp, const mf_tensor *dout,
                                         const mf_extra_msa_embedder_saved *saved,
                                         const mf_tensor *extra_msa_feat,
                                         const mf_extra_msa_embedder_params *p,
                                         const mf_extra_msa_embedder_dims *d)
{
    const char *mod = "extra-MSA embedder backward";
    MF_REQUIRE(ctx && d && p && extra_msa_feat, "%s: ctx, dims, parameters and feature required",
               mod);
    MF_REQUIRE(!saved || saved->forward_done, "%s: the forward pass did not run", mod);
    mf_param_spec specs[MF_EXTRA_MSA_EMBEDDER_NUM_PARAMS];
    int np = mf_extra_msa_embedder_param_specs(d, specs);
    MF_TRY(check_params(ctx, mod, specs, np, MF_PARAMS_AS_ARRAY(p), extra_msa_feat->dtype));
    return linear_embedder_backward(
        ctx, mod, dextra_msa_feat, dp ? &dp->extra_msa_activations_weights : NULL,
        dp ? &dp->extra_msa_activations_bias : NULL, dout, extra_msa_feat,
        &p->extra_msa_activations_weights, d->extra_msa_feat_dim, d->c_e);
}

mf_status mf_template_pair_embedder_forward(mf_ctx *ctx, mf_tensor *out, bool accumulate,
                                            mf_template_pair_embedder_saved *saved,
                                            const mf_tensor *pair_feat,
                                            const mf_template_pair_embedder_params *p,
                                            const mf_template_pair_embedder_dims *d)
{
    const char *mod = "template pair embedder";
    MF_REQUIRE(ctx && d && p && pair_feat, "%s: ctx, dims, parameters and feature required", mod);
    MF_TRY(check_dims_positive(mod, (const int64_t[]){d->pair_feat_dim, d->c_t}, 2));
    mf_param_spec specs[MF_TEMPLATE_PAIR_EMBEDDER_NUM_PARAMS];
    int np = mf_template_pair_embedder_param_specs(d, specs);
    MF_TRY(check_params(ctx, mod, specs, np, MF_PARAMS_AS_ARRAY(p), pair_feat->dtype));
    /* Alg. 2 line 9 (AF2 embedding2d). */
    MF_TRY(linear_embedder_forward(ctx, mod, out, accumulate, pair_feat, &p->embedding2d_weights,
                                   &p->embedding2d_bias, d->pair_feat_dim, d->c_t));
    if (saved) saved->forward_done = true;
    return MF_OK;
}

mf_status mf_template_pair_embedder_backward(
    mf_ctx *ctx, mf_tensor *dpair_feat, mf_template_pair_embedder_params *dp, const mf_tensor *dout,
    const mf_template_pair_embedder_saved *saved, const mf_tensor *pair_feat,
    const mf_template_pair_embedder_params *p, const mf_template_pair_embedder_dims *d)
{
    const char *mod = "template pair embedder backward";
    MF_REQUIRE(ctx && d && p && pair_feat, "%s: ctx, dims, parameters and feature required", mod);
    MF_REQUIRE(!saved || saved->forward_done, "%s: the forward pass did not run", mod);
    mf_param_spec specs[MF_TEMPLATE_PAIR_EMBEDDER_NUM_PARAMS];
    int np = mf_template_pair_embedder_param_specs(d, specs);
    MF_TRY(check_params(ctx, mod, specs, np, MF_PARAMS_AS_ARRAY(p), pair_feat->dtype));
    return linear_embedder_backward(ctx, mod, dpair_feat, dp ? &dp->embedding2d_weights : NULL,
                                    dp ? &dp->embedding2d_bias : NULL, dout, pair_feat,
                                    &p->embedding2d_weights, d->pair_feat_dim, d->c_t);
}

/* ==== template single embedder =============================================================== */

static mf_status template_single_check(mf_ctx *ctx, const char *mod, const mf_tensor *x,
                                       const mf_template_single_embedder_params *p,
                                       const mf_template_single_embedder_dims *d, mf_dtype *dt)
{
    MF_REQUIRE(ctx && ctx->arena && d && p, "%s: ctx, arena, dims and parameters required", mod);
    MF_TRY(check_dims_positive(mod, (const int64_t[]){d->angle_feat_dim, d->c_m}, 2));
    MF_TRY(run_dtype(x, "template angle feature", dt));
    MF_REQUIRE(x->ndim == 3, "%s: the angle feature must be [T, N, %lld]", mod,
               (long long)d->angle_feat_dim);
    MF_TRY(check_real(ctx, x, "template angle feature", *dt, 3,
                      (const int64_t[]){x->shape[0], x->shape[1], d->angle_feat_dim}));
    mf_param_spec specs[MF_TEMPLATE_SINGLE_EMBEDDER_NUM_PARAMS];
    int np = mf_template_single_embedder_param_specs(d, specs);
    return check_params(ctx, mod, specs, np, MF_PARAMS_AS_ARRAY(p), *dt);
}

mf_status mf_template_single_embedder_forward(mf_ctx *ctx, mf_tensor *out, bool accumulate,
                                              mf_template_single_embedder_saved *saved,
                                              const mf_tensor *angle_feat,
                                              const mf_template_single_embedder_params *p,
                                              const mf_template_single_embedder_dims *d)
{
    const char *mod = "template single embedder";
    mf_dtype dt;
    MF_TRY(template_single_check(ctx, mod, angle_feat, p, d, &dt));
    const int64_t T = angle_feat->shape[0], N = angle_feat->shape[1], Cm = d->c_m;
    MF_TRY(check_real(ctx, out, "template single embedder output", dt, 3,
                      (const int64_t[]){T, N, Cm}));
    mf_arena_mark_t outer = mf_arena_mark(ctx->arena);
    mf_status st = MF_OK;
    mf_tensor act = {0}, h;
    if (saved) {
        /* The ReLU output in the storage precision (f64 runs keep f64). */
        mf_dtype sdt = dt == MF_F64 ? MF_F64 : ctx->policy.storage == MF_BF16 ? MF_BF16 : MF_F32;
        MF_TRY_GOTO(scratch(ctx, &act, sdt, 3, (const int64_t[]){T, N, Cm}, "template_single.act"));
    }
    mf_arena_mark_t mark = mf_arena_mark(ctx->arena);
    const int64_t ct = slice_rows(ctx, T);
    MF_TRY_GOTO(scratch(ctx, &h, dt, 3, (const int64_t[]){ct, N, Cm}, "template_single.h"));
    for (int64_t t0 = 0; t0 < T; t0 += ct) {
        const int64_t c = T - t0 < ct ? T - t0 : ct;
        mf_tensor x = mf_tensor_slice0(angle_feat, t0, c), y = mf_tensor_slice0(out, t0, c);
        mf_tensor hs = mf_tensor_slice0(&h, 0, c);
        /* AF2 EmbeddingsAndEvoformer: template_single_embedding, relu, template_projection. */
        MF_TRY_GOTO(mf_linear_forward(ctx, &hs, &x, &p->template_single_embedding_weights,
                                      &p->template_single_embedding_bias, false));
        MF_TRY_GOTO(mf_activation_forward(ctx, MF_ACT_RELU, &hs, &hs));
        if (saved) {
            mf_tensor as = mf_tensor_slice0(&act, t0, c);
            MF_TRY_GOTO(mf_convert(ctx, &as, &hs));
        }
        MF_TRY_GOTO(mf_linear_forward(ctx, &y, &hs, &p->template_projection_weights,
                                      &p->template_projection_bias, accumulate));
    }
    mf_arena_release(ctx->arena, mark);
    if (saved) saved->act = act;
    return MF_OK;
cleanup:
    mf_arena_release(ctx->arena, outer);
    return st;
}

mf_status mf_template_single_embedder_backward(mf_ctx *ctx, mf_tensor *dangle_feat,
                                               mf_template_single_embedder_params *dp,
                                               const mf_tensor *dout,
                                               const mf_template_single_embedder_saved *saved,
                                               const mf_tensor *angle_feat,
                                               const mf_template_single_embedder_params *p,
                                               const mf_template_single_embedder_dims *d)
{
    const char *mod = "template single embedder backward";
    mf_dtype dt;
    MF_TRY(template_single_check(ctx, mod, angle_feat, p, d, &dt));
    const int64_t T = angle_feat->shape[0], N = angle_feat->shape[1], Cm = d->c_m;
    const int64_t shape[3] = {T, N, Cm};
    MF_TRY(check_real(ctx, dout, "template single embedder output gradient", dt, 3, shape));
    MF_REQUIRE(saved && saved->act.data && mf_tensor_numel(&saved->act) == T * N * Cm,
               "%s: the forward's saved activation is required", mod);
    mf_template_single_embedder_params none = {0};
    mf_template_single_embedder_params *g = dp ? dp : &none;
    dangle_feat = present(dangle_feat);
    mf_arena_mark_t mark = mf_arena_mark(ctx->arena);
    mf_status st = MF_OK;
    mf_tensor act, dh, dpre;
    MF_TRY_GOTO(mf_saved_view(ctx, &act, &saved->act, "template_single.act_view"));
    MF_TRY_GOTO(scratch_zeros(ctx, &dh, dt, 3, shape, "template_single.dh"));
    MF_TRY_GOTO(mf_linear_backward(ctx, &dh, present(&g->template_projection_weights),
                                   present(&g->template_projection_bias), dout, &act,
                                   &p->template_projection_weights));
    if (dangle_feat || present(&g->template_single_embedding_weights) ||
        present(&g->template_single_embedding_bias)) {
        MF_TRY_GOTO(scratch_zeros(ctx, &dpre, dt, 3, shape, "template_single.dpre"));
        /* ReLU's derivative from its output: positive exactly where its input is. */
        MF_TRY_GOTO(mf_activation_backward(ctx, MF_ACT_RELU, &dpre, &dh, &act));
        MF_TRY_GOTO(mf_linear_backward(ctx, dangle_feat,
                                       present(&g->template_single_embedding_weights),
                                       present(&g->template_single_embedding_bias), &dpre,
                                       angle_feat, &p->template_single_embedding_weights));
    }
cleanup:
    mf_arena_release(ctx->arena, mark);
    return st;
}
