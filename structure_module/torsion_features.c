/* Ground-truth frames, torsions and atom14 features from atom37, see torsion_features.h. */
#include "structure_module/torsion_features.h"

#include <math.h>
#include <string.h>

#include "structure_module/all_atom.h"

#define NG MF_NUM_RIGID_GROUPS

static mf_status check_aatype(const int32_t *aatype, int64_t N, int max, const char *what)
{
    MF_REQUIRE(N >= 0, "%s: N = %lld", what, (long long)N);
    MF_REQUIRE(N == 0 || aatype, "%s: aatype missing", what);
    for (int64_t i = 0; i < N; i++)
        MF_REQUIRE(aatype[i] >= 0 && aatype[i] <= max, "%s: aatype[%lld] = %d is outside 0..%d",
                   what, (long long)i, (int)aatype[i], max);
    return MF_OK;
}

void mf_rigid_from_3_points_f64(double rot[9], double trans[3], const double point_on_neg_x_axis[3],
                                const double origin[3], const double point_on_xy_plane[3])
{
    double e0[3], e1[3], e2[3];
    for (int k = 0; k < 3; k++) {
        e0[k] = origin[k] - point_on_neg_x_axis[k];
        e1[k] = point_on_xy_plane[k] - origin[k];
    }
    /* AF2 vecs_robust_normalize: epsilon inside the square root */
    const double n0 =
        sqrt(e0[0] * e0[0] + e0[1] * e0[1] + e0[2] * e0[2] + MF_RIGID_FROM_3_POINTS_EPS);
    for (int k = 0; k < 3; k++) e0[k] /= n0;
    const double c = e1[0] * e0[0] + e1[1] * e0[1] + e1[2] * e0[2];
    for (int k = 0; k < 3; k++) e1[k] -= c * e0[k];
    const double n1 =
        sqrt(e1[0] * e1[0] + e1[1] * e1[1] + e1[2] * e1[2] + MF_RIGID_FROM_3_POINTS_EPS);
    for (int k = 0; k < 3; k++) e1[k] /= n1;
    e2[0] = e0[1] * e1[2] - e0[2] * e1[1];
    e2[1] = e0[2] * e1[0] - e0[0] * e1[2];
    e2[2] = e0[0] * e1[1] - e0[1] * e1[0];
    for (int r = 0; r < 3; r++) {
        rot[3 * r] = e0[r];
        rot[3 * r + 1] = e1[r];
        rot[3 * r + 2] = e2[r];
        trans[r] = origin[r];
    }
}

static void load3(double out[3], const float *pos37, int64_t i, int atom)
{
    const float *p = pos37 + ((size_t)i * MF_ATOM37 + (size_t)atom) * 3;
    out[0] = p[0], out[1] = p[1], out[2] = p[2];
}

static void store4x4(float *m, const double rot[9], const double trans[3])
{
    for (int r = 0; r < 3; r++) {
        for (int c = 0; c < 3; c++) m[4 * r + c] = (float)rot[3 * r + c];
        m[4 * r + 3] = (float)trans[r];
    }
    m[12] = m[13] = m[14] = 0.0f;
    m[15] = 1.0f;
}

mf_status mf_make_atom14_masks(int32_t *residx_atom14_to_atom37, int32_t *residx_atom37_to_atom14,
                               float *atom14_atom_exists, float *atom37_atom_exists,
                               const int32_t *aatype, int64_t N)
{
    MF_TRY(check_aatype(aatype, N, MF_RESTYPE_UNK, "make_atom14_masks"));
    const mf_all_atom_tables *t = mf_all_atom_tables_get();
    for (int64_t i = 0; i < N; i++) {
        const int r = aatype[i];
        const size_t o14 = (size_t)i * MF_ATOM14, o37 = (size_t)i * MF_ATOM37;
        if (residx_atom14_to_atom37)
            memcpy(residx_atom14_to_atom37 + o14, t->atom14_to_atom37[r], sizeof(int32_t) * 14);
        if (residx_atom37_to_atom14)
            memcpy(residx_atom37_to_atom14 + o37, t->atom37_to_atom14[r], sizeof(int32_t) * 37);
        if (atom14_atom_exists) memcpy(atom14_atom_exists + o14, t->atom14_mask[r], 4 * 14);
        if (atom37_atom_exists) memcpy(atom37_atom_exists + o37, t->atom37_mask[r], 4 * 37);
    }
    return MF_OK;
}

mf_status mf_make_atom14_positions(float *atom14_gt_positions, float *atom14_gt_exists,
                                   float *atom14_alt_gt_positions, float *atom14_alt_gt_exists,
                                   float *atom14_atom_is_ambiguous, const int32_t *aatype,
                                   const float *all_atom_positions, const float *all_atom_mask,
                                   int64_t N)
{
    MF_TRY(check_aatype(aatype, N, MF_RESTYPE_UNK, "make_atom14_positions"));
    MF_REQUIRE(N == 0 || (all_atom_positions && all_atom_mask),
               "make_atom14_positions: all_atom_positions and all_atom_mask required");
    const mf_all_atom_tables *t = mf_all_atom_tables_get();
    for (int64_t i = 0; i < N; i++) {
        const int r = aatype[i];
        float gt[MF_ATOM14][3], ex[MF_ATOM14];
        for (int k = 0; k < MF_ATOM14; k++) {
            const int a = t->atom14_to_atom37[r][k];
            ex[k] = t->atom14_mask[r][k] * all_atom_mask[(size_t)i * MF_ATOM37 + (size_t)a];
            for (int c = 0; c < 3; c++)
                gt[k][c] = ex[k] * all_atom_positions[((size_t)i * MF_ATOM37 + (size_t)a) * 3 + c];
        }
        for (int k = 0; k < MF_ATOM14; k++) {
            const size_t o = (size_t)i * MF_ATOM14 + (size_t)k;
            /* the renaming permutation is an involution: slot k takes its partner's atom */
            const int s = t->atom14_swap[r][k];
            if (atom14_gt_exists) atom14_gt_exists[o] = ex[k];
            if (atom14_alt_gt_exists) atom14_alt_gt_exists[o] = ex[s];
            if (atom14_atom_is_ambiguous)
                atom14_atom_is_ambiguous[o] = t->atom14_is_ambiguous[r][k];
            for (int c = 0; c < 3; c++) {
                if (atom14_gt_positions) atom14_gt_positions[o * 3 + c] = gt[k][c];
                if (atom14_alt_gt_positions) atom14_alt_gt_positions[o * 3 + c] = gt[s][c];
            }
        }
    }
    return MF_OK;
}

mf_status mf_atom37_to_frames(float *rigidgroups_gt_frames, float *rigidgroups_gt_exists,
                              float *rigidgroups_group_exists,
                              float *rigidgroups_group_is_ambiguous,
                              float *rigidgroups_alt_gt_frames, const int32_t *aatype,
                              const float *all_atom_positions, const float *all_atom_mask,
                              int64_t N)
{
    MF_TRY(check_aatype(aatype, N, MF_RESTYPE_UNK, "atom37_to_frames"));
    MF_REQUIRE(N == 0 || (all_atom_positions && all_atom_mask),
               "atom37_to_frames: all_atom_positions and all_atom_mask required");
    const mf_all_atom_tables *t = mf_all_atom_tables_get();
    for (int64_t i = 0; i < N; i++) {
        const int r = aatype[i];
        for (int g = 0; g < NG; g++) {
            const size_t o = (size_t)i * NG + (size_t)g;
            const int32_t *base = t->rigid_group_base_atom37[r][g];
            double p[3][3], rot[9], trans[3];
            float m = 1.0f;
            for (int k = 0; k < 3; k++) {
                load3(p[k], all_atom_positions, i, base[k]);
                const float mk = all_atom_mask[(size_t)i * MF_ATOM37 + (size_t)base[k]];
                m = mk < m ? mk : m;
            }
            mf_rigid_from_3_points_f64(rot, trans, p[0], p[1], p[2]);
            if (g == 0) /* AF2's "old convention" for the backbone: mirror the x and z axes */
                for (int row = 0; row < 3; row++)
                    rot[3 * row] = -rot[3 * row], rot[3 * row + 2] = -rot[3 * row + 2];
            if (rigidgroups_gt_frames) store4x4(rigidgroups_gt_frames + o * 16, rot, trans);
            if (rigidgroups_gt_exists) rigidgroups_gt_exists[o] = m * t->rigid_group_exists[r][g];
            if (rigidgroups_group_exists) rigidgroups_group_exists[o] = t->rigid_group_exists[r][g];
            if (rigidgroups_group_is_ambiguous)
                rigidgroups_group_is_ambiguous[o] = t->rigid_group_is_ambiguous[r][g];
            if (rigidgroups_alt_gt_frames) {
                /* the pi-symmetric group turned by pi about its x axis: y, z columns negated */
                if (t->rigid_group_is_ambiguous[r][g] != 0.0f)
                    for (int row = 0; row < 3; row++)
                        rot[3 * row + 1] = -rot[3 * row + 1], rot[3 * row + 2] = -rot[3 * row + 2];
                store4x4(rigidgroups_alt_gt_frames + o * 16, rot, trans);
            }
        }
    }
    return MF_OK;
}

mf_status mf_backbone_frames(float *backbone_rigid_tensor, float *backbone_rigid_mask,
                             const float *all_atom_positions, const float *all_atom_mask, int64_t N)
{
    MF_REQUIRE(N >= 0, "backbone_frames: N = %lld", (long long)N);
    MF_REQUIRE(N == 0 || (all_atom_positions && all_atom_mask),
               "backbone_frames: all_atom_positions and all_atom_mask required");
    const mf_all_atom_tables *t = mf_all_atom_tables_get();
    const int32_t *base = t->rigid_group_base_atom37[0][0]; /* the same for every restype */
    for (int64_t i = 0; i < N; i++) {
        double p[3][3], rot[9], trans[3];
        float m = 1.0f;
        for (int k = 0; k < 3; k++) {
            load3(p[k], all_atom_positions, i, base[k]);
            const float mk = all_atom_mask[(size_t)i * MF_ATOM37 + (size_t)base[k]];
            m = mk < m ? mk : m;
        }
        mf_rigid_from_3_points_f64(rot, trans, p[0], p[1], p[2]);
        for (int row = 0; row < 3; row++)
            rot[3 * row] = -rot[3 * row], rot[3 * row + 2] = -rot[3 * row + 2];
        if (backbone_rigid_tensor) store4x4(backbone_rigid_tensor + (size_t)i * 16, rot, trans);
        if (backbone_rigid_mask) backbone_rigid_mask[i] = m;
    }
    return MF_OK;
}

mf_status mf_atom37_to_torsion_angles(float *torsion_angles_sin_cos,
                                      float *alt_torsion_angles_sin_cos, float *torsion_angles_mask,
                                      const int32_t *aatype, const float *all_atom_positions,
                                      const float *all_atom_mask, int64_t N)
{
    MF_TRY(check_aatype(aatype, N, INT32_MAX, "atom37_to_torsion_angles"));
    MF_REQUIRE(N == 0 || (all_atom_positions && all_atom_mask),
               "atom37_to_torsion_angles: all_atom_positions and all_atom_mask required");
    const mf_all_atom_tables *t = mf_all_atom_tables_get();
    enum { N_ = 0, CA = 1, C = 2, O = 4 }; /* atom37 slots of the backbone atoms */
    for (int64_t i = 0; i < N; i++) {
        const int r = aatype[i] < MF_RESTYPE_UNK ? aatype[i] : MF_RESTYPE_UNK;
        const float *m = all_atom_mask + (size_t)i * MF_ATOM37;
        const float *pm = i > 0 ? m - MF_ATOM37 : NULL;
        double x[MF_NUM_TORSIONS][4][3], mask[MF_NUM_TORSIONS];
        double prev_ca[3] = {0, 0, 0}, prev_c[3] = {0, 0, 0};
        if (i > 0)
            load3(prev_ca, all_atom_positions, i - 1, CA),
                load3(prev_c, all_atom_positions, i - 1, C);
        /* pre-omega: CA, C of the previous residue, N, CA; phi: previous C, N, CA, C;
         * psi: N, CA, C, O */
        memcpy(x[0][0], prev_ca, sizeof prev_ca);
        memcpy(x[0][1], prev_c, sizeof prev_c);
        load3(x[0][2], all_atom_positions, i, N_);
        load3(x[0][3], all_atom_positions, i, CA);
        memcpy(x[1][0], prev_c, sizeof prev_c);
        load3(x[1][1], all_atom_positions, i, N_);
        load3(x[1][2], all_atom_positions, i, CA);
        load3(x[1][3], all_atom_positions, i, C);
        load3(x[2][0], all_atom_positions, i, N_);
        load3(x[2][1], all_atom_positions, i, CA);
        load3(x[2][2], all_atom_positions, i, C);
        load3(x[2][3], all_atom_positions, i, O);
        mask[0] = pm ? (double)pm[CA] * pm[C] * m[N_] * m[CA] : 0.0;
        mask[1] = pm ? (double)pm[C] * m[N_] * m[CA] * m[C] : 0.0;
        mask[2] = (double)m[N_] * m[CA] * m[C] * m[O];
        for (int chi = 0; chi < MF_NUM_CHI; chi++) {
            double mk = mf_chi_angles_mask[r][chi];
            for (int k = 0; k < 4; k++) {
                const int a = t->chi_atom_indices[r][chi][k];
                load3(x[3 + chi][k], all_atom_positions, i, a);
                mk *= m[a];
            }
            mask[3 + chi] = mk;
        }
        for (int k = 0; k < MF_NUM_TORSIONS; k++) {
            /* frame with atom 2 at the origin, atom 1 on the -x axis, atom 0 in the xy plane; the
             * fourth atom's (z, y) there is (sin, cos) of the torsion times its distance from x */
            double rot[9], trans[3], d[3], y = 0, z = 0;
            mf_rigid_from_3_points_f64(rot, trans, x[k][1], x[k][2], x[k][0]);
            for (int c = 0; c < 3; c++) d[c] = x[k][3][c] - trans[c];
            for (int c = 0; c < 3; c++) y += rot[3 * c + 1] * d[c], z += rot[3 * c + 2] * d[c];
            const double inv = 1.0 / sqrt(y * y + z * z + MF_TORSION_NORM_EPS);
            /* psi is measured with O, on the opposite side of N(i+1): turn it by pi */
            const double sign = k == 2 ? -1.0 : 1.0;
            const double s = sign * z * inv, co = sign * y * inv;
            const double alt = k >= 3 && mf_chi_pi_periodic[r][k - 3] != 0.0f ? -1.0 : 1.0;
            const size_t o = ((size_t)i * MF_NUM_TORSIONS + (size_t)k) * 2;
            if (torsion_angles_sin_cos) {
                torsion_angles_sin_cos[o] = (float)s;
                torsion_angles_sin_cos[o + 1] = (float)co;
            }
            if (alt_torsion_angles_sin_cos) {
                alt_torsion_angles_sin_cos[o] = (float)(alt * s);
                alt_torsion_angles_sin_cos[o + 1] = (float)(alt * co);
            }
            if (torsion_angles_mask)
                torsion_angles_mask[(size_t)i * MF_NUM_TORSIONS + (size_t)k] = (float)mask[k];
        }
    }
    return MF_OK;
}

mf_status mf_chi_angles(float *chi_angles_sin_cos, float *chi_mask, const int32_t *aatype,
                        const float *all_atom_positions, const float *all_atom_mask, int64_t N)
{
    MF_TRY(check_aatype(aatype, N, INT32_MAX, "chi_angles"));
    MF_REQUIRE(N == 0 || (all_atom_positions && all_atom_mask),
               "chi_angles: all_atom_positions and all_atom_mask required");
    /* the chis use only the residue's own atoms: one residue at a time */
    for (int64_t i = 0; i < N; i++) {
        float sc[MF_NUM_TORSIONS * 2], mk[MF_NUM_TORSIONS];
        MF_TRY(mf_atom37_to_torsion_angles(sc, NULL, mk, aatype + i,
                                           all_atom_positions + (size_t)i * MF_ATOM37 * 3,
                                           all_atom_mask + (size_t)i * MF_ATOM37, 1));
        for (int chi = 0; chi < MF_NUM_CHI; chi++) {
            const size_t o = (size_t)i * MF_NUM_CHI + (size_t)chi;
            if (chi_angles_sin_cos) {
                chi_angles_sin_cos[2 * o] = sc[(3 + chi) * 2];
                chi_angles_sin_cos[2 * o + 1] = sc[(3 + chi) * 2 + 1];
            }
            if (chi_mask) chi_mask[o] = mk[3 + chi];
        }
    }
    return MF_OK;
}

void mf_pseudo_beta_from_atom37(float *pseudo_beta, float *pseudo_beta_mask, const int32_t *aatype,
                                const float *all_atom_positions, const float *all_atom_mask,
                                int64_t N)
{
    const int gly = mf_restype_from_one_letter('G');
    const int ca = mf_atom37_index("CA"), cb = mf_atom37_index("CB");
    for (int64_t i = 0; i < N; i++) {
        const int a = aatype[i] == gly ? ca : cb;
        const size_t o = (size_t)i * MF_ATOM37 + (size_t)a;
        if (pseudo_beta)
            for (int c = 0; c < 3; c++)
                pseudo_beta[(size_t)i * 3 + c] = all_atom_positions[o * 3 + c];
        if (pseudo_beta_mask && all_atom_mask) pseudo_beta_mask[i] = all_atom_mask[o];
    }
}
