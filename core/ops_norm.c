/* Layer norm and softmax entry points: argument checks, device dispatch, and on the CPU the
 * reference (core/ref), which is the CPU implementation of these row-wise ops: f32 tensors run
 * mf_ref_*_f32, f64 tensors (CPU only) mf_ref_*_f64. */
#include <math.h>

#include "core/ops_dispatch.h"
#include "core/ref/ref.h"

/* An optional tensor is absent when the pointer or its data is NULL (as in mf_attention_params). */
static const mf_tensor *present(const mf_tensor *t)
{
    return t && t->data ? t : NULL;
}

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

static mf_status check_on(const mf_ctx *ctx, const mf_tensor *t, const char *name, mf_dtype dtype,
                          int ndim)
{
    if (t && t->data && t->dtype != dtype && (t->dtype == MF_F32 || t->dtype == MF_F64) &&
        (dtype == MF_F32 || dtype == MF_F64)) {
        char b[96];
        return MF_ERROR(MF_ERR_INVALID,
                        "tensor %s is %s but this call runs in %s: f32 and f64 tensors cannot be "
                        "mixed in one call",
                        name, mf_tensor_describe(t, b, sizeof b), mf_dtype_name(dtype));
    }
    MF_TRY(mf_check_tensor(t, name, dtype, ndim));
    if (t->device != ctx->device) {
        char b[96];
        return MF_ERROR(MF_ERR_INVALID, "tensor %s is %s but the context is on %s", name,
                        mf_tensor_describe(t, b, sizeof b),
                        ctx->device == MF_DEV_CUDA ? "cuda" : "cpu");
    }
    return MF_OK;
}

static mf_status check_numel(const mf_tensor *t, const char *name, int64_t n, const char *what)
{
    if (mf_tensor_numel(t) != n) {
        char b[96];
        return MF_ERROR(MF_ERR_INVALID, "tensor %s is %s, expected %lld elements (%s)", name,
                        mf_tensor_describe(t, b, sizeof b), (long long)n, what);
    }
    return MF_OK;
}

static mf_status check_ln_forward(const mf_ctx *ctx, const mf_tensor *y, const mf_tensor *mean,
                                  const mf_tensor *rstd, const mf_tensor *x, const mf_tensor *gamma,
                                  const mf_tensor *beta, float eps, mf_dtype *dtp)
{
    MF_TRY(run_dtype(ctx, "layer_norm_forward", x, "layer_norm x", dtp));
    mf_dtype dt = *dtp;
    MF_TRY(check_on(ctx, x, "layer_norm x", dt, 0));
    MF_REQUIRE(x->ndim >= 1, "layer_norm_forward: x must have at least one dim");
    MF_TRY(check_on(ctx, y, "layer_norm y", dt, 0));
    MF_TRY(mf_check_same_shape(y, "layer_norm y", x, "layer_norm x"));
    int64_t C = mf_tensor_cols(x), rows = mf_tensor_rows(x);
    MF_TRY(check_on(ctx, gamma, "layer_norm gamma (scale)", dt, 0));
    MF_TRY(check_numel(gamma, "layer_norm gamma (scale)", C, "the last dim of x"));
    MF_TRY(check_on(ctx, beta, "layer_norm beta (offset)", dt, 0));
    MF_TRY(check_numel(beta, "layer_norm beta (offset)", C, "the last dim of x"));
    if (present(mean)) {
        MF_TRY(check_on(ctx, mean, "layer_norm mean", dt, 0));
        MF_TRY(check_numel(mean, "layer_norm mean", rows, "one per row of x"));
    }
    if (present(rstd)) {
        MF_TRY(check_on(ctx, rstd, "layer_norm rstd", dt, 0));
        MF_TRY(check_numel(rstd, "layer_norm rstd", rows, "one per row of x"));
    }
    MF_REQUIRE(eps >= 0.0f && isfinite(eps), "layer_norm_forward: eps = %g must be finite and >= 0",
               (double)eps);
    return MF_OK;
}

mf_status mf_layer_norm_forward(mf_ctx *ctx, mf_tensor *y, mf_tensor *mean, mf_tensor *rstd,
                                const mf_tensor *x, const mf_tensor *gamma, const mf_tensor *beta,
                                float eps)
{
    mf_dtype dt;
    MF_TRY(check_ln_forward(ctx, y, mean, rstd, x, gamma, beta, eps, &dt));
    mean = present_out(mean);
    rstd = present_out(rstd);
    MF_DISPATCH_CUDA(ctx, layer_norm_forward, y, mean, rstd, x, gamma, beta, eps);
    if (dt == MF_F64)
        mf_ref_layer_norm_forward_f64((double *)y->data, mean ? (double *)mean->data : NULL,
                                      rstd ? (double *)rstd->data : NULL, (const double *)x->data,
                                      (const double *)gamma->data, (const double *)beta->data,
                                      mf_tensor_rows(x), mf_tensor_cols(x), eps);
    else
        mf_ref_layer_norm_forward_f32((float *)y->data, mean ? (float *)mean->data : NULL,
                                      rstd ? (float *)rstd->data : NULL, (const float *)x->data,
                                      (const float *)gamma->data, (const float *)beta->data,
                                      mf_tensor_rows(x), mf_tensor_cols(x), eps);
    return MF_OK;
}

static mf_status check_ln_backward(const mf_ctx *ctx, const mf_tensor *dx, const mf_tensor *dgamma,
                                   const mf_tensor *dbeta, const mf_tensor *dy, const mf_tensor *x,
                                   const mf_tensor *mean, const mf_tensor *rstd,
                                   const mf_tensor *gamma, mf_dtype *dtp)
{
    MF_TRY(run_dtype(ctx, "layer_norm_backward", x, "layer_norm x", dtp));
    mf_dtype dt = *dtp;
    MF_TRY(check_on(ctx, x, "layer_norm x", dt, 0));
    MF_REQUIRE(x->ndim >= 1, "layer_norm_backward: x must have at least one dim");
    MF_TRY(check_on(ctx, dy, "layer_norm dy", dt, 0));
    MF_TRY(mf_check_same_shape(dy, "layer_norm dy", x, "layer_norm x"));
    int64_t C = mf_tensor_cols(x), rows = mf_tensor_rows(x);
    /* eps is not an argument here: the saved statistics are required. */
    MF_TRY(check_on(ctx, mean, "layer_norm mean (saved by forward)", dt, 0));
    MF_TRY(check_numel(mean, "layer_norm mean", rows, "one per row of x"));
    MF_TRY(check_on(ctx, rstd, "layer_norm rstd (saved by forward)", dt, 0));
    MF_TRY(check_numel(rstd, "layer_norm rstd", rows, "one per row of x"));
    MF_TRY(check_on(ctx, gamma, "layer_norm gamma (scale)", dt, 0));
    MF_TRY(check_numel(gamma, "layer_norm gamma (scale)", C, "the last dim of x"));
    if (present(dx)) {
        MF_TRY(check_on(ctx, dx, "layer_norm dx", dt, 0));
        MF_TRY(mf_check_same_shape(dx, "layer_norm dx", x, "layer_norm x"));
    }
    if (present(dgamma)) {
        MF_TRY(check_on(ctx, dgamma, "layer_norm dgamma", dt, 0));
        MF_TRY(check_numel(dgamma, "layer_norm dgamma", C, "the last dim of x"));
    }
    if (present(dbeta)) {
        MF_TRY(check_on(ctx, dbeta, "layer_norm dbeta", dt, 0));
        MF_TRY(check_numel(dbeta, "layer_norm dbeta", C, "the last dim of x"));
    }
    return MF_OK;
}

mf_status mf_layer_norm_backward(mf_ctx *ctx, mf_tensor *dx, mf_tensor *dgamma, mf_tensor *dbeta,
                                 const mf_tensor *dy, const mf_tensor *x, const mf_tensor *mean,
                                 const mf_tensor *rstd, const mf_tensor *gamma)
{
    mf_dtype dt;
    MF_TRY(check_ln_backward(ctx, dx, dgamma, dbeta, dy, x, mean, rstd, gamma, &dt));
    dx = present_out(dx);
    dgamma = present_out(dgamma);
    dbeta = present_out(dbeta);
    MF_DISPATCH_CUDA(ctx, layer_norm_backward, dx, dgamma, dbeta, dy, x, mean, rstd, gamma);
    if (dt == MF_F64)
        mf_ref_layer_norm_backward_f64(
            dx ? (double *)dx->data : NULL, dgamma ? (double *)dgamma->data : NULL,
            dbeta ? (double *)dbeta->data : NULL, (const double *)dy->data, (const double *)x->data,
            (const double *)mean->data, (const double *)rstd->data, (const double *)gamma->data,
            mf_tensor_rows(x), mf_tensor_cols(x));
    else
        mf_ref_layer_norm_backward_f32(
            dx ? (float *)dx->data : NULL, dgamma ? (float *)dgamma->data : NULL,
            dbeta ? (float *)dbeta->data : NULL, (const float *)dy->data, (const float *)x->data,
            (const float *)mean->data, (const float *)rstd->data, (const float *)gamma->data,
            mf_tensor_rows(x), mf_tensor_cols(x));
    return MF_OK;
}

/* bias must be [H, Q, K] of x [B, H, Q, K]; mask [B, K]. */
static mf_status check_bias_mask(const mf_ctx *ctx, const mf_tensor *x, const mf_tensor *bias,
                                 const mf_tensor *mask, const char *bias_name)
{
    char a[96], b[96];
    mf_dtype dt = x->dtype;
    if (present(bias)) {
        MF_TRY(check_on(ctx, bias, bias_name, dt, 3));
        if (bias->shape[0] != x->shape[1] || bias->shape[1] != x->shape[2] ||
            bias->shape[2] != x->shape[3])
            return MF_ERROR(MF_ERR_INVALID,
                            "softmax %s is %s, expected [H, Q, K] of logits %s [B, H, Q, K]",
                            bias_name, mf_tensor_describe(bias, a, sizeof a),
                            mf_tensor_describe(x, b, sizeof b));
    }
    if (present(mask)) {
        MF_TRY(check_on(ctx, mask, "softmax mask", dt, 2));
        if (mask->shape[0] != x->shape[0] || mask->shape[1] != x->shape[3])
            return MF_ERROR(
                MF_ERR_INVALID, "softmax mask is %s, expected [B, K] of logits %s [B, H, Q, K]",
                mf_tensor_describe(mask, a, sizeof a), mf_tensor_describe(x, b, sizeof b));
    }
    return MF_OK;
}

mf_status mf_softmax_forward(mf_ctx *ctx, mf_tensor *y, const mf_tensor *x, const mf_tensor *bias,
                             const mf_tensor *mask)
{
    mf_dtype dt;
    MF_TRY(run_dtype(ctx, "softmax_forward", x, "softmax x (logits)", &dt));
    MF_TRY(check_on(ctx, x, "softmax x (logits)", dt, 4));
    MF_TRY(check_on(ctx, y, "softmax y", dt, 4));
    MF_TRY(mf_check_same_shape(y, "softmax y", x, "softmax x"));
    MF_TRY(check_bias_mask(ctx, x, bias, mask, "bias"));
    bias = present(bias);
    mask = present(mask);
    MF_DISPATCH_CUDA(ctx, softmax_forward, y, x, bias, mask);
    if (dt == MF_F64)
        mf_ref_softmax_forward_f64((double *)y->data, (const double *)x->data,
                                   bias ? (const double *)bias->data : NULL,
                                   mask ? (const double *)mask->data : NULL, x->shape[0],
                                   x->shape[1], x->shape[2], x->shape[3]);
    else
        mf_ref_softmax_forward_f32((float *)y->data, (const float *)x->data,
                                   bias ? (const float *)bias->data : NULL,
                                   mask ? (const float *)mask->data : NULL, x->shape[0],
                                   x->shape[1], x->shape[2], x->shape[3]);
    return MF_OK;
}

mf_status mf_softmax_backward(mf_ctx *ctx, mf_tensor *dx, mf_tensor *dbias, const mf_tensor *dy,
                              const mf_tensor *y)
{
    mf_dtype dt;
    MF_TRY(run_dtype(ctx, "softmax_backward", y, "softmax y (forward output)", &dt));
    MF_TRY(check_on(ctx, y, "softmax y (forward output)", dt, 4));
    MF_TRY(check_on(ctx, dy, "softmax dy", dt, 4));
    MF_TRY(mf_check_same_shape(dy, "softmax dy", y, "softmax y"));
    if (present(dx)) {
        MF_TRY(check_on(ctx, dx, "softmax dx", dt, 4));
        MF_TRY(mf_check_same_shape(dx, "softmax dx", y, "softmax y"));
    }
    MF_TRY(check_bias_mask(ctx, y, dbias, NULL, "dbias"));
    dx = present_out(dx);
    dbias = present_out(dbias);
    MF_DISPATCH_CUDA(ctx, softmax_backward, dx, dbias, dy, y);
    if (dt == MF_F64)
        mf_ref_softmax_backward_f64(dx ? (double *)dx->data : NULL,
                                    dbias ? (double *)dbias->data : NULL, (const double *)dy->data,
                                    (const double *)y->data, y->shape[0], y->shape[1], y->shape[2],
                                    y->shape[3]);
    else
        mf_ref_softmax_backward_f32(dx ? (float *)dx->data : NULL,
                                    dbias ? (float *)dbias->data : NULL, (const float *)dy->data,
                                    (const float *)y->data, y->shape[0], y->shape[1], y->shape[2],
                                    y->shape[3]);
    return MF_OK;
}
