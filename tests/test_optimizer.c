/* Optimizer: Adam against a two-step example worked by hand and against optax's update formula in
 * double (with clipping and a warm-up schedule), the learning-rate schedule at chosen steps of the
 * AF2 presets, global-norm clipping above and below the threshold, skipped steps for NaN/Inf
 * gradients and a NaN loss (nothing changes), EMA, gradient views, and bitwise equality of steps
 * and norms across thread counts. */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "tests/support/mf_test.h"
#include "train/optimizer.h"

/* An f32 Adam step stores p, m and v rounded to f32 (relative 6e-8 each) and the next update reads
 * those rounded values: after a few steps p is off the double reference by a few f32 ulps of |p|.
 * 1e-6 relative (+1e-7 absolute for elements near 0) is ~10 ulps. */
#define TOL_ADAM_RTOL 1e-6
#define TOL_ADAM_ATOL 1e-7
/* The hand example: p rounded once to f32 (half an ulp, 3e-8 relative) plus m and v rounded in the
 * update (lr * 6e-8): 1.5e-7 relative is two ulps. The wrong eps placement (under the root) moves
 * element 1 of step 1 by 2.4e-6 and a missing bias correction moves everything by ~10%. */
#define TOL_ADAM_HAND_RTOL 1.5e-7

static const char *const k_names[3] = {
    "alphafold/alphafold_iteration/evoformer/preprocess_1d//weights",
    "alphafold/alphafold_iteration/evoformer/preprocess_1d//bias",
    "alphafold/alphafold_iteration/evoformer/evoformer_iteration/msa_transition/transition1//"
    "weights",
};

/* A store of n parameters with the given element counts (2-D [rows, cols] when cols > 0). */
static void make_store(mf_param_store *s, int n, const int64_t *rows, const int64_t *cols,
                       uint64_t seed)
{
    mf_param_store_init(s);
    for (int i = 0; i < n; i++) {
        int64_t numel = rows[i] * (cols[i] > 0 ? cols[i] : 1);
        float *tmp = malloc((size_t)numel * sizeof(float));
        mf_test_fill_normal_f32(tmp, numel, seed + (uint64_t)i, 1.0f);
        mf_tensor t =
            cols[i] > 0 ? mf_tensor_f32(tmp, 2, rows[i], cols[i]) : mf_tensor_f32(tmp, 1, rows[i]);
        MF_TEST_OK(mf_param_store_add(s, k_names[i], &t, true));
        free(tmp);
    }
}

static mf_optimizer_config const_lr_config(double lr)
{
    mf_optimizer_config c = {.learning_rate = lr,
                             .beta1 = 0.9,
                             .beta2 = 0.999,
                             .eps = 1e-6,
                             .warmup_steps = 0,
                             .decay_factor = 0.95,
                             .decay_start_step = 1000000,
                             .decay_every_steps = 50000,
                             .clip_global_norm = 0.0,
                             .ema_decay = 0.999,
                             .batch_size = 1};
    return c;
}

/* Two steps on three elements, values derived by hand:
 * step 1 (t = 1): m = 0.1 g, v = 0.001 g^2, m_hat = g, v_hat = g^2, so p -= lr g / (|g| + eps);
 * step 2 (t = 2): m = 0.09 g1 + 0.1 g2, v = 0.000999 g1^2 + 0.001 g2^2, m_hat = m / 0.19,
 * v_hat = v / 0.001999 (1 - 0.9^2, 1 - 0.999^2). lr 0.1, eps 1e-6. */
static void test_hand_example(void)
{
    const int64_t rows[1] = {3}, cols[1] = {0};
    mf_param_store s;
    make_store(&s, 1, rows, cols, 1);
    float *p = s.entries[0].tensor.data;
    p[0] = 1.0f;
    p[1] = -2.0f;
    p[2] = 0.25f;
    mf_optimizer_config cfg = const_lr_config(0.1);
    mf_optimizer opt;
    MF_TEST_OK(mf_optimizer_init(&opt, &s, &cfg, MF_CLIP_NONE, NULL));
    mf_grad_buffer g;
    MF_TEST_OK(mf_grad_buffer_init(&g, &s, NULL));
    const float g1[3] = {0.5f, -0.125f, 0.0f}, g2[3] = {-1.0f, 0.25f, 2.0f};
    mf_optimizer_step_info info;

    memcpy(g.data, g1, sizeof g1);
    MF_TEST_OK(mf_optimizer_step(&opt, &g, 1.0, &info));
    const double e1[3] = {1.0 - 0.1 * 0.5 / (0.5 + 1e-6), -2.0 - 0.1 * -0.125 / (0.125 + 1e-6),
                          0.25};
    /* the same numbers written out: 0.9000001999996, -1.9000007999936 */
    const double lit1[3] = {0.9000001999996, -1.9000007999936, 0.25};
    mf_check_close_f32_f64("adam hand step 1: p", p, e1, 3, 0, TOL_ADAM_HAND_RTOL);
    mf_check_close_f64("adam hand step 1: closed form vs literal", e1, lit1, 3, 1e-15, 1e-13);
    const double m1[3] = {0.05, -0.0125, 0.0}, v1[3] = {0.00025, 1.5625e-05, 0.0};
    mf_check_close_f32_f64("adam hand step 1: m", opt.adam_m, m1, 3, 0, TOL_ADAM_HAND_RTOL);
    mf_check_close_f32_f64("adam hand step 1: v", opt.adam_v, v1, 3, 0, TOL_ADAM_HAND_RTOL);

    memcpy(g.data, g2, sizeof g2);
    MF_TEST_OK(mf_optimizer_step(&opt, &g, 1.0, &info));
    double e2[3];
    for (int i = 0; i < 3; i++) {
        double m = 0.09 * g1[i] + 0.1 * g2[i];
        double v = 0.000999 * g1[i] * g1[i] + 0.001 * g2[i] * g2[i];
        e2[i] = e1[i] - 0.1 * (m / 0.19) / (sqrt(v / 0.001999) + 1e-6);
    }
    const double lit2[3] = {0.9366105064013509, -1.9366109674905534, 0.17558637024852775};
    mf_check_close_f32_f64("adam hand step 2: p", p, e2, 3, 0, TOL_ADAM_HAND_RTOL);
    mf_check_close_f64("adam hand step 2: closed form vs literal", e2, lit2, 3, 1e-15, 1e-12);
    MF_TEST_TRUE(info.step == 2 && !info.skipped && info.lr == 0.1,
                 "step info: step %lld skipped %d lr %g", (long long)info.step, info.skipped,
                 info.lr);
    /* eps under the root, sqrt(v_hat + eps), would give element 1 of step 1 2.4e-6 away: far
     * outside the two-ulp tolerance above */
    double wrong = -2.0 - 0.1 * -0.125 / sqrt(0.125 * 0.125 + 1e-6);
    MF_TEST_TRUE(fabs(wrong - e1[1]) > 5 * TOL_ADAM_HAND_RTOL * 2.0,
                 "the hand example separates the eps placements (%.3g apart)", fabs(wrong - e1[1]));
    mf_grad_buffer_free(&g);
    mf_optimizer_free(&opt);
    mf_param_store_free(&s);
}

/* optax.adam in double: clip_by_global_norm (when clip > 0), scale_by_adam, scale_by_schedule. */
typedef struct {
    double *p, *m, *v;
    int64_t n, count;
} ref_adam;

static void ref_step(ref_adam *r, const double *g_in, const mf_optimizer_config *c)
{
    double *g = malloc((size_t)r->n * sizeof(double));
    double ss = 0;
    for (int64_t i = 0; i < r->n; i++) ss += g_in[i] * g_in[i];
    double norm = sqrt(ss), s = 1.0;
    if (c->clip_global_norm > 0 && norm >= c->clip_global_norm) s = c->clip_global_norm / norm;
    for (int64_t i = 0; i < r->n; i++) g[i] = g_in[i] * s;
    double lr;
    if (r->count < c->warmup_steps)
        lr = c->learning_rate * (double)r->count / (double)c->warmup_steps;
    else
        lr = c->learning_rate;
    r->count++;
    for (int64_t i = 0; i < r->n; i++) {
        r->m[i] = (1 - c->beta1) * g[i] + c->beta1 * r->m[i];
        r->v[i] = (1 - c->beta2) * g[i] * g[i] + c->beta2 * r->v[i];
        double mh = r->m[i] / (1 - pow(c->beta1, (double)r->count));
        double vh = r->v[i] / (1 - pow(c->beta2, (double)r->count));
        r->p[i] += -lr * (mh / (sqrt(vh + 0.0) + c->eps));
    }
    free(g);
}

static void test_against_optax_formula(void)
{
    /* sizes that are not multiples of the norm block or any vector width */
    const int64_t rows[3] = {7, 33, 4099}, cols[3] = {0, 5, 3};
    mf_param_store s;
    make_store(&s, 3, rows, cols, 11);
    mf_optimizer_config cfg = const_lr_config(1e-3);
    cfg.warmup_steps = 3;
    cfg.clip_global_norm = 20.0; /* random gradients have norm ~ sqrt(12469)*0.3 = 33: clipped */
    mf_optimizer opt;
    MF_TEST_OK(mf_optimizer_init(&opt, &s, &cfg, MF_CLIP_IN_STEP, NULL));
    mf_grad_buffer g;
    MF_TEST_OK(mf_grad_buffer_init(&g, &s, NULL));
    const int64_t n = g.layout.total;
    ref_adam r = {malloc((size_t)n * 8), calloc((size_t)n, 8), calloc((size_t)n, 8), n, 0};
    double *gd = malloc((size_t)n * 8);
    for (int i = 0; i < s.count; i++)
        mf_f32_to_f64(r.p + g.layout.offset[i], s.entries[i].tensor.data, g.layout.numel[i]);
    int clipped = 0;
    for (int step = 0; step < 6; step++) {
        /* step 3 gradients small: below the threshold */
        mf_test_fill_normal_f32(g.data, n, 100 + (uint64_t)step, step == 3 ? 0.01f : 0.3f);
        mf_f32_to_f64(gd, g.data, n);
        mf_optimizer_step_info info;
        MF_TEST_OK(mf_optimizer_step(&opt, &g, 0.5, &info));
        ref_step(&r, gd, &cfg);
        if (info.clip_scale < 1.0) clipped++;
    }
    MF_TEST_TRUE(clipped == 5, "clipping happened in %d of 6 steps, expected 5", clipped);
    float *flat = malloc((size_t)n * sizeof(float));
    for (int i = 0; i < s.count; i++)
        memcpy(flat + g.layout.offset[i], s.entries[i].tensor.data,
               (size_t)g.layout.numel[i] * sizeof(float));
    mf_check_close_f32_f64("adam vs optax formula (6 steps, warm-up 3, clip 20): p", flat, r.p, n,
                           TOL_ADAM_ATOL, TOL_ADAM_RTOL);
    /* m cancels (a sum of gradients of both signs), so its error is absolute: per step half an
     * ulp of |m| <= 0.1 (3.7e-9) plus 0.1 x half an ulp of the clipped |g| <= 1 (3e-9), 5 steps */
    mf_check_close_f32_f64("adam vs optax formula: m (mu)", opt.adam_m, r.m, n, 4e-8,
                           TOL_ADAM_RTOL);
    mf_check_close_f32_f64("adam vs optax formula: v (nu)", opt.adam_v, r.v, n, 1e-12,
                           TOL_ADAM_RTOL);
    free(flat);
    free(gd);
    free(r.p);
    free(r.m);
    free(r.v);
    mf_grad_buffer_free(&g);
    mf_optimizer_free(&opt);
    mf_param_store_free(&s);
}

static void check_lr(const char *preset, int64_t count, double want)
{
    mf_config cfg;
    MF_TEST_OK(mf_config_preset(preset, &cfg));
    double got = mf_lr_schedule(&cfg.optimizer, count);
    bool ok = fabs(got - want) <= 1e-15 * fabs(want);
    printf("lr %s count %lld: %.17g (want %.17g, rtol 1e-15) %s\n", preset, (long long)count, got,
           want, ok ? "ok" : "FAIL");
    MF_TEST_TRUE(ok, "lr schedule %s at %lld: %.17g vs %.17g", preset, (long long)count, got, want);
}

static void test_schedule(void)
{
    /* AF2 initial training: warm-up over 1000 steps from 0, 1e-3, x0.95 once 50k are done. */
    check_lr("af2-initial", 0, 0.0);
    check_lr("af2-initial", 1, 1e-6);
    check_lr("af2-initial", 500, 5e-4);
    check_lr("af2-initial", 999, 0.999e-3);
    check_lr("af2-initial", 1000, 1e-3);
    check_lr("af2-initial", 49999, 1e-3);
    check_lr("af2-initial", 50000, 0.95e-3);
    check_lr("af2-initial", 99999, 0.95e-3);
    check_lr("af2-initial", 100000, 1e-3 * 0.95 * 0.95);
    /* fine-tuning: 5e-4 without warm-up */
    check_lr("af2-finetune", 0, 5e-4);
    check_lr("af2-finetune", 49999, 5e-4);
    check_lr("af2-finetune", 50000, 5e-4 * 0.95);
}

static void test_clipping(void)
{
    const int64_t rows[3] = {2, 1, 5000}, cols[3] = {0, 0, 0};
    mf_param_store s;
    make_store(&s, 3, rows, cols, 3);
    mf_grad_buffer g;
    MF_TEST_OK(mf_grad_buffer_init(&g, &s, NULL));
    /* 3, 4 in the first parameter, 12 in the second: global norm 13 over parameters */
    g.data[0] = 3.0f;
    g.data[1] = 4.0f;
    g.data[2] = 12.0f;
    double norm = mf_grad_global_norm(&g);
    MF_TEST_TRUE(norm == 13.0, "global norm of (3, 4, 12, 0...) = %.17g, want 13 exactly", norm);
    double nrm, scale;
    mf_grad_clip_global_norm(&g, 0.1, &nrm, &scale);
    const double want[3] = {0.3 / 13, 0.4 / 13, 1.2 / 13};
    mf_check_close_f32_f64("clip above threshold (norm 13 -> 0.1)", g.data, want, 3, 0, 1e-7);
    double after = mf_grad_global_norm(&g);
    MF_TEST_TRUE(fabs(after - 0.1) <= 1e-7 * 0.1 && nrm == 13.0 && fabs(scale - 0.1 / 13) < 1e-18,
                 "after clipping: norm %.9g (want 0.1), reported %.9g, scale %.9g", after, nrm,
                 scale);
    /* below the threshold: nothing changes, bitwise */
    mf_test_fill_normal_f32(g.data, g.layout.total, 5, 1e-4f);
    float *copy = malloc((size_t)g.layout.total * sizeof(float));
    memcpy(copy, g.data, (size_t)g.layout.total * sizeof(float));
    mf_grad_clip_global_norm(&g, 0.1, &nrm, &scale);
    MF_TEST_TRUE(nrm < 0.1 && scale == 1.0, "below threshold: norm %g scale %g", nrm, scale);
    mf_check_bitwise_f32("clip below threshold leaves the gradients", g.data, copy, g.layout.total);
    /* the blocked double sum against a plain double sum */
    double ss = 0;
    for (int64_t i = 0; i < g.layout.total; i++) ss += (double)g.data[i] * g.data[i];
    mf_check_close_f64("global norm blocked vs plain double sum", &nrm, (double[]){sqrt(ss)}, 1, 0,
                       1e-14);
    /* non-finite: not scaled */
    g.data[4000] = INFINITY;
    memcpy(copy, g.data, (size_t)g.layout.total * sizeof(float));
    mf_grad_clip_global_norm(&g, 0.1, &nrm, &scale);
    MF_TEST_TRUE(isinf(nrm) && scale == 1.0, "Inf gradient: norm %g scale %g", nrm, scale);
    mf_check_bitwise_f32("Inf gradient is not scaled", g.data, copy, g.layout.total);
    free(copy);
    mf_grad_buffer_free(&g);
    mf_param_store_free(&s);
}

/* Snapshot of everything the optimizer changes. */
typedef struct {
    float *p, *m, *v, *ema;
    int64_t step, skipped;
} snapshot;

static snapshot take(const mf_optimizer *o)
{
    const int64_t n = o->layout.total;
    snapshot s = {malloc((size_t)n * 4),
                  malloc((size_t)n * 4),
                  malloc((size_t)n * 4),
                  malloc((size_t)n * 4),
                  o->step,
                  o->skipped};
    for (int i = 0; i < o->layout.count; i++)
        memcpy(s.p + o->layout.offset[i], o->param[i], (size_t)o->layout.numel[i] * 4);
    memcpy(s.m, o->adam_m, (size_t)n * 4);
    memcpy(s.v, o->adam_v, (size_t)n * 4);
    memcpy(s.ema, o->ema, (size_t)n * 4);
    return s;
}

static void free_snap(snapshot *s)
{
    free(s->p);
    free(s->m);
    free(s->v);
    free(s->ema);
}

static void check_same(const char *what, const snapshot *a, const snapshot *b, int64_t n)
{
    char buf[160];
    snprintf(buf, sizeof buf, "%s: params", what);
    mf_check_bitwise_f32(buf, a->p, b->p, n);
    snprintf(buf, sizeof buf, "%s: adam_m", what);
    mf_check_bitwise_f32(buf, a->m, b->m, n);
    snprintf(buf, sizeof buf, "%s: adam_v", what);
    mf_check_bitwise_f32(buf, a->v, b->v, n);
    snprintf(buf, sizeof buf, "%s: ema", what);
    mf_check_bitwise_f32(buf, a->ema, b->ema, n);
}

static void test_skipped_steps(void)
{
    const int64_t rows[3] = {9, 4, 100}, cols[3] = {0, 3, 0};
    mf_param_store s, s2;
    make_store(&s, 3, rows, cols, 21);
    make_store(&s2, 3, rows, cols, 21);
    mf_optimizer_config cfg = const_lr_config(1e-2);
    cfg.clip_global_norm = 0.1;
    mf_optimizer opt, ref;
    MF_TEST_OK(mf_optimizer_init(&opt, &s, &cfg, MF_CLIP_IN_STEP, NULL));
    MF_TEST_OK(mf_optimizer_init(&ref, &s2, &cfg, MF_CLIP_IN_STEP, NULL));
    mf_grad_buffer g;
    MF_TEST_OK(mf_grad_buffer_init(&g, &s, NULL));
    const int64_t n = g.layout.total;
    mf_optimizer_step_info info;
    /* one good step so the moments and EMA are not trivial */
    mf_test_fill_normal_f32(g.data, n, 31, 1.0f);
    MF_TEST_OK(mf_optimizer_step(&opt, &g, 1.0, &info));
    mf_test_fill_normal_f32(g.data, n, 31, 1.0f);
    MF_TEST_OK(mf_optimizer_step(&ref, &g, 1.0, &info));

    static const struct {
        const char *what;
        float value;
        double loss;
        const char *reason;
    } k_cases[3] = {{"NaN gradient", NAN, 1.0, "non-finite gradient norm"},
                    {"Inf gradient", -INFINITY, 1.0, "non-finite gradient norm"},
                    {"NaN loss", 0.0f, NAN, "non-finite loss"}};
    for (int c = 0; c < 3; c++) {
        snapshot before = take(&opt);
        mf_test_fill_normal_f32(g.data, n, 40 + (uint64_t)c, 1.0f);
        if (k_cases[c].value != 0.0f) g.data[n - 3] = k_cases[c].value;
        MF_TEST_OK(mf_optimizer_step(&opt, &g, k_cases[c].loss, &info));
        snapshot after = take(&opt);
        char what[96];
        snprintf(what, sizeof what, "skipped step (%s) changes nothing", k_cases[c].what);
        check_same(what, &after, &before, n);
        MF_TEST_TRUE(
            info.skipped && info.skip_reason && !strcmp(info.skip_reason, k_cases[c].reason) &&
                opt.step == 1 && opt.skipped == c + 1 && info.skipped_total == c + 1,
            "%s: skipped %d reason '%s' step %lld skipped %lld", k_cases[c].what, info.skipped,
            info.skip_reason ? info.skip_reason : "", (long long)opt.step, (long long)opt.skipped);
        free_snap(&before);
        free_snap(&after);
    }
    /* after the skips the next update is update 2, bitwise as in a run that never skipped */
    mf_test_fill_normal_f32(g.data, n, 50, 1.0f);
    MF_TEST_OK(mf_optimizer_step(&opt, &g, 1.0, &info));
    mf_test_fill_normal_f32(g.data, n, 50, 1.0f);
    MF_TEST_OK(mf_optimizer_step(&ref, &g, 1.0, &info));
    snapshot a = take(&opt), b = take(&ref);
    check_same("after 3 skips == never skipped", &a, &b, n);
    MF_TEST_TRUE(opt.step == 2 && ref.step == 2 && opt.skipped == 3 && ref.skipped == 0,
                 "counts: %lld/%lld vs %lld/%lld", (long long)opt.step, (long long)opt.skipped,
                 (long long)ref.step, (long long)ref.skipped);
    free_snap(&a);
    free_snap(&b);
    mf_grad_buffer_free(&g);
    mf_optimizer_free(&opt);
    mf_optimizer_free(&ref);
    mf_param_store_free(&s);
    mf_param_store_free(&s2);
}

static void test_ema(void)
{
    const int64_t rows[2] = {17, 3}, cols[2] = {0, 11};
    mf_param_store s;
    make_store(&s, 2, rows, cols, 61);
    mf_optimizer_config cfg = const_lr_config(0.05);
    cfg.ema_decay = 0.9; /* visible within 3 steps */
    mf_optimizer opt;
    MF_TEST_OK(mf_optimizer_init(&opt, &s, &cfg, MF_CLIP_NONE, NULL));
    mf_grad_buffer g;
    MF_TEST_OK(mf_grad_buffer_init(&g, &s, NULL));
    const int64_t n = g.layout.total;
    snapshot s0 = take(&opt);
    mf_check_bitwise_f32("EMA starts as the parameters", s0.ema, s0.p, n);
    double *ema = malloc((size_t)n * 8);
    mf_f32_to_f64(ema, s0.p, n);
    for (int step = 0; step < 3; step++) {
        mf_test_fill_normal_f32(g.data, n, 70 + (uint64_t)step, 1.0f);
        mf_optimizer_step_info info;
        MF_TEST_OK(mf_optimizer_step(&opt, &g, 1.0, &info));
        snapshot sn = take(&opt);
        for (int64_t i = 0; i < n; i++) ema[i] = 0.9 * ema[i] + 0.1 * (double)sn.p[i];
        free_snap(&sn);
    }
    /* rounding of the f32 EMA each step: a few ulps */
    mf_check_close_f32_f64("EMA after 3 steps (decay 0.9) vs 0.9 e + 0.1 p in double", opt.ema, ema,
                           n, TOL_ADAM_ATOL, TOL_ADAM_RTOL);
    snapshot s3 = take(&opt);
    bool differs = memcmp(s3.ema, s3.p, (size_t)n * 4) != 0;
    MF_TEST_TRUE(differs, "EMA differs from the parameters after 3 steps");
    mf_optimizer_copy_ema_to_params(&opt);
    snapshot s4 = take(&opt);
    mf_check_bitwise_f32("copy_ema_to_params", s4.p, s3.ema, n);
    free_snap(&s0);
    free_snap(&s3);
    free_snap(&s4);
    free(ema);
    mf_grad_buffer_free(&g);
    mf_optimizer_free(&opt);
    mf_param_store_free(&s);
}

static void test_views(void)
{
    const int64_t rows[3] = {2, 3, 4}, cols[3] = {5, 0, 7};
    mf_param_store s;
    make_store(&s, 3, rows, cols, 81);
    mf_grad_buffer g;
    MF_TEST_OK(mf_grad_buffer_init(&g, &s, NULL));
    bool ok = g.views.count == 3 && g.layout.total == 10 + 3 + 28;
    for (int i = 0; ok && i < 3; i++) {
        const mf_tensor *t = mf_param_store_find(&g.views, k_names[i]);
        ok = t && t->data == (void *)(g.data + g.layout.offset[i]) &&
             mf_tensor_same_shape(t, &s.entries[i].tensor);
    }
    MF_TEST_TRUE(ok, "gradient views: the parameters' names and shapes over the flat buffer");
    mf_optimizer_config cfg = const_lr_config(1e-3);
    mf_optimizer opt;
    MF_TEST_OK(mf_optimizer_init(&opt, &s, &cfg, MF_CLIP_NONE, NULL));
    mf_param_store v;
    MF_TEST_OK(mf_optimizer_state_views(&opt, "adam_v", &v));
    MF_TEST_TRUE(v.count == 3 && v.entries[2].tensor.data == (void *)(opt.adam_v + 13),
                 "state views of adam_v");
    mf_param_store_free(&v);
    mf_status st = mf_optimizer_state_views(&opt, "adam_w", &v);
    MF_TEST_TRUE(st == MF_ERR_INVALID, "unknown state name refused");
    mf_clear_error();
    /* a gradient buffer of another layout is refused */
    const int64_t r2[2] = {2, 3}, c2[2] = {5, 0};
    mf_param_store s2;
    make_store(&s2, 2, r2, c2, 82);
    mf_grad_buffer g2;
    MF_TEST_OK(mf_grad_buffer_init(&g2, &s2, NULL));
    mf_optimizer_step_info info;
    st = mf_optimizer_step(&opt, &g2, 1.0, &info);
    MF_TEST_TRUE(st == MF_ERR_INVALID, "step with a mismatched gradient layout refused: %s",
                 mf_last_error());
    mf_clear_error();
    mf_grad_buffer_free(&g2);
    mf_param_store_free(&s2);
    mf_optimizer_free(&opt);
    mf_grad_buffer_free(&g);
    mf_param_store_free(&s);
}

/* Parallel paths (> 32768 elements) against one thread: every element independent, the norm in
 * fixed blocks, so the bits must agree. */
static void test_threads(void)
{
    const int64_t rows[2] = {70001, 301}, cols[2] = {0, 3};
    mf_param_store s1, s2;
    make_store(&s1, 2, rows, cols, 91);
    make_store(&s2, 2, rows, cols, 91);
    mf_optimizer_config cfg = const_lr_config(1e-3);
    cfg.clip_global_norm = 1.0;
    mf_optimizer o1, o2;
    MF_TEST_OK(mf_optimizer_init(&o1, &s1, &cfg, MF_CLIP_IN_STEP, NULL));
    MF_TEST_OK(mf_optimizer_init(&o2, &s2, &cfg, MF_CLIP_IN_STEP, NULL));
    mf_grad_buffer g;
    MF_TEST_OK(mf_grad_buffer_init(&g, &s1, NULL));
    const int64_t n = g.layout.total;
    int max_threads = omp_get_max_threads();
    double norms[2][3];
    for (int step = 0; step < 3; step++) {
        mf_optimizer_step_info info;
        omp_set_num_threads(1);
        mf_test_fill_normal_f32(g.data, n, 95 + (uint64_t)step, 0.1f);
        MF_TEST_OK(mf_optimizer_step(&o1, &g, 1.0, &info));
        norms[0][step] = info.grad_norm;
        omp_set_num_threads(max_threads > 1 ? max_threads : 2);
        mf_test_fill_normal_f32(g.data, n, 95 + (uint64_t)step, 0.1f);
        MF_TEST_OK(mf_optimizer_step(&o2, &g, 1.0, &info));
        norms[1][step] = info.grad_norm;
    }
    omp_set_num_threads(max_threads);
    MF_TEST_TRUE(!memcmp(norms[0], norms[1], sizeof norms[0]),
                 "global norms with 1 and %d threads are bitwise equal",
                 max_threads > 1 ? max_threads : 2);
    snapshot a = take(&o1), b = take(&o2);
    check_same("3 steps, 1 thread vs several", &a, &b, n);
    free_snap(&a);
    free_snap(&b);
    mf_grad_buffer_free(&g);
    mf_optimizer_free(&o1);
    mf_optimizer_free(&o2);
    mf_param_store_free(&s1);
    mf_param_store_free(&s2);
}

int main(void)
{
    test_hand_example();
    test_against_optax_formula();
    test_schedule();
    test_clipping();
    test_skipped_steps();
    test_ema();
    test_views();
    test_threads();
    return mf_test_finish("test_optimizer");
}
