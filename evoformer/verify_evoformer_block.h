/* Reference-vector verifier (model/module_verify.h) for the whole Evoformer block (Alg. 6,
 * residuals included, dropout off): builds the block from the file's weights (scoped names, sizes
 * read from the weight shapes), runs forward (saving, under ctx's memory policy) and backward with
 * the file's grad_outputs on a CPU context, and appends one comparison per output (m, z), input
 * gradient (m, z) and weight gradient (93 datasets). Module name (the file's `module` attribute):
 *   evoformer_block -> mf_verify_evoformer_block */
#ifndef MF_EVOFORMER_VERIFY_EVOFORMER_BLOCK_H
#define MF_EVOFORMER_VERIFY_EVOFORMER_BLOCK_H

#include "model/module_verify.h"

mf_status mf_verify_evoformer_block(mf_ctx *ctx, const mf_module_vectors *v,
                                    mf_verify_report *report);

#endif
