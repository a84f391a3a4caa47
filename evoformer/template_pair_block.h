/* One block of the template pair stack (AF2 supplement Alg. 16; AF2's TemplatePairStack
 * iteration), forward and backward, on one template's pair activations t [N_res, N_res, c_t]:
 *   t += dropout_rowwise_0.25(triangle_attention_starting_node(t))
 *   t += dropout_columnwise_0.25(triangle_attention_ending_node(t))
 *   t += dropout_rowwise_0.25(triangle_multiplication_outgoing(t))
 *   t += dropout_rowwise_0.25(triangle_multiplication_incoming(t))
 *   t += pair_transition(t)
 * (AF2 config.py template_pair_stack: those rates and orientations). The stack runs it for each
 * template with the template index as the dropout key's `instance`; the final layer norm of the
 * template embedding is not part of it. Memory policies and gradient conventions:
 * evoformer/block_engine.h. Parameter names as under
 * .../template_pair_stack/__layer_stack_no_state/: "triangle_attention_starting_node/
 * attention//query_w", ..., "pair_transition/transition1//weights". */
#ifndef MF_EVOFORMER_TEMPLATE_PAIR_BLOCK_H
#define MF_EVOFORMER_TEMPLATE_PAIR_BLOCK_H

#include "evoformer/block_engine.h"
#include "model/config.h"
#include "model/params.h"

typedef struct {
    mf_triangle_attention_dims triangle_attention; /* starting and ending node */
    mf_triangle_multiplication_dims triangle_multiplication_outgoing;
    mf_triangle_multiplication_dims triangle_multiplication_incoming;
    mf_transition_dims pair_transition;
    double triangle_attention_dropout_rate; /* starting node row-wise, ending node column-wise */
    double triangle_multiplication_dropout_rate;
} mf_template_pair_block_dims;

/* c_t = channels.c_t. */
mf_template_pair_block_dims
mf_template_pair_block_dims_from_config(const mf_template_pair_stack_config *s, int64_t c_t);

typedef struct {
    mf_triangle_attention_params triangle_attention_starting_node;
    mf_triangle_attention_params triangle_attention_ending_node;
    mf_triangle_multiplication_params triangle_multiplication_outgoing;
    mf_triangle_multiplication_params triangle_multiplication_incoming;
    mf_transition_params pair_transition;
} mf_template_pair_block_params;

#define MF_TEMPLATE_PAIR_BLOCK_NPARAMS                                                             \
    ((int)(sizeof(mf_template_pair_block_params) / sizeof(mf_tensor)))

typedef mf_evo_block_saved mf_template_pair_block_saved;

int mf_template_pair_block_param_specs(const mf_template_pair_block_dims *d, mf_param_spec *out);

/* The block's steps, dims and dropout without parameters or masks (for the memory model). */
void mf_template_pair_block_layout(mf_evo_block *b, const mf_template_pair_block_dims *d);

void mf_template_pair_block_bind(mf_evo_block *b, const mf_template_pair_block_params *p,
                                 mf_template_pair_block_params *dp,
                                 const mf_template_pair_block_dims *d, const mf_tensor *pair_mask);

/* t_in, t_out [N_res, N_res, c_t]; pair_mask [N_res, N_res]; f32 (or all f64). saved NULL: forward
 * only (t_out may be t_in). */
mf_status mf_template_pair_block_forward(mf_ctx *ctx, mf_tensor *t_out,
                                         mf_template_pair_block_saved *saved, const mf_tensor *t_in,
                                         const mf_tensor *pair_mask,
                                         const mf_template_pair_block_params *p,
                                         const mf_template_pair_block_dims *d,
                                         const mf_dropout_key *key);
/* Accumulates into dt_in (NULL: not wanted) and every dp field with data (dp may be NULL). */
mf_status
mf_template_pair_block_backward(mf_ctx *ctx, mf_tensor *dt_in, mf_template_pair_block_params *dp,
                                const mf_tensor *dt_out, const mf_template_pair_block_saved *saved,
                                const mf_tensor *pair_mask, const mf_template_pair_block_params *p,
                                const mf_template_pair_block_dims *d);

/* Memory model (memopt/memplan.h): the forward/backward above replayed on a simulated arena,
 * t [n_res, n_res, c_t]; dropout as for mf_evoformer_block_plan_forward (a saving forward is a
 * trained one, at d's rates). */
void mf_template_pair_block_plan_forward(mf_memsim *s, int64_t n_res,
                                         const mf_template_pair_block_dims *d, bool saving);
void mf_template_pair_block_plan_backward(mf_memsim *s, int64_t n_res,
                                          const mf_template_pair_block_dims *d, bool dparams);

#endif
