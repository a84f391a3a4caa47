#include "core/tensor.h"

#include <stdio.h>

mf_tensor mf_tensor_make(void *data, mf_dtype dtype, mf_device device, int ndim,
                         const int64_t *shape)
{
    mf_tensor t = {.dtype = dtype, .device = device, .ndim = ndim, .data = data};
    for (int i = 0; i < MF_MAX_DIMS; i++) t.shape[i] = i < ndim ? shape[i] : 1;
    return t;
}

mf_tensor mf_tensor_4(void *data, mf_dtype dtype, mf_device device, int ndim, int64_t d0,
                      int64_t d1, int64_t d2, int64_t d3)
{
    int64_t s[4] = {d0, d1, d2, d3};
    return mf_tensor_make(data, dtype, device, ndim, s);
}

int64_t mf_tensor_numel(const mf_tensor *t)
{
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
    return n;
}

size_t mf_tensor_bytes(const mf_tensor *t)
{
    return (size_t)mf_tensor_numel(t) * mf_dtype_size(t->dtype);
}

int64_t mf_tensor_cols(const mf_tensor *t)
{
    return t->ndim > 0 ? t->shape[t->ndim - 1] : 1;
}

int64_t mf_tensor_rows(const mf_tensor *t)
{
    int64_t c = mf_tensor_cols(t);
    return c ? mf_tensor_numel(t) / c : 0;
}

bool mf_tensor_same_shape(const mf_tensor *a, const mf_tensor *b)
{
    if (a->ndim != b->ndim) return false;
    for (int i = 0; i < a->ndim; i++)
        if (a->shape[i] != b->shape[i]) return false;
    return true;
}

mf_status mf_tensor_reshape(mf_tensor *out, const mf_tensor *t, int ndim, const int64_t *shape)
{
    MF_REQUIRE(ndim >= 1 && ndim <= MF_MAX_DIMS, "reshape to %d dims (1..%d allowed)", ndim,
               MF_MAX_DIMS);
    mf_tensor r = mf_tensor_make(t->data, t->dtype, t->device, ndim, shape);
    if (mf_tensor_numel(&r) != mf_tensor_numel(t)) {
        char a[96], b[96];
        return MF_ERROR(MF_ERR_INVALID, "reshape %s to %s changes the element count",
                        mf_tensor_describe(t, a, sizeof a), mf_tensor_describe(&r, b, sizeof b));
    }
    *out = r;
    return MF_OK;
}

mf_tensor mf_tensor_slice0(const mf_tensor *t, int64_t start, int64_t count)
{
    mf_tensor s = *t;
    int64_t inner = t->shape[0] ? mf_tensor_numel(t) / t->shape[0] : 0;
    s.shape[0] = count;
    s.data = (char *)t->data + (size_t)(start * inner) * mf_dtype_size(t->dtype);
    return s;
}

const char *mf_tensor_describe(const mf_tensor *t, char *buf, size_t cap)
{
    size_t n = 0;
    n += (size_t)snprintf(buf + n, cap - n, "[");
    for (int i = 0; i < t->ndim && n < cap; i++)
        n += (size_t)snprintf(buf + n, cap - n, i ? ", %lld" : "%lld", (long long)t->shape[i]);
    if (n < cap)
        snprintf(buf + n, cap - n, "] %s%s", mf_dtype_name(t->dtype),
                 t->device == MF_DEV_CUDA ? " cuda" : "");
    return buf;
}

mf_status mf_check_tensor(const mf_tensor *t, const char *name, mf_dtype dtype, int ndim)
{
    if (!t || !t->data) return MF_ERROR(MF_ERR_INVALID, "tensor %s is missing", name);
    if (t->dtype != dtype) {
        return MF_ERROR(MF_ERR_INVALID, "tensor %s has dtype %s, expected %s", name,
                        mf_dtype_name(t->dtype), mf_dtype_name(dtype));
    }
    if (ndim > 0 && t->ndim != ndim) {
        char b[96];
        return MF_ERROR(MF_ERR_INVALID, "tensor %s is %s, expected %d dims", name,
                        mf_tensor_describe(t, b, sizeof b), ndim);
    }
    return MF_OK;
}

mf_status mf_check_same_shape(const mf_tensor *a, const char *an, const mf_tensor *b,
                              const char *bn)
{
    if (!mf_tensor_same_shape(a, b)) {
        char x[96], y[96];
        return MF_ERROR(MF_ERR_INVALID, "shape mismatch: %s is %s but %s is %s", an,
                        mf_tensor_describe(a, x, sizeof x), bn, mf_tensor_describe(b, y, sizeof y));
    }
    return MF_OK;
}
