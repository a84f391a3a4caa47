#include <stdio.h>

#include "apps/commands.h"
#include "core/context.h"
#include "core/status.h"

int mf_report_error(const char *cmd)
{
    fprintf(stderr, "memfold %s: error: %s\n", cmd, mf_last_error());
    return 1;
}

int mf_cmd_version(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    printf("memfold %s\n", MF_VERSION);
#ifdef MF_HAVE_CUDA
    printf("cuda backend: compiled in, %d device(s) visible\n", mf_cuda_available());
#else
    printf("cuda backend: not compiled (MEMFOLD_CUDA=OFF)\n");
#endif
    return 0;
}
