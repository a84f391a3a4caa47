/* The state of the trained iteration of mf_train_step (model/train_step.c), taken from the
 * arena as that iteration's first allocation. Private to train_step.c and its memory plan
 * (train_step_memplan.c replays that allocation: its size is this struct's). */
#ifndef MF_MODEL_TRAIN_STEP_STATE_H
#define MF_MODEL_TRAIN_STEP_STATE_H

#include "evoformer/evoformer_stack.h"
#include "evoformer/template_pointwise_attention.h"
#include "model/heads.h"
#include "model/loss.h"
#include "model/train_step.h"
#include "structure_module/structure_module.h"

typedef struct {
    mf_ctx *ctx;
    const mf_alphafold_model *m;
    mf_alphafold_model *g;
    /* the trunk (train_step.h, trunk_ctx): ctx, m, g themselves without a trunk context */
    mf_ctx *tctx;
    const mf_alphafold_model *tm;
    mf_alphafold_model *tg;
    mf_recycled_state tprev; /* m1_prev, z_prev on the trunk (*prev without a trunk context) */
    /* host views of the trunk's outputs the output modules read (the trunk's own tensors without
     * a trunk context): the pair z2, the single and the MSA's first S rows */
    mf_tensor hz2, hsingle, hmsa;
    const mf_processed_features *f;
    const mf_train_step_options *opt;
    const mf_recycled_state *prev;
    mf_dtype dt;
    int64_t slice;
    uint32_t recycle;

    /* features (float inputs of ops in dt; feature-construction inputs as stored) */
    int64_t N, S, E, E_run, T, Tr;
    mf_tensor aatype, residue_index, seq_mask, target_feat, msa_feat, msa_mask_in;
    mf_tensor extra_msa, extra_msa_mask, extra_has_deletion, extra_deletion_value;
    mf_tensor t_aatype, t_positions, t_atom_mask, t_pseudo_beta, t_pseudo_beta_mask, t_mask;
    mf_tensor t_sin_cos, t_alt_sin_cos, t_torsion_mask;

    /* embedders */
    mf_tensor relpos_bins, pair_mask, rec_bins, m1u, z0, msa, msa_mask;
    mf_recycling_embedder_saved rec_saved;
    mf_input_embedder_saved in_saved;
    /* templates */
    mf_tensor t_stack, t_ln, t_ln_mean, t_ln_rstd, angle_feat, z1;
    mf_evo_stack_saved *t_saved; /* [T] */
    mf_template_pointwise_attention_saved tpa_saved;
    mf_template_single_embedder_saved ts_saved;
    /* extra MSA */
    mf_tensor a, extra_mask;
    mf_evo_stack_saved extra_saved;
    /* Evoformer */
    mf_tensor z2, single;
    mf_evo_stack_saved evo_saved;
    /* structure module and heads */
    mf_structure_module_outputs so;
    mf_structure_module_saved *sm_saved;
    mf_tensor dist_logits, msa_logits, er_logits, lddt_logits, pae_logits;
    mf_linear_head_saved dist_saved, msa_head_saved, er_saved, pae_saved;
    mf_predicted_lddt_head_saved lddt_saved;
    /* loss */
    mf_loss_batch batch;
    mf_loss_outputs lo;
} mf_train_step_state;

#endif
