/* The memory model of a whole AlphaFold 2 run (memopt/memplan.h): inference as
 * mf_alphafold_inference runs it, and one training step as mf_train_step runs it, from a
 * configuration, the sequence lengths and a memory policy alone.
 *
 * What is counted, and where it lives:
 *  - the activation arena's high-water mark (the replay of the run's allocations: live
 *    activations, saved activations and checkpoints, transient workspaces) — the number
 *    `memfold predict` / `memfold train-step` report as "arena peak", which the tests hold the
 *    model against;
 *  - the model state: parameters, and for training their gradients, Adam's two moments and the
 *    EMA copy (one array each, sized from the parameter tables);
 *  - the input features of one example (host arrays, sized from the feature shapes);
 *  - on CUDA, cuBLAS's fixed workspace.
 * total = arena peak + state + features + fixed.
 *
 * On CUDA the run is the one `--device cuda` makes: the trunk (embedders, stacks, Evoformer) on
 * the GPU, the structure module, heads, losses and the optimizer on the host
 * (mf_alphafold_options.trunk_ctx, mf_train_step_options.trunk_ctx). arena_peak and total are then
 * the GPU's: its arena, the parameters' mirror (and for training the trunk's gradients), cuBLAS's
 * workspace; host_arena_peak and host_total the host's: its arena (with the offloaded checkpoints
 * under policy.offload), the model state, the features. */
#ifndef MF_MODEL_MEMPLAN_MODEL_H
#define MF_MODEL_MEMPLAN_MODEL_H

#include <stdio.h>

#include "data/processed.h"
#include "memopt/memplan.h"
#include "model/config.h"

typedef struct {
    int64_t n_res;      /* residues (the crop in training) */
    int64_t n_seq;      /* MSA cluster rows */
    int64_t n_extra;    /* extra MSA rows (0: AF2's one masked row) */
    int64_t n_templ;    /* templates (0 without; ignored when templates are disabled) */
    int64_t iterations; /* recycling iterations (inference: num_recycle + 1; training: the
                           iterations of the step, the last one trained) */
    bool training;
    bool all_heads; /* inference: distogram, masked-MSA and experimentally-resolved logits too */
    bool dropout;   /* training: AF2's dropout on (memfold train), off (memfold train-step) */
} mf_memplan_shape;

typedef struct {
    size_t arena_peak;                  /* activation arena high-water mark */
    size_t kind_at_peak[MF_MEM_NKINDS]; /* its composition at the peak */
    size_t state_bytes;                 /* parameters (+ gradients, Adam moments, EMA) */
    size_t param_bytes;
    size_t feature_bytes; /* one example's input features */
    size_t fixed_bytes;   /* device workspace outside arenas */
    size_t total;
    int64_t num_params;
    size_t host_arena_peak, host_total; /* on CUDA: the host's side (0 on the CPU) */
} mf_memplan_result;

/* The shape a configuration implies for n_res residues: N_seq, N_extra and N_templ from
 * cfg->data, iterations num_recycle + 1 for inference and 1 for training. */
mf_memplan_shape mf_memplan_default_shape(const mf_config *cfg, int64_t n_res, bool training);

/* The shape of one processed sample (data/processed.h): N_res, MSA rows, extra rows, templates
 * (0 when cfg disables them); iterations: the run's, or <= 0 for the features' recycling axis. */
mf_memplan_shape mf_memplan_shape_of_features(const mf_config *cfg, const mf_processed_features *f,
                                              bool training, int64_t iterations);

/* The largest training sample of a raw feature file (memfold featurize) under cfg, as the
 * data loader and the training pipeline make it: the crop of the longest chain, the cluster and
 * extra rows (padded to the config's sizes when the pipeline pads), its templates, and
 * num_recycle + 1 iterations (the most a step runs); dropout on. */
mf_status mf_memplan_training_shape(const char *data_path, const mf_config *cfg,
                                    mf_memplan_shape *out);

/* Replays the run. query_ctx: a CPU context for matrix-product workspace queries (NULL: those
 * count 0). The policy is p (cfg->memory is not consulted). */
mf_status mf_memplan_evaluate(const mf_ctx *query_ctx, const mf_config *cfg, const mf_policy *p,
                              mf_device device, const mf_memplan_shape *shape,
                              mf_memplan_result *out);

/* The largest n_res whose total fits budget bytes (shape's other fields kept; n_res searched
 * in [1, limit]); 0 when even one residue does not fit. */
mf_status mf_memplan_max_nres(const mf_ctx *query_ctx, const mf_config *cfg, const mf_policy *p,
                              mf_device device, const mf_memplan_shape *shape, size_t budget,
                              int64_t limit, int64_t *n_max, mf_memplan_result *at_max);

/* --chunk auto: chooses p->chunk_size and p->op_chunk (one chunk size per Evoformer-family
 * module) so that the predicted total stays within budget bytes: each module gets the largest
 * of off, 4096, 2048, ..., 2, 1 rows that fits while every other module runs at its smallest
 * (the modules' transients occur at different times, so the choices combine), then the whole
 * choice is checked and tightened until it fits. Prints each choice and the predicted arena peak
 * to report (NULL: quiet).
 * MF_ERR_NOMEM naming the predicted total when even the smallest chunks do not fit. */
mf_status mf_memplan_auto_chunk(const mf_ctx *query_ctx, const mf_config *cfg, mf_policy *p,
                                mf_device device, const mf_memplan_shape *shape, size_t budget,
                                FILE *report);

#endif
