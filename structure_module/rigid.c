/* The rigid-body algebra of rigid.inc compiled for float and for double (see rigid.h). */
#include "structure_module/rigid.h"

#include <math.h>
#include <stddef.h>
#include <stdio.h>

#define real        float
#define MF_RG(name) mf_##name##_f32
#define r_sqrt      sqrtf
#include "structure_module/rigid.inc"
#undef real
#undef MF_RG
#undef r_sqrt

#define real        double
#define MF_RG(name) mf_##name##_f64
#define r_sqrt      sqrt
#include "structure_module/rigid.inc"
#undef real
#undef MF_RG
#undef r_sqrt

mf_status mf_check_host_f32(const mf_tensor *t, const char *name, int ndim, const int64_t *shape)
{
    MF_TRY(mf_check_tensor(t, name, MF_F32, 0));
    if (t->device != MF_DEV_CPU)
        return MF_ERROR(MF_ERR_UNSUPPORTED, "tensor %s is on the GPU; this op runs on the host",
                        name);
    bool ok = t->ndim == ndim;
    for (int d = 0; ok && d < ndim; d++) ok = t->shape[d] == shape[d];
    if (!ok) {
        char got[96], want[96] = "[";
        size_t len = 1;
        for (int d = 0; d < ndim && len < sizeof want; d++)
            len += (size_t)snprintf(want + len, sizeof want - len, "%s%lld", d ? ", " : "",
                                    (long long)shape[d]);
        if (len < sizeof want) snprintf(want + len, sizeof want - len, "]");
        return MF_ERROR(MF_ERR_INVALID, "tensor %s is %s, expected %s f32", name,
                        mf_tensor_describe(t, got, sizeof got), want);
    }
    return MF_OK;
}
