/* The engine behind the Evoformer block (Alg. 6), the extra-MSA block (Alg. 18) and the template
 * pair block (Alg. 16): a block is a list of residual updates ("steps"), each a module of
 * evoformer/ applied to the MSA stream m or the pair stream z, optionally followed by AF2's shared
 * dropout (evoformer/dropout.h):
 *     s <- s + dropout(module(m, z))        (AF2 modules.py dropout_wrapper)
 * evoformer_block.h, template_pair_block.h and evoformer_stack.h are the public faces; this header
 * is what they share.
 *
 * Forward, three ways (the memory policy decides, ctx->policy):
 *  - saved == NULL: forward only (inference, a finite-difference oracle, a recomputing stack's
 *    forward). Modules run with saved NULL and process ctx->policy.chunk_size rows at a time.
 *    m_out may be m_in itself (and z_out z_in). Each update is written to a transient buffer,
 *    masked, and added to the stream (s = s + u); with policy.inplace and no dropout on that
 *    update the module accumulates straight into the stream it reads (the modules allow
 *    `out == input` at inference), which saves the transient.
 *  - saved != NULL, policy.recompute == off: every module keeps its saved activations, and the
 *    stream states between updates (the modules' inputs) stay in arena tensors of the stream's
 *    dtype: 2 MSA-sized and 5 pair-sized for the Evoformer block. m_in, z_in, m_out, z_out are
 *    referenced (not copied): the caller keeps them unchanged until the backward; outputs must not
 *    alias inputs. Each update is computed into the next state's buffer, masked, and the previous
 *    state added: the same arithmetic as the transient path above.
 *  - saved != NULL, policy.recompute == block or every:K (one block is one checkpoint): only the
 *    inputs are kept, copied into the arena in the storage precision (policy.storage; offload: on
 *    the CPU the arena is host memory already, so offload changes nothing there; on CUDA it needs
 *    a host arena in the context, not there yet: MF_ERR_UNSUPPORTED). The forward then runs as
 *    with saved == NULL. The backward converts the checkpoint back, reruns the forward with
 *    recompute off and saving on (same dropout masks: counter-based), backpropagates and
 *    releases the recomputation.
 * The caller takes an arena mark before the forward and releases it after the backward.
 *
 * Backward: ACCUMULATES into dm_in, dz_in (either may be NULL) and into every parameter gradient
 * given; dm_out, dz_out are read only. The residual s' = s + D * u(s) backpropagates as
 * ds = ds' + u'^T (D * ds'): per stream two arena gradient buffers, one holding ds' while the
 * module accumulates into the other (a module never sees its dout aliased with its dx).
 *
 * Numbers: with f32 checkpoints, recompute block gives bitwise the outputs and gradients of
 * recompute off on the CPU (the same module code in the same order; the forward-only path equals
 * the saving path bitwise, as the modules state). bf16 checkpoints round the recomputation's
 * inputs (gradients within bf16 storage tolerance). policy.inplace takes the modules' own
 * accumulation, which adds the finished update once, as s + u does: bitwise the same in the tests
 * (tests/test_evoformer_policies.c). */
#ifndef MF_EVOFORMER_BLOCK_ENGINE_H
#define MF_EVOFORMER_BLOCK_ENGINE_H

#include <stdbool.h>
#include <stdint.h>

#include "core/context.h"
#include "evoformer/dropout.h"
#include "evoformer/msa_attention.h"
#include "evoformer/outer_product_mean.h"
#include "evoformer/transition.h"
#include "evoformer/triangle_attention.h"
#include "evoformer/triangle_multiplication.h"
#include "memopt/memplan.h"

#define MF_EVO_MAX_STEPS 9

typedef enum {
    MF_EVO_STEP_MSA_ROW_ATTENTION = 0,            /* Alg. 7: m += f(m, z) */
    MF_EVO_STEP_MSA_COLUMN_ATTENTION,             /* Alg. 8: m += f(m) */
    MF_EVO_STEP_MSA_COLUMN_GLOBAL_ATTENTION,      /* Alg. 19: m += f(m) */
    MF_EVO_STEP_MSA_TRANSITION,                   /* Alg. 9: m += f(m) */
    MF_EVO_STEP_OUTER_PRODUCT_MEAN,               /* Alg. 10: z += f(m) */
    MF_EVO_STEP_TRIANGLE_MULTIPLICATION,          /* Alg. 11/12 (the dims say which): z += f(z) */
    MF_EVO_STEP_TRIANGLE_ATTENTION_STARTING_NODE, /* Alg. 13: z += f(z) */
    MF_EVO_STEP_TRIANGLE_ATTENTION_ENDING_NODE,   /* Alg. 14: z += f(z) */
    MF_EVO_STEP_PAIR_TRANSITION,                  /* Alg. 15: z += f(z) */
} mf_evo_step_kind;

/* One residual update: the module, its parameters (and gradients: dparams NULL or a struct whose
 * fields with data are accumulated into), its dims, and its dropout. */
typedef struct {
    mf_evo_step_kind kind;
    const void *params; /* the module's params struct */
    void *dparams;      /* the module's params struct of gradients, or NULL */
    const void *dims;   /* the module's dims struct */
    double dropout_rate;
    mf_dropout_orientation orientation;
    uint32_t dropout_module; /* MF_DROPOUT_* of dropout.h */
} mf_evo_step;

/* A block bound to its parameters and masks. msa_mask [N_seq, N_res] (NULL without an MSA
 * stream); pair_mask [N_res, N_res]. */
typedef struct {
    const char *name; /* for messages */
    int nsteps;
    mf_evo_step steps[MF_EVO_MAX_STEPS];
    const mf_tensor *msa_mask, *pair_mask;
} mf_evo_block;

typedef union {
    mf_msa_row_attention_saved msa_row;
    mf_msa_column_attention_saved msa_column;
    mf_msa_column_global_attention_saved msa_column_global;
    mf_transition_saved transition;
    mf_outer_product_mean_saved outer_product_mean;
    mf_triangle_multiplication_saved triangle_multiplication;
    mf_triangle_attention_saved triangle_attention;
} mf_evo_module_saved;

/* What a block's forward keeps for its backward. */
typedef struct {
    bool valid;
    bool checkpointed;  /* recompute: only ckpt_m, ckpt_z below */
    mf_dtype dtype;     /* the streams' dtype (f32, or f64 for the double oracle) */
    mf_dropout_key key; /* the forward's dropout key */
    mf_tensor ckpt_m, ckpt_z;
    /* recompute off: each step's module inputs (stream states) and saved activations */
    mf_tensor in_m[MF_EVO_MAX_STEPS], in_z[MF_EVO_MAX_STEPS];
    mf_evo_module_saved module[MF_EVO_MAX_STEPS];
} mf_evo_block_saved;

/* m_out/m_in [N_seq, N_res, c_m] (NULL for a pair-only block), z_out/z_in [N_res, N_res, c_z];
 * see the top of this header for the three modes. */
mf_status mf_evo_block_forward(mf_ctx *ctx, const mf_evo_block *b, mf_tensor *m_out,
                               mf_tensor *z_out, mf_evo_block_saved *saved, const mf_tensor *m_in,
                               const mf_tensor *z_in, const mf_dropout_key *key);
mf_status mf_evo_block_backward(mf_ctx *ctx, const mf_evo_block *b, mf_tensor *dm_in,
                                mf_tensor *dz_in, const mf_tensor *dm_out, const mf_tensor *dz_out,
                                const mf_evo_block_saved *saved);

/* The official module scopes inside a block (AF2 names "<scope>/<name in the module's table>"). */
typedef enum {
    MF_EVO_SCOPE_MSA_ROW_ATTENTION_WITH_PAIR_BIAS = 0,
    MF_EVO_SCOPE_MSA_COLUMN_ATTENTION,
    MF_EVO_SCOPE_MSA_COLUMN_GLOBAL_ATTENTION,
    MF_EVO_SCOPE_MSA_TRANSITION,
    MF_EVO_SCOPE_OUTER_PRODUCT_MEAN,
    MF_EVO_SCOPE_TRIANGLE_MULTIPLICATION_OUTGOING,
    MF_EVO_SCOPE_TRIANGLE_MULTIPLICATION_INCOMING,
    MF_EVO_SCOPE_TRIANGLE_ATTENTION_STARTING_NODE,
    MF_EVO_SCOPE_TRIANGLE_ATTENTION_ENDING_NODE,
    MF_EVO_SCOPE_PAIR_TRANSITION,
} mf_evo_scope;

/* The module's specs with the scope prefixed ("msa_transition/transition1//weights"); dims is
 * the module's dims struct. Writes at out + 0 (out may be NULL); returns the count. */
int mf_evo_scoped_param_specs(mf_evo_scope scope, const void *dims, mf_param_spec *out);

/* Block `block` of stacked parameters: out[i] is stacked[i] [num_blocks, ...] without its
 * leading axis (mf_tensor_slice0 of one row, that axis dropped); n tensors. stacked[i] with
 * data == NULL gives an empty view (a gradient not asked for). */
mf_status mf_evo_params_block_view(const mf_tensor *stacked, int n, int64_t num_blocks,
                                   int64_t block, mf_tensor *out);

/* ---- memory model (memopt/memplan.h) ---------------------------------------------------------
 * mf_evo_block_forward/_backward replayed on a simulated arena for f32 streams m [n_seq, n_res,
 * c_m] (ignored for a pair-only block) and z [n_res, n_res, c_z], the channels read from the
 * steps' dims; b needs its steps, dims and dropout only (mf_evoformer_block_layout,
 * mf_template_pair_block_layout). key: the forward's dropout key (NULL: none), which only decides
 * whether each update's dropout is active. The forward follows the three modes above from
 * `saving` and s->policy (recompute, inplace, chunk, storage): with saving it leaves what the
 * real forward keeps allocated (stream states and the modules' saved activations, or the
 * checkpoints). The backward is that of a forward under the same s->policy, all parameter
 * gradients given when dparams (else dp NULL); it leaves the simulated arena as it found it.
 * The input and output gradients of the streams take no arena memory of their own (the
 * caller's tensors). On CUDA the checkpoints of an offloading policy are refused by the real
 * code; the plan counts them in the arena. */
void mf_evo_block_plan_forward(mf_memsim *s, const mf_evo_block *b, int64_t n_seq, int64_t n_res,
                               bool saving, const mf_dropout_key *key);
void mf_evo_block_plan_backward(mf_memsim *s, const mf_evo_block *b, int64_t n_seq, int64_t n_res,
                                const mf_dropout_key *key, bool dparams);
/* Elements of the block's streams m (0 for a pair-only block) and z, channels from its dims. */
void mf_evo_block_stream_numel(const mf_evo_block *b, int64_t n_seq, int64_t n_res, int64_t *nm,
                               int64_t *nz);

#endif
