/* Structure-module transition (Alg. 20 lines 8-9), see sm_transition.h. */
#include "structure_module/sm_transition.h"

#include "core/ops.h"

static mf_status check_params(const mf_sm_transition_params *p, int64_t C)
{
    MF_REQUIRE(p, "structure-module transition: parameters missing");
    const mf_tensor *w[3] = {&p->transition_weights, &p->transition_1_weights,
                             &p->transition_2_weights};
    const mf_tensor *b[3] = {&p->transition_bias, &p->transition_1_bias, &p->transition_2_bias};
    static const char *const wn[3] = {"transition//weights", "transition_1//weights",
                                      "transition_2//weights"};
    static const char *const bn[3] = {"transition//bias", "transition_1//bias",
                                      "transition_2//bias"};
    for (int k = 0; k < 3; k++) {
        MF_TRY(mf_check_tensor(w[k], wn[k], MF_F32, 2));
        MF_REQUIRE(w[k]->shape[0] == C && w[k]->shape[1] == C,
                   "%s is [%lld, %lld], expected [%lld, %lld]", wn[k], (long long)w[k]->shape[0],
                   (long long)w[k]->shape[1], (long long)C, (long long)C);
        MF_TRY(mf_check_tensor(b[k], bn[k], MF_F32, 1));
        MF_REQUIRE(b[k]->shape[0] == C, "%s has %lld elements, expected %lld", bn[k],
                   (long long)b[k]->shape[0], (long long)C);
    }
    MF_TRY(mf_check_tensor(&p->layer_norm_scale, "transition_layer_norm//scale", MF_F32, 1));
    MF_TRY(mf_check_tensor(&p->layer_norm_offset, "transition_layer_norm//offset", MF_F32, 1));
    MF_REQUIRE(p->layer_norm_scale.shape[0] == C && p->layer_norm_offset.shape[0] == C,
               "transition_layer_norm scale/offset must have %lld elements", (long long)C);
    return MF_OK;
}

mf_status mf_sm_transition_forward(mf_ctx *ctx, mf_tensor *s_out, mf_sm_transition_saved *saved,
                                   const mf_tensor *s, const mf_sm_transition_params *p)
{
    MF_REQUIRE(ctx && ctx->arena, "structure-module transition: ctx and arena required");
    MF_TRY(mf_check_tensor(s, "sm_transition s", MF_F32, 2));
    MF_TRY(mf_check_same_shape(s_out, "sm_transition s_out", s, "sm_transition s"));
    const int64_t N = s->shape[0], C = s->shape[1];
    MF_TRY(check_params(p, C));
    MF_REQUIRE(!saved || s_out->data != s->data,
               "structure-module transition: s_out may alias s only at inference (the backward "
               "reads s)");
    mf_arena *a = ctx->arena;
    mf_arena_mark_t mark = mf_arena_mark(a);
    const int64_t shape[2] = {N, C};
    mf_tensor act1, act2, pre_norm, mean = {0}, rstd = {0};
    mf_status st = MF_OK;
    MF_TRY_GOTO(mf_arena_tensor(a, &act1, MF_F32, 2, shape, "sm_transition.act1"));
    MF_TRY_GOTO(mf_arena_tensor(a, &act2, MF_F32, 2, shape, "sm_transition.act2"));
    MF_TRY_GOTO(mf_arena_tensor(a, &pre_norm, MF_F32, 2, shape, "sm_transition.pre_norm"));
    if (saved) {
        MF_TRY_GOTO(mf_arena_tensor(a, &mean, MF_F32, 1, &N, "sm_transition.mean"));
        MF_TRY_GOTO(mf_arena_tensor(a, &rstd, MF_F32, 1, &N, "sm_transition.rstd"));
    }
    /* Alg. 20 line 8: two ReLU layers and a final linear layer, then the residual. */
    MF_TRY_GOTO(
        mf_linear_forward(ctx, &act1, s, &p->transition_weights, &p->transition_bias, false));
    MF_TRY_GOTO(mf_activation_forward(ctx, MF_ACT_RELU, &act1, &act1));
    MF_TRY_GOTO(mf_linear_forward(ctx, &act2, &act1, &p->transition_1_weights,
                                  &p->transition_1_bias, false));
    MF_TRY_GOTO(mf_activation_forward(ctx, MF_ACT_RELU, &act2, &act2));
    MF_TRY_GOTO(mf_linear_forward(ctx, &pre_norm, &act2, &p->transition_2_weights,
                                  &p->transition_2_bias, false));
    MF_TRY_GOTO(mf_add(ctx, &pre_norm, &pre_norm, s));
    /* Line 9: LayerNorm. */
    MF_TRY_GOTO(mf_layer_norm_forward(ctx, s_out, saved ? &mean : NULL, saved ? &rstd : NULL,
                                      &pre_norm, &p->layer_norm_scale, &p->layer_norm_offset,
                                      MF_SM_TRANSITION_LN_EPS));
    if (saved) {
        *saved = (mf_sm_transition_saved){act1, act2, pre_norm, mean, rstd};
        return MF_OK;
    }
cleanup:
    mf_arena_release(a, mark);
    return st;
}

static mf_tensor *present(mf_tensor *t)
{
    return t && t->data ? t : NULL;
}

mf_status mf_sm_transition_backward(mf_ctx *ctx, mf_tensor *ds, mf_sm_transition_params *dp,
                                    const mf_tensor *ds_out, const mf_sm_transition_saved *saved,
                                    const mf_tensor *s, const mf_sm_transition_params *p)
{
    MF_REQUIRE(ctx && ctx->arena && saved, "structure-module transition backward: ctx, arena and "
                                           "saved activations required");
    MF_TRY(mf_check_tensor(s, "sm_transition s", MF_F32, 2));
    MF_TRY(mf_check_same_shape(ds_out, "sm_transition ds_out", s, "sm_transition s"));
    if (ds) MF_TRY(mf_check_same_shape(ds, "sm_transition ds", s, "sm_transition s"));
    const int64_t N = s->shape[0], C = s->shape[1];
    MF_TRY(check_params(p, C));
    mf_tensor *g[8] = {NULL};
    if (dp) {
        g[0] = present(&dp->transition_weights), g[1] = present(&dp->transition_bias);
        g[2] = present(&dp->transition_1_weights), g[3] = present(&dp->transition_1_bias);
        g[4] = present(&dp->transition_2_weights), g[5] = present(&dp->transition_2_bias);
        g[6] = present(&dp->layer_norm_scale), g[7] = present(&dp->layer_norm_offset);
    }
    mf_arena *a = ctx->arena;
    mf_arena_mark_t mark = mf_arena_mark(a);
    const int64_t shape[2] = {N, C};
    mf_tensor dpre, dact, dlin;
    mf_status st = MF_OK;
    MF_TRY_GOTO(mf_arena_zeros(a, &dpre, MF_F32, 2, shape, "sm_transition.dpre_norm"));
    MF_TRY_GOTO(mf_arena_zeros(a, &dact, MF_F32, 2, shape, "sm_transition.dact"));
    MF_TRY_GOTO(mf_arena_zeros(a, &dlin, MF_F32, 2, shape, "sm_transition.dlin"));
    MF_TRY_GOTO(mf_layer_norm_backward(ctx, &dpre, g[6], g[7], ds_out, &saved->pre_norm,
                                       &saved->mean, &saved->rstd, &p->layer_norm_scale));
    if (ds) MF_TRY_GOTO(mf_axpy(ctx, ds, 1.0f, &dpre)); /* the residual */
    MF_TRY_GOTO(
        mf_linear_backward(ctx, &dact, g[4], g[5], &dpre, &saved->act2, &p->transition_2_weights));
    MF_TRY_GOTO(mf_activation_backward(ctx, MF_ACT_RELU, &dlin, &dact, &saved->act2));
    MF_TRY_GOTO(mf_fill(ctx, &dact, 0.0f));
    MF_TRY_GOTO(
        mf_linear_backward(ctx, &dact, g[2], g[3], &dlin, &saved->act1, &p->transition_1_weights));
    MF_TRY_GOTO(mf_fill(ctx, &dlin, 0.0f));
    MF_TRY_GOTO(mf_activation_backward(ctx, MF_ACT_RELU, &dlin, &dact, &saved->act1));
    MF_TRY_GOTO(mf_linear_backward(ctx, ds, g[0], g[1], &dlin, s, &p->transition_weights));
cleanup:
    mf_arena_release(a, mark);
    return st;
}
