/* The AlphaFold 2 training loss of one sample (see loss.h). */
#include "model/loss.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "model/losses_simple.h"
#include "protein/residue_constants.h"
#include "structure_module/rigid.h"

static const char *const term_names[MF_LOSS_NUM_TERMS] = {
    "distogram",  "experimentally_resolved", "fape",      "plddt_loss",
    "masked_msa", "supervised_chi",          "violation", "predicted_aligned_error",
};

const char *mf_loss_term_name(int k)
{
    return k >= 0 && k < MF_LOSS_NUM_TERMS ? term_names[k] : "?";
}

double mf_loss_term_weight(const mf_loss_config *cfg, int k)
{
    const mf_loss_weights_config *w = &cfg->weights;
    switch (k) {
    case MF_LOSS_DISTOGRAM:
        return w->distogram;
    case MF_LOSS_EXPERIMENTALLY_RESOLVED:
        return w->experimentally_resolved;
    case MF_LOSS_FAPE:
        return w->fape;
    case MF_LOSS_PLDDT:
        return w->plddt_loss;
    case MF_LOSS_MASKED_MSA:
        return w->masked_msa;
    case MF_LOSS_SUPERVISED_CHI:
        return w->supervised_chi;
    case MF_LOSS_VIOLATION:
        return w->violation;
    case MF_LOSS_PREDICTED_ALIGNED_ERROR:
        return w->predicted_aligned_error;
    }
    return 0.0;
}

/* ---- labels ------------------------------------------------------------------------------- */

static mf_status label(const mf_processed_features *f, const char *name, int64_t r, mf_dtype dt,
                       int ndim, const int64_t *shape, mf_tensor *out)
{
    if (!mf_processed_find(f, name))
        return MF_ERROR(MF_ERR_FORMAT, "features: '%s' missing (the loss needs it)", name);
    MF_TRY(mf_processed_tensor(f, name, r, out));
    bool ok = out->dtype == dt && out->ndim == ndim;
    for (int k = 0; ok && k < ndim; k++) ok = shape[k] < 0 || out->shape[k] == shape[k];
    if (!ok) {
        char got[96];
        return MF_ERROR(MF_ERR_FORMAT, "features: '%s' is %s, expected %d dims of %s (N = %lld)",
                        name, mf_tensor_describe(out, got, sizeof got), ndim, mf_dtype_name(dt),
                        (long long)(ndim > 0 ? shape[0] : 0));
    }
    return MF_OK;
}

static mf_status scalar(const mf_processed_features *f, const char *name, double *out)
{
    mf_tensor t;
    if (!mf_processed_find(f, name))
        return MF_ERROR(MF_ERR_FORMAT, "features: '%s' missing (the loss needs it)", name);
    MF_TRY(mf_processed_tensor(f, name, 0, &t));
    MF_REQUIRE(mf_tensor_numel(&t) == 1 && (t.dtype == MF_F32 || t.dtype == MF_I32),
               "features: '%s' must be one f32 or i32 value", name);
    *out = t.dtype == MF_I32 ? (double)((const int32_t *)t.data)[0]
                             : (double)((const float *)t.data)[0];
    return MF_OK;
}

mf_status mf_loss_batch_from_features(mf_loss_batch *b, const mf_processed_features *f, int64_t r)
{
    MF_REQUIRE(b && f, "loss batch: arguments");
    memset(b, 0, sizeof *b);
    mf_structure_loss_batch *s = &b->structure;
    MF_TRY(label(f, "aatype", r, MF_I32, 1, (const int64_t[]){-1}, &s->aatype));
    const int64_t N = s->aatype.shape[0];
#define L1(field, name, dt, ...)                                                                   \
    MF_TRY(label(f, name, r, dt, (int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)),        \
                 (const int64_t[]){__VA_ARGS__}, field))
    L1(&s->residue_index, "residue_index", MF_I32, N);
    L1(&s->seq_mask, "seq_mask", MF_F32, N);
    L1(&s->atom14_atom_exists, "atom14_atom_exists", MF_F32, N, MF_ATOM14);
    L1(&s->atom14_gt_positions, "atom14_gt_positions", MF_F32, N, MF_ATOM14, 3);
    L1(&s->atom14_alt_gt_positions, "atom14_alt_gt_positions", MF_F32, N, MF_ATOM14, 3);
    L1(&s->atom14_gt_exists, "atom14_gt_exists", MF_F32, N, MF_ATOM14);
    L1(&s->atom14_alt_gt_exists, "atom14_alt_gt_exists", MF_F32, N, MF_ATOM14);
    L1(&s->atom14_atom_is_ambiguous, "atom14_atom_is_ambiguous", MF_F32, N, MF_ATOM14);
    L1(&s->rigidgroups_gt_frames, "rigidgroups_gt_frames", MF_F32, N, MF_NUM_RIGID_GROUPS, 4, 4);
    L1(&s->rigidgroups_alt_gt_frames, "rigidgroups_alt_gt_frames", MF_F32, N, MF_NUM_RIGID_GROUPS,
       4, 4);
    L1(&s->rigidgroups_gt_exists, "rigidgroups_gt_exists", MF_F32, N, MF_NUM_RIGID_GROUPS);
    L1(&s->backbone_rigid_tensor, "backbone_rigid_tensor", MF_F32, N, 4, 4);
    L1(&s->backbone_rigid_mask, "backbone_rigid_mask", MF_F32, N);
    L1(&s->chi_mask, "chi_mask", MF_F32, N, MF_NUM_CHI);
    L1(&s->chi_angles_sin_cos, "chi_angles_sin_cos", MF_F32, N, MF_NUM_CHI, 2);
    L1(&b->pseudo_beta, "pseudo_beta", MF_F32, N, 3);
    L1(&b->pseudo_beta_mask, "pseudo_beta_mask", MF_F32, N);
    L1(&b->true_msa, "true_msa", MF_I32, -1, N);
    L1(&b->bert_mask, "bert_mask", MF_F32, b->true_msa.shape[0], N);
    L1(&b->all_atom_positions, "all_atom_positions", MF_F32, N, MF_ATOM37, 3);
    L1(&b->all_atom_mask, "all_atom_mask", MF_F32, N, MF_ATOM37);
    L1(&b->atom37_atom_exists, "atom37_atom_exists", MF_F32, N, MF_ATOM37);
#undef L1
    double v;
    MF_TRY(scalar(f, "resolution", &v));
    b->resolution = (float)v;
    MF_TRY(scalar(f, "seq_length", &b->seq_length));
    if (mf_processed_find(f, "use_clamped_fape")) {
        MF_TRY(scalar(f, "use_clamped_fape", &v));
        MF_REQUIRE(v >= 0 && v <= 1, "features: use_clamped_fape = %g is not in [0, 1]", v);
        b->use_clamped_fape = (float)v;
    } else {
        b->use_clamped_fape = 1.0f;
    }
    return MF_OK;
}

/* ---- helpers ------------------------------------------------------------------------------ */

static bool has(const mf_tensor *t)
{
    return t && t->data;
}

/* A host f32/f64 tensor of the run's dtype with the given shape. */
static mf_status expect(const mf_tensor *t, const char *name, mf_dtype dt, int ndim,
                        const int64_t *shape)
{
    MF_REQUIRE(has(t), "loss: output %s missing", name);
    bool ok = t->dtype == dt && t->device == MF_DEV_CPU && t->ndim == ndim;
    for (int k = 0; ok && k < ndim; k++) ok = t->shape[k] == shape[k];
    if (!ok) {
        char got[96];
        return MF_ERROR(MF_ERR_INVALID, "loss: output %s is %s, expected %d dims of %s on the host",
                        name, mf_tensor_describe(t, got, sizeof got), ndim, mf_dtype_name(dt));
    }
    return MF_OK;
}

/* A double copy of a host f32/f64 tensor from the arena. */
static mf_status to_double(mf_ctx *ctx, const mf_tensor *t, const char *lab, double **out)
{
    const int64_t n = mf_tensor_numel(t);
    MF_TRY(mf_arena_alloc(ctx->arena, sizeof(double) * (size_t)(n > 0 ? n : 1), lab, (void **)out));
    double *d = *out;
    if (t->dtype == MF_F64) {
        memcpy(d, t->data, sizeof(double) * (size_t)n);
    } else {
        MF_REQUIRE(t->dtype == MF_F32, "loss: %s is %s, not f32/f64", lab, mf_dtype_name(t->dtype));
        const float *s = t->data;
        for (int64_t i = 0; i < n; i++) d[i] = s[i];
    }
    return MF_OK;
}

static mf_status zeros_double(mf_ctx *ctx, int64_t n, const char *lab, double **out)
{
    MF_TRY(mf_arena_alloc(ctx->arena, sizeof(double) * (size_t)(n > 0 ? n : 1), lab, (void **)out));
    memset(*out, 0, sizeof(double) * (size_t)(n > 0 ? n : 1));
    return MF_OK;
}

/* g += d (g host f32 or f64). */
static void add_double(mf_tensor *g, const double *d)
{
    const int64_t n = mf_tensor_numel(g);
    if (g->dtype == MF_F64) {
        double *x = g->data;
        for (int64_t i = 0; i < n; i++) x[i] += d[i];
    } else {
        float *x = g->data;
        for (int64_t i = 0; i < n; i++) x[i] += (float)d[i];
    }
}

/* Ground-truth backbone frames [N, 4, 4] -> rot [N, 9], trans [N, 3] (double). */
static void split_frames(double *rot, double *trans, const float *m44, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        for (int r = 0; r < 3; r++) {
            for (int c = 0; c < 3; c++) rot[9 * i + 3 * r + c] = m44[16 * i + 4 * r + c];
            trans[3 * i + r] = m44[16 * i + 4 * r + 3];
        }
}

/* ---- the structure terms (fape, supervised_chi, violation; PAE targets) -------------------- */

typedef struct {
    int64_t L, N;
    double *frames, *rot, *trans, *sc_rot, *sc_trans, *pos, *angles, *unnorm; /* predictions */
    double *gt14, *alt14, *gt14_exists, *alt14_exists, *ambiguous, *gt_frames, *alt_frames;
    double *group_exists, *bb_rot, *bb_trans, *bb_mask, *chi_mask, *chi_sin_cos, *seq_mask;
    double *atom14_exists;
    double *alt_is_better, *ren14, *ren14_exists, *ren_rot, *ren_trans; /* renaming (Alg. 26) */
    double *work;
    mf_violation_tables *tab;
} structure_state;

static mf_status structure_setup(mf_ctx *ctx, structure_state *s, const mf_loss_outputs *o,
                                 const mf_loss_batch *b, const mf_config *cfg, mf_dtype dt)
{
    const mf_structure_loss_batch *g = &b->structure;
    const int64_t L = o->frames.ndim == 3 ? o->frames.shape[0] : 0, N = g->aatype.shape[0];
    MF_REQUIRE(L >= 1, "loss: frames must be [L, N, 7]");
    s->L = L;
    s->N = N;
    MF_TRY(expect(&o->frames, "frames", dt, 3, (const int64_t[]){L, N, 7}));
    MF_TRY(expect(&o->sidechain_rot, "sidechain_rot", dt, 4,
                  (const int64_t[]){L, N, MF_NUM_RIGID_GROUPS, 9}));
    MF_TRY(expect(&o->sidechain_trans, "sidechain_trans", dt, 4,
                  (const int64_t[]){L, N, MF_NUM_RIGID_GROUPS, 3}));
    MF_TRY(expect(&o->positions, "positions", dt, 4, (const int64_t[]){L, N, MF_ATOM14, 3}));
    MF_TRY(expect(&o->angles, "angles", dt, 4, (const int64_t[]){L, N, 7, 2}));
    MF_TRY(expect(&o->unnormalized_angles, "unnormalized_angles", dt, 4,
                  (const int64_t[]){L, N, 7, 2}));
    const int32_t *aa = g->aatype.data;
    for (int64_t i = 0; i < N; i++)
        MF_REQUIRE(aa[i] >= 0 && aa[i] < MF_NUM_RESTYPES_WITH_X,
                   "loss: aatype[%lld] = %d is not a restype 0..20", (long long)i, aa[i]);
    const char *lab = "loss.structure";
    const size_t f4 = (size_t)(L - 1);
    MF_TRY(to_double(ctx, &o->frames, lab, &s->frames));
    MF_TRY(to_double(ctx, &o->angles, lab, &s->angles));
    MF_TRY(to_double(ctx, &o->unnormalized_angles, lab, &s->unnorm));
    /* the last layer's side-chain frames and atoms */
    mf_tensor t = mf_tensor_slice0(&o->sidechain_rot, (int64_t)f4, 1);
    MF_TRY(to_double(ctx, &t, lab, &s->sc_rot));
    t = mf_tensor_slice0(&o->sidechain_trans, (int64_t)f4, 1);
    MF_TRY(to_double(ctx, &t, lab, &s->sc_trans));
    t = mf_tensor_slice0(&o->positions, (int64_t)f4, 1);
    MF_TRY(to_double(ctx, &t, lab, &s->pos));
    /* AF2 backbone_loss: r3.rigids_from_quataffine(QuatAffine.from_tensor(traj)) */
    MF_TRY(zeros_double(ctx, L * N * 9, lab, &s->rot));
    MF_TRY(zeros_double(ctx, L * N * 3, lab, &s->trans));
    for (int64_t k = 0; k < L * N; k++) {
        mf_quat_to_rot_f64(s->rot + 9 * k, s->frames + 7 * k, 1);
        for (int j = 0; j < 3; j++) s->trans[3 * k + j] = s->frames[7 * k + 4 + j];
    }
    MF_TRY(to_double(ctx, &g->atom14_gt_positions, lab, &s->gt14));
    MF_TRY(to_double(ctx, &g->atom14_alt_gt_positions, lab, &s->alt14));
    MF_TRY(to_double(ctx, &g->atom14_gt_exists, lab, &s->gt14_exists));
    MF_TRY(to_double(ctx, &g->atom14_alt_gt_exists, lab, &s->alt14_exists));
    MF_TRY(to_double(ctx, &g->atom14_atom_is_ambiguous, lab, &s->ambiguous));
    MF_TRY(to_double(ctx, &g->rigidgroups_gt_frames, lab, &s->gt_frames));
    MF_TRY(to_double(ctx, &g->rigidgroups_alt_gt_frames, lab, &s->alt_frames));
    MF_TRY(to_double(ctx, &g->rigidgroups_gt_exists, lab, &s->group_exists));
    MF_TRY(to_double(ctx, &g->backbone_rigid_mask, lab, &s->bb_mask));
    MF_TRY(to_double(ctx, &g->chi_mask, lab, &s->chi_mask));
    MF_TRY(to_double(ctx, &g->chi_angles_sin_cos, lab, &s->chi_sin_cos));
    MF_TRY(to_double(ctx, &g->seq_mask, lab, &s->seq_mask));
    MF_TRY(to_double(ctx, &g->atom14_atom_exists, lab, &s->atom14_exists));
    MF_TRY(zeros_double(ctx, N * 12, lab, &s->bb_rot));
    s->bb_trans = s->bb_rot + 9 * N;
    split_frames(s->bb_rot, s->bb_trans, g->backbone_rigid_tensor.data, N);
    const int64_t G = MF_NUM_RIGID_GROUPS;
    MF_TRY(zeros_double(ctx, N, lab, &s->alt_is_better));
    MF_TRY(zeros_double(ctx, N * MF_ATOM14 * 3, lab, &s->ren14));
    MF_TRY(zeros_double(ctx, N * MF_ATOM14, lab, &s->ren14_exists));
    MF_TRY(zeros_double(ctx, N * G * 9, lab, &s->ren_rot));
    MF_TRY(zeros_double(ctx, N * G * 3, lab, &s->ren_trans));
    MF_TRY(zeros_double(ctx, 16 * N + 8 * N, lab, &s->work));
    MF_TRY(mf_arena_alloc(ctx->arena, sizeof *s->tab, lab, (void **)&s->tab));
    mf_violation_tables_init(s->tab, (float)cfg->loss.violation_tolerance_factor,
                             (float)cfg->loss.clash_overlap_tolerance);
    /* Alg. 26: the renaming the last layer's atoms prefer (no gradient through the choice) */
    mf_find_optimal_renaming_f64(s->alt_is_better, s->gt14, s->alt14, s->ambiguous, s->gt14_exists,
                                 s->pos, N);
    mf_rename_ground_truth_f64(s->ren14, s->ren14_exists, s->ren_rot, s->ren_trans,
                               s->alt_is_better, s->gt14, s->alt14, s->gt14_exists, s->alt14_exists,
                               s->gt_frames, s->alt_frames, N);
    return MF_OK;
}

typedef struct {
    double bb_clamp, bb_scale, sc_clamp, sc_scale, eps;
} fape_settings;

static fape_settings fape_of(const mf_config *cfg)
{
    const mf_fape_options def = mf_fape_default_options();
    return (fape_settings){.bb_clamp = cfg->loss.fape_clamp_distance,
                           .bb_scale = cfg->loss.fape_loss_unit_distance,
                           .sc_clamp = cfg->loss.fape_sidechain_clamp_distance,
                           .sc_scale = cfg->loss.fape_sidechain_length_scale,
                           .eps = def.eps};
}

static void structure_forward(structure_state *s, mf_loss_values *v, const mf_loss_batch *b,
                              const mf_config *cfg)
{
    const int64_t L = s->L, N = s->N;
    const fape_settings fs = fape_of(cfg);
    double bb = 0, final_bb = 0, sc = 0;
    mf_backbone_fape_f64(&bb, &final_bb, s->work, s->rot, s->trans, s->bb_rot, s->bb_trans,
                         s->bb_mask, L, N, b->use_clamped_fape, fs.bb_clamp, fs.bb_scale, fs.eps);
    mf_sidechain_fape_f64(&sc, s->work, s->sc_rot, s->sc_trans, s->pos, s->ren_rot, s->ren_trans,
                          s->group_exists, s->ren14, s->ren14_exists, N, fs.sc_clamp, fs.sc_scale,
                          fs.eps);
    v->fape_backbone = bb;
    v->fape_sidechain = sc;
    v->final_layer_backbone_fape = final_bb;
    v->term[MF_LOSS_FAPE] =
        cfg->loss.fape_backbone_weight * bb + cfg->loss.fape_sidechain_weight * sc;
    double chi = 0;
    mf_supervised_chi_loss_f64(&chi, &v->chi_loss, &v->angle_norm_loss, s->angles, s->unnorm,
                               b->structure.aatype.data, s->seq_mask, s->chi_mask, s->chi_sin_cos,
                               L, N, cfg->loss.chi_weight, cfg->loss.angle_norm_weight);
    v->term[MF_LOSS_SUPERVISED_CHI] = chi;
    const mf_violation_outputs_f64 none = {0};
    mf_structural_violations_f64(&v->violation, &none, s->work, s->pos, s->atom14_exists,
                                 b->structure.residue_index.data, b->structure.aatype.data, s->tab,
                                 N);
    v->term[MF_LOSS_VIOLATION] = v->violation.loss;
}

/* g's structure fields += d/d outputs of sum_t scale[t] * term_t. */
static mf_status structure_backward(mf_ctx *ctx, structure_state *s, mf_loss_outputs *g,
                                    const double *scale, const mf_loss_batch *b,
                                    const mf_config *cfg)
{
    const int64_t L = s->L, N = s->N, G = MF_NUM_RIGID_GROUPS;
    const fape_settings fs = fape_of(cfg);
    const char *lab = "loss.structure_backward";
    const double s_fape = scale[MF_LOSS_FAPE];
    if (has(&g->frames)) {
        double *drot, *dtrans, *dframes;
        MF_TRY(zeros_double(ctx, L * N * 9, lab, &drot));
        MF_TRY(zeros_double(ctx, L * N * 3, lab, &dtrans));
        MF_TRY(zeros_double(ctx, L * N * 7, lab, &dframes));
        mf_backbone_fape_backward_f64(drot, dtrans, s_fape * cfg->loss.fape_backbone_weight, s->rot,
                                      s->trans, s->bb_rot, s->bb_trans, s->bb_mask, L, N,
                                      b->use_clamped_fape, fs.bb_clamp, fs.bb_scale, fs.eps);
        for (int64_t k = 0; k < L * N; k++) {
            mf_quat_to_rot_backward_f64(dframes + 7 * k, drot + 9 * k, s->frames + 7 * k, 1);
            for (int j = 0; j < 3; j++) dframes[7 * k + 4 + j] += dtrans[3 * k + j];
        }
        add_double(&g->frames, dframes);
    }
    /* last-layer gradients of the side-chain frames and atoms */
    double *dsc_rot, *dsc_trans, *dpos;
    MF_TRY(zeros_double(ctx, N * G * 9, lab, &dsc_rot));
    MF_TRY(zeros_double(ctx, N * G * 3, lab, &dsc_trans));
    MF_TRY(zeros_double(ctx, N * MF_ATOM14 * 3, lab, &dpos));
    mf_sidechain_fape_backward_f64(dsc_rot, dsc_trans, dpos,
                                   s_fape * cfg->loss.fape_sidechain_weight, s->sc_rot, s->sc_trans,
                                   s->pos, s->ren_rot, s->ren_trans, s->group_exists, s->ren14,
                                   s->ren14_exists, N, fs.sc_clamp, fs.sc_scale, fs.eps);
    mf_structural_violation_loss_backward_f64(dpos, scale[MF_LOSS_VIOLATION], s->work, s->pos,
                                              s->atom14_exists, b->structure.residue_index.data,
                                              b->structure.aatype.data, s->tab, N);
    if (has(&g->sidechain_rot)) {
        mf_tensor t = mf_tensor_slice0(&g->sidechain_rot, L - 1, 1);
        add_double(&t, dsc_rot);
    }
    if (has(&g->sidechain_trans)) {
        mf_tensor t = mf_tensor_slice0(&g->sidechain_trans, L - 1, 1);
        add_double(&t, dsc_trans);
    }
    if (has(&g->positions)) {
        mf_tensor t = mf_tensor_slice0(&g->positions, L - 1, 1);
        add_double(&t, dpos);
    }
    if (has(&g->angles) || has(&g->unnormalized_angles)) {
        double *da, *du;
        MF_TRY(zeros_double(ctx, L * N * 14, lab, &da));
        MF_TRY(zeros_double(ctx, L * N * 14, lab, &du));
        mf_supervised_chi_loss_backward_f64(da, du, scale[MF_LOSS_SUPERVISED_CHI], s->angles,
                                            s->unnorm, b->structure.aatype.data, s->seq_mask,
                                            s->chi_mask, s->chi_sin_cos, L, N, cfg->loss.chi_weight,
                                            cfg->loss.angle_norm_weight);
        if (has(&g->angles)) add_double(&g->angles, da);
        if (has(&g->unnormalized_angles)) add_double(&g->unnormalized_angles, du);
    }
    return MF_OK;
}

/* ---- forward and backward ----------------------------------------------------------------- */

static mf_resolution_filter filter(double lo, double hi)
{
    return (mf_resolution_filter){
        .filter_by_resolution = true, .min_resolution = lo, .max_resolution = hi};
}

/* The PAE term's frames: the last layer's predicted backbone frames and the true ones, as f64
 * tensors over s's double arrays. */
static void pae_frames(const structure_state *s, mf_tensor *pr, mf_tensor *pt, mf_tensor *tr,
                       mf_tensor *tt)
{
    const int64_t N = s->N, off = (s->L - 1) * N;
    *pr = mf_tensor_make(s->rot + 9 * off, MF_F64, MF_DEV_CPU, 3, (const int64_t[]){N, 3, 3});
    *pt = mf_tensor_make(s->trans + 3 * off, MF_F64, MF_DEV_CPU, 2, (const int64_t[]){N, 3});
    *tr = mf_tensor_make(s->bb_rot, MF_F64, MF_DEV_CPU, 3, (const int64_t[]){N, 3, 3});
    *tt = mf_tensor_make(s->bb_trans, MF_F64, MF_DEV_CPU, 2, (const int64_t[]){N, 3});
}

static mf_status check_common(mf_ctx *ctx, const mf_loss_outputs *o, const mf_loss_batch *b,
                              const mf_config *cfg, mf_dtype *dt)
{
    MF_REQUIRE(ctx && ctx->arena && o && b && cfg, "loss: arguments");
    MF_REQUIRE(ctx->arena->device == MF_DEV_CPU, "loss: needs a host arena");
    MF_REQUIRE(has(&o->frames) && (o->frames.dtype == MF_F32 || o->frames.dtype == MF_F64),
               "loss: frames missing or not f32/f64");
    *dt = o->frames.dtype;
    const int64_t N = b->structure.aatype.shape[0], S = b->true_msa.shape[0];
    const mf_heads_config *h = &cfg->heads;
    MF_TRY(expect(&o->distogram_logits, "distogram_logits", *dt, 3,
                  (const int64_t[]){N, N, h->distogram_num_bins}));
    MF_TRY(expect(&o->masked_msa_logits, "masked_msa_logits", *dt, 3,
                  (const int64_t[]){S, N, h->masked_msa_num_output}));
    MF_TRY(expect(&o->experimentally_resolved_logits, "experimentally_resolved_logits", *dt, 2,
                  (const int64_t[]){N, h->experimentally_resolved_num_output}));
    MF_TRY(expect(&o->lddt_logits, "lddt_logits", *dt, 2,
                  (const int64_t[]){N, h->predicted_lddt_num_bins}));
    MF_TRY(expect(&o->final_atom_positions, "final_atom_positions", *dt, 3,
                  (const int64_t[]){N, MF_ATOM37, 3}));
    if (h->predicted_aligned_error_enabled)
        MF_TRY(expect(&o->pae_logits, "pae_logits", *dt, 3,
                      (const int64_t[]){N, N, h->predicted_aligned_error_num_bins}));
    MF_REQUIRE(b->seq_length >= 1, "loss: seq_length %g", b->seq_length);
    return MF_OK;
}

static double total_scale(const mf_loss_batch *b)
{
    const double N = (double)b->structure.aatype.shape[0];
    return sqrt(b->seq_length < N ? b->seq_length : N);
}

mf_status mf_loss_forward(mf_ctx *ctx, mf_loss_values *v, const mf_loss_outputs *o,
                          const mf_loss_batch *b, const mf_config *cfg)
{
    mf_dtype dt;
    MF_REQUIRE(v, "loss: values missing");
    memset(v, 0, sizeof *v);
    MF_TRY(check_common(ctx, o, b, cfg, &dt));
    const mf_loss_config *lc = &cfg->loss;
    const mf_heads_config *h = &cfg->heads;
    mf_arena_mark_t mark = mf_arena_mark(ctx->arena);
    mf_status st = MF_OK;
    structure_state s;
    MF_TRY_GOTO(structure_setup(ctx, &s, o, b, cfg, dt));
    structure_forward(&s, v, b, cfg);
    MF_TRY_GOTO(mf_distogram_loss(ctx, &v->term[MF_LOSS_DISTOGRAM], &o->distogram_logits,
                                  &b->pseudo_beta, &b->pseudo_beta_mask, h->distogram_first_break,
                                  h->distogram_last_break));
    const mf_resolution_filter er = filter(lc->experimentally_resolved_min_resolution,
                                           lc->experimentally_resolved_max_resolution);
    MF_TRY_GOTO(mf_experimentally_resolved_loss(
        ctx, &v->term[MF_LOSS_EXPERIMENTALLY_RESOLVED], &o->experimentally_resolved_logits,
        &b->all_atom_mask, &b->atom37_atom_exists, b->resolution, &er));
    const mf_plddt_loss_options po = {
        .cutoff = lc->plddt_cutoff,
        .resolution = filter(lc->plddt_min_resolution, lc->plddt_max_resolution)};
    MF_TRY_GOTO(mf_plddt_loss(ctx, &v->term[MF_LOSS_PLDDT], &o->lddt_logits,
                              &o->final_atom_positions, &b->all_atom_positions, &b->all_atom_mask,
                              b->resolution, &po));
    MF_TRY_GOTO(mf_masked_msa_loss(ctx, &v->term[MF_LOSS_MASKED_MSA], &o->masked_msa_logits,
                                   &b->true_msa, &b->bert_mask));
    if (h->predicted_aligned_error_enabled) {
        mf_tensor pr, pt, tr, tt;
        pae_frames(&s, &pr, &pt, &tr, &tt);
        const mf_resolution_filter pf = filter(lc->predicted_aligned_error_min_resolution,
                                               lc->predicted_aligned_error_max_resolution);
        MF_TRY_GOTO(mf_tm_loss(ctx, &v->term[MF_LOSS_PREDICTED_ALIGNED_ERROR], &o->pae_logits, &pr,
                               &pt, &tr, &tt, &b->structure.backbone_rigid_mask,
                               h->predicted_aligned_error_max_error_bin, b->resolution, &pf));
    }
    v->unscaled_loss = 0.0;
    for (int k = 0; k < MF_LOSS_NUM_TERMS; k++) {
        v->present[k] = k != MF_LOSS_PREDICTED_ALIGNED_ERROR || h->predicted_aligned_error_enabled;
        v->weight[k] = v->present[k] ? mf_loss_term_weight(lc, k) : 0.0;
        if (!isfinite(v->term[k]) && v->present[k]) {
            st = MF_ERROR(MF_ERR_NUMERIC, "loss term %s is %g", mf_loss_term_name(k), v->term[k]);
            goto cleanup;
        }
        if (v->present[k]) v->unscaled_loss += v->weight[k] * v->term[k];
    }
    v->total_scale = total_scale(b);
    v->total = v->unscaled_loss * v->total_scale;
cleanup:
    mf_arena_release(ctx->arena, mark);
    return st;
}

mf_status mf_loss_backward(mf_ctx *ctx, mf_loss_outputs *g, double dtotal, const mf_loss_outputs *o,
                           const mf_loss_batch *b, const mf_config *cfg)
{
    mf_dtype dt;
    MF_REQUIRE(g, "loss backward: gradients missing");
    MF_TRY(check_common(ctx, o, b, cfg, &dt));
    const mf_loss_config *lc = &cfg->loss;
    const mf_heads_config *h = &cfg->heads;
    double scale[MF_LOSS_NUM_TERMS];
    const double ts = total_scale(b);
    for (int k = 0; k < MF_LOSS_NUM_TERMS; k++) scale[k] = dtotal * ts * mf_loss_term_weight(lc, k);
    mf_arena_mark_t mark = mf_arena_mark(ctx->arena);
    mf_status st = MF_OK;
    structure_state s;
    MF_TRY_GOTO(structure_setup(ctx, &s, o, b, cfg, dt));
    MF_TRY_GOTO(structure_backward(ctx, &s, g, scale, b, cfg));
    if (has(&g->distogram_logits))
        MF_TRY_GOTO(mf_distogram_loss_backward(ctx, &g->distogram_logits, scale[MF_LOSS_DISTOGRAM],
                                               &o->distogram_logits, &b->pseudo_beta,
                                               &b->pseudo_beta_mask, h->distogram_first_break,
                                               h->distogram_last_break));
    if (has(&g->experimentally_resolved_logits)) {
        const mf_resolution_filter er = filter(lc->experimentally_resolved_min_resolution,
                                               lc->experimentally_resolved_max_resolution);
        MF_TRY_GOTO(mf_experimentally_resolved_loss_backward(
            ctx, &g->experimentally_resolved_logits, scale[MF_LOSS_EXPERIMENTALLY_RESOLVED],
            &o->experimentally_resolved_logits, &b->all_atom_mask, &b->atom37_atom_exists,
            b->resolution, &er));
    }
    if (has(&g->lddt_logits)) {
        const mf_plddt_loss_options po = {
            .cutoff = lc->plddt_cutoff,
            .resolution = filter(lc->plddt_min_resolution, lc->plddt_max_resolution)};
        MF_TRY_GOTO(mf_plddt_loss_backward(
            ctx, &g->lddt_logits, scale[MF_LOSS_PLDDT], &o->lddt_logits, &o->final_atom_positions,
            &b->all_atom_positions, &b->all_atom_mask, b->resolution, &po));
    }
    if (has(&g->masked_msa_logits))
        MF_TRY_GOTO(mf_masked_msa_loss_backward(ctx, &g->masked_msa_logits,
                                                scale[MF_LOSS_MASKED_MSA], &o->masked_msa_logits,
                                                &b->true_msa, &b->bert_mask));
    if (h->predicted_aligned_error_enabled && has(&g->pae_logits)) {
        mf_tensor pr, pt, tr, tt;
        pae_frames(&s, &pr, &pt, &tr, &tt);
        const mf_resolution_filter pf = filter(lc->predicted_aligned_error_min_resolution,
                                               lc->predicted_aligned_error_max_resolution);
        MF_TRY_GOTO(mf_tm_loss_backward(
            ctx, &g->pae_logits, scale[MF_LOSS_PREDICTED_ALIGNED_ERROR], &o->pae_logits, &pr, &pt,
            &tr, &tt, &b->structure.backbone_rigid_mask, h->predicted_aligned_error_max_error_bin,
            b->resolution, &pf));
    }
cleanup:
    mf_arena_release(ctx->arena, mark);
    return st;
}
