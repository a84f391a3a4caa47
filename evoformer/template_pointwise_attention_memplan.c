/* Memory-model plans (memopt/memplan.h) of the template pointwise attention (Alg. 17): the arena
 * allocations of template_pointwise_attention.c in its order, for an f32 run. */
#include "core/ops_memplan_attention.h"
#include "evoformer/template_pointwise_attention.h"

static void tensor(mf_memsim *s, mf_mem_kind kind, int64_t numel)
{
    mf_memsim_tensor(s, kind, MF_F32, numel);
}

void mf_template_pointwise_attention_plan_forward(mf_memsim *s, int64_t n_templ, int64_t n_res,
                                                  const mf_template_pointwise_attention_dims *d,
                                                  bool saving, bool accumulate)
{
    const int64_t N = n_res, P = N * N, T = n_templ, H = d->num_heads, D = d->c_hidden, HD = H * D,
                  Cz = d->c_z, Ct = d->c_t;
    const mf_dtype sdt = s->policy.storage == MF_BF16 ? MF_BF16 : MF_F32;
    const bool direct = saving && sdt == MF_F32; /* computed straight into the saved tensors */
    mf_memsim_mark_t mark0 = mf_memsim_mark(s), mark1 = mark0;
    if (saving) {
        mf_memsim_tensor(s, MF_MEM_SAVED, sdt, P * HD);     /* q */
        mf_memsim_tensor(s, MF_MEM_SAVED, sdt, P * T * HD); /* k */
        mf_memsim_tensor(s, MF_MEM_SAVED, sdt, P * T * HD); /* v */
        mf_memsim_tensor(s, MF_MEM_SAVED, sdt, P * HD);     /* o */
        tensor(s, MF_MEM_SAVED, P * H);                     /* lse */
        tensor(s, MF_MEM_SAVED, 1);                         /* ind */
        mark1 = mf_memsim_mark(s);
    } else {
        tensor(s, MF_MEM_WORK, 1); /* ind */
    }
    mf_memsim_transient(s, mf_mem_tensor_bytes(MF_F32, T)); /* the no-template factor's softmax */
    int64_t sizes[2];
    const int k = mf_plan_slice_sizes(N, mf_plan_slice_rows(s->policy.chunk_size, N), sizes);
    for (int i = 0; i < k; i++) {
        const int64_t nb = sizes[i] * N; /* pairs of the slice */
        mf_memsim_mark_t m1 = mf_memsim_mark(s);
        if (!direct) {
            tensor(s, MF_MEM_WORK, nb * HD);     /* q */
            tensor(s, MF_MEM_WORK, nb * T * HD); /* k */
            tensor(s, MF_MEM_WORK, nb * T * HD); /* v */
            tensor(s, MF_MEM_WORK, nb * HD);     /* o */
        }
        mf_plan_linear_forward(s, nb, Cz, HD, false, false);
        tensor(s, MF_MEM_WORK, T * nb * HD); /* k, template-major */
        tensor(s, MF_MEM_WORK, T * nb * HD); /* v, template-major */
        /* the key and value products of every template are alike */
        mf_plan_linear_forward(s, nb, Ct, HD, false, false);
        mf_plan_linear_forward(s, nb, Ct, HD, false, false);
        tensor(s, MF_MEM_WORK, nb * T); /* key mask */
        mf_plan_attention_forward(s, nb, 1, T, H, D, 1.0f);
        if (accumulate) tensor(s, MF_MEM_WORK, nb * Cz);
        mf_plan_linear_forward(s, nb, HD, Cz, true, false);
        mf_memsim_release(s, m1);
    }
    mf_memsim_release(s, saving ? mark1 : mark0);
}

void mf_template_pointwise_attention_plan_backward(mf_memsim *s, int64_t n_templ, int64_t n_res,
                                                   const mf_template_pointwise_attention_dims *d,
                                                   bool dz, bool dt, bool dparams)
{
    const int64_t N = n_res, T = n_templ, H = d->num_heads, D = d->c_hidden, HD = H * D,
                  Cz = d->c_z, Ct = d->c_t;
    const bool widen = s->policy.storage == MF_BF16; /* saved o stored in bf16 */
    const bool need_q = dz || dparams, need_kv = dt || dparams;
    mf_memsim_mark_t mark = mf_memsim_mark(s);
    int64_t sizes[2];
    const int k = mf_plan_slice_sizes(N, mf_plan_slice_rows(s->policy.chunk_size, N), sizes);
    for (int i = 0; i < k; i++) {
        const int64_t nb = sizes[i] * N;
        mf_memsim_mark_t m1 = mf_memsim_mark(s);
        tensor(s, MF_MEM_WORK, nb * Cz); /* dy */
        if (widen) tensor(s, MF_MEM_WORK, nb * HD);
        tensor(s, MF_MEM_WORK, nb * HD); /* d_o */
        mf_plan_linear_backward(s, nb, HD, Cz, true, dparams, dparams);
        if (need_q || need_kv) {
            if (need_q) tensor(s, MF_MEM_WORK, nb * HD);
            if (need_kv) {
                tensor(s, MF_MEM_WORK, nb * T * HD);
                tensor(s, MF_MEM_WORK, nb * T * HD);
            }
            tensor(s, MF_MEM_WORK, nb * T); /* key mask */
            mf_plan_attention_backward(s, nb, 1, T, H, D, 1.0f, need_q, need_kv, need_kv, false);
            if (need_q) mf_plan_linear_backward(s, nb, Cz, HD, dz, dparams, false);
            if (need_kv) {
                tensor(s, MF_MEM_WORK, T * nb * HD);
                tensor(s, MF_MEM_WORK, T * nb * HD);
                mf_plan_linear_backward(s, nb, Ct, HD, dt, dparams, false);
                mf_plan_linear_backward(s, nb, Ct, HD, dt, dparams, false);
            }
        }
        mf_memsim_release(s, m1);
    }
    mf_memsim_release(s, mark);
}
