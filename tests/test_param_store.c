/* Parameter store: params_af2.npz -> store -> HDF5 -> store -> .npz gives back the same names (in
 * order), dtypes, shapes and bytes; the HDF5 layout is group /scope, dataset name, chunked with
 * deflate and fletcher32, format/schema attributes; arena loading (and a failed one leaving the
 * arena as it was); block views and module binding; the expected-names check lists missing,
 * unexpected and wrongly shaped parameters; the configuration read from the shapes equals
 * shared/testvectors/config.json in every size the file records (and leaves the rest at the
 * af2-initial values); pTM head and template-less files; multimer files refused. Exact
 * comparisons: no tolerance. */
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "data/npz.h"
#include "model/param_store.h"
#include "tests/support/mf_test.h"

#define EVO MF_AF2_ROOT "evoformer/"

static bool same_npz(const mf_npz *a, const mf_npz *b)
{
    if (a->count != b->count) return false;
    for (int i = 0; i < a->count; i++) {
        const mf_h5_array *x = &a->arrays[i], *y = &b->arrays[i];
        if (strcmp(a->names[i], b->names[i]) || x->dtype != y->dtype || x->ndim != y->ndim)
            return false;
        for (int k = 0; k < x->ndim; k++)
            if (x->shape[k] != y->shape[k]) return false;
        size_t n = (size_t)mf_h5_array_numel(x) * mf_dtype_size(x->dtype);
        if (n && memcmp(x->data, y->data, n)) return false;
    }
    return true;
}

/* Same names in the same order, shapes and bytes. */
static bool same_store(const mf_param_store *a, const mf_param_store *b)
{
    if (a->count != b->count) return false;
    for (int i = 0; i < a->count; i++) {
        const mf_tensor *x = &a->entries[i].tensor, *y = &b->entries[i].tensor;
        if (strcmp(a->entries[i].name, b->entries[i].name) || !mf_tensor_same_shape(x, y) ||
            memcmp(x->data, y->data, mf_tensor_bytes(x)))
            return false;
    }
    return true;
}

static void check_h5_layout(const char *path)
{
    hid_t f;
    MF_TEST_OK(mf_h5_open_read(path, &f));
    char *fmt = NULL;
    double ver = 0;
    MF_TEST_OK(mf_h5_read_attr_string(f, "/", "format", &fmt));
    MF_TEST_OK(mf_h5_read_attr_double(f, "/", "schema_version", &ver));
    MF_TEST_TRUE(fmt && !strcmp(fmt, "memfold-params") && ver == 1.0,
                 "root attributes: format '%s', schema_version %g", fmt ? fmt : "(none)", ver);
    free(fmt);
    const char *ds = "alphafold/alphafold_iteration/evoformer/evoformer_iteration/msa_transition/"
                     "transition1/weights";
    MF_TEST_TRUE(mf_h5_exists(f, ds), "dataset /%s missing", ds);
    hid_t d = H5Dopen2(f, ds, H5P_DEFAULT);
    hid_t pl = d >= 0 ? H5Dget_create_plist(d) : H5I_INVALID_HID;
    bool chunked = pl >= 0 && H5Pget_layout(pl) == H5D_CHUNKED;
    bool deflate = false, fletcher = false;
    int nf = pl >= 0 ? H5Pget_nfilters(pl) : 0;
    for (int i = 0; i < nf; i++) {
        unsigned flags;
        size_t nelem = 0;
        H5Z_filter_t id = H5Pget_filter2(pl, (unsigned)i, &flags, &nelem, NULL, 0, NULL, NULL);
        deflate |= id == H5Z_FILTER_DEFLATE;
        fletcher |= id == H5Z_FILTER_FLETCHER32;
    }
    MF_TEST_TRUE(chunked && deflate && fletcher, "dataset /%s: chunked %d deflate %d fletcher32 %d",
                 ds, chunked, deflate, fletcher);
    if (pl >= 0) H5Pclose(pl);
    if (d >= 0) H5Dclose(d);
    H5Fclose(f);
    printf("HDF5 layout: /scope groups with dataset name (e.g. /%s), chunked + deflate + "
           "fletcher32, format = memfold-params, schema_version = 1\n",
           ds);
}

/* The round trip of the issue: npz -> store -> HDF5 -> store -> npz, bit for bit. */
static void check_round_trip(const char *dir, const char *ref, mf_param_store *s)
{
    char h5[4096], npz_out[4096];
    snprintf(h5, sizeof h5, "%s/params.h5", dir);
    snprintf(npz_out, sizeof npz_out, "%s/params_back.npz", dir);
    MF_TEST_OK(mf_param_store_save_h5(s, h5));
    check_h5_layout(h5);
    mf_param_store back;
    mf_param_store_init(&back);
    MF_TEST_OK(mf_param_store_load_h5(&back, h5, NULL));
    MF_TEST_TRUE(same_store(s, &back), "store after the HDF5 round trip differs");
    MF_TEST_OK(mf_param_store_save_npz(&back, npz_out));
    mf_param_store_free(&back);

    mf_npz a, b;
    MF_TEST_OK(mf_npz_read(ref, &a));
    MF_TEST_OK(mf_npz_read(npz_out, &b));
    bool same = same_npz(&a, &b);
    MF_TEST_TRUE(same, "params_af2.npz -> HDF5 -> .npz is not bit-identical");
    printf("params_af2.npz -> store -> %s -> store -> .npz: %d arrays, names (in order), dtypes, "
           "shapes and bytes identical: %s\n",
           "HDF5", a.count, same ? "yes" : "NO");
    mf_npz_free(&a);
    mf_npz_free(&b);

    /* Automatic format detection reads both. */
    mf_param_store x, y;
    mf_param_store_init(&x);
    mf_param_store_init(&y);
    MF_TEST_OK(mf_param_store_load(&x, h5, NULL));
    MF_TEST_OK(mf_param_store_load(&y, npz_out, NULL));
    MF_TEST_TRUE(same_store(&x, s) && same_store(&y, s), "mf_param_store_load by content differs");
    mf_param_store_free(&x);
    mf_param_store_free(&y);
}

static void check_arena(const char *ref, const mf_param_store *s)
{
    mf_arena arena;
    MF_TEST_OK(mf_arena_init(&arena, MF_DEV_CPU, (size_t)64 << 20, "params-test"));
    mf_param_store a;
    mf_param_store_init(&a);
    MF_TEST_OK(mf_param_store_load_npz(&a, ref, &arena));
    size_t bytes = (size_t)mf_param_store_numel(s) * sizeof(float);
    MF_TEST_TRUE(same_store(&a, s) && mf_arena_used(&arena) >= bytes && !a.entries[0].owned,
                 "arena load: same %d, used %zu of %zu bytes", same_store(&a, s),
                 mf_arena_used(&arena), bytes);
    printf("arena load: %zu bytes of parameters, arena holds %zu\n", bytes, mf_arena_used(&arena));
    mf_param_store_free(&a);
    mf_arena_destroy(&arena);

    /* Too small: NOMEM naming the label, nothing kept, the arena back where it was. */
    MF_TEST_OK(mf_arena_init(&arena, MF_DEV_CPU, 100000, "small"));
    mf_param_store_init(&a);
    mf_status st = mf_param_store_load_npz(&a, ref, &arena);
    MF_TEST_TRUE(st == MF_ERR_NOMEM && strstr(mf_last_error(), "params") && a.count == 0 &&
                     mf_arena_used(&arena) == 0,
                 "small arena: %s: %s (count %d, used %zu)", mf_status_name(st), mf_last_error(),
                 a.count, mf_arena_used(&arena));
    mf_arena_destroy(&arena);
}

static void check_views(const mf_param_store *s)
{
    const char *n = EVO "evoformer_iteration/msa_transition/transition1//weights";
    const mf_tensor *t = mf_param_store_find(s, n);
    MF_TEST_TRUE(t && t->ndim == 3 && t->shape[0] == 2 && t->shape[1] == 32 && t->shape[2] == 128,
                 "%s missing or misshapen", n);
    MF_TEST_TRUE(mf_param_store_find(s, "no/such//name") == NULL, "find of an absent name");
    if (!t) return;
    mf_tensor b;
    MF_TEST_OK(mf_param_store_block(s, n, 1, &b));
    MF_TEST_TRUE(b.ndim == 2 && b.shape[0] == 32 && b.shape[1] == 128 &&
                     b.data == (float *)t->data + 32 * 128,
                 "block 1 view wrong");
    mf_status st = mf_param_store_block(s, n, 2, &b);
    MF_TEST_TRUE(st == MF_ERR_INVALID && strstr(mf_last_error(), "block 2"), "block 2 of 2: %s",
                 mf_last_error());

    /* Binding a module's parameter struct (Alg. 9's transition, c = 32, factor 4) to block 1. */
    const mf_param_spec specs[6] = {
        {"input_layer_norm//scale", MF_INIT_ONES, 1, 1, {32}},
        {"input_layer_norm//offset", MF_INIT_ZEROS, 1, 1, {32}},
        {"transition1//weights", MF_INIT_RELU, 32, 2, {32, 128}},
        {"transition1//bias", MF_INIT_ZEROS, 1, 1, {128}},
        {"transition2//weights", MF_INIT_ZEROS, 128, 2, {128, 32}},
        {"transition2//bias", MF_INIT_ZEROS, 1, 1, {32}},
    };
    mf_tensor p[6];
    const char *scope = EVO "evoformer_iteration/msa_transition";
    MF_TEST_OK(mf_param_store_bind(s, scope, specs, 6, 1, p));
    MF_TEST_TRUE(p[2].data == b.data && p[5].ndim == 1 && p[5].shape[0] == 32,
                 "bound parameters are not the store's block-1 views");
    mf_param_spec wrong[1] = {{"transition1//weights", MF_INIT_RELU, 32, 2, {32, 64}}};
    st = mf_param_store_bind(s, scope, wrong, 1, 0, p);
    MF_TEST_TRUE(st == MF_ERR_FORMAT && strstr(mf_last_error(), "[32, 128]") &&
                     strstr(mf_last_error(), "[32, 64]"),
                 "bind with a wrong shape: %s", mf_last_error());
    printf("block views (leading axis dropped) and module binding: checked\n");
}

static void check_expected(const mf_param_store *s)
{
    mf_param_expect_list l;
    mf_param_expect_list_init(&l);
    for (int i = 0; i < s->count; i++) {
        const mf_tensor *t = &s->entries[i].tensor;
        MF_TEST_OK(mf_param_expect_add(&l, s->entries[i].name, t->ndim, t->shape));
    }
    char *report = NULL;
    MF_TEST_OK(mf_param_store_check(s, &l, &report));
    MF_TEST_TRUE(report == NULL, "report for a matching store");
    mf_param_expect_list_free(&l);

    /* Drop the first 3 (unexpected in the store), add 25 absent names (missing), change the
     * shape of one (wrongly shaped). */
    mf_param_expect_list_init(&l);
    for (int i = 3; i < s->count; i++) {
        const mf_tensor *t = &s->entries[i].tensor;
        int64_t shape[MF_MAX_DIMS];
        for (int k = 0; k < t->ndim; k++) shape[k] = t->shape[k];
        if (i == 10) shape[0] += 1;
        MF_TEST_OK(mf_param_expect_add(&l, s->entries[i].name, t->ndim, shape));
    }
    const mf_param_spec fake[1] = {{"extra//weights", MF_INIT_LINEAR, 4, 2, {4, 5}}};
    for (int i = 0; i < 25; i++) {
        char scope[128];
        snprintf(scope, sizeof scope, MF_AF2_ROOT "absent_module_%02d", i);
        MF_TEST_OK(mf_param_expect_add_specs(&l, scope, fake, 1, i == 0 ? 7 : 0));
    }
    MF_TEST_TRUE(l.items[l.count - 25].ndim == 3 && l.items[l.count - 25].shape[0] == 7 &&
                     l.items[l.count - 24].ndim == 2,
                 "mf_param_expect_add_specs: block axis");
    mf_status st = mf_param_store_check(s, &l, &report);
    const char *msg = mf_last_error();
    MF_TEST_TRUE(st == MF_ERR_FORMAT && strstr(msg, "25 missing, 3 unexpected, 1 wrongly shaped"),
                 "check message: %s", msg);
    MF_TEST_TRUE(strstr(msg, "unexpected: evoformer/preprocess_1d//weights") != NULL,
                 "message does not list the unexpected names: %s", msg);
    bool rep = report && strstr(report, "missing (first 20 of 25)") &&
               strstr(report, MF_AF2_ROOT "absent_module_19/extra//weights") &&
               !strstr(report, "absent_module_20/") &&
               strstr(report, "unexpected (first 3 of 3)") &&
               strstr(report, MF_AF2_ROOT "evoformer/preprocess_msa//weights") &&
               strstr(report, "wrongly shaped (first 1 of 1)") && strstr(report, "expected [");
    MF_TEST_TRUE(rep, "report incomplete:\n%s", report ? report : "(none)");
    printf("check message: %s\nreport:\n%s", msg, report ? report : "(none)\n");
    free(report);
    mf_param_expect_list_free(&l);
}

/* ---- configuration against config.json ---- */

static const cJSON *json_at(const cJSON *root, const char *path)
{
    char buf[256];
    snprintf(buf, sizeof buf, "%s", path);
    const cJSON *j = root;
    for (char *tok = strtok(buf, "."); tok && j; tok = strtok(NULL, "."))
        j = cJSON_GetObjectItemCaseSensitive(j, tok);
    return j;
}

static void check_config(const mf_param_store *s)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/testvectors/config.json", mf_test_shared_dir());
    FILE *f = fopen(path, "rb");
    MF_TEST_TRUE(f != NULL, "cannot open %s", path);
    if (!f) return;
    char *text = calloc(1, 1 << 20);
    size_t n = text ? fread(text, 1, (1 << 20) - 1, f) : 0;
    fclose(f);
    cJSON *root = cJSON_Parse(text);
    free(text);
    MF_TEST_TRUE(root && n > 0, "cannot parse %s", path);
    if (!root) return;

    mf_config cfg, base;
    MF_TEST_OK(mf_param_store_infer_config(s, &cfg));
    MF_TEST_OK(mf_config_preset("af2-initial", &base));
    const mf_template_config *t = &cfg.template_embedding;
    const mf_evoformer_stack_config *ev = &cfg.evoformer, *ex = &cfg.extra_msa_stack;
    const mf_structure_module_config *sm = &cfg.structure_module;
    const struct {
        const char *key;
        int64_t got;
    } sizes[] = {
        {"channels.c_m", cfg.channels.c_m},
        {"channels.c_z", cfg.channels.c_z},
        {"channels.c_t", cfg.channels.c_t},
        {"channels.c_e", cfg.channels.c_e},
        {"channels.c_s", cfg.channels.c_s},
        {"input_embedder.target_feat_dim", cfg.input_embedder.target_feat_dim},
        {"input_embedder.msa_feat_dim", cfg.input_embedder.msa_feat_dim},
        {"input_embedder.max_relative_feature", cfg.input_embedder.max_relative_feature},
        {"extra_msa_feat_dim", cfg.input_embedder.extra_msa_feat_dim},
        {"recycling.num_bins", cfg.recycling.num_bins},
        {"template.pair_feat_dim", t->pair_feat_dim},
        {"template.angle_feat_dim", t->angle_feat_dim},
        {"template.dgram.num_bins", t->dgram_num_bins},
        {"template.pair_stack.num_blocks", t->pair_stack.num_blocks},
        {"template.pair_stack.triangle_attention.num_heads",
         t->pair_stack.triangle_attention.num_heads},
        {"template.pair_stack.triangle_attention.c_hidden",
         t->pair_stack.triangle_attention.c_hidden},
        {"template.pair_stack.triangle_multiplication_c_hidden",
         t->pair_stack.triangle_multiplication_c_hidden},
        {"template.pair_stack.pair_transition_factor", t->pair_stack.pair_transition_factor},
        {"template.pointwise_attention.num_heads", t->pointwise_attention.num_heads},
        {"template.pointwise_attention.c_hidden", t->pointwise_attention.c_hidden},
        {"evoformer.num_blocks", ev->num_blocks},
        {"evoformer.msa_row_attention_with_pair_bias.num_heads", ev->msa_row_attention.num_heads},
        {"evoformer.msa_row_attention_with_pair_bias.c_hidden", ev->msa_row_attention.c_hidden},
        {"evoformer.msa_column_attention.num_heads", ev->msa_column_attention.num_heads},
        {"evoformer.msa_column_attention.c_hidden", ev->msa_column_attention.c_hidden},
        {"evoformer.msa_transition_factor", ev->msa_transition_factor},
        {"evoformer.outer_product_mean_c_hidden", ev->outer_product_mean_c_hidden},
        {"evoformer.triangle_multiplication_c_hidden", ev->triangle_multiplication_c_hidden},
        {"evoformer.triangle_attention.num_heads", ev->triangle_attention.num_heads},
        {"evoformer.triangle_attention.c_hidden", ev->triangle_attention.c_hidden},
        {"evoformer.pair_transition_factor", ev->pair_transition_factor},
        {"extra_msa_stack.num_blocks", ex->num_blocks},
        {"extra_msa_stack.msa_row_attention_with_pair_bias.num_heads",
         ex->msa_row_attention.num_heads},
        {"extra_msa_stack.msa_row_attention_with_pair_bias.c_hidden",
         ex->msa_row_attention.c_hidden},
        {"extra_msa_stack.msa_column_global_attention.num_heads",
         ex->msa_column_attention.num_heads},
        {"extra_msa_stack.msa_column_global_attention.c_hidden", ex->msa_column_attention.c_hidden},
        {"extra_msa_stack.msa_transition_factor", ex->msa_transition_factor},
        {"extra_msa_stack.outer_product_mean_c_hidden", ex->outer_product_mean_c_hidden},
        {"extra_msa_stack.triangle_multiplication_c_hidden", ex->triangle_multiplication_c_hidden},
        {"extra_msa_stack.triangle_attention.num_heads", ex->triangle_attention.num_heads},
        {"extra_msa_stack.triangle_attention.c_hidden", ex->triangle_attention.c_hidden},
        {"extra_msa_stack.pair_transition_factor", ex->pair_transition_factor},
        {"structure_module.ipa.num_heads", sm->ipa.num_heads},
        {"structure_module.ipa.c_hidden", sm->ipa.c_hidden},
        {"structure_module.ipa.num_qk_points", sm->ipa.num_qk_points},
        {"structure_module.ipa.num_v_points", sm->ipa.num_v_points},
        {"structure_module.num_transition_layers", sm->num_transition_layers},
        {"structure_module.angle_resnet.c_hidden", sm->angle_resnet_c_hidden},
        {"structure_module.angle_resnet.num_blocks", sm->angle_resnet_num_blocks},
        {"heads.distogram.num_bins", cfg.heads.distogram_num_bins},
        {"heads.predicted_lddt.num_bins", cfg.heads.predicted_lddt_num_bins},
        {"heads.predicted_lddt.c_hidden", cfg.heads.predicted_lddt_c_hidden},
        {"heads.masked_msa.num_output", cfg.heads.masked_msa_num_output},
        {"heads.experimentally_resolved.num_output", cfg.heads.experimentally_resolved_num_output},
    };
    int bad = 0;
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        const cJSON *j = json_at(root, sizes[i].key);
        bool ok = cJSON_IsNumber(j) && (int64_t)j->valuedouble == sizes[i].got;
        if (!ok) {
            bad++;
            mf_test_fail("config.json %s = %s, inferred %lld", sizes[i].key,
                         cJSON_IsNumber(j) ? "a number" : "absent", (long long)sizes[i].got);
        }
        mf_test_count(ok);
    }
    printf("config from shapes: %zu sizes of config.json compared exactly, %d differ\n",
           sizeof sizes / sizeof sizes[0], bad);
    const cJSON *gating = json_at(root, "template.pointwise_attention.gating");
    MF_TEST_TRUE(cJSON_IsBool(gating) && cJSON_IsTrue(gating) == t->pointwise_attention.gating,
                 "template pointwise gating");
    MF_TEST_TRUE(t->enabled && t->embed_torsion_angles, "templates with torsion angles expected");
    MF_TEST_TRUE(!cfg.heads.predicted_aligned_error_enabled, "no pTM head in params_af2.npz");
    /* Not recorded in the file: left at the af2-initial values. */
    MF_TEST_TRUE(sm->num_layers == base.structure_module.num_layers &&
                     cfg.recycling.min_bin == base.recycling.min_bin &&
                     cfg.heads.distogram_first_break == base.heads.distogram_first_break &&
                     ev->msa_row_attention.dropout_rate ==
                         base.evoformer.msa_row_attention.dropout_rate &&
                     !strcmp(cfg.preset, "af2-initial"),
                 "settings the file does not record changed");
    printf("not recorded, left at af2-initial: structure_module.num_layers %lld (config.json: "
           "%d), bin ranges, dropout rates\n",
           (long long)sm->num_layers,
           cJSON_IsNumber(json_at(root, "structure_module.num_layers"))
               ? (int)json_at(root, "structure_module.num_layers")->valuedouble
               : -1);
    cJSON_Delete(root);
}

/* A store of views of s without the entries whose names contain `drop`. */
static void copy_without(mf_param_store *out, const mf_param_store *s, const char *drop)
{
    mf_param_store_init(out);
    for (int i = 0; i < s->count; i++)
        if (!drop || !strstr(s->entries[i].name, drop))
            MF_TEST_OK(mf_param_store_add(out, s->entries[i].name, &s->entries[i].tensor, false));
}

static void check_variants(const char *dir, const mf_param_store *s)
{
    /* pTM model without templates (model_3_ptm-like). */
    mf_param_store v;
    copy_without(&v, s, "template_");
    static float pae[16 * 64];
    mf_tensor tw = mf_tensor_f32(pae, 2, 16, 64), tb = mf_tensor_f32(pae, 1, 64);
    MF_TEST_OK(mf_param_store_add(&v, MF_AF2_ROOT "predicted_aligned_error_head/logits//weights",
                                  &tw, true));
    MF_TEST_OK(
        mf_param_store_add(&v, MF_AF2_ROOT "predicted_aligned_error_head/logits//bias", &tb, true));
    mf_config cfg;
    MF_TEST_OK(mf_param_store_infer_config(&v, &cfg));
    MF_TEST_TRUE(!cfg.template_embedding.enabled && !cfg.template_embedding.embed_torsion_angles &&
                     cfg.heads.predicted_aligned_error_enabled &&
                     cfg.heads.predicted_aligned_error_num_bins == 64 && cfg.channels.c_m == 32,
                 "template-less pTM variant inferred wrongly");
    mf_status st =
        mf_param_store_add(&v, MF_AF2_ROOT "predicted_aligned_error_head/logits//bias", &tb, false);
    MF_TEST_TRUE(st == MF_ERR_INVALID && strstr(mf_last_error(), "twice"), "duplicate add: %s",
                 mf_last_error());
    mf_param_store_free(&v);

    /* Ending-node attention with other heads than the starting node: named inconsistency. */
    copy_without(&v, s, "evoformer_iteration/triangle_attention_ending_node/attention//query_w");
    static float q[2 * 16 * 4 * 4];
    mf_tensor tq = mf_tensor_f32(q, 4, 2, 16, 4, 4);
    MF_TEST_OK(mf_param_store_add(
        &v, EVO "evoformer_iteration/triangle_attention_ending_node/attention//query_w", &tq,
        false));
    st = mf_param_store_infer_config(&v, &cfg);
    MF_TEST_TRUE(st == MF_ERR_FORMAT && strstr(mf_last_error(), "triangle attention heads") &&
                     strstr(mf_last_error(), "starting_node") &&
                     strstr(mf_last_error(), "ending_node"),
                 "inconsistent heads: %s: %s", mf_status_name(st), mf_last_error());
    printf("inconsistent shapes: %s\n", mf_last_error());
    mf_param_store_free(&v);

    /* Missing Evoformer: the error names the parameter. */
    copy_without(&v, s, "evoformer_iteration/msa_row_attention_with_pair_bias/attention//query_w");
    st = mf_param_store_infer_config(&v, &cfg);
    MF_TEST_TRUE(st == MF_ERR_FORMAT && strstr(mf_last_error(), "query_w") &&
                     strstr(mf_last_error(), "missing"),
                 "missing parameter: %s", mf_last_error());
    mf_param_store_free(&v);

    /* Multimer names: refused by both loaders. */
    copy_without(&v, s, NULL);
    MF_TEST_OK(mf_param_store_add(&v, EVO "~_relative_encoding/position_activations//weights", &tw,
                                  false));
    char p[4096], h[4096];
    snprintf(p, sizeof p, "%s/multimer.npz", dir);
    snprintf(h, sizeof h, "%s/multimer.h5", dir);
    MF_TEST_OK(mf_param_store_save_npz(&v, p));
    MF_TEST_OK(mf_param_store_save_h5(&v, h));
    mf_param_store_free(&v);
    const char *files[2] = {p, h};
    for (int i = 0; i < 2; i++) {
        mf_param_store_init(&v);
        st = mf_param_store_load(&v, files[i], NULL);
        MF_TEST_TRUE(st == MF_ERR_UNSUPPORTED &&
                         strstr(mf_last_error(), "multimer parameters are not supported yet") &&
                         strstr(mf_last_error(), "~_relative_encoding") && v.count == 0,
                     "multimer file %s: %s: %s", files[i], mf_status_name(st), mf_last_error());
        printf("multimer file: %s\n", mf_last_error());
        mf_param_store_free(&v);
    }
    MF_TEST_TRUE(mf_param_name_is_multimer(EVO "evoformer_iteration/triangle_multiplication_"
                                               "outgoing/left_norm_input//scale") &&
                     !mf_param_name_is_multimer(EVO "evoformer_iteration/triangle_multiplication_"
                                                    "outgoing/layer_norm_input//scale"),
                 "multimer name markers");
}

static void check_errors(const char *dir)
{
    char p[4096];
    mf_param_store v;
    mf_status st;

    /* A non-float32 array (f64_1d in the numpy fixture) is refused by name. */
    const char *src =
        getenv("MEMFOLD_SOURCE") && *getenv("MEMFOLD_SOURCE") ? getenv("MEMFOLD_SOURCE") : ".";
    snprintf(p, sizeof p, "%s/tests/data/npz/good_compressed.npz", src);
    mf_param_store_init(&v);
    st = mf_param_store_load_npz(&v, p, NULL);
    MF_TEST_TRUE(st == MF_ERR_FORMAT && strstr(mf_last_error(), "'f64_1d'") &&
                     strstr(mf_last_error(), "float32") && v.count == 0,
                 "f64 array: %s: %s", mf_status_name(st), mf_last_error());
    printf("non-float32 array: %s\n", mf_last_error());

    /* Names that cannot be mapped to /scope + dataset both ways. */
    float x[2] = {1, 2};
    mf_tensor t = mf_tensor_f32(x, 1, 2);
    const char *bad[3] = {"no_separator", "//no_scope", "a//b/c"};
    for (int i = 0; i < 3; i++) {
        mf_param_store_init(&v);
        MF_TEST_OK(mf_param_store_add(&v, bad[i], &t, false));
        snprintf(p, sizeof p, "%s/bad_name.h5", dir);
        st = mf_param_store_save_h5(&v, p);
        MF_TEST_TRUE(st == MF_ERR_INVALID && strstr(mf_last_error(), bad[i]) && access(p, F_OK),
                     "name '%s': %s: %s", bad[i], mf_status_name(st), mf_last_error());
        mf_param_store_free(&v);
    }

    /* An HDF5 file that is not a parameter file. */
    mf_h5_writer w;
    snprintf(p, sizeof p, "%s/other.h5", dir);
    MF_TEST_OK(mf_h5_writer_open(&w, p));
    MF_TEST_OK(mf_h5_write_array(&w, "scope/x", MF_F32, 1, (int64_t[]){2}, x));
    MF_TEST_OK(mf_h5_writer_commit(&w));
    mf_param_store_init(&v);
    st = mf_param_store_load(&v, p, NULL);
    MF_TEST_TRUE(st == MF_ERR_FORMAT && strstr(mf_last_error(), "not a memfold parameter file"),
                 "foreign HDF5: %s", mf_last_error());
    /* ... but its group can be read as parameters (the checkpoint path). */
    hid_t f;
    MF_TEST_OK(mf_h5_open_read(p, &f));
    MF_TEST_OK(mf_param_store_read_h5_group(&v, f, p, "/", NULL));
    MF_TEST_TRUE(v.count == 1 && !strcmp(v.entries[0].name, "scope//x"), "group read: '%s'",
                 v.count ? v.entries[0].name : "");
    H5Fclose(f);
    mf_param_store_free(&v);
    printf("name mapping refusals, foreign HDF5 and group reads: checked\n");
}

int main(void)
{
    char dir[] = "/tmp/mf_params_XXXXXX";
    MF_TEST_TRUE(mkdtemp(dir) != NULL, "mkdtemp failed");
    char ref[4096];
    snprintf(ref, sizeof ref, "%s/testvectors/params_af2.npz", mf_test_shared_dir());

    mf_param_store s;
    mf_param_store_init(&s);
    MF_TEST_OK(mf_param_store_load_npz(&s, ref, NULL));
    MF_TEST_TRUE(s.count == 336 && mf_param_store_numel(&s) == 121498,
                 "store: %d tensors, %lld values", s.count, (long long)mf_param_store_numel(&s));
    printf("params_af2.npz: %d tensors, %lld parameters\n", s.count,
           (long long)mf_param_store_numel(&s));
    if (s.count == 336) {
        check_round_trip(dir, ref, &s);
        check_arena(ref, &s);
        check_views(&s);
        check_expected(&s);
        check_config(&s);
        check_variants(dir, &s);
    }
    check_errors(dir);
    mf_param_store_free(&s);

    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    MF_TEST_TRUE(system(cmd) == 0, "cannot remove %s", dir);
    return mf_test_finish("test_param_store");
}
