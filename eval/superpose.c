/* Kabsch superposition by the quaternion method; see superpose.h. */
#include "eval/superpose.h"

#include <math.h>
#include <string.h>

void mf_symmetric_eigen(const double *a, int dim, double *eval, double *evec)
{
    double m[4][4], v[4][4];
    double frob2 = 0.0;
    for (int i = 0; i < dim; i++)
        for (int j = 0; j < dim; j++) {
            m[i][j] = a[i * dim + j];
            v[i][j] = i == j ? 1.0 : 0.0;
            frob2 += m[i][j] * m[i][j];
        }
    /* Cyclic Jacobi: each rotation zeroes one off-diagonal element; the off-diagonal mass falls
     * quadratically once small, so a few sweeps reach double precision. */
    for (int sweep = 0; sweep < 64 && frob2 > 0.0; sweep++) {
        double off = 0.0;
        for (int p = 0; p < dim; p++)
            for (int q = p + 1; q < dim; q++) off += m[p][q] * m[p][q];
        if (off <= 1e-32 * frob2) break;
        for (int p = 0; p < dim; p++)
            for (int q = p + 1; q < dim; q++) {
                if (m[p][q] == 0.0) continue;
                double theta = (m[q][q] - m[p][p]) / (2.0 * m[p][q]);
                /* t = tan(phi), the smaller root of t^2 + 2 t theta - 1 = 0 (stable rotation) */
                double t = (theta >= 0.0 ? 1.0 : -1.0) / (fabs(theta) + sqrt(theta * theta + 1.0));
                if (!isfinite(t)) t = 0.0; /* theta overflowed: the element is negligible */
                double c = 1.0 / sqrt(t * t + 1.0), s = t * c;
                for (int k = 0; k < dim; k++) {
                    double kp = m[k][p], kq = m[k][q];
                    m[k][p] = c * kp - s * kq;
                    m[k][q] = s * kp + c * kq;
                }
                for (int k = 0; k < dim; k++) {
                    double pk = m[p][k], qk = m[q][k];
                    m[p][k] = c * pk - s * qk;
                    m[q][k] = s * pk + c * qk;
                }
                for (int k = 0; k < dim; k++) {
                    double kp = v[k][p], kq = v[k][q];
                    v[k][p] = c * kp - s * kq;
                    v[k][q] = s * kp + c * kq;
                }
            }
    }
    int order[4] = {0, 1, 2, 3};
    for (int i = 0; i < dim; i++) /* insertion sort, decreasing; stable for equal values */
        for (int j = i; j > 0 && m[order[j]][order[j]] > m[order[j - 1]][order[j - 1]]; j--) {
            int tmp = order[j];
            order[j] = order[j - 1];
            order[j - 1] = tmp;
        }
    for (int i = 0; i < dim; i++) {
        eval[i] = m[order[i]][order[i]];
        for (int k = 0; k < dim; k++) evec[k * dim + i] = v[k][order[i]];
    }
}

/* Second principal moment <= MF_SUPERPOSE_COLLINEAR_REL * the largest (all points on a line or
 * at one place). */
static bool is_collinear(const double cov[3][3])
{
    double ev[3], evec[9];
    mf_symmetric_eigen(&cov[0][0], 3, ev, evec);
    return ev[1] <= MF_SUPERPOSE_COLLINEAR_REL * ev[0];
}

/* Horn's N: q^T N q = sum_k w_k y_k . (R(q) x_k) for a unit quaternion q; the eigenvector of its
 * largest eigenvalue is the best proper rotation. s is the centred cross-covariance
 * s[a][b] = sum_k w_k x_ka y_kb. */
static void rotation_from_covariance(const double s[3][3], double r[3][3])
{
    const double sxx = s[0][0], sxy = s[0][1], sxz = s[0][2];
    const double syx = s[1][0], syy = s[1][1], syz = s[1][2];
    const double szx = s[2][0], szy = s[2][1], szz = s[2][2];
    const double nmat[16] = {
        sxx + syy + szz, syz - szy, szx - sxz, sxy - syx,        syz - szy,        sxx - syy - szz,
        sxy + syx,       szx + sxz, szx - sxz, sxy + syx,        -sxx + syy - szz, syz + szy,
        sxy - syx,       szx + sxz, syz + szy, -sxx - syy + szz,
    };
    double ev[4], evec[16];
    mf_symmetric_eigen(nmat, 4, ev, evec);
    double q0 = evec[0], q1 = evec[4], q2 = evec[8], q3 = evec[12];
    double qn = sqrt(q0 * q0 + q1 * q1 + q2 * q2 + q3 * q3);
    q0 /= qn;
    q1 /= qn;
    q2 /= qn;
    q3 /= qn;
    r[0][0] = q0 * q0 + q1 * q1 - q2 * q2 - q3 * q3;
    r[0][1] = 2.0 * (q1 * q2 - q0 * q3);
    r[0][2] = 2.0 * (q1 * q3 + q0 * q2);
    r[1][0] = 2.0 * (q1 * q2 + q0 * q3);
    r[1][1] = q0 * q0 - q1 * q1 + q2 * q2 - q3 * q3;
    r[1][2] = 2.0 * (q2 * q3 - q0 * q1);
    r[2][0] = 2.0 * (q1 * q3 - q0 * q2);
    r[2][1] = 2.0 * (q2 * q3 + q0 * q1);
    r[2][2] = q0 * q0 - q1 * q1 - q2 * q2 + q3 * q3;
}

mf_status mf_superpose(const double *x, const double *y, const double *w, int64_t n,
                       bool allow_degenerate, mf_superposition *out)
{
    MF_REQUIRE(x && y && out, "superpose: NULL argument");
    memset(out, 0, sizeof *out);
    MF_REQUIRE(n >= 1, "superpose: no points (n = %lld)", (long long)n);
    if (!allow_degenerate && n < 3)
        return MF_ERROR(MF_ERR_INVALID,
                        "superpose: %lld point pair(s); a rotation needs at least 3 that are not "
                        "collinear",
                        (long long)n);
    double wsum = 0.0, cx[3] = {0, 0, 0}, cy[3] = {0, 0, 0};
    for (int64_t k = 0; k < n; k++) {
        double wk = w ? w[k] : 1.0;
        if (!isfinite(wk) || wk < 0.0)
            return MF_ERROR(wk < 0.0 ? MF_ERR_INVALID : MF_ERR_NUMERIC,
                            "superpose: weight %lld is %g", (long long)k, wk);
        for (int a = 0; a < 3; a++)
            if (!isfinite(x[3 * k + a]) || !isfinite(y[3 * k + a]))
                return MF_ERROR(MF_ERR_NUMERIC, "superpose: point %lld is not finite (%g, %g)",
                                (long long)k, x[3 * k + a], y[3 * k + a]);
        wsum += wk;
        for (int a = 0; a < 3; a++) {
            cx[a] += wk * x[3 * k + a];
            cy[a] += wk * y[3 * k + a];
        }
    }
    MF_REQUIRE(wsum > 0.0, "superpose: all %lld weights are zero", (long long)n);
    for (int a = 0; a < 3; a++) {
        cx[a] /= wsum;
        cy[a] /= wsum;
    }
    double s[3][3] = {{0}}, covx[3][3] = {{0}}, covy[3][3] = {{0}};
    for (int64_t k = 0; k < n; k++) {
        double wk = w ? w[k] : 1.0, dx[3], dy[3];
        for (int a = 0; a < 3; a++) {
            dx[a] = x[3 * k + a] - cx[a];
            dy[a] = y[3 * k + a] - cy[a];
        }
        for (int a = 0; a < 3; a++)
            for (int b = 0; b < 3; b++) {
                s[a][b] += wk * dx[a] * dy[b];
                covx[a][b] += wk * dx[a] * dx[b];
                covy[a][b] += wk * dy[a] * dy[b];
            }
    }
    bool collinear_x = is_collinear(covx), collinear_y = is_collinear(covy);
    out->degenerate = n < 3 || collinear_x || collinear_y;
    if (out->degenerate && !allow_degenerate)
        return MF_ERROR(MF_ERR_INVALID,
                        "superpose: the %s point set (%lld points) is collinear, so the rotation "
                        "is not determined",
                        collinear_x ? "first" : "second", (long long)n);

    double(*r)[3] = out->rot;
    rotation_from_covariance(s, r);
    for (int a = 0; a < 3; a++)
        out->trans[a] = cy[a] - (r[a][0] * cx[0] + r[a][1] * cx[1] + r[a][2] * cx[2]);

    /* From the residuals themselves rather than E0 - 2 lambda_max, which cancels to noise (or a
     * negative number) for near-identical sets. */
    double e = 0.0;
    for (int64_t k = 0; k < n; k++) {
        double wk = w ? w[k] : 1.0;
        for (int a = 0; a < 3; a++) {
            double d = r[a][0] * x[3 * k] + r[a][1] * x[3 * k + 1] + r[a][2] * x[3 * k + 2] +
                       out->trans[a] - y[3 * k + a];
            e += wk * d * d;
        }
    }
    out->rmsd = sqrt(e / wsum);
    return MF_OK;
}

void mf_superposition_apply(const mf_superposition *s, const double *x, int64_t n, double *out)
{
    for (int64_t k = 0; k < n; k++) {
        double p[3] = {x[3 * k], x[3 * k + 1], x[3 * k + 2]};
        for (int a = 0; a < 3; a++)
            out[3 * k + a] =
                s->rot[a][0] * p[0] + s->rot[a][1] * p[1] + s->rot[a][2] * p[2] + s->trans[a];
    }
}

mf_status mf_rmsd_superposed(const double *x, const double *y, int64_t n, double *rmsd)
{
    MF_REQUIRE(rmsd, "rmsd: NULL output");
    mf_superposition s;
    MF_TRY(mf_superpose(x, y, NULL, n, false, &s));
    *rmsd = s.rmsd;
    return MF_OK;
}

void mf_superpose_fit(const double *x, const double *y, int64_t n, mf_superposition *out)
{
    double cx[3] = {0, 0, 0}, cy[3] = {0, 0, 0}, s[3][3] = {{0}};
    for (int64_t k = 0; k < n; k++)
        for (int a = 0; a < 3; a++) {
            cx[a] += x[3 * k + a];
            cy[a] += y[3 * k + a];
        }
    for (int a = 0; a < 3; a++) {
        cx[a] /= (double)n;
        cy[a] /= (double)n;
    }
    for (int64_t k = 0; k < n; k++) {
        double dx[3] = {x[3 * k] - cx[0], x[3 * k + 1] - cx[1], x[3 * k + 2] - cx[2]};
        double dy[3] = {y[3 * k] - cy[0], y[3 * k + 1] - cy[1], y[3 * k + 2] - cy[2]};
        for (int a = 0; a < 3; a++)
            for (int b = 0; b < 3; b++) s[a][b] += dx[a] * dy[b];
    }
    memset(out, 0, sizeof *out);
    rotation_from_covariance(s, out->rot);
    for (int a = 0; a < 3; a++)
        out->trans[a] =
            cy[a] - (out->rot[a][0] * cx[0] + out->rot[a][1] * cx[1] + out->rot[a][2] * cx[2]);
}
