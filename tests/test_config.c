/* Model configuration: presets round-trip through JSON, overrides from files and --set, errors
 * that name the source and key, AF2 values in the presets, and tiny == testvectors/config.json.
 * Every comparison here is exact (configuration values, not arithmetic). */
#include <cjson/cJSON.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "model/config.h"
#include "tests/support/mf_test.h"

static int g_checked;

static void check(bool ok, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void check(bool ok, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    g_checked++;
    if (ok)
        printf("  ok   %s\n", msg);
    else
        mf_test_fail("%s", msg);
}

static bool json_roundtrip(const mf_config *cfg, const char *what)
{
    char *text = NULL, *text2 = NULL;
    mf_config back;
    memset(&back, 0, sizeof back);
    bool ok = false;
    char diff[256] = "";
    if (mf_config_to_json(cfg, &text) != MF_OK) {
        check(false, "%s: to_json: %s", what, mf_last_error());
        goto out;
    }
    if (mf_config_from_json(text, &back, what) != MF_OK) {
        check(false, "%s: from_json(to_json): %s", what, mf_last_error());
        goto out;
    }
    ok = mf_config_equal(cfg, &back, diff, sizeof diff);
    check(ok, "%s: to_json -> from_json gives the same config, field by field (exact)%s%s", what,
          ok ? "" : ": ", diff);
    if (mf_config_to_json(&back, &text2) == MF_OK)
        check(!strcmp(text, text2), "%s: JSON text is stable (identical after the round trip)",
              what);
out:
    free(text);
    free(text2);
    return ok;
}

/* 1. Every preset round-trips; the key table covers the struct. */
static void test_presets_roundtrip(void)
{
    printf("presets round trip:\n");
    size_t run = mf_config_longest_unlisted_run();
    check(run < 8,
          "every mf_config member is in the key table (longest uncovered byte run %zu < 8)", run);
    for (int i = 0; i < mf_config_num_presets(); i++) {
        mf_config c;
        const char *name = mf_config_preset_name(i);
        MF_TEST_OK(mf_config_preset(name, &c));
        check(!strcmp(c.preset, name), "preset %s records its name", name);
        MF_TEST_OK(mf_config_validate(&c, name));
        json_roundtrip(&c, name);
        mf_config viaload;
        MF_TEST_OK(mf_config_load(name, &viaload));
        check(mf_config_equal(&c, &viaload, NULL, 0), "mf_config_load(\"%s\") == the preset", name);
    }
    char *text = NULL;
    mf_config c;
    MF_TEST_OK(mf_config_preset("tiny", &c));
    MF_TEST_OK(mf_config_to_json(&c, &text));
    check(text && strstr(text, "\"schema_version\":\t1") && strstr(text, "\"preset\":\t\"tiny\""),
          "to_json writes schema_version 1 and the preset name");
    free(text);
}

/* 2. Each key, changed alone, survives JSON and is seen by mf_config_equal. */
static void test_every_key_roundtrip(void)
{
    printf("every key changed alone, from af2-initial:\n");
    mf_config base;
    MF_TEST_OK(mf_config_preset("af2-initial", &base));
    int n_ok = 0, n = mf_config_num_keys();
    for (int i = 0; i < n; i++) {
        const char *key = mf_config_key(i);
        char v[64], nv[64];
        MF_TEST_OK(mf_config_get(&base, key, v, sizeof v));
        if (!strcmp(v, "true") || !strcmp(v, "false")) {
            snprintf(nv, sizeof nv, "%s", !strcmp(v, "true") ? "false" : "true");
        } else if (!strcmp(key, "memory.chunk")) {
            snprintf(nv, sizeof nv, "48");
        } else if (!strcmp(key, "memory.recompute")) {
            snprintf(nv, sizeof nv, "every:3");
        } else if (!strcmp(key, "memory.storage") || !strcmp(key, "memory.compute")) {
            snprintf(nv, sizeof nv, "bf16");
        } else if (!strchr(v, '.') && !strchr(v, 'e')) {
            snprintf(nv, sizeof nv, "%lld", atoll(v) + 1);
        } else {
            double d = strtod(v, NULL);
            snprintf(nv, sizeof nv, "%.17g", d != 0 ? d * 0.5 : 0.25);
        }
        mf_config c = base;
        /* "0" is an integer or a double: 1 suits counts and weights, 0.25 suits rates in [0, 1). */
        if (!strcmp(v, "0")) {
            snprintf(nv, sizeof nv, "1");
            if (mf_config_set(&c, key, nv) != MF_OK) snprintf(nv, sizeof nv, "0.25");
            mf_clear_error();
        }
        if (mf_config_set(&c, key, nv) != MF_OK) {
            check(false, "set %s=%s: %s", key, nv, mf_last_error());
            continue;
        }
        char diff[256] = "";
        bool differs = !mf_config_equal(&base, &c, diff, sizeof diff);
        size_t kl = strlen(key);
        if (!differs || strncmp(diff, key, kl) || diff[kl] != ':') {
            check(false, "%s=%s: mf_config_equal reports '%s'", key, nv, diff);
            continue;
        }
        char *text = NULL;
        mf_config back;
        if (mf_config_to_json(&c, &text) != MF_OK ||
            mf_config_from_json(text, &back, key) != MF_OK) {
            check(false, "%s=%s: JSON round trip: %s", key, nv, mf_last_error());
            free(text);
            continue;
        }
        free(text);
        if (!mf_config_equal(&c, &back, diff, sizeof diff)) {
            check(false, "%s=%s: round trip differs: %s", key, nv, diff);
            continue;
        }
        n_ok++;
    }
    check(n_ok == n, "%d of %d keys: set, detected by mf_config_equal, JSON round trip exact", n_ok,
          n);
}

static bool write_file(char *path_template, int suffix_len, const char *text)
{
    int fd = mkstemps(path_template, suffix_len);
    if (fd < 0) return false;
    size_t n = strlen(text);
    bool ok = write(fd, text, n) == (ssize_t)n;
    close(fd);
    return ok;
}

/* 3. Files with overrides, the default base, --set. */
static void test_overrides(void)
{
    printf("overrides:\n");
    char path[] = "/tmp/mf_test_configXXXXXX.json";
    const char *text = "{\n"
                       "  \"base\": \"tiny\",\n"
                       "  \"evoformer\": {\"num_blocks\": 4,\n"
                       "    \"msa_row_attention_with_pair_bias\": {\"num_heads\": 2}},\n"
                       "  \"loss\": {\"weights\": {\"violation\": 0.5}},\n"
                       "  \"memory\": {\"chunk\": 64, \"recompute\": \"block\", \"storage\": "
                       "\"bf16\", \"offload\": true}\n"
                       "}\n";
    if (!write_file(path, 5, text)) {
        check(false, "cannot write a temporary config file");
        return;
    }
    mf_config c, tiny;
    MF_TEST_OK(mf_config_preset("tiny", &tiny));
    if (mf_config_load(path, &c) != MF_OK) {
        check(false, "load %s: %s", path, mf_last_error());
        unlink(path);
        return;
    }
    check(c.evoformer.num_blocks == 4 && c.evoformer.msa_row_attention.num_heads == 2 &&
              c.loss.weights.violation == 0.5,
          "file overrides: evoformer.num_blocks 4, row attention heads 2, violation weight 0.5");
    check(c.memory.chunk_size == 64 && c.memory.recompute == MF_RECOMPUTE_BLOCK &&
              c.memory.storage == MF_BF16 && c.memory.offload && !c.memory.inplace,
          "file overrides memory policy: chunk 64, recompute block, storage bf16, offload on");
    check(!strcmp(c.preset, "tiny"), "a file with base tiny reports preset tiny");
    /* Undo the overrides: everything else must be tiny's. */
    mf_config u = c;
    u.evoformer.num_blocks = tiny.evoformer.num_blocks;
    u.evoformer.msa_row_attention.num_heads = tiny.evoformer.msa_row_attention.num_heads;
    u.loss.weights.violation = tiny.loss.weights.violation;
    u.memory = tiny.memory;
    char diff[256] = "";
    check(mf_config_equal(&u, &tiny, diff, sizeof diff),
          "keys the file does not give keep tiny's values %s", diff);
    json_roundtrip(&c, "tiny + file overrides");
    unlink(path);

    /* No base: af2-initial. */
    mf_config d, initial;
    MF_TEST_OK(mf_config_preset("af2-initial", &initial));
    MF_TEST_OK(mf_config_from_json("{\"data\": {\"crop_size\": 128}}", &d, "nobase.json"));
    check(d.data.crop_size == 128 && d.channels.c_m == 256 && !strcmp(d.preset, "af2-initial"),
          "a file without base starts from af2-initial (c_m 256, crop_size overridden to 128)");

    /* A file written by to_json loads back by path. */
    char path2[] = "/tmp/mf_test_configXXXXXX.json";
    int fd = mkstemps(path2, 5);
    if (fd >= 0) close(fd);
    MF_TEST_OK(mf_config_save(&c, path2));
    mf_config e;
    MF_TEST_OK(mf_config_load(path2, &e));
    check(mf_config_equal(&c, &e, diff, sizeof diff),
          "mf_config_save then mf_config_load: equal %s", diff);
    unlink(path2);

    /* --set */
    const char *sets[] = {"evoformer.num_blocks=3", "memory.chunk=off", "memory.recompute=every:2",
                          "template.enabled=false", "optimizer.learning_rate=2.5e-4"};
    mf_config s;
    MF_TEST_OK(mf_config_load_with_overrides("tiny", sets, 5, &s));
    check(s.evoformer.num_blocks == 3 && s.memory.chunk_size == 0 &&
              s.memory.recompute == MF_RECOMPUTE_EVERY_K && s.memory.recompute_every == 2 &&
              !s.template_embedding.enabled && s.optimizer.learning_rate == 2.5e-4,
          "--set: num_blocks 3, chunk off, recompute every:2, template off, lr 2.5e-4");
    json_roundtrip(&s, "tiny + --set");
}

/* Runs from_json (or set) expecting failure with every substring in the message. */
static void expect_error(mf_status st, const char *what, const char *want1, const char *want2)
{
    const char *msg = mf_last_error();
    bool ok = st != MF_OK && msg && strstr(msg, want1) && (!want2 || strstr(msg, want2));
    check(ok, "%s -> error containing \"%s\"%s%s%s (got: %s)", what, want1, want2 ? " and \"" : "",
          want2 ? want2 : "", want2 ? "\"" : "", st == MF_OK ? "no error" : msg);
    mf_clear_error();
}

static void expect_json_error(const char *json, const char *want1, const char *want2)
{
    mf_config c, before;
    MF_TEST_OK(mf_config_preset("tiny", &c));
    before = c;
    mf_status st = mf_config_from_json(json, &c, "run.json");
    char one_line[256];
    snprintf(one_line, sizeof one_line, "%s", json);
    for (char *p = one_line; *p; p++)
        if (*p == '\n') *p = ' ';
    expect_error(st, one_line, want1, want2);
    if (st != MF_OK)
        check(mf_config_equal(&c, &before, NULL, 0), "  ...and the output config is untouched");
}

/* 4. Errors name the source and the key. */
static void test_errors(void)
{
    printf("errors:\n");
    expect_json_error("{\"evoformer\": {\"num_blokcs\": 4}}", "run.json: evoformer.num_blokcs",
                      "unknown key");
    expect_json_error("{\"evoformr\": {}}", "run.json: evoformr", "unknown key");
    expect_json_error("{\"evoformer\": {\"num_blocks\": \"4\"}}", "run.json: evoformer.num_blocks",
                      "expected a positive integer");
    expect_json_error("{\"evoformer\": {\"num_blocks\": -1}}",
                      "run.json: evoformer.num_blocks: expected a positive integer", "got -1");
    expect_json_error("{\"extra_msa_stack\": {\"num_blocks\": 0}}",
                      "run.json: extra_msa_stack.num_blocks: expected a positive integer", NULL);
    expect_json_error("{\"structure_module\": {\"num_layers\": 2.5}}",
                      "structure_module.num_layers: expected a positive integer", NULL);
    expect_json_error("{\"template\": {\"enabled\": 1}}", "template.enabled",
                      "expected true or false");
    expect_json_error("{\"evoformer\": 3}", "run.json: evoformer", "expected an object");
    expect_json_error("{\"evoformer\": {\"num_blocks\": {\"x\": 1}}}", "evoformer.num_blocks",
                      "expected a positive integer");
    expect_json_error("{\"evoformer\": {\"msa_row_attention_with_pair_bias\": "
                      "{\"dropout_rate\": 1.0}}}",
                      "evoformer.msa_row_attention_with_pair_bias.dropout_rate",
                      "expected a number in [0, 1)");
    expect_json_error("{\"loss\": {\"weights\": {\"fape\": -0.5}}}", "loss.weights.fape",
                      "expected a non-negative number");
    expect_json_error("{\"memory\": {\"recompute\": \"sometimes\"}}", "run.json: memory.recompute",
                      "recompute=sometimes");
    expect_json_error("{\"memory\": {\"storage\": \"fp16\"}}", "memory.storage",
                      "expected f32 or bf16");
    expect_json_error("{\"base\": \"huge\"}", "run.json: base", "unknown preset 'huge'");
    expect_json_error("{\"schema_version\": 2}", "run.json: schema_version", NULL);
    expect_json_error("{\n  \"evoformer\": {\n    \"num_blocks\": 4,\n  }\n}",
                      "run.json:4:", "malformed JSON");
    expect_json_error("[1, 2]", "run.json", "top level");
    expect_json_error("{\"heads\": {\"distogram\": {\"first_break\": 30.0}}}", "run.json",
                      "first_break");
    expect_json_error("{\"data\": {\"masked_msa\": {\"uniform_prob\": 0.9}}}", "data.masked_msa",
                      "exceeds 1");

    mf_config c;
    MF_TEST_OK(mf_config_preset("tiny", &c));
    expect_error(mf_config_set(&c, "evoformer.num_blocks", "-2"), "--set evoformer.num_blocks=-2",
                 "--set: evoformer.num_blocks: expected a positive integer", "'-2'");
    expect_error(mf_config_set(&c, "evoformer.num_blocks", "4x"), "--set evoformer.num_blocks=4x",
                 "evoformer.num_blocks", "expected a positive integer");
    expect_error(mf_config_set(&c, "evoformer.nope", "1"), "--set evoformer.nope=1",
                 "evoformer.nope", "unknown key");
    expect_error(mf_config_set(&c, "evoformer", "1"), "--set evoformer=1", "evoformer",
                 "group of keys");
    expect_error(mf_config_set_assignment(&c, "evoformer.num_blocks"), "--set evoformer.num_blocks",
                 "expected key.path=value", NULL);
    expect_error(mf_config_set(&c, "template.enabled", "maybe"), "--set template.enabled=maybe",
                 "template.enabled", "true or false");
    expect_error(mf_config_load("tinyy", &c), "--config tinyy", "tinyy", "neither a preset");
    expect_error(mf_config_load("/nonexistent/run.json", &c), "--config /nonexistent/run.json",
                 "/nonexistent/run.json", NULL);
}

/* 5. Preset values against AlphaFold 2's config.py and suppl. Table 4. */
static void check_value(const char *preset, const char *key, double want)
{
    mf_config c;
    char v[64];
    MF_TEST_OK(mf_config_preset(preset, &c));
    if (mf_config_get(&c, key, v, sizeof v) != MF_OK) {
        check(false, "%s %s: %s", preset, key, mf_last_error());
        return;
    }
    double got = !strcmp(v, "true") ? 1 : !strcmp(v, "false") ? 0 : strtod(v, NULL);
    check(got == want, "%s %s = %s (AF2: %g)", preset, key, v, want);
}

static void test_af2_values(void)
{
    printf("AF2 values (exact):\n");
    static const struct {
        const char *key;
        double initial, finetune;
    } v[] = {
        {"channels.c_m", 256, 256},
        {"channels.c_z", 128, 128},
        {"channels.c_t", 64, 64},
        {"channels.c_e", 64, 64},
        {"channels.c_s", 384, 384},
        {"evoformer.num_blocks", 48, 48},
        {"evoformer.msa_row_attention_with_pair_bias.num_heads", 8, 8},
        {"evoformer.msa_row_attention_with_pair_bias.c_hidden", 32, 32},
        {"evoformer.msa_row_attention_with_pair_bias.dropout_rate", 0.15, 0.15},
        {"evoformer.msa_column_attention.c_hidden", 32, 32},
        {"evoformer.outer_product_mean_c_hidden", 32, 32},
        {"evoformer.triangle_multiplication_c_hidden", 128, 128},
        {"evoformer.triangle_multiplication_dropout_rate", 0.25, 0.25},
        {"evoformer.triangle_attention.num_heads", 4, 4},
        {"evoformer.triangle_attention.c_hidden", 32, 32},
        {"evoformer.pair_transition_factor", 4, 4},
        {"extra_msa_stack.num_blocks", 4, 4},
        {"extra_msa_stack.msa_row_attention_with_pair_bias.c_hidden", 8, 8},
        {"extra_msa_stack.msa_column_global_attention.num_heads", 8, 8},
        {"extra_msa_stack.msa_column_global_attention.c_hidden", 8, 8},
        {"template.enabled", 1, 1},
        {"template.embed_torsion_angles", 1, 1},
        {"template.use_unit_vector", 0, 0},
        {"template.dgram.num_bins", 39, 39},
        {"template.dgram.max_bin", 50.75, 50.75},
        {"template.pair_stack.num_blocks", 2, 2},
        {"template.pair_stack.triangle_attention.c_hidden", 16, 16},
        {"template.pair_stack.triangle_multiplication_c_hidden", 64, 64},
        {"template.pair_stack.pair_transition_factor", 2, 2},
        {"template.pointwise_attention.num_heads", 4, 4},
        {"template.pointwise_attention.c_hidden", 16, 16},
        {"recycling.num_bins", 15, 15},
        {"recycling.min_bin", 3.25, 3.25},
        {"recycling.max_bin", 20.75, 20.75},
        {"recycling.num_recycle", 3, 3},
        {"structure_module.num_layers", 8, 8},
        {"structure_module.ipa.num_heads", 12, 12},
        {"structure_module.ipa.c_hidden", 16, 16},
        {"structure_module.ipa.num_qk_points", 4, 4},
        {"structure_module.ipa.num_v_points", 8, 8},
        {"structure_module.num_transition_layers", 3, 3},
        {"structure_module.angle_resnet.c_hidden", 128, 128},
        {"structure_module.position_scale", 10, 10},
        {"structure_module.dropout_rate", 0.1, 0.1},
        {"heads.distogram.num_bins", 64, 64},
        {"heads.distogram.first_break", 2.3125, 2.3125},
        {"heads.distogram.last_break", 21.6875, 21.6875},
        {"heads.predicted_lddt.num_bins", 50, 50},
        {"heads.masked_msa.num_output", 23, 23},
        {"heads.experimentally_resolved.num_output", 37, 37},
        {"heads.predicted_aligned_error.max_error_bin", 31, 31},
        {"loss.weights.distogram", 0.3, 0.3},
        {"loss.weights.experimentally_resolved", 0.0, 0.01},
        {"loss.weights.fape", 1.0, 1.0},
        {"loss.weights.plddt_loss", 0.01, 0.01},
        {"loss.weights.masked_msa", 2.0, 2.0},
        {"loss.weights.supervised_chi", 1.0, 1.0},
        {"loss.weights.violation", 0.0, 1.0},
        {"loss.fape.clamp_distance", 10, 10},
        {"loss.fape.loss_unit_distance", 10, 10},
        {"loss.fape.backbone_weight", 0.5, 0.5},
        {"loss.supervised_chi.chi_weight", 0.5, 0.5},
        {"loss.supervised_chi.angle_norm_weight", 0.01, 0.01},
        {"loss.violation.violation_tolerance_factor", 12, 12},
        {"loss.violation.clash_overlap_tolerance", 1.5, 1.5},
        {"loss.plddt.cutoff", 15, 15},
        {"data.crop_size", 256, 384},
        {"data.max_msa_clusters", 128, 512},
        {"data.max_extra_msa", 1024, 5120},
        {"data.max_templates", 4, 4},
        {"data.masked_msa.replace_fraction", 0.15, 0.15},
        {"data.masked_msa.uniform_prob", 0.1, 0.1},
        {"optimizer.learning_rate", 1e-3, 5e-4},
        {"optimizer.beta2", 0.999, 0.999},
        {"optimizer.eps", 1e-6, 1e-6},
        {"optimizer.warmup_steps", 1000, 0},
        {"optimizer.decay_factor", 0.95, 0.95},
        {"optimizer.decay_every_steps", 50000, 50000},
        {"optimizer.clip_global_norm", 0.1, 0.1},
        {"optimizer.ema_decay", 0.999, 0.999},
        {"optimizer.batch_size", 128, 128},
    };
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
        check_value("af2-initial", v[i].key, v[i].initial);
        check_value("af2-finetune", v[i].key, v[i].finetune);
    }
}

/* 6. tiny == shared/testvectors/config.json for every value it lists. */
typedef struct {
    const mf_config *tiny;
    int compared;
} tv_walk;

static void tv_compare_leaf(tv_walk *w, const char *tv_path, const cJSON *leaf)
{
    /* Renamed or derived keys: testvectors path -> config key. */
    static const struct {
        const char *tv, *key;
    } renamed[] = {
        {"sizes.n_seq", "data.max_msa_clusters"},
        {"sizes.n_extra_seq", "data.max_extra_msa"},
        {"sizes.n_templates", "data.max_templates"},
        {"sizes.num_recycle", "recycling.num_recycle"},
        {"extra_msa_feat_dim", "input_embedder.extra_msa_feat_dim"},
        {"loss.plddt.num_bins", "heads.predicted_lddt.num_bins"},
        /* the reference clamps FAPE; tiny clamps in every sample */
        {"loss.fape.use_clamped_fape", "loss.fape.clamp_fraction"},
    };
    double want = cJSON_IsBool(leaf) ? (cJSON_IsTrue(leaf) ? 1 : 0) : leaf->valuedouble;
    if (!strcmp(tv_path, "sizes.n_res")) {
        check(want <= (double)w->tiny->data.crop_size,
              "testvectors sizes.n_res %g fits tiny data.crop_size %lld", want,
              (long long)w->tiny->data.crop_size);
        w->compared++;
        return;
    }
    if (!strcmp(tv_path, "sizes.n_recycle_iterations")) {
        check(want == (double)(w->tiny->recycling.num_recycle + 1),
              "testvectors sizes.n_recycle_iterations %g == tiny recycling.num_recycle + 1", want);
        w->compared++;
        return;
    }
    const char *key = tv_path;
    for (size_t i = 0; i < sizeof renamed / sizeof renamed[0]; i++)
        if (!strcmp(renamed[i].tv, tv_path)) key = renamed[i].key;
    char v[64];
    if (mf_config_get(w->tiny, key, v, sizeof v) != MF_OK) {
        check(false, "testvectors %s has no config key (%s)", tv_path, mf_last_error());
        mf_clear_error();
        return;
    }
    double got = !strcmp(v, "true") ? 1 : !strcmp(v, "false") ? 0 : strtod(v, NULL);
    check(got == want, "tiny %s = %s, testvectors %s = %g", key, v, tv_path, want);
    w->compared++;
}

static void tv_walk_object(tv_walk *w, const cJSON *obj, const char *prefix)
{
    /* Not configuration values: free text, the reference's own bookkeeping, a formula. */
    static const char *skip[] = {"description", "per_iteration_features", "grads_compare_absolute",
                                 "modules",     "loss.total_scale",       "dropout"};
    for (const cJSON *c = obj->child; c; c = c->next) {
        char path[256];
        snprintf(path, sizeof path, "%s%s%s", prefix, *prefix ? "." : "", c->string);
        bool skipped = false;
        for (size_t i = 0; i < sizeof skip / sizeof skip[0]; i++)
            if (!strcmp(skip[i], path)) skipped = true;
        if (skipped) continue;
        if (cJSON_IsObject(c))
            tv_walk_object(w, c, path);
        else if (cJSON_IsNumber(c) || cJSON_IsBool(c))
            tv_compare_leaf(w, path, c);
        else
            check(false, "testvectors %s: unexpected value type (not a number or boolean)", path);
    }
}

static void test_tiny_matches_testvectors(void)
{
    printf("tiny vs testvectors/config.json (exact):\n");
    char path[1024];
    snprintf(path, sizeof path, "%s/testvectors/config.json", mf_test_shared_dir());
    FILE *f = fopen(path, "rb");
    if (!f) {
        check(false,
              "cannot open %s: the tiny preset is defined by it (set MEMFOLD_SHARED to the shared/ "
              "folder)",
              path);
        return;
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *text = malloc((size_t)n + 1);
    size_t got = text ? fread(text, 1, (size_t)n, f) : 0;
    fclose(f);
    if (!text || got != (size_t)n) {
        check(false, "cannot read %s", path);
        free(text);
        return;
    }
    text[n] = 0;
    cJSON *root = cJSON_Parse(text);
    free(text);
    if (!root) {
        check(false, "%s is not valid JSON", path);
        return;
    }
    mf_config tiny;
    MF_TEST_OK(mf_config_preset("tiny", &tiny));
    tv_walk w = {&tiny, 0};
    tv_walk_object(&w, root, "");
    check(w.compared >= 80, "compared %d values of testvectors/config.json", w.compared);

    /* "dropout": "none (all rates 0 ...)": every rate of tiny is 0. */
    const cJSON *dropout = cJSON_GetObjectItemCaseSensitive(root, "dropout");
    if (cJSON_IsString(dropout) && strstr(dropout->valuestring, "none")) {
        int rates = 0, nonzero = 0;
        for (int i = 0; i < mf_config_num_keys(); i++) {
            const char *k = mf_config_key(i);
            if (!strstr(k, "dropout_rate")) continue;
            char v[64];
            mf_config_get(&tiny, k, v, sizeof v);
            rates++;
            if (strtod(v, NULL) != 0) nonzero++;
        }
        check(rates >= 10 && nonzero == 0,
              "testvectors dropout 'none': %d tiny dropout rates, all 0", rates);
    } else {
        check(false, "testvectors config.json: expected \"dropout\": \"none ...\"");
    }
    cJSON_Delete(root);
}

int main(void)
{
    test_presets_roundtrip();
    test_every_key_roundtrip();
    test_overrides();
    test_errors();
    test_af2_values();
    test_tiny_matches_testvectors();
    printf("%d configuration checks, all exact\n", g_checked);
    return mf_test_finish("test_config");
}
