/* Reference-vector verifiers for the MSA and triangle attention modules (see
 * verify_evoformer_attention.h). */
#include "evoformer/verify_evoformer_attention.h"

#include "evoformer/msa_attention.h"
#include "evoformer/triangle_attention.h"

#define MAX_PARAMS 16

/* Heads and channels per head from weights/attention||query_w [c, H, c_hidden]. */
static mf_status heads_from_query_w(const mf_module_vectors *v, int64_t *num_heads,
                                    int64_t *c_hidden)
{
    mf_tensor w;
    MF_TRY(mf_verify_vector_tensor(v, &v->weights, "weights", "attention||query_w", &w));
    if (w.ndim != 3)
        return MF_ERROR(MF_ERR_FORMAT, "%s: weights/attention||query_w must be [c, H, c_hidden]",
                        v->path);
    *num_heads = w.shape[1];
    *c_hidden = w.shape[2];
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

mf_status mf_verify_msa_row_attention_with_pair_bias(mf_ctx *ctx, const mf_module_vectors *v,
                                                     mf_verify_report *report)
{
    MF_TRY(mf_verify_require_cpu(ctx, "msa_row_attention_with_pair_bias"));
    mf_tensor m, z, mask, gout;
    MF_TRY(mf_verify_vector_tensor(v, &v->inputs, "inputs", "m", &m));
    MF_TRY(mf_verify_vector_tensor(v, &v->inputs, "inputs", "z", &z));
    MF_TRY(mf_verify_vector_tensor(v, &v->inputs, "inputs", "msa_mask", &mask));
    MF_TRY(mf_verify_vector_tensor(v, &v->grad_outputs, "grad_outputs", "update", &gout));
    MF_REQUIRE(m.ndim == 3 && z.ndim == 3, "%s: inputs/m, z must be 3-D", v->path);
    mf_msa_row_attention_dims d = {.c_m = m.shape[2], .c_z = z.shape[2]};
    MF_TRY(heads_from_query_w(v, &d.num_heads, &d.c_hidden));
    mf_param_spec specs[MAX_PARAMS];
    const int n = mf_msa_row_attention_param_specs(&d, specs);
    mf_msa_row_attention_params p, dp;
    mf_arena *a = ctx->arena;
    mf_arena_mark_t mark = mf_arena_mark(a);
    mf_status st = MF_OK;
    mf_tensor out, dm, dz;
    mf_msa_row_attention_saved saved;
    MF_TRY_GOTO(bind(ctx, v, specs, n, MF_PARAMS_AS_ARRAY(&p), MF_PARAMS_AS_ARRAY(&dp)));
    MF_TRY_GOTO(mf_arena_zeros(a, &out, MF_F32, 3, m.shape, "verify.update"));
    MF_TRY_GOTO(mf_arena_zeros(a, &dm, MF_F32, 3, m.shape, "verify.dm"));
    MF_TRY_GOTO(mf_arena_zeros(a, &dz, MF_F32, 3, z.shape, "verify.dz"));
    MF_TRY_GOTO(mf_msa_row_attention_with_pair_bias_forward(ctx, &out, false, &saved, &m, &z, &mask,
                                                            &p, &d));
    MF_TRY_GOTO(mf_msa_row_attention_with_pair_bias_backward(ctx, &dm, &dz, &dp, &gout, &saved, &m,
                                                             &z, &mask, &p, &d));
    MF_TRY_GOTO(mf_verify_compare_tensor(report, v, "outputs", "update", &out));
    MF_TRY_GOTO(mf_verify_compare_tensor(report, v, "grads_inputs", "m", &dm));
    MF_TRY_GOTO(mf_verify_compare_tensor(report, v, "grads_inputs", "z", &dz));
    MF_TRY_GOTO(mf_params_verify_grads(report, v, specs, n, MF_PARAMS_AS_ARRAY(&dp), ""));
cleanup:
    mf_arena_release(a, mark);
    return st;
}

mf_status mf_verify_msa_column_attention(mf_ctx *ctx, const mf_module_vectors *v,
                                         mf_verify_report *report)
{
    MF_TRY(mf_verify_require_cpu(ctx, "msa_column_attention"));
    mf_tensor m, mask, gout;
    MF_TRY(mf_verify_vector_tensor(v, &v->inputs, "inputs", "m", &m));
    MF_TRY(mf_verify_vector_tensor(v, &v->inputs, "inputs", "msa_mask", &mask));
    MF_TRY(mf_verify_vector_tensor(v, &v->grad_outputs, "grad_outputs", "update", &gout));
    MF_REQUIRE(m.ndim == 3, "%s: inputs/m must be [S, N, c_m]", v->path);
    mf_msa_column_attention_dims d = {.c_m = m.shape[2]};
    MF_TRY(heads_from_query_w(v, &d.num_heads, &d.c_hidden));
    mf_param_spec specs[MAX_PARAMS];
    const int n = mf_msa_column_attention_param_specs(&d, specs);
    mf_msa_column_attention_params p, dp;
    mf_arena *a = ctx->arena;
    mf_arena_mark_t mark = mf_arena_mark(a);
    mf_status st = MF_OK;
    mf_tensor out, dm;
    mf_msa_column_attention_saved saved;
    MF_TRY_GOTO(bind(ctx, v, specs, n, MF_PARAMS_AS_ARRAY(&p), MF_PARAMS_AS_ARRAY(&dp)));
    MF_TRY_GOTO(mf_arena_zeros(a, &out, MF_F32, 3, m.shape, "verify.update"));
    MF_TRY_GOTO(mf_arena_zeros(a, &dm, MF_F32, 3, m.shape, "verify.dm"));
    MF_TRY_GOTO(mf_msa_column_attention_forward(ctx, &out, false, &saved, &m, &mask, &p, &d));
    MF_TRY_GOTO(mf_msa_column_attention_backward(ctx, &dm, &dp, &gout, &saved, &m, &mask, &p, &d));
    MF_TRY_GOTO(mf_verify_compare_tensor(report, v, "outputs", "update", &out));
    MF_TRY_GOTO(mf_verify_compare_tensor(report, v, "grads_inputs", "m", &dm));
    MF_TRY_GOTO(mf_params_verify_grads(report, v, specs, n, MF_PARAMS_AS_ARRAY(&dp), ""));
cleanup:
    mf_arena_release(a, mark);
    return st;
}

mf_status mf_verify_msa_column_global_attention(mf_ctx *ctx, const mf_module_vectors *v,
                                                mf_verify_report *report)
{
    MF_TRY(mf_verify_require_cpu(ctx, "msa_column_global_attention"));
    mf_tensor m, mask, gout;
    MF_TRY(mf_verify_vector_tensor(v, &v->inputs, "inputs", "m", &m));
    MF_TRY(mf_verify_vector_tensor(v, &v->inputs, "inputs", "msa_mask", &mask));
    MF_TRY(mf_verify_vector_tensor(v, &v->grad_outputs, "grad_outputs", "update", &gout));
    MF_REQUIRE(m.ndim == 3, "%s: inputs/m must be [S, N, c_e]", v->path);
    mf_msa_column_global_attention_dims d = {.c_m = m.shape[2]};
    MF_TRY(heads_from_query_w(v, &d.num_heads, &d.c_hidden));
    mf_param_spec specs[MAX_PARAMS];
    const int n = mf_msa_column_global_attention_param_specs(&d, specs);
    mf_msa_column_global_attention_params p, dp;
    mf_arena *a = ctx->arena;
    mf_arena_mark_t mark = mf_arena_mark(a);
    mf_status st = MF_OK;
    mf_tensor out, dm;
    mf_msa_column_global_attention_saved saved;
    MF_TRY_GOTO(bind(ctx, v, specs, n, MF_PARAMS_AS_ARRAY(&p), MF_PARAMS_AS_ARRAY(&dp)));
    MF_TRY_GOTO(mf_arena_zeros(a, &out, MF_F32, 3, m.shape, "verify.update"));
    MF_TRY_GOTO(mf_arena_zeros(a, &dm, MF_F32, 3, m.shape, "verify.dm"));
    MF_TRY_GOTO(
        mf_msa_column_global_attention_forward(ctx, &out, false, &saved, &m, &mask, &p, &d));
    MF_TRY_GOTO(
        mf_msa_column_global_attention_backward(ctx, &dm, &dp, &gout, &saved, &m, &mask, &p, &d));
    MF_TRY_GOTO(mf_verify_compare_tensor(report, v, "outputs", "update", &out));
    MF_TRY_GOTO(mf_verify_compare_tensor(report, v, "grads_inputs", "m", &dm));
    MF_TRY_GOTO(mf_params_verify_grads(report, v, specs, n, MF_PARAMS_AS_ARRAY(&dp), ""));
cleanup:
    mf_arena_release(a, mark);
    return st;
}

static mf_status verify_triangle_attention(mf_ctx *ctx, const mf_module_vectors *v,
                                           mf_verify_report *report, bool ending)
{
    MF_TRY(mf_verify_require_cpu(ctx, "triangle_attention"));
    mf_tensor z, mask, gout;
    MF_TRY(mf_verify_vector_tensor(v, &v->inputs, "inputs", "z", &z));
    MF_TRY(mf_verify_vector_tensor(v, &v->inputs, "inputs", "pair_mask", &mask));
    MF_TRY(mf_verify_vector_tensor(v, &v->grad_outputs, "grad_outputs", "update", &gout));
    MF_REQUIRE(z.ndim == 3, "%s: inputs/z must be [N, N, c_z]", v->path);
    mf_triangle_attention_dims d = {.c_z = z.shape[2]};
    MF_TRY(heads_from_query_w(v, &d.num_heads, &d.c_hidden));
    mf_param_spec specs[MAX_PARAMS];
    const int n = mf_triangle_attention_param_specs(&d, specs);
    mf_triangle_attention_params p, dp;
    mf_arena *a = ctx->arena;
    mf_arena_mark_t mark = mf_arena_mark(a);
    mf_status st = MF_OK;
    mf_tensor out, dz;
    mf_triangle_attention_saved saved;
    MF_TRY_GOTO(bind(ctx, v, specs, n, MF_PARAMS_AS_ARRAY(&p), MF_PARAMS_AS_ARRAY(&dp)));
    MF_TRY_GOTO(mf_arena_zeros(a, &out, MF_F32, 3, z.shape, "verify.update"));
    MF_TRY_GOTO(mf_arena_zeros(a, &dz, MF_F32, 3, z.shape, "verify.dz"));
    if (ending) {
        MF_TRY_GOTO(
            mf_triangle_attention_ending_node_forward(ctx, &out, false, &saved, &z, &mask, &p, &d));
        MF_TRY_GOTO(mf_triangle_attention_ending_node_backward(ctx, &dz, &dp, &gout, &saved, &z,
                                                               &mask, &p, &d));
    } else {
        MF_TRY_GOTO(mf_triangle_attention_starting_node_forward(ctx, &out, false, &saved, &z, &mask,
                                                                &p, &d));
        MF_TRY_GOTO(mf_triangle_attention_starting_node_backward(ctx, &dz, &dp, &gout, &saved, &z,
                                                                 &mask, &p, &d));
    }
    MF_TRY_GOTO(mf_verify_compare_tensor(report, v, "outputs", "update", &out));
    MF_TRY_GOTO(mf_verify_compare_tensor(report, v, "grads_inputs", "z", &dz));
    MF_TRY_GOTO(mf_params_verify_grads(report, v, specs, n, MF_PARAMS_AS_ARRAY(&dp), ""));
cleanup:
    mf_arena_release(a, mark);
    return st;
}

mf_status mf_verify_triangle_attention_starting_node(mf_ctx *ctx, const mf_module_vectors *v,
                                                     mf_verify_report *report)
{
    return verify_triangle_attention(ctx, v, report, false);
}

mf_status mf_verify_triangle_attention_ending_node(mf_ctx *ctx, const mf_module_vectors *v,
                                                   mf_verify_report *report)
{
    return verify_triangle_attention(ctx, v, report, true);
}
