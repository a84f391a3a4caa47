/* Test support: comparisons that fail on NaN, a finite-difference gradient checker in double,
 * random test data, and one tolerance table. Every test prints what it checked and the tolerance
 * and returns mf_test_finish()'s exit code (non-zero on any failure, 77 to skip). */
#ifndef MF_TESTS_SUPPORT_MF_TEST_H
#define MF_TESTS_SUPPORT_MF_TEST_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "core/context.h"
#include "core/ops.h"
#include "core/rng.h"
#include "tests/support/tolerances.h"

#define MF_TEST_SKIP 77

/* Records a failure; every check below calls it on mismatch. */
void mf_test_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
int mf_test_failures(void);
/* Prints "N passed, M failed" for this program's checks and returns the exit code. */
int mf_test_finish(const char *test_name);
/* Prints the reason and returns MF_TEST_SKIP (for `return mf_test_skip("no GPU");`). */
int mf_test_skip(const char *why);

/* Counts one check (for the closing "N passed, M failed" line); failed checks also call
 * mf_test_fail with their message. */
void mf_test_count(bool ok);

/* Fails the test (and prints the message) when a memfold call fails. */
#define MF_TEST_OK(expr)                                                                           \
    do {                                                                                           \
        mf_status mf_t_s_ = (expr);                                                                \
        mf_test_count(mf_t_s_ == MF_OK);                                                           \
        if (mf_t_s_ != MF_OK)                                                                      \
            mf_test_fail("%s:%d: %s failed: %s", __FILE__, __LINE__, #expr, mf_last_error());      \
    } while (0)

#define MF_TEST_TRUE(cond, ...)                                                                    \
    do {                                                                                           \
        bool mf_t_ok_ = (cond);                                                                    \
        mf_test_count(mf_t_ok_);                                                                   \
        if (!mf_t_ok_) mf_test_fail(__VA_ARGS__);                                                  \
    } while (0)

/* Element-wise: every i must satisfy |a-b| <= atol + rtol*|b| (b is the reference); NaN fails.
 * Prints one line: name, n, max abs error, max rel error, tolerance, pass/fail. Returns pass. */
bool mf_check_close_f32(const char *name, const float *a, const float *ref, int64_t n, double atol,
                        double rtol);
bool mf_check_close_f64(const char *name, const double *a, const double *ref, int64_t n,
                        double atol, double rtol);
/* float candidate against a double reference */
bool mf_check_close_f32_f64(const char *name, const float *a, const double *ref, int64_t n,
                            double atol, double rtol);
/* Reference-vector metric (testvectors README): max|a-ref| / max|ref| <= rtol; NaN fails. */
bool mf_check_maxrel_f32(const char *name, const float *a, const float *ref, int64_t n,
                         double rtol);
/* Bitwise equality (policies that must not change arithmetic order). */
bool mf_check_bitwise_f32(const char *name, const float *a, const float *ref, int64_t n);

/* Random data from a counter-based stream (deterministic per seed). */
void mf_test_fill_normal_f32(float *x, int64_t n, uint64_t seed, float stddev);
void mf_test_fill_normal_f64(double *x, int64_t n, uint64_t seed, double stddev);
/* Mask with zeros: each element 1 with probability p_one, else 0; at least one 1 per row of
 * length row (so no row is fully masked unless row == 0). */
void mf_test_fill_mask_f64(double *x, int64_t rows, int64_t row, uint64_t seed, double p_one);
void mf_f64_to_f32(float *dst, const double *src, int64_t n);
void mf_f32_to_f64(double *dst, const float *src, int64_t n);

/* Finite-difference gradient check in double.
 * The caller's forward `fwd(ud)` reads the arrays listed in `inputs` and writes the arrays in
 * `outputs`. The scalar checked is L = sum_o sum_i gout[o][i] * outputs[o][i] with a RANDOM
 * upstream gradient gout (never mean(out)). For every input element (or `max_per_input` of them,
 * chosen at random, when that is > 0) the central difference (L(x+h) - L(x-h)) / 2h is compared
 * with the analytic gradient given in `grads` (same layout as inputs). */
typedef struct {
    const char *name;
    double *data;
    int64_t n;
} mf_gc_array;

bool mf_gradcheck(const char *what, void (*fwd)(void *ud), void *ud, const mf_gc_array *inputs,
                  const double *const *grads, int n_inputs, const mf_gc_array *outputs,
                  const double *const *gout, int n_outputs, double h, double atol, double rtol,
                  int64_t max_per_input);

/* A CPU context with its own arena of `bytes`; mf_test_ctx_free releases both. */
mf_status mf_test_ctx_cpu(mf_ctx *ctx, mf_arena *arena, size_t bytes);
/* A whole file as a NUL-terminated string (malloc'd), or NULL when it cannot be read. */
char *mf_test_read_file(const char *path);
/* The same on the GPU (tests/cuda; MF_ERR_UNSUPPORTED without CUDA). */
mf_status mf_test_ctx_cuda(mf_ctx *ctx, mf_arena *arena, size_t bytes);
void mf_test_ctx_free(mf_ctx *ctx, mf_arena *arena);

/* Environment: the shared/ folder (MEMFOLD_SHARED, set by ctest) and the memfold binary. */
const char *mf_test_shared_dir(void);

/* Test size scaling for slow tests: MEMFOLD_TEST_SCALE (default 1.0; CI sets it lower). */
double mf_test_scale(void);

#endif
