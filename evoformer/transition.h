/* Transition: the MSA transition (AF2 supplement Alg. 9) and the pair transition (Alg. 15), one
 * module (AlphaFold 2's `Transition`) with channels c and widening factor n:
 *   update = Linear_{n*c -> c}(relu(Linear_{c -> n*c}(LayerNorm(x))))
 * with the official names input_layer_norm (eps 1e-5, AF2's LayerNorm default), transition1,
 * transition2. AlphaFold 2 receives a mask here but does not use it, and neither does this module
 * (the reference vectors are unmasked). The output is the update; the caller adds the residual.
 *
 * x is [n0, ..., c] (2 to 4 dims: [N_seq, N_res, c_m] or [N_res, N_res, c_z]); rows along dim 0
 * (sequences, or residue rows i) are processed ctx->policy.chunk_size at a time, so the hidden
 * activation is never held whole at inference. Every chunk size gives the same outputs and input
 * gradients (each row's arithmetic is the same); weight gradients are sums over chunks and agree
 * within f32 rounding. Built from core/ops only, so it runs on any backend; scratch has the
 * input's dtype. */
#ifndef MF_EVOFORMER_TRANSITION_H
#define MF_EVOFORMER_TRANSITION_H

#include <stdbool.h>

#include "core/context.h"
#include "memopt/memplan.h"
#include "model/params.h"

#define MF_TRANSITION_LN_EPS 1e-5f

typedef struct {
    int64_t c;      /* c_m (Alg. 9) or c_z (Alg. 15) */
    int64_t factor; /* n, num_intermediate_factor (4 in AlphaFold 2) */
} mf_transition_dims;

typedef struct {
#define MF_PARAM MF_PARAM_FIELD
#include "evoformer/transition.def"
#undef MF_PARAM
} mf_transition_params;

/* Fills out (when not NULL) with the specs in field order; returns their count. */
int mf_transition_param_specs(const mf_transition_dims *d, mf_param_spec *out);

/* Kept for backward, from ctx->arena (the caller releases it after backward): the ReLU output
 * [rows, n*c] in the policy's storage precision (bf16 or the input's dtype; f64 runs keep f64). The
 * layer norm is recomputed from x in backward (cheap, and bitwise the forward's). */
typedef struct {
    mf_tensor hidden;
} mf_transition_saved;

/* out (shaped like x): the update, written, or added when accumulate. saved NULL: inference,
 * nothing kept, transients of one chunk only. */
mf_status mf_transition_forward(mf_ctx *ctx, mf_tensor *out, bool accumulate,
                                mf_transition_saved *saved, const mf_tensor *x,
                                const mf_transition_params *p, const mf_transition_dims *d);
/* Accumulates into dx (shaped like x; NULL: not computed) and every dp field whose data is not
 * NULL (dp may be NULL); dout shaped like x. */
mf_status mf_transition_backward(mf_ctx *ctx, mf_tensor *dx, mf_transition_params *dp,
                                 const mf_tensor *dout, const mf_transition_saved *saved,
                                 const mf_tensor *x, const mf_transition_params *p,
                                 const mf_transition_dims *d);

/* Memory model (memopt/memplan.h): the arena allocations of mf_transition_forward/_backward on f32
 * activations under s->policy, for x [n0, per0, c] (n0: the chunked leading dim, per0: the
 * product of the dims between it and c; 1 for a 2-D x). Forward with saving leaves the saved
 * hidden allocated (MF_MEM_SAVED); the backward leaves the simulated arena as it found it. dx,
 * dparams: whether dx and the parameter gradients (all of them) are asked for. */
void mf_transition_plan_forward(mf_memsim *s, int64_t n0, int64_t per0, const mf_transition_dims *d,
                                bool saving, bool accumulate);
void mf_transition_plan_backward(mf_memsim *s, int64_t n0, int64_t per0,
                                 const mf_transition_dims *d, bool dx, bool dparams);

#endif
