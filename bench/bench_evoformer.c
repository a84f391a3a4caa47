/* `memfold bench evoformer-block`: one Evoformer block (Alg. 6; or a stack of --blocks N) forward
 * + backward in training mode (dropout on at AF2's rates) under one or several memory policies,
 * in one process: wall time, the arena's exact high-water mark above the persistent tensors
 * (parameters, gradients, inputs), the process's peak resident set (getrusage; a process-wide
 * maximum, so it only grows from row to row), and the ratio of each to the first policy, the
 * baseline (chunk off, recompute off, f32 storage and compute). Sizes default to AF2's
 * (c_m 256, c_z 128, N_seq 128, N_res 256; heads, per-head channels and hidden widths of the
 * af2-initial preset); parameters are drawn with AF2's initialisers. --device cuda runs the
 * block on the GPU (parameters and inputs drawn on the host, copied to the device arena; each
 * timed run ends with a device synchronisation) and adds the device memory in use
 * (cudaMemGetInfo) after the runs. */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "bench/bench.h"
#include "core/rng.h"
#ifdef MF_HAVE_CUDA
#include "core/cuda/cuda_backend.h"
#endif
#include "evoformer/evoformer_stack.h"
#include "model/config.h"

#define NP MF_EVOFORMER_BLOCK_NPARAMS

typedef struct {
    char name[160];
    mf_policy policy;
} bench_policy;

typedef struct {
    double seconds;
    size_t arena_peak, rss_peak;
} bench_row;

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static size_t rss_peak_bytes(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (size_t)ru.ru_maxrss * 1024u;
}

static void fill_normal(mf_tensor *t, uint64_t stream, float sd)
{
    float *p = t->data;
    const int64_t n = mf_tensor_numel(t);
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) p[i] = sd * mf_rng_normal(0xbe, stream, (uint64_t)i);
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: memfold bench evoformer-block [--c-m C] [--c-z C] [--n-seq S] [--n-res N]\n"
            "          [--blocks B] [--chunk N|off] [--recompute off|block|every:K]\n"
            "          [--storage f32|bf16] [--compute f32|bf16] [--inplace on|off]\n"
            "          [--policies all] [--json] [--csv FILE] [--memory-table] [--arena-gib G]\n"
            "          [--warmup W] [--reps R] [--device cpu|cuda]\n"
            "  one Evoformer block (or a stack of B blocks) forward+backward in training mode\n"
            "  per memory policy: time, exact arena peak, process peak RSS, ratios to the\n"
            "  baseline (first row: chunk off, recompute off, f32, f32). Without --policies the\n"
            "  rows are the baseline and the policy given by the flags. Defaults: C_m=256\n"
            "  C_z=128 S=128 N=256 B=1 (AF2 sizes; heads and widths of the af2-initial preset);\n"
            "  W=1 untimed baseline runs first (oneDNN builds its primitives); time: best of R=1.\n"
            "  --device cuda: on the GPU (arena of G GiB on the device; default G=20).\n");
}

static int parse_size(const char *opt, const char *v, int64_t *out)
{
    char *end;
    long long x = strtoll(v, &end, 10);
    if (*end || x <= 0) {
        fprintf(stderr, "memfold bench evoformer-block: %s must be a positive integer\n", opt);
        return 2;
    }
    *out = x;
    return 0;
}

/* Forward + backward of one policy. Inputs, parameters and gradients are allocated before the
 * peak is reset, so the peak counts what the block itself holds. */
static mf_status run_policy(mf_ctx *ctx, const bench_policy *pol, const mf_evoformer_block_dims *d,
                            int64_t blocks, mf_tensor *P, mf_tensor *dP, const mf_tensor *m,
                            const mf_tensor *z, const mf_tensor *msa_mask,
                            const mf_tensor *pair_mask, const mf_tensor *gm, const mf_tensor *gz,
                            bool table, bench_row *row)
{
    mf_arena *a = ctx->arena;
    ctx->policy = pol->policy;
    const mf_dropout_key key = mf_dropout_key_training(2024, MF_DROPOUT_STACK_EVOFORMER, 0);
    mf_arena_mark_t mark = mf_arena_mark(a);
    mf_arena_reset_peak(a);
    const size_t base = mf_arena_used(a);
    mf_status st = MF_OK;
    mf_tensor wm, wz, dm, dz;
    const double t0 = now_s();
    MF_TRY_GOTO(mf_arena_tensor(a, &wm, MF_F32, 3, m->shape, "bench.m"));
    MF_TRY_GOTO(mf_arena_tensor(a, &wz, MF_F32, 3, z->shape, "bench.z"));
    MF_TRY_GOTO(mf_arena_tensor(a, &dm, MF_F32, 3, m->shape, "bench.dm"));
    MF_TRY_GOTO(mf_arena_tensor(a, &dz, MF_F32, 3, z->shape, "bench.dz"));
    if (blocks == 1) {
        mf_evoformer_block_saved saved;
        const mf_evoformer_block_params *p = (const mf_evoformer_block_params *)(void *)P;
        MF_TRY_GOTO(mf_evoformer_block_forward(ctx, &wm, &wz, &saved, m, z, msa_mask, pair_mask, p,
                                               d, &key));
        MF_TRY_GOTO(mf_fill(ctx, &dm, 0.0f));
        MF_TRY_GOTO(mf_fill(ctx, &dz, 0.0f));
        MF_TRY_GOTO(mf_evoformer_block_backward(ctx, &dm, &dz,
                                                (mf_evoformer_block_params *)(void *)dP, gm, gz,
                                                &saved, msa_mask, pair_mask, p, d));
    } else {
        mf_evo_block_saved states[64];
        mf_evo_stack_saved saved = {.blocks = states, .capacity = 64};
        const mf_evoformer_block_params *p = (const mf_evoformer_block_params *)(void *)P;
        MF_TRY_GOTO(mf_convert(ctx, &wm, m));
        MF_TRY_GOTO(mf_convert(ctx, &wz, z));
        MF_TRY_GOTO(mf_evoformer_stack_forward(ctx, &wm, &wz, &saved, msa_mask, pair_mask, p, d,
                                               blocks, &key));
        MF_TRY_GOTO(mf_convert(ctx, &dm, gm));
        MF_TRY_GOTO(mf_convert(ctx, &dz, gz));
        MF_TRY_GOTO(mf_evoformer_stack_backward(ctx, &dm, &dz,
                                                (mf_evoformer_block_params *)(void *)dP, &saved,
                                                msa_mask, pair_mask, p, d));
    }
    MF_TRY_GOTO(mf_ctx_synchronize(ctx));
    row->seconds = now_s() - t0;
    row->arena_peak = mf_arena_high_water(a) - base;
    row->rss_peak = rss_peak_bytes();
    if (table) mf_arena_print_table(a, stdout);
cleanup:
    mf_arena_release(a, mark);
    ctx->policy = mf_policy_default();
    return st;
}

static int add_policy(bench_policy *list, int *n, const char *name, int64_t chunk, mf_recompute rc,
                      int every, mf_dtype storage, mf_dtype compute, bool inplace)
{
    bench_policy *p = &list[(*n)++];
    p->policy = mf_policy_default();
    p->policy.chunk_size = chunk;
    p->policy.recompute = rc;
    p->policy.recompute_every = every;
    p->policy.storage = storage;
    p->policy.compute = compute;
    p->policy.inplace = inplace;
    if (name) {
        snprintf(p->name, sizeof p->name, "%s", name);
    } else {
        mf_policy_describe(&p->policy, p->name, (int)sizeof p->name);
    }
    return 0;
}

static bool same_policy(const mf_policy *a, const mf_policy *b)
{
    return a->chunk_size == b->chunk_size && a->recompute == b->recompute &&
           (a->recompute != MF_RECOMPUTE_EVERY_K || a->recompute_every == b->recompute_every) &&
           a->storage == b->storage && a->compute == b->compute && a->inplace == b->inplace &&
           a->offload == b->offload;
}

int mf_bench_evoformer_block(int argc, char **argv)
{
    int64_t c_m = 256, c_z = 128, S = 128, N = 256, blocks = 1, arena_gib = 20, warmup = 1,
            reps = 1;
    const char *csv_path = NULL;
    bool json = false, all = false, table = false;
    mf_device device = MF_DEV_CPU;
    mf_policy flags = mf_policy_default();
    for (int i = 1; i < argc; i++) {
        const char *o = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        int rc = 0;
        if (!strcmp(o, "--help") || !strcmp(o, "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(o, "--json")) {
            json = true;
            continue;
        } else if (!strcmp(o, "--memory-table")) {
            table = true;
            continue;
        } else if (!v) {
            fprintf(stderr, "memfold bench evoformer-block: unknown option or missing value '%s'\n",
                    o);
            usage(stderr);
            return 2;
        }
        i++;
        if (!strcmp(o, "--c-m"))
            rc = parse_size(o, v, &c_m);
        else if (!strcmp(o, "--c-z"))
            rc = parse_size(o, v, &c_z);
        else if (!strcmp(o, "--n-seq"))
            rc = parse_size(o, v, &S);
        else if (!strcmp(o, "--n-res"))
            rc = parse_size(o, v, &N);
        else if (!strcmp(o, "--blocks"))
            rc = parse_size(o, v, &blocks);
        else if (!strcmp(o, "--reps"))
            rc = parse_size(o, v, &reps);
        else if (!strcmp(o, "--warmup")) {
            warmup = atoll(v);
            if (warmup < 0) warmup = 0;
        } else if (!strcmp(o, "--arena-gib"))
            rc = parse_size(o, v, &arena_gib);
        else if (!strcmp(o, "--csv"))
            csv_path = v;
        else if (!strcmp(o, "--device")) {
            if (!strcmp(v, "cuda"))
                device = MF_DEV_CUDA;
            else if (strcmp(v, "cpu")) {
                fprintf(stderr, "memfold bench evoformer-block: --device takes cpu or cuda\n");
                return 2;
            }
        } else if (!strcmp(o, "--policies")) {
            if (strcmp(v, "all")) {
                fprintf(stderr, "memfold bench evoformer-block: --policies takes 'all'\n");
                return 2;
            }
            all = true;
        } else {
            const char *key = !strcmp(o, "--chunk")       ? "chunk"
                              : !strcmp(o, "--recompute") ? "recompute"
                              : !strcmp(o, "--storage")   ? "storage"
                              : !strcmp(o, "--compute")   ? "compute"
                              : !strcmp(o, "--inplace")   ? "inplace"
                                                          : NULL;
            if (!key) {
                fprintf(stderr, "memfold bench evoformer-block: unknown option '%s'\n", o);
                usage(stderr);
                return 2;
            }
            if (mf_policy_set(&flags, key, v) != MF_OK) {
                fprintf(stderr, "memfold bench evoformer-block: %s\n", mf_last_error());
                return 2;
            }
        }
        if (rc) return rc;
    }
    if (blocks > 64) {
        fprintf(stderr, "memfold bench evoformer-block: at most 64 blocks\n");
        return 2;
    }

    bench_policy pols[16];
    int npol = 0;
    add_policy(pols, &npol, "baseline: chunk off, recompute off, f32, f32", 0, MF_RECOMPUTE_OFF, 1,
               MF_F32, MF_F32, false);
    if (all) {
        add_policy(pols, &npol, "chunk 64", 64, MF_RECOMPUTE_OFF, 1, MF_F32, MF_F32, false);
        add_policy(pols, &npol, "recompute block", 0, MF_RECOMPUTE_BLOCK, 1, MF_F32, MF_F32, false);
        add_policy(pols, &npol, "bf16 storage", 0, MF_RECOMPUTE_OFF, 1, MF_BF16, MF_F32, false);
        add_policy(pols, &npol, "bf16 compute", 0, MF_RECOMPUTE_OFF, 1, MF_F32, MF_BF16, false);
        add_policy(pols, &npol, "chunk 64 + bf16 storage", 64, MF_RECOMPUTE_OFF, 1, MF_BF16, MF_F32,
                   false);
        add_policy(pols, &npol, "chunk 64 + recompute block + bf16 storage", 64, MF_RECOMPUTE_BLOCK,
                   1, MF_BF16, MF_F32, false);
        add_policy(pols, &npol, "chunk 64 + recompute + inplace + bf16 st. + bf16 comp.", 64,
                   MF_RECOMPUTE_BLOCK, 1, MF_BF16, MF_BF16, true);
    } else if (!same_policy(&flags, &pols[0].policy)) {
        add_policy(pols, &npol, NULL, flags.chunk_size, flags.recompute, flags.recompute_every,
                   flags.storage, flags.compute, flags.inplace);
    }

    mf_config cfg;
    if (mf_config_preset("af2-initial", &cfg) != MF_OK) {
        fprintf(stderr, "memfold bench evoformer-block: %s\n", mf_last_error());
        return 1;
    }
    const mf_evoformer_block_dims d = mf_evoformer_block_dims_from_config(&cfg.evoformer, c_m, c_z);
    mf_param_spec specs[NP];
    const int np = mf_evoformer_block_param_specs(&d, specs);
    /* stacked specs: a leading block axis when benchmarking a stack */
    mf_param_spec sspecs[NP];
    for (int i = 0; i < np; i++) {
        sspecs[i] = specs[i];
        if (blocks > 1) {
            sspecs[i].ndim = specs[i].ndim + 1;
            sspecs[i].shape[0] = blocks;
            for (int k = 0; k < specs[i].ndim; k++) sspecs[i].shape[k + 1] = specs[i].shape[k];
        }
    }

    if (device == MF_DEV_CUDA && !mf_cuda_available()) {
        fprintf(stderr, "memfold bench evoformer-block: --device cuda: no CUDA device (or memfold "
                        "was built without CUDA)\n");
        return 1;
    }
    /* parameters and inputs are drawn in a host arena (stage); on CUDA they are then copied to
     * the device arena */
    const int64_t nparam = mf_params_numel(sspecs, np);
    /* the parameters, m and its gradient, z and its gradient; 64 MiB covers alignment */
    const size_t stage_bytes =
        (size_t)(nparam + 2 * S * N * c_m + 2 * N * N * c_z) * sizeof(float) + ((size_t)64 << 20);
    mf_arena arena, stage_arena;
    mf_ctx ctx;
    if (mf_arena_init(&arena, device, (size_t)arena_gib << 30, "bench") != MF_OK ||
        mf_ctx_init(&ctx, device, &arena) != MF_OK) {
        fprintf(stderr, "memfold bench evoformer-block: %s\n", mf_last_error());
        return 1;
    }
    mf_arena *stage = &arena;
    if (device == MF_DEV_CUDA) {
        if (mf_arena_init(&stage_arena, MF_DEV_CPU, stage_bytes, "bench host stage") != MF_OK) {
            fprintf(stderr, "memfold bench evoformer-block: %s\n", mf_last_error());
            mf_ctx_destroy(&ctx);
            mf_arena_destroy(&arena);
            return 1;
        }
        stage = &stage_arena;
    }
    int rc = 0;
    mf_tensor P[NP], dP[NP], m, z, msa_mask, pair_mask, gm, gz;
    mf_tensor hP[NP], hm, hz, hgm, hgz;
    mf_status st = mf_params_alloc(stage, sspecs, np, hP, "bench.params");
    if (st == MF_OK) st = mf_params_alloc(&arena, sspecs, np, dP, "bench.grads");
    for (int64_t b = 0; st == MF_OK && b < blocks; b++) {
        /* AF2's initialisers, block by block (a stacked array's row b is one block's tensor) */
        mf_tensor rows[NP];
        if (blocks > 1) {
            for (int i = 0; i < np; i++) {
                rows[i] = mf_tensor_slice0(&hP[i], b, 1);
                rows[i].ndim = specs[i].ndim;
                for (int k = 0; k < MF_MAX_DIMS; k++) rows[i].shape[k] = specs[i].shape[k];
            }
        } else {
            memcpy(rows, hP, sizeof rows);
        }
        st = mf_params_init(specs, np, rows, 7, (uint64_t)b * 1000);
    }
    if (st == MF_OK)
        st = mf_arena_tensor(stage, &hm, MF_F32, 3, (int64_t[]){S, N, c_m}, "bench.in");
    if (st == MF_OK)
        st = mf_arena_tensor(stage, &hz, MF_F32, 3, (int64_t[]){N, N, c_z}, "bench.in");
    if (st == MF_OK) st = mf_arena_tensor(stage, &hgm, MF_F32, 3, hm.shape, "bench.in");
    if (st == MF_OK) st = mf_arena_tensor(stage, &hgz, MF_F32, 3, hz.shape, "bench.in");
    if (st == MF_OK) {
        fill_normal(&hm, 1, 1.0f);
        fill_normal(&hz, 2, 1.0f);
        fill_normal(&hgm, 3, 1.0f);
        fill_normal(&hgz, 4, 1.0f);
    }
    if (device == MF_DEV_CPU) {
        memcpy(P, hP, sizeof P);
        m = hm;
        z = hz;
        gm = hgm;
        gz = hgz;
    } else {
        if (st == MF_OK) st = mf_params_alloc(&arena, sspecs, np, P, "bench.params");
        for (int i = 0; st == MF_OK && i < np; i++)
            st = mf_tensor_transfer(&P[i], &hP[i], "bench.params");
        const mf_tensor *src[4] = {&hm, &hz, &hgm, &hgz};
        mf_tensor *dst[4] = {&m, &z, &gm, &gz};
        for (int i = 0; st == MF_OK && i < 4; i++)
            st = mf_arena_copy(&arena, dst[i], src[i], "bench.in");
    }
    if (st == MF_OK)
        st = mf_arena_tensor(&arena, &msa_mask, MF_F32, 2, (int64_t[]){S, N}, "bench.in");
    if (st == MF_OK)
        st = mf_arena_tensor(&arena, &pair_mask, MF_F32, 2, (int64_t[]){N, N}, "bench.in");
    if (st == MF_OK) st = mf_fill(&ctx, &msa_mask, 1.0f);
    if (st == MF_OK) st = mf_fill(&ctx, &pair_mask, 1.0f);
    if (st != MF_OK) {
        fprintf(stderr, "memfold bench evoformer-block: setup: %s\n", mf_last_error());
        rc = 1;
        goto done;
    }

    FILE *csv = NULL;
    if (csv_path && !(csv = fopen(csv_path, "w"))) {
        fprintf(stderr, "memfold bench evoformer-block: cannot write %s\n", csv_path);
        rc = 1;
        goto done;
    }
    const int threads = omp_get_max_threads();
    if (!json) {
        printf("Evoformer %s forward+backward (training, dropout on): c_m=%lld c_z=%lld "
               "N_seq=%lld N_res=%lld, %lld parameters per block, %d threads, best of %lld\n",
               blocks > 1 ? "stack" : "block", (long long)c_m, (long long)c_z, (long long)S,
               (long long)N, (long long)mf_params_numel(specs, np), threads, (long long)reps);
        if (blocks > 1) printf("blocks: %lld\n", (long long)blocks);
        printf("%-56s %9s %7s %12s %7s %12s %7s\n", "policy", "time s", "x base", "arena peak",
               "x base", "peak RSS", "x base");
    } else {
        printf("{\"bench\": \"evoformer-block\", \"c_m\": %lld, \"c_z\": %lld, \"n_seq\": %lld, "
               "\"n_res\": %lld, \"blocks\": %lld, \"threads\": %d, \"rows\": [",
               (long long)c_m, (long long)c_z, (long long)S, (long long)N, (long long)blocks,
               threads);
    }
    if (csv)
        fprintf(csv, "policy,chunk,recompute,storage,compute,inplace,c_m,c_z,n_seq,n_res,blocks,"
                     "threads,seconds,arena_peak_bytes,rss_peak_bytes,time_ratio,arena_ratio,"
                     "rss_ratio\n");
    /* one untimed run of the baseline builds oneDNN's primitives for these shapes */
    for (int w = 0; w < warmup; w++) {
        bench_row row;
        if (run_policy(&ctx, &pols[0], &d, blocks, P, dP, &m, &z, &msa_mask, &pair_mask, &gm, &gz,
                       false, &row) != MF_OK) {
            fprintf(stderr, "memfold bench evoformer-block: warm-up: %s\n", mf_last_error());
            rc = 1;
            goto done_csv;
        }
    }
    bench_row base = {0};
    for (int i = 0; i < npol; i++) {
        bench_row row = {0};
        bool failed = false;
        for (int64_t r = 0; r < reps && !failed; r++) {
            bench_row one;
            if (run_policy(&ctx, &pols[i], &d, blocks, P, dP, &m, &z, &msa_mask, &pair_mask, &gm,
                           &gz, table && !json && r == 0, &one) != MF_OK) {
                fprintf(stderr, "memfold bench evoformer-block: %s: %s\n", pols[i].name,
                        mf_last_error());
                failed = true;
                break;
            }
            /* best time of the repetitions; the arena peak is the same in each */
            if (r == 0 || one.seconds < row.seconds) row.seconds = one.seconds;
            if (one.arena_peak > row.arena_peak) row.arena_peak = one.arena_peak;
            row.rss_peak = one.rss_peak;
        }
        if (failed) {
            rc = 1;
            break;
        }
        if (i == 0) base = row;
        const double tr = row.seconds / base.seconds;
        const double ar = (double)row.arena_peak / (double)base.arena_peak;
        const double rr = (double)row.rss_peak / (double)base.rss_peak;
        char ab[32], rb[32], desc[160];
        mf_policy_describe(&pols[i].policy, desc, sizeof desc);
        if (!json) {
            printf("%-56s %9.2f %7.2f %12s %7.2f %12s %7.2f\n", pols[i].name, row.seconds, tr,
                   mf_format_bytes(row.arena_peak, ab, sizeof ab), ar,
                   mf_format_bytes(row.rss_peak, rb, sizeof rb), rr);
        } else {
            printf("%s\n  {\"policy\": \"%s\", \"settings\": \"%s\", \"seconds\": %.4f, "
                   "\"arena_peak_bytes\": %zu, \"rss_peak_bytes\": %zu, \"time_ratio\": %.4f, "
                   "\"arena_ratio\": %.4f, \"rss_ratio\": %.4f}",
                   i ? "," : "", pols[i].name, desc, row.seconds, row.arena_peak, row.rss_peak, tr,
                   ar, rr);
        }
        if (csv) {
            const mf_policy *p = &pols[i].policy;
            char rcs[32];
            if (p->recompute == MF_RECOMPUTE_EVERY_K)
                snprintf(rcs, sizeof rcs, "every:%d", p->recompute_every);
            else
                snprintf(rcs, sizeof rcs, "%s",
                         p->recompute == MF_RECOMPUTE_BLOCK ? "block" : "off");
            fprintf(csv,
                    "\"%s\",%lld,%s,%s,%s,%s,%lld,%lld,%lld,%lld,%lld,%d,%.4f,%zu,%zu,%.4f,"
                    "%.4f,%.4f\n",
                    pols[i].name, (long long)p->chunk_size, rcs, mf_dtype_name(p->storage),
                    mf_dtype_name(p->compute), p->inplace ? "on" : "off", (long long)c_m,
                    (long long)c_z, (long long)S, (long long)N, (long long)blocks, threads,
                    row.seconds, row.arena_peak, row.rss_peak, tr, ar, rr);
        }
        fflush(stdout);
    }
    if (json)
        printf("\n]}\n");
    else
        printf("arena peak: exact high-water mark above parameters, gradients and inputs; peak "
               "RSS: getrusage, a process-wide maximum (only grows from row to row)\n");
#ifdef MF_HAVE_CUDA
    if (device == MF_DEV_CUDA && !json) {
        size_t dfree = 0, dtotal = 0;
        char ab[32], ub[32], tb[32];
        if (mf_cuda_mem_info(&dfree, &dtotal) == MF_OK)
            printf("device memory in use (cudaMemGetInfo; the %s arena is reserved whole): %s of "
                   "%s\n",
                   mf_format_bytes((size_t)arena_gib << 30, ab, sizeof ab),
                   mf_format_bytes(dtotal - dfree, ub, sizeof ub),
                   mf_format_bytes(dtotal, tb, sizeof tb));
    }
#endif
done_csv:
    if (csv) fclose(csv);
done:
    mf_ctx_destroy(&ctx);
    mf_arena_destroy(&arena);
    if (stage != &arena) mf_arena_destroy(&stage_arena);
    return rc;
}
