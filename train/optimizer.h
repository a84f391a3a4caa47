/* The optimizer of AlphaFold 2 training (suppl. 1.11.3): Adam with optax.adam's semantics, a linear
 * warm-up then step-decayed learning rate, global-norm gradient clipping, and an exponential moving
 * average (EMA) of the weights, over fp32 master weights.
 *
 * The parameters are the entries of a model/param_store.h store (the model's own tensors, updated
 * in place). Everything else lives in flat f32 buffers laid out in the store's order (entry i at
 * offset[i], numel[i] elements): the gradients (mf_grad_buffer), the Adam moments and the EMA
 * (mf_optimizer). One flat gradient buffer makes the data-parallel all-reduce one call
 * (train/allreduce.h), and the same layout on every rank makes it correct.
 *
 * Adam (optax.scale_by_adam, eps_root 0, then scale by -lr), for update number t = 1, 2, ...:
 *   m <- b1 m + (1 - b1) g            v <- b2 v + (1 - b2) g^2
 *   p <- p - lr(t - 1) * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)
 * eps is added to sqrt(v_hat) (not under the root). Each element is computed in double from its
 * f32 values and rounded once to f32, so the result is the same for any thread count.
 *
 * The learning rate after `count` applied updates (optax passes the count before the update):
 *   count < warmup_steps:           learning_rate * count / warmup_steps   (so update 1 uses 0)
 *   count < decay_start_step:       learning_rate
 *   otherwise:                      learning_rate * decay_factor^(1 + (count - decay_start_step)
 *                                                                  / decay_every_steps)
 * (AF2: 1e-3 after 1000 warm-up steps, x0.95 once 50k steps are done).
 *
 * EMA (decay d, AF2 0.999), after every applied update: ema <- ema - (1 - d) (ema - p); it starts
 * as a copy of the parameters at mf_optimizer_init.
 *
 * Skipped steps: when the loss or the gradients' global norm is not finite, the step changes
 * nothing (parameters, moments, EMA, update count), the skipped count goes up and the step's info
 * says why. The schedule follows applied updates only, as optax.apply_if_finite does.
 *
 * Host f32 now: the arithmetic is in per-range kernels (adam, EMA, squared-norm partials) so that a
 * CUDA twin can replace them; buffers from a CUDA arena are refused (MF_ERR_UNSUPPORTED) until
 * then.
 */
#ifndef MF_TRAIN_OPTIMIZER_H
#define MF_TRAIN_OPTIMIZER_H

#include <stdbool.h>
#include <stdint.h>

#include "core/status.h"
#include "memopt/arena.h"
#include "model/config.h"
#include "model/param_store.h"

/* The global norm sums squares in double over blocks of this many elements of the flat buffer (each
 * block in index order), then adds the block sums in block order: the same bits for any number of
 * threads, and a layout a GPU reduction can reproduce. */
#define MF_GRAD_NORM_BLOCK 4096

/* The flat layout of a parameter set: entry i of the store at [offset[i], offset[i] + numel[i]). */
typedef struct {
    int count;
    int64_t *numel;  /* [count] */
    int64_t *offset; /* [count] */
    int64_t total;   /* sum of numel */
} mf_param_layout;

mf_status mf_param_layout_init(mf_param_layout *l, const mf_param_store *params);
void mf_param_layout_free(mf_param_layout *l);
/* Same count and the same numel per entry; otherwise MF_ERR_INVALID naming the first difference. */
mf_status mf_param_layout_check(const mf_param_layout *a, const mf_param_layout *b,
                                const char *what);

/* Gradients of a parameter set: one flat f32 buffer and a store of views into it under the
 * parameters' names and shapes (`views`), so a module's backward binds its d-parameters with
 * mf_param_store_bind exactly as its forward binds the parameters, and accumulates into them. */
typedef struct {
    mf_param_layout layout;
    float *data;           /* [layout.total] */
    mf_param_store views;  /* names and shapes of the parameters, data in `data` */
    double *norm_partials; /* [ceil(total / MF_GRAD_NORM_BLOCK)] scratch of the global norm */
    bool owned;            /* data malloc'd (else from an arena) */
} mf_grad_buffer;

/* arena NULL: malloc'd (freed by mf_grad_buffer_free); else from the host arena under "grads".
 * Zero-filled. */
mf_status mf_grad_buffer_init(mf_grad_buffer *g, const mf_param_store *params, mf_arena *arena);
void mf_grad_buffer_free(mf_grad_buffer *g);
void mf_grad_buffer_zero(mf_grad_buffer *g);

/* sqrt(sum of g^2) over the whole buffer in double, in the fixed order of MF_GRAD_NORM_BLOCK.
 * Non-finite elements give a non-finite norm. */
double mf_grad_global_norm(mf_grad_buffer *g);

/* Global-norm clipping (optax.clip_by_global_norm): when norm > clip_norm, g <- g * (clip_norm /
 * norm), each element in double and rounded once; when the norm is not finite nothing is scaled,
 * so the non-finite values reach the optimizer, which skips the step.
 * clip_norm <= 0 disables clipping. *norm (may be NULL) gets the norm before clipping, *scale (may
 * be NULL) the factor applied (1 when none). */
void mf_grad_clip_global_norm(mf_grad_buffer *g, double clip_norm, double *norm, double *scale);

/* Where the step clips. AF2 clips each example's gradient before the mini-batch mean (the comment
 * of model/config.c, suppl. 1.11.3): the trainer then calls mf_grad_clip_global_norm on each
 * example's buffer and uses MF_CLIP_NONE here. MF_CLIP_IN_STEP clips the gradient the step
 * receives (the mean), as OpenFold does. */
typedef enum { MF_CLIP_IN_STEP = 0, MF_CLIP_NONE = 1 } mf_clip_mode;

typedef struct {
    mf_optimizer_config cfg; /* copy of cfg->optimizer */
    mf_clip_mode clip_mode;
    const mf_param_store *params; /* not owned; must not change count or shapes after init */
    mf_param_layout layout;
    float **param;   /* [count] the store's tensors' data (fp32 master weights) */
    float *adam_m;   /* [total] first moment (optax mu) */
    float *adam_v;   /* [total] second moment (optax nu) */
    float *ema;      /* [total] */
    int64_t step;    /* applied updates (optax's count) */
    int64_t skipped; /* steps skipped for a non-finite loss or gradient norm */
    bool owned;      /* buffers malloc'd (else from an arena) */
} mf_optimizer;

/* Moments zero, EMA = the current parameters, counts 0. The store's tensors must be host f32.
 * arena NULL: malloc'd; else from the host arena under "adam_m", "adam_v", "ema". */
mf_status mf_optimizer_init(mf_optimizer *opt, const mf_param_store *params,
                            const mf_optimizer_config *cfg, mf_clip_mode clip_mode,
                            mf_arena *arena);
void mf_optimizer_free(mf_optimizer *opt);

/* The learning rate after `count` applied updates (formula above). */
double mf_lr_schedule(const mf_optimizer_config *cfg, int64_t count);

typedef struct {
    bool skipped;
    const char *skip_reason; /* "non-finite loss" or "non-finite gradient norm"; NULL if applied */
    double lr;               /* the rate of this update (the scheduled rate when skipped) */
    double grad_norm;        /* global norm of the gradient the step received, before clipping */
    double clip_scale;       /* factor the step applied (1 without clipping) */
    int64_t step;            /* applied updates after this call */
    int64_t skipped_total;   /* skipped steps after this call */
} mf_optimizer_step_info;

/* One optimizer step with the averaged gradients g (same layout as the parameters; clipped in place
 * when clip_mode is MF_CLIP_IN_STEP) and the step's loss (used for the finiteness check only).
 * A skipped step returns MF_OK with info->skipped set; errors are for misuse (layout mismatch). */
mf_status mf_optimizer_step(mf_optimizer *opt, mf_grad_buffer *g, double loss,
                            mf_optimizer_step_info *info);

/* Views of the optimizer's state under the parameters' names and shapes (for checkpoints and
 * inspection): which is "adam_m", "adam_v" or "ema". *out is initialised by the call; free it with
 * mf_param_store_free (the data stays the optimizer's). */
mf_status mf_optimizer_state_views(const mf_optimizer *opt, const char *which, mf_param_store *out);

/* Copies the EMA into the parameters (for evaluation or export of the averaged weights; the caller
 * keeps a copy if training continues). */
void mf_optimizer_copy_ema_to_params(const mf_optimizer *opt);

#endif
