/* The AlphaFold 2 monomer inference forward pass with recycling (see alphafold.h). */
#include "model/alphafold.h"

#include <math.h>
#include <string.h>
#include <time.h>

#include "core/ops.h"
#include "evoformer/evoformer_block.h"

static const char *const stage_names[MF_ALPHAFOLD_NUM_STAGES] = {
    "embedders", "templates", "extra_msa", "evoformer", "structure_module", "heads",
};

const char *mf_alphafold_stage_name(int stage)
{
    return stage >= 0 && stage < MF_ALPHAFOLD_NUM_STAGES ? stage_names[stage] : "?";
}

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---- features --------------------------------------------------------------------------- */

/* Feature `name` of iteration r as a host tensor of dtype dt and rank ndim (the shape is checked
 * by the callers against N, S, ...). */
static mf_status feature(const mf_processed_features *f, const char *name, int64_t r, mf_dtype dt,
                         int ndim, mf_tensor *out)
{
    if (!mf_processed_find(f, name))
        return MF_ERROR(MF_ERR_FORMAT, "features: '%s' missing (the model needs it)", name);
    MF_TRY(mf_processed_tensor(f, name, r, out));
    if (out->dtype != dt || out->ndim != ndim) {
        char buf[96];
        return MF_ERROR(MF_ERR_FORMAT, "features: '%s' is %s, expected %d dims of %s", name,
                        mf_tensor_describe(out, buf, sizeof buf), ndim, mf_dtype_name(dt));
    }
    return MF_OK;
}

static mf_status expect_shape(const mf_tensor *t, const char *name, int ndim, const int64_t *shape)
{
    bool ok = t->ndim == ndim;
    for (int k = 0; ok && k < ndim; k++) ok = t->shape[k] == shape[k];
    if (!ok) {
        char got[96], want[96] = "[";
        for (int k = 0; k < ndim; k++) {
            char d[24];
            snprintf(d, sizeof d, "%s%lld", k ? ", " : "", (long long)shape[k]);
            strncat(want, d, sizeof want - strlen(want) - 2);
        }
        strcat(want, "]");
        return MF_ERROR(MF_ERR_FORMAT, "features: '%s' is %s, expected %s", name,
                        mf_tensor_describe(t, got, sizeof got), want);
    }
    return MF_OK;
}

/* The features of one iteration. Template tensors have data == NULL when T = 0. */
typedef struct {
    int64_t N, S, E, T;
    mf_tensor aatype, residue_index, seq_mask, target_feat, msa_feat, msa_mask;
    mf_tensor extra_msa, extra_msa_mask, extra_has_deletion, extra_deletion_value;
    mf_tensor t_aatype, t_positions, t_atom_mask, t_pseudo_beta, t_pseudo_beta_mask, t_mask;
    mf_tensor t_sin_cos, t_alt_sin_cos, t_torsion_mask;
} features;

static mf_status load_features(const mf_alphafold_model *m, const mf_processed_features *f,
                               int64_t r, features *x)
{
    memset(x, 0, sizeof *x);
    MF_TRY(feature(f, "aatype", r, MF_I32, 1, &x->aatype));
    const int64_t N = x->N = x->aatype.shape[0];
    MF_REQUIRE(N >= 1, "features: no residues");
    MF_TRY(feature(f, "residue_index", r, MF_I32, 1, &x->residue_index));
    MF_TRY(expect_shape(&x->residue_index, "residue_index", 1, (const int64_t[]){N}));
    MF_TRY(feature(f, "seq_mask", r, MF_F32, 1, &x->seq_mask));
    MF_TRY(expect_shape(&x->seq_mask, "seq_mask", 1, (const int64_t[]){N}));
    MF_TRY(feature(f, "target_feat", r, MF_F32, 2, &x->target_feat));
    MF_TRY(expect_shape(&x->target_feat, "target_feat", 2,
                        (const int64_t[]){N, m->input_dims.target_feat_dim}));
    MF_TRY(feature(f, "msa_feat", r, MF_F32, 3, &x->msa_feat));
    const int64_t S = x->S = x->msa_feat.shape[0];
    MF_REQUIRE(S >= 1, "features: msa_feat has no row (the query must be row 0)");
    MF_TRY(expect_shape(&x->msa_feat, "msa_feat", 3,
                        (const int64_t[]){S, N, m->input_dims.msa_feat_dim}));
    MF_TRY(feature(f, "msa_mask", r, MF_F32, 2, &x->msa_mask));
    MF_TRY(expect_shape(&x->msa_mask, "msa_mask", 2, (const int64_t[]){S, N}));
    MF_TRY(feature(f, "extra_msa", r, MF_I32, 2, &x->extra_msa));
    const int64_t E = x->E = x->extra_msa.shape[0];
    MF_TRY(expect_shape(&x->extra_msa, "extra_msa", 2, (const int64_t[]){E, N}));
    MF_TRY(feature(f, "extra_msa_mask", r, MF_F32, 2, &x->extra_msa_mask));
    MF_TRY(expect_shape(&x->extra_msa_mask, "extra_msa_mask", 2, (const int64_t[]){E, N}));
    MF_TRY(feature(f, "extra_has_deletion", r, MF_F32, 2, &x->extra_has_deletion));
    MF_TRY(expect_shape(&x->extra_has_deletion, "extra_has_deletion", 2, (const int64_t[]){E, N}));
    MF_TRY(feature(f, "extra_deletion_value", r, MF_F32, 2, &x->extra_deletion_value));
    MF_TRY(
        expect_shape(&x->extra_deletion_value, "extra_deletion_value", 2, (const int64_t[]){E, N}));
    if (!m->templates || !mf_processed_find(f, "template_aatype")) return MF_OK;
    MF_TRY(feature(f, "template_aatype", r, MF_I32, 2, &x->t_aatype));
    const int64_t T = x->t_aatype.shape[0];
    if (T == 0) return MF_OK;
    MF_TRY(expect_shape(&x->t_aatype, "template_aatype", 2, (const int64_t[]){T, N}));
    MF_TRY(feature(f, "template_all_atom_positions", r, MF_F32, 4, &x->t_positions));
    MF_TRY(expect_shape(&x->t_positions, "template_all_atom_positions", 4,
                        (const int64_t[]){T, N, 37, 3}));
    const char *mask_name = mf_processed_find(f, "template_all_atom_mask")
                                ? "template_all_atom_mask"
                                : "template_all_atom_masks";
    MF_TRY(feature(f, mask_name, r, MF_F32, 3, &x->t_atom_mask));
    MF_TRY(expect_shape(&x->t_atom_mask, mask_name, 3, (const int64_t[]){T, N, 37}));
    MF_TRY(feature(f, "template_pseudo_beta", r, MF_F32, 3, &x->t_pseudo_beta));
    MF_TRY(expect_shape(&x->t_pseudo_beta, "template_pseudo_beta", 3, (const int64_t[]){T, N, 3}));
    MF_TRY(feature(f, "template_pseudo_beta_mask", r, MF_F32, 2, &x->t_pseudo_beta_mask));
    MF_TRY(expect_shape(&x->t_pseudo_beta_mask, "template_pseudo_beta_mask", 2,
                        (const int64_t[]){T, N}));
    MF_TRY(feature(f, "template_mask", r, MF_F32, 1, &x->t_mask));
    MF_TRY(expect_shape(&x->t_mask, "template_mask", 1, (const int64_t[]){T}));
    if (m->template_torsions) {
        MF_TRY(feature(f, "template_torsion_angles_sin_cos", r, MF_F32, 4, &x->t_sin_cos));
        MF_TRY(expect_shape(&x->t_sin_cos, "template_torsion_angles_sin_cos", 4,
                            (const int64_t[]){T, N, MF_NUM_TORSIONS, 2}));
        MF_TRY(feature(f, "template_alt_torsion_angles_sin_cos", r, MF_F32, 4, &x->t_alt_sin_cos));
        MF_TRY(expect_shape(&x->t_alt_sin_cos, "template_alt_torsion_angles_sin_cos", 4,
                            (const int64_t[]){T, N, MF_NUM_TORSIONS, 2}));
        MF_TRY(feature(f, "template_torsion_angles_mask", r, MF_F32, 3, &x->t_torsion_mask));
        MF_TRY(expect_shape(&x->t_torsion_mask, "template_torsion_angles_mask", 3,
                            (const int64_t[]){T, N, MF_NUM_TORSIONS}));
    }
    x->T = T;
    return MF_OK;
}

/* ---- helpers ---------------------------------------------------------------------------- */

static mf_status arena_f32(mf_ctx *ctx, mf_tensor *t, int ndim, const int64_t *shape,
                           const char *label)
{
    return mf_arena_tensor(ctx->arena, t, MF_F32, ndim, shape, label);
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

typedef struct {
    const mf_alphafold_options *opt;
    int64_t r;
    double t_start;
    mf_arena *host; /* for the host copy of a trunk tensor on a GPU (emit) */
} hook_state;

static void progress(const hook_state *h, const char *stage, int64_t block, int64_t num_blocks)
{
    if (h->opt->progress)
        h->opt->progress(h->opt->progress_data, stage, h->r, block, num_blocks,
                         now_seconds() - h->t_start);
}

static mf_status emit_dims(const hook_state *h, const char *stage, const char *name, int64_t t,
                           const float *data, int ndim, const int64_t *shape)
{
    if (!h->opt->hook) return MF_OK;
    mf_h5_array a = {.dtype = MF_F32, .ndim = ndim, .data = (void *)data};
    for (int k = 0; k < ndim; k++) a.shape[k] = shape[k];
    mf_status st = h->opt->hook(h->opt->hook_data, stage, name, h->r, t, &a);
    if (st != MF_OK) return mf_error_context(st, "hook for %s/%s", stage, name);
    return MF_OK;
}

static mf_status emit(const hook_state *h, const char *stage, const char *name, int64_t t,
                      const mf_tensor *x)
{
    if (!h->opt->hook) return MF_OK;
    MF_REQUIRE(x->dtype == MF_F32, "hook %s/%s: f32 expected", stage, name);
    if (x->device == MF_DEV_CPU) return emit_dims(h, stage, name, t, x->data, x->ndim, x->shape);
    MF_REQUIRE(h->host, "hook %s/%s: no host arena for a device tensor", stage, name);
    mf_arena_mark_t mark = mf_arena_mark(h->host);
    mf_tensor c;
    mf_status st = mf_arena_copy(h->host, &c, x, "alphafold.hook");
    if (st == MF_OK) st = emit_dims(h, stage, name, t, c.data, c.ndim, c.shape);
    mf_arena_release(h->host, mark);
    return st;
}

static mf_status emit_mask(const mf_alphafold_options *opt, const char *name, const mf_tensor *x)
{
    hook_state h = {opt, -1, 0.0, NULL};
    return emit(&h, "masks", name, -1, x);
}

/* ---- stages ----------------------------------------------------------------------------- */

/* Host (ctx, m): features, structure module, heads, outputs. Trunk (tctx, tm): embedders and
 * stacks; the same context and model as the host's unless options.trunk_ctx is set. Tensors
 * are the trunk's unless named host. */
typedef struct {
    mf_ctx *ctx, *tctx;
    const mf_alphafold_model *m, *tm;
    const features *x;
    hook_state h;
    mf_tensor *z;        /* [N, N, c_z] the pair, in place */
    mf_tensor *hz;       /* the pair on the host (z itself without a trunk context) */
    mf_tensor *m1;       /* [N, c_m] recycled first MSA row (in: previous, out: new) */
    mf_tensor *prev_pos; /* host [N, 37, 3] recycled positions */
    mf_tensor relpos_bins, pair_mask;
    mf_tensor msa;      /* [S + T', N, c_m] this iteration's MSA representation */
    mf_tensor msa_mask; /* [S + T', N] */
} iteration;

static bool split(const iteration *it)
{
    return it->tctx != it->ctx;
}

/* The trunk's view of host tensor src: src itself on a single context, else a copy in the
 * trunk's arena (released with the caller's trunk mark). */
static mf_status up(const iteration *it, const mf_tensor *src, mf_tensor *out, const char *label)
{
    if (!split(it)) {
        *out = *src;
        return MF_OK;
    }
    return mf_arena_copy(it->tctx->arena, out, src, label);
}

/* Stage code takes marks on both arenas (the same one on a single context) and releases both. */
static mf_arena_mark2_t take_marks(const iteration *it)
{
    return mf_arena_mark2(it->ctx->arena, it->tctx->arena);
}

/* Alg. 3, 4 and 32: z_prev becomes the recycling update in place, then the input embedder's
 * terms are added; m = input embedding with LN(m1_prev) added to row 0. */
static mf_status embed_inputs(iteration *it)
{
    mf_ctx *ctx = it->ctx, *tctx = it->tctx;
    const mf_alphafold_model *m = it->tm;
    const features *x = it->x;
    const int64_t N = x->N, S = x->S, Cm = m->input_dims.c_m, Cz = m->input_dims.c_z;
    mf_arena_mark2_t mark = take_marks(it);
    mf_status st = MF_OK;
    mf_tensor pb, hbins, bins, m1u, target_feat, msa_feat;
    MF_TRY_GOTO(arena_f32(ctx, &pb, 2, (const int64_t[]){N, 3}, "alphafold.prev_pseudo_beta"));
    MF_TRY_GOTO(mf_pseudo_beta(&pb, NULL, &x->aatype, it->prev_pos, NULL));
    MF_TRY_GOTO(mf_arena_tensor(ctx->arena, &hbins, MF_I32, 2, (const int64_t[]){N, N},
                                "alphafold.recycling_bins"));
    MF_TRY_GOTO(mf_recycling_dgram_bins(&hbins, &pb, &m->recycling_dims));
    MF_TRY_GOTO(up(it, &hbins, &bins, "alphafold.recycling_bins"));
    MF_TRY_GOTO(emit(&it->h, "recycling_embedder", "in_m1_prev", -1, it->m1));
    MF_TRY_GOTO(emit(&it->h, "recycling_embedder", "in_z_prev", -1, it->z));
    MF_TRY_GOTO(emit(&it->h, "recycling_embedder", "in_pseudo_beta_prev", -1, &pb));
    MF_TRY_GOTO(arena_f32(tctx, &m1u, 2, (const int64_t[]){N, Cm}, "alphafold.m1_update"));
    MF_TRY_GOTO(mf_recycling_embedder_forward(tctx, &m1u, it->z, false, NULL, it->m1, it->z, &bins,
                                              &m->recycling, &m->recycling_dims));
    MF_TRY_GOTO(emit(&it->h, "recycling_embedder", "out_m1_update", -1, &m1u));
    MF_TRY_GOTO(emit(&it->h, "recycling_embedder", "out_z_update", -1, it->z));

    MF_TRY_GOTO(up(it, &x->target_feat, &target_feat, "alphafold.target_feat"));
    MF_TRY_GOTO(up(it, &x->msa_feat, &msa_feat, "alphafold.msa_feat"));
    mf_tensor msa_s = mf_tensor_slice0(&it->msa, 0, S);
    MF_TRY_GOTO(mf_fill(tctx, &msa_s, 0.0f));
    MF_TRY_GOTO(mf_input_embedder_forward(tctx, &msa_s, it->z, true, NULL, &target_feat, &msa_feat,
                                          &it->relpos_bins, &m->input, &m->input_dims));
    if (it->h.opt->hook) {
        /* the input embedding alone, for the record (the fused path above never holds it) */
        mf_arena_mark_t hm = mf_arena_mark(tctx->arena);
        mf_tensor em, ez;
        MF_TRY_GOTO(arena_f32(tctx, &em, 3, (const int64_t[]){S, N, Cm}, "alphafold.hook"));
        MF_TRY_GOTO(arena_f32(tctx, &ez, 3, (const int64_t[]){N, N, Cz}, "alphafold.hook"));
        MF_TRY_GOTO(mf_input_embedder_forward(tctx, &em, &ez, false, NULL, &target_feat, &msa_feat,
                                              &it->relpos_bins, &m->input, &m->input_dims));
        MF_TRY_GOTO(emit(&it->h, "input_embedder", "out_msa", -1, &em));
        MF_TRY_GOTO(emit(&it->h, "input_embedder", "out_pair", -1, &ez));
        mf_arena_release(tctx->arena, hm);
    }
    mf_tensor row0 = row(&it->msa, 0);
    MF_TRY_GOTO(mf_add(tctx, &row0, &row0, &m1u));
cleanup:
    mf_arena_release2(mark);
    return st;
}

/* Alg. 2 lines 7-13 (AF2 TemplateEmbedding and the torsion-angle rows). */
static mf_status embed_templates(iteration *it)
{
    mf_ctx *ctx = it->ctx, *tctx = it->tctx;
    const mf_alphafold_model *m = it->tm;
    const features *x = it->x;
    const int64_t N = x->N, S = x->S, T = x->T;
    const int64_t Ct = m->template_pair_dims.c_t, F = m->template_pair_dims.pair_feat_dim;
    const bool hook = it->h.opt->hook != NULL;
    mf_arena_mark2_t mark = take_marks(it);
    mf_status st = MF_OK;
    MF_TRY_GOTO(emit(&it->h, "template_embedder", "in_pair", -1, it->z));
    mf_tensor t_all, t_mask;
    MF_TRY_GOTO(arena_f32(tctx, &t_all, 4, (const int64_t[]){T, N, N, Ct}, "alphafold.templates"));
    const int64_t cr = hook ? N : slice_rows(tctx, N);
    for (int64_t t = 0; t < T; t++) {
        mf_tensor tt = row(&t_all, t);
        mf_tensor pb = row(&x->t_pseudo_beta, t), pbm = row(&x->t_pseudo_beta_mask, t);
        mf_tensor aa = row(&x->t_aatype, t), pos = row(&x->t_positions, t);
        mf_tensor am = row(&x->t_atom_mask, t);
        /* the 88-channel feature a slice of rows at a time: never [N, N, 88] at once */
        mf_arena_mark2_t fm = take_marks(it);
        mf_tensor feat;
        MF_TRY_GOTO(
            arena_f32(ctx, &feat, 3, (const int64_t[]){cr, N, F}, "alphafold.template_pair_feat"));
        for (int64_t i0 = 0; i0 < N; i0 += cr) {
            const int64_t c = N - i0 < cr ? N - i0 : cr;
            mf_tensor fs = mf_tensor_slice0(&feat, 0, c), ys = mf_tensor_slice0(&tt, i0, c), tfs;
            MF_TRY_GOTO(
                mf_template_pair_feat(&fs, i0, &pb, &pbm, &aa, &pos, &am, &m->template_pair_dims));
            mf_arena_mark_t um = mf_arena_mark(tctx->arena);
            MF_TRY_GOTO(up(it, &fs, &tfs, "alphafold.template_pair_feat"));
            MF_TRY_GOTO(mf_template_pair_embedder_forward(
                tctx, &ys, false, NULL, &tfs, &m->template_pair, &m->template_pair_dims));
            if (split(it)) mf_arena_release(tctx->arena, um);
        }
        if (hook)
            MF_TRY_GOTO(emit(&it->h, "template_pair_embedder", "in_template_pair_feat", t, &feat));
        mf_arena_release2(fm);
        MF_TRY_GOTO(emit(&it->h, "template_pair_embedder", "out", t, &tt));
        MF_TRY_GOTO(emit(&it->h, "template_pair_stack", "in_t", t, &tt));
        if (m->template_stack_blocks > 0) {
            mf_dropout_key key = mf_dropout_key_inference();
            key.instance = (uint32_t)t;
            MF_TRY_GOTO(mf_template_pair_stack_forward(tctx, &tt, NULL, &it->pair_mask,
                                                       &m->template_stack, &m->template_stack_dims,
                                                       m->template_stack_blocks, &key));
        }
        MF_TRY_GOTO(mf_layer_norm_forward(tctx, &tt, NULL, NULL, &tt, &m->template_output_ln_scale,
                                          &m->template_output_ln_offset,
                                          MF_TEMPLATE_OUTPUT_LN_EPS));
        MF_TRY_GOTO(emit(&it->h, "template_pair_stack", "out_t", t, &tt));
    }
    /* Alg. 17: each pair attends over its templates; the update is added to z in place (a row
     * slice of the update reads only its own rows of z). */
    MF_TRY_GOTO(up(it, &x->t_mask, &t_mask, "alphafold.template_mask"));
    if (hook) {
        mf_tensor upd;
        MF_TRY_GOTO(arena_f32(tctx, &upd, 3, it->z->shape, "alphafold.hook"));
        MF_TRY_GOTO(mf_template_pointwise_attention_forward(tctx, &upd, false, NULL, it->z, &t_all,
                                                            &t_mask, &m->template_pointwise,
                                                            &m->template_pointwise_dims));
        MF_TRY_GOTO(emit(&it->h, "template_pointwise_att", "in_t", -1, &t_all));
        MF_TRY_GOTO(emit(&it->h, "template_pointwise_att", "in_z", -1, it->z));
        MF_TRY_GOTO(emit(&it->h, "template_pointwise_att", "out", -1, &upd));
        /* the reference records the embedding (the update), before it is added to the pair */
        MF_TRY_GOTO(emit(&it->h, "template_embedder", "out_template_pair_embedding", -1, &upd));
        MF_TRY_GOTO(mf_add(tctx, it->z, it->z, &upd));
    } else {
        MF_TRY_GOTO(mf_template_pointwise_attention_forward(tctx, it->z, true, NULL, it->z, &t_all,
                                                            &t_mask, &m->template_pointwise,
                                                            &m->template_pointwise_dims));
    }
    mf_arena_release2(mark);

    if (m->template_torsions) {
        /* Alg. 2 lines 7-8: T rows appended to the MSA, their mask the psi mask. */
        mf_tensor af, taf, rows = mf_tensor_slice0(&it->msa, S, T);
        MF_TRY_GOTO(arena_f32(ctx, &af, 3,
                              (const int64_t[]){T, N, m->template_single_dims.angle_feat_dim},
                              "alphafold.template_angle_feat"));
        MF_TRY_GOTO(mf_template_angle_feat(&af, &x->t_aatype, &x->t_sin_cos, &x->t_alt_sin_cos,
                                           &x->t_torsion_mask));
        MF_TRY_GOTO(up(it, &af, &taf, "alphafold.template_angle_feat"));
        MF_TRY_GOTO(mf_template_single_embedder_forward(
            tctx, &rows, false, NULL, &taf, &m->template_single, &m->template_single_dims));
        MF_TRY_GOTO(emit(&it->h, "template_single_embedder", "in_template_angle_feat", -1, &af));
        MF_TRY_GOTO(emit(&it->h, "template_single_embedder", "out", -1, &rows));
        MF_TRY_GOTO(emit(&it->h, "template_embedder", "out_template_single_embedding", -1, &rows));
    }
cleanup:
    mf_arena_release2(mark);
    return st;
}

/* Alg. 2 lines 14-16: the extra MSA embedded and run through its stack, which updates z. */
static mf_status extra_msa(iteration *it)
{
    mf_ctx *ctx = it->ctx, *tctx = it->tctx;
    const mf_alphafold_model *m = it->tm;
    const features *x = it->x;
    const int64_t N = x->N, Ce = m->extra_msa_dims.c_e;
    /* E = 0: one fully masked row, the same z as AF2's padding to a fixed row count */
    const int64_t E = x->E > 0 ? x->E : 1;
    mf_arena_mark2_t mark = take_marks(it);
    mf_status st = MF_OK;
    mf_tensor a, mask, feat, tfeat;
    MF_TRY_GOTO(arena_f32(tctx, &a, 3, (const int64_t[]){E, N, Ce}, "alphafold.extra_msa"));
    if (x->E > 0) {
        MF_TRY_GOTO(up(it, &x->extra_msa_mask, &mask, "alphafold.extra_msa_mask"));
    } else {
        MF_TRY_GOTO(mf_arena_zeros(tctx->arena, &mask, MF_F32, 2, (const int64_t[]){E, N},
                                   "alphafold.extra_msa_mask"));
    }
    {
        mf_arena_mark2_t fm = take_marks(it);
        MF_TRY_GOTO(mf_arena_zeros(ctx->arena, &feat, MF_F32, 3,
                                   (const int64_t[]){E, N, m->extra_msa_dims.extra_msa_feat_dim},
                                   "alphafold.extra_msa_feat"));
        if (x->E > 0)
            MF_TRY_GOTO(mf_extra_msa_feat(&feat, &x->extra_msa, &x->extra_has_deletion,
                                          &x->extra_deletion_value));
        MF_TRY_GOTO(up(it, &feat, &tfeat, "alphafold.extra_msa_feat"));
        MF_TRY_GOTO(mf_extra_msa_embedder_forward(tctx, &a, false, NULL, &tfeat, &m->extra_msa,
                                                  &m->extra_msa_dims));
        MF_TRY_GOTO(emit(&it->h, "extra_msa_embedder", "in_extra_msa_feat", -1, &feat));
        mf_arena_release2(fm);
    }
    MF_TRY_GOTO(emit(&it->h, "extra_msa_embedder", "out", -1, &a));
    MF_TRY_GOTO(emit(&it->h, "extra_msa_stack", "in_a", -1, &a));
    MF_TRY_GOTO(emit(&it->h, "extra_msa_stack", "in_z", -1, it->z));
    if (m->extra_stack_blocks > 0) {
        mf_dropout_key key = mf_dropout_key_inference();
        MF_TRY_GOTO(mf_extra_msa_stack_forward(tctx, &a, it->z, NULL, &mask, &it->pair_mask,
                                               &m->extra_stack, &m->extra_stack_dims,
                                               m->extra_stack_blocks, &key));
    }
    MF_TRY_GOTO(emit(&it->h, "extra_msa_stack", "out_z", -1, it->z));
cleanup:
    mf_arena_release2(mark);
    return st;
}

/* Alg. 6 for every block, in place, then single = Linear(m[0]) (AF2 single_activations). */
static mf_status evoformer(iteration *it, mf_tensor *single)
{
    mf_ctx *ctx = it->tctx;
    const mf_alphafold_model *m = it->tm;
    MF_TRY(emit(&it->h, "evoformer", "in_m", -1, &it->msa));
    MF_TRY(emit(&it->h, "evoformer", "in_z", -1, it->z));
    mf_tensor views[MF_EVOFORMER_BLOCK_NPARAMS];
    const mf_dropout_key key = mf_dropout_key_inference();
    for (int64_t k = 0; k < m->evoformer_blocks; k++) {
        char stage[48];
        snprintf(stage, sizeof stage, "evoformer_block%lld", (long long)k);
        MF_TRY(emit(&it->h, stage, "in_m", -1, &it->msa));
        MF_TRY(emit(&it->h, stage, "in_z", -1, it->z));
        MF_TRY(mf_evo_params_block_view(MF_PARAMS_AS_ARRAY(&m->evoformer),
                                        MF_EVOFORMER_BLOCK_NPARAMS, m->evoformer_blocks, k, views));
        mf_dropout_key kk = key;
        kk.stack = MF_DROPOUT_STACK_EVOFORMER;
        kk.block = (uint32_t)k;
        MF_TRY(mf_evoformer_block_forward(
            ctx, &it->msa, it->z, NULL, &it->msa, it->z, &it->msa_mask, &it->pair_mask,
            (const mf_evoformer_block_params *)(void *)views, &m->evoformer_dims, &kk));
        MF_TRY(emit(&it->h, stage, "out_m", -1, &it->msa));
        MF_TRY(emit(&it->h, stage, "out_z", -1, it->z));
        /* a GPU's blocks are queued, not done: the time reported is when the block finished */
        if (it->h.opt->progress) MF_TRY(mf_ctx_synchronize(ctx));
        progress(&it->h, "evoformer", k, m->evoformer_blocks);
    }
    mf_tensor row0 = row(&it->msa, 0);
    MF_TRY(mf_linear_forward(ctx, single, &row0, &m->single_activations_weights,
                             &m->single_activations_bias, false));
    MF_TRY(mf_convert(ctx, it->m1, &row0));
    MF_TRY(emit(&it->h, "evoformer", "out_m", -1, &it->msa));
    MF_TRY(emit(&it->h, "evoformer", "out_z", -1, it->z));
    MF_TRY(emit(&it->h, "evoformer", "out_s", -1, single));
    return MF_OK;
}

/* Alg. 20; with a hook, the per-layer states are taken from a run that keeps them (the
 * training path, without dropout: the same numbers). */
static mf_status structure_module(iteration *it, mf_alphafold_outputs *out)
{
    mf_ctx *ctx = it->ctx;
    const mf_alphafold_model *m = it->m;
    const int64_t N = it->x->N, L = m->sm_dims.num_layer, Cs = m->sm_dims.c_s;
    mf_structure_module_outputs so = {
        .frames = out->sm_frames,
        .positions = out->sm_positions,
        .angles = out->sm_angles,
        .act = out->sm_single,
        .final_atom_positions = out->final_atom_positions,
        .final_atom_mask = out->final_atom_mask,
    };
    if (!it->h.opt->hook)
        return mf_structure_module_forward(ctx, &so, NULL, &out->single, it->hz, &it->x->aatype,
                                           &it->x->seq_mask, &m->sm, &m->sm_dims, NULL);
    mf_arena_mark_t mark = mf_arena_mark(ctx->arena);
    mf_status st = MF_OK;
    MF_TRY_GOTO(emit(&it->h, "structure_module", "in_single", -1, &out->single));
    MF_TRY_GOTO(emit(&it->h, "structure_module", "in_pair", -1, it->hz));
    mf_tensor frames4;
    MF_TRY_GOTO(
        arena_f32(ctx, &so.sidechain_rot, 4, (const int64_t[]){L, N, 8, 9}, "alphafold.hook"));
    MF_TRY_GOTO(
        arena_f32(ctx, &so.sidechain_trans, 4, (const int64_t[]){L, N, 8, 3}, "alphafold.hook"));
    MF_TRY_GOTO(arena_f32(ctx, &so.unnormalized_angles, 4,
                          (const int64_t[]){L, N, MF_NUM_TORSIONS, 2}, "alphafold.hook"));
    MF_TRY_GOTO(arena_f32(ctx, &frames4, 1, (const int64_t[]){L * N * 8 * 16}, "alphafold.hook"));
    mf_structure_module_saved *saved = NULL;
    MF_TRY_GOTO(mf_arena_alloc(ctx->arena, sizeof *saved, "alphafold.hook", (void **)&saved));
    memset(saved, 0, sizeof *saved);
    MF_TRY_GOTO(mf_structure_module_forward(ctx, &so, saved, &out->single, it->hz, &it->x->aatype,
                                            &it->x->seq_mask, &m->sm, &m->sm_dims, NULL));
    /* the side-chain frames as 4x4 homogeneous matrices (AF2's Rigid.to_tensor_4x4) */
    const float *rot = so.sidechain_rot.data, *tr = so.sidechain_trans.data;
    float *f4 = frames4.data;
    for (int64_t g = 0; g < L * N * 8; g++) {
        float *o = f4 + g * 16;
        for (int a = 0; a < 3; a++) {
            for (int b = 0; b < 3; b++) o[a * 4 + b] = rot[g * 9 + a * 3 + b];
            o[a * 4 + 3] = tr[g * 3 + a];
        }
        o[12] = o[13] = o[14] = 0.0f;
        o[15] = 1.0f;
    }
    mf_tensor states = mf_tensor_slice0(&saved->act, 1, L);
    MF_TRY_GOTO(emit(&it->h, "structure_module", "out_frames", -1, &so.frames));
    MF_TRY_GOTO(emit_dims(&it->h, "structure_module", "out_sidechain_frames", -1, frames4.data, 5,
                          (const int64_t[]){L, N, 8, 4, 4}));
    MF_TRY_GOTO(
        emit(&it->h, "structure_module", "out_unnormalized_angles", -1, &so.unnormalized_angles));
    MF_TRY_GOTO(emit(&it->h, "structure_module", "out_angles", -1, &so.angles));
    MF_TRY_GOTO(emit(&it->h, "structure_module", "out_positions", -1, &so.positions));
    MF_TRY_GOTO(emit_dims(&it->h, "structure_module", "out_states", -1, states.data, 3,
                          (const int64_t[]){L, N, Cs}));
    MF_TRY_GOTO(emit(&it->h, "structure_module", "out_single", -1, &so.act));
cleanup:
    mf_arena_release(ctx->arena, mark);
    return st;
}

static mf_status heads(iteration *it, const mf_alphafold_options *opt, mf_alphafold_outputs *out)
{
    mf_ctx *ctx = it->ctx;
    const mf_alphafold_model *m = it->m;
    const mf_heads_dims *hd = &m->heads_dims;
    MF_TRY(mf_predicted_lddt_head_forward(ctx, &out->lddt_logits, false, NULL, &out->sm_single,
                                          &m->predicted_lddt, hd));
    MF_TRY(mf_compute_plddt(&out->plddt, &out->lddt_logits));
    if (opt->all_heads) {
        mf_tensor msa_s = mf_tensor_slice0(&it->msa, 0, it->x->S), hmsa = msa_s;
        mf_arena_mark_t mark = mf_arena_mark(ctx->arena);
        if (split(it)) MF_TRY(mf_arena_copy(ctx->arena, &hmsa, &msa_s, "alphafold.msa_host"));
        MF_TRY(mf_distogram_head_forward(ctx, &out->distogram_logits, false, NULL, it->hz,
                                         &m->distogram, hd));
        MF_TRY(mf_masked_msa_head_forward(ctx, &out->masked_msa_logits, false, NULL, &hmsa,
                                          &m->masked_msa, hd));
        mf_arena_release(ctx->arena, mark);
        MF_TRY(mf_experimentally_resolved_head_forward(ctx, &out->experimentally_resolved_logits,
                                                       false, NULL, &out->single,
                                                       &m->experimentally_resolved, hd));
    }
    if (m->pae_head)
        MF_TRY(mf_predicted_aligned_error_head_forward(ctx, &out->pae_logits, false, NULL, it->hz,
                                                       &m->predicted_aligned_error, hd));
    return MF_OK;
}

/* ---- the forward pass ------------------------------------------------------------------- */

static mf_status alloc_outputs(mf_ctx *ctx, const mf_alphafold_model *m, const features *x,
                               const mf_alphafold_options *opt, mf_alphafold_outputs *o)
{
    const int64_t N = x->N, S = x->S, L = m->sm_dims.num_layer;
    const mf_heads_dims *hd = &m->heads_dims;
    const char *lab = "alphafold.outputs";
    mf_arena *a = ctx->arena;
    MF_TRY(
        mf_arena_zeros(a, &o->final_atom_positions, MF_F32, 3, (const int64_t[]){N, 37, 3}, lab));
    MF_TRY(mf_arena_zeros(a, &o->final_atom_mask, MF_F32, 2, (const int64_t[]){N, 37}, lab));
    MF_TRY(mf_arena_zeros(a, &o->lddt_logits, MF_F32, 2, (const int64_t[]){N, hd->plddt_num_bins},
                          lab));
    MF_TRY(mf_arena_zeros(a, &o->plddt, MF_F32, 1, (const int64_t[]){N}, lab));
    if (opt->all_heads) {
        MF_TRY(mf_arena_zeros(a, &o->distogram_logits, MF_F32, 3,
                              (const int64_t[]){N, N, hd->distogram_num_bins}, lab));
        MF_TRY(mf_arena_zeros(a, &o->masked_msa_logits, MF_F32, 3,
                              (const int64_t[]){S, N, hd->masked_msa_num_output}, lab));
        MF_TRY(mf_arena_zeros(a, &o->experimentally_resolved_logits, MF_F32, 2,
                              (const int64_t[]){N, hd->experimentally_resolved_num_output}, lab));
    }
    if (m->pae_head)
        MF_TRY(mf_arena_zeros(a, &o->pae_logits, MF_F32, 3,
                              (const int64_t[]){N, N, hd->pae_num_bins}, lab));
    MF_TRY(
        mf_arena_zeros(a, &o->single, MF_F32, 2, (const int64_t[]){N, m->cfg.channels.c_s}, lab));
    MF_TRY(mf_arena_zeros(a, &o->msa_first_row, MF_F32, 2,
                          (const int64_t[]){N, m->cfg.channels.c_m}, lab));
    MF_TRY(mf_arena_zeros(a, &o->sm_frames, MF_F32, 3, (const int64_t[]){L, N, 7}, lab));
    MF_TRY(mf_arena_zeros(a, &o->sm_positions, MF_F32, 4, (const int64_t[]){L, N, 14, 3}, lab));
    MF_TRY(mf_arena_zeros(a, &o->sm_angles, MF_F32, 4, (const int64_t[]){L, N, MF_NUM_TORSIONS, 2},
                          lab));
    MF_TRY(mf_arena_zeros(a, &o->sm_single, MF_F32, 2, (const int64_t[]){N, m->cfg.channels.c_s},
                          lab));
    /* the recycled pair: zeros before iteration 0, as AF2 */
    MF_TRY(mf_arena_zeros(a, &o->pair, MF_F32, 3, (const int64_t[]){N, N, m->cfg.channels.c_z},
                          "alphafold.pair"));
    return MF_OK;
}

/* atom37 index of Calpha (order N, CA, C, ...). */
#define ATOM37_CA 1

/* The recycle_early_stop_tolerance criterion (alphafold.h): RMS over the seq_mask pairs of the
 * change of the Calpha-Calpha distances, prev_ca [N, 3] against pos [N, 37, 3]. */
static double ca_distance_change(const float *prev_ca, const float *pos, const float *seq_mask,
                                 int64_t N)
{
    double sum = 0, count = 0;
    for (int64_t i = 0; i < N; i++) {
        const float *pi = prev_ca + i * 3, *xi = pos + (i * 37 + ATOM37_CA) * 3;
        for (int64_t j = 0; j < N; j++) {
            const double w = (double)seq_mask[i] * seq_mask[j];
            if (w == 0) continue;
            const float *pj = prev_ca + j * 3, *xj = pos + (j * 37 + ATOM37_CA) * 3;
            double dp = 0, dx = 0;
            for (int c = 0; c < 3; c++) {
                dp += ((double)pi[c] - pj[c]) * ((double)pi[c] - pj[c]);
                dx += ((double)xi[c] - xj[c]) * ((double)xi[c] - xj[c]);
            }
            const double d = sqrt(dx) - sqrt(dp);
            sum += w * d * d;
            count += w;
        }
    }
    return count > 0 ? sqrt(sum / count) : 0;
}

mf_status mf_alphafold_inference(mf_ctx *ctx, const mf_alphafold_model *m,
                                 const mf_processed_features *f, const mf_alphafold_options *opt,
                                 mf_alphafold_outputs *out)
{
    MF_REQUIRE(ctx && ctx->arena && m && f && opt && out, "alphafold inference: arguments");
    MF_REQUIRE(ctx->device == MF_DEV_CPU,
               "alphafold inference: a CPU context is needed (the structure module and the "
               "feature construction run on the host; options.trunk_ctx puts the trunk on a GPU)");
    mf_ctx *tctx = opt->trunk_ctx ? opt->trunk_ctx : ctx;
    const mf_alphafold_model *tm = opt->trunk_ctx ? opt->trunk_model : m;
    MF_REQUIRE(tm && tctx->arena, "alphafold inference: a trunk context needs its trunk model");
    MF_REQUIRE(tm->input_dims.c_m == m->input_dims.c_m && tm->input_dims.c_z == m->input_dims.c_z &&
                   tm->evoformer_blocks == m->evoformer_blocks &&
                   tm->extra_stack_blocks == m->extra_stack_blocks &&
                   tm->templates == m->templates && tm->template_torsions == m->template_torsions &&
                   tm->cfg.channels.c_s == m->cfg.channels.c_s,
               "alphafold inference: the trunk model is not the host model's network");
    MF_REQUIRE(f->num_iterations >= 1, "features: %lld recycling iterations",
               (long long)f->num_iterations);
    memset(out, 0, sizeof *out);
    const int64_t R = f->num_iterations;
    const int64_t iters = opt->num_iterations > 0 ? opt->num_iterations : R;
    features x;
    MF_TRY(load_features(m, f, 0, &x));
    const int64_t N = x.N;
    mf_arena_mark_t start = mf_arena_mark(ctx->arena), tstart = mf_arena_mark(tctx->arena);
    mf_status st = MF_OK;
    iteration it = {
        .ctx = ctx, .tctx = tctx, .m = m, .tm = tm, .h = {opt, 0, now_seconds(), ctx->arena}};
    MF_TRY_GOTO(alloc_outputs(ctx, m, &x, opt, out));
    out->num_res = N;
    out->num_seq = x.S;
    out->num_iterations = iters;
    out->recycle_change = -1;
    const bool early_stop = opt->recycle_early_stop_tolerance > 0;
    mf_tensor prev_ca = {0}; /* [N, 3] the previous iteration's Calpha positions */
    if (early_stop)
        MF_TRY_GOTO(arena_f32(ctx, &prev_ca, 2, (const int64_t[]){N, 3}, "alphafold.prev_ca"));
    /* on a trunk context: the pair, the recycled first row and the single live there */
    mf_tensor tz, tm1, tsingle;
    it.z = it.hz = &out->pair;
    it.m1 = &out->msa_first_row;
    mf_tensor *single = &out->single;
    if (split(&it)) {
        MF_TRY_GOTO(mf_arena_zeros(tctx->arena, &tz, MF_F32, 3, out->pair.shape, "alphafold.pair"));
        MF_TRY_GOTO(mf_arena_zeros(tctx->arena, &tm1, MF_F32, 2, out->msa_first_row.shape,
                                   "alphafold.msa_first_row"));
        MF_TRY_GOTO(mf_arena_tensor(tctx->arena, &tsingle, MF_F32, 2, out->single.shape,
                                    "alphafold.single"));
        it.z = &tz;
        it.m1 = &tm1;
        single = &tsingle;
    }
    it.prev_pos = &out->final_atom_positions;
    mf_tensor relpos_bins, pair_mask;
    MF_TRY_GOTO(mf_arena_tensor(ctx->arena, &relpos_bins, MF_I32, 2, (const int64_t[]){N, N},
                                "alphafold.relpos_bins"));
    MF_TRY_GOTO(mf_relpos_bins(&relpos_bins, &x.residue_index, m->input_dims.max_relative_feature));
    MF_TRY_GOTO(arena_f32(ctx, &pair_mask, 2, (const int64_t[]){N, N}, "alphafold.pair_mask"));
    {
        /* AF2 mask_2d = seq_mask[:, None] * seq_mask[None, :] */
        const float *sm = x.seq_mask.data;
        float *pm = pair_mask.data;
        for (int64_t i = 0; i < N; i++)
            for (int64_t j = 0; j < N; j++) pm[i * N + j] = sm[i] * sm[j];
    }
    MF_TRY_GOTO(emit_mask(opt, "pair_mask", &pair_mask));
    MF_TRY_GOTO(up(&it, &relpos_bins, &it.relpos_bins, "alphafold.relpos_bins"));
    MF_TRY_GOTO(up(&it, &pair_mask, &it.pair_mask, "alphafold.pair_mask"));

    for (int64_t r = 0; r < iters; r++) {
        bool last = r == iters - 1;
        MF_TRY_GOTO(load_features(m, f, r % R, &x));
        if (x.N != N) {
            st = MF_ERROR(MF_ERR_FORMAT, "features: iteration %lld has %lld residues, not %lld",
                          (long long)r, (long long)x.N, (long long)N);
            goto cleanup;
        }
        it.x = &x;
        it.h.r = r;
        const int64_t Tr = m->template_torsions ? x.T : 0; /* template rows of the MSA */
        mf_arena_mark2_t im = take_marks(&it);
        double t0 = now_seconds(), t1;
        MF_TRY_GOTO(arena_f32(tctx, &it.msa, 3, (const int64_t[]){x.S + Tr, N, m->input_dims.c_m},
                              "alphafold.msa"));
        {
            mf_tensor msa_mask;
            MF_TRY_GOTO(
                arena_f32(ctx, &msa_mask, 2, (const int64_t[]){x.S + Tr, N}, "alphafold.msa_mask"));
            mf_tensor head = mf_tensor_slice0(&msa_mask, 0, x.S);
            MF_TRY_GOTO(mf_convert(ctx, &head, &x.msa_mask));
            if (Tr > 0) {
                mf_tensor tail = mf_tensor_slice0(&msa_mask, x.S, Tr);
                MF_TRY_GOTO(mf_template_row_mask(&tail, &x.t_torsion_mask));
            }
            if (r == 0) MF_TRY_GOTO(emit_mask(opt, "evoformer_msa_mask", &msa_mask));
            MF_TRY_GOTO(up(&it, &msa_mask, &it.msa_mask, "alphafold.msa_mask"));
        }
        MF_TRY_GOTO(embed_inputs(&it));
        MF_TRY_GOTO(mf_ctx_synchronize(tctx));
        t1 = now_seconds();
        out->stage_seconds[MF_ALPHAFOLD_STAGE_EMBEDDERS] += t1 - t0;
        progress(&it.h, "embedders", -1, 0);
        t0 = t1;
        if (x.T > 0) MF_TRY_GOTO(embed_templates(&it));
        MF_TRY_GOTO(mf_ctx_synchronize(tctx));
        t1 = now_seconds();
        out->stage_seconds[MF_ALPHAFOLD_STAGE_TEMPLATES] += t1 - t0;
        progress(&it.h, "templates", -1, 0);
        t0 = t1;
        MF_TRY_GOTO(extra_msa(&it));
        MF_TRY_GOTO(mf_ctx_synchronize(tctx));
        t1 = now_seconds();
        out->stage_seconds[MF_ALPHAFOLD_STAGE_EXTRA_MSA] += t1 - t0;
        progress(&it.h, "extra_msa", -1, 0);
        t0 = t1;
        MF_TRY_GOTO(evoformer(&it, single));
        if (split(&it)) {
            /* the structure module and the heads read them on the host */
            MF_TRY_GOTO(mf_tensor_transfer(&out->pair, &tz, "alphafold.pair"));
            MF_TRY_GOTO(mf_tensor_transfer(&out->single, &tsingle, "alphafold.single"));
            MF_TRY_GOTO(mf_tensor_transfer(&out->msa_first_row, &tm1, "alphafold.msa_first_row"));
        }
        t1 = now_seconds();
        out->stage_seconds[MF_ALPHAFOLD_STAGE_EVOFORMER] += t1 - t0;
        progress(&it.h, "evoformer", -1, 0);
        t0 = t1;
        if (early_stop && r > 0) {
            const float *pos = out->final_atom_positions.data;
            float *ca = prev_ca.data;
            for (int64_t i = 0; i < N; i++)
                for (int c = 0; c < 3; c++) ca[i * 3 + c] = pos[(i * 37 + ATOM37_CA) * 3 + c];
        }
        MF_TRY_GOTO(structure_module(&it, out));
        if (early_stop && r > 0) {
            out->recycle_change = ca_distance_change(prev_ca.data, out->final_atom_positions.data,
                                                     x.seq_mask.data, N);
            if (out->recycle_change < opt->recycle_early_stop_tolerance && !last) {
                last = true;
                out->num_iterations = r + 1;
            }
        }
        t1 = now_seconds();
        out->stage_seconds[MF_ALPHAFOLD_STAGE_STRUCTURE_MODULE] += t1 - t0;
        progress(&it.h, "structure_module", -1, 0);
        t0 = t1;
        if (last) MF_TRY_GOTO(heads(&it, opt, out));
        out->stage_seconds[MF_ALPHAFOLD_STAGE_HEADS] += now_seconds() - t0;
        if (last) progress(&it.h, "heads", -1, 0);
        mf_arena_release2(im);
        if (last) break;
    }
    if (split(&it)) mf_arena_release(tctx->arena, tstart);
    return MF_OK;
cleanup:
    if (split(&it)) mf_arena_release(tctx->arena, tstart);
    mf_arena_release(ctx->arena, start);
    memset(out, 0, sizeof *out);
    return st;
}
