/* The comparison metric for reference vectors and whole-model outputs (DESIGN.md, testvectors
 * README): max|candidate - reference| / max|reference| per dataset; for gradients that are exactly
 * zero in exact arithmetic, max|candidate - reference| / scale (the file's grad_scale). Optional
 * skipped rows (leading-index rows of the dataset) are left out. NaN anywhere fails. */
#ifndef MF_EVAL_COMPARE_H
#define MF_EVAL_COMPARE_H

#include <stdbool.h>
#include <stdint.h>

typedef struct {
    double max_err; /* max |cand - ref| over compared elements */
    double max_ref; /* max |ref| (or the absolute scale) */
    double rel;     /* max_err / max_ref */
    double tol;
    bool absolute; /* compared against a fixed scale */
    bool nan;      /* a NaN or Inf was seen in the candidate */
    bool pass;
    int64_t n; /* elements compared */
} mf_compare_result;

/* row_len: elements per leading-index row (for skip_rows); skip may be NULL. abs_scale > 0 selects
 * the absolute rule. */
mf_compare_result mf_compare_maxrel(const float *cand, const float *ref, int64_t n, int64_t row_len,
                                    const int64_t *skip, int n_skip, double tol, double abs_scale);

#endif
