/* C-callable entry points of the CUDA backend (implemented in the .cu files of core/cuda). Only
 * compiled and used when MF_HAVE_CUDA is defined. */
#ifndef MF_CORE_CUDA_CUDA_BACKEND_H
#define MF_CORE_CUDA_CUDA_BACKEND_H

#include <stddef.h>

#include "core/status.h"

#ifdef __cplusplus
extern "C" {
#endif

struct mf_cuda_state;

/* Number of usable CUDA devices; 0 when the driver or a GPU is missing (never an error). */
int mf_cuda_device_count(void);
mf_status mf_cuda_malloc(size_t bytes, void **out);
/* Makes GPU (index mod the device count) this thread's current device. */
mf_status mf_cuda_set_device(int index);
void mf_cuda_free(void *p);
mf_status mf_cuda_memset0(void *p, size_t bytes);
/* Host <-> device copies (synchronous on the context's stream). */
mf_status mf_cuda_copy_to_device(void *dst, const void *src, size_t bytes);
mf_status mf_cuda_copy_to_host(void *dst, const void *src, size_t bytes);
mf_status mf_cuda_copy_on_device(void *dst, const void *src, size_t bytes);
mf_status mf_cuda_state_create(struct mf_cuda_state **out);
void mf_cuda_state_destroy(struct mf_cuda_state *s);
/* Free and total device memory (cudaMemGetInfo). */
mf_status mf_cuda_mem_info(size_t *free_bytes, size_t *total_bytes);
/* Waits for every op queued on the state's stream (timing, benchmarks); NULL is a no-op. */
mf_status mf_cuda_synchronize(const struct mf_cuda_state *s);
/* Device bytes the state holds outside any arena (cuBLAS's fixed workspace), for memory tables. */
size_t mf_cuda_state_workspace_bytes(const struct mf_cuda_state *s);

#ifdef __cplusplus
}
#endif

#endif
