#include "apps/cli.h"

#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

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
    MF_TRY(mf_ctx_init_cuda(g, a, gib > 0 ? mf_cli_gib_bytes(gib) : 0));
    g->policy = *policy;
    return MF_OK;
}
