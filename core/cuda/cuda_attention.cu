/* Multi-head attention on CUDA (mf_attention_forward/backward's twins) and the gate backward of
 * the gated module. Flash-style: one thread per query row (forward, dq) or key row (dk, dv)
 * walks the other side with an online softmax, or with p recomputed from the saved log-sum-exp
 * in the backward, so no [Q, K] logits are stored; bias and mask are applied per logit. The
 * thread bodies are core/cuda/attention_rows.h, shared with the host test that checks them
 * against the CPU attention without a GPU (tests/test_attention_rows.c).
 *
 * Thread order puts the owned row index fastest, so the 32 threads of a warp share (b, h) and
 * read each key (forward, dq) or query (dk, dv) row of the other side at the same address: one
 * broadcast load per warp. dbias sums ds over the batch with the deterministic column sum
 * (cuda_reduce.cuh), recomputing each term, so nothing of size B*H*Q*K is stored either.
 *
 * Not yet tensor-core tiled: the dot products run on the FP32 units. */
#include "core/cuda/attention_rows.h"
#include "core/cuda/cuda_reduce.cuh"

/* What a row kernel does: the first three own a query row, the last a key row. */
enum { ATTN_FORWARD, ATTN_DELTA, ATTN_DQ, ATTN_DKV };

/* Threads per block of the row kernels (register-heavy: 2-4 register rows of MF_ATTN_DREG). */
#define ATTN_THREADS 128

template <int which>
__global__ static void __launch_bounds__(ATTN_THREADS)
    attn_rows_kernel(const __grid_constant__ mf_attn_rows a)
{
    const int64_t L = which == ATTN_DKV ? a.K : a.Q;
    MF_GRID_LOOP(t, a.B * a.H * L)
    {
        const int64_t r = t % L, bh = t / L, h = bh % a.H, b = bh / a.H;
        if (which == ATTN_FORWARD)
            mf_attn_forward_row(&a, b, h, r);
        else if (which == ATTN_DELTA)
            mf_attn_delta_row(&a, b, h, r);
        else if (which == ATTN_DQ)
            mf_attn_dq_row(&a, b, h, r);
        else
            mf_attn_dkv_row(&a, b, h, r);
    }
}

/* Terms of dbias[h, q, k] = sum_b ds[b, h, q, k] over the [1, B, H*Q*K] view. */
struct attn_dbias_terms {
    mf_attn_rows a;
    __device__ float operator()(int64_t, int64_t b, int64_t j) const
    {
        const int64_t kj = j % a.K, hq = j / a.K;
        return mf_attn_ds(&a, b, hq / a.Q, hq % a.Q, kj);
    }
};

template <int which> static mf_status launch_rows(mf_ctx *ctx, const mf_attn_rows *a)
{
    const int64_t n = a->B * a->H * (which == ATTN_DKV ? a->K : a->Q);
    if (n == 0) return MF_OK;
    attn_rows_kernel<which>
        <<<mf_cuda_blocks(n, ATTN_THREADS), ATTN_THREADS, 0, ctx->cuda->stream>>>(*a);
    MF_CUDA_CHECK_LAUNCH();
    return MF_OK;
}

/* q, k, v, o: f32, or bf16 (saved activations stored in bf16). */
static mf_status check_qkv(const mf_tensor *t, const char *op, const char *name)
{
    return mf_cuda_check_dev(t, op, name, t && t->dtype == MF_BF16 ? MF_BF16 : MF_F32);
}

static mf_status check_common(mf_ctx *ctx, const char *op, const mf_tensor *q, const mf_tensor *k,
                              const mf_tensor *v, const mf_tensor *bias, const mf_tensor *mask,
                              mf_attn_rows *a)
{
    MF_TRY(mf_cuda_check_ctx(ctx, op));
    MF_TRY(check_qkv(q, op, "q"));
    MF_TRY(check_qkv(k, op, "k"));
    MF_TRY(check_qkv(v, op, "v"));
    MF_TRY(mf_check_tensor(q, "attention q", q->dtype, 4));
    MF_TRY(mf_check_tensor(k, "attention k", k->dtype, 4));
    const int64_t B = q->shape[0], Q = q->shape[1], H = q->shape[2], D = q->shape[3],
                  K = k->shape[1];
    MF_TRY(mf_cuda_check_numel(k, "k [B, K, H, D]", B * K * H * D, op));
    MF_TRY(mf_cuda_check_numel(v, "v [B, K, H, D]", B * K * H * D, op));
    MF_TRY(mf_cuda_check_bias_mask(op, bias, mask, B, H, Q, K));
    if (K == 0 && B * Q * H * D > 0)
        return MF_ERROR(MF_ERR_INVALID, "%s: attention over zero keys", op);
    *a = mf_attn_rows{};
    a->q = q->data;
    a->k = k->data;
    a->v = v->data;
    a->q_bf16 = q->dtype == MF_BF16;
    a->k_bf16 = k->dtype == MF_BF16;
    a->v_bf16 = v->dtype == MF_BF16;
    a->bias = bias ? (const float *)bias->data : NULL;
    a->mask = mask ? (const float *)mask->data : NULL;
    a->B = B;
    a->Q = Q;
    a->K = K;
    a->H = H;
    a->D = D;
    return MF_OK;
}

extern "C" mf_status mf_cuda_attention_forward(mf_ctx *ctx, mf_tensor *out, mf_tensor *lse,
                                               const mf_tensor *q, const mf_tensor *k,
                                               const mf_tensor *v, const mf_tensor *bias,
                                               const mf_tensor *mask, float scale)
{
    const char *op = "attention_forward";
    mf_attn_rows a;
    MF_TRY(check_common(ctx, op, q, k, v, bias, mask, &a));
    MF_TRY(mf_cuda_check_dev(out, op, "out", MF_F32));
    MF_TRY(mf_cuda_check_numel(out, "out [B, Q, H, D]", mf_tensor_numel(q), op));
    if (lse) {
        MF_TRY(mf_cuda_check_dev(lse, op, "lse", MF_F32));
        MF_TRY(mf_cuda_check_numel(lse, "lse [B, H, Q]", a.B * a.H * a.Q, op));
    }
    if (a.D == 0) return MF_OK;
    a.scale = scale;
    a.out = (float *)out->data;
    a.lse = lse ? (float *)lse->data : NULL;
    return launch_rows<ATTN_FORWARD>(ctx, &a);
}

static mf_status attention_backward_impl(mf_ctx *ctx, mf_attn_rows *a, mf_tensor *dbias,
                                         bool need_ds)
{
    if (need_ds) {
        MF_TRY(mf_arena_alloc(ctx->arena, (size_t)(a->B * a->H * a->Q) * sizeof(float),
                              "cuda attention delta", (void **)&a->delta));
        MF_TRY(launch_rows<ATTN_DELTA>(ctx, a));
    }
    if (a->dq) MF_TRY(launch_rows<ATTN_DQ>(ctx, a));
    if (a->dk || a->dv) MF_TRY(launch_rows<ATTN_DKV>(ctx, a));
    if (dbias) {
        attn_dbias_terms f = {*a};
        MF_TRY(
            mf_cuda_colsum(ctx, (float *)dbias->data, f, 1, a->B, a->H * a->Q * a->K, 1.0f, true));
    }
    return MF_OK;
}

extern "C" mf_status mf_cuda_attention_backward(mf_ctx *ctx, mf_tensor *dq, mf_tensor *dk,
                                                mf_tensor *dv, mf_tensor *dbias,
                                                const mf_tensor *dout, const mf_tensor *out,
                                                const mf_tensor *lse, const mf_tensor *q,
                                                const mf_tensor *k, const mf_tensor *v,
                                                const mf_tensor *bias, const mf_tensor *mask,
                                                float scale)
{
    const char *op = "attention_backward";
    mf_attn_rows a;
    MF_TRY(check_common(ctx, op, q, k, v, bias, mask, &a));
    const int64_t nq = mf_tensor_numel(q), nk = mf_tensor_numel(k);
    MF_TRY(mf_cuda_check_dev(dout, op, "dout", MF_F32));
    MF_TRY(mf_cuda_check_numel(dout, "dout [B, Q, H, D]", nq, op));
    MF_TRY(check_qkv(out, op, "out"));
    MF_TRY(mf_cuda_check_numel(out, "out [B, Q, H, D]", nq, op));
    MF_TRY(mf_cuda_check_dev(lse, op, "lse", MF_F32));
    MF_TRY(mf_cuda_check_numel(lse, "lse [B, H, Q]", a.B * a.H * a.Q, op));
    if (dq) {
        MF_TRY(mf_cuda_check_dev(dq, op, "dq", MF_F32));
        MF_TRY(mf_cuda_check_numel(dq, "dq", nq, op));
    }
    if (dk) {
        MF_TRY(mf_cuda_check_dev(dk, op, "dk", MF_F32));
        MF_TRY(mf_cuda_check_numel(dk, "dk", nk, op));
    }
    if (dv) {
        MF_TRY(mf_cuda_check_dev(dv, op, "dv", MF_F32));
        MF_TRY(mf_cuda_check_numel(dv, "dv", nk, op));
    }
    if (dbias) {
        MF_TRY(mf_cuda_check_dev(dbias, op, "dbias", MF_F32));
        MF_TRY(mf_cuda_check_numel(dbias, "dbias [H, Q, K]", a.H * a.Q * a.K, op));
    }
    const bool need_ds = dq || dk || dbias;
    if (a.D == 0 || (!need_ds && !dv)) return MF_OK;
    a.scale = scale;
    a.dout = (const float *)dout->data;
    a.o = out->data;
    a.o_bf16 = out->dtype == MF_BF16;
    a.lse_in = (const float *)lse->data;
    a.dq = dq ? (float *)dq->data : NULL;
    a.dk = dk ? (float *)dk->data : NULL;
    a.dv = dv ? (float *)dv->data : NULL;
    mf_arena_mark_t mark = mf_arena_mark(ctx->arena);
    mf_status st = attention_backward_impl(ctx, &a, dbias, need_ds);
    mf_arena_release(ctx->arena, mark);
    return st;
}

/* The gate of AlphaFold 2's attention (o_gated = o * g, g = sigmoid(logit)) backward from the
 * saved g: dlogit = dog * o * g * (1 - g), then dog *= g (the gradient of o). */
__global__ static void gate_backward_kernel(float *dlogit, float *dog, const float *o,
                                            const float *g, int64_t n)
{
    MF_GRID_LOOP(i, n)
    {
        const float gi = g[i];
        dlogit[i] = dog[i] * o[i] * gi * (1.0f - gi);
        dog[i] *= gi;
    }
}

extern "C" mf_status mf_cuda_gate_backward(mf_ctx *ctx, mf_tensor *dlogit, mf_tensor *dog,
                                           const mf_tensor *o, const mf_tensor *g)
{
    const char *op = "gate_backward";
    MF_TRY(mf_cuda_check_ctx(ctx, op));
    MF_TRY(mf_cuda_check_dev(dlogit, op, "dlogit", MF_F32));
    MF_TRY(mf_cuda_check_dev(dog, op, "dog", MF_F32));
    MF_TRY(mf_cuda_check_dev(o, op, "o", MF_F32));
    MF_TRY(mf_cuda_check_dev(g, op, "g", MF_F32));
    const int64_t n = mf_tensor_numel(dlogit);
    MF_TRY(mf_cuda_check_numel(dog, "dog", n, op));
    MF_TRY(mf_cuda_check_numel(o, "o", n, op));
    MF_TRY(mf_cuda_check_numel(g, "g", n, op));
    MF_LAUNCH(gate_backward_kernel, n, (float *)dlogit->data, (float *)dog->data,
              (const float *)o->data, (const float *)g->data, n);
    return MF_OK;
}
