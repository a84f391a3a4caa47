/* Rigid-body algebra (structure_module/rigid.h) and the backbone update (Alg. 23):
 *  - conventions worked by hand: Hamilton product i*j = k, a 90-degree turn about z, and the
 *    identities R(a*b) = R(a) R(b), T^-1 o T = id, T^-1 (T x) = x, pre_compose = T o T_update;
 *  - every backward of the double version against central finite differences with a random
 *    upstream gradient (n = 5 elements, non-unit quaternions where the function allows them);
 *  - the float version against the double one, forward and accumulating backward;
 *  - the backbone update op (linear through core/ops + pre_compose, f32) against a double
 *    composition of the reference linear and pre_compose, and that composition's gradients against
 *    finite differences (N = 9 residues, c_s = 13);
 *  - argument checks. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/ref/ref.h"
#include "structure_module/backbone_update.h"
#include "structure_module/rigid.h"
#include "tests/support/mf_test.h"

/* Exact identities evaluated in double: a few roundings of O(1) numbers. */
#define RG_IDENTITY_ATOL 1e-12

enum {
    OP_QUAT_TO_ROT,
    OP_NORMALIZE,
    OP_MULTIPLY,
    OP_COMPOSE,
    OP_APPLY,
    OP_INVERT,
    OP_APPLY_INVERSE,
    OP_PRE_COMPOSE,
    OP_COUNT
};

typedef struct {
    const char *name;
    int n_in, n_out;
    const char *in_names[4];
    int in_len[4]; /* per element */
    const char *out_names[3];
    int out_len[3];
} op_desc;

static const op_desc ops[OP_COUNT] = {
    {"quat_to_rot", 1, 1, {"quat"}, {4}, {"rot"}, {9}},
    {"quat_normalize", 1, 1, {"quat"}, {4}, {"out"}, {4}},
    {"quat_multiply", 2, 1, {"a", "b"}, {4, 4}, {"out"}, {4}},
    {"rigid_compose",
     4,
     2,
     {"rot_a", "trans_a", "rot_b", "trans_b"},
     {9, 3, 9, 3},
     {"rot", "trans"},
     {9, 3}},
    {"rigid_apply", 3, 1, {"rot", "trans", "x"}, {9, 3, 3}, {"y"}, {3}},
    {"rigid_invert", 2, 2, {"rot", "trans"}, {9, 3}, {"rot_inv", "trans_inv"}, {9, 3}},
    {"rigid_apply_inverse", 3, 1, {"rot", "trans", "x"}, {9, 3, 3}, {"y"}, {3}},
    {"quat_affine_pre_compose",
     3,
     3,
     {"quat", "trans", "update"},
     {4, 3, 6},
     {"quat_out", "trans_out", "rot_out"},
     {4, 3, 9}},
};

#define DEFINE_RUN(SUF, real)                                                                      \
    static void fwd_##SUF(int op, int64_t n, real *const *in, real *const *out)                    \
    {                                                                                              \
        switch (op) {                                                                              \
        case OP_QUAT_TO_ROT:                                                                       \
            mf_quat_to_rot_##SUF(out[0], in[0], n);                                                \
            break;                                                                                 \
        case OP_NORMALIZE:                                                                         \
            mf_quat_normalize_##SUF(out[0], in[0], n);                                             \
            break;                                                                                 \
        case OP_MULTIPLY:                                                                          \
            mf_quat_multiply_##SUF(out[0], in[0], in[1], n);                                       \
            break;                                                                                 \
        case OP_COMPOSE:                                                                           \
            mf_rigid_compose_##SUF(out[0], out[1], in[0], in[1], in[2], in[3], n);                 \
            break;                                                                                 \
        case OP_APPLY:                                                                             \
            mf_rigid_apply_##SUF(out[0], in[0], in[1], in[2], n);                                  \
            break;                                                                                 \
        case OP_INVERT:                                                                            \
            mf_rigid_invert_##SUF(out[0], out[1], in[0], in[1], n);                                \
            break;                                                                                 \
        case OP_APPLY_INVERSE:                                                                     \
            mf_rigid_apply_inverse_##SUF(out[0], in[0], in[1], in[2], n);                          \
            break;                                                                                 \
        default:                                                                                   \
            mf_quat_affine_pre_compose_##SUF(out[0], out[1], out[2], in[0], in[1], in[2], n);      \
        }                                                                                          \
    }                                                                                              \
    static void bwd_##SUF(int op, int64_t n, real *const *din, real *const *dout, real *const *in) \
    {                                                                                              \
        switch (op) {                                                                              \
        case OP_QUAT_TO_ROT:                                                                       \
            mf_quat_to_rot_backward_##SUF(din[0], dout[0], in[0], n);                              \
            break;                                                                                 \
        case OP_NORMALIZE:                                                                         \
            mf_quat_normalize_backward_##SUF(din[0], dout[0], in[0], n);                           \
            break;                                                                                 \
        case OP_MULTIPLY:                                                                          \
            mf_quat_multiply_backward_##SUF(din[0], din[1], dout[0], in[0], in[1], n);             \
            break;                                                                                 \
        case OP_COMPOSE:                                                                           \
            mf_rigid_compose_backward_##SUF(din[0], din[1], din[2], din[3], dout[0], dout[1],      \
                                            in[0], in[2], in[3], n);                               \
            break;                                                                                 \
        case OP_APPLY:                                                                             \
            mf_rigid_apply_backward_##SUF(din[0], din[1], din[2], dout[0], in[0], in[2], n);       \
            break;                                                                                 \
        case OP_INVERT:                                                                            \
            mf_rigid_invert_backward_##SUF(din[0], din[1], dout[0], dout[1], in[0], in[1], n);     \
            break;                                                                                 \
        case OP_APPLY_INVERSE:                                                                     \
            mf_rigid_apply_inverse_backward_##SUF(din[0], din[1], din[2], dout[0], in[0], in[1],   \
                                                  in[2], n);                                       \
            break;                                                                                 \
        default:                                                                                   \
            mf_quat_affine_pre_compose_backward_##SUF(din[0], din[1], din[2], dout[0], dout[1],    \
                                                      dout[2], in[0], in[2], n);                   \
        }                                                                                          \
    }
DEFINE_RUN(f64, double)
DEFINE_RUN(f32, float)

static double *normal_f64(int64_t n, uint64_t seed, double sd)
{
    double *p = malloc(sizeof(double) * (size_t)(n ? n : 1));
    mf_test_fill_normal_f64(p, n, seed, sd);
    return p;
}

/* Random unit quaternions (w first). */
static double *unit_quats(int64_t n, uint64_t seed)
{
    double *q = normal_f64(4 * n, seed, 1.0);
    mf_quat_normalize_f64(q, q, n);
    return q;
}

/* Rotations of random unit quaternions, so the rigid ops see proper frames (their formulas are
 * checked for any matrix by the finite differences all the same). */
static double *random_rots(int64_t n, uint64_t seed)
{
    double *q = unit_quats(n, seed), *r = malloc(sizeof(double) * (size_t)(9 * n));
    mf_quat_to_rot_f64(r, q, n);
    free(q);
    return r;
}

/* ---- conventions ------------------------------------------------------------------------- */

static void test_conventions(void)
{
    const double i[4] = {0, 1, 0, 0}, j[4] = {0, 0, 1, 0}, k_hand[4] = {0, 0, 0, 1};
    double k[4];
    mf_quat_multiply_f64(k, i, j, 1);
    mf_check_close_f64("Hamilton product: i * j = k", k, k_hand, 4, RG_IDENTITY_ATOL, 0);

    /* 90 degrees about z: q = (cos 45, 0, 0, sin 45) turns e_x into e_y. */
    const double h = sqrt(0.5), qz[4] = {h, 0, 0, h};
    const double rz_hand[9] = {0, -1, 0, 1, 0, 0, 0, 0, 1}, ex[3] = {1, 0, 0}, zero[3] = {0};
    const double ey[3] = {0, 1, 0};
    double rz[9], y[3];
    mf_quat_to_rot_f64(rz, qz, 1);
    mf_check_close_f64("quat_to_rot: 90 deg about z", rz, rz_hand, 9, RG_IDENTITY_ATOL, 0);
    mf_rigid_apply_f64(y, rz, zero, ex, 1);
    mf_check_close_f64("rigid_apply: turn e_x into e_y", y, ey, 3, RG_IDENTITY_ATOL, 0);

    const int64_t n = 6;
    double *qa = unit_quats(n, 1), *qb = unit_quats(n, 2), *qab = malloc(sizeof(double) * 4 * n);
    double *ra = malloc(sizeof(double) * 9 * n), *rb = malloc(sizeof(double) * 9 * n);
    double *rab = malloc(sizeof(double) * 9 * n), *rr = malloc(sizeof(double) * 9 * n);
    double *tt = malloc(sizeof(double) * 3 * n);
    double *ta = normal_f64(3 * n, 3, 2.0), *tb = normal_f64(3 * n, 4, 2.0);
    double *x = normal_f64(3 * n, 5, 3.0);
    mf_quat_multiply_f64(qab, qa, qb, n);
    mf_quat_to_rot_f64(ra, qa, n);
    mf_quat_to_rot_f64(rb, qb, n);
    mf_quat_to_rot_f64(rab, qab, n);
    mf_rigid_compose_f64(rr, tt, ra, ta, rb, tb, n);
    mf_check_close_f64("R(a * b) = R(a) R(b) (product and rotation conventions agree)", rab, rr,
                       9 * n, RG_IDENTITY_ATOL, 0);

    /* R R^T = I and det R = 1 for unit quaternions. */
    double orth_err = 0, det_err = 0;
    for (int64_t e = 0; e < n; e++) {
        const double *r = ra + 9 * e;
        for (int a = 0; a < 3; a++)
            for (int b = 0; b < 3; b++) {
                double s =
                    r[3 * a] * r[3 * b] + r[3 * a + 1] * r[3 * b + 1] + r[3 * a + 2] * r[3 * b + 2];
                orth_err = fmax(orth_err, fabs(s - (a == b)));
            }
        double det = r[0] * (r[4] * r[8] - r[5] * r[7]) - r[1] * (r[3] * r[8] - r[5] * r[6]) +
                     r[2] * (r[3] * r[7] - r[4] * r[6]);
        det_err = fmax(det_err, fabs(det - 1));
    }
    printf("  quat_to_rot of unit quaternions: max |R R^T - I| %.2e, max |det R - 1| %.2e "
           "(tol %.0e)\n",
           orth_err, det_err, RG_IDENTITY_ATOL);
    MF_TEST_TRUE(orth_err <= RG_IDENTITY_ATOL && det_err <= RG_IDENTITY_ATOL,
                 "rotation of a unit quaternion is not a proper rotation");

    /* Compose with (T o U) x = T (U x), invert, apply_inverse. */
    double *y1 = malloc(sizeof(double) * 3 * n), *y2 = malloc(sizeof(double) * 3 * n);
    mf_rigid_apply_f64(y1, rb, tb, x, n);
    mf_rigid_apply_f64(y2, ra, ta, y1, n);
    mf_rigid_apply_f64(y1, rr, tt, x, n);
    mf_check_close_f64("(A o B) x = A (B x)", y1, y2, 3 * n, RG_IDENTITY_ATOL, 1e-12);
    double *ri = malloc(sizeof(double) * 9 * n), *ti = malloc(sizeof(double) * 3 * n);
    mf_rigid_invert_f64(ri, ti, ra, ta, n);
    mf_rigid_compose_f64(rr, tt, ri, ti, ra, ta, n);
    double *eye = calloc((size_t)(9 * n), sizeof(double)), *z3 = calloc((size_t)(3 * n), 8);
    for (int64_t e = 0; e < n; e++) eye[9 * e] = eye[9 * e + 4] = eye[9 * e + 8] = 1;
    mf_check_close_f64("T^-1 o T = identity (rot)", rr, eye, 9 * n, RG_IDENTITY_ATOL, 0);
    mf_check_close_f64("T^-1 o T = identity (trans)", tt, z3, 3 * n, RG_IDENTITY_ATOL, 0);
    mf_rigid_apply_f64(y1, ra, ta, x, n);
    mf_rigid_apply_inverse_f64(y2, ra, ta, y1, n);
    mf_check_close_f64("T^-1 (T x) = x (apply_inverse)", y2, x, 3 * n, RG_IDENTITY_ATOL, 1e-12);
    mf_rigid_apply_f64(y2, ri, ti, y1, n);
    mf_check_close_f64("apply(invert(T)) = apply_inverse(T)", y2, x, 3 * n, RG_IDENTITY_ATOL,
                       1e-12);

    /* pre_compose: T' = T o T_update with T_update = (R(normalise(1, b, c, d)), t): the
     * translation update is taken in the current frame (Alg. 23, Alg. 20 line 10). */
    double *u = normal_f64(6 * n, 6, 0.5), *qo = malloc(sizeof(double) * 4 * n);
    double *to = malloc(sizeof(double) * 3 * n), *ro = malloc(sizeof(double) * 9 * n);
    double *qu = malloc(sizeof(double) * 4 * n), *ru = malloc(sizeof(double) * 9 * n);
    double *tu = malloc(sizeof(double) * 3 * n);
    for (int64_t e = 0; e < n; e++) {
        qu[4 * e] = 1;
        for (int c = 0; c < 3; c++) {
            qu[4 * e + 1 + c] = u[6 * e + c];
            tu[3 * e + c] = u[6 * e + 3 + c];
        }
    }
    mf_quat_normalize_f64(qu, qu, n);
    mf_quat_to_rot_f64(ru, qu, n);
    mf_rigid_compose_f64(rr, tt, ra, ta, ru, tu, n);
    mf_quat_affine_pre_compose_f64(qo, to, ro, qa, ta, u, n);
    mf_check_close_f64("pre_compose rot = R(quat) R(normalise(1, b, c, d))", ro, rr, 9 * n,
                       RG_IDENTITY_ATOL, 1e-12);
    mf_check_close_f64("pre_compose trans = trans + R(quat) t", to, tt, 3 * n, RG_IDENTITY_ATOL,
                       1e-12);
    mf_quat_multiply_f64(qab, qa, qu, n);
    mf_check_close_f64("pre_compose quat = quat * normalise(1, b, c, d)", qo, qab, 4 * n,
                       RG_IDENTITY_ATOL, 1e-12);
    free(qa), free(qb), free(qab), free(ra), free(rb), free(rab), free(rr), free(tt), free(ta);
    free(tb), free(x), free(y1), free(y2), free(ri), free(ti), free(eye), free(z3), free(u);
    free(qo), free(to), free(ro), free(qu), free(ru), free(tu);
}

/* ---- finite differences and float against double ----------------------------------------- */

typedef struct {
    int op;
    int64_t n;
    double *in[4], *out[3];
} gc_case;

static void gc_fwd(void *ud)
{
    gc_case *c = ud;
    fwd_f64(c->op, c->n, c->in, c->out);
}

/* Inputs per op: quaternions of norm ~1..2 (not unit: the formulas hold for any quaternion),
 * except pre_compose, whose input is a frame's unit quaternion; rotations of random frames. */
static double *make_input(int op, int slot, int64_t n, uint64_t seed)
{
    const op_desc *d = &ops[op];
    int len = d->in_len[slot];
    if (len == 9) return random_rots(n, seed);
    if (len == 4 && op == OP_PRE_COMPOSE) return unit_quats(n, seed);
    double *p = normal_f64(len * n, seed, len == 4 ? 0.8 : 1.5);
    if (len == 4)
        for (int64_t e = 0; e < n; e++) p[4 * e] += 0.5; /* keep |q| away from 0 */
    return p;
}

static void test_op(int op)
{
    const op_desc *d = &ops[op];
    const int64_t n = 5;
    gc_case c = {.op = op, .n = n};
    double *din[4] = {0}, *gout[3] = {0};
    float *in32[4] = {0}, *out32[3] = {0}, *din32[4] = {0}, *gout32[3] = {0};
    mf_gc_array gin[4], gouts[3];
    for (int s = 0; s < d->n_in; s++) {
        int64_t m = d->in_len[s] * n;
        c.in[s] = make_input(op, s, n, 100 * (uint64_t)op + (uint64_t)s);
        din[s] = calloc((size_t)m, sizeof(double));
        in32[s] = malloc(sizeof(float) * (size_t)m);
        mf_f64_to_f32(in32[s], c.in[s], m);
        mf_f32_to_f64(c.in[s], in32[s], m); /* both precisions see the same inputs */
        gin[s] = (mf_gc_array){d->in_names[s], c.in[s], m};
    }
    for (int s = 0; s < d->n_out; s++) {
        int64_t m = d->out_len[s] * n;
        c.out[s] = calloc((size_t)m, sizeof(double));
        gout[s] = normal_f64(m, 1000 + 10 * (uint64_t)op + (uint64_t)s, 1.0);
        out32[s] = malloc(sizeof(float) * (size_t)m);
        gout32[s] = malloc(sizeof(float) * (size_t)m);
        mf_f64_to_f32(gout32[s], gout[s], m);
        mf_f32_to_f64(gout[s], gout32[s], m);
        gouts[s] = (mf_gc_array){d->out_names[s], c.out[s], m};
    }
    bwd_f64(op, n, din, gout, c.in);
    char what[96];
    snprintf(what, sizeof what, "%s (f64, n %lld)", d->name, (long long)n);
    mf_gradcheck(what, gc_fwd, &c, gin, (const double *const *)din, d->n_in, gouts,
                 (const double *const *)gout, d->n_out, MF_TOL_FD_STEP, MF_TOL_FD_ATOL,
                 MF_TOL_FD_RTOL, 0);

    /* float against double: forward, and a backward that accumulates onto nonzero gradients. */
    fwd_f64(op, n, c.in, c.out);
    fwd_f32(op, n, in32, out32);
    for (int s = 0; s < d->n_out; s++) {
        snprintf(what, sizeof what, "%s f32 vs f64: %s", d->name, d->out_names[s]);
        mf_check_close_f32_f64(what, out32[s], c.out[s], d->out_len[s] * n, MF_TOL_F32_ATOL,
                               MF_TOL_F32_RTOL);
    }
    for (int s = 0; s < d->n_in; s++) {
        int64_t m = d->in_len[s] * n;
        din32[s] = malloc(sizeof(float) * (size_t)m);
        mf_test_fill_normal_f64(din[s], m, 2000 + 10 * (uint64_t)op + (uint64_t)s, 1.0);
        mf_f64_to_f32(din32[s], din[s], m);
        mf_f32_to_f64(din[s], din32[s], m);
    }
    bwd_f64(op, n, din, gout, c.in);
    bwd_f32(op, n, din32, gout32, in32);
    for (int s = 0; s < d->n_in; s++) {
        snprintf(what, sizeof what, "%s f32 vs f64: d%s (accumulated)", d->name, d->in_names[s]);
        mf_check_close_f32_f64(what, din32[s], din[s], d->in_len[s] * n, MF_TOL_F32_ATOL,
                               MF_TOL_F32_RTOL);
    }
    for (int s = 0; s < 4; s++) free(c.in[s]), free(din[s]), free(in32[s]), free(din32[s]);
    for (int s = 0; s < 3; s++) free(c.out[s]), free(gout[s]), free(out32[s]), free(gout32[s]);
}

/* ---- backbone update ----------------------------------------------------------------------- */

typedef struct {
    int64_t N, C;
    double *s, *quat, *trans, *w, *b, *u, *qo, *to, *ro;
} bu_case;

static void bu_fwd(void *ud)
{
    bu_case *c = ud;
    mf_ref_linear_forward_f64(c->u, c->s, c->w, c->b, c->N, c->C, 6, false);
    mf_quat_affine_pre_compose_f64(c->qo, c->to, c->ro, c->quat, c->trans, c->u, c->N);
}

static float *rounded_f32(double *p, int64_t n)
{
    float *f = malloc(sizeof(float) * (size_t)n);
    mf_f64_to_f32(f, p, n);
    mf_f32_to_f64(p, f, n);
    return f;
}

static void test_backbone_update(mf_ctx *ctx)
{
    const int64_t N = 9, C = 13;
    bu_case c = {.N = N, .C = C};
    c.s = normal_f64(N * C, 31, 1.0);
    c.quat = unit_quats(N, 32);
    c.trans = normal_f64(N * 3, 33, 1.0);
    c.w = normal_f64(C * 6, 34, 0.3);
    c.b = normal_f64(6, 35, 0.1);
    c.u = calloc((size_t)(N * 6), 8), c.qo = calloc((size_t)(N * 4), 8);
    c.to = calloc((size_t)(N * 3), 8), c.ro = calloc((size_t)(N * 9), 8);
    float *s32 = rounded_f32(c.s, N * C), *q32 = rounded_f32(c.quat, N * 4);
    float *t32 = rounded_f32(c.trans, N * 3), *w32 = rounded_f32(c.w, C * 6);
    float *b32 = rounded_f32(c.b, 6);
    double *gq = normal_f64(N * 4, 36, 1.0), *gt = normal_f64(N * 3, 37, 1.0);
    double *gr = normal_f64(N * 9, 38, 1.0);
    float *gq32 = rounded_f32(gq, N * 4), *gt32 = rounded_f32(gt, N * 3);
    float *gr32 = rounded_f32(gr, N * 9);

    /* Double composition: dupdate from pre_compose, then the reference linear backward. */
    double *ds = calloc((size_t)(N * C), 8), *dq = calloc((size_t)(N * 4), 8);
    double *dt = calloc((size_t)(N * 3), 8), *dw = calloc((size_t)(C * 6), 8);
    double *db = calloc(6, 8), *du = calloc((size_t)(N * 6), 8);
    bu_fwd(&c);
    mf_quat_affine_pre_compose_backward_f64(dq, dt, du, gq, gt, gr, c.quat, c.u, N);
    mf_ref_linear_backward_f64(ds, dw, db, du, c.s, c.w, N, C, 6);
    mf_gc_array in[5] = {{"s", c.s, N * C},
                         {"quat", c.quat, N * 4},
                         {"trans", c.trans, N * 3},
                         {"affine_update//weights", c.w, C * 6},
                         {"affine_update//bias", c.b, 6}};
    const double *grads[5] = {ds, dq, dt, dw, db};
    mf_gc_array out[3] = {
        {"quat_out", c.qo, N * 4}, {"trans_out", c.to, N * 3}, {"rot_out", c.ro, N * 9}};
    const double *gout[3] = {gq, gt, gr};
    mf_gradcheck("backbone update (f64 linear + pre_compose, N 9, c_s 13)", bu_fwd, &c, in, grads,
                 5, out, gout, 3, MF_TOL_FD_STEP, MF_TOL_FD_ATOL, MF_TOL_FD_RTOL, 0);

    /* The f32 op against it. */
    float qo[36], to[27], ro[81], u32[54];
    float ds32[9 * 13] = {0}, dq32[36] = {0}, dt32[27] = {0}, dw32[13 * 6] = {0}, db32[6] = {0};
    mf_tensor ts = mf_tensor_f32(s32, 2, N, C), tq = mf_tensor_f32(q32, 2, N, 4);
    mf_tensor tt = mf_tensor_f32(t32, 2, N, 3), tu = mf_tensor_f32(u32, 2, N, 6);
    mf_tensor tqo = mf_tensor_f32(qo, 2, N, 4), tto = mf_tensor_f32(to, 2, N, 3);
    mf_tensor tro = mf_tensor_f32(ro, 3, N, 3, 3);
    mf_backbone_update_params p = {mf_tensor_f32(w32, 2, C, 6), mf_tensor_f32(b32, 1, 6)};
    mf_backbone_update_params dp = {mf_tensor_f32(dw32, 2, C, 6), mf_tensor_f32(db32, 1, 6)};
    mf_tensor tds = mf_tensor_f32(ds32, 2, N, C), tdq = mf_tensor_f32(dq32, 2, N, 4);
    mf_tensor tdt = mf_tensor_f32(dt32, 2, N, 3), tgq = mf_tensor_f32(gq32, 2, N, 4);
    mf_tensor tgt = mf_tensor_f32(gt32, 2, N, 3), tgr = mf_tensor_f32(gr32, 3, N, 3, 3);
    MF_TEST_OK(mf_backbone_update_forward(ctx, &tqo, &tto, &tro, &tu, &ts, &tq, &tt, &p));
    MF_TEST_OK(mf_backbone_update_backward(ctx, &tds, &tdq, &tdt, &dp, &tgq, &tgt, &tgr, &tu, &ts,
                                           &tq, &p));
    bu_fwd(&c);
    mf_check_close_f32_f64("backbone update f32 op vs f64: quat", qo, c.qo, N * 4, MF_TOL_F32_ATOL,
                           MF_TOL_F32_RTOL);
    mf_check_close_f32_f64("backbone update f32 op vs f64: trans", to, c.to, N * 3, MF_TOL_F32_ATOL,
                           MF_TOL_F32_RTOL);
    mf_check_close_f32_f64("backbone update f32 op vs f64: rot", ro, c.ro, N * 9, MF_TOL_F32_ATOL,
                           MF_TOL_F32_RTOL);
    mf_check_close_f32_f64("backbone update f32 op vs f64: ds", ds32, ds, N * C, MF_TOL_F32_ATOL,
                           MF_TOL_F32_RTOL);
    mf_check_close_f32_f64("backbone update f32 op vs f64: dquat", dq32, dq, N * 4, MF_TOL_F32_ATOL,
                           MF_TOL_F32_RTOL);
    mf_check_close_f32_f64("backbone update f32 op vs f64: dtrans", dt32, dt, N * 3,
                           MF_TOL_F32_ATOL, MF_TOL_F32_RTOL);
    mf_check_close_f32_f64("backbone update f32 op vs f64: dweights", dw32, dw, C * 6,
                           MF_TOL_F32_ATOL, MF_TOL_F32_RTOL);
    mf_check_close_f32_f64("backbone update f32 op vs f64: dbias", db32, db, 6, MF_TOL_F32_ATOL,
                           MF_TOL_F32_RTOL);

    /* A NULL rot_out and NULL upstream gradients are allowed; a wrong shape is refused. */
    MF_TEST_OK(mf_backbone_update_forward(ctx, &tqo, &tto, NULL, &tu, &ts, &tq, &tt, &p));
    MF_TEST_OK(mf_backbone_update_backward(ctx, &tds, NULL, NULL, NULL, NULL, &tgt, NULL, &tu, &ts,
                                           &tq, &p));
    mf_tensor bad = mf_tensor_f32(q32, 2, N - 1, 4);
    mf_status st = mf_backbone_update_forward(ctx, &tqo, &tto, NULL, &tu, &ts, &bad, &tt, &p);
    printf("  backbone update with quat [8, 4] for 9 residues -> %s: %s\n", mf_status_name(st),
           mf_last_error());
    MF_TEST_TRUE(st == MF_ERR_INVALID, "a mis-shaped quat must be refused");
    mf_clear_error();

    free(c.s), free(c.quat), free(c.trans), free(c.w), free(c.b), free(c.u), free(c.qo);
    free(c.to), free(c.ro), free(s32), free(q32), free(t32), free(w32), free(b32), free(gq);
    free(gt), free(gr), free(gq32), free(gt32), free(gr32), free(ds), free(dq), free(dt);
    free(dw), free(db), free(du);
}

int main(void)
{
    mf_ctx ctx;
    mf_arena arena;
    MF_TEST_OK(mf_test_ctx_cpu(&ctx, &arena, (size_t)16 << 20));
    test_conventions();
    for (int op = 0; op < OP_COUNT; op++) test_op(op);
    test_backbone_update(&ctx);
    mf_test_ctx_free(&ctx, &arena);
    return mf_test_finish("test_rigid");
}
