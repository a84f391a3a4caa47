/* AlphaFold 2's structural losses (structure_module/losses_structure.h):
 *  - hand cases: chi loss (2pi- and pi-periodic chis, masks, the angle-norm penalty); violation
 *    terms of a lone C-N pair (peptide bond, chain-break rule, proline bond length, clash when
 *    the bond is broken), the CYS SG-SG exclusion;
 *  - an independent brute-force transcription of AF2's violation formulas (all N x N x 14 x 14
 *    pairs, no culling) against the f64 reference: every term, per-atom outputs, metrics;
 *  - central finite differences in double (4ZEY residues 13-23, N 11, chain break included) of
 *    the violation loss, side-chain FAPE, backbone FAPE (clamped/unclamped mix) and chi loss,
 *    with each active term (relu, clamp, min, |.|) at least 1e-3 from its kink;
 *  - the f32 tensor entry points against the f64 reference; thread-count independence;
 *  - renaming: picks the alternative when the prediction is the alternative, not otherwise;
 *    renamed frames follow;
 *  - invariance of the violation loss (and equivariance of its gradient) under a rigid motion;
 *  - train_expected.h5: loss/violation from train_outputs/final_atom_positions (atom37 -> atom14),
 *    and loss/fape = 0.5 backbone + 0.5 side-chain FAPE (clamped and unclamped) from sm/frames and
 *    the last layer's sm/positions, side-chain frames rebuilt from the atoms;
 *  - NaN reported, shape and restype errors. */
#include <math.h>
#include <omp.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "data/h5io.h"
#include "protein/residue_constants.h"
#include "structure_module/losses_structure.h"
#include "structure_module/rigid.h"
#include "tests/support/mf_test.h"

#define NA MF_ATOM14
#define NG MF_NUM_RIGID_GROUPS

/* Every relu / clamp / min / |.| decision of a finite-difference case is at least this far from
 * its kink (in its own unit: A for distances, 1 for cosines, squared sin/cos errors and norms);
 * a step of 1e-6 cannot cross it. */
#define KINK_MARGIN 1e-3
/* Rigid-motion invariance in double: the loss is a sum of ~1e3 terms each rounded at ~1e-16
 * relative; coordinates ~40 A. */
#define INVARIANCE_RTOL_F64   1e-10
#define EQUIVARIANCE_ATOL_F64 1e-10
/* Brute force vs the reference in double: same formulas summed in another order. */
#define BRUTE_RTOL 1e-12
#define BRUTE_ATOL 1e-12
/* Rebuilt side-chain frames place the atoms they carry within this (f32 atoms, f32 lit). */
#define FRAME_REBUILD_ATOL 2e-3

static double *dalloc(int64_t n)
{
    return calloc((size_t)(n > 0 ? n : 1), sizeof(double));
}

static double *dcopy(const double *s, int64_t n)
{
    double *d = dalloc(n);
    memcpy(d, s, sizeof(double) * (size_t)n);
    return d;
}

static float *to_f32(const double *s, int64_t n)
{
    float *f = malloc(sizeof(float) * (size_t)(n > 0 ? n : 1));
    mf_f64_to_f32(f, s, n);
    return f;
}

/* Rounds through float in place, so f32 and f64 runs see the same inputs. */
static void round_f32(double *p, int64_t n)
{
    for (int64_t i = 0; i < n; i++) p[i] = (double)(float)p[i];
}

static double rel_err(double a, double ref)
{
    return fabs(a - ref) / fmax(fabs(ref), 1e-300);
}

/* ---- features ------------------------------------------------------------------------------ */

typedef struct {
    int64_t N;
    int32_t *aatype, *residue_index, *r14to37;
    double *seq_mask, *atom_exists, *gt_pos, *alt_pos, *gt_exists, *alt_exists, *ambiguous;
    double *gt_frames, *alt_frames, *group_exists, *bb_rigid, *bb_mask, *chi_mask, *chi_sc;
} feats;

typedef struct {
    const char *name;
    size_t off;
    int64_t row;
    bool is_int;
} feat_field;

static const feat_field FEAT_FIELDS[] = {
    {"aatype", offsetof(feats, aatype), 1, true},
    {"residue_index", offsetof(feats, residue_index), 1, true},
    {"residx_atom14_to_atom37", offsetof(feats, r14to37), NA, true},
    {"seq_mask", offsetof(feats, seq_mask), 1, false},
    {"atom14_atom_exists", offsetof(feats, atom_exists), NA, false},
    {"atom14_gt_positions", offsetof(feats, gt_pos), 3 * NA, false},
    {"atom14_alt_gt_positions", offsetof(feats, alt_pos), 3 * NA, false},
    {"atom14_gt_exists", offsetof(feats, gt_exists), NA, false},
    {"atom14_alt_gt_exists", offsetof(feats, alt_exists), NA, false},
    {"atom14_atom_is_ambiguous", offsetof(feats, ambiguous), NA, false},
    {"rigidgroups_gt_frames", offsetof(feats, gt_frames), 16 * NG, false},
    {"rigidgroups_alt_gt_frames", offsetof(feats, alt_frames), 16 * NG, false},
    {"rigidgroups_gt_exists", offsetof(feats, group_exists), NG, false},
    {"backbone_rigid_tensor", offsetof(feats, bb_rigid), 16, false},
    {"backbone_rigid_mask", offsetof(feats, bb_mask), 1, false},
    {"chi_mask", offsetof(feats, chi_mask), MF_NUM_CHI, false},
    {"chi_angles_sin_cos", offsetof(feats, chi_sc), 2 * MF_NUM_CHI, false},
};
#define N_FEAT_FIELDS ((int)(sizeof FEAT_FIELDS / sizeof FEAT_FIELDS[0]))

static void **feat_slot(feats *f, int k)
{
    return (void **)((char *)f + FEAT_FIELDS[k].off);
}

/* Reads dataset `name` as f64 (or i32), requiring `numel` elements. */
static void *read_any(hid_t h, const char *label, const char *name, int64_t numel, bool is_int)
{
    mf_h5_array a;
    memset(&a, 0, sizeof a);
    mf_status st = mf_h5_read_array(h, label, name, is_int ? MF_I32 : MF_F32, &a);
    MF_TEST_TRUE(st == MF_OK, "%s: %s", label, mf_last_error());
    if (st != MF_OK) return NULL;
    int64_t n = mf_h5_array_numel(&a);
    MF_TEST_TRUE(numel < 0 || n == numel, "%s %s: %lld elements, expected %lld", label, name,
                 (long long)n, (long long)numel);
    void *out = NULL;
    if (numel < 0 || n == numel) {
        if (is_int) {
            out = malloc(sizeof(int32_t) * (size_t)n);
            memcpy(out, a.data, sizeof(int32_t) * (size_t)n);
        } else {
            out = dalloc(n);
            mf_f32_to_f64(out, a.data, n);
        }
    }
    mf_h5_array_free(&a);
    return out;
}

static bool load_feats(feats *f, const char *path)
{
    memset(f, 0, sizeof *f);
    hid_t h;
    mf_status st = mf_h5_open_read(path, &h);
    MF_TEST_TRUE(st == MF_OK, "%s: %s", path, mf_last_error());
    if (st != MF_OK) return false;
    int32_t *aa = read_any(h, path, "aatype", -1, true);
    bool ok = aa != NULL;
    if (ok) {
        mf_h5_array a;
        memset(&a, 0, sizeof a);
        ok = mf_h5_read_array(h, path, "aatype", MF_I32, &a) == MF_OK;
        f->N = ok ? a.shape[0] : 0;
        mf_h5_array_free(&a);
    }
    free(aa);
    for (int k = 0; ok && k < N_FEAT_FIELDS; k++) {
        *feat_slot(f, k) = read_any(h, path, FEAT_FIELDS[k].name, f->N * FEAT_FIELDS[k].row,
                                    FEAT_FIELDS[k].is_int);
        ok = *feat_slot(f, k) != NULL;
    }
    H5Fclose(h);
    return ok;
}

static void window_feats(feats *w, const feats *f, int64_t start, int64_t n)
{
    memset(w, 0, sizeof *w);
    w->N = n;
    for (int k = 0; k < N_FEAT_FIELDS; k++) {
        int64_t row = FEAT_FIELDS[k].row;
        size_t es = FEAT_FIELDS[k].is_int ? sizeof(int32_t) : sizeof(double);
        void *p = malloc(es * (size_t)(n * row));
        memcpy(p, (char *)*feat_slot((feats *)f, k) + es * (size_t)(start * row),
               es * (size_t)(n * row));
        *feat_slot(w, k) = p;
    }
}

static void free_feats(feats *f)
{
    for (int k = 0; k < N_FEAT_FIELDS; k++) free(*feat_slot(f, k));
    memset(f, 0, sizeof *f);
}

/* The tensor batch over float copies of a feature set (the copies live in `store`). */
typedef struct {
    float *fl[N_FEAT_FIELDS];
    mf_structure_loss_batch b;
} batch_f32;

static void make_batch(batch_f32 *bf, const feats *f)
{
    memset(bf, 0, sizeof *bf);
    int64_t N = f->N;
    for (int k = 0; k < N_FEAT_FIELDS; k++)
        if (!FEAT_FIELDS[k].is_int)
            bf->fl[k] = to_f32(*feat_slot((feats *)f, k), N * FEAT_FIELDS[k].row);
    mf_structure_loss_batch *b = &bf->b;
    b->aatype = mf_tensor_make(f->aatype, MF_I32, MF_DEV_CPU, 1, (const int64_t[4]){N});
    b->residue_index =
        mf_tensor_make(f->residue_index, MF_I32, MF_DEV_CPU, 1, (const int64_t[4]){N});
    b->seq_mask = mf_tensor_f32(bf->fl[3], 1, N);
    b->atom14_atom_exists = mf_tensor_f32(bf->fl[4], 2, N, NA);
    b->atom14_gt_positions = mf_tensor_f32(bf->fl[5], 3, N, NA, 3);
    b->atom14_alt_gt_positions = mf_tensor_f32(bf->fl[6], 3, N, NA, 3);
    b->atom14_gt_exists = mf_tensor_f32(bf->fl[7], 2, N, NA);
    b->atom14_alt_gt_exists = mf_tensor_f32(bf->fl[8], 2, N, NA);
    b->atom14_atom_is_ambiguous = mf_tensor_f32(bf->fl[9], 2, N, NA);
    b->rigidgroups_gt_frames = mf_tensor_f32(bf->fl[10], 4, N, NG, 4, 4);
    b->rigidgroups_alt_gt_frames = mf_tensor_f32(bf->fl[11], 4, N, NG, 4, 4);
    b->rigidgroups_gt_exists = mf_tensor_f32(bf->fl[12], 2, N, NG);
    b->backbone_rigid_tensor = mf_tensor_f32(bf->fl[13], 3, N, 4, 4);
    b->backbone_rigid_mask = mf_tensor_f32(bf->fl[14], 1, N);
    b->chi_mask = mf_tensor_f32(bf->fl[15], 2, N, MF_NUM_CHI);
    b->chi_angles_sin_cos = mf_tensor_f32(bf->fl[16], 3, N, MF_NUM_CHI, 2);
}

static void free_batch(batch_f32 *bf)
{
    for (int k = 0; k < N_FEAT_FIELDS; k++) free(bf->fl[k]);
}

/* The f64 feature set rounded through float (so the f32 and f64 paths share their inputs). */
static void round_feats(feats *f)
{
    for (int k = 0; k < N_FEAT_FIELDS; k++)
        if (!FEAT_FIELDS[k].is_int) round_f32(*feat_slot(f, k), f->N * FEAT_FIELDS[k].row);
}

/* ---- an independent transcription of AF2's violation formulas ---------------------------- */

typedef struct {
    double c_n, ca_c_n, c_n_ca, clash_sum, clash_count, within_sum, atoms, loss;
    double margin; /* closest masked relu argument to 0 */
    int active_c_n, active_ca_c_n, active_c_n_ca, active_clash, active_within;
    double *conn_mask, *clash_per_atom, *clash_mask, *within_per_atom, *within_viol, *total;
    double extreme_ca_ca;
} brute_viol;

static double dist3(const double *a, const double *b, double eps)
{
    double s = 0;
    for (int k = 0; k < 3; k++) s += (a[k] - b[k]) * (a[k] - b[k]);
    return sqrt(eps + s);
}

static double relu(double x)
{
    return x > 0 ? x : 0;
}

static void brute_violations(brute_viol *r, const double *x, const double *e, const int32_t *ri,
                             const int32_t *aa, int64_t N)
{
    const double tolf = 12.0, overlap = 1.5;
    static float lower[21 * NA * NA], upper[21 * NA * NA], sd[21 * NA * NA];
    mf_make_atom14_dists_bounds((float)overlap, (float)tolf, lower, upper, sd);
    memset(r, 0, offsetof(brute_viol, conn_mask));
    r->margin = INFINITY;
    r->conn_mask = dalloc(N);
    r->clash_per_atom = dalloc(N * NA);
    r->clash_mask = dalloc(N * NA);
    r->within_per_atom = dalloc(N * NA);
    r->within_viol = dalloc(N * NA);
    r->total = dalloc(N);
    /* eq. 44-45, between_residue_bond_loss */
    double ms[3] = {0}, ls[3] = {0}, ca_v = 0, ca_m = 0;
    for (int64_t k = 0; k + 1 < N; k++) {
        const double *ca = x + 3 * (k * NA + 1), *c = x + 3 * (k * NA + 2);
        const double *n = x + 3 * ((k + 1) * NA), *ca2 = x + 3 * ((k + 1) * NA + 1);
        double gap = (ri[k + 1] - ri[k]) == 1 ? 1 : 0;
        const double *e0 = e + k * NA, *e1 = e + (k + 1) * NA;
        double mask[3] = {e0[2] * e1[0] * gap, e0[1] * e0[2] * e1[0] * gap,
                          e0[2] * e1[0] * e1[1] * gap};
        double lcn = dist3(c, n, 1e-6), lcac = dist3(ca, c, 1e-6), lnca = dist3(n, ca2, 1e-6);
        double cos1 = 0, cos2 = 0;
        for (int d = 0; d < 3; d++) {
            cos1 += (ca[d] - c[d]) / lcac * ((n[d] - c[d]) / lcn);
            cos2 += (-(n[d] - c[d]) / lcn) * ((ca2[d] - n[d]) / lnca);
        }
        int pro = aa[k + 1] == mf_restype_from_one_letter('P');
        double metric[3] = {lcn, cos1, cos2};
        double gt[3] = {mf_between_res_bond_length_c_n[pro], mf_between_res_cos_angles_ca_c_n[0],
                        mf_between_res_cos_angles_c_n_ca[0]};
        /* AF2 (all_atom.py) uses the C-N bond-length stddev for the CA-C-N angle. */
        double s[3] = {mf_between_res_bond_length_stddev_c_n[pro],
                       mf_between_res_bond_length_stddev_c_n[0],
                       mf_between_res_cos_angles_c_n_ca[1]};
        double vmax = 0;
        for (int t = 0; t < 3; t++) {
            double err = sqrt(1e-6 + (metric[t] - gt[t]) * (metric[t] - gt[t]));
            double thr = tolf * s[t];
            double l = relu(err - thr);
            ms[t] += mask[t];
            ls[t] += mask[t] * l;
            if (mask[t] != 0) {
                r->margin = fmin(r->margin, fabs(err - thr));
                if (l > 0) {
                    if (t == 0) r->active_c_n++;
                    if (t == 1) r->active_ca_c_n++;
                    if (t == 2) r->active_c_n_ca++;
                }
            }
            vmax = fmax(vmax, mask[t] * (err > thr));
        }
        r->conn_mask[k] = fmax(r->conn_mask[k], vmax);
        r->conn_mask[k + 1] = fmax(r->conn_mask[k + 1], vmax);
        double mca = e0[1] * e1[1] * gap;
        ca_m += mca;
        ca_v += mca * (dist3(ca, ca2, 1e-6) - MF_CA_CA > 1.5);
    }
    r->c_n = ls[0] / (ms[0] + 1e-6);
    r->ca_c_n = ls[1] / (ms[1] + 1e-6);
    r->c_n_ca = ls[2] / (ms[2] + 1e-6);
    r->extreme_ca_ca = ca_v / (ca_m + 1e-10);
    /* eq. 46 between residues, between_residue_clash_loss: the upper triangle of residue_index */
    for (int64_t i = 0; i < N; i++)
        for (int64_t j = 0; j < N; j++)
            for (int a = 0; a < NA; a++)
                for (int b = 0; b < NA; b++) {
                    double m = e[i * NA + a] * e[j * NA + b] * (ri[i] < ri[j]);
                    m *= 1.0 - (double)(ri[i] + 1 == ri[j] && a == 2 && b == 0);
                    m *= 1.0 - (double)(a == 5 && b == 5);
                    const char *na = mf_atom14_name(aa[i], a), *nb = mf_atom14_name(aa[j], b);
                    double rad_a =
                        e[i * NA + a] * (na && na[0] ? mf_van_der_waals_radius(na[0]) : 0);
                    double rad_b =
                        e[j * NA + b] * (nb && nb[0] ? mf_van_der_waals_radius(nb[0]) : 0);
                    double lb = m * (rad_a + rad_b);
                    double d = dist3(x + 3 * (i * NA + a), x + 3 * (j * NA + b), 1e-10);
                    double err = m * relu(lb - overlap - d);
                    r->clash_count += m;
                    r->clash_per_atom[i * NA + a] += err;
                    r->clash_per_atom[j * NA + b] += err;
                    double cm = m * (d < lb - overlap);
                    r->clash_mask[i * NA + a] = fmax(r->clash_mask[i * NA + a], cm);
                    r->clash_mask[j * NA + b] = fmax(r->clash_mask[j * NA + b], cm);
                    if (m != 0) {
                        r->margin = fmin(r->margin, fabs(lb - overlap - d));
                        r->active_clash += err > 0;
                    }
                }
    /* eq. 46 within residues, within_residue_violations */
    for (int64_t i = 0; i < N; i++)
        for (int a = 0; a < NA; a++)
            for (int b = 0; b < NA; b++) {
                double m = (a != b) * e[i * NA + a] * e[i * NA + b];
                int t = aa[i];
                double lo = lower[(t * NA + a) * NA + b], up = upper[(t * NA + a) * NA + b];
                double d = dist3(x + 3 * (i * NA + a), x + 3 * (i * NA + b), 1e-10);
                double l = m * (relu(lo - d) + relu(d - up));
                r->within_per_atom[i * NA + a] += l;
                r->within_per_atom[i * NA + b] += l;
                double v = m * (d < lo || d > up);
                r->within_viol[i * NA + a] = fmax(r->within_viol[i * NA + a], v);
                r->within_viol[i * NA + b] = fmax(r->within_viol[i * NA + b], v);
                if (m != 0) {
                    r->margin = fmin(r->margin, fmin(fabs(lo - d), fabs(d - up)));
                    r->active_within += l > 0;
                }
            }
    for (int64_t k = 0; k < N * NA; k++) {
        r->clash_sum += r->clash_per_atom[k];
        r->within_sum += r->within_per_atom[k];
        r->atoms += e[k];
    }
    for (int64_t i = 0; i < N; i++) {
        r->total[i] = r->conn_mask[i];
        for (int a = 0; a < NA; a++)
            r->total[i] =
                fmax(r->total[i], fmax(r->clash_mask[i * NA + a], r->within_viol[i * NA + a]));
    }
    r->loss = r->c_n + r->ca_c_n + r->c_n_ca + (r->clash_sum + r->within_sum) / (1e-6 + r->atoms);
}

static void free_brute(brute_viol *r)
{
    free(r->conn_mask), free(r->clash_per_atom), free(r->clash_mask), free(r->within_per_atom);
    free(r->within_viol), free(r->total);
}

/* The double-precision finite-difference runs call the references thousands of times on small
 * inputs: one thread, so a loaded machine does not turn OpenMP barriers into seconds. */
static void fd_threads_begin(int *saved)
{
    *saved = omp_get_max_threads();
    omp_set_num_threads(1);
}

/* ---- hand cases ---------------------------------------------------------------------------- */

static void test_chi_hand(void)
{
    /* ASP (chi1 2pi-periodic, chi2 pi-periodic) and ALA (no chi), one layer. chi1: prediction
     * = -truth, error 4 either way; chi2: prediction = -truth, 0 through the shifted truth.
     * chi_loss = (4 + 0) / (2 + 1e-10). Unnormalised angles unit except one of norm 2:
     * angle_norm_loss = (13 |sqrt(1 + 1e-6) - 1| + |sqrt(4 + 1e-6) - 1|) / (2 * 7 + 1e-10). */
    const int64_t N = 2, L = 1;
    int32_t aatype[2] = {(int32_t)mf_restype_from_one_letter('D'),
                         (int32_t)mf_restype_from_one_letter('A')};
    double seq_mask[2] = {1, 1}, chi_mask[8] = {1, 1, 0, 0, 0, 0, 0, 0};
    double truth[16] = {0}, ang[28] = {0}, un[28] = {0};
    const double a1 = 0.7, a2 = -2.1;
    truth[0] = sin(a1), truth[1] = cos(a1), truth[2] = sin(a2), truth[3] = cos(a2);
    for (int k = 0; k < 14; k++) un[2 * k] = 0.6, un[2 * k + 1] = 0.8;
    un[2 * 5] = 1.2, un[2 * 5 + 1] = 1.6; /* residue 0, torsion 5 (chi3): norm 2 */
    for (int k = 0; k < 14; k++) ang[2 * k] = 0.6, ang[2 * k + 1] = 0.8;
    ang[2 * 3] = -truth[0], ang[2 * 3 + 1] = -truth[1];
    ang[2 * 4] = -truth[2], ang[2 * 4 + 1] = -truth[3];
    double loss, chi, an;
    mf_supervised_chi_loss_f64(&loss, &chi, &an, ang, un, aatype, seq_mask, chi_mask, truth, L, N,
                               0.5, 0.01);
    const double hand_chi = 4.0 / (2.0 + 1e-10);
    const double hand_an =
        (13.0 * fabs(sqrt(1.0 + 1e-6) - 1.0) + fabs(sqrt(4.0 + 1e-6) - 1.0)) / (14.0 + 1e-10);
    const double hand = 0.5 * hand_chi + 0.01 * hand_an;
    mf_check_close_f64("chi hand: chi loss (pi-periodic chi2 read through -truth)", &chi, &hand_chi,
                       1, 0, 1e-14);
    mf_check_close_f64("chi hand: angle-norm loss", &an, &hand_an, 1, 0, 1e-12);
    mf_check_close_f64("chi hand: loss = 0.5 chi + 0.01 angle norm", &loss, &hand, 1, 0, 1e-14);
    /* Gradient: chi1 2 (p - t) * 0.5 / 2 per component, chi2 through the shifted truth: zero. */
    double dang[28] = {0}, dun[28] = {0};
    mf_supervised_chi_loss_backward_f64(dang, dun, 1.0, ang, un, aatype, seq_mask, chi_mask, truth,
                                        L, N, 0.5, 0.01);
    const double cn = 0.5 / (2.0 + 1e-10);
    double want[4] = {cn * 2 * (ang[6] - truth[0]), cn * 2 * (ang[7] - truth[1]), 0, 0};
    mf_check_close_f64("chi hand: d/d chi1, chi2 (chi2 at its shifted minimum: 0)", dang + 6, want,
                       4, 1e-14, 1e-12);
    const double an_scale = 0.01 / (14.0 + 1e-10);
    double wn[2] = {an_scale * 1.2 / sqrt(4 + 1e-6), an_scale * 1.6 / sqrt(4 + 1e-6)};
    mf_check_close_f64("chi hand: d/d unnormalised chi3 of norm 2", dun + 10, wn, 2, 1e-14, 1e-9);
    /* f32 path on the same case */
    float fl, fc, fa, fang[28], fun[28], ftr[16], fsm[2], fcm[8];
    mf_f64_to_f32(fang, ang, 28), mf_f64_to_f32(fun, un, 28), mf_f64_to_f32(ftr, truth, 16);
    mf_f64_to_f32(fsm, seq_mask, 2), mf_f64_to_f32(fcm, chi_mask, 8);
    mf_supervised_chi_loss_f32(&fl, &fc, &fa, fang, fun, aatype, fsm, fcm, ftr, L, N, 0.5f, 0.01f);
    mf_check_close_f32_f64("chi hand: f32 loss", &fl, &hand, 1, MF_TOL_F32_ATOL, MF_TOL_F32_RTOL);
}

/* Two residues with only C of residue 0 and N of residue 1 present, 1.0 A apart. */
static void lone_cn(double *loss_out, mf_violation_terms *t, int32_t next_restype, int32_t gap)
{
    double x[2 * NA * 3] = {0}, e[2 * NA] = {0};
    e[2] = 1, e[NA + 0] = 1;
    x[3 * 2 + 0] = 5.0;
    x[3 * NA + 0] = 6.0;
    int32_t ri[2] = {1, 1 + gap}, aa[2] = {(int32_t)mf_restype_from_one_letter('G'), next_restype};
    static mf_violation_tables tab;
    mf_violation_tables_init(&tab, 12.0f, 1.5f);
    double work[16];
    mf_structural_violations_f64(t, NULL, work, x, e, ri, aa, &tab, 2);
    *loss_out = t->loss;
}

static void test_violation_hand(void)
{
    mf_violation_terms t;
    double loss;
    const int32_t gly = mf_restype_from_one_letter('G'), pro = mf_restype_from_one_letter('P');
    MF_TEST_TRUE(pro == 14, "PRO is restype %d, the reference assumes 14", pro);
    /* Bonded: the C-N pair is the peptide bond, no clash. */
    lone_cn(&loss, &t, gly, 1);
    const double lcn = sqrt(1e-6 + 1.0); /* AF2's sqrt(1e-6 + |C - N|^2) */
    double hand =
        fmax(sqrt(1e-6 + (lcn - (double)1.329f) * (lcn - (double)1.329f)) - 12.0 * (double)0.014f,
             0.0) /
        (1.0 + 1e-6);
    mf_check_close_f64("violation hand: C-N 1.0 A, bonded: C-N length term", &loss, &hand, 1, 0,
                       1e-12);
    MF_TEST_TRUE(t.clashes_loss_sum == 0, "bonded C-N pair counted as a clash (%g)",
                 t.clashes_loss_sum);
    /* Before a proline the bond is 1.341 +- 0.016. */
    lone_cn(&loss, &t, pro, 1);
    hand = (sqrt(1e-6 + (lcn - (double)1.341f) * (lcn - (double)1.341f)) - 12.0 * (double)0.016f) /
           (1.0 + 1e-6);
    mf_check_close_f64("violation hand: C-N before PRO (1.341 +- 0.016)", &loss, &hand, 1, 0,
                       1e-12);
    /* residue_index jump of 2: no bond, and the pair clashes (C 1.7 + N 1.55 - 1.5 > 1.0). */
    lone_cn(&loss, &t, gly, 2);
    double err = 1.7 + 1.55 - 1.5 - sqrt(1e-10 + 1.0);
    double hand_gap = 2.0 * err / (2.0 + 1e-6);
    mf_check_close_f64("violation hand: chain break, C-N pair is a clash", &loss, &hand_gap, 1, 0,
                       1e-6);
    double zero = 0;
    mf_check_close_f64("violation hand: chain break, no bond term", &t.bonds_c_n_loss_mean, &zero,
                       1, 0, 0);
    double mean = err / (1e-6 + 1.0);
    mf_check_close_f64("violation hand: clashes_mean_loss over the one pair", &t.clashes_mean_loss,
                       &mean, 1, 0, 1e-6);
    /* CYS SG pair 2.0 A apart (< 1.8 + 1.8 - 1.5): a disulfide, excluded. */
    double x[2 * NA * 3] = {0}, e[2 * NA] = {0}, work[16];
    e[5] = 1, e[NA + 5] = 1;
    x[3 * NA + 3 * 5] = 2.0;
    int32_t ri[2] = {1, 7}, aa[2] = {4, 4};
    MF_TEST_TRUE(mf_restype_from_one_letter('C') == 4 && mf_atom14_index(4, "SG") == 5,
                 "CYS SG is not atom14 slot 5 of restype 4");
    static mf_violation_tables tab;
    mf_violation_tables_init(&tab, 12.0f, 1.5f);
    mf_structural_violations_f64(&t, NULL, work, x, e, ri, aa, &tab, 2);
    mf_check_close_f64("violation hand: CYS SG-SG 2.0 A is no clash", &t.loss, &zero, 1, 0, 0);
    double atoms = 2;
    mf_check_close_f64("violation hand: num_atoms", &t.num_atoms, &atoms, 1, 0, 0);
}

/* ---- the finite-difference structure ------------------------------------------------------- */

/* 4ZEY residues 13-23 (residue_index jumps 15 -> 56 after the second residue; ASP and TYR are
 * ambiguous) with two residue pairs pushed into contact (closest atoms 1.3 A: clashes, and the
 * moved residues' peptide bonds stretched), one side-chain atom moved 0.5 A (a within-residue
 * bond violation) and Gaussian noise of `sd` A on every atom. */
static void make_violation_case(double *x, const feats *w, double sd, uint64_t seed)
{
    int64_t N = w->N;
    memcpy(x, w->gt_pos, sizeof(double) * (size_t)(N * NA * 3));
    bool moved[64] = {false};
    for (int pass = 0; pass < 2; pass++) {
        double best = INFINITY;
        int64_t bi = -1, bj = -1;
        int ba = 0, bb = 0;
        for (int64_t i = 0; i < N; i++)
            for (int64_t j = i + 1; j < N; j++) {
                if (abs(w->residue_index[j] - w->residue_index[i]) < 2 || moved[i] || moved[j])
                    continue;
                for (int a = 0; a < NA; a++)
                    for (int b = 0; b < NA; b++) {
                        if (w->atom_exists[i * NA + a] == 0 || w->atom_exists[j * NA + b] == 0)
                            continue;
                        double d = dist3(x + 3 * (i * NA + a), x + 3 * (j * NA + b), 0);
                        if (d < best) best = d, bi = i, bj = j, ba = a, bb = b;
                    }
            }
        if (bi < 0) break;
        double t[3];
        for (int k = 0; k < 3; k++)
            t[k] = (x[3 * (bi * NA + ba) + k] - x[3 * (bj * NA + bb) + k]) * (1.0 - 1.3 / best);
        for (int b = 0; b < NA; b++)
            for (int k = 0; k < 3; k++) x[3 * (bj * NA + b) + k] += t[k];
        moved[bi] = moved[bj] = true;
    }
    /* Bend one peptide link's CA-C-N and C-N-CA to 60 degrees (cos 0.5: 0.95 and 1.02 from the
     * means, far beyond 12 stddevs 0.373 and 0.424 even with the noise): the CAs turn about C and
     * N in their planes with the C-N axis. */
    {
        const int64_t k = 6;
        double *c = x + 3 * (k * NA + 2), *n = x + 3 * ((k + 1) * NA);
        double *cas[2] = {x + 3 * (k * NA + 1), x + 3 * ((k + 1) * NA + 1)};
        double *base[2] = {c, n};
        for (int s = 0; s < 2; s++) {
            double u[3], v[3], dp = 0, nu = 0, nv = 0, len = 0;
            for (int d = 0; d < 3; d++) u[d] = n[d] - c[d], nu += u[d] * u[d];
            for (int d = 0; d < 3; d++) u[d] /= sqrt(nu);
            for (int d = 0; d < 3; d++) v[d] = cas[s][d] - base[s][d], dp += v[d] * u[d];
            for (int d = 0; d < 3; d++) len += v[d] * v[d], v[d] -= dp * u[d], nv += v[d] * v[d];
            const double along = s == 0 ? 0.5 : -0.5; /* u points from C to N */
            for (int d = 0; d < 3; d++)
                cas[s][d] = base[s][d] + sqrt(len) * (along * u[d] + sqrt(0.75) * v[d] / sqrt(nv));
        }
    }
    for (int64_t i = 0; i < N; i++) {
        int last = -1;
        for (int a = 5; a < NA; a++)
            if (w->atom_exists[i * NA + a] != 0) last = a;
        if (last >= 0) {
            x[3 * (i * NA + last)] += 0.5;
            break;
        }
    }
    double *noise = dalloc(N * NA * 3);
    mf_test_fill_normal_f64(noise, N * NA * 3, seed, sd);
    for (int64_t k = 0; k < N * NA * 3; k++) x[k] += noise[k];
    free(noise);
}

typedef struct {
    const feats *w;
    const mf_violation_tables *tab;
    double *x, *loss, *work;
} viol_case;

static void viol_fwd(void *ud)
{
    viol_case *c = ud;
    mf_violation_terms t;
    mf_structural_violations_f64(&t, NULL, c->work, c->x, c->w->atom_exists, c->w->residue_index,
                                 c->w->aatype, c->tab, c->w->N);
    *c->loss = t.loss;
}

static void test_violations(mf_ctx *ctx, const feats *w, const mf_violation_tables *tab)
{
    const int64_t N = w->N, nx = N * NA * 3;
    double *x = dalloc(nx);
    brute_viol br;
    uint64_t seed = 0;
    for (seed = 100; seed < 160; seed++) {
        make_violation_case(x, w, 0.12, seed);
        round_f32(x, nx);
        brute_violations(&br, x, w->atom_exists, w->residue_index, w->aatype, N);
        if (br.margin > KINK_MARGIN) break;
        free_brute(&br);
    }
    printf("violation case (N %lld, seed %llu): active terms C-N %d, CA-C-N %d, C-N-CA %d, "
           "clash pairs %d, within-residue ordered pairs %d; closest masked term to its kink "
           "%.3g (> %g)\n",
           (long long)N, (unsigned long long)seed, br.active_c_n, br.active_ca_c_n,
           br.active_c_n_ca, br.active_clash, br.active_within, br.margin, KINK_MARGIN);
    MF_TEST_TRUE(br.margin > KINK_MARGIN && br.active_c_n > 0 && br.active_ca_c_n > 0 &&
                     br.active_c_n_ca > 0 && br.active_clash > 0 && br.active_within > 0,
                 "violation case: every kind of term must be active and away from its kink");

    /* the f64 reference against the brute force */
    double *work = dalloc(8 * N);
    double *o[7];
    for (int k = 0; k < 7; k++) o[k] = dalloc(N * NA);
    mf_violation_outputs_f64 out = {o[0], o[1], o[2], o[3], o[4], o[5], o[6]};
    mf_violation_terms t;
    mf_structural_violations_f64(&t, &out, work, x, w->atom_exists, w->residue_index, w->aatype,
                                 tab, N);
    double got[8] = {t.bonds_c_n_loss_mean,
                     t.angles_ca_c_n_loss_mean,
                     t.angles_c_n_ca_loss_mean,
                     t.clashes_loss_sum,
                     t.within_residues_loss_sum,
                     t.num_atoms,
                     t.loss,
                     t.clashes_mean_loss};
    /* clashes_mean_loss = sum over pairs / (1e-6 + sum(dists_mask)); the per-atom sums hold each
     * pair twice. */
    double ref[8] = {
        br.c_n,        br.ca_c_n, br.c_n_ca, br.clash_sum,
        br.within_sum, br.atoms,  br.loss,   0.5 * br.clash_sum / (1e-6 + br.clash_count)};
    mf_check_close_f64("violations f64 vs brute force: c_n, ca_c_n, c_n_ca, clash sum, within "
                       "sum, atoms, loss, clash mean",
                       got, ref, 8, BRUTE_ATOL, BRUTE_RTOL);
    mf_check_close_f64("  clashes_per_atom_loss_sum", o[2], br.clash_per_atom, N * NA, BRUTE_ATOL,
                       BRUTE_RTOL);
    mf_check_close_f64("  clashes_per_atom_clash_mask", o[3], br.clash_mask, N * NA, 0, 0);
    mf_check_close_f64("  within per_atom_loss_sum", o[4], br.within_per_atom, N * NA, BRUTE_ATOL,
                       BRUTE_RTOL);
    mf_check_close_f64("  within per_atom_violations", o[5], br.within_viol, N * NA, 0, 0);
    mf_check_close_f64("  connections_per_residue_violation_mask", o[1], br.conn_mask, N, 0, 0);
    mf_check_close_f64("  total_per_residue_violations_mask", o[6], br.total, N, 0, 0);
    mf_violation_metrics met;
    double seq_mask[64];
    for (int64_t i = 0; i < N; i++) seq_mask[i] = w->seq_mask[i];
    seq_mask[3] = 0;
    mf_violation_metrics_f64(&met, x, w->atom_exists, w->residue_index, seq_mask, &out, N);
    double sm = 0, mb = 0, mc = 0, mw = 0, mt = 0;
    for (int64_t i = 0; i < N; i++) {
        double cm = 0, wm = 0;
        for (int a = 0; a < NA; a++)
            cm = fmax(cm, br.clash_mask[i * NA + a]), wm = fmax(wm, br.within_viol[i * NA + a]);
        sm += seq_mask[i], mb += seq_mask[i] * br.conn_mask[i], mc += seq_mask[i] * cm;
        mw += seq_mask[i] * wm, mt += seq_mask[i] * br.total[i];
    }
    double mg[5] = {met.violations_extreme_ca_ca_distance, met.violations_between_residue_bond,
                    met.violations_between_residue_clash, met.violations_within_residue,
                    met.violations_per_residue};
    double mr[5] = {br.extreme_ca_ca, mb / (sm + 1e-10), mc / (sm + 1e-10), mw / (sm + 1e-10),
                    mt / (sm + 1e-10)};
    mf_check_close_f64("violation metrics vs brute force (seq_mask with a zero)", mg, mr, 5, 1e-15,
                       1e-12);
    printf("  metrics: extreme CA-CA %.3f, bond %.3f, clash %.3f, within %.3f, per residue %.3f\n",
           mg[0], mg[1], mg[2], mg[3], mg[4]);

    /* finite differences of the loss w.r.t. every coordinate */
    double loss = 0, gl = 0.83;
    viol_case c = {w, tab, x, &loss, work};
    double *dx = dalloc(nx);
    mf_structural_violation_loss_backward_f64(dx, gl, work, x, w->atom_exists, w->residue_index,
                                              w->aatype, tab, N);
    mf_gc_array in[1] = {{"atom14_pred_positions", x, nx}};
    const double *grads[1] = {dx};
    mf_gc_array outs[1] = {{"violation loss", &loss, 1}};
    const double *gout[1] = {&gl};
    {
        int saved_threads;
        fd_threads_begin(&saved_threads);
        mf_gradcheck("structural violation loss (f64, N 11, chain break, clashes, bond/angle and "
                     "within-residue violations)",
                     viol_fwd, &c, in, grads, 1, outs, gout, 1, MF_TOL_FD_STEP, MF_TOL_FD_ATOL,
                     MF_TOL_FD_RTOL, 0);
        omp_set_num_threads(saved_threads);
    }

    /* f32 tensor path against the f64 reference (same rounded inputs) */
    feats wr;
    window_feats(&wr, w, 0, N);
    round_feats(&wr);
    batch_f32 bf;
    make_batch(&bf, &wr);
    float *xf = to_f32(x, nx), *dxf = calloc((size_t)nx, sizeof(float));
    mf_tensor tx = mf_tensor_f32(xf, 3, N, NA, 3), tdx = mf_tensor_f32(dxf, 3, N, NA, 3);
    mf_violation_terms tf;
    mf_violation_metrics mf32;
    MF_TEST_OK(mf_structural_violations_forward(ctx, &tf, &mf32, &tx, &bf.b, tab));
    float lf = (float)tf.loss;
    mf_check_close_f32_f64("violation loss: f32 tensor path vs f64", &lf, &t.loss, 1,
                           MF_TOL_F32_ATOL, MF_TOL_F32_RTOL);
    MF_TEST_OK(mf_structural_violation_loss_backward(ctx, &tdx, (float)gl, &tx, &bf.b, tab));
    mf_check_close_f32_f64("violation gradient: f32 tensor path vs f64", dxf, dx, nx,
                           MF_TOL_F32_ATOL, MF_TOL_F32_RTOL);
    /* thread-count independence of the f32 path (forward and accumulating backward) */
    int threads = omp_get_max_threads();
    float *dx1 = calloc((size_t)nx, sizeof(float));
    mf_tensor tdx1 = mf_tensor_f32(dx1, 3, N, NA, 3);
    omp_set_num_threads(1);
    mf_violation_terms t1;
    MF_TEST_OK(mf_structural_violations_forward(ctx, &t1, NULL, &tx, &bf.b, tab));
    MF_TEST_OK(mf_structural_violation_loss_backward(ctx, &tdx1, (float)gl, &tx, &bf.b, tab));
    omp_set_num_threads(threads);
    MF_TEST_TRUE(t1.loss == tf.loss, "violation loss differs with 1 thread: %.17g vs %.17g",
                 t1.loss, tf.loss);
    printf("violation loss, 1 thread vs %d: %s\n", threads, t1.loss == tf.loss ? "equal" : "DIFF");
    mf_check_bitwise_f32("violation gradient: 1 thread vs default", dx1, dxf, nx);

    /* invariance under a rigid motion; the gradient turns with it */
    double q[4] = {0.3, -0.5, 0.7, 0.2}, rot[9], tr[3] = {12.5, -30.25, 7.75};
    mf_quat_normalize_f64(q, q, 1);
    mf_quat_to_rot_f64(rot, q, 1);
    double *xm = dalloc(nx), *dxm = dalloc(nx);
    for (int64_t k = 0; k < N * NA; k++) mf_rigid_apply_f64(xm + 3 * k, rot, tr, x + 3 * k, 1);
    mf_violation_terms tm;
    mf_structural_violations_f64(&tm, NULL, work, xm, w->atom_exists, w->residue_index, w->aatype,
                                 tab, N);
    mf_check_close_f64("violation loss invariant under a rigid motion (f64)", &tm.loss, &t.loss, 1,
                       0, INVARIANCE_RTOL_F64);
    mf_structural_violation_loss_backward_f64(dxm, gl, work, xm, w->atom_exists, w->residue_index,
                                              w->aatype, tab, N);
    double *rdx = dalloc(nx), zero3[3] = {0, 0, 0};
    for (int64_t k = 0; k < N * NA; k++) mf_rigid_apply_f64(rdx + 3 * k, rot, zero3, dx + 3 * k, 1);
    mf_check_close_f64("violation gradient turns with the motion (f64)", dxm, rdx, nx,
                       EQUIVARIANCE_ATOL_F64, 1e-8);

    /* NaN is reported, not hidden by the relus */
    xf[3 * 5] = NAN;
    mf_status st = mf_structural_violations_forward(ctx, &tf, NULL, &tx, &bf.b, tab);
    MF_TEST_TRUE(st == MF_ERR_NUMERIC, "a NaN position gave status %d (%s), expected numeric",
                 (int)st, mf_status_name(st));
    printf("NaN position: %s\n", st == MF_ERR_NUMERIC ? mf_last_error() : "NOT REPORTED");

    free(xm), free(dxm), free(rdx), free(dx1), free(xf), free(dxf), free(dx), free(work);
    for (int k = 0; k < 7; k++) free(o[k]);
    free_batch(&bf), free_feats(&wr), free_brute(&br), free(x);
}

/* ---- renaming -------------------------------------------------------------------------------- */

static void test_renaming(mf_ctx *ctx, const feats *f)
{
    const int64_t N = f->N, nx = N * NA * 3;
    double *noise = dalloc(nx), *pred = dalloc(nx);
    mf_test_fill_normal_f64(noise, nx, 77, 0.05);
    double flags[64], expect[64];
    int n_amb = 0;
    for (int64_t i = 0; i < N; i++) {
        double amb = 0;
        for (int a = 0; a < NA; a++) amb += f->ambiguous[i * NA + a] * f->gt_exists[i * NA + a];
        expect[i] = amb > 0 ? 1 : 0;
        n_amb += amb > 0;
    }
    printf("renaming: %d residues with present ambiguous atoms (ASP, GLU, PHE, TYR)\n", n_amb);
    MF_TEST_TRUE(n_amb >= 2, "the protein must have ambiguous residues to rename");
    /* Prediction = the alternative naming (+ 0.05 A): every ambiguous residue flips. */
    for (int64_t k = 0; k < nx; k++) pred[k] = f->alt_pos[k] + noise[k];
    mf_find_optimal_renaming_f64(flags, f->gt_pos, f->alt_pos, f->ambiguous, f->gt_exists, pred, N);
    mf_check_close_f64("renaming: prediction near the alternative -> alt_naming_is_better", flags,
                       expect, N, 0, 0);
    double *rp = dalloc(nx), *re = dalloc(N * NA), *rr = dalloc(N * NG * 9),
           *rt = dalloc(N * NG * 3);
    mf_rename_ground_truth_f64(rp, re, rr, rt, flags, f->gt_pos, f->alt_pos, f->gt_exists,
                               f->alt_exists, f->gt_frames, f->alt_frames, N);
    double *want_p = dalloc(nx), *want_r = dalloc(N * NG * 9), *want_t = dalloc(N * NG * 3);
    for (int64_t i = 0; i < N; i++) {
        const double *src = expect[i] ? f->alt_pos : f->gt_pos;
        memcpy(want_p + i * NA * 3, src + i * NA * 3, sizeof(double) * NA * 3);
        const double *fr = (expect[i] ? f->alt_frames : f->gt_frames) + i * NG * 16;
        for (int g = 0; g < NG; g++)
            for (int r = 0; r < 3; r++) {
                for (int cc = 0; cc < 3; cc++)
                    want_r[(i * NG + g) * 9 + 3 * r + cc] = fr[16 * g + 4 * r + cc];
                want_t[(i * NG + g) * 3 + r] = fr[16 * g + 4 * r + 3];
            }
    }
    mf_check_close_f64("renaming: renamed positions are the alternative's", rp, want_p, nx, 0, 0);
    mf_check_close_f64("renaming: renamed frame rotations are the alternative's", rr, want_r,
                       N * NG * 9, 0, 0);
    mf_check_close_f64("renaming: renamed frame translations", rt, want_t, N * NG * 3, 0, 0);
    /* ... and the alternative frames differ from the originals somewhere (a real test). */
    double fdiff = 0;
    for (int64_t k = 0; k < N * NG * 16; k++)
        fdiff = fmax(fdiff, fabs(f->alt_frames[k] - f->gt_frames[k]));
    printf("  max |alt - gt| over the frames: %.3f\n", fdiff);
    MF_TEST_TRUE(fdiff > 0.1, "alternative frames equal the originals: renaming untested");
    /* Prediction = the ground truth (+ 0.05 A): nothing flips. */
    for (int64_t k = 0; k < nx; k++) pred[k] = f->gt_pos[k] + noise[k];
    mf_find_optimal_renaming_f64(flags, f->gt_pos, f->alt_pos, f->ambiguous, f->gt_exists, pred, N);
    double zeros[64] = {0};
    mf_check_close_f64("renaming: prediction near the truth -> no renaming", flags, zeros, N, 0, 0);
    /* Distances only: a rigid motion of the prediction changes nothing. */
    double q[4] = {0.1, 0.9, -0.3, 0.2}, rot[9], tr[3] = {-4, 9, 21}, flags2[64];
    mf_quat_normalize_f64(q, q, 1);
    mf_quat_to_rot_f64(rot, q, 1);
    for (int64_t k = 0; k < nx; k++) pred[k] = f->alt_pos[k] + noise[k];
    double *pm = dalloc(nx);
    for (int64_t k = 0; k < N * NA; k++) mf_rigid_apply_f64(pm + 3 * k, rot, tr, pred + 3 * k, 1);
    mf_find_optimal_renaming_f64(flags2, f->gt_pos, f->alt_pos, f->ambiguous, f->gt_exists, pm, N);
    mf_check_close_f64("renaming: invariant under a rigid motion of the prediction", flags2, expect,
                       N, 0, 0);
    /* f32 tensor entry point */
    batch_f32 bf;
    make_batch(&bf, f);
    float *pf = to_f32(pred, nx), *o[5];
    int64_t sizes[5] = {N, nx, N * NA, N * NG * 9, N * NG * 3};
    for (int k = 0; k < 5; k++) o[k] = calloc((size_t)sizes[k], sizeof(float));
    mf_renamed_ground_truth gt = {
        mf_tensor_f32(o[0], 1, N), mf_tensor_f32(o[1], 3, N, NA, 3), mf_tensor_f32(o[2], 2, N, NA),
        mf_tensor_f32(o[3], 4, N, NG, 3, 3), mf_tensor_f32(o[4], 3, N, NG, 3)};
    mf_tensor tp = mf_tensor_f32(pf, 3, N, NA, 3);
    MF_TEST_OK(mf_compute_renamed_ground_truth(ctx, &gt, &tp, &bf.b));
    mf_check_close_f32_f64("renaming: f32 tensor path flags", o[0], expect, N, 0, 0);
    mf_check_close_f32_f64("renaming: f32 renamed frame rotations", o[3], want_r, N * NG * 9, 1e-7,
                           1e-6);
    for (int k = 0; k < 5; k++) free(o[k]);
    free(pf), free_batch(&bf);
    free(pm), free(rp), free(re), free(rr), free(rt), free(want_p), free(want_r), free(want_t);
    free(noise), free(pred);
}

/* ---- side-chain and backbone FAPE ------------------------------------------------------------ */

typedef struct {
    int64_t N, L;
    double use_clamped;
    double *rot, *trans, *pos, *gr, *gt, *fm, *gp, *pm, *loss, *work;
} fape_case;

static void sc_fwd(void *ud)
{
    fape_case *c = ud;
    mf_sidechain_fape_f64(c->loss, c->work, c->rot, c->trans, c->pos, c->gr, c->gt, c->fm, c->gp,
                          c->pm, c->N, 10.0, 10.0, 1e-4);
}

static void bb_fwd(void *ud)
{
    fape_case *c = ud;
    mf_backbone_fape_f64(c->loss, NULL, c->work, c->rot, c->trans, c->gr, c->gt, c->fm, c->L, c->N,
                         c->use_clamped, 10.0, 10.0, 1e-4);
}

/* rot_out = R(small random turn of sd `ang`) rot_in, for n frames. */
static void turn_frames(double *rot_out, const double *rot_in, int64_t n, double ang, uint64_t seed)
{
    double *q = dalloc(4 * n), *r = dalloc(9 * n);
    mf_test_fill_normal_f64(q, 4 * n, seed, ang);
    for (int64_t i = 0; i < n; i++) q[4 * i] = 1.0;
    mf_quat_normalize_f64(q, q, n);
    mf_quat_to_rot_f64(r, q, n);
    for (int64_t i = 0; i < n; i++)
        for (int a = 0; a < 3; a++)
            for (int b = 0; b < 3; b++) {
                double s = 0;
                for (int k = 0; k < 3; k++) s += r[9 * i + 3 * a + k] * rot_in[9 * i + 3 * k + b];
                rot_out[9 * i + 3 * a + b] = s;
            }
    free(q), free(r);
}

/* Unmasked pairs below / beyond the clamp and the closest |d - 10|. */
static void fape_pairs(const double *rot, const double *trans, const double *pos, const double *gr,
                       const double *gt, const double *fm, const double *gp, const double *pm,
                       int64_t F, int64_t P, int *below, int *beyond, double *margin)
{
    for (int64_t i = 0; i < F; i++)
        for (int64_t j = 0; j < P; j++) {
            if (fm[i] == 0 || pm[j] == 0) continue;
            double lp[3], lt[3];
            mf_rigid_apply_inverse_f64(lp, rot + 9 * i, trans + 3 * i, pos + 3 * j, 1);
            mf_rigid_apply_inverse_f64(lt, gr + 9 * i, gt + 3 * i, gp + 3 * j, 1);
            double d = dist3(lp, lt, 1e-4);
            *below += d <= 10.0;
            *beyond += d > 10.0;
            *margin = fmin(*margin, fabs(d - 10.0));
        }
}

static void test_sidechain_fape(mf_ctx *ctx, const feats *w)
{
    const int64_t N = w->N, F = N * NG, P = N * NA;
    fape_case c = {.N = N, .L = 1};
    c.gr = dalloc(9 * F), c.gt = dalloc(3 * F), c.gp = dalloc(3 * P), c.pm = dalloc(P);
    double flags[64] = {0};
    flags[2] = 1; /* residue 15 (ASP) takes the alternative naming */
    mf_rename_ground_truth_f64(c.gp, c.pm, c.gr, c.gt, flags, w->gt_pos, w->alt_pos, w->gt_exists,
                               w->alt_exists, w->gt_frames, w->alt_frames, N);
    c.fm = dcopy(w->group_exists, F);
    c.rot = dalloc(9 * F), c.trans = dalloc(3 * F), c.pos = dalloc(3 * P);
    c.loss = dalloc(1), c.work = dalloc(2 * F);
    int below = 0, beyond = 0;
    double margin = INFINITY;
    uint64_t seed;
    for (seed = 300; seed < 340; seed++) {
        turn_frames(c.rot, c.gr, F, 0.1, seed);
        mf_test_fill_normal_f64(c.trans, 3 * F, seed + 1000, 0.5);
        mf_test_fill_normal_f64(c.pos, 3 * P, seed + 2000, 0.4);
        for (int64_t k = 0; k < 3 * F; k++) c.trans[k] += c.gt[k];
        for (int64_t k = 0; k < 3 * P; k++) c.pos[k] += c.gp[k];
        for (int k = 0; k < 3; k++) c.pos[3 * (4 * NA + 1) + k] += 9.0; /* far: clamped pairs */
        below = beyond = 0;
        margin = INFINITY;
        fape_pairs(c.rot, c.trans, c.pos, c.gr, c.gt, c.fm, c.gp, c.pm, F, P, &below, &beyond,
                   &margin);
        if (margin > KINK_MARGIN && beyond > 0) break;
    }
    printf("side-chain FAPE case (N %lld: %lld frames x %lld atoms, seed %llu): %d unmasked pairs "
           "below the 10 A clamp, %d beyond, closest |d - 10| %.3g\n",
           (long long)N, (long long)F, (long long)P, (unsigned long long)seed, below, beyond,
           margin);
    MF_TEST_TRUE(margin > KINK_MARGIN && beyond > 0 && below > 0,
                 "side-chain FAPE case needs pairs on both sides of the clamp, none at it");
    double gl = -1.3;
    double *dr = dalloc(9 * F), *dt = dalloc(3 * F), *dp = dalloc(3 * P);
    mf_sidechain_fape_backward_f64(dr, dt, dp, gl, c.rot, c.trans, c.pos, c.gr, c.gt, c.fm, c.gp,
                                   c.pm, N, 10.0, 10.0, 1e-4);
    mf_gc_array in[3] = {{"pred_rot", c.rot, 9 * F},
                         {"pred_trans", c.trans, 3 * F},
                         {"pred_positions", c.pos, 3 * P}};
    const double *grads[3] = {dr, dt, dp};
    mf_gc_array out[1] = {{"sidechain fape", c.loss, 1}};
    const double *gout[1] = {&gl};
    {
        int saved_threads;
        fd_threads_begin(&saved_threads);
        mf_gradcheck("side-chain FAPE (f64, N 11, renamed ground truth, group mask with zeros)",
                     sc_fwd, &c, in, grads, 3, out, gout, 1, MF_TOL_FD_STEP, MF_TOL_FD_ATOL,
                     MF_TOL_FD_RTOL, 0);
        omp_set_num_threads(saved_threads);
    }
    /* f32 tensor path */
    round_f32(c.rot, 9 * F), round_f32(c.trans, 3 * F), round_f32(c.pos, 3 * P);
    round_f32(c.gr, 9 * F), round_f32(c.gt, 3 * F), round_f32(c.gp, 3 * P);
    sc_fwd(&c);
    memset(dp, 0, sizeof(double) * (size_t)(3 * P));
    memset(dr, 0, sizeof(double) * (size_t)(9 * F));
    mf_sidechain_fape_backward_f64(dr, NULL, dp, gl, c.rot, c.trans, c.pos, c.gr, c.gt, c.fm, c.gp,
                                   c.pm, N, 10.0, 10.0, 1e-4);
    feats wr;
    window_feats(&wr, w, 0, N);
    round_feats(&wr);
    batch_f32 bf;
    make_batch(&bf, &wr);
    float *fr = to_f32(c.rot, 9 * F), *ft = to_f32(c.trans, 3 * F), *fp = to_f32(c.pos, 3 * P);
    float *g0 = to_f32(flags, N), *g1 = to_f32(c.gp, 3 * P), *g2 = to_f32(c.pm, P);
    float *g3 = to_f32(c.gr, 9 * F), *g4 = to_f32(c.gt, 3 * F);
    mf_renamed_ground_truth gt = {mf_tensor_f32(g0, 1, N), mf_tensor_f32(g1, 3, N, NA, 3),
                                  mf_tensor_f32(g2, 2, N, NA), mf_tensor_f32(g3, 4, N, NG, 3, 3),
                                  mf_tensor_f32(g4, 3, N, NG, 3)};
    mf_tensor tr = mf_tensor_f32(fr, 4, N, NG, 3, 3), tt = mf_tensor_f32(ft, 3, N, NG, 3);
    mf_tensor tp = mf_tensor_f32(fp, 3, N, NA, 3);
    mf_fape_options opt = mf_fape_default_options();
    float lf;
    MF_TEST_OK(mf_sidechain_fape_forward(ctx, &lf, &tr, &tt, &tp, &gt, &bf.b, &opt));
    mf_check_close_f32_f64("side-chain FAPE: f32 tensor path vs f64", &lf, c.loss, 1,
                           MF_TOL_F32_ATOL, MF_TOL_F32_RTOL);
    float *fdp = calloc((size_t)(3 * P), sizeof(float)), *fdr = calloc((size_t)(9 * F), 4);
    mf_tensor tdp = mf_tensor_f32(fdp, 3, N, NA, 3), tdr = mf_tensor_f32(fdr, 4, N, NG, 3, 3);
    MF_TEST_OK(mf_sidechain_fape_backward(ctx, &tdr, NULL, &tdp, (float)gl, &tr, &tt, &tp, &gt,
                                          &bf.b, &opt));
    mf_check_close_f32_f64("side-chain FAPE d/d positions: f32 vs f64", fdp, dp, 3 * P,
                           MF_TOL_F32_ATOL, MF_TOL_F32_RTOL);
    mf_check_close_f32_f64("side-chain FAPE d/d frame rotations: f32 vs f64", fdr, dr, 9 * F,
                           MF_TOL_F32_ATOL, MF_TOL_F32_RTOL);
    /* shape errors name the tensor */
    mf_tensor bad = mf_tensor_f32(fp, 3, N, 13, 3);
    mf_status st = mf_sidechain_fape_forward(ctx, &lf, &tr, &tt, &bad, &gt, &bf.b, &opt);
    MF_TEST_TRUE(st == MF_ERR_INVALID && strstr(mf_last_error(), "pred_positions"),
                 "a [N, 13, 3] position tensor was not refused by name (%s)", mf_last_error());
    free(fr), free(ft), free(fp), free(g0), free(g1), free(g2), free(g3), free(g4), free(fdp);
    free(fdr), free_batch(&bf), free_feats(&wr);
    free(dr), free(dt), free(dp), free(c.gr), free(c.gt), free(c.gp), free(c.pm), free(c.fm);
    free(c.rot), free(c.trans), free(c.pos), free(c.loss), free(c.work);
}

static void test_backbone_fape(mf_ctx *ctx, const feats *w)
{
    const int64_t N = w->N, L = 2;
    fape_case c = {.N = N, .L = L, .use_clamped = 0.3};
    c.gr = dalloc(9 * N), c.gt = dalloc(3 * N), c.fm = dcopy(w->bb_mask, N);
    c.fm[5] = 0;
    for (int64_t i = 0; i < N; i++)
        for (int r = 0; r < 3; r++) {
            for (int k = 0; k < 3; k++) c.gr[9 * i + 3 * r + k] = w->bb_rigid[16 * i + 4 * r + k];
            c.gt[3 * i + r] = w->bb_rigid[16 * i + 4 * r + 3];
        }
    c.rot = dalloc(9 * N * L), c.trans = dalloc(3 * N * L), c.loss = dalloc(1);
    c.work = dalloc(2 * N);
    int below = 0, beyond = 0;
    double margin = INFINITY;
    uint64_t seed;
    for (seed = 500; seed < 540; seed++) {
        below = beyond = 0;
        margin = INFINITY;
        for (int64_t l = 0; l < L; l++) {
            turn_frames(c.rot + 9 * N * l, c.gr, N, 0.15, seed + 10 * l);
            mf_test_fill_normal_f64(c.trans + 3 * N * l, 3 * N, seed + 10 * l + 1, 1.5);
            for (int64_t k = 0; k < 3 * N; k++) c.trans[3 * N * l + k] += c.gt[k];
            c.trans[3 * N * l + 3 * 7] += 8.0;
            fape_pairs(c.rot + 9 * N * l, c.trans + 3 * N * l, c.trans + 3 * N * l, c.gr, c.gt,
                       c.fm, c.gt, c.fm, N, N, &below, &beyond, &margin);
        }
        if (margin > KINK_MARGIN && beyond > 0) break;
    }
    printf("backbone FAPE case (L %lld, N %lld, use_clamped_fape 0.3, seed %llu): %d pairs below "
           "10 A, %d beyond, closest |d - 10| %.3g\n",
           (long long)L, (long long)N, (unsigned long long)seed, below, beyond, margin);
    MF_TEST_TRUE(margin > KINK_MARGIN && beyond > 0 && below > 0,
                 "backbone FAPE case needs pairs on both sides of the clamp, none at it");
    double gl = 0.9;
    double *dr = dalloc(9 * N * L), *dt = dalloc(3 * N * L);
    mf_backbone_fape_backward_f64(dr, dt, gl, c.rot, c.trans, c.gr, c.gt, c.fm, L, N, 0.3, 10.0,
                                  10.0, 1e-4);
    mf_gc_array in[2] = {{"pred_rot", c.rot, 9 * N * L}, {"pred_trans", c.trans, 3 * N * L}};
    const double *grads[2] = {dr, dt};
    mf_gc_array out[1] = {{"backbone fape", c.loss, 1}};
    const double *gout[1] = {&gl};
    {
        int saved_threads;
        fd_threads_begin(&saved_threads);
        mf_gradcheck("backbone FAPE over 2 layers (f64, 0.3 clamped + 0.7 unclamped, mask with a "
                     "zero)",
                     bb_fwd, &c, in, grads, 2, out, gout, 1, MF_TOL_FD_STEP, MF_TOL_FD_ATOL,
                     MF_TOL_FD_RTOL, 0);
        omp_set_num_threads(saved_threads);
    }
    /* the mix: use_clamped 1 and 0 bracket it linearly */
    double l1, l0, l3, last;
    mf_backbone_fape_f64(&l1, NULL, c.work, c.rot, c.trans, c.gr, c.gt, c.fm, L, N, 1.0, 10, 10,
                         1e-4);
    mf_backbone_fape_f64(&l0, NULL, c.work, c.rot, c.trans, c.gr, c.gt, c.fm, L, N, 0.0, 10, 10,
                         1e-4);
    mf_backbone_fape_f64(&l3, &last, c.work, c.rot, c.trans, c.gr, c.gt, c.fm, L, N, 0.3, 10, 10,
                         1e-4);
    double mix = 0.3 * l1 + 0.7 * l0;
    mf_check_close_f64("backbone FAPE: 0.3 clamped + 0.7 unclamped", &l3, &mix, 1, 0, 1e-14);
    MF_TEST_TRUE(l0 > l1, "unclamped backbone FAPE %g must exceed the clamped %g here", l0, l1);
    /* f32 tensor path (ground truth as the 4x4 feature) */
    round_f32(c.rot, 9 * N * L), round_f32(c.trans, 3 * N * L);
    feats wr;
    window_feats(&wr, w, 0, N);
    wr.bb_mask[5] = 0;
    round_feats(&wr);
    for (int64_t i = 0; i < N; i++)
        for (int r = 0; r < 3; r++) {
            for (int k = 0; k < 3; k++) c.gr[9 * i + 3 * r + k] = wr.bb_rigid[16 * i + 4 * r + k];
            c.gt[3 * i + r] = wr.bb_rigid[16 * i + 4 * r + 3];
        }
    mf_backbone_fape_f64(&l3, &last, c.work, c.rot, c.trans, c.gr, c.gt, c.fm, L, N, 0.3, 10, 10,
                         1e-4);
    memset(dt, 0, sizeof(double) * (size_t)(3 * N * L));
    mf_backbone_fape_backward_f64(NULL, dt, gl, c.rot, c.trans, c.gr, c.gt, c.fm, L, N, 0.3, 10.0,
                                  10.0, 1e-4);
    batch_f32 bf;
    make_batch(&bf, &wr);
    float *fr = to_f32(c.rot, 9 * N * L), *ft = to_f32(c.trans, 3 * N * L);
    float *fdt = calloc((size_t)(3 * N * L), sizeof(float));
    mf_tensor tr = mf_tensor_f32(fr, 4, L, N, 3, 3), tt = mf_tensor_f32(ft, 3, L, N, 3);
    mf_tensor tdt = mf_tensor_f32(fdt, 3, L, N, 3);
    mf_fape_options opt = mf_fape_default_options();
    float lf, lastf;
    MF_TEST_OK(mf_backbone_fape_forward(ctx, &lf, &lastf, &tr, &tt, &bf.b, 0.3f, &opt));
    mf_check_close_f32_f64("backbone FAPE: f32 tensor path vs f64", &lf, &l3, 1, MF_TOL_F32_ATOL,
                           MF_TOL_F32_RTOL);
    mf_check_close_f32_f64("backbone FAPE: last layer, f32 vs f64", &lastf, &last, 1,
                           MF_TOL_F32_ATOL, MF_TOL_F32_RTOL);
    MF_TEST_OK(mf_backbone_fape_backward(ctx, NULL, &tdt, (float)gl, &tr, &tt, &bf.b, 0.3f, &opt));
    mf_check_close_f32_f64("backbone FAPE d/d translations: f32 vs f64", fdt, dt, 3 * N * L,
                           MF_TOL_F32_ATOL, MF_TOL_F32_RTOL);
    free(fr), free(ft), free(fdt), free_batch(&bf), free_feats(&wr);
    free(dr), free(dt), free(c.gr), free(c.gt), free(c.fm), free(c.rot), free(c.trans);
    free(c.loss), free(c.work);
}

/* ---- supervised chi -------------------------------------------------------------------------- */

typedef struct {
    const feats *w;
    int64_t L;
    double *ang, *un, *seq_mask, *loss;
} chi_case;

static void chi_fwd(void *ud)
{
    chi_case *c = ud;
    mf_supervised_chi_loss_f64(c->loss, NULL, NULL, c->ang, c->un, c->w->aatype, c->seq_mask,
                               c->w->chi_mask, c->w->chi_sc, c->L, c->w->N, 0.5, 0.01);
}

static void test_chi(mf_ctx *ctx, const feats *w)
{
    const int64_t N = w->N, L = 2, n = L * N * 14;
    chi_case c = {.w = w, .L = L};
    c.ang = dalloc(n), c.un = dalloc(n), c.seq_mask = dcopy(w->seq_mask, N), c.loss = dalloc(1);
    c.seq_mask[4] = 0;
    double margin = INFINITY;
    int shifted = 0, periodic = 0, masked_chis = 0;
    uint64_t seed;
    for (seed = 700; seed < 740; seed++) {
        mf_test_fill_normal_f64(c.ang, n, seed, 1.0);
        mf_test_fill_normal_f64(c.un, n, seed + 1, 0.8);
        for (int64_t k = 0; k < n / 2; k++) {
            double r = hypot(c.ang[2 * k], c.ang[2 * k + 1]);
            c.ang[2 * k] /= r, c.ang[2 * k + 1] /= r;
        }
        margin = INFINITY, shifted = periodic = masked_chis = 0;
        for (int64_t l = 0; l < L; l++)
            for (int64_t i = 0; i < N; i++) {
                for (int ch = 0; ch < 4; ch++) {
                    if (w->chi_mask[i * 4 + ch] == 0) continue;
                    masked_chis++;
                    if (mf_chi_pi_periodic[w->aatype[i]][ch] == 0) continue;
                    const double *p = c.ang + 2 * ((l * N + i) * 7 + 3 + ch);
                    const double *t = w->chi_sc + 2 * (i * 4 + ch);
                    double e0 = (t[0] - p[0]) * (t[0] - p[0]) + (t[1] - p[1]) * (t[1] - p[1]);
                    double e1 = (t[0] + p[0]) * (t[0] + p[0]) + (t[1] + p[1]) * (t[1] + p[1]);
                    margin = fmin(margin, fabs(e0 - e1));
                    periodic++;
                    shifted += e1 < e0;
                }
                if (c.seq_mask[i] == 0) continue;
                for (int k = 0; k < 7; k++) {
                    const double *u = c.un + 2 * ((l * N + i) * 7 + k);
                    margin = fmin(margin, fabs(sqrt(u[0] * u[0] + u[1] * u[1] + 1e-6) - 1.0));
                }
            }
        if (margin > KINK_MARGIN && shifted > 0 && shifted < periodic) break;
    }
    printf("chi case (L 2, N 11, seed %llu): %d masked chis, %d pi-periodic of which %d read "
           "through -truth; closest min()/|.| decision to its kink %.3g\n",
           (unsigned long long)seed, masked_chis, periodic, shifted, margin);
    MF_TEST_TRUE(margin > KINK_MARGIN && shifted > 0 && shifted < periodic,
                 "chi case needs both branches of the pi-periodic minimum, away from the kink");
    double gl = 1.7, *da = dalloc(n), *du = dalloc(n);
    mf_supervised_chi_loss_backward_f64(da, du, gl, c.ang, c.un, w->aatype, c.seq_mask, w->chi_mask,
                                        w->chi_sc, L, N, 0.5, 0.01);
    mf_gc_array in[2] = {{"angles_sin_cos", c.ang, n}, {"unnormalized_angles_sin_cos", c.un, n}};
    const double *grads[2] = {da, du};
    mf_gc_array out[1] = {{"supervised chi loss", c.loss, 1}};
    const double *gout[1] = {&gl};
    {
        int saved_threads;
        fd_threads_begin(&saved_threads);
        mf_gradcheck("supervised chi loss (f64, L 2, N 11, chi mask and seq mask with zeros)",
                     chi_fwd, &c, in, grads, 2, out, gout, 1, MF_TOL_FD_STEP, MF_TOL_FD_ATOL,
                     MF_TOL_FD_RTOL, 0);
        omp_set_num_threads(saved_threads);
    }
    /* f32 tensor path */
    round_f32(c.ang, n), round_f32(c.un, n);
    feats wr;
    window_feats(&wr, w, 0, N);
    wr.seq_mask[4] = 0;
    round_feats(&wr);
    c.w = &wr;
    memcpy(c.seq_mask, wr.seq_mask, sizeof(double) * (size_t)N);
    double cl, al;
    mf_supervised_chi_loss_f64(c.loss, &cl, &al, c.ang, c.un, wr.aatype, c.seq_mask, wr.chi_mask,
                               wr.chi_sc, L, N, 0.5, 0.01);
    memset(da, 0, sizeof(double) * (size_t)n), memset(du, 0, sizeof(double) * (size_t)n);
    mf_supervised_chi_loss_backward_f64(da, du, gl, c.ang, c.un, wr.aatype, c.seq_mask, wr.chi_mask,
                                        wr.chi_sc, L, N, 0.5, 0.01);
    batch_f32 bf;
    make_batch(&bf, &wr);
    float *fa = to_f32(c.ang, n), *fu = to_f32(c.un, n);
    float *fda = calloc((size_t)n, sizeof(float)), *fdu = calloc((size_t)n, sizeof(float));
    mf_tensor ta = mf_tensor_f32(fa, 4, L, N, 7, 2), tu = mf_tensor_f32(fu, 4, L, N, 7, 2);
    mf_tensor tda = mf_tensor_f32(fda, 4, L, N, 7, 2), tdu = mf_tensor_f32(fdu, 4, L, N, 7, 2);
    float lf, clf, alf;
    MF_TEST_OK(mf_supervised_chi_loss_forward(ctx, &lf, &clf, &alf, &ta, &tu, &bf.b, 0.5f, 0.01f));
    float fv[3] = {lf, clf, alf};
    double dv[3] = {*c.loss, cl, al};
    mf_check_close_f32_f64("chi loss, chi part, angle-norm part: f32 tensor path vs f64", fv, dv, 3,
                           MF_TOL_F32_ATOL, MF_TOL_F32_RTOL);
    MF_TEST_OK(
        mf_supervised_chi_loss_backward(ctx, &tda, &tdu, (float)gl, &ta, &tu, &bf.b, 0.5f, 0.01f));
    mf_check_close_f32_f64("chi loss d/d angles: f32 vs f64", fda, da, n, MF_TOL_F32_ATOL,
                           MF_TOL_F32_RTOL);
    mf_check_close_f32_f64("chi loss d/d unnormalised angles: f32 vs f64", fdu, du, n,
                           MF_TOL_F32_ATOL, MF_TOL_F32_RTOL);
    /* a restype outside 0..20 is refused */
    int32_t keep = wr.aatype[1];
    wr.aatype[1] = 21;
    mf_status st =
        mf_supervised_chi_loss_forward(ctx, &lf, NULL, NULL, &ta, &tu, &bf.b, 0.5f, 0.01f);
    MF_TEST_TRUE(st == MF_ERR_INVALID && strstr(mf_last_error(), "aatype"),
                 "aatype 21 not refused (%s)", mf_last_error());
    wr.aatype[1] = keep;
    free(fa), free(fu), free(fda), free(fdu), free_batch(&bf), free_feats(&wr);
    free(da), free(du), free(c.ang), free(c.un), free(c.seq_mask), free(c.loss);
}

/* ---- train_expected.h5 --------------------------------------------------------------------- */

/* rigids_from_3_points (Gram-Schmidt): x along origin - p_neg_x, p_xy in the xy plane (y > 0). */
static void frame_from_3_points(double *rot, double *trans, const double *p_neg_x,
                                const double *origin, const double *p_xy)
{
    double e0[3], e1[3], e2[3], n0 = 0, dp = 0, n1 = 0;
    for (int k = 0; k < 3; k++) e0[k] = origin[k] - p_neg_x[k], n0 += e0[k] * e0[k];
    for (int k = 0; k < 3; k++) e0[k] /= sqrt(n0);
    for (int k = 0; k < 3; k++) e1[k] = p_xy[k] - origin[k], dp += e1[k] * e0[k];
    for (int k = 0; k < 3; k++) e1[k] -= dp * e0[k], n1 += e1[k] * e1[k];
    for (int k = 0; k < 3; k++) e1[k] /= sqrt(n1);
    e2[0] = e0[1] * e1[2] - e0[2] * e1[1];
    e2[1] = e0[2] * e1[0] - e0[0] * e1[2];
    e2[2] = e0[0] * e1[1] - e0[1] * e1[0];
    for (int r = 0; r < 3; r++) {
        rot[3 * r + 0] = e0[r], rot[3 * r + 1] = e1[r], rot[3 * r + 2] = e2[r];
        trans[r] = origin[r];
    }
}

/* The three atoms fixing group g (3: psi, 4..7: chi1..4) of restype r and the atom whose
 * literature position lies in the group's xy plane; false when the group does not exist. */
static bool group_atoms(int r, int g, int idx[3])
{
    if (g == 3) {
        idx[0] = mf_atom14_index(r, "CA"), idx[1] = mf_atom14_index(r, "C");
        idx[2] = mf_atom14_index(r, "O");
        return true;
    }
    int chi = g - 4;
    if (!mf_chi_angles_mask[r][chi]) return false;
    for (int k = 1; k < 4; k++) idx[k - 1] = mf_atom14_index(r, mf_chi_angle_atom_name(r, chi, k));
    return true;
}

/* AF2 places every atom of a group from its frame; the group's frame is therefore fixed by
 * three of its atoms: origin at the second, x along first -> second, the third (literature
 * position z = 0, y > 0, checked here) in the xy plane. */
static bool rebuild_group_frames(double *rot, double *trans, const double *bb_rot,
                                 const double *bb_trans, const double *x, const int32_t *aatype,
                                 int64_t N, double *max_err)
{
    bool ok = true;
    *max_err = 0;
    for (int64_t i = 0; i < N; i++) {
        int r = aatype[i];
        for (int g = 0; g < NG; g++) {
            double *R = rot + 9 * (i * NG + g), *t = trans + 3 * (i * NG + g);
            memset(R, 0, 9 * sizeof(double));
            memset(t, 0, 3 * sizeof(double));
            R[0] = R[4] = R[8] = 1;
            int idx[3];
            if (g == 0) {
                memcpy(R, bb_rot + 9 * i, 9 * sizeof(double));
                memcpy(t, bb_trans + 3 * i, 3 * sizeof(double));
            } else if (g >= 3 && r < MF_NUM_RESTYPES && group_atoms(r, g, idx)) {
                frame_from_3_points(R, t, x + 3 * (i * NA + idx[0]), x + 3 * (i * NA + idx[1]),
                                    x + 3 * (i * NA + idx[2]));
            } else {
                continue;
            }
            /* every atom of the group must sit at frame * literature position */
            int na = 0;
            const mf_rigid_group_atom *lit = mf_rigid_group_atom_positions(r, &na);
            for (int k = 0; k < na; k++) {
                if (lit[k].group != g) continue;
                if (g >= 3 && !strcmp(lit[k].atom_name, mf_atom14_name(r, idx[2])) &&
                    !(fabs(lit[k].position[2]) < 1e-3 && lit[k].position[1] > 0))
                    ok = false;
                double y[3];
                mf_rigid_apply_f64(y, R, t, lit[k].position, 1);
                int a = mf_atom14_index(r, lit[k].atom_name);
                *max_err = fmax(*max_err, dist3(y, x + 3 * (i * NA + a), 0));
            }
        }
    }
    return ok;
}

static double read_scalar(hid_t h, const char *label, const char *name)
{
    double *v = read_any(h, label, name, 1, false);
    double s = v ? v[0] : NAN;
    free(v);
    return s;
}

static void test_train_expected(mf_ctx *ctx, const feats *f, const mf_violation_tables *tab)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/testvectors/train_expected.h5", mf_test_shared_dir());
    hid_t h;
    mf_status st = mf_h5_open_read(path, &h);
    MF_TEST_TRUE(st == MF_OK, "%s: %s", path, mf_last_error());
    if (st != MF_OK) return;
    const int64_t N = f->N, L = 2;
    double ref_viol = read_scalar(h, path, "loss/violation");
    double ref_fape = read_scalar(h, path, "loss/fape");
    double ref_fape_u = read_scalar(h, path, "loss_unclamped/fape");
    double *x37 = read_any(h, path, "train_outputs/final_atom_positions", N * 37 * 3, false);
    double *frames = read_any(h, path, "train_outputs/sm/frames", L * N * 7, false);
    double *pos = read_any(h, path, "train_outputs/sm/positions", L * N * NA * 3, false);
    bool has_angles = mf_h5_exists(h, "train_outputs/sm/angles");
    H5Fclose(h);
    if (!x37 || !frames || !pos) goto done;

    /* atom37 -> atom14 through residx_atom14_to_atom37, masked by atom14_atom_exists */
    double *x14 = dalloc(N * NA * 3), dmax = 0;
    const double *last = pos + (L - 1) * N * NA * 3;
    for (int64_t i = 0; i < N; i++)
        for (int a = 0; a < NA; a++) {
            if (f->atom_exists[i * NA + a] == 0) continue;
            for (int k = 0; k < 3; k++) {
                x14[3 * (i * NA + a) + k] = x37[3 * (i * 37 + f->r14to37[i * NA + a]) + k];
                dmax = fmax(dmax, fabs(x14[3 * (i * NA + a) + k] - last[3 * (i * NA + a) + k]));
            }
        }
    printf("train_outputs: atom37 -> atom14 of final_atom_positions vs sm/positions[last]: max "
           "|diff| %.3g A\n",
           dmax);
    MF_TEST_TRUE(dmax <= 1e-5, "final_atom_positions and the last sm/positions disagree (%g A)",
                 dmax);

    /* loss/violation: the f32 tensor path, rtol 1e-4 (README) */
    batch_f32 bf;
    make_batch(&bf, f);
    float *xf = to_f32(x14, N * NA * 3);
    mf_tensor tx = mf_tensor_f32(xf, 3, N, NA, 3);
    mf_violation_terms t;
    mf_violation_metrics met;
    MF_TEST_OK(mf_structural_violations_forward(ctx, &t, &met, &tx, &bf.b, tab));
    double *work = dalloc(8 * N);
    mf_violation_terms t64;
    mf_structural_violations_f64(&t64, NULL, work, x14, f->atom_exists, f->residue_index, f->aatype,
                                 tab, N);
    printf("loss/violation: memfold %.7g, reference %.7g (rel %.2e, tol %.0e)\n", t.loss, ref_viol,
           rel_err(t.loss, ref_viol), MF_TOL_VEC_MODEL);
    mf_test_count(rel_err(t.loss, ref_viol) <= MF_TOL_VEC_MODEL);
    if (!(rel_err(t.loss, ref_viol) <= MF_TOL_VEC_MODEL))
        mf_test_fail("loss/violation: %.9g vs reference %.9g", t.loss, ref_viol);
    printf("AF2 loss/violation of the training pass: f32 %.7g, f64 %.7g\n"
           "  = C-N %.5g + CA-C-N %.5g + C-N-CA %.5g + (clash %.5g + within %.5g) / (1e-6 + %g "
           "atoms)\n"
           "  metrics: extreme CA-CA %.3f, bond %.3f, clash %.3f, within %.3f, per residue %.3f\n",
           t.loss, t64.loss, t.bonds_c_n_loss_mean, t.angles_ca_c_n_loss_mean,
           t.angles_c_n_ca_loss_mean, t.clashes_loss_sum, t.within_residues_loss_sum, t.num_atoms,
           met.violations_extreme_ca_ca_distance, met.violations_between_residue_bond,
           met.violations_between_residue_clash, met.violations_within_residue,
           met.violations_per_residue);
    mf_check_close_f64("AF2 loss/violation of the training pass: f32 vs f64", &t.loss, &t64.loss, 1,
                       MF_TOL_F32_ATOL, MF_TOL_F32_RTOL);

    /* loss/fape = 0.5 backbone (mean over the layers) + 0.5 side chain (last layer) */
    double *bb_rot = dalloc(9 * N * L), *bb_trans = dalloc(3 * N * L);
    for (int64_t k = 0; k < N * L; k++) {
        mf_quat_to_rot_f64(bb_rot + 9 * k, frames + 7 * k, 1);
        memcpy(bb_trans + 3 * k, frames + 7 * k + 4, 3 * sizeof(double));
    }
    double *gr = dalloc(9 * N), *gtr = dalloc(3 * N);
    for (int64_t i = 0; i < N; i++)
        for (int r = 0; r < 3; r++) {
            for (int k = 0; k < 3; k++) gr[9 * i + 3 * r + k] = f->bb_rigid[16 * i + 4 * r + k];
            gtr[3 * i + r] = f->bb_rigid[16 * i + 4 * r + 3];
        }
    double bb_c, bb_u, bwork[64];
    mf_backbone_fape_f64(&bb_c, NULL, bwork, bb_rot, bb_trans, gr, gtr, f->bb_mask, L, N, 1.0, 10.0,
                         10.0, 1e-4);
    mf_backbone_fape_f64(&bb_u, NULL, bwork, bb_rot, bb_trans, gr, gtr, f->bb_mask, L, N, 0.0, 10.0,
                         10.0, 1e-4);
    double flags[64], *rp = dalloc(N * NA * 3), *re = dalloc(N * NA), *rr = dalloc(9 * N * NG);
    double *rt = dalloc(3 * N * NG), *sr = dalloc(9 * N * NG), *stt = dalloc(3 * N * NG);
    mf_find_optimal_renaming_f64(flags, f->gt_pos, f->alt_pos, f->ambiguous, f->gt_exists, last, N);
    mf_rename_ground_truth_f64(rp, re, rr, rt, flags, f->gt_pos, f->alt_pos, f->gt_exists,
                               f->alt_exists, f->gt_frames, f->alt_frames, N);
    int renamed = 0;
    for (int64_t i = 0; i < N; i++) renamed += flags[i] != 0;
    double rebuild_err;
    bool lit_ok =
        rebuild_group_frames(sr, stt, bb_rot + 9 * N * (L - 1), bb_trans + 3 * N * (L - 1), last,
                             f->aatype, N, &rebuild_err);
    printf("side-chain frames rebuilt from the last layer's atoms: every group atom within %.2g A "
           "of frame * literature position (tol %g)\n",
           rebuild_err, FRAME_REBUILD_ATOL);
    MF_TEST_TRUE(lit_ok, "a group's third atom is not in its frame's xy plane (y > 0)");
    MF_TEST_TRUE(rebuild_err <= FRAME_REBUILD_ATOL, "rebuilt frames misplace atoms by %g A",
                 rebuild_err);
    double sc, *swork = dalloc(2 * N * NG);
    mf_sidechain_fape_f64(&sc, swork, sr, stt, last, rr, rt, f->group_exists, rp, re, N, 10.0, 10.0,
                          1e-4);
    double fape_c = 0.5 * bb_c + 0.5 * sc, fape_u = 0.5 * bb_u + 0.5 * sc;
    printf("loss/fape %.7g: 0.5 * backbone %.7g + 0.5 * side chain %.7g = %.7g (rel %.2e); "
           "%d residue(s) renamed\n"
           "loss_unclamped/fape %.7g: 0.5 * %.7g + 0.5 * %.7g = %.7g (rel %.2e), tol %.0e\n",
           ref_fape, bb_c, sc, fape_c, rel_err(fape_c, ref_fape), renamed, ref_fape_u, bb_u, sc,
           fape_u, rel_err(fape_u, ref_fape_u), MF_TOL_VEC_MODEL);
    mf_test_count(rel_err(fape_c, ref_fape) <= MF_TOL_VEC_MODEL);
    if (!(rel_err(fape_c, ref_fape) <= MF_TOL_VEC_MODEL))
        mf_test_fail("loss/fape: %.9g vs reference %.9g", fape_c, ref_fape);
    mf_test_count(rel_err(fape_u, ref_fape_u) <= MF_TOL_VEC_MODEL);
    if (!(rel_err(fape_u, ref_fape_u) <= MF_TOL_VEC_MODEL))
        mf_test_fail("loss_unclamped/fape: %.9g vs reference %.9g", fape_u, ref_fape_u);

    /* loss/supervised_chi needs the training pass's angles, which the file does not store. */
    printf("loss/supervised_chi: not comparable, train_outputs has no sm/angles (%s); the chi "
           "loss is checked by hand cases and finite differences\n",
           has_angles ? "PRESENT" : "absent");
    MF_TEST_TRUE(!has_angles,
                 "train_outputs/sm/angles exists now: compare loss/supervised_chi against it");

    free(swork), free(sr), free(stt), free(rp), free(re), free(rr), free(rt), free(gr), free(gtr);
    free(bb_rot), free(bb_trans), free(work), free(xf), free(x14), free_batch(&bf);
done:
    free(x37), free(frames), free(pos);
}

int main(void)
{
    mf_ctx ctx;
    mf_arena arena;
    if (mf_test_ctx_cpu(&ctx, &arena, (size_t)16 << 20) != MF_OK) {
        printf("context: %s\n", mf_last_error());
        return 1;
    }
    static mf_violation_tables tab;
    mf_violation_tables_init(&tab, MF_VIOLATION_TOLERANCE_FACTOR, MF_CLASH_OVERLAP_TOLERANCE);

    test_chi_hand();
    test_violation_hand();

    char path[1024];
    snprintf(path, sizeof path, "%s/testvectors/features.h5", mf_test_shared_dir());
    feats f;
    if (load_feats(&f, path)) {
        feats w;
        window_feats(&w, &f, 13, 11);
        bool same = true;
        for (int64_t k = 0; k < w.N * NA; k++) same &= w.gt_exists[k] == w.atom_exists[k];
        MF_TEST_TRUE(same, "residues 13-23 must have every atom in the ground truth");
        MF_TEST_TRUE(w.residue_index[2] - w.residue_index[1] > 1,
                     "the window must contain the residue_index jump");
        test_violations(&ctx, &w, &tab);
        test_renaming(&ctx, &f);
        test_sidechain_fape(&ctx, &w);
        test_backbone_fape(&ctx, &w);
        test_chi(&ctx, &w);
        test_train_expected(&ctx, &f, &tab);
        free_feats(&w);
        free_feats(&f);
    }
    mf_test_ctx_free(&ctx, &arena);
    return mf_test_finish("test_losses_structure");
}
