/* The memory model's op plans (core/ops_memplan.c) against the arena: for linear and batched
 * matmul, forward and backward, f32 and bf16 compute, on random shapes, the simulated peak above
 * the starting offset equals the arena's exactly, and neither leaves anything allocated. */
#include <stdlib.h>

#include "memopt/memplan.h"
#include "tests/support/mf_test.h"

static int64_t rnd(uint64_t *st, int64_t lo, int64_t hi)
{
    *st = *st * 6364136223846793005ull + 1442695040888963407ull;
    return lo + (int64_t)((*st >> 33) % (uint64_t)(hi - lo + 1));
}

static mf_tensor make(mf_arena *a, int ndim, const int64_t *shape, uint64_t seed)
{
    mf_tensor t;
    if (mf_arena_tensor(a, &t, MF_F32, ndim, shape, "test operand") != MF_OK) abort();
    mf_test_fill_normal_f32(t.data, mf_tensor_numel(&t), seed, 1.0);
    return t;
}

static int cases, worst;

/* Runs the op on the arena and its plan on a fresh simulator; compares peaks and balance. */
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
        if (!ok) worst++;                                                                          \
        MF_TEST_TRUE(ok, "%s: plan peak %zu left %zu, arena peak %zu left %zu", desc, s.peak,      \
                     s.cur, real_peak, real_left);                                                 \
    } while (0)

int main(void)
{
    mf_arena arena;
    mf_ctx ctx;
    MF_TEST_OK(mf_arena_init(&arena, MF_DEV_CPU, (size_t)1 << 30, "test"));
    MF_TEST_OK(mf_ctx_init(&ctx, MF_DEV_CPU, &arena));
    uint64_t st = 12345;
    for (int trial = 0; trial < 40; trial++) {
        ctx.policy = mf_policy_default();
        ctx.policy.compute = trial % 2 ? MF_BF16 : MF_F32;
        mf_arena_mark_t mark = mf_arena_mark(&arena);
        char desc[160];
        /* linear */
        int64_t rows = rnd(&st, 1, 3000), in = rnd(&st, 1, 96), out = rnd(&st, 1, 96);
        mf_tensor x = make(&arena, 2, (int64_t[]){rows, in}, 1),
                  w = make(&arena, 2, (int64_t[]){in, out}, 2),
                  b = make(&arena, 1, (int64_t[]){out}, 3),
                  y = make(&arena, 2, (int64_t[]){rows, out}, 4),
                  dx = make(&arena, 2, (int64_t[]){rows, in}, 5),
                  dw = make(&arena, 2, (int64_t[]){in, out}, 6),
                  db = make(&arena, 1, (int64_t[]){out}, 7);
        bool acc = trial % 3 == 0, bias = trial % 4 != 1;
        snprintf(desc, sizeof desc, "linear %lldx%lld->%lld %s acc %d bias %d", (long long)rows,
                 (long long)in, (long long)out, mf_dtype_name(ctx.policy.compute), acc, bias);
        COMPARE(desc, mf_linear_forward(&ctx, &y, &x, &w, bias ? &b : NULL, acc),
                mf_plan_linear_forward(&s, rows, in, out, bias, acc));
        bool gx = trial % 5 != 2 && trial % 7, gw = trial % 5 != 3 && trial % 7,
             gb = trial % 2 == 0 || trial % 7 == 0;
        snprintf(desc, sizeof desc, "linear backward %lldx%lld->%lld %s dx %d dw %d db %d",
                 (long long)rows, (long long)in, (long long)out, mf_dtype_name(ctx.policy.compute),
                 gx, gw, gb);
        COMPARE(
            desc,
            mf_linear_backward(&ctx, gx ? &dx : NULL, gw ? &dw : NULL, gb ? &db : NULL, &y, &x, &w),
            mf_plan_linear_backward(&s, rows, in, out, gx, gw, gb));
        /* batched matmul with broadcasting and transposes */
        int64_t B = rnd(&st, 1, 6), M = rnd(&st, 1, 80), N = rnd(&st, 1, 80), K = rnd(&st, 1, 80);
        int64_t Ba = trial % 3 == 1 ? 1 : B, Bb = trial % 3 == 2 ? 1 : B;
        bool ta = trial % 4 >= 2, tb = trial % 2;
        mf_tensor a = make(&arena, 3, ta ? (int64_t[]){Ba, K, M} : (int64_t[]){Ba, M, K}, 8),
                  bb = make(&arena, 3, tb ? (int64_t[]){Bb, N, K} : (int64_t[]){Bb, K, N}, 9),
                  c = make(&arena, 3, (int64_t[]){B, M, N}, 10),
                  da = make(&arena, 3, ta ? (int64_t[]){Ba, K, M} : (int64_t[]){Ba, M, K}, 11),
                  dbb = make(&arena, 3, tb ? (int64_t[]){Bb, N, K} : (int64_t[]){Bb, K, N}, 12);
        snprintf(desc, sizeof desc, "matmul %lld(%lld,%lld) %lldx%lldx%lld ta %d tb %d %s",
                 (long long)B, (long long)Ba, (long long)Bb, (long long)M, (long long)N,
                 (long long)K, ta, tb, mf_dtype_name(ctx.policy.compute));
        COMPARE(desc, mf_matmul(&ctx, &c, &a, ta, &bb, tb, 1.0f, acc ? 1.0f : 0.0f),
                mf_plan_matmul(&s, B, Ba, Bb, M, N, K, ta, tb, acc));
        COMPARE(
            desc,
            mf_matmul_backward(&ctx, gx ? &da : NULL, gw ? &dbb : NULL, &c, &a, ta, &bb, tb, 1.0f),
            mf_plan_matmul_backward(&s, B, Ba, Bb, M, N, K, ta, tb, gx, gw));
        mf_arena_release(&arena, mark);
    }
    printf("memplan op plans: %d cases, %d mismatches (exact peak and balance required)\n", cases,
           worst);
    mf_ctx_destroy(&ctx);
    mf_arena_destroy(&arena);
    return mf_test_finish("test_memplan_ops");
}
