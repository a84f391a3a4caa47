/* MSA column-wise global attention (Alg. 19; AF2's GlobalAttention), see msa_attention.h. Per
 * residue column n, over the sequences s of the extra MSA, with x = query_norm(m):
 *   q_avg[n]   = sum_s mask[s,n] x[s,n] / (sum_s mask[s,n] + 1e-10)          (line 2)
 *   q[n,h]     = (q_avg[n] @ query_w)[h] * c^-1/2, k, v[s,n] = x[s,n] @ key_w, value_w  (3-4)
 *   o[n,h]     = sum_s softmax_s(q[n,h].k[s,n] - 1e9 (1 - mask[s,n])) v[s,n]  (lines 5-6)
 *   g[s,n]     = sigmoid(x[s,n] @ gating_w + gating_b)                       (line 3)
 *   update[s,n]= (g[s,n] * o[n]) @ output_w + output_b                       (line 7)
 * The masked mean's weights mask / sum(mask) are the softmax over the sequences of zero logits
 * with the mask, times the mask: exactly mask/count for a column with count >= 1 (where
 * count + 1e-10 rounds to count in f32, so AF2's epsilon changes nothing) and 0 for a column
 * with no sequence (where AF2's epsilon gives 0/1e-10 = 0). That keeps the module on public ops.
 *
 * Everything that touches [N_seq, N_res, ...] runs over slices of ctx->policy.chunk_size
 * sequences: the masked mean is a sum over the slices (chunk sizes agree within f32 rounding),
 * the shared key and value are small ([N_seq, N_res, c_hidden]); the attention core itself is
 * [N_res, H, 1, c_hidden]. */
#include "evoformer/msa_attention.h"

#include <math.h>
#include <string.h>

#include "memopt/saved.h"

#define GLOBAL_MODULE "msa_column_global_attention"

int mf_msa_column_global_attention_param_specs(const mf_msa_column_global_attention_dims *d,
                                               mf_param_spec *out)
{
    const mf_param_spec specs[] = {
#define MF_PARAM MF_PARAM_SPEC
#include "evoformer/msa_column_global_attention.def"
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

static mf_status global_check(const mf_ctx *ctx, const mf_tensor *m, const mf_tensor *msa_mask,
                              const mf_msa_column_global_attention_params *p,
                              const mf_msa_column_global_attention_dims *d)
{
    MF_REQUIRE(ctx && ctx->arena && p && d,
               GLOBAL_MODULE ": context, arena, params and dims needed");
    MF_REQUIRE(m && m->data && m->ndim == 3, GLOBAL_MODULE ": m must be [N_seq, N_res, c_m]");
    const int64_t ms[3] = {m->shape[0], m->shape[1], d->c_m}, ks[2] = {m->shape[0], m->shape[1]};
    MF_TRY(mf_evo_expect(GLOBAL_MODULE, m, "m", m->dtype, 3, ms));
    MF_TRY(mf_evo_expect(GLOBAL_MODULE, msa_mask, "msa_mask", m->dtype, 2, ks));
    mf_param_spec specs[16];
    int n = mf_msa_column_global_attention_param_specs(d, specs);
    return mf_evo_check_params(GLOBAL_MODULE, specs, n, MF_PARAMS_AS_ARRAY(p), m->dtype);
}

/* Transients shared by forward and backward. */
typedef struct {
    mf_tensor mask_t;     /* [N_res, N_seq]: msa_mask column-major, the attention's key mask */
    mf_tensor w_sn;       /* [N_seq, N_res]: the masked mean's weights mask / count */
    mf_tensor k_sn, v_sn; /* [N_seq, N_res, c_hidden] */
    mf_tensor k_t, v_t;   /* [N_res, N_seq, 1, c_hidden] */
} global_work;

static mf_status work_alloc(mf_ctx *ctx, global_work *w, mf_dtype dt, int64_t S, int64_t N,
                            int64_t D)
{
    const char *lab = GLOBAL_MODULE " transient";
    MF_TRY(alloc(ctx, &w->mask_t, dt, 2, N, S, 0, 0, lab));
    MF_TRY(alloc(ctx, &w->w_sn, dt, 2, S, N, 0, 0, lab));
    MF_TRY(alloc(ctx, &w->k_t, dt, 4, N, S, 1, D, lab));
    MF_TRY(alloc(ctx, &w->v_t, dt, 4, N, S, 1, D, lab));
    MF_TRY(alloc(ctx, &w->k_sn, dt, 3, S, N, D, 0, lab));
    return alloc(ctx, &w->v_sn, dt, 3, S, N, D, 0, lab);
}

/* Line 2's weights: w_sn = mask / count per column (0 for an empty column), and mask_t. */
static mf_status mask_weights(mf_ctx *ctx, global_work *w, const mf_tensor *msa_mask)
{
    const int64_t S = msa_mask->shape[0], N = msa_mask->shape[1];
    mf_tensor mask3 = view(msa_mask, 3, S, N, 1, 1), mt3 = view(&w->mask_t, 3, N, S, 1, 1);
    MF_TRY(mf_transpose01(ctx, &mt3, &mask3, false));
    mf_arena_mark_t mark = mf_arena_mark(ctx->arena);
    mf_tensor wt;
    mf_status st = MF_OK;
    MF_TRY_GOTO(zeros(ctx, &wt, msa_mask->dtype, 4, N, 1, 1, S, GLOBAL_MODULE " transient"));
    MF_TRY_GOTO(mf_softmax_forward(ctx, &wt, &wt, NULL, &w->mask_t));
    mf_tensor wt2 = view(&wt, 2, N, S, 1, 1);
    MF_TRY_GOTO(mf_mul(ctx, &wt2, &wt2, &w->mask_t));
    mf_tensor wt3 = view(&wt, 3, N, S, 1, 1), wsn3 = view(&w->w_sn, 3, S, N, 1, 1);
    MF_TRY_GOTO(mf_transpose01(ctx, &wsn3, &wt3, false));
cleanup:
    mf_arena_release(ctx->arena, mark);
    return st;
}

/* Sequences [s0, s0 + ns): x_c = query_norm(m_c) (with its statistics when mean != NULL), and
 * its column-major copy x_ct [N, ns, C] and weights w_ct [N, 1, ns] when want_t. */
static mf_status norm_slice(mf_ctx *ctx, mf_tensor *x_c, mf_tensor *mean, mf_tensor *rstd,
                            mf_tensor *x_ct, mf_tensor *w_ct, const global_work *w,
                            const mf_tensor *m, int64_t s0, int64_t ns,
                            const mf_msa_column_global_attention_params *p)
{
    const mf_dtype dt = m->dtype;
    const int64_t N = m->shape[1], C = m->shape[2];
    const char *lab = GLOBAL_MODULE " transient";
    mf_tensor m_c = mf_tensor_slice0(m, s0, ns);
    MF_TRY(alloc(ctx, x_c, dt, 3, ns, N, C, 0, lab));
    if (mean) {
        MF_TRY(alloc(ctx, mean, dt, 1, ns * N, 0, 0, 0, lab));
        MF_TRY(alloc(ctx, rstd, dt, 1, ns * N, 0, 0, 0, lab));
    }
    MF_TRY(mf_layer_norm_forward(ctx, x_c, mean, rstd, &m_c, &p->query_norm_scale,
                                 &p->query_norm_offset, MF_EVO_ATTENTION_LN_EPS));
    if (!x_ct) return MF_OK;
    MF_TRY(alloc(ctx, x_ct, dt, 3, N, ns, C, 0, lab));
    MF_TRY(mf_transpose01(ctx, x_ct, x_c, false));
    MF_TRY(alloc(ctx, w_ct, dt, 3, N, 1, ns, 0, lab));
    mf_tensor wsn = mf_tensor_slice0(&w->w_sn, s0, ns);
    mf_tensor src = view(&wsn, 3, ns, N, 1, 1), dst = view(w_ct, 3, N, ns, 1, 1);
    return mf_transpose01(ctx, &dst, &src, false);
}

mf_status mf_msa_column_global_attention_forward(mf_ctx *ctx, mf_tensor *out, bool accumulate,
                                                 mf_msa_column_global_attention_saved *saved,
                                                 const mf_tensor *m, const mf_tensor *msa_mask,
                                                 const mf_msa_column_global_attention_params *p,
                                                 const mf_msa_column_global_attention_dims *d)
{
    MF_TRY(global_check(ctx, m, msa_mask, p, d));
    MF_TRY(mf_evo_expect(GLOBAL_MODULE, out, "out", m->dtype, 3, m->shape));
    MF_REQUIRE(!saved || out->data != m->data,
               GLOBAL_MODULE ": out may alias m only at inference (the backward reads m)");
    const mf_dtype dt = m->dtype, sdt = mf_evo_storage_dtype(ctx, dt);
    const int64_t S = m->shape[0], N = m->shape[1], C = d->c_m, H = d->num_heads, D = d->c_hidden,
                  HD = H * D;
    mf_arena_mark_t mark0 = mf_arena_mark(ctx->arena), mark1 = mark0;
    mf_status st = MF_OK;
    mf_tensor q_avg, q, o, lse = {0}, gl_all = {0};
    if (saved) {
        *saved = (mf_msa_column_global_attention_saved){0};
        const char *lab = GLOBAL_MODULE " saved";
        MF_TRY_GOTO(alloc(ctx, &saved->q_avg, dt, 2, N, C, 0, 0, lab));
        MF_TRY_GOTO(alloc(ctx, &saved->q, dt, 4, N, H, 1, D, lab));
        MF_TRY_GOTO(alloc(ctx, &saved->o, dt, 4, N, H, 1, D, lab));
        /* the attention core keeps its log-sum-exp in f32 (f64 in a double run) */
        MF_TRY_GOTO(alloc(ctx, &saved->lse, dt == MF_F64 ? MF_F64 : MF_F32, 3, N, 1, H, 0, lab));
        MF_TRY_GOTO(alloc(ctx, &saved->gate_logits, sdt, 3, S, N, HD, 0, lab));
        q_avg = saved->q_avg, q = saved->q, o = saved->o, lse = saved->lse;
        gl_all = saved->gate_logits;
    } else {
        const char *lab = GLOBAL_MODULE " transient";
        MF_TRY_GOTO(alloc(ctx, &q_avg, dt, 2, N, C, 0, 0, lab));
        MF_TRY_GOTO(alloc(ctx, &q, dt, 4, N, H, 1, D, lab));
        MF_TRY_GOTO(alloc(ctx, &o, dt, 4, N, H, 1, D, lab));
    }
    mark1 = mf_arena_mark(ctx->arena);
    global_work w;
    MF_TRY_GOTO(work_alloc(ctx, &w, dt, S, N, D));
    MF_TRY_GOTO(mask_weights(ctx, &w, msa_mask));
    const int64_t rows = mf_evo_slice_rows(ctx, S);
    mf_tensor qa3 = view(&q_avg, 3, N, 1, C, 1);
    for (int64_t s0 = 0; s0 < S; s0 += rows) {
        const int64_t ns = S - s0 < rows ? S - s0 : rows;
        mf_arena_mark_t m1 = mf_arena_mark(ctx->arena);
        mf_tensor x_c, x_ct, w_ct;
        MF_TRY_GOTO(norm_slice(ctx, &x_c, NULL, NULL, &x_ct, &w_ct, &w, m, s0, ns, p));
        /* line 2, summed over the sequence slices */
        MF_TRY_GOTO(mf_matmul(ctx, &qa3, &w_ct, false, &x_ct, false, 1.0f, s0 ? 1.0f : 0.0f));
        /* line 4: one key and one value head */
        mf_tensor kc = mf_tensor_slice0(&w.k_sn, s0, ns), vc = mf_tensor_slice0(&w.v_sn, s0, ns);
        MF_TRY_GOTO(mf_linear_forward(ctx, &kc, &x_c, &p->attention_key_w, NULL, false));
        MF_TRY_GOTO(mf_linear_forward(ctx, &vc, &x_c, &p->attention_value_w, NULL, false));
        mf_arena_release(ctx->arena, m1);
    }
    mf_tensor ksn3 = view(&w.k_sn, 3, S, N, D, 1), vsn3 = view(&w.v_sn, 3, S, N, D, 1);
    mf_tensor kt3 = view(&w.k_t, 3, N, S, D, 1), vt3 = view(&w.v_t, 3, N, S, D, 1);
    MF_TRY_GOTO(mf_transpose01(ctx, &kt3, &ksn3, false));
    MF_TRY_GOTO(mf_transpose01(ctx, &vt3, &vsn3, false));
    /* line 3 for the mean query; AF2 scales q by c^-1/2 */
    mf_tensor q2 = view(&q, 2, N, HD, 1, 1);
    MF_TRY_GOTO(mf_linear_forward(ctx, &q2, &q_avg, &p->attention_query_w, NULL, false));
    MF_TRY_GOTO(mf_evo_scale(ctx, &q2, 1.0 / sqrt((double)D)));
    /* lines 5-6: the heads are the queries of one shared key/value head */
    MF_TRY_GOTO(mf_attention_forward(ctx, &o, saved ? &lse : NULL, &q, &w.k_t, &w.v_t, NULL,
                                     &w.mask_t, 1.0f));
    mf_tensor o2 = view(&o, 2, N, HD, 1, 1);
    /* lines 3, 6-7 per sequence slice: each reads only its own rows of m, so out may be m */
    for (int64_t s0 = 0; s0 < S; s0 += rows) {
        const int64_t ns = S - s0 < rows ? S - s0 : rows;
        mf_arena_mark_t m1 = mf_arena_mark(ctx->arena);
        const char *lab = GLOBAL_MODULE " transient";
        mf_tensor x_c, gl, g;
        MF_TRY_GOTO(norm_slice(ctx, &x_c, NULL, NULL, NULL, NULL, &w, m, s0, ns, p));
        if (saved && sdt == dt)
            gl = mf_tensor_slice0(&gl_all, s0, ns);
        else
            MF_TRY_GOTO(alloc(ctx, &gl, dt, 3, ns, N, HD, 0, lab));
        MF_TRY_GOTO(mf_linear_forward(ctx, &gl, &x_c, &p->attention_gating_w,
                                      &p->attention_gating_b, false));
        if (saved && sdt != dt) {
            mf_tensor dst = mf_tensor_slice0(&gl_all, s0, ns);
            MF_TRY_GOTO(mf_convert(ctx, &dst, &gl));
        }
        MF_TRY_GOTO(alloc(ctx, &g, dt, 3, ns, N, HD, 0, lab));
        MF_TRY_GOTO(mf_activation_forward(ctx, MF_ACT_SIGMOID, &g, &gl));
        MF_TRY_GOTO(mf_mul(ctx, &g, &g, &o2));
        mf_tensor oc = mf_tensor_slice0(out, s0, ns);
        MF_TRY_GOTO(mf_linear_forward(ctx, &oc, &g, &p->attention_output_w, &p->attention_output_b,
                                      accumulate));
        mf_arena_release(ctx->arena, m1);
    }
cleanup:
    /* training keeps the saved tensors (allocated first) and drops the work tensors above them */
    mf_arena_release(ctx->arena, st == MF_OK && saved ? mark1 : mark0);
    if (st != MF_OK && saved) *saved = (mf_msa_column_global_attention_saved){0};
    return st;
}

mf_status mf_msa_column_global_attention_backward(mf_ctx *ctx, mf_tensor *dm,
                                                  mf_msa_column_global_attention_params *dp,
                                                  const mf_tensor *dout,
                                                  const mf_msa_column_global_attention_saved *saved,
                                                  const mf_tensor *m, const mf_tensor *msa_mask,
                                                  const mf_msa_column_global_attention_params *p,
                                                  const mf_msa_column_global_attention_dims *d)
{
    MF_TRY(global_check(ctx, m, msa_mask, p, d));
    MF_REQUIRE(saved && saved->q.data && saved->gate_logits.data,
               GLOBAL_MODULE " backward needs the forward's saved tensors");
    MF_TRY(mf_evo_expect(GLOBAL_MODULE, dout, "dout", m->dtype, 3, m->shape));
    dm = grad(dm);
    if (dm) MF_TRY(mf_evo_expect(GLOBAL_MODULE, dm, "dm", m->dtype, 3, m->shape));
    const mf_dtype dt = m->dtype;
    const int64_t S = m->shape[0], N = m->shape[1], C = d->c_m, H = d->num_heads, D = d->c_hidden,
                  HD = H * D;
    mf_tensor *d_ns = dp ? grad(&dp->query_norm_scale) : NULL,
              *d_no = dp ? grad(&dp->query_norm_offset) : NULL,
              *d_qw = dp ? grad(&dp->attention_query_w) : NULL,
              *d_kw = dp ? grad(&dp->attention_key_w) : NULL,
              *d_vw = dp ? grad(&dp->attention_value_w) : NULL,
              *d_gw = dp ? grad(&dp->attention_gating_w) : NULL,
              *d_gb = dp ? grad(&dp->attention_gating_b) : NULL,
              *d_ow = dp ? grad(&dp->attention_output_w) : NULL,
              *d_ob = dp ? grad(&dp->attention_output_b) : NULL;
    const char *lab = GLOBAL_MODULE " transient";
    mf_arena_mark_t mark = mf_arena_mark(ctx->arena);
    mf_status st = MF_OK;
    global_work w;
    mf_tensor d_o, dq, dk_t, dv_t, dq_avg;
    MF_TRY_GOTO(work_alloc(ctx, &w, dt, S, N, D));
    MF_TRY_GOTO(mask_weights(ctx, &w, msa_mask));
    MF_TRY_GOTO(zeros(ctx, &d_o, dt, 4, N, H, 1, D, lab));
    mf_tensor o2 = view(&saved->o, 2, N, HD, 1, 1), do2 = view(&d_o, 2, N, HD, 1, 1);
    const int64_t rows = mf_evo_slice_rows(ctx, S);
    /* lines 3, 6-7 backwards per sequence slice, with the key and value recomputed */
    for (int64_t s0 = 0; s0 < S; s0 += rows) {
        const int64_t ns = S - s0 < rows ? S - s0 : rows;
        mf_arena_mark_t m1 = mf_arena_mark(ctx->arena);
        mf_tensor x_c, mean, rstd, gl, g, og, dog, dg, dgl, dx_c;
        MF_TRY_GOTO(norm_slice(ctx, &x_c, &mean, &rstd, NULL, NULL, &w, m, s0, ns, p));
        mf_tensor kc = mf_tensor_slice0(&w.k_sn, s0, ns), vc = mf_tensor_slice0(&w.v_sn, s0, ns);
        MF_TRY_GOTO(mf_linear_forward(ctx, &kc, &x_c, &p->attention_key_w, NULL, false));
        MF_TRY_GOTO(mf_linear_forward(ctx, &vc, &x_c, &p->attention_value_w, NULL, false));
        mf_tensor gls = mf_tensor_slice0(&saved->gate_logits, s0, ns);
        if (gls.dtype == dt) {
            gl = gls;
        } else {
            MF_TRY_GOTO(alloc(ctx, &gl, dt, 3, ns, N, HD, 0, lab));
            MF_TRY_GOTO(mf_convert(ctx, &gl, &gls));
        }
        MF_TRY_GOTO(alloc(ctx, &g, dt, 3, ns, N, HD, 0, lab));
        MF_TRY_GOTO(mf_activation_forward(ctx, MF_ACT_SIGMOID, &g, &gl));
        MF_TRY_GOTO(alloc(ctx, &og, dt, 3, ns, N, HD, 0, lab));
        MF_TRY_GOTO(mf_mul(ctx, &og, &g, &o2));
        MF_TRY_GOTO(zeros(ctx, &dog, dt, 3, ns, N, HD, 0, lab));
        mf_tensor doc = mf_tensor_slice0(dout, s0, ns);
        MF_TRY_GOTO(mf_linear_backward(ctx, &dog, d_ow, d_ob, &doc, &og, &p->attention_output_w));
        MF_TRY_GOTO(zeros(ctx, &dg, dt, 3, ns, N, HD, 0, lab));
        MF_TRY_GOTO(mf_mul_backward(ctx, &dg, &do2, &dog, &g, &o2));
        MF_TRY_GOTO(zeros(ctx, &dgl, dt, 3, ns, N, HD, 0, lab));
        MF_TRY_GOTO(mf_activation_backward(ctx, MF_ACT_SIGMOID, &dgl, &dg, &gl));
        MF_TRY_GOTO(zeros(ctx, &dx_c, dt, 3, ns, N, C, 0, lab));
        MF_TRY_GOTO(mf_linear_backward(ctx, &dx_c, d_gw, d_gb, &dgl, &x_c, &p->attention_gating_w));
        /* the layer norm's backward is linear in its upstream gradient: this slice's gating part
         * now, the key/value/mean-query part in the second pass */
        mf_tensor m_c = mf_tensor_slice0(m, s0, ns),
                  dm_c = dm ? mf_tensor_slice0(dm, s0, ns) : (mf_tensor){0};
        MF_TRY_GOTO(mf_layer_norm_backward(ctx, dm ? &dm_c : NULL, d_ns, d_no, &dx_c, &m_c, &mean,
                                           &rstd, &p->query_norm_scale));
        mf_arena_release(ctx->arena, m1);
    }
    mf_tensor ksn3 = view(&w.k_sn, 3, S, N, D, 1), vsn3 = view(&w.v_sn, 3, S, N, D, 1);
    mf_tensor kt3 = view(&w.k_t, 3, N, S, D, 1), vt3 = view(&w.v_t, 3, N, S, D, 1);
    MF_TRY_GOTO(mf_transpose01(ctx, &kt3, &ksn3, false));
    MF_TRY_GOTO(mf_transpose01(ctx, &vt3, &vsn3, false));
    /* lines 5-6 */
    MF_TRY_GOTO(zeros(ctx, &dq, dt, 4, N, H, 1, D, lab));
    MF_TRY_GOTO(zeros(ctx, &dk_t, dt, 4, N, S, 1, D, lab));
    MF_TRY_GOTO(zeros(ctx, &dv_t, dt, 4, N, S, 1, D, lab));
    MF_TRY_GOTO(mf_attention_backward(ctx, &dq, &dk_t, &dv_t, NULL, &d_o, &saved->o, &saved->lse,
                                      &saved->q, &w.k_t, &w.v_t, NULL, &w.mask_t, 1.0f));
    /* line 3 for the mean query */
    mf_tensor dq2 = view(&dq, 2, N, HD, 1, 1);
    MF_TRY_GOTO(mf_evo_scale(ctx, &dq2, 1.0 / sqrt((double)D)));
    MF_TRY_GOTO(zeros(ctx, &dq_avg, dt, 2, N, C, 0, 0, lab));
    MF_TRY_GOTO(
        mf_linear_backward(ctx, &dq_avg, d_qw, NULL, &dq2, &saved->q_avg, &p->attention_query_w));
    /* the key/value buffers now hold their gradients in sequence-major order */
    mf_tensor dkt3 = view(&dk_t, 3, N, S, D, 1), dvt3 = view(&dv_t, 3, N, S, D, 1);
    MF_TRY_GOTO(mf_transpose01(ctx, &ksn3, &dkt3, false));
    MF_TRY_GOTO(mf_transpose01(ctx, &vsn3, &dvt3, false));
    mf_tensor dqa3 = view(&dq_avg, 3, N, 1, C, 1);
    for (int64_t s0 = 0; s0 < S; s0 += rows) {
        const int64_t ns = S - s0 < rows ? S - s0 : rows;
        mf_arena_mark_t m1 = mf_arena_mark(ctx->arena);
        mf_tensor x_c, mean, rstd, x_ct, w_ct, dx_c, dx_ct;
        MF_TRY_GOTO(norm_slice(ctx, &x_c, &mean, &rstd, &x_ct, &w_ct, &w, m, s0, ns, p));
        MF_TRY_GOTO(zeros(ctx, &dx_c, dt, 3, ns, N, C, 0, lab));
        mf_tensor dkc = mf_tensor_slice0(&w.k_sn, s0, ns), dvc = mf_tensor_slice0(&w.v_sn, s0, ns);
        /* line 4 */
        MF_TRY_GOTO(mf_linear_backward(ctx, &dx_c, d_kw, NULL, &dkc, &x_c, &p->attention_key_w));
        MF_TRY_GOTO(mf_linear_backward(ctx, &dx_c, d_vw, NULL, &dvc, &x_c, &p->attention_value_w));
        /* line 2 */
        MF_TRY_GOTO(zeros(ctx, &dx_ct, dt, 3, N, ns, C, 0, lab));
        MF_TRY_GOTO(mf_matmul_backward(ctx, NULL, &dx_ct, &dqa3, &w_ct, false, &x_ct, false, 1.0f));
        MF_TRY_GOTO(mf_transpose01(ctx, &dx_c, &dx_ct, true));
        mf_tensor m_c = mf_tensor_slice0(m, s0, ns),
                  dm_c = dm ? mf_tensor_slice0(dm, s0, ns) : (mf_tensor){0};
        MF_TRY_GOTO(mf_layer_norm_backward(ctx, dm ? &dm_c : NULL, d_ns, d_no, &dx_c, &m_c, &mean,
                                           &rstd, &p->query_norm_scale));
        mf_arena_release(ctx->arena, m1);
    }
cleanup:
    mf_arena_release(ctx->arena, mark);
    return st;
}
