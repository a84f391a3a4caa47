/* Fully masked softmax rows in the attention backward (mf_attention_backward on the CPU, its CUDA
 * twin and the reference).
 *
 * The mask term of a logit is 1e9 (mask - 1) (AF2's). A row whose keys are all masked therefore
 * has every logit at -1e9 in f32, where the spacing is 64 and scale q.k + bias (of ordinary
 * size) is lost: the forward's softmax is uniform, 1/K, as in AF2. Its saved log-sum-exp,
 * -1e9 + log K, rounds back to -1e9, so the probability the backward recomputes, exp(logit - lse),
 * would be 1 for every key: K times too large, and with it dq, dk, dv and dbias of that row.
 * Such a row is recognised by an lse far below any ordinary row's (MF_ATTN_MASKED_LSE) from which
 * log K is lost (lse + log K == lse: true in f32 at -1e9, false in f64, where the recomputation
 * is right as it is), and its recomputed probabilities are scaled by 1/K. (Were scale q.k + bias
 * of 32 or more beside a fully masked row, the f32 logits would differ by multiples of 64 and the
 * forward would not be uniform either; AlphaFold 2's logits are nowhere near that.) */
#ifndef MF_CORE_ATTENTION_MASK_H
#define MF_CORE_ATTENTION_MASK_H

#include <math.h>
#include <stdint.h>

#include "core/dtype.h"

/* Any row with an unmasked key has an lse of the size of its logits, far above this. */
#define MF_ATTN_MASKED_LSE (-1e8f)

/* The factor of exp(logit - lse) in a row of K keys: 1/K for a fully masked f32 row, else 1. */
static inline MF_HOSTDEV float mf_attn_masked_scale(float lse, int64_t K)
{
    return lse < MF_ATTN_MASKED_LSE && K > 1 && lse + logf((float)K) == lse ? 1.0f / (float)K
                                                                            : 1.0f;
}

#endif
