/* The MSA attention modules of AlphaFold 2, forward and backward, built from core/ops only:
 *   msa_row_attention_with_pair_bias (Alg. 7), msa_column_attention (Alg. 8) and the extra-MSA
 *   stack's msa_column_global_attention (Alg. 19),
 * plus the pieces the triangle attention modules share with them (the pair bias of Alg. 7 lines
 * 3-4 / Alg. 13 line 4, the view of a module's "attention//" weights as mf_attention_params).
 *
 * Every forward writes the module's UPDATE (residual not added) into `out`, or adds it when
 * `accumulate`. Layer norms are haiku's (eps 1e-5, biased variance). Masks follow AF2: a masked
 * key gets the logit bias -1e9 (the ops add 1e9 (mask - 1); the same softmax as AF2's
 * where(mask, logits, -1e9) unless every key of a query is masked, and then both are uniform).
 *
 * Inference (saved == NULL) keeps nothing and processes slices of ctx->policy.chunk_size rows:
 * MSA rows for the row attention, residue columns for the column attention (the gated attention
 * op's batch slices of the column-major copy), sequence rows for the global attention; each
 * chunk size gives bitwise the same update for Alg. 7 and 8 (only row counts change), and the
 * same within f32 rounding for Alg. 19 (its masked mean sums over the sequence chunks). At
 * inference `out` may be the input m itself with accumulate = true (policy.inplace): every
 * slice reads only its own rows of m before writing them (Alg. 7), or m is read whole into a copy
 * first (Alg. 8, 19: their slices span every MSA row).
 *
 * Memory: the column attention needs m column-major ([N_res, N_seq, c]); without a strided copy
 * op that copy, and the column-major update, are whole ([N_seq, N_res, c_m] each) while the
 * hidden activations (q, k, v, gate, logits) are chunked.
 *
 * Training (saved != NULL) allocates its saved tensors from ctx->arena; the caller takes a mark
 * before the forward and releases it after the backward. The gated attention op keeps q, k, v,
 * gate, o in ctx->policy.storage precision. The layer-normed input it attends over (its q_x) is
 * kept in the input's dtype: the op reads it in f32 and allocates its own saved activations
 * above it, so it would stay allocated until release anyway. */
#ifndef MF_EVOFORMER_MSA_ATTENTION_H
#define MF_EVOFORMER_MSA_ATTENTION_H

#include <stdbool.h>

#include "core/context.h"
#include "core/ops.h"
#include "memopt/memplan.h"
#include "model/params.h"

#define MF_EVO_ATTENTION_LN_EPS 1e-5f

/* glorot_uniform (AF2's attention query/key/value init) over haiku's fans of an [in, h, c]
 * array: fan_in = in * h, fan_out = in * c (dims before the last two multiply both). The table's
 * MF_INIT_GLOROT uses fan_in + last dim, so fan_in is stated such that the sum is in * (h + c). */
#define MF_AF2_GLOROT_FAN_IN(in, h, c) ((in) * (h) + (in) * (c) - (c))

/* ---- shared by the attention modules --------------------------------------------------------- */

/* The gated attention op's view of a module's "attention//" weights (fields attention_query_w,
 * attention_key_w, attention_value_w, attention_gating_w, attention_gating_b, attention_output_w,
 * attention_output_b); p must not be NULL (a zero mf_attention_params stands for "no weight
 * gradients"). */
#define MF_EVO_ATTENTION_VIEW(p)                                                                   \
    ((mf_attention_params){(p)->attention_query_w, (p)->attention_key_w, (p)->attention_value_w,   \
                           (p)->attention_gating_w, (p)->attention_gating_b,                       \
                           (p)->attention_output_w, (p)->attention_output_b, true})

/* Checks that params (n tensors in spec order) have the specs' shapes and dtype dt, naming the
 * module and the parameter. */
mf_status mf_evo_check_params(const char *module, const mf_param_spec *specs, int n,
                              const mf_tensor *params, mf_dtype dt);
/* Checks t's dtype, ndim and dims, naming the module and tensor. */
mf_status mf_evo_expect(const char *module, const mf_tensor *t, const char *name, mf_dtype dt,
                        int ndim, const int64_t *shape);
/* Rows per slice: ctx->policy.chunk_size when chunking splits n, else n (at least 1). */
int64_t mf_evo_slice_rows(const mf_ctx *ctx, int64_t n);
/* The dtype of saved activations of an input of dtype dt: bf16 when the policy stores bf16 and
 * dt is f32, else dt. */
mf_dtype mf_evo_storage_dtype(const mf_ctx *ctx, mf_dtype dt);

/* y *= alpha in place. The ops take float scalars; in an f64 run alpha is applied as its float
 * part plus the float of the remainder (y * hi + y * lo through an arena copy), so the double
 * oracle scales by alpha to double precision (c^-1/2 as a float is off by up to 3e-8). */
mf_status mf_evo_scale(mf_ctx *ctx, mf_tensor *y, double alpha);

/* The pair bias of Alg. 7 lines 3-4 and Alg. 13 lines 1, 4:
 *   bias[h, i, j] = sum_c LayerNorm(z)[i, j, c] * w[c, h]
 * z [N, N2, c]; w [c, H]; bias [H, N, N2] (overwritten). norm_scale/norm_offset NULL: z is already
 * normalised. Rows i of z are processed ctx->policy.chunk_size at a time (the normalised pair
 * representation is never whole); one [N*N2, H] transient holds the bias before its transpose. */
mf_status mf_evo_pair_bias_forward(mf_ctx *ctx, mf_tensor *bias, const mf_tensor *z,
                                   const mf_tensor *norm_scale, const mf_tensor *norm_offset,
                                   const mf_tensor *w);
/* Accumulates into dz, dnorm_scale, dnorm_offset, dw (any may be NULL); the layer norm is
 * recomputed from z slice by slice. dbias [H, N, N2]. */
mf_status mf_evo_pair_bias_backward(mf_ctx *ctx, mf_tensor *dz, mf_tensor *dnorm_scale,
                                    mf_tensor *dnorm_offset, mf_tensor *dw, const mf_tensor *dbias,
                                    const mf_tensor *z, const mf_tensor *norm_scale,
                                    const mf_tensor *norm_offset, const mf_tensor *w);

/* ---- Alg. 7: MSA row-wise gated self-attention with pair bias -------------------------------- */

typedef struct {
    int64_t c_m, c_z;  /* MSA and pair channels */
    int64_t num_heads; /* H */
    int64_t c_hidden;  /* channels per head */
} mf_msa_row_attention_dims;

typedef struct {
#define MF_PARAM MF_PARAM_FIELD
#include "evoformer/msa_row_attention_with_pair_bias.def"
#undef MF_PARAM
} mf_msa_row_attention_params;

int mf_msa_row_attention_param_specs(const mf_msa_row_attention_dims *d, mf_param_spec *out);

/* x = query_norm(m) [N_seq, N_res, c_m] (input dtype), its mean/rstd [N_seq * N_res], the pair
 * bias [H, N_res, N_res] (input dtype) and the gated attention op's saved activations. */
typedef struct {
    mf_tensor x, mean, rstd, bias;
    mf_attention_saved attn;
} mf_msa_row_attention_saved;

/* out, m [N_seq, N_res, c_m]; z [N_res, N_res, c_z]; msa_mask [N_seq, N_res]. */
mf_status mf_msa_row_attention_with_pair_bias_forward(mf_ctx *ctx, mf_tensor *out, bool accumulate,
                                                      mf_msa_row_attention_saved *saved,
                                                      const mf_tensor *m, const mf_tensor *z,
                                                      const mf_tensor *msa_mask,
                                                      const mf_msa_row_attention_params *p,
                                                      const mf_msa_row_attention_dims *d);
/* Accumulates into dm, dz (either may be NULL) and every dp field with data (dp may be NULL). */
mf_status mf_msa_row_attention_with_pair_bias_backward(
    mf_ctx *ctx, mf_tensor *dm, mf_tensor *dz, mf_msa_row_attention_params *dp,
    const mf_tensor *dout, const mf_msa_row_attention_saved *saved, const mf_tensor *m,
    const mf_tensor *z, const mf_tensor *msa_mask, const mf_msa_row_attention_params *p,
    const mf_msa_row_attention_dims *d);

/* ---- Alg. 8: MSA column-wise gated self-attention -------------------------------------------- */

typedef struct {
    int64_t c_m, num_heads, c_hidden;
} mf_msa_column_attention_dims;

typedef struct {
#define MF_PARAM MF_PARAM_FIELD
#include "evoformer/msa_column_attention.def"
#undef MF_PARAM
} mf_msa_column_attention_params;

int mf_msa_column_attention_param_specs(const mf_msa_column_attention_dims *d, mf_param_spec *out);

/* mean/rstd [N_seq * N_res] of query_norm in m's order; x = query_norm(m) column-major
 * [N_res, N_seq, c_m] and mask_t = msa_mask^T [N_res, N_seq] (input dtype); scratch
 * [N_res, N_seq, c_m]: the forward's column-major update, left allocated below the op's saved
 * activations, reused by the backward for the column-major upstream gradient. */
typedef struct {
    mf_tensor mean, rstd, x, mask_t, scratch;
    mf_attention_saved attn;
} mf_msa_column_attention_saved;

/* out, m [N_seq, N_res, c_m]; msa_mask [N_seq, N_res]. */
mf_status mf_msa_column_attention_forward(mf_ctx *ctx, mf_tensor *out, bool accumulate,
                                          mf_msa_column_attention_saved *saved, const mf_tensor *m,
                                          const mf_tensor *msa_mask,
                                          const mf_msa_column_attention_params *p,
                                          const mf_msa_column_attention_dims *d);
/* Accumulates into dm (may be NULL) and every dp field with data (dp may be NULL). Writes into
 * saved->scratch. */
mf_status mf_msa_column_attention_backward(
    mf_ctx *ctx, mf_tensor *dm, mf_msa_column_attention_params *dp, const mf_tensor *dout,
    const mf_msa_column_attention_saved *saved, const mf_tensor *m, const mf_tensor *msa_mask,
    const mf_msa_column_attention_params *p, const mf_msa_column_attention_dims *d);

/* ---- Alg. 19: MSA column-wise global attention (extra-MSA stack) ----------------------------- */

typedef struct {
    int64_t c_m; /* c_e, the extra-MSA channels */
    int64_t num_heads, c_hidden;
} mf_msa_column_global_attention_dims;

typedef struct {
#define MF_PARAM MF_PARAM_FIELD
#include "evoformer/msa_column_global_attention.def"
#undef MF_PARAM
} mf_msa_column_global_attention_params;

int mf_msa_column_global_attention_param_specs(const mf_msa_column_global_attention_dims *d,
                                               mf_param_spec *out);

/* Per residue column: q_avg [N_res, c] (the masked mean of the normalised column), q
 * [N_res, H, 1, c_hidden] (scaled), o [N_res, H, 1, c_hidden] (attention output before the gate),
 * lse [N_res, 1, H] (all in the input dtype, small), and gate_logits [N_seq, N_res, H * c_hidden]
 * (before the sigmoid) in the storage precision. The layer norm, the mask weights, the shared
 * key and value ([N_res, N_seq, c_hidden]) are recomputed in backward. */
typedef struct {
    mf_tensor q_avg, q, o, lse, gate_logits;
} mf_msa_column_global_attention_saved;

/* out, m [N_seq, N_res, c_m]; msa_mask [N_seq, N_res]. */
mf_status mf_msa_column_global_attention_forward(mf_ctx *ctx, mf_tensor *out, bool accumulate,
                                                 mf_msa_column_global_attention_saved *saved,
                                                 const mf_tensor *m, const mf_tensor *msa_mask,
                                                 const mf_msa_column_global_attention_params *p,
                                                 const mf_msa_column_global_attention_dims *d);
/* Accumulates into dm (may be NULL) and every dp field with data (dp may be NULL). */
mf_status mf_msa_column_global_attention_backward(mf_ctx *ctx, mf_tensor *dm,
                                                  mf_msa_column_global_attention_params *dp,
                                                  const mf_tensor *dout,
                                                  const mf_msa_column_global_attention_saved *saved,
                                                  const mf_tensor *m, const mf_tensor *msa_mask,
                                                  const mf_msa_column_global_attention_params *p,
                                                  const mf_msa_column_global_attention_dims *d);

/* ---- memory-model plans (memopt/memplan.h) ------------------------------------------------------
 * Replays of the arena allocations of the functions above for an f32 run under s->policy
 * (evoformer/msa_attention_memplan.c, msa_column_global_attention_memplan.c). A forward with
 * saving leaves the saved activations allocated on the simulator; without, and every backward,
 * leave its offset unchanged. Backward flags: the input gradients asked for (dm, dz given) and
 * dparams (dp given with every field; false: dp NULL). */

/* mf_evo_pair_bias_forward/backward: z [n, n2, c] (normalised inside when norm), heads H; dnorm:
 * the layer norm's parameter gradients, dw: feat_2d_weights' gradient. */
void mf_evo_pair_bias_plan_forward(mf_memsim *s, int64_t n, int64_t n2, int64_t c, int64_t heads,
                                   bool norm);
void mf_evo_pair_bias_plan_backward(mf_memsim *s, int64_t n, int64_t n2, int64_t c, int64_t heads,
                                    bool norm, bool dz, bool dnorm, bool dw);

void mf_msa_row_attention_with_pair_bias_plan_forward(mf_memsim *s, int64_t n_seq, int64_t n_res,
                                                      const mf_msa_row_attention_dims *d,
                                                      bool saving, bool accumulate);
void mf_msa_row_attention_with_pair_bias_plan_backward(mf_memsim *s, int64_t n_seq, int64_t n_res,
                                                       const mf_msa_row_attention_dims *d, bool dm,
                                                       bool dz, bool dparams);
void mf_msa_column_attention_plan_forward(mf_memsim *s, int64_t n_seq, int64_t n_res,
                                          const mf_msa_column_attention_dims *d, bool saving,
                                          bool accumulate);
void mf_msa_column_attention_plan_backward(mf_memsim *s, int64_t n_seq, int64_t n_res,
                                           const mf_msa_column_attention_dims *d, bool dm,
                                           bool dparams);
void mf_msa_column_global_attention_plan_forward(mf_memsim *s, int64_t n_seq, int64_t n_res,
                                                 const mf_msa_column_global_attention_dims *d,
                                                 bool saving, bool accumulate);
void mf_msa_column_global_attention_plan_backward(mf_memsim *s, int64_t n_seq, int64_t n_res,
                                                  const mf_msa_column_global_attention_dims *d,
                                                  bool dm, bool dparams);

#endif
