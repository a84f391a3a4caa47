/* Outer product mean (Alg. 10), see outer_product_mean.h.
 *
 * Layout: for a chunk of output rows i the outer products come from one batched product,
 *   outer[i, (j, e), c] = sum_s right[s, (j, e)] * left_t[i, s, c]      (batch i, right shared),
 * i.e. AF2's outer[i, j, c, e] with the channel pair stored (e, c); the output projection then
 * reads output_w with its first two axes swapped ([e, c, c_z], a copy of c^2 c_z numbers). */
#include "evoformer/outer_product_mean.h"

#include "core/ops.h"

#define NPARAMS ((int)(sizeof(mf_outer_product_mean_params) / sizeof(mf_tensor)))

int mf_outer_product_mean_param_specs(const mf_outer_product_mean_dims *d, mf_param_spec *out)
{
    const mf_param_spec specs[] = {
#define MF_PARAM MF_PARAM_SPEC
#include "evoformer/outer_product_mean.def"
#undef MF_PARAM
    };
    const int n = (int)(sizeof specs / sizeof specs[0]);
    if (out)
        for (int i = 0; i < n; i++) out[i] = specs[i];
    return n;
}

static mf_status check_args(const mf_ctx *ctx, const mf_tensor *m, const mf_tensor *mask,
                            const mf_outer_product_mean_params *p,
                            const mf_outer_product_mean_dims *d)
{
    MF_REQUIRE(ctx && ctx->arena, "outer_product_mean: ctx and arena required");
    MF_REQUIRE(p && d, "outer_product_mean: parameters and dims required");
    MF_REQUIRE(d->c_m > 0 && d->c_hidden > 0 && d->c_z > 0,
               "outer_product_mean: dims c_m %lld, c_hidden %lld, c_z %lld must be > 0",
               (long long)d->c_m, (long long)d->c_hidden, (long long)d->c_z);
    MF_REQUIRE(m && m->data, "outer_product_mean: input m missing");
    char b[96];
    MF_REQUIRE(m->ndim == 3 && m->shape[2] == d->c_m && m->shape[0] > 0 && m->shape[1] > 0,
               "outer_product_mean: m is %s, expected [S, N, c_m = %lld]",
               mf_tensor_describe(m, b, sizeof b), (long long)d->c_m);
    MF_REQUIRE(m->device == ctx->device, "outer_product_mean: m is not on the context's device");
    MF_TRY(mf_check_tensor(mask, "outer_product_mean msa_mask", m->dtype, 2));
    MF_REQUIRE(mask->shape[0] == m->shape[0] && mask->shape[1] == m->shape[1],
               "outer_product_mean: msa_mask is %s, expected [S, N] of m",
               mf_tensor_describe(mask, b, sizeof b));
    mf_param_spec specs[NPARAMS];
    MF_REQUIRE(mf_outer_product_mean_param_specs(d, specs) == NPARAMS,
               "outer_product_mean: parameter table");
    const mf_tensor *t = MF_PARAMS_AS_ARRAY((mf_outer_product_mean_params *)p);
    for (int i = 0; i < NPARAMS; i++) {
        MF_TRY(mf_check_tensor(&t[i], specs[i].name, m->dtype, specs[i].ndim));
        for (int k = 0; k < specs[i].ndim; k++)
            MF_REQUIRE(t[i].shape[k] == specs[i].shape[k], "outer_product_mean: parameter %s is %s",
                       specs[i].name, mf_tensor_describe(&t[i], b, sizeof b));
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

/* The policy's storage precision; f64 runs (the gradient checks' oracle) keep f64 (ops.h). */
static mf_dtype storage_dtype(const mf_ctx *ctx, mf_dtype compute)
{
    return ctx->policy.storage == MF_BF16 && compute != MF_F64 ? MF_BF16 : compute;
}

static mf_tensor *present(mf_tensor *t)
{
    return t && t->data ? t : NULL;
}

/* out[r, c] = v[r] for out [R, C]: the elementwise ops broadcast over leading dims only, so a
 * per-row factor is spread along the rows of a [C, R] scratch and transposed. */
static mf_status expand_rows(mf_ctx *ctx, mf_tensor *out, const mf_tensor *v)
{
    const int64_t R = out->shape[0], C = out->shape[1];
    mf_arena_mark_t mark = mf_arena_mark(ctx->arena);
    mf_tensor tmp;
    mf_status st = MF_OK;
    MF_TRY_GOTO(mf_arena_tensor(ctx->arena, &tmp, out->dtype, 3, (const int64_t[]){C, R, 1},
                                "outer_product_mean.expand"));
    mf_tensor v1 = view(v, 1, R, 0, 0), o3 = view(out, 3, R, C, 1);
    MF_TRY_GOTO(mf_fill(ctx, &tmp, 0.0f));
    MF_TRY_GOTO(mf_add(ctx, &tmp, &tmp, &v1));
    MF_TRY_GOTO(mf_transpose01(ctx, &o3, &tmp, false));
cleanup:
    mf_arena_release(ctx->arena, mark);
    return st;
}

/* inv_norm [N * N] = 1 / (1e-3 + sum_s mask[s, i] mask[s, j]) (Alg. 10 line 4's mean, with AF2's
 * epsilon). ops.h has no division; the layer norm of the row (v, -v) with eps 0 has mean 0 and
 * rstd = 1 / sqrt(v^2) = 1 / v for v > 0, which is the reciprocal to within two roundings. */
static mf_status inverse_norm(mf_ctx *ctx, mf_tensor *inv_norm, const mf_tensor *mask)
{
    const int64_t S = mask->shape[0], N = mask->shape[1], NN = N * N;
    const mf_dtype dt = mask->dtype;
    mf_arena *a = ctx->arena;
    mf_arena_mark_t mark = mf_arena_mark(a);
    mf_status st = MF_OK;
    mf_tensor norm, eps, rows, ln, mean, ones, zeros;
    MF_TRY_GOTO(
        mf_arena_tensor(a, &norm, dt, 3, (const int64_t[]){2, NN, 1}, "outer_product_mean.norm"));
    MF_TRY_GOTO(mf_arena_tensor(a, &eps, dt, 1, (const int64_t[]){1}, "outer_product_mean.norm"));
    MF_TRY_GOTO(
        mf_arena_tensor(a, &rows, dt, 3, (const int64_t[]){NN, 2, 1}, "outer_product_mean.norm"));
    MF_TRY_GOTO(
        mf_arena_tensor(a, &ln, dt, 2, (const int64_t[]){NN, 2}, "outer_product_mean.norm"));
    MF_TRY_GOTO(mf_arena_tensor(a, &mean, dt, 1, &NN, "outer_product_mean.norm"));
    MF_TRY_GOTO(mf_arena_tensor(a, &ones, dt, 1, (const int64_t[]){2}, "outer_product_mean.norm"));
    MF_TRY_GOTO(mf_arena_tensor(a, &zeros, dt, 1, (const int64_t[]){2}, "outer_product_mean.norm"));
    mf_tensor m3 = view(mask, 3, 1, S, N);
    mf_tensor v = view(&norm, 3, 1, N, N); /* first half of norm: row v */
    mf_tensor v1 = view(&norm, 1, NN, 0, 0);
    mf_tensor neg = mf_tensor_4((char *)norm.data + (size_t)NN * mf_dtype_size(dt), dt, norm.device,
                                1, NN, 0, 0, 0);
    MF_TRY_GOTO(mf_matmul(ctx, &v, &m3, true, &m3, false, 1.0f, 0.0f));
    MF_TRY_GOTO(mf_fill(ctx, &eps, MF_OUTER_PRODUCT_MEAN_EPS));
    MF_TRY_GOTO(mf_add(ctx, &v1, &v1, &eps));
    MF_TRY_GOTO(mf_scale(ctx, &neg, &v1, -1.0f));
    MF_TRY_GOTO(mf_transpose01(ctx, &rows, &norm, false));
    MF_TRY_GOTO(mf_fill(ctx, &ones, 1.0f));
    MF_TRY_GOTO(mf_fill(ctx, &zeros, 0.0f));
    mf_tensor r2 = view(&rows, 2, NN, 2, 0), out1 = view(inv_norm, 1, NN, 0, 0);
    MF_TRY_GOTO(mf_layer_norm_forward(ctx, &ln, &mean, &out1, &r2, &ones, &zeros, 0.0f));
cleanup:
    mf_arena_release(a, mark);
    return st;
}

/* Alg. 10 lines 1-2: left_t [N, S, c] and right [S, N, c], the masked projections of
 * LayerNorm(m). */
static mf_status project(mf_ctx *ctx, mf_tensor *left_t, mf_tensor *right, const mf_tensor *m,
                         const mf_tensor *mask, const mf_outer_product_mean_params *p,
                         const mf_outer_product_mean_dims *d)
{
    const int64_t S = m->shape[0], N = m->shape[1], SN = S * N, Cm = d->c_m, Ch = d->c_hidden;
    const mf_dtype dt = m->dtype;
    mf_arena *a = ctx->arena;
    mf_arena_mark_t mark = mf_arena_mark(a);
    mf_status st = MF_OK;
    mf_tensor ln, mexp, lin;
    MF_TRY_GOTO(mf_arena_tensor(a, &ln, dt, 2, (const int64_t[]){SN, Cm}, "outer_product_mean.ln"));
    MF_TRY_GOTO(
        mf_arena_tensor(a, &mexp, dt, 2, (const int64_t[]){SN, Ch}, "outer_product_mean.mask"));
    MF_TRY_GOTO(
        mf_arena_tensor(a, &lin, dt, 2, (const int64_t[]){SN, Ch}, "outer_product_mean.proj"));
    mf_tensor m2 = view(m, 2, SN, Cm, 0), mask1 = view(mask, 1, SN, 0, 0);
    mf_tensor r2 = view(right, 2, SN, Ch, 0), lin3 = view(&lin, 3, S, N, Ch);
    MF_TRY_GOTO(mf_layer_norm_forward(ctx, &ln, NULL, NULL, &m2, &p->layer_norm_input_scale,
                                      &p->layer_norm_input_offset, MF_OUTER_PRODUCT_MEAN_LN_EPS));
    MF_TRY_GOTO(expand_rows(ctx, &mexp, &mask1));
    MF_TRY_GOTO(mf_linear_forward(ctx, &lin, &ln, &p->left_projection_weights,
                                  &p->left_projection_bias, false));
    MF_TRY_GOTO(mf_mul(ctx, &lin, &lin, &mexp));
    MF_TRY_GOTO(mf_transpose01(ctx, left_t, &lin3, false));
    MF_TRY_GOTO(mf_linear_forward(ctx, &r2, &ln, &p->right_projection_weights,
                                  &p->right_projection_bias, false));
    MF_TRY_GOTO(mf_mul(ctx, &r2, &r2, &mexp));
cleanup:
    mf_arena_release(a, mark);
    return st;
}

static int64_t chunk_of(const mf_ctx *ctx, int64_t n)
{
    int64_t c = ctx->policy.chunk_size;
    return c > 0 && c < n ? c : n;
}

mf_status mf_outer_product_mean_forward(mf_ctx *ctx, mf_tensor *out, bool accumulate,
                                        mf_outer_product_mean_saved *saved, const mf_tensor *m,
                                        const mf_tensor *msa_mask,
                                        const mf_outer_product_mean_params *p,
                                        const mf_outer_product_mean_dims *d)
{
    MF_TRY(check_args(ctx, m, msa_mask, p, d));
    const mf_dtype dt = m->dtype;
    const int64_t S = m->shape[0], N = m->shape[1], Ch = d->c_hidden, Cz = d->c_z;
    MF_TRY(mf_check_tensor(out, "outer_product_mean out", dt, 3));
    char b[96];
    MF_REQUIRE(out->shape[0] == N && out->shape[1] == N && out->shape[2] == Cz,
               "outer_product_mean: out is %s, expected [N, N, c_z] = [%lld, %lld, %lld]",
               mf_tensor_describe(out, b, sizeof b), (long long)N, (long long)N, (long long)Cz);
    const int64_t chunk = chunk_of(ctx, N);
    const mf_dtype sdt = storage_dtype(ctx, dt);
    const bool direct = saved && sdt == dt;
    mf_arena *a = ctx->arena;
    const mf_arena_mark_t start = mf_arena_mark(a);
    mf_status st = MF_OK;
    mf_tensor keep_l = {0}, keep_r = {0}, left_t, right, inv_norm, w_t, outer, y, rexp;
    if (saved) {
        MF_TRY_GOTO(mf_arena_tensor(a, &keep_l, sdt, 3, (const int64_t[]){N, S, Ch},
                                    "outer_product_mean.saved.left_t"));
        MF_TRY_GOTO(mf_arena_tensor(a, &keep_r, sdt, 3, (const int64_t[]){S, N, Ch},
                                    "outer_product_mean.saved.right"));
    }
    const mf_arena_mark_t scratch = mf_arena_mark(a);
    if (direct) {
        left_t = keep_l, right = keep_r;
    } else {
        MF_TRY_GOTO(mf_arena_tensor(a, &left_t, dt, 3, (const int64_t[]){N, S, Ch},
                                    "outer_product_mean.left_t"));
        MF_TRY_GOTO(mf_arena_tensor(a, &right, dt, 3, (const int64_t[]){S, N, Ch},
                                    "outer_product_mean.right"));
    }
    MF_TRY_GOTO(mf_arena_tensor(a, &inv_norm, dt, 1, (const int64_t[]){N * N},
                                "outer_product_mean.inv_norm"));
    MF_TRY_GOTO(mf_arena_tensor(a, &w_t, dt, 3, (const int64_t[]){Ch, Ch, Cz},
                                "outer_product_mean.output_w_t"));
    MF_TRY_GOTO(project(ctx, &left_t, &right, m, msa_mask, p, d));
    if (saved && !direct) {
        MF_TRY_GOTO(mf_convert(ctx, &keep_l, &left_t));
        MF_TRY_GOTO(mf_convert(ctx, &keep_r, &right));
    }
    MF_TRY_GOTO(inverse_norm(ctx, &inv_norm, msa_mask));
    MF_TRY_GOTO(mf_transpose01(ctx, &w_t, &p->output_w, false));
    MF_TRY_GOTO(mf_arena_tensor(a, &outer, dt, 3, (const int64_t[]){chunk, N * Ch, Ch},
                                "outer_product_mean.outer"));
    MF_TRY_GOTO(
        mf_arena_tensor(a, &y, dt, 2, (const int64_t[]){chunk * N, Cz}, "outer_product_mean.y"));
    MF_TRY_GOTO(mf_arena_tensor(a, &rexp, dt, 2, (const int64_t[]){chunk * N, Cz},
                                "outer_product_mean.inv_norm_rows"));
    const mf_tensor r3 = view(&right, 3, 1, S, N * Ch);
    for (int64_t i0 = 0; i0 < N; i0 += chunk) {
        const int64_t ci = i0 + chunk < N ? chunk : N - i0, rows = ci * N;
        mf_tensor lt = mf_tensor_slice0(&left_t, i0, ci);
        mf_tensor oc = view(&outer, 3, ci, N * Ch, Ch), o2 = view(&outer, 2, rows, Ch * Ch, 0);
        mf_tensor ys = view(&y, 2, rows, Cz, 0), rs = view(&rexp, 2, rows, Cz, 0);
        mf_tensor ns = mf_tensor_slice0(&inv_norm, i0 * N, rows);
        mf_tensor os = rows_view(out, i0 * N, rows, Cz);
        /* Alg. 10 line 3 and line 4: outer products summed over s, flattened, projected. */
        MF_TRY_GOTO(mf_matmul(ctx, &oc, &r3, true, &lt, false, 1.0f, 0.0f));
        MF_TRY_GOTO(mf_linear_forward(ctx, &ys, &o2, &w_t, &p->output_b, false));
        /* AF2 divides after the bias: (outer @ w + b) / (eps + norm). */
        MF_TRY_GOTO(expand_rows(ctx, &rs, &ns));
        if (accumulate) {
            MF_TRY_GOTO(mf_mul(ctx, &ys, &ys, &rs));
            MF_TRY_GOTO(mf_add(ctx, &os, &os, &ys));
        } else {
            MF_TRY_GOTO(mf_mul(ctx, &os, &ys, &rs));
        }
    }
    mf_arena_release(a, scratch);
    if (saved) *saved = (mf_outer_product_mean_saved){keep_l, keep_r};
    return MF_OK;
cleanup:
    mf_arena_release(a, start);
    return st;
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

mf_status mf_outer_product_mean_backward(mf_ctx *ctx, mf_tensor *dm,
                                         mf_outer_product_mean_params *dp, const mf_tensor *dout,
                                         const mf_outer_product_mean_saved *saved,
                                         const mf_tensor *m, const mf_tensor *msa_mask,
                                         const mf_outer_product_mean_params *p,
                                         const mf_outer_product_mean_dims *d)
{
    MF_TRY(check_args(ctx, m, msa_mask, p, d));
    const mf_dtype dt = m->dtype;
    const int64_t S = m->shape[0], N = m->shape[1], SN = S * N, Cm = d->c_m, Ch = d->c_hidden,
                  Cz = d->c_z;
    char b[96];
    MF_REQUIRE(saved && saved->left_t.data && saved->right.data,
               "outer_product_mean backward: saved activations required");
    MF_REQUIRE(mf_tensor_numel(&saved->left_t) == SN * Ch &&
                   mf_tensor_numel(&saved->right) == SN * Ch,
               "outer_product_mean backward: saved projections do not match m");
    MF_TRY(mf_check_tensor(dout, "outer_product_mean dout", dt, 3));
    MF_REQUIRE(dout->shape[0] == N && dout->shape[1] == N && dout->shape[2] == Cz,
               "outer_product_mean: dout is %s, expected [N, N, c_z] = [%lld, %lld, %lld]",
               mf_tensor_describe(dout, b, sizeof b), (long long)N, (long long)N, (long long)Cz);
    dm = present(dm);
    if (dm) {
        MF_TRY(mf_check_tensor(dm, "outer_product_mean dm", dt, 3));
        MF_TRY(mf_check_same_shape(dm, "outer_product_mean dm", m, "outer_product_mean m"));
    }
    mf_tensor *d_scale = dp ? present(&dp->layer_norm_input_scale) : NULL;
    mf_tensor *d_offset = dp ? present(&dp->layer_norm_input_offset) : NULL;
    mf_tensor *d_wl = dp ? present(&dp->left_projection_weights) : NULL;
    mf_tensor *d_bl = dp ? present(&dp->left_projection_bias) : NULL;
    mf_tensor *d_wr = dp ? present(&dp->right_projection_weights) : NULL;
    mf_tensor *d_br = dp ? present(&dp->right_projection_bias) : NULL;
    mf_tensor *d_w = dp ? present(&dp->output_w) : NULL;
    mf_tensor *d_b = dp ? present(&dp->output_b) : NULL;
    const int64_t chunk = chunk_of(ctx, N);
    mf_arena *a = ctx->arena;
    const mf_arena_mark_t start = mf_arena_mark(a);
    mf_status st = MF_OK;
    mf_tensor left_t, right, inv_norm, w_t, dw_t = {0}, d_left_t, d_right, outer, douter, dy, rexp;
    MF_TRY_GOTO(as_dtype(ctx, &left_t, &saved->left_t, dt, "outer_product_mean.left_t"));
    MF_TRY_GOTO(as_dtype(ctx, &right, &saved->right, dt, "outer_product_mean.right"));
    left_t = view(&left_t, 3, N, S, Ch);
    MF_TRY_GOTO(mf_arena_tensor(a, &inv_norm, dt, 1, (const int64_t[]){N * N},
                                "outer_product_mean.inv_norm"));
    MF_TRY_GOTO(mf_arena_tensor(a, &w_t, dt, 3, (const int64_t[]){Ch, Ch, Cz},
                                "outer_product_mean.output_w_t"));
    if (d_w)
        MF_TRY_GOTO(mf_arena_zeros(a, &dw_t, dt, 3, (const int64_t[]){Ch, Ch, Cz},
                                   "outer_product_mean.doutput_w_t"));
    MF_TRY_GOTO(mf_arena_zeros(a, &d_left_t, dt, 3, (const int64_t[]){N, S, Ch},
                               "outer_product_mean.dleft_t"));
    MF_TRY_GOTO(mf_arena_zeros(a, &d_right, dt, 3, (const int64_t[]){S, N, Ch},
                               "outer_product_mean.dright"));
    MF_TRY_GOTO(inverse_norm(ctx, &inv_norm, msa_mask));
    MF_TRY_GOTO(mf_transpose01(ctx, &w_t, &p->output_w, false));
    const mf_arena_mark_t loop = mf_arena_mark(a);
    MF_TRY_GOTO(mf_arena_tensor(a, &outer, dt, 3, (const int64_t[]){chunk, N * Ch, Ch},
                                "outer_product_mean.outer"));
    MF_TRY_GOTO(mf_arena_tensor(a, &douter, dt, 3, (const int64_t[]){chunk, N * Ch, Ch},
                                "outer_product_mean.douter"));
    MF_TRY_GOTO(
        mf_arena_tensor(a, &dy, dt, 2, (const int64_t[]){chunk * N, Cz}, "outer_product_mean.dy"));
    MF_TRY_GOTO(mf_arena_tensor(a, &rexp, dt, 2, (const int64_t[]){chunk * N, Cz},
                                "outer_product_mean.inv_norm_rows"));
    const mf_tensor r3 = view(&right, 3, 1, S, N * Ch);
    mf_tensor dr3 = view(&d_right, 3, 1, S, N * Ch);
    for (int64_t i0 = 0; i0 < N; i0 += chunk) {
        const int64_t ci = i0 + chunk < N ? chunk : N - i0, rows = ci * N;
        mf_tensor lt = mf_tensor_slice0(&left_t, i0, ci), dlt = mf_tensor_slice0(&d_left_t, i0, ci);
        mf_tensor oc = view(&outer, 3, ci, N * Ch, Ch), o2 = view(&outer, 2, rows, Ch * Ch, 0);
        mf_tensor doc = view(&douter, 3, ci, N * Ch, Ch), do2 = view(&douter, 2, rows, Ch * Ch, 0);
        mf_tensor dys = view(&dy, 2, rows, Cz, 0), rs = view(&rexp, 2, rows, Cz, 0);
        mf_tensor ns = mf_tensor_slice0(&inv_norm, i0 * N, rows);
        mf_tensor gs = rows_view(dout, i0 * N, rows, Cz);
        MF_TRY_GOTO(mf_matmul(ctx, &oc, &r3, true, &lt, false, 1.0f, 0.0f));
        MF_TRY_GOTO(expand_rows(ctx, &rs, &ns));
        MF_TRY_GOTO(mf_mul(ctx, &dys, &gs, &rs));
        MF_TRY_GOTO(mf_fill(ctx, &doc, 0.0f));
        MF_TRY_GOTO(mf_linear_backward(ctx, &do2, dw_t.data ? &dw_t : NULL, d_b, &dys, &o2, &w_t));
        MF_TRY_GOTO(mf_matmul_backward(ctx, &dr3, &dlt, &doc, &r3, true, &lt, false, 1.0f));
    }
    mf_arena_release(a, loop);
    if (d_w) MF_TRY_GOTO(mf_transpose01(ctx, d_w, &dw_t, true));
    if (!dm && !d_scale && !d_offset && !d_wl && !d_bl && !d_wr && !d_br) goto cleanup;
    /* Lines 1-2 backward: the masks, the projections and the layer norm (recomputed). */
    mf_tensor ln, mean, rstd, mexp, dleft, dln;
    MF_TRY_GOTO(mf_arena_tensor(a, &ln, dt, 2, (const int64_t[]){SN, Cm}, "outer_product_mean.ln"));
    MF_TRY_GOTO(mf_arena_tensor(a, &mean, dt, 1, &SN, "outer_product_mean.ln_mean"));
    MF_TRY_GOTO(mf_arena_tensor(a, &rstd, dt, 1, &SN, "outer_product_mean.ln_rstd"));
    MF_TRY_GOTO(
        mf_arena_tensor(a, &mexp, dt, 2, (const int64_t[]){SN, Ch}, "outer_product_mean.mask"));
    MF_TRY_GOTO(
        mf_arena_tensor(a, &dleft, dt, 3, (const int64_t[]){S, N, Ch}, "outer_product_mean.dleft"));
    MF_TRY_GOTO(
        mf_arena_zeros(a, &dln, dt, 2, (const int64_t[]){SN, Cm}, "outer_product_mean.dln"));
    mf_tensor m2 = view(m, 2, SN, Cm, 0), mask1 = view(msa_mask, 1, SN, 0, 0);
    mf_tensor dl2 = view(&dleft, 2, SN, Ch, 0), dr2 = view(&d_right, 2, SN, Ch, 0);
    MF_TRY_GOTO(mf_layer_norm_forward(ctx, &ln, &mean, &rstd, &m2, &p->layer_norm_input_scale,
                                      &p->layer_norm_input_offset, MF_OUTER_PRODUCT_MEAN_LN_EPS));
    MF_TRY_GOTO(expand_rows(ctx, &mexp, &mask1));
    MF_TRY_GOTO(mf_transpose01(ctx, &dleft, &d_left_t, false));
    MF_TRY_GOTO(mf_mul(ctx, &dl2, &dl2, &mexp));
    MF_TRY_GOTO(mf_mul(ctx, &dr2, &dr2, &mexp));
    MF_TRY_GOTO(mf_linear_backward(ctx, &dln, d_wl, d_bl, &dl2, &ln, &p->left_projection_weights));
    MF_TRY_GOTO(mf_linear_backward(ctx, &dln, d_wr, d_br, &dr2, &ln, &p->right_projection_weights));
    mf_tensor dm2 = dm ? view(dm, 2, SN, Cm, 0) : (mf_tensor){0};
    MF_TRY_GOTO(mf_layer_norm_backward(ctx, dm ? &dm2 : NULL, d_scale, d_offset, &dln, &m2, &mean,
                                       &rstd, &p->layer_norm_input_scale));
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

/* expand_rows: its [C, R] scratch, taken and given back around elementwise ops */
static void plan_expand_rows(mf_memsim *s, int64_t R, int64_t C)
{
    mf_memsim_transient(s, mf_mem_tensor_bytes(MF_F32, C * R));
}

static void plan_inverse_norm(mf_memsim *s, int64_t S, int64_t N)
{
    const int64_t NN = N * N;
    const mf_memsim_mark_t mark = mf_memsim_mark(s);
    const int64_t sizes[] = {2 * NN, 1, NN * 2, NN * 2, NN, 2, 2}; /* norm eps rows ln mean 1 0 */
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
        mf_memsim_tensor(s, MF_MEM_WORK, MF_F32, sizes[i]);
    mf_plan_matmul(s, 1, 1, 1, N, N, S, true, false, false);
    mf_memsim_release(s, mark);
}

static void plan_project(mf_memsim *s, int64_t S, int64_t N, const mf_outer_product_mean_dims *d)
{
    const int64_t SN = S * N, Cm = d->c_m, Ch = d->c_hidden;
    const mf_memsim_mark_t mark = mf_memsim_mark(s);
    mf_memsim_tensor(s, MF_MEM_WORK, MF_F32, SN * Cm); /* ln */
    mf_memsim_tensor(s, MF_MEM_WORK, MF_F32, SN * Ch); /* mask expanded */
    mf_memsim_tensor(s, MF_MEM_WORK, MF_F32, SN * Ch); /* left projection */
    plan_expand_rows(s, SN, Ch);
    mf_plan_linear_forward(s, SN, Cm, Ch, true, false);
    mf_plan_linear_forward(s, SN, Cm, Ch, true, false);
    mf_memsim_release(s, mark);
}

void mf_outer_product_mean_plan_forward(mf_memsim *s, int64_t n_seq, int64_t n_res,
                                        const mf_outer_product_mean_dims *d, bool saving,
                                        bool accumulate)
{
    (void)accumulate; /* the update is added elementwise: no product takes it */
    const int64_t S = n_seq, N = n_res, Ch = d->c_hidden, Cz = d->c_z, chunk = plan_chunk(s, N);
    const mf_dtype sdt = s->policy.storage == MF_BF16 ? MF_BF16 : MF_F32;
    const bool direct = saving && sdt == MF_F32;
    if (saving) {
        mf_memsim_tensor(s, MF_MEM_SAVED, sdt, N * S * Ch); /* left_t */
        mf_memsim_tensor(s, MF_MEM_SAVED, sdt, S * N * Ch); /* right */
    }
    const mf_memsim_mark_t scratch = mf_memsim_mark(s);
    if (!direct) {
        mf_memsim_tensor(s, MF_MEM_WORK, MF_F32, N * S * Ch);
        mf_memsim_tensor(s, MF_MEM_WORK, MF_F32, S * N * Ch);
    }
    mf_memsim_tensor(s, MF_MEM_WORK, MF_F32, N * N);        /* inv_norm */
    mf_memsim_tensor(s, MF_MEM_WORK, MF_F32, Ch * Ch * Cz); /* output_w transposed */
    plan_project(s, S, N, d);
    plan_inverse_norm(s, S, N);
    mf_memsim_tensor(s, MF_MEM_WORK, MF_F32, chunk * N * Ch * Ch); /* outer */
    mf_memsim_tensor(s, MF_MEM_WORK, MF_F32, chunk * N * Cz);      /* y */
    mf_memsim_tensor(s, MF_MEM_WORK, MF_F32, chunk * N * Cz);      /* inv_norm rows */
    for (int64_t i0 = 0; i0 < N; i0 = mf_plan_next_slice(i0, N, chunk)) {
        const int64_t ci = i0 + chunk < N ? chunk : N - i0, rows = ci * N;
        mf_plan_matmul(s, ci, 1, ci, N * Ch, Ch, S, true, false, false);
        mf_plan_linear_forward(s, rows, Ch * Ch, Cz, true, false);
        plan_expand_rows(s, rows, Cz);
    }
    mf_memsim_release(s, scratch);
}

void mf_outer_product_mean_plan_backward(mf_memsim *s, int64_t n_seq, int64_t n_res,
                                         const mf_outer_product_mean_dims *d, bool dm, bool dparams)
{
    const int64_t S = n_seq, N = n_res, SN = S * N, Cm = d->c_m, Ch = d->c_hidden, Cz = d->c_z;
    const int64_t chunk = plan_chunk(s, N);
    const mf_memsim_mark_t start = mf_memsim_mark(s);
    if (s->policy.storage == MF_BF16) { /* f32 copies of the saved projections */
        mf_memsim_tensor(s, MF_MEM_WORK, MF_F32, N * S * Ch);
        mf_memsim_tensor(s, MF_MEM_WORK, MF_F32, S * N * Ch);
    }
    mf_memsim_tensor(s, MF_MEM_WORK, MF_F32, N * N);                     /* inv_norm */
    mf_memsim_tensor(s, MF_MEM_WORK, MF_F32, Ch * Ch * Cz);              /* output_w^T */
    if (dparams) mf_memsim_tensor(s, MF_MEM_WORK, MF_F32, Ch * Ch * Cz); /* its gradient */
    mf_memsim_tensor(s, MF_MEM_WORK, MF_F32, N * S * Ch);                /* d left_t */
    mf_memsim_tensor(s, MF_MEM_WORK, MF_F32, S * N * Ch);                /* d right */
    plan_inverse_norm(s, S, N);
    const mf_memsim_mark_t loop = mf_memsim_mark(s);
    mf_memsim_tensor(s, MF_MEM_WORK, MF_F32, chunk * N * Ch * Ch); /* outer */
    mf_memsim_tensor(s, MF_MEM_WORK, MF_F32, chunk * N * Ch * Ch); /* d outer */
    mf_memsim_tensor(s, MF_MEM_WORK, MF_F32, chunk * N * Cz);      /* dy */
    mf_memsim_tensor(s, MF_MEM_WORK, MF_F32, chunk * N * Cz);      /* inv_norm rows */
    for (int64_t i0 = 0; i0 < N; i0 = mf_plan_next_slice(i0, N, chunk)) {
        const int64_t ci = i0 + chunk < N ? chunk : N - i0, rows = ci * N;
        mf_plan_matmul(s, ci, 1, ci, N * Ch, Ch, S, true, false, false);
        plan_expand_rows(s, rows, Cz);
        mf_plan_linear_backward(s, rows, Ch * Ch, Cz, true, dparams, dparams);
        mf_plan_matmul_backward(s, ci, 1, ci, N * Ch, Ch, S, true, false, true, true);
    }
    mf_memsim_release(s, loop);
    if (dm || dparams) {
        mf_memsim_tensor(s, MF_MEM_WORK, MF_F32, SN * Cm); /* ln */
        mf_memsim_tensor(s, MF_MEM_WORK, MF_F32, SN);      /* mean */
        mf_memsim_tensor(s, MF_MEM_WORK, MF_F32, SN);      /* rstd */
        mf_memsim_tensor(s, MF_MEM_WORK, MF_F32, SN * Ch); /* mask expanded */
        mf_memsim_tensor(s, MF_MEM_WORK, MF_F32, SN * Ch); /* d left */
        mf_memsim_tensor(s, MF_MEM_WORK, MF_F32, SN * Cm); /* d ln */
        plan_expand_rows(s, SN, Ch);
        mf_plan_linear_backward(s, SN, Cm, Ch, true, dparams, dparams);
        mf_plan_linear_backward(s, SN, Cm, Ch, true, dparams, dparams);
    }
    mf_memsim_release(s, start);
}
