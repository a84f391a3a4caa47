/* One deterministic AlphaFold 2 training step of one sample: the forward pass with recycling, the
 * loss (model/loss.h) and the backward to every parameter (supplement 1.10-1.11; AF2 modules.py
 * AlphaFold with is_training, the reference of shared/testvectors/train_expected.h5):
 *
 *  - Recycling: iterations 0 .. R-2 run as inference (mf_alphafold_inference, no gradient, no
 *    dropout); their recycled outputs (first MSA row, pair, final atom positions) enter the last
 *    iteration as constants (AF2's stop_gradient between iterations).
 *  - The last iteration R-1 (per-iteration features of slice mod R_file) runs every module
 *    with saved activations in the order of model/alphafold.h: recycling and input embedders,
 *    templates (pair feature, template pair stack, output layer norm, pointwise attention; torsion
 *    rows appended to the MSA), extra-MSA embedder and stack, Evoformer stack, single projection,
 *    structure module, then the distogram, masked-MSA, experimentally-resolved, pLDDT (and, for pTM
 *    models, aligned-error) heads; the loss on the same iteration's labels.
 *  - The backward runs the same modules in reverse from d loss/total and ACCUMULATES into the
 *    gradient model `g`: an mf_alphafold_model bound to tensors of the parameters' shapes (for
 *    training, mf_alphafold_bind(g, &m->cfg, &grad_buffer.views) with train/optimizer.h's flat
 *    buffer; stacked blocks keep their block axis). Every parameter gets its gradient (those the
 *    loss does not reach get zeros added).
 *
 * Determinism: no dropout unless opt->dropout (then AF2's training dropout in the last iteration,
 * masks from the counter-based generator under opt->dropout_seed, so recomputation reproduces
 * them; the earlier iterations run without it, where AF2 applies it too: they carry no gradient,
 * only their recycled values differ); the same inputs give the same bits on the CPU.
 *
 * Memory policy (ctx->policy) reaches every module: recompute (block / every:K) applies to the
 * Evoformer, extra-MSA and template pair stacks (checkpoints) and to the structure module's layers;
 * chunk_size slices the earlier (inference) iterations, the recomputing stacks' forward-only
 * passes, IPA and the angle resnet, and the template pair feature with its embedder; storage = bf16
 * keeps saved activations and checkpoints in bf16. On the reference step (tests/test_train_step.c):
 * recompute block and every:K give bitwise the loss and gradients of recompute off; chunking
 * changes summation orders (the earlier iterations' global column attention, weight gradients
 * summed over slices): gradients within 3.2e-5 of each array's largest value; bf16 storage leaves
 * the forward in f32 (the loss bitwise) and rounds what the backward reads (median 1.6e-3).
 * The trained iteration keeps copies only where a module's backward needs an input the next
 * module overwrites: the pair before the templates' update (the pointwise attention's queries)
 * and, without recomputation, the extra-MSA stack's output pair (the Evoformer stack runs in
 * place on its own copy). The extra-MSA and template pair features are rebuilt for the backward
 * instead of kept.
 *
 * Precision: the model's tensors decide: all f32, or all f64 (the finite-difference oracle; the
 * earlier iterations then cannot run, so mf_train_iteration is given the recycled state). CPU
 * context only (the structure module, the feature construction and the losses run on the host).
 * Everything comes from ctx->arena; after the call the arena is back at its mark. */
#ifndef MF_MODEL_TRAIN_STEP_H
#define MF_MODEL_TRAIN_STEP_H

#include <stdbool.h>
#include <stdint.h>

#include "eval/compare.h"
#include "memopt/memplan.h"
#include "model/alphafold.h"
#include "model/loss.h"

typedef struct {
    int64_t num_iterations; /* <= 0: the features' recycling axis R; the last one is trained */
    bool dropout;           /* AF2 training dropout (the config's rates) in the trained iteration */
    uint64_t dropout_seed;
    /* Finite-difference oracle only (mf_train_iteration with g == NULL): the structure module
     * takes the quaternions its layers hand on from this chain [L + 1, N, 4] (a forward's
     * mf_train_step_outputs.quat) through mf_structure_module_forward_frozen, which makes AF2's
     * stop-gradient between layers explicit. NULL: the plain forward. */
    const mf_tensor *frozen_quat;
    /* The trunk on another context (NULL: everything on ctx; f32 only). The embedders, the
     * template and extra-MSA stacks, the Evoformer and the single projection's forward run on
     * trunk_ctx (a GPU's) with trunk_model (the network bound to a mirror of the parameters on
     * that device), with their saved activations in its arena; their backward accumulates into
     * trunk_grads (bound to gradient tensors on that device; the caller adds them to its host
     * gradients). The structure module, the heads, the losses and their backward (and the single
     * projection's backward, into g) run on ctx with the host parameters; the pair, the single and
     * the MSA's first rows come down after the Evoformer, their gradients go up. The same ops in
     * the same order: on a second CPU context the loss and g + trunk_grads are bitwise those of
     * the single-context step. The earlier (recycling) iterations use the trunk as well. */
    mf_ctx *trunk_ctx;
    const mf_alphafold_model *trunk_model;
    mf_alphafold_model *trunk_grads;
} mf_train_step_options;

mf_train_step_options mf_train_step_default_options(void);

/* The trained iteration's recycled inputs (constants), in the model's dtype. */
typedef struct {
    mf_tensor m1_prev; /* [N, c_m] first MSA row after the previous Evoformer */
    mf_tensor z_prev;  /* [N, N, c_z] pair after the previous Evoformer */
    mf_tensor x_prev;  /* [N, 37, 3] previous final atom positions (Angstrom) */
} mf_recycled_state;

/* Host copies of the trained iteration's structure outputs (AF2 train outputs), written when
 * data != NULL: f32 or f64 tensors of the shapes given (L = structure layers). */
typedef struct {
    mf_tensor final_atom_positions; /* [N, 37, 3] */
    mf_tensor frames;               /* [L, N, 7] */
    mf_tensor positions;            /* [L, N, 14, 3] */
    mf_tensor quat;                 /* [L + 1, N, 4] the structure module's quaternion chain */
} mf_train_step_outputs;

enum {
    MF_TRAIN_STAGE_RECYCLE = 0, /* iterations 0 .. R-2 (inference) */
    MF_TRAIN_STAGE_FORWARD,     /* the trained iteration's forward */
    MF_TRAIN_STAGE_LOSS,
    MF_TRAIN_STAGE_BACKWARD,
    MF_TRAIN_NUM_STAGES
};
const char *mf_train_stage_name(int stage); /* "recycle", "forward", "loss", "backward" */

typedef struct {
    mf_loss_values loss;           /* with the features' use_clamped_fape */
    mf_loss_values loss_unclamped; /* the same outputs with use_clamped_fape = 0 (no gradient) */
    float use_clamped_fape;        /* the features' value, used by `loss` */
    int64_t num_iterations;        /* iterations run, the trained one included */
    double stage_seconds[MF_TRAIN_NUM_STAGES];
    size_t arena_peak; /* arena bytes above the caller's usage at the call (high-water mark) */
    size_t trunk_arena_peak; /* the same for the trunk context's arena (0 without one) */
} mf_train_step_result;

/* Runs `iterations` inference iterations (mf_alphafold_inference; 0: AF2's zeros) and returns the
 * recycled state as arena tensors (f32), left allocated on ctx->arena for the caller to release. */
mf_status mf_train_recycled_state(mf_ctx *ctx, const mf_alphafold_model *m,
                                  const mf_processed_features *f, int64_t iterations,
                                  mf_recycled_state *out);

/* The trained iteration alone: forward with saved activations from `prev`, the loss with the
 * labels of per-iteration slice `slice`, and (g != NULL) the backward accumulated into g.
 * recycle_index numbers the iteration for the dropout streams. g == NULL is the forward and loss
 * only (the finite-difference oracle). Sets res->loss, loss_unclamped and use_clamped_fape, adds
 * to res->stage_seconds[FORWARD, LOSS, BACKWARD]; leaves the other fields as they are. */
mf_status mf_train_iteration(mf_ctx *ctx, const mf_alphafold_model *m, mf_alphafold_model *g,
                             const mf_processed_features *f, int64_t slice, int64_t recycle_index,
                             const mf_recycled_state *prev, const mf_train_step_options *opt,
                             mf_train_step_result *res, mf_train_step_outputs *outs);

/* After a step with a trunk context (mf_train_step_options.trunk_grads bound to `trunk`, a store
 * on the trunk's device with the names and order of `host`, e.g. mf_param_store_mirror of a
 * zeroed gradient store): host += trunk for every parameter, then trunk is zeroed for the next
 * step. scratch: a host arena for one parameter's copy at a time (back at its mark after). */
mf_status mf_train_merge_trunk_grads(mf_param_store *trunk, mf_param_store *host,
                                     mf_arena *scratch);

/* The trunk's side of training on another context: mirrors of the host parameters and of the
 * (zeroed) host gradient views in that context's arena, the network bound to each
 * (mf_train_step_options.trunk_model = &model, trunk_grads = &grad_model;
 * mf_train_merge_trunk_grads(&grads, ...) after each step). Large (two bound networks): allocate
 * it. */
typedef struct {
    mf_param_store params, grads;
    mf_alphafold_model model, grad_model;
    mf_arena *arena;
    mf_arena_mark_t mark; /* the arena where mf_train_trunk_init found it */
} mf_train_trunk;

/* t: zeroed (calloc). On an error t holds what was made: mf_train_trunk_free it. */
mf_status mf_train_trunk_init(mf_train_trunk *t, mf_arena *arena, const mf_config *cfg,
                              const mf_param_store *params, const mf_param_store *grads);
/* The stores' views freed and the arena back at its mark (NULL: nothing). */
void mf_train_trunk_free(mf_train_trunk *t);

/* The whole step: mf_train_recycled_state for iterations 0 .. n-2, then mf_train_iteration on
 * slice (n-1) mod R. outs may be NULL. f32 models only. Restarts the arena's peak accounting
 * (mf_arena_reset_peak) to measure res->arena_peak. */
mf_status mf_train_step(mf_ctx *ctx, const mf_alphafold_model *m, mf_alphafold_model *g,
                        const mf_processed_features *f, const mf_train_step_options *opt,
                        mf_train_step_result *res, mf_train_step_outputs *outs);

/* ---- memory model (memopt/memplan.h; train_step_memplan.c) --------------------------------- */

typedef struct {
    bool gradients;   /* the backward runs (mf_train_step with g != NULL) */
    bool dropout;     /* mf_train_step_options.dropout (only whether each dropout is active
                         decides an allocation) */
    float resolution; /* the sample's: whether the pLDDT loss's backward takes scratch; < 0: one
                         inside cfg's pLDDT resolution filter */
} mf_train_step_plan_options;

/* Gradients, no dropout, a resolution inside the filter. */
mf_train_step_plan_options mf_train_step_plan_default_options(void);

/* mf_train_step replayed on a simulated arena under s->policy: `iterations` iterations (the
 * features' recycling count; the first iterations - 1 as mf_alphafold_inference, the last one
 * trained: forward with saved activations, both losses, backward to every parameter) of a sample
 * with n_res residues, n_seq MSA clusters, n_extra extra-MSA rows (0: the one masked padding row)
 * and n_templ templates (ignored when m has templates disabled). m: dims only
 * (mf_alphafold_model_dims from a configuration, or a bound model). Leaves s->cur where it was;
 * s->peak - s->cur (on a fresh simulator: s->peak) is what mf_train_step reports as
 * res->arena_peak. opt NULL: mf_train_step_plan_default_options(). */
void mf_train_step_plan(mf_memsim *s, const mf_alphafold_model *m, int64_t n_res, int64_t n_seq,
                        int64_t n_extra, int64_t n_templ, int64_t iterations,
                        const mf_train_step_plan_options *opt);
/* The same with the trunk on another context (mf_train_step_options.trunk_ctx): the host's
 * allocations on host, the trunk's on trunk (its policy decides the trunk's chunks and
 * recomputation); trunk NULL or host: mf_train_step_plan. */
void mf_train_step_plan_split(mf_memsim *host, mf_memsim *trunk, const mf_alphafold_model *m,
                              int64_t n_res, int64_t n_seq, int64_t n_extra, int64_t n_templ,
                              int64_t iterations, const mf_train_step_plan_options *opt);

/* The model state's bytes as model/param_store.c (parameters loaded into an arena: one block per
 * array) and train/optimizer.c (with training: the flat gradient buffer, Adam's m and v and the
 * EMA copy) allocate them in an arena, from cfg's parameter tables. 0 for an invalid cfg. */
size_t mf_model_state_bytes(const mf_config *cfg, bool training);

/* ---- dump and check (train_step_io.c) ------------------------------------------------------ */

#define MF_TRAIN_STEP_FORMAT         "memfold-train-step"
#define MF_TRAIN_STEP_SCHEMA_VERSION 1
/* shared/testvectors README: loss terms and train outputs 1e-4, gradients 1e-3 (max|c - r| /
 * max|r|; the exactly-zero gradients absolutely against grads.attrs["grad_scale"]). */
#define MF_TRAIN_CHECK_RTOL_LOSS 1e-4
#define MF_TRAIN_CHECK_RTOL_GRAD 1e-3

/* Whether a parameter's gradient is exactly zero in exact arithmetic (a per-head constant added to
 * softmax logits): the offset of msa_row_attention_with_pair_bias/feat_2d_norm and IPA's
 * attention_2d bias. Such gradients are compared absolutely. */
bool mf_train_grad_is_exactly_zero(const char *af2_name);

/* Writes the step in train_expected.h5's layout, atomically: loss/<term>, unscaled_loss, total
 * (f32 scalars; attributes weights (JSON), total_scale, use_clamped_fape), loss_unclamped/ the
 * same, grads/<AF2 name with '/' -> '|'> for every entry of `grads` (attributes af2_name and
 * compare = relative | absolute; the group's grad_scale = the largest |gradient|), and
 * train_outputs/final_atom_positions, sm/frames, sm/positions when outs has them. grads: host f32
 * (the gradient buffer's views). */
mf_status mf_train_step_dump_write(const char *path, const mf_train_step_result *res,
                                   const mf_param_store *grads, const mf_train_step_outputs *outs);

typedef struct {
    char name[200];
    mf_compare_result result;
} mf_train_check_item;

typedef struct {
    int count, cap, failed;
    mf_train_check_item *items;                  /* malloc'd */
    double worst_loss, worst_grad, worst_output; /* largest max-rel error of each kind */
} mf_train_check_report;

void mf_train_check_report_free(mf_train_check_report *r);

/* Compares this step with a reference file of train_expected.h5's layout: every dataset of its
 * loss/ and loss_unclamped/ (1e-4), grads/ (1e-3; compare = absolute datasets against the group's
 * grad_scale) and train_outputs/ (1e-4), one item each; a reference dataset this run lacks and a
 * gradient of this run the reference lacks fail. *report is initialised by the call. */
mf_status mf_train_step_check(const char *ref_path, const mf_train_step_result *res,
                              const mf_param_store *grads, const mf_train_step_outputs *outs,
                              mf_train_check_report *report);

#endif
