/* One tolerance table for the tests, each entry with its reason. Element-wise checks use
 * |a-b| <= atol + rtol*|b|; reference vectors use max|a-ref|/max|ref| (see testvectors README). */
#ifndef MF_TESTS_SUPPORT_TOLERANCES_H
#define MF_TESTS_SUPPORT_TOLERANCES_H

/* Finite differences in double: step 1e-6 leaves truncation error O(h^2 * f''') ~ 1e-12 and
 * rounding error O(eps/h) ~ 1e-10 relative to |L|; 1e-6 relative + 1e-8 absolute has margin for
 * sums of a few hundred terms. Kinks (ReLU at 0) are avoided by the test data. */
#define MF_TOL_FD_STEP 1e-6
#define MF_TOL_FD_ATOL 1e-8
#define MF_TOL_FD_RTOL 1e-6

/* f32 backend against the double reference, for sums of up to ~1e3 terms of O(1): f32 epsilon
 * 6e-8 times sqrt(terms) and condition of the op, with headroom. */
#define MF_TOL_F32_ATOL 1e-5
#define MF_TOL_F32_RTOL 1e-4

/* bf16 matrix inputs (8 significant bits: relative rounding error at most 2^-8 = 3.9e-3 per input)
 * accumulate in f32: a product of two rounded inputs errs by up to ~8e-3 relative per term, and
 * independent errors partly cancel over the K terms of a dot product. */
#define MF_TOL_BF16_ATOL 2e-2
#define MF_TOL_BF16_RTOL 2e-2

/* CUDA kernels against their CPU twin (issue: f32 <= 1e-5 relative, bf16 <= 1e-2). */
#define MF_TOL_CUDA_F32_RTOL  1e-5
#define MF_TOL_CUDA_F32_ATOL  1e-6
#define MF_TOL_CUDA_BF16_RTOL 1e-2
#define MF_TOL_CUDA_BF16_ATOL 1e-3

/* Reference vectors (testvectors README): modules 1e-5, whole model and loss terms 1e-4,
 * training gradients 1e-3. */
#define MF_TOL_VEC_MODULE     1e-5
#define MF_TOL_VEC_MODEL      1e-4
#define MF_TOL_VEC_TRAIN_GRAD 1e-3

#endif
