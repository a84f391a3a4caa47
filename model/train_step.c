/* One AlphaFold 2 training step: the trained recycling iteration's forward with saved activations,
 * the loss and the backward to every parameter (see train_step.h). */
#include "model/train_step.h"
#include "model/train_step_state.h"

#include <string.h>
#include <time.h>

#include "core/ops.h"
#include "evoformer/evoformer_block.h"

static const char *const stage_names[MF_TRAIN_NUM_STAGES] = {"recycle", "forward", "loss",
                                                             "backward"};

const char *mf_train_stage_name(int stage)
{
    return stage >= 0 && stage < MF_TRAIN_NUM_STAGES ? stage_names[stage] : "?";
}

mf_train_step_options mf_train_step_default_options(void)
{
    return (mf_train_step_options){
        .num_iterations = 0, .dropout = false, .dropout_seed = 0, .frozen_quat = NULL};
}

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Row k of dim 0 with that dim dropped. */
static mf_tensor row(const mf_tensor *t, int64_t k)
{
    mf_tensor s = mf_tensor_slice0(t, k, 1);
    return mf_tensor_make(s.data, s.dtype, s.device, t->ndim - 1, t->shape + 1);
}

static int64_t slice_rows(const mf_ctx *ctx, int64_t rows)
{
    const int64_t c = ctx->policy.chunk_size;
    return c > 0 && c < rows ? c : rows;
}

/* ---- the trained iteration's state (train_step_state.h) ------------------------------------ */

typedef mf_train_step_state trainer;

static mf_status alloc(trainer *s, mf_tensor *t, int ndim, const int64_t *shape, const char *lab)
{
    return mf_arena_tensor(s->ctx->arena, t, s->dt, ndim, shape, lab);
}

static mf_status zeros(trainer *s, mf_tensor *t, int ndim, const int64_t *shape, const char *lab)
{
    return mf_arena_zeros(s->ctx->arena, t, s->dt, ndim, shape, lab);
}

/* ---- the trunk's side (train_step.h, trunk_ctx): the same arena without a trunk context ---- */

static bool split(const trainer *s)
{
    return s->tctx != s->ctx;
}

static mf_status talloc(trainer *s, mf_tensor *t, int ndim, const int64_t *shape, const char *lab)
{
    return mf_arena_tensor(s->tctx->arena, t, s->dt, ndim, shape, lab);
}

static mf_status tzeros(trainer *s, mf_tensor *t, int ndim, const int64_t *shape, const char *lab)
{
    return mf_arena_zeros(s->tctx->arena, t, s->dt, ndim, shape, lab);
}

/* Host tensor src on the trunk: src itself on a single context, else a copy in the trunk's
 * arena. out may be src. */
static mf_status up(trainer *s, const mf_tensor *src, mf_tensor *out, const char *lab)
{
    if (split(s)) return mf_arena_copy(s->tctx->arena, out, src, lab);
    *out = *src;
    return MF_OK;
}

/* Trunk tensor src on the host: src itself on a single context, else a copy in ctx's arena. */
static mf_status down(trainer *s, const mf_tensor *src, mf_tensor *out, const char *lab)
{
    if (split(s)) return mf_arena_copy(s->ctx->arena, out, src, lab);
    *out = *src;
    return MF_OK;
}

/* Feature `name` of the trained slice, stored as `stored` with the given shape (-1: any). With
 * convert, a float feature is handed over in the run's dtype (an arena copy when it differs). */
static mf_status feature(trainer *s, const char *name, mf_dtype stored, bool convert, int ndim,
                         const int64_t *shape, mf_tensor *out)
{
    if (!mf_processed_find(s->f, name))
        return MF_ERROR(MF_ERR_FORMAT, "features: '%s' missing (the model needs it)", name);
    MF_TRY(mf_processed_tensor(s->f, name, s->slice, out));
    bool ok = out->dtype == stored && out->ndim == ndim;
    for (int k = 0; ok && k < ndim; k++) ok = shape[k] < 0 || out->shape[k] == shape[k];
    if (!ok) {
        char got[96], want[96] = "[";
        for (int k = 0; k < ndim; k++) {
            char d[24];
            if (shape[k] < 0)
                snprintf(d, sizeof d, "%s*", k ? ", " : "");
            else
                snprintf(d, sizeof d, "%s%lld", k ? ", " : "", (long long)shape[k]);
            strncat(want, d, sizeof want - strlen(want) - 2);
        }
        strcat(want, "]");
        return MF_ERROR(MF_ERR_FORMAT, "features: '%s' is %s, expected %s %s", name,
                        mf_tensor_describe(out, got, sizeof got), want, mf_dtype_name(stored));
    }
    if (convert && out->dtype != s->dt) {
        mf_tensor c;
        MF_TRY(alloc(s, &c, out->ndim, out->shape, "train.features"));
        MF_TRY(mf_convert(s->ctx, &c, out));
        *out = c;
    }
    return MF_OK;
}

#define SHAPE(...)                                                                                 \
    (int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)), (const int64_t[])                   \
    {                                                                                              \
        __VA_ARGS__                                                                                \
    }

static mf_status load_features(trainer *s)
{
    const mf_alphafold_model *m = s->m;
    MF_TRY(feature(s, "aatype", MF_I32, false, SHAPE(-1), &s->aatype));
    const int64_t N = s->N = s->aatype.shape[0];
    MF_REQUIRE(N >= 1, "features: no residues");
    MF_TRY(feature(s, "residue_index", MF_I32, false, SHAPE(N), &s->residue_index));
    MF_TRY(feature(s, "seq_mask", MF_F32, true, SHAPE(N), &s->seq_mask));
    MF_TRY(feature(s, "target_feat", MF_F32, true, SHAPE(N, m->input_dims.target_feat_dim),
                   &s->target_feat));
    MF_TRY(feature(s, "msa_feat", MF_F32, true, SHAPE(-1, N, m->input_dims.msa_feat_dim),
                   &s->msa_feat));
    const int64_t S = s->S = s->msa_feat.shape[0];
    MF_REQUIRE(S >= 1, "features: msa_feat has no row (the query must be row 0)");
    MF_TRY(feature(s, "msa_mask", MF_F32, false, SHAPE(S, N), &s->msa_mask_in));
    MF_TRY(feature(s, "extra_msa", MF_I32, false, SHAPE(-1, N), &s->extra_msa));
    const int64_t E = s->E = s->extra_msa.shape[0];
    MF_TRY(feature(s, "extra_msa_mask", MF_F32, true, SHAPE(E, N), &s->extra_msa_mask));
    MF_TRY(feature(s, "extra_has_deletion", MF_F32, false, SHAPE(E, N), &s->extra_has_deletion));
    MF_TRY(
        feature(s, "extra_deletion_value", MF_F32, false, SHAPE(E, N), &s->extra_deletion_value));
    s->E_run = E > 0 ? E : 1;
    s->T = s->Tr = 0;
    if (!m->templates || !mf_processed_find(s->f, "template_aatype")) return MF_OK;
    MF_TRY(feature(s, "template_aatype", MF_I32, false, SHAPE(-1, N), &s->t_aatype));
    const int64_t T = s->t_aatype.shape[0];
    if (T == 0) return MF_OK;
    MF_TRY(feature(s, "template_all_atom_positions", MF_F32, false, SHAPE(T, N, 37, 3),
                   &s->t_positions));
    const char *mask_name = mf_processed_find(s->f, "template_all_atom_mask")
                                ? "template_all_atom_mask"
                                : "template_all_atom_masks";
    MF_TRY(feature(s, mask_name, MF_F32, false, SHAPE(T, N, 37), &s->t_atom_mask));
    MF_TRY(feature(s, "template_pseudo_beta", MF_F32, false, SHAPE(T, N, 3), &s->t_pseudo_beta));
    MF_TRY(feature(s, "template_pseudo_beta_mask", MF_F32, false, SHAPE(T, N),
                   &s->t_pseudo_beta_mask));
    MF_TRY(feature(s, "template_mask", MF_F32, true, SHAPE(T), &s->t_mask));
    if (m->template_torsions) {
        MF_TRY(feature(s, "template_torsion_angles_sin_cos", MF_F32, false,
                       SHAPE(T, N, MF_NUM_TORSIONS, 2), &s->t_sin_cos));
        MF_TRY(feature(s, "template_alt_torsion_angles_sin_cos", MF_F32, false,
                       SHAPE(T, N, MF_NUM_TORSIONS, 2), &s->t_alt_sin_cos));
        MF_TRY(feature(s, "template_torsion_angles_mask", MF_F32, false,
                       SHAPE(T, N, MF_NUM_TORSIONS), &s->t_torsion_mask));
        s->Tr = T;
    }
    s->T = T;
    return MF_OK;
}

static mf_dropout_key stack_key(const trainer *s, uint32_t stack)
{
    return s->opt->dropout ? mf_dropout_key_training(s->opt->dropout_seed, stack, s->recycle)
                           : mf_dropout_key_inference();
}

/* The per-block saved states of a stack of num_blocks blocks, from the arena. */
static mf_status stack_saved(trainer *s, mf_evo_stack_saved *st, int64_t num_blocks)
{
    memset(st, 0, sizeof *st);
    if (num_blocks <= 0) return MF_OK;
    MF_TRY(mf_arena_alloc(s->ctx->arena, sizeof(mf_evo_block_saved) * (size_t)num_blocks,
                          "train.stack_saved", (void **)&st->blocks));
    memset(st->blocks, 0, sizeof(mf_evo_block_saved) * (size_t)num_blocks);
    st->capacity = num_blocks;
    return MF_OK;
}

/* ---- forward ------------------------------------------------------------------------------- */

/* Alg. 32 then Alg. 3-4: z0 = recycling update + input pair embedding, the MSA's first S rows the
 * input embedding with the recycled first-row update added to row 0. */
static mf_status forward_embedders(trainer *s)
{
    mf_ctx *ctx = s->tctx;
    const mf_alphafold_model *m = s->tm;
    const int64_t N = s->N, S = s->S, Cm = m->input_dims.c_m, Cz = m->input_dims.c_z;
    mf_arena *A = s->ctx->arena;
    MF_TRY(mf_arena_tensor(A, &s->relpos_bins, MF_I32, 2, (const int64_t[]){N, N},
                           "train.relpos_bins"));
    MF_TRY(mf_relpos_bins(&s->relpos_bins, &s->residue_index, m->input_dims.max_relative_feature));
    MF_TRY(alloc(s, &s->pair_mask, 2, (const int64_t[]){N, N}, "train.pair_mask"));
    for (int64_t i = 0; i < N; i++)
        for (int64_t j = 0; j < N; j++) {
            /* AF2 mask_2d = seq_mask[:, None] * seq_mask[None, :] */
            if (s->dt == MF_F64) {
                const double *sm = s->seq_mask.data;
                ((double *)s->pair_mask.data)[i * N + j] = sm[i] * sm[j];
            } else {
                const float *sm = s->seq_mask.data;
                ((float *)s->pair_mask.data)[i * N + j] = sm[i] * sm[j];
            }
        }
    mf_tensor pb;
    MF_TRY(alloc(s, &pb, 2, (const int64_t[]){N, 3}, "train.prev_pseudo_beta"));
    MF_TRY(mf_pseudo_beta(&pb, NULL, &s->aatype, &s->prev->x_prev, NULL));
    MF_TRY(mf_arena_tensor(A, &s->rec_bins, MF_I32, 2, (const int64_t[]){N, N},
                           "train.recycling_bins"));
    MF_TRY(mf_recycling_dgram_bins(&s->rec_bins, &pb, &m->recycling_dims));
    /* the trunk's copies (none on a single context): its inputs, kept for its backward */
    MF_TRY(up(s, &s->relpos_bins, &s->relpos_bins, "train.relpos_bins"));
    MF_TRY(up(s, &s->pair_mask, &s->pair_mask, "train.pair_mask"));
    MF_TRY(up(s, &s->rec_bins, &s->rec_bins, "train.recycling_bins"));
    MF_TRY(up(s, &s->prev->m1_prev, &s->tprev.m1_prev, "train.recycled"));
    MF_TRY(up(s, &s->prev->z_prev, &s->tprev.z_prev, "train.recycled"));
    MF_TRY(up(s, &s->target_feat, &s->target_feat, "train.features"));
    MF_TRY(up(s, &s->msa_feat, &s->msa_feat, "train.features"));
    if (s->E > 0) MF_TRY(up(s, &s->extra_msa_mask, &s->extra_msa_mask, "train.features"));
    if (s->T > 0) MF_TRY(up(s, &s->t_mask, &s->t_mask, "train.features"));
    MF_TRY(talloc(s, &s->m1u, 2, (const int64_t[]){N, Cm}, "train.m1_update"));
    MF_TRY(talloc(s, &s->z0, 3, (const int64_t[]){N, N, Cz}, "train.pair_embedded"));
    MF_TRY(mf_recycling_embedder_forward(ctx, &s->m1u, &s->z0, false, &s->rec_saved,
                                         &s->tprev.m1_prev, &s->tprev.z_prev, &s->rec_bins,
                                         &m->recycling, &m->recycling_dims));
    MF_TRY(talloc(s, &s->msa, 3, (const int64_t[]){S + s->Tr, N, Cm}, "train.msa"));
    mf_tensor msa_s = mf_tensor_slice0(&s->msa, 0, S);
    MF_TRY(mf_fill(ctx, &msa_s, 0.0f));
    MF_TRY(mf_input_embedder_forward(ctx, &msa_s, &s->z0, true, &s->in_saved, &s->target_feat,
                                     &s->msa_feat, &s->relpos_bins, &m->input, &m->input_dims));
    mf_tensor row0 = row(&s->msa, 0);
    MF_TRY(mf_add(ctx, &row0, &row0, &s->m1u));
    /* the Evoformer's MSA mask: the clusters' mask, then the template rows' psi mask */
    MF_TRY(alloc(s, &s->msa_mask, 2, (const int64_t[]){S + s->Tr, N}, "train.msa_mask"));
    mf_tensor head = mf_tensor_slice0(&s->msa_mask, 0, S);
    MF_TRY(mf_convert(s->ctx, &head, &s->msa_mask_in));
    if (s->Tr > 0) {
        mf_tensor tail = mf_tensor_slice0(&s->msa_mask, S, s->Tr);
        MF_TRY(mf_template_row_mask(&tail, &s->t_torsion_mask));
    }
    return up(s, &s->msa_mask, &s->msa_mask, "train.msa_mask");
}

/* One template's 88-channel pair feature, rows [i0, i0 + rows), into feat [rows, N, 88]. */
static mf_status template_feature(trainer *s, int64_t t, int64_t i0, mf_tensor *feat)
{
    mf_tensor pb = row(&s->t_pseudo_beta, t), pbm = row(&s->t_pseudo_beta_mask, t);
    mf_tensor aa = row(&s->t_aatype, t), pos = row(&s->t_positions, t);
    mf_tensor am = row(&s->t_atom_mask, t);
    return mf_template_pair_feat(feat, i0, &pb, &pbm, &aa, &pos, &am, &s->m->template_pair_dims);
}

/* Template t's pair embedding a slice of cr rows at a time (the 88-channel feature is never
 * [N, N, 88] at once; on a trunk context each slice is built on the host and sent up): the
 * forward into tt [N, N, c_t] (dtt NULL), or the embedder's backward from dtt (tt NULL). */
static mf_status template_embedding(trainer *s, int64_t t, int64_t cr, mf_tensor *tt,
                                    const mf_tensor *dtt)
{
    const mf_alphafold_model *m = s->tm;
    const int64_t N = s->N, F = m->template_pair_dims.pair_feat_dim;
    const mf_arena_mark2_t fm = mf_arena_mark2(s->ctx->arena, s->tctx->arena);
    mf_tensor feat;
    mf_status st = alloc(s, &feat, 3, (const int64_t[]){cr, N, F}, "train.template_feat");
    for (int64_t i0 = 0; st == MF_OK && i0 < N; i0 += cr) {
        const int64_t c = N - i0 < cr ? N - i0 : cr;
        mf_tensor fs = mf_tensor_slice0(&feat, 0, c), tfs;
        mf_arena_mark_t um = mf_arena_mark(s->tctx->arena);
        st = template_feature(s, t, i0, &fs);
        if (st == MF_OK) st = up(s, &fs, &tfs, "train.template_feat");
        if (st == MF_OK && tt) {
            mf_tensor ys = mf_tensor_slice0(tt, i0, c);
            st = mf_template_pair_embedder_forward(s->tctx, &ys, false, NULL, &tfs,
                                                   &m->template_pair, &m->template_pair_dims);
        } else if (st == MF_OK) {
            mf_tensor ds = mf_tensor_slice0(dtt, i0, c);
            st =
                mf_template_pair_embedder_backward(s->tctx, NULL, &s->tg->template_pair, &ds, NULL,
                                                   &tfs, &m->template_pair, &m->template_pair_dims);
        }
        if (split(s)) mf_arena_release(s->tctx->arena, um);
    }
    mf_arena_release2(fm);
    return st;
}

/* Alg. 2 lines 7-13 (AF2 TemplateEmbedding and the torsion-angle rows); z1 = z0 + the pointwise
 * attention's update (z1 = z0 itself without templates). */
static mf_status forward_templates(trainer *s)
{
    mf_ctx *ctx = s->tctx;
    const mf_alphafold_model *m = s->tm;
    const int64_t N = s->N, S = s->S, T = s->T;
    if (T == 0) {
        s->z1 = s->z0;
        return MF_OK;
    }
    const int64_t Ct = m->template_pair_dims.c_t;
    MF_TRY(talloc(s, &s->t_stack, 4, (const int64_t[]){T, N, N, Ct}, "train.template_pair"));
    MF_TRY(talloc(s, &s->t_ln, 4, (const int64_t[]){T, N, N, Ct}, "train.template_pair_norm"));
    MF_TRY(talloc(s, &s->t_ln_mean, 1, (const int64_t[]){T * N * N}, "train.template_ln_stats"));
    MF_TRY(talloc(s, &s->t_ln_rstd, 1, (const int64_t[]){T * N * N}, "train.template_ln_stats"));
    MF_TRY(mf_arena_alloc(s->ctx->arena, sizeof(mf_evo_stack_saved) * (size_t)T,
                          "train.stack_saved", (void **)&s->t_saved));
    const int64_t cr = slice_rows(ctx, N);
    for (int64_t t = 0; t < T; t++) {
        mf_tensor tt = row(&s->t_stack, t);
        MF_TRY(template_embedding(s, t, cr, &tt, NULL));
        MF_TRY(stack_saved(s, &s->t_saved[t], m->template_stack_blocks));
        if (m->template_stack_blocks > 0) {
            mf_dropout_key key = stack_key(s, MF_DROPOUT_STACK_TEMPLATE_PAIR);
            key.instance = (uint32_t)t;
            MF_TRY(mf_template_pair_stack_forward(ctx, &tt, &s->t_saved[t], &s->pair_mask,
                                                  &m->template_stack, &m->template_stack_dims,
                                                  m->template_stack_blocks, &key));
        }
        mf_tensor ln = row(&s->t_ln, t);
        mf_tensor mean = mf_tensor_slice0(&s->t_ln_mean, t * N * N, N * N);
        mf_tensor rstd = mf_tensor_slice0(&s->t_ln_rstd, t * N * N, N * N);
        MF_TRY(mf_layer_norm_forward(ctx, &ln, &mean, &rstd, &tt, &m->template_output_ln_scale,
                                     &m->template_output_ln_offset, MF_TEMPLATE_OUTPUT_LN_EPS));
    }
    /* Alg. 17; z1 = z0 + update (z0 stays: the attention's queries, read by its backward) */
    MF_TRY(talloc(s, &s->z1, 3, s->z0.shape, "train.pair_templates"));
    MF_TRY(mf_template_pointwise_attention_forward(ctx, &s->z1, false, &s->tpa_saved, &s->z0,
                                                   &s->t_ln, &s->t_mask, &m->template_pointwise,
                                                   &m->template_pointwise_dims));
    MF_TRY(mf_add(ctx, &s->z1, &s->z1, &s->z0));
    if (s->Tr > 0) {
        /* Alg. 2 lines 7-8: T rows appended to the MSA */
        mf_tensor rows = mf_tensor_slice0(&s->msa, S, T);
        MF_TRY(alloc(s, &s->angle_feat, 3,
                     (const int64_t[]){T, N, m->template_single_dims.angle_feat_dim},
                     "train.template_angle_feat"));
        MF_TRY(mf_template_angle_feat(&s->angle_feat, &s->t_aatype, &s->t_sin_cos,
                                      &s->t_alt_sin_cos, &s->t_torsion_mask));
        MF_TRY(up(s, &s->angle_feat, &s->angle_feat, "train.template_angle_feat"));
        MF_TRY(mf_template_single_embedder_forward(ctx, &rows, false, &s->ts_saved, &s->angle_feat,
                                                   &m->template_single, &m->template_single_dims));
    }
    return MF_OK;
}

/* The 25-channel extra-MSA feature [E_run, N, 25] (zeros for the padding row when E = 0), built
 * on the host, on the trunk (a copy when the trunk is elsewhere). */
static mf_status extra_feature(trainer *s, mf_tensor *feat)
{
    MF_TRY(zeros(s, feat, 3,
                 (const int64_t[]){s->E_run, s->N, s->m->extra_msa_dims.extra_msa_feat_dim},
                 "train.extra_msa_feat"));
    if (s->E > 0)
        MF_TRY(mf_extra_msa_feat(feat, &s->extra_msa, &s->extra_has_deletion,
                                 &s->extra_deletion_value));
    return up(s, feat, feat, "train.extra_msa_feat");
}

/* Alg. 2 lines 14-16: the extra MSA embedded and run through its stack, which updates z1. */
static mf_status forward_extra_msa(trainer *s)
{
    mf_ctx *ctx = s->tctx;
    const mf_alphafold_model *m = s->tm;
    const int64_t N = s->N, E = s->E_run;
    MF_TRY(talloc(s, &s->a, 3, (const int64_t[]){E, N, m->extra_msa_dims.c_e}, "train.extra_msa"));
    if (s->E > 0)
        s->extra_mask = s->extra_msa_mask;
    else
        MF_TRY(tzeros(s, &s->extra_mask, 2, (const int64_t[]){E, N}, "train.extra_msa_mask"));
    {
        /* the feature is rebuilt for the backward rather than kept: [E, N, 25] is large */
        const mf_arena_mark2_t fm = mf_arena_mark2(s->ctx->arena, ctx->arena);
        mf_tensor feat;
        mf_status st = extra_feature(s, &feat);
        if (st == MF_OK)
            st = mf_extra_msa_embedder_forward(ctx, &s->a, false, NULL, &feat, &m->extra_msa,
                                               &m->extra_msa_dims);
        mf_arena_release2(fm);
        MF_TRY(st);
    }
    MF_TRY(stack_saved(s, &s->extra_saved, m->extra_stack_blocks));
    if (m->extra_stack_blocks > 0) {
        const mf_dropout_key key = stack_key(s, MF_DROPOUT_STACK_EXTRA_MSA);
        MF_TRY(mf_extra_msa_stack_forward(ctx, &s->a, &s->z1, &s->extra_saved, &s->extra_mask,
                                          &s->pair_mask, &m->extra_stack, &m->extra_stack_dims,
                                          m->extra_stack_blocks, &key));
    }
    return MF_OK;
}

/* Alg. 6 over the stack, then single = Linear(m[0]) (AF2 single_activations). Without
 * recomputation the extra-MSA stack's output z1 must stay as it is until its backward
 * (evoformer_stack.h), so the Evoformer gets its own copy z2; with recomputation it runs in
 * place. */
static mf_status forward_evoformer(trainer *s)
{
    mf_ctx *ctx = s->tctx;
    const mf_alphafold_model *m = s->tm;
    if (ctx->policy.recompute == MF_RECOMPUTE_OFF && m->extra_stack_blocks > 0) {
        MF_TRY(talloc(s, &s->z2, 3, s->z1.shape, "train.pair_evoformer"));
        MF_TRY(mf_convert(ctx, &s->z2, &s->z1));
    } else {
        s->z2 = s->z1;
    }
    MF_TRY(stack_saved(s, &s->evo_saved, m->evoformer_blocks));
    if (m->evoformer_blocks > 0) {
        const mf_dropout_key key = stack_key(s, MF_DROPOUT_STACK_EVOFORMER);
        MF_TRY(mf_evoformer_stack_forward(ctx, &s->msa, &s->z2, &s->evo_saved, &s->msa_mask,
                                          &s->pair_mask, &m->evoformer, &m->evoformer_dims,
                                          m->evoformer_blocks, &key));
    }
    MF_TRY(talloc(s, &s->single, 2, (const int64_t[]){s->N, m->cfg.channels.c_s}, "train.single"));
    mf_tensor row0 = row(&s->msa, 0);
    MF_TRY(mf_linear_forward(ctx, &s->single, &row0, &m->single_activations_weights,
                             &m->single_activations_bias, false));
    /* what the output modules read, on the host: the pair, the single, the MSA's first S rows */
    mf_tensor msa_s = mf_tensor_slice0(&s->msa, 0, s->S);
    MF_TRY(down(s, &s->z2, &s->hz2, "train.pair_host"));
    MF_TRY(down(s, &s->single, &s->hsingle, "train.single_host"));
    MF_TRY(down(s, &msa_s, &s->hmsa, "train.msa_host"));
    return MF_OK;
}

static mf_status forward_structure_module(trainer *s)
{
    const mf_alphafold_model *m = s->m;
    const int64_t N = s->N, L = m->sm_dims.num_layer, Cs = m->sm_dims.c_s;
    mf_structure_module_outputs *o = &s->so;
    const char *lab = "train.structure_module";
    MF_TRY(alloc(s, &o->frames, 3, (const int64_t[]){L, N, 7}, lab));
    MF_TRY(alloc(s, &o->sidechain_rot, 4, (const int64_t[]){L, N, 8, 9}, lab));
    MF_TRY(alloc(s, &o->sidechain_trans, 4, (const int64_t[]){L, N, 8, 3}, lab));
    MF_TRY(alloc(s, &o->positions, 4, (const int64_t[]){L, N, 14, 3}, lab));
    MF_TRY(alloc(s, &o->angles, 4, (const int64_t[]){L, N, MF_NUM_TORSIONS, 2}, lab));
    MF_TRY(alloc(s, &o->unnormalized_angles, 4, (const int64_t[]){L, N, MF_NUM_TORSIONS, 2}, lab));
    MF_TRY(alloc(s, &o->act, 2, (const int64_t[]){N, Cs}, lab));
    MF_TRY(alloc(s, &o->final_atom_positions, 3, (const int64_t[]){N, 37, 3}, lab));
    MF_TRY(alloc(s, &o->final_atom_mask, 2, (const int64_t[]){N, 37}, lab));
    const mf_structure_module_dropout_key key = {
        .training = s->opt->dropout, .seed = s->opt->dropout_seed, .recycle = s->recycle};
    if (s->opt->frozen_quat)
        return mf_structure_module_forward_frozen(s->ctx, o, s->opt->frozen_quat, &s->hsingle,
                                                  &s->hz2, &s->aatype, &s->seq_mask, &m->sm,
                                                  &m->sm_dims, &key);
    MF_TRY(mf_arena_alloc(s->ctx->arena, sizeof *s->sm_saved, lab, (void **)&s->sm_saved));
    memset(s->sm_saved, 0, sizeof *s->sm_saved);
    return mf_structure_module_forward(s->ctx, o, s->sm_saved, &s->hsingle, &s->hz2, &s->aatype,
                                       &s->seq_mask, &m->sm, &m->sm_dims, &key);
}

static mf_status forward_heads(trainer *s)
{
    mf_ctx *ctx = s->ctx;
    const mf_alphafold_model *m = s->m;
    const mf_heads_dims *hd = &m->heads_dims;
    const int64_t N = s->N, S = s->S;
    const char *lab = "train.heads";
    MF_TRY(alloc(s, &s->dist_logits, 3, (const int64_t[]){N, N, hd->distogram_num_bins}, lab));
    MF_TRY(alloc(s, &s->msa_logits, 3, (const int64_t[]){S, N, hd->masked_msa_num_output}, lab));
    MF_TRY(alloc(s, &s->er_logits, 2, (const int64_t[]){N, hd->experimentally_resolved_num_output},
                 lab));
    MF_TRY(alloc(s, &s->lddt_logits, 2, (const int64_t[]){N, hd->plddt_num_bins}, lab));
    MF_TRY(mf_distogram_head_forward(ctx, &s->dist_logits, false, &s->dist_saved, &s->hz2,
                                     &m->distogram, hd));
    MF_TRY(mf_masked_msa_head_forward(ctx, &s->msa_logits, false, &s->msa_head_saved, &s->hmsa,
                                      &m->masked_msa, hd));
    MF_TRY(mf_experimentally_resolved_head_forward(ctx, &s->er_logits, false, &s->er_saved,
                                                   &s->hsingle, &m->experimentally_resolved, hd));
    MF_TRY(mf_predicted_lddt_head_forward(ctx, &s->lddt_logits, false, &s->lddt_saved, &s->so.act,
                                          &m->predicted_lddt, hd));
    if (m->pae_head) {
        MF_TRY(alloc(s, &s->pae_logits, 3, (const int64_t[]){N, N, hd->pae_num_bins}, lab));
        MF_TRY(mf_predicted_aligned_error_head_forward(ctx, &s->pae_logits, false, &s->pae_saved,
                                                       &s->hz2, &m->predicted_aligned_error, hd));
    }
    s->lo = (mf_loss_outputs){
        .distogram_logits = s->dist_logits,
        .masked_msa_logits = s->msa_logits,
        .experimentally_resolved_logits = s->er_logits,
        .lddt_logits = s->lddt_logits,
        .pae_logits = s->pae_logits,
        .frames = s->so.frames,
        .sidechain_rot = s->so.sidechain_rot,
        .sidechain_trans = s->so.sidechain_trans,
        .positions = s->so.positions,
        .angles = s->so.angles,
        .unnormalized_angles = s->so.unnormalized_angles,
        .final_atom_positions = s->so.final_atom_positions,
    };
    return MF_OK;
}

/* ---- backward ------------------------------------------------------------------------------ */

static mf_status zeros_like(trainer *s, mf_tensor *t, const mf_tensor *like, const char *lab)
{
    return zeros(s, t, like->ndim, like->shape, lab);
}

/* d loss/total / d (logits, structure outputs). */
static mf_status backward_loss(trainer *s, mf_loss_outputs *gl)
{
    const char *lab = "train.output_grads";
    const mf_loss_outputs *o = &s->lo;
    memset(gl, 0, sizeof *gl);
    MF_TRY(zeros_like(s, &gl->distogram_logits, &o->distogram_logits, lab));
    MF_TRY(zeros_like(s, &gl->masked_msa_logits, &o->masked_msa_logits, lab));
    MF_TRY(zeros_like(s, &gl->experimentally_resolved_logits, &o->experimentally_resolved_logits,
                      lab));
    MF_TRY(zeros_like(s, &gl->lddt_logits, &o->lddt_logits, lab));
    if (s->m->pae_head) MF_TRY(zeros_like(s, &gl->pae_logits, &o->pae_logits, lab));
    MF_TRY(zeros_like(s, &gl->frames, &o->frames, lab));
    MF_TRY(zeros_like(s, &gl->sidechain_rot, &o->sidechain_rot, lab));
    MF_TRY(zeros_like(s, &gl->sidechain_trans, &o->sidechain_trans, lab));
    MF_TRY(zeros_like(s, &gl->positions, &o->positions, lab));
    MF_TRY(zeros_like(s, &gl->angles, &o->angles, lab));
    MF_TRY(zeros_like(s, &gl->unnormalized_angles, &o->unnormalized_angles, lab));
    return mf_loss_backward(s->ctx, gl, 1.0, o, &s->batch, &s->m->cfg);
}

/* The heads, the structure module and the single projection: d loss / d (MSA, pair) after the
 * Evoformer into dmsa, dz. */
static mf_status backward_output_modules(trainer *s, const mf_loss_outputs *gl, mf_tensor *dmsa,
                                         mf_tensor *dz)
{
    mf_ctx *ctx = s->ctx;
    const mf_alphafold_model *m = s->m;
    mf_alphafold_model *g = s->g;
    const mf_heads_dims *hd = &m->heads_dims;
    mf_tensor dsingle, dact;
    MF_TRY(zeros_like(s, &dsingle, &s->hsingle, "train.grad_single"));
    MF_TRY(zeros_like(s, &dact, &s->so.act, "train.grad_single"));
    mf_tensor dmsa_s = mf_tensor_slice0(dmsa, 0, s->S);
    MF_TRY(mf_predicted_lddt_head_backward(ctx, &dact, &g->predicted_lddt, &gl->lddt_logits,
                                           &s->lddt_saved, &s->so.act, &m->predicted_lddt, hd));
    MF_TRY(mf_experimentally_resolved_head_backward(
        ctx, &dsingle, &g->experimentally_resolved, &gl->experimentally_resolved_logits,
        &s->er_saved, &s->hsingle, &m->experimentally_resolved, hd));
    MF_TRY(mf_masked_msa_head_backward(ctx, &dmsa_s, &g->masked_msa, &gl->masked_msa_logits,
                                       &s->msa_head_saved, &s->hmsa, &m->masked_msa, hd));
    MF_TRY(mf_distogram_head_backward(ctx, dz, &g->distogram, &gl->distogram_logits, &s->dist_saved,
                                      &s->hz2, &m->distogram, hd));
    if (m->pae_head)
        MF_TRY(mf_predicted_aligned_error_head_backward(ctx, dz, &g->predicted_aligned_error,
                                                        &gl->pae_logits, &s->pae_saved, &s->hz2,
                                                        &m->predicted_aligned_error, hd));
    const mf_structure_module_outputs dout = {
        .frames = gl->frames,
        .sidechain_rot = gl->sidechain_rot,
        .sidechain_trans = gl->sidechain_trans,
        .positions = gl->positions,
        .angles = gl->angles,
        .unnormalized_angles = gl->unnormalized_angles,
        .act = dact,
    };
    MF_TRY(mf_structure_module_backward(ctx, &dsingle, dz, &g->sm, &dout, s->sm_saved, &s->hsingle,
                                        &s->hz2, &s->aatype, &s->seq_mask, &m->sm, &m->sm_dims));
    mf_tensor row0 = row(&s->hmsa, 0), drow0 = row(dmsa, 0);
    /* the Evoformer ran in place: row 0 of s->msa is its output, the projection's input */
    return mf_linear_backward(ctx, &drow0, &g->single_activations_weights,
                              &g->single_activations_bias, &dsingle, &row0,
                              &m->single_activations_weights);
}

/* The template stack per template (output layer norm, pair stack, pair embedder) from the
 * pointwise attention's gradient dt [T, N, N, c_t]. */
static mf_status backward_template_stacks(trainer *s, const mf_tensor *dt_ln)
{
    mf_ctx *ctx = s->tctx;
    const mf_alphafold_model *m = s->tm;
    mf_alphafold_model *g = s->tg;
    const int64_t N = s->N, T = s->T;
    mf_tensor dtt;
    MF_TRY(talloc(s, &dtt, 3, (const int64_t[]){N, N, m->template_pair_dims.c_t},
                  "train.grad_template_pair"));
    const int64_t cr = slice_rows(ctx, N);
    for (int64_t t = T - 1; t >= 0; t--) {
        MF_TRY(mf_fill(ctx, &dtt, 0.0f));
        mf_tensor tt = row(&s->t_stack, t), dln = row(dt_ln, t);
        mf_tensor mean = mf_tensor_slice0(&s->t_ln_mean, t * N * N, N * N);
        mf_tensor rstd = mf_tensor_slice0(&s->t_ln_rstd, t * N * N, N * N);
        MF_TRY(mf_layer_norm_backward(ctx, &dtt, &g->template_output_ln_scale,
                                      &g->template_output_ln_offset, &dln, &tt, &mean, &rstd,
                                      &m->template_output_ln_scale));
        if (m->template_stack_blocks > 0)
            MF_TRY(mf_template_pair_stack_backward(ctx, &dtt, &g->template_stack, &s->t_saved[t],
                                                   &s->pair_mask, &m->template_stack,
                                                   &m->template_stack_dims));
        MF_TRY(template_embedding(s, t, cr, NULL, &dtt));
    }
    return MF_OK;
}

static mf_status backward(trainer *s)
{
    mf_ctx *ctx = s->tctx;
    const mf_alphafold_model *m = s->tm;
    mf_alphafold_model *g = s->tg;
    mf_loss_outputs gl;
    mf_tensor dmsa, dz;
    MF_TRY(backward_loss(s, &gl));
    MF_TRY(zeros_like(s, &dmsa, &s->msa, "train.grad_msa"));
    MF_TRY(zeros_like(s, &dz, &s->z2, "train.grad_pair"));
    MF_TRY(backward_output_modules(s, &gl, &dmsa, &dz));
    /* d loss / d (the Evoformer's outputs) up to the trunk */
    MF_TRY(up(s, &dmsa, &dmsa, "train.grad_msa"));
    MF_TRY(up(s, &dz, &dz, "train.grad_pair"));
    if (m->evoformer_blocks > 0)
        MF_TRY(mf_evoformer_stack_backward(ctx, &dmsa, &dz, &g->evoformer, &s->evo_saved,
                                           &s->msa_mask, &s->pair_mask, &m->evoformer,
                                           &m->evoformer_dims));
    /* dmsa, dz: d loss / d (the Evoformer's inputs) */
    if (s->Tr > 0) {
        mf_tensor drows = mf_tensor_slice0(&dmsa, s->S, s->Tr);
        MF_TRY(mf_template_single_embedder_backward(ctx, NULL, &g->template_single, &drows,
                                                    &s->ts_saved, &s->angle_feat,
                                                    &m->template_single, &m->template_single_dims));
    }
    {
        mf_tensor da;
        MF_TRY(tzeros(s, &da, s->a.ndim, s->a.shape, "train.grad_extra_msa"));
        if (m->extra_stack_blocks > 0)
            MF_TRY(mf_extra_msa_stack_backward(ctx, &da, &dz, &g->extra_stack, &s->extra_saved,
                                               &s->extra_mask, &s->pair_mask, &m->extra_stack,
                                               &m->extra_stack_dims));
        const mf_arena_mark2_t fm = mf_arena_mark2(s->ctx->arena, ctx->arena);
        mf_tensor feat;
        mf_status st = extra_feature(s, &feat);
        if (st == MF_OK)
            st = mf_extra_msa_embedder_backward(ctx, NULL, &g->extra_msa, &da, NULL, &feat,
                                                &m->extra_msa, &m->extra_msa_dims);
        mf_arena_release2(fm);
        MF_TRY(st);
    }
    /* dz: d loss / d z1; through z1 = z0 + pointwise attention(z0, templates) */
    mf_tensor dz0 = dz;
    if (s->T > 0) {
        mf_tensor dt_ln;
        MF_TRY(talloc(s, &dz0, 3, dz.shape, "train.grad_pair_embedded"));
        MF_TRY(mf_convert(ctx, &dz0, &dz));
        MF_TRY(tzeros(s, &dt_ln, s->t_ln.ndim, s->t_ln.shape, "train.grad_template_pair_norm"));
        MF_TRY(mf_template_pointwise_attention_backward(
            ctx, &dz0, &dt_ln, &g->template_pointwise, &dz, &s->tpa_saved, &s->z0, &s->t_ln,
            &s->t_mask, &m->template_pointwise, &m->template_pointwise_dims));
        MF_TRY(backward_template_stacks(s, &dt_ln));
    }
    mf_tensor dmsa_s = mf_tensor_slice0(&dmsa, 0, s->S), drow0 = row(&dmsa, 0);
    MF_TRY(mf_input_embedder_backward(ctx, NULL, NULL, &g->input, &dmsa_s, &dz0, &s->in_saved,
                                      &s->target_feat, &s->msa_feat, &s->relpos_bins, &m->input,
                                      &m->input_dims));
    /* the recycled inputs are constants (AF2's stop_gradient): parameter gradients only */
    return mf_recycling_embedder_backward(ctx, NULL, NULL, &g->recycling, &drow0, &dz0,
                                          &s->rec_saved, &s->tprev.m1_prev, &s->tprev.z_prev,
                                          &s->rec_bins, &m->recycling, &m->recycling_dims);
}

/* ---- entry points -------------------------------------------------------------------------- */

static mf_status copy_out(mf_tensor *dst, const mf_tensor *src, const char *name)
{
    if (!dst || !dst->data) return MF_OK;
    const int64_t n = mf_tensor_numel(src);
    MF_REQUIRE((dst->dtype == MF_F32 || dst->dtype == MF_F64) && dst->device == MF_DEV_CPU &&
                   mf_tensor_numel(dst) == n,
               "train step: output %s needs a host f32 or f64 tensor of %lld values", name,
               (long long)n);
    for (int64_t i = 0; i < n; i++) {
        const double x = src->dtype == MF_F64 ? ((const double *)src->data)[i]
                                              : (double)((const float *)src->data)[i];
        if (dst->dtype == MF_F64)
            ((double *)dst->data)[i] = x;
        else
            ((float *)dst->data)[i] = (float)x;
    }
    return MF_OK;
}

static mf_status check_recycled(const trainer *s)
{
    const mf_recycled_state *p = s->prev;
    const int64_t N = s->N;
    const struct {
        const mf_tensor *t;
        const char *name;
        int ndim;
        int64_t shape[3];
    } want[] = {
        {&p->m1_prev, "m1_prev", 2, {N, s->m->cfg.channels.c_m, 0}},
        {&p->z_prev, "z_prev", 3, {N, N, s->m->cfg.channels.c_z}},
        {&p->x_prev, "x_prev", 3, {N, 37, 3}},
    };
    for (size_t k = 0; k < sizeof want / sizeof want[0]; k++) {
        const mf_tensor *t = want[k].t;
        bool ok = t->data && t->dtype == s->dt && t->ndim == want[k].ndim;
        for (int d = 0; ok && d < t->ndim; d++) ok = t->shape[d] == want[k].shape[d];
        if (!ok) {
            char got[96];
            return MF_ERROR(MF_ERR_INVALID, "train step: recycled %s is %s (expected %d dims, %s)",
                            want[k].name, mf_tensor_describe(t, got, sizeof got), want[k].ndim,
                            mf_dtype_name(s->dt));
        }
    }
    return MF_OK;
}

mf_status mf_train_iteration(mf_ctx *ctx, const mf_alphafold_model *m, mf_alphafold_model *g,
                             const mf_processed_features *f, int64_t slice, int64_t recycle_index,
                             const mf_recycled_state *prev, const mf_train_step_options *opt,
                             mf_train_step_result *res, mf_train_step_outputs *outs)
{
    MF_REQUIRE(ctx && ctx->arena && m && f && prev && res, "train iteration: arguments");
    MF_REQUIRE(ctx->device == MF_DEV_CPU,
               "train step: a CPU context is needed (the structure module, the feature "
               "construction and the losses run on the host)");
    MF_REQUIRE(slice >= 0 && slice < f->num_iterations, "train step: slice %lld of %lld",
               (long long)slice, (long long)f->num_iterations);
    const mf_train_step_options defaults = mf_train_step_default_options();
    trainer *s = NULL;
    mf_arena_mark_t mark = mf_arena_mark(ctx->arena);
    mf_arena_mark_t tmark =
        mf_arena_mark(opt && opt->trunk_ctx ? opt->trunk_ctx->arena : ctx->arena);
    mf_status st = MF_OK;
    MF_TRY_GOTO(mf_arena_alloc(ctx->arena, sizeof *s, "train.state", (void **)&s));
    memset(s, 0, sizeof *s);
    s->ctx = ctx;
    s->m = m;
    s->g = g;
    s->f = f;
    s->opt = opt ? opt : &defaults;
    s->prev = prev;
    s->dt = m->single_activations_weights.dtype;
    s->slice = slice;
    s->recycle = (uint32_t)recycle_index;
    s->tctx = s->opt->trunk_ctx ? s->opt->trunk_ctx : ctx;
    s->tm = s->opt->trunk_ctx ? s->opt->trunk_model : m;
    s->tg = s->opt->trunk_ctx ? s->opt->trunk_grads : g;
    s->tprev = *prev;
    if (split(s) && (!s->tm || !s->tctx->arena || (g && !s->tg) || s->dt != MF_F32)) {
        st = MF_ERROR(MF_ERR_INVALID, "train step: a trunk context needs its trunk model, trunk "
                                      "gradients (when g is given) and f32 parameters");
        goto cleanup;
    }
    if (s->dt != MF_F32 && s->dt != MF_F64) {
        st = MF_ERROR(MF_ERR_INVALID, "train step: parameters are %s (f32 or f64)",
                      mf_dtype_name(s->dt));
        goto cleanup;
    }
    if (g && s->opt->frozen_quat) {
        st = MF_ERROR(MF_ERR_INVALID, "train step: a frozen structure module (the finite-"
                                      "difference oracle) has no backward");
        goto cleanup;
    }
    if (g && g->single_activations_weights.dtype != s->dt) {
        st = MF_ERROR(MF_ERR_INVALID, "train step: gradients are %s, parameters %s",
                      mf_dtype_name(g->single_activations_weights.dtype), mf_dtype_name(s->dt));
        goto cleanup;
    }
    double t0 = now_seconds(), t1;
    MF_TRY_GOTO(load_features(s));
    MF_TRY_GOTO(check_recycled(s));
    MF_TRY_GOTO(mf_loss_batch_from_features(&s->batch, f, slice));
    res->use_clamped_fape = s->batch.use_clamped_fape;
    MF_TRY_GOTO(forward_embedders(s));
    MF_TRY_GOTO(forward_templates(s));
    MF_TRY_GOTO(forward_extra_msa(s));
    MF_TRY_GOTO(forward_evoformer(s));
    MF_TRY_GOTO(forward_structure_module(s));
    MF_TRY_GOTO(forward_heads(s));
    t1 = now_seconds();
    res->stage_seconds[MF_TRAIN_STAGE_FORWARD] += t1 - t0;
    t0 = t1;
    MF_TRY_GOTO(mf_loss_forward(ctx, &res->loss, &s->lo, &s->batch, &m->cfg));
    {
        mf_loss_batch unclamped = s->batch;
        unclamped.use_clamped_fape = 0.0f;
        MF_TRY_GOTO(mf_loss_forward(ctx, &res->loss_unclamped, &s->lo, &unclamped, &m->cfg));
    }
    t1 = now_seconds();
    res->stage_seconds[MF_TRAIN_STAGE_LOSS] += t1 - t0;
    t0 = t1;
    if (outs) {
        MF_TRY_GOTO(copy_out(&outs->final_atom_positions, &s->so.final_atom_positions,
                             "final_atom_positions"));
        MF_TRY_GOTO(copy_out(&outs->frames, &s->so.frames, "frames"));
        MF_TRY_GOTO(copy_out(&outs->positions, &s->so.positions, "positions"));
        if (outs->quat.data) {
            if (!s->sm_saved) {
                st = MF_ERROR(MF_ERR_INVALID, "train step: a frozen forward has no quaternion "
                                              "chain of its own (it is the one given)");
                goto cleanup;
            }
            MF_TRY_GOTO(copy_out(&outs->quat, &s->sm_saved->quat, "quat"));
        }
    }
    if (g) MF_TRY_GOTO(backward(s));
    MF_TRY_GOTO(mf_ctx_synchronize(s->tctx));
    res->stage_seconds[MF_TRAIN_STAGE_BACKWARD] += now_seconds() - t0;
cleanup:
    if (opt && opt->trunk_ctx) mf_arena_release(opt->trunk_ctx->arena, tmark);
    mf_arena_release(ctx->arena, mark);
    return st;
}

static mf_status recycled_state(mf_ctx *ctx, const mf_alphafold_model *m,
                                const mf_processed_features *f, int64_t iterations,
                                const mf_train_step_options *topt, mf_recycled_state *out)
{
    MF_REQUIRE(ctx && ctx->arena && m && f && out && iterations >= 0,
               "train recycled state: arguments");
    memset(out, 0, sizeof *out);
    if (iterations > 0) {
        const mf_alphafold_options opt = {.num_iterations = iterations,
                                          .trunk_ctx = topt ? topt->trunk_ctx : NULL,
                                          .trunk_model = topt ? topt->trunk_model : NULL};
        mf_alphafold_outputs o;
        MF_TRY(mf_alphafold_inference(ctx, m, f, &opt, &o));
        out->m1_prev = o.msa_first_row;
        out->z_prev = o.pair;
        out->x_prev = o.final_atom_positions;
        return MF_OK;
    }
    /* AF2 recycles zeros into iteration 0 */
    const mf_feature *aa = mf_processed_find(f, "aatype");
    MF_REQUIRE(aa && aa->array.ndim == 1, "features: 'aatype' [N] missing (the model needs it)");
    const int64_t N = aa->array.shape[0];
    const char *lab = "train.recycled";
    MF_TRY(mf_arena_zeros(ctx->arena, &out->m1_prev, MF_F32, 2,
                          (const int64_t[]){N, m->cfg.channels.c_m}, lab));
    MF_TRY(mf_arena_zeros(ctx->arena, &out->z_prev, MF_F32, 3,
                          (const int64_t[]){N, N, m->cfg.channels.c_z}, lab));
    return mf_arena_zeros(ctx->arena, &out->x_prev, MF_F32, 3, (const int64_t[]){N, 37, 3}, lab);
}

mf_status mf_train_recycled_state(mf_ctx *ctx, const mf_alphafold_model *m,
                                  const mf_processed_features *f, int64_t iterations,
                                  mf_recycled_state *out)
{
    return recycled_state(ctx, m, f, iterations, NULL, out);
}

mf_status mf_train_merge_trunk_grads(mf_param_store *trunk, mf_param_store *host, mf_arena *scratch)
{
    MF_REQUIRE(trunk && host && scratch && scratch->device == MF_DEV_CPU &&
                   trunk->count == host->count,
               "merge trunk gradients: arguments (two stores of the same parameters, a host "
               "arena)");
    for (int i = 0; i < host->count; i++) {
        mf_tensor *h = &host->entries[i].tensor, *t = &trunk->entries[i].tensor;
        MF_REQUIRE(!strcmp(host->entries[i].name, trunk->entries[i].name) && h->dtype == MF_F32 &&
                       t->dtype == MF_F32 && h->device == MF_DEV_CPU &&
                       mf_tensor_numel(h) == mf_tensor_numel(t),
                   "merge trunk gradients: parameter %d is '%s' (host f32) and '%s' on the trunk",
                   i, host->entries[i].name, trunk->entries[i].name);
        const int64_t n = mf_tensor_numel(h);
        mf_arena_mark_t mark = mf_arena_mark(scratch);
        mf_tensor c;
        mf_status st = mf_arena_copy(scratch, &c, t, "train.trunk_grad");
        if (st != MF_OK) mf_error_context(st, "%s", trunk->entries[i].name);
        if (st == MF_OK) {
            float *hd = h->data;
            const float *cd = c.data;
            for (int64_t k = 0; k < n; k++) hd[k] += cd[k];
            st = mf_device_memset0(t->device, t->data, (size_t)n * sizeof(float));
        }
        mf_arena_release(scratch, mark);
        MF_TRY(st);
    }
    return MF_OK;
}

mf_status mf_train_trunk_init(mf_train_trunk *t, mf_arena *arena, const mf_config *cfg,
                              const mf_param_store *params, const mf_param_store *grads)
{
    MF_REQUIRE(t && arena && cfg && params && grads, "trunk mirror: arguments");
    t->arena = arena;
    t->mark = mf_arena_mark(arena);
    MF_TRY(mf_param_store_mirror(params, arena, &t->params));
    MF_TRY(mf_param_store_mirror(grads, arena, &t->grads));
    MF_TRY(mf_alphafold_bind(&t->model, cfg, &t->params));
    return mf_alphafold_bind(&t->grad_model, cfg, &t->grads);
}

void mf_train_trunk_free(mf_train_trunk *t)
{
    if (!t) return;
    mf_param_store_free(&t->grads);
    mf_param_store_free(&t->params);
    if (t->arena) mf_arena_release(t->arena, t->mark);
    t->arena = NULL;
}

mf_status mf_train_step(mf_ctx *ctx, const mf_alphafold_model *m, mf_alphafold_model *g,
                        const mf_processed_features *f, const mf_train_step_options *opt,
                        mf_train_step_result *res, mf_train_step_outputs *outs)
{
    MF_REQUIRE(ctx && ctx->arena && m && f && res, "train step: arguments");
    MF_REQUIRE(f->num_iterations >= 1, "features: %lld recycling iterations",
               (long long)f->num_iterations);
    const mf_train_step_options defaults = mf_train_step_default_options();
    if (!opt) opt = &defaults;
    memset(res, 0, sizeof *res);
    const int64_t R = f->num_iterations, n = opt->num_iterations > 0 ? opt->num_iterations : R;
    res->num_iterations = n;
    const size_t base = mf_arena_used(ctx->arena);
    mf_arena_reset_peak(ctx->arena);
    mf_arena *ta = opt->trunk_ctx ? opt->trunk_ctx->arena : NULL;
    MF_REQUIRE(!ta || ta != ctx->arena, "train step: the trunk context needs its own arena");
    const size_t tbase = ta ? mf_arena_used(ta) : 0;
    if (ta) mf_arena_reset_peak(ta);
    mf_arena_mark_t mark = mf_arena_mark(ctx->arena);
    mf_status st = MF_OK;
    const double t0 = now_seconds();
    mf_recycled_state prev;
    MF_TRY_GOTO(recycled_state(ctx, m, f, n - 1, opt, &prev));
    res->stage_seconds[MF_TRAIN_STAGE_RECYCLE] = now_seconds() - t0;
    MF_TRY_GOTO(mf_train_iteration(ctx, m, g, f, (n - 1) % R, n - 1, &prev, opt, res, outs));
cleanup:
    res->arena_peak = mf_arena_high_water(ctx->arena) - base;
    if (ta) res->trunk_arena_peak = mf_arena_high_water(ta) - tbase;
    mf_arena_release(ctx->arena, mark);
    return st;
}
