/* The output heads and their losses against shared/testvectors (README there). Parameters from
 * params_af2.npz (official names under alphafold/alphafold_iteration/<head>/), sizes from their
 * shapes, bins, cutoff and loss weights from config.json.
 *
 * Heads (inference outputs of expected_outputs.h5, max|c - r| / max|r| <= the dataset's rtol,
 * 1e-4), each run with saved activations on (the training path) from the activations the file
 * stores for the last recycling iteration R-1:
 *   distogram_logits                from pair
 *   masked_msa_logits               from intermediates/evoformer/out_m[R-1] rows 0..S-1 (the
 *                                   cluster rows; the template rows carry no MSA head)
 *   experimentally_resolved_logits  from single (the Evoformer single representation)
 *   lddt_logits                     from intermediates/structure_module/out_single[R-1]
 *   plddt                           mf_compute_plddt of our lddt_logits
 * Losses (train_expected.h5 loss/<term>, rtol 1e-4), from those logits and features.h5 (the last
 * iteration's true_msa and bert_mask) and, for pLDDT, train_outputs/final_atom_positions:
 *   loss/distogram, loss/masked_msa, loss/plddt_loss, loss/experimentally_resolved.
 * Head weight gradients (train_expected.h5 grads/<escaped name>, rtol 1e-3): each head's weights
 * are reached by its own loss only, so d loss/total / d W = sqrt(min(seq_length, N)) * weight *
 * d term / d W, from the loss backward and the head backward.
 * The logits and gradients of the training pass are not stored; the inference pass's activations
 * are used for both. Both passes run the same weights on the same features without dropout (their
 * final_atom_positions agree to ~1e-6 relative), which is what makes this comparison valid.
 * Needs a CPU context. */
#ifndef MF_MODEL_VERIFY_HEADS_H
#define MF_MODEL_VERIFY_HEADS_H

#include "core/context.h"
#include "model/module_verify.h"

/* testvector_dir: the folder holding params_af2.npz, features.h5, expected_outputs.h5,
 * train_expected.h5 and config.json. Appends one item per compared dataset to report. */
mf_status mf_verify_heads(mf_ctx *ctx, const char *testvector_dir, mf_verify_report *report);

#endif
