/* Multi-head attention on the CPU (AF2 supplement Alg. 7 lines 5-6; Alg. 8, 13, 14 use the same
 * core). Per batch element, queries are processed in chunks of ctx->policy.chunk_size: the chunk's
 * queries and the element's keys and values are gathered head-major ([H, rows, D]) so oneDNN's
 * batched matmul (batch = heads) forms the logits and p v; bias, mask and softmax are one fused
 * pass in C. Transient memory is O(H * chunk * K + H * K * D); nothing of size B*H*Q*K exists.
 * Backward recomputes p from the saved log-sum-exp (flash-attention style).
 * f64 tensors (the double-precision oracle runs) go to the plain double reference, unchunked. */
#include "core/cpu/attention_cpu.h"

#include "core/attention_mask.h"

#include "core/ref/ref.h"

#include <math.h>
#include <string.h>

#define MF_ATTN_LABEL "attention scratch"

/* Element i of an f32 or bf16 array, as f32. */
static inline float load_elem(const void *base, mf_dtype dt, int64_t i)
{
    if (dt == MF_BF16) return mf_bf16_to_f32(((const mf_bf16 *)base)[i]);
    return ((const float *)base)[i];
}

/* dst[h, i, :] = src[b, l0 + i, h, :] for i < n; src [B, L, H, D] in f32 or bf16. */
static void gather_heads(float *dst /* [H, n, D] */, const mf_tensor *src, int64_t b, int64_t l0,
                         int64_t n)
{
    int64_t L = src->shape[1], H = src->shape[2], D = src->shape[3];
#pragma omp parallel for collapse(2) schedule(static) if (H * n * D > 32768)
    for (int64_t h = 0; h < H; h++)
        for (int64_t i = 0; i < n; i++) {
            int64_t so = ((b * L + l0 + i) * H + h) * D;
            float *d = dst + (h * n + i) * D;
            if (src->dtype == MF_BF16)
                for (int64_t x = 0; x < D; x++) d[x] = load_elem(src->data, MF_BF16, so + x);
            else
                memcpy(d, (const float *)src->data + so, sizeof(float) * (size_t)D);
        }
}

/* dst[b, l0 + i, h, :] = src[h, i, :] (or += when add); dst [B, L, H, D] f32. */
static void scatter_heads(mf_tensor *dst, const float *src /* [H, n, D] */, int64_t b, int64_t l0,
                          int64_t n, bool add)
{
    int64_t L = dst->shape[1], H = dst->shape[2], D = dst->shape[3];
    float *out = dst->data;
#pragma omp parallel for collapse(2) schedule(static) if (H * n * D > 32768)
    for (int64_t i = 0; i < n; i++)
        for (int64_t h = 0; h < H; h++) {
            float *d = out + ((b * L + l0 + i) * H + h) * D;
            const float *s = src + (h * n + i) * D;
            if (add) {
#pragma omp simd
                for (int64_t x = 0; x < D; x++) d[x] += s[x];
            } else {
                memcpy(d, s, sizeof(float) * (size_t)D);
            }
        }
}

/* exp(x) for the softmax, written so the compiler vectorises it (libm's expf is a scalar call and
 * took about a third of the attention time): Cephes' range reduction x = n ln2 + r and degree-5
 * polynomial, within 2 ulp of expf on [-87.3, 88]; 0 below -87.3, where expf itself underflows to
 * subnormals and where masked logits (about -1e9) land. NaN stays NaN; no float-to-int casts. */
static inline float softmax_expf(float x)
{
    x = x > 88.0f ? 88.0f : x;
    bool tiny = x < -87.3f;
    x = x < -87.3f ? -87.3f : x;
    /* n = round(x log2 e) by adding 1.5 * 2^23, which also leaves n in the low mantissa bits
     * (floorf would block vectorisation under -ftrapping-math) */
    union {
        float f;
        uint32_t u;
    } n = {.f = x * 1.44269504088896341f + 12582912.0f}, scale;
    float fx = n.f - 12582912.0f;
    float r = x - fx * 0.693359375f;
    r = r - fx * -2.12194440e-4f;
    float y = 1.9875691500e-4f;
    y = y * r + 1.3981999507e-3f;
    y = y * r + 8.3334519073e-3f;
    y = y * r + 4.1665795894e-2f;
    y = y * r + 1.6666665459e-1f;
    y = y * r + 5.0000001201e-1f;
    y = y * (r * r) + r + 1.0f;
    scale.u = (n.u - 0x4b400000u + 127u) << 23;
    return tiny ? 0.0f : y * scale.f;
}

/* Adds bias [H, Q, K] and AF2's additive key mask 1e9 (mask[b, k] - 1) to the logit row of
 * (head h, query qi), as modules.py does before its softmax. */
static inline void add_bias_mask(float *s /* [K] */, const float *bias, const float *mask,
                                 int64_t b, int64_t h, int64_t qi, int64_t Q, int64_t K)
{
    if (bias) {
        const float *br = bias + (h * Q + qi) * K;
#pragma omp simd
        for (int64_t k = 0; k < K; k++) s[k] += br[k];
    }
    if (mask) {
        const float *mr = mask + b * K;
#pragma omp simd
        for (int64_t k = 0; k < K; k++) s[k] += 1e9f * (mr[k] - 1.0f);
    }
}

/* Logits of one chunk -> probabilities in place; lse[b, h, q0 + i] is each row's log-sum-exp. */
static void softmax_chunk_forward(float *s /* [H, n, K] */, float *lse /* [B, H, Q] or NULL */,
                                  const float *bias, const float *mask, int64_t b, int64_t q0,
                                  int64_t n, int64_t H, int64_t Q, int64_t K)
{
#pragma omp parallel for schedule(static) if (H * n * K > 16384)
    for (int64_t r = 0; r < H * n; r++) {
        int64_t h = r / n, qi = q0 + r % n;
        float *row = s + r * K;
        add_bias_mask(row, bias, mask, b, h, qi, Q, K);
        float mx = -INFINITY;
#pragma omp simd reduction(max : mx)
        for (int64_t k = 0; k < K; k++) mx = row[k] > mx ? row[k] : mx;
#pragma omp simd
        for (int64_t k = 0; k < K; k++) row[k] = softmax_expf(row[k] - mx);
        float sum = 0;
#pragma omp simd reduction(+ : sum)
        for (int64_t k = 0; k < K; k++) sum += row[k];
        float inv = 1.0f / sum;
#pragma omp simd
        for (int64_t k = 0; k < K; k++) row[k] *= inv;
        if (lse) lse[(b * H + h) * Q + qi] = mx + logf(sum);
    }
}

/* Backward: logits -> p = exp(logit - lse) in place, the forward's probabilities recomputed. */
static void softmax_chunk_recompute(float *s /* [H, n, K] */, const float *lse, const float *bias,
                                    const float *mask, int64_t b, int64_t q0, int64_t n, int64_t H,
                                    int64_t Q, int64_t K)
{
#pragma omp parallel for schedule(static) if (H * n * K > 16384)
    for (int64_t r = 0; r < H * n; r++) {
        int64_t h = r / n, qi = q0 + r % n;
        float *row = s + r * K;
        add_bias_mask(row, bias, mask, b, h, qi, Q, K);
        const float l = lse[(b * H + h) * Q + qi], ms = mf_attn_masked_scale(l, K);
#pragma omp simd
        for (int64_t k = 0; k < K; k++) row[k] = softmax_expf(row[k] - l) * ms;
    }
}

/* dp -> ds = p (dp - delta) in place (softmax backward), dbias[h, q0 + i, :] += ds. */
static void softmax_chunk_backward(float *dp /* [H, n, K] */, const float *p /* [H, n, K] */,
                                   const float *delta /* [H, n] */, float *dbias, int64_t q0,
                                   int64_t n, int64_t H, int64_t Q, int64_t K)
{
#pragma omp parallel for schedule(static) if (H * n * K > 16384)
    for (int64_t r = 0; r < H * n; r++) {
        int64_t h = r / n, qi = q0 + r % n;
        float *row = dp + r * K;
        const float *pr = p + r * K;
        float dl = delta[r];
#pragma omp simd
        for (int64_t k = 0; k < K; k++) row[k] = pr[k] * (row[k] - dl);
        if (dbias) {
            float *db = dbias + (h * Q + qi) * K;
#pragma omp simd
            for (int64_t k = 0; k < K; k++) db[k] += row[k];
        }
    }
}

/* delta[h, i] = sum_d dout[b, q0+i, h, d] out[b, q0+i, h, d]: equals sum_k p dp, the softmax
 * backward's row term, without materialising dp first. */
static void rowsum_dout_out(float *delta /* [H, n] */, const mf_tensor *dout, const mf_tensor *out,
                            int64_t b, int64_t q0, int64_t n)
{
    int64_t Q = out->shape[1], H = out->shape[2], D = out->shape[3];
    const float *go = dout->data;
#pragma omp parallel for collapse(2) schedule(static) if (H * n * D > 32768)
    for (int64_t h = 0; h < H; h++)
        for (int64_t i = 0; i < n; i++) {
            int64_t o = ((b * Q + q0 + i) * H + h) * D;
            float s = 0;
            for (int64_t x = 0; x < D; x++)
                s += go[o + x] * load_elem(out->data, out->dtype, o + x);
            delta[h * n + i] = s;
        }
}

static mf_status scratch(mf_ctx *ctx, mf_tensor *t, int64_t d0, int64_t d1, int64_t d2)
{
    int64_t shape[3] = {d0, d1, d2};
    return mf_arena_tensor(ctx->arena, t, MF_F32, 3, shape, MF_ATTN_LABEL);
}

/* Query rows per chunk: ctx->policy.chunk_size (0 = all), except that no chunk has exactly one
 * row unless Q == 1. oneDNN (2.6, checked by tests/test_attention.c) runs a one-row product through
 * a different kernel whose rounding differs from the same row inside a larger product; with
 * chunks of at least two rows every row comes out bitwise identical whatever the chunk size. */
static int64_t query_chunk(const mf_ctx *ctx, int64_t Q)
{
    int64_t c = ctx->policy.chunk_size;
    return c > 0 && c < Q ? c : Q;
}

static int64_t chunk_rows(int64_t C, int64_t remaining)
{
    int64_t n = remaining < C ? remaining : C;
    if (n == 1 && remaining > 1) n = 2;
    if (remaining - n == 1) n++;
    return n;
}

/* Scratch rows for chunks from chunk_rows: at most max(C, 2) + 1, and never more than Q. */
static int64_t chunk_capacity(int64_t C, int64_t Q)
{
    int64_t m = (C > 2 ? C : 2) + 1;
    return m < Q ? m : Q;
}

mf_status mf_cpu_attention_forward(mf_ctx *ctx, mf_tensor *out, mf_tensor *lse, const mf_tensor *q,
                                   const mf_tensor *k, const mf_tensor *v, const mf_tensor *bias,
                                   const mf_tensor *mask, float scale)
{
    int64_t B = q->shape[0], Q = q->shape[1], H = q->shape[2], D = q->shape[3];
    int64_t K = k->shape[1], C = query_chunk(ctx, Q), cap = chunk_capacity(C, Q);
    if (q->dtype == MF_F64) {
        mf_ref_attention_forward_f64(out->data, lse ? lse->data : NULL, q->data, k->data, v->data,
                                     bias ? bias->data : NULL, mask ? mask->data : NULL, B, Q, K, H,
                                     D, scale);
        return MF_OK;
    }
    const float *bias_p = bias ? bias->data : NULL, *mask_p = mask ? mask->data : NULL;
    float *lse_p = lse ? lse->data : NULL;
    if (B == 0 || Q == 0 || H == 0) return MF_OK;

    mf_arena_mark_t mark = mf_arena_mark(ctx->arena);
    mf_status st = MF_OK;
    mf_tensor kh, vh, qh, s, oh;
    MF_TRY_GOTO(scratch(ctx, &kh, H, K, D));
    MF_TRY_GOTO(scratch(ctx, &vh, H, K, D));
    MF_TRY_GOTO(scratch(ctx, &qh, H, cap, D));
    MF_TRY_GOTO(scratch(ctx, &s, H, cap, K));
    MF_TRY_GOTO(scratch(ctx, &oh, H, cap, D));
    for (int64_t b = 0; b < B; b++) {
        gather_heads(kh.data, k, b, 0, K);
        gather_heads(vh.data, v, b, 0, K);
        for (int64_t q0 = 0, n; q0 < Q; q0 += n) {
            n = chunk_rows(C, Q - q0);
            mf_tensor qc = mf_tensor_f32(qh.data, 3, H, n, D);
            mf_tensor sc = mf_tensor_f32(s.data, 3, H, n, K);
            mf_tensor oc = mf_tensor_f32(oh.data, 3, H, n, D);
            gather_heads(qc.data, q, b, q0, n);
            /* Alg. 7 line 5: scale q.k; bias, mask and softmax fused below */
            MF_TRY_GOTO(mf_matmul(ctx, &sc, &qc, false, &kh, true, scale, 0.0f));
            softmax_chunk_forward(sc.data, lse_p, bias_p, mask_p, b, q0, n, H, Q, K);
            MF_TRY_GOTO(mf_matmul(ctx, &oc, &sc, false, &vh, false, 1.0f, 0.0f));
            scatter_heads(out, oc.data, b, q0, n, false);
        }
    }
cleanup:
    mf_arena_release(ctx->arena, mark);
    return st;
}

mf_status mf_cpu_attention_backward(mf_ctx *ctx, mf_tensor *dq, mf_tensor *dk, mf_tensor *dv,
                                    mf_tensor *dbias, const mf_tensor *dout, const mf_tensor *out,
                                    const mf_tensor *lse, const mf_tensor *q, const mf_tensor *k,
                                    const mf_tensor *v, const mf_tensor *bias,
                                    const mf_tensor *mask, float scale)
{
    int64_t B = q->shape[0], Q = q->shape[1], H = q->shape[2], D = q->shape[3];
    int64_t K = k->shape[1], C = query_chunk(ctx, Q), cap = chunk_capacity(C, Q);
    const float *bias_p = bias ? bias->data : NULL, *mask_p = mask ? mask->data : NULL;
    if (q->dtype == MF_F64) {
        /* the reference recomputes p itself: out and lse are not needed */
        mf_ref_attention_backward_f64(dq ? dq->data : NULL, dk ? dk->data : NULL,
                                      dv ? dv->data : NULL, dbias ? dbias->data : NULL, dout->data,
                                      q->data, k->data, v->data, bias ? bias->data : NULL,
                                      mask ? mask->data : NULL, B, Q, K, H, D, scale);
        return MF_OK;
    }
    float *dbias_p = dbias ? dbias->data : NULL;
    bool need_ds = dq || dk || dbias;
    if (B == 0 || Q == 0 || H == 0 || (!need_ds && !dv)) return MF_OK;

    mf_arena_mark_t mark = mf_arena_mark(ctx->arena);
    mf_status st = MF_OK;
    mf_tensor kh, vh, dkh, dvh, qh, doh, dqh, p, dp, delta;
    MF_TRY_GOTO(scratch(ctx, &kh, H, K, D));
    MF_TRY_GOTO(scratch(ctx, &vh, H, K, D));
    if (dk) MF_TRY_GOTO(scratch(ctx, &dkh, H, K, D));
    if (dv) MF_TRY_GOTO(scratch(ctx, &dvh, H, K, D));
    MF_TRY_GOTO(scratch(ctx, &qh, H, cap, D));
    MF_TRY_GOTO(scratch(ctx, &doh, H, cap, D));
    if (dq) MF_TRY_GOTO(scratch(ctx, &dqh, H, cap, D));
    MF_TRY_GOTO(scratch(ctx, &p, H, cap, K));
    MF_TRY_GOTO(scratch(ctx, &dp, H, cap, K));
    MF_TRY_GOTO(scratch(ctx, &delta, 1, H, cap));
    for (int64_t b = 0; b < B; b++) {
        gather_heads(kh.data, k, b, 0, K);
        gather_heads(vh.data, v, b, 0, K);
        for (int64_t q0 = 0, n; q0 < Q; q0 += n) {
            n = chunk_rows(C, Q - q0);
            /* the first chunk of each batch element starts the per-element key gradients */
            float beta_kv = q0 == 0 ? 0.0f : 1.0f;
            mf_tensor qc = mf_tensor_f32(qh.data, 3, H, n, D);
            mf_tensor doc = mf_tensor_f32(doh.data, 3, H, n, D);
            mf_tensor pc = mf_tensor_f32(p.data, 3, H, n, K);
            mf_tensor dpc = mf_tensor_f32(dp.data, 3, H, n, K);
            gather_heads(qc.data, q, b, q0, n);
            gather_heads(doc.data, dout, b, q0, n);
            MF_TRY_GOTO(mf_matmul(ctx, &pc, &qc, false, &kh, true, scale, 0.0f));
            softmax_chunk_recompute(pc.data, lse->data, bias_p, mask_p, b, q0, n, H, Q, K);
            if (dv) MF_TRY_GOTO(mf_matmul(ctx, &dvh, &pc, true, &doc, false, 1.0f, beta_kv));
            if (!need_ds) continue;
            rowsum_dout_out(delta.data, dout, out, b, q0, n);
            MF_TRY_GOTO(mf_matmul(ctx, &dpc, &doc, false, &vh, true, 1.0f, 0.0f));
            softmax_chunk_backward(dpc.data, pc.data, delta.data, dbias_p, q0, n, H, Q, K);
            if (dq) {
                mf_tensor dqc = mf_tensor_f32(dqh.data, 3, H, n, D);
                MF_TRY_GOTO(mf_matmul(ctx, &dqc, &dpc, false, &kh, false, scale, 0.0f));
                scatter_heads(dq, dqc.data, b, q0, n, true);
            }
            if (dk) MF_TRY_GOTO(mf_matmul(ctx, &dkh, &dpc, true, &qc, false, scale, beta_kv));
        }
        if (dk) scatter_heads(dk, dkh.data, b, 0, K, true);
        if (dv) scatter_heads(dv, dvh.data, b, 0, K, true);
    }
cleanup:
    mf_arena_release(ctx->arena, mark);
    return st;
}

void mf_cpu_gate_backward(float *dlogit, float *dog, const float *o, const float *g, int64_t n)
{
#pragma omp parallel for simd schedule(static) if (n > 65536)
    for (int64_t i = 0; i < n; i++) {
        float gi = g[i];
        dlogit[i] = dog[i] * o[i] * gi * (1.0f - gi);
        dog[i] *= gi;
    }
}

void mf_cpu_gate_backward_f64(double *dlogit, double *dog, const double *o, const double *g,
                              int64_t n)
{
#pragma omp parallel for simd schedule(static) if (n > 65536)
    for (int64_t i = 0; i < n; i++) {
        double gi = g[i];
        dlogit[i] = dog[i] * o[i] * gi * (1.0 - gi);
        dog[i] *= gi;
    }
}
