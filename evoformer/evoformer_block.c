/* Evoformer block (Alg. 6) and extra-MSA block (Alg. 18); see evoformer_block.h. */
#include "evoformer/evoformer_block.h"

mf_evoformer_block_dims mf_evoformer_block_dims_from_config(const mf_evoformer_stack_config *s,
                                                            int64_t c_m, int64_t c_z)
{
    mf_evoformer_block_dims d;
    d.msa_row_attention_with_pair_bias = (mf_msa_row_attention_dims){
        .c_m = c_m,
        .c_z = c_z,
        .num_heads = s->msa_row_attention.num_heads,
        .c_hidden = s->msa_row_attention.c_hidden,
    };
    d.msa_column_attention = (mf_msa_column_attention_dims){
        .c_m = c_m,
        .num_heads = s->msa_column_attention.num_heads,
        .c_hidden = s->msa_column_attention.c_hidden,
    };
    d.msa_column_global_attention = (mf_msa_column_global_attention_dims){
        .c_m = c_m,
        .num_heads = s->msa_column_attention.num_heads,
        .c_hidden = s->msa_column_attention.c_hidden,
    };
    d.msa_transition = (mf_transition_dims){.c = c_m, .factor = s->msa_transition_factor};
    d.outer_product_mean = (mf_outer_product_mean_dims){
        .c_m = c_m, .c_hidden = s->outer_product_mean_c_hidden, .c_z = c_z};
    d.triangle_multiplication_outgoing = (mf_triangle_multiplication_dims){
        .c_z = c_z, .c_hidden = s->triangle_multiplication_c_hidden, .outgoing = true};
    d.triangle_multiplication_incoming = d.triangle_multiplication_outgoing;
    d.triangle_multiplication_incoming.outgoing = false;
    d.triangle_attention = (mf_triangle_attention_dims){
        .c_z = c_z,
        .num_heads = s->triangle_attention.num_heads,
        .c_hidden = s->triangle_attention.c_hidden,
    };
    d.pair_transition = (mf_transition_dims){.c = c_z, .factor = s->pair_transition_factor};
    d.msa_row_attention_dropout_rate = s->msa_row_attention.dropout_rate;
    d.msa_column_attention_dropout_rate = s->msa_column_attention.dropout_rate;
    d.triangle_multiplication_dropout_rate = s->triangle_multiplication_dropout_rate;
    d.triangle_attention_dropout_rate = s->triangle_attention.dropout_rate;
    return d;
}

/* The scopes of the block's modules in the order of its params struct. */
static int block_specs(const mf_evoformer_block_dims *d, bool extra, mf_param_spec *out)
{
    const struct {
        mf_evo_scope scope;
        const void *dims;
    } mods[] = {
        {MF_EVO_SCOPE_MSA_ROW_ATTENTION_WITH_PAIR_BIAS, &d->msa_row_attention_with_pair_bias},
        {extra ? MF_EVO_SCOPE_MSA_COLUMN_GLOBAL_ATTENTION : MF_EVO_SCOPE_MSA_COLUMN_ATTENTION,
         extra ? (const void *)&d->msa_column_global_attention
               : (const void *)&d->msa_column_attention},
        {MF_EVO_SCOPE_MSA_TRANSITION, &d->msa_transition},
        {MF_EVO_SCOPE_OUTER_PRODUCT_MEAN, &d->outer_product_mean},
        {MF_EVO_SCOPE_TRIANGLE_MULTIPLICATION_OUTGOING, &d->triangle_multiplication_outgoing},
        {MF_EVO_SCOPE_TRIANGLE_MULTIPLICATION_INCOMING, &d->triangle_multiplication_incoming},
        {MF_EVO_SCOPE_TRIANGLE_ATTENTION_STARTING_NODE, &d->triangle_attention},
        {MF_EVO_SCOPE_TRIANGLE_ATTENTION_ENDING_NODE, &d->triangle_attention},
        {MF_EVO_SCOPE_PAIR_TRANSITION, &d->pair_transition},
    };
    int n = 0;
    for (size_t i = 0; i < sizeof mods / sizeof mods[0]; i++)
        n += mf_evo_scoped_param_specs(mods[i].scope, mods[i].dims, out ? out + n : NULL);
    return n;
}

int mf_evoformer_block_param_specs(const mf_evoformer_block_dims *d, mf_param_spec *out)
{
    return block_specs(d, false, out);
}

int mf_extra_msa_block_param_specs(const mf_evoformer_block_dims *d, mf_param_spec *out)
{
    return block_specs(d, true, out);
}

#define DP(field) (dp ? (void *)&dp->field : NULL)

/* Alg. 6 / Alg. 18 in AF2's order; the column step and its params differ between the two. */
static void bind_common(mf_evo_block *b, const mf_evoformer_block_dims *d,
                        const mf_tensor *msa_mask, const mf_tensor *pair_mask)
{
    b->nsteps = 9;
    b->msa_mask = msa_mask;
    b->pair_mask = pair_mask;
    mf_evo_step *s = b->steps;
    s[0].kind = MF_EVO_STEP_MSA_ROW_ATTENTION;
    s[0].dims = &d->msa_row_attention_with_pair_bias;
    s[0].dropout_rate = d->msa_row_attention_dropout_rate;
    s[0].orientation = MF_DROPOUT_ROWWISE;
    s[0].dropout_module = MF_DROPOUT_MSA_ROW_ATTENTION;
    s[1].dropout_rate = d->msa_column_attention_dropout_rate;
    s[1].orientation = MF_DROPOUT_COLUMNWISE;
    s[1].dropout_module = MF_DROPOUT_MSA_COLUMN_ATTENTION;
    s[2].kind = MF_EVO_STEP_MSA_TRANSITION;
    s[2].dims = &d->msa_transition;
    s[2].dropout_module = MF_DROPOUT_MSA_TRANSITION;
    s[3].kind = MF_EVO_STEP_OUTER_PRODUCT_MEAN;
    s[3].dims = &d->outer_product_mean;
    s[3].dropout_module = MF_DROPOUT_OUTER_PRODUCT_MEAN;
    s[4].kind = MF_EVO_STEP_TRIANGLE_MULTIPLICATION;
    s[4].dims = &d->triangle_multiplication_outgoing;
    s[4].dropout_rate = d->triangle_multiplication_dropout_rate;
    s[4].orientation = MF_DROPOUT_ROWWISE;
    s[4].dropout_module = MF_DROPOUT_TRIANGLE_MULTIPLICATION_OUTGOING;
    s[5].kind = MF_EVO_STEP_TRIANGLE_MULTIPLICATION;
    s[5].dims = &d->triangle_multiplication_incoming;
    s[5].dropout_rate = d->triangle_multiplication_dropout_rate;
    s[5].orientation = MF_DROPOUT_ROWWISE;
    s[5].dropout_module = MF_DROPOUT_TRIANGLE_MULTIPLICATION_INCOMING;
    s[6].kind = MF_EVO_STEP_TRIANGLE_ATTENTION_STARTING_NODE;
    s[6].dims = &d->triangle_attention;
    s[6].dropout_rate = d->triangle_attention_dropout_rate;
    s[6].orientation = MF_DROPOUT_ROWWISE;
    s[6].dropout_module = MF_DROPOUT_TRIANGLE_ATTENTION_STARTING_NODE;
    s[7].kind = MF_EVO_STEP_TRIANGLE_ATTENTION_ENDING_NODE;
    s[7].dims = &d->triangle_attention;
    s[7].dropout_rate = d->triangle_attention_dropout_rate;
    s[7].orientation = MF_DROPOUT_COLUMNWISE;
    s[7].dropout_module = MF_DROPOUT_TRIANGLE_ATTENTION_ENDING_NODE;
    s[8].kind = MF_EVO_STEP_PAIR_TRANSITION;
    s[8].dims = &d->pair_transition;
    s[8].dropout_module = MF_DROPOUT_PAIR_TRANSITION;
}

void mf_evoformer_block_layout(mf_evo_block *b, const mf_evoformer_block_dims *d, bool extra_msa)
{
    *b = (mf_evo_block){.name = extra_msa ? "extra_msa_block" : "evoformer_block"};
    bind_common(b, d, NULL, NULL);
    mf_evo_step *s = b->steps;
    if (extra_msa) {
        s[1].kind = MF_EVO_STEP_MSA_COLUMN_GLOBAL_ATTENTION;
        s[1].dims = &d->msa_column_global_attention;
    } else {
        s[1].kind = MF_EVO_STEP_MSA_COLUMN_ATTENTION;
        s[1].dims = &d->msa_column_attention;
    }
}

void mf_evoformer_block_bind(mf_evo_block *b, const mf_evoformer_block_params *p,
                             mf_evoformer_block_params *dp, const mf_evoformer_block_dims *d,
                             const mf_tensor *msa_mask, const mf_tensor *pair_mask)
{
    mf_evoformer_block_layout(b, d, false);
    b->msa_mask = msa_mask;
    b->pair_mask = pair_mask;
    mf_evo_step *s = b->steps;
    s[0].params = &p->msa_row_attention_with_pair_bias;
    s[1].params = &p->msa_column_attention;
    s[2].params = &p->msa_transition;
    s[3].params = &p->outer_product_mean;
    s[4].params = &p->triangle_multiplication_outgoing;
    s[5].params = &p->triangle_multiplication_incoming;
    s[6].params = &p->triangle_attention_starting_node;
    s[7].params = &p->triangle_attention_ending_node;
    s[8].params = &p->pair_transition;
    s[0].dparams = DP(msa_row_attention_with_pair_bias);
    s[1].dparams = DP(msa_column_attention);
    s[2].dparams = DP(msa_transition);
    s[3].dparams = DP(outer_product_mean);
    s[4].dparams = DP(triangle_multiplication_outgoing);
    s[5].dparams = DP(triangle_multiplication_incoming);
    s[6].dparams = DP(triangle_attention_starting_node);
    s[7].dparams = DP(triangle_attention_ending_node);
    s[8].dparams = DP(pair_transition);
}

void mf_extra_msa_block_bind(mf_evo_block *b, const mf_extra_msa_block_params *p,
                             mf_extra_msa_block_params *dp, const mf_evoformer_block_dims *d,
                             const mf_tensor *msa_mask, const mf_tensor *pair_mask)
{
    mf_evoformer_block_layout(b, d, true);
    b->msa_mask = msa_mask;
    b->pair_mask = pair_mask;
    mf_evo_step *s = b->steps;
    s[0].params = &p->msa_row_attention_with_pair_bias;
    s[1].params = &p->msa_column_global_attention;
    s[2].params = &p->msa_transition;
    s[3].params = &p->outer_product_mean;
    s[4].params = &p->triangle_multiplication_outgoing;
    s[5].params = &p->triangle_multiplication_incoming;
    s[6].params = &p->triangle_attention_starting_node;
    s[7].params = &p->triangle_attention_ending_node;
    s[8].params = &p->pair_transition;
    s[0].dparams = DP(msa_row_attention_with_pair_bias);
    s[1].dparams = DP(msa_column_global_attention);
    s[2].dparams = DP(msa_transition);
    s[3].dparams = DP(outer_product_mean);
    s[4].dparams = DP(triangle_multiplication_outgoing);
    s[5].dparams = DP(triangle_multiplication_incoming);
    s[6].dparams = DP(triangle_attention_starting_node);
    s[7].dparams = DP(triangle_attention_ending_node);
    s[8].dparams = DP(pair_transition);
}

#undef DP

mf_status mf_evoformer_block_forward(mf_ctx *ctx, mf_tensor *m_out, mf_tensor *z_out,
                                     mf_evoformer_block_saved *saved, const mf_tensor *m_in,
                                     const mf_tensor *z_in, const mf_tensor *msa_mask,
                                     const mf_tensor *pair_mask, const mf_evoformer_block_params *p,
                                     const mf_evoformer_block_dims *d, const mf_dropout_key *key)
{
    MF_REQUIRE(p && d, "evoformer_block: parameters and dims required");
    mf_evo_block b;
    mf_evoformer_block_bind(&b, p, NULL, d, msa_mask, pair_mask);
    return mf_evo_block_forward(ctx, &b, m_out, z_out, saved, m_in, z_in, key);
}

mf_status mf_evoformer_block_backward(mf_ctx *ctx, mf_tensor *dm_in, mf_tensor *dz_in,
                                      mf_evoformer_block_params *dp, const mf_tensor *dm_out,
                                      const mf_tensor *dz_out,
                                      const mf_evoformer_block_saved *saved,
                                      const mf_tensor *msa_mask, const mf_tensor *pair_mask,
                                      const mf_evoformer_block_params *p,
                                      const mf_evoformer_block_dims *d)
{
    MF_REQUIRE(p && d, "evoformer_block backward: parameters and dims required");
    mf_evo_block b;
    mf_evoformer_block_bind(&b, p, dp, d, msa_mask, pair_mask);
    return mf_evo_block_backward(ctx, &b, dm_in, dz_in, dm_out, dz_out, saved);
}

mf_status mf_extra_msa_block_forward(mf_ctx *ctx, mf_tensor *m_out, mf_tensor *z_out,
                                     mf_evoformer_block_saved *saved, const mf_tensor *m_in,
                                     const mf_tensor *z_in, const mf_tensor *msa_mask,
                                     const mf_tensor *pair_mask, const mf_extra_msa_block_params *p,
                                     const mf_evoformer_block_dims *d, const mf_dropout_key *key)
{
    MF_REQUIRE(p && d, "extra_msa_block: parameters and dims required");
    mf_evo_block b;
    mf_extra_msa_block_bind(&b, p, NULL, d, msa_mask, pair_mask);
    return mf_evo_block_forward(ctx, &b, m_out, z_out, saved, m_in, z_in, key);
}

mf_status mf_extra_msa_block_backward(mf_ctx *ctx, mf_tensor *dm_in, mf_tensor *dz_in,
                                      mf_extra_msa_block_params *dp, const mf_tensor *dm_out,
                                      const mf_tensor *dz_out,
                                      const mf_evoformer_block_saved *saved,
                                      const mf_tensor *msa_mask, const mf_tensor *pair_mask,
                                      const mf_extra_msa_block_params *p,
                                      const mf_evoformer_block_dims *d)
{
    MF_REQUIRE(p && d, "extra_msa_block backward: parameters and dims required");
    mf_evo_block b;
    mf_extra_msa_block_bind(&b, p, dp, d, msa_mask, pair_mask);
    return mf_evo_block_backward(ctx, &b, dm_in, dz_in, dm_out, dz_out, saved);
}

/* ---- memory model ---------------------------------------------------------------------------- */

/* A saving forward is a trained one: its key is a training key (dropout at d's rates). */
static mf_dropout_key plan_key(bool training)
{
    return training ? mf_dropout_key_training(0, 0, 0) : mf_dropout_key_inference();
}

static void plan_forward(mf_memsim *s, int64_t n_seq, int64_t n_res,
                         const mf_evoformer_block_dims *d, bool extra_msa, bool saving)
{
    mf_evo_block b;
    mf_evoformer_block_layout(&b, d, extra_msa);
    const mf_dropout_key key = plan_key(saving);
    mf_evo_block_plan_forward(s, &b, n_seq, n_res, saving, &key);
}

static void plan_backward(mf_memsim *s, int64_t n_seq, int64_t n_res,
                          const mf_evoformer_block_dims *d, bool extra_msa, bool dparams)
{
    mf_evo_block b;
    mf_evoformer_block_layout(&b, d, extra_msa);
    const mf_dropout_key key = plan_key(true);
    mf_evo_block_plan_backward(s, &b, n_seq, n_res, &key, dparams);
}

void mf_evoformer_block_plan_forward(mf_memsim *s, int64_t n_seq, int64_t n_res,
                                     const mf_evoformer_block_dims *d, bool saving)
{
    plan_forward(s, n_seq, n_res, d, false, saving);
}

void mf_evoformer_block_plan_backward(mf_memsim *s, int64_t n_seq, int64_t n_res,
                                      const mf_evoformer_block_dims *d, bool dparams)
{
    plan_backward(s, n_seq, n_res, d, false, dparams);
}

void mf_extra_msa_block_plan_forward(mf_memsim *s, int64_t n_extra, int64_t n_res,
                                     const mf_evoformer_block_dims *d, bool saving)
{
    plan_forward(s, n_extra, n_res, d, true, saving);
}

void mf_extra_msa_block_plan_backward(mf_memsim *s, int64_t n_extra, int64_t n_res,
                                      const mf_evoformer_block_dims *d, bool dparams)
{
    plan_backward(s, n_extra, n_res, d, true, dparams);
}
