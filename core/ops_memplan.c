/* Op plans of the memory model (memopt/memplan.h): the arena workspace of the matrix-product
 * ops, mirroring core/ops_matmul.c and core/cpu/dnnl_matmul.c (CPU) and core/cuda (CUDA). */
#include <string.h>

#include "core/cpu/cpu_backend.h"
#include "memopt/memplan.h"

#include "core/cuda/colsum_slabs.h"

/* The workspace of one mf_cpu_gemm of descriptor g (CPU: asked of the oneDNN path itself). */
static void gemm_desc(mf_memsim *s, const mf_cpu_gemm_desc *g, bool bias)
{
    if (s->device != MF_DEV_CPU || !s->query.dnnl) return;
    s->query.policy = s->policy;
    size_t bytes = 0;
    mf_status st = mf_cpu_gemm_workspace(&s->query, g, bias, &bytes);
    if (st != MF_OK && s->status == MF_OK) s->status = st;
    mf_memsim_transient(s, bytes);
}

/* CUDA: mf_cuda_operand converts each f32 operand to bf16 in the arena under bf16 compute. */
static void cuda_operands(mf_memsim *s, int64_t a_elems, int64_t b_elems)
{
    if (s->device != MF_DEV_CUDA || s->policy.compute != MF_BF16) return;
    mf_memsim_mark_t m = mf_memsim_mark(s);
    mf_memsim_tensor(s, MF_MEM_WORK, MF_BF16, a_elems);
    mf_memsim_tensor(s, MF_MEM_WORK, MF_BF16, b_elems);
    mf_memsim_release(s, m);
}

void mf_plan_gemm(mf_memsim *s, int64_t batch, int64_t batch_a, int64_t batch_b, int64_t M,
                  int64_t N, int64_t K, bool trans_a, bool trans_b, bool beta, bool bias)
{
    if (batch == 0 || M == 0 || N == 0 || K == 0) return;
    if (s->device == MF_DEV_CUDA) {
        cuda_operands(s, batch_a * M * K, batch_b * K * N);
        return;
    }
    mf_cpu_gemm_desc g = mf_cpu_gemm_contiguous(batch, batch_a, batch_b, M, N, K, trans_a, trans_b,
                                                1.0f, beta ? 1.0f : 0.0f);
    gemm_desc(s, &g, bias);
}

void mf_plan_linear_forward(mf_memsim *s, int64_t rows, int64_t in, int64_t out, bool bias,
                            bool accumulate)
{
    mf_plan_gemm(s, 1, 1, 1, rows, out, in, false, false, accumulate, bias);
}

void mf_plan_linear_backward(mf_memsim *s, int64_t rows, int64_t in, int64_t out, bool dx, bool dw,
                             bool db)
{
    if (s->device == MF_DEV_CUDA) {
        /* cuda_matmul.cu linear_backward_impl: dy's bf16 copy, then w's (for dx), then x's (for
         * dw), all held until the op returns; then db's column sum and its partial sums */
        mf_memsim_mark_t m = mf_memsim_mark(s);
        if (s->policy.compute == MF_BF16) {
            if (dx || dw) mf_memsim_tensor(s, MF_MEM_WORK, MF_BF16, rows * out);
            if (dx) mf_memsim_tensor(s, MF_MEM_WORK, MF_BF16, in * out);
            if (dw) mf_memsim_tensor(s, MF_MEM_WORK, MF_BF16, rows * in);
        }
        if (db) {
            const int64_t p = mf_colsum_partial_floats(1, rows, out);
            if (p > 0) mf_memsim_tensor(s, MF_MEM_WORK, MF_F32, p);
        }
        mf_memsim_release(s, m);
        return;
    }
    if (dx) mf_plan_gemm(s, 1, 1, 1, rows, in, out, false, true, true, false);
    if (dw) mf_plan_gemm(s, 1, 1, 1, in, out, rows, true, false, true, false);
    /* column sums: double partials per block of 512 rows (ops_matmul.c) */
    if (db && rows > 0 && out > 0)
        mf_memsim_transient(s, mf_mem_round((size_t)(((rows + 511) / 512) * out) * sizeof(double)));
}

void mf_plan_matmul(mf_memsim *s, int64_t batch, int64_t batch_a, int64_t batch_b, int64_t M,
                    int64_t N, int64_t K, bool trans_a, bool trans_b, bool accumulate)
{
    mf_plan_gemm(s, batch, batch_a, batch_b, M, N, K, trans_a, trans_b, accumulate, false);
}

/* grad_product of ops_matmul.c: out [rows, cols] += x [rows, inner] @ y [inner, cols] per batch
 * element, with the operands' (first, second, batch) strides; out_sb 0: a shared gradient, one
 * product per batch element. */
static void grad_product(mf_memsim *s, int64_t out_sb, int64_t rows, int64_t cols, int64_t inner,
                         const int64_t x[3], const int64_t y[3], int64_t batch)
{
    mf_cpu_gemm_desc g;
    memset(&g, 0, sizeof g);
    g.M = rows, g.N = cols, g.K = inner;
    g.a_sm = x[0], g.a_sk = x[1];
    g.b_sk = y[0], g.b_sn = y[1];
    g.c_sm = cols, g.c_sn = 1;
    g.alpha = 1.0f, g.beta = 1.0f;
    g.nbatch = 1;
    g.batch[0] = 1;
    if (out_sb != 0 || batch == 1) {
        g.batch[0] = batch;
        g.a_sb[0] = x[2], g.b_sb[0] = y[2], g.c_sb[0] = out_sb;
    }
    gemm_desc(s, &g, false);
}

void mf_plan_matmul_backward(mf_memsim *s, int64_t batch, int64_t batch_a, int64_t batch_b,
                             int64_t M, int64_t N, int64_t K, bool trans_a, bool trans_b, bool da,
                             bool db)
{
    if (batch == 0 || M == 0 || N == 0 || K == 0) return;
    if (s->device == MF_DEV_CUDA) {
        /* cuda_matmul.cu matmul_backward_impl: dc's bf16 copy, then b's (for da), then a's (for
         * db), all held until the op returns; the products themselves take no scratch */
        if (s->policy.compute != MF_BF16) return;
        mf_memsim_mark_t m = mf_memsim_mark(s);
        mf_memsim_tensor(s, MF_MEM_WORK, MF_BF16, batch * M * N);
        if (da) mf_memsim_tensor(s, MF_MEM_WORK, MF_BF16, batch_b * K * N);
        if (db) mf_memsim_tensor(s, MF_MEM_WORK, MF_BF16, batch_a * M * K);
        mf_memsim_release(s, m);
        return;
    }
    const int64_t a_sb = batch_a == 1 ? 0 : M * K, b_sb = batch_b == 1 ? 0 : K * N;
    const int64_t opa[3] = {trans_a ? 1 : K, trans_a ? M : 1, a_sb};
    const int64_t opb[3] = {trans_b ? 1 : N, trans_b ? K : 1, b_sb};
    const int64_t gc[3] = {N, 1, M * N}, gc_t[3] = {1, N, M * N};
    const int64_t opa_t[3] = {opa[1], opa[0], a_sb}, opb_t[3] = {opb[1], opb[0], b_sb};
    if (da) {
        if (!trans_a)
            grad_product(s, a_sb, M, K, N, gc, opb_t, batch);
        else
            grad_product(s, a_sb, K, M, N, opb, gc_t, batch);
    }
    if (db) {
        if (!trans_b)
            grad_product(s, b_sb, K, N, M, opa_t, gc, batch);
        else
            grad_product(s, b_sb, N, K, M, gc_t, opa, batch);
    }
}
