/* Memory-model plans of the attention ops (core/ops_memplan_attention.h), mirroring
 * core/cpu/attention_cpu.c (the core: head-major scratch, query chunks) and core/ops_attention.c
 * (the gated module: saved activations, batch slices, projections). Every allocation of an f32
 * run in the same order, with the same marks; the matrix products' workspace is asked of the
 * oneDNN path (mf_cpu_gemm_workspace) with the products' own alpha and beta, which select the
 * primitive. */
#include "core/ops_memplan_attention.h"

#include "core/cpu/cpu_backend.h"
#include "core/cuda/colsum_slabs.h"

int64_t mf_plan_slice_rows(int64_t chunk, int64_t n)
{
    return chunk > 0 && chunk < n ? chunk : (n > 0 ? n : 1);
}

int mf_plan_slice_sizes(int64_t n, int64_t rows, int64_t sizes[2])
{
    if (n <= 0 || rows <= 0) return 0;
    int k = 0;
    sizes[k++] = rows < n ? rows : n;
    if (n > rows && n % rows) sizes[k++] = n % rows;
    return k;
}

/* mf_matmul(c [batch, M, N] = alpha op(a) op(b) + beta c) of contiguous 3-D tensors. */
static void matmul(mf_memsim *s, int64_t batch, int64_t batch_a, int64_t batch_b, int64_t M,
                   int64_t N, int64_t K, bool ta, bool tb, float alpha, float beta)
{
    if (s->device != MF_DEV_CPU) {
        mf_plan_matmul(s, batch, batch_a, batch_b, M, N, K, ta, tb, beta != 0.0f);
        return;
    }
    if (!s->query.dnnl || batch == 0 || M == 0 || N == 0 || K == 0) return;
    mf_cpu_gemm_desc g =
        mf_cpu_gemm_contiguous(batch, batch_a, batch_b, M, N, K, ta, tb, alpha, beta);
    s->query.policy = s->policy;
    size_t bytes = 0;
    mf_status st = mf_cpu_gemm_workspace(&s->query, &g, false, &bytes);
    if (st != MF_OK && s->status == MF_OK) s->status = st;
    mf_memsim_transient(s, bytes);
}

/* attention_cpu.c's query chunking: query_chunk, chunk_rows, chunk_capacity. */
static int64_t query_chunk(int64_t chunk, int64_t Q)
{
    return chunk > 0 && chunk < Q ? chunk : Q;
}

static int64_t chunk_rows(int64_t C, int64_t remaining)
{
    int64_t n = remaining < C ? remaining : C;
    if (n == 1 && remaining > 1) n = 2;
    if (remaining - n == 1) n++;
    return n;
}

static int64_t chunk_capacity(int64_t C, int64_t Q)
{
    int64_t m = (C > 2 ? C : 2) + 1;
    return m < Q ? m : Q;
}

/* The distinct (rows, first chunk of its batch element) pairs of one batch element's chunk loop:
 * the chunks of every batch element are alike, equal pairs run the same products, and the
 * products' workspace is released after each, so one of each gives the peak. At most 4 (chunk
 * sizes C, C + 1 and a shorter last one, and the first chunk). */
typedef struct {
    int n;
    int64_t rows[8];
    bool first[8];
} chunk_set;

static void query_chunks(chunk_set *cs, int64_t C, int64_t Q)
{
    cs->n = 0;
    for (int64_t q0 = 0, n; q0 < Q; q0 += n) {
        n = chunk_rows(C, Q - q0);
        bool seen = false;
        for (int i = 0; i < cs->n && !seen; i++)
            seen = cs->rows[i] == n && cs->first[i] == (q0 == 0);
        if (!seen && cs->n < 8) {
            cs->rows[cs->n] = n;
            cs->first[cs->n++] = q0 == 0;
        }
    }
}

static void scratch(mf_memsim *s, int64_t a, int64_t b, int64_t c)
{
    mf_memsim_tensor(s, MF_MEM_WORK, MF_F32, a * b * c);
}

void mf_plan_attention_forward(mf_memsim *s, int64_t B, int64_t Q, int64_t K, int64_t H, int64_t D,
                               float scale)
{
    /* CUDA: the flash-style kernels keep everything in registers (core/cuda/cuda_attention.cu) */
    if (s->device != MF_DEV_CPU || B == 0 || Q == 0 || H == 0) return;
    const int64_t C = query_chunk(s->policy.chunk_size, Q), cap = chunk_capacity(C, Q);
    mf_memsim_mark_t mark = mf_memsim_mark(s);
    scratch(s, H, K, D);   /* kh */
    scratch(s, H, K, D);   /* vh */
    scratch(s, H, cap, D); /* qh */
    scratch(s, H, cap, K); /* logits / probabilities */
    scratch(s, H, cap, D); /* oh */
    chunk_set cs;
    query_chunks(&cs, C, Q);
    for (int i = 0; i < cs.n; i++) {
        const int64_t n = cs.rows[i];
        matmul(s, H, H, H, n, K, D, false, true, scale, 0.0f);
        matmul(s, H, H, H, n, D, K, false, false, 1.0f, 0.0f);
    }
    mf_memsim_release(s, mark);
}

void mf_plan_attention_backward(mf_memsim *s, int64_t B, int64_t Q, int64_t K, int64_t H, int64_t D,
                                float scale, bool dq, bool dk, bool dv, bool dbias)
{
    const bool need_ds = dq || dk || dbias;
    if (B == 0 || Q == 0 || H == 0 || (!need_ds && !dv)) return;
    if (s->device != MF_DEV_CPU) {
        /* CUDA (core/cuda/cuda_attention.cu): the row term delta [B, H, Q], and dbias's column
         * sum over the batch, whose partial sums are released before the op returns */
        mf_memsim_mark_t mark = mf_memsim_mark(s);
        if (need_ds) scratch(s, 1, B * H, Q);
        if (dbias) mf_memsim_transient(s, 4 * (size_t)mf_colsum_partial_floats(1, B, H * Q * K));
        mf_memsim_release(s, mark);
        return;
    }
    const int64_t C = query_chunk(s->policy.chunk_size, Q), cap = chunk_capacity(C, Q);
    mf_memsim_mark_t mark = mf_memsim_mark(s);
    scratch(s, H, K, D); /* kh */
    scratch(s, H, K, D); /* vh */
    if (dk) scratch(s, H, K, D);
    if (dv) scratch(s, H, K, D);
    scratch(s, H, cap, D); /* qh */
    scratch(s, H, cap, D); /* doh */
    if (dq) scratch(s, H, cap, D);
    scratch(s, H, cap, K); /* p */
    scratch(s, H, cap, K); /* dp */
    scratch(s, 1, H, cap); /* delta */
    chunk_set cs;
    query_chunks(&cs, C, Q);
    for (int i = 0; i < cs.n; i++) {
        const int64_t n = cs.rows[i];
        const float beta_kv = cs.first[i] ? 0.0f : 1.0f;
        matmul(s, H, H, H, n, K, D, false, true, scale, 0.0f);
        if (dv) matmul(s, H, H, H, K, D, n, true, false, 1.0f, beta_kv);
        if (!need_ds) continue;
        matmul(s, H, H, H, n, K, D, false, true, 1.0f, 0.0f);
        if (dq) matmul(s, H, H, H, n, D, K, false, false, scale, 0.0f);
        if (dk) matmul(s, H, H, H, K, D, n, true, false, scale, beta_kv);
    }
    mf_memsim_release(s, mark);
}

/* ---- gated attention ------------------------------------------------------------------------ */

static void work(mf_memsim *s, int64_t numel)
{
    mf_memsim_tensor(s, MF_MEM_WORK, MF_F32, numel);
}

void mf_plan_gated_attention_forward(mf_memsim *s, int64_t B, int64_t Q, int64_t K, int64_t c_in,
                                     int64_t H, int64_t D, int64_t c_out, bool gated, bool saving,
                                     bool accumulate)
{
    const mf_dtype sdt = s->policy.storage == MF_BF16 ? MF_BF16 : MF_F32;
    const bool direct = saving && sdt == MF_F32; /* computed straight into the saved tensors */
    const int64_t HD = H * D;
    if (saving) {
        mf_memsim_tensor(s, MF_MEM_SAVED, sdt, B * Q * HD); /* q */
        mf_memsim_tensor(s, MF_MEM_SAVED, sdt, B * K * HD); /* k */
        mf_memsim_tensor(s, MF_MEM_SAVED, sdt, B * K * HD); /* v */
        if (gated) mf_memsim_tensor(s, MF_MEM_SAVED, sdt, B * Q * HD);
        mf_memsim_tensor(s, MF_MEM_SAVED, sdt, B * Q * HD);   /* o */
        mf_memsim_tensor(s, MF_MEM_SAVED, MF_F32, B * H * Q); /* lse */
    }
    mf_memsim_mark_t mark = mf_memsim_mark(s);
    int64_t sizes[2];
    const int ns = mf_plan_slice_sizes(B, mf_plan_slice_rows(s->policy.chunk_size, B), sizes);
    for (int i = 0; i < ns; i++) {
        const int64_t nb = sizes[i];
        if (!direct) {
            work(s, nb * Q * HD); /* q */
            work(s, nb * K * HD); /* k */
            work(s, nb * K * HD); /* v */
            work(s, nb * Q * HD); /* o */
            if (gated) work(s, nb * Q * HD);
        }
        mf_plan_linear_forward(s, nb * Q, c_in, HD, false, false);
        mf_plan_linear_forward(s, nb * K, c_in, HD, false, false);
        mf_plan_linear_forward(s, nb * K, c_in, HD, false, false);
        mf_plan_attention_forward(s, nb, Q, K, H, D, 1.0f);
        if (gated) {
            mf_plan_linear_forward(s, nb * Q, c_in, HD, true, false);
            work(s, nb * Q * HD); /* o * gate */
        }
        mf_plan_linear_forward(s, nb * Q, HD, c_out, true, accumulate);
        mf_memsim_release(s, mark);
    }
}

void mf_plan_gated_attention_backward(mf_memsim *s, int64_t B, int64_t Q, int64_t K, int64_t c_in,
                                      int64_t H, int64_t D, int64_t c_out, bool gated, bool dq_x,
                                      bool dkv_x, bool dbias, bool dparams)
{
    /* saved q, k, v, gate, o are widened to f32 slice by slice when stored in bf16 */
    const bool widen = s->policy.storage == MF_BF16;
    const int64_t HD = H * D;
    const bool need_dq = dq_x || dparams, need_dk = dkv_x || dparams, need_dv = need_dk;
    const bool need_core = need_dq || need_dk || need_dv || dbias;
    const bool need_dog = need_core || (gated && (dq_x || dparams));
    mf_memsim_mark_t mark = mf_memsim_mark(s);
    int64_t sizes[2];
    const int ns = mf_plan_slice_sizes(B, mf_plan_slice_rows(s->policy.chunk_size, B), sizes);
    for (int i = 0; i < ns; i++) {
        const int64_t nb = sizes[i];
        if (widen) work(s, nb * Q * HD); /* o */
        if (gated) {
            if (widen) work(s, nb * Q * HD); /* gate */
            work(s, nb * Q * HD);            /* o * gate */
        }
        if (need_dog) work(s, nb * Q * HD);
        mf_plan_linear_backward(s, nb * Q, HD, c_out, need_dog, dparams, dparams);
        if (!need_dog) {
            mf_memsim_release(s, mark);
            continue;
        }
        if (gated && (dq_x || dparams))
            mf_plan_linear_backward(s, nb * Q, c_in, HD, dq_x, dparams, dparams);
        if (!need_core) {
            mf_memsim_release(s, mark);
            continue;
        }
        if (need_dq) work(s, nb * Q * HD);
        if (need_dk) work(s, nb * K * HD);
        if (need_dv) work(s, nb * K * HD);
        mf_plan_attention_backward(s, nb, Q, K, H, D, 1.0f, need_dq, need_dk, need_dv, dbias);
        if (need_dq) mf_plan_linear_backward(s, nb * Q, c_in, HD, dq_x, dparams, false);
        if (need_dk) mf_plan_linear_backward(s, nb * K, c_in, HD, dkv_x, dparams, false);
        if (need_dv) mf_plan_linear_backward(s, nb * K, c_in, HD, dkv_x, dparams, false);
        mf_memsim_release(s, mark);
    }
}
