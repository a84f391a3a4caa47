/* The AlphaFold 2 input pipeline (data/pipeline.h):
 *  1. deterministic features from raw inputs against shared/testvectors/features.h5 (4ZEY chain A,
 *     chain residues 1..24): the chain read from shared/data .../4zey.cif, its templates taken
 *     from features.h5's raw template inputs, cropped at residue 1 -> aatype, target_feat, masks,
 *     atom14 maps, every ground-truth feature and every template feature (exact, frames and
 *     chi angles max-rel MF_TOL_VEC_MODULE, template torsions TOL_TEMPLATE_TORSIONS);
 *  2. cluster features against the reference: from features.h5's own masked cluster centres and
 *     extra rows (both iterations), nearest-neighbour assignment + cluster profile + deletion
 *     mean reproduce msa_feat channels 23..48 and the extra deletion features; our sampling keeps
 *     every MSA row either a centre or an extra row in each iteration;
 *  3. statistics of the stochastic transforms against AF2's probabilities, each within 5 binomial
 *     standard deviations (TOL_SIGMAS): BERT masking rate 0.15 and the replacement distribution
 *     (mask token 0.7, uniform 0.1 over 20 amino acids, profile 0.1, same 0.1) on columns built
 *     so that each source is visible; cluster-centre and extra-row selection frequencies per row;
 *     crop start uniform; template subsampling counts; block deletion; use_clamped_fape; R;
 *  4. determinism: the same seed gives bit-identical samples, another seed a different one;
 *  5. inference: FASTA + a3m + 2 Stockholm MSAs merged and deduplicated, no crop, per-iteration
 *     resampling, single-sequence mode, no resampling -> no recycling axis. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/pipeline.h"
#include "data/structure_io.h"
#include "protein/residue_constants.h"
#include "tests/support/mf_test.h"

/* The reference's template torsions are f32 on perturbed template coordinates (up to ~2e-5 of
 * rounding; we compute in double): the tolerance test_protein_rebuild uses for them. */
#define TOL_TEMPLATE_TORSIONS 1e-4
/* 2/pi atan(d/3) through atanf against the reference's f32 atan: at most a few ulps apart. */
#define TOL_ATAN_RTOL 1e-6
/* Statistical checks: |observed - expected| <= 5 standard deviations (binomial or of the mean):
 * a correct sampler fails one check in ~1.7 million, a wrong probability of the size of any AF2
 * constant here (0.005 and up) moves the count by many sigmas at these sample sizes. */
#define TOL_SIGMAS 5.0

static mf_config cfg;

static const mf_feature *feat(const mf_processed_features *f, const char *name)
{
    const mf_feature *x = mf_processed_find(f, name);
    MF_TEST_TRUE(x != NULL, "feature '%s' missing", name);
    return x;
}

static bool same_shape(const mf_feature *a, const mf_feature *b)
{
    if (a->array.ndim != b->array.ndim || a->array.dtype != b->array.dtype) return false;
    for (int k = 0; k < a->array.ndim; k++)
        if (a->array.shape[k] != b->array.shape[k]) return false;
    return true;
}

/* Exact equality of one feature's values with the reference's (f32: as numbers, so 0 == -0:
 * the reference zeroes masked coordinates by multiplying with the mask, which keeps the sign). */
static void cmp_exact(const mf_processed_features *ours, const mf_processed_features *ref,
                      const char *name)
{
    const mf_feature *a = feat(ours, name), *b = feat(ref, name);
    if (!a || !b) return;
    if (!same_shape(a, b)) {
        mf_test_fail("%s: dtype or shape differs from the reference", name);
        return;
    }
    if (a->array.dtype == MF_F32)
        mf_check_close_f32(name, a->array.data, b->array.data, mf_h5_array_numel(&a->array), 0, 0);
    else {
        const int64_t n = mf_h5_array_numel(&a->array);
        int64_t bad = 0;
        for (int64_t i = 0; i < n; i++)
            bad += ((int32_t *)a->array.data)[i] != ((int32_t *)b->array.data)[i];
        printf("  %-44s n=%-7lld exact (i32)  %s\n", name, (long long)n, bad ? "FAIL" : "ok");
        MF_TEST_TRUE(bad == 0, "%s: %lld of %lld differ", name, (long long)bad, (long long)n);
    }
}

static void cmp_maxrel(const mf_processed_features *ours, const mf_processed_features *ref,
                       const char *name, double rtol)
{
    const mf_feature *a = feat(ours, name), *b = feat(ref, name);
    if (!a || !b) return;
    if (!same_shape(a, b)) {
        mf_test_fail("%s: dtype or shape differs from the reference", name);
        return;
    }
    mf_check_maxrel_f32(name, a->array.data, b->array.data, mf_h5_array_numel(&a->array), rtol);
}

/* Template torsions times their mask (the reference's and ours): angles whose atoms are missing
 * are computed from whatever the positions hold (zeros before the first residue, where the
 * reference's f32 and our f64 give different arbitrary values), so only the unmasked ones can be
 * compared; the masks themselves are compared exactly. */
static void cmp_masked_torsions(const mf_processed_features *ours, const mf_processed_features *ref,
                                const char *name)
{
    const mf_feature *a = feat(ours, name), *b = feat(ref, name);
    const mf_feature *m = feat(ours, "template_torsion_angles_mask");
    if (!a || !b || !m) return;
    if (!same_shape(a, b)) {
        mf_test_fail("%s: dtype or shape differs from the reference", name);
        return;
    }
    const int64_t n = mf_h5_array_numel(&a->array);
    float *x = malloc((size_t)n * sizeof *x), *y = malloc((size_t)n * sizeof *y);
    for (int64_t i = 0; i < n; i++) {
        const float mk = ((float *)m->array.data)[i / 2];
        x[i] = ((float *)a->array.data)[i] * mk;
        y[i] = ((float *)b->array.data)[i] * mk;
    }
    char label[96];
    snprintf(label, sizeof label, "%s (x mask)", name);
    mf_check_maxrel_f32(label, x, y, n, TOL_TEMPLATE_TORSIONS);
    free(x);
    free(y);
}

static int hhblits_of_restype(int restype_with_gap)
{
    return mf_hhblits_aa_to_id(mf_restype_with_x_and_gap_letter(restype_with_gap));
}

/* ---- 1. deterministic features from 4zey.cif ---- */

static void test_reference_deterministic(const mf_processed_features *ref)
{
    printf("1. deterministic features from 4zey.cif chain A (+ features.h5 templates) vs "
           "features.h5\n");
    char path[1024];
    snprintf(path, sizeof path, "%s/data/structures/train/mmcif/4zey.cif", mf_test_shared_dir());
    mf_protein p = {0};
    MF_TEST_OK(mf_structure_read_chain(path, "A", &p));
    if (p.num_res == 0) return;
    const int64_t N = p.num_res, C0 = 1, n = 24; /* features.h5 = chain residues 1..24 */
    const mf_feature *rpos = feat(ref, "all_atom_positions"), *rmask = feat(ref, "all_atom_mask");
    const mf_feature *rta = feat(ref, "template_aatype");
    const mf_feature *rtp = feat(ref, "template_all_atom_positions");
    const mf_feature *rtm = feat(ref, "template_all_atom_mask");
    const mf_feature *rsp = feat(ref, "template_sum_probs");
    if (!rpos || !rmask || !rta || !rtp || !rtm || !rsp || N < C0 + n) goto done;

    mf_raw_chain raw = {0};
    raw.chain_length = raw.num_res = N;
    raw.aatype = malloc((size_t)N * sizeof(int32_t));
    raw.residue_index = malloc((size_t)N * sizeof(int32_t));
    raw.num_seq = 1;
    raw.msa = malloc((size_t)N);
    raw.deletion_matrix = calloc((size_t)N, sizeof(float));
    raw.all_atom_positions = malloc((size_t)N * 111 * sizeof(float));
    raw.all_atom_mask = malloc((size_t)N * 37 * sizeof(float));
    raw.resolution = (float)p.entry.resolution;
    const int64_t T = rta->array.shape[0];
    raw.num_templates = T;
    raw.template_aatype = malloc((size_t)(T * N) * sizeof(int32_t));
    raw.template_all_atom_positions = calloc((size_t)(T * N * 111), sizeof(float));
    raw.template_all_atom_masks = calloc((size_t)(T * N * 37), sizeof(float));
    raw.template_sum_probs = malloc((size_t)T * sizeof(float));
    memcpy(raw.aatype, p.aatype, (size_t)N * sizeof(int32_t));
    memcpy(raw.all_atom_positions, p.atom_positions, (size_t)N * 111 * sizeof(float));
    memcpy(raw.all_atom_mask, p.atom_mask, (size_t)N * 37 * sizeof(float));
    for (int64_t i = 0; i < N; i++) {
        raw.residue_index[i] = (int32_t)i;
        raw.msa[i] = (uint8_t)mf_hhblits_aa_to_id(p.sequence[i]);
    }
    /* The reference's input lacks a few atoms the mmCIF has: list them and drop them here, so
     * both pipelines start from the same atoms. */
    int64_t differ = 0;
    for (int64_t k = 0; k < n; k++)
        for (int a = 0; a < 37; a++) {
            const int64_t i = C0 + k;
            const float rm = ((float *)rmask->array.data)[k * 37 + a];
            bool d = rm != raw.all_atom_mask[i * 37 + a];
            for (int c = 0; c < 3 && rm != 0; c++)
                d |= ((float *)rpos->array.data)[(k * 37 + a) * 3 + c] !=
                     raw.all_atom_positions[(i * 37 + a) * 3 + c];
            if (!d) continue;
            differ++;
            printf("  input difference: residue %lld (%c) %s: mmCIF mask %g, features.h5 mask "
                   "%g -> taken as unobserved\n",
                   (long long)k, p.sequence[i], mf_atom37_name(a), raw.all_atom_mask[i * 37 + a],
                   rm);
            raw.all_atom_mask[i * 37 + a] = 0;
            for (int c = 0; c < 3; c++) raw.all_atom_positions[(i * 37 + a) * 3 + c] = 0;
        }
    MF_TEST_TRUE(differ <= 2, "%lld atoms of 4zey.cif differ from features.h5's input",
                 (long long)differ);
    for (int64_t t = 0; t < T; t++) {
        for (int64_t i = 0; i < N; i++) raw.template_aatype[t * N + i] = MF_MSA_GAP;
        for (int64_t k = 0; k < n; k++) {
            const int64_t i = C0 + k;
            raw.template_aatype[t * N + i] =
                hhblits_of_restype(((int32_t *)rta->array.data)[t * n + k]);
            memcpy(raw.template_all_atom_positions + (t * N + i) * 111,
                   (float *)rtp->array.data + (t * n + k) * 111, 111 * sizeof(float));
            memcpy(raw.template_all_atom_masks + (t * N + i) * 37,
                   (float *)rtm->array.data + (t * n + k) * 37, 37 * sizeof(float));
        }
        raw.template_sum_probs[t] = ((float *)rsp->array.data)[t];
    }

    mf_pipeline_options o = mf_pipeline_options_training(&cfg);
    o.crop_size = n;
    o.subsample_templates = false;
    o.random_num_iterations = false;
    o.block_delete_msa = false;
    o.num_iterations = 2;
    mf_sample_plan plan;
    MF_TEST_OK(mf_sample_plan_make(&o, N, 1, T, 7, &plan));
    plan.crop_start = C0; /* the reference's window */
    mf_processed_features f;
    MF_TEST_OK(mf_pipeline_process(&raw, &plan, &o, &f));
    if (f.num_features == 0) goto free_raw;
    MF_TEST_TRUE(f.sequence && strcmp(f.sequence, "MEGPLNLAHQQSRRADRLLAAGKY") == 0,
                 "cropped sequence %s", f.sequence ? f.sequence : "(none)");
    const char *exact[] = {"aatype",
                           "target_feat",
                           "seq_mask",
                           "seq_length",
                           "resolution",
                           "is_distillation",
                           "atom14_atom_exists",
                           "atom37_atom_exists",
                           "residx_atom14_to_atom37",
                           "residx_atom37_to_atom14",
                           "all_atom_positions",
                           "all_atom_mask",
                           "atom14_gt_positions",
                           "atom14_gt_exists",
                           "atom14_alt_gt_positions",
                           "atom14_alt_gt_exists",
                           "atom14_atom_is_ambiguous",
                           "rigidgroups_gt_exists",
                           "rigidgroups_group_exists",
                           "rigidgroups_group_is_ambiguous",
                           "backbone_rigid_mask",
                           "pseudo_beta",
                           "pseudo_beta_mask",
                           "chi_mask",
                           "template_aatype",
                           "template_all_atom_positions",
                           "template_all_atom_mask",
                           "template_mask",
                           "template_sum_probs",
                           "template_pseudo_beta",
                           "template_pseudo_beta_mask",
                           "template_torsion_angles_mask"};
    for (size_t i = 0; i < sizeof exact / sizeof *exact; i++) cmp_exact(&f, ref, exact[i]);
    const char *frames[] = {"rigidgroups_gt_frames", "rigidgroups_alt_gt_frames",
                            "backbone_rigid_tensor", "chi_angles_sin_cos"};
    for (size_t i = 0; i < sizeof frames / sizeof *frames; i++)
        cmp_maxrel(&f, ref, frames[i], MF_TOL_VEC_MODULE);
    cmp_masked_torsions(&f, ref, "template_torsion_angles_sin_cos");
    cmp_masked_torsions(&f, ref, "template_alt_torsion_angles_sin_cos");
    /* residue_index: the reference added a jump of 40 after its 15th residue (README) */
    const mf_feature *ri = feat(&f, "residue_index"), *rri = feat(ref, "residue_index");
    if (ri && rri) {
        int64_t bad = 0;
        for (int64_t k = 0; k < n; k++)
            bad += ((int32_t *)ri->array.data)[k] + (k >= 15 ? 40 : 0) !=
                   ((int32_t *)rri->array.data)[k];
        printf("  %-44s n=%-7lld exact up to the reference's jump of 40  %s\n", "residue_index",
               (long long)n, bad ? "FAIL" : "ok");
        MF_TEST_TRUE(bad == 0, "residue_index: %lld differ", (long long)bad);
    }
    /* single-sequence MSA: one real cluster row, padded to N_seq; no extra rows */
    const mf_feature *mm = feat(&f, "msa_mask"), *em = feat(&f, "extra_msa_mask");
    const mf_feature *mfe = feat(&f, "msa_feat");
    if (mm && em && mfe) {
        float s = 0;
        for (int64_t i = 0; i < mf_h5_array_numel(&mm->array); i++)
            s += ((float *)mm->array.data)[i];
        MF_TEST_TRUE(mm->array.shape[0] == cfg.data.max_msa_clusters && s == (float)n,
                     "msa_mask: %lld rows, sum %g", (long long)mm->array.shape[0], s);
        MF_TEST_TRUE(em->array.shape[0] == cfg.data.max_extra_msa, "extra rows not padded");
        MF_TEST_TRUE(mfe->per_iteration && mfe->array.shape[0] == 2, "msa_feat recycling axis");
    }
    mf_processed_free(&f);
free_raw:
    mf_sample_plan_free(&plan);
    mf_raw_chain_free(&raw);
done:
    mf_protein_free(&p);
}

/* ---- 2. cluster features from the reference's own sampled rows ---- */

static float deletion_from_value(float v)
{
    return roundf(3.0f * tanf(v * (float)M_PI / 2.0f));
}

static void test_reference_clusters(const mf_processed_features *ref)
{
    printf("2. cluster assignment, profiles and deletion features vs features.h5 msa_feat\n");
    const mf_feature *mf = feat(ref, "msa_feat"), *xm = feat(ref, "extra_msa");
    const mf_feature *xv = feat(ref, "extra_deletion_value"), *xh = feat(ref, "extra_has_deletion");
    const mf_feature *xr = feat(ref, "extra_msa_row_mask");
    if (!mf || !xm || !xv || !xh || !xr) return;
    const int64_t R = mf->array.shape[0], C = mf->array.shape[1], n = mf->array.shape[2];
    const int64_t Eout = xm->array.shape[1];
    int64_t E = 0;
    for (int64_t e = 0; e < Eout; e++) E += ((float *)xr->array.data)[e] != 0;
    uint8_t *cm = malloc((size_t)(C * n)), *x = malloc((size_t)(E * n));
    float *cdel = malloc((size_t)(C * n) * sizeof(float)), *xdel = malloc((size_t)(E * n) * 4);
    int32_t *assign = malloc((size_t)E * sizeof(int32_t));
    float *prof = malloc((size_t)(C * n * 23) * 4), *mean = malloc((size_t)(C * n) * 4);
    float *want_prof = malloc((size_t)(C * n * 23) * 4), *want_mean = malloc((size_t)(C * n) * 4);
    float *got_mean = malloc((size_t)(C * n) * 4), *got_v = malloc((size_t)(C * n) * 4);
    float *want_v = malloc((size_t)(C * n) * 4), *got_xv = malloc((size_t)(E * n) * 4);
    for (int64_t r = 0; r < R; r++) {
        const float *F = (const float *)mf->array.data + r * C * n * 49;
        for (int64_t i = 0; i < C * n; i++) {
            int arg = 0;
            for (int a = 1; a < 23; a++)
                if (F[i * 49 + a] > F[i * 49 + arg]) arg = a;
            cm[i] = (uint8_t)arg;
            cdel[i] = deletion_from_value(F[i * 49 + 24]);
            memcpy(want_prof + i * 23, F + i * 49 + 25, 23 * sizeof(float));
            want_mean[i] = F[i * 49 + 48];
            want_v[i] = F[i * 49 + 24];
            got_v[i] = mf_deletion_value(cdel[i]);
        }
        for (int64_t i = 0; i < E * n; i++) {
            x[i] = (uint8_t)((int32_t *)xm->array.data)[r * Eout * n + i];
            xdel[i] = deletion_from_value(((float *)xv->array.data)[r * Eout * n + i]);
            got_xv[i] = mf_deletion_value(xdel[i]);
        }
        MF_TEST_OK(mf_nearest_neighbor_clusters(assign, cm, C, x, E, n));
        MF_TEST_OK(mf_summarize_clusters(prof, mean, cm, cdel, C, x, xdel, assign, E, n));
        for (int64_t i = 0; i < C * n; i++) got_mean[i] = mf_deletion_value(mean[i]);
        char name[96];
        printf("  iteration %lld: %lld centres, %lld extra rows; assignment counts:", (long long)r,
               (long long)C, (long long)E);
        for (int64_t c = 0; c < C; c++) {
            int k = 0;
            for (int64_t e = 0; e < E; e++) k += assign[e] == c;
            printf(" %d", k);
        }
        printf("\n");
        snprintf(name, sizeof name, "r%lld cluster profile (msa_feat 25..47)", (long long)r);
        mf_check_close_f32(name, prof, want_prof, C * n * 23, 0, TOL_ATAN_RTOL);
        snprintf(name, sizeof name, "r%lld cluster deletion mean (msa_feat 48)", (long long)r);
        mf_check_close_f32(name, got_mean, want_mean, C * n, 1e-7, TOL_ATAN_RTOL);
        snprintf(name, sizeof name, "r%lld deletion_value (msa_feat 24)", (long long)r);
        mf_check_close_f32(name, got_v, want_v, C * n, 1e-7, TOL_ATAN_RTOL);
        snprintf(name, sizeof name, "r%lld extra_deletion_value", (long long)r);
        mf_check_close_f32(name, got_xv, (float *)xv->array.data + r * Eout * n, E * n, 1e-7,
                           TOL_ATAN_RTOL);
        int64_t bad = 0;
        for (int64_t i = 0; i < E * n; i++)
            bad += ((float *)xh->array.data)[r * Eout * n + i] != (xdel[i] > 0 ? 1.0f : 0.0f);
        for (int64_t i = 0; i < C * n; i++) bad += F[i * 49 + 23] != (cdel[i] > 0 ? 1.0f : 0.0f);
        MF_TEST_TRUE(bad == 0, "r%lld has_deletion: %lld differ", (long long)r, (long long)bad);
    }
    free(cm), free(x), free(cdel), free(xdel), free(assign), free(prof), free(mean);
    free(want_prof), free(want_mean), free(got_mean), free(got_v), free(want_v), free(got_xv);
}

/* ---- helpers for synthetic raw chains ---- */

/* A chain of N residues with S MSA rows of HHblits ids given by rows(s, j), no structure. */
static void synthetic_raw(mf_raw_chain *raw, int64_t N, int64_t S, int (*rows)(int64_t, int64_t))
{
    memset(raw, 0, sizeof *raw);
    raw->chain_length = raw->num_res = N;
    raw->num_seq = S;
    raw->aatype = malloc((size_t)N * sizeof(int32_t));
    raw->residue_index = malloc((size_t)N * sizeof(int32_t));
    raw->msa = malloc((size_t)(S * N));
    raw->deletion_matrix = calloc((size_t)(S * N), sizeof(float));
    for (int64_t s = 0; s < S; s++)
        for (int64_t j = 0; j < N; j++) raw->msa[s * N + j] = (uint8_t)rows(s, j);
    for (int64_t j = 0; j < N; j++) {
        raw->residue_index[j] = (int32_t)j;
        raw->aatype[j] = mf_hhblits_to_restype(raw->msa[j]);
        if (raw->aatype[j] > 20) raw->aatype[j] = 20;
    }
}

static bool within(const char *what, double observed, double expected, double sigma)
{
    const double dev = fabs(observed - expected);
    const bool ok = dev <= TOL_SIGMAS * sigma;
    printf("  %-58s %10.5f expected %10.5f  (%.1f sigma, bound %.0f)  %s\n", what, observed,
           expected, sigma > 0 ? dev / sigma : 0.0, TOL_SIGMAS, ok ? "ok" : "FAIL");
    MF_TEST_TRUE(ok, "%s: %g vs %g (sigma %g)", what, observed, expected, sigma);
    return ok;
}

static bool within_fraction(const char *what, double count, double total, double p)
{
    return within(what, count / total, p, sqrt(p * (1 - p) / total));
}

/* ---- 3. statistics ---- */

enum { HH_L = 9, HH_G = 5 }; /* HHblits ids of L and G */

/* Even columns: every row L. Odd columns: rows with even s G, odd s gap. */
static int bert_rows(int64_t s, int64_t j)
{
    if (j % 2 == 0) return HH_L;
    return s % 2 == 0 ? HH_G : MF_MSA_GAP;
}

static void test_bert_statistics(void)
{
    printf("3a. BERT masking: rate and replacement distribution (AF2 make_masked_msa)\n");
    const int64_t N = 64, S = 64, seeds = 40;
    mf_raw_chain raw;
    synthetic_raw(&raw, N, S, bert_rows);
    mf_pipeline_options o = mf_pipeline_options_inference(&cfg);
    o.max_msa_clusters = S; /* every row a centre: every position can be masked */
    o.max_extra_msa = 1;
    o.num_iterations = 1;
    const int G = mf_restype_from_one_letter('G');
    /* cnt[kind][outcome], kind: L column, G row or gap row of a G/gap column; outcome 0 mask token,
     * 1 same, 2 the other of G/gap (B columns), 3 another amino acid, 4 X or anything else */
    double pos = 0, masked = 0, cnt[3][5] = {{0}};
    for (int64_t sd = 0; sd < seeds; sd++) {
        mf_processed_features f;
        MF_TEST_OK(mf_pipeline_run(&raw, &o, 1000 + (uint64_t)sd, &f));
        const mf_feature *bm = mf_processed_find(&f, "bert_mask"),
                         *tm = mf_processed_find(&f, "true_msa"),
                         *mf = mf_processed_find(&f, "msa_feat");
        if (!bm || !tm || !mf) {
            mf_test_fail("BERT features missing");
            mf_processed_free(&f);
            break;
        }
        for (int64_t i = 0; i < S * N; i++) {
            pos++;
            if (((float *)bm->array.data)[i] == 0) continue;
            masked++;
            const int32_t tv = ((int32_t *)tm->array.data)[i];
            const float *F = (float *)mf->array.data + i * 49;
            int v = 0;
            for (int a = 1; a < 23; a++)
                if (F[a] > F[v]) v = a;
            const int col = (int)((i % N) % 2), kind = col == 0 ? 0 : (tv == G ? 1 : 2);
            int out;
            if (v == MF_MSA_MASK_TOKEN)
                out = 0;
            else if (v == tv)
                out = 1;
            else if (col == 1 && (v == G || v == MF_MSA_GAP))
                out = 2;
            else if (v < 20)
                out = 3;
            else
                out = 4;
            cnt[kind][out]++;
        }
        mf_processed_free(&f);
    }
    mf_raw_chain_free(&raw);
    within_fraction("masked positions / all (replace_fraction 0.15)", masked, pos, 0.15);
    const char *kinds[3] = {"conserved L column", "G rows of G/gap columns",
                            "gap rows of G/gap columns"};
    /* Expected outcome probabilities: mask 0.7; same = same_prob + profile_prob * p(true) +
     * uniform_prob * 0.05 (amino acids only); other G/gap via the profile (+ uniform for G);
     * other amino acids via uniform. */
    const double expect[3][5] = {
        {0.7, 0.1 + 0.1 * 1.0 + 0.005, 0, 0.1 * 19 * 0.05, 0},
        {0.7, 0.1 + 0.1 * 0.5 + 0.005, 0.1 * 0.5, 0.1 * 19 * 0.05, 0},
        {0.7, 0.1 + 0.1 * 0.5, 0.1 * 0.5 + 0.005, 0.1 * 19 * 0.05, 0},
    };
    const char *outs[5] = {"mask token", "unchanged", "the other of G/gap", "another amino acid",
                           "X or other"};
    for (int k = 0; k < 3; k++) {
        double tot = 0;
        for (int o2 = 0; o2 < 5; o2++) tot += cnt[k][o2];
        for (int o2 = 0; o2 < 5; o2++) {
            if (k == 0 && o2 == 2) continue;
            char what[128];
            snprintf(what, sizeof what, "%s: %s", kinds[k], outs[o2]);
            if (expect[k][o2] == 0) {
                printf("  %-58s %10.0f expected 0  %s\n", what, cnt[k][o2],
                       cnt[k][o2] == 0 ? "ok" : "FAIL");
                MF_TEST_TRUE(cnt[k][o2] == 0, "%s: %g draws", what, cnt[k][o2]);
            } else {
                within_fraction(what, cnt[k][o2], tot, expect[k][o2]);
            }
        }
    }
}

/* Row s is identified by its first two columns (base-20 digits); every row distinct. */
static int id_rows(int64_t s, int64_t j)
{
    if (j == 0) return (int)(s % 20);
    if (j == 1) return (int)(s / 20);
    return (int)((s * 7 + j * 3) % 20);
}

static void test_sampling_statistics(void)
{
    printf("3b. cluster-centre and extra-row sampling (sample_msa, crop_extra_msa)\n");
    const int64_t S = 41, N = 6, seeds = 250, R = 8;
    mf_raw_chain raw;
    synthetic_raw(&raw, N, S, id_rows);
    mf_pipeline_options o = mf_pipeline_options_inference(&cfg);
    o.max_msa_clusters = 11;
    o.max_extra_msa = 12;
    o.num_iterations = R;
    o.masked_msa_replace_fraction = 0.15;
    double centre[41] = {0}, extra[41] = {0}, trials = 0;
    int64_t partition_bad = 0, query_first_bad = 0;
    for (int64_t sd = 0; sd < seeds; sd++) {
        mf_processed_features f;
        MF_TEST_OK(mf_pipeline_run(&raw, &o, 5000 + (uint64_t)sd, &f));
        const mf_feature *tm = mf_processed_find(&f, "true_msa"),
                         *xm = mf_processed_find(&f, "extra_msa");
        if (!tm || !xm) {
            mf_processed_free(&f);
            mf_test_fail("sampling features missing");
            break;
        }
        for (int64_t r = 0; r < R; r++) {
            trials++;
            int seen[41] = {0};
            for (int64_t c = 0; c < 11; c++) {
                const int32_t *row = (int32_t *)tm->array.data + (r * 11 + c) * N;
                /* true_msa is in restype order: back to HHblits ids to read the row id */
                const int d0 = hhblits_of_restype(row[0]), d1 = hhblits_of_restype(row[1]);
                const int s = d0 + 20 * d1;
                if (c == 0 && s != 0) query_first_bad++;
                if (s >= 0 && s < S) centre[s]++, seen[s]++;
            }
            for (int64_t e = 0; e < 12; e++) {
                const int32_t *row = (int32_t *)xm->array.data + (r * 12 + e) * N;
                const int s = hhblits_of_restype(row[0]) + 20 * hhblits_of_restype(row[1]);
                if (s >= 0 && s < S) extra[s]++, seen[s]++;
            }
            for (int s = 0; s < S; s++) partition_bad += seen[s] > 1;
        }
        mf_processed_free(&f);
    }
    mf_raw_chain_free(&raw);
    printf("  %lld trials (seeds x iterations): query first centre in all: %s; no row twice: %s\n",
           (long long)trials, query_first_bad ? "NO" : "yes", partition_bad ? "NO" : "yes");
    MF_TEST_TRUE(query_first_bad == 0, "query not the first centre %lld times",
                 (long long)query_first_bad);
    MF_TEST_TRUE(partition_bad == 0, "a row both centre and extra (%lld)",
                 (long long)partition_bad);
    /* P(centre) = 10/40 for rows 1..40; P(extra) = (30/40) * (12/30) = 0.3 */
    double worst_c = 0, worst_e = 0;
    int bad = 0;
    const double pc = 10.0 / 40, pe = 0.3;
    const double sc = sqrt(trials * pc * (1 - pc)), se = sqrt(trials * pe * (1 - pe));
    for (int s = 1; s < S; s++) {
        const double dc = fabs(centre[s] - trials * pc) / sc,
                     de = fabs(extra[s] - trials * pe) / se;
        worst_c = dc > worst_c ? dc : worst_c;
        worst_e = de > worst_e ? de : worst_e;
        bad += dc > TOL_SIGMAS || de > TOL_SIGMAS;
    }
    printf("  rows 1..40 as centre: expected %.0f each, worst %.2f sigma; as extra: expected %.0f, "
           "worst %.2f sigma (bound %.0f)  %s\n",
           trials * pc, worst_c, trials * pe, worst_e, TOL_SIGMAS, bad ? "FAIL" : "ok");
    MF_TEST_TRUE(bad == 0, "%d rows outside %g sigma", bad, TOL_SIGMAS);
    MF_TEST_TRUE(centre[0] == trials && extra[0] == 0, "query row: centre %g of %g", centre[0],
                 trials);
}

static void test_plan_statistics(void)
{
    printf("3c. per-sample choices (crop, templates, block deletion, clamped FAPE, R)\n");
    mf_pipeline_options o = mf_pipeline_options_training(&cfg);
    o.crop_size = 30;
    o.max_templates = 4;
    o.num_iterations = 4;
    o.clamp_fape_fraction = 0.9;
    o.block_delete_msa = true;
    o.block_delete_msa_fraction_per_block = 0.3;
    o.block_delete_msa_num_blocks = 5;
    const int K = 4000;
    const int64_t L = 100, S = 100;
    double sum = 0, clamp = 0, kcount4[5] = {0}, kcount6[5] = {0}, rcount[5] = {0};
    double del_sum = 0, del_sq = 0;
    int64_t lo = L, hi = -1, bad_plan = 0;
    /* exact mean of the deleted count: row i >= 1 is hit by one block with probability
     * min(i, 30) / 99 (starts uniform in [1, 99], blocks of 30 rows) */
    double expect_del = 0;
    for (int64_t i = 1; i < S; i++) expect_del += 1 - pow(1 - fmin((double)i, 30.0) / 99.0, 5);
    for (int k = 0; k < K; k++) {
        mf_sample_plan p4, p6;
        MF_TEST_OK(mf_sample_plan_make(&o, L, S, 4, 900000 + (uint64_t)k, &p4));
        MF_TEST_OK(mf_sample_plan_make(&o, L, S, 6, 900000 + (uint64_t)k, &p6));
        sum += (double)p4.crop_start;
        lo = p4.crop_start < lo ? p4.crop_start : lo;
        hi = p4.crop_start > hi ? p4.crop_start : hi;
        bad_plan += p4.crop_size != 30 || p4.crop_start < 0 || p4.crop_start > L - 30;
        clamp += p4.use_clamped_fape;
        kcount4[p4.num_templates]++;
        kcount6[p6.num_templates]++;
        rcount[p4.num_iterations]++;
        int used[6] = {0};
        for (int64_t t = 0; t < p6.num_templates; t++) {
            const int64_t id = p6.template_ids[t];
            bad_plan += id < 0 || id >= 6 || used[id]++;
        }
        bad_plan += p4.num_kept < 1 || p4.kept_rows[0] != 0;
        for (int64_t i = 1; i < p4.num_kept; i++)
            bad_plan += p4.kept_rows[i] <= p4.kept_rows[i - 1];
        const double d = (double)(S - p4.num_kept);
        del_sum += d;
        del_sq += d * d;
        mf_sample_plan_free(&p4);
        mf_sample_plan_free(&p6);
    }
    MF_TEST_TRUE(bad_plan == 0, "%lld malformed plans", (long long)bad_plan);
    const double var_u = (71.0 * 71.0 - 1) / 12.0;
    within("crop start mean, uniform on [0, 70]", sum / K, 35.0, sqrt(var_u / K));
    MF_TEST_TRUE(lo == 0 && hi == 70, "crop starts span [%lld, %lld], expected [0, 70]",
                 (long long)lo, (long long)hi);
    within_fraction("use_clamped_fape = 1 (clamp fraction 0.9)", clamp, K, 0.9);
    for (int k = 0; k <= 4; k++) {
        char what[96];
        snprintf(what, sizeof what, "T=4, N_templ=4: %d templates (uniform 1/5)", k);
        within_fraction(what, kcount4[k], K, 0.2);
    }
    const double p6[5] = {1 / 7.0, 1 / 7.0, 1 / 7.0, 1 / 7.0, 3 / 7.0};
    for (int k = 0; k <= 4; k++) {
        char what[96];
        snprintf(what, sizeof what, "T=6, N_templ=4: %d templates (AF2: %s)", k,
                 k == 4 ? "3/7" : "1/7");
        within_fraction(what, kcount6[k], K, p6[k]);
    }
    for (int r = 1; r <= 4; r++) {
        char what[96];
        snprintf(what, sizeof what, "recycling iterations R = %d (uniform 1/4)", r);
        within_fraction(what, rcount[r], K, 0.25);
    }
    const double mean = del_sum / K, sd = sqrt(del_sq / K - mean * mean);
    within("block deletion: mean rows deleted of 100 (5 x 30%)", mean, expect_del, sd / sqrt(K));
}

/* ---- 4. determinism ---- */

static int mixed_rows(int64_t s, int64_t j)
{
    return (int)((s * 13 + j * 5 + (s * j) % 7) % 22);
}

static void test_determinism(void)
{
    printf("4. determinism\n");
    mf_raw_chain raw;
    synthetic_raw(&raw, 37, 29, mixed_rows);
    mf_pipeline_options o = mf_pipeline_options_inference(&cfg);
    mf_processed_features a, b, c;
    MF_TEST_OK(mf_pipeline_run(&raw, &o, 42, &a));
    MF_TEST_OK(mf_pipeline_run(&raw, &o, 42, &b));
    MF_TEST_OK(mf_pipeline_run(&raw, &o, 43, &c));
    char diff[256] = "";
    const bool same = mf_processed_equal(&a, &b, diff, sizeof diff);
    printf("  seed 42 twice: %s\n", same ? "bit-identical" : diff);
    MF_TEST_TRUE(same, "same seed, different samples: %s", diff);
    const bool other = mf_processed_equal(&a, &c, diff, sizeof diff);
    printf("  seed 42 vs 43: %s\n", other ? "IDENTICAL" : diff);
    MF_TEST_TRUE(!other, "different seeds gave identical samples");
    /* iterations differ when resampled */
    const mf_feature *mf = mf_processed_find(&a, "msa_feat");
    if (mf) {
        const int64_t per = mf_h5_array_numel(&mf->array) / mf->array.shape[0];
        const bool differ =
            memcmp(mf->array.data, (float *)mf->array.data + per, (size_t)per * 4) != 0;
        printf("  msa_feat of iterations 0 and 1: %s\n", differ ? "differ (resampled)" : "SAME");
        MF_TEST_TRUE(differ, "recycling iterations not resampled");
    }
    mf_processed_free(&a);
    mf_processed_free(&b);
    mf_processed_free(&c);
    mf_raw_chain_free(&raw);
}

/* ---- 5. inference ---- */

static void test_inference(void)
{
    printf("5. inference features from FASTA + MSAs\n");
    char fasta_path[1024], p1[1024], p2[1024], p3[1024];
    const char *sh = mf_test_shared_dir();
    snprintf(fasta_path, sizeof fasta_path, "%s/data/fasta/examples/openfold_short.fasta", sh);
    snprintf(p1, sizeof p1, "%s/data/msas/openfold_testquery73/bfd_uniclust_hits.a3m", sh);
    snprintf(p2, sizeof p2, "%s/data/msas/openfold_testquery73/uniref90_hits.sto", sh);
    snprintf(p3, sizeof p3, "%s/data/msas/openfold_testquery73/mgnify_hits.sto", sh);
    mf_fasta fa = {0};
    MF_TEST_OK(mf_fasta_read(fasta_path, MF_FASTA_UNKNOWN_TO_X, &fa));
    if (fa.num_records < 1) return;
    const mf_fasta_record *rec = &fa.records[0];
    const int64_t N = rec->length;
    const char *paths[3] = {p1, p2, p3};
    mf_pipeline_options o = mf_pipeline_options_inference(&cfg);
    mf_processed_features f, g;
    MF_TEST_OK(mf_pipeline_inference_features(rec, paths, 3, &o, 11, &f));
    MF_TEST_OK(mf_pipeline_inference_features(rec, paths, 3, &o, 11, &g));
    MF_TEST_TRUE(f.num_features > 0 && mf_processed_equal(&f, &g, NULL, 0),
                 "inference features not reproducible");
    /* expected row count: the MSAs merged and deduplicated directly */
    mf_msa m[3] = {{0}};
    const mf_msa *list[3];
    int64_t expect_rows = -1;
    bool read_ok = true;
    for (int k = 0; k < 3; k++) {
        read_ok &= mf_msa_read(paths[k], MF_MSA_AUTO, 0, &m[k]) == MF_OK;
        list[k] = &m[k];
    }
    if (read_ok) {
        mf_msa merged = {0};
        if (mf_msa_merge_dedup(list, 3, &merged) == MF_OK) expect_rows = merged.num_rows;
        mf_msa_free(&merged);
    }
    for (int k = 0; k < 3; k++) mf_msa_free(&m[k]);
    const mf_feature *mf = mf_processed_find(&f, "msa_feat"),
                     *xm = mf_processed_find(&f, "extra_msa");
    const mf_feature *tm = mf_processed_find(&f, "true_msa"), *aa = mf_processed_find(&f, "aatype");
    if (mf && xm && tm && aa) {
        const int64_t R = f.num_iterations, C = mf->array.shape[1], E = xm->array.shape[1];
        printf("  N = %lld (no crop), R = %lld, msa_feat [%lld, %lld, %lld, 49], extra_msa [%lld, "
               "%lld, %lld]; merged MSA %lld rows\n",
               (long long)f.num_res, (long long)R, (long long)R, (long long)C,
               (long long)mf->array.shape[2], (long long)R, (long long)E,
               (long long)mf->array.shape[2], (long long)expect_rows);
        MF_TEST_TRUE(f.num_res == N && mf->array.shape[2] == N, "inference cropped the chain");
        MF_TEST_TRUE(R == cfg.recycling.num_recycle + 1 && mf->per_iteration && xm->per_iteration,
                     "recycling axis");
        MF_TEST_TRUE(C == cfg.data.max_msa_clusters &&
                         E == (expect_rows - C < cfg.data.max_extra_msa ? expect_rows - C
                                                                        : cfg.data.max_extra_msa),
                     "cluster/extra rows %lld/%lld for %lld merged rows", (long long)C,
                     (long long)E, (long long)expect_rows);
        int64_t bad = 0;
        for (int64_t r = 0; r < R; r++)
            for (int64_t j = 0; j < N; j++)
                bad += ((int32_t *)tm->array.data)[r * C * N + j] != ((int32_t *)aa->array.data)[j];
        MF_TEST_TRUE(bad == 0, "true_msa row 0 is not the query in %lld positions", (long long)bad);
    }
    MF_TEST_TRUE(mf_processed_find(&f, "all_atom_positions") == NULL &&
                     mf_processed_find(&f, "atom14_atom_exists") != NULL,
                 "inference: ground truth present or atom14 masks missing");
    mf_processed_free(&f);
    mf_processed_free(&g);

    /* single-sequence mode, and no resampling: no recycling axis */
    o.resample_msa_in_recycling = false;
    MF_TEST_OK(mf_pipeline_inference_features(rec, NULL, 0, &o, 11, &f));
    mf = mf_processed_find(&f, "msa_feat");
    xm = mf_processed_find(&f, "extra_msa");
    if (mf && xm) {
        printf("  single sequence, no resampling: msa_feat [%lld, %lld, 49] per_iteration %d, "
               "extra_msa [%lld, %lld]\n",
               (long long)mf->array.shape[0], (long long)mf->array.shape[1], mf->per_iteration,
               (long long)xm->array.shape[0], (long long)xm->array.shape[1]);
        MF_TEST_TRUE(!mf->per_iteration && mf->array.ndim == 3 && mf->array.shape[0] == 1 &&
                         xm->array.ndim == 2 && xm->array.shape[0] == 0,
                     "single-sequence features");
    }
    mf_processed_free(&f);
    /* a query that does not match the MSA is refused */
    mf_fasta_record wrong = *rec;
    char *seq = strdup(rec->sequence);
    seq[5] = seq[5] == 'A' ? 'C' : 'A';
    wrong.sequence = seq;
    const mf_status st = mf_pipeline_inference_features(&wrong, paths, 1, &o, 11, &f);
    printf("  query differing from the MSA's first row: %s\n",
           st != MF_OK ? mf_last_error() : "ACCEPTED");
    MF_TEST_TRUE(st != MF_OK, "mismatching query accepted");
    free(seq);
    mf_fasta_free(&fa);
}

int main(void)
{
    mf_h5_quiet();
    if (mf_config_preset("tiny", &cfg) != MF_OK) {
        mf_test_fail("tiny preset: %s", mf_last_error());
        return mf_test_finish("test_pipeline");
    }
    char path[1024];
    snprintf(path, sizeof path, "%s/testvectors/features.h5", mf_test_shared_dir());
    mf_processed_features ref;
    MF_TEST_OK(mf_processed_read(path, &ref));
    if (ref.num_features > 0) {
        test_reference_deterministic(&ref);
        test_reference_clusters(&ref);
    }
    mf_processed_free(&ref);
    test_bert_statistics();
    test_sampling_statistics();
    test_plan_statistics();
    test_determinism();
    test_inference();
    return mf_test_finish("test_pipeline");
}
