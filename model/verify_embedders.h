/* The embedders against shared/testvectors (README there): parameters from params_af2.npz (official
 * names under alphafold/alphafold_iteration/evoformer/), inputs from features.h5 and the recorded
 * stage inputs of expected_outputs.h5 intermediates/<stage>/in_*, outputs compared with
 * intermediates/<stage>/out_* (max|c - r| / max|r| <= the dataset's rtol attribute, 1e-4) for
 * every recycling iteration r (and template t):
 *   input_embedder            out_msa[r], out_pair[r]       from target_feat, msa_feat[r],
 * residue_index recycling_embedder        out_m1_update[r], out_z_update[r] from in_m1_prev,
 * in_z_prev, in_pseudo_beta_prev[r] template_pair_embedder    in_template_pair_feat[r, t] built
 * from the template features, and out[r, t] from the recorded feature template_single_embedder
 * in_template_angle_feat[r] built, out[r] from the recorded feature extra_msa_embedder
 * in_extra_msa_feat[r] built from extra_msa[r] etc., out[r] from the recorded feature masks rows
 * N_seq.. of intermediates/masks/evoformer_msa_mask (template torsion-mask rows) Forward passes run
 * with saved activations on (the training path). The files hold no per-stage gradients: the
 * embedders' backward passes are checked against finite differences in tests/test_embedders.c.
 * Needs a CPU context. */
#ifndef MF_MODEL_VERIFY_EMBEDDERS_H
#define MF_MODEL_VERIFY_EMBEDDERS_H

#include "core/context.h"
#include "model/module_verify.h"

/* testvector_dir: the folder holding params_af2.npz, features.h5, expected_outputs.h5 and
 * config.json. Appends one item per compared dataset slice to report. */
mf_status mf_verify_embedders(mf_ctx *ctx, const char *testvector_dir, mf_verify_report *report);

#endif
