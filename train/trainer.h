/* The training loop of `memfold train` (suppl. 1.11): samples from the data loader, one training
 * step per example (model/train_step.h), per-example gradient clipping, the mean over the step's
 * examples and ranks, Adam with the schedule and the EMA (train/optimizer.h), the step log
 * (train/train_log.h), validation with the EMA weights, and checkpoints with exact resume
 * (train/checkpoint.h).
 *
 * One step, on every rank (E = batch * micro_batches examples per rank, W ranks, G = E W):
 *   for each of the rank's E examples, global sample k = K + rank E + i (K = the run's sample
 *   counter; the loader's sample (k / chains, k mod chains), a pure function of the seed and k):
 *     the gradient buffer is zeroed, mf_train_step runs the example (the recycling count R was
 *     drawn by the pipeline from the sample's seed, uniform in 1..num_recycle+1 as AF2 trains;
 *     the gradient flows through the last iteration only; AF2 dropout on with the seed
 *     derived from (seed, k)), its gradient is clipped to optimizer.clip_global_norm (AF2 clips
 *     each example before the mean) and summed into the step's gradient;
 *   the sum is divided by E (micro-batch mean), then averaged over the ranks (MPI all-reduce);
 *   the loss terms are averaged the same way (sums in double);
 *   Adam + EMA update; a non-finite loss or gradient norm on any rank skips the step on every rank
 *   (parameters, moments and EMA untouched; counted and logged).
 * The run's sample counter advances by G per step, skipped or not.
 *
 * Determinism: every random choice is a pure function of (seed, k) (samples, recycling count,
 * dropout masks) or of the seed (initial parameters), and the CPU step is deterministic, so a
 * run resumed from a checkpoint (parameters, Adam moments, EMA, step counts, seed, sample counter)
 * reproduces the uninterrupted run's log bit for bit (except the wall-clock fields).
 *
 * Files in run_dir (rank 0 writes them; other ranks only read the checkpoint on resume):
 *   config.json            the configuration of the run
 *   log.jsonl, log.csv     one record per step (train/train_log.h); term columns: the loss terms
 *                          of the model (AF2 names), unscaled_loss, recycles (mean iterations of
 *                          the step's examples), val_lddt_ca and val_plddt (mean over the
 *                          validation chains, NaN on steps without validation)
 *   ckpt-<step>.h5         checkpoints (train/checkpoint.h); rng_counters[0] = the sample counter
 *                          K, [1] = G, [2] = dropout on (1) / off (0)
 *   params.h5              the EMA weights when the run completes (memfold predict --params,
 *                          with --config run_dir/config.json for the structure-module layers)
 *
 * Signals: SIGINT/SIGTERM set a flag (train/checkpoint.h); after the current step the loop
 * writes a checkpoint and returns with result->signal set. */
#ifndef MF_TRAIN_TRAINER_H
#define MF_TRAIN_TRAINER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "core/context.h"
#include "core/status.h"
#include "train/allreduce.h"

#define MF_TRAINER_MAX_SETS 64

typedef struct {
    const char *data_path; /* raw feature file (memfold featurize) with structures */
    const char *val_path;  /* raw feature file for validation, or NULL */
    const char *run_dir;
    /* Preset or JSON file. NULL: inferred from init_params' shapes (af2-initial otherwise), or
     * "tiny" without init_params. */
    const char *config;
    const char *sets[MF_TRAINER_MAX_SETS]; /* "key=value" overrides, in order */
    int n_sets;
    int64_t structure_layers; /* > 0: structure_module.num_layers */
    const char *init_params;  /* .npz or memfold HDF5 parameters; NULL: AF2 random init */
    int64_t total_steps;      /* the run's total step count (a resumed run stops there too) */
    int64_t checkpoint_every; /* <= 0: only at the end and on a signal */
    int keep;                 /* checkpoints kept (<= 0: all) */
    bool resume;              /* continue from the newest valid checkpoint of run_dir */
    uint64_t seed;
    bool seed_set;         /* false: 0 for a new run, the checkpoint's on resume */
    int64_t batch;         /* examples per rank per micro-batch; <= 0: from the config */
    int64_t micro_batches; /* accumulated per step; <= 0: 1 */
    int64_t val_every;     /* <= 0: validation only at the end (when val_path is set) */
    bool dropout;          /* AF2 training dropout with the config's rates (default on) */
    bool prefetch;         /* the next step's samples on a background thread (default on) */
    size_t arena_bytes;    /* activation arena reservation */
    /* The trunk on another context (mf_train_step_options.trunk_ctx; `--device cuda`: a GPU's,
     * made by the caller, whose arena must be empty): its forward and backward there, the
     * structure module, heads, losses and the optimizer on the host; the trunk's mirror of the
     * parameters is refreshed after every optimizer step, its gradients merged into the host
     * buffer after every example. Offload (memory.offload) keeps the trunk's checkpoints in the
     * host arena. Its policy is set to the run's. NULL: everything on the host. */
    mf_ctx *trunk_ctx;
    bool chunk_auto; /* per-module chunks from the memory model within mem_budget_gib */
    double mem_budget_gib;
    int64_t progress_every; /* progress line every N steps when stderr is not a terminal */
    /* Testing aid: make the gradient of rank 0's first example non-finite at this step (1-based;
     * 0: never), to exercise the skipped-step path. */
    int64_t inject_nan_step;
    FILE *out; /* messages (rank 0); NULL: stdout */
} mf_trainer_options;

mf_trainer_options mf_trainer_default_options(void);

typedef struct {
    int64_t start_step;      /* step the run started from (0, or the checkpoint's) */
    int64_t step;            /* steps completed when the call returned */
    int64_t skipped;         /* skipped steps in total */
    int signal;              /* the signal that stopped the run, 0 when it completed */
    double last_loss;        /* mean total loss of the last step */
    double last_val_lddt_ca; /* NaN when no validation ran */
    char checkpoint[4096];   /* the last checkpoint written or resumed from ("" when none) */
} mf_trainer_result;

/* Runs (or resumes) the training. dist: the process group (one rank without MPI). Every rank
 * calls it with the same options. */
mf_status mf_trainer_run(const mf_trainer_options *o, const mf_dist *dist, mf_trainer_result *res);

#endif
