/* The replay of mf_alphafold_inference (model/alphafold.c), in its order: the outputs, the
 * masks, then per iteration the MSA representation, the embedders, the templates, the extra MSA
 * stack, the Evoformer, the structure module and (last iteration) the heads. */
#include "model/alphafold_memplan.h"

#include "evoformer/evoformer_stack.h"
#include "model/embedders_memplan.h"
#include "model/heads_memplan.h"
#include "structure_module/structure_module.h"

static void f32(mf_memsim *s, mf_mem_kind k, int64_t n)
{
    mf_memsim_tensor(s, k, MF_F32, n);
}

/* alloc_outputs */
static void plan_outputs(mf_memsim *s, const mf_alphafold_model *m, const mf_memplan_shape *sh)
{
    const int64_t N = sh->n_res, S = sh->n_seq, L = m->sm_dims.num_layer;
    const mf_heads_dims *hd = &m->heads_dims;
    f32(s, MF_MEM_ACTS, N * 37 * 3);
    f32(s, MF_MEM_ACTS, N * 37);
    f32(s, MF_MEM_ACTS, N * hd->plddt_num_bins);
    f32(s, MF_MEM_ACTS, N);
    if (sh->all_heads) {
        f32(s, MF_MEM_ACTS, N * N * hd->distogram_num_bins);
        f32(s, MF_MEM_ACTS, S * N * hd->masked_msa_num_output);
        f32(s, MF_MEM_ACTS, N * hd->experimentally_resolved_num_output);
    }
    if (m->pae_head) f32(s, MF_MEM_ACTS, N * N * hd->pae_num_bins);
    f32(s, MF_MEM_ACTS, N * m->cfg.channels.c_s);
    f32(s, MF_MEM_ACTS, N * m->cfg.channels.c_m);
    f32(s, MF_MEM_ACTS, L * N * 7);
    f32(s, MF_MEM_ACTS, L * N * 14 * 3);
    f32(s, MF_MEM_ACTS, L * N * MF_NUM_TORSIONS * 2);
    f32(s, MF_MEM_ACTS, N * m->cfg.channels.c_s);
    f32(s, MF_MEM_ACTS, N * N * m->cfg.channels.c_z);
}

/* embed_inputs */
static void plan_embed_inputs(mf_memsim *s, const mf_alphafold_model *m, int64_t N, int64_t S)
{
    mf_memsim_mark_t mark = mf_memsim_mark(s);
    f32(s, MF_MEM_WORK, N * 3);
    mf_memsim_tensor(s, MF_MEM_WORK, MF_I32, N * N);
    f32(s, MF_MEM_WORK, N * m->input_dims.c_m);
    mf_recycling_embedder_plan_forward(s, N, &m->recycling_dims, false, false);
    mf_input_embedder_plan_forward(s, S, N, &m->input_dims, false, true);
    mf_memsim_release(s, mark);
}

/* embed_templates (the slices of rows as slice_rows) */
static void plan_templates(mf_memsim *s, const mf_alphafold_model *m, int64_t N, int64_t T)
{
    const int64_t Ct = m->template_pair_dims.c_t, F = m->template_pair_dims.pair_feat_dim;
    const int64_t c = s->policy.chunk_size, cr = c > 0 && c < N ? c : N;
    mf_memsim_mark_t mark = mf_memsim_mark(s);
    f32(s, MF_MEM_ACTS, T * N * N * Ct);
    for (int64_t t = 0; t < T; t++) {
        mf_memsim_mark_t fm = mf_memsim_mark(s);
        f32(s, MF_MEM_WORK, cr * N * F);
        for (int64_t i0 = 0; i0 < N; i0 = mf_plan_next_slice(i0, N, cr)) {
            const int64_t rows = N - i0 < cr ? N - i0 : cr;
            mf_template_pair_embedder_plan_forward(s, rows, N, &m->template_pair_dims, false,
                                                   false);
        }
        mf_memsim_release(s, fm);
        if (m->template_stack_blocks > 0)
            mf_template_pair_stack_plan_forward(s, N, &m->template_stack_dims,
                                                m->template_stack_blocks, false);
    }
    mf_template_pointwise_attention_plan_forward(s, T, N, &m->template_pointwise_dims, false, true);
    mf_memsim_release(s, mark);
    if (m->template_torsions) {
        f32(s, MF_MEM_WORK, T * N * m->template_single_dims.angle_feat_dim);
        mf_template_single_embedder_plan_forward(s, T, N, &m->template_single_dims, false, false);
    }
    mf_memsim_release(s, mark);
}

/* extra_msa */
static void plan_extra_msa(mf_memsim *s, const mf_alphafold_model *m, int64_t N, int64_t E0)
{
    const int64_t E = E0 > 0 ? E0 : 1;
    mf_memsim_mark_t mark = mf_memsim_mark(s);
    f32(s, MF_MEM_ACTS, E * N * m->extra_msa_dims.c_e);
    if (E0 == 0) f32(s, MF_MEM_ACTS, E * N);
    mf_memsim_mark_t fm = mf_memsim_mark(s);
    f32(s, MF_MEM_WORK, E * N * m->extra_msa_dims.extra_msa_feat_dim);
    mf_extra_msa_embedder_plan_forward(s, E, N, &m->extra_msa_dims, false, false);
    mf_memsim_release(s, fm);
    if (m->extra_stack_blocks > 0)
        mf_extra_msa_stack_plan_forward(s, E, N, &m->extra_stack_dims, m->extra_stack_blocks,
                                        false);
    mf_memsim_release(s, mark);
}

void mf_alphafold_plan_inference(mf_memsim *s, const mf_alphafold_model *m,
                                 const mf_memplan_shape *sh)
{
    const int64_t N = sh->n_res, S = sh->n_seq;
    const int64_t T = m->templates ? sh->n_templ : 0, Tr = m->template_torsions ? T : 0;
    plan_outputs(s, m, sh);
    mf_memsim_tensor(s, MF_MEM_ACTS, MF_I32, N * N); /* relpos bins */
    f32(s, MF_MEM_ACTS, N * N);                      /* pair mask */
    for (int64_t r = 0; r < sh->iterations; r++) {
        const bool last = r == sh->iterations - 1;
        mf_memsim_mark_t im = mf_memsim_mark(s);
        f32(s, MF_MEM_ACTS, (S + Tr) * N * m->input_dims.c_m);
        f32(s, MF_MEM_ACTS, (S + Tr) * N);
        plan_embed_inputs(s, m, N, S);
        if (T > 0) plan_templates(s, m, N, T);
        plan_extra_msa(s, m, N, sh->n_extra);
        for (int64_t k = 0; k < m->evoformer_blocks; k++)
            mf_evoformer_block_plan_forward(s, S + Tr, N, &m->evoformer_dims, false);
        mf_plan_linear_forward(s, N, m->cfg.channels.c_m, m->cfg.channels.c_s, true, false);
        mf_structure_module_plan_forward(s, N, &m->sm_dims, false);
        if (last) mf_heads_plan_inference(s, S, N, &m->heads_dims, sh->all_heads, m->pae_head);
        mf_memsim_release(s, im);
    }
    /* the outputs, the relative-position bins and the pair mask stay for the caller */
}
