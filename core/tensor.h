/* A tensor is a dtype, a shape (up to 4 dims, row-major, contiguous), a device and a pointer.
 * Tensors never own memory: data comes from an arena (memopt/arena.h) or from a parameter store.
 * Views are pointer + shape. */
#ifndef MF_CORE_TENSOR_H
#define MF_CORE_TENSOR_H

#include <stdbool.h>
#include <stdint.h>

#include "core/dtype.h"
#include "core/status.h"

#define MF_MAX_DIMS 4

typedef enum { MF_DEV_CPU = 0, MF_DEV_CUDA = 1 } mf_device;

typedef struct {
    mf_dtype dtype;
    mf_device device;
    int ndim;
    int64_t shape[MF_MAX_DIMS];
    void *data;
} mf_tensor;

/* Builds a tensor header over existing memory; dims beyond ndim are ignored. */
mf_tensor mf_tensor_make(void *data, mf_dtype dtype, mf_device device, int ndim,
                         const int64_t *shape);
/* Convenience for 1..4 literal dims: mf_tensor_f32(p, 3, S, N, C) is a CPU f32 tensor. */
mf_tensor mf_tensor_4(void *data, mf_dtype dtype, mf_device device, int ndim, int64_t d0,
                      int64_t d1, int64_t d2, int64_t d3);
#define mf_tensor_f32(ptr, ndim, ...)                                                              \
    mf_tensor_make((ptr), MF_F32, MF_DEV_CPU, (ndim), (const int64_t[MF_MAX_DIMS]){__VA_ARGS__})

int64_t mf_tensor_numel(const mf_tensor *t);
size_t mf_tensor_bytes(const mf_tensor *t);
/* Product of all dims but the last (the "rows" of a row-wise op) and the last dim. */
int64_t mf_tensor_rows(const mf_tensor *t);
int64_t mf_tensor_cols(const mf_tensor *t);
bool mf_tensor_same_shape(const mf_tensor *a, const mf_tensor *b);
/* Same element count, new shape; fails if counts differ. */
mf_status mf_tensor_reshape(mf_tensor *out, const mf_tensor *t, int ndim, const int64_t *shape);
/* Sub-tensor of rows [start, start+count) along dim 0. */
mf_tensor mf_tensor_slice0(const mf_tensor *t, int64_t start, int64_t count);
/* "[4, 7, 32] f32" into buf; returns buf. */
const char *mf_tensor_describe(const mf_tensor *t, char *buf, size_t cap);

/* Shape/dtype checks for op entry points: fail with a message naming the tensor. */
mf_status mf_check_tensor(const mf_tensor *t, const char *name, mf_dtype dtype, int ndim);
mf_status mf_check_same_shape(const mf_tensor *a, const char *an, const mf_tensor *b,
                              const char *bn);

#endif
