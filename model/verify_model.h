/* The whole AlphaFold 2 forward pass against shared/testvectors (README there): parameters from
 * params_af2.npz (configuration inferred from the shapes, structure_module.num_layers from
 * config.json), inputs from features.h5, every dataset of expected_outputs.h5 (the outputs, sm/
 * and intermediates/<stage>/<tensor> of every iteration) compared with the metric
 * max|c - r| / max|r| <= the dataset's rtol attribute (1e-4). Needs a CPU context. */
#ifndef MF_MODEL_VERIFY_MODEL_H
#define MF_MODEL_VERIFY_MODEL_H

#include "core/context.h"
#include "model/alphafold.h"
#include "model/module_verify.h"

/* Compares every dataset of the reference file ref_path (recursively) with the candidate of the
 * same name: the outputs o and, for intermediates/..., the recorder's arrays (rec may be NULL: the
 * intermediates are then reported missing). A missing or differently sized candidate is a failed
 * item (n = 0, rel = inf) naming it. Appends to report. */
mf_status mf_verify_model_outputs(const char *ref_path, const mf_alphafold_outputs *o,
                                  const mf_alphafold_recorder *rec, mf_verify_report *report);

/* The same for a dump file written by mf_alphafold_dump_write (memfold predict --dump). */
mf_status mf_verify_dump_file(const char *dump_path, const char *ref_path,
                              mf_verify_report *report);

/* The stacks fed with the reference's recorded stage inputs of every iteration, their outputs
 * compared (localises a mismatch to one stage): template_pair_stack (in_t -> out_t, with the
 * output layer norm), template_pointwise_att (in_t, in_z -> out), extra_msa_stack (in_a, in_z
 * -> out_z), evoformer_block<k> (in_m, in_z -> out_m, out_z), evoformer (in_m, in_z -> out_m,
 * out_z, out_s), structure_module (in_single, in_pair -> out_frames, out_positions, out_angles,
 * out_single). m must be bound to the reference's parameters. */
mf_status mf_verify_model_stages(mf_ctx *ctx, const mf_alphafold_model *m,
                                 const mf_processed_features *f, const char *ref_path,
                                 mf_verify_report *report);

/* Everything above for testvector_dir: binds the model, runs the stages, then the whole
 * inference with a recorder (num_iterations from features.h5) and compares it. */
mf_status mf_verify_model(mf_ctx *ctx, const char *testvector_dir, mf_verify_report *report);

#endif
