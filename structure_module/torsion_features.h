/* Ground-truth structure features from atom37 coordinates, as AlphaFold 2's data pipeline and
 * losses compute them (all_atom.atom37_to_frames, all_atom.atom37_to_torsion_angles,
 * make_atom14_masks, make_atom14_positions, pseudo_beta_fn; OpenFold's data_transforms.py versions
 * of the same, including get_backbone_frames and get_chi_angles). Used by the data loader (raw
 * features -> the losses' ground truth, template torsion features) and by tests.
 *
 * Host arrays in, host f32 arrays out; every output pointer may be NULL (not computed). The
 * geometry is computed in double and rounded once. Shapes: N residues; positions [N, 37, 3]
 * (Angstrom), masks [N, 37] (0/1). aatype is AF2's restype order, 0..20 (20 = X); the torsion
 * angles also accept larger values (AF2 clamps them to 20, e.g. the gap 21 of template
 * sequences). Residue i-1 in the array is residue i's predecessor for pre-omega and phi (AF2 does
 * not look at residue numbers; the first residue's previous atoms are zero with mask 0).
 *
 * Frames are 4x4 row-major homogeneous transforms [R t; 0 0 0 1], R's columns the frame's axes
 * (the features' layout: rigidgroups_gt_frames [N, 8, 4, 4], backbone_rigid_tensor [N, 4, 4]). */
#ifndef MF_STRUCTURE_MODULE_TORSION_FEATURES_H
#define MF_STRUCTURE_MODULE_TORSION_FEATURES_H

#include <stdint.h>

#include "core/status.h"

/* Epsilons of AF2's r3.rigids_from_3_points (vecs_robust_normalize) and of the torsion-angle
 * normalisation in atom37_to_torsion_angles, both added to a squared norm. */
#define MF_RIGID_FROM_3_POINTS_EPS 1e-8
#define MF_TORSION_NORM_EPS        1e-8

/* Alg. 21 rigidFrom3Points with AF2's code conventions: origin `origin`, x axis from
 * point_on_neg_x_axis towards the origin, point_on_xy_plane in the xy plane (y >= 0), Gram-Schmidt
 * with MF_RIGID_FROM_3_POINTS_EPS inside each norm; rot [3, 3] row-major (columns e0, e1, e2),
 * trans [3] = origin. */
void mf_rigid_from_3_points_f64(double rot[9], double trans[3], const double point_on_neg_x_axis[3],
                                const double origin[3], const double point_on_xy_plane[3]);

/* make_atom14_masks: residx_atom14_to_atom37 [N, 14], residx_atom37_to_atom14 [N, 37] (0 where
 * absent), atom14_atom_exists [N, 14], atom37_atom_exists [N, 37]. */
mf_status mf_make_atom14_masks(int32_t *residx_atom14_to_atom37, int32_t *residx_atom37_to_atom14,
                               float *atom14_atom_exists, float *atom37_atom_exists,
                               const int32_t *aatype, int64_t N);

/* make_atom14_positions: atom14_gt_positions [N, 14, 3] (zero where not observed),
 * atom14_gt_exists [N, 14] (the residue has the atom and it was observed), the same with the
 * renaming-ambiguous atoms swapped (atom14_alt_gt_positions, atom14_alt_gt_exists), and
 * atom14_atom_is_ambiguous [N, 14]. */
mf_status mf_make_atom14_positions(float *atom14_gt_positions, float *atom14_gt_exists,
                                   float *atom14_alt_gt_positions, float *atom14_alt_gt_exists,
                                   float *atom14_atom_is_ambiguous, const int32_t *aatype,
                                   const float *all_atom_positions, const float *all_atom_mask,
                                   int64_t N);

/* atom37_to_frames: the 8 rigid groups' frames [N, 8, 4, 4] from their defining atoms (backbone
 * from C, CA, N then mirrored in x and z: origin CA, x towards C, N in the xy plane), whether
 * their atoms were observed (rigidgroups_gt_exists [N, 8] = group exists * min of the 3 atoms'
 * masks), whether the group exists for the restype (rigidgroups_group_exists [N, 8]), whether it
 * is pi-symmetric (rigidgroups_group_is_ambiguous [N, 8]) and the alternative frames with that
 * group rotated by pi about its x axis (rigidgroups_alt_gt_frames [N, 8, 4, 4]). Frames of groups
 * without atoms are computed anyway, as AF2 does (degenerate; masked by the exists masks). */
mf_status mf_atom37_to_frames(float *rigidgroups_gt_frames, float *rigidgroups_gt_exists,
                              float *rigidgroups_group_exists,
                              float *rigidgroups_group_is_ambiguous,
                              float *rigidgroups_alt_gt_frames, const int32_t *aatype,
                              const float *all_atom_positions, const float *all_atom_mask,
                              int64_t N);

/* get_backbone_frames: backbone_rigid_tensor [N, 4, 4] = rigid group 0 of mf_atom37_to_frames
 * (origin CA, x towards C, N in the xy plane), backbone_rigid_mask [N] = N, CA and C observed. */
mf_status mf_backbone_frames(float *backbone_rigid_tensor, float *backbone_rigid_mask,
                             const float *all_atom_positions, const float *all_atom_mask,
                             int64_t N);

/* atom37_to_torsion_angles (placeholder_for_undefined = False, AF2's template setting):
 * torsion_angles_sin_cos [N, 7, 2] (sin, cos of pre-omega, phi, psi, chi1..4; psi measured with O
 * and turned by pi), alt_torsion_angles_sin_cos [N, 7, 2] (the pi-periodic chis of
 * chi_pi_periodic turned by pi: (sin, cos) -> (-sin, -cos)) and torsion_angles_mask [N, 7] (the
 * angle exists and its 4 atoms were observed). Angles whose atoms are missing are computed from
 * whatever the positions hold (masked). */
mf_status mf_atom37_to_torsion_angles(float *torsion_angles_sin_cos,
                                      float *alt_torsion_angles_sin_cos, float *torsion_angles_mask,
                                      const int32_t *aatype, const float *all_atom_positions,
                                      const float *all_atom_mask, int64_t N);

/* get_chi_angles: chi_angles_sin_cos [N, 4, 2] and chi_mask [N, 4] (torsions 3..6). */
mf_status mf_chi_angles(float *chi_angles_sin_cos, float *chi_mask, const int32_t *aatype,
                        const float *all_atom_positions, const float *all_atom_mask, int64_t N);

/* pseudo_beta_fn: CA for glycine, CB otherwise: pseudo_beta [N, 3], pseudo_beta_mask [N]. Any
 * aatype value is accepted (only glycine is special). */
void mf_pseudo_beta_from_atom37(float *pseudo_beta, float *pseudo_beta_mask, const int32_t *aatype,
                                const float *all_atom_positions, const float *all_atom_mask,
                                int64_t N);

#endif
