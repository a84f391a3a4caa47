#include "model/param_store.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/npz.h"

#define ARENA_LABEL "params"

/* ------------------------------------------------------------------------------------------ */
/* Store and name index                                                                       */
/* ------------------------------------------------------------------------------------------ */

static uint64_t name_hash(const char *s)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

void mf_param_store_init(mf_param_store *s)
{
    memset(s, 0, sizeof *s);
}

void mf_param_store_free(mf_param_store *s)
{
    if (!s) return;
    for (int i = 0; i < s->count; i++) {
        if (s->entries[i].owned) free(s->entries[i].tensor.data);
        free(s->entries[i].name);
    }
    free(s->entries);
    free(s->index);
    memset(s, 0, sizeof *s);
}

static int index_lookup(const mf_param_store *s, const char *name)
{
    if (!s->index_cap) return -1;
    size_t mask = (size_t)s->index_cap - 1;
    for (size_t k = (size_t)name_hash(name) & mask;; k = (k + 1) & mask) {
        int e = s->index[k];
        if (e < 0) return -1;
        if (!strcmp(s->entries[e].name, name)) return e;
    }
}

static void index_insert(mf_param_store *s, int e)
{
    size_t mask = (size_t)s->index_cap - 1;
    size_t k = (size_t)name_hash(s->entries[e].name) & mask;
    while (s->index[k] >= 0) k = (k + 1) & mask;
    s->index[k] = e;
}

/* Keeps the table at most half full. */
static mf_status index_reserve(mf_param_store *s, int n)
{
    if (s->index_cap >= 2 * n && s->index_cap > 0) return MF_OK;
    int cap = 16;
    while (cap < 2 * n) cap *= 2;
    int *idx = malloc(sizeof *idx * (size_t)cap);
    if (!idx) return MF_ERROR(MF_ERR_NOMEM, "parameter store: no memory for the name index");
    for (int i = 0; i < cap; i++) idx[i] = -1;
    free(s->index);
    s->index = idx;
    s->index_cap = cap;
    for (int e = 0; e < s->count; e++) index_insert(s, e);
    return MF_OK;
}

/* Appends an entry that takes `data` (owned or not). On failure nothing is kept and owned data
 * is freed. */
static mf_status add_entry(mf_param_store *s, const char *name, int ndim, const int64_t *shape,
                           void *data, bool owned)
{
    mf_status st = MF_OK;
    if (ndim < 0 || ndim > MF_MAX_DIMS) {
        st = MF_ERROR(MF_ERR_UNSUPPORTED, "parameter '%s' has %d dims (at most %d supported)", name,
                      ndim, MF_MAX_DIMS);
        goto fail;
    }
    if (index_lookup(s, name) >= 0) {
        st = MF_ERROR(MF_ERR_INVALID, "parameter '%s' appears twice", name);
        goto fail;
    }
    if (s->count == s->cap) {
        int cap = s->cap ? 2 * s->cap : 64;
        mf_param_entry *e = realloc(s->entries, sizeof *e * (size_t)cap);
        if (!e) {
            st = MF_ERROR(MF_ERR_NOMEM, "parameter store: no memory for %d entries", cap);
            goto fail;
        }
        s->entries = e;
        s->cap = cap;
    }
    st = index_reserve(s, s->count + 1);
    if (st != MF_OK) goto fail;
    char *nm = strdup(name);
    if (!nm) {
        st = MF_ERROR(MF_ERR_NOMEM, "parameter store: no memory for a name");
        goto fail;
    }
    mf_param_entry *e = &s->entries[s->count];
    e->name = nm;
    e->tensor = mf_tensor_make(data, MF_F32, MF_DEV_CPU, ndim, shape);
    e->owned = owned;
    index_insert(s, s->count++);
    return MF_OK;
fail:
    if (owned) free(data);
    return st;
}

mf_status mf_param_store_mirror(const mf_param_store *src, mf_arena *arena, mf_param_store *dst)
{
    MF_REQUIRE(src && arena && dst && dst->count == 0,
               "parameter mirror: arguments (the destination must be empty)");
    for (int i = 0; i < src->count; i++) {
        const mf_param_entry *e = &src->entries[i];
        mf_tensor t;
        mf_status st = mf_arena_copy(arena, &t, &e->tensor, "params");
        if (st != MF_OK) return mf_error_context(st, "parameter mirror: %s", e->name);
        MF_TRY(add_entry(dst, e->name, t.ndim, t.shape, t.data, false));
        dst->entries[dst->count - 1].tensor.device = arena->device;
    }
    return MF_OK;
}

mf_status mf_param_store_copy_values(mf_param_store *dst, const mf_param_store *src)
{
    MF_REQUIRE(dst && src && dst->count == src->count,
               "parameter copy: %d parameters into a store of %d", src ? src->count : 0,
               dst ? dst->count : 0);
    for (int i = 0; i < src->count; i++) {
        MF_REQUIRE(!strcmp(dst->entries[i].name, src->entries[i].name),
                   "parameter copy: parameter %d is '%s' here, '%s' in the source", i,
                   dst->entries[i].name, src->entries[i].name);
        MF_TRY(mf_tensor_transfer(&dst->entries[i].tensor, &src->entries[i].tensor,
                                  src->entries[i].name));
    }
    return MF_OK;
}

mf_status mf_param_store_add(mf_param_store *s, const char *name, const mf_tensor *t, bool copy)
{
    MF_REQUIRE(t->dtype == MF_F32 && t->device == MF_DEV_CPU,
               "parameter '%s': the store holds host f32 tensors", name);
    MF_REQUIRE(t->data || mf_tensor_numel(t) == 0, "parameter '%s' has no data", name);
    void *data = t->data;
    if (copy) {
        size_t bytes = mf_tensor_bytes(t);
        data = malloc(bytes ? bytes : 1);
        if (!data)
            return MF_ERROR(MF_ERR_NOMEM, "parameter '%s': no memory (%zu bytes)", name, bytes);
        if (bytes) memcpy(data, t->data, bytes);
    }
    return add_entry(s, name, t->ndim, t->shape, data, copy);
}

/* Takes an array read from a file: float32 only, into the arena (copy, then the file buffer is
 * released) or kept as it is. a->data is consumed in every case. */
static mf_status adopt_array(mf_param_store *s, const char *file, const char *name, mf_h5_array *a,
                             mf_arena *arena)
{
    if (a->dtype != MF_F32) {
        mf_status st = MF_ERROR(MF_ERR_FORMAT,
                                "%s: parameter '%s' has element type %s; parameters are float32",
                                file, name, mf_dtype_name(a->dtype));
        mf_h5_array_free(a);
        return st;
    }
    if (a->ndim > MF_MAX_DIMS) {
        mf_status st = MF_ERROR(MF_ERR_UNSUPPORTED, "%s: parameter '%s' has %d dims (at most %d)",
                                file, name, a->ndim, MF_MAX_DIMS);
        mf_h5_array_free(a);
        return st;
    }
    void *data = a->data;
    a->data = NULL;
    bool owned = true;
    if (arena) {
        size_t bytes = (size_t)mf_h5_array_numel(a) * sizeof(float);
        void *p = NULL;
        mf_status st = mf_arena_alloc(arena, bytes ? bytes : 1, ARENA_LABEL, &p);
        if (st != MF_OK) {
            free(data);
            return mf_error_context(st, "%s: parameter '%s'", file, name);
        }
        if (bytes) memcpy(p, data, bytes);
        free(data);
        data = p;
        owned = false;
    }
    return add_entry(s, name, a->ndim, a->shape, data, owned);
}

static mf_status check_load_args(const mf_param_store *s, mf_arena *arena, const char *what)
{
    MF_REQUIRE(s->count == 0, "%s: the parameter store is not empty (%d entries)", what, s->count);
    MF_REQUIRE(!arena || arena->device == MF_DEV_CPU,
               "%s: parameters are loaded into host memory; arena '%s' is not a CPU arena", what,
               arena ? arena->name : "");
    return MF_OK;
}

/* On a failed load: nothing kept, the arena back where it was. */
static void undo_load(mf_param_store *s, mf_arena *arena, mf_arena_mark_t mark)
{
    mf_param_store_free(s);
    if (arena) mf_arena_release(arena, mark);
}

/* ------------------------------------------------------------------------------------------ */
/* Multimer names                                                                             */
/* ------------------------------------------------------------------------------------------ */

bool mf_param_name_is_multimer(const char *name)
{
    /* AlphaFold-Multimer's relative chain encoding, its template embedding (per-feature linears,
     * query-pair norm, per-iteration stack) and the fused triangle-multiplication projections of
     * the v3 weights. */
    static const char *const k_markers[] = {
        "multimer",
        "~_relative_encoding",
        "template_embedding_iteration",
        "template_pair_embedding_",
        "query_embedding_norm",
        "/left_norm_input//",
        "/center_norm//",
    };
    for (size_t i = 0; i < sizeof k_markers / sizeof k_markers[0]; i++)
        if (strstr(name, k_markers[i])) return true;
    return false;
}

mf_status mf_param_store_require_monomer(const mf_param_store *s, const char *label)
{
    for (int i = 0; i < s->count; i++)
        if (mf_param_name_is_multimer(s->entries[i].name))
            return MF_ERROR(MF_ERR_UNSUPPORTED,
                            "%s: multimer parameters are not supported yet (parameter '%s' belongs "
                            "to AlphaFold-Multimer)",
                            label, s->entries[i].name);
    return MF_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* .npz                                                                                       */
/* ------------------------------------------------------------------------------------------ */

mf_status mf_param_store_load_npz(mf_param_store *s, const char *path, mf_arena *arena)
{
    MF_TRY(check_load_args(s, arena, path));
    mf_arena_mark_t mark = {0, 0};
    if (arena) mark = mf_arena_mark(arena);
    mf_npz npz;
    MF_TRY(mf_npz_read(path, &npz));
    mf_status st = MF_OK;
    for (int i = 0; i < npz.count && st == MF_OK; i++)
        st = adopt_array(s, path, npz.names[i], &npz.arrays[i], arena);
    mf_npz_free(&npz);
    if (st == MF_OK) st = mf_param_store_require_monomer(s, path);
    if (st != MF_OK) undo_load(s, arena, mark);
    return st;
}

mf_status mf_param_store_save_npz(const mf_param_store *s, const char *path)
{
    mf_npz npz = {s->count, NULL, NULL};
    npz.names = malloc(sizeof *npz.names * (size_t)(s->count ? s->count : 1));
    npz.arrays = calloc((size_t)(s->count ? s->count : 1), sizeof *npz.arrays);
    if (!npz.names || !npz.arrays) {
        free(npz.names);
        free(npz.arrays);
        return MF_ERROR(MF_ERR_NOMEM, "%s: no memory", path);
    }
    for (int i = 0; i < s->count; i++) {
        const mf_tensor *t = &s->entries[i].tensor;
        npz.names[i] = s->entries[i].name; /* borrowed: not freed below */
        npz.arrays[i].dtype = MF_F32;
        npz.arrays[i].ndim = t->ndim;
        for (int k = 0; k < t->ndim; k++) npz.arrays[i].shape[k] = t->shape[k];
        npz.arrays[i].data = t->data;
    }
    mf_status st = mf_npz_write(path, &npz);
    free(npz.names);
    free(npz.arrays);
    return st;
}

/* ------------------------------------------------------------------------------------------ */
/* HDF5                                                                                       */
/* ------------------------------------------------------------------------------------------ */

/* "scope//name" -> "scope/name" (dataset `name` in group `scope`), checking that the mapping
 * can be inverted: one "//", a non-empty scope of non-empty components, a name without '/'. */
static mf_status h5_path_of(const char *name, const char *prefix, char *buf, size_t cap)
{
    const char *sep = strstr(name, "//");
    if (!sep || sep == name || sep[2] == '\0' || strchr(sep + 2, '/'))
        return MF_ERROR(MF_ERR_INVALID,
                        "parameter name '%s' is not of the form scope//name (a non-empty scope, "
                        "then a name without '/')",
                        name);
    for (const char *c = name; c < sep; c++) {
        bool start = c == name || c[-1] == '/';
        if (start && (*c == '/' || (*c == '.' && (c + 1 == sep || c[1] == '/'))))
            return MF_ERROR(MF_ERR_INVALID, "parameter name '%s': empty or '.' scope component",
                            name);
    }
    int n = snprintf(buf, cap, "%s%.*s/%s", prefix, (int)(sep - name), name, sep + 2);
    if (n < 0 || (size_t)n >= cap)
        return MF_ERROR(MF_ERR_INVALID, "parameter name too long: %.100s...", name);
    return MF_OK;
}

/* "/" -> "", "/params" or "params/" -> "params/". */
static void group_prefix(const char *group, char *buf, size_t cap)
{
    while (*group == '/') group++;
    size_t n = strlen(group);
    while (n && group[n - 1] == '/') n--;
    snprintf(buf, cap, n ? "%.*s/" : "%.*s", (int)n, group);
}

mf_status mf_param_store_write_h5_group(const mf_param_store *s, mf_h5_writer *w, const char *group)
{
    char prefix[512], path[2048];
    group_prefix(group, prefix, sizeof prefix);
    for (int i = 0; i < s->count; i++) {
        const mf_param_entry *e = &s->entries[i];
        MF_TRY(h5_path_of(e->name, prefix, path, sizeof path));
        mf_status st =
            mf_h5_write_array(w, path, MF_F32, e->tensor.ndim, e->tensor.shape, e->tensor.data);
        if (st == MF_OK) st = mf_h5_write_attr_int(w, path, "param_index", i);
        if (st != MF_OK) return mf_error_context(st, "parameter '%s'", e->name);
    }
    return MF_OK;
}

mf_status mf_param_store_save_h5(const mf_param_store *s, const char *path)
{
    mf_h5_writer w;
    MF_TRY(mf_h5_writer_open(&w, path));
    mf_status st = mf_h5_write_attr_string(&w, "/", "format", MF_PARAMS_FORMAT);
    if (st == MF_OK) st = mf_h5_write_attr_int(&w, "/", "schema_version", MF_PARAMS_SCHEMA_VERSION);
    if (st == MF_OK) st = mf_param_store_write_h5_group(s, &w, "/");
    if (st == MF_OK) return mf_h5_writer_commit(&w);
    mf_h5_writer_abort(&w);
    return st;
}

typedef struct {
    char **paths;
    int count, cap;
    mf_status st;
} dataset_list;

static herr_t collect_dataset(hid_t g, const char *name, const H5L_info_t *info, void *ud)
{
    dataset_list *l = ud;
    if (info->type != H5L_TYPE_HARD) {
        l->st = MF_ERROR(MF_ERR_FORMAT, "'%s' is a soft or external link, not a parameter", name);
        return -1;
    }
    hid_t o = H5Oopen(g, name, H5P_DEFAULT);
    if (o < 0) {
        l->st = MF_ERROR(MF_ERR_FORMAT, "object '%s' cannot be opened", name);
        return -1;
    }
    H5I_type_t t = H5Iget_type(o);
    H5Oclose(o);
    if (t == H5I_GROUP) return 0;
    if (t != H5I_DATASET) {
        l->st = MF_ERROR(MF_ERR_FORMAT, "'%s' is neither a group nor a dataset", name);
        return -1;
    }
    if (l->count == l->cap) {
        int cap = l->cap ? 2 * l->cap : 64;
        char **p = realloc(l->paths, sizeof *p * (size_t)cap);
        if (!p) {
            l->st = MF_ERROR(MF_ERR_NOMEM, "no memory for dataset names");
            return -1;
        }
        l->paths = p;
        l->cap = cap;
    }
    l->paths[l->count] = strdup(name);
    if (!l->paths[l->count]) {
        l->st = MF_ERROR(MF_ERR_NOMEM, "no memory for dataset names");
        return -1;
    }
    l->count++;
    return 0;
}

/* Float32 on file: anything else would be converted by HDF5, silently and lossily. */
static mf_status check_f32_dataset(hid_t g, const char *label, const char *path)
{
    hid_t d = H5Dopen2(g, path, H5P_DEFAULT);
    if (d < 0) return MF_ERROR(MF_ERR_FORMAT, "%s: dataset '%s' cannot be opened", label, path);
    hid_t t = H5Dget_type(d);
    bool ok = t >= 0 && H5Tget_class(t) == H5T_FLOAT && H5Tget_size(t) == 4;
    size_t size = t >= 0 ? H5Tget_size(t) : 0;
    H5T_class_t cls = t >= 0 ? H5Tget_class(t) : H5T_NO_CLASS;
    if (t >= 0) H5Tclose(t);
    H5Dclose(d);
    if (!ok)
        return MF_ERROR(MF_ERR_FORMAT,
                        "%s: parameter dataset '%s' holds %zu-byte %s elements; parameters are "
                        "float32",
                        label, path, size, cls == H5T_FLOAT ? "float" : "non-float");
    return MF_OK;
}

static mf_status read_h5_group(mf_param_store *s, hid_t file, const char *label, const char *group,
                               mf_arena *arena, dataset_list *l, int **order)
{
    char gname[512];
    group_prefix(group, gname, sizeof gname);
    if (gname[0] && !mf_h5_exists(file, gname))
        return MF_ERROR(MF_ERR_FORMAT, "%s: group '/%s' not found", label, gname);
    hid_t g = H5Gopen2(file, gname[0] ? gname : "/", H5P_DEFAULT);
    if (g < 0) return MF_ERROR(MF_ERR_FORMAT, "%s: '/%s' is not a group", label, gname);
    mf_status st = MF_OK;
    if (H5Lvisit(g, H5_INDEX_NAME, H5_ITER_INC, collect_dataset, l) < 0) {
        st = l->st != MF_OK ? mf_error_context(l->st, "%s", label)
                            : MF_ERROR(MF_ERR_FORMAT, "%s: cannot list group '/%s'", label, gname);
        goto cleanup;
    }
    /* Order: by the param_index attributes when every dataset has one, else by name. */
    *order = malloc(sizeof **order * (size_t)(l->count ? l->count : 1));
    if (!*order) {
        st = MF_ERROR(MF_ERR_NOMEM, "%s: no memory", label);
        goto cleanup;
    }
    int with_index = 0;
    for (int i = 0; i < l->count; i++) (*order)[i] = -1;
    for (int i = 0; i < l->count; i++) {
        if (H5Aexists_by_name(g, l->paths[i], "param_index", H5P_DEFAULT) <= 0) continue;
        double v;
        MF_TRY_GOTO(mf_h5_read_attr_double(g, l->paths[i], "param_index", &v));
        int k = (int)v;
        if ((double)k != v || k < 0 || k >= l->count || (*order)[k] >= 0) {
            st = MF_ERROR(MF_ERR_FORMAT,
                          "%s: dataset '%s': param_index %g is out of range or repeated", label,
                          l->paths[i], v);
            goto cleanup;
        }
        (*order)[k] = i;
        with_index++;
    }
    if (with_index != 0 && with_index != l->count) {
        st = MF_ERROR(MF_ERR_FORMAT, "%s: %d of %d parameter datasets lack param_index", label,
                      l->count - with_index, l->count);
        goto cleanup;
    }
    if (with_index == 0)
        for (int i = 0; i < l->count; i++) (*order)[i] = i;
    for (int j = 0; j < l->count; j++) {
        const char *p = l->paths[(*order)[j]];
        const char *slash = strrchr(p, '/');
        if (!slash) {
            st = MF_ERROR(MF_ERR_FORMAT,
                          "%s: dataset '%s' directly in group '/%s' is not a parameter (no scope)",
                          label, p, gname);
            goto cleanup;
        }
        char name[2048];
        snprintf(name, sizeof name, "%.*s//%s", (int)(slash - p), p, slash + 1);
        MF_TRY_GOTO(check_f32_dataset(g, label, p));
        mf_h5_array a;
        MF_TRY_GOTO(mf_h5_read_array(g, label, p, MF_F32, &a));
        MF_TRY_GOTO(adopt_array(s, label, name, &a, arena));
    }
cleanup:
    H5Gclose(g);
    return st;
}

mf_status mf_param_store_read_h5_group(mf_param_store *s, hid_t file, const char *file_label,
                                       const char *group, mf_arena *arena)
{
    MF_TRY(check_load_args(s, arena, file_label));
    mf_arena_mark_t mark = {0, 0};
    if (arena) mark = mf_arena_mark(arena);
    dataset_list l = {NULL, 0, 0, MF_OK};
    int *order = NULL;
    mf_status st = read_h5_group(s, file, file_label, group, arena, &l, &order);
    mf_h5_free_names(l.paths, l.count);
    free(order);
    if (st == MF_OK) st = mf_param_store_require_monomer(s, file_label);
    if (st != MF_OK) undo_load(s, arena, mark);
    return st;
}

mf_status mf_param_store_load_h5(mf_param_store *s, const char *path, mf_arena *arena)
{
    MF_TRY(check_load_args(s, arena, path));
    hid_t f;
    MF_TRY(mf_h5_open_read(path, &f));
    char *format = NULL;
    double version = 0;
    mf_status st = mf_h5_read_attr_string(f, "/", "format", &format);
    if (st != MF_OK || strcmp(format, MF_PARAMS_FORMAT) != 0) {
        st = MF_ERROR(MF_ERR_FORMAT,
                      "%s: not a memfold parameter file (root attribute format is %s%s%s, expected "
                      "'%s')",
                      path, format ? "'" : "", format ? format : "missing", format ? "'" : "",
                      MF_PARAMS_FORMAT);
    } else if (mf_h5_read_attr_double(f, "/", "schema_version", &version) != MF_OK) {
        st = mf_error_context(MF_ERR_FORMAT, "%s", path);
    } else if (version > MF_PARAMS_SCHEMA_VERSION || version < 1) {
        st = MF_ERROR(MF_ERR_UNSUPPORTED,
                      "%s: parameter schema_version %g is not supported (this build reads %d)",
                      path, version, MF_PARAMS_SCHEMA_VERSION);
    } else {
        st = mf_param_store_read_h5_group(s, f, path, "/", arena);
    }
    free(format);
    H5Fclose(f);
    return st;
}

mf_status mf_param_store_load(mf_param_store *s, const char *path, mf_arena *arena)
{
    FILE *f = fopen(path, "rb");
    if (!f) return MF_ERROR(MF_ERR_IO, "%s: cannot open", path);
    unsigned char magic[8] = {0};
    size_t n = fread(magic, 1, sizeof magic, f);
    fclose(f);
    static const unsigned char k_h5[8] = {0x89, 'H', 'D', 'F', '\r', '\n', 0x1a, '\n'};
    if (n >= 4 && magic[0] == 'P' && magic[1] == 'K')
        return mf_param_store_load_npz(s, path, arena);
    if (n == 8 && !memcmp(magic, k_h5, 8)) return mf_param_store_load_h5(s, path, arena);
    /* HDF5 allows a user block before the signature: let the library decide. */
    mf_h5_quiet();
    if (H5Fis_hdf5(path) > 0) return mf_param_store_load_h5(s, path, arena);
    return MF_ERROR(MF_ERR_FORMAT,
                    "%s: neither a .npz archive nor an HDF5 file (unknown parameter file format)",
                    path);
}

/* ------------------------------------------------------------------------------------------ */
/* Lookups                                                                                    */
/* ------------------------------------------------------------------------------------------ */

const mf_tensor *mf_param_store_find(const mf_param_store *s, const char *name)
{
    int e = index_lookup(s, name);
    return e < 0 ? NULL : &s->entries[e].tensor;
}

static void describe_shape(int ndim, const int64_t *shape, char *buf, size_t cap)
{
    size_t n = (size_t)snprintf(buf, cap, "[");
    for (int i = 0; i < ndim && n < cap; i++)
        n += (size_t)snprintf(buf + n, cap - n, i ? ", %lld" : "%lld", (long long)shape[i]);
    if (n < cap) snprintf(buf + n, cap - n, "]");
}

static bool same_shape(int na, const int64_t *a, int nb, const int64_t *b)
{
    if (na != nb) return false;
    for (int i = 0; i < na; i++)
        if (a[i] != b[i]) return false;
    return true;
}

mf_status mf_param_store_get(const mf_param_store *s, const char *name, int ndim,
                             const int64_t *shape, mf_tensor *out)
{
    const mf_tensor *t = mf_param_store_find(s, name);
    if (!t) return MF_ERROR(MF_ERR_FORMAT, "parameter '%s' is missing", name);
    if (ndim >= 0 && !same_shape(t->ndim, t->shape, ndim, shape)) {
        char got[128], want[128];
        describe_shape(t->ndim, t->shape, got, sizeof got);
        describe_shape(ndim, shape, want, sizeof want);
        return MF_ERROR(MF_ERR_FORMAT, "parameter '%s' has shape %s, expected %s", name, got, want);
    }
    *out = *t;
    return MF_OK;
}

mf_status mf_param_store_block(const mf_param_store *s, const char *name, int64_t block,
                               mf_tensor *out)
{
    const mf_tensor *t = mf_param_store_find(s, name);
    if (!t) return MF_ERROR(MF_ERR_FORMAT, "parameter '%s' is missing", name);
    if (t->ndim < 1 || block < 0 || block >= t->shape[0])
        return MF_ERROR(MF_ERR_INVALID,
                        "parameter '%s': block %lld requested of a stack of %lld (%d dims)", name,
                        (long long)block, (long long)(t->ndim ? t->shape[0] : 0), t->ndim);
    mf_tensor row = mf_tensor_slice0(t, block, 1);
    *out = row;
    out->ndim = t->ndim - 1;
    for (int i = 0; i + 1 < MF_MAX_DIMS; i++)
        out->shape[i] = i + 1 < t->ndim ? row.shape[i + 1] : 0;
    out->shape[MF_MAX_DIMS - 1] = 0;
    return MF_OK;
}

mf_status mf_param_store_bind(const mf_param_store *s, const char *scope,
                              const mf_param_spec *specs, int n, int64_t block, mf_tensor *params)
{
    for (int i = 0; i < n; i++) {
        char name[1024];
        int len = snprintf(name, sizeof name, "%s/%s", scope, specs[i].name);
        MF_REQUIRE(len > 0 && (size_t)len < sizeof name, "parameter name too long under '%s'",
                   scope);
        if (block < 0) {
            MF_TRY(mf_param_store_get(s, name, specs[i].ndim, specs[i].shape, &params[i]));
            continue;
        }
        mf_tensor t;
        MF_TRY(mf_param_store_block(s, name, block, &t));
        if (!same_shape(t.ndim, t.shape, specs[i].ndim, specs[i].shape)) {
            char got[128], want[128];
            describe_shape(t.ndim, t.shape, got, sizeof got);
            describe_shape(specs[i].ndim, specs[i].shape, want, sizeof want);
            return MF_ERROR(MF_ERR_FORMAT, "parameter '%s': a block has shape %s, expected %s",
                            name, got, want);
        }
        params[i] = t;
    }
    return MF_OK;
}

int64_t mf_param_store_numel(const mf_param_store *s)
{
    int64_t n = 0;
    for (int i = 0; i < s->count; i++) n += mf_tensor_numel(&s->entries[i].tensor);
    return n;
}

/* ------------------------------------------------------------------------------------------ */
/* Expected names and the check                                                               */
/* ------------------------------------------------------------------------------------------ */

void mf_param_expect_list_init(mf_param_expect_list *l)
{
    memset(l, 0, sizeof *l);
}

void mf_param_expect_list_free(mf_param_expect_list *l)
{
    if (!l) return;
    for (int i = 0; i < l->count; i++) free(l->items[i].name);
    free(l->items);
    memset(l, 0, sizeof *l);
}

mf_status mf_param_expect_add(mf_param_expect_list *l, const char *name, int ndim,
                              const int64_t *shape)
{
    MF_REQUIRE(ndim >= 0 && ndim <= MF_MAX_DIMS, "expected parameter '%s': %d dims", name, ndim);
    if (l->count == l->cap) {
        int cap = l->cap ? 2 * l->cap : 64;
        mf_param_expect *p = realloc(l->items, sizeof *p * (size_t)cap);
        if (!p) return MF_ERROR(MF_ERR_NOMEM, "no memory for expected parameter names");
        l->items = p;
        l->cap = cap;
    }
    mf_param_expect *e = &l->items[l->count];
    memset(e, 0, sizeof *e);
    e->name = strdup(name);
    if (!e->name) return MF_ERROR(MF_ERR_NOMEM, "no memory for expected parameter names");
    e->ndim = ndim;
    for (int i = 0; i < ndim; i++) e->shape[i] = shape[i];
    l->count++;
    return MF_OK;
}

mf_status mf_param_expect_add_specs(mf_param_expect_list *l, const char *scope,
                                    const mf_param_spec *specs, int n, int64_t num_blocks)
{
    for (int i = 0; i < n; i++) {
        char name[1024];
        int len = snprintf(name, sizeof name, "%s/%s", scope, specs[i].name);
        MF_REQUIRE(len > 0 && (size_t)len < sizeof name, "parameter name too long under '%s'",
                   scope);
        int64_t shape[MF_MAX_DIMS] = {0};
        int ndim = specs[i].ndim;
        if (num_blocks > 0) {
            MF_REQUIRE(ndim < MF_MAX_DIMS, "'%s': no room for the block axis", name);
            shape[0] = num_blocks;
            for (int k = 0; k < ndim; k++) shape[k + 1] = specs[i].shape[k];
            ndim++;
        } else {
            for (int k = 0; k < ndim; k++) shape[k] = specs[i].shape[k];
        }
        MF_TRY(mf_param_expect_add(l, name, ndim, shape));
    }
    return MF_OK;
}

/* A growing text buffer. */
typedef struct {
    char *s;
    size_t n, cap;
    bool failed;
} text_buf;

static void tb_printf(text_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void tb_printf(text_buf *b, const char *fmt, ...)
{
    if (b->failed) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int k = vsnprintf(b->s ? b->s + b->n : NULL, b->s ? b->cap - b->n : 0, fmt, ap);
        va_end(ap);
        if (k < 0) {
            b->failed = true;
            return;
        }
        if (b->s && b->n + (size_t)k < b->cap) {
            b->n += (size_t)k;
            return;
        }
        size_t cap = b->cap ? b->cap : 1024;
        while (cap <= b->n + (size_t)k) cap *= 2;
        char *p = realloc(b->s, cap);
        if (!p) {
            b->failed = true;
            return;
        }
        b->s = p;
        b->cap = cap;
    }
}

static const char *short_name(const char *name)
{
    size_t n = strlen(MF_AF2_ROOT);
    return strncmp(name, MF_AF2_ROOT, n) ? name : name + n;
}

#define CHECK_LIST_MAX 20

mf_status mf_param_store_check(const mf_param_store *s, const mf_param_expect_list *expected,
                               char **report)
{
    if (report) *report = NULL;
    /* Index of the expected names, to find the store's unexpected ones. */
    int cap = 16;
    while (cap < 2 * expected->count) cap *= 2;
    int *idx = malloc(sizeof *idx * (size_t)cap);
    if (!idx) return MF_ERROR(MF_ERR_NOMEM, "parameter check: no memory");
    for (int i = 0; i < cap; i++) idx[i] = -1;
    size_t mask = (size_t)cap - 1;
    for (int i = 0; i < expected->count; i++) {
        size_t k = (size_t)name_hash(expected->items[i].name) & mask;
        while (idx[k] >= 0) k = (k + 1) & mask;
        idx[k] = i;
    }

    /* kinds: 0 missing, 1 unexpected, 2 wrong shape */
    int counts[3] = {0, 0, 0};
    const char *first[3][CHECK_LIST_MAX];
    const mf_param_expect *first_exp[CHECK_LIST_MAX];
    const mf_tensor *first_got[CHECK_LIST_MAX];
    for (int i = 0; i < expected->count; i++) {
        const mf_param_expect *e = &expected->items[i];
        const mf_tensor *t = mf_param_store_find(s, e->name);
        int kind = !t ? 0 : !same_shape(t->ndim, t->shape, e->ndim, e->shape) ? 2 : -1;
        if (kind < 0) continue;
        if (counts[kind] < CHECK_LIST_MAX) {
            first[kind][counts[kind]] = e->name;
            if (kind == 2) {
                first_exp[counts[kind]] = e;
                first_got[counts[kind]] = t;
            }
        }
        counts[kind]++;
    }
    for (int i = 0; i < s->count; i++) {
        const char *nm = s->entries[i].name;
        bool found = false;
        for (size_t k = (size_t)name_hash(nm) & mask; idx[k] >= 0; k = (k + 1) & mask)
            if (!strcmp(expected->items[idx[k]].name, nm)) {
                found = true;
                break;
            }
        if (found) continue;
        if (counts[1] < CHECK_LIST_MAX) first[1][counts[1]] = nm;
        counts[1]++;
    }
    free(idx);
    if (!counts[0] && !counts[1] && !counts[2]) return MF_OK;

    static const char *const kind_name[3] = {"missing", "unexpected", "wrongly shaped"};
    text_buf full = {0}, brief = {0};
    tb_printf(&brief,
              "parameters do not match the model: %d missing, %d unexpected, %d wrongly "
              "shaped",
              counts[0], counts[1], counts[2]);
    tb_printf(&full, "%d missing, %d unexpected, %d wrongly shaped (of %d expected, %d present)\n",
              counts[0], counts[1], counts[2], expected->count, s->count);
    for (int kind = 0; kind < 3; kind++) {
        if (!counts[kind]) continue;
        int shown = counts[kind] < CHECK_LIST_MAX ? counts[kind] : CHECK_LIST_MAX;
        tb_printf(&brief, "; %s:", kind_name[kind]);
        tb_printf(&full, "%s (first %d of %d):\n", kind_name[kind], shown, counts[kind]);
        for (int j = 0; j < shown; j++) {
            tb_printf(&brief, " %s", short_name(first[kind][j]));
            if (kind == 2) {
                char got[128], want[128];
                describe_shape(first_got[j]->ndim, first_got[j]->shape, got, sizeof got);
                describe_shape(first_exp[j]->ndim, first_exp[j]->shape, want, sizeof want);
                tb_printf(&brief, " %s (expected %s)", got, want);
                tb_printf(&full, "  %s: %s, expected %s\n", first[kind][j], got, want);
            } else {
                tb_printf(&full, "  %s\n", first[kind][j]);
            }
        }
        if (counts[kind] > shown) tb_printf(&brief, " ...");
    }
    mf_status st;
    if (brief.failed || full.failed || !brief.s || !full.s)
        st = MF_ERROR(MF_ERR_NOMEM, "parameter check: no memory for the report");
    else
        st = MF_ERROR(MF_ERR_FORMAT, "%s", brief.s);
    free(brief.s);
    if (report && st == MF_ERR_FORMAT)
        *report = full.s;
    else
        free(full.s);
    return st;
}

/* ------------------------------------------------------------------------------------------ */
/* Configuration from shapes                                                                  */
/* ------------------------------------------------------------------------------------------ */

#define EVO  MF_AF2_ROOT "evoformer/"
#define TMPL EVO "template_embedding/"
#define SM   MF_AF2_ROOT "structure_module/fold_iteration/"

/* Shape of a parameter that must exist with ndim dims. */
static mf_status need(const mf_param_store *s, const char *name, int ndim, const int64_t **shape)
{
    const mf_tensor *t = mf_param_store_find(s, name);
    if (!t)
        return MF_ERROR(MF_ERR_FORMAT,
                        "parameter '%s' is missing: the configuration cannot be "
                        "read from the parameters",
                        name);
    if (t->ndim != ndim) {
        char got[128];
        describe_shape(t->ndim, t->shape, got, sizeof got);
        return MF_ERROR(MF_ERR_FORMAT, "parameter '%s' has shape %s, expected %d dims", name, got,
                        ndim);
    }
    *shape = t->shape;
    return MF_OK;
}

static bool has(const mf_param_store *s, const char *name)
{
    return mf_param_store_find(s, name) != NULL;
}

/* Two parameters must agree on a size. */
static mf_status agree(const char *what, const char *a, int64_t va, const char *b, int64_t vb)
{
    if (va == vb) return MF_OK;
    return MF_ERROR(MF_ERR_FORMAT, "inconsistent %s: '%s' says %lld, '%s' says %lld", what, a,
                    (long long)va, b, (long long)vb);
}

/* whole = factor * part, exactly. */
static mf_status ratio(const char *name, int64_t whole, int64_t part, int64_t *factor)
{
    if (part <= 0 || whole % part != 0 || whole / part <= 0)
        return MF_ERROR(MF_ERR_FORMAT, "parameter '%s': size %lld is not a multiple of %lld", name,
                        (long long)whole, (long long)part);
    *factor = whole / part;
    return MF_OK;
}

static void join(char *buf, size_t cap, const char *prefix, const char *rest)
{
    snprintf(buf, cap, "%s%s", prefix, rest);
}

/* Gated attention weights query_w [B?, c_in, H, C] (stacked: leading block axis). */
static mf_status attention_shape(const mf_param_store *s, const char *module, bool stacked,
                                 int64_t c_in, int64_t *blocks, mf_attention_config *a)
{
    char n[512];
    const int64_t *q;
    join(n, sizeof n, module, "/attention//query_w");
    MF_TRY(need(s, n, stacked ? 4 : 3, &q));
    int o = stacked ? 1 : 0;
    if (blocks) *blocks = q[0];
    MF_TRY(agree("input channels", n, q[o], "the stream it reads", c_in));
    a->num_heads = q[o + 1];
    a->c_hidden = q[o + 2];
    return MF_OK;
}

/* The layer-norm + two-linear transitions (Alg. 9, 15): factor = hidden / channels. */
static mf_status transition_factor(const mf_param_store *s, const char *module, int64_t c,
                                   int64_t *factor)
{
    char n[512];
    const int64_t *w;
    join(n, sizeof n, module, "/transition1//weights");
    MF_TRY(need(s, n, 3, &w));
    MF_TRY(agree("transition input channels", n, w[1], "the stream it reads", c));
    return ratio(n, w[2], c, factor);
}

/* Triangle multiplications (Alg. 11, 12) and triangle attentions (Alg. 13, 14): outgoing and
 * incoming, starting and ending node share one configuration entry, so they must agree. */
static mf_status pair_updates(const mf_param_store *s, const char *prefix, int64_t c_z,
                              int64_t blocks, int64_t *tm_hidden, mf_attention_config *ta)
{
    char a[512], b[512];
    const int64_t *wa, *wb;
    join(a, sizeof a, prefix, "triangle_multiplication_outgoing/left_projection//weights");
    join(b, sizeof b, prefix, "triangle_multiplication_incoming/left_projection//weights");
    MF_TRY(need(s, a, 3, &wa));
    MF_TRY(need(s, b, 3, &wb));
    MF_TRY(agree("block count", a, wa[0], "the stack", blocks));
    MF_TRY(agree("pair channels", a, wa[1], "the pair stream", c_z));
    MF_TRY(agree("triangle multiplication channels", a, wa[2], b, wb[2]));
    *tm_hidden = wa[2];

    mf_attention_config end;
    int64_t bs, be;
    join(a, sizeof a, prefix, "triangle_attention_starting_node");
    join(b, sizeof b, prefix, "triangle_attention_ending_node");
    MF_TRY(attention_shape(s, a, true, c_z, &bs, ta));
    MF_TRY(attention_shape(s, b, true, c_z, &be, &end));
    MF_TRY(agree("block count", a, bs, "the stack", blocks));
    MF_TRY(agree("block count", b, be, "the stack", blocks));
    MF_TRY(agree("triangle attention heads", a, ta->num_heads, b, end.num_heads));
    MF_TRY(agree("triangle attention channels per head", a, ta->c_hidden, b, end.c_hidden));
    return MF_OK;
}

/* Evoformer (Alg. 6) or extra-MSA stack (Alg. 18). */
static mf_status stack_shapes(const mf_param_store *s, const char *prefix, const char *column,
                              int64_t c_m, int64_t c_z, mf_evoformer_stack_config *e)
{
    char n[512];
    const int64_t *w;
    int64_t blocks, bc;
    join(n, sizeof n, prefix, "msa_row_attention_with_pair_bias");
    MF_TRY(attention_shape(s, n, true, c_m, &blocks, &e->msa_row_attention));
    join(n, sizeof n, prefix, column);
    MF_TRY(attention_shape(s, n, true, c_m, &bc, &e->msa_column_attention));
    MF_TRY(agree("block count", n, bc, "the row attention", blocks));
    e->num_blocks = blocks;
    join(n, sizeof n, prefix, "msa_transition");
    MF_TRY(transition_factor(s, n, c_m, &e->msa_transition_factor));
    join(n, sizeof n, prefix, "outer_product_mean/left_projection//weights");
    MF_TRY(need(s, n, 3, &w));
    MF_TRY(agree("MSA channels", n, w[1], "the MSA stream", c_m));
    e->outer_product_mean_c_hidden = w[2];
    MF_TRY(pair_updates(s, prefix, c_z, blocks, &e->triangle_multiplication_c_hidden,
                        &e->triangle_attention));
    join(n, sizeof n, prefix, "pair_transition");
    return transition_factor(s, n, c_z, &e->pair_transition_factor);
}

/* Template embedding (Alg. 2 lines 7-13, Alg. 16, 17). */
static mf_status template_shapes(const mf_param_store *s, int64_t c_m, int64_t c_z, mf_config *cfg)
{
    mf_template_config *t = &cfg->template_embedding;
    const char *emb = TMPL "single_template_embedding/embedding2d//weights";
    if (!has(s, emb)) {
        t->enabled = false;
        t->embed_torsion_angles = false;
        return MF_OK;
    }
    const int64_t *w;
    MF_TRY(need(s, emb, 2, &w));
    t->enabled = true;
    t->pair_feat_dim = w[0];
    cfg->channels.c_t = w[1];
    /* The 88 template pair features: distogram bins, then 49 more (pseudo-beta mask, the two
     * 22-way aatype one-hots, the 3-vector and the backbone mask), suppl. Table 1. */
    if (w[0] <= 49)
        return MF_ERROR(MF_ERR_FORMAT,
                        "parameter '%s': %lld input features leave no distogram "
                        "bins (49 are not bins)",
                        emb, (long long)w[0]);
    t->dgram_num_bins = w[0] - 49;

    const char *ps = TMPL "single_template_embedding/template_pair_stack/__layer_stack_no_state/";
    char n[512];
    int64_t blocks;
    mf_attention_config ta;
    join(n, sizeof n, ps, "triangle_attention_starting_node");
    MF_TRY(attention_shape(s, n, true, cfg->channels.c_t, &blocks, &ta));
    t->pair_stack.num_blocks = blocks;
    MF_TRY(pair_updates(s, ps, cfg->channels.c_t, blocks,
                        &t->pair_stack.triangle_multiplication_c_hidden,
                        &t->pair_stack.triangle_attention));
    join(n, sizeof n, ps, "pair_transition");
    MF_TRY(transition_factor(s, n, cfg->channels.c_t, &t->pair_stack.pair_transition_factor));

    /* Pointwise attention: queries from the pair stream, keys from the templates. */
    mf_attention_config pw;
    MF_TRY(attention_shape(s, EVO "template_embedding", false, c_z, NULL, &pw));
    t->pointwise_attention.num_heads = pw.num_heads;
    t->pointwise_attention.c_hidden = pw.c_hidden;
    t->pointwise_attention.gating = has(s, TMPL "attention//gating_w");

    const char *single = EVO "template_single_embedding//weights";
    t->embed_torsion_angles = has(s, single);
    if (t->embed_torsion_angles) {
        MF_TRY(need(s, single, 2, &w));
        MF_TRY(agree("MSA channels", single, w[1], EVO "preprocess_msa//weights", c_m));
        t->angle_feat_dim = w[0];
    }
    return MF_OK;
}

/* Count of name_fmt instances "base", "base_1", "base_2", ... (haiku's names for repeats). */
static int64_t count_repeats(const mf_param_store *s, const char *base, const char *leaf)
{
    int64_t k = 0;
    for (;; k++) {
        char n[512];
        if (k == 0)
            snprintf(n, sizeof n, "%s%s", base, leaf);
        else
            snprintf(n, sizeof n, "%s_%lld%s", base, (long long)k, leaf);
        if (!has(s, n)) return k;
    }
}

/* Structure module (Alg. 20-22, 24). */
static mf_status structure_shapes(const mf_param_store *s, int64_t c_s, int64_t c_z,
                                  mf_structure_module_config *sm)
{
    const int64_t *w;
    const char *a2d = SM "invariant_point_attention/attention_2d//weights";
    MF_TRY(need(s, a2d, 2, &w));
    MF_TRY(agree("pair channels", a2d, w[0], "the pair stream", c_z));
    int64_t h = w[1];
    sm->ipa.num_heads = h;
    const char *qs = SM "invariant_point_attention/q_scalar//weights";
    MF_TRY(need(s, qs, 2, &w));
    MF_TRY(agree("single channels", qs, w[0], "the single stream", c_s));
    MF_TRY(ratio(qs, w[1], h, &sm->ipa.c_hidden));
    const char *qp = SM "invariant_point_attention/q_point_local//weights";
    MF_TRY(need(s, qp, 2, &w));
    MF_TRY(ratio(qp, w[1], 3 * h, &sm->ipa.num_qk_points));
    const char *kvp = SM "invariant_point_attention/kv_point_local//weights";
    MF_TRY(need(s, kvp, 2, &w));
    int64_t kv_points = 0;
    MF_TRY(ratio(kvp, w[1], 3 * h, &kv_points));
    sm->ipa.num_v_points = kv_points - sm->ipa.num_qk_points;
    if (sm->ipa.num_v_points <= 0)
        return MF_ERROR(MF_ERR_FORMAT, "parameter '%s': %lld points leave no value points", kvp,
                        (long long)kv_points);

    sm->num_transition_layers = count_repeats(s, SM "transition", "//weights");
    if (sm->num_transition_layers == 0)
        return MF_ERROR(MF_ERR_FORMAT, "parameter '%s' is missing", SM "transition//weights");
    const char *ip = SM "rigid_sidechain/input_projection//weights";
    MF_TRY(need(s, ip, 2, &w));
    sm->angle_resnet_c_hidden = w[1];
    sm->angle_resnet_num_blocks = count_repeats(s, SM "rigid_sidechain/resblock1", "//weights");
    return MF_OK;
}

static mf_status head_shapes(const mf_param_store *s, const mf_channels_config *c,
                             mf_heads_config *h)
{
    const int64_t *w;
    const char *n = MF_AF2_ROOT "distogram_head/half_logits//weights";
    MF_TRY(need(s, n, 2, &w));
    MF_TRY(agree("pair channels", n, w[0], "the pair stream", c->c_z));
    h->distogram_num_bins = w[1];
    n = MF_AF2_ROOT "predicted_lddt_head/act_0//weights";
    MF_TRY(need(s, n, 2, &w));
    MF_TRY(agree("single channels", n, w[0], "the single stream", c->c_s));
    h->predicted_lddt_c_hidden = w[1];
    n = MF_AF2_ROOT "predicted_lddt_head/logits//weights";
    MF_TRY(need(s, n, 2, &w));
    h->predicted_lddt_num_bins = w[1];
    n = MF_AF2_ROOT "masked_msa_head/logits//weights";
    MF_TRY(need(s, n, 2, &w));
    MF_TRY(agree("MSA channels", n, w[0], "the MSA stream", c->c_m));
    h->masked_msa_num_output = w[1];
    n = MF_AF2_ROOT "experimentally_resolved_head/logits//weights";
    MF_TRY(need(s, n, 2, &w));
    h->experimentally_resolved_num_output = w[1];
    n = MF_AF2_ROOT "predicted_aligned_error_head/logits//weights";
    h->predicted_aligned_error_enabled = has(s, n);
    if (h->predicted_aligned_error_enabled) {
        MF_TRY(need(s, n, 2, &w));
        MF_TRY(agree("pair channels", n, w[0], "the pair stream", c->c_z));
        h->predicted_aligned_error_num_bins = w[1];
    }
    return MF_OK;
}

mf_status mf_param_store_apply_shapes(const mf_param_store *s, mf_config *cfg)
{
    MF_TRY(mf_param_store_require_monomer(s, "parameters"));
    const int64_t *w;
    mf_channels_config *c = &cfg->channels;
    mf_input_embedder_config *ie = &cfg->input_embedder;

    /* Input embedder (Alg. 3) and relative positions (Alg. 4). */
    MF_TRY(need(s, EVO "preprocess_1d//weights", 2, &w));
    ie->target_feat_dim = w[0];
    c->c_m = w[1];
    MF_TRY(need(s, EVO "preprocess_msa//weights", 2, &w));
    ie->msa_feat_dim = w[0];
    MF_TRY(agree("MSA channels", EVO "preprocess_msa//weights", w[1], EVO "preprocess_1d//weights",
                 c->c_m));
    MF_TRY(need(s, EVO "left_single//weights", 2, &w));
    c->c_z = w[1];
    MF_TRY(need(s, EVO "pair_activiations//weights", 2, &w));
    MF_TRY(agree("pair channels", EVO "pair_activiations//weights", w[1],
                 EVO "left_single//weights", c->c_z));
    /* One-hot of the clipped offset: 2 * max_relative_feature + 1 classes. */
    if (w[0] < 1 || w[0] % 2 != 1)
        return MF_ERROR(MF_ERR_FORMAT,
                        "parameter '%s': %lld relative-position classes is not 2k + 1",
                        EVO "pair_activiations//weights", (long long)w[0]);
    ie->max_relative_feature = (w[0] - 1) / 2;
    MF_TRY(need(s, EVO "prev_pos_linear//weights", 2, &w));
    cfg->recycling.num_bins = w[0];
    MF_TRY(need(s, EVO "single_activations//weights", 2, &w));
    MF_TRY(agree("MSA channels", EVO "single_activations//weights", w[0],
                 EVO "preprocess_1d//weights", c->c_m));
    c->c_s = w[1];

    /* Extra-MSA embedding (Alg. 2 line 14) and stack. */
    MF_TRY(need(s, EVO "extra_msa_activations//weights", 2, &w));
    ie->extra_msa_feat_dim = w[0];
    c->c_e = w[1];
    MF_TRY(stack_shapes(s, EVO "extra_msa_stack/", "msa_column_global_attention", c->c_e, c->c_z,
                        &cfg->extra_msa_stack));
    MF_TRY(stack_shapes(s, EVO "evoformer_iteration/", "msa_column_attention", c->c_m, c->c_z,
                        &cfg->evoformer));
    MF_TRY(template_shapes(s, c->c_m, c->c_z, cfg));
    MF_TRY(structure_shapes(s, c->c_s, c->c_z, &cfg->structure_module));
    return head_shapes(s, c, &cfg->heads);
}

mf_status mf_param_store_infer_config(const mf_param_store *s, mf_config *cfg)
{
    MF_TRY(mf_config_preset("af2-initial", cfg));
    MF_TRY(mf_param_store_apply_shapes(s, cfg));
    return mf_config_validate(cfg, "configuration inferred from the parameter shapes");
}
