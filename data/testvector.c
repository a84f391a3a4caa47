#include "data/testvector.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

static void free_set(mf_array_set *s)
{
    for (int i = 0; i < s->count; i++) {
        free(s->items[i].name);
        mf_h5_array_free(&s->items[i].array);
    }
    free(s->items);
    memset(s, 0, sizeof *s);
}

static mf_status load_set(hid_t f, const char *path, const char *group, mf_array_set *s)
{
    memset(s, 0, sizeof *s);
    if (!mf_h5_exists(f, group)) return MF_OK;
    char **names;
    int n;
    MF_TRY(mf_h5_list(f, group, &names, &n));
    s->items = calloc((size_t)(n ? n : 1), sizeof *s->items);
    if (!s->items) {
        mf_h5_free_names(names, n);
        return MF_ERROR(MF_ERR_NOMEM, "%s: no memory for group %s", path, group);
    }
    mf_status st = MF_OK;
    for (int i = 0; i < n && st == MF_OK; i++) {
        char full[1024];
        snprintf(full, sizeof full, "%s/%s", group, names[i]);
        st = mf_h5_read_array(f, path, full, MF_F32, &s->items[i].array);
        if (st == MF_OK) {
            s->items[i].name = names[i];
            names[i] = NULL;
            s->count++;
        }
    }
    mf_h5_free_names(names, n);
    if (st != MF_OK) free_set(s);
    return st;
}

static mf_status parse_lists(mf_module_vectors *v, const char *abs_json, const char *skip_json)
{
    cJSON *a = cJSON_Parse(abs_json ? abs_json : "[]");
    if (!a || !cJSON_IsArray(a)) {
        cJSON_Delete(a);
        return MF_ERROR(MF_ERR_FORMAT, "%s: attribute compare_absolute is not a JSON list",
                        v->path);
    }
    int n = cJSON_GetArraySize(a);
    v->compare_absolute = calloc((size_t)(n ? n : 1), sizeof(char *));
    for (int i = 0; v->compare_absolute && i < n; i++) {
        cJSON *e = cJSON_GetArrayItem(a, i);
        if (cJSON_IsString(e)) v->compare_absolute[v->n_absolute++] = strdup(e->valuestring);
    }
    cJSON_Delete(a);
    cJSON *s = cJSON_Parse(skip_json ? skip_json : "{}");
    if (!s || !cJSON_IsObject(s)) {
        cJSON_Delete(s);
        return MF_ERROR(MF_ERR_FORMAT, "%s: attribute skip_rows is not a JSON object", v->path);
    }
    n = cJSON_GetArraySize(s);
    v->skip = calloc((size_t)(n ? n : 1), sizeof *v->skip);
    for (cJSON *e = s->child; v->skip && e; e = e->next) {
        if (!cJSON_IsArray(e)) continue;
        mf_skip_rows *r = &v->skip[v->n_skip++];
        r->dataset = strdup(e->string);
        r->count = cJSON_GetArraySize(e);
        r->rows = calloc((size_t)(r->count ? r->count : 1), sizeof(int64_t));
        for (int i = 0; r->rows && i < r->count; i++)
            r->rows[i] = (int64_t)cJSON_GetArrayItem(e, i)->valuedouble;
    }
    cJSON_Delete(s);
    if (!v->compare_absolute || !v->skip) return MF_ERROR(MF_ERR_NOMEM, "%s: no memory", v->path);
    return MF_OK;
}

mf_status mf_module_vectors_load(const char *path, mf_module_vectors *v)
{
    memset(v, 0, sizeof *v);
    v->path = strdup(path);
    hid_t f;
    mf_status st = mf_h5_open_read(path, &f);
    if (st != MF_OK) {
        mf_module_vectors_free(v);
        return st;
    }
    char *abs_json = NULL, *skip_json = NULL;
    MF_TRY_GOTO(mf_h5_read_attr_string(f, "/", "module", &v->module));
    if (mf_h5_read_attr_string(f, "/", "af2_scope", &v->scope) != MF_OK) v->scope = strdup("");
    if (mf_h5_read_attr_string(f, "/", "doc", &v->doc) != MF_OK) v->doc = strdup("");
    MF_TRY_GOTO(mf_h5_read_attr_double(f, "/", "rtol", &v->rtol));
    if (mf_h5_read_attr_double(f, "/", "grad_scale", &v->grad_scale) != MF_OK) v->grad_scale = 0;
    mf_h5_read_attr_string(f, "/", "compare_absolute", &abs_json); /* optional */
    mf_h5_read_attr_string(f, "/", "skip_rows", &skip_json);       /* optional */
    MF_TRY_GOTO(parse_lists(v, abs_json, skip_json));
    MF_TRY_GOTO(load_set(f, path, "inputs", &v->inputs));
    MF_TRY_GOTO(load_set(f, path, "weights", &v->weights));
    MF_TRY_GOTO(load_set(f, path, "outputs", &v->outputs));
    MF_TRY_GOTO(load_set(f, path, "grad_outputs", &v->grad_outputs));
    MF_TRY_GOTO(load_set(f, path, "grads_inputs", &v->grads_inputs));
    MF_TRY_GOTO(load_set(f, path, "grads_weights", &v->grads_weights));
cleanup:
    free(abs_json);
    free(skip_json);
    H5Fclose(f);
    if (st != MF_OK) {
        mf_error_context(st, "loading reference vectors %s", path);
        mf_module_vectors_free(v);
    }
    return st;
}

void mf_module_vectors_free(mf_module_vectors *v)
{
    free(v->path);
    free(v->module);
    free(v->scope);
    free(v->doc);
    for (int i = 0; i < v->n_absolute; i++) free(v->compare_absolute[i]);
    free(v->compare_absolute);
    for (int i = 0; i < v->n_skip; i++) {
        free(v->skip[i].dataset);
        free(v->skip[i].rows);
    }
    free(v->skip);
    free_set(&v->inputs);
    free_set(&v->weights);
    free_set(&v->outputs);
    free_set(&v->grad_outputs);
    free_set(&v->grads_inputs);
    free_set(&v->grads_weights);
    memset(v, 0, sizeof *v);
}

const mf_h5_array *mf_array_set_find(const mf_array_set *s, const char *name)
{
    for (int i = 0; i < s->count; i++)
        if (!strcmp(s->items[i].name, name)) return &s->items[i].array;
    return NULL;
}

mf_status mf_array_set_get(const mf_module_vectors *v, const mf_array_set *s, const char *group,
                           const char *name, int ndim, const int64_t *shape,
                           const mf_h5_array **out)
{
    *out = mf_array_set_find(s, name);
    if (!*out) return MF_ERROR(MF_ERR_FORMAT, "%s: dataset %s/%s missing", v->path, group, name);
    if (ndim < 0) return MF_OK;
    bool ok = (*out)->ndim == ndim;
    for (int i = 0; ok && i < ndim; i++) ok = (*out)->shape[i] == shape[i];
    if (!ok) {
        *out = NULL;
        return MF_ERROR(MF_ERR_FORMAT, "%s: dataset %s/%s has an unexpected shape", v->path, group,
                        name);
    }
    return MF_OK;
}

bool mf_module_vectors_is_absolute(const mf_module_vectors *v, const char *weight_name)
{
    for (int i = 0; i < v->n_absolute; i++)
        if (!strcmp(v->compare_absolute[i], weight_name)) return true;
    return false;
}

const mf_skip_rows *mf_module_vectors_skip(const mf_module_vectors *v, const char *dataset)
{
    for (int i = 0; i < v->n_skip; i++)
        if (!strcmp(v->skip[i].dataset, dataset)) return &v->skip[i];
    return NULL;
}
