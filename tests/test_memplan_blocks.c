/* Memory model (memopt/memplan.h) of the transition, the outer product mean, the triangle
 * multiplication, the block engine (Evoformer, extra-MSA and template pair blocks) and the three
 * stacks: each plan's replay on a simulated arena against the real module run on a real arena.
 *
 * For every case the real code runs on a CPU context whose arena starts at some offset; the
 * measured numbers are the high-water mark above that offset and the bytes left allocated at
 * return, and the plan, replayed from 0 on an mf_memsim under the same policy, must give both
 * EXACTLY (the arena is deterministic and the plan makes the same allocations in the same
 * order; any difference is a replay error). Cases: random small shapes (sizes that are not
 * multiples of the chunk), chunk off/1/2/3/7/larger than the rows, storage f32/bf16, compute
 * f32/bf16; forward saving and forward only, with and without accumulation; backward with all
 * gradients, the input gradient only, the parameter gradients only and none. Blocks and stacks:
 * recompute off / block / every:2, inplace on/off at inference, dropout on/off. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "evoformer/outer_product_mean.h"
#include "evoformer/transition.h"
#include "evoformer/triangle_multiplication.h"
#include "memopt/memplan.h"
#include "tests/support/mf_test.h"

#define MAXP 32

static mf_ctx g_ctx;
static mf_arena g_arena;  /* activations: what is measured */
static mf_arena g_data;   /* parameters, inputs, gradients: outside the measurement */
static long long g_cases; /* comparisons made */
static size_t g_max_dev;  /* largest |plan - real| over all comparisons, bytes */
static size_t g_max_peak; /* largest peak compared, bytes */
static char g_shape[160]; /* the current case's shapes, for messages */

typedef struct {
    size_t peak, left;
} meas;

static size_t measure_begin(void)
{
    mf_arena_reset_peak(&g_arena);
    return mf_arena_used(&g_arena);
}

static meas measure_end(size_t base)
{
    return (meas){mf_arena_high_water(&g_arena) - base, mf_arena_used(&g_arena) - base};
}

static size_t absdiff(size_t a, size_t b)
{
    return a > b ? a - b : b - a;
}

/* The real run's peak and bytes left against the plan's. */
static void compare(const char *what, const meas *real, const mf_memsim *s)
{
    g_cases++;
    const size_t dp = absdiff(real->peak, s->peak), dl = absdiff(real->left, s->cur);
    if (dp > g_max_dev) g_max_dev = dp;
    if (dl > g_max_dev) g_max_dev = dl;
    if (real->peak > g_max_peak) g_max_peak = real->peak;
    char pol[160];
    mf_policy_describe(&s->policy, pol, sizeof pol);
    MF_TEST_TRUE(dp == 0 && dl == 0 && s->status == MF_OK,
                 "%s %s [%s]: real peak %zu left %zu, plan peak %zu left %zu (status %d)", what,
                 g_shape, pol, real->peak, real->left, s->peak, s->cur, (int)s->status);
}

static void sim_init(mf_memsim *s, const mf_policy *pol)
{
    mf_memsim_init(s, &g_ctx, MF_DEV_CPU, pol);
}

/* ---- data (in g_data, released per case) --------------------------------------------------- */

static uint64_t g_seed = 1;

static mf_tensor data_tensor(int ndim, int64_t d0, int64_t d1, int64_t d2, bool zero)
{
    mf_tensor t;
    const int64_t shape[3] = {d0, d1, d2};
    MF_TEST_OK(mf_arena_zeros(&g_data, &t, MF_F32, ndim, shape, "data"));
    if (!zero) mf_test_fill_normal_f32(t.data, mf_tensor_numel(&t), g_seed++, 1.0f);
    return t;
}

/* 0/1 mask [r, c] with ones in its first row and diagonal, so nothing is fully masked */
static mf_tensor data_mask(int64_t r, int64_t c)
{
    mf_tensor t = data_tensor(2, r, c, 0, true);
    float *x = t.data;
    for (int64_t i = 0; i < r * c; i++)
        x[i] = i < c || i / c == i % c || mf_rng_uniform(g_seed, 7, (uint64_t)i) < 0.7f;
    g_seed++;
    return t;
}

static void data_params(const mf_param_spec *specs, int n, mf_tensor *p, bool zero)
{
    MF_TEST_OK(mf_params_alloc(&g_data, specs, n, p, "params"));
    if (zero) return;
    for (int i = 0; i < n; i++)
        mf_test_fill_normal_f32(p[i].data, mf_tensor_numel(&p[i]), g_seed++, 0.3f);
}

/* ---- policies ------------------------------------------------------------------------------ */

static const int64_t chunks[] = {0, 1, 2, 3, 7, 1000};
#define NCHUNKS ((int)(sizeof chunks / sizeof chunks[0]))

static mf_policy policy_of(int64_t chunk, mf_dtype storage, mf_dtype compute)
{
    mf_policy p = mf_policy_default();
    p.chunk_size = chunk;
    p.storage = storage;
    p.compute = compute;
    return p;
}

static int64_t rnd(int64_t lo, int64_t hi)
{
    return lo + (int64_t)(mf_rng_uniform(99, 3, g_seed++) * (float)(hi - lo + 1)) % (hi - lo + 1);
}

/* Backward gradient modes: (input gradient, parameter gradients). */
static const bool grad_modes[4][2] = {{true, true}, {true, false}, {false, true}, {false, false}};

/* ---- transition ---------------------------------------------------------------------------- */

static void case_transition(const mf_policy *pol, int64_t n0, int64_t per0, int64_t C,
                            int64_t factor)
{
    const mf_transition_dims d = {.c = C, .factor = factor};
    snprintf(g_shape, sizeof g_shape, "x [%lld, %lld, %lld] factor %lld", (long long)n0,
             (long long)per0, (long long)C, (long long)factor);
    mf_param_spec specs[MAXP];
    const int np = mf_transition_param_specs(&d, specs);
    const mf_arena_mark_t dmark = mf_arena_mark(&g_data);
    mf_transition_params p, dp;
    data_params(specs, np, MF_PARAMS_AS_ARRAY(&p), false);
    data_params(specs, np, MF_PARAMS_AS_ARRAY(&dp), true);
    const int nd = per0 > 1 ? 3 : 2;
    mf_tensor x = nd == 3 ? data_tensor(3, n0, per0, C, false) : data_tensor(2, n0, C, 0, false);
    mf_tensor out = nd == 3 ? data_tensor(3, n0, per0, C, true) : data_tensor(2, n0, C, 0, true);
    mf_tensor g = nd == 3 ? data_tensor(3, n0, per0, C, false) : data_tensor(2, n0, C, 0, false);
    mf_tensor dx = nd == 3 ? data_tensor(3, n0, per0, C, true) : data_tensor(2, n0, C, 0, true);
    g_ctx.policy = *pol;
    mf_memsim s;
    for (int acc = 0; acc < 2; acc++) { /* forward only */
        const size_t base = measure_begin();
        MF_TEST_OK(mf_transition_forward(&g_ctx, &out, acc, NULL, &x, &p, &d));
        const meas r = measure_end(base);
        sim_init(&s, pol);
        mf_transition_plan_forward(&s, n0, per0, &d, false, acc);
        compare("transition forward only", &r, &s);
    }
    for (int gm = 0; gm < 4; gm++) {
        const mf_arena_mark_t mark = mf_arena_mark(&g_arena);
        const bool acc = gm & 1;
        mf_transition_saved sv;
        size_t base = measure_begin();
        MF_TEST_OK(mf_transition_forward(&g_ctx, &out, acc, &sv, &x, &p, &d));
        meas r = measure_end(base);
        sim_init(&s, pol);
        mf_transition_plan_forward(&s, n0, per0, &d, true, acc);
        compare("transition forward saving", &r, &s);
        const bool want_dx = grad_modes[gm][0], want_dp = grad_modes[gm][1];
        base = measure_begin();
        MF_TEST_OK(mf_transition_backward(&g_ctx, want_dx ? &dx : NULL, want_dp ? &dp : NULL, &g,
                                          &sv, &x, &p, &d));
        r = measure_end(base);
        sim_init(&s, pol);
        mf_transition_plan_backward(&s, n0, per0, &d, want_dx, want_dp);
        compare("transition backward", &r, &s);
        mf_arena_release(&g_arena, mark);
    }
    mf_arena_release(&g_data, dmark);
}

/* ---- outer product mean -------------------------------------------------------------------- */

static void case_opm(const mf_policy *pol, int64_t S, int64_t N, int64_t c_m, int64_t c_h,
                     int64_t c_z)
{
    const mf_outer_product_mean_dims d = {.c_m = c_m, .c_hidden = c_h, .c_z = c_z};
    snprintf(g_shape, sizeof g_shape, "S %lld N %lld c_m %lld c_hidden %lld c_z %lld", (long long)S,
             (long long)N, (long long)c_m, (long long)c_h, (long long)c_z);
    mf_param_spec specs[MAXP];
    const int np = mf_outer_product_mean_param_specs(&d, specs);
    const mf_arena_mark_t dmark = mf_arena_mark(&g_data);
    mf_outer_product_mean_params p, dp;
    data_params(specs, np, MF_PARAMS_AS_ARRAY(&p), false);
    data_params(specs, np, MF_PARAMS_AS_ARRAY(&dp), true);
    mf_tensor m = data_tensor(3, S, N, c_m, false), mask = data_mask(S, N);
    mf_tensor dm = data_tensor(3, S, N, c_m, true);
    mf_tensor out = data_tensor(3, N, N, c_z, true), g = data_tensor(3, N, N, c_z, false);
    g_ctx.policy = *pol;
    mf_memsim s;
    for (int acc = 0; acc < 2; acc++) {
        const size_t base = measure_begin();
        MF_TEST_OK(mf_outer_product_mean_forward(&g_ctx, &out, acc, NULL, &m, &mask, &p, &d));
        const meas r = measure_end(base);
        sim_init(&s, pol);
        mf_outer_product_mean_plan_forward(&s, S, N, &d, false, acc);
        compare("outer_product_mean forward only", &r, &s);
    }
    for (int gm = 0; gm < 4; gm++) {
        const mf_arena_mark_t mark = mf_arena_mark(&g_arena);
        const bool acc = gm & 1;
        mf_outer_product_mean_saved sv;
        size_t base = measure_begin();
        MF_TEST_OK(mf_outer_product_mean_forward(&g_ctx, &out, acc, &sv, &m, &mask, &p, &d));
        meas r = measure_end(base);
        sim_init(&s, pol);
        mf_outer_product_mean_plan_forward(&s, S, N, &d, true, acc);
        compare("outer_product_mean forward saving", &r, &s);
        const bool want_dm = grad_modes[gm][0], want_dp = grad_modes[gm][1];
        base = measure_begin();
        MF_TEST_OK(mf_outer_product_mean_backward(
            &g_ctx, want_dm ? &dm : NULL, want_dp ? &dp : NULL, &g, &sv, &m, &mask, &p, &d));
        r = measure_end(base);
        sim_init(&s, pol);
        mf_outer_product_mean_plan_backward(&s, S, N, &d, want_dm, want_dp);
        compare("outer_product_mean backward", &r, &s);
        mf_arena_release(&g_arena, mark);
    }
    mf_arena_release(&g_data, dmark);
}

/* ---- triangle multiplication --------------------------------------------------------------- */

static void case_tri_mul(const mf_policy *pol, int64_t N, int64_t c_z, int64_t c_h, bool outgoing)
{
    const mf_triangle_multiplication_dims d = {.c_z = c_z, .c_hidden = c_h, .outgoing = outgoing};
    snprintf(g_shape, sizeof g_shape, "N %lld c_z %lld c_hidden %lld %s", (long long)N,
             (long long)c_z, (long long)c_h, outgoing ? "outgoing" : "incoming");
    mf_param_spec specs[MAXP];
    const int np = mf_triangle_multiplication_param_specs(&d, specs);
    const mf_arena_mark_t dmark = mf_arena_mark(&g_data);
    mf_triangle_multiplication_params p, dp;
    data_params(specs, np, MF_PARAMS_AS_ARRAY(&p), false);
    data_params(specs, np, MF_PARAMS_AS_ARRAY(&dp), true);
    mf_tensor z = data_tensor(3, N, N, c_z, false), mask = data_mask(N, N);
    mf_tensor dz = data_tensor(3, N, N, c_z, true);
    mf_tensor out = data_tensor(3, N, N, c_z, true), g = data_tensor(3, N, N, c_z, false);
    g_ctx.policy = *pol;
    mf_memsim s;
    for (int acc = 0; acc < 2; acc++) {
        const size_t base = measure_begin();
        MF_TEST_OK(mf_triangle_multiplication_forward(&g_ctx, &out, acc, NULL, &z, &mask, &p, &d));
        const meas r = measure_end(base);
        sim_init(&s, pol);
        mf_triangle_multiplication_plan_forward(&s, N, &d, false, acc);
        compare("triangle_multiplication forward only", &r, &s);
    }
    for (int gm = 0; gm < 4; gm++) {
        const mf_arena_mark_t mark = mf_arena_mark(&g_arena);
        const bool acc = gm & 1;
        mf_triangle_multiplication_saved sv;
        size_t base = measure_begin();
        MF_TEST_OK(mf_triangle_multiplication_forward(&g_ctx, &out, acc, &sv, &z, &mask, &p, &d));
        meas r = measure_end(base);
        sim_init(&s, pol);
        mf_triangle_multiplication_plan_forward(&s, N, &d, true, acc);
        compare("triangle_multiplication forward saving", &r, &s);
        const bool want_dz = grad_modes[gm][0], want_dp = grad_modes[gm][1];
        base = measure_begin();
        MF_TEST_OK(mf_triangle_multiplication_backward(
            &g_ctx, want_dz ? &dz : NULL, want_dp ? &dp : NULL, &g, &sv, &z, &mask, &p, &d));
        r = measure_end(base);
        sim_init(&s, pol);
        mf_triangle_multiplication_plan_backward(&s, N, &d, want_dz, want_dp);
        compare("triangle_multiplication backward", &r, &s);
        mf_arena_release(&g_arena, mark);
    }
    mf_arena_release(&g_data, dmark);
}

static void test_modules(void)
{
    const long long c0 = g_cases;
    for (int ci = 0; ci < NCHUNKS; ci++)
        for (int sto = 0; sto < 2; sto++)
            for (int cmp = 0; cmp < 2; cmp++) {
                const mf_policy pol =
                    policy_of(chunks[ci], sto ? MF_BF16 : MF_F32, cmp ? MF_BF16 : MF_F32);
                /* an arena offset that is not 0 at the start of the measured call */
                void *pad;
                const mf_arena_mark_t mark = mf_arena_mark(&g_arena);
                MF_TEST_OK(mf_arena_alloc(&g_arena, (size_t)rnd(1, 3000), "offset", &pad));
                for (int k = 0; k < 2; k++) {
                    case_transition(&pol, rnd(1, 9), k ? 1 : rnd(1, 6), rnd(2, 8), rnd(1, 4));
                    case_opm(&pol, rnd(1, 6), rnd(1, 9), rnd(2, 6), rnd(1, 4), rnd(2, 5));
                    case_tri_mul(&pol, rnd(1, 9), rnd(2, 6), rnd(1, 5), k == 0);
                }
                mf_arena_release(&g_arena, mark);
            }
    printf("modules: %lld comparisons (transition, outer product mean, triangle multiplication)\n",
           g_cases - c0);
}

int main(void)
{
    MF_TEST_OK(mf_test_ctx_cpu(&g_ctx, &g_arena, (size_t)256 << 20));
    MF_TEST_OK(mf_arena_init(&g_data, MF_DEV_CPU, (size_t)64 << 20, "data"));
    test_modules();
    printf("memplan blocks: %lld comparisons, max |plan - real| = %zu bytes (largest peak %zu "
           "bytes)\n",
           g_cases, g_max_dev, g_max_peak);
    mf_arena_destroy(&g_data);
    mf_test_ctx_free(&g_ctx, &g_arena);
    return mf_test_finish("test_memplan_blocks");
}
