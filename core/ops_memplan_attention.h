/* Memory-model plans of the attention ops (memopt/memplan.h; implemented in
 * core/ops_attention_memplan.c): the arena allocations of mf_attention_forward/backward and
 * mf_gated_attention_forward/backward of an f32 run, replayed on a simulated arena in the order
 * core/ops_attention.c and core/cpu/attention_cpu.c make them (f64 runs, the double-precision
 * oracle, need no plan). Shapes as in core/ops.h.
 *
 * On a CUDA simulator the gated module replays the same composition (it runs on either device)
 * with the matrix-product plans of the CUDA path; the core's flash-style kernels
 * (core/cuda/cuda_attention.cu) take no scratch in the forward and the row term delta plus
 * dbias's partial sums in the backward. Not yet checked against a GPU's arena. */
#ifndef MF_CORE_OPS_MEMPLAN_ATTENTION_H
#define MF_CORE_OPS_MEMPLAN_ATTENTION_H

#include <stdbool.h>
#include <stdint.h>

#include "memopt/memplan.h"

/* mf_attention_forward: q [B, Q, H, D], k, v [B, K, H, D]; transient head-major scratch of
 * query chunks of s->policy.chunk_size. Bias, mask and lse take no memory of the op. */
void mf_plan_attention_forward(mf_memsim *s, int64_t B, int64_t Q, int64_t K, int64_t H, int64_t D,
                               float scale);
/* mf_attention_backward with the gradients asked for (dq, dk, dv, dbias given or NULL). */
void mf_plan_attention_backward(mf_memsim *s, int64_t B, int64_t Q, int64_t K, int64_t H, int64_t D,
                                float scale, bool dq, bool dk, bool dv, bool dbias);

/* mf_gated_attention_forward: q_x [B, Q, c_in], kv_x [B, K, c_in], H heads of D, out
 * [B, Q, c_out]; gated as p->gated. saving (saved != NULL): leaves the saved activations q, k, v,
 * (gate), o in s->policy.storage and lse in f32 allocated (MF_MEM_SAVED). */
void mf_plan_gated_attention_forward(mf_memsim *s, int64_t B, int64_t Q, int64_t K, int64_t c_in,
                                     int64_t H, int64_t D, int64_t c_out, bool gated, bool saving,
                                     bool accumulate);
/* mf_gated_attention_backward: dq_x, dkv_x, dbias given or NULL; dparams: every field of dp has
 * data (false: dp NULL or no field with data). */
void mf_plan_gated_attention_backward(mf_memsim *s, int64_t B, int64_t Q, int64_t K, int64_t c_in,
                                      int64_t H, int64_t D, int64_t c_out, bool gated, bool dq_x,
                                      bool dkv_x, bool dbias, bool dparams);

/* mf_plan_slice_sizes, mf_plan_slice_rows: memopt/memplan.h. */

#endif
