/* Frame aligned point error (Alg. 28, AF2 normalisation):
 *  - hand cases: one frame and one position, below and beyond the clamp, eps inside the sqrt and
 *    in the normalisation, the unclamped fraction;
 *  - the double backward against central finite differences, clamped (pairs on both sides of the
 *    clamp, none within 1e-3 of it) and unclamped, with masks containing zeros (F = 7 frames,
 *    P = 11 positions); gradients to the predicted rot (as a free 3x3 matrix), trans, positions;
 *  - the f32 op against the double reference (loss, unclamped fraction, accumulating backward);
 *  - invariance of the loss under global rigid transforms of the prediction and of the truth
 *    (each its own transform) and equivariance of the position gradient, in f32;
 *  - bitwise independence of the thread count; NaN reported; shape checks. */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "structure_module/fape.h"
#include "structure_module/rigid.h"
#include "tests/support/mf_test.h"

/* Global-transform invariance in f32: coordinates up to ~40 A are rounded to ~4e-6 A and each
 * local coordinate is a 3-term dot product, so each distance (~10-40 A) moves by ~1e-5 A, a
 * relative 1e-6; the loss averages ~50 of them. 1e-5 relative leaves a factor ~10. */
#define FAPE_INVARIANCE_RTOL 1e-5

static double *normal_f64(int64_t n, uint64_t seed, double sd)
{
    double *p = malloc(sizeof(double) * (size_t)(n ? n : 1));
    mf_test_fill_normal_f64(p, n, seed, sd);
    return p;
}

static double *random_rots(int64_t n, uint64_t seed)
{
    double *q = normal_f64(4 * n, seed, 1.0), *r = malloc(sizeof(double) * (size_t)(9 * n));
    mf_quat_normalize_f64(q, q, n);
    mf_quat_to_rot_f64(r, q, n);
    free(q);
    return r;
}

static float *rounded_f32(double *p, int64_t n)
{
    float *f = malloc(sizeof(float) * (size_t)(n ? n : 1));
    mf_f64_to_f32(f, p, n);
    mf_f32_to_f64(p, f, n);
    return f;
}

/* ---- hand cases ------------------------------------------------------------------------------ */

static void test_hand(mf_ctx *ctx)
{
    /* Identity frames; prediction (3, 4, 0) against truth at the origin: d = sqrt(25 + 1e-4),
     * loss = d / 10 / (1e-4 + 1 * 1). Beyond the clamp, (30, 40, 0): loss = 10 / 10 / (1 + 1e-4).
     * A second, masked position must not count. */
    float rot[9] = {1, 0, 0, 0, 1, 0, 0, 0, 1}, trans[3] = {0, 0, 0};
    float pos[6] = {3, 4, 0, 100, 0, 0}, tpos[6] = {0};
    float fm[1] = {1}, pm[2] = {1, 0};
    mf_tensor tr = mf_tensor_f32(rot, 3, 1, 3, 3), tt = mf_tensor_f32(trans, 2, 1, 3);
    mf_tensor tp = mf_tensor_f32(pos, 2, 2, 3), ttp = mf_tensor_f32(tpos, 2, 2, 3);
    mf_tensor tfm = mf_tensor_f32(fm, 1, 1), tpm = mf_tensor_f32(pm, 1, 2);
    mf_fape_options opt = mf_fape_default_options();
    float loss = -1, frac = -1;
    MF_TEST_OK(mf_fape_forward(ctx, &loss, &frac, &tr, &tt, &tr, &tt, &tp, &ttp, &tfm, &tpm, &opt));
    const double hand = sqrt(25.0 + 1e-4) / 10.0 / (1e-4 + 1.0), one = 1.0;
    mf_check_close_f32_f64("hand: loss below the clamp", &loss, &hand, 1, 0, 1e-6);
    mf_check_close_f32_f64("hand: unclamped fraction 1", &frac, &one, 1, 0, 0);
    /* d/dx of the loss: (x / d) / 10 / (1 + 1e-4) for the unmasked position only. */
    float dpos[6] = {0}, drot[9] = {0}, dtr[3] = {0};
    mf_tensor tdp = mf_tensor_f32(dpos, 2, 2, 3), tdr = mf_tensor_f32(drot, 3, 1, 3, 3);
    mf_tensor tdt = mf_tensor_f32(dtr, 2, 1, 3);
    MF_TEST_OK(mf_fape_backward(ctx, &tdr, &tdt, &tdp, 1.0f, &tr, &tt, &tr, &tt, &tp, &ttp, &tfm,
                                &tpm, &opt));
    const double d = sqrt(25.0 + 1e-4), c = 1.0 / (10.0 * (1.0 + 1e-4));
    const double dpos_hand[6] = {3 / d * c, 4 / d * c, 0, 0, 0, 0};
    const double dtr_hand[3] = {-3 / d * c, -4 / d * c, 0};
    mf_check_close_f32_f64("hand: dpred_pos (masked position gets none)", dpos, dpos_hand, 6, 1e-7,
                           1e-5);
    mf_check_close_f32_f64("hand: dpred_trans = -sum dpred_pos", dtr, dtr_hand, 3, 1e-7, 1e-5);

    pos[0] = 30, pos[1] = 40;
    MF_TEST_OK(mf_fape_forward(ctx, &loss, &frac, &tr, &tt, &tr, &tt, &tp, &ttp, &tfm, &tpm, &opt));
    const double hand_c = 1.0 / (1.0 + 1e-4), zero = 0;
    mf_check_close_f32_f64("hand: loss clamped at 10 A", &loss, &hand_c, 1, 0, 1e-6);
    mf_check_close_f32_f64("hand: unclamped fraction 0", &frac, &zero, 1, 0, 0);
    memset(dpos, 0, sizeof dpos);
    MF_TEST_OK(mf_fape_backward(ctx, NULL, NULL, &tdp, 1.0f, &tr, &tt, &tr, &tt, &tp, &ttp, &tfm,
                                &tpm, &opt));
    const double zeros[6] = {0};
    mf_check_close_f32_f64("hand: zero gradient beyond the clamp", dpos, zeros, 6, 0, 0);
    opt.clamp_distance = 0;
    MF_TEST_OK(mf_fape_forward(ctx, &loss, &frac, &tr, &tt, &tr, &tt, &tp, &ttp, &tfm, &tpm, &opt));
    const double hand_u = sqrt(2500.0 + 1e-4) / 10.0 / (1.0 + 1e-4);
    mf_check_close_f32_f64("hand: unclamped loss", &loss, &hand_u, 1, 0, 1e-6);
}

/* ---- a random case ------------------------------------------------------------------------- */

typedef struct {
    int64_t F, P;
    double clamp;
    double *pr, *pt, *tr, *tt, *xp, *xt, *fm, *pm, *loss, *work;
} fape_case;

static void fape_case_fwd(void *ud)
{
    fape_case *c = ud;
    mf_fape_loss_f64(c->loss, NULL, c->work, c->pr, c->pt, c->tr, c->tt, c->xp, c->xt, c->fm, c->pm,
                     c->F, c->P, c->clamp, 10.0, 1e-4);
}

/* Truth: frames and positions spread over ~15 A; prediction: the truth with rotations turned by
 * ~0.15 rad and translations and positions moved by `noise` A (sd per coordinate), so local errors
 * range from a few A to beyond 10 A. */
static fape_case make_case(int64_t F, int64_t P, double clamp, double noise, uint64_t seed)
{
    fape_case c = {.F = F, .P = P, .clamp = clamp};
    double *q = normal_f64(4 * F, seed, 1.0), *dq = normal_f64(4 * F, seed + 3, 0.15);
    mf_quat_normalize_f64(q, q, F);
    c.tr = malloc(sizeof(double) * (size_t)(9 * F));
    c.pr = malloc(sizeof(double) * (size_t)(9 * F));
    mf_quat_to_rot_f64(c.tr, q, F);
    for (int64_t i = 0; i < 4 * F; i++) q[i] += dq[i];
    mf_quat_normalize_f64(q, q, F);
    mf_quat_to_rot_f64(c.pr, q, F);
    free(q), free(dq);
    c.tt = normal_f64(3 * F, seed + 1, 8.0);
    c.xt = normal_f64(3 * P, seed + 2, 8.0);
    c.pt = normal_f64(3 * F, seed + 4, noise);
    c.xp = normal_f64(3 * P, seed + 5, noise);
    for (int64_t i = 0; i < 3 * F; i++) c.pt[i] += c.tt[i];
    for (int64_t j = 0; j < 3 * P; j++) c.xp[j] += c.xt[j];
    c.fm = malloc(sizeof(double) * (size_t)F);
    c.pm = malloc(sizeof(double) * (size_t)P);
    mf_test_fill_mask_f64(c.fm, 1, F, seed + 6, 0.7);
    mf_test_fill_mask_f64(c.pm, 1, P, seed + 7, 0.7);
    c.loss = malloc(sizeof(double));
    c.work = malloc(sizeof(double) * (size_t)(2 * F));
    return c;
}

static void free_case(fape_case *c)
{
    free(c->pr), free(c->pt), free(c->tr), free(c->tt), free(c->xp), free(c->xt), free(c->fm);
    free(c->pm), free(c->loss), free(c->work);
}

/* Counts unmasked pairs below / beyond the clamp and the smallest |d - clamp|. */
static void pair_stats(const fape_case *c, int *below, int *beyond, double *margin)
{
    *below = *beyond = 0;
    *margin = INFINITY;
    for (int64_t i = 0; i < c->F; i++)
        for (int64_t j = 0; j < c->P; j++) {
            if (c->fm[i] == 0 || c->pm[j] == 0) continue;
            double lp[3], lt[3];
            mf_rigid_apply_inverse_f64(lp, c->pr + 9 * i, c->pt + 3 * i, c->xp + 3 * j, 1);
            mf_rigid_apply_inverse_f64(lt, c->tr + 9 * i, c->tt + 3 * i, c->xt + 3 * j, 1);
            double d = sqrt((lp[0] - lt[0]) * (lp[0] - lt[0]) + (lp[1] - lt[1]) * (lp[1] - lt[1]) +
                            (lp[2] - lt[2]) * (lp[2] - lt[2]) + 1e-4);
            if (d > 10.0)
                (*beyond)++;
            else
                (*below)++;
            *margin = fmin(*margin, fabs(d - 10.0));
        }
}

static void test_gradcheck(double clamp)
{
    const int64_t F = 7, P = 11;
    fape_case c = make_case(F, P, clamp, 3.0, 500);
    int below, beyond;
    double margin;
    pair_stats(&c, &below, &beyond, &margin);
    printf("  case: %d unmasked pairs below 10 A, %d beyond, closest |d - 10| = %.3g A\n", below,
           beyond, margin);
    MF_TEST_TRUE(below >= 5 && beyond >= 5 && margin > 1e-3,
                 "the random case must have pairs on both sides of the clamp, none at it");
    double gl = 0.7; /* random-ish upstream gradient of the scalar loss */
    double *dr = calloc((size_t)(9 * F), sizeof(double)), *dt = calloc((size_t)(3 * F), 8);
    double *dx = calloc((size_t)(3 * P), sizeof(double));
    mf_fape_loss_backward_f64(dr, dt, dx, gl, c.pr, c.pt, c.tr, c.tt, c.xp, c.xt, c.fm, c.pm, F, P,
                              c.clamp, 10.0, 1e-4);
    mf_gc_array in[3] = {
        {"pred_rot", c.pr, 9 * F}, {"pred_trans", c.pt, 3 * F}, {"pred_pos", c.xp, 3 * P}};
    const double *grads[3] = {dr, dt, dx};
    mf_gc_array out[1] = {{"loss", c.loss, 1}};
    const double *gout[1] = {&gl};
    char what[96];
    snprintf(what, sizeof what, "FAPE %s (f64, F 7, P 11, masks with zeros)",
             clamp > 0 ? "clamped at 10 A" : "unclamped");
    mf_gradcheck(what, fape_case_fwd, &c, in, grads, 3, out, gout, 1, MF_TOL_FD_STEP,
                 MF_TOL_FD_ATOL, MF_TOL_FD_RTOL, 0);
    /* Masked frames get no gradient, and clamping removes some. */
    double masked = 0;
    for (int64_t i = 0; i < F; i++)
        if (c.fm[i] == 0)
            for (int k = 0; k < 9; k++) masked = fmax(masked, fabs(dr[9 * i + k]));
    printf("  max |dpred_rot| of masked frames: %g (must be 0)\n", masked);
    MF_TEST_TRUE(masked == 0, "a masked frame received a gradient");
    free(dr), free(dt), free(dx);
    free_case(&c);
}

/* ---- f32 against f64, invariance ------------------------------------------------------------ */

typedef struct {
    float *pr, *pt, *tr, *tt, *xp, *xt, *fm, *pm;
    mf_tensor t[8];
} case32;

static case32 to_f32_case(fape_case *c)
{
    case32 k;
    int64_t F = c->F, P = c->P;
    k.pr = rounded_f32(c->pr, 9 * F), k.pt = rounded_f32(c->pt, 3 * F);
    k.tr = rounded_f32(c->tr, 9 * F), k.tt = rounded_f32(c->tt, 3 * F);
    k.xp = rounded_f32(c->xp, 3 * P), k.xt = rounded_f32(c->xt, 3 * P);
    k.fm = rounded_f32(c->fm, F), k.pm = rounded_f32(c->pm, P);
    k.t[0] = mf_tensor_f32(k.pr, 3, F, 3, 3), k.t[1] = mf_tensor_f32(k.pt, 2, F, 3);
    k.t[2] = mf_tensor_f32(k.tr, 3, F, 3, 3), k.t[3] = mf_tensor_f32(k.tt, 2, F, 3);
    k.t[4] = mf_tensor_f32(k.xp, 2, P, 3), k.t[5] = mf_tensor_f32(k.xt, 2, P, 3);
    k.t[6] = mf_tensor_f32(k.fm, 1, F), k.t[7] = mf_tensor_f32(k.pm, 1, P);
    return k;
}

static void free_case32(case32 *k)
{
    free(k->pr), free(k->pt), free(k->tr), free(k->tt), free(k->xp), free(k->xt), free(k->fm);
    free(k->pm);
}

static mf_status run32(mf_ctx *ctx, case32 *k, const mf_fape_options *o, float *loss, float *frac,
                       float *dr, float *dt, float *dx)
{
    mf_tensor *t = k->t;
    MF_TRY(mf_fape_forward(ctx, loss, frac, &t[0], &t[1], &t[2], &t[3], &t[4], &t[5], &t[6], &t[7],
                           o));
    mf_tensor tdr = mf_tensor_f32(dr, 3, t[0].shape[0], 3, 3);
    mf_tensor tdt = mf_tensor_f32(dt, 2, t[0].shape[0], 3);
    mf_tensor tdx = mf_tensor_f32(dx, 2, t[4].shape[0], 3);
    return mf_fape_backward(ctx, &tdr, &tdt, &tdx, 1.0f, &t[0], &t[1], &t[2], &t[3], &t[4], &t[5],
                            &t[6], &t[7], o);
}

static void test_f32(mf_ctx *ctx, double clamp)
{
    /* Bigger than the gradient case and not a multiple of anything: 37 frames, 53 positions. */
    const int64_t F = 37, P = 53;
    fape_case c = make_case(F, P, clamp, 3.0, 900);
    case32 k = to_f32_case(&c);
    mf_fape_options o = {(float)clamp, 10.0f, 1e-4f};
    double loss64, frac64;
    mf_fape_loss_f64(&loss64, &frac64, c.work, c.pr, c.pt, c.tr, c.tt, c.xp, c.xt, c.fm, c.pm, F, P,
                     clamp, 10.0, 1e-4);
    /* Nonzero initial gradients: the backward accumulates. */
    double *dr = normal_f64(9 * F, 901, 0.01), *dt = normal_f64(3 * F, 902, 0.01);
    double *dx = normal_f64(3 * P, 903, 0.01);
    float *dr32 = rounded_f32(dr, 9 * F), *dt32 = rounded_f32(dt, 3 * F);
    float *dx32 = rounded_f32(dx, 3 * P);
    mf_fape_loss_backward_f64(dr, dt, dx, 1.0, c.pr, c.pt, c.tr, c.tt, c.xp, c.xt, c.fm, c.pm, F, P,
                              clamp, 10.0, 1e-4);
    float loss, frac;
    MF_TEST_OK(run32(ctx, &k, &o, &loss, &frac, dr32, dt32, dx32));
    const char *tag = clamp > 0 ? "clamped" : "unclamped";
    char what[96];
    printf("  FAPE %s (F 37, P 53): loss %.7g, unclamped fraction %.4f\n", tag, loss64, frac64);
    snprintf(what, sizeof what, "FAPE %s f32 vs f64: loss", tag);
    mf_check_close_f32_f64(what, &loss, &loss64, 1, MF_TOL_F32_ATOL, MF_TOL_F32_RTOL);
    snprintf(what, sizeof what, "FAPE %s f32 vs f64: unclamped fraction", tag);
    mf_check_close_f32_f64(what, &frac, &frac64, 1, 0, 1e-6);
    snprintf(what, sizeof what, "FAPE %s f32 vs f64: dpred_rot (accumulated)", tag);
    mf_check_close_f32_f64(what, dr32, dr, 9 * F, MF_TOL_F32_ATOL, MF_TOL_F32_RTOL);
    snprintf(what, sizeof what, "FAPE %s f32 vs f64: dpred_trans (accumulated)", tag);
    mf_check_close_f32_f64(what, dt32, dt, 3 * F, MF_TOL_F32_ATOL, MF_TOL_F32_RTOL);
    snprintf(what, sizeof what, "FAPE %s f32 vs f64: dpred_pos (accumulated)", tag);
    mf_check_close_f32_f64(what, dx32, dx, 3 * P, MF_TOL_F32_ATOL, MF_TOL_F32_RTOL);

    /* Thread-count independence: 1 thread against the default, bitwise. */
    float loss1, frac1, *a = calloc((size_t)(9 * F + 3 * F + 3 * P), sizeof(float));
    float *b = calloc((size_t)(9 * F + 3 * F + 3 * P), sizeof(float));
    float lossn, fracn;
    int threads = omp_get_max_threads();
    omp_set_num_threads(1);
    MF_TEST_OK(run32(ctx, &k, &o, &loss1, &frac1, a, a + 9 * F, a + 12 * F));
    omp_set_num_threads(threads > 1 ? threads : 3);
    MF_TEST_OK(run32(ctx, &k, &o, &lossn, &fracn, b, b + 9 * F, b + 12 * F));
    omp_set_num_threads(threads);
    snprintf(what, sizeof what, "FAPE %s: 1 thread vs %d, gradients", tag,
             threads > 1 ? threads : 3);
    mf_check_bitwise_f32(what, a, b, 12 * F + 3 * P);
    snprintf(what, sizeof what, "FAPE %s: 1 thread vs several, loss", tag);
    mf_check_bitwise_f32(what, &loss1, &lossn, 1);
    free(a), free(b), free(dr), free(dt), free(dx), free(dr32), free(dt32), free(dx32);
    free_case32(&k);
    free_case(&c);
}

/* frames T_i -> G o T_i and points x -> G x with G = (gr, gt). */
static void transform(double *rot, double *trans, double *pos, int64_t F, int64_t P,
                      const double *gr, const double *gt)
{
    double *r = malloc(sizeof(double) * (size_t)(9 * F)), *t = malloc(sizeof(double) * 3 * F);
    for (int64_t i = 0; i < F; i++)
        mf_rigid_compose_f64(r + 9 * i, t + 3 * i, gr, gt, rot + 9 * i, trans + 3 * i, 1);
    memcpy(rot, r, sizeof(double) * (size_t)(9 * F));
    memcpy(trans, t, sizeof(double) * (size_t)(3 * F));
    for (int64_t j = 0; j < P; j++) {
        double y[3];
        mf_rigid_apply_f64(y, gr, gt, pos + 3 * j, 1);
        memcpy(pos + 3 * j, y, sizeof y);
    }
    free(r), free(t);
}

static void test_invariance(mf_ctx *ctx, double clamp)
{
    const int64_t F = 23, P = 31;
    fape_case c = make_case(F, P, clamp, 3.0, 1300);
    case32 k = to_f32_case(&c);
    mf_fape_options o = {(float)clamp, 10.0f, 1e-4f};
    float loss0, loss1, frac0, frac1;
    float *g0 = calloc((size_t)(12 * F + 3 * P), sizeof(float));
    float *g1 = calloc((size_t)(12 * F + 3 * P), sizeof(float));
    MF_TEST_OK(run32(ctx, &k, &o, &loss0, &frac0, g0, g0 + 9 * F, g0 + 12 * F));
    /* Prediction and truth each moved by their own global motion (translations ~20 A). */
    double *g1r = random_rots(1, 1301), *g1t = normal_f64(3, 1302, 20.0);
    double *g2r = random_rots(1, 1303), *g2t = normal_f64(3, 1304, 20.0);
    transform(c.pr, c.pt, c.xp, F, P, g1r, g1t);
    transform(c.tr, c.tt, c.xt, F, P, g2r, g2t);
    case32 k2 = to_f32_case(&c);
    MF_TEST_OK(run32(ctx, &k2, &o, &loss1, &frac1, g1, g1 + 9 * F, g1 + 12 * F));
    const double l0 = loss0;
    char what[128];
    snprintf(what, sizeof what,
             "FAPE %s f32: loss invariant under global motions of prediction "
             "and truth",
             clamp > 0 ? "clamped" : "unclamped");
    mf_check_close_f32_f64(what, &loss1, &l0, 1, 0, FAPE_INVARIANCE_RTOL);
    /* The position gradient turns with the prediction: dx' = G1 dx. */
    double *dx0 = malloc(sizeof(double) * (size_t)(3 * P)), *dx0r = malloc(sizeof(double) * 3 * P);
    mf_f32_to_f64(dx0, g0 + 12 * F, 3 * P);
    double zero[3] = {0};
    for (int64_t j = 0; j < P; j++) mf_rigid_apply_f64(dx0r + 3 * j, g1r, zero, dx0 + 3 * j, 1);
    double scale = 0;
    for (int64_t j = 0; j < 3 * P; j++) scale = fmax(scale, fabs(dx0r[j]));
    snprintf(what, sizeof what, "FAPE %s f32: dpred_pos equivariant (dx' = G dx)",
             clamp > 0 ? "clamped" : "unclamped");
    mf_check_close_f32_f64(what, g1 + 12 * F, dx0r, 3 * P, 1e-4 * scale, 1e-4);
    free(g0), free(g1), free(g1r), free(g1t), free(g2r), free(g2t), free(dx0), free(dx0r);
    free_case32(&k), free_case32(&k2);
    free_case(&c);
}

static void test_errors(mf_ctx *ctx)
{
    fape_case c = make_case(3, 4, 10.0, 2.0, 1700);
    case32 k = to_f32_case(&c);
    mf_fape_options o = mf_fape_default_options();
    float loss, *t = k.xp;
    t[4] = NAN;
    mf_tensor *a = k.t;
    mf_status st =
        mf_fape_forward(ctx, &loss, NULL, &a[0], &a[1], &a[2], &a[3], &a[4], &a[5], NULL, NULL, &o);
    printf("  NaN in pred_pos -> %s: %s\n", mf_status_name(st), mf_last_error());
    MF_TEST_TRUE(st == MF_ERR_NUMERIC, "a NaN position must be reported");
    mf_clear_error();
    mf_tensor bad = mf_tensor_f32(k.xt, 2, 3, 3); /* 3 target positions for 4 predicted */
    st = mf_fape_forward(ctx, &loss, NULL, &a[0], &a[1], &a[2], &a[3], &a[4], &bad, NULL, NULL, &o);
    printf("  target_pos [3, 3] with pred_pos [4, 3] -> %s: %s\n", mf_status_name(st),
           mf_last_error());
    MF_TEST_TRUE(st == MF_ERR_INVALID, "mismatched positions must be refused");
    mf_clear_error();
    free_case32(&k);
    free_case(&c);
}

int main(void)
{
    mf_ctx ctx;
    mf_arena arena;
    MF_TEST_OK(mf_test_ctx_cpu(&ctx, &arena, (size_t)16 << 20));
    test_hand(&ctx);
    test_gradcheck(10.0);
    test_gradcheck(0.0);
    test_f32(&ctx, 10.0);
    test_f32(&ctx, 0.0);
    test_invariance(&ctx, 10.0);
    test_invariance(&ctx, 0.0);
    test_errors(&ctx);
    mf_test_ctx_free(&ctx, &arena);
    return mf_test_finish("test_fape");
}
