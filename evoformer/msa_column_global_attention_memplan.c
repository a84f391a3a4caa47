/* Memory-model plans (memopt/memplan.h) of the MSA column-wise global attention (Alg. 19): the
 * arena allocations of msa_column_global_attention.c in its order, for an f32 run. */
#include "core/ops_memplan_attention.h"
#include "evoformer/msa_attention.h"

static void tensor(mf_memsim *s, mf_mem_kind kind, int64_t numel)
{
    mf_memsim_tensor(s, kind, MF_F32, numel);
}

/* work_alloc and mask_weights: mask_t, the mean's weights, the shared key and value (both
 * orders), then the weights' transient softmax buffer. */
static void work_plan(mf_memsim *s, int64_t S, int64_t N, int64_t D)
{
    tensor(s, MF_MEM_WORK, N * S);     /* mask_t */
    tensor(s, MF_MEM_WORK, S * N);     /* w_sn */
    tensor(s, MF_MEM_WORK, N * S * D); /* k_t */
    tensor(s, MF_MEM_WORK, N * S * D); /* v_t */
    tensor(s, MF_MEM_WORK, S * N * D); /* k_sn */
    tensor(s, MF_MEM_WORK, S * N * D); /* v_sn */
    mf_memsim_transient(s, mf_mem_tensor_bytes(MF_F32, N * S));
}

/* norm_slice: x_c [ns, N, C] (+ mean, rstd), and with want_t x_ct [N, ns, C], w_ct [N, 1, ns]. */
static void norm_slice(mf_memsim *s, int64_t ns, int64_t N, int64_t C, bool stats, bool want_t)
{
    tensor(s, MF_MEM_WORK, ns * N * C);
    if (stats) {
        tensor(s, MF_MEM_WORK, ns * N);
        tensor(s, MF_MEM_WORK, ns * N);
    }
    if (!want_t) return;
    tensor(s, MF_MEM_WORK, N * ns * C);
    tensor(s, MF_MEM_WORK, N * ns);
}

/* The slices of a sequence loop that differ in allocations or products: the first (line 2's
 * masked mean starts with beta 0 there) and one later slice of each size. */
typedef struct {
    int n;
    int64_t rows[3];
    bool first[3];
} seq_slices;

static seq_slices slices(int64_t S, int64_t chunk)
{
    seq_slices r = {0};
    const int64_t rows = mf_plan_slice_rows(chunk, S);
    if (S <= 0) return r;
    r.rows[r.n] = rows < S ? rows : S, r.first[r.n++] = true;
    if (S >= 2 * rows) r.rows[r.n] = rows, r.first[r.n++] = false;
    if (S > rows && S % rows) r.rows[r.n] = S % rows, r.first[r.n++] = false;
    return r;
}

void mf_msa_column_global_attention_plan_forward(mf_memsim *s, int64_t n_seq, int64_t n_res,
                                                 const mf_msa_column_global_attention_dims *d,
                                                 bool saving, bool accumulate)
{
    const int64_t S = n_seq, N = n_res, C = d->c_m, H = d->num_heads, D = d->c_hidden, HD = H * D;
    const mf_dtype sdt = s->policy.storage == MF_BF16 ? MF_BF16 : MF_F32;
    const mf_mem_kind kind = saving ? MF_MEM_SAVED : MF_MEM_WORK;
    mf_memsim_mark_t mark0 = mf_memsim_mark(s);
    tensor(s, kind, N * C);  /* q_avg */
    tensor(s, kind, N * HD); /* q */
    tensor(s, kind, N * HD); /* o */
    if (saving) {
        tensor(s, MF_MEM_SAVED, N * H);                     /* lse */
        mf_memsim_tensor(s, MF_MEM_SAVED, sdt, S * N * HD); /* gate logits */
    }
    mf_memsim_mark_t mark1 = mf_memsim_mark(s);
    work_plan(s, S, N, D);
    const seq_slices sl = slices(S, s->policy.chunk_size);
    for (int i = 0; i < sl.n; i++) {
        const int64_t ns = sl.rows[i];
        mf_memsim_mark_t m1 = mf_memsim_mark(s);
        norm_slice(s, ns, N, C, false, true);
        /* line 2: q_avg [N, 1, C] (+)= w_ct [N, 1, ns] @ x_ct [N, ns, C] */
        mf_plan_matmul(s, N, N, N, 1, C, ns, false, false, !sl.first[i]);
        mf_plan_linear_forward(s, ns * N, C, D, false, false);
        mf_plan_linear_forward(s, ns * N, C, D, false, false);
        mf_memsim_release(s, m1);
    }
    mf_plan_linear_forward(s, N, C, HD, false, false);
    mf_plan_attention_forward(s, N, H, S, 1, D, 1.0f);
    int64_t sizes[2];
    const int k = mf_plan_slice_sizes(S, mf_plan_slice_rows(s->policy.chunk_size, S), sizes);
    for (int i = 0; i < k; i++) {
        const int64_t ns = sizes[i];
        mf_memsim_mark_t m1 = mf_memsim_mark(s);
        norm_slice(s, ns, N, C, false, false);
        if (!(saving && sdt == MF_F32)) tensor(s, MF_MEM_WORK, ns * N * HD); /* gate logits */
        mf_plan_linear_forward(s, ns * N, C, HD, true, false);
        tensor(s, MF_MEM_WORK, ns * N * HD); /* gate */
        mf_plan_linear_forward(s, ns * N, HD, C, true, accumulate);
        mf_memsim_release(s, m1);
    }
    mf_memsim_release(s, saving ? mark1 : mark0);
}

void mf_msa_column_global_attention_plan_backward(mf_memsim *s, int64_t n_seq, int64_t n_res,
                                                  const mf_msa_column_global_attention_dims *d,
                                                  bool dm, bool dparams)
{
    (void)dm; /* the layer norm's backward takes no arena memory */
    const int64_t S = n_seq, N = n_res, C = d->c_m, H = d->num_heads, D = d->c_hidden, HD = H * D;
    const bool widen = s->policy.storage == MF_BF16; /* gate logits stored in bf16 */
    mf_memsim_mark_t mark = mf_memsim_mark(s);
    work_plan(s, S, N, D);
    tensor(s, MF_MEM_WORK, N * HD); /* d_o */
    int64_t sizes[2];
    const int k = mf_plan_slice_sizes(S, mf_plan_slice_rows(s->policy.chunk_size, S), sizes);
    /* lines 3, 6-7 backwards, with the key and value recomputed */
    for (int i = 0; i < k; i++) {
        const int64_t ns = sizes[i];
        mf_memsim_mark_t m1 = mf_memsim_mark(s);
        norm_slice(s, ns, N, C, true, false);
        mf_plan_linear_forward(s, ns * N, C, D, false, false);
        mf_plan_linear_forward(s, ns * N, C, D, false, false);
        if (widen) tensor(s, MF_MEM_WORK, ns * N * HD);
        tensor(s, MF_MEM_WORK, ns * N * HD); /* g */
        tensor(s, MF_MEM_WORK, ns * N * HD); /* og */
        tensor(s, MF_MEM_WORK, ns * N * HD); /* dog */
        mf_plan_linear_backward(s, ns * N, HD, C, true, dparams, dparams);
        tensor(s, MF_MEM_WORK, ns * N * HD); /* dg */
        tensor(s, MF_MEM_WORK, ns * N * HD); /* dgl */
        tensor(s, MF_MEM_WORK, ns * N * C);  /* dx_c */
        mf_plan_linear_backward(s, ns * N, C, HD, true, dparams, dparams);
        mf_memsim_release(s, m1);
    }
    /* lines 5-6 */
    tensor(s, MF_MEM_WORK, N * HD);    /* dq */
    tensor(s, MF_MEM_WORK, N * S * D); /* dk_t */
    tensor(s, MF_MEM_WORK, N * S * D); /* dv_t */
    mf_plan_attention_backward(s, N, H, S, 1, D, 1.0f, true, true, true, false);
    /* line 3 for the mean query */
    tensor(s, MF_MEM_WORK, N * C); /* dq_avg */
    mf_plan_linear_backward(s, N, C, HD, true, dparams, false);
    /* lines 4 and 2 per sequence slice */
    for (int i = 0; i < k; i++) {
        const int64_t ns = sizes[i];
        mf_memsim_mark_t m1 = mf_memsim_mark(s);
        norm_slice(s, ns, N, C, true, true);
        tensor(s, MF_MEM_WORK, ns * N * C); /* dx_c */
        mf_plan_linear_backward(s, ns * N, C, D, true, dparams, false);
        mf_plan_linear_backward(s, ns * N, C, D, true, dparams, false);
        tensor(s, MF_MEM_WORK, N * ns * C); /* dx_ct */
        mf_plan_matmul_backward(s, N, N, N, 1, C, ns, false, false, false, true);
        mf_memsim_release(s, m1);
    }
    mf_memsim_release(s, mark);
}
