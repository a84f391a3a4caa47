/* Memory-model plans (memopt/memplan.h) of the pair bias, the MSA row attention with pair bias
 * (Alg. 7) and the MSA column attention (Alg. 8): the arena allocations of msa_attention.c in its
 * order, for an f32 run. The normalised input, its statistics and the bias are kept in the
 * input's dtype (f32) whatever the storage policy; the gated attention op keeps its own saved
 * activations in the storage precision (mf_plan_gated_attention_forward). */
#include "core/ops_memplan_attention.h"
#include "evoformer/msa_attention.h"

static void tensor(mf_memsim *s, mf_mem_kind kind, int64_t numel)
{
    mf_memsim_tensor(s, kind, MF_F32, numel);
}

/* ---- pair bias ------------------------------------------------------------------------------ */

void mf_evo_pair_bias_plan_forward(mf_memsim *s, int64_t n, int64_t n2, int64_t c, int64_t heads,
                                   bool norm)
{
    mf_memsim_mark_t mark = mf_memsim_mark(s);
    tensor(s, MF_MEM_WORK, n * n2 * heads); /* the bias pair-major, before its transpose */
    int64_t sizes[2];
    const int k = mf_plan_slice_sizes(n, mf_plan_slice_rows(s->policy.chunk_size, n), sizes);
    for (int i = 0; i < k; i++) {
        const int64_t ni = sizes[i];
        mf_memsim_mark_t m1 = mf_memsim_mark(s);
        if (norm) tensor(s, MF_MEM_WORK, ni * n2 * c);
        mf_plan_linear_forward(s, ni * n2, c, heads, false, false);
        mf_memsim_release(s, m1);
    }
    mf_memsim_release(s, mark);
}

void mf_evo_pair_bias_plan_backward(mf_memsim *s, int64_t n, int64_t n2, int64_t c, int64_t heads,
                                    bool norm, bool dz, bool dnorm, bool dw)
{
    dnorm = dnorm && norm;
    if (!dz && !dnorm && !dw) return;
    const bool need_dnorm = dz || dnorm;
    mf_memsim_mark_t mark = mf_memsim_mark(s);
    tensor(s, MF_MEM_WORK, n * n2 * heads);
    int64_t sizes[2];
    const int k = mf_plan_slice_sizes(n, mf_plan_slice_rows(s->policy.chunk_size, n), sizes);
    for (int i = 0; i < k; i++) {
        const int64_t ni = sizes[i];
        mf_memsim_mark_t m1 = mf_memsim_mark(s);
        if (norm) {
            /* the layer norm recomputed with its statistics */
            tensor(s, MF_MEM_WORK, ni * n2 * c);
            tensor(s, MF_MEM_WORK, ni * n2);
            tensor(s, MF_MEM_WORK, ni * n2);
            if (need_dnorm) tensor(s, MF_MEM_WORK, ni * n2 * c);
            mf_plan_linear_backward(s, ni * n2, c, heads, need_dnorm, dw, false);
        } else {
            mf_plan_linear_backward(s, ni * n2, c, heads, dz, dw, false);
        }
        mf_memsim_release(s, m1);
    }
    mf_memsim_release(s, mark);
}

/* ---- Alg. 7 --------------------------------------------------------------------------------- */

void mf_msa_row_attention_with_pair_bias_plan_forward(mf_memsim *s, int64_t n_seq, int64_t n_res,
                                                      const mf_msa_row_attention_dims *d,
                                                      bool saving, bool accumulate)
{
    const int64_t S = n_seq, N = n_res, C = d->c_m, H = d->num_heads, D = d->c_hidden;
    if (saving) {
        tensor(s, MF_MEM_SAVED, S * N * C); /* x = query_norm(m) */
        tensor(s, MF_MEM_SAVED, S * N);     /* mean */
        tensor(s, MF_MEM_SAVED, S * N);     /* rstd */
        tensor(s, MF_MEM_SAVED, H * N * N); /* bias */
        mf_evo_pair_bias_plan_forward(s, N, N, d->c_z, H, true);
        mf_plan_gated_attention_forward(s, S, N, N, C, H, D, C, true, true, accumulate);
        return;
    }
    mf_memsim_mark_t mark0 = mf_memsim_mark(s);
    tensor(s, MF_MEM_WORK, H * N * N);
    mf_evo_pair_bias_plan_forward(s, N, N, d->c_z, H, true);
    int64_t sizes[2];
    const int k = mf_plan_slice_sizes(S, mf_plan_slice_rows(s->policy.chunk_size, S), sizes);
    for (int i = 0; i < k; i++) {
        const int64_t ns = sizes[i];
        mf_memsim_mark_t m1 = mf_memsim_mark(s);
        tensor(s, MF_MEM_WORK, ns * N * C);
        mf_plan_gated_attention_forward(s, ns, N, N, C, H, D, C, true, false, accumulate);
        mf_memsim_release(s, m1);
    }
    mf_memsim_release(s, mark0);
}

void mf_msa_row_attention_with_pair_bias_plan_backward(mf_memsim *s, int64_t n_seq, int64_t n_res,
                                                       const mf_msa_row_attention_dims *d, bool dm,
                                                       bool dz, bool dparams)
{
    (void)dm; /* the layer norm's backward takes no arena memory */
    const int64_t S = n_seq, N = n_res, C = d->c_m, H = d->num_heads, D = d->c_hidden;
    mf_memsim_mark_t mark = mf_memsim_mark(s);
    tensor(s, MF_MEM_WORK, S * N * C); /* dx */
    tensor(s, MF_MEM_WORK, H * N * N); /* dbias */
    mf_plan_gated_attention_backward(s, S, N, N, C, H, D, C, true, true, true, true, dparams);
    mf_evo_pair_bias_plan_backward(s, N, N, d->c_z, H, true, dz, dparams, dparams);
    mf_memsim_release(s, mark);
}

/* ---- Alg. 8 --------------------------------------------------------------------------------- */

void mf_msa_column_attention_plan_forward(mf_memsim *s, int64_t n_seq, int64_t n_res,
                                          const mf_msa_column_attention_dims *d, bool saving,
                                          bool accumulate)
{
    (void)accumulate; /* added by the transpose back, which takes no memory */
    const int64_t S = n_seq, N = n_res, C = d->c_m, H = d->num_heads, D = d->c_hidden;
    if (saving) {
        tensor(s, MF_MEM_SAVED, S * N);                                 /* mean */
        tensor(s, MF_MEM_SAVED, S * N);                                 /* rstd */
        tensor(s, MF_MEM_SAVED, N * S * C);                             /* x, column-major */
        tensor(s, MF_MEM_SAVED, N * S);                                 /* mask_t */
        mf_memsim_transient(s, mf_mem_tensor_bytes(MF_F32, S * N * C)); /* the norm in m's order */
        tensor(s, MF_MEM_SAVED, N * S * C); /* scratch: the column-major update */
        mf_plan_gated_attention_forward(s, N, S, S, C, H, D, C, true, true, false);
        return;
    }
    mf_memsim_mark_t mark0 = mf_memsim_mark(s);
    tensor(s, MF_MEM_WORK, N * S * C); /* x */
    tensor(s, MF_MEM_WORK, N * S);     /* mask_t */
    tensor(s, MF_MEM_WORK, N * S * C); /* the column-major update */
    mf_plan_gated_attention_forward(s, N, S, S, C, H, D, C, true, false, false);
    mf_memsim_release(s, mark0);
}

void mf_msa_column_attention_plan_backward(mf_memsim *s, int64_t n_seq, int64_t n_res,
                                           const mf_msa_column_attention_dims *d, bool dm,
                                           bool dparams)
{
    (void)dm;
    const int64_t S = n_seq, N = n_res, C = d->c_m, H = d->num_heads, D = d->c_hidden;
    mf_memsim_mark_t mark = mf_memsim_mark(s);
    tensor(s, MF_MEM_WORK, N * S * C); /* dx, column-major */
    mf_plan_gated_attention_backward(s, N, S, S, C, H, D, C, true, true, true, false, dparams);
    tensor(s, MF_MEM_WORK, S * N * C); /* dx in m's order */
    mf_memsim_release(s, mark);
}
