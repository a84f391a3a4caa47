#include "data/processed.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/h5slab.h"

#define RECYCLING_AXIS_RULE                                                                        \
    "features that differ between recycling iterations have a leading axis of length "             \
    "n_recycle_iterations (iteration r at index r); features identical in every iteration have "   \
    "no recycling axis; attribute per_iteration says which"

static const char *const per_iteration_names[] = {
    "msa_feat", "true_msa", "bert_mask", "extra_msa", "extra_has_deletion", "extra_deletion_value",
};

bool mf_feature_may_be_per_iteration(const char *name)
{
    for (size_t i = 0; i < sizeof per_iteration_names / sizeof *per_iteration_names; i++)
        if (strcmp(name, per_iteration_names[i]) == 0) return true;
    return false;
}

void mf_processed_init(mf_processed_features *f)
{
    memset(f, 0, sizeof *f);
    f->num_iterations = 1;
}

void mf_processed_free(mf_processed_features *f)
{
    if (!f) return;
    for (int i = 0; i < f->num_features; i++) mf_h5_array_free(&f->features[i].array);
    free(f->features);
    free(f->sequence);
    mf_processed_init(f);
}

const mf_feature *mf_processed_find(const mf_processed_features *f, const char *name)
{
    for (int i = 0; i < f->num_features; i++)
        if (strcmp(f->features[i].name, name) == 0) return &f->features[i];
    return NULL;
}

/* Appends a feature whose array the caller fills (data taken over). */
static mf_status append(mf_processed_features *f, const char *name, bool per_iteration,
                        mf_h5_array *a)
{
    MF_REQUIRE(strlen(name) < MF_FEATURE_NAME_CAP, "feature name '%s' is too long", name);
    MF_REQUIRE(!mf_processed_find(f, name), "feature '%s' added twice", name);
    if (f->num_features == f->cap) {
        int cap = f->cap ? 2 * f->cap : 64;
        mf_feature *nf = realloc(f->features, (size_t)cap * sizeof *nf);
        if (!nf) return MF_ERROR(MF_ERR_NOMEM, "feature '%s': out of memory", name);
        f->features = nf;
        f->cap = cap;
    }
    mf_feature *ft = &f->features[f->num_features++];
    memset(ft, 0, sizeof *ft);
    snprintf(ft->name, sizeof ft->name, "%s", name);
    ft->per_iteration = per_iteration;
    ft->array = *a;
    memset(a, 0, sizeof *a);
    return MF_OK;
}

mf_status mf_processed_add(mf_processed_features *f, const char *name, mf_dtype dtype,
                           bool per_iteration, int ndim, const int64_t *shape, void **data)
{
    *data = NULL;
    MF_REQUIRE(dtype == MF_F32 || dtype == MF_I32, "feature '%s': dtype %s (f32 or i32 only)", name,
               mf_dtype_name(dtype));
    MF_REQUIRE(!per_iteration || mf_feature_may_be_per_iteration(name),
               "feature '%s' cannot have a recycling axis", name);
    const int nd = ndim + (per_iteration ? 1 : 0);
    MF_REQUIRE(ndim >= 0 && nd <= MF_H5_MAX_DIMS, "feature '%s': %d dims", name, nd);
    MF_REQUIRE(!per_iteration || f->num_iterations >= 1, "feature '%s': %lld recycling iterations",
               name, (long long)f->num_iterations);
    mf_h5_array a = {.dtype = dtype, .ndim = nd};
    int k = 0;
    if (per_iteration) a.shape[k++] = f->num_iterations;
    for (int i = 0; i < ndim; i++) {
        MF_REQUIRE(shape[i] >= 0, "feature '%s': dim %d is %lld", name, i, (long long)shape[i]);
        a.shape[k++] = shape[i];
    }
    const int64_t n = mf_h5_array_numel(&a);
    a.data = calloc((size_t)(n > 0 ? n : 1), mf_dtype_size(dtype));
    if (!a.data)
        return MF_ERROR(MF_ERR_NOMEM, "feature '%s': %lld elements: out of memory", name,
                        (long long)n);
    void *p = a.data;
    mf_status st = append(f, name, per_iteration, &a);
    if (st != MF_OK) {
        free(a.data);
        return st;
    }
    *data = p;
    return MF_OK;
}

mf_status mf_processed_iteration(const mf_processed_features *f, const char *name, int64_t r,
                                 mf_h5_array *view)
{
    memset(view, 0, sizeof *view);
    const mf_feature *ft = mf_processed_find(f, name);
    if (!ft) return MF_ERROR(MF_ERR_INVALID, "processed features: no feature '%s'", name);
    if (r < 0 || r >= f->num_iterations)
        return MF_ERROR(MF_ERR_INVALID, "feature '%s': iteration %lld of %lld", name, (long long)r,
                        (long long)f->num_iterations);
    *view = ft->array;
    if (!ft->per_iteration) return MF_OK;
    view->ndim = ft->array.ndim - 1;
    for (int i = 0; i < view->ndim; i++) view->shape[i] = ft->array.shape[i + 1];
    const int64_t per = mf_h5_array_numel(view);
    view->data = (char *)ft->array.data + (size_t)(r * per) * mf_dtype_size(ft->array.dtype);
    return MF_OK;
}

mf_status mf_processed_tensor(const mf_processed_features *f, const char *name, int64_t r,
                              mf_tensor *out)
{
    mf_h5_array v;
    MF_TRY(mf_processed_iteration(f, name, r, &v));
    MF_REQUIRE(v.ndim <= MF_MAX_DIMS, "feature '%s' has %d dims per iteration (tensors: <= %d)",
               name, v.ndim, MF_MAX_DIMS);
    *out = mf_tensor_make(v.data, v.dtype, MF_DEV_CPU, v.ndim, v.shape);
    return MF_OK;
}

bool mf_processed_equal(const mf_processed_features *a, const mf_processed_features *b, char *diff,
                        size_t cap)
{
    char dummy[8];
    if (!diff) diff = dummy, cap = sizeof dummy;
    diff[0] = '\0';
    if (a->num_features != b->num_features) {
        snprintf(diff, cap, "%d vs %d features", a->num_features, b->num_features);
        return false;
    }
    if (a->num_iterations != b->num_iterations) {
        snprintf(diff, cap, "%lld vs %lld recycling iterations", (long long)a->num_iterations,
                 (long long)b->num_iterations);
        return false;
    }
    for (int i = 0; i < a->num_features; i++) {
        const mf_feature *x = &a->features[i], *y = mf_processed_find(b, x->name);
        if (!y) {
            snprintf(diff, cap, "'%s' missing in the second", x->name);
            return false;
        }
        bool same = x->per_iteration == y->per_iteration && x->array.dtype == y->array.dtype &&
                    x->array.ndim == y->array.ndim;
        for (int k = 0; same && k < x->array.ndim; k++)
            same = x->array.shape[k] == y->array.shape[k];
        if (!same) {
            snprintf(diff, cap, "'%s': flag, dtype or shape differ", x->name);
            return false;
        }
        const size_t bytes = (size_t)mf_h5_array_numel(&x->array) * mf_dtype_size(x->array.dtype);
        if (bytes && memcmp(x->array.data, y->array.data, bytes) != 0) {
            snprintf(diff, cap, "'%s': data differ", x->name);
            return false;
        }
    }
    return true;
}

/* ---- file I/O ---- */

static mf_status write_attr_i32(mf_h5_writer *w, const char *obj, const char *attr, int32_t v)
{
    hid_t space = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate_by_name(w->file, obj, attr, H5T_STD_I32LE, space, H5P_DEFAULT, H5P_DEFAULT,
                                H5P_DEFAULT);
    mf_status st = MF_OK;
    if (a < 0 || H5Awrite(a, H5T_NATIVE_INT32, &v) < 0)
        st =
            MF_ERROR(MF_ERR_BACKEND, "%s: cannot write attribute '%s' of '%s'", w->path, attr, obj);
    if (a >= 0) H5Aclose(a);
    H5Sclose(space);
    return st;
}

mf_status mf_processed_write(const char *path, const mf_processed_features *f)
{
    mf_h5_quiet();
    mf_h5_writer w = {0};
    MF_TRY(mf_h5_writer_open(&w, path));
    mf_status st = MF_OK;
    for (int i = 0; i < f->num_features; i++) {
        const mf_feature *ft = &f->features[i];
        if (ft->per_iteration && (ft->array.ndim < 1 || ft->array.shape[0] != f->num_iterations)) {
            st = MF_ERROR(MF_ERR_INVALID,
                          "%s: feature '%s' is per-iteration but its leading axis is not R = %lld",
                          path, ft->name, (long long)f->num_iterations);
            goto cleanup;
        }
        MF_TRY_GOTO(mf_h5_write_array(&w, ft->name, ft->array.dtype, ft->array.ndim,
                                      ft->array.shape, ft->array.data));
        MF_TRY_GOTO(write_attr_i32(&w, ft->name, "per_iteration", ft->per_iteration ? 1 : 0));
    }
    MF_TRY_GOTO(mf_h5_write_attr_string(&w, "/", "format", MF_PROCESSED_FORMAT));
    MF_TRY_GOTO(mf_h5_write_attr_int(&w, "/", "schema_version", MF_PROCESSED_SCHEMA_VERSION));
    MF_TRY_GOTO(mf_h5_write_attr_int(&w, "/", "n_recycle_iterations", f->num_iterations));
    MF_TRY_GOTO(mf_h5_write_attr_int(&w, "/", "n_res", f->num_res));
    MF_TRY_GOTO(mf_h5_write_attr_string(&w, "/", "recycling_axis_rule", RECYCLING_AXIS_RULE));
    if (f->sequence) MF_TRY_GOTO(mf_h5_write_attr_string(&w, "/", "sequence", f->sequence));
    return mf_h5_writer_commit(&w);
cleanup:
    mf_h5_writer_abort(&w);
    return st;
}

static bool is_dataset(hid_t loc, const char *name)
{
    hid_t o = H5Oopen(loc, name, H5P_DEFAULT);
    if (o < 0) return false;
    bool d = H5Iget_type(o) == H5I_DATASET;
    H5Oclose(o);
    return d;
}

static bool has_attr(hid_t loc, const char *obj, const char *attr)
{
    return H5Aexists_by_name(loc, obj, attr, H5P_DEFAULT) > 0;
}

mf_status mf_processed_read(const char *path, mf_processed_features *out)
{
    mf_processed_init(out);
    hid_t file = H5I_INVALID_HID;
    MF_TRY(mf_h5_open_read(path, &file));
    char **names = NULL;
    int count = 0;
    mf_status st = MF_OK;
    MF_TRY_GOTO(mf_h5_list(file, "/", &names, &count));
    int64_t R = -1;
    if (has_attr(file, ".", "n_recycle_iterations")) {
        double v = 0;
        MF_TRY_GOTO(mf_h5_read_attr_double(file, ".", "n_recycle_iterations", &v));
        if (!(v >= 1 && v < 1e9)) {
            st = MF_ERROR(MF_ERR_FORMAT, "%s: n_recycle_iterations = %g", path, v);
            goto cleanup;
        }
        R = (int64_t)v;
    }
    if (has_attr(file, ".", "format")) {
        char *fmt = NULL;
        MF_TRY_GOTO(mf_h5_read_attr_string(file, ".", "format", &fmt));
        const bool ok = strcmp(fmt, MF_PROCESSED_FORMAT) == 0;
        if (!ok)
            st = MF_ERROR(MF_ERR_FORMAT, "%s: format '%s', expected '%s'", path, fmt,
                          MF_PROCESSED_FORMAT);
        free(fmt);
        if (!ok) goto cleanup;
    }
    if (has_attr(file, ".", "sequence"))
        MF_TRY_GOTO(mf_h5_read_attr_string(file, ".", "sequence", &out->sequence));
    for (int i = 0; i < count; i++) {
        const char *name = names[i];
        if (!is_dataset(file, name)) continue;
        if (!has_attr(file, name, "per_iteration")) {
            st = MF_ERROR(MF_ERR_FORMAT, "%s: dataset '%s' has no per_iteration attribute", path,
                          name);
            goto cleanup;
        }
        double pi = 0;
        MF_TRY_GOTO(mf_h5_read_attr_double(file, name, "per_iteration", &pi));
        if (pi != 0 && pi != 1) {
            st = MF_ERROR(MF_ERR_FORMAT, "%s: dataset '%s': per_iteration = %g (0 or 1)", path,
                          name, pi);
            goto cleanup;
        }
        const bool per = pi == 1;
        if (per && !mf_feature_may_be_per_iteration(name)) {
            st = MF_ERROR(MF_ERR_FORMAT,
                          "%s: dataset '%s' has per_iteration = 1, but it is not a feature that "
                          "is resampled per recycling iteration",
                          path, name);
            goto cleanup;
        }
        bool is_float = false;
        int nd = 0;
        int64_t shape[MF_H5_MAX_DIMS];
        MF_TRY_GOTO(mf_h5_dataset_info(file, path, name, &nd, shape, &is_float, NULL));
        if (per) {
            if (nd < 1 || (R >= 0 && shape[0] != R)) {
                st = MF_ERROR(MF_ERR_FORMAT,
                              "%s: dataset '%s' is per-iteration but its leading axis (%lld) is "
                              "not n_recycle_iterations (%lld)",
                              path, name, nd ? (long long)shape[0] : -1LL, (long long)R);
                goto cleanup;
            }
            if (R < 0) R = shape[0];
        }
        mf_h5_array a = {0};
        MF_TRY_GOTO(mf_h5_read_array(file, path, name, is_float ? MF_F32 : MF_I32, &a));
        st = append(out, name, per, &a);
        if (st != MF_OK) {
            mf_h5_array_free(&a);
            goto cleanup;
        }
    }
    out->num_iterations = R > 0 ? R : 1;
    if (has_attr(file, ".", "n_res")) {
        double v = 0;
        MF_TRY_GOTO(mf_h5_read_attr_double(file, ".", "n_res", &v));
        out->num_res = (int64_t)v;
    } else {
        const mf_feature *aa = mf_processed_find(out, "aatype");
        out->num_res = aa && aa->array.ndim == 1 ? aa->array.shape[0] : 0;
    }
cleanup:
    mf_h5_free_names(names, count);
    H5Fclose(file);
    if (st != MF_OK) mf_processed_free(out);
    return st;
}
