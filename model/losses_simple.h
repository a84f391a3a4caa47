/* The head losses of AlphaFold 2 (supplement 1.9.6-1.9.10; alphafold/model/modules.py), forward and
 * backward:
 *   distogram                1.9.8   _distogram_log_loss: softmax cross entropy against the bin
 *                                    of the true pseudo-beta distance, pair mask,
 *                                    sum / (1e-6 + sum mask)
 *   masked MSA               1.9.9   softmax cross entropy against true_msa, weighted by
 *                                    bert_mask, sum / (1e-8 + sum bert_mask)
 *   pLDDT                    1.9.6   softmax cross entropy against floor(bins * lDDT-Ca) (clipped
 *                                    to bins - 1) of the predicted C-alphas against the true ones
 *                                    (a stop-gradient target), CA mask, sum / (1e-8 + sum mask),
 *                                    resolution filter
 *   experimentally resolved  1.9.10  sigmoid cross entropy against all_atom_mask, weighted by
 *                                    atom37_atom_exists, sum / (1e-8 + sum exists), resolution
 *                                    filter
 *   TM (aligned error)       1.9.7   softmax cross entropy against the bin of the squared error of
 *                                    each residue's C-alpha position in each backbone frame,
 *                                    pair mask, sum / (1e-8 + sum mask), resolution filter
 *
 * These are host loops over CPU tensors (the logits are at most [N, N, 64]; the targets are
 * discrete and built where the ground truth lives): logits f32 or f64 (the finite-difference
 * oracle), the loss returned in double. Per-row log-softmax and the sums run in double in both
 * precisions; partial sums are per residue row in arena scratch, then added in order, so results
 * do not depend on the thread count. The only gradient is the one of the logits (the targets are
 * constants, AF2 stop-gradients the pLDDT and aligned-error targets); backward passes ACCUMULATE
 * dloss * dL/dlogits into dlogits, as core/ops.h.
 *
 * Discrete targets are computed in float32 exactly as AF2 does (its float32 formulas, inputs read
 * as float) in every run, so an f64 run has the same targets as the f32 run: distances are
 * compared with squared bin edges; bin edges are linspace(first, last, bins - 1) rounded to float.
 */
#ifndef MF_MODEL_LOSSES_SIMPLE_H
#define MF_MODEL_LOSSES_SIMPLE_H

#include <stdbool.h>
#include <stdint.h>

#include "core/context.h"
#include "memopt/memplan.h"

/* AF2's filter_by_resolution: the loss counts only when min <= resolution <= max (NMR and
 * distillation examples have resolution 0), compared in float32 as AF2 does. */
typedef struct {
    bool filter_by_resolution;
    double min_resolution; /* 0.1 A */
    double max_resolution; /* 3.0 A */
} mf_resolution_filter;

/* AF2 config: filter on, 0.1 .. 3.0 A (pLDDT, experimentally resolved, aligned error). */
mf_resolution_filter mf_resolution_filter_default(void);
/* 1 when the example counts, else 0. */
double mf_resolution_weight(const mf_resolution_filter *f, float resolution);

/* AF2 softmax_cross_entropy of one row x [n] against a one-hot label: logsumexp(x) - x[label]
 * (max-shifted); its gradient is softmax(x) - onehot(label). */
double mf_softmax_cross_entropy_row(const double *x, int64_t n, int64_t label);
/* AF2 sigmoid_cross_entropy: -y log sigmoid(x) - (1 - y) log sigmoid(-x) (stable form); its
 * derivative in x is sigmoid(x) - y. */
double mf_sigmoid_cross_entropy(double x, double y);

/* ---- distogram (AF2 _distogram_log_loss) ------------------------------------------------------
 */

/* logits [N, N, bins]; pseudo_beta [N, 3]; pseudo_beta_mask [N] (f32 or f64). The true bin of
 * pair (i, j) is the number of edges b with |x_i - x_j|^2 > edge_b^2, edges linspace(first_break,
 * last_break, bins - 1). */
mf_status mf_distogram_loss(mf_ctx *ctx, double *loss, const mf_tensor *logits,
                            const mf_tensor *pseudo_beta, const mf_tensor *pseudo_beta_mask,
                            double first_break, double last_break);
mf_status mf_distogram_loss_backward(mf_ctx *ctx, mf_tensor *dlogits, double dloss,
                                     const mf_tensor *logits, const mf_tensor *pseudo_beta,
                                     const mf_tensor *pseudo_beta_mask, double first_break,
                                     double last_break);
/* The true bins alone: bins i32 [N, N]. */
mf_status mf_distogram_true_bins(mf_tensor *bins, const mf_tensor *pseudo_beta, int64_t num_bins,
                                 double first_break, double last_break);

/* ---- masked MSA (AF2 MaskedMsaHead.loss) ------------------------------------------------------
 */

/* logits [S, N, classes]; true_msa i32 [S, N] in 0..classes-1; bert_mask [S, N]. */
mf_status mf_masked_msa_loss(mf_ctx *ctx, double *loss, const mf_tensor *logits,
                             const mf_tensor *true_msa, const mf_tensor *bert_mask);
mf_status mf_masked_msa_loss_backward(mf_ctx *ctx, mf_tensor *dlogits, double dloss,
                                      const mf_tensor *logits, const mf_tensor *true_msa,
                                      const mf_tensor *bert_mask);

/* ---- pLDDT (AF2 PredictedLDDTHead.loss) -------------------------------------------------------
 */

typedef struct {
    double cutoff; /* 15 A: pairs closer than this in the true structure are scored */
    mf_resolution_filter resolution;
} mf_plddt_loss_options;

mf_plddt_loss_options mf_plddt_loss_options_default(void);

/* AF2 lddt.lddt(per_residue=True) in its float32 arithmetic, over N points:
 * d = sqrt(1e-10 + |x_i - x_j|^2) (true and predicted), pairs j != i with d_true < cutoff and both
 * masks set are scored 0.25 * ([e < 0.5] + [e < 1] + [e < 2] + [e < 4]), e = |d_true - d_pred|;
 * norm = 1 / (1e-10 + count), lddt = norm * (1e-10 + sum of scores). Exactly this float32 formula
 * is what puts ties on the upper bin (testvectors README: 50 * lDDT = 5 exactly lands on
 * 5.0000005, bin 5). lddt [N]; pred_ca, true_ca [N, 3]; mask [N]. */
void mf_plddt_target_lddt_ca(float *lddt, const float *pred_ca, const float *true_ca,
                             const float *mask, int64_t N, float cutoff);
/* The pLDDT targets: bins i32 [N] = min(floor(num_bins * lddt_ca) (float32), num_bins - 1) of
 * the C-alpha (atom37 index 1) positions. pred_positions, true_positions [N, 37, 3];
 * all_atom_mask [N, 37] (f32 or f64). */
mf_status mf_plddt_target_bins(mf_tensor *bins, const mf_tensor *pred_positions,
                               const mf_tensor *true_positions, const mf_tensor *all_atom_mask,
                               int64_t num_bins, double cutoff);
/* logits [N, bins]; positions and mask as above; resolution of the example (A). */
mf_status mf_plddt_loss(mf_ctx *ctx, double *loss, const mf_tensor *logits,
                        const mf_tensor *pred_positions, const mf_tensor *true_positions,
                        const mf_tensor *all_atom_mask, float resolution,
                        const mf_plddt_loss_options *opt);
mf_status mf_plddt_loss_backward(mf_ctx *ctx, mf_tensor *dlogits, double dloss,
                                 const mf_tensor *logits, const mf_tensor *pred_positions,
                                 const mf_tensor *true_positions, const mf_tensor *all_atom_mask,
                                 float resolution, const mf_plddt_loss_options *opt);

/* ---- experimentally resolved (AF2 ExperimentallyResolvedHead.loss) ----------------------------
 */

/* logits [N, 37]; all_atom_mask [N, 37] (the labels); atom37_atom_exists [N, 37] (the weights). */
mf_status mf_experimentally_resolved_loss(mf_ctx *ctx, double *loss, const mf_tensor *logits,
                                          const mf_tensor *all_atom_mask,
                                          const mf_tensor *atom37_atom_exists, float resolution,
                                          const mf_resolution_filter *filter);
mf_status mf_experimentally_resolved_loss_backward(mf_ctx *ctx, mf_tensor *dlogits, double dloss,
                                                   const mf_tensor *logits,
                                                   const mf_tensor *all_atom_mask,
                                                   const mf_tensor *atom37_atom_exists,
                                                   float resolution,
                                                   const mf_resolution_filter *filter);

/* ---- TM / aligned error (AF2 PredictedAlignedErrorHead.loss) ----------------------------------
 */

/* logits [N, N, bins]; backbone frames as rotation + translation (y = R x + t, Angstrom):
 * pred_rot, true_rot [N, 3, 3], pred_trans, true_trans [N, 3]; backbone_mask [N]. The error of
 * pair (i, j) is |R_i^T (t_j - t_i) - R*_i^T (t*_j - t*_i)|^2 (residue j's position in frame i,
 * predicted against true); its bin counts the edges b with error > edge_b^2, edges
 * linspace(0, max_error_bin, bins - 1). */
mf_status mf_tm_loss(mf_ctx *ctx, double *loss, const mf_tensor *logits, const mf_tensor *pred_rot,
                     const mf_tensor *pred_trans, const mf_tensor *true_rot,
                     const mf_tensor *true_trans, const mf_tensor *backbone_mask,
                     double max_error_bin, float resolution, const mf_resolution_filter *filter);
mf_status mf_tm_loss_backward(mf_ctx *ctx, mf_tensor *dlogits, double dloss,
                              const mf_tensor *logits, const mf_tensor *pred_rot,
                              const mf_tensor *pred_trans, const mf_tensor *true_rot,
                              const mf_tensor *true_trans, const mf_tensor *backbone_mask,
                              double max_error_bin, float resolution,
                              const mf_resolution_filter *filter);
/* The true aligned-error bins alone: bins i32 [N, N]. */
mf_status mf_tm_true_bins(mf_tensor *bins, const mf_tensor *pred_rot, const mf_tensor *pred_trans,
                          const mf_tensor *true_rot, const mf_tensor *true_trans, int64_t num_bins,
                          double max_error_bin);

/* ---- memory-model plans (memopt/memplan.h; losses_simple_memplan.c) ---------------------------
 * The arena scratch of each loss, released before it returns (the experimentally resolved loss
 * and the other backward passes take none). The pLDDT backward takes its scratch only when its
 * scale dloss * resolution weight is non-zero. */
void mf_distogram_loss_plan_forward(mf_memsim *s, int64_t n_res);
void mf_masked_msa_loss_plan_forward(mf_memsim *s, int64_t n_seq);
void mf_plddt_loss_plan_forward(mf_memsim *s, int64_t n_res);
void mf_plddt_loss_plan_backward(mf_memsim *s, int64_t n_res, double dloss, float resolution,
                                 const mf_plddt_loss_options *opt);
void mf_tm_loss_plan_forward(mf_memsim *s, int64_t n_res);

#endif
