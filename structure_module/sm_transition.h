/* Structure-module transition (AF2 supplement Alg. 20 lines 8-9; fold_iteration/transition*):
 *   s_out = LayerNorm(s + Linear(relu(Linear(relu(Linear(s))))))
 * with the official names transition, transition_1, transition_2 ([c_s, c_s] weights, [c_s]
 * biases) and transition_layer_norm (scale, offset; eps 1e-5, haiku's default). AF2 applies
 * dropout (rate 0.1 in training) to the sum before the LayerNorm; that is left to the caller's
 * dropout policy and is not part of this op. Built from core/ops only, so it runs on any device. */
#ifndef MF_STRUCTURE_MODULE_SM_TRANSITION_H
#define MF_STRUCTURE_MODULE_SM_TRANSITION_H

#include "core/context.h"
#include "memopt/memplan.h"

#define MF_SM_TRANSITION_LN_EPS 1e-5f

typedef struct {
    mf_tensor transition_weights, transition_bias;     /* transition//weights, //bias */
    mf_tensor transition_1_weights, transition_1_bias; /* transition_1//... */
    mf_tensor transition_2_weights, transition_2_bias; /* transition_2//... */
    mf_tensor layer_norm_scale, layer_norm_offset;     /* transition_layer_norm//scale, offset */
} mf_sm_transition_params;

/* Activations kept for backward, allocated from ctx->arena by the forward pass (the caller owns
 * the arena mark): act1, act2 [N, c_s] after each ReLU (ReLU's derivative is read from its
 * output: positive exactly where its input is), pre_norm [N, c_s] (s + transition), mean,
 * rstd [N] of the LayerNorm. */
typedef struct {
    mf_tensor act1, act2, pre_norm, mean, rstd;
} mf_sm_transition_saved;

/* s_out [N, c_s] (may alias s when saved is NULL); s [N, c_s]. saved NULL: inference, every
 * transient released. */
mf_status mf_sm_transition_forward(mf_ctx *ctx, mf_tensor *s_out, mf_sm_transition_saved *saved,
                                   const mf_tensor *s, const mf_sm_transition_params *p);
/* Accumulates into ds [N, c_s] and every gradient of dp (a NULL dp or a field with data == NULL
 * is skipped); ds_out [N, c_s]; saved and s as the forward left them. Scratch from ctx->arena. */
mf_status mf_sm_transition_backward(mf_ctx *ctx, mf_tensor *ds, mf_sm_transition_params *dp,
                                    const mf_tensor *ds_out, const mf_sm_transition_saved *saved,
                                    const mf_tensor *s, const mf_sm_transition_params *p);

/* Memory-model plans (memopt/memplan.h; sm_transition_memplan.c): mf_sm_transition_forward
 * (saving: the saved tensors stay allocated) and mf_sm_transition_backward (ds: asked for;
 * dparams: every weight gradient, or none). */
void mf_sm_transition_plan_forward(mf_memsim *s, int64_t n_res, int64_t c_s, bool saving);
void mf_sm_transition_plan_backward(mf_memsim *s, int64_t n_res, int64_t c_s, bool ds,
                                    bool dparams);

#endif
