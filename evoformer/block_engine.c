/* Residual blocks of module updates with shared dropout and recomputation (see block_engine.h). */
#include "evoformer/block_engine.h"

#include "core/ops.h"
#include "memopt/saved.h"

enum { STREAM_M = 0, STREAM_Z = 1 };

static int target_stream(mf_evo_step_kind k)
{
    return k <= MF_EVO_STEP_MSA_TRANSITION ? STREAM_M : STREAM_Z;
}

/* Whether the module reads the stream it updates (all but the outer product mean, which reads m
 * and updates z). */
static bool reads_target(mf_evo_step_kind k)
{
    return k != MF_EVO_STEP_OUTER_PRODUCT_MEAN;
}

/* The policy's per-module chunk sizes (memopt/policy.h) follow the step kinds' order. */
_Static_assert((int)MF_EVO_STEP_MSA_ROW_ATTENTION == (int)MF_CHUNK_MSA_ROW_ATTENTION &&
                   (int)MF_EVO_STEP_MSA_COLUMN_GLOBAL_ATTENTION ==
                       (int)MF_CHUNK_MSA_COLUMN_GLOBAL_ATTENTION &&
                   (int)MF_EVO_STEP_OUTER_PRODUCT_MEAN == (int)MF_CHUNK_OUTER_PRODUCT_MEAN &&
                   (int)MF_EVO_STEP_TRIANGLE_ATTENTION_ENDING_NODE ==
                       (int)MF_CHUNK_TRIANGLE_ATTENTION_ENDING_NODE &&
                   (int)MF_EVO_STEP_PAIR_TRANSITION == (int)MF_CHUNK_PAIR_TRANSITION,
               "step kinds and mf_chunk_op out of step");

/* ctx with the chunk size of the step's module (policy.op_chunk, else policy.chunk_size). */
static mf_ctx step_ctx(const mf_ctx *ctx, const mf_evo_step *s)
{
    mf_ctx local = *ctx;
    local.policy.chunk_size = mf_policy_op_chunk(&ctx->policy, (mf_chunk_op)s->kind);
    return local;
}

static mf_status module_forward(mf_ctx *ctx0, const mf_evo_block *b, const mf_evo_step *s,
                                mf_tensor *out, bool accumulate, mf_evo_module_saved *sv,
                                const mf_tensor *m, const mf_tensor *z)
{
    mf_ctx local = step_ctx(ctx0, s), *ctx = &local;
    switch (s->kind) {
    case MF_EVO_STEP_MSA_ROW_ATTENTION:
        return mf_msa_row_attention_with_pair_bias_forward(
            ctx, out, accumulate, sv ? &sv->msa_row : NULL, m, z, b->msa_mask, s->params, s->dims);
    case MF_EVO_STEP_MSA_COLUMN_ATTENTION:
        return mf_msa_column_attention_forward(ctx, out, accumulate, sv ? &sv->msa_column : NULL, m,
                                               b->msa_mask, s->params, s->dims);
    case MF_EVO_STEP_MSA_COLUMN_GLOBAL_ATTENTION:
        return mf_msa_column_global_attention_forward(ctx, out, accumulate,
                                                      sv ? &sv->msa_column_global : NULL, m,
                                                      b->msa_mask, s->params, s->dims);
    case MF_EVO_STEP_MSA_TRANSITION:
        return mf_transition_forward(ctx, out, accumulate, sv ? &sv->transition : NULL, m,
                                     s->params, s->dims);
    case MF_EVO_STEP_OUTER_PRODUCT_MEAN:
        return mf_outer_product_mean_forward(ctx, out, accumulate,
                                             sv ? &sv->outer_product_mean : NULL, m, b->msa_mask,
                                             s->params, s->dims);
    case MF_EVO_STEP_TRIANGLE_MULTIPLICATION:
        return mf_triangle_multiplication_forward(ctx, out, accumulate,
                                                  sv ? &sv->triangle_multiplication : NULL, z,
                                                  b->pair_mask, s->params, s->dims);
    case MF_EVO_STEP_TRIANGLE_ATTENTION_STARTING_NODE:
        return mf_triangle_attention_starting_node_forward(ctx, out, accumulate,
                                                           sv ? &sv->triangle_attention : NULL, z,
                                                           b->pair_mask, s->params, s->dims);
    case MF_EVO_STEP_TRIANGLE_ATTENTION_ENDING_NODE:
        return mf_triangle_attention_ending_node_forward(ctx, out, accumulate,
                                                         sv ? &sv->triangle_attention : NULL, z,
                                                         b->pair_mask, s->params, s->dims);
    case MF_EVO_STEP_PAIR_TRANSITION:
        return mf_transition_forward(ctx, out, accumulate, sv ? &sv->transition : NULL, z,
                                     s->params, s->dims);
    }
    return MF_ERROR(MF_ERR_INVALID, "%s: unknown step kind %d", b->name, (int)s->kind);
}

/* dm, dz: the gradients of the module's inputs m and z (accumulated; the module uses those of
 * the inputs it has). */
static mf_status module_backward(mf_ctx *ctx0, const mf_evo_block *b, const mf_evo_step *s,
                                 mf_tensor *dm, mf_tensor *dz, const mf_tensor *dout,
                                 const mf_evo_module_saved *sv, const mf_tensor *m,
                                 const mf_tensor *z)
{
    mf_ctx local = step_ctx(ctx0, s), *ctx = &local;
    switch (s->kind) {
    case MF_EVO_STEP_MSA_ROW_ATTENTION:
        return mf_msa_row_attention_with_pair_bias_backward(
            ctx, dm, dz, s->dparams, dout, &sv->msa_row, m, z, b->msa_mask, s->params, s->dims);
    case MF_EVO_STEP_MSA_COLUMN_ATTENTION:
        return mf_msa_column_attention_backward(ctx, dm, s->dparams, dout, &sv->msa_column, m,
                                                b->msa_mask, s->params, s->dims);
    case MF_EVO_STEP_MSA_COLUMN_GLOBAL_ATTENTION:
        return mf_msa_column_global_attention_backward(
            ctx, dm, s->dparams, dout, &sv->msa_column_global, m, b->msa_mask, s->params, s->dims);
    case MF_EVO_STEP_MSA_TRANSITION:
        return mf_transition_backward(ctx, dm, s->dparams, dout, &sv->transition, m, s->params,
                                      s->dims);
    case MF_EVO_STEP_OUTER_PRODUCT_MEAN:
        return mf_outer_product_mean_backward(ctx, dm, s->dparams, dout, &sv->outer_product_mean, m,
                                              b->msa_mask, s->params, s->dims);
    case MF_EVO_STEP_TRIANGLE_MULTIPLICATION:
        return mf_triangle_multiplication_backward(ctx, dz, s->dparams, dout,
                                                   &sv->triangle_multiplication, z, b->pair_mask,
                                                   s->params, s->dims);
    case MF_EVO_STEP_TRIANGLE_ATTENTION_STARTING_NODE:
        return mf_triangle_attention_starting_node_backward(ctx, dz, s->dparams, dout,
                                                            &sv->triangle_attention, z,
                                                            b->pair_mask, s->params, s->dims);
    case MF_EVO_STEP_TRIANGLE_ATTENTION_ENDING_NODE:
        return mf_triangle_attention_ending_node_backward(ctx, dz, s->dparams, dout,
                                                          &sv->triangle_attention, z, b->pair_mask,
                                                          s->params, s->dims);
    case MF_EVO_STEP_PAIR_TRANSITION:
        return mf_transition_backward(ctx, dz, s->dparams, dout, &sv->transition, z, s->params,
                                      s->dims);
    }
    return MF_ERROR(MF_ERR_INVALID, "%s: unknown step kind %d", b->name, (int)s->kind);
}

static bool has_msa(const mf_evo_block *b)
{
    for (int i = 0; i < b->nsteps; i++)
        if (target_stream(b->steps[i].kind) == STREAM_M ||
            b->steps[i].kind == MF_EVO_STEP_OUTER_PRODUCT_MEAN)
            return true;
    return false;
}

static mf_status check_streams(const mf_ctx *ctx, const mf_evo_block *b, const mf_tensor *m_out,
                               const mf_tensor *z_out, const mf_tensor *m_in, const mf_tensor *z_in)
{
    MF_REQUIRE(ctx && ctx->arena && b, "evoformer block: ctx, arena and block required");
    MF_REQUIRE(b->nsteps > 0 && b->nsteps <= MF_EVO_MAX_STEPS, "%s: %d steps", b->name, b->nsteps);
    MF_REQUIRE(z_in && z_in->data && z_out && z_out->data, "%s: z_in and z_out required", b->name);
    MF_REQUIRE(z_in->dtype == MF_F32 || z_in->dtype == MF_F64,
               "%s: streams must be f32 or f64 (got %s)", b->name, mf_dtype_name(z_in->dtype));
    MF_TRY(mf_check_same_shape(z_out, "z_out", z_in, "z_in"));
    MF_REQUIRE(z_out->dtype == z_in->dtype, "%s: z_out and z_in dtypes differ", b->name);
    if (has_msa(b)) {
        MF_REQUIRE(m_in && m_in->data && m_out && m_out->data, "%s: m_in and m_out required",
                   b->name);
        MF_TRY(mf_check_same_shape(m_out, "m_out", m_in, "m_in"));
        MF_REQUIRE(m_in->dtype == z_in->dtype && m_out->dtype == z_in->dtype,
                   "%s: m and z dtypes differ", b->name);
        MF_REQUIRE(b->msa_mask, "%s: msa_mask required", b->name);
    }
    MF_REQUIRE(b->pair_mask, "%s: pair_mask required", b->name);
    return MF_OK;
}

static mf_status alloc_like(mf_ctx *ctx, mf_tensor *t, mf_dtype dt, const mf_tensor *like,
                            const char *label)
{
    return mf_arena_tensor(ctx->arena, t, dt, like->ndim, like->shape, label);
}

/* recompute off: keep every module's saved activations and the stream states. */
static mf_status forward_saving(mf_ctx *ctx, const mf_evo_block *b, mf_tensor *m_out,
                                mf_tensor *z_out, mf_evo_block_saved *saved, const mf_tensor *m_in,
                                const mf_tensor *z_in, const mf_dropout_key *key)
{
    const bool msa = has_msa(b);
    MF_REQUIRE(z_out->data != z_in->data && (!msa || m_out->data != m_in->data),
               "%s: with saved activations (recompute off) the outputs must not alias the inputs "
               "(the backward reads them)",
               b->name);
    int last[2] = {-1, -1};
    for (int i = 0; i < b->nsteps; i++) last[target_stream(b->steps[i].kind)] = i;
    mf_tensor cur[2] = {msa ? *m_in : (mf_tensor){0}, *z_in};
    mf_tensor *outs[2] = {m_out, z_out};
    for (int i = 0; i < b->nsteps; i++) {
        const mf_evo_step *s = &b->steps[i];
        const int t = target_stream(s->kind);
        saved->in_m[i] = cur[STREAM_M];
        saved->in_z[i] = cur[STREAM_Z];
        mf_tensor next;
        if (i == last[t])
            next = *outs[t];
        else
            MF_TRY(
                alloc_like(ctx, &next, cur[t].dtype, &cur[t],
                           t == STREAM_M ? "evoformer_block.m_state" : "evoformer_block.z_state"));
        MF_TRY(module_forward(ctx, b, s, &next, false, &saved->module[i], &cur[STREAM_M],
                              &cur[STREAM_Z]));
        MF_TRY(mf_dropout_forward(ctx, &next, s->dropout_rate, s->orientation, key,
                                  s->dropout_module));
        MF_TRY(mf_add(ctx, &next, &next, &cur[t]));
        cur[t] = next;
    }
    return MF_OK;
}

/* Forward without saving: in place on m_out, z_out (after copying the inputs there). */
static mf_status forward_only(mf_ctx *ctx, const mf_evo_block *b, mf_tensor *m_out,
                              mf_tensor *z_out, const mf_tensor *m_in, const mf_tensor *z_in,
                              const mf_dropout_key *key)
{
    const bool msa = has_msa(b);
    if (msa && m_out->data != m_in->data) MF_TRY(mf_convert(ctx, m_out, m_in));
    if (z_out->data != z_in->data) MF_TRY(mf_convert(ctx, z_out, z_in));
    mf_tensor *cur[2] = {msa ? m_out : NULL, z_out};
    for (int i = 0; i < b->nsteps; i++) {
        const mf_evo_step *s = &b->steps[i];
        mf_tensor *target = cur[target_stream(s->kind)];
        if (ctx->policy.inplace && !mf_dropout_active(key, s->dropout_rate)) {
            MF_TRY(module_forward(ctx, b, s, target, true, NULL, cur[STREAM_M], cur[STREAM_Z]));
            continue;
        }
        mf_arena_mark_t mark = mf_arena_mark(ctx->arena);
        mf_status st = MF_OK;
        mf_tensor u;
        MF_TRY_GOTO(alloc_like(ctx, &u, target->dtype, target, "evoformer_block.update"));
        MF_TRY_GOTO(module_forward(ctx, b, s, &u, false, NULL, cur[STREAM_M], cur[STREAM_Z]));
        MF_TRY_GOTO(
            mf_dropout_forward(ctx, &u, s->dropout_rate, s->orientation, key, s->dropout_module));
        MF_TRY_GOTO(mf_add(ctx, target, target, &u));
    cleanup:
        mf_arena_release(ctx->arena, mark);
        if (st != MF_OK) return st;
    }
    return MF_OK;
}

mf_status mf_evo_block_forward(mf_ctx *ctx, const mf_evo_block *b, mf_tensor *m_out,
                               mf_tensor *z_out, mf_evo_block_saved *saved, const mf_tensor *m_in,
                               const mf_tensor *z_in, const mf_dropout_key *key)
{
    MF_TRY(check_streams(ctx, b, m_out, z_out, m_in, z_in));
    const mf_dropout_key none = mf_dropout_key_inference();
    if (!key) key = &none;
    if (!saved) return forward_only(ctx, b, m_out, z_out, m_in, z_in, key);
    const bool msa = has_msa(b);
    const mf_dtype dt = z_in->dtype;
    mf_arena_mark_t mark = mf_arena_mark(ctx->arena);
    mf_status st = MF_OK;
    *saved = (mf_evo_block_saved){.dtype = dt, .key = *key};
    if (ctx->policy.recompute == MF_RECOMPUTE_OFF) {
        MF_TRY_GOTO(forward_saving(ctx, b, m_out, z_out, saved, m_in, z_in, key));
    } else {
        /* the checkpoint (storage precision; f64 runs keep f64; offloaded to the host arena
         * under policy.offload) is taken before m_out, which may be m_in, is written */
        if (msa)
            MF_TRY_GOTO(
                mf_save_checkpoint(ctx, &saved->ckpt_m, m_in, "evoformer_block.checkpoint"));
        MF_TRY_GOTO(mf_save_checkpoint(ctx, &saved->ckpt_z, z_in, "evoformer_block.checkpoint"));
        saved->checkpointed = true;
        MF_TRY_GOTO(forward_only(ctx, b, m_out, z_out, m_in, z_in, key));
    }
    saved->valid = true;
    return MF_OK;
cleanup:
    mf_arena_release(ctx->arena, mark);
    *saved = (mf_evo_block_saved){0};
    return st;
}

static mf_status copy_or_zero(mf_ctx *ctx, mf_tensor *dst, const mf_tensor *src)
{
    if (src && src->data) {
        MF_TRY(mf_check_same_shape(dst, "gradient buffer", src, "output gradient"));
        return mf_convert(ctx, dst, src);
    }
    return mf_fill(ctx, dst, 0.0f);
}

static mf_status backward_saved(mf_ctx *ctx, const mf_evo_block *b, mf_tensor *dm_in,
                                mf_tensor *dz_in, const mf_tensor *dm_out, const mf_tensor *dz_out,
                                const mf_evo_block_saved *saved)
{
    const bool msa = has_msa(b);
    const mf_dtype dt = saved->dtype;
    const mf_tensor *m0 = &saved->in_m[0], *z0 = &saved->in_z[0];
    mf_arena *a = ctx->arena;
    mf_arena_mark_t mark = mf_arena_mark(a);
    mf_status st = MF_OK;
    mf_tensor g[2][2] = {{{0}}}; /* [stream][buffer] */
    int cur[2] = {0, 0};
    for (int k = 0; k < 2; k++) {
        if (msa) MF_TRY_GOTO(alloc_like(ctx, &g[STREAM_M][k], dt, m0, "evoformer_block.dm"));
        MF_TRY_GOTO(alloc_like(ctx, &g[STREAM_Z][k], dt, z0, "evoformer_block.dz"));
    }
    if (msa) MF_TRY_GOTO(copy_or_zero(ctx, &g[STREAM_M][0], dm_out));
    MF_TRY_GOTO(copy_or_zero(ctx, &g[STREAM_Z][0], dz_out));
    for (int i = b->nsteps - 1; i >= 0; i--) {
        const mf_evo_step *s = &b->steps[i];
        const int t = target_stream(s->kind);
        mf_tensor *gcur = &g[t][cur[t]], *gother = &g[t][1 - cur[t]];
        mf_tensor *dm = msa ? &g[STREAM_M][cur[STREAM_M]] : NULL, *dz = &g[STREAM_Z][cur[STREAM_Z]];
        if (reads_target(s->kind)) {
            /* s' = s + D u(s): ds = ds' (copied into the other buffer) + u'^T (D ds') */
            MF_TRY_GOTO(mf_convert(ctx, gother, gcur));
            MF_TRY_GOTO(mf_dropout_forward(ctx, gcur, s->dropout_rate, s->orientation, &saved->key,
                                           s->dropout_module));
            if (t == STREAM_M)
                dm = gother;
            else
                dz = gother;
            MF_TRY_GOTO(module_backward(ctx, b, s, dm, dz, gcur, &saved->module[i], &saved->in_m[i],
                                        &saved->in_z[i]));
            cur[t] = 1 - cur[t];
        } else {
            /* z' = z + D u(m): dz = dz', dm += u'^T (D dz') */
            const mf_tensor *dout = gcur;
            if (mf_dropout_active(&saved->key, s->dropout_rate)) {
                MF_TRY_GOTO(mf_convert(ctx, gother, gcur));
                MF_TRY_GOTO(mf_dropout_forward(ctx, gother, s->dropout_rate, s->orientation,
                                               &saved->key, s->dropout_module));
                dout = gother;
            }
            MF_TRY_GOTO(module_backward(ctx, b, s, dm, NULL, dout, &saved->module[i],
                                        &saved->in_m[i], &saved->in_z[i]));
        }
    }
    if (msa && dm_in && dm_in->data) {
        MF_TRY_GOTO(mf_check_same_shape(dm_in, "dm_in", m0, "m_in"));
        MF_TRY_GOTO(mf_add(ctx, dm_in, dm_in, &g[STREAM_M][cur[STREAM_M]]));
    }
    if (dz_in && dz_in->data) {
        MF_TRY_GOTO(mf_check_same_shape(dz_in, "dz_in", z0, "z_in"));
        MF_TRY_GOTO(mf_add(ctx, dz_in, dz_in, &g[STREAM_Z][cur[STREAM_Z]]));
    }
cleanup:
    mf_arena_release(a, mark);
    return st;
}

mf_status mf_evo_block_backward(mf_ctx *ctx, const mf_evo_block *b, mf_tensor *dm_in,
                                mf_tensor *dz_in, const mf_tensor *dm_out, const mf_tensor *dz_out,
                                const mf_evo_block_saved *saved)
{
    MF_REQUIRE(ctx && ctx->arena && b, "evoformer block backward: ctx, arena and block required");
    MF_REQUIRE(saved && saved->valid, "%s backward: the forward's saved state is required",
               b->name);
    if (!saved->checkpointed) return backward_saved(ctx, b, dm_in, dz_in, dm_out, dz_out, saved);
    /* recompute: restore the inputs, rerun the forward with saving on, backpropagate */
    const bool msa = has_msa(b);
    const mf_dtype dt = saved->dtype;
    mf_arena *a = ctx->arena;
    mf_arena_mark_t mark = mf_arena_mark(a);
    mf_status st = MF_OK;
    mf_tensor m0 = {0}, z0, m1 = {0}, z1;
    if (msa) {
        MF_TRY_GOTO(alloc_like(ctx, &m0, dt, &saved->ckpt_m, "evoformer_block.m_state"));
        MF_TRY_GOTO(mf_restore_checkpoint(ctx, &m0, &saved->ckpt_m, "evoformer_block.m_state"));
        MF_TRY_GOTO(alloc_like(ctx, &m1, dt, &saved->ckpt_m, "evoformer_block.m_state"));
    }
    MF_TRY_GOTO(alloc_like(ctx, &z0, dt, &saved->ckpt_z, "evoformer_block.z_state"));
    MF_TRY_GOTO(mf_restore_checkpoint(ctx, &z0, &saved->ckpt_z, "evoformer_block.z_state"));
    MF_TRY_GOTO(alloc_like(ctx, &z1, dt, &saved->ckpt_z, "evoformer_block.z_state"));
    mf_ctx local = *ctx;
    local.policy.recompute = MF_RECOMPUTE_OFF;
    mf_evo_block_saved inner;
    MF_TRY_GOTO(mf_evo_block_forward(&local, b, msa ? &m1 : NULL, &z1, &inner, msa ? &m0 : NULL,
                                     &z0, &saved->key));
    MF_TRY_GOTO(backward_saved(&local, b, dm_in, dz_in, dm_out, dz_out, &inner));
cleanup:
    mf_arena_release(a, mark);
    return st;
}

mf_status mf_evo_params_block_view(const mf_tensor *stacked, int n, int64_t num_blocks,
                                   int64_t block, mf_tensor *out)
{
    MF_REQUIRE(block >= 0 && block < num_blocks, "block %lld outside [0, %lld)", (long long)block,
               (long long)num_blocks);
    for (int i = 0; i < n; i++) {
        const mf_tensor *t = &stacked[i];
        if (!t->data) {
            out[i] = (mf_tensor){0};
            continue;
        }
        char buf[96];
        MF_REQUIRE(t->ndim >= 2 && t->shape[0] == num_blocks,
                   "stacked parameter %d is %s, expected a leading axis of %lld blocks", i,
                   mf_tensor_describe(t, buf, sizeof buf), (long long)num_blocks);
        mf_tensor v = mf_tensor_slice0(t, block, 1);
        v.ndim = t->ndim - 1;
        for (int k = 0; k + 1 < MF_MAX_DIMS; k++) v.shape[k] = t->shape[k + 1];
        v.shape[MF_MAX_DIMS - 1] = 1;
        out[i] = v;
    }
    return MF_OK;
}

static int copy_specs(mf_param_spec *out, const mf_param_spec *specs, int n)
{
    if (out)
        for (int i = 0; i < n; i++) out[i] = specs[i];
    return n;
}

/* Each module's table with its scope glued on by string-literal concatenation. */
#define MF_PARAM(field, name, init, fan_in, ndim, dims)                                            \
    MF_PARAM_SPEC(field, MF_EVO_SCOPE_NAME name, init, fan_in, ndim, dims)
static int specs_msa_row(const mf_msa_row_attention_dims *d, mf_param_spec *out)
{
    const mf_param_spec specs[] = {
#define MF_EVO_SCOPE_NAME "msa_row_attention_with_pair_bias/"
#include "evoformer/msa_row_attention_with_pair_bias.def"
#undef MF_EVO_SCOPE_NAME
    };
    return copy_specs(out, specs, (int)(sizeof specs / sizeof specs[0]));
}

static int specs_msa_column(const mf_msa_column_attention_dims *d, mf_param_spec *out)
{
    const mf_param_spec specs[] = {
#define MF_EVO_SCOPE_NAME "msa_column_attention/"
#include "evoformer/msa_column_attention.def"
#undef MF_EVO_SCOPE_NAME
    };
    return copy_specs(out, specs, (int)(sizeof specs / sizeof specs[0]));
}

static int specs_msa_column_global(const mf_msa_column_global_attention_dims *d, mf_param_spec *out)
{
    const mf_param_spec specs[] = {
#define MF_EVO_SCOPE_NAME "msa_column_global_attention/"
#include "evoformer/msa_column_global_attention.def"
#undef MF_EVO_SCOPE_NAME
    };
    return copy_specs(out, specs, (int)(sizeof specs / sizeof specs[0]));
}

static int specs_msa_transition(const mf_transition_dims *d, mf_param_spec *out)
{
    const mf_param_spec specs[] = {
#define MF_EVO_SCOPE_NAME "msa_transition/"
#include "evoformer/transition.def"
#undef MF_EVO_SCOPE_NAME
    };
    return copy_specs(out, specs, (int)(sizeof specs / sizeof specs[0]));
}

static int specs_pair_transition(const mf_transition_dims *d, mf_param_spec *out)
{
    const mf_param_spec specs[] = {
#define MF_EVO_SCOPE_NAME "pair_transition/"
#include "evoformer/transition.def"
#undef MF_EVO_SCOPE_NAME
    };
    return copy_specs(out, specs, (int)(sizeof specs / sizeof specs[0]));
}

static int specs_outer_product_mean(const mf_outer_product_mean_dims *d, mf_param_spec *out)
{
    const mf_param_spec specs[] = {
#define MF_EVO_SCOPE_NAME "outer_product_mean/"
#include "evoformer/outer_product_mean.def"
#undef MF_EVO_SCOPE_NAME
    };
    return copy_specs(out, specs, (int)(sizeof specs / sizeof specs[0]));
}

static int specs_tri_mul_out(const mf_triangle_multiplication_dims *d, mf_param_spec *out)
{
    const mf_param_spec specs[] = {
#define MF_EVO_SCOPE_NAME "triangle_multiplication_outgoing/"
#include "evoformer/triangle_multiplication.def"
#undef MF_EVO_SCOPE_NAME
    };
    return copy_specs(out, specs, (int)(sizeof specs / sizeof specs[0]));
}

static int specs_tri_mul_in(const mf_triangle_multiplication_dims *d, mf_param_spec *out)
{
    const mf_param_spec specs[] = {
#define MF_EVO_SCOPE_NAME "triangle_multiplication_incoming/"
#include "evoformer/triangle_multiplication.def"
#undef MF_EVO_SCOPE_NAME
    };
    return copy_specs(out, specs, (int)(sizeof specs / sizeof specs[0]));
}

static int specs_tri_att_start(const mf_triangle_attention_dims *d, mf_param_spec *out)
{
    const mf_param_spec specs[] = {
#define MF_EVO_SCOPE_NAME "triangle_attention_starting_node/"
#include "evoformer/triangle_attention.def"
#undef MF_EVO_SCOPE_NAME
    };
    return copy_specs(out, specs, (int)(sizeof specs / sizeof specs[0]));
}

static int specs_tri_att_end(const mf_triangle_attention_dims *d, mf_param_spec *out)
{
    const mf_param_spec specs[] = {
#define MF_EVO_SCOPE_NAME "triangle_attention_ending_node/"
#include "evoformer/triangle_attention.def"
#undef MF_EVO_SCOPE_NAME
    };
    return copy_specs(out, specs, (int)(sizeof specs / sizeof specs[0]));
}
#undef MF_PARAM

int mf_evo_scoped_param_specs(mf_evo_scope scope, const void *dims, mf_param_spec *out)
{
    switch (scope) {
    case MF_EVO_SCOPE_MSA_ROW_ATTENTION_WITH_PAIR_BIAS:
        return specs_msa_row(dims, out);
    case MF_EVO_SCOPE_MSA_COLUMN_ATTENTION:
        return specs_msa_column(dims, out);
    case MF_EVO_SCOPE_MSA_COLUMN_GLOBAL_ATTENTION:
        return specs_msa_column_global(dims, out);
    case MF_EVO_SCOPE_MSA_TRANSITION:
        return specs_msa_transition(dims, out);
    case MF_EVO_SCOPE_OUTER_PRODUCT_MEAN:
        return specs_outer_product_mean(dims, out);
    case MF_EVO_SCOPE_TRIANGLE_MULTIPLICATION_OUTGOING:
        return specs_tri_mul_out(dims, out);
    case MF_EVO_SCOPE_TRIANGLE_MULTIPLICATION_INCOMING:
        return specs_tri_mul_in(dims, out);
    case MF_EVO_SCOPE_TRIANGLE_ATTENTION_STARTING_NODE:
        return specs_tri_att_start(dims, out);
    case MF_EVO_SCOPE_TRIANGLE_ATTENTION_ENDING_NODE:
        return specs_tri_att_end(dims, out);
    case MF_EVO_SCOPE_PAIR_TRANSITION:
        return specs_pair_transition(dims, out);
    }
    return 0;
}

/* ---- memory model: the allocations of the block forward/backward above (memplan.h) ----------- */

typedef struct {
    int64_t S, N, c_m, c_z;
    bool msa;
} plan_shape;

static plan_shape plan_shape_of(const mf_evo_block *b, int64_t n_seq, int64_t n_res)
{
    plan_shape p = {.S = n_seq, .N = n_res, .msa = has_msa(b)};
    for (int i = 0; i < b->nsteps; i++) {
        const void *d = b->steps[i].dims;
        switch (b->steps[i].kind) {
        case MF_EVO_STEP_MSA_ROW_ATTENTION:
            p.c_m = ((const mf_msa_row_attention_dims *)d)->c_m;
            p.c_z = ((const mf_msa_row_attention_dims *)d)->c_z;
            break;
        case MF_EVO_STEP_MSA_COLUMN_ATTENTION:
            p.c_m = ((const mf_msa_column_attention_dims *)d)->c_m;
            break;
        case MF_EVO_STEP_MSA_COLUMN_GLOBAL_ATTENTION:
            p.c_m = ((const mf_msa_column_global_attention_dims *)d)->c_m;
            break;
        case MF_EVO_STEP_MSA_TRANSITION:
            p.c_m = ((const mf_transition_dims *)d)->c;
            break;
        case MF_EVO_STEP_OUTER_PRODUCT_MEAN:
            p.c_m = ((const mf_outer_product_mean_dims *)d)->c_m;
            p.c_z = ((const mf_outer_product_mean_dims *)d)->c_z;
            break;
        case MF_EVO_STEP_TRIANGLE_MULTIPLICATION:
            p.c_z = ((const mf_triangle_multiplication_dims *)d)->c_z;
            break;
        case MF_EVO_STEP_TRIANGLE_ATTENTION_STARTING_NODE:
        case MF_EVO_STEP_TRIANGLE_ATTENTION_ENDING_NODE:
            p.c_z = ((const mf_triangle_attention_dims *)d)->c_z;
            break;
        case MF_EVO_STEP_PAIR_TRANSITION:
            p.c_z = ((const mf_transition_dims *)d)->c;
            break;
        }
    }
    return p;
}

static int64_t plan_numel(const plan_shape *p, int t)
{
    if (t == STREAM_M) return p->msa ? p->S * p->N * p->c_m : 0;
    return p->N * p->N * p->c_z;
}

void mf_evo_block_stream_numel(const mf_evo_block *b, int64_t n_seq, int64_t n_res, int64_t *nm,
                               int64_t *nz)
{
    const plan_shape p = plan_shape_of(b, n_seq, n_res);
    *nm = plan_numel(&p, STREAM_M);
    *nz = plan_numel(&p, STREAM_Z);
}

/* mf_dropout_forward on stream t (or a gradient shaped like it) */
static void plan_dropout(mf_memsim *s, const plan_shape *p, int t, const mf_evo_step *st,
                         const mf_dropout_key *key)
{
    if (t == STREAM_M)
        mf_dropout_plan_forward(s, p->S, p->N, p->c_m, st->dropout_rate, st->orientation, key);
    else
        mf_dropout_plan_forward(s, p->N, p->N, p->c_z, st->dropout_rate, st->orientation, key);
}

/* The plans run under the step's chunk size, as module_forward/module_backward do. */
static void plan_module_forward_inner(mf_memsim *s, const plan_shape *p, const mf_evo_step *st,
                                      bool saving, bool accumulate);
static void plan_module_backward_inner(mf_memsim *s, const plan_shape *p, const mf_evo_step *st,
                                       bool dparams);

static void plan_module_forward(mf_memsim *s, const plan_shape *p, const mf_evo_step *st,
                                bool saving, bool accumulate)
{
    const int64_t keep = s->policy.chunk_size;
    s->policy.chunk_size = mf_policy_op_chunk(&s->policy, (mf_chunk_op)st->kind);
    plan_module_forward_inner(s, p, st, saving, accumulate);
    s->policy.chunk_size = keep;
}

static void plan_module_backward(mf_memsim *s, const plan_shape *p, const mf_evo_step *st,
                                 bool dparams)
{
    const int64_t keep = s->policy.chunk_size;
    s->policy.chunk_size = mf_policy_op_chunk(&s->policy, (mf_chunk_op)st->kind);
    plan_module_backward_inner(s, p, st, dparams);
    s->policy.chunk_size = keep;
}

static void plan_module_forward_inner(mf_memsim *s, const plan_shape *p, const mf_evo_step *st,
                                      bool saving, bool accumulate)
{
    const int64_t S = p->S, N = p->N;
    switch (st->kind) {
    case MF_EVO_STEP_MSA_ROW_ATTENTION:
        mf_msa_row_attention_with_pair_bias_plan_forward(s, S, N, st->dims, saving, accumulate);
        break;
    case MF_EVO_STEP_MSA_COLUMN_ATTENTION:
        mf_msa_column_attention_plan_forward(s, S, N, st->dims, saving, accumulate);
        break;
    case MF_EVO_STEP_MSA_COLUMN_GLOBAL_ATTENTION:
        mf_msa_column_global_attention_plan_forward(s, S, N, st->dims, saving, accumulate);
        break;
    case MF_EVO_STEP_MSA_TRANSITION:
        mf_transition_plan_forward(s, S, N, st->dims, saving, accumulate);
        break;
    case MF_EVO_STEP_OUTER_PRODUCT_MEAN:
        mf_outer_product_mean_plan_forward(s, S, N, st->dims, saving, accumulate);
        break;
    case MF_EVO_STEP_TRIANGLE_MULTIPLICATION:
        mf_triangle_multiplication_plan_forward(s, N, st->dims, saving, accumulate);
        break;
    case MF_EVO_STEP_TRIANGLE_ATTENTION_STARTING_NODE:
        mf_triangle_attention_plan_forward(s, N, st->dims, false, saving, accumulate);
        break;
    case MF_EVO_STEP_TRIANGLE_ATTENTION_ENDING_NODE:
        mf_triangle_attention_plan_forward(s, N, st->dims, true, saving, accumulate);
        break;
    case MF_EVO_STEP_PAIR_TRANSITION:
        mf_transition_plan_forward(s, N, N, st->dims, saving, accumulate);
        break;
    }
}

/* module_backward as backward_saved calls it: every input gradient the module has is given */
static void plan_module_backward_inner(mf_memsim *s, const plan_shape *p, const mf_evo_step *st,
                                       bool dparams)
{
    const int64_t S = p->S, N = p->N;
    switch (st->kind) {
    case MF_EVO_STEP_MSA_ROW_ATTENTION:
        mf_msa_row_attention_with_pair_bias_plan_backward(s, S, N, st->dims, true, true, dparams);
        break;
    case MF_EVO_STEP_MSA_COLUMN_ATTENTION:
        mf_msa_column_attention_plan_backward(s, S, N, st->dims, true, dparams);
        break;
    case MF_EVO_STEP_MSA_COLUMN_GLOBAL_ATTENTION:
        mf_msa_column_global_attention_plan_backward(s, S, N, st->dims, true, dparams);
        break;
    case MF_EVO_STEP_MSA_TRANSITION:
        mf_transition_plan_backward(s, S, N, st->dims, true, dparams);
        break;
    case MF_EVO_STEP_OUTER_PRODUCT_MEAN:
        mf_outer_product_mean_plan_backward(s, S, N, st->dims, true, dparams);
        break;
    case MF_EVO_STEP_TRIANGLE_MULTIPLICATION:
        mf_triangle_multiplication_plan_backward(s, N, st->dims, true, dparams);
        break;
    case MF_EVO_STEP_TRIANGLE_ATTENTION_STARTING_NODE:
        mf_triangle_attention_plan_backward(s, N, st->dims, false, true, dparams);
        break;
    case MF_EVO_STEP_TRIANGLE_ATTENTION_ENDING_NODE:
        mf_triangle_attention_plan_backward(s, N, st->dims, true, true, dparams);
        break;
    case MF_EVO_STEP_PAIR_TRANSITION:
        mf_transition_plan_backward(s, N, N, st->dims, true, dparams);
        break;
    }
}

static void plan_forward_only(mf_memsim *s, const mf_evo_block *b, const plan_shape *p,
                              const mf_dropout_key *key)
{
    for (int i = 0; i < b->nsteps; i++) {
        const mf_evo_step *st = &b->steps[i];
        const int t = target_stream(st->kind);
        if (s->policy.inplace && !mf_dropout_active(key, st->dropout_rate)) {
            plan_module_forward(s, p, st, false, true);
            continue;
        }
        const mf_memsim_mark_t mark = mf_memsim_mark(s);
        mf_memsim_tensor(s, MF_MEM_WORK, MF_F32, plan_numel(p, t)); /* the update */
        plan_module_forward(s, p, st, false, false);
        plan_dropout(s, p, t, st, key);
        mf_memsim_release(s, mark);
    }
}

static void plan_forward_saving(mf_memsim *s, const mf_evo_block *b, const plan_shape *p,
                                const mf_dropout_key *key)
{
    int last[2] = {-1, -1};
    for (int i = 0; i < b->nsteps; i++) last[target_stream(b->steps[i].kind)] = i;
    for (int i = 0; i < b->nsteps; i++) {
        const mf_evo_step *st = &b->steps[i];
        const int t = target_stream(st->kind);
        /* the next stream state, kept as the following module's input */
        if (i != last[t]) mf_memsim_tensor(s, MF_MEM_SAVED, MF_F32, plan_numel(p, t));
        plan_module_forward(s, p, st, true, false);
        plan_dropout(s, p, t, st, key);
    }
}

void mf_evo_block_plan_forward(mf_memsim *s, const mf_evo_block *b, int64_t n_seq, int64_t n_res,
                               bool saving, const mf_dropout_key *key)
{
    const mf_dropout_key none = mf_dropout_key_inference();
    if (!key) key = &none;
    const plan_shape p = plan_shape_of(b, n_seq, n_res);
    if (!saving) {
        plan_forward_only(s, b, &p, key);
    } else if (s->policy.recompute == MF_RECOMPUTE_OFF) {
        plan_forward_saving(s, b, &p, key);
    } else {
        if (p.msa) mf_memsim_checkpoint(s, plan_numel(&p, STREAM_M));
        mf_memsim_checkpoint(s, plan_numel(&p, STREAM_Z));
        plan_forward_only(s, b, &p, key);
    }
}

static void plan_backward_saved(mf_memsim *s, const mf_evo_block *b, const plan_shape *p,
                                const mf_dropout_key *key, bool dparams)
{
    const mf_memsim_mark_t mark = mf_memsim_mark(s);
    for (int k = 0; k < 2; k++) { /* the two gradient buffers per stream */
        if (p->msa) mf_memsim_tensor(s, MF_MEM_ACTS, MF_F32, plan_numel(p, STREAM_M));
        mf_memsim_tensor(s, MF_MEM_ACTS, MF_F32, plan_numel(p, STREAM_Z));
    }
    for (int i = b->nsteps - 1; i >= 0; i--) {
        const mf_evo_step *st = &b->steps[i];
        /* the masks of both branches of backward_saved: drawn only when the dropout is active */
        plan_dropout(s, p, target_stream(st->kind), st, key);
        plan_module_backward(s, p, st, dparams);
    }
    mf_memsim_release(s, mark);
}

void mf_evo_block_plan_backward(mf_memsim *s, const mf_evo_block *b, int64_t n_seq, int64_t n_res,
                                const mf_dropout_key *key, bool dparams)
{
    const mf_dropout_key none = mf_dropout_key_inference();
    if (!key) key = &none;
    const plan_shape p = plan_shape_of(b, n_seq, n_res);
    if (s->policy.recompute == MF_RECOMPUTE_OFF) {
        plan_backward_saved(s, b, &p, key, dparams);
        return;
    }
    /* recompute: the restored inputs and the outputs of the rerun, then the saving forward and
     * the backward under recompute off */
    const mf_memsim_mark_t mark = mf_memsim_mark(s);
    if (p.msa) {
        mf_memsim_tensor(s, MF_MEM_ACTS, MF_F32, plan_numel(&p, STREAM_M));
        mf_memsim_restore(s, plan_numel(&p, STREAM_M));
        mf_memsim_tensor(s, MF_MEM_ACTS, MF_F32, plan_numel(&p, STREAM_M));
    }
    mf_memsim_tensor(s, MF_MEM_ACTS, MF_F32, plan_numel(&p, STREAM_Z));
    mf_memsim_restore(s, plan_numel(&p, STREAM_Z));
    mf_memsim_tensor(s, MF_MEM_ACTS, MF_F32, plan_numel(&p, STREAM_Z));
    const mf_recompute rc = s->policy.recompute;
    s->policy.recompute = MF_RECOMPUTE_OFF;
    plan_forward_saving(s, b, &p, key);
    plan_backward_saved(s, b, &p, key, dparams);
    s->policy.recompute = rc;
    mf_memsim_release(s, mark);
}
