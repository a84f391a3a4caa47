/* Rigid-body algebra in AlphaFold 2's conventions (r3.py, quat_affine.py): quaternions (w, x, y, z)
 * with the Hamilton product, rotation matrices row-major [3, 3] acting on column vectors
 * (y = R x + t), frames as (rot, trans). Written once over a scalar type in rigid.inc and compiled
 * for float (_f32: the model's path) and double (_f64: the oracle of finite-difference checks).
 *
 * Every function works on n independent elements (frame k with point k, quaternion k with
 * quaternion k), plain loops, raw host pointers. Backward functions are vector-Jacobian products
 * that ACCUMULATE (+=) into their gradients, like core/ops.h; a NULL gradient is not computed and
 * a NULL upstream gradient counts as zero. Outputs must not alias inputs unless a function says so.
 *
 * Shapes: quat [n, 4], rot [n, 3, 3], trans and points [n, 3], update [n, 6]. */
#ifndef MF_STRUCTURE_MODULE_RIGID_H
#define MF_STRUCTURE_MODULE_RIGID_H

#include <stdint.h>

#include "core/tensor.h"

#define MF_RIGID_DECLARE(real, SUF)                                                                \
    /* AF2 quat_to_rot: the rotation of a UNIT quaternion, computed without normalising (the       \
     * products w*w + x*x - y*y - z*z ...), exactly as QuatAffine does; rot [n, 3, 3]. */          \
    void mf_quat_to_rot_##SUF(real *rot, const real *quat, int64_t n);                             \
    void mf_quat_to_rot_backward_##SUF(real *dquat, const real *drot, const real *quat,            \
                                       int64_t n);                                                 \
    /* out = quat / |quat| (no epsilon, as AF2's QuatAffine(normalize=True)); out may alias quat   \
     * in the forward. */                                                                          \
    void mf_quat_normalize_##SUF(real *out, const real *quat, int64_t n);                          \
    void mf_quat_normalize_backward_##SUF(real *dquat, const real *dout, const real *quat,         \
                                          int64_t n);                                              \
    /* Hamilton product out = a * b. */                                                            \
    void mf_quat_multiply_##SUF(real *out, const real *a, const real *b, int64_t n);               \
    void mf_quat_multiply_backward_##SUF(real *da, real *db, const real *dout, const real *a,      \
                                         const real *b, int64_t n);                                \
    /* Composition T = A o B: rot = rot_a rot_b, trans = rot_a trans_b + trans_a. */               \
    void mf_rigid_compose_##SUF(real *rot, real *trans, const real *rot_a, const real *trans_a,    \
                                const real *rot_b, const real *trans_b, int64_t n);                \
    void mf_rigid_compose_backward_##SUF(                                                          \
        real *drot_a, real *dtrans_a, real *drot_b, real *dtrans_b, const real *drot,              \
        const real *dtrans, const real *rot_a, const real *rot_b, const real *trans_b, int64_t n); \
    /* y = rot x + trans. */                                                                       \
    void mf_rigid_apply_##SUF(real *y, const real *rot, const real *trans, const real *x,          \
                              int64_t n);                                                          \
    void mf_rigid_apply_backward_##SUF(real *drot, real *dtrans, real *dx, const real *dy,         \
                                       const real *rot, const real *x, int64_t n);                 \
    /* T^-1 = (rot^T, -rot^T trans). */                                                            \
    void mf_rigid_invert_##SUF(real *rot_inv, real *trans_inv, const real *rot, const real *trans, \
                               int64_t n);                                                         \
    void mf_rigid_invert_backward_##SUF(real *drot, real *dtrans, const real *drot_inv,            \
                                        const real *dtrans_inv, const real *rot,                   \
                                        const real *trans, int64_t n);                             \
    /* y = T^-1 x = rot^T (x - trans) (the local coordinates of x in frame T). */                  \
    void mf_rigid_apply_inverse_##SUF(real *y, const real *rot, const real *trans, const real *x,  \
                                      int64_t n);                                                  \
    void mf_rigid_apply_inverse_backward_##SUF(real *drot, real *dtrans, real *dx, const real *dy, \
                                               const real *rot, const real *trans, const real *x,  \
                                               int64_t n);                                         \
    /* AF2 QuatAffine.pre_compose followed by its normalisation (Alg. 23 lines 2-4): with update   \
     * u = (b, c, d, t_x, t_y, t_z), quat_out = normalise(quat + quat * (0, b, c, d)) (= quat *    \
     * (1, b, c, d)), trans_out = trans + R(quat) (t_x, t_y, t_z), rot_out = R(quat_out). The      \
     * input quat is taken as unit and used as given, as AF2 does. rot_out may be NULL. */         \
    void mf_quat_affine_pre_compose_##SUF(real *quat_out, real *trans_out, real *rot_out,          \
                                          const real *quat, const real *trans, const real *update, \
                                          int64_t n);                                              \
    /* Recomputes the forward from quat and update (nothing saved). Upstream gradients dquat_out,  \
     * dtrans_out, drot_out may each be NULL (zero). */                                            \
    void mf_quat_affine_pre_compose_backward_##SUF(                                                \
        real *dquat, real *dtrans, real *dupdate, const real *dquat_out, const real *dtrans_out,   \
        const real *drot_out, const real *quat, const real *update, int64_t n);

MF_RIGID_DECLARE(float, f32)
MF_RIGID_DECLARE(double, f64)

/* Entry-point check shared by the structure-module ops that run these loops on the host: t is a
 * CPU f32 tensor of exactly this shape; the message names the tensor and both shapes. */
mf_status mf_check_host_f32(const mf_tensor *t, const char *name, int ndim, const int64_t *shape);
#define mf_check_host_f32_dims(t, name, ndim, ...)                                                 \
    mf_check_host_f32((t), (name), (ndim), (const int64_t[MF_MAX_DIMS]){__VA_ARGS__})

#endif
