/* Frame aligned point error (AF2 supplement Alg. 28; AF2 all_atom.frame_aligned_point_error):
 *   d_ij = sqrt(|T_i^-1 x_j - T_i,true^-1 x_j,true|^2 + eps), clamped at clamp_distance when
 *   clamping (zero gradient beyond it),
 *   loss = sum_ij frames_mask_i positions_mask_j d_ij / length_scale
 *          / (eps + sum(frames_mask) * sum(positions_mask))   (AF2's normalisation).
 * Frames are rotation matrices + translations (r3.Rigids); positions in the same length unit as
 * the translations (Angstrom for AF2's losses, where clamp 10 and length scale 10 are in Angstrom).
 * Gradients flow to the predicted frames (rot as a free 3x3 matrix, trans) and positions; the
 * targets and masks are constants. The same function serves the backbone FAPE (N frames, N C-alpha
 * positions) and the side-chain FAPE (8N frames, 14N atoms, flattened). */
#ifndef MF_STRUCTURE_MODULE_FAPE_H
#define MF_STRUCTURE_MODULE_FAPE_H

#include <stdbool.h>
#include <stdint.h>

#include "core/context.h"
#include "memopt/memplan.h"

typedef struct {
    float clamp_distance; /* <= 0: no clamp (AF2's l1_clamp_distance None) */
    float length_scale;
    float eps; /* inside the square root and in the normalisation; AF2: 1e-4 */
} mf_fape_options;

/* AF2's defaults for the backbone and side-chain losses: clamp 10 A, length scale 10 A, 1e-4. */
mf_fape_options mf_fape_default_options(void);

/* Raw host reference, compiled for float and double from fape.inc. Shapes: rot [F, 3, 3],
 * trans [F, 3], pos [P, 3], frames_mask [F] and positions_mask [P] (NULL: all ones).
 * work [2 * F] doubles of scratch (per-frame partial sums, so the sum is the same for any thread
 * count). unclamped_fraction (may be NULL): the mask-weighted fraction of pairs with d at or
 * below the clamp (1 without a clamp; 0 when every pair is masked).
 * The backward ACCUMULATES dloss * d loss / d (pred_rot, pred_trans, pred_pos); NULL skips. */
#define MF_FAPE_DECLARE(real, SUF)                                                                 \
    void mf_fape_loss_##SUF(real *loss, real *unclamped_fraction, double *work,                    \
                            const real *pred_rot, const real *pred_trans, const real *target_rot,  \
                            const real *target_trans, const real *pred_pos,                        \
                            const real *target_pos, const real *frames_mask,                       \
                            const real *positions_mask, int64_t F, int64_t P, real clamp_distance, \
                            real length_scale, real eps);                                          \
    void mf_fape_loss_backward_##SUF(                                                              \
        real *dpred_rot, real *dpred_trans, real *dpred_pos, real dloss, const real *pred_rot,     \
        const real *pred_trans, const real *target_rot, const real *target_trans,                  \
        const real *pred_pos, const real *target_pos, const real *frames_mask,                     \
        const real *positions_mask, int64_t F, int64_t P, real clamp_distance, real length_scale,  \
        real eps);

MF_FAPE_DECLARE(float, f32)
MF_FAPE_DECLARE(double, f64)

/* Tensor entry points (CPU f32 tensors; the per-pair work is a few flops, memory-bound on the
 * inputs only, so no device kernel yet). pred_rot, target_rot [F, 3, 3]; pred_trans, target_trans
 * [F, 3]; pred_pos, target_pos [P, 3]; frames_mask [F], positions_mask [P] (either may be NULL).
 * loss: host scalar; unclamped_fraction may be NULL. Scratch comes from ctx->arena. */
mf_status mf_fape_forward(mf_ctx *ctx, float *loss, float *unclamped_fraction,
                          const mf_tensor *pred_rot, const mf_tensor *pred_trans,
                          const mf_tensor *target_rot, const mf_tensor *target_trans,
                          const mf_tensor *pred_pos, const mf_tensor *target_pos,
                          const mf_tensor *frames_mask, const mf_tensor *positions_mask,
                          const mf_fape_options *opt);
/* Accumulates dloss * d loss / d input into dpred_rot, dpred_trans, dpred_pos (NULL: skipped). */
mf_status mf_fape_backward(mf_ctx *ctx, mf_tensor *dpred_rot, mf_tensor *dpred_trans,
                           mf_tensor *dpred_pos, float dloss, const mf_tensor *pred_rot,
                           const mf_tensor *pred_trans, const mf_tensor *target_rot,
                           const mf_tensor *target_trans, const mf_tensor *pred_pos,
                           const mf_tensor *target_pos, const mf_tensor *frames_mask,
                           const mf_tensor *positions_mask, const mf_fape_options *opt);

/* Memory-model plan (memopt/memplan.h; fape_memplan.c) of mf_fape_forward with n_frames frames:
 * its double scratch, released before it returns. mf_fape_backward takes no arena space. */
void mf_fape_plan_forward(mf_memsim *s, int64_t n_frames);

#endif
