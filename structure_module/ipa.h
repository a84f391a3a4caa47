/* Invariant point attention (AF2 supplement Alg. 22; fold_iteration/invariant_point_attention),
 * as AlphaFold 2's folding.InvariantPointAttention computes it:
 *   q, k, v        = q_scalar(s), kv_scalar(s) split per head into [k | v]
 *   q_p, k_p, v_p  = T_i o q_point_local(s), T_j o kv_point_local(s) split per head into [k | v]
 *                    (the linear output is [x | y | z] blocks of H * P points each)
 *   logit_hij      = sqrt(1/(3 c)) q_hi.k_hj
 *                    - 1/2 softplus(trainable_point_weights_h) sqrt(1/(3 * 9/2 P_qk))
 *                      * sum_p |q_p - k_p|^2
 *                    + sqrt(1/3) attention_2d(z_ij)_h - 1e5 (1 - mask_i mask_j)
 *   a_hij          = softmax_j(logit_hij)
 *   features_i     = [sum_j a v | x | y | z of T_i^-1 o sum_j a v_p | sqrt(1e-8 + |.|^2) |
 *                     sum_j a z_ij]   (per head, head-major inside each block)
 *   update_i       = output_projection(features_i)
 * Frames (rot [N, 3, 3] row-major acting on column vectors, trans [N, 3]) are in the structure
 * module's internal units (before AF2's x10 position scale). The update is returned without the
 * residual. Gradients flow to s, z, rot, trans and every weight; the stop-gradient on rotations
 * between structure-module layers belongs to the caller's loop.
 *
 * The projections, the pair bias, the softmax, the pair-weighted sum and the output projection run
 * through core/ops; the per-point frame algebra and the logits/weighted point sums (a few dozen
 * flops per residue pair) run on the host (ipa.inc, compiled for float and double), so every
 * tensor here is a CPU f32 tensor and ctx a CPU context, as for the backbone update. */
#ifndef MF_STRUCTURE_MODULE_IPA_H
#define MF_STRUCTURE_MODULE_IPA_H

#include <stdbool.h>
#include <stdint.h>

#include "core/context.h"
#include "memopt/memplan.h"
#include "model/params.h"

/* AF2 IPA: additive logit bias of a masked pair (larger than in the Evoformer's 1e9 so f32 logits
 * keep a few digits) and the epsilon inside the norm of the output points. */
#define MF_IPA_MASK_BIAS 1e5
#define MF_IPA_DIST_EPS  1e-8

typedef struct {
    int64_t c_s, c_z;
    int64_t num_head;
    int64_t num_scalar_qk, num_scalar_v; /* scalar channels per head (AF2 16, 16) */
    int64_t num_point_qk, num_point_v;   /* points per head (AF2 4, 8) */
} mf_ipa_dims;

/* Width of the output projection's input: H (c_v + 4 P_v + c_z). */
static inline int64_t mf_ipa_feature_dim(const mf_ipa_dims *d)
{
    return d->num_head * (d->num_scalar_v + 4 * d->num_point_v + d->c_z);
}

typedef struct {
#define MF_PARAM MF_PARAM_FIELD
#include "structure_module/ipa.def"
#undef MF_PARAM
} mf_ipa_params;

#define MF_IPA_NUM_PARAMS ((int)(sizeof(mf_ipa_params) / sizeof(mf_tensor)))

int mf_ipa_param_specs(const mf_ipa_dims *d, mf_param_spec *out);

/* Kept for backward, allocated from ctx->arena in the storage precision (the caller releases them
 * after backward): the four projections q_scalar [N, H c], kv_scalar [N, H (c + c_v)],
 * q_point_local [N, 3 H P_qk], kv_point_local [N, 3 H (P_qk + P_v)], the attention weights
 * attention [N, H, N] (query-major) and features [N, H (c_v + 4 P_v + c_z)]. Global points are
 * recomputed from the local ones in backward. */
typedef struct {
    mf_tensor q_scalar, kv_scalar, q_point_local, kv_point_local;
    mf_tensor attention, features;
} mf_ipa_saved;

/* out [N, c_s] (+= when accumulate); s [N, c_s]; z [N, N, c_z]; rot [N, 3, 3]; trans [N, 3];
 * seq_mask [N] (0/1; NULL = all ones). saved NULL: inference, processed in query slices of
 * ctx->policy.chunk_size rows with O(slice * N) transients; every slice size gives the same bits.
 * saved != NULL: the saved tensors are allocated below the op's workspace and stay live. */
mf_status mf_ipa_forward(mf_ctx *ctx, mf_tensor *out, bool accumulate, mf_ipa_saved *saved,
                         const mf_tensor *s, const mf_tensor *z, const mf_tensor *rot,
                         const mf_tensor *trans, const mf_tensor *seq_mask, const mf_ipa_params *p,
                         const mf_ipa_dims *d);

/* Accumulates into ds [N, c_s], dz [N, N, c_z], drot [N, 3, 3], dtrans [N, 3] (each may be NULL)
 * and every gradient of dp (a NULL dp or a field with data == NULL is skipped); dout [N, c_s].
 * Processed in query slices of ctx->policy.chunk_size rows (transients O(slice * N) besides the
 * saved attention); slice sizes change only the summation order (not the bits of anything else)
 * of the trainable_point_weights and attention_2d weights/bias gradients, summed slice by slice. */
mf_status mf_ipa_backward(mf_ctx *ctx, mf_tensor *ds, mf_tensor *dz, mf_tensor *drot,
                          mf_tensor *dtrans, mf_ipa_params *dp, const mf_tensor *dout,
                          const mf_ipa_saved *saved, const mf_tensor *s, const mf_tensor *z,
                          const mf_tensor *rot, const mf_tensor *trans, const mf_ipa_params *p,
                          const mf_ipa_dims *d);

/* Memory-model plans (memopt/memplan.h; ipa_memplan.c): the arena allocations of an f32
 * mf_ipa_forward (saving: the saved tensors stay allocated, as `saved` would; accumulate as
 * given to the forward) and of mf_ipa_backward (ds, dz: those input gradients asked for; dparams:
 * every weight gradient, or none). drot and dtrans take no arena space. The storage and chunk
 * policies are s->policy's (the backward's storage must be the forward's). */
void mf_ipa_plan_forward(mf_memsim *s, int64_t n_res, const mf_ipa_dims *d, bool saving,
                         bool accumulate);
void mf_ipa_plan_backward(mf_memsim *s, int64_t n_res, const mf_ipa_dims *d, bool ds, bool dz,
                          bool dparams);

/* Plain reference of the whole module over raw host arrays, compiled for float and double (the
 * oracle of the finite-difference and f32 checks; allocates its scratch with malloc, returns
 * false when that fails). w[k] / dw[k] are the parameters / their gradients in ipa.def order
 * (dw[k] may be NULL); the backward recomputes the forward and ACCUMULATES into ds, dz, drot,
 * dtrans, dw[k] (each may be NULL). */
#define MF_IPA_REF_DECLARE(real, SUF)                                                              \
    bool mf_ipa_reference_forward_##SUF(real *out, const real *s, const real *z, const real *rot,  \
                                        const real *trans, const real *seq_mask,                   \
                                        const real *const *w, const mf_ipa_dims *d, int64_t N);    \
    bool mf_ipa_reference_backward_##SUF(                                                          \
        real *ds, real *dz, real *drot, real *dtrans, real *const *dw, const real *dout,           \
        const real *s, const real *z, const real *rot, const real *trans, const real *seq_mask,    \
        const real *const *w, const mf_ipa_dims *d, int64_t N);

MF_IPA_REF_DECLARE(float, f32)
MF_IPA_REF_DECLARE(double, f64)

#endif
