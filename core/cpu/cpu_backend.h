/* Internal CPU backend API (core/cpu): oneDNN matmul with a primitive cache and user-managed
 * scratchpad from the arena. Not for model code: use core/ops.h. */
#ifndef MF_CORE_CPU_CPU_BACKEND_H
#define MF_CORE_CPU_CPU_BACKEND_H

#include <stdbool.h>
#include <stdint.h>

#include "core/context.h"

/* ---- strided batched matrix product ---------------------------------------------------------
 *
 *   c[i] = alpha * (a[i] @ b[i] + bias) + beta * c[i]      for every batch index i
 *
 * with a[i] an M x K, b[i] a K x N and c[i] an M x N matrix, all f32 in memory, addressed by
 * element strides:
 *
 *   a[i][m, k] = a[sum_d i_d * a_sb[d] + m * a_sm + k * a_sk]
 *   b[i][k, n] = b[sum_d i_d * b_sb[d] + k * b_sk + n * b_sn]
 *   c[i][m, n] = c[sum_d i_d * c_sb[d] + m * c_sm + n * c_sn]
 *
 * What it supports (oneDNN 2.6 matmul, checked by tests/test_matmul.c):
 *  - up to MF_CPU_GEMM_MAX_BATCH batch dims (batch[d] is c's extent); a batch stride of 0 in a or b
 *    broadcasts that operand over that batch dim (its batch extent becomes 1 for oneDNN);
 *  - transposes as strides: a stored [K, M] is a_sm = 1, a_sk = M (no copy); the same for b;
 *  - operands that are not contiguous, as long as within each matrix one of the two strides is 1
 *    and the other is at least the matrix's extent along the unit-stride dim (oneDNN accepts
 *    plain strided layouts only). Example: q [B, Q, H, D] read per head as a [B, H] batch of
 *    [Q, D] matrices: batch {B, H}, a_sb {Q*H*D, D}, a_sm = H*D, a_sk = 1. c must have c_sn == 1.
 *    A layout oneDNN has no implementation for is reported as MF_ERR_UNSUPPORTED, not run slowly.
 *  - bias: f32 [N] (or NULL), added to every row before alpha (oneDNN applies output scales to
 *    the accumulator including bias); callers that want c = alpha * a @ b + bias pass alpha = 1.
 *  - beta == 0 overwrites c (its old contents, even NaN, are never read); otherwise oneDNN's sum
 *    post-op adds beta * c.
 *  - compute precision: ctx->policy.compute. MF_BF16 converts a and b (mf_f32_to_bf16, round to
 *    nearest even) into arena scratch ("matmul bf16 inputs") and runs bf16 x bf16 -> f32 with f32
 *    accumulation and f32 bias; MF_F32 runs f32 directly.
 *
 * Memory: the scratchpad oneDNN asks for and the bf16 copies come from ctx->arena (labels
 * "dnnl scratchpad", "matmul bf16 inputs") and are released before returning. A primitive is
 * created once per distinct problem (dims, strides, broadcast, dtype, bias, alpha, beta) and kept
 * in a bounded cache in ctx->dnnl.
 *
 * Threading: oneDNN parallelises inside one call with OpenMP. A context (and its cache) is used
 * by one thread at a time; do not call this from inside an OpenMP parallel region on one ctx. */
#define MF_CPU_GEMM_MAX_BATCH 3

typedef struct {
    int nbatch;                           /* 0..MF_CPU_GEMM_MAX_BATCH */
    int64_t batch[MF_CPU_GEMM_MAX_BATCH]; /* c's batch extents */
    int64_t M, N, K;
    int64_t a_sb[MF_CPU_GEMM_MAX_BATCH], a_sm, a_sk; /* element strides of a */
    int64_t b_sb[MF_CPU_GEMM_MAX_BATCH], b_sk, b_sn; /* element strides of b */
    int64_t c_sb[MF_CPU_GEMM_MAX_BATCH], c_sm, c_sn; /* element strides of c */
    float alpha, beta;
} mf_cpu_gemm_desc;

/* The common case: contiguous row-major a [batch_a, M, K] ([batch_a, K, M] when trans_a),
 * b [batch_b, K, N] ([batch_b, N, K] when trans_b), c [batch, M, N]; batch_a and batch_b are
 * batch or 1 (broadcast). batch 1 gives a plain 2-D product. */
mf_cpu_gemm_desc mf_cpu_gemm_contiguous(int64_t batch, int64_t batch_a, int64_t batch_b, int64_t M,
                                        int64_t N, int64_t K, bool trans_a, bool trans_b,
                                        float alpha, float beta);

/* c [.., M, N] = alpha * (a @ b + bias) + beta * c as described above; bias [N] or NULL. */
mf_status mf_cpu_gemm(mf_ctx *ctx, const mf_cpu_gemm_desc *d, float *c, const float *a,
                      const float *b, const float *bias);

/* The arena bytes mf_cpu_gemm(ctx, d, ..., bias ? non-NULL : NULL) takes while it runs under
 * ctx->policy (bf16 input copies and oneDNN's scratchpad, each rounded as the arena rounds), for
 * the memory model (memopt/memplan.h). Creates (and caches) the primitive, computes nothing. */
mf_status mf_cpu_gemm_workspace(mf_ctx *ctx, const mf_cpu_gemm_desc *d, bool bias, size_t *bytes);

/* Primitive cache counters since the state was created: a hit reuses a primitive, a miss
 * creates one. */
void mf_dnnl_cache_stats(const struct mf_dnnl_state *s, long *hits, long *misses);
/* Number of primitives held now (bounded by MF_DNNL_CACHE_CAPACITY). */
int mf_dnnl_cache_size(const struct mf_dnnl_state *s);
#define MF_DNNL_CACHE_CAPACITY 256
/* oneDNN's name for the implementation of the last product run ("brg:avx512_core_bf16", ...;
 * "ref:any" would mean its slow reference code), for tests and benchmarks. */
const char *mf_dnnl_last_impl(const struct mf_dnnl_state *s);

#endif
