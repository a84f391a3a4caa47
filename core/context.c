#include "core/context.h"

#include <stdlib.h>
#include <string.h>

#ifdef MF_HAVE_CUDA
#include "core/cuda/cuda_backend.h"
#endif

int mf_cuda_available(void)
{
#ifdef MF_HAVE_CUDA
    return mf_cuda_device_count() > 0;
#else
    return 0;
#endif
}

mf_status mf_ctx_init(mf_ctx *ctx, mf_device device, mf_arena *arena)
{
    memset(ctx, 0, sizeof *ctx);
    ctx->device = device;
    ctx->arena = arena;
    ctx->policy = mf_policy_default();
    MF_REQUIRE(arena && arena->device == device, "context and its arena must be on one device");
    if (device == MF_DEV_CPU) return mf_dnnl_create(&ctx->dnnl);
#ifdef MF_HAVE_CUDA
    return mf_cuda_state_create(&ctx->cuda);
#else
    return MF_ERROR(MF_ERR_UNSUPPORTED, "memfold was built without CUDA (MEMFOLD_CUDA=OFF)");
#endif
}

mf_status mf_ctx_init_cuda(mf_ctx *ctx, mf_arena *arena, size_t bytes)
{
#ifndef MF_HAVE_CUDA
    (void)ctx, (void)arena, (void)bytes;
    return MF_ERROR(MF_ERR_UNSUPPORTED,
                    "--device cuda: memfold was built without CUDA (MEMFOLD_CUDA=OFF)");
#else
    if (!mf_cuda_available())
        return MF_ERROR(MF_ERR_UNSUPPORTED, "--device cuda: no usable GPU (no driver or device)");
    if (bytes == 0) {
        size_t free_bytes = 0, total = 0;
        MF_TRY(mf_cuda_mem_info(&free_bytes, &total));
        bytes = free_bytes / 10 * 9;
    }
    MF_TRY(mf_arena_init(arena, MF_DEV_CUDA, bytes, "gpu activations"));
    mf_status st = mf_ctx_init(ctx, MF_DEV_CUDA, arena);
    if (st != MF_OK) mf_arena_destroy(arena);
    return st;
#endif
}

mf_status mf_cuda_select_local_device(int rank, int *chosen)
{
    int local = rank;
    static const char *const vars[] = {"OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID",
                                       "SLURM_LOCALID"};
    for (size_t i = 0; i < sizeof vars / sizeof vars[0]; i++) {
        const char *v = getenv(vars[i]);
        if (v && *v) {
            local = atoi(v);
            break;
        }
    }
    if (chosen) *chosen = local;
#ifdef MF_HAVE_CUDA
    return mf_cuda_set_device(local);
#else
    return MF_ERROR(MF_ERR_UNSUPPORTED,
                    "--device cuda: memfold was built without CUDA (MEMFOLD_CUDA=OFF)");
#endif
}

void mf_ctx_destroy(mf_ctx *ctx)
{
    if (ctx->dnnl) mf_dnnl_destroy(ctx->dnnl);
#ifdef MF_HAVE_CUDA
    if (ctx->cuda) mf_cuda_state_destroy(ctx->cuda);
#endif
    memset(ctx, 0, sizeof *ctx);
}

mf_status mf_ctx_synchronize(const mf_ctx *ctx)
{
#ifdef MF_HAVE_CUDA
    if (ctx && ctx->cuda) return mf_cuda_synchronize(ctx->cuda);
#else
    (void)ctx;
#endif
    return MF_OK;
}
