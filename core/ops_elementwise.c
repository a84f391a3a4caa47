/* Elementwise entry points: argument checks, device dispatch, and on the CPU the f32 reference
 * (core/ref/elementwise.inc), which is the CPU implementation of these ops. */
#include <string.h>

#include "core/ops_dispatch.h"
#include "core/ref/ref.h"

/* An optional tensor is absent when the pointer or its data is NULL (as in mf_attention_params). */
static mf_tensor *present_out(mf_tensor *t)
{
    return t && t->data ? t : NULL;
}

static mf_status check_on(const mf_ctx *ctx, const mf_tensor *t, const char *name, mf_dtype dtype)
{
    MF_TRY(mf_check_tensor(t, name, dtype, 0));
    if (t->device != ctx->device) {
        char b[96];
        return MF_ERROR(MF_ERR_INVALID, "tensor %s is %s but the context is on %s", name,
                        mf_tensor_describe(t, b, sizeof b),
                        ctx->device == MF_DEV_CUDA ? "cuda" : "cpu");
    }
    return MF_OK;
}

static mf_status check_f32_like(const mf_ctx *ctx, const mf_tensor *t, const char *tn,
                                const mf_tensor *ref, const char *rn)
{
    MF_TRY(check_on(ctx, t, tn, MF_F32));
    return mf_check_same_shape(t, tn, ref, rn);
}

/* b broadcasts over a's leading dims: its element count is the product of a's last d dims for
 * some d (d = 0 is a scalar), so it repeats every nb elements of a. */
static mf_status check_broadcast(const mf_tensor *a, const char *an, const mf_tensor *b,
                                 const char *bn)
{
    int64_t nb = mf_tensor_numel(b), suffix = 1;
    if (nb == suffix) return MF_OK;
    for (int d = a->ndim - 1; d >= 0; d--) {
        suffix *= a->shape[d];
        if (nb == suffix) return MF_OK;
    }
    char x[96], y[96];
    return MF_ERROR(MF_ERR_INVALID,
                    "%s %s does not broadcast over %s %s: its element count must equal the "
                    "product of %s's trailing dims",
                    bn, mf_tensor_describe(b, y, sizeof y), an, mf_tensor_describe(a, x, sizeof x),
                    an);
}

static mf_status check_act(mf_activation act)
{
    MF_REQUIRE(act == MF_ACT_RELU || act == MF_ACT_SIGMOID || act == MF_ACT_SOFTPLUS,
               "unknown activation %d", (int)act);
    return MF_OK;
}

mf_status mf_activation_forward(mf_ctx *ctx, mf_activation act, mf_tensor *y, const mf_tensor *x)
{
    MF_REQUIRE(ctx, "activation_forward: context is NULL");
    MF_TRY(check_act(act));
    MF_TRY(check_on(ctx, x, "activation x", MF_F32));
    MF_TRY(check_f32_like(ctx, y, "activation y", x, "activation x"));
    MF_DISPATCH_CUDA(ctx, activation_forward, act, y, x);
    mf_ref_activation_forward_f32((int)act, (float *)y->data, (const float *)x->data,
                                  mf_tensor_numel(x));
    return MF_OK;
}

mf_status mf_activation_backward(mf_ctx *ctx, mf_activation act, mf_tensor *dx, const mf_tensor *dy,
                                 const mf_tensor *x)
{
    MF_REQUIRE(ctx, "activation_backward: context is NULL");
    MF_TRY(check_act(act));
    MF_TRY(check_on(ctx, x, "activation x", MF_F32));
    MF_TRY(check_f32_like(ctx, dy, "activation dy", x, "activation x"));
    dx = present_out(dx);
    if (!dx) return MF_OK;
    MF_TRY(check_f32_like(ctx, dx, "activation dx", x, "activation x"));
    MF_DISPATCH_CUDA(ctx, activation_backward, act, dx, dy, x);
    mf_ref_activation_backward_f32((int)act, (float *)dx->data, (const float *)dy->data,
                                   (const float *)x->data, mf_tensor_numel(x));
    return MF_OK;
}

static mf_status check_binary(const mf_ctx *ctx, const char *op, const mf_tensor *y,
                              const mf_tensor *a, const mf_tensor *b)
{
    MF_REQUIRE(ctx, "%s: context is NULL", op);
    MF_TRY(check_on(ctx, a, "a", MF_F32));
    MF_TRY(check_on(ctx, b, "b", MF_F32));
    MF_TRY(check_f32_like(ctx, y, "y", a, "a"));
    return check_broadcast(a, "a", b, "b");
}

mf_status mf_add(mf_ctx *ctx, mf_tensor *y, const mf_tensor *a, const mf_tensor *b)
{
    MF_TRY(check_binary(ctx, "add", y, a, b));
    MF_DISPATCH_CUDA(ctx, add, y, a, b);
    mf_ref_add_f32((float *)y->data, (const float *)a->data, (const float *)b->data,
                   mf_tensor_numel(a), mf_tensor_numel(b));
    return MF_OK;
}

mf_status mf_mul(mf_ctx *ctx, mf_tensor *y, const mf_tensor *a, const mf_tensor *b)
{
    MF_TRY(check_binary(ctx, "mul", y, a, b));
    MF_DISPATCH_CUDA(ctx, mul, y, a, b);
    mf_ref_mul_f32((float *)y->data, (const float *)a->data, (const float *)b->data,
                   mf_tensor_numel(a), mf_tensor_numel(b));
    return MF_OK;
}

mf_status mf_add_backward(mf_ctx *ctx, mf_tensor *da, mf_tensor *db, const mf_tensor *dy)
{
    MF_REQUIRE(ctx, "add_backward: context is NULL");
    MF_TRY(check_on(ctx, dy, "add dy", MF_F32));
    da = present_out(da);
    db = present_out(db);
    if (da) MF_TRY(check_f32_like(ctx, da, "add da", dy, "add dy"));
    if (db) {
        MF_TRY(check_on(ctx, db, "add db", MF_F32));
        MF_TRY(check_broadcast(dy, "add dy", db, "add db"));
    }
    if (!da && !db) return MF_OK;
    MF_DISPATCH_CUDA(ctx, add_backward, da, db, dy);
    mf_ref_add_backward_f32(da ? (float *)da->data : NULL, db ? (float *)db->data : NULL,
                            (const float *)dy->data, mf_tensor_numel(dy),
                            db ? mf_tensor_numel(db) : mf_tensor_numel(dy));
    return MF_OK;
}

mf_status mf_mul_backward(mf_ctx *ctx, mf_tensor *da, mf_tensor *db, const mf_tensor *dy,
                          const mf_tensor *a, const mf_tensor *b)
{
    MF_REQUIRE(ctx, "mul_backward: context is NULL");
    MF_TRY(check_on(ctx, a, "mul a", MF_F32));
    MF_TRY(check_on(ctx, b, "mul b", MF_F32));
    MF_TRY(check_broadcast(a, "mul a", b, "mul b"));
    MF_TRY(check_f32_like(ctx, dy, "mul dy", a, "mul a"));
    da = present_out(da);
    db = present_out(db);
    if (da) MF_TRY(check_f32_like(ctx, da, "mul da", a, "mul a"));
    if (db) MF_TRY(check_f32_like(ctx, db, "mul db", b, "mul b"));
    if (!da && !db) return MF_OK;
    MF_DISPATCH_CUDA(ctx, mul_backward, da, db, dy, a, b);
    mf_ref_mul_backward_f32(da ? (float *)da->data : NULL, db ? (float *)db->data : NULL,
                            (const float *)dy->data, (const float *)a->data, (const float *)b->data,
                            mf_tensor_numel(a), mf_tensor_numel(b));
    return MF_OK;
}

mf_status mf_scale(mf_ctx *ctx, mf_tensor *y, const mf_tensor *x, float alpha)
{
    MF_REQUIRE(ctx, "scale: context is NULL");
    MF_TRY(check_on(ctx, x, "scale x", MF_F32));
    MF_TRY(check_f32_like(ctx, y, "scale y", x, "scale x"));
    MF_DISPATCH_CUDA(ctx, scale, y, x, alpha);
    mf_ref_scale_f32((float *)y->data, (const float *)x->data, alpha, mf_tensor_numel(x));
    return MF_OK;
}

mf_status mf_axpy(mf_ctx *ctx, mf_tensor *y, float alpha, const mf_tensor *x)
{
    MF_REQUIRE(ctx, "axpy: context is NULL");
    MF_TRY(check_on(ctx, x, "axpy x", MF_F32));
    MF_TRY(check_f32_like(ctx, y, "axpy y", x, "axpy x"));
    MF_DISPATCH_CUDA(ctx, axpy, y, alpha, x);
    mf_ref_axpy_f32((float *)y->data, alpha, (const float *)x->data, mf_tensor_numel(x));
    return MF_OK;
}

mf_status mf_fill(mf_ctx *ctx, mf_tensor *y, float value)
{
    MF_REQUIRE(ctx, "fill: context is NULL");
    MF_TRY(check_on(ctx, y, "fill y", MF_F32));
    MF_DISPATCH_CUDA(ctx, fill, y, value);
    float *p = (float *)y->data;
    int64_t n = mf_tensor_numel(y);
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) p[i] = value;
    return MF_OK;
}

mf_status mf_convert(mf_ctx *ctx, mf_tensor *y, const mf_tensor *x)
{
    MF_REQUIRE(ctx, "convert: context is NULL");
    MF_REQUIRE(x && x->data, "convert: tensor x is missing");
    MF_REQUIRE(y && y->data, "convert: tensor y is missing");
    bool ok = (x->dtype == MF_F32 && (y->dtype == MF_BF16 || y->dtype == MF_F32)) ||
              (x->dtype == MF_BF16 && y->dtype == MF_F32);
    MF_REQUIRE(ok, "convert: %s -> %s is not supported (f32 -> bf16, bf16 -> f32, f32 -> f32)",
               mf_dtype_name(x->dtype), mf_dtype_name(y->dtype));
    MF_TRY(check_on(ctx, x, "convert x", x->dtype));
    MF_TRY(check_on(ctx, y, "convert y", y->dtype));
    MF_TRY(mf_check_same_shape(y, "convert y", x, "convert x"));
    MF_DISPATCH_CUDA(ctx, convert, y, x);
    int64_t n = mf_tensor_numel(x);
    if (x->dtype == MF_F32 && y->dtype == MF_F32) {
        if (y->data != x->data) memmove(y->data, x->data, (size_t)n * sizeof(float));
    } else if (x->dtype == MF_F32) {
        const float *s = (const float *)x->data;
        mf_bf16 *d = (mf_bf16 *)y->data;
#pragma omp parallel for schedule(static)
        for (int64_t i = 0; i < n; i++) d[i] = mf_f32_to_bf16(s[i]);
    } else {
        const mf_bf16 *s = (const mf_bf16 *)x->data;
        float *d = (float *)y->data;
#pragma omp parallel for schedule(static)
        for (int64_t i = 0; i < n; i++) d[i] = mf_bf16_to_f32(s[i]);
    }
    return MF_OK;
}
