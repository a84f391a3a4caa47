/* Reference-vector verifiers for the backbone update, the structure-module transition and FAPE
 * (see verify_structure.h). */
#include "structure_module/verify_structure.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "core/ops.h"
#include "data/h5io.h"
#include "structure_module/backbone_update.h"
#include "structure_module/fape.h"
#include "structure_module/sm_transition.h"

/* A zeroed gradient buffer shaped like t, from the arena. */
static mf_status zeros_like(mf_ctx *ctx, mf_tensor *out, const mf_tensor *t, const char *label)
{
    return mf_arena_zeros(ctx->arena, out, MF_F32, t->ndim, t->shape, label);
}

mf_status mf_verify_backbone_update(mf_ctx *ctx, const mf_module_vectors *v,
                                    mf_verify_report *report)
{
    MF_TRY(mf_verify_require_cpu(ctx, "backbone_update"));
    mf_tensor s, quat, trans, gq, gt, gr;
    mf_backbone_update_params p;
    MF_TRY(mf_verify_vector_tensor(v, &v->inputs, "inputs", "s", &s));
    MF_TRY(mf_verify_vector_tensor(v, &v->inputs, "inputs", "quat", &quat));
    MF_TRY(mf_verify_vector_tensor(v, &v->inputs, "inputs", "trans", &trans));
    MF_TRY(
        mf_verify_vector_tensor(v, &v->weights, "weights", "affine_update||weights", &p.weights));
    MF_TRY(mf_verify_vector_tensor(v, &v->weights, "weights", "affine_update||bias", &p.bias));
    MF_TRY(mf_verify_vector_tensor(v, &v->grad_outputs, "grad_outputs", "quat", &gq));
    MF_TRY(mf_verify_vector_tensor(v, &v->grad_outputs, "grad_outputs", "trans", &gt));
    MF_TRY(mf_verify_vector_tensor(v, &v->grad_outputs, "grad_outputs", "rot", &gr));
    const int64_t N = s.shape[0];
    mf_arena *a = ctx->arena;
    mf_arena_mark_t mark = mf_arena_mark(a);
    mf_status st = MF_OK;
    mf_tensor q_out, t_out, r_out, update, ds, dq, dt;
    mf_backbone_update_params dp;
    MF_TRY_GOTO(mf_arena_tensor(a, &q_out, MF_F32, 2, (const int64_t[]){N, 4}, "verify.quat"));
    MF_TRY_GOTO(mf_arena_tensor(a, &t_out, MF_F32, 2, (const int64_t[]){N, 3}, "verify.trans"));
    MF_TRY_GOTO(mf_arena_tensor(a, &r_out, MF_F32, 3, (const int64_t[]){N, 3, 3}, "verify.rot"));
    MF_TRY_GOTO(mf_arena_tensor(a, &update, MF_F32, 2, (const int64_t[]){N, 6}, "verify.update"));
    MF_TRY_GOTO(zeros_like(ctx, &ds, &s, "verify.ds"));
    MF_TRY_GOTO(zeros_like(ctx, &dq, &quat, "verify.dquat"));
    MF_TRY_GOTO(zeros_like(ctx, &dt, &trans, "verify.dtrans"));
    MF_TRY_GOTO(zeros_like(ctx, &dp.weights, &p.weights, "verify.dweights"));
    MF_TRY_GOTO(zeros_like(ctx, &dp.bias, &p.bias, "verify.dbias"));
    MF_TRY_GOTO(
        mf_backbone_update_forward(ctx, &q_out, &t_out, &r_out, &update, &s, &quat, &trans, &p));
    MF_TRY_GOTO(mf_backbone_update_backward(ctx, &ds, &dq, &dt, &dp, &gq, &gt, &gr, &update, &s,
                                            &quat, &p));
    MF_TRY_GOTO(mf_verify_compare_tensor(report, v, "outputs", "quat", &q_out));
    MF_TRY_GOTO(mf_verify_compare_tensor(report, v, "outputs", "trans", &t_out));
    MF_TRY_GOTO(mf_verify_compare_tensor(report, v, "outputs", "rot", &r_out));
    MF_TRY_GOTO(mf_verify_compare_tensor(report, v, "grads_inputs", "s", &ds));
    MF_TRY_GOTO(mf_verify_compare_tensor(report, v, "grads_inputs", "quat", &dq));
    MF_TRY_GOTO(mf_verify_compare_tensor(report, v, "grads_inputs", "trans", &dt));
    MF_TRY_GOTO(mf_verify_compare_tensor(report, v, "grads_weights", "affine_update||weights",
                                         &dp.weights));
    MF_TRY_GOTO(
        mf_verify_compare_tensor(report, v, "grads_weights", "affine_update||bias", &dp.bias));
cleanup:
    mf_arena_release(a, mark);
    return st;
}

mf_status mf_verify_structure_module_transition(mf_ctx *ctx, const mf_module_vectors *v,
                                                mf_verify_report *report)
{
    MF_TRY(mf_verify_require_cpu(ctx, "structure_module_transition"));
    /* Official names relative to fold_iteration/, in the field order of mf_sm_transition_params. */
    static const char *const names[8] = {
        "transition||weights",          "transition||bias",
        "transition_1||weights",        "transition_1||bias",
        "transition_2||weights",        "transition_2||bias",
        "transition_layer_norm||scale", "transition_layer_norm||offset"};
    mf_sm_transition_params p, dp;
    mf_tensor *pf[8] = {&p.transition_weights, &p.transition_bias,      &p.transition_1_weights,
                        &p.transition_1_bias,  &p.transition_2_weights, &p.transition_2_bias,
                        &p.layer_norm_scale,   &p.layer_norm_offset};
    mf_tensor *df[8] = {&dp.transition_weights, &dp.transition_bias,      &dp.transition_1_weights,
                        &dp.transition_1_bias,  &dp.transition_2_weights, &dp.transition_2_bias,
                        &dp.layer_norm_scale,   &dp.layer_norm_offset};
    mf_tensor s, gs;
    MF_TRY(mf_verify_vector_tensor(v, &v->inputs, "inputs", "s", &s));
    MF_TRY(mf_verify_vector_tensor(v, &v->grad_outputs, "grad_outputs", "s_out", &gs));
    for (int k = 0; k < 8; k++)
        MF_TRY(mf_verify_vector_tensor(v, &v->weights, "weights", names[k], pf[k]));
    mf_arena *a = ctx->arena;
    mf_arena_mark_t mark = mf_arena_mark(a);
    mf_status st = MF_OK;
    mf_tensor s_out, ds;
    mf_sm_transition_saved saved;
    MF_TRY_GOTO(zeros_like(ctx, &s_out, &s, "verify.s_out"));
    MF_TRY_GOTO(zeros_like(ctx, &ds, &s, "verify.ds"));
    for (int k = 0; k < 8; k++) MF_TRY_GOTO(zeros_like(ctx, df[k], pf[k], "verify.dweight"));
    MF_TRY_GOTO(mf_sm_transition_forward(ctx, &s_out, &saved, &s, &p));
    MF_TRY_GOTO(mf_sm_transition_backward(ctx, &ds, &dp, &gs, &saved, &s, &p));
    MF_TRY_GOTO(mf_verify_compare_tensor(report, v, "outputs", "s_out", &s_out));
    MF_TRY_GOTO(mf_verify_compare_tensor(report, v, "grads_inputs", "s", &ds));
    for (int k = 0; k < 8; k++)
        MF_TRY_GOTO(mf_verify_compare_tensor(report, v, "grads_weights", names[k], df[k]));
cleanup:
    mf_arena_release(a, mark);
    return st;
}

/* clamp_distance (a number, or null for no clamp), length_scale and eps from the file's `dims`
 * attribute (JSON). */
static mf_status fape_options_from_file(const mf_module_vectors *v, mf_fape_options *opt)
{
    hid_t f;
    char *json = NULL;
    MF_TRY(mf_h5_open_read(v->path, &f));
    mf_status st = mf_h5_read_attr_string(f, "/", "dims", &json);
    H5Fclose(f);
    MF_TRY(st);
    cJSON *root = cJSON_Parse(json);
    free(json);
    if (!root) return MF_ERROR(MF_ERR_FORMAT, "%s: attribute dims is not JSON", v->path);
    const cJSON *clamp = cJSON_GetObjectItemCaseSensitive(root, "clamp_distance");
    const cJSON *scale = cJSON_GetObjectItemCaseSensitive(root, "length_scale");
    const cJSON *eps = cJSON_GetObjectItemCaseSensitive(root, "eps");
    bool ok = clamp && (cJSON_IsNull(clamp) || cJSON_IsNumber(clamp)) && cJSON_IsNumber(scale) &&
              cJSON_IsNumber(eps);
    if (ok) {
        opt->clamp_distance = cJSON_IsNull(clamp) ? 0.0f : (float)clamp->valuedouble;
        opt->length_scale = (float)scale->valuedouble;
        opt->eps = (float)eps->valuedouble;
    }
    cJSON_Delete(root);
    if (!ok)
        return MF_ERROR(MF_ERR_FORMAT,
                        "%s: attribute dims needs clamp_distance (number or null), length_scale "
                        "and eps (numbers)",
                        v->path);
    return MF_OK;
}

mf_status mf_verify_fape(mf_ctx *ctx, const mf_module_vectors *v, mf_verify_report *report)
{
    MF_TRY(mf_verify_require_cpu(ctx, "fape"));
    mf_fape_options opt;
    MF_TRY(fape_options_from_file(v, &opt));
    static const char *const in_names[8] = {"pred_rot",     "pred_trans",    "target_rot",
                                            "target_trans", "pred_pos",      "target_pos",
                                            "frames_mask",  "positions_mask"};
    mf_tensor in[8];
    for (int k = 0; k < 8; k++)
        MF_TRY(mf_verify_vector_tensor(v, &v->inputs, "inputs", in_names[k], &in[k]));
    const mf_h5_array *gl;
    MF_TRY(mf_array_set_get(v, &v->grad_outputs, "grad_outputs", "loss", -1, NULL, &gl));
    if (gl->dtype != MF_F32 || mf_h5_array_numel(gl) != 1)
        return MF_ERROR(MF_ERR_FORMAT, "%s: grad_outputs/loss must be one f32 value", v->path);
    const float dloss = *(const float *)gl->data;
    mf_arena *a = ctx->arena;
    mf_arena_mark_t mark = mf_arena_mark(a);
    mf_status st = MF_OK;
    mf_tensor dr, dt, dx;
    float loss = 0;
    MF_TRY_GOTO(zeros_like(ctx, &dr, &in[0], "verify.dpred_rot"));
    MF_TRY_GOTO(zeros_like(ctx, &dt, &in[1], "verify.dpred_trans"));
    MF_TRY_GOTO(zeros_like(ctx, &dx, &in[4], "verify.dpred_pos"));
    MF_TRY_GOTO(mf_fape_forward(ctx, &loss, NULL, &in[0], &in[1], &in[2], &in[3], &in[4], &in[5],
                                &in[6], &in[7], &opt));
    MF_TRY_GOTO(mf_fape_backward(ctx, &dr, &dt, &dx, dloss, &in[0], &in[1], &in[2], &in[3], &in[4],
                                 &in[5], &in[6], &in[7], &opt));
    MF_TRY_GOTO(mf_verify_compare(report, v, "outputs", "loss", &loss, 1));
    MF_TRY_GOTO(mf_verify_compare_tensor(report, v, "grads_inputs", "pred_rot", &dr));
    MF_TRY_GOTO(mf_verify_compare_tensor(report, v, "grads_inputs", "pred_trans", &dt));
    MF_TRY_GOTO(mf_verify_compare_tensor(report, v, "grads_inputs", "pred_pos", &dx));
cleanup:
    mf_arena_release(a, mark);
    return st;
}
