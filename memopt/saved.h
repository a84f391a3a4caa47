/* Saved activations: what a module's forward keeps for its backward, stored in the policy's
 * storage precision (f32, or bf16 with round-to-nearest-even) from the context's arena. */
#ifndef MF_MEMOPT_SAVED_H
#define MF_MEMOPT_SAVED_H

#include "core/context.h"

/* Allocates *saved (ctx->policy.storage dtype, src's shape) and copies/converts src into it. */
mf_status mf_save_activation(mf_ctx *ctx, mf_tensor *saved, const mf_tensor *src,
                             const char *label);
/* An f32 view of a saved activation: the tensor itself when stored in f32, else a converted copy
 * in arena scratch (release it with the caller's mark). */
mf_status mf_saved_as_f32(mf_ctx *ctx, mf_tensor *out, const mf_tensor *saved, const char *label);

#endif
