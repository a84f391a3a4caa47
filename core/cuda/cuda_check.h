/* Checks for every CUDA runtime, cuBLAS/cuBLASLt and NCCL call: on failure the function returns
 * MF_ERR_BACKEND with the failing expression, the library's own error text and file:line (the
 * ggml CUDA_CHECK habit). Usable from C and CUDA translation units. Functions that hold arena
 * scratch release it in their caller (see core/cuda/cuda_internal.h), so a plain return is safe. */
#ifndef MF_CORE_CUDA_CUDA_CHECK_H
#define MF_CORE_CUDA_CUDA_CHECK_H

#include <cublasLt.h>
#include <cublas_api.h>
#include <cuda_runtime_api.h>

#include "core/status.h"

#ifdef MF_HAVE_NCCL
#include <nccl.h>
#endif

/* A failed call's error is also cleared from the runtime (cudaGetLastError), so a later launch
 * check does not report it again against an unrelated kernel (sticky device faults stay). */
#define MF_CUDA_CHECK(expr)                                                                        \
    do {                                                                                           \
        cudaError_t mf_cuda_e_ = (expr);                                                           \
        if (mf_cuda_e_ != cudaSuccess) {                                                           \
            (void)cudaGetLastError();                                                              \
            return mf_error(MF_ERR_BACKEND, __FILE__, __LINE__, "CUDA call %s failed: %s (%s)",    \
                            #expr, cudaGetErrorString(mf_cuda_e_), cudaGetErrorName(mf_cuda_e_));  \
        }                                                                                          \
    } while (0)

#ifdef __cplusplus
extern "C" {
#endif
/* MEMFOLD_CUDA_SYNC=1 in the environment (read once): every launch check also waits for the
 * kernel, so a fault inside a kernel is reported at its own launch (file:line) instead of at a
 * later call. For localising failures; slow. */
int mf_cuda_sync_launches(void);
#ifdef __cplusplus
}
#endif

/* After a kernel launch: cudaGetLastError reports (and resets) a bad launch configuration; a fault
 * inside an earlier kernel that has already been detected is reported too; with
 * MEMFOLD_CUDA_SYNC=1 the kernel's own faults as well. */
#define MF_CUDA_CHECK_LAUNCH()                                                                     \
    do {                                                                                           \
        cudaError_t mf_cuda_e_ = cudaGetLastError();                                               \
        if (mf_cuda_e_ == cudaSuccess && mf_cuda_sync_launches())                                  \
            mf_cuda_e_ = cudaDeviceSynchronize();                                                  \
        if (mf_cuda_e_ != cudaSuccess)                                                             \
            return mf_error(MF_ERR_BACKEND, __FILE__, __LINE__,                                    \
                            "CUDA kernel launch failed: %s (%s)", cudaGetErrorString(mf_cuda_e_),  \
                            cudaGetErrorName(mf_cuda_e_));                                         \
    } while (0)

/* cuBLAS and cuBLASLt share cublasStatus_t. */
#define MF_CUBLAS_CHECK(expr)                                                                      \
    do {                                                                                           \
        cublasStatus_t mf_cublas_s_ = (expr);                                                      \
        if (mf_cublas_s_ != CUBLAS_STATUS_SUCCESS)                                                 \
            return mf_error(MF_ERR_BACKEND, __FILE__, __LINE__, "cuBLAS call %s failed: %s (%d)",  \
                            #expr, cublasGetStatusString(mf_cublas_s_), (int)mf_cublas_s_);        \
    } while (0)

#ifdef MF_HAVE_NCCL
#define MF_NCCL_CHECK(expr)                                                                        \
    do {                                                                                           \
        ncclResult_t mf_nccl_r_ = (expr);                                                          \
        if (mf_nccl_r_ != ncclSuccess)                                                             \
            return mf_error(MF_ERR_BACKEND, __FILE__, __LINE__, "NCCL call %s failed: %s (%d)",    \
                            #expr, ncclGetErrorString(mf_nccl_r_), (int)mf_nccl_r_);               \
    } while (0)
#endif

#endif
