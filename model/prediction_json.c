/* Prediction and ranking JSON (key names in the header). The [N, N] PAE matrix goes into the tree
 * as one pre-printed raw row per residue: a cJSON node per element would cost ~64 bytes each
 * (hundreds of MB at N = 2000), the raw rows cost the printed text only. */
#include "model/prediction_json.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>

#include "protein/pdb_writer.h"

#ifndef MF_VERSION
#define MF_VERSION "unknown"
#endif

/* PAE values beyond this are not errors of a model with bins up to ~32 A; a bound keeps every
 * printed value within a fixed width. */
#define PAE_LIMIT 1e6

const char *mf_ranking_metric_name(mf_ranking_metric m)
{
    return m == MF_RANK_BY_PTM ? "ptm" : "plddt";
}

mf_status mf_ranking_metric_parse(const char *name, mf_ranking_metric *m)
{
    MF_REQUIRE(name && m, "mf_ranking_metric_parse: NULL argument");
    if (!strcasecmp(name, "plddt"))
        *m = MF_RANK_BY_PLDDT;
    else if (!strcasecmp(name, "ptm"))
        *m = MF_RANK_BY_PTM;
    else
        return MF_ERROR(MF_ERR_INVALID, "ranking metric '%s': expected plddt or ptm", name);
    return MF_OK;
}

int64_t mf_process_peak_rss_bytes(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0) return -1;
    return (int64_t)ru.ru_maxrss * 1024; /* Linux reports KiB */
}

static double round2(double x)
{
    return round(x * 100.0) / 100.0;
}

mf_status mf_prediction_confidence(const mf_prediction_record *r, mf_ranking_metric m,
                                   double *mean_plddt, double *ranking_confidence)
{
    MF_REQUIRE(r, "prediction record: NULL");
    const char *name = r->model_name ? r->model_name : "(null)";
    MF_REQUIRE(r->model_name && r->model_name[0], "prediction record: model name missing");
    MF_REQUIRE(m == MF_RANK_BY_PLDDT || m == MF_RANK_BY_PTM, "model %s: ranking metric %d", name,
               (int)m);
    MF_REQUIRE(r->num_res >= 1 && r->num_res <= ((int64_t)1 << 24),
               "model %s: num_res %lld outside [1, 2^24]", name, (long long)r->num_res);
    MF_REQUIRE(r->plddt, "model %s: pLDDT missing", name);
    MF_REQUIRE(!r->sequence || (int64_t)strlen(r->sequence) == r->num_res,
               "model %s: sequence has %zu letters for %lld residues", name,
               r->sequence ? strlen(r->sequence) : (size_t)0, (long long)r->num_res);
    MF_REQUIRE(r->num_recycles >= 0, "model %s: num_recycles %lld", name,
               (long long)r->num_recycles);
    MF_REQUIRE(r->n_timings >= 0 && (r->n_timings == 0 || r->timings),
               "model %s: %d timings without an array", name, r->n_timings);
    double sum = 0;
    for (int64_t i = 0; i < r->num_res; i++) {
        float v = r->plddt[i];
        if (!(isfinite(v) && v >= 0.f && v <= 100.f))
            return MF_ERROR(isfinite(v) ? MF_ERR_INVALID : MF_ERR_NUMERIC,
                            "model %s: plddt[%lld] = %g outside [0, 100]", name, (long long)i,
                            (double)v);
        sum += v;
    }
    if (r->pae) {
        MF_REQUIRE(isfinite(r->max_pae) && r->max_pae > 0 && r->max_pae <= PAE_LIMIT,
                   "model %s: max_pae %g", name, r->max_pae);
        for (int64_t k = 0; k < r->num_res * r->num_res; k++) {
            float v = r->pae[k];
            if (!(isfinite(v) && v >= 0.f && v <= PAE_LIMIT))
                return MF_ERROR(isfinite(v) ? MF_ERR_INVALID : MF_ERR_NUMERIC,
                                "model %s: pae[%lld, %lld] = %g outside [0, %g]", name,
                                (long long)(k / r->num_res), (long long)(k % r->num_res), (double)v,
                                PAE_LIMIT);
        }
    }
    if (r->ptm && !(isfinite(*r->ptm) && *r->ptm >= 0 && *r->ptm <= 1))
        return MF_ERROR(isfinite(*r->ptm) ? MF_ERR_INVALID : MF_ERR_NUMERIC,
                        "model %s: ptm %g outside [0, 1]", name, *r->ptm);
    if (m == MF_RANK_BY_PTM && !r->ptm)
        return MF_ERROR(MF_ERR_INVALID, "model %s: ranking by pTM, but the model has no pTM", name);
    for (int t = 0; t < r->n_timings; t++) {
        const mf_stage_timing *s = &r->timings[t];
        MF_REQUIRE(s->stage && s->stage[0], "model %s: timing %d has no stage name", name, t);
        MF_REQUIRE(isfinite(s->seconds) && s->seconds >= 0, "model %s: stage %s took %g s", name,
                   s->stage, s->seconds);
        for (int u = 0; u < t; u++)
            MF_REQUIRE(strcmp(r->timings[u].stage, s->stage) != 0, "model %s: stage %s timed twice",
                       name, s->stage);
    }
    double mean = sum / (double)r->num_res;
    if (mean_plddt) *mean_plddt = mean;
    if (ranking_confidence) *ranking_confidence = m == MF_RANK_BY_PTM ? *r->ptm : mean;
    return MF_OK;
}

/* cJSON reports every failure as NULL; one flag collects them so the builder reads straight. */
typedef struct {
    int failed;
} builder;

static cJSON *chk(builder *b, cJSON *item)
{
    if (!item) b->failed = 1;
    return item;
}

static void add(builder *b, cJSON *obj, const char *key, cJSON *item)
{
    if (!item) {
        b->failed = 1;
        return;
    }
    if (!cJSON_AddItemToObject(obj, key, item)) {
        cJSON_Delete(item);
        b->failed = 1;
    }
}

static void add_num(builder *b, cJSON *obj, const char *key, double v)
{
    add(b, obj, key, cJSON_CreateNumber(v));
}

static void add_opt_num(builder *b, cJSON *obj, const char *key, const double *v)
{
    add(b, obj, key, v ? cJSON_CreateNumber(*v) : cJSON_CreateNull());
}

static cJSON *pae_matrix(builder *b, const float *pae, int64_t n)
{
    cJSON *rows = chk(b, cJSON_CreateArray());
    size_t cap = (size_t)n * 16 + 4; /* "%.2f" of a value <= 1e6 and a comma: <= 11 bytes */
    char *row = malloc(cap);
    if (!row) b->failed = 1;
    for (int64_t i = 0; i < n && !b->failed; i++) {
        size_t len = 0;
        row[len++] = '[';
        for (int64_t j = 0; j < n; j++)
            len += (size_t)snprintf(row + len, cap - len, j ? ",%.2f" : "%.2f",
                                    round2(pae[i * n + j]));
        row[len++] = ']';
        row[len] = '\0';
        cJSON *raw = chk(b, cJSON_CreateRaw(row));
        if (raw && !cJSON_AddItemToArray(rows, raw)) {
            cJSON_Delete(raw);
            b->failed = 1;
        }
    }
    free(row);
    return rows;
}

static cJSON *config_summary(builder *b, const mf_config *c)
{
    cJSON *o = chk(b, cJSON_CreateObject());
    if (!o) return NULL;
    add(b, o, "preset", cJSON_CreateString(c->preset));
    add_num(b, o, "c_m", (double)c->channels.c_m);
    add_num(b, o, "c_z", (double)c->channels.c_z);
    add_num(b, o, "c_s", (double)c->channels.c_s);
    add_num(b, o, "evoformer_num_blocks", (double)c->evoformer.num_blocks);
    add_num(b, o, "extra_msa_num_blocks", (double)c->extra_msa_stack.num_blocks);
    add(b, o, "templates_enabled", cJSON_CreateBool(c->template_embedding.enabled));
    add_num(b, o, "structure_module_num_layers", (double)c->structure_module.num_layers);
    add_num(b, o, "num_recycle", (double)c->recycling.num_recycle);
    add(b, o, "predicted_aligned_error_enabled",
        cJSON_CreateBool(c->heads.predicted_aligned_error_enabled));
    char policy[256];
    add(b, o, "memory_policy",
        cJSON_CreateString(mf_policy_describe(&c->memory, policy, (int)sizeof policy)));
    return o;
}

static mf_status print_tree(cJSON *root, builder *b, const char *what, char **text)
{
    char *s = b->failed ? NULL : cJSON_Print(root);
    cJSON_Delete(root);
    if (!s) return MF_ERROR(MF_ERR_NOMEM, "%s: building the JSON text", what);
    *text = s;
    return MF_OK;
}

mf_status mf_prediction_json_format(const mf_prediction_record *r, mf_ranking_metric m, char **text)
{
    MF_REQUIRE(text, "mf_prediction_json_format: NULL output");
    *text = NULL;
    double mean, conf;
    MF_TRY(mf_prediction_confidence(r, m, &mean, &conf));
    const int64_t n = r->num_res;
    builder b = {0};
    cJSON *root = cJSON_CreateObject();
    if (!root) return MF_ERROR(MF_ERR_NOMEM, "model %s: JSON object", r->model_name);
    add(&b, root, "schema", cJSON_CreateString("memfold.prediction"));
    add_num(&b, root, "schema_version", MF_PREDICTION_SCHEMA_VERSION);
    add(&b, root, "tool", cJSON_CreateString("memfold " MF_VERSION));
    add(&b, root, "model_name", cJSON_CreateString(r->model_name));
    add_num(&b, root, "num_res", (double)n);
    add(&b, root, "sequence", r->sequence ? cJSON_CreateString(r->sequence) : cJSON_CreateNull());
    cJSON *num = chk(&b, cJSON_CreateArray()), *pl = chk(&b, cJSON_CreateArray());
    for (int64_t i = 0; i < n && !b.failed; i++) {
        cJSON *x =
            chk(&b, cJSON_CreateNumber(r->residue_number ? r->residue_number[i] : (double)(i + 1)));
        cJSON *y = chk(&b, cJSON_CreateNumber(round2(r->plddt[i])));
        if (x && !cJSON_AddItemToArray(num, x)) cJSON_Delete(x), b.failed = 1;
        if (y && !cJSON_AddItemToArray(pl, y)) cJSON_Delete(y), b.failed = 1;
    }
    add(&b, root, "residue_number", num);
    add(&b, root, "plddt", pl);
    add_num(&b, root, "mean_plddt", mean);
    add(&b, root, "predicted_aligned_error",
        r->pae ? pae_matrix(&b, r->pae, n) : cJSON_CreateNull());
    add_opt_num(&b, root, "max_predicted_aligned_error", r->pae ? &r->max_pae : NULL);
    add_opt_num(&b, root, "ptm", r->ptm);
    add(&b, root, "ranking_metric", cJSON_CreateString(mf_ranking_metric_name(m)));
    add_num(&b, root, "ranking_confidence", conf);
    add_num(&b, root, "num_recycles", (double)r->num_recycles);
    cJSON *timings = chk(&b, cJSON_CreateObject());
    for (int t = 0; t < r->n_timings && timings; t++)
        add_num(&b, timings, r->timings[t].stage, r->timings[t].seconds);
    add(&b, root, "timings", timings);
    cJSON *mem = chk(&b, cJSON_CreateObject());
    if (mem) {
        int64_t rss = r->peak_rss_bytes == 0 ? mf_process_peak_rss_bytes() : r->peak_rss_bytes;
        double arena = (double)r->arena_high_water_bytes, rss_d = (double)rss;
        add_opt_num(&b, mem, "arena_high_water_bytes",
                    r->arena_high_water_bytes >= 0 ? &arena : NULL);
        add_opt_num(&b, mem, "peak_rss_bytes", rss >= 0 ? &rss_d : NULL);
        if (r->gpu_arena_high_water_bytes > 0)
            add_num(&b, mem, "gpu_arena_high_water_bytes", (double)r->gpu_arena_high_water_bytes);
    }
    add(&b, root, "memory", mem);
    add(&b, root, "config", r->config ? config_summary(&b, r->config) : cJSON_CreateNull());
    return print_tree(root, &b, r->model_name, text);
}

mf_status mf_prediction_json_write(const char *path, const mf_prediction_record *r,
                                   mf_ranking_metric m)
{
    MF_REQUIRE(path, "mf_prediction_json_write: NULL path");
    char *text = NULL;
    mf_status st = mf_prediction_json_format(r, m, &text);
    if (st != MF_OK) return mf_error_context(st, "writing %s", path);
    st = mf_write_file_atomic(path, text, strlen(text));
    mf_prediction_json_free(text);
    return st;
}

typedef struct {
    double conf;
    int index;
} ranked;

static int cmp_ranked(const void *pa, const void *pb)
{
    const ranked *a = pa, *b = pb;
    if (a->conf != b->conf) return a->conf > b->conf ? -1 : 1;
    return (a->index > b->index) - (a->index < b->index);
}

mf_status mf_ranking_order(const mf_prediction_record *records, int n, mf_ranking_metric m,
                           int *order)
{
    MF_REQUIRE(records && n >= 1 && order, "mf_ranking_order: %d records", n);
    ranked *rk = malloc((size_t)n * sizeof *rk);
    if (!rk) return MF_ERROR(MF_ERR_NOMEM, "mf_ranking_order: %d records", n);
    mf_status st = MF_OK;
    for (int i = 0; i < n && st == MF_OK; i++) {
        rk[i].index = i;
        st = mf_prediction_confidence(&records[i], m, NULL, &rk[i].conf);
        for (int j = 0; j < i && st == MF_OK; j++)
            if (!strcmp(records[j].model_name, records[i].model_name))
                st = MF_ERROR(MF_ERR_INVALID, "ranking: model name %s given twice",
                              records[i].model_name);
    }
    if (st == MF_OK) {
        qsort(rk, (size_t)n, sizeof *rk, cmp_ranked);
        for (int i = 0; i < n; i++) order[i] = rk[i].index;
    }
    free(rk);
    return st;
}

mf_status mf_ranking_json_format(const mf_prediction_record *records, int n, mf_ranking_metric m,
                                 char **text)
{
    MF_REQUIRE(text, "mf_ranking_json_format: NULL output");
    *text = NULL;
    int *order = malloc((size_t)(n > 0 ? n : 1) * sizeof *order);
    if (!order) return MF_ERROR(MF_ERR_NOMEM, "ranking: %d records", n);
    mf_status st = mf_ranking_order(records, n, m, order);
    if (st != MF_OK) {
        free(order);
        return st;
    }
    builder b = {0};
    cJSON *root = chk(&b, cJSON_CreateObject());
    cJSON *plddts = chk(&b, cJSON_CreateObject()), *ptms = chk(&b, cJSON_CreateObject());
    cJSON *confs = chk(&b, cJSON_CreateObject()), *ord = chk(&b, cJSON_CreateArray());
    for (int i = 0; i < n && !b.failed; i++) {
        double mean, conf;
        (void)mf_prediction_confidence(&records[i], m, &mean, &conf); /* checked above */
        add_num(&b, plddts, records[i].model_name, mean);
        add_opt_num(&b, ptms, records[i].model_name, records[i].ptm);
        add_num(&b, confs, records[i].model_name, conf);
        cJSON *s = chk(&b, cJSON_CreateString(records[order[i]].model_name));
        if (s && !cJSON_AddItemToArray(ord, s)) cJSON_Delete(s), b.failed = 1;
    }
    free(order);
    if (!root) {
        cJSON_Delete(plddts), cJSON_Delete(ptms), cJSON_Delete(confs), cJSON_Delete(ord);
        return MF_ERROR(MF_ERR_NOMEM, "ranking: JSON object");
    }
    add(&b, root, "schema", cJSON_CreateString("memfold.ranking"));
    add_num(&b, root, "schema_version", MF_PREDICTION_SCHEMA_VERSION);
    add(&b, root, "ranking_metric", cJSON_CreateString(mf_ranking_metric_name(m)));
    add(&b, root, "plddts", plddts);
    add(&b, root, "ptms", ptms);
    add(&b, root, "ranking_confidences", confs);
    add(&b, root, "order", ord);
    return print_tree(root, &b, "ranking", text);
}

mf_status mf_ranking_json_write(const char *path, const mf_prediction_record *records, int n,
                                mf_ranking_metric m)
{
    MF_REQUIRE(path, "mf_ranking_json_write: NULL path");
    char *text = NULL;
    mf_status st = mf_ranking_json_format(records, n, m, &text);
    if (st != MF_OK) return mf_error_context(st, "writing %s", path);
    st = mf_write_file_atomic(path, text, strlen(text));
    mf_prediction_json_free(text);
    return st;
}

void mf_prediction_json_free(char *text)
{
    if (text) cJSON_free(text);
}
