/* lDDT in AlphaFold 2's float32 form and in double for evaluation; see lddt.h. */
#include "eval/lddt.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "protein/residue_constants.h"

static const double lddt_thresholds[4] = {0.5, 1.0, 2.0, 4.0};

/* AF2's distance: sqrt(1e-10 + sum of squares), float32 throughout. */
static inline float dist_af2_f32(const float *a, const float *b)
{
    float dx = a[0] - b[0], dy = a[1] - b[1], dz = a[2] - b[2];
    return sqrtf(1e-10f + ((dx * dx + dy * dy) + dz * dz));
}

static inline int thresholds_passed_f32(float l1)
{
    return (l1 < 0.5f) + (l1 < 1.0f) + (l1 < 2.0f) + (l1 < 4.0f);
}

static mf_status check_points_args(const void *out, const float *pred, int64_t pred_stride,
                                   const float *truth, int64_t true_stride, const float *true_mask,
                                   int64_t mask_stride, int64_t n)
{
    MF_REQUIRE(out && pred && truth, "lddt: NULL argument");
    MF_REQUIRE(n >= 0, "lddt: n = %lld", (long long)n);
    MF_REQUIRE(pred_stride >= 3 && true_stride >= 3,
               "lddt: point strides must be >= 3 floats (pred %lld, true %lld)",
               (long long)pred_stride, (long long)true_stride);
    MF_REQUIRE(!true_mask || mask_stride >= 1, "lddt: mask stride %lld", (long long)mask_stride);
    return MF_OK;
}

mf_status mf_lddt_points_f32(float *lddt, const float *pred, int64_t pred_stride,
                             const float *truth, int64_t true_stride, const float *true_mask,
                             int64_t mask_stride, int64_t n, float cutoff)
{
    MF_TRY(
        check_points_args(lddt, pred, pred_stride, truth, true_stride, true_mask, mask_stride, n));
    for (int64_t i = 0; i < n; i++) {
        float mask_i = true_mask ? true_mask[i * mask_stride] : 1.0f;
        float sum_scored = 0.0f, sum_score = 0.0f;
        for (int64_t j = 0; j < n; j++) {
            float mask_j = true_mask ? true_mask[j * mask_stride] : 1.0f;
            float d_true = dist_af2_f32(truth + i * true_stride, truth + j * true_stride);
            float d_pred = dist_af2_f32(pred + i * pred_stride, pred + j * pred_stride);
            float scored = (float)(d_true < cutoff) * mask_i * mask_j * (i == j ? 0.0f : 1.0f);
            float score = 0.25f * (float)thresholds_passed_f32(fabsf(d_true - d_pred));
            sum_scored += scored;
            sum_score += scored * score;
        }
        float norm = 1.0f / (1e-10f + sum_scored);
        lddt[i] = norm * (1e-10f + sum_score);
    }
    return MF_OK;
}

mf_status mf_lddt_points_counts(int32_t *n_scored, int32_t *quarter, const float *pred,
                                int64_t pred_stride, const float *truth, int64_t true_stride,
                                const float *true_mask, int64_t mask_stride, int64_t n,
                                float cutoff)
{
    MF_TRY(check_points_args(n_scored, pred, pred_stride, truth, true_stride, true_mask,
                             mask_stride, n));
    MF_REQUIRE(quarter, "lddt: NULL argument");
    MF_REQUIRE(n <= INT32_MAX / 4, "lddt counts: %lld points overflow int32", (long long)n);
    for (int64_t i = 0; i < n; i++) {
        int32_t cnt = 0, q = 0;
        bool present_i = !true_mask || true_mask[i * mask_stride] != 0.0f;
        for (int64_t j = 0; present_i && j < n; j++) {
            if (j == i || (true_mask && true_mask[j * mask_stride] == 0.0f)) continue;
            float d_true = dist_af2_f32(truth + i * true_stride, truth + j * true_stride);
            if (!(d_true < cutoff)) continue;
            float d_pred = dist_af2_f32(pred + i * pred_stride, pred + j * pred_stride);
            cnt++;
            q += thresholds_passed_f32(fabsf(d_true - d_pred));
        }
        n_scored[i] = cnt;
        quarter[i] = q;
    }
    return MF_OK;
}

static inline double dist3(const double *a, const double *b)
{
    double dx = a[0] - b[0], dy = a[1] - b[1], dz = a[2] - b[2];
    return sqrt(dx * dx + dy * dy + dz * dz);
}

static inline int thresholds_passed(double l1)
{
    int k = 0;
    for (int t = 0; t < 4; t++) k += l1 < lddt_thresholds[t];
    return k;
}

mf_status mf_lddt_ca(const double *pred, const float *pred_mask, const double *ref,
                     const float *ref_mask, int64_t n, double cutoff, double *per_residue,
                     mf_lddt_result *out)
{
    MF_REQUIRE(pred && ref && out, "lddt-ca: NULL argument");
    MF_REQUIRE(n >= 0, "lddt-ca: n = %lld", (long long)n);
    memset(out, 0, sizeof *out);
    for (int64_t i = 0; i < n; i++) {
        bool ref_i = !ref_mask || ref_mask[i] != 0.0f;
        bool pred_i = !pred_mask || pred_mask[i] != 0.0f;
        for (int a = 0; a < 3; a++)
            if ((ref_i && !isfinite(ref[3 * i + a])) || (pred_i && !isfinite(pred[3 * i + a])))
                return MF_ERROR(MF_ERR_NUMERIC, "lddt-ca: residue %lld has a non-finite coordinate",
                                (long long)i);
    }
    int64_t total_pairs = 0, total_quarter = 0;
    for (int64_t i = 0; i < n; i++) {
        int64_t cnt = 0, q = 0;
        bool ref_i = !ref_mask || ref_mask[i] != 0.0f;
        bool pred_i = !pred_mask || pred_mask[i] != 0.0f;
        for (int64_t j = 0; ref_i && j < n; j++) {
            if (j == i || (ref_mask && ref_mask[j] == 0.0f)) continue;
            double d_ref = dist3(ref + 3 * i, ref + 3 * j);
            if (!(d_ref < cutoff)) continue;
            cnt++;
            if (pred_i && (!pred_mask || pred_mask[j] != 0.0f))
                q += thresholds_passed(fabs(d_ref - dist3(pred + 3 * i, pred + 3 * j)));
        }
        if (per_residue) per_residue[i] = cnt ? (double)q / (4.0 * (double)cnt) : -1.0;
        total_pairs += cnt;
        total_quarter += q;
    }
    if (total_pairs == 0)
        return MF_ERROR(MF_ERR_INVALID,
                        "lddt-ca: no pair of reference points within %g A among %lld residues",
                        cutoff, (long long)n);
    out->n_pairs = total_pairs;
    out->lddt = (double)total_quarter / (4.0 * (double)total_pairs);
    return MF_OK;
}

/* ---- all-atom ---- */

typedef struct {
    const float *pred_pos, *pred_mask, *ref_pos, *ref_mask;
    int64_t n;
    double cutoff;
    double *center; /* [n, 3] reference centroid of each residue's atoms */
    double *radius; /* [n] largest distance of a reference atom from it */
} aa_ctx;

static inline double fdist3(const float *a, const float *b)
{
    double dx = (double)a[0] - b[0], dy = (double)a[1] - b[1], dz = (double)a[2] - b[2];
    return sqrt(dx * dx + dy * dy + dz * dz);
}

/* Reference residues i and j may have an atom pair under the cut-off. */
static inline bool residues_near(const aa_ctx *c, int64_t i, int64_t j)
{
    if (c->radius[i] < 0.0 || c->radius[j] < 0.0) return false;
    return dist3(c->center + 3 * i, c->center + 3 * j) - c->radius[i] - c->radius[j] < c->cutoff;
}

/* Pairs of atom a of residue i with every reference atom of other residues: counts and summed
 * thresholds, with residue i's predicted atoms taken from pi_pos/pi_mask ([37, 3], [37]). */
static void atom_pairs(const aa_ctx *c, int64_t i, int a, const float *pi_pos, const float *pi_mask,
                       int64_t *cnt, int64_t *q)
{
    const float *ra = c->ref_pos + (i * MF_ATOM37 + a) * 3;
    bool pred_a = pi_mask[a] != 0.0f;
    for (int64_t j = 0; j < c->n; j++) {
        if (j == i || !residues_near(c, i, j)) continue;
        for (int b = 0; b < MF_ATOM37; b++) {
            if (c->ref_mask[j * MF_ATOM37 + b] == 0.0f) continue;
            double d_ref = fdist3(ra, c->ref_pos + (j * MF_ATOM37 + b) * 3);
            if (!(d_ref < c->cutoff)) continue;
            (*cnt)++;
            if (pred_a && c->pred_mask[j * MF_ATOM37 + b] != 0.0f)
                *q += thresholds_passed(
                    fabs(d_ref - fdist3(pi_pos + a * 3, c->pred_pos + (j * MF_ATOM37 + b) * 3)));
        }
    }
}

static void swap_atoms(float *pos /* [37, 3] */, float *mask /* [37] */, int a, int b)
{
    for (int k = 0; k < 3; k++) {
        float t = pos[a * 3 + k];
        pos[a * 3 + k] = pos[b * 3 + k];
        pos[b * 3 + k] = t;
    }
    float t = mask[a];
    mask[a] = mask[b];
    mask[b] = t;
}

mf_status mf_lddt_all_atom(const float *pred_pos, const float *pred_mask,
                           const int32_t *pred_aatype, const float *ref_pos, const float *ref_mask,
                           const int32_t *ref_aatype, int64_t n, double cutoff,
                           bool resolve_ambiguous, double *per_residue, mf_lddt_result *out)
{
    MF_REQUIRE(pred_pos && pred_mask && ref_pos && ref_mask && out, "lddt: NULL argument");
    MF_REQUIRE(n >= 0, "lddt: n = %lld", (long long)n);
    MF_REQUIRE(!resolve_ambiguous || (pred_aatype && ref_aatype),
               "lddt: resolving ambiguous atoms needs both aatype arrays");
    memset(out, 0, sizeof *out);
    for (int64_t i = 0; i < n * MF_ATOM37; i++)
        for (int k = 0; k < 3; k++)
            if ((ref_mask[i] != 0.0f && !isfinite(ref_pos[3 * i + k])) ||
                (pred_mask[i] != 0.0f && !isfinite(pred_pos[3 * i + k])))
                return MF_ERROR(MF_ERR_NUMERIC,
                                "lddt: residue %lld atom %s has a non-finite coordinate",
                                (long long)(i / MF_ATOM37), mf_atom37_name((int)(i % MF_ATOM37)));

    size_t npos = (size_t)n * MF_ATOM37;
    float *ppos = malloc(npos * 3 * sizeof(float) + 1), *pmask = malloc(npos * sizeof(float) + 1);
    double *center = malloc((size_t)n * 3 * sizeof(double) + 1);
    double *radius = malloc((size_t)n * sizeof(double) + 1);
    if (!ppos || !pmask || !center || !radius) {
        free(ppos), free(pmask), free(center), free(radius);
        return MF_ERROR(MF_ERR_NOMEM, "lddt: work arrays for %lld residues", (long long)n);
    }
    memcpy(ppos, pred_pos, npos * 3 * sizeof(float));
    memcpy(pmask, pred_mask, npos * sizeof(float));
    for (int64_t i = 0; i < n; i++) {
        double c[3] = {0, 0, 0}, r = -1.0;
        int m = 0;
        for (int a = 0; a < MF_ATOM37; a++)
            if (ref_mask[i * MF_ATOM37 + a] != 0.0f) {
                for (int k = 0; k < 3; k++) c[k] += ref_pos[(i * MF_ATOM37 + a) * 3 + k];
                m++;
            }
        for (int k = 0; k < 3; k++) center[3 * i + k] = m ? c[k] / m : 0.0;
        for (int a = 0; a < MF_ATOM37; a++)
            if (ref_mask[i * MF_ATOM37 + a] != 0.0f) {
                const float *p = ref_pos + (i * MF_ATOM37 + a) * 3;
                double dx = p[0] - center[3 * i], dy = p[1] - center[3 * i + 1],
                       dz = p[2] - center[3 * i + 2];
                double d = sqrt(dx * dx + dy * dy + dz * dz);
                if (d > r) r = d;
            }
        radius[i] = m ? r + 1e-6 : -1.0; /* slack for rounding in the bound */
    }
    aa_ctx c = {.pred_pos = ppos,
                .pred_mask = pmask,
                .ref_pos = ref_pos,
                .ref_mask = ref_mask,
                .n = n,
                .cutoff = cutoff,
                .center = center,
                .radius = radius};

    if (resolve_ambiguous) {
        /* Each residue's naming is chosen against the other residues as given, so the choice
         * does not depend on the order residues are visited. */
        int n_amb = 0;
        const mf_ambiguous_atom_pair *amb = mf_ambiguous_atom_pairs(&n_amb);
        float *swapped_pos = malloc(npos * 3 * sizeof(float) + 1);
        float *swapped_mask = malloc(npos * sizeof(float) + 1);
        bool *do_swap = calloc((size_t)n + 1, sizeof(bool));
        if (!swapped_pos || !swapped_mask || !do_swap) {
            free(swapped_pos), free(swapped_mask), free(do_swap);
            free(ppos), free(pmask), free(center), free(radius);
            return MF_ERROR(MF_ERR_NOMEM, "lddt: ambiguity work arrays");
        }
        for (int64_t i = 0; i < n; i++) {
            int32_t t = ref_aatype[i];
            if (t != pred_aatype[i]) continue;
            int atoms[4], n_atoms = 0;
            float pos_i[MF_ATOM37 * 3], mask_i[MF_ATOM37];
            memcpy(pos_i, ppos + i * MF_ATOM37 * 3, sizeof pos_i);
            memcpy(mask_i, pmask + i * MF_ATOM37, sizeof mask_i);
            for (int p = 0; p < n_amb; p++) {
                if (amb[p].restype != t) continue;
                int a = mf_atom37_index(amb[p].atom_a), b = mf_atom37_index(amb[p].atom_b);
                swap_atoms(pos_i, mask_i, a, b);
                atoms[n_atoms++] = a;
                atoms[n_atoms++] = b;
            }
            if (!n_atoms) continue;
            int64_t cnt0 = 0, q0 = 0, cnt1 = 0, q1 = 0;
            for (int k = 0; k < n_atoms; k++) {
                if (ref_mask[i * MF_ATOM37 + atoms[k]] == 0.0f) continue;
                atom_pairs(&c, i, atoms[k], ppos + i * MF_ATOM37 * 3, pmask + i * MF_ATOM37, &cnt0,
                           &q0);
                atom_pairs(&c, i, atoms[k], pos_i, mask_i, &cnt1, &q1);
            }
            if (q1 > q0) {
                do_swap[i] = true;
                memcpy(swapped_pos + i * MF_ATOM37 * 3, pos_i, sizeof pos_i);
                memcpy(swapped_mask + i * MF_ATOM37, mask_i, sizeof mask_i);
            }
        }
        for (int64_t i = 0; i < n; i++)
            if (do_swap[i]) {
                memcpy(ppos + i * MF_ATOM37 * 3, swapped_pos + i * MF_ATOM37 * 3,
                       MF_ATOM37 * 3 * sizeof(float));
                memcpy(pmask + i * MF_ATOM37, swapped_mask + i * MF_ATOM37,
                       MF_ATOM37 * sizeof(float));
            }
        free(swapped_pos), free(swapped_mask), free(do_swap);
    }

    int64_t total_pairs = 0, total_q = 0;
    for (int64_t i = 0; i < n; i++) {
        int64_t cnt = 0, q = 0;
        for (int a = 0; a < MF_ATOM37; a++)
            if (ref_mask[i * MF_ATOM37 + a] != 0.0f)
                atom_pairs(&c, i, a, ppos + i * MF_ATOM37 * 3, pmask + i * MF_ATOM37, &cnt, &q);
        if (per_residue) per_residue[i] = cnt ? (double)q / (4.0 * (double)cnt) : -1.0;
        total_pairs += cnt;
        total_q += q;
    }
    free(ppos), free(pmask), free(center), free(radius);
    if (total_pairs == 0)
        return MF_ERROR(MF_ERR_INVALID,
                        "lddt: no pair of reference atoms of different residues within %g A",
                        cutoff);
    out->n_pairs = total_pairs;
    out->lddt = (double)total_q / (4.0 * (double)total_pairs);
    return MF_OK;
}
