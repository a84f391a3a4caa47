/* The training loop (see trainer.h). */
#include "train/trainer.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/context.h"
#include "core/rng.h"
#include "data/h5io.h"
#include "data/loader.h"
#include "data/pipeline.h"
#include "eval/lddt.h"
#include "model/alphafold.h"
#include "model/config.h"
#include "model/loss.h"
#include "model/memplan_model.h"
#include "model/param_store.h"
#include "model/train_step.h"
#include "train/checkpoint.h"
#include "train/optimizer.h"
#include "train/train_log.h"

/* Streams of the run seed (core/rng.h), one per use, so no two uses share random numbers. */
enum { STREAM_INIT = 0x74720001, STREAM_LOADER, STREAM_DROPOUT, STREAM_VALIDATION };

/* Checkpoint rng_counters slots (trainer.h). */
enum { CTR_SAMPLE = 0, CTR_PER_STEP = 1, CTR_DROPOUT = 2 };

static uint64_t derive_seed(uint64_t seed, uint64_t stream, uint64_t index)
{
    return (uint64_t)mf_rng_u32(seed, stream, 2 * index) << 32 |
           mf_rng_u32(seed, stream, 2 * index + 1);
}

mf_trainer_options mf_trainer_default_options(void)
{
    return (mf_trainer_options){
        .total_steps = 100,
        .checkpoint_every = 0,
        .keep = 3,
        .micro_batches = 1,
        .dropout = true,
        .prefetch = true,
        .arena_bytes = (size_t)4 << 30,
        .progress_every = 10,
    };
}

/* ---- samples of one step, built on a background thread ---------------------------------- */

typedef struct {
    mf_loader *loader;
    int64_t num_chains;
    int64_t first_k, count;      /* global samples first_k .. first_k + count - 1 */
    mf_processed_features *f;    /* [count] */
    mf_loader_sample_info *info; /* [count] */
    mf_status st;
    char error[2048];
    pthread_t thread;
    bool running, filled;
} sample_batch;

static void batch_build(sample_batch *b)
{
    b->st = MF_OK;
    for (int64_t i = 0; i < b->count; i++) {
        const int64_t k = b->first_k + i;
        const mf_status st = mf_loader_sample(b->loader, k / b->num_chains, k % b->num_chains,
                                              &b->f[i], &b->info[i]);
        if (st != MF_OK) {
            b->st = st;
            snprintf(b->error, sizeof b->error, "sample %" PRId64 ": %s", k, mf_last_error());
            break;
        }
    }
}

static void *batch_thread(void *arg)
{
    mf_h5_quiet(); /* HDF5's error printing is per thread */
    batch_build(arg);
    return NULL;
}

static void batch_clear(sample_batch *b)
{
    for (int64_t i = 0; i < b->count; i++) mf_processed_free(&b->f[i]);
    b->filled = false;
}

static mf_status batch_alloc(sample_batch *b, mf_loader *l, int64_t count)
{
    memset(b, 0, sizeof *b);
    b->loader = l;
    b->num_chains = mf_loader_num_chains(l);
    b->count = count;
    b->f = calloc((size_t)count, sizeof *b->f);
    b->info = calloc((size_t)count, sizeof *b->info);
    if (!b->f || !b->info) return MF_ERROR(MF_ERR_NOMEM, "sample batch of %lld", (long long)count);
    for (int64_t i = 0; i < count; i++) mf_processed_init(&b->f[i]);
    return MF_OK;
}

/* Starts building samples first_k.. (on a thread when background, else now). */
static mf_status batch_start(sample_batch *b, int64_t first_k, bool background)
{
    batch_clear(b);
    b->first_k = first_k;
    b->filled = true;
    if (background && pthread_create(&b->thread, NULL, batch_thread, b) == 0) {
        b->running = true;
        return MF_OK;
    }
    batch_build(b);
    return MF_OK;
}

static mf_status batch_wait(sample_batch *b)
{
    if (b->running) {
        pthread_join(b->thread, NULL);
        b->running = false;
    }
    if (b->st != MF_OK) return mf_error(b->st, __FILE__, __LINE__, "loader: %s", b->error);
    return MF_OK;
}

static void batch_free(sample_batch *b)
{
    if (b->running) {
        pthread_join(b->thread, NULL);
        b->running = false;
    }
    if (b->f) batch_clear(b);
    free(b->f);
    free(b->info);
    memset(b, 0, sizeof *b);
}

/* ---- validation set ------------------------------------------------------------------------ */

typedef struct {
    char name[MF_LOADER_NAME_CAP];
    mf_processed_features f;
    int64_t n;
    double *ca;     /* [n, 3] true C-alpha positions */
    float *ca_mask; /* [n] */
} val_chain;

typedef struct {
    int count;
    val_chain *chains;
} val_set;

static void val_free(val_set *v)
{
    for (int i = 0; i < v->count; i++) {
        mf_processed_free(&v->chains[i].f);
        free(v->chains[i].ca);
        free(v->chains[i].ca_mask);
    }
    free(v->chains);
    memset(v, 0, sizeof *v);
}

/* Every chain of the file with a structure, whole (no crop), as inference sees it (the inference
 * pipeline with a fixed seed per chain, so every validation sees the same inputs), with its true
 * C-alpha positions. */
static mf_status val_load(val_set *v, const char *path, const mf_config *cfg, uint64_t seed,
                          FILE *out)
{
    memset(v, 0, sizeof *v);
    mf_loader_options lo = {.path = path,
                            .seed = seed,
                            .pipeline = mf_pipeline_options_inference(cfg),
                            .shuffle = false,
                            .prefetch = false};
    mf_loader *l = NULL;
    MF_TRY(mf_loader_open(&l, &lo));
    mf_status st = MF_OK;
    const int64_t nc = mf_loader_num_chains(l);
    v->chains = calloc((size_t)nc, sizeof *v->chains);
    if (!v->chains) {
        st = MF_ERROR(MF_ERR_NOMEM, "validation set of %lld chains", (long long)nc);
        goto cleanup;
    }
    for (int64_t c = 0; c < nc; c++) {
        mf_raw_chain raw;
        MF_TRY_GOTO(mf_loader_read_chain(l, c, &raw));
        if (!raw.all_atom_positions || !raw.all_atom_mask) {
            if (out)
                fprintf(out, "validation: %s has no structure, skipped\n",
                        mf_loader_chain_name(l, c));
            mf_raw_chain_free(&raw);
            continue;
        }
        val_chain *vc = &v->chains[v->count];
        snprintf(vc->name, sizeof vc->name, "%s", mf_loader_chain_name(l, c));
        vc->n = raw.num_res;
        vc->ca = malloc(sizeof(double) * (size_t)(3 * vc->n + 1));
        vc->ca_mask = malloc(sizeof(float) * (size_t)(vc->n + 1));
        mf_processed_init(&vc->f);
        v->count++;
        if (!vc->ca || !vc->ca_mask) {
            mf_raw_chain_free(&raw);
            st = MF_ERROR(MF_ERR_NOMEM, "validation chain %s", vc->name);
            goto cleanup;
        }
        for (int64_t i = 0; i < vc->n; i++) {
            for (int d = 0; d < 3; d++) vc->ca[3 * i + d] = raw.all_atom_positions[i * 111 + 3 + d];
            vc->ca_mask[i] = raw.all_atom_mask[i * 37 + 1];
        }
        st = mf_pipeline_run(&raw, &lo.pipeline, derive_seed(seed, STREAM_VALIDATION, (uint64_t)c),
                             &vc->f);
        mf_raw_chain_free(&raw);
        if (st != MF_OK) {
            mf_error_context(st, "validation %s: chain %s", path, vc->name);
            goto cleanup;
        }
    }
    if (v->count == 0) st = MF_ERROR(MF_ERR_FORMAT, "--val %s: no chain with a structure", path);
cleanup:
    mf_loader_close(l);
    if (st != MF_OK) val_free(v);
    return st;
}

/* Inference with the EMA weights on every validation chain; the means of lDDT-Ca (against the true
 * structure, AF2's 15 A inclusion radius) and of pLDDT. With a trunk context the trunk runs there
 * on tm (the caller has put the EMA weights into it). */
static mf_status validate(mf_ctx *ctx, const mf_alphafold_model *m, mf_ctx *tctx,
                          const mf_alphafold_model *tm, const val_set *v, double *lddt_ca,
                          double *plddt)
{
    double sum_lddt = 0, sum_plddt = 0;
    for (int c = 0; c < v->count; c++) {
        const val_chain *vc = &v->chains[c];
        mf_arena_mark_t mark = mf_arena_mark(ctx->arena);
        mf_alphafold_options ao = {.num_iterations = 0, .trunk_ctx = tctx, .trunk_model = tm};
        mf_alphafold_outputs out;
        mf_status st = mf_alphafold_inference(ctx, m, &vc->f, &ao, &out);
        double *pred = NULL;
        float *pmask = NULL;
        if (st == MF_OK && out.num_res != vc->n)
            st = MF_ERROR(MF_ERR_INVALID, "validation %s: %lld residues predicted, %lld true",
                          vc->name, (long long)out.num_res, (long long)vc->n);
        if (st == MF_OK) {
            pred = malloc(sizeof(double) * (size_t)(3 * vc->n + 1));
            pmask = malloc(sizeof(float) * (size_t)(vc->n + 1));
            if (!pred || !pmask) st = MF_ERROR(MF_ERR_NOMEM, "validation %s", vc->name);
        }
        if (st == MF_OK) {
            const float *x = out.final_atom_positions.data, *xm = out.final_atom_mask.data,
                        *pl = out.plddt.data;
            double s = 0;
            for (int64_t i = 0; i < vc->n; i++) {
                for (int d = 0; d < 3; d++) pred[3 * i + d] = x[i * 111 + 3 + d];
                pmask[i] = xm[i * 37 + 1];
                s += pl[i];
            }
            mf_lddt_result r;
            st = mf_lddt_ca(pred, pmask, vc->ca, vc->ca_mask, vc->n, MF_LDDT_CUTOFF, NULL, &r);
            if (st == MF_OK) {
                sum_lddt += r.lddt;
                sum_plddt += s / (double)vc->n;
            } else {
                mf_error_context(st, "validation %s", vc->name);
            }
        }
        free(pred);
        free(pmask);
        mf_arena_release(ctx->arena, mark);
        if (st != MF_OK) return st;
    }
    *lddt_ca = sum_lddt / v->count;
    *plddt = sum_plddt / v->count;
    return MF_OK;
}

/* ---- helpers -------------------------------------------------------------------------------- */

static mf_status make_dirs(const char *path)
{
    char buf[4096];
    int n = snprintf(buf, sizeof buf, "%s", path);
    if (n <= 0 || (size_t)n >= sizeof buf) return MF_ERROR(MF_ERR_INVALID, "run directory path");
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        if (mkdir(buf, 0777) != 0 && errno != EEXIST)
            return MF_ERROR(MF_ERR_IO, "cannot create %s: %s", buf, strerror(errno));
        *p = '/';
    }
    if (mkdir(buf, 0777) != 0 && errno != EEXIST)
        return MF_ERROR(MF_ERR_IO, "cannot create %s: %s", buf, strerror(errno));
    struct stat sb;
    if (stat(buf, &sb) != 0 || !S_ISDIR(sb.st_mode))
        return MF_ERROR(MF_ERR_IO, "%s is not a directory", buf);
    return MF_OK;
}

/* The model's configuration from the options (init: the --init parameters, or NULL). */
static mf_status options_config(const mf_trainer_options *o, const mf_param_store *init,
                                mf_config *cfg)
{
    if (init) {
        MF_TRY(mf_alphafold_config_for_params(init, o->config, o->structure_layers, cfg));
    } else {
        MF_TRY(mf_config_load(o->config ? o->config : "tiny", cfg));
        if (o->structure_layers > 0) cfg->structure_module.num_layers = o->structure_layers;
    }
    for (int i = 0; i < o->n_sets; i++) MF_TRY(mf_config_set_assignment(cfg, o->sets[i]));
    return mf_config_validate(cfg, o->config ? o->config : "configuration");
}

/* Copies the --init parameters into the store made from the configuration (its order is the
 * checkpoints' layout), checking names and shapes. */
static mf_status copy_params(const mf_param_store *dst, const mf_param_store *src,
                             const char *label)
{
    if (src->count != dst->count)
        return MF_ERROR(MF_ERR_FORMAT, "--init %s: %d parameter arrays, the configuration has %d",
                        label, src->count, dst->count);
    for (int i = 0; i < dst->count; i++) {
        const mf_tensor *d = &dst->entries[i].tensor;
        const mf_tensor *s = mf_param_store_find(src, dst->entries[i].name);
        if (!s) return MF_ERROR(MF_ERR_FORMAT, "--init %s: no %s", label, dst->entries[i].name);
        if (mf_tensor_numel(s) != mf_tensor_numel(d) || s->ndim != d->ndim)
            return MF_ERROR(MF_ERR_FORMAT, "--init %s: %s has the wrong shape", label,
                            dst->entries[i].name);
        for (int k = 0; k < d->ndim; k++)
            if (s->shape[k] != d->shape[k])
                return MF_ERROR(MF_ERR_FORMAT, "--init %s: %s has the wrong shape", label,
                                dst->entries[i].name);
        memcpy(d->data, s->data, mf_tensor_bytes(d));
    }
    return MF_OK;
}

static bool all_finite(const float *x, int64_t n)
{
    int bad = 0;
#pragma omp parallel for reduction(| : bad)
    for (int64_t i = 0; i < n; i++) bad |= !isfinite(x[i]);
    return !bad;
}

/* Nothing non-finite is ever written to a checkpoint: skipped steps leave the state untouched,
 * and this check guards the rest. */
static mf_status check_state_finite(const mf_optimizer *opt)
{
    for (int i = 0; i < opt->layout.count; i++)
        if (!all_finite(opt->param[i], opt->layout.numel[i]))
            return MF_ERROR(MF_ERR_NUMERIC, "parameter %s is not finite: no checkpoint written",
                            opt->params->entries[i].name);
    const int64_t n = opt->layout.total;
    if (!all_finite(opt->adam_m, n) || !all_finite(opt->adam_v, n) || !all_finite(opt->ema, n))
        return MF_ERROR(MF_ERR_NUMERIC, "optimizer state not finite: no checkpoint written");
    return MF_OK;
}

/* ---- the run -------------------------------------------------------------------------------- */

/* Log columns after the loss terms. */
enum { COL_UNSCALED = 0, COL_RECYCLES, COL_VAL_LDDT, COL_VAL_PLDDT, NUM_EXTRA_COLS };
static const char *const k_extra_cols[NUM_EXTRA_COLS] = {"unscaled_loss", "recycles", "val_lddt_ca",
                                                         "val_plddt"};

/* Per-step sums over examples (then over ranks). */
enum {
    SUM_TERMS = 0,
    SUM_UNSCALED = MF_LOSS_NUM_TERMS,
    SUM_TOTAL,
    SUM_ITERATIONS,
    SUM_NORM,
    SUM_CLIP_SCALE,
    NUM_SUMS
};

typedef struct {
    mf_config cfg;
    mf_param_store store, init, ema_views;
    mf_alphafold_model *m, *g, *m_ema;
    mf_grad_buffer gex, gacc;
    mf_optimizer opt;
    bool opt_ready;
    mf_loader *loader;
    val_set val;
    mf_arena arena;
    bool arena_ready;
    mf_ctx ctx;
    bool ctx_ready;
    /* the trunk on another context (options.trunk_ctx): parameters and gradients in its arena */
    mf_train_trunk *trunk;
    mf_ctx *tctx;
    mf_train_log log;
    bool log_open;
    sample_batch batches[2];
} run_state;

static void run_free(run_state *r)
{
    batch_free(&r->batches[0]);
    batch_free(&r->batches[1]);
    if (r->log_open) mf_train_log_close(&r->log);
    mf_train_trunk_free(r->trunk);
    free(r->trunk);
    /* the trunk context is the caller's: it keeps no pointer into this run's host arena */
    if (r->tctx) r->tctx->host_arena = NULL;
    if (r->ctx_ready) mf_ctx_destroy(&r->ctx);
    if (r->arena_ready) mf_arena_destroy(&r->arena);
    val_free(&r->val);
    mf_loader_close(r->loader);
    mf_param_store_free(&r->ema_views);
    if (r->opt_ready) mf_optimizer_free(&r->opt);
    mf_grad_buffer_free(&r->gex);
    mf_grad_buffer_free(&r->gacc);
    mf_param_store_free(&r->init);
    mf_param_store_free(&r->store);
    free(r->m);
    free(r->g);
    free(r->m_ema);
}

/* rank 0 finds the checkpoint; every rank gets its path. */
static mf_status find_resume(const mf_trainer_options *o, const mf_dist *d, FILE *out, char *path,
                             size_t cap, bool *found)
{
    struct {
        int32_t found;
        char path[4096];
    } msg;
    memset(&msg, 0, sizeof msg);
    mf_status st = MF_OK;
    if (d->rank == 0) {
        int removed = 0;
        st = mf_checkpoint_remove_stale_temps(o->run_dir, &removed);
        if (st == MF_OK && removed && out)
            fprintf(out, "removed %d temporary checkpoint file(s) of a killed writer\n", removed);
        bool f = false;
        int64_t step = 0;
        if (st == MF_OK)
            st =
                mf_checkpoint_find_latest(o->run_dir, stderr, msg.path, sizeof msg.path, &step, &f);
        msg.found = st == MF_OK ? f : -1;
    }
    MF_TRY(mf_broadcast_bytes(d, &msg, (int64_t)sizeof msg, 0));
    if (msg.found < 0)
        return st != MF_OK ? st : MF_ERROR(MF_ERR_IO, "rank 0 could not search %s", o->run_dir);
    *found = msg.found == 1;
    snprintf(path, cap, "%s", msg.path);
    return MF_OK;
}

static void log_terms(const run_state *r, const char **names, int *n)
{
    int k = 0;
    for (int t = 0; t < MF_LOSS_NUM_TERMS; t++) {
        if (t == MF_LOSS_PREDICTED_ALIGNED_ERROR && !r->cfg.heads.predicted_aligned_error_enabled)
            continue;
        names[k++] = mf_loss_term_name(t);
    }
    for (int c = 0; c < NUM_EXTRA_COLS; c++) names[k++] = k_extra_cols[c];
    *n = k;
}

mf_status mf_trainer_run(const mf_trainer_options *o, const mf_dist *dist, mf_trainer_result *res)
{
    MF_REQUIRE(o && dist && res && o->data_path && o->run_dir, "mf_trainer_run: arguments");
    MF_REQUIRE(o->total_steps >= 1, "--steps %lld (>= 1)", (long long)o->total_steps);
    memset(res, 0, sizeof *res);
    res->last_val_lddt_ca = NAN;
    FILE *out = dist->rank == 0 ? (o->out ? o->out : stdout) : NULL;
    const bool rank0 = dist->rank == 0;
    run_state *r = calloc(1, sizeof *r);
    if (!r) return MF_ERROR(MF_ERR_NOMEM, "trainer");
    mf_param_store_init(&r->store);
    mf_param_store_init(&r->init);
    mf_param_store_init(&r->ema_views);
    mf_status st = MF_OK;
    r->m = calloc(1, sizeof *r->m);
    r->g = calloc(1, sizeof *r->g);
    r->m_ema = calloc(1, sizeof *r->m_ema);
    if (!r->m || !r->g || !r->m_ema) {
        st = MF_ERROR(MF_ERR_NOMEM, "model");
        goto cleanup;
    }

    /* ---- where to start ---- */
    char ckpt[4096] = "";
    bool resuming = false;
    if (o->resume) {
        MF_TRY_GOTO(find_resume(o, dist, out, ckpt, sizeof ckpt, &resuming));
        if (!resuming && out)
            fprintf(out, "--resume: no valid checkpoint in %s, starting at step 0\n", o->run_dir);
    } else if (rank0) {
        mf_checkpoint_list cl;
        MF_TRY_GOTO(mf_checkpoint_list_run(o->run_dir, &cl));
        const int n = cl.count;
        const int64_t newest = n ? cl.steps[0] : 0;
        mf_checkpoint_list_free(&cl);
        if (n) {
            st = MF_ERROR(MF_ERR_INVALID,
                          "%s already holds %d checkpoint(s) (newest step %lld): give --resume "
                          "to continue that run, or another -o",
                          o->run_dir, n, (long long)newest);
            goto cleanup;
        }
    }

    /* ---- configuration ---- */
    if (resuming) {
        /* The checkpoint's configuration, which --config/--structure-layers/--set may restate
         * but not change (except memory.*: the policy changes memory and speed, not what is
         * computed, up to the rounding of chunked sums). --init is not read again. */
        mf_config stored, given;
        MF_TRY_GOTO(mf_checkpoint_read_config(ckpt, &stored));
        if (o->config)
            MF_TRY_GOTO(mf_config_load(o->config, &given));
        else
            given = stored;
        if (o->structure_layers > 0) given.structure_module.num_layers = o->structure_layers;
        for (int i = 0; i < o->n_sets; i++)
            MF_TRY_GOTO(mf_config_set_assignment(&given, o->sets[i]));
        MF_TRY_GOTO(mf_config_validate(&given, o->config ? o->config : "configuration"));
        mf_config cmp = given;
        cmp.memory = stored.memory;
        snprintf(cmp.preset, sizeof cmp.preset, "%s", stored.preset);
        char diff[512];
        if (!mf_config_equal(&stored, &cmp, diff, sizeof diff)) {
            st = MF_ERROR(MF_ERR_INVALID,
                          "--resume: the configuration differs from the checkpoint's (%s); a "
                          "resumed run keeps its configuration (memory.* may change)",
                          diff);
            goto cleanup;
        }
        r->cfg = stored;
        r->cfg.memory = given.memory;
    } else {
        if (o->init_params) {
            st = mf_param_store_load(&r->init, o->init_params, NULL);
            if (st != MF_OK) {
                mf_error_context(st, "--init %s", o->init_params);
                goto cleanup;
            }
        }
        MF_TRY_GOTO(options_config(o, o->init_params ? &r->init : NULL, &r->cfg));
    }
    uint64_t seed = o->seed_set ? o->seed : 0;

    /* ---- model, gradients, optimizer ---- */
    MF_TRY_GOTO(mf_alphafold_random_params(&r->cfg, derive_seed(seed, STREAM_INIT, 0), &r->store));
    if (!resuming && o->init_params) {
        MF_TRY_GOTO(copy_params(&r->store, &r->init, o->init_params));
        mf_param_store_free(&r->init);
        mf_param_store_init(&r->init);
    }
    MF_TRY_GOTO(mf_alphafold_bind(r->m, &r->cfg, &r->store));
    MF_TRY_GOTO(mf_grad_buffer_init(&r->gex, &r->store, NULL));
    MF_TRY_GOTO(mf_alphafold_bind(r->g, &r->cfg, &r->gex.views));
    /* AF2 clips each example's gradient (trainer.h), so the optimizer does not clip. */
    MF_TRY_GOTO(mf_optimizer_init(&r->opt, &r->store, &r->cfg.optimizer, MF_CLIP_NONE, NULL));
    r->opt_ready = true;

    const int64_t micro = o->micro_batches > 0 ? o->micro_batches : 1;
    int64_t batch = o->batch;
    if (batch <= 0) {
        batch = r->cfg.optimizer.batch_size / ((int64_t)dist->size * micro);
        if (batch < 1) batch = 1;
    }
    const int64_t E = batch * micro, G = E * dist->size;
    if (E > 1) MF_TRY_GOTO(mf_grad_buffer_init(&r->gacc, &r->store, NULL));
    mf_grad_buffer *gstep = E > 1 ? &r->gacc : &r->gex;

    mf_train_state state = {.step = 0, .rng_seed = seed};
    state.rng_counters[CTR_PER_STEP] = (uint64_t)G;
    state.rng_counters[CTR_DROPOUT] = o->dropout ? 1 : 0;
    if (resuming) {
        mf_train_state stored;
        MF_TRY_GOTO(mf_checkpoint_load(ckpt, &r->store, &r->opt, &stored, NULL));
        if (o->seed_set && stored.rng_seed != seed) {
            st = MF_ERROR(MF_ERR_INVALID, "--resume: --seed %llu, the checkpoint's run has %llu",
                          (unsigned long long)seed, (unsigned long long)stored.rng_seed);
            goto cleanup;
        }
        if (stored.rng_counters[CTR_PER_STEP] != (uint64_t)G ||
            stored.rng_counters[CTR_DROPOUT] != (uint64_t)(o->dropout ? 1 : 0)) {
            st =
                MF_ERROR(MF_ERR_INVALID,
                         "--resume: the checkpoint's run took %llu examples per step with "
                         "dropout %s; this one takes %lld (batch %lld x micro-batches %lld x %d "
                         "ranks) with dropout %s",
                         (unsigned long long)stored.rng_counters[CTR_PER_STEP],
                         stored.rng_counters[CTR_DROPOUT] ? "on" : "off", (long long)G,
                         (long long)batch, (long long)micro, dist->size, o->dropout ? "on" : "off");
            goto cleanup;
        }
        state = stored;
        seed = stored.rng_seed;
        snprintf(res->checkpoint, sizeof res->checkpoint, "%s", ckpt);
    }
    res->start_step = res->step = state.step;
    res->skipped = r->opt.skipped;
    MF_TRY_GOTO(mf_optimizer_state_views(&r->opt, "ema", &r->ema_views));
    MF_TRY_GOTO(mf_alphafold_bind(r->m_ema, &r->cfg, &r->ema_views));

    /* ---- data ---- */
    mf_loader_options lo = {.path = o->data_path,
                            .seed = derive_seed(seed, STREAM_LOADER, 0),
                            .pipeline = mf_pipeline_options_training(&r->cfg),
                            .shuffle = true,
                            .prefetch = false};
    st = mf_loader_open(&r->loader, &lo);
    if (st != MF_OK) {
        mf_error_context(st, "--data %s", o->data_path);
        goto cleanup;
    }
    const int64_t num_chains = mf_loader_num_chains(r->loader);
    if (o->val_path && rank0) {
        st = val_load(&r->val, o->val_path, &r->cfg, derive_seed(seed, STREAM_VALIDATION, 0), out);
        if (st != MF_OK) {
            mf_error_context(st, "--val %s", o->val_path);
            goto cleanup;
        }
    }

    /* ---- compute context ---- */
    MF_TRY_GOTO(mf_arena_init(&r->arena, MF_DEV_CPU, o->arena_bytes, "activations"));
    r->arena_ready = true;
    MF_TRY_GOTO(mf_ctx_init(&r->ctx, MF_DEV_CPU, &r->arena));
    r->ctx_ready = true;
    r->ctx.policy = r->cfg.memory;
    if (o->chunk_auto) {
        /* the memory model's choice for the largest sample of the data */
        mf_memplan_shape sh;
        MF_TRY_GOTO(mf_memplan_training_shape(o->data_path, &r->cfg, &sh));
        sh.dropout = o->dropout;
        const size_t budget = (size_t)(o->mem_budget_gib * (double)((size_t)1 << 30));
        /* with a trunk context the budget is its device's (a GPU's) */
        const mf_device dev = o->trunk_ctx ? o->trunk_ctx->device : MF_DEV_CPU;
        MF_TRY_GOTO(mf_memplan_auto_chunk(&r->ctx, &r->cfg, &r->ctx.policy, dev, &sh, budget,
                                          rank0 ? out : NULL));
        r->cfg.memory = r->ctx.policy;
    }
    mf_ctx *tctx = o->trunk_ctx;
    if (tctx) {
        if (!tctx->arena || tctx->arena == &r->arena) {
            st = MF_ERROR(MF_ERR_INVALID, "trainer: the trunk context needs its own arena");
            goto cleanup;
        }
        r->tctx = tctx;
        tctx->policy = r->ctx.policy;
        tctx->host_arena = r->ctx.policy.offload ? &r->arena : NULL;
        r->trunk = calloc(1, sizeof *r->trunk);
        if (!r->trunk) {
            st = MF_ERROR(MF_ERR_NOMEM, "GPU model");
            goto cleanup;
        }
        MF_TRY_GOTO(mf_train_trunk_init(r->trunk, tctx->arena, &r->cfg, &r->store, &r->gex.views));
    }

    /* ---- run directory, log ---- */
    const char *term_names[MF_TRAIN_LOG_MAX_TERMS];
    int num_cols = 0;
    log_terms(r, term_names, &num_cols);
    if (rank0) {
        MF_TRY_GOTO(make_dirs(o->run_dir));
        char path[4200];
        snprintf(path, sizeof path, "%s/config.json", o->run_dir);
        MF_TRY_GOTO(mf_config_save(&r->cfg, path));
        MF_TRY_GOTO(mf_train_log_open(&r->log, o->run_dir, term_names, num_cols,
                                      resuming ? state.step : -1, o->total_steps));
        r->log_open = true;
        char pol[160];
        fprintf(out,
                "memfold train: %s (%lld chains), config %s (%lld parameters in %d arrays), "
                "%lld example(s) per step (batch %lld x %lld micro-batch(es) x %d rank(s)), "
                "dropout %s, policy %s\n",
                o->data_path, (long long)num_chains, r->cfg.preset, (long long)r->gex.layout.total,
                r->gex.layout.count, (long long)G, (long long)batch, (long long)micro, dist->size,
                o->dropout ? "on" : "off", mf_policy_describe(&r->ctx.policy, pol, sizeof pol));
        if (resuming)
            fprintf(out, "resuming from %s: step %lld of %lld\n", ckpt, (long long)state.step,
                    (long long)o->total_steps);
        if (r->val.count)
            fprintf(out, "validation: %d chain(s) of %s every %lld steps (EMA weights)\n",
                    r->val.count, o->val_path,
                    (long long)(o->val_every > 0 ? o->val_every : o->total_steps));
        fflush(out);
    }
    MF_TRY_GOTO(mf_checkpoint_signals_install());

    /* ---- the loop ---- */
    for (int b = 0; b < 2; b++) MF_TRY_GOTO(batch_alloc(&r->batches[b], r->loader, E));
    int cur = 0;
    const int64_t rank_offset = (int64_t)dist->rank * E;
    if (state.step < o->total_steps)
        MF_TRY_GOTO(batch_start(&r->batches[cur],
                                (int64_t)state.rng_counters[CTR_SAMPLE] + rank_offset, false));
    while (state.step < o->total_steps) {
        const double t0 = mf_train_log_now();
        sample_batch *sb = &r->batches[cur];
        MF_TRY_GOTO(batch_wait(sb));
        const int64_t K = (int64_t)state.rng_counters[CTR_SAMPLE];
        if (state.step + 1 < o->total_steps)
            MF_TRY_GOTO(batch_start(&r->batches[1 - cur], K + G + rank_offset, o->prefetch));

        double sums[NUM_SUMS] = {0};
        size_t peak = 0;
        if (E > 1) mf_grad_buffer_zero(&r->gacc);
        for (int64_t i = 0; i < E; i++) {
            const int64_t k = K + rank_offset + i;
            mf_grad_buffer_zero(&r->gex);
            mf_train_step_options so = mf_train_step_default_options();
            so.dropout = o->dropout;
            so.dropout_seed = derive_seed(seed, STREAM_DROPOUT, (uint64_t)k);
            if (tctx) {
                so.trunk_ctx = tctx;
                so.trunk_model = &r->trunk->model;
                so.trunk_grads = &r->trunk->grad_model;
            }
            mf_train_step_result tr;
            st = mf_train_step(&r->ctx, r->m, r->g, &sb->f[i], &so, &tr, NULL);
            if (st == MF_OK && tctx)
                st = mf_train_merge_trunk_grads(&r->trunk->grads, &r->gex.views, &r->arena);
            if (st != MF_OK) {
                mf_error_context(st, "step %lld, sample %lld (%s)", (long long)state.step + 1,
                                 (long long)k, sb->info[i].chain);
                goto cleanup;
            }
            if (o->inject_nan_step == state.step + 1 && dist->rank == 0 && i == 0)
                r->gex.data[0] = NAN;
            double norm, scale;
            mf_grad_clip_global_norm(&r->gex, r->cfg.optimizer.clip_global_norm, &norm, &scale);
            if (E > 1) MF_TRY_GOTO(mf_grad_accumulate(&r->gacc, &r->gex));
            for (int t = 0; t < MF_LOSS_NUM_TERMS; t++)
                sums[SUM_TERMS + t] += tr.loss.present[t] ? tr.loss.term[t] : 0.0;
            sums[SUM_UNSCALED] += tr.loss.unscaled_loss;
            sums[SUM_TOTAL] += tr.loss.total;
            sums[SUM_ITERATIONS] += (double)tr.num_iterations;
            sums[SUM_NORM] += norm;
            sums[SUM_CLIP_SCALE] += scale;
            if (tr.arena_peak > peak) peak = tr.arena_peak;
        }
        if (E > 1) MF_TRY_GOTO(mf_grad_accumulate_finish(&r->gacc, E));
        MF_TRY_GOTO(mf_allreduce_mean_grads(dist, gstep));
        MF_TRY_GOTO(mf_allreduce_sum_f64(dist, sums, NUM_SUMS));
        for (int s = 0; s < NUM_SUMS; s++) sums[s] /= (double)G;
        mf_optimizer_step_info info;
        MF_TRY_GOTO(mf_optimizer_step(&r->opt, gstep, sums[SUM_TOTAL], &info));
        if (tctx) MF_TRY_GOTO(mf_param_store_copy_values(&r->trunk->params, &r->store));
        state.step++;
        state.rng_counters[CTR_SAMPLE] = (uint64_t)(K + G);
        state.loader_epoch = (K + G) / num_chains;
        state.loader_position = (K + G) % num_chains;
        const double t1 = mf_train_log_now();
        res->step = state.step;
        res->skipped = r->opt.skipped;
        res->last_loss = sums[SUM_TOTAL];

        /* validation (rank 0; the other ranks go on to the next step's all-reduce) */
        double val_lddt = NAN, val_plddt = NAN;
        const bool val_now =
            r->val.count > 0 &&
            ((o->val_every > 0 && state.step % o->val_every == 0) || state.step == o->total_steps);
        if (val_now) {
            /* on the trunk context: its parameters' mirror holds the EMA weights meanwhile */
            if (tctx) MF_TRY_GOTO(mf_param_store_copy_values(&r->trunk->params, &r->ema_views));
            st = validate(&r->ctx, r->m_ema, tctx, tctx ? &r->trunk->model : NULL, &r->val,
                          &val_lddt, &val_plddt);
            if (tctx && st == MF_OK) st = mf_param_store_copy_values(&r->trunk->params, &r->store);
            MF_TRY_GOTO(st);
            res->last_val_lddt_ca = val_lddt;
        }
        if (rank0) {
            mf_train_log_record rec = {
                .step = state.step,
                .loss = sums[SUM_TOTAL],
                .lr = info.lr,
                .grad_norm = sums[SUM_NORM],
                .clip_scale = sums[SUM_CLIP_SCALE],
                .skipped = info.skipped,
                .optimizer_step = r->opt.step,
                .skipped_steps = r->opt.skipped,
                .arena_peak_bytes = peak,
                .step_time_s = t1 - t0,
                .samples_per_s = (double)G / (t1 - t0),
            };
            int c = 0;
            for (int t = 0; t < MF_LOSS_NUM_TERMS; t++) {
                if (t == MF_LOSS_PREDICTED_ALIGNED_ERROR &&
                    !r->cfg.heads.predicted_aligned_error_enabled)
                    continue;
                rec.terms[c++] = sums[SUM_TERMS + t];
            }
            rec.terms[c + COL_UNSCALED] = sums[SUM_UNSCALED];
            rec.terms[c + COL_RECYCLES] = sums[SUM_ITERATIONS];
            rec.terms[c + COL_VAL_LDDT] = val_lddt;
            rec.terms[c + COL_VAL_PLDDT] = val_plddt;
            MF_TRY_GOTO(mf_train_log_write(&r->log, &rec));
            if (r->log.tty || info.skipped || val_now || state.step == o->total_steps ||
                (o->progress_every > 0 && state.step % o->progress_every == 0))
                mf_train_log_progress(&r->log, &rec);
            if (info.skipped)
                fprintf(out, "step %lld skipped: %s (%lld skipped so far)\n", (long long)state.step,
                        info.skip_reason, (long long)r->opt.skipped);
            if (val_now)
                fprintf(out,
                        "step %lld validation (EMA weights): lDDT-Ca %.4f, mean pLDDT %.2f "
                        "over %d chain(s)\n",
                        (long long)state.step, val_lddt, val_plddt, r->val.count);
            fflush(out);
        }

        /* checkpoint: periodic, last step, or a signal on any rank */
        bool signalled = mf_checkpoint_signal_pending() != 0;
        MF_TRY_GOTO(mf_allreduce_any(dist, &signalled));
        const bool periodic = o->checkpoint_every > 0 && state.step % o->checkpoint_every == 0;
        if (periodic || signalled || state.step == o->total_steps) {
            if (rank0) {
                MF_TRY_GOTO(check_state_finite(&r->opt));
                MF_TRY_GOTO(mf_checkpoint_save_run(o->run_dir, o->keep, &r->store, &r->opt, &state,
                                                   &r->cfg, res->checkpoint,
                                                   sizeof res->checkpoint));
                if (r->log.tty) fputc('\n', stderr);
                fprintf(out, "checkpoint %s\n", res->checkpoint);
                fflush(out);
            }
        }
        if (signalled) {
            int sig = mf_checkpoint_signal_pending();
            res->signal = sig ? sig : 15;
            if (out)
                fprintf(out, "stopped by signal %d after step %lld\n", res->signal,
                        (long long)state.step);
            break;
        }
        cur = 1 - cur;
    }

    if (state.step >= o->total_steps && rank0) {
        char path[4200];
        snprintf(path, sizeof path, "%s/params.h5", o->run_dir);
        MF_TRY_GOTO(mf_param_store_save_h5(&r->ema_views, path));
        if (res->start_step < o->total_steps)
            fprintf(out, "done: %lld steps (%lld skipped), EMA weights in %s\n",
                    (long long)state.step, (long long)r->opt.skipped, path);
        else
            fprintf(out, "already at step %lld of %lld; EMA weights in %s\n", (long long)state.step,
                    (long long)o->total_steps, path);
        fflush(out);
    }
cleanup:
    if (st != MF_OK && r->log_open) mf_train_log_close(&r->log), r->log_open = false;
    run_free(r);
    free(r);
    return st;
}
