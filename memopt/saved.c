#include "memopt/saved.h"

#include "core/ops.h"

mf_status mf_save_activation(mf_ctx *ctx, mf_tensor *saved, const mf_tensor *src, const char *label)
{
    MF_REQUIRE(src && src->data, "save_activation %s: source tensor is missing", label);
    /* an f64 run is the double-precision oracle: rounding its activations would defeat it */
    mf_dtype dt = src->dtype == MF_F64 ? MF_F64 : ctx->policy.storage == MF_BF16 ? MF_BF16 : MF_F32;
    MF_TRY(mf_arena_tensor(ctx->arena, saved, dt, src->ndim, src->shape, label));
    return mf_convert(ctx, saved, src);
}

mf_status mf_saved_as_f32(mf_ctx *ctx, mf_tensor *out, const mf_tensor *saved, const char *label)
{
    MF_REQUIRE(saved && saved->data, "saved_as_f32 %s: saved tensor is missing", label);
    MF_REQUIRE(saved->dtype != MF_F64,
               "saved_as_f32 %s: the saved tensor is f64 (an f64 run); use mf_saved_view, which "
               "keeps it in f64",
               label);
    if (saved->dtype == MF_F32) {
        *out = *saved;
        return MF_OK;
    }
    MF_TRY(mf_arena_tensor(ctx->arena, out, MF_F32, saved->ndim, saved->shape, label));
    return mf_convert(ctx, out, saved);
}

mf_status mf_saved_view(mf_ctx *ctx, mf_tensor *out, const mf_tensor *saved, const char *label)
{
    MF_REQUIRE(saved && saved->data, "saved_view %s: saved tensor is missing", label);
    if (saved->dtype == MF_F64 || saved->dtype == MF_F32) {
        *out = *saved;
        return MF_OK;
    }
    return mf_saved_as_f32(ctx, out, saved, label);
}
