/* The memory model of one training step (train_step.h: mf_train_step_plan, mf_model_state_bytes):
 * the arena allocations of model/train_step.c's mf_train_step replayed in its order on a
 * simulated arena, composed of the module plans (embedders_memplan.h, evoformer_stack.h,
 * template_pointwise_attention.h, heads_memplan.h for the structure module, heads and loss), and
 * the model state's bytes from the parameter tables. */
#include <string.h>

#include "evoformer/evoformer_block.h"
#include "evoformer/evoformer_stack.h"
#include "evoformer/template_pair_block.h"
#include "model/alphafold_memplan.h"
#include "model/embedders_memplan.h"
#include "model/heads_memplan.h"
#include "model/train_step.h"
#include "model/train_step_state.h"

/* train_step.c keeps its state in a struct taken from the arena (mf_train_iteration's first
 * allocation): model/train_step_state.h, shared with it, so only its size is replayed. */
typedef mf_train_step_state train_state_layout;

mf_train_step_plan_options mf_train_step_plan_default_options(void)
{
    return (mf_train_step_plan_options){.gradients = true, .dropout = false, .resolution = -1.0f};
}

static void f32(mf_memsim *s, mf_mem_kind k, int64_t n)
{
    mf_memsim_tensor(s, k, MF_F32, n);
}

static void i32(mf_memsim *s, mf_mem_kind k, int64_t n)
{
    mf_memsim_tensor(s, k, MF_I32, n);
}

static int64_t slice_rows(const mf_memsim *s, int64_t rows)
{
    const int64_t c = s->policy.chunk_size;
    return c > 0 && c < rows ? c : rows;
}

/* train_step.c stack_saved: the block states of a stack (host structs from the host arena). */
static void plan_stack_saved(mf_memsim *s, int64_t num_blocks)
{
    if (num_blocks > 0)
        mf_memsim_alloc(s, MF_MEM_SAVED, sizeof(mf_evo_block_saved) * (size_t)num_blocks);
}

/* The sizes of the trained iteration, and the simulated arenas: the host's and the trunk's
 * (train_step.h trunk_ctx; the same simulator twice without one). */
typedef struct {
    const mf_alphafold_model *m;
    const mf_train_step_plan_options *o;
    int64_t N, S, E_run, T, Tr, recycle;
    bool extra_empty; /* no extra-MSA row: one fully masked row */
    mf_memsim_pair p;
} shape;

static bool split(const shape *x)
{
    return mf_memsim_pair_split(&x->p);
}

/* train_step.c up() and down(): a copy on the other side, none on one context */
static void up(const shape *x, mf_dtype dt, int64_t n)
{
    mf_memsim_pair_up(&x->p, dt, n);
}

static void down(const shape *x, int64_t n)
{
    if (split(x)) mf_memsim_tensor(x->p.host, MF_MEM_ACTS, MF_F32, n);
}

static mf_dropout_key stack_key(const shape *x, uint32_t stack)
{
    /* only whether each dropout is active decides an allocation, not the seed */
    return x->o->dropout ? mf_dropout_key_training(0, stack, (uint32_t)x->recycle)
                         : mf_dropout_key_inference();
}

/* mf_train_recycled_state: the outputs of `iterations` inference iterations (left allocated) or
 * AF2's zeros. */
static void plan_recycled_state(const shape *x, int64_t n_extra, int64_t iterations)
{
    const mf_alphafold_model *m = x->m;
    mf_memsim *s = x->p.host;
    const int64_t N = x->N, Cm = m->cfg.channels.c_m, Cz = m->cfg.channels.c_z;
    if (iterations <= 0) {
        f32(s, MF_MEM_ACTS, N * Cm);
        f32(s, MF_MEM_ACTS, N * N * Cz);
        f32(s, MF_MEM_ACTS, N * 37 * 3);
        return;
    }
    const mf_memplan_shape sh = {.n_res = N,
                                 .n_seq = x->S,
                                 .n_extra = n_extra,
                                 .n_templ = x->T,
                                 .iterations = iterations,
                                 .training = false,
                                 .all_heads = false};
    /* The inference's peak, then what mf_alphafold_inference leaves allocated for its caller
     * (alloc_outputs without the all_heads logits, the relative-position bins and the pair
     * mask), whether or not the inference plan itself keeps them. */
    mf_memsim_pair_mark mark = mf_memsim_pair_mark_both(&x->p);
    mf_alphafold_plan_inference_split(x->p.host, x->p.trunk, m, &sh);
    mf_memsim_pair_release(&x->p, mark);
    const mf_heads_dims *hd = &m->heads_dims;
    const int64_t L = m->sm_dims.num_layer, Cs = m->cfg.channels.c_s;
    f32(s, MF_MEM_ACTS, N * 37 * 3);
    f32(s, MF_MEM_ACTS, N * 37);
    f32(s, MF_MEM_ACTS, N * hd->plddt_num_bins);
    f32(s, MF_MEM_ACTS, N);
    if (m->pae_head) f32(s, MF_MEM_ACTS, N * N * hd->pae_num_bins);
    f32(s, MF_MEM_ACTS, N * Cs);
    f32(s, MF_MEM_ACTS, N * Cm);
    f32(s, MF_MEM_ACTS, L * N * 7);
    f32(s, MF_MEM_ACTS, L * N * 14 * 3);
    f32(s, MF_MEM_ACTS, L * N * MF_NUM_TORSIONS * 2);
    f32(s, MF_MEM_ACTS, N * Cs);
    f32(s, MF_MEM_ACTS, N * N * Cz);
    i32(s, MF_MEM_ACTS, N * N);
    f32(s, MF_MEM_ACTS, N * N);
}

/* ---- forward ------------------------------------------------------------------------------- */

static void plan_forward_embedders(const shape *x)
{
    const mf_alphafold_model *m = x->m;
    mf_memsim *h = x->p.host, *t = x->p.trunk;
    const int64_t N = x->N, S = x->S, Cm = m->input_dims.c_m, Cz = m->input_dims.c_z;
    i32(h, MF_MEM_ACTS, N * N); /* relpos bins */
    f32(h, MF_MEM_ACTS, N * N); /* pair mask */
    f32(h, MF_MEM_ACTS, N * 3); /* previous pseudo-beta */
    i32(h, MF_MEM_ACTS, N * N); /* recycling bins */
    /* the trunk's copies: bins, mask, recycled state, features */
    up(x, MF_I32, N * N);
    up(x, MF_F32, N * N);
    up(x, MF_I32, N * N);
    up(x, MF_F32, N * Cm);
    up(x, MF_F32, N * N * Cz);
    up(x, MF_F32, N * m->input_dims.target_feat_dim);
    up(x, MF_F32, S * N * m->input_dims.msa_feat_dim);
    if (!x->extra_empty) up(x, MF_F32, x->E_run * N);
    if (x->T > 0) up(x, MF_F32, x->T);
    f32(t, MF_MEM_ACTS, N * Cm);
    f32(t, MF_MEM_ACTS, N * N * Cz);
    mf_recycling_embedder_plan_forward(t, N, &m->recycling_dims, true, false);
    f32(t, MF_MEM_ACTS, (S + x->Tr) * N * Cm);
    mf_input_embedder_plan_forward(t, S, N, &m->input_dims, true, true);
    f32(h, MF_MEM_ACTS, (S + x->Tr) * N); /* MSA mask */
    up(x, MF_F32, (S + x->Tr) * N);
}

/* train_step.c template_embedding: the pair feature a slice of rows at a time on the host, each
 * slice sent up, and the embedder's forward or backward. */
static void plan_template_embedding(const shape *x, bool backward)
{
    const mf_alphafold_model *m = x->m;
    const int64_t N = x->N, F = m->template_pair_dims.pair_feat_dim;
    const int64_t cr = slice_rows(x->p.trunk, N);
    mf_memsim_pair_mark fm = mf_memsim_pair_mark_both(&x->p);
    f32(x->p.host, MF_MEM_WORK, cr * N * F);
    for (int64_t i0 = 0; i0 < N; i0 = mf_plan_next_slice(i0, N, cr)) {
        const int64_t c = N - i0 < cr ? N - i0 : cr;
        mf_memsim_mark_t um = mf_memsim_mark(x->p.trunk);
        up(x, MF_F32, c * N * F);
        if (backward)
            mf_template_pair_embedder_plan_backward(x->p.trunk, c, N, &m->template_pair_dims, false,
                                                    true);
        else
            mf_template_pair_embedder_plan_forward(x->p.trunk, c, N, &m->template_pair_dims, false,
                                                   false);
        if (split(x)) mf_memsim_release(x->p.trunk, um);
    }
    mf_memsim_pair_release(&x->p, fm);
}

static void plan_forward_templates(const shape *x)
{
    const mf_alphafold_model *m = x->m;
    mf_memsim *t = x->p.trunk;
    const int64_t N = x->N, T = x->T;
    if (T == 0) return;
    const int64_t Ct = m->template_pair_dims.c_t;
    f32(t, MF_MEM_ACTS, T * N * N * Ct);  /* pair stacks */
    f32(t, MF_MEM_SAVED, T * N * N * Ct); /* their output layer norms */
    f32(t, MF_MEM_SAVED, T * N * N);
    f32(t, MF_MEM_SAVED, T * N * N);
    mf_memsim_alloc(x->p.host, MF_MEM_SAVED, sizeof(mf_evo_stack_saved) * (size_t)T);
    mf_evo_block b;
    mf_template_pair_block_layout(&b, &m->template_stack_dims);
    for (int64_t k = 0; k < T; k++) {
        plan_template_embedding(x, false);
        plan_stack_saved(x->p.host, m->template_stack_blocks);
        if (m->template_stack_blocks > 0) {
            mf_dropout_key key = stack_key(x, MF_DROPOUT_STACK_TEMPLATE_PAIR);
            key.instance = (uint32_t)k;
            mf_evo_stack_plan_forward(t, &b, 0, N, m->template_stack_blocks, true, &key);
        }
    }
    f32(t, MF_MEM_ACTS, N * N * m->input_dims.c_z); /* z1 */
    mf_template_pointwise_attention_plan_forward(t, T, N, &m->template_pointwise_dims, true, false);
    if (x->Tr > 0) {
        f32(x->p.host, MF_MEM_SAVED, T * N * m->template_single_dims.angle_feat_dim);
        up(x, MF_F32, T * N * m->template_single_dims.angle_feat_dim);
        mf_template_single_embedder_plan_forward(t, T, N, &m->template_single_dims, true, false);
    }
}

/* train_step.c extra_feature: the 25-channel feature, zero-filled on the host, sent up. */
static void plan_extra_feature(const shape *x)
{
    const int64_t n = x->E_run * x->N * x->m->extra_msa_dims.extra_msa_feat_dim;
    f32(x->p.host, MF_MEM_WORK, n);
    up(x, MF_F32, n);
}

static void plan_forward_extra_msa(const shape *x)
{
    const mf_alphafold_model *m = x->m;
    mf_memsim *t = x->p.trunk;
    const int64_t N = x->N, E = x->E_run;
    f32(t, MF_MEM_ACTS, E * N * m->extra_msa_dims.c_e);
    if (x->extra_empty) f32(t, MF_MEM_ACTS, E * N); /* the padding row's mask */
    mf_memsim_pair_mark fm = mf_memsim_pair_mark_both(&x->p);
    plan_extra_feature(x);
    mf_extra_msa_embedder_plan_forward(t, E, N, &m->extra_msa_dims, false, false);
    mf_memsim_pair_release(&x->p, fm);
    plan_stack_saved(x->p.host, m->extra_stack_blocks);
    if (m->extra_stack_blocks > 0) {
        mf_evo_block b;
        mf_evoformer_block_layout(&b, &m->extra_stack_dims, true);
        const mf_dropout_key key = stack_key(x, MF_DROPOUT_STACK_EXTRA_MSA);
        mf_evo_stack_plan_forward(t, &b, E, N, m->extra_stack_blocks, true, &key);
    }
}

static void plan_forward_evoformer(const shape *x)
{
    const mf_alphafold_model *m = x->m;
    mf_memsim *t = x->p.trunk;
    const int64_t N = x->N;
    /* without recomputation the Evoformer gets its own copy of the extra-MSA stack's output */
    if (t->policy.recompute == MF_RECOMPUTE_OFF && m->extra_stack_blocks > 0)
        f32(t, MF_MEM_ACTS, N * N * m->cfg.channels.c_z);
    plan_stack_saved(x->p.host, m->evoformer_blocks);
    if (m->evoformer_blocks > 0) {
        mf_evo_block b;
        mf_evoformer_block_layout(&b, &m->evoformer_dims, false);
        const mf_dropout_key key = stack_key(x, MF_DROPOUT_STACK_EVOFORMER);
        mf_evo_stack_plan_forward(t, &b, x->S + x->Tr, N, m->evoformer_blocks, true, &key);
    }
    f32(t, MF_MEM_ACTS, N * m->cfg.channels.c_s); /* single */
    mf_plan_linear_forward(t, N, m->cfg.channels.c_m, m->cfg.channels.c_s, true, false);
    /* the host's copies of the pair, the single and the MSA's first rows */
    down(x, N * N * m->cfg.channels.c_z);
    down(x, N * m->cfg.channels.c_s);
    down(x, x->S * N * m->cfg.channels.c_m);
}

/* ---- backward ------------------------------------------------------------------------------ */

static void plan_backward(const shape *x, float resolution)
{
    const mf_alphafold_model *m = x->m;
    mf_memsim *h = x->p.host, *t = x->p.trunk;
    const int64_t N = x->N, S = x->S, T = x->T, Cz = m->cfg.channels.c_z;
    mf_train_plan_loss_backward(h, S, N, &m->sm_dims, &m->heads_dims, m->pae_head, &m->cfg,
                                resolution);
    f32(h, MF_MEM_ACTS, (S + x->Tr) * N * m->cfg.channels.c_m); /* dmsa */
    f32(h, MF_MEM_ACTS, N * N * Cz);                            /* dz */
    mf_train_plan_output_backward(h, S, N, m->cfg.channels.c_m, &m->sm_dims, &m->heads_dims,
                                  m->pae_head, x->o->dropout);
    up(x, MF_F32, (S + x->Tr) * N * m->cfg.channels.c_m);
    up(x, MF_F32, N * N * Cz);
    if (m->evoformer_blocks > 0) {
        mf_evo_block b;
        mf_evoformer_block_layout(&b, &m->evoformer_dims, false);
        const mf_dropout_key key = stack_key(x, MF_DROPOUT_STACK_EVOFORMER);
        mf_evo_stack_plan_backward(t, &b, S + x->Tr, N, m->evoformer_blocks, &key, true);
    }
    if (x->Tr > 0)
        mf_template_single_embedder_plan_backward(t, T, N, &m->template_single_dims, false, true);
    f32(t, MF_MEM_ACTS, x->E_run * N * m->extra_msa_dims.c_e); /* da */
    if (m->extra_stack_blocks > 0) {
        mf_evo_block b;
        mf_evoformer_block_layout(&b, &m->extra_stack_dims, true);
        const mf_dropout_key key = stack_key(x, MF_DROPOUT_STACK_EXTRA_MSA);
        mf_evo_stack_plan_backward(t, &b, x->E_run, N, m->extra_stack_blocks, &key, true);
    }
    {
        mf_memsim_pair_mark fm = mf_memsim_pair_mark_both(&x->p);
        plan_extra_feature(x);
        mf_extra_msa_embedder_plan_backward(t, x->E_run, N, &m->extra_msa_dims, false, true);
        mf_memsim_pair_release(&x->p, fm);
    }
    if (T > 0) {
        const int64_t Ct = m->template_pair_dims.c_t;
        f32(t, MF_MEM_ACTS, N * N * Cz);     /* dz0 */
        f32(t, MF_MEM_ACTS, T * N * N * Ct); /* dt_ln */
        mf_template_pointwise_attention_plan_backward(t, T, N, &m->template_pointwise_dims, true,
                                                      true, true);
        f32(t, MF_MEM_ACTS, N * N * Ct); /* one template's gradient at a time */
        mf_evo_block b;
        mf_template_pair_block_layout(&b, &m->template_stack_dims);
        for (int64_t k = T - 1; k >= 0; k--) {
            if (m->template_stack_blocks > 0) {
                mf_dropout_key key = stack_key(x, MF_DROPOUT_STACK_TEMPLATE_PAIR);
                key.instance = (uint32_t)k;
                mf_evo_stack_plan_backward(t, &b, 0, N, m->template_stack_blocks, &key, true);
            }
            plan_template_embedding(x, true);
        }
    }
    mf_input_embedder_plan_backward(t, S, N, &m->input_dims, true, true, false, false, true);
    mf_recycling_embedder_plan_backward(t, N, &m->recycling_dims, true, true, true);
}

/* ---- entry points -------------------------------------------------------------------------- */

void mf_train_step_plan_split(mf_memsim *host, mf_memsim *trunk, const mf_alphafold_model *m,
                              int64_t n_res, int64_t n_seq, int64_t n_extra, int64_t n_templ,
                              int64_t iterations, const mf_train_step_plan_options *opt)
{
    const mf_train_step_plan_options defaults = mf_train_step_plan_default_options();
    if (!opt) opt = &defaults;
    const int64_t n = iterations > 0 ? iterations : 1;
    const int64_t T = m->templates && n_templ > 0 ? n_templ : 0;
    const shape x = {.m = m,
                     .o = opt,
                     .N = n_res,
                     .S = n_seq,
                     .E_run = n_extra > 0 ? n_extra : 1,
                     .T = T,
                     .Tr = m->template_torsions ? T : 0,
                     .recycle = n - 1,
                     .extra_empty = n_extra <= 0,
                     .p = {host, trunk ? trunk : host}};
    float resolution = opt->resolution;
    if (resolution < 0) /* a resolution inside the pLDDT loss's filter */
        resolution =
            (float)(0.5 * (m->cfg.loss.plddt_min_resolution + m->cfg.loss.plddt_max_resolution));
    mf_memsim_pair_mark step = mf_memsim_pair_mark_both(&x.p);
    plan_recycled_state(&x, n_extra, n - 1);
    /* mf_train_iteration */
    mf_memsim_pair_mark it = mf_memsim_pair_mark_both(&x.p);
    mf_memsim_alloc(host, MF_MEM_ACTS, sizeof(train_state_layout));
    plan_forward_embedders(&x);
    plan_forward_templates(&x);
    plan_forward_extra_msa(&x);
    plan_forward_evoformer(&x);
    mf_train_plan_output_forward(host, x.S, x.N, &m->sm_dims, &m->heads_dims, m->pae_head,
                                 opt->dropout);
    mf_train_plan_loss(host, x.S, x.N, m->sm_dims.num_layer, &m->cfg);
    if (opt->gradients) plan_backward(&x, resolution);
    mf_memsim_pair_release(&x.p, it);
    mf_memsim_pair_release(&x.p, step);
}

void mf_train_step_plan(mf_memsim *s, const mf_alphafold_model *m, int64_t n_res, int64_t n_seq,
                        int64_t n_extra, int64_t n_templ, int64_t iterations,
                        const mf_train_step_plan_options *opt)
{
    mf_train_step_plan_split(s, s, m, n_res, n_seq, n_extra, n_templ, iterations, opt);
}

/* ---- model state ---------------------------------------------------------------------------- */

size_t mf_model_state_bytes(const mf_config *cfg, bool training)
{
    mf_param_expect_list l;
    mf_param_expect_list_init(&l);
    if (!cfg || mf_alphafold_expected_params(cfg, &l) != MF_OK) {
        mf_param_expect_list_free(&l);
        return 0;
    }
    size_t params = 0;
    int64_t total = 0;
    for (int i = 0; i < l.count; i++) {
        int64_t n = 1;
        for (int k = 0; k < l.items[i].ndim; k++) n *= l.items[i].shape[k];
        /* param_store.c adopt_array: one arena block per array, at least one byte */
        const size_t bytes = (size_t)n * sizeof(float);
        params += mf_mem_round(bytes ? bytes : 1);
        total += n;
    }
    mf_param_expect_list_free(&l);
    if (!training) return params;
    /* optimizer.c: the flat gradient buffer, Adam's m and v, the EMA copy */
    const size_t flat = (size_t)total * sizeof(float);
    return params + 4 * mf_mem_round(flat ? flat : 1);
}
