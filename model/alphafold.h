/* The AlphaFold 2 monomer network for inference: every module bound to its official parameters
 * and the forward pass with recycling (AF2 modules.py AlphaFold / AlphaFoldIteration /
 * EmbeddingsAndEvoformer; supplement Alg. 2). Per recycling iteration r (per-iteration features
 * of slice r, data/processed.h):
 *
 *   m, z      = input embedder (Alg. 3, 4)                        [S, N, c_m], [N, N, c_z]
 *   m[0] += LN(m1_prev), z += LN(z_prev) + Linear(dgram(pseudo_beta(x_prev)))   (Alg. 32;
 *               iteration 0 recycles zeros, as AF2)
 *   templates (Alg. 2 lines 7-13): for each template t, feature [N, N, 88] -> embedding2d ->
 *               template pair stack (Alg. 16) -> output_layer_norm; z += pointwise attention over
 *               the templates (Alg. 17); with torsion angles: the template single embedding
 *               (57 -> c_m, relu, c_m) appended to m as T rows, their MSA mask the psi mask
 *   extra MSA: e = extra_msa_activations(25-channel feature); (e, z) <- extra-MSA stack (Alg. 18)
 *   (m, z)   <- Evoformer stack (Alg. 6), msa mask = [msa_mask; template row masks], pair mask =
 *               seq_mask seq_mask^T
 *   single   = single_activations(m[0])
 *   structure module (Alg. 20) on (single, z, aatype, seq_mask)
 *   recycled: m1_prev = m[0], z_prev = z, x_prev = final atom37 positions.
 * The heads (distogram, masked MSA, pLDDT, experimentally resolved, predicted aligned error) run
 * after the last iteration only: AF2 discards earlier iterations' head outputs at inference.
 *
 * Memory (inference): every stack runs forward-only (saved == NULL), in place, in slices of
 * ctx->policy.chunk_size rows. The pair representation lives once: the recycled pair is turned
 * into the new iteration's pair in place (the recycling embedder's update overwrites z_prev,
 * the input embedder's terms are then added). Everything comes from ctx->arena: its high-water
 * mark is the inference's peak. The structure module and the feature construction run on the
 * host, so ctx must be a CPU context; the trunk may run on a GPU (options.trunk_ctx).
 *
 * Numbers: the pair's sum is formed in a different order from AF2's (recycling terms first, then
 * left + right + relpos), which changes f32 rounding only. */
#ifndef MF_MODEL_ALPHAFOLD_H
#define MF_MODEL_ALPHAFOLD_H

#include <stdbool.h>
#include <stdint.h>

#include "core/context.h"
#include "data/h5io.h"
#include "data/processed.h"
#include "evoformer/evoformer_stack.h"
#include "evoformer/template_pointwise_attention.h"
#include "model/config.h"
#include "model/embedders.h"
#include "model/heads.h"
#include "model/param_store.h"
#include "structure_module/structure_module.h"

/* Official scopes of the modules that have none of their own in another header. */
#define MF_EVOFORMER_STACK_SCOPE    MF_EMBEDDERS_SCOPE "/evoformer_iteration"
#define MF_EXTRA_MSA_STACK_SCOPE    MF_EMBEDDERS_SCOPE "/extra_msa_stack"
#define MF_TEMPLATE_EMBEDDING_SCOPE MF_EMBEDDERS_SCOPE "/template_embedding"
#define MF_TEMPLATE_PAIR_STACK_SCOPE                                                               \
    MF_TEMPLATE_PAIR_EMBEDDER_SCOPE "/template_pair_stack/__layer_stack_no_state"
/* AF2 SingleTemplateEmbedding's output_layer_norm (haiku eps 1e-5). */
#define MF_TEMPLATE_OUTPUT_LN_EPS 1e-5f

/* The bound network: dims from the configuration, parameters as views into a parameter store
 * (stacked modules as [num_blocks, ...] arrays). Valid while the store lives. */
typedef struct mf_alphafold_model_s {
    mf_config cfg;
    mf_input_embedder_dims input_dims;
    mf_input_embedder_params input;
    mf_recycling_embedder_dims recycling_dims;
    mf_recycling_embedder_params recycling;

    bool templates;         /* template.enabled */
    bool template_torsions; /* template.embed_torsion_angles */
    mf_template_pair_embedder_dims template_pair_dims;
    mf_template_pair_embedder_params template_pair;
    int64_t template_stack_blocks;
    mf_template_pair_block_dims template_stack_dims;
    mf_template_pair_block_params template_stack;                  /* stacked */
    mf_tensor template_output_ln_scale, template_output_ln_offset; /* [c_t] */
    mf_template_pointwise_attention_dims template_pointwise_dims;
    mf_template_pointwise_attention_params template_pointwise;
    mf_template_single_embedder_dims template_single_dims;
    mf_template_single_embedder_params template_single;

    mf_extra_msa_embedder_dims extra_msa_dims;
    mf_extra_msa_embedder_params extra_msa;
    int64_t extra_stack_blocks;
    mf_evoformer_block_dims extra_stack_dims;
    mf_extra_msa_block_params extra_stack; /* stacked */

    int64_t evoformer_blocks;
    mf_evoformer_block_dims evoformer_dims;
    mf_evoformer_block_params evoformer;  /* stacked */
    mf_tensor single_activations_weights; /* [c_m, c_s] */
    mf_tensor single_activations_bias;    /* [c_s] */

    mf_structure_module_dims sm_dims;
    mf_structure_module_params sm;

    mf_heads_dims heads_dims;
    mf_distogram_head_params distogram;
    mf_masked_msa_head_params masked_msa;
    mf_predicted_lddt_head_params predicted_lddt;
    mf_experimentally_resolved_head_params experimentally_resolved;
    bool pae_head; /* heads.predicted_aligned_error.enabled (pTM models) */
    mf_predicted_aligned_error_head_params predicted_aligned_error;
} mf_alphafold_model;

/* Every parameter the configuration needs: full AF2 name and shape, stacked modules with their
 * block axis (the expected list of mf_param_store_check). */
mf_status mf_alphafold_expected_params(const mf_config *cfg, mf_param_expect_list *out);
/* m's configuration and dims from cfg, with no parameters bound (the memory model's input). */
mf_status mf_alphafold_model_dims(mf_alphafold_model *m, const mf_config *cfg);

/* The model's configuration for a parameter store: config_name NULL infers it from the shapes
 * (mf_param_store_infer_config: af2-initial for what the shapes do not record); otherwise the
 * named preset or JSON file, used as given. Either way structure_layers > 0 overrides
 * structure_module.num_layers (the one size no parameter records). Multimer parameters are
 * MF_ERR_UNSUPPORTED. */
mf_status mf_alphafold_config_for_params(const mf_param_store *s, const char *config_name,
                                         int64_t structure_layers, mf_config *cfg);

/* Checks the store against mf_alphafold_expected_params (MF_ERR_FORMAT listing the missing,
 * unexpected and wrongly shaped parameters; multimer parameters MF_ERR_UNSUPPORTED) and binds
 * every module. */
mf_status mf_alphafold_bind(mf_alphafold_model *m, const mf_config *cfg, const mf_param_store *s);

/* A store holding every parameter of cfg with AlphaFold 2's initialisers (model/params.h) from
 * `seed`: 'final' layers zero, so such a network's residual updates and structure start at zero
 * as AF2's do at initialisation. s must be empty (mf_param_store_init). */
mf_status mf_alphafold_random_params(const mf_config *cfg, uint64_t seed, mf_param_store *s);

/* Per-stage observation, for dumps and for localising mismatches: stage and tensor as in
 * shared/testvectors/expected_outputs.h5 intermediates/<stage>/<tensor>; iteration r (-1 for the
 * masks, identical in every iteration); template_index t for the per-template stages
 * (template_pair_embedder, template_pair_stack), else -1. value: host f32 (up to 8 dims), valid
 * during the call only. Called only when set: every such call copies or recomputes a tensor the
 * fused inference path would not keep. */
typedef mf_status (*mf_alphafold_hook)(void *data, const char *stage, const char *tensor,
                                       int64_t iteration, int64_t template_index,
                                       const mf_h5_array *value);

/* Progress of a long inference: called after each stage of each iteration (block = -1) and
 * after each Evoformer block (block = k of num_blocks), with the seconds since the inference
 * started. Costs nothing but the call. */
typedef void (*mf_alphafold_progress)(void *data, const char *stage, int64_t iteration,
                                      int64_t block, int64_t num_blocks, double seconds);

typedef struct {
    int64_t num_iterations; /* <= 0: the features' recycling axis R; more than R reuses slice
                               r mod R of the per-iteration features */
    bool all_heads;         /* also the distogram, masked-MSA and experimentally-resolved logits */
    mf_alphafold_hook hook; /* or NULL */
    void *hook_data;
    mf_alphafold_progress progress; /* or NULL */
    void *progress_data;
    /* > 0: stop recycling early (AF2 v2.3's recycle_early_stop_tolerance, ColabFold's
     * --recycle-early-stop-tolerance). After iteration r >= 1 the change of the Calpha-Calpha
     * distance matrix against iteration r - 1 is
     *   delta = sqrt(sum_ij mask_ij (d_ij^r - d_ij^(r-1))^2 / sum_ij mask_ij),
     *   d_ij = |x_i^CA - x_j^CA| (Angstrom), mask_ij = seq_mask_i seq_mask_j (i = j included),
     * and the iteration with delta < tolerance is the last (its heads run). Iteration 0 is never
     * compared (AF2 compares it with the zero positions it recycles, which always continues),
     * so at least 2 iterations run when num_iterations >= 2. 0: off. */
    double recycle_early_stop_tolerance;
    /* The trunk on another context (NULL: everything on ctx). The embedders, the template and
     * extra-MSA stacks and the Evoformer run on trunk_ctx (a GPU's, typically) with trunk_model:
     * the same network bound to a mirror of its parameters on that device
     * (mf_param_store_mirror). Features, the structure module, the heads and the outputs stay on
     * ctx. Per iteration the features the trunk reads go up (trunk_ctx's arena holds them with
     * the trunk's activations, the pair and the recycled first MSA row) and the pair and the
     * single come down into the outputs. The same ops in the same order: with a second CPU
     * context the outputs are bitwise those of the single-context run. */
    mf_ctx *trunk_ctx;
    const struct mf_alphafold_model_s *trunk_model;
} mf_alphafold_options;

enum {
    MF_ALPHAFOLD_STAGE_EMBEDDERS = 0, /* input and recycling embedders, masks */
    MF_ALPHAFOLD_STAGE_TEMPLATES,
    MF_ALPHAFOLD_STAGE_EXTRA_MSA,
    MF_ALPHAFOLD_STAGE_EVOFORMER, /* with the single projection */
    MF_ALPHAFOLD_STAGE_STRUCTURE_MODULE,
    MF_ALPHAFOLD_STAGE_HEADS,
    MF_ALPHAFOLD_NUM_STAGES
};
/* "embedders", "templates", "extra_msa", "evoformer", "structure_module", "heads". */
const char *mf_alphafold_stage_name(int stage);

/* The last iteration's outputs, arena tensors on ctx's device (allocated by the forward; the
 * caller releases them with a mark taken before it). L = structure_module.num_layers, S = the
 * MSA clusters (template rows excluded). A head not run has data == NULL. */
typedef struct {
    int64_t num_res, num_seq, num_iterations; /* num_iterations: those run (early stop) */
    double recycle_change; /* the last iteration's delta (recycle_early_stop_tolerance), -1: none */
    mf_tensor final_atom_positions;                /* [N, 37, 3] Angstrom */
    mf_tensor final_atom_mask;                     /* [N, 37] */
    mf_tensor lddt_logits;                         /* [N, plddt bins] */
    mf_tensor plddt;                               /* [N] 0..100 */
    mf_tensor distogram_logits;                    /* [N, N, bins] (all_heads) */
    mf_tensor masked_msa_logits;                   /* [S, N, 23] (all_heads) */
    mf_tensor experimentally_resolved_logits;      /* [N, 37] (all_heads) */
    mf_tensor pae_logits;                          /* [N, N, bins] (pTM models) */
    mf_tensor single;                              /* [N, c_s] the Evoformer's single */
    mf_tensor pair;                                /* [N, N, c_z] after the Evoformer */
    mf_tensor msa_first_row;                       /* [N, c_m] after the Evoformer */
    mf_tensor sm_frames;                           /* [L, N, 7] quaternion + translation (A) */
    mf_tensor sm_positions;                        /* [L, N, 14, 3] */
    mf_tensor sm_angles;                           /* [L, N, 7, 2] */
    mf_tensor sm_single;                           /* [N, c_s] the structure module's final act */
    double stage_seconds[MF_ALPHAFOLD_NUM_STAGES]; /* summed over the iterations */
} mf_alphafold_outputs;

/* Inference on one sample's processed features (names and the recycling-axis rule of
 * data/processed.h): target_feat, msa_feat, residue_index, seq_mask, aatype, msa_mask,
 * extra_msa, extra_msa_mask, extra_has_deletion, extra_deletion_value and, when templates are
 * enabled and the file has any (template_aatype present with T >= 1), template_aatype,
 * template_all_atom_positions, template_all_atom_mask (or template_all_atom_masks),
 * template_pseudo_beta, template_pseudo_beta_mask, template_mask and, with torsion angles,
 * template_torsion_angles_sin_cos, template_alt_torsion_angles_sin_cos,
 * template_torsion_angles_mask. A missing feature is MF_ERR_FORMAT naming it. No extra-MSA row
 * (E = 0) runs the extra-MSA stack on one fully masked row, which is what AF2's padding to a
 * fixed size amounts to. */
mf_status mf_alphafold_inference(mf_ctx *ctx, const mf_alphafold_model *m,
                                 const mf_processed_features *f, const mf_alphafold_options *opt,
                                 mf_alphafold_outputs *out);

/* ---- recording hook outputs (dumps, tests) ------------------------------------------------ */

/* Named host f32 arrays "intermediates/<stage>/<tensor>" shaped as in expected_outputs.h5:
 * [R, ...], [R, T, ...] for per-template stages, [...] for the masks. */
typedef struct {
    char name[128];
    mf_h5_array array;
} mf_alphafold_record;

typedef struct {
    int64_t num_iterations, num_templates;
    int count, cap;
    mf_alphafold_record *records;
} mf_alphafold_recorder;

void mf_alphafold_recorder_init(mf_alphafold_recorder *r, int64_t num_iterations,
                                int64_t num_templates);
void mf_alphafold_recorder_free(mf_alphafold_recorder *r);
/* An mf_alphafold_hook; data is the recorder. */
mf_status mf_alphafold_recorder_hook(void *data, const char *stage, const char *tensor,
                                     int64_t iteration, int64_t template_index,
                                     const mf_h5_array *value);
const mf_alphafold_record *mf_alphafold_recorder_find(const mf_alphafold_recorder *r,
                                                      const char *name);

/* Writes the outputs with the names, shapes and meanings of expected_outputs.h5
 * (final_atom_positions, final_atom_mask, plddt, lddt_logits, distogram_logits,
 * masked_msa_logits, experimentally_resolved_logits, single, pair, msa, sm/frames,
 * sm/positions, sm/angles, num_recycles; predicted_aligned_error_logits when present; the
 * recorder's arrays when rec != NULL) atomically to path. */
mf_status mf_alphafold_dump_write(const char *path, const mf_alphafold_outputs *o,
                                  const mf_alphafold_recorder *rec);

#endif
