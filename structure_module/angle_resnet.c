/* Angle resnet (Alg. 20 lines 11-14), see angle_resnet.h. */
#include "structure_module/angle_resnet.h"

#include <math.h>
#include <string.h>

#include "core/ops.h"
#include "memopt/saved.h"

#define NA (2 * MF_NUM_TORSIONS) /* 14 outputs: (sin, cos) of 7 torsions */

int mf_angle_resnet_param_specs(const mf_angle_resnet_dims *d, mf_param_spec *out)
{
    if (!d || d->num_residual_block < 1 || d->num_residual_block > MF_ANGLE_RESNET_MAX_BLOCKS)
        return 0;
    const mf_param_spec specs[] = {
#define MF_PARAM MF_PARAM_SPEC
#include "structure_module/angle_resnet.def"
#undef MF_PARAM
    };
    const int n = MF_ANGLE_RESNET_FIXED_PARAMS + 4 * (int)d->num_residual_block;
    if (out) memcpy(out, specs, sizeof(mf_param_spec) * (size_t)n);
    return n;
}

/* Parameter j (0: resblock1 weights, 1: its bias, 2: resblock2 weights, 3: its bias) of block k. */
static const mf_tensor *block_param(const mf_angle_resnet_params *p, int64_t k, int j)
{
    return &MF_PARAMS_AS_ARRAY(
        (mf_angle_resnet_params *)p)[MF_ANGLE_RESNET_FIXED_PARAMS + 4 * k + j];
}

static mf_tensor *block_grad(mf_angle_resnet_params *dp, int64_t k, int j)
{
    if (!dp) return NULL;
    mf_tensor *t = &MF_PARAMS_AS_ARRAY(dp)[MF_ANGLE_RESNET_FIXED_PARAMS + 4 * k + j];
    return t->data ? t : NULL;
}

static mf_tensor *present(mf_tensor *t)
{
    return t && t->data ? t : NULL;
}

static mf_status check_args(const mf_ctx *ctx, const mf_tensor *s, const mf_tensor *s_initial,
                            const mf_angle_resnet_params *p, const mf_angle_resnet_dims *d,
                            int64_t *N)
{
    MF_REQUIRE(ctx && ctx->arena, "angle resnet: ctx and arena required");
    MF_REQUIRE(ctx->device == MF_DEV_CPU,
               "angle resnet: the angle normalisation runs on the host, CPU context required");
    MF_REQUIRE(p && d, "angle resnet: parameters and dims required");
    MF_REQUIRE(d->c_s > 0 && d->num_channel > 0 && d->num_residual_block >= 1 &&
                   d->num_residual_block <= MF_ANGLE_RESNET_MAX_BLOCKS,
               "angle resnet: dims c_s %lld, num_channel %lld must be > 0, num_residual_block "
               "%lld must be 1..%d",
               (long long)d->c_s, (long long)d->num_channel, (long long)d->num_residual_block,
               MF_ANGLE_RESNET_MAX_BLOCKS);
    MF_REQUIRE(s && s->data && (s->dtype == MF_F32 || s->dtype == MF_F64),
               "angle resnet: s missing or neither f32 nor f64");
    MF_TRY(mf_check_tensor(s, "angle resnet s", s->dtype, 2));
    char b[96];
    MF_REQUIRE(s->shape[1] == d->c_s && s->device == MF_DEV_CPU,
               "angle resnet: s is %s, expected [N, %lld] on the host",
               mf_tensor_describe(s, b, sizeof b), (long long)d->c_s);
    MF_TRY(mf_check_tensor(s_initial, "angle resnet s_initial", s->dtype, 2));
    MF_TRY(mf_check_same_shape(s_initial, "angle resnet s_initial", s, "angle resnet s"));
    *N = s->shape[0];
    mf_param_spec specs[MF_ANGLE_RESNET_MAX_PARAMS];
    const int n = mf_angle_resnet_param_specs(d, specs);
    const mf_tensor *t = MF_PARAMS_AS_ARRAY((mf_angle_resnet_params *)p);
    for (int i = 0; i < n; i++) {
        MF_TRY(mf_check_tensor(&t[i], specs[i].name, s->dtype, specs[i].ndim));
        for (int k = 0; k < specs[i].ndim; k++)
            MF_REQUIRE(t[i].shape[k] == specs[i].shape[k], "angle resnet: parameter %s is %s",
                       specs[i].name, mf_tensor_describe(&t[i], b, sizeof b));
    }
    return MF_OK;
}

static mf_status check_angles(const mf_tensor *t, const char *name, mf_dtype dt, int64_t N)
{
    MF_TRY(mf_check_tensor(t, name, dt, 3));
    char b[96];
    MF_REQUIRE(t->shape[0] == N && t->shape[1] == MF_NUM_TORSIONS && t->shape[2] == 2 &&
                   t->device == MF_DEV_CPU,
               "angle resnet: %s is %s, expected [%lld, 7, 2] on the host", name,
               mf_tensor_describe(t, b, sizeof b), (long long)N);
    return MF_OK;
}

/* Rows [r0, r0 + n) of t viewed as a 2-D [rows, cols] matrix. */
static mf_tensor rows_view(const mf_tensor *t, int64_t r0, int64_t n, int64_t cols)
{
    const int64_t shape[2] = {n, cols};
    return mf_tensor_make((char *)t->data + (size_t)(r0 * cols) * mf_dtype_size(t->dtype), t->dtype,
                          t->device, 2, shape);
}

/* Layer j (a_0, h_0, a_1, ..., a_B), rows [r0, r0 + n) of the saved acts [2B + 1, N, C]. */
static mf_tensor act_view(const mf_tensor *acts, int64_t j, int64_t r0, int64_t n)
{
    const int64_t N = acts->shape[1], C = acts->shape[2];
    return rows_view(acts, j * N + r0, n, C);
}

static int64_t slice_rows(const mf_ctx *ctx, int64_t N)
{
    const int64_t c = ctx->policy.chunk_size;
    return c > 0 && c < N ? c : N;
}

/* AF2 l2_normalize over each (sin, cos) pair of u [n, 14] into y. */
static void normalize_pairs(mf_dtype dt, void *y, const void *u, int64_t pairs)
{
    for (int64_t k = 0; k < pairs; k++) {
        if (dt == MF_F64) {
            const double *x = (const double *)u + 2 * k;
            double *o = (double *)y + 2 * k, q = x[0] * x[0] + x[1] * x[1];
            const double inv = 1.0 / sqrt(q > MF_ANGLE_NORM_EPS ? q : MF_ANGLE_NORM_EPS);
            o[0] = x[0] * inv, o[1] = x[1] * inv;
        } else {
            const float *x = (const float *)u + 2 * k;
            float *o = (float *)y + 2 * k, q = x[0] * x[0] + x[1] * x[1];
            const float inv =
                1.0f / sqrtf(q > (float)MF_ANGLE_NORM_EPS ? q : (float)MF_ANGLE_NORM_EPS);
            o[0] = x[0] * inv, o[1] = x[1] * inv;
        }
    }
}

/* du += d(u / sqrt(max(|u|^2, eps))) given dy: (dy - y (y . dy)) / |u| above eps, dy / sqrt(eps)
 * below (the max is constant there). */
static void normalize_pairs_backward(mf_dtype dt, void *du, const void *dy, const void *u,
                                     int64_t pairs)
{
    for (int64_t k = 0; k < pairs; k++) {
        if (dt == MF_F64) {
            const double *x = (const double *)u + 2 * k, *g = (const double *)dy + 2 * k;
            double *d = (double *)du + 2 * k, q = x[0] * x[0] + x[1] * x[1];
            if (q > MF_ANGLE_NORM_EPS) {
                const double inv = 1.0 / sqrt(q), y0 = x[0] * inv, y1 = x[1] * inv;
                const double dot = y0 * g[0] + y1 * g[1];
                d[0] += (g[0] - y0 * dot) * inv, d[1] += (g[1] - y1 * dot) * inv;
            } else {
                const double inv = 1.0 / sqrt(MF_ANGLE_NORM_EPS);
                d[0] += g[0] * inv, d[1] += g[1] * inv;
            }
        } else {
            const float *x = (const float *)u + 2 * k, *g = (const float *)dy + 2 * k;
            float *d = (float *)du + 2 * k, q = x[0] * x[0] + x[1] * x[1];
            if (q > (float)MF_ANGLE_NORM_EPS) {
                const float inv = 1.0f / sqrtf(q), y0 = x[0] * inv, y1 = x[1] * inv;
                const float dot = y0 * g[0] + y1 * g[1];
                d[0] += (g[0] - y0 * dot) * inv, d[1] += (g[1] - y1 * dot) * inv;
            } else {
                const float inv = 1.0f / sqrtf((float)MF_ANGLE_NORM_EPS);
                d[0] += g[0] * inv, d[1] += g[1] * inv;
            }
        }
    }
}

mf_status mf_angle_resnet_forward(mf_ctx *ctx, mf_tensor *unnormalized_angles, mf_tensor *angles,
                                  mf_angle_resnet_saved *saved, const mf_tensor *s,
                                  const mf_tensor *s_initial, const mf_angle_resnet_params *p,
                                  const mf_angle_resnet_dims *d)
{
    int64_t N;
    if (saved) *saved = (mf_angle_resnet_saved){0};
    MF_TRY(check_args(ctx, s, s_initial, p, d, &N));
    const mf_dtype dt = s->dtype;
    MF_TRY(check_angles(angles, "angles", dt, N));
    if (unnormalized_angles)
        MF_TRY(check_angles(unnormalized_angles, "unnormalized_angles", dt, N));
    const int64_t B = d->num_residual_block, C = d->num_channel, CS = d->c_s;
    const int64_t QS = slice_rows(ctx, N);
    mf_arena *A = ctx->arena;
    const mf_arena_mark_t mark0 = mf_arena_mark(A);
    mf_status st = MF_OK;
    mf_angle_resnet_saved sv = {0};
    if (saved) {
        /* f64 runs keep f64 (memopt/saved.h); else the storage policy's precision */
        const mf_dtype sdt = dt == MF_F64                     ? MF_F64
                             : ctx->policy.storage == MF_BF16 ? MF_BF16
                                                              : MF_F32;
        MF_TRY_GOTO(mf_arena_tensor(A, &sv.acts, sdt, 3, (const int64_t[]){2 * B + 1, N, C},
                                    "angle_resnet.saved.acts"));
        MF_TRY_GOTO(mf_arena_tensor(A, &sv.unnormalized, dt, 3,
                                    (const int64_t[]){N, MF_NUM_TORSIONS, 2},
                                    "angle_resnet.saved.unnormalized"));
    }
    const mf_arena_mark_t mark = mf_arena_mark(A);
    mf_tensor xr, act, hid, tmp, u;
    const char *lab = "angle_resnet.transient";
    MF_TRY_GOTO(mf_arena_tensor(A, &xr, dt, 2, (const int64_t[]){QS, CS}, lab));
    MF_TRY_GOTO(mf_arena_tensor(A, &act, dt, 2, (const int64_t[]){QS, C}, lab));
    MF_TRY_GOTO(mf_arena_tensor(A, &hid, dt, 2, (const int64_t[]){QS, C}, lab));
    MF_TRY_GOTO(mf_arena_tensor(A, &tmp, dt, 2, (const int64_t[]){QS, C}, lab));
    MF_TRY_GOTO(mf_arena_tensor(A, &u, dt, 2, (const int64_t[]){QS, NA}, lab));
    for (int64_t r0 = 0; r0 < N; r0 += QS) {
        const int64_t n = N - r0 < QS ? N - r0 : QS;
        mf_tensor sr = rows_view(s, r0, n, CS), sir = rows_view(s_initial, r0, n, CS);
        mf_tensor x = rows_view(&xr, 0, n, CS), a = rows_view(&act, 0, n, C);
        mf_tensor h = rows_view(&hid, 0, n, C), t = rows_view(&tmp, 0, n, C);
        mf_tensor ur = unnormalized_angles ? rows_view(unnormalized_angles, r0, n, NA)
                                           : rows_view(&u, 0, n, NA);
        /* line 11 (with the code's ReLUs on both inputs) */
        MF_TRY_GOTO(mf_activation_forward(ctx, MF_ACT_RELU, &x, &sr));
        MF_TRY_GOTO(mf_linear_forward(ctx, &a, &x, &p->input_projection_weights,
                                      &p->input_projection_bias, false));
        MF_TRY_GOTO(mf_activation_forward(ctx, MF_ACT_RELU, &x, &sir));
        MF_TRY_GOTO(mf_linear_forward(ctx, &a, &x, &p->input_projection_1_weights,
                                      &p->input_projection_1_bias, true));
        /* lines 12-13: residual blocks */
        for (int64_t k = 0; k < B; k++) {
            if (saved) {
                mf_tensor keep_a = act_view(&sv.acts, 2 * k, r0, n);
                MF_TRY_GOTO(mf_convert(ctx, &keep_a, &a)); /* to the storage precision */
            }
            MF_TRY_GOTO(mf_activation_forward(ctx, MF_ACT_RELU, &t, &a));
            MF_TRY_GOTO(
                mf_linear_forward(ctx, &h, &t, block_param(p, k, 0), block_param(p, k, 1), false));
            if (saved) {
                mf_tensor keep_h = act_view(&sv.acts, 2 * k + 1, r0, n);
                MF_TRY_GOTO(mf_convert(ctx, &keep_h, &h));
            }
            MF_TRY_GOTO(mf_activation_forward(ctx, MF_ACT_RELU, &t, &h));
            MF_TRY_GOTO(
                mf_linear_forward(ctx, &a, &t, block_param(p, k, 2), block_param(p, k, 3), true));
        }
        if (saved) {
            mf_tensor keep_a = act_view(&sv.acts, 2 * B, r0, n);
            MF_TRY_GOTO(mf_convert(ctx, &keep_a, &a));
        }
        /* line 14 */
        MF_TRY_GOTO(mf_activation_forward(ctx, MF_ACT_RELU, &t, &a));
        MF_TRY_GOTO(mf_linear_forward(ctx, &ur, &t, &p->unnormalized_angles_weights,
                                      &p->unnormalized_angles_bias, false));
        if (saved) {
            mf_tensor keep_u = rows_view(&sv.unnormalized, r0, n, NA);
            MF_TRY_GOTO(mf_convert(ctx, &keep_u, &ur));
        }
        mf_tensor ar = rows_view(angles, r0, n, NA);
        normalize_pairs(dt, ar.data, ur.data, n * MF_NUM_TORSIONS);
    }
cleanup:
    /* on failure nothing stays allocated, the saved tensors included */
    mf_arena_release(A, st == MF_OK ? mark : mark0);
    if (st == MF_OK && saved) *saved = sv;
    return st;
}

/* Rows of a saved activation in the compute precision: the saved rows themselves, or converted
 * into scratch (bf16 storage). */
static mf_status load_act(mf_ctx *ctx, mf_tensor *out, const mf_tensor *acts, int64_t j, int64_t r0,
                          int64_t n, mf_tensor *scratch, mf_dtype dt)
{
    mf_tensor v = act_view(acts, j, r0, n);
    if (v.dtype == dt) {
        *out = v;
        return MF_OK;
    }
    *out = rows_view(scratch, 0, n, v.shape[1]);
    return mf_convert(ctx, out, &v);
}

mf_status mf_angle_resnet_backward(mf_ctx *ctx, mf_tensor *ds, mf_tensor *ds_initial,
                                   mf_angle_resnet_params *dp,
                                   const mf_tensor *dunnormalized_angles, const mf_tensor *dangles,
                                   const mf_angle_resnet_saved *saved, const mf_tensor *s,
                                   const mf_tensor *s_initial, const mf_angle_resnet_params *p,
                                   const mf_angle_resnet_dims *d)
{
    int64_t N;
    MF_TRY(check_args(ctx, s, s_initial, p, d, &N));
    const mf_dtype dt = s->dtype;
    const int64_t B = d->num_residual_block, C = d->num_channel, CS = d->c_s;
    MF_REQUIRE(saved && saved->acts.data && saved->unnormalized.data,
               "angle resnet backward: the forward's saved activations are required");
    MF_REQUIRE(saved->acts.ndim == 3 && saved->acts.shape[0] == 2 * B + 1 &&
                   saved->acts.shape[1] == N && saved->acts.shape[2] == C,
               "angle resnet backward: saved acts do not match [%lld, %lld, %lld]",
               (long long)(2 * B + 1), (long long)N, (long long)C);
    MF_TRY(check_angles(&saved->unnormalized, "saved unnormalized angles", dt, N));
    if (dunnormalized_angles)
        MF_TRY(check_angles(dunnormalized_angles, "dunnormalized_angles", dt, N));
    if (dangles) MF_TRY(check_angles(dangles, "dangles", dt, N));
    ds = present(ds), ds_initial = present(ds_initial);
    if (ds) MF_TRY(mf_check_same_shape(ds, "angle resnet ds", s, "angle resnet s"));
    if (ds_initial)
        MF_TRY(mf_check_same_shape(ds_initial, "angle resnet ds_initial", s, "angle resnet s"));
    if (dp) {
        mf_param_spec specs[MF_ANGLE_RESNET_MAX_PARAMS];
        const int n = mf_angle_resnet_param_specs(d, specs);
        const mf_tensor *g = MF_PARAMS_AS_ARRAY(dp);
        for (int i = 0; i < n; i++)
            if (g[i].data) {
                MF_TRY(mf_check_tensor(&g[i], specs[i].name, dt, specs[i].ndim));
                for (int k = 0; k < specs[i].ndim; k++)
                    MF_REQUIRE(g[i].shape[k] == specs[i].shape[k],
                               "angle resnet backward: gradient of %s has the wrong shape",
                               specs[i].name);
            }
    }
#define GRAD(field) (dp ? present(&dp->field) : NULL)
    const int64_t QS = slice_rows(ctx, N);
    mf_arena *A = ctx->arena;
    const mf_arena_mark_t mark = mf_arena_mark(A);
    mf_status st = MF_OK;
    const char *lab = "angle_resnet.backward";
    mf_tensor xr, dxr, tmp, dtmp, dact, dhid, du, conv_a, conv_h;
    MF_TRY_GOTO(mf_arena_tensor(A, &xr, dt, 2, (const int64_t[]){QS, CS}, lab));
    MF_TRY_GOTO(mf_arena_tensor(A, &dxr, dt, 2, (const int64_t[]){QS, CS}, lab));
    MF_TRY_GOTO(mf_arena_tensor(A, &tmp, dt, 2, (const int64_t[]){QS, C}, lab));
    MF_TRY_GOTO(mf_arena_tensor(A, &dtmp, dt, 2, (const int64_t[]){QS, C}, lab));
    MF_TRY_GOTO(mf_arena_tensor(A, &dact, dt, 2, (const int64_t[]){QS, C}, lab));
    MF_TRY_GOTO(mf_arena_tensor(A, &dhid, dt, 2, (const int64_t[]){QS, C}, lab));
    MF_TRY_GOTO(mf_arena_tensor(A, &du, dt, 2, (const int64_t[]){QS, NA}, lab));
    MF_TRY_GOTO(mf_arena_tensor(A, &conv_a, dt, 2, (const int64_t[]){QS, C}, lab));
    MF_TRY_GOTO(mf_arena_tensor(A, &conv_h, dt, 2, (const int64_t[]){QS, C}, lab));
    for (int64_t r0 = 0; r0 < N; r0 += QS) {
        const int64_t n = N - r0 < QS ? N - r0 : QS;
        mf_tensor x = rows_view(&xr, 0, n, CS), dx = rows_view(&dxr, 0, n, CS);
        mf_tensor t = rows_view(&tmp, 0, n, C), dt_ = rows_view(&dtmp, 0, n, C);
        mf_tensor da = rows_view(&dact, 0, n, C), dh = rows_view(&dhid, 0, n, C);
        mf_tensor dur = rows_view(&du, 0, n, NA), a, h;
        /* line 14: the normalisation, then the angle output layer */
        if (dunnormalized_angles) {
            mf_tensor g = rows_view(dunnormalized_angles, r0, n, NA);
            MF_TRY_GOTO(mf_convert(ctx, &dur, &g));
        } else {
            MF_TRY_GOTO(mf_fill(ctx, &dur, 0.0f));
        }
        if (dangles) {
            mf_tensor g = rows_view(dangles, r0, n, NA),
                      ur = rows_view(&saved->unnormalized, r0, n, NA);
            normalize_pairs_backward(dt, dur.data, g.data, ur.data, n * MF_NUM_TORSIONS);
        }
        MF_TRY_GOTO(load_act(ctx, &a, &saved->acts, 2 * B, r0, n, &conv_a, dt));
        MF_TRY_GOTO(mf_activation_forward(ctx, MF_ACT_RELU, &t, &a));
        MF_TRY_GOTO(mf_fill(ctx, &dt_, 0.0f));
        MF_TRY_GOTO(mf_linear_backward(ctx, &dt_, GRAD(unnormalized_angles_weights),
                                       GRAD(unnormalized_angles_bias), &dur, &t,
                                       &p->unnormalized_angles_weights));
        MF_TRY_GOTO(mf_fill(ctx, &da, 0.0f));
        MF_TRY_GOTO(mf_activation_backward(ctx, MF_ACT_RELU, &da, &dt_, &a));
        /* lines 12-13 in reverse: da holds d a_{k+1}, which a_k receives through the residual */
        for (int64_t k = B - 1; k >= 0; k--) {
            MF_TRY_GOTO(load_act(ctx, &h, &saved->acts, 2 * k + 1, r0, n, &conv_h, dt));
            MF_TRY_GOTO(mf_activation_forward(ctx, MF_ACT_RELU, &t, &h));
            MF_TRY_GOTO(mf_fill(ctx, &dt_, 0.0f));
            MF_TRY_GOTO(mf_linear_backward(ctx, &dt_, block_grad(dp, k, 2), block_grad(dp, k, 3),
                                           &da, &t, block_param(p, k, 2)));
            MF_TRY_GOTO(mf_fill(ctx, &dh, 0.0f));
            MF_TRY_GOTO(mf_activation_backward(ctx, MF_ACT_RELU, &dh, &dt_, &h));
            MF_TRY_GOTO(load_act(ctx, &a, &saved->acts, 2 * k, r0, n, &conv_a, dt));
            MF_TRY_GOTO(mf_activation_forward(ctx, MF_ACT_RELU, &t, &a));
            MF_TRY_GOTO(mf_fill(ctx, &dt_, 0.0f));
            MF_TRY_GOTO(mf_linear_backward(ctx, &dt_, block_grad(dp, k, 0), block_grad(dp, k, 1),
                                           &dh, &t, block_param(p, k, 0)));
            MF_TRY_GOTO(mf_activation_backward(ctx, MF_ACT_RELU, &da, &dt_, &a));
        }
        /* line 11 */
        const mf_tensor *in[2] = {s, s_initial};
        mf_tensor *din[2] = {ds, ds_initial};
        const mf_tensor *w[2] = {&p->input_projection_weights, &p->input_projection_1_weights};
        mf_tensor *gw[2] = {GRAD(input_projection_weights), GRAD(input_projection_1_weights)};
        mf_tensor *gb[2] = {GRAD(input_projection_bias), GRAD(input_projection_1_bias)};
        for (int j = 0; j < 2; j++) {
            mf_tensor xin = rows_view(in[j], r0, n, CS);
            MF_TRY_GOTO(mf_activation_forward(ctx, MF_ACT_RELU, &x, &xin));
            if (din[j]) MF_TRY_GOTO(mf_fill(ctx, &dx, 0.0f));
            MF_TRY_GOTO(mf_linear_backward(ctx, din[j] ? &dx : NULL, gw[j], gb[j], &da, &x, w[j]));
            if (din[j]) {
                mf_tensor dxin = rows_view(din[j], r0, n, CS);
                MF_TRY_GOTO(mf_activation_backward(ctx, MF_ACT_RELU, &dxin, &dx, &xin));
            }
        }
    }
#undef GRAD
cleanup:
    mf_arena_release(A, mark);
    return st;
}
