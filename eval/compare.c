#include "eval/compare.h"

#include <math.h>

static bool skipped(int64_t row, const int64_t *skip, int n_skip)
{
    for (int i = 0; i < n_skip; i++)
        if (skip[i] == row) return true;
    return false;
}

mf_compare_result mf_compare_maxrel(const float *cand, const float *ref, int64_t n, int64_t row_len,
                                    const int64_t *skip, int n_skip, double tol, double abs_scale)
{
    mf_compare_result r = {.tol = tol, .absolute = abs_scale > 0};
    for (int64_t i = 0; i < n; i++) {
        if (skip && row_len > 0 && skipped(i / row_len, skip, n_skip)) continue;
        double c = cand[i], f = ref[i];
        if (!isfinite(c)) r.nan = true;
        double d = fabs(c - f);
        if (d > r.max_err) r.max_err = d;
        if (fabs(f) > r.max_ref) r.max_ref = fabs(f);
        r.n++;
    }
    if (r.absolute) r.max_ref = abs_scale;
    r.rel = r.max_ref > 0 ? r.max_err / r.max_ref : r.max_err;
    r.pass = !r.nan && r.rel <= tol;
    return r;
}
