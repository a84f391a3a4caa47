/* Template pointwise attention (Alg. 17; the attention of AF2's TemplateEmbedding), built from
 * core/ops only. For every residue pair (i, j), the pair activation attends over the T template
 * pair activations of the same pair:
 *   q = (z[i, j] @ query_w) * c^-1/2,  k_t, v_t = t[t, i, j] @ key_w, value_w     (lines 1-2)
 *   o = sum_t softmax_t(q . k_t - 1e9 (1 - template_mask[t])) v_t                    (3-4)
 *   update[i, j] = ind * (o @ output_w + output_b)                                   (line 5)
 * ungated, no layer norm on z (AF2 feeds the pair activations as they are; the template pair
 * stack ends with its own layer norm). AF2 masks absent templates with where(mask, logits, -1e9);
 * the core adds -1e9 (1 - mask), the same softmax unless every template is masked, where AF2
 * multiplies the embedding by (sum(template_mask) > 0) = 0 ("no gradients if no templates"): ind
 * is that factor, computed on the device as sum_t mask_t softmax_t(-1e9 (1 - mask_t)) (1 when a
 * template is present, 0 when none is).
 *
 * z [N, N, c_z] (queries, c_z channels) and t [T, N, N, c_t] (keys and values, c_t channels) may
 * differ in width, which the gated attention op does not allow, so the projections and the core
 * attention (mf_attention_*) are composed here. Pairs are processed in slices of
 * ctx->policy.chunk_size rows i (N * rows pairs); every chunk size gives bitwise the same update.
 * A slice reads only its own rows of z, so at inference out may be z itself with accumulate =
 * true. Saved activations (training) come from ctx->arena; q, k, v, o in the storage precision,
 * lse and ind in f32. */
#ifndef MF_EVOFORMER_TEMPLATE_POINTWISE_ATTENTION_H
#define MF_EVOFORMER_TEMPLATE_POINTWISE_ATTENTION_H

#include <stdbool.h>

#include "core/context.h"
#include "model/params.h"
#include "memopt/memplan.h"

typedef struct {
    int64_t c_z, c_t;  /* pair and template pair channels */
    int64_t num_heads; /* H */
    int64_t c_hidden;  /* channels per head */
} mf_template_pointwise_attention_dims;

typedef struct {
#define MF_PARAM MF_PARAM_FIELD
#include "evoformer/template_pointwise_attention.def"
#undef MF_PARAM
} mf_template_pointwise_attention_params;

int mf_template_pointwise_attention_param_specs(const mf_template_pointwise_attention_dims *d,
                                                mf_param_spec *out);

/* q [N*N, 1, H, c_hidden] (scaled), k, v [N*N, T, H, c_hidden], o [N*N, 1, H, c_hidden] in the
 * storage precision; lse [N*N, H, 1] and ind [1] in f32 (the input's dtype for f64 runs). */
typedef struct {
    mf_tensor q, k, v, o, lse, ind;
} mf_template_pointwise_attention_saved;

/* out, z [N, N, c_z]; t [T, N, N, c_t]; template_mask [T]. */
mf_status mf_template_pointwise_attention_forward(mf_ctx *ctx, mf_tensor *out, bool accumulate,
                                                  mf_template_pointwise_attention_saved *saved,
                                                  const mf_tensor *z, const mf_tensor *t,
                                                  const mf_tensor *template_mask,
                                                  const mf_template_pointwise_attention_params *p,
                                                  const mf_template_pointwise_attention_dims *d);
/* Accumulates into dz, dt (either may be NULL) and every dp field with data (dp may be NULL). */
mf_status mf_template_pointwise_attention_backward(
    mf_ctx *ctx, mf_tensor *dz, mf_tensor *dt, mf_template_pointwise_attention_params *dp,
    const mf_tensor *dout, const mf_template_pointwise_attention_saved *saved, const mf_tensor *z,
    const mf_tensor *t, const mf_tensor *template_mask,
    const mf_template_pointwise_attention_params *p, const mf_template_pointwise_attention_dims *d);

/* Memory-model plans (memopt/memplan.h; template_pointwise_attention_memplan.c): the arena
 * allocations of the forward / backward above for an f32 run under s->policy, n_templ templates.
 * Saving leaves the saved activations allocated on the simulator; without, and the backward,
 * leave its offset unchanged. dz, dt: those gradients given; dparams: dp given with every
 * field. */
void mf_template_pointwise_attention_plan_forward(mf_memsim *s, int64_t n_templ, int64_t n_res,
                                                  const mf_template_pointwise_attention_dims *d,
                                                  bool saving, bool accumulate);
void mf_template_pointwise_attention_plan_backward(mf_memsim *s, int64_t n_templ, int64_t n_res,
                                                   const mf_template_pointwise_attention_dims *d,
                                                   bool dz, bool dt, bool dparams);

#endif
