/* The AlphaFold 2 network's parameters: one list of (scope, module specs, block count, where the
 * tensors go) drives the expected-names check, the binding to a parameter store and the random
 * initialisation, so the three cannot disagree (see alphafold.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model/alphafold.h"

/* The two modules without a table elsewhere: the Evoformer's single projection (AF2
 * common_modules.Linear 'single_activations', default 'linear' init) and the template pair
 * embedding's final layer norm (SingleTemplateEmbedding 'output_layer_norm'). Names relative to
 * MF_EMBEDDERS_SCOPE and MF_TEMPLATE_PAIR_EMBEDDER_SCOPE. */
static int single_activations_specs(const mf_config *cfg, mf_param_spec *out)
{
    const int64_t cm = cfg->channels.c_m, cs = cfg->channels.c_s;
    const mf_param_spec s[] = {
        {"single_activations//weights", MF_INIT_LINEAR, cm, 2, {cm, cs}},
        {"single_activations//bias", MF_INIT_ZEROS, 1, 1, {cs}},
    };
    if (out) memcpy(out, s, sizeof s);
    return 2;
}

static int template_output_ln_specs(const mf_config *cfg, mf_param_spec *out)
{
    const int64_t ct = cfg->channels.c_t;
    const mf_param_spec s[] = {
        {"output_layer_norm//scale", MF_INIT_ONES, 1, 1, {ct}},
        {"output_layer_norm//offset", MF_INIT_ZEROS, 1, 1, {ct}},
    };
    if (out) memcpy(out, s, sizeof s);
    return 2;
}

#define MAX_MODULE_PARAMS 160
#define MAX_MODULES       24

typedef struct {
    const char *scope;
    int n;
    int64_t num_blocks; /* > 0: stacked on a leading block axis */
    mf_tensor *params;  /* the module's struct in the model, viewed as n tensors */
    mf_param_spec specs[MAX_MODULE_PARAMS];
} module_entry;

typedef struct {
    int count;
    module_entry e[MAX_MODULES];
} module_list;

static mf_status add_module(module_list *l, const char *scope, int n, int64_t num_blocks,
                            mf_tensor *params, const char *what)
{
    MF_REQUIRE(l->count < MAX_MODULES, "alphafold: more than %d modules", MAX_MODULES);
    MF_REQUIRE(n > 0 && n <= MAX_MODULE_PARAMS,
               "alphafold: %s has %d parameters (invalid dims in the configuration?)", what, n);
    module_entry *e = &l->e[l->count++];
    e->scope = scope;
    e->n = n;
    e->num_blocks = num_blocks;
    e->params = params;
    return MF_OK;
}

/* The last added entry's spec array. */
static mf_param_spec *last_specs(module_list *l)
{
    return l->e[l->count - 1].specs;
}

mf_status mf_alphafold_model_dims(mf_alphafold_model *m, const mf_config *cfg)
{
    memset(m, 0, sizeof *m);
    MF_TRY(mf_config_validate(cfg, "model configuration"));
    m->cfg = *cfg;
    const mf_channels_config *ch = &cfg->channels;
    m->input_dims = mf_input_embedder_dims_from_config(cfg);
    m->recycling_dims = mf_recycling_embedder_dims_from_config(cfg);
    const mf_template_config *tc = &cfg->template_embedding;
    m->templates = tc->enabled;
    m->template_torsions = tc->enabled && tc->embed_torsion_angles;
    if (m->templates) {
        if (tc->pointwise_attention.gating)
            return MF_ERROR(MF_ERR_UNSUPPORTED,
                            "template.pointwise_attention.gating: a gated template pointwise "
                            "attention is not implemented (AlphaFold 2's is ungated)");
        m->template_pair_dims = mf_template_pair_embedder_dims_from_config(cfg);
        m->template_stack_blocks = tc->pair_stack.num_blocks;
        m->template_stack_dims = mf_template_pair_block_dims_from_config(&tc->pair_stack, ch->c_t);
        m->template_pointwise_dims = (mf_template_pointwise_attention_dims){
            .c_z = ch->c_z,
            .c_t = ch->c_t,
            .num_heads = tc->pointwise_attention.num_heads,
            .c_hidden = tc->pointwise_attention.c_hidden,
        };
        m->template_single_dims = mf_template_single_embedder_dims_from_config(cfg);
    }
    m->extra_msa_dims = mf_extra_msa_embedder_dims_from_config(cfg);
    m->extra_stack_blocks = cfg->extra_msa_stack.num_blocks;
    m->extra_stack_dims =
        mf_evoformer_block_dims_from_config(&cfg->extra_msa_stack, ch->c_e, ch->c_z);
    m->evoformer_blocks = cfg->evoformer.num_blocks;
    m->evoformer_dims = mf_evoformer_block_dims_from_config(&cfg->evoformer, ch->c_m, ch->c_z);
    m->sm_dims = mf_structure_module_dims_from_config(cfg);
    m->heads_dims = mf_heads_dims_from_config(cfg);
    m->pae_head = cfg->heads.predicted_aligned_error_enabled;
    return MF_OK;
}

/* Every module of m (dims set) with its scope, specs and destination. */
static mf_status collect(mf_alphafold_model *m, module_list *l)
{
    l->count = 0;
    const mf_config *cfg = &m->cfg;
#define ADD(scope, specs_fn, dims, blocks, dst, what)                                              \
    do {                                                                                           \
        int n_ = specs_fn(dims, NULL);                                                             \
        MF_TRY(add_module(l, scope, n_, blocks, MF_PARAMS_AS_ARRAY(dst), what));                   \
        specs_fn(dims, last_specs(l));                                                             \
    } while (0)
    ADD(MF_EMBEDDERS_SCOPE, mf_input_embedder_param_specs, &m->input_dims, 0, &m->input,
        "input embedder");
    ADD(MF_EMBEDDERS_SCOPE, mf_recycling_embedder_param_specs, &m->recycling_dims, 0, &m->recycling,
        "recycling embedder");
    if (m->templates) {
        ADD(MF_TEMPLATE_PAIR_EMBEDDER_SCOPE, mf_template_pair_embedder_param_specs,
            &m->template_pair_dims, 0, &m->template_pair, "template pair embedder");
        if (m->template_stack_blocks > 0)
            ADD(MF_TEMPLATE_PAIR_STACK_SCOPE, mf_template_pair_block_param_specs,
                &m->template_stack_dims, m->template_stack_blocks, &m->template_stack,
                "template pair stack");
        ADD(MF_TEMPLATE_PAIR_EMBEDDER_SCOPE, template_output_ln_specs, cfg, 0,
            &m->template_output_ln_scale, "template output layer norm");
        ADD(MF_TEMPLATE_EMBEDDING_SCOPE, mf_template_pointwise_attention_param_specs,
            &m->template_pointwise_dims, 0, &m->template_pointwise, "template pointwise attention");
        if (m->template_torsions)
            ADD(MF_EMBEDDERS_SCOPE, mf_template_single_embedder_param_specs,
                &m->template_single_dims, 0, &m->template_single, "template single embedder");
    }
    ADD(MF_EMBEDDERS_SCOPE, mf_extra_msa_embedder_param_specs, &m->extra_msa_dims, 0, &m->extra_msa,
        "extra-MSA embedder");
    if (m->extra_stack_blocks > 0)
        ADD(MF_EXTRA_MSA_STACK_SCOPE, mf_extra_msa_block_param_specs, &m->extra_stack_dims,
            m->extra_stack_blocks, &m->extra_stack, "extra-MSA stack");
    if (m->evoformer_blocks > 0)
        ADD(MF_EVOFORMER_STACK_SCOPE, mf_evoformer_block_param_specs, &m->evoformer_dims,
            m->evoformer_blocks, &m->evoformer, "Evoformer stack");
    ADD(MF_EMBEDDERS_SCOPE, single_activations_specs, cfg, 0, &m->single_activations_weights,
        "single activations");
    ADD(MF_STRUCTURE_MODULE_SCOPE, mf_structure_module_param_specs, &m->sm_dims, 0, &m->sm,
        "structure module");
    ADD(MF_DISTOGRAM_HEAD_SCOPE, mf_distogram_head_param_specs, &m->heads_dims, 0, &m->distogram,
        "distogram head");
    ADD(MF_MASKED_MSA_HEAD_SCOPE, mf_masked_msa_head_param_specs, &m->heads_dims, 0, &m->masked_msa,
        "masked MSA head");
    ADD(MF_PREDICTED_LDDT_HEAD_SCOPE, mf_predicted_lddt_head_param_specs, &m->heads_dims, 0,
        &m->predicted_lddt, "predicted lDDT head");
    ADD(MF_EXPERIMENTALLY_RESOLVED_HEAD_SCOPE, mf_experimentally_resolved_head_param_specs,
        &m->heads_dims, 0, &m->experimentally_resolved, "experimentally resolved head");
    if (m->pae_head)
        ADD(MF_PREDICTED_ALIGNED_ERROR_HEAD_SCOPE, mf_predicted_aligned_error_head_param_specs,
            &m->heads_dims, 0, &m->predicted_aligned_error, "predicted aligned error head");
#undef ADD
    return MF_OK;
}

/* The spec with the block axis prepended (stacked modules). */
static mf_param_spec stacked_spec(const mf_param_spec *s, int64_t num_blocks)
{
    mf_param_spec t = *s;
    if (num_blocks <= 0) return t;
    t.ndim = s->ndim + 1;
    t.shape[0] = num_blocks;
    for (int k = 0; k < s->ndim; k++) t.shape[k + 1] = s->shape[k];
    return t;
}

/* model_dims + collect into a heap list (the list is large). */
static mf_status prepare(mf_alphafold_model *m, const mf_config *cfg, module_list **out)
{
    *out = NULL;
    MF_TRY(mf_alphafold_model_dims(m, cfg));
    module_list *l = malloc(sizeof *l);
    if (!l) return MF_ERROR(MF_ERR_NOMEM, "alphafold: module list");
    mf_status st = collect(m, l);
    if (st != MF_OK) {
        free(l);
        return st;
    }
    for (int i = 0; i < l->count; i++)
        for (int k = 0; k < l->e[i].n; k++)
            if (l->e[i].specs[k].ndim + (l->e[i].num_blocks > 0) > MF_MAX_DIMS) {
                st = MF_ERROR(MF_ERR_INVALID, "parameter %s/%s: too many dims", l->e[i].scope,
                              l->e[i].specs[k].name);
                free(l);
                return st;
            }
    *out = l;
    return MF_OK;
}

mf_status mf_alphafold_expected_params(const mf_config *cfg, mf_param_expect_list *out)
{
    mf_alphafold_model *m = malloc(sizeof *m);
    if (!m) return MF_ERROR(MF_ERR_NOMEM, "alphafold: model");
    module_list *l = NULL;
    mf_status st = prepare(m, cfg, &l);
    for (int i = 0; st == MF_OK && i < l->count; i++)
        st = mf_param_expect_add_specs(out, l->e[i].scope, l->e[i].specs, l->e[i].n,
                                       l->e[i].num_blocks);
    free(l);
    free(m);
    return st;
}

mf_status mf_alphafold_config_for_params(const mf_param_store *s, const char *config_name,
                                         int64_t structure_layers, mf_config *cfg)
{
    MF_TRY(mf_param_store_require_monomer(s, "parameters"));
    if (config_name)
        MF_TRY(mf_config_load(config_name, cfg));
    else
        MF_TRY(mf_param_store_infer_config(s, cfg));
    if (structure_layers > 0) {
        MF_REQUIRE(structure_layers <= MF_STRUCTURE_MODULE_MAX_LAYERS,
                   "structure layers %lld: at most %d", (long long)structure_layers,
                   MF_STRUCTURE_MODULE_MAX_LAYERS);
        cfg->structure_module.num_layers = structure_layers;
    }
    return mf_config_validate(cfg, config_name ? config_name : "configuration from parameters");
}

mf_status mf_alphafold_bind(mf_alphafold_model *m, const mf_config *cfg, const mf_param_store *s)
{
    MF_TRY(mf_param_store_require_monomer(s, "parameters"));
    module_list *l = NULL;
    MF_TRY(prepare(m, cfg, &l));
    mf_param_expect_list expect;
    mf_param_expect_list_init(&expect);
    mf_status st = MF_OK;
    for (int i = 0; st == MF_OK && i < l->count; i++)
        st = mf_param_expect_add_specs(&expect, l->e[i].scope, l->e[i].specs, l->e[i].n,
                                       l->e[i].num_blocks);
    if (st == MF_OK) st = mf_param_store_check(s, &expect, NULL);
    mf_param_expect_list_free(&expect);
    for (int i = 0; st == MF_OK && i < l->count; i++) {
        module_entry *e = &l->e[i];
        if (e->num_blocks > 0)
            for (int k = 0; k < e->n; k++) e->specs[k] = stacked_spec(&e->specs[k], e->num_blocks);
        st = mf_param_store_bind(s, e->scope, e->specs, e->n, -1, e->params);
    }
    free(l);
    return st;
}

mf_status mf_alphafold_random_params(const mf_config *cfg, uint64_t seed, mf_param_store *s)
{
    MF_REQUIRE(s && s->count == 0, "alphafold random parameters: the store must be empty");
    mf_alphafold_model *m = malloc(sizeof *m);
    if (!m) return MF_ERROR(MF_ERR_NOMEM, "alphafold: model");
    module_list *l = NULL;
    mf_status st = prepare(m, cfg, &l);
    /* Parameter k of the model's list draws from its own counter-based stream k. */
    uint64_t stream = 0;
    for (int i = 0; st == MF_OK && i < l->count; i++) {
        module_entry *e = &l->e[i];
        for (int k = 0; st == MF_OK && k < e->n; k++, stream++) {
            mf_param_spec sp = stacked_spec(&e->specs[k], e->num_blocks);
            mf_tensor t = mf_tensor_make(NULL, MF_F32, MF_DEV_CPU, sp.ndim, sp.shape);
            const int64_t count = mf_tensor_numel(&t);
            t.data = malloc(sizeof(float) * (size_t)(count > 0 ? count : 1));
            if (!t.data) {
                st =
                    MF_ERROR(MF_ERR_NOMEM, "alphafold random parameters: %s/%s", e->scope, sp.name);
                break;
            }
            st = mf_params_init(&sp, 1, &t, seed, stream << 8);
            char name[1024];
            if (st == MF_OK &&
                (size_t)snprintf(name, sizeof name, "%s/%s", e->scope, sp.name) >= sizeof name)
                st = MF_ERROR(MF_ERR_INVALID, "parameter name too long: %s/%s", e->scope, sp.name);
            if (st == MF_OK) st = mf_param_store_add(s, name, &t, true);
            free(t.data);
        }
    }
    free(l);
    free(m);
    return st;
}
