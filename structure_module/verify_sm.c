/* The structure module against the reference vectors (see verify_sm.h). */
#include "structure_module/verify_sm.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/h5io.h"
#include "eval/compare.h"
#include "model/param_store.h"
#include "structure_module/structure_module.h"

#define VEC_RTOL_DEFAULT 1e-4 /* expected_outputs.h5 and its intermediates (README) */
#define MAX_ARRAYS       32
#define STAGE            "intermediates/structure_module/"

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
    mf_param_spec specs[MF_STRUCTURE_MODULE_MAX_PARAMS];
    mf_structure_module_saved saved;
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
    const cJSON *sm = cJSON_GetObjectItemCaseSensitive(root, "structure_module");
    const cJSON *nl = cJSON_GetObjectItemCaseSensitive(sm, "num_layers");
    const cJSON *ps = cJSON_GetObjectItemCaseSensitive(sm, "position_scale");
    mf_status st = MF_OK;
    if (!cJSON_IsNumber(nl) || !cJSON_IsNumber(ps))
        st = MF_ERROR(MF_ERR_FORMAT,
                      "%s: numbers structure_module.num_layers and .position_scale required",
                      v->cfg_path);
    else
        v->num_layers = (int64_t)nl->valuedouble, v->position_scale = ps->valuedouble;
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
