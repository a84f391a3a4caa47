/* Attention entry points: the multi-head core (mf_attention_*) and AlphaFold 2's gated attention
 * module (mf_gated_attention_*, the `Attention` module of modules.py used by Alg. 7, 8, 13, 14),
 * composed from the linear, activation and elementwise ops around the core.
 *
 * Every floating tensor of one call is f32 (q, k, v and the saved activations may also be bf16),
 * or every one is f64: the double-precision runs, on the CPU only, that serve as the
 * finite-difference oracle. An f64 gated attention keeps its scratch and saved tensors in f64
 * whatever ctx->policy.storage says, and ctx->policy.compute does not apply to it. */
#include "core/cpu/attention_cpu.h"
#include "core/ops_dispatch.h"
#include "core/ref/ref.h"

#include <math.h>

/* The floating type a call runs in, from its leading tensor (f64 when that is f64, else f32);
 * checked before the device dispatch because f64 exists on the CPU only. */
static mf_status run_dtype(const mf_ctx *ctx, const char *op, const mf_tensor *lead,
                           const char *name, mf_dtype *dt)
{
    MF_REQUIRE(ctx, "%s: context is NULL", op);
    MF_REQUIRE(lead && lead->data, "%s: tensor %s is missing", op, name);
    *dt = lead->dtype == MF_F64 ? MF_F64 : MF_F32;
    if (*dt == MF_F64 && ctx->device != MF_DEV_CPU)
        return MF_ERROR(MF_ERR_UNSUPPORTED,
                        "%s: tensor %s is f64, which runs on the CPU only (the context is on cuda)",
                        op, name);
    return MF_OK;
}

/* A floating tensor of a call that runs in dt (f32 or f64). */
static mf_status check_real(const mf_tensor *t, const char *name, mf_dtype dt, int ndim)
{
    MF_REQUIRE(t && t->data, "attention: %s is missing", name);
    if (t->dtype != dt && (t->dtype == MF_F32 || t->dtype == MF_F64)) {
        char b[96];
        return MF_ERROR(MF_ERR_INVALID,
                        "attention: tensor %s is %s but this call runs in %s: f32 and f64 tensors "
                        "cannot be mixed in one call",
                        name, mf_tensor_describe(t, b, sizeof b), mf_dtype_name(dt));
    }
    return mf_check_tensor(t, name, dt, ndim);
}

/* q, k, v (and out in backward) of an f32 call may also be bf16 (bf16-stored saved
 * activations); an f64 call keeps them in f64. */
static mf_status check_qkv(const mf_tensor *t, const char *name, mf_dtype dt, int ndim)
{
    MF_REQUIRE(t && t->data, "attention: %s is missing", name);
    if (dt == MF_F32 && t->dtype == MF_BF16) return mf_check_tensor(t, name, MF_BF16, ndim);
    return check_real(t, name, dt, ndim);
}

static mf_status check_dims(const mf_tensor *t, const char *name, int ndim, const int64_t *want)
{
    for (int i = 0; i < ndim; i++)
        if (t->shape[i] != want[i]) {
            char buf[96];
            return MF_ERROR(MF_ERR_INVALID, "attention: %s is %s, dim %d should be %lld", name,
                            mf_tensor_describe(t, buf, sizeof buf), i, (long long)want[i]);
        }
    return MF_OK;
}

/* Every tensor given (NULL or data-less entries skipped) lives on the context's device. */
static mf_status check_devices(const mf_ctx *ctx, const char *op, const mf_tensor *const *t, int n)
{
    for (int i = 0; i < n; i++)
        if (t[i] && t[i]->data && t[i]->device != ctx->device) {
            char buf[96];
            return MF_ERROR(MF_ERR_INVALID, "%s: tensor %d (%s) is not on the context's device", op,
                            i, mf_tensor_describe(t[i], buf, sizeof buf));
        }
    return MF_OK;
}

/* Shapes of the core: q, out [B, Q, H, D]; k, v [B, K, H, D]; bias [H, Q, K]; mask [B, K];
 * lse [B, H, Q]. */
static mf_status check_core(mf_dtype dt, const mf_tensor *q, const mf_tensor *k, const mf_tensor *v,
                            const mf_tensor *bias, const mf_tensor *mask, const mf_tensor *lse)
{
    MF_TRY(check_qkv(q, "q", dt, 4));
    MF_TRY(check_qkv(k, "k", dt, 4));
    MF_TRY(check_qkv(v, "v", dt, 4));
    int64_t B = q->shape[0], Q = q->shape[1], H = q->shape[2], D = q->shape[3], K = k->shape[1];
    int64_t kshape[4] = {B, K, H, D}, bshape[3] = {H, Q, K}, mshape[2] = {B, K},
            lshape[3] = {B, H, Q};
    MF_TRY(check_dims(k, "k", 4, kshape));
    MF_TRY(check_dims(v, "v", 4, kshape));
    if (bias) {
        MF_TRY(check_real(bias, "bias", dt, 3));
        MF_TRY(check_dims(bias, "bias", 3, bshape));
    }
    if (mask) {
        MF_TRY(check_real(mask, "mask", dt, 2));
        MF_TRY(check_dims(mask, "mask", 2, mshape));
    }
    if (lse) {
        MF_TRY(check_real(lse, "lse", dt, 3));
        MF_TRY(check_dims(lse, "lse", 3, lshape));
    }
    return MF_OK;
}

static mf_status check_grad(const mf_tensor *g, const char *name, const mf_tensor *like,
                            mf_dtype dt)
{
    if (!g) return MF_OK;
    MF_TRY(check_real(g, name, dt, like->ndim));
    return check_dims(g, name, like->ndim, like->shape);
}

mf_status mf_attention_forward(mf_ctx *ctx, mf_tensor *out, mf_tensor *lse, const mf_tensor *q,
                               const mf_tensor *k, const mf_tensor *v, const mf_tensor *bias,
                               const mf_tensor *mask, float scale)
{
    mf_dtype dt;
    MF_TRY(run_dtype(ctx, "mf_attention_forward", q, "q", &dt));
    MF_TRY(check_core(dt, q, k, v, bias, mask, lse));
    MF_TRY(check_real(out, "out", dt, 4));
    MF_TRY(check_dims(out, "out", 4, q->shape));
    const mf_tensor *all[7] = {out, lse, q, k, v, bias, mask};
    MF_TRY(check_devices(ctx, "mf_attention_forward", all, 7));
    MF_DISPATCH_CUDA(ctx, attention_forward, out, lse, q, k, v, bias, mask, scale);
    return mf_cpu_attention_forward(ctx, out, lse, q, k, v, bias, mask, scale);
}

mf_status mf_attention_backward(mf_ctx *ctx, mf_tensor *dq, mf_tensor *dk, mf_tensor *dv,
                                mf_tensor *dbias, const mf_tensor *dout, const mf_tensor *out,
                                const mf_tensor *lse, const mf_tensor *q, const mf_tensor *k,
                                const mf_tensor *v, const mf_tensor *bias, const mf_tensor *mask,
                                float scale)
{
    mf_dtype dt;
    MF_TRY(run_dtype(ctx, "mf_attention_backward", q, "q", &dt));
    MF_TRY(check_core(dt, q, k, v, bias, mask, lse));
    MF_REQUIRE(lse && lse->data, "attention backward needs the forward's lse");
    MF_TRY(check_qkv(out, "out", dt, 4));
    MF_TRY(check_dims(out, "out", 4, q->shape));
    MF_REQUIRE(dout && dout->data, "attention backward: dout is missing");
    MF_TRY(check_grad(dout, "dout", q, dt));
    MF_TRY(check_grad(dq, "dq", q, dt));
    MF_TRY(check_grad(dk, "dk", k, dt));
    MF_TRY(check_grad(dv, "dv", k, dt));
    if (dbias) {
        int64_t bshape[3] = {q->shape[2], q->shape[1], k->shape[1]};
        MF_TRY(check_real(dbias, "dbias", dt, 3));
        MF_TRY(check_dims(dbias, "dbias", 3, bshape));
    }
    const mf_tensor *all[13] = {dq, dk, dv, dbias, dout, out, lse, q, k, v, bias, mask, NULL};
    MF_TRY(check_devices(ctx, "mf_attention_backward", all, 12));
    MF_DISPATCH_CUDA(ctx, attention_backward, dq, dk, dv, dbias, dout, out, lse, q, k, v, bias,
                     mask, scale);
    return mf_cpu_attention_backward(ctx, dq, dk, dv, dbias, dout, out, lse, q, k, v, bias, mask,
                                     scale);
}

/* ---- gated attention ------------------------------------------------------------------------ */

typedef struct {
    int64_t B, Q, K, Cin, H, D, Cout;
    bool gated;
    mf_dtype dt; /* f32, or f64 for the double-precision runs */
} ga_dims;

static mf_status ga_check(const mf_ctx *ctx, const char *op, ga_dims *d, const mf_tensor *q_x,
                          const mf_tensor *kv_x, const mf_tensor *bias, const mf_tensor *mask,
                          const mf_attention_params *p)
{
    MF_REQUIRE(p, "gated attention: parameters missing");
    MF_TRY(run_dtype(ctx, op, q_x, "q_x", &d->dt));
    mf_dtype dt = d->dt;
    MF_TRY(check_real(q_x, "q_x", dt, 3));
    MF_TRY(check_real(kv_x, "kv_x", dt, 3));
    MF_TRY(check_real(&p->query_w, "query_w", dt, 3));
    MF_TRY(check_real(&p->output_w, "output_w", dt, 3));
    d->B = q_x->shape[0];
    d->Q = q_x->shape[1];
    d->Cin = q_x->shape[2];
    d->K = kv_x->shape[1];
    d->H = p->query_w.shape[1];
    d->D = p->query_w.shape[2];
    d->Cout = p->output_w.shape[2];
    d->gated = p->gated;
    int64_t kv[3] = {d->B, d->K, d->Cin}, w[3] = {d->Cin, d->H, d->D},
            ow[3] = {d->H, d->D, d->Cout};
    MF_TRY(check_dims(kv_x, "kv_x", 3, kv));
    MF_TRY(check_dims(&p->query_w, "query_w", 3, w));
    MF_TRY(check_real(&p->key_w, "key_w", dt, 3));
    MF_TRY(check_dims(&p->key_w, "key_w", 3, w));
    MF_TRY(check_real(&p->value_w, "value_w", dt, 3));
    MF_TRY(check_dims(&p->value_w, "value_w", 3, w));
    MF_TRY(check_dims(&p->output_w, "output_w", 3, ow));
    MF_TRY(check_real(&p->output_b, "output_b", dt, 1));
    MF_TRY(check_dims(&p->output_b, "output_b", 1, &d->Cout));
    if (d->gated) {
        int64_t gb[2] = {d->H, d->D};
        MF_REQUIRE(p->gating_w.data && p->gating_b.data,
                   "gated attention: gated but gating_w/gating_b missing");
        MF_TRY(check_real(&p->gating_w, "gating_w", dt, 3));
        MF_TRY(check_dims(&p->gating_w, "gating_w", 3, w));
        MF_TRY(check_real(&p->gating_b, "gating_b", dt, 2));
        MF_TRY(check_dims(&p->gating_b, "gating_b", 2, gb));
    }
    if (bias) {
        int64_t bs[3] = {d->H, d->Q, d->K};
        MF_TRY(check_real(bias, "bias", dt, 3));
        MF_TRY(check_dims(bias, "bias", 3, bs));
    }
    if (mask) {
        int64_t ms[2] = {d->B, d->K};
        MF_TRY(check_real(mask, "mask", dt, 2));
        MF_TRY(check_dims(mask, "mask", 2, ms));
    }
    return MF_OK;
}

/* Rows of the batch per slice: chunk_size of them when chunking, else all. */
static int64_t ga_batch_slice(const mf_ctx *ctx, int64_t B)
{
    int64_t c = ctx->policy.chunk_size;
    return c > 0 && c < B ? c : (B > 0 ? B : 1);
}

static mf_status ga_alloc(mf_ctx *ctx, mf_tensor *t, mf_dtype dt, int64_t d0, int64_t d1,
                          int64_t d2, int64_t d3, const char *label)
{
    int64_t shape[4] = {d0, d1, d2, d3};
    return mf_arena_tensor(ctx->arena, t, dt, 4, shape, label);
}

/* t *= D^-1/2 (Alg. 7 line 2). An f64 run takes the factor in double, as the double reference
 * does: mf_scale's f32 alpha would carry f32 rounding into the oracle. */
static mf_status ga_scale_q(mf_ctx *ctx, mf_tensor *t, int64_t D)
{
    if (t->dtype == MF_F64) {
        mf_ref_scale_f64(t->data, t->data, 1.0 / sqrt((double)D), mf_tensor_numel(t));
        return MF_OK;
    }
    return mf_scale(ctx, t, t, 1.0f / sqrtf((float)D));
}

/* View of a [B, L, H, D] tensor's batch rows [b0, b0 + nb) as [nb, L, H * D] (linear layout). */
static mf_tensor ga_flat(const mf_tensor *t, int64_t b0, int64_t nb)
{
    mf_tensor s = mf_tensor_slice0(t, b0, nb);
    s.ndim = 3;
    s.shape[2] = t->shape[2] * t->shape[3];
    s.shape[3] = 1;
    return s;
}

mf_status mf_gated_attention_forward(mf_ctx *ctx, mf_tensor *out, mf_attention_saved *saved,
                                     const mf_tensor *q_x, const mf_tensor *kv_x,
                                     const mf_tensor *bias, const mf_tensor *mask,
                                     const mf_attention_params *p, bool accumulate)
{
    ga_dims d;
    MF_TRY(ga_check(ctx, "mf_gated_attention_forward", &d, q_x, kv_x, bias, mask, p));
    int64_t oshape[3] = {d.B, d.Q, d.Cout};
    MF_TRY(check_real(out, "out", d.dt, 3));
    MF_TRY(check_dims(out, "out", 3, oshape));
    const mf_tensor *all[12] = {out,          q_x,          kv_x,         bias,
                                &p->query_w,  &p->key_w,    &p->value_w,  &p->gating_w,
                                &p->gating_b, &p->output_w, &p->output_b, mask};
    MF_TRY(check_devices(ctx, "mf_gated_attention_forward", all, 12));

    /* Saved activations stay live until the caller releases them after backward, so they are
     * allocated below this op's workspace mark. */
    mf_dtype sdt = d.dt == MF_F64 ? MF_F64 : ctx->policy.storage == MF_BF16 ? MF_BF16 : MF_F32;
    /* storage in the compute type: compute straight into the saved tensors */
    bool direct = saved && sdt == d.dt;
    mf_arena_mark_t mark0 = mf_arena_mark(ctx->arena), mark = mark0;
    mf_status st = MF_OK;
    if (saved) {
        *saved = (mf_attention_saved){0};
        const char *lab = "attention saved";
        MF_TRY_GOTO(ga_alloc(ctx, &saved->q, sdt, d.B, d.Q, d.H, d.D, lab));
        MF_TRY_GOTO(ga_alloc(ctx, &saved->k, sdt, d.B, d.K, d.H, d.D, lab));
        MF_TRY_GOTO(ga_alloc(ctx, &saved->v, sdt, d.B, d.K, d.H, d.D, lab));
        if (d.gated) MF_TRY_GOTO(ga_alloc(ctx, &saved->gate, sdt, d.B, d.Q, d.H, d.D, lab));
        MF_TRY_GOTO(ga_alloc(ctx, &saved->o, sdt, d.B, d.Q, d.H, d.D, lab));
        /* lse in the compute type (f32 even with bf16 storage): p = exp(logit - lse) amplifies
         * any rounding of lse */
        int64_t ls[3] = {d.B, d.H, d.Q};
        MF_TRY_GOTO(mf_arena_tensor(ctx->arena, &saved->lse, d.dt, 3, ls, lab));
    }

    mark = mf_arena_mark(ctx->arena);
    int64_t bs = ga_batch_slice(ctx, d.B);
    for (int64_t b0 = 0; b0 < d.B; b0 += bs) {
        int64_t nb = d.B - b0 < bs ? d.B - b0 : bs;
        const char *lab = "attention transient";
        mf_tensor qf = {0}, kf = {0}, vf = {0}, of = {0}, gf = {0}, og = {0};
        if (direct) {
            qf = mf_tensor_slice0(&saved->q, b0, nb);
            kf = mf_tensor_slice0(&saved->k, b0, nb);
            vf = mf_tensor_slice0(&saved->v, b0, nb);
            of = mf_tensor_slice0(&saved->o, b0, nb);
            if (d.gated) gf = mf_tensor_slice0(&saved->gate, b0, nb);
        } else {
            MF_TRY_GOTO(ga_alloc(ctx, &qf, d.dt, nb, d.Q, d.H, d.D, lab));
            MF_TRY_GOTO(ga_alloc(ctx, &kf, d.dt, nb, d.K, d.H, d.D, lab));
            MF_TRY_GOTO(ga_alloc(ctx, &vf, d.dt, nb, d.K, d.H, d.D, lab));
            MF_TRY_GOTO(ga_alloc(ctx, &of, d.dt, nb, d.Q, d.H, d.D, lab));
            if (d.gated) MF_TRY_GOTO(ga_alloc(ctx, &gf, d.dt, nb, d.Q, d.H, d.D, lab));
        }
        mf_tensor qx = mf_tensor_slice0(q_x, b0, nb), kvx = mf_tensor_slice0(kv_x, b0, nb);
        mf_tensor qf3 = ga_flat(&qf, 0, nb), kf3 = ga_flat(&kf, 0, nb), vf3 = ga_flat(&vf, 0, nb);
        /* Alg. 7 line 2; AF2 scales q (not the logits) by D^-1/2 */
        MF_TRY_GOTO(mf_linear_forward(ctx, &qf3, &qx, &p->query_w, NULL, false));
        MF_TRY_GOTO(ga_scale_q(ctx, &qf3, d.D));
        MF_TRY_GOTO(mf_linear_forward(ctx, &kf3, &kvx, &p->key_w, NULL, false));
        MF_TRY_GOTO(mf_linear_forward(ctx, &vf3, &kvx, &p->value_w, NULL, false));
        /* Alg. 7 lines 5-6, with the scale already in q */
        mf_tensor msk = mask ? mf_tensor_slice0(mask, b0, nb) : (mf_tensor){0};
        mf_tensor lse = saved ? mf_tensor_slice0(&saved->lse, b0, nb) : (mf_tensor){0};
        MF_TRY_GOTO(mf_attention_forward(ctx, &of, saved ? &lse : NULL, &qf, &kf, &vf, bias,
                                         mask ? &msk : NULL, 1.0f));
        mf_tensor of3 = ga_flat(&of, 0, nb);
        if (d.gated) {
            /* Alg. 7 line 3 and the gate of line 6 */
            mf_tensor gf3 = ga_flat(&gf, 0, nb);
            MF_TRY_GOTO(mf_linear_forward(ctx, &gf3, &qx, &p->gating_w, &p->gating_b, false));
            MF_TRY_GOTO(mf_activation_forward(ctx, MF_ACT_SIGMOID, &gf3, &gf3));
            MF_TRY_GOTO(ga_alloc(ctx, &og, d.dt, nb, d.Q, d.H, d.D, lab));
            og = ga_flat(&og, 0, nb);
            MF_TRY_GOTO(mf_mul(ctx, &og, &of3, &gf3));
        } else {
            og = of3;
        }
        if (saved && !direct) {
            mf_tensor sq = ga_flat(&saved->q, b0, nb), sk = ga_flat(&saved->k, b0, nb),
                      sv = ga_flat(&saved->v, b0, nb), so = ga_flat(&saved->o, b0, nb);
            MF_TRY_GOTO(mf_convert(ctx, &sq, &qf3));
            MF_TRY_GOTO(mf_convert(ctx, &sk, &kf3));
            MF_TRY_GOTO(mf_convert(ctx, &sv, &vf3));
            MF_TRY_GOTO(mf_convert(ctx, &so, &of3));
            if (d.gated) {
                mf_tensor sg = ga_flat(&saved->gate, b0, nb), gf3 = ga_flat(&gf, 0, nb);
                MF_TRY_GOTO(mf_convert(ctx, &sg, &gf3));
            }
        }
        /* Alg. 7 line 7 */
        mf_tensor outs = mf_tensor_slice0(out, b0, nb);
        MF_TRY_GOTO(mf_linear_forward(ctx, &outs, &og, &p->output_w, &p->output_b, accumulate));
        mf_arena_release(ctx->arena, mark);
    }
cleanup:
    /* on failure nothing stays allocated, the saved tensors included */
    mf_arena_release(ctx->arena, st == MF_OK ? mark : mark0);
    if (st != MF_OK && saved) *saved = (mf_attention_saved){0};
    return st;
}

/* The forward's saved tensors: shapes as this call's inputs; f32 or bf16 with lse f32 in an f32
 * run, all f64 in an f64 run. */
static mf_status ga_check_saved(const mf_attention_saved *s, const ga_dims *d)
{
    int64_t qs[4] = {d->B, d->Q, d->H, d->D}, ks[4] = {d->B, d->K, d->H, d->D},
            ls[3] = {d->B, d->H, d->Q};
    MF_TRY(check_qkv(&s->q, "saved q", d->dt, 4));
    MF_TRY(check_dims(&s->q, "saved q", 4, qs));
    MF_TRY(check_qkv(&s->k, "saved k", d->dt, 4));
    MF_TRY(check_dims(&s->k, "saved k", 4, ks));
    MF_TRY(check_qkv(&s->v, "saved v", d->dt, 4));
    MF_TRY(check_dims(&s->v, "saved v", 4, ks));
    MF_TRY(check_qkv(&s->o, "saved o", d->dt, 4));
    MF_TRY(check_dims(&s->o, "saved o", 4, qs));
    if (d->gated) {
        MF_TRY(check_qkv(&s->gate, "saved gate", d->dt, 4));
        MF_TRY(check_dims(&s->gate, "saved gate", 4, qs));
    }
    MF_REQUIRE(s->lse.data, "gated attention backward: saved lse is missing");
    MF_TRY(check_real(&s->lse, "saved lse", d->dt, 3));
    return check_dims(&s->lse, "saved lse", 3, ls);
}

/* A parameter gradient to accumulate into, or NULL when the caller skips it. */
static mf_tensor *ga_grad(mf_attention_params *dp, mf_tensor *field)
{
    return dp && field->data ? field : NULL;
}

/* A saved [B, L, H, D] slice in the compute type dt: a view when stored in dt, else (bf16 in an
 * f32 run) widened to f32. */
static mf_status ga_widen(mf_ctx *ctx, mf_tensor *dst, const mf_tensor *saved, int64_t b0,
                          int64_t nb, mf_dtype dt)
{
    mf_tensor s = mf_tensor_slice0(saved, b0, nb);
    if (saved->dtype == dt) {
        *dst = ga_flat(&s, 0, nb);
        return MF_OK;
    }
    mf_tensor w;
    MF_TRY(
        ga_alloc(ctx, &w, MF_F32, nb, s.shape[1], s.shape[2], s.shape[3], "attention transient"));
    *dst = ga_flat(&w, 0, nb);
    mf_tensor s3 = ga_flat(&s, 0, nb);
    return mf_convert(ctx, dst, &s3);
}

/* The gate's backward (o_gated = o * g): dlogit = dog * o * g * (1 - g), dog *= g; on the
 * context's device. */
static mf_status ga_gate_backward(mf_ctx *ctx, mf_tensor *dlogit, mf_tensor *dog,
                                  const mf_tensor *o, const mf_tensor *g)
{
#ifdef MF_HAVE_CUDA
    if (ctx->device == MF_DEV_CUDA) return mf_cuda_gate_backward(ctx, dlogit, dog, o, g);
#else
    (void)ctx;
#endif
    const int64_t n = mf_tensor_numel(dlogit);
    if (dlogit->dtype == MF_F64)
        mf_cpu_gate_backward_f64(dlogit->data, dog->data, o->data, g->data, n);
    else
        mf_cpu_gate_backward(dlogit->data, dog->data, o->data, g->data, n);
    return MF_OK;
}

mf_status mf_gated_attention_backward(mf_ctx *ctx, mf_tensor *dq_x, mf_tensor *dkv_x,
                                      mf_tensor *dbias, mf_attention_params *dp,
                                      const mf_tensor *dout, const mf_attention_saved *saved,
                                      const mf_tensor *q_x, const mf_tensor *kv_x,
                                      const mf_tensor *bias, const mf_tensor *mask,
                                      const mf_attention_params *p)
{
    ga_dims d;
    MF_TRY(ga_check(ctx, "mf_gated_attention_backward", &d, q_x, kv_x, bias, mask, p));
    MF_REQUIRE(saved, "gated attention backward needs the forward's saved activations");
    MF_TRY(ga_check_saved(saved, &d));
    int64_t oshape[3] = {d.B, d.Q, d.Cout};
    MF_TRY(check_real(dout, "dout", d.dt, 3));
    MF_TRY(check_dims(dout, "dout", 3, oshape));
    MF_TRY(check_grad(dq_x, "dq_x", q_x, d.dt));
    MF_TRY(check_grad(dkv_x, "dkv_x", kv_x, d.dt));
    if (dbias) {
        int64_t bs[3] = {d.H, d.Q, d.K};
        MF_TRY(check_real(dbias, "dbias", d.dt, 3));
        MF_TRY(check_dims(dbias, "dbias", 3, bs));
    }
    const mf_tensor *all[13] = {dq_x,        dkv_x,        dbias,    dout,        q_x,
                                kv_x,        bias,         mask,     &p->query_w, &p->key_w,
                                &p->value_w, &p->output_w, &saved->q};
    MF_TRY(check_devices(ctx, "mf_gated_attention_backward", all, 13));

    /* dp may be NULL: no parameter gradient (no member access through it then) */
#define GA_GRAD(field) (dp ? ga_grad(dp, &dp->field) : NULL)
    mf_tensor *dquery_w = GA_GRAD(query_w), *dkey_w = GA_GRAD(key_w), *dvalue_w = GA_GRAD(value_w),
              *doutput_w = GA_GRAD(output_w), *doutput_b = GA_GRAD(output_b);
    mf_tensor *dgating_w = d.gated ? GA_GRAD(gating_w) : NULL;
    mf_tensor *dgating_b = d.gated ? GA_GRAD(gating_b) : NULL;
#undef GA_GRAD
    bool need_dq = dq_x || dquery_w, need_dk = dkv_x || dkey_w, need_dv = dkv_x || dvalue_w;
    bool need_core = need_dq || need_dk || need_dv || dbias;
    bool need_dog = need_core || (d.gated && (dq_x || dgating_w || dgating_b));

    mf_arena_mark_t mark = mf_arena_mark(ctx->arena);
    mf_status st = MF_OK;
    int64_t bs = ga_batch_slice(ctx, d.B);
    const char *lab = "attention transient";
    for (int64_t b0 = 0; b0 < d.B; b0 += bs) {
        int64_t nb = d.B - b0 < bs ? d.B - b0 : bs;
        mf_tensor qx = mf_tensor_slice0(q_x, b0, nb), kvx = mf_tensor_slice0(kv_x, b0, nb);
        mf_tensor douts = mf_tensor_slice0(dout, b0, nb);
        mf_tensor dqx = dq_x ? mf_tensor_slice0(dq_x, b0, nb) : (mf_tensor){0};
        mf_tensor dkvx = dkv_x ? mf_tensor_slice0(dkv_x, b0, nb) : (mf_tensor){0};
        mf_tensor o3 = {0}, g3 = {0}, og = {0}, dog = {0};
        MF_TRY_GOTO(ga_widen(ctx, &o3, &saved->o, b0, nb, d.dt));
        if (d.gated) {
            MF_TRY_GOTO(ga_widen(ctx, &g3, &saved->gate, b0, nb, d.dt));
            MF_TRY_GOTO(ga_alloc(ctx, &og, d.dt, nb, d.Q, d.H, d.D, lab));
            og = ga_flat(&og, 0, nb);
            MF_TRY_GOTO(mf_mul(ctx, &og, &o3, &g3));
        } else {
            og = o3;
        }
        /* Alg. 7 line 7 */
        if (need_dog) {
            int64_t shape[4] = {nb, d.Q, d.H, d.D};
            MF_TRY_GOTO(mf_arena_zeros(ctx->arena, &dog, d.dt, 4, shape, lab));
            dog = ga_flat(&dog, 0, nb);
        }
        MF_TRY_GOTO(mf_linear_backward(ctx, need_dog ? &dog : NULL, doutput_w, doutput_b, &douts,
                                       &og, &p->output_w));
        if (!need_dog) {
            mf_arena_release(ctx->arena, mark);
            continue;
        }
        if (d.gated) {
            /* Gate of line 6: the sigmoid's gradient from its saved output; og becomes the
             * gate logits' gradient, dog the gradient of o. */
            MF_TRY_GOTO(ga_gate_backward(ctx, &og, &dog, &o3, &g3));
            if (dq_x || dgating_w || dgating_b)
                MF_TRY_GOTO(mf_linear_backward(ctx, dq_x ? &dqx : NULL, dgating_w, dgating_b, &og,
                                               &qx, &p->gating_w));
        }
        if (!need_core) {
            mf_arena_release(ctx->arena, mark);
            continue;
        }
        /* Lines 5-6 */
        mf_tensor dq = {0}, dk = {0}, dv = {0};
        int64_t qs[4] = {nb, d.Q, d.H, d.D}, ks[4] = {nb, d.K, d.H, d.D};
        if (need_dq) MF_TRY_GOTO(mf_arena_zeros(ctx->arena, &dq, d.dt, 4, qs, lab));
        if (need_dk) MF_TRY_GOTO(mf_arena_zeros(ctx->arena, &dk, d.dt, 4, ks, lab));
        if (need_dv) MF_TRY_GOTO(mf_arena_zeros(ctx->arena, &dv, d.dt, 4, ks, lab));
        mf_tensor do4 = mf_tensor_4(dog.data, d.dt, ctx->device, 4, nb, d.Q, d.H, d.D);
        mf_tensor so = mf_tensor_slice0(&saved->o, b0, nb),
                  sq = mf_tensor_slice0(&saved->q, b0, nb),
                  sk = mf_tensor_slice0(&saved->k, b0, nb),
                  sv = mf_tensor_slice0(&saved->v, b0, nb),
                  sl = mf_tensor_slice0(&saved->lse, b0, nb);
        mf_tensor msk = mask ? mf_tensor_slice0(mask, b0, nb) : (mf_tensor){0};
        MF_TRY_GOTO(mf_attention_backward(ctx, need_dq ? &dq : NULL, need_dk ? &dk : NULL,
                                          need_dv ? &dv : NULL, dbias, &do4, &so, &sl, &sq, &sk,
                                          &sv, bias, mask ? &msk : NULL, 1.0f));
        /* Line 2 */
        if (need_dq) {
            mf_tensor dq3 = ga_flat(&dq, 0, nb);
            MF_TRY_GOTO(ga_scale_q(ctx, &dq3, d.D));
            MF_TRY_GOTO(mf_linear_backward(ctx, dq_x ? &dqx : NULL, dquery_w, NULL, &dq3, &qx,
                                           &p->query_w));
        }
        if (need_dk) {
            mf_tensor dk3 = ga_flat(&dk, 0, nb);
            MF_TRY_GOTO(
                mf_linear_backward(ctx, dkv_x ? &dkvx : NULL, dkey_w, NULL, &dk3, &kvx, &p->key_w));
        }
        if (need_dv) {
            mf_tensor dv3 = ga_flat(&dv, 0, nb);
            MF_TRY_GOTO(mf_linear_backward(ctx, dkv_x ? &dkvx : NULL, dvalue_w, NULL, &dv3, &kvx,
                                           &p->value_w));
        }
        mf_arena_release(ctx->arena, mark);
    }
cleanup:
    mf_arena_release(ctx->arena, mark);
    return st;
}
