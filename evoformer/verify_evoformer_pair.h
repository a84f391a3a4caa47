/* Reference-vector verifiers (model/module_verify.h) for the Evoformer's transitions, outer
 * product mean and triangular multiplicative updates. Each builds the module from the file's
 * weights (sizes read from the weight shapes), runs forward (saving activations) and backward with
 * the file's grad_outputs on a CPU context, and appends one comparison per output, grads_inputs
 * and grads_weights dataset. Module names (the files' `module` attribute):
 *   msa_transition                    -> mf_verify_msa_transition
 *   pair_transition                   -> mf_verify_pair_transition
 *   outer_product_mean                -> mf_verify_outer_product_mean
 *   triangle_multiplication_outgoing  -> mf_verify_triangle_multiplication_outgoing
 *   triangle_multiplication_incoming  -> mf_verify_triangle_multiplication_incoming */
#ifndef MF_EVOFORMER_VERIFY_EVOFORMER_PAIR_H
#define MF_EVOFORMER_VERIFY_EVOFORMER_PAIR_H

#include "model/module_verify.h"

mf_status mf_verify_msa_transition(mf_ctx *ctx, const mf_module_vectors *v,
                                   mf_verify_report *report);
mf_status mf_verify_pair_transition(mf_ctx *ctx, const mf_module_vectors *v,
                                    mf_verify_report *report);
mf_status mf_verify_outer_product_mean(mf_ctx *ctx, const mf_module_vectors *v,
                                       mf_verify_report *report);
mf_status mf_verify_triangle_multiplication_outgoing(mf_ctx *ctx, const mf_module_vectors *v,
                                                     mf_verify_report *report);
mf_status mf_verify_triangle_multiplication_incoming(mf_ctx *ctx, const mf_module_vectors *v,
                                                     mf_verify_report *report);

#endif
