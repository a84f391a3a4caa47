/* Plain reference implementations of every op, written once over a scalar type `real` and compiled
 * for float (mf_ref_*_f32: the CPU backend's twin and the CUDA kernels' oracle) and double
 * (mf_ref_*_f64: the oracle for finite-difference gradient checks). Raw pointers, row-major,
 * dims as int64_t; semantics exactly as the tensor-level ops in core/ops.h, including the
 * accumulate-into-gradients convention. Masks are 0/1 values of type real; indices are int32.
 *
 * Each op lives in its own core/ref/<op>.inc, included by ref_f32.c and ref_f64.c. */
#ifndef MF_CORE_REF_REF_H
#define MF_CORE_REF_REF_H

#include <stdbool.h>
#include <stdint.h>

#define MF_REF_DECLARE(real, SUF)                                                                  \
    /* matmul.inc: c[i] = alpha op(a[i]) op(b[i]) + beta c[i]; a [batch_a, M, K] ([K, M] when      \
     * ta), b [batch_b, K, N] ([N, K] when tb), c [batch, M, N]; batch_a, batch_b are batch or 1.  \
     */                                                                                            \
    void mf_ref_matmul_##SUF(real *c, const real *a, bool ta, const real *b, bool tb,              \
                             int64_t batch, int64_t batch_a, int64_t batch_b, int64_t M,           \
                             int64_t N, int64_t K, real alpha, real beta);                         \
    void mf_ref_matmul_backward_##SUF(real *da, real *db, const real *dc, const real *a, bool ta,  \
                                      const real *b, bool tb, int64_t batch, int64_t batch_a,      \
                                      int64_t batch_b, int64_t M, int64_t N, int64_t K,            \
                                      real alpha);                                                 \
    void mf_ref_linear_forward_##SUF(real *y, const real *x, const real *w, const real *b,         \
                                     int64_t rows, int64_t in, int64_t out, bool accumulate);      \
    void mf_ref_linear_backward_##SUF(real *dx, real *dw, real *db, const real *dy, const real *x, \
                                      const real *w, int64_t rows, int64_t in, int64_t out);       \
    /* layer_norm.inc */                                                                           \
    void mf_ref_layer_norm_forward_##SUF(real *y, real *mean, real *rstd, const real *x,           \
                                         const real *gamma, const real *beta, int64_t rows,        \
                                         int64_t C, real eps);                                     \
    void mf_ref_layer_norm_backward_##SUF(real *dx, real *dgamma, real *dbeta, const real *dy,     \
                                          const real *x, const real *mean, const real *rstd,       \
                                          const real *gamma, int64_t rows, int64_t C);             \
    /* softmax.inc: x [B, H, Q, K], bias [H, Q, K] or NULL, mask [B, K] or NULL */                 \
    void mf_ref_softmax_forward_##SUF(real *y, const real *x, const real *bias, const real *mask,  \
                                      int64_t B, int64_t H, int64_t Q, int64_t K);                 \
    void mf_ref_softmax_backward_##SUF(real *dx, real *dbias, const real *dy, const real *y,       \
                                       int64_t B, int64_t H, int64_t Q, int64_t K);                \
    /* elementwise.inc: act is an mf_activation value; b broadcasts with n % nb == 0 */            \
    void mf_ref_activation_forward_##SUF(int act, real *y, const real *x, int64_t n);              \
    void mf_ref_activation_backward_##SUF(int act, real *dx, const real *dy, const real *x,        \
                                          int64_t n);                                              \
    void mf_ref_add_##SUF(real *y, const real *a, const real *b, int64_t n, int64_t nb);           \
    void mf_ref_mul_##SUF(real *y, const real *a, const real *b, int64_t n, int64_t nb);           \
    void mf_ref_add_backward_##SUF(real *da, real *db, const real *dy, int64_t n, int64_t nb);     \
    void mf_ref_mul_backward_##SUF(real *da, real *db, const real *dy, const real *a,              \
                                   const real *b, int64_t n, int64_t nb);                          \
    void mf_ref_scale_##SUF(real *y, const real *x, real alpha, int64_t n);                        \
    void mf_ref_axpy_##SUF(real *y, real alpha, const real *x, int64_t n);                         \
    /* layout.inc */                                                                               \
    void mf_ref_transpose01_##SUF(real *y, const real *x, int64_t A, int64_t B, int64_t C,         \
                                  bool accumulate);                                                \
    void mf_ref_sum_axis_##SUF(real *y, const real *x, int64_t outer, int64_t n, int64_t inner,    \
                               real scale);                                                        \
    void mf_ref_sum_axis_backward_##SUF(real *dx, const real *dy, int64_t outer, int64_t n,        \
                                        int64_t inner, real scale);                                \
    void mf_ref_gather_rows_##SUF(real *y, const real *x, const int32_t *idx, int64_t m,           \
                                  int64_t C);                                                      \
    void mf_ref_scatter_add_rows_##SUF(real *dx, const real *dy, const int32_t *idx, int64_t m,    \
                                       int64_t C);                                                 \
    /* attention.inc: q [B, Q, H, D], k, v [B, K, H, D], bias [H, Q, K]|NULL, mask [B, K]|NULL,    \
     * out [B, Q, H, D], lse [B, H, Q]|NULL */                                                     \
    void mf_ref_attention_forward_##SUF(                                                           \
        real *out, real *lse, const real *q, const real *k, const real *v, const real *bias,       \
        const real *mask, int64_t B, int64_t Q, int64_t K, int64_t H, int64_t D, real scale);      \
    void mf_ref_attention_backward_##SUF(                                                          \
        real *dq, real *dk, real *dv, real *dbias, const real *dout, const real *q, const real *k, \
        const real *v, const real *bias, const real *mask, int64_t B, int64_t Q, int64_t K,        \
        int64_t H, int64_t D, real scale);                                                         \
    /* gated_attention.inc: the AF2 Attention module (test oracle; allocates with malloc).         \
     * gating_w NULL = ungated. q_x [B, Q, Cin], kv_x [B, K, Cin], out [B, Q, Cout]. */            \
    void mf_ref_gated_attention_forward_##SUF(                                                     \
        real *out, const real *q_x, const real *kv_x, const real *bias, const real *mask,          \
        const real *query_w, const real *key_w, const real *value_w, const real *gating_w,         \
        const real *gating_b, const real *output_w, const real *output_b, int64_t B, int64_t Q,    \
        int64_t K, int64_t Cin, int64_t H, int64_t D, int64_t Cout);                               \
    void mf_ref_gated_attention_backward_##SUF(                                                    \
        real *dq_x, real *dkv_x, real *dbias, real *dquery_w, real *dkey_w, real *dvalue_w,        \
        real *dgating_w, real *dgating_b, real *doutput_w, real *doutput_b, const real *dout,      \
        const real *q_x, const real *kv_x, const real *bias, const real *mask,                     \
        const real *query_w, const real *key_w, const real *value_w, const real *gating_w,         \
        const real *gating_b, const real *output_w, const real *output_b, int64_t B, int64_t Q,    \
        int64_t K, int64_t Cin, int64_t H, int64_t D, int64_t Cout);

MF_REF_DECLARE(float, f32)
MF_REF_DECLARE(double, f64)

#endif
