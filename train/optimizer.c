/* Adam, schedule, clipping and EMA over flat f32 buffers (see optimizer.h). */
#include "train/optimizer.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Element-wise loops run in parallel above this many elements; below, threads cost more than
 * they save. Every element is computed independently, so the split never changes a result. */
#define MF_OPT_PARALLEL_MIN 32768

/* 64-byte aligned (one cache line, one AVX-512 vector) and at least one byte. */
static void *alloc_aligned(size_t bytes)
{
    size_t n = (bytes + 63) / 64 * 64;
    return aligned_alloc(64, n ? n : 64);
}

static mf_status alloc_buffer(mf_arena *arena, size_t bytes, const char *label, void **out)
{
    *out = NULL;
    if (arena) {
        if (arena->device != MF_DEV_CPU)
            return MF_ERROR(MF_ERR_UNSUPPORTED,
                            "%s: optimizer buffers on a CUDA arena are not implemented yet", label);
        return mf_arena_alloc(arena, bytes ? bytes : 1, label, out);
    }
    *out = alloc_aligned(bytes);
    if (!*out) return MF_ERROR(MF_ERR_NOMEM, "%s: no memory (%zu bytes)", label, bytes);
    return MF_OK;
}

/* ---- layout ---- */

mf_status mf_param_layout_init(mf_param_layout *l, const mf_param_store *params)
{
    memset(l, 0, sizeof *l);
    MF_REQUIRE(params, "mf_param_layout_init: NULL store");
    int n = params->count;
    l->numel = malloc(sizeof *l->numel * (size_t)(n ? n : 1));
    l->offset = malloc(sizeof *l->offset * (size_t)(n ? n : 1));
    if (!l->numel || !l->offset) {
        mf_param_layout_free(l);
        return MF_ERROR(MF_ERR_NOMEM, "parameter layout of %d entries: no memory", n);
    }
    l->count = n;
    int64_t off = 0;
    for (int i = 0; i < n; i++) {
        const mf_param_entry *e = &params->entries[i];
        if (e->tensor.dtype != MF_F32 || e->tensor.device != MF_DEV_CPU) {
            mf_param_layout_free(l);
            return MF_ERROR(MF_ERR_UNSUPPORTED, "parameter '%s': the optimizer needs host f32",
                            e->name);
        }
        l->numel[i] = mf_tensor_numel(&e->tensor);
        l->offset[i] = off;
        off += l->numel[i];
    }
    l->total = off;
    return MF_OK;
}

void mf_param_layout_free(mf_param_layout *l)
{
    free(l->numel);
    free(l->offset);
    memset(l, 0, sizeof *l);
}

mf_status mf_param_layout_check(const mf_param_layout *a, const mf_param_layout *b,
                                const char *what)
{
    if (a->count != b->count)
        return MF_ERROR(MF_ERR_INVALID, "%s: %d parameters vs %d", what, a->count, b->count);
    for (int i = 0; i < a->count; i++)
        if (a->numel[i] != b->numel[i])
            return MF_ERROR(MF_ERR_INVALID, "%s: parameter %d has %lld elements vs %lld", what, i,
                            (long long)a->numel[i], (long long)b->numel[i]);
    return MF_OK;
}

/* A store of views: the names and shapes of `params`, data at base + offset[i]. */
static mf_status make_views(const mf_param_store *params, const mf_param_layout *l, float *base,
                            mf_param_store *out)
{
    mf_param_store_init(out);
    for (int i = 0; i < l->count; i++) {
        const mf_param_entry *e = &params->entries[i];
        mf_tensor t = mf_tensor_make(base + l->offset[i], MF_F32, MF_DEV_CPU, e->tensor.ndim,
                                     e->tensor.shape);
        mf_status st = mf_param_store_add(out, e->name, &t, false);
        if (st != MF_OK) {
            mf_param_store_free(out);
            return st;
        }
    }
    return MF_OK;
}

/* ---- kernels (host twins of what a CUDA version provides) ---- */

/* partials[b] = sum over block b of (double)g[i]^2, each block in index order. */
static void sq_norm_partials(const float *g, int64_t n, double *partials)
{
    const int64_t nb = (n + MF_GRAD_NORM_BLOCK - 1) / MF_GRAD_NORM_BLOCK;
#pragma omp parallel for schedule(static) if (n > MF_OPT_PARALLEL_MIN)
    for (int64_t b = 0; b < nb; b++) {
        const int64_t lo = b * MF_GRAD_NORM_BLOCK;
        const int64_t hi = lo + MF_GRAD_NORM_BLOCK < n ? lo + MF_GRAD_NORM_BLOCK : n;
        double s = 0.0;
        for (int64_t i = lo; i < hi; i++) s += (double)g[i] * (double)g[i];
        partials[b] = s;
    }
}

static void scale_range(float *g, int64_t n, double s)
{
#pragma omp parallel for simd schedule(static) if (n > MF_OPT_PARALLEL_MIN)
    for (int64_t i = 0; i < n; i++) g[i] = (float)((double)g[i] * s);
}

typedef struct {
    double lr, b1, b2, eps;
    double bias1, bias2; /* 1 - b1^t, 1 - b2^t */
} adam_coefs;

static void adam_range(float *p, float *m, float *v, const float *g, int64_t n, const adam_coefs *c)
{
    const double b1 = c->b1, b2 = c->b2, eps = c->eps, lr = c->lr;
    const double bias1 = c->bias1, bias2 = c->bias2;
#pragma omp parallel for schedule(static) if (n > MF_OPT_PARALLEL_MIN)
    for (int64_t i = 0; i < n; i++) {
        const double gi = g[i];
        const float mi = (float)(b1 * (double)m[i] + (1.0 - b1) * gi);
        const float vi = (float)(b2 * (double)v[i] + (1.0 - b2) * (gi * gi));
        m[i] = mi;
        v[i] = vi;
        const double update = ((double)mi / bias1) / (sqrt((double)vi / bias2) + eps);
        p[i] = (float)((double)p[i] - lr * update);
    }
}

static void ema_range(float *ema, const float *p, int64_t n, double one_minus_decay)
{
#pragma omp parallel for simd schedule(static) if (n > MF_OPT_PARALLEL_MIN)
    for (int64_t i = 0; i < n; i++) {
        const double e = ema[i];
        ema[i] = (float)(e - one_minus_decay * (e - (double)p[i]));
    }
}

/* ---- gradient buffer ---- */

mf_status mf_grad_buffer_init(mf_grad_buffer *g, const mf_param_store *params, mf_arena *arena)
{
    memset(g, 0, sizeof *g);
    mf_param_store_init(&g->views);
    MF_TRY(mf_param_layout_init(&g->layout, params));
    const int64_t total = g->layout.total;
    const int64_t nb = (total + MF_GRAD_NORM_BLOCK - 1) / MF_GRAD_NORM_BLOCK;
    g->owned = arena == NULL;
    void *data = NULL;
    mf_status st = alloc_buffer(arena, (size_t)total * sizeof(float), "grads", &data);
    if (st != MF_OK) goto fail;
    g->data = data;
    g->norm_partials = malloc(sizeof(double) * (size_t)(nb ? nb : 1));
    if (!g->norm_partials) {
        st = MF_ERROR(MF_ERR_NOMEM, "gradient norm scratch: no memory");
        goto fail;
    }
    memset(g->data, 0, (size_t)total * sizeof(float));
    st = make_views(params, &g->layout, g->data, &g->views);
    if (st != MF_OK) goto fail;
    return MF_OK;
fail:
    mf_grad_buffer_free(g);
    return st;
}

void mf_grad_buffer_free(mf_grad_buffer *g)
{
    if (g->owned) free(g->data);
    free(g->norm_partials);
    mf_param_store_free(&g->views);
    mf_param_layout_free(&g->layout);
    memset(g, 0, sizeof *g);
}

void mf_grad_buffer_zero(mf_grad_buffer *g)
{
    memset(g->data, 0, (size_t)g->layout.total * sizeof(float));
}

double mf_grad_global_norm(mf_grad_buffer *g)
{
    const int64_t n = g->layout.total;
    const int64_t nb = (n + MF_GRAD_NORM_BLOCK - 1) / MF_GRAD_NORM_BLOCK;
    sq_norm_partials(g->data, n, g->norm_partials);
    double s = 0.0;
    for (int64_t b = 0; b < nb; b++) s += g->norm_partials[b];
    return sqrt(s);
}

void mf_grad_clip_global_norm(mf_grad_buffer *g, double clip_norm, double *norm, double *scale)
{
    const double nrm = mf_grad_global_norm(g);
    double s = 1.0;
    if (clip_norm > 0.0 && isfinite(nrm) && nrm > clip_norm) {
        s = clip_norm / nrm;
        scale_range(g->data, g->layout.total, s);
    }
    if (norm) *norm = nrm;
    if (scale) *scale = s;
}

/* ---- optimizer ---- */

mf_status mf_optimizer_init(mf_optimizer *opt, const mf_param_store *params,
                            const mf_optimizer_config *cfg, mf_clip_mode clip_mode, mf_arena *arena)
{
    memset(opt, 0, sizeof *opt);
    MF_REQUIRE(params && cfg, "mf_optimizer_init: NULL argument");
    MF_REQUIRE(clip_mode == MF_CLIP_IN_STEP || clip_mode == MF_CLIP_NONE,
               "mf_optimizer_init: clip mode %d", (int)clip_mode);
    MF_REQUIRE(cfg->beta1 >= 0 && cfg->beta1 < 1 && cfg->beta2 >= 0 && cfg->beta2 < 1 &&
                   cfg->eps > 0 && cfg->learning_rate >= 0 && cfg->decay_every_steps > 0 &&
                   cfg->warmup_steps >= 0 && cfg->ema_decay >= 0 && cfg->ema_decay <= 1,
               "optimizer settings out of range (beta1 %g, beta2 %g, eps %g, learning_rate %g, "
               "decay_every_steps %lld, warmup_steps %lld, ema_decay %g)",
               cfg->beta1, cfg->beta2, cfg->eps, cfg->learning_rate,
               (long long)cfg->decay_every_steps, (long long)cfg->warmup_steps, cfg->ema_decay);
    opt->cfg = *cfg;
    opt->clip_mode = clip_mode;
    opt->params = params;
    opt->owned = arena == NULL;
    MF_TRY(mf_param_layout_init(&opt->layout, params));
    const int n = opt->layout.count;
    const size_t bytes = (size_t)opt->layout.total * sizeof(float);
    mf_status st = MF_OK;
    opt->param = malloc(sizeof *opt->param * (size_t)(n ? n : 1));
    if (!opt->param) {
        st = MF_ERROR(MF_ERR_NOMEM, "optimizer: no memory for %d parameter pointers", n);
        goto fail;
    }
    for (int i = 0; i < n; i++) opt->param[i] = params->entries[i].tensor.data;
    void *p;
    if ((st = alloc_buffer(arena, bytes, "adam_m", &p)) != MF_OK) goto fail;
    opt->adam_m = p;
    if ((st = alloc_buffer(arena, bytes, "adam_v", &p)) != MF_OK) goto fail;
    opt->adam_v = p;
    if ((st = alloc_buffer(arena, bytes, "ema", &p)) != MF_OK) goto fail;
    opt->ema = p;
    memset(opt->adam_m, 0, bytes);
    memset(opt->adam_v, 0, bytes);
    for (int i = 0; i < n; i++)
        if (opt->layout.numel[i])
            memcpy(opt->ema + opt->layout.offset[i], opt->param[i],
                   (size_t)opt->layout.numel[i] * sizeof(float));
    return MF_OK;
fail:
    mf_optimizer_free(opt);
    return st;
}

void mf_optimizer_free(mf_optimizer *opt)
{
    if (opt->owned) {
        free(opt->adam_m);
        free(opt->adam_v);
        free(opt->ema);
    }
    free(opt->param);
    mf_param_layout_free(&opt->layout);
    memset(opt, 0, sizeof *opt);
}

double mf_lr_schedule(const mf_optimizer_config *cfg, int64_t count)
{
    if (count < 0) count = 0;
    if (count < cfg->warmup_steps)
        return cfg->learning_rate * (double)count / (double)cfg->warmup_steps;
    if (count < cfg->decay_start_step) return cfg->learning_rate;
    const int64_t k = 1 + (count - cfg->decay_start_step) / cfg->decay_every_steps;
    return cfg->learning_rate * pow(cfg->decay_factor, (double)k);
}

mf_status mf_optimizer_step(mf_optimizer *opt, mf_grad_buffer *g, double loss,
                            mf_optimizer_step_info *info)
{
    MF_REQUIRE(opt && g && info, "mf_optimizer_step: NULL argument");
    MF_TRY(mf_param_layout_check(&opt->layout, &g->layout, "optimizer step: gradients"));
    memset(info, 0, sizeof *info);
    info->lr = mf_lr_schedule(&opt->cfg, opt->step);
    info->clip_scale = 1.0;
    info->grad_norm = mf_grad_global_norm(g);
    if (!isfinite(loss))
        info->skip_reason = "non-finite loss";
    else if (!isfinite(info->grad_norm))
        info->skip_reason = "non-finite gradient norm";
    if (info->skip_reason) {
        info->skipped = true;
        opt->skipped++;
        info->step = opt->step;
        info->skipped_total = opt->skipped;
        return MF_OK;
    }
    const double clip = opt->cfg.clip_global_norm;
    if (opt->clip_mode == MF_CLIP_IN_STEP && clip > 0.0 && info->grad_norm > clip) {
        info->clip_scale = clip / info->grad_norm;
        scale_range(g->data, g->layout.total, info->clip_scale);
    }
    const int64_t t = opt->step + 1;
    adam_coefs c = {.lr = info->lr,
                    .b1 = opt->cfg.beta1,
                    .b2 = opt->cfg.beta2,
                    .eps = opt->cfg.eps,
                    .bias1 = 1.0 - pow(opt->cfg.beta1, (double)t),
                    .bias2 = 1.0 - pow(opt->cfg.beta2, (double)t)};
    const double one_minus_decay = 1.0 - opt->cfg.ema_decay;
    for (int i = 0; i < opt->layout.count; i++) {
        const int64_t off = opt->layout.offset[i], n = opt->layout.numel[i];
        if (!n) continue;
        adam_range(opt->param[i], opt->adam_m + off, opt->adam_v + off, g->data + off, n, &c);
        ema_range(opt->ema + off, opt->param[i], n, one_minus_decay);
    }
    opt->step = t;
    info->step = opt->step;
    info->skipped_total = opt->skipped;
    return MF_OK;
}

mf_status mf_optimizer_state_views(const mf_optimizer *opt, const char *which, mf_param_store *out)
{
    float *base = NULL;
    if (!strcmp(which, "adam_m"))
        base = opt->adam_m;
    else if (!strcmp(which, "adam_v"))
        base = opt->adam_v;
    else if (!strcmp(which, "ema"))
        base = opt->ema;
    else {
        mf_param_store_init(out);
        return MF_ERROR(MF_ERR_INVALID, "optimizer state '%s': expected adam_m, adam_v or ema",
                        which);
    }
    return make_views(opt->params, &opt->layout, base, out);
}

void mf_optimizer_copy_ema_to_params(const mf_optimizer *opt)
{
    for (int i = 0; i < opt->layout.count; i++)
        if (opt->layout.numel[i])
            memcpy(opt->param[i], opt->ema + opt->layout.offset[i],
                   (size_t)opt->layout.numel[i] * sizeof(float));
}
