/* Lookups over the residue-constant tables and the derived tables AF2 builds from them
 * (index maps, masks, rigid-group default frames, atom14 distance bounds). */
#include "protein/residue_constants.h"

#include <math.h>
#include <stddef.h>
#include <string.h>

#include "protein/residue_constants_tables.h"

#define NR MF_NUM_RESTYPES_WITH_X

static int valid_restype(int r)
{
    return r >= 0 && r < NR;
}

int mf_restype_from_one_letter(char c)
{
    if (c >= 'a' && c <= 'z') c = (char)(c - 'a' + 'A');
    if (c < 'A' || c > 'Z') return -1;
    /* AF2 sequence_to_onehot(map_unknown_to_x): any other upper-case letter (B Z J U O) is X. */
    const char *p = strchr(mf_restype_letters, c);
    return p ? (int)(p - mf_restype_letters) : MF_RESTYPE_UNK;
}

char mf_restype_one_letter(int restype)
{
    return valid_restype(restype) ? mf_restype_letters[restype] : '\0';
}

int mf_restype_from_three_letter(const char *name)
{
    if (!name) return MF_RESTYPE_UNK;
    if (strcmp(name, "MSE") == 0) return 12; /* MET */
    for (int r = 0; r < MF_NUM_RESTYPES; ++r)
        if (strcmp(name, mf_restype_names3[r]) == 0) return r;
    return MF_RESTYPE_UNK;
}

const char *mf_restype_three_letter(int restype)
{
    return valid_restype(restype) ? mf_restype_names3[restype] : NULL;
}

int mf_atom37_index(const char *atom_name)
{
    if (!atom_name) return -1;
    for (int i = 0; i < MF_ATOM37; ++i)
        if (strcmp(atom_name, mf_atom37_names[i]) == 0) return i;
    return -1;
}

const char *mf_atom37_name(int index)
{
    return index >= 0 && index < MF_ATOM37 ? mf_atom37_names[index] : NULL;
}

/* ---- MSA alphabets ---- */

int mf_hhblits_aa_to_id(char c)
{
    if (c == '-') return MF_MSA_GAP;
    if (c < 'A' || c > 'Z') return -1;
    return mf_hhblits_letter_ids[c - 'A'];
}

char mf_hhblits_id_to_aa(int id)
{
    return id >= 0 && id < MF_MSA_ALPHABET ? mf_hhblits_letters[id] : '\0';
}

static const char restype_with_x_and_gap[MF_MSA_ALPHABET + 1] = "ARNDCQEGHILKMFPSTWYVX-";

int mf_hhblits_to_restype(int hhblits_id)
{
    if (hhblits_id < 0 || hhblits_id >= MF_MSA_ALPHABET) return -1;
    const char *p = strchr(restype_with_x_and_gap, mf_hhblits_letters[hhblits_id]);
    return (int)(p - restype_with_x_and_gap);
}

char mf_restype_with_x_and_gap_letter(int index)
{
    return index >= 0 && index < MF_MSA_ALPHABET ? restype_with_x_and_gap[index] : '\0';
}

/* ---- atom14 ---- */

const char *mf_atom14_name(int restype, int atom14)
{
    if (!valid_restype(restype) || atom14 < 0 || atom14 >= MF_ATOM14) return NULL;
    return mf_atom14_names[restype][atom14];
}

int mf_atom14_index(int restype, const char *atom_name)
{
    if (!valid_restype(restype) || !atom_name || !atom_name[0]) return -1;
    for (int i = 0; i < MF_ATOM14; ++i)
        if (strcmp(atom_name, mf_atom14_names[restype][i]) == 0) return i;
    return -1;
}

int mf_atom14_to_atom37(int restype, int atom14)
{
    const char *name = mf_atom14_name(restype, atom14);
    return name && name[0] ? mf_atom37_index(name) : -1;
}

int mf_atom37_to_atom14(int restype, int atom37)
{
    const char *name = mf_atom37_name(atom37);
    return name ? mf_atom14_index(restype, name) : -1;
}

void mf_make_restype_atom14_to_atom37(int32_t *out /* [21, 14] */)
{
    for (int r = 0; r < NR; ++r)
        for (int a = 0; a < MF_ATOM14; ++a) {
            int i = mf_atom14_to_atom37(r, a);
            out[r * MF_ATOM14 + a] = i < 0 ? 0 : i;
        }
}

void mf_make_restype_atom37_to_atom14(int32_t *out /* [21, 37] */)
{
    for (int r = 0; r < NR; ++r)
        for (int a = 0; a < MF_ATOM37; ++a) {
            int i = mf_atom37_to_atom14(r, a);
            out[r * MF_ATOM37 + a] = i < 0 ? 0 : i;
        }
}

void mf_make_restype_atom14_mask(float *out /* [21, 14] */)
{
    for (int r = 0; r < NR; ++r)
        for (int a = 0; a < MF_ATOM14; ++a)
            out[r * MF_ATOM14 + a] = mf_atom14_names[r][a][0] ? 1.0f : 0.0f;
}

void mf_make_restype_atom37_mask(float *out /* [21, 37] */)
{
    for (int r = 0; r < NR; ++r)
        for (int a = 0; a < MF_ATOM37; ++a)
            out[r * MF_ATOM37 + a] = mf_atom37_to_atom14(r, a) >= 0 ? 1.0f : 0.0f;
}

/* ---- chi angles ---- */

const char *mf_chi_angle_atom_name(int restype, int chi, int k)
{
    if (!valid_restype(restype) || chi < 0 || chi >= MF_NUM_CHI || k < 0 || k >= 4) return NULL;
    return mf_chi_angles_atoms[restype][chi][k];
}

void mf_make_chi_angles_atom_indices(int32_t *out /* [21, 4, 4] */)
{
    for (int r = 0; r < NR; ++r)
        for (int c = 0; c < MF_NUM_CHI; ++c)
            for (int k = 0; k < 4; ++k) {
                const char *name = mf_chi_angles_atoms[r][c][k];
                out[(r * MF_NUM_CHI + c) * 4 + k] = name ? mf_atom37_index(name) : 0;
            }
}

/* ---- rigid groups ---- */

const mf_rigid_group_atom *mf_rigid_group_atom_positions(int restype, int *n_atoms)
{
    if (restype < 0 || restype >= MF_NUM_RESTYPES) {
        if (n_atoms) *n_atoms = 0;
        return NULL;
    }
    if (n_atoms) *n_atoms = mf_rigid_group_count[restype];
    return mf_rigid_group_table[restype];
}

void mf_make_restype_atom37_to_rigid_group(int32_t *out /* [21, 37] */)
{
    memset(out, 0, sizeof(int32_t) * NR * MF_ATOM37);
    for (int r = 0; r < MF_NUM_RESTYPES; ++r)
        for (int i = 0; i < mf_rigid_group_count[r]; ++i) {
            const mf_rigid_group_atom *a = &mf_rigid_group_table[r][i];
            out[r * MF_ATOM37 + mf_atom37_index(a->atom_name)] = a->group;
        }
}

void mf_make_restype_atom14_to_rigid_group(int32_t *out /* [21, 14] */)
{
    memset(out, 0, sizeof(int32_t) * NR * MF_ATOM14);
    for (int r = 0; r < MF_NUM_RESTYPES; ++r)
        for (int i = 0; i < mf_rigid_group_count[r]; ++i) {
            const mf_rigid_group_atom *a = &mf_rigid_group_table[r][i];
            out[r * MF_ATOM14 + mf_atom14_index(r, a->atom_name)] = a->group;
        }
}

void mf_make_restype_atom37_rigid_group_positions(float *out /* [21, 37, 3] */)
{
    memset(out, 0, sizeof(float) * NR * MF_ATOM37 * 3);
    for (int r = 0; r < MF_NUM_RESTYPES; ++r)
        for (int i = 0; i < mf_rigid_group_count[r]; ++i) {
            const mf_rigid_group_atom *a = &mf_rigid_group_table[r][i];
            float *o = &out[(r * MF_ATOM37 + mf_atom37_index(a->atom_name)) * 3];
            for (int k = 0; k < 3; ++k) o[k] = (float)a->position[k];
        }
}

void mf_make_restype_atom14_rigid_group_positions(float *out /* [21, 14, 3] */)
{
    memset(out, 0, sizeof(float) * NR * MF_ATOM14 * 3);
    for (int r = 0; r < MF_NUM_RESTYPES; ++r)
        for (int i = 0; i < mf_rigid_group_count[r]; ++i) {
            const mf_rigid_group_atom *a = &mf_rigid_group_table[r][i];
            float *o = &out[(r * MF_ATOM14 + mf_atom14_index(r, a->atom_name)) * 3];
            for (int k = 0; k < 3; ++k) o[k] = (float)a->position[k];
        }
}

static void atom_position(int restype, const char *name, double p[3])
{
    p[0] = p[1] = p[2] = 0.0;
    for (int i = 0; i < mf_rigid_group_count[restype]; ++i) {
        const mf_rigid_group_atom *a = &mf_rigid_group_table[restype][i];
        if (strcmp(a->atom_name, name) == 0) {
            for (int k = 0; k < 3; ++k) p[k] = a->position[k];
            return;
        }
    }
}

/* Frame whose x axis is along ex, y axis in the (ex, ey) plane on ey's side, origin at t; written
 * as the 4x4 [R | t; 0 0 0 1] with the axes as columns. */
static void rigid_from_two_axes(const double ex[3], const double ey[3], const double t[3],
                                float *m /* [4, 4] */)
{
    double x[3], y[3], z[3];
    double nx = sqrt(ex[0] * ex[0] + ex[1] * ex[1] + ex[2] * ex[2]);
    for (int k = 0; k < 3; ++k) x[k] = ex[k] / nx;
    double d = ey[0] * x[0] + ey[1] * x[1] + ey[2] * x[2];
    for (int k = 0; k < 3; ++k) y[k] = ey[k] - d * x[k];
    double ny = sqrt(y[0] * y[0] + y[1] * y[1] + y[2] * y[2]);
    for (int k = 0; k < 3; ++k) y[k] /= ny;
    z[0] = x[1] * y[2] - x[2] * y[1];
    z[1] = x[2] * y[0] - x[0] * y[2];
    z[2] = x[0] * y[1] - x[1] * y[0];
    for (int row = 0; row < 3; ++row) {
        m[row * 4 + 0] = (float)x[row];
        m[row * 4 + 1] = (float)y[row];
        m[row * 4 + 2] = (float)z[row];
        m[row * 4 + 3] = (float)t[row];
    }
    m[12] = m[13] = m[14] = 0.0f;
    m[15] = 1.0f;
}

static void identity4(float *m)
{
    memset(m, 0, 16 * sizeof(float));
    m[0] = m[5] = m[10] = m[15] = 1.0f;
}

void mf_make_restype_rigid_group_default_frame(float *out /* [21, 8, 4, 4] */)
{
    memset(out, 0, sizeof(float) * NR * MF_NUM_RIGID_GROUPS * 16);
    for (int r = 0; r < MF_NUM_RESTYPES; ++r) {
        float *f = out + (size_t)r * MF_NUM_RIGID_GROUPS * 16;
        double n[3], ca[3], c[3], ex[3], ey[3];
        atom_position(r, "N", n);
        atom_position(r, "CA", ca);
        atom_position(r, "C", c);
        identity4(f + 0 * 16); /* backbone */
        identity4(f + 1 * 16); /* pre-omega: placeholder, no atoms */
        /* phi frame: x along CA->N, origin N */
        for (int k = 0; k < 3; ++k) ex[k] = n[k] - ca[k];
        ey[0] = 1.0, ey[1] = 0.0, ey[2] = 0.0;
        rigid_from_two_axes(ex, ey, n, f + 2 * 16);
        /* psi frame: x along CA->C, y towards N->CA, origin C */
        for (int k = 0; k < 3; ++k) ex[k] = c[k] - ca[k], ey[k] = ca[k] - n[k];
        rigid_from_two_axes(ex, ey, c, f + 3 * 16);
        if (mf_chi_angles_mask[r][0] != 0.0f) {
            double b0[3], b1[3], b2[3];
            atom_position(r, mf_chi_angles_atoms[r][0][0], b0);
            atom_position(r, mf_chi_angles_atoms[r][0][1], b1);
            atom_position(r, mf_chi_angles_atoms[r][0][2], b2);
            for (int k = 0; k < 3; ++k) ex[k] = b2[k] - b1[k], ey[k] = b0[k] - b1[k];
            rigid_from_two_axes(ex, ey, b2, f + 4 * 16);
        }
        /* chi2..chi4: each axis starts at the previous chi frame's origin, so the axis end atom's
         * local position is both the x direction and the translation. */
        for (int chi = 1; chi < MF_NUM_CHI; ++chi) {
            if (mf_chi_angles_mask[r][chi] == 0.0f) continue;
            double e[3], m1[3] = {-1.0, 0.0, 0.0};
            atom_position(r, mf_chi_angles_atoms[r][chi][2], e);
            rigid_from_two_axes(e, m1, e, f + (4 + chi) * 16);
        }
    }
}

/* ---- ambiguous atoms ---- */

const mf_ambiguous_atom_pair *mf_ambiguous_atom_pairs(int *n)
{
    if (n) *n = MF_NUM_AMBIGUOUS_PAIRS;
    return mf_ambiguous_pairs;
}

void mf_make_restype_atom14_ambiguity(float *is_ambiguous /* [21, 14] */,
                                      int32_t *swap_idx /* [21, 14] */)
{
    for (int r = 0; r < NR; ++r)
        for (int a = 0; a < MF_ATOM14; ++a) {
            is_ambiguous[r * MF_ATOM14 + a] = 0.0f;
            swap_idx[r * MF_ATOM14 + a] = a;
        }
    for (int p = 0; p < MF_NUM_AMBIGUOUS_PAIRS; ++p) {
        const mf_ambiguous_atom_pair *q = &mf_ambiguous_pairs[p];
        int i = mf_atom14_index(q->restype, q->atom_a);
        int j = mf_atom14_index(q->restype, q->atom_b);
        is_ambiguous[q->restype * MF_ATOM14 + i] = 1.0f;
        is_ambiguous[q->restype * MF_ATOM14 + j] = 1.0f;
        swap_idx[q->restype * MF_ATOM14 + i] = j;
        swap_idx[q->restype * MF_ATOM14 + j] = i;
    }
}

/* ---- geometry ---- */

static double vdw_radius(char element)
{
    switch (element) {
    case 'C':
        return 1.7;
    case 'N':
        return 1.55;
    case 'O':
        return 1.52;
    case 'S':
        return 1.8;
    default:
        return -1.0;
    }
}

float mf_van_der_waals_radius(char element)
{
    return (float)vdw_radius(element);
}

static const mf_residue_bond *find_bond(int restype, const char *a, const char *b)
{
    int n = 0;
    const mf_residue_bond *bonds = mf_residue_bonds(&n);
    for (int i = 0; i < n; ++i) {
        if (bonds[i].restype != restype) continue;
        if ((strcmp(bonds[i].atom1, a) == 0 && strcmp(bonds[i].atom2, b) == 0) ||
            (strcmp(bonds[i].atom1, b) == 0 && strcmp(bonds[i].atom2, a) == 0))
            return &bonds[i];
    }
    return NULL;
}

static void set_pair(float *m, int r, int i, int j, float v)
{
    m[((size_t)r * MF_ATOM14 + i) * MF_ATOM14 + j] = v;
    m[((size_t)r * MF_ATOM14 + j) * MF_ATOM14 + i] = v;
}

void mf_make_atom14_dists_bounds(float overlap_tolerance, float bond_length_tolerance_factor,
                                 float *lower /* [21, 14, 14] */, float *upper /* [21, 14, 14] */,
                                 float *stddev /* [21, 14, 14] */)
{
    size_t total = (size_t)NR * MF_ATOM14 * MF_ATOM14;
    memset(lower, 0, total * sizeof(float));
    memset(upper, 0, total * sizeof(float));
    memset(stddev, 0, total * sizeof(float));
    for (int r = 0; r < MF_NUM_RESTYPES; ++r) {
        /* clash bounds from van der Waals radii (element = first letter of the atom name) */
        for (int i = 0; i < MF_ATOM14; ++i) {
            const char *ni = mf_atom14_names[r][i];
            if (!ni[0]) continue;
            for (int j = 0; j < MF_ATOM14; ++j) {
                const char *nj = mf_atom14_names[r][j];
                if (!nj[0] || i == j) continue;
                double lo = vdw_radius(ni[0]) + vdw_radius(nj[0]) - (double)overlap_tolerance;
                set_pair(lower, r, i, j, (float)lo);
                set_pair(upper, r, i, j, 1e10f);
            }
        }
        /* bonds, then angles as virtual bonds, overwrite the clash bounds */
        int nb = 0, na = 0;
        const mf_residue_bond *bonds = mf_residue_bonds(&nb);
        const mf_residue_bond_angle *angles = mf_residue_bond_angles(&na);
        for (int b = 0; b < nb; ++b) {
            if (bonds[b].restype != r) continue;
            int i = mf_atom14_index(r, bonds[b].atom1), j = mf_atom14_index(r, bonds[b].atom2);
            double len = bonds[b].length, sd = bonds[b].stddev;
            set_pair(lower, r, i, j, (float)(len - (double)bond_length_tolerance_factor * sd));
            set_pair(upper, r, i, j, (float)(len + (double)bond_length_tolerance_factor * sd));
            set_pair(stddev, r, i, j, (float)sd);
        }
        for (int a = 0; a < na; ++a) {
            if (angles[a].restype != r) continue;
            const mf_residue_bond *b1 = find_bond(r, angles[a].atom1, angles[a].atom2);
            const mf_residue_bond *b2 = find_bond(r, angles[a].atom2, angles[a].atom3);
            if (!b1 || !b2) continue; /* every angle of the table has both bonds (tested) */
            const double deg = 3.14159265358979323846 / 180.0;
            double gamma = angles[a].angle_deg * deg, gamma_sd = angles[a].stddev_deg * deg;
            double l1 = b1->length, l2 = b2->length;
            /* law of cosines, uncertainty propagated assuming uncorrelated errors */
            double len = sqrt(l1 * l1 + l2 * l2 - 2.0 * l1 * l2 * cos(gamma));
            double d_outer = 0.5 / len;
            double d_gamma = 2.0 * l1 * l2 * sin(gamma) * d_outer;
            double d_l1 = (2.0 * l1 - 2.0 * l2 * cos(gamma)) * d_outer;
            double d_l2 = (2.0 * l2 - 2.0 * l1 * cos(gamma)) * d_outer;
            double sd =
                sqrt(d_gamma * gamma_sd * d_gamma * gamma_sd +
                     d_l1 * b1->stddev * d_l1 * b1->stddev + d_l2 * b2->stddev * d_l2 * b2->stddev);
            int i = mf_atom14_index(r, angles[a].atom1), j = mf_atom14_index(r, angles[a].atom3);
            set_pair(lower, r, i, j, (float)(len - (double)bond_length_tolerance_factor * sd));
            set_pair(upper, r, i, j, (float)(len + (double)bond_length_tolerance_factor * sd));
            set_pair(stddev, r, i, j, (float)sd);
        }
    }
}
