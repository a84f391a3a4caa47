/* TM-score and GDT on paired C-alpha atoms, by the search of Zhang & Skolnick's TMscore program
 * (Proteins 57:702, 2004; GDT: Zemla, NAR 31:3370, 2003):
 *   - d0 = 1.24 (L - 15)^(1/3) - 1.8 for L > 15, at least 0.5 (L = the normalising length, the
 *     reference's residue count); the search radius d0_search is d0 clamped to [4.5, 8];
 *   - seed superpositions on every window of consecutive aligned pairs, of lengths n, n/2, n/4, ...
 *     (integer halving, at most 5 lengths) and then 4 (min(4, n) when n < 4);
 *   - from each seed, up to 20 rounds: superpose on the pairs closer than a cut-off (d0_search - 1
 *     after the seed, d0_search + 1 afterwards; the cut-off grows by 0.5 until 3 pairs are in when
 *     more than 3 exist), stopping when the set repeats;
 *   - every superposition met is scored; TM-score, and each GDT count separately, is the maximum.
 * TM-score = max sum_k 1 / (1 + (d_k / d0)^2) / L; GDT-TS = mean over c in {1, 2, 4, 8} of
 * max #{d_k <= c} / L; GDT-HA likewise with {0.5, 1, 2, 4}. Unpaired reference residues count in L
 * and score zero. */
#ifndef MF_EVAL_TMSCORE_H
#define MF_EVAL_TMSCORE_H

#include <stdint.h>

#include "core/status.h"
#include "eval/superpose.h"

typedef struct {
    double tm_score;
    double gdt_ts, gdt_ha;
    double rmsd;           /* over all n pairs after one least-squares superposition */
    double d0;             /* Angstrom */
    int64_t n_aligned;     /* pairs given */
    int64_t l_norm;        /* normalising length */
    mf_superposition best; /* pred onto ref with the best TM-score: rot, trans (rmsd unset) */
    int64_t gdt_count[5];  /* best counts under 0.5, 1, 2, 4, 8 Angstrom */
} mf_tmscore_result;

/* d0 of TM-score for a normalising length l (TMscore program's formula, min 0.5). */
double mf_tmscore_d0(int64_t l);

/* pred[k] and ref[k] are the k-th pair, in sequence order (the seed windows slide over k);
 * l_norm >= n. Fewer than 3 pairs fail (MF_ERR_INVALID), non-finite coordinates too
 * (MF_ERR_NUMERIC); collinear pairs fail for the RMSD's superposition. */
mf_status mf_tmscore(const double *pred /* [n, 3] */, const double *ref /* [n, 3] */, int64_t n,
                     int64_t l_norm, mf_tmscore_result *out);

#endif
