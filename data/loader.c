/* The training data loader (see loader.h): epoch orders, per-sample hyperslab reads of a raw
 * feature file, and the prefetch thread. */
#include "data/loader.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"
#include "data/h5io.h"
#include "data/h5slab.h"
#include "protein/residue_constants.h"

/* Streams of the loader's seed (the pipeline's streams belong to each sample's own seed). */
enum { STREAM_EPOCH_ORDER = 1, STREAM_SAMPLE_SEED = 2 };

#define ERROR_CAP 1024

typedef struct {
    int64_t epoch; /* -1: empty */
    int64_t *perm; /* [num_chains] */
} order_cache;

struct mf_loader {
    mf_loader_options opts;
    char *path;
    hid_t file;
    int64_t num_chains;
    char **names;
    int name_count;
    order_cache sync_order; /* for mf_loader_sample / mf_loader_chain_at on the caller's thread */
    /* prefetch */
    bool thread_started;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool stop, slot_full;
    mf_processed_features slot;
    mf_loader_sample_info slot_info;
    mf_status slot_status;
    char slot_error[ERROR_CAP];
    int64_t worker_k; /* next sample the worker builds */
    int64_t next_k;   /* next sample mf_loader_next returns (without prefetch) */
    order_cache worker_order;
};

/* ---- orders and seeds ---- */

static mf_status epoch_order(const mf_loader *l, int64_t epoch, order_cache *c)
{
    if (c->epoch == epoch) return MF_OK;
    if (!c->perm) {
        c->perm = malloc((size_t)l->num_chains * sizeof *c->perm);
        if (!c->perm)
            return MF_ERROR(MF_ERR_NOMEM, "loader: order of %lld chains", (long long)l->num_chains);
    }
    for (int64_t i = 0; i < l->num_chains; i++) c->perm[i] = i;
    if (l->opts.shuffle) {
        mf_rng r = mf_rng_init(l->opts.seed, STREAM_EPOCH_ORDER);
        /* Each epoch its own block of the stream: index = epoch << 40 + draw. */
        r.index = (uint64_t)epoch << 40;
        for (int64_t i = l->num_chains - 1; i > 0; i--) {
            const int64_t j = (int64_t)mf_rng_next_below(&r, (uint64_t)i + 1);
            const int64_t t = c->perm[i];
            c->perm[i] = c->perm[j];
            c->perm[j] = t;
        }
    }
    c->epoch = epoch;
    return MF_OK;
}

int64_t mf_loader_chain_at(const mf_loader *l, int64_t epoch, int64_t position)
{
    order_cache c = {-1, NULL};
    if (position < 0 || position >= l->num_chains || epoch_order(l, epoch, &c) != MF_OK) {
        free(c.perm);
        return -1;
    }
    const int64_t chain = c.perm[position];
    free(c.perm);
    return chain;
}

uint64_t mf_loader_sample_seed(const mf_loader *l, int64_t epoch, int64_t position)
{
    const uint64_t k = (uint64_t)(epoch * l->num_chains + position);
    return (uint64_t)mf_rng_u32(l->opts.seed, STREAM_SAMPLE_SEED, 2 * k) << 32 |
           mf_rng_u32(l->opts.seed, STREAM_SAMPLE_SEED, 2 * k + 1);
}

int64_t mf_loader_num_chains(const mf_loader *l)
{
    return l->num_chains;
}

const char *mf_loader_chain_name(const mf_loader *l, int64_t chain_index)
{
    return chain_index >= 0 && chain_index < l->num_chains ? l->names[chain_index] : NULL;
}

/* ---- one chain's datasets ---- */

typedef struct {
    int64_t N, S, T;
    bool has_structure, has_templates, template_one_hot, has_sum_probs, has_resolution;
    uint64_t chain_bytes;
} chain_shapes;

static void ds_name(char *buf, size_t cap, const char *group, const char *ds)
{
    snprintf(buf, cap, "%s/%s", group, ds);
}

/* Shape of group/ds; *present false when absent (and allowed). Adds its full size to bytes. */
static mf_status ds_info(hid_t f, const char *path, const char *group, const char *ds,
                         bool required, int want_ndim, int64_t *shape, bool *present,
                         uint64_t *bytes)
{
    char name[MF_LOADER_NAME_CAP + 64];
    ds_name(name, sizeof name, group, ds);
    if (!mf_h5_exists(f, name)) {
        if (present) *present = false;
        if (required)
            return MF_ERROR(MF_ERR_FORMAT, "%s: chain '%s' has no dataset '%s'", path, group, ds);
        return MF_OK;
    }
    int nd = 0;
    size_t es = 0;
    int64_t sh[MF_H5_MAX_DIMS];
    MF_TRY(mf_h5_dataset_info(f, path, name, &nd, sh, NULL, &es));
    if (want_ndim >= 0 && nd != want_ndim)
        return MF_ERROR(MF_ERR_FORMAT, "%s: dataset '%s' has %d dims, expected %d", path, name, nd,
                        want_ndim);
    uint64_t n = 1;
    for (int i = 0; i < nd; i++) {
        shape[i] = sh[i];
        n *= (uint64_t)sh[i];
    }
    if (present) *present = true;
    if (bytes) *bytes += n * es;
    return MF_OK;
}

static mf_status shape_error(const char *path, const char *group, const char *ds,
                             const int64_t *shape, int nd, const char *expect)
{
    char got[128] = "";
    size_t g = 0;
    for (int i = 0; i < nd && g < sizeof got; i++)
        g += (size_t)snprintf(got + g, sizeof got - g, i ? ", %lld" : "%lld", (long long)shape[i]);
    return MF_ERROR(MF_ERR_FORMAT, "%s: chain '%s': dataset '%s' has shape [%s], expected %s", path,
                    group, ds, got, expect);
}

static mf_status read_shapes(hid_t f, const char *path, const char *group, chain_shapes *cs)
{
    memset(cs, 0, sizeof *cs);
    int64_t sh[MF_H5_MAX_DIMS];
    uint64_t *b = &cs->chain_bytes;
    MF_TRY(ds_info(f, path, group, "aatype", true, 1, sh, NULL, b));
    const int64_t N = cs->N = sh[0];
    if (N < 1) return shape_error(path, group, "aatype", sh, 1, "[N >= 1]");
    MF_TRY(ds_info(f, path, group, "residue_index", true, 1, sh, NULL, b));
    if (sh[0] != N) return shape_error(path, group, "residue_index", sh, 1, "[N]");
    MF_TRY(ds_info(f, path, group, "msa", true, 2, sh, NULL, b));
    cs->S = sh[0];
    if (sh[1] != N || sh[0] < 1) return shape_error(path, group, "msa", sh, 2, "[S >= 1, N]");
    MF_TRY(ds_info(f, path, group, "deletion_matrix", true, 2, sh, NULL, b));
    if (sh[0] != cs->S || sh[1] != N)
        return shape_error(path, group, "deletion_matrix", sh, 2, "[S, N] (as msa)");
    bool pos = false, mask = false;
    MF_TRY(ds_info(f, path, group, "all_atom_positions", false, 3, sh, &pos, b));
    if (pos && (sh[0] != N || sh[1] != MF_ATOM37 || sh[2] != 3))
        return shape_error(path, group, "all_atom_positions", sh, 3, "[N, 37, 3]");
    MF_TRY(ds_info(f, path, group, "all_atom_mask", false, 2, sh, &mask, b));
    if (mask && (sh[0] != N || sh[1] != MF_ATOM37))
        return shape_error(path, group, "all_atom_mask", sh, 2, "[N, 37]");
    if (pos != mask)
        return MF_ERROR(MF_ERR_FORMAT,
                        "%s: chain '%s' has only one of all_atom_positions and "
                        "all_atom_mask",
                        path, group);
    cs->has_structure = pos;
    MF_TRY(ds_info(f, path, group, "resolution", false, 0, sh, &cs->has_resolution, b));
    bool ta = false;
    MF_TRY(ds_info(f, path, group, "template_aatype", false, -1, sh, &ta, b));
    if (!ta) return MF_OK;
    char name[MF_LOADER_NAME_CAP + 64];
    ds_name(name, sizeof name, group, "template_aatype");
    int nd = 0;
    MF_TRY(mf_h5_dataset_info(f, path, name, &nd, sh, NULL, NULL));
    /* int32 HHblits ids [T, N], or AF2's raw one-hot [T, N, 22] */
    if (!((nd == 2 && sh[1] == N) || (nd == 3 && sh[1] == N && sh[2] == MF_MSA_ALPHABET)))
        return shape_error(path, group, "template_aatype", sh, nd, "[T, N] or [T, N, 22]");
    cs->template_one_hot = nd == 3;
    const int64_t T = cs->T = sh[0];
    cs->has_templates = true;
    MF_TRY(ds_info(f, path, group, "template_all_atom_positions", true, 4, sh, NULL, b));
    if (sh[0] != T || sh[1] != N || sh[2] != MF_ATOM37 || sh[3] != 3)
        return shape_error(path, group, "template_all_atom_positions", sh, 4, "[T, N, 37, 3]");
    MF_TRY(ds_info(f, path, group, "template_all_atom_masks", true, 3, sh, NULL, b));
    if (sh[0] != T || sh[1] != N || sh[2] != MF_ATOM37)
        return shape_error(path, group, "template_all_atom_masks", sh, 3, "[T, N, 37]");
    MF_TRY(ds_info(f, path, group, "template_sum_probs", false, 2, sh, &cs->has_sum_probs, b));
    if (cs->has_sum_probs && (sh[0] != T || sh[1] != 1))
        return shape_error(path, group, "template_sum_probs", sh, 2, "[T, 1]");
    return MF_OK;
}

/* Ascending indices -> maximal runs of consecutive indices. */
static int to_ranges(const int64_t *idx, int64_t n, mf_h5_range *out)
{
    int k = 0;
    for (int64_t i = 0; i < n; i++) {
        if (k > 0 && out[k - 1].start + out[k - 1].count == idx[i])
            out[k - 1].count++;
        else
            out[k++] = (mf_h5_range){idx[i], 1};
    }
    return k;
}

static int cmp_i64(const void *a, const void *b)
{
    const int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Reads residues [w0, w0 + wn) of every per-residue dataset, all MSA rows of those columns, the
 * deletions of rows `kept` (NULL: all), and templates `tids` (ascending; NULL: all). */
static mf_status read_window(mf_loader *l, const char *group, const chain_shapes *cs, int64_t w0,
                             int64_t wn, const int64_t *kept, int64_t num_kept, const int64_t *tids,
                             int64_t num_t, mf_raw_chain *raw, mf_h5_read_stats *stats)
{
    memset(raw, 0, sizeof *raw);
    const char *path = l->path;
    hid_t f = l->file;
    const int64_t S = cs->S;
    char name[MF_LOADER_NAME_CAP + 64];
    mf_status st = MF_OK;
    mf_h5_range *rows = NULL, *trs = NULL;
    float *del = NULL, *onehot = NULL;
    raw->chain_length = cs->N;
    raw->first_residue = w0;
    raw->num_res = wn;
    raw->num_seq = S;
    raw->aatype = malloc((size_t)wn * sizeof *raw->aatype);
    raw->residue_index = malloc((size_t)wn * sizeof *raw->residue_index);
    raw->msa = malloc((size_t)(S * wn));
    raw->deletion_matrix = calloc((size_t)(S * wn), sizeof *raw->deletion_matrix);
    if (!kept) num_kept = S;
    rows = malloc((size_t)(num_kept > 0 ? num_kept : 1) * sizeof *rows);
    del = malloc((size_t)(num_kept * wn > 0 ? num_kept * wn : 1) * sizeof *del);
    if (!raw->aatype || !raw->residue_index || !raw->msa || !raw->deletion_matrix || !rows ||
        !del) {
        st = MF_ERROR(MF_ERR_NOMEM, "%s: chain '%s': %lld MSA rows x %lld residues", path, group,
                      (long long)S, (long long)wn);
        goto cleanup;
    }
    const mf_h5_range win = {w0, wn};
    const mf_h5_dim_select res1[1] = {{1, &win}};
    ds_name(name, sizeof name, group, "aatype");
    MF_TRY_GOTO(mf_h5_read_select(f, path, name, MF_I32, 1, res1, raw->aatype, stats));
    ds_name(name, sizeof name, group, "residue_index");
    MF_TRY_GOTO(mf_h5_read_select(f, path, name, MF_I32, 1, res1, raw->residue_index, stats));
    const mf_h5_dim_select msa_sel[2] = {{0, NULL}, {1, &win}};
    ds_name(name, sizeof name, group, "msa");
    MF_TRY_GOTO(mf_h5_read_select(f, path, name, MF_I8, 2, msa_sel, raw->msa, stats));
    int nr = 0;
    if (kept) {
        nr = to_ranges(kept, num_kept, rows);
    } else {
        rows[0] = (mf_h5_range){0, S};
        nr = 1;
    }
    const mf_h5_dim_select del_sel[2] = {{nr, rows}, {1, &win}};
    ds_name(name, sizeof name, group, "deletion_matrix");
    MF_TRY_GOTO(mf_h5_read_select(f, path, name, MF_F32, 2, del_sel, del, stats));
    for (int64_t k = 0; k < num_kept; k++) {
        const int64_t s = kept ? kept[k] : k;
        memcpy(raw->deletion_matrix + s * wn, del + k * wn, (size_t)wn * sizeof *del);
    }
    if (cs->has_structure) {
        raw->all_atom_positions = malloc((size_t)(wn * MF_ATOM37 * 3) * sizeof(float));
        raw->all_atom_mask = malloc((size_t)(wn * MF_ATOM37) * sizeof(float));
        if (!raw->all_atom_positions || !raw->all_atom_mask) {
            st = MF_ERROR(MF_ERR_NOMEM, "%s: chain '%s': atoms of %lld residues", path, group,
                          (long long)wn);
            goto cleanup;
        }
        const mf_h5_dim_select a3[3] = {{1, &win}, {0, NULL}, {0, NULL}};
        ds_name(name, sizeof name, group, "all_atom_positions");
        MF_TRY_GOTO(
            mf_h5_read_select(f, path, name, MF_F32, 3, a3, raw->all_atom_positions, stats));
        ds_name(name, sizeof name, group, "all_atom_mask");
        MF_TRY_GOTO(mf_h5_read_select(f, path, name, MF_F32, 2, a3, raw->all_atom_mask, stats));
    }
    if (cs->has_resolution) {
        ds_name(name, sizeof name, group, "resolution");
        MF_TRY_GOTO(mf_h5_read_select(f, path, name, MF_F32, 0, NULL, &raw->resolution, stats));
    }
    if (!cs->has_templates) goto cleanup;
    if (!tids) num_t = cs->T;
    raw->num_templates = num_t;
    if (num_t == 0) goto cleanup;
    trs = malloc((size_t)num_t * sizeof *trs);
    raw->template_ids = malloc((size_t)num_t * sizeof *raw->template_ids);
    raw->template_aatype = malloc((size_t)(num_t * wn) * sizeof *raw->template_aatype);
    raw->template_all_atom_positions = malloc((size_t)(num_t * wn * MF_ATOM37 * 3) * 4);
    raw->template_all_atom_masks = malloc((size_t)(num_t * wn * MF_ATOM37) * 4);
    if (cs->has_sum_probs) raw->template_sum_probs = malloc((size_t)num_t * sizeof(float));
    if (!trs || !raw->template_ids || !raw->template_aatype || !raw->template_all_atom_positions ||
        !raw->template_all_atom_masks || (cs->has_sum_probs && !raw->template_sum_probs)) {
        st =
            MF_ERROR(MF_ERR_NOMEM, "%s: chain '%s': %lld templates", path, group, (long long)num_t);
        goto cleanup;
    }
    for (int64_t t = 0; t < num_t; t++) raw->template_ids[t] = tids ? tids[t] : t;
    const int ntr = to_ranges(raw->template_ids, num_t, trs);
    const mf_h5_dim_select t4[4] = {{ntr, trs}, {1, &win}, {0, NULL}, {0, NULL}};
    ds_name(name, sizeof name, group, "template_all_atom_positions");
    MF_TRY_GOTO(
        mf_h5_read_select(f, path, name, MF_F32, 4, t4, raw->template_all_atom_positions, stats));
    ds_name(name, sizeof name, group, "template_all_atom_masks");
    MF_TRY_GOTO(
        mf_h5_read_select(f, path, name, MF_F32, 3, t4, raw->template_all_atom_masks, stats));
    ds_name(name, sizeof name, group, "template_aatype");
    if (cs->template_one_hot) {
        /* AF2's raw one-hot: fix_templates_aatype takes the argmax (first maximum). */
        onehot = malloc((size_t)(num_t * wn * MF_MSA_ALPHABET) * sizeof *onehot);
        if (!onehot) {
            st = MF_ERROR(MF_ERR_NOMEM, "%s: chain '%s': template one-hot", path, group);
            goto cleanup;
        }
        MF_TRY_GOTO(mf_h5_read_select(f, path, name, MF_F32, 3, t4, onehot, stats));
        for (int64_t i = 0; i < num_t * wn; i++) {
            int best = 0;
            for (int a = 1; a < MF_MSA_ALPHABET; a++)
                if (onehot[i * MF_MSA_ALPHABET + a] > onehot[i * MF_MSA_ALPHABET + best]) best = a;
            raw->template_aatype[i] = best;
        }
    } else {
        MF_TRY_GOTO(mf_h5_read_select(f, path, name, MF_I32, 2, t4, raw->template_aatype, stats));
    }
    if (cs->has_sum_probs) {
        const mf_h5_dim_select t2[2] = {{ntr, trs}, {0, NULL}};
        ds_name(name, sizeof name, group, "template_sum_probs");
        MF_TRY_GOTO(
            mf_h5_read_select(f, path, name, MF_F32, 2, t2, raw->template_sum_probs, stats));
    }
cleanup:
    free(rows);
    free(trs);
    free(del);
    free(onehot);
    if (st != MF_OK) mf_raw_chain_free(raw);
    return st;
}

static uint64_t processed_bytes(const mf_processed_features *f)
{
    uint64_t b = 0;
    for (int i = 0; i < f->num_features; i++)
        b += (uint64_t)mf_h5_array_numel(&f->features[i].array) *
             mf_dtype_size(f->features[i].array.dtype);
    return b;
}

/* Sample k = (epoch, position): the plan from the chain's shapes, the plan's hyperslabs, the
 * pipeline. */
static mf_status build_sample(mf_loader *l, int64_t epoch, int64_t position, order_cache *oc,
                              mf_processed_features *out, mf_loader_sample_info *info)
{
    mf_processed_init(out);
    memset(info, 0, sizeof *info);
    MF_REQUIRE(epoch >= 0 && position >= 0 && position < l->num_chains,
               "loader: sample (epoch %lld, position %lld) of %lld chains", (long long)epoch,
               (long long)position, (long long)l->num_chains);
    MF_TRY(epoch_order(l, epoch, oc));
    const int64_t chain = oc->perm[position];
    const char *group = l->names[chain];
    info->epoch = epoch;
    info->position = position;
    info->chain_index = chain;
    info->seed = mf_loader_sample_seed(l, epoch, position);
    snprintf(info->chain, sizeof info->chain, "%s", group);
    chain_shapes cs;
    MF_TRY(read_shapes(l->file, l->path, group, &cs));
    if (l->opts.pipeline.supervised && !cs.has_structure)
        return MF_ERROR(MF_ERR_FORMAT, "%s: chain '%s' has no structure (training needs one)",
                        l->path, group);
    mf_sample_plan plan;
    MF_TRY(mf_sample_plan_make(&l->opts.pipeline, cs.N, cs.S, cs.has_templates ? cs.T : 0,
                               info->seed, &plan));
    int64_t w0, wn;
    mf_sample_plan_residue_window(&plan, &w0, &wn);
    int64_t tids[MF_PIPELINE_MAX_TEMPLATES];
    memcpy(tids, plan.template_ids, (size_t)plan.num_templates * sizeof *tids);
    qsort(tids, (size_t)plan.num_templates, sizeof *tids, cmp_i64);
    mf_raw_chain raw;
    mf_h5_read_stats stats = {0, 0};
    mf_status st = read_window(l, group, &cs, w0, wn, plan.kept_rows, plan.num_kept, tids,
                               plan.num_templates, &raw, &stats);
    if (st == MF_OK) st = mf_pipeline_process(&raw, &plan, &l->opts.pipeline, out);
    if (st != MF_OK) mf_error_context(st, "%s: chain '%s'", l->path, group);
    info->chain_length = cs.N;
    info->crop_start = plan.crop_start;
    info->crop_size = plan.crop_size;
    info->num_seq = cs.S;
    info->num_kept_rows = plan.num_kept;
    info->num_templates = plan.num_templates;
    info->bytes_read = stats.bytes;
    info->chain_bytes = cs.chain_bytes;
    info->sample_bytes = processed_bytes(out);
    mf_raw_chain_free(&raw);
    mf_sample_plan_free(&plan);
    return st;
}

mf_status mf_loader_read_chain(mf_loader *l, int64_t chain_index, mf_raw_chain *out)
{
    memset(out, 0, sizeof *out);
    MF_REQUIRE(chain_index >= 0 && chain_index < l->num_chains, "loader: chain %lld of %lld",
               (long long)chain_index, (long long)l->num_chains);
    const char *group = l->names[chain_index];
    chain_shapes cs;
    MF_TRY(read_shapes(l->file, l->path, group, &cs));
    return read_window(l, group, &cs, 0, cs.N, NULL, 0, NULL, 0, out, NULL);
}

mf_status mf_loader_sample(mf_loader *l, int64_t epoch, int64_t position,
                           mf_processed_features *out, mf_loader_sample_info *info)
{
    mf_loader_sample_info dummy;
    return build_sample(l, epoch, position, &l->sync_order, out, info ? info : &dummy);
}

/* ---- prefetch thread ---- */

static void *worker_main(void *arg)
{
    mf_loader *l = arg;
    mf_h5_quiet(); /* HDF5's error printing is per thread */
    for (;;) {
        pthread_mutex_lock(&l->mu);
        while (!l->stop && l->slot_full) pthread_cond_wait(&l->cv, &l->mu);
        if (l->stop) {
            pthread_mutex_unlock(&l->mu);
            break;
        }
        const int64_t k = l->worker_k++;
        pthread_mutex_unlock(&l->mu);

        mf_processed_features f;
        mf_loader_sample_info info;
        const mf_status st =
            build_sample(l, k / l->num_chains, k % l->num_chains, &l->worker_order, &f, &info);

        pthread_mutex_lock(&l->mu);
        l->slot = f;
        l->slot_info = info;
        l->slot_status = st;
        snprintf(l->slot_error, sizeof l->slot_error, "%s", st != MF_OK ? mf_last_error() : "");
        l->slot_full = true;
        pthread_cond_broadcast(&l->cv);
        pthread_mutex_unlock(&l->mu);
    }
    return NULL;
}

mf_status mf_loader_next(mf_loader *l, mf_processed_features *out, mf_loader_sample_info *info)
{
    mf_loader_sample_info dummy;
    if (!info) info = &dummy;
    if (!l->thread_started) {
        const int64_t k = l->next_k++;
        return build_sample(l, k / l->num_chains, k % l->num_chains, &l->sync_order, out, info);
    }
    pthread_mutex_lock(&l->mu);
    while (!l->slot_full) pthread_cond_wait(&l->cv, &l->mu);
    *out = l->slot;
    *info = l->slot_info;
    const mf_status st = l->slot_status;
    char msg[ERROR_CAP];
    memcpy(msg, l->slot_error, sizeof msg);
    mf_processed_init(&l->slot);
    l->slot_full = false;
    pthread_cond_broadcast(&l->cv);
    pthread_mutex_unlock(&l->mu);
    if (st != MF_OK) return mf_error(st, __FILE__, __LINE__, "loader thread: %s", msg);
    return MF_OK;
}

/* ---- open / close ---- */

mf_status mf_loader_open(mf_loader **out, const mf_loader_options *opts)
{
    *out = NULL;
    MF_REQUIRE(opts && opts->path, "mf_loader_open: no path");
    mf_loader *l = calloc(1, sizeof *l);
    if (!l) return MF_ERROR(MF_ERR_NOMEM, "loader: out of memory");
    l->opts = *opts;
    l->file = H5I_INVALID_HID;
    l->sync_order.epoch = l->worker_order.epoch = -1;
    mf_status st = MF_OK;
    l->path = strdup(opts->path);
    if (!l->path) {
        st = MF_ERROR(MF_ERR_NOMEM, "loader: out of memory");
        goto cleanup;
    }
    l->opts.path = l->path;
    MF_TRY_GOTO(mf_h5_open_read(l->path, &l->file));
    char *fmt = NULL;
    st = mf_h5_read_attr_string(l->file, ".", "format", &fmt);
    if (st != MF_OK || strcmp(fmt, MF_RAW_FEATURES_FORMAT) != 0) {
        st = MF_ERROR(MF_ERR_FORMAT,
                      "%s: not a memfold raw feature file (format '%s', expected "
                      "'%s')",
                      l->path, fmt ? fmt : "none", MF_RAW_FEATURES_FORMAT);
        free(fmt);
        goto cleanup;
    }
    free(fmt);
    double version = 0;
    st = mf_h5_read_attr_double(l->file, ".", "schema_version", &version);
    if (st != MF_OK || version != MF_RAW_FEATURES_SCHEMA_VERSION) {
        st = MF_ERROR(MF_ERR_FORMAT, "%s: schema_version %g, this loader reads %d", l->path,
                      version, MF_RAW_FEATURES_SCHEMA_VERSION);
        goto cleanup;
    }
    MF_TRY_GOTO(mf_h5_list(l->file, "/", &l->names, &l->name_count));
    l->num_chains = l->name_count;
    if (l->num_chains == 0) {
        st = MF_ERROR(MF_ERR_FORMAT, "%s: no chains", l->path);
        goto cleanup;
    }
    /* Fail early on a bad option set, before the thread starts. */
    mf_sample_plan probe;
    MF_TRY_GOTO(mf_sample_plan_make(&l->opts.pipeline, 1, 1, 0, 0, &probe));
    mf_sample_plan_free(&probe);
    if (opts->prefetch) {
        pthread_mutex_init(&l->mu, NULL);
        pthread_cond_init(&l->cv, NULL);
        if (pthread_create(&l->thread, NULL, worker_main, l) != 0) {
            pthread_cond_destroy(&l->cv);
            pthread_mutex_destroy(&l->mu);
            st = MF_ERROR(MF_ERR_BACKEND, "loader: cannot start the prefetch thread");
            goto cleanup;
        }
        l->thread_started = true;
    }
    *out = l;
    return MF_OK;
cleanup:
    mf_loader_close(l);
    return st;
}

void mf_loader_close(mf_loader *l)
{
    if (!l) return;
    if (l->thread_started) {
        pthread_mutex_lock(&l->mu);
        l->stop = true;
        pthread_cond_broadcast(&l->cv);
        pthread_mutex_unlock(&l->mu);
        pthread_join(l->thread, NULL);
        pthread_cond_destroy(&l->cv);
        pthread_mutex_destroy(&l->mu);
        if (l->slot_full) mf_processed_free(&l->slot);
    }
    if (l->file >= 0) H5Fclose(l->file);
    mf_h5_free_names(l->names, l->name_count);
    free(l->sync_order.perm);
    free(l->worker_order.perm);
    free(l->path);
    free(l);
}
