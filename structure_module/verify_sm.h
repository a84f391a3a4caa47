/* The structure module (Alg. 20) against shared/testvectors (README there). Parameters from
 * params_af2.npz (official names under alphafold/alphafold_iteration/structure_module/), sizes from
 * their shapes, num_layers and position_scale from config.json (the parameter file does not
 * record the layer count), aatype and seq_mask from features.h5. For every recycling iteration r,
 * fed with the stage's recorded inputs intermediates/structure_module/in_single[r] and
 * in_pair[r], the forward (saved activations on: the training path; no dropout) is compared with
 * (max|c - r| / max|r| <= the dataset's rtol attribute, else 1e-4):
 *   intermediates/structure_module/out_frames[r]              [L, N, 7]
 *   intermediates/structure_module/out_sidechain_frames[r]    [L, N, 8, 4, 4] (homogeneous)
 *   intermediates/structure_module/out_unnormalized_angles[r], out_angles[r]  [L, N, 7, 2]
 *   intermediates/structure_module/out_positions[r]           [L, N, 14, 3]
 *   intermediates/structure_module/out_states[r]              [L, N, c_s] (a_1 .. a_L)
 *   intermediates/structure_module/out_single[r]              [N, c_s] (the final act)
 * and, for the last iteration, the model outputs sm/frames, sm/positions, sm/angles,
 * final_atom_positions, final_atom_mask, and train_expected.h5 train_outputs/sm/frames,
 * train_outputs/sm/positions, train_outputs/final_atom_positions (the training pass's inputs are
 * not recorded; the README states both passes run the same weights on the same features without
 * dropout, so the inference pass's recorded stage inputs stand in for them). The top-level
 * `single` of expected_outputs.h5 is the Evoformer's single (= in_single[R-1]), not the module's
 * act.
 * Training step (train_expected.h5, the last iteration's forward with saved activations): from our
 * outputs and features.h5's ground truth, the structure-module terms of loss/total with
 * config.json's weights: loss/fape (backbone_weight x backbone FAPE over the layers with the
 * features' use_clamped_fape + sidechain_weight x side-chain FAPE of the last layer, after AF2's
 * renaming), loss/supervised_chi, loss/violation and loss/plddt_loss (the predicted_lddt_head on
 * the final act), each within 1e-4; then d loss/total / d every structure-module weight (the terms'
 * backward scaled by sqrt(min(seq_length, N)), through mf_structure_module_backward) against
 * grads/<name> within 1e-3 (compare = absolute datasets against the grads group's grad_scale).
 * Nothing else in the last iteration depends on these weights, so this is the whole gradient.
 * Needs a CPU context. */
#ifndef MF_STRUCTURE_MODULE_VERIFY_SM_H
#define MF_STRUCTURE_MODULE_VERIFY_SM_H

#include "core/context.h"
#include "model/module_verify.h"

/* testvector_dir: the folder holding params_af2.npz, features.h5, expected_outputs.h5,
 * train_expected.h5 and config.json. Appends one item per compared dataset (slice) to report. */
mf_status mf_verify_structure_module(mf_ctx *ctx, const char *testvector_dir,
                                     mf_verify_report *report);

#endif
