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
static void plan_embed_inputs(const mf_memsim_pair *p, const mf_alphafold_model *m, int64_t N,
                              int64_t S)
{
    mf_memsim_pair_mark mark = mf_memsim_pair_mark_both(p);
    f32(p->host, MF_MEM_WORK, N * 3);
    mf_memsim_tensor(p->host, MF_MEM_WORK, MF_I32, N * N);
    mf_memsim_pair_up(p, MF_I32, N * N);
    f32(p->trunk, MF_MEM_WORK, N * m->input_dims.c_m);
    mf_recycling_embedder_plan_forward(p->trunk, N, &m->recycling_dims, false, false);
    mf_memsim_pair_up(p, MF_F32, N * m->input_dims.target_feat_dim);
    mf_memsim_pair_up(p, MF_F32, S * N * m->input_dims.msa_feat_dim);
    mf_input_embedder_plan_forward(p->trunk, S, N, &m->input_dims, false, true);
    mf_memsim_pair_release(p, mark);
}

/* embed_templates (the slices of rows as slice_rows) */
static void plan_templates(const mf_memsim_pair *p, const mf_alphafold_model *m, int64_t N,
                           int64_t T)
{
    mf_memsim *t_ = p->trunk;
    const int64_t Ct = m->template_pair_dims.c_t, F = m->template_pair_dims.pair_feat_dim;
    const int64_t c = t_->policy.chunk_size, cr = c > 0 && c < N ? c : N;
    mf_memsim_pair_mark mark = mf_memsim_pair_mark_both(p);
    f32(t_, MF_MEM_ACTS, T * N * N * Ct);
    for (int64_t t = 0; t < T; t++) {
        mf_memsim_pair_mark fm = mf_memsim_pair_mark_both(p);
        f32(p->host, MF_MEM_WORK, cr * N * F);
        for (int64_t i0 = 0; i0 < N; i0 = mf_plan_next_slice(i0, N, cr)) {
            const int64_t rows = N - i0 < cr ? N - i0 : cr;
            mf_memsim_mark_t um = mf_memsim_mark(t_);
            mf_memsim_pair_up(p, MF_F32, rows * N * F);
            mf_template_pair_embedder_plan_forward(t_, rows, N, &m->template_pair_dims, false,
                                                   false);
            if (mf_memsim_pair_split(p)) mf_memsim_release(t_, um);
        }
        mf_memsim_pair_release(p, fm);
        if (m->template_stack_blocks > 0)
            mf_template_pair_stack_plan_forward(t_, N, &m->template_stack_dims,
                                                m->template_stack_blocks, false);
    }
    mf_memsim_pair_up(p, MF_F32, T);
    mf_template_pointwise_attention_plan_forward(t_, T, N, &m->template_pointwise_dims, false,
                                                 true);
    mf_memsim_pair_release(p, mark);
    if (m->template_torsions) {
        f32(p->host, MF_MEM_WORK, T * N * m->template_single_dims.angle_feat_dim);
        mf_memsim_pair_up(p, MF_F32, T * N * m->template_single_dims.angle_feat_dim);
        mf_template_single_embedder_plan_forward(t_, T, N, &m->template_single_dims, false, false);
    }
    mf_memsim_pair_release(p, mark);
}

/* extra_msa */
static void plan_extra_msa(const mf_memsim_pair *p, const mf_alphafold_model *m, int64_t N,
                           int64_t E0)
{
    const int64_t E = E0 > 0 ? E0 : 1;
    mf_memsim_pair_mark mark = mf_memsim_pair_mark_both(p);
    f32(p->trunk, MF_MEM_ACTS, E * N * m->extra_msa_dims.c_e);
    if (E0 > 0)
        mf_memsim_pair_up(p, MF_F32, E * N);
    else
        f32(p->trunk, MF_MEM_ACTS, E * N);
    mf_memsim_pair_mark fm = mf_memsim_pair_mark_both(p);
    f32(p->host, MF_MEM_WORK, E * N * m->extra_msa_dims.extra_msa_feat_dim);
    mf_memsim_pair_up(p, MF_F32, E * N * m->extra_msa_dims.extra_msa_feat_dim);
    mf_extra_msa_embedder_plan_forward(p->trunk, E, N, &m->extra_msa_dims, false, false);
    mf_memsim_pair_release(p, fm);
    if (m->extra_stack_blocks > 0)
        mf_extra_msa_stack_plan_forward(p->trunk, E, N, &m->extra_stack_dims, m->extra_stack_blocks,
                                        false);
    mf_memsim_pair_release(p, mark);
}

void mf_alphafold_plan_inference_split(mf_memsim *host, mf_memsim *trunk,
                                       const mf_alphafold_model *m, const mf_memplan_shape *sh)
{
    const mf_memsim_pair p = {host, trunk ? trunk : host};
    const int64_t N = sh->n_res, S = sh->n_seq;
    const int64_t T = m->templates ? sh->n_templ : 0, Tr = m->template_torsions ? T : 0;
    const mf_heads_dims *hd = &m->heads_dims;
    plan_outputs(host, m, sh);
    const mf_memsim_pair_mark start = mf_memsim_pair_mark_both(&p);
    if (mf_memsim_pair_split(
            &p)) { /* the pair, the recycled first row and the single on the trunk */
        f32(p.trunk, MF_MEM_ACTS, N * N * m->cfg.channels.c_z);
        f32(p.trunk, MF_MEM_ACTS, N * m->cfg.channels.c_m);
        f32(p.trunk, MF_MEM_ACTS, N * m->cfg.channels.c_s);
    }
    mf_memsim_tensor(host, MF_MEM_ACTS, MF_I32, N * N); /* relpos bins */
    f32(host, MF_MEM_ACTS, N * N);                      /* pair mask */
    mf_memsim_pair_up(&p, MF_I32, N * N);
    mf_memsim_pair_up(&p, MF_F32, N * N);
    for (int64_t r = 0; r < sh->iterations; r++) {
        const bool last = r == sh->iterations - 1;
        const mf_memsim_pair_mark im = mf_memsim_pair_mark_both(&p);
        f32(p.trunk, MF_MEM_ACTS, (S + Tr) * N * m->input_dims.c_m);
        f32(host, MF_MEM_ACTS, (S + Tr) * N);
        mf_memsim_pair_up(&p, MF_F32, (S + Tr) * N);
        plan_embed_inputs(&p, m, N, S);
        if (T > 0) plan_templates(&p, m, N, T);
        plan_extra_msa(&p, m, N, sh->n_extra);
        for (int64_t k = 0; k < m->evoformer_blocks; k++)
            mf_evoformer_block_plan_forward(p.trunk, S + Tr, N, &m->evoformer_dims, false);
        mf_plan_linear_forward(p.trunk, N, m->cfg.channels.c_m, m->cfg.channels.c_s, true, false);
        mf_structure_module_plan_forward(host, N, &m->sm_dims, false);
        if (last) /* on a trunk context the MSA's first rows come down for two heads */
            mf_heads_plan_inference(host, S, N, hd, sh->all_heads, m->pae_head,
                                    mf_memsim_pair_split(&p) ? S * N * m->input_dims.c_m : 0);
        mf_memsim_pair_release(&p, im);
    }
    /* the outputs, the relative-position bins and the pair mask stay for the caller (on one
     * context); the trunk's arena ends where it began */
    if (mf_memsim_pair_split(&p)) mf_memsim_release(p.trunk, start.trunk);
}

void mf_alphafold_plan_inference(mf_memsim *s, const mf_alphafold_model *m,
                                 const mf_memplan_shape *sh)
{
    mf_alphafold_plan_inference_split(s, s, m, sh);
}
