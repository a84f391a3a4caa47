/* Benchmarks linked into the memfold command (`memfold bench <name>`). Each takes (argc, argv)
 * with argv[0] = its name and returns the exit code: 0 success, 1 failure, 2 usage error. */
#ifndef MF_BENCH_BENCH_H
#define MF_BENCH_BENCH_H

/* Matrix products through mf_matmul (oneDNN on the CPU) for AF2-typical shapes, f32 and bf16
 * compute: GFLOP/s table on stdout, --csv FILE for a CSV copy, --reps N timed runs. */
int mf_bench_matmul(int argc, char **argv);

/* One gated self-attention with pair bias (AF2 MSA row attention) forward+backward per memory
 * policy: time and arena peak as ratios to the unchunked f32 baseline; --memory-table. */
int mf_bench_attention(int argc, char **argv);

/* One Evoformer block (or --blocks N) forward+backward per memory policy: time, exact arena peak,
 * process peak RSS, ratios to the baseline; --policies all, --csv FILE, --json. */
int mf_bench_evoformer_block(int argc, char **argv);

#endif
