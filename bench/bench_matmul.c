/* `memfold bench matmul`: GFLOP/s of mf_matmul (oneDNN on the CPU) for shapes that dominate
 * AlphaFold 2's Evoformer, with f32 and bf16 compute. The bf16 timings include converting both
 * inputs to bf16, which the real ops pay on every call. */
#include <errno.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench/bench.h"
#include "core/cpu/cpu_backend.h"
#include "core/ops.h"
#include "core/rng.h"

typedef struct {
    const char *name;
    int64_t batch, M, N, K;
    bool ta, tb;
} bench_shape;

/* Nres = 128 crop with Nseq = 128 MSA rows, Cm = 256, Cz = 128, 8 heads of 32 channels. */
static const bench_shape SHAPES[] = {
    {"MSA transition up [16384x256]@[256x1024]", 1, 16384, 1024, 256, false, false},
    {"its weight gradient x^T dy (K=16384)", 1, 256, 1024, 16384, true, false},
    {"pair linear [65536x128]@[128x128]", 1, 65536, 128, 128, false, false},
    {"attn logits 128 x [256x32]@[32x256]^T", 128, 256, 256, 32, false, true},
    {"attn p@v 128 x [256x256]@[256x32]", 128, 256, 32, 256, false, false},
};
#define NSHAPES ((int)(sizeof SHAPES / sizeof SHAPES[0]))

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void fill(float *p, int64_t n, uint64_t seed)
{
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) p[i] = mf_rng_normal(seed, 0xbe, (uint64_t)i);
}

static void usage(FILE *f)
{
    fprintf(f, "usage: memfold bench matmul [--reps N] [--csv FILE]\n"
               "  times mf_matmul for AF2-typical shapes in f32 and bf16 compute (median of N\n"
               "  runs after a warm-up; threads from OMP_NUM_THREADS) and prints GFLOP/s.\n");
}

static mf_status run_shape(mf_ctx *ctx, const bench_shape *s, mf_dtype compute, int reps,
                           double *ms_median, double *ms_best, const char **impl)
{
    mf_arena *ar = ctx->arena;
    mf_arena_mark_t mark = mf_arena_mark(ar);
    int64_t sa[3] = {s->batch, s->ta ? s->K : s->M, s->ta ? s->M : s->K};
    int64_t sb[3] = {s->batch, s->tb ? s->N : s->K, s->tb ? s->K : s->N};
    int64_t sc[3] = {s->batch, s->M, s->N};
    mf_tensor a, b, c;
    mf_status st = MF_OK;
    double *t = calloc((size_t)reps, sizeof(double));
    if (!t) return MF_ERROR(MF_ERR_NOMEM, "bench: out of host memory");
    MF_TRY_GOTO(mf_arena_tensor(ar, &a, MF_F32, 3, sa, "bench a"));
    MF_TRY_GOTO(mf_arena_tensor(ar, &b, MF_F32, 3, sb, "bench b"));
    MF_TRY_GOTO(mf_arena_tensor(ar, &c, MF_F32, 3, sc, "bench c"));
    fill(a.data, mf_tensor_numel(&a), 1);
    fill(b.data, mf_tensor_numel(&b), 2);
    ctx->policy.compute = compute;
    for (int w = 0; w < 2; w++) MF_TRY_GOTO(mf_matmul(ctx, &c, &a, s->ta, &b, s->tb, 1, 0));
    for (int r = 0; r < reps; r++) {
        double t0 = now_s();
        MF_TRY_GOTO(mf_matmul(ctx, &c, &a, s->ta, &b, s->tb, 1, 0));
        t[r] = 1e3 * (now_s() - t0);
    }
    qsort(t, (size_t)reps, sizeof(double), cmp_double);
    *ms_median = reps % 2 ? t[reps / 2] : 0.5 * (t[reps / 2 - 1] + t[reps / 2]);
    *ms_best = t[0];
    *impl = mf_dnnl_last_impl(ctx->dnnl);
cleanup:
    ctx->policy.compute = MF_F32;
    free(t);
    mf_arena_release(ar, mark);
    return st;
}

int mf_bench_matmul(int argc, char **argv)
{
    const char *csv_path = NULL;
    int reps = 10;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(argv[i], "--csv") && i + 1 < argc) {
            csv_path = argv[++i];
        } else if (!strcmp(argv[i], "--reps") && i + 1 < argc) {
            char *end;
            long v = strtol(argv[++i], &end, 10);
            if (*end || v < 1 || v > 100000) {
                fprintf(stderr, "memfold bench matmul: --reps wants a positive count, got '%s'\n",
                        argv[i]);
                return 2;
            }
            reps = (int)v;
        } else {
            fprintf(stderr, "memfold bench matmul: unknown option '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
    FILE *csv = NULL;
    if (csv_path) {
        csv = fopen(csv_path, "w");
        if (!csv) {
            fprintf(stderr, "memfold bench matmul: cannot write %s: %s\n", csv_path,
                    strerror(errno));
            return 1;
        }
        fprintf(csv, "shape,batch,M,N,K,trans_a,trans_b,compute,impl,threads,reps,ms_median,"
                     "ms_best,gflops_median,gflops_best\n");
    }
    mf_arena arena;
    mf_ctx ctx;
    mf_status st = mf_arena_init(&arena, MF_DEV_CPU, (size_t)1 << 30, "bench");
    if (st == MF_OK) st = mf_ctx_init(&ctx, MF_DEV_CPU, &arena);
    if (st != MF_OK) {
        fprintf(stderr, "memfold bench matmul: %s\n", mf_last_error());
        if (csv) fclose(csv);
        return 1;
    }
    int threads = omp_get_max_threads();
    printf("mf_matmul on the CPU (oneDNN), %d threads, median of %d runs after 2 warm-ups\n",
           threads, reps);
    printf("%-44s %-5s %-22s %9s %9s %9s\n", "shape (M x K @ K x N)", "comp", "oneDNN kernel", "ms",
           "GFLOP/s", "best");
    int rc = 0;
    for (int i = 0; i < NSHAPES && rc == 0; i++) {
        const bench_shape *s = &SHAPES[i];
        double flop = 2.0 * (double)s->batch * (double)s->M * (double)s->N * (double)s->K;
        for (int p = 0; p < 2; p++) {
            mf_dtype compute = p ? MF_BF16 : MF_F32;
            double med = 0, best = 0;
            const char *impl = "";
            st = run_shape(&ctx, s, compute, reps, &med, &best, &impl);
            if (st != MF_OK) {
                fprintf(stderr, "memfold bench matmul: %s (%s): %s\n", s->name,
                        mf_dtype_name(compute), mf_last_error());
                rc = 1;
                break;
            }
            double gf = flop / (med * 1e-3) * 1e-9, gf_best = flop / (best * 1e-3) * 1e-9;
            printf("%-44s %-5s %-22s %9.3f %9.1f %9.1f\n", s->name, mf_dtype_name(compute), impl,
                   med, gf, gf_best);
            if (csv)
                fprintf(csv, "\"%s\",%lld,%lld,%lld,%lld,%d,%d,%s,%s,%d,%d,%.4f,%.4f,%.2f,%.2f\n",
                        s->name, (long long)s->batch, (long long)s->M, (long long)s->N,
                        (long long)s->K, s->ta, s->tb, mf_dtype_name(compute), impl, threads, reps,
                        med, best, gf, gf_best);
        }
    }
    fflush(stdout);
    mf_ctx_destroy(&ctx);
    mf_arena_destroy(&arena);
    if (csv && fclose(csv) != 0) {
        fprintf(stderr, "memfold bench matmul: error writing %s\n", csv_path);
        rc = 1;
    }
    return rc;
}
