/* Memory-model plans of the embedders (model/embedders.h; the simulator is memopt/memplan.h):
 * each replays the arena allocations of the module's f32 forward or backward, in order, on a
 * simulated arena, from the shapes and s->policy (chunk_size slices dim 0 exactly as the module
 * does, saving or not; storage decides the template single embedder's saved activation).
 *
 * Forward: with saving, s->cur rises by what the real forward leaves allocated (the recycling
 * embedder's layer-norm statistics, the template single embedder's ReLU output), kind
 * MF_MEM_SAVED; the others keep nothing. Backward: s->cur unchanged at return. Flags say which
 * gradients the call is given (the parameter gradients all together: dparams).
 *
 * The one-hot embedders gather weight rows by i32 bin indices: on CUDA, host indices are copied
 * to the arena for each gather/scatter (counted); the CPU takes nothing for them. */
#ifndef MF_MODEL_EMBEDDERS_MEMPLAN_H
#define MF_MODEL_EMBEDDERS_MEMPLAN_H

#include <stdbool.h>
#include <stdint.h>

#include "memopt/memplan.h"
#include "model/embedders.h"

/* msa [n_seq, n_res, c_m], pair [n_res, n_res, c_z]. */
void mf_input_embedder_plan_forward(mf_memsim *s, int64_t n_seq, int64_t n_res,
                                    const mf_input_embedder_dims *d, bool saving, bool accumulate);
/* dmsa / dpair: the output gradients given; dtarget_feat / dmsa_feat: feature gradients asked. */
void mf_input_embedder_plan_backward(mf_memsim *s, int64_t n_seq, int64_t n_res,
                                     const mf_input_embedder_dims *d, bool dmsa, bool dpair,
                                     bool dtarget_feat, bool dmsa_feat, bool dparams);

void mf_recycling_embedder_plan_forward(mf_memsim *s, int64_t n_res,
                                        const mf_recycling_embedder_dims *d, bool saving,
                                        bool accumulate);
/* dm1_update / dz_update: the output gradients given (the recycled inputs' gradients take no
 * arena space either way). */
void mf_recycling_embedder_plan_backward(mf_memsim *s, int64_t n_res,
                                         const mf_recycling_embedder_dims *d, bool dm1_update,
                                         bool dz_update, bool dparams);

/* extra_msa_feat [n_extra, n_res, 25]. */
void mf_extra_msa_embedder_plan_forward(mf_memsim *s, int64_t n_extra, int64_t n_res,
                                        const mf_extra_msa_embedder_dims *d, bool saving,
                                        bool accumulate);
void mf_extra_msa_embedder_plan_backward(mf_memsim *s, int64_t n_extra, int64_t n_res,
                                         const mf_extra_msa_embedder_dims *d, bool dfeat,
                                         bool dparams);

/* pair_feat [n_rows, n_res, 88]: the rows of one template the call is given (the train step and
 * the inference model pass slices of rows). */
void mf_template_pair_embedder_plan_forward(mf_memsim *s, int64_t n_rows, int64_t n_res,
                                            const mf_template_pair_embedder_dims *d, bool saving,
                                            bool accumulate);
void mf_template_pair_embedder_plan_backward(mf_memsim *s, int64_t n_rows, int64_t n_res,
                                             const mf_template_pair_embedder_dims *d, bool dfeat,
                                             bool dparams);

/* angle_feat [n_templ, n_res, 57]; with saving leaves the ReLU output [n_templ, n_res, c_m] in
 * s->policy.storage. */
void mf_template_single_embedder_plan_forward(mf_memsim *s, int64_t n_templ, int64_t n_res,
                                              const mf_template_single_embedder_dims *d,
                                              bool saving, bool accumulate);
void mf_template_single_embedder_plan_backward(mf_memsim *s, int64_t n_templ, int64_t n_res,
                                               const mf_template_single_embedder_dims *d,
                                               bool dangle_feat, bool dparams);

#endif
