/* Triangle gated self-attention around the starting node (Alg. 13) and around the ending node
 * (Alg. 14), AF2's TriangleAttention with orientation per_row / per_column, built from
 * core/ops only:
 *   x = query_norm(z); bias[h, j, k] = x[j, k] . feat_2d_weights[:, h]          (lines 1, 4)
 *   starting node: update[i, j] = Attention(q = x[i, j], keys and values x[i, k],
 *                                           bias[h, j, k], key mask pair_mask[i, k])
 *   ending node:   AF2's per_column: the same on z and pair_mask with their residue axes
 *                  swapped, and the update swapped back.
 * Layer norm eps 1e-5 (haiku); masked keys get -1e9 (see msa_attention.h).
 *
 * Inference (saved == NULL) keeps nothing. Starting node: the bias is computed first (over
 * slices of rows i), then slices of ctx->policy.chunk_size rows i attend; each slice reads only
 * its own rows of z once the bias exists, so out may be z itself with accumulate = true
 * (policy.inplace). Ending node with chunking on the CPU: the bias from z, transposed in place,
 * then slices of columns j of z gathered transposed (rows of the swapped pair), attended, and
 * added back transposed; a slice reads only its own columns, so out may be z. Unchunked (or on
 * another device): z is read whole into its transposed copy first; that copy and the transposed
 * update are whole [N, N, c_z] transients. Every chunk size gives bitwise the same update
 * (tests/test_triangle_attention.c).
 *
 * Training (saved != NULL): saved tensors from ctx->arena, released by the caller after the
 * backward. The gated attention op keeps q, k, v, gate, o in the storage precision; the
 * normalised pair x (the op's input, read in f32 and allocated below its saved activations) and
 * the bias stay in the input's dtype. */
#ifndef MF_EVOFORMER_TRIANGLE_ATTENTION_H
#define MF_EVOFORMER_TRIANGLE_ATTENTION_H

#include <stdbool.h>

#include "core/context.h"
#include "core/ops.h"
#include "memopt/memplan.h"
#include "model/params.h"

typedef struct {
    int64_t c_z, num_heads, c_hidden; /* pair channels, H, channels per head */
} mf_triangle_attention_dims;

typedef struct {
#define MF_PARAM MF_PARAM_FIELD
#include "evoformer/triangle_attention.def"
#undef MF_PARAM
} mf_triangle_attention_params;

int mf_triangle_attention_param_specs(const mf_triangle_attention_dims *d, mf_param_spec *out);

/* x = query_norm(z) in the attention's orientation [N, N, c_z] (transposed for the ending node),
 * mean/rstd [N * N] of the norm in z's order, bias [H, N, N]; ending node only: mask_t =
 * pair_mask^T [N, N] and scratch [N, N, c_z] (the forward's transposed update, left allocated
 * below the op's saved activations, reused by the backward for the transposed upstream
 * gradient). */
typedef struct {
    mf_tensor x, mean, rstd, bias, mask_t, scratch;
    mf_attention_saved attn;
} mf_triangle_attention_saved;

/* out, z [N, N, c_z]; pair_mask [N, N]. */
mf_status mf_triangle_attention_starting_node_forward(mf_ctx *ctx, mf_tensor *out, bool accumulate,
                                                      mf_triangle_attention_saved *saved,
                                                      const mf_tensor *z,
                                                      const mf_tensor *pair_mask,
                                                      const mf_triangle_attention_params *p,
                                                      const mf_triangle_attention_dims *d);
mf_status mf_triangle_attention_ending_node_forward(mf_ctx *ctx, mf_tensor *out, bool accumulate,
                                                    mf_triangle_attention_saved *saved,
                                                    const mf_tensor *z, const mf_tensor *pair_mask,
                                                    const mf_triangle_attention_params *p,
                                                    const mf_triangle_attention_dims *d);
/* Accumulate into dz (may be NULL) and every dp field with data (dp may be NULL). The ending
 * node's backward writes into saved->scratch. */
mf_status mf_triangle_attention_starting_node_backward(
    mf_ctx *ctx, mf_tensor *dz, mf_triangle_attention_params *dp, const mf_tensor *dout,
    const mf_triangle_attention_saved *saved, const mf_tensor *z, const mf_tensor *pair_mask,
    const mf_triangle_attention_params *p, const mf_triangle_attention_dims *d);
mf_status mf_triangle_attention_ending_node_backward(
    mf_ctx *ctx, mf_tensor *dz, mf_triangle_attention_params *dp, const mf_tensor *dout,
    const mf_triangle_attention_saved *saved, const mf_tensor *z, const mf_tensor *pair_mask,
    const mf_triangle_attention_params *p, const mf_triangle_attention_dims *d);

/* Memory-model plans (memopt/memplan.h; triangle_attention_memplan.c): the arena allocations of
 * the starting-node (ending_node false) or ending-node forward / backward above for an f32 run
 * under s->policy. Saving leaves the saved activations allocated on the simulator; without, and
 * the backward, leave its offset unchanged. dz: dz given; dparams: dp given with every field. */
void mf_triangle_attention_plan_forward(mf_memsim *s, int64_t n_res,
                                        const mf_triangle_attention_dims *d, bool ending_node,
                                        bool saving, bool accumulate);
void mf_triangle_attention_plan_backward(mf_memsim *s, int64_t n_res,
                                         const mf_triangle_attention_dims *d, bool ending_node,
                                         bool dz, bool dparams);

#endif
