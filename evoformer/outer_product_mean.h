/* Outer product mean (AF2 supplement Alg. 10; AlphaFold 2's `OuterProductMean`):
 *   m' = LayerNorm(m)                                   (layer_norm_input, eps 1e-5)
 *   a = msa_mask * left_projection(m'), b = msa_mask * right_projection(m')   [S, N, c]
 *   update[i, j, :] = (sum_{c,e} (sum_s a[s,i,c] b[s,j,e]) output_w[c,e,:] + output_b)
 *                     / (1e-3 + sum_s msa_mask[s,i] msa_mask[s,j])
 * As in AlphaFold 2 the bias is inside the normalisation and the epsilon is 1e-3. The outer
 * products are accumulated in f32 (matrix products always accumulate in f32; with bf16 compute
 * only their inputs are rounded, and bf16 keeps f32's range), so the sum over sequences cannot
 * overflow the way OpenFold's fp16 training did.
 *
 * Output rows i are processed ctx->policy.chunk_size at a time (forward and backward), so the
 * [N, N, c, c] outer product is never held whole when chunked. Every chunk size gives the same
 * outputs (each output row's arithmetic is the same); the gradients, sums over the chunks of rows,
 * agree within f32 rounding. Built from core/ops only; scratch has m's dtype. */
#ifndef MF_EVOFORMER_OUTER_PRODUCT_MEAN_H
#define MF_EVOFORMER_OUTER_PRODUCT_MEAN_H

#include <stdbool.h>

#include "core/context.h"
#include "memopt/memplan.h"
#include "model/params.h"

#define MF_OUTER_PRODUCT_MEAN_LN_EPS 1e-5f
#define MF_OUTER_PRODUCT_MEAN_EPS    1e-3f /* AF2 modules.py OuterProductMean: epsilon = 1e-3 */

typedef struct {
    int64_t c_m;      /* MSA channels */
    int64_t c_hidden; /* num_outer_channel (32 in AlphaFold 2) */
    int64_t c_z;      /* pair channels */
} mf_outer_product_mean_dims;

typedef struct {
#define MF_PARAM MF_PARAM_FIELD
#include "evoformer/outer_product_mean.def"
#undef MF_PARAM
} mf_outer_product_mean_params;

int mf_outer_product_mean_param_specs(const mf_outer_product_mean_dims *d, mf_param_spec *out);

/* Kept for backward, from ctx->arena in the policy's storage precision (f64 runs keep f64): the
 * masked projections, left residue-major [N, S, c_hidden] (the layout the per-row products read)
 * and right [S, N, c_hidden]. The layer norm and the outer products are recomputed in backward. */
typedef struct {
    mf_tensor left_t, right;
} mf_outer_product_mean_saved;

/* out [N, N, c_z]: the pair update, written or added (accumulate); m [S, N, c_m];
 * msa_mask [S, N]. saved NULL: inference. */
mf_status mf_outer_product_mean_forward(mf_ctx *ctx, mf_tensor *out, bool accumulate,
                                        mf_outer_product_mean_saved *saved, const mf_tensor *m,
                                        const mf_tensor *msa_mask,
                                        const mf_outer_product_mean_params *p,
                                        const mf_outer_product_mean_dims *d);
/* Accumulates into dm [S, N, c_m] (NULL: not computed) and every dp field whose data is not NULL;
 * dout [N, N, c_z]. */
mf_status mf_outer_product_mean_backward(mf_ctx *ctx, mf_tensor *dm,
                                         mf_outer_product_mean_params *dp, const mf_tensor *dout,
                                         const mf_outer_product_mean_saved *saved,
                                         const mf_tensor *m, const mf_tensor *msa_mask,
                                         const mf_outer_product_mean_params *p,
                                         const mf_outer_product_mean_dims *d);

/* Memory model (memopt/memplan.h): the arena allocations of the forward/backward above on f32
 * activations under s->policy, for m [n_seq, n_res, c_m]. Forward with saving leaves the saved
 * projections allocated (MF_MEM_SAVED); the backward leaves the simulated arena as it found it.
 * dm, dparams: whether dm and the parameter gradients (all of them) are asked for. */
void mf_outer_product_mean_plan_forward(mf_memsim *s, int64_t n_seq, int64_t n_res,
                                        const mf_outer_product_mean_dims *d, bool saving,
                                        bool accumulate);
void mf_outer_product_mean_plan_backward(mf_memsim *s, int64_t n_seq, int64_t n_res,
                                         const mf_outer_product_mean_dims *d, bool dm,
                                         bool dparams);

#endif
