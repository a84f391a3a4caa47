/* Dropout masks drawn on the device from the same counter-based Philox stream as the host
 * (core/rng.h, shared as MF_HOSTDEV code): element i of a mask is keep-scaled or zero exactly as
 * mf_dropout_mask draws it on the CPU, so a run's masks are the same bits on either device. */
#include <math.h>

#include "core/cuda/cuda_internal.h"

extern "C" {
#include "core/rng.h"
}

__global__ static void dropout_mask_kernel(float *mask, int64_t n, float keep, float scale,
                                           uint64_t seed, uint64_t stream)
{
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        mask[i] = mf_rng_uniform(seed, stream, (uint64_t)i) < keep ? scale : 0.0f;
}

extern "C" mf_status mf_cuda_dropout_mask(mf_ctx *ctx, mf_tensor *mask, float keep, float scale,
                                          uint64_t seed, uint64_t stream)
{
    const char *op = "dropout_mask";
    MF_TRY(mf_cuda_check_ctx(ctx, op));
    MF_TRY(mf_cuda_check_dev(mask, op, "mask", MF_F32));
    const int64_t n = mf_tensor_numel(mask);
    if (n == 0) return MF_OK;
    dropout_mask_kernel<<<mf_cuda_blocks(n, MF_CUDA_THREADS), MF_CUDA_THREADS, 0,
                          ctx->cuda->stream>>>((float *)mask->data, n, keep, scale, seed, stream);
    MF_CUDA_CHECK_LAUNCH();
    return MF_OK;
}
