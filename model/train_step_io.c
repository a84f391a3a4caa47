/* The training step's dump (train_expected.h5 layout) and its check against a reference file
 * (see train_step.h). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/h5io.h"
#include "model/train_step.h"

bool mf_train_grad_is_exactly_zero(const char *name)
{
    static const char *const suffixes[] = {
        "msa_row_attention_with_pair_bias/feat_2d_norm//offset",
        "invariant_point_attention/attention_2d//bias",
    };
    const size_t n = strlen(name);
    for (size_t k = 0; k < sizeof suffixes / sizeof suffixes[0]; k++) {
        const size_t m = strlen(suffixes[k]);
        if (n >= m && !strcmp(name + n - m, suffixes[k])) return true;
    }
    return false;
}

/* ---- dump ---------------------------------------------------------------------------------- */

static mf_status write_scalar(mf_h5_writer *w, const char *group, const char *name, double v)
{
    char path[256];
    snprintf(path, sizeof path, "%s/%s", group, name);
    const float x = (float)v;
    return mf_h5_write_array(w, path, MF_F32, 0, NULL, &x);
}

static mf_status write_loss_group(mf_h5_writer *w, const char *group, const mf_loss_values *v,
                                  float use_clamped)
{
    char weights[1024] = "{";
    for (int k = 0; k < MF_LOSS_NUM_TERMS; k++) {
        if (!v->present[k]) continue;
        MF_TRY(write_scalar(w, group, mf_loss_term_name(k), v->term[k]));
        char item[96];
        snprintf(item, sizeof item, "%s\"%s\": %g", strlen(weights) > 1 ? ", " : "",
                 mf_loss_term_name(k), v->weight[k]);
        strncat(weights, item, sizeof weights - strlen(weights) - 2);
    }
    strcat(weights, "}");
    MF_TRY(write_scalar(w, group, "unscaled_loss", v->unscaled_loss));
    MF_TRY(write_scalar(w, group, "total", v->total));
    MF_TRY(mf_h5_write_attr_string(w, group, "weights", weights));
    MF_TRY(mf_h5_write_attr_double(w, group, "total_scale", v->total_scale));
    MF_TRY(mf_h5_write_attr_int(w, group, "use_clamped_fape", use_clamped >= 0.5f ? 1 : 0));
    return mf_h5_write_attr_string(w, group, "doc",
                                   "unscaled_loss = sum_t weight_t * term_t; total = "
                                   "unscaled_loss * sqrt(min(seq_length, n_res))");
}

static mf_status write_tensor(mf_h5_writer *w, const char *name, const mf_tensor *t)
{
    if (!t || !t->data) return MF_OK;
    return mf_h5_write_array(w, name, MF_F32, t->ndim, t->shape, t->data);
}

static mf_status dump_body(mf_h5_writer *w, const mf_train_step_result *res,
                           const mf_param_store *grads, const mf_train_step_outputs *outs)
{
    MF_TRY(mf_h5_write_attr_string(w, ".", "format", MF_TRAIN_STEP_FORMAT));
    MF_TRY(mf_h5_write_attr_int(w, ".", "schema_version", MF_TRAIN_STEP_SCHEMA_VERSION));
    MF_TRY(mf_h5_write_attr_int(w, ".", "num_iterations", res->num_iterations));
    MF_TRY(mf_h5_write_attr_string(
        w, ".", "doc",
        "one training step (memfold train-step): loss terms, d loss/total / d parameter, the "
        "trained iteration's structure outputs; gradients through the final recycling "
        "iteration only"));
    MF_TRY(write_loss_group(w, "loss", &res->loss, res->use_clamped_fape));
    MF_TRY(write_loss_group(w, "loss_unclamped", &res->loss_unclamped, 0.0f));
    double scale = 0.0;
    for (int i = 0; i < grads->count; i++) {
        const mf_tensor *t = &grads->entries[i].tensor;
        MF_REQUIRE(t->dtype == MF_F32 && t->device == MF_DEV_CPU,
                   "dump: gradient %s is not host f32", grads->entries[i].name);
        const float *x = t->data;
        const int64_t n = mf_tensor_numel(t);
        for (int64_t k = 0; k < n; k++)
            if (fabs((double)x[k]) > scale) scale = fabs((double)x[k]);
        char esc[1024], path[1100];
        mf_h5_escape_name(grads->entries[i].name, esc, sizeof esc);
        snprintf(path, sizeof path, "grads/%s", esc);
        MF_TRY(write_tensor(w, path, t));
        MF_TRY(mf_h5_write_attr_string(w, path, "af2_name", grads->entries[i].name));
        MF_TRY(mf_h5_write_attr_string(
            w, path, "compare",
            mf_train_grad_is_exactly_zero(grads->entries[i].name) ? "absolute" : "relative"));
    }
    if (grads->count > 0) {
        MF_TRY(mf_h5_write_attr_double(w, "grads", "grad_scale", scale));
        MF_TRY(mf_h5_write_attr_string(w, "grads", "doc",
                                       "d loss/total / d parameter, same shapes as the "
                                       "parameters; dataset name = AF2 parameter name with '/' "
                                       "replaced by '|'"));
    }
    if (outs) {
        MF_TRY(write_tensor(w, "train_outputs/final_atom_positions", &outs->final_atom_positions));
        MF_TRY(write_tensor(w, "train_outputs/sm/frames", &outs->frames));
        MF_TRY(write_tensor(w, "train_outputs/sm/positions", &outs->positions));
    }
    return MF_OK;
}

mf_status mf_train_step_dump_write(const char *path, const mf_train_step_result *res,
                                   const mf_param_store *grads, const mf_train_step_outputs *outs)
{
    MF_REQUIRE(path && res && grads, "train step dump: arguments");
    mf_h5_quiet();
    mf_h5_writer w;
    MF_TRY(mf_h5_writer_open(&w, path));
    mf_status st = dump_body(&w, res, grads, outs);
    if (st != MF_OK) {
        mf_h5_writer_abort(&w);
        return mf_error_context(st, "writing %s", path);
    }
    return mf_h5_writer_commit(&w);
}

/* ---- check --------------------------------------------------------------------------------- */

void mf_train_check_report_free(mf_train_check_report *r)
{
    if (!r) return;
    free(r->items);
    memset(r, 0, sizeof *r);
}

static mf_status add_item(mf_train_check_report *r, const char *name, mf_compare_result c)
{
    if (r->count == r->cap) {
        const int cap = r->cap ? 2 * r->cap : 512;
        mf_train_check_item *p = realloc(r->items, sizeof *p * (size_t)cap);
        if (!p) return MF_ERROR(MF_ERR_NOMEM, "train check report");
        r->items = p;
        r->cap = cap;
    }
    mf_train_check_item *it = &r->items[r->count++];
    snprintf(it->name, sizeof it->name, "%s", name);
    it->result = c;
    if (!c.pass) r->failed++;
    return MF_OK;
}

static mf_compare_result missing(double tol)
{
    return (mf_compare_result){.rel = INFINITY, .tol = tol, .pass = false};
}

typedef struct {
    hid_t file;
    const char *path;
    mf_train_check_report *r;
} checker;

/* The value of loss-group dataset `name` in v, or false when this run has none. */
static bool loss_value(const mf_loss_values *v, const char *name, double *out)
{
    if (!strcmp(name, "unscaled_loss")) return *out = v->unscaled_loss, true;
    if (!strcmp(name, "total")) return *out = v->total, true;
    for (int k = 0; k < MF_LOSS_NUM_TERMS; k++)
        if (v->present[k] && !strcmp(name, mf_loss_term_name(k))) return *out = v->term[k], true;
    return false;
}

static mf_status check_losses(checker *c, const char *group, const mf_loss_values *v)
{
    if (!mf_h5_exists(c->file, group)) return MF_OK;
    char **names = NULL;
    int count = 0;
    MF_TRY(mf_h5_list(c->file, group, &names, &count));
    mf_status st = MF_OK;
    for (int i = 0; i < count && st == MF_OK; i++) {
        char path[512];
        snprintf(path, sizeof path, "%s/%s", group, names[i]);
        double mine;
        if (!loss_value(v, names[i], &mine)) {
            st = add_item(c->r, path, missing(MF_TRAIN_CHECK_RTOL_LOSS));
            continue;
        }
        mf_h5_array ref;
        st = mf_h5_read_array(c->file, c->path, path, MF_F32, &ref);
        if (st != MF_OK) break;
        const float cand = (float)mine;
        mf_compare_result cr;
        if (mf_h5_array_numel(&ref) != 1)
            cr = missing(MF_TRAIN_CHECK_RTOL_LOSS);
        else
            cr = mf_compare_maxrel(&cand, ref.data, 1, 1, NULL, 0, MF_TRAIN_CHECK_RTOL_LOSS, 0.0);
        mf_h5_array_free(&ref);
        if (cr.rel > c->r->worst_loss) c->r->worst_loss = cr.rel;
        st = add_item(c->r, path, cr);
    }
    mf_h5_free_names(names, count);
    return st;
}

static mf_status check_grads(checker *c, const mf_param_store *grads)
{
    if (!mf_h5_exists(c->file, "grads")) return MF_OK;
    double scale = 0.0;
    if (mf_h5_read_attr_double(c->file, "grads", "grad_scale", &scale) != MF_OK) {
        mf_clear_error();
        scale = 0.0;
    }
    char **names = NULL;
    int count = 0;
    MF_TRY(mf_h5_list(c->file, "grads", &names, &count));
    mf_status st = MF_OK;
    bool *seen = calloc((size_t)(grads->count > 0 ? grads->count : 1), sizeof *seen);
    if (!seen) st = MF_ERROR(MF_ERR_NOMEM, "train check");
    for (int i = 0; i < count && st == MF_OK; i++) {
        char af2[1024], path[1100], label[1100];
        mf_h5_unescape_name(names[i], af2, sizeof af2);
        snprintf(path, sizeof path, "grads/%s", names[i]);
        const size_t root = strlen(MF_AF2_ROOT);
        snprintf(label, sizeof label, "grads/%s",
                 strncmp(af2, MF_AF2_ROOT, root) ? af2 : af2 + root);
        const mf_tensor *g = mf_param_store_find(grads, af2);
        if (!g) {
            st = add_item(c->r, label, missing(MF_TRAIN_CHECK_RTOL_GRAD));
            continue;
        }
        for (int k = 0; k < grads->count; k++)
            if (&grads->entries[k].tensor == g) seen[k] = true;
        char *how = NULL;
        double abs_scale = 0.0;
        if (mf_h5_read_attr_string(c->file, path, "compare", &how) == MF_OK &&
            !strcmp(how, "absolute"))
            abs_scale = scale > 0 ? scale : 1.0;
        free(how);
        mf_clear_error();
        mf_h5_array ref;
        st = mf_h5_read_array(c->file, c->path, path, MF_F32, &ref);
        if (st != MF_OK) break;
        const int64_t n = mf_tensor_numel(g);
        mf_compare_result cr;
        if (mf_h5_array_numel(&ref) != n)
            cr = missing(MF_TRAIN_CHECK_RTOL_GRAD);
        else
            cr = mf_compare_maxrel(g->data, ref.data, n, n, NULL, 0, MF_TRAIN_CHECK_RTOL_GRAD,
                                   abs_scale);
        mf_h5_array_free(&ref);
        if (cr.rel > c->r->worst_grad) c->r->worst_grad = cr.rel;
        if (abs_scale > 0) strncat(label, " (absolute)", sizeof label - strlen(label) - 1);
        st = add_item(c->r, label, cr);
    }
    for (int k = 0; st == MF_OK && count > 0 && k < grads->count; k++)
        if (!seen[k]) {
            char label[1100];
            snprintf(label, sizeof label, "grads/%s (not in the reference)",
                     grads->entries[k].name);
            st = add_item(c->r, label, missing(MF_TRAIN_CHECK_RTOL_GRAD));
        }
    free(seen);
    mf_h5_free_names(names, count);
    return st;
}

static mf_status check_output(checker *c, const char *name, const mf_tensor *t)
{
    if (!mf_h5_exists(c->file, name)) return MF_OK;
    if (!t || !t->data) return add_item(c->r, name, missing(MF_TRAIN_CHECK_RTOL_LOSS));
    mf_h5_array ref;
    MF_TRY(mf_h5_read_array(c->file, c->path, name, MF_F32, &ref));
    const int64_t n = mf_tensor_numel(t);
    mf_compare_result cr =
        mf_h5_array_numel(&ref) == n
            ? mf_compare_maxrel(t->data, ref.data, n, n, NULL, 0, MF_TRAIN_CHECK_RTOL_LOSS, 0.0)
            : missing(MF_TRAIN_CHECK_RTOL_LOSS);
    mf_h5_array_free(&ref);
    if (cr.rel > c->r->worst_output) c->r->worst_output = cr.rel;
    return add_item(c->r, name, cr);
}

mf_status mf_train_step_check(const char *ref_path, const mf_train_step_result *res,
                              const mf_param_store *grads, const mf_train_step_outputs *outs,
                              mf_train_check_report *report)
{
    MF_REQUIRE(ref_path && res && grads && report, "train step check: arguments");
    memset(report, 0, sizeof *report);
    mf_h5_quiet();
    checker c = {.path = ref_path, .r = report};
    MF_TRY(mf_h5_open_read(ref_path, &c.file));
    mf_status st = check_losses(&c, "loss", &res->loss);
    if (st == MF_OK) st = check_losses(&c, "loss_unclamped", &res->loss_unclamped);
    if (st == MF_OK) st = check_grads(&c, grads);
    const mf_train_step_outputs none = {0};
    if (!outs) outs = &none;
    if (st == MF_OK)
        st = check_output(&c, "train_outputs/final_atom_positions", &outs->final_atom_positions);
    if (st == MF_OK) st = check_output(&c, "train_outputs/sm/frames", &outs->frames);
    if (st == MF_OK) st = check_output(&c, "train_outputs/sm/positions", &outs->positions);
    H5Fclose(c.file);
    if (st == MF_OK && report->count == 0)
        st = MF_ERROR(MF_ERR_FORMAT, "%s: no loss/, grads/ or train_outputs/ dataset to compare",
                      ref_path);
    return st;
}
