/* Reference-vector verifiers (model/module_verify.h) for the Evoformer's attention modules. Each
 * builds the module from the file's weights (sizes read from the weight shapes), runs forward
 * (saving activations) and backward with the file's grad_outputs on a CPU context, and appends
 * one comparison per output, grads_inputs and grads_weights dataset. Module names (the files'
 * `module` attribute):
 *   msa_row_attention_with_pair_bias  -> mf_verify_msa_row_attention_with_pair_bias
 *   msa_column_attention              -> mf_verify_msa_column_attention
 *   msa_column_global_attention       -> mf_verify_msa_column_global_attention
 *   triangle_attention_starting_node  -> mf_verify_triangle_attention_starting_node
 *   triangle_attention_ending_node    -> mf_verify_triangle_attention_ending_node */
#ifndef MF_EVOFORMER_VERIFY_EVOFORMER_ATTENTION_H
#define MF_EVOFORMER_VERIFY_EVOFORMER_ATTENTION_H

#include "model/module_verify.h"

mf_status mf_verify_msa_row_attention_with_pair_bias(mf_ctx *ctx, const mf_module_vectors *v,
                                                     mf_verify_report *report);
mf_status mf_verify_msa_column_attention(mf_ctx *ctx, const mf_module_vectors *v,
                                         mf_verify_report *report);
mf_status mf_verify_msa_column_global_attention(mf_ctx *ctx, const mf_module_vectors *v,
                                                mf_verify_report *report);
mf_status mf_verify_triangle_attention_starting_node(mf_ctx *ctx, const mf_module_vectors *v,
                                                     mf_verify_report *report);
mf_status mf_verify_triangle_attention_ending_node(mf_ctx *ctx, const mf_module_vectors *v,
                                                   mf_verify_report *report);

#endif
