/* Backbone update (AF2 supplement Alg. 23; fold_iteration/affine_update): a linear map s -> 6 =
 * (b, c, d, t_x, t_y, t_z) in the official layout (affine_update weights [c_s, 6], bias [6]),
 * composed with the current frame as QuatAffine.pre_compose does:
 *   quat' = normalise(quat * (1, b, c, d)),  trans' = trans + R(quat) t,  rot' = R(quat').
 * Translations are in the structure module's internal units (nanometre-like, before AF2's x10
 * position scale); the update adds to them unchanged. The stop-gradient AF2 applies to the
 * rotation between layers belongs to the structure module loop, not here.
 *
 * The linear map runs through core/ops; the per-residue frame algebra (a few dozen flops per
 * residue) runs on the host (rigid.h), so every tensor here is a CPU tensor and ctx a CPU
 * context. */
#ifndef MF_STRUCTURE_MODULE_BACKBONE_UPDATE_H
#define MF_STRUCTURE_MODULE_BACKBONE_UPDATE_H

#include "core/context.h"
#include "memopt/memplan.h"

typedef struct {
    mf_tensor weights; /* affine_update//weights [c_s, 6] */
    mf_tensor bias;    /* affine_update//bias [6] */
} mf_backbone_update_params;

/* quat_out [N, 4], trans_out [N, 3], rot_out [N, 3, 3] (may be NULL); update [N, 6] receives the
 * linear output, which the backward needs (keep it: 24 bytes per residue); s [N, c_s];
 * quat [N, 4] (unit, w first), trans [N, 3]. */
mf_status mf_backbone_update_forward(mf_ctx *ctx, mf_tensor *quat_out, mf_tensor *trans_out,
                                     mf_tensor *rot_out, mf_tensor *update, const mf_tensor *s,
                                     const mf_tensor *quat, const mf_tensor *trans,
                                     const mf_backbone_update_params *p);
/* Accumulates into ds [N, c_s], dquat [N, 4], dtrans [N, 3] and dp's weights/bias (a NULL tensor
 * or a field with data == NULL is skipped). dquat_out, dtrans_out, drot_out may be NULL (zero). */
mf_status mf_backbone_update_backward(mf_ctx *ctx, mf_tensor *ds, mf_tensor *dquat,
                                      mf_tensor *dtrans, mf_backbone_update_params *dp,
                                      const mf_tensor *dquat_out, const mf_tensor *dtrans_out,
                                      const mf_tensor *drot_out, const mf_tensor *update,
                                      const mf_tensor *s, const mf_tensor *quat,
                                      const mf_backbone_update_params *p);

/* Memory-model plans (memopt/memplan.h; backbone_update_memplan.c): mf_backbone_update_forward
 * (the linear map's workspace; `update` is the caller's) and mf_backbone_update_backward (ds:
 * asked for; dparams: the weight and bias gradients). */
void mf_backbone_update_plan_forward(mf_memsim *s, int64_t n_res, int64_t c_s);
void mf_backbone_update_plan_backward(mf_memsim *s, int64_t n_res, int64_t c_s, bool ds,
                                      bool dparams);

#endif
