/* Feature construction of the embedders (see embedders.h): one-hots, distograms, pseudo-beta and
 * masks on the host, with no gradient. */
#include <math.h>
#include <string.h>

#include "model/embedders.h"
#include "protein/residue_constants.h"

/* AF2 atom37 indices and restype G (residue_constants.atom_order / restype_order). */
enum { ATOM_N = 0, ATOM_CA = 1, ATOM_C = 2, ATOM_CB = 3, RESTYPE_GLY = 7 };

static mf_status check_host(const mf_tensor *t, const char *name)
{
    MF_REQUIRE(t && t->data, "%s is missing", name);
    MF_REQUIRE(t->device == MF_DEV_CPU, "%s must be a host tensor (features are built on the host)",
               name);
    return MF_OK;
}

/* A host tensor of real values (f32 or f64) with n elements. */
static mf_status check_real(const mf_tensor *t, const char *name, int64_t n)
{
    MF_TRY(check_host(t, name));
    char b[96];
    if (t->dtype != MF_F32 && t->dtype != MF_F64)
        return MF_ERROR(MF_ERR_INVALID, "%s is %s: expected f32 or f64", name,
                        mf_tensor_describe(t, b, sizeof b));
    if (n >= 0 && mf_tensor_numel(t) != n)
        return MF_ERROR(MF_ERR_INVALID, "%s is %s: expected %lld elements", name,
                        mf_tensor_describe(t, b, sizeof b), (long long)n);
    return MF_OK;
}

static mf_status check_index(const mf_tensor *t, const char *name, int64_t n)
{
    MF_TRY(check_host(t, name));
    char b[96];
    if (t->dtype != MF_I32 || mf_tensor_numel(t) != n)
        return MF_ERROR(MF_ERR_INVALID, "%s is %s: expected i32 with %lld elements", name,
                        mf_tensor_describe(t, b, sizeof b), (long long)n);
    return MF_OK;
}

/* out must be f32/f64 with exactly this shape. */
static mf_status check_out(const mf_tensor *t, const char *name, int ndim, const int64_t *shape)
{
    MF_TRY(check_real(t, name, -1));
    bool ok = t->ndim == ndim;
    for (int k = 0; ok && k < ndim; k++) ok = t->shape[k] == shape[k];
    if (!ok) {
        char b[96], e[96];
        mf_tensor want = mf_tensor_make(NULL, t->dtype, MF_DEV_CPU, ndim, shape);
        return MF_ERROR(MF_ERR_INVALID, "%s is %s, expected %s", name,
                        mf_tensor_describe(t, b, sizeof b), mf_tensor_describe(&want, e, sizeof e));
    }
    return MF_OK;
}

static inline double get(const mf_tensor *t, int64_t i)
{
    return t->dtype == MF_F64 ? ((const double *)t->data)[i] : (double)((const float *)t->data)[i];
}

static inline void put(mf_tensor *t, int64_t i, double v)
{
    if (t->dtype == MF_F64)
        ((double *)t->data)[i] = v;
    else
        ((float *)t->data)[i] = (float)v;
}

static inline int32_t iget(const mf_tensor *t, int64_t i)
{
    return ((const int32_t *)t->data)[i];
}

static void zero(mf_tensor *t)
{
    memset(t->data, 0, mf_tensor_bytes(t));
}

/* ---- relative positions (Alg. 4) ------------------------------------------------------------ */

static int32_t relpos_bin(int32_t ri, int32_t rj, int64_t r)
{
    int64_t off = (int64_t)ri - (int64_t)rj + r;
    return (int32_t)(off < 0 ? 0 : off > 2 * r ? 2 * r : off);
}

mf_status mf_relpos_bins(mf_tensor *bins, const mf_tensor *residue_index,
                         int64_t max_relative_feature)
{
    MF_REQUIRE(max_relative_feature > 0 && max_relative_feature < (1 << 29),
               "relpos: max_relative_feature = %lld out of range", (long long)max_relative_feature);
    MF_TRY(check_host(residue_index, "residue_index"));
    const int64_t N = mf_tensor_numel(residue_index);
    MF_TRY(check_index(residue_index, "residue_index", N));
    MF_TRY(check_index(bins, "relpos bins [N, N]", N * N));
    int32_t *b = bins->data;
    for (int64_t i = 0; i < N; i++)
        for (int64_t j = 0; j < N; j++)
            b[i * N + j] =
                relpos_bin(iget(residue_index, i), iget(residue_index, j), max_relative_feature);
    return MF_OK;
}

mf_status mf_relpos_one_hot(mf_tensor *out, const mf_tensor *residue_index,
                            int64_t max_relative_feature)
{
    MF_REQUIRE(max_relative_feature > 0 && max_relative_feature < (1 << 29),
               "relpos: max_relative_feature = %lld out of range", (long long)max_relative_feature);
    MF_TRY(check_host(residue_index, "residue_index"));
    const int64_t N = mf_tensor_numel(residue_index), K = 2 * max_relative_feature + 1;
    MF_TRY(check_index(residue_index, "residue_index", N));
    MF_TRY(check_out(out, "relpos one-hot", 3, (const int64_t[]){N, N, K}));
    zero(out);
    for (int64_t i = 0; i < N; i++)
        for (int64_t j = 0; j < N; j++)
            put(out,
                (i * N + j) * K + relpos_bin(iget(residue_index, i), iget(residue_index, j),
                                             max_relative_feature),
                1.0);
    return MF_OK;
}

/* ---- distograms ----------------------------------------------------------------------------- */

#define MF_MAX_DGRAM_BINS 256

typedef struct {
    int64_t n;
    double lower[MF_MAX_DGRAM_BINS], upper[MF_MAX_DGRAM_BINS]; /* squared edges */
    float lower_f[MF_MAX_DGRAM_BINS], upper_f[MF_MAX_DGRAM_BINS];
} dgram_edges;

static mf_status make_edges(dgram_edges *e, int64_t num_bins, double min_bin, double max_bin)
{
    MF_REQUIRE(num_bins >= 2 && num_bins <= MF_MAX_DGRAM_BINS,
               "dgram: num_bins = %lld must be in 2..%d", (long long)num_bins, MF_MAX_DGRAM_BINS);
    MF_REQUIRE(isfinite(min_bin) && isfinite(max_bin) && min_bin >= 0.0 && max_bin > min_bin,
               "dgram: bins %g..%g must satisfy 0 <= min_bin < max_bin", min_bin, max_bin);
    e->n = num_bins;
    /* linspace, then squared (AF2 squares the edges in the distogram's precision). */
    for (int64_t b = 0; b < num_bins; b++) {
        double x = b == num_bins - 1
                       ? max_bin
                       : min_bin + (max_bin - min_bin) * (double)b / (double)(num_bins - 1);
        e->lower[b] = x * x;
        float xf = (float)x;
        e->lower_f[b] = xf * xf;
    }
    for (int64_t b = 0; b < num_bins; b++) {
        e->upper[b] = b + 1 < num_bins ? e->lower[b + 1] : MF_DGRAM_UPPER_LAST;
        e->upper_f[b] = b + 1 < num_bins ? e->lower_f[b + 1] : (float)MF_DGRAM_UPPER_LAST;
    }
    return MF_OK;
}

/* The bin of pair (i, j) or -1; squared distance summed over x, y, z in the positions' precision.
 */
static int32_t dgram_bin(const dgram_edges *e, const mf_tensor *pos, int64_t i, int64_t j)
{
    if (pos->dtype == MF_F64) {
        const double *p = pos->data;
        double d2 = 0.0;
        for (int k = 0; k < 3; k++) {
            double t = p[3 * i + k] - p[3 * j + k];
            d2 += t * t;
        }
        for (int64_t b = 0; b < e->n; b++)
            if (d2 > e->lower[b] && d2 < e->upper[b]) return (int32_t)b;
        return -1;
    }
    const float *p = pos->data;
    float d2 = 0.0f;
    for (int k = 0; k < 3; k++) {
        float t = p[3 * i + k] - p[3 * j + k];
        d2 += t * t;
    }
    for (int64_t b = 0; b < e->n; b++)
        if (d2 > e->lower_f[b] && d2 < e->upper_f[b]) return (int32_t)b;
    return -1;
}

mf_status mf_dgram_bins(mf_tensor *bins, const mf_tensor *positions, int64_t num_bins,
                        double min_bin, double max_bin)
{
    dgram_edges e;
    MF_TRY(make_edges(&e, num_bins, min_bin, max_bin));
    MF_TRY(check_real(positions, "dgram positions [N, 3]", -1));
    const int64_t n3 = mf_tensor_numel(positions), N = n3 / 3;
    MF_REQUIRE(n3 % 3 == 0, "dgram positions must have 3N elements (has %lld)", (long long)n3);
    MF_TRY(check_index(bins, "dgram bins [N, N]", N * N));
    int32_t *b = bins->data;
    for (int64_t i = 0; i < N; i++)
        for (int64_t j = 0; j < N; j++) b[i * N + j] = dgram_bin(&e, positions, i, j);
    return MF_OK;
}

mf_status mf_dgram_one_hot(mf_tensor *out, int64_t row0, const mf_tensor *positions,
                           int64_t num_bins, double min_bin, double max_bin)
{
    dgram_edges e;
    MF_TRY(make_edges(&e, num_bins, min_bin, max_bin));
    MF_TRY(check_real(positions, "dgram positions [N, 3]", -1));
    const int64_t n3 = mf_tensor_numel(positions), N = n3 / 3;
    MF_REQUIRE(n3 % 3 == 0, "dgram positions must have 3N elements (has %lld)", (long long)n3);
    MF_TRY(check_real(out, "dgram one-hot [rows, N, bins]", -1));
    MF_REQUIRE(out->ndim == 3 && out->shape[1] == N && out->shape[2] == num_bins && row0 >= 0 &&
                   row0 + out->shape[0] <= N,
               "dgram one-hot: out must be [rows, %lld, %lld] with rows %lld.. inside %lld",
               (long long)N, (long long)num_bins, (long long)row0, (long long)N);
    zero(out);
    for (int64_t r = 0; r < out->shape[0]; r++)
        for (int64_t j = 0; j < N; j++) {
            int32_t b = dgram_bin(&e, positions, row0 + r, j);
            if (b >= 0) put(out, (r * N + j) * num_bins + b, 1.0);
        }
    return MF_OK;
}

/* ---- pseudo-beta ---------------------------------------------------------------------------- */

mf_status mf_pseudo_beta(mf_tensor *pseudo_beta, mf_tensor *pseudo_beta_mask,
                         const mf_tensor *aatype, const mf_tensor *all_atom_positions,
                         const mf_tensor *all_atom_mask)
{
    MF_TRY(check_host(aatype, "aatype"));
    const int64_t N = mf_tensor_numel(aatype);
    MF_TRY(check_index(aatype, "aatype", N));
    MF_TRY(check_real(all_atom_positions, "all_atom_positions [N, 37, 3]", N * MF_ATOM37 * 3));
    MF_TRY(check_real(pseudo_beta, "pseudo_beta [N, 3]", N * 3));
    if (pseudo_beta_mask) {
        MF_REQUIRE(all_atom_mask, "pseudo_beta: the mask needs all_atom_mask");
        MF_TRY(check_real(pseudo_beta_mask, "pseudo_beta_mask [N]", N));
        MF_TRY(check_real(all_atom_mask, "all_atom_mask [N, 37]", N * MF_ATOM37));
    }
    for (int64_t i = 0; i < N; i++) {
        int atom = iget(aatype, i) == RESTYPE_GLY ? ATOM_CA : ATOM_CB;
        for (int k = 0; k < 3; k++)
            put(pseudo_beta, 3 * i + k, get(all_atom_positions, (i * MF_ATOM37 + atom) * 3 + k));
        if (pseudo_beta_mask) put(pseudo_beta_mask, i, get(all_atom_mask, i * MF_ATOM37 + atom));
    }
    return MF_OK;
}

/* ---- extra MSA ------------------------------------------------------------------------------ */

mf_status mf_extra_msa_feat(mf_tensor *out, const mf_tensor *extra_msa,
                            const mf_tensor *has_deletion, const mf_tensor *deletion_value)
{
    MF_TRY(check_host(extra_msa, "extra_msa"));
    MF_REQUIRE(extra_msa->ndim == 2, "extra_msa must be [S, N] (has %d dims)", extra_msa->ndim);
    const int64_t S = extra_msa->shape[0], N = extra_msa->shape[1];
    MF_TRY(check_index(extra_msa, "extra_msa [S, N]", S * N));
    MF_TRY(check_real(has_deletion, "extra_has_deletion [S, N]", S * N));
    MF_TRY(check_real(deletion_value, "extra_deletion_value [S, N]", S * N));
    MF_TRY(check_out(out, "extra_msa_feat", 3, (const int64_t[]){S, N, MF_EXTRA_MSA_FEAT_DIM}));
    for (int64_t k = 0; k < S * N; k++) {
        int32_t a = iget(extra_msa, k);
        if (a < 0 || a >= MF_EXTRA_MSA_CLASSES)
            return MF_ERROR(MF_ERR_INVALID, "extra_msa[%lld, %lld] = %d is outside 0..%d",
                            (long long)(k / N), (long long)(k % N), (int)a,
                            MF_EXTRA_MSA_CLASSES - 1);
    }
    zero(out);
    for (int64_t k = 0; k < S * N; k++) {
        int64_t o = k * MF_EXTRA_MSA_FEAT_DIM;
        put(out, o + iget(extra_msa, k), 1.0);
        put(out, o + MF_EXTRA_MSA_CLASSES, get(has_deletion, k));
        put(out, o + MF_EXTRA_MSA_CLASSES + 1, get(deletion_value, k));
    }
    return MF_OK;
}

/* ---- template torsion features -------------------------------------------------------------- */

mf_status mf_template_angle_feat(mf_tensor *out, const mf_tensor *template_aatype,
                                 const mf_tensor *torsion_sin_cos,
                                 const mf_tensor *alt_torsion_sin_cos,
                                 const mf_tensor *torsion_mask)
{
    MF_TRY(check_host(template_aatype, "template_aatype"));
    MF_REQUIRE(template_aatype->ndim == 2, "template_aatype must be [T, N] (has %d dims)",
               template_aatype->ndim);
    const int64_t T = template_aatype->shape[0], N = template_aatype->shape[1], TN = T * N;
    MF_TRY(check_index(template_aatype, "template_aatype [T, N]", TN));
    MF_TRY(check_real(torsion_sin_cos, "template_torsion_angles_sin_cos [T, N, 7, 2]",
                      TN * MF_NUM_TORSIONS * 2));
    MF_TRY(check_real(alt_torsion_sin_cos, "template_alt_torsion_angles_sin_cos [T, N, 7, 2]",
                      TN * MF_NUM_TORSIONS * 2));
    MF_TRY(
        check_real(torsion_mask, "template_torsion_angles_mask [T, N, 7]", TN * MF_NUM_TORSIONS));
    MF_TRY(check_out(out, "template_angle_feat", 3,
                     (const int64_t[]){T, N, MF_TEMPLATE_ANGLE_FEAT_DIM}));
    for (int64_t k = 0; k < TN; k++) {
        int32_t a = iget(template_aatype, k);
        if (a < 0 || a >= MF_TEMPLATE_AATYPE_CLASSES)
            return MF_ERROR(MF_ERR_INVALID, "template_aatype[%lld, %lld] = %d is outside 0..%d",
                            (long long)(k / N), (long long)(k % N), (int)a,
                            MF_TEMPLATE_AATYPE_CLASSES - 1);
    }
    zero(out);
    const int A = MF_TEMPLATE_AATYPE_CLASSES, K = 2 * MF_NUM_TORSIONS;
    for (int64_t k = 0; k < TN; k++) {
        int64_t o = k * MF_TEMPLATE_ANGLE_FEAT_DIM;
        put(out, o + iget(template_aatype, k), 1.0);
        for (int c = 0; c < K; c++) {
            put(out, o + A + c, get(torsion_sin_cos, k * K + c));
            put(out, o + A + K + c, get(alt_torsion_sin_cos, k * K + c));
        }
        for (int c = 0; c < MF_NUM_TORSIONS; c++)
            put(out, o + A + 2 * K + c, get(torsion_mask, k * MF_NUM_TORSIONS + c));
    }
    return MF_OK;
}

mf_status mf_template_row_mask(mf_tensor *out, const mf_tensor *torsion_mask)
{
    MF_TRY(check_real(torsion_mask, "template_torsion_angles_mask [T, N, 7]", -1));
    MF_REQUIRE(torsion_mask->ndim == 3 && torsion_mask->shape[2] == MF_NUM_TORSIONS,
               "template_torsion_angles_mask must be [T, N, 7]");
    const int64_t T = torsion_mask->shape[0], N = torsion_mask->shape[1];
    MF_TRY(check_out(out, "template row mask", 2, (const int64_t[]){T, N}));
    for (int64_t k = 0; k < T * N; k++) put(out, k, get(torsion_mask, k * MF_NUM_TORSIONS + 2));
    return MF_OK;
}

/* ---- template pair feature ------------------------------------------------------------------ */

/* quat_affine.make_canonical_transform: the rotation (n_rot . c_rot) taking CA-relative vectors of
 * the residue into its frame (C on +x, N in the xy plane with positive y). Returned row-major. */
static void canonical_rotation(double rot[9], const double n_xyz[3], const double ca_xyz[3],
                               const double c_xyz[3])
{
    double n[3], c[3];
    for (int k = 0; k < 3; k++) n[k] = n_xyz[k] - ca_xyz[k], c[k] = c_xyz[k] - ca_xyz[k];
    const double eps = 1e-20;
    double rxy = sqrt(eps + c[0] * c[0] + c[1] * c[1]);
    double sin_c1 = -c[1] / rxy, cos_c1 = c[0] / rxy;
    double c1[9] = {cos_c1, -sin_c1, 0, sin_c1, cos_c1, 0, 0, 0, 1};
    double rxyz = sqrt(eps + c[0] * c[0] + c[1] * c[1] + c[2] * c[2]);
    double sin_c2 = c[2] / rxyz, cos_c2 = sqrt(c[0] * c[0] + c[1] * c[1]) / rxyz;
    double c2[9] = {cos_c2, 0, sin_c2, 0, 1, 0, -sin_c2, 0, cos_c2};
    double cr[9];
    for (int a = 0; a < 3; a++)
        for (int b = 0; b < 3; b++)
            cr[3 * a + b] =
                c2[3 * a] * c1[b] + c2[3 * a + 1] * c1[3 + b] + c2[3 * a + 2] * c1[6 + b];
    double nr[3];
    for (int a = 0; a < 3; a++)
        nr[a] = cr[3 * a] * n[0] + cr[3 * a + 1] * n[1] + cr[3 * a + 2] * n[2];
    double ryz = sqrt(eps + nr[1] * nr[1] + nr[2] * nr[2]);
    double sin_n = -nr[2] / ryz, cos_n = nr[1] / ryz;
    double nm[9] = {1, 0, 0, 0, cos_n, -sin_n, 0, sin_n, cos_n};
    for (int a = 0; a < 3; a++)
        for (int b = 0; b < 3; b++)
            rot[3 * a + b] =
                nm[3 * a] * cr[b] + nm[3 * a + 1] * cr[3 + b] + nm[3 * a + 2] * cr[6 + b];
}

static void atom_xyz(double out[3], const mf_tensor *pos, int64_t i, int atom)
{
    for (int k = 0; k < 3; k++) out[k] = get(pos, (i * MF_ATOM37 + atom) * 3 + k);
}

mf_status mf_template_pair_feat(mf_tensor *out, int64_t row0, const mf_tensor *pseudo_beta,
                                const mf_tensor *pseudo_beta_mask, const mf_tensor *aatype,
                                const mf_tensor *all_atom_positions, const mf_tensor *all_atom_mask,
                                const mf_template_pair_embedder_dims *d)
{
    MF_REQUIRE(d, "template pair feature: dims missing");
    dgram_edges e;
    MF_TRY(make_edges(&e, d->num_bins, d->min_bin, d->max_bin));
    const int64_t F = MF_TEMPLATE_PAIR_FEAT_DIM(d->num_bins);
    MF_REQUIRE(d->pair_feat_dim == F,
               "template pair feature: pair_feat_dim = %lld, but %lld bins give %lld channels",
               (long long)d->pair_feat_dim, (long long)d->num_bins, (long long)F);
    MF_TRY(check_host(aatype, "template_aatype"));
    const int64_t N = mf_tensor_numel(aatype);
    MF_TRY(check_index(aatype, "template_aatype [N]", N));
    MF_TRY(check_real(pseudo_beta, "template_pseudo_beta [N, 3]", N * 3));
    MF_TRY(check_real(pseudo_beta_mask, "template_pseudo_beta_mask [N]", N));
    MF_TRY(check_real(all_atom_positions, "template_all_atom_positions [N, 37, 3]",
                      N * MF_ATOM37 * 3));
    MF_TRY(check_real(all_atom_mask, "template_all_atom_mask [N, 37]", N * MF_ATOM37));
    MF_TRY(check_real(out, "template pair feature [rows, N, F]", -1));
    MF_REQUIRE(out->ndim == 3 && out->shape[1] == N && out->shape[2] == F && row0 >= 0 &&
                   row0 + out->shape[0] <= N,
               "template pair feature: out must be [rows, %lld, %lld] with rows %lld.. inside "
               "%lld",
               (long long)N, (long long)F, (long long)row0, (long long)N);
    for (int64_t i = 0; i < N; i++) {
        int32_t a = iget(aatype, i);
        if (a < 0 || a >= MF_TEMPLATE_AATYPE_CLASSES)
            return MF_ERROR(MF_ERR_INVALID, "template_aatype[%lld] = %d is outside 0..%d",
                            (long long)i, (int)a, MF_TEMPLATE_AATYPE_CLASSES - 1);
    }
    const int64_t B = d->num_bins, A = MF_TEMPLATE_AATYPE_CLASSES;
    const int64_t c_pb = B, c_aa_j = B + 1, c_aa_i = B + 1 + A, c_unit = B + 1 + 2 * A,
                  c_bb = c_unit + 3;
    zero(out);
    for (int64_t r = 0; r < out->shape[0]; r++) {
        const int64_t i = row0 + r;
        double bb_i = get(all_atom_mask, i * MF_ATOM37 + ATOM_N) *
                      get(all_atom_mask, i * MF_ATOM37 + ATOM_CA) *
                      get(all_atom_mask, i * MF_ATOM37 + ATOM_C);
        double rot[9] = {0}, ca_i[3] = {0};
        if (d->use_unit_vector) {
            double n[3], c[3];
            atom_xyz(n, all_atom_positions, i, ATOM_N);
            atom_xyz(ca_i, all_atom_positions, i, ATOM_CA);
            atom_xyz(c, all_atom_positions, i, ATOM_C);
            canonical_rotation(rot, n, ca_i, c);
        }
        for (int64_t j = 0; j < N; j++) {
            const int64_t o = (r * N + j) * F;
            double bb_j = get(all_atom_mask, j * MF_ATOM37 + ATOM_N) *
                          get(all_atom_mask, j * MF_ATOM37 + ATOM_CA) *
                          get(all_atom_mask, j * MF_ATOM37 + ATOM_C);
            /* AF2 multiplies the whole feature by the backbone mask 2-D at the end. */
            double bb2d = bb_i * bb_j;
            int32_t b = dgram_bin(&e, pseudo_beta, i, j);
            if (b >= 0) put(out, o + b, bb2d);
            put(out, o + c_pb, get(pseudo_beta_mask, i) * get(pseudo_beta_mask, j) * bb2d);
            put(out, o + c_aa_j + iget(aatype, j), bb2d);
            put(out, o + c_aa_i + iget(aatype, i), bb2d);
            if (d->use_unit_vector) {
                /* affines.invert_point: CA_j in the frame of residue i. */
                double ca_j[3], v[3], v2 = 0.0;
                atom_xyz(ca_j, all_atom_positions, j, ATOM_CA);
                for (int a = 0; a < 3; a++) {
                    v[a] = 0.0;
                    for (int k = 0; k < 3; k++) v[a] += rot[3 * a + k] * (ca_j[k] - ca_i[k]);
                    v2 += v[a] * v[a];
                }
                double inv = bb2d / sqrt(MF_TEMPLATE_UNIT_VECTOR_EPS + v2);
                for (int a = 0; a < 3; a++) put(out, o + c_unit + a, v[a] * inv * bb2d);
            }
            put(out, o + c_bb, bb2d * bb2d);
        }
    }
    return MF_OK;
}
