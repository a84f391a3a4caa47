/* Memory-model plans of the embedders (embedders_memplan.h): the allocations of embedders.c, in
 * its order. Layer norm, gather/scatter of rows (CPU), additions, sums, ReLU and conversions take
 * no arena space; the matrix products take what ops_memplan.c says. */
#include "model/embedders_memplan.h"

#include "core/cuda/scatter_slabs.h"

/* embedders.c slice_rows: dim-0 slices of the policy's chunk size (0: everything at once). */
static int64_t slice_rows(const mf_memsim *s, int64_t rows)
{
    const int64_t c = s->policy.chunk_size;
    return c > 0 && c < rows ? c : rows;
}

/* mf_gather_rows / mf_scatter_add_rows of m index rows of `cols` columns with a table of n rows.
 * The CPU reads host indices in place. On a GPU the model runs the embedders as the trunk of a
 * split run, which sends the bins up once (model/alphafold.c, train_step.c up()), so the op uses
 * them in place too (no index copy); its deterministic scatter takes the slabs' partial tables
 * (core/cuda/scatter_slabs.h) while it runs. */
static void plan_rows_op(mf_memsim *s, int64_t m, int64_t n, int64_t cols, bool scatter)
{
    const int64_t S = scatter && s->device == MF_DEV_CUDA ? mf_scatter_slabs(m, n, cols) : 0;
    if (S > 0) mf_memsim_transient(s, mf_mem_round((size_t)(S * n * cols) * sizeof(float)));
}

/* embedders.c bias_grad_rows: a [1, C] sum kept until the module's mark is released. */
static void plan_bias_grad_rows(mf_memsim *s, int64_t C)
{
    mf_memsim_tensor(s, MF_MEM_WORK, MF_F32, C);
}

/* ---- input embedder ------------------------------------------------------------------------- */

void mf_input_embedder_plan_forward(mf_memsim *s, int64_t n_seq, int64_t n_res,
                                    const mf_input_embedder_dims *d, bool saving, bool accumulate)
{
    (void)saving; /* nothing kept: the backward reads the inputs */
    const int64_t S = n_seq, N = n_res, Cm = d->c_m, Cz = d->c_z, F1 = d->target_feat_dim;
    mf_memsim_mark_t mark = mf_memsim_mark(s);
    mf_memsim_tensor(s, MF_MEM_WORK, MF_F32, N * Cm); /* tf_m */
    mf_memsim_tensor(s, MF_MEM_WORK, MF_F32, N * Cz); /* left */
    mf_memsim_tensor(s, MF_MEM_WORK, MF_F32, N * Cz); /* right */
    mf_plan_linear_forward(s, N, F1, Cm, true, false);
    mf_plan_linear_forward(s, N, F1, Cz, true, false);
    mf_plan_linear_forward(s, N, F1, Cz, true, false);
    const int64_t cs = slice_rows(s, S);
    if (accumulate) mf_memsim_tensor(s, MF_MEM_WORK, MF_F32, cs * N * Cm);
    for (int64_t s0 = 0; s0 < S; s0 = mf_plan_next_slice(s0, S, cs)) {
        const int64_t c = S - s0 < cs ? S - s0 : cs;
        mf_plan_linear_forward(s, c * N, d->msa_feat_dim, Cm, true, false);
    }
    const int64_t ci = slice_rows(s, N);
    if (accumulate) mf_memsim_tensor(s, MF_MEM_WORK, MF_F32, ci * N * Cz);
    for (int64_t i0 = 0; i0 < N; i0 = mf_plan_next_slice(i0, N, ci)) {
        const int64_t c = N - i0 < ci ? N - i0 : ci;
        plan_rows_op(s, c * N, 2 * d->max_relative_feature + 1, Cz, false);
    }
    mf_memsim_release(s, mark);
}

void mf_input_embedder_plan_backward(mf_memsim *s, int64_t n_seq, int64_t n_res,
                                     const mf_input_embedder_dims *d, bool dmsa, bool dpair,
                                     bool dtarget_feat, bool dmsa_feat, bool dparams)
{
    const int64_t S = n_seq, N = n_res, Cm = d->c_m, Cz = d->c_z, F1 = d->target_feat_dim;
    mf_memsim_mark_t mark = mf_memsim_mark(s);
    if (dmsa) {
        mf_plan_linear_backward(s, S * N, d->msa_feat_dim, Cm, dmsa_feat, dparams, dparams);
        if (dtarget_feat || dparams) {
            mf_memsim_tensor(s, MF_MEM_WORK, MF_F32, N * Cm); /* dtf_m */
            mf_plan_linear_backward(s, N, F1, Cm, dtarget_feat, dparams, dparams);
        }
    }
    if (dpair) {
        if (dparams) {
            plan_rows_op(s, N * N, 2 * d->max_relative_feature + 1, Cz, true);
            plan_bias_grad_rows(s, Cz);
        }
        if (dtarget_feat || dparams) {
            mf_memsim_tensor(s, MF_MEM_WORK, MF_F32, N * Cz); /* dleft */
            mf_plan_linear_backward(s, N, F1, Cz, dtarget_feat, dparams, dparams);
            mf_memsim_tensor(s, MF_MEM_WORK, MF_F32, N * Cz); /* dright */
            mf_plan_linear_backward(s, N, F1, Cz, dtarget_feat, dparams, dparams);
        }
    }
    mf_memsim_release(s, mark);
}

/* ---- recycling embedder --------------------------------------------------------------------- */

void mf_recycling_embedder_plan_forward(mf_memsim *s, int64_t n_res,
                                        const mf_recycling_embedder_dims *d, bool saving,
                                        bool accumulate)
{
    const int64_t N = n_res, Cm = d->c_m, Cz = d->c_z;
    if (saving) { /* layer-norm statistics, f32 */
        mf_memsim_tensor(s, MF_MEM_SAVED, MF_F32, N);
        mf_memsim_tensor(s, MF_MEM_SAVED, MF_F32, N);
        mf_memsim_tensor(s, MF_MEM_SAVED, MF_F32, N * N);
        mf_memsim_tensor(s, MF_MEM_SAVED, MF_F32, N * N);
    }
    mf_memsim_mark_t mark = mf_memsim_mark(s);
    if (accumulate) mf_memsim_tensor(s, MF_MEM_WORK, MF_F32, N * Cm);
    mf_memsim_release(s, mark);
    const int64_t ci = slice_rows(s, N);
    mf_memsim_tensor(s, MF_MEM_WORK, MF_F32, ci * N * Cz);
    for (int64_t i0 = 0; i0 < N; i0 = mf_plan_next_slice(i0, N, ci)) {
        const int64_t c = N - i0 < ci ? N - i0 : ci;
        plan_rows_op(s, c * N, d->num_bins, Cz, false);
    }
    mf_memsim_release(s, mark);
}

void mf_recycling_embedder_plan_backward(mf_memsim *s, int64_t n_res,
                                         const mf_recycling_embedder_dims *d, bool dm1_update,
                                         bool dz_update, bool dparams)
{
    (void)dm1_update; /* the layer norm's backward takes no arena space */
    const int64_t N = n_res;
    mf_memsim_mark_t mark = mf_memsim_mark(s);
    if (dz_update && dparams) {
        plan_rows_op(s, N * N, d->num_bins, d->c_z, true);
        plan_bias_grad_rows(s, d->c_z);
    }
    mf_memsim_release(s, mark);
}

/* ---- single linear embedders (extra MSA, template pair) -------------------------------------- */

static void linear_embedder_forward(mf_memsim *s, int64_t rows, int64_t inner, int64_t F, int64_t C,
                                    bool accumulate)
{
    const int64_t cr = slice_rows(s, rows);
    for (int64_t r0 = 0; r0 < rows; r0 = mf_plan_next_slice(r0, rows, cr)) {
        const int64_t c = rows - r0 < cr ? rows - r0 : cr;
        mf_plan_linear_forward(s, c * inner, F, C, true, accumulate);
    }
}

static void linear_embedder_backward(mf_memsim *s, int64_t rows, int64_t inner, int64_t F,
                                     int64_t C, bool dfeat, bool dparams)
{
    mf_plan_linear_backward(s, rows * inner, F, C, dfeat, dparams, dparams);
}

void mf_extra_msa_embedder_plan_forward(mf_memsim *s, int64_t n_extra, int64_t n_res,
                                        const mf_extra_msa_embedder_dims *d, bool saving,
                                        bool accumulate)
{
    (void)saving;
    linear_embedder_forward(s, n_extra, n_res, d->extra_msa_feat_dim, d->c_e, accumulate);
}

void mf_extra_msa_embedder_plan_backward(mf_memsim *s, int64_t n_extra, int64_t n_res,
                                         const mf_extra_msa_embedder_dims *d, bool dfeat,
                                         bool dparams)
{
    linear_embedder_backward(s, n_extra, n_res, d->extra_msa_feat_dim, d->c_e, dfeat, dparams);
}

void mf_template_pair_embedder_plan_forward(mf_memsim *s, int64_t n_rows, int64_t n_res,
                                            const mf_template_pair_embedder_dims *d, bool saving,
                                            bool accumulate)
{
    (void)saving;
    linear_embedder_forward(s, n_rows, n_res, d->pair_feat_dim, d->c_t, accumulate);
}

void mf_template_pair_embedder_plan_backward(mf_memsim *s, int64_t n_rows, int64_t n_res,
                                             const mf_template_pair_embedder_dims *d, bool dfeat,
                                             bool dparams)
{
    linear_embedder_backward(s, n_rows, n_res, d->pair_feat_dim, d->c_t, dfeat, dparams);
}

/* ---- template single embedder --------------------------------------------------------------- */

static mf_dtype storage_dtype(const mf_memsim *s)
{
    return s->policy.storage == MF_BF16 ? MF_BF16 : MF_F32;
}

void mf_template_single_embedder_plan_forward(mf_memsim *s, int64_t n_templ, int64_t n_res,
                                              const mf_template_single_embedder_dims *d,
                                              bool saving, bool accumulate)
{
    const int64_t T = n_templ, N = n_res, Cm = d->c_m;
    if (saving) mf_memsim_tensor(s, MF_MEM_SAVED, storage_dtype(s), T * N * Cm); /* ReLU output */
    mf_memsim_mark_t mark = mf_memsim_mark(s);
    const int64_t ct = slice_rows(s, T);
    mf_memsim_tensor(s, MF_MEM_WORK, MF_F32, ct * N * Cm); /* h */
    for (int64_t t0 = 0; t0 < T; t0 = mf_plan_next_slice(t0, T, ct)) {
        const int64_t c = T - t0 < ct ? T - t0 : ct;
        mf_plan_linear_forward(s, c * N, d->angle_feat_dim, Cm, true, false);
        mf_plan_linear_forward(s, c * N, Cm, Cm, true, accumulate);
    }
    mf_memsim_release(s, mark);
}

void mf_template_single_embedder_plan_backward(mf_memsim *s, int64_t n_templ, int64_t n_res,
                                               const mf_template_single_embedder_dims *d,
                                               bool dangle_feat, bool dparams)
{
    const int64_t T = n_templ, N = n_res, Cm = d->c_m, rows = T * N;
    mf_memsim_mark_t mark = mf_memsim_mark(s);
    /* mf_saved_view: an f32 copy of a bf16 activation */
    if (storage_dtype(s) == MF_BF16) mf_memsim_tensor(s, MF_MEM_WORK, MF_F32, rows * Cm);
    mf_memsim_tensor(s, MF_MEM_WORK, MF_F32, rows * Cm); /* dh */
    mf_plan_linear_backward(s, rows, Cm, Cm, true, dparams, dparams);
    if (dangle_feat || dparams) {
        mf_memsim_tensor(s, MF_MEM_WORK, MF_F32, rows * Cm); /* dpre */
        mf_plan_linear_backward(s, rows, d->angle_feat_dim, Cm, dangle_feat, dparams, dparams);
    }
    mf_memsim_release(s, mark);
}
