/* All-atom construction from torsion angles (AF2 supplement Alg. 24 computeAllAtomCoordinates,
 * Alg. 25 makeRotX; AlphaFold 2's all_atom.torsion_angles_to_frames and
 * frames_and_literature_positions_to_atom14_pos) and the atom14 <-> atom37 maps.
 *
 * Conventions are AF2's code (which OpenFold's feats.py follows), not the supplement's text where
 * they differ:
 *  - torsion angles [N, 7, 2] are (sin, cos) of pre-omega, phi, psi, chi1..chi4;
 *  - rigid group g (0 backbone, 1 pre-omega, 2 phi, 3 psi, 4..7 chi1..chi4) has the local frame
 *    default_frame[aatype][g] o (R_x(angle_{g-1}), 0) with R_x(s, c) = [[1,0,0],[0,c,-s],[0,s,c]]
 *    and the backbone group's angle fixed at (sin 0, cos 1);
 *  - groups 0..4 map to the backbone frame directly, chi2..chi4 through the previous chi frame
 *    (chi_k_to_bb = chi_{k-1}_to_bb o local_k); the global frame of each group is
 *    backbone_to_global o group_to_bb;
 *  - an atom14 position is its group's global frame applied to its literature position
 *    (residue_constants' rigid-group positions), zero for atom14 slots the residue lacks.
 * Frames are rotation matrices [.., 3, 3] row-major acting on column vectors plus translations
 * [.., 3] (rigid.h). Translations and positions are in Angstrom: AF2 scales the backbone
 * translation by position_scale (10) before building the side chains, and so must the caller.
 * The inputs need not be normalised: the same polynomial is evaluated for any (sin, cos), so the
 * gradients below are those of the function as written (the angle resnet normalises them).
 *
 * aatype values outside 0..19 are treated as X (20), whose default frames are all zero (AF2's
 * table): its 8 frames then have zero rotations and the backbone translation, and it has no
 * atoms.
 *
 * Everything runs on the host over raw arrays (a few hundred flops per residue), written once in
 * all_atom.inc and compiled for float (_f32, the model's path) and double (_f64, the oracle of the
 * finite-difference checks). The mf_all_atom_* entry points take host tensors (f32 or f64). */
#ifndef MF_STRUCTURE_MODULE_ALL_ATOM_H
#define MF_STRUCTURE_MODULE_ALL_ATOM_H

#include <stdint.h>

#include "core/context.h"
#include "memopt/memplan.h"
#include "protein/residue_constants.h"

#define MF_NUM_TORSIONS 7 /* pre-omega, phi, psi, chi1..chi4 */

/* The per-restype tables of AF2's residue_constants that the all-atom code gathers from, built
 * once (thread-safe) from protein/residue_constants. Row 20 is X (all zero / index 0). */
typedef struct {
    /* restype_rigid_group_default_frame: 4x4 row-major homogeneous transforms */
    float default_frames[MF_NUM_RESTYPES_WITH_X][MF_NUM_RIGID_GROUPS][4][4];
    int32_t atom14_to_rigid_group[MF_NUM_RESTYPES_WITH_X][MF_ATOM14];
    float atom14_rigid_group_positions[MF_NUM_RESTYPES_WITH_X][MF_ATOM14][3];
    float atom14_mask[MF_NUM_RESTYPES_WITH_X][MF_ATOM14];
    float atom37_mask[MF_NUM_RESTYPES_WITH_X][MF_ATOM37];
    int32_t atom14_to_atom37[MF_NUM_RESTYPES_WITH_X][MF_ATOM14]; /* 0 where absent */
    int32_t atom37_to_atom14[MF_NUM_RESTYPES_WITH_X][MF_ATOM37]; /* 0 where absent */
    /* ambiguous (renaming-symmetric) atoms and the atom14 slot each swaps with */
    float atom14_is_ambiguous[MF_NUM_RESTYPES_WITH_X][MF_ATOM14];
    int32_t atom14_swap[MF_NUM_RESTYPES_WITH_X][MF_ATOM14];
    /* chi_angles_atom_indices (atom37), 0 where the chi does not exist */
    int32_t chi_atom_indices[MF_NUM_RESTYPES_WITH_X][MF_NUM_CHI][4];
    /* atom37_to_frames: the 3 atoms (point on -x, origin, point in xy) that define each rigid
     * group in the ground truth (C, CA, N for the backbone; CA, C, O for psi; chi atoms 1..3 for
     * chi groups; 0 elsewhere), whether the group exists, whether it is the last chi group of a
     * residue with renaming-ambiguous atoms (ASP, GLU, PHE, TYR) */
    int32_t rigid_group_base_atom37[MF_NUM_RESTYPES_WITH_X][MF_NUM_RIGID_GROUPS][3];
    float rigid_group_exists[MF_NUM_RESTYPES_WITH_X][MF_NUM_RIGID_GROUPS];
    float rigid_group_is_ambiguous[MF_NUM_RESTYPES_WITH_X][MF_NUM_RIGID_GROUPS];
} mf_all_atom_tables;

const mf_all_atom_tables *mf_all_atom_tables_get(void);

/* Raw loops over N residues; shapes in the comments. Backward functions are vector-Jacobian
 * products that ACCUMULATE into their gradients; a NULL gradient is not computed and a NULL
 * upstream gradient counts as zero. Outputs must not alias inputs. */
#define MF_ALL_ATOM_DECLARE(real, SUF)                                                             \
    /* Alg. 24 lines 1-10: rot [N, 8, 3, 3], trans [N, 8, 3] (global frames of the 8 groups)       \
     * from bb_rot [N, 3, 3], bb_trans [N, 3] (backbone to global, Angstrom), angles [N, 7, 2]. */ \
    void mf_torsion_angles_to_frames_##SUF(real *rot, real *trans, const int32_t *aatype,          \
                                           const real *bb_rot, const real *bb_trans,               \
                                           const real *angles, int64_t N);                         \
    /* Recomputes the forward's intermediates from bb_rot and angles (nothing saved); drot /       \
     * dtrans [N, 8, ...] are the upstream gradients. bb_trans is not needed (the map is affine    \
     * in it). */                                                                                  \
    void mf_torsion_angles_to_frames_backward_##SUF(                                               \
        real *dbb_rot, real *dbb_trans, real *dangles, const real *drot, const real *dtrans,       \
        const int32_t *aatype, const real *bb_rot, const real *angles, int64_t N);                 \
    /* Alg. 24 line 11: pos [N, 14, 3] from the group frames rot [N, 8, 3, 3], trans [N, 8, 3]. */ \
    void mf_frames_to_atom14_pos_##SUF(real *pos, const int32_t *aatype, const real *rot,          \
                                       const real *trans, int64_t N);                              \
    /* Linear in the frames: needs only dpos [N, 14, 3]. */                                        \
    void mf_frames_to_atom14_pos_backward_##SUF(real *drot, real *dtrans, const real *dpos,        \
                                                const int32_t *aatype, int64_t N);                 \
    /* AF2 atom14_to_atom37: out [N, 37, C] = in [N, 14, C] gathered through                       \
     * residx_atom37_to_atom14, times atom37_atom_exists (C = 3 for positions, 1 for masks). */    \
    void mf_atom14_to_atom37_##SUF(real *out, const real *in, const int32_t *aatype, int64_t N,    \
                                   int64_t C);                                                     \
    /* AF2 atom37_to_atom14: out [N, 14, C] = in [N, 37, C] gathered through                       \
     * residx_atom14_to_atom37, times atom14_atom_exists. */                                       \
    void mf_atom37_to_atom14_##SUF(real *out, const real *in, const int32_t *aatype, int64_t N,    \
                                   int64_t C);                                                     \
    /* Backward of mf_atom14_to_atom37: din [N, 14, C] += dout [N, 37, C] at the slots the         \
     * residue has (the map is one-to-one on them). */                                             \
    void mf_atom14_to_atom37_backward_##SUF(real *din, const real *dout, const int32_t *aatype,    \
                                            int64_t N, int64_t C);

MF_ALL_ATOM_DECLARE(float, f32)
MF_ALL_ATOM_DECLARE(double, f64)

/* Tensor entry points (host tensors, every floating tensor f32 or every one f64; aatype i32 [N]
 * with values 0..20). Forward: frames_rot [N, 8, 3, 3], frames_trans [N, 8, 3] and (unless NULL)
 * atom14 [N, 14, 3] from bb_rot [N, 3, 3], bb_trans [N, 3] (Angstrom), angles [N, 7, 2]. */
mf_status mf_all_atom_forward(mf_ctx *ctx, mf_tensor *frames_rot, mf_tensor *frames_trans,
                              mf_tensor *atom14, const mf_tensor *aatype, const mf_tensor *bb_rot,
                              const mf_tensor *bb_trans, const mf_tensor *angles);
/* Accumulates into dbb_rot, dbb_trans, dangles (each may be NULL) from the upstream gradients of
 * the frames and of the atom14 positions (each may be NULL). Scratch from ctx->arena. */
mf_status mf_all_atom_backward(mf_ctx *ctx, mf_tensor *dbb_rot, mf_tensor *dbb_trans,
                               mf_tensor *dangles, const mf_tensor *dframes_rot,
                               const mf_tensor *dframes_trans, const mf_tensor *datom14,
                               const mf_tensor *aatype, const mf_tensor *bb_rot,
                               const mf_tensor *angles);

/* Memory-model plan (memopt/memplan.h; all_atom_memplan.c) of an f32 mf_all_atom_backward: its
 * two frame-gradient buffers, released before it returns. The forward takes no arena space. */
void mf_all_atom_plan_backward(mf_memsim *s, int64_t n_res);

#endif
