/* Template pair stack block (Alg. 16); see template_pair_block.h. */
#include "evoformer/template_pair_block.h"

mf_template_pair_block_dims
mf_template_pair_block_dims_from_config(const mf_template_pair_stack_config *s, int64_t c_t)
{
    mf_template_pair_block_dims d;
    d.triangle_attention = (mf_triangle_attention_dims){
        .c_z = c_t,
        .num_heads = s->triangle_attention.num_heads,
        .c_hidden = s->triangle_attention.c_hidden,
    };
    d.triangle_multiplication_outgoing = (mf_triangle_multiplication_dims){
        .c_z = c_t, .c_hidden = s->triangle_multiplication_c_hidden, .outgoing = true};
    d.triangle_multiplication_incoming = d.triangle_multiplication_outgoing;
    d.triangle_multiplication_incoming.outgoing = false;
    d.pair_transition = (mf_transition_dims){.c = c_t, .factor = s->pair_transition_factor};
    d.triangle_attention_dropout_rate = s->triangle_attention.dropout_rate;
    d.triangle_multiplication_dropout_rate = s->triangle_multiplication_dropout_rate;
    return d;
}

int mf_template_pair_block_param_specs(const mf_template_pair_block_dims *d, mf_param_spec *out)
{
    const struct {
        mf_evo_scope scope;
        const void *dims;
    } mods[] = {
        {MF_EVO_SCOPE_TRIANGLE_ATTENTION_STARTING_NODE, &d->triangle_attention},
        {MF_EVO_SCOPE_TRIANGLE_ATTENTION_ENDING_NODE, &d->triangle_attention},
        {MF_EVO_SCOPE_TRIANGLE_MULTIPLICATION_OUTGOING, &d->triangle_multiplication_outgoing},
        {MF_EVO_SCOPE_TRIANGLE_MULTIPLICATION_INCOMING, &d->triangle_multiplication_incoming},
        {MF_EVO_SCOPE_PAIR_TRANSITION, &d->pair_transition},
    };
    int n = 0;
    for (size_t i = 0; i < sizeof mods / sizeof mods[0]; i++)
        n += mf_evo_scoped_param_specs(mods[i].scope, mods[i].dims, out ? out + n : NULL);
    return n;
}

void mf_template_pair_block_layout(mf_evo_block *b, const mf_template_pair_block_dims *d)
{
    *b = (mf_evo_block){.name = "template_pair_block", .nsteps = 5};
    mf_evo_step *s = b->steps;
    s[0] = (mf_evo_step){.kind = MF_EVO_STEP_TRIANGLE_ATTENTION_STARTING_NODE,
                         .dims = &d->triangle_attention,
                         .dropout_rate = d->triangle_attention_dropout_rate,
                         .orientation = MF_DROPOUT_ROWWISE,
                         .dropout_module = MF_DROPOUT_TRIANGLE_ATTENTION_STARTING_NODE};
    s[1] = (mf_evo_step){.kind = MF_EVO_STEP_TRIANGLE_ATTENTION_ENDING_NODE,
                         .dims = &d->triangle_attention,
                         .dropout_rate = d->triangle_attention_dropout_rate,
                         .orientation = MF_DROPOUT_COLUMNWISE,
                         .dropout_module = MF_DROPOUT_TRIANGLE_ATTENTION_ENDING_NODE};
    s[2] = (mf_evo_step){.kind = MF_EVO_STEP_TRIANGLE_MULTIPLICATION,
                         .dims = &d->triangle_multiplication_outgoing,
                         .dropout_rate = d->triangle_multiplication_dropout_rate,
                         .orientation = MF_DROPOUT_ROWWISE,
                         .dropout_module = MF_DROPOUT_TRIANGLE_MULTIPLICATION_OUTGOING};
    s[3] = (mf_evo_step){.kind = MF_EVO_STEP_TRIANGLE_MULTIPLICATION,
                         .dims = &d->triangle_multiplication_incoming,
                         .dropout_rate = d->triangle_multiplication_dropout_rate,
                         .orientation = MF_DROPOUT_ROWWISE,
                         .dropout_module = MF_DROPOUT_TRIANGLE_MULTIPLICATION_INCOMING};
    s[4] = (mf_evo_step){.kind = MF_EVO_STEP_PAIR_TRANSITION,
                         .dims = &d->pair_transition,
                         .dropout_rate = 0.0,
                         .orientation = MF_DROPOUT_ROWWISE,
                         .dropout_module = MF_DROPOUT_PAIR_TRANSITION};
}

void mf_template_pair_block_bind(mf_evo_block *b, const mf_template_pair_block_params *p,
                                 mf_template_pair_block_params *dp,
                                 const mf_template_pair_block_dims *d, const mf_tensor *pair_mask)
{
    mf_template_pair_block_layout(b, d);
    b->pair_mask = pair_mask;
    mf_evo_step *s = b->steps;
    s[0].params = &p->triangle_attention_starting_node;
    s[1].params = &p->triangle_attention_ending_node;
    s[2].params = &p->triangle_multiplication_outgoing;
    s[3].params = &p->triangle_multiplication_incoming;
    s[4].params = &p->pair_transition;
    if (dp) {
        s[0].dparams = &dp->triangle_attention_starting_node;
        s[1].dparams = &dp->triangle_attention_ending_node;
        s[2].dparams = &dp->triangle_multiplication_outgoing;
        s[3].dparams = &dp->triangle_multiplication_incoming;
        s[4].dparams = &dp->pair_transition;
    }
}

mf_status mf_template_pair_block_forward(mf_ctx *ctx, mf_tensor *t_out,
                                         mf_template_pair_block_saved *saved, const mf_tensor *t_in,
                                         const mf_tensor *pair_mask,
                                         const mf_template_pair_block_params *p,
                                         const mf_template_pair_block_dims *d,
                                         const mf_dropout_key *key)
{
    MF_REQUIRE(p && d, "template_pair_block: parameters and dims required");
    mf_evo_block b;
    mf_template_pair_block_bind(&b, p, NULL, d, pair_mask);
    return mf_evo_block_forward(ctx, &b, NULL, t_out, saved, NULL, t_in, key);
}

mf_status
mf_template_pair_block_backward(mf_ctx *ctx, mf_tensor *dt_in, mf_template_pair_block_params *dp,
                                const mf_tensor *dt_out, const mf_template_pair_block_saved *saved,
                                const mf_tensor *pair_mask, const mf_template_pair_block_params *p,
                                const mf_template_pair_block_dims *d)
{
    MF_REQUIRE(p && d, "template_pair_block backward: parameters and dims required");
    mf_evo_block b;
    mf_template_pair_block_bind(&b, p, dp, d, pair_mask);
    return mf_evo_block_backward(ctx, &b, NULL, dt_in, NULL, dt_out, saved);
}

/* ---- memory model ---------------------------------------------------------------------------- */

void mf_template_pair_block_plan_forward(mf_memsim *s, int64_t n_res,
                                         const mf_template_pair_block_dims *d, bool saving)
{
    mf_evo_block b;
    mf_template_pair_block_layout(&b, d);
    /* a saving forward is a trained one (evoformer_block.h) */
    const mf_dropout_key key =
        saving ? mf_dropout_key_training(0, 0, 0) : mf_dropout_key_inference();
    mf_evo_block_plan_forward(s, &b, 0, n_res, saving, &key);
}

void mf_template_pair_block_plan_backward(mf_memsim *s, int64_t n_res,
                                          const mf_template_pair_block_dims *d, bool dparams)
{
    mf_evo_block b;
    mf_template_pair_block_layout(&b, d);
    const mf_dropout_key key = mf_dropout_key_training(0, 0, 0);
    mf_evo_block_plan_backward(s, &b, 0, n_res, &key, dparams);
}
