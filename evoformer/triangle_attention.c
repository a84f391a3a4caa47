/* Triangle attention around the starting node (Alg. 13) and the ending node (Alg. 14), see
 * triangle_attention.h. */
#include "evoformer/triangle_attention.h"

#include <string.h>

#include "evoformer/msa_attention.h"

#define TRI_MODULE "triangle_attention"

int mf_triangle_attention_param_specs(const mf_triangle_attention_dims *d, mf_param_spec *out)
{
    const mf_param_spec specs[] = {
#define MF_PARAM MF_PARAM_SPEC
#include "evoformer/triangle_attention.def"
#undef MF_PARAM
    };
    if (out) memcpy(out, specs, sizeof specs);
    return (int)(sizeof specs / sizeof specs[0]);
}

static mf_tensor view3(const mf_tensor *t, int64_t a, int64_t b, int64_t c)
{
    return mf_tensor_4(t->data, t->dtype, t->device, 3, a, b, c, 1);
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

static mf_status tri_check(const mf_ctx *ctx, const mf_tensor *z, const mf_tensor *pair_mask,
                           const mf_triangle_attention_params *p,
                           const mf_triangle_attention_dims *d)
{
    MF_REQUIRE(ctx && ctx->arena && p && d, TRI_MODULE ": context, arena, params and dims needed");
    MF_REQUIRE(z && z->data && z->ndim == 3, TRI_MODULE ": z must be [N, N, c_z]");
    const int64_t N = z->shape[0];
    const int64_t zs[3] = {N, N, d->c_z}, ms[2] = {N, N};
    MF_TRY(mf_evo_expect(TRI_MODULE, z, "z", z->dtype, 3, zs));
    MF_TRY(mf_evo_expect(TRI_MODULE, pair_mask, "pair_mask", z->dtype, 2, ms));
    mf_param_spec specs[16];
    int n = mf_triangle_attention_param_specs(d, specs);
    return mf_evo_check_params(TRI_MODULE, specs, n, MF_PARAMS_AS_ARRAY(p), z->dtype);
}

/* z[:, j0:j0+n, :] transposed into x [n, N, C]. */
static void gather_columns(float *x, const float *z, int64_t N, int64_t C, int64_t j0, int64_t n)
{
#pragma omp parallel for schedule(static) if (N * n * C > 65536)
    for (int64_t k = 0; k < N; k++)
        for (int64_t a = 0; a < n; a++)
            memcpy(x + (a * N + k) * C, z + (k * N + j0 + a) * C, sizeof(float) * (size_t)C);
}

/* out[:, j0:j0+n, :] = (or +=) y [n, N, C] transposed. */
static void scatter_columns(float *out, const float *y, int64_t N, int64_t C, int64_t j0, int64_t n,
                            bool accumulate)
{
#pragma omp parallel for schedule(static) if (N * n * C > 65536)
    for (int64_t k = 0; k < N; k++)
        for (int64_t a = 0; a < n; a++) {
            float *o = out + (k * N + j0 + a) * C;
            const float *v = y + (a * N + k) * C;
            if (accumulate)
                for (int64_t c = 0; c < C; c++) o[c] += v[c];
            else
                memcpy(o, v, sizeof(float) * (size_t)C);
        }
}

/* Square [N, N] matrices of t [H, N, N] transposed in place. */
static void transpose_last_in_place(float *t, int64_t H, int64_t N)
{
#pragma omp parallel for collapse(2) schedule(static) if (H * N * N > 65536)
    for (int64_t h = 0; h < H; h++)
        for (int64_t i = 0; i < N; i++) {
            float *m = t + h * N * N;
            for (int64_t j = i + 1; j < N; j++) {
                float v = m[i * N + j];
                m[i * N + j] = m[j * N + i];
                m[j * N + i] = v;
            }
        }
}

/* Alg. 14 at inference with chunking on the CPU: a slice of columns j of z at a time, each
 * gathered transposed (the rows of AF2's swapped pair), normalised, attended and added back
 * transposed, so that neither the swapped pair nor its update is ever whole (against two
 * [N, N, c_z] copies); the bias is computed from z and transposed in place. A slice of columns
 * reads only its own columns of z, so out may be z. Per element the arithmetic of the whole
 * path. */
static mf_status ending_forward_sliced(mf_ctx *ctx, mf_tensor *out, bool accumulate,
                                       const mf_tensor *z, const mf_tensor *pair_mask,
                                       const mf_triangle_attention_params *p,
                                       const mf_triangle_attention_dims *d, int64_t rows)
{
    const int64_t N = z->shape[0], C = d->c_z, H = d->num_heads;
    const mf_attention_params ap = MF_EVO_ATTENTION_VIEW(p);
    mf_arena_mark_t mark0 = mf_arena_mark(ctx->arena);
    mf_status st = MF_OK;
    mf_tensor bias, mask_t;
    MF_TRY_GOTO(alloc(ctx, &bias, MF_F32, 3, H, N, N, TRI_MODULE " transient"));
    MF_TRY_GOTO(mf_evo_pair_bias_forward(ctx, &bias, z, &p->query_norm_scale, &p->query_norm_offset,
                                         &p->feat_2d_weights));
    transpose_last_in_place(bias.data, H, N);
    MF_TRY_GOTO(alloc(ctx, &mask_t, MF_F32, 2, N, N, 0, TRI_MODULE " transient"));
    {
        mf_tensor mt3 = view3(&mask_t, N, N, 1), mask3 = view3(pair_mask, N, N, 1);
        MF_TRY_GOTO(mf_transpose01(ctx, &mt3, &mask3, false));
    }
    for (int64_t j0 = 0; j0 < N; j0 += rows) {
        const int64_t nj = N - j0 < rows ? N - j0 : rows;
        mf_arena_mark_t m1 = mf_arena_mark(ctx->arena);
        mf_tensor xc, oc, kc = mf_tensor_slice0(&mask_t, j0, nj);
        MF_TRY_GOTO(alloc(ctx, &xc, MF_F32, 3, nj, N, C, TRI_MODULE " transient"));
        MF_TRY_GOTO(alloc(ctx, &oc, MF_F32, 3, nj, N, C, TRI_MODULE " transient"));
        gather_columns(xc.data, z->data, N, C, j0, nj);
        MF_TRY_GOTO(mf_layer_norm_forward(ctx, &xc, NULL, NULL, &xc, &p->query_norm_scale,
                                          &p->query_norm_offset, MF_EVO_ATTENTION_LN_EPS));
        MF_TRY_GOTO(mf_gated_attention_forward(ctx, &oc, NULL, &xc, &xc, &bias, &kc, &ap, false));
        scatter_columns(out->data, oc.data, N, C, j0, nj, accumulate);
        mf_arena_release(ctx->arena, m1);
    }
cleanup:
    mf_arena_release(ctx->arena, mark0);
    return st;
}

static mf_status tri_forward(mf_ctx *ctx, bool ending, mf_tensor *out, bool accumulate,
                             mf_triangle_attention_saved *saved, const mf_tensor *z,
                             const mf_tensor *pair_mask, const mf_triangle_attention_params *p,
                             const mf_triangle_attention_dims *d)
{
    MF_TRY(tri_check(ctx, z, pair_mask, p, d));
    MF_TRY(mf_evo_expect(TRI_MODULE, out, "out", z->dtype, 3, z->shape));
    MF_REQUIRE(!saved || out->data != z->data,
               TRI_MODULE ": out may alias z only at inference (the backward reads z)");
    const mf_dtype dt = z->dtype;
    const int64_t N = z->shape[0], C = d->c_z, H = d->num_heads;
    const mf_attention_params ap = MF_EVO_ATTENTION_VIEW(p);
    const mf_tensor *ln_s = &p->query_norm_scale, *ln_o = &p->query_norm_offset;
    mf_tensor mask3 = view3(pair_mask, N, N, 1);
    mf_arena_mark_t mark0 = mf_arena_mark(ctx->arena);
    mf_status st = MF_OK;
    if (saved) {
        mf_triangle_attention_saved *s = saved;
        *s = (mf_triangle_attention_saved){0};
        const char *lab = ending ? TRI_MODULE " (ending node) saved" : TRI_MODULE " saved";
        MF_TRY_GOTO(alloc(ctx, &s->x, dt, 3, N, N, C, lab));
        MF_TRY_GOTO(alloc(ctx, &s->mean, dt, 1, N * N, 0, 0, lab));
        MF_TRY_GOTO(alloc(ctx, &s->rstd, dt, 1, N * N, 0, 0, lab));
        MF_TRY_GOTO(alloc(ctx, &s->bias, dt, 3, H, N, N, lab));
        const mf_tensor *mask = pair_mask;
        if (ending) {
            MF_TRY_GOTO(alloc(ctx, &s->mask_t, dt, 2, N, N, 0, lab));
            mf_tensor mt3 = view3(&s->mask_t, N, N, 1);
            MF_TRY_GOTO(mf_transpose01(ctx, &mt3, &mask3, false));
            mask = &s->mask_t;
            /* line 1 in z's order (the statistics the backward reads), then AF2's swap */
            mf_arena_mark_t m1 = mf_arena_mark(ctx->arena);
            mf_tensor xn;
            MF_TRY_GOTO(alloc(ctx, &xn, dt, 3, N, N, C, TRI_MODULE " transient"));
            MF_TRY_GOTO(mf_layer_norm_forward(ctx, &xn, &s->mean, &s->rstd, z, ln_s, ln_o,
                                              MF_EVO_ATTENTION_LN_EPS));
            MF_TRY_GOTO(mf_transpose01(ctx, &s->x, &xn, false));
            mf_arena_release(ctx->arena, m1);
        } else {
            MF_TRY_GOTO(mf_layer_norm_forward(ctx, &s->x, &s->mean, &s->rstd, z, ln_s, ln_o,
                                              MF_EVO_ATTENTION_LN_EPS));
        }
        /* line 4 */
        MF_TRY_GOTO(
            mf_evo_pair_bias_forward(ctx, &s->bias, &s->x, NULL, NULL, &p->feat_2d_weights));
        /* lines 2-3, 5-8 */
        if (ending) {
            MF_TRY_GOTO(alloc(ctx, &s->scratch, dt, 3, N, N, C, lab));
            MF_TRY_GOTO(mf_gated_attention_forward(ctx, &s->scratch, &s->attn, &s->x, &s->x,
                                                   &s->bias, mask, &ap, false));
            MF_TRY_GOTO(mf_transpose01(ctx, out, &s->scratch, accumulate));
        } else {
            MF_TRY_GOTO(mf_gated_attention_forward(ctx, out, &s->attn, &s->x, &s->x, &s->bias, mask,
                                                   &ap, accumulate));
        }
        return MF_OK;
    }
    if (ending && ctx->device == MF_DEV_CPU && dt == MF_F32 && mf_evo_slice_rows(ctx, N) < N)
        return ending_forward_sliced(ctx, out, accumulate, z, pair_mask, p, d,
                                     mf_evo_slice_rows(ctx, N));
    mf_tensor bias;
    MF_TRY_GOTO(alloc(ctx, &bias, dt, 3, H, N, N, TRI_MODULE " transient"));
    if (ending) {
        /* z is copied whole (transposed) before out is written, so out may be z itself */
        mf_tensor x, mask_t, out_t;
        MF_TRY_GOTO(alloc(ctx, &x, dt, 3, N, N, C, TRI_MODULE " transient"));
        MF_TRY_GOTO(mf_transpose01(ctx, &x, z, false));
        MF_TRY_GOTO(
            mf_layer_norm_forward(ctx, &x, NULL, NULL, &x, ln_s, ln_o, MF_EVO_ATTENTION_LN_EPS));
        MF_TRY_GOTO(mf_evo_pair_bias_forward(ctx, &bias, &x, NULL, NULL, &p->feat_2d_weights));
        MF_TRY_GOTO(alloc(ctx, &mask_t, dt, 2, N, N, 0, TRI_MODULE " transient"));
        mf_tensor mt3 = view3(&mask_t, N, N, 1);
        MF_TRY_GOTO(mf_transpose01(ctx, &mt3, &mask3, false));
        MF_TRY_GOTO(alloc(ctx, &out_t, dt, 3, N, N, C, TRI_MODULE " transient"));
        /* the op slices the rows of the transposed pair by ctx->policy.chunk_size */
        MF_TRY_GOTO(
            mf_gated_attention_forward(ctx, &out_t, NULL, &x, &x, &bias, &mask_t, &ap, false));
        MF_TRY_GOTO(mf_transpose01(ctx, out, &out_t, accumulate));
    } else {
        /* the whole bias first: after it, a slice of rows i reads only its own rows of z */
        MF_TRY_GOTO(mf_evo_pair_bias_forward(ctx, &bias, z, ln_s, ln_o, &p->feat_2d_weights));
        const int64_t rows = mf_evo_slice_rows(ctx, N);
        for (int64_t i0 = 0; i0 < N; i0 += rows) {
            const int64_t ni = N - i0 < rows ? N - i0 : rows;
            mf_arena_mark_t m1 = mf_arena_mark(ctx->arena);
            mf_tensor xc, zc = mf_tensor_slice0(z, i0, ni), oc = mf_tensor_slice0(out, i0, ni),
                          kc = mf_tensor_slice0(pair_mask, i0, ni);
            MF_TRY_GOTO(alloc(ctx, &xc, dt, 3, ni, N, C, TRI_MODULE " transient"));
            MF_TRY_GOTO(mf_layer_norm_forward(ctx, &xc, NULL, NULL, &zc, ln_s, ln_o,
                                              MF_EVO_ATTENTION_LN_EPS));
            MF_TRY_GOTO(
                mf_gated_attention_forward(ctx, &oc, NULL, &xc, &xc, &bias, &kc, &ap, accumulate));
            mf_arena_release(ctx->arena, m1);
        }
    }
cleanup:
    mf_arena_release(ctx->arena, mark0);
    if (saved && st != MF_OK) *saved = (mf_triangle_attention_saved){0};
    return st;
}

static mf_tensor *grad(mf_tensor *t)
{
    return t && t->data ? t : NULL;
}

static mf_status tri_backward(mf_ctx *ctx, bool ending, mf_tensor *dz,
                              mf_triangle_attention_params *dp, const mf_tensor *dout,
                              const mf_triangle_attention_saved *saved, const mf_tensor *z,
                              const mf_tensor *pair_mask, const mf_triangle_attention_params *p,
                              const mf_triangle_attention_dims *d)
{
    MF_TRY(tri_check(ctx, z, pair_mask, p, d));
    MF_REQUIRE(saved && saved->x.data && (!ending || saved->scratch.data),
               TRI_MODULE " backward needs the forward's saved tensors (of the same orientation)");
    MF_TRY(mf_evo_expect(TRI_MODULE, dout, "dout", z->dtype, 3, z->shape));
    dz = grad(dz);
    if (dz) MF_TRY(mf_evo_expect(TRI_MODULE, dz, "dz", z->dtype, 3, z->shape));
    const mf_dtype dt = z->dtype;
    const int64_t N = z->shape[0], C = d->c_z, H = d->num_heads;
    const mf_attention_params ap = MF_EVO_ATTENTION_VIEW(p);
    mf_attention_params dap = dp ? MF_EVO_ATTENTION_VIEW(dp) : (mf_attention_params){0};
    mf_arena_mark_t mark = mf_arena_mark(ctx->arena);
    mf_status st = MF_OK;
    mf_tensor dx, dbias, dout_a = *dout;
    const mf_tensor *mask = ending ? &saved->mask_t : pair_mask;
    if (ending) {
        dout_a = saved->scratch;
        MF_TRY_GOTO(mf_transpose01(ctx, &dout_a, dout, false));
    }
    MF_TRY_GOTO(zeros(ctx, &dx, dt, 3, N, N, C, TRI_MODULE " transient"));
    MF_TRY_GOTO(zeros(ctx, &dbias, dt, 3, H, N, N, TRI_MODULE " transient"));
    MF_TRY_GOTO(mf_gated_attention_backward(ctx, &dx, &dx, &dbias, &dap, &dout_a, &saved->attn,
                                            &saved->x, &saved->x, &saved->bias, mask, &ap));
    /* line 4: the bias reads the same normalised pair as the queries */
    MF_TRY_GOTO(mf_evo_pair_bias_backward(ctx, &dx, NULL, NULL, dp ? &dp->feat_2d_weights : NULL,
                                          &dbias, &saved->x, NULL, NULL, &p->feat_2d_weights));
    mf_tensor dxn = dx;
    if (ending) {
        MF_TRY_GOTO(alloc(ctx, &dxn, dt, 3, N, N, C, TRI_MODULE " transient"));
        MF_TRY_GOTO(mf_transpose01(ctx, &dxn, &dx, false));
    }
    /* line 1 */
    MF_TRY_GOTO(mf_layer_norm_backward(ctx, dz, dp ? grad(&dp->query_norm_scale) : NULL,
                                       dp ? grad(&dp->query_norm_offset) : NULL, &dxn, z,
                                       &saved->mean, &saved->rstd, &p->query_norm_scale));
cleanup:
    mf_arena_release(ctx->arena, mark);
    return st;
}

mf_status mf_triangle_attention_starting_node_forward(mf_ctx *ctx, mf_tensor *out, bool accumulate,
                                                      mf_triangle_attention_saved *saved,
                                                      const mf_tensor *z,
                                                      const mf_tensor *pair_mask,
                                                      const mf_triangle_attention_params *p,
                                                      const mf_triangle_attention_dims *d)
{
    return tri_forward(ctx, false, out, accumulate, saved, z, pair_mask, p, d);
}

mf_status mf_triangle_attention_ending_node_forward(mf_ctx *ctx, mf_tensor *out, bool accumulate,
                                                    mf_triangle_attention_saved *saved,
                                                    const mf_tensor *z, const mf_tensor *pair_mask,
                                                    const mf_triangle_attention_params *p,
                                                    const mf_triangle_attention_dims *d)
{
    return tri_forward(ctx, true, out, accumulate, saved, z, pair_mask, p, d);
}

mf_status mf_triangle_attention_starting_node_backward(
    mf_ctx *ctx, mf_tensor *dz, mf_triangle_attention_params *dp, const mf_tensor *dout,
    const mf_triangle_attention_saved *saved, const mf_tensor *z, const mf_tensor *pair_mask,
    const mf_triangle_attention_params *p, const mf_triangle_attention_dims *d)
{
    return tri_backward(ctx, false, dz, dp, dout, saved, z, pair_mask, p, d);
}

mf_status mf_triangle_attention_ending_node_backward(
    mf_ctx *ctx, mf_tensor *dz, mf_triangle_attention_params *dp, const mf_tensor *dout,
    const mf_triangle_attention_saved *saved, const mf_tensor *z, const mf_tensor *pair_mask,
    const mf_triangle_attention_params *p, const mf_triangle_attention_dims *d)
{
    return tri_backward(ctx, true, dz, dp, dout, saved, z, pair_mask, p, d);
}
