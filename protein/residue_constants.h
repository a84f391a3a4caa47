/* Residue constants: facts about the 20 amino acids in AlphaFold 2's conventions (restype order
 * ARNDCQEGHILKMFPSTWYV + X, atom37 and atom14 orders, rigid groups, chi-angle atoms, ambiguous
 * atoms, bond geometry). One place, tables of facts; protein/ knows nothing of tensors.
 *
 * The facts are those of AlphaFold 2's residue_constants (identical in OpenFold's copy) and of the
 * stereo_chemical_props table it loads (Engh & Huber literature values). Derived tables (index
 * maps, masks, default frames) are built by the mf_make_* functions into caller-owned flat arrays
 * whose shapes are given in the comments; absent entries follow AF2's convention (index 0, mask 0).
 */
#ifndef MF_PROTEIN_RESIDUE_CONSTANTS_H
#define MF_PROTEIN_RESIDUE_CONSTANTS_H

#include <stdint.h>

#define MF_NUM_RESTYPES 20 /* standard amino acids */
#define MF_RESTYPE_UNK  20 /* X: unknown residue */
#define MF_ATOM37       37
#define MF_ATOM14       14

#define MF_NUM_RESTYPES_WITH_X                                                                     \
    21                        /* 20 amino acids + X (UNK): first dim of the per-restype tables */
#define MF_NUM_RIGID_GROUPS 8 /* backbone, pre-omega, phi, psi, chi1..chi4 (suppl. 1.8.4) */
#define MF_NUM_CHI          4
#define MF_MSA_GAP          21 /* gap index in both the HHblits and the restype-with-x-and-gap order */
#define MF_MSA_ALPHABET     22 /* 20 amino acids, X, gap */

/* AF2 restype order index for a one-letter code (upper or lower case): 0..19, 20 for 'X' and the
 * ambiguous letters B, Z, J, U, O mapped as AF2 does; -1 for a character that is no residue. */
int mf_restype_from_one_letter(char c);
char mf_restype_one_letter(int restype);
/* "ALA" -> 0, ..., "MSE" -> MET (selenomethionine read as methionine), other -> 20 (X). */
int mf_restype_from_three_letter(const char *name);
const char *mf_restype_three_letter(int restype);

/* atom37 order: N CA C CB O CG CG1 CG2 OG OG1 SG CD CD1 CD2 ND1 ND2 OD1 OD2 SD CE CE1 CE2 CE3 NE
 * NE1 NE2 OE1 OE2 CH2 NH1 NH2 OH CZ CZ2 CZ3 NZ OXT. Returns -1 for any other name. */
int mf_atom37_index(const char *atom_name);
const char *mf_atom37_name(int index);

/* ---- MSA alphabets ----
 * AF2's raw MSA feature uses HHblits ids: A C D E F G H I K L M N P Q R S T V W Y (0..19,
 * alphabetical by one-letter code), X 20, gap 21; B -> D, Z -> E, U -> C, J and O -> X. The model
 * then maps these to the restype-with-x-and-gap order ARNDCQEGHILKMFPSTWYVX- (AF2
 * correct_msa_restypes). */

/* HHblits id of an upper-case letter or '-': 0..21; -1 for anything else (lower case included). */
int mf_hhblits_aa_to_id(char c);
/* Letter of an HHblits id (0..21); '\0' out of range. */
char mf_hhblits_id_to_aa(int id);
/* MAP_HHBLITS_AATYPE_TO_OUR_AATYPE: HHblits id -> restype-with-x-and-gap index; -1 out of range. */
int mf_hhblits_to_restype(int hhblits_id);
/* Letter of an index in ARNDCQEGHILKMFPSTWYVX- (0..21); '\0' out of range. */
char mf_restype_with_x_and_gap_letter(int index);

/* ---- atom14 ---- */

/* Name of atom14 slot `atom14` of `restype` ("" for an empty slot, all empty for X); NULL when
 * either index is out of range. */
const char *mf_atom14_name(int restype, int atom14);
/* Slot of `atom_name` in the restype's atom14 list, -1 if the residue has no such atom. */
int mf_atom14_index(int restype, const char *atom_name);
/* Per-element maps; -1 where the atom does not exist in that residue. */
int mf_atom14_to_atom37(int restype, int atom14);
int mf_atom37_to_atom14(int restype, int atom37);

/* AF2's restype_atom14_to_atom37 / restype_atom37_to_atom14 (0 where absent) and existence masks
 * (1 where the residue has the atom; the X row is all 0; OXT is never in the masks). */
void mf_make_restype_atom14_to_atom37(int32_t *out /* [21, 14] */);
void mf_make_restype_atom37_to_atom14(int32_t *out /* [21, 37] */);
void mf_make_restype_atom14_mask(float *out /* [21, 14] */);
void mf_make_restype_atom37_mask(float *out /* [21, 37] */);

/* ---- chi angles ---- */

/* Atoms defining chi angle `chi` (0..3) of `restype`: k = 0..3; NULL where the residue has no such
 * chi angle (ALA, GLY, X, and chi >= the residue's count). Chi5 of ARG is ignored, as in AF2. */
const char *mf_chi_angle_atom_name(int restype, int chi, int k);
/* 1 where the residue has the chi angle; the X row is 0. */
extern const float mf_chi_angles_mask[MF_NUM_RESTYPES_WITH_X][MF_NUM_CHI];
/* 1 where the chi angle is pi-periodic (ASP chi2, GLU chi3, PHE chi2, TYR chi2). */
extern const float mf_chi_pi_periodic[MF_NUM_RESTYPES_WITH_X][MF_NUM_CHI];
/* chi_angles_atom_indices as atom37 indices, 0 where the chi does not exist (X row all 0). */
void mf_make_chi_angles_atom_indices(int32_t *out /* [21, 4, 4] */);

/* ---- rigid groups (suppl. 1.8.4, Table 2) ----
 * Idealised atom positions relative to their rigid group's frame: group 0 backbone, 1 pre-omega
 * (empty), 2 phi (hydrogens only, empty), 3 psi, 4..7 chi1..chi4. */
typedef struct {
    const char *atom_name;
    int group;
    double position[3]; /* Angstrom, in the group's local frame (AF2 builds frames in f64) */
} mf_rigid_group_atom;

/* The restype's atoms (heavy atoms without OXT) in AF2's listing order; *n_atoms gets their
 * count. NULL and 0 for X or an out-of-range restype. */
const mf_rigid_group_atom *mf_rigid_group_atom_positions(int restype, int *n_atoms);
void mf_make_restype_atom37_to_rigid_group(int32_t *out /* [21, 37] */);
void mf_make_restype_atom14_to_rigid_group(int32_t *out /* [21, 14] */);
void mf_make_restype_atom37_rigid_group_positions(float *out /* [21, 37, 3] */);
void mf_make_restype_atom14_rigid_group_positions(float *out /* [21, 14, 3] */);
/* restype_rigid_group_default_frame: 4x4 row-major homogeneous transforms from each group's frame
 * to its parent (groups 0..4 to the backbone, chi2..chi4 to the previous chi frame), identity for
 * groups 0 and 1, zero where the group does not exist and for X. Built in double, stored as f32. */
void mf_make_restype_rigid_group_default_frame(float *out /* [21, 8, 4, 4] */);

/* ---- ambiguous (symmetric) atoms ----
 * Naming swaps: ASP OD1<->OD2, GLU OE1<->OE2, PHE CD1<->CD2 and CE1<->CE2, TYR likewise. */
typedef struct {
    int restype;
    const char *atom_a, *atom_b;
} mf_ambiguous_atom_pair;
/* The 6 pairs; *n gets the count. */
const mf_ambiguous_atom_pair *mf_ambiguous_atom_pairs(int *n);
/* is_ambiguous 1 for atoms in a pair; swap_idx the atom14 slot of the partner (identity else). */
void mf_make_restype_atom14_ambiguity(float *is_ambiguous /* [21, 14] */,
                                      int32_t *swap_idx /* [21, 14] */);

/* ---- geometry ---- */

/* Van der Waals radius in Angstrom of element 'C', 'N', 'O' or 'S' (1.7, 1.55, 1.52, 1.8); -1 for
 * any other element. AF2 takes an atom's element as the first letter of its name. */
float mf_van_der_waals_radius(char element);

#define MF_CA_CA 3.80209737096 /* CA-CA distance of consecutive residues, trans (omega = 180) */
/* Between-residue peptide geometry, [0] general, [1] before proline (C-N) */
extern const float mf_between_res_bond_length_c_n[2];
extern const float mf_between_res_bond_length_stddev_c_n[2];
/* cos of the C-N-CA and CA-C-N angles: [0] mean, [1] stddev (121.352 +- 2.315 and
 * 116.568 +- 1.995 degrees) */
extern const float mf_between_res_cos_angles_c_n_ca[2];
extern const float mf_between_res_cos_angles_ca_c_n[2];

/* Intra-residue bond lengths and bond angles (stereo_chemical_props, Engh & Huber). */
typedef struct {
    int restype;
    const char *atom1, *atom2;
    double length, stddev; /* Angstrom */
} mf_residue_bond;
typedef struct {
    int restype;
    const char *atom1, *atom2, *atom3; /* atom2 is the vertex */
    double angle_deg, stddev_deg;
} mf_residue_bond_angle;
const mf_residue_bond *mf_residue_bonds(int *n);
const mf_residue_bond_angle *mf_residue_bond_angles(int *n);

/* AF2 make_atom14_dists_bounds: for every atom pair of a residue, lower = r1 + r2 -
 * overlap_tolerance, upper = 1e10 (clash bounds), overwritten for bonds and for angles' virtual
 * bonds (law of cosines, propagated stddev) by length -+ bond_length_tolerance_factor * stddev.
 * AF2 defaults: overlap_tolerance 1.5, bond_length_tolerance_factor 15. X rows are 0. */
void mf_make_atom14_dists_bounds(float overlap_tolerance, float bond_length_tolerance_factor,
                                 float *lower /* [21, 14, 14] */, float *upper /* [21, 14, 14] */,
                                 float *stddev /* [21, 14, 14] */);

#endif
