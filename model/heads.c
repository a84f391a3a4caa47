/* AlphaFold 2's output heads and confidence outputs (see heads.h). */
#include "model/heads.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "core/ops.h"
#include "memopt/saved.h"

/* ---- parameter tables ----------------------------------------------------------------------- */

int mf_distogram_head_param_specs(const mf_heads_dims *d, mf_param_spec *out)
{
    const mf_param_spec specs[] = {
#define MF_DISTOGRAM_HEAD_PARAM MF_PARAM_SPEC
#include "model/heads.def"
#undef MF_DISTOGRAM_HEAD_PARAM
    };
    if (out) memcpy(out, specs, sizeof specs);
    return (int)(sizeof specs / sizeof specs[0]);
}

int mf_masked_msa_head_param_specs(const mf_heads_dims *d, mf_param_spec *out)
{
    const mf_param_spec specs[] = {
#define MF_MASKED_MSA_HEAD_PARAM MF_PARAM_SPEC
#include "model/heads.def"
#undef MF_MASKED_MSA_HEAD_PARAM
    };
    if (out) memcpy(out, specs, sizeof specs);
    return (int)(sizeof specs / sizeof specs[0]);
}

int mf_predicted_lddt_head_param_specs(const mf_heads_dims *d, mf_param_spec *out)
{
    const mf_param_spec specs[] = {
#define MF_PREDICTED_LDDT_HEAD_PARAM MF_PARAM_SPEC
#include "model/heads.def"
#undef MF_PREDICTED_LDDT_HEAD_PARAM
    };
    if (out) memcpy(out, specs, sizeof specs);
    return (int)(sizeof specs / sizeof specs[0]);
}

int mf_experimentally_resolved_head_param_specs(const mf_heads_dims *d, mf_param_spec *out)
{
    const mf_param_spec specs[] = {
#define MF_EXPERIMENTALLY_RESOLVED_HEAD_PARAM MF_PARAM_SPEC
#include "model/heads.def"
#undef MF_EXPERIMENTALLY_RESOLVED_HEAD_PARAM
    };
    if (out) memcpy(out, specs, sizeof specs);
    return (int)(sizeof specs / sizeof specs[0]);
}

int mf_predicted_aligned_error_head_param_specs(const mf_heads_dims *d, mf_param_spec *out)
{
    const mf_param_spec specs[] = {
#define MF_PREDICTED_ALIGNED_ERROR_HEAD_PARAM MF_PARAM_SPEC
#include "model/heads.def"
#undef MF_PREDICTED_ALIGNED_ERROR_HEAD_PARAM
    };
    if (out) memcpy(out, specs, sizeof specs);
    return (int)(sizeof specs / sizeof specs[0]);
}

mf_heads_dims mf_heads_dims_from_config(const mf_config *cfg)
{
    const mf_heads_config *h = &cfg->heads;
    return (mf_heads_dims){
        .c_m = cfg->channels.c_m,
        .c_z = cfg->channels.c_z,
        .c_s = cfg->channels.c_s,
        .distogram_num_bins = h->distogram_num_bins,
        .distogram_first_break = h->distogram_first_break,
        .distogram_last_break = h->distogram_last_break,
        .masked_msa_num_output = h->masked_msa_num_output,
        .plddt_num_bins = h->predicted_lddt_num_bins,
        .plddt_c_hidden = h->predicted_lddt_c_hidden,
        .experimentally_resolved_num_output = h->experimentally_resolved_num_output,
        .pae_num_bins = h->predicted_aligned_error_num_bins,
        .pae_max_error_bin = h->predicted_aligned_error_max_error_bin,
    };
}

/* ---- shared checks and helpers ----------------------------------------------------------------
 */

#define MAX_HEAD_PARAMS 8

static mf_tensor *present(mf_tensor *t)
{
    return t && t->data ? t : NULL;
}

/* The input's dtype decides the run's precision: f32, or f64 for the finite-difference oracle. */
static mf_status run_dtype(const char *mod, const mf_tensor *x, const char *name, mf_dtype *dt)
{
    MF_REQUIRE(x && x->data, "%s: %s is missing", mod, name);
    MF_REQUIRE(x->dtype == MF_F32 || x->dtype == MF_F64, "%s: %s must be f32 or f64 (is %s)", mod,
               name, mf_dtype_name(x->dtype));
    *dt = x->dtype;
    return MF_OK;
}

/* A real tensor of exactly this dtype and shape on the context's device. */
static mf_status check_real(const mf_ctx *ctx, const char *mod, const mf_tensor *t,
                            const char *name, mf_dtype dt, int ndim, const int64_t *shape)
{
    MF_REQUIRE(t && t->data, "%s: %s is missing", mod, name);
    bool ok = t->dtype == dt && t->device == ctx->device && t->ndim == ndim;
    for (int k = 0; ok && k < ndim; k++) ok = t->shape[k] == shape[k];
    if (!ok) {
        char b[96], e[96];
        mf_tensor want = mf_tensor_make(NULL, dt, ctx->device, ndim, shape);
        return MF_ERROR(
            MF_ERR_INVALID, "%s: %s is %s on %s, expected %s on %s", mod, name,
            mf_tensor_describe(t, b, sizeof b), t->device == MF_DEV_CUDA ? "cuda" : "cpu",
            mf_tensor_describe(&want, e, sizeof e), ctx->device == MF_DEV_CUDA ? "cuda" : "cpu");
    }
    return MF_OK;
}

static mf_status check_params(const mf_ctx *ctx, const char *mod, const mf_param_spec *specs, int n,
                              const mf_tensor *params, mf_dtype dt)
{
    MF_REQUIRE(params, "%s: parameters missing", mod);
    for (int i = 0; i < n; i++) {
        for (int k = 0; k < specs[i].ndim; k++)
            MF_REQUIRE(specs[i].shape[k] > 0, "%s: parameter %s has a non-positive dimension", mod,
                       specs[i].name);
        char name[160];
        snprintf(name, sizeof name, "parameter %s", specs[i].name);
        MF_TRY(check_real(ctx, mod, &params[i], name, dt, specs[i].ndim, specs[i].shape));
    }
    return MF_OK;
}

/* Parameter gradients present in dp (NULL entries where absent). */
static void grad_list(mf_tensor *dp, int n, mf_tensor **g)
{
    for (int i = 0; i < n; i++) g[i] = dp ? present(&dp[i]) : NULL;
}

static int64_t slice_rows(const mf_ctx *ctx, int64_t rows)
{
    int64_t c = ctx->policy.chunk_size;
    return c > 0 && c < rows ? c : rows;
}

/* The policy's storage precision; f64 runs keep f64 (ops.h). */
static mf_dtype storage_dtype(const mf_ctx *ctx, mf_dtype compute)
{
    return ctx->policy.storage == MF_BF16 && compute != MF_F64 ? MF_BF16 : compute;
}

/* A linear head: out[..., C] (+)= x[..., F] @ w + b over dim-0 slices; x and out have `ndim`
 * dims with the leading ones equal. */
typedef struct {
    const char *mod;
    const mf_tensor *w, *b;
    int64_t F, C;
} linear_head;

static mf_status linear_head_shapes(const mf_ctx *ctx, const linear_head *h, const mf_tensor *x,
                                    const char *xname, int ndim, const mf_tensor *out,
                                    const char *oname, mf_dtype *dt)
{
    MF_REQUIRE(ctx && ctx->arena, "%s: ctx and arena required", h->mod);
    MF_TRY(run_dtype(h->mod, x, xname, dt));
    MF_REQUIRE(x->ndim == ndim, "%s: %s must have %d dims (has %d)", h->mod, xname, ndim, x->ndim);
    int64_t shape[MF_MAX_DIMS];
    for (int k = 0; k < ndim; k++) shape[k] = x->shape[k];
    shape[ndim - 1] = h->F;
    MF_TRY(check_real(ctx, h->mod, x, xname, *dt, ndim, shape));
    shape[ndim - 1] = h->C;
    MF_TRY(check_real(ctx, h->mod, out, oname, *dt, ndim, shape));
    return MF_OK;
}

static mf_status linear_head_forward(mf_ctx *ctx, const linear_head *h, mf_tensor *out,
                                     bool accumulate, const mf_tensor *x)
{
    const int64_t rows = x->shape[0], cr = slice_rows(ctx, rows);
    for (int64_t r0 = 0; r0 < rows; r0 += cr) {
        const int64_t c = rows - r0 < cr ? rows - r0 : cr;
        mf_tensor xs = mf_tensor_slice0(x, r0, c), ys = mf_tensor_slice0(out, r0, c);
        MF_TRY(mf_linear_forward(ctx, &ys, &xs, h->w, h->b, accumulate));
    }
    return MF_OK;
}

/* ---- distogram head ------------------------------------------------------------------------ */

static mf_status distogram_setup(const mf_ctx *ctx, const char *mod, const mf_tensor *pair,
                                 const mf_tensor *logits, const char *lname,
                                 const mf_distogram_head_params *p, const mf_heads_dims *d,
                                 linear_head *h, mf_dtype *dt)
{
    MF_REQUIRE(ctx && p && d, "%s: ctx, parameters and dims required", mod);
    mf_param_spec specs[MAX_HEAD_PARAMS];
    const int n = mf_distogram_head_param_specs(d, specs);
    *h = (linear_head){mod, &p->half_logits_weights, &p->half_logits_bias, d->c_z,
                       d->distogram_num_bins};
    MF_TRY(linear_head_shapes(ctx, h, pair, "pair [N, N, c_z]", 3, logits, lname, dt));
    MF_REQUIRE(pair->shape[0] == pair->shape[1], "%s: pair must be square [N, N, c_z]", mod);
    return check_params(ctx, mod, specs, n, MF_PARAMS_AS_ARRAY(p), *dt);
}

mf_status mf_distogram_head_forward(mf_ctx *ctx, mf_tensor *logits, bool accumulate,
                                    mf_linear_head_saved *saved, const mf_tensor *pair,
                                    const mf_distogram_head_params *p, const mf_heads_dims *d)
{
    const char *mod = "distogram head";
    linear_head h;
    mf_dtype dt;
    MF_TRY(distogram_setup(ctx, mod, pair, logits, "logits [N, N, bins]", p, d, &h, &dt));
    mf_arena_mark_t mark = mf_arena_mark(ctx->arena);
    mf_status st = MF_OK;
    mf_tensor half;
    MF_TRY_GOTO(mf_arena_tensor(ctx->arena, &half, dt, 3, logits->shape, "distogram_head.half"));
    MF_TRY_GOTO(linear_head_forward(ctx, &h, &half, false, pair));
    /* AF2 DistogramHead: logits = half_logits + swapaxes(half_logits, -2, -3); half^T first so the
     * sum of each element is half[j, i] + half[i, j], AF2's two terms. */
    MF_TRY_GOTO(mf_transpose01(ctx, logits, &half, accumulate));
    MF_TRY_GOTO(mf_add(ctx, logits, logits, &half));
    if (saved) saved->forward_done = true;
cleanup:
    mf_arena_release(ctx->arena, mark);
    return st;
}

mf_status mf_distogram_head_backward(mf_ctx *ctx, mf_tensor *dpair, mf_distogram_head_params *dp,
                                     const mf_tensor *dlogits, const mf_linear_head_saved *saved,
                                     const mf_tensor *pair, const mf_distogram_head_params *p,
                                     const mf_heads_dims *d)
{
    const char *mod = "distogram head backward";
    linear_head h;
    mf_dtype dt;
    MF_TRY(distogram_setup(ctx, mod, pair, dlogits, "dlogits [N, N, bins]", p, d, &h, &dt));
    MF_REQUIRE(!saved || saved->forward_done, "%s: the forward pass did not run", mod);
    if (dpair) MF_TRY(check_real(ctx, mod, dpair, "dpair", dt, 3, pair->shape));
    mf_tensor *g[2];
    grad_list(dp ? MF_PARAMS_AS_ARRAY(dp) : NULL, 2, g);
    if (!present(dpair) && !g[0] && !g[1]) return MF_OK;
    mf_arena_mark_t mark = mf_arena_mark(ctx->arena);
    mf_status st = MF_OK;
    mf_tensor dhalf;
    MF_TRY_GOTO(mf_arena_tensor(ctx->arena, &dhalf, dt, 3, dlogits->shape, "distogram_head.dhalf"));
    MF_TRY_GOTO(mf_transpose01(ctx, &dhalf, dlogits, false));
    MF_TRY_GOTO(mf_add(ctx, &dhalf, &dhalf, dlogits));
    MF_TRY_GOTO(mf_linear_backward(ctx, present(dpair), g[0], g[1], &dhalf, pair, h.w));
cleanup:
    mf_arena_release(ctx->arena, mark);
    return st;
}

/* ---- the plain linear heads (masked MSA, experimentally resolved, predicted aligned error) -- */

typedef int (*specs_fn)(const mf_heads_dims *, mf_param_spec *);

static mf_status plain_setup(const mf_ctx *ctx, const char *mod, specs_fn specs_of,
                             const mf_tensor *params, const mf_tensor *x, const char *xname,
                             int ndim, const mf_tensor *out, const char *oname, int64_t F,
                             int64_t C, const mf_heads_dims *d, linear_head *h, mf_dtype *dt)
{
    MF_REQUIRE(ctx && params && d, "%s: ctx, parameters and dims required", mod);
    mf_param_spec specs[MAX_HEAD_PARAMS];
    const int n = specs_of(d, specs);
    *h = (linear_head){mod, &params[0], &params[1], F, C};
    MF_TRY(linear_head_shapes(ctx, h, x, xname, ndim, out, oname, dt));
    return check_params(ctx, mod, specs, n, params, *dt);
}

static mf_status plain_forward(mf_ctx *ctx, const char *mod, specs_fn specs_of,
                               const mf_tensor *params, mf_tensor *out, bool accumulate,
                               mf_linear_head_saved *saved, const mf_tensor *x, const char *xname,
                               int ndim, int64_t F, int64_t C, const mf_heads_dims *d)
{
    linear_head h;
    mf_dtype dt;
    MF_TRY(
        plain_setup(ctx, mod, specs_of, params, x, xname, ndim, out, "logits", F, C, d, &h, &dt));
    MF_TRY(linear_head_forward(ctx, &h, out, accumulate, x));
    if (saved) saved->forward_done = true;
    return MF_OK;
}

static mf_status plain_backward(mf_ctx *ctx, const char *mod, specs_fn specs_of,
                                const mf_tensor *params, mf_tensor *dparams, mf_tensor *dx,
                                const mf_tensor *dout, const mf_linear_head_saved *saved,
                                const mf_tensor *x, const char *xname, int ndim, int64_t F,
                                int64_t C, const mf_heads_dims *d)
{
    linear_head h;
    mf_dtype dt;
    MF_TRY(
        plain_setup(ctx, mod, specs_of, params, x, xname, ndim, dout, "dlogits", F, C, d, &h, &dt));
    MF_REQUIRE(!saved || saved->forward_done, "%s: the forward pass did not run", mod);
    if (dx) MF_TRY(check_real(ctx, mod, dx, "input gradient", dt, x->ndim, x->shape));
    mf_tensor *g[2];
    grad_list(dparams, 2, g);
    if (!present(dx) && !g[0] && !g[1]) return MF_OK;
    return mf_linear_backward(ctx, present(dx), g[0], g[1], dout, x, h.w);
}

mf_status mf_masked_msa_head_forward(mf_ctx *ctx, mf_tensor *logits, bool accumulate,
                                     mf_linear_head_saved *saved, const mf_tensor *msa,
                                     const mf_masked_msa_head_params *p, const mf_heads_dims *d)
{
    MF_REQUIRE(p && d, "masked MSA head: parameters and dims required");
    return plain_forward(ctx, "masked MSA head", mf_masked_msa_head_param_specs,
                         MF_PARAMS_AS_ARRAY((mf_masked_msa_head_params *)p), logits, accumulate,
                         saved, msa, "msa [S, N, c_m]", 3, d->c_m, d->masked_msa_num_output, d);
}

mf_status mf_masked_msa_head_backward(mf_ctx *ctx, mf_tensor *dmsa, mf_masked_msa_head_params *dp,
                                      const mf_tensor *dlogits, const mf_linear_head_saved *saved,
                                      const mf_tensor *msa, const mf_masked_msa_head_params *p,
                                      const mf_heads_dims *d)
{
    MF_REQUIRE(p && d, "masked MSA head backward: parameters and dims required");
    return plain_backward(ctx, "masked MSA head backward", mf_masked_msa_head_param_specs,
                          MF_PARAMS_AS_ARRAY((mf_masked_msa_head_params *)p),
                          dp ? MF_PARAMS_AS_ARRAY(dp) : NULL, dmsa, dlogits, saved, msa,
                          "msa [S, N, c_m]", 3, d->c_m, d->masked_msa_num_output, d);
}

mf_status mf_experimentally_resolved_head_forward(mf_ctx *ctx, mf_tensor *logits, bool accumulate,
                                                  mf_linear_head_saved *saved,
                                                  const mf_tensor *single,
                                                  const mf_experimentally_resolved_head_params *p,
                                                  const mf_heads_dims *d)
{
    MF_REQUIRE(p && d, "experimentally resolved head: parameters and dims required");
    return plain_forward(
        ctx, "experimentally resolved head", mf_experimentally_resolved_head_param_specs,
        MF_PARAMS_AS_ARRAY((mf_experimentally_resolved_head_params *)p), logits, accumulate, saved,
        single, "single [N, c_s]", 2, d->c_s, d->experimentally_resolved_num_output, d);
}

mf_status mf_experimentally_resolved_head_backward(
    mf_ctx *ctx, mf_tensor *dsingle, mf_experimentally_resolved_head_params *dp,
    const mf_tensor *dlogits, const mf_linear_head_saved *saved, const mf_tensor *single,
    const mf_experimentally_resolved_head_params *p, const mf_heads_dims *d)
{
    MF_REQUIRE(p && d, "experimentally resolved head backward: parameters and dims required");
    return plain_backward(ctx, "experimentally resolved head backward",
                          mf_experimentally_resolved_head_param_specs,
                          MF_PARAMS_AS_ARRAY((mf_experimentally_resolved_head_params *)p),
                          dp ? MF_PARAMS_AS_ARRAY(dp) : NULL, dsingle, dlogits, saved, single,
                          "single [N, c_s]", 2, d->c_s, d->experimentally_resolved_num_output, d);
}

mf_status mf_predicted_aligned_error_head_forward(mf_ctx *ctx, mf_tensor *logits, bool accumulate,
                                                  mf_linear_head_saved *saved,
                                                  const mf_tensor *pair,
                                                  const mf_predicted_aligned_error_head_params *p,
                                                  const mf_heads_dims *d)
{
    MF_REQUIRE(p && d, "predicted aligned error head: parameters and dims required");
    return plain_forward(
        ctx, "predicted aligned error head", mf_predicted_aligned_error_head_param_specs,
        MF_PARAMS_AS_ARRAY((mf_predicted_aligned_error_head_params *)p), logits, accumulate, saved,
        pair, "pair [N, N, c_z]", 3, d->c_z, d->pae_num_bins, d);
}

mf_status mf_predicted_aligned_error_head_backward(
    mf_ctx *ctx, mf_tensor *dpair, mf_predicted_aligned_error_head_params *dp,
    const mf_tensor *dlogits, const mf_linear_head_saved *saved, const mf_tensor *pair,
    const mf_predicted_aligned_error_head_params *p, const mf_heads_dims *d)
{
    MF_REQUIRE(p && d, "predicted aligned error head backward: parameters and dims required");
    return plain_backward(ctx, "predicted aligned error head backward",
                          mf_predicted_aligned_error_head_param_specs,
                          MF_PARAMS_AS_ARRAY((mf_predicted_aligned_error_head_params *)p),
                          dp ? MF_PARAMS_AS_ARRAY(dp) : NULL, dpair, dlogits, saved, pair,
                          "pair [N, N, c_z]", 3, d->c_z, d->pae_num_bins, d);
}

/* ---- predicted lDDT head ------------------------------------------------------------------- */

static mf_status plddt_setup(const mf_ctx *ctx, const char *mod, const mf_tensor *single,
                             const mf_tensor *logits, const char *lname,
                             const mf_predicted_lddt_head_params *p, const mf_heads_dims *d,
                             mf_dtype *dt)
{
    MF_REQUIRE(ctx && ctx->arena && p && d, "%s: ctx, arena, parameters and dims required", mod);
    MF_TRY(run_dtype(mod, single, "single [N, c_s]", dt));
    MF_REQUIRE(single->ndim == 2, "%s: single must be [N, c_s]", mod);
    const int64_t N = single->shape[0];
    MF_TRY(check_real(ctx, mod, single, "single [N, c_s]", *dt, 2, (const int64_t[]){N, d->c_s}));
    MF_TRY(check_real(ctx, mod, logits, lname, *dt, 2, (const int64_t[]){N, d->plddt_num_bins}));
    mf_param_spec specs[MAX_HEAD_PARAMS];
    const int n = mf_predicted_lddt_head_param_specs(d, specs);
    return check_params(ctx, mod, specs, n, MF_PARAMS_AS_ARRAY((mf_predicted_lddt_head_params *)p),
                        *dt);
}

mf_status mf_predicted_lddt_head_forward(mf_ctx *ctx, mf_tensor *logits, bool accumulate,
                                         mf_predicted_lddt_head_saved *saved,
                                         const mf_tensor *single,
                                         const mf_predicted_lddt_head_params *p,
                                         const mf_heads_dims *d)
{
    const char *mod = "predicted lDDT head";
    mf_dtype dt;
    MF_TRY(plddt_setup(ctx, mod, single, logits, "logits [N, bins]", p, d, &dt));
    const int64_t N = single->shape[0], C = d->c_s, H = d->plddt_c_hidden;
    const int64_t cr = saved ? N : slice_rows(ctx, N);
    mf_arena *a = ctx->arena;
    const mf_arena_mark_t start = mf_arena_mark(a);
    mf_status st = MF_OK;
    mf_tensor keep0 = {0}, keep1 = {0}, ln, act0, act1;
    const mf_dtype sdt = storage_dtype(ctx, dt);
    if (saved) {
        MF_TRY_GOTO(mf_arena_tensor(a, &keep0, sdt, 2, (const int64_t[]){N, H},
                                    "predicted_lddt_head.saved.act_0"));
        MF_TRY_GOTO(mf_arena_tensor(a, &keep1, sdt, 2, (const int64_t[]){N, H},
                                    "predicted_lddt_head.saved.act_1"));
    }
    const mf_arena_mark_t scratch = mf_arena_mark(a);
    MF_TRY_GOTO(mf_arena_tensor(a, &ln, dt, 2, (const int64_t[]){cr, C}, "predicted_lddt_head.ln"));
    MF_TRY_GOTO(
        mf_arena_tensor(a, &act0, dt, 2, (const int64_t[]){cr, H}, "predicted_lddt_head.act_0"));
    MF_TRY_GOTO(
        mf_arena_tensor(a, &act1, dt, 2, (const int64_t[]){cr, H}, "predicted_lddt_head.act_1"));
    for (int64_t r0 = 0; r0 < N; r0 += cr) {
        const int64_t c = N - r0 < cr ? N - r0 : cr;
        mf_tensor xs = mf_tensor_slice0(single, r0, c), ys = mf_tensor_slice0(logits, r0, c);
        mf_tensor ls = mf_tensor_slice0(&ln, 0, c), a0 = mf_tensor_slice0(&act0, 0, c);
        mf_tensor a1 = mf_tensor_slice0(&act1, 0, c);
        /* Alg. 29 lines 1-3: LayerNorm, two ReLU layers, the logits layer. */
        MF_TRY_GOTO(mf_layer_norm_forward(ctx, &ls, NULL, NULL, &xs, &p->input_layer_norm_scale,
                                          &p->input_layer_norm_offset, MF_HEADS_LN_EPS));
        MF_TRY_GOTO(mf_linear_forward(ctx, &a0, &ls, &p->act_0_weights, &p->act_0_bias, false));
        MF_TRY_GOTO(mf_activation_forward(ctx, MF_ACT_RELU, &a0, &a0));
        MF_TRY_GOTO(mf_linear_forward(ctx, &a1, &a0, &p->act_1_weights, &p->act_1_bias, false));
        MF_TRY_GOTO(mf_activation_forward(ctx, MF_ACT_RELU, &a1, &a1));
        MF_TRY_GOTO(
            mf_linear_forward(ctx, &ys, &a1, &p->logits_weights, &p->logits_bias, accumulate));
        if (saved) {
            mf_tensor k0 = mf_tensor_slice0(&keep0, r0, c), k1 = mf_tensor_slice0(&keep1, r0, c);
            MF_TRY_GOTO(mf_convert(ctx, &k0, &a0));
            MF_TRY_GOTO(mf_convert(ctx, &k1, &a1));
        }
    }
    mf_arena_release(a, scratch);
    if (saved) *saved = (mf_predicted_lddt_head_saved){keep0, keep1};
    return MF_OK;
cleanup:
    mf_arena_release(a, start);
    return st;
}

mf_status
mf_predicted_lddt_head_backward(mf_ctx *ctx, mf_tensor *dsingle, mf_predicted_lddt_head_params *dp,
                                const mf_tensor *dlogits, const mf_predicted_lddt_head_saved *saved,
                                const mf_tensor *single, const mf_predicted_lddt_head_params *p,
                                const mf_heads_dims *d)
{
    const char *mod = "predicted lDDT head backward";
    mf_dtype dt;
    MF_TRY(plddt_setup(ctx, mod, single, dlogits, "dlogits [N, bins]", p, d, &dt));
    const int64_t N = single->shape[0], C = d->c_s, H = d->plddt_c_hidden;
    MF_REQUIRE(saved && saved->act_0.data && saved->act_1.data, "%s: saved activations required",
               mod);
    MF_REQUIRE(saved->act_0.ndim == 2 && saved->act_0.shape[0] == N && saved->act_0.shape[1] == H &&
                   mf_tensor_same_shape(&saved->act_0, &saved->act_1),
               "%s: saved activations do not match single [%lld, %lld]", mod, (long long)N,
               (long long)C);
    if (dsingle) MF_TRY(check_real(ctx, mod, dsingle, "dsingle", dt, 2, single->shape));
    mf_tensor *g[8];
    grad_list(dp ? MF_PARAMS_AS_ARRAY(dp) : NULL, 8, g);
    mf_arena *a = ctx->arena;
    const mf_arena_mark_t mark = mf_arena_mark(a);
    mf_status st = MF_OK;
    mf_tensor act0, act1, ln, mean, rstd, da1, dpre, da0, dln;
    MF_TRY_GOTO(mf_saved_view(ctx, &act0, &saved->act_0, "predicted_lddt_head.act_0"));
    MF_TRY_GOTO(mf_saved_view(ctx, &act1, &saved->act_1, "predicted_lddt_head.act_1"));
    MF_TRY_GOTO(mf_arena_tensor(a, &ln, dt, 2, (const int64_t[]){N, C}, "predicted_lddt_head.ln"));
    MF_TRY_GOTO(mf_arena_tensor(a, &mean, dt, 1, &N, "predicted_lddt_head.ln_mean"));
    MF_TRY_GOTO(mf_arena_tensor(a, &rstd, dt, 1, &N, "predicted_lddt_head.ln_rstd"));
    MF_TRY_GOTO(mf_arena_zeros(a, &da1, dt, 2, (const int64_t[]){N, H}, "predicted_lddt_head.da1"));
    MF_TRY_GOTO(
        mf_arena_zeros(a, &dpre, dt, 2, (const int64_t[]){N, H}, "predicted_lddt_head.dpre"));
    MF_TRY_GOTO(mf_arena_zeros(a, &da0, dt, 2, (const int64_t[]){N, H}, "predicted_lddt_head.da0"));
    MF_TRY_GOTO(mf_arena_zeros(a, &dln, dt, 2, (const int64_t[]){N, C}, "predicted_lddt_head.dln"));
    MF_TRY_GOTO(mf_layer_norm_forward(ctx, &ln, &mean, &rstd, single, &p->input_layer_norm_scale,
                                      &p->input_layer_norm_offset, MF_HEADS_LN_EPS));
    MF_TRY_GOTO(mf_linear_backward(ctx, &da1, g[6], g[7], dlogits, &act1, &p->logits_weights));
    /* ReLU's derivative read from its output: positive exactly where its input is. */
    MF_TRY_GOTO(mf_activation_backward(ctx, MF_ACT_RELU, &dpre, &da1, &act1));
    MF_TRY_GOTO(mf_linear_backward(ctx, &da0, g[4], g[5], &dpre, &act0, &p->act_1_weights));
    MF_TRY_GOTO(mf_fill(ctx, &dpre, 0.0f));
    MF_TRY_GOTO(mf_activation_backward(ctx, MF_ACT_RELU, &dpre, &da0, &act0));
    MF_TRY_GOTO(mf_linear_backward(ctx, &dln, g[2], g[3], &dpre, &ln, &p->act_0_weights));
    MF_TRY_GOTO(mf_layer_norm_backward(ctx, present(dsingle), g[0], g[1], &dln, single, &mean,
                                       &rstd, &p->input_layer_norm_scale));
cleanup:
    mf_arena_release(a, mark);
    return st;
}

/* ---- confidence outputs --------------------------------------------------------------------- */

static mf_status host_real(const mf_tensor *t, const char *name, int ndim)
{
    MF_REQUIRE(t && t->data, "%s is missing", name);
    MF_REQUIRE(t->device == MF_DEV_CPU, "%s must be a host (CPU) tensor", name);
    MF_REQUIRE(t->dtype == MF_F32 || t->dtype == MF_F64, "%s must be f32 or f64 (is %s)", name,
               mf_dtype_name(t->dtype));
    MF_REQUIRE(ndim < 0 || t->ndim == ndim, "%s must have %d dims (has %d)", name, ndim, t->ndim);
    return MF_OK;
}

static inline double ld(const mf_tensor *t, int64_t i)
{
    return t->dtype == MF_F64 ? ((const double *)t->data)[i] : (double)((const float *)t->data)[i];
}

static inline void st_(const mf_tensor *t, int64_t i, double v)
{
    if (t->dtype == MF_F64)
        ((double *)t->data)[i] = v;
    else
        ((float *)t->data)[i] = (float)v;
}

/* sum_b softmax(x)_b * w_b over one row of logits (max-shifted, in double). */
static double softmax_expectation(const mf_tensor *logits, int64_t off, int64_t B, const double *w)
{
    double m = -INFINITY;
    for (int64_t b = 0; b < B; b++) m = fmax(m, ld(logits, off + b));
    double z = 0, s = 0;
    for (int64_t b = 0; b < B; b++) {
        const double e = exp(ld(logits, off + b) - m);
        z += e;
        s += e * w[b];
    }
    return s / z;
}

#define MAX_CONF_BINS 1024

mf_status mf_compute_plddt(mf_tensor *plddt, const mf_tensor *logits)
{
    MF_TRY(host_real(logits, "pLDDT logits [N, bins]", 2));
    MF_TRY(host_real(plddt, "plddt [N]", 1));
    const int64_t N = logits->shape[0], B = logits->shape[1];
    MF_REQUIRE(plddt->shape[0] == N, "plddt has %lld elements, logits %lld rows",
               (long long)plddt->shape[0], (long long)N);
    MF_REQUIRE(B > 0 && B <= MAX_CONF_BINS, "pLDDT: %lld bins (1..%d supported)", (long long)B,
               MAX_CONF_BINS);
    double centers[MAX_CONF_BINS];
    /* AF2 compute_plddt: bin centres arange(0.5 / bins, 1, 1 / bins). */
    for (int64_t b = 0; b < B; b++) centers[b] = ((double)b + 0.5) / (double)B;
    for (int64_t i = 0; i < N; i++)
        st_(plddt, i, 100.0 * softmax_expectation(logits, i * B, B, centers));
    return MF_OK;
}

void mf_pae_bin_centers(double *centers, int64_t bins, double max_error_bin)
{
    /* AF2 _calculate_bin_centers over breaks = linspace(0, max_error_bin, bins - 1). */
    const double step = bins > 2 ? max_error_bin / (double)(bins - 2) : max_error_bin;
    for (int64_t b = 0; b < bins - 1; b++) centers[b] = (double)b * step + step / 2;
    if (bins >= 2) centers[bins - 1] = centers[bins - 2] + step;
}

static mf_status pae_check(const mf_tensor *logits, int64_t *N, int64_t *B)
{
    MF_TRY(host_real(logits, "aligned-error logits [N, N, bins]", 3));
    *N = logits->shape[0], *B = logits->shape[2];
    MF_REQUIRE(logits->shape[1] == *N, "aligned-error logits must be [N, N, bins]");
    MF_REQUIRE(*B >= 3 && *B <= MAX_CONF_BINS, "aligned error: %lld bins (3..%d supported)",
               (long long)*B, MAX_CONF_BINS);
    return MF_OK;
}

mf_status mf_compute_predicted_aligned_error(mf_tensor *pae, double *max_pae,
                                             const mf_tensor *logits, double max_error_bin)
{
    int64_t N, B;
    MF_TRY(pae_check(logits, &N, &B));
    MF_TRY(host_real(pae, "pae [N, N]", 2));
    MF_REQUIRE(pae->shape[0] == N && pae->shape[1] == N, "pae must be [%lld, %lld]", (long long)N,
               (long long)N);
    double centers[MAX_CONF_BINS];
    mf_pae_bin_centers(centers, B, max_error_bin);
    for (int64_t ij = 0; ij < N * N; ij++)
        st_(pae, ij, softmax_expectation(logits, ij * B, B, centers));
    if (max_pae) *max_pae = centers[B - 1];
    return MF_OK;
}

mf_status mf_compute_predicted_tm_score(double *ptm, const mf_tensor *logits,
                                        const mf_tensor *residue_weights, double max_error_bin)
{
    MF_REQUIRE(ptm, "pTM: output pointer missing");
    int64_t N, B;
    MF_TRY(pae_check(logits, &N, &B));
    if (residue_weights) {
        MF_TRY(host_real(residue_weights, "pTM residue_weights [N]", 1));
        MF_REQUIRE(residue_weights->shape[0] == N,
                   "pTM: residue_weights has %lld elements, N = %lld",
                   (long long)residue_weights->shape[0], (long long)N);
    }
    double centers[MAX_CONF_BINS], tm_per_bin[MAX_CONF_BINS];
    mf_pae_bin_centers(centers, B, max_error_bin);
    double wsum = 0;
    for (int64_t i = 0; i < N; i++) wsum += residue_weights ? ld(residue_weights, i) : 1.0;
    /* AF2: num_res = int(sum(weights)), clipped at 19 so d0 stays positive (TM-score eq. 5). */
    const double clipped = fmax(floor(wsum), 19.0);
    const double d0 = 1.24 * cbrt(clipped - 15.0) - 1.8;
    for (int64_t b = 0; b < B; b++)
        tm_per_bin[b] = 1.0 / (1.0 + centers[b] * centers[b] / (d0 * d0));
    double best = -INFINITY, result = 0;
    for (int64_t i = 0; i < N; i++) {
        const double wi = residue_weights ? ld(residue_weights, i) : 1.0;
        double num = 0, den = 0;
        for (int64_t j = 0; j < N; j++) {
            const double wij = wi * (residue_weights ? ld(residue_weights, j) : 1.0);
            num += softmax_expectation(logits, (i * N + j) * B, B, tm_per_bin) * wij;
            den += wij;
        }
        const double per_alignment = num / (1e-8 + den);
        /* argmax of per_alignment * weight; the first maximum wins, as numpy's argmax. */
        if (per_alignment * wi > best) best = per_alignment * wi, result = per_alignment;
    }
    *ptm = result;
    return MF_OK;
}
