/* Residue constants, the tables of facts (AlphaFold 2 residue_constants, identical in OpenFold's
 * np/residue_constants). Transcribed as data; lookups and derived tables are in
 * residue_constants.c, the stereo-chemical bond table in residue_constants_stereo.c. */
#include "protein/residue_constants_tables.h"

#include <stddef.h>

const char mf_restype_letters[MF_NUM_RESTYPES_WITH_X + 1] = "ARNDCQEGHILKMFPSTWYVX";

const char *const mf_restype_names3[MF_NUM_RESTYPES_WITH_X] = {
    "ALA", "ARG", "ASN", "ASP", "CYS", "GLN", "GLU", "GLY", "HIS", "ILE", "LEU",
    "LYS", "MET", "PHE", "PRO", "SER", "THR", "TRP", "TYR", "VAL", "UNK",
};

const char *const mf_atom37_names[MF_ATOM37] = {
    "N",   "CA",  "C",   "CB",  "O",   "CG", "CG1", "CG2", "OG",  "OG1", "SG",  "CD",  "CD1",
    "CD2", "ND1", "ND2", "OD1", "OD2", "SD", "CE",  "CE1", "CE2", "CE3", "NE",  "NE1", "NE2",
    "OE1", "OE2", "CH2", "NH1", "NH2", "OH", "CZ",  "CZ2", "CZ3", "NZ",  "OXT",
};

/* restype_name_to_atom14_names: the compact per-residue atom order; "" marks an empty slot. */
const char *const mf_atom14_names[MF_NUM_RESTYPES_WITH_X][MF_ATOM14] = {
    /* ALA */ {"N", "CA", "C", "O", "CB", "", "", "", "", "", "", "", "", ""},
    /* ARG */ {"N", "CA", "C", "O", "CB", "CG", "CD", "NE", "CZ", "NH1", "NH2", "", "", ""},
    /* ASN */ {"N", "CA", "C", "O", "CB", "CG", "OD1", "ND2", "", "", "", "", "", ""},
    /* ASP */ {"N", "CA", "C", "O", "CB", "CG", "OD1", "OD2", "", "", "", "", "", ""},
    /* CYS */ {"N", "CA", "C", "O", "CB", "SG", "", "", "", "", "", "", "", ""},
    /* GLN */ {"N", "CA", "C", "O", "CB", "CG", "CD", "OE1", "NE2", "", "", "", "", ""},
    /* GLU */ {"N", "CA", "C", "O", "CB", "CG", "CD", "OE1", "OE2", "", "", "", "", ""},
    /* GLY */ {"N", "CA", "C", "O", "", "", "", "", "", "", "", "", "", ""},
    /* HIS */ {"N", "CA", "C", "O", "CB", "CG", "ND1", "CD2", "CE1", "NE2", "", "", "", ""},
    /* ILE */ {"N", "CA", "C", "O", "CB", "CG1", "CG2", "CD1", "", "", "", "", "", ""},
    /* LEU */ {"N", "CA", "C", "O", "CB", "CG", "CD1", "CD2", "", "", "", "", "", ""},
    /* LYS */ {"N", "CA", "C", "O", "CB", "CG", "CD", "CE", "NZ", "", "", "", "", ""},
    /* MET */ {"N", "CA", "C", "O", "CB", "CG", "SD", "CE", "", "", "", "", "", ""},
    /* PHE */ {"N", "CA", "C", "O", "CB", "CG", "CD1", "CD2", "CE1", "CE2", "CZ", "", "", ""},
    /* PRO */ {"N", "CA", "C", "O", "CB", "CG", "CD", "", "", "", "", "", "", ""},
    /* SER */ {"N", "CA", "C", "O", "CB", "OG", "", "", "", "", "", "", "", ""},
    /* THR */ {"N", "CA", "C", "O", "CB", "OG1", "CG2", "", "", "", "", "", "", ""},
    /* TRP */
    {"N", "CA", "C", "O", "CB", "CG", "CD1", "CD2", "NE1", "CE2", "CE3", "CZ2", "CZ3", "CH2"},
    /* TYR */ {"N", "CA", "C", "O", "CB", "CG", "CD1", "CD2", "CE1", "CE2", "CZ", "OH", "", ""},
    /* VAL */ {"N", "CA", "C", "O", "CB", "CG1", "CG2", "", "", "", "", "", "", ""},
    /* UNK */ {"", "", "", "", "", "", "", "", "", "", "", "", "", ""},
};

/* chi_angles_atoms; rows shorter than 4 chis are NULL-padded. */
const char *const mf_chi_angles_atoms[MF_NUM_RESTYPES_WITH_X][MF_NUM_CHI][4] = {
    /* ALA */ {{NULL}},
    /* ARG */
    {{"N", "CA", "CB", "CG"},
     {"CA", "CB", "CG", "CD"},
     {"CB", "CG", "CD", "NE"},
     {"CG", "CD", "NE", "CZ"}},
    /* ASN */ {{"N", "CA", "CB", "CG"}, {"CA", "CB", "CG", "OD1"}},
    /* ASP */ {{"N", "CA", "CB", "CG"}, {"CA", "CB", "CG", "OD1"}},
    /* CYS */ {{"N", "CA", "CB", "SG"}},
    /* GLN */ {{"N", "CA", "CB", "CG"}, {"CA", "CB", "CG", "CD"}, {"CB", "CG", "CD", "OE1"}},
    /* GLU */ {{"N", "CA", "CB", "CG"}, {"CA", "CB", "CG", "CD"}, {"CB", "CG", "CD", "OE1"}},
    /* GLY */ {{NULL}},
    /* HIS */ {{"N", "CA", "CB", "CG"}, {"CA", "CB", "CG", "ND1"}},
    /* ILE */ {{"N", "CA", "CB", "CG1"}, {"CA", "CB", "CG1", "CD1"}},
    /* LEU */ {{"N", "CA", "CB", "CG"}, {"CA", "CB", "CG", "CD1"}},
    /* LYS */
    {{"N", "CA", "CB", "CG"},
     {"CA", "CB", "CG", "CD"},
     {"CB", "CG", "CD", "CE"},
     {"CG", "CD", "CE", "NZ"}},
    /* MET */ {{"N", "CA", "CB", "CG"}, {"CA", "CB", "CG", "SD"}, {"CB", "CG", "SD", "CE"}},
    /* PHE */ {{"N", "CA", "CB", "CG"}, {"CA", "CB", "CG", "CD1"}},
    /* PRO */ {{"N", "CA", "CB", "CG"}, {"CA", "CB", "CG", "CD"}},
    /* SER */ {{"N", "CA", "CB", "OG"}},
    /* THR */ {{"N", "CA", "CB", "OG1"}},
    /* TRP */ {{"N", "CA", "CB", "CG"}, {"CA", "CB", "CG", "CD1"}},
    /* TYR */ {{"N", "CA", "CB", "CG"}, {"CA", "CB", "CG", "CD1"}},
    /* VAL */ {{"N", "CA", "CB", "CG1"}},
    /* UNK */ {{NULL}},
};

const float mf_chi_angles_mask[MF_NUM_RESTYPES_WITH_X][MF_NUM_CHI] = {
    /* ALA */ {0.0f, 0.0f, 0.0f, 0.0f},
    /* ARG */ {1.0f, 1.0f, 1.0f, 1.0f},
    /* ASN */ {1.0f, 1.0f, 0.0f, 0.0f},
    /* ASP */ {1.0f, 1.0f, 0.0f, 0.0f},
    /* CYS */ {1.0f, 0.0f, 0.0f, 0.0f},
    /* GLN */ {1.0f, 1.0f, 1.0f, 0.0f},
    /* GLU */ {1.0f, 1.0f, 1.0f, 0.0f},
    /* GLY */ {0.0f, 0.0f, 0.0f, 0.0f},
    /* HIS */ {1.0f, 1.0f, 0.0f, 0.0f},
    /* ILE */ {1.0f, 1.0f, 0.0f, 0.0f},
    /* LEU */ {1.0f, 1.0f, 0.0f, 0.0f},
    /* LYS */ {1.0f, 1.0f, 1.0f, 1.0f},
    /* MET */ {1.0f, 1.0f, 1.0f, 0.0f},
    /* PHE */ {1.0f, 1.0f, 0.0f, 0.0f},
    /* PRO */ {1.0f, 1.0f, 0.0f, 0.0f},
    /* SER */ {1.0f, 0.0f, 0.0f, 0.0f},
    /* THR */ {1.0f, 0.0f, 0.0f, 0.0f},
    /* TRP */ {1.0f, 1.0f, 0.0f, 0.0f},
    /* TYR */ {1.0f, 1.0f, 0.0f, 0.0f},
    /* VAL */ {1.0f, 0.0f, 0.0f, 0.0f},
    /* UNK */ {0.0f, 0.0f, 0.0f, 0.0f},
};

const float mf_chi_pi_periodic[MF_NUM_RESTYPES_WITH_X][MF_NUM_CHI] = {
    /* ALA */ {0.0f, 0.0f, 0.0f, 0.0f},
    /* ARG */ {0.0f, 0.0f, 0.0f, 0.0f},
    /* ASN */ {0.0f, 0.0f, 0.0f, 0.0f},
    /* ASP */ {0.0f, 1.0f, 0.0f, 0.0f},
    /* CYS */ {0.0f, 0.0f, 0.0f, 0.0f},
    /* GLN */ {0.0f, 0.0f, 0.0f, 0.0f},
    /* GLU */ {0.0f, 0.0f, 1.0f, 0.0f},
    /* GLY */ {0.0f, 0.0f, 0.0f, 0.0f},
    /* HIS */ {0.0f, 0.0f, 0.0f, 0.0f},
    /* ILE */ {0.0f, 0.0f, 0.0f, 0.0f},
    /* LEU */ {0.0f, 0.0f, 0.0f, 0.0f},
    /* LYS */ {0.0f, 0.0f, 0.0f, 0.0f},
    /* MET */ {0.0f, 0.0f, 0.0f, 0.0f},
    /* PHE */ {0.0f, 1.0f, 0.0f, 0.0f},
    /* PRO */ {0.0f, 0.0f, 0.0f, 0.0f},
    /* SER */ {0.0f, 0.0f, 0.0f, 0.0f},
    /* THR */ {0.0f, 0.0f, 0.0f, 0.0f},
    /* TRP */ {0.0f, 0.0f, 0.0f, 0.0f},
    /* TYR */ {0.0f, 1.0f, 0.0f, 0.0f},
    /* VAL */ {0.0f, 0.0f, 0.0f, 0.0f},
    /* UNK */ {0.0f, 0.0f, 0.0f, 0.0f},
};

/* rigid_group_atom_positions: (atom, group, position in the group frame), AF2 listing order. */
static const mf_rigid_group_atom rg_ala[] = {
    {"N", 0, {-0.525, 1.363, 0.000}},  {"CA", 0, {0.000, 0.000, 0.000}},
    {"C", 0, {1.526, -0.000, -0.000}}, {"CB", 0, {-0.529, -0.774, -1.205}},
    {"O", 3, {0.627, 1.062, 0.000}},
};
static const mf_rigid_group_atom rg_arg[] = {
    {"N", 0, {-0.524, 1.362, -0.000}}, {"CA", 0, {0.000, 0.000, 0.000}},
    {"C", 0, {1.525, -0.000, -0.000}}, {"CB", 0, {-0.524, -0.778, -1.209}},
    {"O", 3, {0.626, 1.062, 0.000}},   {"CG", 4, {0.616, 1.390, -0.000}},
    {"CD", 5, {0.564, 1.414, 0.000}},  {"NE", 6, {0.539, 1.357, -0.000}},
    {"NH1", 7, {0.206, 2.301, 0.000}}, {"NH2", 7, {2.078, 0.978, -0.000}},
    {"CZ", 7, {0.758, 1.093, -0.000}},
};
static const mf_rigid_group_atom rg_asn[] = {
    {"N", 0, {-0.536, 1.357, 0.000}},   {"CA", 0, {0.000, 0.000, 0.000}},
    {"C", 0, {1.526, -0.000, -0.000}},  {"CB", 0, {-0.531, -0.787, -1.200}},
    {"O", 3, {0.625, 1.062, 0.000}},    {"CG", 4, {0.584, 1.399, 0.000}},
    {"ND2", 5, {0.593, -1.188, 0.001}}, {"OD1", 5, {0.633, 1.059, 0.000}},
};
static const mf_rigid_group_atom rg_asp[] = {
    {"N", 0, {-0.525, 1.362, -0.000}}, {"CA", 0, {0.000, 0.000, 0.000}},
    {"C", 0, {1.527, 0.000, -0.000}},  {"CB", 0, {-0.526, -0.778, -1.208}},
    {"O", 3, {0.626, 1.062, -0.000}},  {"CG", 4, {0.593, 1.398, -0.000}},
    {"OD1", 5, {0.610, 1.091, 0.000}}, {"OD2", 5, {0.592, -1.101, -0.003}},
};
static const mf_rigid_group_atom rg_cys[] = {
    {"N", 0, {-0.522, 1.362, -0.000}}, {"CA", 0, {0.000, 0.000, 0.000}},
    {"C", 0, {1.524, 0.000, 0.000}},   {"CB", 0, {-0.519, -0.773, -1.212}},
    {"O", 3, {0.625, 1.062, -0.000}},  {"SG", 4, {0.728, 1.653, 0.000}},
};
static const mf_rigid_group_atom rg_gln[] = {
    {"N", 0, {-0.526, 1.361, -0.000}}, {"CA", 0, {0.000, 0.000, 0.000}},
    {"C", 0, {1.526, 0.000, 0.000}},   {"CB", 0, {-0.525, -0.779, -1.207}},
    {"O", 3, {0.626, 1.062, -0.000}},  {"CG", 4, {0.615, 1.393, 0.000}},
    {"CD", 5, {0.587, 1.399, -0.000}}, {"NE2", 6, {0.593, -1.189, -0.001}},
    {"OE1", 6, {0.634, 1.060, 0.000}},
};
static const mf_rigid_group_atom rg_glu[] = {
    {"N", 0, {-0.528, 1.361, 0.000}},    {"CA", 0, {0.000, 0.000, 0.000}},
    {"C", 0, {1.526, -0.000, -0.000}},   {"CB", 0, {-0.526, -0.781, -1.207}},
    {"O", 3, {0.626, 1.062, 0.000}},     {"CG", 4, {0.615, 1.392, 0.000}},
    {"CD", 5, {0.600, 1.397, 0.000}},    {"OE1", 6, {0.607, 1.095, -0.000}},
    {"OE2", 6, {0.589, -1.104, -0.001}},
};
static const mf_rigid_group_atom rg_gly[] = {
    {"N", 0, {-0.572, 1.337, 0.000}},
    {"CA", 0, {0.000, 0.000, 0.000}},
    {"C", 0, {1.517, -0.000, -0.000}},
    {"O", 3, {0.626, 1.062, -0.000}},
};
static const mf_rigid_group_atom rg_his[] = {
    {"N", 0, {-0.527, 1.360, 0.000}},   {"CA", 0, {0.000, 0.000, 0.000}},
    {"C", 0, {1.525, 0.000, 0.000}},    {"CB", 0, {-0.525, -0.778, -1.208}},
    {"O", 3, {0.625, 1.063, 0.000}},    {"CG", 4, {0.600, 1.370, -0.000}},
    {"CD2", 5, {0.889, -1.021, 0.003}}, {"ND1", 5, {0.744, 1.160, -0.000}},
    {"CE1", 5, {2.030, 0.851, 0.002}},  {"NE2", 5, {2.145, -0.466, 0.004}},
};
static const mf_rigid_group_atom rg_ile[] = {
    {"N", 0, {-0.493, 1.373, -0.000}},   {"CA", 0, {0.000, 0.000, 0.000}},
    {"C", 0, {1.527, -0.000, -0.000}},   {"CB", 0, {-0.536, -0.793, -1.213}},
    {"O", 3, {0.627, 1.062, -0.000}},    {"CG1", 4, {0.534, 1.437, -0.000}},
    {"CG2", 4, {0.540, -0.785, -1.199}}, {"CD1", 5, {0.619, 1.391, 0.000}},
};
static const mf_rigid_group_atom rg_leu[] = {
    {"N", 0, {-0.520, 1.363, 0.000}},   {"CA", 0, {0.000, 0.000, 0.000}},
    {"C", 0, {1.525, -0.000, -0.000}},  {"CB", 0, {-0.522, -0.773, -1.214}},
    {"O", 3, {0.625, 1.063, -0.000}},   {"CG", 4, {0.678, 1.371, 0.000}},
    {"CD1", 5, {0.530, 1.430, -0.000}}, {"CD2", 5, {0.535, -0.774, 1.200}},
};
static const mf_rigid_group_atom rg_lys[] = {
    {"N", 0, {-0.526, 1.362, -0.000}}, {"CA", 0, {0.000, 0.000, 0.000}},
    {"C", 0, {1.526, 0.000, 0.000}},   {"CB", 0, {-0.524, -0.778, -1.208}},
    {"O", 3, {0.626, 1.062, -0.000}},  {"CG", 4, {0.619, 1.390, 0.000}},
    {"CD", 5, {0.559, 1.417, 0.000}},  {"CE", 6, {0.560, 1.416, 0.000}},
    {"NZ", 7, {0.554, 1.387, 0.000}},
};
static const mf_rigid_group_atom rg_met[] = {
    {"N", 0, {-0.521, 1.364, -0.000}}, {"CA", 0, {0.000, 0.000, 0.000}},
    {"C", 0, {1.525, 0.000, 0.000}},   {"CB", 0, {-0.523, -0.776, -1.210}},
    {"O", 3, {0.625, 1.062, -0.000}},  {"CG", 4, {0.613, 1.391, -0.000}},
    {"SD", 5, {0.703, 1.695, 0.000}},  {"CE", 6, {0.320, 1.786, -0.000}},
};
static const mf_rigid_group_atom rg_phe[] = {
    {"N", 0, {-0.518, 1.363, 0.000}},   {"CA", 0, {0.000, 0.000, 0.000}},
    {"C", 0, {1.524, 0.000, -0.000}},   {"CB", 0, {-0.525, -0.776, -1.212}},
    {"O", 3, {0.626, 1.062, -0.000}},   {"CG", 4, {0.607, 1.377, 0.000}},
    {"CD1", 5, {0.709, 1.195, -0.000}}, {"CD2", 5, {0.706, -1.196, 0.000}},
    {"CE1", 5, {2.102, 1.198, -0.000}}, {"CE2", 5, {2.098, -1.201, -0.000}},
    {"CZ", 5, {2.794, -0.003, -0.001}},
};
static const mf_rigid_group_atom rg_pro[] = {
    {"N", 0, {-0.566, 1.351, -0.000}}, {"CA", 0, {0.000, 0.000, 0.000}},
    {"C", 0, {1.527, -0.000, 0.000}},  {"CB", 0, {-0.546, -0.611, -1.293}},
    {"O", 3, {0.621, 1.066, 0.000}},   {"CG", 4, {0.382, 1.445, 0.000}},
    {"CD", 5, {0.477, 1.424, 0.000}},
};
static const mf_rigid_group_atom rg_ser[] = {
    {"N", 0, {-0.529, 1.360, -0.000}}, {"CA", 0, {0.000, 0.000, 0.000}},
    {"C", 0, {1.525, -0.000, -0.000}}, {"CB", 0, {-0.518, -0.777, -1.211}},
    {"O", 3, {0.626, 1.062, -0.000}},  {"OG", 4, {0.503, 1.325, 0.000}},
};
static const mf_rigid_group_atom rg_thr[] = {
    {"N", 0, {-0.517, 1.364, 0.000}},  {"CA", 0, {0.000, 0.000, 0.000}},
    {"C", 0, {1.526, 0.000, -0.000}},  {"CB", 0, {-0.516, -0.793, -1.215}},
    {"O", 3, {0.626, 1.062, 0.000}},   {"CG2", 4, {0.550, -0.718, -1.228}},
    {"OG1", 4, {0.472, 1.353, 0.000}},
};
static const mf_rigid_group_atom rg_trp[] = {
    {"N", 0, {-0.521, 1.363, 0.000}},    {"CA", 0, {0.000, 0.000, 0.000}},
    {"C", 0, {1.525, -0.000, 0.000}},    {"CB", 0, {-0.523, -0.776, -1.212}},
    {"O", 3, {0.627, 1.062, 0.000}},     {"CG", 4, {0.609, 1.370, -0.000}},
    {"CD1", 5, {0.824, 1.091, 0.000}},   {"CD2", 5, {0.854, -1.148, -0.005}},
    {"CE2", 5, {2.186, -0.678, -0.007}}, {"CE3", 5, {0.622, -2.530, -0.007}},
    {"NE1", 5, {2.140, 0.690, -0.004}},  {"CH2", 5, {3.028, -2.890, -0.013}},
    {"CZ2", 5, {3.283, -1.543, -0.011}}, {"CZ3", 5, {1.715, -3.389, -0.011}},
};
static const mf_rigid_group_atom rg_tyr[] = {
    {"N", 0, {-0.522, 1.362, 0.000}},   {"CA", 0, {0.000, 0.000, 0.000}},
    {"C", 0, {1.524, -0.000, -0.000}},  {"CB", 0, {-0.522, -0.776, -1.213}},
    {"O", 3, {0.627, 1.062, -0.000}},   {"CG", 4, {0.607, 1.382, -0.000}},
    {"CD1", 5, {0.716, 1.195, -0.000}}, {"CD2", 5, {0.713, -1.194, -0.001}},
    {"CE1", 5, {2.107, 1.200, -0.002}}, {"CE2", 5, {2.104, -1.201, -0.003}},
    {"OH", 5, {4.168, -0.002, -0.005}}, {"CZ", 5, {2.791, -0.001, -0.003}},
};
static const mf_rigid_group_atom rg_val[] = {
    {"N", 0, {-0.494, 1.373, -0.000}},  {"CA", 0, {0.000, 0.000, 0.000}},
    {"C", 0, {1.527, -0.000, -0.000}},  {"CB", 0, {-0.533, -0.795, -1.213}},
    {"O", 3, {0.627, 1.062, -0.000}},   {"CG1", 4, {0.540, 1.429, -0.000}},
    {"CG2", 4, {0.533, -0.776, 1.203}},
};

const mf_rigid_group_atom *const mf_rigid_group_table[MF_NUM_RESTYPES] = {
    rg_ala, rg_arg, rg_asn, rg_asp, rg_cys, rg_gln, rg_glu, rg_gly, rg_his, rg_ile,
    rg_leu, rg_lys, rg_met, rg_phe, rg_pro, rg_ser, rg_thr, rg_trp, rg_tyr, rg_val,
};
#define MF_COUNT(a) ((int)(sizeof(a) / sizeof((a)[0])))
const int mf_rigid_group_count[MF_NUM_RESTYPES] = {
    MF_COUNT(rg_ala), MF_COUNT(rg_arg), MF_COUNT(rg_asn), MF_COUNT(rg_asp), MF_COUNT(rg_cys),
    MF_COUNT(rg_gln), MF_COUNT(rg_glu), MF_COUNT(rg_gly), MF_COUNT(rg_his), MF_COUNT(rg_ile),
    MF_COUNT(rg_leu), MF_COUNT(rg_lys), MF_COUNT(rg_met), MF_COUNT(rg_phe), MF_COUNT(rg_pro),
    MF_COUNT(rg_ser), MF_COUNT(rg_thr), MF_COUNT(rg_trp), MF_COUNT(rg_tyr), MF_COUNT(rg_val),
};

/* residue_atom_renaming_swaps */
const mf_ambiguous_atom_pair mf_ambiguous_pairs[MF_NUM_AMBIGUOUS_PAIRS] = {
    {3 /* ASP */, "OD1", "OD2"},  {6 /* GLU */, "OE1", "OE2"},  {13 /* PHE */, "CD1", "CD2"},
    {13 /* PHE */, "CE1", "CE2"}, {18 /* TYR */, "CD1", "CD2"}, {18 /* TYR */, "CE1", "CE2"},
};

/* HHBLITS_AA_TO_ID for A..Z. */
const int8_t mf_hhblits_letter_ids[26] = {
    0 /* A */,  2 /* B */,  1 /* C */,  2 /* D */,  3 /* E */,  4 /* F */,  5 /* G */,
    6 /* H */,  7 /* I */,  20 /* J */, 8 /* K */,  9 /* L */,  10 /* M */, 11 /* N */,
    20 /* O */, 12 /* P */, 13 /* Q */, 14 /* R */, 15 /* S */, 16 /* T */, 1 /* U */,
    17 /* V */, 18 /* W */, 20 /* X */, 19 /* Y */, 3 /* Z */,
};

const char mf_hhblits_letters[MF_MSA_ALPHABET + 1] = "ACDEFGHIKLMNPQRSTVWYX-";

const float mf_between_res_bond_length_c_n[2] = {1.329f, 1.341f};
const float mf_between_res_bond_length_stddev_c_n[2] = {0.014f, 0.016f};
const float mf_between_res_cos_angles_c_n_ca[2] = {-0.5203f, 0.0353f};
const float mf_between_res_cos_angles_ca_c_n[2] = {-0.4473f, 0.0311f};
