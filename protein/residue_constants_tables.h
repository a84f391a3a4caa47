/* Private to protein/residue_constants*.c: the fact tables behind the lookups declared in
 * residue_constants.h. Other code uses the functions there, not these arrays. */
#ifndef MF_PROTEIN_RESIDUE_CONSTANTS_TABLES_H
#define MF_PROTEIN_RESIDUE_CONSTANTS_TABLES_H

#include "protein/residue_constants.h"

#define MF_NUM_AMBIGUOUS_PAIRS 6

extern const char mf_restype_letters[MF_NUM_RESTYPES_WITH_X + 1];
extern const char *const mf_restype_names3[MF_NUM_RESTYPES_WITH_X];
extern const char *const mf_atom37_names[MF_ATOM37];
extern const char *const mf_atom14_names[MF_NUM_RESTYPES_WITH_X][MF_ATOM14];
extern const char *const mf_chi_angles_atoms[MF_NUM_RESTYPES_WITH_X][MF_NUM_CHI][4];
extern const mf_rigid_group_atom *const mf_rigid_group_table[MF_NUM_RESTYPES];
extern const int mf_rigid_group_count[MF_NUM_RESTYPES];
extern const mf_ambiguous_atom_pair mf_ambiguous_pairs[MF_NUM_AMBIGUOUS_PAIRS];
extern const int8_t mf_hhblits_letter_ids[26];
extern const char mf_hhblits_letters[MF_MSA_ALPHABET + 1];

#endif
