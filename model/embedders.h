/* The AlphaFold 2 embedders (EmbeddingsAndEvoformer before the stacks), forward and backward:
 *   input embedder        Alg. 3 + relpos Alg. 4:  msa  = preprocess_1d(tf)[None] +
 * preprocess_msa(msa_feat) pair = left_single(tf)[:, None] + right_single(tf)[None]
 *                                                         + pair_activiations(one_hot(relpos))
 *   recycling embedder    Alg. 32:  m1 += prev_msa_first_row_norm(m1_prev),
 *                                   z  += prev_pos_linear(dgram(prev pseudo-beta)) +
 * prev_pair_norm(z_prev) extra-MSA embedder    Alg. 2 l. 14:  extra_msa_activations(extra_msa_feat
 * [.., 25]) template single       Alg. 2 l. 7-8:
 * template_projection(relu(template_single_embedding(angle_feat [.., 57]))) template pair Alg. 2 l.
 * 9:    embedding2d(template_pair_feat [.., 88])
 *
 * Two layers:
 *  - Feature construction (one-hots, distograms, masks; embedders_features.c) has no gradient and
 *    runs on the host over CPU tensors (f32 or f64 values, i32 indices), where the raw features
 *    live; the caller moves the results to the context's device. The relative-position and
 *    recycling-distogram one-hots are produced as bin indices (i32 [N, N], -1 = no bin, i.e. an
 *    all-zero one-hot row): Linear(one_hot(b)) is row b of the weights plus the bias, so the
 *    embedders gather weight rows (mf_gather_rows) instead of materialising [N, N, bins] one-hots.
 *    This is exact: a one-hot matrix product adds zeros to a single weight.
 *  - Embedders (embedders.c) are modules in the project's convention (model/params.h, the .def
 *    tables embedders_*.def): outputs are the module's update, written or added (accumulate) to
 *    the caller's tensor; saved == NULL is inference and processes dim-0 slices of
 *    ctx->policy.chunk_size rows (every slice size gives the same bits: each output row is
 *    computed by the same ops in the same order); backward ACCUMULATES into every gradient given
 *    (NULL or data == NULL: not computed). Only core/ops.h ops, so any backend runs them; scratch
 *    has the inputs' dtype (f32 or f64).
 * Layer norms are haiku's (eps 1e-5). */
#ifndef MF_MODEL_EMBEDDERS_H
#define MF_MODEL_EMBEDDERS_H

#include <stdbool.h>
#include <stdint.h>

#include "core/context.h"
#include "model/config.h"
#include "model/params.h"

/* Scopes of the parameter tables: a parameter's full AF2 name is "<scope>/<spec name>" (the
 * convention of model/param_store.h's mf_param_store_bind). */
#define MF_EMBEDDERS_SCOPE "alphafold/alphafold_iteration/evoformer"
#define MF_TEMPLATE_PAIR_EMBEDDER_SCOPE                                                            \
    "alphafold/alphafold_iteration/evoformer/template_embedding/single_template_embedding"
#define MF_EMBEDDER_LN_EPS 1e-5f

/* AF2 feature widths: aatype one-hots have 22 classes (20 amino acids, X, gap), the extra MSA 23
 * (plus the BERT mask token); 7 torsion angles (omega, phi, psi, chi1-4). */
#define MF_TEMPLATE_AATYPE_CLASSES 22
#define MF_EXTRA_MSA_CLASSES       23
#define MF_EXTRA_MSA_FEAT_DIM      25 /* one-hot 23, has_deletion, deletion_value */
#define MF_NUM_TORSIONS            7
#define MF_TEMPLATE_ANGLE_FEAT_DIM 57 /* one-hot 22, sin/cos 14, alt sin/cos 14, mask 7 */
/* Template pair feature: dgram bins, pseudo-beta mask, aatype one-hot of the column residue j,
 * of the row residue i, unit vector (3), backbone mask; 88 with AF2's 39 bins. */
#define MF_TEMPLATE_PAIR_FEAT_DIM(num_bins)                                                        \
    ((num_bins) + 1 + 2 * MF_TEMPLATE_AATYPE_CLASSES + 3 + 1)
/* AF2 SingleTemplateEmbedding: rsqrt(1e-6 + |v|^2) for the unit vector. */
#define MF_TEMPLATE_UNIT_VECTOR_EPS 1e-6
/* AF2 dgram_from_positions: the last bin's upper edge (squared distance). */
#define MF_DGRAM_UPPER_LAST 1e8

/* ==== feature construction (host, no gradient) ============================================== */

/* Alg. 4: bins[i, j] = clip(residue_index[i] - residue_index[j] + r, 0, 2r), r =
 * max_relative_feature. bins i32 [N, N] (or any shape of N*N elements); residue_index i32 [N]. */
mf_status mf_relpos_bins(mf_tensor *bins, const mf_tensor *residue_index,
                         int64_t max_relative_feature);
/* The same as a one-hot: out [N, N, 2r+1] (f32 or f64). */
mf_status mf_relpos_one_hot(mf_tensor *out, const mf_tensor *residue_index,
                            int64_t max_relative_feature);

/* AF2 dgram_from_positions: lower edges linspace(min_bin, max_bin, num_bins) squared, upper edges
 * the next lower edge (1e8 for the last); a pair is in bin b when lower_b < d^2 < upper_b, compared
 * on squared distances in the positions' precision (f32 or f64), so a distance on an edge is in
 * no bin. bins i32 [N, N] (N*N elements): the bin or -1; positions [N, 3] (3N elements). */
mf_status mf_dgram_bins(mf_tensor *bins, const mf_tensor *positions, int64_t num_bins,
                        double min_bin, double max_bin);
/* Rows [row0, row0 + rows) of the one-hot distogram: out [rows, N, num_bins] (f32 or f64). */
mf_status mf_dgram_one_hot(mf_tensor *out, int64_t row0, const mf_tensor *positions,
                           int64_t num_bins, double min_bin, double max_bin);

/* AF2 pseudo_beta_fn: CA for glycine, CB otherwise. pseudo_beta [N, 3]; pseudo_beta_mask [N] or
 * NULL (needs all_atom_mask); aatype i32 [N] (restype order, G = 7); all_atom_positions
 * [N, 37, 3]; all_atom_mask [N, 37] or NULL. Float tensors f32 or f64 (any shapes with those
 * element counts, e.g. [1, N, 37, 3] slices). */
mf_status mf_pseudo_beta(mf_tensor *pseudo_beta, mf_tensor *pseudo_beta_mask,
                         const mf_tensor *aatype, const mf_tensor *all_atom_positions,
                         const mf_tensor *all_atom_mask);

/* AF2 create_extra_msa_feature: out [S, N, 25] = [one_hot(extra_msa, 23), has_deletion,
 * deletion_value]; extra_msa i32 [S, N] (0..22, else an error); has_deletion, deletion_value
 * [S, N] (f32 or f64). */
mf_status mf_extra_msa_feat(mf_tensor *out, const mf_tensor *extra_msa,
                            const mf_tensor *has_deletion, const mf_tensor *deletion_value);

/* AF2 template torsion features (EmbeddingsAndEvoformer): out [T, N, 57] = [one_hot(aatype, 22),
 * torsion sin/cos (7 x 2), alt torsion sin/cos (7 x 2), torsion mask (7)]; template_aatype i32
 * [T, N] (0..21); sin_cos and alt_sin_cos [T, N, 7, 2]; torsion_mask [T, N, 7]. */
mf_status mf_template_angle_feat(mf_tensor *out, const mf_tensor *template_aatype,
                                 const mf_tensor *torsion_sin_cos,
                                 const mf_tensor *alt_torsion_sin_cos,
                                 const mf_tensor *torsion_mask);
/* MSA mask of the template rows: the psi mask, torsion_mask[t, i, 2] (AF2: it depends on the
 * backbone atoms of one residue only). out [T, N]; torsion_mask [T, N, 7]. */
mf_status mf_template_row_mask(mf_tensor *out, const mf_tensor *torsion_mask);

/* ==== input embedder (Alg. 3, 4) ============================================================ */

typedef struct {
    int64_t target_feat_dim; /* 22 */
    int64_t msa_feat_dim;    /* 49 */
    int64_t c_m, c_z;
    int64_t max_relative_feature; /* 32 */
} mf_input_embedder_dims;

typedef struct {
#define MF_PARAM MF_PARAM_FIELD
#include "model/embedders_input.def"
#undef MF_PARAM
} mf_input_embedder_params;

#define MF_INPUT_EMBEDDER_NUM_PARAMS ((int)(sizeof(mf_input_embedder_params) / sizeof(mf_tensor)))

mf_input_embedder_dims mf_input_embedder_dims_from_config(const mf_config *cfg);
int mf_input_embedder_param_specs(const mf_input_embedder_dims *d, mf_param_spec *out);

/* Nothing is kept: the backward reads the inputs (the embedder is linear in its parameters). */
typedef struct {
    bool forward_done;
} mf_input_embedder_saved;

/* msa [S, N, c_m], pair [N, N, c_z] (+= when accumulate); target_feat [N, 22]; msa_feat
 * [S, N, 49]; relpos_bins i32 [N, N] from mf_relpos_bins (host or ctx's device). */
mf_status mf_input_embedder_forward(mf_ctx *ctx, mf_tensor *msa, mf_tensor *pair, bool accumulate,
                                    mf_input_embedder_saved *saved, const mf_tensor *target_feat,
                                    const mf_tensor *msa_feat, const mf_tensor *relpos_bins,
                                    const mf_input_embedder_params *p,
                                    const mf_input_embedder_dims *d);
/* dtarget_feat [N, 22], dmsa_feat [S, N, 49] (features: usually NULL); dmsa, dpair the output
 * gradients (either may be NULL). */
mf_status mf_input_embedder_backward(mf_ctx *ctx, mf_tensor *dtarget_feat, mf_tensor *dmsa_feat,
                                     mf_input_embedder_params *dp, const mf_tensor *dmsa,
                                     const mf_tensor *dpair, const mf_input_embedder_saved *saved,
                                     const mf_tensor *target_feat, const mf_tensor *msa_feat,
                                     const mf_tensor *relpos_bins,
                                     const mf_input_embedder_params *p,
                                     const mf_input_embedder_dims *d);

/* ==== recycling embedder (Alg. 32) ========================================================== */

typedef struct {
    int64_t c_m, c_z;
    int64_t num_bins; /* 15 */
    double min_bin;   /* 3.25 */
    double max_bin;   /* 20.75 */
} mf_recycling_embedder_dims;

typedef struct {
#define MF_PARAM MF_PARAM_FIELD
#include "model/embedders_recycling.def"
#undef MF_PARAM
} mf_recycling_embedder_params;

#define MF_RECYCLING_EMBEDDER_NUM_PARAMS                                                           \
    ((int)(sizeof(mf_recycling_embedder_params) / sizeof(mf_tensor)))

mf_recycling_embedder_dims mf_recycling_embedder_dims_from_config(const mf_config *cfg);
int mf_recycling_embedder_param_specs(const mf_recycling_embedder_dims *d, mf_param_spec *out);
/* The distogram bins of the previous iteration's pseudo-beta positions [N, 3] (host), with the
 * dims' bins: mf_dgram_bins. Iteration 0 passes zeros (every pair in no bin, as in AF2). */
mf_status mf_recycling_dgram_bins(mf_tensor *bins, const mf_tensor *prev_pseudo_beta,
                                  const mf_recycling_embedder_dims *d);

/* Layer-norm statistics, one per row (f32; f64 for f64 inputs), from ctx->arena. */
typedef struct {
    mf_tensor m1_mean, m1_rstd; /* [N] */
    mf_tensor z_mean, z_rstd;   /* [N * N] */
} mf_recycling_embedder_saved;

/* m1_update [N, c_m] = LayerNorm(m1_prev); z_update [N, N, c_z] = LayerNorm(z_prev) +
 * prev_pos_linear(one_hot(dgram_bins)) (+= both when accumulate: m1_update is then the first MSA
 * row and z_update the pair). m1_prev [N, c_m], z_prev [N, N, c_z]; dgram_bins i32 [N, N]. */
mf_status mf_recycling_embedder_forward(mf_ctx *ctx, mf_tensor *m1_update, mf_tensor *z_update,
                                        bool accumulate, mf_recycling_embedder_saved *saved,
                                        const mf_tensor *m1_prev, const mf_tensor *z_prev,
                                        const mf_tensor *dgram_bins,
                                        const mf_recycling_embedder_params *p,
                                        const mf_recycling_embedder_dims *d);
/* dm1_prev, dz_prev: NULL for AF2's stop-gradient between iterations. */
mf_status mf_recycling_embedder_backward(mf_ctx *ctx, mf_tensor *dm1_prev, mf_tensor *dz_prev,
                                         mf_recycling_embedder_params *dp,
                                         const mf_tensor *dm1_update, const mf_tensor *dz_update,
                                         const mf_recycling_embedder_saved *saved,
                                         const mf_tensor *m1_prev, const mf_tensor *z_prev,
                                         const mf_tensor *dgram_bins,
                                         const mf_recycling_embedder_params *p,
                                         const mf_recycling_embedder_dims *d);

/* ==== extra-MSA embedder ==================================================================== */

typedef struct {
    int64_t extra_msa_feat_dim; /* 25 */
    int64_t c_e;
} mf_extra_msa_embedder_dims;

typedef struct {
#define MF_PARAM MF_PARAM_FIELD
#include "model/embedders_extra_msa.def"
#undef MF_PARAM
} mf_extra_msa_embedder_params;

#define MF_EXTRA_MSA_EMBEDDER_NUM_PARAMS                                                           \
    ((int)(sizeof(mf_extra_msa_embedder_params) / sizeof(mf_tensor)))

mf_extra_msa_embedder_dims mf_extra_msa_embedder_dims_from_config(const mf_config *cfg);
int mf_extra_msa_embedder_param_specs(const mf_extra_msa_embedder_dims *d, mf_param_spec *out);

typedef struct {
    bool forward_done; /* nothing kept: linear in the parameters, the backward reads the input */
} mf_extra_msa_embedder_saved;

/* out [S_extra, N, c_e] (+= when accumulate); extra_msa_feat [S_extra, N, 25]. */
mf_status mf_extra_msa_embedder_forward(mf_ctx *ctx, mf_tensor *out, bool accumulate,
                                        mf_extra_msa_embedder_saved *saved,
                                        const mf_tensor *extra_msa_feat,
                                        const mf_extra_msa_embedder_params *p,
                                        const mf_extra_msa_embedder_dims *d);
mf_status mf_extra_msa_embedder_backward(mf_ctx *ctx, mf_tensor *dextra_msa_feat,
                                         mf_extra_msa_embedder_params *dp, const mf_tensor *dout,
                                         const mf_extra_msa_embedder_saved *saved,
                                         const mf_tensor *extra_msa_feat,
                                         const mf_extra_msa_embedder_params *p,
                                         const mf_extra_msa_embedder_dims *d);

/* ==== template single embedder (torsion angles -> MSA rows) ================================= */

typedef struct {
    int64_t angle_feat_dim; /* 57 */
    int64_t c_m;
} mf_template_single_embedder_dims;

typedef struct {
#define MF_PARAM MF_PARAM_FIELD
#include "model/embedders_template_single.def"
#undef MF_PARAM
} mf_template_single_embedder_params;

#define MF_TEMPLATE_SINGLE_EMBEDDER_NUM_PARAMS                                                     \
    ((int)(sizeof(mf_template_single_embedder_params) / sizeof(mf_tensor)))

mf_template_single_embedder_dims mf_template_single_embedder_dims_from_config(const mf_config *cfg);
int mf_template_single_embedder_param_specs(const mf_template_single_embedder_dims *d,
                                            mf_param_spec *out);

/* act [T, N, c_m]: the ReLU output (its derivative is read from it), in the storage precision. */
typedef struct {
    mf_tensor act;
} mf_template_single_embedder_saved;

/* out [T, N, c_m] (+= when accumulate): the template rows appended to the MSA; angle_feat
 * [T, N, 57]. */
mf_status mf_template_single_embedder_forward(mf_ctx *ctx, mf_tensor *out, bool accumulate,
                                              mf_template_single_embedder_saved *saved,
                                              const mf_tensor *angle_feat,
                                              const mf_template_single_embedder_params *p,
                                              const mf_template_single_embedder_dims *d);
mf_status mf_template_single_embedder_backward(mf_ctx *ctx, mf_tensor *dangle_feat,
                                               mf_template_single_embedder_params *dp,
                                               const mf_tensor *dout,
                                               const mf_template_single_embedder_saved *saved,
                                               const mf_tensor *angle_feat,
                                               const mf_template_single_embedder_params *p,
                                               const mf_template_single_embedder_dims *d);

/* ==== template pair embedder (88-channel feature -> c_t) ==================================== */

typedef struct {
    int64_t pair_feat_dim; /* MF_TEMPLATE_PAIR_FEAT_DIM(num_bins) = 88 */
    int64_t c_t;
    int64_t num_bins; /* 39 */
    double min_bin;   /* 3.25 */
    double max_bin;   /* 50.75 */
    bool use_unit_vector;
} mf_template_pair_embedder_dims;

typedef struct {
#define MF_PARAM MF_PARAM_FIELD
#include "model/embedders_template_pair.def"
#undef MF_PARAM
} mf_template_pair_embedder_params;

#define MF_TEMPLATE_PAIR_EMBEDDER_NUM_PARAMS                                                       \
    ((int)(sizeof(mf_template_pair_embedder_params) / sizeof(mf_tensor)))

mf_template_pair_embedder_dims mf_template_pair_embedder_dims_from_config(const mf_config *cfg);
int mf_template_pair_embedder_param_specs(const mf_template_pair_embedder_dims *d,
                                          mf_param_spec *out);

/* AF2 SingleTemplateEmbedding's feature of ONE template, rows [row0, row0 + rows):
 * out [rows, N, 88] (f32 or f64) = [dgram(pseudo_beta) (num_bins), pb_mask_i pb_mask_j,
 * one_hot(aatype_j) (22), one_hot(aatype_i) (22), unit vector (3), bb_i bb_j], all multiplied by
 * bb_i bb_j, where bb = mask(N) mask(CA) mask(C). The unit vector is CA_j in the backbone frame of
 * residue i (quat_affine.make_transform_from_reference: C on +x, N in the xy plane) times
 * rsqrt(1e-6 + |v|^2) bb_i bb_j, or zeros unless d->use_unit_vector (AF2's default).
 * pseudo_beta [N, 3], pseudo_beta_mask [N], aatype i32 [N] (0..21), all_atom_positions
 * [N, 37, 3], all_atom_mask [N, 37] (any shapes with those element counts). */
mf_status mf_template_pair_feat(mf_tensor *out, int64_t row0, const mf_tensor *pseudo_beta,
                                const mf_tensor *pseudo_beta_mask, const mf_tensor *aatype,
                                const mf_tensor *all_atom_positions, const mf_tensor *all_atom_mask,
                                const mf_template_pair_embedder_dims *d);

typedef struct {
    bool forward_done; /* nothing kept: linear in the parameters, the backward reads the input */
} mf_template_pair_embedder_saved;

/* out [N, N, c_t] (+= when accumulate); pair_feat [N, N, 88] of one template (any leading dims:
 * slices run along dim 0). The backward needs the feature again: keep it or rebuild it. */
mf_status mf_template_pair_embedder_forward(mf_ctx *ctx, mf_tensor *out, bool accumulate,
                                            mf_template_pair_embedder_saved *saved,
                                            const mf_tensor *pair_feat,
                                            const mf_template_pair_embedder_params *p,
                                            const mf_template_pair_embedder_dims *d);
mf_status mf_template_pair_embedder_backward(
    mf_ctx *ctx, mf_tensor *dpair_feat, mf_template_pair_embedder_params *dp, const mf_tensor *dout,
    const mf_template_pair_embedder_saved *saved, const mf_tensor *pair_feat,
    const mf_template_pair_embedder_params *p, const mf_template_pair_embedder_dims *d);

#endif
