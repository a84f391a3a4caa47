/* Model configuration: presets, the key table, JSON in and out, --set overrides.
 *
 * Values are AlphaFold 2's: alphafold/model/config.py (model sizes, bins, heads, dropout, loss
 * settings; the monomer model_1 layout of suppl. Table 5, i.e. templates with torsion-angle
 * features) and suppl. 1.11 / Table 4 (the two training stages: crop, N_seq, N_extra_seq, learning
 * rate, warm-up, the loss weights switched on for fine-tuning). OpenFold's openfold/config.py and
 * openfold/utils/lr_schedulers.py give the same numbers for the training section. */
#include "model/config.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ------------------------------------------------------------------------------------------ */
/* The key table                                                                              */
/* ------------------------------------------------------------------------------------------ */

typedef enum { CFG_I64, CFG_F64, CFG_BOOL, CFG_POLICY } cfg_type;

typedef struct {
    const char *path; /* JSON key path, also the --set key */
    cfg_type type;
    size_t offset;
    size_t size;
    double lo, hi; /* allowed range for numbers */
    bool lo_open, hi_open;
} cfg_field;

/* The member's C type picks the field type, so a table entry cannot disagree with the struct. */
#define CFG_TYPE_OF(m)                                                                             \
    _Generic((((mf_config *)0)->m), int64_t : CFG_I64, double : CFG_F64, bool : CFG_BOOL)
#define CFG_SIZE_OF(m) sizeof(((mf_config *)0)->m)

/* 2^53: the largest integer a JSON number (a double) holds exactly. */
#define I64_MAX_JSON 9007199254740992.0
#define BIG          1e9

#define F(path, m, lo, hi)                                                                         \
    {                                                                                              \
        path, CFG_TYPE_OF(m), offsetof(mf_config, m), CFG_SIZE_OF(m), lo, hi, false, false         \
    }
#define POS_INT(path, m)    F(path, m, 1, I64_MAX_JSON)
#define NONNEG_INT(path, m) F(path, m, 0, I64_MAX_JSON)
#define BINS(path, m)       F(path, m, 2, I64_MAX_JSON)
#define NONNEG(path, m)     F(path, m, 0, BIG)
#define PROB(path, m)       F(path, m, 0, 1)
#define FLAG(path, m)       F(path, m, 0, 1)
/* (0, BIG]: lengths, scales, rates that must be positive */
#define POSITIVE(path, m)                                                                          \
    {                                                                                              \
        path, CFG_TYPE_OF(m), offsetof(mf_config, m), CFG_SIZE_OF(m), 0, BIG, true, false          \
    }
/* [0, 1): dropout rates (1/(1-p) rescaling), Adam betas, EMA decay */
#define RATE(path, m)                                                                              \
    {                                                                                              \
        path, CFG_TYPE_OF(m), offsetof(mf_config, m), CFG_SIZE_OF(m), 0, 1, false, true            \
    }
#define POLICY(path)                                                                               \
    {                                                                                              \
        path, CFG_POLICY, offsetof(mf_config, memory), sizeof(mf_policy), 0, 0, false, false       \
    }

#define ATTENTION(prefix, m)                                                                       \
    POS_INT(prefix ".num_heads", m.num_heads), POS_INT(prefix ".c_hidden", m.c_hidden),            \
        RATE(prefix ".dropout_rate", m.dropout_rate)

#define EVOFORMER_STACK(prefix, m, column_key)                                                     \
    POS_INT(prefix ".num_blocks", m.num_blocks),                                                   \
        ATTENTION(prefix ".msa_row_attention_with_pair_bias", m.msa_row_attention),                \
        ATTENTION(prefix "." column_key, m.msa_column_attention),                                  \
        POS_INT(prefix ".msa_transition_factor", m.msa_transition_factor),                         \
        POS_INT(prefix ".outer_product_mean_c_hidden", m.outer_product_mean_c_hidden),             \
        POS_INT(prefix ".triangle_multiplication_c_hidden", m.triangle_multiplication_c_hidden),   \
        RATE(prefix ".triangle_multiplication_dropout_rate",                                       \
             m.triangle_multiplication_dropout_rate),                                              \
        ATTENTION(prefix ".triangle_attention", m.triangle_attention),                             \
        POS_INT(prefix ".pair_transition_factor", m.pair_transition_factor)

static const cfg_field k_fields[] = {
    POS_INT("channels.c_m", channels.c_m),
    POS_INT("channels.c_z", channels.c_z),
    POS_INT("channels.c_t", channels.c_t),
    POS_INT("channels.c_e", channels.c_e),
    POS_INT("channels.c_s", channels.c_s),

    POS_INT("input_embedder.target_feat_dim", input_embedder.target_feat_dim),
    POS_INT("input_embedder.msa_feat_dim", input_embedder.msa_feat_dim),
    POS_INT("input_embedder.extra_msa_feat_dim", input_embedder.extra_msa_feat_dim),
    POS_INT("input_embedder.max_relative_feature", input_embedder.max_relative_feature),

    NONNEG("recycling.min_bin", recycling.min_bin),
    POSITIVE("recycling.max_bin", recycling.max_bin),
    BINS("recycling.num_bins", recycling.num_bins),
    NONNEG_INT("recycling.num_recycle", recycling.num_recycle),
    FLAG("recycling.uniform_in_training", recycling.uniform_in_training),

    FLAG("template.enabled", template_embedding.enabled),
    FLAG("template.embed_torsion_angles", template_embedding.embed_torsion_angles),
    FLAG("template.use_unit_vector", template_embedding.use_unit_vector),
    POS_INT("template.pair_feat_dim", template_embedding.pair_feat_dim),
    POS_INT("template.angle_feat_dim", template_embedding.angle_feat_dim),
    NONNEG("template.dgram.min_bin", template_embedding.dgram_min_bin),
    POSITIVE("template.dgram.max_bin", template_embedding.dgram_max_bin),
    BINS("template.dgram.num_bins", template_embedding.dgram_num_bins),
    POS_INT("template.pair_stack.num_blocks", template_embedding.pair_stack.num_blocks),
    ATTENTION("template.pair_stack.triangle_attention",
              template_embedding.pair_stack.triangle_attention),
    POS_INT("template.pair_stack.triangle_multiplication_c_hidden",
            template_embedding.pair_stack.triangle_multiplication_c_hidden),
    RATE("template.pair_stack.triangle_multiplication_dropout_rate",
         template_embedding.pair_stack.triangle_multiplication_dropout_rate),
    POS_INT("template.pair_stack.pair_transition_factor",
            template_embedding.pair_stack.pair_transition_factor),
    POS_INT("template.pointwise_attention.num_heads",
            template_embedding.pointwise_attention.num_heads),
    POS_INT("template.pointwise_attention.c_hidden",
            template_embedding.pointwise_attention.c_hidden),
    FLAG("template.pointwise_attention.gating", template_embedding.pointwise_attention.gating),

    EVOFORMER_STACK("extra_msa_stack", extra_msa_stack, "msa_column_global_attention"),
    EVOFORMER_STACK("evoformer", evoformer, "msa_column_attention"),

    POS_INT("structure_module.num_layers", structure_module.num_layers),
    POS_INT("structure_module.ipa.num_heads", structure_module.ipa.num_heads),
    POS_INT("structure_module.ipa.c_hidden", structure_module.ipa.c_hidden),
    POS_INT("structure_module.ipa.num_qk_points", structure_module.ipa.num_qk_points),
    POS_INT("structure_module.ipa.num_v_points", structure_module.ipa.num_v_points),
    POS_INT("structure_module.num_transition_layers", structure_module.num_transition_layers),
    POS_INT("structure_module.angle_resnet.c_hidden", structure_module.angle_resnet_c_hidden),
    POS_INT("structure_module.angle_resnet.num_blocks", structure_module.angle_resnet_num_blocks),
    POSITIVE("structure_module.position_scale", structure_module.position_scale),
    RATE("structure_module.dropout_rate", structure_module.dropout_rate),

    BINS("heads.distogram.num_bins", heads.distogram_num_bins),
    NONNEG("heads.distogram.first_break", heads.distogram_first_break),
    POSITIVE("heads.distogram.last_break", heads.distogram_last_break),
    BINS("heads.predicted_lddt.num_bins", heads.predicted_lddt_num_bins),
    POS_INT("heads.predicted_lddt.c_hidden", heads.predicted_lddt_c_hidden),
    POS_INT("heads.masked_msa.num_output", heads.masked_msa_num_output),
    POS_INT("heads.experimentally_resolved.num_output", heads.experimentally_resolved_num_output),
    FLAG("heads.predicted_aligned_error.enabled", heads.predicted_aligned_error_enabled),
    BINS("heads.predicted_aligned_error.num_bins", heads.predicted_aligned_error_num_bins),
    POSITIVE("heads.predicted_aligned_error.max_error_bin",
             heads.predicted_aligned_error_max_error_bin),

    NONNEG("loss.weights.distogram", loss.weights.distogram),
    NONNEG("loss.weights.experimentally_resolved", loss.weights.experimentally_resolved),
    NONNEG("loss.weights.fape", loss.weights.fape),
    NONNEG("loss.weights.plddt_loss", loss.weights.plddt_loss),
    NONNEG("loss.weights.masked_msa", loss.weights.masked_msa),
    NONNEG("loss.weights.supervised_chi", loss.weights.supervised_chi),
    NONNEG("loss.weights.violation", loss.weights.violation),
    NONNEG("loss.weights.predicted_aligned_error", loss.weights.predicted_aligned_error),
    NONNEG("loss.fape.backbone_weight", loss.fape_backbone_weight),
    NONNEG("loss.fape.sidechain_weight", loss.fape_sidechain_weight),
    POSITIVE("loss.fape.clamp_distance", loss.fape_clamp_distance),
    POSITIVE("loss.fape.loss_unit_distance", loss.fape_loss_unit_distance),
    POSITIVE("loss.fape.sidechain_clamp_distance", loss.fape_sidechain_clamp_distance),
    POSITIVE("loss.fape.sidechain_length_scale", loss.fape_sidechain_length_scale),
    PROB("loss.fape.clamp_fraction", loss.fape_clamp_fraction),
    NONNEG("loss.supervised_chi.chi_weight", loss.chi_weight),
    NONNEG("loss.supervised_chi.angle_norm_weight", loss.angle_norm_weight),
    POSITIVE("loss.violation.violation_tolerance_factor", loss.violation_tolerance_factor),
    NONNEG("loss.violation.clash_overlap_tolerance", loss.clash_overlap_tolerance),
    POSITIVE("loss.plddt.cutoff", loss.plddt_cutoff),
    NONNEG("loss.plddt.min_resolution", loss.plddt_min_resolution),
    NONNEG("loss.plddt.max_resolution", loss.plddt_max_resolution),
    NONNEG("loss.experimentally_resolved.min_resolution",
           loss.experimentally_resolved_min_resolution),
    NONNEG("loss.experimentally_resolved.max_resolution",
           loss.experimentally_resolved_max_resolution),
    NONNEG("loss.predicted_aligned_error.min_resolution",
           loss.predicted_aligned_error_min_resolution),
    NONNEG("loss.predicted_aligned_error.max_resolution",
           loss.predicted_aligned_error_max_resolution),

    POS_INT("data.crop_size", data.crop_size),
    POS_INT("data.max_msa_clusters", data.max_msa_clusters),
    POS_INT("data.max_extra_msa", data.max_extra_msa),
    NONNEG_INT("data.max_templates", data.max_templates),
    FLAG("data.subsample_templates", data.subsample_templates),
    FLAG("data.resample_msa_in_recycling", data.resample_msa_in_recycling),
    PROB("data.masked_msa.replace_fraction", data.masked_msa_replace_fraction),
    PROB("data.masked_msa.uniform_prob", data.masked_msa_uniform_prob),
    PROB("data.masked_msa.profile_prob", data.masked_msa_profile_prob),
    PROB("data.masked_msa.same_prob", data.masked_msa_same_prob),
    FLAG("data.block_delete_msa.enabled", data.block_delete_msa),
    PROB("data.block_delete_msa.msa_fraction_per_block", data.block_delete_msa_fraction_per_block),
    NONNEG_INT("data.block_delete_msa.num_blocks", data.block_delete_msa_num_blocks),

    POSITIVE("optimizer.learning_rate", optimizer.learning_rate),
    RATE("optimizer.beta1", optimizer.beta1),
    RATE("optimizer.beta2", optimizer.beta2),
    POSITIVE("optimizer.eps", optimizer.eps),
    NONNEG_INT("optimizer.warmup_steps", optimizer.warmup_steps),
    {"optimizer.decay_factor", CFG_F64, offsetof(mf_config, optimizer.decay_factor), sizeof(double),
     0, 1, true, false},
    NONNEG_INT("optimizer.decay_start_step", optimizer.decay_start_step),
    POS_INT("optimizer.decay_every_steps", optimizer.decay_every_steps),
    NONNEG("optimizer.clip_global_norm", optimizer.clip_global_norm),
    RATE("optimizer.ema_decay", optimizer.ema_decay),
    POS_INT("optimizer.batch_size", optimizer.batch_size),

    POLICY("memory.chunk"),
    POLICY("memory.recompute"),
    POLICY("memory.storage"),
    POLICY("memory.compute"),
    POLICY("memory.offload"),
    POLICY("memory.inplace"),
};

#define N_FIELDS ((int)(sizeof k_fields / sizeof k_fields[0]))

int mf_config_num_keys(void)
{
    return N_FIELDS;
}

const char *mf_config_key(int i)
{
    return i >= 0 && i < N_FIELDS ? k_fields[i].path : NULL;
}

static const cfg_field *find_field(const char *path)
{
    for (int i = 0; i < N_FIELDS; i++)
        if (!strcmp(k_fields[i].path, path)) return &k_fields[i];
    return NULL;
}

/* True when some key lies below path ("evoformer" for "evoformer.num_blocks"). */
static bool is_group(const char *path)
{
    size_t n = strlen(path);
    for (int i = 0; i < N_FIELDS; i++)
        if (!strncmp(k_fields[i].path, path, n) && k_fields[i].path[n] == '.') return true;
    return false;
}

static void *field_ptr(mf_config *cfg, const cfg_field *f)
{
    return (char *)cfg + f->offset;
}

static const void *field_cptr(const mf_config *cfg, const cfg_field *f)
{
    return (const char *)cfg + f->offset;
}

/* "memory.chunk" -> "chunk", the mf_policy_set key */
static const char *policy_key(const cfg_field *f)
{
    return f->path + strlen("memory.");
}

size_t mf_config_longest_unlisted_run(void)
{
    unsigned char covered[sizeof(mf_config)] = {0};
    memset(covered + offsetof(mf_config, preset), 1, MF_CONFIG_NAME_CAP);
    for (int i = 0; i < N_FIELDS; i++) memset(covered + k_fields[i].offset, 1, k_fields[i].size);
    size_t longest = 0, run = 0;
    for (size_t i = 0; i < sizeof covered; i++) {
        run = covered[i] ? 0 : run + 1;
        if (run > longest) longest = run;
    }
    return longest;
}

/* ------------------------------------------------------------------------------------------ */
/* Values: range checks, text form                                                            */
/* ------------------------------------------------------------------------------------------ */

static void describe_range(const cfg_field *f, char *buf, size_t cap)
{
    if (f->type == CFG_BOOL) {
        snprintf(buf, cap, "true or false");
    } else if (f->type == CFG_I64) {
        if (f->lo == 1 && f->hi == I64_MAX_JSON)
            snprintf(buf, cap, "a positive integer");
        else if (f->lo == 0 && f->hi == I64_MAX_JSON)
            snprintf(buf, cap, "a non-negative integer");
        else if (f->hi == I64_MAX_JSON)
            snprintf(buf, cap, "an integer >= %.0f", f->lo);
        else
            snprintf(buf, cap, "an integer in [%.0f, %.0f]", f->lo, f->hi);
    } else if (f->lo == 0 && f->lo_open && f->hi == BIG) {
        snprintf(buf, cap, "a positive number");
    } else if (f->lo == 0 && !f->lo_open && f->hi == BIG) {
        snprintf(buf, cap, "a non-negative number");
    } else {
        snprintf(buf, cap, "a number in %c%g, %g%c", f->lo_open ? '(' : '[', f->lo, f->hi,
                 f->hi_open ? ')' : ']');
    }
}

static bool in_range(const cfg_field *f, double v)
{
    if (!isfinite(v)) return false;
    if (f->lo_open ? !(v > f->lo) : !(v >= f->lo)) return false;
    if (f->hi_open ? !(v < f->hi) : !(v <= f->hi)) return false;
    return true;
}

static mf_status bad_value(const cfg_field *f, const char *src, const char *got)
{
    char want[64];
    describe_range(f, want, sizeof want);
    return MF_ERROR(MF_ERR_INVALID, "%s: %s: expected %s (got %s)", src, f->path, want, got);
}

/* Stores a number after its range and, for integers, integrality check. */
static mf_status store_number(mf_config *cfg, const cfg_field *f, double v, const char *src,
                              const char *got)
{
    if (f->type == CFG_I64) {
        if (!in_range(f, v) || v != floor(v)) return bad_value(f, src, got);
        *(int64_t *)field_ptr(cfg, f) = (int64_t)v;
    } else {
        if (!in_range(f, v)) return bad_value(f, src, got);
        *(double *)field_ptr(cfg, f) = v;
    }
    return MF_OK;
}

static mf_status store_policy(mf_config *cfg, const cfg_field *f, const char *value,
                              const char *src)
{
    mf_status st = mf_policy_set(&cfg->memory, policy_key(f), value);
    if (st != MF_OK) return mf_error_context(st, "%s: %s", src, f->path);
    /* "off" leaves recompute_every behind; reset it so equal policies compare equal bytewise. */
    if (cfg->memory.recompute == MF_RECOMPUTE_OFF) cfg->memory.recompute_every = 1;
    return MF_OK;
}

/* Shortest decimal form that reads back to the same double. */
static void format_double(double v, char *buf, size_t cap)
{
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(buf, cap, "%.*g", prec, v);
        if (strtod(buf, NULL) == v) return;
    }
}

static void format_field(const mf_config *cfg, const cfg_field *f, char *buf, size_t cap)
{
    const void *p = field_cptr(cfg, f);
    switch (f->type) {
    case CFG_I64:
        snprintf(buf, cap, "%lld", (long long)*(const int64_t *)p);
        return;
    case CFG_F64:
        format_double(*(const double *)p, buf, cap);
        return;
    case CFG_BOOL:
        snprintf(buf, cap, "%s", *(const bool *)p ? "true" : "false");
        return;
    case CFG_POLICY:
        break;
    }
    const mf_policy *m = &cfg->memory;
    const char *key = policy_key(f);
    if (!strcmp(key, "chunk"))
        snprintf(buf, cap, "%lld", (long long)m->chunk_size);
    else if (!strcmp(key, "recompute"))
        if (m->recompute == MF_RECOMPUTE_OFF)
            snprintf(buf, cap, "off");
        else if (m->recompute == MF_RECOMPUTE_BLOCK)
            snprintf(buf, cap, "block");
        else
            snprintf(buf, cap, "every:%d", m->recompute_every);
    else if (!strcmp(key, "storage"))
        snprintf(buf, cap, "%s", mf_dtype_name(m->storage));
    else if (!strcmp(key, "compute"))
        snprintf(buf, cap, "%s", mf_dtype_name(m->compute));
    else if (!strcmp(key, "offload"))
        snprintf(buf, cap, "%s", m->offload ? "true" : "false");
    else
        snprintf(buf, cap, "%s", m->inplace ? "true" : "false");
}

/* ------------------------------------------------------------------------------------------ */
/* Presets                                                                                    */
/* ------------------------------------------------------------------------------------------ */

/* AF2 monomer model_1 (suppl. Table 5: templates with torsion-angle features, extra MSA stack) with
 * the initial-training settings of suppl. 1.11 and Table 4. */
static void preset_af2_initial(mf_config *c)
{
    memset(c, 0, sizeof *c);
    snprintf(c->preset, sizeof c->preset, "af2-initial");
    c->channels = (mf_channels_config){.c_m = 256, .c_z = 128, .c_t = 64, .c_e = 64, .c_s = 384};
    c->input_embedder = (mf_input_embedder_config){.target_feat_dim = 22,
                                                   .msa_feat_dim = 49,
                                                   .extra_msa_feat_dim = 25,
                                                   .max_relative_feature = 32};
    /* Alg. 32 distance bins; N_cycle drawn uniformly during training (suppl. 1.10). */
    c->recycling = (mf_recycling_config){.min_bin = 3.25,
                                         .max_bin = 20.75,
                                         .num_bins = 15,
                                         .num_recycle = 3,
                                         .uniform_in_training = true};
    /* config.py's template attention has key_dim 64 over 4 heads: 16 channels per head (the
     * supplement's "64" is the total; OpenFold notes the same discrepancy). */
    c->template_embedding = (mf_template_config){
        .enabled = true,
        .embed_torsion_angles = true,
        .use_unit_vector = false,
        .pair_feat_dim = 88,
        .angle_feat_dim = 57,
        .dgram_min_bin = 3.25,
        .dgram_max_bin = 50.75,
        .dgram_num_bins = 39,
        .pair_stack = {.num_blocks = 2,
                       .triangle_attention = {.num_heads = 4, .c_hidden = 16, .dropout_rate = 0.25},
                       .triangle_multiplication_c_hidden = 64,
                       .triangle_multiplication_dropout_rate = 0.25,
                       .pair_transition_factor = 2},
        .pointwise_attention = {.num_heads = 4, .c_hidden = 16, .gating = false},
    };
    /* config.py leaves key_dim to default to channels / heads: 256/8 = 32 for MSA attention,
     * 128/4 = 32 for triangle attention, 64/8 = 8 in the extra-MSA stack. Dropout: 0.15 on MSA row
     * attention, 0.25 on the triangle updates, 0 elsewhere (suppl. 1.11.6). */
    c->evoformer = (mf_evoformer_stack_config){
        .num_blocks = 48,
        .msa_row_attention = {.num_heads = 8, .c_hidden = 32, .dropout_rate = 0.15},
        .msa_column_attention = {.num_heads = 8, .c_hidden = 32, .dropout_rate = 0.0},
        .msa_transition_factor = 4,
        .outer_product_mean_c_hidden = 32,
        .triangle_multiplication_c_hidden = 128,
        .triangle_multiplication_dropout_rate = 0.25,
        .triangle_attention = {.num_heads = 4, .c_hidden = 32, .dropout_rate = 0.25},
        .pair_transition_factor = 4,
    };
    c->extra_msa_stack = c->evoformer;
    c->extra_msa_stack.num_blocks = 4;
    c->extra_msa_stack.msa_row_attention.c_hidden = 8;
    c->extra_msa_stack.msa_column_attention.c_hidden = 8;
    c->structure_module = (mf_structure_module_config){
        .num_layers = 8,
        .ipa = {.num_heads = 12, .c_hidden = 16, .num_qk_points = 4, .num_v_points = 8},
        .num_transition_layers = 3,
        .angle_resnet_c_hidden = 128,
        .angle_resnet_num_blocks = 2,
        .position_scale = 10.0,
        .dropout_rate = 0.1,
    };
    /* Distogram: 64 bins, 62 edges from 2.3125 to 21.6875 A. PAE: 64 bins, the last open-ended
     * from 31 A (0.5 A wide). pTM/PAE is off in the base models (on in model_N_ptm). */
    c->heads = (mf_heads_config){.distogram_num_bins = 64,
                                 .distogram_first_break = 2.3125,
                                 .distogram_last_break = 21.6875,
                                 .predicted_lddt_num_bins = 50,
                                 .predicted_lddt_c_hidden = 128,
                                 .masked_msa_num_output = 23,
                                 .experimentally_resolved_num_output = 37,
                                 .predicted_aligned_error_enabled = false,
                                 .predicted_aligned_error_num_bins = 64,
                                 .predicted_aligned_error_max_error_bin = 31.0};
    /* Suppl. 1.9 eq. 7: the violation and experimentally-resolved terms join only in
     * fine-tuning (Table 4). FAPE is clamped at 10 A in 90% of samples (suppl. 1.11.5). */
    c->loss = (mf_loss_config){
        .weights = {.distogram = 0.3,
                    .experimentally_resolved = 0.0,
                    .fape = 1.0,
                    .plddt_loss = 0.01,
                    .masked_msa = 2.0,
                    .supervised_chi = 1.0,
                    .violation = 0.0,
                    .predicted_aligned_error = 0.0},
        .fape_backbone_weight = 0.5,
        .fape_sidechain_weight = 0.5,
        .fape_clamp_distance = 10.0,
        .fape_loss_unit_distance = 10.0,
        .fape_sidechain_clamp_distance = 10.0,
        .fape_sidechain_length_scale = 10.0,
        .fape_clamp_fraction = 0.9,
        .chi_weight = 0.5,
        .angle_norm_weight = 0.01,
        .violation_tolerance_factor = 12.0,
        .clash_overlap_tolerance = 1.5,
        .plddt_cutoff = 15.0,
        .plddt_min_resolution = 0.1,
        .plddt_max_resolution = 3.0,
        .experimentally_resolved_min_resolution = 0.1,
        .experimentally_resolved_max_resolution = 3.0,
        .predicted_aligned_error_min_resolution = 0.1,
        .predicted_aligned_error_max_resolution = 3.0,
    };
    /* Table 4, initial training: N_res 256, N_seq 128, N_extra_seq 1024, N_templ 4. BERT masking
     * (suppl. 1.2.7): 15% of positions; of those 10% uniform, 10% profile, 10% unchanged, 70% the
     * mask token. MSA block deletion (suppl. 1.2.6): 5 blocks of 30%. */
    c->data = (mf_data_config){.crop_size = 256,
                               .max_msa_clusters = 128,
                               .max_extra_msa = 1024,
                               .max_templates = 4,
                               .subsample_templates = true,
                               .resample_msa_in_recycling = true,
                               .masked_msa_replace_fraction = 0.15,
                               .masked_msa_uniform_prob = 0.1,
                               .masked_msa_profile_prob = 0.1,
                               .masked_msa_same_prob = 0.1,
                               .block_delete_msa = true,
                               .block_delete_msa_fraction_per_block = 0.3,
                               .block_delete_msa_num_blocks = 5};
    /* Suppl. 1.11.3: Adam, lr 1e-3 after a linear warm-up over 128k samples (1000 steps of
     * 128), x0.95 after 6.4M samples (50k steps), gradients clipped to global norm 0.1 per
     * example, EMA 0.999 of the weights for evaluation, mini-batch 128. */
    c->optimizer = (mf_optimizer_config){.learning_rate = 1e-3,
                                         .beta1 = 0.9,
                                         .beta2 = 0.999,
                                         .eps = 1e-6,
                                         .warmup_steps = 1000,
                                         .decay_factor = 0.95,
                                         .decay_start_step = 50000,
                                         .decay_every_steps = 50000,
                                         .clip_global_norm = 0.1,
                                         .ema_decay = 0.999,
                                         .batch_size = 128};
    /* Training rematerialises every Evoformer block (OpenFold's training setting
     * blocks_per_ckpt = 1); chunking is an inference-time saving in AF2. */
    c->memory = mf_policy_default();
    c->memory.recompute = MF_RECOMPUTE_BLOCK;
    c->memory.recompute_every = 1;
}

/* Table 4, fine-tuning: larger crop and MSA, half the learning rate without warm-up, and the
 * violation (1.0) and experimentally-resolved (0.01) losses switched on. */
static void preset_af2_finetune(mf_config *c)
{
    preset_af2_initial(c);
    snprintf(c->preset, sizeof c->preset, "af2-finetune");
    c->data.crop_size = 384;
    c->data.max_msa_clusters = 512;
    c->data.max_extra_msa = 5120;
    c->optimizer.learning_rate = 5e-4;
    c->optimizer.warmup_steps = 0;
    c->loss.weights.violation = 1.0;
    c->loss.weights.experimentally_resolved = 0.01;
}

/* The shrunk model of shared/testvectors/config.json (its sizes, bins and loss settings, which are
 * the fine-tuning loss weights), dropout 0 and FAPE always clamped like the reference, and a small
 * crop and MSA for CPU tests. */
static void preset_tiny(mf_config *c)
{
    preset_af2_finetune(c);
    snprintf(c->preset, sizeof c->preset, "tiny");
    c->channels = (mf_channels_config){.c_m = 32, .c_z = 16, .c_t = 16, .c_e = 16, .c_s = 32};
    c->recycling.num_recycle = 1;

    mf_template_config *t = &c->template_embedding;
    t->pair_stack.num_blocks = 1;
    t->pair_stack.triangle_attention = (mf_attention_config){2, 8, 0.0};
    t->pair_stack.triangle_multiplication_c_hidden = 16;
    t->pair_stack.triangle_multiplication_dropout_rate = 0.0;
    t->pair_stack.pair_transition_factor = 2;
    t->pointwise_attention = (mf_template_pointwise_config){2, 8, false};

    mf_evoformer_stack_config e = {
        .num_blocks = 2,
        .msa_row_attention = {4, 8, 0.0},
        .msa_column_attention = {4, 8, 0.0},
        .msa_transition_factor = 4,
        .outer_product_mean_c_hidden = 8,
        .triangle_multiplication_c_hidden = 16,
        .triangle_multiplication_dropout_rate = 0.0,
        .triangle_attention = {2, 8, 0.0},
        .pair_transition_factor = 4,
    };
    c->evoformer = e;
    c->extra_msa_stack = e;
    c->extra_msa_stack.num_blocks = 1;

    c->structure_module.num_layers = 2;
    c->structure_module.ipa = (mf_ipa_config){4, 8, 4, 8};
    c->structure_module.angle_resnet_c_hidden = 16;
    c->structure_module.dropout_rate = 0.0;
    c->heads.predicted_lddt_c_hidden = 16;
    c->loss.fape_clamp_fraction = 1.0;

    c->data.crop_size = 64;
    c->data.max_msa_clusters = 8;
    c->data.max_extra_msa = 16;
    c->data.max_templates = 2;
    /* One sample per step on a CPU, a short warm-up so short test runs move. */
    c->optimizer.batch_size = 1;
    c->optimizer.warmup_steps = 10;
    c->optimizer.learning_rate = 1e-3;
    c->memory = mf_policy_default();
}

static const struct {
    const char *name;
    const char *description;
    void (*fill)(mf_config *);
} k_presets[] = {
    {"tiny", "the shrunk model of shared/testvectors/config.json, crop 64, for tests", preset_tiny},
    {"af2-initial", "AlphaFold 2 model_1, initial training (suppl. 1.11, Table 4)",
     preset_af2_initial},
    {"af2-finetune", "AlphaFold 2 model_1, fine-tuning (suppl. 1.11, Table 4)",
     preset_af2_finetune},
};

#define N_PRESETS ((int)(sizeof k_presets / sizeof k_presets[0]))

int mf_config_num_presets(void)
{
    return N_PRESETS;
}

const char *mf_config_preset_name(int i)
{
    return i >= 0 && i < N_PRESETS ? k_presets[i].name : NULL;
}

const char *mf_config_preset_description(int i)
{
    return i >= 0 && i < N_PRESETS ? k_presets[i].description : NULL;
}

static int preset_index(const char *name)
{
    for (int i = 0; i < N_PRESETS; i++)
        if (!strcmp(k_presets[i].name, name)) return i;
    return -1;
}

mf_status mf_config_preset(const char *name, mf_config *cfg)
{
    MF_REQUIRE(name && cfg, "mf_config_preset: NULL argument");
    int i = preset_index(name);
    if (i < 0)
        return MF_ERROR(MF_ERR_INVALID,
                        "unknown config preset '%s' (tiny, af2-initial, "
                        "af2-finetune)",
                        name);
    k_presets[i].fill(cfg);
    return MF_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* Validation, get, set, equality                                                             */
/* ------------------------------------------------------------------------------------------ */

mf_status mf_config_validate(const mf_config *c, const char *src)
{
    if (!src) src = "config";
    if (!(c->recycling.min_bin < c->recycling.max_bin))
        return MF_ERROR(MF_ERR_INVALID, "%s: recycling: min_bin %g must be below max_bin %g", src,
                        c->recycling.min_bin, c->recycling.max_bin);
    if (!(c->template_embedding.dgram_min_bin < c->template_embedding.dgram_max_bin))
        return MF_ERROR(MF_ERR_INVALID, "%s: template.dgram: min_bin %g must be below max_bin %g",
                        src, c->template_embedding.dgram_min_bin,
                        c->template_embedding.dgram_max_bin);
    if (!(c->heads.distogram_first_break < c->heads.distogram_last_break))
        return MF_ERROR(MF_ERR_INVALID,
                        "%s: heads.distogram: first_break %g must be below last_break %g", src,
                        c->heads.distogram_first_break, c->heads.distogram_last_break);
    const struct {
        const char *what;
        double lo, hi;
    } res[] = {
        {"loss.plddt", c->loss.plddt_min_resolution, c->loss.plddt_max_resolution},
        {"loss.experimentally_resolved", c->loss.experimentally_resolved_min_resolution,
         c->loss.experimentally_resolved_max_resolution},
        {"loss.predicted_aligned_error", c->loss.predicted_aligned_error_min_resolution,
         c->loss.predicted_aligned_error_max_resolution},
    };
    for (size_t i = 0; i < sizeof res / sizeof res[0]; i++)
        if (!(res[i].lo <= res[i].hi))
            return MF_ERROR(MF_ERR_INVALID,
                            "%s: %s: min_resolution %g must not exceed max_resolution %g", src,
                            res[i].what, res[i].lo, res[i].hi);
    double p = c->data.masked_msa_uniform_prob + c->data.masked_msa_profile_prob +
               c->data.masked_msa_same_prob;
    if (p > 1.0 + 1e-12)
        return MF_ERROR(MF_ERR_INVALID,
                        "%s: data.masked_msa: uniform_prob + profile_prob + same_prob = %g "
                        "exceeds 1",
                        src, p);
    if (c->optimizer.warmup_steps > c->optimizer.decay_start_step)
        return MF_ERROR(MF_ERR_INVALID,
                        "%s: optimizer: warmup_steps %lld must not exceed decay_start_step %lld",
                        src, (long long)c->optimizer.warmup_steps,
                        (long long)c->optimizer.decay_start_step);
    return MF_OK;
}

mf_status mf_config_get(const mf_config *cfg, const char *key, char *buf, size_t cap)
{
    MF_REQUIRE(cfg && key && buf && cap > 0, "mf_config_get: NULL argument");
    const cfg_field *f = find_field(key);
    if (!f) return MF_ERROR(MF_ERR_INVALID, "config: %s: unknown key", key);
    format_field(cfg, f, buf, cap);
    return MF_OK;
}

static mf_status set_from_text(mf_config *cfg, const cfg_field *f, const char *v, const char *src)
{
    char got[96];
    snprintf(got, sizeof got, "'%s'", v);
    switch (f->type) {
    case CFG_I64: {
        char *end = NULL;
        errno = 0;
        long long n = strtoll(v, &end, 10);
        if (!*v || *end || errno) return bad_value(f, src, got);
        return store_number(cfg, f, (double)n, src, got);
    }
    case CFG_F64: {
        char *end = NULL;
        errno = 0;
        double d = strtod(v, &end);
        if (!*v || *end || errno) return bad_value(f, src, got);
        return store_number(cfg, f, d, src, got);
    }
    case CFG_BOOL:
        if (!strcmp(v, "true") || !strcmp(v, "on") || !strcmp(v, "1")) {
            *(bool *)field_ptr(cfg, f) = true;
        } else if (!strcmp(v, "false") || !strcmp(v, "off") || !strcmp(v, "0")) {
            *(bool *)field_ptr(cfg, f) = false;
        } else {
            return bad_value(f, src, got);
        }
        return MF_OK;
    case CFG_POLICY:
        return store_policy(cfg, f, v, src);
    }
    return MF_ERROR(MF_ERR_INVALID, "%s: %s: bad field type", src, f->path);
}

mf_status mf_config_set(mf_config *cfg, const char *key, const char *value)
{
    MF_REQUIRE(cfg && key && value, "mf_config_set: NULL argument");
    const cfg_field *f = find_field(key);
    if (!f) {
        if (is_group(key))
            return MF_ERROR(MF_ERR_INVALID,
                            "--set %s: a group of keys, not a value ('memfold config keys' lists "
                            "the keys)",
                            key);
        return MF_ERROR(MF_ERR_INVALID,
                        "--set %s: unknown key ('memfold config keys' lists the keys)", key);
    }
    return set_from_text(cfg, f, value, "--set");
}

mf_status mf_config_set_assignment(mf_config *cfg, const char *assignment)
{
    MF_REQUIRE(cfg && assignment, "mf_config_set_assignment: NULL argument");
    const char *eq = strchr(assignment, '=');
    if (!eq || eq == assignment)
        return MF_ERROR(MF_ERR_INVALID, "--set '%s': expected key.path=value", assignment);
    char key[256];
    size_t n = (size_t)(eq - assignment);
    if (n >= sizeof key) return MF_ERROR(MF_ERR_INVALID, "--set: key too long");
    memcpy(key, assignment, n);
    key[n] = 0;
    return mf_config_set(cfg, key, eq + 1);
}

bool mf_config_equal(const mf_config *a, const mf_config *b, char *diff, size_t cap)
{
    if (strcmp(a->preset, b->preset)) {
        if (diff) snprintf(diff, cap, "preset: '%s' vs '%s'", a->preset, b->preset);
        return false;
    }
    for (int i = 0; i < N_FIELDS; i++) {
        const cfg_field *f = &k_fields[i];
        bool same;
        if (f->type == CFG_POLICY) {
            char x[64], y[64];
            format_field(a, f, x, sizeof x);
            format_field(b, f, y, sizeof y);
            same = !strcmp(x, y);
        } else {
            /* bitwise: a round trip must give back the very same double */
            same = !memcmp(field_cptr(a, f), field_cptr(b, f), f->size);
        }
        if (!same) {
            if (diff) {
                char x[64], y[64];
                format_field(a, f, x, sizeof x);
                format_field(b, f, y, sizeof y);
                snprintf(diff, cap, "%s: %s vs %s", f->path, x, y);
            }
            return false;
        }
    }
    return true;
}

/* ------------------------------------------------------------------------------------------ */
/* JSON                                                                                       */
/* ------------------------------------------------------------------------------------------ */

/* The object at the parent path of `path` under root, created in table order. */
static cJSON *parent_object(cJSON *root, const char *path, const char **leaf)
{
    cJSON *obj = root;
    const char *s = path;
    const char *dot;
    while ((dot = strchr(s, '.')) != NULL) {
        char seg[96];
        size_t n = (size_t)(dot - s);
        if (n >= sizeof seg) return NULL;
        memcpy(seg, s, n);
        seg[n] = 0;
        cJSON *next = cJSON_GetObjectItemCaseSensitive(obj, seg);
        if (!next) {
            next = cJSON_AddObjectToObject(obj, seg);
            if (!next) return NULL;
        }
        obj = next;
        s = dot + 1;
    }
    *leaf = s;
    return obj;
}

static cJSON *field_to_json(const mf_config *cfg, const cfg_field *f)
{
    const void *p = field_cptr(cfg, f);
    switch (f->type) {
    case CFG_I64:
        return cJSON_CreateNumber((double)*(const int64_t *)p);
    case CFG_F64:
        return cJSON_CreateNumber(*(const double *)p);
    case CFG_BOOL:
        return cJSON_CreateBool(*(const bool *)p);
    case CFG_POLICY:
        break;
    }
    const char *key = policy_key(f);
    if (!strcmp(key, "chunk")) return cJSON_CreateNumber((double)cfg->memory.chunk_size);
    if (!strcmp(key, "offload")) return cJSON_CreateBool(cfg->memory.offload);
    if (!strcmp(key, "inplace")) return cJSON_CreateBool(cfg->memory.inplace);
    char buf[64];
    format_field(cfg, f, buf, sizeof buf);
    return cJSON_CreateString(buf);
}

mf_status mf_config_to_json(const mf_config *cfg, char **text)
{
    MF_REQUIRE(cfg && text, "mf_config_to_json: NULL argument");
    *text = NULL;
    mf_status st = MF_OK;
    cJSON *root = cJSON_CreateObject();
    if (!root) return MF_ERROR(MF_ERR_NOMEM, "config to JSON: out of memory");
    if (!cJSON_AddNumberToObject(root, "schema_version", MF_CONFIG_SCHEMA_VERSION) ||
        !cJSON_AddStringToObject(root, "preset", cfg->preset)) {
        st = MF_ERROR(MF_ERR_NOMEM, "config to JSON: out of memory");
        goto cleanup;
    }
    for (int i = 0; i < N_FIELDS; i++) {
        const char *leaf = NULL;
        cJSON *parent = parent_object(root, k_fields[i].path, &leaf);
        cJSON *v = parent ? field_to_json(cfg, &k_fields[i]) : NULL;
        if (!v || !cJSON_AddItemToObject(parent, leaf, v)) {
            cJSON_Delete(v);
            st = MF_ERROR(MF_ERR_NOMEM, "config to JSON: cannot add %s", k_fields[i].path);
            goto cleanup;
        }
    }
    char *printed = cJSON_Print(root);
    if (!printed) {
        st = MF_ERROR(MF_ERR_NOMEM, "config to JSON: cannot print");
        goto cleanup;
    }
    /* Hand back plain malloc'ed memory whatever cJSON's allocator is. */
    size_t n = strlen(printed);
    *text = malloc(n + 2);
    if (*text) {
        memcpy(*text, printed, n);
        (*text)[n] = '\n';
        (*text)[n + 1] = 0;
    } else {
        st = MF_ERROR(MF_ERR_NOMEM, "config to JSON: out of memory");
    }
    cJSON_free(printed);
cleanup:
    cJSON_Delete(root);
    return st;
}

static mf_status apply_json_value(mf_config *cfg, const cfg_field *f, const cJSON *v,
                                  const char *src)
{
    char got[96];
    if (cJSON_IsNumber(v))
        format_double(v->valuedouble, got, sizeof got);
    else if (cJSON_IsString(v))
        snprintf(got, sizeof got, "\"%.80s\"", v->valuestring);
    else if (cJSON_IsBool(v))
        snprintf(got, sizeof got, "%s", cJSON_IsTrue(v) ? "true" : "false");
    else if (cJSON_IsObject(v))
        snprintf(got, sizeof got, "an object");
    else if (cJSON_IsArray(v))
        snprintf(got, sizeof got, "an array");
    else
        snprintf(got, sizeof got, "null");

    switch (f->type) {
    case CFG_I64:
    case CFG_F64:
        if (!cJSON_IsNumber(v)) return bad_value(f, src, got);
        return store_number(cfg, f, v->valuedouble, src, got);
    case CFG_BOOL:
        if (!cJSON_IsBool(v)) return bad_value(f, src, got);
        *(bool *)field_ptr(cfg, f) = cJSON_IsTrue(v);
        return MF_OK;
    case CFG_POLICY:
        break;
    }
    char text[96];
    if (cJSON_IsString(v)) {
        snprintf(text, sizeof text, "%s", v->valuestring);
    } else if (cJSON_IsBool(v)) {
        snprintf(text, sizeof text, "%s", cJSON_IsTrue(v) ? "on" : "off");
    } else if (cJSON_IsNumber(v) && v->valuedouble == floor(v->valuedouble) &&
               fabs(v->valuedouble) < I64_MAX_JSON) {
        snprintf(text, sizeof text, "%lld", (long long)v->valuedouble);
    } else {
        return MF_ERROR(MF_ERR_INVALID,
                        "%s: %s: expected a string, integer or boolean in mf_policy_set spelling "
                        "(got %s)",
                        src, f->path, got);
    }
    return store_policy(cfg, f, text, src);
}

static mf_status apply_object(mf_config *cfg, const cJSON *obj, const char *prefix, const char *src)
{
    for (const cJSON *child = obj->child; child; child = child->next) {
        char path[256];
        const char *name = child->string ? child->string : "";
        int n = prefix ? snprintf(path, sizeof path, "%s.%s", prefix, name)
                       : snprintf(path, sizeof path, "%s", name);
        if (n < 0 || (size_t)n >= sizeof path)
            return MF_ERROR(MF_ERR_INVALID, "%s: key path too long: %.64s...", src, path);
        if (!prefix &&
            (!strcmp(name, "schema_version") || !strcmp(name, "preset") || !strcmp(name, "base")))
            continue;
        const cfg_field *f = find_field(path);
        if (f) {
            MF_TRY(apply_json_value(cfg, f, child, src));
        } else if (is_group(path)) {
            if (!cJSON_IsObject(child))
                return MF_ERROR(MF_ERR_INVALID, "%s: %s: expected an object", src, path);
            MF_TRY(apply_object(cfg, child, path, src));
        } else {
            return MF_ERROR(MF_ERR_INVALID, "%s: %s: unknown key", src, path);
        }
    }
    return MF_OK;
}

/* 1-based line and column of byte offset pos in text */
static void line_col(const char *text, size_t pos, int *line, int *col)
{
    *line = 1;
    *col = 1;
    for (size_t i = 0; i < pos && text[i]; i++) {
        if (text[i] == '\n') {
            ++*line;
            *col = 1;
        } else {
            ++*col;
        }
    }
}

mf_status mf_config_from_json(const char *text, mf_config *cfg, const char *src)
{
    MF_REQUIRE(text && cfg, "mf_config_from_json: NULL argument");
    if (!src) src = "config";
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithOpts(text, &end, 1);
    if (!root) {
        int line, col;
        const char *at = end ? end : cJSON_GetErrorPtr();
        line_col(text, at ? (size_t)(at - text) : 0, &line, &col);
        return MF_ERROR(MF_ERR_FORMAT, "%s:%d:%d: malformed JSON", src, line, col);
    }
    mf_status st = MF_OK;
    mf_config out;
    if (!cJSON_IsObject(root)) {
        st = MF_ERROR(MF_ERR_FORMAT, "%s: expected a JSON object at the top level", src);
        goto cleanup;
    }
    const cJSON *ver = cJSON_GetObjectItemCaseSensitive(root, "schema_version");
    if (ver && !(cJSON_IsNumber(ver) && ver->valuedouble == MF_CONFIG_SCHEMA_VERSION)) {
        st = MF_ERROR(MF_ERR_FORMAT, "%s: schema_version: expected %d (this build reads schema %d)",
                      src, MF_CONFIG_SCHEMA_VERSION, MF_CONFIG_SCHEMA_VERSION);
        goto cleanup;
    }
    const cJSON *base = cJSON_GetObjectItemCaseSensitive(root, "base");
    const cJSON *preset = cJSON_GetObjectItemCaseSensitive(root, "preset");
    if (base && !cJSON_IsString(base)) {
        st = MF_ERROR(MF_ERR_INVALID, "%s: base: expected a preset name (string)", src);
        goto cleanup;
    }
    if (preset && (!cJSON_IsString(preset) || strlen(preset->valuestring) >= MF_CONFIG_NAME_CAP)) {
        st = MF_ERROR(MF_ERR_INVALID, "%s: preset: expected a string of at most %d characters", src,
                      MF_CONFIG_NAME_CAP - 1);
        goto cleanup;
    }
    /* A file written by mf_config_to_json names its preset, so keys added to the schema later
     * default to that preset's values. */
    const char *base_name = "af2-initial";
    if (base)
        base_name = base->valuestring;
    else if (preset && preset_index(preset->valuestring) >= 0)
        base_name = preset->valuestring;
    if (preset_index(base_name) < 0) {
        st = MF_ERROR(MF_ERR_INVALID,
                      "%s: base: unknown preset '%s' (tiny, af2-initial, "
                      "af2-finetune)",
                      src, base_name);
        goto cleanup;
    }
    MF_TRY_GOTO(mf_config_preset(base_name, &out));
    if (preset) snprintf(out.preset, sizeof out.preset, "%s", preset->valuestring);
    MF_TRY_GOTO(apply_object(&out, root, NULL, src));
    MF_TRY_GOTO(mf_config_validate(&out, src));
    *cfg = out;
cleanup:
    cJSON_Delete(root);
    return st;
}

static mf_status read_text_file(const char *path, char **text)
{
    *text = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return MF_ERROR(MF_ERR_IO, "cannot open config '%s': %s", path, strerror(errno));
    mf_status st = MF_OK;
    char *buf = NULL;
    long n;
    if (fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0) {
        st = MF_ERROR(MF_ERR_IO, "cannot read config '%s': %s", path, strerror(errno));
        goto cleanup;
    }
    if (n > (16L << 20)) {
        st = MF_ERROR(MF_ERR_FORMAT, "config '%s' is %ld bytes: too large for a config", path, n);
        goto cleanup;
    }
    buf = malloc((size_t)n + 1);
    if (!buf) {
        st = MF_ERROR(MF_ERR_NOMEM, "reading config '%s': out of memory", path);
        goto cleanup;
    }
    if (fread(buf, 1, (size_t)n, f) != (size_t)n) {
        st = MF_ERROR(MF_ERR_IO, "cannot read config '%s'", path);
        goto cleanup;
    }
    buf[n] = 0;
    if (strlen(buf) != (size_t)n) {
        st = MF_ERROR(MF_ERR_FORMAT, "config '%s' contains a NUL byte", path);
        goto cleanup;
    }
    *text = buf;
    buf = NULL;
cleanup:
    free(buf);
    fclose(f);
    return st;
}

mf_status mf_config_load(const char *name_or_file, mf_config *cfg)
{
    MF_REQUIRE(name_or_file && cfg, "mf_config_load: NULL argument");
    if (preset_index(name_or_file) >= 0) return mf_config_preset(name_or_file, cfg);
    bool looks_like_file = strchr(name_or_file, '/') || strstr(name_or_file, ".json") ||
                           access(name_or_file, F_OK) == 0;
    if (!looks_like_file)
        return MF_ERROR(MF_ERR_INVALID,
                        "--config %s: neither a preset (tiny, af2-initial, af2-finetune) nor a "
                        ".json file",
                        name_or_file);
    char *text = NULL;
    MF_TRY(read_text_file(name_or_file, &text));
    mf_status st = mf_config_from_json(text, cfg, name_or_file);
    free(text);
    return st;
}

mf_status mf_config_load_with_overrides(const char *name_or_file, const char *const *sets,
                                        int n_sets, mf_config *cfg)
{
    MF_REQUIRE(name_or_file && cfg && (n_sets == 0 || sets),
               "mf_config_load_with_overrides: NULL argument");
    mf_config c;
    MF_TRY(mf_config_load(name_or_file, &c));
    for (int i = 0; i < n_sets; i++) MF_TRY(mf_config_set_assignment(&c, sets[i]));
    MF_TRY(mf_config_validate(&c, n_sets ? "--set" : name_or_file));
    *cfg = c;
    return MF_OK;
}

mf_status mf_config_save(const mf_config *cfg, const char *path)
{
    MF_REQUIRE(cfg && path, "mf_config_save: NULL argument");
    char *text = NULL;
    MF_TRY(mf_config_to_json(cfg, &text));
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof tmp) {
        free(text);
        return MF_ERROR(MF_ERR_INVALID, "config path too long: %s", path);
    }
    mf_status st = MF_OK;
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        st = MF_ERROR(MF_ERR_IO, "cannot create '%s': %s", tmp, strerror(errno));
        goto cleanup;
    }
    size_t n = strlen(text);
    bool ok = fwrite(text, 1, n, f) == n && fflush(f) == 0 && fsync(fileno(f)) == 0;
    int saved_errno = errno;
    if (fclose(f) != 0) ok = false;
    if (!ok) {
        remove(tmp);
        st = MF_ERROR(MF_ERR_IO, "cannot write '%s': %s", tmp, strerror(saved_errno));
        goto cleanup;
    }
    if (rename(tmp, path) != 0) {
        saved_errno = errno;
        remove(tmp);
        st =
            MF_ERROR(MF_ERR_IO, "cannot rename '%s' to '%s': %s", tmp, path, strerror(saved_errno));
    }
cleanup:
    free(text);
    return st;
}
