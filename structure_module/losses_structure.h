/* AlphaFold 2's structural losses (AF2 folding.py / all_atom.py; supplement 1.9.3, 1.9.11):
 *  - ground-truth renaming of symmetric side-chain atoms (Alg. 26, no gradient through the choice);
 *  - side-chain FAPE: final layer, all 8 rigid groups x all atom14 positions (Alg. 28 through
 *    fape.h, clamp 10 A, length scale 10 A, eps 1e-4), and the backbone FAPE over the
 *    structure-module layers with AF2's use_clamped_fape mix (Alg. 20 line 17); AF2's fape term
 *    is (1 - sidechain.weight_frac) * backbone + weight_frac * side chain (weight_frac 0.5);
 *  - supervised chi loss (Alg. 27) with the angle-norm penalty on the unnormalised angles;
 *  - structural violations (suppl. 1.9.11 eq. 44-46): peptide-bond length C-N and angles CA-C-N,
 *    C-N-CA (flat bottom of violation_tolerance_factor stddevs, no bond across a residue_index
 *    jump), between-residue clashes from van der Waals radii (overlap tolerance), within-residue
 *    bond/angle bounds and clashes; AF2's structural_violation_loss and its violation metrics.
 * Epsilons are AF2's (1e-6 in bond lengths and errors, 1e-10 in distances and masked means, 1e-6
 * in the chi angle norm and the atom-count normalisation).
 *
 * The references are written once over a scalar type (losses_structure.inc) and compiled for float
 * (_f32: the model's path) and double (_f64: the oracle of finite-difference checks); sums run in
 * double in both and every OpenMP loop owns its outputs, so results do not depend on the thread
 * count. Backward functions ACCUMULATE (+=) dloss * d loss / d input; a NULL gradient is skipped.
 * Masks are real arrays (1 = present); aatype and residue_index are int32.
 *
 * Layouts: positions atom14 [N, 14, 3] in Angstrom; ground-truth rigid-group frames as the feature
 * files store them, homogeneous 4x4 row-major [N, 8, 4, 4] (rot = [:3, :3], trans = [:3, 3]);
 * predicted frames split into rot [.., 3, 3] (y = R x + t) and trans [.., 3]; angles (sin, cos)
 * [L, N, 7, 2] in AF2's torsion order omega, phi, psi, chi1..chi4. */
#ifndef MF_STRUCTURE_MODULE_LOSSES_STRUCTURE_H
#define MF_STRUCTURE_MODULE_LOSSES_STRUCTURE_H

#include <stdint.h>

#include "core/context.h"
#include "memopt/memplan.h"
#include "protein/residue_constants.h"
#include "structure_module/fape.h"

/* AF2 config (model_config: heads.structure_module) values of the options below. */
#define MF_VIOLATION_TOLERANCE_FACTOR 12.0f
#define MF_CLASH_OVERLAP_TOLERANCE    1.5f
#define MF_CHI_WEIGHT                 0.5f
#define MF_ANGLE_NORM_WEIGHT          0.01f

/* Constants of find_structural_violations, built once: the peptide-bond geometry of
 * residue_constants, atom14 van der Waals radii (element = first letter of the atom name; 0 for
 * absent slots) and make_atom14_dists_bounds(clash_overlap_tolerance,
 * violation_tolerance_factor). About 34 KB.
 * As in AF2's all_atom.between_residue_bond_loss (and OpenFold's), the CA-C-N angle's tolerance
 * is violation_tolerance_factor times the C-N bond-length stddev (0.014), not the angle's own
 * stddev (cos_angle_ca_c_n[1], kept for reference only). */
typedef struct {
    float violation_tolerance_factor; /* stddevs of the flat bottom (AF2: 12) */
    float clash_overlap_tolerance;    /* Angstrom (AF2: 1.5) */
    /* [0] general, [1] before a proline: C-N length and its stddev (Angstrom) */
    float bond_length_c_n[2], bond_length_stddev_c_n[2];
    /* [0] mean, [1] stddev of cos(CA-C-N) and cos(C-N-CA) */
    float cos_angle_ca_c_n[2], cos_angle_c_n_ca[2];
    float atom14_radius[MF_NUM_RESTYPES_WITH_X][MF_ATOM14];
    float atom14_dists_lower[MF_NUM_RESTYPES_WITH_X][MF_ATOM14][MF_ATOM14];
    float atom14_dists_upper[MF_NUM_RESTYPES_WITH_X][MF_ATOM14][MF_ATOM14];
} mf_violation_tables;

void mf_violation_tables_init(mf_violation_tables *t, float violation_tolerance_factor,
                              float clash_overlap_tolerance);

/* The scalar terms of find_structural_violations and the loss structural_violation_loss builds
 * from them (without structural_violation_loss_weight):
 *   loss = bonds_c_n_loss_mean + angles_ca_c_n_loss_mean + angles_c_n_ca_loss_mean
 *          + (clashes_loss_sum + within_residues_loss_sum) / (1e-6 + num_atoms). */
typedef struct {
    double bonds_c_n_loss_mean;
    double angles_ca_c_n_loss_mean;
    double angles_c_n_ca_loss_mean;
    double clashes_mean_loss;        /* metric: mean over the non-bonded between-residue pairs */
    double clashes_loss_sum;         /* sum of clashes_per_atom_loss_sum (each pair twice) */
    double within_residues_loss_sum; /* sum of the within-residue per_atom_loss_sum */
    double num_atoms;                /* sum of atom14_atom_exists */
    double loss;
} mf_violation_terms;

/* compute_violation_metrics (fractions of residues; no gradient). */
typedef struct {
    double violations_extreme_ca_ca_distance; /* consecutive CA-CA > 3.8 + 1.5 A */
    double violations_between_residue_bond;
    double violations_between_residue_clash;
    double violations_within_residue;
    double violations_per_residue;
} mf_violation_metrics;

/* Raw host references (see the top comment for layouts and conventions). */
#define MF_LOSSES_STRUCTURE_DECLARE(real, SUF)                                                     \
    /* Alg. 26 lines 1-5 (find_optimal_renaming): 1 where the alternative naming of the            \
     * ambiguous atoms is closer, by the sum over (ambiguous atom of residue i, non-ambiguous atom \
     * of any residue) of |d_pred - d_gt| (AF2's sqrt(1e-10 + ...) forms), else 0. */              \
    void mf_find_optimal_renaming_##SUF(                                                           \
        real *alt_naming_is_better /* [N] */, const real *atom14_gt_positions,                     \
        const real *atom14_alt_gt_positions, const real *atom14_atom_is_ambiguous /* [N, 14] */,   \
        const real *atom14_gt_exists /* [N, 14] */, const real *atom14_pred_positions, int64_t N); \
    /* Alg. 26 lines 6-7 (compute_renamed_ground_truth and the frame renaming of sidechain_loss):  \
     * per residue either the ground truth or its alternative (selected, not blended, so a         \
     * non-finite unused alternative cannot leak in). The frame outputs may be NULL (then the      \
     * frame inputs are not read). */                                                              \
    void mf_rename_ground_truth_##SUF(                                                             \
        real *renamed_atom14_gt_positions /* [N, 14, 3] */,                                        \
        real *renamed_atom14_gt_exists /* [N, 14] */, real *renamed_gt_rot /* [N, 8, 3, 3] */,     \
        real *renamed_gt_trans /* [N, 8, 3] */, const real *alt_naming_is_better,                  \
        const real *atom14_gt_positions, const real *atom14_alt_gt_positions,                      \
        const real *atom14_gt_exists, const real *atom14_alt_gt_exists,                            \
        const real *rigidgroups_gt_frames /* [N, 8, 4, 4] */,                                      \
        const real *rigidgroups_alt_gt_frames /* [N, 8, 4, 4] */, int64_t N);                      \
    /* sidechain_loss: FAPE of the final layer's 8N frames and 14N atoms against the renamed       \
     * ground truth; frames mask rigidgroups_gt_exists, positions mask renamed_atom14_gt_exists.   \
     * work [16 N] doubles. */                                                                     \
    void mf_sidechain_fape_##SUF(                                                                  \
        real *loss, double *work, const real *pred_rot /* [N, 8, 3, 3] */,                         \
        const real *pred_trans /* [N, 8, 3] */, const real *pred_positions /* [N, 14, 3] */,       \
        const real *renamed_gt_rot, const real *renamed_gt_trans,                                  \
        const real *rigidgroups_gt_exists /* [N, 8] */, const real *renamed_atom14_gt_positions,   \
        const real *renamed_atom14_gt_exists, int64_t N, real clamp_distance, real length_scale,   \
        real eps);                                                                                 \
    void mf_sidechain_fape_backward_##SUF(                                                         \
        real *dpred_rot, real *dpred_trans, real *dpred_positions, real dloss,                     \
        const real *pred_rot, const real *pred_trans, const real *pred_positions,                  \
        const real *renamed_gt_rot, const real *renamed_gt_trans,                                  \
        const real *rigidgroups_gt_exists, const real *renamed_atom14_gt_positions,                \
        const real *renamed_atom14_gt_exists, int64_t N, real clamp_distance, real length_scale,   \
        real eps);                                                                                 \
    /* backbone_loss: per layer l the FAPE of the L x N predicted backbone frames with their       \
     * translations as positions (both masks backbone_mask), mixed                                 \
     * use_clamped_fape * clamped + (1 - use_clamped_fape) * unclamped (suppl. 1.11.5), averaged   \
     * over the layers; final_layer_fape (may be NULL) is the last layer's (AF2 ret['fape']).      \
     * clamp_distance is the clamped branch's. work [2 N] doubles. */                              \
    void mf_backbone_fape_##SUF(                                                                   \
        real *loss, real *final_layer_fape, double *work, const real *pred_rot /* [L, N, 3, 3] */, \
        const real *pred_trans /* [L, N, 3] */, const real *gt_rot /* [N, 3, 3] */,                \
        const real *gt_trans /* [N, 3]                                                             \
                              */                                                                   \
        ,                                                                                          \
        const real *backbone_mask /* [N] */, int64_t L, int64_t N, real use_clamped_fape,          \
        real clamp_distance, real length_scale, real eps);                                         \
    void mf_backbone_fape_backward_##SUF(                                                          \
        real *dpred_rot, real *dpred_trans, real dloss, const real *pred_rot,                      \
        const real *pred_trans, const real *gt_rot, const real *gt_trans,                          \
        const real *backbone_mask, int64_t L, int64_t N, real use_clamped_fape,                    \
        real clamp_distance, real length_scale, real eps);                                         \
    /* Alg. 27 (supervised_chi_loss): loss = chi_weight * chi_loss + angle_norm_weight *           \
     * angle_norm_loss, chi_loss = mean over layers and chi_mask of min(|t - p|^2, |t' - p|^2)     \
     * on (sin, cos) of chi1..4 (t' = -t for the pi-periodic chis), angle_norm_loss = mean over    \
     * layers, 7 torsions and seq_mask of |sqrt(|u|^2 + 1e-6) - 1| of the unnormalised angles u.   \
     * chi_loss and angle_norm_loss may be NULL. An aatype outside 0..20 has no pi-periodic chi    \
     * (AF2's one-hot gives a zero row). */                                                        \
    void mf_supervised_chi_loss_##SUF(                                                             \
        real *loss, real *chi_loss, real *angle_norm_loss,                                         \
        const real *angles_sin_cos /* [L, N, 7, 2] */,                                             \
        const real *unnormalized_angles_sin_cos /* [L, N, 7, 2] */,                                \
        const int32_t *aatype /* [N] */, const real *seq_mask /* [N] */,                           \
        const real *chi_mask /* [N, 4] */, const real *chi_angles_sin_cos /* [N, 4, 2] */,         \
        int64_t L, int64_t N, real chi_weight, real angle_norm_weight);                            \
    /* Where the two chi errors tie (always for 2pi-periodic chis, whose alternatives coincide)    \
     * the gradient follows the unshifted truth; |.| has zero slope at exactly 1. */               \
    void mf_supervised_chi_loss_backward_##SUF(                                                    \
        real *dangles_sin_cos, real *dunnormalized_angles_sin_cos, real dloss,                     \
        const real *angles_sin_cos, const real *unnormalized_angles_sin_cos,                       \
        const int32_t *aatype, const real *seq_mask, const real *chi_mask,                         \
        const real *chi_angles_sin_cos, int64_t L, int64_t N, real chi_weight,                     \
        real angle_norm_weight);                                                                   \
    /* find_structural_violations + structural_violation_loss. Each per-residue/per-atom output    \
     * may be NULL. work [8 N] doubles. Between-residue pairs need                                 \
     * residue_index[i] < residue_index[j] (AF2's upper triangle), bonds and the C-N clash         \
     * exclusion residue_index[i + 1] == residue_index[i] + 1. */                                  \
    typedef struct {                                                                               \
        real *connections_per_residue_loss_sum;       /* [N] (AF2: unmasked link losses) */        \
        real *connections_per_residue_violation_mask; /* [N] */                                    \
        real *clashes_per_atom_loss_sum;              /* [N, 14] */                                \
        real *clashes_per_atom_clash_mask;            /* [N, 14] */                                \
        real *within_residues_per_atom_loss_sum;      /* [N, 14] */                                \
        real *within_residues_per_atom_violations;    /* [N, 14] */                                \
        real *total_per_residue_violations_mask;      /* [N] */                                    \
    } mf_violation_outputs_##SUF;                                                                  \
    void mf_structural_violations_##SUF(                                                           \
        mf_violation_terms *terms, const mf_violation_outputs_##SUF *out, double *work,            \
        const real *atom14_pred_positions /* [N, 14, 3] */,                                        \
        const real *atom14_atom_exists /* [N, 14] */, const int32_t *residue_index /* [N] */,      \
        const int32_t *aatype /* [N] */, const mf_violation_tables *tables, int64_t N);            \
    /* d terms->loss / d atom14_pred_positions. work [8 N] doubles. */                             \
    void mf_structural_violation_loss_backward_##SUF(                                              \
        real *datom14_pred_positions, real dloss, double *work, const real *atom14_pred_positions, \
        const real *atom14_atom_exists, const int32_t *residue_index, const int32_t *aatype,       \
        const mf_violation_tables *tables, int64_t N);                                             \
    /* compute_violation_metrics from the masks mf_structural_violations_* wrote. */               \
    void mf_violation_metrics_##SUF(                                                               \
        mf_violation_metrics *metrics, const real *atom14_pred_positions,                          \
        const real *atom14_atom_exists, const int32_t *residue_index,                              \
        const real *seq_mask /* [N] */, const mf_violation_outputs_##SUF *violations, int64_t N);

MF_LOSSES_STRUCTURE_DECLARE(float, f32)
MF_LOSSES_STRUCTURE_DECLARE(double, f64)

/* ---- tensor entry points (CPU tensors; f32 unless said otherwise) ----
 * The ground truth of one sample in the feature files' names; each function checks the fields it
 * reads (a field with data == NULL is absent). */
typedef struct {
    mf_tensor aatype;                    /* [N] i32 */
    mf_tensor residue_index;             /* [N] i32 */
    mf_tensor seq_mask;                  /* [N] */
    mf_tensor atom14_atom_exists;        /* [N, 14] */
    mf_tensor atom14_gt_positions;       /* [N, 14, 3] */
    mf_tensor atom14_alt_gt_positions;   /* [N, 14, 3] */
    mf_tensor atom14_gt_exists;          /* [N, 14] */
    mf_tensor atom14_alt_gt_exists;      /* [N, 14] */
    mf_tensor atom14_atom_is_ambiguous;  /* [N, 14] */
    mf_tensor rigidgroups_gt_frames;     /* [N, 8, 4, 4] */
    mf_tensor rigidgroups_alt_gt_frames; /* [N, 8, 4, 4] */
    mf_tensor rigidgroups_gt_exists;     /* [N, 8] */
    mf_tensor backbone_rigid_tensor;     /* [N, 4, 4] */
    mf_tensor backbone_rigid_mask;       /* [N] */
    mf_tensor chi_mask;                  /* [N, 4] */
    mf_tensor chi_angles_sin_cos;        /* [N, 4, 2] */
} mf_structure_loss_batch;

/* Caller-owned outputs of the renaming. */
typedef struct {
    mf_tensor alt_naming_is_better;        /* [N] */
    mf_tensor renamed_atom14_gt_positions; /* [N, 14, 3] */
    mf_tensor renamed_atom14_gt_exists;    /* [N, 14] */
    mf_tensor renamed_gt_rot;              /* [N, 8, 3, 3] */
    mf_tensor renamed_gt_trans;            /* [N, 8, 3] */
} mf_renamed_ground_truth;

/* Alg. 26 from the final layer's atom14 positions [N, 14, 3]. Reads aatype (for N),
 * atom14_gt/alt_gt positions and exists, atom14_atom_is_ambiguous, rigidgroups_(alt_)gt_frames. */
mf_status mf_compute_renamed_ground_truth(mf_ctx *ctx, mf_renamed_ground_truth *out,
                                          const mf_tensor *atom14_pred_positions,
                                          const mf_structure_loss_batch *b);

/* Side-chain FAPE (opt: mf_fape_default_options()); pred_rot [N, 8, 3, 3], pred_trans [N, 8, 3],
 * pred_positions [N, 14, 3]; reads rigidgroups_gt_exists. Scratch from ctx->arena. */
mf_status mf_sidechain_fape_forward(mf_ctx *ctx, float *loss, const mf_tensor *pred_rot,
                                    const mf_tensor *pred_trans, const mf_tensor *pred_positions,
                                    const mf_renamed_ground_truth *gt,
                                    const mf_structure_loss_batch *b, const mf_fape_options *opt);
mf_status mf_sidechain_fape_backward(mf_ctx *ctx, mf_tensor *dpred_rot, mf_tensor *dpred_trans,
                                     mf_tensor *dpred_positions, float dloss,
                                     const mf_tensor *pred_rot, const mf_tensor *pred_trans,
                                     const mf_tensor *pred_positions,
                                     const mf_renamed_ground_truth *gt,
                                     const mf_structure_loss_batch *b, const mf_fape_options *opt);

/* Backbone FAPE over the layers: pred_rot [L, N, 3, 3], pred_trans [L, N, 3] in Angstrom; reads
 * backbone_rigid_tensor and backbone_rigid_mask; final_layer_fape may be NULL. */
mf_status mf_backbone_fape_forward(mf_ctx *ctx, float *loss, float *final_layer_fape,
                                   const mf_tensor *pred_rot, const mf_tensor *pred_trans,
                                   const mf_structure_loss_batch *b, float use_clamped_fape,
                                   const mf_fape_options *opt);
mf_status mf_backbone_fape_backward(mf_ctx *ctx, mf_tensor *dpred_rot, mf_tensor *dpred_trans,
                                    float dloss, const mf_tensor *pred_rot,
                                    const mf_tensor *pred_trans, const mf_structure_loss_batch *b,
                                    float use_clamped_fape, const mf_fape_options *opt);

/* Supervised chi loss: angles_sin_cos and unnormalized_angles_sin_cos [L, N, 7, 2]; reads aatype,
 * seq_mask, chi_mask, chi_angles_sin_cos. chi_loss, angle_norm_loss may be NULL. */
mf_status mf_supervised_chi_loss_forward(mf_ctx *ctx, float *loss, float *chi_loss,
                                         float *angle_norm_loss, const mf_tensor *angles_sin_cos,
                                         const mf_tensor *unnormalized_angles_sin_cos,
                                         const mf_structure_loss_batch *b, float chi_weight,
                                         float angle_norm_weight);
mf_status mf_supervised_chi_loss_backward(mf_ctx *ctx, mf_tensor *dangles_sin_cos,
                                          mf_tensor *dunnormalized_angles_sin_cos, float dloss,
                                          const mf_tensor *angles_sin_cos,
                                          const mf_tensor *unnormalized_angles_sin_cos,
                                          const mf_structure_loss_batch *b, float chi_weight,
                                          float angle_norm_weight);

/* Structural violations of atom14_pred_positions [N, 14, 3]; reads aatype, residue_index,
 * atom14_atom_exists and (for metrics, which may be NULL) seq_mask. */
mf_status mf_structural_violations_forward(mf_ctx *ctx, mf_violation_terms *terms,
                                           mf_violation_metrics *metrics,
                                           const mf_tensor *atom14_pred_positions,
                                           const mf_structure_loss_batch *b,
                                           const mf_violation_tables *tables);
mf_status mf_structural_violation_loss_backward(mf_ctx *ctx, mf_tensor *datom14_pred_positions,
                                                float dloss, const mf_tensor *atom14_pred_positions,
                                                const mf_structure_loss_batch *b,
                                                const mf_violation_tables *tables);

/* Memory-model plans (memopt/memplan.h; losses_structure_memplan.c) of the arena wrappers above,
 * each released before the call returns (mf_sidechain_fape_backward, mf_supervised_chi_loss_*
 * and mf_compute_renamed_ground_truth take no arena space). metrics: a metrics struct given to
 * mf_structural_violations_forward. */
void mf_sidechain_fape_plan_forward(mf_memsim *s, int64_t n_res);
void mf_backbone_fape_plan(mf_memsim *s, int64_t n_res); /* forward and backward alike */
void mf_structural_violations_plan_forward(mf_memsim *s, int64_t n_res, bool metrics);
void mf_structural_violation_loss_plan_backward(mf_memsim *s, int64_t n_res);

#endif
