/* Reference-vector verifier of the Evoformer block (see verify_evoformer_block.h). */
#include "evoformer/verify_evoformer_block.h"

#include "evoformer/evoformer_block.h"

/* Extent `axis` of weights/<name> ('|'-escaped). */
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

static mf_status factor_of(const mf_module_vectors *v, const char *name, int64_t c, int64_t *factor)
{
    int64_t hidden;
    MF_TRY(weight_dim(v, name, 1, &hidden));
    if (c <= 0 || hidden % c)
        return MF_ERROR(MF_ERR_FORMAT, "%s: weights/%s width %lld is not a multiple of %lld",
                        v->path, name, (long long)hidden, (long long)c);
    *factor = hidden / c;
    return MF_OK;
}

/* The block's sizes from the inputs and weight shapes; dropout off (the vectors have none). */
static mf_status dims_from_vectors(const mf_module_vectors *v, const mf_tensor *m,
                                   const mf_tensor *z, mf_evoformer_block_dims *d)
{
    mf_evoformer_stack_config s = {0};
    MF_TRY(weight_dim(v, "msa_row_attention_with_pair_bias|attention||query_w", 1,
                      &s.msa_row_attention.num_heads));
    MF_TRY(weight_dim(v, "msa_row_attention_with_pair_bias|attention||query_w", 2,
                      &s.msa_row_attention.c_hidden));
    MF_TRY(weight_dim(v, "msa_column_attention|attention||query_w", 1,
                      &s.msa_column_attention.num_heads));
    MF_TRY(weight_dim(v, "msa_column_attention|attention||query_w", 2,
                      &s.msa_column_attention.c_hidden));
    MF_TRY(
        factor_of(v, "msa_transition|transition1||weights", m->shape[2], &s.msa_transition_factor));
    MF_TRY(weight_dim(v, "outer_product_mean|left_projection||weights", 1,
                      &s.outer_product_mean_c_hidden));
    MF_TRY(weight_dim(v, "triangle_multiplication_outgoing|left_projection||weights", 1,
                      &s.triangle_multiplication_c_hidden));
    MF_TRY(weight_dim(v, "triangle_attention_starting_node|attention||query_w", 1,
                      &s.triangle_attention.num_heads));
    MF_TRY(weight_dim(v, "triangle_attention_starting_node|attention||query_w", 2,
                      &s.triangle_attention.c_hidden));
    MF_TRY(factor_of(v, "pair_transition|transition1||weights", z->shape[2],
                     &s.pair_transition_factor));
    *d = mf_evoformer_block_dims_from_config(&s, m->shape[2], z->shape[2]);
    return MF_OK;
}

mf_status mf_verify_evoformer_block(mf_ctx *ctx, const mf_module_vectors *v,
                                    mf_verify_report *report)
{
    MF_REQUIRE(ctx && ctx->arena && v && report, "evoformer_block verifier: arguments required");
    if (ctx->device != MF_DEV_CPU || ctx->arena->device != MF_DEV_CPU)
        return MF_ERROR(MF_ERR_UNSUPPORTED, "evoformer_block verifier runs on a CPU context");
    mf_tensor m, z, msa_mask, pair_mask, gm, gz;
    MF_TRY(mf_verify_vector_tensor(v, &v->inputs, "inputs", "m", &m));
    MF_TRY(mf_verify_vector_tensor(v, &v->inputs, "inputs", "z", &z));
    MF_TRY(mf_verify_vector_tensor(v, &v->inputs, "inputs", "msa_mask", &msa_mask));
    MF_TRY(mf_verify_vector_tensor(v, &v->inputs, "inputs", "pair_mask", &pair_mask));
    MF_TRY(mf_verify_vector_tensor(v, &v->grad_outputs, "grad_outputs", "m", &gm));
    MF_TRY(mf_verify_vector_tensor(v, &v->grad_outputs, "grad_outputs", "z", &gz));
    MF_REQUIRE(m.ndim == 3 && z.ndim == 3, "%s: inputs m, z must be 3-D", v->path);
    mf_evoformer_block_dims d;
    MF_TRY(dims_from_vectors(v, &m, &z, &d));
    mf_param_spec specs[MF_EVOFORMER_BLOCK_NPARAMS];
    const int n = mf_evoformer_block_param_specs(&d, specs);
    MF_REQUIRE(n == MF_EVOFORMER_BLOCK_NPARAMS, "evoformer_block: %d specs for %d parameters", n,
               MF_EVOFORMER_BLOCK_NPARAMS);
    mf_evoformer_block_params p, dp;
    mf_arena *a = ctx->arena;
    mf_arena_mark_t mark = mf_arena_mark(a);
    mf_status st = MF_OK;
    mf_tensor m_out, z_out, dm, dz;
    mf_evoformer_block_saved saved;
    MF_TRY_GOTO(mf_params_bind_vectors(specs, n, MF_PARAMS_AS_ARRAY(&p), v, ""));
    MF_TRY_GOTO(mf_params_alloc(a, specs, n, MF_PARAMS_AS_ARRAY(&dp), "verify.grads"));
    MF_TRY_GOTO(mf_arena_zeros(a, &m_out, MF_F32, 3, m.shape, "verify.m"));
    MF_TRY_GOTO(mf_arena_zeros(a, &z_out, MF_F32, 3, z.shape, "verify.z"));
    MF_TRY_GOTO(mf_arena_zeros(a, &dm, MF_F32, 3, m.shape, "verify.dm"));
    MF_TRY_GOTO(mf_arena_zeros(a, &dz, MF_F32, 3, z.shape, "verify.dz"));
    const mf_dropout_key key = mf_dropout_key_inference();
    MF_TRY_GOTO(mf_evoformer_block_forward(ctx, &m_out, &z_out, &saved, &m, &z, &msa_mask,
                                           &pair_mask, &p, &d, &key));
    MF_TRY_GOTO(mf_evoformer_block_backward(ctx, &dm, &dz, &dp, &gm, &gz, &saved, &msa_mask,
                                            &pair_mask, &p, &d));
    MF_TRY_GOTO(mf_verify_compare_tensor(report, v, "outputs", "m", &m_out));
    MF_TRY_GOTO(mf_verify_compare_tensor(report, v, "outputs", "z", &z_out));
    MF_TRY_GOTO(mf_verify_compare_tensor(report, v, "grads_inputs", "m", &dm));
    MF_TRY_GOTO(mf_verify_compare_tensor(report, v, "grads_inputs", "z", &dz));
    MF_TRY_GOTO(mf_params_verify_grads(report, v, specs, n, MF_PARAMS_AS_ARRAY(&dp), ""));
cleanup:
    mf_arena_release(a, mark);
    return st;
}
