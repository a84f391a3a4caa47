/* The Evoformer block (AF2 supplement Alg. 6) and the extra-MSA block (Alg. 18, the same
 * iteration with the column-wise global attention of Alg. 19), forward and backward, AF2's
 * EvoformerIteration (monomer: the outer product mean after the MSA updates):
 *   m += dropout_rowwise_0.15(msa_row_attention_with_pair_bias(m, z))
 *   m += msa_column_attention(m)              (extra-MSA block: msa_column_global_attention)
 *   m += msa_transition(m)                    (unmasked, as AF2: see the testvectors README)
 *   z += outer_product_mean(m)
 *   z += dropout_rowwise_0.25(triangle_multiplication_outgoing(z))
 *   z += dropout_rowwise_0.25(triangle_multiplication_incoming(z))
 *   z += dropout_rowwise_0.25(triangle_attention_starting_node(z))
 *   z += dropout_columnwise_0.25(triangle_attention_ending_node(z))
 *   z += pair_transition(z)
 * Rates come from the config (the MSA column attention's rate applies column-wise, AF2's
 * per_column; AF2 sets it to 0); the dropout masks from evoformer/dropout.h under the caller's
 * key. Memory policies, saved state and gradient conventions: evoformer/block_engine.h.
 *
 * Parameter names are the modules' names with the module scope prefixed, as in the official
 * .../evoformer/evoformer_iteration/ (and .../extra_msa_stack/) arrays and the reference file
 * evoformer_block.h5: "msa_row_attention_with_pair_bias/attention//query_w",
 * "msa_row_attention_with_pair_bias//feat_2d_weights", "outer_product_mean//output_w", ... */
#ifndef MF_EVOFORMER_EVOFORMER_BLOCK_H
#define MF_EVOFORMER_EVOFORMER_BLOCK_H

#include "evoformer/block_engine.h"
#include "model/config.h"
#include "model/params.h"

/* Sizes and rates of one block; mf_evoformer_block_dims_from_config fills every field. */
typedef struct {
    mf_msa_row_attention_dims msa_row_attention_with_pair_bias;
    mf_msa_column_attention_dims msa_column_attention;               /* Evoformer block */
    mf_msa_column_global_attention_dims msa_column_global_attention; /* extra-MSA block */
    mf_transition_dims msa_transition;
    mf_outer_product_mean_dims outer_product_mean;
    mf_triangle_multiplication_dims triangle_multiplication_outgoing;
    mf_triangle_multiplication_dims triangle_multiplication_incoming;
    mf_triangle_attention_dims triangle_attention; /* starting and ending node */
    mf_transition_dims pair_transition;
    double msa_row_attention_dropout_rate;    /* row-wise */
    double msa_column_attention_dropout_rate; /* column-wise */
    double triangle_multiplication_dropout_rate;
    double triangle_attention_dropout_rate; /* starting node row-wise, ending node column-wise */
} mf_evoformer_block_dims;

/* From the stack's config: c_m = channels.c_m for the Evoformer, channels.c_e for the extra-MSA
 * stack; c_z = channels.c_z. */
mf_evoformer_block_dims mf_evoformer_block_dims_from_config(const mf_evoformer_stack_config *s,
                                                            int64_t c_m, int64_t c_z);

/* Module parameter structs in the order of the specs. */
typedef struct {
    mf_msa_row_attention_params msa_row_attention_with_pair_bias;
    mf_msa_column_attention_params msa_column_attention;
    mf_transition_params msa_transition;
    mf_outer_product_mean_params outer_product_mean;
    mf_triangle_multiplication_params triangle_multiplication_outgoing;
    mf_triangle_multiplication_params triangle_multiplication_incoming;
    mf_triangle_attention_params triangle_attention_starting_node;
    mf_triangle_attention_params triangle_attention_ending_node;
    mf_transition_params pair_transition;
} mf_evoformer_block_params;

typedef struct {
    mf_msa_row_attention_params msa_row_attention_with_pair_bias;
    mf_msa_column_global_attention_params msa_column_global_attention;
    mf_transition_params msa_transition;
    mf_outer_product_mean_params outer_product_mean;
    mf_triangle_multiplication_params triangle_multiplication_outgoing;
    mf_triangle_multiplication_params triangle_multiplication_incoming;
    mf_triangle_attention_params triangle_attention_starting_node;
    mf_triangle_attention_params triangle_attention_ending_node;
    mf_transition_params pair_transition;
} mf_extra_msa_block_params;

#define MF_EVOFORMER_BLOCK_NPARAMS ((int)(sizeof(mf_evoformer_block_params) / sizeof(mf_tensor)))
#define MF_EXTRA_MSA_BLOCK_NPARAMS ((int)(sizeof(mf_extra_msa_block_params) / sizeof(mf_tensor)))

typedef mf_evo_block_saved mf_evoformer_block_saved;

/* Specs with scoped names (returns the count; out may be NULL). */
int mf_evoformer_block_param_specs(const mf_evoformer_block_dims *d, mf_param_spec *out);
int mf_extra_msa_block_param_specs(const mf_evoformer_block_dims *d, mf_param_spec *out);

/* The block's steps, dims and dropout without parameters or masks (the Evoformer block, or the
 * extra-MSA block when extra_msa): what the memory model needs (mf_evo_block_plan_forward). */
void mf_evoformer_block_layout(mf_evo_block *b, const mf_evoformer_block_dims *d, bool extra_msa);

/* The block bound to its parameters (dp: gradients, or NULL) and masks, for the engine and the
 * stacks. */
void mf_evoformer_block_bind(mf_evo_block *b, const mf_evoformer_block_params *p,
                             mf_evoformer_block_params *dp, const mf_evoformer_block_dims *d,
                             const mf_tensor *msa_mask, const mf_tensor *pair_mask);
void mf_extra_msa_block_bind(mf_evo_block *b, const mf_extra_msa_block_params *p,
                             mf_extra_msa_block_params *dp, const mf_evoformer_block_dims *d,
                             const mf_tensor *msa_mask, const mf_tensor *pair_mask);

/* m_in, m_out [N_seq, N_res, c_m]; z_in, z_out [N_res, N_res, c_z]; msa_mask [N_seq, N_res];
 * pair_mask [N_res, N_res]; all f32 (or all f64). key: dropout (NULL: none). saved: NULL for a
 * forward only (m_out may be m_in, z_out z_in); else per ctx->policy.recompute (block_engine.h). */
mf_status mf_evoformer_block_forward(mf_ctx *ctx, mf_tensor *m_out, mf_tensor *z_out,
                                     mf_evoformer_block_saved *saved, const mf_tensor *m_in,
                                     const mf_tensor *z_in, const mf_tensor *msa_mask,
                                     const mf_tensor *pair_mask, const mf_evoformer_block_params *p,
                                     const mf_evoformer_block_dims *d, const mf_dropout_key *key);
/* Accumulates into dm_in, dz_in (NULL: not wanted) and every dp field with data (dp may be NULL).
 */
mf_status mf_evoformer_block_backward(mf_ctx *ctx, mf_tensor *dm_in, mf_tensor *dz_in,
                                      mf_evoformer_block_params *dp, const mf_tensor *dm_out,
                                      const mf_tensor *dz_out,
                                      const mf_evoformer_block_saved *saved,
                                      const mf_tensor *msa_mask, const mf_tensor *pair_mask,
                                      const mf_evoformer_block_params *p,
                                      const mf_evoformer_block_dims *d);

/* The extra-MSA block: m is the extra MSA [N_extra, N_res, c_e]. */
mf_status mf_extra_msa_block_forward(mf_ctx *ctx, mf_tensor *m_out, mf_tensor *z_out,
                                     mf_evoformer_block_saved *saved, const mf_tensor *m_in,
                                     const mf_tensor *z_in, const mf_tensor *msa_mask,
                                     const mf_tensor *pair_mask, const mf_extra_msa_block_params *p,
                                     const mf_evoformer_block_dims *d, const mf_dropout_key *key);
mf_status mf_extra_msa_block_backward(mf_ctx *ctx, mf_tensor *dm_in, mf_tensor *dz_in,
                                      mf_extra_msa_block_params *dp, const mf_tensor *dm_out,
                                      const mf_tensor *dz_out,
                                      const mf_evoformer_block_saved *saved,
                                      const mf_tensor *msa_mask, const mf_tensor *pair_mask,
                                      const mf_extra_msa_block_params *p,
                                      const mf_evoformer_block_dims *d);

/* Memory model (memopt/memplan.h): mf_evoformer_block_forward/_backward and
 * mf_extra_msa_block_forward/_backward replayed on a simulated arena (mf_evo_block_plan_forward),
 * m [n_seq or n_extra, n_res, c_m]. As memfold's trainer and inference run them, a saving
 * forward is a trained one, with dropout at d's rates (zero them for a run without dropout), and
 * a forward without saving has none; the backward is that of a saving forward, with every
 * parameter gradient when dparams. */
void mf_evoformer_block_plan_forward(mf_memsim *s, int64_t n_seq, int64_t n_res,
                                     const mf_evoformer_block_dims *d, bool saving);
void mf_evoformer_block_plan_backward(mf_memsim *s, int64_t n_seq, int64_t n_res,
                                      const mf_evoformer_block_dims *d, bool dparams);
void mf_extra_msa_block_plan_forward(mf_memsim *s, int64_t n_extra, int64_t n_res,
                                     const mf_evoformer_block_dims *d, bool saving);
void mf_extra_msa_block_plan_backward(mf_memsim *s, int64_t n_extra, int64_t n_res,
                                      const mf_evoformer_block_dims *d, bool dparams);

#endif
