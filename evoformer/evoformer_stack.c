/* Stacks of Evoformer, extra-MSA and template pair blocks with block recomputation (see
 * evoformer_stack.h). */
#include "evoformer/evoformer_stack.h"

#include "core/ops.h"
#include "memopt/saved.h"

#define MAX_BLOCK_PARAMS 128

typedef enum { KIND_EVOFORMER, KIND_EXTRA_MSA, KIND_TEMPLATE_PAIR } stack_kind;

typedef struct {
    stack_kind kind;
    const char *name;
    int nparams;
    int64_t num_blocks;
    const mf_tensor *stacked; /* [nparams], each [num_blocks, ...] */
    mf_tensor *dstacked;      /* [nparams] or NULL */
    const void *dims;
    const mf_tensor *msa_mask, *pair_mask;
} stack_desc;

/* Block k's views of the stacked parameters, bound into b (views/dviews must outlive b); dviews
 * NULL binds no gradients. */
static mf_status bind_block(const stack_desc *sd, int64_t k, mf_tensor *views, mf_tensor *dviews,
                            mf_evo_block *b)
{
    MF_TRY(mf_evo_params_block_view(sd->stacked, sd->nparams, sd->num_blocks, k, views));
    void *dp = NULL;
    if (sd->dstacked && dviews) {
        MF_TRY(mf_evo_params_block_view(sd->dstacked, sd->nparams, sd->num_blocks, k, dviews));
        dp = dviews;
    }
    switch (sd->kind) {
    case KIND_EVOFORMER:
        mf_evoformer_block_bind(b, (const mf_evoformer_block_params *)(void *)views, dp, sd->dims,
                                sd->msa_mask, sd->pair_mask);
        break;
    case KIND_EXTRA_MSA:
        mf_extra_msa_block_bind(b, (const mf_extra_msa_block_params *)(void *)views, dp, sd->dims,
                                sd->msa_mask, sd->pair_mask);
        break;
    case KIND_TEMPLATE_PAIR:
        mf_template_pair_block_bind(b, (const mf_template_pair_block_params *)(void *)views, dp,
                                    sd->dims, sd->pair_mask);
        break;
    }
    return MF_OK;
}

static int64_t blocks_per_checkpoint(const mf_ctx *ctx)
{
    switch (ctx->policy.recompute) {
    case MF_RECOMPUTE_OFF:
        return 0;
    case MF_RECOMPUTE_BLOCK:
        return 1;
    case MF_RECOMPUTE_EVERY_K:
        return ctx->policy.recompute_every > 0 ? ctx->policy.recompute_every : 1;
    }
    return 1;
}

static mf_dropout_key block_key(const mf_dropout_key *key, int64_t k)
{
    mf_dropout_key kk = key ? *key : mf_dropout_key_inference();
    kk.block = (uint32_t)k;
    return kk;
}

static mf_status alloc_like(mf_ctx *ctx, mf_tensor *t, mf_dtype dt, const mf_tensor *like,
                            const char *label)
{
    return mf_arena_tensor(ctx->arena, t, dt, like->ndim, like->shape, label);
}

static mf_status stack_forward(mf_ctx *ctx, const stack_desc *sd, mf_tensor *m, mf_tensor *z,
                               mf_evo_stack_saved *saved, const mf_dropout_key *key)
{
    MF_REQUIRE(ctx && ctx->arena, "%s: ctx and arena required", sd->name);
    MF_REQUIRE(sd->num_blocks > 0, "%s: %lld blocks", sd->name, (long long)sd->num_blocks);
    MF_REQUIRE(sd->nparams <= MAX_BLOCK_PARAMS, "%s: %d parameters per block", sd->name,
               sd->nparams);
    MF_REQUIRE(z && z->data, "%s: z required", sd->name);
    const bool msa = sd->kind != KIND_TEMPLATE_PAIR;
    MF_REQUIRE(!msa || (m && m->data), "%s: m required", sd->name);
    mf_tensor views[MAX_BLOCK_PARAMS];
    mf_evo_block b;
    mf_tensor *mm = msa ? m : NULL;
    if (!saved) {
        for (int64_t k = 0; k < sd->num_blocks; k++) {
            mf_dropout_key kk = block_key(key, k);
            MF_TRY(bind_block(sd, k, views, NULL, &b));
            MF_TRY(mf_evo_block_forward(ctx, &b, mm, z, NULL, mm, z, &kk));
        }
        return MF_OK;
    }
    MF_REQUIRE(saved->blocks && saved->capacity >= sd->num_blocks,
               "%s: saved needs an array of %lld block states (capacity %lld)", sd->name,
               (long long)sd->num_blocks, (long long)saved->capacity);
    const mf_dtype dt = z->dtype;
    const int64_t per = blocks_per_checkpoint(ctx);
    saved->valid = false;
    saved->num_blocks = sd->num_blocks;
    saved->per_checkpoint = per;
    saved->dtype = dt;
    saved->key = key ? *key : mf_dropout_key_inference();
    saved->m_in = saved->z_in = (mf_tensor){0};
    mf_ctx local = *ctx;
    local.policy.recompute = MF_RECOMPUTE_OFF;
    mf_arena_mark_t mark = mf_arena_mark(ctx->arena);
    mf_status st = MF_OK;
    if (per == 0) {
        /* block 0's input is overwritten by the last block's output: keep a copy */
        if (msa) {
            MF_TRY_GOTO(alloc_like(ctx, &saved->m_in, dt, m, "evoformer_stack.input"));
            MF_TRY_GOTO(mf_convert(ctx, &saved->m_in, m));
        }
        MF_TRY_GOTO(alloc_like(ctx, &saved->z_in, dt, z, "evoformer_stack.input"));
        MF_TRY_GOTO(mf_convert(ctx, &saved->z_in, z));
        mf_tensor cm = saved->m_in, cz = saved->z_in;
        for (int64_t k = 0; k < sd->num_blocks; k++) {
            const bool last = k == sd->num_blocks - 1;
            mf_tensor om = {0}, oz;
            if (last) {
                if (msa) om = *m;
                oz = *z;
            } else {
                if (msa) MF_TRY_GOTO(alloc_like(ctx, &om, dt, m, "evoformer_block.m_state"));
                MF_TRY_GOTO(alloc_like(ctx, &oz, dt, z, "evoformer_block.z_state"));
            }
            mf_dropout_key kk = block_key(key, k);
            MF_TRY_GOTO(bind_block(sd, k, views, NULL, &b));
            MF_TRY_GOTO(mf_evo_block_forward(&local, &b, msa ? &om : NULL, &oz, &saved->blocks[k],
                                             msa ? &cm : NULL, &cz, &kk));
            cm = om;
            cz = oz;
        }
    } else {
        for (int64_t k = 0; k < sd->num_blocks; k++) {
            if (k % per == 0) {
                mf_evo_block_saved *c = &saved->blocks[k];
                *c = (mf_evo_block_saved){
                    .valid = true, .checkpointed = true, .dtype = dt, .key = block_key(key, k)};
                if (msa)
                    MF_TRY_GOTO(
                        mf_save_checkpoint(ctx, &c->ckpt_m, m, "evoformer_stack.checkpoint"));
                MF_TRY_GOTO(mf_save_checkpoint(ctx, &c->ckpt_z, z, "evoformer_stack.checkpoint"));
            }
            mf_dropout_key kk = block_key(key, k);
            MF_TRY_GOTO(bind_block(sd, k, views, NULL, &b));
            MF_TRY_GOTO(mf_evo_block_forward(ctx, &b, mm, z, NULL, mm, z, &kk));
        }
    }
    saved->valid = true;
    return MF_OK;
cleanup:
    mf_arena_release(ctx->arena, mark);
    return st;
}

/* Backward through blocks [k0, k1) whose saved states are in saved->blocks: the gradient
 * ping-pongs between *g and *h (h zeroed before each block); on return *g holds the result. */
static mf_status backward_blocks(mf_ctx *local, const stack_desc *sd, mf_evo_stack_saved *saved,
                                 int64_t k0, int64_t k1, mf_tensor **gm, mf_tensor **gz,
                                 mf_tensor **hm, mf_tensor **hz)
{
    mf_tensor views[MAX_BLOCK_PARAMS], dviews[MAX_BLOCK_PARAMS];
    mf_evo_block b;
    for (int64_t k = k1 - 1; k >= k0; k--) {
        if (*hm) MF_TRY(mf_fill(local, *hm, 0.0f));
        MF_TRY(mf_fill(local, *hz, 0.0f));
        MF_TRY(bind_block(sd, k, views, dviews, &b));
        MF_TRY(mf_evo_block_backward(local, &b, *hm, *hz, *gm, *gz, &saved->blocks[k]));
        mf_tensor *t = *gm;
        *gm = *hm;
        *hm = t;
        t = *gz;
        *gz = *hz;
        *hz = t;
    }
    return MF_OK;
}

static mf_status stack_backward(mf_ctx *ctx, const stack_desc *sd, mf_tensor *dm, mf_tensor *dz,
                                mf_evo_stack_saved *saved)
{
    MF_REQUIRE(ctx && ctx->arena, "%s backward: ctx and arena required", sd->name);
    MF_REQUIRE(saved && saved->valid && saved->num_blocks == sd->num_blocks,
               "%s backward: the forward's saved state is required", sd->name);
    MF_REQUIRE(dz && dz->data, "%s backward: dz required", sd->name);
    const bool msa = sd->kind != KIND_TEMPLATE_PAIR;
    MF_REQUIRE(!msa || (dm && dm->data), "%s backward: dm required", sd->name);
    const mf_dtype dt = saved->dtype;
    const int64_t N = sd->num_blocks, per = saved->per_checkpoint;
    mf_ctx local = *ctx;
    local.policy.recompute = MF_RECOMPUTE_OFF;
    mf_arena *a = ctx->arena;
    mf_arena_mark_t mark = mf_arena_mark(a);
    mf_status st = MF_OK;
    mf_tensor bm = {0}, bz;
    if (msa) MF_TRY_GOTO(alloc_like(ctx, &bm, dt, dm, "evoformer_stack.grad"));
    MF_TRY_GOTO(alloc_like(ctx, &bz, dt, dz, "evoformer_stack.grad"));
    mf_tensor *gm = msa ? dm : NULL, *gz = dz, *hm = msa ? &bm : NULL, *hz = &bz;
    if (per == 0) {
        MF_TRY_GOTO(backward_blocks(&local, sd, saved, 0, N, &gm, &gz, &hm, &hz));
    } else {
        mf_tensor views[MAX_BLOCK_PARAMS];
        mf_evo_block b;
        for (int64_t k0 = (N - 1) / per * per; k0 >= 0; k0 -= per) {
            const int64_t k1 = k0 + per < N ? k0 + per : N;
            const mf_evo_block_saved ckpt = saved->blocks[k0];
            MF_REQUIRE(ckpt.valid && ckpt.checkpointed, "%s backward: block %lld has no checkpoint",
                       sd->name, (long long)k0);
            mf_arena_mark_t gmark = mf_arena_mark(a);
            mf_tensor cm = {0}, cz;
            if (msa) {
                MF_TRY_GOTO(alloc_like(ctx, &cm, dt, &ckpt.ckpt_m, "evoformer_block.m_state"));
                MF_TRY_GOTO(
                    mf_restore_checkpoint(ctx, &cm, &ckpt.ckpt_m, "evoformer_block.m_state"));
            }
            MF_TRY_GOTO(alloc_like(ctx, &cz, dt, &ckpt.ckpt_z, "evoformer_block.z_state"));
            MF_TRY_GOTO(mf_restore_checkpoint(ctx, &cz, &ckpt.ckpt_z, "evoformer_block.z_state"));
            for (int64_t k = k0; k < k1; k++) {
                mf_tensor om = {0}, oz;
                if (msa) MF_TRY_GOTO(alloc_like(ctx, &om, dt, &cm, "evoformer_block.m_state"));
                MF_TRY_GOTO(alloc_like(ctx, &oz, dt, &cz, "evoformer_block.z_state"));
                mf_dropout_key kk = block_key(&saved->key, k);
                MF_TRY_GOTO(bind_block(sd, k, views, NULL, &b));
                MF_TRY_GOTO(mf_evo_block_forward(&local, &b, msa ? &om : NULL, &oz,
                                                 &saved->blocks[k], msa ? &cm : NULL, &cz, &kk));
                cm = om;
                cz = oz;
            }
            st = backward_blocks(&local, sd, saved, k0, k1, &gm, &gz, &hm, &hz);
            mf_arena_release(a, gmark);
            saved->blocks[k0] = ckpt;
            for (int64_t k = k0 + 1; k < k1; k++) saved->blocks[k].valid = false;
            if (st != MF_OK) goto cleanup;
        }
    }
    /* the result is in whichever buffer the ping-pong ended on */
    if (msa && gm != dm) MF_TRY_GOTO(mf_convert(ctx, dm, gm));
    if (gz != dz) MF_TRY_GOTO(mf_convert(ctx, dz, gz));
cleanup:
    mf_arena_release(a, mark);
    return st;
}

static stack_desc desc(stack_kind kind, const char *name, int nparams, int64_t num_blocks,
                       const void *stacked, void *dstacked, const void *dims,
                       const mf_tensor *msa_mask, const mf_tensor *pair_mask)
{
    return (stack_desc){kind,     name, nparams,  num_blocks, stacked,
                        dstacked, dims, msa_mask, pair_mask};
}

mf_status mf_evoformer_stack_forward(mf_ctx *ctx, mf_tensor *m, mf_tensor *z,
                                     mf_evo_stack_saved *saved, const mf_tensor *msa_mask,
                                     const mf_tensor *pair_mask,
                                     const mf_evoformer_block_params *stacked,
                                     const mf_evoformer_block_dims *d, int64_t num_blocks,
                                     const mf_dropout_key *key)
{
    MF_REQUIRE(stacked && d, "evoformer_stack: parameters and dims required");
    stack_desc sd = desc(KIND_EVOFORMER, "evoformer_stack", MF_EVOFORMER_BLOCK_NPARAMS, num_blocks,
                         MF_PARAMS_AS_ARRAY((mf_evoformer_block_params *)stacked), NULL, d,
                         msa_mask, pair_mask);
    return stack_forward(ctx, &sd, m, z, saved, key);
}

mf_status mf_evoformer_stack_backward(mf_ctx *ctx, mf_tensor *dm, mf_tensor *dz,
                                      mf_evoformer_block_params *dstacked,
                                      mf_evo_stack_saved *saved, const mf_tensor *msa_mask,
                                      const mf_tensor *pair_mask,
                                      const mf_evoformer_block_params *stacked,
                                      const mf_evoformer_block_dims *d)
{
    MF_REQUIRE(stacked && d && saved, "evoformer_stack backward: parameters, dims, saved required");
    stack_desc sd =
        desc(KIND_EVOFORMER, "evoformer_stack", MF_EVOFORMER_BLOCK_NPARAMS, saved->num_blocks,
             MF_PARAMS_AS_ARRAY((mf_evoformer_block_params *)stacked),
             dstacked ? MF_PARAMS_AS_ARRAY(dstacked) : NULL, d, msa_mask, pair_mask);
    return stack_backward(ctx, &sd, dm, dz, saved);
}

mf_status mf_extra_msa_stack_forward(mf_ctx *ctx, mf_tensor *m, mf_tensor *z,
                                     mf_evo_stack_saved *saved, const mf_tensor *msa_mask,
                                     const mf_tensor *pair_mask,
                                     const mf_extra_msa_block_params *stacked,
                                     const mf_evoformer_block_dims *d, int64_t num_blocks,
                                     const mf_dropout_key *key)
{
    MF_REQUIRE(stacked && d, "extra_msa_stack: parameters and dims required");
    stack_desc sd = desc(KIND_EXTRA_MSA, "extra_msa_stack", MF_EXTRA_MSA_BLOCK_NPARAMS, num_blocks,
                         MF_PARAMS_AS_ARRAY((mf_extra_msa_block_params *)stacked), NULL, d,
                         msa_mask, pair_mask);
    return stack_forward(ctx, &sd, m, z, saved, key);
}

mf_status mf_extra_msa_stack_backward(mf_ctx *ctx, mf_tensor *dm, mf_tensor *dz,
                                      mf_extra_msa_block_params *dstacked,
                                      mf_evo_stack_saved *saved, const mf_tensor *msa_mask,
                                      const mf_tensor *pair_mask,
                                      const mf_extra_msa_block_params *stacked,
                                      const mf_evoformer_block_dims *d)
{
    MF_REQUIRE(stacked && d && saved, "extra_msa_stack backward: parameters, dims, saved required");
    stack_desc sd =
        desc(KIND_EXTRA_MSA, "extra_msa_stack", MF_EXTRA_MSA_BLOCK_NPARAMS, saved->num_blocks,
             MF_PARAMS_AS_ARRAY((mf_extra_msa_block_params *)stacked),
             dstacked ? MF_PARAMS_AS_ARRAY(dstacked) : NULL, d, msa_mask, pair_mask);
    return stack_backward(ctx, &sd, dm, dz, saved);
}

mf_status mf_template_pair_stack_forward(mf_ctx *ctx, mf_tensor *t, mf_evo_stack_saved *saved,
                                         const mf_tensor *pair_mask,
                                         const mf_template_pair_block_params *stacked,
                                         const mf_template_pair_block_dims *d, int64_t num_blocks,
                                         const mf_dropout_key *key)
{
    MF_REQUIRE(stacked && d, "template_pair_stack: parameters and dims required");
    stack_desc sd = desc(KIND_TEMPLATE_PAIR, "template_pair_stack", MF_TEMPLATE_PAIR_BLOCK_NPARAMS,
                         num_blocks, MF_PARAMS_AS_ARRAY((mf_template_pair_block_params *)stacked),
                         NULL, d, NULL, pair_mask);
    return stack_forward(ctx, &sd, NULL, t, saved, key);
}

mf_status mf_template_pair_stack_backward(mf_ctx *ctx, mf_tensor *dt,
                                          mf_template_pair_block_params *dstacked,
                                          mf_evo_stack_saved *saved, const mf_tensor *pair_mask,
                                          const mf_template_pair_block_params *stacked,
                                          const mf_template_pair_block_dims *d)
{
    MF_REQUIRE(stacked && d && saved,
               "template_pair_stack backward: parameters, dims, saved required");
    stack_desc sd =
        desc(KIND_TEMPLATE_PAIR, "template_pair_stack", MF_TEMPLATE_PAIR_BLOCK_NPARAMS,
             saved->num_blocks, MF_PARAMS_AS_ARRAY((mf_template_pair_block_params *)stacked),
             dstacked ? MF_PARAMS_AS_ARRAY(dstacked) : NULL, d, NULL, pair_mask);
    return stack_backward(ctx, &sd, NULL, dt, saved);
}

/* ---- memory model: the allocations of stack_forward/stack_backward (memplan.h) --------------- */

static int64_t plan_per_checkpoint(const mf_policy *p)
{
    mf_ctx c = {.policy = *p};
    return blocks_per_checkpoint(&c);
}

void mf_evo_stack_plan_forward(mf_memsim *s, const mf_evo_block *b, int64_t n_seq, int64_t n_res,
                               int64_t num_blocks, bool saving, const mf_dropout_key *key)
{
    int64_t nm, nz;
    mf_evo_block_stream_numel(b, n_seq, n_res, &nm, &nz);
    const bool msa = nm > 0;
    if (!saving) {
        for (int64_t k = 0; k < num_blocks; k++) {
            const mf_dropout_key kk = block_key(key, k);
            mf_evo_block_plan_forward(s, b, n_seq, n_res, false, &kk);
        }
        return;
    }
    const int64_t per = plan_per_checkpoint(&s->policy);
    if (per == 0) {
        /* the copies of the input, then each block's output states (the next one's input) */
        if (msa) mf_memsim_tensor(s, MF_MEM_SAVED, MF_F32, nm);
        mf_memsim_tensor(s, MF_MEM_SAVED, MF_F32, nz);
        for (int64_t k = 0; k < num_blocks; k++) {
            if (k != num_blocks - 1) {
                if (msa) mf_memsim_tensor(s, MF_MEM_SAVED, MF_F32, nm);
                mf_memsim_tensor(s, MF_MEM_SAVED, MF_F32, nz);
            }
            const mf_dropout_key kk = block_key(key, k);
            mf_evo_block_plan_forward(s, b, n_seq, n_res, true, &kk); /* recompute is off */
        }
        return;
    }
    for (int64_t k = 0; k < num_blocks; k++) {
        if (k % per == 0) {
            if (msa) mf_memsim_checkpoint(s, nm);
            mf_memsim_checkpoint(s, nz);
        }
        const mf_dropout_key kk = block_key(key, k);
        mf_evo_block_plan_forward(s, b, n_seq, n_res, false, &kk);
    }
}

void mf_evo_stack_plan_backward(mf_memsim *s, const mf_evo_block *b, int64_t n_seq, int64_t n_res,
                                int64_t num_blocks, const mf_dropout_key *key, bool dparams)
{
    int64_t nm, nz;
    mf_evo_block_stream_numel(b, n_seq, n_res, &nm, &nz);
    const bool msa = nm > 0;
    const int64_t N = num_blocks, per = plan_per_checkpoint(&s->policy);
    /* the blocks run under recompute off, as the real backward's local context */
    const mf_policy outer = s->policy;
    s->policy.recompute = MF_RECOMPUTE_OFF;
    const mf_memsim_mark_t mark = mf_memsim_mark(s);
    if (msa) mf_memsim_tensor(s, MF_MEM_ACTS, MF_F32, nm); /* the ping-pong gradient buffers */
    mf_memsim_tensor(s, MF_MEM_ACTS, MF_F32, nz);
    if (per == 0) {
        for (int64_t k = N - 1; k >= 0; k--) {
            const mf_dropout_key kk = block_key(key, k);
            mf_evo_block_plan_backward(s, b, n_seq, n_res, &kk, dparams);
        }
    } else {
        for (int64_t k0 = (N - 1) / per * per; k0 >= 0; k0 -= per) {
            const int64_t k1 = k0 + per < N ? k0 + per : N;
            const mf_memsim_mark_t gmark = mf_memsim_mark(s);
            if (msa) { /* the restored checkpoint */
                mf_memsim_tensor(s, MF_MEM_ACTS, MF_F32, nm);
                mf_memsim_restore(s, nm);
            }
            mf_memsim_tensor(s, MF_MEM_ACTS, MF_F32, nz);
            mf_memsim_restore(s, nz);
            for (int64_t k = k0; k < k1; k++) { /* rerun with saving: outputs and saved state */
                if (msa) mf_memsim_tensor(s, MF_MEM_SAVED, MF_F32, nm);
                mf_memsim_tensor(s, MF_MEM_SAVED, MF_F32, nz);
                const mf_dropout_key kk = block_key(key, k);
                mf_evo_block_plan_forward(s, b, n_seq, n_res, true, &kk);
            }
            for (int64_t k = k1 - 1; k >= k0; k--) {
                const mf_dropout_key kk = block_key(key, k);
                mf_evo_block_plan_backward(s, b, n_seq, n_res, &kk, dparams);
            }
            mf_memsim_release(s, gmark);
        }
    }
    mf_memsim_release(s, mark);
    s->policy = outer;
}

/* memfold's convention (evoformer_stack.h): a saving forward is a trained one */
static mf_dropout_key plan_key(bool training)
{
    return training ? mf_dropout_key_training(0, 0, 0) : mf_dropout_key_inference();
}

void mf_evoformer_stack_plan_forward(mf_memsim *s, int64_t n_seq, int64_t n_res,
                                     const mf_evoformer_block_dims *d, int64_t num_blocks,
                                     bool saving)
{
    mf_evo_block b;
    mf_evoformer_block_layout(&b, d, false);
    const mf_dropout_key key = plan_key(saving);
    mf_evo_stack_plan_forward(s, &b, n_seq, n_res, num_blocks, saving, &key);
}

void mf_evoformer_stack_plan_backward(mf_memsim *s, int64_t n_seq, int64_t n_res,
                                      const mf_evoformer_block_dims *d, int64_t num_blocks,
                                      bool dparams)
{
    mf_evo_block b;
    mf_evoformer_block_layout(&b, d, false);
    const mf_dropout_key key = plan_key(true);
    mf_evo_stack_plan_backward(s, &b, n_seq, n_res, num_blocks, &key, dparams);
}

void mf_extra_msa_stack_plan_forward(mf_memsim *s, int64_t n_extra, int64_t n_res,
                                     const mf_evoformer_block_dims *d, int64_t num_blocks,
                                     bool saving)
{
    mf_evo_block b;
    mf_evoformer_block_layout(&b, d, true);
    const mf_dropout_key key = plan_key(saving);
    mf_evo_stack_plan_forward(s, &b, n_extra, n_res, num_blocks, saving, &key);
}

void mf_extra_msa_stack_plan_backward(mf_memsim *s, int64_t n_extra, int64_t n_res,
                                      const mf_evoformer_block_dims *d, int64_t num_blocks,
                                      bool dparams)
{
    mf_evo_block b;
    mf_evoformer_block_layout(&b, d, true);
    const mf_dropout_key key = plan_key(true);
    mf_evo_stack_plan_backward(s, &b, n_extra, n_res, num_blocks, &key, dparams);
}

void mf_template_pair_stack_plan_forward(mf_memsim *s, int64_t n_res,
                                         const mf_template_pair_block_dims *d, int64_t num_blocks,
                                         bool saving)
{
    mf_evo_block b;
    mf_template_pair_block_layout(&b, d);
    const mf_dropout_key key = plan_key(saving);
    mf_evo_stack_plan_forward(s, &b, 0, n_res, num_blocks, saving, &key);
}

void mf_template_pair_stack_plan_backward(mf_memsim *s, int64_t n_res,
                                          const mf_template_pair_block_dims *d, int64_t num_blocks,
                                          bool dparams)
{
    mf_evo_block b;
    mf_template_pair_block_layout(&b, d);
    const mf_dropout_key key = plan_key(true);
    mf_evo_stack_plan_backward(s, &b, 0, n_res, num_blocks, &key, dparams);
}
