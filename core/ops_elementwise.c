/* Elementwise entry points: argument checks, device dispatch, and on the CPU the reference
 * (core/ref/elementwise.inc), which is the CPU implementation of these ops: mf_ref_*_f32 for f32
 * tensors, mf_ref_*_f64 for f64 tensors (CPU only: the double-precision runs that serve as the
 * finite-difference oracle of module gradient checks). */
#include <string.h>

#include "core/ops_dispatch.h"
#include "core/shape_rules.h"
#include "core/ref/ref.h"

/* An optional tensor is absent when the pointer or its data is NULL (as in mf_attention_params). */
static mf_tensor *present_out(mf_tensor *t)
{
    return t && t->data ? t : NULL;
}

/* The floating type a call runs in, from its leading tensor: f64 when that is f64, else f32 (a
 * tensor of any other type then fails the f32 check with its name). f64 exists on the CPU only. */
static mf_status run_dtype(const mf_ctx *ctx, const char *op, const mf_tensor *lead,
                           const char *name, mf_dtype *dt)
{
    MF_REQUIRE(ctx, "%s: context is NULL", op);
    MF_REQUIRE(lead && lead->data, "%s: tensor %s is missing", op, name);
    *dt = lead->dtype == MF_F64 ? MF_F64 : MF_F32;
    if (*dt == MF_F64 && ctx->device != MF_DEV_CPU)
        return MF_ERROR(MF_ERR_UNSUPPORTED,
                        "%s: tensor %s is f64, which runs on the CPU only (the context is on cuda)",
                        op, name);
    return MF_OK;
}

static mf_status check_on(const mf_ctx *ctx, const mf_tensor *t, const char *name, mf_dtype dtype)
{
    if (t && t->data && t->dtype != dtype && (t->dtype == MF_F32 || t->dtype == MF_F64) &&
        (dtype == MF_F32 || dtype == MF_F64)) {
        char b[96];
        return MF_ERROR(MF_ERR_INVALID,
                        "tensor %s is %s but this call runs in %s: f32 and f64 tensors cannot be "
                        "mixed in one call",
                        name, mf_tensor_describe(t, b, sizeof b), mf_dtype_name(dtype));
    }
    MF_TRY(mf_check_tensor(t, name, dtype, 0));
    if (t->device != ctx->device) {
        char b[96];
        return MF_ERROR(MF_ERR_INVALID, "tensor %s is %s but the context is on %s", name,
                        mf_tensor_describe(t, b, sizeof b),
                        ctx->device == MF_DEV_CUDA ? "cuda" : "cpu");
    }
    return MF_OK;
}

/* t has ref's shape and the call's dtype. */
static mf_status check_like(const mf_ctx *ctx, const mf_tensor *t, const char *tn,
                            const mf_tensor *ref, const char *rn)
{
    MF_TRY(check_on(ctx, t, tn, ref->dtype));
    return mf_check_same_shape(t, tn, ref, rn);
}

/* core/shape_rules.h; the CUDA twins check broadcasts with it too. */
mf_status mf_check_broadcast(const mf_tensor *a, const char *an, const mf_tensor *b, const char *bn)
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
    mf_dtype dt;
    MF_TRY(run_dtype(ctx, "activation_forward", x, "activation x", &dt));
    MF_TRY(check_act(act));
    MF_TRY(check_on(ctx, x, "activation x", dt));
    MF_TRY(check_like(ctx, y, "activation y", x, "activation x"));
    MF_DISPATCH_CUDA(ctx, activation_forward, act, y, x);
    if (dt == MF_F64)
        mf_ref_activation_forward_f64((int)act, (double *)y->data, (const double *)x->data,
                                      mf_tensor_numel(x));
    else
        mf_ref_activation_forward_f32((int)act, (float *)y->data, (const float *)x->data,
                                      mf_tensor_numel(x));
    return MF_OK;
}

mf_status mf_activation_backward(mf_ctx *ctx, mf_activation act, mf_tensor *dx, const mf_tensor *dy,
                                 const mf_tensor *x)
{
    mf_dtype dt;
    MF_TRY(run_dtype(ctx, "activation_backward", x, "activation x", &dt));
    MF_TRY(check_act(act));
    MF_TRY(check_on(ctx, x, "activation x", dt));
    MF_TRY(check_like(ctx, dy, "activation dy", x, "activation x"));
    dx = present_out(dx);
    if (!dx) return MF_OK;
    MF_TRY(check_like(ctx, dx, "activation dx", x, "activation x"));
    MF_DISPATCH_CUDA(ctx, activation_backward, act, dx, dy, x);
    if (dt == MF_F64)
        mf_ref_activation_backward_f64((int)act, (double *)dx->data, (const double *)dy->data,
                                       (const double *)x->data, mf_tensor_numel(x));
    else
        mf_ref_activation_backward_f32((int)act, (float *)dx->data, (const float *)dy->data,
                                       (const float *)x->data, mf_tensor_numel(x));
    return MF_OK;
}

static mf_status check_binary(const mf_ctx *ctx, const char *op, const mf_tensor *y,
                              const mf_tensor *a, const mf_tensor *b, mf_dtype *dt)
{
    MF_TRY(run_dtype(ctx, op, a, "a", dt));
    MF_TRY(check_on(ctx, a, "a", *dt));
    MF_TRY(check_on(ctx, b, "b", *dt));
    MF_TRY(check_like(ctx, y, "y", a, "a"));
    return mf_check_broadcast(a, "a", b, "b");
}

mf_status mf_add(mf_ctx *ctx, mf_tensor *y, const mf_tensor *a, const mf_tensor *b)
{
    mf_dtype dt;
    MF_TRY(check_binary(ctx, "add", y, a, b, &dt));
    MF_DISPATCH_CUDA(ctx, add, y, a, b);
    if (dt == MF_F64)
        mf_ref_add_f64((double *)y->data, (const double *)a->data, (const double *)b->data,
                       mf_tensor_numel(a), mf_tensor_numel(b));
    else
        mf_ref_add_f32((float *)y->data, (const float *)a->data, (const float *)b->data,
                       mf_tensor_numel(a), mf_tensor_numel(b));
    return MF_OK;
}

mf_status mf_mul(mf_ctx *ctx, mf_tensor *y, const mf_tensor *a, const mf_tensor *b)
{
    mf_dtype dt;
    MF_TRY(check_binary(ctx, "mul", y, a, b, &dt));
    MF_DISPATCH_CUDA(ctx, mul, y, a, b);
    if (dt == MF_F64)
        mf_ref_mul_f64((double *)y->data, (const double *)a->data, (const double *)b->data,
                       mf_tensor_numel(a), mf_tensor_numel(b));
    else
        mf_ref_mul_f32((float *)y->data, (const float *)a->data, (const float *)b->data,
                       mf_tensor_numel(a), mf_tensor_numel(b));
    return MF_OK;
}

mf_status mf_add_backward(mf_ctx *ctx, mf_tensor *da, mf_tensor *db, const mf_tensor *dy)
{
    mf_dtype dt;
    MF_TRY(run_dtype(ctx, "add_backward", dy, "add dy", &dt));
    MF_TRY(check_on(ctx, dy, "add dy", dt));
    da = present_out(da);
    db = present_out(db);
    if (da) MF_TRY(check_like(ctx, da, "add da", dy, "add dy"));
    if (db) {
        MF_TRY(check_on(ctx, db, "add db", dt));
        MF_TRY(mf_check_broadcast(dy, "add dy", db, "add db"));
    }
    if (!da && !db) return MF_OK;
    MF_DISPATCH_CUDA(ctx, add_backward, da, db, dy);
    int64_t n = mf_tensor_numel(dy), nb = db ? mf_tensor_numel(db) : n;
    if (dt == MF_F64)
        mf_ref_add_backward_f64(da ? (double *)da->data : NULL, db ? (double *)db->data : NULL,
                                (const double *)dy->data, n, nb);
    else
        mf_ref_add_backward_f32(da ? (float *)da->data : NULL, db ? (float *)db->data : NULL,
                                (const float *)dy->data, n, nb);
    return MF_OK;
}

mf_status mf_mul_backward(mf_ctx *ctx, mf_tensor *da, mf_tensor *db, const mf_tensor *dy,
                          const mf_tensor *a, const mf_tensor *b)
{
    mf_dtype dt;
    MF_TRY(run_dtype(ctx, "mul_backward", a, "mul a", &dt));
    MF_TRY(check_on(ctx, a, "mul a", dt));
    MF_TRY(check_on(ctx, b, "mul b", dt));
    MF_TRY(mf_check_broadcast(a, "mul a", b, "mul b"));
    MF_TRY(check_like(ctx, dy, "mul dy", a, "mul a"));
    da = present_out(da);
    db = present_out(db);
    if (da) MF_TRY(check_like(ctx, da, "mul da", a, "mul a"));
    if (db) MF_TRY(check_like(ctx, db, "mul db", b, "mul b"));
    if (!da && !db) return MF_OK;
    MF_DISPATCH_CUDA(ctx, mul_backward, da, db, dy, a, b);
    if (dt == MF_F64)
        mf_ref_mul_backward_f64(da ? (double *)da->data : NULL, db ? (double *)db->data : NULL,
                                (const double *)dy->data, (const double *)a->data,
                                (const double *)b->data, mf_tensor_numel(a), mf_tensor_numel(b));
    else
        mf_ref_mul_backward_f32(da ? (float *)da->data : NULL, db ? (float *)db->data : NULL,
                                (const float *)dy->data, (const float *)a->data,
                                (const float *)b->data, mf_tensor_numel(a), mf_tensor_numel(b));
    return MF_OK;
}

mf_status mf_scale(mf_ctx *ctx, mf_tensor *y, const mf_tensor *x, float alpha)
{
    mf_dtype dt;
    MF_TRY(run_dtype(ctx, "scale", x, "scale x", &dt));
    MF_TRY(check_on(ctx, x, "scale x", dt));
    MF_TRY(check_like(ctx, y, "scale y", x, "scale x"));
    MF_DISPATCH_CUDA(ctx, scale, y, x, alpha);
    if (dt == MF_F64)
        mf_ref_scale_f64((double *)y->data, (const double *)x->data, alpha, mf_tensor_numel(x));
    else
        mf_ref_scale_f32((float *)y->data, (const float *)x->data, alpha, mf_tensor_numel(x));
    return MF_OK;
}

mf_status mf_axpy(mf_ctx *ctx, mf_tensor *y, float alpha, const mf_tensor *x)
{
    mf_dtype dt;
    MF_TRY(run_dtype(ctx, "axpy", x, "axpy x", &dt));
    MF_TRY(check_on(ctx, x, "axpy x", dt));
    MF_TRY(check_like(ctx, y, "axpy y", x, "axpy x"));
    MF_DISPATCH_CUDA(ctx, axpy, y, alpha, x);
    if (dt == MF_F64)
        mf_ref_axpy_f64((double *)y->data, alpha, (const double *)x->data, mf_tensor_numel(x));
    else
        mf_ref_axpy_f32((float *)y->data, alpha, (const float *)x->data, mf_tensor_numel(x));
    return MF_OK;
}

mf_status mf_fill(mf_ctx *ctx, mf_tensor *y, float value)
{
    mf_dtype dt;
    MF_TRY(run_dtype(ctx, "fill", y, "fill y", &dt));
    MF_TRY(check_on(ctx, y, "fill y", dt));
    MF_DISPATCH_CUDA(ctx, fill, y, value);
    int64_t n = mf_tensor_numel(y);
    if (dt == MF_F64) {
        double *p = (double *)y->data;
#pragma omp parallel for schedule(static)
        for (int64_t i = 0; i < n; i++) p[i] = value;
    } else {
        float *p = (float *)y->data;
#pragma omp parallel for schedule(static)
        for (int64_t i = 0; i < n; i++) p[i] = value;
    }
    return MF_OK;
}

mf_status mf_convert(mf_ctx *ctx, mf_tensor *y, const mf_tensor *x)
{
    MF_REQUIRE(ctx, "convert: context is NULL");
    MF_REQUIRE(x && x->data, "convert: tensor x is missing");
    MF_REQUIRE(y && y->data, "convert: tensor y is missing");
    mf_dtype xt = x->dtype, yt = y->dtype;
    bool ok = (xt == MF_F32 && (yt == MF_BF16 || yt == MF_F32 || yt == MF_F64)) ||
              (xt == MF_BF16 && yt == MF_F32) || (xt == MF_F64 && (yt == MF_F32 || yt == MF_F64));
    MF_REQUIRE(ok,
               "convert: %s -> %s is not supported (f32 -> bf16/f32/f64, bf16 -> f32, "
               "f64 -> f32/f64)",
               mf_dtype_name(xt), mf_dtype_name(yt));
    if ((xt == MF_F64 || yt == MF_F64) && ctx->device != MF_DEV_CPU)
        return MF_ERROR(MF_ERR_UNSUPPORTED,
                        "convert: %s -> %s runs on the CPU only (the context is on cuda)",
                        mf_dtype_name(xt), mf_dtype_name(yt));
    MF_TRY(check_on(ctx, x, "convert x", xt));
    MF_TRY(check_on(ctx, y, "convert y", yt));
    MF_TRY(mf_check_same_shape(y, "convert y", x, "convert x"));
    MF_DISPATCH_CUDA(ctx, convert, y, x);
    int64_t n = mf_tensor_numel(x);
    if (xt == yt) {
        if (y->data != x->data) memmove(y->data, x->data, (size_t)n * mf_dtype_size(xt));
    } else if (xt == MF_F32 && yt == MF_BF16) {
        const float *s = (const float *)x->data;
        mf_bf16 *d = (mf_bf16 *)y->data;
#pragma omp parallel for schedule(static)
        for (int64_t i = 0; i < n; i++) d[i] = mf_f32_to_bf16(s[i]);
    } else if (xt == MF_BF16) {
        const mf_bf16 *s = (const mf_bf16 *)x->data;
        float *d = (float *)y->data;
#pragma omp parallel for schedule(static)
        for (int64_t i = 0; i < n; i++) d[i] = mf_bf16_to_f32(s[i]);
    } else if (xt == MF_F32) {
        const float *s = (const float *)x->data;
        double *d = (double *)y->data;
#pragma omp parallel for schedule(static)
        for (int64_t i = 0; i < n; i++) d[i] = s[i];
    } else {
        /* f64 -> f32 rounds to nearest (the C conversion under the default rounding mode) */
        const double *s = (const double *)x->data;
        float *d = (float *)y->data;
#pragma omp parallel for schedule(static)
        for (int64_t i = 0; i < n; i++) d[i] = (float)s[i];
    }
    return MF_OK;
}
