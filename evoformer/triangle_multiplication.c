/* Triangular multiplicative update, outgoing (Alg. 11) and incoming (Alg. 12); see
 * triangle_multiplication.h.
 *
 * With a_t[c] = a[:, :, c] and b_t[c] = b[:, :, c] as [N, N] matrices (channel-major):
 *   outgoing: x_t[c] = a_t[c] @ b_t[c]^T,   incoming: x_t[c] = b_t[c]^T @ a_t[c]. */

#include "evoformer/triangle_multiplication.h"

#include <string.h>

#include "core/ops.h"

#define NPARAMS ((int)(sizeof(mf_triangle_multiplication_params) / sizeof(mf_tensor)))
#define LN_EPS  MF_TRIANGLE_MULTIPLICATION_LN_EPS

int mf_triangle_multiplication_param_specs(const mf_triangle_multiplication_dims *d,
                                           mf_param_spec *out)
{
    const mf_param_spec specs[] = {
#define MF_PARAM MF_PARAM_SPEC
#include "evoformer/triangle_multiplication.def"
#undef MF_PARAM
    };
    const int n = (int)(sizeof specs / sizeof specs[0]);
    if (out)
        for (int i = 0; i < n; i++) out[i] = specs[i];
    return n;
}

static mf_status check_args(const mf_ctx *ctx, const mf_tensor *z, const mf_tensor *mask,
                            const mf_triangle_multiplication_params *p,
                            const mf_triangle_multiplication_dims *d)
{
    MF_REQUIRE(ctx && ctx->arena, "triangle_multiplication: ctx and arena required");
    MF_REQUIRE(p && d, "triangle_multiplication: parameters and dims required");
    MF_REQUIRE(d->c_z > 0 && d->c_hidden > 0,
               "triangle_multiplication: dims c_z %lld, c_hidden %lld must be > 0",
               (long long)d->c_z, (long long)d->c_hidden);
    MF_REQUIRE(z && z->data, "triangle_multiplication: input z missing");
    char b[96];
    MF_REQUIRE(z->ndim == 3 && z->shape[0] == z->shape[1] && z->shape[0] > 0 &&
                   z->shape[2] == d->c_z,
               "triangle_multiplication: z is %s, expected [N, N, c_z = %lld]",
               mf_tensor_describe(z, b, sizeof b), (long long)d->c_z);
    MF_REQUIRE(z->device == ctx->device,
               "triangle_multiplication: z is not on the context's device");
    MF_TRY(mf_check_tensor(mask, "triangle_multiplication pair_mask", z->dtype, 2));
    MF_REQUIRE(mask->shape[0] == z->shape[0] && mask->shape[1] == z->shape[1],
               "triangle_multiplication: pair_mask is %s, expected [N, N] of z",
               mf_tensor_describe(mask, b, sizeof b));
    mf_param_spec specs[NPARAMS];
    MF_REQUIRE(mf_triangle_multiplication_param_specs(d, specs) == NPARAMS,
               "triangle_multiplication: parameter table");
    const mf_tensor *t = MF_PARAMS_AS_ARRAY((mf_triangle_multiplication_params *)p);
    for (int i = 0; i < NPARAMS; i++) {
        MF_TRY(mf_check_tensor(&t[i], specs[i].name, z->dtype, specs[i].ndim));
        for (int k = 0; k < specs[i].ndim; k++)
            MF_REQUIRE(t[i].shape[k] == specs[i].shape[k],
                       "triangle_multiplication: parameter %s is %s", specs[i].name,
                       mf_tensor_describe(&t[i], b, sizeof b));
    }
    return MF_OK;
}

/* t's data under a new shape of the same element count (1 to 3 dims; unused dims 0). */
static mf_tensor view(const mf_tensor *t, int ndim, int64_t d0, int64_t d1, int64_t d2)
{
    return mf_tensor_4(t->data, t->dtype, t->device, ndim, d0, d1, d2, 0);
}

/* Rows [r0, r0 + n) of t viewed as a 2-D [rows, cols] matrix. */
static mf_tensor rows_view(const mf_tensor *t, int64_t r0, int64_t n, int64_t cols)
{
    const int64_t shape[2] = {n, cols};
    return mf_tensor_make((char *)t->data + (size_t)(r0 * cols) * mf_dtype_size(t->dtype), t->dtype,
                          t->device, 2, shape);
}

static mf_tensor *present(mf_tensor *t)
{
    return t && t->data ? t : NULL;
}

static int64_t chunk_of(const mf_ctx *ctx, int64_t n)
{
    int64_t c = ctx->policy.chunk_size;
    return c > 0 && c < n ? c : n;
}

/* The policy's storage precision; f64 runs (the gradient checks' oracle) keep f64 (ops.h). */
static mf_dtype storage_dtype(const mf_ctx *ctx, mf_dtype compute)
{
    return ctx->policy.storage == MF_BF16 && compute != MF_F64 ? MF_BF16 : compute;
}

/* The saved tensor itself when it has the compute dtype, else a converted copy in scratch. */
static mf_status as_dtype(mf_ctx *ctx, mf_tensor *out, const mf_tensor *saved, mf_dtype dt,
                          const char *label)
{
    if (saved->dtype == dt) {
        *out = *saved;
        return MF_OK;
    }
    MF_TRY(mf_arena_tensor(ctx->arena, out, dt, saved->ndim, saved->shape, label));
    return mf_convert(ctx, out, saved);
}

/* Alg. 11/12 lines 2-3 for one side, row chunk by row chunk:
 * proj_t [c, N, N] = pair_mask * (LN(z) @ w + bias) * sigmoid(LN(z) @ gate_w + gate_b),
 * channel-major, by way of the row-major stage [N^2, c]. */
static mf_status project_side(mf_ctx *ctx, mf_tensor *proj_t, mf_tensor *stage, const mf_tensor *z,
                              const mf_tensor *mask, const mf_tensor *w, const mf_tensor *bias,
                              const mf_tensor *gate_w, const mf_tensor *gate_b,
                              const mf_triangle_multiplication_params *p,
                              const mf_triangle_multiplication_dims *d)
{
    const int64_t N = z->shape[0], NN = N * N, Cz = d->c_z, Ch = d->c_hidden;
    const int64_t chunk = chunk_of(ctx, N), cr = chunk * N;
    const mf_dtype dt = z->dtype;
    mf_arena *a = ctx->arena;
    mf_arena_mark_t mark = mf_arena_mark(a);
    mf_status st = MF_OK;
    mf_tensor zn, proj, gate;
    MF_TRY_GOTO(mf_arena_tensor(a, &zn, dt, 2, (const int64_t[]){cr, Cz}, "triangle_mult.ln"));
    MF_TRY_GOTO(mf_arena_tensor(a, &proj, dt, 2, (const int64_t[]){cr, Ch}, "triangle_mult.proj"));
    MF_TRY_GOTO(mf_arena_tensor(a, &gate, dt, 2, (const int64_t[]){cr, Ch}, "triangle_mult.gate"));
    for (int64_t i0 = 0; i0 < N; i0 += chunk) {
        const int64_t rows = (i0 + chunk < N ? chunk : N - i0) * N;
        mf_tensor zs = rows_view(z, i0 * N, rows, Cz), ns = rows_view(&zn, 0, rows, Cz);
        mf_tensor ps = rows_view(&proj, 0, rows, Ch), gs = rows_view(&gate, 0, rows, Ch);
        mf_tensor out = rows_view(stage, i0 * N, rows, Ch);
        MF_TRY_GOTO(mf_layer_norm_forward(ctx, &ns, NULL, NULL, &zs, &p->layer_norm_input_scale,
                                          &p->layer_norm_input_offset, LN_EPS));
        MF_TRY_GOTO(mf_linear_forward(ctx, &ps, &ns, w, bias, false));
        MF_TRY_GOTO(mf_linear_forward(ctx, &gs, &ns, gate_w, gate_b, false));
        MF_TRY_GOTO(mf_activation_forward(ctx, MF_ACT_SIGMOID, &gs, &gs));
        MF_TRY_GOTO(mf_mul(ctx, &out, &ps, &gs));
    }
    mf_tensor s3 = view(stage, 3, NN, Ch, 1), t3 = view(proj_t, 3, Ch, NN, 1);
    mf_tensor t2 = view(proj_t, 2, Ch, NN, 0), m1 = view(mask, 1, NN, 0, 0);
    MF_TRY_GOTO(mf_transpose01(ctx, &t3, &s3, false));
    /* Channel-major, the pair mask broadcasts over the leading channel dim. */
    MF_TRY_GOTO(mf_mul(ctx, &t2, &t2, &m1));
cleanup:
    mf_arena_release(a, mark);
    return st;
}

/* Alg. 11/12 line 4 (the sum over k), one product per channel. */
static mf_status triangle_product(mf_ctx *ctx, mf_tensor *x_t, const mf_tensor *a_t,
                                  const mf_tensor *b_t, bool outgoing)
{
    if (outgoing) return mf_matmul(ctx, x_t, a_t, false, b_t, true, 1.0f, 0.0f);
    return mf_matmul(ctx, x_t, b_t, true, a_t, false, 1.0f, 0.0f);
}

/* Line 4's layer norm, the output projection and the gate of z', row chunk by row chunk. */
static mf_status output_stage(mf_ctx *ctx, mf_tensor *out, bool accumulate, const mf_tensor *x,
                              const mf_tensor *z, const mf_triangle_multiplication_params *p,
                              const mf_triangle_multiplication_dims *d)
{
    const int64_t N = z->shape[0], Cz = d->c_z, Ch = d->c_hidden;
    const int64_t chunk = chunk_of(ctx, N), cr = chunk * N;
    const mf_dtype dt = z->dtype;
    mf_arena *a = ctx->arena;
    mf_arena_mark_t mark = mf_arena_mark(a);
    mf_status st = MF_OK;
    mf_tensor zn, xn, y, g;
    MF_TRY_GOTO(mf_arena_tensor(a, &zn, dt, 2, (const int64_t[]){cr, Cz}, "triangle_mult.ln"));
    MF_TRY_GOTO(mf_arena_tensor(a, &xn, dt, 2, (const int64_t[]){cr, Ch}, "triangle_mult.center"));
    MF_TRY_GOTO(mf_arena_tensor(a, &y, dt, 2, (const int64_t[]){cr, Cz}, "triangle_mult.y"));
    MF_TRY_GOTO(mf_arena_tensor(a, &g, dt, 2, (const int64_t[]){cr, Cz}, "triangle_mult.gate"));
    for (int64_t i0 = 0; i0 < N; i0 += chunk) {
        const int64_t rows = (i0 + chunk < N ? chunk : N - i0) * N;
        mf_tensor zs = rows_view(z, i0 * N, rows, Cz), ns = rows_view(&zn, 0, rows, Cz);
        mf_tensor xs = rows_view(x, i0 * N, rows, Ch), xns = rows_view(&xn, 0, rows, Ch);
        mf_tensor ys = rows_view(&y, 0, rows, Cz), gs = rows_view(&g, 0, rows, Cz);
        mf_tensor os = rows_view(out, i0 * N, rows, Cz);
        MF_TRY_GOTO(mf_layer_norm_forward(ctx, &ns, NULL, NULL, &zs, &p->layer_norm_input_scale,
                                          &p->layer_norm_input_offset, LN_EPS));
        MF_TRY_GOTO(mf_layer_norm_forward(ctx, &xns, NULL, NULL, &xs, &p->center_layer_norm_scale,
                                          &p->center_layer_norm_offset, LN_EPS));
        MF_TRY_GOTO(mf_linear_forward(ctx, &ys, &xns, &p->output_projection_weights,
                                      &p->output_projection_bias, false));
        MF_TRY_GOTO(mf_linear_forward(ctx, &gs, &ns, &p->gating_linear_weights,
                                      &p->gating_linear_bias, false));
        MF_TRY_GOTO(mf_activation_forward(ctx, MF_ACT_SIGMOID, &gs, &gs));
        if (accumulate) {
            MF_TRY_GOTO(mf_mul(ctx, &ys, &ys, &gs));
            MF_TRY_GOTO(mf_add(ctx, &os, &os, &ys));
        } else {
            MF_TRY_GOTO(mf_mul(ctx, &os, &ys, &gs));
        }
    }
cleanup:
    mf_arena_release(a, mark);
    return st;
}

/* Channels per block of the blocked inference product (0: not blocked): with chunking on, at
 * inference on the CPU, min(chunk, c_hidden) when that splits the channels. */
static int64_t channel_block(const mf_ctx *ctx, const mf_tensor *z, bool saving, int64_t Ch)
{
    const int64_t c = ctx->policy.chunk_size;
    if (saving || c <= 0 || c >= Ch || ctx->device != MF_DEV_CPU || z->dtype != MF_F32) return 0;
    return c;
}

/* Columns [c0, c0 + n) of a row-major [rows, cols] f32 matrix into dst [rows, n]. */
static void copy_columns(float *dst, const float *src, int64_t rows, int64_t cols, int64_t c0,
                         int64_t n)
{
    for (int64_t r = 0; r < rows; r++) memcpy(dst + r * n, src + r * cols + c0, sizeof(float) * n);
}

/* x [NN, Ch] columns [c0, c0 + n) = xt [n, NN] transposed. */
static void scatter_block(float *x, const float *xt, int64_t NN, int64_t Ch, int64_t c0, int64_t n)
{
#pragma omp parallel for schedule(static) if (NN * n > 65536)
    for (int64_t r = 0; r < NN; r++)
        for (int64_t c = 0; c < n; c++) x[r * Ch + c0 + c] = xt[c * NN + r];
}

/* One side's projection of channels [c0, c0 + n): the weight columns copied into w_blk. */
static mf_status project_block(mf_ctx *ctx, mf_tensor *proj_t, mf_tensor *stage, mf_tensor *w_blk,
                               mf_tensor *g_blk, const mf_tensor *z, const mf_tensor *mask,
                               const mf_tensor *w, const mf_tensor *bias, const mf_tensor *gate_w,
                               const mf_tensor *gate_b, int64_t c0, int64_t n,
                               const mf_triangle_multiplication_params *p,
                               const mf_triangle_multiplication_dims *d)
{
    const int64_t Cz = d->c_z, Ch = d->c_hidden;
    mf_tensor wb = view(w_blk, 2, Cz, n, 0), gb = view(g_blk, 2, Cz, n, 0);
    copy_columns(wb.data, w->data, Cz, Ch, c0, n);
    copy_columns(gb.data, gate_w->data, Cz, Ch, c0, n);
    mf_tensor bb = mf_tensor_make((float *)bias->data + c0, MF_F32, bias->device, 1, &n);
    mf_tensor gbb = mf_tensor_make((float *)gate_b->data + c0, MF_F32, gate_b->device, 1, &n);
    mf_triangle_multiplication_dims dn = *d;
    dn.c_hidden = n;
    return project_side(ctx, proj_t, stage, z, mask, &wb, &bb, &gb, &gbb, p, &dn);
}

/* Inference with chunking: the projections and the product one block of cb channels at a time
 * (each channel's arithmetic as in the whole product), so that x [N, N, c] and one block's
 * operands are held instead of three [c, N, N] buffers: (1 + 3 cb / c) pair-sized buffers. */
static mf_status forward_blocked(mf_ctx *ctx, mf_tensor *out, bool accumulate, const mf_tensor *z,
                                 const mf_tensor *pair_mask,
                                 const mf_triangle_multiplication_params *p,
                                 const mf_triangle_multiplication_dims *d, int64_t cb)
{
    const int64_t N = z->shape[0], NN = N * N, Cz = d->c_z, Ch = d->c_hidden;
    mf_arena *a = ctx->arena;
    const mf_arena_mark_t start = mf_arena_mark(a);
    mf_status st = MF_OK;
    mf_tensor x, a_t, b_t, stage, w_blk, g_blk;
    MF_TRY_GOTO(mf_arena_tensor(a, &x, MF_F32, 2, (const int64_t[]){NN, Ch}, "triangle_mult.x"));
    const mf_arena_mark_t blocks = mf_arena_mark(a);
    MF_TRY_GOTO(
        mf_arena_tensor(a, &a_t, MF_F32, 3, (const int64_t[]){cb, N, N}, "triangle_mult.a_t"));
    MF_TRY_GOTO(
        mf_arena_tensor(a, &b_t, MF_F32, 3, (const int64_t[]){cb, N, N}, "triangle_mult.b_t"));
    MF_TRY_GOTO(
        mf_arena_tensor(a, &stage, MF_F32, 2, (const int64_t[]){NN, cb}, "triangle_mult.stage"));
    MF_TRY_GOTO(
        mf_arena_tensor(a, &w_blk, MF_F32, 2, (const int64_t[]){Cz, cb}, "triangle_mult.w_block"));
    MF_TRY_GOTO(
        mf_arena_tensor(a, &g_blk, MF_F32, 2, (const int64_t[]){Cz, cb}, "triangle_mult.w_block"));
    for (int64_t c0 = 0; c0 < Ch; c0 += cb) {
        const int64_t n = Ch - c0 < cb ? Ch - c0 : cb;
        mf_tensor an = view(&a_t, 3, n, N, N), bn = view(&b_t, 3, n, N, N);
        mf_tensor sn = view(&stage, 2, NN, n, 0);
        MF_TRY_GOTO(project_block(ctx, &an, &sn, &w_blk, &g_blk, z, pair_mask,
                                  &p->left_projection_weights, &p->left_projection_bias,
                                  &p->left_gate_weights, &p->left_gate_bias, c0, n, p, d));
        MF_TRY_GOTO(project_block(ctx, &bn, &sn, &w_blk, &g_blk, z, pair_mask,
                                  &p->right_projection_weights, &p->right_projection_bias,
                                  &p->right_gate_weights, &p->right_gate_bias, c0, n, p, d));
        mf_tensor xt = view(&stage, 3, n, N, N);
        MF_TRY_GOTO(triangle_product(ctx, &xt, &an, &bn, d->outgoing));
        scatter_block(x.data, xt.data, NN, Ch, c0, n);
    }
    mf_arena_release(a, blocks);
    {
        mf_tensor x3 = view(&x, 3, N, N, Ch);
        MF_TRY_GOTO(output_stage(ctx, out, accumulate, &x3, z, p, d));
    }
cleanup:
    mf_arena_release(a, start);
    return st;
}

mf_status mf_triangle_multiplication_forward(mf_ctx *ctx, mf_tensor *out, bool accumulate,
                                             mf_triangle_multiplication_saved *saved,
                                             const mf_tensor *z, const mf_tensor *pair_mask,
                                             const mf_triangle_multiplication_params *p,
                                             const mf_triangle_multiplication_dims *d)
{
    MF_TRY(check_args(ctx, z, pair_mask, p, d));
    MF_TRY(mf_check_tensor(out, "triangle_multiplication out", z->dtype, 3));
    MF_TRY(mf_check_same_shape(out, "triangle_multiplication out", z, "triangle_multiplication z"));
    const mf_dtype dt = z->dtype, sdt = storage_dtype(ctx, dt);
    const int64_t N = z->shape[0], NN = N * N, Ch = d->c_hidden;
    const bool direct = saved && sdt == dt;
    const int64_t cb = channel_block(ctx, z, saved != NULL, Ch);
    if (cb) return forward_blocked(ctx, out, accumulate, z, pair_mask, p, d, cb);
    mf_arena *a = ctx->arena;
    const mf_arena_mark_t start = mf_arena_mark(a);
    mf_status st = MF_OK;
    mf_tensor keep_a = {0}, keep_b = {0}, keep_x = {0}, a_t, b_t, stage;
    if (saved) {
        MF_TRY_GOTO(mf_arena_tensor(a, &keep_a, sdt, 3, (const int64_t[]){Ch, N, N},
                                    "triangle_mult.saved.a_t"));
        MF_TRY_GOTO(mf_arena_tensor(a, &keep_b, sdt, 3, (const int64_t[]){Ch, N, N},
                                    "triangle_mult.saved.b_t"));
        MF_TRY_GOTO(mf_arena_tensor(a, &keep_x, sdt, 3, (const int64_t[]){N, N, Ch},
                                    "triangle_mult.saved.x"));
    }
    const mf_arena_mark_t scratch = mf_arena_mark(a);
    if (direct) {
        a_t = keep_a, b_t = keep_b;
    } else {
        MF_TRY_GOTO(
            mf_arena_tensor(a, &a_t, dt, 3, (const int64_t[]){Ch, N, N}, "triangle_mult.a_t"));
        MF_TRY_GOTO(
            mf_arena_tensor(a, &b_t, dt, 3, (const int64_t[]){Ch, N, N}, "triangle_mult.b_t"));
    }
    MF_TRY_GOTO(
        mf_arena_tensor(a, &stage, dt, 2, (const int64_t[]){NN, Ch}, "triangle_mult.stage"));
    MF_TRY_GOTO(project_side(ctx, &a_t, &stage, z, pair_mask, &p->left_projection_weights,
                             &p->left_projection_bias, &p->left_gate_weights, &p->left_gate_bias, p,
                             d));
    MF_TRY_GOTO(project_side(ctx, &b_t, &stage, z, pair_mask, &p->right_projection_weights,
                             &p->right_projection_bias, &p->right_gate_weights, &p->right_gate_bias,
                             p, d));
    mf_tensor x_t = view(&stage, 3, Ch, N, N);
    MF_TRY_GOTO(triangle_product(ctx, &x_t, &a_t, &b_t, d->outgoing));
    if (saved && !direct) {
        MF_TRY_GOTO(mf_convert(ctx, &keep_a, &a_t));
        MF_TRY_GOTO(mf_convert(ctx, &keep_b, &b_t));
    }
    /* x row-major for the row-wise layer norm: into the saved tensor, or into a_t's buffer,
     * free once the product is done. */
    mf_tensor x = direct ? keep_x : view(&a_t, 3, N, N, Ch);
    mf_tensor x3 = view(&x, 3, NN, Ch, 1), xt3 = view(&stage, 3, Ch, NN, 1);
    MF_TRY_GOTO(mf_transpose01(ctx, &x3, &xt3, false));
    if (saved && !direct) MF_TRY_GOTO(mf_convert(ctx, &keep_x, &x));
    MF_TRY_GOTO(output_stage(ctx, out, accumulate, &x, z, p, d));
    mf_arena_release(a, scratch);
    if (saved) *saved = (mf_triangle_multiplication_saved){keep_a, keep_b, keep_x};
    return MF_OK;
cleanup:
    mf_arena_release(a, start);
    return st;
}

typedef struct {
    mf_tensor *d_w, *d_b, *d_gate_w, *d_gate_b;
} side_grads;

/* Lines 2-3 backward for one side and one row chunk: d_proj [rows, c] (row-major, already
 * masked) into dzn [rows, c_z] and the side's weight gradients; the projection and gate are
 * recomputed from zn. */
static mf_status project_side_backward(mf_ctx *ctx, mf_tensor *dzn, side_grads g,
                                       const mf_tensor *d_proj, const mf_tensor *zn,
                                       const mf_tensor *w, const mf_tensor *bias,
                                       const mf_tensor *gate_w, const mf_tensor *gate_b)
{
    const int64_t rows = zn->shape[0], Ch = w->shape[1];
    const mf_dtype dt = zn->dtype;
    mf_arena *a = ctx->arena;
    mf_arena_mark_t mark = mf_arena_mark(a);
    mf_status st = MF_OK;
    mf_tensor proj, gate, sig, dp, ds, dg;
    const int64_t shape[2] = {rows, Ch};
    MF_TRY_GOTO(mf_arena_tensor(a, &proj, dt, 2, shape, "triangle_mult.proj"));
    MF_TRY_GOTO(mf_arena_tensor(a, &gate, dt, 2, shape, "triangle_mult.gate"));
    MF_TRY_GOTO(mf_arena_tensor(a, &sig, dt, 2, shape, "triangle_mult.gate"));
    MF_TRY_GOTO(mf_arena_zeros(a, &dp, dt, 2, shape, "triangle_mult.dproj"));
    MF_TRY_GOTO(mf_arena_zeros(a, &ds, dt, 2, shape, "triangle_mult.dgate"));
    MF_TRY_GOTO(mf_arena_zeros(a, &dg, dt, 2, shape, "triangle_mult.dgate"));
    MF_TRY_GOTO(mf_linear_forward(ctx, &proj, zn, w, bias, false));
    MF_TRY_GOTO(mf_linear_forward(ctx, &gate, zn, gate_w, gate_b, false));
    MF_TRY_GOTO(mf_activation_forward(ctx, MF_ACT_SIGMOID, &sig, &gate));
    MF_TRY_GOTO(mf_mul_backward(ctx, &dp, &ds, d_proj, &proj, &sig));
    MF_TRY_GOTO(mf_activation_backward(ctx, MF_ACT_SIGMOID, &dg, &ds, &gate));
    MF_TRY_GOTO(mf_linear_backward(ctx, dzn, g.d_w, g.d_b, &dp, zn, w));
    MF_TRY_GOTO(mf_linear_backward(ctx, dzn, g.d_gate_w, g.d_gate_b, &dg, zn, gate_w));
cleanup:
    mf_arena_release(a, mark);
    return st;
}

mf_status mf_triangle_multiplication_backward(
    mf_ctx *ctx, mf_tensor *dz, mf_triangle_multiplication_params *dp, const mf_tensor *dout,
    const mf_triangle_multiplication_saved *saved, const mf_tensor *z, const mf_tensor *pair_mask,
    const mf_triangle_multiplication_params *p, const mf_triangle_multiplication_dims *d)
{
    MF_TRY(check_args(ctx, z, pair_mask, p, d));
    const mf_dtype dt = z->dtype;
    const int64_t N = z->shape[0], NN = N * N, Cz = d->c_z, Ch = d->c_hidden;
    MF_REQUIRE(saved && saved->a_t.data && saved->b_t.data && saved->x.data,
               "triangle_multiplication backward: saved activations required");
    MF_REQUIRE(mf_tensor_numel(&saved->a_t) == Ch * NN && mf_tensor_numel(&saved->b_t) == Ch * NN &&
                   mf_tensor_numel(&saved->x) == Ch * NN,
               "triangle_multiplication backward: saved activations do not match z");
    MF_TRY(mf_check_tensor(dout, "triangle_multiplication dout", dt, 3));
    MF_TRY(
        mf_check_same_shape(dout, "triangle_multiplication dout", z, "triangle_multiplication z"));
    dz = present(dz);
    if (dz) {
        MF_TRY(mf_check_tensor(dz, "triangle_multiplication dz", dt, 3));
        MF_TRY(
            mf_check_same_shape(dz, "triangle_multiplication dz", z, "triangle_multiplication z"));
    }
#define GRAD(field) (dp ? present(&dp->field) : NULL)
    mf_tensor *d_ln_scale = GRAD(layer_norm_input_scale),
              *d_ln_offset = GRAD(layer_norm_input_offset);
    mf_tensor *d_c_scale = GRAD(center_layer_norm_scale),
              *d_c_offset = GRAD(center_layer_norm_offset);
    mf_tensor *d_wo = GRAD(output_projection_weights), *d_bo = GRAD(output_projection_bias);
    mf_tensor *d_wg = GRAD(gating_linear_weights), *d_bg = GRAD(gating_linear_bias);
    const side_grads left = {GRAD(left_projection_weights), GRAD(left_projection_bias),
                             GRAD(left_gate_weights), GRAD(left_gate_bias)};
    const side_grads right = {GRAD(right_projection_weights), GRAD(right_projection_bias),
                              GRAD(right_gate_weights), GRAD(right_gate_bias)};
#undef GRAD
    const int64_t chunk = chunk_of(ctx, N), cr = chunk * N;
    mf_arena *a = ctx->arena;
    const mf_arena_mark_t start = mf_arena_mark(a);
    mf_status st = MF_OK;
    mf_tensor a_t, b_t, buf1, buf2, buf3, zn, zmean, zrstd, xc = {0}, xn, xmean, xrstd, y, gz, g,
                                                            dy, dg, dgz, dzn, dxn;
    MF_TRY_GOTO(as_dtype(ctx, &a_t, &saved->a_t, dt, "triangle_mult.a_t"));
    MF_TRY_GOTO(as_dtype(ctx, &b_t, &saved->b_t, dt, "triangle_mult.b_t"));
    a_t = view(&a_t, 3, Ch, N, N), b_t = view(&b_t, 3, Ch, N, N);
    MF_TRY_GOTO(mf_arena_zeros(a, &buf1, dt, 2, (const int64_t[]){NN, Ch}, "triangle_mult.dx"));
    MF_TRY_GOTO(mf_arena_tensor(a, &buf2, dt, 2, (const int64_t[]){NN, Ch}, "triangle_mult.dx_t"));
    MF_TRY_GOTO(mf_arena_zeros(a, &buf3, dt, 2, (const int64_t[]){NN, Ch}, "triangle_mult.db_t"));
    MF_TRY_GOTO(mf_arena_tensor(a, &zn, dt, 2, (const int64_t[]){cr, Cz}, "triangle_mult.ln"));
    MF_TRY_GOTO(mf_arena_tensor(a, &zmean, dt, 1, &cr, "triangle_mult.ln_stats"));
    MF_TRY_GOTO(mf_arena_tensor(a, &zrstd, dt, 1, &cr, "triangle_mult.ln_stats"));
    MF_TRY_GOTO(mf_arena_tensor(a, &dzn, dt, 2, (const int64_t[]){cr, Cz}, "triangle_mult.dln"));
    const mf_arena_mark_t phase_a = mf_arena_mark(a);
    if (saved->x.dtype != dt)
        MF_TRY_GOTO(mf_arena_tensor(a, &xc, dt, 2, (const int64_t[]){cr, Ch}, "triangle_mult.x"));
    MF_TRY_GOTO(mf_arena_tensor(a, &xn, dt, 2, (const int64_t[]){cr, Ch}, "triangle_mult.center"));
    MF_TRY_GOTO(mf_arena_tensor(a, &xmean, dt, 1, &cr, "triangle_mult.center_stats"));
    MF_TRY_GOTO(mf_arena_tensor(a, &xrstd, dt, 1, &cr, "triangle_mult.center_stats"));
    MF_TRY_GOTO(
        mf_arena_tensor(a, &dxn, dt, 2, (const int64_t[]){cr, Ch}, "triangle_mult.dcenter"));
    MF_TRY_GOTO(mf_arena_tensor(a, &y, dt, 2, (const int64_t[]){cr, Cz}, "triangle_mult.y"));
    MF_TRY_GOTO(mf_arena_tensor(a, &gz, dt, 2, (const int64_t[]){cr, Cz}, "triangle_mult.gate"));
    MF_TRY_GOTO(mf_arena_tensor(a, &g, dt, 2, (const int64_t[]){cr, Cz}, "triangle_mult.gate"));
    MF_TRY_GOTO(mf_arena_tensor(a, &dy, dt, 2, (const int64_t[]){cr, Cz}, "triangle_mult.dy"));
    MF_TRY_GOTO(mf_arena_tensor(a, &dg, dt, 2, (const int64_t[]){cr, Cz}, "triangle_mult.dgate"));
    MF_TRY_GOTO(mf_arena_tensor(a, &dgz, dt, 2, (const int64_t[]){cr, Cz}, "triangle_mult.dgate"));
    /* Phase A, line 4's output stage backward, row chunk by row chunk: d x into buf1. */
    for (int64_t i0 = 0; i0 < N; i0 += chunk) {
        const int64_t r0 = i0 * N, rows = (i0 + chunk < N ? chunk : N - i0) * N;
        mf_tensor zs = rows_view(z, r0, rows, Cz), ns = rows_view(&zn, 0, rows, Cz);
        mf_tensor zm = mf_tensor_slice0(&zmean, 0, rows), zr = mf_tensor_slice0(&zrstd, 0, rows);
        mf_tensor xs = rows_view(&saved->x, r0, rows, Ch), xns = rows_view(&xn, 0, rows, Ch);
        mf_tensor xm = mf_tensor_slice0(&xmean, 0, rows), xr = mf_tensor_slice0(&xrstd, 0, rows);
        mf_tensor ys = rows_view(&y, 0, rows, Cz), gzs = rows_view(&gz, 0, rows, Cz);
        mf_tensor gs = rows_view(&g, 0, rows, Cz), dys = rows_view(&dy, 0, rows, Cz);
        mf_tensor dgs = rows_view(&dg, 0, rows, Cz), dgzs = rows_view(&dgz, 0, rows, Cz);
        mf_tensor dns = rows_view(&dzn, 0, rows, Cz), dxns = rows_view(&dxn, 0, rows, Ch);
        mf_tensor gout = rows_view(dout, r0, rows, Cz), dxs = rows_view(&buf1, r0, rows, Ch);
        if (xc.data) {
            mf_tensor xcs = rows_view(&xc, 0, rows, Ch);
            MF_TRY_GOTO(mf_convert(ctx, &xcs, &xs));
            xs = xcs;
        }
        MF_TRY_GOTO(mf_layer_norm_forward(ctx, &ns, &zm, &zr, &zs, &p->layer_norm_input_scale,
                                          &p->layer_norm_input_offset, LN_EPS));
        MF_TRY_GOTO(mf_layer_norm_forward(ctx, &xns, &xm, &xr, &xs, &p->center_layer_norm_scale,
                                          &p->center_layer_norm_offset, LN_EPS));
        MF_TRY_GOTO(mf_linear_forward(ctx, &ys, &xns, &p->output_projection_weights,
                                      &p->output_projection_bias, false));
        MF_TRY_GOTO(mf_linear_forward(ctx, &gzs, &ns, &p->gating_linear_weights,
                                      &p->gating_linear_bias, false));
        MF_TRY_GOTO(mf_activation_forward(ctx, MF_ACT_SIGMOID, &gs, &gzs));
        MF_TRY_GOTO(mf_mul(ctx, &dys, &gout, &gs));
        MF_TRY_GOTO(mf_mul(ctx, &dgs, &gout, &ys));
        MF_TRY_GOTO(mf_fill(ctx, &dgzs, 0.0f));
        MF_TRY_GOTO(mf_activation_backward(ctx, MF_ACT_SIGMOID, &dgzs, &dgs, &gzs));
        MF_TRY_GOTO(mf_fill(ctx, &dns, 0.0f));
        MF_TRY_GOTO(
            mf_linear_backward(ctx, &dns, d_wg, d_bg, &dgzs, &ns, &p->gating_linear_weights));
        MF_TRY_GOTO(mf_fill(ctx, &dxns, 0.0f));
        MF_TRY_GOTO(
            mf_linear_backward(ctx, &dxns, d_wo, d_bo, &dys, &xns, &p->output_projection_weights));
        MF_TRY_GOTO(mf_layer_norm_backward(ctx, &dxs, d_c_scale, d_c_offset, &dxns, &xs, &xm, &xr,
                                           &p->center_layer_norm_scale));
        mf_tensor dzs = dz ? rows_view(dz, r0, rows, Cz) : (mf_tensor){0};
        MF_TRY_GOTO(mf_layer_norm_backward(ctx, dz ? &dzs : NULL, d_ln_scale, d_ln_offset, &dns,
                                           &zs, &zm, &zr, &p->layer_norm_input_scale));
    }
    mf_arena_release(a, phase_a);
    /* Phase B, line 4's product backward, channel-major; buffers reused:
     * buf1: d x -> d a_t -> d b;  buf2: d x_t -> d a;  buf3: d b_t. */
    {
        mf_tensor b1 = view(&buf1, 3, NN, Ch, 1), b2 = view(&buf2, 3, Ch, NN, 1);
        mf_tensor b3 = view(&buf3, 3, Ch, NN, 1);
        mf_tensor da_t = view(&buf1, 3, Ch, N, N), dx_t = view(&buf2, 3, Ch, N, N);
        mf_tensor db_t = view(&buf3, 3, Ch, N, N);
        mf_tensor da2 = view(&buf1, 2, Ch, NN, 0), db2 = view(&buf3, 2, Ch, NN, 0);
        mf_tensor m1 = view(pair_mask, 1, NN, 0, 0);
        mf_tensor a_rows = view(&buf2, 3, NN, Ch, 1), b_rows = view(&buf1, 3, NN, Ch, 1);
        MF_TRY_GOTO(mf_transpose01(ctx, &b2, &b1, false));
        MF_TRY_GOTO(mf_fill(ctx, &buf1, 0.0f));
        if (d->outgoing)
            MF_TRY_GOTO(
                mf_matmul_backward(ctx, &da_t, &db_t, &dx_t, &a_t, false, &b_t, true, 1.0f));
        else
            MF_TRY_GOTO(
                mf_matmul_backward(ctx, &db_t, &da_t, &dx_t, &b_t, true, &a_t, false, 1.0f));
        MF_TRY_GOTO(mf_mul(ctx, &da2, &da2, &m1));
        MF_TRY_GOTO(mf_mul(ctx, &db2, &db2, &m1));
        mf_tensor da_t1 = view(&buf1, 3, Ch, NN, 1);
        MF_TRY_GOTO(mf_transpose01(ctx, &a_rows, &da_t1, false));
        MF_TRY_GOTO(mf_transpose01(ctx, &b_rows, &b3, false));
    }
    /* Phase C, lines 1-3 backward, row chunk by row chunk: d a in buf2, d b in buf1. */
    for (int64_t i0 = 0; i0 < N; i0 += chunk) {
        const int64_t r0 = i0 * N, rows = (i0 + chunk < N ? chunk : N - i0) * N;
        mf_tensor zs = rows_view(z, r0, rows, Cz), ns = rows_view(&zn, 0, rows, Cz);
        mf_tensor zm = mf_tensor_slice0(&zmean, 0, rows), zr = mf_tensor_slice0(&zrstd, 0, rows);
        mf_tensor dns = rows_view(&dzn, 0, rows, Cz);
        mf_tensor das = rows_view(&buf2, r0, rows, Ch), dbs = rows_view(&buf1, r0, rows, Ch);
        MF_TRY_GOTO(mf_layer_norm_forward(ctx, &ns, &zm, &zr, &zs, &p->layer_norm_input_scale,
                                          &p->layer_norm_input_offset, LN_EPS));
        MF_TRY_GOTO(mf_fill(ctx, &dns, 0.0f));
        MF_TRY_GOTO(project_side_backward(ctx, &dns, left, &das, &ns, &p->left_projection_weights,
                                          &p->left_projection_bias, &p->left_gate_weights,
                                          &p->left_gate_bias));
        MF_TRY_GOTO(project_side_backward(ctx, &dns, right, &dbs, &ns, &p->right_projection_weights,
                                          &p->right_projection_bias, &p->right_gate_weights,
                                          &p->right_gate_bias));
        mf_tensor dzs = dz ? rows_view(dz, r0, rows, Cz) : (mf_tensor){0};
        MF_TRY_GOTO(mf_layer_norm_backward(ctx, dz ? &dzs : NULL, d_ln_scale, d_ln_offset, &dns,
                                           &zs, &zm, &zr, &p->layer_norm_input_scale));
    }
cleanup:
    mf_arena_release(a, start);
    return st;
}

/* ---- memory model: the allocations above, replayed on a simulated arena (memplan.h) ---------- */

static int64_t plan_chunk(const mf_memsim *s, int64_t n)
{
    int64_t c = s->policy.chunk_size;
    return c > 0 && c < n ? c : n;
}

static void plan_project_side(mf_memsim *s, int64_t N, const mf_triangle_multiplication_dims *d)
{
    const int64_t Cz = d->c_z, Ch = d->c_hidden, chunk = plan_chunk(s, N), cr = chunk * N;
    const mf_memsim_mark_t mark = mf_memsim_mark(s);
    mf_memsim_tensor(s, MF_MEM_WORK, MF_F32, cr * Cz); /* ln */
    mf_memsim_tensor(s, MF_MEM_WORK, MF_F32, cr * Ch); /* projection */
    mf_memsim_tensor(s, MF_MEM_WORK, MF_F32, cr * Ch); /* gate */
    for (int64_t i0 = 0; i0 < N; i0 = mf_plan_next_slice(i0, N, chunk)) {
        const int64_t rows = (i0 + chunk < N ? chunk : N - i0) * N;
        mf_plan_linear_forward(s, rows, Cz, Ch, true, false);
        mf_plan_linear_forward(s, rows, Cz, Ch, true, false);
    }
    mf_memsim_release(s, mark);
}

/* the per-channel product x_t [c, N, N] (outgoing a b^T, incoming b^T a) and its backward */
static void plan_product(mf_memsim *s, int64_t N, const mf_triangle_multiplication_dims *d,
                         bool backward)
{
    const int64_t Ch = d->c_hidden;
    const bool ta = !d->outgoing, tb = d->outgoing;
    if (backward)
        mf_plan_matmul_backward(s, Ch, Ch, Ch, N, N, N, ta, tb, true, true);
    else
        mf_plan_matmul(s, Ch, Ch, Ch, N, N, N, ta, tb, false);
}

static void plan_output_stage(mf_memsim *s, int64_t N, const mf_triangle_multiplication_dims *d)
{
    const int64_t Cz = d->c_z, Ch = d->c_hidden, chunk = plan_chunk(s, N), cr = chunk * N;
    const mf_memsim_mark_t mark = mf_memsim_mark(s);
    mf_memsim_tensor(s, MF_MEM_WORK, MF_F32, cr * Cz); /* ln */
    mf_memsim_tensor(s, MF_MEM_WORK, MF_F32, cr * Ch); /* center ln */
    mf_memsim_tensor(s, MF_MEM_WORK, MF_F32, cr * Cz); /* y */
    mf_memsim_tensor(s, MF_MEM_WORK, MF_F32, cr * Cz); /* gate */
    for (int64_t i0 = 0; i0 < N; i0 = mf_plan_next_slice(i0, N, chunk)) {
        const int64_t rows = (i0 + chunk < N ? chunk : N - i0) * N;
        mf_plan_linear_forward(s, rows, Ch, Cz, true, false);
        mf_plan_linear_forward(s, rows, Cz, Cz, true, false);
    }
    mf_memsim_release(s, mark);
}

/* forward_blocked */
static void plan_forward_blocked(mf_memsim *s, int64_t N, const mf_triangle_multiplication_dims *d,
                                 int64_t cb)
{
    const int64_t NN = N * N, Cz = d->c_z, Ch = d->c_hidden;
    const mf_memsim_mark_t start = mf_memsim_mark(s);
    mf_memsim_tensor(s, MF_MEM_WORK, MF_F32, NN * Ch); /* x */
    const mf_memsim_mark_t blocks = mf_memsim_mark(s);
    mf_memsim_tensor(s, MF_MEM_WORK, MF_F32, cb * NN); /* a_t */
    mf_memsim_tensor(s, MF_MEM_WORK, MF_F32, cb * NN); /* b_t */
    mf_memsim_tensor(s, MF_MEM_WORK, MF_F32, NN * cb); /* stage */
    mf_memsim_tensor(s, MF_MEM_WORK, MF_F32, Cz * cb); /* weight blocks */
    mf_memsim_tensor(s, MF_MEM_WORK, MF_F32, Cz * cb);
    for (int64_t c0 = 0; c0 < Ch; c0 = mf_plan_next_slice(c0, Ch, cb)) {
        mf_triangle_multiplication_dims dn = *d;
        dn.c_hidden = Ch - c0 < cb ? Ch - c0 : cb;
        plan_project_side(s, N, &dn);
        plan_project_side(s, N, &dn);
        plan_product(s, N, &dn, false);
    }
    mf_memsim_release(s, blocks);
    plan_output_stage(s, N, d);
    mf_memsim_release(s, start);
}

void mf_triangle_multiplication_plan_forward(mf_memsim *s, int64_t n_res,
                                             const mf_triangle_multiplication_dims *d, bool saving,
                                             bool accumulate)
{
    (void)accumulate; /* added elementwise */
    const int64_t N = n_res, NN = N * N, Ch = d->c_hidden;
    const int64_t c = s->policy.chunk_size;
    if (!saving && c > 0 && c < Ch && s->device == MF_DEV_CPU) {
        plan_forward_blocked(s, N, d, c);
        return;
    }
    const mf_dtype sdt = s->policy.storage == MF_BF16 ? MF_BF16 : MF_F32;
    const bool direct = saving && sdt == MF_F32;
    if (saving)
        for (int k = 0; k < 3; k++) mf_memsim_tensor(s, MF_MEM_SAVED, sdt, Ch * NN); /* a_t b_t x */
    const mf_memsim_mark_t scratch = mf_memsim_mark(s);
    if (!direct) {
        mf_memsim_tensor(s, MF_MEM_WORK, MF_F32, Ch * NN); /* a_t */
        mf_memsim_tensor(s, MF_MEM_WORK, MF_F32, Ch * NN); /* b_t */
    }
    mf_memsim_tensor(s, MF_MEM_WORK, MF_F32, NN * Ch); /* stage */
    plan_project_side(s, N, d);
    plan_project_side(s, N, d);
    plan_product(s, N, d, false);
    plan_output_stage(s, N, d);
    mf_memsim_release(s, scratch);
}

static void plan_project_side_backward(mf_memsim *s, int64_t rows,
                                       const mf_triangle_multiplication_dims *d, bool dparams)
{
    const int64_t Cz = d->c_z, Ch = d->c_hidden;
    const mf_memsim_mark_t mark = mf_memsim_mark(s);
    /* projection, gate, sigmoid, d projection, d sigmoid, d gate */
    for (int k = 0; k < 6; k++) mf_memsim_tensor(s, MF_MEM_WORK, MF_F32, rows * Ch);
    mf_plan_linear_forward(s, rows, Cz, Ch, true, false);
    mf_plan_linear_forward(s, rows, Cz, Ch, true, false);
    mf_plan_linear_backward(s, rows, Cz, Ch, true, dparams, dparams);
    mf_plan_linear_backward(s, rows, Cz, Ch, true, dparams, dparams);
    mf_memsim_release(s, mark);
}

void mf_triangle_multiplication_plan_backward(mf_memsim *s, int64_t n_res,
                                              const mf_triangle_multiplication_dims *d, bool dz,
                                              bool dparams)
{
    (void)dz; /* the layer norm's input gradient takes no workspace */
    const int64_t N = n_res, NN = N * N, Cz = d->c_z, Ch = d->c_hidden;
    const int64_t chunk = plan_chunk(s, N), cr = chunk * N;
    const bool bf16 = s->policy.storage == MF_BF16;
    const mf_memsim_mark_t start = mf_memsim_mark(s);
    if (bf16) { /* f32 copies of the saved a_t, b_t */
        mf_memsim_tensor(s, MF_MEM_WORK, MF_F32, Ch * NN);
        mf_memsim_tensor(s, MF_MEM_WORK, MF_F32, Ch * NN);
    }
    for (int k = 0; k < 3; k++) mf_memsim_tensor(s, MF_MEM_WORK, MF_F32, NN * Ch); /* buf1-3 */
    mf_memsim_tensor(s, MF_MEM_WORK, MF_F32, cr * Cz);                             /* ln */
    mf_memsim_tensor(s, MF_MEM_WORK, MF_F32, cr);                                  /* ln mean */
    mf_memsim_tensor(s, MF_MEM_WORK, MF_F32, cr);                                  /* ln rstd */
    mf_memsim_tensor(s, MF_MEM_WORK, MF_F32, cr * Cz);                             /* d ln */
    const mf_memsim_mark_t phase_a = mf_memsim_mark(s);
    if (bf16) mf_memsim_tensor(s, MF_MEM_WORK, MF_F32, cr * Ch); /* x chunk in f32 */
    mf_memsim_tensor(s, MF_MEM_WORK, MF_F32, cr * Ch);           /* center ln */
    mf_memsim_tensor(s, MF_MEM_WORK, MF_F32, cr);                /* its mean */
    mf_memsim_tensor(s, MF_MEM_WORK, MF_F32, cr);                /* its rstd */
    mf_memsim_tensor(s, MF_MEM_WORK, MF_F32, cr * Ch);           /* d center ln */
    /* y, gate logits, gate, dy, d gate, d gate logits */
    for (int k = 0; k < 6; k++) mf_memsim_tensor(s, MF_MEM_WORK, MF_F32, cr * Cz);
    for (int64_t i0 = 0; i0 < N; i0 = mf_plan_next_slice(i0, N, chunk)) {
        const int64_t rows = (i0 + chunk < N ? chunk : N - i0) * N;
        mf_plan_linear_forward(s, rows, Ch, Cz, true, false);
        mf_plan_linear_forward(s, rows, Cz, Cz, true, false);
        mf_plan_linear_backward(s, rows, Cz, Cz, true, dparams, dparams);
        mf_plan_linear_backward(s, rows, Ch, Cz, true, dparams, dparams);
    }
    mf_memsim_release(s, phase_a);
    plan_product(s, N, d, true);
    for (int64_t i0 = 0; i0 < N; i0 = mf_plan_next_slice(i0, N, chunk)) {
        const int64_t rows = (i0 + chunk < N ? chunk : N - i0) * N;
        plan_project_side_backward(s, rows, d, dparams);
        plan_project_side_backward(s, rows, d, dparams);
    }
    mf_memsim_release(s, start);
}
