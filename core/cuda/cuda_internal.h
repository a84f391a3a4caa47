/* Internal to the .cu files of core/cuda (C++ as compiled by nvcc): the CUDA state behind mf_ctx,
 * argument checks shared by the op twins, launch helpers. The core's C headers are wrapped in
 * extern "C" so the CUDA objects link against the C library. */
#ifndef MF_CORE_CUDA_CUDA_INTERNAL_H
#define MF_CORE_CUDA_CUDA_INTERNAL_H

/* System headers first, outside extern "C", so the wrapped core headers find them included. */
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>

extern "C" {
#include "core/context.h"
#include "core/dtype.h"
#include "core/ops.h"
#include "core/shape_rules.h"
#include "core/status.h"
#include "core/tensor.h"
#include "memopt/arena.h"
}

#include "core/cuda/cuda_backend.h"
#include "core/cuda/cuda_check.h"
#include "core/cuda/cuda_ops.h"

struct mf_cuda_state {
    int device;
    int sm_count;
    /* A blocking stream (not cudaStreamNonBlocking): the synchronous copies in cuda_backend.h run
     * on the legacy default stream, which then waits for every op queued here. */
    cudaStream_t stream;
    cublasHandle_t cublas;
    cublasLtHandle_t cublaslt;
    /* cuBLAS's workspace, allocated once so that no hidden allocation happens inside an op and
     * the device's memory use stays the arena's plus this fixed amount. */
    void *cublas_workspace;
    size_t cublas_workspace_bytes;
};

/* Threads per block of the element-wise and row-wise kernels. */
#define MF_CUDA_THREADS 256
/* Rows per block of the warp-per-row kernels (layer norm, softmax). */
#define MF_CUDA_WARPS (MF_CUDA_THREADS / 32)

/* Context checks: device CUDA, state created, arena on the device. */
mf_status mf_cuda_check_ctx(const mf_ctx *ctx, const char *op);
/* Tensor checks: present, on the CUDA device, of dtype `dtype`. */
mf_status mf_cuda_check_dev(const mf_tensor *t, const char *op, const char *name, mf_dtype dtype);
/* Tensor tn has n elements (its shape may differ: views). */
mf_status mf_cuda_check_numel(const mf_tensor *t, const char *tn, int64_t n, const char *op);

/* Blocks for a grid-stride loop over n items (at least 1, capped so launches stay cheap). */
static inline unsigned mf_cuda_blocks(int64_t n, int threads)
{
    int64_t b = (n + threads - 1) / threads;
    if (b < 1) b = 1;
    if (b > 65536) b = 65536;
    return (unsigned)b;
}

/* A grid-stride loop of index i over [0, n) (int64, any grid size). */
#define MF_GRID_LOOP(i, n)                                                                         \
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n);                      \
         i += (int64_t)gridDim.x * blockDim.x)

/* kernel<<<blocks for n items, MF_CUDA_THREADS, 0, ctx's stream>>>(...) and the launch check;
 * nothing when n is 0 (the caller's scope has `ctx`). */
#define MF_LAUNCH(kernel, n, ...)                                                                  \
    do {                                                                                           \
        if ((n) > 0) {                                                                             \
            kernel<<<mf_cuda_blocks((n), MF_CUDA_THREADS), MF_CUDA_THREADS, 0,                     \
                     ctx->cuda->stream>>>(__VA_ARGS__);                                            \
            MF_CUDA_CHECK_LAUNCH();                                                                \
        }                                                                                          \
    } while (0)

/* bias [H, Q, K] and mask [B, K] of the attention-style ops (softmax, attention), each optional:
 * f32 device tensors of those sizes. */
mf_status mf_cuda_check_bias_mask(const char *op, const mf_tensor *bias, const mf_tensor *mask,
                                  int64_t B, int64_t H, int64_t Q, int64_t K);

/* Converts x (f32 or bf16, n elements, on the device) to `want` in arena scratch, or returns
 * x->data unchanged when it already has that dtype. The scratch lives until the caller releases
 * its arena mark. */
mf_status mf_cuda_operand(mf_ctx *ctx, const mf_tensor *x, mf_dtype want, const void **out);

/* The dtype matrix products read: bf16 when the policy says so, else f32. */
static inline mf_dtype mf_cuda_compute_dtype(const mf_ctx *ctx)
{
    return ctx->policy.compute == MF_BF16 ? MF_BF16 : MF_F32;
}

/* Row-major c[i] = alpha op(a[i]) op(b[i]) + beta c[i] for i < batch, c f32 [batch, M, N];
 * a [M, K] ([K, M] when ta), b [K, N] ([N, K] when tb), both of dtype dt (f32 or bf16) with
 * batch strides 0 when batch_a / batch_b is 1; f32 accumulation. */
mf_status mf_cuda_gemm(mf_ctx *ctx, float *c, const void *a, bool ta, const void *b, bool tb,
                       mf_dtype dt, int64_t batch, int64_t batch_a, int64_t batch_b, int64_t M,
                       int64_t N, int64_t K, float alpha, float beta);

/* Element-wise helpers shared by several ops (cuda_elementwise.cu). */
/* y[i] = a[i] + b[i % nb] */
mf_status mf_cuda_add_raw(mf_ctx *ctx, float *y, const float *a, const float *b, int64_t n,
                          int64_t nb);
/* y[i] += alpha * x[i] */
mf_status mf_cuda_axpy_raw(mf_ctx *ctx, float *y, float alpha, const float *x, int64_t n);
/* y[i] = alpha * y[i] (alpha 0 writes exact zeros, even over NaN) */
mf_status mf_cuda_scale_inplace_raw(mf_ctx *ctx, float *y, float alpha, int64_t n);
mf_status mf_cuda_convert_raw(mf_ctx *ctx, void *y, mf_dtype yt, const void *x, mf_dtype xt,
                              int64_t n);

#endif
