/* Memory-model plans of the attention family (core/ops_memplan_attention.h and the evoformer
 * attention modules' *_plan_* functions) against the real code on a real arena. For every case the
 * real op or module runs on the CPU with its inputs, parameters and gradients in host memory, so
 * the arena holds exactly what the code allocates; its peak above the starting offset and the
 * bytes it leaves allocated must EQUAL the plan's replay on a simulator started at 0 (the arena is
 * deterministic: any difference is a replay error). Shapes are drawn at random (small, odd, not
 * multiples of the chunk), under chunk sizes off / 1 / 2 / 3 / 7 / larger than the rows, storage
 * and compute f32 / bf16, in every mode: forward saving, forward only, accumulate, backward with
 * every gradient and with some. One line per group: cases and the largest deviation. */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/ops_memplan_attention.h"
#include "evoformer/msa_attention.h"
#include "evoformer/template_pointwise_attention.h"
#include "evoformer/triangle_attention.h"
#include "tests/support/mf_test.h"

static mf_ctx g_ctx;
static mf_arena g_arena;

/* ---- random draws (splitmix64: a fixed grid per seed) --------------------------------------- */

static uint64_t g_rng = 0x6d656d706c616e31ull;

static uint64_t next_u64(void)
{
    uint64_t z = (g_rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* uniform in [lo, hi] */
static int64_t pick(int64_t lo, int64_t hi)
{
    return lo + (int64_t)(next_u64() % (uint64_t)(hi - lo + 1));
}

static bool coin(void)
{
    return next_u64() & 1;
}

/* A channel count: small, or wide enough that a channel-sized buffer (not the attention's
 * scratch) sets the peak. */
static int64_t chan(void)
{
    return coin() ? pick(1, 6) : coin() ? 16 : 37; /* few wide sizes: fewer oneDNN primitives */
}

static const int64_t g_chunks[] = {0, 1, 2, 3, 7, 1000};

/* A random policy: chunk from g_chunks, storage and compute f32 or bf16. */
static mf_policy random_policy(void)
{
    mf_policy p = mf_policy_default();
    p.chunk_size = g_chunks[pick(0, (int64_t)(sizeof g_chunks / sizeof g_chunks[0]) - 1)];
    p.storage = coin() ? MF_BF16 : MF_F32;
    p.compute = coin() ? MF_BF16 : MF_F32;
    return p;
}

/* ---- host tensors --------------------------------------------------------------------------- */

static void *g_pool[512];
static int g_npool;

static float *host(int64_t n)
{
    float *p = calloc((size_t)(n > 0 ? n : 1), sizeof(float));
    if (!p) abort();
    g_pool[g_npool++] = p;
    return p;
}

static void pool_free(void)
{
    while (g_npool > 0) free(g_pool[--g_npool]);
}

/* A random f32 host tensor of up to 4 dims. */
static mf_tensor rnd(int ndim, int64_t a, int64_t b, int64_t c, int64_t d)
{
    mf_tensor t = mf_tensor_4(NULL, MF_F32, MF_DEV_CPU, ndim, a, b, c, d);
    t.data = host(mf_tensor_numel(&t));
    mf_test_fill_normal_f32(t.data, mf_tensor_numel(&t), next_u64(), 0.5f);
    return t;
}

/* A 0/1 mask [rows, n] with at least one 1 per row. */
static mf_tensor mask2(int64_t rows, int64_t n)
{
    mf_tensor t = mf_tensor_4(NULL, MF_F32, MF_DEV_CPU, 2, rows, n, 1, 1);
    float *p = t.data = host(rows * n);
    for (int64_t i = 0; i < rows * n; i++) p[i] = (float)(next_u64() % 3 != 0);
    for (int64_t r = 0; r < rows; r++) p[r * n] = 1.0f;
    return t;
}

/* Parameters of a module from its specs (random host tensors), or zero gradients. */
static void params_of(const mf_param_spec *specs, int n, mf_tensor *out)
{
    for (int i = 0; i < n; i++) {
        out[i] = mf_tensor_make(NULL, MF_F32, MF_DEV_CPU, specs[i].ndim, specs[i].shape);
        out[i].data = host(mf_tensor_numel(&out[i]));
        mf_test_fill_normal_f32(out[i].data, mf_tensor_numel(&out[i]), next_u64(), 0.3f);
    }
}

/* ---- measurement and comparison ------------------------------------------------------------- */

typedef struct {
    size_t peak, left;
} usage;

typedef struct {
    const char *name;
    int cases;
    double maxdev; /* largest |plan - real| / real over peaks and bytes left */
} group;

static size_t g_u0;

static void real_begin(void)
{
    g_u0 = mf_arena_used(&g_arena);
    mf_arena_reset_peak(&g_arena);
}

static usage real_end(void)
{
    return (usage){mf_arena_high_water(&g_arena) - g_u0, mf_arena_used(&g_arena) - g_u0};
}

static void sim_begin(mf_memsim *s)
{
    mf_memsim_init(s, &g_ctx, MF_DEV_CPU, &g_ctx.policy);
}

static double dev(size_t plan, size_t real)
{
    double d = fabs((double)plan - (double)real);
    return real ? d / (double)real : d;
}

/* Exact equality of peak and bytes left; `what` names the case for the failure message. */
static void compare(group *g, const char *what, usage real, const mf_memsim *s)
{
    char pol[160];
    mf_policy_describe(&g_ctx.policy, pol, sizeof pol);
    g->cases++;
    double d = dev(s->peak, real.peak);
    double d2 = dev(s->cur, real.left);
    if (d2 > d) d = d2;
    if (d > g->maxdev) g->maxdev = d;
    MF_TEST_TRUE(s->status == MF_OK, "%s: %s [%s]: a workspace query failed", g->name, what, pol);
    MF_TEST_TRUE(s->peak == real.peak && s->cur == real.left,
                 "%s: %s [%s]: plan peak %zu left %zu, real peak %zu left %zu", g->name, what, pol,
                 s->peak, s->cur, real.peak, real.left);
}

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void report(const group *g)
{
    printf("%-40s %4d cases, max deviation %.3g\n", g->name, g->cases, g->maxdev);
    MF_TEST_TRUE(g->cases > 0, "%s: no case ran", g->name);
}

/* ---- the attention core --------------------------------------------------------------------- */

static void test_attention_core(int ncases)
{
    group gf = {"mf_attention_forward", 0, 0}, gb = {"mf_attention_backward", 0, 0};
    for (int c = 0; c < ncases; c++) {
        g_ctx.policy = random_policy();
        const int64_t B = pick(1, 3), Q = pick(1, 9), K = pick(1, 8), H = pick(1, 3),
                      D = pick(1, 5);
        const float scale = coin() ? 1.0f : 0.37f;
        const bool use_bias = coin(), use_mask = coin();
        mf_tensor q = rnd(4, B, Q, H, D), k = rnd(4, B, K, H, D), v = rnd(4, B, K, H, D);
        mf_tensor out = rnd(4, B, Q, H, D), lse = rnd(3, B, H, Q, 1);
        mf_tensor bias = rnd(3, H, Q, K, 1), mask = mask2(B, K);
        char what[160];
        snprintf(what, sizeof what, "B %lld Q %lld K %lld H %lld D %lld scale %g", (long long)B,
                 (long long)Q, (long long)K, (long long)H, (long long)D, scale);
        mf_memsim s;
        real_begin();
        MF_TEST_OK(mf_attention_forward(&g_ctx, &out, &lse, &q, &k, &v, use_bias ? &bias : NULL,
                                        use_mask ? &mask : NULL, scale));
        usage r = real_end();
        sim_begin(&s);
        mf_plan_attention_forward(&s, B, Q, K, H, D, scale);
        compare(&gf, what, r, &s);

        /* every subset of the gradients, one drawn per case, and all of them */
        for (int rep = 0; rep < 2; rep++) {
            int m = rep == 0 ? 15 : (int)pick(0, 15);
            bool wdq = m & 1, wdk = m & 2, wdv = m & 4, wdb = m & 8;
            mf_tensor dq = rnd(4, B, Q, H, D), dk = rnd(4, B, K, H, D), dv = rnd(4, B, K, H, D),
                      db = rnd(3, H, Q, K, 1), dout = rnd(4, B, Q, H, D);
            char w2[200];
            snprintf(w2, sizeof w2, "%s grads dq %d dk %d dv %d dbias %d", what, wdq, wdk, wdv,
                     wdb);
            real_begin();
            MF_TEST_OK(mf_attention_backward(&g_ctx, wdq ? &dq : NULL, wdk ? &dk : NULL,
                                             wdv ? &dv : NULL, wdb ? &db : NULL, &dout, &out, &lse,
                                             &q, &k, &v, use_bias ? &bias : NULL,
                                             use_mask ? &mask : NULL, scale));
            r = real_end();
            sim_begin(&s);
            mf_plan_attention_backward(&s, B, Q, K, H, D, scale, wdq, wdk, wdv, wdb);
            compare(&gb, w2, r, &s);
        }
        pool_free();
    }
    report(&gf);
    report(&gb);
}

/* ---- gated attention ------------------------------------------------------------------------ */

static void test_gated_attention(int ncases)
{
    group gf = {"mf_gated_attention_forward", 0, 0}, gb = {"mf_gated_attention_backward", 0, 0};
    for (int c = 0; c < ncases; c++) {
        g_ctx.policy = random_policy();
        const int64_t B = pick(1, 9), Q = pick(1, 7), K = coin() ? Q : pick(1, 7), Cin = chan(),
                      H = pick(1, 3), D = pick(1, 4), Cout = chan();
        const bool gated = coin(), use_bias = coin(), use_mask = coin(), acc = coin();
        mf_attention_params p = {rnd(3, Cin, H, D, 1),  rnd(3, Cin, H, D, 1),
                                 rnd(3, Cin, H, D, 1),  rnd(3, Cin, H, D, 1),
                                 rnd(2, H, D, 1, 1),    rnd(3, H, D, Cout, 1),
                                 rnd(1, Cout, 1, 1, 1), gated};
        if (!gated) p.gating_w = p.gating_b = (mf_tensor){0};
        mf_tensor qx = rnd(3, B, Q, Cin, 1), kvx = rnd(3, B, K, Cin, 1),
                  out = rnd(3, B, Q, Cout, 1);
        mf_tensor bias = rnd(3, H, Q, K, 1), mask = mask2(B, K);
        char what[200];
        snprintf(what, sizeof what,
                 "B %lld Q %lld K %lld Cin %lld H %lld D %lld Cout %lld gated %d acc %d",
                 (long long)B, (long long)Q, (long long)K, (long long)Cin, (long long)H,
                 (long long)D, (long long)Cout, gated, acc);
        mf_memsim s;
        /* forward only */
        real_begin();
        MF_TEST_OK(mf_gated_attention_forward(&g_ctx, &out, NULL, &qx, &kvx,
                                              use_bias ? &bias : NULL, use_mask ? &mask : NULL, &p,
                                              acc));
        usage r = real_end();
        sim_begin(&s);
        mf_plan_gated_attention_forward(&s, B, Q, K, Cin, H, D, Cout, gated, false, acc);
        compare(&gf, what, r, &s);
        /* forward saving, then backward with all gradients and with a drawn subset */
        mf_arena_mark_t mark = mf_arena_mark(&g_arena);
        mf_attention_saved saved;
        real_begin();
        MF_TEST_OK(mf_gated_attention_forward(&g_ctx, &out, &saved, &qx, &kvx,
                                              use_bias ? &bias : NULL, use_mask ? &mask : NULL, &p,
                                              acc));
        r = real_end();
        sim_begin(&s);
        mf_plan_gated_attention_forward(&s, B, Q, K, Cin, H, D, Cout, gated, true, acc);
        compare(&gf, what, r, &s);
        for (int rep = 0; rep < 2; rep++) {
            int m = rep == 0 ? 15 : (int)pick(0, 15);
            bool wq = m & 1, wkv = m & 2, wb = m & 4, wp = m & 8;
            mf_attention_params dp = {rnd(3, Cin, H, D, 1),  rnd(3, Cin, H, D, 1),
                                      rnd(3, Cin, H, D, 1),  rnd(3, Cin, H, D, 1),
                                      rnd(2, H, D, 1, 1),    rnd(3, H, D, Cout, 1),
                                      rnd(1, Cout, 1, 1, 1), gated};
            if (!gated) dp.gating_w = dp.gating_b = (mf_tensor){0};
            mf_tensor dqx = rnd(3, B, Q, Cin, 1), dkvx = rnd(3, B, K, Cin, 1),
                      db = rnd(3, H, Q, K, 1), dout = rnd(3, B, Q, Cout, 1);
            char w2[260];
            snprintf(w2, sizeof w2, "%s grads dq_x %d dkv_x %d dbias %d dparams %d", what, wq, wkv,
                     wb, wp);
            real_begin();
            MF_TEST_OK(mf_gated_attention_backward(
                &g_ctx, wq ? &dqx : NULL, wkv ? &dkvx : NULL, wb && use_bias ? &db : NULL,
                wp ? &dp : NULL, &dout, &saved, &qx, &kvx, use_bias ? &bias : NULL,
                use_mask ? &mask : NULL, &p));
            r = real_end();
            sim_begin(&s);
            mf_plan_gated_attention_backward(&s, B, Q, K, Cin, H, D, Cout, gated, wq, wkv,
                                             wb && use_bias, wp);
            compare(&gb, w2, r, &s);
        }
        mf_arena_release(&g_arena, mark);
        pool_free();
    }
    report(&gf);
    report(&gb);
}

/* ---- the evoformer attention modules -------------------------------------------------------- */

#define MAXP 16

/* Parameters p and, when wanted, gradients dp (random, accumulated into) of a module. */
typedef struct {
    mf_param_spec specs[MAXP];
    int n;
} spec_list;

/* The modes of one module case: forward only (accumulate drawn, sometimes in place), forward
 * saving, backward with every gradient and with a drawn subset. */
typedef struct {
    bool acc, inplace;
    int subset; /* bit mask of the optional gradients of the second backward */
} modes;

static modes draw_modes(void)
{
    modes m;
    m.acc = coin();
    m.inplace = m.acc && coin(); /* out = the input itself (policy.inplace) */
    m.subset = (int)pick(0, 7);
    return m;
}

static void test_row(group *gf, group *gb, int ncases)
{
    for (int c = 0; c < ncases; c++) {
        g_ctx.policy = random_policy();
        const mf_msa_row_attention_dims d = {chan(), chan(), pick(1, 3), pick(1, 4)};
        const int64_t S = pick(1, 9), N = pick(1, 8);
        const modes md = draw_modes();
        char what[200];
        snprintf(what, sizeof what, "S %lld N %lld c_m %lld c_z %lld H %lld D %lld", (long long)S,
                 (long long)N, (long long)d.c_m, (long long)d.c_z, (long long)d.num_heads,
                 (long long)d.c_hidden);
        spec_list sp;
        sp.n = mf_msa_row_attention_param_specs(&d, sp.specs);
        mf_msa_row_attention_params p, dp;
        params_of(sp.specs, sp.n, MF_PARAMS_AS_ARRAY(&p));
        params_of(sp.specs, sp.n, MF_PARAMS_AS_ARRAY(&dp));
        mf_tensor m = rnd(3, S, N, d.c_m, 1), z = rnd(3, N, N, d.c_z, 1), mask = mask2(S, N);
        mf_tensor out = rnd(3, S, N, d.c_m, 1), dm = rnd(3, S, N, d.c_m, 1),
                  dz = rnd(3, N, N, d.c_z, 1), dout = rnd(3, S, N, d.c_m, 1);
        mf_memsim s;
        real_begin();
        MF_TEST_OK(mf_msa_row_attention_with_pair_bias_forward(
            &g_ctx, md.inplace ? &m : &out, md.acc, NULL, &m, &z, &mask, &p, &d));
        usage r = real_end();
        sim_begin(&s);
        mf_msa_row_attention_with_pair_bias_plan_forward(&s, S, N, &d, false, md.acc);
        compare(gf, what, r, &s);

        mf_arena_mark_t mark = mf_arena_mark(&g_arena);
        mf_msa_row_attention_saved saved;
        real_begin();
        MF_TEST_OK(mf_msa_row_attention_with_pair_bias_forward(&g_ctx, &out, md.acc, &saved, &m, &z,
                                                               &mask, &p, &d));
        r = real_end();
        sim_begin(&s);
        mf_msa_row_attention_with_pair_bias_plan_forward(&s, S, N, &d, true, md.acc);
        compare(gf, what, r, &s);
        for (int rep = 0; rep < 2; rep++) {
            const int sub = rep == 0 ? 7 : md.subset;
            const bool wm = sub & 1, wz = sub & 2, wp = sub & 4;
            real_begin();
            MF_TEST_OK(mf_msa_row_attention_with_pair_bias_backward(
                &g_ctx, wm ? &dm : NULL, wz ? &dz : NULL, wp ? &dp : NULL, &dout, &saved, &m, &z,
                &mask, &p, &d));
            r = real_end();
            sim_begin(&s);
            mf_msa_row_attention_with_pair_bias_plan_backward(&s, S, N, &d, wm, wz, wp);
            compare(gb, what, r, &s);
        }
        mf_arena_release(&g_arena, mark);
        pool_free();
    }
}

static void test_column(group *gf, group *gb, int ncases)
{
    for (int c = 0; c < ncases; c++) {
        g_ctx.policy = random_policy();
        const mf_msa_column_attention_dims d = {chan(), pick(1, 3), pick(1, 4)};
        const int64_t S = pick(1, 9), N = pick(1, 8);
        const modes md = draw_modes();
        char what[200];
        snprintf(what, sizeof what, "S %lld N %lld c_m %lld H %lld D %lld", (long long)S,
                 (long long)N, (long long)d.c_m, (long long)d.num_heads, (long long)d.c_hidden);
        spec_list sp;
        sp.n = mf_msa_column_attention_param_specs(&d, sp.specs);
        mf_msa_column_attention_params p, dp;
        params_of(sp.specs, sp.n, MF_PARAMS_AS_ARRAY(&p));
        params_of(sp.specs, sp.n, MF_PARAMS_AS_ARRAY(&dp));
        mf_tensor m = rnd(3, S, N, d.c_m, 1), mask = mask2(S, N);
        mf_tensor out = rnd(3, S, N, d.c_m, 1), dm = rnd(3, S, N, d.c_m, 1),
                  dout = rnd(3, S, N, d.c_m, 1);
        mf_memsim s;
        real_begin();
        MF_TEST_OK(mf_msa_column_attention_forward(&g_ctx, md.inplace ? &m : &out, md.acc, NULL, &m,
                                                   &mask, &p, &d));
        usage r = real_end();
        sim_begin(&s);
        mf_msa_column_attention_plan_forward(&s, S, N, &d, false, md.acc);
        compare(gf, what, r, &s);

        mf_arena_mark_t mark = mf_arena_mark(&g_arena);
        mf_msa_column_attention_saved saved;
        real_begin();
        MF_TEST_OK(
            mf_msa_column_attention_forward(&g_ctx, &out, md.acc, &saved, &m, &mask, &p, &d));
        r = real_end();
        sim_begin(&s);
        mf_msa_column_attention_plan_forward(&s, S, N, &d, true, md.acc);
        compare(gf, what, r, &s);
        for (int rep = 0; rep < 2; rep++) {
            const int sub = rep == 0 ? 7 : md.subset;
            const bool wm = sub & 1, wp = sub & 4;
            real_begin();
            MF_TEST_OK(mf_msa_column_attention_backward(&g_ctx, wm ? &dm : NULL, wp ? &dp : NULL,
                                                        &dout, &saved, &m, &mask, &p, &d));
            r = real_end();
            sim_begin(&s);
            mf_msa_column_attention_plan_backward(&s, S, N, &d, wm, wp);
            compare(gb, what, r, &s);
        }
        mf_arena_release(&g_arena, mark);
        pool_free();
    }
}

static void test_global(group *gf, group *gb, int ncases)
{
    for (int c = 0; c < ncases; c++) {
        g_ctx.policy = random_policy();
        mf_msa_column_global_attention_dims d = {chan(), pick(1, 3), pick(1, 4)};
        /* the extra MSA is deep: sometimes many sequences, so the [N_res, N_seq] buffers count */
        int64_t S = coin() ? pick(1, 11) : pick(30, 90), N = pick(1, 8);
        if (c < 4) {
            /* one channel, one head of one, slices of one or two sequences, 400 sequences: the
             * mask weights' softmax buffer [N_res, N_seq] can set the peak (above oneDNN's few-KB
             * scratchpads) */
            d = (mf_msa_column_global_attention_dims){1, 1, 1};
            S = 400 + c, N = 8, g_ctx.policy.chunk_size = 1 + c % 2;
        }
        const modes md = draw_modes();
        char what[200];
        snprintf(what, sizeof what, "S %lld N %lld c_e %lld H %lld D %lld", (long long)S,
                 (long long)N, (long long)d.c_m, (long long)d.num_heads, (long long)d.c_hidden);
        spec_list sp;
        sp.n = mf_msa_column_global_attention_param_specs(&d, sp.specs);
        mf_msa_column_global_attention_params p, dp;
        params_of(sp.specs, sp.n, MF_PARAMS_AS_ARRAY(&p));
        params_of(sp.specs, sp.n, MF_PARAMS_AS_ARRAY(&dp));
        mf_tensor m = rnd(3, S, N, d.c_m, 1), mask = mask2(S, N);
        mf_tensor out = rnd(3, S, N, d.c_m, 1), dm = rnd(3, S, N, d.c_m, 1),
                  dout = rnd(3, S, N, d.c_m, 1);
        mf_memsim s;
        real_begin();
        MF_TEST_OK(mf_msa_column_global_attention_forward(&g_ctx, md.inplace ? &m : &out, md.acc,
                                                          NULL, &m, &mask, &p, &d));
        usage r = real_end();
        sim_begin(&s);
        mf_msa_column_global_attention_plan_forward(&s, S, N, &d, false, md.acc);
        compare(gf, what, r, &s);

        mf_arena_mark_t mark = mf_arena_mark(&g_arena);
        mf_msa_column_global_attention_saved saved;
        real_begin();
        MF_TEST_OK(mf_msa_column_global_attention_forward(&g_ctx, &out, md.acc, &saved, &m, &mask,
                                                          &p, &d));
        r = real_end();
        sim_begin(&s);
        mf_msa_column_global_attention_plan_forward(&s, S, N, &d, true, md.acc);
        compare(gf, what, r, &s);
        for (int rep = 0; rep < 2; rep++) {
            const int sub = rep == 0 ? 7 : md.subset;
            const bool wm = sub & 1, wp = sub & 4;
            real_begin();
            MF_TEST_OK(mf_msa_column_global_attention_backward(
                &g_ctx, wm ? &dm : NULL, wp ? &dp : NULL, &dout, &saved, &m, &mask, &p, &d));
            r = real_end();
            sim_begin(&s);
            mf_msa_column_global_attention_plan_backward(&s, S, N, &d, wm, wp);
            compare(gb, what, r, &s);
        }
        mf_arena_release(&g_arena, mark);
        pool_free();
    }
}

static void test_triangle(group *gf, group *gb, int ncases)
{
    for (int c = 0; c < ncases; c++) {
        g_ctx.policy = random_policy();
        const mf_triangle_attention_dims d = {chan(), pick(1, 3), pick(1, 4)};
        const int64_t N = pick(1, 9);
        const bool ending = coin();
        const modes md = draw_modes();
        char what[200];
        snprintf(what, sizeof what, "N %lld c_z %lld H %lld D %lld ending %lld", (long long)N,
                 (long long)d.c_z, (long long)d.num_heads, (long long)d.c_hidden,
                 (long long)ending);
        spec_list sp;
        sp.n = mf_triangle_attention_param_specs(&d, sp.specs);
        mf_triangle_attention_params p, dp;
        params_of(sp.specs, sp.n, MF_PARAMS_AS_ARRAY(&p));
        params_of(sp.specs, sp.n, MF_PARAMS_AS_ARRAY(&dp));
        mf_tensor z = rnd(3, N, N, d.c_z, 1), mask = mask2(N, N);
        mf_tensor out = rnd(3, N, N, d.c_z, 1), dz = rnd(3, N, N, d.c_z, 1),
                  dout = rnd(3, N, N, d.c_z, 1);
        mf_status (*fwd)(mf_ctx *, mf_tensor *, bool, mf_triangle_attention_saved *,
                         const mf_tensor *, const mf_tensor *, const mf_triangle_attention_params *,
                         const mf_triangle_attention_dims *) =
            ending ? mf_triangle_attention_ending_node_forward
                   : mf_triangle_attention_starting_node_forward;
        mf_status (*bwd)(mf_ctx *, mf_tensor *, mf_triangle_attention_params *, const mf_tensor *,
                         const mf_triangle_attention_saved *, const mf_tensor *, const mf_tensor *,
                         const mf_triangle_attention_params *, const mf_triangle_attention_dims *) =
            ending ? mf_triangle_attention_ending_node_backward
                   : mf_triangle_attention_starting_node_backward;
        mf_memsim s;
        real_begin();
        MF_TEST_OK(fwd(&g_ctx, md.inplace ? &z : &out, md.acc, NULL, &z, &mask, &p, &d));
        usage r = real_end();
        sim_begin(&s);
        mf_triangle_attention_plan_forward(&s, N, &d, ending, false, md.acc);
        compare(gf, what, r, &s);

        mf_arena_mark_t mark = mf_arena_mark(&g_arena);
        mf_triangle_attention_saved saved;
        real_begin();
        MF_TEST_OK(fwd(&g_ctx, &out, md.acc, &saved, &z, &mask, &p, &d));
        r = real_end();
        sim_begin(&s);
        mf_triangle_attention_plan_forward(&s, N, &d, ending, true, md.acc);
        compare(gf, what, r, &s);
        for (int rep = 0; rep < 2; rep++) {
            const int sub = rep == 0 ? 7 : md.subset;
            const bool wz = sub & 2, wp = sub & 4;
            real_begin();
            MF_TEST_OK(
                bwd(&g_ctx, wz ? &dz : NULL, wp ? &dp : NULL, &dout, &saved, &z, &mask, &p, &d));
            r = real_end();
            sim_begin(&s);
            mf_triangle_attention_plan_backward(&s, N, &d, ending, wz, wp);
            compare(gb, what, r, &s);
        }
        mf_arena_release(&g_arena, mark);
        pool_free();
    }
}

static void test_template(group *gf, group *gb, int ncases)
{
    for (int c = 0; c < ncases; c++) {
        g_ctx.policy = random_policy();
        const mf_template_pointwise_attention_dims d = {chan(), chan(), pick(1, 3), pick(1, 4)};
        const int64_t N = pick(1, 8), T = pick(1, 4);
        const modes md = draw_modes();
        char what[200];
        snprintf(what, sizeof what, "T %lld N %lld c_z %lld c_t %lld H %lld D %lld", (long long)T,
                 (long long)N, (long long)d.c_z, (long long)d.c_t, (long long)d.num_heads,
                 (long long)d.c_hidden);
        spec_list sp;
        sp.n = mf_template_pointwise_attention_param_specs(&d, sp.specs);
        mf_template_pointwise_attention_params p, dp;
        params_of(sp.specs, sp.n, MF_PARAMS_AS_ARRAY(&p));
        params_of(sp.specs, sp.n, MF_PARAMS_AS_ARRAY(&dp));
        mf_tensor z = rnd(3, N, N, d.c_z, 1), t = rnd(4, T, N, N, d.c_t), tmask = mask2(1, T);
        tmask.ndim = 1;
        tmask.shape[0] = T;
        if (coin()) ((float *)tmask.data)[0] = 0.0f; /* sometimes no template at all */
        mf_tensor out = rnd(3, N, N, d.c_z, 1), dz = rnd(3, N, N, d.c_z, 1),
                  dt = rnd(4, T, N, N, d.c_t), dout = rnd(3, N, N, d.c_z, 1);
        mf_memsim s;
        real_begin();
        MF_TEST_OK(mf_template_pointwise_attention_forward(&g_ctx, md.inplace ? &z : &out, md.acc,
                                                           NULL, &z, &t, &tmask, &p, &d));
        usage r = real_end();
        sim_begin(&s);
        mf_template_pointwise_attention_plan_forward(&s, T, N, &d, false, md.acc);
        compare(gf, what, r, &s);

        mf_arena_mark_t mark = mf_arena_mark(&g_arena);
        mf_template_pointwise_attention_saved saved;
        real_begin();
        MF_TEST_OK(mf_template_pointwise_attention_forward(&g_ctx, &out, md.acc, &saved, &z, &t,
                                                           &tmask, &p, &d));
        r = real_end();
        sim_begin(&s);
        mf_template_pointwise_attention_plan_forward(&s, T, N, &d, true, md.acc);
        compare(gf, what, r, &s);
        for (int rep = 0; rep < 2; rep++) {
            const int sub = rep == 0 ? 7 : md.subset;
            const bool wz = sub & 1, wt = sub & 2, wp = sub & 4;
            real_begin();
            MF_TEST_OK(mf_template_pointwise_attention_backward(
                &g_ctx, wz ? &dz : NULL, wt ? &dt : NULL, wp ? &dp : NULL, &dout, &saved, &z, &t,
                &tmask, &p, &d));
            r = real_end();
            sim_begin(&s);
            mf_template_pointwise_attention_plan_backward(&s, T, N, &d, wz, wt, wp);
            compare(gb, what, r, &s);
        }
        mf_arena_release(&g_arena, mark);
        pool_free();
    }
}

static void test_modules(int ncases)
{
    group rf = {"msa_row_attention_with_pair_bias fwd", 0, 0},
          rb = {"msa_row_attention_with_pair_bias bwd", 0, 0},
          cf = {"msa_column_attention fwd", 0, 0}, cb = {"msa_column_attention bwd", 0, 0},
          gf = {"msa_column_global_attention fwd", 0, 0},
          gb = {"msa_column_global_attention bwd", 0, 0}, tf = {"triangle_attention fwd", 0, 0},
          tb = {"triangle_attention bwd", 0, 0}, pf = {"template_pointwise_attention fwd", 0, 0},
          pb = {"template_pointwise_attention bwd", 0, 0};
    test_row(&rf, &rb, ncases);
    test_column(&cf, &cb, ncases);
    test_global(&gf, &gb, ncases);
    test_triangle(&tf, &tb, ncases);
    test_template(&pf, &pb, ncases);
    const group *all[] = {&rf, &rb, &cf, &cb, &gf, &gb, &tf, &tb, &pf, &pb};
    for (int i = 0; i < 10; i++) report(all[i]);
}

int main(void)
{
    /* one thread: tiny products, where thread hand-offs cost more than the work on a loaded
     * machine; the plans ask oneDNN for workspace in the same process, so they see the thread
     * count the real products run with, whatever it is */
    omp_set_num_threads(1);
    MF_TEST_OK(mf_test_ctx_cpu(&g_ctx, &g_arena, (size_t)256 << 20));
    /* a few unrelated bytes first, so no case starts at offset 0 */
    void *pad;
    MF_TEST_OK(mf_arena_alloc(&g_arena, 1000, "test padding", &pad));
    double t0 = now();
    test_attention_core(200);
    double t1 = now();
    test_gated_attention(200);
    double t2 = now();
    test_modules(80);
    printf("seconds: attention core %.2f, gated attention %.2f, modules %.2f\n", t1 - t0, t2 - t1,
           now() - t2);
    mf_test_ctx_free(&g_ctx, &g_arena);
    return mf_test_finish("test_memplan_attention");
}
