/* AlphaFold 2's structural losses: the reference of losses_structure.inc compiled for float and
 * double, the violation tables and the tensor entry points (see losses_structure.h). */
#include "structure_module/losses_structure.h"

#include <math.h>
#include <stdbool.h>
#include <stddef.h>
#include <string.h>

#include "memopt/arena.h"
#include "structure_module/rigid.h"

#define real        float
#define MF_LS(name) mf_##name##_f32
#define r_sqrt      sqrtf
#include "structure_module/losses_structure.inc"
#undef real
#undef MF_LS
#undef r_sqrt

#define real        double
#define MF_LS(name) mf_##name##_f64
#define r_sqrt      sqrt
#include "structure_module/losses_structure.inc"
#undef real
#undef MF_LS
#undef r_sqrt

void mf_violation_tables_init(mf_violation_tables *t, float violation_tolerance_factor,
                              float clash_overlap_tolerance)
{
    memset(t, 0, sizeof *t);
    t->violation_tolerance_factor = violation_tolerance_factor;
    t->clash_overlap_tolerance = clash_overlap_tolerance;
    for (int k = 0; k < 2; k++) {
        t->bond_length_c_n[k] = mf_between_res_bond_length_c_n[k];
        t->bond_length_stddev_c_n[k] = mf_between_res_bond_length_stddev_c_n[k];
        t->cos_angle_ca_c_n[k] = mf_between_res_cos_angles_ca_c_n[k];
        t->cos_angle_c_n_ca[k] = mf_between_res_cos_angles_c_n_ca[k];
    }
    for (int r = 0; r < MF_NUM_RESTYPES_WITH_X; r++)
        for (int a = 0; a < MF_ATOM14; a++) {
            const char *name = mf_atom14_name(r, a);
            float rad = name && name[0] ? mf_van_der_waals_radius(name[0]) : 0.0f;
            t->atom14_radius[r][a] = rad > 0 ? rad : 0.0f;
        }
    /* The within-residue bounds use the same tolerance factor as the peptide bonds
     * (find_structural_violations passes violation_tolerance_factor to both). */
    float stddev[MF_NUM_RESTYPES_WITH_X * MF_ATOM14 * MF_ATOM14];
    mf_make_atom14_dists_bounds(clash_overlap_tolerance, violation_tolerance_factor,
                                &t->atom14_dists_lower[0][0][0], &t->atom14_dists_upper[0][0][0],
                                stddev);
}

/* ---- tensor entry points ----------------------------------------------------------------------
 */

static mf_status check_host_i32(const mf_tensor *t, const char *name, int64_t n)
{
    MF_TRY(mf_check_tensor(t, name, MF_I32, 1));
    if (t->device != MF_DEV_CPU)
        return MF_ERROR(MF_ERR_UNSUPPORTED, "tensor %s is on the GPU; this loss runs on the host",
                        name);
    if (t->shape[0] != n)
        return MF_ERROR(MF_ERR_INVALID, "tensor %s has %lld entries, expected %lld", name,
                        (long long)t->shape[0], (long long)n);
    return MF_OK;
}

/* N from aatype, which every loss reads; its values must be restypes 0..20. */
static mf_status batch_n(const mf_structure_loss_batch *b, int64_t *N)
{
    MF_REQUIRE(b, "structure loss: batch missing");
    MF_TRY(mf_check_tensor(&b->aatype, "batch aatype", MF_I32, 1));
    *N = b->aatype.shape[0];
    MF_TRY(check_host_i32(&b->aatype, "batch aatype", *N));
    const int32_t *aa = b->aatype.data;
    for (int64_t i = 0; i < *N; i++)
        if (aa[i] < 0 || aa[i] >= MF_NUM_RESTYPES_WITH_X)
            return MF_ERROR(MF_ERR_INVALID, "batch aatype[%lld] = %d is not a restype 0..20",
                            (long long)i, aa[i]);
    return MF_OK;
}

static mf_status alloc_work(mf_ctx *ctx, size_t count, const char *label, double **out)
{
    MF_REQUIRE(ctx && ctx->arena, "structure loss: ctx and arena are required");
    MF_REQUIRE(ctx->arena->device == MF_DEV_CPU, "structure loss: needs a host arena (%s)", label);
    return mf_arena_alloc(ctx->arena, sizeof(double) * (count ? count : 1), label, (void **)out);
}

static mf_status check_renamed(const mf_renamed_ground_truth *gt, int64_t N, bool frames)
{
    MF_REQUIRE(gt, "structure loss: renamed ground truth missing");
    MF_TRY(mf_check_host_f32_dims(&gt->renamed_atom14_gt_positions, "renamed_atom14_gt_positions",
                                  3, N, MF_ATOM14, 3));
    MF_TRY(mf_check_host_f32_dims(&gt->renamed_atom14_gt_exists, "renamed_atom14_gt_exists", 2, N,
                                  MF_ATOM14));
    if (frames) {
        MF_TRY(mf_check_host_f32_dims(&gt->renamed_gt_rot, "renamed_gt_rot", 4, N,
                                      MF_NUM_RIGID_GROUPS, 3, 3));
        MF_TRY(mf_check_host_f32_dims(&gt->renamed_gt_trans, "renamed_gt_trans", 3, N,
                                      MF_NUM_RIGID_GROUPS, 3));
    }
    return MF_OK;
}

mf_status mf_compute_renamed_ground_truth(mf_ctx *ctx, mf_renamed_ground_truth *out,
                                          const mf_tensor *atom14_pred_positions,
                                          const mf_structure_loss_batch *b)
{
    (void)ctx;
    int64_t N;
    MF_TRY(batch_n(b, &N));
    MF_REQUIRE(out, "mf_compute_renamed_ground_truth: out missing");
    MF_TRY(
        mf_check_host_f32_dims(atom14_pred_positions, "atom14_pred_positions", 3, N, MF_ATOM14, 3));
    MF_TRY(mf_check_host_f32_dims(&b->atom14_gt_positions, "batch atom14_gt_positions", 3, N,
                                  MF_ATOM14, 3));
    MF_TRY(mf_check_host_f32_dims(&b->atom14_alt_gt_positions, "batch atom14_alt_gt_positions", 3,
                                  N, MF_ATOM14, 3));
    MF_TRY(mf_check_host_f32_dims(&b->atom14_gt_exists, "batch atom14_gt_exists", 2, N, MF_ATOM14));
    MF_TRY(mf_check_host_f32_dims(&b->atom14_alt_gt_exists, "batch atom14_alt_gt_exists", 2, N,
                                  MF_ATOM14));
    MF_TRY(mf_check_host_f32_dims(&b->atom14_atom_is_ambiguous, "batch atom14_atom_is_ambiguous", 2,
                                  N, MF_ATOM14));
    MF_TRY(mf_check_host_f32_dims(&b->rigidgroups_gt_frames, "batch rigidgroups_gt_frames", 4, N,
                                  MF_NUM_RIGID_GROUPS, 4, 4));
    MF_TRY(mf_check_host_f32_dims(&b->rigidgroups_alt_gt_frames, "batch rigidgroups_alt_gt_frames",
                                  4, N, MF_NUM_RIGID_GROUPS, 4, 4));
    MF_TRY(mf_check_host_f32_dims(&out->alt_naming_is_better, "alt_naming_is_better", 1, N));
    MF_TRY(check_renamed(out, N, true));
    mf_find_optimal_renaming_f32(out->alt_naming_is_better.data, b->atom14_gt_positions.data,
                                 b->atom14_alt_gt_positions.data, b->atom14_atom_is_ambiguous.data,
                                 b->atom14_gt_exists.data, atom14_pred_positions->data, N);
    mf_rename_ground_truth_f32(out->renamed_atom14_gt_positions.data,
                               out->renamed_atom14_gt_exists.data, out->renamed_gt_rot.data,
                               out->renamed_gt_trans.data, out->alt_naming_is_better.data,
                               b->atom14_gt_positions.data, b->atom14_alt_gt_positions.data,
                               b->atom14_gt_exists.data, b->atom14_alt_gt_exists.data,
                               b->rigidgroups_gt_frames.data, b->rigidgroups_alt_gt_frames.data, N);
    return MF_OK;
}

static mf_status check_sidechain(const mf_tensor *pred_rot, const mf_tensor *pred_trans,
                                 const mf_tensor *pred_positions, const mf_renamed_ground_truth *gt,
                                 const mf_structure_loss_batch *b, const mf_fape_options *opt,
                                 int64_t *N)
{
    MF_TRY(batch_n(b, N));
    MF_REQUIRE(opt && opt->length_scale > 0 && opt->eps >= 0,
               "side-chain FAPE: options missing or length_scale <= 0 or eps < 0");
    MF_TRY(
        mf_check_host_f32_dims(pred_rot, "sidechain pred_rot", 4, *N, MF_NUM_RIGID_GROUPS, 3, 3));
    MF_TRY(
        mf_check_host_f32_dims(pred_trans, "sidechain pred_trans", 3, *N, MF_NUM_RIGID_GROUPS, 3));
    MF_TRY(mf_check_host_f32_dims(pred_positions, "sidechain pred_positions", 3, *N, MF_ATOM14, 3));
    MF_TRY(mf_check_host_f32_dims(&b->rigidgroups_gt_exists, "batch rigidgroups_gt_exists", 2, *N,
                                  MF_NUM_RIGID_GROUPS));
    return check_renamed(gt, *N, true);
}

mf_status mf_sidechain_fape_forward(mf_ctx *ctx, float *loss, const mf_tensor *pred_rot,
                                    const mf_tensor *pred_trans, const mf_tensor *pred_positions,
                                    const mf_renamed_ground_truth *gt,
                                    const mf_structure_loss_batch *b, const mf_fape_options *opt)
{
    MF_REQUIRE(loss, "mf_sidechain_fape_forward: loss missing");
    int64_t N;
    MF_TRY(check_sidechain(pred_rot, pred_trans, pred_positions, gt, b, opt, &N));
    mf_arena_mark_t mark = mf_arena_mark(ctx->arena);
    double *work;
    MF_TRY(alloc_work(ctx, (size_t)(2 * MF_NUM_RIGID_GROUPS * N), "sidechain_fape.work", &work));
    mf_sidechain_fape_f32(loss, work, pred_rot->data, pred_trans->data, pred_positions->data,
                          gt->renamed_gt_rot.data, gt->renamed_gt_trans.data,
                          b->rigidgroups_gt_exists.data, gt->renamed_atom14_gt_positions.data,
                          gt->renamed_atom14_gt_exists.data, N, opt->clamp_distance,
                          opt->length_scale, opt->eps);
    mf_arena_release(ctx->arena, mark);
    if (!isfinite(*loss)) return MF_ERROR(MF_ERR_NUMERIC, "side-chain FAPE is %g", (double)*loss);
    return MF_OK;
}

mf_status mf_sidechain_fape_backward(mf_ctx *ctx, mf_tensor *dpred_rot, mf_tensor *dpred_trans,
                                     mf_tensor *dpred_positions, float dloss,
                                     const mf_tensor *pred_rot, const mf_tensor *pred_trans,
                                     const mf_tensor *pred_positions,
                                     const mf_renamed_ground_truth *gt,
                                     const mf_structure_loss_batch *b, const mf_fape_options *opt)
{
    (void)ctx;
    int64_t N;
    MF_TRY(check_sidechain(pred_rot, pred_trans, pred_positions, gt, b, opt, &N));
    if (dpred_rot)
        MF_TRY(mf_check_host_f32_dims(dpred_rot, "sidechain dpred_rot", 4, N, MF_NUM_RIGID_GROUPS,
                                      3, 3));
    if (dpred_trans)
        MF_TRY(mf_check_host_f32_dims(dpred_trans, "sidechain dpred_trans", 3, N,
                                      MF_NUM_RIGID_GROUPS, 3));
    if (dpred_positions)
        MF_TRY(mf_check_host_f32_dims(dpred_positions, "sidechain dpred_positions", 3, N, MF_ATOM14,
                                      3));
    mf_sidechain_fape_backward_f32(
        dpred_rot ? dpred_rot->data : NULL, dpred_trans ? dpred_trans->data : NULL,
        dpred_positions ? dpred_positions->data : NULL, dloss, pred_rot->data, pred_trans->data,
        pred_positions->data, gt->renamed_gt_rot.data, gt->renamed_gt_trans.data,
        b->rigidgroups_gt_exists.data, gt->renamed_atom14_gt_positions.data,
        gt->renamed_atom14_gt_exists.data, N, opt->clamp_distance, opt->length_scale, opt->eps);
    return MF_OK;
}

/* The ground-truth backbone frames [N, 4, 4] split into rot [N, 3, 3] and trans [N, 3]. */
static mf_status backbone_setup(mf_ctx *ctx, float **gt_rot, float **gt_trans, double **work,
                                const mf_tensor *pred_rot, const mf_tensor *pred_trans,
                                const mf_structure_loss_batch *b, const mf_fape_options *opt,
                                float use_clamped_fape, int64_t *L, int64_t *N)
{
    MF_REQUIRE(b, "backbone FAPE: batch missing");
    MF_REQUIRE(opt && opt->length_scale > 0 && opt->eps >= 0,
               "backbone FAPE: options missing or length_scale <= 0 or eps < 0");
    MF_REQUIRE(use_clamped_fape >= 0 && use_clamped_fape <= 1,
               "backbone FAPE: use_clamped_fape %g is not in [0, 1]", (double)use_clamped_fape);
    MF_TRY(mf_check_tensor(&b->backbone_rigid_tensor, "batch backbone_rigid_tensor", MF_F32, 3));
    *N = b->backbone_rigid_tensor.shape[0];
    MF_TRY(mf_check_host_f32_dims(&b->backbone_rigid_tensor, "batch backbone_rigid_tensor", 3, *N,
                                  4, 4));
    MF_TRY(mf_check_host_f32_dims(&b->backbone_rigid_mask, "batch backbone_rigid_mask", 1, *N));
    MF_TRY(mf_check_tensor(pred_rot, "backbone pred_rot", MF_F32, 4));
    *L = pred_rot->shape[0];
    MF_TRY(mf_check_host_f32_dims(pred_rot, "backbone pred_rot", 4, *L, *N, 3, 3));
    MF_TRY(mf_check_host_f32_dims(pred_trans, "backbone pred_trans", 3, *L, *N, 3));
    MF_TRY(alloc_work(ctx, (size_t)(2 * *N), "backbone_fape.work", work));
    MF_TRY(mf_arena_alloc(ctx->arena, sizeof(float) * (size_t)(12 * *N + 1), "backbone_fape.gt",
                          (void **)gt_rot));
    *gt_trans = *gt_rot + 9 * *N;
    const float *m = b->backbone_rigid_tensor.data;
    for (int64_t i = 0; i < *N; i++)
        for (int r = 0; r < 3; r++) {
            for (int c = 0; c < 3; c++) (*gt_rot)[9 * i + 3 * r + c] = m[16 * i + 4 * r + c];
            (*gt_trans)[3 * i + r] = m[16 * i + 4 * r + 3];
        }
    return MF_OK;
}

mf_status mf_backbone_fape_forward(mf_ctx *ctx, float *loss, float *final_layer_fape,
                                   const mf_tensor *pred_rot, const mf_tensor *pred_trans,
                                   const mf_structure_loss_batch *b, float use_clamped_fape,
                                   const mf_fape_options *opt)
{
    MF_REQUIRE(loss && ctx && ctx->arena, "mf_backbone_fape_forward: loss, ctx, arena required");
    mf_arena_mark_t mark = mf_arena_mark(ctx->arena);
    float *gt_rot, *gt_trans;
    double *work;
    int64_t L, N;
    mf_status st = backbone_setup(ctx, &gt_rot, &gt_trans, &work, pred_rot, pred_trans, b, opt,
                                  use_clamped_fape, &L, &N);
    if (st == MF_OK) {
        mf_backbone_fape_f32(loss, final_layer_fape, work, pred_rot->data, pred_trans->data, gt_rot,
                             gt_trans, b->backbone_rigid_mask.data, L, N, use_clamped_fape,
                             opt->clamp_distance, opt->length_scale, opt->eps);
        if (!isfinite(*loss)) st = MF_ERROR(MF_ERR_NUMERIC, "backbone FAPE is %g", (double)*loss);
    }
    mf_arena_release(ctx->arena, mark);
    return st;
}

mf_status mf_backbone_fape_backward(mf_ctx *ctx, mf_tensor *dpred_rot, mf_tensor *dpred_trans,
                                    float dloss, const mf_tensor *pred_rot,
                                    const mf_tensor *pred_trans, const mf_structure_loss_batch *b,
                                    float use_clamped_fape, const mf_fape_options *opt)
{
    MF_REQUIRE(ctx && ctx->arena, "mf_backbone_fape_backward: ctx and arena required");
    mf_arena_mark_t mark = mf_arena_mark(ctx->arena);
    float *gt_rot, *gt_trans;
    double *work;
    int64_t L, N;
    mf_status st = backbone_setup(ctx, &gt_rot, &gt_trans, &work, pred_rot, pred_trans, b, opt,
                                  use_clamped_fape, &L, &N);
    if (st == MF_OK && dpred_rot)
        st = mf_check_host_f32_dims(dpred_rot, "backbone dpred_rot", 4, L, N, 3, 3);
    if (st == MF_OK && dpred_trans)
        st = mf_check_host_f32_dims(dpred_trans, "backbone dpred_trans", 3, L, N, 3);
    if (st == MF_OK)
        mf_backbone_fape_backward_f32(
            dpred_rot ? dpred_rot->data : NULL, dpred_trans ? dpred_trans->data : NULL, dloss,
            pred_rot->data, pred_trans->data, gt_rot, gt_trans, b->backbone_rigid_mask.data, L, N,
            use_clamped_fape, opt->clamp_distance, opt->length_scale, opt->eps);
    mf_arena_release(ctx->arena, mark);
    return st;
}

static mf_status check_chi(const mf_tensor *angles, const mf_tensor *unnormalized,
                           const mf_structure_loss_batch *b, int64_t *L, int64_t *N)
{
    MF_TRY(batch_n(b, N));
    MF_TRY(mf_check_tensor(angles, "chi angles_sin_cos", MF_F32, 4));
    *L = angles->shape[0];
    MF_TRY(mf_check_host_f32_dims(angles, "chi angles_sin_cos", 4, *L, *N, 7, 2));
    MF_TRY(
        mf_check_host_f32_dims(unnormalized, "chi unnormalized_angles_sin_cos", 4, *L, *N, 7, 2));
    MF_TRY(mf_check_host_f32_dims(&b->seq_mask, "batch seq_mask", 1, *N));
    MF_TRY(mf_check_host_f32_dims(&b->chi_mask, "batch chi_mask", 2, *N, MF_NUM_CHI));
    MF_TRY(mf_check_host_f32_dims(&b->chi_angles_sin_cos, "batch chi_angles_sin_cos", 3, *N,
                                  MF_NUM_CHI, 2));
    return MF_OK;
}

mf_status mf_supervised_chi_loss_forward(mf_ctx *ctx, float *loss, float *chi_loss,
                                         float *angle_norm_loss, const mf_tensor *angles_sin_cos,
                                         const mf_tensor *unnormalized_angles_sin_cos,
                                         const mf_structure_loss_batch *b, float chi_weight,
                                         float angle_norm_weight)
{
    (void)ctx;
    MF_REQUIRE(loss, "mf_supervised_chi_loss_forward: loss missing");
    int64_t L, N;
    MF_TRY(check_chi(angles_sin_cos, unnormalized_angles_sin_cos, b, &L, &N));
    mf_supervised_chi_loss_f32(loss, chi_loss, angle_norm_loss, angles_sin_cos->data,
                               unnormalized_angles_sin_cos->data, b->aatype.data, b->seq_mask.data,
                               b->chi_mask.data, b->chi_angles_sin_cos.data, L, N, chi_weight,
                               angle_norm_weight);
    if (!isfinite(*loss))
        return MF_ERROR(MF_ERR_NUMERIC, "supervised chi loss is %g", (double)*loss);
    return MF_OK;
}

mf_status mf_supervised_chi_loss_backward(mf_ctx *ctx, mf_tensor *dangles_sin_cos,
                                          mf_tensor *dunnormalized_angles_sin_cos, float dloss,
                                          const mf_tensor *angles_sin_cos,
                                          const mf_tensor *unnormalized_angles_sin_cos,
                                          const mf_structure_loss_batch *b, float chi_weight,
                                          float angle_norm_weight)
{
    (void)ctx;
    int64_t L, N;
    MF_TRY(check_chi(angles_sin_cos, unnormalized_angles_sin_cos, b, &L, &N));
    if (dangles_sin_cos)
        MF_TRY(mf_check_host_f32_dims(dangles_sin_cos, "chi dangles_sin_cos", 4, L, N, 7, 2));
    if (dunnormalized_angles_sin_cos)
        MF_TRY(mf_check_host_f32_dims(dunnormalized_angles_sin_cos,
                                      "chi dunnormalized_angles_sin_cos", 4, L, N, 7, 2));
    mf_supervised_chi_loss_backward_f32(
        dangles_sin_cos ? dangles_sin_cos->data : NULL,
        dunnormalized_angles_sin_cos ? dunnormalized_angles_sin_cos->data : NULL, dloss,
        angles_sin_cos->data, unnormalized_angles_sin_cos->data, b->aatype.data, b->seq_mask.data,
        b->chi_mask.data, b->chi_angles_sin_cos.data, L, N, chi_weight, angle_norm_weight);
    return MF_OK;
}

static mf_status check_violations(const mf_tensor *pos, const mf_structure_loss_batch *b,
                                  const mf_violation_tables *tables, int64_t *N)
{
    MF_TRY(batch_n(b, N));
    MF_REQUIRE(tables, "structural violations: tables missing (mf_violation_tables_init)");
    MF_TRY(mf_check_host_f32_dims(pos, "atom14_pred_positions", 3, *N, MF_ATOM14, 3));
    MF_TRY(mf_check_host_f32_dims(&b->atom14_atom_exists, "batch atom14_atom_exists", 2, *N,
                                  MF_ATOM14));
    MF_TRY(check_host_i32(&b->residue_index, "batch residue_index", *N));
    return MF_OK;
}

mf_status mf_structural_violations_forward(mf_ctx *ctx, mf_violation_terms *terms,
                                           mf_violation_metrics *metrics,
                                           const mf_tensor *atom14_pred_positions,
                                           const mf_structure_loss_batch *b,
                                           const mf_violation_tables *tables)
{
    MF_REQUIRE(terms && ctx && ctx->arena,
               "mf_structural_violations_forward: terms, ctx and arena are required");
    int64_t N;
    MF_TRY(check_violations(atom14_pred_positions, b, tables, &N));
    if (metrics) MF_TRY(mf_check_host_f32_dims(&b->seq_mask, "batch seq_mask", 1, N));
    mf_arena_mark_t mark = mf_arena_mark(ctx->arena);
    double *work;
    MF_TRY(alloc_work(ctx, (size_t)(8 * N), "violations.work", &work));
    mf_violation_outputs_f32 out = {0};
    mf_status st = MF_OK;
    if (metrics) {
        float *buf;
        st = mf_arena_alloc(ctx->arena, sizeof(float) * (size_t)(4 * N + 4 * MF_ATOM14 * N + 1),
                            "violations.masks", (void **)&buf);
        if (st == MF_OK) {
            out.connections_per_residue_loss_sum = buf;
            out.connections_per_residue_violation_mask = buf + N;
            out.total_per_residue_violations_mask = buf + 2 * N;
            out.clashes_per_atom_loss_sum = buf + 4 * N;
            out.clashes_per_atom_clash_mask = buf + 4 * N + MF_ATOM14 * N;
            out.within_residues_per_atom_loss_sum = buf + 4 * N + 2 * MF_ATOM14 * N;
            out.within_residues_per_atom_violations = buf + 4 * N + 3 * MF_ATOM14 * N;
        }
    }
    if (st == MF_OK) {
        mf_structural_violations_f32(terms, &out, work, atom14_pred_positions->data,
                                     b->atom14_atom_exists.data, b->residue_index.data,
                                     b->aatype.data, tables, N);
        if (metrics)
            mf_violation_metrics_f32(metrics, atom14_pred_positions->data,
                                     b->atom14_atom_exists.data, b->residue_index.data,
                                     b->seq_mask.data, &out, N);
        if (!isfinite(terms->loss))
            st = MF_ERROR(MF_ERR_NUMERIC, "structural violation loss is %g", terms->loss);
    }
    mf_arena_release(ctx->arena, mark);
    return st;
}

mf_status mf_structural_violation_loss_backward(mf_ctx *ctx, mf_tensor *datom14_pred_positions,
                                                float dloss, const mf_tensor *atom14_pred_positions,
                                                const mf_structure_loss_batch *b,
                                                const mf_violation_tables *tables)
{
    int64_t N;
    MF_TRY(check_violations(atom14_pred_positions, b, tables, &N));
    MF_TRY(mf_check_host_f32_dims(datom14_pred_positions, "datom14_pred_positions", 3, N, MF_ATOM14,
                                  3));
    MF_REQUIRE(ctx && ctx->arena, "mf_structural_violation_loss_backward: ctx and arena required");
    mf_arena_mark_t mark = mf_arena_mark(ctx->arena);
    double *work;
    MF_TRY(alloc_work(ctx, (size_t)(8 * N), "violations.work", &work));
    mf_structural_violation_loss_backward_f32(
        datom14_pred_positions->data, dloss, work, atom14_pred_positions->data,
        b->atom14_atom_exists.data, b->residue_index.data, b->aatype.data, tables, N);
    mf_arena_release(ctx->arena, mark);
    return MF_OK;
}
