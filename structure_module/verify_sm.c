/* The structure module against the reference vectors (see verify_sm.h). */
#include "structure_module/verify_sm.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/h5io.h"
#include "eval/compare.h"
#include "model/heads.h"
#include "model/losses_simple.h"
#include "model/param_store.h"
#include "structure_module/losses_structure.h"
#include "structure_module/rigid.h"
#include "structure_module/structure_module.h"

#define VEC_RTOL_DEFAULT   1e-4 /* expected_outputs.h5, intermediates, loss terms (README) */
#define VEC_RTOL_GRADIENTS 1e-3 /* train_expected.h5 gradients (README) */
#define MAX_ARRAYS         64
#define STAGE              "intermediates/structure_module/"

enum { F_FEAT, F_EXP, F_TRAIN, F_COUNT };

typedef struct {
    char path[F_COUNT][1024], npz_path[1024], cfg_path[1024];
    hid_t file[F_COUNT];
    mf_param_store params;
    mf_h5_array arrays[MAX_ARRAYS];
    int n_arrays;
    mf_verify_report *report;
    int64_t num_layers;
    double position_scale;
    /* config.json loss settings */
    double w_fape, w_chi, w_violation, w_plddt, backbone_weight, sidechain_weight, clamp_distance,
        loss_unit_distance, chi_weight, angle_norm_weight, violation_tolerance, clash_tolerance,
        plddt_cutoff, plddt_min_res, plddt_max_res;
    mf_param_spec specs[MF_STRUCTURE_MODULE_MAX_PARAMS];
    mf_structure_module_saved saved;
    mf_violation_tables tab;
} vstate;

static mf_status load(vstate *v, int which, const char *name, mf_dtype dt, const mf_h5_array **out)
{
    MF_REQUIRE(v->n_arrays < MAX_ARRAYS, "verify structure module: too many arrays");
    mf_h5_array *a = &v->arrays[v->n_arrays];
    MF_TRY(mf_h5_read_array(v->file[which], v->path[which], name, dt, a));
    v->n_arrays++;
    *out = a;
    return MF_OK;
}

static double dataset_rtol(vstate *v, int which, const char *name)
{
    double tol = VEC_RTOL_DEFAULT;
    if (mf_h5_read_attr_double(v->file[which], name, "rtol", &tol) != MF_OK) {
        mf_clear_error();
        tol = VEC_RTOL_DEFAULT;
    }
    return tol;
}

/* Compares cand [n] with slice `slice` (of n elements along the leading axis; -1: the whole
 * dataset) of dataset `name`. */
static mf_status compare(vstate *v, int which, const char *name, int64_t slice, const float *cand,
                         int64_t n)
{
    const mf_h5_array *ref = NULL;
    MF_TRY(load(v, which, name, MF_F32, &ref));
    const int64_t total = mf_h5_array_numel(ref);
    const int64_t need = slice < 0 ? n : (slice + 1) * n;
    MF_REQUIRE(slice < 0 ? total == n : total >= need,
               "verify structure module: %s has %lld values, the module gives %lld%s", name,
               (long long)total, (long long)n, slice < 0 ? "" : " per slice");
    mf_verify_report *r = v->report;
    MF_REQUIRE(r->count < MF_VERIFY_MAX_ITEMS, "verify report full");
    mf_verify_item *it = &r->items[r->count++];
    if (slice < 0)
        snprintf(it->name, sizeof it->name, "%s", name);
    else
        snprintf(it->name, sizeof it->name, "%s[%lld]", name, (long long)slice);
    const float *rd = (const float *)ref->data + (slice < 0 ? 0 : slice * n);
    it->result = mf_compare_maxrel(cand, rd, n, n, NULL, 0, dataset_rtol(v, which, name), 0.0);
    v->n_arrays--; /* compared one at a time */
    mf_h5_array_free(&v->arrays[v->n_arrays]);
    return MF_OK;
}

static mf_status read_config(vstate *v)
{
    FILE *f = fopen(v->cfg_path, "rb");
    if (!f) return MF_ERROR(MF_ERR_IO, "%s: cannot open", v->cfg_path);
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *text = len > 0 ? malloc((size_t)len + 1) : NULL;
    size_t got = text ? fread(text, 1, (size_t)len, f) : 0;
    fclose(f);
    if (!text || got != (size_t)len) {
        free(text);
        return MF_ERROR(MF_ERR_IO, "%s: cannot read", v->cfg_path);
    }
    text[len] = '\0';
    cJSON *root = cJSON_Parse(text);
    free(text);
    struct {
        const char *a, *b, *c;
        double *dst;
    } keys[] = {
        {"structure_module", "num_layers", NULL, NULL},
        {"structure_module", "position_scale", NULL, &v->position_scale},
        {"loss", "weights", "fape", &v->w_fape},
        {"loss", "weights", "supervised_chi", &v->w_chi},
        {"loss", "weights", "violation", &v->w_violation},
        {"loss", "weights", "plddt_loss", &v->w_plddt},
        {"loss", "fape", "backbone_weight", &v->backbone_weight},
        {"loss", "fape", "sidechain_weight", &v->sidechain_weight},
        {"loss", "fape", "clamp_distance", &v->clamp_distance},
        {"loss", "fape", "loss_unit_distance", &v->loss_unit_distance},
        {"loss", "supervised_chi", "chi_weight", &v->chi_weight},
        {"loss", "supervised_chi", "angle_norm_weight", &v->angle_norm_weight},
        {"loss", "violation", "violation_tolerance_factor", &v->violation_tolerance},
        {"loss", "violation", "clash_overlap_tolerance", &v->clash_tolerance},
        {"loss", "plddt", "cutoff", &v->plddt_cutoff},
        {"loss", "plddt", "min_resolution", &v->plddt_min_res},
        {"loss", "plddt", "max_resolution", &v->plddt_max_res},
    };
    mf_status st = MF_OK;
    for (size_t k = 0; k < sizeof keys / sizeof keys[0] && st == MF_OK; k++) {
        const cJSON *x = cJSON_GetObjectItemCaseSensitive(root, keys[k].a);
        x = cJSON_GetObjectItemCaseSensitive(x, keys[k].b);
        if (keys[k].c) x = cJSON_GetObjectItemCaseSensitive(x, keys[k].c);
        if (!cJSON_IsNumber(x))
            st = MF_ERROR(MF_ERR_FORMAT, "%s: number %s.%s%s%s missing", v->cfg_path, keys[k].a,
                          keys[k].b, keys[k].c ? "." : "", keys[k].c ? keys[k].c : "");
        else if (keys[k].dst)
            *keys[k].dst = x->valuedouble;
        else
            v->num_layers = (int64_t)x->valuedouble;
    }
    cJSON_Delete(root);
    return st;
}

/* AF2/OpenFold homogeneous 4x4 matrices [.., 4, 4] of the side-chain frames. */
static void to_homogeneous(float *h, const float *rot, const float *trans, int64_t frames)
{
    for (int64_t f = 0; f < frames; f++) {
        float *m = h + 16 * f;
        for (int i = 0; i < 3; i++) {
            for (int j = 0; j < 3; j++) m[4 * i + j] = rot[9 * f + 3 * i + j];
            m[4 * i + 3] = trans[3 * f + i];
        }
        m[12] = m[13] = m[14] = 0.0f;
        m[15] = 1.0f;
    }
}

static mf_tensor tensor_of(const mf_h5_array *a)
{
    const int nd = a->ndim < MF_MAX_DIMS ? a->ndim : MF_MAX_DIMS;
    return mf_tensor_make(a->data, a->dtype, MF_DEV_CPU, nd, a->shape);
}

static double scalar_of(const mf_h5_array *a)
{
    return a->dtype == MF_I32 ? (double)((const int32_t *)a->data)[0]
                              : (double)((const float *)a->data)[0];
}

static mf_status compare_loss(vstate *v, const char *term, double value)
{
    char name[128];
    snprintf(name, sizeof name, "loss/%s", term);
    const float c = (float)value;
    return compare(v, F_TRAIN, name, -1, &c, 1);
}

/* grads/<escaped full name> of train_expected.h5, relative (1e-3) or, where the dataset says
 * compare = absolute, against the grads group's grad_scale. */
static mf_status compare_grad(vstate *v, const char *full, const mf_tensor *g)
{
    char esc[512], name[600];
    mf_h5_escape_name(full, esc, sizeof esc);
    snprintf(name, sizeof name, "grads/%s", esc);
    const mf_h5_array *ref = NULL;
    const int64_t n = mf_tensor_numel(g);
    MF_TRY(load(v, F_TRAIN, name, MF_F32, &ref));
    MF_REQUIRE(mf_h5_array_numel(ref) == n,
               "verify structure module: %s has %lld values, the "
               "gradient %lld",
               name, (long long)mf_h5_array_numel(ref), (long long)n);
    char *how = NULL;
    double scale = 0.0;
    if (mf_h5_read_attr_string(v->file[F_TRAIN], name, "compare", &how) == MF_OK &&
        !strcmp(how, "absolute")) {
        if (mf_h5_read_attr_double(v->file[F_TRAIN], "grads", "grad_scale", &scale) != MF_OK)
            scale = 0.0;
    }
    free(how);
    mf_clear_error();
    mf_verify_report *r = v->report;
    MF_REQUIRE(r->count < MF_VERIFY_MAX_ITEMS, "verify report full");
    mf_verify_item *it = &r->items[r->count++];
    const size_t root = strlen(MF_AF2_ROOT);
    const char *shortname = strncmp(full, MF_AF2_ROOT, root) ? full : full + root;
    snprintf(it->name, sizeof it->name, "grads/%.120s%s", shortname,
             scale > 0 ? " (absolute)" : "");
    it->result = mf_compare_maxrel(g->data, ref->data, n, n, NULL, 0, VEC_RTOL_GRADIENTS, scale);
    v->n_arrays--;
    mf_h5_array_free(&v->arrays[v->n_arrays]);
    return MF_OK;
}

/* The training step's structure-module terms of loss/total (AF2 weights from config.json, times
 * sqrt(min(seq_length, N))): fape = backbone_weight x backbone FAPE over the layers
 * (use_clamped_fape of the features) + sidechain_weight x side-chain FAPE of the last layer;
 * supervised_chi over the layers; violation of the last layer's atom14; plddt_loss through the
 * predicted_lddt_head on the final act (targets from the final positions, no gradient). Their
 * values against loss/<term>, then their gradients back through mf_structure_module_backward to
 * every structure-module weight against grads/<name>. Nothing else in the last recycling iteration
 * depends on these weights. */
static mf_status check_training(mf_ctx *ctx, vstate *v, const mf_structure_module_outputs *o,
                                const mf_structure_module_saved *saved, const mf_tensor *single,
                                const mf_tensor *pair, const mf_tensor *aatype,
                                const mf_tensor *seq_mask, const mf_structure_module_params *p,
                                const mf_structure_module_dims *d, int np)
{
    mf_arena *A = ctx->arena;
    const int64_t L = d->num_layer, N = aatype->shape[0], CS = d->c_s;
    const mf_h5_array *ri = NULL, *a14e = NULL, *gtp = NULL, *altp = NULL, *gte = NULL,
                      *alte = NULL, *amb = NULL, *gtf = NULL, *altf = NULL, *gfe = NULL,
                      *bbr = NULL, *bbm = NULL, *chim = NULL, *chia = NULL, *ucf = NULL,
                      *slen = NULL, *res = NULL, *aap = NULL, *aam = NULL;
    MF_TRY(load(v, F_FEAT, "residue_index", MF_I32, &ri));
    MF_TRY(load(v, F_FEAT, "atom14_atom_exists", MF_F32, &a14e));
    MF_TRY(load(v, F_FEAT, "atom14_gt_positions", MF_F32, &gtp));
    MF_TRY(load(v, F_FEAT, "atom14_alt_gt_positions", MF_F32, &altp));
    MF_TRY(load(v, F_FEAT, "atom14_gt_exists", MF_F32, &gte));
    MF_TRY(load(v, F_FEAT, "atom14_alt_gt_exists", MF_F32, &alte));
    MF_TRY(load(v, F_FEAT, "atom14_atom_is_ambiguous", MF_F32, &amb));
    MF_TRY(load(v, F_FEAT, "rigidgroups_gt_frames", MF_F32, &gtf));
    MF_TRY(load(v, F_FEAT, "rigidgroups_alt_gt_frames", MF_F32, &altf));
    MF_TRY(load(v, F_FEAT, "rigidgroups_gt_exists", MF_F32, &gfe));
    MF_TRY(load(v, F_FEAT, "backbone_rigid_tensor", MF_F32, &bbr));
    MF_TRY(load(v, F_FEAT, "backbone_rigid_mask", MF_F32, &bbm));
    MF_TRY(load(v, F_FEAT, "chi_mask", MF_F32, &chim));
    MF_TRY(load(v, F_FEAT, "chi_angles_sin_cos", MF_F32, &chia));
    MF_TRY(load(v, F_FEAT, "use_clamped_fape", MF_F32, &ucf));
    MF_TRY(load(v, F_FEAT, "seq_length", MF_I32, &slen));
    MF_TRY(load(v, F_FEAT, "resolution", MF_F32, &res));
    MF_TRY(load(v, F_FEAT, "all_atom_positions", MF_F32, &aap));
    MF_TRY(load(v, F_FEAT, "all_atom_mask", MF_F32, &aam));
    const mf_structure_loss_batch b = {
        .aatype = *aatype,
        .residue_index = tensor_of(ri),
        .seq_mask = *seq_mask,
        .atom14_atom_exists = tensor_of(a14e),
        .atom14_gt_positions = tensor_of(gtp),
        .atom14_alt_gt_positions = tensor_of(altp),
        .atom14_gt_exists = tensor_of(gte),
        .atom14_alt_gt_exists = tensor_of(alte),
        .atom14_atom_is_ambiguous = tensor_of(amb),
        .rigidgroups_gt_frames = tensor_of(gtf),
        .rigidgroups_alt_gt_frames = tensor_of(altf),
        .rigidgroups_gt_exists = tensor_of(gfe),
        .backbone_rigid_tensor = tensor_of(bbr),
        .backbone_rigid_mask = tensor_of(bbm),
        .chi_mask = tensor_of(chim),
        .chi_angles_sin_cos = tensor_of(chia),
    };
    const mf_tensor true_pos = tensor_of(aap), all_atom_mask = tensor_of(aam);
    const float use_clamped = (float)scalar_of(ucf), resolution = (float)scalar_of(res);
    const double total = sqrt(fmin(scalar_of(slen), (double)N));
    mf_fape_options opt = mf_fape_default_options();
    opt.clamp_distance = (float)v->clamp_distance;
    opt.length_scale = (float)v->loss_unit_distance;
    mf_violation_tables_init(&v->tab, (float)v->violation_tolerance, (float)v->clash_tolerance);

    /* the predicted lDDT head on the final act */
    mf_heads_dims hd = {.c_s = CS};
    const mf_tensor *w0 =
        mf_param_store_find(&v->params, MF_PREDICTED_LDDT_HEAD_SCOPE "/act_0//weights");
    const mf_tensor *wl =
        mf_param_store_find(&v->params, MF_PREDICTED_LDDT_HEAD_SCOPE "/logits//weights");
    MF_REQUIRE(w0 && wl && w0->ndim == 2 && wl->ndim == 2,
               "verify structure module: %s lacks the predicted_lddt_head weights", v->npz_path);
    hd.plddt_c_hidden = w0->shape[1], hd.plddt_num_bins = wl->shape[1];
    mf_param_spec sl[8];
    const int nl = mf_predicted_lddt_head_param_specs(&hd, sl);
    mf_predicted_lddt_head_params pl, gl;
    mf_status bst = mf_param_store_bind(&v->params, MF_PREDICTED_LDDT_HEAD_SCOPE, sl, nl, -1,
                                        MF_PARAMS_AS_ARRAY(&pl));
    if (bst != MF_OK) return mf_error_context(bst, "%s", v->npz_path);

    const mf_arena_mark_t mark = mf_arena_mark(A);
    mf_status st = MF_OK;
    const char *lab = "verify.sm training";
    mf_tensor bb_rot, bb_trans, drot, dtrans, logits, dlogits;
    mf_renamed_ground_truth ren;
    MF_TRY_GOTO(mf_arena_tensor(A, &bb_rot, MF_F32, 4, (const int64_t[]){L, N, 3, 3}, lab));
    MF_TRY_GOTO(mf_arena_tensor(A, &bb_trans, MF_F32, 3, (const int64_t[]){L, N, 3}, lab));
    MF_TRY_GOTO(mf_arena_zeros(A, &drot, MF_F32, 4, (const int64_t[]){L, N, 3, 3}, lab));
    MF_TRY_GOTO(mf_arena_zeros(A, &dtrans, MF_F32, 3, (const int64_t[]){L, N, 3}, lab));
    MF_TRY_GOTO(mf_arena_tensor(A, &ren.alt_naming_is_better, MF_F32, 1, &N, lab));
    MF_TRY_GOTO(mf_arena_tensor(A, &ren.renamed_atom14_gt_positions, MF_F32, 3,
                                (const int64_t[]){N, 14, 3}, lab));
    MF_TRY_GOTO(mf_arena_tensor(A, &ren.renamed_atom14_gt_exists, MF_F32, 2,
                                (const int64_t[]){N, 14}, lab));
    MF_TRY_GOTO(
        mf_arena_tensor(A, &ren.renamed_gt_rot, MF_F32, 4, (const int64_t[]){N, 8, 3, 3}, lab));
    MF_TRY_GOTO(
        mf_arena_tensor(A, &ren.renamed_gt_trans, MF_F32, 3, (const int64_t[]){N, 8, 3}, lab));
    MF_TRY_GOTO(
        mf_arena_tensor(A, &logits, MF_F32, 2, (const int64_t[]){N, hd.plddt_num_bins}, lab));
    MF_TRY_GOTO(mf_arena_zeros(A, &dlogits, MF_F32, 2, logits.shape, lab));
    MF_TRY_GOTO(mf_params_alloc(A, sl, nl, MF_PARAMS_AS_ARRAY(&gl), lab));
    /* AF2 backbone_loss: r3.rigids_from_quataffine(QuatAffine.from_tensor(traj)) */
    const float *fr = o->frames.data;
    float *br = bb_rot.data, *bt = bb_trans.data;
    for (int64_t k = 0; k < L * N; k++) {
        mf_quat_to_rot_f32(br + 9 * k, fr + 7 * k, 1);
        for (int j = 0; j < 3; j++) bt[3 * k + j] = fr[7 * k + 4 + j];
    }
    const size_t f4 = sizeof(float);
    mf_tensor pos_last = mf_tensor_make((char *)o->positions.data + (size_t)((L - 1) * N * 42) * f4,
                                        MF_F32, MF_DEV_CPU, 3, (const int64_t[]){N, 14, 3});
    mf_tensor scr = mf_tensor_make((char *)o->sidechain_rot.data + (size_t)((L - 1) * N * 72) * f4,
                                   MF_F32, MF_DEV_CPU, 4, (const int64_t[]){N, 8, 3, 3});
    mf_tensor sct =
        mf_tensor_make((char *)o->sidechain_trans.data + (size_t)((L - 1) * N * 24) * f4, MF_F32,
                       MF_DEV_CPU, 3, (const int64_t[]){N, 8, 3});
    /* the loss terms */
    float bb = 0, sc = 0, chi = 0;
    double plddt = 0;
    mf_violation_terms vt;
    mf_predicted_lddt_head_saved sv_ld;
    const mf_plddt_loss_options po = {.cutoff = v->plddt_cutoff,
                                      .resolution = {true, v->plddt_min_res, v->plddt_max_res}};
    MF_TRY_GOTO(
        mf_backbone_fape_forward(ctx, &bb, NULL, &bb_rot, &bb_trans, &b, use_clamped, &opt));
    MF_TRY_GOTO(mf_compute_renamed_ground_truth(ctx, &ren, &pos_last, &b));
    MF_TRY_GOTO(mf_sidechain_fape_forward(ctx, &sc, &scr, &sct, &pos_last, &ren, &b, &opt));
    MF_TRY_GOTO(mf_supervised_chi_loss_forward(ctx, &chi, NULL, NULL, &o->angles,
                                               &o->unnormalized_angles, &b, (float)v->chi_weight,
                                               (float)v->angle_norm_weight));
    MF_TRY_GOTO(mf_structural_violations_forward(ctx, &vt, NULL, &pos_last, &b, &v->tab));
    MF_TRY_GOTO(mf_predicted_lddt_head_forward(ctx, &logits, false, &sv_ld, &o->act, &pl, &hd));
    MF_TRY_GOTO(mf_plddt_loss(ctx, &plddt, &logits, &o->final_atom_positions, &true_pos,
                              &all_atom_mask, resolution, &po));
    MF_TRY_GOTO(compare_loss(v, "fape", v->backbone_weight * bb + v->sidechain_weight * sc));
    MF_TRY_GOTO(compare_loss(v, "supervised_chi", chi));
    MF_TRY_GOTO(compare_loss(v, "violation", vt.loss));
    MF_TRY_GOTO(compare_loss(v, "plddt_loss", plddt));

    /* d loss/total / d outputs */
    mf_structure_module_outputs g = {0};
    MF_TRY_GOTO(mf_arena_zeros(A, &g.frames, MF_F32, 3, o->frames.shape, lab));
    MF_TRY_GOTO(mf_arena_zeros(A, &g.sidechain_rot, MF_F32, 4, o->sidechain_rot.shape, lab));
    MF_TRY_GOTO(mf_arena_zeros(A, &g.sidechain_trans, MF_F32, 4, o->sidechain_trans.shape, lab));
    MF_TRY_GOTO(mf_arena_zeros(A, &g.positions, MF_F32, 4, o->positions.shape, lab));
    MF_TRY_GOTO(mf_arena_zeros(A, &g.angles, MF_F32, 4, o->angles.shape, lab));
    MF_TRY_GOTO(
        mf_arena_zeros(A, &g.unnormalized_angles, MF_F32, 4, o->unnormalized_angles.shape, lab));
    MF_TRY_GOTO(mf_arena_zeros(A, &g.act, MF_F32, 2, o->act.shape, lab));
    const float s_fape = (float)(total * v->w_fape);
    MF_TRY_GOTO(mf_backbone_fape_backward(ctx, &drot, &dtrans, s_fape * (float)v->backbone_weight,
                                          &bb_rot, &bb_trans, &b, use_clamped, &opt));
    float *gf = g.frames.data;
    const float *dr = drot.data, *dt = dtrans.data;
    for (int64_t k = 0; k < L * N; k++) {
        mf_quat_to_rot_backward_f32(gf + 7 * k, dr + 9 * k, fr + 7 * k, 1);
        for (int j = 0; j < 3; j++) gf[7 * k + 4 + j] += dt[3 * k + j];
    }
    mf_tensor gpos = mf_tensor_make((char *)g.positions.data + (size_t)((L - 1) * N * 42) * f4,
                                    MF_F32, MF_DEV_CPU, 3, (const int64_t[]){N, 14, 3});
    mf_tensor gscr = mf_tensor_make((char *)g.sidechain_rot.data + (size_t)((L - 1) * N * 72) * f4,
                                    MF_F32, MF_DEV_CPU, 4, (const int64_t[]){N, 8, 3, 3});
    mf_tensor gsct =
        mf_tensor_make((char *)g.sidechain_trans.data + (size_t)((L - 1) * N * 24) * f4, MF_F32,
                       MF_DEV_CPU, 3, (const int64_t[]){N, 8, 3});
    MF_TRY_GOTO(mf_sidechain_fape_backward(ctx, &gscr, &gsct, &gpos,
                                           s_fape * (float)v->sidechain_weight, &scr, &sct,
                                           &pos_last, &ren, &b, &opt));
    MF_TRY_GOTO(mf_supervised_chi_loss_backward(
        ctx, &g.angles, &g.unnormalized_angles, (float)(total * v->w_chi), &o->angles,
        &o->unnormalized_angles, &b, (float)v->chi_weight, (float)v->angle_norm_weight));
    MF_TRY_GOTO(mf_structural_violation_loss_backward(ctx, &gpos, (float)(total * v->w_violation),
                                                      &pos_last, &b, &v->tab));
    MF_TRY_GOTO(mf_plddt_loss_backward(ctx, &dlogits, total * v->w_plddt, &logits,
                                       &o->final_atom_positions, &true_pos, &all_atom_mask,
                                       resolution, &po));
    MF_TRY_GOTO(
        mf_predicted_lddt_head_backward(ctx, &g.act, &gl, &dlogits, &sv_ld, &o->act, &pl, &hd));
    /* back through the structure module to its weights */
    mf_structure_module_params gp;
    memset(&gp, 0, sizeof gp);
    MF_TRY_GOTO(mf_params_alloc(A, v->specs, np, MF_PARAMS_AS_ARRAY(&gp), lab));
    MF_TRY_GOTO(mf_structure_module_backward(ctx, NULL, NULL, &gp, &g, saved, single, pair, aatype,
                                             seq_mask, p, d));
    for (int k = 0; k < np; k++) {
        char full[512];
        snprintf(full, sizeof full, "%s/%s", MF_STRUCTURE_MODULE_SCOPE, v->specs[k].name);
        MF_TRY_GOTO(compare_grad(v, full, &MF_PARAMS_AS_ARRAY(&gp)[k]));
    }
cleanup:
    mf_arena_release(A, mark);
    return st;
}

static mf_status run(mf_ctx *ctx, vstate *v)
{
    mf_arena *A = ctx->arena;
    MF_TRY(read_config(v));
    MF_TRY(mf_param_store_load_npz(&v->params, v->npz_path, NULL));
    mf_config cfg;
    MF_TRY(mf_param_store_infer_config(&v->params, &cfg));
    cfg.structure_module.num_layers = v->num_layers;
    cfg.structure_module.position_scale = v->position_scale;
    cfg.structure_module.dropout_rate = 0.0;
    const mf_structure_module_dims d = mf_structure_module_dims_from_config(&cfg);
    mf_param_spec *specs = v->specs;
    const int np = mf_structure_module_param_specs(&d, specs);
    MF_REQUIRE(np > 0, "verify structure module: invalid sizes from %s and %s", v->npz_path,
               v->cfg_path);
    mf_structure_module_params p;
    memset(&p, 0, sizeof p);
    mf_status bst = mf_param_store_bind(&v->params, MF_STRUCTURE_MODULE_SCOPE, specs, np, -1,
                                        MF_PARAMS_AS_ARRAY(&p));
    if (bst != MF_OK) return mf_error_context(bst, "%s", v->npz_path);

    const mf_h5_array *in_single_a = NULL, *in_pair_a = NULL, *aatype_a = NULL, *mask_a = NULL;
    MF_TRY(load(v, F_EXP, STAGE "in_single", MF_F32, &in_single_a));
    MF_TRY(load(v, F_EXP, STAGE "in_pair", MF_F32, &in_pair_a));
    MF_TRY(load(v, F_FEAT, "aatype", MF_I32, &aatype_a));
    MF_TRY(load(v, F_FEAT, "seq_mask", MF_F32, &mask_a));
    MF_REQUIRE(in_single_a->ndim == 3 && in_single_a->shape[2] == d.c_s,
               "verify structure module: %s in_single must be [R, N, %lld]", v->path[F_EXP],
               (long long)d.c_s);
    const int64_t R = in_single_a->shape[0], N = in_single_a->shape[1], L = d.num_layer, CS = d.c_s,
                  CZ = d.c_z;
    MF_REQUIRE(in_pair_a->ndim == 4 && in_pair_a->shape[0] == R && in_pair_a->shape[1] == N &&
                   in_pair_a->shape[2] == N && in_pair_a->shape[3] == CZ,
               "verify structure module: in_pair must be [%lld, %lld, %lld, %lld]", (long long)R,
               (long long)N, (long long)N, (long long)CZ);
    MF_REQUIRE(aatype_a->ndim == 1 && aatype_a->shape[0] == N && mask_a->ndim == 1 &&
                   mask_a->shape[0] == N,
               "verify structure module: features aatype and seq_mask must be [%lld]",
               (long long)N);
    const mf_tensor aatype = mf_tensor_make(aatype_a->data, MF_I32, MF_DEV_CPU, 1, &N);
    const mf_tensor seq_mask = mf_tensor_make(mask_a->data, MF_F32, MF_DEV_CPU, 1, &N);

    const mf_arena_mark_t mark = mf_arena_mark(A);
    mf_status st = MF_OK;
    mf_structure_module_outputs o = {0};
    mf_tensor homog;
    MF_TRY_GOTO(mf_arena_tensor(A, &o.frames, MF_F32, 3, (const int64_t[]){L, N, 7}, "verify.sm"));
    MF_TRY_GOTO(mf_arena_tensor(A, &o.sidechain_rot, MF_F32, 4, (const int64_t[]){L, N, 8, 9},
                                "verify.sm"));
    MF_TRY_GOTO(mf_arena_tensor(A, &o.sidechain_trans, MF_F32, 4, (const int64_t[]){L, N, 8, 3},
                                "verify.sm"));
    MF_TRY_GOTO(
        mf_arena_tensor(A, &o.positions, MF_F32, 4, (const int64_t[]){L, N, 14, 3}, "verify.sm"));
    MF_TRY_GOTO(
        mf_arena_tensor(A, &o.angles, MF_F32, 4, (const int64_t[]){L, N, 7, 2}, "verify.sm"));
    MF_TRY_GOTO(mf_arena_tensor(A, &o.unnormalized_angles, MF_F32, 4, (const int64_t[]){L, N, 7, 2},
                                "verify.sm"));
    MF_TRY_GOTO(mf_arena_tensor(A, &o.act, MF_F32, 2, (const int64_t[]){N, CS}, "verify.sm"));
    MF_TRY_GOTO(mf_arena_tensor(A, &o.final_atom_positions, MF_F32, 3, (const int64_t[]){N, 37, 3},
                                "verify.sm"));
    MF_TRY_GOTO(
        mf_arena_tensor(A, &o.final_atom_mask, MF_F32, 2, (const int64_t[]){N, 37}, "verify.sm"));
    MF_TRY_GOTO(
        mf_arena_tensor(A, &homog, MF_F32, 4, (const int64_t[]){L, N * 8, 4, 4}, "verify.sm"));
    mf_structure_module_saved *saved = &v->saved;
    for (int64_t r = 0; r < R; r++) {
        const mf_arena_mark_t mr = mf_arena_mark(A);
        const mf_tensor single = mf_tensor_make((float *)in_single_a->data + (size_t)(r * N * CS),
                                                MF_F32, MF_DEV_CPU, 2, (const int64_t[]){N, CS});
        const mf_tensor pair = mf_tensor_make((float *)in_pair_a->data + (size_t)(r * N * N * CZ),
                                              MF_F32, MF_DEV_CPU, 3, (const int64_t[]){N, N, CZ});
        MF_TRY_GOTO(mf_structure_module_forward(ctx, &o, saved, &single, &pair, &aatype, &seq_mask,
                                                &p, &d, NULL));
        to_homogeneous(homog.data, o.sidechain_rot.data, o.sidechain_trans.data, L * N * 8);
        MF_TRY_GOTO(compare(v, F_EXP, STAGE "out_frames", r, o.frames.data, L * N * 7));
        MF_TRY_GOTO(compare(v, F_EXP, STAGE "out_sidechain_frames", r, homog.data, L * N * 8 * 16));
        MF_TRY_GOTO(compare(v, F_EXP, STAGE "out_unnormalized_angles", r,
                            o.unnormalized_angles.data, L * N * 14));
        MF_TRY_GOTO(compare(v, F_EXP, STAGE "out_angles", r, o.angles.data, L * N * 14));
        MF_TRY_GOTO(compare(v, F_EXP, STAGE "out_positions", r, o.positions.data, L * N * 42));
        /* a_1 .. a_L: rows 1.. of the saved chain */
        MF_TRY_GOTO(compare(v, F_EXP, STAGE "out_states", r,
                            (const float *)saved->act.data + N * CS, L * N * CS));
        MF_TRY_GOTO(compare(v, F_EXP, STAGE "out_single", r, o.act.data, N * CS));
        if (r == R - 1)
            MF_TRY_GOTO(
                check_training(ctx, v, &o, saved, &single, &pair, &aatype, &seq_mask, &p, &d, np));
        mf_arena_release(A, mr);
    }
    /* the model outputs of the last iteration (the loop's last forward) */
    MF_TRY_GOTO(compare(v, F_EXP, "sm/frames", -1, o.frames.data, L * N * 7));
    MF_TRY_GOTO(compare(v, F_EXP, "sm/positions", -1, o.positions.data, L * N * 42));
    MF_TRY_GOTO(compare(v, F_EXP, "sm/angles", -1, o.angles.data, L * N * 14));
    MF_TRY_GOTO(
        compare(v, F_EXP, "final_atom_positions", -1, o.final_atom_positions.data, N * 111));
    MF_TRY_GOTO(compare(v, F_EXP, "final_atom_mask", -1, o.final_atom_mask.data, N * 37));
    MF_TRY_GOTO(compare(v, F_TRAIN, "train_outputs/sm/frames", -1, o.frames.data, L * N * 7));
    MF_TRY_GOTO(
        compare(v, F_TRAIN, "train_outputs/sm/positions", -1, o.positions.data, L * N * 42));
    MF_TRY_GOTO(compare(v, F_TRAIN, "train_outputs/final_atom_positions", -1,
                        o.final_atom_positions.data, N * 111));
cleanup:
    mf_arena_release(A, mark);
    return st;
}

mf_status mf_verify_structure_module(mf_ctx *ctx, const char *testvector_dir,
                                     mf_verify_report *report)
{
    MF_REQUIRE(ctx && ctx->arena && testvector_dir && report,
               "verify structure module: ctx, arena, folder and report required");
    MF_REQUIRE(ctx->device == MF_DEV_CPU, "verify structure module: needs a CPU context");
    vstate *v = calloc(1, sizeof *v);
    MF_REQUIRE(v, "verify structure module: out of memory");
    static const char *const files[F_COUNT] = {"features.h5", "expected_outputs.h5",
                                               "train_expected.h5"};
    v->report = report;
    mf_param_store_init(&v->params);
    for (int k = 0; k < F_COUNT; k++) {
        snprintf(v->path[k], sizeof v->path[k], "%s/%s", testvector_dir, files[k]);
        v->file[k] = H5I_INVALID_HID;
    }
    snprintf(v->npz_path, sizeof v->npz_path, "%s/params_af2.npz", testvector_dir);
    snprintf(v->cfg_path, sizeof v->cfg_path, "%s/config.json", testvector_dir);
    mf_status st = MF_OK;
    mf_h5_quiet();
    for (int k = 0; k < F_COUNT && st == MF_OK; k++) st = mf_h5_open_read(v->path[k], &v->file[k]);
    if (st == MF_OK) st = run(ctx, v);
    for (int k = 0; k < F_COUNT; k++)
        if (v->file[k] >= 0) H5Fclose(v->file[k]);
    for (int i = 0; i < v->n_arrays; i++) mf_h5_array_free(&v->arrays[i]);
    mf_param_store_free(&v->params);
    free(v);
    return st;
}
