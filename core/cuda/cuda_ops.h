/* CUDA twins of the ops in core/ops.h: same names with mf_cuda_ and the same signatures, so
 * dispatch is one line. The gated attention module has no twin: its composition in
 * core/ops_attention.c runs on either device through the twins of the ops it calls. */
#ifndef MF_CORE_CUDA_CUDA_OPS_H
#define MF_CORE_CUDA_CUDA_OPS_H

#include "core/ops.h"

#ifdef __cplusplus
extern "C" {
#endif

mf_status mf_cuda_linear_forward(mf_ctx *ctx, mf_tensor *y, const mf_tensor *x, const mf_tensor *w,
                                 const mf_tensor *b, bool accumulate);
mf_status mf_cuda_linear_backward(mf_ctx *ctx, mf_tensor *dx, mf_tensor *dw, mf_tensor *db,
                                  const mf_tensor *dy, const mf_tensor *x, const mf_tensor *w);
mf_status mf_cuda_matmul(mf_ctx *ctx, mf_tensor *c, const mf_tensor *a, bool trans_a,
                         const mf_tensor *b, bool trans_b, float alpha, float beta);
mf_status mf_cuda_matmul_backward(mf_ctx *ctx, mf_tensor *da, mf_tensor *db, const mf_tensor *dc,
                                  const mf_tensor *a, bool trans_a, const mf_tensor *b,
                                  bool trans_b, float alpha);
mf_status mf_cuda_layer_norm_forward(mf_ctx *ctx, mf_tensor *y, mf_tensor *mean, mf_tensor *rstd,
                                     const mf_tensor *x, const mf_tensor *gamma,
                                     const mf_tensor *beta, float eps);
mf_status mf_cuda_layer_norm_backward(mf_ctx *ctx, mf_tensor *dx, mf_tensor *dgamma,
                                      mf_tensor *dbeta, const mf_tensor *dy, const mf_tensor *x,
                                      const mf_tensor *mean, const mf_tensor *rstd,
                                      const mf_tensor *gamma);
mf_status mf_cuda_softmax_forward(mf_ctx *ctx, mf_tensor *y, const mf_tensor *x,
                                  const mf_tensor *bias, const mf_tensor *mask);
mf_status mf_cuda_softmax_backward(mf_ctx *ctx, mf_tensor *dx, mf_tensor *dbias,
                                   const mf_tensor *dy, const mf_tensor *y);
mf_status mf_cuda_activation_forward(mf_ctx *ctx, mf_activation act, mf_tensor *y,
                                     const mf_tensor *x);
mf_status mf_cuda_activation_backward(mf_ctx *ctx, mf_activation act, mf_tensor *dx,
                                      const mf_tensor *dy, const mf_tensor *x);
mf_status mf_cuda_add(mf_ctx *ctx, mf_tensor *y, const mf_tensor *a, const mf_tensor *b);
mf_status mf_cuda_mul(mf_ctx *ctx, mf_tensor *y, const mf_tensor *a, const mf_tensor *b);
mf_status mf_cuda_add_backward(mf_ctx *ctx, mf_tensor *da, mf_tensor *db, const mf_tensor *dy);
mf_status mf_cuda_mul_backward(mf_ctx *ctx, mf_tensor *da, mf_tensor *db, const mf_tensor *dy,
                               const mf_tensor *a, const mf_tensor *b);
mf_status mf_cuda_scale(mf_ctx *ctx, mf_tensor *y, const mf_tensor *x, float alpha);
mf_status mf_cuda_axpy(mf_ctx *ctx, mf_tensor *y, float alpha, const mf_tensor *x);
mf_status mf_cuda_fill(mf_ctx *ctx, mf_tensor *y, float value);
mf_status mf_cuda_convert(mf_ctx *ctx, mf_tensor *y, const mf_tensor *x);
mf_status mf_cuda_transpose01(mf_ctx *ctx, mf_tensor *y, const mf_tensor *x, bool accumulate);
mf_status mf_cuda_sum_axis(mf_ctx *ctx, mf_tensor *y, const mf_tensor *x, float scale);
mf_status mf_cuda_sum_axis_backward(mf_ctx *ctx, mf_tensor *dx, const mf_tensor *dy, float scale);
mf_status mf_cuda_gather_rows(mf_ctx *ctx, mf_tensor *y, const mf_tensor *x, const mf_tensor *idx);
mf_status mf_cuda_scatter_add_rows(mf_ctx *ctx, mf_tensor *dx, const mf_tensor *dy,
                                   const mf_tensor *idx);
mf_status mf_cuda_attention_forward(mf_ctx *ctx, mf_tensor *out, mf_tensor *lse, const mf_tensor *q,
                                    const mf_tensor *k, const mf_tensor *v, const mf_tensor *bias,
                                    const mf_tensor *mask, float scale);
mf_status mf_cuda_attention_backward(mf_ctx *ctx, mf_tensor *dq, mf_tensor *dk, mf_tensor *dv,
                                     mf_tensor *dbias, const mf_tensor *dout, const mf_tensor *out,
                                     const mf_tensor *lse, const mf_tensor *q, const mf_tensor *k,
                                     const mf_tensor *v, const mf_tensor *bias,
                                     const mf_tensor *mask, float scale);
/* The gate backward of the gated attention module (as mf_cpu_gate_backward; all f32):
 * dlogit = dog * o * g * (1 - g), then dog *= g. */
mf_status mf_cuda_gate_backward(mf_ctx *ctx, mf_tensor *dlogit, mf_tensor *dog, const mf_tensor *o,
                                const mf_tensor *g);

/* Dropout mask [A, C] f32 on the device: element i is `scale` when the Philox uniform
 * mf_rng_uniform(seed, stream, i) < keep, else 0 (as mf_dropout_mask on the CPU, bit for bit). */
mf_status mf_cuda_dropout_mask(mf_ctx *ctx, mf_tensor *mask, float keep, float scale, uint64_t seed,
                               uint64_t stream);

#ifdef __cplusplus
}
#endif

#endif
