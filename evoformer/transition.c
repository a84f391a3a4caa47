/* MSA / pair transition (Alg. 9, Alg. 15), see transition.h. */
#include "evoformer/transition.h"

#include "core/ops.h"

#define NPARAMS ((int)(sizeof(mf_transition_params) / sizeof(mf_tensor)))

int mf_transition_param_specs(const mf_transition_dims *d, mf_param_spec *out)
{
    const mf_param_spec specs[] = {
#define MF_PARAM MF_PARAM_SPEC
#include "evoformer/transition.def"
#undef MF_PARAM
    };
    const int n = (int)(sizeof specs / sizeof specs[0]);
    if (out)
        for (int i = 0; i < n; i++) out[i] = specs[i];
    return n;
}

static mf_status check_args(const mf_ctx *ctx, const mf_tensor *x, const mf_transition_params *p,
                            const mf_transition_dims *d)
{
    MF_REQUIRE(ctx && ctx->arena, "transition: ctx and arena required");
    MF_REQUIRE(p && d, "transition: parameters and dims required");
    MF_REQUIRE(d->c > 0 && d->factor > 0, "transition: dims c = %lld, factor = %lld must be > 0",
               (long long)d->c, (long long)d->factor);
    MF_REQUIRE(x && x->data, "transition: input x missing");
    char b[96];
    MF_REQUIRE(x->ndim >= 2 && x->ndim <= MF_MAX_DIMS && x->shape[x->ndim - 1] == d->c,
               "transition: x is %s, expected [n0, ..., c = %lld] with 2 to 4 dims",
               mf_tensor_describe(x, b, sizeof b), (long long)d->c);
    MF_REQUIRE(x->device == ctx->device, "transition: x is not on the context's device");
    mf_param_spec specs[NPARAMS];
    MF_REQUIRE(mf_transition_param_specs(d, specs) == NPARAMS, "transition: parameter table");
    const mf_tensor *t = MF_PARAMS_AS_ARRAY((mf_transition_params *)p);
    for (int i = 0; i < NPARAMS; i++) {
        MF_TRY(mf_check_tensor(&t[i], specs[i].name, x->dtype, specs[i].ndim));
        for (int k = 0; k < specs[i].ndim; k++)
            MF_REQUIRE(t[i].shape[k] == specs[i].shape[k], "transition: parameter %s is %s",
                       specs[i].name, mf_tensor_describe(&t[i], b, sizeof b));
    }
    return MF_OK;
}

/* Rows [r0, r0 + n) of t viewed as a 2-D [rows, cols] matrix. */
static mf_tensor rows_view(const mf_tensor *t, int64_t r0, int64_t n, int64_t cols)
{
    const int64_t shape[2] = {n, cols};
    return mf_tensor_make((char *)t->data + (size_t)(r0 * cols) * mf_dtype_size(t->dtype), t->dtype,
                          t->device, 2, shape);
}

static int64_t chunk_of(const mf_ctx *ctx, int64_t n0)
{
    int64_t c = ctx->policy.chunk_size;
    return c > 0 && c < n0 ? c : n0;
}

/* The policy's storage precision; f64 runs (the gradient checks' oracle) keep f64 (ops.h). */
static mf_dtype storage_dtype(const mf_ctx *ctx, mf_dtype compute)
{
    return ctx->policy.storage == MF_BF16 && compute != MF_F64 ? MF_BF16 : compute;
}

mf_status mf_transition_forward(mf_ctx *ctx, mf_tensor *out, bool accumulate,
                                mf_transition_saved *saved, const mf_tensor *x,
                                const mf_transition_params *p, const mf_transition_dims *d)
{
    MF_TRY(check_args(ctx, x, p, d));
    MF_TRY(mf_check_tensor(out, "transition out", x->dtype, x->ndim));
    MF_TRY(mf_check_same_shape(out, "transition out", x, "transition x"));
    const mf_dtype dt = x->dtype;
    const int64_t C = d->c, H = d->c * d->factor, R = mf_tensor_rows(x);
    const int64_t n0 = x->shape[0], per0 = R / n0, chunk = chunk_of(ctx, n0);
    mf_arena *a = ctx->arena;
    const mf_arena_mark_t start = mf_arena_mark(a);
    mf_status st = MF_OK;
    mf_tensor hidden_all = {0}, ln, hidden = {0};
    const bool direct = saved && storage_dtype(ctx, dt) == dt;
    if (saved)
        MF_TRY_GOTO(mf_arena_tensor(a, &hidden_all, storage_dtype(ctx, dt), 2,
                                    (const int64_t[]){R, H}, "transition.saved.hidden"));
    const mf_arena_mark_t scratch = mf_arena_mark(a);
    MF_TRY_GOTO(mf_arena_tensor(a, &ln, dt, 2, (const int64_t[]){chunk * per0, C},
                                "transition.layer_norm"));
    if (!direct)
        MF_TRY_GOTO(mf_arena_tensor(a, &hidden, dt, 2, (const int64_t[]){chunk * per0, H},
                                    "transition.hidden"));
    for (int64_t s0 = 0; s0 < n0; s0 += chunk) {
        const int64_t r0 = s0 * per0, rows = (s0 + chunk < n0 ? chunk : n0 - s0) * per0;
        mf_tensor xs = rows_view(x, r0, rows, C), os = rows_view(out, r0, rows, C);
        mf_tensor ls = rows_view(&ln, 0, rows, C);
        mf_tensor hs =
            direct ? rows_view(&hidden_all, r0, rows, H) : rows_view(&hidden, 0, rows, H);
        MF_TRY_GOTO(mf_layer_norm_forward(ctx, &ls, NULL, NULL, &xs, &p->input_layer_norm_scale,
                                          &p->input_layer_norm_offset, MF_TRANSITION_LN_EPS));
        MF_TRY_GOTO(
            mf_linear_forward(ctx, &hs, &ls, &p->transition1_weights, &p->transition1_bias, false));
        MF_TRY_GOTO(mf_activation_forward(ctx, MF_ACT_RELU, &hs, &hs));
        if (saved && !direct) {
            mf_tensor keep = rows_view(&hidden_all, r0, rows, H);
            MF_TRY_GOTO(mf_convert(ctx, &keep, &hs));
        }
        MF_TRY_GOTO(mf_linear_forward(ctx, &os, &hs, &p->transition2_weights, &p->transition2_bias,
                                      accumulate));
    }
    mf_arena_release(a, scratch);
    if (saved) saved->hidden = hidden_all;
    return MF_OK;
cleanup:
    mf_arena_release(a, start);
    return st;
}

static mf_tensor *present(mf_tensor *t)
{
    return t && t->data ? t : NULL;
}

mf_status mf_transition_backward(mf_ctx *ctx, mf_tensor *dx, mf_transition_params *dp,
                                 const mf_tensor *dout, const mf_transition_saved *saved,
                                 const mf_tensor *x, const mf_transition_params *p,
                                 const mf_transition_dims *d)
{
    MF_TRY(check_args(ctx, x, p, d));
    MF_REQUIRE(saved && saved->hidden.data, "transition backward: saved activations required");
    MF_TRY(mf_check_tensor(dout, "transition dout", x->dtype, x->ndim));
    MF_TRY(mf_check_same_shape(dout, "transition dout", x, "transition x"));
    dx = present(dx);
    if (dx) {
        MF_TRY(mf_check_tensor(dx, "transition dx", x->dtype, x->ndim));
        MF_TRY(mf_check_same_shape(dx, "transition dx", x, "transition x"));
    }
    const mf_dtype dt = x->dtype;
    const int64_t C = d->c, H = d->c * d->factor, R = mf_tensor_rows(x);
    const int64_t n0 = x->shape[0], per0 = R / n0, chunk = chunk_of(ctx, n0);
    MF_REQUIRE(saved->hidden.ndim == 2 && saved->hidden.shape[0] == R &&
                   saved->hidden.shape[1] == H,
               "transition backward: saved hidden does not match x");
    mf_tensor *d_scale = dp ? present(&dp->input_layer_norm_scale) : NULL;
    mf_tensor *d_offset = dp ? present(&dp->input_layer_norm_offset) : NULL;
    mf_tensor *d_w1 = dp ? present(&dp->transition1_weights) : NULL;
    mf_tensor *d_b1 = dp ? present(&dp->transition1_bias) : NULL;
    mf_tensor *d_w2 = dp ? present(&dp->transition2_weights) : NULL;
    mf_tensor *d_b2 = dp ? present(&dp->transition2_bias) : NULL;
    mf_arena *a = ctx->arena;
    const mf_arena_mark_t start = mf_arena_mark(a);
    mf_status st = MF_OK;
    const int64_t cr = chunk * per0;
    mf_tensor ln, mean, rstd, hid = {0}, dh, dpre, dln;
    MF_TRY_GOTO(mf_arena_tensor(a, &ln, dt, 2, (const int64_t[]){cr, C}, "transition.layer_norm"));
    MF_TRY_GOTO(mf_arena_tensor(a, &mean, dt, 1, &cr, "transition.ln_mean"));
    MF_TRY_GOTO(mf_arena_tensor(a, &rstd, dt, 1, &cr, "transition.ln_rstd"));
    if (saved->hidden.dtype != dt)
        MF_TRY_GOTO(mf_arena_tensor(a, &hid, dt, 2, (const int64_t[]){cr, H}, "transition.hidden"));
    MF_TRY_GOTO(mf_arena_tensor(a, &dh, dt, 2, (const int64_t[]){cr, H}, "transition.dhidden"));
    MF_TRY_GOTO(mf_arena_tensor(a, &dpre, dt, 2, (const int64_t[]){cr, H}, "transition.dpre"));
    MF_TRY_GOTO(mf_arena_tensor(a, &dln, dt, 2, (const int64_t[]){cr, C}, "transition.dln"));
    for (int64_t s0 = 0; s0 < n0; s0 += chunk) {
        const int64_t r0 = s0 * per0, rows = (s0 + chunk < n0 ? chunk : n0 - s0) * per0;
        mf_tensor xs = rows_view(x, r0, rows, C), gs = rows_view(dout, r0, rows, C);
        mf_tensor ls = rows_view(&ln, 0, rows, C), ms = mf_tensor_slice0(&mean, 0, rows);
        mf_tensor rs = mf_tensor_slice0(&rstd, 0, rows);
        mf_tensor hs = rows_view(&saved->hidden, r0, rows, H);
        mf_tensor dhs = rows_view(&dh, 0, rows, H), dps = rows_view(&dpre, 0, rows, H);
        mf_tensor dls = rows_view(&dln, 0, rows, C);
        if (hid.data) {
            mf_tensor hc = rows_view(&hid, 0, rows, H);
            MF_TRY_GOTO(mf_convert(ctx, &hc, &hs));
            hs = hc;
        }
        MF_TRY_GOTO(mf_layer_norm_forward(ctx, &ls, &ms, &rs, &xs, &p->input_layer_norm_scale,
                                          &p->input_layer_norm_offset, MF_TRANSITION_LN_EPS));
        MF_TRY_GOTO(mf_fill(ctx, &dhs, 0.0f));
        MF_TRY_GOTO(mf_fill(ctx, &dps, 0.0f));
        MF_TRY_GOTO(mf_fill(ctx, &dls, 0.0f));
        MF_TRY_GOTO(mf_linear_backward(ctx, &dhs, d_w2, d_b2, &gs, &hs, &p->transition2_weights));
        /* ReLU's derivative read from its output: positive exactly where its input is. */
        MF_TRY_GOTO(mf_activation_backward(ctx, MF_ACT_RELU, &dps, &dhs, &hs));
        MF_TRY_GOTO(mf_linear_backward(ctx, &dls, d_w1, d_b1, &dps, &ls, &p->transition1_weights));
        mf_tensor dxs = dx ? rows_view(dx, r0, rows, C) : (mf_tensor){0};
        MF_TRY_GOTO(mf_layer_norm_backward(ctx, dx ? &dxs : NULL, d_scale, d_offset, &dls, &xs, &ms,
                                           &rs, &p->input_layer_norm_scale));
    }
cleanup:
    mf_arena_release(a, start);
    return st;
}

/* ---- memory model: the allocations above, replayed on a simulated arena (memplan.h) ---------- */

static int64_t plan_chunk(const mf_memsim *s, int64_t n0)
{
    int64_t c = s->policy.chunk_size;
    return c > 0 && c < n0 ? c : n0;
}

void mf_transition_plan_forward(mf_memsim *s, int64_t n0, int64_t per0, const mf_transition_dims *d,
                                bool saving, bool accumulate)
{
    const int64_t C = d->c, H = d->c * d->factor, R = n0 * per0, chunk = plan_chunk(s, n0);
    const mf_dtype sdt = s->policy.storage == MF_BF16 ? MF_BF16 : MF_F32;
    const bool direct = saving && sdt == MF_F32;
    if (saving) mf_memsim_tensor(s, MF_MEM_SAVED, sdt, R * H);
    const mf_memsim_mark_t scratch = mf_memsim_mark(s);
    mf_memsim_tensor(s, MF_MEM_WORK, MF_F32, chunk * per0 * C);
    if (!direct) mf_memsim_tensor(s, MF_MEM_WORK, MF_F32, chunk * per0 * H);
    for (int64_t s0 = 0; s0 < n0; s0 = mf_plan_next_slice(s0, n0, chunk)) {
        const int64_t rows = (s0 + chunk < n0 ? chunk : n0 - s0) * per0;
        mf_plan_linear_forward(s, rows, C, H, true, false);
        mf_plan_linear_forward(s, rows, H, C, true, accumulate);
    }
    mf_memsim_release(s, scratch);
}

void mf_transition_plan_backward(mf_memsim *s, int64_t n0, int64_t per0,
                                 const mf_transition_dims *d, bool dx, bool dparams)
{
    (void)dx; /* the layer norm's input gradient takes no workspace */
    const int64_t C = d->c, H = d->c * d->factor, chunk = plan_chunk(s, n0), cr = chunk * per0;
    const mf_memsim_mark_t start = mf_memsim_mark(s);
    mf_memsim_tensor(s, MF_MEM_WORK, MF_F32, cr * C); /* ln */
    mf_memsim_tensor(s, MF_MEM_WORK, MF_F32, cr);     /* mean */
    mf_memsim_tensor(s, MF_MEM_WORK, MF_F32, cr);     /* rstd */
    if (s->policy.storage == MF_BF16) mf_memsim_tensor(s, MF_MEM_WORK, MF_F32, cr * H);
    mf_memsim_tensor(s, MF_MEM_WORK, MF_F32, cr * H); /* dhidden */
    mf_memsim_tensor(s, MF_MEM_WORK, MF_F32, cr * H); /* dpre */
    mf_memsim_tensor(s, MF_MEM_WORK, MF_F32, cr * C); /* dln */
    for (int64_t s0 = 0; s0 < n0; s0 = mf_plan_next_slice(s0, n0, chunk)) {
        const int64_t rows = (s0 + chunk < n0 ? chunk : n0 - s0) * per0;
        mf_plan_linear_backward(s, rows, H, C, true, dparams, dparams);
        mf_plan_linear_backward(s, rows, C, H, true, dparams, dparams);
    }
    mf_memsim_release(s, start);
}
