/* The memory model's replay of mf_alphafold_inference (memopt/memplan.h, model/memplan_model.h). */
#ifndef MF_MODEL_ALPHAFOLD_MEMPLAN_H
#define MF_MODEL_ALPHAFOLD_MEMPLAN_H

#include "memopt/memplan.h"
#include "model/alphafold.h"
#include "model/memplan_model.h"

/* The arena allocations of mf_alphafold_inference (no hook, no early stop) with shape's
 * lengths: shape->iterations iterations, templates when m->templates and shape->n_templ > 0,
 * all heads when shape->all_heads, under s->policy. Leaves allocated what the inference leaves
 * for its caller (the outputs, the relative-position bins, the pair mask). */
void mf_alphafold_plan_inference(mf_memsim *s, const mf_alphafold_model *m,
                                 const mf_memplan_shape *shape);
/* The same with the trunk on another context (mf_alphafold_options.trunk_ctx): host's
 * allocations (outputs, features, structure module, heads) and trunk's (embedders, stacks,
 * Evoformer and the trunk's copies of what it reads); trunk ends where it began. trunk NULL or
 * host: mf_alphafold_plan_inference. */
void mf_alphafold_plan_inference_split(mf_memsim *host, mf_memsim *trunk,
                                       const mf_alphafold_model *m, const mf_memplan_shape *shape);

#endif
