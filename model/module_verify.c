#include "model/module_verify.h"

#include <stdio.h>
#include <string.h>

#include "evoformer/verify_evoformer_attention.h"
#include "evoformer/verify_evoformer_block.h"
#include "evoformer/verify_evoformer_pair.h"
#include "structure_module/verify_ipa.h"
#include "structure_module/verify_structure.h"

/* Module name -> verifier. Modules register here as they are implemented. */
typedef struct {
    const char *module;
    mf_module_verifier run;
} verifier_entry;

static const verifier_entry verifiers[] = {
    {"backbone_update", mf_verify_backbone_update},
    {"evoformer_block", mf_verify_evoformer_block},
    {"fape_clamped", mf_verify_fape},
    {"fape_unclamped", mf_verify_fape},
    {"invariant_point_attention", mf_verify_invariant_point_attention},
    {"msa_column_attention", mf_verify_msa_column_attention},
    {"msa_column_global_attention", mf_verify_msa_column_global_attention},
    {"msa_row_attention_with_pair_bias", mf_verify_msa_row_attention_with_pair_bias},
    {"msa_transition", mf_verify_msa_transition},
    {"outer_product_mean", mf_verify_outer_product_mean},
    {"pair_transition", mf_verify_pair_transition},
    {"triangle_attention_ending_node", mf_verify_triangle_attention_ending_node},
    {"triangle_attention_starting_node", mf_verify_triangle_attention_starting_node},
    {"triangle_multiplication_incoming", mf_verify_triangle_multiplication_incoming},
    {"triangle_multiplication_outgoing", mf_verify_triangle_multiplication_outgoing},
    {"structure_module_transition", mf_verify_structure_module_transition},
    {NULL, NULL},
};

mf_module_verifier mf_find_module_verifier(const char *module)
{
    for (const verifier_entry *e = verifiers; e->module; e++)
        if (!strcmp(e->module, module)) return e->run;
    return NULL;
}

const char *const *mf_verified_modules(void)
{
    static const char *names[sizeof verifiers / sizeof verifiers[0]];
    int n = 0;
    for (const verifier_entry *e = verifiers; e->module; e++) names[n++] = e->module;
    names[n] = NULL;
    return names;
}

mf_status mf_verify_compare(mf_verify_report *report, const mf_module_vectors *v, const char *group,
                            const char *name, const float *cand, int64_t n)
{
    const mf_array_set *set = !strcmp(group, "outputs")         ? &v->outputs
                              : !strcmp(group, "grads_inputs")  ? &v->grads_inputs
                              : !strcmp(group, "grads_weights") ? &v->grads_weights
                                                                : NULL;
    MF_REQUIRE(set, "unknown reference group '%s'", group);
    const mf_h5_array *ref = mf_array_set_find(set, name);
    if (!ref) return MF_ERROR(MF_ERR_FORMAT, "%s: dataset %s/%s missing", v->path, group, name);
    if (mf_h5_array_numel(ref) != n)
        return MF_ERROR(MF_ERR_INVALID, "%s: %s/%s has %lld elements, the module produced %lld",
                        v->path, group, name, (long long)mf_h5_array_numel(ref), (long long)n);
    MF_REQUIRE(report->count < MF_VERIFY_MAX_ITEMS, "verify report full");
    mf_verify_item *it = &report->items[report->count++];
    snprintf(it->name, sizeof it->name, "%s/%s", group, name);
    const mf_skip_rows *skip = mf_module_vectors_skip(v, it->name);
    int64_t row_len = ref->ndim > 0 && ref->shape[0] ? n / ref->shape[0] : n;
    double abs_scale = !strcmp(group, "grads_weights") && mf_module_vectors_is_absolute(v, name)
                           ? v->grad_scale
                           : 0.0;
    it->result = mf_compare_maxrel(cand, ref->data, n, row_len, skip ? skip->rows : NULL,
                                   skip ? skip->count : 0, v->rtol, abs_scale);
    return MF_OK;
}

bool mf_verify_report_pass(const mf_verify_report *r)
{
    if (r->count == 0) return false;
    for (int i = 0; i < r->count; i++)
        if (!r->items[i].result.pass) return false;
    return true;
}

mf_status mf_verify_compare_tensor(mf_verify_report *report, const mf_module_vectors *v,
                                   const char *group, const char *name, const mf_tensor *t)
{
    return mf_verify_compare(report, v, group, name, t->data, mf_tensor_numel(t));
}

mf_status mf_verify_vector_tensor(const mf_module_vectors *v, const mf_array_set *set,
                                  const char *group, const char *name, mf_tensor *out)
{
    const mf_h5_array *a;
    MF_TRY(mf_array_set_get(v, set, group, name, -1, NULL, &a));
    if (a->dtype != MF_F32 || a->ndim < 1 || a->ndim > MF_MAX_DIMS)
        return MF_ERROR(MF_ERR_FORMAT, "%s: %s/%s must be f32 with 1..%d dims (has %d)", v->path,
                        group, name, MF_MAX_DIMS, a->ndim);
    *out = mf_tensor_make(a->data, MF_F32, MF_DEV_CPU, a->ndim, a->shape);
    return MF_OK;
}

mf_status mf_verify_require_cpu(const mf_ctx *ctx, const char *what)
{
    MF_REQUIRE(ctx && ctx->arena, "%s verifier: ctx and arena required", what);
    if (ctx->device != MF_DEV_CPU || ctx->arena->device != MF_DEV_CPU)
        return MF_ERROR(MF_ERR_UNSUPPORTED, "%s verifier runs on a CPU context", what);
    return MF_OK;
}
