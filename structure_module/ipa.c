/* Invariant point attention (Alg. 22), see ipa.h. */
#include "structure_module/ipa.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/ops.h"
#include "core/ref/ref.h"
#include "memopt/saved.h"
#include "structure_module/rigid.h"

#define real             float
#define MF_IPA(name)     mf_ipa_##name##_f32
#define MF_IPA_REF(name) mf_ref_##name##_f32
#define MF_RG(name)      mf_##name##_f32
#define r_exp            expf
#define r_log1p          log1pf
#define r_sqrt           sqrtf
#include "structure_module/ipa.inc"
#undef real
#undef MF_IPA
#undef MF_IPA_REF
#undef MF_RG
#undef r_exp
#undef r_log1p
#undef r_sqrt

#define real             double
#define MF_IPA(name)     mf_ipa_##name##_f64
#define MF_IPA_REF(name) mf_ref_##name##_f64
#define MF_RG(name)      mf_##name##_f64
#define r_exp            exp
#define r_log1p          log1p
#define r_sqrt           sqrt
#include "structure_module/ipa.inc"
#undef real
#undef MF_IPA
#undef MF_IPA_REF
#undef MF_RG
#undef r_exp
#undef r_log1p
#undef r_sqrt

/* The host pieces of ipa.inc in the precision of the module's tensors (their data pointers are
 * passed as void *). */
#define IPA_HOST(dt, fn, ...)                                                                      \
    do {                                                                                           \
        if ((dt) == MF_F64)                                                                        \
            mf_ipa_##fn##_f64(__VA_ARGS__);                                                        \
        else                                                                                       \
            mf_ipa_##fn##_f32(__VA_ARGS__);                                                        \
    } while (0)

int mf_ipa_param_specs(const mf_ipa_dims *d, mf_param_spec *out)
{
    const mf_param_spec specs[] = {
#define MF_PARAM MF_PARAM_SPEC
#include "structure_module/ipa.def"
#undef MF_PARAM
    };
    if (out) memcpy(out, specs, sizeof specs);
    return (int)(sizeof specs / sizeof specs[0]);
}

static mf_status check_dims(const mf_ipa_dims *d)
{
    MF_REQUIRE(d, "invariant point attention: dims missing");
    MF_REQUIRE(d->c_s > 0 && d->c_z > 0 && d->num_head > 0 && d->num_scalar_qk > 0 &&
                   d->num_scalar_v > 0 && d->num_point_qk > 0 && d->num_point_v > 0,
               "invariant point attention: every size must be positive (c_s %lld, c_z %lld, "
               "heads %lld, scalar qk/v %lld/%lld, points qk/v %lld/%lld)",
               (long long)d->c_s, (long long)d->c_z, (long long)d->num_head,
               (long long)d->num_scalar_qk, (long long)d->num_scalar_v, (long long)d->num_point_qk,
               (long long)d->num_point_v);
    return MF_OK;
}

static mf_status check_params(const mf_ipa_params *p, const mf_ipa_dims *d)
{
    MF_REQUIRE(p, "invariant point attention: parameters missing");
    mf_param_spec specs[MF_IPA_NUM_PARAMS];
    int n = mf_ipa_param_specs(d, specs);
    const mf_tensor *t = MF_PARAMS_AS_ARRAY((mf_ipa_params *)p);
    for (int k = 0; k < n; k++)
        MF_TRY(mf_check_host_f32(&t[k], specs[k].name, specs[k].ndim, specs[k].shape));
    return MF_OK;
}

/* s [N, c_s], z [N, N, c_z], rot [N, 3, 3], trans [N, 3] and (when given) seq_mask [N]: host f32
 * (the frame algebra runs on the host). */
static mf_status check_inputs(const mf_ctx *ctx, const mf_tensor *s, const mf_tensor *z,
                              const mf_tensor *rot, const mf_tensor *trans,
                              const mf_tensor *seq_mask, const mf_ipa_params *p,
                              const mf_ipa_dims *d, int64_t *N)
{
    MF_REQUIRE(ctx && ctx->arena, "invariant point attention: ctx and arena required");
    MF_REQUIRE(ctx->device == MF_DEV_CPU && ctx->arena->device == MF_DEV_CPU,
               "invariant point attention runs its frame algebra on the host: CPU context "
               "required");
    MF_TRY(check_dims(d));
    MF_TRY(mf_check_tensor(s, "ipa s", MF_F32, 2));
    *N = s->shape[0];
    MF_TRY(mf_check_host_f32_dims(s, "ipa s", 2, *N, d->c_s));
    MF_TRY(mf_check_host_f32_dims(z, "ipa z", 3, *N, *N, d->c_z));
    MF_TRY(mf_check_host_f32_dims(rot, "ipa rot", 3, *N, 3, 3));
    MF_TRY(mf_check_host_f32_dims(trans, "ipa trans", 2, *N, 3));
    if (seq_mask) MF_TRY(mf_check_host_f32_dims(seq_mask, "ipa seq_mask", 1, *N));
    return check_params(p, d);
}

static void *data_of(const mf_tensor *t)
{
    return t ? t->data : NULL;
}

/* Rows [r0, r0 + n) of t (NULL when t is NULL). */
static void *rows_of(const mf_tensor *t, int64_t r0, int64_t n)
{
    if (!t || !t->data) return NULL;
    return mf_tensor_slice0(t, r0, n).data;
}

static mf_status alloc2(mf_arena *a, mf_tensor *t, mf_dtype dt, int64_t d0, int64_t d1,
                        const char *label, bool zero)
{
    const int64_t shape[2] = {d0, d1};
    return zero ? mf_arena_zeros(a, t, dt, 2, shape, label)
                : mf_arena_tensor(a, t, dt, 2, shape, label);
}

static int64_t slice_rows(const mf_ctx *ctx, int64_t N)
{
    int64_t c = ctx->policy.chunk_size;
    return c > 0 && c < N ? c : N;
}

/* A view of t's data with another shape of the same element count. */
static mf_tensor view3(const mf_tensor *t, int64_t d0, int64_t d1, int64_t d2)
{
    return mf_tensor_4(t->data, t->dtype, t->device, 3, d0, d1, d2, 1);
}

static mf_tensor view4(const mf_tensor *t, int64_t d0, int64_t d1, int64_t d2, int64_t d3)
{
    return mf_tensor_4(t->data, t->dtype, t->device, 4, d0, d1, d2, d3);
}

mf_status mf_ipa_forward(mf_ctx *ctx, mf_tensor *out, bool accumulate, mf_ipa_saved *saved,
                         const mf_tensor *s, const mf_tensor *z, const mf_tensor *rot,
                         const mf_tensor *trans, const mf_tensor *seq_mask, const mf_ipa_params *p,
                         const mf_ipa_dims *d)
{
    int64_t N;
    if (saved) *saved = (mf_ipa_saved){0};
    MF_TRY(check_inputs(ctx, s, z, rot, trans, seq_mask, p, d, &N));
    MF_TRY(mf_check_host_f32_dims(out, "ipa out", 2, N, d->c_s));
    const int64_t H = d->num_head, C = d->num_scalar_qk, CKV = C + d->num_scalar_v,
                  PQ = d->num_point_qk, PV = d->num_point_v, PA = PQ + PV, CZ = d->c_z,
                  F = mf_ipa_feature_dim(d), OP = F - H * CZ;
    const mf_dtype dt = s->dtype;
    mf_arena *A = ctx->arena;
    const mf_dtype sdt = ctx->policy.storage == MF_BF16 ? MF_BF16 : dt;
    const bool direct = saved && sdt == dt; /* compute straight into the saved tensors */
    mf_arena_mark_t mark0 = mf_arena_mark(A), mark = mark0;
    mf_status st = MF_OK;
    mf_ipa_saved sv = {0};
    if (saved) {
        /* allocated below the workspace: they stay live until the caller's backward */
        const char *lab = "ipa saved";
        MF_TRY_GOTO(alloc2(A, &sv.q_scalar, sdt, N, H * C, lab, false));
        MF_TRY_GOTO(alloc2(A, &sv.kv_scalar, sdt, N, H * CKV, lab, false));
        MF_TRY_GOTO(alloc2(A, &sv.q_point_local, sdt, N, 3 * H * PQ, lab, false));
        MF_TRY_GOTO(alloc2(A, &sv.kv_point_local, sdt, N, 3 * H * PA, lab, false));
        MF_TRY_GOTO(mf_arena_tensor(A, &sv.attention, sdt, 3, (const int64_t[]){N, H, N}, lab));
        MF_TRY_GOTO(alloc2(A, &sv.features, sdt, N, F, lab, false));
    }
    mark = mf_arena_mark(A);
    const char *lab = "ipa transient";
    /* Alg. 22 lines 1-3: projections of every residue (keys and values of all N are needed by
     * each query slice) */
    mf_tensor q = sv.q_scalar, kv = sv.kv_scalar, qpl = sv.q_point_local, kvpl = sv.kv_point_local;
    if (!direct) {
        MF_TRY_GOTO(alloc2(A, &q, dt, N, H * C, lab, false));
        MF_TRY_GOTO(alloc2(A, &kv, dt, N, H * CKV, lab, false));
        MF_TRY_GOTO(alloc2(A, &qpl, dt, N, 3 * H * PQ, lab, false));
        MF_TRY_GOTO(alloc2(A, &kvpl, dt, N, 3 * H * PA, lab, false));
    }
    MF_TRY_GOTO(mf_linear_forward(ctx, &q, s, &p->q_scalar_weights, &p->q_scalar_bias, false));
    MF_TRY_GOTO(mf_linear_forward(ctx, &kv, s, &p->kv_scalar_weights, &p->kv_scalar_bias, false));
    MF_TRY_GOTO(
        mf_linear_forward(ctx, &qpl, s, &p->q_point_local_weights, &p->q_point_local_bias, false));
    MF_TRY_GOTO(mf_linear_forward(ctx, &kvpl, s, &p->kv_point_local_weights,
                                  &p->kv_point_local_bias, false));
    if (saved && !direct) {
        MF_TRY_GOTO(mf_convert(ctx, &sv.q_scalar, &q));
        MF_TRY_GOTO(mf_convert(ctx, &sv.kv_scalar, &kv));
        MF_TRY_GOTO(mf_convert(ctx, &sv.q_point_local, &qpl));
        MF_TRY_GOTO(mf_convert(ctx, &sv.kv_point_local, &kvpl));
    }
    /* the points in the global frame (line 7's T_i o q_i^hp and T_j o k_j^hp, line 10's
     * T_j o v_j^hp) and line 7's point weights */
    mf_tensor qg, kg, vg, pw;
    MF_TRY_GOTO(alloc2(A, &qg, dt, N, H * PQ * 3, lab, false));
    MF_TRY_GOTO(alloc2(A, &kg, dt, N, H * PQ * 3, lab, false));
    MF_TRY_GOTO(alloc2(A, &vg, dt, N, H * PV * 3, lab, false));
    MF_TRY_GOTO(alloc2(A, &pw, dt, 1, H, lab, false));
    IPA_HOST(dt, to_global, qg.data, qpl.data, PQ, 0, PQ, rot->data, trans->data, N, H);
    IPA_HOST(dt, to_global, kg.data, kvpl.data, PA, 0, PQ, rot->data, trans->data, N, H);
    IPA_HOST(dt, to_global, vg.data, kvpl.data, PA, PQ, PV, rot->data, trans->data, N, H);
    IPA_HOST(dt, point_weights, pw.data, p->trainable_point_weights.data, d);

    const int64_t QS = slice_rows(ctx, N);
    const mf_arena_mark_t mark_s = mf_arena_mark(A);
    for (int64_t i0 = 0; i0 < N; i0 += QS) {
        const int64_t nq = N - i0 < QS ? N - i0 : QS;
        mf_tensor zq = mf_tensor_slice0(z, i0, nq), b2d, a, feat, pair;
        /* line 4's pair bias b_ij^h = attention_2d(z_ij) */
        MF_TRY_GOTO(mf_arena_tensor(A, &b2d, dt, 3, (const int64_t[]){nq, N, H}, lab));
        MF_TRY_GOTO(mf_linear_forward(ctx, &b2d, &zq, &p->attention_2d_weights,
                                      &p->attention_2d_bias, false));
        if (direct) {
            a = mf_tensor_slice0(&sv.attention, i0, nq);
            feat = mf_tensor_slice0(&sv.features, i0, nq);
        } else {
            MF_TRY_GOTO(mf_arena_tensor(A, &a, dt, 3, (const int64_t[]){nq, H, N}, lab));
            MF_TRY_GOTO(alloc2(A, &feat, dt, nq, F, lab, false));
        }
        /* lines 7-8 */
        IPA_HOST(dt, logits, a.data, rows_of(&q, i0, nq), kv.data, rows_of(&qg, i0, nq), kg.data,
                 b2d.data, rows_of(seq_mask, i0, nq), data_of(seq_mask), pw.data, nq, N, d);
        mf_tensor a4 = view4(&a, 1, 1, nq * H, N);
        MF_TRY_GOTO(mf_softmax_forward(ctx, &a4, &a4, NULL, NULL));
        /* lines 9-11: scalar, point and norm blocks on the host, the pair block
         * o_i^h = sum_j a_ij^h z_ij as a batched product */
        IPA_HOST(dt, attend, feat.data, a.data, kv.data, vg.data, NULL, rows_of(rot, i0, nq),
                 rows_of(trans, i0, nq), nq, N, d);
        MF_TRY_GOTO(mf_arena_tensor(A, &pair, dt, 3, (const int64_t[]){nq, H, CZ}, lab));
        mf_tensor a3 = view3(&a, nq, H, N);
        MF_TRY_GOTO(mf_matmul(ctx, &pair, &a3, false, &zq, false, 1.0f, 0.0f));
        IPA_HOST(dt, copy_cols, feat.data, F, OP, pair.data, H * CZ, 0, nq, H * CZ, false);
        /* line 12 */
        mf_tensor oq = mf_tensor_slice0(out, i0, nq);
        MF_TRY_GOTO(mf_linear_forward(ctx, &oq, &feat, &p->output_projection_weights,
                                      &p->output_projection_bias, accumulate));
        if (saved && !direct) {
            mf_tensor sa = mf_tensor_slice0(&sv.attention, i0, nq),
                      sf = mf_tensor_slice0(&sv.features, i0, nq);
            MF_TRY_GOTO(mf_convert(ctx, &sa, &a));
            MF_TRY_GOTO(mf_convert(ctx, &sf, &feat));
        }
        mf_arena_release(A, mark_s);
    }
cleanup:
    /* on failure nothing stays allocated, the saved tensors included */
    mf_arena_release(A, st == MF_OK ? mark : mark0);
    if (st == MF_OK && saved) *saved = sv;
    return st;
}

static mf_status check_saved(const mf_ipa_saved *sv, int64_t N, const mf_ipa_dims *d)
{
    MF_REQUIRE(sv, "invariant point attention backward needs the forward's saved activations");
    const int64_t H = d->num_head, C = d->num_scalar_qk, CKV = C + d->num_scalar_v,
                  PA = d->num_point_qk + d->num_point_v;
    const mf_tensor *t[6] = {&sv->q_scalar,       &sv->kv_scalar, &sv->q_point_local,
                             &sv->kv_point_local, &sv->attention, &sv->features};
    static const char *const names[6] = {"q_scalar",       "kv_scalar", "q_point_local",
                                         "kv_point_local", "attention", "features"};
    const int64_t shape[6][3] = {
        {N, H * C, 0},      {N, H * CKV, 0}, {N, 3 * H * d->num_point_qk, 0},
        {N, 3 * H * PA, 0}, {N, H, N},       {N, mf_ipa_feature_dim(d), 0}};
    for (int k = 0; k < 6; k++) {
        int nd = k == 4 ? 3 : 2;
        MF_REQUIRE(t[k]->data && t[k]->device == MF_DEV_CPU &&
                       (t[k]->dtype == MF_F32 || t[k]->dtype == MF_BF16) && t[k]->ndim == nd,
                   "ipa backward: saved %s missing or not a host f32/bf16 tensor of %d dims",
                   names[k], nd);
        for (int i = 0; i < nd; i++)
            MF_REQUIRE(t[k]->shape[i] == shape[k][i],
                       "ipa backward: saved %s has dim %d = %lld, expected %lld", names[k], i,
                       (long long)t[k]->shape[i], (long long)shape[k][i]);
    }
    return MF_OK;
}

mf_status mf_ipa_backward(mf_ctx *ctx, mf_tensor *ds, mf_tensor *dz, mf_tensor *drot,
                          mf_tensor *dtrans, mf_ipa_params *dp, const mf_tensor *dout,
                          const mf_ipa_saved *saved, const mf_tensor *s, const mf_tensor *z,
                          const mf_tensor *rot, const mf_tensor *trans, const mf_ipa_params *p,
                          const mf_ipa_dims *d)
{
    int64_t N;
    MF_TRY(check_inputs(ctx, s, z, rot, trans, NULL, p, d, &N));
    MF_TRY(check_saved(saved, N, d));
    MF_TRY(mf_check_host_f32_dims(dout, "ipa dout", 2, N, d->c_s));
    if (ds) MF_TRY(mf_check_host_f32_dims(ds, "ipa ds", 2, N, d->c_s));
    if (dz) MF_TRY(mf_check_host_f32_dims(dz, "ipa dz", 3, N, N, d->c_z));
    if (drot) MF_TRY(mf_check_host_f32_dims(drot, "ipa drot", 3, N, 3, 3));
    if (dtrans) MF_TRY(mf_check_host_f32_dims(dtrans, "ipa dtrans", 2, N, 3));
    mf_param_spec specs[MF_IPA_NUM_PARAMS];
    mf_ipa_params g = {0}; /* the gradients to accumulate (data NULL: skipped) */
    if (dp) {
        int n = mf_ipa_param_specs(d, specs);
        mf_tensor *gp = MF_PARAMS_AS_ARRAY(dp);
        for (int k = 0; k < n; k++)
            if (gp[k].data)
                MF_TRY(mf_check_host_f32(&gp[k], specs[k].name, specs[k].ndim, specs[k].shape));
        g = *dp;
    }
#define GRAD(field) (g.field.data ? &g.field : NULL)
    const int64_t H = d->num_head, C = d->num_scalar_qk, CKV = C + d->num_scalar_v,
                  PQ = d->num_point_qk, PV = d->num_point_v, PA = PQ + PV, CZ = d->c_z,
                  F = mf_ipa_feature_dim(d), OP = F - H * CZ;
    const mf_dtype dt = s->dtype;
    mf_arena *A = ctx->arena;
    const mf_arena_mark_t mark = mf_arena_mark(A);
    mf_status st = MF_OK;
    const char *lab = "ipa backward transient";
    /* the saved projections and features in the compute precision; global points and point
     * weights recomputed */
    mf_tensor q, kv, qpl, kvpl, feat, qg, kg, vg, pw;
    MF_TRY_GOTO(mf_saved_as_f32(ctx, &q, &saved->q_scalar, lab));
    MF_TRY_GOTO(mf_saved_as_f32(ctx, &kv, &saved->kv_scalar, lab));
    MF_TRY_GOTO(mf_saved_as_f32(ctx, &qpl, &saved->q_point_local, lab));
    MF_TRY_GOTO(mf_saved_as_f32(ctx, &kvpl, &saved->kv_point_local, lab));
    MF_TRY_GOTO(mf_saved_as_f32(ctx, &feat, &saved->features, lab));
    MF_TRY_GOTO(alloc2(A, &qg, dt, N, H * PQ * 3, lab, false));
    MF_TRY_GOTO(alloc2(A, &kg, dt, N, H * PQ * 3, lab, false));
    MF_TRY_GOTO(alloc2(A, &vg, dt, N, H * PV * 3, lab, false));
    MF_TRY_GOTO(alloc2(A, &pw, dt, 1, H, lab, false));
    IPA_HOST(dt, to_global, qg.data, qpl.data, PQ, 0, PQ, rot->data, trans->data, N, H);
    IPA_HOST(dt, to_global, kg.data, kvpl.data, PA, 0, PQ, rot->data, trans->data, N, H);
    IPA_HOST(dt, to_global, vg.data, kvpl.data, PA, PQ, PV, rot->data, trans->data, N, H);
    IPA_HOST(dt, point_weights, pw.data, p->trainable_point_weights.data, d);

    /* line 12, over all rows at once */
    mf_tensor dfeat, dq, dkv, dqg, dkg, dvg, dpw, dog;
    MF_TRY_GOTO(alloc2(A, &dfeat, dt, N, F, lab, true));
    MF_TRY_GOTO(mf_linear_backward(ctx, &dfeat, GRAD(output_projection_weights),
                                   GRAD(output_projection_bias), dout, &feat,
                                   &p->output_projection_weights));
    MF_TRY_GOTO(alloc2(A, &dq, dt, N, H * C, lab, true));
    MF_TRY_GOTO(alloc2(A, &dkv, dt, N, H * CKV, lab, true));
    MF_TRY_GOTO(alloc2(A, &dqg, dt, N, H * PQ * 3, lab, true));
    MF_TRY_GOTO(alloc2(A, &dkg, dt, N, H * PQ * 3, lab, true));
    MF_TRY_GOTO(alloc2(A, &dvg, dt, N, H * PV * 3, lab, true));
    MF_TRY_GOTO(alloc2(A, &dpw, dt, 1, H, lab, true));

    const int64_t QS = slice_rows(ctx, N);
    MF_TRY_GOTO(alloc2(A, &dog, dt, QS, H * PV * 3, lab, false));
    const mf_arena_mark_t mark_s = mf_arena_mark(A);
    mf_tensor *gw2d = GRAD(attention_2d_weights), *gb2d = GRAD(attention_2d_bias);
    for (int64_t i0 = 0; i0 < N; i0 += QS) {
        const int64_t nq = N - i0 < QS ? N - i0 : QS;
        mf_tensor sa = mf_tensor_slice0(&saved->attention, i0, nq), a, da, dpair, dl, db2d;
        mf_tensor zq = mf_tensor_slice0(z, i0, nq),
                  dzq = dz ? mf_tensor_slice0(dz, i0, nq) : (mf_tensor){0};
        MF_TRY_GOTO(mf_saved_as_f32(ctx, &a, &sa, lab));
        MF_TRY_GOTO(mf_arena_zeros(A, &da, dt, 3, (const int64_t[]){nq, H, N}, lab));
        /* lines 10-11 (scalar, point and norm blocks) */
        IPA_HOST(dt, attend_backward, da.data, dkv.data, dvg.data, NULL, rows_of(drot, i0, nq),
                 rows_of(dtrans, i0, nq), dog.data, rows_of(&dfeat, i0, nq), rows_of(&feat, i0, nq),
                 a.data, kv.data, vg.data, NULL, rows_of(rot, i0, nq), rows_of(trans, i0, nq), nq,
                 N, d);
        /* line 11's pair block */
        MF_TRY_GOTO(mf_arena_tensor(A, &dpair, dt, 3, (const int64_t[]){nq, H, CZ}, lab));
        IPA_HOST(dt, copy_cols, dpair.data, H * CZ, 0, rows_of(&dfeat, i0, nq), F, OP, nq, H * CZ,
                 false);
        mf_tensor a3 = view3(&a, nq, H, N), da3 = view3(&da, nq, H, N);
        MF_TRY_GOTO(
            mf_matmul_backward(ctx, &da3, dz ? &dzq : NULL, &dpair, &a3, false, &zq, false, 1.0f));
        /* line 8 */
        MF_TRY_GOTO(mf_arena_zeros(A, &dl, dt, 4, (const int64_t[]){1, 1, nq * H, N}, lab));
        mf_tensor a4 = view4(&a, 1, 1, nq * H, N), da4 = view4(&da, 1, 1, nq * H, N);
        MF_TRY_GOTO(mf_softmax_backward(ctx, &dl, NULL, &da4, &a4));
        /* line 7 */
        MF_TRY_GOTO(mf_arena_zeros(A, &db2d, dt, 3, (const int64_t[]){nq, N, H}, lab));
        IPA_HOST(dt, logits_backward, rows_of(&dq, i0, nq), dkv.data, rows_of(&dqg, i0, nq),
                 dkg.data, db2d.data, dpw.data, dl.data, rows_of(&q, i0, nq), kv.data,
                 rows_of(&qg, i0, nq), kg.data, pw.data, nq, N, d);
        /* line 4 */
        if (dz || gw2d || gb2d)
            MF_TRY_GOTO(mf_linear_backward(ctx, dz ? &dzq : NULL, gw2d, gb2d, &db2d, &zq,
                                           &p->attention_2d_weights));
        mf_arena_release(A, mark_s);
    }
    if (GRAD(trainable_point_weights))
        IPA_HOST(dt, point_weights_backward, g.trainable_point_weights.data, dpw.data,
                 p->trainable_point_weights.data, d);
    /* lines 1-3: the global points back to the local ones and the frames, then the projections */
    mf_tensor dqpl, dkvpl;
    MF_TRY_GOTO(alloc2(A, &dqpl, dt, N, 3 * H * PQ, lab, true));
    MF_TRY_GOTO(alloc2(A, &dkvpl, dt, N, 3 * H * PA, lab, true));
    IPA_HOST(dt, to_global_backward, dqpl.data, data_of(drot), data_of(dtrans), dqg.data, qpl.data,
             PQ, 0, PQ, rot->data, N, H);
    IPA_HOST(dt, to_global_backward, dkvpl.data, data_of(drot), data_of(dtrans), dkg.data,
             kvpl.data, PA, 0, PQ, rot->data, N, H);
    IPA_HOST(dt, to_global_backward, dkvpl.data, data_of(drot), data_of(dtrans), dvg.data,
             kvpl.data, PA, PQ, PV, rot->data, N, H);
    MF_TRY_GOTO(mf_linear_backward(ctx, ds, GRAD(q_scalar_weights), GRAD(q_scalar_bias), &dq, s,
                                   &p->q_scalar_weights));
    MF_TRY_GOTO(mf_linear_backward(ctx, ds, GRAD(kv_scalar_weights), GRAD(kv_scalar_bias), &dkv, s,
                                   &p->kv_scalar_weights));
    MF_TRY_GOTO(mf_linear_backward(ctx, ds, GRAD(q_point_local_weights), GRAD(q_point_local_bias),
                                   &dqpl, s, &p->q_point_local_weights));
    MF_TRY_GOTO(mf_linear_backward(ctx, ds, GRAD(kv_point_local_weights), GRAD(kv_point_local_bias),
                                   &dkvpl, s, &p->kv_point_local_weights));
#undef GRAD
cleanup:
    mf_arena_release(A, mark);
    return st;
}
