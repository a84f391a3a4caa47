/* Backbone update (Alg. 23), see backbone_update.h. */
#include "structure_module/backbone_update.h"

#include "core/ops.h"
#include "structure_module/rigid.h"

static mf_status check_frames(const mf_tensor *s, const mf_tensor *quat, const mf_tensor *trans,
                              const mf_backbone_update_params *p, int64_t *N)
{
    MF_REQUIRE(p, "backbone update: parameters missing");
    MF_TRY(mf_check_tensor(s, "backbone_update s", MF_F32, 2));
    *N = s->shape[0];
    int64_t cs = s->shape[1];
    MF_TRY(mf_check_tensor(&p->weights, "affine_update//weights", MF_F32, 2));
    MF_REQUIRE(p->weights.shape[0] == cs && p->weights.shape[1] == 6,
               "affine_update//weights is [%lld, %lld], expected [%lld, 6]",
               (long long)p->weights.shape[0], (long long)p->weights.shape[1], (long long)cs);
    MF_TRY(mf_check_tensor(&p->bias, "affine_update//bias", MF_F32, 1));
    MF_REQUIRE(p->bias.shape[0] == 6, "affine_update//bias has %lld elements, expected 6",
               (long long)p->bias.shape[0]);
    MF_TRY(mf_check_host_f32_dims(quat, "backbone_update quat", 2, *N, 4));
    if (trans) MF_TRY(mf_check_host_f32_dims(trans, "backbone_update trans", 2, *N, 3));
    return MF_OK;
}

mf_status mf_backbone_update_forward(mf_ctx *ctx, mf_tensor *quat_out, mf_tensor *trans_out,
                                     mf_tensor *rot_out, mf_tensor *update, const mf_tensor *s,
                                     const mf_tensor *quat, const mf_tensor *trans,
                                     const mf_backbone_update_params *p)
{
    int64_t N;
    MF_REQUIRE(ctx, "backbone update: ctx missing");
    MF_TRY(check_frames(s, quat, trans, p, &N));
    MF_TRY(mf_check_host_f32_dims(update, "backbone_update update", 2, N, 6));
    MF_TRY(mf_check_host_f32_dims(quat_out, "backbone_update quat_out", 2, N, 4));
    MF_TRY(mf_check_host_f32_dims(trans_out, "backbone_update trans_out", 2, N, 3));
    if (rot_out) MF_TRY(mf_check_host_f32_dims(rot_out, "backbone_update rot_out", 3, N, 3, 3));
    /* Alg. 23 line 1: (b, c, d, t) = Linear(s). */
    MF_TRY(mf_linear_forward(ctx, update, s, &p->weights, &p->bias, false));
    /* Lines 2-4 and Alg. 20 line 10 (T <- T o T_update), as QuatAffine.pre_compose. */
    mf_quat_affine_pre_compose_f32(quat_out->data, trans_out->data, rot_out ? rot_out->data : NULL,
                                   quat->data, trans->data, update->data, N);
    return MF_OK;
}

static mf_tensor *present(mf_tensor *t)
{
    return t && t->data ? t : NULL;
}

mf_status mf_backbone_update_backward(mf_ctx *ctx, mf_tensor *ds, mf_tensor *dquat,
                                      mf_tensor *dtrans, mf_backbone_update_params *dp,
                                      const mf_tensor *dquat_out, const mf_tensor *dtrans_out,
                                      const mf_tensor *drot_out, const mf_tensor *update,
                                      const mf_tensor *s, const mf_tensor *quat,
                                      const mf_backbone_update_params *p)
{
    int64_t N;
    MF_REQUIRE(ctx && ctx->arena, "backbone update: ctx and arena required");
    MF_TRY(check_frames(s, quat, NULL, p, &N));
    MF_TRY(mf_check_host_f32_dims(update, "backbone_update update", 2, N, 6));
    if (dquat) MF_TRY(mf_check_host_f32_dims(dquat, "backbone_update dquat", 2, N, 4));
    if (dtrans) MF_TRY(mf_check_host_f32_dims(dtrans, "backbone_update dtrans", 2, N, 3));
    if (dquat_out) MF_TRY(mf_check_host_f32_dims(dquat_out, "backbone_update dquat_out", 2, N, 4));
    if (dtrans_out)
        MF_TRY(mf_check_host_f32_dims(dtrans_out, "backbone_update dtrans_out", 2, N, 3));
    if (drot_out) MF_TRY(mf_check_host_f32_dims(drot_out, "backbone_update drot_out", 3, N, 3, 3));
    mf_tensor *dw = dp ? present(&dp->weights) : NULL, *db = dp ? present(&dp->bias) : NULL;
    bool need_du = ds || dw || db;
    mf_arena_mark_t mark = mf_arena_mark(ctx->arena);
    mf_tensor du = {0};
    if (need_du) {
        MF_REQUIRE(ctx->arena->device == MF_DEV_CPU,
                   "backbone update backward: the frame algebra needs a host arena");
        MF_TRY(mf_arena_zeros(ctx->arena, &du, MF_F32, 2, (const int64_t[]){N, 6},
                              "backbone_update.dupdate"));
    }
    mf_quat_affine_pre_compose_backward_f32(
        dquat ? dquat->data : NULL, dtrans ? dtrans->data : NULL, need_du ? du.data : NULL,
        dquat_out ? dquat_out->data : NULL, dtrans_out ? dtrans_out->data : NULL,
        drot_out ? drot_out->data : NULL, quat->data, update->data, N);
    mf_status st = MF_OK;
    if (need_du) st = mf_linear_backward(ctx, ds, dw, db, &du, s, &p->weights);
    mf_arena_release(ctx->arena, mark);
    return st;
}
