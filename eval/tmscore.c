/* TM-score and GDT by the TMscore program's superposition search; see tmscore.h. */
#include "eval/tmscore.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define TM_MAX_ITER   20 /* refinement rounds per seed (TMscore's n_it) */
#define TM_MAX_SEEDS  6  /* seed lengths n, n/2, ..., then the minimum (TMscore's n_init_max) */
#define TM_MIN_SEED   4  /* shortest seed window (TMscore's L_ini_min) */
#define TM_CUT_GROWTH 0.5

double mf_tmscore_d0(int64_t l)
{
    double d0 = l > 15 ? 1.24 * cbrt((double)(l - 15)) - 1.8 : 0.5;
    return d0 < 0.5 ? 0.5 : d0;
}

/* GDT cut-offs 0.5, 1, 2, 4, 8 A, squared (exact in binary) */
static const double gdt_cutoffs2[5] = {0.25, 1.0, 4.0, 16.0, 64.0};

typedef struct {
    const double *pred, *ref;
    int64_t n;
    double d0;
    double *sel_x;  /* [n, 3] */
    double *sel_y;  /* [n, 3] */
    double *dist2;  /* [n] squared pair distances under the current superposition */
    int64_t *close; /* [n] pairs under the cut-off after scoring (TMscore's i_ali) */
    int64_t n_close;
    int64_t *used; /* [n] pairs the current superposition was fitted on (TMscore's k_ali) */
    int64_t n_used;
    double best_tm;
    mf_superposition best;
    int64_t gdt_best[5];
} tm_search;

/* Fits on the pairs in s->used; false when there is nothing to fit. Degenerate subsets (1-2
 * pairs, collinear pairs) still give an optimal proper rotation, as TMscore's u3b does. */
static bool fit_used(tm_search *s, mf_superposition *sup)
{
    if (s->n_used < 1) return false;
    for (int64_t i = 0; i < s->n_used; i++) {
        memcpy(s->sel_x + 3 * i, s->pred + 3 * s->used[i], 3 * sizeof(double));
        memcpy(s->sel_y + 3 * i, s->ref + 3 * s->used[i], 3 * sizeof(double));
    }
    mf_superpose_fit(s->sel_x, s->sel_y, s->n_used, sup);
    return true;
}

/* Scores the current superposition, keeps the maxima, and collects the pairs closer than `cut`
 * (widened by 0.5 until 3 are in, when more than 3 pairs exist). */
static void score_superposition(tm_search *s, const mf_superposition *sup, double cut)
{
    double tm = 0.0, inv_d02 = 1.0 / (s->d0 * s->d0);
    int64_t gdt[5] = {0, 0, 0, 0, 0};
    const double(*r)[3] = sup->rot;
    const double *t = sup->trans;
    for (int64_t k = 0; k < s->n; k++) {
        const double *p = s->pred + 3 * k, *q = s->ref + 3 * k;
        double dx = r[0][0] * p[0] + r[0][1] * p[1] + r[0][2] * p[2] + t[0] - q[0];
        double dy = r[1][0] * p[0] + r[1][1] * p[1] + r[1][2] * p[2] + t[1] - q[1];
        double dz = r[2][0] * p[0] + r[2][1] * p[1] + r[2][2] * p[2] + t[2] - q[2];
        double d2 = dx * dx + dy * dy + dz * dz;
        s->dist2[k] = d2;
        tm += 1.0 / (1.0 + d2 * inv_d02);
        for (int c = 0; c < 5; c++) gdt[c] += d2 <= gdt_cutoffs2[c];
    }
    for (;;) {
        s->n_close = 0;
        for (int64_t k = 0; k < s->n; k++)
            if (s->dist2[k] < cut * cut) s->close[s->n_close++] = k;
        if (s->n_close >= 3 || s->n <= 3) break;
        cut += TM_CUT_GROWTH;
    }
    if (tm > s->best_tm) {
        s->best_tm = tm;
        s->best = *sup;
    }
    for (int c = 0; c < 5; c++)
        if (gdt[c] > s->gdt_best[c]) s->gdt_best[c] = gdt[c];
}

mf_status mf_tmscore(const double *pred, const double *ref, int64_t n, int64_t l_norm,
                     mf_tmscore_result *out)
{
    MF_REQUIRE(pred && ref && out, "tm-score: NULL argument");
    memset(out, 0, sizeof *out);
    if (n < 3)
        return MF_ERROR(MF_ERR_INVALID,
                        "tm-score: %lld aligned residue pair(s); at least 3 are needed",
                        (long long)n);
    MF_REQUIRE(l_norm >= n, "tm-score: normalising length %lld < %lld aligned pairs",
               (long long)l_norm, (long long)n);
    /* the global superposition also validates the coordinates (finite, not collinear) */
    mf_superposition global;
    mf_status st = mf_superpose(pred, ref, NULL, n, false, &global);
    if (st != MF_OK) return mf_error_context(st, "tm-score over %lld pairs", (long long)n);

    tm_search s = {.pred = pred, .ref = ref, .n = n, .d0 = mf_tmscore_d0(l_norm), .best_tm = -1.0};
    double d0_search = s.d0 < 4.5 ? 4.5 : s.d0 > 8.0 ? 8.0 : s.d0;
    s.sel_x = malloc((size_t)n * 3 * sizeof(double));
    s.sel_y = malloc((size_t)n * 3 * sizeof(double));
    s.close = malloc((size_t)n * sizeof(int64_t));
    s.used = malloc((size_t)n * sizeof(int64_t));
    s.dist2 = malloc((size_t)n * sizeof(double));
    if (!s.sel_x || !s.sel_y || !s.close || !s.used || !s.dist2) {
        free(s.sel_x), free(s.sel_y), free(s.close), free(s.used), free(s.dist2);
        return MF_ERROR(MF_ERR_NOMEM, "tm-score: work arrays for %lld pairs", (long long)n);
    }

    int64_t seed_len[TM_MAX_SEEDS], n_seeds = 0;
    int64_t min_seed = n < TM_MIN_SEED ? n : TM_MIN_SEED;
    for (int i = 0; i < TM_MAX_SEEDS - 1; i++) {
        int64_t len = n >> i;
        if (len <= min_seed) {
            seed_len[n_seeds++] = min_seed;
            goto seeds_done;
        }
        seed_len[n_seeds++] = len;
    }
    seed_len[n_seeds++] = min_seed;
seeds_done:

    for (int64_t si = 0; si < n_seeds; si++) {
        int64_t len = seed_len[si];
        for (int64_t start = 0; start + len <= n; start++) {
            mf_superposition sup;
            s.n_used = len;
            for (int64_t i = 0; i < len; i++) s.used[i] = start + i;
            if (!fit_used(&s, &sup)) continue;
            score_superposition(&s, &sup, d0_search - 1.0);
            for (int it = 1; it <= TM_MAX_ITER; it++) {
                s.n_used = s.n_close;
                memcpy(s.used, s.close, (size_t)s.n_close * sizeof(int64_t));
                if (!fit_used(&s, &sup)) break;
                score_superposition(&s, &sup, d0_search + 1.0);
                if (it == TM_MAX_ITER) break;
                if (s.n_close == s.n_used &&
                    !memcmp(s.close, s.used, (size_t)s.n_close * sizeof(int64_t)))
                    break; /* the fitted set reproduces itself */
            }
        }
    }

    out->tm_score = s.best_tm / (double)l_norm;
    out->gdt_ts = (double)(s.gdt_best[1] + s.gdt_best[2] + s.gdt_best[3] + s.gdt_best[4]) /
                  (4.0 * (double)l_norm);
    out->gdt_ha = (double)(s.gdt_best[0] + s.gdt_best[1] + s.gdt_best[2] + s.gdt_best[3]) /
                  (4.0 * (double)l_norm);
    out->rmsd = global.rmsd;
    out->d0 = s.d0;
    out->n_aligned = n;
    out->l_norm = l_norm;
    out->best = s.best;
    memcpy(out->gdt_count, s.gdt_best, sizeof s.gdt_best);
    free(s.sel_x), free(s.sel_y), free(s.close), free(s.used), free(s.dist2);
    return MF_OK;
}
