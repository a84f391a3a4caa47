/* Optimal rigid superposition (Kabsch problem) by the quaternion method (Horn, J. Opt. Soc. Am. A
 * 4:629, 1987): the best proper rotation is the eigenvector of the largest eigenvalue of a 4x4
 * symmetric matrix built from the cross-covariance, so a reflection can never be returned and no
 * determinant sign fix is needed. Eigenvectors come from cyclic Jacobi rotations in double, which
 * converge for every symmetric matrix, repeated eigenvalues included (degenerate point sets).
 *
 * Convention: the superposition maps x onto y, y_k ~ rot * x_k + trans. */
#ifndef MF_EVAL_SUPERPOSE_H
#define MF_EVAL_SUPERPOSE_H

#include <stdbool.h>
#include <stdint.h>

#include "core/status.h"

typedef struct {
    double rot[3][3]; /* proper rotation, det +1, row-major: (rot x)_a = sum_b rot[a][b] x_b */
    double trans[3];
    double rmsd;     /* sqrt(sum_k w_k |rot x_k + trans - y_k|^2 / sum_k w_k), Angstrom */
    bool degenerate; /* fewer than 3 points or either set (nearly) collinear: rot is one of
                        several optimal rotations */
} mf_superposition;

/* Relative size of the second principal moment below which a point set counts as collinear:
 * second moment <= MF_SUPERPOSE_COLLINEAR_REL * largest moment (a spread across the line of
 * 1e-5 times its length). */
#define MF_SUPERPOSE_COLLINEAR_REL 1e-10

/* Superposes x onto y (n points each, optional weights w >= 0, NULL for all 1). With
 * allow_degenerate false, fewer than 3 points or a (nearly) collinear x or y fails with
 * MF_ERR_INVALID naming the case, because the rotation is then not determined; with it true such
 * sets give one optimal rotation and out->degenerate set (n >= 1 still required). Non-finite
 * coordinates or weights fail with MF_ERR_NUMERIC; zero total weight with MF_ERR_INVALID. */
mf_status mf_superpose(const double *x /* [n, 3] */, const double *y /* [n, 3] */,
                       const double *w /* [n] or NULL */, int64_t n, bool allow_degenerate,
                       mf_superposition *out);

/* The rotation and translation only (rmsd 0, degenerate false), for inner loops over points
 * already validated (finite, n >= 1): no checks, no residuals, no degeneracy test. */
void mf_superpose_fit(const double *x /* [n, 3] */, const double *y /* [n, 3] */, int64_t n,
                      mf_superposition *out);

/* out_k = rot * x_k + trans; out may equal x. */
void mf_superposition_apply(const mf_superposition *s, const double *x /* [n, 3] */, int64_t n,
                            double *out /* [n, 3] */);

/* RMSD after optimal superposition of x onto y (strict: >= 3 points, neither set collinear). */
mf_status mf_rmsd_superposed(const double *x /* [n, 3] */, const double *y /* [n, 3] */, int64_t n,
                             double *rmsd);

/* Eigen-decomposition of a symmetric dim x dim matrix (dim <= 4) by cyclic Jacobi rotations:
 * eigenvalues in decreasing order, eigenvectors as the columns of vec (row-major [dim, dim]).
 * a is not modified. Exposed for the tests. */
void mf_symmetric_eigen(const double *a /* [dim, dim] */, int dim, double *eval /* [dim] */,
                        double *evec /* [dim, dim] */);

#endif
