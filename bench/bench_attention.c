/* `memfold bench attention`: one AlphaFold 2 gated self-attention (MSA row attention shape:
 * batch = N_seq rows, N_res keys, pair bias, mask) forward + backward under several memory
 * policies, in one process: time, arena peak (exact) and the ratio of each to the first policy,
 * the baseline. --memory-table prints the arena's table by label after each policy. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "bench/bench.h"
#include "core/ops.h"
#include "core/rng.h"

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void fill(mf_tensor *t, uint64_t seed, float sd)
{
    float *p = t->data;
    int64_t n = mf_tensor_numel(t);
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) p[i] = sd * mf_rng_normal(seed, 0xa7, (uint64_t)i);
}

typedef struct {
    const char *name;
    int64_t chunk;
    mf_dtype storage, compute;
} att_policy;

static void usage(FILE *f)
{
    fprintf(f, "usage: memfold bench attention [--n-seq S] [--n-res N] [--c C] [--heads H]\n"
               "                               [--head-dim D] [--reps R] [--memory-table]\n"
               "  gated self-attention with pair bias, forward+backward, per memory policy;\n"
               "  defaults: S=128 N=256 C=256 H=8 D=32 (AF2 MSA row attention).\n");
}

static mf_status run_policy(mf_ctx *ctx, const att_policy *pol, int64_t S, int64_t N, int64_t C,
                            int64_t H, int64_t D, int reps, double *ms, size_t *peak)
{
    mf_arena *ar = ctx->arena;
    ctx->policy.chunk_size = pol->chunk;
    ctx->policy.storage = pol->storage;
    ctx->policy.compute = pol->compute;
    mf_arena_mark_t base = mf_arena_mark(ar);
    mf_status st = MF_OK;
    int64_t sx[3] = {S, N, C}, sb[3] = {H, N, N}, sm[2] = {S, N}, shd[3] = {C, H, D},
            shd2[2] = {H, D}, so[3] = {H, D, C}, sc[1] = {C};
    mf_tensor x, dx, dy, y, bias, dbias, mask;
    mf_attention_params p = {.gated = true}, dp = {.gated = true};
    MF_TRY_GOTO(mf_arena_tensor(ar, &x, MF_F32, 3, sx, "bench input"));
    MF_TRY_GOTO(mf_arena_tensor(ar, &y, MF_F32, 3, sx, "bench output"));
    MF_TRY_GOTO(mf_arena_zeros(ar, &dx, MF_F32, 3, sx, "bench input grad"));
    MF_TRY_GOTO(mf_arena_tensor(ar, &dy, MF_F32, 3, sx, "bench output grad"));
    MF_TRY_GOTO(mf_arena_tensor(ar, &bias, MF_F32, 3, sb, "bench pair bias"));
    MF_TRY_GOTO(mf_arena_zeros(ar, &dbias, MF_F32, 3, sb, "bench pair bias grad"));
    MF_TRY_GOTO(mf_arena_tensor(ar, &mask, MF_F32, 2, sm, "bench mask"));
    mf_tensor *w[7] = {&p.query_w,  &p.key_w,    &p.value_w, &p.gating_w,
                       &p.gating_b, &p.output_w, &p.output_b};
    mf_tensor *dw[7] = {&dp.query_w,  &dp.key_w,    &dp.value_w, &dp.gating_w,
                        &dp.gating_b, &dp.output_w, &dp.output_b};
    for (int i = 0; i < 7; i++) {
        const int64_t *shape = i == 4 ? shd2 : i == 5 ? so : i == 6 ? sc : shd;
        int nd = i == 4 ? 2 : i == 6 ? 1 : 3;
        MF_TRY_GOTO(mf_arena_tensor(ar, w[i], MF_F32, nd, shape, "bench weights"));
        MF_TRY_GOTO(mf_arena_zeros(ar, dw[i], MF_F32, nd, shape, "bench weight grads"));
        fill(w[i], 10 + (uint64_t)i, 0.05f);
    }
    fill(&x, 1, 1.0f);
    fill(&dy, 2, 1.0f);
    fill(&bias, 3, 1.0f);
    float *m = mask.data;
    for (int64_t i = 0; i < S * N; i++) m[i] = (i % 17) ? 1.0f : 0.0f;

    double best = 1e30;
    mf_arena_reset_peak(ar);
    size_t inputs = mf_arena_used(ar);
    for (int r = 0; r < reps + 1; r++) {
        mf_arena_mark_t mk = mf_arena_mark(ar);
        mf_attention_saved saved;
        double t0 = now_s();
        MF_TRY_GOTO(mf_gated_attention_forward(ctx, &y, &saved, &x, &x, &bias, &mask, &p, false));
        MF_TRY_GOTO(mf_gated_attention_backward(ctx, &dx, &dx, &dbias, &dp, &dy, &saved, &x, &x,
                                                &bias, &mask, &p));
        double t = now_s() - t0;
        mf_arena_release(ar, mk);
        if (r > 0 && t < best) best = t; /* run 0 warms the primitive cache */
    }
    *ms = 1e3 * best;
    *peak = mf_arena_high_water(ar) - inputs; /* beyond inputs, weights and gradients */
cleanup:
    mf_arena_release(ar, base);
    return st;
}

int mf_bench_attention(int argc, char **argv)
{
    int64_t S = 128, N = 256, C = 256, H = 8, D = 32;
    int reps = 3, table = 0;
    for (int i = 1; i < argc; i++) {
        int64_t *dst = !strcmp(argv[i], "--n-seq")      ? &S
                       : !strcmp(argv[i], "--n-res")    ? &N
                       : !strcmp(argv[i], "--c")        ? &C
                       : !strcmp(argv[i], "--heads")    ? &H
                       : !strcmp(argv[i], "--head-dim") ? &D
                                                        : NULL;
        if (dst && i + 1 < argc) {
            *dst = strtoll(argv[++i], NULL, 10);
            if (*dst <= 0) {
                fprintf(stderr, "memfold bench attention: %s must be positive\n", argv[i - 1]);
                return 2;
            }
        } else if (!strcmp(argv[i], "--reps") && i + 1 < argc) {
            reps = atoi(argv[++i]);
            if (reps < 1) reps = 1;
        } else if (!strcmp(argv[i], "--memory-table")) {
            table = 1;
        } else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 0;
        } else {
            fprintf(stderr, "memfold bench attention: unknown option '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    const att_policy pols[] = {
        {"baseline: chunk off, f32", 0, MF_F32, MF_F32},
        {"chunk 64", 64, MF_F32, MF_F32},
        {"chunk 16", 16, MF_F32, MF_F32},
        {"chunk 16 + bf16 storage", 16, MF_BF16, MF_F32},
        {"chunk 16 + bf16 storage + bf16 compute", 16, MF_BF16, MF_BF16},
    };
    mf_arena arena;
    mf_ctx ctx;
    if (mf_arena_init(&arena, MF_DEV_CPU, (size_t)16 << 30, "bench") != MF_OK ||
        mf_ctx_init(&ctx, MF_DEV_CPU, &arena) != MF_OK) {
        fprintf(stderr, "memfold bench attention: %s\n", mf_last_error());
        return 1;
    }
    printf("gated self-attention with pair bias, forward+backward: S=%lld N=%lld C=%lld H=%lld "
           "D=%lld, best of %d\n",
           (long long)S, (long long)N, (long long)C, (long long)H, (long long)D, reps);
    printf("%-42s %10s %8s %14s %8s\n", "policy", "ms", "x base", "arena peak", "x base");
    double base_ms = 0;
    size_t base_peak = 0;
    int rc = 0;
    for (size_t i = 0; i < sizeof pols / sizeof pols[0]; i++) {
        double ms;
        size_t peak;
        if (run_policy(&ctx, &pols[i], S, N, C, H, D, reps, &ms, &peak) != MF_OK) {
            fprintf(stderr, "memfold bench attention: %s: %s\n", pols[i].name, mf_last_error());
            rc = 1;
            break;
        }
        if (i == 0) {
            base_ms = ms;
            base_peak = peak;
        }
        char pb[32];
        printf("%-42s %10.1f %8.2f %14s %8.2f\n", pols[i].name, ms, ms / base_ms,
               mf_format_bytes(peak, pb, sizeof pb), (double)peak / (double)base_peak);
        if (table) mf_arena_print_table(&arena, stdout);
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("process peak resident set: %.1f MiB (getrusage)\n", (double)ru.ru_maxrss / 1024.0);
    mf_ctx_destroy(&ctx);
    mf_arena_destroy(&arena);
    return rc;
}
