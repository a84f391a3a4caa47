/* Memory-model plans of the training loss (loss.h): the arena scratch of mf_loss_forward and
 * mf_loss_backward in loss.c's order. */
#include "model/loss.h"
#include "model/losses_simple.h"

/* to_double / zeros_double of loss.c: n doubles, at least one */
static void dbl(mf_memsim *s, int64_t n)
{
    mf_memsim_alloc(s, MF_MEM_WORK, sizeof(double) * (size_t)(n > 0 ? n : 1));
}

/* structure_setup: double copies of the predictions and labels, the renaming, scratch, tables */
static void plan_structure_setup(mf_memsim *s, int64_t N, int64_t L)
{
    const int64_t G = MF_NUM_RIGID_GROUPS, A14 = MF_ATOM14;
    dbl(s, L * N * 7);          /* frames */
    dbl(s, L * N * 14);         /* angles */
    dbl(s, L * N * 14);         /* unnormalized angles */
    dbl(s, N * G * 9);          /* last layer's side-chain frames */
    dbl(s, N * G * 3);          /* .. translations */
    dbl(s, N * A14 * 3);        /* .. atom14 positions */
    dbl(s, L * N * 9);          /* backbone rotations */
    dbl(s, L * N * 3);          /* .. translations */
    dbl(s, N * A14 * 3);        /* atom14_gt_positions */
    dbl(s, N * A14 * 3);        /* atom14_alt_gt_positions */
    dbl(s, N * A14);            /* atom14_gt_exists */
    dbl(s, N * A14);            /* atom14_alt_gt_exists */
    dbl(s, N * A14);            /* atom14_atom_is_ambiguous */
    dbl(s, N * G * 16);         /* rigidgroups_gt_frames */
    dbl(s, N * G * 16);         /* rigidgroups_alt_gt_frames */
    dbl(s, N * G);              /* rigidgroups_gt_exists */
    dbl(s, N);                  /* backbone_rigid_mask */
    dbl(s, N * MF_NUM_CHI);     /* chi_mask */
    dbl(s, N * MF_NUM_CHI * 2); /* chi_angles_sin_cos */
    dbl(s, N);                  /* seq_mask */
    dbl(s, N * A14);            /* atom14_atom_exists */
    dbl(s, N * 12);             /* true backbone frames */
    dbl(s, N);                  /* alt_naming_is_better */
    dbl(s, N * A14 * 3);        /* renamed positions */
    dbl(s, N * A14);            /* .. exists */
    dbl(s, N * G * 9);          /* renamed frames */
    dbl(s, N * G * 3);
    dbl(s, 16 * N + 8 * N); /* work */
    mf_memsim_alloc(s, MF_MEM_WORK, sizeof(mf_violation_tables));
}

void mf_loss_plan_forward(mf_memsim *s, int64_t n_seq, int64_t n_res, int64_t num_layers,
                          const mf_config *cfg)
{
    const mf_memsim_mark_t mark = mf_memsim_mark(s);
    plan_structure_setup(s, n_res, num_layers);
    mf_distogram_loss_plan_forward(s, n_res);
    mf_plddt_loss_plan_forward(s, n_res);
    mf_masked_msa_loss_plan_forward(s, n_seq);
    if (cfg->heads.predicted_aligned_error_enabled) mf_tm_loss_plan_forward(s, n_res);
    mf_memsim_release(s, mark);
}

mf_loss_plan_grads mf_loss_plan_grads_all(float resolution)
{
    return (mf_loss_plan_grads){.frames = true,
                                .angles = true,
                                .lddt_logits = true,
                                .dtotal = 1.0,
                                .resolution = resolution};
}

void mf_loss_plan_backward(mf_memsim *s, int64_t n_seq, int64_t n_res, int64_t num_layers,
                           const mf_config *cfg, const mf_loss_plan_grads *g)
{
    (void)n_seq; /* the masked MSA loss's backward takes no scratch */
    const int64_t N = n_res, L = num_layers, G = MF_NUM_RIGID_GROUPS;
    const mf_loss_config *lc = &cfg->loss;
    const mf_memsim_mark_t mark = mf_memsim_mark(s);
    plan_structure_setup(s, N, L);
    /* structure_backward (its buffers stay until the end) */
    if (g->frames) {
        dbl(s, L * N * 9);
        dbl(s, L * N * 3);
        dbl(s, L * N * 7);
    }
    dbl(s, N * G * 9);
    dbl(s, N * G * 3);
    dbl(s, N * MF_ATOM14 * 3);
    if (g->angles) {
        dbl(s, L * N * 14);
        dbl(s, L * N * 14);
    }
    if (g->lddt_logits) {
        /* loss.c's scale of the term: dtotal * sqrt(min(seq_length, N)) * weight, zero exactly
         * when dtotal or the weight is */
        const mf_plddt_loss_options po = {
            .cutoff = lc->plddt_cutoff,
            .resolution = {.filter_by_resolution = true,
                           .min_resolution = lc->plddt_min_resolution,
                           .max_resolution = lc->plddt_max_resolution}};
        mf_plddt_loss_plan_backward(s, N, g->dtotal * lc->weights.plddt_loss, g->resolution, &po);
    }
    mf_memsim_release(s, mark);
}
