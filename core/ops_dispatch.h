/* Internal: device dispatch for the op entry points in core/ops_*.c. Every public op mf_X has a
 * CUDA twin mf_cuda_X with the same signature (core/cuda/cuda_ops.h); CPU code follows the macro.
 */
#ifndef MF_CORE_OPS_DISPATCH_H
#define MF_CORE_OPS_DISPATCH_H

#include "core/ops.h"

#ifdef MF_HAVE_CUDA
#include "core/cuda/cuda_ops.h"
#define MF_DISPATCH_CUDA(ctx, name, ...)                                                           \
    do {                                                                                           \
        if ((ctx)->device == MF_DEV_CUDA) return mf_cuda_##name(ctx, __VA_ARGS__);                 \
    } while (0)
#else
#define MF_DISPATCH_CUDA(ctx, name, ...)                                                           \
    do {                                                                                           \
        if ((ctx)->device == MF_DEV_CUDA)                                                          \
            return MF_ERROR(MF_ERR_UNSUPPORTED, "%s: memfold was built without CUDA", #name);      \
    } while (0)
#endif

#endif
