/* Memory-model plans of the output heads (heads.h) and of the structure module, heads and loss as
 * model/train_step.c and model/alphafold.c run them (heads_memplan.h). */
#include "model/heads_memplan.h"

/* The distinct slice lengths of a loop over rows under chunk size chunk (memplan.h). */
static int slice_lengths(int64_t rows, int64_t chunk, int64_t len[2])
{
    return mf_plan_slice_sizes(rows, mf_plan_slice_rows(chunk, rows), len);
}

/* linear_head_forward: out[rows, inner..., C] over dim-0 slices; `inner` rows of the product per
 * slice row. */
static void plan_linear_head(mf_memsim *s, int64_t rows, int64_t inner, int64_t F, int64_t C,
                             bool accumulate)
{
    int64_t len[2];
    const int ns = slice_lengths(rows, s->policy.chunk_size, len);
    for (int k = 0; k < ns; k++) mf_plan_linear_forward(s, len[k] * inner, F, C, true, accumulate);
}

void mf_distogram_head_plan_forward(mf_memsim *s, int64_t n_res, const mf_heads_dims *d,
                                    bool accumulate)
{
    (void)accumulate; /* the transpose adds; the product writes the half logits */
    const int64_t N = n_res;
    const mf_memsim_mark_t mark = mf_memsim_mark(s);
    mf_memsim_tensor(s, MF_MEM_WORK, MF_F32, N * N * d->distogram_num_bins);
    plan_linear_head(s, N, N, d->c_z, d->distogram_num_bins, false);
    mf_memsim_release(s, mark);
}

void mf_distogram_head_plan_backward(mf_memsim *s, int64_t n_res, const mf_heads_dims *d,
                                     bool dpair, bool dparams)
{
    if (!dpair && !dparams) return;
    const int64_t N = n_res;
    const mf_memsim_mark_t mark = mf_memsim_mark(s);
    mf_memsim_tensor(s, MF_MEM_WORK, MF_F32, N * N * d->distogram_num_bins);
    mf_plan_linear_backward(s, N * N, d->c_z, d->distogram_num_bins, dpair, dparams, dparams);
    mf_memsim_release(s, mark);
}

void mf_masked_msa_head_plan_forward(mf_memsim *s, int64_t n_seq, int64_t n_res,
                                     const mf_heads_dims *d, bool accumulate)
{
    plan_linear_head(s, n_seq, n_res, d->c_m, d->masked_msa_num_output, accumulate);
}

void mf_masked_msa_head_plan_backward(mf_memsim *s, int64_t n_seq, int64_t n_res,
                                      const mf_heads_dims *d, bool dmsa, bool dparams)
{
    mf_plan_linear_backward(s, n_seq * n_res, d->c_m, d->masked_msa_num_output, dmsa, dparams,
                            dparams);
}

void mf_experimentally_resolved_head_plan_forward(mf_memsim *s, int64_t n_res,
                                                  const mf_heads_dims *d, bool accumulate)
{
    plan_linear_head(s, n_res, 1, d->c_s, d->experimentally_resolved_num_output, accumulate);
}

void mf_experimentally_resolved_head_plan_backward(mf_memsim *s, int64_t n_res,
                                                   const mf_heads_dims *d, bool dsingle,
                                                   bool dparams)
{
    mf_plan_linear_backward(s, n_res, d->c_s, d->experimentally_resolved_num_output, dsingle,
                            dparams, dparams);
}

void mf_predicted_aligned_error_head_plan_forward(mf_memsim *s, int64_t n_res,
                                                  const mf_heads_dims *d, bool accumulate)
{
    plan_linear_head(s, n_res, n_res, d->c_z, d->pae_num_bins, accumulate);
}

void mf_predicted_aligned_error_head_plan_backward(mf_memsim *s, int64_t n_res,
                                                   const mf_heads_dims *d, bool dpair, bool dparams)
{
    mf_plan_linear_backward(s, n_res * n_res, d->c_z, d->pae_num_bins, dpair, dparams, dparams);
}

void mf_predicted_lddt_head_plan_forward(mf_memsim *s, int64_t n_res, const mf_heads_dims *d,
                                         bool saving, bool accumulate)
{
    const int64_t N = n_res, C = d->c_s, H = d->plddt_c_hidden;
    const int64_t chunk = saving ? 0 : s->policy.chunk_size; /* training: one slice */
    const int64_t cr = chunk > 0 && chunk < N ? chunk : N;
    const mf_dtype sdt = s->policy.storage == MF_BF16 ? MF_BF16 : MF_F32;
    if (saving) {
        mf_memsim_tensor(s, MF_MEM_SAVED, sdt, N * H);
        mf_memsim_tensor(s, MF_MEM_SAVED, sdt, N * H);
    }
    const mf_memsim_mark_t scratch = mf_memsim_mark(s);
    mf_memsim_tensor(s, MF_MEM_WORK, MF_F32, cr * C);
    mf_memsim_tensor(s, MF_MEM_WORK, MF_F32, cr * H);
    mf_memsim_tensor(s, MF_MEM_WORK, MF_F32, cr * H);
    int64_t len[2];
    const int ns = slice_lengths(N, chunk, len);
    for (int k = 0; k < ns; k++) {
        mf_plan_linear_forward(s, len[k], C, H, true, false);
        mf_plan_linear_forward(s, len[k], H, H, true, false);
        mf_plan_linear_forward(s, len[k], H, d->plddt_num_bins, true, accumulate);
    }
    mf_memsim_release(s, scratch);
}

void mf_predicted_lddt_head_plan_backward(mf_memsim *s, int64_t n_res, const mf_heads_dims *d,
                                          bool dsingle, bool dparams)
{
    (void)dsingle; /* the layer norm's backward takes no arena space */
    const int64_t N = n_res, C = d->c_s, H = d->plddt_c_hidden;
    const mf_memsim_mark_t mark = mf_memsim_mark(s);
    if (s->policy.storage == MF_BF16) { /* mf_saved_view converts bf16 to f32 scratch */
        mf_memsim_tensor(s, MF_MEM_WORK, MF_F32, N * H);
        mf_memsim_tensor(s, MF_MEM_WORK, MF_F32, N * H);
    }
    mf_memsim_tensor(s, MF_MEM_WORK, MF_F32, N * C); /* ln, recomputed */
    mf_memsim_tensor(s, MF_MEM_WORK, MF_F32, N);
    mf_memsim_tensor(s, MF_MEM_WORK, MF_F32, N);
    for (int k = 0; k < 3; k++) mf_memsim_tensor(s, MF_MEM_WORK, MF_F32, N * H);
    mf_memsim_tensor(s, MF_MEM_WORK, MF_F32, N * C);
    mf_plan_linear_backward(s, N, H, d->plddt_num_bins, true, dparams, dparams);
    mf_plan_linear_backward(s, N, H, H, true, dparams, dparams);
    mf_plan_linear_backward(s, N, C, H, true, dparams, dparams);
    mf_memsim_release(s, mark);
}

/* ---- as model/train_step.c and model/alphafold.c run them ---------------------------------- */

void mf_heads_plan_inference(mf_memsim *s, int64_t n_seq, int64_t n_res, const mf_heads_dims *d,
                             bool all_heads, bool pae_head, int64_t msa_copy)
{
    mf_predicted_lddt_head_plan_forward(s, n_res, d, false, false);
    if (all_heads) {
        const mf_memsim_mark_t mark = mf_memsim_mark(s);
        if (msa_copy > 0) mf_memsim_tensor(s, MF_MEM_WORK, MF_F32, msa_copy);
        mf_distogram_head_plan_forward(s, n_res, d, false);
        mf_masked_msa_head_plan_forward(s, n_seq, n_res, d, false);
        mf_memsim_release(s, mark);
        mf_experimentally_resolved_head_plan_forward(s, n_res, d, false);
    }
    if (pae_head) mf_predicted_aligned_error_head_plan_forward(s, n_res, d, false);
}

void mf_heads_plan_train_forward(mf_memsim *s, int64_t n_seq, int64_t n_res, const mf_heads_dims *d,
                                 bool pae_head)
{
    const int64_t N = n_res, S = n_seq;
    mf_memsim_tensor(s, MF_MEM_ACTS, MF_F32, N * N * d->distogram_num_bins);
    mf_memsim_tensor(s, MF_MEM_ACTS, MF_F32, S * N * d->masked_msa_num_output);
    mf_memsim_tensor(s, MF_MEM_ACTS, MF_F32, N * d->experimentally_resolved_num_output);
    mf_memsim_tensor(s, MF_MEM_ACTS, MF_F32, N * d->plddt_num_bins);
    mf_distogram_head_plan_forward(s, N, d, false);
    mf_masked_msa_head_plan_forward(s, S, N, d, false);
    mf_experimentally_resolved_head_plan_forward(s, N, d, false);
    mf_predicted_lddt_head_plan_forward(s, N, d, true, false);
    if (pae_head) {
        mf_memsim_tensor(s, MF_MEM_ACTS, MF_F32, N * N * d->pae_num_bins);
        mf_predicted_aligned_error_head_plan_forward(s, N, d, false);
    }
}

void mf_heads_plan_train_backward(mf_memsim *s, int64_t n_seq, int64_t n_res,
                                  const mf_heads_dims *d, bool pae_head)
{
    mf_predicted_lddt_head_plan_backward(s, n_res, d, true, true);
    mf_experimentally_resolved_head_plan_backward(s, n_res, d, true, true);
    mf_masked_msa_head_plan_backward(s, n_seq, n_res, d, true, true);
    mf_distogram_head_plan_backward(s, n_res, d, true, true);
    if (pae_head) mf_predicted_aligned_error_head_plan_backward(s, n_res, d, true, true);
}

void mf_train_plan_output_forward(mf_memsim *s, int64_t n_seq, int64_t n_res,
                                  const mf_structure_module_dims *sm, const mf_heads_dims *d,
                                  bool pae_head, bool dropout)
{
    const int64_t N = n_res, L = sm->num_layer;
    /* forward_structure_module: the outputs, the saved struct, the forward */
    mf_memsim_tensor(s, MF_MEM_ACTS, MF_F32, L * N * 7);
    mf_memsim_tensor(s, MF_MEM_ACTS, MF_F32, L * N * MF_NUM_RIGID_GROUPS * 9);
    mf_memsim_tensor(s, MF_MEM_ACTS, MF_F32, L * N * MF_NUM_RIGID_GROUPS * 3);
    mf_memsim_tensor(s, MF_MEM_ACTS, MF_F32, L * N * MF_ATOM14 * 3);
    mf_memsim_tensor(s, MF_MEM_ACTS, MF_F32, L * N * MF_NUM_TORSIONS * 2);
    mf_memsim_tensor(s, MF_MEM_ACTS, MF_F32, L * N * MF_NUM_TORSIONS * 2);
    mf_memsim_tensor(s, MF_MEM_ACTS, MF_F32, N * sm->c_s);
    mf_memsim_tensor(s, MF_MEM_ACTS, MF_F32, N * MF_ATOM37 * 3);
    mf_memsim_tensor(s, MF_MEM_ACTS, MF_F32, N * MF_ATOM37);
    mf_memsim_alloc(s, MF_MEM_SAVED, sizeof(mf_structure_module_saved));
    const mf_structure_module_plan_opts o = mf_structure_module_plan_training(dropout);
    mf_structure_module_plan_forward_ex(s, N, sm, &o, true);
    mf_heads_plan_train_forward(s, n_seq, N, d, pae_head);
}

void mf_train_plan_loss(mf_memsim *s, int64_t n_seq, int64_t n_res, int64_t num_layers,
                        const mf_config *cfg)
{
    /* the loss with the features' use_clamped_fape, then unclamped: the same allocations */
    mf_loss_plan_forward(s, n_seq, n_res, num_layers, cfg);
    mf_loss_plan_forward(s, n_seq, n_res, num_layers, cfg);
}

void mf_train_plan_loss_backward(mf_memsim *s, int64_t n_seq, int64_t n_res,
                                 const mf_structure_module_dims *sm, const mf_heads_dims *d,
                                 bool pae_head, const mf_config *cfg, float resolution)
{
    const int64_t N = n_res, S = n_seq, L = sm->num_layer;
    /* backward_loss: zeroed gradients of every loss input, then mf_loss_backward */
    mf_memsim_tensor(s, MF_MEM_ACTS, MF_F32, N * N * d->distogram_num_bins);
    mf_memsim_tensor(s, MF_MEM_ACTS, MF_F32, S * N * d->masked_msa_num_output);
    mf_memsim_tensor(s, MF_MEM_ACTS, MF_F32, N * d->experimentally_resolved_num_output);
    mf_memsim_tensor(s, MF_MEM_ACTS, MF_F32, N * d->plddt_num_bins);
    if (pae_head) mf_memsim_tensor(s, MF_MEM_ACTS, MF_F32, N * N * d->pae_num_bins);
    mf_memsim_tensor(s, MF_MEM_ACTS, MF_F32, L * N * 7);
    mf_memsim_tensor(s, MF_MEM_ACTS, MF_F32, L * N * MF_NUM_RIGID_GROUPS * 9);
    mf_memsim_tensor(s, MF_MEM_ACTS, MF_F32, L * N * MF_NUM_RIGID_GROUPS * 3);
    mf_memsim_tensor(s, MF_MEM_ACTS, MF_F32, L * N * MF_ATOM14 * 3);
    mf_memsim_tensor(s, MF_MEM_ACTS, MF_F32, L * N * MF_NUM_TORSIONS * 2);
    mf_memsim_tensor(s, MF_MEM_ACTS, MF_F32, L * N * MF_NUM_TORSIONS * 2);
    const mf_loss_plan_grads g = mf_loss_plan_grads_all(resolution);
    mf_loss_plan_backward(s, S, N, L, cfg, &g);
}

void mf_train_plan_output_backward(mf_memsim *s, int64_t n_seq, int64_t n_res, int64_t c_m,
                                   const mf_structure_module_dims *sm, const mf_heads_dims *d,
                                   bool pae_head, bool dropout)
{
    const int64_t N = n_res;
    mf_memsim_tensor(s, MF_MEM_ACTS, MF_F32, N * sm->c_s); /* dsingle */
    mf_memsim_tensor(s, MF_MEM_ACTS, MF_F32, N * sm->c_s); /* dact */
    mf_heads_plan_train_backward(s, n_seq, N, d, pae_head);
    const mf_structure_module_plan_opts o = mf_structure_module_plan_training(dropout);
    mf_structure_module_plan_backward(s, N, sm, &o);
    mf_plan_linear_backward(s, N, c_m, sm->c_s, true, true, true); /* single_activations */
}
