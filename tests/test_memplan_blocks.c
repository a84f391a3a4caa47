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
 * gradients, the input gradient only, the parameter gradients only and none. Blocks and stacks
 * (single blocks, and stacks of 3 so that every:2 ends on a partial group): recompute off / block /
 * every:2, chunk off/3, storage f32/bf16, dropout on/off, training (forward saving, backward, and
 * both composed on one simulator) and inference (saved NULL) with inplace on/off, plus a few
 * larger blocks. A dropout mask is a small transient that never sets a block's peak (the module
 * that follows takes more), so the dropout plan is checked on its own. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "evoformer/evoformer_stack.h"
#include "evoformer/outer_product_mean.h"
#include "evoformer/transition.h"
#include "evoformer/triangle_multiplication.h"
#include "memopt/memplan.h"
#include "tests/support/mf_test.h"

/* the block/stack case builder of test_evoformer_block.c (not all of it is used here) */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#include "tests/evoformer_block_harness.inc"
#pragma GCC diagnostic pop

#define MAXP 32

static mf_ctx g_ctx;
static mf_arena g_arena;  /* activations: what is measured */
static mf_arena g_data;   /* parameters, inputs, gradients: outside the measurement */
static mf_arena g_host;   /* offloaded checkpoints (g_ctx.host_arena in the offload cases) */
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
    static mf_memsim host; /* the host arena's simulator, fresh with each simulator */
    mf_memsim_init(s, &g_ctx, MF_DEV_CPU, pol);
    mf_memsim_init(&host, &g_ctx, MF_DEV_CPU, pol);
    s->offload_to = g_ctx.host_arena ? &host : NULL;
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

/* ---- dropout (its mask is arena scratch: the block plans place it, this checks its size) --- */

static void case_dropout(int64_t a0, int64_t a1, int64_t C)
{
    snprintf(g_shape, sizeof g_shape, "x [%lld, %lld, %lld]", (long long)a0, (long long)a1,
             (long long)C);
    const mf_arena_mark_t dmark = mf_arena_mark(&g_data);
    mf_tensor x = data_tensor(3, a0, a1, C, false);
    const mf_dropout_key keys[2] = {mf_dropout_key_inference(),
                                    mf_dropout_key_training(5, MF_DROPOUT_STACK_EVOFORMER, 0)};
    const double rates[2] = {0.0, 0.25};
    for (int k = 0; k < 2; k++)
        for (int r = 0; r < 2; r++)
            for (int o = 0; o < 2; o++) {
                const mf_dropout_orientation ori = o ? MF_DROPOUT_COLUMNWISE : MF_DROPOUT_ROWWISE;
                const size_t base = measure_begin();
                MF_TEST_OK(mf_dropout_forward(&g_ctx, &x, rates[r], ori, &keys[k],
                                              MF_DROPOUT_MSA_ROW_ATTENTION));
                const meas m = measure_end(base);
                mf_memsim s;
                sim_init(&s, &g_ctx.policy);
                mf_dropout_plan_forward(&s, a0, a1, C, rates[r], ori, &keys[k]);
                compare("dropout", &m, &s);
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
                    if (ci == 0 && cmp == 0) case_dropout(rnd(1, 40), rnd(1, 40), rnd(1, 20));
                }
                mf_arena_release(&g_arena, mark);
            }
    printf("modules: %lld comparisons (transition, outer product mean, triangle multiplication, "
           "dropout)\n",
           g_cases - c0);
}

/* ---- blocks and stacks (block_engine.h, evoformer_stack.h) ------------------------------------
 */

static void block_layout(const h_case *c, mf_evo_block *b)
{
    if (c->kind == K_TEMPLATE_PAIR)
        mf_template_pair_block_layout(b, &c->td);
    else
        mf_evoformer_block_layout(b, &c->ed, c->kind == K_EXTRA_MSA);
}

/* The public per-kind plans (memfold's convention: a saving forward is a trained one, with
 * dropout at the dims' rates; none without saving). */
static void simple_forward(mf_memsim *s, const h_case *c, bool saving)
{
    const int64_t S = c->sz.S, N = c->sz.N;
    if (c->nblocks) {
        if (c->kind == K_EVOFORMER)
            mf_evoformer_stack_plan_forward(s, S, N, &c->ed, c->nblocks, saving);
        else if (c->kind == K_EXTRA_MSA)
            mf_extra_msa_stack_plan_forward(s, S, N, &c->ed, c->nblocks, saving);
        else
            mf_template_pair_stack_plan_forward(s, N, &c->td, c->nblocks, saving);
    } else {
        if (c->kind == K_EVOFORMER)
            mf_evoformer_block_plan_forward(s, S, N, &c->ed, saving);
        else if (c->kind == K_EXTRA_MSA)
            mf_extra_msa_block_plan_forward(s, S, N, &c->ed, saving);
        else
            mf_template_pair_block_plan_forward(s, N, &c->td, saving);
    }
}

static void simple_backward(mf_memsim *s, const h_case *c, bool dparams)
{
    const int64_t S = c->sz.S, N = c->sz.N;
    if (c->nblocks) {
        if (c->kind == K_EVOFORMER)
            mf_evoformer_stack_plan_backward(s, S, N, &c->ed, c->nblocks, dparams);
        else if (c->kind == K_EXTRA_MSA)
            mf_extra_msa_stack_plan_backward(s, S, N, &c->ed, c->nblocks, dparams);
        else
            mf_template_pair_stack_plan_backward(s, N, &c->td, c->nblocks, dparams);
    } else {
        if (c->kind == K_EVOFORMER)
            mf_evoformer_block_plan_backward(s, S, N, &c->ed, dparams);
        else if (c->kind == K_EXTRA_MSA)
            mf_extra_msa_block_plan_backward(s, S, N, &c->ed, dparams);
        else
            mf_template_pair_block_plan_backward(s, N, &c->td, dparams);
    }
}

/* The engine-level plans with the case's own key. */
static void general_forward(mf_memsim *s, const h_case *c, bool saving)
{
    mf_evo_block b;
    block_layout(c, &b);
    const int64_t S = h_has_msa(c) ? c->sz.S : 0, N = c->sz.N;
    if (c->nblocks)
        mf_evo_stack_plan_forward(s, &b, S, N, c->nblocks, saving, &c->key);
    else
        mf_evo_block_plan_forward(s, &b, S, N, saving, &c->key);
}

static void general_backward(mf_memsim *s, const h_case *c, bool dparams)
{
    mf_evo_block b;
    block_layout(c, &b);
    const int64_t S = h_has_msa(c) ? c->sz.S : 0, N = c->sz.N;
    if (c->nblocks)
        mf_evo_stack_plan_backward(s, &b, S, N, c->nblocks, &c->key, dparams);
    else
        mf_evo_block_plan_backward(s, &b, S, N, &c->key, dparams);
}

static void describe_case(const h_case *c, const char *mode)
{
    snprintf(g_shape, sizeof g_shape, "%s%s x%lld S %lld N %lld, dropout %s, %s",
             h_kind_name[c->kind], c->nblocks ? " stack" : "",
             (long long)(c->nblocks ? c->nblocks : 1), (long long)c->sz.S, (long long)c->sz.N,
             c->key.training && (c->sz.rate_row > 0 || c->sz.rate_tri_mul > 0) ? "on" : "off",
             mode);
}

/* Training: the forward with saving, then the backward (parameter gradients when dparams),
 * each measured on its own, and the two composed on one simulator against the whole run. The
 * case's key is a training key (dropout on when its rates are nonzero). */
static void run_training(const h_case *c, const mf_policy *pol, bool dparams)
{
    describe_case(c, dparams ? "train, all gradients" : "train, input gradients only");
    g_ctx.policy = *pol;
    const mf_dtype dt = MF_F32;
    void *P = h_copy_as(c->P, c->nparam, dt), *m = h_copy_as(c->m, c->nm, dt),
         *z = h_copy_as(c->z, c->nz, dt), *mm = h_copy_as(c->msa_mask, c->nmask_m, dt),
         *pm = h_copy_as(c->pair_mask, c->nmask_z, dt), *gm = h_copy_as(c->gm, c->nm, dt),
         *gz = h_copy_as(c->gz, c->nz, dt), *dP = h_zeros(c->nparam, dt);
    void *om = h_zeros(c->nm, dt), *oz = h_zeros(c->nz, dt), *dm = h_zeros(c->nm, dt),
         *dz = h_zeros(c->nz, dt);
    mf_tensor T[H_MAXP], dT[H_MAXP];
    h_param_tensors(c, P, dt, T);
    h_param_tensors(c, dP, dt, dT);
    const h_inputs in = h_input_tensors(c, m, z, mm, pm, dt);
    const mf_arena_mark_t mark = mf_arena_mark(&g_arena), hmark = mf_arena_mark(&g_host);
    mf_arena_reset_peak(&g_host);
    mf_evo_block_saved blocks[8];
    mf_evo_stack_saved ssaved = {.blocks = blocks, .capacity = 8};
    mf_evo_block_saved bsaved;
    const size_t base0 = measure_begin();
    size_t base = base0;
    if (c->nblocks) {
        memcpy(om, m, (size_t)c->nm * sizeof(float));
        memcpy(oz, z, (size_t)c->nz * sizeof(float));
        h_inputs out = h_input_tensors(c, om, oz, mm, pm, dt);
        MF_TEST_OK(h_stack_forward(&g_ctx, c, T, &out.m, &out.z, &ssaved, &in));
    } else {
        h_inputs out = h_input_tensors(c, om, oz, mm, pm, dt);
        MF_TEST_OK(h_block_forward(&g_ctx, c, T, &out.m, &out.z, &bsaved, &in));
    }
    const meas rf = measure_end(base);
    base = measure_begin();
    if (c->nblocks) {
        h_inputs grad = h_input_tensors(c, gm, gz, mm, pm, dt);
        MF_TEST_OK(
            h_stack_backward(&g_ctx, c, T, dparams ? dT : NULL, &grad.m, &grad.z, &ssaved, &in));
    } else {
        h_inputs gout = h_input_tensors(c, gm, gz, mm, pm, dt);
        h_inputs gin = h_input_tensors(c, dm, dz, mm, pm, dt);
        MF_TEST_OK(h_block_backward(&g_ctx, c, T, dparams ? dT : NULL, &gin.m, &gin.z, &gout.m,
                                    &gout.z, &bsaved, &in));
    }
    const meas rb = measure_end(base);
    /* the whole step from the first offset: the forward's peak, or what it left plus the
     * backward's */
    const meas rall = {rf.peak > rf.left + rb.peak ? rf.peak : rf.left + rb.peak,
                       rf.left + rb.left};
    const size_t host_peak = mf_arena_high_water(&g_host) - hmark.offset;
    mf_arena_release(&g_arena, mark);
    mf_arena_release(&g_host, hmark);
    (void)base0;

    mf_memsim s;
    sim_init(&s, pol);
    general_forward(&s, c, true);
    compare("forward saving", &rf, &s);
    sim_init(&s, pol);
    general_backward(&s, c, dparams);
    compare("backward", &rb, &s);
    sim_init(&s, pol);
    general_forward(&s, c, true);
    general_backward(&s, c, dparams);
    compare("forward + backward", &rall, &s);
    g_cases++;
    MF_TEST_TRUE(!pol->offload || !g_ctx.host_arena || host_peak > 0,
                 "offload %s: no checkpoint reached the host arena", g_shape);
    const size_t plan_host = s.offload_to ? s.offload_to->peak : 0;
    MF_TEST_TRUE(plan_host == host_peak,
                 "offloaded checkpoints %s: real host arena peak %zu, plan %zu", g_shape, host_peak,
                 plan_host);
    sim_init(&s, pol);
    simple_forward(&s, c, true);
    compare("forward saving (per-kind plan)", &rf, &s);
    sim_init(&s, pol);
    simple_backward(&s, c, dparams);
    compare("backward (per-kind plan)", &rb, &s);
    free(P), free(m), free(z), free(mm), free(pm), free(gm), free(gz), free(dP);
    free(om), free(oz), free(dm), free(dz);
}

/* Inference (saved NULL) under the case's key; the per-kind plan too when the key is an
 * inference key. */
static void run_inference(const h_case *c, const mf_policy *pol)
{
    describe_case(c, pol->inplace ? "inference, inplace" : "inference");
    g_ctx.policy = *pol;
    const mf_dtype dt = MF_F32;
    void *P = h_copy_as(c->P, c->nparam, dt), *m = h_copy_as(c->m, c->nm, dt),
         *z = h_copy_as(c->z, c->nz, dt), *mm = h_copy_as(c->msa_mask, c->nmask_m, dt),
         *pm = h_copy_as(c->pair_mask, c->nmask_z, dt);
    void *om = h_zeros(c->nm, dt), *oz = h_zeros(c->nz, dt);
    const size_t base = measure_begin();
    MF_TEST_OK(h_forward_only(&g_ctx, c, dt, P, m, z, mm, pm, om, oz));
    const meas r = measure_end(base);
    mf_memsim s;
    sim_init(&s, pol);
    general_forward(&s, c, false);
    compare("forward only", &r, &s);
    if (!c->key.training) {
        sim_init(&s, pol);
        simple_forward(&s, c, false);
        compare("forward only (per-kind plan)", &r, &s);
    }
    free(P), free(m), free(z), free(mm), free(pm), free(om), free(oz);
}

static h_sizes block_sizes(int64_t N, bool dropout)
{
    h_sizes sz = {.S = 3,
                  .N = N,
                  .c_m = 6,
                  .c_z = 4,
                  .heads = 2,
                  .c_hidden = 3,
                  .factor = 2,
                  .opm_c = 3,
                  .tri_mul_c = 4};
    if (dropout) {
        sz.rate_row = 0.15;
        sz.rate_col = 0.1; /* AF2 has 0; nonzero here to exercise the column-wise mask */
        sz.rate_tri_mul = 0.25;
        sz.rate_tri_att = 0.25;
    }
    return sz;
}

static void test_blocks(void)
{
    const long long c0 = g_cases;
    static const struct {
        mf_recompute rc;
        int every;
    } rcs[] = {{MF_RECOMPUTE_OFF, 0}, {MF_RECOMPUTE_BLOCK, 0}, {MF_RECOMPUTE_EVERY_K, 2}};
    static const int64_t bchunks[] = {0, 3};
    int n = 0;
    for (int kind = 0; kind < 3; kind++)
        for (int stack = 0; stack < 2; stack++)
            for (int r = 0; r < 3; r++)
                for (int ci = 0; ci < 2; ci++)
                    for (int sto = 0; sto < 2; sto++)
                        for (int drop = 0; drop < 2; drop++, n++) {
                            /* stacks take every other storage/dropout combination */
                            if (stack && ((sto + drop + ci) & 1)) continue;
                            mf_policy pol = policy_of(bchunks[ci], sto ? MF_BF16 : MF_F32,
                                                      n % 5 == 0 ? MF_BF16 : MF_F32);
                            pol.recompute = rcs[r].rc;
                            pol.recompute_every = rcs[r].every;
                            const h_sizes sz = block_sizes(n & 1 ? 5 : 7, drop);
                            h_case c;
                            h_case_init(&c, (h_kind)kind, stack ? 3 : 0, &sz, 40 + (uint64_t)n);
                            run_training(&c, &pol, (n / 2) % 2 == 0);
                            if (r > 0) { /* the checkpoints offloaded to a host arena */
                                pol.offload = true;
                                g_ctx.host_arena = &g_host;
                                run_training(&c, &pol, (n / 2) % 2 == 0);
                                g_ctx.host_arena = NULL;
                                pol.offload = false;
                            }
                            if (r == 0) { /* inference: recompute plays no part */
                                for (int inplace = 0; inplace < 2; inplace++) {
                                    pol.inplace = inplace;
                                    const mf_dropout_key train_key = c.key;
                                    if (!drop) c.key = mf_dropout_key_inference();
                                    run_inference(&c, &pol); /* with dropout when drop */
                                    c.key = train_key;
                                }
                            }
                            h_case_free(&c);
                        }
    /* a few larger blocks, where the matrix products' workspaces (oneDNN scratchpads, bf16
     * operand copies) are no longer negligible */
    for (int kind = 0; kind < 3; kind++)
        for (int r = 0; r < 2; r++, n++) {
            mf_policy pol = policy_of(r ? 11 : 0, r ? MF_BF16 : MF_F32, r ? MF_F32 : MF_BF16);
            pol.recompute = r ? MF_RECOMPUTE_BLOCK : MF_RECOMPUTE_OFF;
            h_sizes sz = {.S = 9,
                          .N = 29,
                          .c_m = 32,
                          .c_z = 24,
                          .heads = 4,
                          .c_hidden = 8,
                          .factor = 4,
                          .opm_c = 8,
                          .tri_mul_c = 24,
                          .rate_row = 0.15,
                          .rate_tri_mul = 0.25,
                          .rate_tri_att = 0.25};
            h_case c;
            h_case_init(&c, (h_kind)kind, 0, &sz, 400 + (uint64_t)n);
            run_training(&c, &pol, true);
            pol.inplace = r;
            run_inference(&c, &pol);
            h_case_free(&c);
        }
    printf(
        "blocks and stacks: %lld comparisons (Evoformer, extra-MSA, template pair; recompute "
        "off/block/every:2, checkpoints offloaded or not; chunk off/3; storage f32/bf16; dropout "
        "on/off; inplace on/off)\n",
        g_cases - c0);
}

int main(void)
{
    MF_TEST_OK(mf_test_ctx_cpu(&g_ctx, &g_arena, (size_t)256 << 20));
    MF_TEST_OK(mf_arena_init(&g_data, MF_DEV_CPU, (size_t)64 << 20, "data"));
    MF_TEST_OK(mf_arena_init(&g_host, MF_DEV_CPU, (size_t)64 << 20, "host"));
    test_modules();
    test_blocks();
    printf("memplan blocks: %lld comparisons, max |plan - real| = %zu bytes (largest peak %zu "
           "bytes)\n",
           g_cases, g_max_dev, g_max_peak);
    mf_arena_destroy(&g_data);
    mf_arena_destroy(&g_host);
    mf_test_ctx_free(&g_ctx, &g_arena);
    return mf_test_finish("test_memplan_blocks");
}
