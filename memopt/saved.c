#include "memopt/saved.h"

#include "core/ops.h"

static mf_dtype storage_dtype(const mf_ctx *ctx, const mf_tensor *src)
{
    /* an f64 run is the double-precision oracle: rounding its activations would defeat it */
    return src->dtype == MF_F64 ? MF_F64 : ctx->policy.storage == MF_BF16 ? MF_BF16 : MF_F32;
}

mf_status mf_save_activation(mf_ctx *ctx, mf_tensor *saved, const mf_tensor *src, const char *label)
{
    MF_REQUIRE(src && src->data, "save_activation %s: source tensor is missing", label);
    const mf_dtype dt = storage_dtype(ctx, src);
    MF_TRY(mf_arena_tensor(ctx->arena, saved, dt, src->ndim, src->shape, label));
    return mf_convert(ctx, saved, src);
}

mf_status mf_save_checkpoint(mf_ctx *ctx, mf_tensor *ckpt, const mf_tensor *src, const char *label)
{
    MF_REQUIRE(src && src->data, "save_checkpoint %s: source tensor is missing", label);
    if (!ctx->policy.offload || !ctx->host_arena) {
        if (ctx->policy.offload && ctx->device != MF_DEV_CPU)
            return MF_ERROR(MF_ERR_UNSUPPORTED,
                            "%s: offloaded checkpoints need a host arena in the context "
                            "(ctx->host_arena); on the CPU the arena is host memory already",
                            label);
        return mf_save_activation(ctx, ckpt, src, label);
    }
    const mf_dtype dt = storage_dtype(ctx, src);
    MF_TRY(mf_arena_tensor(ctx->host_arena, ckpt, dt, src->ndim, src->shape, label));
    if (ckpt->device == src->device) return mf_convert(ctx, ckpt, src);
    if (dt == src->dtype) return mf_tensor_transfer(ckpt, src, label);
    /* the storage dtype's copy made on the device, then sent down */
    mf_arena_mark_t mark = mf_arena_mark(ctx->arena);
    mf_tensor c;
    mf_status st = mf_arena_tensor(ctx->arena, &c, dt, src->ndim, src->shape, label);
    if (st == MF_OK) st = mf_convert(ctx, &c, src);
    if (st == MF_OK) st = mf_tensor_transfer(ckpt, &c, label);
    mf_arena_release(ctx->arena, mark);
    return st;
}

mf_status mf_restore_checkpoint(mf_ctx *ctx, mf_tensor *dst, const mf_tensor *ckpt,
                                const char *label)
{
    MF_REQUIRE(ckpt && ckpt->data && dst && dst->data, "restore_checkpoint %s: tensors are missing",
               label);
    if (ckpt->device == dst->device) return mf_convert(ctx, dst, ckpt);
    if (ckpt->dtype == dst->dtype) return mf_tensor_transfer(dst, ckpt, label);
    mf_arena_mark_t mark = mf_arena_mark(ctx->arena);
    mf_tensor c;
    mf_status st = mf_arena_copy(ctx->arena, &c, ckpt, label);
    if (st == MF_OK) st = mf_convert(ctx, dst, &c);
    mf_arena_release(ctx->arena, mark);
    return st;
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
