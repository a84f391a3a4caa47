/* Saved activations: what a module's forward keeps for its backward, stored in the policy's
 * storage precision (f32, or bf16 with round-to-nearest-even) from the context's arena. f64
 * activations (a double-precision run, the gradient checks' oracle) are kept in f64 whatever the
 * storage policy. */
#ifndef MF_MEMOPT_SAVED_H
#define MF_MEMOPT_SAVED_H

#include "core/context.h"

/* Allocates *saved (src's shape; f64 when src is f64, else the ctx->policy.storage dtype) and
 * copies/converts src into it. */
mf_status mf_save_activation(mf_ctx *ctx, mf_tensor *saved, const mf_tensor *src,
                             const char *label);
/* A saved activation in its compute dtype, for backward: the tensor itself when stored in f32 or
 * f64, else (bf16) a converted f32 copy in arena scratch (release it with the caller's mark).
 * Module code that may run in f64 uses this. */
mf_status mf_saved_view(mf_ctx *ctx, mf_tensor *out, const mf_tensor *saved, const char *label);
/* An f32 view of a saved activation: the tensor itself when stored in f32, else a converted copy
 * in arena scratch (release it with the caller's mark). Refuses f64 (use mf_saved_view). */
mf_status mf_saved_as_f32(mf_ctx *ctx, mf_tensor *out, const mf_tensor *saved, const char *label);

#endif
