/* Template pointwise attention (Alg. 17), see template_pointwise_attention.h. */
#include "evoformer/template_pointwise_attention.h"

#include <math.h>
#include <string.h>

#include "core/ops.h"
#include "evoformer/msa_attention.h"

#define TPA_MODULE "template_pointwise_attention"

int mf_template_pointwise_attention_param_specs(const mf_template_pointwise_attention_dims *d,
                                                mf_param_spec *out)
{
    const mf_param_spec specs[] = {
#define MF_PARAM MF_PARAM_SPEC
#include "evoformer/template_pointwise_attention.def"
#undef MF_PARAM
    };
    if (out) memcpy(out, specs, sizeof specs);
    return (int)(sizeof specs / sizeof specs[0]);
}

static mf_tensor view(const mf_tensor *t, int ndim, int64_t a, int64_t b, int64_t c, int64_t e)
{
    return mf_tensor_4(t->data, t->dtype, t->device, ndim, a, b, c, e);
}

static mf_status alloc(mf_ctx *ctx, mf_tensor *t, mf_dtype dt, int ndim, int64_t a, int64_t b,
                       int64_t c, int64_t e, const char *label)
{
    const int64_t shape[4] = {a, b, c, e};
    return mf_arena_tensor(ctx->arena, t, dt, ndim, shape, label);
}

static mf_status zeros(mf_ctx *ctx, mf_tensor *t, mf_dtype dt, int ndim, int64_t a, int64_t b,
                       int64_t c, int64_t e, const char *label)
{
    const int64_t shape[4] = {a, b, c, e};
    return mf_arena_zeros(ctx->arena, t, dt, ndim, shape, label);
}

static mf_tensor *grad(mf_tensor *t)
{
    return t && t->data ? t : NULL;
}

static mf_status tpa_check(const mf_ctx *ctx, const mf_tensor *z, const mf_tensor *t,
                           const mf_tensor *template_mask,
                           const mf_template_pointwise_attention_params *p,
                           const mf_template_pointwise_attention_dims *d)
{
    MF_REQUIRE(ctx && ctx->arena && p && d, TPA_MODULE ": context, arena, params and dims needed");
    MF_REQUIRE(z && z->data && z->ndim == 3, TPA_MODULE ": z must be [N, N, c_z]");
    MF_REQUIRE(t && t->data && t->ndim == 4 && t->shape[0] >= 1,
               TPA_MODULE ": t must be [T, N, N, c_t] with T >= 1 (absent templates are masked)");
    const int64_t N = z->shape[0], T = t->shape[0];
    const int64_t zs[3] = {N, N, d->c_z}, ts[4] = {T, N, N, d->c_t};
    MF_TRY(mf_evo_expect(TPA_MODULE, z, "z", z->dtype, 3, zs));
    MF_TRY(mf_evo_expect(TPA_MODULE, t, "t", z->dtype, 4, ts));
    MF_TRY(mf_evo_expect(TPA_MODULE, template_mask, "template_mask", z->dtype, 1, &T));
    mf_param_spec specs[8];
    int n = mf_template_pointwise_attention_param_specs(d, specs);
    return mf_evo_check_params(TPA_MODULE, specs, n, MF_PARAMS_AS_ARRAY(p), z->dtype);
}

/* AF2's (sum(template_mask) > 0) on the device: sum_t mask_t softmax_t(-1e9 (1 - mask_t)). */
static mf_status no_template_factor(mf_ctx *ctx, mf_tensor *ind, const mf_tensor *template_mask)
{
    const int64_t T = template_mask->shape[0];
    mf_arena_mark_t mark = mf_arena_mark(ctx->arena);
    mf_status st = MF_OK;
    mf_tensor e;
    MF_TRY_GOTO(zeros(ctx, &e, template_mask->dtype, 4, 1, 1, 1, T, TPA_MODULE " transient"));
    mf_tensor mask2 = view(template_mask, 2, 1, T, 1, 1), e2 = view(&e, 2, 1, T, 1, 1);
    MF_TRY_GOTO(mf_softmax_forward(ctx, &e, &e, NULL, &mask2));
    MF_TRY_GOTO(mf_mul(ctx, &e2, &e2, template_mask));
    mf_tensor e3 = view(&e, 3, 1, T, 1, 1), ind2 = view(ind, 2, 1, 1, 1, 1);
    MF_TRY_GOTO(mf_sum_axis(ctx, &ind2, &e3, 1.0f));
cleanup:
    mf_arena_release(ctx->arena, mark);
    return st;
}

/* The key mask of nb pairs: template_mask repeated, [nb, T]. */
static mf_status pair_mask(mf_ctx *ctx, mf_tensor *mask, int64_t nb, const mf_tensor *template_mask)
{
    MF_TRY(alloc(ctx, mask, template_mask->dtype, 2, nb, template_mask->shape[0], 1, 1,
                 TPA_MODULE " transient"));
    MF_TRY(mf_fill(ctx, mask, 0.0f));
    return mf_add(ctx, mask, mask, template_mask);
}

/* Rows [p0, p0 + nb) of template tt, as [nb, c_t]. */
static mf_tensor template_rows(const mf_tensor *t, int64_t tt, int64_t p0, int64_t nb)
{
    const int64_t P = t->shape[1] * t->shape[2];
    mf_tensor all = view(t, 2, t->shape[0] * P, t->shape[3], 1, 1);
    return mf_tensor_slice0(&all, tt * P + p0, nb);
}

mf_status mf_template_pointwise_attention_forward(mf_ctx *ctx, mf_tensor *out, bool accumulate,
                                                  mf_template_pointwise_attention_saved *saved,
                                                  const mf_tensor *z, const mf_tensor *t,
                                                  const mf_tensor *template_mask,
                                                  const mf_template_pointwise_attention_params *p,
                                                  const mf_template_pointwise_attention_dims *d)
{
    MF_TRY(tpa_check(ctx, z, t, template_mask, p, d));
    MF_TRY(mf_evo_expect(TPA_MODULE, out, "out", z->dtype, 3, z->shape));
    MF_REQUIRE(!saved || out->data != z->data,
               TPA_MODULE ": out may alias z only at inference (the backward reads z)");
    const mf_dtype dt = z->dtype, sdt = mf_evo_storage_dtype(ctx, dt);
    const int64_t N = z->shape[0], P = N * N, T = t->shape[0], H = d->num_heads, D = d->c_hidden,
                  HD = H * D, Cz = d->c_z;
    const bool direct = saved && sdt == dt; /* compute straight into the saved tensors */
    const mf_dtype lse_dt = dt == MF_F64 ? MF_F64 : MF_F32;
    mf_arena_mark_t mark0 = mf_arena_mark(ctx->arena), mark1 = mark0;
    mf_status st = MF_OK;
    mf_tensor ind;
    if (saved) {
        *saved = (mf_template_pointwise_attention_saved){0};
        const char *lab = TPA_MODULE " saved";
        MF_TRY_GOTO(alloc(ctx, &saved->q, sdt, 4, P, 1, H, D, lab));
        MF_TRY_GOTO(alloc(ctx, &saved->k, sdt, 4, P, T, H, D, lab));
        MF_TRY_GOTO(alloc(ctx, &saved->v, sdt, 4, P, T, H, D, lab));
        MF_TRY_GOTO(alloc(ctx, &saved->o, sdt, 4, P, 1, H, D, lab));
        MF_TRY_GOTO(alloc(ctx, &saved->lse, lse_dt, 3, P, H, 1, 1, lab));
        MF_TRY_GOTO(alloc(ctx, &saved->ind, dt, 1, 1, 1, 1, 1, lab));
        ind = saved->ind;
        mark1 = mf_arena_mark(ctx->arena);
    } else {
        MF_TRY_GOTO(alloc(ctx, &ind, dt, 1, 1, 1, 1, 1, TPA_MODULE " transient"));
    }
    MF_TRY_GOTO(no_template_factor(ctx, &ind, template_mask));
    const int64_t rows = mf_evo_slice_rows(ctx, N);
    const double qscale = 1.0 / sqrt((double)D);
    for (int64_t i0 = 0; i0 < N; i0 += rows) {
        const int64_t ni = N - i0 < rows ? N - i0 : rows, p0 = i0 * N, nb = ni * N;
        mf_arena_mark_t m1 = mf_arena_mark(ctx->arena);
        const char *lab = TPA_MODULE " transient";
        mf_tensor q, k, v, o, kt, vt, mask, lse = {0};
        if (direct) {
            q = mf_tensor_slice0(&saved->q, p0, nb);
            k = mf_tensor_slice0(&saved->k, p0, nb);
            v = mf_tensor_slice0(&saved->v, p0, nb);
            o = mf_tensor_slice0(&saved->o, p0, nb);
        } else {
            MF_TRY_GOTO(alloc(ctx, &q, dt, 4, nb, 1, H, D, lab));
            MF_TRY_GOTO(alloc(ctx, &k, dt, 4, nb, T, H, D, lab));
            MF_TRY_GOTO(alloc(ctx, &v, dt, 4, nb, T, H, D, lab));
            MF_TRY_GOTO(alloc(ctx, &o, dt, 4, nb, 1, H, D, lab));
        }
        if (saved) lse = mf_tensor_slice0(&saved->lse, p0, nb);
        /* line 1; AF2 scales q by c^-1/2 */
        mf_tensor zc = view(z, 2, P, Cz, 1, 1);
        zc = mf_tensor_slice0(&zc, p0, nb);
        mf_tensor q2 = view(&q, 2, nb, HD, 1, 1);
        MF_TRY_GOTO(mf_linear_forward(ctx, &q2, &zc, &p->attention_query_w, NULL, false));
        MF_TRY_GOTO(mf_evo_scale(ctx, &q2, qscale));
        /* line 2, template by template, then pair-major for the attention */
        MF_TRY_GOTO(alloc(ctx, &kt, dt, 3, T, nb, HD, 1, lab));
        MF_TRY_GOTO(alloc(ctx, &vt, dt, 3, T, nb, HD, 1, lab));
        for (int64_t tt = 0; tt < T; tt++) {
            mf_tensor tc = template_rows(t, tt, p0, nb), ktt = mf_tensor_slice0(&kt, tt, 1),
                      vtt = mf_tensor_slice0(&vt, tt, 1);
            ktt = view(&ktt, 2, nb, HD, 1, 1);
            vtt = view(&vtt, 2, nb, HD, 1, 1);
            MF_TRY_GOTO(mf_linear_forward(ctx, &ktt, &tc, &p->attention_key_w, NULL, false));
            MF_TRY_GOTO(mf_linear_forward(ctx, &vtt, &tc, &p->attention_value_w, NULL, false));
        }
        mf_tensor k3 = view(&k, 3, nb, T, HD, 1), v3 = view(&v, 3, nb, T, HD, 1);
        MF_TRY_GOTO(mf_transpose01(ctx, &k3, &kt, false));
        MF_TRY_GOTO(mf_transpose01(ctx, &v3, &vt, false));
        /* lines 3-4 */
        MF_TRY_GOTO(pair_mask(ctx, &mask, nb, template_mask));
        MF_TRY_GOTO(
            mf_attention_forward(ctx, &o, saved ? &lse : NULL, &q, &k, &v, NULL, &mask, 1.0f));
        if (saved && !direct) {
            mf_tensor dst[4] = {
                mf_tensor_slice0(&saved->q, p0, nb), mf_tensor_slice0(&saved->k, p0, nb),
                mf_tensor_slice0(&saved->v, p0, nb), mf_tensor_slice0(&saved->o, p0, nb)};
            const mf_tensor *src[4] = {&q, &k, &v, &o};
            for (int i = 0; i < 4; i++) MF_TRY_GOTO(mf_convert(ctx, &dst[i], src[i]));
        }
        /* line 5, times AF2's no-template factor */
        mf_tensor o2 = view(&o, 2, nb, HD, 1, 1), oc = view(out, 2, P, Cz, 1, 1), y;
        oc = mf_tensor_slice0(&oc, p0, nb);
        if (accumulate)
            MF_TRY_GOTO(alloc(ctx, &y, dt, 2, nb, Cz, 1, 1, lab));
        else
            y = oc;
        MF_TRY_GOTO(
            mf_linear_forward(ctx, &y, &o2, &p->attention_output_w, &p->attention_output_b, false));
        MF_TRY_GOTO(mf_mul(ctx, &y, &y, &ind));
        if (accumulate) MF_TRY_GOTO(mf_add(ctx, &oc, &oc, &y));
        mf_arena_release(ctx->arena, m1);
    }
cleanup:
    mf_arena_release(ctx->arena, st == MF_OK && saved ? mark1 : mark0);
    if (st != MF_OK && saved) *saved = (mf_template_pointwise_attention_saved){0};
    return st;
}

mf_status mf_template_pointwise_attention_backward(
    mf_ctx *ctx, mf_tensor *dz, mf_tensor *dt_, mf_template_pointwise_attention_params *dp,
    const mf_tensor *dout, const mf_template_pointwise_attention_saved *saved, const mf_tensor *z,
    const mf_tensor *t, const mf_tensor *template_mask,
    const mf_template_pointwise_attention_params *p, const mf_template_pointwise_attention_dims *d)
{
    MF_TRY(tpa_check(ctx, z, t, template_mask, p, d));
    MF_REQUIRE(saved && saved->q.data && saved->ind.data,
               TPA_MODULE " backward needs the forward's saved tensors");
    MF_TRY(mf_evo_expect(TPA_MODULE, dout, "dout", z->dtype, 3, z->shape));
    dz = grad(dz);
    dt_ = grad(dt_);
    if (dz) MF_TRY(mf_evo_expect(TPA_MODULE, dz, "dz", z->dtype, 3, z->shape));
    if (dt_) MF_TRY(mf_evo_expect(TPA_MODULE, dt_, "dt", z->dtype, 4, t->shape));
    mf_tensor *d_qw = dp ? grad(&dp->attention_query_w) : NULL,
              *d_kw = dp ? grad(&dp->attention_key_w) : NULL,
              *d_vw = dp ? grad(&dp->attention_value_w) : NULL,
              *d_ow = dp ? grad(&dp->attention_output_w) : NULL,
              *d_ob = dp ? grad(&dp->attention_output_b) : NULL;
    const bool need_q = dz || d_qw, need_kv = dt_ || d_kw || d_vw;
    const mf_dtype dt = z->dtype;
    const int64_t N = z->shape[0], P = N * N, T = t->shape[0], H = d->num_heads, D = d->c_hidden,
                  HD = H * D, Cz = d->c_z;
    const double qscale = 1.0 / sqrt((double)D);
    mf_arena_mark_t mark = mf_arena_mark(ctx->arena);
    mf_status st = MF_OK;
    const int64_t rows = mf_evo_slice_rows(ctx, N);
    for (int64_t i0 = 0; i0 < N; i0 += rows) {
        const int64_t ni = N - i0 < rows ? N - i0 : rows, p0 = i0 * N, nb = ni * N;
        mf_arena_mark_t m1 = mf_arena_mark(ctx->arena);
        const char *lab = TPA_MODULE " transient";
        mf_tensor dy, o, d_o, mask, dq = {0}, dk = {0}, dv = {0};
        /* line 5 */
        mf_tensor doc = view(dout, 2, P, Cz, 1, 1);
        doc = mf_tensor_slice0(&doc, p0, nb);
        MF_TRY_GOTO(alloc(ctx, &dy, dt, 2, nb, Cz, 1, 1, lab));
        MF_TRY_GOTO(mf_mul(ctx, &dy, &doc, &saved->ind));
        mf_tensor so = mf_tensor_slice0(&saved->o, p0, nb);
        if (so.dtype == dt) {
            o = so;
        } else {
            MF_TRY_GOTO(alloc(ctx, &o, dt, 4, nb, 1, H, D, lab));
            MF_TRY_GOTO(mf_convert(ctx, &o, &so));
        }
        MF_TRY_GOTO(zeros(ctx, &d_o, dt, 4, nb, 1, H, D, lab));
        mf_tensor o2 = view(&o, 2, nb, HD, 1, 1), do2 = view(&d_o, 2, nb, HD, 1, 1);
        MF_TRY_GOTO(mf_linear_backward(ctx, &do2, d_ow, d_ob, &dy, &o2, &p->attention_output_w));
        if (!need_q && !need_kv) {
            mf_arena_release(ctx->arena, m1);
            continue;
        }
        /* lines 3-4 */
        if (need_q) MF_TRY_GOTO(zeros(ctx, &dq, dt, 4, nb, 1, H, D, lab));
        if (need_kv) {
            MF_TRY_GOTO(zeros(ctx, &dk, dt, 4, nb, T, H, D, lab));
            MF_TRY_GOTO(zeros(ctx, &dv, dt, 4, nb, T, H, D, lab));
        }
        MF_TRY_GOTO(pair_mask(ctx, &mask, nb, template_mask));
        mf_tensor sq = mf_tensor_slice0(&saved->q, p0, nb),
                  sk = mf_tensor_slice0(&saved->k, p0, nb),
                  sv = mf_tensor_slice0(&saved->v, p0, nb),
                  sl = mf_tensor_slice0(&saved->lse, p0, nb);
        MF_TRY_GOTO(mf_attention_backward(ctx, need_q ? &dq : NULL, need_kv ? &dk : NULL,
                                          need_kv ? &dv : NULL, NULL, &d_o, &so, &sl, &sq, &sk, &sv,
                                          NULL, &mask, 1.0f));
        /* line 1 */
        if (need_q) {
            mf_tensor dq2 = view(&dq, 2, nb, HD, 1, 1), zc = view(z, 2, P, Cz, 1, 1), dzc = {0};
            zc = mf_tensor_slice0(&zc, p0, nb);
            if (dz) {
                dzc = view(dz, 2, P, Cz, 1, 1);
                dzc = mf_tensor_slice0(&dzc, p0, nb);
            }
            MF_TRY_GOTO(mf_evo_scale(ctx, &dq2, qscale));
            MF_TRY_GOTO(mf_linear_backward(ctx, dz ? &dzc : NULL, d_qw, NULL, &dq2, &zc,
                                           &p->attention_query_w));
        }
        /* line 2, template by template */
        if (need_kv) {
            mf_tensor dkt, dvt;
            MF_TRY_GOTO(alloc(ctx, &dkt, dt, 3, T, nb, HD, 1, lab));
            MF_TRY_GOTO(alloc(ctx, &dvt, dt, 3, T, nb, HD, 1, lab));
            mf_tensor dk3 = view(&dk, 3, nb, T, HD, 1), dv3 = view(&dv, 3, nb, T, HD, 1);
            MF_TRY_GOTO(mf_transpose01(ctx, &dkt, &dk3, false));
            MF_TRY_GOTO(mf_transpose01(ctx, &dvt, &dv3, false));
            for (int64_t tt = 0; tt < T; tt++) {
                mf_tensor tc = template_rows(t, tt, p0, nb),
                          dtc = dt_ ? template_rows(dt_, tt, p0, nb) : (mf_tensor){0};
                mf_tensor dktt = mf_tensor_slice0(&dkt, tt, 1),
                          dvtt = mf_tensor_slice0(&dvt, tt, 1);
                dktt = view(&dktt, 2, nb, HD, 1, 1);
                dvtt = view(&dvtt, 2, nb, HD, 1, 1);
                MF_TRY_GOTO(mf_linear_backward(ctx, dt_ ? &dtc : NULL, d_kw, NULL, &dktt, &tc,
                                               &p->attention_key_w));
                MF_TRY_GOTO(mf_linear_backward(ctx, dt_ ? &dtc : NULL, d_vw, NULL, &dvtt, &tc,
                                               &p->attention_value_w));
            }
        }
        mf_arena_release(ctx->arena, m1);
    }
cleanup:
    mf_arena_release(ctx->arena, mark);
    return st;
}
