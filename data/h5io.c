#include "data/h5io.h"

#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int64_t mf_h5_array_numel(const mf_h5_array *a)
{
    int64_t n = 1;
    for (int i = 0; i < a->ndim; i++) n *= a->shape[i];
    return n;
}

void mf_h5_array_free(mf_h5_array *a)
{
    if (!a) return;
    free(a->data);
    memset(a, 0, sizeof *a);
}

void mf_h5_quiet(void)
{
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
}

static hid_t mem_type(mf_dtype t)
{
    switch (t) {
    case MF_F32:
        return H5T_NATIVE_FLOAT;
    case MF_I32:
        return H5T_NATIVE_INT32;
    case MF_I8:
        return H5T_NATIVE_INT8;
    case MF_BF16:
        return H5T_NATIVE_UINT16; /* stored as raw 16-bit patterns */
    case MF_F64:
        return H5T_NATIVE_DOUBLE;
    }
    return H5T_NATIVE_FLOAT;
}

/* On-disk type: little-endian IEEE floats and integers; bf16 as raw 16-bit patterns. */
static hid_t file_type(mf_dtype t)
{
    switch (t) {
    case MF_F32:
        return H5T_IEEE_F32LE;
    case MF_F64:
        return H5T_IEEE_F64LE;
    case MF_I32:
        return H5T_STD_I32LE;
    case MF_I8:
        return H5T_STD_I8LE;
    case MF_BF16:
        return H5T_STD_U16LE;
    }
    return H5T_IEEE_F32LE;
}

mf_status mf_h5_open_read(const char *path, hid_t *out)
{
    mf_h5_quiet();
    *out = H5I_INVALID_HID;
    if (access(path, R_OK) != 0) return MF_ERROR(MF_ERR_IO, "%s: cannot read file", path);
    htri_t is = H5Fis_hdf5(path);
    if (is <= 0) return MF_ERROR(MF_ERR_FORMAT, "%s: not an HDF5 file", path);
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) return MF_ERROR(MF_ERR_FORMAT, "%s: HDF5 file cannot be opened (corrupt?)", path);
    *out = f;
    return MF_OK;
}

bool mf_h5_exists(hid_t loc, const char *name)
{
    /* H5Lexists needs every parent to exist: walk the path one component at a time. */
    char buf[1024];
    size_t n = strlen(name);
    if (n == 0 || n >= sizeof buf) return false;
    memcpy(buf, name, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (buf[i] != '/' && buf[i] != '\0') continue;
        char c = buf[i];
        buf[i] = '\0';
        htri_t e = H5Lexists(loc, buf, H5P_DEFAULT);
        buf[i] = c;
        if (e <= 0) return false;
    }
    return true;
}

mf_status mf_h5_read_array(hid_t loc, const char *file_label, const char *name, mf_dtype want,
                           mf_h5_array *out)
{
    memset(out, 0, sizeof *out);
    if (!mf_h5_exists(loc, name))
        return MF_ERROR(MF_ERR_FORMAT, "%s: dataset '%s' not found", file_label, name);
    mf_status st = MF_OK;
    hid_t d = H5Dopen2(loc, name, H5P_DEFAULT), space = H5I_INVALID_HID, ftype = H5I_INVALID_HID;
    if (d < 0) return MF_ERROR(MF_ERR_FORMAT, "%s: '%s' is not a dataset", file_label, name);
    space = H5Dget_space(d);
    ftype = H5Dget_type(d);
    int nd = H5Sget_simple_extent_ndims(space);
    if (nd < 0 || nd > MF_H5_MAX_DIMS) {
        st = MF_ERROR(MF_ERR_FORMAT, "%s: dataset '%s' has %d dims (at most %d supported)",
                      file_label, name, nd, MF_H5_MAX_DIMS);
        goto cleanup;
    }
    H5T_class_t cls = H5Tget_class(ftype);
    bool want_float = want == MF_F32 || want == MF_F64;
    if (!(cls == H5T_FLOAT || cls == H5T_INTEGER) || (!want_float && cls == H5T_FLOAT) ||
        (want == MF_BF16 && cls != H5T_INTEGER)) {
        st = MF_ERROR(MF_ERR_FORMAT, "%s: dataset '%s' has element class %s, expected %s",
                      file_label, name,
                      cls == H5T_FLOAT     ? "float"
                      : cls == H5T_INTEGER ? "integer"
                                           : "non-numeric",
                      mf_dtype_name(want));
        goto cleanup;
    }
    hsize_t dims[MF_H5_MAX_DIMS];
    H5Sget_simple_extent_dims(space, dims, NULL);
    out->dtype = want;
    out->ndim = nd;
    size_t n = 1;
    for (int i = 0; i < nd; i++) {
        out->shape[i] = (int64_t)dims[i];
        n *= (size_t)dims[i];
    }
    out->data = malloc(n ? n * mf_dtype_size(want) : 1);
    if (!out->data) {
        st = MF_ERROR(MF_ERR_NOMEM, "%s: no memory for dataset '%s' (%zu elements)", file_label,
                      name, n);
        goto cleanup;
    }
    if (n && H5Dread(d, mem_type(want), H5S_ALL, H5S_ALL, H5P_DEFAULT, out->data) < 0) {
        st = MF_ERROR(MF_ERR_FORMAT, "%s: dataset '%s' cannot be read (corrupt or checksum error)",
                      file_label, name);
        goto cleanup;
    }
cleanup:
    if (st != MF_OK) mf_h5_array_free(out);
    if (ftype >= 0) H5Tclose(ftype);
    if (space >= 0) H5Sclose(space);
    H5Dclose(d);
    return st;
}

mf_status mf_h5_read_array_shape(hid_t loc, const char *file_label, const char *name, mf_dtype want,
                                 int ndim, const int64_t *shape, mf_h5_array *out)
{
    MF_TRY(mf_h5_read_array(loc, file_label, name, want, out));
    bool ok = out->ndim == ndim;
    for (int i = 0; ok && i < ndim; i++) ok = out->shape[i] == shape[i];
    if (ok) return MF_OK;
    char got[128] = "", exp[128] = "";
    size_t g = 0, e = 0;
    for (int i = 0; i < out->ndim && g < sizeof got; i++)
        g += (size_t)snprintf(got + g, sizeof got - g, i ? ", %lld" : "%lld",
                              (long long)out->shape[i]);
    for (int i = 0; i < ndim && e < sizeof exp; i++)
        e += (size_t)snprintf(exp + e, sizeof exp - e, i ? ", %lld" : "%lld", (long long)shape[i]);
    mf_h5_array_free(out);
    return MF_ERROR(MF_ERR_FORMAT, "%s: dataset '%s' has shape [%s], expected [%s]", file_label,
                    name, got, exp);
}

mf_status mf_h5_read_attr_string(hid_t loc, const char *obj, const char *attr, char **out)
{
    *out = NULL;
    if (H5Aexists_by_name(loc, obj, attr, H5P_DEFAULT) <= 0)
        return MF_ERROR(MF_ERR_FORMAT, "attribute '%s' of '%s' not found", attr, obj);
    hid_t a = H5Aopen_by_name(loc, obj, attr, H5P_DEFAULT, H5P_DEFAULT);
    if (a < 0) return MF_ERROR(MF_ERR_FORMAT, "attribute '%s' of '%s' cannot be opened", attr, obj);
    mf_status st = MF_OK;
    hid_t ftype = H5Aget_type(a);
    if (H5Tget_class(ftype) != H5T_STRING) {
        st = MF_ERROR(MF_ERR_FORMAT, "attribute '%s' of '%s' is not a string", attr, obj);
    } else if (H5Tis_variable_str(ftype) > 0) {
        hid_t mt = H5Tcopy(H5T_C_S1);
        H5Tset_size(mt, H5T_VARIABLE);
        H5Tset_cset(mt, H5Tget_cset(ftype));
        char *s = NULL;
        if (H5Aread(a, mt, &s) < 0 || !s) {
            st = MF_ERROR(MF_ERR_FORMAT, "attribute '%s' of '%s' cannot be read", attr, obj);
        } else {
            *out = strdup(s);
            H5free_memory(s);
        }
        H5Tclose(mt);
    } else {
        size_t n = H5Tget_size(ftype);
        char *s = calloc(n + 1, 1);
        hid_t mt = H5Tcopy(H5T_C_S1);
        H5Tset_size(mt, n + 1);
        if (!s || H5Aread(a, mt, s) < 0) {
            free(s);
            st = MF_ERROR(MF_ERR_FORMAT, "attribute '%s' of '%s' cannot be read", attr, obj);
        } else {
            *out = s;
        }
        H5Tclose(mt);
    }
    if (st == MF_OK && !*out) st = MF_ERROR(MF_ERR_NOMEM, "attribute '%s': no memory", attr);
    H5Tclose(ftype);
    H5Aclose(a);
    return st;
}

mf_status mf_h5_read_attr_double(hid_t loc, const char *obj, const char *attr, double *out)
{
    if (H5Aexists_by_name(loc, obj, attr, H5P_DEFAULT) <= 0)
        return MF_ERROR(MF_ERR_FORMAT, "attribute '%s' of '%s' not found", attr, obj);
    hid_t a = H5Aopen_by_name(loc, obj, attr, H5P_DEFAULT, H5P_DEFAULT);
    if (a < 0) return MF_ERROR(MF_ERR_FORMAT, "attribute '%s' of '%s' cannot be opened", attr, obj);
    herr_t rc = H5Aread(a, H5T_NATIVE_DOUBLE, out);
    H5Aclose(a);
    if (rc < 0) return MF_ERROR(MF_ERR_FORMAT, "attribute '%s' of '%s' is not numeric", attr, obj);
    return MF_OK;
}

typedef struct {
    char **names;
    int count, cap;
    int failed;
} name_list;

static herr_t collect_name(hid_t g, const char *name, const H5L_info_t *info, void *ud)
{
    (void)g;
    (void)info;
    name_list *l = ud;
    if (l->count == l->cap) {
        int ncap = l->cap ? l->cap * 2 : 16;
        char **nn = realloc(l->names, sizeof *nn * (size_t)ncap);
        if (!nn) {
            l->failed = 1;
            return -1;
        }
        l->names = nn;
        l->cap = ncap;
    }
    l->names[l->count] = strdup(name);
    if (!l->names[l->count]) {
        l->failed = 1;
        return -1;
    }
    l->count++;
    return 0;
}

mf_status mf_h5_list(hid_t loc, const char *group, char ***names, int *count)
{
    *names = NULL;
    *count = 0;
    if (strcmp(group, "/") && !mf_h5_exists(loc, group))
        return MF_ERROR(MF_ERR_FORMAT, "group '%s' not found", group);
    hid_t g = H5Gopen2(loc, group, H5P_DEFAULT);
    if (g < 0) return MF_ERROR(MF_ERR_FORMAT, "'%s' is not a group", group);
    name_list l = {0};
    herr_t rc = H5Literate(g, H5_INDEX_NAME, H5_ITER_INC, NULL, collect_name, &l);
    H5Gclose(g);
    if (rc < 0 || l.failed) {
        mf_h5_free_names(l.names, l.count);
        return MF_ERROR(l.failed ? MF_ERR_NOMEM : MF_ERR_FORMAT, "cannot list group '%s'", group);
    }
    *names = l.names;
    *count = l.count;
    return MF_OK;
}

void mf_h5_free_names(char **names, int count)
{
    for (int i = 0; i < count; i++) free(names[i]);
    free(names);
}

/* ---- writing ---- */

mf_status mf_h5_writer_open(mf_h5_writer *w, const char *path)
{
    mf_h5_quiet();
    memset(w, 0, sizeof *w);
    w->file = H5I_INVALID_HID;
    size_t n = strlen(path) + 32;
    w->path = strdup(path);
    w->tmp_path = malloc(n);
    if (!w->path || !w->tmp_path) {
        mf_h5_writer_abort(w);
        return MF_ERROR(MF_ERR_NOMEM, "%s: no memory", path);
    }
    snprintf(w->tmp_path, n, "%s.tmp-%ld", path, (long)getpid());
    w->file = H5Fcreate(w->tmp_path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (w->file < 0) {
        mf_status st = MF_ERROR(MF_ERR_IO, "%s: cannot create file", w->tmp_path);
        mf_h5_writer_abort(w);
        return st;
    }
    return MF_OK;
}

/* Creates every missing group on the way to `name` (not the last component). */
static mf_status ensure_parents(hid_t file, const char *name)
{
    char buf[1024];
    size_t n = strlen(name);
    if (n >= sizeof buf) return MF_ERROR(MF_ERR_INVALID, "HDF5 name too long: %s", name);
    memcpy(buf, name, n + 1);
    for (size_t i = 1; i < n; i++) {
        if (buf[i] != '/') continue;
        buf[i] = '\0';
        if (H5Lexists(file, buf, H5P_DEFAULT) <= 0) {
            hid_t g = H5Gcreate2(file, buf, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
            if (g < 0) return MF_ERROR(MF_ERR_BACKEND, "cannot create HDF5 group '%s'", buf);
            H5Gclose(g);
        }
        buf[i] = '/';
    }
    return MF_OK;
}

mf_status mf_h5_write_array(mf_h5_writer *w, const char *name, mf_dtype dtype, int ndim,
                            const int64_t *shape, const void *data)
{
    MF_REQUIRE(ndim >= 0 && ndim <= MF_H5_MAX_DIMS, "dataset '%s': %d dims", name, ndim);
    MF_TRY(ensure_parents(w->file, name));
    hsize_t dims[MF_H5_MAX_DIMS], chunk[MF_H5_MAX_DIMS];
    size_t n = 1;
    for (int i = 0; i < ndim; i++) {
        dims[i] = (hsize_t)shape[i];
        n *= (size_t)shape[i];
    }
    hid_t space = ndim ? H5Screate_simple(ndim, dims, NULL) : H5Screate(H5S_SCALAR);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    if (ndim > 0 && n > 0) {
        /* Chunks of about 1 MiB: whole trailing dims, leading dims split. */
        size_t target = (1u << 20) / mf_dtype_size(dtype), inner = 1;
        for (int i = ndim - 1; i >= 0; i--) {
            size_t d = (size_t)dims[i];
            if (inner * d <= target || i == ndim - 1) {
                chunk[i] = dims[i] ? dims[i] : 1;
                inner *= d ? d : 1;
            } else {
                size_t c = target / inner;
                chunk[i] = c ? c : 1;
                for (int j = i - 1; j >= 0; j--) chunk[j] = 1;
                break;
            }
        }
        H5Pset_chunk(dcpl, ndim, chunk);
        H5Pset_fletcher32(dcpl);
        H5Pset_shuffle(dcpl);
        H5Pset_deflate(dcpl, 4);
    }
    hid_t ftype = file_type(dtype);
    hid_t d = H5Dcreate2(w->file, name, ftype, space, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    mf_status st = MF_OK;
    if (d < 0)
        st = MF_ERROR(MF_ERR_BACKEND, "%s: cannot create dataset '%s'", w->path, name);
    else if (n && H5Dwrite(d, mem_type(dtype), H5S_ALL, H5S_ALL, H5P_DEFAULT, data) < 0)
        st = MF_ERROR(MF_ERR_IO, "%s: cannot write dataset '%s'", w->path, name);
    if (d >= 0) H5Dclose(d);
    H5Pclose(dcpl);
    H5Sclose(space);
    return st;
}

static mf_status write_attr(mf_h5_writer *w, const char *obj, const char *attr, hid_t type,
                            const void *value)
{
    if (H5Aexists_by_name(w->file, obj, attr, H5P_DEFAULT) > 0)
        H5Adelete_by_name(w->file, obj, attr, H5P_DEFAULT);
    hid_t space = H5Screate(H5S_SCALAR);
    hid_t a =
        H5Acreate_by_name(w->file, obj, attr, type, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    mf_status st = MF_OK;
    if (a < 0 || H5Awrite(a, type, value) < 0)
        st =
            MF_ERROR(MF_ERR_BACKEND, "%s: cannot write attribute '%s' of '%s'", w->path, attr, obj);
    if (a >= 0) H5Aclose(a);
    H5Sclose(space);
    return st;
}

mf_status mf_h5_write_attr_string(mf_h5_writer *w, const char *obj, const char *attr,
                                  const char *value)
{
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, H5T_VARIABLE);
    H5Tset_cset(t, H5T_CSET_UTF8);
    mf_status st = write_attr(w, obj, attr, t, &value);
    H5Tclose(t);
    return st;
}

mf_status mf_h5_write_attr_double(mf_h5_writer *w, const char *obj, const char *attr, double value)
{
    return write_attr(w, obj, attr, H5T_NATIVE_DOUBLE, &value);
}

mf_status mf_h5_write_attr_int(mf_h5_writer *w, const char *obj, const char *attr, long long value)
{
    return write_attr(w, obj, attr, H5T_NATIVE_LLONG, &value);
}

static mf_status fsync_path(const char *path, int flags)
{
    int fd = open(path, flags);
    if (fd < 0) return MF_ERROR(MF_ERR_IO, "%s: cannot open for fsync", path);
    int rc = fsync(fd);
    close(fd);
    if (rc != 0) return MF_ERROR(MF_ERR_IO, "%s: fsync failed", path);
    return MF_OK;
}

mf_status mf_h5_writer_commit(mf_h5_writer *w)
{
    mf_status st = MF_OK;
    if (H5Fflush(w->file, H5F_SCOPE_GLOBAL) < 0 || H5Fclose(w->file) < 0) {
        w->file = H5I_INVALID_HID;
        st = MF_ERROR(MF_ERR_IO, "%s: cannot flush the HDF5 file", w->tmp_path);
        mf_h5_writer_abort(w);
        return st;
    }
    w->file = H5I_INVALID_HID;
    st = fsync_path(w->tmp_path, O_RDONLY);
    if (st == MF_OK && rename(w->tmp_path, w->path) != 0)
        st = MF_ERROR(MF_ERR_IO, "cannot rename %s to %s", w->tmp_path, w->path);
    if (st != MF_OK) {
        mf_h5_writer_abort(w);
        return st;
    }
    char *dir = strdup(w->path);
    if (dir) {
        fsync_path(dirname(dir), O_RDONLY | O_DIRECTORY); /* best effort: some FS refuse */
        free(dir);
    }
    free(w->path);
    free(w->tmp_path);
    w->path = w->tmp_path = NULL;
    return MF_OK;
}

void mf_h5_writer_abort(mf_h5_writer *w)
{
    if (w->file >= 0) H5Fclose(w->file);
    w->file = H5I_INVALID_HID;
    if (w->tmp_path) unlink(w->tmp_path);
    free(w->path);
    free(w->tmp_path);
    w->path = w->tmp_path = NULL;
}

char *mf_h5_escape_name(const char *af2_name, char *buf, size_t cap)
{
    size_t i = 0;
    for (; af2_name[i] && i + 1 < cap; i++) buf[i] = af2_name[i] == '/' ? '|' : af2_name[i];
    buf[i] = '\0';
    return buf;
}

char *mf_h5_unescape_name(const char *h5_name, char *buf, size_t cap)
{
    size_t i = 0;
    for (; h5_name[i] && i + 1 < cap; i++) buf[i] = h5_name[i] == '|' ? '/' : h5_name[i];
    buf[i] = '\0';
    return buf;
}
