/* Ground-truth features and the all-atom rebuild of real proteins (structure_module/
 * torsion_features.h, all_atom.h):
 *  1. every ground-truth feature of features.h5 (4ZEY A, computed by the reference
 *     implementation) recomputed from all_atom_positions / all_atom_mask / aatype (and the
 *     template atoms for the template torsions): index maps, masks, atom14 positions and
 *     pseudo-beta exactly, frames and chi angles with max|c - r| / max|r| <= MF_TOL_VEC_MODULE
 *     (1e-5; the reference computed in f32, we in double, rounded once), template torsions within
 *     TOL_TEMPLATE_TORSIONS (1e-4); every entry is compared, masked ones included, except the
 *     template torsions whose mask is 0 (missing atoms, the first residue's pre-omega and phi
 *     from zero padding): AF2 computes them from degenerate points and their value is the
 *     reference's f32 rounding noise, so both sides are multiplied by the mask there;
 *  2. an idealised protein (random backbone frames and unit torsions, all 21 restypes, built by
 *     torsions -> frames -> atom14 -> atom37) gives back its psi and chi angles, its backbone and
 *     rigid-group frames and, rebuilt, its atoms: within TOL_IDEAL_* (the f32 rounding of the
 *     atom37 positions), so every convention of the ground-truth side agrees with the build side;
 *  3. the AF2 alt-torsion rule on real data: for every pi-periodic chi (ASP chi2, GLU chi3, PHE
 *     chi2, TYR chi2) of several PDB chains, the alternative torsion (the chi turned by pi) agrees
 *     with the chi measured after swapping the ambiguous atoms (atom14_alt_gt_positions) within
 *     TOL_ALT_DEG (real carboxylates and rings are nearly, not exactly, symmetric); all other
 *     torsions are unchanged by the swap;
 *  4. the acceptance check: each chain rebuilt from its own ground-truth torsions and backbone
 *     frames (mf_all_atom_forward, the model's f32 path) reproduces its heavy atoms to within the
 *     idealised geometry's error (AF2's literature positions: Engh & Huber bond lengths and
 *     angles). Residues with every heavy atom, N/CA/C/O and all chis observed are compared; a table
 *     gives the RMSD per residue type for backbone (N, CA, C, O) and side-chain atoms (CB onwards)
 *     over all chains, and the rebuilt rigid-group frames are compared with atom37_to_frames'
 *     ground-truth frames (the frames sidechain FAPE aligns). Bounds: see TOL_REBUILD_*. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "data/h5io.h"
#include "data/structure_io.h"
#include "structure_module/all_atom.h"
#include "structure_module/rigid.h"
#include "structure_module/torsion_features.h"
#include "tests/support/mf_test.h"

#define NG MF_NUM_RIGID_GROUPS

/* Swapping OD1/OD2 (or CD1/CD2 and CE1/CE2) of a real residue turns the chi by pi up to the
 * asymmetry of the group in the crystal: a few degrees for well-refined high-resolution chains. */
#define TOL_ALT_DEG 15.0
/* The template atoms of features.h5 are perturbed coordinates with distorted backbones (N-CA
 * 2.06 A at template 0 residue 17): the reference's f32 torsions there carry up to ~2e-5 of
 * rounding (we compute in double), so the template torsions get the 1e-4. */
#define TOL_TEMPLATE_TORSIONS 1e-4
/* The idealised protein's atom37 positions are rounded to f32 (|x| < ~30 A: spacing ~2e-6 A);
 * angles over ~1.5 A bonds then carry ~1e-6 rad. */
#define TOL_IDEAL_POS_A 1e-4
#define TOL_IDEAL_DEG   1e-3
#define TOL_IDEAL_ROT   1e-5
/* Rebuild of real chains from AF2's idealised geometry (literature positions: Engh & Huber bond
 * lengths and angles). Real bond angles deviate by ~1-3 degrees, which tilts each rigid group,
 * and the tilts add up along the chi chain and act on lever arms of up to ~6 A (TYR OH, ARG NH*,
 * LYS NZ). Test 2 shows the construction itself is exact, and test_all_atom shows it equals the
 * reference's bitwise, so what is left here is the idealisation error AF2's own ground truth
 * carries. Measured on these 7 chains (897 residues): side-chain RMSD 0.078 A for CB, 0.16 /
 * 0.29 / 0.37 / 0.58 A for the chi1..chi4 groups' atoms, 0.26 A pooled, 0.05 (ALA) to 0.47 (ARG,
 * one badly modelled residue with a 1.31 A CG-CD bond) per type; backbone atoms 0.025-0.049 A.
 * The bounds keep ~30% headroom over these and stay far below what a convention error gives (a
 * chi or psi measured with the wrong sign or frame moves atoms by 1-4 A). */
#define TOL_REBUILD_BACKBONE       0.1  /* per type, N CA C O */
#define TOL_REBUILD_SIDECHAIN_TYPE 0.6  /* per type, all side-chain atoms */
#define TOL_REBUILD_MEDIAN         0.45 /* per type, median over residues of their RMSD */
#define TOL_REBUILD_SIDECHAIN_ALL  0.3  /* pooled over every side-chain atom */
#define TOL_REBUILD_TYPE_MEAN      0.3  /* mean over the 19 types with side chains */
/* side-chain atoms pooled by rigid group: CB (backbone group), chi1..chi4 groups */
static const double tol_group[MF_NUM_RIGID_GROUPS] = {0.12, 0, 0, 0, 0.25, 0.4, 0.5, 0.8};

static float *falloc(int64_t n)
{
    return calloc((size_t)(n > 0 ? n : 1), sizeof(float));
}

/* ---- 1. features.h5 ---- */

typedef struct {
    hid_t f;
    const char *path;
} h5src;

static void *read_ds(const h5src *s, const char *name, mf_dtype dt, int64_t expect_numel)
{
    mf_h5_array a = {0};
    mf_status st = mf_h5_read_array(s->f, s->path, name, dt, &a);
    MF_TEST_TRUE(st == MF_OK, "reading %s: %s", name, st == MF_OK ? "" : mf_last_error());
    if (st != MF_OK) return NULL;
    if (mf_h5_array_numel(&a) != expect_numel) {
        mf_test_fail("%s has %lld elements, expected %lld", name, (long long)mf_h5_array_numel(&a),
                     (long long)expect_numel);
        mf_h5_array_free(&a);
        return NULL;
    }
    return a.data; /* malloc'd: the caller frees */
}

static void compare_i32(const char *name, const int32_t *a, const int32_t *ref, int64_t n)
{
    int64_t bad = 0;
    for (int64_t i = 0; i < n; i++) bad += a[i] != ref[i];
    printf("  %-48s n=%-8lld exact  %s\n", name, (long long)n, bad ? "FAIL" : "ok");
    MF_TEST_TRUE(bad == 0, "%s: %lld of %lld differ", name, (long long)bad, (long long)n);
}

/* Both sides times mask (per group of `per` values; NULL: as they are) before the max-relative
 * comparison. */
static void compare_masked(const char *name, float *a, float *ref, const float *mask, int64_t n,
                           int64_t per, double rtol)
{
    for (int64_t i = 0; mask && i < n; i++) {
        const float m = mask[i / per];
        a[i] *= m, ref[i] *= m;
    }
    mf_check_maxrel_f32(name, a, ref, n, rtol);
}

static void test_features(void)
{
    printf("1. ground-truth features of features.h5 (4ZEY A) recomputed from atom37\n");
    char path[1024];
    snprintf(path, sizeof path, "%s/testvectors/features.h5", mf_test_shared_dir());
    mf_h5_quiet();
    h5src s = {-1, path};
    MF_TEST_OK(mf_h5_open_read(path, &s.f));
    if (s.f < 0) return;
    mf_h5_array aat = {0};
    MF_TEST_OK(mf_h5_read_array(s.f, path, "aatype", MF_I32, &aat));
    if (!aat.data) {
        H5Fclose(s.f);
        return;
    }
    const int64_t N = aat.shape[0];
    const int32_t *aa = aat.data;
    float *pos = read_ds(&s, "all_atom_positions", MF_F32, N * 111);
    float *mask = read_ds(&s, "all_atom_mask", MF_F32, N * 37);
    if (!pos || !mask) goto done;

    /* make_atom14_masks */
    int32_t *a14to37 = calloc((size_t)N * 14, 4), *a37to14 = calloc((size_t)N * 37, 4);
    float *ex14 = falloc(N * 14), *ex37 = falloc(N * 37);
    MF_TEST_OK(mf_make_atom14_masks(a14to37, a37to14, ex14, ex37, aa, N));
    int32_t *r14 = read_ds(&s, "residx_atom14_to_atom37", MF_I32, N * 14);
    int32_t *r37 = read_ds(&s, "residx_atom37_to_atom14", MF_I32, N * 37);
    float *rex14 = read_ds(&s, "atom14_atom_exists", MF_F32, N * 14);
    float *rex37 = read_ds(&s, "atom37_atom_exists", MF_F32, N * 37);
    if (r14) compare_i32("residx_atom14_to_atom37", a14to37, r14, N * 14);
    if (r37) compare_i32("residx_atom37_to_atom14", a37to14, r37, N * 37);
    if (rex14) mf_check_bitwise_f32("atom14_atom_exists", ex14, rex14, N * 14);
    if (rex37) mf_check_bitwise_f32("atom37_atom_exists", ex37, rex37, N * 37);
    free(a14to37), free(a37to14), free(r14), free(r37), free(rex14), free(rex37), free(ex37);

    /* make_atom14_positions */
    float *gt = falloc(N * 42), *gtex = falloc(N * 14), *alt = falloc(N * 42);
    float *altex = falloc(N * 14), *amb = falloc(N * 14);
    MF_TEST_OK(mf_make_atom14_positions(gt, gtex, alt, altex, amb, aa, pos, mask, N));
    float *rgt = read_ds(&s, "atom14_gt_positions", MF_F32, N * 42);
    float *rgtex = read_ds(&s, "atom14_gt_exists", MF_F32, N * 14);
    float *ralt = read_ds(&s, "atom14_alt_gt_positions", MF_F32, N * 42);
    float *raltex = read_ds(&s, "atom14_alt_gt_exists", MF_F32, N * 14);
    float *ramb = read_ds(&s, "atom14_atom_is_ambiguous", MF_F32, N * 14);
    /* exact values (the reference's alt positions are +0 where ours carry the -0 of 0 * x < 0) */
    if (rgt) mf_check_close_f32("atom14_gt_positions (exact)", gt, rgt, N * 42, 0, 0);
    if (rgtex) mf_check_bitwise_f32("atom14_gt_exists", gtex, rgtex, N * 14);
    if (ralt) mf_check_close_f32("atom14_alt_gt_positions (exact)", alt, ralt, N * 42, 0, 0);
    if (raltex) mf_check_bitwise_f32("atom14_alt_gt_exists", altex, raltex, N * 14);
    if (ramb) mf_check_bitwise_f32("atom14_atom_is_ambiguous", amb, ramb, N * 14);
    free(gt), free(gtex), free(alt), free(altex), free(amb);
    free(rgt), free(rgtex), free(ralt), free(raltex), free(ramb), free(ex14);

    /* atom37_to_frames and get_backbone_frames */
    float *fr = falloc(N * NG * 16), *frex = falloc(N * NG), *grex = falloc(N * NG);
    float *gamb = falloc(N * NG), *afr = falloc(N * NG * 16), *bb = falloc(N * 16);
    float *bbm = falloc(N);
    MF_TEST_OK(mf_atom37_to_frames(fr, frex, grex, gamb, afr, aa, pos, mask, N));
    MF_TEST_OK(mf_backbone_frames(bb, bbm, pos, mask, N));
    float *rfr = read_ds(&s, "rigidgroups_gt_frames", MF_F32, N * NG * 16);
    float *rfrex = read_ds(&s, "rigidgroups_gt_exists", MF_F32, N * NG);
    float *rgrex = read_ds(&s, "rigidgroups_group_exists", MF_F32, N * NG);
    float *rgamb = read_ds(&s, "rigidgroups_group_is_ambiguous", MF_F32, N * NG);
    float *rafr = read_ds(&s, "rigidgroups_alt_gt_frames", MF_F32, N * NG * 16);
    float *rbb = read_ds(&s, "backbone_rigid_tensor", MF_F32, N * 16);
    float *rbbm = read_ds(&s, "backbone_rigid_mask", MF_F32, N);
    if (rfrex) mf_check_bitwise_f32("rigidgroups_gt_exists", frex, rfrex, N * NG);
    if (rgrex) mf_check_bitwise_f32("rigidgroups_group_exists", grex, rgrex, N * NG);
    if (rgamb) mf_check_bitwise_f32("rigidgroups_group_is_ambiguous", gamb, rgamb, N * NG);
    if (rbbm) mf_check_bitwise_f32("backbone_rigid_mask", bbm, rbbm, N);
    if (rfr)
        compare_masked("rigidgroups_gt_frames", fr, rfr, NULL, N * NG * 16, 16, MF_TOL_VEC_MODULE);
    if (rafr)
        compare_masked("rigidgroups_alt_gt_frames", afr, rafr, NULL, N * NG * 16, 16,
                       MF_TOL_VEC_MODULE);
    if (rbb) compare_masked("backbone_rigid_tensor", bb, rbb, NULL, N * 16, 16, MF_TOL_VEC_MODULE);
    free(fr), free(frex), free(grex), free(gamb), free(afr), free(bb), free(bbm);
    free(rfr), free(rfrex), free(rgrex), free(rgamb), free(rafr), free(rbb), free(rbbm);

    /* get_chi_angles and pseudo_beta_fn */
    float *chi = falloc(N * 8), *chim = falloc(N * 4), *pb = falloc(N * 3), *pbm = falloc(N);
    MF_TEST_OK(mf_chi_angles(chi, chim, aa, pos, mask, N));
    mf_pseudo_beta_from_atom37(pb, pbm, aa, pos, mask, N);
    float *rchi = read_ds(&s, "chi_angles_sin_cos", MF_F32, N * 8);
    float *rchim = read_ds(&s, "chi_mask", MF_F32, N * 4);
    float *rpb = read_ds(&s, "pseudo_beta", MF_F32, N * 3);
    float *rpbm = read_ds(&s, "pseudo_beta_mask", MF_F32, N);
    if (rchim) mf_check_bitwise_f32("chi_mask", chim, rchim, N * 4);
    if (rchi) compare_masked("chi_angles_sin_cos", chi, rchi, NULL, N * 8, 2, MF_TOL_VEC_MODULE);
    if (rpb) mf_check_bitwise_f32("pseudo_beta", pb, rpb, N * 3);
    if (rpbm) mf_check_bitwise_f32("pseudo_beta_mask", pbm, rpbm, N);
    free(chi), free(chim), free(pb), free(pbm), free(rchi), free(rchim), free(rpb), free(rpbm);

    /* template torsion features: [T, N] chains through atom37_to_torsion_angles */
    int32_t *taa = NULL;
    float *tpos = NULL, *tmask = NULL, *rts = NULL, *rta = NULL, *rtm = NULL;
    mf_h5_array ta = {0};
    MF_TEST_OK(mf_h5_read_array(s.f, path, "template_aatype", MF_I32, &ta));
    if (!ta.data) goto done;
    taa = ta.data;
    const int64_t T = ta.shape[0], TN = ta.shape[1];
    tpos = read_ds(&s, "template_all_atom_positions", MF_F32, T * TN * 111);
    tmask = read_ds(&s, "template_all_atom_mask", MF_F32, T * TN * 37);
    rts = read_ds(&s, "template_torsion_angles_sin_cos", MF_F32, T * TN * 14);
    rta = read_ds(&s, "template_alt_torsion_angles_sin_cos", MF_F32, T * TN * 14);
    rtm = read_ds(&s, "template_torsion_angles_mask", MF_F32, T * TN * 7);
    if (tpos && tmask && rts && rta && rtm) {
        float *ts = falloc(T * TN * 14), *tal = falloc(T * TN * 14), *tm = falloc(T * TN * 7);
        for (int64_t t = 0; t < T; t++)
            MF_TEST_OK(mf_atom37_to_torsion_angles(ts + t * TN * 14, tal + t * TN * 14,
                                                   tm + t * TN * 7, taa + t * TN,
                                                   tpos + t * TN * 111, tmask + t * TN * 37, TN));
        mf_check_bitwise_f32("template_torsion_angles_mask", tm, rtm, T * TN * 7);
        compare_masked("template_torsion_angles_sin_cos (x mask)", ts, rts, tm, T * TN * 14, 2,
                       TOL_TEMPLATE_TORSIONS);
        compare_masked("template_alt_torsion_angles_sin_cos (x mask)", tal, rta, tm, T * TN * 14, 2,
                       TOL_TEMPLATE_TORSIONS);
        free(ts), free(tal), free(tm);
    }
    free(tpos), free(tmask), free(rts), free(rta), free(rtm);
    mf_h5_array_free(&ta);
done:
    free(pos), free(mask);
    mf_h5_array_free(&aat);
    H5Fclose(s.f);
}

/* ---- 2. idealised protein round trip ---- */

static double angle_deg(double s, double c)
{
    return atan2(s, c) * 180.0 / 3.14159265358979323846;
}

static double wrap_deg(double a)
{
    while (a > 180.0) a -= 360.0;
    while (a <= -180.0) a += 360.0;
    return a;
}

static void test_ideal_round_trip(mf_ctx *ctx)
{
    printf("2. idealised protein: built -> ground-truth torsions and frames -> rebuilt\n");
    const int64_t N = 63;
    const mf_all_atom_tables *tb = mf_all_atom_tables_get();
    int32_t *aa = calloc((size_t)N, 4);
    double *q = calloc((size_t)N * 4, 8), *rot = calloc((size_t)N * 9, 8);
    double *trans = calloc((size_t)N * 3, 8), *ang = calloc((size_t)N * 14, 8);
    double *fr = calloc((size_t)N * NG * 9, 8), *ft = calloc((size_t)N * NG * 3, 8);
    double *p14 = calloc((size_t)N * 42, 8), *p37 = calloc((size_t)N * 111, 8);
    float *pos = falloc(N * 111), *mask = falloc(N * 37), *ts = falloc(N * 14), *tm = falloc(N * 7);
    float *bb = falloc(N * 16), *bbm = falloc(N), *gfr = falloc(N * NG * 16);
    float *gex = falloc(N * NG), *rb = falloc(N * 42), *frot = falloc(N * 9), *ftr = falloc(N * 3);
    float *ofr = falloc(N * NG * 9), *oft = falloc(N * NG * 3);
    for (int64_t i = 0; i < N; i++) aa[i] = (int32_t)(i % 21);
    mf_test_fill_normal_f64(q, N * 4, 11, 1.0);
    mf_quat_normalize_f64(q, q, N);
    mf_quat_to_rot_f64(rot, q, N);
    mf_test_fill_normal_f64(trans, N * 3, 12, 8.0);
    mf_test_fill_normal_f64(ang, N * 14, 13, 1.0);
    for (int64_t k = 0; k < N * 7; k++) {
        double *a = ang + 2 * k, n = sqrt(a[0] * a[0] + a[1] * a[1]);
        a[0] /= n, a[1] /= n;
    }
    mf_torsion_angles_to_frames_f64(fr, ft, aa, rot, trans, ang, N);
    mf_frames_to_atom14_pos_f64(p14, aa, fr, ft, N);
    mf_atom14_to_atom37_f64(p37, p14, aa, N, 3);
    mf_f64_to_f32(pos, p37, N * 111);
    for (int64_t i = 0; i < N; i++) memcpy(mask + i * 37, tb->atom37_mask[aa[i]], 4 * 37);
    MF_TEST_OK(mf_atom37_to_torsion_angles(ts, NULL, tm, aa, pos, mask, N));
    MF_TEST_OK(mf_backbone_frames(bb, bbm, pos, mask, N));
    MF_TEST_OK(mf_atom37_to_frames(gfr, gex, NULL, NULL, NULL, aa, pos, mask, N));
    /* psi and the chis come back (pre-omega and phi move no heavy atom of their residue) */
    double worst_deg = 0, worst_rot = 0, worst_tr = 0, worst_pos = 0;
    int64_t n_ang = 0, n_fr = 0;
    for (int64_t i = 0; i < N; i++)
        for (int k = 2; k < 7; k++) {
            if (tm[i * 7 + k] == 0.0f) continue;
            const double d =
                fabs(wrap_deg(angle_deg(ts[(i * 7 + k) * 2], ts[(i * 7 + k) * 2 + 1]) -
                              angle_deg(ang[(i * 7 + k) * 2], ang[(i * 7 + k) * 2 + 1])));
            if (d > worst_deg) worst_deg = d;
            n_ang++;
        }
    /* every observed group's ground-truth frame is the frame it was built with */
    for (int64_t i = 0; i < N; i++)
        for (int g = 0; g < NG; g++) {
            if (gex[i * NG + g] == 0.0f) continue;
            n_fr++;
            for (int a = 0; a < 3; a++) {
                for (int b = 0; b < 3; b++) {
                    const double e =
                        fabs(fr[(i * NG + g) * 9 + 3 * a + b] - gfr[(i * NG + g) * 16 + 4 * a + b]);
                    if (e > worst_rot) worst_rot = e;
                }
                const double e =
                    fabs(ft[(i * NG + g) * 3 + a] - gfr[(i * NG + g) * 16 + 4 * a + 3]);
                if (e > worst_tr) worst_tr = e;
            }
        }
    /* rebuilt through the model's f32 path from the recovered torsions and backbone frames */
    for (int64_t i = 0; i < N; i++)
        for (int r = 0; r < 3; r++) {
            for (int c = 0; c < 3; c++) frot[9 * i + 3 * r + c] = bb[16 * i + 4 * r + c];
            ftr[3 * i + r] = bb[16 * i + 4 * r + 3];
        }
    mf_tensor taa = mf_tensor_4(aa, MF_I32, MF_DEV_CPU, 1, N, 1, 1, 1);
    mf_tensor tr = mf_tensor_f32(frot, 3, N, 3, 3), tt = mf_tensor_f32(ftr, 2, N, 3);
    mf_tensor tan = mf_tensor_f32(ts, 3, N, 7, 2), tfr = mf_tensor_f32(ofr, 4, N, NG, 3, 3);
    mf_tensor tft = mf_tensor_f32(oft, 3, N, NG, 3), tp = mf_tensor_f32(rb, 3, N, 14, 3);
    MF_TEST_OK(mf_all_atom_forward(ctx, &tfr, &tft, &tp, &taa, &tr, &tt, &tan));
    for (int64_t k = 0; k < N * 42; k++) {
        const double e = fabs((double)rb[k] - p14[k]);
        if (e > worst_pos) worst_pos = e;
    }
    printf("  %lld psi/chi angles: worst %.2e degrees (tol %.0e); %lld observed group frames: "
           "rotation worst %.2e (tol %.0e), origin worst %.2e A; rebuilt atoms worst %.2e A "
           "(tol %.0e)\n",
           (long long)n_ang, worst_deg, TOL_IDEAL_DEG, (long long)n_fr, worst_rot, TOL_IDEAL_ROT,
           worst_tr, worst_pos, TOL_IDEAL_POS_A);
    MF_TEST_TRUE(n_ang > 100 && worst_deg <= TOL_IDEAL_DEG, "recovered torsions off by %.2e deg",
                 worst_deg);
    MF_TEST_TRUE(worst_rot <= TOL_IDEAL_ROT && worst_tr <= TOL_IDEAL_POS_A,
                 "ground-truth frames differ from the built ones (%.2e, %.2e A)", worst_rot,
                 worst_tr);
    MF_TEST_TRUE(worst_pos <= TOL_IDEAL_POS_A, "rebuilt atoms off by %.2e A", worst_pos);
    free(aa), free(q), free(rot), free(trans), free(ang), free(fr), free(ft), free(p14), free(p37);
    free(pos), free(mask), free(ts), free(tm), free(bb), free(bbm), free(gfr), free(gex), free(rb);
    free(frot), free(ftr), free(ofr), free(oft);
}

/* ---- 3, 4. PDB chains ---- */

typedef struct {
    double sc_sq, bb_sq; /* sums of squared deviations */
    int64_t sc_n, bb_n;  /* atoms */
    int64_t residues;
    double sc_res_rmsd; /* sum over residues of each residue's side-chain RMSD */
    double sc_worst;    /* worst side-chain atom deviation */
} type_stats;

typedef struct {
    type_stats types[MF_NUM_RESTYPES];
    double frame_rot_deg[NG], frame_trans[NG]; /* worst rebuilt-vs-gt frame differences */
    double frame_rot_sum[NG];
    int64_t frame_n[NG];
    double group_sq[NG]; /* side-chain atoms by their rigid group (0: CB; 4..7: chi1..chi4) */
    int64_t group_n[NG];
    double *res_rmsd[MF_NUM_RESTYPES]; /* per-residue side-chain RMSDs, for the medians */
    double alt_worst_deg, alt_sum_deg;
    int64_t alt_n;
    double other_worst;
} rebuild_stats;

static void alt_torsion_rule(const mf_protein *p, rebuild_stats *rs)
{
    const int64_t N = p->num_res;
    const int32_t *aa = p->aatype;
    float *ts = falloc(N * 14), *tal = falloc(N * 14), *tm = falloc(N * 7);
    float *alt14 = falloc(N * 42), *altex = falloc(N * 14), *pos37 = falloc(N * 111);
    float *m37 = falloc(N * 37), *ts2 = falloc(N * 14), *tm2 = falloc(N * 7);
    int32_t *aa20 = calloc((size_t)N, 4);
    for (int64_t i = 0; i < N; i++) aa20[i] = aa[i];
    MF_TEST_OK(mf_atom37_to_torsion_angles(ts, tal, tm, aa, p->atom_positions, p->atom_mask, N));
    MF_TEST_OK(mf_make_atom14_positions(NULL, NULL, alt14, altex, NULL, aa20, p->atom_positions,
                                        p->atom_mask, N));
    /* the swapped atoms back in atom37: the residue with its ambiguous atoms renamed */
    mf_atom14_to_atom37_f32(pos37, alt14, aa20, N, 3);
    mf_atom14_to_atom37_f32(m37, altex, aa20, N, 1);
    MF_TEST_OK(mf_atom37_to_torsion_angles(ts2, NULL, tm2, aa, pos37, m37, N));
    for (int64_t i = 0; i < N; i++)
        for (int k = 0; k < 7; k++) {
            const int64_t o = i * 7 + k;
            if (tm[o] == 0.0f || tm2[o] == 0.0f) continue;
            const bool periodic = k >= 3 && aa[i] < 20 && mf_chi_pi_periodic[aa[i]][k - 3] != 0.0f;
            const double swapped = angle_deg(ts2[2 * o], ts2[2 * o + 1]);
            if (periodic) {
                const double d = fabs(wrap_deg(angle_deg(tal[2 * o], tal[2 * o + 1]) - swapped));
                rs->alt_sum_deg += d, rs->alt_n++;
                if (d > rs->alt_worst_deg) rs->alt_worst_deg = d;
            } else {
                /* the swap renames only the last chi group's atoms: nothing else moves */
                const double d = fabs(wrap_deg(angle_deg(ts[2 * o], ts[2 * o + 1]) - swapped));
                const double e = fabs(wrap_deg(angle_deg(tal[2 * o], tal[2 * o + 1]) - swapped));
                if (d > rs->other_worst) rs->other_worst = d;
                if (e > rs->other_worst) rs->other_worst = e;
            }
        }
    free(ts), free(tal), free(tm), free(alt14), free(altex), free(pos37), free(m37), free(ts2);
    free(tm2), free(aa20);
}

static void rebuild(mf_ctx *ctx, const mf_protein *p, rebuild_stats *rs, int64_t *used)
{
    const int64_t N = p->num_res;
    const int32_t *aa = p->aatype;
    const mf_all_atom_tables *tb = mf_all_atom_tables_get();
    float *ts = falloc(N * 14), *tm = falloc(N * 7), *bb = falloc(N * 16), *bbm = falloc(N);
    float *rot = falloc(N * 9), *trans = falloc(N * 3), *fr = falloc(N * NG * 9);
    float *ft = falloc(N * NG * 3), *pos = falloc(N * 42), *gt = falloc(N * 42);
    float *gtex = falloc(N * 14), *gfr = falloc(N * NG * 16), *gfrex = falloc(N * NG);
    MF_TEST_OK(mf_atom37_to_torsion_angles(ts, NULL, tm, aa, p->atom_positions, p->atom_mask, N));
    MF_TEST_OK(mf_backbone_frames(bb, bbm, p->atom_positions, p->atom_mask, N));
    MF_TEST_OK(mf_make_atom14_positions(gt, gtex, NULL, NULL, NULL, aa, p->atom_positions,
                                        p->atom_mask, N));
    MF_TEST_OK(
        mf_atom37_to_frames(gfr, gfrex, NULL, NULL, NULL, aa, p->atom_positions, p->atom_mask, N));
    for (int64_t i = 0; i < N; i++)
        for (int r = 0; r < 3; r++) {
            for (int c = 0; c < 3; c++) rot[9 * i + 3 * r + c] = bb[16 * i + 4 * r + c];
            trans[3 * i + r] = bb[16 * i + 4 * r + 3];
        }
    mf_tensor taa = mf_tensor_4((void *)aa, MF_I32, MF_DEV_CPU, 1, N, 1, 1, 1);
    mf_tensor tr = mf_tensor_f32(rot, 3, N, 3, 3), tt = mf_tensor_f32(trans, 2, N, 3);
    mf_tensor tan = mf_tensor_f32(ts, 3, N, 7, 2), tfr = mf_tensor_f32(fr, 4, N, NG, 3, 3);
    mf_tensor tft = mf_tensor_f32(ft, 3, N, NG, 3), tp = mf_tensor_f32(pos, 3, N, 14, 3);
    MF_TEST_OK(mf_all_atom_forward(ctx, &tfr, &tft, &tp, &taa, &tr, &tt, &tan));
    for (int64_t i = 0; i < N; i++) {
        const int r = aa[i];
        if (r >= MF_NUM_RESTYPES || bbm[i] == 0.0f || tm[i * 7 + 2] == 0.0f) continue;
        bool complete = true;
        for (int chi = 0; chi < 4; chi++)
            if (mf_chi_angles_mask[r][chi] != 0.0f && tm[i * 7 + 3 + chi] == 0.0f) complete = false;
        for (int a = 0; a < 14; a++)
            if (tb->atom14_mask[r][a] != 0.0f && gtex[i * 14 + a] == 0.0f) complete = false;
        if (!complete) continue;
        type_stats *t = &rs->types[r];
        double res_sq = 0;
        int res_n = 0;
        for (int a = 0; a < 14; a++) {
            if (tb->atom14_mask[r][a] == 0.0f) continue;
            double d2 = 0;
            for (int k = 0; k < 3; k++) {
                const double e = (double)pos[(i * 14 + a) * 3 + k] - gt[(i * 14 + a) * 3 + k];
                d2 += e * e;
            }
            if (a < 4) { /* atom14 slots 0..3 are N, CA, C, O for every residue */
                t->bb_sq += d2, t->bb_n++;
            } else {
                t->sc_sq += d2, t->sc_n++, res_sq += d2, res_n++;
                const int g = tb->atom14_to_rigid_group[r][a];
                rs->group_sq[g] += d2, rs->group_n[g]++;
                if (sqrt(d2) > t->sc_worst) t->sc_worst = sqrt(d2);
            }
        }
        t->residues++;
        if (res_n) {
            t->sc_res_rmsd += sqrt(res_sq / res_n);
            rs->res_rmsd[r] = realloc(rs->res_rmsd[r], sizeof(double) * (size_t)t->residues);
            rs->res_rmsd[r][t->residues - 1] = sqrt(res_sq / res_n);
        }
        (*used)++;
        /* rebuilt frames against atom37_to_frames' (groups with atoms: backbone, psi, chis) */
        for (int g = 0; g < NG; g++) {
            if (gfrex[i * NG + g] == 0.0f) continue;
            const float *R = fr + (i * NG + g) * 9, *m = gfr + (i * NG + g) * 16;
            double tr_ = 0, dt2 = 0;
            for (int a = 0; a < 3; a++) {
                for (int b = 0; b < 3; b++) tr_ += (double)R[3 * b + a] * m[4 * b + a];
                const double e = (double)ft[(i * NG + g) * 3 + a] - m[4 * a + 3];
                dt2 += e * e;
            }
            double c = (tr_ - 1.0) / 2.0;
            c = c > 1.0 ? 1.0 : c < -1.0 ? -1.0 : c;
            const double deg = acos(c) * 180.0 / 3.14159265358979323846;
            rs->frame_rot_sum[g] += deg, rs->frame_n[g]++;
            if (deg > rs->frame_rot_deg[g]) rs->frame_rot_deg[g] = deg;
            if (sqrt(dt2) > rs->frame_trans[g]) rs->frame_trans[g] = sqrt(dt2);
        }
    }
    free(ts), free(tm), free(bb), free(bbm), free(rot), free(trans), free(fr), free(ft), free(pos);
    free(gt), free(gtex), free(gfr), free(gfrex);
}

static int cmp_double(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void test_pdb_chains(mf_ctx *ctx)
{
    static const char *const ids[] = {"2vxn", "2hs1", "1brf", "1tqg", "1a6m", "1rw1", "1jbe"};
    const int n_ids = (int)(sizeof ids / sizeof ids[0]);
    printf("3-4. alt-torsion rule and all-atom rebuild of %d PSICOV chains (0.82-1.08 A)\n", n_ids);
    rebuild_stats rs;
    memset(&rs, 0, sizeof rs);
    int64_t used = 0, total = 0;
    for (int k = 0; k < n_ids; k++) {
        char path[1024];
        snprintf(path, sizeof path, "%s/data/structures/train/psicov150/%s.pdb",
                 mf_test_shared_dir(), ids[k]);
        mf_protein p;
        memset(&p, 0, sizeof p);
        mf_status st = mf_structure_read_chain(path, "A", &p);
        MF_TEST_TRUE(st == MF_OK, "reading %s: %s", path, st == MF_OK ? "" : mf_last_error());
        if (st != MF_OK) continue;
        const int64_t before = used;
        alt_torsion_rule(&p, &rs);
        rebuild(ctx, &p, &rs, &used);
        printf("  %s A: %lld residues, %lld complete and rebuilt\n", ids[k], (long long)p.num_res,
               (long long)(used - before));
        total += p.num_res;
        mf_protein_free(&p);
    }
    printf("  alt torsions of %lld pi-periodic chis vs the chi of the swapped atoms: mean %.2f, "
           "worst %.2f degrees (tol %.0f); other torsions moved by the swap: worst %.2e degrees\n",
           (long long)rs.alt_n, rs.alt_n ? rs.alt_sum_deg / (double)rs.alt_n : 0.0,
           rs.alt_worst_deg, TOL_ALT_DEG, rs.other_worst);
    MF_TEST_TRUE(rs.alt_n > 50, "only %lld pi-periodic chis observed", (long long)rs.alt_n);
    MF_TEST_TRUE(rs.alt_worst_deg <= TOL_ALT_DEG, "alt torsion off by %.2f degrees",
                 rs.alt_worst_deg);
    MF_TEST_TRUE(rs.other_worst <= 1e-3, "a swap moved a non-periodic torsion by %.2e degrees",
                 rs.other_worst);

    printf("  rebuild from ground-truth torsions + backbone frames, %lld of %lld residues:\n",
           (long long)used, (long long)total);
    printf("  %-4s %5s %11s %11s %13s %13s %11s\n", "type", "res", "bb RMSD", "sc RMSD",
           "mean res RMSD", "median res", "worst sc");
    double all_sq = 0, type_sum = 0;
    int64_t all_n = 0, n_types = 0;
    for (int r = 0; r < MF_NUM_RESTYPES; r++) {
        const type_stats *t = &rs.types[r];
        if (!t->residues) continue;
        const double bb = sqrt(t->bb_sq / (double)t->bb_n);
        const double sc = t->sc_n ? sqrt(t->sc_sq / (double)t->sc_n) : 0.0;
        const double mean = t->sc_n ? t->sc_res_rmsd / (double)t->residues : 0.0;
        double median = 0.0;
        if (rs.res_rmsd[r]) {
            qsort(rs.res_rmsd[r], (size_t)t->residues, sizeof(double), cmp_double);
            median = rs.res_rmsd[r][t->residues / 2];
        }
        printf("  %-4s %5lld %9.4f A %9.4f A %11.4f A %11.4f A %9.4f A\n",
               mf_restype_three_letter(r), (long long)t->residues, bb, sc, mean, median,
               t->sc_worst);
        all_sq += t->sc_sq, all_n += t->sc_n;
        if (t->sc_n) type_sum += sc, n_types++;
        MF_TEST_TRUE(bb <= TOL_REBUILD_BACKBONE, "%s backbone RMSD %.4f A > %.2f",
                     mf_restype_three_letter(r), bb, TOL_REBUILD_BACKBONE);
        MF_TEST_TRUE(sc <= TOL_REBUILD_SIDECHAIN_TYPE, "%s side-chain RMSD %.4f A > %.2f",
                     mf_restype_three_letter(r), sc, TOL_REBUILD_SIDECHAIN_TYPE);
        MF_TEST_TRUE(median <= TOL_REBUILD_MEDIAN, "%s median residue RMSD %.4f A > %.2f",
                     mf_restype_three_letter(r), median, TOL_REBUILD_MEDIAN);
        free(rs.res_rmsd[r]);
    }
    const double all = all_n ? sqrt(all_sq / (double)all_n) : INFINITY;
    printf("  all side-chain atoms (%lld): RMSD %.4f A (tol %.2f); per type: backbone <= %.2f, "
           "side chain <= %.2f, median residue <= %.2f\n",
           (long long)all_n, all, TOL_REBUILD_SIDECHAIN_ALL, TOL_REBUILD_BACKBONE,
           TOL_REBUILD_SIDECHAIN_TYPE, TOL_REBUILD_MEDIAN);
    MF_TEST_TRUE(all <= TOL_REBUILD_SIDECHAIN_ALL, "pooled side-chain RMSD %.4f A", all);
    const double type_mean = n_types ? type_sum / (double)n_types : INFINITY;
    printf("  mean over %lld residue types of the side-chain RMSD: %.4f A (tol %.2f)\n",
           (long long)n_types, type_mean, TOL_REBUILD_TYPE_MEAN);
    MF_TEST_TRUE(n_types == 19, "only %lld residue types with side chains seen",
                 (long long)n_types);
    MF_TEST_TRUE(type_mean <= TOL_REBUILD_TYPE_MEAN, "mean per-type side-chain RMSD %.4f A",
                 type_mean);
    static const char *const gname[NG] = {"backbone", "pre-omega", "phi",  "psi",
                                          "chi1",     "chi2",      "chi3", "chi4"};
    printf("  side-chain atoms by rigid group (rigid groups from the backbone):\n");
    for (int g = 0; g < NG; g++)
        if (rs.group_n[g]) {
            const double v = sqrt(rs.group_sq[g] / (double)rs.group_n[g]);
            printf("    %-9s atoms %-6lld RMSD %.4f A (tol %.2f)\n", gname[g],
                   (long long)rs.group_n[g], v, tol_group[g]);
            MF_TEST_TRUE(v <= tol_group[g], "%s group atoms RMSD %.4f A > %.2f", gname[g], v,
                         tol_group[g]);
        }
    MF_TEST_TRUE(used > 500, "only %lld residues rebuilt", (long long)used);
    printf("  rebuilt frames vs atom37_to_frames (ground-truth) frames:\n");
    for (int g = 0; g < NG; g++)
        if (rs.frame_n[g])
            printf(
                "    %-9s n=%-6lld rotation mean %.2f, worst %.2f degrees; origin worst %.4f A\n",
                gname[g], (long long)rs.frame_n[g], rs.frame_rot_sum[g] / (double)rs.frame_n[g],
                rs.frame_rot_deg[g], rs.frame_trans[g]);
    /* the backbone frame is the ground truth's own (both from N, CA, C): equal to f32 rounding */
    MF_TEST_TRUE(rs.frame_trans[0] <= 1e-4 && rs.frame_rot_deg[0] <= 0.05,
                 "rebuilt backbone frames differ from the ground truth's (%.2e A, %.2e degrees)",
                 rs.frame_trans[0], rs.frame_rot_deg[0]);
}

int main(void)
{
    mf_ctx ctx;
    mf_arena arena;
    if (mf_test_ctx_cpu(&ctx, &arena, (size_t)1 << 20) != MF_OK) {
        mf_test_fail("context: %s", mf_last_error());
        return mf_test_finish("test_protein_rebuild");
    }
    test_features();
    test_ideal_round_trip(&ctx);
    test_pdb_chains(&ctx);
    mf_test_ctx_free(&ctx, &arena);
    return mf_test_finish("test_protein_rebuild");
}
