/* Triangular multiplicative update using outgoing (AF2 supplement Alg. 11) or incoming (Alg. 12)
 * edges; AlphaFold 2's `TriangleMultiplication`:
 *   z' = LayerNorm(z)                                         (layer_norm_input, eps 1e-5)
 *   a = pair_mask * left_projection(z') * sigmoid(left_gate(z'))        [N, N, c]
 *   b = pair_mask * right_projection(z') * sigmoid(right_gate(z'))
 *   outgoing: x[i,j,c] = sum_k a[i,k,c] b[j,k,c]       (AF2 'ikc,jkc->ijc')
 *   incoming: x[i,j,c] = sum_k a[k,j,c] b[k,i,c]       (AF2 'kjc,kic->ijc'; a, b keep AF2's
 *             left/right names, which the supplement's Alg. 12 swaps)
 *   update = output_projection(LayerNorm(x)) * sigmoid(gating_linear(z'))  (center_layer_norm)
 * The products run as one batched matrix product over channels on channel-major [c, N, N]
 * copies of a and b (and x), which also lets the pair mask broadcast.
 *
 * Rows i of the pair (ctx->policy.chunk_size of them at a time) bound the transients of the
 * projection and output stages. Unchunked, and in training, the product runs on whole [c, N, N]
 * operands (three [c_hidden, N, N] buffers); at inference with chunking on the CPU it runs a
 * block of min(chunk, c_hidden) channels at a time (projections of those channels, their
 * product, scattered into x [N, N, c_hidden]), so one [N, N, c_hidden] buffer and a block's
 * operands are held. Every chunk size gives the same outputs and
 * input gradient (each row's arithmetic is the same); weight gradients, sums over chunks, agree
 * within f32 rounding. Built from core/ops only; scratch has z's dtype. */
#ifndef MF_EVOFORMER_TRIANGLE_MULTIPLICATION_H
#define MF_EVOFORMER_TRIANGLE_MULTIPLICATION_H

#include <stdbool.h>

#include "core/context.h"
#include "memopt/memplan.h"
#include "model/params.h"

#define MF_TRIANGLE_MULTIPLICATION_LN_EPS 1e-5f

typedef struct {
    int64_t c_z;      /* pair channels */
    int64_t c_hidden; /* num_intermediate_channel (128 in AlphaFold 2's Evoformer) */
    bool outgoing;    /* true: Alg. 11 (outgoing edges); false: Alg. 12 (incoming edges) */
} mf_triangle_multiplication_dims;

typedef struct {
#define MF_PARAM MF_PARAM_FIELD
#include "evoformer/triangle_multiplication.def"
#undef MF_PARAM
} mf_triangle_multiplication_params;

int mf_triangle_multiplication_param_specs(const mf_triangle_multiplication_dims *d,
                                           mf_param_spec *out);

/* Kept for backward, from ctx->arena in the policy's storage precision (f64 runs keep f64): the
 * masked, gated projections a_t, b_t channel-major [c_hidden, N, N] (the product's operands) and
 * the product x [N, N, c_hidden] before the center layer norm. Backward recomputes the layer norms,
 * the projections and gates (row chunk by row chunk) and the output projection: four extra [N^2,
 * c_z] x [c_z, c] products and one [N^2, c] x [c, c_z] against keeping seven pair-sized
 * activations. */
typedef struct {
    mf_tensor a_t, b_t, x;
} mf_triangle_multiplication_saved;

/* out [N, N, c_z]: the update, written or added (accumulate); z [N, N, c_z]; pair_mask [N, N].
 * saved NULL: inference. */
mf_status mf_triangle_multiplication_forward(mf_ctx *ctx, mf_tensor *out, bool accumulate,
                                             mf_triangle_multiplication_saved *saved,
                                             const mf_tensor *z, const mf_tensor *pair_mask,
                                             const mf_triangle_multiplication_params *p,
                                             const mf_triangle_multiplication_dims *d);
/* Accumulates into dz [N, N, c_z] (NULL: not computed) and every dp field whose data is not
 * NULL; dout [N, N, c_z]. */
mf_status mf_triangle_multiplication_backward(
    mf_ctx *ctx, mf_tensor *dz, mf_triangle_multiplication_params *dp, const mf_tensor *dout,
    const mf_triangle_multiplication_saved *saved, const mf_tensor *z, const mf_tensor *pair_mask,
    const mf_triangle_multiplication_params *p, const mf_triangle_multiplication_dims *d);

/* Memory model (memopt/memplan.h): the arena allocations of the forward/backward above on f32
 * activations under s->policy, for z [n_res, n_res, c_z]. Forward with saving leaves the saved
 * activations allocated (MF_MEM_SAVED); the backward leaves the simulated arena as it found it.
 * dz, dparams: whether dz and the parameter gradients (all of them) are asked for. */
void mf_triangle_multiplication_plan_forward(mf_memsim *s, int64_t n_res,
                                             const mf_triangle_multiplication_dims *d, bool saving,
                                             bool accumulate);
void mf_triangle_multiplication_plan_backward(mf_memsim *s, int64_t n_res,
                                              const mf_triangle_multiplication_dims *d, bool dz,
                                              bool dparams);

#endif
