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
    MF_GRID_LOOP(i, n)
    {
        mask[i] = mf_rng_uniform(seed, stream, (uint64_t)i) < keep ? scale : 0.0f;
    }
}

extern "C" mf_status mf_cuda_dropout_mask(mf_ctx *ctx, mf_tensor *mask, float keep, float scale,
                                          uint64_t seed, uint64_t stream)
{
    const char *op = "dropout_mask";
    MF_TRY(mf_cuda_check_ctx(ctx, op));
    MF_TRY(mf_cuda_check_dev(mask, op, "mask", MF_F32));
    const int64_t n = mf_tensor_numel(mask);
    MF_LAUNCH(dropout_mask_kernel, n, (float *)mask->data, n, keep, scale, seed, stream);
    return MF_OK;
}
