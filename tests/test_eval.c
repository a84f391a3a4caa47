/* Evaluation metrics (eval/):
 *  1. the 4x4 Jacobi eigen-solver (A v = lambda v, orthonormal vectors, repeated eigenvalues);
 *  2. Kabsch superposition: a known rotation + translation recovered (n = 17, also planar points),
 *     a mirror image gives a proper rotation that no nearby rotation beats, a hand case (RMSD 1),
 *     weights;
 *  3. degenerate inputs: < 3 points, collinear and coincident points, NaN: clear errors (strict),
 *     or a finite proper rotation flagged degenerate (allow_degenerate), never NaN;
 *  4. lDDT by hand (3 and 4 points, masks, the 15 A radius; all-atom with intra-residue pairs
 *     excluded, a missing atom, an ASP OD1/OD2 naming swap), lDDT = 1 for identical structures,
 *     invariance of lDDT under rigid motions of the prediction (N = 37, all-atom N = 23), the
 *     float32 AF2 formula against the double one and the exact counts;
 *  5. the pLDDT-loss bin tie of the test vectors (residue 6: 50 lDDT-Ca = 5 exactly, bin 5);
 *  6. TM-score / GDT by hand (identical, an outlier case with d0 from L, normalising by a longer
 *     reference), d0 values, errors for < 3 pairs, collinear pairs and NaN;
 *  7. Needleman-Wunsch (deletion, free end gaps, BLOSUM62 symmetry and values) and the residue
 *     pairing rule (shared numbering vs renumbered). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "data/h5io.h"
#include "eval/align.h"
#include "eval/lddt.h"
#include "eval/superpose.h"
#include "eval/tmscore.h"
#include "protein/protein.h"
#include "protein/residue_constants.h"
#include "tests/support/mf_test.h"

/* Geometric identities evaluated in double on coordinates of O(10) A: a few dozen roundings. */
#define EV_EXACT_ATOL 1e-10
/* Scores that are ratios of small integers, computed in double. */
#define EV_SCORE_ATOL 1e-12

static double urand(uint64_t *s)
{
    *s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
    return (double)(*s >> 11) / 9007199254740992.0;
}

static double grand(uint64_t *s)
{
    double u1 = urand(s), u2 = urand(s);
    if (u1 < 1e-300) u1 = 1e-300;
    return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

static void axis_angle(double r[3][3], const double axis[3], double angle)
{
    double n = sqrt(axis[0] * axis[0] + axis[1] * axis[1] + axis[2] * axis[2]);
    double x = axis[0] / n, y = axis[1] / n, z = axis[2] / n, c = cos(angle), s = sin(angle),
           C = 1 - c;
    double m[3][3] = {{c + x * x * C, x * y * C - z * s, x * z * C + y * s},
                      {y * x * C + z * s, c + y * y * C, y * z * C - x * s},
                      {z * x * C - y * s, z * y * C + x * s, c + z * z * C}};
    memcpy(r, m, sizeof m);
}

static void transform(double *out, const double *x, int64_t n, double r[3][3], const double t[3])
{
    for (int64_t k = 0; k < n; k++) {
        double p[3] = {x[3 * k], x[3 * k + 1], x[3 * k + 2]};
        for (int a = 0; a < 3; a++)
            out[3 * k + a] = r[a][0] * p[0] + r[a][1] * p[1] + r[a][2] * p[2] + t[a];
    }
}

/* A chain-like random walk with 3.8 A steps (C-alpha spacing). */
static void random_chain(double *x, int64_t n, uint64_t seed)
{
    uint64_t s = seed;
    double p[3] = {0, 0, 0};
    for (int64_t k = 0; k < n; k++) {
        double d[3] = {grand(&s), grand(&s), grand(&s)};
        double l = sqrt(d[0] * d[0] + d[1] * d[1] + d[2] * d[2]);
        for (int a = 0; a < 3; a++) {
            p[a] += 3.8 * d[a] / l;
            x[3 * k + a] = p[a];
        }
    }
}

static double det3(double r[3][3])
{
    return r[0][0] * (r[1][1] * r[2][2] - r[1][2] * r[2][1]) -
           r[0][1] * (r[1][0] * r[2][2] - r[1][2] * r[2][0]) +
           r[0][2] * (r[1][0] * r[2][1] - r[1][1] * r[2][0]);
}

static double rmsd_under(double r[3][3], const double t[3], const double *x, const double *y,
                         int64_t n)
{
    double e = 0.0;
    for (int64_t k = 0; k < n; k++)
        for (int a = 0; a < 3; a++) {
            double d = r[a][0] * x[3 * k] + r[a][1] * x[3 * k + 1] + r[a][2] * x[3 * k + 2] + t[a] -
                       y[3 * k + a];
            e += d * d;
        }
    return sqrt(e / (double)n);
}

/* rot^T rot = I and det = +1 */
static void check_proper_rotation(const char *what, double r[3][3])
{
    double g[9], id[9] = {1, 0, 0, 0, 1, 0, 0, 0, 1};
    for (int a = 0; a < 3; a++)
        for (int b = 0; b < 3; b++) {
            g[3 * a + b] = 0.0;
            for (int k = 0; k < 3; k++) g[3 * a + b] += r[k][a] * r[k][b];
        }
    char name[160];
    snprintf(name, sizeof name, "%s: rot^T rot = I", what);
    mf_check_close_f64(name, g, id, 9, EV_EXACT_ATOL, 0.0);
    double d = det3(r), one = 1.0;
    snprintf(name, sizeof name, "%s: det rot = +1", what);
    mf_check_close_f64(name, &d, &one, 1, EV_EXACT_ATOL, 0.0);
}

/* ---- 1 ---- */
static void test_eigen(void)
{
    printf("1. symmetric eigen-solver (Jacobi), atol %.0e\n", EV_EXACT_ATOL);
    const double a[16] = {4, 1, -2, 0.5, 1, 3, 0.25, -1, -2, 0.25, -1, 2, 0.5, -1, 2, 0};
    double ev[4], v[16];
    mf_symmetric_eigen(a, 4, ev, v);
    double res[16], zero[16] = {0}, vtv[16], id[16] = {0};
    for (int i = 0; i < 4; i++) {
        id[5 * i] = 1.0;
        for (int r = 0; r < 4; r++) {
            double s = 0.0;
            for (int c = 0; c < 4; c++) s += a[4 * r + c] * v[4 * c + i];
            res[4 * r + i] = s - ev[i] * v[4 * r + i];
        }
        for (int j = 0; j < 4; j++) {
            double s = 0.0;
            for (int k = 0; k < 4; k++) s += v[4 * k + i] * v[4 * k + j];
            vtv[4 * i + j] = s;
        }
    }
    mf_check_close_f64("eigen: A v - lambda v", res, zero, 16, EV_EXACT_ATOL, 0.0);
    mf_check_close_f64("eigen: V^T V = I", vtv, id, 16, EV_EXACT_ATOL, 0.0);
    MF_TEST_TRUE(ev[0] >= ev[1] && ev[1] >= ev[2] && ev[2] >= ev[3],
                 "eigenvalues not decreasing: %g %g %g %g", ev[0], ev[1], ev[2], ev[3]);
    double trace = ev[0] + ev[1] + ev[2] + ev[3], want = 6.0;
    mf_check_close_f64("eigen: sum of eigenvalues = trace", &trace, &want, 1, EV_EXACT_ATOL, 0.0);
    /* repeated eigenvalues: diag(2, 2, 2, 5) rotated */
    const double b[9] = {2, 0, 0, 0, 3, 1, 0, 1, 3}; /* eigenvalues 4, 2, 2 */
    double eb[3], vb[9], wantb[3] = {4, 2, 2};
    mf_symmetric_eigen(b, 3, eb, vb);
    mf_check_close_f64("eigen: repeated eigenvalues (4, 2, 2)", eb, wantb, 3, EV_EXACT_ATOL, 0.0);
}

/* ---- 2 ---- */
static void test_kabsch(void)
{
    printf("2. Kabsch superposition (quaternion method), atol %.0e\n", EV_EXACT_ATOL);
    enum { N = 17 };
    double x[3 * N], y[3 * N], r[3][3], axis[3] = {0.3, -1.2, 0.7}, t[3] = {12.5, -3.25, 40.0};
    random_chain(x, N, 11);
    axis_angle(r, axis, 2.2);
    transform(y, x, N, r, t);
    mf_superposition s;
    MF_TEST_OK(mf_superpose(x, y, NULL, N, false, &s));
    mf_check_close_f64("kabsch: known rotation recovered", &s.rot[0][0], &r[0][0], 9, EV_EXACT_ATOL,
                       0.0);
    mf_check_close_f64("kabsch: known translation recovered", s.trans, t, 3, 1e-9, 0.0);
    double zero = 0.0;
    mf_check_close_f64("kabsch: rmsd of an exact rigid copy", &s.rmsd, &zero, 1, EV_EXACT_ATOL,
                       0.0);
    MF_TEST_TRUE(!s.degenerate, "kabsch: a random chain flagged degenerate");

    /* rotation by pi (quaternion scalar part 0) and planar points */
    double xp[3 * 6] = {0, 0, 0, 4, 0, 0, 4, 3, 0, 0, 3, 0, 2, 1.5, 0, 7, -1, 0}, yp[3 * 6];
    double rp[3][3], axp[3] = {1, 1, 0}, tp[3] = {-1, 2, 3};
    axis_angle(rp, axp, M_PI);
    transform(yp, xp, 6, rp, tp);
    MF_TEST_OK(mf_superpose(xp, yp, NULL, 6, false, &s));
    mf_check_close_f64("kabsch: planar points, 180-degree turn recovered", &s.rot[0][0], &rp[0][0],
                       9, EV_EXACT_ATOL, 0.0);

    /* mirror image: the best proper rotation, no reflection */
    double ym[3 * N];
    for (int k = 0; k < N; k++) {
        ym[3 * k] = -x[3 * k];
        ym[3 * k + 1] = x[3 * k + 1];
        ym[3 * k + 2] = x[3 * k + 2];
    }
    MF_TEST_OK(mf_superpose(x, ym, NULL, N, false, &s));
    check_proper_rotation("kabsch: mirror image", s.rot);
    MF_TEST_TRUE(s.rmsd > 0.1 && isfinite(s.rmsd),
                 "kabsch: a mirror image must not superpose exactly (rmsd %g)", s.rmsd);
    /* no small rotation of the answer does better (local optimality) */
    uint64_t seed = 5;
    int worse = 0;
    for (int trial = 0; trial < 200; trial++) {
        double ax[3] = {grand(&seed), grand(&seed), grand(&seed)}, dr[3][3], r2[3][3], t2[3];
        axis_angle(dr, ax, 1e-3 * (1 + trial % 7));
        for (int a = 0; a < 3; a++)
            for (int b = 0; b < 3; b++) {
                r2[a][b] = 0.0;
                for (int k = 0; k < 3; k++) r2[a][b] += dr[a][k] * s.rot[k][b];
            }
        /* best translation for r2: centroid difference */
        double cx[3] = {0}, cy[3] = {0};
        for (int k = 0; k < N; k++)
            for (int a = 0; a < 3; a++) {
                cx[a] += x[3 * k + a] / N;
                cy[a] += ym[3 * k + a] / N;
            }
        for (int a = 0; a < 3; a++)
            t2[a] = cy[a] - (r2[a][0] * cx[0] + r2[a][1] * cx[1] + r2[a][2] * cx[2]);
        worse += rmsd_under(r2, t2, x, ym, N) >= s.rmsd - 1e-12;
    }
    MF_TEST_TRUE(worse == 200, "kabsch: %d of 200 nearby rotations beat the optimum", 200 - worse);
    printf("  kabsch: mirror image rmsd %.4f, no nearby rotation better (200 trials)\n", s.rmsd);

    /* by hand: a cross scaled by 2 around the same centre, rmsd 1 */
    double xc[12] = {1, 0, 0, -1, 0, 0, 0, 1, 0, 0, -1, 0}, yc[12];
    for (int k = 0; k < 12; k++) yc[k] = 2.0 * xc[k] + (k % 3 == 2 ? 5.0 : 0.0);
    double rmsd, one = 1.0;
    MF_TEST_OK(mf_rmsd_superposed(xc, yc, 4, &rmsd));
    mf_check_close_f64("kabsch: hand case (cross scaled by 2), rmsd 1", &rmsd, &one, 1,
                       EV_EXACT_ATOL, 0.0);

    /* weights: a zero-weight outlier does not move the fit */
    double xw[3 * N], w[N];
    memcpy(xw, y, sizeof y);
    xw[3 * 4] += 30.0;
    for (int k = 0; k < N; k++) w[k] = k == 4 ? 0.0 : 1.0;
    MF_TEST_OK(mf_superpose(x, xw, w, N, false, &s));
    mf_check_close_f64("kabsch: zero-weight outlier ignored", &s.rot[0][0], &r[0][0], 9,
                       EV_EXACT_ATOL, 0.0);
}

/* ---- 3 ---- */
static void expect_error(const char *what, mf_status st, mf_status want, const char *needle)
{
    bool ok = st == want && strstr(mf_last_error(), needle) != NULL;
    MF_TEST_TRUE(ok, "%s: expected %s mentioning '%s', got %s: %s", what, mf_status_name(want),
                 needle, mf_status_name(st), st == MF_OK ? "" : mf_last_error());
    printf("  %s: %s (%s)\n", what, ok ? "refused" : "NOT refused as expected",
           st == MF_OK ? "ok" : mf_last_error());
    mf_clear_error();
}

static void test_degenerate(void)
{
    printf("3. degenerate inputs: clear errors (strict) or finite flagged rotations, never NaN\n");
    mf_superposition s;
    double two[6] = {0, 0, 0, 1, 2, 3}, two_y[6] = {5, 5, 5, 6, 7, 8};
    expect_error("superpose 2 points", mf_superpose(two, two_y, NULL, 2, false, &s), MF_ERR_INVALID,
                 "at least 3");
    double line[15], line_y[15];
    for (int k = 0; k < 5; k++)
        for (int a = 0; a < 3; a++) {
            line[3 * k + a] = (double)k * (a + 1);
            line_y[3 * k + a] = (double)k * (3 - a) + 10.0;
        }
    expect_error("superpose collinear points", mf_superpose(line, line_y, NULL, 5, false, &s),
                 MF_ERR_INVALID, "collinear");
    double same[9] = {1, 2, 3, 1, 2, 3, 1, 2, 3}, tri[9] = {0, 0, 0, 3, 0, 0, 0, 4, 0};
    expect_error("superpose coincident points", mf_superpose(same, tri, NULL, 3, false, &s),
                 MF_ERR_INVALID, "collinear");
    double nan_x[9] = {0, 0, 0, 3, 0, 0, 0, NAN, 0};
    expect_error("superpose with NaN", mf_superpose(nan_x, tri, NULL, 3, false, &s), MF_ERR_NUMERIC,
                 "not finite");
    double rmsd = 0;
    expect_error("rmsd of 2 points", mf_rmsd_superposed(two, two_y, 2, &rmsd), MF_ERR_INVALID,
                 "at least 3");

    /* allowed: one optimal proper rotation, finite rmsd (collinear sets of equal spacing and
     * length superpose exactly) */
    double line_b[15];
    for (int k = 0; k < 5; k++) {
        line_b[3 * k] = 2.0;
        line_b[3 * k + 1] = -1.0;
        line_b[3 * k + 2] = (double)k * sqrt(14.0); /* |(1,2,3)| = sqrt(14) per step */
    }
    MF_TEST_OK(mf_superpose(line, line_b, NULL, 5, true, &s));
    MF_TEST_TRUE(s.degenerate, "collinear set not flagged degenerate");
    check_proper_rotation("allow_degenerate collinear", s.rot);
    double zero = 0.0;
    mf_check_close_f64("allow_degenerate collinear: rmsd 0 (equal lines)", &s.rmsd, &zero, 1,
                       EV_EXACT_ATOL, 0.0);
    MF_TEST_OK(mf_superpose(two, two_y, NULL, 2, true, &s));
    check_proper_rotation("allow_degenerate 2 points", s.rot);
    MF_TEST_TRUE(isfinite(s.rmsd) && s.degenerate, "2 points: rmsd %g degenerate %d", s.rmsd,
                 (int)s.degenerate);
    MF_TEST_OK(mf_superpose(same, same, NULL, 3, true, &s));
    check_proper_rotation("allow_degenerate coincident points", s.rot);
}

/* ---- 4 ---- */
static void test_lddt_hand(void)
{
    printf("4a. lDDT by hand, atol %.0e\n", EV_SCORE_ATOL);
    /* A-B 3, B-C 7, A-C 10 A in the reference; C moved out by 1.5 A in the prediction:
     * AB diff 0 -> 1, BC diff 1.5 -> 0.5, AC diff 1.5 -> 0.5. D is 20 A from C: never scored. */
    double ref[12] = {0, 0, 0, 3, 0, 0, 10, 0, 0, 30, 0, 0};
    double pred[12] = {0, 0, 0, 3, 0, 0, 11.5, 0, 0, 31, 1, 0};
    double per[4];
    mf_lddt_result r;
    MF_TEST_OK(mf_lddt_ca(pred, NULL, ref, NULL, 4, MF_LDDT_CUTOFF, per, &r));
    double want_per[4] = {0.75, 0.75, 0.5, -1.0}, want = 2.0 / 3.0;
    mf_check_close_f64("lddt-ca: per residue (0.75, 0.75, 0.5, none)", per, want_per, 4,
                       EV_SCORE_ATOL, 0.0);
    mf_check_close_f64("lddt-ca: global 2/3", &r.lddt, &want, 1, EV_SCORE_ATOL, 0.0);
    MF_TEST_TRUE(r.n_pairs == 6, "lddt-ca: %lld pairs, want 6", (long long)r.n_pairs);
    /* C absent from the reference: only A-B */
    float ref_mask[4] = {1, 1, 0, 1}, pred_mask[4] = {1, 1, 0, 1};
    MF_TEST_OK(mf_lddt_ca(pred, NULL, ref, ref_mask, 4, MF_LDDT_CUTOFF, per, &r));
    double want_per2[4] = {1.0, 1.0, -1.0, -1.0}, one = 1.0;
    mf_check_close_f64("lddt-ca: reference mask", per, want_per2, 4, EV_SCORE_ATOL, 0.0);
    mf_check_close_f64("lddt-ca: reference mask, global 1", &r.lddt, &one, 1, EV_SCORE_ATOL, 0.0);
    /* C missing from the prediction: its pairs score 0 but count */
    MF_TEST_OK(mf_lddt_ca(pred, pred_mask, ref, NULL, 4, MF_LDDT_CUTOFF, per, &r));
    double want_per3[4] = {0.5, 0.5, 0.0, -1.0}, want3 = 1.0 / 3.0;
    mf_check_close_f64("lddt-ca: missing predicted point", per, want_per3, 4, EV_SCORE_ATOL, 0.0);
    mf_check_close_f64("lddt-ca: missing predicted point, global 1/3", &r.lddt, &want3, 1,
                       EV_SCORE_ATOL, 0.0);
    /* a smaller radius (5 A) keeps only A-B */
    MF_TEST_OK(mf_lddt_ca(pred, NULL, ref, NULL, 4, 5.0, per, &r));
    MF_TEST_TRUE(r.n_pairs == 2 && r.lddt == 1.0, "lddt-ca radius 5: %lld pairs, lddt %g",
                 (long long)r.n_pairs, r.lddt);
    /* |d_pred - d_ref| exactly 0.5: the thresholds are strict (AF2: l1 < 0.5), so 3 of 4 */
    double two_ref[6] = {0, 0, 0, 3, 0, 0}, two_pred[6] = {0, 0, 0, 0, 3.5, 0}, tq = 0.75;
    MF_TEST_OK(mf_lddt_ca(two_pred, NULL, two_ref, NULL, 2, MF_LDDT_CUTOFF, NULL, &r));
    mf_check_close_f64("lddt-ca: difference exactly 0.5 A scores 3/4 (strict thresholds)", &r.lddt,
                       &tq, 1, EV_SCORE_ATOL, 0.0);
    double far[6] = {0, 0, 0, 40, 0, 0};
    expect_error("lddt-ca without any pair", mf_lddt_ca(far, NULL, far, NULL, 2, 15.0, NULL, &r),
                 MF_ERR_INVALID, "no pair");

    /* the float32 AF2 formula on the same points */
    float pf[12], rf[12], lf[4], mask1[4] = {1, 1, 1, 0};
    for (int k = 0; k < 12; k++) pf[k] = (float)pred[k], rf[k] = (float)ref[k];
    MF_TEST_OK(mf_lddt_points_f32(lf, pf, 3, rf, 3, mask1, 1, 4, 15.0f));
    float want_f[4] = {0.75f, 0.75f, 0.5f, 1.0f}; /* masked point: 1e10f * 1e-10f, as AF2 */
    mf_check_close_f32("lddt f32 (AF2 formula): hand case, masked point ~1", lf, want_f, 4, 1e-6,
                       0.0);

    /* all-atom: residues of 2 atoms (N, CA); intra-residue pairs are not scored */
    printf("4b. all-atom lDDT by hand\n");
    enum { NR = 2 };
    float rpos[NR * 37 * 3] = {0}, ppos[NR * 37 * 3] = {0}, rmask[NR * 37] = {0},
                         pmask[NR * 37] = {0};
    int32_t aat[NR] = {7, 7}; /* GLY */
    const float at[4][3] = {{0, 0, 0}, {1.5f, 0, 0}, {0, 3, 0}, {1.5f, 3, 0}};
    for (int i = 0; i < NR; i++)
        for (int a = 0; a < 2; a++) {
            rmask[i * 37 + a] = pmask[i * 37 + a] = 1;
            for (int k = 0; k < 3; k++)
                rpos[(i * 37 + a) * 3 + k] = ppos[(i * 37 + a) * 3 + k] = at[2 * i + a][k];
        }
    ppos[(1 * 37 + 1) * 3 + 2] = 2.5f; /* residue 2's CA up by 2.5: its two pairs lose 1/4 */
    double per_aa[NR];
    MF_TEST_OK(
        mf_lddt_all_atom(ppos, pmask, aat, rpos, rmask, aat, NR, MF_LDDT_CUTOFF, true, per_aa, &r));
    double want_aa[NR] = {0.875, 0.875}, want_g = 0.875;
    mf_check_close_f64("lddt all-atom: per residue 0.875", per_aa, want_aa, NR, EV_SCORE_ATOL, 0.0);
    mf_check_close_f64("lddt all-atom: global 0.875 (intra-residue pairs excluded)", &r.lddt,
                       &want_g, 1, EV_SCORE_ATOL, 0.0);
    MF_TEST_TRUE(r.n_pairs == 8, "lddt all-atom: %lld pairs, want 8", (long long)r.n_pairs);
    pmask[1 * 37 + 1] = 0;
    MF_TEST_OK(
        mf_lddt_all_atom(ppos, pmask, aat, rpos, rmask, aat, NR, MF_LDDT_CUTOFF, true, per_aa, &r));
    double half = 0.5;
    mf_check_close_f64("lddt all-atom: missing predicted CA, global 0.5", &r.lddt, &half, 1,
                       EV_SCORE_ATOL, 0.0);

    /* ASP with OD1/OD2 named the other way round in the prediction */
    printf("4c. all-atom lDDT: ASP OD1/OD2 naming swap\n");
    float r2pos[2 * 37 * 3] = {0}, p2pos[2 * 37 * 3] = {0}, r2mask[2 * 37] = {0};
    int32_t aat2[2] = {mf_restype_from_one_letter('G'), mf_restype_from_one_letter('D')};
    const char *names[2][6] = {{"N", "CA", "C", "O", NULL}, {"CB", "CG", "OD1", "OD2", NULL}};
    const float xyz[2][4][3] = {
        {{-1.0f, 1.2f, 0.3f}, {0, 0, 0}, {1.2f, 0.8f, -0.4f}, {2, 1, 1}},
        {{1.5f, -1, 1}, {2.5f, -1.5f, 2}, {2.2f, -2.7f, 2.3f}, {3.6f, -0.9f, 2.6f}}};
    for (int i = 0; i < 2; i++)
        for (int a = 0; names[i][a]; a++) {
            int slot = mf_atom37_index(names[i][a]);
            r2mask[i * 37 + slot] = 1;
            for (int k = 0; k < 3; k++)
                r2pos[(i * 37 + slot) * 3 + k] = p2pos[(i * 37 + slot) * 3 + k] = xyz[i][a][k];
        }
    int od1 = mf_atom37_index("OD1"), od2 = mf_atom37_index("OD2");
    for (int k = 0; k < 3; k++) {
        p2pos[(37 + od1) * 3 + k] = xyz[1][3][k];
        p2pos[(37 + od2) * 3 + k] = xyz[1][2][k];
    }
    MF_TEST_OK(mf_lddt_all_atom(p2pos, r2mask, aat2, r2pos, r2mask, aat2, 2, MF_LDDT_CUTOFF, false,
                                NULL, &r));
    double as_named = r.lddt;
    MF_TEST_OK(mf_lddt_all_atom(p2pos, r2mask, aat2, r2pos, r2mask, aat2, 2, MF_LDDT_CUTOFF, true,
                                NULL, &r));
    mf_check_close_f64("lddt all-atom: swapped OD1/OD2 resolved -> 1", &r.lddt, &one, 1,
                       EV_SCORE_ATOL, 0.0);
    MF_TEST_TRUE(as_named < 1.0, "lddt all-atom: swapped names without resolving gave %g",
                 as_named);
    printf("  swapped OD1/OD2: %.4f as named, 1 after resolving\n", as_named);
}

static void test_lddt_invariance(void)
{
    printf("4d. lDDT = 1 for identical structures; invariant under rigid motions of the "
           "prediction (atol %.0e)\n",
           EV_SCORE_ATOL);
    enum { N = 37 };
    double ref[3 * N], pred[3 * N], moved[3 * N], per1[N], per2[N];
    float mask[N];
    random_chain(ref, N, 21);
    uint64_t s = 99;
    for (int k = 0; k < 3 * N; k++) pred[k] = ref[k] + 0.7 * grand(&s);
    for (int k = 0; k < N; k++) mask[k] = (k % 7 == 3) ? 0.0f : 1.0f;
    mf_lddt_result r1, r2;
    MF_TEST_OK(mf_lddt_ca(ref, NULL, ref, mask, N, MF_LDDT_CUTOFF, NULL, &r1));
    double one = 1.0;
    mf_check_close_f64("lddt-ca: identical structures", &r1.lddt, &one, 1, EV_SCORE_ATOL, 0.0);
    MF_TEST_OK(mf_lddt_ca(pred, NULL, ref, mask, N, MF_LDDT_CUTOFF, per1, &r1));
    double rot[3][3], axis[3] = {-0.4, 0.1, 0.9}, t[3] = {-7.0, 55.0, 3.5};
    axis_angle(rot, axis, 1.3);
    transform(moved, pred, N, rot, t);
    MF_TEST_OK(mf_lddt_ca(moved, NULL, ref, mask, N, MF_LDDT_CUTOFF, per2, &r2));
    mf_check_close_f64("lddt-ca: per residue, rotated + translated prediction", per2, per1, N,
                       EV_SCORE_ATOL, 0.0);
    mf_check_close_f64("lddt-ca: global, rotated + translated prediction", &r2.lddt, &r1.lddt, 1,
                       EV_SCORE_ATOL, 0.0);
    MF_TEST_TRUE(r1.lddt > 0.3 && r1.lddt < 0.95, "lddt-ca of the noisy copy %g is not informative",
                 r1.lddt);
    /* mirror image of the prediction: distances unchanged, lDDT unchanged (superposition-free) */
    for (int k = 0; k < N; k++) moved[3 * k] = -pred[3 * k];
    for (int k = 0; k < N; k++)
        moved[3 * k + 1] = pred[3 * k + 1], moved[3 * k + 2] = pred[3 * k + 2];
    MF_TEST_OK(mf_lddt_ca(moved, NULL, ref, mask, N, MF_LDDT_CUTOFF, NULL, &r2));
    mf_check_close_f64("lddt-ca: mirrored prediction (distances only)", &r2.lddt, &r1.lddt, 1,
                       EV_SCORE_ATOL, 0.0);

    /* float32 AF2 formula and exact counts against the double evaluation */
    float pf[3 * N], rf[3 * N], lf[N];
    int32_t cnt[N], quarter[N];
    for (int k = 0; k < 3 * N; k++) pf[k] = (float)pred[k], rf[k] = (float)ref[k];
    MF_TEST_OK(mf_lddt_points_f32(lf, pf, 3, rf, 3, mask, 1, N, 15.0f));
    MF_TEST_OK(mf_lddt_points_counts(cnt, quarter, pf, 3, rf, 3, mask, 1, N, 15.0f));
    double from_counts[N], dbl_masked[N];
    float f32_masked[N];
    for (int k = 0; k < N; k++) {
        bool m = mask[k] != 0.0f && cnt[k] > 0;
        from_counts[k] = m ? (double)quarter[k] / (4.0 * cnt[k]) : -1.0;
        dbl_masked[k] = m ? per1[k] : -1.0;
        f32_masked[k] = m ? lf[k] : -1.0f;
    }
    mf_check_close_f64("lddt counts = double lddt-ca per residue", from_counts, dbl_masked, N,
                       EV_SCORE_ATOL, 0.0);
    mf_check_close_f32_f64("lddt f32 (AF2 formula) vs double per residue", f32_masked, dbl_masked,
                           N, 1e-6, 0.0);

    /* all-atom: identical -> 1; rigid motion of the prediction leaves it unchanged */
    enum { NA = 23 };
    float *rp = calloc(NA * 37 * 3, sizeof(float)), *pp = calloc(NA * 37 * 3, sizeof(float));
    float *pm = calloc(NA * 37, sizeof(float)), *mp = calloc(NA * 37 * 3, sizeof(float));
    int32_t *aat = calloc(NA, sizeof(int32_t));
    double ca[3 * NA];
    random_chain(ca, NA, 5);
    for (int i = 0; i < NA; i++) {
        aat[i] = i % 20;
        for (int a = 0; a < 5; a++) { /* N, CA, C, CB, O near the C-alpha */
            pm[i * 37 + a] = (aat[i] == 7 && a == 3) ? 0.0f : 1.0f;
            for (int k = 0; k < 3; k++) {
                rp[(i * 37 + a) * 3 + k] =
                    (float)(ca[3 * i + k] + (a == 1 ? 0.0 : 1.4 * grand(&s)));
                pp[(i * 37 + a) * 3 + k] = rp[(i * 37 + a) * 3 + k] + (float)(0.5 * grand(&s));
            }
        }
    }
    MF_TEST_OK(mf_lddt_all_atom(rp, pm, aat, rp, pm, aat, NA, MF_LDDT_CUTOFF, true, NULL, &r1));
    mf_check_close_f64("lddt all-atom: identical structures", &r1.lddt, &one, 1, EV_SCORE_ATOL,
                       0.0);
    MF_TEST_OK(mf_lddt_all_atom(pp, pm, aat, rp, pm, aat, NA, MF_LDDT_CUTOFF, true, per1, &r1));
    for (int i = 0; i < NA * 37; i++) {
        double p[3] = {pp[3 * i], pp[3 * i + 1], pp[3 * i + 2]}, q[3];
        transform(q, p, 1, rot, t);
        for (int k = 0; k < 3; k++) mp[3 * i + k] = (float)q[k];
    }
    MF_TEST_OK(mf_lddt_all_atom(mp, pm, aat, rp, pm, aat, NA, MF_LDDT_CUTOFF, true, per2, &r2));
    /* float32 coordinates: distances move by ~1e-5 under the motion; no pair sits that close to
     * a threshold in this data, so the counts are identical */
    mf_check_close_f64("lddt all-atom: per residue, rotated + translated prediction", per2, per1,
                       NA, EV_SCORE_ATOL, 0.0);
    MF_TEST_TRUE(r1.lddt > 0.3 && r1.lddt < 0.99, "lddt all-atom of the noisy copy %g", r1.lddt);
    free(rp), free(pp), free(pm), free(mp), free(aat);
}

/* ---- 5 ---- */
static void test_plddt_tie(void)
{
    printf("5. pLDDT-loss bin tie (testvectors README): residue 6 has 50 lDDT-Ca = 5 exactly\n");
    char fpath[1024], tpath[1024];
    snprintf(fpath, sizeof fpath, "%s/testvectors/features.h5", mf_test_shared_dir());
    snprintf(tpath, sizeof tpath, "%s/testvectors/train_expected.h5", mf_test_shared_dir());
    mf_h5_quiet();
    hid_t ff = -1, ft = -1;
    MF_TEST_OK(mf_h5_open_read(fpath, &ff));
    MF_TEST_OK(mf_h5_open_read(tpath, &ft));
    mf_h5_array tpos = {0}, tmask = {0}, ppos = {0};
    if (ff >= 0 && ft >= 0) {
        MF_TEST_OK(mf_h5_read_array(ff, fpath, "all_atom_positions", MF_F32, &tpos));
        MF_TEST_OK(mf_h5_read_array(ff, fpath, "all_atom_mask", MF_F32, &tmask));
        MF_TEST_OK(
            mf_h5_read_array(ft, tpath, "train_outputs/final_atom_positions", MF_F32, &ppos));
    }
    if (tpos.data && tmask.data && ppos.data) {
        int64_t n = tpos.shape[0];
        float *l = malloc((size_t)n * sizeof(float));
        int32_t *cnt = malloc((size_t)n * sizeof(int32_t)),
                *q = malloc((size_t)n * sizeof(int32_t));
        /* C-alpha: atom37 slot 1, residue stride 37 * 3 floats */
        MF_TEST_OK(mf_lddt_points_f32(l, (float *)ppos.data + 3, 111, (float *)tpos.data + 3, 111,
                                      (float *)tmask.data + 1, 37, n, 15.0f));
        MF_TEST_OK(mf_lddt_points_counts(cnt, q, (float *)ppos.data + 3, 111,
                                         (float *)tpos.data + 3, 111, (float *)tmask.data + 1, 37,
                                         n, 15.0f));
        int agree = 0;
        for (int64_t i = 0; i < n; i++) {
            float x50 = 50.0f * l[i];
            int bin_f32 = (int)floorf(x50), bin_exact = cnt[i] ? (50 * q[i]) / (4 * cnt[i]) : 50;
            if (bin_f32 > 49) bin_f32 = 49;
            if (bin_exact > 49) bin_exact = 49;
            agree += bin_f32 == bin_exact;
        }
        MF_TEST_TRUE(agree == n, "pLDDT bins: f32 formula and exact counts differ on %lld residues",
                     (long long)(n - agree));
        bool tie = n > 6 && 50 * q[6] == 5 * 4 * cnt[6];
        MF_TEST_TRUE(tie, "residue 6: 50 lddt = 50*%d/(4*%d) is not exactly 5", q[6], cnt[6]);
        MF_TEST_TRUE(n > 6 && (int)floorf(50.0f * l[6]) == 5,
                     "residue 6: float32 formula gives 50 lddt = %.9g, bin %d (want 5)",
                     50.0 * l[6], (int)floorf(50.0f * l[6]));
        printf("  residue 6: %d pairs, %d quarter points; float32 50 lddt = %.9g -> bin 5; bins "
               "agree on all %lld residues\n",
               cnt[6], q[6], (double)(50.0f * l[6]), (long long)n);
        free(l), free(cnt), free(q);
    }
    mf_h5_array_free(&tpos), mf_h5_array_free(&tmask), mf_h5_array_free(&ppos);
    if (ff >= 0) H5Fclose(ff);
    if (ft >= 0) H5Fclose(ft);
}

/* ---- 6 ---- */
static void test_tmscore(void)
{
    printf("6. TM-score / GDT by hand\n");
    double d0_100 = mf_tmscore_d0(100), want100 = 1.24 * cbrt(85.0) - 1.8;
    double d0_10 = mf_tmscore_d0(10), d0_19 = mf_tmscore_d0(19), half = 0.5;
    mf_check_close_f64("d0(100) = 1.24 * 85^(1/3) - 1.8", &d0_100, &want100, 1, EV_SCORE_ATOL, 0.0);
    mf_check_close_f64("d0(10) = 0.5 (L <= 15)", &d0_10, &half, 1, 0.0, 0.0);
    mf_check_close_f64("d0(19) = 0.5 (formula below the minimum)", &d0_19, &half, 1, 0.0, 0.0);

    enum { N = 40 };
    double ref[3 * N], pred[3 * N], rot[3][3], axis[3] = {1, 2, -0.5}, t[3] = {3, -9, 14};
    random_chain(ref, N, 31);
    axis_angle(rot, axis, 0.8);
    transform(pred, ref, N, rot, t);
    mf_tmscore_result r;
    MF_TEST_OK(mf_tmscore(pred, ref, N, N, &r));
    double got[4] = {r.tm_score, r.gdt_ts, r.gdt_ha, r.rmsd}, want[4] = {1, 1, 1, 0};
    mf_check_close_f64("tm-score: rigid copy (tm, gdt_ts, gdt_ha, rmsd) = (1, 1, 1, 0)", got, want,
                       4, EV_EXACT_ATOL, 0.0);
    /* 5 reference residues without a partner: every score scales by 40 / 45, d0 from 45 */
    MF_TEST_OK(mf_tmscore(pred, ref, N, N + 5, &r));
    double got2[3] = {r.tm_score, r.gdt_ts, r.d0},
           want2[3] = {40.0 / 45.0, 40.0 / 45.0, mf_tmscore_d0(45)};
    mf_check_close_f64("tm-score: normalised by a longer reference (40/45)", got2, want2, 3,
                       EV_EXACT_ATOL, 0.0);
    /* two outliers 20 and 25 A away: the search settles on the exact core superposition */
    double moved[3 * N];
    memcpy(moved, pred, sizeof moved);
    moved[3 * 7 + 1] += 20.0;
    moved[3 * 30 + 2] -= 25.0;
    MF_TEST_OK(mf_tmscore(moved, ref, N, N, &r));
    double d0 = mf_tmscore_d0(N);
    double want_tm =
        (38.0 + 1.0 / (1.0 + (20.0 / d0) * (20.0 / d0)) + 1.0 / (1.0 + (25.0 / d0) * (25.0 / d0))) /
        N;
    double got3[2] = {r.tm_score, r.gdt_ts}, want3[2] = {want_tm, 38.0 / 40.0};
    mf_check_close_f64("tm-score: 38 exact + outliers at 20 and 25 A (tm, gdt_ts)", got3, want3, 2,
                       EV_EXACT_ATOL, 0.0);
    printf("  outlier case: d0 = %.4f, tm = %.6f, gdt_ts = %.4f, rmsd = %.3f\n", d0, r.tm_score,
           r.gdt_ts, r.rmsd);

    expect_error("tm-score of 2 pairs", mf_tmscore(pred, ref, 2, 10, &r), MF_ERR_INVALID,
                 "at least 3");
    double line[15];
    for (int k = 0; k < 15; k++) line[k] = (double)(k / 3) * 3.8 * (k % 3 == 0);
    expect_error("tm-score of collinear pairs", mf_tmscore(line, line, 5, 5, &r), MF_ERR_INVALID,
                 "collinear");
    moved[3 * 11] = NAN;
    expect_error("tm-score with NaN", mf_tmscore(moved, ref, N, N, &r), MF_ERR_NUMERIC,
                 "not finite");
    MF_TEST_TRUE(!isnan(r.tm_score) && !isnan(r.rmsd), "a refused tm-score left NaN in its result");
}

/* ---- 7 ---- */
static void to_restypes(int32_t *out, const char *s)
{
    for (size_t i = 0; s[i]; i++) out[i] = mf_restype_from_one_letter(s[i]);
}

static mf_status make_protein(mf_protein *p, const char *seq, int first_number, int skip_at)
{
    int64_t n = (int64_t)strlen(seq);
    MF_TRY(mf_protein_alloc(p, n));
    for (int64_t i = 0; i < n; i++) {
        p->aatype[i] = mf_restype_from_one_letter(seq[i]);
        p->sequence[i] = seq[i];
        p->residue_index[i] = first_number + (int32_t)i + (skip_at >= 0 && i >= skip_at ? 3 : 0);
        p->atom_mask[i * 37 + 1] = 1.0f;
        p->atom_positions[(i * 37 + 1) * 3] = 3.8f * (float)i;
    }
    return MF_OK;
}

static void test_alignment(void)
{
    printf("7. residue pairing: Needleman-Wunsch (BLOSUM62, affine gaps, free end gaps) and the "
           "shared-numbering rule\n");
    int sym = 1;
    for (int a = 0; a < 21; a++)
        for (int b = 0; b < 21; b++) sym &= mf_blosum62(a, b) == mf_blosum62(b, a);
    MF_TEST_TRUE(sym, "BLOSUM62 table is not symmetric");
    int W = mf_restype_from_one_letter('W'), C = mf_restype_from_one_letter('C');
    int A = mf_restype_from_one_letter('A'), R = mf_restype_from_one_letter('R');
    int I = mf_restype_from_one_letter('I'), V = mf_restype_from_one_letter('V');
    MF_TEST_TRUE(mf_blosum62(W, W) == 11 && mf_blosum62(C, C) == 9 && mf_blosum62(A, R) == -1 &&
                     mf_blosum62(I, V) == 3,
                 "BLOSUM62 W/W %d C/C %d A/R %d I/V %d (want 11, 9, -1, 3)", mf_blosum62(W, W),
                 mf_blosum62(C, C), mf_blosum62(A, R), mf_blosum62(I, V));

    const char *a = "MKTAYIAKQRQISFVKSHFSRQ", *b = "MKTAYIAKQRISFVKSHFSRQ"; /* Q11 deleted */
    int32_t ra[64], rb[64];
    int64_t map[64], want[64], score = 0;
    to_restypes(ra, a), to_restypes(rb, b);
    MF_TEST_OK(mf_align_global(ra, (int64_t)strlen(a), rb, (int64_t)strlen(b), map, &score));
    for (int64_t i = 0; i < (int64_t)strlen(a); i++) want[i] = i < 10 ? i : i == 10 ? -1 : i - 1;
    bool ok = !memcmp(map, want, strlen(a) * sizeof(int64_t));
    MF_TEST_TRUE(ok, "alignment with one deletion is wrong");
    printf("  one deletion: %s (score %lld)\n", ok ? "mapped" : "WRONG", (long long)score);

    const char *dom = "GSHMLEDPVDAFQ", *full = "MAAAWWPPGSHMLEDPVDAFQKKRRTTEEE";
    to_restypes(ra, dom), to_restypes(rb, full);
    MF_TEST_OK(mf_align_global(ra, (int64_t)strlen(dom), rb, (int64_t)strlen(full), map, NULL));
    ok = true;
    for (int64_t i = 0; i < (int64_t)strlen(dom); i++) ok &= map[i] == i + 8;
    MF_TEST_TRUE(ok, "a domain inside a longer chain is not placed at offset 8 (free end gaps)");
    printf("  free end gaps: domain placed at offset 8: %s\n", ok ? "yes" : "NO");
    int32_t bad = 25;
    expect_error("align an invalid restype", mf_align_global(&bad, 1, rb, 3, map, NULL),
                 MF_ERR_INVALID, "restype");

    mf_protein ref = {0}, same = {0}, renum = {0};
    const char *seq = "MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQ";
    MF_TEST_OK(make_protein(&ref, seq, 5, 20));       /* numbering 5.., a 3-number jump at 20 */
    MF_TEST_OK(make_protein(&same, seq, 5, 20));      /* shared numbering */
    MF_TEST_OK(make_protein(&renum, seq + 2, 1, -1)); /* renumbered from 1, first 2 missing */
    mf_residue_pairing pr = {0};
    MF_TEST_OK(mf_pair_residues(&same, &ref, &pr));
    ok = pr.method == MF_PAIRING_RESIDUE_NUMBER && pr.n_pairs == ref.num_res &&
         pr.n_identical == ref.num_res;
    for (int64_t i = 0; ok && i < ref.num_res; i++) ok = pr.ref_to_pred[i] == i;
    MF_TEST_TRUE(ok, "shared numbering: method %s, %lld pairs", mf_pairing_method_name(pr.method),
                 (long long)pr.n_pairs);
    mf_residue_pairing_free(&pr);
    MF_TEST_OK(mf_pair_residues(&renum, &ref, &pr));
    ok = pr.method == MF_PAIRING_SEQUENCE_ALIGNMENT && pr.n_pairs == ref.num_res - 2 &&
         pr.ref_to_pred[0] == -1 && pr.ref_to_pred[1] == -1;
    for (int64_t i = 2; ok && i < ref.num_res; i++) ok = pr.ref_to_pred[i] == i - 2;
    MF_TEST_TRUE(ok, "renumbered: method %s, %lld pairs", mf_pairing_method_name(pr.method),
                 (long long)pr.n_pairs);
    printf("  shared numbering -> residue_number; renumbered -> sequence_alignment, %lld pairs\n",
           (long long)pr.n_pairs);
    mf_residue_pairing_free(&pr);
    mf_protein_free(&ref), mf_protein_free(&same), mf_protein_free(&renum);
}

int main(void)
{
    test_eigen();
    test_kabsch();
    test_degenerate();
    test_lddt_hand();
    test_lddt_invariance();
    test_plddt_tie();
    test_tmscore();
    test_alignment();
    return mf_test_finish("test_eval");
}
