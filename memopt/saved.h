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
/* A recomputation checkpoint (a block's or a stack segment's input), as mf_save_activation, but
 * with policy.offload and ctx->host_arena it lives in the host arena: on a GPU the device keeps
 * none of it (converted to the storage dtype there, then copied down; mf_restore_checkpoint copies
 * it back). Offload without a host arena: on the CPU the arena is host memory already and the
 * checkpoint stays in it; on a GPU MF_ERR_UNSUPPORTED. */
mf_status mf_save_checkpoint(mf_ctx *ctx, mf_tensor *ckpt, const mf_tensor *src, const char *label);
/* dst (on ctx's device, the compute dtype; allocated by the caller) = the checkpoint. */
mf_status mf_restore_checkpoint(mf_ctx *ctx, mf_tensor *dst, const mf_tensor *ckpt,
                                const char *label);
/* A saved activation in its compute dtype, for backward: the tensor itself when stored in f32 or
 * f64, else (bf16) a converted f32 copy in arena scratch (release it with the caller's mark).
 * Module code that may run in f64 uses this. */
mf_status mf_saved_view(mf_ctx *ctx, mf_tensor *out, const mf_tensor *saved, const char *label);
/* An f32 view of a saved activation: the tensor itself when stored in f32, else a converted copy
 * in arena scratch (release it with the caller's mark). Refuses f64 (use mf_saved_view). */
mf_status mf_saved_as_f32(mf_ctx *ctx, mf_tensor *out, const mf_tensor *saved, const char *label);

#endif
