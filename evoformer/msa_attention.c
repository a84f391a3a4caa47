/* MSA row attention with pair bias (Alg. 7), MSA column attention (Alg. 8) and the helpers the
 * attention modules share (see msa_attention.h). */
#include "evoformer/msa_attention.h"

#include <string.h>

/* ---- helpers ----------------------------------------------------------------------------------
 */

mf_status mf_evo_expect(const char *module, const mf_tensor *t, const char *name, mf_dtype dt,
                        int ndim, const int64_t *shape)
{
    MF_REQUIRE(t && t->data, "%s: tensor %s is missing", module, name);
    char b[96];
    bool ok = t->dtype == dt && t->ndim == ndim;
    for (int i = 0; ok && i < ndim; i++) ok = t->shape[i] == shape[i];
    if (ok) return MF_OK;
    char want[96];
    size_t n = (size_t)snprintf(want, sizeof want, "[");
    for (int i = 0; i < ndim && n < sizeof want; i++)
        n += (size_t)snprintf(want + n, sizeof want - n, "%s%lld", i ? ", " : "",
                              (long long)shape[i]);
    if (n < sizeof want) snprintf(want + n, sizeof want - n, "] %s", mf_dtype_name(dt));
    return MF_ERROR(MF_ERR_INVALID, "%s: %s is %s, expected %s", module, name,
                    mf_tensor_describe(t, b, sizeof b), want);
}

mf_status mf_evo_check_params(const char *module, const mf_param_spec *specs, int n,
                              const mf_tensor *params, mf_dtype dt)
{
    MF_REQUIRE(params, "%s: parameters missing", module);
    for (int i = 0; i < n; i++)
        MF_TRY(mf_evo_expect(module, &params[i], specs[i].name, dt, specs[i].ndim, specs[i].shape));
    return MF_OK;
}

int64_t mf_evo_slice_rows(const mf_ctx *ctx, int64_t n)
{
    int64_t c = ctx->policy.chunk_size;
    return c > 0 && c < n ? c : (n > 0 ? n : 1);
}

mf_dtype mf_evo_storage_dtype(const mf_ctx *ctx, mf_dtype dt)
{
    return ctx->policy.storage == MF_BF16 && dt == MF_F32 ? MF_BF16 : dt;
}

mf_status mf_evo_scale(mf_ctx *ctx, mf_tensor *y, double alpha)
{
    const float hi = (float)alpha, lo = (float)(alpha - (double)hi);
    if (y->dtype != MF_F64 || lo == 0.0f) return mf_scale(ctx, y, y, hi);
    mf_arena_mark_t mark = mf_arena_mark(ctx->arena);
    mf_tensor copy;
    mf_status st = MF_OK;
    MF_TRY_GOTO(mf_arena_tensor(ctx->arena, &copy, y->dtype, y->ndim, y->shape, "scale copy"));
    MF_TRY_GOTO(mf_convert(ctx, &copy, y));
    MF_TRY_GOTO(mf_scale(ctx, y, y, hi));
    MF_TRY_GOTO(mf_axpy(ctx, y, lo, &copy));
cleanup:
    mf_arena_release(ctx->arena, mark);
    return st;
}

static mf_tensor view(const mf_tensor *t, int ndim, int64_t a, int64_t b, int64_t c)
{
    return mf_tensor_4(t->data, t->dtype, t->device, ndim, a, b, c, 1);
}

static mf_status alloc(mf_ctx *ctx, mf_tensor *t, mf_dtype dt, int ndim, int64_t a, int64_t b,
                       int64_t c, const char *label)
{
    const int64_t shape[3] = {a, b, c};
    return mf_arena_tensor(ctx->arena, t, dt, ndim, shape, label);
}

static mf_status zeros(mf_ctx *ctx, mf_tensor *t, mf_dtype dt, int ndim, int64_t a, int64_t b,
                       int64_t c, const char *label)
{
    const int64_t shape[3] = {a, b, c};
    return mf_arena_zeros(ctx->arena, t, dt, ndim, shape, label);
}

static mf_tensor *grad(mf_tensor *t)
{
    return t && t->data ? t : NULL;
}

/* ---- pair bias (Alg. 7 lines 3-4, Alg. 13 lines 1, 4) -------------------------------------- */

static mf_status pair_bias_check(const char *op, const mf_tensor *bias, const mf_tensor *z,
                                 const mf_tensor *norm_scale, const mf_tensor *norm_offset,
                                 const mf_tensor *w)
{
    MF_REQUIRE(z && z->data && z->ndim == 3, "%s: z must be [N, N2, c]", op);
    MF_REQUIRE(w && w->data && w->ndim == 2, "%s: feat_2d_weights must be [c, H]", op);
    const int64_t C = z->shape[2], H = w->shape[1];
    const int64_t ws[2] = {C, H}, bs[3] = {H, z->shape[0], z->shape[1]};
    MF_TRY(mf_evo_expect(op, w, "feat_2d_weights", z->dtype, 2, ws));
    MF_TRY(mf_evo_expect(op, bias, "bias", z->dtype, 3, bs));
    MF_REQUIRE(!norm_scale == !norm_offset, "%s: give both layer-norm scale and offset or none",
               op);
    if (norm_scale) {
        MF_TRY(mf_evo_expect(op, norm_scale, "norm scale", z->dtype, 1, &C));
        MF_TRY(mf_evo_expect(op, norm_offset, "norm offset", z->dtype, 1, &C));
    }
    return MF_OK;
}

mf_status mf_evo_pair_bias_forward(mf_ctx *ctx, mf_tensor *bias, const mf_tensor *z,
                                   const mf_tensor *norm_scale, const mf_tensor *norm_offset,
                                   const mf_tensor *w)
{
    MF_REQUIRE(ctx && ctx->arena, "pair bias: context and arena required");
    MF_TRY(pair_bias_check("pair bias", bias, z, norm_scale, norm_offset, w));
    const int64_t N = z->shape[0], N2 = z->shape[1], C = z->shape[2], H = w->shape[1];
    mf_arena_mark_t mark = mf_arena_mark(ctx->arena);
    mf_status st = MF_OK;
    mf_tensor b_ijh; /* [N * N2, H] */
    MF_TRY_GOTO(alloc(ctx, &b_ijh, z->dtype, 2, N * N2, H, 0, "pair bias transient"));
    const int64_t rows = mf_evo_slice_rows(ctx, N);
    for (int64_t i0 = 0; i0 < N; i0 += rows) {
        const int64_t ni = N - i0 < rows ? N - i0 : rows;
        mf_arena_mark_t m1 = mf_arena_mark(ctx->arena);
        mf_tensor zc = mf_tensor_slice0(z, i0, ni), src = zc;
        if (norm_scale) {
            MF_TRY_GOTO(alloc(ctx, &src, z->dtype, 3, ni, N2, C, "pair bias transient"));
            MF_TRY_GOTO(mf_layer_norm_forward(ctx, &src, NULL, NULL, &zc, norm_scale, norm_offset,
                                              MF_EVO_ATTENTION_LN_EPS));
        }
        mf_tensor y = mf_tensor_slice0(&b_ijh, i0 * N2, ni * N2);
        MF_TRY_GOTO(mf_linear_forward(ctx, &y, &src, w, NULL, false));
        mf_arena_release(ctx->arena, m1);
    }
    /* einsum('qkc,ch->hqk'): heads first, as the attention's bias [H, Q, K] */
    mf_tensor src3 = view(&b_ijh, 3, N * N2, H, 1), dst3 = view(bias, 3, H, N * N2, 1);
    MF_TRY_GOTO(mf_transpose01(ctx, &dst3, &src3, false));
cleanup:
    mf_arena_release(ctx->arena, mark);
    return st;
}

mf_status mf_evo_pair_bias_backward(mf_ctx *ctx, mf_tensor *dz, mf_tensor *dnorm_scale,
                                    mf_tensor *dnorm_offset, mf_tensor *dw, const mf_tensor *dbias,
                                    const mf_tensor *z, const mf_tensor *norm_scale,
                                    const mf_tensor *norm_offset, const mf_tensor *w)
{
    MF_REQUIRE(ctx && ctx->arena, "pair bias backward: context and arena required");
    MF_TRY(pair_bias_check("pair bias backward", dbias, z, norm_scale, norm_offset, w));
    dz = grad(dz);
    dnorm_scale = norm_scale ? grad(dnorm_scale) : NULL;
    dnorm_offset = norm_scale ? grad(dnorm_offset) : NULL;
    dw = grad(dw);
    if (!dz && !dnorm_scale && !dnorm_offset && !dw) return MF_OK;
    if (dz) MF_TRY(mf_evo_expect("pair bias backward", dz, "dz", z->dtype, 3, z->shape));
    const int64_t N = z->shape[0], N2 = z->shape[1], C = z->shape[2], H = w->shape[1];
    mf_arena_mark_t mark = mf_arena_mark(ctx->arena);
    mf_status st = MF_OK;
    mf_tensor db_ijh;
    MF_TRY_GOTO(alloc(ctx, &db_ijh, z->dtype, 2, N * N2, H, 0, "pair bias transient"));
    mf_tensor dst3 = view(&db_ijh, 3, N * N2, H, 1), src3 = view(dbias, 3, H, N * N2, 1);
    MF_TRY_GOTO(mf_transpose01(ctx, &dst3, &src3, false));
    const bool need_dnorm = dz || dnorm_scale || dnorm_offset;
    const int64_t rows = mf_evo_slice_rows(ctx, N);
    for (int64_t i0 = 0; i0 < N; i0 += rows) {
        const int64_t ni = N - i0 < rows ? N - i0 : rows;
        mf_arena_mark_t m1 = mf_arena_mark(ctx->arena);
        mf_tensor zc = mf_tensor_slice0(z, i0, ni),
                  dyc = mf_tensor_slice0(&db_ijh, i0 * N2, ni * N2);
        mf_tensor dzc = dz ? mf_tensor_slice0(dz, i0, ni) : (mf_tensor){0};
        if (norm_scale) {
            /* the layer norm again, bitwise the forward's, with its statistics */
            mf_tensor zn, mean, rstd, dzn = {0};
            MF_TRY_GOTO(alloc(ctx, &zn, z->dtype, 3, ni, N2, C, "pair bias transient"));
            MF_TRY_GOTO(alloc(ctx, &mean, z->dtype, 1, ni * N2, 0, 0, "pair bias transient"));
            MF_TRY_GOTO(alloc(ctx, &rstd, z->dtype, 1, ni * N2, 0, 0, "pair bias transient"));
            MF_TRY_GOTO(mf_layer_norm_forward(ctx, &zn, &mean, &rstd, &zc, norm_scale, norm_offset,
                                              MF_EVO_ATTENTION_LN_EPS));
            if (need_dnorm)
                MF_TRY_GOTO(zeros(ctx, &dzn, z->dtype, 3, ni, N2, C, "pair bias transient"));
            MF_TRY_GOTO(mf_linear_backward(ctx, need_dnorm ? &dzn : NULL, dw, NULL, &dyc, &zn, w));
            if (need_dnorm)
                MF_TRY_GOTO(mf_layer_norm_backward(ctx, dz ? &dzc : NULL, dnorm_scale, dnorm_offset,
                                                   &dzn, &zc, &mean, &rstd, norm_scale));
        } else {
            MF_TRY_GOTO(mf_linear_backward(ctx, dz ? &dzc : NULL, dw, NULL, &dyc, &zc, w));
        }
        mf_arena_release(ctx->arena, m1);
    }
cleanup:
    mf_arena_release(ctx->arena, mark);
    return st;
}

/* ---- Alg. 7 ------------------------------------------------------------------------------------
 */

#define ROW_MODULE "msa_row_attention_with_pair_bias"

int mf_msa_row_attention_param_specs(const mf_msa_row_attention_dims *d, mf_param_spec *out)
{
    const mf_param_spec specs[] = {
#define MF_PARAM MF_PARAM_SPEC
#include "evoformer/msa_row_attention_with_pair_bias.def"
#undef MF_PARAM
    };
    if (out) memcpy(out, specs, sizeof specs);
    return (int)(sizeof specs / sizeof specs[0]);
}

static mf_status row_check(const mf_ctx *ctx, const mf_tensor *m, const mf_tensor *z,
                           const mf_tensor *msa_mask, const mf_msa_row_attention_params *p,
                           const mf_msa_row_attention_dims *d)
{
    MF_REQUIRE(ctx && ctx->arena && p && d, ROW_MODULE ": context, arena, params and dims needed");
    MF_REQUIRE(m && m->data && m->ndim == 3, ROW_MODULE ": m must be [N_seq, N_res, c_m]");
    const mf_dtype dt = m->dtype;
    const int64_t S = m->shape[0], N = m->shape[1];
    const int64_t ms[3] = {S, N, d->c_m}, zs[3] = {N, N, d->c_z}, ks[2] = {S, N};
    MF_TRY(mf_evo_expect(ROW_MODULE, m, "m", dt, 3, ms));
    MF_TRY(mf_evo_expect(ROW_MODULE, z, "z", dt, 3, zs));
    MF_TRY(mf_evo_expect(ROW_MODULE, msa_mask, "msa_mask", dt, 2, ks));
    mf_param_spec specs[16];
    int n = mf_msa_row_attention_param_specs(d, specs);
    return mf_evo_check_params(ROW_MODULE, specs, n, MF_PARAMS_AS_ARRAY(p), dt);
}

mf_status mf_msa_row_attention_with_pair_bias_forward(mf_ctx *ctx, mf_tensor *out, bool accumulate,
                                                      mf_msa_row_attention_saved *saved,
                                                      const mf_tensor *m, const mf_tensor *z,
                                                      const mf_tensor *msa_mask,
                                                      const mf_msa_row_attention_params *p,
                                                      const mf_msa_row_attention_dims *d)
{
    MF_TRY(row_check(ctx, m, z, msa_mask, p, d));
    MF_TRY(mf_evo_expect(ROW_MODULE, out, "out", m->dtype, 3, m->shape));
    MF_REQUIRE(!saved || out->data != m->data,
               ROW_MODULE ": out may alias m only at inference (the backward reads m)");
    const mf_dtype dt = m->dtype;
    const int64_t S = m->shape[0], N = m->shape[1], C = d->c_m, H = d->num_heads;
    const mf_attention_params ap = MF_EVO_ATTENTION_VIEW(p);
    mf_arena_mark_t mark0 = mf_arena_mark(ctx->arena);
    mf_status st = MF_OK;
    if (saved) {
        mf_msa_row_attention_saved *s = saved;
        *s = (mf_msa_row_attention_saved){0};
        const char *lab = ROW_MODULE " saved";
        MF_TRY_GOTO(alloc(ctx, &s->x, dt, 3, S, N, C, lab));
        MF_TRY_GOTO(alloc(ctx, &s->mean, dt, 1, S * N, 0, 0, lab));
        MF_TRY_GOTO(alloc(ctx, &s->rstd, dt, 1, S * N, 0, 0, lab));
        MF_TRY_GOTO(alloc(ctx, &s->bias, dt, 3, H, N, N, lab));
        /* lines 3-4 */
        MF_TRY_GOTO(mf_evo_pair_bias_forward(ctx, &s->bias, z, &p->feat_2d_norm_scale,
                                             &p->feat_2d_norm_offset, &p->feat_2d_weights));
        /* line 1 */
        MF_TRY_GOTO(mf_layer_norm_forward(ctx, &s->x, &s->mean, &s->rstd, m, &p->query_norm_scale,
                                          &p->query_norm_offset, MF_EVO_ATTENTION_LN_EPS));
        /* lines 2, 5-7: per MSA row, keys are the residues of the row */
        MF_TRY_GOTO(mf_gated_attention_forward(ctx, out, &s->attn, &s->x, &s->x, &s->bias, msa_mask,
                                               &ap, accumulate));
        return MF_OK;
    }
    mf_tensor bias;
    MF_TRY_GOTO(alloc(ctx, &bias, dt, 3, H, N, N, ROW_MODULE " transient"));
    MF_TRY_GOTO(mf_evo_pair_bias_forward(ctx, &bias, z, &p->feat_2d_norm_scale,
                                         &p->feat_2d_norm_offset, &p->feat_2d_weights));
    /* MSA rows are independent given the bias: a slice reads only its own rows of m, so out may
     * be m itself */
    const int64_t rows = mf_evo_slice_rows(ctx, S);
    for (int64_t s0 = 0; s0 < S; s0 += rows) {
        const int64_t ns = S - s0 < rows ? S - s0 : rows;
        mf_arena_mark_t m1 = mf_arena_mark(ctx->arena);
        mf_tensor xc, mc = mf_tensor_slice0(m, s0, ns), oc = mf_tensor_slice0(out, s0, ns),
                      kc = mf_tensor_slice0(msa_mask, s0, ns);
        MF_TRY_GOTO(alloc(ctx, &xc, dt, 3, ns, N, C, ROW_MODULE " transient"));
        MF_TRY_GOTO(mf_layer_norm_forward(ctx, &xc, NULL, NULL, &mc, &p->query_norm_scale,
                                          &p->query_norm_offset, MF_EVO_ATTENTION_LN_EPS));
        MF_TRY_GOTO(
            mf_gated_attention_forward(ctx, &oc, NULL, &xc, &xc, &bias, &kc, &ap, accumulate));
        mf_arena_release(ctx->arena, m1);
    }
cleanup:
    mf_arena_release(ctx->arena, mark0);
    if (saved && st != MF_OK) *saved = (mf_msa_row_attention_saved){0};
    return st;
}

mf_status mf_msa_row_attention_with_pair_bias_backward(
    mf_ctx *ctx, mf_tensor *dm, mf_tensor *dz, mf_msa_row_attention_params *dp,
    const mf_tensor *dout, const mf_msa_row_attention_saved *saved, const mf_tensor *m,
    const mf_tensor *z, const mf_tensor *msa_mask, const mf_msa_row_attention_params *p,
    const mf_msa_row_attention_dims *d)
{
    MF_TRY(row_check(ctx, m, z, msa_mask, p, d));
    MF_REQUIRE(saved && saved->x.data, ROW_MODULE " backward needs the forward's saved tensors");
    MF_TRY(mf_evo_expect(ROW_MODULE, dout, "dout", m->dtype, 3, m->shape));
    dm = grad(dm);
    dz = grad(dz);
    if (dm) MF_TRY(mf_evo_expect(ROW_MODULE, dm, "dm", m->dtype, 3, m->shape));
    if (dz) MF_TRY(mf_evo_expect(ROW_MODULE, dz, "dz", m->dtype, 3, z->shape));
    const mf_dtype dt = m->dtype;
    const int64_t S = m->shape[0], N = m->shape[1], C = d->c_m, H = d->num_heads;
    const mf_attention_params ap = MF_EVO_ATTENTION_VIEW(p);
    mf_attention_params dap = dp ? MF_EVO_ATTENTION_VIEW(dp) : (mf_attention_params){0};
    mf_arena_mark_t mark = mf_arena_mark(ctx->arena);
    mf_status st = MF_OK;
    mf_tensor dx, dbias;
    MF_TRY_GOTO(zeros(ctx, &dx, dt, 3, S, N, C, ROW_MODULE " transient"));
    MF_TRY_GOTO(zeros(ctx, &dbias, dt, 3, H, N, N, ROW_MODULE " transient"));
    MF_TRY_GOTO(mf_gated_attention_backward(ctx, &dx, &dx, &dbias, &dap, dout, &saved->attn,
                                            &saved->x, &saved->x, &saved->bias, msa_mask, &ap));
    MF_TRY_GOTO(mf_layer_norm_backward(ctx, dm, dp ? grad(&dp->query_norm_scale) : NULL,
                                       dp ? grad(&dp->query_norm_offset) : NULL, &dx, m,
                                       &saved->mean, &saved->rstd, &p->query_norm_scale));
    MF_TRY_GOTO(mf_evo_pair_bias_backward(
        ctx, dz, dp ? &dp->feat_2d_norm_scale : NULL, dp ? &dp->feat_2d_norm_offset : NULL,
        dp ? &dp->feat_2d_weights : NULL, &dbias, z, &p->feat_2d_norm_scale,
        &p->feat_2d_norm_offset, &p->feat_2d_weights));
cleanup:
    mf_arena_release(ctx->arena, mark);
    return st;
}

/* ---- Alg. 8 ------------------------------------------------------------------------------------
 */

#define COL_MODULE "msa_column_attention"

int mf_msa_column_attention_param_specs(const mf_msa_column_attention_dims *d, mf_param_spec *out)
{
    const mf_param_spec specs[] = {
#define MF_PARAM MF_PARAM_SPEC
#include "evoformer/msa_column_attention.def"
#undef MF_PARAM
    };
    if (out) memcpy(out, specs, sizeof specs);
    return (int)(sizeof specs / sizeof specs[0]);
}

static mf_status col_check(const mf_ctx *ctx, const mf_tensor *m, const mf_tensor *msa_mask,
                           const mf_msa_column_attention_params *p,
                           const mf_msa_column_attention_dims *d)
{
    MF_REQUIRE(ctx && ctx->arena && p && d, COL_MODULE ": context, arena, params and dims needed");
    MF_REQUIRE(m && m->data && m->ndim == 3, COL_MODULE ": m must be [N_seq, N_res, c_m]");
    const int64_t ms[3] = {m->shape[0], m->shape[1], d->c_m}, ks[2] = {m->shape[0], m->shape[1]};
    MF_TRY(mf_evo_expect(COL_MODULE, m, "m", m->dtype, 3, ms));
    MF_TRY(mf_evo_expect(COL_MODULE, msa_mask, "msa_mask", m->dtype, 2, ks));
    mf_param_spec specs[16];
    int n = mf_msa_column_attention_param_specs(d, specs);
    return mf_evo_check_params(COL_MODULE, specs, n, MF_PARAMS_AS_ARRAY(p), m->dtype);
}

mf_status mf_msa_column_attention_forward(mf_ctx *ctx, mf_tensor *out, bool accumulate,
                                          mf_msa_column_attention_saved *saved, const mf_tensor *m,
                                          const mf_tensor *msa_mask,
                                          const mf_msa_column_attention_params *p,
                                          const mf_msa_column_attention_dims *d)
{
    MF_TRY(col_check(ctx, m, msa_mask, p, d));
    MF_TRY(mf_evo_expect(COL_MODULE, out, "out", m->dtype, 3, m->shape));
    MF_REQUIRE(!saved || out->data != m->data,
               COL_MODULE ": out may alias m only at inference (the backward reads m)");
    const mf_dtype dt = m->dtype;
    const int64_t S = m->shape[0], N = m->shape[1], C = d->c_m;
    const mf_attention_params ap = MF_EVO_ATTENTION_VIEW(p);
    mf_tensor mask3 = view(msa_mask, 3, S, N, 1);
    mf_arena_mark_t mark0 = mf_arena_mark(ctx->arena);
    mf_status st = MF_OK;
    mf_tensor x, mask_t, out_t;
    mf_tensor mask_t3;
    if (saved) {
        mf_msa_column_attention_saved *s = saved;
        *s = (mf_msa_column_attention_saved){0};
        const char *lab = COL_MODULE " saved";
        MF_TRY_GOTO(alloc(ctx, &s->mean, dt, 1, S * N, 0, 0, lab));
        MF_TRY_GOTO(alloc(ctx, &s->rstd, dt, 1, S * N, 0, 0, lab));
        MF_TRY_GOTO(alloc(ctx, &s->x, dt, 3, N, S, C, lab));
        MF_TRY_GOTO(alloc(ctx, &s->mask_t, dt, 2, N, S, 0, lab));
        /* line 1 in m's order (the statistics the backward's layer norm reads), then column-major
         * (AF2 swaps the MSA axes before the norm; the same numbers per element) */
        mf_arena_mark_t m1 = mf_arena_mark(ctx->arena);
        mf_tensor xn;
        MF_TRY_GOTO(alloc(ctx, &xn, dt, 3, S, N, C, COL_MODULE " transient"));
        MF_TRY_GOTO(mf_layer_norm_forward(ctx, &xn, &s->mean, &s->rstd, m, &p->query_norm_scale,
                                          &p->query_norm_offset, MF_EVO_ATTENTION_LN_EPS));
        MF_TRY_GOTO(mf_transpose01(ctx, &s->x, &xn, false));
        mf_arena_release(ctx->arena, m1);
        mask_t3 = view(&s->mask_t, 3, N, S, 1);
        MF_TRY_GOTO(mf_transpose01(ctx, &mask_t3, &mask3, false));
        MF_TRY_GOTO(alloc(ctx, &s->scratch, dt, 3, N, S, C, lab));
        /* lines 2-6: per residue column, keys are the sequences */
        MF_TRY_GOTO(mf_gated_attention_forward(ctx, &s->scratch, &s->attn, &s->x, &s->x, NULL,
                                               &s->mask_t, &ap, false));
        MF_TRY_GOTO(mf_transpose01(ctx, out, &s->scratch, accumulate));
        return MF_OK;
    }
    /* m is copied whole before out is written, so out may be m itself */
    MF_TRY_GOTO(alloc(ctx, &x, dt, 3, N, S, C, COL_MODULE " transient"));
    MF_TRY_GOTO(mf_transpose01(ctx, &x, m, false));
    MF_TRY_GOTO(mf_layer_norm_forward(ctx, &x, NULL, NULL, &x, &p->query_norm_scale,
                                      &p->query_norm_offset, MF_EVO_ATTENTION_LN_EPS));
    MF_TRY_GOTO(alloc(ctx, &mask_t, dt, 2, N, S, 0, COL_MODULE " transient"));
    mask_t3 = view(&mask_t, 3, N, S, 1);
    MF_TRY_GOTO(mf_transpose01(ctx, &mask_t3, &mask3, false));
    MF_TRY_GOTO(alloc(ctx, &out_t, dt, 3, N, S, C, COL_MODULE " transient"));
    /* the op slices the residue columns by ctx->policy.chunk_size */
    MF_TRY_GOTO(mf_gated_attention_forward(ctx, &out_t, NULL, &x, &x, NULL, &mask_t, &ap, false));
    MF_TRY_GOTO(mf_transpose01(ctx, out, &out_t, accumulate));
cleanup:
    mf_arena_release(ctx->arena, mark0);
    if (saved && st != MF_OK) *saved = (mf_msa_column_attention_saved){0};
    return st;
}

mf_status mf_msa_column_attention_backward(
    mf_ctx *ctx, mf_tensor *dm, mf_msa_column_attention_params *dp, const mf_tensor *dout,
    const mf_msa_column_attention_saved *saved, const mf_tensor *m, const mf_tensor *msa_mask,
    const mf_msa_column_attention_params *p, const mf_msa_column_attention_dims *d)
{
    MF_TRY(col_check(ctx, m, msa_mask, p, d));
    MF_REQUIRE(saved && saved->x.data && saved->scratch.data,
               COL_MODULE " backward needs the forward's saved tensors");
    MF_TRY(mf_evo_expect(COL_MODULE, dout, "dout", m->dtype, 3, m->shape));
    dm = grad(dm);
    if (dm) MF_TRY(mf_evo_expect(COL_MODULE, dm, "dm", m->dtype, 3, m->shape));
    const mf_dtype dt = m->dtype;
    const int64_t S = m->shape[0], N = m->shape[1], C = d->c_m;
    const mf_attention_params ap = MF_EVO_ATTENTION_VIEW(p);
    mf_attention_params dap = dp ? MF_EVO_ATTENTION_VIEW(dp) : (mf_attention_params){0};
    mf_arena_mark_t mark = mf_arena_mark(ctx->arena);
    mf_status st = MF_OK;
    mf_tensor dout_t = saved->scratch, dx_t, dxn;
    MF_TRY_GOTO(mf_transpose01(ctx, &dout_t, dout, false));
    MF_TRY_GOTO(zeros(ctx, &dx_t, dt, 3, N, S, C, COL_MODULE " transient"));
    MF_TRY_GOTO(mf_gated_attention_backward(ctx, &dx_t, &dx_t, NULL, &dap, &dout_t, &saved->attn,
                                            &saved->x, &saved->x, NULL, &saved->mask_t, &ap));
    MF_TRY_GOTO(alloc(ctx, &dxn, dt, 3, S, N, C, COL_MODULE " transient"));
    MF_TRY_GOTO(mf_transpose01(ctx, &dxn, &dx_t, false));
    MF_TRY_GOTO(mf_layer_norm_backward(ctx, dm, dp ? grad(&dp->query_norm_scale) : NULL,
                                       dp ? grad(&dp->query_norm_offset) : NULL, &dxn, m,
                                       &saved->mean, &saved->rstd, &p->query_norm_scale));
cleanup:
    mf_arena_release(ctx->arena, mark);
    return st;
}
