/* Internal CPU attention (core/cpu/attention_cpu.c); model code uses core/ops.h. Shapes and
 * semantics as mf_attention_forward/backward, with one extension the gated module needs for bf16
 * storage of saved activations: q, k, v (and `out` in backward) may be bf16 as well as f32; they
 * are widened to f32 when gathered into head-major scratch. When q is f64 every floating tensor
 * is f64 (checked by the caller) and the double reference (mf_ref_attention_*_f64) runs; its
 * backward recomputes p itself and reads neither out nor lse. */
#ifndef MF_CORE_CPU_ATTENTION_CPU_H
#define MF_CORE_CPU_ATTENTION_CPU_H

#include "core/ops.h"

mf_status mf_cpu_attention_forward(mf_ctx *ctx, mf_tensor *out, mf_tensor *lse, const mf_tensor *q,
                                   const mf_tensor *k, const mf_tensor *v, const mf_tensor *bias,
                                   const mf_tensor *mask, float scale);
mf_status mf_cpu_attention_backward(mf_ctx *ctx, mf_tensor *dq, mf_tensor *dk, mf_tensor *dv,
                                    mf_tensor *dbias, const mf_tensor *dout, const mf_tensor *out,
                                    const mf_tensor *lse, const mf_tensor *q, const mf_tensor *k,
                                    const mf_tensor *v, const mf_tensor *bias,
                                    const mf_tensor *mask, float scale);

/* The gate's backward from its saved sigmoid output g (Alg. 7 line 6, o_gated = o * g):
 * dlogit = dog * o * g * (1 - g), then dog *= g in place (the gradient of o). n elements, f32. */
void mf_cpu_gate_backward(float *dlogit, float *dog, const float *o, const float *g, int64_t n);
void mf_cpu_gate_backward_f64(double *dlogit, double *dog, const double *o, const double *g,
                              int64_t n);

#endif
