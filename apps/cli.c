#include "apps/cli.h"

#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

#ifdef MF_HAVE_CUDA
#include "core/cuda/cuda_backend.h"
#endif

bool mf_cli_parse_i64(const char *s, int64_t lo, int64_t *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < lo) return false;
    *out = v;
    return true;
}

size_t mf_cli_physical_memory(void)
{
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    if (pages <= 0 || page <= 0) return (size_t)16 << 30;
    return (size_t)pages * (size_t)page;
}

size_t mf_cli_gib_bytes(double gib)
{
    return (size_t)(gib * (double)((size_t)1 << 30));
}

mf_status mf_cli_gpu_context(double gib, const mf_policy *policy, mf_arena *a, mf_ctx *g)
{
#ifndef MF_HAVE_CUDA
    (void)gib, (void)policy, (void)a, (void)g;
    return MF_ERROR(MF_ERR_UNSUPPORTED,
                    "--device cuda: memfold was built without CUDA (MEMFOLD_CUDA=OFF)");
#else
    if (!mf_cuda_available())
        return MF_ERROR(MF_ERR_UNSUPPORTED, "--device cuda: no usable GPU (no driver or device)");
    size_t cap = gib > 0 ? mf_cli_gib_bytes(gib) : 0;
    if (cap == 0) {
        size_t free_bytes = 0, total = 0;
        MF_TRY(mf_cuda_mem_info(&free_bytes, &total));
        cap = free_bytes / 10 * 9;
    }
    MF_TRY(mf_arena_init(a, MF_DEV_CUDA, cap, "gpu activations"));
    mf_status st = mf_ctx_init(g, MF_DEV_CUDA, a);
    if (st != MF_OK) {
        mf_arena_destroy(a);
        return st;
    }
    g->policy = *policy;
    return MF_OK;
#endif
}
