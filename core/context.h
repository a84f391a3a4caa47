/* The execution context: device, activation arena, memory policy and backend handles. Created once
 * and passed to every op; model code never looks at the backend. */
#ifndef MF_CORE_CONTEXT_H
#define MF_CORE_CONTEXT_H

#include <stdint.h>

#include "core/tensor.h"
#include "memopt/arena.h"
#include "memopt/policy.h"

struct mf_dnnl_state; /* core/cpu/dnnl_matmul.c: engine, stream, primitive cache */
struct mf_cuda_state; /* core/cuda: stream, cuBLAS/cuBLASLt handles */

typedef struct mf_ctx {
    mf_device device;
    mf_arena *arena; /* activations and op workspaces, on `device` */
    /* Host memory for offloaded checkpoints (policy.offload, memopt/saved.h): another arena than
     * `arena`, released by the same caller marks. NULL: none (on the CPU offload then keeps the
     * checkpoints in `arena`, which is host memory already). */
    mf_arena *host_arena;
    mf_policy policy;
    uint64_t seed; /* for counter-based dropout */
    struct mf_dnnl_state *dnnl;
    struct mf_cuda_state *cuda;
} mf_ctx;

mf_status mf_ctx_init(mf_ctx *ctx, mf_device device, mf_arena *arena);
void mf_ctx_destroy(mf_ctx *ctx);
/* A GPU context with its own arena of `bytes` (0: 90% of the GPU's free memory), for
 * `--device cuda`. MF_ERR_UNSUPPORTED saying why not (built without CUDA, no driver or device);
 * on failure nothing is left to free. mf_ctx_destroy, then mf_arena_destroy, release it. */
mf_status mf_ctx_init_cuda(mf_ctx *ctx, mf_arena *arena, size_t bytes);
/* Under mpirun: the GPU of this rank's position on its node (OMPI_COMM_WORLD_LOCAL_RANK,
 * MPI_LOCALRANKID or SLURM_LOCALID, else `rank`), modulo the node's GPUs, made current before
 * mf_ctx_init_cuda; so ranks do not all share GPU 0. Prints nothing; *chosen (or NULL) gets the
 * local rank found (the device is that modulo the GPU count). */
mf_status mf_cuda_select_local_device(int rank, int *chosen);
/* Waits for every op queued on the context (a GPU's stream); nothing to wait for on the CPU. */
mf_status mf_ctx_synchronize(const mf_ctx *ctx);

/* Whether a CUDA device can be used (compiled in and a GPU present). */
int mf_cuda_available(void);

/* Backend hooks used by mf_ctx_init/destroy. */
mf_status mf_dnnl_create(struct mf_dnnl_state **out);
void mf_dnnl_destroy(struct mf_dnnl_state *s);

#endif
