/* Reference-vector verifiers for the transitions, the outer product mean and the triangular
 * multiplicative updates (see verify_evoformer_pair.h). */
#include "evoformer/verify_evoformer_pair.h"

#include "evoformer/outer_product_mean.h"
#include "evoformer/transition.h"
#include "evoformer/triangle_multiplication.h"

#define MAX_PARAMS 32

/* Extent `axis` of weights/<name>, for dims the inputs do not show. */
static mf_status weight_dim(const mf_module_vectors *v, const char *name, int axis, int64_t *out)
{
    mf_tensor t;
    MF_TRY(mf_verify_vector_tensor(v, &v->weights, "weights", name, &t));
    if (axis >= t.ndim)
        return MF_ERROR(MF_ERR_FORMAT, "%s: weights/%s has %d dims, expected more than %d", v->path,
                        name, t.ndim, axis);
    *out = t.shape[axis];
    return MF_OK;
}

/* Parameters bound to the file's weights and zeroed gradients from the arena. */
static mf_status bind(mf_ctx *ctx, const mf_module_vectors *v, const mf_param_spec *specs, int n,
                      mf_tensor *params, mf_tensor *grads)
{
    MF_REQUIRE(n <= MAX_PARAMS, "verifier: %d parameters, at most %d", n, MAX_PARAMS);
    MF_TRY(mf_params_bind_vectors(specs, n, params, v, ""));
    return mf_params_alloc(ctx->arena, specs, n, grads, "verify.grads");
}

static mf_status verify_transition(mf_ctx *ctx, const mf_module_vectors *v,
                                   mf_verify_report *report, const char *input)
{
    MF_TRY(mf_verify_require_cpu(ctx, "transition"));
    mf_tensor x, gout;
    MF_TRY(mf_verify_vector_tensor(v, &v->inputs, "inputs", input, &x));
    MF_TRY(mf_verify_vector_tensor(v, &v->grad_outputs, "grad_outputs", "update", &gout));
    mf_transition_dims d = {.c = x.shape[x.ndim - 1]};
    int64_t hidden;
    MF_TRY(weight_dim(v, "transition1||weights", 1, &hidden));
    MF_REQUIRE(d.c > 0 && hidden % d.c == 0, "%s: transition1 width %lld is not a multiple of %lld",
               v->path, (long long)hidden, (long long)d.c);
    d.factor = hidden / d.c;
    mf_param_spec specs[MAX_PARAMS];
    const int n = mf_transition_param_specs(&d, specs);
    mf_transition_params p, dp;
    mf_arena *a = ctx->arena;
    mf_arena_mark_t mark = mf_arena_mark(a);
    mf_status st = MF_OK;
    mf_tensor out, dx;
    mf_transition_saved saved;
    MF_TRY_GOTO(bind(ctx, v, specs, n, MF_PARAMS_AS_ARRAY(&p), MF_PARAMS_AS_ARRAY(&dp)));
    MF_TRY_GOTO(mf_arena_zeros(a, &out, MF_F32, x.ndim, x.shape, "verify.update"));
    MF_TRY_GOTO(mf_arena_zeros(a, &dx, MF_F32, x.ndim, x.shape, "verify.dx"));
    MF_TRY_GOTO(mf_transition_forward(ctx, &out, false, &saved, &x, &p, &d));
    MF_TRY_GOTO(mf_transition_backward(ctx, &dx, &dp, &gout, &saved, &x, &p, &d));
    MF_TRY_GOTO(mf_verify_compare_tensor(report, v, "outputs", "update", &out));
    MF_TRY_GOTO(mf_verify_compare_tensor(report, v, "grads_inputs", input, &dx));
    MF_TRY_GOTO(mf_params_verify_grads(report, v, specs, n, MF_PARAMS_AS_ARRAY(&dp), ""));
cleanup:
    mf_arena_release(a, mark);
    return st;
}

mf_status mf_verify_msa_transition(mf_ctx *ctx, const mf_module_vectors *v,
                                   mf_verify_report *report)
{
    return verify_transition(ctx, v, report, "m");
}

mf_status mf_verify_pair_transition(mf_ctx *ctx, const mf_module_vectors *v,
                                    mf_verify_report *report)
{
    return verify_transition(ctx, v, report, "z");
}

mf_status mf_verify_outer_product_mean(mf_ctx *ctx, const mf_module_vectors *v,
                                       mf_verify_report *report)
{
    MF_TRY(mf_verify_require_cpu(ctx, "outer_product_mean"));
    mf_tensor m, mask, gout;
    MF_TRY(mf_verify_vector_tensor(v, &v->inputs, "inputs", "m", &m));
    MF_TRY(mf_verify_vector_tensor(v, &v->inputs, "inputs", "msa_mask", &mask));
    MF_TRY(mf_verify_vector_tensor(v, &v->grad_outputs, "grad_outputs", "update", &gout));
    MF_REQUIRE(m.ndim == 3, "%s: inputs/m must be [S, N, c_m]", v->path);
    mf_outer_product_mean_dims d = {.c_m = m.shape[2]};
    MF_TRY(weight_dim(v, "left_projection||weights", 1, &d.c_hidden));
    MF_TRY(weight_dim(v, "|output_b", 0, &d.c_z));
    mf_param_spec specs[MAX_PARAMS];
    const int n = mf_outer_product_mean_param_specs(&d, specs);
    mf_outer_product_mean_params p, dp;
    mf_arena *a = ctx->arena;
    mf_arena_mark_t mark = mf_arena_mark(a);
    mf_status st = MF_OK;
    mf_tensor out, dm;
    mf_outer_product_mean_saved saved;
    MF_TRY_GOTO(bind(ctx, v, specs, n, MF_PARAMS_AS_ARRAY(&p), MF_PARAMS_AS_ARRAY(&dp)));
    MF_TRY_GOTO(mf_arena_zeros(a, &out, MF_F32, 3, (const int64_t[]){m.shape[1], m.shape[1], d.c_z},
                               "verify.update"));
    MF_TRY_GOTO(mf_arena_zeros(a, &dm, MF_F32, 3, m.shape, "verify.dm"));
    MF_TRY_GOTO(mf_outer_product_mean_forward(ctx, &out, false, &saved, &m, &mask, &p, &d));
    MF_TRY_GOTO(mf_outer_product_mean_backward(ctx, &dm, &dp, &gout, &saved, &m, &mask, &p, &d));
    MF_TRY_GOTO(mf_verify_compare_tensor(report, v, "outputs", "update", &out));
    MF_TRY_GOTO(mf_verify_compare_tensor(report, v, "grads_inputs", "m", &dm));
    MF_TRY_GOTO(mf_params_verify_grads(report, v, specs, n, MF_PARAMS_AS_ARRAY(&dp), ""));
cleanup:
    mf_arena_release(a, mark);
    return st;
}

static mf_status verify_triangle_multiplication(mf_ctx *ctx, const mf_module_vectors *v,
                                                mf_verify_report *report, bool outgoing)
{
    MF_TRY(mf_verify_require_cpu(ctx, "triangle_multiplication"));
    mf_tensor z, mask, gout;
    MF_TRY(mf_verify_vector_tensor(v, &v->inputs, "inputs", "z", &z));
    MF_TRY(mf_verify_vector_tensor(v, &v->inputs, "inputs", "pair_mask", &mask));
    MF_TRY(mf_verify_vector_tensor(v, &v->grad_outputs, "grad_outputs", "update", &gout));
    MF_REQUIRE(z.ndim == 3, "%s: inputs/z must be [N, N, c_z]", v->path);
    mf_triangle_multiplication_dims d = {.c_z = z.shape[2], .outgoing = outgoing};
    MF_TRY(weight_dim(v, "left_projection||weights", 1, &d.c_hidden));
    mf_param_spec specs[MAX_PARAMS];
    const int n = mf_triangle_multiplication_param_specs(&d, specs);
    mf_triangle_multiplication_params p, dp;
    mf_arena *a = ctx->arena;
    mf_arena_mark_t mark = mf_arena_mark(a);
    mf_status st = MF_OK;
    mf_tensor out, dz;
    mf_triangle_multiplication_saved saved;
    MF_TRY_GOTO(bind(ctx, v, specs, n, MF_PARAMS_AS_ARRAY(&p), MF_PARAMS_AS_ARRAY(&dp)));
    MF_TRY_GOTO(mf_arena_zeros(a, &out, MF_F32, 3, z.shape, "verify.update"));
    MF_TRY_GOTO(mf_arena_zeros(a, &dz, MF_F32, 3, z.shape, "verify.dz"));
    MF_TRY_GOTO(mf_triangle_multiplication_forward(ctx, &out, false, &saved, &z, &mask, &p, &d));
    MF_TRY_GOTO(
        mf_triangle_multiplication_backward(ctx, &dz, &dp, &gout, &saved, &z, &mask, &p, &d));
    MF_TRY_GOTO(mf_verify_compare_tensor(report, v, "outputs", "update", &out));
    MF_TRY_GOTO(mf_verify_compare_tensor(report, v, "grads_inputs", "z", &dz));
    MF_TRY_GOTO(mf_params_verify_grads(report, v, specs, n, MF_PARAMS_AS_ARRAY(&dp), ""));
cleanup:
    mf_arena_release(a, mark);
    return st;
}

mf_status mf_verify_triangle_multiplication_outgoing(mf_ctx *ctx, const mf_module_vectors *v,
                                                     mf_verify_report *report)
{
    return verify_triangle_multiplication(ctx, v, report, true);
}

mf_status mf_verify_triangle_multiplication_incoming(mf_ctx *ctx, const mf_module_vectors *v,
                                                     mf_verify_report *report)
{
    return verify_triangle_multiplication(ctx, v, report, false);
}
