/* Residue constants: facts about the 20 amino acids in AlphaFold 2's conventions (restype order
 * ARNDCQEGHILKMFPSTWYV + X, atom37 and atom14 orders, rigid groups, chi-angle atoms, ambiguous
 * atoms, bond geometry). One place, tables of facts; protein/ knows nothing of tensors. */
#ifndef MF_PROTEIN_RESIDUE_CONSTANTS_H
#define MF_PROTEIN_RESIDUE_CONSTANTS_H

#define MF_NUM_RESTYPES 20 /* standard amino acids */
#define MF_RESTYPE_UNK 20  /* X: unknown residue */
#define MF_ATOM37 37
#define MF_ATOM14 14

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

#endif
