/* Shared dropout of the Evoformer, extra-MSA and template pair stacks (AF2 supplement 1.11.6;
 * AlphaFold 2's dropout_wrapper / apply_dropout in modules.py): a residual update x [A0, A1, C]
 * is multiplied by keep / (1 - rate), keep ~ Bernoulli(1 - rate), with one mask shared along an
 * axis ("shared_dropout"):
 *   row-wise (orientation per_row, broadcast_dim 0): mask [A1, C], the same for every a0;
 *   column-wise (per_column, broadcast_dim 1):       mask [A0, C], the same for every a1.
 * AF2's rates: 0.15 on the MSA row attention, 0.25 on the four triangle updates (the ending-node
 * attention column-wise, the others row-wise), 0 elsewhere; off at inference.
 *
 * The masks come from the counter-based generator (core/rng.h): element (a, c) of a mask is a pure
 * function of (seed, stream, a * C + c), and the stream encodes (stack, instance, block, module,
 * recycling iteration). A block recomputed in backward therefore regenerates bitwise the masks
 * of its forward pass, the backward applies the same mask to the upstream gradient, and a
 * double-precision run (the finite-difference oracle) draws the same keep decisions as f32.
 * Nothing is stored: a mask is [A, C], drawn when needed into arena scratch.
 *
 * Mask generation runs on the host: CPU contexts only for now (a CUDA context is
 * MF_ERR_UNSUPPORTED until core/ops.h has a device op that fills a tensor from the Philox
 * stream). */
#ifndef MF_EVOFORMER_DROPOUT_H
#define MF_EVOFORMER_DROPOUT_H

#include <stdbool.h>
#include <stdint.h>

#include "core/context.h"
#include "memopt/memplan.h"

typedef enum {
    MF_DROPOUT_ROWWISE = 0,    /* mask shared along axis 0 (AF2 per_row) */
    MF_DROPOUT_COLUMNWISE = 1, /* mask shared along axis 1 (AF2 per_column) */
} mf_dropout_orientation;

/* Which stack a block belongs to (part of the random stream). */
enum {
    MF_DROPOUT_STACK_EVOFORMER = 1,
    MF_DROPOUT_STACK_EXTRA_MSA = 2,
    MF_DROPOUT_STACK_TEMPLATE_PAIR = 3,
};

/* Which residual update inside a block (part of the random stream). */
enum {
    MF_DROPOUT_MSA_ROW_ATTENTION = 1,
    MF_DROPOUT_MSA_COLUMN_ATTENTION = 2,
    MF_DROPOUT_TRIANGLE_MULTIPLICATION_OUTGOING = 3,
    MF_DROPOUT_TRIANGLE_MULTIPLICATION_INCOMING = 4,
    MF_DROPOUT_TRIANGLE_ATTENTION_STARTING_NODE = 5,
    MF_DROPOUT_TRIANGLE_ATTENTION_ENDING_NODE = 6,
    MF_DROPOUT_MSA_TRANSITION = 7,
    MF_DROPOUT_OUTER_PRODUCT_MEAN = 8,
    MF_DROPOUT_PAIR_TRANSITION = 9,
};

/* Where a block's masks come from. training false (inference) turns dropout off whatever the
 * rates. seed should change from one training step to the next (the trainer derives it from its
 * own seed and the step); the stacks set `block`. */
typedef struct {
    bool training;
    uint64_t seed;
    uint32_t stack;    /* MF_DROPOUT_STACK_* */
    uint32_t instance; /* template index in the template pair stack, sample in a batch; else 0 */
    uint32_t block;    /* block index within its stack */
    uint32_t recycle;  /* recycling iteration */
} mf_dropout_key;

/* Inference: dropout off. */
mf_dropout_key mf_dropout_key_inference(void);
/* Training masks under `seed` for blocks of `stack` in recycling iteration `recycle`. */
mf_dropout_key mf_dropout_key_training(uint64_t seed, uint32_t stack, uint32_t recycle);

/* Whether a residual update with this rate is dropped out (training and rate > 0). */
bool mf_dropout_active(const mf_dropout_key *key, double rate);
/* The Philox stream of one module's mask: stack, module, recycle, instance and block packed into
 * 8, 8, 16, 16 and 16 bits. */
uint64_t mf_dropout_stream(const mf_dropout_key *key, uint32_t module);

/* mask [A, C] (f32 or f64, host memory): element (a, c) = 1 / (1 - rate) when the 24-bit uniform
 * of index a * C + c is below 1 - rate, else 0. rate in [0, 1). */
mf_status mf_dropout_mask(mf_ctx *ctx, mf_tensor *mask, double rate, uint64_t seed,
                          uint64_t stream);
/* x [A0, A1, C] *= mask broadcast per orientation: row-wise mask [A1, C], column-wise [A0, C]. */
mf_status mf_dropout_apply(mf_ctx *ctx, mf_tensor *x, const mf_tensor *mask,
                           mf_dropout_orientation orientation);
/* Draws module `module`'s mask for x under key (arena scratch, released before returning) and
 * applies it; nothing happens unless mf_dropout_active(key, rate). The same call on the upstream
 * gradient is the backward. */
mf_status mf_dropout_forward(mf_ctx *ctx, mf_tensor *x, double rate,
                             mf_dropout_orientation orientation, const mf_dropout_key *key,
                             uint32_t module);

/* Memory model (memopt/memplan.h): mf_dropout_forward on an f32 x [a0, a1, c] takes its mask
 * [a1 or a0, c] as arena scratch when the dropout is active. */
void mf_dropout_plan_forward(mf_memsim *s, int64_t a0, int64_t a1, int64_t c, double rate,
                             mf_dropout_orientation orientation, const mf_dropout_key *key);

#endif
