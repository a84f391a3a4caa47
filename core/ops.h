/* Ops: one device-agnostic entry point each; the context's device picks the implementation
 * (core/cpu: OpenMP + oneDNN; core/cuda: kernels + cuBLAS). The plain reference of every op is in
 * core/ref (float and double); the backends are tested against it and the double reference against
 * central finite differences.
 *
 * Conventions (all ops):
 *  - Tensors are f32 unless an op says otherwise, or f64 on the CPU: a call whose floating
 *    tensors (masks included; index tensors stay i32) are all f64 runs the double reference
 *    (core/ref, mf_ref_*_f64) and ignores ctx->policy.compute and .storage (saved activations and
 *    lse stay f64; scalar arguments stay float); mixing f32 and f64 in one call is
 *    MF_ERR_INVALID, f64 on CUDA MF_ERR_UNSUPPORTED. Contiguous, on ctx->device.
 *  - Argument order: outputs, saved statistics, inputs, parameters, then scalars.
 *  - Forward outputs are overwritten unless the op takes `accumulate` and it is true (y += ...).
 *  - Backward passes ACCUMULATE into every gradient they are given (dx += ...); a NULL gradient
 *    is not computed. Callers zero gradient buffers once; shared weights and branching inputs
 *    then need no extra adds.
 *  - Workspaces come from ctx->arena and are released before the op returns; no op mallocs.
 *  - Matrix products read their inputs in ctx->policy.compute precision (f32 or bf16) and always
 *    accumulate in f32. Layer norm, softmax and reductions are f32 throughout. */
#ifndef MF_CORE_OPS_H
#define MF_CORE_OPS_H

#include <stdbool.h>

#include "core/context.h"

/* ---- matrix products --------------------------------------------------------------------- */

/* Linear in the AlphaFold 2 layout: y[r,:] = x[r,:] @ w + b.
 * x [..., in] (any leading dims), w [in, out] (a tensor whose dims multiply out to in*out is
 * accepted: AF2 stores attention projections as [in, heads, c]), b [out] or NULL, y [..., out]. */
mf_status mf_linear_forward(mf_ctx *ctx, mf_tensor *y, const mf_tensor *x, const mf_tensor *w,
                            const mf_tensor *b, bool accumulate);
/* dx += dy @ w^T, dw += x^T @ dy, db += sum_r dy[r,:]. */
mf_status mf_linear_backward(mf_ctx *ctx, mf_tensor *dx, mf_tensor *dw, mf_tensor *db,
                             const mf_tensor *dy, const mf_tensor *x, const mf_tensor *w);

/* Batched matrix product c[i] = alpha * op(a[i]) @ op(b[i]) + beta * c[i], op = transpose when
 * trans_*; a, b, c are 3-D [batch, rows, cols]; a batch of 1 in a or b is broadcast. */
mf_status mf_matmul(mf_ctx *ctx, mf_tensor *c, const mf_tensor *a, bool trans_a, const mf_tensor *b,
                    bool trans_b, float alpha, float beta);
/* Gradients of c = alpha * op(a) @ op(b): da += ..., db += ... (summed over a broadcast batch). */
mf_status mf_matmul_backward(mf_ctx *ctx, mf_tensor *da, mf_tensor *db, const mf_tensor *dc,
                             const mf_tensor *a, bool trans_a, const mf_tensor *b, bool trans_b,
                             float alpha);

/* ---- normalisation and softmax ----------------------------------------------------------- */

/* Layer norm over the last dim (AF2 / haiku: biased variance, eps inside the square root).
 * x, y [..., C]; gamma (scale), beta (offset) [C]; mean, rstd [rows] saved for backward (may be
 * NULL at inference). y may alias x. */
mf_status mf_layer_norm_forward(mf_ctx *ctx, mf_tensor *y, mf_tensor *mean, mf_tensor *rstd,
                                const mf_tensor *x, const mf_tensor *gamma, const mf_tensor *beta,
                                float eps);
mf_status mf_layer_norm_backward(mf_ctx *ctx, mf_tensor *dx, mf_tensor *dgamma, mf_tensor *dbeta,
                                 const mf_tensor *dy, const mf_tensor *x, const mf_tensor *mean,
                                 const mf_tensor *rstd, const mf_tensor *gamma);

/* Softmax over the last dim of logits viewed as [B, H, Q, K] (x is 4-D), with an optional
 * additive bias [H, Q, K] shared over B and an optional key mask [B, K] shared over H and Q that
 * adds 1e9 * (mask - 1) as AlphaFold 2 does. y may alias x. */
mf_status mf_softmax_forward(mf_ctx *ctx, mf_tensor *y, const mf_tensor *x, const mf_tensor *bias,
                             const mf_tensor *mask);
/* dx += y * (dy - sum_k dy*y); dbias += the same summed over B. */
mf_status mf_softmax_backward(mf_ctx *ctx, mf_tensor *dx, mf_tensor *dbias, const mf_tensor *dy,
                              const mf_tensor *y);

/* ---- elementwise --------------------------------------------------------------------------- */

typedef enum { MF_ACT_RELU = 0, MF_ACT_SIGMOID = 1, MF_ACT_SOFTPLUS = 2 } mf_activation;

/* y = act(x); y may alias x. */
mf_status mf_activation_forward(mf_ctx *ctx, mf_activation act, mf_tensor *y, const mf_tensor *x);
/* dx += act'(x) * dy, with x the forward input. */
mf_status mf_activation_backward(mf_ctx *ctx, mf_activation act, mf_tensor *dx, const mf_tensor *dy,
                                 const mf_tensor *x);

/* y = a + b and y = a * b. b has a's shape or broadcasts over a's leading dims (b's element
 * count divides a's and b matches a's trailing elements, e.g. a [R, C], b [C]). y may alias a. */
mf_status mf_add(mf_ctx *ctx, mf_tensor *y, const mf_tensor *a, const mf_tensor *b);
mf_status mf_mul(mf_ctx *ctx, mf_tensor *y, const mf_tensor *a, const mf_tensor *b);
/* da += dy; db += dy summed over the broadcast dims. */
mf_status mf_add_backward(mf_ctx *ctx, mf_tensor *da, mf_tensor *db, const mf_tensor *dy);
/* da += dy * b; db += dy * a summed over the broadcast dims. */
mf_status mf_mul_backward(mf_ctx *ctx, mf_tensor *da, mf_tensor *db, const mf_tensor *dy,
                          const mf_tensor *a, const mf_tensor *b);
/* y = alpha * x (y may alias x); its backward is dx += alpha * dy, i.e. mf_axpy. */
mf_status mf_scale(mf_ctx *ctx, mf_tensor *y, const mf_tensor *x, float alpha);
/* y += alpha * x. */
mf_status mf_axpy(mf_ctx *ctx, mf_tensor *y, float alpha, const mf_tensor *x);
mf_status mf_fill(mf_ctx *ctx, mf_tensor *y, float value);
/* Element type conversion, same shape: f32 <-> bf16 (round to nearest even), f32 <-> f64, and
 * copies f32 -> f32, f64 -> f64. */
mf_status mf_convert(mf_ctx *ctx, mf_tensor *y, const mf_tensor *x);

/* ---- layout -------------------------------------------------------------------------------- */

/* y[b, a, :] = x[a, b, :] for x [A, B, C] (3-D), y [B, A, C]; accumulate: y += instead.
 * Its own backward: mf_transpose01(ctx, dx, dy, true). */
mf_status mf_transpose01(mf_ctx *ctx, mf_tensor *y, const mf_tensor *x, bool accumulate);

/* ---- reductions ---------------------------------------------------------------------------- */

/* y[o, i] = scale * sum_k x[o, k, i] for x viewed as 3-D [outer, n, inner], y [outer, inner]
 * (2-D); scale = 1/n gives the mean. */
mf_status mf_sum_axis(mf_ctx *ctx, mf_tensor *y, const mf_tensor *x, float scale);
/* dx[o, k, i] += scale * dy[o, i]. */
mf_status mf_sum_axis_backward(mf_ctx *ctx, mf_tensor *dx, const mf_tensor *dy, float scale);

/* ---- indexing ------------------------------------------------------------------------------ */

/* y[i, :] = x[idx[i], :]; x [n, C], idx i32 [m] (host or device like x), y [m, C]; a negative
 * index gives a zero row (padding). */
mf_status mf_gather_rows(mf_ctx *ctx, mf_tensor *y, const mf_tensor *x, const mf_tensor *idx);
/* dx[idx[i], :] += dy[i, :] (the backward of gather; negative indices are skipped). */
mf_status mf_scatter_add_rows(mf_ctx *ctx, mf_tensor *dx, const mf_tensor *dy,
                              const mf_tensor *idx);

/* ---- attention ----------------------------------------------------------------------------- */

/* Multi-head scaled dot-product attention, processed in query chunks of ctx->policy.chunk_size
 * (every chunk size gives the same numbers):
 *   out[b,q,h,:] = sum_k p[b,h,q,k] v[b,k,h,:],
 *   p = softmax_k(scale * q[b,q,h,:].k[b,k,h,:] + bias[h,q,k] + 1e9 (mask[b,k] - 1)).
 * q [B, Q, H, D]; k, v [B, K, H, D] (f32 or bf16: saved activations may be stored in bf16);
 * bias [H, Q, K] or NULL; mask [B, K] or NULL; lse [B, H, Q] f32 (f64 in an f64 run; the
 * log-sum-exp of each logit row, saved so backward recomputes p without storing it; may be NULL at
 * inference). On the CPU, out, lse, dq and dbias are bitwise independent of the chunk size; dk and
 * dv sum over chunks in a different order and agree within f32 rounding. */
mf_status mf_attention_forward(mf_ctx *ctx, mf_tensor *out, mf_tensor *lse, const mf_tensor *q,
                               const mf_tensor *k, const mf_tensor *v, const mf_tensor *bias,
                               const mf_tensor *mask, float scale);
mf_status mf_attention_backward(mf_ctx *ctx, mf_tensor *dq, mf_tensor *dk, mf_tensor *dv,
                                mf_tensor *dbias, const mf_tensor *dout, const mf_tensor *out,
                                const mf_tensor *lse, const mf_tensor *q, const mf_tensor *k,
                                const mf_tensor *v, const mf_tensor *bias, const mf_tensor *mask,
                                float scale);

/* AlphaFold 2's gated multi-head attention (the `Attention` module of Alg. 7, 8, 13, 14; Alg. 22's
 * scalar part uses the core above). Weights in the official layout: query_w, key_w, value_w,
 * gating_w [C_in, H, D]; gating_b [H, D]; output_w [H, D, C_out]; output_b [C_out]. gating_w NULL
 * means ungated (template pointwise attention). q is scaled by D^-1/2 after projection. */
typedef struct {
    mf_tensor query_w, key_w, value_w, gating_w, gating_b, output_w, output_b;
    bool gated;
} mf_attention_params;

/* Forward activations kept for backward, allocated from ctx->arena by the forward pass (take a
 * mark before the forward, release to it after the backward): q, k, v [B, *, H, D], gate (sigmoid
 * output) [B, Q, H, D], o (attention output before the gate) [B, Q, H, D] in ctx->policy.storage
 * precision; lse [B, H, Q] always f32 (its rounding would be amplified by exp(logit - lse)). An f64
 * run keeps everything in f64 whatever the policy says. */
typedef struct {
    mf_tensor q, k, v, gate, o, lse;
} mf_attention_saved;

/* out [B, Q, C_out] (+= when accumulate); q_x [B, Q, C_in]; kv_x [B, K, C_in] (may equal q_x).
 * Both paths process the batch in slices of ctx->policy.chunk_size rows (0: all at once) and the
 * core attention in query chunks; saved NULL is inference: only slice-sized transients live. */
mf_status mf_gated_attention_forward(mf_ctx *ctx, mf_tensor *out, mf_attention_saved *saved,
                                     const mf_tensor *q_x, const mf_tensor *kv_x,
                                     const mf_tensor *bias, const mf_tensor *mask,
                                     const mf_attention_params *p, bool accumulate);
/* Accumulates dq_x, dkv_x (may be the same tensor when q_x == kv_x), dbias and every gradient in
 * dp (fields with data == NULL are skipped). */
mf_status mf_gated_attention_backward(mf_ctx *ctx, mf_tensor *dq_x, mf_tensor *dkv_x,
                                      mf_tensor *dbias, mf_attention_params *dp,
                                      const mf_tensor *dout, const mf_attention_saved *saved,
                                      const mf_tensor *q_x, const mf_tensor *kv_x,
                                      const mf_tensor *bias, const mf_tensor *mask,
                                      const mf_attention_params *p);

#endif
