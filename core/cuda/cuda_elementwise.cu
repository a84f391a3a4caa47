/* Element-wise ops on the device: activations, add/mul with trailing broadcast and their
 * gradients, scale, axpy, fill, f32 <-> bf16 conversion. Grid-stride loops over int64 indices. */
#include "core/cuda/cuda_reduce.cuh"

/* ---- activations ---------------------------------------------------------------------------- */

/* sigmoid as the CPU forms it (core/ref/elementwise.inc): exp only of a non-positive argument. */
__device__ static inline float sigmoid_f(float x)
{
    if (x >= 0.0f) return 1.0f / (1.0f + expf(-x));
    const float e = expf(x);
    return e / (1.0f + e);
}

/* log(1 + e^x) without overflow for large x or loss of the small term for very negative x. */
__device__ static inline float softplus_f(float x)
{
    return x > 0.0f ? x + log1pf(expf(-x)) : log1pf(expf(x));
}

__global__ static void act_forward_kernel(int act, float *y, const float *x, int64_t n)
{
    MF_GRID_LOOP(i, n)
    {
        const float v = x[i];
        float r;
        if (act == MF_ACT_RELU)
            r = v > 0.0f ? v : 0.0f;
        else if (act == MF_ACT_SIGMOID)
            r = sigmoid_f(v);
        else
            r = softplus_f(v);
        y[i] = r;
    }
}

__global__ static void act_backward_kernel(int act, float *dx, const float *dy, const float *x,
                                           int64_t n)
{
    MF_GRID_LOOP(i, n)
    {
        const float v = x[i];
        float d;
        if (act == MF_ACT_RELU) {
            d = v > 0.0f ? dy[i] : 0.0f;
        } else if (act == MF_ACT_SIGMOID) {
            /* s(x) s(-x), not s (1 - s), which is 0 once s rounds to 1 (as the CPU) */
            d = sigmoid_f(v) * sigmoid_f(-v) * dy[i];
        } else {
            d = sigmoid_f(v) * dy[i]; /* softplus' = sigmoid */
        }
        dx[i] += d;
    }
}

static mf_status check_act(mf_activation act, const char *op)
{
    MF_REQUIRE(act == MF_ACT_RELU || act == MF_ACT_SIGMOID || act == MF_ACT_SOFTPLUS,
               "%s: unknown activation %d", op, (int)act);
    return MF_OK;
}

extern "C" mf_status mf_cuda_activation_forward(mf_ctx *ctx, mf_activation act, mf_tensor *y,
                                                const mf_tensor *x)
{
    const char *op = "activation_forward";
    MF_TRY(mf_cuda_check_ctx(ctx, op));
    MF_TRY(check_act(act, op));
    MF_TRY(mf_cuda_check_dev(y, op, "y", MF_F32));
    MF_TRY(mf_cuda_check_dev(x, op, "x", MF_F32));
    const int64_t n = mf_tensor_numel(x);
    MF_TRY(mf_cuda_check_numel(y, "y", n, op));
    MF_LAUNCH(act_forward_kernel, n, (int)act, (float *)y->data, (const float *)x->data, n);
    return MF_OK;
}

extern "C" mf_status mf_cuda_activation_backward(mf_ctx *ctx, mf_activation act, mf_tensor *dx,
                                                 const mf_tensor *dy, const mf_tensor *x)
{
    const char *op = "activation_backward";
    MF_TRY(mf_cuda_check_ctx(ctx, op));
    MF_TRY(check_act(act, op));
    if (!dx) return MF_OK;
    MF_TRY(mf_cuda_check_dev(dx, op, "dx", MF_F32));
    MF_TRY(mf_cuda_check_dev(dy, op, "dy", MF_F32));
    MF_TRY(mf_cuda_check_dev(x, op, "x", MF_F32));
    const int64_t n = mf_tensor_numel(x);
    MF_TRY(mf_cuda_check_numel(dx, "dx", n, op));
    MF_TRY(mf_cuda_check_numel(dy, "dy", n, op));
    MF_LAUNCH(act_backward_kernel, n, (int)act, (float *)dx->data, (const float *)dy->data,
              (const float *)x->data, n);
    return MF_OK;
}

/* ---- add, mul and their gradients ----------------------------------------------------------- */

__global__ static void add_kernel(float *y, const float *a, const float *b, int64_t n, int64_t nb)
{
    MF_GRID_LOOP(i, n) y[i] = a[i] + b[i % nb];
}

__global__ static void mul_kernel(float *y, const float *a, const float *b, int64_t n, int64_t nb)
{
    MF_GRID_LOOP(i, n) y[i] = a[i] * b[i % nb];
}

/* dst[i] += dy[i] * f[i % nf] */
__global__ static void mul_acc_kernel(float *dst, const float *dy, const float *f, int64_t n,
                                      int64_t nf)
{
    MF_GRID_LOOP(i, n) dst[i] += dy[i] * f[i % nf];
}

__global__ static void axpy_kernel(float *y, float alpha, const float *x, int64_t n)
{
    MF_GRID_LOOP(i, n) y[i] += alpha * x[i];
}

__global__ static void scale_kernel(float *y, const float *x, float alpha, int64_t n)
{
    MF_GRID_LOOP(i, n) y[i] = alpha * x[i];
}

__global__ static void fill_kernel(float *y, float v, int64_t n)
{
    MF_GRID_LOOP(i, n) y[i] = v;
}

__global__ static void f32_to_bf16_kernel(mf_bf16 *y, const float *x, int64_t n)
{
    MF_GRID_LOOP(i, n) y[i] = mf_f32_to_bf16(x[i]);
}

__global__ static void bf16_to_f32_kernel(float *y, const mf_bf16 *x, int64_t n)
{
    MF_GRID_LOOP(i, n) y[i] = mf_bf16_to_f32(x[i]);
}

mf_status mf_cuda_add_raw(mf_ctx *ctx, float *y, const float *a, const float *b, int64_t n,
                          int64_t nb)
{
    MF_LAUNCH(add_kernel, n, y, a, b, n, nb);
    return MF_OK;
}

mf_status mf_cuda_axpy_raw(mf_ctx *ctx, float *y, float alpha, const float *x, int64_t n)
{
    MF_LAUNCH(axpy_kernel, n, y, alpha, x, n);
    return MF_OK;
}

mf_status mf_cuda_scale_inplace_raw(mf_ctx *ctx, float *y, float alpha, int64_t n)
{
    if (alpha == 0.0f)
        MF_LAUNCH(fill_kernel, n, y, 0.0f, n);
    else
        MF_LAUNCH(scale_kernel, n, y, y, alpha, n);
    return MF_OK;
}

mf_status mf_cuda_convert_raw(mf_ctx *ctx, void *y, mf_dtype yt, const void *x, mf_dtype xt,
                              int64_t n)
{
    if (n == 0) return MF_OK;
    if (yt == xt) {
        MF_REQUIRE(yt == MF_F32 || yt == MF_BF16, "convert of dtype %s", mf_dtype_name(yt));
        if (y != x)
            MF_CUDA_CHECK(cudaMemcpyAsync(y, x, (size_t)n * mf_dtype_size(yt),
                                          cudaMemcpyDeviceToDevice, ctx->cuda->stream));
        return MF_OK;
    }
    if (xt == MF_F32 && yt == MF_BF16) {
        MF_LAUNCH(f32_to_bf16_kernel, n, (mf_bf16 *)y, (const float *)x, n);
        return MF_OK;
    }
    if (xt == MF_BF16 && yt == MF_F32) {
        MF_LAUNCH(bf16_to_f32_kernel, n, (float *)y, (const mf_bf16 *)x, n);
        return MF_OK;
    }
    return MF_ERROR(MF_ERR_UNSUPPORTED, "convert from %s to %s", mf_dtype_name(xt),
                    mf_dtype_name(yt));
}

/* b broadcasts over a's leading dims by the CPU's rule (core/shape_rules.h); b's element count,
 * which the kernels repeat every nb elements of a. */
static mf_status check_broadcast(const mf_tensor *a, const mf_tensor *b, const char *op,
                                 int64_t *nb_out)
{
    mf_status st = mf_check_broadcast(a, "a", b, "b");
    if (st != MF_OK) return mf_error_context(st, "%s", op);
    *nb_out = mf_tensor_numel(b);
    return MF_OK;
}

static mf_status binary_op(mf_ctx *ctx, mf_tensor *y, const mf_tensor *a, const mf_tensor *b,
                           bool mul)
{
    const char *op = mul ? "mul" : "add";
    MF_TRY(mf_cuda_check_ctx(ctx, op));
    MF_TRY(mf_cuda_check_dev(y, op, "y", MF_F32));
    MF_TRY(mf_cuda_check_dev(a, op, "a", MF_F32));
    MF_TRY(mf_cuda_check_dev(b, op, "b", MF_F32));
    const int64_t n = mf_tensor_numel(a);
    int64_t nb = 0;
    MF_TRY(check_broadcast(a, b, op, &nb));
    MF_TRY(mf_cuda_check_numel(y, "y", n, op));
    if (mul)
        MF_LAUNCH(mul_kernel, n, (float *)y->data, (const float *)a->data, (const float *)b->data,
                  n, nb);
    else
        MF_LAUNCH(add_kernel, n, (float *)y->data, (const float *)a->data, (const float *)b->data,
                  n, nb);
    return MF_OK;
}

extern "C" mf_status mf_cuda_add(mf_ctx *ctx, mf_tensor *y, const mf_tensor *a, const mf_tensor *b)
{
    return binary_op(ctx, y, a, b, false);
}

extern "C" mf_status mf_cuda_mul(mf_ctx *ctx, mf_tensor *y, const mf_tensor *a, const mf_tensor *b)
{
    return binary_op(ctx, y, a, b, true);
}

/* Terms of a broadcast operand's gradient: dy[k, i] * f[k, i] over the [n / nb, nb] view. */
struct mul_grad_terms {
    const float *dy, *f;
    int64_t nb;
    __device__ float operator()(int64_t, int64_t k, int64_t i) const
    {
        return dy[k * nb + i] * f[k * nb + i];
    }
};

extern "C" mf_status mf_cuda_add_backward(mf_ctx *ctx, mf_tensor *da, mf_tensor *db,
                                          const mf_tensor *dy)
{
    const char *op = "add_backward";
    MF_TRY(mf_cuda_check_ctx(ctx, op));
    MF_TRY(mf_cuda_check_dev(dy, op, "dy", MF_F32));
    const int64_t n = mf_tensor_numel(dy);
    if (da) {
        MF_TRY(mf_cuda_check_dev(da, op, "da", MF_F32));
        MF_TRY(mf_cuda_check_numel(da, "da", n, op));
        MF_LAUNCH(axpy_kernel, n, (float *)da->data, 1.0f, (const float *)dy->data, n);
    }
    if (db) {
        MF_TRY(mf_cuda_check_dev(db, op, "db", MF_F32));
        int64_t nb = 0;
        MF_TRY(check_broadcast(dy, db, op, &nb));
        if (nb == n) {
            MF_LAUNCH(axpy_kernel, n, (float *)db->data, 1.0f, (const float *)dy->data, n);
        } else if (nb > 0) {
            mf_colsum_plain f = {(const float *)dy->data, n / nb, nb};
            MF_TRY(mf_cuda_colsum(ctx, (float *)db->data, f, 1, n / nb, nb, 1.0f, true));
        }
    }
    return MF_OK;
}

extern "C" mf_status mf_cuda_mul_backward(mf_ctx *ctx, mf_tensor *da, mf_tensor *db,
                                          const mf_tensor *dy, const mf_tensor *a,
                                          const mf_tensor *b)
{
    const char *op = "mul_backward";
    MF_TRY(mf_cuda_check_ctx(ctx, op));
    MF_TRY(mf_cuda_check_dev(dy, op, "dy", MF_F32));
    MF_TRY(mf_cuda_check_dev(a, op, "a", MF_F32));
    MF_TRY(mf_cuda_check_dev(b, op, "b", MF_F32));
    const int64_t n = mf_tensor_numel(a);
    int64_t nb = 0;
    MF_TRY(check_broadcast(a, b, op, &nb));
    MF_TRY(mf_cuda_check_numel(dy, "dy", n, op));
    if (da) {
        MF_TRY(mf_cuda_check_dev(da, op, "da", MF_F32));
        MF_TRY(mf_cuda_check_numel(da, "da", n, op));
        MF_LAUNCH(mul_acc_kernel, n, (float *)da->data, (const float *)dy->data,
                  (const float *)b->data, n, nb);
    }
    if (db) {
        MF_TRY(mf_cuda_check_dev(db, op, "db", MF_F32));
        MF_TRY(mf_cuda_check_numel(db, "db", nb, op));
        if (nb == n) {
            MF_LAUNCH(mul_acc_kernel, n, (float *)db->data, (const float *)dy->data,
                      (const float *)a->data, n, n);
        } else if (nb > 0) {
            mul_grad_terms f = {(const float *)dy->data, (const float *)a->data, nb};
            MF_TRY(mf_cuda_colsum(ctx, (float *)db->data, f, 1, n / nb, nb, 1.0f, true));
        }
    }
    return MF_OK;
}

/* ---- scale, axpy, fill, convert ------------------------------------------------------------- */

extern "C" mf_status mf_cuda_scale(mf_ctx *ctx, mf_tensor *y, const mf_tensor *x, float alpha)
{
    const char *op = "scale";
    MF_TRY(mf_cuda_check_ctx(ctx, op));
    MF_TRY(mf_cuda_check_dev(y, op, "y", MF_F32));
    MF_TRY(mf_cuda_check_dev(x, op, "x", MF_F32));
    const int64_t n = mf_tensor_numel(x);
    MF_TRY(mf_cuda_check_numel(y, "y", n, op));
    MF_LAUNCH(scale_kernel, n, (float *)y->data, (const float *)x->data, alpha, n);
    return MF_OK;
}

extern "C" mf_status mf_cuda_axpy(mf_ctx *ctx, mf_tensor *y, float alpha, const mf_tensor *x)
{
    const char *op = "axpy";
    MF_TRY(mf_cuda_check_ctx(ctx, op));
    MF_TRY(mf_cuda_check_dev(y, op, "y", MF_F32));
    MF_TRY(mf_cuda_check_dev(x, op, "x", MF_F32));
    const int64_t n = mf_tensor_numel(x);
    MF_TRY(mf_cuda_check_numel(y, "y", n, op));
    MF_LAUNCH(axpy_kernel, n, (float *)y->data, alpha, (const float *)x->data, n);
    return MF_OK;
}

extern "C" mf_status mf_cuda_fill(mf_ctx *ctx, mf_tensor *y, float value)
{
    const char *op = "fill";
    MF_TRY(mf_cuda_check_ctx(ctx, op));
    MF_TRY(mf_cuda_check_dev(y, op, "y", MF_F32));
    const int64_t n = mf_tensor_numel(y);
    MF_LAUNCH(fill_kernel, n, (float *)y->data, value, n);
    return MF_OK;
}

extern "C" mf_status mf_cuda_convert(mf_ctx *ctx, mf_tensor *y, const mf_tensor *x)
{
    const char *op = "convert";
    MF_TRY(mf_cuda_check_ctx(ctx, op));
    MF_TRY(mf_cuda_check_dev(y, op, "y", y ? y->dtype : MF_F32));
    MF_TRY(mf_cuda_check_dev(x, op, "x", x ? x->dtype : MF_F32));
    MF_TRY(mf_check_same_shape(y, "y", x, "x"));
    return mf_cuda_convert_raw(ctx, y->data, y->dtype, x->data, x->dtype, mf_tensor_numel(x));
}
