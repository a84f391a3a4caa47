/* The per-thread bodies of the CUDA attention kernels (core/cuda/cuda_attention.cu), written in
 * the common subset of C11 and CUDA C++ so that the very same code also runs on the host:
 * tests/test_attention_rows.c drives every body over all its thread indices on the CPU and holds
 * the results against the CPU attention (core/cpu/attention_cpu.c). The indexing and arithmetic
 * of the GPU path are thereby checked on machines without a GPU; the GPU tests
 * (tests/cuda/test_cuda_ops.c) check the launches on a device.
 *
 * Semantics are mf_attention_forward/backward's (core/ops.h), with the same order of operations
 * in a logit as the CPU (scaled dot product, then the bias, then the mask term):
 *   logit[b,h,q,k] = scale q[b,q,h,:].k[b,k,h,:] + bias[h,q,k] + 1e9 (mask[b,k] - 1)
 *   out[b,q,h,:] = sum_k p[b,h,q,k] v[b,k,h,:],  p = softmax_k(logit),  lse = log sum_k exp(logit)
 * Flash-style: a thread owns one query row (forward, dq) or one key row (dk, dv) and walks the
 * other side, with an online softmax in the forward and p recomputed from the saved lse in the
 * backward, so no [Q, K] matrix of logits or probabilities is ever stored. The first
 * MF_ATTN_DREG elements of the thread's own q (or k, v, dout) row live in registers; output
 * columns are produced in slices of MF_ATTN_DREG (one slice for every head dim AlphaFold 2
 * uses: 8, 16 and 32), each slice walking the other side again. */
#ifndef MF_CORE_CUDA_ATTENTION_ROWS_H
#define MF_CORE_CUDA_ATTENTION_ROWS_H

#include <math.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/attention_mask.h"
#include "core/dtype.h"

#define MF_ATTN_DREG 32

#if defined(__CUDACC__)
#define MF_ATTN_UNROLL _Pragma("unroll")
#else
#define MF_ATTN_UNROLL
#endif

typedef struct {
    /* q [B, Q, H, D]; k, v [B, K, H, D]: f32, or bf16 where the flag says so (saved activations
     * stored in bf16) */
    const void *q, *k, *v;
    bool q_bf16, k_bf16, v_bf16;
    const float *bias; /* [H, Q, K] or NULL */
    const float *mask; /* [B, K] or NULL */
    int64_t B, Q, K, H, D;
    float scale;
    /* forward: out [B, Q, H, D] (written); lse [B, H, Q] (written) or NULL */
    float *out, *lse;
    /* backward: dout [B, Q, H, D]; o, the forward's out (f32 or bf16); lse_in and delta
     * [B, H, Q]; dq [B, Q, H, D], dk and dv [B, K, H, D] accumulated (+=), each NULL when not
     * wanted */
    const float *dout;
    const void *o;
    bool o_bf16;
    const float *lse_in;
    float *delta;
    float *dq, *dk, *dv;
} mf_attn_rows;

static inline MF_HOSTDEV float mf_attn_ld(const void *p, bool bf16, int64_t i)
{
    if (bf16) return mf_bf16_to_f32(((const mf_bf16 *)p)[i]);
    return ((const float *)p)[i];
}

static inline MF_HOSTDEV int64_t mf_attn_qoff(const mf_attn_rows *a, int64_t b, int64_t h,
                                              int64_t qi)
{
    return ((b * a->Q + qi) * a->H + h) * a->D;
}

static inline MF_HOSTDEV int64_t mf_attn_koff(const mf_attn_rows *a, int64_t b, int64_t h,
                                              int64_t kj)
{
    return ((b * a->K + kj) * a->H + h) * a->D;
}

/* Index of the query row (b, h, qi) in the [B, H, Q] arrays lse and delta. */
static inline MF_HOSTDEV int64_t mf_attn_row(const mf_attn_rows *a, int64_t b, int64_t h,
                                             int64_t qi)
{
    return (b * a->H + h) * a->Q + qi;
}

/* reg[d] = row[off + d] for d < min(D, MF_ATTN_DREG), 0 beyond. */
static inline MF_HOSTDEV void mf_attn_load_reg(float *reg, const void *row, bool bf16, int64_t off,
                                               int64_t D)
{
    MF_ATTN_UNROLL
    for (int d = 0; d < MF_ATTN_DREG; d++) reg[d] = d < D ? mf_attn_ld(row, bf16, off + d) : 0.0f;
}

/* sum_d reg[d] * y[yoff + d] over d < D, where reg holds the first MF_ATTN_DREG elements of the
 * other operand, whose remaining elements are read from x[xoff + d]. Products are added in order
 * of d, whichever operand sits in registers, so a query-owned and a key-owned thread form the
 * same logit bit for bit. */
static inline MF_HOSTDEV float mf_attn_dot(const float *reg, const void *x, bool x_bf16,
                                           int64_t xoff, const void *y, bool y_bf16, int64_t yoff,
                                           int64_t D)
{
    float s = 0.0f;
    MF_ATTN_UNROLL
    for (int d = 0; d < MF_ATTN_DREG; d++)
        if (d < D) s += reg[d] * mf_attn_ld(y, y_bf16, yoff + d);
    for (int64_t d = MF_ATTN_DREG; d < D; d++)
        s += mf_attn_ld(x, x_bf16, xoff + d) * mf_attn_ld(y, y_bf16, yoff + d);
    return s;
}

/* The logit of (b, h, qi, kj) from the dot product q.k (not yet scaled). */
static inline MF_HOSTDEV float mf_attn_logit(const mf_attn_rows *a, float qk, int64_t b, int64_t h,
                                             int64_t qi, int64_t kj)
{
    float s = a->scale * qk;
    if (a->bias) s += a->bias[(h * a->Q + qi) * a->K + kj];
    if (a->mask) s += 1e9f * (a->mask[b * a->K + kj] - 1.0f);
    return s;
}

/* Forward of the query row (b, h, qi): out[b, qi, h, :] and lse[b, h, qi]. */
static inline MF_HOSTDEV void mf_attn_forward_row(const mf_attn_rows *a, int64_t b, int64_t h,
                                                  int64_t qi)
{
    const int64_t D = a->D, qo = mf_attn_qoff(a, b, h, qi);
    float qr[MF_ATTN_DREG];
    mf_attn_load_reg(qr, a->q, a->q_bf16, qo, D);
    float lse = 0.0f;
    for (int64_t d0 = 0; d0 < D; d0 += MF_ATTN_DREG) {
        float m = -INFINITY, l = 0.0f, acc[MF_ATTN_DREG];
        MF_ATTN_UNROLL
        for (int j = 0; j < MF_ATTN_DREG; j++) acc[j] = 0.0f;
        for (int64_t kj = 0; kj < a->K; kj++) {
            const int64_t ko = mf_attn_koff(a, b, h, kj);
            const float qk = mf_attn_dot(qr, a->q, a->q_bf16, qo, a->k, a->k_bf16, ko, D);
            const float s = mf_attn_logit(a, qk, b, h, qi, kj);
            if (s > m) {
                /* a new running maximum: rescale what was summed under the old one */
                const float c = expf(m - s);
                l *= c;
                MF_ATTN_UNROLL
                for (int j = 0; j < MF_ATTN_DREG; j++) acc[j] *= c;
                m = s;
            }
            const float p = expf(s - m);
            l += p;
            MF_ATTN_UNROLL
            for (int j = 0; j < MF_ATTN_DREG; j++)
                if (d0 + j < D) acc[j] += p * mf_attn_ld(a->v, a->v_bf16, ko + d0 + j);
        }
        const float inv = 1.0f / l;
        MF_ATTN_UNROLL
        for (int j = 0; j < MF_ATTN_DREG; j++)
            if (d0 + j < D) a->out[qo + d0 + j] = acc[j] * inv;
        lse = m + logf(l);
    }
    if (a->lse) a->lse[mf_attn_row(a, b, h, qi)] = lse;
}

/* delta[b, h, qi] = sum_d dout o over the query row: the softmax backward's row term
 * sum_k p dp, without forming dp. */
static inline MF_HOSTDEV void mf_attn_delta_row(const mf_attn_rows *a, int64_t b, int64_t h,
                                                int64_t qi)
{
    const int64_t qo = mf_attn_qoff(a, b, h, qi);
    float s = 0.0f;
    for (int64_t d = 0; d < a->D; d++) s += a->dout[qo + d] * mf_attn_ld(a->o, a->o_bf16, qo + d);
    a->delta[mf_attn_row(a, b, h, qi)] = s;
}

/* ds = p (dp - delta) of one logit, everything read from memory (the dbias reduction's term). */
static inline MF_HOSTDEV float mf_attn_ds(const mf_attn_rows *a, int64_t b, int64_t h, int64_t qi,
                                          int64_t kj)
{
    const int64_t D = a->D, qo = mf_attn_qoff(a, b, h, qi), ko = mf_attn_koff(a, b, h, kj);
    const int64_t r = mf_attn_row(a, b, h, qi);
    float qk = 0.0f, dp = 0.0f;
    for (int64_t d = 0; d < D; d++) {
        qk += mf_attn_ld(a->q, a->q_bf16, qo + d) * mf_attn_ld(a->k, a->k_bf16, ko + d);
        dp += a->dout[qo + d] * mf_attn_ld(a->v, a->v_bf16, ko + d);
    }
    const float l = a->lse_in[r];
    const float p = expf(mf_attn_logit(a, qk, b, h, qi, kj) - l) * mf_attn_masked_scale(l, a->K);
    return p * (dp - a->delta[r]);
}

/* dq[b, qi, h, :] += scale sum_k ds k of the query row (b, h, qi). */
static inline MF_HOSTDEV void mf_attn_dq_row(const mf_attn_rows *a, int64_t b, int64_t h,
                                             int64_t qi)
{
    const int64_t D = a->D, qo = mf_attn_qoff(a, b, h, qi);
    const int64_t r = mf_attn_row(a, b, h, qi);
    const float l = a->lse_in[r], dl = a->delta[r], ms = mf_attn_masked_scale(l, a->K);
    float qr[MF_ATTN_DREG], gr[MF_ATTN_DREG];
    mf_attn_load_reg(qr, a->q, a->q_bf16, qo, D);
    mf_attn_load_reg(gr, a->dout, false, qo, D);
    for (int64_t d0 = 0; d0 < D; d0 += MF_ATTN_DREG) {
        float acc[MF_ATTN_DREG];
        MF_ATTN_UNROLL
        for (int j = 0; j < MF_ATTN_DREG; j++) acc[j] = 0.0f;
        for (int64_t kj = 0; kj < a->K; kj++) {
            const int64_t ko = mf_attn_koff(a, b, h, kj);
            const float qk = mf_attn_dot(qr, a->q, a->q_bf16, qo, a->k, a->k_bf16, ko, D);
            const float p = expf(mf_attn_logit(a, qk, b, h, qi, kj) - l) * ms;
            const float dp = mf_attn_dot(gr, a->dout, false, qo, a->v, a->v_bf16, ko, D);
            const float ds = p * (dp - dl);
            MF_ATTN_UNROLL
            for (int j = 0; j < MF_ATTN_DREG; j++)
                if (d0 + j < D) acc[j] += ds * mf_attn_ld(a->k, a->k_bf16, ko + d0 + j);
        }
        MF_ATTN_UNROLL
        for (int j = 0; j < MF_ATTN_DREG; j++)
            if (d0 + j < D) a->dq[qo + d0 + j] += a->scale * acc[j];
    }
}

/* dk[b, kj, h, :] += scale sum_q ds q and dv[b, kj, h, :] += sum_q p dout of the key row
 * (b, h, kj); either may be NULL. */
static inline MF_HOSTDEV void mf_attn_dkv_row(const mf_attn_rows *a, int64_t b, int64_t h,
                                              int64_t kj)
{
    const int64_t D = a->D, ko = mf_attn_koff(a, b, h, kj);
    float kr[MF_ATTN_DREG], vr[MF_ATTN_DREG];
    mf_attn_load_reg(kr, a->k, a->k_bf16, ko, D);
    mf_attn_load_reg(vr, a->v, a->v_bf16, ko, D);
    for (int64_t d0 = 0; d0 < D; d0 += MF_ATTN_DREG) {
        float gk[MF_ATTN_DREG], gv[MF_ATTN_DREG];
        MF_ATTN_UNROLL
        for (int j = 0; j < MF_ATTN_DREG; j++) gk[j] = gv[j] = 0.0f;
        for (int64_t qi = 0; qi < a->Q; qi++) {
            const int64_t qo = mf_attn_qoff(a, b, h, qi), r = mf_attn_row(a, b, h, qi);
            /* q.k with k in registers: the same products in the same order as the query row's */
            const float qk = mf_attn_dot(kr, a->k, a->k_bf16, ko, a->q, a->q_bf16, qo, D);
            const float l = a->lse_in[r];
            const float p =
                expf(mf_attn_logit(a, qk, b, h, qi, kj) - l) * mf_attn_masked_scale(l, a->K);
            if (a->dv) {
                MF_ATTN_UNROLL
                for (int j = 0; j < MF_ATTN_DREG; j++)
                    if (d0 + j < D) gv[j] += p * a->dout[qo + d0 + j];
            }
            if (a->dk) {
                const float dp = mf_attn_dot(vr, a->v, a->v_bf16, ko, a->dout, false, qo, D);
                const float ds = p * (dp - a->delta[r]);
                MF_ATTN_UNROLL
                for (int j = 0; j < MF_ATTN_DREG; j++)
                    if (d0 + j < D) gk[j] += ds * mf_attn_ld(a->q, a->q_bf16, qo + d0 + j);
            }
        }
        MF_ATTN_UNROLL
        for (int j = 0; j < MF_ATTN_DREG; j++)
            if (d0 + j < D) {
                if (a->dk) a->dk[ko + d0 + j] += a->scale * gk[j];
                if (a->dv) a->dv[ko + d0 + j] += gv[j];
            }
    }
}

#endif
