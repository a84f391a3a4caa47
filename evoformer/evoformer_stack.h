/* Stacks of blocks: the Evoformer stack (Alg. 6 repeated, 48 blocks in AF2), the extra-MSA stack
 * (Alg. 18, 4 blocks) and the template pair stack (Alg. 16, 2 blocks per template). Parameters
 * are stacked on a leading block axis as in the official files (.../evoformer_iteration/...,
 * .../extra_msa_stack/..., .../template_pair_stack/__layer_stack_no_state/...): a params struct
 * of the block's type whose every tensor is [num_blocks, ...]; block k uses mf_tensor_slice0
 * views of row k (mf_evo_params_block_view). Gradients likewise ([num_blocks, ...], accumulated).
 *
 * The stack updates its representation in place: m, z hold the input on entry and the output on
 * return, and the backward turns dm, dz from d(loss)/d(output) into d(loss)/d(input) in place.
 * Block k draws its dropout masks with the key's `block` = k.
 *
 * Memory policy (ctx->policy.recompute):
 *  - saved == NULL: forward only, in place, nothing kept.
 *  - off: block 0's input is copied into the arena; every block keeps its saved activations and
 *    its stream states (block_engine.h), the outputs of block k being the inputs of block k + 1;
 *    m, z (the last block's output) must stay unchanged until the backward.
 *  - block (K = 1) or every:K: the input of every K-th block is checkpointed in the storage
 *    precision (policy.storage) and the blocks run forward-only in place; the backward restores
 *    each checkpoint (last first), reruns its K blocks with saving on, backpropagates through
 *    them and releases them: ceil(N/K) checkpoints plus K blocks' activations at a time.
 * With f32 checkpoints every K gives bitwise the outputs and gradients of recompute off on the
 * CPU (the same code in the same order); bf16 checkpoints within the bf16 storage tolerance.
 * The caller takes an arena mark before the forward and releases it after the backward. */
#ifndef MF_EVOFORMER_EVOFORMER_STACK_H
#define MF_EVOFORMER_EVOFORMER_STACK_H

#include "evoformer/block_engine.h"
#include "evoformer/evoformer_block.h"
#include "evoformer/template_pair_block.h"

typedef struct {
    /* set by the caller before the forward: an array of at least num_blocks block states */
    mf_evo_block_saved *blocks;
    int64_t capacity;
    /* set by the forward */
    bool valid;
    int64_t num_blocks;
    int64_t per_checkpoint; /* blocks per checkpoint; 0 = recompute off */
    mf_dtype dtype;
    mf_dropout_key key;
    mf_tensor m_in, z_in; /* recompute off: copies of the stack's input */
} mf_evo_stack_saved;

/* m [N_seq, N_res, c_m], z [N_res, N_res, c_z] in/out; masks as for the block. */
mf_status mf_evoformer_stack_forward(mf_ctx *ctx, mf_tensor *m, mf_tensor *z,
                                     mf_evo_stack_saved *saved, const mf_tensor *msa_mask,
                                     const mf_tensor *pair_mask,
                                     const mf_evoformer_block_params *stacked,
                                     const mf_evoformer_block_dims *d, int64_t num_blocks,
                                     const mf_dropout_key *key);
/* dm, dz in/out (d/d output in, d/d input out); dstacked accumulated (NULL or fields without
 * data: not computed). saved is reused as scratch by a recomputing backward. */
mf_status mf_evoformer_stack_backward(mf_ctx *ctx, mf_tensor *dm, mf_tensor *dz,
                                      mf_evoformer_block_params *dstacked,
                                      mf_evo_stack_saved *saved, const mf_tensor *msa_mask,
                                      const mf_tensor *pair_mask,
                                      const mf_evoformer_block_params *stacked,
                                      const mf_evoformer_block_dims *d);

mf_status mf_extra_msa_stack_forward(mf_ctx *ctx, mf_tensor *m, mf_tensor *z,
                                     mf_evo_stack_saved *saved, const mf_tensor *msa_mask,
                                     const mf_tensor *pair_mask,
                                     const mf_extra_msa_block_params *stacked,
                                     const mf_evoformer_block_dims *d, int64_t num_blocks,
                                     const mf_dropout_key *key);
mf_status mf_extra_msa_stack_backward(mf_ctx *ctx, mf_tensor *dm, mf_tensor *dz,
                                      mf_extra_msa_block_params *dstacked,
                                      mf_evo_stack_saved *saved, const mf_tensor *msa_mask,
                                      const mf_tensor *pair_mask,
                                      const mf_extra_msa_block_params *stacked,
                                      const mf_evoformer_block_dims *d);

/* One template's pair activations t [N_res, N_res, c_t] (the key's `instance` is the template). */
mf_status mf_template_pair_stack_forward(mf_ctx *ctx, mf_tensor *t, mf_evo_stack_saved *saved,
                                         const mf_tensor *pair_mask,
                                         const mf_template_pair_block_params *stacked,
                                         const mf_template_pair_block_dims *d, int64_t num_blocks,
                                         const mf_dropout_key *key);
mf_status mf_template_pair_stack_backward(mf_ctx *ctx, mf_tensor *dt,
                                          mf_template_pair_block_params *dstacked,
                                          mf_evo_stack_saved *saved, const mf_tensor *pair_mask,
                                          const mf_template_pair_block_params *stacked,
                                          const mf_template_pair_block_dims *d);

/* ---- memory model (memopt/memplan.h) ---------------------------------------------------------
 * The stacks' forward/backward replayed on a simulated arena under s->policy (recompute off,
 * block or every:K; storage of the checkpoints; inplace and chunking inside the blocks), for f32
 * streams m [n_seq, n_res, c_m] (n_extra rows for the extra-MSA stack) and z [n_res, n_res, c_z]
 * (t [n_res, n_res, c_t] for one template). A saving forward leaves what the real one keeps
 * (copies of the input and every block's states and saved activations, or the checkpoints);
 * the backward, that of a saving forward under the same policy with every parameter gradient
 * when dparams, leaves the simulated arena as it found it (the caller's dm, dz are not arena
 * memory here). Dropout as memfold runs the stacks: a saving forward is a trained one, at d's
 * rates (zero them for a run without dropout); no dropout without saving. */
void mf_evoformer_stack_plan_forward(mf_memsim *s, int64_t n_seq, int64_t n_res,
                                     const mf_evoformer_block_dims *d, int64_t num_blocks,
                                     bool saving);
void mf_evoformer_stack_plan_backward(mf_memsim *s, int64_t n_seq, int64_t n_res,
                                      const mf_evoformer_block_dims *d, int64_t num_blocks,
                                      bool dparams);
void mf_extra_msa_stack_plan_forward(mf_memsim *s, int64_t n_extra, int64_t n_res,
                                     const mf_evoformer_block_dims *d, int64_t num_blocks,
                                     bool saving);
void mf_extra_msa_stack_plan_backward(mf_memsim *s, int64_t n_extra, int64_t n_res,
                                      const mf_evoformer_block_dims *d, int64_t num_blocks,
                                      bool dparams);
void mf_template_pair_stack_plan_forward(mf_memsim *s, int64_t n_res,
                                         const mf_template_pair_block_dims *d, int64_t num_blocks,
                                         bool saving);
void mf_template_pair_stack_plan_backward(mf_memsim *s, int64_t n_res,
                                          const mf_template_pair_block_dims *d, int64_t num_blocks,
                                          bool dparams);
/* The same for a stack of num_blocks copies of block layout b (mf_evoformer_block_layout,
 * mf_template_pair_block_layout) under an explicit dropout key (NULL: none; the backward takes
 * the forward's key). */
void mf_evo_stack_plan_forward(mf_memsim *s, const mf_evo_block *b, int64_t n_seq, int64_t n_res,
                               int64_t num_blocks, bool saving, const mf_dropout_key *key);
void mf_evo_stack_plan_backward(mf_memsim *s, const mf_evo_block *b, int64_t n_seq, int64_t n_res,
                                int64_t num_blocks, const mf_dropout_key *key, bool dparams);

#endif
