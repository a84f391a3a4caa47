/* The heads and their losses against the reference vectors (see verify_heads.h). */
#include "model/verify_heads.h"

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

#define MAX_ARRAYS         40
#define VEC_RTOL_DEFAULT   1e-4 /* expected_outputs.h5 and loss terms (README) */
#define VEC_RTOL_GRADIENTS 1e-3 /* train_expected.h5 gradients (README) */

enum { F_FEAT, F_EXP, F_TRAIN, F_COUNT };

typedef struct {
    char path[F_COUNT][1024], npz_path[1024], cfg_path[1024];
    hid_t file[F_COUNT];
    mf_param_store params;
    mf_h5_array arrays[MAX_ARRAYS];
    int n_arrays;
    mf_verify_report *report;
    /* config.json */
    double first_break, last_break, plddt_cutoff, plddt_min_res, plddt_max_res;
    double w_distogram, w_masked_msa, w_plddt, w_exp_resolved;
} vstate;

static mf_status load(vstate *v, int which, const char *name, mf_dtype dt, const mf_h5_array **out)
{
    MF_REQUIRE(v->n_arrays < MAX_ARRAYS, "verify heads: too many arrays");
    mf_h5_array *a = &v->arrays[v->n_arrays];
    MF_TRY(mf_h5_read_array(v->file[which], v->path[which], name, dt, a));
    v->n_arrays++;
    *out = a;
    return MF_OK;
}

static mf_tensor tensor_of(const mf_h5_array *a)
{
    int nd = a->ndim < MF_MAX_DIMS ? a->ndim : MF_MAX_DIMS;
    return mf_tensor_make(a->data, a->dtype, MF_DEV_CPU, nd, a->shape);
}

static mf_status require_shape(const mf_h5_array *a, const char *name, int ndim,
                               const int64_t *shape)
{
    bool ok = a->ndim == ndim;
    for (int k = 0; ok && k < ndim; k++) ok = a->shape[k] == shape[k];
    MF_REQUIRE(ok, "verify heads: %s has %d dims [%lld, ...], expected %d dims [%lld, ...]", name,
               a->ndim, (long long)(a->ndim ? a->shape[0] : 0), ndim,
               (long long)(ndim ? shape[0] : 0));
    return MF_OK;
}

static double scalar_of(const mf_h5_array *a)
{
    return a->dtype == MF_I32 ? (double)((const int32_t *)a->data)[0]
                              : (double)((const float *)a->data)[0];
}

static double dataset_rtol(vstate *v, int which, const char *name, double fallback)
{
    double tol = fallback;
    if (mf_h5_read_attr_double(v->file[which], name, "rtol", &tol) != MF_OK) {
        mf_clear_error();
        tol = fallback;
    }
    return tol;
}

static mf_status compare(vstate *v, const char *item, const float *cand, const float *ref,
                         int64_t n, double tol)
{
    mf_verify_report *r = v->report;
    MF_REQUIRE(r->count < MF_VERIFY_MAX_ITEMS, "verify report full");
    mf_verify_item *it = &r->items[r->count++];
    snprintf(it->name, sizeof it->name, "%s", item);
    it->result = mf_compare_maxrel(cand, ref, n, n, NULL, 0, tol, 0.0);
    return MF_OK;
}

static mf_status compare_with(vstate *v, int which, const char *name, const mf_tensor *cand)
{
    const mf_h5_array *ref = NULL;
    MF_TRY(load(v, which, name, MF_F32, &ref));
    MF_REQUIRE(mf_h5_array_numel(ref) == mf_tensor_numel(cand) && cand->dtype == MF_F32,
               "verify heads: %s has %lld values, the head produced %lld", name,
               (long long)mf_h5_array_numel(ref), (long long)mf_tensor_numel(cand));
    return compare(v, name, cand->data, ref->data, mf_tensor_numel(cand),
                   dataset_rtol(v, which, name, VEC_RTOL_DEFAULT));
}

static mf_status compare_loss(vstate *v, const char *term, double value)
{
    char name[128];
    snprintf(name, sizeof name, "loss/%s", term);
    const mf_h5_array *ref = NULL;
    MF_TRY(load(v, F_TRAIN, name, MF_F32, &ref));
    MF_REQUIRE(mf_h5_array_numel(ref) == 1, "verify heads: %s is not a scalar", name);
    const float cand = (float)value;
    return compare(v, name, &cand, ref->data, 1, dataset_rtol(v, F_TRAIN, name, VEC_RTOL_DEFAULT));
}

/* Compares each parameter gradient with train_expected.h5 grads/<escaped full name>. */
static mf_status compare_grads(vstate *v, const char *scope, const mf_param_spec *specs, int n,
                               const mf_tensor *grads)
{
    for (int i = 0; i < n; i++) {
        char full[512], esc[512], name[600];
        snprintf(full, sizeof full, "%s/%s", scope, specs[i].name);
        mf_h5_escape_name(full, esc, sizeof esc);
        snprintf(name, sizeof name, "grads/%s", esc);
        const mf_h5_array *ref = NULL;
        MF_TRY(load(v, F_TRAIN, name, MF_F32, &ref));
        MF_REQUIRE(mf_h5_array_numel(ref) == mf_tensor_numel(&grads[i]),
                   "verify heads: %s has %lld values, the gradient %lld", name,
                   (long long)mf_h5_array_numel(ref), (long long)mf_tensor_numel(&grads[i]));
        char item[sizeof full + 8];
        snprintf(item, sizeof item, "grads/%s", full + strlen(MF_HEADS_SCOPE "/"));
        MF_TRY(compare(v, item, grads[i].data, ref->data, mf_tensor_numel(&grads[i]),
                       VEC_RTOL_GRADIENTS));
        v->n_arrays--; /* gradients are compared one at a time */
        mf_h5_array_free(&v->arrays[v->n_arrays]);
    }
    return MF_OK;
}

static mf_status bind(vstate *v, const char *scope, const mf_param_spec *specs, int n,
                      mf_tensor *params)
{
    mf_status st = mf_param_store_bind(&v->params, scope, specs, n, -1, params);
    if (st != MF_OK) return mf_error_context(st, "%s", v->npz_path);
    return MF_OK;
}

static int64_t param_dim(vstate *v, const char *scope, const char *name, int k)
{
    char full[512];
    snprintf(full, sizeof full, "%s/%s", scope, name);
    const mf_tensor *t = mf_param_store_find(&v->params, full);
    return t && k < t->ndim ? t->shape[k] : -1;
}

static const cJSON *json_path(const cJSON *root, const char *a, const char *b, const char *c)
{
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(root, a);
    if (b) x = cJSON_GetObjectItemCaseSensitive(x, b);
    if (c) x = cJSON_GetObjectItemCaseSensitive(x, c);
    return cJSON_IsNumber(x) ? x : NULL;
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
        {"heads", "distogram", "first_break", &v->first_break},
        {"heads", "distogram", "last_break", &v->last_break},
        {"loss", "plddt", "cutoff", &v->plddt_cutoff},
        {"loss", "plddt", "min_resolution", &v->plddt_min_res},
        {"loss", "plddt", "max_resolution", &v->plddt_max_res},
        {"loss", "weights", "distogram", &v->w_distogram},
        {"loss", "weights", "masked_msa", &v->w_masked_msa},
        {"loss", "weights", "plddt_loss", &v->w_plddt},
        {"loss", "weights", "experimentally_resolved", &v->w_exp_resolved},
    };
    mf_status st = MF_OK;
    for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++) {
        const cJSON *x = root ? json_path(root, keys[k].a, keys[k].b, keys[k].c) : NULL;
        if (!x) {
            st = MF_ERROR(MF_ERR_FORMAT, "%s: number %s.%s.%s missing", v->cfg_path, keys[k].a,
                          keys[k].b, keys[k].c);
            break;
        }
        *keys[k].dst = x->valuedouble;
    }
    cJSON_Delete(root);
    return st;
}

static mf_status run(mf_ctx *ctx, vstate *v)
{
    mf_arena *a = ctx->arena;
    MF_TRY(read_config(v));
    MF_TRY(mf_param_store_load_npz(&v->params, v->npz_path, NULL));

    /* Sizes from the parameter shapes and the stored activations. */
    mf_heads_dims d = {
        .c_z = param_dim(v, MF_DISTOGRAM_HEAD_SCOPE, "half_logits//weights", 0),
        .distogram_num_bins = param_dim(v, MF_DISTOGRAM_HEAD_SCOPE, "half_logits//weights", 1),
        .distogram_first_break = v->first_break,
        .distogram_last_break = v->last_break,
        .c_m = param_dim(v, MF_MASKED_MSA_HEAD_SCOPE, "logits//weights", 0),
        .masked_msa_num_output = param_dim(v, MF_MASKED_MSA_HEAD_SCOPE, "logits//weights", 1),
        .c_s = param_dim(v, MF_EXPERIMENTALLY_RESOLVED_HEAD_SCOPE, "logits//weights", 0),
        .experimentally_resolved_num_output =
            param_dim(v, MF_EXPERIMENTALLY_RESOLVED_HEAD_SCOPE, "logits//weights", 1),
        .plddt_c_hidden = param_dim(v, MF_PREDICTED_LDDT_HEAD_SCOPE, "act_0//weights", 1),
        .plddt_num_bins = param_dim(v, MF_PREDICTED_LDDT_HEAD_SCOPE, "logits//weights", 1),
    };
    mf_distogram_head_params pd, gd;
    mf_masked_msa_head_params pm, gm;
    mf_predicted_lddt_head_params pl, gl;
    mf_experimentally_resolved_head_params pe, ge;
    mf_param_spec sd[2], sm[2], sl[8], se[2];
    const int nd = mf_distogram_head_param_specs(&d, sd);
    const int nm = mf_masked_msa_head_param_specs(&d, sm);
    const int nl = mf_predicted_lddt_head_param_specs(&d, sl);
    const int ne = mf_experimentally_resolved_head_param_specs(&d, se);
    MF_TRY(bind(v, MF_DISTOGRAM_HEAD_SCOPE, sd, nd, MF_PARAMS_AS_ARRAY(&pd)));
    MF_TRY(bind(v, MF_MASKED_MSA_HEAD_SCOPE, sm, nm, MF_PARAMS_AS_ARRAY(&pm)));
    MF_TRY(bind(v, MF_PREDICTED_LDDT_HEAD_SCOPE, sl, nl, MF_PARAMS_AS_ARRAY(&pl)));
    MF_TRY(bind(v, MF_EXPERIMENTALLY_RESOLVED_HEAD_SCOPE, se, ne, MF_PARAMS_AS_ARRAY(&pe)));

    const mf_h5_array *pair_a = NULL, *single_a = NULL, *out_m_a = NULL, *sm_single_a = NULL,
                      *mm_ref_a = NULL;
    MF_TRY(load(v, F_EXP, "pair", MF_F32, &pair_a));
    const int64_t N = pair_a->shape[0];
    MF_TRY(require_shape(pair_a, "pair", 3, (const int64_t[]){N, N, d.c_z}));
    MF_TRY(load(v, F_EXP, "single", MF_F32, &single_a));
    MF_TRY(require_shape(single_a, "single", 2, (const int64_t[]){N, d.c_s}));
    MF_TRY(load(v, F_EXP, "intermediates/evoformer/out_m", MF_F32, &out_m_a));
    MF_REQUIRE(out_m_a->ndim == 4 && out_m_a->shape[2] == N && out_m_a->shape[3] == d.c_m,
               "verify heads: intermediates/evoformer/out_m must be [R, S + T, N, c_m]");
    const int64_t R = out_m_a->shape[0];
    MF_TRY(load(v, F_EXP, "intermediates/structure_module/out_single", MF_F32, &sm_single_a));
    MF_TRY(require_shape(sm_single_a, "intermediates/structure_module/out_single", 3,
                         (const int64_t[]){R, N, d.c_s}));
    MF_TRY(load(v, F_EXP, "masked_msa_logits", MF_F32, &mm_ref_a));
    const int64_t S = mm_ref_a->shape[0];
    MF_REQUIRE(mm_ref_a->ndim == 3 && S <= out_m_a->shape[1],
               "verify heads: masked_msa_logits must be [S, N, classes], S <= MSA rows");

    const mf_tensor pair = tensor_of(pair_a), single = tensor_of(single_a);
    /* The last iteration's cluster rows: rows 0..S-1 of out_m[R-1], contiguous. */
    const mf_tensor msa =
        mf_tensor_make((float *)out_m_a->data + (size_t)((R - 1) * out_m_a->shape[1] * N * d.c_m),
                       MF_F32, MF_DEV_CPU, 3, (const int64_t[]){S, N, d.c_m});
    const mf_tensor sm_single =
        mf_tensor_make((float *)sm_single_a->data + (size_t)((R - 1) * N * d.c_s), MF_F32,
                       MF_DEV_CPU, 2, (const int64_t[]){N, d.c_s});

    const mf_h5_array *pb_a = NULL, *pbm_a = NULL, *true_msa_a = NULL, *bert_a = NULL,
                      *pos_a = NULL, *aam_a = NULL, *exists_a = NULL, *res_a = NULL, *len_a = NULL,
                      *pred_a = NULL;
    MF_TRY(load(v, F_FEAT, "pseudo_beta", MF_F32, &pb_a));
    MF_TRY(load(v, F_FEAT, "pseudo_beta_mask", MF_F32, &pbm_a));
    MF_TRY(load(v, F_FEAT, "true_msa", MF_I32, &true_msa_a));
    MF_TRY(load(v, F_FEAT, "bert_mask", MF_F32, &bert_a));
    MF_TRY(load(v, F_FEAT, "all_atom_positions", MF_F32, &pos_a));
    MF_TRY(load(v, F_FEAT, "all_atom_mask", MF_F32, &aam_a));
    MF_TRY(load(v, F_FEAT, "atom37_atom_exists", MF_F32, &exists_a));
    MF_TRY(load(v, F_FEAT, "resolution", MF_F32, &res_a));
    MF_TRY(load(v, F_FEAT, "seq_length", MF_I32, &len_a));
    MF_TRY(load(v, F_TRAIN, "train_outputs/final_atom_positions", MF_F32, &pred_a));
    /* The losses use the last iteration's per-iteration features (README). */
    MF_REQUIRE(true_msa_a->ndim == 3 && true_msa_a->shape[1] == S && true_msa_a->shape[2] == N &&
                   bert_a->ndim == 3 && bert_a->shape[0] == true_msa_a->shape[0],
               "verify heads: true_msa / bert_mask must be [R, S, N]");
    const int64_t Rf = true_msa_a->shape[0];
    const mf_tensor true_msa =
        mf_tensor_make((int32_t *)true_msa_a->data + (size_t)((Rf - 1) * S * N), MF_I32, MF_DEV_CPU,
                       2, (const int64_t[]){S, N});
    const mf_tensor bert = mf_tensor_make((float *)bert_a->data + (size_t)((Rf - 1) * S * N),
                                          MF_F32, MF_DEV_CPU, 2, (const int64_t[]){S, N});
    const mf_tensor pseudo_beta = tensor_of(pb_a), pb_mask = tensor_of(pbm_a);
    const mf_tensor true_pos = tensor_of(pos_a), all_atom_mask = tensor_of(aam_a);
    const mf_tensor exists = tensor_of(exists_a), pred_pos = tensor_of(pred_a);
    const float resolution = (float)scalar_of(res_a);
    const double seq_length = scalar_of(len_a);
    /* loss/total = unscaled * sqrt(min(seq_length, N)) (README; AF2's crop-size scaling). */
    const double total_scale = sqrt(fmin(seq_length, (double)N));

    const mf_arena_mark_t mark = mf_arena_mark(a);
    mf_status st = MF_OK;
    mf_tensor dg_logits, mm_logits, er_logits, ld_logits, plddt, d_dg, d_mm, d_er, d_ld;
    MF_TRY_GOTO(mf_arena_tensor(a, &dg_logits, MF_F32, 3,
                                (const int64_t[]){N, N, d.distogram_num_bins}, "verify.dgram"));
    MF_TRY_GOTO(mf_arena_tensor(a, &mm_logits, MF_F32, 3,
                                (const int64_t[]){S, N, d.masked_msa_num_output}, "verify.msa"));
    MF_TRY_GOTO(mf_arena_tensor(a, &er_logits, MF_F32, 2,
                                (const int64_t[]){N, d.experimentally_resolved_num_output},
                                "verify.exp_resolved"));
    MF_TRY_GOTO(mf_arena_tensor(a, &ld_logits, MF_F32, 2, (const int64_t[]){N, d.plddt_num_bins},
                                "verify.lddt"));
    MF_TRY_GOTO(mf_arena_tensor(a, &plddt, MF_F32, 1, &N, "verify.plddt"));
    MF_TRY_GOTO(mf_arena_zeros(a, &d_dg, MF_F32, 3, dg_logits.shape, "verify.d_dgram"));
    MF_TRY_GOTO(mf_arena_zeros(a, &d_mm, MF_F32, 3, mm_logits.shape, "verify.d_msa"));
    MF_TRY_GOTO(mf_arena_zeros(a, &d_er, MF_F32, 2, er_logits.shape, "verify.d_exp_resolved"));
    MF_TRY_GOTO(mf_arena_zeros(a, &d_ld, MF_F32, 2, ld_logits.shape, "verify.d_lddt"));
    MF_TRY_GOTO(mf_params_alloc(a, sd, nd, MF_PARAMS_AS_ARRAY(&gd), "verify.grads"));
    MF_TRY_GOTO(mf_params_alloc(a, sm, nm, MF_PARAMS_AS_ARRAY(&gm), "verify.grads"));
    MF_TRY_GOTO(mf_params_alloc(a, sl, nl, MF_PARAMS_AS_ARRAY(&gl), "verify.grads"));
    MF_TRY_GOTO(mf_params_alloc(a, se, ne, MF_PARAMS_AS_ARRAY(&ge), "verify.grads"));

    /* Heads, training path (saved activations on). */
    mf_linear_head_saved sv_dg = {0}, sv_mm = {0}, sv_er = {0};
    mf_predicted_lddt_head_saved sv_ld;
    MF_TRY_GOTO(mf_distogram_head_forward(ctx, &dg_logits, false, &sv_dg, &pair, &pd, &d));
    MF_TRY_GOTO(mf_masked_msa_head_forward(ctx, &mm_logits, false, &sv_mm, &msa, &pm, &d));
    MF_TRY_GOTO(
        mf_experimentally_resolved_head_forward(ctx, &er_logits, false, &sv_er, &single, &pe, &d));
    MF_TRY_GOTO(
        mf_predicted_lddt_head_forward(ctx, &ld_logits, false, &sv_ld, &sm_single, &pl, &d));
    MF_TRY_GOTO(mf_compute_plddt(&plddt, &ld_logits));
    MF_TRY_GOTO(compare_with(v, F_EXP, "distogram_logits", &dg_logits));
    MF_TRY_GOTO(compare_with(v, F_EXP, "masked_msa_logits", &mm_logits));
    MF_TRY_GOTO(compare_with(v, F_EXP, "experimentally_resolved_logits", &er_logits));
    MF_TRY_GOTO(compare_with(v, F_EXP, "lddt_logits", &ld_logits));
    MF_TRY_GOTO(compare_with(v, F_EXP, "plddt", &plddt));

    /* Losses. */
    double l_dg, l_mm, l_ld, l_er;
    mf_plddt_loss_options po = {.cutoff = v->plddt_cutoff,
                                .resolution = {true, v->plddt_min_res, v->plddt_max_res}};
    const mf_resolution_filter er_filter = mf_resolution_filter_default();
    MF_TRY_GOTO(mf_distogram_loss(ctx, &l_dg, &dg_logits, &pseudo_beta, &pb_mask,
                                  d.distogram_first_break, d.distogram_last_break));
    MF_TRY_GOTO(mf_masked_msa_loss(ctx, &l_mm, &mm_logits, &true_msa, &bert));
    MF_TRY_GOTO(mf_plddt_loss(ctx, &l_ld, &ld_logits, &pred_pos, &true_pos, &all_atom_mask,
                              resolution, &po));
    MF_TRY_GOTO(mf_experimentally_resolved_loss(ctx, &l_er, &er_logits, &all_atom_mask, &exists,
                                                resolution, &er_filter));
    MF_TRY_GOTO(compare_loss(v, "distogram", l_dg));
    MF_TRY_GOTO(compare_loss(v, "masked_msa", l_mm));
    MF_TRY_GOTO(compare_loss(v, "plddt_loss", l_ld));
    MF_TRY_GOTO(compare_loss(v, "experimentally_resolved", l_er));

    /* Head weight gradients of loss/total. */
    MF_TRY_GOTO(mf_distogram_loss_backward(ctx, &d_dg, total_scale * v->w_distogram, &dg_logits,
                                           &pseudo_beta, &pb_mask, d.distogram_first_break,
                                           d.distogram_last_break));
    MF_TRY_GOTO(mf_masked_msa_loss_backward(ctx, &d_mm, total_scale * v->w_masked_msa, &mm_logits,
                                            &true_msa, &bert));
    MF_TRY_GOTO(mf_plddt_loss_backward(ctx, &d_ld, total_scale * v->w_plddt, &ld_logits, &pred_pos,
                                       &true_pos, &all_atom_mask, resolution, &po));
    MF_TRY_GOTO(mf_experimentally_resolved_loss_backward(
        ctx, &d_er, total_scale * v->w_exp_resolved, &er_logits, &all_atom_mask, &exists,
        resolution, &er_filter));
    MF_TRY_GOTO(mf_distogram_head_backward(ctx, NULL, &gd, &d_dg, &sv_dg, &pair, &pd, &d));
    MF_TRY_GOTO(mf_masked_msa_head_backward(ctx, NULL, &gm, &d_mm, &sv_mm, &msa, &pm, &d));
    MF_TRY_GOTO(
        mf_experimentally_resolved_head_backward(ctx, NULL, &ge, &d_er, &sv_er, &single, &pe, &d));
    MF_TRY_GOTO(
        mf_predicted_lddt_head_backward(ctx, NULL, &gl, &d_ld, &sv_ld, &sm_single, &pl, &d));
    MF_TRY_GOTO(compare_grads(v, MF_DISTOGRAM_HEAD_SCOPE, sd, nd, MF_PARAMS_AS_ARRAY(&gd)));
    MF_TRY_GOTO(compare_grads(v, MF_MASKED_MSA_HEAD_SCOPE, sm, nm, MF_PARAMS_AS_ARRAY(&gm)));
    MF_TRY_GOTO(compare_grads(v, MF_PREDICTED_LDDT_HEAD_SCOPE, sl, nl, MF_PARAMS_AS_ARRAY(&gl)));
    MF_TRY_GOTO(
        compare_grads(v, MF_EXPERIMENTALLY_RESOLVED_HEAD_SCOPE, se, ne, MF_PARAMS_AS_ARRAY(&ge)));
cleanup:
    mf_arena_release(a, mark);
    return st;
}

mf_status mf_verify_heads(mf_ctx *ctx, const char *testvector_dir, mf_verify_report *report)
{
    MF_REQUIRE(ctx && ctx->arena && testvector_dir && report,
               "verify heads: ctx, arena, folder and report required");
    MF_REQUIRE(ctx->device == MF_DEV_CPU, "verify heads: needs a CPU context");
    vstate *v = calloc(1, sizeof *v);
    MF_REQUIRE(v, "verify heads: out of memory");
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
