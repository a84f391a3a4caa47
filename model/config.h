/* The model configuration: every size, bin, rate, loss weight, optimizer and data setting of a run,
 * one struct read from and written to JSON. Model code takes every dimension from here and
 * hard-codes none. Field names and nesting follow AlphaFold 2's alphafold/model/config.py (and
 * OpenFold's openfold/config.py where AF2's has no training section); JSON keys equal the member
 * paths below except where a comment gives the JSON key.
 *
 * Per-head channels are explicit (`c_hidden` is the channel count of ONE head, AF2's key_dim /
 * num_head), never derived as channels / heads.
 *
 * One static field table in config.c drives mf_config_to_json, mf_config_from_json, mf_config_set,
 * mf_config_get and mf_config_equal, so the key list exists once. */
#ifndef MF_MODEL_CONFIG_H
#define MF_MODEL_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/status.h"
#include "memopt/policy.h"

#define MF_CONFIG_SCHEMA_VERSION 1
#define MF_CONFIG_NAME_CAP       64

/* Gated self-attention of one kind: num_heads heads of c_hidden channels each. */
typedef struct {
    int64_t num_heads;
    int64_t c_hidden; /* per head */
    double dropout_rate;
} mf_attention_config;

typedef struct {
    int64_t c_m; /* MSA representation */
    int64_t c_z; /* pair representation */
    int64_t c_t; /* template pair representation */
    int64_t c_e; /* extra-MSA representation */
    int64_t c_s; /* single representation */
} mf_channels_config;

/* Feature widths of the inputs (suppl. 1.2.9, Table 1). */
typedef struct {
    int64_t target_feat_dim;      /* 22 */
    int64_t msa_feat_dim;         /* 49 */
    int64_t extra_msa_feat_dim;   /* 25 */
    int64_t max_relative_feature; /* relpos clip, Alg. 4 */
} mf_input_embedder_config;

/* Recycling embedder (Alg. 32) and the number of recycling iterations (suppl. 1.10). */
typedef struct {
    double min_bin;
    double max_bin;
    int64_t num_bins;
    int64_t num_recycle;      /* extra iterations after the first; AF2 uses 3 */
    bool uniform_in_training; /* training draws N_cycle uniformly in 1..num_recycle+1 */
} mf_recycling_config;

/* Template pair stack (Alg. 16). */
typedef struct {
    int64_t num_blocks;
    mf_attention_config triangle_attention; /* starting and ending node alike */
    int64_t triangle_multiplication_c_hidden;
    double triangle_multiplication_dropout_rate;
    int64_t pair_transition_factor;
} mf_template_pair_stack_config;

/* Template pointwise attention (Alg. 17): ungated in AF2. JSON key "pointwise_attention". */
typedef struct {
    int64_t num_heads;
    int64_t c_hidden; /* per head */
    bool gating;
} mf_template_pointwise_config;

typedef struct {
    bool enabled;
    bool embed_torsion_angles; /* template single features into the MSA (Alg. 2 lines 7-8) */
    bool use_unit_vector;      /* AF2 feeds zeros instead of the unit vector */
    int64_t pair_feat_dim;     /* 88 */
    int64_t angle_feat_dim;    /* 57 */
    double dgram_min_bin;      /* JSON "dgram": {"min_bin", "max_bin", "num_bins"} */
    double dgram_max_bin;
    int64_t dgram_num_bins;
    mf_template_pair_stack_config pair_stack;
    mf_template_pointwise_config pointwise_attention;
} mf_template_config;

/* Evoformer (Alg. 6) and extra-MSA stack (Alg. 18) share one layout; for the extra-MSA stack the
 * column attention is the global one (Alg. 19, JSON key "msa_column_global_attention"). */
typedef struct {
    int64_t num_blocks;
    mf_attention_config msa_row_attention; /* JSON "msa_row_attention_with_pair_bias" */
    mf_attention_config msa_column_attention;
    int64_t msa_transition_factor;
    int64_t outer_product_mean_c_hidden;
    int64_t triangle_multiplication_c_hidden;
    double triangle_multiplication_dropout_rate;
    mf_attention_config triangle_attention; /* starting and ending node alike */
    int64_t pair_transition_factor;
} mf_evoformer_stack_config;

/* Invariant point attention (Alg. 22). */
typedef struct {
    int64_t num_heads;
    int64_t c_hidden; /* scalar query/key/value channels per head */
    int64_t num_qk_points;
    int64_t num_v_points;
} mf_ipa_config;

typedef struct {
    int64_t num_layers; /* shared-weight iterations, Alg. 20 */
    mf_ipa_config ipa;
    int64_t num_transition_layers;
    int64_t angle_resnet_c_hidden; /* JSON "angle_resnet": {"c_hidden", "num_blocks"} */
    int64_t angle_resnet_num_blocks;
    double position_scale; /* nm -> Angstrom: translations are predicted in units of 10 A */
    double dropout_rate;
} mf_structure_module_config;

typedef struct {
    int64_t distogram_num_bins; /* JSON "distogram": {"num_bins", "first_break", "last_break"} */
    double distogram_first_break;
    double distogram_last_break;
    int64_t predicted_lddt_num_bins; /* JSON "predicted_lddt": {"num_bins", "c_hidden"} */
    int64_t predicted_lddt_c_hidden;
    int64_t masked_msa_num_output;              /* JSON "masked_msa": {"num_output"} */
    int64_t experimentally_resolved_num_output; /* JSON "experimentally_resolved": {...} */
    bool predicted_aligned_error_enabled; /* pTM models; JSON "predicted_aligned_error": {...} */
    int64_t predicted_aligned_error_num_bins;
    double predicted_aligned_error_max_error_bin;
} mf_heads_config;

/* Weights of the total loss, suppl. 1.9 eq. 7 and Table 4. JSON key names are AF2's. */
typedef struct {
    double distogram;
    double experimentally_resolved;
    double fape;
    double plddt_loss;
    double masked_msa;
    double supervised_chi;
    double violation;
    double predicted_aligned_error;
} mf_loss_weights_config;

typedef struct {
    mf_loss_weights_config weights;
    /* FAPE (Alg. 28): backbone and side-chain terms of the auxiliary / final FAPE. */
    double fape_backbone_weight; /* JSON "fape": {"backbone_weight", ...} */
    double fape_sidechain_weight;
    double fape_clamp_distance;
    double fape_loss_unit_distance;
    double fape_sidechain_clamp_distance;
    double fape_sidechain_length_scale;
    double fape_clamp_fraction; /* share of training samples with clamped FAPE, suppl. 1.11.5 */
    double chi_weight;          /* JSON "supervised_chi": {"chi_weight", "angle_norm_weight"} */
    double angle_norm_weight;
    double violation_tolerance_factor; /* JSON "violation": {...} */
    double clash_overlap_tolerance;
    double plddt_cutoff; /* JSON "plddt": {"cutoff", "min_resolution", "max_resolution"} */
    double plddt_min_resolution;
    double plddt_max_resolution;
    double experimentally_resolved_min_resolution;
    double experimentally_resolved_max_resolution;
    double predicted_aligned_error_min_resolution;
    double predicted_aligned_error_max_resolution;
} mf_loss_config;

/* Sample transforms of the data pipeline (suppl. 1.2), training values. */
typedef struct {
    int64_t crop_size;        /* N_res */
    int64_t max_msa_clusters; /* N_seq */
    int64_t max_extra_msa;    /* N_extra_seq */
    int64_t max_templates;    /* N_templ */
    bool subsample_templates;
    bool resample_msa_in_recycling;
    double masked_msa_replace_fraction; /* JSON "masked_msa": {"replace_fraction", ...} */
    double masked_msa_uniform_prob;
    double masked_msa_profile_prob;
    double masked_msa_same_prob;
    bool block_delete_msa; /* JSON "block_delete_msa": {"enabled", ...}, suppl. 1.2.6 */
    double block_delete_msa_fraction_per_block;
    int64_t block_delete_msa_num_blocks;
} mf_data_config;

/* Adam with linear warm-up and step decay (suppl. 1.11.3). */
typedef struct {
    double learning_rate;
    double beta1;
    double beta2;
    double eps;
    int64_t warmup_steps;
    double decay_factor;
    int64_t decay_start_step;
    int64_t decay_every_steps;
    double clip_global_norm;
    double ema_decay;
    int64_t batch_size;
} mf_optimizer_config;

typedef struct mf_config {
    char preset[MF_CONFIG_NAME_CAP]; /* the preset this config derives from */
    mf_channels_config channels;
    mf_input_embedder_config input_embedder;
    mf_recycling_config recycling;
    mf_template_config template_embedding; /* JSON "template" */
    mf_evoformer_stack_config extra_msa_stack;
    mf_evoformer_stack_config evoformer;
    mf_structure_module_config structure_module;
    mf_heads_config heads;
    mf_loss_config loss;
    mf_data_config data;
    mf_optimizer_config optimizer;
    mf_policy memory; /* JSON "memory": {"chunk", "recompute", ...}, mf_policy_set spellings */
} mf_config;

/* Presets: "tiny" (tests; the sizes of shared/testvectors/config.json), "af2-initial" and
 * "af2-finetune" (AF2 suppl. 1.11, Table 4). */
int mf_config_num_presets(void);
const char *mf_config_preset_name(int i);
const char *mf_config_preset_description(int i);
mf_status mf_config_preset(const char *name, mf_config *cfg);

/* Full JSON of cfg: every field in the table's stable order, plus "schema_version" and "preset".
 * *text is malloc'ed; the caller frees it. */
mf_status mf_config_to_json(const mf_config *cfg, char **text);

/* Starts from the preset named by the file's "base" key (else by its "preset" key when that names
 * a preset, else af2-initial) and overrides the keys present. Unknown keys, wrong types and values
 * out of range are errors naming source_name and the key path. Validates the result. */
mf_status mf_config_from_json(const char *text, mf_config *cfg, const char *source_name);

/* A preset name, or a path to a JSON file. */
mf_status mf_config_load(const char *name_or_file, mf_config *cfg);

/* Writes the full JSON atomically (temporary file, fsync, rename). */
mf_status mf_config_save(const mf_config *cfg, const char *path);

/* One override, "evoformer.num_blocks" = "4": type and range are checked, cross-field rules are
 * not (call mf_config_validate after the last override). */
mf_status mf_config_set(mf_config *cfg, const char *key, const char *value);
/* "key.path=value", as given to --set. */
mf_status mf_config_set_assignment(mf_config *cfg, const char *assignment);

/* load, then each "key=value" of sets in order, then validate. */
mf_status mf_config_load_with_overrides(const char *name_or_file, const char *const *sets,
                                        int n_sets, mf_config *cfg);

/* Rules across fields (bin ranges ordered, masking probabilities summing to at most 1, ...). */
mf_status mf_config_validate(const mf_config *cfg, const char *source_name);

/* The value of one key as text (the JSON spelling). */
mf_status mf_config_get(const mf_config *cfg, const char *key, char *buf, size_t cap);

/* Field by field through the table (and the preset name). On a difference writes
 * "key: a vs b" to diff (when diff != NULL) and returns false. */
bool mf_config_equal(const mf_config *a, const mf_config *b, char *diff, size_t cap);

/* The key table, for listings and tests. */
int mf_config_num_keys(void);
const char *mf_config_key(int i);
/* Longest run of bytes of mf_config that no key covers: a member missing from the table shows up
 * as a run of at least 8 bytes, padding after a bool as less (tests check it). */
size_t mf_config_longest_unlisted_run(void);

#endif
