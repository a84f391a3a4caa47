/* The AlphaFold 2 training loss of one sample (suppl. 1.9 eq. 7; AF2 modules.py AlphaFold and the
 * heads' loss functions), forward and backward to the model outputs it reads:
 *
 *   unscaled_loss = sum_t weight_t * term_t          (weights: cfg->weights, AF2's names)
 *   loss/total    = unscaled_loss * sqrt(min(seq_length, N))
 *
 * with N the sample's (cropped) residue count, as AF2's training scales each example's loss by the
 * square root of its cropped length. The terms (AF2's loss names):
 *   distogram                 1.9.8   distogram head vs. the true pseudo-beta distances
 *   experimentally_resolved   1.9.10  sigmoid cross entropy vs. all_atom_mask (resolution filter)
 *   fape                      1.9.2   backbone_weight * backbone FAPE averaged over the structure
 *                                     layers (use_clamped_fape of the features mixes clamped and
 *                                     unclamped, suppl. 1.11.5) + sidechain_weight * side-chain
 *                                     FAPE of the last layer after AF2's renaming (Alg. 26, 28)
 *   plddt_loss                1.9.6   pLDDT head vs. lDDT-Ca bins of the final positions (targets
 *                                     stop-gradient; resolution filter)
 *   masked_msa                1.9.9   masked MSA head vs. true_msa at bert_mask
 *   supervised_chi            1.9.1   Alg. 27 over the layers, chi_weight and angle_norm_weight
 *   violation                 1.9.11  structural violations of the last layer's atom14 positions
 *   predicted_aligned_error   1.9.7   only for models with the PAE head (pTM): aligned-error bins
 *                                     of the last layer's backbone frames (targets stop-gradient)
 * Terms whose weight is 0 are still computed and reported (their gradient is then zero), so a
 * dump always lists every term of the model.
 *
 * The head terms run the model/losses_simple.h functions on the logits in the run's precision
 * (f32, or f64: the finite-difference oracle). The structure terms run the double references of
 * structure_module/losses_structure.h on double copies of the structure-module outputs in both
 * precisions (the arrays are O(L N) and the references sum in double anyway; one code path for the
 * f32 run and its f64 oracle), and their gradients are added back in the run's precision.
 * Everything runs on the host: CPU tensors, scratch from ctx->arena (released before return). */
#ifndef MF_MODEL_LOSS_H
#define MF_MODEL_LOSS_H

#include <stdbool.h>
#include <stdint.h>

#include "core/context.h"
#include "memopt/memplan.h"
#include "data/processed.h"
#include "model/config.h"
#include "structure_module/losses_structure.h"

typedef enum {
    MF_LOSS_DISTOGRAM = 0,
    MF_LOSS_EXPERIMENTALLY_RESOLVED,
    MF_LOSS_FAPE,
    MF_LOSS_PLDDT,
    MF_LOSS_MASKED_MSA,
    MF_LOSS_SUPERVISED_CHI,
    MF_LOSS_VIOLATION,
    MF_LOSS_PREDICTED_ALIGNED_ERROR,
    MF_LOSS_NUM_TERMS
} mf_loss_term;

/* AF2's name of term k ("distogram", ..., "plddt_loss", ...; train_expected.h5 loss/<name>). */
const char *mf_loss_term_name(int k);
/* cfg->weights of term k. */
double mf_loss_term_weight(const mf_loss_config *cfg, int k);

typedef struct {
    bool present[MF_LOSS_NUM_TERMS]; /* the PAE term only with the PAE head */
    double term[MF_LOSS_NUM_TERMS];
    double weight[MF_LOSS_NUM_TERMS];
    double unscaled_loss;
    double total_scale; /* sqrt(min(seq_length, N)) */
    double total;
    /* parts of the terms, for logs */
    double fape_backbone, fape_sidechain, final_layer_backbone_fape;
    double chi_loss, angle_norm_loss;
    mf_violation_terms violation;
} mf_loss_values;

/* The model outputs the loss reads (host tensors, all f32 or all f64); the same struct holds
 * their gradients in backward (a field with data == NULL is not needed / not computed). L =
 * structure-module layers, S = MSA clusters (template rows excluded). */
typedef struct {
    mf_tensor distogram_logits;               /* [N, N, distogram bins] */
    mf_tensor masked_msa_logits;              /* [S, N, 23] */
    mf_tensor experimentally_resolved_logits; /* [N, 37] */
    mf_tensor lddt_logits;                    /* [N, plddt bins] */
    mf_tensor pae_logits;                     /* [N, N, pae bins] (pTM models) */
    mf_tensor frames;                         /* [L, N, 7] quaternion + translation (A) */
    mf_tensor sidechain_rot;                  /* [L, N, 8, 9] */
    mf_tensor sidechain_trans;                /* [L, N, 8, 3] (A) */
    mf_tensor positions;                      /* [L, N, 14, 3] (A) */
    mf_tensor angles, unnormalized_angles;    /* [L, N, 7, 2] */
    mf_tensor final_atom_positions;           /* [N, 37, 3]: pLDDT targets only, no gradient */
} mf_loss_outputs;

/* The labels of one sample (views into the processed features; f32 / i32 host tensors). */
typedef struct {
    mf_structure_loss_batch structure; /* aatype, residue_index, seq_mask, atom14_*, rigidgroups_*,
                                          backbone_rigid_*, chi_* */
    mf_tensor pseudo_beta, pseudo_beta_mask; /* [N, 3], [N] */
    mf_tensor true_msa, bert_mask;           /* i32 [S, N], [S, N] of the iteration */
    mf_tensor all_atom_positions;            /* [N, 37, 3] */
    mf_tensor all_atom_mask;                 /* [N, 37] */
    mf_tensor atom37_atom_exists;            /* [N, 37] */
    float resolution;                        /* A (0 for NMR / distillation) */
    float use_clamped_fape;                  /* 1 clamped, 0 unclamped (suppl. 1.11.5) */
    double seq_length;                       /* the chain's full length */
} mf_loss_batch;

/* The labels from processed features (data/processed.h names), per-iteration features
 * (true_msa, bert_mask) of recycling slice r. Missing features are MF_ERR_FORMAT naming them;
 * use_clamped_fape defaults to 1 when the file has none. */
mf_status mf_loss_batch_from_features(mf_loss_batch *b, const mf_processed_features *f, int64_t r);

/* Every term, unscaled_loss and total. cfg: weights and settings from cfg->loss, distogram and
 * aligned-error bins from cfg->heads (the PAE term when heads.predicted_aligned_error_enabled). */
mf_status mf_loss_forward(mf_ctx *ctx, mf_loss_values *v, const mf_loss_outputs *o,
                          const mf_loss_batch *b, const mf_config *cfg);
/* ACCUMULATES dtotal * d loss/total / d output into every field of g with data (the shapes and
 * dtype of o's fields). final_atom_positions gets none (the pLDDT targets are stop-gradient).
 * The forward's discrete choices (renaming, pLDDT bins, chi alternatives) are recomputed from o
 * and are the same. */
mf_status mf_loss_backward(mf_ctx *ctx, mf_loss_outputs *g, double dtotal, const mf_loss_outputs *o,
                           const mf_loss_batch *b, const mf_config *cfg);

/* ---- memory-model plans (memopt/memplan.h; loss_memplan.c) ----------------------------------
 * The arena scratch of mf_loss_forward / mf_loss_backward (double copies of the structure outputs
 * and labels, the renaming, the gradients' double buffers and the head losses' scratch), all
 * released before they return. n_seq: the rows of true_msa; num_layers: L of the frames. */
typedef struct {
    bool frames;      /* g->frames given */
    bool angles;      /* g->angles or g->unnormalized_angles given */
    bool lddt_logits; /* g->lddt_logits given */
    double dtotal;    /* as passed to mf_loss_backward */
    float resolution; /* the batch's (whether the pLDDT term counts) */
} mf_loss_plan_grads;

/* Every gradient, dtotal 1 (model/train_step.c's backward_loss). */
mf_loss_plan_grads mf_loss_plan_grads_all(float resolution);

void mf_loss_plan_forward(mf_memsim *s, int64_t n_seq, int64_t n_res, int64_t num_layers,
                          const mf_config *cfg);
void mf_loss_plan_backward(mf_memsim *s, int64_t n_seq, int64_t n_res, int64_t num_layers,
                           const mf_config *cfg, const mf_loss_plan_grads *g);

#endif
