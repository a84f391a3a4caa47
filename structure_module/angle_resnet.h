/* Angle resnet (AF2 supplement Alg. 20 lines 11-14; fold_iteration/rigid_sidechain, AF2's
 * folding.MultiRigidSidechain up to its torsion angles), as AlphaFold 2's code computes it:
 *   a     = input_projection(relu(s)) + input_projection_1(relu(s_initial))
 *   a    += resblock2_k(relu(resblock1_k(relu(a))))           for k = 0 .. num_residual_block-1
 *   u     = unnormalized_angles(relu(a))                      [N, 14] viewed as [N, 7, 2]
 *   alpha = u / sqrt(max(|u|^2, 1e-12))                       per (sin, cos) pair (l2_normalize)
 * The code applies a ReLU to both inputs before their projections (the supplement's line 11
 * omits it). s is the structure module's current single representation (after the layer's
 * transition), s_initial the single representation after single_layer_norm (before
 * initial_projection). Outputs are (sin, cos) of pre-omega, phi, psi, chi1..chi4; they are not
 * residual updates, so there is no `accumulate`.
 *
 * The linear layers and ReLUs run through core/ops (f32, or f64 for the gradient checks); the
 * per-pair normalisation runs on the host, so ctx must be a CPU context. Rows are processed in
 * slices of ctx->policy.chunk_size (0 = all at once) in both passes: every slice size gives the
 * same outputs and input gradients (bitwise on the CPU); the weight gradients are sums over
 * slices (within f32 rounding of the unsliced sums). */
#ifndef MF_STRUCTURE_MODULE_ANGLE_RESNET_H
#define MF_STRUCTURE_MODULE_ANGLE_RESNET_H

#include <stdint.h>

#include "core/context.h"
#include "memopt/memplan.h"
#include "model/params.h"
#include "structure_module/all_atom.h"

#define MF_ANGLE_RESNET_MAX_BLOCKS 8
/* AF2 l2_normalize: x / sqrt(max(|x|^2, eps)). */
#define MF_ANGLE_NORM_EPS 1e-12

typedef struct {
    int64_t c_s;                /* single representation channels (s and s_initial) */
    int64_t num_channel;        /* hidden width (AF2 128) */
    int64_t num_residual_block; /* 1 .. MF_ANGLE_RESNET_MAX_BLOCKS (AF2 2) */
} mf_angle_resnet_dims;

/* One residual block's rows of angle_resnet.def. */
#define MF_ANGLE_RESNET_BLOCK(k, sfx)                                                              \
    MF_PARAM(resblock1_weights_##k, "resblock1" sfx "//weights", MF_INIT_RELU, d->num_channel, 2,  \
             (d->num_channel, d->num_channel))                                                     \
    MF_PARAM(resblock1_bias_##k, "resblock1" sfx "//bias", MF_INIT_ZEROS, 1, 1, (d->num_channel))  \
    MF_PARAM(resblock2_weights_##k, "resblock2" sfx "//weights", MF_INIT_ZEROS, d->num_channel, 2, \
             (d->num_channel, d->num_channel))                                                     \
    MF_PARAM(resblock2_bias_##k, "resblock2" sfx "//bias", MF_INIT_ZEROS, 1, 1, (d->num_channel))

/* Every row of the table (MF_ANGLE_RESNET_MAX_BLOCKS blocks); a configuration with fewer blocks
 * uses the first mf_angle_resnet_param_specs() tensors, the rest stay unused. */
typedef struct {
#define MF_PARAM MF_PARAM_FIELD
#include "structure_module/angle_resnet.def"
#undef MF_PARAM
} mf_angle_resnet_params;

#define MF_ANGLE_RESNET_FIXED_PARAMS 6 /* input projections and the angle output */
#define MF_ANGLE_RESNET_MAX_PARAMS   ((int)(sizeof(mf_angle_resnet_params) / sizeof(mf_tensor)))

/* Specs of the first 6 + 4 * num_residual_block parameters, in struct order; returns the count
 * (0 when the dims are invalid). out may be NULL. */
int mf_angle_resnet_param_specs(const mf_angle_resnet_dims *d, mf_param_spec *out);

/* Kept for backward, allocated from ctx->arena (the caller releases them after backward):
 * acts [2 B + 1, N, num_channel] in the storage precision: the block inputs a_0 .. a_B and each
 * block's first hidden layer h_k, before their ReLUs, interleaved a_0, h_0, a_1, h_1, ..., a_B;
 * unnormalized [N, 7, 2] in the compute precision (the normalisation's backward divides by its
 * norm). */
typedef struct {
    mf_tensor acts, unnormalized;
} mf_angle_resnet_saved;

/* angles [N, 7, 2] and (unless NULL) unnormalized_angles [N, 7, 2] from s, s_initial [N, c_s];
 * saved NULL: inference (slice-sized transients only). */
mf_status mf_angle_resnet_forward(mf_ctx *ctx, mf_tensor *unnormalized_angles, mf_tensor *angles,
                                  mf_angle_resnet_saved *saved, const mf_tensor *s,
                                  const mf_tensor *s_initial, const mf_angle_resnet_params *p,
                                  const mf_angle_resnet_dims *d);

/* Accumulates into ds, ds_initial [N, c_s] (each may be NULL) and every gradient of dp (a NULL dp
 * or a field with data == NULL is skipped) from the upstream gradients of the unnormalized and
 * the normalised angles [N, 7, 2] (each may be NULL: zero). */
mf_status mf_angle_resnet_backward(mf_ctx *ctx, mf_tensor *ds, mf_tensor *ds_initial,
                                   mf_angle_resnet_params *dp,
                                   const mf_tensor *dunnormalized_angles, const mf_tensor *dangles,
                                   const mf_angle_resnet_saved *saved, const mf_tensor *s,
                                   const mf_tensor *s_initial, const mf_angle_resnet_params *p,
                                   const mf_angle_resnet_dims *d);

/* Memory-model plans (memopt/memplan.h; angle_resnet_memplan.c): the arena allocations of an f32
 * mf_angle_resnet_forward (saving: the saved tensors stay allocated) and of
 * mf_angle_resnet_backward (ds, ds_initial: those input gradients asked for; dparams: every
 * weight gradient, or none), under s->policy's chunk size and storage precision. */
void mf_angle_resnet_plan_forward(mf_memsim *s, int64_t n_res, const mf_angle_resnet_dims *d,
                                  bool saving);
void mf_angle_resnet_plan_backward(mf_memsim *s, int64_t n_res, const mf_angle_resnet_dims *d,
                                   bool ds, bool ds_initial, bool dparams);

#endif
