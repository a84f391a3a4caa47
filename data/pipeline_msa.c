/* The MSA transforms of the AlphaFold 2 input pipeline (alphafold/model/tf/data_transforms.py:
 * make_hhblits_profile, make_masked_msa, nearest_neighbor_clusters, summarize_clusters and the
 * deletion features of make_msa_feat), on host arrays. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "data/pipeline.h"
#include "protein/residue_constants.h"

uint64_t mf_rng_next_below(mf_rng *r, uint64_t n)
{
    if (n <= 1) return 0;
    if (n <= UINT32_MAX) {
        /* Lemire-style rejection: drop the 2^32 mod n lowest words so every residue is equally
         * likely. */
        const uint32_t n32 = (uint32_t)n, threshold = (uint32_t)(-n32) % n32;
        for (;;) {
            const uint32_t x = mf_rng_next_u32(r);
            if (x >= threshold) return x % n32;
        }
    }
    const uint64_t threshold = (uint64_t)(-n) % n;
    for (;;) {
        const uint64_t hi = mf_rng_next_u32(r), lo = mf_rng_next_u32(r);
        const uint64_t x = hi << 32 | lo;
        if (x >= threshold) return x % n;
    }
}

float mf_deletion_value(float d)
{
    return atanf(d / 3.0f) * (float)(2.0 / M_PI);
}

mf_status mf_hhblits_profile(float *profile, const uint8_t *msa, int64_t S, int64_t N)
{
    MF_REQUIRE(S >= 1 && N >= 0, "hhblits profile: %lld rows, %lld columns", (long long)S,
               (long long)N);
    int32_t *count = calloc((size_t)(N > 0 ? N : 1) * MF_MSA_ALPHABET, sizeof *count);
    if (!count)
        return MF_ERROR(MF_ERR_NOMEM, "hhblits profile [%lld, 22]: out of memory", (long long)N);
    for (int64_t s = 0; s < S; s++)
        for (int64_t j = 0; j < N; j++) count[j * MF_MSA_ALPHABET + msa[s * N + j]]++;
    /* reduce_mean in f32: the count (exact) over the row count. */
    for (int64_t i = 0; i < N * MF_MSA_ALPHABET; i++) profile[i] = (float)count[i] / (float)S;
    free(count);
    return MF_OK;
}

void mf_make_masked_msa(uint8_t *msa, float *bert_mask, int32_t *true_msa, const float *profile,
                        int64_t C, int64_t N, const mf_pipeline_options *opts, uint64_t seed,
                        uint64_t stream_mask, uint64_t stream_category)
{
    const double pu = opts->masked_msa_uniform_prob, pp = opts->masked_msa_profile_prob,
                 ps = opts->masked_msa_same_prob;
    /* AF2 pads the categorical with the rest of the mass on the mask token. */
    const double pmask = 1.0 - pp - ps - pu;
    const float replace = (float)opts->masked_msa_replace_fraction;
    for (int64_t c = 0; c < C; c++)
        for (int64_t j = 0; j < N; j++) {
            const int64_t k = c * N + j;
            const uint8_t v = msa[k];
            true_msa[k] = v;
            bert_mask[k] = 0.0f;
            if (!(mf_rng_uniform(seed, stream_mask, (uint64_t)k) < replace)) continue;
            double probs[MF_MSA_ALPHABET + 1], total = 0;
            for (int a = 0; a < MF_MSA_ALPHABET; a++) {
                probs[a] = (a < MF_NUM_RESTYPES ? pu * 0.05 : 0.0) +
                           pp * profile[j * MF_MSA_ALPHABET + a] + (a == v ? ps : 0.0);
                total += probs[a];
            }
            probs[MF_MSA_MASK_TOKEN] = pmask > 0 ? pmask : 0;
            total += probs[MF_MSA_MASK_TOKEN];
            /* Inverse CDF with one uniform; a draw past the end (rounding) takes the last class
             * with mass. */
            const double u = (double)mf_rng_uniform(seed, stream_category, (uint64_t)k) * total;
            double acc = 0;
            int pick = -1, last = v;
            for (int a = 0; a <= MF_MSA_MASK_TOKEN; a++) {
                if (probs[a] <= 0) continue;
                last = a;
                acc += probs[a];
                if (u < acc) {
                    pick = a;
                    break;
                }
            }
            msa[k] = (uint8_t)(pick >= 0 ? pick : last);
            bert_mask[k] = 1.0f;
        }
}

mf_status mf_nearest_neighbor_clusters(int32_t *assignment, const uint8_t *msa, int64_t C,
                                       const uint8_t *extra, int64_t E, int64_t N)
{
    MF_REQUIRE(C >= 1 || E == 0, "nearest_neighbor_clusters: %lld extra rows and no centre",
               (long long)E);
    if (E == 0) return MF_OK;
    if (C == 1) {
        for (int64_t e = 0; e < E; e++) assignment[e] = 0;
        return MF_OK;
    }
    /* Centres transposed [N, C] so one extra residue is compared with every centre at once; the
     * agreement is the weighted Hamming score of AF2 with weight 1 on 0..20, 0 on gap and mask. */
    uint8_t *msa_t = malloc((size_t)(N * C));
    int32_t *agree = malloc((size_t)C * sizeof *agree);
    if (!msa_t || !agree) {
        free(msa_t);
        free(agree);
        return MF_ERROR(MF_ERR_NOMEM, "nearest_neighbor_clusters: %lld centres x %lld columns",
                        (long long)C, (long long)N);
    }
    for (int64_t c = 0; c < C; c++)
        for (int64_t j = 0; j < N; j++) msa_t[j * C + c] = msa[c * N + j];
    for (int64_t e = 0; e < E; e++) {
        memset(agree, 0, (size_t)C * sizeof *agree);
        const uint8_t *x = extra + e * N;
        for (int64_t j = 0; j < N; j++) {
            const uint8_t a = x[j];
            if (a >= MF_MSA_GAP) continue;
            const uint8_t *row = msa_t + j * C;
            for (int64_t c = 0; c < C; c++) agree[c] += row[c] == a;
        }
        int64_t best = 0;
        for (int64_t c = 1; c < C; c++)
            if (agree[c] > agree[best]) best = c;
        assignment[e] = (int32_t)best;
    }
    free(msa_t);
    free(agree);
    return MF_OK;
}

mf_status mf_summarize_clusters(float *cluster_profile, float *deletion_mean, const uint8_t *msa,
                                const float *deletion, int64_t C, const uint8_t *extra,
                                const float *extra_deletion, const int32_t *assignment, int64_t E,
                                int64_t N)
{
    const int K = MF_MSA_MASK_TOKEN + 1; /* 23 classes */
    int32_t *count = calloc((size_t)(C > 0 ? C : 1), sizeof *count);
    float *del_sum =
        deletion_mean ? calloc((size_t)(C * N > 0 ? C * N : 1), sizeof *del_sum) : NULL;
    if (!count || (deletion_mean && !del_sum)) {
        free(count);
        free(del_sum);
        return MF_ERROR(MF_ERR_NOMEM, "summarize_clusters: %lld centres x %lld columns",
                        (long long)C, (long long)N);
    }
    if (cluster_profile) memset(cluster_profile, 0, (size_t)(C * N * K) * sizeof(float));
    for (int64_t e = 0; e < E; e++) {
        if (assignment[e] < 0 || assignment[e] >= C) {
            free(count);
            free(del_sum);
            return MF_ERROR(MF_ERR_INVALID,
                            "summarize_clusters: extra row %lld assigned to %d of "
                            "%lld centres",
                            (long long)e, assignment[e], (long long)C);
        }
        count[assignment[e]]++;
    }
    /* unsorted_segment_sum of the extra rows, then the centre added (AF2's order). */
    for (int64_t e = 0; e < E; e++) {
        const int64_t c = assignment[e];
        for (int64_t j = 0; j < N; j++) {
            if (cluster_profile) cluster_profile[(c * N + j) * K + extra[e * N + j]] += 1.0f;
            if (del_sum) del_sum[c * N + j] += extra_deletion[e * N + j];
        }
    }
    for (int64_t c = 0; c < C; c++) {
        /* mask_counts = 1e-6 + msa_mask + csum(extra_msa_mask), left to right in f32 */
        const float mc = (1e-6f + 1.0f) + (float)count[c];
        for (int64_t j = 0; j < N; j++) {
            if (cluster_profile) {
                float *p = cluster_profile + (c * N + j) * K;
                p[msa[c * N + j]] += 1.0f;
                for (int a = 0; a < K; a++) p[a] = p[a] / mc;
            }
            if (deletion_mean) {
                const float s = del_sum[c * N + j] + deletion[c * N + j];
                deletion_mean[c * N + j] = s / mc;
            }
        }
    }
    free(count);
    free(del_sum);
    return MF_OK;
}
