/* Memory-model plans (memopt/memplan.h) of the triangle attention around the starting node
 * (Alg. 13) and the ending node (Alg. 14): the arena allocations of triangle_attention.c in its
 * order, for an f32 run. */
#include "core/ops_memplan_attention.h"
#include "evoformer/msa_attention.h"
#include "evoformer/triangle_attention.h"

static void tensor(mf_memsim *s, mf_mem_kind kind, int64_t numel)
{
    mf_memsim_tensor(s, kind, MF_F32, numel);
}

void mf_triangle_attention_plan_forward(mf_memsim *s, int64_t n_res,
                                        const mf_triangle_attention_dims *d, bool ending_node,
                                        bool saving, bool accumulate)
{
    const int64_t N = n_res, C = d->c_z, H = d->num_heads, D = d->c_hidden;
    if (saving) {
        tensor(s, MF_MEM_SAVED, N * N * C); /* x = query_norm(z), the attention's orientation */
        tensor(s, MF_MEM_SAVED, N * N);     /* mean */
        tensor(s, MF_MEM_SAVED, N * N);     /* rstd */
        tensor(s, MF_MEM_SAVED, H * N * N); /* bias */
        if (ending_node) {
            tensor(s, MF_MEM_SAVED, N * N);                                 /* mask_t */
            mf_memsim_transient(s, mf_mem_tensor_bytes(MF_F32, N * N * C)); /* norm in z's order */
        }
        mf_evo_pair_bias_plan_forward(s, N, N, C, H, false);
        if (ending_node) {
            tensor(s, MF_MEM_SAVED, N * N * C); /* scratch: the transposed update */
            mf_plan_gated_attention_forward(s, N, N, N, C, H, D, C, true, true, false);
        } else {
            mf_plan_gated_attention_forward(s, N, N, N, C, H, D, C, true, true, accumulate);
        }
        return;
    }
    mf_memsim_mark_t mark0 = mf_memsim_mark(s);
    const int64_t rows = mf_plan_slice_rows(s->policy.chunk_size, N);
    if (ending_node && s->device == MF_DEV_CPU && rows < N) {
        /* ending_forward_sliced: the bias from z, the transposed mask, then per slice of
         * columns the gathered rows and their update */
        tensor(s, MF_MEM_WORK, H * N * N);
        mf_evo_pair_bias_plan_forward(s, N, N, C, H, true);
        tensor(s, MF_MEM_WORK, N * N);
        int64_t sizes[2];
        const int k = mf_plan_slice_sizes(N, rows, sizes);
        for (int i = 0; i < k; i++) {
            mf_memsim_mark_t m1 = mf_memsim_mark(s);
            tensor(s, MF_MEM_WORK, sizes[i] * N * C);
            tensor(s, MF_MEM_WORK, sizes[i] * N * C);
            mf_plan_gated_attention_forward(s, sizes[i], N, N, C, H, D, C, true, false, false);
            mf_memsim_release(s, m1);
        }
        mf_memsim_release(s, mark0);
        return;
    }
    tensor(s, MF_MEM_WORK, H * N * N); /* bias */
    if (ending_node) {
        tensor(s, MF_MEM_WORK, N * N * C); /* x, transposed */
        mf_evo_pair_bias_plan_forward(s, N, N, C, H, false);
        tensor(s, MF_MEM_WORK, N * N);     /* mask_t */
        tensor(s, MF_MEM_WORK, N * N * C); /* the transposed update */
        mf_plan_gated_attention_forward(s, N, N, N, C, H, D, C, true, false, false);
    } else {
        mf_evo_pair_bias_plan_forward(s, N, N, C, H, true);
        int64_t sizes[2];
        const int k = mf_plan_slice_sizes(N, mf_plan_slice_rows(s->policy.chunk_size, N), sizes);
        for (int i = 0; i < k; i++) {
            const int64_t ni = sizes[i];
            mf_memsim_mark_t m1 = mf_memsim_mark(s);
            tensor(s, MF_MEM_WORK, ni * N * C);
            mf_plan_gated_attention_forward(s, ni, N, N, C, H, D, C, true, false, accumulate);
            mf_memsim_release(s, m1);
        }
    }
    mf_memsim_release(s, mark0);
}

void mf_triangle_attention_plan_backward(mf_memsim *s, int64_t n_res,
                                         const mf_triangle_attention_dims *d, bool ending_node,
                                         bool dz, bool dparams)
{
    (void)dz; /* the layer norm's backward takes no arena memory; dx is computed either way */
    const int64_t N = n_res, C = d->c_z, H = d->num_heads, D = d->c_hidden;
    mf_memsim_mark_t mark = mf_memsim_mark(s);
    tensor(s, MF_MEM_WORK, N * N * C); /* dx */
    tensor(s, MF_MEM_WORK, H * N * N); /* dbias */
    mf_plan_gated_attention_backward(s, N, N, N, C, H, D, C, true, true, true, true, dparams);
    mf_evo_pair_bias_plan_backward(s, N, N, C, H, false, true, false, dparams);
    if (ending_node) tensor(s, MF_MEM_WORK, N * N * C); /* dx in z's order */
    mf_memsim_release(s, mark);
}
