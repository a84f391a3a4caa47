/* The CUDA backend's deterministic scatter-add (core/cuda/scatter_slabs.h), its two per-thread
 * bodies run on the host over every thread index, against the CPU op mf_scatter_add_rows
 * (f32 sums in another association: within 1e-5 of each column's largest |value|): AF2's two
 * tables (65 relative-position rows, 15 distogram rows) with N^2 index rows, an uneven last slab,
 * indices outside [0, n) (which add nothing, as the gather reads a zero row), accumulation onto a
 * nonzero gradient; the slab rule (partials within their budget, slabs of at least 256 rows,
 * 0 for a table too large) that the memory model shares. */
#include "core/cuda/scatter_slabs.h"
#include "tests/support/mf_test.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static void run_case(mf_ctx *ctx, int64_t m, int64_t n, int64_t C, uint64_t seed)
{
    float *dy = malloc(sizeof(float) * (size_t)(m * C));
    int32_t *idx = malloc(sizeof(int32_t) * (size_t)m);
    float *want = malloc(sizeof(float) * (size_t)(n * C)),
          *got = malloc(sizeof(float) * (size_t)(n * C));
    mf_test_fill_normal_f32(dy, m * C, seed, 1.0f);
    mf_test_fill_normal_f32(want, n * C, seed + 1, 1.0f);
    memcpy(got, want, sizeof(float) * (size_t)(n * C));
    uint64_t r = seed * 2654435761u + 1;
    for (int64_t i = 0; i < m; i++) {
        r = r * 6364136223846793005ull + 1442695040888963407ull;
        idx[i] = (int32_t)((r >> 33) % (uint64_t)(n + 2)) - 1; /* -1 .. n: two out of range */
    }
    /* the CPU op takes only valid indices: the invalid ones contribute nothing on either side */
    int32_t *valid = malloc(sizeof(int32_t) * (size_t)m);
    float *dyv = malloc(sizeof(float) * (size_t)(m * C));
    int64_t mv = 0;
    for (int64_t i = 0; i < m; i++)
        if (idx[i] >= 0 && idx[i] < n) {
            valid[mv] = idx[i];
            memcpy(dyv + mv * C, dy + i * C, sizeof(float) * (size_t)C);
            mv++;
        }
    mf_tensor tw = mf_tensor_f32(want, 2, n, C), tdy = mf_tensor_f32(dyv, 2, mv, C);
    mf_tensor ti = mf_tensor_make(valid, MF_I32, MF_DEV_CPU, 1, (const int64_t[]){mv});
    MF_TEST_OK(mf_scatter_add_rows(ctx, &tw, &tdy, &ti));

    const int64_t S = mf_scatter_slabs(m, n, C);
    MF_TEST_TRUE(S >= 1 && S * n * C <= MF_SCATTER_PARTIAL_FLOATS &&
                     (S == 1 || (m + S - 1) / S >= MF_SCATTER_MIN_SLAB_ROWS),
                 "m %lld n %lld C %lld: %lld slabs", (long long)m, (long long)n, (long long)C,
                 (long long)S);
    float *partial = calloc((size_t)(S * n * C), sizeof(float));
    for (int64_t t = 0; t < S * C; t++) mf_scatter_slab_body(partial, dy, idx, m, n, C, S, t);
    for (int64_t e = 0; e < n * C; e++) mf_scatter_sum_body(got, partial, n, C, S, e);
    char name[128];
    snprintf(name, sizeof name, "slab scatter m %lld n %lld C %lld (%lld slabs) vs cpu",
             (long long)m, (long long)n, (long long)C, (long long)S);
    mf_check_maxrel_f32(name, got, want, n * C, 1e-5);
    free(dy), free(idx), free(want), free(got), free(valid), free(dyv), free(partial);
}

int main(void)
{
    mf_ctx ctx;
    mf_arena arena;
    MF_TEST_OK(mf_test_ctx_cpu(&ctx, &arena, (size_t)64 << 20));
    run_case(&ctx, 97 * 97, 65, 16, 1);   /* relpos: N^2 rows, 65 bins */
    run_case(&ctx, 130 * 130, 15, 24, 2); /* recycling distogram: 15 bins */
    run_case(&ctx, 701, 7, 5, 3);         /* two slabs, the last one short */
    run_case(&ctx, 17, 4, 3, 4);          /* one slab */
    /* the rule: a table too large for the partials gets atomics, a long list many slabs */
    MF_TEST_TRUE(mf_scatter_slabs(1000, MF_SCATTER_PARTIAL_FLOATS, 2) == 0,
                 "a table of %lld floats takes the atomics",
                 (long long)MF_SCATTER_PARTIAL_FLOATS * 2);
    const int64_t s5k = mf_scatter_slabs(5000LL * 5000, 65, 128);
    MF_TEST_TRUE(s5k > 1 && s5k * 65 * 128 <= MF_SCATTER_PARTIAL_FLOATS,
                 "N 5000, 65 bins, c_z 128: %lld slabs", (long long)s5k);
    printf("slab rule: N 5000 relpos gradient in %lld slabs of %lld rows (%lld MiB of partials)\n",
           (long long)s5k, (long long)((5000LL * 5000 + s5k - 1) / s5k),
           (long long)(s5k * 65 * 128 * 4 >> 20));
    mf_test_ctx_free(&ctx, &arena);
    return mf_test_finish("test_scatter_slabs");
}
