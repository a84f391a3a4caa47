/* The memory model's embedder plans (model/embedders_memplan.h) against the arena: each embedder
 * of model/embedders.h runs for real (f32, random parameters and inputs) on a CPU arena, and its
 * plan replays on a fresh simulator; the peak above the starting offset and the bytes left
 * allocated must be equal EXACTLY. Grid: sizes that are and are not multiples of the chunk,
 * chunk off / 1 / 2 / 3 / 7 / larger than the rows, storage f32 / bf16, compute f32 / bf16;
 * forward saving and forward-only, written and accumulated; backward with every gradient, with
 * parameter gradients only, input gradients only and none. */
#include <stdlib.h>
#include <string.h>

#include "model/embedders_memplan.h"
#include "tests/support/mf_test.h"

static mf_arena arena;
static mf_ctx ctx;
static int cases, mismatches;
static uint64_t seed_counter = 1;

static int64_t rnd(uint64_t *st, int64_t lo, int64_t hi)
{
    *st = *st * 6364136223846793005ull + 1442695040888963407ull;
    return lo + (int64_t)((*st >> 33) % (uint64_t)(hi - lo + 1));
}

static mf_tensor make(int ndim, const int64_t *shape)
{
    mf_tensor t;
    if (mf_arena_tensor(&arena, &t, MF_F32, ndim, shape, "test operand") != MF_OK) abort();
    mf_test_fill_normal_f32(t.data, mf_tensor_numel(&t), seed_counter++, 1.0f);
    return t;
}

static mf_tensor make_bins(int64_t n, int64_t num_bins, uint64_t *st)
{
    mf_tensor t;
    if (mf_arena_tensor(&arena, &t, MF_I32, 1, &n, "test bins") != MF_OK) abort();
    for (int64_t i = 0; i < n; i++) ((int32_t *)t.data)[i] = (int32_t)rnd(st, -1, num_bins - 1);
    return t;
}

/* A module's parameters (random where AF2 initialises randomly) from the arena. */
static void make_params(const mf_param_spec *specs, int n, mf_tensor *p)
{
    if (mf_params_alloc(&arena, specs, n, p, "test params") != MF_OK) abort();
    if (mf_params_init(specs, n, p, seed_counter++, 0) != MF_OK) abort();
}

/* Runs the call on the arena, its plan on a fresh simulator; compares peak and balance. */
#define COMPARE(desc, real_call, plan_call)                                                        \
    do {                                                                                           \
        size_t off0 = mf_arena_used(&arena);                                                       \
        mf_arena_reset_peak(&arena);                                                               \
        MF_TEST_OK(real_call);                                                                     \
        size_t real_peak = mf_arena_high_water(&arena) - off0;                                     \
        size_t real_left = mf_arena_used(&arena) - off0;                                           \
        mf_memsim s;                                                                               \
        mf_memsim_init(&s, &ctx, MF_DEV_CPU, &ctx.policy);                                         \
        plan_call;                                                                                 \
        cases++;                                                                                   \
        bool ok = s.peak == real_peak && s.cur == real_left && s.status == MF_OK;                  \
        if (!ok) mismatches++;                                                                     \
        MF_TEST_TRUE(ok, "%s [%s]: plan peak %zu left %zu, arena peak %zu left %zu", desc, pol,    \
                     s.peak, s.cur, real_peak, real_left);                                         \
    } while (0)

/* Backward flag sets: every gradient, parameters only, inputs only, nothing asked. */
static const bool grad_sets[4][2] = {{true, true}, {false, true}, {true, false}, {false, false}};

static void input_embedder(const char *pol, int64_t S, int64_t N, uint64_t *st)
{
    const mf_input_embedder_dims d = {
        .target_feat_dim = 22, .msa_feat_dim = 49, .c_m = 8, .c_z = 6, .max_relative_feature = 4};
    mf_arena_mark_t mark = mf_arena_mark(&arena);
    mf_param_spec specs[MF_INPUT_EMBEDDER_NUM_PARAMS];
    const int np = mf_input_embedder_param_specs(&d, specs);
    mf_input_embedder_params p, dp;
    make_params(specs, np, MF_PARAMS_AS_ARRAY(&p));
    make_params(specs, np, MF_PARAMS_AS_ARRAY(&dp));
    mf_tensor tf = make(2, (int64_t[]){N, 22}), mf = make(3, (int64_t[]){S, N, 49});
    mf_tensor dtf = make(2, (int64_t[]){N, 22}), dmf = make(3, (int64_t[]){S, N, 49});
    mf_tensor msa = make(3, (int64_t[]){S, N, d.c_m}), pair = make(3, (int64_t[]){N, N, d.c_z});
    mf_tensor ri, bins;
    MF_TEST_OK(mf_arena_tensor(&arena, &ri, MF_I32, 1, &N, "test residue index"));
    for (int64_t i = 0; i < N; i++) ((int32_t *)ri.data)[i] = (int32_t)(i + rnd(st, 0, 3) * i);
    MF_TEST_OK(mf_arena_tensor(&arena, &bins, MF_I32, 2, (int64_t[]){N, N}, "test relpos"));
    MF_TEST_OK(mf_relpos_bins(&bins, &ri, d.max_relative_feature));
    char desc[128];
    for (int k = 0; k < 4; k++) {
        const bool saving = k & 1, acc = k & 2;
        mf_input_embedder_saved sv = {0};
        snprintf(desc, sizeof desc, "input embedder S %lld N %lld saving %d acc %d", (long long)S,
                 (long long)N, saving, acc);
        COMPARE(desc,
                mf_input_embedder_forward(&ctx, &msa, &pair, acc, saving ? &sv : NULL, &tf, &mf,
                                          &bins, &p, &d),
                mf_input_embedder_plan_forward(&s, S, N, &d, saving, acc));
    }
    for (int k = 0; k < 12; k++) {
        const int which = k / 4; /* both output gradients, dmsa only, dpair only */
        const bool gm = which != 2, gz = which != 1, gin = grad_sets[k % 4][0];
        const bool gtf = gin && which != 1, gmf = gin && which != 0, gp = grad_sets[k % 4][1];
        snprintf(desc, sizeof desc,
                 "input embedder backward S %lld N %lld dmsa %d dpair %d dtf %d dmf %d dp %d",
                 (long long)S, (long long)N, gm, gz, gtf, gmf, gp);
        COMPARE(desc,
                mf_input_embedder_backward(&ctx, gtf ? &dtf : NULL, gmf ? &dmf : NULL,
                                           gp ? &dp : NULL, gm ? &msa : NULL, gz ? &pair : NULL,
                                           NULL, &tf, &mf, &bins, &p, &d),
                mf_input_embedder_plan_backward(&s, S, N, &d, gm, gz, gtf, gmf, gp));
    }
    mf_arena_release(&arena, mark);
}

static void recycling_embedder(const char *pol, int64_t N, uint64_t *st)
{
    const mf_recycling_embedder_dims d = {
        .c_m = 8, .c_z = 6, .num_bins = 15, .min_bin = 3.25, .max_bin = 20.75};
    mf_arena_mark_t mark = mf_arena_mark(&arena);
    mf_param_spec specs[MF_RECYCLING_EMBEDDER_NUM_PARAMS];
    const int np = mf_recycling_embedder_param_specs(&d, specs);
    mf_recycling_embedder_params p, dp;
    make_params(specs, np, MF_PARAMS_AS_ARRAY(&p));
    make_params(specs, np, MF_PARAMS_AS_ARRAY(&dp));
    mf_tensor m1p = make(2, (int64_t[]){N, d.c_m}), zp = make(3, (int64_t[]){N, N, d.c_z});
    mf_tensor m1u = make(2, (int64_t[]){N, d.c_m}), zu = make(3, (int64_t[]){N, N, d.c_z});
    mf_tensor dm1p = make(2, (int64_t[]){N, d.c_m}), dzp = make(3, (int64_t[]){N, N, d.c_z});
    mf_tensor bins = make_bins(N * N, d.num_bins, st);
    char desc[128];
    for (int k = 0; k < 4; k++) {
        const bool saving = k & 1, acc = k & 2;
        mf_recycling_embedder_saved sv = {0};
        mf_arena_mark_t m2 = mf_arena_mark(&arena);
        snprintf(desc, sizeof desc, "recycling embedder N %lld saving %d acc %d", (long long)N,
                 saving, acc);
        COMPARE(desc,
                mf_recycling_embedder_forward(&ctx, &m1u, &zu, acc, saving ? &sv : NULL, &m1p, &zp,
                                              &bins, &p, &d),
                mf_recycling_embedder_plan_forward(&s, N, &d, saving, acc));
        if (saving) {
            for (int g = 0; g < 6; g++) {
                const bool gm = g != 1, gz = g != 2, gin = g % 2, gp = g < 4;
                snprintf(desc, sizeof desc,
                         "recycling embedder backward N %lld dm1 %d dz %d dprev %d dp %d",
                         (long long)N, gm, gz, gin, gp);
                COMPARE(desc,
                        mf_recycling_embedder_backward(
                            &ctx, gin ? &dm1p : NULL, gin ? &dzp : NULL, gp ? &dp : NULL,
                            gm ? &m1u : NULL, gz ? &zu : NULL, &sv, &m1p, &zp, &bins, &p, &d),
                        mf_recycling_embedder_plan_backward(&s, N, &d, gm, gz, gp));
            }
        }
        mf_arena_release(&arena, m2);
    }
    mf_arena_release(&arena, mark);
}

static void linear_embedders(const char *pol, int64_t E, int64_t R, int64_t N)
{
    const mf_extra_msa_embedder_dims de = {.extra_msa_feat_dim = 25, .c_e = 5};
    const mf_template_pair_embedder_dims dt = {.pair_feat_dim = 88,
                                               .c_t = 4,
                                               .num_bins = 39,
                                               .min_bin = 3.25,
                                               .max_bin = 50.75,
                                               .use_unit_vector = false};
    mf_arena_mark_t mark = mf_arena_mark(&arena);
    mf_param_spec se[MF_EXTRA_MSA_EMBEDDER_NUM_PARAMS], stp[MF_TEMPLATE_PAIR_EMBEDDER_NUM_PARAMS];
    const int ne = mf_extra_msa_embedder_param_specs(&de, se);
    const int nt = mf_template_pair_embedder_param_specs(&dt, stp);
    mf_extra_msa_embedder_params pe, dpe;
    mf_template_pair_embedder_params pt, dpt;
    make_params(se, ne, MF_PARAMS_AS_ARRAY(&pe));
    make_params(se, ne, MF_PARAMS_AS_ARRAY(&dpe));
    make_params(stp, nt, MF_PARAMS_AS_ARRAY(&pt));
    make_params(stp, nt, MF_PARAMS_AS_ARRAY(&dpt));
    mf_tensor xe = make(3, (int64_t[]){E, N, 25}), dxe = make(3, (int64_t[]){E, N, 25});
    mf_tensor ye = make(3, (int64_t[]){E, N, de.c_e});
    mf_tensor xt = make(3, (int64_t[]){R, N, 88}), dxt = make(3, (int64_t[]){R, N, 88});
    mf_tensor yt = make(3, (int64_t[]){R, N, dt.c_t});
    char desc[128];
    for (int k = 0; k < 4; k++) {
        const bool saving = k & 1, acc = k & 2;
        mf_extra_msa_embedder_saved sve = {0};
        mf_template_pair_embedder_saved svt = {0};
        snprintf(desc, sizeof desc, "extra-MSA embedder E %lld N %lld saving %d acc %d",
                 (long long)E, (long long)N, saving, acc);
        COMPARE(desc,
                mf_extra_msa_embedder_forward(&ctx, &ye, acc, saving ? &sve : NULL, &xe, &pe, &de),
                mf_extra_msa_embedder_plan_forward(&s, E, N, &de, saving, acc));
        snprintf(desc, sizeof desc, "template pair embedder rows %lld N %lld saving %d acc %d",
                 (long long)R, (long long)N, saving, acc);
        COMPARE(
            desc,
            mf_template_pair_embedder_forward(&ctx, &yt, acc, saving ? &svt : NULL, &xt, &pt, &dt),
            mf_template_pair_embedder_plan_forward(&s, R, N, &dt, saving, acc));
    }
    for (int g = 0; g < 4; g++) {
        const bool gx = grad_sets[g][0], gp = grad_sets[g][1];
        snprintf(desc, sizeof desc, "extra-MSA embedder backward E %lld N %lld dfeat %d dp %d",
                 (long long)E, (long long)N, gx, gp);
        COMPARE(desc,
                mf_extra_msa_embedder_backward(&ctx, gx ? &dxe : NULL, gp ? &dpe : NULL, &ye, NULL,
                                               &xe, &pe, &de),
                mf_extra_msa_embedder_plan_backward(&s, E, N, &de, gx, gp));
        snprintf(desc, sizeof desc,
                 "template pair embedder backward rows %lld N %lld dfeat %d dp %d", (long long)R,
                 (long long)N, gx, gp);
        COMPARE(desc,
                mf_template_pair_embedder_backward(&ctx, gx ? &dxt : NULL, gp ? &dpt : NULL, &yt,
                                                   NULL, &xt, &pt, &dt),
                mf_template_pair_embedder_plan_backward(&s, R, N, &dt, gx, gp));
    }
    mf_arena_release(&arena, mark);
}

static void template_single_embedder(const char *pol, int64_t T, int64_t N)
{
    const mf_template_single_embedder_dims d = {.angle_feat_dim = 57, .c_m = 8};
    mf_arena_mark_t mark = mf_arena_mark(&arena);
    mf_param_spec specs[MF_TEMPLATE_SINGLE_EMBEDDER_NUM_PARAMS];
    const int np = mf_template_single_embedder_param_specs(&d, specs);
    mf_template_single_embedder_params p, dp;
    make_params(specs, np, MF_PARAMS_AS_ARRAY(&p));
    make_params(specs, np, MF_PARAMS_AS_ARRAY(&dp));
    mf_tensor x = make(3, (int64_t[]){T, N, 57}), dx = make(3, (int64_t[]){T, N, 57});
    mf_tensor y = make(3, (int64_t[]){T, N, d.c_m});
    char desc[128];
    for (int k = 0; k < 4; k++) {
        const bool saving = k & 1, acc = k & 2;
        mf_template_single_embedder_saved sv = {0};
        mf_arena_mark_t m2 = mf_arena_mark(&arena);
        snprintf(desc, sizeof desc, "template single embedder T %lld N %lld saving %d acc %d",
                 (long long)T, (long long)N, saving, acc);
        COMPARE(desc,
                mf_template_single_embedder_forward(&ctx, &y, acc, saving ? &sv : NULL, &x, &p, &d),
                mf_template_single_embedder_plan_forward(&s, T, N, &d, saving, acc));
        if (saving) {
            for (int g = 0; g < 4; g++) {
                const bool gx = grad_sets[g][0], gp = grad_sets[g][1];
                snprintf(desc, sizeof desc,
                         "template single embedder backward T %lld N %lld dfeat %d dp %d",
                         (long long)T, (long long)N, gx, gp);
                COMPARE(desc,
                        mf_template_single_embedder_backward(&ctx, gx ? &dx : NULL, gp ? &dp : NULL,
                                                             &y, &sv, &x, &p, &d),
                        mf_template_single_embedder_plan_backward(&s, T, N, &d, gx, gp));
            }
        }
        mf_arena_release(&arena, m2);
    }
    mf_arena_release(&arena, mark);
}

int main(void)
{
    MF_TEST_OK(mf_test_ctx_cpu(&ctx, &arena, (size_t)1 << 30));
    const int64_t chunks[] = {0, 1, 2, 3, 7, 1000};
    uint64_t st = 777;
    for (size_t ci = 0; ci < sizeof chunks / sizeof chunks[0]; ci++)
        for (int prec = 0; prec < 4; prec++) {
            ctx.policy = mf_policy_default();
            ctx.policy.chunk_size = chunks[ci];
            ctx.policy.storage = prec & 1 ? MF_BF16 : MF_F32;
            ctx.policy.compute = prec & 2 ? MF_BF16 : MF_F32;
            char pol[160];
            mf_policy_describe(&ctx.policy, pol, sizeof pol);
            for (int rep = 0; rep < 2; rep++) {
                /* sizes 1 .. 40: below, at and past the chunk, multiples and not; large enough
                 * row counts (S*N, N*N up to 1600) for more than one bias-partial block */
                const int64_t N = rep ? rnd(&st, 1, 9) : rnd(&st, 10, 40);
                input_embedder(pol, rnd(&st, 1, 9), N, &st);
                recycling_embedder(pol, N, &st);
                linear_embedders(pol, rnd(&st, 1, 16), rnd(&st, 1, N), N);
                template_single_embedder(pol, rnd(&st, 1, 5), N);
            }
        }
    printf("memplan embedder plans: %d cases, %d mismatches (exact peak and balance required)\n",
           cases, mismatches);
    mf_test_ctx_free(&ctx, &arena);
    return mf_test_finish("test_memplan_embedders");
}
