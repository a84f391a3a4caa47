#include "memopt/saved.h"

#include "core/ops.h"

mf_status mf_save_activation(mf_ctx *ctx, mf_tensor *saved, const mf_tensor *src, const char *label)
{
    mf_dtype dt = ctx->policy.storage == MF_BF16 ? MF_BF16 : MF_F32;
    MF_TRY(mf_arena_tensor(ctx->arena, saved, dt, src->ndim, src->shape, label));
    return mf_convert(ctx, saved, src);
}

mf_status mf_saved_as_f32(mf_ctx *ctx, mf_tensor *out, const mf_tensor *saved, const char *label)
{
    if (saved->dtype == MF_F32) {
        *out = *saved;
        return MF_OK;
    }
    MF_TRY(mf_arena_tensor(ctx->arena, out, MF_F32, saved->ndim, saved->shape, label));
    return mf_convert(ctx, out, saved);
}
