/* HDF5 checkpoints with checksums, keep-last-N and the resume search (see checkpoint.h). */
#include "train/checkpoint.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "data/h5io.h"

static const char *const k_groups[4] = {"params", "adam_m", "adam_v", "ema"};

/* ---- CRC-32 of a parameter set: per entry its name (with the NUL), ndim and dims as 64-bit
 * little-endian integers, then the raw f32 bytes ---- */

static uint32_t crc_bytes(uint32_t crc, const void *p, size_t n)
{
    const unsigned char *b = p;
    while (n > 0) {
        uInt m = n > (1u << 30) ? (1u << 30) : (uInt)n;
        crc = (uint32_t)crc32(crc, b, m);
        b += m;
        n -= m;
    }
    return crc;
}

static uint32_t crc_i64(uint32_t crc, int64_t v)
{
    unsigned char b[8];
    for (int i = 0; i < 8; i++) b[i] = (unsigned char)((uint64_t)v >> (8 * i));
    return crc_bytes(crc, b, 8);
}

static uint32_t crc_entry(uint32_t crc, const char *name, const mf_tensor *t)
{
    crc = crc_bytes(crc, name, strlen(name) + 1);
    crc = crc_i64(crc, t->ndim);
    for (int d = 0; d < t->ndim; d++) crc = crc_i64(crc, t->shape[d]);
    return crc_bytes(crc, t->data, mf_tensor_bytes(t));
}

static uint32_t crc_store(const mf_param_store *s)
{
    uint32_t crc = (uint32_t)crc32(0L, Z_NULL, 0);
    for (int i = 0; i < s->count; i++)
        crc = crc_entry(crc, s->entries[i].name, &s->entries[i].tensor);
    return crc;
}

/* ---- the root attributes and their canonical text (covered by meta_crc32) ---- */

typedef struct {
    int64_t schema_version, step, optimizer_step, skipped_steps;
    uint64_t rng_seed, rng_counters[MF_CHECKPOINT_RNG_COUNTERS];
    int64_t loader_epoch, loader_position;
} meta_values;

static uint32_t crc_meta(const meta_values *m, const char *config_json)
{
    char buf[1024];
    int n = snprintf(buf, sizeof buf,
                     "format=%s\nschema_version=%" PRId64 "\nstep=%" PRId64
                     "\noptimizer_step=%" PRId64 "\nskipped_steps=%" PRId64 "\nrng_seed=%" PRIu64
                     "\nloader_epoch=%" PRId64 "\nloader_position=%" PRId64 "\nrng_counters=",
                     MF_CHECKPOINT_FORMAT, m->schema_version, m->step, m->optimizer_step,
                     m->skipped_steps, m->rng_seed, m->loader_epoch, m->loader_position);
    for (int i = 0; i < MF_CHECKPOINT_RNG_COUNTERS && n > 0 && (size_t)n < sizeof buf; i++)
        n += snprintf(buf + n, sizeof buf - (size_t)n, "%" PRIu64 ",", m->rng_counters[i]);
    uint32_t crc = (uint32_t)crc32(0L, Z_NULL, 0);
    crc = crc_bytes(crc, buf, strlen(buf));
    crc = crc_bytes(crc, "\nconfig=", 8);
    return crc_bytes(crc, config_json, strlen(config_json));
}

/* ---- exact 64-bit integer attributes (the h5io helpers go through double) ---- */

static mf_status write_attr_ints(mf_h5_writer *w, const char *obj, const char *attr, bool is_signed,
                                 int n, const void *values)
{
    if (H5Aexists_by_name(w->file, obj, attr, H5P_DEFAULT) > 0)
        MF_H5_CHECK(H5Adelete_by_name(w->file, obj, attr, H5P_DEFAULT));
    hsize_t dims[1] = {(hsize_t)n};
    hid_t space = n == 1 ? H5Screate(H5S_SCALAR) : H5Screate_simple(1, dims, NULL);
    if (space < 0) return MF_ERROR(MF_ERR_BACKEND, "%s: cannot create a dataspace", w->path);
    hid_t ftype = is_signed ? H5T_STD_I64LE : H5T_STD_U64LE;
    hid_t mtype = is_signed ? H5T_NATIVE_INT64 : H5T_NATIVE_UINT64;
    hid_t a =
        H5Acreate_by_name(w->file, obj, attr, ftype, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    mf_status st = MF_OK;
    if (a < 0 || H5Awrite(a, mtype, values) < 0)
        st =
            MF_ERROR(MF_ERR_BACKEND, "%s: cannot write attribute '%s' of '%s'", w->path, attr, obj);
    if (a >= 0) H5Aclose(a);
    H5Sclose(space);
    return st;
}

static mf_status write_i64(mf_h5_writer *w, const char *obj, const char *attr, int64_t v)
{
    return write_attr_ints(w, obj, attr, true, 1, &v);
}

static mf_status read_attr_ints(hid_t f, const char *label, const char *obj, const char *attr,
                                bool is_signed, int n, void *out)
{
    if (H5Aexists_by_name(f, obj, attr, H5P_DEFAULT) <= 0)
        return MF_ERROR(MF_ERR_FORMAT, "%s: attribute '%s' of '%s' is missing", label, attr, obj);
    hid_t a = H5Aopen_by_name(f, obj, attr, H5P_DEFAULT, H5P_DEFAULT);
    if (a < 0)
        return MF_ERROR(MF_ERR_FORMAT, "%s: attribute '%s' of '%s' cannot be opened", label, attr,
                        obj);
    mf_status st = MF_OK;
    hid_t space = H5Aget_space(a), type = H5Aget_type(a);
    hssize_t npts = space >= 0 ? H5Sget_simple_extent_npoints(space) : -1;
    if (type < 0 || H5Tget_class(type) != H5T_INTEGER || npts != n)
        st = MF_ERROR(MF_ERR_FORMAT, "%s: attribute '%s' of '%s' is not %d integer(s)", label, attr,
                      obj, n);
    else if (H5Aread(a, is_signed ? H5T_NATIVE_INT64 : H5T_NATIVE_UINT64, out) < 0)
        st = MF_ERROR(MF_ERR_FORMAT, "%s: attribute '%s' of '%s' cannot be read", label, attr, obj);
    if (type >= 0) H5Tclose(type);
    if (space >= 0) H5Sclose(space);
    H5Aclose(a);
    return st;
}

static mf_status read_i64(hid_t f, const char *label, const char *obj, const char *attr,
                          int64_t *out)
{
    return read_attr_ints(f, label, obj, attr, true, 1, out);
}

/* ---- writing ---- */

static mf_status write_group(mf_h5_writer *w, const char *group, const mf_param_store *s)
{
    if (H5Lexists(w->file, group, H5P_DEFAULT) <= 0) {
        hid_t g = H5Gcreate2(w->file, group, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        if (g < 0) return MF_ERROR(MF_ERR_BACKEND, "%s: cannot create group '%s'", w->path, group);
        H5Gclose(g);
    }
    MF_TRY(mf_param_store_write_h5_group(s, w, group));
    MF_TRY(write_i64(w, group, "num_params", s->count));
    return write_i64(w, group, "crc32", (int64_t)crc_store(s));
}

mf_status mf_checkpoint_save(const char *path, const mf_param_store *params,
                             const mf_optimizer *opt, const mf_train_state *state,
                             const mf_config *cfg)
{
    MF_REQUIRE(path && params && opt && state && cfg, "mf_checkpoint_save: NULL argument");
    MF_REQUIRE(opt->params == params && opt->layout.count == params->count,
               "mf_checkpoint_save: the optimizer was not initialised on these parameters");
    /* the reader refuses these, so refuse to write them */
    MF_REQUIRE(state->step >= 0 && opt->step + opt->skipped <= state->step &&
                   state->loader_epoch >= 0 && state->loader_position >= 0,
               "mf_checkpoint_save: inconsistent counters (step %lld, optimizer_step %lld, "
               "skipped_steps %lld, loader %lld/%lld)",
               (long long)state->step, (long long)opt->step, (long long)opt->skipped,
               (long long)state->loader_epoch, (long long)state->loader_position);
    char *json = NULL;
    MF_TRY(mf_config_to_json(cfg, &json));
    meta_values m = {.schema_version = MF_CHECKPOINT_SCHEMA_VERSION,
                     .step = state->step,
                     .optimizer_step = opt->step,
                     .skipped_steps = opt->skipped,
                     .rng_seed = state->rng_seed,
                     .loader_epoch = state->loader_epoch,
                     .loader_position = state->loader_position};
    memcpy(m.rng_counters, state->rng_counters, sizeof m.rng_counters);

    mf_param_store views[3];
    for (int i = 0; i < 3; i++) mf_param_store_init(&views[i]);
    mf_h5_writer w;
    bool open = false;
    mf_status st = MF_OK;
    for (int i = 0; i < 3; i++)
        MF_TRY_GOTO(mf_optimizer_state_views(opt, k_groups[i + 1], &views[i]));
    MF_TRY_GOTO(mf_h5_writer_open(&w, path));
    open = true;
    MF_TRY_GOTO(mf_h5_write_attr_string(&w, "/", "format", MF_CHECKPOINT_FORMAT));
    MF_TRY_GOTO(write_i64(&w, "/", "schema_version", m.schema_version));
    MF_TRY_GOTO(write_i64(&w, "/", "step", m.step));
    MF_TRY_GOTO(write_i64(&w, "/", "optimizer_step", m.optimizer_step));
    MF_TRY_GOTO(write_i64(&w, "/", "skipped_steps", m.skipped_steps));
    MF_TRY_GOTO(write_attr_ints(&w, "/", "rng_seed", false, 1, &m.rng_seed));
    MF_TRY_GOTO(write_attr_ints(&w, "/", "rng_counters", false, MF_CHECKPOINT_RNG_COUNTERS,
                                m.rng_counters));
    MF_TRY_GOTO(write_i64(&w, "/", "loader_epoch", m.loader_epoch));
    MF_TRY_GOTO(write_i64(&w, "/", "loader_position", m.loader_position));
    MF_TRY_GOTO(mf_h5_write_attr_string(&w, "/", "config", json));
    MF_TRY_GOTO(write_i64(&w, "/", "meta_crc32", (int64_t)crc_meta(&m, json)));
    MF_TRY_GOTO(write_group(&w, "/params", params));
    for (int i = 0; i < 3; i++) {
        char g[32];
        snprintf(g, sizeof g, "/%s", k_groups[i + 1]);
        MF_TRY_GOTO(write_group(&w, g, &views[i]));
    }
    open = false;
    MF_TRY_GOTO(mf_h5_writer_commit(&w));
cleanup:
    if (open) mf_h5_writer_abort(&w);
    for (int i = 0; i < 3; i++) mf_param_store_free(&views[i]);
    free(json);
    if (st != MF_OK) return mf_error_context(st, "writing checkpoint %s", path);
    return MF_OK;
}

/* ---- reading ---- */

/* Opens the file and reads and checks the root: format, schema, integers, config, meta_crc32.
 * *json is malloc'd. */
static mf_status open_checked(const char *path, hid_t *f, meta_values *m, char **json)
{
    *json = NULL;
    MF_TRY(mf_h5_open_read(path, f));
    char *format = NULL;
    mf_status st = MF_OK;
    MF_TRY_GOTO(mf_h5_read_attr_string(*f, "/", "format", &format));
    if (strcmp(format, MF_CHECKPOINT_FORMAT) != 0) {
        st = MF_ERROR(MF_ERR_FORMAT, "%s: format '%s', expected '%s'", path, format,
                      MF_CHECKPOINT_FORMAT);
        goto cleanup;
    }
    MF_TRY_GOTO(read_i64(*f, path, "/", "schema_version", &m->schema_version));
    if (m->schema_version != MF_CHECKPOINT_SCHEMA_VERSION) {
        st = MF_ERROR(MF_ERR_FORMAT, "%s: schema_version %" PRId64 ", this build reads %d", path,
                      m->schema_version, MF_CHECKPOINT_SCHEMA_VERSION);
        goto cleanup;
    }
    MF_TRY_GOTO(read_i64(*f, path, "/", "step", &m->step));
    MF_TRY_GOTO(read_i64(*f, path, "/", "optimizer_step", &m->optimizer_step));
    MF_TRY_GOTO(read_i64(*f, path, "/", "skipped_steps", &m->skipped_steps));
    MF_TRY_GOTO(read_attr_ints(*f, path, "/", "rng_seed", false, 1, &m->rng_seed));
    MF_TRY_GOTO(read_attr_ints(*f, path, "/", "rng_counters", false, MF_CHECKPOINT_RNG_COUNTERS,
                               m->rng_counters));
    MF_TRY_GOTO(read_i64(*f, path, "/", "loader_epoch", &m->loader_epoch));
    MF_TRY_GOTO(read_i64(*f, path, "/", "loader_position", &m->loader_position));
    MF_TRY_GOTO(mf_h5_read_attr_string(*f, "/", "config", json));
    int64_t crc;
    MF_TRY_GOTO(read_i64(*f, path, "/", "meta_crc32", &crc));
    if ((uint32_t)crc != crc_meta(m, *json) || crc < 0 || crc > (int64_t)UINT32_MAX) {
        st = MF_ERROR(MF_ERR_FORMAT,
                      "%s: meta_crc32 mismatch: the root attributes or the config were altered",
                      path);
        goto cleanup;
    }
    if (m->step < 0 || m->optimizer_step < 0 || m->skipped_steps < 0 ||
        m->optimizer_step + m->skipped_steps > m->step || m->loader_epoch < 0 ||
        m->loader_position < 0) {
        st = MF_ERROR(MF_ERR_FORMAT,
                      "%s: inconsistent counters (step %" PRId64 ", optimizer_step %" PRId64
                      ", skipped_steps %" PRId64 ", loader %" PRId64 "/%" PRId64 ")",
                      path, m->step, m->optimizer_step, m->skipped_steps, m->loader_epoch,
                      m->loader_position);
        goto cleanup;
    }
cleanup:
    free(format);
    if (st != MF_OK) {
        free(*json);
        *json = NULL;
        H5Fclose(*f);
        *f = H5I_INVALID_HID;
    }
    return st;
}

static mf_status check_group_crc(hid_t f, const char *path, const char *group,
                                 const mf_param_store *s)
{
    int64_t num = -1, crc = -1;
    MF_TRY(read_i64(f, path, group, "num_params", &num));
    MF_TRY(read_i64(f, path, group, "crc32", &crc));
    if (num != s->count)
        return MF_ERROR(MF_ERR_FORMAT,
                        "%s: group %s holds %d parameters, its num_params says %" PRId64, path,
                        group, s->count, num);
    uint32_t have = crc_store(s);
    if (crc < 0 || crc > (int64_t)UINT32_MAX || (uint32_t)crc != have)
        return MF_ERROR(MF_ERR_FORMAT,
                        "%s: group %s: crc32 mismatch (stored %08" PRIx32 ", content %08" PRIx32
                        "): the data were altered",
                        path, group, (uint32_t)crc, have);
    return MF_OK;
}

static mf_status same_names(const char *path, const char *group, const mf_param_store *a,
                            const mf_param_store *b)
{
    if (a->count != b->count)
        return MF_ERROR(MF_ERR_FORMAT, "%s: group %s holds %d arrays, /params %d", path, group,
                        b->count, a->count);
    for (int i = 0; i < a->count; i++) {
        const mf_param_entry *x = &a->entries[i], *y = &b->entries[i];
        if (strcmp(x->name, y->name) != 0 || !mf_tensor_same_shape(&x->tensor, &y->tensor))
            return MF_ERROR(MF_ERR_FORMAT,
                            "%s: group %s entry %d ('%s') does not match /params ('%s')", path,
                            group, i, y->name, x->name);
    }
    return MF_OK;
}

mf_status mf_checkpoint_verify(const char *path, int64_t *step)
{
    MF_REQUIRE(path, "mf_checkpoint_verify: NULL path");
    hid_t f;
    meta_values m;
    char *json = NULL;
    MF_TRY(open_checked(path, &f, &m, &json));
    mf_param_store params, other;
    mf_param_store_init(&params);
    mf_param_store_init(&other);
    mf_config *cfg = malloc(sizeof *cfg);
    mf_status st = MF_OK;
    if (!cfg) {
        st = MF_ERROR(MF_ERR_NOMEM, "%s: no memory", path);
        goto cleanup;
    }
    MF_TRY_GOTO(mf_config_from_json(json, cfg, path));
    st = mf_param_store_read_h5_group(&params, f, path, "/params", NULL);
    if (st != MF_OK) {
        st = mf_error_context(st, "group /params");
        goto cleanup;
    }
    MF_TRY_GOTO(check_group_crc(f, path, "/params", &params));
    for (int i = 1; i < 4; i++) {
        char g[32];
        snprintf(g, sizeof g, "/%s", k_groups[i]);
        st = mf_param_store_read_h5_group(&other, f, path, g, NULL);
        if (st != MF_OK) {
            st = mf_error_context(st, "group %s", g);
            goto cleanup;
        }
        MF_TRY_GOTO(same_names(path, g, &params, &other));
        MF_TRY_GOTO(check_group_crc(f, path, g, &other));
        mf_param_store_free(&other);
        mf_param_store_init(&other);
    }
    if (step) *step = m.step;
cleanup:
    mf_param_store_free(&params);
    mf_param_store_free(&other);
    free(cfg);
    free(json);
    H5Fclose(f);
    return st;
}

mf_status mf_checkpoint_read_config(const char *path, mf_config *cfg)
{
    MF_REQUIRE(path && cfg, "mf_checkpoint_read_config: NULL argument");
    hid_t f;
    meta_values m;
    char *json = NULL;
    MF_TRY(open_checked(path, &f, &m, &json));
    mf_status st = mf_config_from_json(json, cfg, path);
    free(json);
    H5Fclose(f);
    return st;
}

/* "scope//name" -> "<group>/scope/name", the path mf_param_store_write_h5_group uses. */
static mf_status dataset_path(const char *group, const char *name, char *buf, size_t cap)
{
    const char *sep = strstr(name, "//");
    if (!sep) return MF_ERROR(MF_ERR_INVALID, "parameter name '%s' has no '//'", name);
    int n = snprintf(buf, cap, "%s/%.*s/%s", group, (int)(sep - name), name, sep + 2);
    if (n < 0 || (size_t)n >= cap)
        return MF_ERROR(MF_ERR_INVALID, "parameter name too long: %.100s...", name);
    return MF_OK;
}

/* Reads group `group` into the tensors of `dst` (names and shapes must match), checking its crc. */
static mf_status read_group_into(hid_t f, const char *path, const char *group,
                                 const mf_param_store *dst)
{
    uint32_t crc = (uint32_t)crc32(0L, Z_NULL, 0);
    for (int i = 0; i < dst->count; i++) {
        const mf_param_entry *e = &dst->entries[i];
        char h5path[2048];
        MF_TRY(dataset_path(group, e->name, h5path, sizeof h5path));
        mf_h5_array a;
        MF_TRY(
            mf_h5_read_array_shape(f, path, h5path, MF_F32, e->tensor.ndim, e->tensor.shape, &a));
        memcpy(e->tensor.data, a.data, mf_tensor_bytes(&e->tensor));
        mf_h5_array_free(&a);
        crc = crc_entry(crc, e->name, &e->tensor);
    }
    int64_t num = -1, stored = -1;
    MF_TRY(read_i64(f, path, group, "num_params", &num));
    MF_TRY(read_i64(f, path, group, "crc32", &stored));
    if (num != dst->count)
        return MF_ERROR(MF_ERR_FORMAT,
                        "%s: group %s holds %" PRId64 " parameters, the model has %d", path, group,
                        num, dst->count);
    if (stored < 0 || stored > (int64_t)UINT32_MAX || (uint32_t)stored != crc)
        return MF_ERROR(MF_ERR_FORMAT,
                        "%s: group %s: crc32 mismatch (stored %08" PRIx32 ", content %08" PRIx32
                        "): the data were altered or the model's names differ",
                        path, group, (uint32_t)stored, crc);
    return MF_OK;
}

mf_status mf_checkpoint_load(const char *path, const mf_param_store *params, mf_optimizer *opt,
                             mf_train_state *state, mf_config *cfg_out)
{
    MF_REQUIRE(path && params && opt && state, "mf_checkpoint_load: NULL argument");
    MF_REQUIRE(opt->params == params && opt->layout.count == params->count,
               "mf_checkpoint_load: the optimizer was not initialised on these parameters");
    hid_t f;
    meta_values m;
    char *json = NULL;
    MF_TRY(open_checked(path, &f, &m, &json));
    mf_param_store views[3];
    for (int i = 0; i < 3; i++) mf_param_store_init(&views[i]);
    mf_status st = MF_OK;
    if (cfg_out) MF_TRY_GOTO(mf_config_from_json(json, cfg_out, path));
    MF_TRY_GOTO(read_group_into(f, path, "params", params));
    for (int i = 0; i < 3; i++) {
        MF_TRY_GOTO(mf_optimizer_state_views(opt, k_groups[i + 1], &views[i]));
        MF_TRY_GOTO(read_group_into(f, path, k_groups[i + 1], &views[i]));
    }
    opt->step = m.optimizer_step;
    opt->skipped = m.skipped_steps;
    state->step = m.step;
    state->rng_seed = m.rng_seed;
    memcpy(state->rng_counters, m.rng_counters, sizeof state->rng_counters);
    state->loader_epoch = m.loader_epoch;
    state->loader_position = m.loader_position;
cleanup:
    for (int i = 0; i < 3; i++) mf_param_store_free(&views[i]);
    free(json);
    H5Fclose(f);
    return st;
}

/* ---- run directories ---- */

mf_status mf_checkpoint_path(const char *run_dir, int64_t step, char *buf, size_t cap)
{
    MF_REQUIRE(run_dir && buf && step >= 0, "mf_checkpoint_path: bad argument");
    int n = snprintf(buf, cap, "%s/" MF_CHECKPOINT_PREFIX "%08" PRId64 MF_CHECKPOINT_SUFFIX,
                     run_dir, step);
    if (n < 0 || (size_t)n >= cap)
        return MF_ERROR(MF_ERR_INVALID, "checkpoint path in '%s' too long", run_dir);
    return MF_OK;
}

/* "ckpt-<digits>.h5" exactly; the step into *step. */
static bool parse_name(const char *name, int64_t *step)
{
    size_t lp = strlen(MF_CHECKPOINT_PREFIX), ls = strlen(MF_CHECKPOINT_SUFFIX);
    size_t n = strlen(name);
    if (n <= lp + ls || strncmp(name, MF_CHECKPOINT_PREFIX, lp) != 0 ||
        strcmp(name + n - ls, MF_CHECKPOINT_SUFFIX) != 0 || n - lp - ls > 18)
        return false;
    int64_t v = 0;
    for (size_t i = lp; i < n - ls; i++) {
        if (name[i] < '0' || name[i] > '9') return false;
        v = v * 10 + (name[i] - '0');
    }
    *step = v;
    return true;
}

void mf_checkpoint_list_free(mf_checkpoint_list *l)
{
    for (int i = 0; i < l->count; i++) free(l->paths[i]);
    free(l->paths);
    free(l->steps);
    memset(l, 0, sizeof *l);
}

mf_status mf_checkpoint_list_run(const char *run_dir, mf_checkpoint_list *out)
{
    memset(out, 0, sizeof *out);
    MF_REQUIRE(run_dir, "mf_checkpoint_list_run: NULL directory");
    DIR *dir = opendir(run_dir);
    if (!dir) {
        if (errno == ENOENT) return MF_OK;
        return MF_ERROR(MF_ERR_IO, "%s: cannot list directory: %s", run_dir, strerror(errno));
    }
    int cap = 0;
    mf_status st = MF_OK;
    struct dirent *de;
    while ((de = readdir(dir)) != NULL) {
        int64_t step;
        if (!parse_name(de->d_name, &step)) continue;
        if (out->count == cap) {
            int nc = cap ? 2 * cap : 16;
            int64_t *s = realloc(out->steps, sizeof *s * (size_t)nc);
            if (s) out->steps = s;
            char **p = realloc(out->paths, sizeof *p * (size_t)nc);
            if (p) out->paths = p;
            if (!s || !p) {
                st = MF_ERROR(MF_ERR_NOMEM, "%s: no memory for the checkpoint list", run_dir);
                break;
            }
            cap = nc;
        }
        size_t len = strlen(run_dir) + strlen(de->d_name) + 2;
        char *path = malloc(len);
        if (!path) {
            st = MF_ERROR(MF_ERR_NOMEM, "%s: no memory for the checkpoint list", run_dir);
            break;
        }
        snprintf(path, len, "%s/%s", run_dir, de->d_name);
        out->steps[out->count] = step;
        out->paths[out->count] = path;
        out->count++;
    }
    closedir(dir);
    if (st != MF_OK) {
        mf_checkpoint_list_free(out);
        return st;
    }
    /* Newest first (insertion sort: a run keeps a handful). Equal steps ("ckpt-5" and
     * "ckpt-00000005") by name, so the order never depends on readdir. */
    for (int i = 1; i < out->count; i++) {
        int64_t s = out->steps[i];
        char *p = out->paths[i];
        int j = i - 1;
        while (j >= 0 &&
               (out->steps[j] < s || (out->steps[j] == s && strcmp(out->paths[j], p) > 0))) {
            out->steps[j + 1] = out->steps[j];
            out->paths[j + 1] = out->paths[j];
            j--;
        }
        out->steps[j + 1] = s;
        out->paths[j + 1] = p;
    }
    return MF_OK;
}

static mf_status make_dirs(const char *dir)
{
    char buf[4096];
    size_t n = strlen(dir);
    if (n == 0 || n >= sizeof buf) return MF_ERROR(MF_ERR_INVALID, "directory name '%s'", dir);
    memcpy(buf, dir, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (buf[i] != '/' && buf[i] != '\0') continue;
        char c = buf[i];
        buf[i] = '\0';
        if (mkdir(buf, 0777) != 0 && errno != EEXIST)
            return MF_ERROR(MF_ERR_IO, "cannot create directory %s: %s", buf, strerror(errno));
        buf[i] = c;
    }
    struct stat sb;
    if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode))
        return MF_ERROR(MF_ERR_IO, "%s is not a directory", dir);
    return MF_OK;
}

mf_status mf_checkpoint_save_run(const char *run_dir, int keep, const mf_param_store *params,
                                 const mf_optimizer *opt, const mf_train_state *state,
                                 const mf_config *cfg, char *path_out, size_t path_cap)
{
    MF_REQUIRE(run_dir && state, "mf_checkpoint_save_run: NULL argument");
    MF_TRY(make_dirs(run_dir));
    char path[4096];
    MF_TRY(mf_checkpoint_path(run_dir, state->step, path, sizeof path));
    MF_TRY(mf_checkpoint_save(path, params, opt, state, cfg));
    if (path_out && path_cap) snprintf(path_out, path_cap, "%s", path);
    if (keep <= 0) return MF_OK;
    mf_checkpoint_list l;
    MF_TRY(mf_checkpoint_list_run(run_dir, &l));
    mf_status st = MF_OK;
    int older = 0;
    for (int i = 0; i < l.count; i++) {
        if (l.steps[i] >= state->step) continue;
        if (++older < keep) continue;
        if (unlink(l.paths[i]) != 0 && errno != ENOENT) {
            st = MF_ERROR(MF_ERR_IO, "cannot delete old checkpoint %s: %s", l.paths[i],
                          strerror(errno));
            break;
        }
    }
    mf_checkpoint_list_free(&l);
    return st;
}

mf_status mf_checkpoint_find_latest(const char *run_dir, FILE *log, char *path, size_t cap,
                                    int64_t *step, bool *found)
{
    MF_REQUIRE(run_dir && path && cap && found, "mf_checkpoint_find_latest: NULL argument");
    *found = false;
    mf_checkpoint_list l;
    MF_TRY(mf_checkpoint_list_run(run_dir, &l));
    for (int i = 0; i < l.count; i++) {
        int64_t s = -1;
        mf_status st = mf_checkpoint_verify(l.paths[i], &s);
        if (st == MF_OK && s != l.steps[i])
            st =
                MF_ERROR(MF_ERR_FORMAT, "%s: holds step %" PRId64 " but is named for step %" PRId64,
                         l.paths[i], s, l.steps[i]);
        if (st == MF_OK) {
            snprintf(path, cap, "%s", l.paths[i]);
            if (step) *step = s;
            *found = true;
            break;
        }
        if (log) fprintf(log, "skipping checkpoint %s: %s\n", l.paths[i], mf_last_error());
    }
    mf_checkpoint_list_free(&l);
    mf_clear_error();
    return MF_OK;
}

mf_status mf_checkpoint_remove_stale_temps(const char *run_dir, int *removed)
{
    MF_REQUIRE(run_dir, "mf_checkpoint_remove_stale_temps: NULL directory");
    if (removed) *removed = 0;
    DIR *dir = opendir(run_dir);
    if (!dir) {
        if (errno == ENOENT) return MF_OK;
        return MF_ERROR(MF_ERR_IO, "%s: cannot list directory: %s", run_dir, strerror(errno));
    }
    mf_status st = MF_OK;
    struct dirent *de;
    const size_t lp = strlen(MF_CHECKPOINT_PREFIX);
    while ((de = readdir(dir)) != NULL) {
        if (strncmp(de->d_name, MF_CHECKPOINT_PREFIX, lp) != 0 ||
            !strstr(de->d_name, MF_CHECKPOINT_SUFFIX ".tmp-"))
            continue;
        char p[4096];
        snprintf(p, sizeof p, "%s/%s", run_dir, de->d_name);
        if (unlink(p) != 0 && errno != ENOENT) {
            st = MF_ERROR(MF_ERR_IO, "cannot delete %s: %s", p, strerror(errno));
            break;
        }
        if (removed) (*removed)++;
    }
    closedir(dir);
    return st;
}

/* ---- signals ---- */

static volatile sig_atomic_t g_signal_pending = 0;

static void on_signal(int sig)
{
    g_signal_pending = sig;
}

mf_status mf_checkpoint_signals_install(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESETHAND; /* the second signal takes the default action */
    if (sigaction(SIGINT, &sa, NULL) != 0 || sigaction(SIGTERM, &sa, NULL) != 0)
        return MF_ERROR(MF_ERR_IO, "cannot install SIGINT/SIGTERM handlers: %s", strerror(errno));
    g_signal_pending = 0;
    return MF_OK;
}

int mf_checkpoint_signal_pending(void)
{
    return (int)g_signal_pending;
}
