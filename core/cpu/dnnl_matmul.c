/* Placeholder until the oneDNN matmul lands. */
#include "core/context.h"

struct mf_dnnl_state {
    int unused;
};

mf_status mf_dnnl_create(struct mf_dnnl_state **out)
{
    *out = NULL;
    return MF_OK;
}

void mf_dnnl_destroy(struct mf_dnnl_state *s)
{
    (void)s;
}
