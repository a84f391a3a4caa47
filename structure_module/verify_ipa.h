/* Reference-vector verifier (model/module_verify.h) for invariant point attention (Alg. 22):
 *   invariant_point_attention -> mf_verify_invariant_point_attention
 * Sizes come from the file's weight shapes; runs forward (saved) and backward with the file's
 * grad_outputs on a CPU context and compares outputs/update, grads_inputs/{s, z, rot, trans} and
 * every grads_weights dataset (the file's skip_rows and compare_absolute rules apply). */
#ifndef MF_STRUCTURE_MODULE_VERIFY_IPA_H
#define MF_STRUCTURE_MODULE_VERIFY_IPA_H

#include "model/module_verify.h"

mf_status mf_verify_invariant_point_attention(mf_ctx *ctx, const mf_module_vectors *v,
                                              mf_verify_report *report);

#endif
