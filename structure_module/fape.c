/* Frame aligned point error (Alg. 28): the reference of fape.inc compiled for float and double,
 * and the tensor entry points (see fape.h). */
#include "structure_module/fape.h"

#include <math.h>
#include <stddef.h>

#include "memopt/arena.h"
#include "structure_module/rigid.h"

#define real        float
#define MF_FP(name) mf_##name##_f32
#define r_sqrt      sqrtf
#include "structure_module/fape.inc"
#undef real
#undef MF_FP
#undef r_sqrt

#define real        double
#define MF_FP(name) mf_##name##_f64
#define r_sqrt      sqrt
#include "structure_module/fape.inc"
#undef real
#undef MF_FP
#undef r_sqrt

mf_fape_options mf_fape_default_options(void)
{
    return (mf_fape_options){.clamp_distance = 10.0f, .length_scale = 10.0f, .eps = 1e-4f};
}

static const float *data_or_null(const mf_tensor *t)
{
    return t ? (const float *)t->data : NULL;
}

static mf_status check_inputs(const mf_tensor *pred_rot, const mf_tensor *pred_trans,
                              const mf_tensor *target_rot, const mf_tensor *target_trans,
                              const mf_tensor *pred_pos, const mf_tensor *target_pos,
                              const mf_tensor *frames_mask, const mf_tensor *positions_mask,
                              const mf_fape_options *opt, int64_t *F, int64_t *P)
{
    MF_REQUIRE(opt, "FAPE options missing");
    MF_REQUIRE(opt->length_scale > 0 && opt->eps >= 0,
               "FAPE options: length_scale %g must be > 0 and eps %g >= 0",
               (double)opt->length_scale, (double)opt->eps);
    MF_REQUIRE(pred_rot && pred_pos, "FAPE: pred_rot and pred_pos are required");
    *F = pred_rot->shape[0];
    *P = pred_pos->shape[0];
    MF_TRY(mf_check_host_f32_dims(pred_rot, "fape pred_rot", 3, *F, 3, 3));
    MF_TRY(mf_check_host_f32_dims(pred_trans, "fape pred_trans", 2, *F, 3));
    MF_TRY(mf_check_host_f32_dims(target_rot, "fape target_rot", 3, *F, 3, 3));
    MF_TRY(mf_check_host_f32_dims(target_trans, "fape target_trans", 2, *F, 3));
    MF_TRY(mf_check_host_f32_dims(pred_pos, "fape pred_pos", 2, *P, 3));
    MF_TRY(mf_check_host_f32_dims(target_pos, "fape target_pos", 2, *P, 3));
    if (frames_mask) MF_TRY(mf_check_host_f32_dims(frames_mask, "fape frames_mask", 1, *F));
    if (positions_mask)
        MF_TRY(mf_check_host_f32_dims(positions_mask, "fape positions_mask", 1, *P));
    return MF_OK;
}

mf_status mf_fape_forward(mf_ctx *ctx, float *loss, float *unclamped_fraction,
                          const mf_tensor *pred_rot, const mf_tensor *pred_trans,
                          const mf_tensor *target_rot, const mf_tensor *target_trans,
                          const mf_tensor *pred_pos, const mf_tensor *target_pos,
                          const mf_tensor *frames_mask, const mf_tensor *positions_mask,
                          const mf_fape_options *opt)
{
    MF_REQUIRE(ctx && ctx->arena && loss, "mf_fape_forward: ctx, arena and loss are required");
    int64_t F, P;
    MF_TRY(check_inputs(pred_rot, pred_trans, target_rot, target_trans, pred_pos, target_pos,
                        frames_mask, positions_mask, opt, &F, &P));
    mf_arena *a = ctx->arena;
    MF_REQUIRE(a->device == MF_DEV_CPU, "mf_fape_forward needs a host arena for its scratch");
    mf_arena_mark_t mark = mf_arena_mark(a);
    double *work = NULL;
    MF_TRY(mf_arena_alloc(a, sizeof(double) * (size_t)(2 * (F > 0 ? F : 1)), "fape.work",
                          (void **)&work));
    mf_fape_loss_f32(loss, unclamped_fraction, work, pred_rot->data, pred_trans->data,
                     target_rot->data, target_trans->data, pred_pos->data, target_pos->data,
                     data_or_null(frames_mask), data_or_null(positions_mask), F, P,
                     opt->clamp_distance, opt->length_scale, opt->eps);
    mf_arena_release(a, mark);
    if (!isfinite(*loss)) return MF_ERROR(MF_ERR_NUMERIC, "FAPE loss is %g", (double)*loss);
    return MF_OK;
}

mf_status mf_fape_backward(mf_ctx *ctx, mf_tensor *dpred_rot, mf_tensor *dpred_trans,
                           mf_tensor *dpred_pos, float dloss, const mf_tensor *pred_rot,
                           const mf_tensor *pred_trans, const mf_tensor *target_rot,
                           const mf_tensor *target_trans, const mf_tensor *pred_pos,
                           const mf_tensor *target_pos, const mf_tensor *frames_mask,
                           const mf_tensor *positions_mask, const mf_fape_options *opt)
{
    MF_REQUIRE(ctx, "mf_fape_backward: ctx is required");
    int64_t F, P;
    MF_TRY(check_inputs(pred_rot, pred_trans, target_rot, target_trans, pred_pos, target_pos,
                        frames_mask, positions_mask, opt, &F, &P));
    if (dpred_rot) MF_TRY(mf_check_host_f32_dims(dpred_rot, "fape dpred_rot", 3, F, 3, 3));
    if (dpred_trans) MF_TRY(mf_check_host_f32_dims(dpred_trans, "fape dpred_trans", 2, F, 3));
    if (dpred_pos) MF_TRY(mf_check_host_f32_dims(dpred_pos, "fape dpred_pos", 2, P, 3));
    mf_fape_loss_backward_f32(
        dpred_rot ? dpred_rot->data : NULL, dpred_trans ? dpred_trans->data : NULL,
        dpred_pos ? dpred_pos->data : NULL, dloss, pred_rot->data, pred_trans->data,
        target_rot->data, target_trans->data, pred_pos->data, target_pos->data,
        data_or_null(frames_mask), data_or_null(positions_mask), F, P, opt->clamp_distance,
        opt->length_scale, opt->eps);
    return MF_OK;
}
