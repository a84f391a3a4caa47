/* Head losses (model/losses_simple.h): distogram, masked MSA, pLDDT, experimentally resolved, TM.
 *  1. each loss in f64 against an independent double formula written here (1e-12): bins from
 *     distances (not squared) against the edges, lDDT-Ca from integer counts, log(sigmoid) taken
 *     directly, aligned errors from frames built from random quaternions;
 *  2. d loss / d logits of each loss in f64 against central finite differences (mf_gradcheck,
 *     random upstream gradient, masks with zeros, odd sizes), and the f32 loss and gradient
 *     against f64 (MF_TOL_F32); backward accumulates onto nonzero gradients;
 *  3. the resolution filter at 0, 0.1, 1.5, 3.0 and 3.0001 A, and switched off;
 *  4. bins: a squared distance exactly on an edge stays in the lower bin; identical frames give
 *     aligned-error bin 0; lDDT 1 lands in the last bin; no scored pair -> last bin;
 *  5. the pLDDT bin-tie rule: a residue with 25 scored pairs and score sum 2.5 (50 lDDT = 5
 *     exactly; AF2's float32 arithmetic gives 4.9999995) gets bin 5, and residue 6 of
 *     shared/testvectors (the README's tie) gets bin 5 with its float32 lDDT within 1e-6 of 0.1;
 *  6. argument errors name the tensor: shapes, a true_msa class out of range, a non-host tensor. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "data/h5io.h"
#include "model/losses_simple.h"
#include "tests/support/mf_test.h"

/* An f64 formula against the f64 implementation: both sum the same terms in double, in different
 * orders; 1e-12 relative leaves orders of magnitude of headroom. */
#define TOL_F64 1e-12

static double *dalloc(int64_t n)
{
    return calloc((size_t)(n > 0 ? n : 1), sizeof(double));
}

static float *falloc(int64_t n)
{
    return calloc((size_t)(n > 0 ? n : 1), sizeof(float));
}

static void round_f32(double *x, int64_t n)
{
    for (int64_t i = 0; i < n; i++) x[i] = (double)(float)x[i];
}

static mf_tensor t64(double *p, int ndim, int64_t d0, int64_t d1, int64_t d2)
{
    return mf_tensor_4(p, MF_F64, MF_DEV_CPU, ndim, d0, d1, d2, 1);
}

static mf_tensor t32(float *p, int ndim, int64_t d0, int64_t d1, int64_t d2)
{
    return mf_tensor_4(p, MF_F32, MF_DEV_CPU, ndim, d0, d1, d2, 1);
}

static double lse(const double *x, int64_t n)
{
    double m = x[0];
    for (int64_t b = 1; b < n; b++) m = x[b] > m ? x[b] : m;
    double z = 0;
    for (int64_t b = 0; b < n; b++) z += exp(x[b] - m);
    return m + log(z);
}

static void check_scalar(const char *what, double got, double ref, double rtol)
{
    mf_check_close_f64(what, &got, &ref, 1, rtol * fabs(ref), rtol);
}

/* ---- one generic loss case ------------------------------------------------------------------ */

typedef enum { L_DGRAM, L_MSA, L_PLDDT, L_EXPRES, L_TM, L_COUNT } loss_kind;

static const char *const loss_names[L_COUNT] = {"distogram", "masked MSA", "pLDDT",
                                                "experimentally resolved", "TM"};

typedef struct {
    loss_kind kind;
    mf_ctx *ctx;
    int ndim;
    int64_t shape[3], n; /* logits */
    double *x;           /* logits (f64) */
    /* targets and masks: every float array stored in f64 and f32 */
    int64_t N, S, B;
    double *pos, *mask, *bert, *pred37, *true37, *mask37, *exists, *prot, *ptr, *trot, *ttr;
    float *posf, *maskf, *bertf, *pred37f, *true37f, *mask37f, *existsf, *protf, *ptrf, *trotf,
        *ttrf;
    int32_t *true_msa;
    float resolution;
    double first_break, last_break, max_error_bin;
    double loss; /* written by the forward */
} lcase;

static float *mirror(const double *x, int64_t n)
{
    float *f = falloc(n);
    mf_f64_to_f32(f, x, n);
    return f;
}

static void random_unit_quat(double *q, uint64_t seed)
{
    mf_test_fill_normal_f64(q, 4, seed, 1.0);
    double n = sqrt(q[0] * q[0] + q[1] * q[1] + q[2] * q[2] + q[3] * q[3]);
    for (int k = 0; k < 4; k++) q[k] /= n;
}

static void quat_to_rot(double *r, const double *q)
{
    const double w = q[0], x = q[1], y = q[2], z = q[3];
    const double m[9] = {w * w + x * x - y * y - z * z, 2 * (x * y - w * z),
                         2 * (x * z + w * y),           2 * (x * y + w * z),
                         w * w - x * x + y * y - z * z, 2 * (y * z - w * x),
                         2 * (x * z - w * y),           2 * (y * z + w * x),
                         w * w - x * x - y * y + z * z};
    memcpy(r, m, sizeof m);
}

static void case_init(lcase *c, loss_kind kind, mf_ctx *ctx, uint64_t seed)
{
    memset(c, 0, sizeof *c);
    c->kind = kind;
    c->ctx = ctx;
    c->resolution = 1.5f;
    const int64_t N = 9, S = 5;
    c->N = N, c->S = S;
    switch (kind) {
    case L_DGRAM:
        c->B = 11, c->ndim = 3, c->shape[0] = N, c->shape[1] = N, c->shape[2] = c->B;
        c->first_break = 2.5, c->last_break = 14.0;
        c->pos = dalloc(3 * N);
        mf_test_fill_normal_f64(c->pos, 3 * N, seed + 1, 5.0);
        round_f32(c->pos, 3 * N);
        c->mask = dalloc(N);
        mf_test_fill_mask_f64(c->mask, 1, N, seed + 2, 0.7);
        break;
    case L_MSA:
        c->B = 23, c->ndim = 3, c->shape[0] = S, c->shape[1] = N, c->shape[2] = c->B;
        c->true_msa = calloc((size_t)(S * N), sizeof(int32_t));
        for (int64_t k = 0; k < S * N; k++)
            c->true_msa[k] = (int32_t)(mf_rng_u32(seed, 3, (uint64_t)k) % (uint32_t)c->B);
        c->bert = dalloc(S * N);
        mf_test_fill_mask_f64(c->bert, S, N, seed + 4, 0.3);
        break;
    case L_PLDDT:
        c->B = 13, c->ndim = 2, c->shape[0] = N, c->shape[1] = c->B;
        c->true37 = dalloc(N * 37 * 3), c->pred37 = dalloc(N * 37 * 3);
        mf_test_fill_normal_f64(c->true37, N * 37 * 3, seed + 5, 6.0);
        mf_test_fill_normal_f64(c->pred37, N * 37 * 3, seed + 6, 1.5);
        for (int64_t k = 0; k < N * 37 * 3; k++) c->pred37[k] += c->true37[k];
        round_f32(c->true37, N * 37 * 3);
        round_f32(c->pred37, N * 37 * 3);
        c->mask37 = dalloc(N * 37);
        mf_test_fill_mask_f64(c->mask37, N, 37, seed + 7, 0.8);
        c->mask37[2 * 37 + 1] = 0; /* a residue without C-alpha */
        c->mask37[5 * 37 + 1] = 1;
        break;
    case L_EXPRES:
        c->B = 37, c->ndim = 2, c->shape[0] = N, c->shape[1] = 37;
        c->mask37 = dalloc(N * 37), c->exists = dalloc(N * 37);
        mf_test_fill_mask_f64(c->mask37, N, 37, seed + 8, 0.6);
        mf_test_fill_mask_f64(c->exists, N, 37, seed + 9, 0.8);
        break;
    case L_TM:
        c->B = 9, c->ndim = 3, c->shape[0] = N, c->shape[1] = N, c->shape[2] = c->B;
        c->max_error_bin = 6.0;
        c->prot = dalloc(9 * N), c->trot = dalloc(9 * N), c->ptr = dalloc(3 * N),
        c->ttr = dalloc(3 * N);
        for (int64_t i = 0; i < N; i++) {
            double q[4];
            random_unit_quat(q, seed + 100 + (uint64_t)i);
            quat_to_rot(c->trot + 9 * i, q);
            random_unit_quat(q, seed + 200 + (uint64_t)i);
            /* a predicted frame near the true one: q_pred = normalise(q_true + noise) */
            double qt[4];
            random_unit_quat(qt, seed + 100 + (uint64_t)i);
            for (int k = 0; k < 4; k++) q[k] = qt[k] + 0.15 * q[k];
            double n = sqrt(q[0] * q[0] + q[1] * q[1] + q[2] * q[2] + q[3] * q[3]);
            for (int k = 0; k < 4; k++) q[k] /= n;
            quat_to_rot(c->prot + 9 * i, q);
        }
        mf_test_fill_normal_f64(c->ttr, 3 * N, seed + 10, 5.0);
        mf_test_fill_normal_f64(c->ptr, 3 * N, seed + 11, 1.0);
        for (int64_t k = 0; k < 3 * N; k++) c->ptr[k] += c->ttr[k];
        round_f32(c->prot, 9 * N), round_f32(c->trot, 9 * N);
        round_f32(c->ptr, 3 * N), round_f32(c->ttr, 3 * N);
        c->mask = dalloc(N);
        mf_test_fill_mask_f64(c->mask, 1, N, seed + 12, 0.7);
        break;
    default:
        break;
    }
    c->n = 1;
    for (int k = 0; k < c->ndim; k++) c->n *= c->shape[k];
    c->x = dalloc(c->n);
    mf_test_fill_normal_f64(c->x, c->n, seed + 20, 2.0);
    round_f32(c->x, c->n);
    if (c->pos) c->posf = mirror(c->pos, 3 * N);
    if (c->mask) c->maskf = mirror(c->mask, N);
    if (c->bert) c->bertf = mirror(c->bert, S * N);
    if (c->true37) c->true37f = mirror(c->true37, N * 37 * 3);
    if (c->pred37) c->pred37f = mirror(c->pred37, N * 37 * 3);
    if (c->mask37) c->mask37f = mirror(c->mask37, N * 37);
    if (c->exists) c->existsf = mirror(c->exists, N * 37);
    if (c->prot) {
        c->protf = mirror(c->prot, 9 * N), c->trotf = mirror(c->trot, 9 * N);
        c->ptrf = mirror(c->ptr, 3 * N), c->ttrf = mirror(c->ttr, 3 * N);
    }
}

static void case_free(lcase *c)
{
    double *d[] = {c->x,      c->pos,    c->mask, c->bert, c->pred37, c->true37,
                   c->mask37, c->exists, c->prot, c->ptr,  c->trot,   c->ttr};
    float *f[] = {c->posf,    c->maskf, c->bertf, c->pred37f, c->true37f, c->mask37f,
                  c->existsf, c->protf, c->ptrf,  c->trotf,   c->ttrf};
    for (size_t k = 0; k < sizeof d / sizeof d[0]; k++) free(d[k]);
    for (size_t k = 0; k < sizeof f / sizeof f[0]; k++) free(f[k]);
    free(c->true_msa);
}

/* Runs the loss (and, when dx != NULL, its backward with dloss) on logits x in dtype dt; the
 * targets in the same dtype. */
static mf_status run_loss(lcase *c, mf_dtype dt, const void *x, void *dx, double dloss,
                          double *loss, const mf_resolution_filter *filter)
{
    const bool f64 = dt == MF_F64;
    const int64_t N = c->N, S = c->S;
    mf_tensor lg =
        mf_tensor_4((void *)x, dt, MF_DEV_CPU, c->ndim, c->shape[0], c->shape[1], c->shape[2], 1);
    mf_tensor dlg =
        mf_tensor_4(dx, dt, MF_DEV_CPU, c->ndim, c->shape[0], c->shape[1], c->shape[2], 1);
#define T(name, nd, d0, d1, d2)                                                                    \
    (f64 ? t64(c->name, nd, d0, d1, d2) : t32(c->name##f, nd, d0, d1, d2))
    switch (c->kind) {
    case L_DGRAM: {
        mf_tensor pos = T(pos, 2, N, 3, 1), m = T(mask, 1, N, 1, 1);
        MF_TRY(mf_distogram_loss(c->ctx, loss, &lg, &pos, &m, c->first_break, c->last_break));
        if (dx)
            MF_TRY(mf_distogram_loss_backward(c->ctx, &dlg, dloss, &lg, &pos, &m, c->first_break,
                                              c->last_break));
        return MF_OK;
    }
    case L_MSA: {
        mf_tensor tm = mf_tensor_4(c->true_msa, MF_I32, MF_DEV_CPU, 2, S, N, 1, 1);
        mf_tensor b = T(bert, 2, S, N, 1);
        MF_TRY(mf_masked_msa_loss(c->ctx, loss, &lg, &tm, &b));
        if (dx) MF_TRY(mf_masked_msa_loss_backward(c->ctx, &dlg, dloss, &lg, &tm, &b));
        return MF_OK;
    }
    case L_PLDDT: {
        mf_tensor p = T(pred37, 3, N, 37, 3), t = T(true37, 3, N, 37, 3),
                  m = T(mask37, 2, N, 37, 1);
        mf_plddt_loss_options o = mf_plddt_loss_options_default();
        if (filter) o.resolution = *filter;
        MF_TRY(mf_plddt_loss(c->ctx, loss, &lg, &p, &t, &m, c->resolution, &o));
        if (dx)
            MF_TRY(mf_plddt_loss_backward(c->ctx, &dlg, dloss, &lg, &p, &t, &m, c->resolution, &o));
        return MF_OK;
    }
    case L_EXPRES: {
        mf_tensor m = T(mask37, 2, N, 37, 1), e = T(exists, 2, N, 37, 1);
        mf_resolution_filter f = filter ? *filter : mf_resolution_filter_default();
        MF_TRY(mf_experimentally_resolved_loss(c->ctx, loss, &lg, &m, &e, c->resolution, &f));
        if (dx)
            MF_TRY(mf_experimentally_resolved_loss_backward(c->ctx, &dlg, dloss, &lg, &m, &e,
                                                            c->resolution, &f));
        return MF_OK;
    }
    case L_TM: {
        mf_tensor pr = T(prot, 3, N, 3, 3), pt = T(ptr, 2, N, 3, 1), tr = T(trot, 3, N, 3, 3);
        mf_tensor tt = T(ttr, 2, N, 3, 1), m = T(mask, 1, N, 1, 1);
        mf_resolution_filter f = filter ? *filter : mf_resolution_filter_default();
        MF_TRY(mf_tm_loss(c->ctx, loss, &lg, &pr, &pt, &tr, &tt, &m, c->max_error_bin,
                          c->resolution, &f));
        if (dx)
            MF_TRY(mf_tm_loss_backward(c->ctx, &dlg, dloss, &lg, &pr, &pt, &tr, &tt, &m,
                                       c->max_error_bin, c->resolution, &f));
        return MF_OK;
    }
    default:
        return MF_ERROR(MF_ERR_INVALID, "unknown loss");
    }
#undef T
}

/* ---- independent double formulas ------------------------------------------------------------ */

static double edge(double first, double last, int64_t B, int64_t k)
{
    return first + (double)k * (last - first) / (double)(B - 2);
}

static int64_t bin_of(double dist, double first, double last, int64_t B)
{
    int64_t b = 0;
    for (int64_t k = 0; k < B - 1; k++) b += dist > edge(first, last, B, k);
    return b;
}

static double dist3(const double *a, const double *b)
{
    return sqrt((a[0] - b[0]) * (a[0] - b[0]) + (a[1] - b[1]) * (a[1] - b[1]) +
                (a[2] - b[2]) * (a[2] - b[2]));
}

/* lDDT-Ca bin from integer counts: floor(B * sum / count), ties up, no pair -> last bin. */
static int64_t lddt_bin_ref(const lcase *c, int64_t i)
{
    const int64_t N = c->N;
    int64_t count = 0, quarters = 0;
    for (int64_t j = 0; j < N; j++) {
        if (j == i || c->mask37[i * 37 + 1] == 0 || c->mask37[j * 37 + 1] == 0) continue;
        const double dt = dist3(c->true37 + (i * 37 + 1) * 3, c->true37 + (j * 37 + 1) * 3);
        const double dp = dist3(c->pred37 + (i * 37 + 1) * 3, c->pred37 + (j * 37 + 1) * 3);
        if (!(dt < 15.0)) continue;
        const double e = fabs(dt - dp);
        count++;
        quarters += (e < 0.5) + (e < 1.0) + (e < 2.0) + (e < 4.0);
    }
    int64_t b = count ? c->B * quarters / (4 * count) : c->B - 1;
    return b < c->B - 1 ? b : c->B - 1;
}

/* |R_i^T (t_j - t_i) - R*_i^T (t*_j - t*_i)| */
static double aligned_error(const lcase *c, int64_t i, int64_t j)
{
    double e2 = 0;
    for (int b = 0; b < 3; b++) {
        double p = 0, t = 0;
        for (int a = 0; a < 3; a++) {
            p += c->prot[9 * i + 3 * a + b] * (c->ptr[3 * j + a] - c->ptr[3 * i + a]);
            t += c->trot[9 * i + 3 * a + b] * (c->ttr[3 * j + a] - c->ttr[3 * i + a]);
        }
        e2 += (p - t) * (p - t);
    }
    return sqrt(e2);
}

static double ref_loss(const lcase *c)
{
    const int64_t N = c->N, S = c->S, B = c->B;
    double num = 0, den = 0;
    switch (c->kind) {
    case L_DGRAM:
        for (int64_t i = 0; i < N; i++)
            for (int64_t j = 0; j < N; j++) {
                const double w = c->mask[i] * c->mask[j];
                const int64_t b =
                    bin_of(dist3(c->pos + 3 * i, c->pos + 3 * j), c->first_break, c->last_break, B);
                const double *x = c->x + (i * N + j) * B;
                num += w * (lse(x, B) - x[b]);
                den += w;
            }
        return num / (1e-6 + den);
    case L_MSA:
        for (int64_t r = 0; r < S * N; r++) {
            const double *x = c->x + r * B;
            num += c->bert[r] * (lse(x, B) - x[c->true_msa[r]]);
            den += c->bert[r];
        }
        return num / (1e-8 + den);
    case L_PLDDT:
        for (int64_t i = 0; i < N; i++) {
            const double w = c->mask37[i * 37 + 1];
            const double *x = c->x + i * B;
            num += w * (lse(x, B) - x[lddt_bin_ref(c, i)]);
            den += w;
        }
        return num / (den + 1e-8);
    case L_EXPRES:
        for (int64_t k = 0; k < N * 37; k++) {
            const double x = c->x[k], y = c->mask37[k], s = 1.0 / (1.0 + exp(-x));
            num += c->exists[k] * (-y * log(s) - (1 - y) * log(1 - s));
            den += c->exists[k];
        }
        return num / (1e-8 + den);
    case L_TM:
        for (int64_t i = 0; i < N; i++)
            for (int64_t j = 0; j < N; j++) {
                const double w = c->mask[i] * c->mask[j];
                const int64_t b = bin_of(aligned_error(c, i, j), 0.0, c->max_error_bin, B);
                const double *x = c->x + (i * N + j) * B;
                num += w * (lse(x, B) - x[b]);
                den += w;
            }
        return num / (1e-8 + den);
    default:
        return NAN;
    }
}

/* ---- 1-3: formulas, finite differences, f32 ------------------------------------------------- */

static void fd_forward(void *ud)
{
    lcase *c = ud;
    if (run_loss(c, MF_F64, c->x, NULL, 0, &c->loss, NULL) != MF_OK)
        mf_test_fail("%s loss f64 forward: %s", loss_names[c->kind], mf_last_error());
}

static void test_loss(mf_ctx *ctx, loss_kind kind, uint64_t seed)
{
    lcase c;
    case_init(&c, kind, ctx, seed);
    const char *name = loss_names[kind];
    char what[160];
    const mf_arena_mark_t mark = mf_arena_mark(ctx->arena);
    const size_t used = mf_arena_used(ctx->arena);

    /* 1. the f64 loss against the formula */
    double loss64 = NAN, dloss = 0;
    double *dx64 = dalloc(c.n);
    mf_test_fill_normal_f64(&dloss, 1, seed + 77, 1.0);
    dloss = (double)(float)dloss;
    MF_TEST_OK(run_loss(&c, MF_F64, c.x, dx64, dloss, &loss64, NULL));
    MF_TEST_TRUE(mf_arena_used(ctx->arena) == used, "%s loss: arena not back at its mark", name);
    const double ref = ref_loss(&c);
    snprintf(what, sizeof what, "%s loss (%lld logits): f64 vs the formula", name, (long long)c.n);
    check_scalar(what, loss64, ref, TOL_F64);
    MF_TEST_TRUE(ref > 0 && isfinite(ref), "%s loss: the reference %g must be positive", name, ref);

    /* 2. finite differences of the f64 loss in the logits */
    mf_gc_array in = {"logits", c.x, c.n}, out = {"loss", &c.loss, 1};
    const double *grads[1] = {dx64}, *gout[1] = {&dloss};
    snprintf(what, sizeof what, "%s loss f64 backward", name);
    mf_gradcheck(what, fd_forward, &c, &in, grads, 1, &out, gout, 1, MF_TOL_FD_STEP, MF_TOL_FD_ATOL,
                 MF_TOL_FD_RTOL, 0);

    /* f32 against f64; backward accumulates onto a nonzero gradient. */
    float *xf = mirror(c.x, c.n), *dxf = falloc(c.n), *init = falloc(c.n);
    mf_test_fill_normal_f32(init, c.n, seed + 88, 1.0f);
    memcpy(dxf, init, sizeof(float) * (size_t)c.n);
    double loss32 = NAN;
    MF_TEST_OK(run_loss(&c, MF_F32, xf, dxf, dloss, &loss32, NULL));
    for (int64_t k = 0; k < c.n; k++) dxf[k] -= init[k];
    snprintf(what, sizeof what, "%s loss: f32 vs f64", name);
    check_scalar(what, loss32, loss64, MF_TOL_F32_RTOL);
    snprintf(what, sizeof what, "%s loss: f32 dlogits (accumulated onto nonzero) vs f64", name);
    mf_check_close_f32_f64(what, dxf, dx64, c.n, MF_TOL_F32_ATOL, MF_TOL_F32_RTOL);
    mf_arena_release(ctx->arena, mark);
    free(xf), free(dxf), free(init), free(dx64);
    case_free(&c);
}

/* ---- 3: resolution filter ------------------------------------------------------------------ */

static void test_resolution_filter(mf_ctx *ctx)
{
    const float res[] = {0.0f, 0.1f, 1.5f, 3.0f, 3.0001f};
    const bool counts[] = {false, true, true, true, false};
    const loss_kind kinds[] = {L_PLDDT, L_EXPRES, L_TM};
    for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
        lcase c;
        case_init(&c, kinds[k], ctx, 500 + k);
        double base = NAN;
        MF_TEST_OK(run_loss(&c, MF_F64, c.x, NULL, 0, &base, NULL));
        for (size_t r = 0; r < sizeof res / sizeof res[0]; r++) {
            c.resolution = res[r];
            double l = NAN;
            double *dx = dalloc(c.n);
            MF_TEST_OK(run_loss(&c, MF_F64, c.x, dx, 1.0, &l, NULL));
            double gmax = 0;
            for (int64_t i = 0; i < c.n; i++) gmax = fmax(gmax, fabs(dx[i]));
            const double want = counts[r] ? base : 0.0;
            MF_TEST_TRUE(l == want && (counts[r] ? gmax > 0 : gmax == 0),
                         "%s loss at resolution %g A: loss %g (want %g), max|grad| %g",
                         loss_names[kinds[k]], (double)res[r], l, want, gmax);
            free(dx);
        }
        c.resolution = 0.0f;
        mf_resolution_filter off = {false, 0.1, 3.0};
        double l = NAN;
        MF_TEST_OK(run_loss(&c, MF_F64, c.x, NULL, 0, &l, &off));
        MF_TEST_TRUE(l == base, "%s loss with the filter off at resolution 0: %g, want %g",
                     loss_names[kinds[k]], l, base);
        case_free(&c);
    }
    printf("resolution filter (pLDDT, experimentally resolved, TM): 0 and 3.0001 A drop the loss "
           "and its gradient, 0.1 / 1.5 / 3.0 A keep it, filter off keeps it\n");
}

/* ---- 4: bins ------------------------------------------------------------------------------- */

static void test_bins(void)
{
    /* Distogram: AF2 compares squared distances with squared edges; a pair exactly on edge k
     * (squared distance == edge^2, exact in float) is not above it. Edges 2.3125 + 0.3125 k. */
    float pos[3 * 3] = {0, 0, 0, 2.3125f + 0.3125f * 4, 0, 0, 30.0f, 0, 0};
    int32_t bins[9];
    mf_tensor p = t32(pos, 2, 3, 3, 1), b = mf_tensor_4(bins, MF_I32, MF_DEV_CPU, 2, 3, 3, 1, 1);
    MF_TEST_OK(mf_distogram_true_bins(&b, &p, 64, 2.3125, 21.6875));
    MF_TEST_TRUE(bins[0] == 0 && bins[1] == 4 && bins[3] == 4 && bins[2] == 63 && bins[6] == 63,
                 "distogram bins: self %d, on edge 4 -> %d (want 4), 30 A -> %d (want 63)", bins[0],
                 bins[1], bins[2]);
    pos[3] = nextafterf(pos[3], 100.0f);
    MF_TEST_OK(mf_distogram_true_bins(&b, &p, 64, 2.3125, 21.6875));
    MF_TEST_TRUE(bins[1] == 5, "distogram bin just above edge 4: %d (want 5)", bins[1]);

    /* Aligned error: identical frames -> bin 0 everywhere. */
    float rot[4 * 9], tr[4 * 3];
    for (int i = 0; i < 4; i++) {
        double q[4], r[9];
        random_unit_quat(q, 900 + (uint64_t)i);
        quat_to_rot(r, q);
        for (int k = 0; k < 9; k++) rot[9 * i + k] = (float)r[k];
        for (int k = 0; k < 3; k++) tr[3 * i + k] = (float)(3 * i + k);
    }
    int32_t tb[16];
    mf_tensor R = t32(rot, 3, 4, 3, 3), T = t32(tr, 2, 4, 3, 1);
    mf_tensor tbt = mf_tensor_4(tb, MF_I32, MF_DEV_CPU, 2, 4, 4, 1, 1);
    MF_TEST_OK(mf_tm_true_bins(&tbt, &R, &T, &R, &T, 64, 31.0));
    bool zero = true;
    for (int k = 0; k < 16; k++) zero &= tb[k] == 0;
    MF_TEST_TRUE(zero, "aligned-error bins of identical frames must all be 0");

    /* pLDDT: prediction = truth -> lDDT 1 -> last bin; a residue whose neighbours are all beyond
     * the cutoff (no scored pair) -> last bin; a residue without CA mask as well. */
    float t37[3 * 37 * 3] = {0}, m37[3 * 37] = {0};
    t37[(0 * 37 + 1) * 3] = 0, t37[(1 * 37 + 1) * 3] = 3.8f, t37[(2 * 37 + 1) * 3] = 40.0f;
    m37[0 * 37 + 1] = m37[1 * 37 + 1] = m37[2 * 37 + 1] = 1;
    int32_t pb[3];
    mf_tensor tp = t32(t37, 3, 3, 37, 3), mm = t32(m37, 2, 3, 37, 1);
    mf_tensor pbt = mf_tensor_4(pb, MF_I32, MF_DEV_CPU, 1, 3, 1, 1, 1);
    MF_TEST_OK(mf_plddt_target_bins(&pbt, &tp, &tp, &mm, 50, 15.0));
    MF_TEST_TRUE(pb[0] == 49 && pb[1] == 49 && pb[2] == 49,
                 "pLDDT bins of a perfect prediction / an isolated residue: %d %d %d (want 49)",
                 pb[0], pb[1], pb[2]);
    printf("bins: distogram edge in squared distance, aligned error of identical frames, pLDDT "
           "lDDT = 1 and no scored pair -> last bin\n");
}

/* ---- 5: the pLDDT tie rule ------------------------------------------------------------------- */

static void test_plddt_tie_built(void)
{
    /* Residue 0 at the origin with 25 neighbours at 5..7.5 A (all within the 15 A cutoff):
     * neighbours 1, 2 predicted 0.1 A off (score 1 each), neighbour 3 1.5 A off (score 0.5), the
     * rest 6 A off (score 0): count 25, sum 2.5, 50 lDDT = 5 exactly. */
    enum { N = 26 };
    float *t = falloc(N * 37 * 3), *p = falloc(N * 37 * 3), *m = falloc(N * 37);
    float tca[N * 3], pca[N * 3], mca[N];
    for (int j = 0; j < N; j++) {
        double dir[3];
        mf_test_fill_normal_f64(dir, 3, 1000 + (uint64_t)j, 1.0);
        const double n = sqrt(dir[0] * dir[0] + dir[1] * dir[1] + dir[2] * dir[2]);
        const double d = j ? 5.0 + 0.1 * j : 0.0;
        const double err = j == 0 ? 0.0 : j <= 2 ? 0.1 : j == 3 ? 1.5 : 6.0;
        for (int k = 0; k < 3; k++) {
            tca[3 * j + k] = (float)(d * dir[k] / n);
            pca[3 * j + k] = (float)((d + err) * dir[k] / n);
            t[(j * 37 + 1) * 3 + k] = tca[3 * j + k];
            p[(j * 37 + 1) * 3 + k] = pca[3 * j + k];
        }
        mca[j] = 1, m[j * 37 + 1] = 1;
    }
    float lddt[N];
    mf_plddt_target_lddt_ca(lddt, pca, tca, mca, N, 15.0f);
    /* AF2's float32 formula itself lands below the tie here (the reason for the rule). */
    const float x = lddt[0] * 50.0f;
    printf("pLDDT tie (25 pairs, score sum 2.5): AF2's float32 50 * lDDT = %.9g\n", (double)x);
    MF_TEST_TRUE(fabsf(x - 5.0f) < 1e-5f, "tie case: 50 lDDT = %.9g, want 5 within 1e-5",
                 (double)x);
    int32_t bins[N];
    mf_tensor pt = t32(p, 3, N, 37, 3), tt = t32(t, 3, N, 37, 3), mt = t32(m, 2, N, 37, 1);
    mf_tensor bt = mf_tensor_4(bins, MF_I32, MF_DEV_CPU, 1, N, 1, 1, 1);
    MF_TEST_OK(mf_plddt_target_bins(&bt, &pt, &tt, &mt, 50, 15.0));
    MF_TEST_TRUE(bins[0] == 5, "pLDDT tie: residue 0 in bin %d, want the upper bin 5", bins[0]);
    free(t), free(p), free(m);
}

static void test_plddt_tie_vectors(void)
{
    char path[1024], tpath[1024];
    snprintf(path, sizeof path, "%s/testvectors/features.h5", mf_test_shared_dir());
    snprintf(tpath, sizeof tpath, "%s/testvectors/train_expected.h5", mf_test_shared_dir());
    hid_t f = H5I_INVALID_HID, tf = H5I_INVALID_HID;
    mf_h5_quiet();
    MF_TEST_OK(mf_h5_open_read(path, &f));
    MF_TEST_OK(mf_h5_open_read(tpath, &tf));
    if (f < 0 || tf < 0) return;
    mf_h5_array pos = {0}, mask = {0}, pred = {0};
    MF_TEST_OK(mf_h5_read_array(f, path, "all_atom_positions", MF_F32, &pos));
    MF_TEST_OK(mf_h5_read_array(f, path, "all_atom_mask", MF_F32, &mask));
    MF_TEST_OK(mf_h5_read_array(tf, tpath, "train_outputs/final_atom_positions", MF_F32, &pred));
    H5Fclose(f);
    H5Fclose(tf);
    if (!pos.data || !mask.data || !pred.data || pos.ndim != 3 || pos.shape[0] <= 6) {
        mf_test_fail("test vectors: positions missing");
        return;
    }
    const int64_t N = pos.shape[0];
    float *pca = falloc(3 * N), *tca = falloc(3 * N), *mca = falloc(N), *lddt = falloc(N);
    for (int64_t i = 0; i < N; i++) {
        for (int k = 0; k < 3; k++) {
            pca[3 * i + k] = ((float *)pred.data)[(i * 37 + 1) * 3 + k];
            tca[3 * i + k] = ((float *)pos.data)[(i * 37 + 1) * 3 + k];
        }
        mca[i] = ((float *)mask.data)[i * 37 + 1];
    }
    mf_plddt_target_lddt_ca(lddt, pca, tca, mca, N, 15.0f);
    int32_t *bins = calloc((size_t)N, sizeof(int32_t));
    mf_tensor pt = t32(pred.data, 3, N, 37, 3), tt = t32(pos.data, 3, N, 37, 3);
    mf_tensor mt = t32(mask.data, 2, N, 37, 1);
    mf_tensor bt = mf_tensor_4(bins, MF_I32, MF_DEV_CPU, 1, N, 1, 1, 1);
    MF_TEST_OK(mf_plddt_target_bins(&bt, &pt, &tt, &mt, 50, 15.0));
    printf("test vectors residue 6: float32 lDDT-Ca %.9g, 50 lDDT %.9g, bin %d\n", (double)lddt[6],
           (double)(lddt[6] * 50.0f), bins[6]);
    MF_TEST_TRUE(fabsf(lddt[6] - 0.1f) < 1e-6f && bins[6] == 5,
                 "test vectors residue 6: lDDT %.9g (want 0.1), bin %d (want 5)", (double)lddt[6],
                 bins[6]);
    bool consistent = true;
    for (int64_t i = 0; i < N; i++)
        consistent &= bins[i] == (int32_t)fminf(floorf(lddt[i] * 50.0f), 49.0f) || i == 6;
    MF_TEST_TRUE(consistent,
                 "test vectors: off the tie, bins equal floor(50 lDDT) of AF2's formula");
    free(pca), free(tca), free(mca), free(lddt), free(bins);
    mf_h5_array_free(&pos), mf_h5_array_free(&mask), mf_h5_array_free(&pred);
}

/* ---- 6: errors ------------------------------------------------------------------------------ */

static void expect_error(mf_status st, const char *what, const char *needle)
{
    const bool ok = st == MF_ERR_INVALID && strstr(mf_last_error(), needle);
    MF_TEST_TRUE(ok, "%s: expected MF_ERR_INVALID naming '%s', got %s: %s", what, needle,
                 mf_status_name(st), mf_last_error());
    if (ok) printf("rejected %s: %s\n", what, mf_last_error());
}

static void test_errors(mf_ctx *ctx)
{
    lcase c;
    case_init(&c, L_MSA, ctx, 700);
    double loss;
    mf_tensor lg = t64(c.x, 3, c.S, c.N, c.B), b = t64(c.bert, 2, c.S, c.N, 1);
    mf_tensor tm = mf_tensor_4(c.true_msa, MF_I32, MF_DEV_CPU, 2, c.S, c.N, 1, 1);
    c.true_msa[7] = (int32_t)c.B;
    expect_error(mf_masked_msa_loss(ctx, &loss, &lg, &tm, &b), "true_msa class out of range",
                 "true_msa[0, 7]");
    c.true_msa[7] = 0;
    mf_tensor b_bad = t64(c.bert, 2, c.N, c.S, 1);
    expect_error(mf_masked_msa_loss(ctx, &loss, &lg, &tm, &b_bad), "bert_mask of the wrong shape",
                 "bert_mask");
    mf_tensor gpu = lg;
    gpu.device = MF_DEV_CUDA;
    expect_error(mf_masked_msa_loss(ctx, &loss, &gpu, &tm, &b), "logits on the GPU", "host");
    case_free(&c);
    case_init(&c, L_DGRAM, ctx, 701);
    mf_tensor dl = t64(c.x, 3, c.N, c.N, c.B), pos = t64(c.pos, 2, c.N, 2, 1);
    mf_tensor m = t64(c.mask, 1, c.N, 1, 1);
    expect_error(mf_distogram_loss(ctx, &loss, &dl, &pos, &m, 2.3, 21.7), "pseudo_beta [N, 2]",
                 "pseudo_beta");
    case_free(&c);
}

int main(void)
{
    mf_ctx ctx;
    mf_arena arena;
    if (mf_test_ctx_cpu(&ctx, &arena, (size_t)16 << 20) != MF_OK) {
        fprintf(stderr, "context: %s\n", mf_last_error());
        return 1;
    }
    for (int k = 0; k < L_COUNT; k++) test_loss(&ctx, (loss_kind)k, 40 + 17 * (uint64_t)k);
    test_resolution_filter(&ctx);
    test_bins();
    test_plddt_tie_built();
    test_plddt_tie_vectors();
    test_errors(&ctx);
    mf_test_ctx_free(&ctx, &arena);
    return mf_test_finish("test_losses_simple");
}
