/* lDDT, the superposition-free local distance difference test (Mariani et al., Bioinformatics
 * 29:2722, 2013), in the form AlphaFold 2 uses (alphafold/model/lddt.py; suppl. 1.9.6): a pair of
 * points is scored when both exist in the reference, they are different points and their reference
 * distance is below the inclusion radius (15 A); its score is the fraction of the thresholds 0.5,
 * 1, 2 and 4 A that |d_pred - d_ref| stays under (strictly). No stereochemistry penalty.
 * Per-residue lDDT averages over the pairs of that residue, global lDDT over all pairs (so it is
 * not the mean of the per-residue values).
 *
 * Three entry points:
 *   - mf_lddt_points_f32: AlphaFold 2's float32 formula, for the pLDDT-loss targets (Alg. 29);
 *   - mf_lddt_points_counts: the same decisions as exact integers (ties resolved exactly);
 *   - mf_lddt_ca / mf_lddt_all_atom: evaluation in double, with missing predicted atoms. */
#ifndef MF_EVAL_LDDT_H
#define MF_EVAL_LDDT_H

#include <stdbool.h>
#include <stdint.h>

#include "core/status.h"

#define MF_LDDT_CUTOFF 15.0 /* inclusion radius, Angstrom (AF2 lddt cutoff=15.) */

/* Per-point lDDT with AlphaFold 2's float32 arithmetic, step for step:
 *   d = sqrt(1e-10 + ((dx^2 + dy^2) + dz^2)) for both structures,
 *   scored_ij = [d_true_ij < cutoff] * mask_i * mask_j * [i != j],
 *   s_ij = 0.25 * ([l1 < 0.5] + [l1 < 1] + [l1 < 2] + [l1 < 4]), l1 = |d_true - d_pred|,
 *   norm_i = 1 / (1e-10 + sum_j scored_ij), lddt_i = norm_i * (1e-10 + sum_j scored_ij s_ij).
 * The sums are of multiples of 0.25 and exact in float32 in any order, so the result matches
 * AF2's per_residue=True output; in particular an exact tie such as 50 lddt = 5 comes out at or
 * above the tie (5.0000005 in the test vectors' residue 6), as AF2's does. A point with no scored
 * pair gets 1e10f * 1e-10f (about 1), as in AF2.
 * Points are read with strides (in floats) so atom37 arrays can be passed directly: the C-alpha
 * of atom37 positions [N, 37, 3] is pred = positions + 3, stride 111; its mask is mask + 1,
 * stride 37. true_mask may be NULL (all 1). Nothing is allocated. */
mf_status mf_lddt_points_f32(float *lddt /* [n] */, const float *pred, int64_t pred_stride,
                             const float *truth, int64_t true_stride, const float *true_mask,
                             int64_t mask_stride, int64_t n, float cutoff);

/* The same pair decisions (same float32 distances) as integer counts: n_scored[i] pairs and
 * quarter[i] = sum_j 4 s_ij, so lddt_i = quarter_i / (4 n_scored_i) exactly and the pLDDT bin
 * floor(50 lddt_i) is (50 quarter_i) / (4 n_scored_i) in integers (a tie goes to the upper bin). */
mf_status mf_lddt_points_counts(int32_t *n_scored /* [n] */, int32_t *quarter /* [n] */,
                                const float *pred, int64_t pred_stride, const float *truth,
                                int64_t true_stride, const float *true_mask, int64_t mask_stride,
                                int64_t n, float cutoff);

typedef struct {
    double lddt;     /* global: sum of pair scores / n_pairs, in [0, 1] */
    int64_t n_pairs; /* scored ordered pairs */
} mf_lddt_result;

/* lDDT-Calpha for evaluation, in double. pred and ref are paired per reference residue
 * (pred[i] is the prediction's residue paired with reference residue i). A pair (i, j) is scored
 * when ref_mask is 1 for both and their reference distance is below cutoff; when the prediction
 * lacks either point (pred_mask 0, e.g. an unpaired residue) the pair scores 0 but still counts.
 * per_residue[i] (may be NULL) is that residue's lDDT, or -1 where the residue has no scored pair.
 * No scored pair at all fails with MF_ERR_INVALID; non-finite present coordinates with
 * MF_ERR_NUMERIC. pred_mask NULL means every point is present. */
mf_status mf_lddt_ca(const double *pred /* [n, 3] */, const float *pred_mask /* [n] */,
                     const double *ref /* [n, 3] */, const float *ref_mask /* [n] */, int64_t n,
                     double cutoff, double *per_residue /* [n] */, mf_lddt_result *out);

/* All-atom lDDT on atom37 arrays paired per reference residue: points are the atoms present in
 * the reference; pairs of atoms of the same residue are not scored (Mariani et al.). When
 * resolve_ambiguous is set, a residue of the same type in both whose atoms have equivalent names
 * (ASP OD1/OD2, GLU OE1/OE2, PHE and TYR CD1/CD2 with CE1/CE2) takes the predicted naming, as
 * given or swapped, that scores higher against the other residues, before the final count.
 * per_residue[i] is residue i's lDDT over its atoms' pairs, -1 where none. */
mf_status
mf_lddt_all_atom(const float *pred_pos /* [n, 37, 3] */, const float *pred_mask /* [n, 37] */,
                 const int32_t *pred_aatype /* [n] or NULL */,
                 const float *ref_pos /* [n, 37, 3] */, const float *ref_mask /* [n, 37] */,
                 const int32_t *ref_aatype /* [n] or NULL */, int64_t n, double cutoff,
                 bool resolve_ambiguous, double *per_residue /* [n] */, mf_lddt_result *out);

#endif
