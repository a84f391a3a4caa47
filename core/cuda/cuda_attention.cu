/* The attention family on CUDA is the CUDA backend issue's work (fused, chunked online softmax);
 * until then these twins say so instead of running a slow or partial path. */
#include "core/cuda/cuda_internal.h"

#define MF_CUDA_NOT_YET(op)                                                                        \
    MF_ERROR(MF_ERR_UNSUPPORTED, "%s on CUDA belongs to the CUDA backend issue", op)

extern "C" mf_status mf_cuda_attention_forward(mf_ctx *ctx, mf_tensor *out, mf_tensor *lse,
                                               const mf_tensor *q, const mf_tensor *k,
                                               const mf_tensor *v, const mf_tensor *bias,
                                               const mf_tensor *mask, float scale)
{
    (void)ctx, (void)out, (void)lse, (void)q, (void)k, (void)v, (void)bias, (void)mask, (void)scale;
    return MF_CUDA_NOT_YET("attention_forward");
}

extern "C" mf_status mf_cuda_attention_backward(mf_ctx *ctx, mf_tensor *dq, mf_tensor *dk,
                                                mf_tensor *dv, mf_tensor *dbias,
                                                const mf_tensor *dout, const mf_tensor *out,
                                                const mf_tensor *lse, const mf_tensor *q,
                                                const mf_tensor *k, const mf_tensor *v,
                                                const mf_tensor *bias, const mf_tensor *mask,
                                                float scale)
{
    (void)ctx, (void)dq, (void)dk, (void)dv, (void)dbias, (void)dout, (void)out, (void)lse, (void)q,
        (void)k, (void)v, (void)bias, (void)mask, (void)scale;
    return MF_CUDA_NOT_YET("attention_backward");
}

extern "C" mf_status mf_cuda_gated_attention_forward(mf_ctx *ctx, mf_tensor *out,
                                                     mf_attention_saved *saved,
                                                     const mf_tensor *q_x, const mf_tensor *kv_x,
                                                     const mf_tensor *bias, const mf_tensor *mask,
                                                     const mf_attention_params *p, bool accumulate)
{
    (void)ctx, (void)out, (void)saved, (void)q_x, (void)kv_x, (void)bias, (void)mask, (void)p,
        (void)accumulate;
    return MF_CUDA_NOT_YET("gated_attention_forward");
}

extern "C" mf_status
mf_cuda_gated_attention_backward(mf_ctx *ctx, mf_tensor *dq_x, mf_tensor *dkv_x, mf_tensor *dbias,
                                 mf_attention_params *dp, const mf_tensor *dout,
                                 const mf_attention_saved *saved, const mf_tensor *q_x,
                                 const mf_tensor *kv_x, const mf_tensor *bias,
                                 const mf_tensor *mask, const mf_attention_params *p)
{
    (void)ctx, (void)dq_x, (void)dkv_x, (void)dbias, (void)dp, (void)dout, (void)saved, (void)q_x,
        (void)kv_x, (void)bias, (void)mask, (void)p;
    return MF_CUDA_NOT_YET("gated_attention_backward");
}
