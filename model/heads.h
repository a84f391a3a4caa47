/* AlphaFold 2's output heads (supplement 1.9.6-1.9.10; alphafold/model/modules.py), forward and
 * backward from core/ops.h in the module convention (model/params.h, one parameter table
 * model/heads.def, names relative to each head's scope below):
 *   distogram head        1.9.8   logits = half + half^T, half = half_logits(z)   [N, N, bins]
 *   masked MSA head       1.9.9   logits = logits(m)                              [S, N, 23]
 *   predicted lDDT head   1.9.6   logits = logits(relu(act_1(relu(act_0(LN(s_sm))))))  [N, 50]
 *                         (Alg. 29 lines 1-3; s_sm is the structure module's final single act)
 *   experimentally resolved 1.9.10 logits = logits(s)  (the Evoformer single)     [N, 37]
 *   predicted aligned error 1.9.7 logits = logits(z)                              [N, N, bins]
 * and the confidence outputs AF2 computes from them (alphafold/common/confidence.py): pLDDT,
 * expected aligned error and pTM.
 *
 * Conventions of every head: outputs are written, or added when accumulate; saved == NULL is
 * inference and processes dim-0 slices of ctx->policy.chunk_size rows (every slice size gives the
 * same bits: each output row is computed by the same ops in the same order); backward ACCUMULATES
 * into every gradient given (NULL, or a dp field with data == NULL: not computed). The input's
 * dtype (f32, or f64 on the CPU: the finite-difference oracle) is the run's precision; parameters
 * must have it too. Layer norm eps 1e-5 (haiku's default).
 *
 * Memory: the distogram head's symmetrisation needs one transient the size of its logits
 * ([N, N, bins], never a hidden activation) in forward and backward: core/ops has no strided
 * column-block view, so half^T cannot be formed a row slice at a time. */
#ifndef MF_MODEL_HEADS_H
#define MF_MODEL_HEADS_H

#include <stdbool.h>
#include <stdint.h>

#include "core/context.h"
#include "memopt/memplan.h"
#include "model/config.h"
#include "model/params.h"

/* Scopes: a parameter's full AF2 name is "<scope>/<spec name>" (mf_param_store_bind). */
#define MF_HEADS_SCOPE                        "alphafold/alphafold_iteration"
#define MF_DISTOGRAM_HEAD_SCOPE               MF_HEADS_SCOPE "/distogram_head"
#define MF_MASKED_MSA_HEAD_SCOPE              MF_HEADS_SCOPE "/masked_msa_head"
#define MF_PREDICTED_LDDT_HEAD_SCOPE          MF_HEADS_SCOPE "/predicted_lddt_head"
#define MF_EXPERIMENTALLY_RESOLVED_HEAD_SCOPE MF_HEADS_SCOPE "/experimentally_resolved_head"
#define MF_PREDICTED_ALIGNED_ERROR_HEAD_SCOPE MF_HEADS_SCOPE "/predicted_aligned_error_head"

#define MF_HEADS_LN_EPS 1e-5f

/* Sizes of all heads (each head reads the ones it needs). */
typedef struct {
    int64_t c_m, c_z, c_s;
    int64_t distogram_num_bins;                 /* 64 */
    double distogram_first_break;               /* 2.3125 A */
    double distogram_last_break;                /* 21.6875 A */
    int64_t masked_msa_num_output;              /* 23 */
    int64_t plddt_num_bins;                     /* 50 */
    int64_t plddt_c_hidden;                     /* 128 in AF2 */
    int64_t experimentally_resolved_num_output; /* 37 (atom37) */
    int64_t pae_num_bins;                       /* 64 */
    double pae_max_error_bin;                   /* 31 A */
} mf_heads_dims;

/* The sizes from a model configuration. */
mf_heads_dims mf_heads_dims_from_config(const mf_config *cfg);

typedef struct {
#define MF_DISTOGRAM_HEAD_PARAM MF_PARAM_FIELD
#include "model/heads.def"
#undef MF_DISTOGRAM_HEAD_PARAM
} mf_distogram_head_params;

typedef struct {
#define MF_MASKED_MSA_HEAD_PARAM MF_PARAM_FIELD
#include "model/heads.def"
#undef MF_MASKED_MSA_HEAD_PARAM
} mf_masked_msa_head_params;

typedef struct {
#define MF_PREDICTED_LDDT_HEAD_PARAM MF_PARAM_FIELD
#include "model/heads.def"
#undef MF_PREDICTED_LDDT_HEAD_PARAM
} mf_predicted_lddt_head_params;

typedef struct {
#define MF_EXPERIMENTALLY_RESOLVED_HEAD_PARAM MF_PARAM_FIELD
#include "model/heads.def"
#undef MF_EXPERIMENTALLY_RESOLVED_HEAD_PARAM
} mf_experimentally_resolved_head_params;

typedef struct {
#define MF_PREDICTED_ALIGNED_ERROR_HEAD_PARAM MF_PARAM_FIELD
#include "model/heads.def"
#undef MF_PREDICTED_ALIGNED_ERROR_HEAD_PARAM
} mf_predicted_aligned_error_head_params;

#define MF_HEAD_NUM_PARAMS(type) ((int)(sizeof(type) / sizeof(mf_tensor)))

/* Specs in field order (out may be NULL); each returns its count. */
int mf_distogram_head_param_specs(const mf_heads_dims *d, mf_param_spec *out);
int mf_masked_msa_head_param_specs(const mf_heads_dims *d, mf_param_spec *out);
int mf_predicted_lddt_head_param_specs(const mf_heads_dims *d, mf_param_spec *out);
int mf_experimentally_resolved_head_param_specs(const mf_heads_dims *d, mf_param_spec *out);
int mf_predicted_aligned_error_head_param_specs(const mf_heads_dims *d, mf_param_spec *out);

/* The linear heads keep nothing: linear in the parameters, their backward reads the input. */
typedef struct {
    bool forward_done;
} mf_linear_head_saved;

/* ---- distogram head (1.9.8) -------------------------------------------------------------- */

/* logits [N, N, bins] (+)= half + half^T with half = pair @ half_logits + b; pair [N, N, c_z]. */
mf_status mf_distogram_head_forward(mf_ctx *ctx, mf_tensor *logits, bool accumulate,
                                    mf_linear_head_saved *saved, const mf_tensor *pair,
                                    const mf_distogram_head_params *p, const mf_heads_dims *d);
/* dhalf = dlogits + dlogits^T, then the linear's gradients: dpair [N, N, c_z], dp. */
mf_status mf_distogram_head_backward(mf_ctx *ctx, mf_tensor *dpair, mf_distogram_head_params *dp,
                                     const mf_tensor *dlogits, const mf_linear_head_saved *saved,
                                     const mf_tensor *pair, const mf_distogram_head_params *p,
                                     const mf_heads_dims *d);

/* ---- masked MSA head (1.9.9) ------------------------------------------------------------- */

/* logits [S, N, num_output]; msa [S, N, c_m] (the N_seq cluster rows, no template rows). */
mf_status mf_masked_msa_head_forward(mf_ctx *ctx, mf_tensor *logits, bool accumulate,
                                     mf_linear_head_saved *saved, const mf_tensor *msa,
                                     const mf_masked_msa_head_params *p, const mf_heads_dims *d);
mf_status mf_masked_msa_head_backward(mf_ctx *ctx, mf_tensor *dmsa, mf_masked_msa_head_params *dp,
                                      const mf_tensor *dlogits, const mf_linear_head_saved *saved,
                                      const mf_tensor *msa, const mf_masked_msa_head_params *p,
                                      const mf_heads_dims *d);

/* ---- predicted lDDT head (1.9.6, Alg. 29) ------------------------------------------------ */

/* Kept for backward (from ctx->arena, released by the caller after backward): the two ReLU
 * outputs [N, c_hidden] in the policy's storage precision (f64 runs keep f64). The layer norm is
 * recomputed from the input in backward. */
typedef struct {
    mf_tensor act_0, act_1;
} mf_predicted_lddt_head_saved;

/* logits [N, plddt_num_bins]; single [N, c_s] (the structure module's final activation). */
mf_status mf_predicted_lddt_head_forward(mf_ctx *ctx, mf_tensor *logits, bool accumulate,
                                         mf_predicted_lddt_head_saved *saved,
                                         const mf_tensor *single,
                                         const mf_predicted_lddt_head_params *p,
                                         const mf_heads_dims *d);
mf_status
mf_predicted_lddt_head_backward(mf_ctx *ctx, mf_tensor *dsingle, mf_predicted_lddt_head_params *dp,
                                const mf_tensor *dlogits, const mf_predicted_lddt_head_saved *saved,
                                const mf_tensor *single, const mf_predicted_lddt_head_params *p,
                                const mf_heads_dims *d);

/* ---- experimentally resolved head (1.9.10) ----------------------------------------------- */

/* logits [N, 37]; single [N, c_s] (the Evoformer's single representation). */
mf_status mf_experimentally_resolved_head_forward(mf_ctx *ctx, mf_tensor *logits, bool accumulate,
                                                  mf_linear_head_saved *saved,
                                                  const mf_tensor *single,
                                                  const mf_experimentally_resolved_head_params *p,
                                                  const mf_heads_dims *d);
mf_status mf_experimentally_resolved_head_backward(
    mf_ctx *ctx, mf_tensor *dsingle, mf_experimentally_resolved_head_params *dp,
    const mf_tensor *dlogits, const mf_linear_head_saved *saved, const mf_tensor *single,
    const mf_experimentally_resolved_head_params *p, const mf_heads_dims *d);

/* ---- predicted aligned error head (1.9.7) ------------------------------------------------ */

/* logits [N, N, pae_num_bins]; pair [N, N, c_z]. */
mf_status mf_predicted_aligned_error_head_forward(mf_ctx *ctx, mf_tensor *logits, bool accumulate,
                                                  mf_linear_head_saved *saved,
                                                  const mf_tensor *pair,
                                                  const mf_predicted_aligned_error_head_params *p,
                                                  const mf_heads_dims *d);
mf_status mf_predicted_aligned_error_head_backward(
    mf_ctx *ctx, mf_tensor *dpair, mf_predicted_aligned_error_head_params *dp,
    const mf_tensor *dlogits, const mf_linear_head_saved *saved, const mf_tensor *pair,
    const mf_predicted_aligned_error_head_params *p, const mf_heads_dims *d);

/* ---- confidence outputs (host, CPU tensors, f32 or f64; AF2 common/confidence.py) --------- */

/* AF2 compute_plddt: plddt[i] = 100 * sum_b softmax(logits[i])_b * (b + 0.5) / bins.
 * plddt [N]; logits [N, bins]. Sums in double. */
mf_status mf_compute_plddt(mf_tensor *plddt, const mf_tensor *logits);

/* AF2's error bins: breaks = linspace(0, max_error_bin, bins - 1); centres = breaks + step / 2
 * and one catch-all centre beyond the last break (step = breaks[1] - breaks[0]). centres [bins]. */
void mf_pae_bin_centers(double *centers, int64_t bins, double max_error_bin);

/* AF2 compute_predicted_aligned_error: pae[i, j] = sum_b softmax(logits[i, j])_b * centre_b;
 * *max_pae (may be NULL) = the last centre. pae [N, N]; logits [N, N, bins]. */
mf_status mf_compute_predicted_aligned_error(mf_tensor *pae, double *max_pae,
                                             const mf_tensor *logits, double max_error_bin);

/* AF2 predicted_tm_score (monomer, interface = False): d0 = 1.24 (max(n, 19) - 15)^(1/3) - 1.8
 * with n = int(sum residue_weights); tm(c) = 1 / (1 + c^2 / d0^2) per bin centre; per alignment
 * frame i: sum_j E[tm]_ij w_i w_j / (1e-8 + sum_j w_i w_j); the result is the value of the frame
 * with the largest per-alignment score times w_i. residue_weights [N] or NULL (all ones). */
mf_status mf_compute_predicted_tm_score(double *ptm, const mf_tensor *logits,
                                        const mf_tensor *residue_weights, double max_error_bin);

/* ---- memory-model plans (memopt/memplan.h; heads_memplan.c) ------------------------------ */

/* The arena allocations of each head's forward (saving: the pLDDT head's saved activations stay
 * allocated; the linear heads keep nothing) and backward (the input gradient dx and every
 * parameter gradient dparams, or none, asked for), under s->policy's chunk size and storage on
 * the CPU; on CUDA the products' operand copies only. n_seq: the MSA rows the masked MSA head
 * reads. The logits and gradients are the caller's. */
void mf_distogram_head_plan_forward(mf_memsim *s, int64_t n_res, const mf_heads_dims *d,
                                    bool accumulate);
void mf_distogram_head_plan_backward(mf_memsim *s, int64_t n_res, const mf_heads_dims *d,
                                     bool dpair, bool dparams);
void mf_masked_msa_head_plan_forward(mf_memsim *s, int64_t n_seq, int64_t n_res,
                                     const mf_heads_dims *d, bool accumulate);
void mf_masked_msa_head_plan_backward(mf_memsim *s, int64_t n_seq, int64_t n_res,
                                      const mf_heads_dims *d, bool dmsa, bool dparams);
void mf_predicted_lddt_head_plan_forward(mf_memsim *s, int64_t n_res, const mf_heads_dims *d,
                                         bool saving, bool accumulate);
/* (its backward takes the same space with or without dsingle) */
void mf_predicted_lddt_head_plan_backward(mf_memsim *s, int64_t n_res, const mf_heads_dims *d,
                                          bool dsingle, bool dparams);
void mf_experimentally_resolved_head_plan_forward(mf_memsim *s, int64_t n_res,
                                                  const mf_heads_dims *d, bool accumulate);
void mf_experimentally_resolved_head_plan_backward(mf_memsim *s, int64_t n_res,
                                                   const mf_heads_dims *d, bool dsingle,
                                                   bool dparams);
void mf_predicted_aligned_error_head_plan_forward(mf_memsim *s, int64_t n_res,
                                                  const mf_heads_dims *d, bool accumulate);
void mf_predicted_aligned_error_head_plan_backward(mf_memsim *s, int64_t n_res,
                                                   const mf_heads_dims *d, bool dpair,
                                                   bool dparams);

#endif
