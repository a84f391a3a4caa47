/* memfold bench <name> [options]: benchmarks from bench/ (timings and peak memory are measured
 * there, as ratios against a baseline in the same run; never timed assertions in tests). */
#include <stdio.h>
#include <string.h>

#include "apps/commands.h"
#include "bench/bench.h"

static const mf_command benches[] = {
    {"attention", "gated self-attention fwd+bwd per memory policy (time, arena peak)",
     mf_bench_attention},
    {"evoformer-block", "Evoformer block (or --blocks N stack) fwd+bwd per memory policy",
     mf_bench_evoformer_block},
    {"matmul", "matrix products through oneDNN, f32 and bf16 inputs (GFLOP/s)", mf_bench_matmul},
};

int mf_cmd_bench(int argc, char **argv)
{
    size_t n = sizeof benches / sizeof benches[0];
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        FILE *f = argc < 2 ? stderr : stdout;
        fprintf(f, "usage: memfold bench <name> [options]\n\nbenchmarks:\n");
        for (size_t i = 0; i < n; i++) fprintf(f, "  %-18s %s\n", benches[i].name, benches[i].help);
        return argc < 2 ? 2 : 0;
    }
    for (size_t i = 0; i < n; i++)
        if (!strcmp(argv[1], benches[i].name)) return benches[i].run(argc - 1, argv + 1);
    fprintf(stderr, "memfold bench: unknown benchmark '%s' (memfold bench --help lists them)\n",
            argv[1]);
    return 2;
}
