/* Reference-vector verifiers (model/module_verify.h) for the structure-module pieces of this
 * folder. Each builds the module from the file's weights and inputs, runs forward and backward
 * with the file's grad_outputs on a CPU context, and appends one comparison per output,
 * grads_inputs and grads_weights dataset. Module names (the files' `module` attribute):
 *   backbone_update              -> mf_verify_backbone_update
 *   structure_module_transition  -> mf_verify_structure_module_transition
 *   fape_clamped, fape_unclamped -> mf_verify_fape (clamp, length scale and eps from the file's
 *                                   `dims` attribute) */
#ifndef MF_STRUCTURE_MODULE_VERIFY_STRUCTURE_H
#define MF_STRUCTURE_MODULE_VERIFY_STRUCTURE_H

#include "model/module_verify.h"

mf_status mf_verify_backbone_update(mf_ctx *ctx, const mf_module_vectors *v,
                                    mf_verify_report *report);
mf_status mf_verify_structure_module_transition(mf_ctx *ctx, const mf_module_vectors *v,
                                                mf_verify_report *report);
mf_status mf_verify_fape(mf_ctx *ctx, const mf_module_vectors *v, mf_verify_report *report);

#endif
