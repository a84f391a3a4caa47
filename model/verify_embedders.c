/* The embedders against the reference intermediates (see verify_embedders.h). */
#include "model/verify_embedders.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/h5io.h"
#include "eval/compare.h"
#include "model/embedders.h"
#include "model/param_store.h"

#define MAX_ARRAYS 64

typedef struct {
    char feat_path[1024], exp_path[1024], npz_path[1024], cfg_path[1024];
    hid_t feat, exp;
    mf_param_store params;
    mf_h5_array arrays[MAX_ARRAYS];
    int n_arrays;
    mf_verify_report *report;
} vstate;

static mf_status load(vstate *v, bool from_expected, const char *name, mf_dtype dt,
                      const mf_h5_array **out)
{
    MF_REQUIRE(v->n_arrays < MAX_ARRAYS, "verify embedders: too many arrays");
    mf_h5_array *a = &v->arrays[v->n_arrays];
    MF_TRY(mf_h5_read_array(from_expected ? v->exp : v->feat,
                            from_expected ? v->exp_path : v->feat_path, name, dt, a));
    v->n_arrays++;
    *out = a;
    return MF_OK;
}

/* Host tensor of a[idx[0], ..., idx[nidx-1]] (the remaining trailing dims). */
static mf_status at(const mf_h5_array *a, const char *name, int nidx, const int64_t *idx,
                    mf_tensor *out)
{
    const int nd = a->ndim - nidx;
    MF_REQUIRE(nd >= 1 && nd <= MF_MAX_DIMS, "%s: %d dims cannot be indexed by %d", name, a->ndim,
               nidx);
    int64_t off = 0;
    for (int k = 0; k < nidx; k++) {
        MF_REQUIRE(idx[k] >= 0 && idx[k] < a->shape[k], "%s: index %lld out of range in dim %d",
                   name, (long long)idx[k], k);
        off = off * a->shape[k] + idx[k];
    }
    int64_t inner = 1;
    for (int k = nidx; k < a->ndim; k++) inner *= a->shape[k];
    char *base = (char *)a->data + (size_t)(off * inner) * mf_dtype_size(a->dtype);
    *out = mf_tensor_make(base, a->dtype, MF_DEV_CPU, nd, a->shape + nidx);
    return MF_OK;
}

/* Appends one comparison (max-relative metric) of cand against ref. */
static mf_status compare(vstate *v, const char *item, const mf_tensor *cand, const mf_tensor *ref,
                         double tol)
{
    mf_verify_report *r = v->report;
    MF_REQUIRE(r->count < MF_VERIFY_MAX_ITEMS, "verify report full");
    const int64_t n = mf_tensor_numel(ref);
    MF_REQUIRE(mf_tensor_numel(cand) == n && cand->dtype == MF_F32 && ref->dtype == MF_F32,
               "%s: the embedder produced %lld values, the reference has %lld", item,
               (long long)mf_tensor_numel(cand), (long long)n);
    mf_verify_item *it = &r->items[r->count++];
    snprintf(it->name, sizeof it->name, "%s", item);
    it->result = mf_compare_maxrel(cand->data, ref->data, n, n, NULL, 0, tol, 0.0);
    return MF_OK;
}

static double dataset_rtol(vstate *v, const char *name)
{
    double tol = 1e-4;
    if (mf_h5_read_attr_double(v->exp, name, "rtol", &tol) != MF_OK) {
        mf_clear_error();
        tol = 1e-4;
    }
    return tol;
}

static mf_status bind(vstate *v, const char *scope, const mf_param_spec *specs, int n,
                      mf_tensor *params)
{
    mf_status st = mf_param_store_bind(&v->params, scope, specs, n, -1, params);
    if (st != MF_OK) return mf_error_context(st, "%s", v->npz_path);
    return MF_OK;
}

/* Dim k of parameter "<scope>/<name>", -1 when absent (the binding then names it). */
static int64_t param_dim(vstate *v, const char *scope, const char *name, int k)
{
    char full[512];
    snprintf(full, sizeof full, "%s/%s", scope, name);
    const mf_tensor *t = mf_param_store_find(&v->params, full);
    return t && k < t->ndim ? t->shape[k] : -1;
}

/* The bins and flags that the parameter shapes do not record, from config.json. */
typedef struct {
    double rec_min, rec_max, t_min, t_max;
    bool use_unit_vector;
} vconfig;

static mf_status read_config(vstate *v, vconfig *c)
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
    const cJSON *rec = cJSON_GetObjectItemCaseSensitive(root, "recycling");
    const cJSON *tpl = cJSON_GetObjectItemCaseSensitive(root, "template");
    const cJSON *dg = cJSON_GetObjectItemCaseSensitive(tpl, "dgram");
    const cJSON *r0 = cJSON_GetObjectItemCaseSensitive(rec, "min_bin");
    const cJSON *r1 = cJSON_GetObjectItemCaseSensitive(rec, "max_bin");
    const cJSON *t0 = cJSON_GetObjectItemCaseSensitive(dg, "min_bin");
    const cJSON *t1 = cJSON_GetObjectItemCaseSensitive(dg, "max_bin");
    const cJSON *uv = cJSON_GetObjectItemCaseSensitive(tpl, "use_unit_vector");
    bool ok = cJSON_IsNumber(r0) && cJSON_IsNumber(r1) && cJSON_IsNumber(t0) &&
              cJSON_IsNumber(t1) && cJSON_IsBool(uv);
    if (ok) {
        c->rec_min = r0->valuedouble, c->rec_max = r1->valuedouble;
        c->t_min = t0->valuedouble, c->t_max = t1->valuedouble;
        c->use_unit_vector = cJSON_IsTrue(uv);
    }
    cJSON_Delete(root);
    if (!ok)
        return MF_ERROR(MF_ERR_FORMAT,
                        "%s: recycling.{min_bin,max_bin}, template.dgram.{min_bin,max_bin} or "
                        "template.use_unit_vector missing",
                        v->cfg_path);
    return MF_OK;
}

#define SCOPE MF_EMBEDDERS_SCOPE

static mf_status verify_input_embedder(mf_ctx *ctx, vstate *v, int64_t R)
{
    mf_input_embedder_dims d = {
        .target_feat_dim = param_dim(v, SCOPE, "preprocess_1d//weights", 0),
        .msa_feat_dim = param_dim(v, SCOPE, "preprocess_msa//weights", 0),
        .c_m = param_dim(v, SCOPE, "preprocess_1d//weights", 1),
        .c_z = param_dim(v, SCOPE, "left_single//weights", 1),
        .max_relative_feature = (param_dim(v, SCOPE, "pair_activiations//weights", 0) - 1) / 2,
    };
    mf_input_embedder_params p;
    mf_param_spec specs[MF_INPUT_EMBEDDER_NUM_PARAMS];
    int np = mf_input_embedder_param_specs(&d, specs);
    MF_TRY(bind(v, SCOPE, specs, np, MF_PARAMS_AS_ARRAY(&p)));
    const mf_h5_array *tf = NULL, *mf = NULL, *ri = NULL, *out_msa = NULL, *out_pair = NULL;
    MF_TRY(load(v, false, "target_feat", MF_F32, &tf));
    MF_TRY(load(v, false, "msa_feat", MF_F32, &mf));
    MF_TRY(load(v, false, "residue_index", MF_I32, &ri));
    MF_TRY(load(v, true, "intermediates/input_embedder/out_msa", MF_F32, &out_msa));
    MF_TRY(load(v, true, "intermediates/input_embedder/out_pair", MF_F32, &out_pair));
    const double tol_m = dataset_rtol(v, "intermediates/input_embedder/out_msa");
    const double tol_z = dataset_rtol(v, "intermediates/input_embedder/out_pair");
    mf_tensor target_feat, res_idx;
    MF_TRY(at(tf, "target_feat", 0, NULL, &target_feat));
    MF_TRY(at(ri, "residue_index", 0, NULL, &res_idx));
    MF_REQUIRE(target_feat.ndim == 2, "target_feat must be [N, 22]");
    const int64_t N = target_feat.shape[0];
    mf_arena_mark_t mark = mf_arena_mark(ctx->arena);
    mf_status st = MF_OK;
    mf_tensor bins;
    MF_TRY_GOTO(mf_arena_tensor(ctx->arena, &bins, MF_I32, 2, (const int64_t[]){N, N},
                                "verify.relpos_bins"));
    MF_TRY_GOTO(mf_relpos_bins(&bins, &res_idx, d.max_relative_feature));
    for (int64_t r = 0; r < R; r++) {
        mf_tensor msa_feat, ref_m, ref_z, msa, pair;
        MF_TRY_GOTO(at(mf, "msa_feat", 1, &r, &msa_feat));
        MF_TRY_GOTO(at(out_msa, "out_msa", 1, &r, &ref_m));
        MF_TRY_GOTO(at(out_pair, "out_pair", 1, &r, &ref_z));
        MF_TRY_GOTO(mf_arena_tensor(ctx->arena, &msa, MF_F32, 3,
                                    (const int64_t[]){msa_feat.shape[0], N, d.c_m}, "verify.msa"));
        MF_TRY_GOTO(mf_arena_tensor(ctx->arena, &pair, MF_F32, 3, (const int64_t[]){N, N, d.c_z},
                                    "verify.pair"));
        mf_input_embedder_saved saved;
        MF_TRY_GOTO(mf_input_embedder_forward(ctx, &msa, &pair, false, &saved, &target_feat,
                                              &msa_feat, &bins, &p, &d));
        char name[160];
        snprintf(name, sizeof name, "input_embedder/out_msa[%lld]", (long long)r);
        MF_TRY_GOTO(compare(v, name, &msa, &ref_m, tol_m));
        snprintf(name, sizeof name, "input_embedder/out_pair[%lld]", (long long)r);
        MF_TRY_GOTO(compare(v, name, &pair, &ref_z, tol_z));
    }
cleanup:
    mf_arena_release(ctx->arena, mark);
    return st;
}

static mf_status verify_recycling_embedder(mf_ctx *ctx, vstate *v, int64_t R, const vconfig *c)
{
    mf_recycling_embedder_dims d = {
        .c_m = param_dim(v, SCOPE, "prev_msa_first_row_norm//scale", 0),
        .c_z = param_dim(v, SCOPE, "prev_pair_norm//scale", 0),
        .num_bins = param_dim(v, SCOPE, "prev_pos_linear//weights", 0),
        .min_bin = c->rec_min,
        .max_bin = c->rec_max,
    };
    mf_recycling_embedder_params p;
    mf_param_spec specs[MF_RECYCLING_EMBEDDER_NUM_PARAMS];
    int np = mf_recycling_embedder_param_specs(&d, specs);
    MF_TRY(bind(v, SCOPE, specs, np, MF_PARAMS_AS_ARRAY(&p)));
    const mf_h5_array *m1 = NULL, *z = NULL, *pb = NULL, *om = NULL, *oz = NULL;
    MF_TRY(load(v, true, "intermediates/recycling_embedder/in_m1_prev", MF_F32, &m1));
    MF_TRY(load(v, true, "intermediates/recycling_embedder/in_z_prev", MF_F32, &z));
    MF_TRY(load(v, true, "intermediates/recycling_embedder/in_pseudo_beta_prev", MF_F32, &pb));
    MF_TRY(load(v, true, "intermediates/recycling_embedder/out_m1_update", MF_F32, &om));
    MF_TRY(load(v, true, "intermediates/recycling_embedder/out_z_update", MF_F32, &oz));
    const double tol_m = dataset_rtol(v, "intermediates/recycling_embedder/out_m1_update");
    const double tol_z = dataset_rtol(v, "intermediates/recycling_embedder/out_z_update");
    mf_arena_mark_t mark = mf_arena_mark(ctx->arena);
    mf_status st = MF_OK;
    for (int64_t r = 0; r < R; r++) {
        mf_tensor m1_prev, z_prev, pos, ref_m, ref_z, bins, m1u, zu;
        MF_TRY_GOTO(at(m1, "in_m1_prev", 1, &r, &m1_prev));
        MF_TRY_GOTO(at(z, "in_z_prev", 1, &r, &z_prev));
        MF_TRY_GOTO(at(pb, "in_pseudo_beta_prev", 1, &r, &pos));
        MF_TRY_GOTO(at(om, "out_m1_update", 1, &r, &ref_m));
        MF_TRY_GOTO(at(oz, "out_z_update", 1, &r, &ref_z));
        const int64_t N = m1_prev.shape[0];
        MF_TRY_GOTO(mf_arena_tensor(ctx->arena, &bins, MF_I32, 2, (const int64_t[]){N, N},
                                    "verify.dgram_bins"));
        MF_TRY_GOTO(mf_recycling_dgram_bins(&bins, &pos, &d));
        MF_TRY_GOTO(mf_arena_tensor(ctx->arena, &m1u, MF_F32, 2, m1_prev.shape, "verify.m1"));
        MF_TRY_GOTO(mf_arena_tensor(ctx->arena, &zu, MF_F32, 3, z_prev.shape, "verify.z"));
        mf_recycling_embedder_saved saved;
        MF_TRY_GOTO(mf_recycling_embedder_forward(ctx, &m1u, &zu, false, &saved, &m1_prev, &z_prev,
                                                  &bins, &p, &d));
        char name[160];
        snprintf(name, sizeof name, "recycling_embedder/out_m1_update[%lld]", (long long)r);
        MF_TRY_GOTO(compare(v, name, &m1u, &ref_m, tol_m));
        snprintf(name, sizeof name, "recycling_embedder/out_z_update[%lld]", (long long)r);
        MF_TRY_GOTO(compare(v, name, &zu, &ref_z, tol_z));
    }
cleanup:
    mf_arena_release(ctx->arena, mark);
    return st;
}

static mf_status verify_template_pair(mf_ctx *ctx, vstate *v, int64_t R, const vconfig *c)
{
    const char *scope = MF_TEMPLATE_PAIR_EMBEDDER_SCOPE;
    const int64_t F = param_dim(v, scope, "embedding2d//weights", 0);
    mf_template_pair_embedder_dims d = {
        .pair_feat_dim = F,
        .c_t = param_dim(v, scope, "embedding2d//weights", 1),
        .num_bins = F - MF_TEMPLATE_PAIR_FEAT_DIM(0),
        .min_bin = c->t_min,
        .max_bin = c->t_max,
        .use_unit_vector = c->use_unit_vector,
    };
    mf_template_pair_embedder_params p;
    mf_param_spec specs[MF_TEMPLATE_PAIR_EMBEDDER_NUM_PARAMS];
    int np = mf_template_pair_embedder_param_specs(&d, specs);
    MF_TRY(bind(v, scope, specs, np, MF_PARAMS_AS_ARRAY(&p)));
    const mf_h5_array *pb = NULL, *pbm = NULL, *aa = NULL, *pos = NULL, *am = NULL, *in = NULL,
                      *out = NULL;
    MF_TRY(load(v, false, "template_pseudo_beta", MF_F32, &pb));
    MF_TRY(load(v, false, "template_pseudo_beta_mask", MF_F32, &pbm));
    MF_TRY(load(v, false, "template_aatype", MF_I32, &aa));
    MF_TRY(load(v, false, "template_all_atom_positions", MF_F32, &pos));
    MF_TRY(load(v, false, "template_all_atom_mask", MF_F32, &am));
    MF_TRY(
        load(v, true, "intermediates/template_pair_embedder/in_template_pair_feat", MF_F32, &in));
    MF_TRY(load(v, true, "intermediates/template_pair_embedder/out", MF_F32, &out));
    const double tol_in =
        dataset_rtol(v, "intermediates/template_pair_embedder/in_template_pair_feat");
    const double tol_out = dataset_rtol(v, "intermediates/template_pair_embedder/out");
    MF_REQUIRE(in->ndim == 5 && aa->ndim == 2 && in->shape[1] == aa->shape[0],
               "template_pair_embedder: in_template_pair_feat must be [R, T, N, N, F] with T "
               "templates as template_aatype [T, N]");
    const int64_t T = aa->shape[0], N = aa->shape[1];
    mf_arena_mark_t mark = mf_arena_mark(ctx->arena);
    mf_status st = MF_OK;
    for (int64_t r = 0; r < R; r++)
        for (int64_t t = 0; t < T; t++) {
            const int64_t rt[2] = {r, t};
            mf_tensor x_pb, x_pbm, x_aa, x_pos, x_am, ref_in, ref_out, feat, emb;
            MF_TRY_GOTO(at(pb, "template_pseudo_beta", 1, &t, &x_pb));
            MF_TRY_GOTO(at(pbm, "template_pseudo_beta_mask", 1, &t, &x_pbm));
            MF_TRY_GOTO(at(aa, "template_aatype", 1, &t, &x_aa));
            MF_TRY_GOTO(at(pos, "template_all_atom_positions", 1, &t, &x_pos));
            MF_TRY_GOTO(at(am, "template_all_atom_mask", 1, &t, &x_am));
            MF_TRY_GOTO(at(in, "in_template_pair_feat", 2, rt, &ref_in));
            MF_TRY_GOTO(at(out, "out", 2, rt, &ref_out));
            MF_TRY_GOTO(mf_arena_tensor(ctx->arena, &feat, MF_F32, 3, (const int64_t[]){N, N, F},
                                        "verify.template_pair_feat"));
            MF_TRY_GOTO(mf_template_pair_feat(&feat, 0, &x_pb, &x_pbm, &x_aa, &x_pos, &x_am, &d));
            char name[160];
            snprintf(name, sizeof name,
                     "template_pair_embedder/in_template_pair_feat[%lld,%lld] (built)",
                     (long long)r, (long long)t);
            MF_TRY_GOTO(compare(v, name, &feat, &ref_in, tol_in));
            MF_TRY_GOTO(mf_arena_tensor(ctx->arena, &emb, MF_F32, 3, (const int64_t[]){N, N, d.c_t},
                                        "verify.template_pair"));
            mf_template_pair_embedder_saved saved;
            MF_TRY_GOTO(
                mf_template_pair_embedder_forward(ctx, &emb, false, &saved, &ref_in, &p, &d));
            snprintf(name, sizeof name, "template_pair_embedder/out[%lld,%lld]", (long long)r,
                     (long long)t);
            MF_TRY_GOTO(compare(v, name, &emb, &ref_out, tol_out));
        }
cleanup:
    mf_arena_release(ctx->arena, mark);
    return st;
}

static mf_status verify_template_single(mf_ctx *ctx, vstate *v, int64_t R)
{
    mf_template_single_embedder_dims d = {
        .angle_feat_dim = param_dim(v, SCOPE, "template_single_embedding//weights", 0),
        .c_m = param_dim(v, SCOPE, "template_single_embedding//weights", 1),
    };
    mf_template_single_embedder_params p;
    mf_param_spec specs[MF_TEMPLATE_SINGLE_EMBEDDER_NUM_PARAMS];
    int np = mf_template_single_embedder_param_specs(&d, specs);
    MF_TRY(bind(v, SCOPE, specs, np, MF_PARAMS_AS_ARRAY(&p)));
    const mf_h5_array *aa = NULL, *sc = NULL, *alt = NULL, *tm = NULL, *in = NULL, *out = NULL,
                      *masks = NULL, *msa_mask = NULL;
    MF_TRY(load(v, false, "template_aatype", MF_I32, &aa));
    MF_TRY(load(v, false, "template_torsion_angles_sin_cos", MF_F32, &sc));
    MF_TRY(load(v, false, "template_alt_torsion_angles_sin_cos", MF_F32, &alt));
    MF_TRY(load(v, false, "template_torsion_angles_mask", MF_F32, &tm));
    MF_TRY(load(v, false, "msa_mask", MF_F32, &msa_mask));
    MF_TRY(load(v, true, "intermediates/template_single_embedder/in_template_angle_feat", MF_F32,
                &in));
    MF_TRY(load(v, true, "intermediates/template_single_embedder/out", MF_F32, &out));
    MF_TRY(load(v, true, "intermediates/masks/evoformer_msa_mask", MF_F32, &masks));
    const double tol_in =
        dataset_rtol(v, "intermediates/template_single_embedder/in_template_angle_feat");
    const double tol_out = dataset_rtol(v, "intermediates/template_single_embedder/out");
    mf_tensor t_aa, t_sc, t_alt, t_tm;
    MF_TRY(at(aa, "template_aatype", 0, NULL, &t_aa));
    MF_TRY(at(sc, "template_torsion_angles_sin_cos", 0, NULL, &t_sc));
    MF_TRY(at(alt, "template_alt_torsion_angles_sin_cos", 0, NULL, &t_alt));
    MF_TRY(at(tm, "template_torsion_angles_mask", 0, NULL, &t_tm));
    MF_REQUIRE(t_aa.ndim == 2, "template_aatype must be [T, N]");
    const int64_t T = t_aa.shape[0], N = t_aa.shape[1], S = msa_mask->shape[0];
    MF_REQUIRE(masks->ndim == 2 && masks->shape[0] == S + T && masks->shape[1] == N,
               "evoformer_msa_mask must be [N_seq + T, N]");
    mf_arena_mark_t mark = mf_arena_mark(ctx->arena);
    mf_status st = MF_OK;
    mf_tensor feat, row_mask;
    MF_TRY_GOTO(mf_arena_tensor(ctx->arena, &feat, MF_F32, 3,
                                (const int64_t[]){T, N, MF_TEMPLATE_ANGLE_FEAT_DIM},
                                "verify.template_angle_feat"));
    MF_TRY_GOTO(mf_template_angle_feat(&feat, &t_aa, &t_sc, &t_alt, &t_tm));
    MF_TRY_GOTO(mf_arena_tensor(ctx->arena, &row_mask, MF_F32, 2, (const int64_t[]){T, N},
                                "verify.template_row_mask"));
    MF_TRY_GOTO(mf_template_row_mask(&row_mask, &t_tm));
    mf_tensor ref_mask = mf_tensor_make((float *)masks->data + S * N, MF_F32, MF_DEV_CPU, 2,
                                        (const int64_t[]){T, N});
    MF_TRY_GOTO(compare(v, "masks/evoformer_msa_mask[N_seq:] (template torsion rows)", &row_mask,
                        &ref_mask, 1e-4));
    for (int64_t r = 0; r < R; r++) {
        mf_tensor ref_in, ref_out, emb;
        MF_TRY_GOTO(at(in, "in_template_angle_feat", 1, &r, &ref_in));
        MF_TRY_GOTO(at(out, "out", 1, &r, &ref_out));
        char name[160];
        snprintf(name, sizeof name, "template_single_embedder/in_template_angle_feat[%lld] (built)",
                 (long long)r);
        MF_TRY_GOTO(compare(v, name, &feat, &ref_in, tol_in));
        mf_arena_mark_t m2 = mf_arena_mark(ctx->arena);
        MF_TRY_GOTO(mf_arena_tensor(ctx->arena, &emb, MF_F32, 3, (const int64_t[]){T, N, d.c_m},
                                    "verify.template_single"));
        mf_template_single_embedder_saved saved;
        MF_TRY_GOTO(mf_template_single_embedder_forward(ctx, &emb, false, &saved, &ref_in, &p, &d));
        snprintf(name, sizeof name, "template_single_embedder/out[%lld]", (long long)r);
        MF_TRY_GOTO(compare(v, name, &emb, &ref_out, tol_out));
        mf_arena_release(ctx->arena, m2);
    }
cleanup:
    mf_arena_release(ctx->arena, mark);
    return st;
}

static mf_status verify_extra_msa(mf_ctx *ctx, vstate *v, int64_t R)
{
    mf_extra_msa_embedder_dims d = {
        .extra_msa_feat_dim = param_dim(v, SCOPE, "extra_msa_activations//weights", 0),
        .c_e = param_dim(v, SCOPE, "extra_msa_activations//weights", 1),
    };
    mf_extra_msa_embedder_params p;
    mf_param_spec specs[MF_EXTRA_MSA_EMBEDDER_NUM_PARAMS];
    int np = mf_extra_msa_embedder_param_specs(&d, specs);
    MF_TRY(bind(v, SCOPE, specs, np, MF_PARAMS_AS_ARRAY(&p)));
    const mf_h5_array *em = NULL, *hd = NULL, *dv = NULL, *in = NULL, *out = NULL;
    MF_TRY(load(v, false, "extra_msa", MF_I32, &em));
    MF_TRY(load(v, false, "extra_has_deletion", MF_F32, &hd));
    MF_TRY(load(v, false, "extra_deletion_value", MF_F32, &dv));
    MF_TRY(load(v, true, "intermediates/extra_msa_embedder/in_extra_msa_feat", MF_F32, &in));
    MF_TRY(load(v, true, "intermediates/extra_msa_embedder/out", MF_F32, &out));
    MF_REQUIRE(em->ndim == 3 && em->shape[0] >= R, "extra_msa must be [R, S, N]");
    const double tol_in = dataset_rtol(v, "intermediates/extra_msa_embedder/in_extra_msa_feat");
    const double tol_out = dataset_rtol(v, "intermediates/extra_msa_embedder/out");
    mf_arena_mark_t mark = mf_arena_mark(ctx->arena);
    mf_status st = MF_OK;
    for (int64_t r = 0; r < R; r++) {
        mf_tensor x_em, x_hd, x_dv, ref_in, ref_out, feat, emb;
        MF_TRY_GOTO(at(em, "extra_msa", 1, &r, &x_em));
        MF_TRY_GOTO(at(hd, "extra_has_deletion", 1, &r, &x_hd));
        MF_TRY_GOTO(at(dv, "extra_deletion_value", 1, &r, &x_dv));
        MF_TRY_GOTO(at(in, "in_extra_msa_feat", 1, &r, &ref_in));
        MF_TRY_GOTO(at(out, "out", 1, &r, &ref_out));
        const int64_t S = x_em.shape[0], N = x_em.shape[1];
        MF_TRY_GOTO(mf_arena_tensor(ctx->arena, &feat, MF_F32, 3,
                                    (const int64_t[]){S, N, MF_EXTRA_MSA_FEAT_DIM},
                                    "verify.extra_msa_feat"));
        MF_TRY_GOTO(mf_extra_msa_feat(&feat, &x_em, &x_hd, &x_dv));
        char name[160];
        snprintf(name, sizeof name, "extra_msa_embedder/in_extra_msa_feat[%lld] (built)",
                 (long long)r);
        MF_TRY_GOTO(compare(v, name, &feat, &ref_in, tol_in));
        MF_TRY_GOTO(mf_arena_tensor(ctx->arena, &emb, MF_F32, 3, (const int64_t[]){S, N, d.c_e},
                                    "verify.extra_msa"));
        mf_extra_msa_embedder_saved saved;
        MF_TRY_GOTO(mf_extra_msa_embedder_forward(ctx, &emb, false, &saved, &ref_in, &p, &d));
        snprintf(name, sizeof name, "extra_msa_embedder/out[%lld]", (long long)r);
        MF_TRY_GOTO(compare(v, name, &emb, &ref_out, tol_out));
    }
cleanup:
    mf_arena_release(ctx->arena, mark);
    return st;
}

mf_status mf_verify_embedders(mf_ctx *ctx, const char *testvector_dir, mf_verify_report *report)
{
    MF_REQUIRE(ctx && ctx->arena && testvector_dir && report,
               "verify embedders: ctx, arena, folder and report required");
    if (ctx->device != MF_DEV_CPU)
        return MF_ERROR(MF_ERR_UNSUPPORTED, "verify embedders runs on a CPU context");
    mf_h5_quiet();
    vstate *v = calloc(1, sizeof *v);
    if (!v) return MF_ERROR(MF_ERR_NOMEM, "verify embedders: no memory");
    v->feat = v->exp = -1;
    v->report = report;
    mf_param_store_init(&v->params);
    snprintf(v->feat_path, sizeof v->feat_path, "%s/features.h5", testvector_dir);
    snprintf(v->exp_path, sizeof v->exp_path, "%s/expected_outputs.h5", testvector_dir);
    snprintf(v->npz_path, sizeof v->npz_path, "%s/params_af2.npz", testvector_dir);
    snprintf(v->cfg_path, sizeof v->cfg_path, "%s/config.json", testvector_dir);
    mf_status st = MF_OK;
    vconfig cfg;
    MF_TRY_GOTO(read_config(v, &cfg));
    MF_TRY_GOTO(mf_param_store_load_npz(&v->params, v->npz_path, NULL));
    MF_TRY_GOTO(mf_h5_open_read(v->feat_path, &v->feat));
    MF_TRY_GOTO(mf_h5_open_read(v->exp_path, &v->exp));
    /* R: the recycling iterations recorded (leading axis of every intermediate). */
    const mf_h5_array *om = NULL;
    MF_TRY_GOTO(load(v, true, "intermediates/input_embedder/out_msa", MF_F32, &om));
    const int64_t R = om->shape[0];
    MF_TRY_GOTO(verify_input_embedder(ctx, v, R));
    MF_TRY_GOTO(verify_recycling_embedder(ctx, v, R, &cfg));
    MF_TRY_GOTO(verify_template_pair(ctx, v, R, &cfg));
    MF_TRY_GOTO(verify_template_single(ctx, v, R));
    MF_TRY_GOTO(verify_extra_msa(ctx, v, R));
cleanup:
    for (int i = 0; i < v->n_arrays; i++) mf_h5_array_free(&v->arrays[i]);
    mf_param_store_free(&v->params);
    if (v->feat >= 0) H5Fclose(v->feat);
    if (v->exp >= 0) H5Fclose(v->exp);
    free(v);
    return st;
}
