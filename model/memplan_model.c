/* The memory model of whole runs (memplan_model.h). */
#include "model/memplan_model.h"

#include <stdlib.h>
#include <string.h>

#include "data/loader.h"
#include "data/pipeline.h"
#include "data/processed.h"
#include "model/alphafold.h"
#include "model/alphafold_memplan.h"
#include "model/train_step.h"

mf_memplan_shape mf_memplan_default_shape(const mf_config *cfg, int64_t n_res, bool training)
{
    mf_memplan_shape s = {
        .n_res = n_res,
        .n_seq = cfg->data.max_msa_clusters,
        .n_extra = cfg->data.max_extra_msa,
        .n_templ = cfg->template_embedding.enabled ? cfg->data.max_templates : 0,
        .iterations = training ? 1 : cfg->recycling.num_recycle + 1,
        .training = training,
        .all_heads = false,
        .dropout = training,
    };
    return s;
}

/* Rows of feature `name` (0 when absent). */
static int64_t feature_rows(const mf_processed_features *f, const char *name)
{
    mf_tensor t;
    if (!mf_processed_find(f, name) || mf_processed_tensor(f, name, 0, &t) != MF_OK) return 0;
    return t.ndim >= 1 ? t.shape[0] : 0;
}

mf_memplan_shape mf_memplan_shape_of_features(const mf_config *cfg, const mf_processed_features *f,
                                              bool training, int64_t iterations)
{
    mf_memplan_shape sh = mf_memplan_default_shape(cfg, feature_rows(f, "aatype"), training);
    sh.n_seq = feature_rows(f, "msa_feat");
    sh.n_extra = feature_rows(f, "extra_msa");
    sh.n_templ = cfg->template_embedding.enabled ? feature_rows(f, "template_aatype") : 0;
    sh.iterations = iterations > 0 ? iterations : f->num_iterations;
    return sh;
}

mf_status mf_memplan_training_shape(const char *data_path, const mf_config *cfg,
                                    mf_memplan_shape *out)
{
    mf_loader_options lo = {.path = data_path,
                            .seed = 0,
                            .pipeline = mf_pipeline_options_training(cfg),
                            .shuffle = false,
                            .prefetch = false};
    mf_loader *l = NULL;
    MF_TRY(mf_loader_open(&l, &lo));
    mf_status st = MF_OK;
    const mf_data_config *d = &cfg->data;
    *out = mf_memplan_default_shape(cfg, 0, true);
    out->n_seq = out->n_extra = out->n_templ = 0;
    out->iterations = cfg->recycling.num_recycle + 1;
    for (int64_t c = 0; c < mf_loader_num_chains(l); c++) {
        mf_raw_chain raw = {0};
        st = mf_loader_read_chain(l, c, &raw);
        if (st != MF_OK) break;
        const int64_t nres = raw.chain_length < d->crop_size ? raw.chain_length : d->crop_size;
        int64_t nseq = raw.num_seq < d->max_msa_clusters ? raw.num_seq : d->max_msa_clusters;
        int64_t nextra = raw.num_seq - nseq, ntempl = raw.num_templates;
        if (nextra > d->max_extra_msa) nextra = d->max_extra_msa;
        if (lo.pipeline.pad_msa_rows) {
            nseq = d->max_msa_clusters;
            nextra = d->max_extra_msa;
        }
        if (ntempl > d->max_templates) ntempl = d->max_templates;
        if (!cfg->template_embedding.enabled) ntempl = 0;
        if (nres > out->n_res) out->n_res = nres;
        if (nseq > out->n_seq) out->n_seq = nseq;
        if (nextra > out->n_extra) out->n_extra = nextra;
        if (ntempl > out->n_templ) out->n_templ = ntempl;
        mf_raw_chain_free(&raw);
    }
    mf_loader_close(l);
    if (st == MF_OK && out->n_res < 1)
        st = MF_ERROR(MF_ERR_FORMAT, "%s: no chain to train on", data_path);
    return st;
}

static mf_status count_params(const mf_config *cfg, int64_t *count)
{
    mf_param_expect_list l = {0};
    MF_TRY(mf_alphafold_expected_params(cfg, &l));
    int64_t n = 0;
    for (int i = 0; i < l.count; i++) {
        int64_t k = 1;
        for (int d = 0; d < l.items[i].ndim; d++) k *= l.items[i].shape[d];
        n += k;
    }
    mf_param_expect_list_free(&l);
    *count = n;
    return MF_OK;
}

/* The host arrays of one example's features (alphafold.c load_features; training adds the
 * ground truth of processed.h: positions, masks, frames, torsions of 37/14 atoms). */
static size_t feature_bytes(const mf_alphafold_model *m, const mf_memplan_shape *sh)
{
    const int64_t N = sh->n_res, S = sh->n_seq > 0 ? sh->n_seq : 1, E = sh->n_extra,
                  T = m->templates ? sh->n_templ : 0;
    int64_t n = N * (1 + 1 + 1 + m->input_dims.target_feat_dim);
    n += S * N * (m->input_dims.msa_feat_dim + 1);
    n += E * N * 4;
    if (T > 0) n += T * (N * (1 + 37 * 3 + 37 + 3 + 1 + 7 * 2 * 2 + 7) + 1);
    if (sh->training) n += N * (37 * 3 + 37 + 14 * 3 + 14 + 8 * 12 + 7 * 2 * 3 + 7 + 4);
    return (size_t)n * sizeof(float);
}

mf_status mf_memplan_evaluate(const mf_ctx *query_ctx, const mf_config *cfg, const mf_policy *p,
                              mf_device device, const mf_memplan_shape *shape,
                              mf_memplan_result *out)
{
    memset(out, 0, sizeof *out);
    MF_REQUIRE(shape->n_res >= 1, "memory model: %lld residues", (long long)shape->n_res);
    MF_REQUIRE(shape->iterations >= 1, "memory model: %lld iterations",
               (long long)shape->iterations);
    mf_alphafold_model *m = calloc(1, sizeof *m);
    if (!m) return MF_ERROR(MF_ERR_NOMEM, "memory model: model dims");
    mf_status st = mf_alphafold_model_dims(m, cfg);
    if (st != MF_OK) {
        free(m);
        return st;
    }
    /* s: the arena of `device`; on CUDA the trunk's, with the host's in h */
    mf_memsim s, h;
    const bool gpu = device != MF_DEV_CPU;
    mf_memsim_init(&s, query_ctx, device, p);
    mf_memsim_init(&h, query_ctx, MF_DEV_CPU, p);
    if (gpu && p->offload) s.offload_to = &h;
    mf_memsim *host = gpu ? &h : &s;
    if (shape->training) {
        mf_train_step_plan_options o = mf_train_step_plan_default_options();
        o.dropout = shape->dropout;
        mf_train_step_plan_split(host, &s, m, shape->n_res, shape->n_seq, shape->n_extra,
                                 shape->n_templ, shape->iterations, &o);
    } else {
        mf_alphafold_plan_inference_split(host, &s, m, shape);
    }
    st = s.status != MF_OK ? s.status : h.status;
    if (st == MF_OK) st = count_params(cfg, &out->num_params);
    if (st == MF_OK) {
        out->arena_peak = s.peak;
        memcpy(out->kind_at_peak, s.kind_at_peak, sizeof out->kind_at_peak);
        out->param_bytes = (size_t)out->num_params * sizeof(float);
        /* training: gradients, Adam's m and v, the EMA copy (train/optimizer.c) */
        out->state_bytes = mf_model_state_bytes(cfg, shape->training);
        out->feature_bytes = feature_bytes(m, shape);
        out->fixed_bytes = mf_memplan_fixed_device_bytes(device);
        out->total = out->arena_peak + out->state_bytes + out->feature_bytes + out->fixed_bytes;
        if (gpu) {
            /* the GPU holds the parameters' mirror (and the trunk's gradients in training); the
             * host its arena, the model state and the features */
            const size_t mirror = mf_model_state_bytes(cfg, false) * (shape->training ? 2 : 1);
            out->host_arena_peak = h.peak;
            out->host_total = h.peak + out->state_bytes + out->feature_bytes;
            out->total = out->arena_peak + mirror + out->fixed_bytes;
        }
    }
    free(m);
    return st;
}

mf_status mf_memplan_max_nres(const mf_ctx *query_ctx, const mf_config *cfg, const mf_policy *p,
                              mf_device device, const mf_memplan_shape *shape, size_t budget,
                              int64_t limit, int64_t *n_max, mf_memplan_result *at_max)
{
    *n_max = 0;
    mf_memplan_shape sh = *shape;
    mf_memplan_result r;
    int64_t lo = 0, hi = limit; /* lo fits (0 trivially), answer in [lo, hi] */
    while (lo < hi) {
        int64_t mid = lo + (hi - lo + 1) / 2;
        sh.n_res = mid;
        MF_TRY(mf_memplan_evaluate(query_ctx, cfg, p, device, &sh, &r));
        if (r.total <= budget) {
            lo = mid;
            if (at_max) *at_max = r;
        } else {
            hi = mid - 1;
        }
    }
    *n_max = lo;
    return MF_OK;
}

/* Candidate chunk sizes, largest first; 0 = off. */
static const int64_t chunk_candidates[] = {0,  4096, 2048, 1024, 512, 256, 128,
                                           64, 32,   16,   8,    4,   2,   1};
#define NCAND ((int)(sizeof chunk_candidates / sizeof chunk_candidates[0]))

/* op == MF_CHUNK_NUM_OPS stands for the global chunk_size (modules outside the list). */
static void set_op(mf_policy *p, int op, int64_t c)
{
    if (op == MF_CHUNK_NUM_OPS)
        p->chunk_size = c;
    else
        p->op_chunk[op] = c > 0 ? c : -1;
}

static int64_t get_op(const mf_policy *p, int op)
{
    return op == MF_CHUNK_NUM_OPS ? p->chunk_size : mf_policy_op_chunk(p, (mf_chunk_op)op);
}

static const char *op_label(int op)
{
    return op == MF_CHUNK_NUM_OPS ? "other modules (chunk)" : mf_chunk_op_name((mf_chunk_op)op);
}

mf_status mf_memplan_auto_chunk(const mf_ctx *query_ctx, const mf_config *cfg, mf_policy *p,
                                mf_device device, const mf_memplan_shape *shape, size_t budget,
                                FILE *report)
{
    mf_memplan_result r;
    mf_policy small = *p;
    for (int op = 0; op <= MF_CHUNK_NUM_OPS; op++) set_op(&small, op, chunk_candidates[NCAND - 1]);
    MF_TRY(mf_memplan_evaluate(query_ctx, cfg, &small, device, shape, &r));
    char b1[32], b2[32];
    if (r.total > budget)
        return MF_ERROR(MF_ERR_NOMEM,
                        "--chunk auto: %lld residues need %s even with every chunk at 1 row, "
                        "over the budget of %s",
                        (long long)shape->n_res, mf_format_bytes(r.total, b1, sizeof b1),
                        mf_format_bytes(budget, b2, sizeof b2));
    mf_policy chosen = small;
    for (int op = 0; op <= MF_CHUNK_NUM_OPS; op++) {
        mf_policy trial = small;
        for (int c = 0; c < NCAND; c++) {
            set_op(&trial, op, chunk_candidates[c]);
            MF_TRY(mf_memplan_evaluate(query_ctx, cfg, &trial, device, shape, &r));
            if (r.total <= budget || c == NCAND - 1) {
                set_op(&chosen, op, chunk_candidates[c]);
                break;
            }
        }
    }
    /* the choices were made one module at a time; tighten the largest until the whole fits */
    for (int guard = 0; guard < 64; guard++) {
        MF_TRY(mf_memplan_evaluate(query_ctx, cfg, &chosen, device, shape, &r));
        if (r.total <= budget) break;
        int worst = -1;
        int64_t wc = 0;
        for (int op = 0; op <= MF_CHUNK_NUM_OPS; op++) {
            int64_t c = get_op(&chosen, op);
            int64_t eff = c > 0 ? c : shape->n_res > shape->n_seq ? shape->n_res : shape->n_seq;
            if (eff > wc && c != 1) worst = op, wc = eff;
        }
        if (worst < 0) break;
        set_op(&chosen, worst, wc / 2 > 0 ? wc / 2 : 1);
    }
    if (r.total > budget)
        return MF_ERROR(MF_ERR_NOMEM, "--chunk auto: no per-module choice fits %s",
                        mf_format_bytes(budget, b2, sizeof b2));
    *p = chosen;
    if (report) {
        fprintf(report, "chunk auto within %s (predicted total %s):\n",
                mf_format_bytes(budget, b1, sizeof b1), mf_format_bytes(r.total, b2, sizeof b2));
        for (int op = 0; op <= MF_CHUNK_NUM_OPS; op++) {
            int64_t c = get_op(&chosen, op);
            if (c > 0)
                fprintf(report, "  %-34s %lld rows\n", op_label(op), (long long)c);
            else
                fprintf(report, "  %-34s off\n", op_label(op));
        }
        fprintf(report, "predicted activation arena peak %s (%zu bytes)\n",
                mf_format_bytes(r.arena_peak, b1, sizeof b1), r.arena_peak);
    }
    return MF_OK;
}
